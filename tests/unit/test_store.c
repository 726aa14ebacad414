/* test_store.c: the public store API on the local backend: every operation,
 * TTL edge cases, watch semantics, limits and errors, injected OOM. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "statemesh.h"
#include "tests/lib/heap.h"

struct fx {
    struct ev_loop *loop;
    struct sm_config *cfg;
    struct sm_store *st;
};

/* Results captured by callbacks. */
struct got {
    int calls;
    int status;
    uint64_t version;
    char value[2048];
    size_t value_len;
    char origin[80];
    size_t n;
    int statuses[8];
    char values[8][64];
};

static void on_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct got *g = arg;
    g->calls++;
    g->status = status;
    g->version = res ? res->version : 0;
    if (res && res->entries) {
        g->n = res->n_entries;
        for (size_t i = 0; i < res->n_entries && i < 8; i++) {
            g->statuses[i] = res->entries[i].status;
            if (res->entries[i].value)
                snprintf(g->values[i], sizeof g->values[i], "%.*s", (int)res->entries[i].value_len,
                         (const char *)res->entries[i].value);
        }
        const struct sm_entry *e = &res->entries[0];
        if (e->value) {
            memcpy(g->value, e->value, e->value_len);
            g->value_len = e->value_len;
        }
        snprintf(g->origin, sizeof g->origin, "%s", e->origin ? e->origin : "");
    }
}

static int setup_with(void **state, const char *const *opts)
{
    struct fx *f = calloc(1, sizeof *f);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    f->cfg = sm_config_new();
    assert_int_equal(sm_config_set(f->cfg, "node_id", "n1"), 0);
    for (size_t i = 0; opts && opts[i]; i += 2)
        assert_int_equal(sm_config_set(f->cfg, opts[i], opts[i + 1]), 0);
    char err[256];
    int rc = sm_store_new(f->loop, f->cfg, &f->st, err, sizeof err);
    if (rc != 0) fail_msg("sm_store_new: %s", err);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, NULL);
}

static int setup_small_queue(void **state)
{
    static const char *const o[] = {"watch_queue", "4", NULL};
    return setup_with(state, o);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    sm_store_delete(f->st);
    sm_config_delete(f->cfg);
    ev_loop_destroy(f->loop);
    free(f);
    return 0;
}

static void run(struct fx *f)
{
    ev_run(f->loop, 0);
}

static void set_ok(struct fx *f, const char *k, const char *v, uint64_t ttl)
{
    struct got g = {0};
    assert_int_equal(sm_set(f->st, k, v, strlen(v), ttl, on_done, &g), 0);
    run(f);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, 0);
}

/* ---- operations ---- */

static void test_set_get(void **state)
{
    struct fx *f = *state;
    struct got s = {0}, g = {0};
    assert_int_equal(sm_set(f->st, "a", "hello", 5, 0, on_done, &s), 0);
    assert_int_equal(s.calls, 0); /* never from inside the call */
    run(f);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, 0);
    assert_int_equal(s.version, 1);
    assert_int_equal(sm_get(f->st, "a", on_done, &g), 0);
    assert_int_equal(g.calls, 0);
    run(f);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.value_len, 5);
    assert_memory_equal(g.value, "hello", 5);
    assert_string_equal(g.origin, "n1");
    assert_int_equal(g.version, 1);
}

static void test_versions_increase(void **state)
{
    struct fx *f = *state;
    for (uint64_t i = 1; i <= 5; i++) {
        struct got s = {0};
        assert_int_equal(sm_set(f->st, "k", "v", 1, 0, on_done, &s), 0);
        run(f);
        assert_int_equal(s.version, i);
    }
    struct sm_entry e;
    assert_int_equal(sm_get_now(f->st, "k", &e), 0);
    assert_int_equal(e.version, 5);
}

static void test_get_missing(void **state)
{
    struct fx *f = *state;
    struct got g = {0};
    assert_int_equal(sm_get(f->st, "nope", on_done, &g), 0);
    run(f);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, SM_ENOTFOUND);
    struct sm_entry e;
    assert_int_equal(sm_get_now(f->st, "nope", &e), SM_ENOTFOUND);
}

