/* test_sim.c: the simulator engine: heap order, network model, node life, checks, determinism. */
#include "config.h"

#include "sim/core.h"
#include "sim/scenario.h"
#include "sim/sim.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/*
 * A recording protocol: every datagram a node receives is logged with the
 * virtual time; packets are injected with sim_send() from the test. Its
 * payload is a 4-byte counter so delivery order can be checked exactly.
 */

#define LOG_MAX 20000

struct logent {
    int64_t t;
    uint32_t node, from, tag;
};

static struct logent logv[LOG_MAX];
static size_t nlog;
static uint64_t fake_inc[16];

struct rec {
    struct sim *s;
    uint32_t id;
};

static int rec_new(struct sim *s, const struct sim_node_init *in, void **out)
{
    struct rec *r = calloc(1, sizeof(*r));
    if (!r) return SM_ENOMEM;
    r->s = s;
    r->id = in->id;
    *out = r;
    return 0;
}

static void rec_delete(void *p)
{
    free(p);
}

static void rec_recv(void *p, int64_t now_ms, uint32_t from, const uint8_t *buf, size_t len)
{
    struct rec *r = p;
    (void)now_ms;
    uint32_t tag = 0;
    if (len >= 4) memcpy(&tag, buf, 4);
    if (nlog < LOG_MAX) logv[nlog++] = (struct logent){sim_now(r->s), r->id, from, tag};
}

static void rec_timeout(void *p, int64_t now_ms)
{
    (void)p;
    (void)now_ms;
}

static int64_t rec_next(void *p)
{
    (void)p;
    return SIM_NEVER;
}

static int rec_write(void *p, int64_t now_ms, const char *key, size_t klen, const uint8_t *val,
                     size_t vlen)
{
    (void)p;
    (void)now_ms;
    (void)key;
    (void)klen;
    (void)val;
    (void)vlen;
    return SM_ENOTSUP;
}

static uint64_t rec_inc(void *p)
{
    return fake_inc[((struct rec *)p)->id % 16];
}

static const struct sim_proto rec_proto = {
    .name = "rec",
    .node_new = rec_new,
    .node_delete = rec_delete,
    .recv = rec_recv,
    .timeout = rec_timeout,
    .next_timeout = rec_next,
    .write = rec_write,
    .incarnation = rec_inc,
    .global_order = true, /* one log for all nodes: its order is what the tests check */
};

static struct sim *mk(uint32_t n, uint64_t seed, int64_t lat_min_us, int64_t lat_max_us,
                      const struct sim_proto *proto)
{
    struct sim_config cfg = {.nodes = n,
                             .seed = seed,
                             .lat_min_us = lat_min_us,
                             .lat_max_us = lat_max_us,
                             .proto = proto};
    struct sim *s = NULL;
    nlog = 0;
    memset(fake_inc, 0, sizeof(fake_inc));
    assert_int_equal(sim_new(&cfg, &s), 0);
    assert_non_null(s);
    return s;
}

static void send_tag(struct sim *s, uint32_t from, uint32_t to, uint32_t tag)
{
    uint8_t b[4];
    memcpy(b, &tag, 4);
    sim_send(s, from, to, b, 4, SIM_PKT_DATA);
}

