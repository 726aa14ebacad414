/* store.c: the store front: validation, routing by key prefix, per-watch
 * bounded event queues, operation metrics, and the lifecycle of backends. */
#include "config.h"

#include "backend.h"
#include "crdt/resolver.h"
#include "metrics.h"

#include <ev.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum op_kind {
    OP_GET,
    OP_SET,
    OP_DEL,
    OP_GET_MULTI,
    OP_SET_MULTI,
    OP_PING,
    OP_LOCK_ACQUIRE,
    OP_LOCK_RENEW,
    OP_LOCK_RELEASE,
    OP__COUNT
};
static const char *const op_names[OP__COUNT] = {"get",          "set",        "delete",
                                                "get_multi",    "set_multi",  "ping",
                                                "lock_acquire", "lock_renew", "lock_release"};

#define MAX_BACKENDS 4

struct binst {
    struct sm_backend *b;
    const char *name;
    uint64_t *ops[OP__COUNT][2]; /* [op][0 ok, 1 error], created lazily */
    struct sm_hist *dur[OP__COUNT];
};

struct route {
    char *prefix;
    size_t len;
    struct binst *bi;
};

/* Context of one operation in flight, pooled to keep malloc off the hot path. */
struct opctx {
    struct sm_store *st;
    struct binst *bi;
    sm_cb cb;
    void *arg;
    uint64_t t0;
    enum op_kind op;
    struct opctx *next;
};

struct evq; /* queued event, see below */

struct sm_watch {
    struct sm_store *st;
    struct sm_watch *next, *prev;
    char *prefix;
    size_t plen;
    sm_watch_cb cb;
    void *arg;
    struct evq **q; /* ring */
    size_t cap, head, count;
    uint64_t dropped_pending, dropped_total;
    bool removed;
};

struct evq {
    struct sm_event ev;
    char data[]; /* key, value, origin */
};

struct sm_store {
    struct ev_loop *loop;
    char node_id[SM_MAX_NODE_ID + 1];
    size_t max_key, max_value, watch_queue;
    char errmsg[512];
    struct sm_metrics *metrics;
    struct binst bis[MAX_BACKENDS];
    size_t nbis;
    struct route *routes;
    size_t nroutes;
    struct binst *dflt;
    struct sm_watch *watches;
    size_t watches_pending; /* watches with queued events */
    ev_idle wake;
    ev_check deliver;
    sm_member_cb member_cb;
    void *member_arg;
    struct opctx *free_ctx;
    void **ctx_chunks;
    size_t nchunks;
    uint64_t *events_total[5];
    uint64_t *overflow_total;
    bool closing;
    bool in_delivery; /* unwatch defers frees while the delivery loop runs */
};

/* ------------------------------------------------------------------------ */

int sm_store_seterr(struct sm_store *st, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->errmsg, sizeof st->errmsg, fmt, ap);
    va_end(ap);
    return err;
}

SM_API const char *sm_errmsg(const struct sm_store *st)
{
    return st ? st->errmsg : "no store";
}

SM_API const char *sm_store_node_id(const struct sm_store *st)
{
    return st->node_id;
}

SM_API struct ev_loop *sm_store_loop(const struct sm_store *st)
{
    return st->loop;
}

struct sm_metrics *sm_store_metrics(struct sm_store *st)
{
    return st->metrics;
}

size_t sm_store_max_key(const struct sm_store *st)
{
    return st->max_key;
}

size_t sm_store_max_value(const struct sm_store *st)
{
    return st->max_value;
}

static const struct sm_backend_vt *backend_vt(const char *name)
{
    const struct sm_backend_vt *all[] = {&sm_backend_local, &sm_backend_mesh, &sm_backend_redis,
                                         &sm_backend_raft};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i] && strcmp(all[i]->name, name) == 0) return all[i];
    return NULL;
}

static double connected_gauge(void *arg)
{
    struct binst *bi = arg;
    return bi->b->vt->connected ? bi->b->vt->connected(bi->b) : 1.0;
}

static int open_backend(struct sm_store *st, const struct sm_config *cfg, const char *name,
                        struct binst **out, char *err, size_t errlen)
{
    for (size_t i = 0; i < st->nbis; i++) {
        if (strcmp(st->bis[i].name, name) == 0) {
            *out = &st->bis[i];
            return 0;
        }
    }
    const struct sm_backend_vt *vt = backend_vt(name);
    if (!vt) {
        snprintf(
            err, errlen, "unknown storage backend '%s' (expected local, mesh, redis or raft%s)",
            name,
            (strcmp(name, "mesh") == 0 || strcmp(name, "redis") == 0 || strcmp(name, "raft") == 0)
                ? "; this one is not part of this build"
                : "");
        return SM_ECONFIG;
    }
    if (st->nbis == MAX_BACKENDS) {
        snprintf(err, errlen, "too many backends");
        return SM_ECONFIG;
    }
    struct binst *bi = &st->bis[st->nbis];
    memset(bi, 0, sizeof *bi);
    err[0] = '\0';
    int rc = vt->open(st, cfg, &bi->b, err, errlen);
    if (rc < 0) {
        if (!err[0]) snprintf(err, errlen, "%s backend: %s", name, sm_strerror(rc));
        return rc;
    }
    bi->b->vt = vt;
    bi->b->store = st;
    bi->name = vt->name;
    st->nbis++;
    char labels[64];
    snprintf(labels, sizeof labels, "storage_type=\"%s\"", vt->name);
    sm_metrics_gauge_fn(st->metrics, "statemesh_connection_status",
                        "Backend connection status (1 connected, 0 not)", labels, connected_gauge,
                        bi);
    *out = bi;
    return 0;
}

