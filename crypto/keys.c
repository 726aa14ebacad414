/* keys.c: Ed25519 key pairs, fingerprints, node id rules and the key files. */
#include "config.h"

#include <string.h>

#include <sodium.h>

#include "crypto/internal.h"

#define TAG_SECRET  "statemesh-ed25519-secret-v1"
#define TAG_PUBLIC  "statemesh-ed25519-public-v1"
#define TAG_CLUSTER "statemesh-cluster-key-v1"

int smc_keypair_from_seed(struct smc_keypair *kp, const uint8_t seed[SMC_SEED_LEN])
{
    if (!kp || !seed) return SM_EINVAL;
    if (smc_init() < 0) return SM_ECRYPTO;
    if (crypto_sign_seed_keypair(kp->pk, kp->sk, seed) != 0) return SM_ECRYPTO;
    return 0;
}

int smc_keypair_generate(struct smc_keypair *kp)
{
    uint8_t seed[SMC_SEED_LEN];
    if (!kp) return SM_EINVAL;
    if (smc_init() < 0) return SM_ECRYPTO;
    randombytes_buf(seed, sizeof(seed));
    int rc = smc_keypair_from_seed(kp, seed);
    sodium_memzero(seed, sizeof(seed));
    return rc;
}

void smc_keypair_wipe(struct smc_keypair *kp)
{
    if (kp) sodium_memzero(kp, sizeof(*kp));
}

void smc_fingerprint(const uint8_t pk[SMC_PK_LEN], uint8_t fp[SMC_FP_LEN])
{
    crypto_generichash(fp, SMC_FP_LEN, pk, SMC_PK_LEN, NULL, 0);
}

void smc_fingerprint_hex(const uint8_t pk[SMC_PK_LEN], char out[2 * SMC_FP_LEN + 1])
{
    uint8_t fp[SMC_FP_LEN];
    smc_fingerprint(pk, fp);
    sodium_bin2hex(out, 2 * SMC_FP_LEN + 1, fp, sizeof(fp));
}

void smc_key_id(const uint8_t pk[SMC_PK_LEN], uint8_t id[SMC_KEYID_LEN])
{
    uint8_t fp[SMC_FP_LEN];
    smc_fingerprint(pk, fp);
    memcpy(id, fp, SMC_KEYID_LEN);
}

int smc_node_id_valid(const char *id, size_t len)
{
    if (!id || len == 0 || len > SMC_MAX_ID || id[0] == '.') return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)id[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '.' || ch == '_' || ch == '-' || ch == ':' || ch == '@')
            continue;
        return 0;
    }
    return 1;
}

int smc_key_save(const char *path, const struct smc_keypair *kp, char *err, size_t errlen)
{
    uint8_t seed[SMC_SEED_LEN];
    if (!path || !kp) return smc__err(err, errlen, SM_EINVAL, "no path or key");
    if (smc_init() < 0) return smc__err(err, errlen, SM_ECRYPTO, "libsodium failed to start");
    crypto_sign_ed25519_sk_to_seed(seed, kp->sk);
    int rc = smc__write_b64_file(path, 0600, TAG_SECRET, seed, sizeof(seed), err, errlen);
    sodium_memzero(seed, sizeof(seed));
    return rc;
}

int smc_key_load(const char *path, struct smc_keypair *kp, char *err, size_t errlen)
{
    uint8_t seed[SMC_SEED_LEN];
    if (!path || !kp) return smc__err(err, errlen, SM_EINVAL, "no path or key");
    int rc = smc__read_b64_file(path, 1, TAG_SECRET, seed, sizeof(seed), 1, NULL, err, errlen);
    if (rc == 0 && smc_keypair_from_seed(kp, seed) != 0)
        rc = smc__err(err, errlen, SM_ECRYPTO, "%s: cannot derive the key pair", path);
    sodium_memzero(seed, sizeof(seed));
    return rc;
}

int smc_pub_save(const char *path, const uint8_t pk[SMC_PK_LEN], char *err, size_t errlen)
{
    if (!path || !pk) return smc__err(err, errlen, SM_EINVAL, "no path or key");
    return smc__write_b64_file(path, 0644, TAG_PUBLIC, pk, SMC_PK_LEN, err, errlen);
}

int smc_pub_load(const char *path, uint8_t pk[SMC_PK_LEN], char *err, size_t errlen)
{
    if (!path || !pk) return smc__err(err, errlen, SM_EINVAL, "no path or key");
    return smc__read_b64_file(path, 0, TAG_PUBLIC, pk, SMC_PK_LEN, 1, NULL, err, errlen);
}

void smc_cluster_key_generate(uint8_t key[SMC_CLUSTER_KEY_LEN])
{
    /* randombytes works even if sodium_init() failed; it only sets up the fast paths. */
    if (smc_init() < 0) {
    }
    crypto_aead_xchacha20poly1305_ietf_keygen(key);
}

int smc_cluster_key_save(const char *path, const uint8_t key[SMC_CLUSTER_KEY_LEN], char *err,
                         size_t errlen)
{
    if (!path || !key) return smc__err(err, errlen, SM_EINVAL, "no path or key");
    return smc__write_b64_file(path, 0600, TAG_CLUSTER, key, SMC_CLUSTER_KEY_LEN, err, errlen);
}

int smc_cluster_key_load(const char *path, uint8_t key[SMC_CLUSTER_KEY_LEN], char *err,
                         size_t errlen)
{
    if (!path || !key) return smc__err(err, errlen, SM_EINVAL, "no path or key");
    return smc__read_b64_file(path, 1, TAG_CLUSTER, key, SMC_CLUSTER_KEY_LEN, 1, NULL, err, errlen);
}
