/* raft_fsm.c: the raft backend's state machine: apply, expiry by entry time, snapshots. */
#include "config.h"

#include "raft_fsm.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define SNAP_MAGIC 0x534d5246u /* "SMRF" */

static uint64_t hkey(const char *s, size_t n)
{
    return XXH3_64bits(s, n);
}

static bool grow_table(void ***tab, size_t *cap, size_t count, size_t next_off)
{
    if (count < *cap * 3 / 4 && *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 64;
    void **nt = calloc(ncap, sizeof *nt);
    if (!nt) return false;
    for (size_t i = 0; i < *cap; i++) {
        void *e = (*tab)[i];
        while (e) {
            void *next = *(void **)((char *)e + next_off);
            const char *k = *(char **)((char *)e + next_off + sizeof(void *));
            size_t h = hkey(k, strlen(k)) & (ncap - 1);
            *(void **)((char *)e + next_off) = nt[h];
            nt[h] = e;
            e = next;
        }
    }
    free(*tab);
    *tab = nt;
    *cap = ncap;
    return true;
}

int smr_fsm_init(struct smr_fsm *f)
{
    memset(f, 0, sizeof *f);
    if (!grow_table((void ***)&f->kv, &f->kv_cap, 0, offsetof(struct smr_kv, next)) ||
        !grow_table((void ***)&f->locks, &f->lock_cap, 0, offsetof(struct smr_lock, next))) {
        free(f->kv);
        return SM_ENOMEM;
    }
    return 0;
}

static void kv_free(struct smr_kv *e)
{
    free(e->key);
    free(e->value);
    free(e);
}

static void lock_free(struct smr_lock *l)
{
    free(l->name);
    free(l);
}

static void clear_state(struct smr_fsm *f)
{
    for (size_t i = 0; i < f->kv_cap; i++) {
        for (struct smr_kv *e = f->kv[i], *n; e; e = n) {
            n = e->next;
            kv_free(e);
        }
        f->kv[i] = NULL;
    }
    for (size_t i = 0; i < f->lock_cap; i++) {
        for (struct smr_lock *l = f->locks[i], *n; l; l = n) {
            n = l->next;
            lock_free(l);
        }
        f->locks[i] = NULL;
    }
    f->kv_count = f->lock_count = 0;
    f->min_expires = 0;
}

void smr_fsm_close(struct smr_fsm *f)
{
    if (!f->kv) return;
    clear_state(f);
    free(f->kv);
    free(f->locks);
    f->kv = NULL;
    f->locks = NULL;
}

static struct smr_kv **kv_slot(const struct smr_fsm *f, const char *key, size_t klen)
{
    struct smr_kv **p = &f->kv[hkey(key, klen) & (f->kv_cap - 1)];
    while (*p && !(strlen((*p)->key) == klen && memcmp((*p)->key, key, klen) == 0)) p = &(*p)->next;
    return p;
}

static struct smr_lock **lock_slot(const struct smr_fsm *f, const char *name, size_t nlen)
{
    struct smr_lock **p = &f->locks[hkey(name, nlen) & (f->lock_cap - 1)];
    while (*p && !(strlen((*p)->name) == nlen && memcmp((*p)->name, name, nlen) == 0))
        p = &(*p)->next;
    return p;
}

static bool live(int64_t expires, int64_t now)
{
    return expires == 0 || expires > now;
}

const struct smr_kv *smr_fsm_get(const struct smr_fsm *f, const char *key, int64_t now_ms)
{
    const struct smr_kv *e = *kv_slot(f, key, strlen(key));
    return e && live(e->expires_ms, now_ms) ? e : NULL;
}

int smr_fsm_list(const struct smr_fsm *f, const char *prefix, int64_t now_ms,
                 int (*fn)(const struct smr_kv *kv, void *arg), void *arg)
{
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < f->kv_cap; i++)
        for (const struct smr_kv *e = f->kv[i]; e; e = e->next) {
            if (!live(e->expires_ms, now_ms) || strncmp(e->key, prefix, pl) != 0) continue;
            int rc = fn(e, arg);
            if (rc) return rc;
        }
    return 0;
}