static void deliver_cb(struct ev_loop *loop, ev_check *w, int revents);
static void wake_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop, (void)w, (void)revents; /* only keeps the loop from blocking */
}

static int check_limit(const struct sm_config *cfg, const char *key, uint64_t def, uint64_t max,
                       uint64_t *out, char *err, size_t errlen)
{
    int rc = sm_cfg_u64(cfg, key, def, out, err, errlen);
    if (rc < 0) return rc;
    if (*out == 0 || *out > max) {
        snprintf(err, errlen, "option %s: %llu is out of range 1..%llu", key,
                 (unsigned long long)*out, (unsigned long long)max);
        return SM_ECONFIG;
    }
    return 0;
}

/* data_dir is shared: backends that persist (raft, mesh) read it themselves. */
static const char *const front_opts[] = {"node_id",     "storage",  "max_key", "max_value",
                                         "watch_queue", "data_dir", NULL};

static int reject_unknown(const char *key, const char *value, void *arg)
{
    (void)value;
    char **bad = arg;
    if (strchr(key, '.')) return 0; /* backend options: each backend validates its own */
    for (size_t i = 0; front_opts[i]; i++)
        if (strcmp(key, front_opts[i]) == 0) return 0;
    *bad = (char *)key;
    return 1;
}

SM_API int sm_store_new(struct ev_loop *loop, const struct sm_config *cfg, struct sm_store **out,
                        char *errbuf, size_t errbuf_len)
{
    char err[512];
    err[0] = '\0';
    int rc;
    struct sm_store *st = NULL;
    if (!loop || !cfg || !out) {
        snprintf(err, sizeof err, "sm_store_new: loop, cfg and out are required");
        rc = SM_EINVAL;
        goto fail;
    }
    *out = NULL;
    char *bad = NULL;
    if (sm_cfg_foreach(cfg, "", reject_unknown, &bad)) {
        snprintf(err, sizeof err, "unknown option '%s'", bad);
        rc = SM_ECONFIG;
        goto fail;
    }
    st = calloc(1, sizeof *st);
    if (!st) {
        rc = SM_ENOMEM;
        goto fail;
    }
    st->loop = loop;
    st->metrics = sm_metrics_new();
    if (!st->metrics) {
        rc = SM_ENOMEM;
        goto fail;
    }
    const char *node = sm_config_get(cfg, "node_id");
    char host[256];
    if (!node) {
        if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "node");
        host[sizeof host - 1] = '\0';
        node = host;
    }
    if (!*node || strlen(node) > SM_MAX_NODE_ID) {
        snprintf(err, sizeof err, "option node_id: must be 1..%d bytes", SM_MAX_NODE_ID);
        rc = SM_ECONFIG;
        goto fail;
    }
    snprintf(st->node_id, sizeof st->node_id, "%s", node);
    uint64_t v;
    if ((rc = check_limit(cfg, "max_key", SM_DEFAULT_MAX_KEY, 65535, &v, err, sizeof err)) < 0)
        goto fail;
    st->max_key = v;
    if ((rc = check_limit(cfg, "max_value", SM_DEFAULT_MAX_VALUE, 64u << 20, &v, err, sizeof err)) <
        0)
        goto fail;
    st->max_value = v;
    if ((rc = check_limit(cfg, "watch_queue", 1024, 1u << 24, &v, err, sizeof err)) < 0) goto fail;
    st->watch_queue = v;

    const char *dname = sm_cfg_str(cfg, "storage", "local");
    if ((rc = open_backend(st, cfg, dname, &st->dflt, err, sizeof err)) < 0) goto fail;
    size_t nr = sm_cfg_nroutes(cfg);
    if (nr) {
        st->routes = calloc(nr, sizeof *st->routes);
        if (!st->routes) {
            rc = SM_ENOMEM;
            goto fail;
        }
    }
    for (size_t i = 0; i < nr; i++) {
        const char *p, *bname;
        sm_cfg_route_at(cfg, i, &p, &bname);
        struct binst *bi;
        if ((rc = open_backend(st, cfg, bname, &bi, err, sizeof err)) < 0) goto fail;
        st->routes[i].prefix = sm_strdup(p);
        if (!st->routes[i].prefix) {
            rc = SM_ENOMEM;
            goto fail;
        }
        st->routes[i].len = strlen(p);
        st->routes[i].bi = bi;
        st->nroutes++;
    }
    ev_idle_init(&st->wake, wake_cb);
    ev_check_init(&st->deliver, deliver_cb);
    st->deliver.data = st;
    ev_check_start(loop, &st->deliver);
    ev_unref(loop); /* the delivery watcher alone must not keep the loop alive */
    static const char *const tnames[5] = {"", "set", "delete", "expire", "overflow"};
    for (int i = 1; i < 5; i++) {
        char l[32];
        snprintf(l, sizeof l, "type=\"%s\"", tnames[i]);
        st->events_total[i] =
            sm_metrics_counter(st->metrics, "statemesh_sync_events_total",
                               "Change events seen by this node (local and remote), by type", l);
    }
    st->overflow_total = sm_metrics_counter(st->metrics, "statemesh_watch_overflows_total",
                                            "Watch events dropped because a queue was full", "");
    *out = st;
    return 0;
