/* node.c: the sans-IO gossip node: SWIM + Lifeguard membership, Plumtree dissemination,
 * hierarchical-digest anti-entropy.
 *
 * Design. A node is driven by three entry points (recv, on_timeout, the write
 * calls) and talks only through the send callback, so the same code runs
 * under libev and in the simulator.
 *
 * Membership is SWIM: once per protocol period the node pings the next member
 * of a shuffled round-robin list; without an ack within the probe timeout it
 * asks k others to ping the target for it (they answer ack or, Lifeguard, nack);
 * without any ack by the end of the period the target becomes suspect. A
 * suspect refutes by bumping its incarnation; otherwise it is declared dead
 * when its suspicion timer runs out. The timer starts long and shrinks with
 * every independent accuser (Lifeguard's dynamic suspicion), and a node's own
 * probe timeouts stretch with its local health score, which grows when it
 * misses acks or nacks (a sign that *it* is the slow one). Membership changes
 * ("rumors") are piggybacked on probe traffic λ·log N times and, on first
 * receipt, also sent along the broadcast tree so the whole cluster hears of a
 * death or a refutation within a few network hops.
 *
 * Every packet header carries the sender's id and incarnation: a direct packet
 * from a member we hold as dead with an older incarnation makes us tell it
 * (so it refutes), and a newer incarnation revives it at once. Together with
 * probing a random dead member every second, this heals partitions.
 *
 * Dissemination is Plumtree over a small random peer set: a record is pushed at
 * once to the eager peers and announced (IHAVE, batched per gossip tick) to the
 * lazy ones; a duplicate eager copy prunes the link, a missing announced record
 * is grafted after a short wait. Links are symmetric: a peer that talks
 * Plumtree to us becomes our peer.
 *
 * Anti-entropy: every ae interval the node sends a random member its replica
 * root and 32 group digests (XOR of 32 leaves each). The peer answers the
 * leaves of differing groups; for differing leaves the initiator lists its
 * record ids; the peer sends the records the initiator lacks and asks for the
 * ones it lacks. Records learned this way are re-broadcast on the tree, which
 * is what makes a healed partition converge in seconds.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "statemesh.h"
#include "crdt/replica.h"
#include "crypto/crypto.h"
#include "gossip/node.h"
#include "gossip/wire.h"

_Static_assert(GOSSIP_LEAVES == CRDT_DIGEST_LEAVES, "digest leaves mismatch");

#define MAX_PEERS     16  /* Plumtree peer slots (chosen + inbound) */
#define MAX_RELAYS    16  /* concurrent indirect probes we relay */
#define MAX_MISSING   64  /* announced records we wait for */
#define MAX_ANNOUNCE  4   /* announcers remembered per missing record */
#define RECENT_CAP    256 /* recently seen record ids (dedup, graft answers) */
#define RECENT_QUICK  8   /* newest ones a received record is checked against first */
#define LAZY_CAP      256 /* ids waiting to be announced */
#define FRESH_MAX     64  /* records to forward, per call */
#define MAX_ACCUSERS  4
#define GRAFT_TRIES   4  /* rounds over a missing record's announcers */
#define EARLY_MAX     16 /* joiners told when we become rooted */
#define MAINT_MS      400
#define GRID_MAX_MS   200 /* periodic timers fall on a grid this fine at most */
#define RUMOR_CAP     128 /* membership changes queued for piggybacking */
#define RUMOR_PER_PKT 16  /* piggybacked per packet at most */
#define PKT_MAX       65536
#define SYNC_WALK_MS  2000 /* membership pulls this soon after a join walk whole lists */

struct member {
    /* 10,000 simulated nodes keep 1,024 of these each: cold fields first, the
     * id sized to fit (a lookup reads hash-matched members' id_len and id) */
    uint64_t since;
    uint64_t susp_start, susp_deadline;
    uint64_t last_notice; /* last "you are dead/suspect" notice sent to it */
    uint64_t unlinked;    /* when we last dropped our link to it (0: never) */
    uint32_t acc[MAX_ACCUSERS]; /* hashes of independent accusers */
    uint32_t idx;  /* position in node->members */
    int32_t rumor; /* index in node->rumors, -1 */
    int32_t peer;  /* Plumtree slot, -1 */
    uint8_t n_acc;
    bool in_susp;   /* listed in node->susp */
    bool in_dead;   /* listed in node->dead */
    bool accused;   /* we suspect it from our own probe */
    bool verifying; /* our own check before a heard-of suspicion expires */
    bool self;
    uint8_t cert_left; /* packets to it that still carry our certificate */
    uint8_t id_cap;    /* bytes allocated for id */
    uint64_t hash;
    uint64_t inc;
    uint8_t state;
    uint8_t id_len;
    struct sm_addr addr;
    char id[]; /* id_cap bytes */
};

/* Room for an id of @p len bytes: rounded up, so that a recycled member
 * (evict) mostly fits its newcomer's id. */
static size_t id_room(size_t len)
{
    return len <= 8 ? 8 : len <= 24 ? 24 : CRDT_MAX_ORIGIN;
}

/* A new (or restarted) peer may not know our certificate yet, so the first
 * packets to it carry it in the envelope; without it the peer could not
 * verify them (it learns certificates from join and alive messages only). */
#define CERT_SENDS 3

#define WHOIS_RING 8
struct whois_ask {
    uint64_t hash; /* of the origin id */
    uint64_t at;   /* mono ms of the last question */
};

struct slot {
    uint64_t hash;
    struct member *m; /* NULL: empty */
};

struct rumor {
    struct member *m;
    uint8_t type; /* GOSSIP_ALIVE/SUSPECT/DEAD/LEAVE */
    uint8_t from_len;
    uint16_t left;
    uint64_t inc;
    char from[CRDT_MAX_ORIGIN];
};

/* Link receipts: every packet of records on a link starts with the ids the
 * previous one carried, so a receiver learns at the next packet (or at the
 * next gossip tick, when the link goes quiet) which records were lost on
 * the way and grafts them from that peer at once, instead of waiting for
 * anti-entropy. Without loss they cost 8 bytes a record and, at the end of a
 * burst, one small packet per link. */
#define RCPT_MAX 32

struct peer {
    struct member *m;
    struct sm_addr addr; /* m->addr, kept here: forwarding reads no member struct */
    bool eager;
    bool chosen;    /* picked by us (counts against active_view) */
    bool confirmed; /* the peer has sent us something since the link was made */
    uint8_t n_tx, n_rx, n_prev;
    uint64_t linked_at; /* when we made the link (or last asked for it again) */
    uint64_t tx_at;     /* when the packet the receipt describes went out */
};

/* A peer slot's receipt ids (apart from struct peer, so the peers' hot
 * fields share a few cache lines) */
struct peer_ids {
    uint64_t tx[RCPT_MAX];   /* records of our last packet to it, not yet receipted */
    uint64_t prev[RCPT_MAX]; /* receipted once: repeated in the next receipt */
    uint64_t rx[RCPT_MAX];   /* records it sent us since its last receipt */
};

struct relay {
    bool used;
    uint32_t my_seq, their_seq;
    struct sm_addr to;
    uint64_t deadline;
};

struct recent {
    uint64_t id;
    uint32_t knows; /* peer slots known to hold it */
    uint16_t leaf;
    uint8_t round;
    bool used;
};

struct missing {
    uint64_t id;
    uint64_t deadline;
    uint8_t round;
    uint8_t n_ann, next, tries;
    struct member *ann[MAX_ANNOUNCE];
};

struct lazy_id {
    uint64_t id;
    uint8_t round;
};

struct fresh {
    size_t off, len;
    uint64_t id;
    struct member *src;
};

struct sm_node {
    /* what most calls read and write comes first; the large tables last */
    struct sm_node_config cfg;
    char id[CRDT_MAX_ORIGIN];
    struct crdt_replica *rep;
    struct smc_ctx *crypto;
    struct sm_node_stats st;
    uint64_t rng;
    uint64_t env_seq;
    bool left;
    bool hold;            /* sm_node_hold(): published records wait for sm_node_flush() */
    bool accused_now;     /* the packet being processed says we are suspect or dead */
    int busy;             /* re-entrancy depth (callbacks) */
    uint64_t last_change; /* mono ms of the last local or remote replica change */
    uint64_t t_ae_ack;    /* no digest rides on an ack before this */
    uint64_t t_probe, t_gossip, t_ae, t_maint, t_dead_probe, t_rejoin, t_shuffle, t_sweep;
    uint64_t t_sync;     /* next membership push-pull */
    uint32_t sync_every; /* its period: doubles from 1 s to 60 s after a join */
    bool sync_walk;      /* follow page cursors to the end of the peer's list */
    uint64_t next;
    uint64_t grid_phase, grid; /* periodic timers' grid (on_grid) */
    struct sm_time now;

    struct member *self;
    struct member **members;
    size_t n_members, cap_members;
    struct slot *tab; /* open addressing by id hash */
    size_t tab_cap;   /* power of two */
    size_t n_alive_other;

    struct member **probe_list;
    size_t probe_n, probe_pos, probe_cap;
    bool probe_dirty;

    struct member **susp;
    size_t n_susp, cap_susp;
    struct member **dead;
    size_t n_dead, cap_dead;

    struct rumor *rumors;
    size_t n_rumors, cap_rumors, rumor_pos;

    uint32_t seq;
    /* the probe in flight */
    struct {
        bool active, acked, indirect;
        struct member *target;
        uint32_t seq;
        uint64_t direct_deadline, end;
        unsigned nacks_expected, nacks;
    } pr;
    uint32_t lh; /* Lifeguard local health */
    uint32_t n_relays; /* relays[] in use */

    size_t recent_pos;
    size_t n_missing;
    size_t n_lazy;
    uint8_t *fresh_buf; /* encoded REC messages to forward (grows on demand) */
    size_t fresh_len, fresh_cap;
    size_t n_fresh;

    struct sm_addr *seeds;
    size_t n_seeds;
    bool seed_heard;      /* a seed has answered since the last sm_node_join() */
    uint32_t rejoin_wait; /* retry period while not alone but unheard by the seeds */
    uint32_t rejoin_tries;
    size_t n_early;

    size_t n_peers;
    struct peer peers[MAX_PEERS];

    /* tables */
    struct peer_ids pids[MAX_PEERS];
    struct recent recent[RECENT_CAP];
    struct fresh fresh[FRESH_MAX];
    struct lazy_id lazy[LAZY_CAP];
    struct missing missing[MAX_MISSING];
    struct relay relays[MAX_RELAYS];
    struct whois_ask asked[WHOIS_RING];
    struct sm_addr early[EARLY_MAX]; /* joined through us before we were rooted */
};

/* Scratch shared by the nodes of a thread (see node.h: no synchronous
 * re-entry from the send callback), so that 10,000 simulated nodes do not
 * each carry ~150 KiB of buffers. */
static _Thread_local struct {
    uint8_t pkt[PKT_MAX];   /* ad-hoc packets */
    uint8_t reply[PKT_MAX]; /* the reply being built while a packet is processed */
    uint8_t wire[PKT_MAX];  /* sealed packet */
    uint8_t old[4096];      /* copy of a replaced record for on_record */
    struct gossip_packet in;
} S;

/* ------------------------------------------------------------------------ */
/* Small helpers */

static uint64_t rng_next(struct sm_node *n)
{
    /* splitmix64: tiny, good enough for peer selection, reproducible */
    uint64_t z = (n->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t rng_below(struct sm_node *n, size_t k)
{
    return k ? (size_t)(rng_next(n) % k) : 0;
}

static uint64_t id_hash(const char *id, size_t len)
{
    /* FNV-1a: ids are short; the table only needs spread */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)id[i]) * 1099511628211ull;
    /* FNV's low bits depend only on the inputs' low bits ("n1".."n9999" would
     * cluster in a power-of-two table): finish with a full avalanche */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h ? h : 1;
}

static bool addr_eq(const struct sm_addr *a, const struct sm_addr *b)
{
    return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

static bool is_self_id(const struct sm_node *n, const char *id, size_t len)
{
    return len == n->cfg.id_len && memcmp(id, n->id, len) == 0;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* @p t rounded up to the node's timer grid: the periodic timers (probe,
 * gossip tick, anti-entropy, maintenance) fall on the same instants, so a
 * node wakes for them together rather than one by one. */
static uint64_t on_grid(const struct sm_node *n, uint64_t t)
{
    uint64_t g = n->grid, ph = n->grid_phase;
    if (g <= 1) return t;
    if (t <= ph) return ph;
    return ph + (t - ph + g - 1) / g * g;
}

static void member_info(const struct member *m, struct sm_member_info *i)
{
    i->id = m->id;
    i->id_len = m->id_len;
    i->addr = m->addr;
    i->incarnation = m->inc;
    i->state = (enum sm_member_state)m->state;
    i->state_since_ms = m->since;
    i->self = m->self;
}

static void emit(struct sm_node *n, enum sm_member_event ev, const struct member *m)
{
    if (!n->cfg.cb.on_member) return;
    struct sm_member_info i;
    member_info(m, &i);
    n->busy++;
    n->cfg.cb.on_member(n->cfg.ud, ev, &i);
    n->busy--;
}

/* ------------------------------------------------------------------------ */
/* Member table */

static struct member *mfind(const struct sm_node *n, const char *id, size_t len)
{
    if (!len || len > CRDT_MAX_ORIGIN) return NULL;
    uint64_t h = id_hash(id, len);
    /* the hash sits in the slot, so a probe past other members costs no
     * trip to their (cold) structs: at 10,000 simulated nodes every member
     * struct is a cache miss */
    for (size_t i = h & (n->tab_cap - 1);; i = (i + 1) & (n->tab_cap - 1)) {
        const struct slot *sl = &n->tab[i];
        if (!sl->m) return NULL;
        if (sl->hash == h && sl->m->id_len == len && memcmp(sl->m->id, id, len) == 0) return sl->m;
    }
}

void sm_node_prefetch(const struct sm_node *n, int stage, const char *sender, size_t len)
{
    if (!n) return;
    if (stage == 0) {
        /* the lines every receive reads: the header, the peers' slots */
        __builtin_prefetch(&n->cfg.cb);
        __builtin_prefetch(&n->rep);
        __builtin_prefetch(&n->st.pkts_recv);
        __builtin_prefetch(&n->t_probe);
        __builtin_prefetch(&n->self);
        __builtin_prefetch(&n->rumors);
        __builtin_prefetch(&n->recent_pos);
        __builtin_prefetch(&n->peers[0]);
        __builtin_prefetch(&n->peers[1]);
        __builtin_prefetch(&n->peers[2]);
        __builtin_prefetch(&n->peers[3]);
        return;
    }
    if (stage == 1) {
        /* forwarding appends to each peer's receipt ids; a duplicate looks
         * through the newest recent ids */
        size_t np = n->n_peers < MAX_PEERS ? n->n_peers : MAX_PEERS;
        for (size_t i = 0; i < np; i++) {
            unsigned t = n->peers[i].n_tx;
            if (t < RCPT_MAX) __builtin_prefetch(&n->pids[i].tx[t]);
        }
        __builtin_prefetch(&n->recent[(n->recent_pos + RECENT_CAP - 1) % RECENT_CAP]);
    }
    if (!len || len > CRDT_MAX_ORIGIN || !n->tab) return;
    const struct slot *sl = &n->tab[id_hash(sender, len) & (n->tab_cap - 1)];
    if (stage == 1)
        __builtin_prefetch(sl);
    else if (sl->m)
        __builtin_prefetch(&sl->m->hash), __builtin_prefetch(sl->m->id);
}

static void tab_put(struct slot *tab, size_t cap, struct member *m)
{
    size_t i = m->hash & (cap - 1);
    while (tab[i].m) i = (i + 1) & (cap - 1);
    tab[i].hash = m->hash;
    tab[i].m = m;
}

static int tab_grow(struct sm_node *n)
{
    size_t cap = n->tab_cap * 2;
    struct slot *t = calloc(cap, sizeof(*t));
    if (!t) return SM_ENOMEM;
    for (size_t i = 0; i < n->n_members; i++) tab_put(t, cap, n->members[i]);
    free(n->tab);
    n->tab = t;
    n->tab_cap = cap;
    return 0;
}

static void tab_del(struct sm_node *n, struct member *m)
{
    size_t mask = n->tab_cap - 1, i = m->hash & mask;
    while (n->tab[i].m != m) i = (i + 1) & mask;
    /* backward-shift deletion keeps probe chains intact without tombstones */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!n->tab[j].m) break;
        size_t k = n->tab[j].hash & mask;
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            n->tab[i] = n->tab[j];
            i = j;
        }
    }
    n->tab[i].m = NULL;
    n->tab[i].hash = 0;
}

