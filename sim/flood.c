/* flood.c: a trivial flooding protocol that exercises the engine without the gossip core. */
#include "config.h"

#include "sim/sim.h"

#include <stdlib.h>
#include <string.h>

/*
 * A write is sent to every other node; a node forwards a record to everyone
 * but the sender the first time it installs it. No membership, no timers
 * except one periodic no-op tick (so timer handling is exercised too).
 * Wire format: u16 klen, key, u16 vlen, value, u64 version, u64 hlc,
 * u8 olen, origin, u8 precedence, u8 flags (little endian).
 */

#define FLOOD_TICK_MS 1000

struct flood {
    struct sim *sim;
    uint32_t id;
    uint32_t n;
    struct crdt_replica *r;
    char name[16];
    uint64_t hlc;
    int64_t next_tick;
    uint64_t ticks;
};

static size_t put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
    return 8;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static size_t encode(const struct crdt_rec_view *v, uint8_t *buf)
{
    size_t o = 0;
    buf[o++] = (uint8_t)v->key_len;
    buf[o++] = (uint8_t)(v->key_len >> 8);
    memcpy(buf + o, v->key, v->key_len);
    o += v->key_len;
    buf[o++] = (uint8_t)v->value_len;
    buf[o++] = (uint8_t)(v->value_len >> 8);
    if (v->value_len) memcpy(buf + o, v->value, v->value_len);
    o += v->value_len;
    o += put_u64(buf + o, v->version);
    o += put_u64(buf + o, v->hlc);
    buf[o++] = (uint8_t)v->origin_len;
    memcpy(buf + o, v->origin, v->origin_len);
    o += v->origin_len;
    buf[o++] = v->precedence;
    buf[o++] = v->flags;
    return o;
}

static int decode(const uint8_t *b, size_t len, struct crdt_rec_view *v)
{
    size_t o = 0;
    memset(v, 0, sizeof(*v));
    if (len < 2) return -1;
    v->key_len = (size_t)b[0] | (size_t)b[1] << 8;
    o = 2;
    if (len < o + v->key_len + 2) return -1;
    v->key = (const char *)b + o;
    o += v->key_len;
    v->value_len = (size_t)b[o] | (size_t)b[o + 1] << 8;
    o += 2;
    if (len < o + v->value_len + 17) return -1;
    v->value = v->value_len ? b + o : NULL;
    o += v->value_len;
    v->version = get_u64(b + o);
    v->hlc = get_u64(b + o + 8);
    o += 16;
    v->origin_len = b[o++];
    if (len < o + v->origin_len + 2) return -1;
    v->origin = (const char *)b + o;
    o += v->origin_len;
    v->precedence = b[o++];
    v->flags = b[o++];
    return 0;
}

static void flood_out(struct flood *f, const struct crdt_rec_view *v, uint32_t except)
{
    uint8_t buf[4096];
    if (v->key_len + v->value_len + v->origin_len + 32 > sizeof(buf)) return;
    size_t len = encode(v, buf);
    for (uint32_t i = 0; i < f->n; i++)
        if (i != f->id && i != except) sim_send(f->sim, f->id, i, buf, len, SIM_PKT_DATA);
}

static int flood_new(struct sim *s, const struct sim_node_init *in, void **out)
{
    struct flood *f = calloc(1, sizeof(*f));
    if (!f) return SM_ENOMEM;
    f->sim = s;
    f->id = in->id;
    f->n = in->nodes;
    f->r = in->replica;
    memcpy(f->name, in->name, strlen(in->name) + 1);
    f->next_tick = sim_now(s) / SIM_US + FLOOD_TICK_MS;
    *out = f;
    return 0;
}

static void flood_delete(void *p)
{
    free(p);
}

static void flood_recv(void *p, int64_t now_ms, uint32_t from, const uint8_t *buf, size_t len)
{
    struct flood *f = p;
    struct crdt_rec_view v;
    (void)now_ms;
    if (decode(buf, len, &v) < 0) return;
    if (v.hlc > f->hlc) f->hlc = v.hlc;
    if (crdt_replica_merge(f->r, &v) == 1) flood_out(f, &v, from);
}

static void flood_timeout(void *p, int64_t now_ms)
{
    struct flood *f = p;
    (void)now_ms;
    f->ticks++;
    f->next_tick = sim_now(f->sim) / SIM_US + FLOOD_TICK_MS;
}

static int64_t flood_next(void *p)
{
    return ((struct flood *)p)->next_tick;
}

static int flood_write(void *p, int64_t now_ms, const char *key, size_t klen, const uint8_t *val,
                       size_t vlen)
{
    struct flood *f = p;
    uint64_t hlc = (uint64_t)now_ms << CRDT_HLC_LOGICAL_BITS;
    f->hlc = hlc > f->hlc ? hlc : f->hlc + 1;
    struct crdt_rec_view v = {
        .key = key,
        .key_len = klen,
        .value = val,
        .value_len = vlen,
        .version = crdt_replica_version(f->r, key, klen) + 1,
        .hlc = f->hlc,
        .origin = f->name,
        .origin_len = strlen(f->name),
    };
    int rc = crdt_replica_merge(f->r, &v);
    if (rc < 0) return SM_ENOMEM;
    flood_out(f, &v, UINT32_MAX);
    return 0;
}

const struct sim_proto sim_proto_flood = {
    .name = "flood",
    .node_new = flood_new,
    .node_delete = flood_delete,
    .recv = flood_recv,
    .timeout = flood_timeout,
    .next_timeout = flood_next,
    .write = flood_write,
    .incarnation = NULL,
};
