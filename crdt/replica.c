/* replica.c: the key -> record table: merge by the total order, TTL and
 * tombstones, prefix iteration, and XOR digests per leaf kept up to date on
 * every change so anti-entropy can compare replicas without rescanning them.
 *
 * Memory matters here (a million records must fit in well under 250 MB), so a
 * record is one allocation: a 48-byte header followed by the key, its NUL, the
 * value and, for signed records, the 64-byte signature. Origins (node ids) are
 * interned per replica and records keep a 32-bit index. */
#include "config.h"

#include "crdt/replica.h"

#include <stdlib.h>
#include <string.h>

struct crdt_rec {
    struct crdt_rec *next; /* hash chain */
    uint64_t version;
    uint64_t hlc;
    int64_t expires_at;
    uint32_t hash; /* low 32 bits of crdt_key_hash() */
    uint32_t value_len;
    uint32_t origin; /* index into the replica's origin table */
    uint16_t key_len;
    uint8_t precedence;
    uint8_t flags;
    char data[]; /* key, '\0', value, [signature] */
};

struct origin {
    char *id;
    uint32_t len;
    uint32_t hash;
};

struct crdt_replica {
    struct crdt_rec **tab;
    size_t mask;  /* table size - 1 */
    size_t count; /* records stored */
    size_t bytes; /* record bytes */
    struct origin *origins;
    uint32_t norigins, corigins;
    uint32_t *oindex; /* open addressing: origin index + 1, 0 = empty */
    uint32_t omask;
    int64_t min_expire; /* earliest expires_at of a live record (INT64_MAX if none) */
    int64_t min_death;  /* earliest death time of a tombstone (INT64_MAX if none) */
    uint64_t leaves[CRDT_DIGEST_LEAVES];
    uint64_t root;
};

#define INITIAL_TABLE 16

static inline const char *rec_key(const struct crdt_rec *r)
{
    return r->data;
}
static inline const uint8_t *rec_value(const struct crdt_rec *r)
{
    return (const uint8_t *)r->data + r->key_len + 1;
}
static inline const uint8_t *rec_sig(const struct crdt_rec *r)
{
    return rec_value(r) + r->value_len;
}
static inline size_t rec_size(size_t klen, size_t vlen, bool sig)
{
    return sizeof(struct crdt_rec) + klen + 1 + vlen + (sig ? CRDT_SIG_LEN : 0);
}

/* When a tombstone started to count towards its grace period. */
static int64_t rec_death(const struct crdt_rec *r)
{
    if (r->flags & CRDT_F_EXPIRED) return r->expires_at;
    return (int64_t)crdt_hlc_wall_ms(r->hlc);
}

struct crdt_replica *crdt_replica_new(void)
{
    struct crdt_replica *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->tab = calloc(INITIAL_TABLE, sizeof *r->tab);
    r->oindex = calloc(16, sizeof *r->oindex);
    if (!r->tab || !r->oindex) {
        free(r->tab);
        free(r->oindex);
        free(r);
        return NULL;
    }
    r->mask = INITIAL_TABLE - 1;
    r->omask = 15;
    r->min_expire = INT64_MAX;
    r->min_death = INT64_MAX;
    return r;
}

void crdt_replica_delete(struct crdt_replica *r)
{
    if (!r) return;
    for (size_t i = 0; i <= r->mask; i++) {
        struct crdt_rec *e = r->tab[i];
        while (e) {
            struct crdt_rec *n = e->next;
            free(e);
            e = n;
        }
    }
    for (uint32_t i = 0; i < r->norigins; i++) free(r->origins[i].id);
    free(r->origins);
    free(r->oindex);
    free(r->tab);
    free(r);
}

/* ---- origins ---- */

static int origin_grow(struct crdt_replica *r)
{
    uint32_t nmask = r->omask * 2 + 1;
    uint32_t *ni = calloc((size_t)nmask + 1, sizeof *ni);
    if (!ni) return -1;
    for (uint32_t i = 0; i < r->norigins; i++) {
        uint32_t j = r->origins[i].hash & nmask;
        while (ni[j]) j = (j + 1) & nmask;
        ni[j] = i + 1;
    }
    free(r->oindex);
    r->oindex = ni;
    r->omask = nmask;
    return 0;
}