static int vec_push(struct member ***v, size_t *len, size_t *cap, struct member *m)
{
    if (*len == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        struct member **p = realloc(*v, nc * sizeof(*p));
        if (!p) return SM_ENOMEM;
        *v = p;
        *cap = nc;
    }
    (*v)[(*len)++] = m;
    return 0;
}

static bool live_state(uint8_t s);
static void rumor_drop(struct sm_node *n, size_t i);

/* A full table makes room by recycling a random member that nothing depends
 * on (not self, not a tree peer, not being probed): a random partial view. */
static struct member *evict(struct sm_node *n)
{
    for (int tries = 0; tries < 16; tries++) {
        struct member *v = n->members[rng_below(n, n->n_members)];
        if (v->self || v->peer >= 0 || v == n->pr.target) continue;
        if (v->rumor >= 0) rumor_drop(n, (size_t)v->rumor);
        for (size_t i = 0; i < n->n_missing; i++)
            for (unsigned k = 0; k < n->missing[i].n_ann; k++)
                if (n->missing[i].ann[k] == v) n->missing[i].ann[k] = n->missing[i].ann[0];
        for (size_t i = 0; i < n->n_fresh; i++)
            if (n->fresh[i].src == v) n->fresh[i].src = NULL;
        tab_del(n, v);
        n->st.members[v->state]--;
        if (live_state(v->state)) n->n_alive_other--;
        return v;
    }
    return NULL;
}

static struct member *madd(struct sm_node *n, const char *id, size_t len, uint64_t inc,
                           const struct sm_addr *addr, uint64_t now)
{
    struct member *m;
    bool fresh_slot = true;
    if (n->n_members >= n->cfg.max_members && n->n_members > 0) {
        m = evict(n);
        if (!m) return NULL;
        fresh_slot = false;
        uint32_t idx = m->idx;
        bool in_s = m->in_susp, in_d = m->in_dead;
        uint8_t cap = m->id_cap;
        if (len > cap) {
            /* the newcomer's id is longer: a larger struct in the same places */
            struct member *b = realloc(m, sizeof(*m) + id_room(len));
            if (!b) {
                /* out of memory: the evicted member stays as it was */
                tab_put(n->tab, n->tab_cap, m);
                n->st.members[m->state]++;
                if (live_state(m->state)) n->n_alive_other++;
                return NULL;
            }
            for (size_t i = 0; i < n->probe_n; i++)
                if (n->probe_list[i] == m) n->probe_list[i] = b;
            for (size_t i = 0; i < n->n_susp; i++)
                if (n->susp[i] == m) n->susp[i] = b;
            for (size_t i = 0; i < n->n_dead; i++)
                if (n->dead[i] == m) n->dead[i] = b;
            n->members[idx] = b;
            m = b;
            cap = (uint8_t)id_room(len);
        }
        memset(m, 0, sizeof(*m));
        m->idx = idx;
        m->in_susp = in_s;
        m->in_dead = in_d;
        m->id_cap = cap;
    } else {
        if ((n->n_members + 1) * 2 > n->tab_cap && tab_grow(n)) return NULL;
        m = calloc(1, sizeof(*m) + id_room(len));
        if (!m) return NULL;
        if (vec_push(&n->members, &n->n_members, &n->cap_members, m)) {
            free(m);
            return NULL;
        }
        m->idx = (uint32_t)(n->n_members - 1);
        m->id_cap = (uint8_t)id_room(len);
    }
    memcpy(m->id, id, len);
    m->id_len = (uint8_t)len;
    m->inc = inc;
    m->addr = *addr;
    m->state = SM_MEMBER_ALIVE;
    m->since = now;
    m->hash = id_hash(id, len);
    m->rumor = -1;
    m->peer = -1;
    m->cert_left = CERT_SENDS;
    tab_put(n->tab, n->tab_cap, m);
    n->st.members[SM_MEMBER_ALIVE]++;
    n->n_alive_other++;
    /* a new member goes to a random place of the remaining probe round */
    if (fresh_slot && vec_push(&n->probe_list, &n->probe_n, &n->probe_cap, m) == 0) {
        size_t lo = n->probe_pos, span = n->probe_n - lo;
        size_t j = lo + rng_below(n, span);
        struct member *t = n->probe_list[j];
        n->probe_list[j] = m;
        n->probe_list[n->probe_n - 1] = t;
    }
    return m;
}

static bool live_state(uint8_t s)
{
    return s == SM_MEMBER_ALIVE || s == SM_MEMBER_SUSPECT;
}

static void peer_remove(struct sm_node *n, struct member *m);

static void set_state(struct sm_node *n, struct member *m, uint8_t st)
{
    if (m->state == st) return;
    bool was_live = live_state(m->state), is_live = live_state(st);
    n->st.members[m->state]--;
    n->st.members[st]++;
    m->state = st;
    m->since = n->now.mono_ms;
    if (!m->self && was_live != is_live) {
        if (is_live)
            n->n_alive_other++;
        else
            n->n_alive_other--;
    }
    if (st == SM_MEMBER_SUSPECT && !m->in_susp) {
        if (vec_push(&n->susp, &n->n_susp, &n->cap_susp, m) == 0) m->in_susp = true;
    }
    if ((st == SM_MEMBER_DEAD || st == SM_MEMBER_LEFT) && !m->in_dead) {
        if (vec_push(&n->dead, &n->n_dead, &n->cap_dead, m) == 0) m->in_dead = true;
    }
    if (!is_live && m->peer >= 0) peer_remove(n, m);
    if (st != SM_MEMBER_SUSPECT) m->n_acc = 0, m->accused = false, m->verifying = false;
}

/* ------------------------------------------------------------------------ */
/* Sending */

static size_t payload_cap(const struct sm_node *n, unsigned seal_flags)
{
    size_t cap = n->cfg.mtu;
    if (n->crypto) {
        size_t o = smc_seal_overhead(n->crypto, seal_flags);
        cap = o < cap ? cap - o : 0;
    }
    return cap;
}

static void pkt_begin_buf(struct sm_node *n, struct gossip_enc *e, uint8_t *buf, size_t cap)
{
    /* room for an attached certificate is always kept (see CERT_SENDS) */
    size_t pc = payload_cap(n, n->crypto ? SMC_SEAL_CERT : 0);
    if (cap > pc) cap = pc;
    (void)gossip_enc_begin(e, buf, cap, n->id, n->cfg.id_len, n->self->inc);
}

static void pkt_begin(struct sm_node *n, struct gossip_enc *e, size_t cap)
{
    pkt_begin_buf(n, e, S.pkt, cap);
}

static bool pkt_empty(const struct gossip_enc *e)
{
    return e->n_msgs == 0;
}

static void pkt_send(struct sm_node *n, const struct sm_addr *to, struct gossip_enc *e,
                     enum sm_pkt_class cls, unsigned seal_flags)
{
    size_t len = gossip_enc_finish(e);
    const uint8_t *out = e->buf;
    if (n->crypto) {
        size_t olen;
        if (!(seal_flags & SMC_SEAL_CERT)) {
            struct member *m = NULL;
            for (size_t i = 0; i < n->n_members && !m; i++)
                if (addr_eq(&n->members[i]->addr, to)) m = n->members[i];
            if (!m || m->cert_left) {
                seal_flags |= SMC_SEAL_CERT;
                if (m) m->cert_left--;
            }
        }
        if (smc_seal(n->crypto, ++n->env_seq, seal_flags, e->buf, len, S.wire, sizeof(S.wire),
                     &olen) != 0) {
            n->st.encode_overflow++;
            return;
        }
        out = S.wire;
        len = olen;
    }
    n->st.pkts_sent[cls]++;
    n->st.bytes_sent[cls] += len;
    n->busy++;
    n->cfg.cb.send(n->cfg.ud, to, out, len, cls);
    n->busy--;
}

/* ------------------------------------------------------------------------ */
/* Rumors (membership changes to piggyback) */

static unsigned rumor_budget(const struct sm_node *n)
{
    double lg = ceil(log10((double)n->n_members + 1.0));
    if (lg < 1) lg = 1;
    return n->cfg.retransmit_mult * (unsigned)lg;
}

static void rumor_queue(struct sm_node *n, struct member *m, uint8_t type, const char *from,
                        size_t from_len)
{
    struct rumor *r;
    n->st.rumors_queued++;
    if (m->rumor < 0 && n->n_rumors >= RUMOR_CAP) {
        /* bounded queue: a join storm must not keep every packet full for
         * minutes; the oldest plain ALIVE goes first (deaths, suspicions and
         * refutations also travel the broadcast tree) */
        size_t victim = SIZE_MAX;
        uint16_t best = UINT16_MAX;
        for (size_t i = 0; i < n->n_rumors; i++) {
            uint16_t score = n->rumors[i].left + (n->rumors[i].type == GOSSIP_ALIVE ? 0 : 256);
            if (score < best) best = score, victim = i;
        }
        if (victim != SIZE_MAX) rumor_drop(n, victim);
    }
    if (m->rumor >= 0) {
        r = &n->rumors[m->rumor];
    } else {
        if (n->n_rumors == n->cap_rumors) {
            size_t nc = n->cap_rumors ? n->cap_rumors * 2 : 64;
            struct rumor *p = realloc(n->rumors, nc * sizeof(*p));
            if (!p) return;
            n->rumors = p;
            n->cap_rumors = nc;
        }
        m->rumor = (int32_t)n->n_rumors;
        r = &n->rumors[n->n_rumors++];
    }
    r->m = m;
    r->type = type;
    r->inc = m->inc;
    r->left = (uint16_t)rumor_budget(n);
    r->from_len = 0;
    if (from && from_len <= CRDT_MAX_ORIGIN) {
        memcpy(r->from, from, from_len);
        r->from_len = (uint8_t)from_len;
    }
}

static void rumor_drop(struct sm_node *n, size_t i)
{
    n->rumors[i].m->rumor = -1;
    n->n_rumors--;
    if (i != n->n_rumors) {
        n->rumors[i] = n->rumors[n->n_rumors];
        n->rumors[i].m->rumor = (int32_t)i;
    }
}

static int enc_rumor(struct sm_node *n, struct gossip_enc *e, const struct rumor *r)
{
    const struct member *m = r->m;
    if (r->type == GOSSIP_ALIVE) {
        const uint8_t *cert = NULL;
        size_t cl = 0;
        if (n->crypto) cert = smc_trust_get_encoded(n->crypto, m->id, m->id_len, &cl);
        return gossip_enc_alive(e, m->id, m->id_len, r->inc, &m->addr, cert, cl);
    }
    const char *from = r->from_len ? r->from : n->id;
    size_t fl = r->from_len ? r->from_len : n->cfg.id_len;
    return gossip_enc_member(e, r->type, m->id, m->id_len, r->inc, from, fl);
}

/* Fill the rest of a packet with rumors, least-sent first in spirit: we walk
 * the queue round-robin from where the last packet stopped. */
static void piggyback(struct sm_node *n, struct gossip_enc *e)
{
    size_t tried = 0;
    while (n->n_rumors && tried < n->n_rumors && tried < RUMOR_PER_PKT && gossip_enc_room(e) > 16) {
        if (n->rumor_pos >= n->n_rumors) n->rumor_pos = 0;
        struct rumor *r = &n->rumors[n->rumor_pos];
        if (enc_rumor(n, e, r) != 0) break;
        tried++;
        if (--r->left == 0) {
            rumor_drop(n, n->rumor_pos);
        } else {
            n->rumor_pos++;
        }
    }
}

/* Send the newest state of @p m to every eager tree peer but @p except. */
static void rumor_tree(struct sm_node *n, struct member *m, struct member *except)
{
    if (m->rumor < 0) return;
    for (size_t i = 0; i < n->n_peers; i++) {
        struct peer *p = &n->peers[i];
        if (!p->eager || p->m == except || p->m == m) continue;
        struct gossip_enc e;
        pkt_begin(n, &e, SIZE_MAX);
        if (enc_rumor(n, &e, &n->rumors[m->rumor]) != 0) continue;
        pkt_send(n, &p->addr, &e, SM_PKT_MEMBER, 0);
    }
}

/* Tell @p m directly what we believe about it (it should refute). */
static void notice(struct sm_node *n, struct member *m, const struct sm_addr *to)
{
    if (m->last_notice && n->now.mono_ms - m->last_notice < 500) return;
    m->last_notice = n->now.mono_ms ? n->now.mono_ms : 1;
    struct gossip_enc e;
    pkt_begin(n, &e, SIZE_MAX);
    uint8_t t = m->state == SM_MEMBER_SUSPECT ? GOSSIP_SUSPECT : GOSSIP_DEAD;
    if (gossip_enc_member(&e, t, m->id, m->id_len, m->inc, n->id, n->cfg.id_len) != 0) return;
    pkt_send(n, to, &e, SM_PKT_MEMBER, 0);
}

