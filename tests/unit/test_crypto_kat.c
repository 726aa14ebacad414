/* test_crypto_kat.c: known-answer tests: fixed keys and nonces give the committed exact bytes. */
#include "config.h"

#include "tests/unit/test_crypto_util.h"

/*
 * Inputs (also documented in docs/security.md): CA key from seed 32 x 0x01,
 * node "alice" from seed 32 x 0x02, certificate valid T0 - 1 day .. T0 + 30
 * days, context seed 32 x 0x5A, incarnation 100, payload "hello, mesh";
 * plain packet seq 1; encrypted packet seq 2 with cluster key 32 x 0x07
 * (first nonce of the context); the record below (a tombstone bit set).
 */

#ifndef SM_TEST_SRCDIR
#define SM_TEST_SRCDIR "."
#endif

static char kat[8][2][1024];
static int n_kat;

static const char *want(const char *name)
{
    for (int i = 0; i < n_kat; i++)
        if (strcmp(kat[i][0], name) == 0) return kat[i][1];
    fail_msg("no KAT named %s", name);
    return NULL;
}

static int load(void **state)
{
    (void)state;
    char p[1024], line[1100];
    const char *src = getenv("SM_SRCDIR");
    snprintf(p, sizeof(p), "%s/tests/data/crypto/kat.txt", src && *src ? src : SM_TEST_SRCDIR);
    FILE *f = fopen(p, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", p);
        return -1;
    }
    while (fgets(line, sizeof(line), f) && n_kat < 8) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (sscanf(line, "%1023s %1023s", kat[n_kat][0], kat[n_kat][1]) == 2) n_kat++;
    }
    fclose(f);
    return n_kat == 6 ? 0 : -1;
}

static const uint8_t hello[] = "hello, mesh";

static struct crdt_rec_view kat_record(void)
{
    return (struct crdt_rec_view){.key = "backend:health:web-1",
                                  .key_len = 20,
                                  .value = (const uint8_t *)"unhealthy",
                                  .value_len = 9,
                                  .version = 7,
                                  .hlc = (uint64_t)T0 << 16 | 3,
                                  .origin = "alice",
                                  .origin_len = 5,
                                  .precedence = 1,
                                  .flags = CRDT_F_TOMBSTONE,
                                  .expires_at = T0 + 60000};
}

static void test_kat_ca_key(void **state)
{
    (void)state;
    struct smc_keypair ca = tc_keypair(1);
    assert_string_equal(tc_hex(ca.pk, 32), want("ca_pk"));
}

static void test_kat_certificate(void **state)
{
    (void)state;
    struct smc_keypair ca = tc_keypair(1), kp = tc_keypair(2);
    struct smc_identity alice = tc_identity(&ca, "alice", 2);
    assert_int_equal(alice.cert_len, 127);
    assert_string_equal(tc_hex(alice.cert_bytes, alice.cert_len), want("cert"));
    /* and it decodes to exactly what was signed */
    struct smc_cert c;
    enum smc_reason why;
    assert_int_equal(smc_cert_decode(alice.cert_bytes, alice.cert_len, &c, &why), 0);
    assert_string_equal(c.node_id, "alice");
    assert_memory_equal(c.node_pk, kp.pk, 32);
    assert_int_equal(c.not_before_ms, T0 - DAY_MS);
    assert_int_equal(c.not_after_ms, T0 + 30 * DAY_MS);
    assert_int_equal(smc_cert_verify(&c, ca.pk, T0, NULL, &why), 0);
    smc_identity_wipe(&alice);
}

static void test_kat_envelopes(void **state)
{
    (void)state;
    struct smc_keypair ca = tc_keypair(1);
    struct smc_identity alice = tc_identity(&ca, "alice", 2), bob = tc_identity(&ca, "bob", 3);
    struct smc_ctx *a = tc_ctx(&ca, &alice, 100), *b = tc_ctx(&ca, &bob, 1);
    uint8_t pkt[512], key[32];
    size_t n;
    struct smc_opened o;
    enum smc_reason why;
    memset(key, 7, sizeof(key));

    assert_int_equal(smc_seal(a, 1, 0, hello, 11, pkt, sizeof(pkt), &n), 0);
    assert_string_equal(tc_hex(pkt, n), want("plain"));
    assert_int_equal(smc_trust_add(b, T0, alice.cert_bytes, alice.cert_len, &why), 1);
    assert_int_equal(smc_open(b, T0, pkt, n, &o), 0);

    assert_int_equal(smc_keyring_set_primary(a, key), 0);
    assert_int_equal(smc_seal(a, 2, 0, hello, 11, pkt, sizeof(pkt), &n), 0);
    assert_string_equal(tc_hex(pkt, n), want("enc"));
    assert_int_equal(smc_keyring_set_primary(b, key), 0);
    assert_int_equal(smc_open(b, T0, pkt, n, &o), 0);
    assert_int_equal(o.payload_len, 11);
    assert_memory_equal(o.payload, hello, 11);

    smc_ctx_delete(a);
    smc_ctx_delete(b);
    smc_identity_wipe(&alice);
    smc_identity_wipe(&bob);
}

static void test_kat_record(void **state)
{
    (void)state;
    struct smc_keypair ca = tc_keypair(1), kp = tc_keypair(2);
    struct smc_identity alice = tc_identity(&ca, "alice", 2);
    struct smc_ctx *a = tc_ctx(&ca, &alice, 100);
    struct crdt_rec_view r = kat_record();
    uint8_t canon[512], sig[64];
    size_t n;
    assert_int_equal(smc_rec_canon(&r, canon, sizeof(canon), &n), 0);
    assert_string_equal(tc_hex(canon, n), want("canon"));
    assert_int_equal(smc_rec_sign(a, &r, sig), 0);
    assert_string_equal(tc_hex(sig, 64), want("recsig"));
    /* the SIGNED carrier bit does not change the signed bytes */
    r.flags |= CRDT_F_SIGNED;
    r.sig = sig;
    assert_int_equal(smc_rec_canon(&r, canon, sizeof(canon), &n), 0);
    assert_string_equal(tc_hex(canon, n), want("canon"));
    assert_int_equal(smc_rec_verify_pk(kp.pk, &r), 0);
    smc_ctx_delete(a);
    smc_identity_wipe(&alice);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kat_ca_key),
        cmocka_unit_test(test_kat_certificate),
        cmocka_unit_test(test_kat_envelopes),
        cmocka_unit_test(test_kat_record),
    };
    return cmocka_run_group_tests(tests, load, NULL);
}
