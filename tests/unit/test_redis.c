/* test_redis.c: the redis backend against a real redis-server started here:
 * every operation, TTL, watch across two nodes (expiry included), one-round-trip
 * batches, prefix isolation, contended fenced locks, faults (kill/restart,
 * stalls, auth), bad input, and the event message codec. */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>
#include <hiredis/hiredis.h>

#include "src/backend.h"
#include "src/redis_event.h"
#include "statemesh.h"
#include "tests/lib/redis_server.h"

/* The shared server of most tests; tests that break their server start their own. */
static struct redis_server g_srv;

/* ---- loop helpers ---- */

static void tick_cb(struct ev_loop *l, ev_timer *w, int r)
{
    (void)l, (void)w, (void)r;
}

typedef bool (*cond_fn)(void *arg);

/* Run the loop until cond(arg) holds or @p ms pass; returns cond's result. */
static bool run_until(struct ev_loop *loop, cond_fn cond, void *arg, double ms)
{
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.005, 0.005);
    ev_timer_start(loop, &tick);
    ev_now_update(loop);
    double end = ev_now(loop) + ms / 1000.0;
    bool ok;
    while (!(ok = cond(arg)) && ev_now(loop) < end) ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
    return ok;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

static void run_for(struct ev_loop *loop, double ms)
{
    run_until(loop, never, NULL, ms);
}

/* ---- result capture ---- */

struct got {
    int calls;
    int status;
    uint64_t version;
    char errmsg[400];
    size_t n;
    int statuses[64];
    char values[64][64];
    size_t lens[64];
    char token[80];
    uint64_t fence;
    int64_t expires;
};

static void on_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct got *g = arg;
    g->calls++;
    g->status = status;
    g->version = res ? res->version : 0;
    snprintf(g->errmsg, sizeof g->errmsg, "%s", res && res->errmsg ? res->errmsg : "");
    if (res && res->entries) {
        g->n = res->n_entries;
        for (size_t i = 0; i < res->n_entries && i < 64; i++) {
            g->statuses[i] = res->entries[i].status;
            g->lens[i] = res->entries[i].value_len;
            snprintf(g->values[i], sizeof g->values[i], "%.*s", (int)res->entries[i].value_len,
                     res->entries[i].value ? (const char *)res->entries[i].value : "");
        }
    }
    if (res && res->lock) {
        snprintf(g->token, sizeof g->token, "%s", res->lock->token);
        g->fence = res->lock->fence;
        g->expires = res->lock->expires_ms;
    }
}

static bool got_done(void *arg)
{
    return ((struct got *)arg)->calls > 0;
}

/* ---- store helpers ---- */

static struct sm_store *open_store_on(struct ev_loop *loop, const char *addr, const char *node,
                                      const char *prefix, const char *const *opts)
{
    struct sm_config *cfg = sm_config_new();
    assert_non_null(cfg);
    assert_int_equal(sm_config_set(cfg, "storage", "redis"), 0);
    assert_int_equal(sm_config_set(cfg, "node_id", node), 0);
    assert_int_equal(sm_config_set(cfg, "redis.addr", addr), 0);
    assert_int_equal(sm_config_set(cfg, "redis.prefix", prefix), 0);
    assert_int_equal(sm_config_set(cfg, "redis.reconnect_min", "20ms"), 0);
    assert_int_equal(sm_config_set(cfg, "redis.reconnect_max", "200ms"), 0);
    for (size_t i = 0; opts && opts[i]; i += 2)
        assert_int_equal(sm_config_set(cfg, opts[i], opts[i + 1]), 0);
    struct sm_store *st = NULL;
    char err[256];
    int rc = sm_store_new(loop, cfg, &st, err, sizeof err);
    sm_config_delete(cfg);
    if (rc != 0) fail_msg("sm_store_new: %s", err);
    return st;
}

static struct sm_store *open_store(struct ev_loop *loop, const char *node, const char *prefix)
{
    return open_store_on(loop, g_srv.addr, node, prefix, NULL);
}

static bool is_connected(void *arg)
{
    char *m = sm_metrics_render(arg);
    bool up = m && strstr(m, "statemesh_connection_status{storage_type=\"redis\"} 1");
    free(m);
    return up;
}

static int gauge_value(struct sm_store *st)
{
    char *m = sm_metrics_render(st);
    assert_non_null(m);
    const char *p = strstr(m, "statemesh_connection_status{storage_type=\"redis\"} ");
    assert_non_null(p);
    int v = atoi(p + strlen("statemesh_connection_status{storage_type=\"redis\"} "));
    free(m);
    return v;
}

static void wait_connected(struct ev_loop *loop, struct sm_store *st)
{
    assert_true(run_until(loop, is_connected, st, 5000));
}

static int do_set(struct ev_loop *loop, struct sm_store *st, const char *k, const char *v,
                  uint64_t ttl)
{
    struct got g = {0};
    int rc = sm_set(st, k, v, strlen(v), ttl, on_done, &g);
    if (rc < 0) return rc;
    assert_int_equal(g.calls, 0); /* never answered from inside the call */
    assert_true(run_until(loop, got_done, &g, 5000));
    assert_int_equal(g.calls, 1);
    return g.status;
}

static int do_get(struct ev_loop *loop, struct sm_store *st, const char *k, struct got *g)
{
    memset(g, 0, sizeof *g);
    int rc = sm_get(st, k, on_done, g);
    if (rc < 0) return rc;
    assert_int_equal(g->calls, 0);
    assert_true(run_until(loop, got_done, g, 5000));
    return g->status;
}

static int do_del(struct ev_loop *loop, struct sm_store *st, const char *k)
{
    struct got g = {0};
    int rc = sm_del(st, k, on_done, &g);
    if (rc < 0) return rc;
    assert_true(run_until(loop, got_done, &g, 5000));
    return g.status;
}

static redisReply *cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    return r;
}

/* ---- watch capture ---- */

#define MAXEV 256
struct evlog {
    int n;
    int type[MAXEV];
    char key[MAXEV][64];
    char value[MAXEV][64];
    char origin[MAXEV][32];
    uint64_t version[MAXEV];
};

static void on_event(struct sm_watch *w, const struct sm_event *ev, void *arg)
{
    (void)w;
    struct evlog *l = arg;
    if (l->n >= MAXEV) return;
    l->type[l->n] = ev->type;
    snprintf(l->key[l->n], 64, "%s", ev->key);
    snprintf(l->value[l->n], 64, "%.*s", (int)ev->value_len,
             ev->value ? (const char *)ev->value : "");
    snprintf(l->origin[l->n], 32, "%s", ev->origin ? ev->origin : "");
    l->version[l->n] = ev->version;
    l->n++;
}

struct evwait {
    struct evlog *l;
    int n;
};
static bool have_events(void *arg)
{
    struct evwait *w = arg;
    return w->l->n >= w->n;
}

static int find_event(const struct evlog *l, int type, const char *key)
{
    for (int i = 0; i < l->n; i++)
        if (l->type[i] == type && strcmp(l->key[i], key) == 0) return i;
    return -1;
}

struct evfind {
    struct evlog *l;
    int type;
    const char *key;
};
static bool have_event(void *arg)
{
    struct evfind *f = arg;
    return find_event(f->l, f->type, f->key) >= 0;
}

