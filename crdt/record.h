/* record.h: the versioned record and its total merge order (version, precedence, hlc, origin). */
#ifndef CRDT_RECORD_H
#define CRDT_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define CRDT_F_TOMBSTONE 0x01u /**< a delete (or an expired record kept for its grace period) */
#define CRDT_F_SIGNED    0x02u /**< sig holds the origin's Ed25519 signature */
#define CRDT_F_EXPIRED   0x04u /**< a tombstone made by expiry, not by a delete */

#define CRDT_MAX_ORIGIN 64 /**< node ids are at most this many bytes */
#define CRDT_SIG_LEN    64

/**
 * A record as passed between layers: every pointer is borrowed. Keys are
 * NUL-terminated by convention in the replica but carried with their length.
 */
struct crdt_rec_view {
    const char *key;
    size_t key_len;
    const uint8_t *value; /**< NULL for tombstones */
    size_t value_len;
    uint64_t version;
    uint64_t hlc;       /**< hybrid logical clock timestamp of the write */
    const char *origin; /**< writer's node id */
    size_t origin_len;
    uint8_t precedence; /**< resolver bias among writes of the same version */
    uint8_t flags;      /**< CRDT_F_* */
    int64_t expires_at; /**< absolute wall-clock ms; 0 = never */
    const uint8_t *sig; /**< CRDT_SIG_LEN bytes when flags & CRDT_F_SIGNED */
};

/**
 * The merge order: compare (version, precedence, hlc, origin) lexicographically
 * (origin bytewise, then by length). Returns <0, 0, >0. Equal means "the same
 * write": merging it again changes nothing.
 */
int crdt_order_cmp(const struct crdt_rec_view *a, const struct crdt_rec_view *b);

/** 64-bit digest of a record's identity in the order (key + order tuple), for anti-entropy. */
uint64_t crdt_rec_digest(const struct crdt_rec_view *r);

/** Hash of a key as used by the replica's table and digest leaves. */
uint64_t crdt_key_hash(const char *key, size_t len);

/* HLC helpers: 48 bits of wall ms, 16 bits of logical counter. */
#define CRDT_HLC_LOGICAL_BITS 16
static inline uint64_t crdt_hlc_wall_ms(uint64_t hlc)
{
    return hlc >> CRDT_HLC_LOGICAL_BITS;
}

#endif
