/* api.c: the statemeshd HTTP/JSON API (kv, watch, members, locks, status, metrics). */
#include "config.h"

#include "api.h"

#include "backend.h"
#include "crdt/resolver.h"
#include "metrics.h"
#include "models.h"
#include "raft_admin.h"
#include "statemesh.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ev.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_BODY  (64 * 1024)
#define DEFAULT_SSE_QUEUE 256
#define DEFAULT_HEARTBEAT 15000
#define DEFAULT_LOCK_TTL  10000

struct sse_item {
    char *buf;
    size_t len;
};

struct sse_client {
    struct smd_api *api;
    struct sse_client *prev, *next;
    struct sm_watch *w;
    struct smd_http_stream *stream;
    struct sse_item *q; /* ring of formatted events */
    size_t qcap, qhead, qlen, off;
    uint64_t dropped_pending; /* dropped since the last overflow notice */
};

struct smd_api {
    struct sm_store *store;
    struct sm_metrics *metrics; /* daemon metrics: HTTP, SSE */
    char *token;
    size_t max_body, sse_queue;
    uint64_t heartbeat_ms;
    char storage[32];
    uint64_t started_ms;
    struct sse_client *clients;
    size_t nclients;
    uint64_t *sse_dropped;
    ev_timer heartbeat;
    int detached;
};

/* ---- helpers ---- */

static void status_of(int err, unsigned *status, const char **code)
{
    switch (err) {
    case SM_ENOTFOUND:
        *status = 404, *code = "not_found";
        break;
    case SM_EEMPTYKEY:
    case SM_EKEYLEN:
        *status = 400, *code = "bad_key";
        break;
    case SM_EVALUELEN:
        *status = 413, *code = "value_too_large";
        break;
    case SM_ETTL:
        *status = 400, *code = "bad_ttl";
        break;
    case SM_EINVAL:
    case SM_ERANGE:
        *status = 400, *code = "bad_request";
        break;
    case SM_ENOTSUP:
        *status = 501, *code = "not_supported";
        break;
    case SM_ELOCKED:
        *status = 409, *code = "locked";
        break;
    case SM_ENOTOWNER:
        *status = 409, *code = "not_owner";
        break;
    case SM_ECLOSED:
    case SM_EUNAVAILABLE:
    case SM_ENOTLEADER:
    case SM_ENOQUORUM:
        *status = 503, *code = "unavailable";
        break;
    case SM_ETIMEOUT:
        *status = 504, *code = "timeout";
        break;
    default:
        *status = 500, *code = "internal";
        break;
    }
}

static void reply_err(struct smd_http_req *r, int err, const char *detail)
{
    unsigned st;
    const char *code;
    status_of(err, &st, &code);
    const char *msg = detail && *detail ? detail : sm_strerror(err);
    if (err == SM_ENOTSUP && (!detail || !*detail)) msg = "operation not supported by this backend";
    smd_http_error(r, st, code, "%s", msg);
}

static char *b64(const void *p, size_t n)
{
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc(cap);
    if (s) sodium_bin2base64(s, cap, p, n, sodium_base64_VARIANT_ORIGINAL);
    return s;
}

/* JSON numbers are doubles for many clients; ms times and versions stay
 * well below 2^53, so plain integers are safe. */
static json_t *entry_json(const struct sm_entry *e, int with_value)
{
    json_t *j =
        json_pack("{s:s,s:I,s:s,s:I,s:I,s:I}", "key", e->key, "version", (json_int_t)e->version,
                  "origin", e->origin ? e->origin : "", "time", (json_int_t)e->time_ms, "expires",
                  (json_int_t)e->expires_ms, "size", (json_int_t)e->value_len);
    if (j && with_value) {
        char *v = b64(e->value ? e->value : "", e->value_len);
        if (!v || json_object_set_new(j, "value", json_string(v)) < 0) {
            json_decref(j);
            j = NULL;
        }
        free(v);
    }
    return j;
}

static int parse_ttl(struct smd_http_req *r, uint64_t def, uint64_t *ttl)
{
    const char *t = smd_http_query(r, "ttl");
    *ttl = def;
    if (!t) return 0;
    if (!isdigit((unsigned char)t[0]) || sm_parse_duration_ms(t, ttl) < 0) {
        smd_http_error(r, 400, "bad_ttl", "bad ttl '%s' (use e.g. 500ms, 30s, 5m, 1h)", t);
        return -1;
    }
    if (*ttl > SM_MAX_TTL_MS) {
        smd_http_error(r, 400, "bad_ttl", "ttl '%s' is over the limit of ten years", t);
        return -1;
    }
    return 0;
}

static int bad_key_chars(const char *k)
{
    for (const unsigned char *p = (const unsigned char *)k; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return 1;
    return 0;
}

/* ---- /v1/kv ---- */

static void kv_get_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct smd_http_req *r = arg;
    if (status < 0) {
        reply_err(r, status, status == SM_ENOTFOUND ? "key not found" : res ? res->errmsg : NULL);
        return;
    }
    const struct sm_entry *e = &res->entries[0];
    char ver[24], exp[24], tm[24];
    snprintf(ver, sizeof ver, "%" PRIu64, e->version);
    snprintf(exp, sizeof exp, "%" PRId64, e->expires_ms);
    snprintf(tm, sizeof tm, "%" PRIu64, e->time_ms);
    const char *hdr[] = {"X-Statemesh-Version",
                         ver,
                         "X-Statemesh-Origin",
                         e->origin ? e->origin : "",
                         "X-Statemesh-Expires",
                         exp,
                         "X-Statemesh-Time",
                         tm,
                         NULL};
    smd_http_reply(r, 200, "application/octet-stream", e->value ? e->value : "", e->value_len, hdr);
}

static void kv_write_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct smd_http_req *r = arg;
    if (status < 0) {
        reply_err(r, status, res ? res->errmsg : NULL);
        return;
    }
    smd_http_reply_json(r, 200, json_pack("{s:I}", "version", (json_int_t)res->version), NULL);
}

