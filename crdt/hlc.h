/* hlc.h: hybrid logical clock (48-bit wall ms << 16 | 16-bit logical counter). */
#ifndef CRDT_HLC_H
#define CRDT_HLC_H

#include <stdint.h>

#include "crdt/record.h"

/** Default bound on how far ahead of our wall clock a remote timestamp may be. */
#define CRDT_HLC_DEFAULT_MAX_DRIFT_MS 60000u
/** Largest wall time an HLC can carry (48 bits of ms: about the year 10889). */
#define CRDT_HLC_MAX_WALL_MS ((UINT64_C(1) << (64 - CRDT_HLC_LOGICAL_BITS)) - 1)
/** Mask of the logical counter part. */
#define CRDT_HLC_LOGICAL_MASK ((UINT64_C(1) << CRDT_HLC_LOGICAL_BITS) - 1)

/**
 * A hybrid logical clock. Caller memory: crdt_hlc_init() it, no close needed.
 * Fields are readable; change them only through the functions below.
 */
struct crdt_hlc {
    uint64_t last;            /**< last timestamp issued or observed (0 = none yet) */
    uint64_t max_drift_ms;    /**< remote timestamps further ahead than this are rejected */
    uint64_t drift_rejects;   /**< remote timestamps rejected for drift */
    uint64_t logical_carries; /**< times the 16-bit counter ran over into the ms part */
};

/** Initialise @p c; @p max_drift_ms 0 selects CRDT_HLC_DEFAULT_MAX_DRIFT_MS. */
void crdt_hlc_init(struct crdt_hlc *c, uint64_t max_drift_ms);

/** Build a timestamp from its parts (wall clamped to 48 bits, logical to 16). */
static inline uint64_t crdt_hlc_make(uint64_t wall_ms, uint64_t logical)
{
    if (wall_ms > CRDT_HLC_MAX_WALL_MS) wall_ms = CRDT_HLC_MAX_WALL_MS;
    if (logical > CRDT_HLC_LOGICAL_MASK) logical = CRDT_HLC_LOGICAL_MASK;
    return (wall_ms << CRDT_HLC_LOGICAL_BITS) | logical;
}

/** The logical counter of a timestamp. */
static inline uint64_t crdt_hlc_logical(uint64_t hlc)
{
    return hlc & CRDT_HLC_LOGICAL_MASK;
}

/**
 * Timestamp a local event at wall time @p wall_ms. The result is strictly
 * greater than every timestamp this clock issued or observed before, even when
 * the wall clock stepped back: then the logical counter advances instead. When
 * the counter is exhausted it carries into the ms part (the clock then runs a
 * millisecond ahead of the wall until the wall catches up); counted in
 * logical_carries. Saturates at the largest representable timestamp.
 */
uint64_t crdt_hlc_now(struct crdt_hlc *c, uint64_t wall_ms);

/**
 * Observe a remote timestamp @p remote received at wall time @p wall_ms, and
 * timestamp the receive event: afterwards the clock is above both @p remote and
 * everything before, so later local events order after the remote write.
 *
 * A remote whose wall part is more than max_drift_ms ahead of @p wall_ms is
 * rejected: the clock is left untouched (one bad peer must not drag every
 * clock into the future), drift_rejects is incremented and SM_ERANGE returned.
 * @param out  when not NULL, receives the receive event's timestamp on success.
 * @return 0 or SM_ERANGE.
 */
int crdt_hlc_update(struct crdt_hlc *c, uint64_t wall_ms, uint64_t remote, uint64_t *out);

/**
 * Check @p remote against the drift bound without changing the clock or its
 * counters: 0 when acceptable, SM_ERANGE when too far ahead of @p wall_ms.
 */
int crdt_hlc_check(const struct crdt_hlc *c, uint64_t wall_ms, uint64_t remote);

#endif
