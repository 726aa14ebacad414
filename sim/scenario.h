/* scenario.h: the statemesh-sim scenarios (converge, failure, partition, churn) and their results.
 */
#ifndef SIM_SCENARIO_H
#define SIM_SCENARIO_H

#include "sim/sim.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/** Scenario parameters (the statemesh-sim command line). */
struct sim_opts {
    const char *scenario; /**< converge | failure | partition | churn */
    uint32_t nodes;
    uint64_t seed;
    double loss;        /**< 0..1 */
    int64_t lat_min_us; /**< default 1 ms */
    int64_t lat_max_us; /**< default 10 ms */
    double duration_s;  /**< <0: the scenario's default */
    int64_t updates;    /**< <0: the scenario's default */
    bool crypto;
    double dup;                    /**< duplication probability */
    double reorder;                /**< reordering probability */
    int64_t skew_ms;               /**< per-node clock skew range +-skew_ms */
    int64_t warmup_ms;             /**< <0: the protocol's default (membership settles first) */
    const struct sim_proto *proto; /**< NULL: the gossip core */
    void *proto_arg;
    unsigned threads;              /**< engine threads (sim_config.threads; 0: one) */
    unsigned min_window;           /**< sim_config.min_window (0: the default) */
    bool keep; /**< leave the simulation allocated (a process about to exit skips the
                    teardown, seconds at 10,000 nodes; it stays reachable, not leaked) */
    FILE *csv; /**< spread rows "update,t_ms,fraction" when non-NULL */
    /** Progress callback every 100 ms of virtual time (may be NULL). */
    void (*progress)(void *arg, const char *scenario, double t_s, double end_s, uint64_t events,
                     uint32_t live);
    void *progress_arg;
};

/** Fill @p o with the defaults (converge, 1–10 ms, no loss, scenario defaults). */
void sim_opts_default(struct sim_opts *o);

/** Scenario results; a field whose has_* is false prints as JSON null. */
struct sim_result {
    const char *scenario;
    uint32_t nodes;
    uint64_t seed;
    bool converged;
    bool has_conv;
    double conv_p50, conv_p99, conv_max; /**< ms */
    double msgs_per_node_per_update;     /**< -1 = null */
    double bytes_per_node_per_s;
    int64_t false_positives;             /**< -1 = null */
    double detection_p99, detection_max; /**< ms, -1 = null */
    int64_t detected_by;                 /**< failure: live nodes that declared the victim dead
                                              (-1 = null) */
    int64_t knew_victim;                 /**< failure: live nodes that had the victim as a live
                                              member when it died: they must all declare it */
    double heal_ms;                      /**< -1 = null */
    int replicas_identical;              /**< -1 = null, 0, 1 */
    int conflicts_resolved;              /**< partition: every conflicting key holds the
                                              merge-order winner (-1 = null) */
    uint64_t events;
    uint64_t updates;
    uint32_t live;
    uint64_t violations;
    double virtual_s;
    struct sim_stats stats;
};

/**
 * Run one scenario. Returns 0 (the result says whether targets were met),
 * SM_EINVAL for a bad scenario/option (message in @p err), SM_ENOMEM.
 */
int sim_scenario_run(const struct sim_opts *o, struct sim_result *res, char *err, size_t errlen);

/** Print the result as one JSON object (wall_s < 0 prints null). */
void sim_result_json(FILE *f, const struct sim_result *r, double wall_s);

/** Percentile (nearest rank) of @p n values, sorted in place; -1 when n == 0. */
double sim_percentile(double *v, size_t n, double p);

#endif
