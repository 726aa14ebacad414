/* wire.c: gossip wire codec: msgpack-c packer for encoding, a bounded zero-copy reader for
 * decoding. */
#include "config.h"

#include <string.h>

#include <msgpack.h>

#include "statemesh.h"
#include "gossip/wire.h"

/* ------------------------------------------------------------------------ */
/* Encoding. msgpack-c's packer writes through a callback; ours appends to the
 * caller's buffer and fails once it would overflow, so a message that does not
 * fit is detected and rolled back (len restored) by the adder. */

static int enc_write(void *data, const char *buf, size_t len)
{
    struct gossip_enc *e = data;
    if (e->overflow || len > e->cap - e->len) {
        e->overflow = true;
        return -1;
    }
    memcpy(e->buf + e->len, buf, len);
    e->len += len;
    return 0;
}

#define ENC_PK(e, pk) msgpack_packer pk = {.data = (e), .callback = enc_write}

static int enc_bin(msgpack_packer *pk, const void *p, size_t n)
{
    if (msgpack_pack_bin(pk, n) != 0) return -1;
    return n ? msgpack_pack_bin_body(pk, p, n) : 0;
}

static int enc_addr(msgpack_packer *pk, const struct sm_addr *a)
{
    return enc_bin(pk, a->b, a->len > SM_ADDR_MAX ? SM_ADDR_MAX : a->len);
}

/* Common prologue/epilogue of every adder: refuse when the message limit is
 * reached, remember where we started, roll back on overflow. */
static int enc_start(struct gossip_enc *e, size_t *mark)
{
    if (e->n_msgs >= GOSSIP_MAX_MSGS) return SM_ERANGE;
    *mark = e->len;
    e->overflow = false;
    return 0;
}

static int enc_end(struct gossip_enc *e, size_t mark, int rc)
{
    if (rc != 0 || e->overflow) {
        e->len = mark;
        e->overflow = false;
        return SM_ERANGE;
    }
    e->n_msgs++;
    return 0;
}

int gossip_enc_begin(struct gossip_enc *e, uint8_t *buf, size_t cap, const char *sender,
                     size_t sender_len, uint64_t inc)
{
    memset(e, 0, sizeof(*e));
    e->buf = buf;
    e->cap = cap;
    ENC_PK(e, pk);
    int rc = msgpack_pack_array(&pk, 4);
    rc |= msgpack_pack_uint32(&pk, GOSSIP_WIRE_VERSION);
    rc |= enc_bin(&pk, sender, sender_len);
    rc |= msgpack_pack_uint64(&pk, inc);
    if (rc || e->overflow || e->cap - e->len < 5) return SM_ERANGE;
    /* array32 header, count patched by gossip_enc_finish() */
    e->count_pos = e->len;
    e->buf[e->len++] = 0xdd;
    memset(e->buf + e->len, 0, 4);
    e->len += 4;
    return 0;
}

size_t gossip_enc_finish(struct gossip_enc *e)
{
    uint8_t *p = e->buf + e->count_pos + 1;
    p[0] = (uint8_t)(e->n_msgs >> 24);
    p[1] = (uint8_t)(e->n_msgs >> 16);
    p[2] = (uint8_t)(e->n_msgs >> 8);
    p[3] = (uint8_t)e->n_msgs;
    return e->len;
}

int gossip_enc_probe(struct gossip_enc *e, enum gossip_msg_type type, uint32_t seq,
                     const char *target, size_t target_len, const struct sm_addr *target_addr)
{
    size_t mark;
    if (enc_start(e, &mark)) return SM_ERANGE;
    ENC_PK(e, pk);
    int rc;
    switch (type) {
    case GOSSIP_PING:
        rc = msgpack_pack_array(&pk, 3) | msgpack_pack_uint8(&pk, (uint8_t)type) |
             msgpack_pack_uint32(&pk, seq) | enc_bin(&pk, target, target_len);
        break;
    case GOSSIP_ACK:
    case GOSSIP_NACK:
        rc = msgpack_pack_array(&pk, 2) | msgpack_pack_uint8(&pk, (uint8_t)type) |
             msgpack_pack_uint32(&pk, seq);
        break;
    case GOSSIP_PING_REQ:
        rc = msgpack_pack_array(&pk, 4) | msgpack_pack_uint8(&pk, (uint8_t)type) |
             msgpack_pack_uint32(&pk, seq) | enc_bin(&pk, target, target_len) |
             enc_addr(&pk, target_addr);
        break;
    default:
        rc = -1;
    }
    return enc_end(e, mark, rc);
}

