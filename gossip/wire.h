/* wire.h: the gossip wire codec: msgpack packets of typed messages, bounded encode/decode. */
#ifndef GOSSIP_WIRE_H
#define GOSSIP_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt/record.h"
#include "gossip/node.h"

/**
 * @file
 * A gossip payload (what travels inside the crypto envelope, or alone when
 * crypto is off) is one msgpack array:
 *
 *     [ version, sender_id (bin), sender_incarnation (uint), [ msg, msg, ... ], ...ignored ]
 *
 * and every message is an array whose first element is its type:
 *
 *     [ type, field, field, ..., ignored fields ]
 *
 * Decoders read the fields they know and skip any trailing ones, so newer
 * senders may append fields. A message of an unknown type is skipped (and
 * counted) while the rest of the packet is processed; a packet whose version
 * is newer than GOSSIP_WIRE_VERSION is refused. Every message is described
 * in docs/protocol.md.
 *
 * The decoder is I/O-free, allocation-free and bounded: it never reads past
 * the buffer, nests at most a few levels, and returns views (pointers into
 * the buffer) valid as long as the buffer. Encoders write into a caller
 * buffer and refuse (SM_ERANGE, encoder left as before the call) a message
 * that does not fit, so a caller fills a packet up to its MTU and knows what
 * did not fit.
 */

#define GOSSIP_WIRE_VERSION 1
/** Most messages in one packet (encoders stop there, decoders refuse more). */
#define GOSSIP_MAX_MSGS 128
/** Leaves per digest group; groups per replica (CRDT_DIGEST_LEAVES / this). */
#define GOSSIP_LEAVES       1024 /* == CRDT_DIGEST_LEAVES (checked in node.c) */
#define GOSSIP_GROUP_LEAVES 32
#define GOSSIP_GROUPS       (GOSSIP_LEAVES / GOSSIP_GROUP_LEAVES)
/** IHAVE round marking a link receipt: the ids the sender's previous packet
 *  of records on this link carried (records are never sent with round 0). */
#define GOSSIP_ROUND_RECEIPT 0
/** Largest key the wire accepts. */
#define GOSSIP_MAX_KEY 256

/** Message types (the numbers are the wire format: never reuse one). */
enum gossip_msg_type {
    GOSSIP_PING = 1, /**< [1, seq, target_id]                       probe */
    GOSSIP_ACK = 2,  /**< [2, seq]                                  probe answer */
    GOSSIP_NACK = 3, /**< [3, seq]                                  relay could not reach target */
    GOSSIP_PING_REQ = 4,   /**< [4, seq, target_id, target_addr]          indirect probe request */
    GOSSIP_ALIVE = 5,      /**< [5, id, inc, addr, cert|nil]              member is alive */
    GOSSIP_SUSPECT = 6,    /**< [6, id, inc, from_id]                     member suspected */
    GOSSIP_DEAD = 7,       /**< [7, id, inc, from_id]                     member declared dead */
    GOSSIP_LEAVE = 8,      /**< [8, id, inc]                              member left */
    GOSSIP_JOIN = 9,       /**< [9, addr, cert|nil, pad(bin)]             ask to join (padded) */
    GOSSIP_SYNC_REQ = 10,  /**< [10, cursor, pad(bin)]                    ask a membership page */
    GOSSIP_SYNC_PAGE = 11, /**< [11, next_cursor, rooted]                page follows (0 = last) */
    GOSSIP_REC = 12,       /**< [12, kind, round, key, value|nil, version, hlc, origin,
                                 precedence, flags, expires_at, sig|nil]   a record */
    GOSSIP_IHAVE = 13,     /**< [13, round, ids(bin 8*n)]                 lazy announcement;
                                    round GOSSIP_ROUND_RECEIPT: link receipt */
    GOSSIP_GRAFT = 14,  /**< [14, ids(bin 8*n)]                        make link eager, send ids */
    GOSSIP_PRUNE = 15,  /**< [15, disconnect(bool)]                    make link lazy / drop it */
    GOSSIP_DIGEST = 16, /**< [16, root, groups(bin 8*GROUPS)]          anti-entropy request */
    GOSSIP_DIGEST_LEAVES = 17, /**< [17, group, leaves(bin 8*GROUP_LEAVES)]  a differing group */
    GOSSIP_LEAF_IDS = 18, /**< [18, leaf, ids(bin 8*n)]                  record ids of one leaf */
    GOSSIP_WANT =
        19, /**< [19, leaf, ids(bin 8*n)]                  send me these records of a leaf */
    GOSSIP_IN_SYNC = 20, /**< [20, root]                                digests agree */
    GOSSIP_WHOIS = 21,   /**< [21, id]           ask for a member's state and certificate */
    GOSSIP_MSG__MAX = 21
};

