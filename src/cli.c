/* cli.c: the statemesh command-line tool: CA/certificates, and a client of statemeshd's HTTP API.
 */
#include "config.h"

#include "crypto/cert.h"
#include "statemesh.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ADDR "127.0.0.1:8500"
#define MAX_RESPONSE (64u << 20)
#define EXIT_OK      0
#define EXIT_ERR     1
#define EXIT_USAGE   2

static const char usage_text[] =
    "Usage: statemesh [--addr HOST:PORT] [--json] COMMAND [ARGS]\n"
    "\n"
    "A client of the local statemeshd's HTTP API, and the tool that creates the\n"
    "cluster CA and node certificates.\n"
    "\n"
    "Certificates:\n"
    "  ca init DIR                          create a cluster CA: DIR/ca.key (secret,\n"
    "                                       0600) and DIR/ca.pub\n"
    "  cert issue --ca DIR --node-id ID --out DIR [--days N]\n"
    "                                       issue a node key and certificate signed by\n"
    "                                       the CA: OUT/ID.key (0600) and OUT/ID.cert\n"
    "  keyring new FILE                     create a cluster encryption key (0600) for\n"
    "                                       mesh.keyring (a list: primary key first)\n"
    "\n"
    "Keys and values:\n"
    "  get KEY                              print the value (raw bytes)\n"
    "  set KEY VALUE [--ttl 30s]            write (VALUE '-' reads standard input)\n"
    "  del KEY                              delete\n"
    "  ls [PREFIX]                          list keys with version, origin, expiry\n"
    "  watch [PREFIX]                       print changes as they happen (Ctrl-C stops)\n"
    "\n"
    "Cluster:\n"
    "  members                              mesh members and their state\n"
    "  status                               node status\n"
    "  lock acquire NAME [--ttl 10s]        take a lock; prints TOKEN FENCE\n"
    "  lock renew NAME TOKEN [--ttl 10s]    extend a lock you hold\n"
    "  lock release NAME TOKEN              release a lock you hold\n"
    "  raft status                          raft role, term, indexes, servers\n"
    "  raft add ID HOST:PORT                add a voter (start it with raft.join=true)\n"
    "  raft remove ID                       remove a server\n"
    "  raft transfer [ID]                   hand leadership to ID (or any voter)\n"
    "  backup FILE                          write a consistent raft snapshot to FILE\n"
    "                                       (restore: start with raft.restore=FILE)\n"
    "\n"
    "Options:\n"
    "  --addr HOST:PORT     daemon API address (default $STATEMESH_ADDR or " DEFAULT_ADDR ");\n"
    "                       unix:PATH talks over a unix socket\n"
    "  --json               print the API's JSON instead of text\n"
    "  --token TOKEN        bearer token for writes (default $STATEMESH_TOKEN)\n"
    "  --token-file FILE    read the bearer token from FILE\n"
    "  --timeout D          give up after D (default 10s; watch waits forever)\n"
    "  -h, --help           show this help\n"
    "  -V, --version        show the version\n"
    "\n"
    "Exit status: 0 success, 1 error (message on stderr; 'get' of a missing key\n"
    "included), 2 bad usage.\n";

struct opts {
    const char *addr;
    int json;
    char *token;
    int timeout_ms;
};

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "statemesh: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (code == EXIT_USAGE) fprintf(stderr, "Try 'statemesh --help'.\n");
    exit(code);
}

/* ---- a minimal HTTP/1.0 client (one request per connection) ---- */

struct resp {
    int status;
    char *headers; /* raw header block, NUL-terminated */
    char *body;
    size_t body_len;
};

static void resp_free(struct resp *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int wait_fd(int fd, short ev, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = ev};
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n > 0) return 0;
        if (n == 0) return -ETIMEDOUT;
        if (errno != EINTR) return -errno;
    }
}