int gossip_enc_alive(struct gossip_enc *e, const char *id, size_t id_len, uint64_t inc,
                     const struct sm_addr *addr, const uint8_t *cert, size_t cert_len)
{
    size_t mark;
    if (enc_start(e, &mark)) return SM_ERANGE;
    ENC_PK(e, pk);
    int rc = msgpack_pack_array(&pk, 5) | msgpack_pack_uint8(&pk, GOSSIP_ALIVE) |
             enc_bin(&pk, id, id_len) | msgpack_pack_uint64(&pk, inc) | enc_addr(&pk, addr);
    rc |= cert ? enc_bin(&pk, cert, cert_len) : msgpack_pack_nil(&pk);
    return enc_end(e, mark, rc);
}

int gossip_enc_member(struct gossip_enc *e, enum gossip_msg_type type, const char *id,
                      size_t id_len, uint64_t inc, const char *from, size_t from_len)
{
    size_t mark;
    if (enc_start(e, &mark)) return SM_ERANGE;
    ENC_PK(e, pk);
    int rc;
    if (type == GOSSIP_LEAVE)
        rc = msgpack_pack_array(&pk, 3) | msgpack_pack_uint8(&pk, GOSSIP_LEAVE) |
             enc_bin(&pk, id, id_len) | msgpack_pack_uint64(&pk, inc);
    else if (type == GOSSIP_SUSPECT || type == GOSSIP_DEAD)
        rc = msgpack_pack_array(&pk, 4) | msgpack_pack_uint8(&pk, (uint8_t)type) |
             enc_bin(&pk, id, id_len) | msgpack_pack_uint64(&pk, inc) |
             enc_bin(&pk, from, from_len);
    else
        rc = -1;
    return enc_end(e, mark, rc);
}

/* Padding: a bin of zeros written in place (no scratch buffer). */
static int enc_pad(struct gossip_enc *e, msgpack_packer *pk, size_t pad)
{
    if (msgpack_pack_bin(pk, pad) != 0) return -1;
    if (pad > e->cap - e->len) {
        e->overflow = true;
        return -1;
    }
    memset(e->buf + e->len, 0, pad);
    e->len += pad;
    return 0;
}

int gossip_enc_join(struct gossip_enc *e, const struct sm_addr *addr, const uint8_t *cert,
                    size_t cert_len, size_t pad)
{
    size_t mark;
    if (enc_start(e, &mark)) return SM_ERANGE;
    ENC_PK(e, pk);
    int rc =
        msgpack_pack_array(&pk, 4) | msgpack_pack_uint8(&pk, GOSSIP_JOIN) | enc_addr(&pk, addr);
    rc |= cert ? enc_bin(&pk, cert, cert_len) : msgpack_pack_nil(&pk);
    if (!rc) rc = enc_pad(e, &pk, pad);
    return enc_end(e, mark, rc);
}

int gossip_enc_sync(struct gossip_enc *e, enum gossip_msg_type type, uint32_t cursor, size_t pad)
{
    size_t mark;
    if (enc_start(e, &mark)) return SM_ERANGE;
    ENC_PK(e, pk);
    int rc;
    if (type == GOSSIP_SYNC_REQ) {
        rc = msgpack_pack_array(&pk, 3) | msgpack_pack_uint8(&pk, GOSSIP_SYNC_REQ) |
             msgpack_pack_uint32(&pk, cursor);
        if (!rc) rc = enc_pad(e, &pk, pad);
    } else if (type == GOSSIP_SYNC_PAGE) {
        rc = msgpack_pack_array(&pk, 3) | msgpack_pack_uint8(&pk, GOSSIP_SYNC_PAGE) |
             msgpack_pack_uint32(&pk, cursor) |
             (pad ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk));
    } else {
        rc = -1;
    }
    return enc_end(e, mark, rc);
}

