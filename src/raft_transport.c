/* raft_transport.c: authenticated + encrypted TCP transport for libraft (see raft_transport.h). */
#include "config.h"

#include "raft_transport.h"

#include "backend.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netdb.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAGIC       "SMR1"
#define MAX_FRAME   (16u << 20)
#define PIPE_CHUNK  65536
#define TAG_LEN     crypto_aead_xchacha20poly1305_ietf_ABYTES
#define NONCE_LEN   crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define MAX_HELLO   (4 + 1 + 8 + 32 + 1 + 255 + 2 + SMC_CERT_MAX_LEN)
#define CONTEXT_STR "statemesh-raft-v1"

enum cstate { CS_CONNECTING, CS_HELLO, CS_AUTH, CS_OPEN, CS_CLOSING };

struct smt;

struct smt_conn {
    struct smt *t;
    struct smt_conn *next, *prev;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_pipe_t pipe; /* our end of the socketpair for SMT_RAFT */
    uv_connect_t creq;
    int nhandles;
    bool pipe_open;
    enum cstate state;
    bool client;
    uint8_t purpose;
    /* handshake */
    uint8_t kx_pk[crypto_kx_PUBLICKEYBYTES], kx_sk[crypto_kx_SECRETKEYBYTES];
    uint8_t hello[MAX_HELLO], peer_hello[MAX_HELLO];
    size_t hello_len, peer_hello_len;
    uint8_t peer_sign_pk[crypto_sign_PUBLICKEYBYTES];
    uint64_t peer_id;
    char peer_addr[256];
    char peer_node[SMC_MAX_ID + 1];
    /* session */
    uint8_t rx_key[32], tx_key[32];
    uint64_t rx_ctr, tx_ctr;
    uint8_t *rx;
    size_t rx_len, rx_cap;
    uint8_t pbuf[PIPE_CHUNK];
    /* raft connect request (client, SMT_RAFT) */
    struct raft_uv_connect *rreq;
    raft_uv_connect_cb rcb;
    void *user;
    bool fwd_announced;
};

struct smt {
    uv_loop_t *loop;
    struct smt_config cfg;
    char bind[256];
    uint8_t ca_pk[SMC_PK_LEN];
    struct smc_identity self;
    raft_id id;
    char address[256];
    uv_tcp_t listener;
    bool listening;
    raft_uv_accept_cb accept_cb;
    struct smt_conn *conns;
    bool closing;
    raft_uv_transport_close_cb close_cb;
    struct raft_uv_transport *t;
    uint64_t rejected;
};

static void tlog(struct smt *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tlog(struct smt *t, const char *fmt, ...)
{
    if (!t->cfg.hooks.log) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    t->cfg.hooks.log(t->cfg.hooks.arg, buf);
}

int smt_parse_addr(const char *s, struct sockaddr_storage *out)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1]) return SM_ECONFIG;
    char host[256];
    size_t hl = (size_t)(colon - s);
    if (hl >= sizeof host) return SM_ECONFIG;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) return SM_ECONFIG;
    memset(out, 0, sizeof *out);
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) return SM_ECONFIG;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    if (out->ss_family == AF_INET)
        a4->sin_port = htons((uint16_t)port);
    else
        a6->sin6_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

/* ---- connection lifecycle ---- */

static void conn_free(struct smt_conn *c)
{
    struct smt *t = c->t;
    if (c->prev)
        c->prev->next = c->next;
    else
        t->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->purpose == SMT_FWD && c->fwd_announced && t->cfg.hooks.fwd_close)
        t->cfg.hooks.fwd_close(t->cfg.hooks.arg, c);
    sodium_memzero(c->kx_sk, sizeof c->kx_sk);
    sodium_memzero(c->rx_key, sizeof c->rx_key);
    sodium_memzero(c->tx_key, sizeof c->tx_key);
    free(c->rx);
    free(c);
    if (t->closing && !t->conns && !t->listening && t->close_cb) {
        raft_uv_transport_close_cb cb = t->close_cb;
        t->close_cb = NULL;
        cb(t->t);
    }
}

static void handle_closed(uv_handle_t *h)
{
    struct smt_conn *c = h->data;
    if (--c->nhandles == 0) conn_free(c);
}

