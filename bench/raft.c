/* bench/raft.c: a 3-node raft cluster on loopback (three stores on one libev loop, real
 * data dirs, certificate-authenticated encrypted transport): commit latency, write
 * throughput, lock latency, and the same lock operations against the redis backend on a
 * redis-server started here. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crypto/cert.h"
#include "src/raft_admin.h"
#include "statemesh.h"

#define N          3
#define COMMITS    300
#define LOCKS      200
#define TPUT_OPS   4000
#define TPUT_DEPTH 64

static struct ev_loop *loop;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void emit(const char *metric, double value, const char *unit)
{
    printf("{\"bench\":\"raft\",\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"}\n", metric, value,
           unit);
    fflush(stdout);
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmpd);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("bench/raft: free port");
        exit(1);
    }
    close(fd);
    return ntohs(sa.sin_port);
}

/* ---- one synchronous call at a time over the async API ---- */

struct wait {
    bool done;
    int status;
    char token[64];
    char errmsg[256];
};

static void on_done(struct sm_store *s, int status, const struct sm_result *r, void *arg)
{
    (void)s;
    struct wait *w = arg;
    w->done = true;
    w->status = status;
    if (status == 0 && r && r->lock) snprintf(w->token, sizeof w->token, "%s", r->lock->token);
    if (status < 0) snprintf(w->errmsg, sizeof w->errmsg, "%s", r && r->errmsg ? r->errmsg : "");
}

static int wait_for(struct wait *w)
{
    while (!w->done) ev_run(loop, EVRUN_ONCE);
    return w->status;
}

static void must(int rc, struct sm_store *st, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "bench/raft: %s: %s (%s)\n", what, sm_strerror(rc), sm_errmsg(st));
        exit(1);
    }
}

/* Lock acquire + release latencies of LOCKS rounds on store @p st, into @p out (2*LOCKS). */
static void lock_rounds(struct sm_store *st, double *out)
{
    for (int i = 0; i < LOCKS; i++) {
        char name[64];
        snprintf(name, sizeof name, "lock:bench:%d", i % 16);
        struct wait w = {0};
        double t0 = now_ms();
        must(sm_lock_acquire(st, name, 10000, on_done, &w), st, "lock acquire");
        if (wait_for(&w) < 0) {
            fprintf(stderr, "bench/raft: acquire %s: %s\n", name, w.errmsg);
            exit(1);
        }
        out[2 * i] = now_ms() - t0;
        struct wait r = {0};
        t0 = now_ms();
        must(sm_lock_release(st, name, w.token, on_done, &r), st, "lock release");
        if (wait_for(&r) < 0) {
            fprintf(stderr, "bench/raft: release %s: %s\n", name, r.errmsg);
            exit(1);
        }
        out[2 * i + 1] = now_ms() - t0;
    }
}

/* ---- throughput ---- */

static int inflight, issued, completed, failed;
static struct sm_store *tput_store;

static void issue(void);
static void on_tput(struct sm_store *s, int status, const struct sm_result *r, void *arg)
{
    (void)s, (void)r, (void)arg;
    inflight--;
    completed++;
    if (status < 0) failed++;
    issue();
}

static void issue(void)
{
    while (inflight < TPUT_DEPTH && issued < TPUT_OPS) {
        char key[64], val[32];
        snprintf(key, sizeof key, "bench:t:%d", issued % 1000);
        snprintf(val, sizeof val, "v%d", issued);
        if (sm_set(tput_store, key, val, strlen(val), 0, on_tput, NULL) < 0) {
            fprintf(stderr, "bench/raft: set refused: %s\n", sm_errmsg(tput_store));
            exit(1);
        }
        inflight++;
        issued++;
    }
}

/* ---- redis ---- */

static pid_t start_redis(int port)
{
    const char *bin = getenv("REDIS_SERVER");
    if (!bin || !*bin) bin = "redis-server";
    pid_t pid = fork();
    if (pid == 0) {
        char p[16];
        snprintf(p, sizeof p, "%d", port);
        int null = open("/dev/null", 0);
        if (null >= 0) dup2(null, 1);
        execlp(bin, bin, "--port", p, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               (char *)NULL);
        _exit(127);
    }
    return pid;
}

