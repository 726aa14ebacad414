/* test_crypto_envelope.c: sealing/opening packets, every rejection, replay windows, keyring. */
#include "config.h"

#include "tests/unit/test_crypto_util.h"

struct fx {
    struct smc_keypair ca;
    struct smc_identity alice, bob;
    struct smc_ctx *a, *b;
    uint8_t pkt[2048];
    size_t len;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->ca = tc_keypair(1);
    f->alice = tc_identity(&f->ca, "alice", 2);
    f->bob = tc_identity(&f->ca, "bob", 3);
    f->a = tc_ctx(&f->ca, &f->alice, 100);
    f->b = tc_ctx(&f->ca, &f->bob, 200);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    smc_ctx_delete(f->a);
    smc_ctx_delete(f->b);
    smc_identity_wipe(&f->alice);
    smc_identity_wipe(&f->bob);
    free(f);
    return 0;
}

static const uint8_t payload[] = "hello, mesh";
#define PLEN (sizeof(payload) - 1)

static void seal(struct fx *f, struct smc_ctx *c, uint64_t seq, unsigned flags)
{
    assert_int_equal(smc_seal(c, seq, flags, payload, PLEN, f->pkt, sizeof(f->pkt), &f->len), 0);
}

/* B learns A's certificate the way membership messages carry it. */
static void b_trusts_a(struct fx *f)
{
    size_t n;
    const uint8_t *cert = smc_ctx_cert(f->a, &n);
    enum smc_reason why;
    assert_int_equal(smc_trust_add(f->b, T0, cert, n, &why), 1);
    assert_int_equal(why, SMC_R_OK);
}

static int open_pkt(struct fx *f, int64_t now, enum smc_reason *why)
{
    struct smc_opened o;
    int rc = smc_open(f->b, now, f->pkt, f->len, &o);
    *why = o.why;
    return rc;
}

static void test_roundtrip_plain(void **state)
{
    struct fx *f = *state;
    struct smc_opened o;
    b_trusts_a(f);
    seal(f, f->a, 1, 0);
    assert_int_equal(f->len, PLEN + SMC_ENV_OVERHEAD(5));
    assert_int_equal(f->len - PLEN, smc_seal_overhead(f->a, 0));
    assert_int_equal(smc_open(f->b, T0, f->pkt, f->len, &o), 0);
    assert_int_equal(o.why, SMC_R_OK);
    assert_int_equal(o.sender_len, 5);
    assert_memory_equal(o.sender, "alice", 5);
    assert_int_equal(o.incarnation, 100);
    assert_int_equal(o.seq, 1);
    assert_int_equal(o.payload_len, PLEN);
    assert_memory_equal(o.payload, payload, PLEN);
    assert_int_equal(o.flags, 0);
    assert_int_equal(o.cert_added, 0);
    /* the plaintext payload is borrowed from the packet */
    assert_ptr_equal(o.payload, f->pkt + 4 + 5 + 16);
    assert_int_equal(smc_ctx_stats(f->b)->opened, 1);
    assert_int_equal(smc_ctx_stats(f->a)->sealed, 1);
}

static void test_empty_payload(void **state)
{
    struct fx *f = *state;
    struct smc_opened o;
    b_trusts_a(f);
    assert_int_equal(smc_seal(f->a, 1, 0, NULL, 0, f->pkt, sizeof(f->pkt), &f->len), 0);
    assert_int_equal(f->len, SMC_ENV_OVERHEAD(5));
    assert_int_equal(smc_open(f->b, T0, f->pkt, f->len, &o), 0);
    assert_int_equal(o.payload_len, 0);
}

static void test_seal_capacity(void **state)
{
    struct fx *f = *state;
    size_t need = PLEN + smc_seal_overhead(f->a, 0);
    assert_int_equal(smc_seal(f->a, 1, 0, payload, PLEN, f->pkt, need - 1, &f->len), SM_ERANGE);
    assert_int_equal(smc_seal(f->a, 1, 0, payload, PLEN, f->pkt, need, &f->len), 0);
    assert_int_equal(f->len, need);
    assert_int_equal(smc_seal(f->a, 1, 0x80, payload, PLEN, f->pkt, need, &f->len), SM_EINVAL);
    /* the worst case macro covers the biggest header there is */
    assert_int_equal(SMC_ENV_MAX_OVERHEAD, 376);
}

