/* record.c: the merge order over records and the digests anti-entropy compares. */
#include "config.h"

#include "crdt/record.h"

#include <string.h>
#include <xxhash.h>

int crdt_order_cmp(const struct crdt_rec_view *a, const struct crdt_rec_view *b)
{
    if (a->version != b->version) return a->version < b->version ? -1 : 1;
    if (a->precedence != b->precedence) return a->precedence < b->precedence ? -1 : 1;
    if (a->hlc != b->hlc) return a->hlc < b->hlc ? -1 : 1;
    size_t n = a->origin_len < b->origin_len ? a->origin_len : b->origin_len;
    int c = n ? memcmp(a->origin, b->origin, n) : 0;
    if (c != 0) return c < 0 ? -1 : 1;
    if (a->origin_len != b->origin_len) return a->origin_len < b->origin_len ? -1 : 1;
    return 0;
}

uint64_t crdt_key_hash(const char *key, size_t len)
{
    return XXH3_64bits(key, len);
}

uint64_t crdt_rec_digest(const struct crdt_rec_view *r)
{
    /* Identity of a write: key + order tuple. Flags are left out on purpose: a
     * record and the expiry tombstone it turns into are the same write, so two
     * replicas that swept at slightly different times still agree. */
    uint8_t tail[8 + 8 + 1 + 1 + CRDT_MAX_ORIGIN];
    size_t olen = r->origin_len > CRDT_MAX_ORIGIN ? CRDT_MAX_ORIGIN : r->origin_len;
    memcpy(tail, &r->version, 8);
    memcpy(tail + 8, &r->hlc, 8);
    tail[16] = r->precedence;
    tail[17] = (uint8_t)olen;
    memcpy(tail + 18, r->origin, olen);
    uint64_t h = XXH3_64bits_withSeed(r->key, r->key_len, XXH3_64bits(tail, 18 + olen));
    return h ? h : 1; /* never 0, so an XOR of one record is never "empty" */
}
