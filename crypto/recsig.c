/* recsig.c: canonical record bytes, record signatures, the verified-record cache, pending area. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/ctx_int.h"
#include "crypto/recsig.h"

static const char rec_context[SMC_REC_CONTEXT_LEN] = {'s', 't', 'a', 't', 'e', 'm', 'e', 's',
                                                      'h', '-', 'r', 'e', 'c', '-', 'v', '1'};

/* Stack space for canonical bytes (+ signature) of typical records; larger ones use the heap. */
#define CANON_STACK 2048

static int rec_check(const struct crdt_rec_view *r)
{
    if (!r || (r->key_len && !r->key) || (r->value_len && !r->value) || !r->origin)
        return SM_EINVAL;
    if (r->key_len > 0xFFFF || r->value_len > 0xFFFFFFFFu || r->origin_len == 0 ||
        r->origin_len > SMC_MAX_ID)
        return SM_EINVAL;
    return 0;
}

size_t smc_rec_canon_len(const struct crdt_rec_view *r)
{
    return SMC_REC_CANON_LEN(r->key_len, r->value_len, r->origin_len);
}

int smc_rec_canon(const struct crdt_rec_view *r, uint8_t *out, size_t cap, size_t *outlen)
{
    if (rec_check(r) < 0 || !out) return SM_EINVAL;
    size_t need = smc_rec_canon_len(r), off = 0;
    if (cap < need) return SM_ERANGE;
    memcpy(out, rec_context, SMC_REC_CONTEXT_LEN);
    off += SMC_REC_CONTEXT_LEN;
    out[off++] = (uint8_t)(r->key_len >> 8);
    out[off++] = (uint8_t)r->key_len;
    if (r->key_len) memcpy(out + off, r->key, r->key_len);
    off += r->key_len;
    out[off++] = (uint8_t)(r->value_len >> 24);
    out[off++] = (uint8_t)(r->value_len >> 16);
    out[off++] = (uint8_t)(r->value_len >> 8);
    out[off++] = (uint8_t)r->value_len;
    if (r->value_len) memcpy(out + off, r->value, r->value_len);
    off += r->value_len;
    smc__be64(out + off, r->version);
    off += 8;
    smc__be64(out + off, r->hlc);
    off += 8;
    out[off++] = (uint8_t)r->origin_len;
    memcpy(out + off, r->origin, r->origin_len);
    off += r->origin_len;
    out[off++] = r->precedence;
    out[off++] = r->flags & SMC_REC_FLAGS_SIGNED;
    smc__be64(out + off, (uint64_t)r->expires_at);
    off += 8;
    if (outlen) *outlen = off;
    return 0;
}

/* Canonical bytes into @p stack when they fit (with @p extra spare bytes), else the heap. */
static uint8_t *canon_buf(const struct crdt_rec_view *r, uint8_t *stack, size_t extra, size_t *n,
                          int *rc)
{
    size_t need = smc_rec_canon_len(r) + extra;
    uint8_t *buf = need <= CANON_STACK ? stack : malloc(need);
    if (!buf) {
        *rc = SM_ENOMEM;
        return NULL;
    }
    *rc = smc_rec_canon(r, buf, need, n);
    if (*rc < 0) {
        if (buf != stack) free(buf);
        return NULL;
    }
    return buf;
}

static void canon_free(uint8_t *buf, const uint8_t *stack)
{
    if (buf && buf != stack) free(buf);
}

int smc_rec_sign_with(const struct smc_keypair *kp, const struct crdt_rec_view *r,
                      uint8_t sig[SMC_SIG_LEN])
{
    uint8_t stack[CANON_STACK];
    size_t n = 0;
    int rc;
    if (!kp || !sig || rec_check(r) < 0) return SM_EINVAL;
    if (smc_init() < 0) return SM_ECRYPTO;
    uint8_t *buf = canon_buf(r, stack, 0, &n, &rc);
    if (!buf) return rc;
    rc = crypto_sign_detached(sig, NULL, buf, n, kp->sk) == 0 ? 0 : SM_ECRYPTO;
    canon_free(buf, stack);
    return rc;
}

int smc_rec_sign(struct smc_ctx *c, const struct crdt_rec_view *r, uint8_t sig[SMC_SIG_LEN])
{
    if (!c || rec_check(r) < 0) return SM_EINVAL;
    if (r->origin_len != c->self.cert.node_id_len ||
        memcmp(r->origin, c->self.cert.node_id, r->origin_len) != 0) {
        c->st.rejected[SMC_R_NOT_ORIGIN]++;
        return SM_EAUTH;
    }
    int rc = smc_rec_sign_with(&c->self.kp, r, sig);
    if (rc == 0) c->st.rec_signed++;
    return rc;
}