/* ------------------------------------------------------------------------ */
/* Plumtree peers */

static void peer_remove(struct sm_node *n, struct member *m)
{
    int32_t i = m->peer;
    if (i < 0) return;
    m->peer = -1;
    m->unlinked = n->now.mono_ms ? n->now.mono_ms : 1;
    n->n_peers--;
    n->st.peers = n->n_peers;
    if ((size_t)i != n->n_peers) {
        n->peers[i] = n->peers[n->n_peers];
        n->pids[i] = n->pids[n->n_peers];
        n->peers[i].m->peer = i;
    }
    /* slot numbers changed: forget who-knows-what bits of the moved slots */
    for (size_t k = 0; k < RECENT_CAP; k++) n->recent[k].knows &= ~((1u << i) | (1u << n->n_peers));
}

static struct peer *peer_add(struct sm_node *n, struct member *m, bool eager, bool chosen)
{
    if (m->peer >= 0) return &n->peers[m->peer];
    if (m->self || !live_state(m->state) || n->n_peers >= MAX_PEERS) return NULL;
    struct peer *p = &n->peers[n->n_peers];
    memset(p, 0, sizeof(*p));
    p->m = m;
    p->addr = m->addr;
    p->eager = eager;
    p->chosen = chosen;
    p->linked_at = n->now.mono_ms;
    m->peer = (int32_t)n->n_peers++;
    n->st.peers = n->n_peers;
    return p;
}

/* Add a peer that contacted us; when our slots are full, tell it to pick
 * someone else (HyParView-style), so links stay symmetric. */
static struct peer *peer_inbound(struct sm_node *n, struct member *m, bool eager)
{
    if (m->peer >= 0) return &n->peers[m->peer];
    struct peer *p = peer_add(n, m, eager, false);
    if (!p && live_state(m->state) && !m->self) {
        struct gossip_enc e;
        pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_prune(&e, true) == 0) pkt_send(n, &m->addr, &e, SM_PKT_DATA, 0);
    }
    return p;
}

static size_t chosen_peers(const struct sm_node *n)
{
    size_t c = 0;
    for (size_t i = 0; i < n->n_peers; i++) c += n->peers[i].chosen;
    return c;
}

static struct member *random_live(struct sm_node *n, bool alive_only)
{
    if (!n->n_alive_other) return NULL;
    for (int tries = 0; tries < 32; tries++) {
        struct member *m = n->members[rng_below(n, n->n_members)];
        if (m->self) continue;
        if (alive_only ? m->state == SM_MEMBER_ALIVE : live_state(m->state)) return m;
    }
    return NULL;
}

/* A link we chose but never heard on: the link request (or its answer) may
 * have been lost, leaving a link only we know about, over which nothing ever
 * reaches us. Ask again every 500 ms until the peer answers. */
static void links_check(struct sm_node *n)
{
    for (size_t i = 0; i < n->n_peers; i++) {
        struct peer *p = &n->peers[i];
        if (!p->chosen || p->confirmed || n->now.mono_ms - p->linked_at < 500) continue;
        p->linked_at = n->now.mono_ms;
        struct gossip_enc e;
        size_t w;
        pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, NULL, 0, &w) == 0)
            pkt_send(n, &p->addr, &e, SM_PKT_DATA, 0);
    }
}

static void peers_fill(struct sm_node *n)
{
    size_t want = n->cfg.active_view, have = chosen_peers(n);
    for (int tries = 0; have < want && tries < 8; tries++) {
        struct member *m = random_live(n, true);
        if (!m) break;
        if (m->peer >= 0) {
            n->peers[m->peer].chosen = true;
        } else if (!peer_add(n, m, true, true)) {
            break;
        } else {
            /* an empty graft makes the link symmetric at once: the peer adds us */
            struct gossip_enc e;
            size_t w;
            pkt_begin(n, &e, SIZE_MAX);
            if (gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, NULL, 0, &w) == 0)
                pkt_send(n, &m->addr, &e, SM_PKT_DATA, 0);
        }
        have = chosen_peers(n);
    }
}

/* ------------------------------------------------------------------------ */
/* Member state changes */

static double log10n(const struct sm_node *n)
{
    double l = log10((double)(n->n_members > 1 ? n->n_members : 2));
    return l < 1 ? 1 : l;
}

static void susp_update_deadline(struct sm_node *n, struct member *m)
{
    /* Lifeguard: start at max = max_mult * min, fall towards min as
     * independent accusers confirm: max - (max-min)*log(C+1)/log(K+1). */
    double minv = n->cfg.suspicion_mult * log10n(n) * n->cfg.probe_interval_ms;
    double maxv = minv * n->cfg.suspicion_max_mult;
    double k = n->cfg.indirect_k ? n->cfg.indirect_k : 1;
    double c = m->n_acc > 0 ? m->n_acc - 1 : 0;
    double t = maxv - (maxv - minv) * log(c + 1) / log(k + 1);
    if (t < minv) t = minv;
    m->susp_deadline = m->susp_start + (uint64_t)t;
}

static bool add_accuser(struct member *m, const char *from, size_t fl)
{
    uint32_t h = (uint32_t)id_hash(from, fl);
    for (unsigned i = 0; i < m->n_acc; i++)
        if (m->acc[i] == h) return false;
    if (m->n_acc >= MAX_ACCUSERS) return false;
    m->acc[m->n_acc++] = h;
    return true;
}

static void refute(struct sm_node *n, uint64_t inc)
{
    struct member *s = n->self;
    if (n->left) return;
    if (inc >= s->inc) s->inc = inc + 1;
    n->st.refutations++;
    if (n->lh < n->cfg.max_local_health) n->lh++;
    rumor_queue(n, s, GOSSIP_ALIVE, NULL, 0);
    rumor_tree(n, s, NULL);
}

/* ALIVE(id, inc, addr): returns true when our view changed. */
/* How an ALIVE reached us: as news to spread, as state transfer (a
 * membership page), or from the member itself (its join, or a probe or other
 * packet from a member we did not know). */
enum alive_via { VIA_RUMOR, VIA_PAGE, VIA_PROBE, VIA_DIRECT, VIA_JOIN };

static bool on_alive(struct sm_node *n, const char *id, size_t idl, uint64_t inc,
                     const struct sm_addr *addr, struct member *src, enum alive_via via)
{
    if (is_self_id(n, id, idl)) {
        /* someone claims a newer me (an old life of ours): outrank it */
        if (inc > n->self->inc) refute(n, inc);
        return false;
    }
    struct member *m = mfind(n, id, idl);
    if (!m) {
        if (!addr || !addr->len) return false;
        /* With a full (partial) view, a member we merely hear about replaces
         * a random one only now and then, so views keep mixing without an
         * eviction storm; members talking to us directly always get in. */
        bool full = n->n_members >= n->cfg.max_members;
        if (full && via != VIA_DIRECT && via != VIA_JOIN && rng_below(n, 8) != 0) return false;
        m = madd(n, id, idl, inc, addr, n->now.mono_ms);
        if (!m) return false;
        /* a join is spread by piggybacking only (a tree broadcast per member
         * would cost O(N) packets per join). Only a join and the rumor it
         * started are news: a member we did not know that probes us, or that
         * a page lists, is usually one our partial view never held, and
         * spreading each of those kept ~17 rumors a second per node going
         * in a 10,000-node mesh long after every join */
        if (!full && (via == VIA_RUMOR || via == VIA_JOIN))
            rumor_queue(n, m, GOSSIP_ALIVE, NULL, 0);
        emit(n, SM_MEV_JOIN, m);
        return true;
    }
    if (inc <= m->inc) {
        /* same incarnation alive does not override suspect/dead */
        return false;
    }
    uint8_t old = m->state;
    bool moved = addr && addr->len && !addr_eq(addr, &m->addr);
    m->inc = inc;
    if (addr && addr->len) {
        m->addr = *addr;
        if (m->peer >= 0) n->peers[m->peer].addr = *addr;
    }
    set_state(n, m, SM_MEMBER_ALIVE);
    rumor_queue(n, m, GOSSIP_ALIVE, NULL, 0);
    if (old != SM_MEMBER_ALIVE)
        emit(n, SM_MEV_ALIVE, m);
    else if (moved)
        emit(n, SM_MEV_UPDATE, m);
    if (old != SM_MEMBER_ALIVE) peers_fill(n);
    /* a newer incarnation is a refutation: forward it even where the member
     * was still alive, or nodes behind us that heard the suspicion by
     * another path would never hear the refutation in time */
    rumor_tree(n, m, src);
    return true;
}

static void start_suspect(struct sm_node *n, struct member *m, const char *from, size_t fl,
                          struct member *src)
{
    set_state(n, m, SM_MEMBER_SUSPECT);
    m->susp_start = n->now.mono_ms;
    m->n_acc = 0;
    m->verifying = false;
    add_accuser(m, from, fl);
    susp_update_deadline(n, m);
    rumor_queue(n, m, GOSSIP_SUSPECT, from, fl);
    emit(n, SM_MEV_SUSPECT, m);
    /* a suspicion travels by piggybacking only, while refutations and
     * deaths are also pushed over the dissemination links: the refutation
     * overtakes the suspicion it answers, and a false suspicion costs a
     * few bytes on probes instead of a packet on every link of the mesh */
    (void)src;
}

static void on_suspect(struct sm_node *n, const char *id, size_t idl, uint64_t inc,
                       const char *from, size_t fl, struct member *src)
{
    if (is_self_id(n, id, idl)) {
        if (inc >= n->self->inc) refute(n, inc);
        n->accused_now = true; /* (an old incarnation: the sender missed our refutation) */
        return;
    }
    struct member *m = mfind(n, id, idl);
    if (!m || inc < m->inc) return;
    if (m->state == SM_MEMBER_DEAD || m->state == SM_MEMBER_LEFT) {
        if (inc <= m->inc) return;
    }
    if (m->state == SM_MEMBER_SUSPECT && inc == m->inc) {
        /* an independent confirmation shortens the timer (Lifeguard); pass
         * it on so every node's timer shrinks together */
        if (add_accuser(m, from, fl)) {
            susp_update_deadline(n, m);
            rumor_queue(n, m, GOSSIP_SUSPECT, from, fl);
        }
        return;
    }
    if (m->state == SM_MEMBER_ALIVE && inc < m->inc) return;
    m->inc = inc;
    start_suspect(n, m, from, fl, src);
}

static void declare_dead(struct sm_node *n, struct member *m, uint8_t type, const char *from,
                         size_t fl, struct member *src)
{
    set_state(n, m, type == GOSSIP_LEAVE ? SM_MEMBER_LEFT : SM_MEMBER_DEAD);
    rumor_queue(n, m, type, from, fl);
    emit(n, type == GOSSIP_LEAVE ? SM_MEV_LEAVE : SM_MEV_DEAD, m);
    rumor_tree(n, m, src);
    if (n->pr.active && n->pr.target == m) n->pr.active = false;
    peers_fill(n);
}

static void on_dead(struct sm_node *n, uint8_t type, const char *id, size_t idl, uint64_t inc,
                    const char *from, size_t fl, struct member *src)
{
    if (is_self_id(n, id, idl)) {
        if (type == GOSSIP_LEAVE && n->left) return;
        if (inc >= n->self->inc) refute(n, inc);
        n->accused_now = true;
        return;
    }
    struct member *m = mfind(n, id, idl);
    if (!m || inc < m->inc) return;
    if (m->state == SM_MEMBER_LEFT) return;
    if (m->state == SM_MEMBER_DEAD && (type != GOSSIP_LEAVE || inc < m->inc)) return;
    m->inc = inc;
    declare_dead(n, m, type, from, fl, src);
}

static int enc_member_state(struct sm_node *n, struct gossip_enc *e, const struct member *m);

/* ------------------------------------------------------------------------ */
/* Records: recent cache, fresh (to forward), lazy (to announce), missing */

static struct recent *recent_find_in(struct sm_node *n, uint64_t id, size_t depth)
{
    /* a short linear scan from the newest: ids are looked up right after they
     * were seen (IHAVE, graft, a flood's duplicate copies) */
    for (size_t k = 0; k < depth; k++) {
        size_t i = (n->recent_pos + RECENT_CAP - 1 - k) % RECENT_CAP;
        if (!n->recent[i].used) return NULL;
        if (n->recent[i].id == id) return &n->recent[i];
    }
    return NULL;
}

static struct recent *recent_find(struct sm_node *n, uint64_t id)
{
    return recent_find_in(n, id, RECENT_CAP);
}

static struct recent *recent_add(struct sm_node *n, uint64_t id, unsigned leaf, uint8_t round)
{
    struct recent *r = &n->recent[n->recent_pos];
    n->recent_pos = (n->recent_pos + 1) % RECENT_CAP;
    r->id = id;
    r->leaf = (uint16_t)leaf;
    r->round = round;
    r->knows = 0;
    r->used = true;
    return r;
}

/* The missing entry for record @p id; a new one (with @p round and @p
 * deadline) when there is none and room; NULL when the table is full. */
static struct missing *missing_get(struct sm_node *n, uint64_t id, uint8_t round, uint64_t deadline)
{
    for (size_t k = 0; k < n->n_missing; k++)
        if (n->missing[k].id == id) return &n->missing[k];
    if (n->n_missing >= MAX_MISSING) return NULL;
    struct missing *ms = &n->missing[n->n_missing++];
    memset(ms, 0, sizeof(*ms));
    ms->id = id;
    ms->round = round;
    ms->deadline = deadline;
    return ms;
}

static void missing_drop(struct sm_node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_missing; i++)
        if (n->missing[i].id == id) {
            n->missing[i] = n->missing[--n->n_missing];
            return;
        }
}

static void fresh_flush(struct sm_node *n);