static void conn_close(struct smt_conn *c, const char *why)
{
    if (c->state == CS_CLOSING) return;
    (void)why; /* routine disconnects are not logged: raft retries; rejections are (reject()) */
    c->state = CS_CLOSING;
    if (c->rreq) {
        /* A raft connect attempt that never completed. */
        struct raft_uv_connect *r = c->rreq;
        c->rreq = NULL;
        c->rcb(r, NULL, c->t->closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
    }
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    if (c->pipe_open) uv_close((uv_handle_t *)&c->pipe, handle_closed);
}

void smt_conn_close(struct smt_conn *c)
{
    conn_close(c, NULL);
}

static struct smt_conn *conn_new(struct smt *t, bool client, uint8_t purpose)
{
    struct smt_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->t = t;
    c->client = client;
    c->purpose = purpose;
    c->state = client ? CS_CONNECTING : CS_HELLO;
    uv_tcp_init(t->loop, &c->tcp);
    uv_timer_init(t->loop, &c->timer);
    c->tcp.data = c->timer.data = c->pipe.data = c;
    c->nhandles = 2;
    c->next = t->conns;
    if (t->conns) t->conns->prev = c;
    t->conns = c;
    crypto_kx_keypair(c->kx_pk, c->kx_sk);
    return c;
}

static void hs_timeout(uv_timer_t *tm)
{
    struct smt_conn *c = tm->data;
    if (c->state != CS_OPEN) conn_close(c, "handshake timed out");
}

/* ---- writing ---- */

struct wreq {
    uv_write_t req;
    size_t len;
    uint8_t data[];
};

static void write_done(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct smt_conn *c = req->handle->data;
    free(w);
    if (status < 0 && status != UV_ECANCELED && c->state != CS_CLOSING)
        conn_close(c, uv_strerror(status));
}

static int write_raw(struct smt_conn *c, uv_stream_t *s, struct wreq *w)
{
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, s, &b, 1, write_done);
    if (rc < 0) {
        free(w);
        conn_close(c, uv_strerror(rc));
        return SM_EUNAVAILABLE;
    }
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int send_plain_frame(struct smt_conn *c, const uint8_t *msg, size_t len)
{
    struct wreq *w = malloc(sizeof *w + 4 + len);
    if (!w) return SM_ENOMEM;
    w->len = 4 + len;
    put32(w->data, (uint32_t)len);
    memcpy(w->data + 4, msg, len);
    return write_raw(c, (uv_stream_t *)&c->tcp, w);
}

static void nonce_of(uint8_t n[NONCE_LEN], uint64_t ctr)
{
    memset(n, 0, NONCE_LEN);
    for (int i = 0; i < 8; i++) n[i] = (uint8_t)(ctr >> (8 * i));
}

static int send_sealed(struct smt_conn *c, const uint8_t *msg, size_t len)
{
    if (c->state != CS_OPEN) return SM_EUNAVAILABLE;
    if (len + TAG_LEN > MAX_FRAME) return SM_ERANGE;
    struct wreq *w = malloc(sizeof *w + 4 + len + TAG_LEN);
    if (!w) return SM_ENOMEM;
    uint8_t n[NONCE_LEN];
    nonce_of(n, c->tx_ctr++);
    unsigned long long clen;
    crypto_aead_xchacha20poly1305_ietf_encrypt(w->data + 4, &clen, msg, len, NULL, 0, NULL, n,
                                               c->tx_key);
    put32(w->data, (uint32_t)clen);
    w->len = 4 + (size_t)clen;
    return write_raw(c, (uv_stream_t *)&c->tcp, w);
}

int smt_send(struct smt_conn *c, const void *msg, size_t len)
{
    return send_sealed(c, msg, len);
}

void *smt_conn_user(const struct smt_conn *c)
{
    return c->user;
}

void smt_conn_set_user(struct smt_conn *c, void *user)
{
    c->user = user;
}

const char *smt_conn_peer(const struct smt_conn *c)
{
    return c->peer_node;
}

uint64_t smt_rejected(const struct raft_uv_transport *t)
{
    return ((const struct smt *)t->impl)->rejected;
}

/* ---- handshake ---- */

static void send_hello(struct smt_conn *c)
{
    struct smt *t = c->t;
    uint8_t *p = c->hello;
    memcpy(p, MAGIC, 4), p += 4;
    *p++ = c->purpose;
    for (int i = 7; i >= 0; i--) *p++ = (uint8_t)(t->id >> (8 * i));
    memcpy(p, c->kx_pk, 32), p += 32;
    size_t al = strlen(t->address);
    *p++ = (uint8_t)al;
    memcpy(p, t->address, al), p += al;
    size_t cl = t->cfg.insecure ? 0 : t->self.cert_len;
    *p++ = (uint8_t)(cl >> 8), *p++ = (uint8_t)cl;
    if (cl) memcpy(p, t->self.cert_bytes, cl), p += cl;
    c->hello_len = (size_t)(p - c->hello);
    send_plain_frame(c, c->hello, c->hello_len);
}

static void transcript(const struct smt_conn *c, uint8_t role, uint8_t out[32])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)CONTEXT_STR, sizeof CONTEXT_STR);
    crypto_generichash_update(&st, &role, 1);
    const uint8_t *hc = c->client ? c->hello : c->peer_hello;
    const uint8_t *hs = c->client ? c->peer_hello : c->hello;
    size_t lc = c->client ? c->hello_len : c->peer_hello_len;
    size_t ls = c->client ? c->peer_hello_len : c->hello_len;
    uint8_t l4[4];
    put32(l4, (uint32_t)lc);
    crypto_generichash_update(&st, l4, 4);
    crypto_generichash_update(&st, hc, lc);
    put32(l4, (uint32_t)ls);
    crypto_generichash_update(&st, l4, 4);
    crypto_generichash_update(&st, hs, ls);
    crypto_generichash_final(&st, out, 32);
}

