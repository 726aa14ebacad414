/* test_crdt_resolver.c: resolvers by prefix, exact precedence values, conflict counts, counters. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "crdt/replica.h"
#include "crdt/resolver.h"
#include "statemesh.h"

static const char *resolver_of(const struct crdt_resolvers *rs, const char *key)
{
    return crdt_resolver_name(crdt_resolver_find(rs, key, strlen(key)));
}

static uint8_t prec(const struct crdt_resolvers *rs, const char *key, const void *v, size_t len)
{
    return crdt_resolvers_precedence(rs, key, strlen(key), v, len);
}

#define PS(rs, key, str) prec((rs), (key), (str), strlen(str))

static uint8_t ten(const uint8_t *v, size_t len, void *arg)
{
    (void)v;
    return (uint8_t)(len + *(int *)arg);
}

static void test_find(void **state)
{
    (void)state;
    struct crdt_resolvers *rs = crdt_resolvers_new_default();
    assert_non_null(rs);
    assert_int_equal(crdt_resolvers_count(rs), 5);
    assert_string_equal(resolver_of(rs, "backend:health:http://a:80"), "backend_health");
    assert_string_equal(resolver_of(rs, "backend:health:"), "backend_health");
    assert_string_equal(resolver_of(rs, "backend:healt"), "lww");
    assert_string_equal(resolver_of(rs, "circuit:http://a"), "circuit_breaker");
    assert_string_equal(resolver_of(rs, "lb:conn:http://a/n1"), "connection_counter");
    assert_string_equal(resolver_of(rs, "ratelimit:tenant/n1"), "rate_limit_counter");
    assert_string_equal(resolver_of(rs, "lb:state:round-robin"), "lww");
    assert_string_equal(resolver_of(rs, "x"), "lww");
    assert_string_equal(resolver_of(rs, ""), "lww");
    assert_string_equal(crdt_resolver_prefix(crdt_resolver_find(rs, "zz", 2)), "");

    /* the longest prefix wins, whichever was registered first */
    int arg = 10;
    assert_int_equal(
        crdt_resolvers_add(rs, "backend:", "backend_any", CRDT_RESOLVER_CUSTOM, ten, &arg), 0);
    assert_int_equal(
        crdt_resolvers_add(rs, "backend:health:special:", "special", CRDT_RESOLVER_LWW, NULL, NULL),
        0);
    assert_string_equal(resolver_of(rs, "backend:weight:x"), "backend_any");
    assert_string_equal(resolver_of(rs, "backend:health:x"), "backend_health");
    assert_string_equal(resolver_of(rs, "backend:health:special:x"), "special");
    assert_int_equal(PS(rs, "backend:weight:x", "abc"), 13);
    assert_int_equal(PS(rs, "backend:health:special:x", "unhealthy"), 0);

    assert_int_equal(crdt_resolvers_add(rs, "backend:", "again", CRDT_RESOLVER_LWW, NULL, NULL),
                     SM_EEXISTS);
    assert_int_equal(crdt_resolvers_add(rs, "", "x", CRDT_RESOLVER_LWW, NULL, NULL), SM_EINVAL);
    assert_int_equal(crdt_resolvers_add(rs, "c:", "x", CRDT_RESOLVER_CUSTOM, NULL, NULL),
                     SM_EINVAL);
    assert_int_equal(crdt_resolvers_add(rs, "c:", "x", CRDT_RESOLVER_LWW, ten, &arg), SM_EINVAL);
    assert_int_equal(crdt_resolvers_add(rs, "c:", "", CRDT_RESOLVER_LWW, NULL, NULL), SM_EINVAL);
    assert_int_equal(crdt_resolvers_count(rs), 7);
    assert_null(crdt_resolvers_at(rs, 7));
    assert_string_equal(crdt_resolver_name(crdt_resolvers_at(rs, 0)), "lww");
    crdt_resolvers_delete(rs);
    crdt_resolvers_delete(NULL);
}

