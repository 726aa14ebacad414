/* raft_admin.h: cluster administration of the raft backend (status, membership, backup). */
#ifndef SM_RAFT_ADMIN_H
#define SM_RAFT_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "statemesh.h"

/** One server of the raft configuration. */
struct sm_raft_server {
    uint64_t id;
    char address[256];
    int voter; /**< 1 voter, 0 stand-by/spare */
};

/** A snapshot of this node's raft state (filled by sm_raft_status()). */
struct sm_raft_status {
    uint64_t id;
    char address[256];
    const char *state;  /**< "follower", "candidate", "leader", "unavailable" */
    uint64_t leader_id; /**< 0 when unknown */
    char leader_address[256];
    uint64_t term;
    uint64_t last_index;
    uint64_t commit_index;
    uint64_t applied_index;
    size_t n_servers;
    struct sm_raft_server servers[16]; /**< the first 16 servers of the configuration */
    uint64_t rejected_peers;           /**< connections refused by authentication */
};

/**
 * Fill @p out for the raft backend of @p store. SM_ENOTSUP when the store has
 * no raft backend.
 */
int sm_raft_status(struct sm_store *store, struct sm_raft_status *out) SM_MUST_CHECK;

/**
 * Add server @p id at @p address ("host:port") as a voter. Runs on the
 * leader (forwarded when called on a follower); completes when the new
 * configuration is committed. The new node must be started with
 * raft.join=true (it then catches up from the leader, by snapshot when the
 * log was compacted). Same completion contract as sm_set().
 */
int sm_raft_add(struct sm_store *store, uint64_t id, const char *address, sm_cb cb,
                void *arg) SM_MUST_CHECK;
/** Remove server @p id from the configuration (forwarded to the leader). */
int sm_raft_remove(struct sm_store *store, uint64_t id, sm_cb cb, void *arg) SM_MUST_CHECK;
/**
 * Transfer leadership to voter @p id (0 = let raft pick one). Completes once
 * the transfer finished or timed out; status 0 means @p id (or some other
 * node when @p id is 0) now leads.
 */
int sm_raft_transfer(struct sm_store *store, uint64_t id, sm_cb cb, void *arg) SM_MUST_CHECK;

/**
 * `statemesh backup`: write a consistent snapshot of this node's replicated
 * state (as of its last applied entry) to @p path (mode 0600, written to a
 * temporary file and renamed). Restore by starting nodes on empty data dirs
 * with option raft.restore=PATH (see docs/raft.md). SM_ENOTSUP without a raft
 * backend, SM_EIO with a message in @p err.
 */
int sm_raft_backup(struct sm_store *store, const char *path, char *err,
                   size_t errlen) SM_MUST_CHECK;

#endif /* SM_RAFT_ADMIN_H */
