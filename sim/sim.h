/* sim.h: the discrete-event simulator: virtual clock, event heap, network model, nodes. */
#ifndef SIM_SIM_H
#define SIM_SIM_H

#include "statemesh.h"
#include "crdt/replica.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/**
 * @file
 * One process runs thousands of protocol nodes on a virtual clock. Events
 * (packet deliveries and node timers) sit in a 4-ary heap ordered by
 * (time, sequence); nothing reads the wall clock or depends on hash or
 * pointer order, so the same seed gives the same run bit for bit.
 *
 * Time inside the engine is in microseconds from the start of the run
 * (SIM_US). A node sees milliseconds on its own wall clock:
 * SIM_EPOCH_MS + t/1000 + its skew.
 *
 * The protocol is pluggable (struct sim_proto): the real gossip core
 * (sim_proto_core) or a trivial flooding protocol (sim_proto_flood) used to
 * test the engine itself. A protocol instance sends through sim_send() and
 * reports membership events through sim_member_event().
 */

#define SIM_EPOCH_MS 1700000000000LL /**< wall clock of virtual time 0 (Nov 2023) */
#define SIM_US       1000LL          /**< microseconds per millisecond */
#define SIM_NEVER    INT64_MAX

struct sim;

/** Packet classes for the traffic counters. */
enum sim_pkt_class {
    SIM_PKT_FD = 0,     /**< failure detection: ping, ack, ping-req (not "dissemination") */
    SIM_PKT_DATA = 1,   /**< dissemination: pushes, announcements, grafts, prunes */
    SIM_PKT_AE = 2,     /**< anti-entropy digests and repairs */
    SIM_PKT_MEMBER = 3, /**< join, leave, membership sync */
    SIM_PKT_CLASSES = 4
};

/** Membership events reported by a node (the observer) about another (the subject). */
enum sim_member_ev {
    SIM_MEV_JOIN = 1,
    SIM_MEV_SUSPECT = 2,
    SIM_MEV_ALIVE = 3,
    SIM_MEV_DEAD = 4,
    SIM_MEV_LEAVE = 5
};

/** What a protocol instance gets when a node starts (or restarts). */
struct sim_node_init {
    uint32_t id;                  /**< node index 0..n-1; the node id string is "n<id>" */
    const char *name;             /**< "n<id>", NUL-terminated, borrowed for the call */
    uint64_t seed;                /**< PRNG seed of this node incarnation */
    int64_t now_ms;               /**< the node's wall clock at start */
    struct crdt_replica *replica; /**< owned by the engine, empty at start */
    const uint32_t *seeds;        /**< nodes to join through (borrowed for the call) */
    size_t nseeds;
    uint32_t nodes;  /**< cluster size hint */
    void *proto_arg; /**< sim_config.proto_arg */
};

/** A protocol plugged into the engine. Every function gets the instance from node_new. */
struct sim_proto {
    const char *name;
    /** Create an instance; 0 or a negative SM_E* code. */
    int (*node_new)(struct sim *s, const struct sim_node_init *init, void **out);
    /** Free an instance (a crash: no goodbye is sent). */
    void (*node_delete)(void *p);
    /**
     * A datagram arrived from node @p from. @p buf is valid during the call only.
     * @p now_ms is the node's (skewed) wall clock; the monotonic clock is
     * sim_now()/SIM_US.
     */
    void (*recv)(void *p, int64_t now_ms, uint32_t from, const uint8_t *buf, size_t len);
    /** The deadline from next_timeout passed. */
    void (*timeout)(void *p, int64_t now_ms);
    /** Absolute deadline in virtual ms (the monotonic clock sim_now()/SIM_US), or SIM_NEVER. */
    int64_t (*next_timeout)(void *p);
    /** A local write of key=value at this node (it stores and disseminates it). */
    int (*write)(void *p, int64_t now_ms, const char *key, size_t klen, const uint8_t *val,
                 size_t vlen);
    /** Own incarnation (may be NULL): checked never to decrease while the node lives. */
    uint64_t (*incarnation)(void *p);
    /** Whether this node has node @p id in its membership as alive or suspect (may be NULL). */
    bool (*knows)(void *p, uint32_t id);
    /** Start loading the instance's state an event will touch (may be NULL): hints
     *  the engine gives a few events ahead, stage 0 first, each stage a few events
     *  after the previous one (so a stage may read what the one before loaded);
     *  @p from is the packet's sender, UINT32_MAX for a timer. Changes nothing. */
    void (*prefetch)(void *p, int stage, uint32_t from);
    /** Instances share state (a test protocol's common log): run every event in
     *  global (time, key) order, never in windows. Otherwise only each node's
     *  own events keep that order (what a node can observe). */
    bool global_order;
};