static void test_delete(void **state)
{
    struct fx *f = *state;
    set_ok(f, "d", "x", 0);
    struct got d = {0};
    assert_int_equal(sm_del(f->st, "d", on_done, &d), 0);
    struct sm_entry e;
    assert_int_equal(sm_get_now(f->st, "d", &e), SM_ENOTFOUND); /* visible at once */
    run(f);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.version, 2);
    struct got d2 = {0};
    assert_int_equal(sm_del(f->st, "never-there", on_done, &d2), 0);
    run(f);
    assert_int_equal(d2.calls, 1);
    assert_int_equal(d2.status, 0);
    /* a set after a delete continues the version sequence */
    struct got s = {0};
    assert_int_equal(sm_set(f->st, "d", "y", 1, 0, on_done, &s), 0);
    run(f);
    assert_int_equal(s.version, 3);
}

static void test_get_multi_set_multi(void **state)
{
    struct fx *f = *state;
    struct sm_kv items[3] = {{"m1", "one", 3, 0}, {"m2", "two", 3, 0}, {"m3", "three", 5, 0}};
    struct got s = {0};
    assert_int_equal(sm_set_multi(f->st, items, 3, on_done, &s), 0);
    run(f);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, 0);
    const char *keys[4] = {"m3", "missing", "m1", "m2"};
    struct got g = {0};
    assert_int_equal(sm_get_multi(f->st, keys, 4, on_done, &g), 0);
    run(f);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n, 4);
    assert_string_equal(g.values[0], "three");
    assert_int_equal(g.statuses[1], SM_ENOTFOUND);
    assert_string_equal(g.values[2], "one");
    assert_string_equal(g.values[3], "two");
    assert_int_equal(sm_get_multi(f->st, keys, 0, on_done, &g), SM_EINVAL);
}

static int count_entry(const struct sm_entry *e, void *arg)
{
    (void)e;
    (*(int *)arg)++;
    return 0;
}

static void test_list_prefix(void **state)
{
    struct fx *f = *state;
    set_ok(f, "svc:a", "1", 0);
    set_ok(f, "svc:b", "2", 0);
    set_ok(f, "other", "3", 0);
    int n = 0;
    assert_int_equal(sm_list(f->st, "svc:", count_entry, &n), 0);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(sm_list(f->st, "", count_entry, &n), 0);
    assert_int_equal(n, 3);
}

static void test_ping(void **state)
{
    struct fx *f = *state;
    struct got p = {0};
    assert_int_equal(sm_ping(f->st, on_done, &p), 0);
    run(f);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.status, 0);
}

static void test_close_completes_pending(void **state)
{
    struct fx *f = *state;
    struct got s = {0}, g = {0};
    assert_int_equal(sm_set(f->st, "a", "v", 1, 0, on_done, &s), 0);
    assert_int_equal(sm_get(f->st, "a", on_done, &g), 0);
    sm_store_delete(f->st);
    f->st = NULL;
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, SM_ECLOSED);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, SM_ECLOSED);
    run(f); /* nothing runs twice */
    assert_int_equal(s.calls, 1);
    assert_int_equal(g.calls, 1);
}

static void test_locks_and_members_not_supported(void **state)
{
    struct fx *f = *state;
    struct got g = {0};
    assert_int_equal(sm_lock_acquire(f->st, "lock:x", 1000, on_done, &g), SM_ENOTSUP);
    assert_non_null(strstr(sm_errmsg(f->st), "local"));
    assert_int_equal(g.calls, 0);
    assert_int_equal(sm_members(f->st, (sm_member_fn)count_entry, NULL), SM_ENOTSUP);
}

/* ---- TTL ---- */

static void test_ttl_zero_never_expires(void **state)
{
    struct fx *f = *state;
    set_ok(f, "forever", "v", 0);
    struct sm_entry e;
    assert_int_equal(sm_get_now(f->st, "forever", &e), 0);
    assert_int_equal(e.expires_ms, 0);
}

static void test_ttl_expires_at_once(void **state)
{
    struct fx *f = *state;
    set_ok(f, "t", "v", 30);
    struct sm_entry e;
    assert_int_equal(sm_get_now(f->st, "t", &e), 0);
    assert_true(e.expires_ms > 0);
    usleep(45 * 1000);
    /* no sweep has run: an expired key still reads as missing */
    assert_int_equal(sm_get_now(f->st, "t", &e), SM_ENOTFOUND);
    struct got g = {0};
    assert_int_equal(sm_get(f->st, "t", on_done, &g), 0);
    run(f);
    assert_int_equal(g.status, SM_ENOTFOUND);
}