const struct smr_lock *smr_fsm_lock(const struct smr_fsm *f, const char *name)
{
    return *lock_slot(f, name, strlen(name));
}

bool smr_fsm_needs_purge(const struct smr_fsm *f, int64_t now_ms)
{
    return f->min_expires != 0 && f->min_expires <= now_ms;
}

/* ---- msgpack helpers ---- */

static bool obj_str_raw(const msgpack_object *o, const char **p, size_t *n)
{
    if (o->type == MSGPACK_OBJECT_STR) {
        *p = o->via.str.ptr;
        *n = o->via.str.size;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_BIN) {
        *p = o->via.bin.ptr;
        *n = o->via.bin.size;
        return true;
    }
    return false;
}

static bool obj_str(const msgpack_object *o, const char **p, size_t *n)
{
    /* msgpack gives a NULL pointer for empty strings */
    bool ok = obj_str_raw(o, p, n);
    if (ok && *n == 0) *p = "";
    return ok;
}

static bool obj_u64(const msgpack_object *o, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return false;
    *v = o->via.u64;
    return true;
}

static bool obj_i64(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *v = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return true;
    }
    return false;
}

static char *dupn(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static bool clean_str(const char *p, size_t n)
{
    return n > 0 && memchr(p, '\0', n) == NULL;
}

static void copy_id(char *dst, const char *src, size_t n)
{
    if (n > SM_MAX_NODE_ID) n = SM_MAX_NODE_ID;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void note_expiry(struct smr_fsm *f, int64_t exp)
{
    if (exp && (f->min_expires == 0 || exp < f->min_expires)) f->min_expires = exp;
}

static void emit(struct smr_fsm *f, enum sm_event_type t, const char *key, const void *v, size_t n,
                 uint64_t version, const char *origin)
{
    if (f->emit) f->emit(f->emit_arg, t, key, v, n, version, f->now_ms, origin);
}

/* Put one key; the caller validated the shapes. */
static int put_kv(struct smr_fsm *f, const char *k, size_t kl, const char *v, size_t vl,
                  uint64_t ttl, uint64_t version, const char *origin, size_t olen)
{
    struct smr_kv **p = kv_slot(f, k, kl);
    struct smr_kv *e = *p;
    uint8_t *nv = malloc(vl ? vl : 1);
    if (!nv) return SM_ENOMEM;
    memcpy(nv, v, vl);
    if (!e) {
        if (!grow_table((void ***)&f->kv, &f->kv_cap, f->kv_count, offsetof(struct smr_kv, next))) {
            free(nv);
            return SM_ENOMEM;
        }
        p = kv_slot(f, k, kl);
        e = calloc(1, sizeof *e);
        if (!e || !(e->key = dupn(k, kl))) {
            free(e);
            free(nv);
            return SM_ENOMEM;
        }
        *p = e;
        f->kv_count++;
    }
    free(e->value);
    e->value = nv;
    e->value_len = vl;
    e->version = version;
    e->time_ms = f->now_ms;
    e->expires_ms = ttl ? (int64_t)(f->now_ms + ttl) : 0;
    note_expiry(f, e->expires_ms);
    copy_id(e->origin, origin, olen);
    emit(f, SM_EVENT_SET, e->key, e->value, e->value_len, version, e->origin);
    return 0;
}

static void apply_set(struct smr_fsm *f, const msgpack_object_array *a, uint64_t version,
                      const char *origin, size_t olen)
{
    struct smr_result *r = &f->res;
    if (a->size != 2 || a->ptr[1].type != MSGPACK_OBJECT_ARRAY) goto bad;
    const msgpack_object_array *items = &a->ptr[1].via.array;
    /* Validate every item first so the multi-key set is all or nothing. */
    for (uint32_t i = 0; i < items->size; i++) {
        const msgpack_object *it = &items->ptr[i];
        const char *k, *v;
        size_t kl, vl;
        uint64_t ttl;
        if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 3 ||
            !obj_str(&it->via.array.ptr[0], &k, &kl) || !clean_str(k, kl) ||
            !obj_str(&it->via.array.ptr[1], &v, &vl) || !obj_u64(&it->via.array.ptr[2], &ttl) ||
            ttl > SM_MAX_TTL_MS)
            goto bad;
    }
    for (uint32_t i = 0; i < items->size; i++) {
        const msgpack_object *it = items->ptr[i].via.array.ptr;
        const char *k = "", *v = "";
        size_t kl = 0, vl = 0;
        uint64_t ttl = 0;
        obj_str(&it[0], &k, &kl);
        obj_str(&it[1], &v, &vl);
        obj_u64(&it[2], &ttl);
        int rc = put_kv(f, k, kl, v, vl, ttl, version, origin, olen);
        if (rc < 0) {
            /* Out of memory mid-batch: the replica would diverge from its peers;
             * there is no safe way on, so stop rather than serve wrong data. */
            abort();
        }
    }
    r->version = version;
    return;
bad:
    r->status = SM_EPROTO;
}

static void apply_del(struct smr_fsm *f, const msgpack_object_array *a, uint64_t version,
                      const char *origin, size_t olen)
{
    const char *k;
    size_t kl;
    if (a->size != 2 || !obj_str(&a->ptr[1], &k, &kl) || !clean_str(k, kl)) {
        f->res.status = SM_EPROTO;
        return;
    }
    struct smr_kv **p = kv_slot(f, k, kl);
    struct smr_kv *e = *p;
    f->res.version = version;
    if (!e) return;
    *p = e->next;
    f->kv_count--;
    if (live(e->expires_ms, (int64_t)f->now_ms)) {
        char o[SM_MAX_NODE_ID + 1];
        copy_id(o, origin, olen);
        emit(f, SM_EVENT_DELETE, e->key, NULL, 0, version, o);
    }
    kv_free(e);
}

/* The fence of a new grant: above the lock's last fence, the entry's version
 * and a floor of FSM time in ms * 1024. Versions alone would repeat after a
 * restore from a backup (grants made after the backup was taken are lost,
 * and the restored log numbers its entries from the backup's index again);
 * FSM time is leader-stamped, so the floor is the same on every replica and
 * lies above every fence handed out before, as long as the leaders' clocks
 * do not go back and no name sees more than 1024 grants per ms. A fresh
 * record (never granted, or dropped a minute after it lapsed) starts at the
 * floor, which by then has moved past the old fences. */
static uint64_t grant_fence(const struct smr_fsm *f, const struct smr_lock *l, uint64_t version)
{
    uint64_t fence = f->now_ms * 1024;
    if (version > fence) fence = version;
    if (l->fence >= fence) fence = l->fence + 1;
    return fence;
}

static void apply_lock(struct smr_fsm *f, int op, const msgpack_object_array *a, uint64_t index,
                       const char *origin, size_t olen)
{
    struct smr_result *r = &f->res;
    const char *name, *tok;
    size_t nl, tl;
    uint64_t ttl = 0;
    if (a->size != (op == SMR_OP_UNLOCK ? 3u : 4u) || !obj_str(&a->ptr[1], &name, &nl) ||
        !clean_str(name, nl) || !obj_str(&a->ptr[2], &tok, &tl) || tl != SMR_TOKEN_LEN ||
        (op != SMR_OP_UNLOCK && (!obj_u64(&a->ptr[3], &ttl) || ttl == 0 || ttl > SM_MAX_TTL_MS))) {
        r->status = SM_EPROTO;
        return;
    }
    int64_t now = (int64_t)f->now_ms;
    struct smr_lock **p = lock_slot(f, name, nl);
    struct smr_lock *l = *p;
    bool held = l && !l->released && l->expires_ms > now;
    bool mine = l && memcmp(l->token, tok, SMR_TOKEN_LEN) == 0;
    switch (op) {
    case SMR_OP_LOCK:
        if (held && mine) break; /* a retried acquire: same grant */
        if (held) {
            r->status = SM_ELOCKED;
            r->fence = l->fence;
            r->expires_ms = l->expires_ms;
            return;
        }
        if (!l) {
            if (!grow_table((void ***)&f->locks, &f->lock_cap, f->lock_count,
                            offsetof(struct smr_lock, next)))
                abort(); /* see apply_set */
            p = lock_slot(f, name, nl);
            l = calloc(1, sizeof *l);
            if (!l || !(l->name = dupn(name, nl))) abort();
            *p = l;
            f->lock_count++;
        }
        memcpy(l->token, tok, SMR_TOKEN_LEN);
        l->token[SMR_TOKEN_LEN] = '\0';
        l->fence = grant_fence(f, l, index);
        l->released = false;
        l->expires_ms = now + (int64_t)ttl;
        copy_id(l->owner, origin, olen);
        break;
    case SMR_OP_RENEW:
        if (!held || !mine) {
            r->status = SM_ENOTOWNER;
            return;
        }
        l->expires_ms = now + (int64_t)ttl;
        break;
    case SMR_OP_UNLOCK:
        if (l && mine && l->released) break; /* a retried release */
        if (!held || !mine) {
            r->status = SM_ENOTOWNER;
            return;
        }
        l->released = true;
        break;
    }
    r->fence = l->fence;
    r->version = index;
    r->expires_ms = l->released ? 0 : l->expires_ms;
    memcpy(r->token, l->token, SMR_TOKEN_LEN + 1);
}

static void apply_purge(struct smr_fsm *f, uint64_t version)
{
    int64_t now = (int64_t)f->now_ms, next_min = 0;
    for (size_t i = 0; i < f->kv_cap; i++) {
        for (struct smr_kv **p = &f->kv[i]; *p;) {
            struct smr_kv *e = *p;
            if (e->expires_ms && e->expires_ms <= now) {
                *p = e->next;
                f->kv_count--;
                emit(f, SM_EVENT_EXPIRE, e->key, NULL, 0, version, e->origin);
                kv_free(e);
                continue;
            }
            if (e->expires_ms && (next_min == 0 || e->expires_ms < next_min))
                next_min = e->expires_ms;
            p = &e->next;
        }
    }
    /* Drop lock records that can no longer matter (released or lapsed long ago). */
    for (size_t i = 0; i < f->lock_cap; i++) {
        for (struct smr_lock **p = &f->locks[i]; *p;) {
            struct smr_lock *l = *p;
            if (l->expires_ms + 60000 <= now) {
                *p = l->next;
                f->lock_count--;
                lock_free(l);
                continue;
            }
            p = &l->next;
        }
    }
    f->min_expires = next_min;
    f->res.version = version;
}

const struct smr_result *smr_fsm_apply(struct smr_fsm *f, uint64_t index, const void *buf,
                                       size_t len)
{
    struct smr_result *r = &f->res;
    memset(r, 0, sizeof *r);
    uint64_t version = f->index_base + index;
    f->last_index = index;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    const char *origin;
    size_t olen;
    uint64_t t, op;
    if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size != 4)
        goto bad;
    const msgpack_object *e = u.data.via.array.ptr;
    if (!obj_u64(&e[0], &t) || t != 1 || !obj_u64(&e[1], &t) || !obj_str(&e[2], &origin, &olen) ||
        e[3].type != MSGPACK_OBJECT_ARRAY || e[3].via.array.size < 1 ||
        !obj_u64(&e[3].via.array.ptr[0], &op))
        goto bad;
    if (t > f->now_ms) f->now_ms = t; /* FSM time never goes back */
    const msgpack_object_array *cmd = &e[3].via.array;
    switch (op) {
    case SMR_OP_SET:
        apply_set(f, cmd, version, origin, olen);
        break;
    case SMR_OP_DEL:
        apply_del(f, cmd, version, origin, olen);
        break;
    case SMR_OP_LOCK:
    case SMR_OP_RENEW:
    case SMR_OP_UNLOCK:
        apply_lock(f, (int)op, cmd, version, origin, olen);
        break;
    case SMR_OP_PURGE:
        apply_purge(f, version);
        break;
    case SMR_OP_NOOP:
        r->version = version;
        break;
    default:
        goto bad;
    }
    msgpack_unpacked_destroy(&u);
    return r;
bad:
    msgpack_unpacked_destroy(&u);
    r->status = SM_EPROTO;
    return r;
}

