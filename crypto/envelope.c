/* envelope.c: sealing and opening signed (optionally encrypted) packets, with replay windows. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/ctx_int.h"
#include "crypto/envelope.h"

size_t smc_seal_overhead(const struct smc_ctx *c, unsigned seal_flags)
{
    size_t n = SMC_ENV_OVERHEAD(c->self.cert.node_id_len);
    if (c->ring_n) n += SMC_ENV_ENC_OVERHEAD;
    if (seal_flags & SMC_SEAL_CERT) n += SMC_ENV_CERT_OVERHEAD(c->self.cert_len);
    return n;
}

int smc_seal(struct smc_ctx *c, uint64_t seq, unsigned seal_flags, const uint8_t *payload,
             size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    const struct smc_key_slot *key = NULL;
    size_t idlen, off = 0;
    uint8_t flags = 0;

    if (!c || !out || !outlen || (len && !payload) || (seal_flags & ~SMC_SEAL_CERT))
        return SM_EINVAL;
    if (c->ring_n) {
        /* Keys configured but none to send with: refuse rather than leak plaintext. */
        if (c->primary < 0) return SM_ECONFIG;
        key = &c->ring[c->primary];
        flags |= SMC_ENV_F_ENCRYPTED;
    }
    if (seal_flags & SMC_SEAL_CERT) flags |= SMC_ENV_F_CERT;
    if (cap < smc_seal_overhead(c, seal_flags) || cap - smc_seal_overhead(c, seal_flags) < len)
        return SM_ERANGE;

    idlen = c->self.cert.node_id_len;
    out[off++] = SMC_ENV_TAG;
    out[off++] = flags;
    out[off++] = key ? key->id : 0;
    out[off++] = (uint8_t)idlen;
    memcpy(out + off, c->self.cert.node_id, idlen);
    off += idlen;
    smc__be64(out + off, c->incarnation);
    off += 8;
    smc__be64(out + off, seq);
    off += 8;
    if (flags & SMC_ENV_F_CERT) {
        out[off++] = (uint8_t)(c->self.cert_len >> 8);
        out[off++] = (uint8_t)c->self.cert_len;
        memcpy(out + off, c->self.cert_bytes, c->self.cert_len);
        off += c->self.cert_len;
    }
    if (key) {
        uint8_t *nonce = out + off;
        unsigned long long clen = 0;
        /* Unique per context: a secret per-context prefix and a counter. */
        memcpy(nonce, c->nonce_prefix, sizeof(c->nonce_prefix));
        smc__be64(nonce + sizeof(c->nonce_prefix), c->nonce_ctr++);
        off += SMC_ENV_NONCE_LEN;
        if (crypto_aead_xchacha20poly1305_ietf_encrypt(out + off, &clen, payload, len, out, off,
                                                       NULL, nonce, key->key) != 0)
            return SM_ECRYPTO;
        off += (size_t)clen;
    } else {
        if (len) memmove(out + off, payload, len);
        off += len;
    }
    if (crypto_sign_detached(out + off, NULL, out, off, c->self.kp.sk) != 0) return SM_ECRYPTO;
    off += SMC_SIG_LEN;
    *outlen = off;
    c->st.sealed++;
    return 0;
}

int smc_peek_sender(const uint8_t *pkt, size_t len, const char **id, size_t *idlen)
{
    if (!pkt || len < 4 || pkt[0] != SMC_ENV_TAG || pkt[3] == 0 || pkt[3] > SMC_MAX_ID ||
        len < 4 + (size_t)pkt[3])
        return SM_EPROTO;
    if (id) *id = (const char *)pkt + 4;
    if (idlen) *idlen = pkt[3];
    return 0;
}

/* Would (inc, seq) be accepted by entry @p e's replay window? */
static enum smc_reason replay_check(const struct smc_trust_ent *e, uint64_t inc, uint64_t seq)
{
    if (!e || !e->r_valid || inc > e->r_inc) return SMC_R_OK;
    if (inc < e->r_inc) return SMC_R_OLD_INCARNATION;
    if (seq > e->r_top) return SMC_R_OK;
    uint64_t d = e->r_top - seq;
    if (d >= SMC_REPLAY_WINDOW) return SMC_R_REPLAY;
    if (e->r_bits[d / 64] & ((uint64_t)1 << (d % 64))) return SMC_R_REPLAY;
    return SMC_R_OK;
}

