/* sim.c: the discrete-event engine: event heap, PRNG, network model, node life, checks. */
#include "config.h"

#include "sim/sim.h"
#include "sim/rng.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Design notes.
 *
 * - Events are 24 bytes in a 4-ary min-heap keyed by (time, seq). The sequence
 *   number is global and strictly increasing, so ties break by insertion order
 *   and the order never depends on addresses or the heap's internal layout.
 * - A packet is copied once into a pool slot (fixed stride arena, free list);
 *   the delivery event carries the slot index. Duplicates take a second slot.
 * - Each node has at most one live timer entry. When the protocol's deadline
 *   moves earlier a new entry is pushed and the old one is invalidated by the
 *   node's generation counter; when it moves later the old entry stays and is
 *   re-armed when it fires, which avoids a heap push for every postponement.
 * - After every call into a node the engine looks at its replica's root digest
 *   (O(1)); only when it changed does it check tracked updates and watched keys.
 */

enum { EV_PKT = 0, EV_TIMER = 1 };

struct ev {
    int64_t t;
    uint64_t seqk; /* seq << 1 | kind: orders like seq because seq is unique */
    uint32_t a;    /* packet slot or node */
    uint32_t b;    /* timer generation */
};

struct pkt {
    uint32_t from, to;
    uint32_t len;
    uint32_t next_free;
    uint8_t *big; /* payload when larger than the arena stride */
};

#define PKT_STRIDE 1536u
#define PKT_CHUNK  4096u /* slots per arena chunk */
#define NO_SLOT    UINT32_MAX

struct tuple {
    uint64_t version, hlc;
    uint8_t prec, olen, present;
    char origin[CRDT_MAX_ORIGIN];
};

struct node {
    void *proto;
    struct crdt_replica *replica;
    int64_t skew_ms;
    int64_t timer_at; /* armed heap entry time (us) or SIM_NEVER */
    uint32_t timer_gen;
    uint32_t group;
    uint64_t last_root;
    uint64_t last_inc;
    uint32_t restarts;
    uint8_t up, slow, matches;
};

struct track {
    struct tuple target;
    char *key;
    size_t klen;
    int64_t start, done;
    uint32_t holders;
    uint8_t *held; /* bitset over nodes */
};

struct watch {
    char *key;
    size_t klen;
    struct tuple *last; /* per node */
};

struct link {
    uint32_t a, b;
    int64_t min_us, max_us;
};

struct sim {
    struct sim_config cfg;
    struct sim_hooks hooks;
    struct sim_stats st;
    struct rng net_rng, user_rng;
    int64_t now;
    uint64_t seq;
    /* heap */
    struct ev *heap;
    size_t hn, hcap;
    /* packet pool */
    struct pkt *pkts;
    uint8_t **chunks; /* payload arena in fixed chunks: a payload never moves while delivered */
    uint32_t pcap, pfree;
    /* nodes */
    struct node *nodes;
    uint32_t n, live;
    uint32_t cur; /* node being called, for sanity */
    /* tracking */
    struct track *tracks;
    uint32_t ntracks, tcap;
    uint32_t *active; /* indices of incomplete tracks */
    uint32_t nactive, acap;
    struct watch watches[SIM_MAX_WATCH];
    uint32_t nwatch;
    struct crdt_replica *oracle;
    uint32_t matching;
    uint64_t violations;
    struct link *links;
    size_t nlinks;
};

/* ---- heap ---- */

static inline bool ev_less(const struct ev *x, const struct ev *y)
{
    return x->t < y->t || (x->t == y->t && x->seqk < y->seqk);
}