/* ======================================================================== */

static void test_event_codec(void **state)
{
    (void)state;
    char buf[1024];
    struct sm_redis_ev a = {.type = 'S',
                            .version = 77,
                            .time_ms = 1700000000123ull,
                            .origin = "n1",
                            .origin_len = 2,
                            .key = "k\nx",
                            .key_len = 3,
                            .value = "v\0w",
                            .value_len = 3};
    struct sm_redis_ev d = {.type = 'D',
                            .version = UINT64_MAX,
                            .time_ms = 0,
                            .origin = "",
                            .origin_len = 0,
                            .key = "gone",
                            .key_len = 4};
    size_t n = sm_redis_ev_encode(buf, sizeof buf, &a);
    assert_true(n > 0);
    assert_memory_equal(buf, "SM1 S 77 1700000000123 2 3 3\nn1k\nxv\0w", n);
    size_t m = sm_redis_ev_encode(buf + n, sizeof buf - n, &d);
    assert_true(m > 0);
    size_t off = 0;
    struct sm_redis_ev o;
    assert_int_equal(sm_redis_ev_decode(buf, n + m, &off, &o), 1);
    assert_int_equal(o.type, 'S');
    assert_int_equal(o.version, 77);
    assert_int_equal(o.time_ms, 1700000000123ull);
    assert_int_equal(o.key_len, 3);
    assert_memory_equal(o.key, "k\nx", 3);
    assert_int_equal(o.value_len, 3);
    assert_memory_equal(o.value, "v\0w", 3);
    assert_int_equal(sm_redis_ev_decode(buf, n + m, &off, &o), 1);
    assert_int_equal(o.type, 'D');
    assert_true(o.version == UINT64_MAX);
    assert_int_equal(o.origin_len, 0);
    assert_int_equal(sm_redis_ev_decode(buf, n + m, &off, &o), 0);
    assert_int_equal(off, n + m);
    /* every truncation of a valid message is rejected, never over-read */
    for (size_t cut = 1; cut < n; cut++) {
        off = 0;
        assert_int_equal(sm_redis_ev_decode(buf, cut, &off, &o), SM_EPROTO);
    }
    /* 'T' (a set that will expire) carries its value like 'S' */
    struct sm_redis_ev t = a;
    t.type = 'T';
    n = sm_redis_ev_encode(buf, sizeof buf, &t);
    off = 0;
    assert_int_equal(sm_redis_ev_decode(buf, n, &off, &o), 1);
    assert_int_equal(o.type, 'T');
    assert_int_equal(o.value_len, 3);
    n = sm_redis_ev_encode(buf, sizeof buf, &a);
    /* too small a buffer: encode refuses */
    assert_int_equal(sm_redis_ev_encode(buf, 10, &a), 0);
    static const char *const bad[] = {"SM2 S 1 1 0 1 0\nk",
                                      "SM1 X 1 1 0 1 0\nk",
                                      "SM1 S 1 1 0 0 0\n",
                                      "SM1 S -1 1 0 1 0\nk",
                                      "SM1 S 1 1 0 1 99999999999\nk",
                                      "SM1 S 1 1 0 1 0 k",
                                      "SM1 S 99999999999999999999999 1 0 1 0\nk",
                                      "SM1 D 1 1 0 1 1\nkv",
                                      "SM1 S 1 1 18446744073709551615 1 0\nk"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        off = 0;
        assert_int_equal(sm_redis_ev_decode(bad[i], strlen(bad[i]), &off, &o), SM_EPROTO);
    }
}

static void test_config_errors(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    static const struct {
        const char *k, *v, *want;
    } cases[] = {
        {"redis.bogus", "1", "redis.bogus"},
        {"redis.addr", "nohostport:abc", "redis.addr"},
        {"redis.addr", "unix:", "redis.addr"},
        {"redis.db", "x", "redis.db"},
        {"redis.db", "1000000", "redis.db"},
        {"redis.command_timeout", "0", "redis.command_timeout"},
        {"redis.connect_timeout", "soon", "redis.connect_timeout"},
        {"redis.reconnect_min", "10s", "reconnect_min"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sm_config *cfg = sm_config_new();
        assert_int_equal(sm_config_set(cfg, "storage", "redis"), 0);
        assert_int_equal(sm_config_set(cfg, cases[i].k, cases[i].v), 0);
        struct sm_store *st = NULL;
        char err[256] = "";
        assert_int_equal(sm_store_new(loop, cfg, &st, err, sizeof err), SM_ECONFIG);
        assert_null(st);
        if (!strstr(err, cases[i].want)) fail_msg("case %zu: message '%s'", i, err);
        sm_config_delete(cfg);
    }
    ev_loop_destroy(loop);
}

static void test_ops(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *st = open_store(loop, "n1", "ops:");
    struct got g;
    /* an op issued during the first connect waits for it */
    assert_int_equal(do_set(loop, st, "a", "alpha", 0), 0);
    wait_connected(loop, st);
    assert_int_equal(do_get(loop, st, "a", &g), 0);
    assert_string_equal(g.values[0], "alpha");
    assert_int_equal(g.lens[0], 5);
    assert_int_equal(do_get(loop, st, "missing", &g), SM_ENOTFOUND);
    /* binary values and empty values survive */
    struct got s = {0};
    assert_int_equal(sm_set(st, "bin", "x\0y", 3, 0, on_done, &s), 0);
    assert_true(run_until(loop, got_done, &s, 5000));
    assert_int_equal(s.status, 0);
    assert_true(s.version > 0);
    assert_int_equal(do_get(loop, st, "bin", &g), 0);
    assert_int_equal(g.lens[0], 3);
    assert_int_equal(do_set(loop, st, "empty", "", 0), 0);
    assert_int_equal(do_get(loop, st, "empty", &g), 0);
    assert_int_equal(g.lens[0], 0);
    /* versions from one writer strictly increase */
    struct got v1 = {0}, v2 = {0};
    assert_int_equal(sm_set(st, "a", "1", 1, 0, on_done, &v1), 0);
    assert_int_equal(sm_set(st, "a", "2", 1, 0, on_done, &v2), 0);
    assert_true(run_until(loop, got_done, &v2, 5000));
    assert_int_equal(v1.calls, 1); /* replies come back in order */
    assert_true(v2.version > v1.version);
    /* the key really is "<prefix><key>" in Redis, the value raw */
    redisContext *rc = redis_server_connect(&g_srv);
    assert_non_null(rc);
    redisReply *r = cmd(rc, "GET ops:a");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "2");
    freeReplyObject(r);
    /* delete, and deleting a missing key */
    assert_int_equal(do_del(loop, st, "a"), 0);
    assert_int_equal(do_get(loop, st, "a", &g), SM_ENOTFOUND);
    assert_int_equal(do_del(loop, st, "a"), 0);
    /* get_multi: request order, missing keys flagged */
    assert_int_equal(do_set(loop, st, "m1", "one", 0), 0);
    assert_int_equal(do_set(loop, st, "m3", "three", 0), 0);
    const char *keys[] = {"m1", "m2", "m3"};
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_get_multi(st, keys, 3, on_done, &g), 0);
    assert_true(run_until(loop, got_done, &g, 5000));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n, 3);
    assert_int_equal(g.statuses[0], 0);
    assert_string_equal(g.values[0], "one");
    assert_int_equal(g.statuses[1], SM_ENOTFOUND);
    assert_int_equal(g.statuses[2], 0);
    assert_string_equal(g.values[2], "three");
    /* set_multi writes all */
    struct sm_kv items[] = {{"s1", "v1", 2, 0}, {"s2", "v2", 2, 60000}};
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_set_multi(st, items, 2, on_done, &g), 0);
    assert_true(run_until(loop, got_done, &g, 5000));
    assert_int_equal(g.status, 0);
    r = cmd(rc, "MGET ops:s1 ops:s2");
    assert_string_equal(r->element[0]->str, "v1");
    assert_string_equal(r->element[1]->str, "v2");
    freeReplyObject(r);
    r = cmd(rc, "PTTL ops:s2");
    assert_true(r->integer > 50000 && r->integer <= 60000);
    freeReplyObject(r);
    r = cmd(rc, "PTTL ops:s1");
    assert_int_equal(r->integer, -1);
    freeReplyObject(r);
    /* ping */
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_ping(st, on_done, &g), 0);
    assert_int_equal(g.calls, 0);
    assert_true(run_until(loop, got_done, &g, 5000));
    assert_int_equal(g.status, 0);
    /* bad input is refused by the front before Redis sees it */
    char big[1025];
    memset(big, 'x', sizeof big);
    assert_int_equal(sm_set(st, "big", big, sizeof big, 0, on_done, &g), SM_EVALUELEN);
    assert_non_null(strstr(sm_errmsg(st), "1025"));
    assert_int_equal(sm_set(st, "big", big, 1024, 0, on_done, &g), 0); /* exactly the limit */
    memset(&g, 0, sizeof g);
    assert_true(run_until(loop, got_done, &g, 5000) || g.calls == 0);
    run_for(loop, 50);
    r = cmd(rc, "STRLEN ops:big");
    assert_int_equal(r->integer, 1024);
    freeReplyObject(r);
    /* lock namespaces are not data */
    assert_int_equal(sm_set(st, "lock:x", "v", 1, 0, on_done, &g), SM_EINVAL);
    assert_non_null(strstr(sm_errmsg(st), "reserved"));
    assert_int_equal(sm_get(st, "fence:x", on_done, &g), SM_EINVAL);
    assert_int_equal(sm_get(st, "lockmeta:epoch", on_done, &g), SM_EINVAL);
    /* no local reads, no listing: this is a remote backend */
    struct sm_entry e;
    assert_int_equal(sm_get_now(st, "m1", &e), SM_ENOTSUP);
    redisFree(rc);
    sm_store_delete(st);
    ev_loop_destroy(loop);
}