int gossip_enc_rec(struct gossip_enc *e, enum gossip_rec_kind kind, uint8_t round,
                   const struct crdt_rec_view *r)
{
    size_t mark;
    if (enc_start(e, &mark)) return SM_ERANGE;
    ENC_PK(e, pk);
    int rc = msgpack_pack_array(&pk, 12) | msgpack_pack_uint8(&pk, GOSSIP_REC) |
             msgpack_pack_uint8(&pk, (uint8_t)kind) | msgpack_pack_uint8(&pk, round) |
             enc_bin(&pk, r->key, r->key_len);
    rc |= r->value ? enc_bin(&pk, r->value, r->value_len) : msgpack_pack_nil(&pk);
    rc |= msgpack_pack_uint64(&pk, r->version) | msgpack_pack_uint64(&pk, r->hlc) |
          enc_bin(&pk, r->origin, r->origin_len) | msgpack_pack_uint8(&pk, r->precedence) |
          msgpack_pack_uint8(&pk, r->flags) | msgpack_pack_int64(&pk, r->expires_at);
    rc |= (r->flags & CRDT_F_SIGNED) && r->sig ? enc_bin(&pk, r->sig, CRDT_SIG_LEN)
                                               : msgpack_pack_nil(&pk);
    return enc_end(e, mark, rc);
}

static size_t bin_size(size_t n)
{
    return n < 256 ? 2 + n : n < 65536 ? 3 + n : 5 + n;
}

static size_t uint_size(uint64_t v)
{
    return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v < 4294967296ull ? 5 : 9;
}

static size_t int_size(int64_t v)
{
    if (v >= 0) return uint_size((uint64_t)v);
    return v >= -32 ? 1 : v >= -128 ? 2 : v >= -32768 ? 3 : v >= -2147483648ll ? 5 : 9;
}

size_t gossip_rec_size(const struct crdt_rec_view *r)
{
    size_t n = 1 + 1 + 1 + 2 + bin_size(r->key_len);
    n += r->value ? bin_size(r->value_len) : 1;
    n += uint_size(r->version) + uint_size(r->hlc) + bin_size(r->origin_len);
    n += uint_size(r->precedence) + uint_size(r->flags) + int_size(r->expires_at);
    n += (r->flags & CRDT_F_SIGNED) && r->sig ? bin_size(CRDT_SIG_LEN) : 1;
    return n;
}

int gossip_enc_ids(struct gossip_enc *e, enum gossip_msg_type type, uint32_t index, uint64_t root,
                   const uint64_t *ids, size_t n, size_t *written)
{
    size_t mark;
    if (written) *written = 0;
    if (enc_start(e, &mark)) return SM_ERANGE;
    ENC_PK(e, pk);
    int rc;
    unsigned fields;
    switch (type) {
    case GOSSIP_IHAVE:
    case GOSSIP_DIGEST_LEAVES:
    case GOSSIP_LEAF_IDS:
    case GOSSIP_WANT:
    case GOSSIP_DIGEST:
        fields = 3;
        break;
    case GOSSIP_GRAFT:
        fields = 2;
        break;
    default:
        return enc_end(e, mark, -1);
    }
    rc = msgpack_pack_array(&pk, fields) | msgpack_pack_uint8(&pk, (uint8_t)type);
    if (fields == 3)
        rc |= type == GOSSIP_DIGEST ? msgpack_pack_uint64(&pk, root)
                                    : msgpack_pack_uint32(&pk, index);
    if (rc || e->overflow) return enc_end(e, mark, -1);
    /* as many ids as fit (the bin header size depends on the count) */
    size_t room = e->cap - e->len, fit = n;
    while (fit > 0 && bin_size(8 * fit) > room) {
        size_t need = bin_size(8 * fit) - room;
        size_t drop = (need + 7) / 8;
        fit = drop >= fit ? 0 : fit - drop;
    }
    if (fit == 0 && n > 0) return enc_end(e, mark, -1);
    /* a digest and a group of leaf digests are all-or-nothing: the decoder
     * rejects partial ones */
    if ((type == GOSSIP_DIGEST || type == GOSSIP_DIGEST_LEAVES) && fit != n)
        return enc_end(e, mark, -1);
    if (msgpack_pack_bin(&pk, 8 * fit) != 0) return enc_end(e, mark, -1);
    uint8_t *p = e->buf + e->len;
    for (size_t i = 0; i < fit; i++, p += 8) {
        uint64_t v = ids[i];
        for (int b = 7; b >= 0; b--) {
            p[b] = (uint8_t)v;
            v >>= 8;
        }
    }
    e->len += 8 * fit;
    if (written) *written = fit;
    return enc_end(e, mark, 0);
}

int gossip_enc_prune(struct gossip_enc *e, bool disconnect)
{
    size_t mark;
    if (enc_start(e, &mark)) return SM_ERANGE;
    ENC_PK(e, pk);
    int rc = msgpack_pack_array(&pk, 2) | msgpack_pack_uint8(&pk, GOSSIP_PRUNE);
    rc |= disconnect ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    return enc_end(e, mark, rc);
}

