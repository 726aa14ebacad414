/* backend_local.c: the in-memory backend (the default) and the replica engine
 * the mesh backend builds on. Writes apply at once (read-your-writes); their
 * completions are deferred to the next loop iteration, as the API promises. */
#include "config.h"

#include "localcore.h"
#include "crdt/resolver.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum pend_kind { P_DONE, P_GET };

struct pend {
    enum pend_kind kind;
    int status;
    sm_cb cb;
    void *arg;
    uint64_t version;
    char **keys; /* P_GET: owned copies */
    size_t n;
};

#define DEFAULT_SWEEP_MS 1000

static void run_cb(struct ev_loop *loop, ev_check *w, int revents);
static void wake_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop, (void)w, (void)revents;
}

static int64_t now_wall(void)
{
    return (int64_t)sm_wall_ms();
}

uint64_t sm_localcore_hlc(struct sm_localcore *lc, uint64_t wall_ms)
{
    uint64_t phys = wall_ms << CRDT_HLC_LOGICAL_BITS;
    lc->hlc_last = phys > lc->hlc_last ? phys : lc->hlc_last + 1;
    return lc->hlc_last;
}

/* ---- deferred completions ---- */

static int pend_push(struct sm_localcore *lc, const struct pend *p)
{
    if (lc->qcount == lc->qcap) {
        size_t nc = lc->qcap ? lc->qcap * 2 : 64;
        struct pend *nq = malloc(nc * sizeof *nq);
        if (!nq) return SM_ENOMEM;
        for (size_t i = 0; i < lc->qcount; i++) nq[i] = lc->q[(lc->qhead + i) % lc->qcap];
        free(lc->q);
        lc->q = nq;
        lc->qcap = nc;
        lc->qhead = 0;
    }
    lc->q[(lc->qhead + lc->qcount) % lc->qcap] = *p;
    lc->qcount++;
    if (!ev_is_active(&lc->wake)) ev_idle_start(lc->loop, &lc->wake);
    return 0;
}

static void free_keys(char **keys, size_t n)
{
    if (!keys) return;
    for (size_t i = 0; i < n; i++) free(keys[i]);
    free(keys);
}

/* Answer a deferred get from the replica as it is now, copying every byte
 * the callback sees so it may write to the store while reading them. */
static void answer_get(struct sm_localcore *lc, struct pend *p)
{
    int64_t now = now_wall();
    size_t total = 0;
    const struct crdt_rec **recs = calloc(p->n, sizeof *recs);
    struct sm_entry *ents = calloc(p->n, sizeof *ents);
    if (!recs || !ents) goto oom;
    for (size_t i = 0; i < p->n; i++) {
        recs[i] = crdt_replica_get(lc->rep, p->keys[i], strlen(p->keys[i]), now);
        if (recs[i]) {
            struct crdt_rec_view v;
            crdt_rec_view(lc->rep, recs[i], &v);
            total += v.value_len + v.origin_len + 1;
        }
    }
    char *mem = malloc(total + 1);
    if (!mem) goto oom;
    char *w = mem;
    for (size_t i = 0; i < p->n; i++) {
        struct sm_entry *e = &ents[i];
        e->key = p->keys[i];
        e->origin = "";
        if (!recs[i]) {
            e->status = SM_ENOTFOUND;
            continue;
        }
        struct crdt_rec_view v;
        crdt_rec_view(lc->rep, recs[i], &v);
        memcpy(w, v.value, v.value_len);
        e->value = w;
        e->value_len = v.value_len;
        w += v.value_len;
        memcpy(w, v.origin, v.origin_len);
        w[v.origin_len] = '\0';
        e->origin = w;
        w += v.origin_len + 1;
        e->version = v.version;
        e->time_ms = crdt_hlc_wall_ms(v.hlc);
        e->expires_ms = v.expires_at;
    }
    struct sm_result r = {.entries = ents, .n_entries = p->n};
    free(recs);
    p->cb(lc->base.store, 0, &r, p->arg);
    free(mem);
    free(ents);
    return;
oom:
    free(recs);
    free(ents);
    struct sm_result oomr = {.errmsg = "out of memory"};
    p->cb(lc->base.store, SM_ENOMEM, &oomr, p->arg);
}

static void run_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)revents;
    struct sm_localcore *lc = w->data;
    if (!ev_is_active(&lc->wake)) return;
    ev_idle_stop(loop, &lc->wake);
    /* Only what was queued before this turn runs now; callbacks that start new
     * operations get theirs answered on the next turn. */
    size_t n = lc->qcount;
    while (n-- && lc->qcount) {
        struct pend p = lc->q[lc->qhead];
        lc->qhead = (lc->qhead + 1) % lc->qcap;
        lc->qcount--;
        if (p.kind == P_GET) {
            answer_get(lc, &p);
            free_keys(p.keys, p.n);
        } else {
            struct sm_result r = {.version = p.version};
            p.cb(lc->base.store, p.status, &r, p.arg);
        }
        if (lc->closing) return;
    }
    if (lc->qcount) ev_idle_start(loop, &lc->wake);
}

