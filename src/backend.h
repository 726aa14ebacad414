/* backend.h: the internal interface every storage backend implements, and the
 * services the store front offers backends (events, metrics, errors). */
#ifndef SM_BACKEND_H
#define SM_BACKEND_H

#include "statemesh.h"

#include <stdbool.h>
#include <stdint.h>

struct sm_backend;
struct sm_metrics;

/** Node ids are 1..SM_MAX_NODE_ID bytes. */
#define SM_MAX_NODE_ID 64

/**
 * Backend operations. The store front validates keys, values and TTLs before
 * calling these, so backends see only well-formed input.
 *
 * Completion contract (same as the public API): an operation that returns 0
 * must run @p cb exactly once, later, from the loop (never from inside the
 * call); an operation that returns < 0 must not run it. close() completes
 * every pending operation with SM_ECLOSED before returning.
 *
 * get_multi completes with status 0 (unless the whole operation failed) and
 * one entry per key in request order, a missing key as an entry with status
 * SM_ENOTFOUND; the front turns that into the status of a single sm_get().
 * set_multi/del report the written version in res->version. Lock operations
 * fill res->lock.
 *
 * Input pointers (keys, values, tokens) are borrowed only during the call:
 * copy what you keep. Optional entries may be NULL: the front answers
 * SM_ENOTSUP for them.
 */
struct sm_backend_vt {
    const char *name; /**< "local", "mesh", "redis", "raft" */
    /**
     * Open an instance. Options for this backend are read from @p cfg; an
     * unknown or bad option fails with SM_ECONFIG and a message in @p err.
     */
    int (*open)(struct sm_store *st, const struct sm_config *cfg, struct sm_backend **out,
                char *err, size_t errlen);
    void (*close)(struct sm_backend *b);
    int (*get_now)(struct sm_backend *b, const char *key, struct sm_entry *out);
    int (*list)(struct sm_backend *b, const char *prefix, sm_list_fn fn, void *arg);
    int (*get_multi)(struct sm_backend *b, const char *const *keys, size_t n, sm_cb cb, void *arg);
    int (*set_multi)(struct sm_backend *b, const struct sm_kv *items, size_t n, sm_cb cb,
                     void *arg);
    int (*del)(struct sm_backend *b, const char *key, sm_cb cb, void *arg);
    int (*ping)(struct sm_backend *b, sm_cb cb, void *arg);
    int (*lock_acquire)(struct sm_backend *b, const char *name, uint64_t ttl_ms, sm_cb cb,
                        void *arg);
    int (*lock_renew)(struct sm_backend *b, const char *name, const char *token, uint64_t ttl_ms,
                      sm_cb cb, void *arg);
    int (*lock_release)(struct sm_backend *b, const char *name, const char *token, sm_cb cb,
                        void *arg);
    int (*members)(struct sm_backend *b, sm_member_fn fn, void *arg);
    /**
     * Optional: sum of the counter slots under @p prefix ("<base><name>/")
     * whose node is live (local: every slot counts).
     */
    int (*counter_sum)(struct sm_backend *b, const char *prefix, int64_t *out);
    /** Optional: replace the cluster keyring (mesh). */
    int (*reload_keyring)(struct sm_backend *b, const char *keyring, char *err, size_t errlen);
    /** Optional: connection status for /metrics (1 up, 0 down). */
    int (*connected)(struct sm_backend *b);
};

/** Common head of every backend instance (embed it first). */
struct sm_backend {
    const struct sm_backend_vt *vt;
    struct sm_store *store;
};

/* Backends known to the build. */
extern const struct sm_backend_vt sm_backend_local;
extern const struct sm_backend_vt sm_backend_mesh;
extern const struct sm_backend_vt sm_backend_redis;
extern const struct sm_backend_vt sm_backend_raft;

/* ---- services of the store front for backends ---- */

/**
 * Publish a change to the store's watchers. Every backend calls this for
 * every change it learns of (its own writes and remote ones alike). The event
 * is copied into the watch queues; @p ev is borrowed during the call only.
 */
void sm_store_emit(struct sm_store *st, const struct sm_event *ev);
/** Deliver a member state change to the embedder's sm_on_member() callback. */
void sm_store_member_event(struct sm_store *st, const struct sm_member *m);
/** The store's metrics registry. */
struct sm_metrics *sm_store_metrics(struct sm_store *st);
/** Set the store's error message (printf-style); returns @p err for chaining. */
int sm_store_seterr(struct sm_store *st, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Option helpers: read an option of @p cfg with a default. */
const char *sm_cfg_str(const struct sm_config *cfg, const char *key, const char *def);
/** Parse an unsigned option; SM_ECONFIG with a message on bad input. */
int sm_cfg_u64(const struct sm_config *cfg, const char *key, uint64_t def, uint64_t *out, char *err,
               size_t errlen);
/** Parse a duration option ("250ms", "2s", "1m", bare number = ms). */
int sm_cfg_ms(const struct sm_config *cfg, const char *key, uint64_t def, uint64_t *out, char *err,
              size_t errlen);
/** Parse a duration string into ms; SM_EINVAL on bad input. */
int sm_parse_duration_ms(const char *s, uint64_t *out);
/**
 * Iterate the options whose key starts with @p prefix (e.g. "redis."), for a
 * backend to reject the ones it does not know. fn returns non-zero to stop.
 */
int sm_cfg_foreach(const struct sm_config *cfg, const char *prefix,
                   int (*fn)(const char *key, const char *value, void *arg), void *arg);
/** Number of routes and the i-th route (prefix, backend name). */
size_t sm_cfg_nroutes(const struct sm_config *cfg);
void sm_cfg_route_at(const struct sm_config *cfg, size_t i, const char **prefix,
                     const char **backend);

/** strdup() through malloc (so tests can inject allocation failure). */
char *sm_strdup(const char *s);

/** Limits in force for this store. */
size_t sm_store_max_key(const struct sm_store *st);
size_t sm_store_max_value(const struct sm_store *st);

/** Wall clock in ms since the epoch, and a monotonic clock in ms/ns. */
uint64_t sm_wall_ms(void);
uint64_t sm_mono_ms(void);
uint64_t sm_mono_ns(void);

#endif /* SM_BACKEND_H */