/** Why a record travels (GOSSIP_REC kind). */
enum gossip_rec_kind {
    GOSSIP_RK_EAGER = 0, /**< Plumtree eager push (tree link) */
    GOSSIP_RK_GRAFT = 1, /**< answer to a graft */
    GOSSIP_RK_AE = 2,    /**< anti-entropy transfer */
};

/** One decoded message; pointers borrow the packet buffer. */
struct gossip_msg {
    enum gossip_msg_type type;
    union {
        struct {
            uint32_t seq;
            const char *target;
            size_t target_len;
            struct sm_addr target_addr; /**< PING_REQ only */
        } probe;                        /**< PING, ACK, NACK, PING_REQ */
        struct {
            const char *id;
            size_t id_len;
            uint64_t inc;
            struct sm_addr addr; /**< ALIVE only */
            const uint8_t *cert; /**< ALIVE only; NULL when absent */
            size_t cert_len;
            const char *from; /**< SUSPECT/DEAD: who declared it */
            size_t from_len;
        } member; /**< ALIVE, SUSPECT, DEAD, LEAVE */
        struct {
            struct sm_addr addr;
            const uint8_t *cert;
            size_t cert_len;
            uint32_t cursor; /**< SYNC_REQ / SYNC_PAGE */
            bool rooted;     /**< SYNC_PAGE: the sender has been answered by one of its
                                  seeds (or has none): joining through it reaches the mesh */
        } join;              /**< JOIN, SYNC_REQ, SYNC_PAGE */
        struct {
            uint8_t kind;  /**< enum gossip_rec_kind */
            uint8_t round; /**< hops from the origin (Plumtree round) */
            struct crdt_rec_view v;
        } rec; /**< REC */
        struct {
            uint8_t round;      /**< IHAVE */
            bool disconnect;    /**< PRUNE */
            uint32_t index;     /**< DIGEST_LEAVES group / LEAF_IDS leaf */
            uint64_t root;      /**< DIGEST / IN_SYNC */
            const uint8_t *ids; /**< 8-byte big-endian ids / digests */
            size_t n_ids;       /**< how many */
        } ids; /**< IHAVE, GRAFT, PRUNE, DIGEST, DIGEST_LEAVES, LEAF_IDS, WANT, IN_SYNC */
    } u;
};

/** A decoded packet. */
struct gossip_packet {
    unsigned version;
    const char *sender;
    size_t sender_len;
    uint64_t sender_inc;
    size_t n_msgs;    /**< known messages, in order */
    size_t n_unknown; /**< messages of unknown types that were skipped */
    struct gossip_msg msgs[GOSSIP_MAX_MSGS];
};

/** Decode failures (the packet is rejected as a whole). */
enum gossip_decode_err {
    GOSSIP_DEC_OK = 0,
    GOSSIP_DEC_FORMAT = 1,    /**< not the expected msgpack shape, or a field out of range */
    GOSSIP_DEC_TRUNCATED = 2, /**< ends inside an item */
    GOSSIP_DEC_VERSION = 3,   /**< newer wire version */
    GOSSIP_DEC_TOO_MANY = 4,  /**< more than GOSSIP_MAX_MSGS messages */
};

/**
 * Decode @p len bytes of @p buf into @p out. Returns GOSSIP_DEC_OK (0) or why
 * it failed; on failure @p out is unspecified. Views in @p out borrow @p buf.
 * Trailing bytes after the packet array are a FORMAT error.
 */
enum gossip_decode_err gossip_decode(const uint8_t *buf, size_t len, struct gossip_packet *out);