static void test_unknown_sender(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    seal(f, f->a, 1, 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_UNKNOWN_SENDER);
    assert_int_equal(smc_ctx_stats(f->b)->rejected[SMC_R_UNKNOWN_SENDER], 1);
}

static void test_attached_cert_first_contact(void **state)
{
    struct fx *f = *state;
    struct smc_opened o;
    seal(f, f->a, 1, SMC_SEAL_CERT);
    assert_int_equal(f->len - PLEN, smc_seal_overhead(f->a, SMC_SEAL_CERT));
    assert_int_equal(f->len - PLEN, SMC_ENV_OVERHEAD(5) + SMC_ENV_CERT_OVERHEAD(127));
    assert_int_equal(smc_trust_count(f->b), 1);
    assert_int_equal(smc_open(f->b, T0, f->pkt, f->len, &o), 0);
    assert_int_equal(o.cert_added, 1);
    assert_int_equal(o.flags, SMC_ENV_F_CERT);
    assert_memory_equal(o.payload, payload, PLEN);
    assert_int_equal(smc_trust_count(f->b), 2);
    struct smc_cert c;
    assert_int_equal(smc_trust_get(f->b, "alice", 5, &c), 0);
    assert_memory_equal(c.node_pk, f->alice.kp.pk, SMC_PK_LEN);
    /* the next packet needs no certificate, and an attached known one is not "added" again */
    seal(f, f->a, 2, 0);
    assert_int_equal(smc_open(f->b, T0, f->pkt, f->len, &o), 0);
    seal(f, f->a, 3, SMC_SEAL_CERT);
    assert_int_equal(smc_open(f->b, T0, f->pkt, f->len, &o), 0);
    assert_int_equal(o.cert_added, 0);
}

/* A re-issued certificate retires the old key: packets signed with it (the
 * old certificate attached) are refused once the new one is trusted. */
