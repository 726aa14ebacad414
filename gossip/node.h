/* node.h: the sans-IO gossip node: SWIM membership, Plumtree dissemination, anti-entropy. */
#ifndef GOSSIP_NODE_H
#define GOSSIP_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt/record.h"
#include "statemesh.h"

/**
 * @file
 * A gossip node (struct sm_node) is a state machine. It never opens a socket,
 * reads a clock, arms a timer or draws system randomness: the embedder (the
 * libev UDP driver gossip/udp.c, the simulator sim/, the unit tests) feeds it
 * datagrams with sm_node_recv(), calls sm_node_on_timeout() when the deadline
 * from sm_node_next_timeout() has passed, and carries the datagrams the node
 * hands to the send callback. Randomness comes from the seed in the config, so
 * the same inputs give the same outputs, bit for bit.
 *
 * The node owns no records: it merges what it receives into the caller's
 * struct crdt_replica and reads it to answer anti-entropy and graft requests.
 *
 * Threading: none. Every call on one node must come from one thread, and
 * callbacks run synchronously inside the call that caused them. A callback
 * must not call sm_node_delete() on its node; it may call sm_node_publish()
 * and sm_node_write() (the work is queued and flushed before the outer call
 * returns). The send callback must not synchronously call sm_node_recv() of
 * any node in the same thread (queue the datagram instead): nodes of one
 * thread share their packet scratch buffers, which keeps a 10,000-node
 * simulation small.
 *
 * See docs/protocol.md for the message flow, timers and parameters.
 */

struct crdt_replica;
struct smc_ctx;
struct sm_node;

/** Most bytes of a transport address. */
#define SM_ADDR_MAX 28

/**
 * A transport address as opaque bytes: the UDP driver stores a sockaddr
 * (sockaddr_in6 is 28 bytes), the simulator a node index. The node only
 * copies and compares them (length + bytes); it never interprets them.
 */
struct sm_addr {
    uint8_t len;            /**< used bytes of b, 0..SM_ADDR_MAX */
    uint8_t b[SM_ADDR_MAX]; /**< the address; bytes past len are ignored */
};

/**
 * The time of a call. mono_ms drives every timer (it must never go back);
 * wall_ms (ms since the epoch, may jump or be skewed) is used only for record
 * expiry, certificate validity and the crypto replay window.
 */
struct sm_time {
    uint64_t mono_ms; /**< monotonic milliseconds (any origin) */
    int64_t wall_ms;  /**< wall-clock milliseconds since the epoch */
};

/**
 * Member states are the public enum sm_member_state of statemesh.h
 * (SM_MEMBER_ALIVE = 1 .. SM_MEMBER_LEFT = 4); arrays indexed by state have
 * SM_MEMBER_STATE__COUNT slots (slot 0 unused).
 */
#define SM_MEMBER_STATE__COUNT 5

/** Member events delivered through sm_node_callbacks.on_member. */
enum sm_member_event {
    SM_MEV_JOIN = 0,    /**< a member became known (alive) */
    SM_MEV_SUSPECT = 1, /**< a member is suspected */
    SM_MEV_ALIVE = 2,   /**< a suspect or dead member is alive again (refuted / rejoined) */
    SM_MEV_DEAD = 3,    /**< a member was declared dead */
    SM_MEV_LEAVE = 4,   /**< a member left gracefully */
    SM_MEV_REAP = 5,    /**< a dead or left member was forgotten */
    SM_MEV_UPDATE = 6,  /**< an alive member changed address or certificate */
    SM_MEV__COUNT
};

/** A read-only view of a member. Every pointer is borrowed (see where it is handed out). */
struct sm_member_info {
    const char *id;             /**< node id, not NUL-terminated */
    size_t id_len;              /**< its length (1..CRDT_MAX_ORIGIN) */
    struct sm_addr addr;        /**< its advertised address */
    uint64_t incarnation;       /**< the member's incarnation as we know it */
    enum sm_member_state state; /**< current state */
    uint64_t state_since_ms;    /**< mono time the state was entered */
    bool self;                  /**< this is the local node */
};

/**
 * Packet classes, passed to the send callback and used in the statistics, so
 * an embedder can account failure detection apart from data traffic.
 */
enum sm_pkt_class {
    SM_PKT_PROBE = 0,  /**< failure detection: ping, ack, nack, ping-req (with piggyback) */
    SM_PKT_MEMBER = 1, /**< membership: join, membership sync pages, leave, refutation pushes */
    SM_PKT_DATA = 2,   /**< dissemination: record push, graft, ihave, prune */
    SM_PKT_AE = 3,     /**< anti-entropy: digests, leaf ids, wants, the records they pull */
    SM_PKT__COUNT
};

