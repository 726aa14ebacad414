/* replica.h: the key -> record table shared by every backend and the simulator:
 * merge, TTL, tombstones, prefix iteration and incrementally maintained digests. */
#ifndef CRDT_REPLICA_H
#define CRDT_REPLICA_H

#include "crdt/record.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct crdt_replica;
struct crdt_rec; /* opaque stored record */

/** Number of digest leaves (power of two). Leaf of a key = crdt_key_hash & (LEAVES-1). */
#define CRDT_DIGEST_LEAVES 1024u

/** Create an empty replica. NULL on OOM. */
struct crdt_replica *crdt_replica_new(void);
void crdt_replica_delete(struct crdt_replica *r);

/**
 * Look a key up. Returns the stored record (live, tombstone or expired) or
 * NULL. The pointer is valid until the next merge/sweep on the replica.
 */
const struct crdt_rec *crdt_replica_find(const struct crdt_replica *r, const char *key,
                                         size_t key_len);
/** True when @p rec is neither a tombstone nor expired at @p now_ms. */
bool crdt_rec_live(const struct crdt_rec *rec, int64_t now_ms);
/** Fill a borrowed view of a stored record (valid as long as the record). */
void crdt_rec_view(const struct crdt_replica *r, const struct crdt_rec *rec,
                   struct crdt_rec_view *out);
/** Convenience: find + live check; NULL when missing, deleted or expired. */
const struct crdt_rec *crdt_replica_get(const struct crdt_replica *r, const char *key,
                                        size_t key_len, int64_t now_ms);

/**
 * Merge an incoming record. It replaces the stored one only when strictly
 * greater in the merge order (crdt_order_cmp), so merging is commutative,
 * associative and idempotent. Returns 1 when installed, 0 when the stored
 * record is greater or equal (nothing changed), SM_ENOMEM-style -1 on OOM.
 */
int crdt_replica_merge(struct crdt_replica *r, const struct crdt_rec_view *in);

/** Version of the stored record for @p key (0 if none): a local set writes this + 1. */
uint64_t crdt_replica_version(const struct crdt_replica *r, const char *key, size_t key_len);

/**
 * Iterate records whose key starts with @p prefix (length @p plen). With
 * @p live_only, tombstones and records expired at @p now_ms are skipped.
 * fn returns non-zero to stop (that value is returned). The replica must not
 * be modified during iteration.
 */
typedef int (*crdt_rec_fn)(const struct crdt_rec_view *v, void *arg);
int crdt_replica_foreach(const struct crdt_replica *r, const char *prefix, size_t plen,
                         bool live_only, int64_t now_ms, crdt_rec_fn fn, void *arg);

/**
 * Sweep: records whose expiry passed become expiry tombstones (same order
 * tuple, CRDT_F_TOMBSTONE|CRDT_F_EXPIRED, value freed), reported through
 * @p on_expire (may be NULL) before the change; tombstones older than
 * @p grace_ms (by their expiry, or by the HLC wall time of the delete) are
 * removed. Returns the number of records changed or removed.
 */
size_t crdt_replica_sweep(struct crdt_replica *r, int64_t now_ms, uint64_t grace_ms,
                          crdt_rec_fn on_expire, void *arg);

/** Records stored (live + tombstones) and live ones (as of the last sweep). */
size_t crdt_replica_size(const struct crdt_replica *r);

/** Digest of one leaf: XOR of crdt_rec_digest() over the records in it. */
uint64_t crdt_replica_leaf(const struct crdt_replica *r, unsigned leaf);
/** Digest of the whole replica (XOR of all leaves). */
uint64_t crdt_replica_root(const struct crdt_replica *r);
/** Iterate the records of one digest leaf (tombstones included). */
int crdt_replica_foreach_leaf(const struct crdt_replica *r, unsigned leaf, crdt_rec_fn fn,
                              void *arg);
/** Bytes of memory held (approximate, for metrics). */
size_t crdt_replica_bytes(const struct crdt_replica *r);

#endif