static int dial(const struct opts *o)
{
    int fd = -1;
    const char *a = o->addr;
    if (strncmp(a, "unix:", 5) == 0 || a[0] == '/') {
        const char *path = a[0] == '/' ? a : a + 5;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof sa.sun_path) die(EXIT_USAGE, "unix socket path too long");
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            die(EXIT_ERR, "cannot connect to %s: %s (is statemeshd running?)", a, strerror(errno));
        return fd;
    }
    char host[256];
    const char *colon = strrchr(a, ':');
    const char *h = a;
    size_t hl = colon ? (size_t)(colon - a) : 0;
    if (*a == '[') {
        h = a + 1;
        const char *rb = strchr(a, ']');
        if (!rb || rb[1] != ':') die(EXIT_USAGE, "bad --addr '%s' (want HOST:PORT)", a);
        hl = (size_t)(rb - h);
        colon = rb + 1;
    }
    if (!colon || !colon[1] || hl == 0 || hl >= sizeof host)
        die(EXIT_USAGE, "bad --addr '%s' (want HOST:PORT)", a);
    memcpy(host, h, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gr = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gr != 0) die(EXIT_ERR, "cannot resolve %s: %s", a, gai_strerror(gr));
    int err = 0;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, p->ai_addr, p->ai_addrlen) == 0) break;
        if (errno == EINPROGRESS) {
            int w = wait_fd(fd, POLLOUT, o->timeout_ms);
            socklen_t sl = sizeof err;
            if (w == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0) break;
            if (w < 0) err = -w;
        } else {
            err = errno;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        die(EXIT_ERR, "cannot connect to %s: %s (is statemeshd running?)", a, strerror(err));
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

static void send_all(int fd, const char *buf, size_t len, const struct opts *o)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN && wait_fd(fd, POLLOUT, o->timeout_ms) == 0) continue;
            die(EXIT_ERR, "sending to %s: %s", o->addr, strerror(errno));
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void pct_encode(const char *s, char *out, size_t cap, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (n + 4 >= cap) die(EXIT_USAGE, "argument too long");
        if (isalnum(*p) || strchr("-._~:", *p) || (keep_slash && *p == '/')) {
            out[n++] = (char)*p;
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
}

/* Send a request; with @p stream_fd the caller reads the body itself. */
static void request(const struct opts *o, const char *method, const char *path, const void *body,
                    size_t body_len, const char *ctype, struct resp *r, int *stream_fd)
{
    int fd = dial(o);
    char head[8192];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: statemesh/%s\r\n"
                     "Accept: */*\r\nContent-Length: %zu\r\n",
                     method, path, o->addr, sm_version(), body_len);
    if (n < 0 || (size_t)n >= sizeof head - 600) die(EXIT_USAGE, "request too long");
    if (ctype) n += snprintf(head + n, sizeof head - (size_t)n, "Content-Type: %s\r\n", ctype);
    if (o->token && strlen(o->token) < 400)
        n += snprintf(head + n, sizeof head - (size_t)n, "Authorization: Bearer %s\r\n", o->token);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    send_all(fd, head, (size_t)n, o);
    sodium_memzero(head, sizeof head);
    if (body_len) send_all(fd, body, body_len, o);
    /* read the header block */
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) die(EXIT_ERR, "out of memory");
    char *eoh = NULL;
    for (;;) {
        if (len == cap) {
            if (cap >= MAX_RESPONSE) die(EXIT_ERR, "response too large");
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) die(EXIT_ERR, "out of memory");
            buf = nb;
        }
        if (wait_fd(fd, POLLIN, o->timeout_ms) < 0)
            die(EXIT_ERR, "no answer from %s within the timeout", o->addr);
        ssize_t k = recv(fd, buf + len, cap - len, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) die(EXIT_ERR, "reading from %s: %s", o->addr, strerror(errno));
        len += (size_t)k;
        buf[len] = '\0';
        if ((eoh = strstr(buf, "\r\n\r\n"))) break;
        if (k == 0) die(EXIT_ERR, "%s closed the connection without an answer", o->addr);
    }
    memset(r, 0, sizeof *r);
    if (sscanf(buf, "HTTP/%*d.%*d %d", &r->status) != 1)
        die(EXIT_ERR, "%s did not answer in HTTP", o->addr);
    size_t hlen = (size_t)(eoh - buf) + 4;
    r->headers = malloc(hlen + 1);
    if (!r->headers) die(EXIT_ERR, "out of memory");
    memcpy(r->headers, buf, hlen);
    r->headers[hlen] = '\0';
    size_t blen = len - hlen;
    memmove(buf, buf + hlen, blen);
    if (stream_fd) {
        /* hand the connection over with what was already read as the body */
        r->body = buf;
        r->body_len = blen;
        *stream_fd = fd;
        return;
    }
    for (;;) {
        if (blen == cap) {
            if (cap >= MAX_RESPONSE) die(EXIT_ERR, "response too large");
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) die(EXIT_ERR, "out of memory");
            buf = nb;
        }
        if (wait_fd(fd, POLLIN, o->timeout_ms) < 0)
            die(EXIT_ERR, "no answer from %s within the timeout", o->addr);
        ssize_t k = recv(fd, buf + blen, cap - blen, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) die(EXIT_ERR, "reading from %s: %s", o->addr, strerror(errno));
        if (k == 0) break;
        blen += (size_t)k;
    }
    buf[blen] = '\0';
    r->body = buf;
    r->body_len = blen;
    close(fd);
}

