/* test_crdt_merge.c: the merge laws for every resolver on random records:
 * commutativity, associativity and idempotence, through the real replica. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "crdt/hlc.h"
#include "crdt/replica.h"
#include "crdt/resolver.h"
#include "crdt_canon.h"
#include "crdt_prop.h"
#include "statemesh.h"

/* A generated write. Everything but (version, hlc, origin) is derived from
 * them by hashing: a writer stamps one value per timestamp, so two writes with
 * the same identity are the same write. */
struct gw {
    char key[64];
    char origin[8];
    uint8_t value[64];
    struct crdt_rec_view v;
};

enum family { FAM_LWW, FAM_HEALTH, FAM_CIRCUIT, FAM_COUNTER, FAM_RATELIMIT, FAM_CUSTOM };

static const char *const health_words[] = {"healthy", "unhealthy", "rate-limited", "maintenance",
                                           "unknown"};
static const char *const circuit_words[] = {"closed", "open", "half-open"};

static uint64_t mix(uint64_t x)
{
    struct prop_rng r = {x};
    return prop_next(&r);
}

/* Encode a state word in one of the accepted shapes: bare, JSON object, msgpack map. */
static size_t encode_word(uint8_t *out, const char *w, unsigned shape)
{
    size_t n = strlen(w);
    switch (shape % 3) {
    case 0:
        memcpy(out, w, n);
        return n;
    case 1:
        return (size_t)sprintf((char *)out, "{\"url\":\"u\",\"state\":\"%s\"}", w);
    default:
        out[0] = 0x81;
        out[1] = 0xa5;
        memcpy(out + 2, "state", 5);
        out[7] = (uint8_t)(0xa0 | n);
        memcpy(out + 8, w, n);
        return 8 + n;
    }
}

static void gen(struct gw *g, const struct crdt_resolvers *rs, enum family fam, size_t cs,
                struct prop_rng *rng)
{
    uint64_t version = 1 + prop_below(rng, 3);
    uint64_t hlc = crdt_hlc_make(1000 + prop_below(rng, 2), prop_below(rng, 2));
    unsigned o = (unsigned)prop_below(rng, 3);
    snprintf(g->origin, sizeof g->origin, "n%u", o + 1);
    switch (fam) {
    case FAM_LWW:
        snprintf(g->key, sizeof g->key, "kv:%zu", cs);
        break;
    case FAM_HEALTH:
        snprintf(g->key, sizeof g->key, "backend:health:http://b%zu", cs);
        break;
    case FAM_CIRCUIT:
        snprintf(g->key, sizeof g->key, "circuit:http://b%zu", cs);
        break;
    case FAM_COUNTER:
        snprintf(g->key, sizeof g->key, "lb:conn:http://b%zu/n1", cs);
        break;
    case FAM_RATELIMIT:
        snprintf(g->key, sizeof g->key, "ratelimit:t%zu/n1", cs);
        break;
    case FAM_CUSTOM:
        snprintf(g->key, sizeof g->key, "custom:%zu", cs);
        break;
    }
    uint64_t h = mix(cs * 1000003u ^ version << 40 ^ hlc << 3 ^ o);
    size_t vlen;
    switch (fam) {
    case FAM_HEALTH:
        vlen = encode_word(g->value, health_words[(h >> 8) % 5], (unsigned)(h >> 16));
        break;
    case FAM_CIRCUIT:
        vlen = encode_word(g->value, circuit_words[(h >> 8) % 3], (unsigned)(h >> 16));
        break;
    case FAM_COUNTER:
    case FAM_RATELIMIT:
        if ((h >> 16) & 1)
            vlen = crdt_counter_encode((int64_t)((h >> 8) % 200) - 100, g->value);
        else
            vlen = (size_t)sprintf((char *)g->value, "%d", (int)((h >> 8) % 200) - 100);
        break;
    default:
        vlen = (size_t)sprintf((char *)g->value, "v%llx", (unsigned long long)(h >> 40));
    }
    bool tomb = h % 7 == 0;
    g->v = (struct crdt_rec_view){
        .key = g->key,
        .key_len = strlen(g->key),
        .value = tomb ? NULL : g->value,
        .value_len = tomb ? 0 : vlen,
        .version = version,
        .hlc = hlc,
        .origin = g->origin,
        .origin_len = strlen(g->origin),
        .flags = tomb ? CRDT_F_TOMBSTONE : 0,
        .expires_at = (h >> 4) % 4 == 0 ? (int64_t)(5000 + (h >> 24) % 3) : 0,
    };
    g->v.precedence =
        tomb ? 0 : crdt_resolvers_precedence(rs, g->key, g->v.key_len, g->value, vlen);
}

