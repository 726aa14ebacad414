/* ctx.c: the per-node crypto context: identity, trust store, revocations and keyring. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <xxhash.h>

#include "crypto/ctx_int.h"

#define DEFAULT_MAX_TRUSTED    65536
#define DEFAULT_CACHE_SLOTS    4096
#define DEFAULT_PENDING_MAX    256
#define DEFAULT_PENDING_BYTES  (256 * 1024)
#define DEFAULT_PENDING_TTL_MS 30000

static size_t pow2_at_least(size_t n)
{
    size_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

/* Derive a per-context value from the seed, the own key and the incarnation, so that
 * nodes given the same seed (a simulation) still pick different nonces. */
static void derive(uint8_t *out, size_t outlen, const char *label, const uint8_t seed[32],
                   const uint8_t pk[SMC_PK_LEN], uint64_t incarnation)
{
    crypto_generichash_state st;
    uint8_t inc[8];
    smc__be64(inc, incarnation);
    crypto_generichash_init(&st, NULL, 0, outlen);
    crypto_generichash_update(&st, (const uint8_t *)label, strlen(label));
    crypto_generichash_update(&st, seed, 32);
    crypto_generichash_update(&st, pk, SMC_PK_LEN);
    crypto_generichash_update(&st, inc, sizeof(inc));
    crypto_generichash_final(&st, out, outlen);
    sodium_memzero(&st, sizeof(st));
}

int smc_ctx_new(const struct smc_ctx_config *cfg, struct smc_ctx **out, char *err, size_t errlen)
{
    struct smc_ctx *c = NULL;
    uint8_t seed[32];
    enum smc_reason why;
    int rc;

    if (!cfg || !out || !cfg->self || !cfg->ca_pk)
        return smc__err(err, errlen, SM_EINVAL, "crypto context needs an identity and a CA key");
    *out = NULL;
    if (smc_init() < 0) return smc__err(err, errlen, SM_ECRYPTO, "libsodium failed to start");
    rc = smc_cert_verify(&cfg->self->cert, cfg->ca_pk, cfg->now_ms, NULL, &why);
    if (rc < 0)
        return smc__err(err, errlen, rc, "own certificate for node %s: %s", cfg->self->cert.node_id,
                        smc_reason_str(why));
    if (sodium_memcmp(cfg->self->cert.node_pk, cfg->self->kp.pk, SMC_PK_LEN) != 0)
        return smc__err(err, errlen, SM_EINVAL, "own key does not match own certificate");

    c = calloc(1, sizeof(*c));
    if (!c) return smc__err(err, errlen, SM_ENOMEM, "out of memory");
    c->self = *cfg->self;
    memcpy(c->ca_pk, cfg->ca_pk, SMC_PK_LEN);
    c->incarnation = cfg->incarnation;
    c->primary = -1;
    c->accept_plaintext = cfg->accept_plaintext;
    c->max_trusted = cfg->max_trusted ? cfg->max_trusted : DEFAULT_MAX_TRUSTED;
    c->pend_cap = cfg->pending_max ? cfg->pending_max : DEFAULT_PENDING_MAX;
    c->pend_max_bytes = cfg->pending_max_bytes ? cfg->pending_max_bytes : DEFAULT_PENDING_BYTES;
    c->pend_ttl_ms = cfg->pending_ttl_ms > 0 ? cfg->pending_ttl_ms : DEFAULT_PENDING_TTL_MS;

    if (cfg->seed)
        memcpy(seed, cfg->seed, sizeof(seed));
    else
        randombytes_buf(seed, sizeof(seed));
    derive(c->nonce_prefix, sizeof(c->nonce_prefix), "statemesh-nonce", seed, c->self.kp.pk,
           c->incarnation);
    derive(c->cache_key, sizeof(c->cache_key), "statemesh-cache", seed, c->self.kp.pk,
           c->incarnation);
    sodium_memzero(seed, sizeof(seed));

    size_t slots = cfg->cache_slots ? cfg->cache_slots : DEFAULT_CACHE_SLOTS;
    c->cache_buckets = pow2_at_least((slots + SMC_CACHE_WAYS - 1) / SMC_CACHE_WAYS);
    c->cache = calloc(c->cache_buckets * SMC_CACHE_WAYS, sizeof(*c->cache));
    c->pend = calloc(c->pend_cap, sizeof(*c->pend));
    c->rl = smc_revlist_new();
    c->tab_cap = 16;
    c->tab = calloc(c->tab_cap, sizeof(*c->tab));
    if (!c->cache || !c->pend || !c->rl || !c->tab) {
        rc = smc__err(err, errlen, SM_ENOMEM, "out of memory");
        goto err;
    }
    if ((rc = smc__trust_put(c, &c->self.cert, NULL)) < 0) {
        smc__err(err, errlen, rc, "%s",
                 rc == SM_ENOMEM ? "out of memory" : "cannot add the own certificate");
        goto err;
    }
    *out = c;
    return 0;
err:
    smc_ctx_delete(c);
    return rc;
}