/** Why a received packet (or a part of it) was dropped. */
enum sm_node_reject {
    SM_REJ_DECODE = 0,      /**< malformed msgpack / message (wire decode failed) */
    SM_REJ_VERSION = 1,     /**< unknown wire version */
    SM_REJ_TOO_LARGE = 2,   /**< larger than the MTU or more messages than allowed */
    SM_REJ_ENVELOPE = 3,    /**< crypto envelope refused it (see the smc_ctx stats for why) */
    SM_REJ_SENDER = 4,      /**< header sender differs from the authenticated sender, or is us */
    SM_REJ_RECORD_SIG = 5,  /**< a record's signature did not verify (record dropped) */
    SM_REJ_RECORD = 6,      /**< a record with bad fields (origin, key, value size) */
    SM_REJ_UNKNOWN_MSG = 7, /**< a message of an unknown type (skipped, rest processed) */
    SM_REJ_STALE = 8,       /**< a reply to nothing we asked (late ack, unknown seq) */
    SM_REJ_CERT = 9,        /**< a membership certificate that did not verify */
    SM_REJ_LEFT = 10,       /**< the node has left; input ignored */
    SM_REJ__COUNT
};

/**
 * Counters of one node (monotonic unless noted). Read them with
 * sm_node_stats(); the simulator sums them over nodes.
 */
struct sm_node_stats {
    uint64_t pkts_sent[SM_PKT__COUNT];        /**< packets handed to the send callback, by class */
    uint64_t bytes_sent[SM_PKT__COUNT];       /**< their bytes */
    uint64_t pkts_recv[SM_PKT__COUNT];        /**< packets accepted by sm_node_recv(), by class */
    uint64_t bytes_recv[SM_PKT__COUNT];       /**< their bytes */
    uint64_t rejected[SM_REJ__COUNT];         /**< drops by reason */
    uint64_t members[SM_MEMBER_STATE__COUNT]; /**< gauge: members by state (self included) */
    uint64_t records_merged;                  /**< remote records that changed the replica */
    uint64_t records_duplicate; /**< remote records that did not (already known or older) */
    uint64_t records_published; /**< local records handed to sm_node_publish()/write() */
    uint64_t records_pending;   /**< records parked waiting for their origin's certificate */
    uint64_t probes;            /**< direct probes sent */
    uint64_t probe_timeouts;    /**< direct probes that got no ack in time */
    uint64_t indirect_probes;   /**< ping-req sent */
    uint64_t nacks_recv;        /**< nacks received (Lifeguard) */
    uint64_t suspicions;        /**< members this node started suspecting */
    uint64_t refutations;       /**< own incarnation bumps to refute suspicion/death */
    uint64_t grafts;            /**< Plumtree grafts sent */
    uint64_t prunes;            /**< Plumtree prunes sent */
    uint64_t ihave_ids;         /**< ids announced lazily */
    uint64_t ae_rounds;         /**< anti-entropy rounds started */
    uint64_t ae_in_sync;        /**< rounds that found the roots equal */
    uint64_t ae_records_sent;   /**< records sent in answer to anti-entropy */
    uint64_t encode_overflow;   /**< items that did not fit a packet and were deferred/dropped */
    uint64_t local_health;      /**< gauge: Lifeguard local health multiplier (0 = healthy) */
    uint64_t rumors_queued;     /**< membership changes queued for piggybacking */
    uint64_t rumors_received;   /**< membership messages received */
    uint64_t peers;             /**< gauge: dissemination peers (symmetric links) */
    uint64_t receipt_misses;    /**< records a link receipt showed lost on the way (grafted) */
    uint64_t whois_sent;        /**< certificates asked for (records of unknown origins) */
};

/** Callbacks. ud is sm_node_config.ud. */
struct sm_node_callbacks {
    /**
     * Send one datagram to @p to. @p buf is valid only during the call.
     * Required. The class tells what kind of traffic it is (for accounting).
     */
    void (*send)(void *ud, const struct sm_addr *to, const uint8_t *buf, size_t len,
                 enum sm_pkt_class cls);
    /**
     * A record received from a peer changed the replica. @p rec is the new
     * stored record; @p old the one it replaced, or NULL when the key was
     * absent. Both are valid only during the call. Optional.
     */
    void (*on_record)(void *ud, const struct crdt_rec_view *rec, const struct crdt_rec_view *old);
    /** A member event. @p m is valid only during the call. Optional. */
    void (*on_member)(void *ud, enum sm_member_event ev, const struct sm_member_info *m);
};

/**
 * Node configuration. Zero numeric fields take the documented default, so
 * `struct sm_node_config c = {0};` plus id, addr, cb and seed is a valid
 * configuration. The config is copied by sm_node_new() (id included).
 */