/* ---- sweep ---- */

static int on_expire(const struct crdt_rec_view *v, void *arg)
{
    struct sm_localcore *lc = arg;
    char origin[CRDT_MAX_ORIGIN + 1];
    memcpy(origin, v->origin, v->origin_len);
    origin[v->origin_len] = '\0';
    struct sm_event ev = {.type = SM_EVENT_EXPIRE,
                          .key = v->key,
                          .version = v->version,
                          .time_ms = (uint64_t)v->expires_at,
                          .origin = origin};
    sm_store_emit(lc->base.store, &ev);
    return 0;
}

static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    struct sm_localcore *lc = w->data;
    crdt_replica_sweep(lc->rep, now_wall(), lc->grace_ms, on_expire, lc);
}

static double size_gauge(void *arg)
{
    struct sm_localcore *lc = arg;
    return (double)crdt_replica_size(lc->rep);
}

/* ---- open/close ---- */

struct optcheck {
    const char *prefix;
    const char *bad;
};

static int check_opt(const char *key, const char *value, void *arg)
{
    (void)value;
    struct optcheck *oc = arg;
    const char *rest = key + strlen(oc->prefix);
    if (strcmp(rest, "sweep_interval") == 0 || strcmp(rest, "tombstone_grace") == 0) return 0;
    oc->bad = key;
    return 1;
}

int sm_localcore_open(struct sm_store *st, const struct sm_config *cfg, const char *optprefix,
                      uint64_t default_grace_ms, size_t size, struct sm_localcore **out, char *err,
                      size_t errlen)
{
    char key[64];
    struct sm_localcore *lc = calloc(1, size);
    if (!lc) return SM_ENOMEM;
    lc->base.store = st;
    lc->loop = sm_store_loop(st);
    int rc;
    snprintf(key, sizeof key, "%ssweep_interval", optprefix);
    if ((rc = sm_cfg_ms(cfg, key, DEFAULT_SWEEP_MS, &lc->sweep_ms, err, errlen)) < 0) goto fail;
    if (lc->sweep_ms == 0) {
        snprintf(err, errlen, "option %s: must be > 0", key);
        rc = SM_ECONFIG;
        goto fail;
    }
    snprintf(key, sizeof key, "%stombstone_grace", optprefix);
    if ((rc = sm_cfg_ms(cfg, key, default_grace_ms, &lc->grace_ms, err, errlen)) < 0) goto fail;
    lc->rep = crdt_replica_new();
    lc->resolvers = crdt_resolvers_new_default();
    if (!lc->rep || !lc->resolvers) {
        crdt_replica_delete(lc->rep);
        crdt_resolvers_delete(lc->resolvers);
        rc = SM_ENOMEM;
        goto fail;
    }
    ev_timer_init(&lc->sweep, sweep_cb, (double)lc->sweep_ms / 1000.0,
                  (double)lc->sweep_ms / 1000.0);
    lc->sweep.data = lc;
    ev_timer_start(lc->loop, &lc->sweep);
    ev_unref(lc->loop); /* housekeeping alone does not keep the loop running */
    ev_idle_init(&lc->wake, wake_cb);
    ev_check_init(&lc->run, run_cb);
    lc->run.data = lc;
    ev_check_start(lc->loop, &lc->run);
    ev_unref(lc->loop);
    sm_metrics_gauge_fn(sm_store_metrics(st), "statemesh_storage_size",
                        "Records held in memory (live and tombstones)",
                        strcmp(optprefix, "local.") == 0 ? "storage_type=\"local\""
                                                         : "storage_type=\"mesh\"",
                        size_gauge, lc);
    *out = lc;
    return 0;
fail:
    free(lc);
    return rc;
}

void sm_localcore_close(struct sm_localcore *lc)
{
    lc->closing = true;
    ev_ref(lc->loop);
    ev_timer_stop(lc->loop, &lc->sweep);
    ev_ref(lc->loop);
    ev_check_stop(lc->loop, &lc->run);
    ev_idle_stop(lc->loop, &lc->wake);
    while (lc->qcount) {
        struct pend p = lc->q[lc->qhead];
        lc->qhead = (lc->qhead + 1) % lc->qcap;
        lc->qcount--;
        free_keys(p.keys, p.n);
        struct sm_result r = {.errmsg = "store closed"};
        p.cb(lc->base.store, SM_ECLOSED, &r, p.arg);
    }
    free(lc->q);
    lc->q = NULL;
    crdt_replica_delete(lc->rep);
    lc->rep = NULL;
    crdt_resolvers_delete(lc->resolvers);
    lc->resolvers = NULL;
}