static int reject(struct smt_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int reject(struct smt_conn *c, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    c->t->rejected++;
    tlog(c->t, "raft transport: rejected %s peer %s: %s", c->client ? "outgoing" : "incoming",
         c->peer_addr[0] ? c->peer_addr : "?", buf);
    conn_close(c, NULL);
    return -1;
}

static int on_hello(struct smt_conn *c, const uint8_t *m, size_t n)
{
    struct smt *t = c->t;
    if (n > MAX_HELLO || n < 4 + 1 + 8 + 32 + 1 + 2 || memcmp(m, MAGIC, 4) != 0)
        return reject(c, "not a statemesh raft peer");
    memcpy(c->peer_hello, m, n);
    c->peer_hello_len = n;
    const uint8_t *p = m + 4, *end = m + n;
    uint8_t purpose = *p++;
    uint64_t id = 0;
    for (int i = 0; i < 8; i++) id = id << 8 | *p++;
    const uint8_t *peer_kx = p;
    p += 32;
    size_t al = *p++;
    if ((size_t)(end - p) < al + 2) return reject(c, "truncated hello");
    memcpy(c->peer_addr, p, al);
    c->peer_addr[al] = '\0';
    p += al;
    size_t cl = (size_t)p[0] << 8 | p[1];
    p += 2;
    if ((size_t)(end - p) != cl) return reject(c, "truncated hello");
    if (c->client ? purpose != c->purpose : (purpose != SMT_RAFT && purpose != SMT_FWD))
        return reject(c, "unexpected purpose %u", purpose);
    c->purpose = purpose;
    c->peer_id = id;
    if (!c->client) send_hello(c);
    if (!t->cfg.insecure) {
        if (cl == 0) return reject(c, "no certificate (this cluster requires one)");
        struct smc_cert cert;
        enum smc_reason why = SMC_R_OK;
        if (smc_cert_decode(p, cl, &cert, &why) < 0)
            return reject(c, "bad certificate: %s", smc_reason_str(why));
        if (smc_cert_verify(&cert, t->ca_pk, (int64_t)sm_wall_ms(), NULL, &why) < 0)
            return reject(c, "certificate of '%s': %s", cert.node_id, smc_reason_str(why));
        memcpy(c->peer_sign_pk, cert.node_pk, sizeof c->peer_sign_pk);
        snprintf(c->peer_node, sizeof c->peer_node, "%s", cert.node_id);
    }
    int rc = c->client
                 ? crypto_kx_client_session_keys(c->rx_key, c->tx_key, c->kx_pk, c->kx_sk, peer_kx)
                 : crypto_kx_server_session_keys(c->rx_key, c->tx_key, c->kx_pk, c->kx_sk, peer_kx);
    sodium_memzero(c->kx_sk, sizeof c->kx_sk);
    if (rc != 0) return reject(c, "bad key exchange value");
    uint8_t h[32], sig[crypto_sign_BYTES];
    memset(sig, 0, sizeof sig);
    transcript(c, c->client ? 'C' : 'S', h);
    if (!t->cfg.insecure) crypto_sign_detached(sig, NULL, h, sizeof h, t->self.kp.sk);
    c->state = CS_AUTH;
    send_plain_frame(c, sig, sizeof sig);
    return 0;
}

static void pipe_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    struct smt_conn *c = h->data;
    *b = uv_buf_init((char *)c->pbuf, sizeof c->pbuf);
}

