/* statemesh.h: the public API of libstatemesh (store, watch, locks, members). */
#ifndef STATEMESH_H
#define STATEMESH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SM_BUILDING) && defined(__GNUC__)
#define SM_API __attribute__((visibility("default")))
#else
#define SM_API
#endif

#if defined(__GNUC__)
#define SM_MUST_CHECK __attribute__((warn_unused_result))
#else
#define SM_MUST_CHECK
#endif

/**
 * Error codes. Every call that can fail returns 0 or one of these negative
 * values; sm_strerror() names it and sm_errmsg() of the handle gives detail.
 */
#define SM_ERRNO_MAP(X)                                                                            \
    X(NOMEM, -1, "out of memory")                                                                  \
    X(INVAL, -2, "invalid argument")                                                               \
    X(NOTFOUND, -3, "key not found")                                                               \
    X(EMPTYKEY, -4, "empty key")                                                                   \
    X(KEYLEN, -5, "key too long")                                                                  \
    X(VALUELEN, -6, "value too large")                                                             \
    X(TTL, -7, "TTL out of range")                                                                 \
    X(CLOSED, -8, "store closed")                                                                  \
    X(UNAVAILABLE, -9, "backend unavailable")                                                      \
    X(TIMEOUT, -10, "operation timed out")                                                         \
    X(NOTSUP, -11, "operation not supported by this backend")                                      \
    X(LOCKED, -12, "lock is held by another owner")                                                \
    X(NOTOWNER, -13, "not the lock owner or lock expired")                                         \
    X(CONFIG, -14, "bad configuration")                                                            \
    X(IO, -15, "I/O error")                                                                        \
    X(PROTO, -16, "protocol error")                                                                \
    X(AUTH, -17, "authentication failed")                                                          \
    X(CRYPTO, -18, "cryptographic check failed")                                                   \
    X(NOTLEADER, -19, "not the leader")                                                            \
    X(NOQUORUM, -20, "no quorum")                                                                  \
    X(BACKEND, -21, "backend returned an error")                                                   \
    X(EXISTS, -22, "already exists")                                                               \
    X(RANGE, -23, "value out of range")                                                            \
    X(CANCELED, -24, "operation canceled")

/** Error code enumeration, generated from SM_ERRNO_MAP. */
enum sm_errno {
    SM_OK = 0,
#define SM__ERRNO_ENUM(name, val, text) SM_E##name = (val),
    SM_ERRNO_MAP(SM__ERRNO_ENUM)
#undef SM__ERRNO_ENUM
};

/** Static description of an error code ("unknown error" for unknown codes). */
SM_API const char *sm_strerror(int err);
/** Short symbolic name of an error code, e.g. "SM_ENOTFOUND". */
SM_API const char *sm_errname(int err);

/** Default limits. */
#define SM_DEFAULT_MAX_KEY   256
#define SM_DEFAULT_MAX_VALUE 1024
#define SM_MAX_TTL_MS        ((uint64_t)10 * 365 * 24 * 3600 * 1000) /**< ten years */

struct ev_loop; /* libev */
struct sm_store;
struct sm_config;
struct sm_watch;

/* ------------------------------------------------------------------------ */
/** @name Configuration
 * A configuration is a set of dotted string options ("max_value", "redis.addr",
 * "mesh.bind", …) plus prefix routes. Backends validate their own options when
 * the store opens; unknown options are rejected there with a message naming them.
 * @{ */

/** Allocate a configuration with defaults (backend "local"). NULL on OOM. */
SM_API struct sm_config *sm_config_new(void);
/** Free a configuration (NULL is fine). Secrets in it are wiped. */
SM_API void sm_config_delete(struct sm_config *cfg);
/**
 * Set option @p key to @p value (both copied). Setting the same key again
 * replaces it. Returns 0, SM_EINVAL for an empty key, SM_ENOMEM.
 */