int smr_entry_build(uint64_t time_ms, const char *origin, const void *cmd, size_t cmdlen,
                    void **out, size_t *outlen)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    size_t ol = strlen(origin);
    if (msgpack_pack_array(&pk, 4) || msgpack_pack_uint64(&pk, 1) ||
        msgpack_pack_uint64(&pk, time_ms) || msgpack_pack_str(&pk, ol) ||
        msgpack_pack_str_body(&pk, origin, ol) || msgpack_sbuffer_write(&sb, cmd, cmdlen)) {
        msgpack_sbuffer_destroy(&sb);
        return SM_ENOMEM;
    }
    *out = sb.data;
    *outlen = sb.size;
    return 0;
}

/* ---- snapshots ----
 * [magic, 1, now_ms, index_base, last_index, [[key, value, version, time, expires, origin]...],
 *  [[name, token, fence, expires, released, owner]...]] */

int smr_fsm_snapshot(const struct smr_fsm *f, void **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int bad = 0;
    bad |= msgpack_pack_array(&pk, 7);
    bad |= msgpack_pack_uint32(&pk, SNAP_MAGIC);
    bad |= msgpack_pack_uint32(&pk, 1);
    bad |= msgpack_pack_uint64(&pk, f->now_ms);
    bad |= msgpack_pack_uint64(&pk, f->index_base);
    bad |= msgpack_pack_uint64(&pk, f->last_index);
    bad |= msgpack_pack_array(&pk, f->kv_count);
    for (size_t i = 0; i < f->kv_cap; i++)
        for (const struct smr_kv *e = f->kv[i]; e; e = e->next) {
            size_t kl = strlen(e->key), ol = strlen(e->origin);
            bad |= msgpack_pack_array(&pk, 6);
            bad |= msgpack_pack_str_with_body(&pk, e->key, kl);
            bad |= msgpack_pack_bin_with_body(&pk, e->value, e->value_len);
            bad |= msgpack_pack_uint64(&pk, e->version);
            bad |= msgpack_pack_uint64(&pk, e->time_ms);
            bad |= msgpack_pack_int64(&pk, e->expires_ms);
            bad |= msgpack_pack_str_with_body(&pk, e->origin, ol);
        }
    bad |= msgpack_pack_array(&pk, f->lock_count);
    for (size_t i = 0; i < f->lock_cap; i++)
        for (const struct smr_lock *l = f->locks[i]; l; l = l->next) {
            bad |= msgpack_pack_array(&pk, 6);
            bad |= msgpack_pack_str_with_body(&pk, l->name, strlen(l->name));
            bad |= msgpack_pack_str_with_body(&pk, l->token, strlen(l->token));
            bad |= msgpack_pack_uint64(&pk, l->fence);
            bad |= msgpack_pack_int64(&pk, l->expires_ms);
            if (l->released)
                bad |= msgpack_pack_true(&pk);
            else
                bad |= msgpack_pack_false(&pk);
            bad |= msgpack_pack_str_with_body(&pk, l->owner, strlen(l->owner));
        }
    if (bad) {
        msgpack_sbuffer_destroy(&sb);
        return SM_ENOMEM;
    }
    *out = sb.data;
    *len = sb.size;
    return 0;
}

