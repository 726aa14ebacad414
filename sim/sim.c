/* sim.c: the discrete-event engine: event heap, PRNG, network model, node life, checks. */
#include "config.h"

#include "sim/sim.h"
#include "sim/rng.h"

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
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
 * - Windows. Every link takes at least 1 ms and a node's timer always lands
 *   on a later millisecond, so nothing done while processing the events of
 *   one millisecond [k, k+1) ms can create an event inside it: the window's
 *   events are independent across nodes. The engine pops the whole window and
 *   groups it into NBLK blocks of nodes (id modulo NBLK); the workers (the
 *   calling thread, plus the helper threads for large windows) take blocks
 *   until none is left and run a block's events in window order, prefetching
 *   a few events ahead. A worker does not touch shared state: its sends, timer
 *   arms, member events and update holds go to the block's log, and the
 *   calling thread replays the logs in window order afterwards - drawing
 *   latency and loss, pushing heap entries, calling the hooks - exactly as a
 *   single thread would have done them. The result is the same bit for bit
 *   whatever the thread count (tests/unit/test_sim checks it).
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
    uint8_t *held; /* per node (a byte each: workers set their own nodes' bytes) */
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

enum op_kind { OP_SEND, OP_TIMER, OP_MEMBER, OP_HOLD };

/* A worker's deferred effect, replayed in window order by the calling thread. */
struct op {
    uint32_t ev; /* window index of the event that made it */
    uint8_t kind;
    uint8_t x;    /* OP_SEND: packet class; OP_MEMBER: event */
    uint32_t a, b; /* from,to | node,generation | observer,subject | track,node */
    uint32_t len;  /* OP_SEND payload */
    int64_t t;     /* OP_TIMER: when */
    size_t off;    /* OP_SEND: payload offset in the worker's buffer */
};

/* The ops of one block of nodes; blocks go to whichever worker is free. */
struct oplog {
    struct op *ops;
    size_t nops, opcap;
    uint8_t *buf;
    size_t blen, bcap;
};

#define NBLK 64 /* node blocks (node id % NBLK) a window is split into */

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
    uint32_t *got; /* replica_changed: tracks newly held (capacity acap) */
    /* windows (see the notes) */
    unsigned threads;
    bool par_ok; /* every latency >= 1 ms: a window's events are independent */
    struct worker *w;
    struct ev *batch;
    size_t bn, bcap;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint go;      /* window generation */
    atomic_uint pending; /* helpers still running the window */
    unsigned sleeping;   /* helpers waiting on cv (under mu) */
    bool quit;
    atomic_uint next_blk; /* the next block to take */
    struct oplog logs[NBLK];
    uint32_t *bix; /* window indices grouped by block, window order within */
    size_t bixcap;
    uint32_t bstart[NBLK + 1];
};

struct worker {
    struct sim *s;
    pthread_t th;
    bool started;
    int64_t now;
    uint32_t ev;
    struct oplog *log; /* the block being run */
    struct sim_stats st; /* events, delivered, to_down, partitioned, timers */
    uint64_t violations;
    int64_t matching;
};

/* The worker whose share of a window this thread is running (NULL: serial). */
static _Thread_local struct worker *tl_w;

#define PAR_MIN_BATCH  128 /* default: smaller windows run on the calling thread alone */
#define SOLO_MIN_BATCH 16  /* smaller still: event by event (no logs, no prefetching) */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline int64_t now_of(const struct sim *s)
{
    return tl_w ? tl_w->now : s->now;
}

static void oom(void)
{
    fprintf(stderr, "statemesh-sim: out of memory\n");
    abort();
}

/* @p p (an array of *cap elements of @p elem bytes) grown to hold @p need:
 * doubling from @p first; out of memory aborts, like every engine allocation
 * in the middle of a run. */
static void *grow(void *p, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap) return p;
    size_t nc = *cap ? *cap : first;
    while (nc < need) nc *= 2;
    p = realloc(p, nc * elem);
    if (!p) oom();
    *cap = nc;
    return p;
}

static struct op *op_add(struct worker *w, enum op_kind kind)
{
    struct oplog *l = w->log;
    l->ops = grow(l->ops, &l->opcap, l->nops + 1, sizeof(*l->ops), 256);
    struct op *o = &l->ops[l->nops++];
    o->ev = w->ev;
    o->kind = (uint8_t)kind;
    return o;
}

