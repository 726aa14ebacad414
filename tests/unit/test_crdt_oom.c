/* test_crdt_oom.c: every allocation of the resolvers, counters and models can
 * fail: the call reports SM_ENOMEM (or NULL), leaks nothing, and works again. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crdt/replica.h"
#include "crdt/resolver.h"
#include "models.h"
#include "statemesh.h"
#include "tests/lib/heap.h"

/* jansson allocates inside its shared library: route it through our (wrapped) malloc. */
static void *j_malloc(size_t n)
{
    return malloc(n);
}

static void j_free(void *p)
{
    free(p);
}

static int group_setup(void **state)
{
    (void)state;
    json_set_alloc_funcs(j_malloc, j_free);
    return 0;
}

/*
 * Run @p op with the n-th allocation failing, for n = 1, 2, … until it gets
 * through without hitting the failure. Each failing run must report OOM.
 * Returns how many allocation points were exercised.
 */
#define OOM_LOOP(op_ok, op_oom, cleanup)                                                           \
    do {                                                                                           \
        size_t n_;                                                                                 \
        for (n_ = 1; n_ < 10000; n_++) {                                                           \
            test_heap_fail_at(n_, 0);                                                              \
            bool ok_;                                                                              \
            {                                                                                      \
                op_ok;                                                                             \
            }                                                                                      \
            size_t used_ = test_heap_count();                                                      \
            test_heap_fail_at(0, 0);                                                               \
            if (ok_ && used_ < n_) {                                                               \
                cleanup;                                                                           \
                break;                                                                             \
            }                                                                                      \
            if (!(op_oom)) fail_msg("allocation %zu failed but the call did not say so", n_);      \
            cleanup;                                                                               \
        }                                                                                          \
        assert_true(n_ > 1);                                                                       \
    } while (0)

static void test_resolvers_oom(void **state)
{
    (void)state;
    struct crdt_resolvers *rs = NULL;
    OOM_LOOP((rs = crdt_resolvers_new_default(), ok_ = rs != NULL), rs == NULL,
             crdt_resolvers_delete(rs));
    rs = crdt_resolvers_new();
    assert_non_null(rs);
    int rc = 0;
    char prefix[32];
    for (int round = 0; round < 12; round++) { /* enough to make the array grow */
        snprintf(prefix, sizeof prefix, "p%d:", round);
        OOM_LOOP((rc = crdt_resolvers_add(rs, prefix, "lww2", CRDT_RESOLVER_LWW, NULL, NULL),
                  ok_ = rc == 0),
                 rc == SM_ENOMEM, (void)0);
    }
    assert_int_equal(crdt_resolvers_count(rs), 13);
    assert_string_equal(crdt_resolver_prefix(crdt_resolver_find(rs, "p11:x", 5)), "p11:");
    crdt_resolvers_delete(rs);
}

static void put(struct crdt_replica *rep, const char *key, int64_t n)
{
    uint8_t val[9];
    struct crdt_rec_view v = {.key = key,
                              .key_len = strlen(key),
                              .value = val,
                              .value_len = crdt_counter_encode(n, val),
                              .version = 1,
                              .origin = "n1",
                              .origin_len = 2};
    assert_int_equal(crdt_replica_merge(rep, &v), 1);
}

static void test_counters_oom(void **state)
{
    (void)state;
    struct crdt_replica *rep = crdt_replica_new();
    char key[64];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "lb:conn:http://b%d/n%d", i % 10, i);
        put(rep, key, i);
    }
    struct crdt_counter_total *t = NULL;
    size_t n = 99;
    int rc = 0;
    OOM_LOOP((rc = crdt_counter_totals(rep, "lb:conn:", NULL, NULL, 0, &t, &n), ok_ = rc == 0),
             rc == SM_ENOMEM && t == NULL && n == 0, crdt_counter_totals_free(t, n));
    rc = crdt_counter_totals(rep, "lb:conn:", NULL, NULL, 0, &t, &n);
    assert_int_equal(rc, 0);
    assert_int_equal(n, 10);
    assert_int_equal(t[9].sum, 9 + 19);
    crdt_counter_totals_free(t, n);

    /* merges through the resolvers hook */
    struct crdt_resolvers *rs = crdt_resolvers_new_default();
    struct crdt_rec_view v = {.key = "kv:new",
                              .key_len = 6,
                              .value = (const uint8_t *)"x",
                              .value_len = 1,
                              .version = 1,
                              .origin = "n-new",
                              .origin_len = 5};
    OOM_LOOP((rc = crdt_resolvers_merge(rs, rep, &v), ok_ = rc == 1), rc < 0, (void)0);
    assert_non_null(crdt_replica_get(rep, "kv:new", 6, 0));
    crdt_resolvers_delete(rs);
    crdt_replica_delete(rep);
}

