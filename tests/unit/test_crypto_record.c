/* test_crypto_record.c: record signatures, the verified-record cache, pending records, trust store.
 */
#include "config.h"

#include "tests/unit/test_crypto_util.h"

struct fx {
    struct smc_keypair ca;
    struct smc_identity alice, bob, carol;
    struct smc_ctx *a, *b;
    uint8_t sig[SMC_SIG_LEN];
    struct crdt_rec_view r;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->ca = tc_keypair(1);
    f->alice = tc_identity(&f->ca, "alice", 2);
    f->bob = tc_identity(&f->ca, "bob", 3);
    f->carol = tc_identity(&f->ca, "carol", 4);
    f->a = tc_ctx(&f->ca, &f->alice, 1);
    f->b = tc_ctx(&f->ca, &f->bob, 1);
    f->r = (struct crdt_rec_view){.key = "backend:health:web-1",
                                  .key_len = 20,
                                  .value = (const uint8_t *)"unhealthy",
                                  .value_len = 9,
                                  .version = 7,
                                  .hlc = (uint64_t)T0 << 16 | 3,
                                  .origin = "alice",
                                  .origin_len = 5,
                                  .precedence = 1,
                                  .flags = 0,
                                  .expires_at = T0 + 60000};
    assert_int_equal(smc_rec_sign(f->a, &f->r, f->sig), 0);
    f->r.sig = f->sig;
    f->r.flags |= CRDT_F_SIGNED;
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
    smc_identity_wipe(&f->carol);
    free(f);
    return 0;
}

static void trust(struct smc_ctx *c, const struct smc_identity *id)
{
    enum smc_reason why;
    int rc = smc_trust_add(c, T0, id->cert_bytes, id->cert_len, &why);
    assert_true(rc == 0 || rc == 1);
}

static void test_sign_verify(void **state)
{
    struct fx *f = *state;
    enum smc_reason why = SMC_R__COUNT;
    trust(f->b, &f->alice);
    assert_int_equal(smc_rec_verify(f->b, T0, &f->r, &why), 0);
    assert_int_equal(why, SMC_R_OK);
    assert_int_equal(smc_rec_verify_pk(f->alice.kp.pk, &f->r), 0);
    assert_int_equal(smc_rec_verify_pk(f->bob.kp.pk, &f->r), SM_ECRYPTO);
    /* the origin can check its own records too */
    assert_int_equal(smc_rec_verify(f->a, T0, &f->r, &why), 0);
    assert_int_equal(smc_ctx_stats(f->a)->rec_signed, 1);
    assert_int_equal(smc_rec_canon_len(&f->r), SMC_REC_CANON_LEN(20, 9, 5));
}

static void test_cache(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    trust(f->b, &f->alice);
    const struct smc_stats *st = smc_ctx_stats(f->b);
    for (int i = 0; i < 5; i++) assert_int_equal(smc_rec_verify(f->b, T0, &f->r, &why), 0);
    assert_int_equal(st->rec_verified, 1);
    assert_int_equal(st->rec_cache_hits, 4);
    /* an altered copy is never answered from the cache */
    f->r.version++;
    assert_int_equal(smc_rec_verify(f->b, T0, &f->r, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_BADSIG);
    assert_int_equal(smc_rec_verify(f->b, T0, &f->r, &why), SM_ECRYPTO);
    assert_int_equal(st->rec_verified, 3);
    f->r.version--;
    /* clearing forgets: one more real check */
    smc_rec_cache_clear(f->b);
    assert_int_equal(smc_rec_verify(f->b, T0, &f->r, &why), 0);
    assert_int_equal(st->rec_verified, 4);
    assert_int_equal(st->rec_cache_hits, 4);
}

static void test_cache_eviction_is_safe(void **state)
{
    struct fx *f = *state;
    uint8_t seed[32] = {1};
    struct smc_ctx_config cfg = {
        .self = &f->bob, .ca_pk = f->ca.pk, .now_ms = T0, .seed = seed, .cache_slots = 4};
    struct smc_ctx *c;
    enum smc_reason why;
    assert_int_equal(smc_ctx_new(&cfg, &c, NULL, 0), 0);
    trust(c, &f->alice);
    /* far more records than slots: every verdict stays right, the cache just misses */
    uint8_t sigs[64][SMC_SIG_LEN];
    struct crdt_rec_view rs[64];
    for (int i = 0; i < 64; i++) {
        rs[i] = f->r;
        rs[i].version = 100 + (uint64_t)i;
        rs[i].sig = sigs[i];
        assert_int_equal(smc_rec_sign(f->a, &rs[i], sigs[i]), 0);
    }
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 64; i++) assert_int_equal(smc_rec_verify(c, T0, &rs[i], &why), 0);
    assert_true(smc_ctx_stats(c)->rec_verified >= 64);
    assert_int_equal(smc_ctx_stats(c)->rec_verified + smc_ctx_stats(c)->rec_cache_hits, 128);
    smc_ctx_delete(c);
}