void smc_ctx_delete(struct smc_ctx *c)
{
    if (!c) return;
    if (c->tab) {
        for (size_t i = 0; i < c->tab_cap; i++) free(c->tab[i]);
        free(c->tab);
    }
    if (c->pend) {
        for (size_t i = 0; i < c->pend_n; i++) {
            struct smc_pend *p = c->pend[(c->pend_head + i) % c->pend_cap];
            free(p);
        }
        free(c->pend);
    }
    free(c->cache);
    smc_revlist_delete(c->rl);
    if (c->scratch) {
        /* Decrypted payloads are cluster-private. */
        sodium_memzero(c->scratch, c->scratch_cap);
        free(c->scratch);
    }
    sodium_memzero(c, sizeof(*c));
    free(c);
}

const char *smc_ctx_node_id(const struct smc_ctx *c, size_t *len)
{
    if (len) *len = c->self.cert.node_id_len;
    return c->self.cert.node_id;
}

const uint8_t *smc_ctx_pk(const struct smc_ctx *c)
{
    return c->self.kp.pk;
}

const uint8_t *smc_ctx_cert(const struct smc_ctx *c, size_t *len)
{
    if (len) *len = c->self.cert_len;
    return c->self.cert_bytes;
}

void smc_ctx_set_incarnation(struct smc_ctx *c, uint64_t incarnation)
{
    c->incarnation = incarnation;
}

uint64_t smc_ctx_incarnation(const struct smc_ctx *c)
{
    return c->incarnation;
}

const struct smc_stats *smc_ctx_stats(const struct smc_ctx *c)
{
    return &c->st;
}

/* ---- trust store: open addressing with linear probing and backward-shift deletion ---- */

static uint64_t id_hash(const char *id, size_t len)
{
    return XXH3_64bits(id, len);
}

static size_t trust_slot(const struct smc_ctx *c, const char *id, size_t len, uint64_t h)
{
    size_t mask = c->tab_cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const struct smc_trust_ent *e = c->tab[i];
        if (!e) return i;
        if (e->hash == h && e->id_len == len && memcmp(smc__ent_id(e), id, len) == 0) return i;
    }
}

struct smc_trust_ent *smc__trust_find(const struct smc_ctx *c, const char *id, size_t len)
{
    if (len == 0 || len > SMC_MAX_ID) return NULL;
    return c->tab[trust_slot(c, id, len, id_hash(id, len))];
}

static int trust_grow(struct smc_ctx *c)
{
    size_t ncap = c->tab_cap * 2;
    struct smc_trust_ent **nt = calloc(ncap, sizeof(*nt));
    if (!nt) return SM_ENOMEM;
    for (size_t i = 0; i < c->tab_cap; i++) {
        struct smc_trust_ent *e = c->tab[i];
        if (!e) continue;
        size_t j = (size_t)e->hash & (ncap - 1);
        while (nt[j]) j = (j + 1) & (ncap - 1);
        nt[j] = e;
    }
    free(c->tab);
    c->tab = nt;
    c->tab_cap = ncap;
    return 0;
}

static void trust_delete_slot(struct smc_ctx *c, size_t i)
{
    size_t mask = c->tab_cap - 1;
    free(c->tab[i]);
    c->tab[i] = NULL;
    c->tab_n--;
    /* Backward shift: move later entries of the run up if their home allows it. */
    for (size_t j = (i + 1) & mask; c->tab[j]; j = (j + 1) & mask) {
        size_t home = (size_t)c->tab[j]->hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            c->tab[i] = c->tab[j];
            c->tab[j] = NULL;
            i = j;
        }
    }
}

int smc__trust_same(const struct smc_trust_ent *e, const uint8_t *enc, size_t len)
{
    return e->enc_len == len && memcmp(e->enc, enc, len) == 0;
}

