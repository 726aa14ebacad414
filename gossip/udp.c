/* udp.c: drives an sm_node from a libev loop over one non-blocking UDP socket.
 * No protocol logic lives here: datagrams in, datagrams out, one timer. */
#include "config.h"

#include "gossip/udp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define BUFSZ 2048 /* larger than any MTU we accept; bigger datagrams are truncated and dropped */

struct gossip_udp {
    struct ev_loop *loop;
    int fd;
    int family;
    struct sm_node *node;
    ev_io io;
    ev_timer timer;
    struct gossip_udp_stats stats;
    uint8_t (*bufs)[BUFSZ];
};

struct sm_time gossip_udp_now(void)
{
    struct timespec m, w;
    clock_gettime(CLOCK_MONOTONIC, &m);
    clock_gettime(CLOCK_REALTIME, &w);
    struct sm_time t = {
        .mono_ms = (uint64_t)m.tv_sec * 1000u + (uint64_t)m.tv_nsec / 1000000u,
        .wall_ms = (int64_t)w.tv_sec * 1000 + w.tv_nsec / 1000000,
    };
    return t;
}

static int split_hostport(const char *hp, char *host, size_t hlen, char *port, size_t plen)
{
    const char *colon;
    if (hp[0] == '[') {
        const char *end = strchr(hp, ']');
        if (!end || end[1] != ':') return -1;
        if ((size_t)(end - hp - 1) >= hlen) return -1;
        memcpy(host, hp + 1, (size_t)(end - hp - 1));
        host[end - hp - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(hp, ':');
        if (!colon || (size_t)(colon - hp) >= hlen) return -1;
        memcpy(host, hp, (size_t)(colon - hp));
        host[colon - hp] = '\0';
    }
    if (!colon[1] || strlen(colon + 1) >= plen) return -1;
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9') return -1;
    if (atoi(colon + 1) > 65535) return -1;
    snprintf(port, plen, "%s", colon + 1);
    return 0;
}

int gossip_addr_parse(const char *hostport, struct sm_addr *out, char *err, size_t errlen)
{
    char host[256], port[8];
    if (!hostport || split_hostport(hostport, host, sizeof host, port, sizeof port) < 0) {
        snprintf(err, errlen, "'%s' is not host:port", hostport ? hostport : "(null)");
        return SM_EINVAL;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve '%s': %s", hostport, gai_strerror(rc));
        return SM_EINVAL;
    }
    if (res->ai_addrlen > SM_ADDR_MAX) {
        freeaddrinfo(res);
        snprintf(err, errlen, "address of '%s' too long", hostport);
        return SM_EINVAL;
    }
    memset(out, 0, sizeof *out);
    out->len = (uint8_t)res->ai_addrlen;
    memcpy(out->b, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

char *gossip_addr_format(const struct sm_addr *a, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, a->b, a->len < sizeof ss ? a->len : sizeof ss);
    char host[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET && a->len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        snprintf(buf, len, "%s:%u", host, ntohs(s4->sin_port));
    } else if (ss.ss_family == AF_INET6 && a->len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        snprintf(buf, len, "[%s]:%u", host, ntohs(s6->sin6_port));
    } else {
        snprintf(buf, len, "?");
    }
    return buf;
}

static void rearm(struct gossip_udp *u, uint64_t now_mono)
{
    if (!u->node) return;
    uint64_t next = sm_node_next_timeout(u->node);
    double delay = next > now_mono ? (double)(next - now_mono) / 1000.0 : 0.0;
    ev_timer_stop(u->loop, &u->timer);
    ev_timer_set(&u->timer, delay, 0.0);
    ev_timer_start(u->loop, &u->timer);
}

void gossip_udp_rearm(struct gossip_udp *u)
{
    rearm(u, gossip_udp_now().mono_ms);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    struct gossip_udp *u = w->data;
    struct sm_time now = gossip_udp_now();
    sm_node_on_timeout(u->node, now);
    rearm(u, now.mono_ms);
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop, (void)revents;
    struct gossip_udp *u = w->data;
    for (int rounds = 0; rounds < 8; rounds++) { /* bounded: let other watchers run */
        struct mmsghdr msgs[BATCH];
        struct iovec iov[BATCH];
        struct sockaddr_storage from[BATCH];
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = u->bufs[i];
            iov[i].iov_len = BUFSZ;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int n = recvmmsg(u->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) break;
        struct sm_time now = gossip_udp_now();
        for (int i = 0; i < n; i++) {
            size_t len = msgs[i].msg_len;
            u->stats.rx_datagrams++;
            u->stats.rx_bytes += len;
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                u->stats.rx_oversize++;
                continue;
            }
            struct sm_addr a = {0};
            socklen_t al = msgs[i].msg_hdr.msg_namelen;
            a.len = (uint8_t)(al < SM_ADDR_MAX ? al : SM_ADDR_MAX);
            memcpy(a.b, &from[i], a.len);
            if (sm_node_recv(u->node, now, &a, u->bufs[i], len) < 0) u->stats.rx_dropped++;
        }
        rearm(u, now.mono_ms);
        if (n < BATCH) break;
    }
}

int gossip_udp_new(struct ev_loop *loop, const char *bind_addr, struct gossip_udp **out, char *err,
                   size_t errlen)
{
    struct sm_addr a;
    int rc = gossip_addr_parse(bind_addr, &a, err, errlen);
    if (rc < 0) return SM_ECONFIG;
    struct gossip_udp *u = calloc(1, sizeof *u);
    if (!u) return SM_ENOMEM;
    u->bufs = malloc(BATCH * sizeof *u->bufs);
    if (!u->bufs) {
        free(u);
        return SM_ENOMEM;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, a.b, a.len); /* a.b is a byte array: copy before touching fields */
    const struct sockaddr *sa = (const struct sockaddr *)&ss;
    u->family = sa->sa_family;
    u->fd = socket(sa->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (u->fd < 0 || bind(u->fd, sa, a.len) != 0) {
        snprintf(err, errlen, "cannot bind UDP %s: %s", bind_addr, strerror(errno));
        if (u->fd >= 0) close(u->fd);
        free(u->bufs);
        free(u);
        return SM_EIO;
    }
    /* Bursts (a multi-key write fans out at once) must not overflow the
     * receive queue: ask for 4 MiB, beyond net.core.rmem_max when allowed
     * (CAP_NET_ADMIN), else whatever the kernel grants. */
    int sz = 4 << 20;
    if (setsockopt(u->fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) != 0)
        setsockopt(u->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    if (setsockopt(u->fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) != 0)
        setsockopt(u->fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    u->loop = loop;
    ev_io_init(&u->io, on_readable, u->fd, EV_READ);
    u->io.data = u;
    ev_timer_init(&u->timer, on_timer, 0.0, 0.0);
    u->timer.data = u;
    *out = u;
    return 0;
}

void gossip_udp_attach(struct gossip_udp *u, struct sm_node *node)
{
    u->node = node;
    ev_io_start(u->loop, &u->io);
    gossip_udp_rearm(u);
}

void gossip_udp_delete(struct gossip_udp *u)
{
    if (!u) return;
    ev_io_stop(u->loop, &u->io);
    ev_timer_stop(u->loop, &u->timer);
    close(u->fd);
    free(u->bufs);
    free(u);
}

void gossip_udp_send(struct gossip_udp *u, const struct sm_addr *to, const uint8_t *buf, size_t len)
{
    ssize_t n = sendto(u->fd, buf, len, MSG_DONTWAIT, (const struct sockaddr *)to->b, to->len);
    if (n < 0) {
        u->stats.tx_errors++;
        return;
    }
    u->stats.tx_datagrams++;
    u->stats.tx_bytes += (uint64_t)n;
}

int gossip_udp_local(const struct gossip_udp *u, struct sm_addr *out)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    if (getsockname(u->fd, (struct sockaddr *)&ss, &l) != 0 || l > SM_ADDR_MAX) return SM_EIO;
    memset(out, 0, sizeof *out);
    out->len = (uint8_t)l;
    memcpy(out->b, &ss, l);
    return 0;
}

const struct gossip_udp_stats *gossip_udp_stats(const struct gossip_udp *u)
{
    return &u->stats;
}