/* Every field is covered: change each one and the signature no longer verifies. */
static void test_each_field_altered(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    trust(f->b, &f->alice);
    trust(f->b, &f->carol);
    assert_int_equal(smc_rec_verify(f->b, T0, &f->r, &why), 0);
    struct crdt_rec_view v;
    uint8_t sig2[SMC_SIG_LEN];
#define ALTER(stmt)                                                                                \
    do {                                                                                           \
        v = f->r;                                                                                  \
        stmt;                                                                                      \
        assert_int_equal(smc_rec_verify(f->b, T0, &v, &why), SM_ECRYPTO);                          \
        assert_int_equal(why, SMC_R_BADSIG);                                                       \
    } while (0)
    ALTER(v.key = "backend:health:web-2");
    ALTER(v.key_len = 19);
    ALTER(v.value = (const uint8_t *)"healthy!!");
    ALTER(v.value_len = 8);
    ALTER(v.value = NULL; v.value_len = 0);
    ALTER(v.version = 8);
    ALTER(v.hlc++);
    ALTER(v.origin = "carol"); /* claims another (known) origin */
    ALTER(v.precedence = 0);
    ALTER(v.flags |= CRDT_F_TOMBSTONE);
    ALTER(v.flags |= CRDT_F_EXPIRED);
    ALTER(v.flags |= 0x80);
    ALTER(v.expires_at = 0);
    ALTER(memcpy(sig2, f->sig, 64); sig2[10] ^= 1; v.sig = sig2);
#undef ALTER
    /* an unknown origin is not a bad signature: it waits for the certificate */
    v = f->r;
    v.origin = "dave";
    v.origin_len = 4;
    assert_int_equal(smc_rec_verify(f->b, T0, &v, &why), SM_ENOTFOUND);
    assert_int_equal(why, SMC_R_UNKNOWN_ORIGIN);
    /* the SIGNED carrier bit is not part of the signed bytes, but required */
    v = f->r;
    v.flags &= (uint8_t)~CRDT_F_SIGNED;
    assert_int_equal(smc_rec_verify(f->b, T0, &v, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_UNSIGNED);
    v = f->r;
    v.sig = NULL;
    assert_int_equal(smc_rec_verify(f->b, T0, &v, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_UNSIGNED);
    /* out-of-range fields */
    v = f->r;
    v.origin_len = 0;
    assert_int_equal(smc_rec_verify(f->b, T0, &v, &why), SM_EINVAL);
    assert_int_equal(why, SMC_R_FORMAT);
}

/* A relay that is not the origin cannot make a record verify by signing it itself. */
static void test_relay_resign(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    trust(f->b, &f->alice);
    trust(f->b, &f->carol);
    struct crdt_rec_view forged = f->r;
    uint8_t sig[SMC_SIG_LEN];
    forged.value = (const uint8_t *)"healthy";
    forged.value_len = 7;
    forged.version = 8;
    /* carol's context refuses to sign alice's record... */
    struct smc_ctx *cc = tc_ctx(&f->ca, &f->carol, 1);
    assert_int_equal(smc_rec_sign(cc, &forged, sig), SM_EAUTH);
    assert_int_equal(smc_ctx_stats(cc)->rejected[SMC_R_NOT_ORIGIN], 1);
    smc_ctx_delete(cc);
    /* ...and signing it with carol's key anyway does not make it verify */
    assert_int_equal(smc_rec_sign_with(&f->carol.kp, &forged, sig), 0);
    forged.sig = sig;
    assert_int_equal(smc_rec_verify(f->b, T0, &forged, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_BADSIG);
    /* carol re-signing alice's genuine record does not verify either */
    assert_int_equal(smc_rec_sign_with(&f->carol.kp, &f->r, sig), 0);
    struct crdt_rec_view resigned = f->r;
    resigned.sig = sig;
    assert_int_equal(smc_rec_verify(f->b, T0, &resigned, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_BADSIG);
}

static void test_origin_cert_validity(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    trust(f->b, &f->alice);
    assert_int_equal(smc_rec_verify(f->b, T0 + 31 * DAY_MS, &f->r, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_EXPIRED);
    assert_int_equal(smc_rec_verify(f->b, T0 - 2 * DAY_MS, &f->r, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_NOT_YET_VALID);
    /* revoking the origin drops its entry and the cached verdicts */
    assert_int_equal(smc_rec_verify(f->b, T0, &f->r, &why), 0);
    assert_int_equal(smc_ctx_revoke_id(f->b, "alice", 5), 0);
    assert_int_equal(smc_rec_verify(f->b, T0, &f->r, &why), SM_ENOTFOUND);
    assert_int_equal(why, SMC_R_UNKNOWN_ORIGIN);
    assert_int_equal(smc_trust_add(f->b, T0, f->alice.cert_bytes, f->alice.cert_len, &why),
                     SM_EAUTH);
    assert_int_equal(why, SMC_R_REVOKED);
}

struct got {
    int n;
    uint64_t versions[16];
    char keys[16][32];
};

static void on_released(const struct crdt_rec_view *r, void *arg)
{
    struct got *g = arg;
    g->versions[g->n] = r->version;
    snprintf(g->keys[g->n], sizeof(g->keys[0]), "%.*s", (int)r->key_len, r->key);
    g->n++;
}

static void test_pending(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    struct got g = {0};
    /* B does not know alice yet: the record waits instead of being lost */
    assert_int_equal(smc_rec_verify(f->b, T0, &f->r, &why), SM_ENOTFOUND);
    assert_int_equal(smc_pending_add(f->b, T0, &f->r), 0);
    assert_int_equal(smc_pending_add(f->b, T0, &f->r), 0); /* duplicate: held once */
    assert_int_equal(smc_pending_count(f->b), 1);
    /* a forged record for alice waits too, and is dropped once alice is known */
    struct crdt_rec_view bad = f->r;
    bad.version = 99;
    assert_int_equal(smc_pending_add(f->b, T0, &bad), 0);
    /* a record of another unknown origin stays parked */
    uint8_t csig[SMC_SIG_LEN];
    struct crdt_rec_view cr = f->r;
    cr.origin = "carol";
    cr.key = "circuit:db";
    cr.key_len = 10;
    assert_int_equal(smc_rec_sign_with(&f->carol.kp, &cr, csig), 0);
    cr.sig = csig;
    assert_int_equal(smc_pending_add(f->b, T0, &cr), 0);
    assert_int_equal(smc_pending_count(f->b), 3);
    /* alice becomes known: her good record is released, the forged one dropped */
    trust(f->b, &f->alice);
    assert_int_equal(smc_pending_take_for(f->b, T0 + 5, "alice", 5, on_released, &g), 1);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.versions[0], 7);
    assert_string_equal(g.keys[0], "backend:health:web-1");
    assert_int_equal(smc_pending_count(f->b), 1);
    assert_int_equal(smc_ctx_stats(f->b)->pending_released, 1);
    assert_int_equal(smc_ctx_stats(f->b)->pending_dropped, 1);
    /* the released record is now in the cache */
    assert_int_equal(smc_rec_verify(f->b, T0, &f->r, &why), 0);
    /* carol's record expires after the TTL (30 s default) */
    assert_int_equal(smc_pending_expire(f->b, T0 + 30000), 0);
    assert_int_equal(smc_pending_expire(f->b, T0 + 30001), 1);
    assert_int_equal(smc_pending_count(f->b), 0);
    assert_int_equal(smc_pending_take_for(f->b, T0, "carol", 5, on_released, &g), 0);
    /* unsigned records are not parked */
    struct crdt_rec_view un = f->r;
    un.flags = 0;
    assert_int_equal(smc_pending_add(f->b, T0, &un), SM_EINVAL);
}

static void test_pending_bounded(void **state)
{
    struct fx *f = *state;
    uint8_t seed[32] = {2};
    struct smc_ctx_config cfg = {.self = &f->bob,
                                 .ca_pk = f->ca.pk,
                                 .now_ms = T0,
                                 .seed = seed,
                                 .pending_max = 4,
                                 .pending_max_bytes = 2048};
    struct smc_ctx *c;
    struct got g = {0};
    assert_int_equal(smc_ctx_new(&cfg, &c, NULL, 0), 0);
    uint8_t sigs[10][SMC_SIG_LEN];
    for (int i = 0; i < 10; i++) {
        struct crdt_rec_view v = f->r;
        v.version = (uint64_t)i;
        assert_int_equal(smc_rec_sign(f->a, &v, sigs[i]), 0);
        v.sig = sigs[i];
        assert_int_equal(smc_pending_add(c, T0 + i, &v), 0);
        assert_true(smc_pending_count(c) <= 4);
    }
    /* the oldest were dropped: versions 6..9 remain */
    assert_int_equal(smc_pending_count(c), 4);
    assert_int_equal(smc_ctx_stats(c)->pending_dropped, 6);
    /* a record bigger than the whole byte budget is refused */
    static uint8_t big[4096];
    struct crdt_rec_view v = f->r;
    v.value = big;
    v.value_len = sizeof(big);
    assert_int_equal(smc_pending_add(c, T0, &v), SM_ERANGE);
    trust(c, &f->alice);
    assert_int_equal(smc_pending_take_for(c, T0, "alice", 5, on_released, &g), 4);
    assert_int_equal(g.versions[0], 6);
    assert_int_equal(g.versions[3], 9);
    smc_ctx_delete(c);
}

static void test_large_record(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    static uint8_t big[8192];
    uint8_t sig[SMC_SIG_LEN];
    memset(big, 'x', sizeof(big));
    struct crdt_rec_view v = f->r;
    v.value = big;
    v.value_len = sizeof(big); /* past the stack buffer: the heap path */
    assert_int_equal(smc_rec_sign(f->a, &v, sig), 0);
    v.sig = sig;
    trust(f->b, &f->alice);
    assert_int_equal(smc_rec_verify(f->b, T0, &v, &why), 0);
    big[4000] = 'y';
    assert_int_equal(smc_rec_verify(f->b, T0, &v, &why), SM_ECRYPTO);
    uint8_t small[16];
    assert_int_equal(smc_rec_canon(&f->r, small, sizeof(small), NULL), SM_ERANGE);
}

static void test_trust_store(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    struct smc_cert c;
    assert_int_equal(smc_trust_count(f->b), 1);
    assert_int_equal(smc_trust_get(f->b, "bob", 3, &c), 0); /* itself */
    assert_int_equal(smc_trust_add(f->b, T0, f->alice.cert_bytes, f->alice.cert_len, &why), 1);
    assert_int_equal(smc_trust_add(f->b, T0, f->alice.cert_bytes, f->alice.cert_len, &why), 0);
    size_t n = 0;
    const uint8_t *enc = smc_trust_get_encoded(f->b, "alice", 5, &n);
    assert_non_null(enc);
    assert_int_equal(n, f->alice.cert_len);
    assert_memory_equal(enc, f->alice.cert_bytes, n);
    /* a re-issued certificate (later not_before, new key) replaces the old one... */
    struct smc_keypair k2 = tc_keypair(22);
    struct smc_cert newer = tc_cert(&f->ca, "alice", &k2, T0 - DAY_MS / 2, T0 + DAY_MS);
    assert_int_equal(smc_trust_add_cert(f->b, T0, &newer, &why), 1);
    assert_int_equal(smc_trust_get(f->b, "alice", 5, &c), 0);
    assert_memory_equal(c.node_pk, k2.pk, SMC_PK_LEN);
    /* ...and the older one arriving late does not come back */
    assert_int_equal(smc_trust_add(f->b, T0, f->alice.cert_bytes, f->alice.cert_len, &why), 0);
    assert_int_equal(smc_trust_get(f->b, "alice", 5, &c), 0);
    assert_memory_equal(c.node_pk, k2.pk, SMC_PK_LEN);
    /* bad inputs */
    uint8_t junk[SMC_CERT_MAX_LEN];
    memcpy(junk, f->carol.cert_bytes, f->carol.cert_len);
    junk[f->carol.cert_len - 1] ^= 1;
    assert_int_equal(smc_trust_add(f->b, T0, junk, f->carol.cert_len, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_BADSIG);
    assert_int_equal(smc_trust_add(f->b, T0, junk, 10, &why), SM_EPROTO);
    assert_int_equal(why, SMC_R_TRUNCATED);
    junk[0] = 0;
    assert_int_equal(smc_trust_add(f->b, T0, junk, f->carol.cert_len, &why), SM_EPROTO);
    assert_int_equal(why, SMC_R_VERSION);
    assert_int_equal(smc_trust_remove(f->b, "alice", 5), 0);
    assert_int_equal(smc_trust_remove(f->b, "alice", 5), SM_ENOTFOUND);
    assert_int_equal(smc_trust_get(f->b, "alice", 5, &c), SM_ENOTFOUND);
    assert_null(smc_trust_get_encoded(f->b, "alice", 5, NULL));
}

/* Many nodes: the table grows, and removals keep every other entry reachable. */
static void test_trust_store_many(void **state)
{
    struct fx *f = *state;
    enum smc_reason why;
    char id[32];
    struct smc_keypair k = tc_keypair(50);
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof(id), "node-%d", i);
        struct smc_cert c = tc_cert(&f->ca, id, &k, T0 - DAY_MS, T0 + DAY_MS);
        assert_int_equal(smc_trust_add_cert(f->b, T0, &c, &why), 1);
    }
    assert_int_equal(smc_trust_count(f->b), 301);
    for (int i = 0; i < 300; i += 3) {
        snprintf(id, sizeof(id), "node-%d", i);
        assert_int_equal(smc_trust_remove(f->b, id, strlen(id)), 0);
    }
    assert_int_equal(smc_trust_count(f->b), 201);
    for (int i = 0; i < 300; i++) {
        struct smc_cert c;
        snprintf(id, sizeof(id), "node-%d", i);
        assert_int_equal(smc_trust_get(f->b, id, strlen(id), &c), i % 3 ? 0 : SM_ENOTFOUND);
        if (i % 3) assert_string_equal(c.node_id, id);
    }
    /* the capacity limit */
    uint8_t seed[32] = {3};
    struct smc_ctx_config cfg = {
        .self = &f->bob, .ca_pk = f->ca.pk, .now_ms = T0, .seed = seed, .max_trusted = 2};
    struct smc_ctx *c2;
    assert_int_equal(smc_ctx_new(&cfg, &c2, NULL, 0), 0);
    trust(c2, &f->alice);
    assert_int_equal(smc_trust_add(c2, T0, f->carol.cert_bytes, f->carol.cert_len, &why),
                     SM_ERANGE);
    smc_ctx_delete(c2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_sign_verify),
        T(test_cache),
        T(test_cache_eviction_is_safe),
        T(test_each_field_altered),
        T(test_relay_resign),
        T(test_origin_cert_validity),
        T(test_pending),
        T(test_pending_bounded),
        T(test_large_record),
        T(test_trust_store),
        T(test_trust_store_many),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
