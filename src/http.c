/* http.c: a small HTTP server layer: libmicrohttpd driven from a libev loop (one thread). */
#include "config.h"

#include "http.h"

#include "daemon_config.h"
#include "statemesh.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_LIMIT (64 * 1024)

struct smd_http {
    struct MHD_Daemon *mhd;
    struct ev_loop *loop;
    ev_io io;       /* MHD's epoll descriptor */
    ev_timer timer; /* MHD's next deadline */
    ev_timer kick;  /* run MHD soon: a connection was resumed */
    struct smd_http_opts opts;
    struct smd_http_stream *streams; /* open streams (doubly linked) */
    size_t nstreams;
    int closing;
};

struct smd_http_req {
    struct smd_http *h;
    struct MHD_Connection *conn;
    const char *method, *url;
    char *body;
    size_t body_len, limit;
    int too_large;
    int dispatched;
    int suspended;
    struct MHD_Response *resp; /* answer prepared while suspended */
    unsigned status;
    void *data;
};

struct smd_http_stream {
    struct smd_http *h;
    struct MHD_Connection *conn;
    struct smd_http_stream *prev, *next;
    smd_stream_read_fn rd;
    smd_stream_free_fn fr;
    void *arg;
    int sleeping;
};

/* ---- listening sockets ---- */

int smd_http_listen_tcp(const char *hostport, int *fdp, char *bound, size_t boundlen, char *err,
                        size_t errlen)
{
    char host[256];
    unsigned port;
    if (smd_parse_hostport(hostport, host, sizeof host, &port) < 0) {
        snprintf(err, errlen, "bad HTTP address '%s' (want HOST:PORT)", hostport);
        return SM_EINVAL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%u", port);
    int gr = getaddrinfo(*host ? host : NULL, ps, &hints, &ai);
    if (gr != 0) {
        snprintf(err, errlen, "HTTP address '%s': %s", hostport, gai_strerror(gr));
        return SM_EINVAL;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0) break;
        e = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        snprintf(err, errlen, "HTTP listen on %s: %s", hostport, strerror(e));
        return SM_EIO;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned bport = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
            bport = ntohs(s6->sin6_port);
            snprintf(bound, boundlen, "[%s]:%u", ip, bport);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
            bport = ntohs(s4->sin_port);
            snprintf(bound, boundlen, "%s:%u", ip, bport);
        }
    }
    *fdp = fd;
    return 0;
}

int smd_http_listen_unix(const char *path, int *fdp, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "unix socket path too long: %s", path);
        return SM_EINVAL;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) goto fail;
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path); /* stale socket */
    mode_t old = umask(007);
    int b = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (b != 0 || listen(fd, 128) != 0) goto fail;
    *fdp = fd;
    return 0;
fail:
    snprintf(err, errlen, "unix socket %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return SM_EIO;
}

/* ---- MHD on libev ---- */

