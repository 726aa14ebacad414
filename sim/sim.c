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
 * - Events are 32 bytes in 4-ary min-heaps keyed by (time, key). The key is
 *   the event's origin node (the sender of a packet, the owner of a timer)
 *   and that node's own event counter: unique, and decided by the origin
 *   alone, so the order never depends on addresses, heap layout or threads.
 *   Ties at the same microsecond go to the lower origin id, then to the
 *   origin's order.
 * - The network's draws (latency, loss, duplication, reordering) come from
 *   the sender's own PRNG stream, for the same reason.
 * - A packet is copied once, into a message slot that the delivery event
 *   points to (struct msg); the receiving side returns it to its own free
 *   list. Duplicates are a second copy.
 * - Each node has at most one live timer entry. When the protocol's deadline
 *   moves earlier a new entry is pushed and the old one is invalidated by the
 *   node's generation counter; when it moves later the old entry stays and is
 *   re-armed when it fires, which avoids a heap push for every postponement.
 * - After every call into a node the engine looks at its replica's root digest
 *   (O(1)); only when it changed does it check tracked updates and watched keys.
 * - Windows. Every link takes at least 1 ms and a node's timer always lands
 *   on a later millisecond, so nothing done while processing the events of
 *   one millisecond [k, k+1) ms can create an event inside it: the window's
 *   events are independent across nodes. The nodes are split into NBLK
 *   blocks (id modulo NBLK), each with its own heap. The workers (the calling
 *   thread, plus helper threads once windows are large enough) take blocks
 *   until none is left; for a block a worker first moves into its heap what
 *   other workers staged for it in the previous window, pops the events
 *   before the window's end and runs them in key order, prefetching a few
 *   events ahead. Sends and timers for the block's own nodes go straight to
 *   its heap; those for other blocks go to the worker's outbox for that block
 *   (two sets, by window parity, so a block drains last window's while this
 *   window's fill). Effects on shared state - member events for the scenario,
 *   updates reaching a node, counters - are kept per worker and applied by
 *   the calling thread after the window, sorted by (time, key). The result
 *   is the same bit for bit whatever the thread count (tests/unit/test_sim
 *   checks it). A latency under 1 ms anywhere turns the engine serial: one
 *   heap, every event in (time, key) order.
 */

enum { EV_PKT = 0, EV_TIMER = 1 };

/* A packet in flight. Up to MSG_SLOT bytes it lives in a fixed-size slot
 * taken from the sending thread's free list and returned to the receiving
 * thread's (slots move between threads but never back to malloc while the
 * simulation runs); larger ones are malloc'd. */
struct msg {
    union {
        struct msg *next; /* on a free list */
        uint32_t from;
    };
    uint32_t len;
    uint8_t data[];
};

#define MSG_SLOT 1536u

/* Event keys: origin node << KEY_SHIFT | the origin's event counter << 1 | kind.
 * Unique, and decided by the origin node alone (see the notes). */
#define KEY_SHIFT 43
#define KEY_CTR   ((UINT64_C(1) << (KEY_SHIFT - 1)) - 1)

struct ev {
    int64_t t;
    uint64_t key;
    struct msg *m; /* EV_PKT */
    uint32_t node; /* receiver, or the timer's node */
    uint32_t gen;  /* EV_TIMER: the node's timer generation */
};

struct heap {
    struct ev *v;
    size_t n, cap;
};

/* Events a worker made for another block's nodes, drained by that block's
 * owner in the next window. */
struct evbuf {
    struct ev *v;
    size_t n, cap;
};

struct tuple {
    uint64_t version, hlc;
    uint8_t prec, olen, present;
    char origin[CRDT_MAX_ORIGIN];
};

struct node {
    void *proto;
    struct crdt_replica *replica;
    struct rng rng;   /* the network's draws for packets this node sends */
    uint64_t evseq;   /* events this node made (keys) */
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

enum sop_kind { SOP_MEMBER, SOP_HOLD };

/* An effect on the scenario's shared state that a worker defers: replayed by
 * the calling thread after the window, in (time, event key, order) order. */
struct sop {
    int64_t t;
    uint64_t key;
    uint32_t sub; /* its place among its event's effects */
    uint8_t kind;
    uint8_t x;     /* SOP_MEMBER: the event */
    uint32_t a, b; /* observer,subject | track,node */
};

#define NBLK 64 /* node blocks (node id % NBLK), each with its own heap */

/* run_window() sums the workers' counters field by field as uint64_t */
_Static_assert(sizeof(struct sim_stats) % sizeof(uint64_t) == 0, "sim_stats: uint64_t fields only");

struct sim {
    struct sim_config cfg;
    struct sim_hooks hooks;
    struct sim_stats st;
    struct rng user_rng;
    int64_t now;
    /* one heap per block of nodes (a single one when serial) */
    unsigned nblk;
    struct heap heaps[NBLK];
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
    struct evbuf *out; /* [worker][parity][block] */
    unsigned par;      /* parity the running window writes */
    int64_t wend;      /* end of the running window (exclusive) */
    size_t last_window; /* events of the last window (picks helpers or not) */
    struct msg *mfree; /* free message slots of the calling thread outside windows */
    struct sop *sops;  /* the window's deferred effects, gathered */
    size_t nsops, sopcap;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint go;      /* window generation */
    atomic_uint pending; /* helpers still running the window */
    unsigned sleeping;   /* helpers waiting on cv (under mu) */
    bool quit;
    bool sync_init; /* mu and cv initialised */
    atomic_uint next_blk; /* the next block to take */
};

#define NO_BLK UINT32_MAX

struct worker {
    struct sim *s;
    pthread_t th;
    bool started;
    unsigned idx;
    uint32_t blk;        /* the block being run (its heap is ours), NO_BLK */
    int64_t now;
    uint64_t key;        /* the event being run */
    uint32_t sub;        /* effects it deferred so far */
    int64_t omin[2];     /* earliest event staged in out[idx][parity] */
    struct ev *batch;    /* the block's share of the window */
    size_t bn, bcap;
    struct sop *sops;
    size_t nsops, sopcap;
    struct sim_stats st; /* every counter, summed after the window */
    uint64_t violations;
    int64_t matching;
    size_t events;       /* events this worker ran in the window */
    struct msg *mfree;   /* free message slots */
};

/* The worker whose share of a window this thread is running (NULL: serial). */
static _Thread_local struct worker *tl_w;

#define PAR_MIN_BATCH 32 /* default: after smaller windows the calling thread runs alone */

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

static struct sop *sop_add(struct worker *w, enum sop_kind kind)
{
    w->sops = grow(w->sops, &w->sopcap, w->nsops + 1, sizeof(*w->sops), 256);
    struct sop *o = &w->sops[w->nsops++];
    o->t = w->now;
    o->key = w->key;
    o->sub = w->sub++;
    o->kind = (uint8_t)kind;
    return o;
}

static int workers_start(struct sim *s);
static void go_serial(struct sim *s);
static void workers_stop(struct sim *s);
static void msg_list_free(struct msg *m);

/* ---- heaps ---- */

static inline bool ev_less(const struct ev *x, const struct ev *y)
{
    return x->t < y->t || (x->t == y->t && x->key < y->key);
}

/* 4-ary min-heap on (time, key) */
static void heap_push(struct heap *h, const struct ev *e)
{
    h->v = grow(h->v, &h->cap, h->n + 1, sizeof(*h->v), 1024);
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 4;
        if (!ev_less(e, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = *e;
}

static struct ev heap_pop(struct heap *h)
{
    struct ev top = h->v[0];
    struct ev last = h->v[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 4 * i + 1;
        if (c >= n) break;
        size_t best = c;
        size_t end = c + 4 < n ? c + 4 : n;
        for (size_t j = c + 1; j < end; j++)
            if (ev_less(&h->v[j], &h->v[best])) best = j;
        if (!ev_less(&h->v[best], &last)) break;
        h->v[i] = h->v[best];
        i = best;
    }
    if (n > 0) h->v[i] = last;
    return top;
}

/* The next key of node @p origin (whose events only its own thread makes). */
static inline uint64_t ev_key(struct sim *s, uint32_t origin, int kind)
{
    struct node *nd = &s->nodes[origin];
    return (uint64_t)origin << KEY_SHIFT | (nd->evseq++ & KEY_CTR) << 1 | (uint64_t)kind;
}

static inline struct evbuf *outbox(const struct sim *s, unsigned w, unsigned par, unsigned b)
{
    return &s->out[((size_t)w * 2 + par) * NBLK + b];
}

/* Schedule @p e: into its block's heap when this thread owns it (serial, or
 * the worker running that block), else into the worker's outbox. */
static void ev_put(struct sim *s, const struct ev *e)
{
    unsigned b = e->node % s->nblk;
    struct worker *w = tl_w;
    if (!w || b == w->blk) {
        heap_push(&s->heaps[b], e);
        return;
    }
    struct evbuf *o = outbox(s, w->idx, s->par, b);
    o->v = grow(o->v, &o->cap, o->n + 1, sizeof(*o->v), 256);
    o->v[o->n++] = *e;
    if (e->t < w->omin[s->par]) w->omin[s->par] = e->t;
}

/* Move every staged event into its heap (serial: between windows). */
static void drain_all(struct sim *s)
{
    if (!s->out) return;
    for (unsigned w = 0; w < s->threads; w++) {
        for (unsigned par = 0; par < 2; par++) {
            for (unsigned b = 0; b < NBLK; b++) {
                struct evbuf *o = outbox(s, w, par, b);
                for (size_t i = 0; i < o->n; i++) heap_push(&s->heaps[o->v[i].node % s->nblk], &o->v[i]);
                o->n = 0;
            }
            s->w[w].omin[par] = SIM_NEVER;
        }
    }
}

/* The earliest pending event: heap tops and staged events. */
static int64_t next_time(const struct sim *s)
{
    int64_t t = SIM_NEVER;
    for (unsigned b = 0; b < s->nblk; b++)
        if (s->heaps[b].n && s->heaps[b].v[0].t < t) t = s->heaps[b].v[0].t;
    for (unsigned w = 0; s->w && w < s->threads; w++)
        for (unsigned par = 0; par < 2; par++)
            if (s->w[w].omin[par] < t) t = s->w[w].omin[par];
    return t;
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
    struct ev e = {t, ev_key(s, id, EV_TIMER), NULL, id, nd->timer_gen};
    ev_put(s, &e);
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
                struct sop *o = sop_add(tl_w, SOP_HOLD);
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
    rng_seed(&s->user_rng, cfg->seed ^ 0x7363656e6172696fULL);
    s->n = cfg->nodes;
    s->nodes = calloc(s->n, sizeof(*s->nodes));
    s->oracle = crdt_replica_new();
    if (!s->nodes || !s->oracle) goto nomem;
    s->par_ok = s->cfg.lat_min_us >= SIM_US && !s->cfg.proto->global_order;
    s->nblk = s->par_ok ? (s->n < NBLK ? s->n : NBLK) : 1;
    if (workers_start(s) < 0) goto nomem;
    for (uint32_t i = 0; i < s->n; i++) {
        s->nodes[i].timer_at = SIM_NEVER;
        rng_seed(&s->nodes[i].rng, rng_mix(cfg->seed ^ 0x6e6574776f726bULL) ^ rng_mix((uint64_t)i + 1));
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
    workers_stop(s);
    for (uint32_t i = 0; s->nodes && i < s->n; i++) {
        if (s->nodes[i].up) s->cfg.proto->node_delete(s->nodes[i].proto);
        crdt_replica_delete(s->nodes[i].replica);
    }
    for (unsigned b = 0; b < NBLK; b++) {
        for (size_t i = 0; i < s->heaps[b].n; i++) free(s->heaps[b].v[i].m);
        free(s->heaps[b].v);
    }
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
    free(s->links);
    free(s->got);
    free(s->sops);
    msg_list_free(s->mfree);
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
    if (min_us < SIM_US && s->par_ok) go_serial(s); /* windows need >= 1 ms everywhere */
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

static struct msg *msg_new(struct sim *s, size_t len)
{
    struct msg **fl = tl_w ? &tl_w->mfree : &s->mfree;
    struct msg *m;
    if (len > MSG_SLOT - sizeof(*m)) {
        m = malloc(sizeof(*m) + len);
    } else if (*fl) {
        m = *fl;
        *fl = m->next;
        /* the next allocation reads that slot's link: it was freed on
         * whichever core received it */
        if (*fl) __builtin_prefetch(*fl, 1);
    } else {
        m = malloc(MSG_SLOT);
    }
    if (!m) oom();
    m->len = (uint32_t)len;
    return m;
}

static void msg_free(struct sim *s, struct msg *m)
{
    if (m->len > MSG_SLOT - sizeof(*m)) {
        free(m);
        return;
    }
    struct msg **fl = tl_w ? &tl_w->mfree : &s->mfree;
    m->next = *fl;
    *fl = m;
}

static void msg_list_free(struct msg *m)
{
    while (m) {
        struct msg *nx = m->next;
        free(m);
        m = nx;
    }
}

static int64_t draw_latency(struct sim *s, struct sim_stats *st, uint32_t from, uint32_t to)
{
    struct rng *r = &s->nodes[from].rng;
    int64_t lo, hi;
    link_latency(s, from, to, &lo, &hi);
    int64_t lat = lo + (hi > lo ? (int64_t)(rng_next(r) % (uint64_t)(hi - lo + 1)) : 0);
    /* a slow node answers late: every packet to or from it takes slow_factor times longer */
    if (s->nodes[from].slow || s->nodes[to].slow) lat *= s->cfg.slow_factor;
    if (s->cfg.reorder > 0 && rng_double(r) < s->cfg.reorder) {
        lat += (int64_t)(rng_next(r) % (uint64_t)(2 * s->cfg.lat_max_us + 1));
        st->reordered++;
    }
    return lat;
}

static void enqueue(struct sim *s, struct sim_stats *st, uint32_t from, uint32_t to,
                    const uint8_t *buf, size_t len)
{
    struct msg *m = msg_new(s, len);
    m->from = from;
    memcpy(m->data, buf, len);
    struct ev e = {now_of(s) + draw_latency(s, st, from, to), ev_key(s, from, EV_PKT), m, to, 0};
    ev_put(s, &e);
}

void sim_send(struct sim *s, uint32_t from, uint32_t to, const uint8_t *buf, size_t len,
              enum sim_pkt_class cls)
{
    if ((unsigned)cls >= SIM_PKT_CLASSES) cls = SIM_PKT_DATA;
    struct sim_stats *st = tl_w ? &tl_w->st : &s->st;
    st->pkts[cls]++;
    st->bytes[cls] += len;
    if (to >= s->n || from >= s->n || len > s->cfg.max_pkt || len == 0) {
        st->refused++;
        return;
    }
    /* the sender's own stream: the same draws whichever thread runs it */
    struct rng *r = &s->nodes[from].rng;
    if (s->cfg.loss > 0 && rng_double(r) < s->cfg.loss) {
        st->lost++;
        return;
    }
    enqueue(s, st, from, to, buf, len);
    if (s->cfg.dup > 0 && rng_double(r) < s->cfg.dup) {
        st->duplicated++;
        enqueue(s, st, from, to, buf, len);
    }
}

void sim_member_event(struct sim *s, uint32_t observer, uint32_t subject, enum sim_member_ev ev)
{
    if (!s->hooks.member || (s->hooks.member_mask && !(s->hooks.member_mask >> ev & 1u))) return;
    if (tl_w) {
        struct sop *o = sop_add(tl_w, SOP_MEMBER);
        o->a = observer;
        o->b = subject;
        o->x = (uint8_t)ev;
        return;
    }
    s->hooks.member(s->hooks.arg, s, observer, subject, ev);
}

/* ---- event loop ---- */

/* One event. Serial (tl_w NULL): its effects happen at once. In a worker:
 * sends and timers are scheduled as they come (their keys and draws depend
 * on the node alone), effects on shared state are deferred. */
static void process(struct sim *s, const struct ev *e)
{
    struct worker *w = tl_w;
    struct sim_stats *st = w ? &w->st : &s->st;
    if (w) {
        w->now = e->t;
        w->key = e->key;
        w->sub = 0;
    } else {
        s->now = e->t;
    }
    st->events++;
    if ((e->key & 1) == EV_PKT) {
        struct msg *m = e->m;
        uint32_t to = e->node, from = m->from;
        struct node *nd = &s->nodes[to];
        if (!nd->up) {
            st->to_down++;
        } else if (nd->group != s->nodes[from].group) {
            st->partitioned++;
        } else {
            st->delivered++;
            s->cfg.proto->recv(nd->proto, sim_node_ms(s, to), from, m->data, m->len);
            after_call(s, to);
        }
        msg_free(s, m);
        return;
    }
    uint32_t id = e->node;
    struct node *nd = &s->nodes[id];
    if (!nd->up || e->gen != nd->timer_gen) return; /* stale entry */
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
    const struct node *nd = &s->nodes[e->node];
    bool pkt = (e->key & 1) == EV_PKT;
    if (stage == 0) {
        __builtin_prefetch(nd);
        if (pkt) __builtin_prefetch(e->m);
        return;
    }
    if (!nd->proto || !s->cfg.proto->prefetch) return;
    if (stage == 1) __builtin_prefetch(nd->replica);
    s->cfg.proto->prefetch(nd->proto, stage - 1, pkt ? e->m->from : UINT32_MAX);
}

/* how many events ahead each prefetch stage runs */
static const unsigned pf_dist[] = {16, 12, 8, 4, 2};
#define PF_STAGES (sizeof(pf_dist) / sizeof(pf_dist[0]))

/* Block @p b's share of the window: take in what other workers staged for
 * it last window, pop its events before the window's end and run them in
 * (time, key) order, prefetched a few events ahead. */
static void run_block(struct worker *w, unsigned b)
{
    struct sim *s = w->s;
    struct heap *h = &s->heaps[b];
    unsigned dp = s->par ^ 1;
    for (unsigned k = 0; k < s->threads; k++) {
        struct evbuf *o = outbox(s, k, dp, b);
        for (size_t i = 0; i < o->n; i++) heap_push(h, &o->v[i]);
        o->n = 0;
    }
    w->bn = 0;
    while (h->n && h->v[0].t < s->wend) {
        w->batch = grow(w->batch, &w->bcap, w->bn + 1, sizeof(*w->batch), 256);
        w->batch[w->bn++] = heap_pop(h);
    }
    size_t n = w->bn;
    w->events += n;
    w->blk = b;
    for (unsigned st = 0; st < PF_STAGES; st++)
        for (size_t k = 0; k < n && k < pf_dist[st]; k++) prefetch_ev(s, &w->batch[k], (int)st);
    for (size_t k = 0; k < n; k++) {
        for (unsigned st = 0; st < PF_STAGES; st++)
            if (k + pf_dist[st] < n) prefetch_ev(s, &w->batch[k + pf_dist[st]], (int)st);
        process(s, &w->batch[k]);
    }
    w->blk = NO_BLK;
}

/* Take blocks of the window until none is left. */
static void run_share(struct worker *w)
{
    struct sim *s = w->s;
    tl_w = w;
    for (;;) {
        unsigned b = atomic_fetch_add_explicit(&s->next_blk, 1, memory_order_relaxed);
        if (b >= s->nblk) break;
        run_block(w, b);
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
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->sync_init = true;
    s->w = calloc(s->threads, sizeof(*s->w));
    s->out = calloc((size_t)s->threads * 2 * NBLK, sizeof(*s->out));
    if (!s->w || !s->out) return SM_ENOMEM;
    atomic_init(&s->go, 0);
    atomic_init(&s->pending, 0);
    for (unsigned i = 0; i < s->threads; i++) {
        struct worker *w = &s->w[i];
        w->s = s;
        w->idx = i;
        w->blk = NO_BLK;
        w->omin[0] = w->omin[1] = SIM_NEVER;
    }
    for (unsigned i = 1; i < s->threads; i++) {
        /* the calling thread runs share 0 */
        if (pthread_create(&s->w[i].th, NULL, worker_main, &s->w[i]) != 0) return SM_ENOMEM;
        s->w[i].started = true;
    }
    return 0;
}

static void workers_stop(struct sim *s)
{
    if (s->out) {
        for (size_t i = 0; i < (size_t)s->threads * 2 * NBLK; i++) {
            for (size_t k = 0; k < s->out[i].n; k++) free(s->out[i].v[k].m);
            free(s->out[i].v);
        }
        free(s->out);
        s->out = NULL;
    }
    if (!s->w) {
        if (s->sync_init) {
            pthread_cond_destroy(&s->cv);
            pthread_mutex_destroy(&s->mu);
        }
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->quit = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 1; i < s->threads; i++)
        if (s->w[i].started) pthread_join(s->w[i].th, NULL);
    for (unsigned i = 0; i < s->threads; i++) {
        free(s->w[i].batch);
        free(s->w[i].sops);
        msg_list_free(s->w[i].mfree);
    }
    free(s->w);
    s->w = NULL;
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

static int sop_cmp(const void *pa, const void *pb)
{
    const struct sop *a = pa, *b = pb;
    if (a->t != b->t) return a->t < b->t ? -1 : 1;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return a->sub < b->sub ? -1 : a->sub > b->sub;
}

/* Run the window [now, @p end) on the calling thread and, with @p helpers,
 * the helper threads; then sum the workers' counters and replay their
 * deferred effects in (time, key) order. */
static void run_window(struct sim *s, int64_t end, bool helpers)
{
    unsigned nt = helpers ? s->threads : 1;
    s->wend = end;
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
    /* the parity just drained is empty everywhere; the next window drains this one */
    for (unsigned k = 0; k < s->threads; k++) s->w[k].omin[s->par ^ 1] = SIM_NEVER;
    s->par ^= 1;

    s->nsops = 0;
    s->last_window = 0;
    for (unsigned k = 0; k < s->threads; k++) {
        struct worker *w = &s->w[k];
        uint64_t *to = (uint64_t *)&s->st;
        const uint64_t *from = (const uint64_t *)&w->st;
        for (size_t i = 0; i < sizeof(s->st) / sizeof(uint64_t); i++) to[i] += from[i];
        memset(&w->st, 0, sizeof(w->st));
        s->violations += w->violations;
        s->matching = (uint32_t)((int64_t)s->matching + w->matching);
        w->violations = 0;
        w->matching = 0;
        s->last_window += w->events;
        w->events = 0;
        if (w->nsops) {
            s->sops = grow(s->sops, &s->sopcap, s->nsops + w->nsops, sizeof(*s->sops), 256);
            memcpy(s->sops + s->nsops, w->sops, w->nsops * sizeof(*w->sops));
            s->nsops += w->nsops;
            w->nsops = 0;
        }
    }
    if (s->nsops > 1) qsort(s->sops, s->nsops, sizeof(*s->sops), sop_cmp);
    for (size_t i = 0; i < s->nsops; i++) {
        const struct sop *o = &s->sops[i];
        s->now = o->t;
        if (o->kind == SOP_HOLD)
            track_hold(s, o->a, o->b);
        else
            sim_member_event(s, o->a, o->b, (enum sim_member_ev)o->x);
    }
    if (end - 1 > s->now) s->now = end - 1;
}

/* A latency under 1 ms was set: from now on one heap, every event in order. */
static void go_serial(struct sim *s)
{
    drain_all(s);
    for (unsigned b = 1; b < s->nblk; b++) {
        for (size_t i = 0; i < s->heaps[b].n; i++) heap_push(&s->heaps[0], &s->heaps[b].v[i]);
        s->heaps[b].n = 0;
    }
    s->nblk = 1;
    s->par_ok = false;
}

/* The block whose heap holds the earliest event (serial). */
static struct heap *first_heap(const struct sim *s)
{
    const struct heap *best = NULL;
    for (unsigned b = 0; b < s->nblk; b++) {
        const struct heap *h = &s->heaps[b];
        if (h->n && (!best || ev_less(&h->v[0], &best->v[0]))) best = h;
    }
    return (struct heap *)best;
}

bool sim_step(struct sim *s)
{
    struct heap *h = first_heap(s);
    if (!h) return false;
    struct ev e = heap_pop(h);
    process(s, &e);
    return true;
}

int64_t sim_next_event(const struct sim *s)
{
    return next_time(s);
}

uint64_t sim_run_until(struct sim *s, int64_t t_us)
{
    uint64_t n0 = s->st.events;
    if (s->par_ok) {
        size_t minw = s->cfg.min_window ? s->cfg.min_window : PAR_MIN_BATCH;
        /* a hook may make the engine serial (a latency under 1 ms) */
        while (s->par_ok) {
            /* one millisecond window (see the notes) */
            int64_t t = next_time(s);
            if (t == SIM_NEVER || t > t_us) break;
            int64_t end = (t / SIM_US + 1) * SIM_US;
            if (end > t_us + 1) end = t_us + 1;
            if (t > s->now) s->now = t;
            /* a handoff to the helpers costs more than a small window; the
             * calling thread alone still gains from prefetching */
            run_window(s, end, s->threads > 1 && s->last_window >= minw);
        }
        /* the last window's staged events: outside a run every event is in
         * its heap (serial pushes go there directly), so sim_step and the
         * next run start from the heaps alone */
        drain_all(s);
    }
    if (!s->par_ok) {
        struct heap *h = &s->heaps[0];
        while (h->n && h->v[0].t <= t_us) {
            struct ev e = heap_pop(h);
            process(s, &e);
        }
    }
    if (t_us > s->now) s->now = t_us;
    return s->st.events - n0;
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