static void kv_key(struct smd_api *api, struct smd_http_req *r, const char *key)
{
    const char *m = smd_http_method(r);
    if (bad_key_chars(key)) {
        smd_http_error(r, 400, "bad_key", "key contains control characters");
        return;
    }
    int rc;
    if (strcmp(m, "GET") == 0) {
        rc = sm_get(api->store, key, kv_get_done, r);
    } else if (strcmp(m, "PUT") == 0) {
        uint64_t ttl;
        if (parse_ttl(r, 0, &ttl) < 0) return;
        size_t len;
        const char *body = smd_http_body(r, &len);
        rc = sm_set(api->store, key, body, len, ttl, kv_write_done, r);
    } else {
        rc = sm_del(api->store, key, kv_write_done, r);
    }
    if (rc < 0) {
        if (rc == SM_EVALUELEN)
            smd_http_error(r, 413, "value_too_large", "value is over the limit of %zu bytes",
                           sm_store_max_value(api->store));
        else if (rc == SM_EKEYLEN)
            smd_http_error(r, 400, "bad_key", "key is over the limit of %zu bytes",
                           sm_store_max_key(api->store));
        else
            reply_err(r, rc, sm_errmsg(api->store));
        return;
    }
    smd_http_suspend(r);
}

struct listing {
    json_t **items;
    size_t n, cap;
    int oom;
};

static int list_one(const struct sm_entry *e, void *arg)
{
    struct listing *l = arg;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        json_t **ni = realloc(l->items, nc * sizeof *ni);
        if (!ni) return l->oom = 1;
        l->items = ni;
        l->cap = nc;
    }
    json_t *j = entry_json(e, 1);
    if (!j) return l->oom = 1;
    l->items[l->n++] = j;
    return 0;
}

static int by_key(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(json_string_value(json_object_get(x, "key")),
                  json_string_value(json_object_get(y, "key")));
}

static void kv_list(struct smd_api *api, struct smd_http_req *r)
{
    const char *prefix = smd_http_query(r, "prefix");
    if (!prefix) prefix = "";
    if (bad_key_chars(prefix)) {
        smd_http_error(r, 400, "bad_key", "prefix contains control characters");
        return;
    }
    struct listing l = {0};
    int rc = sm_list(api->store, prefix, list_one, &l);
    json_t *arr = NULL;
    if (rc < 0 || l.oom) {
        if (l.oom)
            smd_http_error(r, 500, "internal", "out of memory");
        else
            reply_err(r, rc, sm_errmsg(api->store));
        goto out;
    }
    qsort(l.items, l.n, sizeof *l.items, by_key);
    arr = json_array();
    for (size_t i = 0; arr && i < l.n; i++) {
        json_array_append_new(arr, l.items[i]);
        l.items[i] = NULL;
    }
    smd_http_reply_json(r, 200,
                        arr ? json_pack("{s:s,s:I,s:o}", "prefix", prefix, "count",
                                        (json_int_t)json_array_size(arr), "entries", arr)
                            : NULL,
                        NULL);
out:
    for (size_t i = 0; i < l.n; i++) json_decref(l.items[i]);
    free(l.items);
}

/* ---- /v1/watch (server-sent events) ---- */

static void sse_push(struct sse_client *c, char *buf, size_t len)
{
    if (c->qlen == c->qcap) {
        free(buf);
        c->dropped_pending++;
        (*c->api->sse_dropped)++;
        return;
    }
    c->q[(c->qhead + c->qlen) % c->qcap] = (struct sse_item){buf, len};
    c->qlen++;
}

static char *fmt_event(const char *type, json_t *j, size_t *len)
{
    char *data = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!data) return NULL;
    size_t n = strlen(data) + strlen(type) + 32;
    char *buf = malloc(n);
    if (buf) *len = (size_t)snprintf(buf, n, "event: %s\ndata: %s\n\n", type, data);
    free(data);
    return buf;
}

static void sse_overflow_notice(struct sse_client *c)
{
    /* keep one slot free for the notice so a consumer always learns of losses */
    if (!c->dropped_pending || c->qlen + 1 >= c->qcap) return;
    size_t len;
    char *buf = fmt_event(
        "overflow",
        json_pack("{s:s,s:I}", "type", "overflow", "dropped", (json_int_t)c->dropped_pending),
        &len);
    if (!buf) return;
    c->dropped_pending = 0;
    sse_push(c, buf, len);
}

static void sse_on_event(struct sm_watch *w, const struct sm_event *ev, void *arg)
{
    (void)w;
    struct sse_client *c = arg;
    if (ev->type == SM_EVENT_OVERFLOW) {
        c->dropped_pending += ev->dropped; /* the store's own queue overflowed */
        sse_overflow_notice(c);
        smd_http_stream_wake(c->stream);
        return;
    }
    static const char *const names[] = {"", "set", "delete", "expire"};
    const char *type = (unsigned)ev->type <= 3 ? names[ev->type] : "unknown";
    sse_overflow_notice(c);
    if (c->qlen + (c->dropped_pending ? 1 : 0) >= c->qcap) {
        c->dropped_pending++;
        (*c->api->sse_dropped)++;
        smd_http_stream_wake(c->stream);
        return;
    }
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:I}", "type", type, "key", ev->key, "version",
                          (json_int_t)ev->version, "origin", ev->origin ? ev->origin : "", "time",
                          (json_int_t)ev->time_ms);
    if (j && ev->type == SM_EVENT_SET) {
        char *v = b64(ev->value ? ev->value : "", ev->value_len);
        if (!v || json_object_set_new(j, "value", json_string(v)) < 0) {
            json_decref(j);
            j = NULL;
        }
        free(v);
    }
    size_t len;
    char *buf = fmt_event(type, j, &len);
    if (!buf) {
        c->dropped_pending++;
        (*c->api->sse_dropped)++;
        return;
    }
    sse_push(c, buf, len);
    smd_http_stream_wake(c->stream);
}

static ssize_t sse_read(void *arg, char *out, size_t max, int closing)
{
    struct sse_client *c = arg;
    size_t n = 0;
    sse_overflow_notice(c); /* the client is draining: tell it what it lost */
    while (c->qlen && n < max) {
        struct sse_item *it = &c->q[c->qhead];
        size_t k = it->len - c->off;
        if (k > max - n) k = max - n;
        memcpy(out + n, it->buf + c->off, k);
        n += k;
        c->off += k;
        if (c->off == it->len) {
            free(it->buf);
            c->qhead = (c->qhead + 1) % c->qcap;
            c->qlen--;
            c->off = 0;
        }
    }
    if (n) return (ssize_t)n;
    return closing || !c->w ? -1 : 0;
}

