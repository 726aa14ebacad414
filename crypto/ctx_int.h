/* ctx_int.h: the layout of struct smc_ctx, shared by ctx.c, envelope.c and recsig.c. */
#ifndef CRYPTO_CTX_INT_H
#define CRYPTO_CTX_INT_H

#include "crypto/internal.h"

/** A trusted node: its certificate (encoded, kept for gossiping on) and replay window. */
struct smc_trust_ent {
    uint64_t hash;      /**< hash of the node id (table probing) */
    uint64_t r_inc;     /**< highest incarnation seen */
    uint64_t r_top;     /**< highest sequence seen in r_inc */
    uint64_t r_bits[2]; /**< bit i set: sequence r_top - i was seen (i < 128) */
    int64_t not_before;
    int64_t not_after;
    uint8_t pk[SMC_PK_LEN];
    uint8_t r_valid; /**< a packet from this node was accepted */
    uint8_t id_len;
    uint16_t enc_len;
    uint8_t enc[]; /**< encoded certificate; the node id is enc[2 .. 2+id_len) */
};

static inline const char *smc__ent_id(const struct smc_trust_ent *e)
{
    return (const char *)e->enc + 2;
}

struct smc_key_slot {
    uint8_t key[SMC_CLUSTER_KEY_LEN];
    uint8_t id;
    uint8_t used;
};

/** One verified-record cache slot: a 128-bit keyed hash; {0, 0} is empty. */
struct smc_cache_slot {
    uint64_t a, b;
};
#define SMC_CACHE_WAYS 4

/** A parked record: the view points into data[]. */
struct smc_pend {
    struct smc_pend *next; /**< used while taking */
    int64_t added_ms;
    size_t bytes;
    struct smc_cache_slot tag; /**< identity (same hash as the cache) for de-duplication */
    struct crdt_rec_view view;
    uint8_t sig[SMC_SIG_LEN];
    uint8_t data[]; /**< key, value, origin */
};

struct smc_ctx {
    struct smc_identity self;
    uint8_t ca_pk[SMC_PK_LEN];
    uint64_t incarnation;
    uint8_t nonce_prefix[16];
    uint64_t nonce_ctr;
    uint8_t cache_key[16];

    struct smc_trust_ent **tab; /**< open addressing, linear probing, power-of-two size */
    size_t tab_cap, tab_n, max_trusted;
    struct smc_revlist *rl;

    struct smc_key_slot ring[SMC_KEYRING_MAX];
    int primary; /**< index into ring, -1 = none */
    size_t ring_n;
    int accept_plaintext;

    struct smc_cache_slot *cache;
    size_t cache_buckets; /**< power of two; each bucket has SMC_CACHE_WAYS slots */
    uint32_t cache_rr;

    struct smc_pend **pend; /**< FIFO ring of pend_cap slots */
    size_t pend_head, pend_n, pend_cap, pend_bytes, pend_max_bytes;
    int64_t pend_ttl_ms;

    uint8_t *scratch; /**< decrypted payloads */
    size_t scratch_cap;

    struct smc_stats st;
};

struct smc_trust_ent *smc__trust_find(const struct smc_ctx *c, const char *id, size_t len);
/** Insert or replace the entry for @p cert (keeping a replaced entry's replay window). */
int smc__trust_put(struct smc_ctx *c, const struct smc_cert *cert, struct smc_trust_ent **out);
/** Whether @p e holds exactly the encoded certificate @p enc. */
int smc__trust_same(const struct smc_trust_ent *e, const uint8_t *enc, size_t len);
/** The key slot with id @p id, or NULL. */
const struct smc_key_slot *smc__ring_find(const struct smc_ctx *c, uint8_t id);

#endif /* CRYPTO_CTX_INT_H */