static const char *header(const struct resp *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(r->headers, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ') v++;
            const char *e = strstr(v, "\r\n");
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= cap) n = cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
    }
    return NULL;
}

/* A non-2xx answer: print the API's error and exit 1. */
static void check(const struct resp *r, const char *what)
{
    if (r->status >= 200 && r->status < 300) return;
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    const char *msg = j ? json_string_value(json_object_get(j, "error")) : NULL;
    const char *code = j ? json_string_value(json_object_get(j, "code")) : NULL;
    fprintf(stderr, "statemesh: %s%s%s (HTTP %d%s%s)\n", what ? what : "", what ? ": " : "",
            msg ? msg : "request failed", r->status, code ? " " : "", code ? code : "");
    json_decref(j);
    exit(EXIT_ERR);
}

static json_t *body_json(const struct resp *r)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, 0, &je);
    if (!j) die(EXIT_ERR, "the daemon sent bad JSON: %s", je.text);
    return j;
}

static void print_raw(const struct resp *r)
{
    fwrite(r->body, 1, r->body_len, stdout);
    if (r->body_len && r->body[r->body_len - 1] != '\n') putchar('\n');
}

static void fmt_time(int64_t ms, char *buf, size_t cap)
{
    if (ms <= 0) {
        snprintf(buf, cap, "-");
        return;
    }
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_int_t jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* ---- commands ---- */

static int cmd_get(const struct opts *o, const char *key)
{
    char path[4096], enc[3600];
    pct_encode(key, enc, sizeof enc, 1);
    snprintf(path, sizeof path, "/v1/kv/%s", enc);
    struct resp r;
    request(o, "GET", path, NULL, 0, NULL, &r, NULL);
    if (r.status == 404) {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        int missing = j && strcmp(jstr(j, "code"), "not_found") == 0;
        json_decref(j);
        if (missing) die(EXIT_ERR, "key not found: %s", key);
    }
    check(&r, key);
    if (o->json) {
        char v[32], orig[128], exp[32];
        header(&r, "X-Statemesh-Version", v, sizeof v);
        json_t *j = json_pack(
            "{s:s,s:I,s:s,s:I}", "key", key, "version",
            (json_int_t)strtoull(header(&r, "X-Statemesh-Version", v, sizeof v) ? v : "0", NULL,
                                 10),
            "origin", header(&r, "X-Statemesh-Origin", orig, sizeof orig) ? orig : "", "expires",
            (json_int_t)strtoll(header(&r, "X-Statemesh-Expires", exp, sizeof exp) ? exp : "0",
                                NULL, 10));
        json_t *val = json_stringn(r.body, r.body_len);
        if (val) {
            json_object_set_new(j, "value", val);
        } else { /* not UTF-8: base64 */
            size_t cap = sodium_base64_ENCODED_LEN(r.body_len, sodium_base64_VARIANT_ORIGINAL);
            char *b = malloc(cap);
            if (!b) die(EXIT_ERR, "out of memory");
            sodium_bin2base64(b, cap, (const unsigned char *)r.body, r.body_len,
                              sodium_base64_VARIANT_ORIGINAL);
            json_object_set_new(j, "value_base64", json_string(b));
            free(b);
        }
        json_dumpf(j, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(j);
    } else {
        fwrite(r.body, 1, r.body_len, stdout);
        if (isatty(STDOUT_FILENO)) putchar('\n');
    }
    resp_free(&r);
    return EXIT_OK;
}

static char *read_stdin(size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    if (!b) die(EXIT_ERR, "out of memory");
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_RESPONSE) die(EXIT_ERR, "standard input too large");
            cap *= 2;
            char *nb = realloc(b, cap);
            if (!nb) die(EXIT_ERR, "out of memory");
            b = nb;
        }
        size_t k = fread(b + n, 1, cap - n, stdin);
        n += k;
        if (k == 0) break;
    }
    *len = n;
    return b;
}