static uint8_t custom_prec(const uint8_t *v, size_t len, void *arg)
{
    (void)arg;
    return len ? (uint8_t)(v[len - 1] % 4) : 0;
}

static bool same_record(const struct crdt_replica *a, const struct crdt_replica *b, const char *key,
                        struct canon_buf *x, struct canon_buf *y)
{
    canon_key(a, key, strlen(key), x);
    canon_key(b, key, strlen(key), y);
    return x->len == y->len && memcmp(x->p, y->p, x->len) == 0;
}

/* The record stored for the key of @p w equals the write @p w. */
static bool holds(const struct crdt_replica *r, const struct crdt_rec_view *w, struct canon_buf *x,
                  struct canon_buf *y)
{
    canon_key(r, w->key, w->key_len, x);
    y->len = 0;
    struct crdt_rec_view c = *w;
    c.flags &= CRDT_F_TOMBSTONE | CRDT_F_EXPIRED;
    canon_view(y, &c);
    return x->len == y->len && memcmp(x->p, y->p, x->len) == 0;
}

static const struct crdt_rec_view *maxv(const struct crdt_rec_view *a,
                                        const struct crdt_rec_view *b)
{
    return crdt_order_cmp(a, b) >= 0 ? a : b;
}

#define BATCH 2000

static void run_laws(enum family fam)
{
    uint64_t seed = prop_seed(); /* printed on failure: replay with SM_PROP_SEED=seed */
    struct prop_rng rng = {seed ^ (uint64_t)fam << 56};
    size_t cases = prop_cases(100000);
    struct crdt_resolvers *rs = crdt_resolvers_new_default();
    assert_non_null(rs);
    assert_int_equal(
        crdt_resolvers_add(rs, "custom:", "custom", CRDT_RESOLVER_CUSTOM, custom_prec, NULL), 0);
    struct crdt_replica *ab = NULL, *ba = NULL, *abc = NULL, *bc = NULL, *a_bc = NULL, *aa = NULL;
    struct canon_buf x = {0}, y = {0};
    size_t ties = 0, prec_decided = 0;
    for (size_t i = 0; i < cases; i++) {
        if (i % BATCH == 0) {
            if (ab) {
                /* replicas that saw the same writes agree on their digests too */
                assert_true(crdt_replica_root(ab) == crdt_replica_root(ba));
                assert_true(crdt_replica_root(abc) == crdt_replica_root(a_bc));
            }
            crdt_replica_delete(ab), crdt_replica_delete(ba), crdt_replica_delete(abc);
            crdt_replica_delete(bc), crdt_replica_delete(a_bc), crdt_replica_delete(aa);
            ab = crdt_replica_new(), ba = crdt_replica_new(), abc = crdt_replica_new();
            bc = crdt_replica_new(), a_bc = crdt_replica_new(), aa = crdt_replica_new();
            assert_true(ab && ba && abc && bc && a_bc && aa);
        }
        struct gw a, b, c;
        gen(&a, rs, fam, i, &rng);
        gen(&b, rs, fam, i, &rng);
        gen(&c, rs, fam, i, &rng);
        if (a.v.version == b.v.version && crdt_order_cmp(&a.v, &b.v) != 0) {
            ties++;
            if (a.v.precedence != b.v.precedence) prec_decided++;
        }

        /* commutativity: a∘b == b∘a, and it is the greater of the two */
        if (crdt_replica_merge(ab, &a.v) != 1 || crdt_replica_merge(ab, &b.v) < 0 ||
            crdt_replica_merge(ba, &b.v) != 1 || crdt_replica_merge(ba, &a.v) < 0)
            PROP_FAIL(seed, i, "merge failed");
        if (!same_record(ab, ba, a.key, &x, &y)) PROP_FAIL(seed, i, "a.b != b.a (%s)", a.key);
        if (!holds(ab, maxv(&a.v, &b.v), &x, &y)) PROP_FAIL(seed, i, "a.b is not max(a, b)");

        /* associativity: (a∘b)∘c == a∘(b∘c) */
        crdt_replica_merge(abc, &a.v);
        crdt_replica_merge(abc, &b.v);
        crdt_replica_merge(abc, &c.v);
        crdt_replica_merge(bc, &b.v);
        crdt_replica_merge(bc, &c.v);
        struct crdt_rec_view bcv;
        crdt_rec_view(bc, crdt_replica_find(bc, b.key, b.v.key_len), &bcv);
        crdt_replica_merge(a_bc, &a.v);
        crdt_replica_merge(a_bc, &bcv);
        if (!same_record(abc, a_bc, a.key, &x, &y)) PROP_FAIL(seed, i, "(a.b).c != a.(b.c)");
        if (!holds(abc, maxv(maxv(&a.v, &b.v), &c.v), &x, &y))
            PROP_FAIL(seed, i, "a.b.c is not the maximum");

        /* idempotence: a∘a == a, and merging a state into itself changes nothing */
        if (crdt_replica_merge(aa, &a.v) != 1 || crdt_replica_merge(aa, &a.v) != 0)
            PROP_FAIL(seed, i, "a.a changed the replica");
        if (!holds(aa, &a.v, &x, &y)) PROP_FAIL(seed, i, "a.a != a");
        struct crdt_rec_view abv;
        crdt_rec_view(ab, crdt_replica_find(ab, a.key, a.v.key_len), &abv);
        uint64_t root = crdt_replica_root(ab);
        if (crdt_replica_merge(ab, &abv) != 0 || crdt_replica_root(ab) != root)
            PROP_FAIL(seed, i, "(a.b).(a.b) changed the replica");
    }
    /* the generator does reach the interesting cases */
    assert_true(ties > cases / 10);
    if (fam == FAM_HEALTH || fam == FAM_CIRCUIT || fam == FAM_CUSTOM)
        assert_true(prec_decided > cases / 20);
    crdt_replica_delete(ab), crdt_replica_delete(ba), crdt_replica_delete(abc);
    crdt_replica_delete(bc), crdt_replica_delete(a_bc), crdt_replica_delete(aa);
    free(x.p);
    free(y.p);
    crdt_resolvers_delete(rs);
}