/* The key entries of a snapshot, [[key, value, version, time, expires,
 * origin]...], into @p nf (no events). 0, SM_EPROTO or SM_ENOMEM. */
static int restore_kvs(struct smr_fsm *nf, const msgpack_object_array *arr)
{
    for (uint32_t i = 0; i < arr->size; i++) {
        const msgpack_object *it = &arr->ptr[i];
        const char *k, *v, *o;
        size_t kl, vl, ol;
        uint64_t version, t;
        int64_t exp;
        if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 6) return SM_EPROTO;
        const msgpack_object *x = it->via.array.ptr;
        if (!obj_str(&x[0], &k, &kl) || !clean_str(k, kl) || !obj_str(&x[1], &v, &vl) ||
            !obj_u64(&x[2], &version) || !obj_u64(&x[3], &t) || !obj_i64(&x[4], &exp) ||
            !obj_str(&x[5], &o, &ol))
            return SM_EPROTO;
        uint64_t saved = nf->now_ms;
        smr_emit_fn em = nf->emit;
        nf->emit = NULL;
        nf->now_ms = t;
        if (put_kv(nf, k, kl, v, vl, 0, version, o, ol) < 0) return SM_ENOMEM;
        nf->emit = em;
        nf->now_ms = saved;
        struct smr_kv *e = *kv_slot(nf, k, kl);
        e->expires_ms = exp;
        note_expiry(nf, exp);
    }
    return 0;
}

