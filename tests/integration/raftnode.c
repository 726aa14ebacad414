/* raftnode.c: test driver: one store (storage=raft) on a libev loop, driven over a
 * line protocol on a loopback TCP port, for the raft integration tests and bench.
 *
 * Usage: raftnode ctl=HOST:PORT key=value...   (every other key=value is a store option)
 *        raftnode gencerts DIR ID...           (CA in DIR/ca, node files in DIR/ID.{key,cert})
 *
 * Protocol: one request a line, "TAG CMD ARGS...", one answer a line,
 * "TAG ok ..." or "TAG err ERRNAME message". Commands:
 *   set K V [TTLMS] | mset K V K V ... | get K | del K | ping
 *   lock NAME TTLMS -> ok TOKEN FENCE EXPIRES | renew NAME TOKEN TTLMS | unlock NAME TOKEN
 *   status -> ok ID STATE LEADER TERM APPLIED NSERVERS | add ID ADDR | remove ID | transfer ID
 *   backup PATH | stale K (sm_get_now) | evcount | watch PREFIX (events: "* event TYPE KEY VALUE
 * VERSION")
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto/cert.h"
#include "src/raft_admin.h"
#include "statemesh.h"

struct client {
    int fd;
    ev_io w;
    char buf[65536];
    size_t len;
    struct client *next;
};

struct req {
    struct client *c;
    char tag[32];
    int kind;
};

static struct sm_store *store;
static unsigned long events_delivered, events_written;
static struct ev_loop *loop;
static struct client *clients;

static bool client_alive(struct client *c)
{
    for (struct client *x = clients; x; x = x->next)
        if (x == c) return true;
    return false;
}

static void out(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct client *c, const char *fmt, ...)
{
    if (!client_alive(c)) return;
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(c->fd, line + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        off += w;
    }
}

static void err_out(struct client *c, const char *tag, int st, const char *msg)
{
    char clean[512];
    snprintf(clean, sizeof clean, "%s", msg ? msg : sm_strerror(st));
    for (char *p = clean; *p; p++)
        if (*p == '\n') *p = ' ';
    out(c, "%s err %s %s", tag, sm_errname(st), clean);
}

static void done(struct sm_store *s, int st, const struct sm_result *res, void *arg)
{
    (void)s;
    struct req *r = arg;
    if (st < 0) {
        err_out(r->c, r->tag, st, res ? res->errmsg : NULL);
    } else if (r->kind == 'g') {
        const struct sm_entry *e = &res->entries[0];
        out(r->c, "%s ok %.*s %llu %lld", r->tag, (int)e->value_len, (const char *)e->value,
            (unsigned long long)e->version, (long long)e->expires_ms);
    } else if (r->kind == 'l') {
        out(r->c, "%s ok %s %llu %lld", r->tag, res->lock->token,
            (unsigned long long)res->lock->fence, (long long)res->lock->expires_ms);
    } else {
        out(r->c, "%s ok %llu", r->tag, (unsigned long long)res->version);
    }
    free(r);
}

static void on_event(struct sm_watch *w, const struct sm_event *ev, void *arg)
{
    (void)w;
    struct client *c = arg;
    static const char *const names[] = {"", "set", "delete", "expire", "overflow"};
    events_delivered++;
    if (client_alive(c)) events_written++;
    out(c, "* event %s %s %.*s %llu", names[ev->type], ev->key, (int)ev->value_len,
        ev->value ? (const char *)ev->value : "", (unsigned long long)ev->version);
}

static void command(struct client *c, char *line)
{
    char *argv[64];
    int argc = 0;
    for (char *save = NULL, *t = strtok_r(line, " \t\r", &save); t && argc < 64;
         t = strtok_r(NULL, " \t\r", &save))
        argv[argc++] = t;
    if (argc < 2) return;
    const char *tag = argv[0], *cmd = argv[1];
    struct req *r = calloc(1, sizeof *r);
    if (!r) return;
    r->c = c;
    snprintf(r->tag, sizeof r->tag, "%s", tag);
    int rc = SM_EINVAL;
    if (!strcmp(cmd, "set") && argc >= 4) {
        rc = sm_set(store, argv[2], argv[3], strlen(argv[3]),
                    argc > 4 ? strtoull(argv[4], NULL, 10) : 0, done, r);
    } else if (!strcmp(cmd, "mset") && argc >= 4 && argc % 2 == 0) {
        struct sm_kv kv[31];
        size_t n = 0;
        for (int i = 2; i + 1 < argc; i += 2, n++)
            kv[n] = (struct sm_kv){argv[i], argv[i + 1], strlen(argv[i + 1]), 0};
        rc = sm_set_multi(store, kv, n, done, r);
    } else if (!strcmp(cmd, "get") && argc == 3) {
        r->kind = 'g';
        rc = sm_get(store, argv[2], done, r);
    } else if (!strcmp(cmd, "del") && argc == 3) {
        rc = sm_del(store, argv[2], done, r);
    } else if (!strcmp(cmd, "ping")) {
        rc = sm_ping(store, done, r);
    } else if (!strcmp(cmd, "lock") && argc == 4) {
        r->kind = 'l';
        rc = sm_lock_acquire(store, argv[2], strtoull(argv[3], NULL, 10), done, r);
    } else if (!strcmp(cmd, "renew") && argc == 5) {
        r->kind = 'l';
        rc = sm_lock_renew(store, argv[2], argv[3], strtoull(argv[4], NULL, 10), done, r);
    } else if (!strcmp(cmd, "unlock") && argc == 4) {
        r->kind = 'l';
        rc = sm_lock_release(store, argv[2], argv[3], done, r);
    } else if (!strcmp(cmd, "add") && argc == 4) {
        rc = sm_raft_add(store, strtoull(argv[2], NULL, 10), argv[3], done, r);
    } else if (!strcmp(cmd, "remove") && argc == 3) {
        rc = sm_raft_remove(store, strtoull(argv[2], NULL, 10), done, r);
    } else if (!strcmp(cmd, "transfer") && argc == 3) {
        rc = sm_raft_transfer(store, strtoull(argv[2], NULL, 10), done, r);
    } else {
        free(r);
        r = NULL;
        if (!strcmp(cmd, "status")) {
            struct sm_raft_status s;
            if (sm_raft_status(store, &s) < 0) {
                err_out(c, tag, SM_ENOTSUP, sm_errmsg(store));
                return;
            }
            out(c, "%s ok %llu %s %llu %llu %llu %zu %llu", tag, (unsigned long long)s.id, s.state,
                (unsigned long long)s.leader_id, (unsigned long long)s.term,
                (unsigned long long)s.applied_index, s.n_servers,
                (unsigned long long)s.rejected_peers);
        } else if (!strcmp(cmd, "backup") && argc == 3) {
            char e[256];
            int b = sm_raft_backup(store, argv[2], e, sizeof e);
            if (b < 0)
                err_out(c, tag, b, e);
            else
                out(c, "%s ok", tag);
        } else if (!strcmp(cmd, "stale") && argc == 3) {
            struct sm_entry e;
            int g = sm_get_now(store, argv[2], &e);
            if (g < 0)
                err_out(c, tag, g, NULL);
            else
                out(c, "%s ok %.*s %llu", tag, (int)e.value_len, (const char *)e.value,
                    (unsigned long long)e.version);
        } else if (!strcmp(cmd, "watch") && argc == 3) {
            struct sm_watch *w;
            int g = sm_watch(store, argv[2], on_event, c, &w);
            if (g < 0)
                err_out(c, tag, g, NULL);
            else
                out(c, "%s ok", tag);
        } else if (!strcmp(cmd, "evcount")) {
            out(c, "%s ok %lu %lu", tag, events_delivered, events_written);
        } else if (!strcmp(cmd, "quit")) {
            out(c, "%s ok", tag);
            ev_break(loop, EVBREAK_ALL);
        } else {
            err_out(c, tag, SM_EINVAL, "unknown command or wrong arguments");
        }
        return;
    }
    if (rc < 0) {
        err_out(c, tag, rc, sm_errmsg(store));
        free(r);
    }
}

static void client_close(struct client *c)
{
    ev_io_stop(loop, &c->w);
    close(c->fd);
    for (struct client **p = &clients; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    free(c);
}

static void on_client(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l, (void)revents;
    struct client *c = w->data;
    ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
    if (n <= 0) {
        if (n < 0 && errno == EINTR) return;
        client_close(c);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    char *start = c->buf, *nl;
    while ((nl = memchr(start, '\n', c->len - (size_t)(start - c->buf)))) {
        *nl = '\0';
        command(c, start);
        if (!client_alive(c)) return;
        start = nl + 1;
    }
    c->len -= (size_t)(start - c->buf);
    memmove(c->buf, start, c->len);
    if (c->len == sizeof c->buf - 1) client_close(c);
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents)
{
    (void)revents;
    int fd = accept(w->fd, NULL, NULL);
    if (fd < 0) return;
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    ev_io_init(&c->w, on_client, fd, EV_READ);
    c->w.data = c;
    ev_io_start(l, &c->w);
    c->next = clients;
    clients = c;
}

static void on_signal(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)w, (void)revents;
    ev_break(l, EVBREAK_ALL);
}

static int gencerts(int argc, char **argv)
{
    char err[512], cadir[4096];
    snprintf(cadir, sizeof cadir, "%s/ca", argv[2]);
    if (smc_ca_init(cadir, err, sizeof err) < 0) {
        fprintf(stderr, "ca init: %s\n", err);
        return 1;
    }
    for (int i = 3; i < argc; i++)
        if (smc_cert_issue(cadir, argv[i], argv[2], 1, err, sizeof err) < 0) {
            fprintf(stderr, "cert issue %s: %s\n", argv[i], err);
            return 1;
        }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "gencerts")) return gencerts(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct sm_config *cfg = sm_config_new();
    const char *ctl = NULL;
    for (int i = 1; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "usage: raftnode ctl=HOST:PORT key=value...\n");
            return 2;
        }
        *eq = '\0';
        if (!strcmp(argv[i], "ctl"))
            ctl = eq + 1;
        else if (!strncmp(argv[i], "route.", 6))
            (void)sm_config_route(cfg, argv[i] + 6, eq + 1);
        else if (sm_config_set(cfg, argv[i], eq + 1) < 0)
            return 2;
    }
    if (!ctl) {
        fprintf(stderr, "raftnode: ctl=HOST:PORT is required\n");
        return 2;
    }
    loop = ev_default_loop(0);
    char err[1024];
    int rc = sm_store_new(loop, cfg, &store, err, sizeof err);
    sm_config_delete(cfg);
    if (rc < 0) {
        fprintf(stderr, "open failed: %s: %s\n", sm_errname(rc), err);
        return 3;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET};
    const char *colon = strrchr(ctl, ':');
    if (!colon) return 2;
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(colon - ctl), ctl);
    inet_pton(AF_INET, host, &sa.sin_addr);
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 16) != 0) {
        fprintf(stderr, "raftnode: cannot listen on %s: %s\n", ctl, strerror(errno));
        sm_store_delete(store);
        return 2;
    }
    ev_io lw;
    ev_io_init(&lw, on_accept, lfd, EV_READ);
    ev_io_start(loop, &lw);
    ev_signal sigt, sigi;
    ev_signal_init(&sigt, on_signal, SIGTERM);
    ev_signal_init(&sigi, on_signal, SIGINT);
    ev_signal_start(loop, &sigt);
    ev_signal_start(loop, &sigi);
    printf("ready\n");
    fflush(stdout);
    ev_run(loop, 0);
    while (clients) client_close(clients);
    ev_io_stop(loop, &lw);
    close(lfd);
    sm_store_delete(store);
    ev_signal_stop(loop, &sigt);
    ev_signal_stop(loop, &sigi);
    ev_loop_destroy(loop);
    return 0;
}
