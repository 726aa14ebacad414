/* mpread.h: a bounded, allocation-free msgpack reader for small values (models, resolvers). */
#ifndef CRDT_MPREAD_H
#define CRDT_MPREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/**
 * A read cursor over a borrowed buffer. Every reader checks bounds and returns
 * 0, or SM_EINVAL (truncated or wrong type) leaving the cursor unchanged.
 */
struct crdt_mp {
    const uint8_t *p;   /**< next byte */
    const uint8_t *end; /**< one past the last byte */
};

/** Start reading @p len bytes at @p buf (borrowed for the cursor's lifetime). */
static inline void crdt_mp_init(struct crdt_mp *m, const void *buf, size_t len)
{
    m->p = (const uint8_t *)buf;
    m->end = m->p + len;
}

/** Bytes left. */
static inline size_t crdt_mp_left(const struct crdt_mp *m)
{
    return (size_t)(m->end - m->p);
}

/** Read a map header: @p n receives the number of key/value pairs. */
int crdt_mp_map(struct crdt_mp *m, uint32_t *n);
/** Read an array header. */
int crdt_mp_array(struct crdt_mp *m, uint32_t *n);
/** Read a str (fixstr/str8/16/32); @p s points into the buffer (not NUL-terminated). */
int crdt_mp_str(struct crdt_mp *m, const char **s, uint32_t *len);
/** Read any integer that fits in int64 (uints above INT64_MAX are rejected). */
int crdt_mp_int(struct crdt_mp *m, int64_t *v);
/** Read any non-negative integer. */
int crdt_mp_uint(struct crdt_mp *m, uint64_t *v);
/** Read nil: true when the next object is nil (and consume it). */
bool crdt_mp_nil(struct crdt_mp *m);
/** Skip one whole object (nested ones included, iteratively: no recursion). */
int crdt_mp_skip(struct crdt_mp *m);

#endif