static void test_health_precedence(void **state)
{
    (void)state;
    struct crdt_resolvers *rs = crdt_resolvers_new_default();
    const char *k = "backend:health:http://b";
    /* bare words, normalised */
    assert_int_equal(PS(rs, k, "healthy"), CRDT_PREC_HEALTH_HEALTHY);
    assert_int_equal(PS(rs, k, "unhealthy"), CRDT_PREC_HEALTH_UNHEALTHY);
    assert_int_equal(PS(rs, k, " UnHealthy\n"), 4);
    assert_int_equal(PS(rs, k, "rate_limited"), 2);
    assert_int_equal(PS(rs, k, "Rate-Limited"), 2);
    assert_int_equal(PS(rs, k, "maintenance"), 3);
    assert_int_equal(PS(rs, k, "down"), 4);
    assert_int_equal(PS(rs, k, "up"), 1);
    assert_int_equal(PS(rs, k, "unknown"), 0);
    assert_int_equal(PS(rs, k, "unhealthyish"), 0);
    assert_int_equal(PS(rs, k, "a much longer word than any state"), 0);
    assert_int_equal(prec(rs, k, "", 0), 0);
    assert_int_equal(prec(rs, k, NULL, 5), 0);
    /* JSON */
    assert_int_equal(PS(rs, k, "{\"url\":\"http://b\",\"state\":\"unhealthy\",\"version\":3}"), 4);
    assert_int_equal(PS(rs, k, "  {\"state\" : \"healthy\"}"), 1);
    assert_int_equal(PS(rs, k, "\"unhealthy\""), 4);
    /* a nested "state" and tricky strings do not fool the scan */
    assert_int_equal(PS(rs, k,
                        "{\"a\":{\"state\":\"unhealthy\",\"b\":[1,\"}\",{}]},\"s\\\"\":\"x\\\\\","
                        "\"n\":-1.5e3,\"t\":true,\"state\":\"healthy\"}"),
                     1);
    assert_int_equal(PS(rs, k, "{\"state\":\"healthy\""), 1); /* value read before the end */
    assert_int_equal(PS(rs, k, "{\"url\":\"x\""), 0);
    assert_int_equal(PS(rs, k, "{\"state\":3}"), 0);
    assert_int_equal(PS(rs, k, "{\"state\":\"un\\u0068ealthy\"}"), 0); /* escapes: not a word */
    assert_int_equal(PS(rs, k, "{}"), 0);
    assert_int_equal(PS(rs, k, "{\"a\":[[[[[[[[[[]]]]]]]]]]}"), 0);
    /* msgpack: a map with "state", or a str */
    const uint8_t mp_map[] = {0x82, 0xa3, 'u', 'r', 'l', 0xa1, 'x', 0xa5, 's', 't', 'a', 't',
                              'e',  0xa9, 'u', 'n', 'h', 'e',  'a', 'l',  't', 'h', 'y'};
    assert_int_equal(prec(rs, k, mp_map, sizeof mp_map), 4);
    assert_int_equal(prec(rs, k, mp_map, sizeof mp_map - 1), 0); /* truncated */
    const uint8_t mp_str[] = {0xa7, 'h', 'e', 'a', 'l', 't', 'h', 'y'};
    assert_int_equal(prec(rs, k, mp_str, sizeof mp_str), 1);
    const uint8_t mp_skip[] = {0x83, 0x01, 0x92, 0xc3, 0xc0, 0xa1, 'x', 0xcb, 0,
                               0,    0,    0,    0,    0,    0,    0,   0xa5, 's',
                               't',  'a',  't',  'e',  0xa4, 'd',  'o', 'w',  'n'};
    assert_int_equal(prec(rs, k, mp_skip, sizeof mp_skip), 4);
    const uint8_t mp_lie[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'x'}; /* 4G pairs in 7 bytes */
    assert_int_equal(prec(rs, k, mp_lie, sizeof mp_lie), 0);
    crdt_resolvers_delete(rs);
}

