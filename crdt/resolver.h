/* resolver.h: conflict resolvers by key prefix (precedence from values), and per-node counters. */
#ifndef CRDT_RESOLVER_H
#define CRDT_RESOLVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt/record.h"

struct crdt_replica;
struct crdt_resolvers;
struct crdt_resolver;

/** Key prefixes of the built-in resolvers. */
#define CRDT_PREFIX_HEALTH    "backend:health:"
#define CRDT_PREFIX_CIRCUIT   "circuit:"
#define CRDT_PREFIX_LB_CONN   "lb:conn:"
#define CRDT_PREFIX_RATELIMIT "ratelimit:"

/** What a resolver does with values. */
enum crdt_resolver_kind {
    CRDT_RESOLVER_LWW = 0, /**< precedence 0: plain last-writer-wins by (version, hlc, origin) */
    CRDT_RESOLVER_HEALTH,  /**< backend health: the less healthy state outranks */
    CRDT_RESOLVER_CIRCUIT, /**< circuit breaker: open > half-open > closed */
    CRDT_RESOLVER_COUNTER, /**< per-node counter slots (LWW per slot, summed on read) */
    CRDT_RESOLVER_CUSTOM,  /**< precedence from a user function */
};

/**
 * Precedence levels. They only order writes of the same version (the merge
 * order is (version, precedence, hlc, origin)), so a newer version always wins
 * and a circuit can close again. Unknown or unparsable values get 0.
 */
enum crdt_health_precedence {
    CRDT_PREC_HEALTH_UNKNOWN = 0,
    CRDT_PREC_HEALTH_HEALTHY = 1,
    CRDT_PREC_HEALTH_RATE_LIMITED = 2,
    CRDT_PREC_HEALTH_MAINTENANCE = 3,
    CRDT_PREC_HEALTH_UNHEALTHY = 4,
};
enum crdt_circuit_precedence {
    CRDT_PREC_CIRCUIT_UNKNOWN = 0,
    CRDT_PREC_CIRCUIT_CLOSED = 1,
    CRDT_PREC_CIRCUIT_HALF_OPEN = 2,
    CRDT_PREC_CIRCUIT_OPEN = 3,
};

/** Precedence of a value for a custom resolver. @p value is borrowed for the call. */
typedef uint8_t (*crdt_precedence_fn)(const uint8_t *value, size_t len, void *arg);

/** A registry with only the default LWW resolver (prefix ""). NULL on OOM. */
struct crdt_resolvers *crdt_resolvers_new(void);
/**
 * A registry with the built-ins: default LWW, "backend:health:" (health),
 * "circuit:" (circuit), "lb:conn:" and "ratelimit:" (counters). NULL on OOM.
 */
struct crdt_resolvers *crdt_resolvers_new_default(void);
/** Free a registry (NULL is fine); resolver pointers from it become invalid. */
void crdt_resolvers_delete(struct crdt_resolvers *rs);

/**
 * Register a resolver for keys starting with @p prefix (copied; non-empty).
 * @p name is copied too (used as the metric label). For CRDT_RESOLVER_CUSTOM,
 * @p fn is required and @p arg is passed to it (borrowed: must outlive @p rs);
 * for built-in kinds @p fn must be NULL.
 * @return 0, SM_EINVAL, SM_EEXISTS (prefix already registered) or SM_ENOMEM.
 */
int crdt_resolvers_add(struct crdt_resolvers *rs, const char *prefix, const char *name,
                       enum crdt_resolver_kind kind, crdt_precedence_fn fn, void *arg);

/**
 * The resolver for @p key: the registered prefix that is the longest prefix of
 * the key, else the default LWW. Never NULL. Valid until crdt_resolvers_delete().
 */
const struct crdt_resolver *crdt_resolver_find(const struct crdt_resolvers *rs, const char *key,
                                               size_t klen);

/**
 * Precedence of @p value under resolver @p r, computed when a write is made.
 * The value may be the typed model's msgpack encoding (a map with a "state"
 * string), its JSON encoding (an object with a "state" string), a msgpack or
 * JSON string, or a bare word ("unhealthy", "open", "half-open"…; case, '_'
 * versus '-' and surrounding white space do not matter). NULL/empty → 0.
 */
uint8_t crdt_resolver_precedence(const struct crdt_resolver *r, const uint8_t *value, size_t len);

/** Convenience: crdt_resolver_precedence(crdt_resolver_find(rs, key), value). */
uint8_t crdt_resolvers_precedence(const struct crdt_resolvers *rs, const char *key, size_t klen,
                                  const uint8_t *value, size_t len);