int smc__trust_put(struct smc_ctx *c, const struct smc_cert *cert, struct smc_trust_ent **out)
{
    size_t enc_len = smc_cert_encoded_len(cert);
    struct smc_trust_ent *e = malloc(sizeof(*e) + enc_len);
    if (!e) return SM_ENOMEM;
    memset(e, 0, sizeof(*e));
    if (smc_cert_encode(cert, e->enc, enc_len, NULL) != 0) {
        free(e);
        return SM_EINVAL;
    }
    e->enc_len = (uint16_t)enc_len;
    e->id_len = (uint8_t)cert->node_id_len;
    e->hash = id_hash(cert->node_id, cert->node_id_len);
    e->not_before = cert->not_before_ms;
    e->not_after = cert->not_after_ms;
    memcpy(e->pk, cert->node_pk, SMC_PK_LEN);

    size_t i = trust_slot(c, cert->node_id, cert->node_id_len, e->hash);
    struct smc_trust_ent *old = c->tab[i];
    if (old) {
        /* Same node, new certificate: the replay window belongs to the node. */
        e->r_inc = old->r_inc;
        e->r_top = old->r_top;
        e->r_bits[0] = old->r_bits[0];
        e->r_bits[1] = old->r_bits[1];
        e->r_valid = old->r_valid;
        free(old);
        c->tab[i] = e;
    } else {
        if (c->tab_n >= c->max_trusted) {
            free(e);
            return SM_ERANGE;
        }
        if ((c->tab_n + 1) * 10 > c->tab_cap * 7) {
            if (trust_grow(c) < 0) {
                free(e);
                return SM_ENOMEM;
            }
            i = trust_slot(c, cert->node_id, cert->node_id_len, e->hash);
        }
        c->tab[i] = e;
        c->tab_n++;
    }
    c->st.certs_added++;
    if (out) *out = e;
    return 0;
}

int smc_trust_add_cert(struct smc_ctx *c, int64_t now_ms, const struct smc_cert *cert,
                       enum smc_reason *why)
{
    enum smc_reason r = SMC_R_OK;
    int rc;
    if (!c || !cert) return SM_EINVAL;
    struct smc_trust_ent *e = smc__trust_find(c, cert->node_id, cert->node_id_len);
    if (e) {
        uint8_t enc[SMC_CERT_MAX_LEN];
        size_t n = 0;
        if (smc_cert_encode(cert, enc, sizeof(enc), &n) == 0 && smc__trust_same(e, enc, n)) {
            if (why) *why = SMC_R_OK;
            return 0;
        }
    }
    rc = smc_cert_verify(cert, c->ca_pk, now_ms, c->rl, &r);
    if (why) *why = r;
    if (rc < 0) {
        c->st.rejected[r]++;
        return rc;
    }
    /* Keep the newer of two valid certificates for one node (a re-issue wins). */
    if (e && e->not_before > cert->not_before_ms) return 0;
    rc = smc__trust_put(c, cert, NULL);
    return rc < 0 ? rc : 1;
}

int smc_trust_add(struct smc_ctx *c, int64_t now_ms, const uint8_t *cert, size_t len,
                  enum smc_reason *why)
{
    struct smc_cert dc;
    enum smc_reason r = SMC_R_OK;
    if (!c || !cert) return SM_EINVAL;
    if (len >= 2 && len <= SMC_CERT_MAX_LEN && cert[1] >= 1 && cert[1] <= SMC_MAX_ID) {
        /* The common case: a certificate we already hold costs no signature check. */
        const struct smc_trust_ent *e = smc__trust_find(c, (const char *)cert + 2, cert[1]);
        if (e && smc__trust_same(e, cert, len)) {
            if (why) *why = SMC_R_OK;
            return 0;
        }
    }
    int rc = smc_cert_decode(cert, len, &dc, &r);
    if (rc < 0) {
        if (why) *why = r;
        c->st.rejected[r]++;
        return rc;
    }
    return smc_trust_add_cert(c, now_ms, &dc, why);
}

int smc_trust_remove(struct smc_ctx *c, const char *id, size_t len)
{
    if (!c || !id || len == 0 || len > SMC_MAX_ID) return SM_EINVAL;
    size_t i = trust_slot(c, id, len, id_hash(id, len));
    if (!c->tab[i]) return SM_ENOTFOUND;
    trust_delete_slot(c, i);
    return 0;
}

int smc_trust_get(const struct smc_ctx *c, const char *id, size_t len, struct smc_cert *out)
{
    const struct smc_trust_ent *e = smc__trust_find(c, id, len);
    if (!e) return SM_ENOTFOUND;
    if (out && smc_cert_decode(e->enc, e->enc_len, out, NULL) != 0) return SM_EPROTO;
    return 0;
}

const uint8_t *smc_trust_get_encoded(const struct smc_ctx *c, const char *id, size_t len,
                                     size_t *outlen)
{
    const struct smc_trust_ent *e = smc__trust_find(c, id, len);
    if (!e) return NULL;
    if (outlen) *outlen = e->enc_len;
    return e->enc;
}

