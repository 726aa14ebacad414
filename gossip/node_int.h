/* node_int.h: what the gossip/ files of one node share (private: not installed, not for src/).
 *
 * struct sm_node and its tables, the thread's packet scratch, the small
 * helpers every file calls on the hot receive path (static inline here, so
 * that the split into files costs no calls where one translation unit had
 * none), and the functions one file calls in another. Which file holds what:
 * see docs/protocol.md ("Source layout"). */
#ifndef GOSSIP_NODE_INT_H
#define GOSSIP_NODE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "statemesh.h"
#include "crdt/replica.h"
#include "crypto/crypto.h"
#include "gossip/node.h"
#include "gossip/wire.h"

/* internal to the library: direct calls and thread-local access, no PLT/GOT */
#pragma GCC visibility push(hidden)

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
static inline size_t id_room(size_t len)
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
struct gossip_scratch {
    uint8_t pkt[PKT_MAX];   /* ad-hoc packets */
    uint8_t reply[PKT_MAX]; /* the reply being built while a packet is processed */
    uint8_t wire[PKT_MAX];  /* sealed packet */
    uint8_t old[4096];      /* copy of a replaced record for on_record */
    struct gossip_packet in;
};
extern _Thread_local struct gossip_scratch gossip_scratch; /* defined in node.c */