static void fresh_add(struct sm_node *n, const struct crdt_rec_view *v, uint8_t round,
                      struct member *src)
{
    size_t need = gossip_rec_size(v) + 16;
    /* a burst (a batch of local writes, a repair) goes out in full packets
     * as it comes, rather than being dropped or buffered without bound */
    if (n->n_fresh >= FRESH_MAX) fresh_flush(n);
    if (n->fresh_cap - n->fresh_len < need) {
        size_t nc = n->fresh_cap ? n->fresh_cap * 2 : 4096;
        while (nc - n->fresh_len < need) nc *= 2;
        uint8_t *b = realloc(n->fresh_buf, nc);
        if (!b) return;
        n->fresh_buf = b;
        n->fresh_cap = nc;
    }
    struct gossip_enc e;
    e.buf = n->fresh_buf + n->fresh_len;
    e.cap = n->fresh_cap - n->fresh_len;
    e.len = 0;
    e.n_msgs = 0;
    e.overflow = false;
    if (gossip_enc_rec(&e, GOSSIP_RK_EAGER, round, v) != 0) {
        n->st.encode_overflow++;
        return;
    }
    n->fresh[n->n_fresh].off = n->fresh_len;
    n->fresh[n->n_fresh].len = e.len;
    n->fresh[n->n_fresh].id = crdt_rec_digest(v);
    n->fresh[n->n_fresh].src = src;
    n->n_fresh++;
    n->fresh_len += e.len;
}

static void lazy_add(struct sm_node *n, uint64_t id, uint8_t round)
{
    /* announcements go to lazy links only: none, nothing to remember (with
     * flooding every link is eager) */
    bool lazy_link = false;
    for (size_t i = 0; i < n->n_peers && !lazy_link; i++) lazy_link = !n->peers[i].eager;
    if (!lazy_link || n->n_lazy >= LAZY_CAP) return;
    if (!n->n_lazy && n->t_gossip < n->now.mono_ms)
        n->t_gossip = on_grid(n, n->now.mono_ms + n->cfg.gossip_interval_ms);
    n->lazy[n->n_lazy].id = id;
    n->lazy[n->n_lazy].round = round;
    n->n_lazy++;
}

/* Start a packet of records to @p p: the receipt of the previous one first. */
static void link_begin(struct sm_node *n, struct peer *p, struct gossip_enc *e)
{
    pkt_begin(n, e, SIZE_MAX);
    if (p->n_tx || p->n_prev) {
        /* every id is receipted twice (a lost receipt is covered by the
         * next one): the last packet's, then the one before */
        uint64_t ids[2 * RCPT_MAX];
        size_t k = 0, w = 0;
        struct peer_ids *pi = &n->pids[p - n->peers];
        for (unsigned i = 0; i < p->n_tx; i++) ids[k++] = pi->tx[i];
        for (unsigned i = 0; i < p->n_prev; i++) ids[k++] = pi->prev[i];
        (void)gossip_enc_ids(e, GOSSIP_IHAVE, GOSSIP_ROUND_RECEIPT, 0, ids, k, &w);
        memcpy(pi->prev, pi->tx, p->n_tx * sizeof(pi->tx[0]));
        p->n_prev = p->n_tx;
        p->n_tx = 0;
    }
}

static void link_send(struct sm_node *n, struct peer *p, struct gossip_enc *e)
{
    p->tx_at = n->now.mono_ms;
    pkt_send(n, &p->addr, e, SM_PKT_DATA, 0);
}

/* Push every fresh record to the eager peers (but its source), in packets
 * filled up to the MTU. */
static void fresh_flush(struct sm_node *n)
{
    if (!n->n_fresh) return;
    for (size_t pi = 0; pi < n->n_peers; pi++) {
        struct peer *p = &n->peers[pi];
        if (!p->eager) continue;
        struct gossip_enc e;
        bool open = false;
        for (size_t i = 0; i < n->n_fresh; i++) {
            struct fresh *f = &n->fresh[i];
            if (f->src == p->m) continue;
            if (!open) link_begin(n, p, &e), open = true;
            if (f->len > gossip_enc_room(&e) || e.n_msgs >= GOSSIP_MAX_MSGS) {
                link_send(n, p, &e);
                link_begin(n, p, &e);
                if (f->len > gossip_enc_room(&e)) {
                    n->st.encode_overflow++;
                    continue;
                }
            }
            memcpy(e.buf + e.len, n->fresh_buf + f->off, f->len);
            e.len += f->len;
            e.n_msgs++;
            if (p->n_tx < RCPT_MAX) n->pids[pi].tx[p->n_tx++] = f->id;
        }
        if (open && !pkt_empty(&e)) link_send(n, p, &e);
    }
    n->n_fresh = 0;
    n->fresh_len = 0;
}

/* Gossip tick: a link quiet since its last packet of records gets the
 * receipt on its own. */
static void receipts_tick(struct sm_node *n)
{
    for (size_t pi = 0; pi < n->n_peers; pi++) {
        struct peer *p = &n->peers[pi];
        if ((!p->n_tx && !p->n_prev) || n->now.mono_ms - p->tx_at < n->cfg.gossip_interval_ms)
            continue;
        p->tx_at = n->now.mono_ms; /* the second receipt one tick later */
        struct gossip_enc e;
        link_begin(n, p, &e);
        pkt_send(n, &p->addr, &e, SM_PKT_DATA, 0);
    }
}

static bool receipts_pending(const struct sm_node *n)
{
    for (size_t pi = 0; pi < n->n_peers; pi++)
        if (n->peers[pi].n_tx || n->peers[pi].n_prev) return true;
    return false;
}

/* A receipt from @p src: what it sent us in its previous packet. Whatever of
 * it did not arrive (and did not reach us another way) is grafted now. */
static void on_receipt(struct sm_node *n, const struct gossip_msg *msg, struct member *src)
{
    if (!src || src->peer < 0) return;
    struct peer *p = &n->peers[src->peer];
    for (size_t i = 0; i < msg->u.ids.n_ids; i++) {
        uint64_t id = gossip_id_at(msg->u.ids.ids, i);
        bool got = false;
        for (unsigned k = 0; k < p->n_rx && !got; k++) got = n->pids[src->peer].rx[k] == id;
        if (got || recent_find(n, id)) continue;
        struct missing *ms = missing_get(n, id, 1, 0);
        if (!ms) continue;
        /* this peer had it: ask it first, now */
        ms->deadline = n->now.mono_ms;
        bool dup = false;
        for (unsigned k = 0; k < ms->n_ann; k++) dup |= ms->ann[k] == src;
        if (!dup) {
            if (ms->n_ann < MAX_ANNOUNCE) ms->n_ann++;
            memmove(ms->ann + 1, ms->ann, (ms->n_ann - 1) * sizeof(ms->ann[0]));
            ms->ann[0] = src;
            ms->next = 0;
        }
        n->st.receipt_misses++;
    }
    p->n_rx = 0;
}

struct old_copy {
    struct crdt_rec_view v;
    bool have;
};

/* Merge a verified remote (or pending-released) record. Returns 1 when new. */
static int merge_in(struct sm_node *n, const struct crdt_rec_view *v, uint8_t kind, uint8_t round,
                    struct member *src)
{
    uint64_t id = crdt_rec_digest(v);
    /* a flood's duplicate copies follow the first within milliseconds: the
     * write is among the newest merged, known without a replica lookup (the
     * same digest is the same write, so the replica holds it or newer) */
    struct recent *dup = recent_find_in(n, id, RECENT_QUICK);
    const struct crdt_rec *cur = dup ? NULL : crdt_replica_find(n->rep, v->key, v->key_len);
    struct crdt_rec_view ov;
    uint8_t *oldbuf = NULL;
    struct crdt_rec_view oldv;
    bool have_old = false;
    if (cur) crdt_rec_view(n->rep, cur, &ov);
    if (dup || (cur && crdt_order_cmp(v, &ov) <= 0)) {
        n->st.records_duplicate++;
        struct recent *r = dup ? dup : recent_find(n, id);
        if (r && src && src->peer >= 0) r->knows |= 1u << src->peer;
        if (n->cfg.prune && kind == GOSSIP_RK_EAGER && src && src->peer >= 0 &&
            n->peers[src->peer].eager) {
            /* a second eager copy: this link is redundant in the tree */
            n->peers[src->peer].eager = false;
            struct gossip_enc e;
            pkt_begin(n, &e, SIZE_MAX);
            if (gossip_enc_prune(&e, false) == 0) {
                pkt_send(n, &src->addr, &e, SM_PKT_DATA, 0);
                n->st.prunes++;
            }
        }
        return 0;
    }
    if (cur && n->cfg.cb.on_record) {
        /* keep the replaced record for the callback (the view dies in merge) */
        size_t need = ov.key_len + ov.value_len + ov.origin_len + CRDT_SIG_LEN;
        oldbuf = need <= sizeof(S.old) ? S.old : malloc(need);
        if (oldbuf) {
            oldv = ov;
            uint8_t *p = oldbuf;
            memcpy(p, ov.key, ov.key_len);
            oldv.key = (const char *)p;
            p += ov.key_len;
            if (ov.value) {
                memcpy(p, ov.value, ov.value_len);
                oldv.value = p;
                p += ov.value_len;
            }
            memcpy(p, ov.origin, ov.origin_len);
            oldv.origin = (const char *)p;
            p += ov.origin_len;
            if (ov.sig) {
                memcpy(p, ov.sig, CRDT_SIG_LEN);
                oldv.sig = p;
            }
            have_old = true;
        }
    }
    int rc = crdt_replica_merge(n->rep, v);
    if (rc != 1) {
        if (oldbuf && oldbuf != S.old) free(oldbuf);
        if (rc == 0) n->st.records_duplicate++;
        return 0;
    }
    n->st.records_merged++;
    n->last_change = n->now.mono_ms;
    unsigned leaf = (unsigned)(crdt_key_hash(v->key, v->key_len) & (CRDT_DIGEST_LEAVES - 1));
    struct recent *r = recent_add(n, id, leaf, round);
    if (src && src->peer >= 0) {
        r->knows |= 1u << src->peer;
        /* Plumtree: the link a message first arrives on belongs to the tree.
         * If we had pruned it, our prune may have crossed this message: tell
         * the peer to keep pushing to us (an empty graft). */
        struct peer *pp = &n->peers[src->peer];
        if (kind != GOSSIP_RK_AE && !pp->eager) {
            pp->eager = true;
            struct gossip_enc e;
            size_t w;
            pkt_begin(n, &e, SIZE_MAX);
            if (gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, NULL, 0, &w) == 0)
                pkt_send(n, &src->addr, &e, SM_PKT_DATA, 0);
        }
    }
    missing_drop(n, id);
    uint8_t nround = round < 255 ? round + 1 : 255;
    fresh_add(n, v, nround, src);
    lazy_add(n, id, nround);
    if (n->cfg.cb.on_record) {
        const struct crdt_rec *now = crdt_replica_find(n->rep, v->key, v->key_len);
        struct crdt_rec_view nv;
        if (now) {
            crdt_rec_view(n->rep, now, &nv);
            n->busy++;
            n->cfg.cb.on_record(n->cfg.ud, &nv, have_old ? &oldv : NULL);
            n->busy--;
        }
    }
    if (oldbuf && oldbuf != S.old) free(oldbuf);
    return 1;
}

static bool rec_fields_ok(const struct sm_node *n, const struct crdt_rec_view *v)
{
    if (v->value_len > n->cfg.max_value_len) return false;
    if (!(v->flags & CRDT_F_TOMBSTONE) && !v->value) return false;
    return true;
}

struct pend_arg {
    struct sm_node *n;
};

static void pending_cb(const struct crdt_rec_view *r, void *arg)
{
    struct pend_arg *a = arg;
    merge_in(a->n, r, GOSSIP_RK_AE, 0, NULL);
}

static void release_pending(struct sm_node *n, const char *id, size_t len)
{
    if (!n->crypto) return;
    struct pend_arg a = {n};
    (void)smc_pending_take_for(n->crypto, n->now.wall_ms, id, len, pending_cb, &a);
}

/* A record whose origin we do not know yet (no certificate: it joined and we
 * have not heard): ask the peer that sent it, which verified it and so holds
 * the certificate, instead of waiting for membership gossip to bring it. At
 * most one question per origin every 500 ms. */
static void whois(struct sm_node *n, const char *id, size_t len, struct member *src)
{
    uint64_t h = id_hash(id, len), now = n->now.mono_ms;
    struct whois_ask *slot = &n->asked[0];
    for (size_t i = 0; i < WHOIS_RING; i++) {
        struct whois_ask *a = &n->asked[i];
        if (a->hash == h) {
            if (now - a->at < 500) return;
            slot = a;
            break;
        }
        if (a->at < slot->at) slot = a;
    }
    slot->hash = h;
    slot->at = now ? now : 1;
    struct gossip_enc e;
    pkt_begin(n, &e, SIZE_MAX);
    if (gossip_enc_whois(&e, id, len) == 0) {
        pkt_send(n, &src->addr, &e, SM_PKT_MEMBER, 0);
        n->st.whois_sent++;
    }
}

static void on_record(struct sm_node *n, const struct gossip_msg *msg, struct member *src)
{
    const struct crdt_rec_view *v = &msg->u.rec.v;
    if (!rec_fields_ok(n, v)) {
        n->st.rejected[SM_REJ_RECORD]++;
        return;
    }
    if (n->crypto) {
        enum smc_reason why = SMC_R_OK;
        int rc = smc_rec_verify(n->crypto, n->now.wall_ms, v, &why);
        if (rc != 0) {
            if (why == SMC_R_UNKNOWN_ORIGIN) {
                if (smc_pending_add(n->crypto, n->now.wall_ms, v) == 0) n->st.records_pending++;
                if (src) whois(n, v->origin, v->origin_len, src);
            } else {
                n->st.rejected[SM_REJ_RECORD_SIG]++;
            }
            return;
        }
    }
    merge_in(n, v, msg->u.rec.kind, msg->u.rec.round, src);
}

/* Find the stored record of leaf @p leaf whose digest is @p id. */
struct leaf_find {
    uint64_t id;
    struct crdt_rec_view v;
    bool found;
};

static int leaf_find_fn(const struct crdt_rec_view *v, void *arg)
{
    struct leaf_find *f = arg;
    if (crdt_rec_digest(v) == f->id) {
        f->v = *v;
        f->found = true;
        return 1;
    }
    return 0;
}

static bool rec_live_to_send(const struct sm_node *n, const struct crdt_rec_view *v)
{
    /* an expired record is not gossiped (its expiry tombstone is, after the sweep) */
    return !(v->expires_at && v->expires_at <= n->now.wall_ms && !(v->flags & CRDT_F_TOMBSTONE));
}

/* ------------------------------------------------------------------------ */
/* Plumtree messages */