int gossip_enc_whois(struct gossip_enc *e, const char *id, size_t id_len)
{
    if (!id_len || id_len > CRDT_MAX_ORIGIN) return SM_EINVAL;
    size_t mark;
    if (enc_start(e, &mark)) return SM_ERANGE;
    ENC_PK(e, pk);
    int rc = msgpack_pack_array(&pk, 2) | msgpack_pack_uint8(&pk, GOSSIP_WHOIS) |
             enc_bin(&pk, id, id_len);
    return enc_end(e, mark, rc);
}

int gossip_enc_in_sync(struct gossip_enc *e, uint64_t root)
{
    size_t mark;
    if (enc_start(e, &mark)) return SM_ERANGE;
    ENC_PK(e, pk);
    int rc = msgpack_pack_array(&pk, 2) | msgpack_pack_uint8(&pk, GOSSIP_IN_SYNC) |
             msgpack_pack_uint64(&pk, root);
    return enc_end(e, mark, rc);
}

/* ------------------------------------------------------------------------ */
/* Decoding: a cursor that checks every length against the end of the buffer
 * before touching a byte. No recursion except the bounded skip of unknown
 * trailing fields (iterative, with a pending-items counter). */

struct rd {
    const uint8_t *p, *end;
    int err; /* first error (enum gossip_decode_err) */
};

static int rd_fail(struct rd *r, int err)
{
    if (!r->err) r->err = err;
    return -1;
}

static int rd_need(struct rd *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) return rd_fail(r, GOSSIP_DEC_TRUNCATED);
    return 0;
}

static uint64_t be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

static int rd_uint(struct rd *r, uint64_t *v)
{
    if (rd_need(r, 1)) return -1;
    uint8_t c = *r->p;
    unsigned n;
    if (c <= 0x7f) {
        *v = c;
        r->p++;
        return 0;
    }
    switch (c) {
    case 0xcc:
        n = 1;
        break;
    case 0xcd:
        n = 2;
        break;
    case 0xce:
        n = 4;
        break;
    case 0xcf:
        n = 8;
        break;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        /* a non-negative signed int is accepted as uint */
        n = 1u << (c - 0xd0);
        if (rd_need(r, 1 + n)) return -1;
        uint64_t x = be(r->p + 1, n);
        if (x >> (8 * n - 1) & 1) return rd_fail(r, GOSSIP_DEC_FORMAT);
        *v = x;
        r->p += 1 + n;
        return 0;
    }
    default:
        return rd_fail(r, GOSSIP_DEC_FORMAT);
    }
    if (rd_need(r, 1 + n)) return -1;
    *v = be(r->p + 1, n);
    r->p += 1 + n;
    return 0;
}

static int rd_int(struct rd *r, int64_t *v)
{
    if (rd_need(r, 1)) return -1;
    uint8_t c = *r->p;
    if (c >= 0xe0) {
        *v = (int8_t)c;
        r->p++;
        return 0;
    }
    if (c >= 0xd0 && c <= 0xd3) {
        unsigned n = 1u << (c - 0xd0);
        if (rd_need(r, 1 + n)) return -1;
        uint64_t x = be(r->p + 1, n);
        if (n < 8 && (x >> (8 * n - 1) & 1)) x |= ~0ull << (8 * n); /* sign-extend */
        *v = (int64_t)x;
        r->p += 1 + n;
        return 0;
    }
    uint64_t u;
    if (rd_uint(r, &u)) return -1;
    if (u > INT64_MAX) return rd_fail(r, GOSSIP_DEC_FORMAT);
    *v = (int64_t)u;
    return 0;
}

static int rd_u32(struct rd *r, uint32_t *v, uint64_t max)
{
    uint64_t x;
    if (rd_uint(r, &x)) return -1;
    if (x > max) return rd_fail(r, GOSSIP_DEC_FORMAT);
    *v = (uint32_t)x;
    return 0;
}

static int rd_array(struct rd *r, uint32_t *n)
{
    if (rd_need(r, 1)) return -1;
    uint8_t c = *r->p;
    if ((c & 0xf0) == 0x90) {
        *n = c & 0x0f;
        r->p++;
        return 0;
    }
    unsigned w = c == 0xdc ? 2 : c == 0xdd ? 4 : 0;
    if (!w) return rd_fail(r, GOSSIP_DEC_FORMAT);
    if (rd_need(r, 1 + w)) return -1;
    *n = (uint32_t)be(r->p + 1, w);
    r->p += 1 + w;
    return 0;
}