static void test_ttl(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *st = open_store(loop, "n1", "ttl:");
    wait_connected(loop, st);
    struct got g;
    assert_int_equal(do_set(loop, st, "short", "v", 200), 0);
    assert_int_equal(do_set(loop, st, "long", "v", 60000), 0);
    redisContext *rc = redis_server_connect(&g_srv);
    redisReply *r = cmd(rc, "PTTL ttl:short");
    assert_true(r->integer > 0 && r->integer <= 200);
    freeReplyObject(r);
    redisFree(rc);
    assert_int_equal(do_get(loop, st, "short", &g), 0);
    run_for(loop, 350);
    assert_int_equal(do_get(loop, st, "short", &g), SM_ENOTFOUND);
    assert_int_equal(do_get(loop, st, "long", &g), 0);
    /* overwriting without a TTL makes the key permanent */
    assert_int_equal(do_set(loop, st, "short", "v", 100), 0);
    assert_int_equal(do_set(loop, st, "short", "w", 0), 0);
    run_for(loop, 200);
    assert_int_equal(do_get(loop, st, "short", &g), 0);
    assert_string_equal(g.values[0], "w");
    sm_store_delete(st);
    ev_loop_destroy(loop);
}

static long long info_field(redisContext *c, const char *section, const char *field)
{
    redisReply *r = cmd(c, "INFO %s", section);
    const char *p = strstr(r->str, field);
    assert_non_null(p);
    long long v = atoll(p + strlen(field));
    freeReplyObject(r);
    return v;
}

static void test_set_multi_one_round_trip(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *st = open_store(loop, "n1", "rt:");
    wait_connected(loop, st);
    run_for(loop, 50); /* let the handshake's CONFIG commands settle */
    redisContext *rc = redis_server_connect(&g_srv);
    assert_non_null(rc);
    enum { N = 50 };
    struct sm_kv items[N];
    char keys[N][16], vals[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        snprintf(vals[i], sizeof vals[i], "v%d", i);
        items[i] = (struct sm_kv){keys[i], vals[i], strlen(vals[i]), 0};
    }
    redisReply *r = cmd(rc, "CONFIG RESETSTAT");
    freeReplyObject(r);
    long long reads0 = info_field(rc, "stats", "total_reads_processed:");
    struct got g = {0};
    assert_int_equal(sm_set_multi(st, items, N, on_done, &g), 0);
    assert_true(run_until(loop, got_done, &g, 5000));
    assert_int_equal(g.status, 0);
    long long reads1 = info_field(rc, "stats", "total_reads_processed:");
    /* The server read the whole batch in one go: one read for the batch, one
     * for our second INFO. N separate round trips would be N reads. */
    assert_int_equal(reads1 - reads0, 2);
    /* and it ran as one transaction of N SETs plus one PUBLISH */
    assert_int_equal(info_field(rc, "commandstats", "cmdstat_multi:calls="), 1);
    assert_int_equal(info_field(rc, "commandstats", "cmdstat_exec:calls="), 1);
    assert_int_equal(info_field(rc, "commandstats", "cmdstat_set:calls="), N);
    assert_int_equal(info_field(rc, "commandstats", "cmdstat_publish:calls="), 1);
    r = cmd(rc, "GET rt:k49");
    assert_string_equal(r->str, "v49");
    freeReplyObject(r);
    redisFree(rc);
    sm_store_delete(st);
    ev_loop_destroy(loop);
}

static void test_prefix_isolation(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *a = open_store(loop, "na", "pa:");
    struct sm_store *b = open_store(loop, "nb", "pb:");
    wait_connected(loop, a);
    wait_connected(loop, b);
    struct evlog la = {0}, lb = {0};
    struct sm_watch *wa, *wb;
    assert_int_equal(sm_watch(a, "", on_event, &la, &wa), 0);
    assert_int_equal(sm_watch(b, "", on_event, &lb, &wb), 0);
    assert_int_equal(do_set(loop, a, "k", "from-a", 0), 0);
    assert_int_equal(do_set(loop, b, "k", "from-b", 0), 0);
    struct got g;
    assert_int_equal(do_get(loop, a, "k", &g), 0);
    assert_string_equal(g.values[0], "from-a");
    assert_int_equal(do_get(loop, b, "k", &g), 0);
    assert_string_equal(g.values[0], "from-b");
    assert_int_equal(do_del(loop, a, "k"), 0);
    assert_int_equal(do_get(loop, b, "k", &g), 0);
    run_for(loop, 100);
    assert_int_equal(la.n, 2); /* a's set and delete only */
    assert_int_equal(lb.n, 1);
    assert_string_equal(la.value[0], "from-a");
    assert_int_equal(la.type[1], SM_EVENT_DELETE);
    assert_string_equal(lb.value[0], "from-b");
    sm_unwatch(wa);
    sm_unwatch(wb);
    sm_store_delete(a);
    sm_store_delete(b);
    ev_loop_destroy(loop);
}