static void test_models_oom(void **state)
{
    (void)state;
    struct sm_lb_state l, back;
    sm_lb_state_init(&l);
    sm_lb_state_init(&back);
    strcpy(l.strategy, "rr");
    strcpy(l.updated_by, "n1");
    l.version = 3;
    char url[32];
    for (int i = 0; i < 6; i++) {
        snprintf(url, sizeof url, "http://b%d", i);
        assert_int_equal(sm_lb_state_set_conn(&l, url, i), 0);
        assert_int_equal(sm_lb_state_set_weight(&l, url, 10 * i), 0);
    }
    uint8_t buf[1024];
    size_t len;
    assert_int_equal(sm_lb_state_encode(&l, buf, sizeof buf, &len), 0);
    int rc = 0;
    OOM_LOOP((rc = sm_lb_state_decode(buf, len, &back), ok_ = rc == 0),
             rc == SM_ENOMEM && back.backend_states == NULL && back.n_weighted_counters == 0,
             (void)0);
    assert_int_equal(back.n_backend_states, 6);
    assert_true(sm_lb_state_weight(&back, "http://b5", NULL) == 50);

    /* JSON both ways. Only the json_t is built under failing allocations:
     * jansson 2.14's json_dumps() can drop a key's text when one of its own
     * allocations fails and still return a string, which is not ours to test. */
    json_t *jl = NULL;
    OOM_LOOP((jl = sm_lb_state_to_json(&l), ok_ = jl != NULL), jl == NULL, json_decref(jl));
    jl = NULL;
    char *s = sm_lb_state_to_json_str(&l);
    assert_non_null(s);
    char err[128];
    /* parse once with working allocations (jansson 2.14's json_loadb() itself
     * crashes when its first allocation fails), then convert under failures */
    json_error_t je;
    json_t *parsed = json_loads(s, 0, &je);
    assert_non_null(parsed);
    OOM_LOOP((rc = sm_lb_state_from_json(parsed, &back, err, sizeof err), ok_ = rc == 0),
             rc == SM_ENOMEM && back.backend_states == NULL, (void)0);
    assert_int_equal(back.n_weighted_counters, 6);
    json_decref(parsed);
    json_decref(jl);
    free(s);
    struct sm_backend_health h;
    memset(&h, 0, sizeof h);
    strcpy(h.url, "http://x");
    json_t *j = NULL;
    OOM_LOOP((j = sm_health_to_json(&h), ok_ = j != NULL), j == NULL, json_decref(j));

    /* aggregation from a replica */
    struct crdt_replica *rep = crdt_replica_new();
    put(rep, "lb:conn:http://b1/n1", 4);
    put(rep, "lb:conn:http://b2/n1", 5);
    assert_int_equal(crdt_replica_merge(rep, &(struct crdt_rec_view){.key = "lb:state:rr",
                                                                     .key_len = 11,
                                                                     .value = buf,
                                                                     .value_len = len,
                                                                     .version = 3,
                                                                     .origin = "n1",
                                                                     .origin_len = 2}),
                     1);
    OOM_LOOP((rc = sm_lb_state_load(rep, "rr", NULL, NULL, 0, &back), ok_ = rc == 0),
             rc == SM_ENOMEM && back.backend_states == NULL, (void)0);
    assert_int_equal(back.n_backend_states, 2);
    assert_int_equal(back.n_weighted_counters, 6);
    assert_true(sm_lb_state_conn(&back, "http://b2", NULL) == 5);
    crdt_replica_delete(rep);
    sm_lb_state_close(&back);
    sm_lb_state_close(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolvers_oom),
        cmocka_unit_test(test_counters_oom),
        cmocka_unit_test(test_models_oom),
    };
    return cmocka_run_group_tests_name("crdt_oom", tests, group_setup, NULL);
}