static void send_ihave_tick(struct sm_node *n)
{
    if (!n->n_lazy) return;
    uint64_t ids[LAZY_CAP];
    for (size_t pi = 0; pi < n->n_peers; pi++) {
        struct peer *p = &n->peers[pi];
        if (p->eager) continue;
        size_t k = 0;
        uint8_t round = 0;
        for (size_t i = 0; i < n->n_lazy; i++) {
            struct recent *r = recent_find(n, n->lazy[i].id);
            if (r && (r->knows & (1u << pi))) continue;
            ids[k++] = n->lazy[i].id;
            round = n->lazy[i].round;
        }
        size_t off = 0;
        while (off < k) {
            struct gossip_enc e;
            size_t w = 0;
            pkt_begin(n, &e, SIZE_MAX);
            if (gossip_enc_ids(&e, GOSSIP_IHAVE, round, 0, ids + off, k - off, &w) != 0 || !w)
                break;
            pkt_send(n, &p->addr, &e, SM_PKT_DATA, 0);
            n->st.ihave_ids += w;
            off += w;
        }
    }
    n->n_lazy = 0;
}

static void on_ihave(struct sm_node *n, const struct gossip_msg *msg, struct member *src)
{
    if (!src) return;
    if (src->peer < 0) peer_inbound(n, src, false);
    for (size_t i = 0; i < msg->u.ids.n_ids; i++) {
        uint64_t id = gossip_id_at(msg->u.ids.ids, i);
        struct recent *r = recent_find(n, id);
        if (r) {
            if (src->peer >= 0) r->knows |= 1u << src->peer;
            continue;
        }
        struct missing *ms =
            missing_get(n, id, msg->u.ids.round, n->now.mono_ms + n->cfg.graft_timeout_ms);
        if (!ms) continue;
        bool dup = false;
        for (unsigned k = 0; k < ms->n_ann; k++) dup |= ms->ann[k] == src;
        if (!dup && ms->n_ann < MAX_ANNOUNCE) ms->ann[ms->n_ann++] = src;
    }
}

static void missing_tick(struct sm_node *n)
{
    uint64_t now = n->now.mono_ms;
    for (size_t i = 0; i < n->n_missing;) {
        struct missing *ms = &n->missing[i];
        if (ms->deadline > now) {
            i++;
            continue;
        }
        if (ms->next >= ms->n_ann) {
            /* every announcer asked: on a lossy path the graft or its answer
             * may have been lost, so go round again a few times before
             * leaving the record to anti-entropy */
            if (++ms->tries >= GRAFT_TRIES || !ms->n_ann) {
                n->missing[i] = n->missing[--n->n_missing];
                continue;
            }
            ms->next = 0;
        }
        struct member *a = ms->ann[ms->next++];
        if (live_state(a->state)) {
            struct peer *p = a->peer >= 0 ? &n->peers[a->peer] : peer_add(n, a, true, false);
            if (p) p->eager = true;
            struct gossip_enc e;
            pkt_begin(n, &e, SIZE_MAX);
            size_t w;
            if (gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, &ms->id, 1, &w) == 0) {
                pkt_send(n, &a->addr, &e, SM_PKT_DATA, 0);
                n->st.grafts++;
            }
        }
        ms->deadline = now + 2 * (uint64_t)n->cfg.graft_timeout_ms;
        i++;
    }
}

static void on_graft(struct sm_node *n, const struct gossip_msg *msg, struct member *src,
                     const struct sm_addr *from)
{
    if (src) {
        struct peer *p = peer_inbound(n, src, true);
        if (p) p->eager = true;
        if (p && !msg->u.ids.n_ids) {
            /* a link request: acknowledge it (an empty receipt), so the
             * requester knows the link exists on both sides */
            struct gossip_enc a;
            size_t w;
            pkt_begin(n, &a, SIZE_MAX);
            if (gossip_enc_ids(&a, GOSSIP_IHAVE, GOSSIP_ROUND_RECEIPT, 0, NULL, 0, &w) == 0)
                pkt_send(n, from, &a, SM_PKT_DATA, 0);
            return;
        }
    }
    struct gossip_enc e;
    pkt_begin(n, &e, SIZE_MAX);
    for (size_t i = 0; i < msg->u.ids.n_ids; i++) {
        uint64_t id = gossip_id_at(msg->u.ids.ids, i);
        struct recent *r = recent_find(n, id);
        if (!r) continue;
        struct leaf_find f = {.id = id};
        crdt_replica_foreach_leaf(n->rep, r->leaf, leaf_find_fn, &f);
        if (!f.found) continue;
        if (gossip_enc_rec(&e, GOSSIP_RK_GRAFT, r->round, &f.v) != 0) {
            if (!pkt_empty(&e)) pkt_send(n, from, &e, SM_PKT_DATA, 0);
            pkt_begin(n, &e, SIZE_MAX);
            if (gossip_enc_rec(&e, GOSSIP_RK_GRAFT, r->round, &f.v) != 0) n->st.encode_overflow++;
        }
    }
    if (!pkt_empty(&e)) pkt_send(n, from, &e, SM_PKT_DATA, 0);
}

static void on_prune(struct sm_node *n, const struct gossip_msg *msg, struct member *src)
{
    if (!src || src->peer < 0) return;
    if (msg->u.ids.disconnect)
        peer_remove(n, src);
    else
        n->peers[src->peer].eager = false;
}

/* ------------------------------------------------------------------------ */
/* Anti-entropy */

static void group_digests(const struct sm_node *n, uint64_t g[GOSSIP_GROUPS])
{
    for (unsigned i = 0; i < GOSSIP_GROUPS; i++) {
        uint64_t x = 0;
        for (unsigned k = 0; k < GOSSIP_GROUP_LEAVES; k++)
            x ^= crdt_replica_leaf(n->rep, i * GOSSIP_GROUP_LEAVES + k);
        g[i] = x;
    }
}

static void ae_start(struct sm_node *n)
{
    struct member *m = random_live(n, true);
    if (!m) return;
    uint64_t g[GOSSIP_GROUPS];
    group_digests(n, g);
    struct gossip_enc e;
    pkt_begin(n, &e, SIZE_MAX);
    size_t w;
    if (gossip_enc_ids(&e, GOSSIP_DIGEST, 0, crdt_replica_root(n->rep), g, GOSSIP_GROUPS, &w))
        return;
    n->st.ae_rounds++;
    pkt_send(n, &m->addr, &e, SM_PKT_AE, 0);
}

/* A response budget: an unauthenticated sender gets at most its request's size back. */
struct reply {
    struct sm_node *n;
    const struct sm_addr *to;
    size_t budget;
    struct gossip_enc e;
    bool open;
    enum sm_pkt_class cls;
};

static void reply_flush(struct reply *r)
{
    if (r->open && !pkt_empty(&r->e)) {
        size_t len = r->e.len;
        pkt_send(r->n, r->to, &r->e, r->cls, 0);
        r->budget = len >= r->budget ? 0 : r->budget - len;
    }
    r->open = false;
}

static bool reply_open(struct reply *r)
{
    if (r->open) return true;
    if (r->budget < 64) return false;
    pkt_begin_buf(r->n, &r->e, S.reply, r->budget);
    r->open = true;
    return true;
}

static void on_whois(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    const char *id = msg->u.member.id;
    size_t len = msg->u.member.id_len;
    struct member *m = is_self_id(n, id, len) ? n->self : mfind(n, id, len);
    if (!m || !live_state(m->state) || !reply_open(rp)) return;
    rp->cls = SM_PKT_MEMBER;
    (void)enc_member_state(n, &rp->e, m);
}

static void on_digest(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    if (msg->u.ids.root == crdt_replica_root(n->rep)) {
        n->st.ae_in_sync++;
        return;
    }
    uint64_t g[GOSSIP_GROUPS], leaves[GOSSIP_GROUP_LEAVES];
    group_digests(n, g);
    for (unsigned i = 0; i < GOSSIP_GROUPS; i++) {
        if (g[i] == gossip_id_at(msg->u.ids.ids, i)) continue;
        for (unsigned k = 0; k < GOSSIP_GROUP_LEAVES; k++)
            leaves[k] = crdt_replica_leaf(n->rep, i * GOSSIP_GROUP_LEAVES + k);
        if (!reply_open(rp)) return;
        size_t w;
        if (gossip_enc_ids(&rp->e, GOSSIP_DIGEST_LEAVES, i, 0, leaves, GOSSIP_GROUP_LEAVES, &w) ||
            w != GOSSIP_GROUP_LEAVES) {
            reply_flush(rp);
            if (!reply_open(rp)) return;
            if (gossip_enc_ids(&rp->e, GOSSIP_DIGEST_LEAVES, i, 0, leaves, GOSSIP_GROUP_LEAVES, &w))
                return;
        }
    }
}

/* A ping carried the prober's root digest. Idle replicas are compared this
 * way for free; when they differ and we have been quiet for a while (so the
 * difference is not just records in flight), our digest rides on the ack and
 * the prober starts the repair. The periodic round (ae_start) only runs while
 * the replica is changing. */
static void on_root(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    uint64_t now = n->now.mono_ms;
    if (msg->u.ids.root == crdt_replica_root(n->rep)) {
        n->st.ae_in_sync++;
        return;
    }
    if (now < n->t_ae_ack || now - n->last_change < n->cfg.ae_interval_ms) return;
    if (!rp->open || rp->cls != SM_PKT_PROBE) return; /* only on our ack */
    uint64_t g[GOSSIP_GROUPS];
    group_digests(n, g);
    size_t w;
    /* no room (an unauthenticated ping's budget): the message rolls back */
    if (gossip_enc_ids(&rp->e, GOSSIP_DIGEST, 0, crdt_replica_root(n->rep), g, GOSSIP_GROUPS, &w))
        return;
    n->t_ae_ack = now + n->cfg.ae_interval_ms;
    n->st.ae_rounds++;
}

struct ids_coll {
    uint64_t *ids;
    size_t n, cap;
};

static int coll_fn(const struct crdt_rec_view *v, void *arg)
{
    struct ids_coll *c = arg;
    if (c->n < c->cap) c->ids[c->n++] = crdt_rec_digest(v);
    return 0;
}

static void on_digest_leaves(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    uint64_t buf[256];
    unsigned g = msg->u.ids.index;
    for (unsigned k = 0; k < GOSSIP_GROUP_LEAVES; k++) {
        unsigned leaf = g * GOSSIP_GROUP_LEAVES + k;
        if (crdt_replica_leaf(n->rep, leaf) == gossip_id_at(msg->u.ids.ids, k)) continue;
        struct ids_coll c = {buf, 0, 256};
        crdt_replica_foreach_leaf(n->rep, leaf, coll_fn, &c);
        size_t off = 0;
        do {
            if (!reply_open(rp)) return;
            size_t w = 0;
            if (gossip_enc_ids(&rp->e, GOSSIP_LEAF_IDS, leaf, 0, buf + off, c.n - off, &w)) {
                reply_flush(rp);
                if (!reply_open(rp)) return;
                if (gossip_enc_ids(&rp->e, GOSSIP_LEAF_IDS, leaf, 0, buf + off, c.n - off, &w))
                    return;
            }
            off += w;
        } while (off < c.n);
    }
}

struct leaf_send {
    struct sm_node *n;
    struct reply *rp;
    const uint8_t *ids; /* the peer's ids (has) or the wanted ids */
    size_t n_ids;
    bool send_if_absent; /* true: send ours not in ids; false: send ours in ids */
    uint64_t *mine;
    size_t n_mine, cap_mine;
    bool stop;
};

static bool ids_contain(const uint8_t *ids, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (gossip_id_at(ids, i) == id) return true;
    return false;
}

static int leaf_send_fn(const struct crdt_rec_view *v, void *arg)
{
    struct leaf_send *s = arg;
    uint64_t id = crdt_rec_digest(v);
    if (s->mine && s->n_mine < s->cap_mine) s->mine[s->n_mine++] = id;
    if (s->stop) return 0;
    bool in = ids_contain(s->ids, s->n_ids, id);
    if (in == s->send_if_absent) return 0;
    if (!rec_live_to_send(s->n, v)) return 0;
    struct reply *rp = s->rp;
    if (!reply_open(rp)) {
        s->stop = true;
        return 0;
    }
    if (gossip_enc_rec(&rp->e, GOSSIP_RK_AE, 0, v) != 0) {
        reply_flush(rp);
        if (!reply_open(rp) || gossip_enc_rec(&rp->e, GOSSIP_RK_AE, 0, v) != 0) {
            s->stop = true;
            return 0;
        }
    }
    s->n->st.ae_records_sent++;
    return 0;
}

static void on_leaf_ids(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    uint64_t mine[256], want[256];
    unsigned leaf = msg->u.ids.index;
    struct leaf_send s = {n, rp, msg->u.ids.ids, msg->u.ids.n_ids, true, mine, 0, 256, false};
    crdt_replica_foreach_leaf(n->rep, leaf, leaf_send_fn, &s);
    size_t nw = 0;
    for (size_t i = 0; i < msg->u.ids.n_ids && nw < 256; i++) {
        uint64_t id = gossip_id_at(msg->u.ids.ids, i);
        bool have = false;
        for (size_t k = 0; k < s.n_mine && !have; k++) have = mine[k] == id;
        if (!have) want[nw++] = id;
    }
    size_t off = 0;
    while (off < nw) {
        if (!reply_open(rp)) return;
        size_t w = 0;
        if (gossip_enc_ids(&rp->e, GOSSIP_WANT, leaf, 0, want + off, nw - off, &w)) {
            reply_flush(rp);
            continue;
        }
        off += w;
    }
}

static void on_want(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    struct leaf_send s = {n, rp, msg->u.ids.ids, msg->u.ids.n_ids, false, NULL, 0, 0, false};
    crdt_replica_foreach_leaf(n->rep, msg->u.ids.index, leaf_send_fn, &s);
}

/* ------------------------------------------------------------------------ */
/* Probing (SWIM + Lifeguard) */

static uint64_t scaled(const struct sm_node *n, uint32_t ms)
{
    return (uint64_t)ms * (n->lh + 1);
}

static struct member *next_probe_target(struct sm_node *n)
{
    for (int round = 0; round < 2; round++) {
        while (n->probe_pos < n->probe_n) {
            struct member *m = n->probe_list[n->probe_pos++];
            if (!m->self && live_state(m->state)) return m;
        }
        /* end of a round: reshuffle the live members (O(N) once per N probes) */
        n->probe_n = 0;
        n->probe_pos = 0;
        for (size_t i = 0; i < n->n_members; i++) {
            struct member *m = n->members[i];
            if (m->self || !live_state(m->state)) continue;
            if (vec_push(&n->probe_list, &n->probe_n, &n->probe_cap, m)) break;
        }
        for (size_t i = n->probe_n; i > 1; i--) {
            size_t j = rng_below(n, i);
            struct member *t = n->probe_list[i - 1];
            n->probe_list[i - 1] = n->probe_list[j];
            n->probe_list[j] = t;
        }
        if (!n->probe_n) return NULL;
    }
    return NULL;
}