/**
 * Resolver name, unique among the built-ins so it can label a metric: "lww",
 * "backend_health", "circuit_breaker", "connection_counter" (lb:conn:),
 * "rate_limit_counter" (ratelimit:), or the name given to crdt_resolvers_add().
 */
const char *crdt_resolver_name(const struct crdt_resolver *r);
/** Registered prefix ("" for the default). */
const char *crdt_resolver_prefix(const struct crdt_resolver *r);
enum crdt_resolver_kind crdt_resolver_kind(const struct crdt_resolver *r);
/** Conflicts this resolver has resolved (see crdt_resolvers_note_conflict()). */
uint64_t crdt_resolver_conflicts(const struct crdt_resolver *r);

/** Number of registered resolvers (the default included) and the i-th one, for metrics. */
size_t crdt_resolvers_count(const struct crdt_resolvers *rs);
const struct crdt_resolver *crdt_resolvers_at(const struct crdt_resolvers *rs, size_t i);

/**
 * True when @p in and @p stored are two different writes of the same version
 * of a key: concurrent writes that the order (precedence, hlc, origin) had to
 * settle. A newer version, or a duplicate of the same write, is not a conflict.
 */
bool crdt_is_conflict(const struct crdt_rec_view *stored, const struct crdt_rec_view *in);

/** Count one resolved conflict against the resolver of @p key. */
void crdt_resolvers_note_conflict(struct crdt_resolvers *rs, const char *key, size_t klen);

/**
 * Merge @p in into @p rep like crdt_replica_merge(), counting a conflict
 * against the key's resolver when crdt_is_conflict() holds for the stored
 * record (whichever side wins). The hook for the mesh/local backends' merges.
 * @return crdt_replica_merge()'s result (1 installed, 0 not, <0 error).
 */
int crdt_resolvers_merge(struct crdt_resolvers *rs, struct crdt_replica *rep,
                         const struct crdt_rec_view *in);

/* ---- per-node counter slots ---- */

/**
 * Is node @p node (length @p len, not NUL-terminated) a live member? Counter
 * slots of dead members stop counting.
 */
typedef bool (*crdt_live_fn)(const char *node, size_t len, void *arg);

/**
 * Parse a counter slot value: a msgpack integer whose first byte is 0x80 or
 * above (every msgpack int but a positive fixint, which would read as text), or
 * a decimal integer in text (optionally signed, white space around it allowed,
 * so a JSON number works).
 * @return 0 or SM_EINVAL.
 */
int crdt_counter_parse(const uint8_t *value, size_t len, int64_t *out);

/** Encode a slot value (msgpack int64, 0xd3 + 8 bytes) into @p buf; returns its length (9). */
size_t crdt_counter_encode(int64_t v, uint8_t buf[9]);

/**
 * Build the slot key "<base><counter>/<node>" (e.g. "lb:conn:" + backend URL +
 * "/" + node id) into @p buf with a NUL. @p node must be non-empty and must not
 * contain '/'. @return key length, SM_EINVAL, or SM_EKEYLEN when it does not fit
 * in @p cap (or exceeds SM_DEFAULT_MAX_KEY).
 */
int crdt_counter_key(char *buf, size_t cap, const char *base, const char *counter,
                     const char *node);

/**
 * The merged value of one counter: the sum over the live slots under
 * @p prefix — "<base><counter>/", e.g. "lb:conn:http://10.0.0.1:8080/" — whose
 * node part (after the prefix, no further '/') satisfies @p is_live (NULL: every
 * node counts). Tombstoned, expired and unparsable slots are skipped. The sum
 * saturates at INT64_MIN/INT64_MAX.
 */
int64_t crdt_counter_sum(const struct crdt_replica *rep, const char *prefix, crdt_live_fn is_live,
                         void *arg, int64_t now_ms);

/** One counter's total from crdt_counter_totals(). */
struct crdt_counter_total {
    char *name;     /**< counter name, e.g. the backend URL (NUL-terminated) */
    int64_t sum;    /**< sum over live slots */
    uint32_t slots; /**< slots that counted */
};

/**
 * Every counter under @p base ("lb:conn:"), grouped by counter name (the key
 * between @p base and its last '/'), sorted by name. @p *out is allocated
 * (free with crdt_counter_totals_free()); @p *n receives the count.
 * @return 0 or SM_ENOMEM.
 */
int crdt_counter_totals(const struct crdt_replica *rep, const char *base, crdt_live_fn is_live,
                        void *arg, int64_t now_ms, struct crdt_counter_total **out, size_t *n);
void crdt_counter_totals_free(struct crdt_counter_total *t, size_t n);

#endif
