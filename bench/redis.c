/* bench/redis.c: pipelined set throughput of the redis backend against a raw
 * hiredis pipeline of the very same commands on the same server and loop, and
 * the lock acquire+release round trip. Starts its own redis-server. */
#include "config.h"

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "src/backend.h"
#include "src/redis_event.h"
#include "statemesh.h"
#include "tests/lib/redis_server.h"

#define OPS    30000 /* sets per run */
#define WINDOW 512   /* operations in flight */
#define RUNS   11    /* pairs of runs, alternated */
#define NKEYS  1000
#define VALLEN 64
#define LOCKS  2000
#define PREFIX "bench:"
#define NODE   "bench-node"

static char keys[NKEYS][16];
static char value[VALLEN];

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void emit(const char *metric, double v, const char *unit)
{
    printf("{\"bench\":\"redis\",\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"}\n", metric, v,
           unit);
    fflush(stdout);
}

static void die(const char *what)
{
    fprintf(stderr, "bench/redis: %s\n", what);
    exit(1);
}

/* ---- the backend side ---- */

struct run {
    struct ev_loop *loop;
    struct sm_store *st;
    redisAsyncContext *ac;
    size_t issued, done;
    int errors;
};

static void backend_issue(struct run *r);

static void on_set(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s, (void)res;
    struct run *r = arg;
    if (status != 0) r->errors++;
    r->done++;
    if (r->issued < OPS) backend_issue(r);
    if (r->done == OPS) ev_break(r->loop, EVBREAK_ONE);
}

static void backend_issue(struct run *r)
{
    const char *k = keys[r->issued % NKEYS];
    r->issued++;
    if (sm_set(r->st, k, value, VALLEN, 0, on_set, r) != 0) die(sm_errmsg(r->st));
}

static double backend_run(struct run *r)
{
    r->issued = r->done = 0;
    double t0 = now_s();
    while (r->issued < WINDOW && r->issued < OPS) backend_issue(r);
    ev_run(r->loop, 0);
    double t = now_s() - t0;
    if (r->errors) die("backend set failed");
    return OPS / t;
}

/* ---- the raw side: what the backend sends for sm_set(), by hand ---- */

static char rawmsg[NKEYS][256];
static size_t rawmsg_len[NKEYS];
static char rawkey[NKEYS][32];

static void raw_issue(struct run *r);

static void on_raw(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct run *r = priv;
    redisReply *rep = reply;
    if (!rep || rep->type == REDIS_REPLY_ERROR) r->errors++;
    r->done++;
    if (r->issued < OPS) raw_issue(r);
    if (r->done == OPS) ev_break(r->loop, EVBREAK_ONE);
}

static void on_raw_part(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct run *r = priv;
    redisReply *rep = reply;
    if (!rep || rep->type == REDIS_REPLY_ERROR) r->errors++;
}

static void raw_issue(struct run *r)
{
    size_t i = r->issued % NKEYS;
    r->issued++;
    const char *sargv[3] = {"SET", rawkey[i], value};
    size_t slen[3] = {3, strlen(rawkey[i]), VALLEN};
    const char *pargv[3] = {"PUBLISH", PREFIX "events", rawmsg[i]};
    size_t plen[3] = {7, sizeof PREFIX "events" - 1, rawmsg_len[i]};
    if (redisAsyncCommandArgv(r->ac, on_raw_part, r, 3, sargv, slen) != REDIS_OK ||
        redisAsyncCommandArgv(r->ac, on_raw, r, 3, pargv, plen) != REDIS_OK)
        die("raw command failed");
}

/* The same commands again, but formatted once up front: the floor of what
 * any hiredis client can do (no per-command formatting at all). */
static char *prefmt[NKEYS][2];
static size_t prefmt_len[NKEYS][2];

static void pre_issue(struct run *r);

static void on_pre(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct run *r = priv;
    redisReply *rep = reply;
    if (!rep || rep->type == REDIS_REPLY_ERROR) r->errors++;
    r->done++;
    if (r->issued < OPS) pre_issue(r);
    if (r->done == OPS) ev_break(r->loop, EVBREAK_ONE);
}