static int cmd_set(const struct opts *o, const char *key, const char *value, const char *ttl)
{
    char path[4096], enc[3600], ttlenc[100];
    pct_encode(key, enc, sizeof enc, 1);
    if (ttl) {
        pct_encode(ttl, ttlenc, sizeof ttlenc, 0);
        snprintf(path, sizeof path, "/v1/kv/%s?ttl=%s", enc, ttlenc);
    } else {
        snprintf(path, sizeof path, "/v1/kv/%s", enc);
    }
    size_t len = strlen(value);
    char *in = NULL;
    if (strcmp(value, "-") == 0) value = in = read_stdin(&len);
    struct resp r;
    request(o, "PUT", path, value, len, "application/octet-stream", &r, NULL);
    free(in);
    check(&r, key);
    if (o->json) {
        print_raw(&r);
    } else {
        json_t *j = body_json(&r);
        printf("OK version %lld\n", (long long)jint(j, "version"));
        json_decref(j);
    }
    resp_free(&r);
    return EXIT_OK;
}

static int cmd_del(const struct opts *o, const char *key)
{
    char path[4096], enc[3600];
    pct_encode(key, enc, sizeof enc, 1);
    snprintf(path, sizeof path, "/v1/kv/%s", enc);
    struct resp r;
    request(o, "DELETE", path, NULL, 0, NULL, &r, NULL);
    check(&r, key);
    if (o->json)
        print_raw(&r);
    else
        printf("OK\n");
    resp_free(&r);
    return EXIT_OK;
}

static int cmd_ls(const struct opts *o, const char *prefix)
{
    char path[4096], enc[3600];
    pct_encode(prefix ? prefix : "", enc, sizeof enc, 0);
    snprintf(path, sizeof path, "/v1/kv?prefix=%s", enc);
    struct resp r;
    request(o, "GET", path, NULL, 0, NULL, &r, NULL);
    check(&r, "ls");
    if (o->json) {
        print_raw(&r);
    } else {
        json_t *j = body_json(&r);
        json_t *arr = json_object_get(j, "entries"), *e;
        size_t i;
        json_array_foreach(arr, i, e)
        {
            char exp[40];
            fmt_time(jint(e, "expires"), exp, sizeof exp);
            printf("%s\tversion=%lld\torigin=%s\texpires=%s\tsize=%lld\n", jstr(e, "key"),
                   (long long)jint(e, "version"), jstr(e, "origin"), exp,
                   (long long)jint(e, "size"));
        }
        json_decref(j);
    }
    resp_free(&r);
    return EXIT_OK;
}

static void print_event(const struct opts *o, const char *data)
{
    if (o->json) {
        printf("%s\n", data);
        fflush(stdout);
        return;
    }
    json_t *j = json_loads(data, 0, NULL);
    if (!j) return;
    const char *type = jstr(j, "type");
    if (strcmp(type, "overflow") == 0) {
        printf("overflow dropped=%lld\n", (long long)jint(j, "dropped"));
    } else {
        printf("%s %s", type, jstr(j, "key"));
        const char *b = json_string_value(json_object_get(j, "value"));
        if (b) {
            size_t cap = strlen(b) + 1, vl = 0;
            unsigned char *v = malloc(cap);
            if (v && sodium_base642bin(v, cap, b, strlen(b), NULL, &vl, NULL,
                                       sodium_base64_VARIANT_ORIGINAL) == 0) {
                putchar('=');
                fwrite(v, 1, vl, stdout);
            }
            free(v);
        }
        printf(" version=%lld origin=%s\n", (long long)jint(j, "version"), jstr(j, "origin"));
    }
    fflush(stdout);
    json_decref(j);
}

/* Feed SSE bytes; prints every complete event. */
struct sse {
    char *buf;
    size_t len, cap;
};

