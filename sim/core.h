/* core.h: the gossip core (gossip/node.h) plugged into the simulator as a struct sim_proto. */
#ifndef SIM_CORE_H
#define SIM_CORE_H

#include "sim/sim.h"

#include <stdbool.h>
#include <stdint.h>

/** Options of the core adapter (sim_config.proto_arg); zero fields: the core's defaults. */
struct sim_core_opts {
    bool crypto; /**< sign every packet and record (in-process CA, one cert a node) */
    uint32_t gossip_interval_ms;
    uint32_t probe_interval_ms;
    uint32_t ae_interval_ms;
    uint32_t suspicion_mult;
    uint32_t active_view;
};

/** Zero everything (the core's defaults, crypto off). */
void sim_core_opts_default(struct sim_core_opts *o);

/** Warm-up before a scenario measures: time for the membership of @p nodes to settle. */
int64_t sim_core_warmup_ms(uint32_t nodes);

/** The real gossip core, unmodified, behind the engine's protocol interface. */
extern const struct sim_proto sim_proto_core;

#endif
