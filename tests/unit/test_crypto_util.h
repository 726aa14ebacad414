/* test_crypto_util.h: deterministic CA, identities and contexts shared by the crypto tests. */
#ifndef TEST_CRYPTO_UTIL_H
#define TEST_CRYPTO_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "crypto/crypto.h"

/** A fixed wall time (2023-11-14T22:13:20Z) every test starts from. */
#define T0     INT64_C(1700000000000)
#define DAY_MS INT64_C(86400000)

/** A key pair from a seed filled with @p b. */
static inline struct smc_keypair tc_keypair(uint8_t b)
{
    uint8_t seed[SMC_SEED_LEN];
    struct smc_keypair kp;
    memset(seed, b, sizeof(seed));
    assert_int_equal(smc_keypair_from_seed(&kp, seed), 0);
    return kp;
}

/** A certificate for @p id with key pair @p kp, signed by @p ca, valid [nb, na]. */
static inline struct smc_cert tc_cert(const struct smc_keypair *ca, const char *id,
                                      const struct smc_keypair *kp, int64_t nb, int64_t na)
{
    struct smc_cert c;
    memset(&c, 0, sizeof(c));
    c.node_id_len = strlen(id);
    memcpy(c.node_id, id, c.node_id_len);
    memcpy(c.node_pk, kp->pk, SMC_PK_LEN);
    c.not_before_ms = nb;
    c.not_after_ms = na;
    assert_int_equal(smc_cert_sign(&c, ca), 0);
    return c;
}

/** An identity for @p id whose key comes from seed byte @p b, valid T0 - 1 day .. T0 + 30 days. */
static inline struct smc_identity tc_identity(const struct smc_keypair *ca, const char *id,
                                              uint8_t b)
{
    struct smc_identity ident;
    struct smc_keypair kp = tc_keypair(b);
    struct smc_cert c = tc_cert(ca, id, &kp, T0 - DAY_MS, T0 + 30 * DAY_MS);
    assert_int_equal(smc_identity_init(&ident, &c, &kp), 0);
    smc_keypair_wipe(&kp);
    return ident;
}

/** A context for @p ident trusting CA @p ca, with a fixed seed (reproducible nonces). */
static inline struct smc_ctx *tc_ctx(const struct smc_keypair *ca, const struct smc_identity *ident,
                                     uint64_t incarnation)
{
    uint8_t seed[32];
    struct smc_ctx *c = NULL;
    char err[256] = "";
    memset(seed, 0x5A, sizeof(seed));
    struct smc_ctx_config cfg = {
        .self = ident, .ca_pk = ca->pk, .now_ms = T0, .incarnation = incarnation, .seed = seed};
    int rc = smc_ctx_new(&cfg, &c, err, sizeof(err));
    if (rc != 0) fail_msg("smc_ctx_new: %d %s", rc, err);
    return c;
}

/** Lowercase hex of @p n bytes (static buffer, for comparing with KAT strings). */
static inline const char *tc_hex(const uint8_t *p, size_t n)
{
    static char buf[4096];
    assert_true(2 * n < sizeof(buf));
    for (size_t i = 0; i < n; i++) snprintf(buf + 2 * i, 3, "%02x", p[i]);
    buf[2 * n] = '\0';
    return buf;
}

#endif