static void test_ttl_reset_extends(void **state)
{
    struct fx *f = *state;
    set_ok(f, "t", "v1", 40);
    usleep(25 * 1000);
    set_ok(f, "t", "v2", 200);
    usleep(25 * 1000); /* past the first TTL */
    struct sm_entry e;
    assert_int_equal(sm_get_now(f->st, "t", &e), 0);
    assert_memory_equal(e.value, "v2", 2);
}

static void test_ttl_expiry_during_iteration(void **state)
{
    struct fx *f = *state;
    set_ok(f, "it:a", "1", 0);
    set_ok(f, "it:b", "2", 20);
    set_ok(f, "it:c", "3", 20);
    usleep(30 * 1000);
    int n = 0;
    assert_int_equal(sm_list(f->st, "it:", count_entry, &n), 0);
    assert_int_equal(n, 1);
}

static void test_ttl_overflow(void **state)
{
    struct fx *f = *state;
    struct got g = {0};
    assert_int_equal(sm_set(f->st, "k", "v", 1, SM_MAX_TTL_MS + 1, on_done, &g), SM_ETTL);
    assert_int_equal(sm_set(f->st, "k", "v", 1, UINT64_MAX, on_done, &g), SM_ETTL);
    assert_int_equal(g.calls, 0);
    set_ok(f, "k", "v", SM_MAX_TTL_MS);
}

/* ---- watch ---- */

struct wlog {
    int n;
    enum sm_event_type types[32];
    char keys[32][32];
    char values[32][32];
    char origins[32][16];
    uint64_t versions[32];
    uint64_t dropped;
    struct sm_watch *self;
    int unwatch_after;
};

static void on_event(struct sm_watch *w, const struct sm_event *ev, void *arg)
{
    struct wlog *l = arg;
    if (l->n < 32) {
        l->types[l->n] = ev->type;
        snprintf(l->keys[l->n], 32, "%s", ev->key);
        snprintf(l->values[l->n], 32, "%.*s", (int)ev->value_len,
                 ev->value ? (const char *)ev->value : "");
        snprintf(l->origins[l->n], 16, "%s", ev->origin);
        l->versions[l->n] = ev->version;
    }
    if (ev->type == SM_EVENT_OVERFLOW) l->dropped += ev->dropped;
    l->n++;
    if (l->unwatch_after && l->n == l->unwatch_after) sm_unwatch(w);
}

static void test_watch_prefix_and_order(void **state)
{
    struct fx *f = *state;
    struct wlog l = {0};
    struct sm_watch *w;
    assert_int_equal(sm_watch(f->st, "backend:", on_event, &l, &w), 0);
    set_ok(f, "backend:1", "up", 0);
    set_ok(f, "other:1", "x", 0);
    set_ok(f, "backend:2", "down", 0);
    struct got d = {0};
    assert_int_equal(sm_del(f->st, "backend:1", on_done, &d), 0);
    run(f);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.types[0], SM_EVENT_SET);
    assert_string_equal(l.keys[0], "backend:1");
    assert_string_equal(l.values[0], "up");
    assert_string_equal(l.origins[0], "n1");
    assert_int_equal(l.versions[0], 1);
    assert_string_equal(l.keys[1], "backend:2");
    assert_int_equal(l.types[2], SM_EVENT_DELETE);
    assert_string_equal(l.keys[2], "backend:1");
    assert_int_equal(l.versions[2], 2);
    sm_unwatch(w);
    set_ok(f, "backend:3", "up", 0);
    assert_int_equal(l.n, 3);
}

static void test_watch_expire_event(void **state)
{
    struct fx *f = *state;
    struct wlog l = {0};
    struct sm_watch *w;
    assert_int_equal(sm_watch(f->st, "", on_event, &l, &w), 0);
    set_ok(f, "e", "v", 10);
    assert_int_equal(l.n, 1);
    /* the sweep (every 1 s by default) reports the expiry */
    double until = ev_time() + 1.5;
    while (l.n < 2 && ev_time() < until) {
        ev_now_update(f->loop);
        ev_run(f->loop, EVRUN_NOWAIT);
        usleep(10000);
    }
    assert_int_equal(l.n, 2);
    assert_int_equal(l.types[1], SM_EVENT_EXPIRE);
    assert_string_equal(l.keys[1], "e");
    sm_unwatch(w);
}