static bool rd_nil(struct rd *r)
{
    if (r->p < r->end && *r->p == 0xc0) {
        r->p++;
        return true;
    }
    return false;
}

/* bin (or str, accepted for ids/keys written by other encoders) */
static int rd_bin(struct rd *r, const uint8_t **b, size_t *len)
{
    if (rd_need(r, 1)) return -1;
    uint8_t c = *r->p;
    size_t hdr, n;
    if ((c & 0xe0) == 0xa0) {
        hdr = 1;
        n = c & 0x1f;
    } else {
        unsigned w;
        switch (c) {
        case 0xc4:
        case 0xd9:
            w = 1;
            break;
        case 0xc5:
        case 0xda:
            w = 2;
            break;
        case 0xc6:
        case 0xdb:
            w = 4;
            break;
        default:
            return rd_fail(r, GOSSIP_DEC_FORMAT);
        }
        if (rd_need(r, 1 + w)) return -1;
        hdr = 1 + w;
        n = (size_t)be(r->p + 1, w);
    }
    if (rd_need(r, hdr) || (size_t)(r->end - r->p - hdr) < n)
        return rd_fail(r, GOSSIP_DEC_TRUNCATED);
    *b = r->p + hdr;
    *len = n;
    r->p += hdr + n;
    return 0;
}

static int rd_bool(struct rd *r, bool *v)
{
    if (rd_need(r, 1)) return -1;
    if (*r->p == 0xc2 || *r->p == 0xc3) {
        *v = *r->p == 0xc3;
        r->p++;
        return 0;
    }
    uint64_t u;
    if (rd_uint(r, &u)) return -1;
    *v = u != 0;
    return 0;
}

/* Skip one object of any type; nesting handled with a counter of items still
 * to skip, so hostile nesting costs no stack. */
static int rd_skip(struct rd *r)
{
    uint64_t pending = 1;
    while (pending) {
        if (rd_need(r, 1)) return -1;
        uint8_t c = *r->p;
        uint64_t add = 0;
        size_t n = 0;
        pending--;
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            n = 1;
        } else if ((c & 0xf0) == 0x80) {
            n = 1, add = 2ull * (c & 0x0f);
        } else if ((c & 0xf0) == 0x90) {
            n = 1, add = c & 0x0f;
        } else if ((c & 0xe0) == 0xa0) {
            n = 1 + (size_t)(c & 0x1f);
        } else {
            switch (c) {
            case 0xc4:
            case 0xd9:
                if (rd_need(r, 2)) return -1;
                n = 2 + r->p[1];
                break;
            case 0xc5:
            case 0xda:
                if (rd_need(r, 3)) return -1;
                n = 3 + (size_t)be(r->p + 1, 2);
                break;
            case 0xc6:
            case 0xdb:
                if (rd_need(r, 5)) return -1;
                n = 5 + (size_t)be(r->p + 1, 4);
                break;
            case 0xc7:
                if (rd_need(r, 2)) return -1;
                n = 3 + r->p[1];
                break;
            case 0xc8:
                if (rd_need(r, 3)) return -1;
                n = 4 + (size_t)be(r->p + 1, 2);
                break;
            case 0xc9:
                if (rd_need(r, 5)) return -1;
                n = 6 + (size_t)be(r->p + 1, 4);
                break;
            case 0xca:
                n = 5;
                break;
            case 0xcb:
                n = 9;
                break;
            case 0xcc:
            case 0xd0:
                n = 2;
                break;
            case 0xcd:
            case 0xd1:
                n = 3;
                break;
            case 0xce:
            case 0xd2:
                n = 5;
                break;
            case 0xcf:
            case 0xd3:
                n = 9;
                break;
            case 0xd4:
                n = 3;
                break;
            case 0xd5:
                n = 4;
                break;
            case 0xd6:
                n = 6;
                break;
            case 0xd7:
                n = 10;
                break;
            case 0xd8:
                n = 18;
                break;
            case 0xdc:
                if (rd_need(r, 3)) return -1;
                n = 3, add = be(r->p + 1, 2);
                break;
            case 0xdd:
                if (rd_need(r, 5)) return -1;
                n = 5, add = be(r->p + 1, 4);
                break;
            case 0xde:
                if (rd_need(r, 3)) return -1;
                n = 3, add = 2 * be(r->p + 1, 2);
                break;
            case 0xdf:
                if (rd_need(r, 5)) return -1;
                n = 5, add = 2 * be(r->p + 1, 4);
                break;
            default:
                return rd_fail(r, GOSSIP_DEC_FORMAT); /* 0xc1 never used */
            }
        }
        if (rd_need(r, n)) return -1;
        r->p += n;
        /* every item takes at least one byte: more pending than bytes left is a lie */
        if (add > (uint64_t)(r->end - r->p)) return rd_fail(r, GOSSIP_DEC_TRUNCATED);
        pending += add;
    }
    return 0;
}

