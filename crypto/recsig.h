/* recsig.h: record signatures, the verified-record cache and the pending-record area. */
#ifndef CRYPTO_RECSIG_H
#define CRYPTO_RECSIG_H

#include "crdt/record.h"
#include "crypto/ctx.h"

/**
 * @file
 * Every record carries its origin's Ed25519 signature over a canonical byte
 * string of all its fields (integers big-endian):
 *
 *     16     "statemesh-rec-v1" (domain separation)
 *     2 + k  key length (u16) and key
 *     4 + v  value length (u32) and value (length 0 for a NULL value)
 *     8      version
 *     8      hlc
 *     1 + o  origin length (u8, 1..64) and origin node id
 *     1      precedence
 *     1      flags & SMC_REC_FLAGS_SIGNED (every flag bit but CRDT_F_SIGNED)
 *     8      expires_at (int64)
 *
 * A relay cannot re-sign someone else's record: verification always uses the
 * trusted certificate of the record's *origin*, never the packet sender.
 * The verified-record cache remembers a keyed hash (SipHash-2-4-128 with a
 * per-context secret key) of canonical bytes + signature, so a record version
 * is checked with Ed25519 once; later copies cost one short hash.
 */

/** Flag bits covered by the record signature. */
#define SMC_REC_FLAGS_SIGNED ((uint8_t)(0xFFu & ~CRDT_F_SIGNED))
/** Length of the canonical prefix. */
#define SMC_REC_CONTEXT_LEN 16
/** Canonical length of a record with key length @p k, value length @p v, origin length @p o. */
#define SMC_REC_CANON_LEN(k, v, o) (SMC_REC_CONTEXT_LEN + 2 + (k) + 4 + (v) + 16 + 1 + (o) + 10)

/** Canonical length of @p r. */
size_t smc_rec_canon_len(const struct crdt_rec_view *r);
/**
 * Write the canonical bytes of @p r into @p out. SM_ERANGE when @p cap is too
 * small; SM_EINVAL when a field is out of range (key > 65535 bytes, origin not
 * 1..64 bytes, NULL pointer with non-zero length).
 */
int smc_rec_canon(const struct crdt_rec_view *r, uint8_t *out, size_t cap, size_t *outlen);

/**
 * Sign @p r with the context's own key into @p sig. The record's origin must
 * be this node (SM_EAUTH, reason NOT_ORIGIN, otherwise): a node only signs
 * what it wrote. The caller then sets r->sig and CRDT_F_SIGNED.
 */
int smc_rec_sign(struct smc_ctx *c, const struct crdt_rec_view *r,
                 uint8_t sig[SMC_SIG_LEN]) SM_MUST_CHECK;
/** Sign @p r with key pair @p kp, whatever its origin (tools and tests). */
int smc_rec_sign_with(const struct smc_keypair *kp, const struct crdt_rec_view *r,
                      uint8_t sig[SMC_SIG_LEN]) SM_MUST_CHECK;
/** Check @p r's signature against public key @p pk (no cache, no trust store). */
int smc_rec_verify_pk(const uint8_t pk[SMC_PK_LEN], const struct crdt_rec_view *r) SM_MUST_CHECK;

/**
 * Verify a received record against its origin's trusted certificate, using
 * the verified-record cache. Returns 0 when the signature is good (cached or
 * checked now), else with @p why set (may be NULL):
 *  - SM_ENOTFOUND, UNKNOWN_ORIGIN: no certificate for the origin yet; park the
 *    record with smc_pending_add() instead of dropping it;
 *  - SM_ECRYPTO, UNSIGNED / BADSIG: no signature, or it does not match (a
 *    field altered, or signed by a key other than the origin's);
 *  - SM_EAUTH, EXPIRED / NOT_YET_VALID: the origin's certificate is not valid now;
 *  - SM_EINVAL, FORMAT: fields out of range.
 */
int smc_rec_verify(struct smc_ctx *c, int64_t now_ms, const struct crdt_rec_view *r,
                   enum smc_reason *why) SM_MUST_CHECK;

/** Drop every entry of the verified-record cache. */
void smc_rec_cache_clear(struct smc_ctx *c);

/** @name Pending records (origin certificate not known yet)
 * A bounded holding area (count, bytes and age limits from smc_ctx_config).
 * When full, the oldest record is dropped to make room (counted).
 * @{ */
/**
 * Park a copy of @p r (which must carry a signature). 0, SM_ERANGE when the
 * record alone exceeds the byte limit, SM_EINVAL when unsigned, SM_ENOMEM.
 * Adding a record that is already parked (same canonical bytes and
 * signature) is a no-op returning 0.
 */
int smc_pending_add(struct smc_ctx *c, int64_t now_ms, const struct crdt_rec_view *r);
/** Called by smc_pending_take_for() for each parked record whose signature verified. */
typedef void (*smc_pending_fn)(const struct crdt_rec_view *r, void *arg);
/**
 * Take every record parked for origin @p origin: each is verified now (with
 * the origin's certificate that must be in the trust store by then), passed
 * to @p fn if good (the view is valid only during the call), and removed
 * whether good or not. Returns the number passed to @p fn.
 */
int smc_pending_take_for(struct smc_ctx *c, int64_t now_ms, const char *origin, size_t origin_len,
                         smc_pending_fn fn, void *arg);
/** Drop parked records older than the pending TTL. Returns how many were dropped. */
size_t smc_pending_expire(struct smc_ctx *c, int64_t now_ms);
/** Number of parked records. */
size_t smc_pending_count(const struct smc_ctx *c);
/** @} */

#endif /* CRYPTO_RECSIG_H */
