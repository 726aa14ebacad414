/* raft_fsm.h: the replicated state machine of the raft backend (keys, TTLs, locks), I/O-free. */
#ifndef SM_RAFT_FSM_H
#define SM_RAFT_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/**
 * @file
 * Commands and log entries are msgpack arrays.
 *
 * A *command* is what a client asks for (built on any node):
 *
 *     [SMR_OP_SET, [[key, value(bin), ttl_ms], ...]]   atomic multi-key set
 *     [SMR_OP_DEL, key]
 *     [SMR_OP_LOCK, name, token, ttl_ms]
 *     [SMR_OP_RENEW, name, token, ttl_ms]
 *     [SMR_OP_UNLOCK, name, token]
 *     [SMR_OP_PURGE]                                   drop expired keys (leader-proposed)
 *     [SMR_OP_NOOP]                                    read barrier (changes nothing)
 *     [SMR_OP_GET, [key, ...]]                         read, never logged
 *     [SMR_OP_PING]                                    quorum check, never logged
 *     [SMR_OP_ADD|REMOVE|TRANSFER, id(, address)]      membership, never logged as commands
 *
 * A *log entry* is a command stamped by the leader that appended it:
 *
 *     [1, time_ms, origin, command]
 *
 * Every decision that depends on time (is a key or lock expired?) uses the
 * FSM time T = max(previous T, entry time_ms), never the local clock, so
 * every replica applies every entry identically. Versions and fencing tokens
 * are `index_base + raft index` of the entry that wrote them (index_base is
 * carried over from a restored backup so they keep increasing).
 */

enum smr_op {
    SMR_OP_SET = 1,
    SMR_OP_DEL = 2,
    SMR_OP_LOCK = 3,
    SMR_OP_RENEW = 4,
    SMR_OP_UNLOCK = 5,
    SMR_OP_PURGE = 6,
    SMR_OP_NOOP = 7, /* read barrier: changes nothing */
    SMR_OP_GET = 10,
    SMR_OP_PING = 11,
    SMR_OP_ADD = 20,
    SMR_OP_REMOVE = 21,
    SMR_OP_TRANSFER = 22,
};

/** Lock tokens are this many hex characters. */
#define SMR_TOKEN_LEN 32

/** One stored key. */
struct smr_kv {
    struct smr_kv *next; /* hash chain */
    char *key;
    uint8_t *value;
    size_t value_len;
    uint64_t version;
    uint64_t time_ms;
    int64_t expires_ms; /* 0 = never */
    char origin[SM_MAX_NODE_ID + 1];
};

/** One lock. A released lock keeps its token so a retried release is answered "ok". */
struct smr_lock {
    struct smr_lock *next;
    char *name;
    char token[SMR_TOKEN_LEN + 1];
    uint64_t fence;
    int64_t expires_ms;
    bool released;
    char owner[SM_MAX_NODE_ID + 1];
};

/** Outcome of applying one entry (owned by the FSM, valid until the next apply). */
struct smr_result {
    int status;
    uint64_t version;
    uint64_t fence;
    int64_t expires_ms;
    char token[SMR_TOKEN_LEN + 1];
};

/** Change notification from apply (for watches). Pointers valid during the call. */
typedef void (*smr_emit_fn)(void *arg, enum sm_event_type type, const char *key, const void *value,
                            size_t value_len, uint64_t version, uint64_t time_ms,
                            const char *origin);

struct smr_fsm {
    struct smr_kv **kv;
    size_t kv_cap, kv_count;
    struct smr_lock **locks;
    size_t lock_cap, lock_count;
    uint64_t now_ms;     /* FSM time: max of the entry times applied so far */
    uint64_t index_base; /* added to raft indexes (from a restored backup) */
    uint64_t last_index; /* index of the last entry applied */
    int64_t min_expires; /* lower bound of the live expiries (0 = none), for the purge hint */
    struct smr_result res;
    smr_emit_fn emit;
    void *emit_arg;
};

/** Initialise an empty FSM. SM_ENOMEM. */
int smr_fsm_init(struct smr_fsm *f);
/** Free everything. */
void smr_fsm_close(struct smr_fsm *f);
/**
 * Apply the log entry @p buf at raft index @p index. Never fails for a
 * well-formed or malformed entry (a malformed one yields res.status
 * SM_EPROTO and changes nothing): the raft log must always make progress.
 */
const struct smr_result *smr_fsm_apply(struct smr_fsm *f, uint64_t index, const void *buf,
                                       size_t len);
/** Find a live key at time @p now_ms (NULL when missing or expired). */
const struct smr_kv *smr_fsm_get(const struct smr_fsm *f, const char *key, int64_t now_ms);
/** Iterate live keys with @p prefix at @p now_ms; fn returns non-zero to stop (its value is
 * returned). */
int smr_fsm_list(const struct smr_fsm *f, const char *prefix, int64_t now_ms,
                 int (*fn)(const struct smr_kv *kv, void *arg), void *arg);
/** Find a lock (live or not). */
const struct smr_lock *smr_fsm_lock(const struct smr_fsm *f, const char *name);
/** Whether some key has expired by @p now_ms (so the leader should propose a purge). */
bool smr_fsm_needs_purge(const struct smr_fsm *f, int64_t now_ms);

/** Serialise the whole state (msgpack, malloc'd into *out). SM_ENOMEM. */
int smr_fsm_snapshot(const struct smr_fsm *f, void **out, size_t *len);
/** Replace the state with a snapshot. SM_EPROTO on malformed input (state unchanged). */
int smr_fsm_restore(struct smr_fsm *f, const void *buf, size_t len);

/** Build a log entry (malloc'd) from a command: [1, time_ms, origin, cmd]. */
int smr_entry_build(uint64_t time_ms, const char *origin, const void *cmd, size_t cmdlen,
                    void **out, size_t *outlen);

#endif /* SM_RAFT_FSM_H */