static int rd_id(struct rd *r, const char **id, size_t *len, bool allow_empty)
{
    const uint8_t *b;
    if (rd_bin(r, &b, len)) return -1;
    if ((!allow_empty && *len == 0) || *len > CRDT_MAX_ORIGIN) return rd_fail(r, GOSSIP_DEC_FORMAT);
    *id = (const char *)b;
    return 0;
}

static int rd_addr(struct rd *r, struct sm_addr *a)
{
    const uint8_t *b;
    size_t n;
    if (rd_bin(r, &b, &n)) return -1;
    if (n > SM_ADDR_MAX) return rd_fail(r, GOSSIP_DEC_FORMAT);
    memset(a, 0, sizeof(*a));
    a->len = (uint8_t)n;
    memcpy(a->b, b, n);
    return 0;
}

static int rd_opt_bin(struct rd *r, const uint8_t **b, size_t *len)
{
    if (rd_nil(r)) {
        *b = NULL;
        *len = 0;
        return 0;
    }
    return rd_bin(r, b, len);
}

static int rd_ids(struct rd *r, const uint8_t **ids, size_t *n)
{
    size_t len;
    if (rd_bin(r, ids, &len)) return -1;
    if (len % 8) return rd_fail(r, GOSSIP_DEC_FORMAT);
    *n = len / 8;
    return 0;
}

static int rd_u8(struct rd *r, uint8_t *v)
{
    uint32_t x;
    if (rd_u32(r, &x, 255)) return -1;
    *v = (uint8_t)x;
    return 0;
}

