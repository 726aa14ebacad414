/* mpread.c: bounded msgpack reader; every length is checked against the buffer
 * before use, so hostile input can only make a call fail, never overread. */
#include "config.h"

#include "crdt/mpread.h"

#include <string.h>

#include "statemesh.h"

static uint64_t be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* 0 when at least @p n bytes are left, else -1. */
static int need(const struct crdt_mp *m, size_t n)
{
    return crdt_mp_left(m) >= n ? 0 : -1;
}

static int container(struct crdt_mp *m, uint32_t *n, uint8_t fix, uint8_t c16, uint8_t c32)
{
    if (need(m, 1)) return SM_EINVAL;
    uint8_t t = m->p[0];
    if ((t & 0xf0) == fix) {
        *n = t & 0x0f;
        m->p += 1;
    } else if (t == c16) {
        if (need(m, 3)) return SM_EINVAL;
        *n = (uint32_t)be(m->p + 1, 2);
        m->p += 3;
    } else if (t == c32) {
        if (need(m, 5)) return SM_EINVAL;
        *n = (uint32_t)be(m->p + 1, 4);
        m->p += 5;
    } else {
        return SM_EINVAL;
    }
    return 0;
}

int crdt_mp_map(struct crdt_mp *m, uint32_t *n)
{
    return container(m, n, 0x80, 0xde, 0xdf);
}

int crdt_mp_array(struct crdt_mp *m, uint32_t *n)
{
    return container(m, n, 0x90, 0xdc, 0xdd);
}

int crdt_mp_str(struct crdt_mp *m, const char **s, uint32_t *len)
{
    if (need(m, 1)) return SM_EINVAL;
    uint8_t t = m->p[0];
    size_t hdr, n;
    if ((t & 0xe0) == 0xa0) {
        hdr = 1;
        n = t & 0x1f;
    } else if (t == 0xd9 || t == 0xda || t == 0xdb) {
        unsigned w = t == 0xd9 ? 1 : t == 0xda ? 2 : 4;
        if (need(m, 1 + w)) return SM_EINVAL;
        hdr = 1 + w;
        n = (size_t)be(m->p + 1, w);
    } else {
        return SM_EINVAL;
    }
    if (crdt_mp_left(m) - hdr < n) return SM_EINVAL;
    *s = (const char *)m->p + hdr;
    *len = (uint32_t)n;
    m->p += hdr + n;
    return 0;
}

/* Read an integer as sign + magnitude. */
static int read_int(struct crdt_mp *m, bool *neg, uint64_t *mag)
{
    if (need(m, 1)) return SM_EINVAL;
    uint8_t t = m->p[0];
    if (t <= 0x7f) {
        *neg = false;
        *mag = t;
        m->p += 1;
        return 0;
    }
    if (t >= 0xe0) {
        *neg = true;
        *mag = (uint64_t)(-(int64_t)(int8_t)t);
        m->p += 1;
        return 0;
    }
    unsigned w;
    bool sgn;
    switch (t) {
    case 0xcc:
        w = 1, sgn = false;
        break;
    case 0xcd:
        w = 2, sgn = false;
        break;
    case 0xce:
        w = 4, sgn = false;
        break;
    case 0xcf:
        w = 8, sgn = false;
        break;
    case 0xd0:
        w = 1, sgn = true;
        break;
    case 0xd1:
        w = 2, sgn = true;
        break;
    case 0xd2:
        w = 4, sgn = true;
        break;
    case 0xd3:
        w = 8, sgn = true;
        break;
    default:
        return SM_EINVAL;
    }
    if (need(m, 1 + w)) return SM_EINVAL;
    uint64_t raw = be(m->p + 1, w);
    if (sgn && (raw >> (8 * w - 1)) & 1) {
        /* two's complement of a w-byte value: magnitude = 2^(8w) - raw */
        uint64_t full = w == 8 ? raw : raw | (~UINT64_C(0) << (8 * w));
        *neg = true;
        *mag = ~full + 1;
    } else {
        *neg = false;
        *mag = raw;
    }
    m->p += 1 + w;
    return 0;
}