static void test_circuit_and_others(void **state)
{
    (void)state;
    struct crdt_resolvers *rs = crdt_resolvers_new_default();
    const char *k = "circuit:http://b";
    assert_int_equal(PS(rs, k, "closed"), CRDT_PREC_CIRCUIT_CLOSED);
    assert_int_equal(PS(rs, k, "half-open"), CRDT_PREC_CIRCUIT_HALF_OPEN);
    assert_int_equal(PS(rs, k, "half_open"), 2);
    assert_int_equal(PS(rs, k, "HalfOpen"), 2);
    assert_int_equal(PS(rs, k, "open"), CRDT_PREC_CIRCUIT_OPEN);
    assert_int_equal(PS(rs, k, "OPEN"), 3);
    assert_int_equal(PS(rs, k, "{\"backend_url\":\"u\",\"state\":\"open\"}"), 3);
    assert_int_equal(PS(rs, k, "\"half-open\""), 2);
    assert_int_equal(PS(rs, k, "opened"), 0);
    assert_int_equal(PS(rs, k, "unhealthy"), 0); /* health words mean nothing here */
    assert_int_equal(PS(rs, "backend:health:x", "open"), 0);
    /* LWW and counters never bias */
    assert_int_equal(PS(rs, "kv", "unhealthy"), 0);
    assert_int_equal(PS(rs, "lb:conn:u/n", "open"), 0);
    assert_int_equal(crdt_resolver_kind(crdt_resolver_find(rs, "lb:conn:u/n", 11)),
                     CRDT_RESOLVER_COUNTER);
    crdt_resolvers_delete(rs);
}

static struct crdt_rec_view rv(const char *key, const char *val, uint64_t ver, uint64_t hlc,
                               const char *origin, uint8_t prec)
{
    struct crdt_rec_view v = {.key = key,
                              .key_len = strlen(key),
                              .value = (const uint8_t *)val,
                              .value_len = strlen(val),
                              .version = ver,
                              .hlc = hlc,
                              .origin = origin,
                              .origin_len = strlen(origin),
                              .precedence = prec};
    return v;
}

static uint64_t conflicts(const struct crdt_resolvers *rs, const char *key)
{
    return crdt_resolver_conflicts(crdt_resolver_find(rs, key, strlen(key)));
}

static void test_conflict_count(void **state)
{
    (void)state;
    struct crdt_resolvers *rs = crdt_resolvers_new_default();
    struct crdt_replica *rep = crdt_replica_new();
    const char *k = "backend:health:u";
    struct crdt_rec_view a = rv(k, "healthy", 1, 100, "n1", 1);
    struct crdt_rec_view b = rv(k, "unhealthy", 1, 90, "n2", 4);
    struct crdt_rec_view c = rv(k, "healthy", 2, 80, "n3", 1);
    assert_false(crdt_is_conflict(&a, &a));
    assert_true(crdt_is_conflict(&a, &b));
    assert_false(crdt_is_conflict(&a, &c));

    assert_int_equal(crdt_resolvers_merge(rs, rep, &a), 1); /* first write: nothing to resolve */
    assert_int_equal(conflicts(rs, k), 0);
    assert_int_equal(crdt_resolvers_merge(rs, rep, &a), 0); /* duplicate */
    assert_int_equal(conflicts(rs, k), 0);
    assert_int_equal(crdt_resolvers_merge(rs, rep, &b), 1); /* unhealthy wins within v1 */
    assert_int_equal(conflicts(rs, k), 1);
    assert_int_equal(crdt_resolvers_merge(rs, rep, &a), 0); /* the loser again: resolved again */
    assert_int_equal(conflicts(rs, k), 2);
    assert_int_equal(crdt_resolvers_merge(rs, rep, &c), 1); /* a newer version: no conflict */
    assert_int_equal(conflicts(rs, k), 2);
    assert_int_equal(conflicts(rs, "other"), 0);

    struct crdt_rec_view d = rv("kv:x", "1", 5, 1, "n1", 0), e = rv("kv:x", "2", 5, 2, "n1", 0);
    assert_int_equal(crdt_resolvers_merge(rs, rep, &d), 1);
    assert_int_equal(crdt_resolvers_merge(rs, rep, &e), 1);
    assert_int_equal(conflicts(rs, "kv:x"), 1);
    crdt_resolvers_note_conflict(rs, "circuit:z", 9);
    assert_int_equal(conflicts(rs, "circuit:"), 1);
    assert_int_equal(conflicts(rs, k), 2);
    crdt_replica_delete(rep);
    crdt_resolvers_delete(rs);
}