/** The flooding test protocol: a write goes to every node, forwarded on first receipt. */
extern const struct sim_proto sim_proto_flood;

/** Hooks the scenarios install (any may be NULL). */
struct sim_hooks {
    void *arg;
    /** A node reported a membership event about another. */
    void (*member)(void *arg, struct sim *s, uint32_t observer, uint32_t subject,
                   enum sim_member_ev ev);
    /** The events @p member wants, as bits (1u << SIM_MEV_*); 0: all. A 10,000-node
     *  start reports ~10 million joins that a scenario counting deaths can skip. */
    uint32_t member_mask;
    /** A tracked update reached one more node (@p holders of @p live hold it). */
    void (*spread)(void *arg, struct sim *s, uint32_t update, uint32_t holders, uint32_t live);
};

/** Engine configuration; zero fields take the defaults named. */
struct sim_config {
    uint32_t nodes;     /**< cluster size (required) */
    uint64_t seed;      /**< master seed */
    int64_t lat_min_us; /**< link latency range, default 1 ms .. 10 ms */
    int64_t lat_max_us;
    double loss;         /**< probability a packet is dropped */
    double dup;          /**< probability a packet is delivered twice */
    double reorder;      /**< probability a packet gets an extra delay of up to 2*lat_max */
    int64_t skew_max_ms; /**< per-node wall-clock offset drawn from [-max, max] */
    int slow_factor;     /**< latency multiplier of a slow node's outbound packets (10) */
    const struct sim_proto *proto; /**< default sim_proto_flood */
    void *proto_arg;
    size_t max_pkt; /**< packets larger than this are refused (default 65536) */
    /** Threads that run a millisecond's events together (0 or 1: the calling
     *  thread alone; at most SIM_MAX_THREADS). The result does not depend on
     *  it; windows need every latency >= 1 ms, else the engine runs serially. */
    unsigned threads;
    /** Windows with fewer events than this run on the calling thread alone (0: 128;
     *  tests use 1 to run every window on the workers). */
    unsigned min_window;
};

#define SIM_MAX_THREADS 16

/** Traffic and engine counters (cumulative). */
struct sim_stats {
    uint64_t events;                 /**< events processed */
    uint64_t pkts[SIM_PKT_CLASSES];  /**< packets sent, by class */
    uint64_t bytes[SIM_PKT_CLASSES]; /**< bytes sent, by class */
    uint64_t delivered;
    uint64_t lost;        /**< dropped by the loss model */
    uint64_t partitioned; /**< dropped by a partition (checked at delivery) */
    uint64_t to_down;     /**< dropped because the receiver was down */
    uint64_t duplicated;
    uint64_t reordered;
    uint64_t refused; /**< larger than max_pkt or bad destination */
    uint64_t timers;  /**< node timeouts fired */
    uint64_t writes;
};

/** Create a simulation; every node starts up (empty replica) and joins through node 0. */
int sim_new(const struct sim_config *cfg, struct sim **out) SM_MUST_CHECK;
void sim_delete(struct sim *s);

/** Install scenario hooks. */
void sim_set_hooks(struct sim *s, const struct sim_hooks *h);

/** Current virtual time (us). */
int64_t sim_now(const struct sim *s);
/** The wall clock (ms) node @p id sees now. */
int64_t sim_node_ms(const struct sim *s, uint32_t id);
uint32_t sim_nodes(const struct sim *s);
uint32_t sim_live(const struct sim *s);
bool sim_node_up(const struct sim *s, uint32_t id);
/** The node's replica (borrowed; NULL while down; replaced on restart). */
struct crdt_replica *sim_replica(const struct sim *s, uint32_t id);
/** Whether live node @p observer counts @p subject as a live member (false without support). */
bool sim_knows(const struct sim *s, uint32_t observer, uint32_t subject);
/** The protocol instance of a node (NULL while down). */
void *sim_node_proto(const struct sim *s, uint32_t id);
const struct sim_stats *sim_stats(const struct sim *s);
/** The engine's PRNG for scenario choices (one deterministic stream). */
uint64_t sim_rand(struct sim *s);
/** Uniform integer in [0, n). */
uint32_t sim_rand_below(struct sim *s, uint32_t n);
uint64_t sim_seed(const struct sim *s);