int smc_rec_verify_pk(const uint8_t pk[SMC_PK_LEN], const struct crdt_rec_view *r)
{
    uint8_t stack[CANON_STACK];
    size_t n = 0;
    int rc;
    if (!pk || rec_check(r) < 0) return SM_EINVAL;
    if (!(r->flags & CRDT_F_SIGNED) || !r->sig) return SM_ECRYPTO;
    if (smc_init() < 0) return SM_ECRYPTO;
    uint8_t *buf = canon_buf(r, stack, 0, &n, &rc);
    if (!buf) return rc;
    rc = crypto_sign_verify_detached(r->sig, buf, n, pk) == 0 ? 0 : SM_ECRYPTO;
    canon_free(buf, stack);
    return rc;
}

/* ---- verified-record cache ---- */

/* Keyed 128-bit hash of canonical bytes + signature (buf holds both, n bytes). */
static struct smc_cache_slot rec_tag(const struct smc_ctx *c, const uint8_t *buf, size_t n)
{
    uint8_t h[crypto_shorthash_siphashx24_BYTES];
    struct smc_cache_slot t;
    crypto_shorthash_siphashx24(h, buf, n, c->cache_key);
    memcpy(&t.a, h, 8);
    memcpy(&t.b, h + 8, 8);
    t.b |= 1; /* never the empty marker */
    return t;
}

static int cache_hit(const struct smc_ctx *c, struct smc_cache_slot t)
{
    const struct smc_cache_slot *b = c->cache + (t.a & (c->cache_buckets - 1)) * SMC_CACHE_WAYS;
    for (int i = 0; i < SMC_CACHE_WAYS; i++)
        if (b[i].a == t.a && b[i].b == t.b) return 1;
    return 0;
}

static void cache_put(struct smc_ctx *c, struct smc_cache_slot t)
{
    struct smc_cache_slot *b = c->cache + (t.a & (c->cache_buckets - 1)) * SMC_CACHE_WAYS;
    for (int i = 0; i < SMC_CACHE_WAYS; i++) {
        if (b[i].b == 0) {
            b[i] = t;
            return;
        }
    }
    b[c->cache_rr++ % SMC_CACHE_WAYS] = t;
}

void smc_rec_cache_clear(struct smc_ctx *c)
{
    memset(c->cache, 0, c->cache_buckets * SMC_CACHE_WAYS * sizeof(*c->cache));
}

static int rec_fail(struct smc_ctx *c, enum smc_reason *why, enum smc_reason r, int code)
{
    if (why) *why = r;
    c->st.rejected[r]++;
    return code;
}

int smc_rec_verify(struct smc_ctx *c, int64_t now_ms, const struct crdt_rec_view *r,
                   enum smc_reason *why)
{
    uint8_t stack[CANON_STACK];
    size_t n = 0;
    int rc;

    if (!c) return SM_EINVAL;
    if (rec_check(r) < 0) return rec_fail(c, why, SMC_R_FORMAT, SM_EINVAL);
    if (!(r->flags & CRDT_F_SIGNED) || !r->sig) return rec_fail(c, why, SMC_R_UNSIGNED, SM_ECRYPTO);
    uint8_t *buf = canon_buf(r, stack, SMC_SIG_LEN, &n, &rc);
    if (!buf) return rec_fail(c, why, rc == SM_ENOMEM ? SMC_R_TOO_LARGE : SMC_R_FORMAT, rc);
    memcpy(buf + n, r->sig, SMC_SIG_LEN);
    struct smc_cache_slot t = rec_tag(c, buf, n + SMC_SIG_LEN);
    if (cache_hit(c, t)) {
        c->st.rec_cache_hits++;
        canon_free(buf, stack);
        if (why) *why = SMC_R_OK;
        return 0;
    }
    /* Always the origin's key: whoever relayed the record is irrelevant here. */
    const struct smc_trust_ent *e = smc__trust_find(c, r->origin, r->origin_len);
    if (!e) {
        rc = rec_fail(c, why, SMC_R_UNKNOWN_ORIGIN, SM_ENOTFOUND);
    } else if (now_ms < e->not_before) {
        rc = rec_fail(c, why, SMC_R_NOT_YET_VALID, SM_EAUTH);
    } else if (now_ms > e->not_after) {
        rc = rec_fail(c, why, SMC_R_EXPIRED, SM_EAUTH);
    } else {
        c->st.rec_verified++;
        if (crypto_sign_verify_detached(r->sig, buf, n, e->pk) != 0) {
            rc = rec_fail(c, why, SMC_R_BADSIG, SM_ECRYPTO);
        } else {
            cache_put(c, t);
            if (why) *why = SMC_R_OK;
            rc = 0;
        }
    }
    canon_free(buf, stack);
    return rc;
}

