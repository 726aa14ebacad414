/* ctx.h: the per-node crypto context: own identity, CA, trust store, revocations, keyring. */
#ifndef CRYPTO_CTX_H
#define CRYPTO_CTX_H

#include "crypto/cert.h"

/**
 * @file
 * One struct smc_ctx per node. It holds what the envelope and the record
 * signatures need: the node's identity, the CA public key, the trust store
 * (node id -> verified certificate, plus the sender's replay window), the
 * revocation list, the cluster keyring, the verified-record cache and the
 * pending-record area. It is not thread-safe; the protocol core owns it.
 * No call reads a clock: time comes in as now_ms.
 */

struct smc_ctx;

/** Creation parameters for smc_ctx_new(); zero fields take defaults. */
struct smc_ctx_config {
    const struct smc_identity *self; /**< own cert + key; copied (caller may wipe it after) */
    const uint8_t *ca_pk;            /**< SMC_PK_LEN bytes: the cluster CA public key */
    int64_t now_ms;                  /**< wall time used to check the own certificate */
    uint64_t incarnation;            /**< sender incarnation; must grow across restarts
                                          (e.g. start-up wall ms); see smc_ctx_set_incarnation() */
    const uint8_t *seed;             /**< 32 bytes seeding nonces and the cache hash key;
                                          NULL = libsodium RNG. Give one for reproducible runs */
    size_t max_trusted;              /**< trust store capacity (default 65536) */
    size_t cache_slots;              /**< verified-record cache slots (default 4096, pow2) */
    size_t pending_max;              /**< pending records held at most (default 256) */
    size_t pending_max_bytes;        /**< bytes of pending records held at most (default 256 KiB) */
    int64_t pending_ttl_ms;          /**< pending records older than this are dropped (30 s) */
    int accept_plaintext;            /**< with a keyring, still accept unencrypted packets
                                          (for turning encryption on across a live cluster) */
};

/**
 * Create a context. Verifies the own certificate against the CA at
 * cfg->now_ms and adds it to the trust store. SM_EAUTH/SM_ECRYPTO when the
 * own certificate is not valid (message in @p err), SM_EINVAL, SM_ENOMEM.
 */
int smc_ctx_new(const struct smc_ctx_config *cfg, struct smc_ctx **out, char *err,
                size_t errlen) SM_MUST_CHECK;
/** Free a context, wiping every secret in it. NULL is fine. */
void smc_ctx_delete(struct smc_ctx *c);
/** Own node id (borrowed, NUL-terminated); its length in @p len when not NULL. */
const char *smc_ctx_node_id(const struct smc_ctx *c, size_t *len);
/** Own public key (borrowed). */
const uint8_t *smc_ctx_pk(const struct smc_ctx *c);
/** Own encoded certificate (borrowed) and its length. */
const uint8_t *smc_ctx_cert(const struct smc_ctx *c, size_t *len);
/** Set the incarnation stamped on sealed packets (receivers reset the window on a higher one). */
void smc_ctx_set_incarnation(struct smc_ctx *c, uint64_t incarnation);
/** Current sending incarnation. */
uint64_t smc_ctx_incarnation(const struct smc_ctx *c);
/** Counters (borrowed, live). */
const struct smc_stats *smc_ctx_stats(const struct smc_ctx *c);

/** @name Trust store
 * @{ */
/**
 * Verify an encoded certificate (as carried in membership messages) and
 * trust it. Returns 1 when the store changed (new node, or a newer
 * certificate for a known node: later not_before wins), 0 when the
 * certificate was already known or older than the trusted one, and a
 * negative code with @p why set when it was rejected (see smc_cert_verify()).
 * An identical certificate costs no signature check.
 */
int smc_trust_add(struct smc_ctx *c, int64_t now_ms, const uint8_t *cert, size_t len,
                  enum smc_reason *why);
/** smc_trust_add() for an already decoded certificate. */
int smc_trust_add_cert(struct smc_ctx *c, int64_t now_ms, const struct smc_cert *cert,
                       enum smc_reason *why);
/** Forget node @p id (its replay window too). SM_ENOTFOUND when unknown. */
int smc_trust_remove(struct smc_ctx *c, const char *id, size_t len);
/** Copy the trusted certificate of node @p id into @p out. 0 or SM_ENOTFOUND. */
int smc_trust_get(const struct smc_ctx *c, const char *id, size_t len, struct smc_cert *out);
/**
 * The trusted certificate of @p id, encoded (for gossiping it on), or NULL.
 * Borrowed: valid until the next call that changes the trust store
 * (smc_trust_add*, smc_trust_remove, smc_ctx_revoke_*, smc_open with an
 * attached certificate, smc_ctx_delete).
 */
const uint8_t *smc_trust_get_encoded(const struct smc_ctx *c, const char *id, size_t len,
                                     size_t *outlen);
/** Number of trusted nodes (the own node included). */
size_t smc_trust_count(const struct smc_ctx *c);
/** @} */

/** @name Revocation
 * Revoking drops matching trust entries at once and clears the verified-record
 * cache, so records already accepted from a revoked key are not re-accepted.
 * @{ */
int smc_ctx_revoke_id(struct smc_ctx *c, const char *id, size_t len);
int smc_ctx_revoke_fp(struct smc_ctx *c, const uint8_t fp[SMC_FP_LEN]);
/** Load a revocation list file into the context (format: smc_revlist_load()). */
int smc_ctx_load_revlist(struct smc_ctx *c, const char *path, char *err,
                         size_t errlen) SM_MUST_CHECK;
/** @} */

/** @name Cluster keyring (optional XChaCha20-Poly1305 encryption)
 * One primary key encrypts sent packets; up to SMC_KEYRING_MAX keys (primary
 * included) are accepted on receive. Each key has a one-byte id derived from
 * it (smc_cluster_key_id()) that travels in the packet header. With a
 * non-empty keyring every sealed packet is encrypted, and unencrypted packets
 * are refused unless accept_plaintext was set. Rotation: add the new key on
 * every node, make it primary everywhere, then remove the old one.
 * @{ */
#define SMC_KEYRING_MAX 5
/** One-byte key id of a cluster key: first byte of BLAKE2b-256("statemesh-keyid" || key). */
uint8_t smc_cluster_key_id(const uint8_t key[SMC_CLUSTER_KEY_LEN]);
/** Add a key for receiving (copied). SM_ERANGE when full; SM_EEXISTS on a key-id clash. */
int smc_keyring_add(struct smc_ctx *c, const uint8_t key[SMC_CLUSTER_KEY_LEN]);
/** Make @p key the sending key (adding it when absent). */
int smc_keyring_set_primary(struct smc_ctx *c, const uint8_t key[SMC_CLUSTER_KEY_LEN]);
/** Remove (and wipe) a key. SM_ENOTFOUND when absent. Removing the primary leaves none. */
int smc_keyring_remove(struct smc_ctx *c, const uint8_t key[SMC_CLUSTER_KEY_LEN]);
/** Remove every key (encryption off). */
void smc_keyring_clear(struct smc_ctx *c);
/** Number of keys in the ring. */
size_t smc_keyring_count(const struct smc_ctx *c);
/** @} */

#endif /* CRYPTO_CTX_H */
