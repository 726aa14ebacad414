/* test_crdt_converge.c: replicas converge: the same writes (with duplicates)
 * in many random orders, with sweeps at random moments, give byte-identical
 * state; expired and deleted records never come back from late older copies. */
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

#define NODES 6
#define T0    INT64_C(1700000000000)

struct write {
    char key[48];
    char origin[8];
    uint8_t value[48];
    struct crdt_rec_view v;
};

static const char *const words[][5] = {
    {"healthy", "unhealthy", "rate-limited", "maintenance", "unknown"},
    {"closed", "open", "half-open", "closed", "open"},
};

static void key_of(char *out, size_t cap, unsigned k)
{
    switch (k % 5) {
    case 0:
        snprintf(out, cap, "backend:health:http://b%u", k);
        break;
    case 1:
        snprintf(out, cap, "circuit:http://b%u", k);
        break;
    case 2:
        snprintf(out, cap, "lb:conn:http://b%u/n%u", k % 7, k);
        break;
    case 3:
        snprintf(out, cap, "ratelimit:t%u/n%u", k % 3, k);
        break;
    default:
        snprintf(out, cap, "kv:%u", k);
        break;
    }
}

/* A history of writes by NODES nodes with their own clocks: versions follow
 * what the writer has seen, often the same version concurrently, sometimes a
 * stale one; deletes, TTLs (some already past by the end). */
static struct write *make_history(const struct crdt_resolvers *rs, struct prop_rng *rng,
                                  size_t nwrites, unsigned nkeys, int64_t *end_wall)
{
    struct write *w = calloc(nwrites, sizeof *w);
    uint64_t *ver = calloc(nkeys, sizeof *ver);
    assert_non_null(w);
    assert_non_null(ver);
    struct crdt_hlc clk[NODES];
    int64_t wall[NODES];
    for (int n = 0; n < NODES; n++) {
        crdt_hlc_init(&clk[n], 0);
        wall[n] = T0 + (int64_t)prop_below(rng, 50);
    }
    int64_t maxwall = 0;
    for (size_t i = 0; i < nwrites; i++) {
        struct write *x = &w[i];
        unsigned n = (unsigned)prop_below(rng, NODES);
        unsigned k = (unsigned)prop_below(rng, nkeys);
        wall[n] += (int64_t)prop_below(rng, 5);
        if (prop_below(rng, 50) == 0) wall[n] -= 300; /* a clock step back */
        if (wall[n] > maxwall) maxwall = wall[n];
        key_of(x->key, sizeof x->key, k);
        snprintf(x->origin, sizeof x->origin, "n%u", n);
        uint64_t r = prop_below(rng, 10);
        uint64_t v = r < 4   ? ver[k] + 1
                     : r < 8 ? (ver[k] ? ver[k] : 1)
                             : 1 + prop_below(rng, ver[k] + 1);
        if (v > ver[k]) ver[k] = v;
        size_t vlen;
        switch (k % 5) {
        case 0:
        case 1: {
            const char *wd = words[k % 5][prop_below(rng, 5)];
            vlen = prop_below(rng, 2) ? (size_t)sprintf((char *)x->value, "%s", wd)
                                      : (size_t)sprintf((char *)x->value, "{\"state\":\"%s\"}", wd);
            break;
        }
        case 2:
        case 3:
            vlen = crdt_counter_encode((int64_t)prop_below(rng, 100), x->value);
            break;
        default:
            vlen = (size_t)sprintf((char *)x->value, "value-%zu", i);
        }
        bool tomb = prop_below(rng, 10) == 0;
        x->v = (struct crdt_rec_view){
            .key = x->key,
            .key_len = strlen(x->key),
            .value = tomb ? NULL : x->value,
            .value_len = tomb ? 0 : vlen,
            .version = v,
            .hlc = crdt_hlc_now(&clk[n], (uint64_t)wall[n]),
            .origin = x->origin,
            .origin_len = strlen(x->origin),
            .flags = tomb ? CRDT_F_TOMBSTONE : 0,
            .expires_at =
                !tomb && prop_below(rng, 5) == 0 ? wall[n] + (int64_t)prop_below(rng, 3000) : 0,
        };
        x->v.precedence =
            tomb ? 0
                 : crdt_resolvers_precedence(rs, x->key, x->v.key_len, x->value, x->v.value_len);
    }
    free(ver);
    *end_wall = maxwall;
    return w;
}

struct order {
    size_t *idx;
    size_t n;
};

/* Every write once, about a third again, all shuffled (Fisher-Yates). */
static void make_order(struct order *o, size_t nwrites, struct prop_rng *rng)
{
    o->idx = malloc(2 * nwrites * sizeof *o->idx);
    assert_non_null(o->idx);
    o->n = 0;
    for (size_t i = 0; i < nwrites; i++) {
        o->idx[o->n++] = i;
        if (prop_below(rng, 3) == 0) o->idx[o->n++] = i;
    }
    for (size_t i = o->n; i > 1; i--) {
        size_t j = prop_below(rng, i);
        size_t t = o->idx[i - 1];
        o->idx[i - 1] = o->idx[j];
        o->idx[j] = t;
    }
}