/* Index of an origin, interning it when new. -1 on OOM. */
static int64_t origin_intern(struct crdt_replica *r, const char *id, size_t len)
{
    uint32_t h = (uint32_t)crdt_key_hash(id, len);
    uint32_t j = h & r->omask;
    while (r->oindex[j]) {
        struct origin *o = &r->origins[r->oindex[j] - 1];
        if (o->hash == h && o->len == len && memcmp(o->id, id, len) == 0) return r->oindex[j] - 1;
        j = (j + 1) & r->omask;
    }
    if (r->norigins == r->corigins) {
        uint32_t nc = r->corigins ? r->corigins * 2 : 8;
        struct origin *no = realloc(r->origins, nc * sizeof *no);
        if (!no) return -1;
        r->origins = no;
        r->corigins = nc;
    }
    struct origin *o = &r->origins[r->norigins];
    o->id = malloc(len + 1);
    if (!o->id) return -1;
    memcpy(o->id, id, len);
    o->id[len] = '\0';
    o->len = (uint32_t)len;
    o->hash = h;
    r->oindex[j] = ++r->norigins;
    if ((uint64_t)r->norigins * 2 > r->omask && origin_grow(r) < 0) {
        /* the table still works at this load; growth is retried next time */
    }
    return r->norigins - 1;
}

/* ---- records ---- */

void crdt_rec_view(const struct crdt_replica *r, const struct crdt_rec *rec,
                   struct crdt_rec_view *out)
{
    const struct origin *o = &r->origins[rec->origin];
    out->key = rec_key(rec);
    out->key_len = rec->key_len;
    out->value = (rec->flags & CRDT_F_TOMBSTONE) ? NULL : rec_value(rec);
    out->value_len = rec->value_len;
    out->version = rec->version;
    out->hlc = rec->hlc;
    out->origin = o->id;
    out->origin_len = o->len;
    out->precedence = rec->precedence;
    out->flags = rec->flags;
    out->expires_at = rec->expires_at;
    out->sig = (rec->flags & CRDT_F_SIGNED) ? rec_sig(rec) : NULL;
}

bool crdt_rec_live(const struct crdt_rec *rec, int64_t now_ms)
{
    if (rec->flags & CRDT_F_TOMBSTONE) return false;
    return rec->expires_at == 0 || rec->expires_at > now_ms;
}

static struct crdt_rec **find_slot(const struct crdt_replica *r, const char *key, size_t klen,
                                   uint32_t h)
{
    struct crdt_rec **p = &r->tab[h & r->mask];
    while (*p) {
        struct crdt_rec *e = *p;
        if (e->hash == h && e->key_len == klen && memcmp(rec_key(e), key, klen) == 0) return p;
        p = &e->next;
    }
    return p;
}

const struct crdt_rec *crdt_replica_find(const struct crdt_replica *r, const char *key,
                                         size_t key_len)
{
    uint32_t h = (uint32_t)crdt_key_hash(key, key_len);
    return *find_slot(r, key, key_len, h);
}

const struct crdt_rec *crdt_replica_get(const struct crdt_replica *r, const char *key,
                                        size_t key_len, int64_t now_ms)
{
    const struct crdt_rec *e = crdt_replica_find(r, key, key_len);
    return (e && crdt_rec_live(e, now_ms)) ? e : NULL;
}

uint64_t crdt_replica_version(const struct crdt_replica *r, const char *key, size_t key_len)
{
    const struct crdt_rec *e = crdt_replica_find(r, key, key_len);
    return e ? e->version : 0;
}

static uint64_t stored_digest(const struct crdt_replica *r, const struct crdt_rec *e)
{
    struct crdt_rec_view v;
    crdt_rec_view(r, e, &v);
    return crdt_rec_digest(&v);
}

static void digest_toggle(struct crdt_replica *r, uint32_t hash, uint64_t d)
{
    r->leaves[hash & (CRDT_DIGEST_LEAVES - 1)] ^= d;
    r->root ^= d;
}