fail:
    if (errbuf && errbuf_len) snprintf(errbuf, errbuf_len, "%s", err[0] ? err : sm_strerror(rc));
    if (st) sm_store_delete(st);
    return rc;
}

static void watch_free(struct sm_watch *w);

SM_API void sm_store_delete(struct sm_store *st)
{
    if (!st) return;
    st->closing = true;
    for (size_t i = st->nbis; i-- > 0;)
        if (st->bis[i].b) st->bis[i].b->vt->close(st->bis[i].b);
    while (st->watches) watch_free(st->watches);
    if (ev_is_active(&st->deliver)) {
        ev_ref(st->loop);
        ev_check_stop(st->loop, &st->deliver);
    }
    ev_idle_stop(st->loop, &st->wake);
    for (size_t i = 0; i < st->nroutes; i++) free(st->routes[i].prefix);
    free(st->routes);
    for (size_t i = 0; i < st->nchunks; i++) free(st->ctx_chunks[i]);
    free(st->ctx_chunks);
    sm_metrics_delete(st->metrics);
    free(st);
}

/* ---- routing and validation ---- */

static struct binst *route(const struct sm_store *st, const char *key)
{
    struct binst *best = st->dflt;
    size_t blen = 0;
    for (size_t i = 0; i < st->nroutes; i++) {
        const struct route *r = &st->routes[i];
        if (r->len >= blen && strncmp(key, r->prefix, r->len) == 0) {
            best = r->bi;
            blen = r->len;
        }
    }
    return best;
}

static int check_key(struct sm_store *st, const char *key)
{
    if (!key) return sm_store_seterr(st, SM_EINVAL, "key is NULL");
    size_t n = strlen(key);
    if (n == 0) return sm_store_seterr(st, SM_EEMPTYKEY, "key is empty");
    if (n > st->max_key)
        return sm_store_seterr(st, SM_EKEYLEN, "key is %zu bytes; the limit is %zu", n,
                               st->max_key);
    return 0;
}

static int check_value(struct sm_store *st, const void *v, size_t len, uint64_t ttl_ms)
{
    if (!v && len) return sm_store_seterr(st, SM_EINVAL, "value is NULL with length %zu", len);
    if (len > st->max_value)
        return sm_store_seterr(st, SM_EVALUELEN, "value is %zu bytes; the limit is %zu", len,
                               st->max_value);
    if (ttl_ms > SM_MAX_TTL_MS)
        return sm_store_seterr(st, SM_ETTL, "TTL %llu ms exceeds the maximum (%llu ms)",
                               (unsigned long long)ttl_ms, (unsigned long long)SM_MAX_TTL_MS);
    return 0;
}

/* ---- operation contexts and metrics ---- */

static struct opctx *ctx_get(struct sm_store *st)
{
    if (!st->free_ctx) {
        enum { CHUNK = 256 };
        void **nc = realloc(st->ctx_chunks, (st->nchunks + 1) * sizeof *nc);
        if (!nc) return NULL;
        st->ctx_chunks = nc;
        struct opctx *c = calloc(CHUNK, sizeof *c);
        if (!c) return NULL;
        st->ctx_chunks[st->nchunks++] = c;
        for (size_t i = 0; i < CHUNK; i++) {
            c[i].next = st->free_ctx;
            st->free_ctx = &c[i];
        }
    }
    struct opctx *c = st->free_ctx;
    st->free_ctx = c->next;
    return c;
}

static void count_op(struct sm_store *st, struct binst *bi, enum op_kind op, int status,
                     uint64_t t0)
{
    int r = status < 0 && status != SM_ENOTFOUND ? 1 : 0;
    if (!bi->ops[op][r]) {
        char l[160];
        snprintf(l, sizeof l, "storage_type=\"%s\",operation=\"%s\",result=\"%s\"", bi->name,
                 op_names[op], r ? "error" : "ok");
        bi->ops[op][r] = sm_metrics_counter(st->metrics, "statemesh_operations_total",
                                            "Store operations by backend, operation and result", l);
    }
    if (bi->ops[op][r]) (*bi->ops[op][r])++;
    if (t0) {
        if (!bi->dur[op]) {
            char l[128];
            snprintf(l, sizeof l, "storage_type=\"%s\",operation=\"%s\"", bi->name, op_names[op]);
            bi->dur[op] = sm_metrics_hist(st->metrics, "statemesh_operation_duration_seconds",
                                          "Store operation latency", l, sm_op_duration_buckets,
                                          sm_op_duration_nbuckets);
        }
        sm_hist_observe(bi->dur[op], (double)(sm_mono_ns() - t0) / 1e9);
    }
}

