/* test_crypto_oom.c: every allocation of the crypto layer failing in turn: clean errors, no leaks.
 */
#include "config.h"

#include "tests/lib/heap.h"
#include "tests/unit/test_crypto_util.h"

static void test_ctx_new_oom(void **state)
{
    (void)state;
    struct smc_keypair ca = tc_keypair(1);
    struct smc_identity id = tc_identity(&ca, "alice", 2);
    struct smc_ctx_config cfg = {.self = &id, .ca_pk = ca.pk, .now_ms = T0};
    int failures = 0;
    for (size_t nth = 1;; nth++) {
        struct smc_ctx *c = (struct smc_ctx *)0x1;
        char err[128] = "";
        test_heap_fail_at(nth, 0);
        int rc = smc_ctx_new(&cfg, &c, err, sizeof(err));
        size_t used = test_heap_count();
        test_heap_fail_at(0, 0);
        if (rc == 0) {
            assert_true(used < nth); /* every allocation point was exercised */
            smc_ctx_delete(c);
            break;
        }
        assert_int_equal(rc, SM_ENOMEM);
        assert_null(c);
        assert_string_equal(err, "out of memory");
        failures++;
    }
    assert_true(failures >= 4);
    smc_identity_wipe(&id);
}

static void test_trust_store_oom(void **state)
{
    (void)state;
    struct smc_keypair ca = tc_keypair(1), k = tc_keypair(9);
    struct smc_identity id = tc_identity(&ca, "alice", 2);
    struct smc_ctx *c = tc_ctx(&ca, &id, 1);
    enum smc_reason why;
    char name[32];
    size_t added = 0;
    /* 40 nodes (the table grows twice), with the first allocation of every add failing */
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        struct smc_cert cert = tc_cert(&ca, name, &k, T0 - DAY_MS, T0 + DAY_MS);
        for (size_t nth = 1;; nth++) {
            test_heap_fail_at(nth, 0);
            int rc = smc_trust_add_cert(c, T0, &cert, &why);
            test_heap_fail_at(0, 0);
            if (rc == 1) break;
            assert_int_equal(rc, SM_ENOMEM);
            assert_int_equal(smc_trust_count(c), 1 + added);
            assert_int_equal(smc_trust_get(c, name, strlen(name), NULL), SM_ENOTFOUND);
        }
        added++;
    }
    assert_int_equal(smc_trust_count(c), 41);
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        assert_int_equal(smc_trust_get(c, name, strlen(name), NULL), 0);
    }
    smc_ctx_delete(c);
    smc_identity_wipe(&id);
}

static void test_open_and_pending_oom(void **state)
{
    (void)state;
    struct smc_keypair ca = tc_keypair(1);
    struct smc_identity alice = tc_identity(&ca, "alice", 2), bob = tc_identity(&ca, "bob", 3);
    struct smc_ctx *a = tc_ctx(&ca, &alice, 1), *b = tc_ctx(&ca, &bob, 1);
    uint8_t key[32], pkt[512], sig[64];
    size_t n;
    struct smc_opened o;
    memset(key, 7, sizeof(key));
    assert_int_equal(smc_keyring_set_primary(a, key), 0);
    assert_int_equal(smc_keyring_set_primary(b, key), 0);
    /* first contact: the attached certificate and the decryption buffer both allocate */
    assert_int_equal(smc_seal(a, 1, SMC_SEAL_CERT, (const uint8_t *)"x", 1, pkt, sizeof(pkt), &n),
                     0);
    for (size_t nth = 1;; nth++) {
        test_heap_fail_at(nth, 0);
        int rc = smc_open(b, T0, pkt, n, &o);
        test_heap_fail_at(0, 0);
        if (rc == 0) break;
        assert_int_equal(rc, SM_ENOMEM);
        assert_null(o.payload);
        assert_int_equal(smc_trust_count(b), 1); /* nothing half-done */
    }
    assert_int_equal(o.cert_added, 1);
    assert_memory_equal(o.payload, "x", 1);

    /* pending: a failed copy leaves the area as it was */
    struct crdt_rec_view r = {.key = "k",
                              .key_len = 1,
                              .value = (const uint8_t *)"v",
                              .value_len = 1,
                              .version = 1,
                              .origin = "carol",
                              .origin_len = 5,
                              .flags = CRDT_F_SIGNED,
                              .sig = sig};
    memset(sig, 1, sizeof(sig));
    test_heap_fail_at(1, 1);
    assert_int_equal(smc_pending_add(b, T0, &r), SM_ENOMEM);
    test_heap_fail_at(0, 0);
    assert_int_equal(smc_pending_count(b), 0);
    assert_int_equal(smc_pending_add(b, T0, &r), 0);
    assert_int_equal(smc_pending_count(b), 1);

    /* a record too large for the stack buffer needs the heap */
    static uint8_t big[4096];
    enum smc_reason why;
    r.value = big;
    r.value_len = sizeof(big);
    r.origin = "alice";
    test_heap_fail_at(1, 1);
    assert_int_equal(smc_rec_verify(b, T0, &r, &why), SM_ENOMEM);
    assert_int_equal(smc_rec_sign(a, &r, sig), SM_ENOMEM);
    test_heap_fail_at(0, 0);
    assert_int_equal(smc_rec_sign(a, &r, sig), 0);
    assert_int_equal(smc_rec_verify(b, T0, &r, &why), 0);

    /* revocation list growth */
    struct smc_revlist *rl = smc_revlist_new();
    assert_non_null(rl);
    test_heap_fail_at(1, 1);
    assert_int_equal(smc_revlist_add_id(rl, "x", 1), SM_ENOMEM);
    assert_null(smc_revlist_new());
    test_heap_fail_at(0, 0);
    assert_int_equal(smc_revlist_add_id(rl, "x", 1), 0);
    smc_revlist_delete(rl);

    smc_ctx_delete(a);
    smc_ctx_delete(b);
    smc_identity_wipe(&alice);
    smc_identity_wipe(&bob);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_new_oom),
        cmocka_unit_test(test_trust_store_oom),
        cmocka_unit_test(test_open_and_pending_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