/* One message body; @p nf is the number of fields after the type. */
static int rd_msg(struct rd *r, struct gossip_msg *m, uint32_t nf)
{
    uint32_t need;
    switch (m->type) {
    case GOSSIP_PING:
        need = 2;
        break;
    case GOSSIP_ACK:
    case GOSSIP_NACK:
        need = 1;
        break;
    case GOSSIP_PING_REQ:
        need = 3;
        break;
    case GOSSIP_ALIVE:
        need = 4;
        break;
    case GOSSIP_SUSPECT:
    case GOSSIP_DEAD:
        need = 3;
        break;
    case GOSSIP_LEAVE:
        need = 2;
        break;
    case GOSSIP_JOIN:
        need = 2;
        break;
    case GOSSIP_SYNC_REQ:
    case GOSSIP_SYNC_PAGE:
        need = 1;
        break;
    case GOSSIP_REC:
        need = 11;
        break;
    case GOSSIP_IHAVE:
        need = 2;
        break;
    case GOSSIP_GRAFT:
        need = 1;
        break;
    case GOSSIP_WANT:
        need = 2;
        break;
    case GOSSIP_PRUNE:
        need = 1;
        break;
    case GOSSIP_DIGEST:
        need = 2;
        break;
    case GOSSIP_DIGEST_LEAVES:
    case GOSSIP_LEAF_IDS:
        need = 2;
        break;
    case GOSSIP_IN_SYNC:
    case GOSSIP_WHOIS:
        need = 1;
        break;
    default:
        return rd_fail(r, GOSSIP_DEC_FORMAT);
    }
    if (nf < need) return rd_fail(r, GOSSIP_DEC_FORMAT);
    int rc = 0;
    switch (m->type) {
    case GOSSIP_PING:
    case GOSSIP_ACK:
    case GOSSIP_NACK:
    case GOSSIP_PING_REQ: {
        rc = rd_u32(r, &m->u.probe.seq, UINT32_MAX);
        m->u.probe.target = NULL;
        m->u.probe.target_len = 0;
        memset(&m->u.probe.target_addr, 0, sizeof(m->u.probe.target_addr));
        if (!rc && (m->type == GOSSIP_PING || m->type == GOSSIP_PING_REQ))
            rc = rd_id(r, &m->u.probe.target, &m->u.probe.target_len, m->type == GOSSIP_PING);
        if (!rc && m->type == GOSSIP_PING_REQ) {
            if (m->u.probe.target_len == 0) return rd_fail(r, GOSSIP_DEC_FORMAT);
            rc = rd_addr(r, &m->u.probe.target_addr);
        }
        break;
    }
    case GOSSIP_ALIVE:
    case GOSSIP_SUSPECT:
    case GOSSIP_DEAD:
    case GOSSIP_LEAVE:
        memset(&m->u.member, 0, sizeof(m->u.member));
        rc = rd_id(r, &m->u.member.id, &m->u.member.id_len, false);
        if (!rc) rc = rd_uint(r, &m->u.member.inc);
        if (!rc && m->type == GOSSIP_ALIVE) {
            rc = rd_addr(r, &m->u.member.addr);
            if (!rc) rc = rd_opt_bin(r, &m->u.member.cert, &m->u.member.cert_len);
        } else if (!rc && m->type != GOSSIP_LEAVE) {
            rc = rd_id(r, &m->u.member.from, &m->u.member.from_len, false);
        }
        break;
    case GOSSIP_JOIN:
        memset(&m->u.join, 0, sizeof(m->u.join));
        rc = rd_addr(r, &m->u.join.addr);
        if (!rc) rc = rd_opt_bin(r, &m->u.join.cert, &m->u.join.cert_len);
        break;
    case GOSSIP_SYNC_REQ:
    case GOSSIP_SYNC_PAGE:
        memset(&m->u.join, 0, sizeof(m->u.join));
        rc = rd_u32(r, &m->u.join.cursor, UINT32_MAX);
        /* pages from senders without the flag count as rooted */
        m->u.join.rooted = true;
        if (!rc && m->type == GOSSIP_SYNC_PAGE && nf >= 2) {
            rc = rd_bool(r, &m->u.join.rooted);
            need = 2;
        }
        break;
    case GOSSIP_REC: {
        struct crdt_rec_view *v = &m->u.rec.v;
        const uint8_t *b;
        size_t n;
        memset(v, 0, sizeof(*v));
        rc = rd_u8(r, &m->u.rec.kind);
        if (!rc) rc = rd_u8(r, &m->u.rec.round);
        if (!rc) rc = rd_bin(r, &b, &n);
        if (!rc && (n == 0 || n > GOSSIP_MAX_KEY)) return rd_fail(r, GOSSIP_DEC_FORMAT);
        if (rc) break;
        v->key = (const char *)b;
        v->key_len = n;
        rc = rd_opt_bin(r, &v->value, &v->value_len);
        if (!rc) rc = rd_uint(r, &v->version);
        if (!rc) rc = rd_uint(r, &v->hlc);
        if (!rc) rc = rd_id(r, &v->origin, &v->origin_len, false);
        if (!rc) rc = rd_u8(r, &v->precedence);
        if (!rc) rc = rd_u8(r, &v->flags);
        if (!rc) rc = rd_int(r, &v->expires_at);
        if (!rc) rc = rd_opt_bin(r, &b, &n);
        if (rc) break;
        if (b && n != CRDT_SIG_LEN) return rd_fail(r, GOSSIP_DEC_FORMAT);
        v->sig = b;
        /* the signed flag is a claim about the sig field: keep them consistent */
        if (b)
            v->flags |= CRDT_F_SIGNED;
        else
            v->flags &= (uint8_t)~CRDT_F_SIGNED;
        break;
    }
    case GOSSIP_IHAVE:
    case GOSSIP_DIGEST_LEAVES:
    case GOSSIP_LEAF_IDS:
    case GOSSIP_WANT:
        memset(&m->u.ids, 0, sizeof(m->u.ids));
        rc = rd_u32(r, &m->u.ids.index, m->type == GOSSIP_IHAVE ? 255 : 65535);
        m->u.ids.round = (uint8_t)m->u.ids.index;
        if (!rc) rc = rd_ids(r, &m->u.ids.ids, &m->u.ids.n_ids);
        if (!rc && m->type == GOSSIP_DIGEST_LEAVES &&
            (m->u.ids.index >= GOSSIP_GROUPS || m->u.ids.n_ids != GOSSIP_GROUP_LEAVES))
            return rd_fail(r, GOSSIP_DEC_FORMAT);
        if (!rc && (m->type == GOSSIP_LEAF_IDS || m->type == GOSSIP_WANT) &&
            m->u.ids.index >= GOSSIP_LEAVES)
            return rd_fail(r, GOSSIP_DEC_FORMAT);
        break;
    case GOSSIP_GRAFT:
        memset(&m->u.ids, 0, sizeof(m->u.ids));
        rc = rd_ids(r, &m->u.ids.ids, &m->u.ids.n_ids);
        break;
    case GOSSIP_PRUNE:
        memset(&m->u.ids, 0, sizeof(m->u.ids));
        rc = rd_bool(r, &m->u.ids.disconnect);
        break;
    case GOSSIP_DIGEST:
        memset(&m->u.ids, 0, sizeof(m->u.ids));
        rc = rd_uint(r, &m->u.ids.root);
        if (!rc) rc = rd_ids(r, &m->u.ids.ids, &m->u.ids.n_ids);
        if (!rc && m->u.ids.n_ids != GOSSIP_GROUPS) return rd_fail(r, GOSSIP_DEC_FORMAT);
        break;
    case GOSSIP_IN_SYNC:
        memset(&m->u.ids, 0, sizeof(m->u.ids));
        rc = rd_uint(r, &m->u.ids.root);
        break;
    case GOSSIP_WHOIS:
        memset(&m->u.member, 0, sizeof(m->u.member));
        rc = rd_id(r, &m->u.member.id, &m->u.member.id_len, false);
        break;
    }
    if (rc) return -1;
    /* newer senders may append fields: skip them */
    for (uint32_t i = need; i < nf; i++)
        if (rd_skip(r)) return -1;
    return 0;
}