static void test_superseded_key(void **state)
{
    struct fx *f = *state;
    struct smc_keypair k2 = tc_keypair(9);
    struct smc_cert c2 = tc_cert(&f->ca, "alice", &k2, T0 - DAY_MS / 2, T0 + 30 * DAY_MS);
    struct smc_identity alice2;
    assert_int_equal(smc_identity_init(&alice2, &c2, &k2), 0);
    struct smc_ctx *a2 = tc_ctx(&f->ca, &alice2, 300);
    enum smc_reason why;
    /* the old key first: trusted */
    seal(f, f->a, 1, SMC_SEAL_CERT);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    /* the re-issued certificate arrives and replaces it */
    assert_int_equal(smc_seal(a2, 1, SMC_SEAL_CERT, payload, PLEN, f->pkt, sizeof(f->pkt), &f->len),
                     0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    struct smc_cert got;
    assert_int_equal(smc_trust_get(f->b, "alice", 5, &got), 0);
    assert_memory_equal(got.node_pk, k2.pk, SMC_PK_LEN);
    /* the old key, with or without its certificate, is out */
    seal(f, f->a, 2, SMC_SEAL_CERT);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_SUPERSEDED);
    seal(f, f->a, 3, 0);
    assert_true(open_pkt(f, T0, &why) < 0);
    assert_true(why == SMC_R_BADSIG || why == SMC_R_OLD_INCARNATION);
    /* and the new one keeps working */
    assert_int_equal(smc_seal(a2, 2, 0, payload, PLEN, f->pkt, sizeof(f->pkt), &f->len), 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    smc_ctx_delete(a2);
    smc_identity_wipe(&alice2);
    smc_keypair_wipe(&k2);
}

static void test_attached_cert_rejections(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    struct smc_keypair other_ca = tc_keypair(9), kp = tc_keypair(2);
    const struct {
        struct smc_cert cert;
        enum smc_reason why;
        int rc;
    } cases[] = {
        {tc_cert(&f->ca, "alice", &kp, T0 - 2 * DAY_MS, T0 - DAY_MS), SMC_R_EXPIRED, SM_EAUTH},
        {tc_cert(&f->ca, "alice", &kp, T0 + DAY_MS, T0 + 2 * DAY_MS), SMC_R_NOT_YET_VALID,
         SM_EAUTH},
        {tc_cert(&other_ca, "alice", &kp, T0 - DAY_MS, T0 + DAY_MS), SMC_R_WRONG_CA, SM_ECRYPTO},
        {tc_cert(&f->ca, "mallory", &kp, T0 - DAY_MS, T0 + DAY_MS), SMC_R_ID_MISMATCH, SM_EAUTH},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct smc_identity id;
        struct smc_ctx *c;
        uint8_t seed[32] = {0};
        struct smc_ctx_config cfg = {
            .self = &id, .ca_pk = f->ca.pk, .now_ms = T0, .incarnation = 1, .seed = seed};
        assert_int_equal(smc_identity_init(&id, &cases[i].cert, &kp), 0);
        if (cases[i].why == SMC_R_ID_MISMATCH) {
            /* mallory's valid certificate attached to a packet claiming to be alice's */
            size_t clen = smc_cert_encoded_len(&cases[i].cert);
            uint8_t body[1024];
            size_t n = 0;
            body[n++] = SMC_ENV_TAG;
            body[n++] = SMC_ENV_F_CERT;
            body[n++] = 0;
            body[n++] = 5;
            memcpy(body + n, "alice", 5);
            n += 5;
            memset(body + n, 0, 16);
            body[n + 15] = 1;
            n += 16;
            body[n++] = (uint8_t)(clen >> 8);
            body[n++] = (uint8_t)clen;
            assert_int_equal(smc_cert_encode(&cases[i].cert, body + n, clen, NULL), 0);
            n += clen;
            memcpy(body + n, payload, PLEN);
            n += PLEN;
            struct smc_keypair k = kp;
            crypto_sign_detached(body + n, NULL, body, n, k.sk);
            memcpy(f->pkt, body, n + 64);
            f->len = n + 64;
        } else {
            char err[256];
            /* own-cert check at creation: validity/CA problems are refused with a message */
            assert_int_equal(smc_ctx_new(&cfg, &c, err, sizeof(err)), cases[i].rc);
            assert_non_null(strstr(err, smc_reason_str(cases[i].why)));
            /* seal with a context built at a time the cert is fine, or by hand for the wrong CA */
            cfg.now_ms = cases[i].cert.not_before_ms;
            cfg.ca_pk = cases[i].why == SMC_R_WRONG_CA ? other_ca.pk : f->ca.pk;
            assert_int_equal(smc_ctx_new(&cfg, &c, err, sizeof(err)), 0);
            seal(f, c, 1, SMC_SEAL_CERT);
            smc_ctx_delete(c);
        }
        assert_int_equal(open_pkt(f, T0, &why), cases[i].rc);
        assert_int_equal(why, cases[i].why);
        assert_int_equal(smc_trust_count(f->b), 1); /* nothing was trusted */
        smc_identity_wipe(&id);
    }
}

static void test_trusted_cert_expires(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    b_trusts_a(f);
    seal(f, f->a, 1, 0);
    assert_int_equal(open_pkt(f, T0 + 31 * DAY_MS, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_EXPIRED);
    assert_int_equal(open_pkt(f, T0 - 2 * DAY_MS, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_NOT_YET_VALID);
    assert_int_equal(open_pkt(f, T0, &why), 0);
}

static void test_revoked(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    uint8_t fp[SMC_FP_LEN];
    b_trusts_a(f);
    seal(f, f->a, 1, SMC_SEAL_CERT);
    assert_int_equal(smc_ctx_revoke_id(f->b, "alice", 5), 0);
    assert_int_equal(smc_trust_count(f->b), 1);
    /* neither the trusted entry nor the attached certificate is accepted any more */
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_REVOKED);
    size_t n;
    const uint8_t *cert = smc_ctx_cert(f->a, &n);
    assert_int_equal(smc_trust_add(f->b, T0, cert, n, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_REVOKED);

    /* by key fingerprint, on a fresh receiver */
    struct smc_ctx *c = tc_ctx(&f->ca, &f->bob, 1);
    assert_int_equal(smc_trust_add(c, T0, cert, n, &why), 1);
    assert_int_equal(smc_trust_count(c), 2);
    smc_fingerprint(f->alice.kp.pk, fp);
    assert_int_equal(smc_ctx_revoke_fp(c, fp), 0);
    assert_int_equal(smc_trust_count(c), 1);
    struct smc_opened o;
    assert_int_equal(smc_open(c, T0, f->pkt, f->len, &o), SM_EAUTH);
    assert_int_equal(o.why, SMC_R_REVOKED);
    smc_ctx_delete(c);
}

static void test_bad_signature(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    b_trusts_a(f);
    seal(f, f->a, 1, 0);
    f->pkt[f->len - 1] ^= 0x01;
    assert_int_equal(open_pkt(f, T0, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_BADSIG);
    /* bob signing a packet that claims to be from alice */
    struct smc_keypair bob = f->bob.kp;
    seal(f, f->a, 2, 0);
    crypto_sign_detached(f->pkt + f->len - 64, NULL, f->pkt, f->len - 64, bob.sk);
    assert_int_equal(open_pkt(f, T0, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_BADSIG);
    /* neither forged packet moved the window: seq 1 and 2 are still fresh */
    seal(f, f->a, 2, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    seal(f, f->a, 1, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
}

static void test_replay_window(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    b_trusts_a(f);
    seal(f, f->a, 1000, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH); /* the very same packet again */
    assert_int_equal(why, SMC_R_REPLAY);
    /* late but within the window: accepted once */
    seal(f, f->a, 1000 - 127, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_REPLAY);
    /* just outside the window */
    seal(f, f->a, 1000 - 128, 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_REPLAY);
    /* reordered packets inside the window */
    for (uint64_t s = 1010; s > 1000; s--) {
        seal(f, f->a, s, 0);
        assert_int_equal(open_pkt(f, T0, &why), 0);
    }
    for (uint64_t s = 1001; s <= 1010; s++) {
        seal(f, f->a, s, 0);
        assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    }
    /* jumps of 64, 65 and > 128 shift the window correctly */
    seal(f, f->a, 1074, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    seal(f, f->a, 1010, 0); /* 64 below top: still remembered */
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    seal(f, f->a, 1009, 0); /* 65 below, also seen */
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    seal(f, f->a, 1000, 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    seal(f, f->a, 1011, 0); /* never seen, 63 below */
    assert_int_equal(open_pkt(f, T0, &why), 0);
    seal(f, f->a, 5000, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    seal(f, f->a, 4999, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    seal(f, f->a, 1074, 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_REPLAY);
}

static void test_incarnation(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    b_trusts_a(f);
    seal(f, f->a, 50, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    /* A restarts with a higher incarnation: sequence numbers start over */
    smc_ctx_set_incarnation(f->a, 101);
    assert_int_equal(smc_ctx_incarnation(f->a), 101);
    seal(f, f->a, 1, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    /* packets of the old incarnation are refused, even fresh-looking ones */
    smc_ctx_set_incarnation(f->a, 100);
    seal(f, f->a, 51, 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_OLD_INCARNATION);
    smc_ctx_set_incarnation(f->a, 101);
    seal(f, f->a, 1, 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_REPLAY);
    seal(f, f->a, 2, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
}

static void test_truncation(void **state)
{
    struct fx *f = *state;
    struct smc_opened o;
    b_trusts_a(f);
    static const unsigned flags[] = {0, SMC_SEAL_CERT};
    uint8_t key[32];
    memset(key, 7, sizeof(key));
    for (int enc = 0; enc < 2; enc++) {
        if (enc) {
            assert_int_equal(smc_keyring_set_primary(f->a, key), 0);
            assert_int_equal(smc_keyring_set_primary(f->b, key), 0);
        }
        for (size_t k = 0; k < 2; k++) {
            seal(f, f->a, 10 + 2 * (uint64_t)enc + k, flags[k]);
            for (size_t n = 0; n < f->len; n++) {
                int rc = smc_open(f->b, T0, f->pkt, n, &o);
                assert_true(rc == SM_EPROTO || rc == SM_ECRYPTO);
                assert_true(o.why == SMC_R_TRUNCATED || o.why == SMC_R_BADSIG);
                assert_null(o.payload);
            }
            assert_int_equal(smc_open(f->b, T0, f->pkt, f->len, &o), 0);
        }
    }
    assert_int_equal(smc_open(f->b, T0, NULL, 0, &o), SM_EPROTO);
    assert_int_equal(o.why, SMC_R_TRUNCATED);
}

static void flip_every_bit(struct fx *f)
{
    struct smc_opened o;
    for (size_t i = 0; i < f->len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            f->pkt[i] ^= (uint8_t)(1u << bit);
            int rc = smc_open(f->b, T0, f->pkt, f->len, &o);
            if (rc == 0) fail_msg("flip of byte %zu bit %d accepted (%zu bytes)", i, bit, f->len);
            assert_int_not_equal(o.why, SMC_R_OK);
            f->pkt[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* and nothing a flipped packet did spoiled the real one */
    assert_int_equal(smc_open(f->b, T0, f->pkt, f->len, &o), 0);
}

static void test_bit_flips_plain(void **state)
{
    struct fx *f = *state;
    b_trusts_a(f);
    seal(f, f->a, 1, 0);
    flip_every_bit(f);
    seal(f, f->a, 2, SMC_SEAL_CERT);
    flip_every_bit(f);
}

static void test_bit_flips_encrypted(void **state)
{
    struct fx *f = *state;
    uint8_t key[32];
    memset(key, 7, sizeof(key));
    assert_int_equal(smc_keyring_set_primary(f->a, key), 0);
    assert_int_equal(smc_keyring_set_primary(f->b, key), 0);
    b_trusts_a(f);
    seal(f, f->a, 1, 0);
    flip_every_bit(f);
    seal(f, f->a, 2, SMC_SEAL_CERT);
    flip_every_bit(f);
}

static void test_encrypted_roundtrip(void **state)
{
    struct fx *f = *state;
    struct smc_opened o;
    uint8_t key[32];
    memset(key, 7, sizeof(key));
    assert_int_equal(smc_keyring_set_primary(f->a, key), 0);
    assert_int_equal(smc_keyring_add(f->b, key), 0);
    b_trusts_a(f);
    seal(f, f->a, 1, 0);
    assert_int_equal(f->len, PLEN + SMC_ENV_OVERHEAD(5) + SMC_ENV_ENC_OVERHEAD);
    assert_int_equal(f->len - PLEN, smc_seal_overhead(f->a, 0));
    assert_int_equal(f->pkt[1], SMC_ENV_F_ENCRYPTED);
    assert_int_equal(f->pkt[2], smc_cluster_key_id(key));
    /* the payload does not appear in clear */
    assert_null(memmem(f->pkt, f->len, "hello", 5));
    assert_int_equal(smc_open(f->b, T0, f->pkt, f->len, &o), 0);
    assert_int_equal(o.flags, SMC_ENV_F_ENCRYPTED);
    assert_int_equal(o.payload_len, PLEN);
    assert_memory_equal(o.payload, payload, PLEN);
    /* two packets never share a nonce */
    uint8_t n1[24];
    memcpy(n1, f->pkt + 4 + 5 + 16, 24);
    seal(f, f->a, 2, 0);
    assert_memory_not_equal(n1, f->pkt + 4 + 5 + 16, 24);
}

static void test_policy(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    uint8_t key[32];
    memset(key, 7, sizeof(key));
    b_trusts_a(f);
    /* encrypted packet, receiver has no keyring */
    assert_int_equal(smc_keyring_set_primary(f->a, key), 0);
    seal(f, f->a, 1, 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_ENCRYPTED);
    /* plaintext packet, receiver has a keyring */
    smc_keyring_clear(f->a);
    assert_int_equal(smc_keyring_count(f->a), 0);
    assert_int_equal(smc_keyring_set_primary(f->b, key), 0);
    seal(f, f->a, 2, 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_PLAINTEXT);
    /* ...unless the receiver is rolling encryption out */
    struct smc_ctx_config cfg = {
        .self = &f->bob, .ca_pk = f->ca.pk, .now_ms = T0, .accept_plaintext = 1};
    struct smc_ctx *c;
    assert_int_equal(smc_ctx_new(&cfg, &c, NULL, 0), 0);
    assert_int_equal(smc_keyring_set_primary(c, key), 0);
    size_t n;
    const uint8_t *cert = smc_ctx_cert(f->a, &n);
    assert_int_equal(smc_trust_add(c, T0, cert, n, &why), 1);
    struct smc_opened o;
    assert_int_equal(smc_open(c, T0, f->pkt, f->len, &o), 0);
    smc_ctx_delete(c);
    /* a keyring without a primary cannot send */
    assert_int_equal(smc_keyring_remove(f->b, key), 0);
    assert_int_equal(smc_keyring_add(f->b, key), 0);
    assert_int_equal(smc_seal(f->b, 1, 0, payload, PLEN, f->pkt, sizeof(f->pkt), &f->len),
                     SM_ECONFIG);
}

static void test_wrong_cluster_key(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    uint8_t k1[32], k2[32];
    memset(k1, 7, sizeof(k1));
    memset(k2, 8, sizeof(k2));
    assert_int_not_equal(smc_cluster_key_id(k1), smc_cluster_key_id(k2));
    assert_int_equal(smc_keyring_set_primary(f->a, k1), 0);
    assert_int_equal(smc_keyring_set_primary(f->b, k2), 0);
    b_trusts_a(f);
    seal(f, f->a, 1, 0);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_NO_KEY);
    /* same key id, wrong key (only the sender can make such a packet: it must be signed) */
    seal(f, f->a, 2, 0);
    f->pkt[2] = smc_cluster_key_id(k2);
    struct smc_keypair ak = f->alice.kp;
    crypto_sign_detached(f->pkt + f->len - 64, NULL, f->pkt, f->len - 64, ak.sk);
    assert_int_equal(open_pkt(f, T0, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_DECRYPT);
    /* ciphertext corrupted by the sender itself, then signed: decryption catches it */
    assert_int_equal(smc_keyring_add(f->b, k1), 0);
    seal(f, f->a, 3, 0);
    f->pkt[f->len - 64 - 20] ^= 0x40;
    crypto_sign_detached(f->pkt + f->len - 64, NULL, f->pkt, f->len - 64, ak.sk);
    assert_int_equal(open_pkt(f, T0, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_DECRYPT);
    /* a failed decryption did not consume the sequence number */
    seal(f, f->a, 3, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
}

static void test_key_rotation(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    uint8_t old[32], new[32];
    memset(old, 7, sizeof(old));
    memset(new, 9, sizeof(new));
    assert_int_equal(smc_keyring_set_primary(f->a, old), 0);
    assert_int_equal(smc_keyring_set_primary(f->b, old), 0);
    b_trusts_a(f);
    /* step 1: everyone accepts the new key; A still sends with the old one */
    assert_int_equal(smc_keyring_add(f->b, new), 0);
    assert_int_equal(smc_keyring_add(f->a, new), 0);
    seal(f, f->a, 1, 0);
    assert_int_equal(open_pkt(f, T0, &why), 0);
    /* step 2: A switches first, B has not yet: no packet is lost */
    assert_int_equal(smc_keyring_set_primary(f->a, new), 0);
    seal(f, f->a, 2, 0);
    assert_int_equal(f->pkt[2], smc_cluster_key_id(new));
    assert_int_equal(open_pkt(f, T0, &why), 0);
    /* step 3: the old key is rotated out; a packet still sealed with it is refused */
    assert_int_equal(smc_keyring_set_primary(f->b, new), 0);
    assert_int_equal(smc_keyring_set_primary(f->a, old), 0);
    seal(f, f->a, 3, 0);
    assert_int_equal(smc_keyring_remove(f->b, old), 0);
    assert_int_equal(smc_keyring_remove(f->b, old), SM_ENOTFOUND);
    assert_int_equal(smc_keyring_count(f->b), 1);
    assert_int_equal(open_pkt(f, T0, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_NO_KEY);
}

static void test_keyring_limits(void **state)
{
    struct fx *f = *state;
    uint8_t k[32];
    size_t added = 0;
    for (int b = 1; added < SMC_KEYRING_MAX; b++) {
        memset(k, b, sizeof(k));
        int rc = smc_keyring_add(f->a, k);
        if (rc == SM_EEXISTS) continue; /* a one-byte id clash: refused, not mixed up */
        assert_int_equal(rc, 0);
        added++;
    }
    assert_int_equal(smc_keyring_count(f->a), SMC_KEYRING_MAX);
    assert_int_equal(smc_keyring_add(f->a, k), 0); /* already there */
    memset(k, 0xEE, sizeof(k));
    int rc = smc_keyring_add(f->a, k);
    assert_true(rc == SM_ERANGE || rc == SM_EEXISTS);
}

static void test_peek_sender(void **state)
{
    struct fx *f = *state;
    const char *id;
    size_t n;
    seal(f, f->a, 1, 0);
    assert_int_equal(smc_peek_sender(f->pkt, f->len, &id, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(id, "alice", 5);
    assert_int_equal(smc_peek_sender(f->pkt, 6, &id, &n), SM_EPROTO);
    f->pkt[0] = 0;
    assert_int_equal(smc_peek_sender(f->pkt, f->len, &id, &n), SM_EPROTO);
}

static void test_header_format_errors(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    b_trusts_a(f);
    seal(f, f->a, 1, 0);
    uint8_t save = f->pkt[0];
    f->pkt[0] = 0xE2;
    assert_int_equal(open_pkt(f, T0, &why), SM_EPROTO);
    assert_int_equal(why, SMC_R_VERSION);
    f->pkt[0] = save;
    f->pkt[1] = 0x04;
    assert_int_equal(open_pkt(f, T0, &why), SM_EPROTO);
    assert_int_equal(why, SMC_R_FORMAT);
    f->pkt[1] = 0;
    f->pkt[3] = 0;
    assert_int_equal(open_pkt(f, T0, &why), SM_EPROTO);
    assert_int_equal(why, SMC_R_FORMAT);
    f->pkt[3] = 65;
    assert_int_equal(open_pkt(f, T0, &why), SM_EPROTO);
    assert_int_equal(why, SMC_R_FORMAT);
    f->pkt[3] = 5;
    assert_int_equal(open_pkt(f, T0, &why), 0);
    assert_string_equal(smc_reason_name(SMC_R_REPLAY), "REPLAY");
    assert_string_equal(smc_reason_str(SMC_R__COUNT), "unknown reason");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_roundtrip_plain),
        T(test_empty_payload),
        T(test_seal_capacity),
        T(test_unknown_sender),
        T(test_attached_cert_first_contact),
        T(test_attached_cert_rejections),
        T(test_superseded_key),
        T(test_trusted_cert_expires),
        T(test_revoked),
        T(test_bad_signature),
        T(test_replay_window),
        T(test_incarnation),
        T(test_truncation),
        T(test_bit_flips_plain),
        T(test_bit_flips_encrypted),
        T(test_encrypted_roundtrip),
        T(test_policy),
        T(test_wrong_cluster_key),
        T(test_key_rotation),
        T(test_keyring_limits),
        T(test_peek_sender),
        T(test_header_format_errors),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
