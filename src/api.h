/* api.h: the statemeshd HTTP/JSON API (kv, watch, members, locks, status, metrics). */
#ifndef SMD_API_H
#define SMD_API_H

#include "http.h"

#include <stddef.h>
#include <stdint.h>

struct sm_store;
struct smd_api;

/** API settings (strings borrowed during smd_api_new only). */
struct smd_api_opts {
    const char *token;         /**< bearer token for write endpoints, or NULL */
    size_t max_body;           /**< largest JSON body of typed/lock endpoints (0: 64 KiB) */
    size_t sse_queue;          /**< events queued per SSE client (0: 256) */
    uint64_t sse_heartbeat_ms; /**< keep-alive comment interval (0: 15 s) */
    const char *storage;       /**< default backend name, for /v1/status */
};

/** Create the API on @p store. NULL on OOM. */
struct smd_api *smd_api_new(struct sm_store *store, const struct smd_api_opts *opts);
/** Free it (after every HTTP server using it is gone). */
void smd_api_delete(struct smd_api *api);
/** Replace the bearer token (SIGHUP). 0 or SM_ENOMEM. */
int smd_api_set_token(struct smd_api *api, const char *token);
/** Detach from the store before it closes: every SSE stream ends. */
void smd_api_detach(struct smd_api *api);

/** The HTTP server options for this API (dispatch, body limits, counters). */
void smd_api_http_opts(struct smd_api *api, struct smd_http_opts *out);

/** Count of SSE events dropped because a client's queue was full. */
uint64_t smd_api_sse_dropped(const struct smd_api *api);

#endif /* SMD_API_H */