struct sm_node_config {
    const char *id;       /**< node id (1..CRDT_MAX_ORIGIN bytes); with crypto it must be the
                               certificate's id */
    size_t id_len;        /**< its length; 0 = strlen(id) */
    struct sm_addr addr;  /**< own address as peers should reach it */
    uint64_t seed;        /**< PRNG seed (all randomness of the node) */
    uint64_t incarnation; /**< starting incarnation (e.g. start-up wall ms, so a restarted
                               node outranks its old self); default 0 */

    uint32_t gossip_interval_ms; /**< Plumtree lazy (IHAVE) flush and membership push; 200 */
    uint32_t probe_interval_ms;  /**< SWIM protocol period; 1000 */
    uint32_t probe_timeout_ms;   /**< direct ack timeout (scaled by local health); 200 */
    uint32_t indirect_k;         /**< peers asked for an indirect probe; 3 */
    uint32_t suspicion_mult;     /**< suspicion timeout = mult * log10(N) * probe interval
                                      (Lifeguard minimum); 1 */
    uint32_t suspicion_max_mult; /**< Lifeguard: initial suspicion timeout = this * minimum; 2 */
    uint32_t max_local_health;   /**< Lifeguard local health multiplier cap; 8 */
    uint32_t ae_interval_ms;     /**< anti-entropy push-pull period; 1000 */
    uint32_t reap_timeout_ms;    /**< dead/left members forgotten after this; 180000 */
    uint32_t dead_probe_interval_ms; /**< probe one random dead member this often, to heal
                                          partitions; 1000 */
    uint32_t rejoin_interval_ms;     /**< while alone (no alive peer), re-send join to the seeds
                                          this often; 2000 */
    uint32_t retransmit_mult;     /**< λ: a membership change is piggybacked λ·⌈log10(N+1)⌉
                                       times; 4 */
    uint32_t active_view;         /**< Plumtree peers chosen by this node (inbound links add to
                                       them); 2 */
    uint32_t graft_timeout_ms;    /**< wait this long after an IHAVE for the eager copy before
                                       grafting; 100 */
    uint32_t shuffle_interval_ms; /**< replace one chosen Plumtree peer this often; 5000 */
    uint32_t mtu;                 /**< largest datagram, envelope included; 1400 (min 512) */
    uint32_t max_value_len;       /**< largest record value accepted from peers; 1024 */
    uint32_t tombstone_grace_ms;  /**< replica sweep grace for tombstones (0 = no sweeping by
                                       the node: the embedder sweeps) */
    bool prune;           /**< Plumtree pruning of redundant eager links (tree mode). Off (default):
                               records are flooded over the sparse symmetric peer graph, which costs
                               about (degree - 1) packets per node per record but gives shortest-path
                               latency and tolerates loss; on: about one packet per node, deeper paths */
    uint32_t max_members; /**< members tracked at most (self included); beyond it the node keeps
                               a random partial view, evicting a random non-peer member for a
                               newcomer (bounds memory in 10k-node simulations); 1024 */

    struct sm_node_callbacks cb; /**< callbacks (send is required) */
    void *ud;                    /**< passed to every callback */

    /**
     * Optional security context (crypto/ctx.h), borrowed: it must outlive the
     * node. NULL = crypto off: packets are plain, records unsigned. When set,
     * every packet is sealed/opened through the envelope, records are
     * verified against their origin's certificate (parked while unknown), and
     * own certificates travel with membership messages.
     */
    struct smc_ctx *crypto;
};

/**
 * A hint for an embedder that knows which node will receive next (a batch of
 * received datagrams, the simulator): start loading the state a receive from
 * @p sender (its node id; NULL/0 for a timeout) touches first. Stage 0 is the
 * node's own hot lines and peer slots, stage 1 the peers' receipt ids, the
 * newest recent record ids and the sender's member-table slot, stage 2 the
 * sender's member entry; run each stage a little after the one before.
 * Changes nothing.
 */
void sm_node_prefetch(const struct sm_node *n, int stage, const char *sender, size_t len);

/**
 * Create a node bound to @p replica (borrowed: it must outlive the node).
 * Returns NULL on bad configuration (no send callback, bad id) or OOM.
 * The node starts alone; call sm_node_join() to contact seeds.
 */
struct sm_node *sm_node_new(const struct sm_node_config *cfg, struct crdt_replica *replica);

/** Free a node (no leave message: call sm_node_leave() first for that). NULL is fine. */
void sm_node_delete(struct sm_node *node);