static int workers_start(struct sim *s);
static void workers_stop(struct sim *s);

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
    if (tl_w)
        tl_w->violations++;
    else
        s->violations++;
    fprintf(stderr,
            "statemesh-sim: INVARIANT VIOLATED (seed %" PRIu64 ", t=%.3f ms): ", s->cfg.seed,
            (double)now_of(s) / SIM_US);
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
    return SIM_EPOCH_MS + now_of(s) / SIM_US + s->nodes[id].skew_ms;
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
    int64_t t = dl * SIM_US, now = now_of(s);
    if (t <= now) t = (now / SIM_US + 1) * SIM_US; /* next millisecond tick */
    if (nd->timer_at != SIM_NEVER && nd->timer_at <= t) return;
    nd->timer_gen++;
    nd->timer_at = t;
    if (tl_w) {
        struct op *o = op_add(tl_w, OP_TIMER);
        o->a = id;
        o->b = nd->timer_gen;
        o->t = t;
        return;
    }
    if (heap_push(s, t, EV_TIMER, id, nd->timer_gen) < 0) oom();
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

/* Node @p id came to hold tracked update @p ti (serial context). */
static void track_hold(struct sim *s, uint32_t ti, uint32_t id)
{
    struct track *tr = &s->tracks[ti];
    tr->holders++;
    if (s->hooks.spread) s->hooks.spread(s->hooks.arg, s, ti, tr->holders, s->live);
    if (tr->holders < s->live) return;
    if (s->now - tr->start > 800 * SIM_US && getenv("SIM_DEBUG"))
        fprintf(stderr, "slow update %s: last holder n%" PRIu32 " after %.0f ms\n", tr->key, id,
                (double)(s->now - tr->start) / SIM_US);
    for (uint32_t ai = 0; ai < s->nactive; ai++)
        if (s->active[ai] == ti) {
            track_complete_check(s, ai);
            break;
        }
}

/* The node's replica changed: check tracked updates, watched keys, oracle match. */
static void replica_changed(struct sim *s, uint32_t id)
{
    struct node *nd = &s->nodes[id];
    const struct crdt_replica *r = nd->replica;
    struct crdt_rec_view v, tv;

    /* new holds are applied after the scan, in scan order (a worker logs them
     * for the replay), so the active list does not move under the loop */
    uint32_t ngot = 0;
    for (uint32_t ai = 0; ai < s->nactive; ai++) {
        uint32_t ti = s->active[ai];
        struct track *tr = &s->tracks[ti];
        bool held = tr->held[id];
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
            tr->held[id] = 1;
            if (tl_w) {
                struct op *o = op_add(tl_w, OP_HOLD);
                o->a = ti;
                o->b = id;
            } else {
                s->got[ngot++] = ti;
            }
        }
    }
    for (uint32_t k = 0; k < ngot; k++) track_hold(s, s->got[k], id);
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
    if (tl_w)
        tl_w->matching += (int64_t)m - (int64_t)nd->matches;
    else
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
    if (s->cfg.threads > SIM_MAX_THREADS) goto inval;
    s->threads = s->cfg.threads ? s->cfg.threads : 1;
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
    if (workers_start(s) < 0) {
        sim_delete(s);
        return SM_ENOMEM;
    }
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
    workers_stop(s);
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
    free(s->got);
    free(s->batch);
    free(s);
}

void sim_set_hooks(struct sim *s, const struct sim_hooks *h)
{
    s->hooks = *h;
}

int64_t sim_now(const struct sim *s)
{
    return now_of(s);
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
    if (min_us < SIM_US) s->par_ok = false; /* windows need >= 1 ms everywhere */
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
    if (slot == NO_SLOT) oom();
    struct pkt *p = &s->pkts[slot];
    p->from = from;
    p->to = to;
    p->len = (uint32_t)len;
    if (len > PKT_STRIDE) {
        p->big = malloc(len);
        if (!p->big) oom();
        memcpy(p->big, buf, len);
    } else {
        memcpy(pkt_data(s, slot), buf, len);
    }
    /* the destination rides in the event, so a window is split without
     * touching packet slots */
    if (heap_push(s, s->now + draw_latency(s, from, to), EV_PKT, slot, to) < 0) oom();
}