SM_API int sm_config_set(struct sm_config *cfg, const char *key, const char *value);
/** Current value of option @p key, or NULL. Borrowed: valid until the next set. */
SM_API const char *sm_config_get(const struct sm_config *cfg, const char *key);
/**
 * Route keys starting with @p prefix to backend @p backend ("local", "mesh",
 * "redis", "raft"). The longest matching prefix wins; keys no route matches go
 * to the default backend (option "storage", default "local").
 */
SM_API int sm_config_route(struct sm_config *cfg, const char *prefix, const char *backend);
/** @} */

/* ------------------------------------------------------------------------ */
/** @name Records and results
 * @{ */

/** A record as read from a store. Every pointer is borrowed (see each call). */
struct sm_entry {
    const char *key;    /**< NUL-terminated key */
    const void *value;  /**< value bytes (NULL when missing) */
    size_t value_len;   /**< value length */
    uint64_t version;   /**< version in the merge order (backend-specific origin) */
    uint64_t time_ms;   /**< wall time of the write, ms since the epoch */
    int64_t expires_ms; /**< absolute expiry, ms since the epoch; 0 = never */
    const char *origin; /**< node id of the writer ("" when unknown) */
    int status;         /**< 0, or SM_ENOTFOUND for a missing key in get_multi */
};

/** A key/value to write in sm_set_multi(). */
struct sm_kv {
    const char *key;   /**< NUL-terminated key */
    const void *value; /**< value bytes */
    size_t value_len;  /**< value length */
    uint64_t ttl_ms;   /**< time to live in ms; 0 = no expiry */
};

/** A lock grant. */
struct sm_lock {
    const char *name;   /**< lock name */
    const char *token;  /**< owner token: pass it to renew and release */
    uint64_t fence;     /**< fencing token, strictly increasing per lock name */
    int64_t expires_ms; /**< when the grant lapses unless renewed (wall ms) */
};

/**
 * The result handed to a completion callback. Which fields are set depends on
 * the operation: get → entries[0]; get_multi → entries[0..n) in request order;
 * set/del → version; lock calls → lock. All pointers valid only during the
 * callback.
 */
struct sm_result {
    const struct sm_entry *entries;
    size_t n_entries;
    uint64_t version;
    const struct sm_lock *lock;
    const char *errmsg; /**< detail text when status < 0, else NULL */
};

/**
 * Completion callback. Runs exactly once per accepted operation, always from
 * the store's event loop and never from inside the call that started the
 * operation. When the store closes first, it runs with SM_ECLOSED.
 */
typedef void (*sm_cb)(struct sm_store *store, int status, const struct sm_result *res, void *arg);
/** @} */

/* ------------------------------------------------------------------------ */
/** @name Store lifecycle
 * @{ */

/**
 * Open a store on libev loop @p loop with configuration @p cfg (borrowed only
 * during the call). On failure returns a negative code and, when @p errbuf is
 * not NULL, writes a message into it.
 */
SM_API int sm_store_new(struct ev_loop *loop, const struct sm_config *cfg, struct sm_store **out,
                        char *errbuf, size_t errbuf_len) SM_MUST_CHECK;
/**
 * Close and free a store. Every pending operation completes with SM_ECLOSED
 * and every watch is cancelled before this returns. NULL is fine.
 */
SM_API void sm_store_delete(struct sm_store *store);
/** Detail text of the last error on this store (never NULL). */
SM_API const char *sm_errmsg(const struct sm_store *store);
/** This node's id (from option "node_id", default the host name). */
SM_API const char *sm_store_node_id(const struct sm_store *store);
/** The libev loop the store runs on. */
SM_API struct ev_loop *sm_store_loop(const struct sm_store *store);
/** @} */

/* ------------------------------------------------------------------------ */
/** @name Key/value operations
 * Each returns 0 when the operation was accepted (its callback will run once)
 * or a negative code when it was refused at once (the callback will not run).
 * @{ */