static void grow_table(struct crdt_replica *r)
{
    size_t nsize = (r->mask + 1) * 2;
    struct crdt_rec **nt = calloc(nsize, sizeof *nt);
    if (!nt) return; /* keep working with longer chains */
    for (size_t i = 0; i <= r->mask; i++) {
        struct crdt_rec *e = r->tab[i];
        while (e) {
            struct crdt_rec *n = e->next;
            size_t j = e->hash & (nsize - 1);
            e->next = nt[j];
            nt[j] = e;
            e = n;
        }
    }
    free(r->tab);
    r->tab = nt;
    r->mask = nsize - 1;
}

static void note_deadlines(struct crdt_replica *r, const struct crdt_rec *e)
{
    if (e->flags & CRDT_F_TOMBSTONE) {
        int64_t d = rec_death(e);
        if (d < r->min_death) r->min_death = d;
    } else if (e->expires_at && e->expires_at < r->min_expire) {
        r->min_expire = e->expires_at;
    }
}

int crdt_replica_merge(struct crdt_replica *r, const struct crdt_rec_view *in)
{
    if (in->key_len == 0 || in->key_len > UINT16_MAX || in->value_len > UINT32_MAX ||
        in->origin_len > CRDT_MAX_ORIGIN)
        return -2;
    uint32_t h = (uint32_t)crdt_key_hash(in->key, in->key_len);
    struct crdt_rec **slot = find_slot(r, in->key, in->key_len, h);
    struct crdt_rec *old = *slot;
    if (old) {
        struct crdt_rec_view ov;
        crdt_rec_view(r, old, &ov);
        if (crdt_order_cmp(in, &ov) <= 0) return 0;
    }
    int64_t oi = origin_intern(r, in->origin, in->origin_len);
    if (oi < 0) return -1;
    bool tomb = (in->flags & CRDT_F_TOMBSTONE) != 0;
    bool sig = (in->flags & CRDT_F_SIGNED) && in->sig;
    size_t vlen = tomb ? 0 : in->value_len;
    size_t sz = rec_size(in->key_len, vlen, sig);
    struct crdt_rec *e = malloc(sz);
    if (!e) return -1;
    e->version = in->version;
    e->hlc = in->hlc;
    e->expires_at = in->expires_at;
    e->hash = h;
    e->value_len = (uint32_t)vlen;
    e->origin = (uint32_t)oi;
    e->key_len = (uint16_t)in->key_len;
    e->precedence = in->precedence;
    e->flags =
        (uint8_t)((in->flags & (CRDT_F_TOMBSTONE | CRDT_F_EXPIRED)) | (sig ? CRDT_F_SIGNED : 0));
    memcpy(e->data, in->key, in->key_len);
    e->data[in->key_len] = '\0';
    if (vlen) memcpy(e->data + in->key_len + 1, in->value, vlen);
    if (sig) memcpy(e->data + in->key_len + 1 + vlen, in->sig, CRDT_SIG_LEN);

    if (old) {
        digest_toggle(r, h, stored_digest(r, old));
        e->next = old->next;
        r->bytes -= rec_size(old->key_len, old->value_len, (old->flags & CRDT_F_SIGNED) != 0);
        free(old);
    } else {
        e->next = NULL;
        r->count++;
    }
    *slot = e;
    r->bytes += sz;
    digest_toggle(r, h, stored_digest(r, e));
    note_deadlines(r, e);
    if (!old && r->count > r->mask + 1) grow_table(r);
    return 1;
}

int crdt_replica_foreach(const struct crdt_replica *r, const char *prefix, size_t plen,
                         bool live_only, int64_t now_ms, crdt_rec_fn fn, void *arg)
{
    for (size_t i = 0; i <= r->mask; i++) {
        for (const struct crdt_rec *e = r->tab[i]; e; e = e->next) {
            if (e->key_len < plen || (plen && memcmp(rec_key(e), prefix, plen) != 0)) continue;
            if (live_only && !crdt_rec_live(e, now_ms)) continue;
            struct crdt_rec_view v;
            crdt_rec_view(r, e, &v);
            int rc = fn(&v, arg);
            if (rc) return rc;
        }
    }
    return 0;
}

