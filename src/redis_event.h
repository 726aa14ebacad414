/* redis_event.h: the change-event message that redis-backend writers PUBLISH on
 * "<prefix>events" so every statemesh node sharing the server sees each write. */
#ifndef SM_REDIS_EVENT_H
#define SM_REDIS_EVENT_H

#include <stddef.h>
#include <stdint.h>

/**
 * One change. A message is one or more of these back to back (set_multi sends
 * its whole batch in one PUBLISH). Each record is a text header line followed by
 * the raw bytes it announces, so values stay binary-safe and a human can still
 * read a message with `redis-cli subscribe`:
 *
 *     SM1 <S|T|D> <version> <time_ms> <origin_len> <key_len> <value_len>\n
 *     <origin bytes><key bytes><value bytes>
 *
 * The key is the store key (without the Redis prefix: the channel already names
 * the prefix). 'T' marks a set that will expire, so receivers can remember
 * who wrote it and name that writer in the expiry event Redis sends later. Decoders skip nothing:
 * an unknown type or a malformed header rejects the whole message.
 */
struct sm_redis_ev {
    char type;          /**< 'S' set, 'T' set with a TTL, 'D' delete */
    uint64_t version;   /**< writer's version (its hybrid logical clock) */
    uint64_t time_ms;   /**< writer's wall clock, ms since the epoch */
    const char *origin; /**< writer node id (not NUL-terminated) */
    size_t origin_len;
    const char *key; /**< store key (not NUL-terminated) */
    size_t key_len;
    const void *value; /**< value bytes (set only) */
    size_t value_len;
};

/** Longest header line, newline included. */
#define SM_REDIS_EV_HDR_MAX 128

/** Bytes needed to encode @p e (an upper bound: header at its longest). */
size_t sm_redis_ev_size(const struct sm_redis_ev *e);

/**
 * Append @p e to @p buf (capacity @p cap). Returns the bytes written, or 0 when
 * it does not fit (nothing useful is left in that case).
 */
size_t sm_redis_ev_encode(char *buf, size_t cap, const struct sm_redis_ev *e);

/**
 * Decode the record at @p *off of the message @p buf / @p len and advance
 * @p *off past it. Pointers in @p out borrow from @p buf. Returns 1 for a
 * record, 0 at the end of the message, SM_EPROTO for malformed input.
 */
int sm_redis_ev_decode(const char *buf, size_t len, size_t *off, struct sm_redis_ev *out);

#endif