static void sse_free(void *arg)
{
    struct sse_client *c = arg;
    struct smd_api *api = c->api;
    if (c->w) sm_unwatch(c->w);
    while (c->qlen) {
        free(c->q[c->qhead].buf);
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
    }
    free(c->q);
    if (c->prev)
        c->prev->next = c->next;
    else
        api->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    api->nclients--;
    free(c);
}

static void watch_start(struct smd_api *api, struct smd_http_req *r)
{
    const char *prefix = smd_http_query(r, "prefix");
    if (!prefix) prefix = "";
    if (bad_key_chars(prefix)) {
        smd_http_error(r, 400, "bad_key", "prefix contains control characters");
        return;
    }
    struct sse_client *c = calloc(1, sizeof *c);
    if (!c || !(c->q = calloc(api->sse_queue, sizeof *c->q))) {
        free(c);
        smd_http_error(r, 500, "internal", "out of memory");
        return;
    }
    c->api = api;
    c->qcap = api->sse_queue;
    int rc = sm_watch(api->store, prefix, sse_on_event, c, &c->w);
    if (rc < 0) {
        free(c->q);
        free(c);
        reply_err(r, rc, sm_errmsg(api->store));
        return;
    }
    char *hello = sm_strdup(": watching\n\n");
    if (hello) sse_push(c, hello, strlen(hello));
    c->next = api->clients;
    if (c->next) c->next->prev = c;
    api->clients = c;
    api->nclients++;
    if (smd_http_reply_stream(r, "text/event-stream", sse_read, sse_free, c, NULL, &c->stream) <
        0) {
        sse_free(c);
        smd_http_error(r, 500, "internal", "out of memory");
    }
}

static void heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    struct smd_api *api = w->data;
    for (struct sse_client *c = api->clients; c; c = c->next) {
        if (c->qlen) continue;
        char *ping = sm_strdup(": ping\n\n");
        if (ping) sse_push(c, ping, strlen(ping));
        smd_http_stream_wake(c->stream);
    }
}

/* ---- /v1/members, /v1/status, /healthz, /metrics ---- */

struct memlist {
    json_t *arr;
    size_t counts[5];
    int oom;
};

static int member_one(const struct sm_member *m, void *arg)
{
    struct memlist *ml = arg;
    if ((unsigned)m->state < 5) ml->counts[m->state]++;
    if (!ml->arr) return 0;
    json_t *j = json_pack("{s:s,s:s,s:s,s:I,s:I}", "id", m->id, "address", m->addr ? m->addr : "",
                          "state", sm_member_state_name(m->state), "incarnation",
                          (json_int_t)m->incarnation, "last_change", (json_int_t)m->changed_ms);
    if (!j || json_array_append_new(ml->arr, j) < 0) return ml->oom = 1;
    return 0;
}

static void members(struct smd_api *api, struct smd_http_req *r)
{
    struct memlist ml = {.arr = json_array()};
    if (!ml.arr) {
        smd_http_error(r, 500, "internal", "out of memory");
        return;
    }
    int rc = sm_members(api->store, member_one, &ml);
    if (rc < 0 || ml.oom) {
        json_decref(ml.arr);
        if (rc == SM_ENOTSUP)
            smd_http_error(r, 501, "not_supported",
                           "membership needs the mesh backend (storage: mesh); this node runs "
                           "storage: %s",
                           api->storage);
        else
            reply_err(r, ml.oom ? SM_ENOMEM : rc, ml.oom ? "out of memory" : sm_errmsg(api->store));
        return;
    }
    smd_http_reply_json(
        r, 200, json_pack("{s:s,s:o}", "self", sm_store_node_id(api->store), "members", ml.arr),
        NULL);
}

static int count_one(const struct sm_entry *e, void *arg)
{
    (void)e;
    (*(size_t *)arg)++;
    return 0;
}

static void status_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    struct smd_http_req *r = arg;
    struct smd_api *api = smd_http_get_data(r);
    size_t nkeys = 0;
    int lrc = sm_list(s, "", count_one, &nkeys);
    struct memlist ml = {0};
    int mrc = sm_members(s, member_one, &ml);
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:I,s:I,s:b,s:I}", "node_id", sm_store_node_id(s), "version",
                  sm_version(), "storage", api->storage, "started", (json_int_t)api->started_ms,
                  "uptime_ms", (json_int_t)(sm_wall_ms() - api->started_ms), "backend_ok",
                  status == 0, "sse_clients", (json_int_t)api->nclients);
    if (!j) {
        smd_http_error(r, 500, "internal", "out of memory");
        return;
    }
    if (status < 0)
        json_object_set_new(j, "backend_error",
                            json_string(res && res->errmsg ? res->errmsg : sm_strerror(status)));
    json_object_set_new(j, "keys", lrc == 0 ? json_integer((json_int_t)nkeys) : json_null());
    if (mrc == 0)
        json_object_set_new(j, "members",
                            json_pack("{s:I,s:I,s:I,s:I}", "alive", (json_int_t)ml.counts[1],
                                      "suspect", (json_int_t)ml.counts[2], "dead",
                                      (json_int_t)ml.counts[3], "left", (json_int_t)ml.counts[4]));
    else
        json_object_set_new(j, "members", json_null());
    smd_http_reply_json(r, 200, j, NULL);
}

static void status(struct smd_api *api, struct smd_http_req *r)
{
    smd_http_set_data(r, api);
    int rc = sm_ping(api->store, status_done, r);
    if (rc < 0) {
        reply_err(r, rc, sm_errmsg(api->store));
        return;
    }
    smd_http_suspend(r);
}

static void metrics(struct smd_api *api, struct smd_http_req *r)
{
    char *a = sm_metrics_render(api->store);
    char *b = sm_metrics_render_text(api->metrics);
    if (!a || !b) {
        free(a);
        free(b);
        smd_http_error(r, 500, "internal", "out of memory");
        return;
    }
    size_t la = strlen(a), lb = strlen(b);
    char *all = malloc(la + lb + 1);
    if (!all) {
        free(a);
        free(b);
        smd_http_error(r, 500, "internal", "out of memory");
        return;
    }
    memcpy(all, a, la);
    memcpy(all + la, b, lb + 1);
    smd_http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", all, la + lb, NULL);
    free(all);
    free(a);
    free(b);
}