static void sse_feed(const struct opts *o, struct sse *s, const char *p, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t nc = (s->len + n + 1) * 2;
        char *nb = realloc(s->buf, nc);
        if (!nb) die(EXIT_ERR, "out of memory");
        s->buf = nb;
        s->cap = nc;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = '\0';
    char *end;
    while ((end = strstr(s->buf, "\n\n"))) {
        *end = '\0';
        for (char *line = s->buf; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            if (strncmp(line, "data: ", 6) == 0) print_event(o, line + 6);
            line = nl ? nl + 1 : NULL;
        }
        size_t used = (size_t)(end - s->buf) + 2;
        memmove(s->buf, s->buf + used, s->len - used + 1);
        s->len -= used;
    }
}

static int cmd_watch(const struct opts *o, const char *prefix)
{
    char path[4096], enc[3600];
    pct_encode(prefix ? prefix : "", enc, sizeof enc, 0);
    snprintf(path, sizeof path, "/v1/watch?prefix=%s", enc);
    struct resp r;
    int fd = -1;
    request(o, "GET", path, NULL, 0, NULL, &r, &fd);
    if (r.status != 200) {
        /* read the rest of the error body, then report it */
        for (;;) {
            char tmp[4096];
            ssize_t k = recv(fd, tmp, sizeof tmp, 0);
            if (k <= 0) break;
            char *nb = realloc(r.body, r.body_len + (size_t)k + 1);
            if (!nb) break;
            r.body = nb;
            memcpy(r.body + r.body_len, tmp, (size_t)k);
            r.body_len += (size_t)k;
        }
        close(fd);
        check(&r, "watch");
    }
    struct sse s = {0};
    sse_feed(o, &s, r.body, r.body_len);
    for (;;) {
        char tmp[8192];
        ssize_t k = recv(fd, tmp, sizeof tmp, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        sse_feed(o, &s, tmp, (size_t)k);
    }
    close(fd);
    free(s.buf);
    resp_free(&r);
    return EXIT_OK; /* the daemon ended the stream (shutdown) */
}

static int cmd_members(const struct opts *o)
{
    struct resp r;
    request(o, "GET", "/v1/members", NULL, 0, NULL, &r, NULL);
    check(&r, "members");
    if (o->json) {
        print_raw(&r);
    } else {
        json_t *j = body_json(&r);
        json_t *arr = json_object_get(j, "members"), *m;
        size_t i;
        printf("%-20s %-24s %-8s %-12s %s\n", "ID", "ADDRESS", "STATE", "INCARNATION",
               "LAST CHANGE");
        json_array_foreach(arr, i, m)
        {
            char t[40];
            fmt_time(jint(m, "last_change"), t, sizeof t);
            printf("%-20s %-24s %-8s %-12lld %s\n", jstr(m, "id"), jstr(m, "address"),
                   jstr(m, "state"), (long long)jint(m, "incarnation"), t);
        }
        json_decref(j);
    }
    resp_free(&r);
    return EXIT_OK;
}

static void print_flat(json_t *j, const char *prefix)
{
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, k);
        if (json_is_object(v)) {
            char p2[260];
            snprintf(p2, sizeof p2, "%s.", name);
            print_flat(v, p2);
            continue;
        }
        char *s = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        printf("%s: %s\n", name, s ? s : json_string_value(v));
        free(s);
    }
}

static int cmd_simple_get(const struct opts *o, const char *path, const char *what)
{
    struct resp r;
    request(o, "GET", path, NULL, 0, NULL, &r, NULL);
    check(&r, what);
    if (o->json) {
        print_raw(&r);
    } else {
        json_t *j = body_json(&r);
        print_flat(j, "");
        json_decref(j);
    }
    resp_free(&r);
    return EXIT_OK;
}

static int cmd_lock(const struct opts *o, const char *verb, const char *name, const char *token,
                    const char *ttl)
{
    char path[4096], enc[3600], ttlenc[100] = "";
    pct_encode(name, enc, sizeof enc, 1);
    if (ttl) pct_encode(ttl, ttlenc, sizeof ttlenc, 0);
    snprintf(path, sizeof path, "/v1/locks/%s%s%s", enc, ttl ? "?ttl=" : "", ttl ? ttlenc : "");
    const char *method = strcmp(verb, "acquire") == 0 ? "POST"
                         : strcmp(verb, "renew") == 0 ? "PUT"
                                                      : "DELETE";
    char *body = NULL;
    if (token) {
        json_t *j = json_pack("{s:s}", "token", token);
        body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!body) die(EXIT_ERR, "out of memory");
    }
    struct resp r;
    request(o, method, path, body, body ? strlen(body) : 0, body ? "application/json" : NULL, &r,
            NULL);
    free(body);
    check(&r, name);
    if (o->json) {
        print_raw(&r);
    } else if (strcmp(method, "DELETE") == 0) {
        printf("OK\n");
    } else {
        json_t *j = body_json(&r);
        printf("%s %lld\n", jstr(j, "token"), (long long)jint(j, "fence"));
        json_decref(j);
    }
    resp_free(&r);
    return EXIT_OK;
}

