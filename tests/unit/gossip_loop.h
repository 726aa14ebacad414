/* gossip_loop.h: a tiny deterministic fake event loop driving a few sm_nodes (tests only). */
#ifndef TESTS_GOSSIP_LOOP_H
#define TESTS_GOSSIP_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/replica.h"
#include "gossip/node.h"

#define GL_MAX_NODES 64
#define GL_MAX_PKTS  65536

struct gl_pkt {
    uint64_t at;
    uint64_t seq;
    int from, to;
    enum sm_pkt_class cls;
    size_t len;
    uint8_t *buf;
};

struct gl {
    int n;
    uint64_t now;     /* mono ms */
    uint64_t latency; /* one-way latency (fixed unless jitter) */
    uint64_t jitter;  /* extra latency drawn in [0, jitter] */
    uint64_t lcg;
    uint64_t seq;
    struct sm_node *node[GL_MAX_NODES];
    struct crdt_replica *rep[GL_MAX_NODES];
    bool down[GL_MAX_NODES];
    bool cut[GL_MAX_NODES][GL_MAX_NODES]; /* link from->to drops */
    uint32_t drop_every;                  /* drop every k-th packet (0 = none) */
    uint64_t sent, dropped;
    uint64_t sent_cls[SM_PKT__COUNT];
    struct gl_pkt *q;
    size_t nq;
    int ud[GL_MAX_NODES];
    /* last member event seen per observer */
    int events[GL_MAX_NODES][SM_MEV__COUNT];
    int records[GL_MAX_NODES];
    /* optional packet tap */
    void (*tap)(struct gl *g, const struct gl_pkt *p);
};

static struct gl *gl_cur;

static inline struct sm_addr gl_addr(int i)
{
    struct sm_addr a = {.len = 1};
    a.b[0] = (uint8_t)i;
    return a;
}

static inline void gl_send(void *ud, const struct sm_addr *to, const uint8_t *buf, size_t len,
                           enum sm_pkt_class cls)
{
    struct gl *g = gl_cur;
    int from = *(int *)ud;
    g->sent++;
    g->sent_cls[cls]++;
    if (g->tap) {
        struct gl_pkt t = {.at = g->now,
                           .from = from,
                           .to = to->b[0],
                           .cls = cls,
                           .len = len,
                           .buf = (uint8_t *)buf};
        g->tap(g, &t);
    }
    if (to->len != 1 || to->b[0] >= g->n) return;
    if (g->drop_every && g->sent % g->drop_every == 0) {
        g->dropped++;
        return;
    }
    if (g->cut[from][to->b[0]]) {
        g->dropped++;
        return;
    }
    if (g->nq >= GL_MAX_PKTS) return;
    struct gl_pkt *p = &g->q[g->nq++];
    g->lcg = g->lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    p->at = g->now + g->latency + (g->jitter ? (g->lcg >> 33) % (g->jitter + 1) : 0);
    p->seq = g->seq++;
    p->from = from;
    p->to = to->b[0];
    p->cls = cls;
    p->len = len;
    p->buf = malloc(len);
    memcpy(p->buf, buf, len);
}

static inline void gl_on_member(void *ud, enum sm_member_event ev, const struct sm_member_info *m)
{
    (void)m;
    gl_cur->events[*(int *)ud][ev]++;
}

static inline void gl_on_record(void *ud, const struct crdt_rec_view *r,
                                const struct crdt_rec_view *old)
{
    (void)r, (void)old;
    gl_cur->records[*(int *)ud]++;
}

static inline struct sm_time gl_time(const struct gl *g)
{
    struct sm_time t = {.mono_ms = g->now, .wall_ms = 1700000000000 + (int64_t)g->now};
    return t;
}