static int heap_push(struct sim *s, int64_t t, int kind, uint32_t a, uint32_t b)
{
    if (s->hn == s->hcap) {
        size_t nc = s->hcap ? s->hcap * 2 : 1024;
        struct ev *h = realloc(s->heap, nc * sizeof(*h));
        if (!h) return SM_ENOMEM;
        s->heap = h;
        s->hcap = nc;
    }
    struct ev e = {t, (s->seq++ << 1) | (uint64_t)kind, a, b};
    size_t i = s->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 4;
        if (!ev_less(&e, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
    return 0;
}

static struct ev heap_pop(struct sim *s)
{
    struct ev top = s->heap[0];
    struct ev last = s->heap[--s->hn];
    size_t i = 0, n = s->hn;
    for (;;) {
        size_t c = 4 * i + 1;
        if (c >= n) break;
        size_t best = c;
        size_t end = c + 4 < n ? c + 4 : n;
        for (size_t j = c + 1; j < end; j++)
            if (ev_less(&s->heap[j], &s->heap[best])) best = j;
        if (!ev_less(&s->heap[best], &last)) break;
        s->heap[i] = s->heap[best];
        i = best;
    }
    if (n > 0) s->heap[i] = last;
    return top;
}

/* ---- packet pool ---- */

static uint32_t pkt_alloc(struct sim *s)
{
    if (s->pfree == NO_SLOT) {
        uint32_t nc = s->pcap + PKT_CHUNK;
        struct pkt *p = realloc(s->pkts, (size_t)nc * sizeof(*p));
        if (!p) return NO_SLOT;
        s->pkts = p;
        uint8_t **c = realloc(s->chunks, (size_t)(nc / PKT_CHUNK) * sizeof(*c));
        if (!c) return NO_SLOT;
        s->chunks = c;
        c[nc / PKT_CHUNK - 1] = malloc((size_t)PKT_CHUNK * PKT_STRIDE);
        if (!c[nc / PKT_CHUNK - 1]) return NO_SLOT;
        for (uint32_t i = nc; i-- > s->pcap;) {
            s->pkts[i].next_free = s->pfree;
            s->pkts[i].big = NULL;
            s->pfree = i;
        }
        s->pcap = nc;
    }
    uint32_t i = s->pfree;
    s->pfree = s->pkts[i].next_free;
    return i;
}

static void pkt_free(struct sim *s, uint32_t i)
{
    free(s->pkts[i].big);
    s->pkts[i].big = NULL;
    s->pkts[i].next_free = s->pfree;
    s->pfree = i;
}

static inline uint8_t *pkt_data(const struct sim *s, uint32_t i)
{
    return s->pkts[i].big ? s->pkts[i].big
                          : s->chunks[i / PKT_CHUNK] + (size_t)(i % PKT_CHUNK) * PKT_STRIDE;
}

/* ---- helpers ---- */

__attribute__((format(printf, 2, 3))) static void violation(struct sim *s, const char *fmt, ...)
{
    va_list ap;
    s->violations++;
    fprintf(stderr,
            "statemesh-sim: INVARIANT VIOLATED (seed %" PRIu64 ", t=%.3f ms): ", s->cfg.seed,
            (double)s->now / SIM_US);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void tuple_set(struct tuple *t, const struct crdt_rec_view *v)
{
    t->version = v->version;
    t->hlc = v->hlc;
    t->prec = v->precedence;
    t->olen = (uint8_t)(v->origin_len < CRDT_MAX_ORIGIN ? v->origin_len : CRDT_MAX_ORIGIN);
    memcpy(t->origin, v->origin, t->olen);
    t->present = 1;
}

static void tuple_view(const struct tuple *t, struct crdt_rec_view *v)
{
    memset(v, 0, sizeof(*v));
    v->version = t->version;
    v->hlc = t->hlc;
    v->precedence = t->prec;
    v->origin = t->origin;
    v->origin_len = t->olen;
}

int64_t sim_node_ms(const struct sim *s, uint32_t id)
{
    return SIM_EPOCH_MS + s->now / SIM_US + s->nodes[id].skew_ms;
}

static void node_name(uint32_t id, char *buf, size_t len)
{
    snprintf(buf, len, "n%" PRIu32, id);
}

/* Arm the node's timer from the protocol's deadline (lazily, see the notes). */
static void arm_timer(struct sim *s, uint32_t id)
{
    struct node *nd = &s->nodes[id];
    if (!nd->up) return;
    int64_t dl = s->cfg.proto->next_timeout(nd->proto);
    if (dl == SIM_NEVER) return; /* a stale entry, if any, re-checks when it fires */
    int64_t t = dl * SIM_US;
    if (t <= s->now) t = (s->now / SIM_US + 1) * SIM_US; /* next millisecond tick */
    if (nd->timer_at != SIM_NEVER && nd->timer_at <= t) return;
    nd->timer_gen++;
    nd->timer_at = t;
    if (heap_push(s, t, EV_TIMER, id, nd->timer_gen) < 0) {
        fprintf(stderr, "statemesh-sim: out of memory\n");
        abort();
    }
}

static void oracle_recount(struct sim *s)
{
    uint64_t root = crdt_replica_root(s->oracle);
    size_t size = crdt_replica_size(s->oracle);
    s->matching = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        struct node *nd = &s->nodes[i];
        nd->matches = nd->up && nd->last_root == root && crdt_replica_size(nd->replica) == size;
        s->matching += nd->matches;
    }
}

static void track_complete_check(struct sim *s, uint32_t ai)
{
    uint32_t ti = s->active[ai];
    struct track *tr = &s->tracks[ti];
    if (tr->holders >= s->live) {
        tr->done = s->now;
        s->active[ai] = s->active[--s->nactive];
    }
}

/* The node's replica changed: check tracked updates, watched keys, oracle match. */
static void replica_changed(struct sim *s, uint32_t id)
{
    struct node *nd = &s->nodes[id];
    const struct crdt_replica *r = nd->replica;
    struct crdt_rec_view v, tv;

    for (uint32_t ai = 0; ai < s->nactive;) {
        struct track *tr = &s->tracks[s->active[ai]];
        bool held = (tr->held[id >> 3] >> (id & 7)) & 1;
        const struct crdt_rec *rec = crdt_replica_find(r, tr->key, tr->klen);
        bool has = false;
        if (rec) {
            crdt_rec_view(r, rec, &v);
            tuple_view(&tr->target, &tv);
            has = crdt_order_cmp(&v, &tv) >= 0;
        }
        if (held && !has) {
            violation(s, "node n%" PRIu32 " lost tracked update %s", id, tr->key);
        } else if (!held && has) {
            tr->held[id >> 3] |= (uint8_t)(1u << (id & 7));
            tr->holders++;
            uint32_t ti = s->active[ai];
            if (s->hooks.spread) s->hooks.spread(s->hooks.arg, s, ti, tr->holders, s->live);
            uint32_t before = s->nactive;
            if (tr->holders >= s->live && s->now - tr->start > 800 * SIM_US && getenv("SIM_DEBUG"))
                fprintf(stderr, "slow update %s: last holder n%" PRIu32 " after %.0f ms\n", tr->key,
                        id, (double)(s->now - tr->start) / SIM_US);
            track_complete_check(s, ai);
            if (s->nactive < before) continue; /* slot ai now holds another track */
        }
        ai++;
    }
    for (uint32_t w = 0; w < s->nwatch; w++) {
        struct watch *wa = &s->watches[w];
        const struct crdt_rec *rec = crdt_replica_find(r, wa->key, wa->klen);
        struct tuple *last = &wa->last[id];
        if (!rec) {
            if (last->present)
                violation(s, "node n%" PRIu32 " dropped watched key %s", id, wa->key);
            continue;
        }
        crdt_rec_view(r, rec, &v);
        if (last->present) {
            tuple_view(last, &tv);
            if (crdt_order_cmp(&v, &tv) < 0)
                violation(s, "node n%" PRIu32 " moved key %s backwards in the merge order", id,
                          wa->key);
        }
        tuple_set(last, &v);
    }
    bool m = nd->last_root == crdt_replica_root(s->oracle) &&
             crdt_replica_size(r) == crdt_replica_size(s->oracle);
    s->matching += (uint32_t)m - (uint32_t)nd->matches;
    nd->matches = m;
}

/* Bookkeeping after any call into node @p id. */
static void after_call(struct sim *s, uint32_t id)
{
    struct node *nd = &s->nodes[id];
    if (!nd->up) return;
    if (s->cfg.proto->incarnation) {
        uint64_t inc = s->cfg.proto->incarnation(nd->proto);
        if (inc < nd->last_inc) violation(s, "node n%" PRIu32 " incarnation decreased", id);
        nd->last_inc = inc;
    }
    uint64_t root = crdt_replica_root(nd->replica);
    if (root != nd->last_root) {
        nd->last_root = root;
        replica_changed(s, id);
    }
    arm_timer(s, id);
}

/* ---- node life ---- */

static int node_start(struct sim *s, uint32_t id, const uint32_t *seeds, size_t nseeds)
{
    struct node *nd = &s->nodes[id];
    char name[16];
    node_name(id, name, sizeof(name));
    nd->replica = crdt_replica_new();
    if (!nd->replica) return SM_ENOMEM;
    struct sim_node_init in = {
        .id = id,
        .name = name,
        .seed = rng_mix(s->cfg.seed ^ rng_mix(((uint64_t)id << 20) + nd->restarts + 1)),
        .now_ms = 0,
        .replica = nd->replica,
        .seeds = seeds,
        .nseeds = nseeds,
        .nodes = s->n,
        .proto_arg = s->cfg.proto_arg,
    };
    in.now_ms = sim_node_ms(s, id);
    nd->up = 1;
    nd->last_root = crdt_replica_root(nd->replica);
    nd->matches = 0;
    s->live++;
    s->cur = id;
    int rc = s->cfg.proto->node_new(s, &in, &nd->proto);
    if (rc < 0) {
        nd->up = 0;
        s->live--;
        crdt_replica_delete(nd->replica);
        nd->replica = NULL;
        return rc;
    }
    nd->timer_at = SIM_NEVER;
    nd->last_inc = 0;
    after_call(s, id);
    return 0;
}

int sim_new(const struct sim_config *cfg, struct sim **out)
{
    *out = NULL;
    if (!cfg || cfg->nodes == 0 || cfg->loss < 0 || cfg->loss > 1) return SM_EINVAL;
    struct sim *s = calloc(1, sizeof(*s));
    if (!s) return SM_ENOMEM;
    s->cfg = *cfg;
    if (!s->cfg.lat_min_us && !s->cfg.lat_max_us) {
        s->cfg.lat_min_us = 1 * SIM_US;
        s->cfg.lat_max_us = 10 * SIM_US;
    }
    if (s->cfg.lat_max_us < s->cfg.lat_min_us || s->cfg.lat_min_us < 0) goto inval;
    if (!s->cfg.slow_factor) s->cfg.slow_factor = 10;
    if (!s->cfg.proto) s->cfg.proto = &sim_proto_flood;
    if (!s->cfg.max_pkt) s->cfg.max_pkt = 65536;
    rng_seed(&s->net_rng, cfg->seed ^ 0x6e6574776f726bULL);
    rng_seed(&s->user_rng, cfg->seed ^ 0x7363656e6172696fULL);
    s->pfree = NO_SLOT;
    s->n = cfg->nodes;
    s->nodes = calloc(s->n, sizeof(*s->nodes));
    s->oracle = crdt_replica_new();
    if (!s->nodes || !s->oracle) goto nomem;
    for (uint32_t i = 0; i < s->n; i++) {
        s->nodes[i].timer_at = SIM_NEVER;
        if (s->cfg.skew_max_ms > 0)
            s->nodes[i].skew_ms =
                (int64_t)rng_below(&s->user_rng, (uint32_t)(2 * s->cfg.skew_max_ms + 1)) -
                s->cfg.skew_max_ms;
    }
    /* node i joins through node 0 and a random earlier node while the cluster is small,
     * then through one random earlier node only: no seed takes all N joins, and the
     * membership graph is connected from the start */
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t seeds[2] = {0, 0};
        size_t nseeds = i == 0 ? 0 : 1;
        if (i > 1) {
            uint32_t r = 1 + rng_below(&s->user_rng, i - 1);
            if (i <= 64)
                seeds[nseeds++] = r;
            else
                seeds[0] = r;
        }
        int rc = node_start(s, i, seeds, nseeds);
        if (rc < 0) {
            sim_delete(s);
            return rc;
        }
    }
    oracle_recount(s);
    *out = s;
    return 0;
inval:
    free(s);
    return SM_EINVAL;
nomem:
    sim_delete(s);
    return SM_ENOMEM;
}

void sim_delete(struct sim *s)
{
    if (!s) return;
    for (uint32_t i = 0; s->nodes && i < s->n; i++) {
        if (s->nodes[i].up) s->cfg.proto->node_delete(s->nodes[i].proto);
        crdt_replica_delete(s->nodes[i].replica);
    }
    for (uint32_t i = 0; i < s->pcap; i++) free(s->pkts[i].big);
    for (uint32_t i = 0; i < s->ntracks; i++) {
        free(s->tracks[i].key);
        free(s->tracks[i].held);
    }
    for (uint32_t i = 0; i < s->nwatch; i++) {
        free(s->watches[i].key);
        free(s->watches[i].last);
    }
    crdt_replica_delete(s->oracle);
    free(s->tracks);
    free(s->active);
    free(s->nodes);
    free(s->heap);
    free(s->pkts);
    for (uint32_t i = 0; i < s->pcap / PKT_CHUNK; i++) free(s->chunks[i]);
    free(s->chunks);
    free(s->links);
    free(s);
}

void sim_set_hooks(struct sim *s, const struct sim_hooks *h)
{
    s->hooks = *h;
}

int64_t sim_now(const struct sim *s)
{
    return s->now;
}
uint32_t sim_nodes(const struct sim *s)
{
    return s->n;
}
uint32_t sim_live(const struct sim *s)
{
    return s->live;
}
bool sim_node_up(const struct sim *s, uint32_t id)
{
    return id < s->n && s->nodes[id].up;
}
struct crdt_replica *sim_replica(const struct sim *s, uint32_t id)
{
    return id < s->n && s->nodes[id].up ? s->nodes[id].replica : NULL;
}
bool sim_knows(const struct sim *s, uint32_t observer, uint32_t subject)
{
    if (observer >= s->n || !s->nodes[observer].up || !s->cfg.proto->knows) return false;
    return s->cfg.proto->knows(s->nodes[observer].proto, subject);
}
void *sim_node_proto(const struct sim *s, uint32_t id)
{
    return id < s->n && s->nodes[id].up ? s->nodes[id].proto : NULL;
}
const struct sim_stats *sim_stats(const struct sim *s)
{
    return &s->st;
}
uint64_t sim_rand(struct sim *s)
{
    return rng_next(&s->user_rng);
}
uint32_t sim_rand_below(struct sim *s, uint32_t n)
{
    return rng_below(&s->user_rng, n);
}
uint64_t sim_seed(const struct sim *s)
{
    return s->cfg.seed;
}

/* ---- network ---- */

static void link_latency(const struct sim *s, uint32_t a, uint32_t b, int64_t *lo, int64_t *hi)
{
    *lo = s->cfg.lat_min_us;
    *hi = s->cfg.lat_max_us;
    for (size_t i = 0; i < s->nlinks; i++)
        if (s->links[i].a == a && s->links[i].b == b) {
            *lo = s->links[i].min_us;
            *hi = s->links[i].max_us;
        }
}

int sim_set_link_latency(struct sim *s, uint32_t a, uint32_t b, int64_t min_us, int64_t max_us)
{
    if (a >= s->n || b >= s->n || min_us < 0 || max_us < min_us) return SM_EINVAL;
    for (size_t i = 0; i < s->nlinks; i++)
        if (s->links[i].a == a && s->links[i].b == b) {
            s->links[i].min_us = min_us;
            s->links[i].max_us = max_us;
            return 0;
        }
    struct link *l = realloc(s->links, (s->nlinks + 1) * sizeof(*l));
    if (!l) return SM_ENOMEM;
    s->links = l;
    s->links[s->nlinks++] = (struct link){a, b, min_us, max_us};
    return 0;
}

void sim_set_loss(struct sim *s, double loss)
{
    s->cfg.loss = loss;
}
void sim_set_group(struct sim *s, uint32_t id, uint32_t group)
{
    if (id < s->n) s->nodes[id].group = group;
}
void sim_heal(struct sim *s)
{
    for (uint32_t i = 0; i < s->n; i++) s->nodes[i].group = 0;
}
void sim_set_slow(struct sim *s, uint32_t id, bool slow)
{
    if (id < s->n) s->nodes[id].slow = slow;
}
void sim_set_skew(struct sim *s, uint32_t id, int64_t skew_ms)
{
    if (id < s->n) s->nodes[id].skew_ms = skew_ms;
}

static int64_t draw_latency(struct sim *s, uint32_t from, uint32_t to)
{
    int64_t lo, hi;
    link_latency(s, from, to, &lo, &hi);
    int64_t lat = lo + (hi > lo ? (int64_t)(rng_next(&s->net_rng) % (uint64_t)(hi - lo + 1)) : 0);
    /* a slow node answers late: every packet to or from it takes slow_factor times longer */
    if (s->nodes[from].slow || s->nodes[to].slow) lat *= s->cfg.slow_factor;
    if (s->cfg.reorder > 0 && rng_double(&s->net_rng) < s->cfg.reorder) {
        lat += (int64_t)(rng_next(&s->net_rng) % (uint64_t)(2 * s->cfg.lat_max_us + 1));
        s->st.reordered++;
    }
    return lat;
}

static void enqueue(struct sim *s, uint32_t from, uint32_t to, const uint8_t *buf, size_t len)
{
    uint32_t slot = pkt_alloc(s);
    if (slot == NO_SLOT) goto oom;
    struct pkt *p = &s->pkts[slot];
    p->from = from;
    p->to = to;
    p->len = (uint32_t)len;
    if (len > PKT_STRIDE) {
        p->big = malloc(len);
        if (!p->big) goto oom;
        memcpy(p->big, buf, len);
    } else {
        memcpy(pkt_data(s, slot), buf, len);
    }
    if (heap_push(s, s->now + draw_latency(s, from, to), EV_PKT, slot, 0) < 0) goto oom;
    return;
oom:
    fprintf(stderr, "statemesh-sim: out of memory\n");
    abort();
}

void sim_send(struct sim *s, uint32_t from, uint32_t to, const uint8_t *buf, size_t len,
              enum sim_pkt_class cls)
{
    if ((unsigned)cls >= SIM_PKT_CLASSES) cls = SIM_PKT_DATA;
    s->st.pkts[cls]++;
    s->st.bytes[cls] += len;
    if (to >= s->n || from >= s->n || len > s->cfg.max_pkt || len == 0) {
        s->st.refused++;
        return;
    }
    if (s->cfg.loss > 0 && rng_double(&s->net_rng) < s->cfg.loss) {
        s->st.lost++;
        return;
    }
    enqueue(s, from, to, buf, len);
    if (s->cfg.dup > 0 && rng_double(&s->net_rng) < s->cfg.dup) {
        s->st.duplicated++;
        enqueue(s, from, to, buf, len);
    }
}

void sim_member_event(struct sim *s, uint32_t observer, uint32_t subject, enum sim_member_ev ev)
{
    if (s->hooks.member) s->hooks.member(s->hooks.arg, s, observer, subject, ev);
}

/* ---- event loop ---- */

static void process(struct sim *s, const struct ev *e)
{
    s->now = e->t;
    s->st.events++;
    if ((e->seqk & 1) == EV_PKT) {
        /* copy the slot's fields: sends during recv may grow (move) the slot array */
        uint32_t slot = e->a, from = s->pkts[slot].from, to = s->pkts[slot].to;
        struct node *nd = &s->nodes[to];
        if (!nd->up) {
            s->st.to_down++;
        } else if (nd->group != s->nodes[from].group) {
            s->st.partitioned++;
        } else {
            s->st.delivered++;
            s->cur = to;
            s->cfg.proto->recv(nd->proto, sim_node_ms(s, to), from, pkt_data(s, slot),
                               s->pkts[slot].len);
            after_call(s, to);
        }
        pkt_free(s, slot);
        return;
    }
    uint32_t id = e->a;
    struct node *nd = &s->nodes[id];
    if (!nd->up || e->b != nd->timer_gen) return; /* stale entry */
    nd->timer_at = SIM_NEVER;
    int64_t dl = s->cfg.proto->next_timeout(nd->proto);
    if (dl != SIM_NEVER && dl * SIM_US <= s->now) {
        s->st.timers++;
        s->cur = id;
        s->cfg.proto->timeout(nd->proto, sim_node_ms(s, id));
    }
    after_call(s, id);
}

bool sim_step(struct sim *s)
{
    if (s->hn == 0) return false;
    struct ev e = heap_pop(s);
    process(s, &e);
    return true;
}

int64_t sim_next_event(const struct sim *s)
{
    return s->hn ? s->heap[0].t : SIM_NEVER;
}

uint64_t sim_run_until(struct sim *s, int64_t t_us)
{
    uint64_t n = 0;
    while (s->hn && s->heap[0].t <= t_us) {
        struct ev e = heap_pop(s);
        process(s, &e);
        n++;
    }
    if (t_us > s->now) s->now = t_us;
    return n;
}

/* ---- node life ---- */

void sim_crash(struct sim *s, uint32_t id)
{
    if (id >= s->n || !s->nodes[id].up) return;
    struct node *nd = &s->nodes[id];
    s->cfg.proto->node_delete(nd->proto);
    nd->proto = NULL;
    crdt_replica_delete(nd->replica);
    nd->replica = NULL;
    nd->up = 0;
    nd->timer_gen++; /* invalidates its heap entry */
    nd->timer_at = SIM_NEVER;
    nd->restarts++;
    s->live--;
    s->matching -= nd->matches;
    nd->matches = 0;
    for (uint32_t i = 0; i < s->ntracks; i++) {
        struct track *tr = &s->tracks[i];
        if ((tr->held[id >> 3] >> (id & 7)) & 1) {
            tr->held[id >> 3] &= (uint8_t) ~(1u << (id & 7));
            tr->holders--;
        }
    }
    for (uint32_t w = 0; w < s->nwatch; w++) s->watches[w].last[id].present = 0;
    /* with one node fewer, an update may now be everywhere */
    for (uint32_t ai = 0; ai < s->nactive;) {
        uint32_t before = s->nactive;
        track_complete_check(s, ai);
        if (s->nactive == before) ai++;
    }
}

int sim_restart(struct sim *s, uint32_t id, const uint32_t *seeds, size_t nseeds)
{
    if (id >= s->n || s->nodes[id].up) return SM_EINVAL;
    int rc = node_start(s, id, seeds, nseeds);
    if (rc == 0) {
        /* a restarted node holds nothing: incomplete updates now wait for it too */
        struct node *nd = &s->nodes[id];
        nd->matches = nd->last_root == crdt_replica_root(s->oracle) &&
                      crdt_replica_size(nd->replica) == crdt_replica_size(s->oracle);
        s->matching += nd->matches;
    }
    return rc;
}

int sim_write(struct sim *s, uint32_t id, const char *key, size_t klen, const uint8_t *val,
              size_t vlen, uint32_t *update)
{
    if (id >= s->n || !s->nodes[id].up) return SM_EINVAL;
    struct node *nd = &s->nodes[id];
    s->st.writes++;
    s->cur = id;
    int rc = s->cfg.proto->write(nd->proto, sim_node_ms(s, id), key, klen, val, vlen);
    if (rc < 0) {
        after_call(s, id);
        return rc;
    }
    const struct crdt_rec *rec = crdt_replica_find(nd->replica, key, klen);
    if (!rec) {
        after_call(s, id);
        return SM_EPROTO; /* the protocol did not store the write */
    }
    struct crdt_rec_view v;
    crdt_rec_view(nd->replica, rec, &v);
    if (crdt_replica_merge(s->oracle, &v) < 0) return SM_ENOMEM;
    if (update) {
        rc = sim_track(s, &v, update);
        if (rc < 0) return rc;
    }
    /* the oracle moved: recount which nodes match it; the writer's own root change is
     * seen by after_call(), which also counts it as the first holder */
    oracle_recount(s);
    after_call(s, id);
    return 0;
}

int sim_watch_key(struct sim *s, const char *key, size_t klen)
{
    if (s->nwatch >= SIM_MAX_WATCH) return SM_ERANGE;
    struct watch *w = &s->watches[s->nwatch];
    w->key = malloc(klen + 1);
    w->last = calloc(s->n, sizeof(*w->last));
    if (!w->key || !w->last) {
        free(w->key);
        free(w->last);
        return SM_ENOMEM;
    }
    memcpy(w->key, key, klen);
    w->key[klen] = 0;
    w->klen = klen;
    s->nwatch++;
    return 0;
}

/* ---- tracking ---- */

int sim_track(struct sim *s, const struct crdt_rec_view *target, uint32_t *index)
{
    if (s->ntracks == s->tcap) {
        uint32_t nc = s->tcap ? s->tcap * 2 : 64;
        struct track *t = realloc(s->tracks, nc * sizeof(*t));
        if (!t) return SM_ENOMEM;
        s->tracks = t;
        s->tcap = nc;
    }
    if (s->nactive == s->acap) {
        uint32_t nc = s->acap ? s->acap * 2 : 64;
        uint32_t *a = realloc(s->active, nc * sizeof(*a));
        if (!a) return SM_ENOMEM;
        s->active = a;
        s->acap = nc;
    }
    struct track *tr = &s->tracks[s->ntracks];
    memset(tr, 0, sizeof(*tr));
    tr->key = malloc(target->key_len + 1);
    tr->held = calloc((s->n + 7) / 8, 1);
    if (!tr->key || !tr->held) {
        free(tr->key);
        free(tr->held);
        return SM_ENOMEM;
    }
    memcpy(tr->key, target->key, target->key_len);
    tr->key[target->key_len] = 0;
    tr->klen = target->key_len;
    tuple_set(&tr->target, target);
    tr->start = s->now;
    tr->done = -1;
    s->active[s->nactive++] = s->ntracks;
    *index = s->ntracks++;
    return 0;
}

uint32_t sim_track_holders(const struct sim *s, uint32_t index)
{
    return index < s->ntracks ? s->tracks[index].holders : 0;
}
int64_t sim_track_done(const struct sim *s, uint32_t index)
{
    return index < s->ntracks ? s->tracks[index].done : -1;
}
int64_t sim_track_start(const struct sim *s, uint32_t index)
{
    return index < s->ntracks ? s->tracks[index].start : -1;
}
bool sim_track_held(const struct sim *s, uint32_t index, uint32_t id)
{
    if (index >= s->ntracks || id >= s->n) return false;
    return (s->tracks[index].held[id >> 3] >> (id & 7)) & 1;
}
uint32_t sim_tracked(const struct sim *s)
{
    return s->ntracks;
}
uint64_t sim_violations(const struct sim *s)
{
    return s->violations;
}
const struct crdt_replica *sim_oracle(const struct sim *s)
{
    return s->oracle;
}
uint32_t sim_matching_oracle(const struct sim *s)
{
    return s->matching;
}

bool sim_replicas_identical(const struct sim *s)
{
    bool first = true;
    uint64_t root = 0;
    size_t size = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        const struct node *nd = &s->nodes[i];
        if (!nd->up) continue;
        uint64_t r = crdt_replica_root(nd->replica);
        size_t z = crdt_replica_size(nd->replica);
        if (first) {
            root = r;
            size = z;
            first = false;
        } else if (r != root || z != size) {
            return false;
        }
    }
    return true;
}
