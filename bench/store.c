/* bench/store.c: local store get/set throughput and memory for 1M records,
 * against synchronous hiredis GET/SET on a redis-server started here. */
#include "config.h"

#include <ev.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "statemesh.h"
#include "tests/lib/redis_server.h"

#define NKEYS  1000000
#define KEYLEN 32
#define VALLEN 100
#define HOT    1000 /* working set of the headline get figure: a fleet of 1,000 backends */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void emit(const char *metric, double value, const char *unit)
{
    printf("{\"bench\":\"store\",\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"}\n", metric,
           value, unit);
    fflush(stdout);
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

static void mkkey(char *k, size_t i)
{
    snprintf(k, KEYLEN + 1, "bench:key:%022zu", i);
}

static int pending;
static void on_set(struct sm_store *s, int status, const struct sm_result *r, void *arg)
{
    (void)s, (void)r, (void)arg;
    if (status != 0) {
        fprintf(stderr, "bench/store: set failed: %s\n", sm_strerror(status));
        exit(1);
    }
    pending--;
}

int main(void)
{
    static char keys[NKEYS][KEYLEN + 1];
    char value[VALLEN];
    memset(value, 'v', sizeof value);
    for (size_t i = 0; i < NKEYS; i++) mkkey(keys[i], i);
    long rss0 = rss_bytes();

    struct ev_loop *loop = ev_default_loop(0);
    struct sm_config *cfg = sm_config_new();
    if (sm_config_set(cfg, "node_id", "bench") != 0) return 1;
    struct sm_store *st;
    char err[256];
    if (sm_store_new(loop, cfg, &st, err, sizeof err) != 0) {
        fprintf(stderr, "bench/store: %s\n", err);
        return 1;
    }

    /* fill 1M keys (this is also the set benchmark) */
    double t0 = now_s();
    for (size_t i = 0; i < NKEYS; i += 1000) {
        for (size_t j = i; j < i + 1000; j++) {
            if (sm_set(st, keys[j], value, VALLEN, 0, on_set, NULL) != 0) return 1;
            pending++;
        }
        ev_run(loop, 0);
    }
    double set_s = now_s() - t0;
    long rss1 = rss_bytes();
    emit("local_set_ops_per_s", NKEYS / set_s, "ops/s");
    /* what the records cost: resident growth from filling the store (the
     * bench's own key array is allocated before the baseline) */
    emit("rss_bytes_1m_records", (double)(rss1 - rss0), "bytes");
    emit("rss_total_bytes", (double)rss1, "bytes");

    /* Local synchronous gets. A proxy reads a working set of backend records
     * over and over, so the headline figure draws random keys from a hot set
     * of HOT keys out of the 1M; the uniform figure draws from all 1M (every
     * read a cache miss). Redis is measured on the same hot set. */
    uint64_t x = 88172645463325252ull;
    static const size_t spans[3] = {HOT, 10000, NKEYS};
    double best[3] = {0, 0, 0};
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 3; k++) {
            size_t n = 3000000, hits = 0, span = spans[k];
            t0 = now_s();
            for (size_t i = 0; i < n; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                struct sm_entry e;
                if (sm_get_now(st, keys[(x % span) * (NKEYS / span)], &e) == 0)
                    hits += e.value_len == VALLEN;
            }
            double r = n / (now_s() - t0);
            if (hits != n) {
                fprintf(stderr, "bench/store: %zu of %zu gets hit\n", hits, n);
                return 1;
            }
            if (r > best[k]) best[k] = r;
        }
    }
    double best_get = best[0];
    emit("local_get_ops_per_s", best[0], "ops/s");
    emit("local_get_hot10k_ops_per_s", best[1], "ops/s");
    emit("local_get_uniform_1m_ops_per_s", best[2], "ops/s");

    /* redis-server on a free loopback port, synchronous hiredis from one client */
    struct redis_server srv = {0};
    if (redis_server_start(&srv) != 0) {
        fprintf(stderr, "bench/store: cannot start redis-server\n");
        return 1;
    }
    redisContext *c = redis_server_connect(&srv);
    if (!c) {
        fprintf(stderr, "bench/store: could not reach redis-server on port %d\n", srv.port);
        redis_server_stop(&srv);
        return 1;
    }
    size_t nr = 20000;
    t0 = now_s();
    for (size_t i = 0; i < nr; i++) {
        redisReply *rep =
            redisCommand(c, "SET %s %b", keys[(i % HOT) * (NKEYS / HOT)], value, (size_t)VALLEN);
        if (!rep) return 1;
        freeReplyObject(rep);
    }
    double rset = nr / (now_s() - t0);
    double best_rget = 0;
    for (int round = 0; round < 3; round++) {
        t0 = now_s();
        for (size_t i = 0; i < nr; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            redisReply *rep = redisCommand(c, "GET %s", keys[(x % HOT) * (NKEYS / HOT)]);
            if (!rep || rep->type != REDIS_REPLY_STRING) {
                fprintf(stderr, "bench/store: redis GET failed\n");
                return 1;
            }
            freeReplyObject(rep);
        }
        double r = nr / (now_s() - t0);
        if (r > best_rget) best_rget = r;
    }
    redisFree(c);
    redis_server_stop(&srv);

    emit("redis_set_ops_per_s", rset, "ops/s");
    emit("redis_get_ops_per_s", best_rget, "ops/s");
    emit("get_ratio", best_get / best_rget, "x");
    emit("set_ratio", (NKEYS / set_s) / rset, "x");

    sm_store_delete(st);
    sm_config_delete(cfg);
    return 0;
}