/* Create @p n nodes "n0".."n{n-1}" (not joined). @p tweak may adjust each config. */
static inline struct gl *gl_new(int n, uint64_t seed,
                                void (*tweak)(struct sm_node_config *c, int i))
{
    struct gl *g = calloc(1, sizeof(*g));
    g->n = n;
    g->now = 1000;
    g->latency = 5;
    g->q = calloc(GL_MAX_PKTS, sizeof(*g->q));
    gl_cur = g;
    for (int i = 0; i < n; i++) {
        static char names[GL_MAX_NODES][8];
        snprintf(names[i], sizeof(names[i]), "n%d", i);
        g->ud[i] = i;
        g->rep[i] = crdt_replica_new();
        struct sm_node_config c = {0};
        c.id = names[i];
        c.addr = gl_addr(i);
        c.seed = seed * 131 + (uint64_t)i;
        c.cb.send = gl_send;
        c.cb.on_member = gl_on_member;
        c.cb.on_record = gl_on_record;
        c.ud = &g->ud[i];
        if (tweak) tweak(&c, i);
        g->node[i] = sm_node_new(&c, g->rep[i]);
    }
    return g;
}

static inline void gl_free(struct gl *g)
{
    for (int i = 0; i < g->n; i++) {
        sm_node_delete(g->node[i]);
        crdt_replica_delete(g->rep[i]);
    }
    for (size_t i = 0; i < g->nq; i++) free(g->q[i].buf);
    free(g->q);
    free(g);
}

/* Join every node but 0 through node 0. */
static inline void gl_join_all(struct gl *g)
{
    gl_cur = g;
    struct sm_addr seed = gl_addr(0);
    for (int i = 0; i < g->n; i++)
        sm_node_join(g->node[i], gl_time(g), i ? &seed : NULL, i ? 1 : 0);
}

/* Run until @p until (mono ms): deliver packets and fire timers in time order. */
static inline void gl_run(struct gl *g, uint64_t until)
{
    gl_cur = g;
    for (;;) {
        uint64_t t = UINT64_MAX;
        int kind = -1, who = -1;
        size_t pi = 0;
        for (size_t i = 0; i < g->nq; i++)
            if (g->q[i].at < t || (g->q[i].at == t && kind == 0 && g->q[i].seq < g->q[pi].seq)) {
                t = g->q[i].at;
                kind = 0;
                pi = i;
            }
        for (int i = 0; i < g->n; i++) {
            if (g->down[i]) continue;
            uint64_t d = sm_node_next_timeout(g->node[i]);
            if (d < t) {
                t = d;
                kind = 1;
                who = i;
            }
        }
        if (t > until || kind < 0) break;
        if (t > g->now) g->now = t;
        if (kind == 0) {
            struct gl_pkt p = g->q[pi];
            g->q[pi] = g->q[--g->nq];
            if (!g->down[p.to]) {
                struct sm_addr from = gl_addr(p.from);
                sm_node_recv(g->node[p.to], gl_time(g), &from, p.buf, p.len);
            }
            free(p.buf);
        } else {
            sm_node_on_timeout(g->node[who], gl_time(g));
        }
    }
    g->now = until;
}

/* Write key=value at node i (version = current + 1, hlc = now). */
static inline int gl_write(struct gl *g, int i, const char *key, const char *value)
{
    gl_cur = g;
    size_t olen;
    const char *origin = sm_node_id(g->node[i], &olen);
    struct crdt_rec_view v = {
        .key = key,
        .key_len = strlen(key),
        .value = (const uint8_t *)value,
        .value_len = strlen(value),
        .version = crdt_replica_version(g->rep[i], key, strlen(key)) + 1,
        .hlc = ((uint64_t)(1700000000000 + g->now)) << 16,
        .origin = origin,
        .origin_len = olen,
    };
    return sm_node_write(g->node[i], gl_time(g), &v);
}

static inline bool gl_has(struct gl *g, int i, const char *key, const char *value)
{
    const struct crdt_rec *r = crdt_replica_get(g->rep[i], key, strlen(key), 0);
    if (!r) return false;
    struct crdt_rec_view v;
    crdt_rec_view(g->rep[i], r, &v);
    return v.value_len == strlen(value) && memcmp(v.value, value, v.value_len) == 0;
}

#endif
