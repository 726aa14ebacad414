/* keys.h: Ed25519 key pairs, fingerprints, node ids and the key/public-key/cluster-key files. */
#ifndef CRYPTO_KEYS_H
#define CRYPTO_KEYS_H

#include "crypto/smc.h"

/**
 * @file
 * File formats (one text line each, documented in docs/security.md):
 *
 *     secret key  (0600): "statemesh-ed25519-secret-v1 <base64(32-byte seed)>\n"
 *     public key  (0644): "statemesh-ed25519-public-v1 <base64(32-byte public key)>\n"
 *     cluster key (0600): "statemesh-cluster-key-v1 <base64(32-byte key)>\n"
 *
 * Secret files are created with O_CREAT|O_EXCL and mode 0600 (an existing file
 * is never overwritten). Loading a secret file that is readable or writable by
 * group or others fails with SM_ECONFIG and a message naming the mode.
 */

/** An Ed25519 key pair. Wipe with smc_keypair_wipe() when done. */
struct smc_keypair {
    uint8_t pk[SMC_PK_LEN];
    uint8_t sk[SMC_SK_LEN];
};

/** Derive a key pair from a 32-byte seed (deterministic; for tests and key files). */
int smc_keypair_from_seed(struct smc_keypair *kp, const uint8_t seed[SMC_SEED_LEN]);
/** Generate a fresh random key pair (libsodium's RNG). */
int smc_keypair_generate(struct smc_keypair *kp);
/** Wipe a key pair (sodium_memzero). NULL is fine. */
void smc_keypair_wipe(struct smc_keypair *kp);

/** Fingerprint of a public key: BLAKE2b-256(pk). */
void smc_fingerprint(const uint8_t pk[SMC_PK_LEN], uint8_t fp[SMC_FP_LEN]);
/** Fingerprint as 64 lowercase hex digits plus NUL. */
void smc_fingerprint_hex(const uint8_t pk[SMC_PK_LEN], char out[2 * SMC_FP_LEN + 1]);
/** Short key id: the first SMC_KEYID_LEN bytes of the fingerprint. */
void smc_key_id(const uint8_t pk[SMC_PK_LEN], uint8_t id[SMC_KEYID_LEN]);

/**
 * Whether @p id (length @p len) is a valid node id: 1..SMC_MAX_ID bytes of
 * [A-Za-z0-9._:@-], not starting with '.'. Ids end up in file names
 * (DIR/ID.cert) and log lines, hence the restricted alphabet.
 */
int smc_node_id_valid(const char *id, size_t len);

/**
 * Write the secret key file @p path (seed of @p kp) with O_EXCL and mode 0600.
 * SM_EEXISTS when the file exists, SM_EIO otherwise; @p err gets a message.
 */
int smc_key_save(const char *path, const struct smc_keypair *kp, char *err,
                 size_t errlen) SM_MUST_CHECK;
/**
 * Load a secret key file. SM_ECONFIG when its permissions are looser than
 * 0600 or the format is bad, SM_EIO when it cannot be read. The read buffer
 * and the seed are wiped before returning.
 */
int smc_key_load(const char *path, struct smc_keypair *kp, char *err, size_t errlen) SM_MUST_CHECK;
/** Write a public key file (mode 0644, O_EXCL). */
int smc_pub_save(const char *path, const uint8_t pk[SMC_PK_LEN], char *err,
                 size_t errlen) SM_MUST_CHECK;
/** Load a public key file. SM_ECONFIG on a bad format, SM_EIO when unreadable. */
int smc_pub_load(const char *path, uint8_t pk[SMC_PK_LEN], char *err, size_t errlen) SM_MUST_CHECK;

/** Generate a random cluster key (XChaCha20-Poly1305). */
void smc_cluster_key_generate(uint8_t key[SMC_CLUSTER_KEY_LEN]);
/** Write a cluster key file (mode 0600, O_EXCL). */
int smc_cluster_key_save(const char *path, const uint8_t key[SMC_CLUSTER_KEY_LEN], char *err,
                         size_t errlen) SM_MUST_CHECK;
/** Load a cluster key file; same permission rule as smc_key_load(). */
int smc_cluster_key_load(const char *path, uint8_t key[SMC_CLUSTER_KEY_LEN], char *err,
                         size_t errlen) SM_MUST_CHECK;

#endif /* CRYPTO_KEYS_H */
