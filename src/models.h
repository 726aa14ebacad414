/* models.h: the seed's typed models (backend health, load balancer, circuit
 * breaker) as C types, their msgpack and JSON encodings, and their records. */
#ifndef SM_MODELS_H
#define SM_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "crdt/record.h"
#include "crdt/resolver.h"

struct crdt_replica;

/*
 * Records (key → resolver):
 *   backend:health:<url>      BackendHealthState, msgpack      → "backend_health"
 *                             (unhealthy > maintenance > rate-limited > healthy
 *                              within a version)
 *   circuit:<url>             CircuitBreakerState, msgpack     → "circuit_breaker"
 *                             (open > half-open > closed within a version)
 *   lb:state:<strategy>       LoadBalancerState without its backend_states, msgpack
 *                             (strategy, last_rotation, weighted_counters…) → LWW
 *   lb:conn:<url>/<node>      one node's connection count for a backend (msgpack
 *                             int64) → "connection_counter": backend_states[url] is the sum
 *                             over the slots of live members
 * Model versions are the record versions (the seed's Version fields); the
 * record's precedence comes from crdt_resolvers_precedence() on the value.
 * Times are int64 ms since the Unix epoch, 0 = unset (Go's zero time).
 */

#define SM_MODEL_URL_MAX      200             /**< bytes of a backend URL */
#define SM_MODEL_NODE_MAX     CRDT_MAX_ORIGIN /**< bytes of a node id (updated_by) */
#define SM_MODEL_STRATEGY_MAX 64              /**< bytes of a load-balancing strategy name */
#define SM_LB_MAX_ENTRIES     256             /**< entries per map in a LoadBalancerState */
#define SM_LB_STATE_PREFIX    "lb:state:"

/** Backend health states (the seed's BackendState). */
enum sm_backend_state {
    SM_BACKEND_UNKNOWN = 0,
    SM_BACKEND_HEALTHY,
    SM_BACKEND_UNHEALTHY,
    SM_BACKEND_RATE_LIMITED,
    SM_BACKEND_MAINTENANCE,
};

/** Circuit breaker states. */
enum sm_circuit_state {
    SM_CIRCUIT_CLOSED = 0,
    SM_CIRCUIT_OPEN,
    SM_CIRCUIT_HALF_OPEN,
};

/** "unknown", "healthy", "unhealthy", "rate-limited", "maintenance" (NULL if out of range). */
const char *sm_backend_state_name(enum sm_backend_state s);
/** Parse a state name (case-insensitive, '_' = '-'). 0 or SM_EINVAL. */
int sm_backend_state_parse(const char *s, size_t len, enum sm_backend_state *out);
/** "closed", "open", "half-open" (NULL if out of range). */
const char *sm_circuit_state_name(enum sm_circuit_state s);
int sm_circuit_state_parse(const char *s, size_t len, enum sm_circuit_state *out);

/** BackendHealthState. Plain value type: no resources, copy freely. */
struct sm_backend_health {
    char url[SM_MODEL_URL_MAX + 1];
    enum sm_backend_state state;
    int64_t last_check_ms;
    int64_t last_healthy_ms;
    int64_t consecutive_fails;
    int64_t consecutive_oks;
    int64_t rate_limit_count;
    char updated_by[SM_MODEL_NODE_MAX + 1];
    int64_t updated_at_ms;
    int64_t version;
};

/** CircuitBreakerState. Plain value type. */
struct sm_circuit_breaker {
    char backend_url[SM_MODEL_URL_MAX + 1];
    enum sm_circuit_state state;
    int64_t last_state_change_ms;
    int32_t consecutive_fails;
    int32_t consecutive_success;
    int32_t requests_in_half_open;
    char updated_by[SM_MODEL_NODE_MAX + 1];
    int64_t updated_at_ms;
    int64_t version;
};

/** One URL → count entry of a LoadBalancerState map. */
struct sm_lb_entry {
    char *url; /**< owned by the state */
    int64_t value;
};

/**
 * LoadBalancerState. Owns its map arrays: sm_lb_state_init() before use,
 * sm_lb_state_close() after. Maps hold unique URLs (setting one again replaces it).
 */
struct sm_lb_state {
    char strategy[SM_MODEL_STRATEGY_MAX + 1];
    struct sm_lb_entry *backend_states; /**< URL → connection count */
    size_t n_backend_states;
    int32_t last_rotation;                 /**< round-robin position */
    struct sm_lb_entry *weighted_counters; /**< URL → current weight */
    size_t n_weighted_counters;
    char updated_by[SM_MODEL_NODE_MAX + 1];
    int64_t updated_at_ms;
    int64_t version;
};

void sm_lb_state_init(struct sm_lb_state *s);
/** Free the maps and reset to the init state. */
void sm_lb_state_close(struct sm_lb_state *s);
/** Set backend_states[url] = value. 0, SM_EINVAL (empty/too long URL), SM_ERANGE (too many),
 * SM_ENOMEM. */
int sm_lb_state_set_conn(struct sm_lb_state *s, const char *url, int64_t value);
/** Set weighted_counters[url] = value. Same returns. */
int sm_lb_state_set_weight(struct sm_lb_state *s, const char *url, int64_t value);
/** backend_states[url] (0 if absent; @p found says whether it was there). */
int64_t sm_lb_state_conn(const struct sm_lb_state *s, const char *url, bool *found);
int64_t sm_lb_state_weight(const struct sm_lb_state *s, const char *url, bool *found);

/* ---- msgpack: a map keyed by the JSON field names (unknown keys are skipped on
 * decode, so newer writers can add fields). Decoders are bounded and reject
 * truncated input, wrong types, over-long strings and trailing bytes with
 * SM_EINVAL; they never read past @p len. ---- */