/* The locks of a snapshot, [[name, token, fence, expires, released, owner]...]. */
static int restore_locks(struct smr_fsm *nf, const msgpack_object_array *arr)
{
    for (uint32_t i = 0; i < arr->size; i++) {
        const msgpack_object *it = &arr->ptr[i];
        const char *n, *tok, *o;
        size_t nl, tl, ol;
        uint64_t fence;
        int64_t exp;
        if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 6) return SM_EPROTO;
        const msgpack_object *x = it->via.array.ptr;
        if (!obj_str(&x[0], &n, &nl) || !clean_str(n, nl) || !obj_str(&x[1], &tok, &tl) ||
            tl != SMR_TOKEN_LEN || !obj_u64(&x[2], &fence) || !obj_i64(&x[3], &exp) ||
            x[4].type != MSGPACK_OBJECT_BOOLEAN || !obj_str(&x[5], &o, &ol))
            return SM_EPROTO;
        if (!grow_table((void ***)&nf->locks, &nf->lock_cap, nf->lock_count,
                        offsetof(struct smr_lock, next)))
            return SM_ENOMEM;
        struct smr_lock **p = lock_slot(nf, n, nl);
        if (*p) return SM_EPROTO; /* duplicate */
        struct smr_lock *l = calloc(1, sizeof *l);
        if (!l || !(l->name = dupn(n, nl))) {
            free(l);
            return SM_ENOMEM;
        }
        memcpy(l->token, tok, SMR_TOKEN_LEN);
        l->fence = fence;
        l->expires_ms = exp;
        l->released = x[4].via.boolean;
        copy_id(l->owner, o, ol);
        *p = l;
        nf->lock_count++;
    }
    return 0;
}