void sim_send(struct sim *s, uint32_t from, uint32_t to, const uint8_t *buf, size_t len,
              enum sim_pkt_class cls)
{
    if ((unsigned)cls >= SIM_PKT_CLASSES) cls = SIM_PKT_DATA;
    struct worker *w = tl_w;
    if (w) {
        /* deferred: counted, dropped or delayed at the replay, in window order */
        struct oplog *l = w->log;
        l->buf = grow(l->buf, &l->bcap, l->blen + len, 1, 16384);
        struct op *o = op_add(w, OP_SEND);
        o->x = (uint8_t)cls;
        o->a = from;
        o->b = to;
        o->len = (uint32_t)(len < UINT32_MAX ? len : UINT32_MAX);
        o->off = l->blen;
        if (len) memcpy(l->buf + l->blen, buf, len);
        l->blen += len;
        return;
    }
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
    if (!s->hooks.member || (s->hooks.member_mask && !(s->hooks.member_mask >> ev & 1u))) return;
    if (tl_w) {
        struct op *o = op_add(tl_w, OP_MEMBER);
        o->a = observer;
        o->b = subject;
        o->x = (uint8_t)ev;
        return;
    }
    s->hooks.member(s->hooks.arg, s, observer, subject, ev);
}

/* ---- event loop ---- */

static inline uint32_t ev_node(const struct ev *e)
{
    return (e->seqk & 1) == EV_PKT ? e->b : e->a;
}

/* One event. Serial (tl_w NULL): effects happen at once and a delivered
 * packet's slot is freed. In a worker: effects are logged, and the replay
 * frees the slot. */
static void process(struct sim *s, const struct ev *e)
{
    struct worker *w = tl_w;
    struct sim_stats *st = w ? &w->st : &s->st;
    if (w)
        w->now = e->t;
    else
        s->now = e->t;
    st->events++;
    if ((e->seqk & 1) == EV_PKT) {
        /* copy the slot's fields: sends during recv may grow (move) the slot array */
        uint32_t slot = e->a, from = s->pkts[slot].from, to = s->pkts[slot].to;
        struct node *nd = &s->nodes[to];
        if (!nd->up) {
            st->to_down++;
        } else if (nd->group != s->nodes[from].group) {
            st->partitioned++;
        } else {
            st->delivered++;
            s->cfg.proto->recv(nd->proto, sim_node_ms(s, to), from, pkt_data(s, slot),
                               s->pkts[slot].len);
            after_call(s, to);
        }
        if (!w) pkt_free(s, slot);
        return;
    }
    uint32_t id = e->a;
    struct node *nd = &s->nodes[id];
    if (!nd->up || e->b != nd->timer_gen) return; /* stale entry */
    nd->timer_at = SIM_NEVER;
    int64_t dl = s->cfg.proto->next_timeout(nd->proto);
    if (dl != SIM_NEVER && dl * SIM_US <= e->t) {
        st->timers++;
        s->cfg.proto->timeout(nd->proto, sim_node_ms(s, id));
    }
    after_call(s, id);
}

/* ---- windows ---- */

/* Start loading what event @p e will touch: stage 0 its node's entry and the
 * packet, then (each a few events later, once the previous stage's lines are
 * in) the protocol's own stages. At 10,000 nodes every one of them is a cache
 * miss; the window's events are known up front, so the loads overlap instead
 * of following one another. */
static inline void prefetch_ev(const struct sim *s, const struct ev *e, int stage)
{
    uint32_t id = ev_node(e);
    const struct node *nd = &s->nodes[id];
    bool pkt = (e->seqk & 1) == EV_PKT;
    if (stage == 0) {
        __builtin_prefetch(nd);
        if (pkt) {
            uint32_t slot = e->a;
            __builtin_prefetch(&s->pkts[slot]);
            __builtin_prefetch(s->chunks[slot / PKT_CHUNK] + (size_t)(slot % PKT_CHUNK) * PKT_STRIDE);
        }
        return;
    }
    if (!nd->proto || !s->cfg.proto->prefetch) return;
    if (stage == 1) __builtin_prefetch(nd->replica);
    s->cfg.proto->prefetch(nd->proto, stage - 1, pkt ? s->pkts[e->a].from : UINT32_MAX);
}