/** Encode into @p buf (capacity @p cap): 0 and @p *len, or SM_EVALUELEN if it does not fit. */
int sm_health_encode(const struct sm_backend_health *s, uint8_t *buf, size_t cap, size_t *len);
int sm_health_decode(const uint8_t *buf, size_t len, struct sm_backend_health *out);
int sm_circuit_encode(const struct sm_circuit_breaker *s, uint8_t *buf, size_t cap, size_t *len);
int sm_circuit_decode(const uint8_t *buf, size_t len, struct sm_circuit_breaker *out);
int sm_lb_state_encode(const struct sm_lb_state *s, uint8_t *buf, size_t cap, size_t *len);
/** @p out must be initialised; its previous maps are freed (also on error). May give SM_ENOMEM. */
int sm_lb_state_decode(const uint8_t *buf, size_t len, struct sm_lb_state *out);

/* ---- JSON (the seed's field names; times as RFC 3339 strings like Go's
 * time.Time, integer ms accepted too). from_json is strict: a wrong type, a
 * value out of range, an unknown state or field gives SM_EINVAL with a
 * message naming the field in @p err (may be NULL). ---- */

/** New JSON object (caller json_decref()s), NULL on OOM. */
json_t *sm_health_to_json(const struct sm_backend_health *s);
int sm_health_from_json(const json_t *j, struct sm_backend_health *out, char *err, size_t errcap);
json_t *sm_circuit_to_json(const struct sm_circuit_breaker *s);
int sm_circuit_from_json(const json_t *j, struct sm_circuit_breaker *out, char *err, size_t errcap);
json_t *sm_lb_state_to_json(const struct sm_lb_state *s);
/** @p out must be initialised; replaced on success, reset on error. */
int sm_lb_state_from_json(const json_t *j, struct sm_lb_state *out, char *err, size_t errcap);

/** Text forms: compact JSON, malloc'd (free()), NULL on OOM. */
char *sm_health_to_json_str(const struct sm_backend_health *s);
char *sm_circuit_to_json_str(const struct sm_circuit_breaker *s);
char *sm_lb_state_to_json_str(const struct sm_lb_state *s);
/** Parse JSON text of @p len bytes; syntax errors name line and column in @p err. */
int sm_health_from_json_str(const char *txt, size_t len, struct sm_backend_health *out, char *err,
                            size_t errcap);
int sm_circuit_from_json_str(const char *txt, size_t len, struct sm_circuit_breaker *out, char *err,
                             size_t errcap);
int sm_lb_state_from_json_str(const char *txt, size_t len, struct sm_lb_state *out, char *err,
                              size_t errcap);

/** Format ms since the epoch as RFC 3339 in UTC (Go style: fraction trimmed; 0 is
 *  "0001-01-01T00:00:00Z"). @p buf needs 32 bytes. false if outside years 1..9999. */
bool sm_time_format(int64_t ms, char buf[32]);
/** Parse RFC 3339 ("Z" or ±hh:mm offset, fraction cut to ms). 0 or SM_EINVAL. */
int sm_time_parse(const char *s, size_t len, int64_t *ms);

/* ---- records ---- */

/** Keys. Each returns the key length, SM_EINVAL (empty part) or SM_EKEYLEN. */
int sm_health_key(const char *url, char *buf, size_t cap);
int sm_circuit_key(const char *url, char *buf, size_t cap);
int sm_lb_state_key(const char *strategy, char *buf, size_t cap);
/** "lb:conn:<url>/<node>"; @p node must not contain '/'. */
int sm_lb_conn_key(const char *url, const char *node, char *buf, size_t cap);

/**
 * Receives one record of a model. @p version is the record version to write
 * (the model's own), or 0 for "the stored version + 1" (counter slots). All
 * pointers are valid only during the call. Non-zero return stops and is returned.
 */
typedef int (*sm_model_emit_fn)(const char *key, size_t klen, const uint8_t *value, size_t vlen,
                                uint64_t version, void *arg);

/**
 * The records of a model. Health and circuit give one record each (version =
 * the model's version, which must be >= 1). A LoadBalancerState written by
 * @p node gives "lb:state:<strategy>" (without backend_states, version = the
 * model's) plus one counter slot per backend_states entry. Returns 0, the
 * emitter's non-zero value, SM_EINVAL (missing URL/strategy/node, version < 1),
 * SM_EKEYLEN or SM_EVALUELEN (does not fit SM_DEFAULT_MAX_VALUE).
 */
int sm_health_records(const struct sm_backend_health *s, sm_model_emit_fn emit, void *arg);
int sm_circuit_records(const struct sm_circuit_breaker *s, sm_model_emit_fn emit, void *arg);
int sm_lb_state_records(const struct sm_lb_state *s, const char *node, sm_model_emit_fn emit,
                        void *arg);

/**
 * Read models back from a replica (live records at @p now_ms). SM_ENOTFOUND
 * when missing, SM_EINVAL when the stored value does not decode.
 */
int sm_health_load(const struct crdt_replica *rep, const char *url, int64_t now_ms,
                   struct sm_backend_health *out);
int sm_circuit_load(const struct crdt_replica *rep, const char *url, int64_t now_ms,
                    struct sm_circuit_breaker *out);
/**
 * The aggregated LoadBalancerState for @p strategy: "lb:state:<strategy>" for
 * its LWW fields, and backend_states[url] = the sum of the live members' slots
 * (@p is_live as in crdt_counter_sum(); NULL counts every slot). SM_ENOTFOUND
 * when there is neither the state record nor any slot.
 */
int sm_lb_state_load(const struct crdt_replica *rep, const char *strategy, crdt_live_fn is_live,
                     void *arg, int64_t now_ms, struct sm_lb_state *out);

#endif