/** Read a key. */
SM_API int sm_get(struct sm_store *s, const char *key, sm_cb cb, void *arg) SM_MUST_CHECK;
/**
 * Read a key synchronously from local memory (local and mesh backends).
 * Fills @p out with pointers borrowed until control returns to the event
 * loop or the next write call on this store. SM_ENOTFOUND when missing or
 * expired; SM_ENOTSUP when the key routes to a remote backend.
 */
SM_API int sm_get_now(struct sm_store *s, const char *key, struct sm_entry *out) SM_MUST_CHECK;
/** Write a key with a TTL in ms (0 = never expires). */
SM_API int sm_set(struct sm_store *s, const char *key, const void *value, size_t len,
                  uint64_t ttl_ms, sm_cb cb, void *arg) SM_MUST_CHECK;
/** Delete a key (deleting a missing key succeeds). */
SM_API int sm_del(struct sm_store *s, const char *key, sm_cb cb, void *arg) SM_MUST_CHECK;
/** Read several keys; entries arrive in request order, missing ones with status SM_ENOTFOUND. */
SM_API int sm_get_multi(struct sm_store *s, const char *const *keys, size_t n, sm_cb cb,
                        void *arg) SM_MUST_CHECK;
/** Write several keys; a single round trip on remote backends. */
SM_API int sm_set_multi(struct sm_store *s, const struct sm_kv *items, size_t n, sm_cb cb,
                        void *arg) SM_MUST_CHECK;
/** Check that every backend of the store is reachable. */
SM_API int sm_ping(struct sm_store *s, sm_cb cb, void *arg) SM_MUST_CHECK;

/**
 * Iterate over the live records whose key starts with @p prefix, from local
 * memory (local and mesh backends). The callback returns 0 to go on, non-zero
 * to stop. Entries are borrowed during the callback only; the callback must
 * not write to the store.
 */
typedef int (*sm_list_fn)(const struct sm_entry *e, void *arg);
SM_API int sm_list(struct sm_store *s, const char *prefix, sm_list_fn fn, void *arg);
/** @} */

/* ------------------------------------------------------------------------ */
/** @name Watch
 * @{ */

/** Kind of a watch event. */
enum sm_event_type {
    SM_EVENT_SET = 1,      /**< a key was written (locally or by a peer) */
    SM_EVENT_DELETE = 2,   /**< a key was deleted */
    SM_EVENT_EXPIRE = 3,   /**< a key's TTL ran out */
    SM_EVENT_OVERFLOW = 4, /**< the watch queue overflowed; `dropped` events were lost */
};

/** A change event. Pointers valid only during the watch callback. */
struct sm_event {
    enum sm_event_type type;
    const char *key;
    const void *value; /**< value for SET, NULL otherwise */
    size_t value_len;
    uint64_t version;
    uint64_t time_ms;   /**< wall time of the change */
    const char *origin; /**< node id that made the change */
    uint64_t dropped;   /**< for SM_EVENT_OVERFLOW: events dropped since the last delivery */
};

/**
 * Watch callback. Events are queued per watch (bounded by option
 * "watch_queue", default 1024) and delivered from the loop in order. When the
 * queue is full new events are dropped and counted; the next delivery is an
 * SM_EVENT_OVERFLOW event carrying the count, so a consumer can resynchronise.
 * sm_unwatch() may be called from inside the callback.
 */
typedef void (*sm_watch_cb)(struct sm_watch *w, const struct sm_event *ev, void *arg);
/** Watch every key starting with @p prefix ("" = everything). */
SM_API int sm_watch(struct sm_store *s, const char *prefix, sm_watch_cb cb, void *arg,
                    struct sm_watch **out) SM_MUST_CHECK;
/** Stop a watch and free it; no callback runs for it afterwards. */
SM_API void sm_unwatch(struct sm_watch *w);
/** Total events dropped by this watch because its queue was full. */
SM_API uint64_t sm_watch_dropped(const struct sm_watch *w);
/** @} */