enum gossip_decode_err gossip_decode(const uint8_t *buf, size_t len, struct gossip_packet *out)
{
    struct rd r = {.p = buf, .end = buf + len, .err = 0};
    uint32_t n, nmsgs;
    uint64_t ver;
    const uint8_t *b;
    size_t blen;

    out->n_msgs = 0;
    out->n_unknown = 0;
    if (!buf) return GOSSIP_DEC_TRUNCATED;
    if (rd_array(&r, &n)) goto err;
    if (n < 4) {
        rd_fail(&r, GOSSIP_DEC_FORMAT);
        goto err;
    }
    if (rd_uint(&r, &ver)) goto err;
    if (ver == 0 || ver > GOSSIP_WIRE_VERSION) return GOSSIP_DEC_VERSION;
    out->version = (unsigned)ver;
    if (rd_bin(&r, &b, &blen)) goto err;
    if (blen == 0 || blen > CRDT_MAX_ORIGIN) {
        rd_fail(&r, GOSSIP_DEC_FORMAT);
        goto err;
    }
    out->sender = (const char *)b;
    out->sender_len = blen;
    if (rd_uint(&r, &out->sender_inc)) goto err;
    if (rd_array(&r, &nmsgs)) goto err;
    if (nmsgs > GOSSIP_MAX_MSGS) return GOSSIP_DEC_TOO_MANY;
    for (uint32_t i = 0; i < nmsgs; i++) {
        uint32_t nf;
        uint64_t type;
        if (rd_array(&r, &nf)) goto err;
        if (nf < 1) {
            rd_fail(&r, GOSSIP_DEC_FORMAT);
            goto err;
        }
        if (rd_uint(&r, &type)) goto err;
        if (type < 1 || type > GOSSIP_MSG__MAX) {
            for (uint32_t k = 1; k < nf; k++)
                if (rd_skip(&r)) goto err;
            out->n_unknown++;
            continue;
        }
        struct gossip_msg *m = &out->msgs[out->n_msgs];
        m->type = (enum gossip_msg_type)type;
        if (rd_msg(&r, m, nf - 1)) goto err;
        out->n_msgs++;
    }
    for (uint32_t k = 4; k < n; k++)
        if (rd_skip(&r)) goto err;
    if (r.p != r.end) return GOSSIP_DEC_FORMAT;
    return GOSSIP_DEC_OK;
err:
    return r.err ? (enum gossip_decode_err)r.err : GOSSIP_DEC_FORMAT;
}

const char *gossip_msg_name(unsigned type)
{
    static const char *const names[] = {
        "?",      "ping",          "ack",      "nack",      "ping_req", "alive", "suspect", "dead",
        "leave",  "join",          "sync_req", "sync_page", "rec",      "ihave", "graft",   "prune",
        "digest", "digest_leaves", "leaf_ids", "want",      "in_sync",  "whois"};
    return type <= GOSSIP_MSG__MAX ? names[type] : "?";
}