static void test_watch_overflow(void **state)
{
    struct fx *f = *state; /* watch_queue = 4 */
    struct wlog l = {0};
    struct sm_watch *w;
    assert_int_equal(sm_watch(f->st, "", on_event, &l, &w), 0);
    struct got s[10] = {0};
    for (int i = 0; i < 10; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(sm_set(f->st, k, "v", 1, 0, on_done, &s[i]), 0);
    }
    run(f);
    /* an overflow notice first (6 dropped), then the 4 queued events in order */
    assert_int_equal(l.n, 5);
    assert_int_equal(l.types[0], SM_EVENT_OVERFLOW);
    assert_int_equal(l.dropped, 6);
    assert_string_equal(l.keys[1], "k0");
    assert_string_equal(l.keys[4], "k3");
    assert_int_equal(sm_watch_dropped(w), 6);
    char *m = sm_metrics_render(f->st);
    assert_non_null(strstr(m, "statemesh_watch_overflows_total 6"));
    free(m);
    sm_unwatch(w);
}

static void test_unwatch_during_callback(void **state)
{
    struct fx *f = *state;
    struct wlog a = {.unwatch_after = 1}, b = {0};
    struct sm_watch *wa, *wb;
    assert_int_equal(sm_watch(f->st, "", on_event, &a, &wa), 0);
    assert_int_equal(sm_watch(f->st, "", on_event, &b, &wb), 0);
    a.self = wa;
    set_ok(f, "x1", "v", 0);
    set_ok(f, "x2", "v", 0);
    run(f);
    assert_int_equal(a.n, 1);
    assert_int_equal(b.n, 2);
    sm_unwatch(wb);
}

/* ---- limits and errors ---- */

static void test_limits(void **state)
{
    struct fx *f = *state;
    struct got g = {0};
    char key[300];
    memset(key, 'k', sizeof key);
    key[256] = '\0';
    assert_int_equal(sm_set(f->st, key, "v", 1, 0, on_done, &g), 0); /* 256 is fine */
    key[257] = '\0';
    key[256] = 'k';
    assert_int_equal(sm_set(f->st, key, "v", 1, 0, on_done, &g), SM_EKEYLEN);
    assert_non_null(strstr(sm_errmsg(f->st), "257"));
    assert_int_equal(sm_set(f->st, "", "v", 1, 0, on_done, &g), SM_EEMPTYKEY);
    assert_int_equal(sm_get(f->st, "", on_done, &g), SM_EEMPTYKEY);
    char big[1025];
    memset(big, 'v', sizeof big);
    assert_int_equal(sm_set(f->st, "k", big, 1024, 0, on_done, &g), 0);
    assert_int_equal(sm_set(f->st, "k", big, 1025, 0, on_done, &g), SM_EVALUELEN);
    assert_int_equal(sm_set(f->st, "k", NULL, 3, 0, on_done, &g), SM_EINVAL);
    assert_int_equal(sm_set(f->st, "k", "v", 1, 0, NULL, NULL), SM_EINVAL);
    run(f);
    assert_int_equal(g.calls, 2); /* only the accepted ones */
}

static void test_config_errors(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct sm_store *st = NULL;
    char err[256];
    struct {
        const char *k, *v, *needle;
    } cases[] = {
        {"bogus", "1", "unknown option 'bogus'"},
        {"storage", "etcd", "unknown storage backend 'etcd'"},
        {"max_value", "abc", "max_value"},
        {"max_value", "0", "out of range"},
        {"local.nope", "1", "unknown option 'local.nope'"},
        {"local.sweep_interval", "fast", "not a duration"},
        {"node_id", "", "node_id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sm_config *c = sm_config_new();
        assert_int_equal(sm_config_set(c, cases[i].k, cases[i].v), 0);
        int rc = sm_store_new(loop, c, &st, err, sizeof err);
        assert_int_equal(rc, SM_ECONFIG);
        assert_null(st);
        if (!strstr(err, cases[i].needle))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].needle);
        sm_config_delete(c);
    }
    ev_loop_destroy(loop);
}