static void test_fixed_latency_exact(void **state)
{
    (void)state;
    struct sim *s = mk(3, 1, 5000, 5000, &rec_proto);
    send_tag(s, 0, 1, 10);
    send_tag(s, 0, 2, 11);
    send_tag(s, 2, 1, 12);
    assert_int_equal(sim_run_until(s, 4999), 0);
    assert_int_equal(nlog, 0);
    assert_int_equal(sim_run_until(s, 7000), 3);
    assert_int_equal(nlog, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(logv[i].t, 5000);
        assert_int_equal(logv[i].tag, 10 + i);
    }
    assert_int_equal(logv[0].node, 1);
    assert_int_equal(logv[1].node, 2);
    assert_int_equal(logv[2].from, 2);
    /* a packet sent at 7 ms arrives at exactly 12 ms */
    send_tag(s, 1, 0, 13);
    assert_int_equal(sim_next_event(s), 12000);
    assert_true(sim_step(s));
    assert_int_equal(logv[3].t, 12000);
    assert_int_equal(sim_now(s), 12000);
    assert_false(sim_step(s));
    assert_int_equal(sim_stats(s)->delivered, 4);
    assert_int_equal(sim_stats(s)->pkts[SIM_PKT_DATA], 4);
    assert_int_equal(sim_stats(s)->bytes[SIM_PKT_DATA], 16);
    sim_delete(s);
}

/* Many packets due at the same instant come out by sender, then in the order
 * each sender sent them (an event's key is its origin and the origin's count,
 * so the order never depends on which thread made the event). */
static void test_ties_by_sequence(void **state)
{
    (void)state;
    struct sim *s = mk(4, 2, 3000, 3000, &rec_proto);
    for (uint32_t i = 0; i < 1000; i++) send_tag(s, i % 4, (i + 1) % 4, i);
    sim_run_until(s, SIM_NEVER - 1);
    assert_int_equal(nlog, 1000);
    for (uint32_t i = 0; i < 1000; i++) {
        assert_int_equal(logv[i].t, 3000);
        /* node 0's 250 packets (tags 0, 4, 8, ...), then node 1's (1, 5, ...), ... */
        assert_int_equal(logv[i].tag, (i % 250) * 4 + i / 250);
        assert_int_equal(logv[i].from, i / 250);
    }
    sim_delete(s);
}

/* Random latencies: deliveries never go back in time; ties keep send order. */
static void test_heap_order(void **state)
{
    (void)state;
    struct sim *s = mk(8, 3, 1000, 10000, &rec_proto);
    for (uint32_t i = 0; i < 10000; i++) {
        send_tag(s, i % 8, (i * 3 + 1) % 8, i);
        if (i % 1000 == 999) sim_run_until(s, sim_now(s) + 1500);
    }
    sim_run_until(s, SIM_NEVER - 1);
    assert_int_equal(nlog, 10000);
    for (size_t i = 1; i < nlog; i++) {
        assert_true(logv[i].t >= logv[i - 1].t);
    }
    /* latencies lie in the range: the first batch was sent at 0 */
    for (size_t i = 0; i < nlog; i++)
        if (logv[i].tag < 1000) assert_true(logv[i].t >= 1000 && logv[i].t <= 10000);
    sim_delete(s);
}

static void test_loss_exact(void **state)
{
    (void)state;
    struct sim *s = mk(2, 42, 1000, 1000, &rec_proto);
    sim_set_loss(s, 0.25);
    for (uint32_t i = 0; i < 10000; i++) send_tag(s, 0, 1, i);
    sim_run_until(s, SIM_NEVER - 1);
    const struct sim_stats *st = sim_stats(s);
    /* the exact count for seed 42; a fair coin would give 2500 +- 130 (3 sigma) */
    assert_int_equal(st->lost, 2490);
    assert_int_equal(st->delivered, 10000 - 2490);
    assert_int_equal(nlog, 10000 - 2490);
    sim_delete(s);
}