static void op_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    struct opctx *c = arg;
    struct sm_store *st = c->st;
    sm_cb cb = c->cb;
    void *uarg = c->arg;
    struct sm_result one;
    if (c->op == OP_GET && status == 0 && res && res->n_entries == 1) {
        /* a single get reports a missing key in its status */
        one = *res;
        one.version = res->entries[0].version;
        if (res->entries[0].status < 0) {
            status = res->entries[0].status;
            one.errmsg = sm_strerror(status);
        }
        res = &one;
    }
    count_op(st, c->bi, c->op, status, c->t0);
    c->next = st->free_ctx;
    st->free_ctx = c;
    if (status < 0 && res && !res->errmsg) {
        struct sm_result r2 = *res;
        r2.errmsg = st->errmsg;
        cb(s, status, &r2, uarg);
        return;
    }
    if (status < 0 && !res) {
        struct sm_result r2 = {.errmsg = sm_strerror(status)};
        cb(s, status, &r2, uarg);
        return;
    }
    cb(s, status, res, uarg);
}

/* Start an op: returns the context to pass as the backend's callback arg. */
static struct opctx *op_begin(struct sm_store *st, struct binst *bi, enum op_kind op, sm_cb cb,
                              void *arg)
{
    struct opctx *c = ctx_get(st);
    if (!c) return NULL;
    c->st = st;
    c->bi = bi;
    c->cb = cb;
    c->arg = arg;
    c->op = op;
    c->t0 = sm_mono_ns();
    return c;
}

static int op_refused(struct sm_store *st, struct opctx *c, int rc)
{
    count_op(st, c->bi, c->op, rc, 0);
    c->next = st->free_ctx;
    st->free_ctx = c;
    return rc;
}

#define PRECHECK(st, cb)                                                                           \
    do {                                                                                           \
        if (!(st)) return SM_EINVAL;                                                               \
        if ((st)->closing) return sm_store_seterr((st), SM_ECLOSED, "store is closing");           \
        if (!(cb)) return sm_store_seterr((st), SM_EINVAL, "a completion callback is required");   \
    } while (0)

#define NOTSUP(st, bi, what)                                                                       \
    sm_store_seterr((st), SM_ENOTSUP, "the %s backend does not support %s", (bi)->name, (what))

/* ---- key/value ---- */

SM_API int sm_get(struct sm_store *st, const char *key, sm_cb cb, void *arg)
{
    PRECHECK(st, cb);
    int rc = check_key(st, key);
    if (rc < 0) return rc;
    struct binst *bi = route(st, key);
    struct opctx *c = op_begin(st, bi, OP_GET, cb, arg);
    if (!c) return SM_ENOMEM;
    rc = bi->b->vt->get_multi(bi->b, &key, 1, op_done, c);
    return rc < 0 ? op_refused(st, c, rc) : 0;
}

SM_API int sm_get_now(struct sm_store *st, const char *key, struct sm_entry *out)
{
    if (!st || !out) return SM_EINVAL;
    int rc = check_key(st, key);
    if (rc < 0) return rc;
    struct binst *bi = route(st, key);
    if (!bi->b->vt->get_now) return NOTSUP(st, bi, "synchronous local reads");
    rc = bi->b->vt->get_now(bi->b, key, out);
    count_op(st, bi, OP_GET, rc, 0);
    return rc;
}

SM_API int sm_set(struct sm_store *st, const char *key, const void *value, size_t len,
                  uint64_t ttl_ms, sm_cb cb, void *arg)
{
    PRECHECK(st, cb);
    int rc = check_key(st, key);
    if (rc < 0 || (rc = check_value(st, value, len, ttl_ms)) < 0) return rc;
    struct binst *bi = route(st, key);
    struct opctx *c = op_begin(st, bi, OP_SET, cb, arg);
    if (!c) return SM_ENOMEM;
    struct sm_kv kv = {.key = key, .value = value, .value_len = len, .ttl_ms = ttl_ms};
    rc = bi->b->vt->set_multi(bi->b, &kv, 1, op_done, c);
    return rc < 0 ? op_refused(st, c, rc) : 0;
}

SM_API int sm_del(struct sm_store *st, const char *key, sm_cb cb, void *arg)
{
    PRECHECK(st, cb);
    int rc = check_key(st, key);
    if (rc < 0) return rc;
    struct binst *bi = route(st, key);
    struct opctx *c = op_begin(st, bi, OP_DEL, cb, arg);
    if (!c) return SM_ENOMEM;
    rc = bi->b->vt->del(bi->b, key, op_done, c);
    return rc < 0 ? op_refused(st, c, rc) : 0;
}

/* Multi-key operations whose keys span backends are split, one sub-operation
 * per backend, and gathered here; results keep the caller's order. */
struct gather {
    struct sm_store *st;
    sm_cb cb;
    void *arg;
    size_t n, pending;
    int status;
    uint64_t version;
    struct sm_entry *entries; /* get_multi: deep copies */
    size_t **idx;             /* per sub-op: positions in the caller's order */
    size_t nsub;
    char errmsg[512];
};

struct gsub {
    struct gather *g;
    size_t *pos;
    size_t n;
};

static void gather_finish(struct gather *g)
{
    struct sm_result r = {.entries = g->entries,
                          .n_entries = g->entries ? g->n : 0,
                          .version = g->version,
                          .errmsg = g->status < 0 ? g->errmsg : NULL};
    g->cb(g->st, g->status, &r, g->arg);
    if (g->entries) {
        for (size_t i = 0; i < g->n; i++) free((void *)g->entries[i].key);
        free(g->entries);
    }
    free(g);
}