size_t smc_trust_count(const struct smc_ctx *c)
{
    return c->tab_n;
}

/* ---- revocation ---- */

/* Drop every trust entry the list now revokes, and forget cached verdicts. */
static void revoke_sweep(struct smc_ctx *c)
{
    for (size_t i = 0; i < c->tab_cap;) {
        struct smc_trust_ent *e = c->tab[i];
        struct smc_cert dc;
        if (e && smc_cert_decode(e->enc, e->enc_len, &dc, NULL) == 0 &&
            smc_revlist_contains(c->rl, &dc)) {
            trust_delete_slot(c, i); /* may pull a later entry into slot i: look again */
            continue;
        }
        i++;
    }
    smc_rec_cache_clear(c);
}

int smc_ctx_revoke_id(struct smc_ctx *c, const char *id, size_t len)
{
    if (!c) return SM_EINVAL;
    int rc = smc_revlist_add_id(c->rl, id, len);
    if (rc == 0) revoke_sweep(c);
    return rc;
}

int smc_ctx_revoke_fp(struct smc_ctx *c, const uint8_t fp[SMC_FP_LEN])
{
    if (!c) return SM_EINVAL;
    int rc = smc_revlist_add_fp(c->rl, fp);
    if (rc == 0) revoke_sweep(c);
    return rc;
}

int smc_ctx_load_revlist(struct smc_ctx *c, const char *path, char *err, size_t errlen)
{
    if (!c) return smc__err(err, errlen, SM_EINVAL, "no context");
    int rc = smc_revlist_load(c->rl, path, err, errlen);
    revoke_sweep(c); /* also for a partly loaded list: what was read is revoked */
    return rc;
}

/* ---- keyring ---- */

uint8_t smc_cluster_key_id(const uint8_t key[SMC_CLUSTER_KEY_LEN])
{
    static const char label[] = "statemesh-keyid";
    crypto_generichash_state st;
    uint8_t h[32];
    crypto_generichash_init(&st, NULL, 0, sizeof(h));
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof(label) - 1);
    crypto_generichash_update(&st, key, SMC_CLUSTER_KEY_LEN);
    crypto_generichash_final(&st, h, sizeof(h));
    sodium_memzero(&st, sizeof(st));
    return h[0];
}

const struct smc_key_slot *smc__ring_find(const struct smc_ctx *c, uint8_t id)
{
    for (int i = 0; i < SMC_KEYRING_MAX; i++)
        if (c->ring[i].used && c->ring[i].id == id) return &c->ring[i];
    return NULL;
}

static int ring_index(const struct smc_ctx *c, const uint8_t key[SMC_CLUSTER_KEY_LEN])
{
    for (int i = 0; i < SMC_KEYRING_MAX; i++)
        if (c->ring[i].used && sodium_memcmp(c->ring[i].key, key, SMC_CLUSTER_KEY_LEN) == 0)
            return i;
    return -1;
}

int smc_keyring_add(struct smc_ctx *c, const uint8_t key[SMC_CLUSTER_KEY_LEN])
{
    if (!c || !key) return SM_EINVAL;
    if (ring_index(c, key) >= 0) return 0;
    uint8_t id = smc_cluster_key_id(key);
    if (smc__ring_find(c, id)) return SM_EEXISTS;
    for (int i = 0; i < SMC_KEYRING_MAX; i++) {
        if (c->ring[i].used) continue;
        memcpy(c->ring[i].key, key, SMC_CLUSTER_KEY_LEN);
        c->ring[i].id = id;
        c->ring[i].used = 1;
        c->ring_n++;
        return 0;
    }
    return SM_ERANGE;
}

int smc_keyring_set_primary(struct smc_ctx *c, const uint8_t key[SMC_CLUSTER_KEY_LEN])
{
    int rc = smc_keyring_add(c, key);
    if (rc < 0) return rc;
    c->primary = ring_index(c, key);
    return 0;
}

int smc_keyring_remove(struct smc_ctx *c, const uint8_t key[SMC_CLUSTER_KEY_LEN])
{
    if (!c || !key) return SM_EINVAL;
    int i = ring_index(c, key);
    if (i < 0) return SM_ENOTFOUND;
    sodium_memzero(&c->ring[i], sizeof(c->ring[i]));
    c->ring_n--;
    if (c->primary == i) c->primary = -1;
    return 0;
}

void smc_keyring_clear(struct smc_ctx *c)
{
    sodium_memzero(c->ring, sizeof(c->ring));
    c->ring_n = 0;
    c->primary = -1;
}

size_t smc_keyring_count(const struct smc_ctx *c)
{
    return c->ring_n;
}