static void send_ping(struct sm_node *n, struct member *t, uint32_t seq, bool notice_dead)
{
    struct gossip_enc e;
    pkt_begin(n, &e, SIZE_MAX);
    if (gossip_enc_probe(&e, GOSSIP_PING, seq, t->id, t->id_len, NULL)) return;
    /* our replica's root digest (11 bytes): a quiet peer that differs
     * answers with its full digest on the ack (see on_root) */
    (void)gossip_enc_in_sync(&e, crdt_replica_root(n->rep));
    if (notice_dead)
        (void)gossip_enc_member(&e, t->state == SM_MEMBER_LEFT ? GOSSIP_LEAVE : GOSSIP_DEAD, t->id,
                                t->id_len, t->inc, n->id, n->cfg.id_len);
    piggyback(n, &e);
    pkt_send(n, &t->addr, &e, SM_PKT_PROBE, 0);
}

static void probe_finish(struct sm_node *n)
{
    if (!n->pr.active) return;
    struct member *t = n->pr.target;
    n->pr.active = false;
    if (n->pr.acked) {
        if (n->lh > 0) n->lh--;
        return;
    }
    n->st.probe_timeouts++;
    /* Lifeguard: relays that should have nacked but did not mean our own
     * network is in trouble: become more patient. */
    if (n->pr.nacks < n->pr.nacks_expected || n->pr.nacks_expected == 0) {
        if (n->lh < n->cfg.max_local_health) n->lh++;
    }
    if (t->state == SM_MEMBER_ALIVE) {
        n->st.suspicions++;
        start_suspect(n, t, n->id, n->cfg.id_len, NULL);
        t->accused = true;
        notice(n, t, &t->addr);
    }
}

static void probe_start(struct sm_node *n)
{
    struct member *t = next_probe_target(n);
    if (!t) return;
    n->pr.active = true;
    n->pr.acked = false;
    n->pr.indirect = false;
    n->pr.target = t;
    n->pr.seq = ++n->seq;
    n->pr.nacks = n->pr.nacks_expected = 0;
    n->pr.direct_deadline = n->now.mono_ms + scaled(n, n->cfg.probe_timeout_ms);
    n->st.probes++;
    send_ping(n, t, n->pr.seq, false);
}

static void probe_indirect(struct sm_node *n)
{
    struct member *t = n->pr.target;
    n->pr.indirect = true;
    /* one more direct try alongside the relays: on a lossy path a single
     * lost ping or ack should not be what decides (same sequence number,
     * either ack counts) */
    send_ping(n, t, n->pr.seq, false);
    unsigned want = n->cfg.indirect_k, sent = 0;
    struct member *used[16];
    for (int tries = 0; sent < want && sent < 16 && tries < 32; tries++) {
        struct member *r = random_live(n, true);
        if (!r) break;
        if (r == t) continue;
        bool dup = false;
        for (unsigned i = 0; i < sent; i++) dup |= used[i] == r;
        if (dup) continue;
        used[sent++] = r;
        struct gossip_enc e;
        pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_probe(&e, GOSSIP_PING_REQ, n->pr.seq, t->id, t->id_len, &t->addr)) break;
        piggyback(n, &e);
        pkt_send(n, &r->addr, &e, SM_PKT_PROBE, 0);
        n->st.indirect_probes++;
    }
    n->pr.nacks_expected = sent;
}

static void on_ping(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    if (msg->u.probe.target_len && !is_self_id(n, msg->u.probe.target, msg->u.probe.target_len))
        return; /* meant for someone who used to have this address */
    if (!reply_open(rp)) return;
    rp->cls = SM_PKT_PROBE;
    if (gossip_enc_probe(&rp->e, GOSSIP_ACK, msg->u.probe.seq, NULL, 0, NULL)) return;
}

static void on_ack(struct sm_node *n, const struct gossip_msg *msg)
{
    uint32_t seq = msg->u.probe.seq;
    if (n->pr.active && seq == n->pr.seq) {
        n->pr.acked = true;
        return;
    }
    for (size_t i = 0; i < MAX_RELAYS && n->n_relays; i++) {
        struct relay *r = &n->relays[i];
        if (r->used && r->my_seq == seq) {
            struct gossip_enc e;
            pkt_begin(n, &e, SIZE_MAX);
            if (gossip_enc_probe(&e, GOSSIP_ACK, r->their_seq, NULL, 0, NULL) == 0)
                pkt_send(n, &r->to, &e, SM_PKT_PROBE, 0);
            r->used = false;
            n->n_relays--;
            return;
        }
    }
    n->st.rejected[SM_REJ_STALE]++;
}

static void on_nack(struct sm_node *n, const struct gossip_msg *msg)
{
    n->st.nacks_recv++;
    if (n->pr.active && msg->u.probe.seq == n->pr.seq) n->pr.nacks++;
}

static void on_ping_req(struct sm_node *n, const struct gossip_msg *msg, const struct sm_addr *from,
                        bool authed)
{
    if (!authed) return; /* relaying for strangers would make us an amplifier */
    struct relay *r = NULL;
    for (size_t i = 0; i < MAX_RELAYS && !r; i++)
        if (!n->relays[i].used) r = &n->relays[i];
    if (!r) return;
    r->used = true;
    n->n_relays++;
    r->my_seq = ++n->seq;
    r->their_seq = msg->u.probe.seq;
    r->to = *from;
    r->deadline = n->now.mono_ms + n->cfg.probe_timeout_ms;
    struct gossip_enc e;
    pkt_begin(n, &e, SIZE_MAX);
    if (gossip_enc_probe(&e, GOSSIP_PING, r->my_seq, msg->u.probe.target, msg->u.probe.target_len,
                         NULL))
        return;
    piggyback(n, &e);
    pkt_send(n, &msg->u.probe.target_addr, &e, SM_PKT_PROBE, 0);
}

static void relays_tick(struct sm_node *n)
{
    for (size_t i = 0; i < MAX_RELAYS && n->n_relays; i++) {
        struct relay *r = &n->relays[i];
        if (!r->used || r->deadline > n->now.mono_ms) continue;
        r->used = false;
        n->n_relays--;
        struct gossip_enc e;
        pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_probe(&e, GOSSIP_NACK, r->their_seq, NULL, 0, NULL) == 0)
            pkt_send(n, &r->to, &e, SM_PKT_PROBE, 0);
    }
}

/* ------------------------------------------------------------------------ */
/* Join and membership sync */

static void send_join(struct sm_node *n, const struct sm_addr *to)
{
    struct gossip_enc e;
    size_t cap = payload_cap(n, SMC_SEAL_CERT);
    (void)gossip_enc_begin(&e, S.pkt, cap, n->id, n->cfg.id_len, n->self->inc);
    const uint8_t *cert = NULL;
    size_t cl = 0;
    if (n->crypto) cert = smc_ctx_cert(n->crypto, &cl);
    /* pad to the full packet: the answer may then be as large (no amplification) */
    size_t base = e.len + 8 + n->self->addr.len + (cert ? cl + 3 : 1);
    size_t pad = cap > base + 8 ? cap - base - 8 : 0;
    while (gossip_enc_join(&e, &n->self->addr, cert, cl, pad) != 0 && pad > 0)
        pad = pad > 16 ? pad - 16 : 0;
    pkt_send(n, to, &e, SM_PKT_MEMBER, SMC_SEAL_CERT);
}

static int enc_member_state(struct sm_node *n, struct gossip_enc *e, const struct member *m)
{
    if (m->state == SM_MEMBER_ALIVE) {
        const uint8_t *cert = NULL;
        size_t cl = 0;
        if (n->crypto) cert = smc_trust_get_encoded(n->crypto, m->id, m->id_len, &cl);
        return gossip_enc_alive(e, m->id, m->id_len, m->inc, &m->addr, cert, cl);
    }
    uint8_t t = m->state == SM_MEMBER_SUSPECT ? GOSSIP_SUSPECT
                : m->state == SM_MEMBER_DEAD  ? GOSSIP_DEAD
                                              : GOSSIP_LEAVE;
    return gossip_enc_member(e, t, m->id, m->id_len, m->inc, n->id, n->cfg.id_len);
}

static void send_page(struct sm_node *n, struct reply *rp, uint32_t cursor, struct member *asker)
{
    if (!reply_open(rp)) return;
    rp->cls = SM_PKT_MEMBER;
    struct gossip_enc *e = &rp->e;
    size_t mark_len = e->len;
    unsigned mark_n = e->n_msgs;
    if (gossip_enc_sync(e, GOSSIP_SYNC_PAGE, 0, n->seed_heard)) return;
    size_t page_pos = mark_len;
    /* what we hold about the asker first, so it can refute at once */
    if (asker && !live_state(asker->state)) (void)enc_member_state(n, e, asker);
    if (cursor == 0) (void)enc_member_state(n, e, n->self);
    if (cursor >= n->n_members) cursor = n->n_members ? cursor % (uint32_t)n->n_members : 0;
    uint32_t i = cursor;
    for (; i < n->n_members; i++) {
        struct member *m = n->members[i];
        if (m->self || m == asker) continue;
        if (enc_member_state(n, e, m) != 0) break;
    }
    uint32_t next = i < n->n_members ? i : 0;
    /* rewrite the page header with the real cursor (same encoded size class
     * is not guaranteed, so rebuild it: header is small, re-encode in place) */
    uint8_t tmp[16];
    struct gossip_enc h = {.buf = tmp, .cap = sizeof(tmp)};
    (void)gossip_enc_sync(&h, GOSSIP_SYNC_PAGE, next, n->seed_heard);
    size_t old_hlen;
    {
        struct gossip_enc h0 = {.buf = tmp + 8, .cap = 8};
        (void)gossip_enc_sync(&h0, GOSSIP_SYNC_PAGE, 0, n->seed_heard);
        old_hlen = h0.len;
    }
    if (h.len != old_hlen) {
        if (h.len > old_hlen && gossip_enc_room(e) < h.len - old_hlen) {
            /* drop the last member to make room */
            e->len = mark_len;
            e->n_msgs = mark_n;
            return;
        }
        memmove(e->buf + page_pos + h.len, e->buf + page_pos + old_hlen,
                e->len - page_pos - old_hlen);
        e->len = e->len + h.len - old_hlen;
    }
    memcpy(e->buf + page_pos, tmp, h.len);
    reply_flush(rp);
}

/* ------------------------------------------------------------------------ */
/* Receive */

static enum sm_pkt_class classify(const struct gossip_packet *p)
{
    if (!p->n_msgs) return SM_PKT_MEMBER;
    switch (p->msgs[0].type) {
    case GOSSIP_PING:
    case GOSSIP_ACK:
    case GOSSIP_NACK:
    case GOSSIP_PING_REQ:
        return SM_PKT_PROBE;
    case GOSSIP_REC:
        return p->msgs[0].u.rec.kind == GOSSIP_RK_AE ? SM_PKT_AE : SM_PKT_DATA;
    case GOSSIP_IHAVE:
    case GOSSIP_GRAFT:
    case GOSSIP_PRUNE:
        return SM_PKT_DATA;
    case GOSSIP_DIGEST:
    case GOSSIP_DIGEST_LEAVES:
    case GOSSIP_LEAF_IDS:
    case GOSSIP_WANT:
    case GOSSIP_IN_SYNC:
        return SM_PKT_AE;
    default:
        return SM_PKT_MEMBER;
    }
}

static void recompute_next(struct sm_node *n);

static void trust_cert(struct sm_node *n, const uint8_t *cert, size_t len, const char *id,
                       size_t idl)
{
    if (!n->crypto || !cert) return;
    enum smc_reason why;
    int rc = smc_trust_add(n->crypto, n->now.wall_ms, cert, len, &why);
    if (rc < 0) {
        n->st.rejected[SM_REJ_CERT]++;
        return;
    }
    if (rc == 1) release_pending(n, id, idl);
}

