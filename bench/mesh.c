/* bench/mesh.c: 50 mesh nodes on real UDP over loopback, signed packets, in
 * one process: how long an update takes to reach every node, and the idle
 * traffic of a converged mesh holding 50 x 100 keys. */
#include "config.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crypto/cert.h"
#include "statemesh.h"
#include "tests/lib/udp_port.h"

#define N            50
#define UPDATES      120
#define IDLE_KEYS    100
#define IDLE_SECONDS 10.0
#ifndef SETTLE_S
#define SETTLE_S 3.0
#endif

struct bnode {
    struct sm_config *cfg;
    struct sm_store *st;
    struct sm_watch *w;
    int idx;
};

static struct bnode nodes[N];
static double arrival[UPDATES][N];
static int arrived[UPDATES];
static struct ev_loop *loop;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void emit(const char *metric, double v, const char *unit)
{
    printf("{\"bench\":\"mesh\",\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"}\n", metric, v,
           unit);
    fflush(stdout);
}

static void on_event(struct sm_watch *w, const struct sm_event *ev, void *arg)
{
    (void)w;
    struct bnode *n = arg;
    int u;
    if (ev->type != SM_EVENT_SET || sscanf(ev->key, "bench:u%d", &u) != 1 || u < 0 || u >= UPDATES)
        return;
    if (arrival[u][n->idx] == 0) {
        arrival[u][n->idx] = mono();
        arrived[u]++;
    }
}

static void done(struct sm_store *s, int status, const struct sm_result *r, void *arg)
{
    (void)s, (void)arg;
    if (status) {
        fprintf(stderr, "bench/mesh: write failed: %s\n", r && r->errmsg ? r->errmsg : "");
        exit(1);
    }
}

static int count_alive(const struct sm_member *m, void *arg)
{
    if (m->state == SM_MEMBER_ALIVE) (*(int *)arg)++;
    return 0;
}

static void spin(double seconds)
{
    double end = mono() + seconds;
    while (mono() < end) ev_run(loop, EVRUN_ONCE);
}

static const char *const classes[4] = {"probe", "member", "data", "ae"};

/* Sum over every node of the metric samples whose line starts with @p prefix. */
static double metric_sum(const char *prefix)
{
    double total = 0;
    for (int i = 0; i < N; i++) {
        char *m = sm_metrics_render(nodes[i].st);
        for (char *p = m; (p = strstr(p, prefix)); p++) {
            char *sp = strchr(p, '}');
            if (sp) total += strtod(sp + 1, NULL);
        }
        free(m);
    }
    return total;
}

/* Bytes sent by every node, in total and by packet class. */
static double tx_bytes(double by_class[4])
{
    double total = 0;
    for (int c = 0; c < 4; c++) {
        char prefix[96];
        snprintf(prefix, sizeof prefix,
                 "statemesh_gossip_bytes_total{direction=\"out\",type=\"%s\"}", classes[c]);
        by_class[c] = metric_sum(prefix);
        total += by_class[c];
    }
    return total;
}