static void test_partition_exact(void **state)
{
    (void)state;
    struct sim *s = mk(4, 5, 2000, 2000, &rec_proto);
    sim_set_group(s, 0, 1);
    sim_set_group(s, 1, 1);
    sim_set_group(s, 2, 2);
    sim_set_group(s, 3, 2);
    send_tag(s, 0, 1, 1); /* same side */
    send_tag(s, 0, 2, 2); /* across: dropped */
    send_tag(s, 3, 2, 3); /* same side */
    send_tag(s, 1, 3, 4); /* across: dropped */
    sim_run_until(s, 10000);
    assert_int_equal(sim_stats(s)->partitioned, 2);
    assert_int_equal(nlog, 2);
    assert_int_equal(logv[0].tag, 1);
    assert_int_equal(logv[1].tag, 3);
    /* a packet in flight when the partition heals is delivered */
    send_tag(s, 0, 3, 5);
    sim_heal(s);
    send_tag(s, 2, 1, 6);
    sim_run_until(s, 20000);
    assert_int_equal(nlog, 4);
    assert_int_equal(logv[2].tag, 5);
    assert_int_equal(logv[3].tag, 6);
    /* and one in flight when a partition starts is dropped on arrival */
    send_tag(s, 0, 2, 7);
    sim_set_group(s, 2, 9);
    sim_run_until(s, 30000);
    assert_int_equal(nlog, 4);
    assert_int_equal(sim_stats(s)->partitioned, 3);
    sim_delete(s);
}

static void test_dup_slow_skew(void **state)
{
    (void)state;
    struct sim_config cfg = {.nodes = 3,
                             .seed = 9,
                             .lat_min_us = 2000,
                             .lat_max_us = 2000,
                             .dup = 1.0,
                             .proto = &rec_proto};
    struct sim *s = NULL;
    nlog = 0;
    assert_int_equal(sim_new(&cfg, &s), 0);
    send_tag(s, 0, 1, 1);
    sim_run_until(s, 5000);
    assert_int_equal(nlog, 2); /* delivered twice */
    assert_int_equal(sim_stats(s)->duplicated, 1);
    sim_delete(s);

    s = mk(3, 9, 2000, 2000, &rec_proto);
    sim_set_slow(s, 1, true);
    send_tag(s, 1, 0, 1); /* from the slow node: 10x slower */
    send_tag(s, 0, 1, 2); /* to the slow node: 10x slower */
    send_tag(s, 0, 2, 3); /* normal */
    sim_run_until(s, 100000);
    assert_int_equal(nlog, 3);
    assert_int_equal(logv[0].tag, 3);
    assert_int_equal(logv[0].t, 2000);
    /* both slow packets arrive at 20 ms: the tie goes to the lower sender id */
    assert_int_equal(logv[1].tag, 2);
    assert_int_equal(logv[1].t, 20000);
    assert_int_equal(logv[2].tag, 1);
    assert_int_equal(logv[2].t, 20000);
    sim_set_skew(s, 2, -1500);
    assert_int_equal(sim_node_ms(s, 2), SIM_EPOCH_MS + 100 - 1500);
    assert_int_equal(sim_node_ms(s, 0), SIM_EPOCH_MS + 100);
    sim_delete(s);
}

static void test_crash_restart(void **state)
{
    (void)state;
    struct sim *s = mk(3, 11, 1000, 1000, &rec_proto);
    assert_int_equal(sim_live(s), 3);
    sim_crash(s, 2);
    assert_int_equal(sim_live(s), 2);
    assert_false(sim_node_up(s, 2));
    assert_null(sim_replica(s, 2));
    send_tag(s, 0, 2, 1);
    sim_run_until(s, 5000);
    assert_int_equal(sim_stats(s)->to_down, 1);
    assert_int_equal(nlog, 0);
    uint32_t seed = 0;
    assert_int_equal(sim_restart(s, 2, &seed, 1), 0);
    assert_int_equal(sim_restart(s, 2, &seed, 1), SM_EINVAL); /* already up */
    assert_non_null(sim_replica(s, 2));
    assert_int_equal(crdt_replica_size(sim_replica(s, 2)), 0);
    send_tag(s, 0, 2, 2);
    sim_run_until(s, 10000);
    assert_int_equal(nlog, 1);
    sim_delete(s);
}

