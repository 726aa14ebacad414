/* cert.h: cluster CA, node certificates (binary + file form), revocation lists, identities. */
#ifndef CRYPTO_CERT_H
#define CRYPTO_CERT_H

#include "crypto/keys.h"

/**
 * @file
 * Certificate binary encoding (all integers big-endian), see docs/security.md:
 *
 *     off  size  field
 *     0    1     version tag 0xC1 (also domain-separates cert signatures)
 *     1    1     node id length n (1..64)
 *     2    n     node id
 *     2+n  32    node Ed25519 public key
 *     34+n 8     not_before (int64, ms since the epoch)
 *     42+n 8     not_after  (int64, ms since the epoch)
 *     50+n 8     issuer key id (first 8 bytes of BLAKE2b-256(CA public key))
 *     58+n 64    CA Ed25519 signature over bytes [0, 58+n)
 *
 * Certificate file DIR/ID.cert: "statemesh-cert-v1 <base64(encoding)>\n".
 * CA directory: DIR/ca.key (secret, 0600) and DIR/ca.pub (public).
 * Node files from smc_cert_issue(): DIR/ID.key (secret, 0600), DIR/ID.cert.
 */

#define SMC_CERT_TAG              0xC1
#define SMC_CERT_FIXED_LEN        (2 + SMC_PK_LEN + 8 + 8 + SMC_KEYID_LEN + SMC_SIG_LEN) /**< 122 */
#define SMC_CERT_MAX_LEN          (SMC_CERT_FIXED_LEN + SMC_MAX_ID)                      /**< 186 */
#define SMC_DEFAULT_VALIDITY_DAYS 365

/** A decoded certificate. node_id is NUL-terminated for convenience. */
struct smc_cert {
    char node_id[SMC_MAX_ID + 1];
    size_t node_id_len;
    uint8_t node_pk[SMC_PK_LEN];
    int64_t not_before_ms;
    int64_t not_after_ms;
    uint8_t issuer[SMC_KEYID_LEN];
    uint8_t sig[SMC_SIG_LEN];
};

/** Exact encoded size of @p c (SMC_CERT_FIXED_LEN + node id length). */
size_t smc_cert_encoded_len(const struct smc_cert *c);
/** Encode @p c into @p out. SM_ERANGE when @p cap is too small, SM_EINVAL on a bad node id. */
int smc_cert_encode(const struct smc_cert *c, uint8_t *out, size_t cap, size_t *outlen);
/**
 * Decode a certificate (format only: no signature check). Exactly @p len
 * bytes must be consumed. SM_EPROTO with @p why = FORMAT/VERSION/TRUNCATED.
 */
int smc_cert_decode(const uint8_t *buf, size_t len, struct smc_cert *out,
                    enum smc_reason *why) SM_MUST_CHECK;
/**
 * Fill in issuer and signature of @p c (node_id, node_pk and validity must be
 * set) with the CA key pair @p ca.
 */
int smc_cert_sign(struct smc_cert *c, const struct smc_keypair *ca);

/** A revocation list: node ids and key fingerprints. Opaque. */
struct smc_revlist;
/** New empty list; NULL on OOM. */
struct smc_revlist *smc_revlist_new(void);
/** Free a list (NULL is fine). */
void smc_revlist_delete(struct smc_revlist *rl);
/** Revoke every certificate for node id @p id. */
int smc_revlist_add_id(struct smc_revlist *rl, const char *id, size_t len);
/** Revoke the key with fingerprint @p fp. */
int smc_revlist_add_fp(struct smc_revlist *rl, const uint8_t fp[SMC_FP_LEN]);
/**
 * Load a text revocation list: one entry a line, "id NODE_ID" or
 * "fp HEX64"; blank lines and lines starting with '#' are ignored. A bad line
 * fails with SM_ECONFIG and "path:line: ..." in @p err.
 */
int smc_revlist_load(struct smc_revlist *rl, const char *path, char *err,
                     size_t errlen) SM_MUST_CHECK;
/** Whether @p c is revoked by @p rl (by node id or by key fingerprint). NULL list: no. */
int smc_revlist_contains(const struct smc_revlist *rl, const struct smc_cert *c);

/**
 * Verify @p c against the CA public key @p ca_pk at time @p now_ms.
 * Checks, in order: issuer key id (WRONG_CA), CA signature (BADSIG),
 * not_before (NOT_YET_VALID), not_after (EXPIRED), revocation (REVOKED).
 * Returns 0, or SM_ECRYPTO (WRONG_CA, BADSIG) / SM_EAUTH (time, revoked)
 * with the reason in @p why (may be NULL).
 */
int smc_cert_verify(const struct smc_cert *c, const uint8_t ca_pk[SMC_PK_LEN], int64_t now_ms,
                    const struct smc_revlist *rl, enum smc_reason *why) SM_MUST_CHECK;

/** Write a certificate file (mode 0644, O_EXCL). */
int smc_cert_save(const char *path, const struct smc_cert *c, char *err,
                  size_t errlen) SM_MUST_CHECK;
/** Load a certificate file (format only; verify it with smc_cert_verify()). */
int smc_cert_load(const char *path, struct smc_cert *c, char *err, size_t errlen) SM_MUST_CHECK;

/**
 * `statemesh ca init DIR`: create DIR (mode 0700) if missing and write a
 * fresh CA key pair to DIR/ca.key (0600) and DIR/ca.pub. Refuses (SM_EEXISTS)
 * to overwrite an existing ca.key.
 */
int smc_ca_init(const char *dir, char *err, size_t errlen) SM_MUST_CHECK;
/**
 * `statemesh cert issue --ca DIR --node-id ID --out DIR`: generate a node key
 * pair, sign a certificate valid from now for @p validity_days (0 = default
 * 365) with the CA in @p ca_dir, and write OUT/ID.key (0600) and OUT/ID.cert.
 * OUT is created (0700) when missing. Uses the wall clock.
 */
int smc_cert_issue(const char *ca_dir, const char *node_id, const char *out_dir,
                   unsigned validity_days, char *err, size_t errlen) SM_MUST_CHECK;
/** smc_cert_issue() with an explicit validity window (for tests and tools). */
int smc_cert_issue_at(const char *ca_dir, const char *node_id, const char *out_dir,
                      int64_t not_before_ms, int64_t not_after_ms, char *err,
                      size_t errlen) SM_MUST_CHECK;
/** Load the CA public key from @p path: a directory (reads path/ca.pub) or a ca.pub file. */
int smc_ca_load_pub(const char *path, uint8_t pk[SMC_PK_LEN], char *err,
                    size_t errlen) SM_MUST_CHECK;

/** A node's own identity: its certificate (decoded and encoded) and key pair. */
struct smc_identity {
    struct smc_cert cert;
    uint8_t cert_bytes[SMC_CERT_MAX_LEN];
    size_t cert_len;
    struct smc_keypair kp;
};
/**
 * Load an identity from a certificate file and a secret key file, and check
 * that the key belongs to the certificate (SM_ECONFIG otherwise). Does not
 * check the CA (smc_ctx_new() does). Wipe with smc_identity_wipe().
 */
int smc_identity_load(struct smc_identity *id, const char *cert_path, const char *key_path,
                      char *err, size_t errlen) SM_MUST_CHECK;
/** Build an identity from a certificate and its key pair (copied). SM_EINVAL on mismatch. */
int smc_identity_init(struct smc_identity *id, const struct smc_cert *c,
                      const struct smc_keypair *kp) SM_MUST_CHECK;
/** Wipe an identity (secret key included). */
void smc_identity_wipe(struct smc_identity *id);

#endif /* CRYPTO_CERT_H */