int smr_fsm_restore(struct smr_fsm *f, const void *buf, size_t len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    struct smr_fsm nf;
    int rc = smr_fsm_init(&nf);
    if (rc < 0) return rc;
    rc = SM_EPROTO;
    uint64_t magic, ver, now, base, idx;
    if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size != 7)
        goto out;
    const msgpack_object *a = u.data.via.array.ptr + 1; /* a[3..] = kvs, locks */
    if (!obj_u64(&a[-1], &magic) || magic != SNAP_MAGIC || !obj_u64(&a[0], &ver) || ver != 1 ||
        !obj_u64(&a[1], &now) || !obj_u64(&a[2], &base) || !obj_u64(&a[3], &idx) ||
        a[4].type != MSGPACK_OBJECT_ARRAY || a[5].type != MSGPACK_OBJECT_ARRAY)
        goto out;
    nf.now_ms = now;
    if ((rc = restore_kvs(&nf, &a[4].via.array)) < 0 ||
        (rc = restore_locks(&nf, &a[5].via.array)) < 0)
        goto out;
    /* Swap the new state in, keeping the caller's hooks. */
    nf.emit = f->emit;
    nf.emit_arg = f->emit_arg;
    nf.index_base = base;
    nf.last_index = idx;
    smr_fsm_close(f);
    *f = nf;
    msgpack_unpacked_destroy(&u);
    return 0;
out:
    smr_fsm_close(&nf);
    msgpack_unpacked_destroy(&u);
    return rc;
}