/**
 * A datagram arrived from @p from. @p buf is borrowed for the call only.
 * Invalid input is counted (sm_node_stats().rejected) and dropped; it never
 * fails otherwise. Returns 0, or a negative SM_E* describing why the packet
 * was dropped (SM_EPROTO, SM_EAUTH, SM_ECRYPTO, SM_ERANGE) — for logging only.
 */
int sm_node_recv(struct sm_node *node, struct sm_time now, const struct sm_addr *from,
                 const uint8_t *buf, size_t len);

/** Run every timer due at @p now (probes, suspicion, gossip tick, anti-entropy, reaping). */
void sm_node_on_timeout(struct sm_node *node, struct sm_time now);

/**
 * The monotonic time (ms, same clock as sm_time.mono_ms) at which
 * sm_node_on_timeout() must next be called. Calling it earlier is harmless.
 * Changes after every sm_node_* call that takes a time.
 */
uint64_t sm_node_next_timeout(const struct sm_node *node);

/**
 * Join the cluster through @p n seed addresses (copied; the own address is
 * skipped). The node keeps retrying every rejoin_interval_ms while it knows
 * no alive peer, so seeds may come up later. Returns 0 or SM_EINVAL.
 */
int sm_node_join(struct sm_node *node, struct sm_time now, const struct sm_addr *seeds, size_t n);

/**
 * Leave gracefully: tell a few peers (which spread it) and stop probing,
 * disseminating and answering. Call sm_node_delete() afterwards (e.g. after
 * a few hundred ms of driving timeouts so the leave message is repeated).
 */
int sm_node_leave(struct sm_node *node, struct sm_time now);

/**
 * Hold back the eager push of records published from now on until
 * sm_node_flush(), so a batch of local writes travels in full packets
 * instead of one packet per record and peer. Records still go out early when
 * the node's forwarding buffer fills.
 */
void sm_node_hold(struct sm_node *n);

/** End sm_node_hold(): push what was published meanwhile. */
void sm_node_flush(struct sm_node *n, struct sm_time now);

/**
 * The embedder merged a local write into the replica: spread @p rec at once
 * (eager push on the broadcast tree). @p rec is copied. With crypto it must
 * already be signed (see sm_node_write()). Returns 0 or SM_ENOMEM/SM_EINVAL.
 */
int sm_node_publish(struct sm_node *node, struct sm_time now, const struct crdt_rec_view *rec);

/**
 * Sign @p rec (when crypto is on and its origin is this node), merge it into
 * the replica and publish it. The view's sig field is ignored and replaced.
 * Returns 1 when the replica changed and the record was published, 0 when the
 * replica already held something greater or equal (nothing sent), or a
 * negative SM_E* code.
 */
int sm_node_write(struct sm_node *node, struct sm_time now, const struct crdt_rec_view *rec);

/** @name Members
 * @{ */
/** Number of members in @p state (self counted as alive). */
size_t sm_node_member_count(const struct sm_node *node, enum sm_member_state state);
/**
 * Call @p fn for every known member (self included), in no particular order.
 * @p m is valid only during the call; the node must not be driven from @p fn.
 * A non-zero return stops and is returned.
 */
int sm_node_foreach_member(const struct sm_node *node,
                           int (*fn)(const struct sm_member_info *m, void *arg), void *arg);
/** Look member @p id up; 0 and *out filled (id borrowed until the next call), or SM_ENOTFOUND. */
int sm_node_member_get(const struct sm_node *node, const char *id, size_t id_len,
                       struct sm_member_info *out);
/**
 * Whether node @p id is alive or suspect in our view (self included): the
 * "live member" predicate for per-node counter slots, so a dead member's slot
 * stops counting. Unknown ids are not live.
 */
bool sm_node_member_live(const struct sm_node *node, const char *id, size_t id_len);
/** @} */

/** Own node id (borrowed, valid for the node's life) and its length. */
const char *sm_node_id(const struct sm_node *node, size_t *len);
/** Own current incarnation (grows when refuting suspicion; never decreases). */
uint64_t sm_node_incarnation(const struct sm_node *node);
/** Counters (borrowed, live while the node exists). */
const struct sm_node_stats *sm_node_stats(const struct sm_node *node);
/** The replica the node merges into. */
struct crdt_replica *sm_node_replica(const struct sm_node *node);
/** The effective configuration (defaults filled in). Borrowed. */
const struct sm_node_config *sm_node_config(const struct sm_node *node);
/** Short names for logs and metrics labels (states: sm_member_state_name() of statemesh.h). */
const char *sm_member_event_name(enum sm_member_event e);
const char *sm_pkt_class_name(enum sm_pkt_class c);
const char *sm_node_reject_name(enum sm_node_reject r);

#endif /* GOSSIP_NODE_H */