static void test_laws_lww(void **state)
{
    (void)state;
    run_laws(FAM_LWW);
}

static void test_laws_health(void **state)
{
    (void)state;
    run_laws(FAM_HEALTH);
}

static void test_laws_circuit(void **state)
{
    (void)state;
    run_laws(FAM_CIRCUIT);
}

static void test_laws_counter(void **state)
{
    (void)state;
    run_laws(FAM_COUNTER);
}

static void test_laws_ratelimit(void **state)
{
    (void)state;
    run_laws(FAM_RATELIMIT);
}

static void test_laws_custom(void **state)
{
    (void)state;
    run_laws(FAM_CUSTOM);
}

/* Within a version the safety bias wins whatever the hlc and origin; a newer
 * version always wins, so a circuit can close and a backend recover. */
static void test_bias_within_version(void **state)
{
    (void)state;
    struct crdt_resolvers *rs = crdt_resolvers_new_default();
    struct crdt_replica *r1 = crdt_replica_new(), *r2 = crdt_replica_new();
    const char *k = "circuit:http://x";
    const char *vals[] = {"closed", "half-open", "open"};
    struct crdt_rec_view w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (struct crdt_rec_view){.key = k,
                                      .key_len = strlen(k),
                                      .value = (const uint8_t *)vals[i],
                                      .value_len = strlen(vals[i]),
                                      .version = 7,
                                      .hlc = crdt_hlc_make(5000 - 100 * (uint64_t)i, 0),
                                      .origin = i == 2 ? "a" : "z",
                                      .origin_len = 1};
        w[i].precedence =
            crdt_resolvers_precedence(rs, k, w[i].key_len, w[i].value, w[i].value_len);
    }
    for (int i = 0; i < 3; i++) crdt_replica_merge(r1, &w[i]);
    for (int i = 2; i >= 0; i--) crdt_replica_merge(r2, &w[i]);
    struct crdt_rec_view got;
    crdt_rec_view(r1, crdt_replica_get(r1, k, strlen(k), 0), &got);
    assert_memory_equal(got.value, "open", 4);
    crdt_rec_view(r2, crdt_replica_get(r2, k, strlen(k), 0), &got);
    assert_memory_equal(got.value, "open", 4);
    struct crdt_rec_view closed = w[0];
    closed.version = 8;
    assert_int_equal(crdt_replica_merge(r1, &closed), 1);
    crdt_rec_view(r1, crdt_replica_get(r1, k, strlen(k), 0), &got);
    assert_int_equal(got.value_len, 6);
    assert_memory_equal(got.value, "closed", 6);
    crdt_replica_delete(r1);
    crdt_replica_delete(r2);
    crdt_resolvers_delete(rs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_laws_lww),
        cmocka_unit_test(test_laws_health),
        cmocka_unit_test(test_laws_circuit),
        cmocka_unit_test(test_laws_counter),
        cmocka_unit_test(test_laws_ratelimit),
        cmocka_unit_test(test_laws_custom),
        cmocka_unit_test(test_bias_within_version),
    };
    return cmocka_run_group_tests_name("crdt_merge", tests, NULL, NULL);
}