static void replay_commit(struct smc_trust_ent *e, uint64_t inc, uint64_t seq)
{
    if (!e->r_valid || inc > e->r_inc) {
        e->r_valid = 1;
        e->r_inc = inc;
        e->r_top = seq;
        e->r_bits[0] = 1;
        e->r_bits[1] = 0;
        return;
    }
    if (seq > e->r_top) {
        uint64_t s = seq - e->r_top;
        if (s >= SMC_REPLAY_WINDOW) {
            e->r_bits[0] = e->r_bits[1] = 0;
        } else if (s >= 64) {
            e->r_bits[1] = e->r_bits[0] << (s - 64);
            e->r_bits[0] = 0;
        } else {
            e->r_bits[1] = (e->r_bits[1] << s) | (e->r_bits[0] >> (64 - s));
            e->r_bits[0] <<= s;
        }
        e->r_bits[0] |= 1;
        e->r_top = seq;
        return;
    }
    uint64_t d = e->r_top - seq;
    e->r_bits[d / 64] |= (uint64_t)1 << (d % 64);
}

static int reject(struct smc_ctx *c, struct smc_opened *out, enum smc_reason why, int code)
{
    out->why = why;
    c->st.rejected[why]++;
    return code;
}

int smc_open(struct smc_ctx *c, int64_t now_ms, const uint8_t *pkt, size_t len,
             struct smc_opened *out)
{
    struct smc_cert cert;
    const uint8_t *cert_enc = NULL, *pk, *nonce = NULL;
    size_t cert_len = 0, off, body_end;
    int64_t nb, na;
    enum smc_reason r;

    if (!c || !out) return SM_EINVAL;
    memset(out, 0, sizeof(*out));
    if (!pkt) return reject(c, out, SMC_R_TRUNCATED, SM_EPROTO);

    /* 1. Header bounds only: nothing beyond the envelope is looked at. */
    if (len < 4) return reject(c, out, SMC_R_TRUNCATED, SM_EPROTO);
    if (pkt[0] != SMC_ENV_TAG) return reject(c, out, SMC_R_VERSION, SM_EPROTO);
    uint8_t flags = pkt[1];
    if (flags & ~(SMC_ENV_F_ENCRYPTED | SMC_ENV_F_CERT))
        return reject(c, out, SMC_R_FORMAT, SM_EPROTO);
    if (!(flags & SMC_ENV_F_ENCRYPTED) && pkt[2] != 0)
        return reject(c, out, SMC_R_FORMAT, SM_EPROTO);
    size_t idlen = pkt[3];
    if (idlen == 0 || idlen > SMC_MAX_ID) return reject(c, out, SMC_R_FORMAT, SM_EPROTO);
    off = 4 + idlen + 16;
    if (len < off + SMC_SIG_LEN) return reject(c, out, SMC_R_TRUNCATED, SM_EPROTO);
    if (len > 65535) return reject(c, out, SMC_R_TOO_LARGE, SM_EPROTO);
    body_end = len - SMC_SIG_LEN;
    const char *sender = (const char *)pkt + 4;
    uint64_t inc = smc__get_be64(pkt + 4 + idlen);
    uint64_t seq = smc__get_be64(pkt + 12 + idlen);
    if (flags & SMC_ENV_F_CERT) {
        if (body_end < off + 2) return reject(c, out, SMC_R_TRUNCATED, SM_EPROTO);
        cert_len = ((size_t)pkt[off] << 8) | pkt[off + 1];
        off += 2;
        if (cert_len > SMC_CERT_MAX_LEN) return reject(c, out, SMC_R_FORMAT, SM_EPROTO);
        if (body_end < off + cert_len) return reject(c, out, SMC_R_TRUNCATED, SM_EPROTO);
        cert_enc = pkt + off;
        off += cert_len;
    }
    const struct smc_key_slot *key = NULL;
    if (flags & SMC_ENV_F_ENCRYPTED) {
        if (body_end < off + SMC_ENV_NONCE_LEN + SMC_ENV_MAC_LEN)
            return reject(c, out, SMC_R_TRUNCATED, SM_EPROTO);
        nonce = pkt + off;
        off += SMC_ENV_NONCE_LEN;
        /* Cheap policy checks before the signature, to spend no verify on them. */
        if (!c->ring_n) return reject(c, out, SMC_R_ENCRYPTED, SM_EAUTH);
        key = smc__ring_find(c, pkt[2]);
        if (!key) return reject(c, out, SMC_R_NO_KEY, SM_EAUTH);
    } else if (c->ring_n && !c->accept_plaintext) {
        return reject(c, out, SMC_R_PLAINTEXT, SM_EAUTH);
    }