/* how many events ahead each prefetch stage runs */
static const unsigned pf_dist[] = {16, 12, 8, 4, 2};
#define PF_STAGES (sizeof(pf_dist) / sizeof(pf_dist[0]))

/* Take blocks of the window until none is left; a block's events run in
 * window order, prefetched a few events ahead. */
static void run_share(struct worker *w)
{
    struct sim *s = w->s;
    tl_w = w;
    for (;;) {
        unsigned b = atomic_fetch_add_explicit(&s->next_blk, 1, memory_order_relaxed);
        if (b >= NBLK) break;
        const uint32_t *ix = s->bix + s->bstart[b];
        size_t n = s->bstart[b + 1] - s->bstart[b];
        w->log = &s->logs[b];
        for (unsigned st = 0; st < PF_STAGES; st++)
            for (size_t k = 0; k < n && k < pf_dist[st]; k++) prefetch_ev(s, &s->batch[ix[k]], (int)st);
        for (size_t k = 0; k < n; k++) {
            for (unsigned st = 0; st < PF_STAGES; st++)
                if (k + pf_dist[st] < n) prefetch_ev(s, &s->batch[ix[k + pf_dist[st]]], (int)st);
            w->ev = ix[k];
            process(s, &s->batch[ix[k]]);
        }
    }
    tl_w = NULL;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct sim *s = w->s;
    unsigned seen = 0;
    for (;;) {
        /* spin a little (windows follow each other within microseconds), then sleep */
        unsigned g = atomic_load_explicit(&s->go, memory_order_acquire);
        for (int spin = 0; g == seen && spin < 20000; spin++) {
            cpu_relax();
            g = atomic_load_explicit(&s->go, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&s->mu);
            s->sleeping++;
            while ((g = atomic_load_explicit(&s->go, memory_order_acquire)) == seen && !s->quit)
                pthread_cond_wait(&s->cv, &s->mu);
            s->sleeping--;
            bool quit = s->quit;
            pthread_mutex_unlock(&s->mu);
            if (quit) return NULL;
        }
        seen = g;
        run_share(w);
        atomic_fetch_sub_explicit(&s->pending, 1, memory_order_acq_rel);
    }
}

static int workers_start(struct sim *s)
{
    s->w = calloc(s->threads, sizeof(*s->w));
    if (!s->w) return SM_ENOMEM;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    atomic_init(&s->go, 0);
    atomic_init(&s->pending, 0);
    s->par_ok = s->cfg.lat_min_us >= SIM_US && !s->cfg.proto->global_order;
    for (unsigned i = 0; i < s->threads; i++) {
        s->w[i].s = s;
        if (i == 0) continue; /* the calling thread runs share 0 */
        if (pthread_create(&s->w[i].th, NULL, worker_main, &s->w[i]) != 0) return SM_ENOMEM;
        s->w[i].started = true;
    }
    return 0;
}

static void workers_stop(struct sim *s)
{
    if (!s->w) return;
    pthread_mutex_lock(&s->mu);
    s->quit = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 1; i < s->threads; i++)
        if (s->w[i].started) pthread_join(s->w[i].th, NULL);
    for (unsigned b = 0; b < NBLK; b++) {
        free(s->logs[b].ops);
        free(s->logs[b].buf);
    }
    free(s->bix);
    free(s->w);
    s->w = NULL;
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

static void replay_op(struct sim *s, const struct oplog *l, const struct op *o)
{
    switch (o->kind) {
    case OP_SEND:
        sim_send(s, o->a, o->b, l->buf + o->off, o->len, (enum sim_pkt_class)o->x);
        break;
    case OP_TIMER:
        if (heap_push(s, o->t, EV_TIMER, o->a, o->b) < 0) oom();
        break;
    case OP_MEMBER:
        sim_member_event(s, o->a, o->b, (enum sim_member_ev)o->x);
        break;
    case OP_HOLD:
        track_hold(s, o->a, o->b);
        break;
    }
}

/* Run the popped window s->batch on the calling thread and, with @p helpers,
 * the helper threads; then replay the logs. */