static void gather_sub_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct gsub *sub = arg;
    struct gather *g = sub->g;
    if (status < 0 && g->status == 0) {
        g->status = status;
        snprintf(g->errmsg, sizeof g->errmsg, "%s",
                 res && res->errmsg ? res->errmsg : sm_strerror(status));
    }
    if (status == 0 && res) {
        if (res->version > g->version) g->version = res->version;
        if (g->entries && res->entries) {
            for (size_t i = 0; i < sub->n && i < res->n_entries; i++) {
                const struct sm_entry *e = &res->entries[i];
                struct sm_entry *d = &g->entries[sub->pos[i]];
                size_t kl = strlen(e->key) + 1, ol = e->origin ? strlen(e->origin) + 1 : 1;
                char *mem = malloc(kl + ol + e->value_len + 1);
                if (!mem) {
                    g->status = SM_ENOMEM;
                    snprintf(g->errmsg, sizeof g->errmsg, "out of memory");
                    continue;
                }
                *d = *e;
                memcpy(mem, e->key, kl);
                memcpy(mem + kl, e->origin ? e->origin : "", ol);
                if (e->value) memcpy(mem + kl + ol, e->value, e->value_len);
                d->key = mem;
                d->origin = mem + kl;
                d->value = e->value ? mem + kl + ol : NULL;
            }
        }
    }
    free(sub->pos);
    free(sub);
    if (--g->pending == 0) {
        if (g->status < 0 && g->entries) {
            /* partial results are not handed out on error */
        }
        gather_finish(g);
    }
}

static bool single_backend(struct sm_store *st, const char *const *keys, size_t n,
                           struct binst **out)
{
    struct binst *first = route(st, keys[0]);
    for (size_t i = 1; i < n; i++)
        if (route(st, keys[i]) != first) return false;
    *out = first;
    return true;
}

static int multi_split(struct sm_store *st, bool is_get, const char *const *keys,
                       const struct sm_kv *items, size_t n, sm_cb cb, void *arg)
{
    struct gather *g = calloc(1, sizeof *g);
    if (!g) return SM_ENOMEM;
    g->st = st;
    g->cb = cb;
    g->arg = arg;
    g->n = n;
    if (is_get) {
        g->entries = calloc(n, sizeof *g->entries);
        if (!g->entries) {
            free(g);
            return SM_ENOMEM;
        }
    }
    /* Group by backend instance; issue one sub-op per backend. */
    g->pending = 1; /* guard until every sub-op is issued */
    for (size_t b = 0; b < st->nbis; b++) {
        struct binst *bi = &st->bis[b];
        size_t cnt = 0;
        for (size_t i = 0; i < n; i++)
            if (route(st, is_get ? keys[i] : items[i].key) == bi) cnt++;
        if (!cnt) continue;
        struct gsub *sub = calloc(1, sizeof *sub);
        size_t *pos = malloc(cnt * sizeof *pos);
        const char **sk = is_get ? malloc(cnt * sizeof *sk) : NULL;
        struct sm_kv *si = is_get ? NULL : malloc(cnt * sizeof *si);
        if (!sub || !pos || (is_get && !sk) || (!is_get && !si)) {
            free(sub), free(pos), free(sk), free(si);
            g->status = SM_ENOMEM;
            snprintf(g->errmsg, sizeof g->errmsg, "out of memory");
            break;
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (route(st, is_get ? keys[i] : items[i].key) != bi) continue;
            pos[k] = i;
            if (is_get)
                sk[k] = keys[i];
            else
                si[k] = items[i];
            k++;
        }
        sub->g = g;
        sub->pos = pos;
        sub->n = cnt;
        struct opctx *c =
            op_begin(st, bi, is_get ? OP_GET_MULTI : OP_SET_MULTI, gather_sub_done, sub);
        int rc = c ? (is_get ? bi->b->vt->get_multi(bi->b, sk, cnt, op_done, c)
                             : bi->b->vt->set_multi(bi->b, si, cnt, op_done, c))
                   : SM_ENOMEM;
        free(sk);
        free(si);
        if (rc < 0) {
            if (c) op_refused(st, c, rc);
            free(pos);
            free(sub);
            g->status = rc;
            snprintf(g->errmsg, sizeof g->errmsg, "%s", st->errmsg);
            break;
        }
        g->pending++;
    }
    if (--g->pending == 0) {
        /* nothing was issued (error before the first sub-op) */
        int rc = g->status < 0 ? g->status : SM_EINVAL;
        free(g->entries);
        free(g);
        return rc;
    }
    return 0;
}

SM_API int sm_get_multi(struct sm_store *st, const char *const *keys, size_t n, sm_cb cb, void *arg)
{
    PRECHECK(st, cb);
    if (!keys || n == 0) return sm_store_seterr(st, SM_EINVAL, "no keys given");
    for (size_t i = 0; i < n; i++) {
        int rc = check_key(st, keys[i]);
        if (rc < 0) return rc;
    }
    struct binst *bi;
    if (!single_backend(st, keys, n, &bi)) return multi_split(st, true, keys, NULL, n, cb, arg);
    struct opctx *c = op_begin(st, bi, OP_GET_MULTI, cb, arg);
    if (!c) return SM_ENOMEM;
    int rc = bi->b->vt->get_multi(bi->b, keys, n, op_done, c);
    return rc < 0 ? op_refused(st, c, rc) : 0;
}