static void test_random_orders(void **state)
{
    (void)state;
    uint64_t seed = prop_seed();
    struct prop_rng rng = {seed};
    size_t nwrites = 4000, nrep = prop_cases(100000) >= 100000 ? 100 : 6;
    unsigned nkeys = 300;
    struct crdt_resolvers *rs = crdt_resolvers_new_default();
    int64_t end;
    struct write *w = make_history(rs, &rng, nwrites, nkeys, &end);
    const int64_t final_now = end + 2000; /* some TTLs passed, some not */
    const uint64_t grace = 1500;          /* some tombstones collected at the end */
    struct canon_buf ref = {0}, cur = {0};
    uint64_t ref_root = 0;
    size_t ref_size = 0, expired_seen = 0;
    for (size_t r = 0; r < nrep; r++) {
        struct crdt_replica *rep = crdt_replica_new();
        struct crdt_resolvers *mine = crdt_resolvers_new_default();
        struct order o;
        make_order(&o, nwrites, &rng);
        /* sweep now and then as delivery goes on, at each replica's own pace;
         * the grace is long enough that nothing is collected mid-way */
        size_t every = 50 + prop_below(&rng, 400);
        for (size_t i = 0; i < o.n; i++) {
            if (crdt_resolvers_merge(mine, rep, &w[o.idx[i]].v) < 0) PROP_FAIL(seed, r, "merge");
            if (i % every == every - 1) {
                int64_t now = T0 + (int64_t)((uint64_t)(final_now - T0) * i / o.n);
                expired_seen += crdt_replica_sweep(rep, now, UINT64_MAX / 4, NULL, NULL);
            }
        }
        crdt_replica_sweep(rep, final_now, grace, NULL, NULL);
        canon_replica(rep, &cur);
        if (r == 0) {
            canon_put(&ref, cur.p, cur.len);
            ref_root = crdt_replica_root(rep);
            ref_size = crdt_replica_size(rep);
        } else if (cur.len != ref.len || memcmp(cur.p, ref.p, cur.len) != 0 ||
                   crdt_replica_root(rep) != ref_root || crdt_replica_size(rep) != ref_size) {
            PROP_FAIL(seed, r, "replica %zu differs from replica 0 (%zu records vs %zu)", r,
                      crdt_replica_size(rep), ref_size);
        }

        /* and the state is the expected one: per key, the greatest write */
        if (r == 0) {
            for (unsigned k = 0; k < nkeys; k++) {
                char key[48];
                key_of(key, sizeof key, k);
                const struct crdt_rec_view *best = NULL;
                for (size_t i = 0; i < nwrites; i++)
                    if (strcmp(w[i].key, key) == 0 && (!best || crdt_order_cmp(&w[i].v, best) > 0))
                        best = &w[i].v;
                const struct crdt_rec *e = crdt_replica_find(rep, key, strlen(key));
                if (!best) {
                    assert_null(e);
                    continue;
                }
                bool dead = (best->flags & CRDT_F_TOMBSTONE) ||
                            (best->expires_at && best->expires_at <= final_now);
                int64_t death = (best->flags & CRDT_F_TOMBSTONE)
                                    ? (int64_t)crdt_hlc_wall_ms(best->hlc)
                                    : best->expires_at;
                const struct crdt_rec *live = crdt_replica_get(rep, key, strlen(key), final_now);
                if (dead && death <= final_now - (int64_t)grace) {
                    if (e) PROP_FAIL(seed, k, "%s: tombstone not collected", key);
                    continue;
                }
                if (!e) PROP_FAIL(seed, k, "%s: record missing", key);
                struct crdt_rec_view v;
                crdt_rec_view(rep, e, &v);
                if (crdt_order_cmp(&v, best) != 0) PROP_FAIL(seed, k, "%s: not the greatest", key);
                if (dead != (live == NULL)) PROP_FAIL(seed, k, "%s: liveness wrong", key);
                if (!dead && (v.value_len != best->value_len ||
                              memcmp(v.value, best->value, v.value_len) != 0))
                    PROP_FAIL(seed, k, "%s: value differs", key);
            }
        }
        free(o.idx);
        crdt_resolvers_delete(mine);
        crdt_replica_delete(rep);
    }
    assert_true(ref_size > 0);
    assert_true(expired_seen > 0); /* sweeps did turn records into expiry tombstones */
    free(ref.p);
    free(cur.p);
    free(w);
    crdt_resolvers_delete(rs);
}