static void pre_issue(struct run *r)
{
    size_t i = r->issued % NKEYS;
    r->issued++;
    if (redisAsyncFormattedCommand(r->ac, on_raw_part, r, prefmt[i][0], prefmt_len[i][0]) !=
            REDIS_OK ||
        redisAsyncFormattedCommand(r->ac, on_pre, r, prefmt[i][1], prefmt_len[i][1]) != REDIS_OK)
        die("raw command failed");
}

static double pre_run(struct run *r)
{
    r->issued = r->done = 0;
    double t0 = now_s();
    while (r->issued < WINDOW && r->issued < OPS) pre_issue(r);
    ev_run(r->loop, 0);
    double t = now_s() - t0;
    if (r->errors) die("preformatted set failed");
    return OPS / t;
}

static double raw_run(struct run *r)
{
    r->issued = r->done = 0;
    double t0 = now_s();
    while (r->issued < WINDOW && r->issued < OPS) raw_issue(r);
    ev_run(r->loop, 0);
    double t = now_s() - t0;
    if (r->errors) die("raw set failed");
    return OPS / t;
}

static void on_raw_ping(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac, (void)reply;
    ev_break(priv, EVBREAK_ONE);
}

/* ---- locks ---- */

struct lockrun {
    struct ev_loop *loop;
    struct sm_store *st;
    int status;
    char token[80];
};