static void run_window(struct sim *s, bool helpers)
{
    unsigned nt = helpers ? s->threads : 1;
    /* group the window by block (a stable counting sort) */
    s->bix = grow(s->bix, &s->bixcap, s->bn, sizeof(*s->bix), 4096);
    uint32_t cnt[NBLK + 1] = {0};
    for (size_t i = 0; i < s->bn; i++) cnt[ev_node(&s->batch[i]) % NBLK + 1]++;
    for (unsigned b = 0; b < NBLK; b++) cnt[b + 1] += cnt[b];
    memcpy(s->bstart, cnt, sizeof(s->bstart));
    for (size_t i = 0; i < s->bn; i++) s->bix[cnt[ev_node(&s->batch[i]) % NBLK]++] = (uint32_t)i;
    atomic_store_explicit(&s->next_blk, 0, memory_order_relaxed);
    if (nt > 1) {
        atomic_store_explicit(&s->pending, nt - 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->go, 1, memory_order_acq_rel);
        pthread_mutex_lock(&s->mu);
        if (s->sleeping) pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    run_share(&s->w[0]);
    for (long spin = 0; atomic_load_explicit(&s->pending, memory_order_acquire); spin++) {
        cpu_relax();
        if (spin > 20000) sched_yield(); /* the helper lost its CPU: give it ours */
    }

    size_t cur[NBLK] = {0};
    for (size_t i = 0; i < s->bn; i++) {
        const struct ev *e = &s->batch[i];
        unsigned b = ev_node(e) % NBLK;
        const struct oplog *l = &s->logs[b];
        s->now = e->t;
        while (cur[b] < l->nops && l->ops[cur[b]].ev == i) replay_op(s, l, &l->ops[cur[b]++]);
        if ((e->seqk & 1) == EV_PKT) pkt_free(s, e->a);
    }
    for (unsigned b = 0; b < NBLK; b++) s->logs[b].nops = s->logs[b].blen = 0;
    for (unsigned k = 0; k < nt; k++) {
        struct worker *w = &s->w[k];
        s->st.events += w->st.events;
        s->st.delivered += w->st.delivered;
        s->st.to_down += w->st.to_down;
        s->st.partitioned += w->st.partitioned;
        s->st.timers += w->st.timers;
        s->violations += w->violations;
        s->matching = (uint32_t)((int64_t)s->matching + w->matching);
        memset(&w->st, 0, sizeof(w->st));
        w->violations = 0;
        w->matching = 0;
    }
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
        if (!s->par_ok) {
            struct ev e = heap_pop(s);
            process(s, &e);
            n++;
            continue;
        }
        /* one millisecond window (see the notes) */
        int64_t end = (s->heap[0].t / SIM_US + 1) * SIM_US;
        if (end > t_us + 1) end = t_us + 1;
        s->bn = 0;
        while (s->hn && s->heap[0].t < end) {
            s->batch = grow(s->batch, &s->bcap, s->bn + 1, sizeof(*s->batch), 4096);
            s->batch[s->bn++] = heap_pop(s);
        }
        n += s->bn;
        /* a handoff to the helpers costs more than a small window; the
         * calling thread alone still gains from prefetching */
        size_t minw = s->cfg.min_window ? s->cfg.min_window : PAR_MIN_BATCH;
        if (s->threads > 1 && s->bn >= minw) {
            run_window(s, true);
        } else if (s->bn >= SOLO_MIN_BATCH || s->bn >= minw) {
            run_window(s, false);
        } else {
            /* nothing processed here lands inside the window, so running it
             * serially from the popped copy is the same as popping one by one */
            for (size_t i = 0; i < s->bn; i++) process(s, &s->batch[i]);
        }
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
        if (tr->held[id]) {
            tr->held[id] = 0;
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
        uint32_t *g = realloc(s->got, nc * sizeof(*g));
        if (!g) return SM_ENOMEM;
        s->got = g;
        s->acap = nc;
    }
    struct track *tr = &s->tracks[s->ntracks];
    memset(tr, 0, sizeof(*tr));
    tr->key = malloc(target->key_len + 1);
    tr->held = calloc(s->n, 1);
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
    return s->tracks[index].held[id];
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