static int cmd_raft(const struct opts *o, int argc, char **argv)
{
    if (argc < 1) die(EXIT_USAGE, "raft needs a subcommand: status, add, remove, transfer");
    const char *sub = argv[0];
    if (strcmp(sub, "status") == 0 && argc == 1) return cmd_simple_get(o, "/v1/raft", "raft");
    char path[512], *body = NULL;
    const char *method = "POST";
    json_t *j = NULL;
    if (strcmp(sub, "add") == 0 && argc == 3) {
        char *end;
        unsigned long long id = strtoull(argv[1], &end, 10);
        if (*end || !id) die(EXIT_USAGE, "raft add: ID must be a number > 0");
        j = json_pack("{s:I,s:s}", "id", (json_int_t)id, "address", argv[2]);
        snprintf(path, sizeof path, "/v1/raft/servers");
    } else if (strcmp(sub, "remove") == 0 && argc == 2) {
        char *end;
        unsigned long long id = strtoull(argv[1], &end, 10);
        if (*end || !id) die(EXIT_USAGE, "raft remove: ID must be a number > 0");
        snprintf(path, sizeof path, "/v1/raft/servers/%llu", id);
        method = "DELETE";
    } else if (strcmp(sub, "transfer") == 0 && argc <= 2) {
        unsigned long long id = 0;
        if (argc == 2) {
            char *end;
            id = strtoull(argv[1], &end, 10);
            if (*end) die(EXIT_USAGE, "raft transfer: ID must be a number");
        }
        j = json_pack("{s:I}", "id", (json_int_t)id);
        snprintf(path, sizeof path, "/v1/raft/transfer");
    } else {
        die(EXIT_USAGE, "usage: raft status | raft add ID HOST:PORT | raft remove ID | "
                        "raft transfer [ID]");
    }
    if (j) {
        body = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (!body) die(EXIT_ERR, "out of memory");
    }
    struct resp r;
    request(o, method, path, body, body ? strlen(body) : 0, body ? "application/json" : NULL, &r,
            NULL);
    free(body);
    check(&r, "raft");
    if (o->json)
        print_raw(&r);
    else
        printf("OK\n");
    resp_free(&r);
    return EXIT_OK;
}

static int cmd_backup(const struct opts *o, const char *file)
{
    struct resp r;
    struct opts o2 = *o;
    if (o2.timeout_ms < 60000) o2.timeout_ms = 60000; /* snapshots take a while */
    request(&o2, "GET", "/v1/raft/backup", NULL, 0, NULL, &r, NULL);
    check(&r, "backup");
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", file, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) die(EXIT_ERR, "cannot create %s: %s", tmp, strerror(errno));
    size_t off = 0;
    while (off < r.body_len) {
        ssize_t k = write(fd, r.body + off, r.body_len - off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            unlink(tmp);
            die(EXIT_ERR, "writing %s: %s", tmp, strerror(errno));
        }
        off += (size_t)k;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, file) != 0) {
        unlink(tmp);
        die(EXIT_ERR, "writing %s: %s", file, strerror(errno));
    }
    if (o->json)
        printf("{\"file\":\"%s\",\"bytes\":%zu}\n", file, r.body_len);
    else
        printf("backup written: %s (%zu bytes)\n", file, r.body_len);
    resp_free(&r);
    return EXIT_OK;
}

/* Create the parents of @p dir (0700) so "ca init a/b/ca" works on a fresh tree. */
static void mkdir_parents(const char *dir)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) return;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return; /* the real call reports it */
        *p = '/';
    }
}