static void test_counter_parse(void **state)
{
    (void)state;
    int64_t v = 0;
#define P(s) crdt_counter_parse((const uint8_t *)(s), strlen(s), &v)
    assert_int_equal(P("42"), 0);
    assert_int_equal(v, 42);
    assert_int_equal(P(" -17\n"), 0);
    assert_int_equal(v, -17);
    assert_int_equal(P("+5"), 0);
    assert_int_equal(v, 5);
    assert_int_equal(P("9223372036854775807"), 0);
    assert_int_equal(v, INT64_MAX);
    assert_int_equal(P("-9223372036854775808"), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(P("9223372036854775808"), SM_EINVAL);
    assert_int_equal(P("1.5"), SM_EINVAL);
    assert_int_equal(P("12a"), SM_EINVAL);
    assert_int_equal(P("-"), SM_EINVAL);
    assert_int_equal(P(""), SM_EINVAL);
    assert_int_equal(P("\x05"), SM_EINVAL); /* a positive fixint reads as text: refused */
#undef P
    uint8_t buf[9];
    const int64_t samples[] = {0, 1, 53, 127, 128, -1, -32, -33, 65535, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++) {
        assert_int_equal(crdt_counter_encode(samples[i], buf), 9);
        assert_int_equal(buf[0], 0xd3);
        assert_int_equal(crdt_counter_parse(buf, 9, &v), 0);
        assert_true(v == samples[i]);
        assert_int_equal(crdt_counter_parse(buf, 8, &v), SM_EINVAL);
    }
    const uint8_t neg[] = {0xff}, u8[] = {0xcc, 200}, u64big[] = {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(crdt_counter_parse(neg, 1, &v), 0);
    assert_int_equal(v, -1);
    assert_int_equal(crdt_counter_parse(u8, 2, &v), 0);
    assert_int_equal(v, 200);
    assert_int_equal(crdt_counter_parse(u64big, 9, &v), SM_EINVAL);
    const uint8_t trailing[] = {0xcc, 1, 0};
    assert_int_equal(crdt_counter_parse(trailing, 3, &v), SM_EINVAL);

    char key[300];
    assert_int_equal(crdt_counter_key(key, sizeof key, "lb:conn:", "http://a:80/", "n1"), 23);
    assert_string_equal(key, "lb:conn:http://a:80//n1");
    assert_int_equal(crdt_counter_key(key, sizeof key, "lb:conn:", "u", "a/b"), SM_EINVAL);
    assert_int_equal(crdt_counter_key(key, sizeof key, "lb:conn:", "u", ""), SM_EINVAL);
    assert_int_equal(crdt_counter_key(key, 10, "lb:conn:", "u", "n"), SM_EKEYLEN);
    char longurl[260];
    memset(longurl, 'u', 250);
    longurl[250] = '\0';
    assert_int_equal(crdt_counter_key(key, sizeof key, "lb:conn:", longurl, "n"), SM_EKEYLEN);
}

static void put_slot(struct crdt_replica *rep, const char *url, const char *node, int64_t n,
                     uint64_t ver, int64_t expires, bool tomb)
{
    char key[300];
    uint8_t val[9];
    assert_true(crdt_counter_key(key, sizeof key, CRDT_PREFIX_LB_CONN, url, node) > 0);
    struct crdt_rec_view v = {.key = key,
                              .key_len = strlen(key),
                              .value = tomb ? NULL : val,
                              .value_len = tomb ? 0 : crdt_counter_encode(n, val),
                              .version = ver,
                              .hlc = ver,
                              .origin = node,
                              .origin_len = strlen(node),
                              .flags = tomb ? CRDT_F_TOMBSTONE : 0,
                              .expires_at = expires};
    assert_int_equal(crdt_replica_merge(rep, &v), 1);
}

static bool not_n3(const char *node, size_t len, void *arg)
{
    (*(int *)arg)++;
    return !(len == 2 && memcmp(node, "n3", 2) == 0);
}

static void test_counter_sum(void **state)
{
    (void)state;
    struct crdt_replica *rep = crdt_replica_new();
    put_slot(rep, "http://a", "n1", 5, 1, 0, false);
    put_slot(rep, "http://a", "n2", 7, 1, 0, false);
    put_slot(rep, "http://a", "n3", 100, 1, 0, false);   /* a dead member */
    put_slot(rep, "http://a", "n4", 1000, 1, 50, false); /* expires at 50 */
    put_slot(rep, "http://a", "n5", 0, 2, 0, true);      /* deleted slot */
    put_slot(rep, "http://a/x", "n1", 11, 1, 0, false);  /* another backend, same start */
    put_slot(rep, "http://b", "n1", -3, 1, 0, false);
    put_slot(rep, "http://b", "n2", 4, 1, 0, false);
    /* a slot the node rewrote: only the latest value counts */
    put_slot(rep, "http://b", "n2", 6, 2, 0, false);
    struct crdt_rec_view junk = {.key = "lb:conn:http://b/n9",
                                 .key_len = 19,
                                 .value = (const uint8_t *)"lots",
                                 .value_len = 4,
                                 .version = 1,
                                 .origin = "n9",
                                 .origin_len = 2};
    assert_int_equal(crdt_replica_merge(rep, &junk), 1);

    int calls = 0;
    assert_int_equal(crdt_counter_sum(rep, "lb:conn:http://a/", NULL, NULL, 10), 1112);
    assert_int_equal(crdt_counter_sum(rep, "lb:conn:http://a/", not_n3, &calls, 10), 1012);
    assert_int_equal(calls, 4); /* n1..n4 are asked; n5 is a tombstone */
    calls = 0;
    assert_int_equal(crdt_counter_sum(rep, "lb:conn:http://a/", not_n3, &calls, 60), 12);
    assert_int_equal(calls, 3); /* n4 expired */
    assert_int_equal(crdt_counter_sum(rep, "lb:conn:http://a/x/", NULL, NULL, 60), 11);
    assert_int_equal(crdt_counter_sum(rep, "lb:conn:http://b/", NULL, NULL, 60), 3);
    assert_int_equal(crdt_counter_sum(rep, "lb:conn:http://c/", NULL, NULL, 60), 0);

    struct crdt_counter_total *t;
    size_t n;
    calls = 0;
    assert_int_equal(crdt_counter_totals(rep, CRDT_PREFIX_LB_CONN, not_n3, &calls, 60, &t, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(t[0].name, "http://a");
    assert_int_equal(t[0].sum, 12);
    assert_int_equal(t[0].slots, 2);
    assert_string_equal(t[1].name, "http://a/x");
    assert_int_equal(t[1].sum, 11);
    assert_string_equal(t[2].name, "http://b");
    assert_int_equal(t[2].sum, 3);
    assert_int_equal(t[2].slots, 2);
    crdt_counter_totals_free(t, n);

    /* saturation instead of overflow */
    struct crdt_replica *big = crdt_replica_new();
    put_slot(big, "u", "n1", INT64_MAX, 1, 0, false);
    put_slot(big, "u", "n2", INT64_MAX, 1, 0, false);
    assert_true(crdt_counter_sum(big, "lb:conn:u/", NULL, NULL, 0) == INT64_MAX);
    put_slot(big, "v", "n1", INT64_MIN, 1, 0, false);
    put_slot(big, "v", "n2", -1, 1, 0, false);
    assert_true(crdt_counter_sum(big, "lb:conn:v/", NULL, NULL, 0) == INT64_MIN);
    crdt_replica_delete(big);
    crdt_replica_delete(rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_health_precedence),
        cmocka_unit_test(test_circuit_and_others),
        cmocka_unit_test(test_conflict_count),
        cmocka_unit_test(test_counter_parse),
        cmocka_unit_test(test_counter_sum),
    };
    return cmocka_run_group_tests_name("crdt_resolver", tests, NULL, NULL);
}