/* ---- /v1/locks/{name} ---- */

static void lock_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct smd_http_req *r = arg;
    if (status < 0) {
        const char *msg = res ? res->errmsg : NULL;
        if (status == SM_ENOTSUP && (!msg || !*msg))
            msg = "locks are not supported by this backend (use redis or raft, e.g. a route "
                  "for the lock prefix)";
        reply_err(r, status, msg);
        return;
    }
    if (strcmp(smd_http_method(r), "DELETE") == 0) {
        smd_http_reply_json(r, 200, json_pack("{s:b}", "released", 1), NULL);
        return;
    }
    const struct sm_lock *l = res->lock;
    if (!l) {
        smd_http_error(r, 500, "internal", "backend returned no lock grant");
        return;
    }
    smd_http_reply_json(r, 200,
                        json_pack("{s:s,s:s,s:I,s:I}", "name", l->name ? l->name : "", "token",
                                  l->token ? l->token : "", "fence", (json_int_t)l->fence,
                                  "expires", (json_int_t)l->expires_ms),
                        NULL);
}

/* The owner token comes from ?token= or a JSON body {"token": "..."}. */
static int lock_token(struct smd_http_req *r, char *tok, size_t cap)
{
    const char *q = smd_http_query(r, "token");
    if (q && *q) {
        snprintf(tok, cap, "%s", q);
        return strlen(q) < cap ? 0 : -1;
    }
    size_t len;
    const char *body = smd_http_body(r, &len);
    if (len) {
        json_error_t je;
        json_t *j = json_loadb(body, len, 0, &je);
        const char *t = j ? json_string_value(json_object_get(j, "token")) : NULL;
        int ok = t && *t && strlen(t) < cap;
        if (ok) snprintf(tok, cap, "%s", t);
        json_decref(j);
        if (!j) {
            smd_http_error(r, 400, "bad_json", "bad JSON body: %s (line %d)", je.text, je.line);
            return -2;
        }
        if (ok) return 0;
    }
    smd_http_error(r, 400, "bad_request", "missing lock token (?token=… or {\"token\": …})");
    return -2;
}

static void locks(struct smd_api *api, struct smd_http_req *r, const char *name)
{
    const char *m = smd_http_method(r);
    if (bad_key_chars(name) || !*name) {
        smd_http_error(r, 400, "bad_key", "bad lock name");
        return;
    }
    uint64_t ttl;
    int rc;
    char tok[256];
    if (strcmp(m, "DELETE") != 0 && parse_ttl(r, DEFAULT_LOCK_TTL, &ttl) < 0) return;
    if (strcmp(m, "POST") == 0) {
        if (ttl == 0) {
            smd_http_error(r, 400, "bad_ttl", "a lock needs a ttl > 0");
            return;
        }
        rc = sm_lock_acquire(api->store, name, ttl, lock_done, r);
    } else {
        int t = lock_token(r, tok, sizeof tok);
        if (t == -2) return;
        if (t < 0) {
            smd_http_error(r, 400, "bad_request", "lock token too long");
            return;
        }
        if (strcmp(m, "PUT") == 0)
            rc = sm_lock_renew(api->store, name, tok, ttl, lock_done, r);
        else
            rc = sm_lock_release(api->store, name, tok, lock_done, r);
        sodium_memzero(tok, sizeof tok);
    }
    if (rc < 0) {
        const char *msg = sm_errmsg(api->store);
        if (rc == SM_ENOTSUP)
            msg = "locks are not supported by this backend (use redis or raft, e.g. a route for "
                  "the lock prefix)";
        reply_err(r, rc, msg);
        return;
    }
    smd_http_suspend(r);
}

/* ---- typed models: /v1/backends/{url}/health, /v1/circuits/{url}, /v1/lb/… ---- */

enum model_kind { M_HEALTH, M_CIRCUIT };

struct model_req {
    enum model_kind kind;
    char url[SM_MODEL_URL_MAX + 1];
};

static int model_key(enum model_kind k, const char *url, char *key, size_t cap)
{
    return k == M_HEALTH ? sm_health_key(url, key, cap) : sm_circuit_key(url, key, cap);
}

static void model_get_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct smd_http_req *r = arg;
    struct model_req *mr = smd_http_get_data(r);
    if (status < 0) {
        if (status == SM_ENOTFOUND)
            smd_http_error(r, 404, "not_found", "no %s record for %s",
                           mr->kind == M_HEALTH ? "backend health" : "circuit breaker", mr->url);
        else
            reply_err(r, status, res ? res->errmsg : NULL);
        free(mr);
        return;
    }
    const struct sm_entry *e = &res->entries[0];
    json_t *j = NULL;
    int rc;
    if (mr->kind == M_HEALTH) {
        struct sm_backend_health h;
        rc = sm_health_decode(e->value, e->value_len, &h);
        if (rc == 0) {
            h.version = (int64_t)e->version;
            j = sm_health_to_json(&h);
        }
    } else {
        struct sm_circuit_breaker c;
        rc = sm_circuit_decode(e->value, e->value_len, &c);
        if (rc == 0) {
            c.version = (int64_t)e->version;
            j = sm_circuit_to_json(&c);
        }
    }
    if (rc < 0)
        smd_http_error(r, 500, "bad_record", "the stored value of %s is not a %s record", e->key,
                       mr->kind == M_HEALTH ? "backend health" : "circuit breaker");
    else if (!j)
        smd_http_error(r, 500, "internal", "out of memory");
    else
        smd_http_reply_json(r, 200, j, NULL);
    free(mr);
}

static void model_put_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    free(smd_http_get_data(arg));
    kv_write_done(s, status, res, arg);
}