size_t crdt_replica_sweep(struct crdt_replica *r, int64_t now_ms, uint64_t grace_ms,
                          crdt_rec_fn on_expire, void *arg)
{
    int64_t grace = grace_ms > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)grace_ms;
    bool expire_due = r->min_expire <= now_ms;
    bool collect_due = r->min_death != INT64_MAX && r->min_death <= now_ms - grace;
    if (!expire_due && !collect_due) return 0;
    size_t changed = 0;
    int64_t min_expire = INT64_MAX, min_death = INT64_MAX;
    for (size_t i = 0; i <= r->mask; i++) {
        struct crdt_rec **p = &r->tab[i];
        while (*p) {
            struct crdt_rec *e = *p;
            if (!(e->flags & CRDT_F_TOMBSTONE) && e->expires_at && e->expires_at <= now_ms) {
                if (on_expire) {
                    struct crdt_rec_view v;
                    crdt_rec_view(r, e, &v);
                    on_expire(&v, arg);
                }
                /* Keep the write's place in the order (same tuple, same digest) so
                 * a late copy of it can never bring the value back. */
                size_t nsz = rec_size(e->key_len, 0, false);
                struct crdt_rec *t = malloc(nsz);
                if (t) {
                    memcpy(t, e, sizeof *e);
                    memcpy(t->data, e->data, e->key_len + 1u);
                    t->value_len = 0;
                    t->flags = CRDT_F_TOMBSTONE | CRDT_F_EXPIRED;
                    r->bytes -= rec_size(e->key_len, e->value_len, (e->flags & CRDT_F_SIGNED) != 0);
                    r->bytes += nsz;
                    free(e);
                    *p = e = t;
                } else {
                    e->flags =
                        (uint8_t)((e->flags & ~CRDT_F_SIGNED) | CRDT_F_TOMBSTONE | CRDT_F_EXPIRED);
                }
                changed++;
            }
            if ((e->flags & CRDT_F_TOMBSTONE) && rec_death(e) <= now_ms - grace) {
                digest_toggle(r, e->hash, stored_digest(r, e));
                *p = e->next;
                r->bytes -= rec_size(e->key_len, e->value_len, (e->flags & CRDT_F_SIGNED) != 0);
                free(e);
                r->count--;
                changed++;
                continue;
            }
            if (e->flags & CRDT_F_TOMBSTONE) {
                if (rec_death(e) < min_death) min_death = rec_death(e);
            } else if (e->expires_at && e->expires_at < min_expire) {
                min_expire = e->expires_at;
            }
            p = &e->next;
        }
    }
    r->min_expire = min_expire;
    r->min_death = min_death;
    return changed;
}

size_t crdt_replica_size(const struct crdt_replica *r)
{
    return r->count;
}

uint64_t crdt_replica_leaf(const struct crdt_replica *r, unsigned leaf)
{
    return r->leaves[leaf & (CRDT_DIGEST_LEAVES - 1)];
}

uint64_t crdt_replica_root(const struct crdt_replica *r)
{
    return r->root;
}

int crdt_replica_foreach_leaf(const struct crdt_replica *r, unsigned leaf, crdt_rec_fn fn,
                              void *arg)
{
    leaf &= CRDT_DIGEST_LEAVES - 1;
    size_t size = r->mask + 1;
    /* Table index and leaf are both low bits of the same hash: when the table is
     * at least as large as the leaf count, a leaf's records sit only in buckets
     * congruent to it; otherwise they share one bucket with other leaves. */
    size_t start = size >= CRDT_DIGEST_LEAVES ? leaf : (leaf & r->mask);
    size_t step = size >= CRDT_DIGEST_LEAVES ? CRDT_DIGEST_LEAVES : size;
    for (size_t i = start; i < size; i += step) {
        for (const struct crdt_rec *e = r->tab[i]; e; e = e->next) {
            if ((e->hash & (CRDT_DIGEST_LEAVES - 1)) != leaf) continue;
            struct crdt_rec_view v;
            crdt_rec_view(r, e, &v);
            int rc = fn(&v, arg);
            if (rc) return rc;
        }
    }
    return 0;
}

size_t crdt_replica_bytes(const struct crdt_replica *r)
{
    return r->bytes + (r->mask + 1) * sizeof *r->tab + sizeof *r;
}