/* ------------------------------------------------------------------------ */
/** @name Locks (redis and raft backends)
 * Locks are atomic in their backend and every grant carries a fencing token
 * that strictly increases per lock name. Backends without strong consistency
 * complete these with SM_ENOTSUP. The lock name is routed like a key.
 * @{ */
SM_API int sm_lock_acquire(struct sm_store *s, const char *name, uint64_t ttl_ms, sm_cb cb,
                           void *arg) SM_MUST_CHECK;
SM_API int sm_lock_renew(struct sm_store *s, const char *name, const char *token, uint64_t ttl_ms,
                         sm_cb cb, void *arg) SM_MUST_CHECK;
SM_API int sm_lock_release(struct sm_store *s, const char *name, const char *token, sm_cb cb,
                           void *arg) SM_MUST_CHECK;
/** @} */

/* ------------------------------------------------------------------------ */
/** @name Members (mesh backend)
 * @{ */
enum sm_member_state {
    SM_MEMBER_ALIVE = 1,
    SM_MEMBER_SUSPECT = 2,
    SM_MEMBER_DEAD = 3,
    SM_MEMBER_LEFT = 4,
};
/** A mesh member. Pointers borrowed during the callback only. */
struct sm_member {
    const char *id;
    const char *addr; /**< "host:port" */
    enum sm_member_state state;
    uint64_t incarnation;
    uint64_t changed_ms; /**< wall time of the last state change */
};
typedef int (*sm_member_fn)(const struct sm_member *m, void *arg);
/** Iterate the mesh members (this node included). SM_ENOTSUP without a mesh. */
SM_API int sm_members(struct sm_store *s, sm_member_fn fn, void *arg);
/** Be told of member state changes (one callback per store; NULL to stop). */
typedef void (*sm_member_cb)(struct sm_store *s, const struct sm_member *m, void *arg);
SM_API void sm_on_member(struct sm_store *s, sm_member_cb cb, void *arg);
/** Name of a member state ("alive", "suspect", "dead", "left"). */
SM_API const char *sm_member_state_name(enum sm_member_state st);
/** @} */

/* ------------------------------------------------------------------------ */
/** @name Per-node counters (local and mesh backends)
 * A counter (e.g. connections to one backend) is a set of slots, one per
 * node, under keys "<base><name>/<node-id>"; each node writes only its own
 * slot, so concurrent updates never conflict. Its value is the sum of the
 * slots of live members: a dead node's slot stops counting.
 * @{ */
/**
 * Add @p delta to this node's slot of counter @p name under @p base (e.g.
 * base "lb:conn:", name the backend URL). Completes like sm_set().
 */
SM_API int sm_counter_add(struct sm_store *s, const char *base, const char *name, int64_t delta,
                          sm_cb cb, void *arg) SM_MUST_CHECK;
/** Sum of the live slots of counter @p name under @p base, into @p out. */
SM_API int sm_counter_sum(struct sm_store *s, const char *base, const char *name,
                          int64_t *out) SM_MUST_CHECK;
/** @} */

/* ------------------------------------------------------------------------ */
/** @name Metrics
 * @{ */
/**
 * Render the store's metrics in the Prometheus text exposition format into a
 * malloc'd NUL-terminated string (caller frees). NULL on OOM.
 */
SM_API char *sm_metrics_render(struct sm_store *s);
/** @} */

/**
 * Replace the mesh's cluster encryption keyring with the keys in @p keyring:
 * a comma-separated list of key files, the first being the primary (sending)
 * key and the others accepted for receiving — rotation without downtime.
 * An empty string turns encryption off. On error the running keyring is kept
 * and a message is written to @p err. SM_ENOTSUP without a mesh backend.
 */
SM_API int sm_store_reload_keyring(struct sm_store *s, const char *keyring, char *err,
                                   size_t errlen);

/** Library version string, e.g. "0.1.0". */
SM_API const char *sm_version(void);

#ifdef __cplusplus
}
#endif
#endif /* STATEMESH_H */