static void rearm(struct smd_http *h)
{
    MHD_UNSIGNED_LONG_LONG ms;
    ev_timer_stop(h->loop, &h->timer);
    if (MHD_get_timeout(h->mhd, &ms) == MHD_YES) {
        ev_timer_set(&h->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(h->loop, &h->timer);
    }
}

static void run_mhd(struct smd_http *h)
{
    MHD_run(h->mhd);
    rearm(h);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    run_mhd(w->data);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    run_mhd(w->data);
}

/* MHD signals resumption through its ITC, but in external epoll mode that
 * does not reliably wake the outer loop: run MHD ourselves on the next
 * loop iteration instead. */
static void kick(struct smd_http *h)
{
    if (!ev_is_active(&h->kick)) ev_timer_start(h->loop, &h->kick);
}

static int queue(struct smd_http_req *r, struct MHD_Response *resp, unsigned status)
{
    struct smd_http *h = r->h;
    enum MHD_Result ok = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    if (h->opts.on_reply) h->opts.on_reply(r->method, status, h->opts.arg);
    return ok == MHD_YES ? 0 : SM_EIO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct smd_http *h = cls;
    struct smd_http_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->h = h;
        r->conn = conn;
        r->method = method;
        r->url = url;
        r->limit =
            h->opts.body_limit ? h->opts.body_limit(method, url, h->opts.arg) : DEFAULT_LIMIT;
        *con_cls = r;
        /* Refuse an oversized body from its Content-Length, before reading it:
         * MHD then skips the upload (and closes the connection). */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || *end || n > r->limit) {
                r->dispatched = 1;
                if (smd_http_error(r, 413, "value_too_large",
                                   "body of %s bytes is over the limit of %zu bytes", cl,
                                   r->limit) < 0)
                    return MHD_NO;
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->dispatched && !r->too_large) {
            size_t n = *upload_size;
            if (r->body_len + n > r->limit) {
                r->too_large = 1; /* chunked upload: keep reading, keep nothing */
                free(r->body);
                r->body = NULL;
                r->body_len = 0;
            } else {
                char *nb = realloc(r->body, r->body_len + n + 1);
                if (!nb) return MHD_NO;
                memcpy(nb + r->body_len, upload, n);
                r->body = nb;
                r->body_len += n;
                r->body[r->body_len] = '\0';
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->resp) { /* resumed with an answer ready */
        struct MHD_Response *resp = r->resp;
        r->resp = NULL;
        return queue(r, resp, r->status) == 0 ? MHD_YES : MHD_NO;
    }
    if (r->dispatched) return MHD_YES;
    r->dispatched = 1;
    if (r->too_large)
        return smd_http_error(r, 413, "value_too_large", "body is over the limit of %zu bytes",
                              r->limit) == 0
                   ? MHD_YES
                   : MHD_NO;
    h->opts.dispatch(r, h->opts.arg);
    if (r->suspended) MHD_suspend_connection(conn);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    struct smd_http_req *r = *con_cls;
    if (!r) return;
    if (r->resp) MHD_destroy_response(r->resp);
    free(r->body);
    free(r);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls, (void)fmt, (void)ap; /* MHD's own chatter stays quiet; errors reach clients */
}

int smd_http_new(struct ev_loop *loop, int fd, const struct smd_http_opts *opts,
                 struct smd_http **out, char *err, size_t errlen)
{
    struct smd_http *h = calloc(1, sizeof *h);
    if (!h) {
        close(fd);
        return SM_ENOMEM;
    }
    h->loop = loop;
    h->opts = *opts;
    unsigned maxc = opts->max_connections ? opts->max_connections : 1024;
    unsigned tmo = opts->timeout_s ? opts->timeout_s : 60;
    h->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL,
                              NULL, on_request, h, MHD_OPTION_LISTEN_SOCKET, fd,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                              MHD_OPTION_CONNECTION_LIMIT, maxc, MHD_OPTION_CONNECTION_TIMEOUT, tmo,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_END);
    if (!h->mhd) {
        snprintf(err, errlen, "cannot start the HTTP server (libmicrohttpd)");
        close(fd);
        free(h);
        return SM_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info) {
        snprintf(err, errlen, "libmicrohttpd without epoll support");
        MHD_stop_daemon(h->mhd);
        free(h);
        return SM_EIO;
    }
    ev_io_init(&h->io, io_cb, info->epoll_fd, EV_READ);
    h->io.data = h;
    ev_io_start(loop, &h->io);
    ev_timer_init(&h->timer, timer_cb, 0., 0.);
    h->timer.data = h;
    ev_timer_init(&h->kick, timer_cb, 0., 0.);
    h->kick.data = h;
    rearm(h);
    *out = h;
    return 0;
}

void smd_http_close_streams(struct smd_http *h)
{
    if (!h) return;
    h->closing = 1;
    for (struct smd_http_stream *s = h->streams; s; s = s->next) smd_http_stream_wake(s);
}

size_t smd_http_nstreams(const struct smd_http *h)
{
    return h ? h->nstreams : 0;
}

void smd_http_delete(struct smd_http *h)
{
    if (!h) return;
    smd_http_close_streams(h);
    /* let resumed streams write their last bytes and end */
    for (int i = 0; i < 4 && h->nstreams; i++) MHD_run(h->mhd);
    ev_io_stop(h->loop, &h->io);
    ev_timer_stop(h->loop, &h->timer);
    ev_timer_stop(h->loop, &h->kick);
    MHD_stop_daemon(h->mhd); /* closes the listening socket too */
    free(h);
}

/* ---- request accessors ---- */

const char *smd_http_method(const struct smd_http_req *r)
{
    return r->method;
}

const char *smd_http_path(const struct smd_http_req *r)
{
    return r->url;
}