static void test_incarnation_invariant(void **state)
{
    (void)state;
    struct sim *s = mk(2, 12, 1000, 1000, &rec_proto);
    fake_inc[1] = 5;
    send_tag(s, 0, 1, 1);
    sim_run_until(s, 2000);
    assert_int_equal(sim_violations(s), 0);
    fake_inc[1] = 4; /* goes backwards: the next step on node 1 must flag it */
    send_tag(s, 0, 1, 2);
    sim_run_until(s, 4000);
    assert_int_equal(sim_violations(s), 1);
    sim_delete(s);
}

/* The flooding protocol on 5 nodes with a fixed seed: exact spread time, all equal. */
static void test_flood_exact_time(void **state)
{
    (void)state;
    struct sim *s = mk(5, 7, 0, 0, NULL);
    sim_run_until(s, 1000000);
    uint32_t u;
    const uint8_t v[] = "hello";
    assert_int_equal(sim_write(s, 3, "k", 1, v, 5, &u), 0);
    assert_int_equal(sim_track_holders(s, u), 1);
    sim_run_until(s, 2000000);
    assert_int_equal(sim_track_holders(s, u), 5);
    assert_int_equal(sim_track_done(s, u) - sim_track_start(s, u), 8593);
    assert_true(sim_replicas_identical(s));
    assert_int_equal(sim_matching_oracle(s), 5);
    /* exactly 4 sends from the writer, 3 forwards from each of the 4 others */
    assert_int_equal(sim_stats(s)->pkts[SIM_PKT_DATA], 4 + 4 * 3);
    /* a timer every second per node: 5 nodes x 2 s */
    assert_int_equal(sim_stats(s)->timers, 10);
    sim_delete(s);
}

/* A watched key moves forward only; a crash and restart resets it. */
static void test_watch_and_oracle(void **state)
{
    (void)state;
    struct sim *s = mk(6, 8, 1000, 3000, NULL);
    assert_int_equal(sim_watch_key(s, "w", 1), 0);
    for (int i = 0; i < 20; i++) {
        uint8_t v = (uint8_t)i;
        assert_int_equal(sim_write(s, (uint32_t)(i % 6), "w", 1, &v, 1, NULL), 0);
        sim_run_until(s, sim_now(s) + 500);
    }
    sim_run_until(s, sim_now(s) + 100000);
    assert_int_equal(sim_violations(s), 0);
    assert_int_equal(sim_matching_oracle(s), 6);
    sim_crash(s, 4);
    assert_int_equal(sim_matching_oracle(s), 5);
    assert_true(sim_replicas_identical(s));
    sim_delete(s);
}