SM_API int sm_set_multi(struct sm_store *st, const struct sm_kv *items, size_t n, sm_cb cb,
                        void *arg)
{
    PRECHECK(st, cb);
    if (!items || n == 0) return sm_store_seterr(st, SM_EINVAL, "no items given");
    const char **keys = malloc(n * sizeof *keys);
    if (!keys) return SM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = check_key(st, items[i].key);
        if (rc == 0) rc = check_value(st, items[i].value, items[i].value_len, items[i].ttl_ms);
        if (rc < 0) {
            free(keys);
            return rc;
        }
        keys[i] = items[i].key;
    }
    struct binst *bi;
    bool single = single_backend(st, keys, n, &bi);
    free(keys);
    if (!single) return multi_split(st, false, NULL, items, n, cb, arg);
    struct opctx *c = op_begin(st, bi, OP_SET_MULTI, cb, arg);
    if (!c) return SM_ENOMEM;
    int rc = bi->b->vt->set_multi(bi->b, items, n, op_done, c);
    return rc < 0 ? op_refused(st, c, rc) : 0;
}

/* Ping fans out to every backend; the first error wins. */
struct pingg {
    struct sm_store *st;
    sm_cb cb;
    void *arg;
    size_t pending;
    int status;
    char errmsg[512];
};

static void ping_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    struct pingg *p = arg;
    if (status < 0 && p->status == 0) {
        p->status = status;
        snprintf(p->errmsg, sizeof p->errmsg, "%s",
                 res && res->errmsg ? res->errmsg : sm_strerror(status));
    }
    if (--p->pending) return;
    struct sm_result r = {.errmsg = p->status < 0 ? p->errmsg : NULL};
    p->cb(s, p->status, &r, p->arg);
    free(p);
}

SM_API int sm_ping(struct sm_store *st, sm_cb cb, void *arg)
{
    PRECHECK(st, cb);
    struct pingg *p = calloc(1, sizeof *p);
    if (!p) return SM_ENOMEM;
    p->st = st;
    p->cb = cb;
    p->arg = arg;
    p->pending = 1;
    for (size_t i = 0; i < st->nbis; i++) {
        struct binst *bi = &st->bis[i];
        struct opctx *c = op_begin(st, bi, OP_PING, ping_done, p);
        int rc = c ? bi->b->vt->ping(bi->b, op_done, c) : SM_ENOMEM;
        if (rc < 0) {
            if (c) op_refused(st, c, rc);
            if (p->status == 0) {
                p->status = rc;
                snprintf(p->errmsg, sizeof p->errmsg, "%s", st->errmsg);
            }
            continue;
        }
        p->pending++;
    }
    if (--p->pending == 0) {
        int rc = p->status;
        free(p);
        return rc < 0 ? rc : SM_EINVAL;
    }
    return 0;
}

struct list_ctx {
    struct sm_store *st;
    struct binst *bi;
    sm_list_fn fn;
    void *arg;
};

static int list_filter(const struct sm_entry *e, void *arg)
{
    struct list_ctx *lc = arg;
    if (route(lc->st, e->key) != lc->bi) return 0; /* shadowed by a route elsewhere */
    return lc->fn(e, lc->arg);
}

SM_API int sm_list(struct sm_store *st, const char *prefix, sm_list_fn fn, void *arg)
{
    if (!st || !fn) return SM_EINVAL;
    if (!prefix) prefix = "";
    bool any = false;
    for (size_t i = 0; i < st->nbis; i++) {
        struct binst *bi = &st->bis[i];
        if (!bi->b->vt->list) continue;
        any = true;
        struct list_ctx lc = {st, bi, fn, arg};
        int rc = bi->b->vt->list(bi->b, prefix, st->nbis > 1 ? list_filter : fn,
                                 st->nbis > 1 ? (void *)&lc : arg);
        if (rc) return rc;
    }
    return any ? 0 : NOTSUP(st, st->dflt, "listing");
}

/* ---- per-node counters ---- */

static int counter_prefix(struct sm_store *st, const char *base, const char *name, char *buf,
                          size_t cap)
{
    if (!base || !name || !*name)
        return sm_store_seterr(st, SM_EINVAL, "counter base and name are required");
    int n = snprintf(buf, cap, "%s%s/", base, name);
    if (n < 0 || (size_t)n + 1 >= cap || (size_t)n + strlen(st->node_id) > st->max_key)
        return sm_store_seterr(st, SM_EKEYLEN, "counter key '%s%s/%s' is too long", base, name,
                               st->node_id);
    return 0;
}