    /* 2. Whose key: the trusted certificate, or one attached and valid. */
    struct smc_trust_ent *e = smc__trust_find(c, sender, idlen);
    int new_cert = 0;
    if (cert_enc && !(e && smc__trust_same(e, cert_enc, cert_len))) {
        int rc = smc_cert_decode(cert_enc, cert_len, &cert, &r);
        if (rc < 0) return reject(c, out, r, rc);
        if (cert.node_id_len != idlen || memcmp(cert.node_id, sender, idlen) != 0)
            return reject(c, out, SMC_R_ID_MISMATCH, SM_EAUTH);
        rc = smc_cert_verify(&cert, c->ca_pk, now_ms, c->rl, &r);
        if (rc < 0) return reject(c, out, r, rc);
        /* A newer certificate for this node replaced this one: re-issuing a
         * certificate is how an operator retires a suspect key, so the old
         * key must not keep speaking for the node at packet level. */
        if (e && e->not_before > cert.not_before_ms)
            return reject(c, out, SMC_R_SUPERSEDED, SM_EAUTH);
        pk = cert.node_pk;
        nb = cert.not_before_ms;
        na = cert.not_after_ms;
        /* trusted once the packet verifies */
        new_cert = 1;
    } else {
        if (!e) return reject(c, out, SMC_R_UNKNOWN_SENDER, SM_EAUTH);
        pk = e->pk;
        nb = e->not_before;
        na = e->not_after;
    }
    if (now_ms < nb) return reject(c, out, SMC_R_NOT_YET_VALID, SM_EAUTH);
    if (now_ms > na) return reject(c, out, SMC_R_EXPIRED, SM_EAUTH);
    if ((r = replay_check(e, inc, seq)) != SMC_R_OK) return reject(c, out, r, SM_EAUTH);

    /* 3. The one signature check. */
    if (crypto_sign_verify_detached(pkt + body_end, pkt, body_end, pk) != 0)
        return reject(c, out, SMC_R_BADSIG, SM_ECRYPTO);

    /* 4. Decrypt (only authentic packets get here). */
    if (key) {
        size_t clen = body_end - off;
        if (c->scratch_cap < clen) {
            uint8_t *p = malloc(clen);
            if (!p) return reject(c, out, SMC_R_TOO_LARGE, SM_ENOMEM);
            if (c->scratch) {
                sodium_memzero(c->scratch, c->scratch_cap);
                free(c->scratch);
            }
            c->scratch = p;
            c->scratch_cap = clen;
        }
        unsigned long long mlen = 0;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(c->scratch, &mlen, NULL, pkt + off, clen,
                                                       pkt, off, nonce, key->key) != 0)
            return reject(c, out, SMC_R_DECRYPT, SM_ECRYPTO);
        out->payload = c->scratch;
        out->payload_len = (size_t)mlen;
    } else {
        out->payload = pkt + off;
        out->payload_len = body_end - off;
    }

    /* 5. Commit: trust the attached certificate, advance the window. */
    if (new_cert) {
        int rc = smc__trust_put(c, &cert, &e);
        if (rc < 0) {
            out->payload = NULL;
            out->payload_len = 0;
            return reject(c, out, SMC_R_UNKNOWN_SENDER, rc);
        }
        out->cert_added = 1;
    }
    if (e) replay_commit(e, inc, seq);
    out->sender = sender;
    out->sender_len = idlen;
    out->incarnation = inc;
    out->seq = seq;
    out->flags = flags;
    out->why = SMC_R_OK;
    c->st.opened++;
    return 0;
}