static void test_watch_two_nodes(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *n1 = open_store(loop, "node-1", "w:");
    struct sm_store *n2 = open_store(loop, "node-2", "w:");
    wait_connected(loop, n1);
    wait_connected(loop, n2);
    struct evlog l1 = {0}, l2 = {0}, l2cfg = {0};
    struct sm_watch *w1, *w2, *w2cfg;
    assert_int_equal(sm_watch(n1, "", on_event, &l1, &w1), 0);
    assert_int_equal(sm_watch(n2, "", on_event, &l2, &w2), 0);
    assert_int_equal(sm_watch(n2, "cfg/", on_event, &l2cfg, &w2cfg), 0);
    assert_int_equal(do_set(loop, n1, "cfg/a", "1", 0), 0);
    assert_int_equal(do_set(loop, n2, "other", "2", 0), 0);
    assert_int_equal(do_del(loop, n2, "cfg/a"), 0);
    assert_int_equal(do_del(loop, n2, "never-existed"), 0);
    struct sm_kv items[] = {{"cfg/b", "b", 1, 0}, {"cfg/c", "c", 1, 0}};
    struct got g = {0};
    assert_int_equal(sm_set_multi(n1, items, 2, on_done, &g), 0);
    assert_true(run_until(loop, got_done, &g, 5000));
    assert_int_equal(do_set(loop, n1, "cfg/ttl", "t", 100), 0);
    struct evwait ew1 = {&l1, 7}, ew2 = {&l2, 7};
    /* six changes + one expiry (redis expires within its 100 ms cycle) */
    assert_true(run_until(loop, have_events, &ew1, 5000));
    assert_true(run_until(loop, have_events, &ew2, 5000));
    run_for(loop, 100);
    for (int k = 0; k < 2; k++) {
        const struct evlog *l = k ? &l2 : &l1;
        assert_int_equal(l->n, 7);
        /* same order on both nodes: the order Redis saw */
        assert_int_equal(l->type[0], SM_EVENT_SET);
        assert_string_equal(l->key[0], "cfg/a");
        assert_string_equal(l->value[0], "1");
        assert_string_equal(l->origin[0], "node-1");
        assert_string_equal(l->key[1], "other");
        assert_string_equal(l->origin[1], "node-2");
        assert_int_equal(l->type[2], SM_EVENT_DELETE);
        assert_string_equal(l->key[2], "cfg/a");
        assert_string_equal(l->origin[2], "node-2");
        assert_string_equal(l->key[3], "cfg/b");
        assert_string_equal(l->key[4], "cfg/c");
        assert_true(l->version[4] > l->version[3]);
        int e = find_event(l, SM_EVENT_EXPIRE, "cfg/ttl");
        assert_true(e >= 0);
        /* the expiry names the writer and version of the set that had the TTL */
        int s = find_event(l, SM_EVENT_SET, "cfg/ttl");
        assert_true(s >= 0 && s < e);
        assert_string_equal(l->origin[e], "node-1");
        assert_int_equal(l->version[e], l->version[s]);
    }
    /* the prefix watch saw only cfg/ keys: a set, delete, b, c, ttl set, expiry */
    assert_int_equal(l2cfg.n, 6);
    assert_int_equal(find_event(&l2cfg, SM_EVENT_SET, "other"), -1);
    assert_true(find_event(&l1, SM_EVENT_SET, "cfg/ttl") >= 0);
    sm_unwatch(w1);
    sm_unwatch(w2);
    sm_unwatch(w2cfg);
    sm_store_delete(n1);
    sm_store_delete(n2);
    ev_loop_destroy(loop);
}

static void test_wrongtype(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *st = open_store(loop, "n1", "wt:");
    wait_connected(loop, st);
    redisContext *rc = redis_server_connect(&g_srv);
    redisReply *r = cmd(rc, "RPUSH wt:list a b");
    freeReplyObject(r);
    struct got g;
    assert_int_equal(do_get(loop, st, "list", &g), SM_EBACKEND);
    assert_non_null(strstr(g.errmsg, "WRONGTYPE"));
    assert_non_null(strstr(sm_errmsg(st), "WRONGTYPE"));
    /* MGET reports a wrong-typed key as missing (that is Redis's answer) */
    const char *keys[] = {"list", "nothing"};
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_get_multi(st, keys, 2, on_done, &g), 0);
    assert_true(run_until(loop, got_done, &g, 5000));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.statuses[0], SM_ENOTFOUND);
    /* the connection is still fine afterwards */
    assert_int_equal(do_set(loop, st, "ok", "v", 0), 0);
    redisFree(rc);
    sm_store_delete(st);
    ev_loop_destroy(loop);
}

/* ---- locks ---- */

static int lock_op(struct ev_loop *loop, int (*fn)(void), struct got *g)
{
    (void)fn;
    assert_true(run_until(loop, got_done, g, 5000));
    return g->status;
}

static void test_locks_basic(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *a = open_store(loop, "a", "lk:");
    struct sm_store *b = open_store(loop, "b", "lk:");
    wait_connected(loop, a);
    wait_connected(loop, b);
    struct got ga = {0}, gb = {0}, g = {0};
    assert_int_equal(sm_lock_acquire(a, "job", 1000, on_done, &ga), 0);
    assert_int_equal(ga.calls, 0);
    assert_int_equal(lock_op(loop, NULL, &ga), 0);
    assert_int_equal(strlen(ga.token), 32);
    assert_true(ga.fence >= 1);
    assert_true(ga.expires > 0);
    /* held: another owner is refused */
    assert_int_equal(sm_lock_acquire(b, "job", 5000, on_done, &gb), 0);
    assert_int_equal(lock_op(loop, NULL, &gb), SM_ELOCKED);
    assert_non_null(strstr(gb.errmsg, "job"));
    /* the owner renews (keeps its fence) */
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_lock_renew(a, "job", ga.token, 300, on_done, &g), 0);
    assert_int_equal(lock_op(loop, NULL, &g), 0);
    assert_int_equal(g.fence, ga.fence);
    /* let it lapse: b takes it over with a larger fence */
    run_for(loop, 400);
    memset(&gb, 0, sizeof gb);
    assert_int_equal(sm_lock_acquire(b, "job", 5000, on_done, &gb), 0);
    assert_int_equal(lock_op(loop, NULL, &gb), 0);
    assert_true(gb.fence > ga.fence);
    /* the stale owner can neither renew nor release */
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_lock_renew(a, "job", ga.token, 5000, on_done, &g), 0);
    assert_int_equal(lock_op(loop, NULL, &g), SM_ENOTOWNER);
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_lock_release(a, "job", ga.token, on_done, &g), 0);
    assert_int_equal(lock_op(loop, NULL, &g), SM_ENOTOWNER);
    /* a token we never issued */
    assert_int_equal(sm_lock_release(a, "job", "forged", on_done, &g), SM_ENOTOWNER);
    /* b still holds it; releasing works once */
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_lock_release(b, "job", gb.token, on_done, &g), 0);
    assert_int_equal(lock_op(loop, NULL, &g), 0);
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_lock_release(b, "job", gb.token, on_done, &g), 0);
    assert_int_equal(lock_op(loop, NULL, &g), SM_ENOTOWNER);
    /* free again: a acquires at once, fence still increasing */
    uint64_t last = gb.fence;
    memset(&ga, 0, sizeof ga);
    assert_int_equal(sm_lock_acquire(a, "job", 5000, on_done, &ga), 0);
    assert_int_equal(lock_op(loop, NULL, &ga), 0);
    assert_true(ga.fence > last);
    /* fences sit on the server clock's floor (ms * 1024): within a few
     * seconds of ours, same host */
    uint64_t floor_now = sm_wall_ms() * 1024;
    assert_true(ga.fence > floor_now - 5000 * 1024 && ga.fence < floor_now + 5000 * 1024);
    /* locks are keyed under the prefix and do not show up as data */
    redisContext *rc = redis_server_connect(&g_srv);
    redisReply *r = cmd(rc, "GET lk:lock:job");
    assert_string_equal(r->str, ga.token);
    freeReplyObject(r);
    r = cmd(rc, "GET lk:fence:job");
    assert_int_equal(atoll(r->str), (long long)ga.fence);
    freeReplyObject(r);
    redisFree(rc);
    sm_store_delete(a);
    sm_store_delete(b);
    ev_loop_destroy(loop);
}