static void pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct smt_conn *c = s->data;
    if (n == 0) return;
    if (n < 0) {
        conn_close(c, NULL); /* raft closed its end */
        return;
    }
    send_sealed(c, (const uint8_t *)b->base, (size_t)n);
}

static int open_raft_stream(struct smt_conn *c, uv_stream_t **out)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
    uv_pipe_t *rp = raft_malloc(sizeof *rp);
    if (!rp) {
        close(sv[0]), close(sv[1]);
        return -1;
    }
    uv_pipe_init(c->t->loop, rp, 0);
    uv_pipe_init(c->t->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->pipe_open = true;
    c->nhandles++;
    if (uv_pipe_open(rp, sv[0]) != 0 || uv_pipe_open(&c->pipe, sv[1]) != 0) {
        /* rp is a bare handle: close it and free it once closed */
        close(sv[0]);
        uv_close((uv_handle_t *)rp, (uv_close_cb)raft_free);
        return -1;
    }
    uv_read_start((uv_stream_t *)&c->pipe, pipe_alloc, pipe_read);
    *out = (uv_stream_t *)rp;
    return 0;
}

static int on_auth(struct smt_conn *c, const uint8_t *m, size_t n)
{
    struct smt *t = c->t;
    if (n != crypto_sign_BYTES) return reject(c, "bad authentication frame");
    if (!t->cfg.insecure) {
        uint8_t h[32];
        transcript(c, c->client ? 'S' : 'C', h);
        if (crypto_sign_verify_detached(m, h, sizeof h, c->peer_sign_pk) != 0)
            return reject(c, "handshake signature does not verify");
    }
    c->state = CS_OPEN;
    uv_timer_stop(&c->timer);
    if (c->purpose == SMT_FWD) {
        c->fwd_announced = true;
        if (t->cfg.hooks.fwd_open) t->cfg.hooks.fwd_open(t->cfg.hooks.arg, c);
        return 0;
    }
    uv_stream_t *rs;
    if (open_raft_stream(c, &rs) != 0) {
        conn_close(c, "cannot create the raft stream");
        return -1;
    }
    if (c->client) {
        struct raft_uv_connect *r = c->rreq;
        c->rreq = NULL;
        c->rcb(r, rs, 0);
    } else if (t->accept_cb && !t->closing) {
        t->accept_cb(t->t, c->peer_id, c->peer_addr, rs);
    } else {
        uv_close((uv_handle_t *)rs, (uv_close_cb)raft_free);
        conn_close(c, NULL);
        return -1;
    }
    return 0;
}

static int on_data(struct smt_conn *c, const uint8_t *m, size_t n)
{
    if (n < TAG_LEN) return reject(c, "short frame");
    uint8_t *pt = n - TAG_LEN ? malloc(n - TAG_LEN) : c->pbuf;
    if (!pt) {
        conn_close(c, "out of memory");
        return -1;
    }
    uint8_t nonce[NONCE_LEN];
    nonce_of(nonce, c->rx_ctr++);
    unsigned long long pl;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &pl, NULL, m, n, NULL, 0, nonce,
                                                   c->rx_key) != 0) {
        if (pt != c->pbuf) free(pt);
        return reject(c, "frame failed authentication");
    }
    int rc = 0;
    if (c->purpose == SMT_FWD) {
        if (c->t->cfg.hooks.fwd_msg) c->t->cfg.hooks.fwd_msg(c->t->cfg.hooks.arg, c, pt, pl);
        if (pt != c->pbuf) free(pt);
        return c->state == CS_CLOSING ? -1 : 0;
    }
    struct wreq *w = (struct wreq *)malloc(sizeof *w + pl);
    if (!w) {
        rc = -1;
        conn_close(c, "out of memory");
    } else {
        memcpy(w->data, pt, pl);
        w->len = pl;
        if (write_raw(c, (uv_stream_t *)&c->pipe, w) < 0) rc = -1;
    }
    if (pt != c->pbuf) free(pt);
    return rc;
}

