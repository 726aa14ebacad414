/* smc.h: shared definitions of the crypto layer: sizes, rejection reasons, counters. */
#ifndef CRYPTO_SMC_H
#define CRYPTO_SMC_H

#include <stddef.h>
#include <stdint.h>

#include "statemesh.h"

/**
 * @file
 * The crypto layer (prefix `smc_`) gives statemesh node identities (Ed25519),
 * cluster-CA certificates, the signed (optionally encrypted) packet envelope,
 * replay protection and record signatures. It is sans-IO where the protocol
 * core uses it: no clocks (time is passed in as `now_ms`, wall-clock ms since
 * the epoch), no sockets. Only the file helpers (keys, certificates, CA) touch
 * the file system; they are meant for the CLI and daemon start-up.
 *
 * Every call returns 0 (or a documented non-negative value) on success and a
 * negative SM_E* code on failure. Verification calls also report a precise
 * `enum smc_reason` so callers can count drops by cause.
 */

#define SMC_PK_LEN          32 /**< Ed25519 public key */
#define SMC_SK_LEN          64 /**< Ed25519 secret key (libsodium layout: seed || pk) */
#define SMC_SEED_LEN        32 /**< Ed25519 seed (what key files store) */
#define SMC_SIG_LEN         64 /**< Ed25519 signature */
#define SMC_FP_LEN          32 /**< key fingerprint: BLAKE2b-256 of the public key */
#define SMC_KEYID_LEN       8  /**< short key id: the first 8 bytes of the fingerprint */
#define SMC_MAX_ID          64 /**< node ids are 1..64 bytes */
#define SMC_CLUSTER_KEY_LEN 32 /**< XChaCha20-Poly1305 cluster key */

/**
 * Why something was rejected. The X-macro keeps the enum, the names and the
 * descriptions in one place.
 */
#define SMC_REASON_MAP(X)                                                                          \
    X(OK, "ok")                                                                                    \
    X(FORMAT, "malformed encoding")                                                                \
    X(VERSION, "unknown format version")                                                           \
    X(TRUNCATED, "truncated input")                                                                \
    X(TOO_LARGE, "input too large")                                                                \
    X(BADSIG, "signature does not verify")                                                         \
    X(UNKNOWN_SENDER, "sender has no known certificate")                                           \
    X(UNKNOWN_ORIGIN, "record origin has no known certificate")                                    \
    X(ID_MISMATCH, "certificate node id does not match the sender")                                \
    X(WRONG_CA, "certificate issued by another CA")                                                \
    X(EXPIRED, "certificate expired")                                                              \
    X(NOT_YET_VALID, "certificate not yet valid")                                                  \
    X(REVOKED, "certificate or node id revoked")                                                   \
    X(REPLAY, "replayed or too old sequence number")                                               \
    X(OLD_INCARNATION, "incarnation older than the sender's current one")                          \
    X(NO_KEY, "cluster key id not in the keyring")                                                 \
    X(DECRYPT, "decryption failed (wrong cluster key or corrupted)")                               \
    X(PLAINTEXT, "unencrypted packet refused (keyring configured)")                                \
    X(ENCRYPTED, "encrypted packet but no keyring configured")                                     \
    X(UNSIGNED, "record carries no signature")                                                     \
    X(NOT_ORIGIN, "record origin is not this node")                                               \
    X(SUPERSEDED, "certificate older than the one trusted for this node (re-issued key)")

/** Rejection reasons (SMC_R_OK = 0). */
enum smc_reason {
#define SMC__REASON_ENUM(name, text) SMC_R_##name,
    SMC_REASON_MAP(SMC__REASON_ENUM)
#undef SMC__REASON_ENUM
        SMC_R__COUNT
};

/** Static description of a reason ("unknown reason" when out of range). */
const char *smc_reason_str(enum smc_reason r);
/** Short symbolic name of a reason, e.g. "BADSIG". */
const char *smc_reason_name(enum smc_reason r);

/** Counters kept by a struct smc_ctx (see smc_ctx_stats()). */
struct smc_stats {
    uint64_t sealed;                 /**< packets sealed */
    uint64_t opened;                 /**< packets accepted by smc_open() */
    uint64_t rejected[SMC_R__COUNT]; /**< packets/records/certs rejected, by reason */
    uint64_t rec_signed;             /**< records signed */
    uint64_t rec_verified;           /**< record signatures checked with Ed25519 */
    uint64_t rec_cache_hits;         /**< record verifications answered by the cache */
    uint64_t pending_added;          /**< records parked for an unknown origin */
    uint64_t pending_dropped;        /**< parked records evicted (full) or expired */
    uint64_t pending_released;       /**< parked records released after their cert came */
    uint64_t certs_added;            /**< certificates newly trusted (or replaced) */
};

/**
 * Initialise libsodium (idempotent, thread-safe). Every smc_ entry point that
 * needs it calls it too; call it early to fail early. 0 or SM_ECRYPTO.
 */
int smc_init(void) SM_MUST_CHECK;

#endif /* CRYPTO_SMC_H */