static struct crdt_rec_view wr(const char *key, const char *val, uint64_t ver, uint64_t wall,
                               const char *origin, int64_t expires)
{
    return (struct crdt_rec_view){.key = key,
                                  .key_len = strlen(key),
                                  .value = (const uint8_t *)val,
                                  .value_len = val ? strlen(val) : 0,
                                  .version = ver,
                                  .hlc = crdt_hlc_make(wall, 0),
                                  .origin = origin,
                                  .origin_len = strlen(origin),
                                  .flags = val ? 0 : CRDT_F_TOMBSTONE,
                                  .expires_at = expires};
}

static void test_expired_not_resurrected(void **state)
{
    (void)state;
    struct crdt_replica *rep = crdt_replica_new();
    const char *k = "backend:health:http://x";
    struct crdt_rec_view old = wr(k, "healthy", 1, 400, "n1", 0);      /* no TTL */
    struct crdt_rec_view cur = wr(k, "unhealthy", 2, 500, "n2", 1000); /* TTL ends at 1000 */
    assert_int_equal(crdt_replica_merge(rep, &cur), 1);
    assert_non_null(crdt_replica_get(rep, k, strlen(k), 999));
    assert_null(crdt_replica_get(rep, k, strlen(k), 1000)); /* expired reads as missing */
    assert_int_equal(crdt_replica_sweep(rep, 1500, 10000, NULL, NULL), 1);
    const struct crdt_rec *e = crdt_replica_find(rep, k, strlen(k));
    assert_non_null(e);
    struct crdt_rec_view v;
    crdt_rec_view(rep, e, &v);
    assert_int_equal(v.flags & (CRDT_F_TOMBSTONE | CRDT_F_EXPIRED),
                     CRDT_F_TOMBSTONE | CRDT_F_EXPIRED);
    assert_int_equal(v.version, 2);
    uint64_t root = crdt_replica_root(rep);
    /* late copies: the same write and an older one without TTL */
    assert_int_equal(crdt_replica_merge(rep, &cur), 0);
    assert_int_equal(crdt_replica_merge(rep, &old), 0);
    assert_null(crdt_replica_get(rep, k, strlen(k), 1600));
    assert_true(crdt_replica_root(rep) == root); /* digest unchanged: peers agree */
    /* a replica that never swept holds the same digest for the same write */
    struct crdt_replica *other = crdt_replica_new();
    assert_int_equal(crdt_replica_merge(other, &old), 1);
    assert_int_equal(crdt_replica_merge(other, &cur), 1);
    assert_true(crdt_replica_root(other) == root);
    assert_null(crdt_replica_get(other, k, strlen(k), 1600));
    /* a newer write does take over */
    struct crdt_rec_view next = wr(k, "healthy", 3, 1700, "n1", 0);
    assert_int_equal(crdt_replica_merge(rep, &next), 1);
    assert_non_null(crdt_replica_get(rep, k, strlen(k), 1800));

    /* deletes: an older copy never revives a deleted key within the grace period */
    const char *d = "kv:deleted";
    struct crdt_rec_view d1 = wr(d, "x", 1, 100, "n1", 0), d2 = wr(d, NULL, 2, 200, "n1", 0);
    assert_int_equal(crdt_replica_merge(rep, &d1), 1);
    assert_int_equal(crdt_replica_merge(rep, &d2), 1);
    assert_int_equal(crdt_replica_merge(rep, &d1), 0);
    assert_null(crdt_replica_get(rep, d, strlen(d), 300));
    assert_int_equal(crdt_replica_sweep(rep, 300, 1000, NULL, NULL), 0); /* within grace */
    assert_int_equal(crdt_replica_merge(rep, &d1), 0);
    assert_null(crdt_replica_get(rep, d, strlen(d), 300));
    /* after the grace period the tombstone is collected */
    size_t before = crdt_replica_size(rep);
    assert_int_equal(crdt_replica_sweep(rep, 1200, 1000, NULL, NULL), 1);
    assert_null(crdt_replica_find(rep, d, strlen(d)));
    assert_int_equal(crdt_replica_size(rep), before - 1);

    /* an expired write's own late copy after collection still reads as missing */
    const char *t = "circuit:http://t";
    struct crdt_rec_view t1 = wr(t, "open", 1, 100, "n1", 200);
    assert_int_equal(crdt_replica_merge(rep, &t1), 1);
    crdt_replica_sweep(rep, 5000, 1000, NULL, NULL);
    assert_null(crdt_replica_find(rep, t, strlen(t)));
    assert_int_equal(crdt_replica_merge(rep, &t1), 1);
    assert_null(crdt_replica_get(rep, t, strlen(t), 5000));
    crdt_replica_delete(other);
    crdt_replica_delete(rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_orders),
        cmocka_unit_test(test_expired_not_resurrected),
    };
    return cmocka_run_group_tests_name("crdt_converge", tests, NULL, NULL);
}
