/* http.h: a small HTTP server layer: libmicrohttpd driven from a libev loop (one thread). */
#ifndef SMD_HTTP_H
#define SMD_HTTP_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct ev_loop;
struct smd_http;
struct smd_http_req;
struct smd_http_stream;

/**
 * @file
 * MHD runs in "external" epoll mode: its epoll descriptor is watched by an
 * ev_io and its next deadline by an ev_timer, so every callback runs on the
 * daemon's libev loop and handlers may call the store directly. A handler
 * either answers at once or suspends the request (smd_http_suspend) and
 * answers later from a store completion; answering a suspended request
 * resumes it. Streams (server-sent events) suspend while they have nothing
 * to send and are woken by smd_http_stream_wake().
 */

/** Route a complete request: answer it or suspend it before returning. */
typedef void (*smd_http_dispatch_fn)(struct smd_http_req *r, void *arg);
/** Largest body accepted for this method/URL (a longer one is refused with 413). */
typedef size_t (*smd_http_limit_fn)(const char *method, const char *url, void *arg);
/** Told of every answer (status code), e.g. to count requests by code. */
typedef void (*smd_http_reply_fn)(const char *method, unsigned status, void *arg);

/** Server settings. */
struct smd_http_opts {
    smd_http_dispatch_fn dispatch;
    smd_http_limit_fn body_limit; /**< NULL: 64 KiB for everything */
    smd_http_reply_fn on_reply;   /**< may be NULL */
    void *arg;                    /**< passed to the three callbacks */
    unsigned max_connections;     /**< 0: 1024 */
    unsigned timeout_s;           /**< idle connection timeout; 0: 60 */
};

/**
 * Open a listening TCP socket on "HOST:PORT" ("[V6]:PORT"; port 0 picks a
 * free one). The bound address is written to @p bound. 0 or SM_EIO/SM_EINVAL
 * with a message.
 */
int smd_http_listen_tcp(const char *hostport, int *fd, char *bound, size_t boundlen, char *err,
                        size_t errlen);
/** Open a listening unix socket at @p path (a stale socket file is replaced), mode 0660. */
int smd_http_listen_unix(const char *path, int *fd, char *err, size_t errlen);

/** Start serving on listening socket @p fd (the server owns it afterwards). */
int smd_http_new(struct ev_loop *loop, int fd, const struct smd_http_opts *opts,
                 struct smd_http **out, char *err, size_t errlen);
/**
 * Stop: end every stream, then close every connection. Requests still
 * suspended at this point must have been answered (the store closes first).
 */
void smd_http_delete(struct smd_http *h);
/** End every stream gracefully (their readers see closing == 1). */
void smd_http_close_streams(struct smd_http *h);
/** Number of suspended requests and open streams (tests, status). */
size_t smd_http_nstreams(const struct smd_http *h);

/* ---- requests (all strings borrowed for the request's lifetime) ---- */
const char *smd_http_method(const struct smd_http_req *r);
/** Decoded path, without the query string. */
const char *smd_http_path(const struct smd_http_req *r);
/** A query argument (decoded) or NULL; "" for "?flag". */
const char *smd_http_query(const struct smd_http_req *r, const char *name);
/** A request header or NULL. */
const char *smd_http_header(const struct smd_http_req *r, const char *name);
/** The body received (not NUL-terminated; a NUL byte follows it for convenience). */
const char *smd_http_body(const struct smd_http_req *r, size_t *len);
/** Per-request slot for the handler. */
void smd_http_set_data(struct smd_http_req *r, void *data);
void *smd_http_get_data(const struct smd_http_req *r);

/**
 * Answer with @p status and a body (copied). @p headers is a NULL-terminated
 * list of name, value pairs (may be NULL). Resumes a suspended request.
 * Returns 0 or SM_ENOMEM (the connection is then closed).
 */
int smd_http_reply(struct smd_http_req *r, unsigned status, const char *content_type,
                   const void *body, size_t len, const char *const *headers);
/** Answer with a JSON object (a jansson json_t *, reference stolen). */
int smd_http_reply_json(struct smd_http_req *r, unsigned status, void *json,
                        const char *const *headers);
/** Answer with {"error": message, "code": code}. */
int smd_http_error(struct smd_http_req *r, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** Mark the request as answered later (from a completion callback). */
void smd_http_suspend(struct smd_http_req *r);

/* ---- streams ---- */
/**
 * Stream reader: copy up to @p max bytes into @p buf and return how many;
 * return 0 when there is nothing to send now (the stream sleeps until
 * smd_http_stream_wake), or -1 to end the stream. @p closing is 1 once the
 * server is shutting down: send what is left, then end.
 */
typedef ssize_t (*smd_stream_read_fn)(void *arg, char *buf, size_t max, int closing);
/** Called once when the stream's connection is gone (free @p arg here). */
typedef void (*smd_stream_free_fn)(void *arg);
/** Answer with an endless 200 stream. *out stays valid until free_fn runs. */
int smd_http_reply_stream(struct smd_http_req *r, const char *content_type, smd_stream_read_fn rd,
                          smd_stream_free_fn fr, void *arg, const char *const *headers,
                          struct smd_http_stream **out);
/** New data is ready: resume the stream if it sleeps. */
void smd_http_stream_wake(struct smd_http_stream *s);

#endif /* SMD_HTTP_H */