static void model(struct smd_api *api, struct smd_http_req *r, enum model_kind kind,
                  const char *url)
{
    char key[SM_DEFAULT_MAX_KEY + SM_MODEL_URL_MAX + 32];
    if (!*url || strlen(url) > SM_MODEL_URL_MAX || bad_key_chars(url)) {
        smd_http_error(r, 400, "bad_key",
                       "backend URL must be 1..%d bytes without control characters",
                       SM_MODEL_URL_MAX);
        return;
    }
    int kl = model_key(kind, url, key, sizeof key);
    if (kl < 0) {
        smd_http_error(r, 400, "bad_key", "backend URL does not make a valid key");
        return;
    }
    struct model_req *mr = calloc(1, sizeof *mr);
    if (!mr) {
        smd_http_error(r, 500, "internal", "out of memory");
        return;
    }
    mr->kind = kind;
    snprintf(mr->url, sizeof mr->url, "%s", url);
    smd_http_set_data(r, mr);
    int rc;
    if (strcmp(smd_http_method(r), "GET") == 0) {
        rc = sm_get(api->store, key, model_get_done, r);
    } else {
        uint64_t ttl;
        if (parse_ttl(r, 0, &ttl) < 0) goto fail;
        size_t len;
        const char *body = smd_http_body(r, &len);
        char err[256] = "";
        uint8_t val[SM_DEFAULT_MAX_VALUE * 4];
        size_t vlen = 0;
        char body_url[SM_MODEL_URL_MAX + 1] = "";
        const char *node = sm_store_node_id(api->store);
        if (kind == M_HEALTH) {
            struct sm_backend_health h;
            rc = sm_health_from_json_str(body, len, &h, err, sizeof err);
            snprintf(body_url, sizeof body_url, "%s", h.url);
            if (rc == 0 && !*h.url) snprintf(h.url, sizeof h.url, "%s", url);
            if (rc == 0 && !*h.updated_by) snprintf(h.updated_by, sizeof h.updated_by, "%s", node);
            if (rc == 0 && !h.updated_at_ms) h.updated_at_ms = (int64_t)sm_wall_ms();
            if (rc == 0 && strcmp(h.url, url) != 0) rc = 1;
            if (rc == 0) rc = sm_health_encode(&h, val, sizeof val, &vlen);
        } else {
            struct sm_circuit_breaker c;
            rc = sm_circuit_from_json_str(body, len, &c, err, sizeof err);
            snprintf(body_url, sizeof body_url, "%s", c.backend_url);
            if (rc == 0 && !*c.backend_url)
                snprintf(c.backend_url, sizeof c.backend_url, "%s", url);
            if (rc == 0 && !*c.updated_by) snprintf(c.updated_by, sizeof c.updated_by, "%s", node);
            if (rc == 0 && !c.updated_at_ms) c.updated_at_ms = (int64_t)sm_wall_ms();
            if (rc == 0 && strcmp(c.backend_url, url) != 0) rc = 1;
            if (rc == 0) rc = sm_circuit_encode(&c, val, sizeof val, &vlen);
        }
        if (rc == 1) {
            smd_http_error(r, 400, "bad_json", "the body's URL '%s' differs from the path's '%s'",
                           body_url, url);
            goto fail;
        }
        if (rc == SM_EVALUELEN) {
            smd_http_error(r, 413, "value_too_large", "record does not fit the value limit");
            goto fail;
        }
        if (rc < 0) {
            smd_http_error(r, 400, "bad_json", "%s", *err ? err : "bad JSON body");
            goto fail;
        }
        smd_http_set_data(r, mr);
        rc = sm_set(api->store, key, val, vlen, ttl, model_put_done, r);
    }
    if (rc < 0) {
        reply_err(r, rc, sm_errmsg(api->store));
        goto fail;
    }
    smd_http_suspend(r);
    return;
fail:
    smd_http_set_data(r, NULL);
    free(mr);
}

/* Connection counts: each node writes only its own slot lb:conn:<url>/<node>;
 * reads sum the slots of the members that are alive (every slot without a mesh). */
struct live_set {
    char (*ids)[SM_MAX_NODE_ID + 1];
    size_t n, cap;
    int have; /* 0: no membership (count every slot) */
};

static int live_one(const struct sm_member *m, void *arg)
{
    struct live_set *ls = arg;
    if (m->state != SM_MEMBER_ALIVE && m->state != SM_MEMBER_SUSPECT) return 0;
    if (ls->n == ls->cap) {
        size_t nc = ls->cap ? ls->cap * 2 : 16;
        void *ni = realloc(ls->ids, nc * sizeof *ls->ids);
        if (!ni) return 1;
        ls->ids = ni;
        ls->cap = nc;
    }
    snprintf(ls->ids[ls->n++], sizeof ls->ids[0], "%s", m->id);
    return 0;
}

static int is_live(const struct live_set *ls, const char *node)
{
    if (!ls->have) return 1;
    for (size_t i = 0; i < ls->n; i++)
        if (strcmp(ls->ids[i], node) == 0) return 1;
    return 0;
}

struct lb_sum {
    const struct live_set *live;
    size_t plen; /* length of the listing prefix */
    json_t *out; /* url → sum (all) or node → count (one backend) */
    int all, bad;
    int64_t total;
};

static int lb_one(const struct sm_entry *e, void *arg)
{
    struct lb_sum *ls = arg;
    const char *rest = e->key + ls->plen, *slash = strrchr(rest, '/');
    int64_t v;
    if (!slash || crdt_counter_parse(e->value, e->value_len, &v) < 0) return 0; /* not a slot */
    if (!is_live(ls->live, slash + 1)) return 0;
    if (ls->all) {
        char url[SM_MODEL_URL_MAX + 1];
        size_t ul = (size_t)(slash - rest);
        if (ul > SM_MODEL_URL_MAX) return 0;
        memcpy(url, rest, ul);
        url[ul] = '\0';
        json_t *cur = json_object_get(ls->out, url);
        json_int_t sum = (cur ? json_integer_value(cur) : 0) + v;
        if (json_object_set_new(ls->out, url, json_integer(sum)) < 0) return ls->bad = 1;
    } else {
        if (slash != rest) return 0; /* the slot of a longer URL that shares this prefix */
        if (json_object_set_new(ls->out, slash + 1, json_integer(v)) < 0) return ls->bad = 1;
        ls->total += v;
    }
    return 0;
}

