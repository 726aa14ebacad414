/* test_replica.c: the replica table: merge order, digests, sweep and tombstones. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crdt/replica.h"

static struct crdt_rec_view rec(const char *key, const char *val, uint64_t ver, uint64_t hlc,
                                const char *origin)
{
    struct crdt_rec_view v = {.key = key,
                              .key_len = strlen(key),
                              .value = (const uint8_t *)val,
                              .value_len = val ? strlen(val) : 0,
                              .version = ver,
                              .hlc = hlc,
                              .origin = origin,
                              .origin_len = strlen(origin)};
    if (!val) v.flags = CRDT_F_TOMBSTONE;
    return v;
}

static const char *value_of(struct crdt_replica *r, const char *key, int64_t now)
{
    static char buf[128];
    const struct crdt_rec *e = crdt_replica_get(r, key, strlen(key), now);
    if (!e) return NULL;
    struct crdt_rec_view v;
    crdt_rec_view(r, e, &v);
    snprintf(buf, sizeof buf, "%.*s", (int)v.value_len, (const char *)v.value);
    return buf;
}

static void test_order(void **state)
{
    (void)state;
    struct crdt_rec_view a = rec("k", "x", 2, 10, "a"), b = rec("k", "y", 1, 99, "z");
    assert_true(crdt_order_cmp(&a, &b) > 0); /* version first */
    b.version = 2;
    b.precedence = 1;
    assert_true(crdt_order_cmp(&a, &b) < 0); /* then precedence */
    b.precedence = 0;
    assert_true(crdt_order_cmp(&a, &b) < 0); /* then hlc */
    b.hlc = 10;
    assert_true(crdt_order_cmp(&a, &b) < 0); /* then origin: "a" < "z" */
    struct crdt_rec_view c = rec("k", "x", 2, 10, "ab");
    assert_true(crdt_order_cmp(&a, &c) < 0); /* a prefix sorts first */
    assert_int_equal(crdt_order_cmp(&a, &a), 0);
}

static void test_merge_greater_wins(void **state)
{
    (void)state;
    struct crdt_replica *r = crdt_replica_new();
    struct crdt_rec_view v1 = rec("k", "one", 1, 100, "n1");
    struct crdt_rec_view v2 = rec("k", "two", 2, 50, "n2");
    assert_int_equal(crdt_replica_merge(r, &v2), 1);
    assert_int_equal(crdt_replica_merge(r, &v1), 0); /* older: ignored */
    assert_int_equal(crdt_replica_merge(r, &v2), 0); /* same write: idempotent */
    assert_string_equal(value_of(r, "k", 0), "two");
    assert_int_equal(crdt_replica_version(r, "k", 1), 2);
    assert_int_equal(crdt_replica_size(r), 1);
    crdt_replica_delete(r);
}

static void test_digest_order_independent(void **state)
{
    (void)state;
    struct crdt_replica *a = crdt_replica_new(), *b = crdt_replica_new();
    char keys[2000][16];
    struct crdt_rec_view vs[2000];
    for (int i = 0; i < 2000; i++) {
        snprintf(keys[i], sizeof keys[i], "key%d", i % 700);
        vs[i] = rec(keys[i], "v", (uint64_t)(i / 700 + 1), (uint64_t)i, i % 2 ? "n1" : "n2");
    }
    for (int i = 0; i < 2000; i++) assert_true(crdt_replica_merge(a, &vs[i]) >= 0);
    for (int i = 1999; i >= 0; i--) assert_true(crdt_replica_merge(b, &vs[i]) >= 0);
    assert_int_equal(crdt_replica_size(a), 700);
    assert_int_equal(crdt_replica_size(b), 700);
    assert_true(crdt_replica_root(a) == crdt_replica_root(b));
    for (unsigned l = 0; l < CRDT_DIGEST_LEAVES; l++)
        assert_true(crdt_replica_leaf(a, l) == crdt_replica_leaf(b, l));
    struct crdt_rec_view extra = rec("key5", "newer", 9, 1, "n3");
    assert_int_equal(crdt_replica_merge(b, &extra), 1);
    assert_true(crdt_replica_root(a) != crdt_replica_root(b));
    unsigned leaf = (unsigned)(crdt_key_hash("key5", 4) & (CRDT_DIGEST_LEAVES - 1));
    for (unsigned l = 0; l < CRDT_DIGEST_LEAVES; l++)
        if (l != leaf) assert_true(crdt_replica_leaf(a, l) == crdt_replica_leaf(b, l));
    assert_true(crdt_replica_leaf(a, leaf) != crdt_replica_leaf(b, leaf));
    crdt_replica_delete(a);
    crdt_replica_delete(b);
}

static int count_cb(const struct crdt_rec_view *v, void *arg)
{
    (void)v;
    (*(int *)arg)++;
    return 0;
}