/* ---- fences and leases across redis restarts ---- */

static long long redis_int(const struct redis_server *srv, const char *fmt, const char *arg)
{
    redisContext *rc = redis_server_connect(srv);
    assert_non_null(rc);
    redisReply *r = cmd(rc, fmt, arg);
    long long v = r->type == REDIS_REPLY_INTEGER  ? r->integer
                  : r->type == REDIS_REPLY_STRING ? atoll(r->str)
                                                  : -1000;
    freeReplyObject(r);
    redisFree(rc);
    return v;
}

static uint64_t counter_value(struct sm_store *st, const char *name)
{
    char *m = sm_metrics_render(st);
    assert_non_null(m);
    const char *p = strstr(m, name);
    uint64_t v = 0;
    while (p) { /* the sample line, not the HELP/TYPE lines */
        const char *nl = strchr(p, '\n');
        if ((p == m || p[-1] == '\n') && p[strlen(name)] == ' ') {
            v = strtoull(p + strlen(name) + 1, NULL, 10);
            break;
        }
        p = nl ? strstr(nl, name) : NULL;
    }
    free(m);
    return v;
}

static int acquire(struct ev_loop *loop, struct sm_store *st, const char *name, uint64_t ttl,
                   struct got *g)
{
    memset(g, 0, sizeof *g);
    int rc = sm_lock_acquire(st, name, ttl, on_done, g);
    if (rc < 0) {
        snprintf(g->errmsg, sizeof g->errmsg, "%s", sm_errmsg(st));
        return rc;
    }
    return lock_op(loop, NULL, g);
}

static bool is_down(void *arg)
{
    return !is_connected(arg);
}

/* Kill the server, let every store notice, restart it, let them reconnect. */
static void bounce(struct ev_loop *loop, struct redis_server *srv, struct sm_store *const *sts,
                   size_t n)
{
    redis_server_signal(srv, SIGKILL);
    for (size_t i = 0; i < n; i++) assert_true(run_until(loop, is_down, sts[i], 5000));
    assert_int_equal(redis_server_restart(srv), 0);
    for (size_t i = 0; i < n; i++) wait_connected(loop, sts[i]);
}

struct waitkey {
    const struct redis_server *srv;
    const char *key;
};

static bool wait_key_set(void *arg)
{
    struct waitkey *w = arg;
    return redis_int(w->srv, "PTTL %s", w->key) > 0;
}

/* Without persistence: the restarted server is empty. The fence still goes
 * up (clock floor), and no grant happens while the old 1.5 s lease could
 * still run: the old holder's reconnect alone announces the restart. */