static void lb(struct smd_api *api, struct smd_http_req *r, const char *url)
{
    const char *m = smd_http_method(r);
    if (url && (!*url || strlen(url) > SM_MODEL_URL_MAX || bad_key_chars(url))) {
        smd_http_error(r, 400, "bad_key", "backend URL must be 1..%d bytes", SM_MODEL_URL_MAX);
        return;
    }
    if (strcmp(m, "PUT") == 0) {
        size_t len;
        const char *body = smd_http_body(r, &len);
        json_error_t je;
        json_t *j = json_loadb(body, len, JSON_DECODE_ANY, &je);
        json_t *c = json_is_object(j) ? json_object_get(j, "connections") : j;
        if (!json_is_integer(c)) {
            if (j)
                smd_http_error(r, 400, "bad_json", "body must be {\"connections\": INTEGER}");
            else
                smd_http_error(r, 400, "bad_json", "bad JSON at line %d column %d: %s", je.line,
                               je.column, je.text);
            json_decref(j);
            return;
        }
        int64_t v = json_integer_value(c);
        json_decref(j);
        char key[SM_DEFAULT_MAX_KEY + SM_MODEL_URL_MAX + 80];
        int kl = sm_lb_conn_key(url, sm_store_node_id(api->store), key, sizeof key);
        if (kl < 0) {
            smd_http_error(r, 400, "bad_key", "backend URL does not make a valid key");
            return;
        }
        uint8_t val[9];
        size_t vl = crdt_counter_encode(v, val);
        int rc = sm_set(api->store, key, val, vl, 0, kv_write_done, r);
        if (rc < 0) {
            reply_err(r, rc, sm_errmsg(api->store));
            return;
        }
        smd_http_suspend(r);
        return;
    }
    struct live_set live = {0};
    live.have = sm_members(api->store, live_one, &live) == 0;
    char prefix[SM_MODEL_URL_MAX + 32];
    snprintf(prefix, sizeof prefix, "%s%s%s", CRDT_PREFIX_LB_CONN, url ? url : "", url ? "/" : "");
    struct lb_sum ls = {.live = &live, .plen = strlen(prefix), .out = json_object(), .all = !url};
    if (url) ls.plen--; /* keep the '/' so lb_one finds it */
    int rc = ls.out ? sm_list(api->store, prefix, lb_one, &ls) : SM_ENOMEM;
    free(live.ids);
    if (rc < 0 || ls.bad) {
        json_decref(ls.out);
        reply_err(r, rc < 0 ? rc : SM_ENOMEM, rc < 0 ? sm_errmsg(api->store) : "out of memory");
        return;
    }
    if (url)
        smd_http_reply_json(r, 200,
                            json_pack("{s:s,s:I,s:o}", "backend", url, "connections",
                                      (json_int_t)ls.total, "slots", ls.out),
                            NULL);
    else
        smd_http_reply_json(r, 200, json_pack("{s:o}", "backends", ls.out), NULL);
}

/* ---- raft administration ---- */

static void raft_status(struct smd_api *api, struct smd_http_req *r)
{
    struct sm_raft_status st;
    int rc = sm_raft_status(api->store, &st);
    if (rc < 0) {
        reply_err(r, rc, rc == SM_ENOTSUP ? "raft administration needs the raft backend" : NULL);
        return;
    }
    json_t *servers = json_array();
    for (size_t i = 0; servers && i < st.n_servers && i < 16; i++)
        json_array_append_new(
            servers, json_pack("{s:I,s:s,s:b}", "id", (json_int_t)st.servers[i].id, "address",
                               st.servers[i].address, "voter", st.servers[i].voter));
    smd_http_reply_json(
        r, 200,
        servers
            ? json_pack("{s:I,s:s,s:s,s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:o,s:I}", "id",
                        (json_int_t)st.id, "address", st.address, "state", st.state ? st.state : "",
                        "leader_id", (json_int_t)st.leader_id, "leader_address", st.leader_address,
                        "term", (json_int_t)st.term, "last_index", (json_int_t)st.last_index,
                        "commit_index", (json_int_t)st.commit_index, "applied_index",
                        (json_int_t)st.applied_index, "n_servers", (json_int_t)st.n_servers,
                        "servers", servers, "rejected_peers", (json_int_t)st.rejected_peers)
            : NULL,
        NULL);
}

static void raft_done(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct smd_http_req *r = arg;
    if (status < 0) {
        reply_err(r, status, res ? res->errmsg : NULL);
        return;
    }
    smd_http_reply_json(r, 200, json_pack("{s:b}", "ok", 1), NULL);
}

static int body_id(struct smd_http_req *r, uint64_t *id, const char **addr, json_t **keep)
{
    size_t len;
    const char *body = smd_http_body(r, &len);
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    json_t *idj = json_object_get(j, "id");
    if (!j || !json_is_integer(idj) || json_integer_value(idj) < 0) {
        if (!j)
            smd_http_error(r, 400, "bad_json", "bad JSON at line %d column %d: %s", je.line,
                           je.column, je.text);
        else
            smd_http_error(r, 400, "bad_json", "body needs \"id\": a number >= 0");
        json_decref(j);
        return -1;
    }
    *id = (uint64_t)json_integer_value(idj);
    if (addr) {
        *addr = json_string_value(json_object_get(j, "address"));
        if (!*addr || !**addr) {
            smd_http_error(r, 400, "bad_json", "body needs \"address\": \"HOST:PORT\"");
            json_decref(j);
            return -1;
        }
    }
    *keep = j;
    return 0;
}

static void raft_admin(struct smd_api *api, struct smd_http_req *r, const char *rest)
{
    const char *m = smd_http_method(r);
    uint64_t id;
    const char *addr;
    json_t *keep = NULL;
    int rc;
    if (strcmp(rest, "") == 0) {
        raft_status(api, r);
        return;
    }
    if (strcmp(rest, "/servers") == 0) {
        if (body_id(r, &id, &addr, &keep) < 0) return;
        if (id == 0) {
            json_decref(keep);
            smd_http_error(r, 400, "bad_json", "server id must be > 0");
            return;
        }
        rc = sm_raft_add(api->store, id, addr, raft_done, r);
    } else if (strncmp(rest, "/servers/", 9) == 0 && strcmp(m, "DELETE") == 0) {
        char *end;
        errno = 0;
        id = strtoull(rest + 9, &end, 10);
        if (errno || *end || !id || !isdigit((unsigned char)rest[9])) {
            smd_http_error(r, 400, "bad_request", "server id must be a number > 0");
            return;
        }
        rc = sm_raft_remove(api->store, id, raft_done, r);
    } else {
        if (body_id(r, &id, NULL, &keep) < 0) return;
        rc = sm_raft_transfer(api->store, id, raft_done, r);
    }
    json_decref(keep);
    if (rc < 0) {
        reply_err(r, rc,
                  rc == SM_ENOTSUP ? "raft administration needs the raft backend"
                                   : sm_errmsg(api->store));
        return;
    }
    smd_http_suspend(r);
}

