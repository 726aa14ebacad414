/* hlc.c: hybrid logical clock.
 *
 * Treating the timestamp as one 64-bit integer (wall ms in the high 48 bits,
 * logical counter in the low 16) makes the HLC rules collapse into "the
 * maximum of the physical time and one past everything seen": the counter
 * resets whenever the wall part moves, ticks when it does not, and a counter
 * overflow carries into the ms part by plain integer addition. */
#include "config.h"

#include "crdt/hlc.h"

#include "statemesh.h"

#define HLC_MAX UINT64_MAX

void crdt_hlc_init(struct crdt_hlc *c, uint64_t max_drift_ms)
{
    c->last = 0;
    c->max_drift_ms = max_drift_ms ? max_drift_ms : CRDT_HLC_DEFAULT_MAX_DRIFT_MS;
    c->drift_rejects = 0;
    c->logical_carries = 0;
}

/* One past @p t, saturating; counts a carry out of the logical counter. */
static uint64_t tick(struct crdt_hlc *c, uint64_t t)
{
    if (t == HLC_MAX) return HLC_MAX;
    if (crdt_hlc_logical(t) == CRDT_HLC_LOGICAL_MASK) c->logical_carries++;
    return t + 1;
}

uint64_t crdt_hlc_now(struct crdt_hlc *c, uint64_t wall_ms)
{
    uint64_t pt = crdt_hlc_make(wall_ms, 0);
    uint64_t next = pt > c->last ? pt : tick(c, c->last);
    c->last = next;
    return next;
}

int crdt_hlc_check(const struct crdt_hlc *c, uint64_t wall_ms, uint64_t remote)
{
    uint64_t rwall = crdt_hlc_wall_ms(remote);
    if (rwall > wall_ms && rwall - wall_ms > c->max_drift_ms) return SM_ERANGE;
    return 0;
}

int crdt_hlc_update(struct crdt_hlc *c, uint64_t wall_ms, uint64_t remote, uint64_t *out)
{
    if (crdt_hlc_check(c, wall_ms, remote) != 0) {
        c->drift_rejects++;
        return SM_ERANGE;
    }
    uint64_t pt = crdt_hlc_make(wall_ms, 0);
    uint64_t seen = remote > c->last ? remote : c->last;
    uint64_t next = pt > seen ? pt : tick(c, seen);
    c->last = next;
    if (out) *out = next;
    return 0;
}