static void tcp_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    struct smt_conn *c = h->data;
    if (c->rx_cap - c->rx_len < PIPE_CHUNK) {
        size_t ncap = c->rx_cap ? c->rx_cap * 2 : 2 * PIPE_CHUNK;
        while (ncap - c->rx_len < PIPE_CHUNK) ncap *= 2;
        uint8_t *nb = realloc(c->rx, ncap);
        if (!nb) {
            *b = uv_buf_init(NULL, 0);
            return;
        }
        c->rx = nb;
        c->rx_cap = ncap;
    }
    *b = uv_buf_init((char *)c->rx + c->rx_len, (unsigned)(c->rx_cap - c->rx_len));
}

static void tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct smt_conn *c = s->data;
    if (n == 0) return;
    if (n < 0) {
        conn_close(c, n == UV_EOF ? "peer closed" : uv_strerror((int)n));
        return;
    }
    c->rx_len += (size_t)n;
    size_t off = 0;
    while (c->state != CS_CLOSING && c->rx_len - off >= 4) {
        uint32_t fl = get32(c->rx + off);
        if (fl > MAX_FRAME || (c->state != CS_OPEN && fl > MAX_HELLO)) {
            reject(c, "frame too large");
            return;
        }
        if (c->rx_len - off < 4 + (size_t)fl) break;
        const uint8_t *m = c->rx + off + 4;
        off += 4 + fl;
        int rc = c->state == CS_HELLO  ? on_hello(c, m, fl)
                 : c->state == CS_AUTH ? on_auth(c, m, fl)
                                       : on_data(c, m, fl);
        if (rc < 0) return;
    }
    if (c->state == CS_CLOSING) return;
    memmove(c->rx, c->rx + off, c->rx_len - off);
    c->rx_len -= off;
    if (c->rx_cap > 4 * PIPE_CHUNK && c->rx_len < PIPE_CHUNK) {
        uint8_t *nb = realloc(c->rx, 2 * PIPE_CHUNK);
        if (nb) c->rx = nb, c->rx_cap = 2 * PIPE_CHUNK;
    }
}

static void start_handshake(struct smt_conn *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = CS_HELLO;
    uv_read_start((uv_stream_t *)&c->tcp, tcp_alloc, tcp_read);
    if (c->client) send_hello(c); /* the server answers once it knows the purpose */
}

static void on_connected(uv_connect_t *req, int status)
{
    struct smt_conn *c = req->data;
    if (c->state == CS_CLOSING) return;
    if (status < 0) {
        conn_close(c, uv_strerror(status));
        return;
    }
    start_handshake(c);
}

static struct smt_conn *dial(struct smt *t, const char *address, uint8_t purpose)
{
    struct sockaddr_storage sa;
    if (smt_parse_addr(address, &sa) < 0) return NULL;
    struct smt_conn *c = conn_new(t, true, purpose);
    if (!c) return NULL;
    snprintf(c->peer_addr, sizeof c->peer_addr, "%s", address);
    c->creq.data = c;
    uv_timer_start(&c->timer, hs_timeout, t->cfg.handshake_timeout_ms, 0);
    int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, on_connected);
    if (rc < 0) {
        conn_close(c, uv_strerror(rc));
        return NULL;
    }
    return c;
}

/* ---- raft_uv_transport vtable ---- */

static int tr_init(struct raft_uv_transport *rt, raft_id id, const char *address)
{
    struct smt *t = rt->impl;
    t->id = id;
    snprintf(t->address, sizeof t->address, "%s", address);
    return 0;
}

static void on_accept(uv_stream_t *server, int status)
{
    struct smt *t = server->data;
    if (status < 0 || t->closing) return;
    struct smt_conn *c = conn_new(t, false, 0);
    if (!c) return;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c, NULL);
        return;
    }
    struct sockaddr_storage sa;
    int sl = sizeof sa;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &sl) == 0) {
        char ip[64] = "?";
        int port = 0;
        if (sa.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&sa, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
        } else {
            uv_ip6_name((struct sockaddr_in6 *)&sa, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
        }
        snprintf(c->peer_addr, sizeof c->peer_addr, "%s:%d", ip, port);
    }
    uv_timer_start(&c->timer, hs_timeout, t->cfg.handshake_timeout_ms, 0);
    start_handshake(c);
}