SM_API int sm_counter_add(struct sm_store *st, const char *base, const char *name, int64_t delta,
                          sm_cb cb, void *arg)
{
    PRECHECK(st, cb);
    char key[1024];
    int rc = counter_prefix(st, base, name, key, sizeof key);
    if (rc < 0) return rc;
    strncat(key, st->node_id, sizeof key - strlen(key) - 1);
    /* Only this node writes its slot, so read-modify-write is race-free. */
    int64_t cur = 0;
    struct sm_entry e;
    rc = sm_get_now(st, key, &e);
    if (rc == 0 && crdt_counter_parse(e.value, e.value_len, &cur) < 0)
        cur = 0;
    else if (rc < 0 && rc != SM_ENOTFOUND)
        return rc;
    uint8_t buf[9];
    size_t n = crdt_counter_encode(cur + delta, buf);
    return sm_set(st, key, buf, n, 0, cb, arg);
}

SM_API int sm_counter_sum(struct sm_store *st, const char *base, const char *name, int64_t *out)
{
    if (!st || !out) return SM_EINVAL;
    char prefix[1024];
    int rc = counter_prefix(st, base, name, prefix, sizeof prefix);
    if (rc < 0) return rc;
    struct binst *bi = route(st, prefix);
    if (!bi->b->vt->counter_sum) return NOTSUP(st, bi, "per-node counters");
    return bi->b->vt->counter_sum(bi->b, prefix, out);
}

/* ---- locks ---- */

SM_API int sm_lock_acquire(struct sm_store *st, const char *name, uint64_t ttl_ms, sm_cb cb,
                           void *arg)
{
    PRECHECK(st, cb);
    int rc = check_key(st, name);
    if (rc < 0) return rc;
    if (ttl_ms == 0 || ttl_ms > SM_MAX_TTL_MS)
        return sm_store_seterr(st, SM_ETTL, "lock TTL must be 1 ms .. %llu ms",
                               (unsigned long long)SM_MAX_TTL_MS);
    struct binst *bi = route(st, name);
    if (!bi->b->vt->lock_acquire) return NOTSUP(st, bi, "locks (use redis or raft)");
    struct opctx *c = op_begin(st, bi, OP_LOCK_ACQUIRE, cb, arg);
    if (!c) return SM_ENOMEM;
    rc = bi->b->vt->lock_acquire(bi->b, name, ttl_ms, op_done, c);
    return rc < 0 ? op_refused(st, c, rc) : 0;
}

SM_API int sm_lock_renew(struct sm_store *st, const char *name, const char *token, uint64_t ttl_ms,
                         sm_cb cb, void *arg)
{
    PRECHECK(st, cb);
    int rc = check_key(st, name);
    if (rc < 0) return rc;
    if (!token || !*token) return sm_store_seterr(st, SM_EINVAL, "lock token is empty");
    if (ttl_ms == 0 || ttl_ms > SM_MAX_TTL_MS)
        return sm_store_seterr(st, SM_ETTL, "lock TTL must be 1 ms .. %llu ms",
                               (unsigned long long)SM_MAX_TTL_MS);
    struct binst *bi = route(st, name);
    if (!bi->b->vt->lock_renew) return NOTSUP(st, bi, "locks (use redis or raft)");
    struct opctx *c = op_begin(st, bi, OP_LOCK_RENEW, cb, arg);
    if (!c) return SM_ENOMEM;
    rc = bi->b->vt->lock_renew(bi->b, name, token, ttl_ms, op_done, c);
    return rc < 0 ? op_refused(st, c, rc) : 0;
}

SM_API int sm_lock_release(struct sm_store *st, const char *name, const char *token, sm_cb cb,
                           void *arg)
{
    PRECHECK(st, cb);
    int rc = check_key(st, name);
    if (rc < 0) return rc;
    if (!token || !*token) return sm_store_seterr(st, SM_EINVAL, "lock token is empty");
    struct binst *bi = route(st, name);
    if (!bi->b->vt->lock_release) return NOTSUP(st, bi, "locks (use redis or raft)");
    struct opctx *c = op_begin(st, bi, OP_LOCK_RELEASE, cb, arg);
    if (!c) return SM_ENOMEM;
    rc = bi->b->vt->lock_release(bi->b, name, token, op_done, c);
    return rc < 0 ? op_refused(st, c, rc) : 0;
}

/* ---- members ---- */

SM_API int sm_members(struct sm_store *st, sm_member_fn fn, void *arg)
{
    if (!st || !fn) return SM_EINVAL;
    for (size_t i = 0; i < st->nbis; i++)
        if (st->bis[i].b->vt->members) return st->bis[i].b->vt->members(st->bis[i].b, fn, arg);
    return sm_store_seterr(st, SM_ENOTSUP, "membership needs the mesh backend");
}

SM_API void sm_on_member(struct sm_store *st, sm_member_cb cb, void *arg)
{
    st->member_cb = cb;
    st->member_arg = arg;
}

void sm_store_member_event(struct sm_store *st, const struct sm_member *m)
{
    if (st->member_cb) st->member_cb(st, m, st->member_arg);
}

SM_API const char *sm_member_state_name(enum sm_member_state s)
{
    switch (s) {
    case SM_MEMBER_ALIVE:
        return "alive";
    case SM_MEMBER_SUSPECT:
        return "suspect";
    case SM_MEMBER_DEAD:
        return "dead";
    case SM_MEMBER_LEFT:
        return "left";
    }
    return "unknown";
}