static int count_entry(const struct sm_entry *e, void *arg)
{
    (void)e;
    (*(int *)arg)++;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A timer that keeps ev_run(EVRUN_ONCE) from sleeping past short waits. */
static void tick(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l, (void)w, (void)revents;
}

int main(void)
{
    char dir[] = "/tmp/sm-bench-mesh-XXXXXX", err[512], ca[128], certs[128], buf[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(ca, sizeof ca, "%s/ca", dir);
    snprintf(certs, sizeof certs, "%s/certs", dir);
    if (smc_ca_init(ca, err, sizeof err) != 0) {
        fprintf(stderr, "bench/mesh: %s\n", err);
        return 1;
    }
    loop = ev_default_loop(0);
    ev_timer t;
    ev_timer_init(&t, tick, 0.001, 0.001);
    ev_timer_start(loop, &t);
    int seed_port = 0;
    for (int i = 0; i < N; i++) {
        struct bnode *n = &nodes[i];
        char id[16];
        snprintf(id, sizeof id, "n%02d", i);
        if (smc_cert_issue(ca, id, certs, 1, err, sizeof err) != 0) {
            fprintf(stderr, "bench/mesh: %s\n", err);
            return 1;
        }
        n->idx = i;
        n->cfg = sm_config_new();
        int port = free_udp_port();
        if (port < 0) {
            perror("bench/mesh: port");
            return 1;
        }
        if (i == 0) seed_port = port;
        sm_config_set(n->cfg, "node_id", id);
        sm_config_set(n->cfg, "storage", "mesh");
        snprintf(buf, sizeof buf, "127.0.0.1:%d", port);
        sm_config_set(n->cfg, "mesh.bind", buf);
        snprintf(buf, sizeof buf, "127.0.0.1:%d", seed_port);
        if (i) sm_config_set(n->cfg, "mesh.join", buf);
        snprintf(buf, sizeof buf, "%s/ca.pub", ca);
        sm_config_set(n->cfg, "mesh.ca", buf);
        snprintf(buf, sizeof buf, "%s/%s.cert", certs, id);
        sm_config_set(n->cfg, "mesh.cert", buf);
        snprintf(buf, sizeof buf, "%s/%s.key", certs, id);
        sm_config_set(n->cfg, "mesh.key", buf);
        sm_config_set(n->cfg, "mesh.gossip_interval", "200ms");
        sm_config_set(n->cfg, "watch_queue", "100000");
        if (sm_store_new(loop, n->cfg, &n->st, err, sizeof err) != 0) {
            fprintf(stderr, "bench/mesh: node %d: %s\n", i, err);
            return 1;
        }
        if (sm_watch(n->st, "bench:", on_event, n, &n->w) != 0) return 1;
    }
    /* wait until every node sees all 50 alive */
    double t0 = mono();
    for (;;) {
        int ok = 0;
        for (int i = 0; i < N; i++) {
            int alive = 0;
            sm_members(nodes[i].st, count_alive, &alive);
            ok += alive == N;
        }
        if (ok == N) break;
        if (mono() - t0 > 60) {
            fprintf(stderr, "bench/mesh: only %d of %d nodes see the full membership\n", ok, N);
            return 1;
        }
        spin(0.05);
    }
    emit("membership_formed_s", mono() - t0, "s");

    /* convergence: one update at a time from a random node, timed until all 50 hold it */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    double conv[UPDATES];
    int nconv = 0;
    for (int u = 0; u < UPDATES; u++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        struct bnode *w = &nodes[x % N];
        char key[32], val[32];
        snprintf(key, sizeof key, "bench:u%d", u);
        snprintf(val, sizeof val, "v%d", u);
        double start = mono();
        if (sm_set(w->st, key, val, strlen(val), 0, done, NULL) != 0) return 1;
        while (arrived[u] < N && mono() - start < 5.0) ev_run(loop, EVRUN_ONCE);
        if (arrived[u] < N) {
            fprintf(stderr, "bench/mesh: update %d reached %d of %d nodes in 5 s\n", u, arrived[u],
                    N);
            return 1;
        }
        double last = 0;
        for (int i = 0; i < N; i++)
            if (arrival[u][i] > last) last = arrival[u][i];
        conv[nconv++] = (last - start) * 1000.0;
        spin(0.02);
    }
    qsort(conv, (size_t)nconv, sizeof conv[0], cmp_double);
    emit("updates", nconv, "count");
    emit("convergence_ms_p50", conv[nconv / 2], "ms");
    emit("convergence_ms_p99", conv[(nconv * 99) / 100 - 1 + (nconv < 100)], "ms");
    emit("convergence_ms_max", conv[nconv - 1], "ms");

    /* idle: 100 keys per node, converge, then count every byte sent for a while */
    static char keys[IDLE_KEYS][48];
    struct sm_kv items[IDLE_KEYS];
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < IDLE_KEYS; k++) {
            snprintf(keys[k], sizeof keys[k], "idle:n%02d:k%03d", i, k);
            items[k] = (struct sm_kv){keys[k], "backend-state-value", 19, 0};
        }
        /* one batch per node, a little apart: the records spread packed */
        if (sm_set_multi(nodes[i].st, items, IDLE_KEYS, done, NULL) != 0) return 1;
        spin(0.1);
    }
    /* Wait until every replica holds all 5,000 keys: every record is verified
     * by 50 nodes sharing this one thread, so the burst takes a while. */
    double w0 = mono();
    int full = 0, missing = 0;
    for (;;) {
        full = 0, missing = 0;
        for (int i = 0; i < N; i++) {
            int cnt = 0;
            sm_list(nodes[i].st, "idle:", count_entry, &cnt);
            full += cnt == N * IDLE_KEYS;
            missing += N * IDLE_KEYS - cnt;
        }
        if (full == N || mono() - w0 > 60) break;
        spin(0.5);
    }
    /* Reported, not hidden: replicas still missing keys after 60 s keep
     * anti-entropy busy, so the idle figure then includes that repair work. */
    emit("idle_keys_converged_s", mono() - w0, "s");
    emit("idle_replicas_complete", full, "count");
    emit("idle_keys_missing", missing, "count");
    spin(SETTLE_S); /* then let anti-entropy see agreeing replicas */
    double c0[4], c1[4];
    static const char *const pk = "statemesh_gossip_packets_total{direction=\"out\"";
    static const char *const su = "statemesh_gossip_events_total{event=\"suspicion\"";
    static const char *const re = "statemesh_gossip_events_total{event=\"refutation\"";
    double p0 = metric_sum(pk), su0 = metric_sum(su), re0 = metric_sum(re);
    double b0 = tx_bytes(c0), s0 = mono();
    spin(IDLE_SECONDS);
    double b1 = tx_bytes(c1), s1 = mono();
    emit("idle_bytes_per_node_per_s", (b1 - b0) / N / (s1 - s0), "B/s");
    emit("idle_packets_per_node_per_s", (metric_sum(pk) - p0) / N / (s1 - s0), "pkt/s");
    emit("idle_suspicions", metric_sum(su) - su0, "count");
    emit("idle_refutations", metric_sum(re) - re0, "count");
    for (int c = 0; c < 4; c++) {
        char name[64];
        snprintf(name, sizeof name, "idle_%s_bytes_per_node_per_s", classes[c]);
        emit(name, (c1[c] - c0[c]) / N / (s1 - s0), "B/s");
    }

    for (int i = 0; i < N; i++) {
        sm_unwatch(nodes[i].w);
        sm_store_delete(nodes[i].st);
        sm_config_delete(nodes[i].cfg);
    }
    snprintf(buf, sizeof buf, "rm -rf %s", dir);
    if (system(buf) != 0) fprintf(stderr, "bench/mesh: could not remove %s\n", dir);
    return 0;
}