static int process(struct sm_node *n, const struct sm_addr *from, size_t req_len, bool env_auth)
{
    struct gossip_packet *p = &S.in;
    struct member *src = mfind(n, p->sender, p->sender_len);
    enum sm_pkt_class cls = classify(p);
    n->st.pkts_recv[cls]++;
    n->st.bytes_recv[cls] += req_len;
    n->st.rejected[SM_REJ_UNKNOWN_MSG] += p->n_unknown;

    /* authenticated: the envelope verified it, or (crypto off) it is a live
     * member speaking from its known address; decided before a stranger is
     * added below */
    bool authed =
        n->crypto ? env_auth : (src && live_state(src->state) && addr_eq(&src->addr, from));
    /* a stranger talking to us (its join or rumor did not reach us, or our
     * partial view evicted it) becomes a member at the address it spoke from */
    if (!src && p->n_msgs && p->msgs[0].type != GOSSIP_JOIN && p->msgs[0].type != GOSSIP_LEAVE) {
        /* with a full (partial) view, a prober we do not know is usually just
         * someone whose view holds us: taking it in evicts another member at
         * every such probe (nine in ten at 10,000 nodes with 1,024-member
         * views), so it gets in like a rumor does, now and then */
        enum alive_via via = cls == SM_PKT_PROBE ? VIA_PROBE : VIA_DIRECT;
        if (on_alive(n, p->sender, p->sender_len, p->sender_inc, from, NULL, via))
            src = mfind(n, p->sender, p->sender_len);
    }
    /* the header is an implicit, direct "alive" from the sender */
    if (src && !src->self) {
        if (p->sender_inc > src->inc) {
            src->cert_left = CERT_SENDS; /* restarted: its trust store may be empty */
            on_alive(n, p->sender, p->sender_len, p->sender_inc, NULL, NULL, VIA_DIRECT);
        } else if (!live_state(src->state) ||
                   (src->state == SM_MEMBER_SUSPECT && p->sender_inc == src->inc)) {
            notice(n, src, from);
        }
    }
    if (src && src->peer >= 0) n->peers[src->peer].confirmed = true;
    n->accused_now = false;
    bool page = p->n_msgs && p->msgs[0].type == GOSSIP_SYNC_PAGE;
    /* joined: a seed answered, and that seed is itself joined (else we would
     * only be part of its island); when every seed lists the others and none
     * is rooted, an answer counts after a while anyway */
    if (page && (n->crypto ? env_auth : true) && !n->seed_heard &&
        (p->msgs[0].u.join.rooted || n->rejoin_tries >= 15))
        for (size_t i = 0; i < n->n_seeds && !n->seed_heard; i++)
            if (addr_eq(from, &n->seeds[i])) {
                n->seed_heard = n->sync_walk = true;
                /* those who joined through us while we were not rooted wait
                 * for a rooted answer: give it now rather than at their next
                 * retry, so rooting runs down a chain of joins at network
                 * speed instead of one retry period per hop */
                for (size_t k = 0; k < n->n_early; k++) {
                    struct reply er = {
                        .n = n, .to = &n->early[k], .budget = SIZE_MAX, .cls = SM_PKT_MEMBER};
                    send_page(n, &er, 0, NULL);
                }
                n->n_early = 0;
            }
    struct reply rp = {.n = n, .to = from, .budget = authed ? SIZE_MAX : req_len, .cls = cls};

    for (size_t i = 0; i < p->n_msgs; i++) {
        const struct gossip_msg *m = &p->msgs[i];
        switch (m->type) {
        case GOSSIP_PING:
            on_ping(n, m, &rp);
            break;
        case GOSSIP_ACK:
            on_ack(n, m);
            break;
        case GOSSIP_NACK:
            on_nack(n, m);
            break;
        case GOSSIP_PING_REQ:
            on_ping_req(n, m, from, authed);
            break;
        case GOSSIP_ALIVE:
            n->st.rumors_received++;
            trust_cert(n, m->u.member.cert, m->u.member.cert_len, m->u.member.id,
                       m->u.member.id_len);
            on_alive(n, m->u.member.id, m->u.member.id_len, m->u.member.inc, &m->u.member.addr, src,
                     page ? VIA_PAGE : VIA_RUMOR);
            break;
        case GOSSIP_SUSPECT:
            on_suspect(n, m->u.member.id, m->u.member.id_len, m->u.member.inc, m->u.member.from,
                       m->u.member.from_len, src);
            break;
        case GOSSIP_DEAD:
        case GOSSIP_LEAVE:
            on_dead(n, (uint8_t)m->type, m->u.member.id, m->u.member.id_len, m->u.member.inc,
                    m->u.member.from ? m->u.member.from : p->sender,
                    m->u.member.from ? m->u.member.from_len : p->sender_len, src);
            break;
        case GOSSIP_JOIN:
            trust_cert(n, m->u.join.cert, m->u.join.cert_len, p->sender, p->sender_len);
            if (is_self_id(n, p->sender, p->sender_len)) break;
            if (!src || p->sender_inc > src->inc) {
                on_alive(n, p->sender, p->sender_len, p->sender_inc, &m->u.join.addr, NULL,
                         VIA_JOIN);
                src = mfind(n, p->sender, p->sender_len);
            }
            rp.to = from;
            send_page(n, &rp, 0, src);
            if (!n->seed_heard && n->n_early < EARLY_MAX) {
                bool dup = false;
                for (size_t k = 0; k < n->n_early && !dup; k++) dup = addr_eq(&n->early[k], from);
                if (!dup) n->early[n->n_early++] = *from;
            }
            break;
        case GOSSIP_SYNC_REQ:
            send_page(n, &rp, m->u.join.cursor, src);
            break;
        case GOSSIP_SYNC_PAGE:
            if (m->u.join.cursor && n->sync_walk) {
                struct gossip_enc e;
                pkt_begin(n, &e, SIZE_MAX);
                size_t cap = e.cap;
                /* padding keeps an unauthenticated answer no larger than its
                 * request; with the envelope every packet is authenticated */
                size_t pad = !n->crypto && cap > e.len + 24 ? cap - e.len - 24 : 0;
                while (gossip_enc_sync(&e, GOSSIP_SYNC_REQ, m->u.join.cursor, pad) != 0 && pad)
                    pad = pad > 16 ? pad - 16 : 0;
                pkt_send(n, from, &e, SM_PKT_MEMBER, 0);
            }
            break;
        case GOSSIP_REC:
            /* a push from a non-peer re-creates the link (its graft was
             * lost), unless we just dropped it ourselves and the push
             * crossed our prune: re-adding then would leave a link only
             * we know about, and such one-sided links pile up */
            if (m->u.rec.kind == GOSSIP_RK_EAGER && src && src->peer < 0) {
                if (!src->unlinked || n->now.mono_ms - src->unlinked > 2000) {
                    peer_inbound(n, src, true);
                } else if (i == 0 || p->msgs[0].type == GOSSIP_IHAVE) {
                    /* it still pushes to us: our prune was lost; repeat it
                     * (once per packet), or it would keep a link we do not
                     * have and wait on it for records that never come */
                    struct gossip_enc pe;
                    pkt_begin(n, &pe, SIZE_MAX);
                    if (gossip_enc_prune(&pe, true) == 0)
                        pkt_send(n, &src->addr, &pe, SM_PKT_DATA, 0);
                }
            }
            if (m->u.rec.kind == GOSSIP_RK_EAGER && src && src->peer >= 0) {
                struct peer *pp = &n->peers[src->peer];
                if (pp->n_rx < RCPT_MAX)
                    n->pids[pp - n->peers].rx[pp->n_rx++] = crdt_rec_digest(&m->u.rec.v);
            }
            on_record(n, m, src);
            break;
        case GOSSIP_IHAVE:
            if (m->u.ids.round == GOSSIP_ROUND_RECEIPT)
                on_receipt(n, m, src);
            else
                on_ihave(n, m, src);
            break;
        case GOSSIP_GRAFT:
            on_graft(n, m, src, from);
            break;
        case GOSSIP_PRUNE:
            on_prune(n, m, src);
            break;
        case GOSSIP_DIGEST:
            rp.cls = SM_PKT_AE;
            on_digest(n, m, &rp);
            break;
        case GOSSIP_DIGEST_LEAVES:
            rp.cls = SM_PKT_AE;
            on_digest_leaves(n, m, &rp);
            break;
        case GOSSIP_LEAF_IDS:
            rp.cls = SM_PKT_AE;
            on_leaf_ids(n, m, &rp);
            break;
        case GOSSIP_WANT:
            rp.cls = SM_PKT_AE;
            on_want(n, m, &rp);
            break;
        case GOSSIP_IN_SYNC:
            on_root(n, m, &rp);
            break;
        case GOSSIP_WHOIS:
            on_whois(n, m, &rp);
            break;
        }
    }
    /* an ack (or any reply) carries piggybacked rumors */
    if (rp.open && rp.cls == SM_PKT_PROBE) piggyback(n, &rp.e);
    reply_flush(&rp);
    /* this packet told us we are suspect or dead (and made us refute, or
     * named an incarnation we already refuted): our current state goes
     * straight back to the sender, most likely the accuser, instead of only
     * along the links, which may not reach it before its timer runs out */
    if (n->accused_now) {
        /* (to a sender we cannot authenticate, no more than it sent us) */
        struct gossip_enc e;
        pkt_begin(n, &e, authed ? SIZE_MAX : req_len);
        if (enc_member_state(n, &e, n->self) == 0) pkt_send(n, from, &e, SM_PKT_MEMBER, 0);
    }
    fresh_flush(n);
    return 0;
}

int sm_node_recv(struct sm_node *n, struct sm_time now, const struct sm_addr *from,
                 const uint8_t *buf, size_t len)
{
    if (n->left) {
        n->st.rejected[SM_REJ_LEFT]++;
        return 0;
    }
    n->now = now;
    const uint8_t *payload = buf;
    size_t plen = len;
    int rc = 0;
    if (len > 65507) {
        n->st.rejected[SM_REJ_TOO_LARGE]++;
        return SM_ERANGE;
    }
    const char *esender = NULL;
    size_t esl = 0;
    if (n->crypto) {
        struct smc_opened o;
        rc = smc_open(n->crypto, now.wall_ms, buf, len, &o);
        if (rc != 0) {
            n->st.rejected[SM_REJ_ENVELOPE]++;
            return rc;
        }
        payload = o.payload;
        plen = o.payload_len;
        esender = o.sender;
        esl = o.sender_len;
        if (o.cert_added) release_pending(n, o.sender, o.sender_len);
    }
    enum gossip_decode_err de = gossip_decode(payload, plen, &S.in);
    if (de != GOSSIP_DEC_OK) {
        n->st.rejected[de == GOSSIP_DEC_VERSION    ? SM_REJ_VERSION
                       : de == GOSSIP_DEC_TOO_MANY ? SM_REJ_TOO_LARGE
                                                   : SM_REJ_DECODE]++;
        return SM_EPROTO;
    }
    if (is_self_id(n, S.in.sender, S.in.sender_len) ||
        (esender && (esl != S.in.sender_len || memcmp(esender, S.in.sender, esl) != 0))) {
        n->st.rejected[SM_REJ_SENDER]++;
        return SM_EAUTH;
    }
    process(n, from, len, n->crypto != NULL);
    recompute_next(n);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Timers */

static void reap_and_suspicion(struct sm_node *n)
{
    uint64_t now = n->now.mono_ms;
    for (size_t i = 0; i < n->n_susp;) {
        struct member *m = n->susp[i];
        if (m->state != SM_MEMBER_SUSPECT) {
            m->in_susp = false;
            n->susp[i] = n->susp[--n->n_susp];
            continue;
        }
        if (m->susp_deadline <= now && !m->accused && !m->verifying) {
            /* we only heard of this suspicion and may have missed the
             * refutation: look for ourselves first (two direct pings: an
             * ack's header carries the member's current incarnation, which
             * revives it here) before declaring a death */
            m->verifying = true;
            send_ping(n, m, ++n->seq, false);
            send_ping(n, m, n->seq, false);
            m->susp_deadline = now + scaled(n, 2 * n->cfg.probe_timeout_ms);
        }
        if (m->susp_deadline <= now) {
            m->in_susp = false;
            n->susp[i] = n->susp[--n->n_susp];
            declare_dead(n, m, GOSSIP_DEAD, n->id, n->cfg.id_len, NULL);
            continue;
        }
        /* our own accusation: keep telling the suspect (every 500 ms) so a
         * lost notice cannot decide its fate on a lossy network */
        if (m->accused) notice(n, m, &m->addr);
        i++;
    }
}

static void member_free(struct sm_node *n, struct member *m)
{
    if (m->rumor >= 0) rumor_drop(n, (size_t)m->rumor);
    if (m->peer >= 0) peer_remove(n, m);
    if (n->pr.target == m) n->pr.active = false, n->pr.target = NULL;
    for (size_t i = 0; i < n->n_missing; i++)
        for (unsigned k = 0; k < n->missing[i].n_ann; k++)
            if (n->missing[i].ann[k] == m) {
                n->missing[i].ann[k] = n->missing[i].ann[--n->missing[i].n_ann];
                if (n->missing[i].next > n->missing[i].n_ann)
                    n->missing[i].next = n->missing[i].n_ann;
                k--;
            }
    for (size_t i = 0; i < n->n_fresh; i++)
        if (n->fresh[i].src == m) n->fresh[i].src = NULL;
    /* probe list: drop it (rare; O(list)) */
    for (size_t i = 0; i < n->probe_n; i++)
        if (n->probe_list[i] == m) {
            memmove(n->probe_list + i, n->probe_list + i + 1,
                    (n->probe_n - i - 1) * sizeof(*n->probe_list));
            n->probe_n--;
            if (n->probe_pos > i) n->probe_pos--;
            break;
        }
    tab_del(n, m);
    uint32_t idx = m->idx;
    n->members[idx] = n->members[--n->n_members];
    n->members[idx]->idx = idx;
    n->st.members[m->state]--;
    if (!m->self && live_state(m->state)) n->n_alive_other--;
    free(m);
}

static void reap_dead(struct sm_node *n)
{
    uint64_t now = n->now.mono_ms;
    for (size_t i = 0; i < n->n_dead;) {
        struct member *m = n->dead[i];
        if (m->state != SM_MEMBER_DEAD && m->state != SM_MEMBER_LEFT) {
            m->in_dead = false;
            n->dead[i] = n->dead[--n->n_dead];
            continue;
        }
        if (now - m->since >= n->cfg.reap_timeout_ms) {
            n->dead[i] = n->dead[--n->n_dead];
            emit(n, SM_MEV_REAP, m);
            member_free(n, m);
            continue;
        }
        i++;
    }
}

static void dead_probe(struct sm_node *n)
{
    /* compact first so we pick among real dead members */
    size_t live_dead = 0;
    for (size_t i = 0; i < n->n_dead; i++) {
        struct member *m = n->dead[i];
        if (m->state == SM_MEMBER_DEAD) live_dead++;
    }
    if (!live_dead) return;
    unsigned k = 1 + (unsigned)(live_dead / 64);
    if (k > 4) k = 4;
    for (unsigned j = 0; j < k; j++) {
        struct member *m = n->dead[rng_below(n, n->n_dead)];
        if (m->state != SM_MEMBER_DEAD) continue;
        send_ping(n, m, ++n->seq, true);
    }
}

static void shuffle(struct sm_node *n)
{
    if (n->n_alive_other <= n->cfg.active_view) return;
    size_t idx[MAX_PEERS], c = 0;
    for (size_t i = 0; i < n->n_peers; i++)
        if (n->peers[i].chosen) idx[c++] = i;
    if (!c) return;
    struct member *old = n->peers[idx[rng_below(n, c)]].m;
    struct member *nw = random_live(n, true);
    if (!nw || nw->peer >= 0) return;
    struct gossip_enc e;
    pkt_begin(n, &e, SIZE_MAX);
    if (gossip_enc_prune(&e, true) == 0) pkt_send(n, &old->addr, &e, SM_PKT_DATA, 0);
    peer_remove(n, old);
    if (peer_add(n, nw, true, true)) {
        size_t w;
        pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, NULL, 0, &w) == 0)
            pkt_send(n, &nw->addr, &e, SM_PKT_DATA, 0);
    }
}

static void recompute_next(struct sm_node *n)
{
    if (n->left) {
        n->next = UINT64_MAX;
        return;
    }
    uint64_t t = min64(n->t_probe, min64(n->t_ae, n->t_maint));
    /* the gossip tick only announces and sends receipts of quiet links */
    if (n->n_lazy || receipts_pending(n)) t = min64(t, n->t_gossip);
    if (n->pr.active && !n->pr.acked && !n->pr.indirect) t = min64(t, n->pr.direct_deadline);
    for (size_t i = 0; i < n->n_susp; i++)
        if (n->susp[i]->state == SM_MEMBER_SUSPECT) t = min64(t, n->susp[i]->susp_deadline);
    for (size_t i = 0; i < n->n_missing; i++) t = min64(t, n->missing[i].deadline);
    for (size_t i = 0; i < MAX_RELAYS && n->n_relays; i++)
        if (n->relays[i].used) t = min64(t, n->relays[i].deadline);
    n->next = t;
}