SM_API int sm_store_reload_keyring(struct sm_store *st, const char *keyring, char *err,
                                   size_t errlen)
{
    if (!st || !keyring) return SM_EINVAL;
    for (size_t i = 0; i < st->nbis; i++)
        if (st->bis[i].b->vt->reload_keyring)
            return st->bis[i].b->vt->reload_keyring(st->bis[i].b, keyring, err, errlen);
    if (err) snprintf(err, errlen, "no backend of this store uses a keyring (mesh only)");
    return SM_ENOTSUP;
}

SM_API char *sm_metrics_render(struct sm_store *st)
{
    return st ? sm_metrics_render_text(st->metrics) : NULL;
}

/* ---- watch ---- */

SM_API int sm_watch(struct sm_store *st, const char *prefix, sm_watch_cb cb, void *arg,
                    struct sm_watch **out)
{
    if (!st || !cb || !out) return SM_EINVAL;
    if (st->closing) return sm_store_seterr(st, SM_ECLOSED, "store is closing");
    if (!prefix) prefix = "";
    struct sm_watch *w = calloc(1, sizeof *w);
    if (!w) return SM_ENOMEM;
    w->prefix = sm_strdup(prefix);
    w->q = calloc(st->watch_queue, sizeof *w->q);
    if (!w->prefix || !w->q) {
        free(w->prefix);
        free(w->q);
        free(w);
        return SM_ENOMEM;
    }
    w->st = st;
    w->plen = strlen(prefix);
    w->cb = cb;
    w->arg = arg;
    w->cap = st->watch_queue;
    w->next = st->watches;
    if (st->watches) st->watches->prev = w;
    st->watches = w;
    *out = w;
    return 0;
}

static void watch_free(struct sm_watch *w)
{
    struct sm_store *st = w->st;
    if (w->prev)
        w->prev->next = w->next;
    else
        st->watches = w->next;
    if (w->next) w->next->prev = w->prev;
    for (size_t i = 0; i < w->count; i++) free(w->q[(w->head + i) % w->cap]);
    free(w->q);
    free(w->prefix);
    free(w);
}

SM_API void sm_unwatch(struct sm_watch *w)
{
    if (!w) return;
    if (w->st->in_delivery) {
        w->removed = true; /* freed by the delivery loop once callbacks return */
        return;
    }
    watch_free(w);
}

SM_API uint64_t sm_watch_dropped(const struct sm_watch *w)
{
    return w ? w->dropped_total : 0;
}

void sm_store_emit(struct sm_store *st, const struct sm_event *ev)
{
    if (ev->type >= 1 && ev->type <= 4 && st->events_total[ev->type])
        (*st->events_total[ev->type])++;
    size_t klen = strlen(ev->key);
    const char *origin = ev->origin ? ev->origin : "";
    bool queued = false;
    for (struct sm_watch *w = st->watches; w; w = w->next) {
        if (w->removed || klen < w->plen || memcmp(ev->key, w->prefix, w->plen) != 0) continue;
        if (w->count == w->cap) {
            w->dropped_pending++;
            w->dropped_total++;
            if (st->overflow_total) (*st->overflow_total)++;
            queued = true;
            continue;
        }
        size_t ol = strlen(origin);
        struct evq *q = malloc(sizeof *q + klen + 1 + ol + 1 + ev->value_len);
        if (!q) {
            w->dropped_pending++;
            w->dropped_total++;
            continue;
        }
        q->ev = *ev;
        memcpy(q->data, ev->key, klen + 1);
        memcpy(q->data + klen + 1, origin, ol + 1);
        q->ev.key = q->data;
        q->ev.origin = q->data + klen + 1;
        if (ev->value && ev->value_len) {
            memcpy(q->data + klen + ol + 2, ev->value, ev->value_len);
            q->ev.value = q->data + klen + ol + 2;
        } else {
            q->ev.value = NULL;
        }
        w->q[(w->head + w->count) % w->cap] = q;
        w->count++;
        queued = true;
    }
    if (queued && !ev_is_active(&st->wake)) ev_idle_start(st->loop, &st->wake);
}

static void deliver_cb(struct ev_loop *loop, ev_check *chk, int revents)
{
    (void)revents;
    struct sm_store *st = chk->data;
    if (!ev_is_active(&st->wake)) return;
    ev_idle_stop(loop, &st->wake);
    /* Deliver what is queued now; events emitted by callbacks wait a turn. */
    st->in_delivery = true;
    bool more = false;
    for (struct sm_watch *w = st->watches; w; w = w->next) {
        size_t n = w->count;
        for (size_t i = 0; !w->removed;) {
            if (w->dropped_pending) {
                struct sm_event ov = {.type = SM_EVENT_OVERFLOW,
                                      .key = "",
                                      .origin = "",
                                      .dropped = w->dropped_pending};
                w->dropped_pending = 0;
                w->cb(w, &ov, w->arg);
                continue;
            }
            if (!w->count || i >= n) break;
            struct evq *q = w->q[w->head];
            w->head = (w->head + 1) % w->cap;
            w->count--;
            i++;
            w->cb(w, &q->ev, w->arg);
            free(q);
        }
        if (!w->removed && (w->count || w->dropped_pending)) more = true;
    }
    st->in_delivery = false;
    for (struct sm_watch *w = st->watches, *next; w; w = next) {
        next = w->next;
        if (w->removed) watch_free(w);
    }
    if (more) ev_idle_start(loop, &st->wake);
}