static const char *base_dir(void)
{
    static const char *const cands[] = {"/var/tmp", ".", "/tmp", NULL};
    for (size_t i = 0; cands[i]; i++) {
        struct statfs fs;
        if (statfs(cands[i], &fs) == 0 && fs.f_type != 0x01021994 && access(cands[i], W_OK) == 0)
            return cands[i];
    }
    return ".";
}

static void rm_rf(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench/raft: could not remove %s\n", dir);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    loop = ev_default_loop(0);
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/raftbench.XXXXXX", base_dir());
    char *dir = mkdtemp(tmpl);
    if (!dir) {
        perror("bench/raft: mkdtemp");
        return 1;
    }
    /* Certificates for the three nodes. */
    char err[1024], path[4200];
    snprintf(path, sizeof path, "%s/ca", dir);
    if (smc_ca_init(path, err, sizeof err) < 0) {
        fprintf(stderr, "bench/raft: %s\n", err);
        return 1;
    }
    int ports[N];
    char peers[512] = "";
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "n%d", i + 1);
        if (smc_cert_issue(path, id, dir, 1, err, sizeof err) < 0) {
            fprintf(stderr, "bench/raft: %s\n", err);
            return 1;
        }
        ports[i] = free_port();
        size_t l = strlen(peers);
        snprintf(peers + l, sizeof peers - l, "%s%d=127.0.0.1:%d", i ? "," : "", i + 1, ports[i]);
    }
    struct sm_store *st[N];
    for (int i = 0; i < N; i++) {
        struct sm_config *cfg = sm_config_new();
        char v[4200];
        snprintf(v, sizeof v, "n%d", i + 1);
        (void)sm_config_set(cfg, "node_id", v);
        (void)sm_config_set(cfg, "storage", "raft");
        snprintf(v, sizeof v, "%d", i + 1);
        (void)sm_config_set(cfg, "raft.id", v);
        snprintf(v, sizeof v, "127.0.0.1:%d", ports[i]);
        (void)sm_config_set(cfg, "raft.bind", v);
        (void)sm_config_set(cfg, "raft.peers", peers);
        snprintf(v, sizeof v, "%s/d%d", dir, i + 1);
        (void)sm_config_set(cfg, "raft.data_dir", v);
        (void)sm_config_set(cfg, "raft.election_timeout", "500ms");
        (void)sm_config_set(cfg, "raft.heartbeat", "50ms");
        (void)sm_config_set(cfg, "raft.ca", path);
        snprintf(v, sizeof v, "%s/n%d.cert", dir, i + 1);
        (void)sm_config_set(cfg, "raft.cert", v);
        snprintf(v, sizeof v, "%s/n%d.key", dir, i + 1);
        (void)sm_config_set(cfg, "raft.key", v);
        int rc = sm_store_new(loop, cfg, &st[i], err, sizeof err);
        sm_config_delete(cfg);
        if (rc < 0) {
            fprintf(stderr, "bench/raft: open node %d: %s\n", i + 1, err);
            return 1;
        }
    }
    /* Wait for a leader. */
    int leader = -1;
    double t0 = now_ms();
    while (leader < 0 && now_ms() - t0 < 20000) {
        ev_run(loop, EVRUN_ONCE);
        for (int i = 0; i < N; i++) {
            struct sm_raft_status s;
            if (sm_raft_status(st[i], &s) == 0 && !strcmp(s.state, "leader")) leader = i;
        }
    }
    if (leader < 0) {
        fprintf(stderr, "bench/raft: no leader elected\n");
        return 1;
    }
    emit("election_ms", now_ms() - t0, "ms");
    int follower = (leader + 1) % N;

    /* Commit latency: one write at a time on the leader, then through a follower. */
    static double lat[COMMITS], flat[COMMITS];
    for (int i = 0; i < COMMITS + 20; i++) {
        char key[32];
        snprintf(key, sizeof key, "bench:c:%d", i % 100);
        struct wait w = {0};
        double t = now_ms();
        must(sm_set(st[leader], key, "value", 5, 0, on_done, &w), st[leader], "set");
        if (wait_for(&w) < 0) {
            fprintf(stderr, "bench/raft: set: %s\n", w.errmsg);
            return 1;
        }
        if (i >= 20) lat[i - 20] = now_ms() - t; /* skip warm-up */
    }
    for (int i = 0; i < COMMITS + 20; i++) {
        char key[32];
        snprintf(key, sizeof key, "bench:f:%d", i % 100);
        struct wait w = {0};
        double t = now_ms();
        must(sm_set(st[follower], key, "value", 5, 0, on_done, &w), st[follower], "set");
        if (wait_for(&w) < 0) {
            fprintf(stderr, "bench/raft: follower set: %s\n", w.errmsg);
            return 1;
        }
        if (i >= 20) flat[i - 20] = now_ms() - t;
    }
    emit("commit_ms_p50", pct(lat, COMMITS, 0.50), "ms");
    emit("commit_ms_p99", pct(lat, COMMITS, 0.99), "ms");
    emit("follower_commit_ms_p50", pct(flat, COMMITS, 0.50), "ms");
    emit("follower_commit_ms_p99", pct(flat, COMMITS, 0.99), "ms");

    /* Linearizable reads (barrier per batch) on the leader. */
    static double rlat[COMMITS];
    for (int i = 0; i < COMMITS; i++) {
        struct wait w = {0};
        double t = now_ms();
        must(sm_get(st[leader], "bench:c:1", on_done, &w), st[leader], "get");
        if (wait_for(&w) < 0) {
            fprintf(stderr, "bench/raft: get: %s\n", w.errmsg);
            return 1;
        }
        rlat[i] = now_ms() - t;
    }
    emit("read_ms_p50", pct(rlat, COMMITS, 0.50), "ms");

    /* Throughput: TPUT_DEPTH writes in flight on the leader. */
    tput_store = st[leader];
    t0 = now_ms();
    issue();
    while (completed < TPUT_OPS) ev_run(loop, EVRUN_ONCE);
    double el = now_ms() - t0;
    if (failed) {
        fprintf(stderr, "bench/raft: %d writes failed\n", failed);
        return 1;
    }
    emit("write_ops_per_s", TPUT_OPS / (el / 1e3), "ops/s");

    /* Locks: acquire + release rounds on the leader. */
    static double llat[2 * LOCKS], rl[2 * LOCKS];
    lock_rounds(st[leader], llat);
    emit("lock_ms_p50", pct(llat, 2 * LOCKS, 0.50), "ms");
    emit("lock_ms_p99", pct(llat, 2 * LOCKS, 0.99), "ms");

    for (int i = N; i-- > 0;) sm_store_delete(st[i]);

    /* The same lock operations on the redis backend. */
    int rport = free_port();
    pid_t rpid = start_redis(rport);
    struct sm_config *rc = sm_config_new();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rport);
    (void)sm_config_set(rc, "storage", "redis");
    (void)sm_config_set(rc, "redis.addr", addr);
    struct sm_store *rs = NULL;
    int ok = -1;
    for (int tries = 0; tries < 100; tries++) {
        struct wait w = {0};
        if (sm_store_new(loop, rc, &rs, err, sizeof err) == 0) {
            if (sm_ping(rs, on_done, &w) == 0 && wait_for(&w) == 0) {
                ok = 0;
                break;
            }
            sm_store_delete(rs);
            rs = NULL;
        }
        usleep(50000);
    }
    sm_config_delete(rc);
    if (ok < 0) {
        fprintf(stderr, "bench/raft: redis backend not reachable: %s\n", err);
        kill(rpid, SIGTERM);
        waitpid(rpid, NULL, 0);
        rm_rf(dir);
        return 1;
    }
    lock_rounds(rs, rl);
    sm_store_delete(rs);
    kill(rpid, SIGTERM);
    waitpid(rpid, NULL, 0);
    double rp99 = pct(rl, 2 * LOCKS, 0.99);
    emit("redis_lock_ms_p50", pct(rl, 2 * LOCKS, 0.50), "ms");
    emit("redis_lock_ms_p99", rp99, "ms");
    emit("lock_p99_vs_redis_ratio", pct(llat, 2 * LOCKS, 0.99) / (rp99 > 0 ? rp99 : 1e-3), "x");
    ev_loop_destroy(loop);
    rm_rf(dir);
    return 0;
}