const char *smd_http_query(const struct smd_http_req *r, const char *name)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    if (v) return v;
    /* "?flag" without '=': MHD reports it with a NULL value */
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), NULL,
                                      NULL) == MHD_YES)
        return "";
    return NULL;
}

const char *smd_http_header(const struct smd_http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *smd_http_body(const struct smd_http_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body ? r->body : "";
}

void smd_http_set_data(struct smd_http_req *r, void *data)
{
    r->data = data;
}

void *smd_http_get_data(const struct smd_http_req *r)
{
    return r->data;
}

/* ---- answers ---- */

static void add_headers(struct MHD_Response *resp, const char *ctype, const char *const *headers)
{
    if (ctype) MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
}

static int deliver(struct smd_http_req *r, struct MHD_Response *resp, unsigned status)
{
    if (r->suspended) {
        /* answered from a completion: park it and let MHD call us again */
        r->resp = resp;
        r->status = status;
        r->suspended = 0;
        MHD_resume_connection(r->conn);
        kick(r->h);
        return 0;
    }
    return queue(r, resp, status);
}

int smd_http_reply(struct smd_http_req *r, unsigned status, const char *content_type,
                   const void *body, size_t len, const char *const *headers)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        if (r->suspended) {
            r->suspended = 0;
            MHD_resume_connection(r->conn); /* no answer: MHD closes the connection */
            kick(r->h);
        }
        return SM_ENOMEM;
    }
    add_headers(resp, content_type, headers);
    return deliver(r, resp, status);
}

int smd_http_reply_json(struct smd_http_req *r, unsigned status, void *json,
                        const char *const *headers)
{
    json_t *j = json;
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s)
        return smd_http_reply(r, 500, "application/json", "{\"error\":\"out of memory\"}", 25,
                              headers);
    size_t n = strlen(s);
    s[n] = '\0';
    /* one trailing newline makes curl output readable */
    char *t = realloc(s, n + 2);
    if (t) {
        s = t;
        s[n++] = '\n';
        s[n] = '\0';
    }
    int rc = smd_http_reply(r, status, "application/json", s, n, headers);
    free(s);
    return rc;
}

int smd_http_error(struct smd_http_req *r, unsigned status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:s,s:s}", "error", msg, "code", code);
    if (!j)
        return smd_http_reply(r, status, "application/json", "{\"error\":\"out of memory\"}", 25,
                              NULL);
    return smd_http_reply_json(r, status, j, NULL);
}

void smd_http_suspend(struct smd_http_req *r)
{
    r->suspended = 1;
}

/* ---- streams ---- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct smd_http_stream *s = cls;
    ssize_t n = s->rd(s->arg, buf, max, s->h->closing);
    if (n > 0) return n;
    if (n < 0 || s->h->closing) return MHD_CONTENT_READER_END_OF_STREAM;
    /* nothing to send: sleep until smd_http_stream_wake (no busy loop) */
    s->sleeping = 1;
    MHD_suspend_connection(s->conn);
    return 0;
}

static void stream_free(void *cls)
{
    struct smd_http_stream *s = cls;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->h->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    s->h->nstreams--;
    if (s->fr) s->fr(s->arg);
    free(s);
}

int smd_http_reply_stream(struct smd_http_req *r, const char *content_type, smd_stream_read_fn rd,
                          smd_stream_free_fn fr, void *arg, const char *const *headers,
                          struct smd_http_stream **out)
{
    struct smd_http_stream *s = calloc(1, sizeof *s);
    if (!s) return SM_ENOMEM;
    s->h = r->h;
    s->conn = r->conn;
    s->rd = rd;
    s->fr = fr;
    s->arg = arg;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, s, stream_free);
    if (!resp) {
        free(s);
        return SM_ENOMEM;
    }
    s->next = r->h->streams;
    if (s->next) s->next->prev = s;
    r->h->streams = s;
    r->h->nstreams++;
    add_headers(resp, content_type, headers);
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    *out = s;
    /* from here on stream_free owns s and arg, whatever queueing does */
    deliver(r, resp, 200);
    return 0;
}

void smd_http_stream_wake(struct smd_http_stream *s)
{
    if (!s->sleeping) return;
    s->sleeping = 0;
    MHD_resume_connection(s->conn);
    kick(s->h);
}