/** Read the @p i-th 8-byte big-endian id of an ids blob. */
static inline uint64_t gossip_id_at(const uint8_t *ids, size_t i)
{
    const uint8_t *p = ids + 8 * i;
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) |
           ((uint64_t)p[3] << 32) | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
           ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}

/**
 * A bounded packet encoder. Begin with gossip_enc_begin(), add messages, end
 * with gossip_enc_finish(). Each gossip_enc_* adder returns 0, or SM_ERANGE
 * when the message does not fit in the remaining room (or the message limit
 * is reached) — the encoder is then exactly as before the call.
 */
struct gossip_enc {
    uint8_t *buf;     /**< output */
    size_t cap;       /**< capacity (the room for the payload) */
    size_t len;       /**< bytes written */
    size_t count_pos; /**< offset of the message count (array32 header) */
    unsigned n_msgs;  /**< messages added */
    bool overflow;    /**< a write did not fit (internal) */
};

/** Start a packet from @p sender (incarnation @p inc). SM_ERANGE if even the header does not fit.
 */
int gossip_enc_begin(struct gossip_enc *e, uint8_t *buf, size_t cap, const char *sender,
                     size_t sender_len, uint64_t inc);
/** Finish: patch the message count. Returns the packet length. */
size_t gossip_enc_finish(struct gossip_enc *e);
/** Bytes still free. */
static inline size_t gossip_enc_room(const struct gossip_enc *e)
{
    return e->cap - e->len;
}

int gossip_enc_probe(struct gossip_enc *e, enum gossip_msg_type type, uint32_t seq,
                     const char *target, size_t target_len, const struct sm_addr *target_addr);
int gossip_enc_alive(struct gossip_enc *e, const char *id, size_t id_len, uint64_t inc,
                     const struct sm_addr *addr, const uint8_t *cert, size_t cert_len);
/** SUSPECT, DEAD (with @p from) or LEAVE (from ignored). */
int gossip_enc_member(struct gossip_enc *e, enum gossip_msg_type type, const char *id,
                      size_t id_len, uint64_t inc, const char *from, size_t from_len);
/** JOIN (addr, cert) padded with @p pad zero bytes. */
int gossip_enc_join(struct gossip_enc *e, const struct sm_addr *addr, const uint8_t *cert,
                    size_t cert_len, size_t pad);
/** SYNC_REQ (cursor, @p pad bytes of padding) or SYNC_PAGE (cursor; @p pad
 *  non-zero: the sender is rooted, see gossip_msg.u.join.rooted). */
int gossip_enc_sync(struct gossip_enc *e, enum gossip_msg_type type, uint32_t cursor, size_t pad);
int gossip_enc_rec(struct gossip_enc *e, enum gossip_rec_kind kind, uint8_t round,
                   const struct crdt_rec_view *r);
/**
 * An ids-carrying message (IHAVE, GRAFT, LEAF_IDS, WANT, DIGEST_LEAVES,
 * DIGEST): @p ids are host-order u64 written big-endian; @p index is the
 * round (IHAVE), leaf (LEAF_IDS), group (DIGEST_LEAVES) or unused; @p root
 * is for DIGEST. When not all ids fit, as many as fit are written (at least
 * one, else SM_ERANGE) and their count returned through @p written.
 */
int gossip_enc_ids(struct gossip_enc *e, enum gossip_msg_type type, uint32_t index, uint64_t root,
                   const uint64_t *ids, size_t n, size_t *written);
int gossip_enc_prune(struct gossip_enc *e, bool disconnect);
int gossip_enc_in_sync(struct gossip_enc *e, uint64_t root);
/** WHOIS: ask the receiver for what it holds about member @p id (answered with
 *  an ALIVE carrying the certificate), e.g. the origin of a record that could
 *  not be verified yet. Decoded into u.member.id. */
int gossip_enc_whois(struct gossip_enc *e, const char *id, size_t id_len);

/** Encoded size of a record message (for packing decisions). */
size_t gossip_rec_size(const struct crdt_rec_view *r);

/** Name of a message type ("?" when unknown). */
const char *gossip_msg_name(unsigned type);

#endif /* GOSSIP_WIRE_H */
