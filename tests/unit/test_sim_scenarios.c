/* test_sim_scenarios.c: every statemesh-sim scenario in a quick size, on the real gossip core. */
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

static void run(const char *scenario, uint32_t n, uint64_t seed, double dur, double loss,
                struct sim_result *r)
{
    struct sim_opts o;
    sim_opts_default(&o);
    o.scenario = scenario;
    o.nodes = n;
    o.seed = seed;
    o.duration_s = dur;
    o.loss = loss;
    char err[160] = "";
    int rc = sim_scenario_run(&o, r, err, sizeof(err));
    if (rc != 0) fprintf(stderr, "# %s (seed %llu): %s\n", scenario, (unsigned long long)seed, err);
    assert_int_equal(rc, 0);
    assert_int_equal(r->violations, 0);
}

/* Five nodes, fixed seed: one write is on every node at an exact virtual time. */
static void test_five_nodes_exact(void **state)
{
    (void)state;
    struct sim_core_opts co;
    sim_core_opts_default(&co);
    struct sim_config cfg = {.nodes = 5, .seed = 2024, .proto = &sim_proto_core, .proto_arg = &co};
    struct sim *s = NULL;
    assert_int_equal(sim_new(&cfg, &s), 0);
    sim_run_until(s, 5000 * SIM_US); /* membership settles */
    uint32_t u;
    const uint8_t v[] = "up";
    assert_int_equal(sim_write(s, 2, "backend:health:a", 16, v, 2, &u), 0);
    assert_int_equal(sim_track_holders(s, u), 1);
    sim_run_until(s, 10000 * SIM_US);
    assert_int_equal(sim_track_holders(s, u), 5);
    /* exact: the spread with this seed's link latencies and the core's current protocol;
     * a change of the protocol's message flow or PRNG use changes it (update it then) */
    assert_int_equal(sim_track_done(s, u) - sim_track_start(s, u), 7369);
    assert_true(sim_replicas_identical(s));
    assert_int_equal(sim_matching_oracle(s), 5);
    assert_int_equal(sim_violations(s), 0);
    sim_delete(s);
}

static void test_converge(void **state)
{
    (void)state;
    struct sim_result r;
    run("converge", 50, 1, 10, 0, &r);
    assert_true(r.converged);
    assert_true(r.has_conv);
    assert_int_equal(r.updates, 100);
    assert_true(r.conv_p99 <= 150);
    assert_true(r.conv_p50 <= r.conv_p99 && r.conv_p99 <= r.conv_max);
    assert_true(r.msgs_per_node_per_update > 0 && r.msgs_per_node_per_update <= 4);
    assert_true(r.bytes_per_node_per_s > 0);
    assert_int_equal(r.replicas_identical, 1);
    assert_int_equal(r.false_positives, -1); /* null: not this scenario's */
    assert_true(r.heal_ms < 0);
}

static void test_converge_loss(void **state)
{
    (void)state;
    struct sim_result r;
    run("converge", 50, 2, 10, 0.1, &r);
    /* every update reaches every node despite 10% loss (the p99 <= 1000 ms target is the
     * N=1000 check's; anti-entropy repairs what the broadcast tree loses) */
    assert_true(r.converged);
    assert_int_equal(r.replicas_identical, 1);
    assert_true(r.stats.lost > 0);
}

static void test_failure(void **state)
{
    (void)state;
    struct sim_result r;
    run("failure", 50, 3, 20, 0, &r);
    assert_true(r.converged);
    assert_int_equal(r.false_positives, 0);
    assert_true(r.detection_p99 > 0 && r.detection_p99 <= 10000);
    assert_int_equal(r.live, 49);
}

static void test_failure_loss(void **state)
{
    (void)state;
    struct sim_result r;
    run("failure", 50, 4, 30, 0.05, &r);
    assert_int_equal(r.false_positives, 0);
    assert_true(r.detection_p99 > 0 && r.detection_p99 <= 10000);
}

static void test_partition(void **state)
{
    (void)state;
    struct sim_result r;
    run("partition", 50, 5, 10, 0, &r);
    assert_true(r.converged);
    assert_int_equal(r.replicas_identical, 1);
    assert_int_equal(r.conflicts_resolved, 1);
    assert_true(r.heal_ms >= 0 && r.heal_ms <= 10000);
    assert_true(r.stats.partitioned > 0);
}

static void test_churn(void **state)
{
    (void)state;
    struct sim_result r;
    run("churn", 50, 6, 20, 0, &r);
    assert_true(r.converged);
    assert_int_equal(r.replicas_identical, 1);
    assert_true(r.stats.to_down > 0);
    assert_true(r.live < 50 || r.live == 50);
}

static char *json(const char *scenario, uint64_t seed, bool crypto)
{
    struct sim_opts o;
    sim_opts_default(&o);
    o.scenario = scenario;
    o.nodes = crypto ? 12 : 40;
    o.seed = seed;
    o.duration_s = 5;
    o.loss = 0.02;
    o.skew_ms = 50;
    o.crypto = crypto;
    struct sim_result r;
    char err[160];
    assert_int_equal(sim_scenario_run(&o, &r, err, sizeof(err)), 0);
    assert_true(r.converged);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    sim_result_json(f, &r, -1);
    fclose(f);
    return buf;
}

static void test_determinism(void **state)
{
    (void)state;
    char *a = json("converge", 7, false);
    char *b = json("converge", 7, false);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

/* Not yet in the list: needs the core's certificate exchange (uncommitted at the time). */
__attribute__((unused)) static void test_crypto(void **state)
{
    (void)state;
    char *a = json("converge", 8, true);
    char *b = json("converge", 8, true);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_five_nodes_exact),
        cmocka_unit_test(test_converge),
        cmocka_unit_test(test_converge_loss),
        cmocka_unit_test(test_failure),
        cmocka_unit_test(test_failure_loss),
        cmocka_unit_test(test_partition),
        cmocka_unit_test(test_churn),
        cmocka_unit_test(test_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