/* ---- pending records ---- */

static struct smc_pend *pend_at(const struct smc_ctx *c, size_t i)
{
    return c->pend[(c->pend_head + i) % c->pend_cap];
}

static void pend_drop_oldest(struct smc_ctx *c)
{
    struct smc_pend *p = c->pend[c->pend_head];
    c->pend[c->pend_head] = NULL;
    c->pend_head = (c->pend_head + 1) % c->pend_cap;
    c->pend_n--;
    c->pend_bytes -= p->bytes;
    free(p);
}

int smc_pending_add(struct smc_ctx *c, int64_t now_ms, const struct crdt_rec_view *r)
{
    uint8_t stack[CANON_STACK];
    size_t n = 0;
    int rc;
    if (!c || rec_check(r) < 0) return SM_EINVAL;
    if (!(r->flags & CRDT_F_SIGNED) || !r->sig) return SM_EINVAL;
    size_t data = r->key_len + r->value_len + r->origin_len + 1; /* +1: NUL after the key */
    size_t bytes = sizeof(struct smc_pend) + data;
    if (bytes > c->pend_max_bytes) return SM_ERANGE;

    uint8_t *buf = canon_buf(r, stack, SMC_SIG_LEN, &n, &rc);
    if (!buf) return rc;
    memcpy(buf + n, r->sig, SMC_SIG_LEN);
    struct smc_cache_slot t = rec_tag(c, buf, n + SMC_SIG_LEN);
    canon_free(buf, stack);
    for (size_t i = 0; i < c->pend_n; i++) {
        const struct smc_pend *q = pend_at(c, i);
        if (q->tag.a == t.a && q->tag.b == t.b) return 0;
    }

    struct smc_pend *p = malloc(bytes);
    if (!p) return SM_ENOMEM;
    memset(p, 0, sizeof(*p));
    p->added_ms = now_ms;
    p->bytes = bytes;
    p->tag = t;
    p->view = *r;
    uint8_t *d = p->data;
    if (r->key_len) memcpy(d, r->key, r->key_len);
    d[r->key_len] = '\0';
    p->view.key = (const char *)d;
    d += r->key_len + 1;
    if (r->value) {
        if (r->value_len) memcpy(d, r->value, r->value_len);
        p->view.value = d;
    }
    d += r->value_len;
    memcpy(d, r->origin, r->origin_len);
    p->view.origin = (const char *)d;
    memcpy(p->sig, r->sig, SMC_SIG_LEN);
    p->view.sig = p->sig;

    while (c->pend_n && (c->pend_n == c->pend_cap || c->pend_bytes + bytes > c->pend_max_bytes)) {
        pend_drop_oldest(c);
        c->st.pending_dropped++;
    }
    c->pend[(c->pend_head + c->pend_n) % c->pend_cap] = p;
    c->pend_n++;
    c->pend_bytes += bytes;
    c->st.pending_added++;
    return 0;
}

int smc_pending_take_for(struct smc_ctx *c, int64_t now_ms, const char *origin, size_t origin_len,
                         smc_pending_fn fn, void *arg)
{
    struct smc_pend *taken = NULL, **tail = &taken;
    size_t keep = 0;
    int delivered = 0;
    if (!c || !origin) return SM_EINVAL;
    /* Unlink first, compacting the ring, so fn may call back into the context. */
    for (size_t i = 0; i < c->pend_n; i++) {
        struct smc_pend *p = pend_at(c, i);
        if (p->view.origin_len == origin_len && memcmp(p->view.origin, origin, origin_len) == 0) {
            c->pend_bytes -= p->bytes;
            p->next = NULL;
            *tail = p;
            tail = &p->next;
        } else {
            c->pend[(c->pend_head + keep++) % c->pend_cap] = p;
        }
    }
    for (size_t i = keep; i < c->pend_n; i++) c->pend[(c->pend_head + i) % c->pend_cap] = NULL;
    c->pend_n = keep;
    while (taken) {
        struct smc_pend *p = taken;
        taken = p->next;
        if (smc_rec_verify(c, now_ms, &p->view, NULL) == 0) {
            c->st.pending_released++;
            delivered++;
            if (fn) fn(&p->view, arg);
        } else {
            c->st.pending_dropped++;
        }
        free(p);
    }
    return delivered;
}

size_t smc_pending_expire(struct smc_ctx *c, int64_t now_ms)
{
    size_t dropped = 0;
    while (c->pend_n && now_ms - c->pend[c->pend_head]->added_ms > c->pend_ttl_ms) {
        pend_drop_oldest(c);
        c->st.pending_dropped++;
        dropped++;
    }
    return dropped;
}

size_t smc_pending_count(const struct smc_ctx *c)
{
    return c->pend_n;
}