void sm_node_on_timeout(struct sm_node *n, struct sm_time now)
{
    if (n->left) return;
    n->now = now;
    uint64_t t = now.mono_ms;
    if (n->pr.active && !n->pr.acked && !n->pr.indirect && t >= n->pr.direct_deadline)
        probe_indirect(n);
    if (t >= n->t_probe) {
        probe_finish(n);
        probe_start(n);
        n->t_probe = on_grid(n, t + scaled(n, n->cfg.probe_interval_ms));
    }
    reap_and_suspicion(n);
    if (n->n_missing) missing_tick(n);
    relays_tick(n);
    if (t >= n->t_gossip) {
        send_ihave_tick(n);
        receipts_tick(n);
        n->t_gossip = on_grid(n, t + n->cfg.gossip_interval_ms);
    }
    if (t >= n->t_ae) {
        /* quiet replicas compare roots on every ping instead (on_root) */
        if (n->last_change && t - n->last_change < 3 * (uint64_t)n->cfg.ae_interval_ms) ae_start(n);
        n->t_ae = on_grid(n, t + n->cfg.ae_interval_ms);
    }
    if (t >= n->t_maint) {
        n->t_maint = on_grid(n, t + MAINT_MS);
        reap_dead(n);
        if (t >= n->t_dead_probe) {
            dead_probe(n);
            n->t_dead_probe = t + n->cfg.dead_probe_interval_ms;
        }
        /* alone, or only found by others: a node whose join was lost and
         * that others then joined through would otherwise stay an island
         * with them; retry until a seed answers (backing off while we are
         * not alone, in case the seeds are gone for good) */
        bool alone = n->n_alive_other == 0;
        if ((alone || !n->seed_heard) && n->n_seeds && t >= n->t_rejoin) {
            for (size_t i = 0; i < n->n_seeds; i++) send_join(n, &n->seeds[i]);
            /* not alone: only the answer that roots us is worth a walk */
            n->sync_walk = alone;
            if (alone || ++n->rejoin_tries < 15) {
                n->rejoin_wait = n->cfg.rejoin_interval_ms;
            } else if (n->rejoin_wait < 60000) {
                n->rejoin_wait *= 2;
            }
            n->t_rejoin = t + n->rejoin_wait;
        }
        if (t >= n->t_sync) {
            /* membership pull from a random member: fills the view quickly
             * after a join storm, then keeps partial views fresh */
            struct member *m = random_live(n, true);
            if (m) {
                /* the first pulls after a join walk the peer's whole list;
                 * later ones take one page from a random place: enough to
                 * keep views mixing, and a walk of 1,000 members every
                 * minute would be most of a quiet node's traffic */
                n->sync_walk = n->sync_every <= SYNC_WALK_MS;
                uint32_t cursor = n->sync_walk ? 0 : (uint32_t)(1 + rng_below(n, n->n_members));
                struct gossip_enc e;
                pkt_begin(n, &e, SIZE_MAX);
                size_t pad = !n->crypto && e.cap > e.len + 24 ? e.cap - e.len - 24 : 0;
                while (gossip_enc_sync(&e, GOSSIP_SYNC_REQ, cursor, pad) != 0 && pad)
                    pad = pad > 16 ? pad - 16 : 0;
                pkt_send(n, &m->addr, &e, SM_PKT_MEMBER, 0);
            }
            n->t_sync = t + n->sync_every;
            if (n->sync_every < 60000) n->sync_every *= 2;
        }
        if (t >= n->t_shuffle) {
            shuffle(n);
            n->t_shuffle = t + n->cfg.shuffle_interval_ms;
        }
        peers_fill(n);
        links_check(n);
        if (n->crypto) smc_pending_expire(n->crypto, now.wall_ms);
        n->st.local_health = n->lh;
    }
    fresh_flush(n);
    recompute_next(n);
}

uint64_t sm_node_next_timeout(const struct sm_node *n)
{
    return n->next;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle and API */

#define DEF(f, v)                                                                                  \
    do {                                                                                           \
        if (!c->f) c->f = (v);                                                                     \
    } while (0)

struct sm_node *sm_node_new(const struct sm_node_config *cfg, struct crdt_replica *replica)
{
    if (!cfg || !cfg->cb.send || !cfg->id || !replica) return NULL;
    size_t idl = cfg->id_len ? cfg->id_len : strlen(cfg->id);
    if (!idl || idl > CRDT_MAX_ORIGIN || cfg->addr.len > SM_ADDR_MAX) return NULL;
    struct sm_node *n = calloc(1, sizeof(*n));
    if (!n) return NULL;
    n->cfg = *cfg;
    struct sm_node_config *c = &n->cfg;
    memcpy(n->id, cfg->id, idl);
    c->id = n->id;
    c->id_len = idl;
    DEF(gossip_interval_ms, 200);
    DEF(probe_interval_ms, 1000);
    DEF(probe_timeout_ms, 200);
    DEF(indirect_k, 3);
    DEF(suspicion_mult, 1);
    DEF(suspicion_max_mult, 2);
    DEF(max_local_health, 8);
    DEF(ae_interval_ms, 1000);
    DEF(reap_timeout_ms, 180000);
    DEF(dead_probe_interval_ms, 1000);
    DEF(rejoin_interval_ms, 2000);
    DEF(retransmit_mult, 4);
    DEF(active_view, 2);
    DEF(graft_timeout_ms, 100);
    DEF(shuffle_interval_ms, 5000);
    DEF(mtu, 1400);
    DEF(max_value_len, 1024);
    DEF(max_members, 1024);
    if (c->max_members < 8) c->max_members = 8;
    if (c->mtu < 512) c->mtu = 512;
    if (c->mtu > 65000) c->mtu = 65000;
    n->rep = replica;
    n->crypto = cfg->crypto;
    n->rng = cfg->seed ^ 0x5DEECE66Dull;
    n->tab_cap = 64;
    n->tab = calloc(n->tab_cap, sizeof(*n->tab));
    if (!n->tab) goto err;
    n->self = madd(n, n->id, idl, cfg->incarnation, &cfg->addr, 0);
    if (!n->self) goto err;
    n->self->self = true;
    n->n_alive_other = 0;
    /* timers start staggered by the seed so a cluster does not tick in lockstep */
    n->grid = c->gossip_interval_ms < GRID_MAX_MS ? c->gossip_interval_ms : GRID_MAX_MS;
    n->grid_phase = rng_below(n, n->grid ? n->grid : 1);
    n->t_probe = on_grid(n, rng_below(n, c->probe_interval_ms));
    n->t_gossip = on_grid(n, rng_below(n, c->gossip_interval_ms));
    n->t_ae = on_grid(n, rng_below(n, c->ae_interval_ms));
    n->t_maint = on_grid(n, rng_below(n, MAINT_MS));
    n->t_dead_probe = 0;
    n->t_shuffle = c->shuffle_interval_ms + rng_below(n, c->shuffle_interval_ms);
    n->sync_every = 60000;
    n->t_sync = UINT64_MAX;
    n->seed_heard = true; /* no seeds (yet): this node is where others join */
    n->next = 0;
    return n;
err:
    sm_node_delete(n);
    return NULL;
}

void sm_node_delete(struct sm_node *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->n_members; i++) free(n->members[i]);
    free(n->members);
    free(n->tab);
    free(n->probe_list);
    free(n->susp);
    free(n->dead);
    free(n->rumors);
    free(n->seeds);
    free(n->fresh_buf);
    free(n);
}

int sm_node_join(struct sm_node *n, struct sm_time now, const struct sm_addr *seeds, size_t k)
{
    if (!seeds && k) return SM_EINVAL;
    n->now = now;
    struct sm_addr *s = k ? calloc(k, sizeof(*s)) : NULL;
    if (k && !s) return SM_ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (seeds[i].len > SM_ADDR_MAX) continue;
        if (addr_eq(&seeds[i], &n->self->addr)) continue;
        s[m++] = seeds[i];
    }
    free(n->seeds);
    n->seeds = s;
    n->n_seeds = m;
    /* shift the timers to this clock (the node may have been created at another time) */
    if (n->t_probe < now.mono_ms) {
        n->t_probe += now.mono_ms;
        n->t_gossip += now.mono_ms;
        n->t_ae += now.mono_ms;
        n->t_maint += now.mono_ms;
        n->t_shuffle += now.mono_ms;
        n->grid_phase += now.mono_ms;
    }
    for (size_t i = 0; i < m; i++) send_join(n, &s[i]);
    n->sync_walk = true;
    n->seed_heard = m == 0;
    n->rejoin_tries = 0;
    n->rejoin_wait = n->cfg.rejoin_interval_ms;
    n->sync_every = 1000;
    n->t_sync = now.mono_ms + n->sync_every + rng_below(n, 500);
    n->t_rejoin = now.mono_ms + n->cfg.rejoin_interval_ms;
    rumor_queue(n, n->self, GOSSIP_ALIVE, NULL, 0);
    recompute_next(n);
    return 0;
}

int sm_node_leave(struct sm_node *n, struct sm_time now)
{
    if (n->left) return 0;
    n->now = now;
    struct member *s = n->self;
    s->inc++;
    /* tell the tree peers and a few random members directly */
    struct member *targets[8];
    size_t c = 0;
    for (size_t i = 0; i < n->n_peers && c < 4; i++) targets[c++] = n->peers[i].m;
    for (int i = 0; i < 8 && c < 8; i++) {
        struct member *m = random_live(n, false);
        if (m) targets[c++] = m;
    }
    for (size_t i = 0; i < c; i++) {
        struct gossip_enc e;
        pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_member(&e, GOSSIP_LEAVE, s->id, s->id_len, s->inc, NULL, 0) == 0)
            pkt_send(n, &targets[i]->addr, &e, SM_PKT_MEMBER, 0);
    }
    set_state(n, s, SM_MEMBER_LEFT);
    n->left = true;
    n->next = UINT64_MAX;
    return 0;
}

int sm_node_publish(struct sm_node *n, struct sm_time now, const struct crdt_rec_view *rec)
{
    if (!rec || !rec->key || !rec->key_len || rec->key_len > GOSSIP_MAX_KEY) return SM_EINVAL;
    if (n->left) return 0;
    n->now = now;
    uint64_t id = crdt_rec_digest(rec);
    unsigned leaf = (unsigned)(crdt_key_hash(rec->key, rec->key_len) & (CRDT_DIGEST_LEAVES - 1));
    recent_add(n, id, leaf, 0);
    fresh_add(n, rec, 1, NULL);
    lazy_add(n, id, 1);
    n->st.records_published++;
    n->last_change = now.mono_ms;
    if (!n->busy && !n->hold) {
        fresh_flush(n);
        recompute_next(n);
    }
    return 0;
}

void sm_node_hold(struct sm_node *n)
{
    n->hold = true;
}

void sm_node_flush(struct sm_node *n, struct sm_time now)
{
    n->hold = false;
    if (n->busy || n->left) return;
    n->now = now;
    fresh_flush(n);
    recompute_next(n);
}

int sm_node_write(struct sm_node *n, struct sm_time now, const struct crdt_rec_view *rec)
{
    if (!rec || !rec->key || !rec->key_len || rec->key_len > GOSSIP_MAX_KEY) return SM_EINVAL;
    struct crdt_rec_view v = *rec;
    uint8_t sig[CRDT_SIG_LEN];
    v.sig = NULL;
    v.flags &= (uint8_t)~CRDT_F_SIGNED;
    if (n->crypto && v.origin_len == n->cfg.id_len && memcmp(v.origin, n->id, v.origin_len) == 0) {
        int rc = smc_rec_sign(n->crypto, &v, sig);
        if (rc != 0) return rc;
        v.sig = sig;
        v.flags |= CRDT_F_SIGNED;
    }
    int rc = crdt_replica_merge(n->rep, &v);
    if (rc < 0) return SM_ENOMEM;
    if (rc == 0) return 0;
    rc = sm_node_publish(n, now, &v);
    return rc < 0 ? rc : 1;
}

size_t sm_node_member_count(const struct sm_node *n, enum sm_member_state state)
{
    return (unsigned)state < SM_MEMBER_STATE__COUNT ? (size_t)n->st.members[state] : 0;
}

int sm_node_foreach_member(const struct sm_node *n,
                           int (*fn)(const struct sm_member_info *m, void *arg), void *arg)
{
    for (size_t i = 0; i < n->n_members; i++) {
        struct sm_member_info info;
        member_info(n->members[i], &info);
        int rc = fn(&info, arg);
        if (rc) return rc;
    }
    return 0;
}

int sm_node_member_get(const struct sm_node *n, const char *id, size_t id_len,
                       struct sm_member_info *out)
{
    const struct member *m = mfind(n, id, id_len);
    if (!m) return SM_ENOTFOUND;
    member_info(m, out);
    return 0;
}

bool sm_node_member_live(const struct sm_node *n, const char *id, size_t id_len)
{
    const struct member *m = mfind(n, id, id_len);
    return m && live_state(m->state);
}

const char *sm_node_id(const struct sm_node *n, size_t *len)
{
    if (len) *len = n->cfg.id_len;
    return n->id;
}

uint64_t sm_node_incarnation(const struct sm_node *n)
{
    return n->self->inc;
}

const struct sm_node_stats *sm_node_stats(const struct sm_node *n)
{
    return &n->st;
}

struct crdt_replica *sm_node_replica(const struct sm_node *n)
{
    return n->rep;
}

const struct sm_node_config *sm_node_config(const struct sm_node *n)
{
    return &n->cfg;
}

const char *sm_member_event_name(enum sm_member_event e)
{
    static const char *const names[] = {"join",  "suspect", "alive", "dead",
                                        "leave", "reap",    "update"};
    return (unsigned)e < SM_MEV__COUNT ? names[e] : "?";
}

const char *sm_pkt_class_name(enum sm_pkt_class c)
{
    static const char *const names[] = {"probe", "member", "data", "ae"};
    return (unsigned)c < SM_PKT__COUNT ? names[c] : "?";
}

const char *sm_node_reject_name(enum sm_node_reject r)
{
    static const char *const names[] = {"decode", "version",    "too_large", "envelope",
                                        "sender", "record_sig", "record",    "unknown_msg",
                                        "stale",  "cert",       "left"};
    return (unsigned)r < SM_REJ__COUNT ? names[r] : "?";
}

/* Test hook (not part of the API): the Plumtree peers, for tests and debugging. */
size_t gossip_node_peers(const struct sm_node *n, const char **ids, size_t *id_lens, bool *eager,
                         size_t max);
size_t gossip_node_peers(const struct sm_node *n, const char **ids, size_t *id_lens, bool *eager,
                         size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < n->n_peers && k < max; i++, k++) {
        ids[k] = n->peers[i].m->id;
        id_lens[k] = n->peers[i].m->id_len;
        eager[k] = n->peers[i].eager;
    }
    return k;
}
