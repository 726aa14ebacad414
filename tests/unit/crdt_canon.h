/* crdt_canon.h: canonical byte dumps of replica records for the crdt property tests. */
#ifndef SM_TEST_CRDT_CANON_H
#define SM_TEST_CRDT_CANON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/replica.h"

/** Growable byte buffer. */
struct canon_buf {
    uint8_t *p;
    size_t len, cap;
};

static inline void canon_put(struct canon_buf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->len + n) nc *= 2;
        b->p = realloc(b->p, nc);
        if (!b->p) abort();
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
}

static inline void canon_u64(struct canon_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (56 - 8 * i)); /* fixed byte order */
    canon_put(b, x, 8);
}

/** Every field of a record, length-prefixed, so two dumps are equal iff the records are. */
static inline void canon_view(struct canon_buf *b, const struct crdt_rec_view *v)
{
    canon_u64(b, v->key_len);
    canon_put(b, v->key, v->key_len);
    canon_u64(b, v->version);
    canon_u64(b, v->hlc);
    canon_u64(b, v->origin_len);
    canon_put(b, v->origin, v->origin_len);
    canon_put(b, &v->precedence, 1);
    canon_put(b, &v->flags, 1);
    canon_u64(b, (uint64_t)v->expires_at);
    canon_u64(b, v->value ? v->value_len : UINT64_MAX);
    if (v->value) canon_put(b, v->value, v->value_len);
}

struct canon_item {
    struct canon_buf b;
    const char *key; /* points into b */
    size_t klen;
};

struct canon_all {
    struct canon_item *v;
    size_t n, cap;
};

static inline int canon_collect(const struct crdt_rec_view *v, void *arg)
{
    struct canon_all *a = arg;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
        if (!a->v) abort();
    }
    struct canon_item *it = &a->v[a->n++];
    memset(it, 0, sizeof *it);
    canon_view(&it->b, v);
    it->key = (const char *)it->b.p + 8;
    it->klen = v->key_len;
    return 0;
}

static inline int canon_item_cmp(const void *x, const void *y)
{
    const struct canon_item *a = x, *b = y;
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(a->key, b->key, n);
    if (c) return c;
    return a->klen < b->klen ? -1 : a->klen > b->klen;
}

/**
 * The whole replica (tombstones included) as one byte string, records sorted
 * by key: two replicas hold the same state iff their dumps are equal.
 */
static inline void canon_replica(const struct crdt_replica *r, struct canon_buf *out)
{
    struct canon_all a = {0};
    crdt_replica_foreach(r, "", 0, false, 0, canon_collect, &a);
    if (a.n) qsort(a.v, a.n, sizeof *a.v, canon_item_cmp);
    out->len = 0;
    canon_u64(out, a.n);
    for (size_t i = 0; i < a.n; i++) {
        canon_put(out, a.v[i].b.p, a.v[i].b.len);
        free(a.v[i].b.p);
    }
    free(a.v);
}

/** Dump of one key's stored record (empty when absent). */
static inline void canon_key(const struct crdt_replica *r, const char *key, size_t klen,
                             struct canon_buf *out)
{
    out->len = 0;
    const struct crdt_rec *e = crdt_replica_find(r, key, klen);
    if (!e) return;
    struct crdt_rec_view v;
    crdt_rec_view(r, e, &v);
    canon_view(out, &v);
}

#endif