static void on_lock(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct lockrun *l = arg;
    l->status = status;
    if (status == 0 && res->lock) snprintf(l->token, sizeof l->token, "%s", res->lock->token);
    ev_break(l->loop, EVBREAK_ONE);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static bool connected(struct sm_store *st)
{
    char *m = sm_metrics_render(st);
    bool up = m && strstr(m, "statemesh_connection_status{storage_type=\"redis\"} 1");
    free(m);
    return up;
}

static void tick(struct ev_loop *l, ev_timer *w, int r)
{
    (void)w, (void)r;
    ev_break(l, EVBREAK_ONE);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct redis_server srv = {0};
    if (redis_server_start(&srv) != 0) die("cannot start redis-server");
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_config *cfg = sm_config_new();
    if (!cfg || sm_config_set(cfg, "storage", "redis") || sm_config_set(cfg, "node_id", NODE) ||
        sm_config_set(cfg, "redis.addr", srv.addr) || sm_config_set(cfg, "redis.prefix", PREFIX))
        die("config");
    struct run r = {.loop = loop};
    char err[256];
    if (sm_store_new(loop, cfg, &r.st, err, sizeof err) != 0) die(err);
    sm_config_delete(cfg);
    ev_timer t;
    ev_timer_init(&t, tick, 0.01, 0.);
    for (int i = 0; i < 3000 && !connected(r.st); i++) {
        ev_timer_start(loop, &t);
        ev_run(loop, 0);
    }
    if (!connected(r.st)) die(sm_errmsg(r.st));

    memset(value, 'v', sizeof value);
    uint64_t wall = sm_wall_ms();
    for (int i = 0; i < NKEYS; i++) {
        snprintf(keys[i], sizeof keys[i], "key:%04d", i);
        snprintf(rawkey[i], sizeof rawkey[i], PREFIX "key:%04d", i);
        /* the same message the backend publishes for this set */
        struct sm_redis_ev e = {.type = 'S',
                                .version = (wall << 16) + (uint64_t)i,
                                .time_ms = wall,
                                .origin = NODE,
                                .origin_len = strlen(NODE),
                                .key = keys[i],
                                .key_len = strlen(keys[i]),
                                .value = value,
                                .value_len = VALLEN};
        rawmsg_len[i] = sm_redis_ev_encode(rawmsg[i], sizeof rawmsg[i], &e);
        const char *sargv[3] = {"SET", rawkey[i], value};
        size_t slen[3] = {3, strlen(rawkey[i]), VALLEN};
        const char *pargv[3] = {"PUBLISH", PREFIX "events", rawmsg[i]};
        size_t plen[3] = {7, sizeof PREFIX "events" - 1, rawmsg_len[i]};
        int a = redisFormatCommandArgv(&prefmt[i][0], 3, sargv, slen);
        int c = redisFormatCommandArgv(&prefmt[i][1], 3, pargv, plen);
        if (a < 0 || c < 0) die("format");
        prefmt_len[i][0] = (size_t)a;
        prefmt_len[i][1] = (size_t)c;
    }
    r.ac = redisAsyncConnect("127.0.0.1", srv.port);
    if (!r.ac || r.ac->err) die("raw connect");
    redisLibevAttach(loop, r.ac);
    redisAsyncCommand(r.ac, on_raw_ping, loop, "PING");
    ev_run(loop, 0);

    /* warm both up, then alternate so drift and neighbours hit both alike */
    backend_run(&r);
    raw_run(&r);
    pre_run(&r);
    double be[RUNS], raw[RUNS], pre[RUNS], cpu[3] = {0, 0, 0};
    for (int i = 0; i < RUNS; i++) {
        /* rotate the order so no side always runs first or last */
        for (int k = 0; k < 3; k++) {
            int side = (i + k) % 3;
            double c0 = cpu_s();
            if (side == 0)
                be[i] = backend_run(&r);
            else if (side == 1)
                raw[i] = raw_run(&r);
            else
                pre[i] = pre_run(&r);
            cpu[side] += cpu_s() - c0;
        }
        fprintf(stderr, "run %d: backend %.0f/s raw %.0f/s preformatted %.0f/s\n", i, be[i], raw[i],
                pre[i]);
    }
    /* client CPU per set (this process: loop, hiredis, store, subscriber) */
    fprintf(stderr, "client cpu per set: backend %.2f us, raw %.2f us, preformatted %.2f us\n",
            cpu[0] / (RUNS * (double)OPS) * 1e6, cpu[1] / (RUNS * (double)OPS) * 1e6,
            cpu[2] / (RUNS * (double)OPS) * 1e6);
    /* each ratio is taken within one round (same neighbours, same minute),
     * then the median over rounds */
    double ratios[RUNS], pratios[RUNS];
    for (int i = 0; i < RUNS; i++) {
        ratios[i] = be[i] / raw[i];
        pratios[i] = be[i] / pre[i];
    }
    emit("backend_set_ops_per_s", median(be, RUNS), "ops/s");
    emit("raw_set_ops_per_s", median(raw, RUNS), "ops/s");
    emit("raw_preformatted_set_ops_per_s", median(pre, RUNS), "ops/s");
    emit("pipeline_ratio", median(ratios, RUNS), "ratio");
    emit("pipeline_vs_preformatted_ratio", median(pratios, RUNS), "ratio");

    /* lock acquire + release, one at a time (a full round trip each) */
    struct lockrun l = {.loop = loop, .st = r.st};
    static double lat[LOCKS];
    for (int i = 0; i < LOCKS + 100; i++) {
        double t0 = now_s();
        if (sm_lock_acquire(r.st, "bench-lock", 10000, on_lock, &l) != 0) die(sm_errmsg(r.st));
        ev_run(loop, 0);
        if (l.status != 0) die("lock acquire failed");
        if (sm_lock_release(r.st, "bench-lock", l.token, on_lock, &l) != 0) die(sm_errmsg(r.st));
        ev_run(loop, 0);
        if (l.status != 0) die("lock release failed");
        if (i >= 100) lat[i - 100] = (now_s() - t0) * 1000.0;
    }
    qsort(lat, LOCKS, sizeof lat[0], cmp_d);
    emit("lock_ms_p50", lat[LOCKS / 2], "ms");
    emit("lock_ms_p99", lat[LOCKS * 99 / 100], "ms");

    redisAsyncFree(r.ac);
    for (int i = 0; i < NKEYS; i++) free(prefmt[i][0]), free(prefmt[i][1]);
    sm_store_delete(r.st);
    ev_loop_destroy(loop);
    redis_server_stop(&srv);
    return 0;
}