/* GET /v1/raft/backup: the snapshot file's bytes (written to a private temp dir first). */
static void raft_backup(struct smd_api *api, struct smd_http_req *r)
{
    char dir[] = "/tmp/statemesh-backup.XXXXXX";
    if (!mkdtemp(dir)) {
        smd_http_error(r, 500, "internal", "cannot create a temporary directory: %s",
                       strerror(errno));
        return;
    }
    char path[sizeof dir + 16], err[512] = "";
    snprintf(path, sizeof path, "%s/backup", dir);
    int rc = sm_raft_backup(api->store, path, err, sizeof err);
    if (rc < 0) {
        rmdir(dir);
        reply_err(r, rc, rc == SM_ENOTSUP ? "backup needs the raft backend" : err);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    size_t off = 0;
    if (fd >= 0 && fstat(fd, &st) == 0 && (buf = malloc((size_t)st.st_size + 1))) {
        while (off < (size_t)st.st_size) {
            ssize_t k = read(fd, buf + off, (size_t)st.st_size - off);
            if (k <= 0) break;
            off += (size_t)k;
        }
    }
    if (fd >= 0) close(fd);
    unlink(path);
    rmdir(dir);
    if (!buf || off != (size_t)st.st_size)
        smd_http_error(r, 500, "internal", "cannot read the snapshot back");
    else
        smd_http_reply(r, 200, "application/octet-stream", buf, off, NULL);
    free(buf);
}

/* ---- routing ---- */

static int authorized(struct smd_api *api, struct smd_http_req *r)
{
    if (!api->token) return 1;
    const char *h = smd_http_header(r, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    const char *t = h + 7;
    size_t n = strlen(t), m = strlen(api->token);
    /* compare in constant time for equal lengths */
    return n == m && sodium_memcmp(t, api->token, n) == 0;
}

static int method_is(const char *m, const char *allowed)
{
    /* allowed: "GET,PUT,DELETE" */
    size_t ml = strlen(m);
    for (const char *p = allowed; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == ml && strncmp(p, m, l) == 0) return 1;
        p += l;
        if (*p == ',') p++;
    }
    return 0;
}

static void dispatch(struct smd_http_req *r, void *arg)
{
    struct smd_api *api = arg;
    const char *path = smd_http_path(r), *m = smd_http_method(r);
    const char *allow = NULL, *rest = NULL;
    enum {
        R_NONE,
        R_HEALTH,
        R_METRICS,
        R_STATUS,
        R_MEMBERS,
        R_LIST,
        R_KV,
        R_WATCH,
        R_LOCK,
        R_BHEALTH,
        R_CIRCUIT,
        R_LB,
        R_LB_ALL,
        R_RAFT,
        R_BACKUP,
    } route = R_NONE;
    size_t plen = strlen(path);
    char url[SM_MODEL_URL_MAX * 2 + 2];
    if (strcmp(path, "/healthz") == 0)
        route = R_HEALTH, allow = "GET";
    else if (strcmp(path, "/metrics") == 0)
        route = R_METRICS, allow = "GET";
    else if (strcmp(path, "/v1/status") == 0)
        route = R_STATUS, allow = "GET";
    else if (strcmp(path, "/v1/members") == 0)
        route = R_MEMBERS, allow = "GET";
    else if (strcmp(path, "/v1/kv") == 0 || strcmp(path, "/v1/kv/") == 0)
        route = R_LIST, allow = "GET";
    else if (strncmp(path, "/v1/kv/", 7) == 0)
        route = R_KV, allow = "GET,PUT,DELETE", rest = path + 7;
    else if (strcmp(path, "/v1/watch") == 0)
        route = R_WATCH, allow = "GET";
    else if (strncmp(path, "/v1/locks/", 10) == 0 && path[10])
        route = R_LOCK, allow = "POST,PUT,DELETE", rest = path + 10;
    else if (strncmp(path, "/v1/backends/", 13) == 0 && plen > 20 &&
             strcmp(path + plen - 7, "/health") == 0 && plen - 20 < sizeof url) {
        memcpy(url, path + 13, plen - 20);
        url[plen - 20] = '\0';
        route = R_BHEALTH, allow = "GET,PUT", rest = url;
    } else if (strncmp(path, "/v1/circuits/", 13) == 0 && path[13])
        route = R_CIRCUIT, allow = "GET,PUT", rest = path + 13;
    else if (strcmp(path, "/v1/lb/connections") == 0)
        route = R_LB_ALL, allow = "GET";
    else if (strncmp(path, "/v1/lb/", 7) == 0 && plen > 19 &&
             strcmp(path + plen - 12, "/connections") == 0 && plen - 19 < sizeof url) {
        memcpy(url, path + 7, plen - 19);
        url[plen - 19] = '\0';
        route = R_LB, allow = "GET,PUT", rest = url;
    } else if (strcmp(path, "/v1/raft/backup") == 0)
        route = R_BACKUP, allow = "GET";
    else if (strcmp(path, "/v1/raft") == 0)
        route = R_RAFT, allow = "GET", rest = "";
    else if (strcmp(path, "/v1/raft/servers") == 0 || strcmp(path, "/v1/raft/transfer") == 0)
        route = R_RAFT, allow = "POST", rest = path + 8;
    else if (strncmp(path, "/v1/raft/servers/", 17) == 0 && path[17])
        route = R_RAFT, allow = "DELETE", rest = path + 8;
    if (route == R_NONE) {
        smd_http_error(r, 404, "not_found", "no such endpoint: %s %s", m, path);
        return;
    }
    if (!method_is(m, allow)) {
        const char *hdr[] = {"Allow", allow, NULL};
        char msg[200];
        snprintf(msg, sizeof msg, "method %s not allowed on %s (allowed: %s)", m, path, allow);
        smd_http_reply_json(
            r, 405, json_pack("{s:s,s:s}", "error", msg, "code", "method_not_allowed"), hdr);
        return;
    }
    if (strcmp(m, "GET") != 0 && !authorized(api, r)) {
        const char *hdr[] = {"WWW-Authenticate", "Bearer realm=\"statemesh\"", NULL};
        smd_http_reply_json(r, 401,
                            json_pack("{s:s,s:s}", "error",
                                      "this endpoint needs a bearer token "
                                      "(Authorization: Bearer …)",
                                      "code", "unauthorized"),
                            hdr);
        return;
    }
    if (api->detached) {
        smd_http_error(r, 503, "unavailable", "shutting down");
        return;
    }
    switch (route) {
    case R_HEALTH:
        smd_http_reply_json(
            r, 200, json_pack("{s:s,s:s}", "status", "ok", "node_id", sm_store_node_id(api->store)),
            NULL);
        break;
    case R_METRICS:
        metrics(api, r);
        break;
    case R_STATUS:
        status(api, r);
        break;
    case R_MEMBERS:
        members(api, r);
        break;
    case R_LIST:
        kv_list(api, r);
        break;
    case R_KV:
        kv_key(api, r, rest);
        break;
    case R_WATCH:
        watch_start(api, r);
        break;
    case R_LOCK:
        locks(api, r, rest);
        break;
    case R_BHEALTH:
        model(api, r, M_HEALTH, rest);
        break;
    case R_CIRCUIT:
        model(api, r, M_CIRCUIT, rest);
        break;
    case R_LB:
        lb(api, r, rest);
        break;
    case R_LB_ALL:
        lb(api, r, NULL);
        break;
    case R_RAFT:
        raft_admin(api, r, rest);
        break;
    case R_BACKUP:
        raft_backup(api, r);
        break;
    case R_NONE:
        break;
    }
}

static size_t body_limit(const char *method, const char *url, void *arg)
{
    struct smd_api *api = arg;
    if (!api->detached && strncmp(url, "/v1/kv/", 7) == 0 && strcmp(method, "PUT") == 0)
        return sm_store_max_value(api->store);
    return api->max_body;
}

static void on_reply(const char *method, unsigned code, void *arg)
{
    struct smd_api *api = arg;
    char labels[96];
    snprintf(labels, sizeof labels, "method=\"%.16s\",code=\"%u\"", method, code);
    sm_metrics_add(api->metrics, "statemesh_http_requests_total",
                   "HTTP API requests answered, by method and status code", labels, 1);
}

static double sse_clients_fn(void *arg)
{
    return (double)((struct smd_api *)arg)->nclients;
}

/* ---- lifecycle ---- */

struct smd_api *smd_api_new(struct sm_store *store, const struct smd_api_opts *opts)
{
    struct smd_api *api = calloc(1, sizeof *api);
    if (!api) return NULL;
    api->store = store;
    api->metrics = sm_metrics_new();
    if (!api->metrics) goto err;
    api->max_body = opts->max_body ? opts->max_body : DEFAULT_MAX_BODY;
    api->sse_queue = opts->sse_queue ? opts->sse_queue : DEFAULT_SSE_QUEUE;
    if (api->sse_queue < 2) api->sse_queue = 2;
    api->heartbeat_ms = opts->sse_heartbeat_ms ? opts->sse_heartbeat_ms : DEFAULT_HEARTBEAT;
    snprintf(api->storage, sizeof api->storage, "%s", opts->storage ? opts->storage : "local");
    api->started_ms = sm_wall_ms();
    if (opts->token && smd_api_set_token(api, opts->token) < 0) goto err;
    api->sse_dropped =
        sm_metrics_counter(api->metrics, "statemesh_sse_dropped_events_total",
                           "Watch events dropped because an SSE client's queue was full", "");
    if (!api->sse_dropped) goto err;
    if (sm_metrics_gauge_fn(api->metrics, "statemesh_sse_clients", "Open SSE watch streams", "",
                            sse_clients_fn, api) < 0)
        goto err;
    ev_timer_init(&api->heartbeat, heartbeat_cb, api->heartbeat_ms / 1000.0,
                  api->heartbeat_ms / 1000.0);
    api->heartbeat.data = api;
    ev_timer_start(sm_store_loop(store), &api->heartbeat);
    ev_unref(sm_store_loop(store)); /* keep-alives alone must not keep the loop running */
    return api;
err:
    smd_api_delete(api);
    return NULL;
}

void smd_api_detach(struct smd_api *api)
{
    if (!api || api->detached) return;
    api->detached = 1;
    for (struct sse_client *c = api->clients; c; c = c->next) {
        if (c->w) sm_unwatch(c->w);
        c->w = NULL; /* the reader now ends the stream once drained */
        smd_http_stream_wake(c->stream);
    }
    if (ev_is_active(&api->heartbeat)) {
        ev_ref(sm_store_loop(api->store));
        ev_timer_stop(sm_store_loop(api->store), &api->heartbeat);
    }
}

void smd_api_delete(struct smd_api *api)
{
    if (!api) return;
    smd_api_detach(api);
    if (api->token) {
        sodium_memzero(api->token, strlen(api->token));
        free(api->token);
    }
    sm_metrics_delete(api->metrics);
    free(api);
}

int smd_api_set_token(struct smd_api *api, const char *token)
{
    char *t = NULL;
    if (token && *token && !(t = sm_strdup(token))) return SM_ENOMEM;
    if (api->token) {
        sodium_memzero(api->token, strlen(api->token));
        free(api->token);
    }
    api->token = t;
    return 0;
}

void smd_api_http_opts(struct smd_api *api, struct smd_http_opts *out)
{
    memset(out, 0, sizeof *out);
    out->dispatch = dispatch;
    out->body_limit = body_limit;
    out->on_reply = on_reply;
    out->arg = api;
}

uint64_t smd_api_sse_dropped(const struct smd_api *api)
{
    return *api->sse_dropped;
}