/**
 * Run every event with time <= @p t_us, then set the clock to @p t_us.
 * Returns the number of events processed.
 */
uint64_t sim_run_until(struct sim *s, int64_t t_us);
/** Process the single next event (if any). Returns false when the heap is empty. */
bool sim_step(struct sim *s);
/** Time of the next event or SIM_NEVER. */
int64_t sim_next_event(const struct sim *s);

/** @name Network model
 * @{ */
/** Latency range for packets from @p a to @p b (one direction), overriding the default. */
int sim_set_link_latency(struct sim *s, uint32_t a, uint32_t b, int64_t min_us, int64_t max_us);
void sim_set_loss(struct sim *s, double loss);
/** Put node @p id in partition group @p group (0 = the default group). Packets between
 *  different groups are dropped when they arrive. */
void sim_set_group(struct sim *s, uint32_t id, uint32_t group);
/** Heal every partition (all nodes back in group 0). */
void sim_heal(struct sim *s);
/** Mark a node slow: packets to and from it take slow_factor times longer. */
void sim_set_slow(struct sim *s, uint32_t id, bool slow);
/** Set a node's wall-clock offset (ms); applies from now on. */
void sim_set_skew(struct sim *s, uint32_t id, int64_t skew_ms);
/** @} */

/** @name Node life
 * @{ */
/** Crash a node: its instance and replica are freed, packets to it are dropped. */
void sim_crash(struct sim *s, uint32_t id);
/** Restart a crashed node with an empty replica; it rejoins through @p seeds. */
int sim_restart(struct sim *s, uint32_t id, const uint32_t *seeds, size_t nseeds);
/**
 * Write key=value at node @p id (through the protocol). The record the writer then holds
 * also goes into the engine's oracle replica (the union of all writes, see sim_oracle()).
 * With @p update non-NULL the write is tracked (sim_track) and its index stored there.
 */
int sim_write(struct sim *s, uint32_t id, const char *key, size_t klen, const uint8_t *val,
              size_t vlen, uint32_t *update);
/**
 * Watch a key for the invariant checker: after every step, a live node's record of it
 * must never move backwards in the merge order. At most SIM_MAX_WATCH keys.
 */
int sim_watch_key(struct sim *s, const char *key, size_t klen);
#define SIM_MAX_WATCH 64
/** @} */

/** @name Called by protocol instances
 * @{ */
/** Send a datagram from @p from to @p to; the engine copies it once. */
void sim_send(struct sim *s, uint32_t from, uint32_t to, const uint8_t *buf, size_t len,
              enum sim_pkt_class cls);
/** Report a membership event of @p observer about @p subject. */
void sim_member_event(struct sim *s, uint32_t observer, uint32_t subject, enum sim_member_ev ev);
/** @} */

/** @name Convergence tracking and invariants
 * @{ */
/**
 * Track the spread of key @p key from now on: the update counts as held by a node
 * once its replica holds the key with an order tuple >= the one of @p target.
 * Returns the update index. The writer usually holds it at once.
 */
int sim_track(struct sim *s, const struct crdt_rec_view *target, uint32_t *index);
/** Holders of a tracked update; its completion time (us) or -1 while incomplete. */
uint32_t sim_track_holders(const struct sim *s, uint32_t index);
int64_t sim_track_done(const struct sim *s, uint32_t index);
int64_t sim_track_start(const struct sim *s, uint32_t index);
uint32_t sim_tracked(const struct sim *s);
/** Whether node @p id holds tracked update @p index. */
bool sim_track_held(const struct sim *s, uint32_t index, uint32_t id);
/** Number of invariant violations seen (each is also printed with the seed). */
uint64_t sim_violations(const struct sim *s);
/** The union of every write made through sim_write (borrowed). */
const struct crdt_replica *sim_oracle(const struct sim *s);
/** Live nodes whose replica digest equals the oracle's. */
uint32_t sim_matching_oracle(const struct sim *s);
/** Whether all live replicas have the same root digest and size. */
bool sim_replicas_identical(const struct sim *s);
/** @} */

#endif