static int cmd_ca(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[0], "init") != 0) die(EXIT_USAGE, "usage: statemesh ca init DIR");
    char err[512] = "";
    mkdir_parents(argv[1]);
    int rc = smc_ca_init(argv[1], err, sizeof err);
    if (rc < 0) die(EXIT_ERR, "ca init %s: %s", argv[1], *err ? err : sm_strerror(rc));
    printf("CA created: %s/ca.key (secret), %s/ca.pub\n", argv[1], argv[1]);
    return EXIT_OK;
}

static int cmd_keyring(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[0], "new") != 0)
        die(EXIT_USAGE, "usage: statemesh keyring new FILE");
    uint8_t key[SMC_CLUSTER_KEY_LEN];
    char err[512] = "";
    smc_cluster_key_generate(key);
    int rc = smc_cluster_key_save(argv[1], key, err, sizeof err);
    sodium_memzero(key, sizeof key);
    if (rc < 0) die(EXIT_ERR, "keyring new %s: %s", argv[1], *err ? err : sm_strerror(rc));
    printf("cluster key created: %s (secret)\n", argv[1]);
    return EXIT_OK;
}

static int cmd_cert(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "issue") != 0)
        die(EXIT_USAGE, "usage: statemesh cert issue --ca DIR --node-id ID --out DIR [--days N]");
    const char *ca = NULL, *id = NULL, *out = NULL;
    unsigned days = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) die(EXIT_USAGE, "cert issue: option '%s' needs a value", a);
        if (strcmp(a, "--ca") == 0)
            ca = v;
        else if (strcmp(a, "--node-id") == 0)
            id = v;
        else if (strcmp(a, "--out") == 0)
            out = v;
        else if (strcmp(a, "--days") == 0) {
            char *end;
            unsigned long d = strtoul(v, &end, 10);
            if (*end || d == 0 || d > 36500) die(EXIT_USAGE, "cert issue: bad --days '%s'", v);
            days = (unsigned)d;
        } else
            die(EXIT_USAGE, "cert issue: unknown option '%s'", a);
        i++;
    }
    if (!ca || !id || !out)
        die(EXIT_USAGE, "usage: statemesh cert issue --ca DIR --node-id ID --out DIR [--days N]");
    char err[512] = "";
    mkdir_parents(out);
    int rc = smc_cert_issue(ca, id, out, days, err, sizeof err);
    if (rc < 0) die(EXIT_ERR, "cert issue %s: %s", id, *err ? err : sm_strerror(rc));
    printf("certificate issued: %s/%s.key (secret), %s/%s.cert\n", out, id, out, id);
    return EXIT_OK;
}

static char *read_token_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) die(EXIT_ERR, "cannot read token file %s: %s", path, strerror(errno));
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n && isspace((unsigned char)buf[n - 1])) buf[--n] = '\0';
    char *t = strdup(buf);
    sodium_memzero(buf, sizeof buf);
    if (!t) die(EXIT_ERR, "out of memory");
    return t;
}