static void test_lock_restart_empty(void **state)
{
    (void)state;
    struct redis_server srv = {0};
    assert_int_equal(redis_server_start(&srv), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *a = open_store_on(loop, srv.addr, "a", "re:", NULL);
    wait_connected(loop, a);
    struct got ga, gb;
    assert_int_equal(acquire(loop, a, "job", 1500, &ga), 0);
    double granted = ev_time();
    uint64_t f1 = ga.fence;
    bounce(loop, &srv, &a, 1);
    assert_int_equal(redis_int(&srv, "EXISTS %s", "re:fence:job"), 0); /* data gone */
    /* a's reconnect check set the recovery wait before anyone asked */
    struct waitkey wk = {&srv, "re:lockmeta:wait"};
    assert_true(run_until(loop, wait_key_set, &wk, 5000));
    long long left = redis_int(&srv, "PTTL %s", "re:lockmeta:wait");
    assert_true(left > 0 && left <= 1500);
    /* a fresh client that never saw the old epoch is held off too */
    struct sm_store *b = open_store_on(loop, srv.addr, "b", "re:", NULL);
    wait_connected(loop, b);
    int rc = acquire(loop, b, "job", 1000, &gb);
    if (ev_time() - granted < 1.4) {
        assert_int_equal(rc, SM_EUNAVAILABLE);
        assert_non_null(strstr(gb.errmsg, "restarted or lost its data"));
        assert_int_equal(counter_value(b, "statemesh_redis_lock_recovery_refusals_total"), 1);
    }
    /* once the old lease is over: granted, with a larger fence */
    do {
        run_for(loop, 100);
        rc = acquire(loop, b, "job", 1000, &gb);
    } while (rc == SM_EUNAVAILABLE && ev_time() - granted < 10);
    assert_int_equal(rc, 0);
    assert_true(ev_time() - granted >= 1.5 - 0.05); /* redis's clock vs ours: same host */
    assert_true(gb.fence > f1);
    assert_int_equal(counter_value(a, "statemesh_redis_lock_epochs_total"), 1);
    sm_store_delete(b);
    sm_store_delete(a);
    ev_loop_destroy(loop);
    redis_server_stop(&srv);
}

/* redis.lock_recovery=off: grants resume at once after a restart (the lease
 * overlap the checker measures), but fences still never go back. */
static void test_lock_restart_no_wait(void **state)
{
    (void)state;
    struct redis_server srv = {0};
    assert_int_equal(redis_server_start(&srv), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    const char *off[] = {"redis.lock_recovery", "off", NULL};
    struct sm_store *a = open_store_on(loop, srv.addr, "a", "rn:", off);
    wait_connected(loop, a);
    struct got g;
    uint64_t last = 0;
    for (int round = 0; round < 3; round++) {
        int rc = acquire(loop, a, "job", 30000, &g);
        if (rc) fail_msg("round %d: %s", round, g.errmsg);
        assert_true(g.fence > last);
        last = g.fence;
        bounce(loop, &srv, &a, 1);
    }
    assert_int_equal(acquire(loop, a, "job", 30000, &g), 0);
    assert_true(g.fence > last);
    sm_store_delete(a);
    ev_loop_destroy(loop);
    redis_server_stop(&srv);
}

/* With persistence (AOF, fsync always): the data survives a SIGKILL, the
 * lock is still held after the restart, and a fence counter rolled back (as
 * an older RDB or AOF would bring it) cannot make fences go back. */
static void test_lock_restart_persistent(void **state)
{
    (void)state;
    struct redis_server srv = {.extra = {"--appendonly", "yes", "--appendfsync", "always", NULL}};
    assert_int_equal(redis_server_start(&srv), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *a = open_store_on(loop, srv.addr, "a", "rp:", NULL);
    struct sm_store *b = open_store_on(loop, srv.addr, "b", "rp:", NULL);
    wait_connected(loop, a);
    wait_connected(loop, b);
    struct got ga, gb, g;
    assert_int_equal(acquire(loop, a, "job", 1200, &ga), 0);
    double granted = ev_time();
    struct sm_store *both[2] = {a, b};
    bounce(loop, &srv, both, 2);
    assert_int_equal(redis_int(&srv, "GET %s", "rp:fence:job"), (long long)ga.fence);
    /* the holder keeps its lock across the restart */
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_lock_renew(a, "job", ga.token, 600, on_done, &g), 0);
    if (ev_time() - granted < 1.1) {
        assert_int_equal(lock_op(loop, NULL, &g), 0);
        assert_int_equal(g.fence, ga.fence);
        /* others wait out the leases from before the restart */
        assert_int_equal(acquire(loop, b, "job", 1000, &gb), SM_EUNAVAILABLE);
    } else {
        assert_true(run_until(loop, got_done, &g, 5000));
    }
    /* roll the counter back, as a stale snapshot would */
    redisContext *rc = redis_server_connect(&srv);
    freeReplyObject(cmd(rc, "SET rp:fence:job 3"));
    redisFree(rc);
    int st;
    do {
        run_for(loop, 100);
        st = acquire(loop, b, "job", 1000, &gb);
    } while ((st == SM_EUNAVAILABLE || st == SM_ELOCKED) && ev_time() - granted < 10);
    assert_int_equal(st, 0);
    assert_true(gb.fence > ga.fence);
    sm_store_delete(a);
    sm_store_delete(b);
    ev_loop_destroy(loop);
    redis_server_stop(&srv);
}

static void test_lock_recovery_option(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_config *cfg = sm_config_new();
    assert_int_equal(sm_config_set(cfg, "storage", "redis"), 0);
    assert_int_equal(sm_config_set(cfg, "redis.addr", g_srv.addr), 0);
    assert_int_equal(sm_config_set(cfg, "redis.lock_recovery", "sometimes"), 0);
    struct sm_store *st = NULL;
    char err[256];
    assert_int_equal(sm_store_new(loop, cfg, &st, err, sizeof err), SM_ECONFIG);
    assert_non_null(strstr(err, "redis.lock_recovery"));
    sm_config_delete(cfg);
    ev_loop_destroy(loop);
}

/* 20 clients on 4 stores (4 connections) contend for one lock, 200 cycles each. */
#define NCLIENTS 20
#define NCYCLES  200
#define NSTORES  4

struct contest;
struct client {
    struct contest *ct;
    int id;
    struct sm_store *st;
    int cycles;
    char token[64];
    ev_timer retry;
    bool busy;
};
struct contest {
    struct ev_loop *loop;
    struct client cl[NCLIENTS];
    int holder; /* -1 none */
    uint64_t last_fence;
    int violations, fence_violations, errors, grants, done_clients, locked_replies;
    char last_err[256];
};

static void try_acquire(struct client *c);

static void on_release(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct client *c = arg;
    struct contest *ct = c->ct;
    if (status != 0) {
        ct->errors++;
        snprintf(ct->last_err, sizeof ct->last_err, "release: %s",
                 res && res->errmsg ? res->errmsg : "");
    }
    if (++c->cycles == NCYCLES) {
        ct->done_clients++;
        return;
    }
    try_acquire(c);
}

static void on_acquire(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct client *c = arg;
    struct contest *ct = c->ct;
    if (status == SM_ELOCKED) {
        ct->locked_replies++;
        /* back off a little, with a per-client skew */
        ev_timer_set(&c->retry, 0.0005 + 0.0001 * (c->id % 5), 0.);
        ev_timer_start(ct->loop, &c->retry);
        return;
    }
    if (status != 0) {
        ct->errors++;
        snprintf(ct->last_err, sizeof ct->last_err, "acquire: %s",
                 res && res->errmsg ? res->errmsg : "");
        ev_timer_set(&c->retry, 0.001, 0.);
        ev_timer_start(ct->loop, &c->retry);
        return;
    }
    ct->grants++;
    if (ct->holder != -1) ct->violations++;
    if (res->lock->fence <= ct->last_fence) ct->fence_violations++;
    ct->last_fence = res->lock->fence;
    ct->holder = c->id;
    snprintf(c->token, sizeof c->token, "%s", res->lock->token);
    /* critical section ends before the release is sent */
    ct->holder = -1;
    if (sm_lock_release(c->st, "contended", c->token, on_release, c) != 0) {
        ct->errors++;
        snprintf(ct->last_err, sizeof ct->last_err, "release refused: %s", sm_errmsg(c->st));
    }
}

static void retry_cb(struct ev_loop *l, ev_timer *w, int r)
{
    (void)l, (void)r;
    try_acquire(w->data);
}

static void try_acquire(struct client *c)
{
    if (sm_lock_acquire(c->st, "contended", 10000, on_acquire, c) != 0) {
        c->ct->errors++;
        snprintf(c->ct->last_err, sizeof c->ct->last_err, "acquire refused: %s", sm_errmsg(c->st));
    }
}

static bool contest_done(void *arg)
{
    struct contest *ct = arg;
    return ct->done_clients == NCLIENTS;
}

static void test_locks_contention(void **state)
{
    (void)state;
    struct contest *ct = calloc(1, sizeof *ct);
    ct->loop = ev_loop_new(EVFLAG_AUTO);
    ct->holder = -1;
    struct sm_store *stores[NSTORES];
    for (int i = 0; i < NSTORES; i++) {
        char node[16];
        snprintf(node, sizeof node, "c%d", i);
        stores[i] = open_store(ct->loop, node, "ct:");
        wait_connected(ct->loop, stores[i]);
    }
    for (int i = 0; i < NCLIENTS; i++) {
        struct client *c = &ct->cl[i];
        c->ct = ct;
        c->id = i;
        c->st = stores[i % NSTORES];
        ev_timer_init(&c->retry, retry_cb, 0., 0.);
        c->retry.data = c;
    }
    for (int i = 0; i < NCLIENTS; i++) try_acquire(&ct->cl[i]);
    bool done = run_until(ct->loop, contest_done, ct, 120000);
    if (ct->errors) fail_msg("%d errors, last: %s", ct->errors, ct->last_err);
    assert_true(done);
    assert_int_equal(ct->grants, NCLIENTS * NCYCLES);
    assert_int_equal(ct->violations, 0);
    assert_int_equal(ct->fence_violations, 0);
    assert_true(ct->locked_replies > 0); /* there really was contention */
    for (int i = 0; i < NCLIENTS; i++) ev_timer_stop(ct->loop, &ct->cl[i].retry);
    for (int i = 0; i < NSTORES; i++) sm_store_delete(stores[i]);
    ev_loop_destroy(ct->loop);
    free(ct);
}

/* ---- faults ---- */

static void test_kill_restart(void **state)
{
    (void)state;
    struct redis_server srv = {0};
    assert_int_equal(redis_server_start(&srv), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *st = open_store_on(loop, srv.addr, "n1", "kr:", NULL);
    struct sm_store *peer = open_store_on(loop, srv.addr, "n2", "kr:", NULL);
    wait_connected(loop, st);
    wait_connected(loop, peer);
    assert_int_equal(gauge_value(st), 1);
    struct evlog l = {0};
    struct sm_watch *w;
    assert_int_equal(sm_watch(st, "", on_event, &l, &w), 0);
    assert_int_equal(do_set(loop, st, "before", "1", 0), 0);
    /* an op in flight when the server dies fails, exactly once */
    struct got inflight = {0};
    assert_int_equal(sm_set(st, "x", "1", 1, 0, on_done, &inflight), 0);
    redis_server_signal(&srv, SIGKILL);
    assert_true(run_until(loop, got_done, &inflight, 5000));
    run_for(loop, 50);
    assert_int_equal(inflight.calls, 1);
    assert_true(inflight.status == SM_EUNAVAILABLE || inflight.status == 0);
    /* while down: refused at once with a clear message, gauge 0 */
    struct got g = {0};
    int rc = sm_set(st, "during", "1", 1, 0, on_done, &g);
    if (rc == 0) { /* raced the disconnect notice: the op fails asynchronously */
        assert_true(run_until(loop, got_done, &g, 5000));
        rc = g.status;
        rc = sm_set(st, "during", "1", 1, 0, on_done, &g);
    }
    assert_int_equal(rc, SM_EUNAVAILABLE);
    assert_non_null(strstr(sm_errmsg(st), srv.addr));
    assert_int_equal(sm_get(st, "before", on_done, &g), SM_EUNAVAILABLE);
    assert_int_equal(sm_lock_acquire(st, "l", 1000, on_done, &g), SM_EUNAVAILABLE);
    assert_int_equal(gauge_value(st), 0);
    assert_int_equal(g.calls, 0);
    run_for(loop, 300); /* a few failed reconnect attempts */
    assert_int_equal(sm_ping(st, on_done, &g), SM_EUNAVAILABLE);
    /* back on the same port: recovers by itself */
    assert_int_equal(redis_server_restart(&srv), 0);
    wait_connected(loop, st);
    wait_connected(loop, peer);
    assert_int_equal(gauge_value(st), 1);
    char *m = sm_metrics_render(st);
    assert_non_null(strstr(m, "statemesh_redis_disconnects_total{connection=\"command\"}"));
    free(m);
    /* writes after the reconnect are kept and watched again, from both nodes */
    int before = l.n;
    assert_int_equal(do_set(loop, st, "after", "2", 0), 0);
    assert_int_equal(do_set(loop, peer, "peer-after", "3", 0), 0);
    struct got rg;
    assert_int_equal(do_get(loop, peer, "after", &rg), 0);
    assert_string_equal(rg.values[0], "2");
    struct evwait ew = {&l, before + 2};
    assert_true(run_until(loop, have_events, &ew, 5000));
    assert_true(find_event(&l, SM_EVENT_SET, "after") >= before);
    int pi = find_event(&l, SM_EVENT_SET, "peer-after");
    assert_true(pi >= before);
    assert_string_equal(l.origin[pi], "n2");
    /* expiry notifications were re-enabled on the fresh server */
    assert_int_equal(do_set(loop, peer, "ttl", "t", 50), 0);
    struct evfind ef = {&l, SM_EVENT_EXPIRE, "ttl"};
    assert_true(run_until(loop, have_event, &ef, 5000));
    assert_string_equal(l.origin[find_event(&l, SM_EVENT_EXPIRE, "ttl")], "n2");
    sm_unwatch(w);
    sm_store_delete(st);
    sm_store_delete(peer);
    ev_loop_destroy(loop);
    redis_server_stop(&srv);
}

static void test_timeouts(void **state)
{
    (void)state;
    struct redis_server srv = {0};
    assert_int_equal(redis_server_start(&srv), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    static const char *const opts[] = {"redis.command_timeout", "150ms", "redis.connect_timeout",
                                       "150ms", NULL};
    struct sm_store *st = open_store_on(loop, srv.addr, "n1", "to:", opts);
    wait_connected(loop, st);
    /* the server stalls (SIGSTOP): the command times out, nothing blocks */
    redis_server_signal(&srv, SIGSTOP);
    struct got g1 = {0}, g2 = {0};
    ev_now_update(loop);
    double t0 = ev_now(loop);
    assert_int_equal(sm_set(st, "k", "v", 1, 0, on_done, &g1), 0);
    assert_int_equal(sm_get(st, "k", on_done, &g2), 0);
    assert_true(run_until(loop, got_done, &g2, 3000));
    double took = ev_now(loop) - t0;
    assert_int_equal(g1.status, SM_ETIMEOUT);
    /* g2 expires a few µs after g1: it times out too, or is failed by the
     * reset that g1's timeout causes, whichever the timer's lateness gives */
    assert_true(g2.status == SM_ETIMEOUT || g2.status == SM_EUNAVAILABLE);
    assert_non_null(strstr(g1.errmsg, "150 ms"));
    assert_true(took >= 0.14 && took < 2.0);
    /* the connection was reset; reconnects time out too while stalled */
    struct got g3 = {0};
    assert_int_equal(sm_get(st, "k", on_done, &g3), SM_EUNAVAILABLE);
    assert_int_equal(gauge_value(st), 0);
    run_for(loop, 400);
    assert_int_equal(gauge_value(st), 0);
    char *m = sm_metrics_render(st);
    assert_true(strstr(m, "statemesh_redis_command_timeouts_total 1\n") ||
                strstr(m, "statemesh_redis_command_timeouts_total 2\n"));
    free(m);
    redis_server_signal(&srv, SIGCONT);
    wait_connected(loop, st);
    assert_int_equal(do_set(loop, st, "k", "v2", 0), 0);
    struct got g;
    assert_int_equal(do_get(loop, st, "k", &g), 0);
    assert_string_equal(g.values[0], "v2");
    sm_store_delete(st);
    /* a store opened against a stalled server: the connect timer fires and
     * the queued first operation fails with SM_ETIMEOUT */
    redis_server_signal(&srv, SIGSTOP);
    static const char *const copts[] = {"redis.connect_timeout", "150ms", NULL};
    st = open_store_on(loop, srv.addr, "n1", "to:", copts);
    struct got g4 = {0};
    assert_int_equal(sm_get(st, "k", on_done, &g4), 0);
    assert_true(run_until(loop, got_done, &g4, 3000));
    assert_int_equal(g4.status, SM_ETIMEOUT);
    assert_non_null(strstr(g4.errmsg, "connecting to redis"));
    assert_non_null(strstr(g4.errmsg, "timed out after 150 ms"));
    redis_server_signal(&srv, SIGCONT);
    wait_connected(loop, st);
    sm_store_delete(st);
    ev_loop_destroy(loop);
    redis_server_stop(&srv);
}

/* A caller that blocked for longer than the command timeout before issuing an
 * operation (the loop's cached time is stale) must not see it time out. */
static void test_stale_loop_time(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    static const char *const opts[] = {"redis.command_timeout", "200ms", NULL};
    struct sm_store *st = open_store_on(loop, g_srv.addr, "n1", "stale:", opts);
    wait_connected(loop, st);
    usleep(400 * 1000);
    assert_int_equal(do_set(loop, st, "k", "v", 0), 0);
    struct got g;
    assert_int_equal(do_get(loop, st, "k", &g), 0);
    sm_store_delete(st);
    ev_loop_destroy(loop);
}

static void test_no_server(void **state)
{
    (void)state;
    struct redis_server srv = {0};
    assert_int_equal(redis_server_start(&srv), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "%s", srv.addr);
    redis_server_stop(&srv); /* the port is now (very likely) closed */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *st = open_store_on(loop, addr, "n1", "ns:", NULL);
    struct got g = {0};
    int rc = sm_get(st, "k", on_done, &g);
    if (rc == 0) {
        assert_true(run_until(loop, got_done, &g, 3000));
        rc = g.status;
    }
    assert_int_equal(rc, SM_EUNAVAILABLE);
    run_for(loop, 20);
    memset(&g, 0, sizeof g);
    assert_int_equal(sm_get(st, "k", on_done, &g), SM_EUNAVAILABLE);
    assert_non_null(strstr(sm_errmsg(st), "refused"));
    assert_int_equal(gauge_value(st), 0);
    sm_store_delete(st);
    ev_loop_destroy(loop);
}

static void test_password(void **state)
{
    (void)state;
    struct redis_server srv = {.password = "s3cret"};
    assert_int_equal(redis_server_start(&srv), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    /* no password: a clear auth error, not a hang */
    struct sm_store *st = open_store_on(loop, srv.addr, "n1", "pw:", NULL);
    struct got g = {0};
    int rc = sm_set(st, "k", "v", 1, 0, on_done, &g);
    if (rc == 0) {
        assert_true(run_until(loop, got_done, &g, 3000));
        rc = g.status;
        assert_non_null(strstr(g.errmsg, "redis.password"));
    }
    assert_int_equal(rc, SM_EAUTH);
    run_for(loop, 50);
    assert_int_equal(sm_get(st, "k", on_done, &g), SM_EAUTH);
    assert_non_null(strstr(sm_errmsg(st), "password"));
    assert_int_equal(gauge_value(st), 0);
    sm_store_delete(st);
    /* wrong password */
    static const char *const wrong[] = {"redis.password", "nope", NULL};
    st = open_store_on(loop, srv.addr, "n1", "pw:", wrong);
    memset(&g, 0, sizeof g);
    rc = sm_set(st, "k", "v", 1, 0, on_done, &g);
    if (rc == 0) {
        assert_true(run_until(loop, got_done, &g, 3000));
        rc = g.status;
    }
    assert_int_equal(rc, SM_EAUTH);
    sm_store_delete(st);
    /* the right one, with a database number */
    static const char *const right[] = {"redis.password", "s3cret", "redis.db", "3", NULL};
    st = open_store_on(loop, srv.addr, "n1", "pw:", right);
    struct sm_store *st2 = open_store_on(loop, srv.addr, "n2", "pw:", right);
    wait_connected(loop, st);
    wait_connected(loop, st2);
    struct evlog l = {0};
    struct sm_watch *w;
    assert_int_equal(sm_watch(st, "", on_event, &l, &w), 0);
    assert_int_equal(do_set(loop, st2, "k", "v", 0), 0);
    assert_int_equal(do_set(loop, st2, "t", "v", 50), 0);
    struct evfind ef = {&l, SM_EVENT_EXPIRE, "t"}; /* db 3's expiry channel */
    assert_true(run_until(loop, have_event, &ef, 5000));
    redisContext *rc2 = redis_server_connect(&srv);
    redisReply *r = cmd(rc2, "SELECT 3");
    freeReplyObject(r);
    r = cmd(rc2, "GET pw:k");
    assert_string_equal(r->str, "v");
    freeReplyObject(r);
    redisFree(rc2);
    sm_unwatch(w);
    sm_store_delete(st);
    sm_store_delete(st2);
    ev_loop_destroy(loop);
    redis_server_stop(&srv);
}

static void test_unix_socket(void **state)
{
    (void)state;
    struct redis_server srv = {.unix_socket = true};
    assert_int_equal(redis_server_start(&srv), 0);
    char addr[200];
    snprintf(addr, sizeof addr, "unix:%s", srv.sock);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *st = open_store_on(loop, addr, "n1", "ux:", NULL);
    wait_connected(loop, st);
    assert_int_equal(do_set(loop, st, "k", "over-unix", 0), 0);
    struct got g;
    assert_int_equal(do_get(loop, st, "k", &g), 0);
    assert_string_equal(g.values[0], "over-unix");
    sm_store_delete(st);
    ev_loop_destroy(loop);
    redis_server_stop(&srv);
}

static void test_close_with_pending(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *st = open_store(loop, "n1", "cl:");
    wait_connected(loop, st);
    struct got g[5] = {{0}};
    assert_int_equal(sm_set(st, "a", "1", 1, 0, on_done, &g[0]), 0);
    assert_int_equal(sm_get(st, "a", on_done, &g[1]), 0);
    assert_int_equal(sm_lock_acquire(st, "l", 1000, on_done, &g[2]), 0);
    assert_int_equal(sm_del(st, "a", on_done, &g[3]), 0);
    assert_int_equal(sm_ping(st, on_done, &g[4]), 0);
    sm_store_delete(st);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].status, SM_ECLOSED);
    }
    run_for(loop, 20);
    for (int i = 0; i < 5; i++) assert_int_equal(g[i].calls, 1);
    ev_loop_destroy(loop);
}

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    if (redis_server_start(&g_srv) != 0) {
        fprintf(stderr, "cannot start %s\n", redis_server_path());
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    redis_server_stop(&g_srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_codec),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_ops),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_set_multi_one_round_trip),
        cmocka_unit_test(test_prefix_isolation),
        cmocka_unit_test(test_watch_two_nodes),
        cmocka_unit_test(test_wrongtype),
        cmocka_unit_test(test_locks_basic),
        cmocka_unit_test(test_locks_contention),
        cmocka_unit_test(test_kill_restart),
        cmocka_unit_test(test_lock_restart_empty),
        cmocka_unit_test(test_lock_restart_no_wait),
        cmocka_unit_test(test_lock_restart_persistent),
        cmocka_unit_test(test_lock_recovery_option),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_stale_loop_time),
        cmocka_unit_test(test_no_server),
        cmocka_unit_test(test_password),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_close_with_pending),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