int sm_localcore_counter_sum(struct sm_backend *b, const char *prefix, int64_t *out)
{
    struct sm_localcore *lc = (struct sm_localcore *)b;
    *out = crdt_counter_sum(lc->rep, prefix, NULL, NULL, now_wall());
    return 0;
}

/* ---- operations ---- */

static void fill_entry(const struct crdt_rec_view *v, struct sm_entry *e)
{
    e->key = v->key;
    e->value = v->value;
    e->value_len = v->value_len;
    e->version = v->version;
    e->time_ms = crdt_hlc_wall_ms(v->hlc);
    e->expires_ms = v->expires_at;
    e->origin = v->origin; /* interned and NUL-terminated by the replica */
    e->status = 0;
}

int sm_localcore_get_now(struct sm_backend *b, const char *key, struct sm_entry *out)
{
    struct sm_localcore *lc = (struct sm_localcore *)b;
    const struct crdt_rec *r = crdt_replica_find(lc->rep, key, strlen(key));
    if (!r) return SM_ENOTFOUND;
    struct crdt_rec_view v;
    crdt_rec_view(lc->rep, r, &v);
    /* The clock is read only for records that can expire: most reads skip it. */
    if ((v.flags & CRDT_F_TOMBSTONE) || (v.expires_at && v.expires_at <= now_wall()))
        return SM_ENOTFOUND;
    fill_entry(&v, out);
    return 0;
}

struct list_arg {
    sm_list_fn fn;
    void *arg;
};

static int list_one(const struct crdt_rec_view *v, void *arg)
{
    struct list_arg *la = arg;
    struct sm_entry e;
    fill_entry(v, &e);
    return la->fn(&e, la->arg);
}

int sm_localcore_list(struct sm_backend *b, const char *prefix, sm_list_fn fn, void *arg)
{
    struct sm_localcore *lc = (struct sm_localcore *)b;
    struct list_arg la = {fn, arg};
    return crdt_replica_foreach(lc->rep, prefix, strlen(prefix), true, now_wall(), list_one, &la);
}

int sm_localcore_get_multi(struct sm_backend *b, const char *const *keys, size_t n, sm_cb cb,
                           void *arg)
{
    struct sm_localcore *lc = (struct sm_localcore *)b;
    struct pend p = {.kind = P_GET, .cb = cb, .arg = arg, .n = n};
    p.keys = calloc(n, sizeof *p.keys);
    if (!p.keys) return SM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        p.keys[i] = sm_strdup(keys[i]);
        if (!p.keys[i]) goto oom;
    }
    if (pend_push(lc, &p) < 0) goto oom;
    return 0;
oom:
    free_keys(p.keys, n);
    return SM_ENOMEM;
}

/* Apply one local write (set or delete) and publish it. */
static int apply_local(struct sm_localcore *lc, const char *key, const void *value, size_t len,
                       uint64_t ttl_ms, bool tomb, uint64_t *version_out)
{
    size_t klen = strlen(key);
    uint64_t wall = sm_wall_ms();
    const char *node = sm_store_node_id(lc->base.store);
    struct crdt_rec_view v = {
        .key = key,
        .key_len = klen,
        .value = tomb ? NULL : value,
        .value_len = tomb ? 0 : len,
        .version = crdt_replica_version(lc->rep, key, klen) + 1,
        .hlc = sm_localcore_hlc(lc, wall),
        .origin = node,
        .origin_len = strlen(node),
        .precedence = tomb || !lc->resolvers
                          ? 0
                          : crdt_resolvers_precedence(lc->resolvers, key, klen, value, len),
        .flags = tomb ? CRDT_F_TOMBSTONE : 0,
        .expires_at = (!tomb && ttl_ms) ? (int64_t)(wall + ttl_ms) : 0,
    };
    uint8_t sig[CRDT_SIG_LEN];
    if (lc->hooks.prepare) lc->hooks.prepare(lc, &v, sig);
    int rc = crdt_replica_merge(lc->rep, &v);
    if (rc < 0) return SM_ENOMEM;
    *version_out = v.version;
    struct sm_event ev = {.type = tomb ? SM_EVENT_DELETE : SM_EVENT_SET,
                          .key = key,
                          .value = tomb ? NULL : value,
                          .value_len = tomb ? 0 : len,
                          .version = v.version,
                          .time_ms = wall,
                          .origin = node};
    sm_store_emit(lc->base.store, &ev);
    if (lc->hooks.on_local_write) lc->hooks.on_local_write(lc, &v);
    return 0;
}