static inline uint64_t rng_next(struct sm_node *n)
{
    /* splitmix64: tiny, good enough for peer selection, reproducible */
    uint64_t z = (n->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline size_t rng_below(struct sm_node *n, size_t k)
{
    return k ? (size_t)(rng_next(n) % k) : 0;
}

static inline uint64_t id_hash(const char *id, size_t len)
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

static inline bool addr_eq(const struct sm_addr *a, const struct sm_addr *b)
{
    return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

static inline bool is_self_id(const struct sm_node *n, const char *id, size_t len)
{
    return len == n->cfg.id_len && memcmp(id, n->id, len) == 0;
}

static inline uint64_t min64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* @p t rounded up to the node's timer grid: the periodic timers (probe,
 * gossip tick, anti-entropy, maintenance) fall on the same instants, so a
 * node wakes for them together rather than one by one. */
static inline uint64_t on_grid(const struct sm_node *n, uint64_t t)
{
    uint64_t g = n->grid, ph = n->grid_phase;
    if (g <= 1) return t;
    if (t <= ph) return ph;
    return ph + (t - ph + g - 1) / g * g;
}

static inline struct member *mfind(const struct sm_node *n, const char *id, size_t len)
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

static inline bool live_state(uint8_t s)
{
    return s == SM_MEMBER_ALIVE || s == SM_MEMBER_SUSPECT;
}

static inline bool pkt_empty(const struct gossip_enc *e)
{
    return e->n_msgs == 0;
}

/* ALIVE(id, inc, addr): returns true when our view changed. */
/* How an ALIVE reached us: as news to spread, as state transfer (a
 * membership page), or from the member itself (its join, or a probe or other
 * packet from a member we did not know). */
enum alive_via { VIA_RUMOR, VIA_PAGE, VIA_PROBE, VIA_DIRECT, VIA_JOIN };

static inline struct recent *recent_find_in(struct sm_node *n, uint64_t id, size_t depth)
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

static inline struct recent *recent_find(struct sm_node *n, uint64_t id)
{
    return recent_find_in(n, id, RECENT_CAP);
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

static inline uint64_t scaled(const struct sm_node *n, uint32_t ms)
{
    return (uint64_t)ms * (n->lh + 1);
}

/* members.c: the member table, state changes (SWIM + Lifeguard suspicion), reaping */
int gossip_vec_push(struct member ***v, size_t *len, size_t *cap, struct member *m);
struct member *gossip_madd(struct sm_node *n, const char *id, size_t len, uint64_t inc,
                           const struct sm_addr *addr, uint64_t now);
void gossip_set_state(struct sm_node *n, struct member *m, uint8_t st);
struct member *gossip_random_live(struct sm_node *n, bool alive_only);
bool gossip_on_alive(struct sm_node *n, const char *id, size_t idl, uint64_t inc,
                     const struct sm_addr *addr, struct member *src, enum alive_via via);
void gossip_start_suspect(struct sm_node *n, struct member *m, const char *from, size_t fl,
                          struct member *src);
void gossip_on_suspect(struct sm_node *n, const char *id, size_t idl, uint64_t inc,
                       const char *from, size_t fl, struct member *src);
void gossip_on_dead(struct sm_node *n, uint8_t type, const char *id, size_t idl, uint64_t inc,
                    const char *from, size_t fl, struct member *src);
int gossip_enc_member_state(struct sm_node *n, struct gossip_enc *e, const struct member *m);
void gossip_reap_and_suspicion(struct sm_node *n);
void gossip_reap_dead(struct sm_node *n);

/* rumors.c: membership changes piggybacked on probes and pushed along the tree */
void gossip_rumor_queue(struct sm_node *n, struct member *m, uint8_t type, const char *from,
                        size_t from_len);
void gossip_rumor_drop(struct sm_node *n, size_t i);
void gossip_piggyback(struct sm_node *n, struct gossip_enc *e);
void gossip_rumor_tree(struct sm_node *n, struct member *m, struct member *except);
void gossip_notice(struct sm_node *n, struct member *m, const struct sm_addr *to);

/* send.c: packets out: building, sealing, sending; the reply budget */
size_t gossip_payload_cap(const struct sm_node *n, unsigned seal_flags);
void gossip_pkt_begin(struct sm_node *n, struct gossip_enc *e, size_t cap);
void gossip_pkt_send(struct sm_node *n, const struct sm_addr *to, struct gossip_enc *e,
                     enum sm_pkt_class cls, unsigned seal_flags);
void gossip_reply_flush(struct reply *r);
bool gossip_reply_open(struct reply *r);

/* broadcast.c: Plumtree: peers, eager push, receipts, IHAVE/GRAFT/PRUNE */
void gossip_peer_remove(struct sm_node *n, struct member *m);
struct peer *gossip_peer_inbound(struct sm_node *n, struct member *m, bool eager);
void gossip_links_check(struct sm_node *n);
void gossip_peers_fill(struct sm_node *n);
void gossip_missing_drop(struct sm_node *n, uint64_t id);
void gossip_fresh_add(struct sm_node *n, const struct crdt_rec_view *v, uint8_t round,
                      struct member *src);
void gossip_lazy_add(struct sm_node *n, uint64_t id, uint8_t round);
void gossip_fresh_flush(struct sm_node *n);
void gossip_receipts_tick(struct sm_node *n);
bool gossip_receipts_pending(const struct sm_node *n);
void gossip_on_receipt(struct sm_node *n, const struct gossip_msg *msg, struct member *src);
void gossip_send_ihave_tick(struct sm_node *n);
void gossip_on_ihave(struct sm_node *n, const struct gossip_msg *msg, struct member *src);
void gossip_missing_tick(struct sm_node *n);
void gossip_on_graft(struct sm_node *n, const struct gossip_msg *msg, struct member *src,
                     const struct sm_addr *from);
void gossip_on_push(struct sm_node *n, const struct gossip_packet *p, size_t i, struct member *src);
void gossip_on_prune(struct sm_node *n, const struct gossip_msg *msg, struct member *src);
void gossip_shuffle(struct sm_node *n);

/* records.c: merging received records; publish and write */
void gossip_release_pending(struct sm_node *n, const char *id, size_t len);
void gossip_on_record(struct sm_node *n, const struct gossip_msg *msg, struct member *src);
void gossip_on_whois(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp);

/* antientropy.c: hierarchical-digest repair */
void gossip_ae_start(struct sm_node *n);
void gossip_on_ae_msg(struct sm_node *n, const struct gossip_msg *m, struct reply *rp);

/* probe.c: SWIM probing: ping, indirect ping-req, ack/nack, relays */
void gossip_send_ping(struct sm_node *n, struct member *t, uint32_t seq, bool notice_dead);
void gossip_probe_finish(struct sm_node *n);
void gossip_probe_start(struct sm_node *n);
void gossip_probe_indirect(struct sm_node *n);
void gossip_on_ping(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp);
void gossip_on_ack(struct sm_node *n, const struct gossip_msg *msg);
void gossip_on_nack(struct sm_node *n, const struct gossip_msg *msg);
void gossip_on_ping_req(struct sm_node *n, const struct gossip_msg *msg, const struct sm_addr *from,
                        bool authed);
void gossip_relays_tick(struct sm_node *n);
void gossip_dead_probe(struct sm_node *n);

/* join.c: join and membership sync pages */
void gossip_send_join(struct sm_node *n, const struct sm_addr *to);
void gossip_on_seed_page(struct sm_node *n, const struct gossip_packet *p,
                         const struct sm_addr *from, bool env_auth);
struct member *gossip_on_join(struct sm_node *n, const struct gossip_packet *p, struct member *src,
                              const struct gossip_msg *m, const struct sm_addr *from,
                              struct reply *rp);
void gossip_on_sync_page(struct sm_node *n, const struct gossip_msg *m, const struct sm_addr *from);
void gossip_rejoin_tick(struct sm_node *n, uint64_t t);
void gossip_sync_tick(struct sm_node *n, uint64_t t);
void gossip_send_page(struct sm_node *n, struct reply *rp, uint32_t cursor, struct member *asker);

/* node.c: receive, timers, lifecycle */
void gossip_recompute_next(struct sm_node *n);

#pragma GCC visibility pop

#endif /* GOSSIP_NODE_INT_H */
