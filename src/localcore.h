/* localcore.h: the in-memory replica engine behind the local backend, shared
 * by the mesh backend (which adds a gossip node on top). */
#ifndef SM_LOCALCORE_H
#define SM_LOCALCORE_H

#include "backend.h"
#include "crdt/replica.h"

#include <ev.h>

struct sm_localcore;

/** Hooks an extending backend (mesh) sets after open. */
struct sm_localcore_hooks {
    /** A local write was merged into the replica: spread it. */
    void (*on_local_write)(struct sm_localcore *lc, const struct crdt_rec_view *v);
    /** Fill a record before it is merged (e.g. sign it); may be NULL. */
    void (*prepare)(struct sm_localcore *lc, struct crdt_rec_view *v, uint8_t *sigbuf);
};

struct pend; /* deferred completion */

struct sm_localcore {
    struct sm_backend base;
    struct crdt_replica *rep;
    struct ev_loop *loop;
    struct sm_localcore_hooks hooks;
    struct crdt_resolvers *resolvers; /* may be NULL */
    uint64_t hlc_last;
    uint64_t sweep_ms, grace_ms;
    ev_timer sweep;
    ev_idle wake;
    ev_check run;
    struct pend *q; /* ring of deferred completions */
    size_t qcap, qhead, qcount;
    bool closing;
};

/**
 * Allocate @p size bytes (>= sizeof(struct sm_localcore), so a backend can
 * embed it first) and open the engine. Options "<optprefix>sweep_interval"
 * and "<optprefix>tombstone_grace" are read from @p cfg.
 */
int sm_localcore_open(struct sm_store *st, const struct sm_config *cfg, const char *optprefix,
                      uint64_t default_grace_ms, size_t size, struct sm_localcore **out, char *err,
                      size_t errlen);
/** Complete pending operations with SM_ECLOSED and free the engine's resources (not lc). */
void sm_localcore_close(struct sm_localcore *lc);

/** Next HLC timestamp for a local event at wall time @p wall_ms. */
uint64_t sm_localcore_hlc(struct sm_localcore *lc, uint64_t wall_ms);

/* Backend operations, usable directly in another backend's vtable. */
int sm_localcore_get_now(struct sm_backend *b, const char *key, struct sm_entry *out);
int sm_localcore_list(struct sm_backend *b, const char *prefix, sm_list_fn fn, void *arg);
int sm_localcore_get_multi(struct sm_backend *b, const char *const *keys, size_t n, sm_cb cb,
                           void *arg);
int sm_localcore_set_multi(struct sm_backend *b, const struct sm_kv *items, size_t n, sm_cb cb,
                           void *arg);
int sm_localcore_del(struct sm_backend *b, const char *key, sm_cb cb, void *arg);
int sm_localcore_ping(struct sm_backend *b, sm_cb cb, void *arg);
/** Counter sum over every slot (the local backend has no notion of liveness). */
int sm_localcore_counter_sum(struct sm_backend *b, const char *prefix, int64_t *out);
/** Publish the watch event for a remote record that changed the replica. */
void sm_localcore_emit_remote(struct sm_localcore *lc, const struct crdt_rec_view *rec,
                              const struct crdt_rec_view *old);

#endif