int sm_localcore_set_multi(struct sm_backend *b, const struct sm_kv *items, size_t n, sm_cb cb,
                           void *arg)
{
    struct sm_localcore *lc = (struct sm_localcore *)b;
    struct pend p = {.kind = P_DONE, .cb = cb, .arg = arg};
    /* Reserve the completion first so a write is never applied without one. */
    int rc = pend_push(lc, &p);
    if (rc < 0) return rc;
    struct pend *slot = &lc->q[(lc->qhead + lc->qcount - 1) % lc->qcap];
    for (size_t i = 0; i < n; i++) {
        uint64_t ver = 0;
        rc = apply_local(lc, items[i].key, items[i].value, items[i].value_len, items[i].ttl_ms,
                         false, &ver);
        if (rc < 0) {
            slot->status = rc;
            break;
        }
        slot->version = ver;
    }
    return 0;
}

int sm_localcore_del(struct sm_backend *b, const char *key, sm_cb cb, void *arg)
{
    struct sm_localcore *lc = (struct sm_localcore *)b;
    struct pend p = {.kind = P_DONE, .cb = cb, .arg = arg};
    int rc = pend_push(lc, &p);
    if (rc < 0) return rc;
    struct pend *slot = &lc->q[(lc->qhead + lc->qcount - 1) % lc->qcap];
    const struct crdt_rec *r = crdt_replica_get(lc->rep, key, strlen(key), now_wall());
    if (!r) return 0; /* deleting a missing key succeeds and changes nothing */
    uint64_t ver = 0;
    rc = apply_local(lc, key, NULL, 0, 0, true, &ver);
    slot->status = rc < 0 ? rc : 0;
    slot->version = ver;
    return 0;
}

int sm_localcore_ping(struct sm_backend *b, sm_cb cb, void *arg)
{
    struct sm_localcore *lc = (struct sm_localcore *)b;
    struct pend p = {.kind = P_DONE, .cb = cb, .arg = arg};
    return pend_push(lc, &p);
}

void sm_localcore_emit_remote(struct sm_localcore *lc, const struct crdt_rec_view *rec,
                              const struct crdt_rec_view *old)
{
    int64_t now = now_wall();
    bool was_live =
        old && !(old->flags & CRDT_F_TOMBSTONE) && (old->expires_at == 0 || old->expires_at > now);
    bool tomb = (rec->flags & CRDT_F_TOMBSTONE) != 0;
    bool live_now = !tomb && (rec->expires_at == 0 || rec->expires_at > now);
    if (!live_now && !was_live) return; /* nothing visible changed */
    char origin[CRDT_MAX_ORIGIN + 1], key[65536];
    memcpy(origin, rec->origin, rec->origin_len);
    origin[rec->origin_len] = '\0';
    memcpy(key, rec->key, rec->key_len); /* wire keys are not NUL-terminated */
    key[rec->key_len] = '\0';
    struct sm_event ev = {
        .type = live_now
                    ? SM_EVENT_SET
                    : ((rec->flags & CRDT_F_EXPIRED) || !tomb ? SM_EVENT_EXPIRE : SM_EVENT_DELETE),
        .key = key,
        .value = live_now ? rec->value : NULL,
        .value_len = live_now ? rec->value_len : 0,
        .version = rec->version,
        .time_ms = crdt_hlc_wall_ms(rec->hlc),
        .origin = origin};
    sm_store_emit(lc->base.store, &ev);
}

/* ---- the local backend ---- */

static int local_open(struct sm_store *st, const struct sm_config *cfg, struct sm_backend **out,
                      char *err, size_t errlen)
{
    struct optcheck oc = {"local.", NULL};
    if (sm_cfg_foreach(cfg, "local.", check_opt, &oc)) {
        snprintf(err, errlen,
                 "unknown option '%s' (local backend knows sweep_interval, "
                 "tombstone_grace)",
                 oc.bad);
        return SM_ECONFIG;
    }
    struct sm_localcore *lc;
    int rc = sm_localcore_open(st, cfg, "local.", 0, sizeof *lc, &lc, err, errlen);
    if (rc < 0) return rc;
    *out = &lc->base;
    return 0;
}

static void local_close(struct sm_backend *b)
{
    struct sm_localcore *lc = (struct sm_localcore *)b;
    sm_localcore_close(lc);
    free(lc);
}

const struct sm_backend_vt sm_backend_local = {
    .name = "local",
    .open = local_open,
    .close = local_close,
    .get_now = sm_localcore_get_now,
    .list = sm_localcore_list,
    .get_multi = sm_localcore_get_multi,
    .set_multi = sm_localcore_set_multi,
    .del = sm_localcore_del,
    .ping = sm_localcore_ping,
    .counter_sum = sm_localcore_counter_sum,
};