int main(int argc, char **argv)
{
    /* static: die() exits from deep inside commands; these stay reachable */
    static struct opts o;
    static char **args;
    o.addr = getenv("STATEMESH_ADDR");
    o.timeout_ms = 10000;
    if (!o.addr || !*o.addr) o.addr = DEFAULT_ADDR;
    const char *env_token = getenv("STATEMESH_TOKEN");
    if (env_token && *env_token) o.token = strdup(env_token);
    const char *ttl = NULL;
    /* global options and --ttl may appear anywhere; "--" ends options */
    args = calloc((size_t)argc + 1, sizeof *args);
    if (!args) die(EXIT_ERR, "out of memory");
    int nargs = 0, opts_done = 0, is_cert = argc > 1 && strcmp(argv[1], "cert") == 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || strcmp(a, "-") == 0 || is_cert) {
            args[nargs++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            opts_done = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("statemesh %s\n", sm_version());
            return EXIT_OK;
        }
        if (strcmp(a, "--json") == 0) {
            o.json = 1;
            continue;
        }
        char name[32];
        const char *val = NULL, *eq = strchr(a, '=');
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        if (strcmp(name, "--addr") && strcmp(name, "--token") && strcmp(name, "--token-file") &&
            strcmp(name, "--timeout") && strcmp(name, "--ttl")) {
            /* not ours: maybe a negative number given as a value */
            if (isdigit((unsigned char)a[1])) {
                args[nargs++] = argv[i];
                continue;
            }
            die(EXIT_USAGE, "unknown option '%s'", a);
        }
        if (!val) {
            if (i + 1 >= argc) die(EXIT_USAGE, "option '%s' needs a value", name);
            val = argv[++i];
        }
        if (strcmp(name, "--addr") == 0) {
            o.addr = val;
        } else if (strcmp(name, "--token") == 0) {
            free(o.token);
            o.token = strdup(val);
        } else if (strcmp(name, "--token-file") == 0) {
            free(o.token);
            o.token = read_token_file(val);
        } else if (strcmp(name, "--ttl") == 0) {
            ttl = val;
        } else {
            uint64_t ms = 0;
            char *end;
            double d = strtod(val, &end);
            if (end == val || d <= 0) die(EXIT_USAGE, "bad --timeout '%s'", val);
            if (!*end || strcmp(end, "s") == 0)
                ms = (uint64_t)(d * 1000);
            else if (strcmp(end, "ms") == 0)
                ms = (uint64_t)d;
            else if (strcmp(end, "m") == 0)
                ms = (uint64_t)(d * 60000);
            else
                die(EXIT_USAGE, "bad --timeout '%s' (e.g. 500ms, 10s, 1m)", val);
            o.timeout_ms = ms > 86400000 ? 86400000 : (int)(ms ? ms : 1);
        }
    }
    if (nargs == 0) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *cmd = args[0];
    int n = nargs - 1;
    char **av = args + 1;
    int rc = EXIT_USAGE;
    if (ttl && strcmp(cmd, "set") != 0 && strcmp(cmd, "lock") != 0)
        die(EXIT_USAGE, "--ttl only goes with set and lock");
    if (strcmp(cmd, "ca") == 0)
        rc = cmd_ca(n, av);
    else if (strcmp(cmd, "cert") == 0)
        rc = cmd_cert(n, av);
    else if (strcmp(cmd, "keyring") == 0)
        rc = cmd_keyring(n, av);
    else if (strcmp(cmd, "get") == 0 && n == 1)
        rc = cmd_get(&o, av[0]);
    else if (strcmp(cmd, "set") == 0 && n == 2)
        rc = cmd_set(&o, av[0], av[1], ttl);
    else if ((strcmp(cmd, "del") == 0 || strcmp(cmd, "delete") == 0) && n == 1)
        rc = cmd_del(&o, av[0]);
    else if ((strcmp(cmd, "ls") == 0 || strcmp(cmd, "list") == 0) && n <= 1)
        rc = cmd_ls(&o, n ? av[0] : "");
    else if (strcmp(cmd, "watch") == 0 && n <= 1)
        rc = cmd_watch(&o, n ? av[0] : "");
    else if (strcmp(cmd, "members") == 0 && n == 0)
        rc = cmd_members(&o);
    else if (strcmp(cmd, "status") == 0 && n == 0)
        rc = cmd_simple_get(&o, "/v1/status", "status");
    else if (strcmp(cmd, "lock") == 0 && n == 2 && strcmp(av[0], "acquire") == 0)
        rc = cmd_lock(&o, "acquire", av[1], NULL, ttl ? ttl : "10s");
    else if (strcmp(cmd, "lock") == 0 && n == 3 && strcmp(av[0], "renew") == 0)
        rc = cmd_lock(&o, "renew", av[1], av[2], ttl);
    else if (strcmp(cmd, "lock") == 0 && n == 3 && strcmp(av[0], "release") == 0 && !ttl)
        rc = cmd_lock(&o, "release", av[1], av[2], NULL);
    else if (strcmp(cmd, "raft") == 0)
        rc = cmd_raft(&o, n, av);
    else if (strcmp(cmd, "backup") == 0 && n == 1)
        rc = cmd_backup(&o, av[0]);
    else {
        static const char *const known[] = {"ca",   "cert", "keyring", "get",     "set",
                                            "del",  "ls",   "watch",   "members", "status",
                                            "lock", "raft", "backup",  NULL};
        int k = 0;
        for (int i = 0; known[i]; i++) k |= strcmp(cmd, known[i]) == 0;
        if (k) die(EXIT_USAGE, "wrong arguments for '%s' (see statemesh --help)", cmd);
        die(EXIT_USAGE, "unknown command '%s'", cmd);
    }
    free(args);
    if (o.token) {
        sodium_memzero(o.token, strlen(o.token));
        free(o.token);
    }
    return rc;
}