static int tr_listen(struct raft_uv_transport *rt, raft_uv_accept_cb cb)
{
    struct smt *t = rt->impl;
    struct sockaddr_storage sa;
    if (smt_parse_addr(t->bind[0] ? t->bind : t->address, &sa) < 0) {
        snprintf(rt->errmsg, sizeof rt->errmsg, "bad bind address '%.200s'", t->bind);
        return RAFT_INVALID;
    }
    uv_tcp_init(t->loop, &t->listener);
    t->listener.data = t;
    t->listening = true;
    int rc = uv_tcp_bind(&t->listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&t->listener, 64, on_accept);
    if (rc < 0) {
        snprintf(rt->errmsg, sizeof rt->errmsg, "cannot listen on %.150s: %s", t->bind,
                 uv_strerror(rc));
        return RAFT_IOERR;
    }
    t->accept_cb = cb;
    return 0;
}

static int tr_connect(struct raft_uv_transport *rt, struct raft_uv_connect *req, raft_id id,
                      const char *address, raft_uv_connect_cb cb)
{
    (void)id;
    struct smt *t = rt->impl;
    if (t->closing) return RAFT_CANCELED;
    struct smt_conn *c = dial(t, address, SMT_RAFT);
    if (!c) return RAFT_NOCONNECTION;
    c->rreq = req;
    c->rcb = cb;
    return 0;
}

static void listener_closed(uv_handle_t *h)
{
    struct smt *t = h->data;
    t->listening = false;
    if (!t->conns && t->close_cb) {
        raft_uv_transport_close_cb cb = t->close_cb;
        t->close_cb = NULL;
        cb(t->t);
    }
}

static void tr_close(struct raft_uv_transport *rt, raft_uv_transport_close_cb cb)
{
    struct smt *t = rt->impl;
    t->closing = true;
    t->close_cb = cb;
    for (struct smt_conn *c = t->conns; c; c = c->next) conn_close(c, NULL);
    if (t->listening)
        uv_close((uv_handle_t *)&t->listener, listener_closed);
    else if (!t->conns) {
        t->close_cb = NULL;
        cb(rt);
    }
}

int smt_init(struct raft_uv_transport *rt, uv_loop_t *loop, const struct smt_config *cfg, char *err,
             size_t errlen)
{
    memset(rt, 0, sizeof *rt);
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return SM_ECRYPTO;
    }
    struct smt *t = calloc(1, sizeof *t);
    if (!t) return SM_ENOMEM;
    t->loop = loop;
    t->cfg = *cfg;
    t->t = rt;
    if (!t->cfg.handshake_timeout_ms) t->cfg.handshake_timeout_ms = 5000;
    snprintf(t->bind, sizeof t->bind, "%s", cfg->bind ? cfg->bind : "");
    struct sockaddr_storage sa;
    if (t->bind[0] && smt_parse_addr(t->bind, &sa) < 0) {
        snprintf(err, errlen, "bad address '%s' (expected host:port)", t->bind);
        free(t);
        return SM_ECONFIG;
    }
    if (!cfg->insecure) {
        memcpy(t->ca_pk, cfg->ca_pk, sizeof t->ca_pk);
        t->self = *cfg->self;
    }
    t->cfg.self = NULL;
    t->cfg.ca_pk = NULL;
    rt->impl = t;
    rt->init = tr_init;
    rt->listen = tr_listen;
    rt->connect = tr_connect;
    rt->close = tr_close;
    return 0;
}

void smt_cleanup(struct raft_uv_transport *rt)
{
    struct smt *t = rt->impl;
    if (!t) return;
    smc_identity_wipe(&t->self);
    free(t);
    rt->impl = NULL;
}

int smt_fwd_connect(struct raft_uv_transport *rt, const char *address, void *user,
                    struct smt_conn **out)
{
    struct smt *t = rt->impl;
    if (t->closing) return SM_ECLOSED;
    struct smt_conn *c = dial(t, address, SMT_FWD);
    if (!c) return SM_EUNAVAILABLE;
    c->user = user;
    c->fwd_announced = true; /* the owner hears of its end, success or not */
    *out = c;
    return 0;
}