/* Run a scenario; its JSON result (wall_s null). */
static char *scenario_json(const struct sim_opts *o, struct sim_result *r)
{
    char err[128];
    assert_int_equal(sim_scenario_run(o, r, err, sizeof(err)), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    sim_result_json(f, r, -1);
    fclose(f);
    return buf;
}

static char *run_json(const char *scenario, uint32_t n, uint64_t seed)
{
    struct sim_opts o;
    sim_opts_default(&o);
    o.scenario = scenario;
    o.nodes = n;
    o.seed = seed;
    o.duration_s = 5;
    o.proto = &sim_proto_flood;
    o.loss = 0.05;
    o.skew_ms = 20;
    struct sim_result r;
    return scenario_json(&o, &r);
}

static void test_determinism(void **state)
{
    (void)state;
    char *a = run_json("converge", 40, 99);
    char *b = run_json("converge", 40, 99);
    char *c = run_json("converge", 40, 100);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_non_null(strstr(a, "\"wall_s\":null"));
    free(a);
    free(b);
    free(c);
}

/* The gossip core through a scenario, on @p threads with every window split
 * among them: JSON results and the spread CSV, for comparison. */
static char *run_threads(const char *scenario, uint32_t n, uint64_t seed, unsigned threads)
{
    struct sim_opts o;
    sim_opts_default(&o);
    o.scenario = scenario;
    o.nodes = n;
    o.seed = seed;
    o.duration_s = 4;
    o.loss = 0.05;
    o.dup = 0.02;
    o.reorder = 0.02;
    o.skew_ms = 20;
    o.threads = threads;
    o.min_window = 1;
    char *cbuf = NULL;
    size_t clen = 0;
    o.csv = open_memstream(&cbuf, &clen);
    assert_non_null(o.csv);
    struct sim_result r;
    char *json = scenario_json(&o, &r);
    fclose(o.csv);
    assert_int_equal(r.violations, 0);
    assert_true(r.stats.events > 5000);
    char *all = NULL;
    assert_true(asprintf(&all, "%s%s", json, cbuf) > 0);
    free(json);
    free(cbuf);
    return all;
}

/* Windows on several threads give the serial engine's result bit for bit:
 * sends, drops, latencies, timers, member events (false positives,
 * detection), spread rows, crashes and restarts. */
static void test_threads_same_result(void **state)
{
    (void)state;
    static const char *const scen[] = {"converge", "failure", "churn", "partition"};
    for (size_t i = 0; i < sizeof(scen) / sizeof(scen[0]); i++) {
        char *one = run_threads(scen[i], 50, 11 + i, 1);
        char *two = run_threads(scen[i], 50, 11 + i, 2);
        assert_string_equal(one, two);
        if (i == 0) {
            char *three = run_threads(scen[i], 50, 11 + i, 3);
            assert_string_equal(one, three);
            free(three);
        }
        free(one);
        free(two);
    }
}

/* A latency under 1 ms would let a window's events make events inside it:
 * the engine runs such a simulation serially, with the same result. */
static void test_threads_short_latency_serial(void **state)
{
    (void)state;
    struct sim_config c = {.nodes = 30, .seed = 5, .lat_min_us = 200, .lat_max_us = 3000,
                           .threads = 2, .min_window = 1, .proto = &sim_proto_core};
    struct sim_core_opts co;
    sim_core_opts_default(&co);
    c.proto_arg = &co;
    struct sim *a, *b;
    assert_int_equal(sim_new(&c, &a), 0);
    c.threads = 1;
    assert_int_equal(sim_new(&c, &b), 0);
    uint32_t u;
    sim_run_until(a, 3000 * SIM_US);
    sim_run_until(b, 3000 * SIM_US);
    assert_int_equal(sim_write(a, 7, "k", 1, (const uint8_t *)"v", 1, &u), 0);
    assert_int_equal(sim_write(b, 7, "k", 1, (const uint8_t *)"v", 1, &u), 0);
    sim_run_until(a, 6000 * SIM_US);
    sim_run_until(b, 6000 * SIM_US);
    assert_int_equal(sim_stats(a)->events, sim_stats(b)->events);
    assert_true(sim_track_done(a, u) > 0);
    assert_int_equal(sim_track_done(a, u), sim_track_done(b, u));
    sim_delete(a);
    sim_delete(b);
}

static void test_percentile(void **state)
{
    (void)state;
    double v[100];
    for (int i = 0; i < 100; i++) v[i] = 100 - i;
    assert_true(sim_percentile(v, 100, 50) == 50);
    assert_true(sim_percentile(v, 100, 99) == 99);
    assert_true(sim_percentile(v, 100, 100) == 100);
    assert_true(sim_percentile(v, 0, 99) == -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_latency_exact), cmocka_unit_test(test_ties_by_sequence),
        cmocka_unit_test(test_heap_order),          cmocka_unit_test(test_loss_exact),
        cmocka_unit_test(test_partition_exact),     cmocka_unit_test(test_dup_slow_skew),
        cmocka_unit_test(test_crash_restart),       cmocka_unit_test(test_incarnation_invariant),
        cmocka_unit_test(test_flood_exact_time),    cmocka_unit_test(test_watch_and_oracle),
        cmocka_unit_test(test_determinism),         cmocka_unit_test(test_percentile),
        cmocka_unit_test(test_threads_same_result), cmocka_unit_test(test_threads_short_latency_serial),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