static void test_max_value_configurable(void **state)
{
    (void)state;
    static const char *const o[] = {"max_value", "4096", NULL};
    void *fs;
    setup_with(&fs, o);
    struct fx *f = fs;
    char big[4096];
    memset(big, 'v', sizeof big);
    struct got g = {0};
    assert_int_equal(sm_set(f->st, "k", big, 4096, 0, on_done, &g), 0);
    run(f);
    assert_int_equal(g.status, 0);
    teardown(&fs);
}

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(sm_strerror(SM_ENOTFOUND), "key not found");
    assert_string_equal(sm_errname(SM_EKEYLEN), "SM_EKEYLEN");
    assert_string_equal(sm_strerror(0), "success");
    assert_string_equal(sm_strerror(-9999), "unknown error");
}

static void test_metrics(void **state)
{
    struct fx *f = *state;
    set_ok(f, "a", "v", 0);
    struct got g = {0};
    assert_int_equal(sm_get(f->st, "zz", on_done, &g), 0);
    run(f);
    char *m = sm_metrics_render(f->st);
    assert_non_null(m);
    assert_non_null(strstr(
        m, "statemesh_operations_total{storage_type=\"local\",operation=\"set\",result=\"ok\"} 1"));
    assert_non_null(strstr(
        m, "statemesh_operations_total{storage_type=\"local\",operation=\"get\",result=\"ok\"} 1"));
    assert_non_null(strstr(m, "statemesh_operation_duration_seconds_bucket{storage_type=\"local\","
                              "operation=\"set\",le=\"+Inf\"} 1"));
    assert_non_null(strstr(m, "statemesh_storage_size{storage_type=\"local\"} 1"));
    assert_non_null(strstr(m, "statemesh_connection_status{storage_type=\"local\"} 1"));
    free(m);
}

/* Every allocation in open + set + get + watch + close fails in turn: each
 * attempt either succeeds or fails cleanly (ASan/valgrind check for leaks). */
static void test_oom_injection(void **state)
{
    (void)state;
    int failures = 0, successes = 0;
    for (size_t nth = 1; nth < 400; nth++) {
        struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
        struct sm_config *cfg = sm_config_new();
        assert_non_null(cfg);
        assert_int_equal(sm_config_set(cfg, "node_id", "n1"), 0);
        struct sm_store *st = NULL;
        test_heap_fail_at(nth, 0);
        int rc = sm_store_new(loop, cfg, &st, NULL, 0);
        struct got g = {0}, s = {0};
        struct wlog l = {0};
        struct sm_watch *w = NULL;
        int ok = rc == 0;
        if (ok) {
            rc = sm_watch(st, "", on_event, &l, &w);
            ok = rc == 0;
        }
        if (ok) rc = sm_set(st, "key", "value", 5, 0, on_done, &s);
        if (ok && rc == 0) {
            rc = sm_get(st, "key", on_done, &g);
            ev_run(loop, 0);
            ok = rc == 0 && s.status == 0 && g.status == 0;
        } else {
            ok = 0;
        }
        size_t used = test_heap_count();
        test_heap_fail_at(0, 0);
        if (ok) {
            assert_int_equal(g.calls, 1);
            assert_string_equal(g.value, "value");
            successes++;
        } else {
            assert_true(rc == SM_ENOMEM || s.status == SM_ENOMEM || g.status == SM_ENOMEM ||
                        rc == SM_ECONFIG);
            failures++;
        }
        sm_store_delete(st);
        sm_config_delete(cfg);
        ev_loop_destroy(loop);
        if (ok && used < nth) break; /* the injected failure was never reached */
    }
    assert_true(failures > 5);
    assert_true(successes >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_versions_increase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_multi_set_multi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_completes_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locks_and_members_not_supported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_zero_never_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_expires_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_reset_extends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_expiry_during_iteration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_prefix_and_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_expire_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_overflow, setup_small_queue, teardown),
        cmocka_unit_test_setup_teardown(test_unwatch_during_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_max_value_configurable),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test(test_oom_injection),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