int crdt_mp_int(struct crdt_mp *m, int64_t *v)
{
    const uint8_t *save = m->p;
    bool neg;
    uint64_t mag;
    if (read_int(m, &neg, &mag)) return SM_EINVAL;
    if (!neg && mag > (uint64_t)INT64_MAX) goto bad;
    if (neg && mag > (uint64_t)INT64_MAX + 1) goto bad;
    *v = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    return 0;
bad:
    m->p = save;
    return SM_EINVAL;
}

int crdt_mp_uint(struct crdt_mp *m, uint64_t *v)
{
    const uint8_t *save = m->p;
    bool neg;
    uint64_t mag;
    if (read_int(m, &neg, &mag)) return SM_EINVAL;
    if (neg && mag) {
        m->p = save;
        return SM_EINVAL;
    }
    *v = mag;
    return 0;
}

bool crdt_mp_nil(struct crdt_mp *m)
{
    if (need(m, 1) || m->p[0] != 0xc0) return false;
    m->p++;
    return true;
}

/* Size of the header and payload of the object at p (not counting children),
 * and how many child objects follow. -1 when truncated or reserved (0xc1). */
static int object_span(const struct crdt_mp *m, size_t *span, uint64_t *children)
{
    size_t left = crdt_mp_left(m);
    if (left < 1) return -1;
    uint8_t t = m->p[0];
    *children = 0;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        *span = 1;
        return 0;
    }
    if ((t & 0xf0) == 0x80) {
        *span = 1;
        *children = 2u * (t & 0x0f);
        return 0;
    }
    if ((t & 0xf0) == 0x90) {
        *span = 1;
        *children = t & 0x0f;
        return 0;
    }
    if ((t & 0xe0) == 0xa0) {
        *span = 1 + (size_t)(t & 0x1f);
        return *span <= left ? 0 : -1;
    }
    unsigned w = 0;
    uint64_t payload = 0;
    switch (t) {
    case 0xcc:
    case 0xd0:
        payload = 1;
        break;
    case 0xcd:
    case 0xd1:
        payload = 2;
        break;
    case 0xca:
    case 0xce:
    case 0xd2:
        payload = 4;
        break;
    case 0xcb:
    case 0xcf:
    case 0xd3:
        payload = 8;
        break;
    case 0xd4:
        payload = 2;
        break; /* fixext: type byte + data */
    case 0xd5:
        payload = 3;
        break;
    case 0xd6:
        payload = 5;
        break;
    case 0xd7:
        payload = 9;
        break;
    case 0xd8:
        payload = 17;
        break;
    case 0xc4:
    case 0xd9:
        w = 1;
        break; /* bin8, str8 */
    case 0xc5:
    case 0xda:
        w = 2;
        break;
    case 0xc6:
    case 0xdb:
        w = 4;
        break;
    case 0xc7:
        w = 1, payload = 1;
        break; /* ext8: len + type */
    case 0xc8:
        w = 2, payload = 1;
        break;
    case 0xc9:
        w = 4, payload = 1;
        break;
    case 0xdc:
    case 0xdd:
    case 0xde:
    case 0xdf: {
        unsigned cw = (t == 0xdc || t == 0xde) ? 2 : 4;
        if (left < 1 + cw) return -1;
        uint64_t n = be(m->p + 1, cw);
        *children = (t >= 0xde) ? 2 * n : n;
        *span = 1 + cw;
        return 0;
    }
    default:
        return -1; /* 0xc1 is never used */
    }
    if (left < 1 + (size_t)w) return -1;
    payload += w ? be(m->p + 1, w) : 0;
    if (payload > left - 1 - w) return -1;
    *span = 1 + w + (size_t)payload;
    return 0;
}

int crdt_mp_skip(struct crdt_mp *m)
{
    const uint8_t *save = m->p;
    uint64_t pending = 1;
    while (pending) {
        size_t span;
        uint64_t children;
        if (object_span(m, &span, &children) < 0) goto bad;
        m->p += span;
        pending--;
        /* every child takes at least a byte: a count beyond what is left is a lie */
        if (children > crdt_mp_left(m)) goto bad;
        pending += children;
    }
    return 0;
bad:
    m->p = save;
    return SM_EINVAL;
}
