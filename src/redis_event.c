/* redis_event.c: encode and decode the redis backend's change-event messages
 * (I/O-free and bounds-checked: the bytes come from whoever can PUBLISH). */
#include "config.h"

#include "redis_event.h"
#include "statemesh.h"

#include <string.h>

/* Writes the decimal form of v at p; returns the digits written. */
static size_t put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) p[i] = tmp[n - 1 - i];
    return n;
}

size_t sm_redis_ev_size(const struct sm_redis_ev *e)
{
    return SM_REDIS_EV_HDR_MAX + e->origin_len + e->key_len + (e->type != 'D' ? e->value_len : 0);
}

size_t sm_redis_ev_encode(char *buf, size_t cap, const struct sm_redis_ev *e)
{
    size_t vlen = e->type != 'D' ? e->value_len : 0;
    if (cap < sm_redis_ev_size(e)) return 0;
    char *p = buf;
    memcpy(p, "SM1 ", 4);
    p += 4;
    *p++ = e->type;
    *p++ = ' ';
    p += put_u64(p, e->version);
    *p++ = ' ';
    p += put_u64(p, e->time_ms);
    *p++ = ' ';
    p += put_u64(p, e->origin_len);
    *p++ = ' ';
    p += put_u64(p, e->key_len);
    *p++ = ' ';
    p += put_u64(p, vlen);
    *p++ = '\n';
    memcpy(p, e->origin, e->origin_len);
    p += e->origin_len;
    memcpy(p, e->key, e->key_len);
    p += e->key_len;
    if (vlen) memcpy(p, e->value, vlen);
    p += vlen;
    return (size_t)(p - buf);
}

/* Parses a decimal field ending in @p stop; refuses empty fields, leading
 * junk and overflow. */
static int get_u64(const char *buf, size_t len, size_t *off, char stop, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = *off, start = i;
    while (i < len && buf[i] >= '0' && buf[i] <= '9') {
        unsigned d = (unsigned)(buf[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return SM_EPROTO;
        v = v * 10 + d;
        i++;
        if (i - start > 20) return SM_EPROTO;
    }
    if (i == start || i >= len || buf[i] != stop) return SM_EPROTO;
    *off = i + 1;
    *out = v;
    return 0;
}

int sm_redis_ev_decode(const char *buf, size_t len, size_t *off, struct sm_redis_ev *out)
{
    size_t i = *off;
    if (i == len) return 0;
    if (i > len || len - i < 6 || memcmp(buf + i, "SM1 ", 4) != 0) return SM_EPROTO;
    i += 4;
    char t = buf[i];
    if ((t != 'S' && t != 'T' && t != 'D') || buf[i + 1] != ' ') return SM_EPROTO;
    i += 2;
    uint64_t ver, tm, ol, kl, vl;
    if (get_u64(buf, len, &i, ' ', &ver) < 0 || get_u64(buf, len, &i, ' ', &tm) < 0 ||
        get_u64(buf, len, &i, ' ', &ol) < 0 || get_u64(buf, len, &i, ' ', &kl) < 0 ||
        get_u64(buf, len, &i, '\n', &vl) < 0)
        return SM_EPROTO;
    size_t rest = len - i;
    /* Compare piecewise so huge announced lengths cannot overflow a sum. */
    if (ol > rest || kl > rest - ol || vl > rest - ol - kl) return SM_EPROTO;
    if (kl == 0 || (t == 'D' && vl != 0)) return SM_EPROTO;
    out->type = t;
    out->version = ver;
    out->time_ms = tm;
    out->origin = buf + i;
    out->origin_len = ol;
    out->key = buf + i + ol;
    out->key_len = kl;
    out->value = vl ? buf + i + ol + kl : NULL;
    out->value_len = vl;
    *off = i + ol + kl + vl;
    return 1;
}