static void test_foreach_leaf_covers_all(void **state)
{
    (void)state;
    struct crdt_replica *r = crdt_replica_new();
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "leafkey-%d", i);
        struct crdt_rec_view v = rec(key, "v", 1, 1, "n");
        assert_int_equal(crdt_replica_merge(r, &v), 1);
    }
    int total = 0;
    for (unsigned l = 0; l < CRDT_DIGEST_LEAVES; l++)
        assert_int_equal(crdt_replica_foreach_leaf(r, l, count_cb, &total), 0);
    assert_int_equal(total, 5000);
    int n = 0;
    assert_int_equal(crdt_replica_foreach(r, "leafkey-49", 10, true, 0, count_cb, &n), 0);
    assert_int_equal(n, 111); /* 49, 490..499, 4900..4999 */
    crdt_replica_delete(r);
}

static void test_expiry_no_resurrection(void **state)
{
    (void)state;
    struct crdt_replica *r = crdt_replica_new();
    struct crdt_rec_view v = rec("t", "val", 3, 1000, "n1");
    v.expires_at = 5000;
    assert_int_equal(crdt_replica_merge(r, &v), 1);
    assert_string_equal(value_of(r, "t", 4999), "val");
    assert_null(value_of(r, "t", 5000)); /* expired reads as missing at once */
    uint64_t root = crdt_replica_root(r);
    int expired = 0;
    assert_int_equal(crdt_replica_sweep(r, 6000, 60000, count_cb, &expired), 1);
    assert_int_equal(expired, 1);
    assert_true(crdt_replica_root(r) == root); /* same write, same digest */
    /* the same write, or an older one, arriving late cannot bring it back */
    assert_int_equal(crdt_replica_merge(r, &v), 0);
    struct crdt_rec_view older = rec("t", "old", 2, 900, "n2");
    assert_int_equal(crdt_replica_merge(r, &older), 0);
    assert_null(value_of(r, "t", 6000));
    /* after the grace period the tombstone goes */
    assert_int_equal(crdt_replica_sweep(r, 5000 + 60000, 60000, NULL, NULL), 1);
    assert_int_equal(crdt_replica_size(r), 0);
    assert_true(crdt_replica_root(r) == 0);
    crdt_replica_delete(r);
}

static void test_tombstone_grace(void **state)
{
    (void)state;
    struct crdt_replica *r = crdt_replica_new();
    struct crdt_rec_view v = rec("d", "x", 1, (uint64_t)1000 << CRDT_HLC_LOGICAL_BITS, "n1");
    assert_int_equal(crdt_replica_merge(r, &v), 1);
    struct crdt_rec_view del = rec("d", NULL, 2, (uint64_t)2000 << CRDT_HLC_LOGICAL_BITS, "n1");
    assert_int_equal(crdt_replica_merge(r, &del), 1);
    assert_null(value_of(r, "d", 2000));
    assert_int_equal(crdt_replica_merge(r, &v), 0); /* the old set loses to the delete */
    assert_int_equal(crdt_replica_sweep(r, 2999, 1000, NULL, NULL), 0);
    assert_int_equal(crdt_replica_size(r), 1);
    assert_int_equal(crdt_replica_sweep(r, 3000, 1000, NULL, NULL), 1);
    assert_int_equal(crdt_replica_size(r), 0);
    crdt_replica_delete(r);
}

static void test_signed_record_roundtrip(void **state)
{
    (void)state;
    struct crdt_replica *r = crdt_replica_new();
    uint8_t sig[CRDT_SIG_LEN];
    for (int i = 0; i < CRDT_SIG_LEN; i++) sig[i] = (uint8_t)i;
    struct crdt_rec_view v = rec("s", "signed", 1, 1, "n1");
    v.flags = CRDT_F_SIGNED;
    v.sig = sig;
    v.precedence = 2;
    assert_int_equal(crdt_replica_merge(r, &v), 1);
    const struct crdt_rec *e = crdt_replica_find(r, "s", 1);
    struct crdt_rec_view out;
    crdt_rec_view(r, e, &out);
    assert_memory_equal(out.sig, sig, CRDT_SIG_LEN);
    assert_int_equal(out.precedence, 2);
    assert_int_equal(out.origin_len, 2);
    assert_memory_equal(out.origin, "n1", 2);
    crdt_replica_delete(r);
}

static void test_rejects_bad_records(void **state)
{
    (void)state;
    struct crdt_replica *r = crdt_replica_new();
    struct crdt_rec_view v = rec("k", "v", 1, 1, "n1");
    v.key_len = 0;
    assert_true(crdt_replica_merge(r, &v) < 0);
    v = rec("k", "v", 1, 1, "n1");
    v.origin_len = CRDT_MAX_ORIGIN + 1;
    assert_true(crdt_replica_merge(r, &v) < 0);
    assert_int_equal(crdt_replica_size(r), 0);
    crdt_replica_delete(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_merge_greater_wins),
        cmocka_unit_test(test_digest_order_independent),
        cmocka_unit_test(test_foreach_leaf_covers_all),
        cmocka_unit_test(test_expiry_no_resurrection),
        cmocka_unit_test(test_tombstone_grace),
        cmocka_unit_test(test_signed_record_roundtrip),
        cmocka_unit_test(test_rejects_bad_records),
    };
    return cmocka_run_group_tests_name("replica", tests, NULL, NULL);
}
