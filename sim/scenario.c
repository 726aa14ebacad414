/* scenario.c: the statemesh-sim scenarios: converge, failure, partition, churn. */
#include "config.h"

#include "sim/scenario.h"
#include "sim/core.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * Every scenario starts all nodes at virtual time 0 (each joins through a few
 * earlier nodes), lets membership settle for a warm-up period, and measures
 * from then on: traffic counters are taken as differences over the measured
 * window, so msgs_per_node_per_update and bytes_per_node_per_s describe the
 * steady state, not the one-off join storm.
 */

#define STEP_US (100 * SIM_US) /* scenario loop granularity (progress, churn ticks) */

/* A run with o->keep leaves its simulation here for the process exit. */
static struct sim *volatile kept; /* volatile: a store the compiler may not drop, so leak
                                    checkers see the simulation as reachable */

struct run {
    const struct sim_opts *o;
    struct sim *s;
    struct sim_result *res;
    /* failure detection */
    uint32_t victim;
    int64_t killed_at;
    uint8_t *declared; /* per observer: declared the victim dead */
    uint8_t *knew;     /* per observer: had the victim as a live member at the kill */
    double *det_ms;
    uint32_t ndet;
    int64_t fp;
    uint32_t slow;
    /* spread CSV: rows buffered, written grouped by update at the end */
    uint32_t *csv_pct; /* per update: last recorded percentage */
    uint32_t csv_cap;
    struct csv_row *rows;
    size_t nrows, rcap;
};

struct csv_row {
    uint32_t update;
    float frac;
    double t_ms;
};

void sim_opts_default(struct sim_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->scenario = "converge";
    o->nodes = 100;
    o->seed = 1;
    o->lat_min_us = 1 * SIM_US;
    o->lat_max_us = 10 * SIM_US;
    o->duration_s = -1;
    o->updates = -1;
    o->warmup_ms = -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double sim_percentile(double *v, size_t n, double p)
{
    if (n == 0) return -1;
    qsort(v, n, sizeof(*v), cmp_double);
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

static void on_member(void *arg, struct sim *s, uint32_t observer, uint32_t subject,
                      enum sim_member_ev ev)
{
    struct run *r = arg;
    if (ev != SIM_MEV_DEAD) return;
    if (subject == r->victim && r->killed_at >= 0) {
        if (!r->declared[observer] && sim_node_up(s, observer)) {
            r->declared[observer] = 1;
            r->det_ms[r->ndet++] = (double)(sim_now(s) - r->killed_at) / SIM_US;
        }
        return;
    }
    if (sim_node_up(s, subject) && sim_node_up(s, observer)) {
        r->fp++;
        if (getenv("SIM_DEBUG"))
            fprintf(stderr, "false positive at %.3f s: n%" PRIu32 " declared n%" PRIu32 " dead%s\n",
                    (double)sim_now(s) / SIM_US / 1000.0, observer, subject,
                    subject == r->slow ? " (the slow node)" : "");
    }
}

static void on_spread(void *arg, struct sim *s, uint32_t update, uint32_t holders, uint32_t live)
{
    struct run *r = arg;
    if (!r->o->csv) return;
    if (update >= r->csv_cap) {
        uint32_t nc = r->csv_cap ? r->csv_cap * 2 : 256;
        while (nc <= update) nc *= 2;
        uint32_t *p = realloc(r->csv_pct, nc * sizeof(*p));
        if (!p) return;
        for (uint32_t i = r->csv_cap; i < nc; i++) p[i] = UINT32_MAX;
        r->csv_pct = p;
        r->csv_cap = nc;
    }
    /* one row per whole percent reached keeps 10,000-node runs to ~100 rows an update */
    uint32_t pct = live ? (uint32_t)((uint64_t)holders * 100 / live) : 0;
    if (r->csv_pct[update] != UINT32_MAX && pct == r->csv_pct[update]) return;
    r->csv_pct[update] = pct;
    if (r->nrows == r->rcap) {
        size_t nc = r->rcap ? r->rcap * 2 : 4096;
        struct csv_row *p = realloc(r->rows, nc * sizeof(*p));
        if (!p) return;
        r->rows = p;
        r->rcap = nc;
    }
    r->rows[r->nrows++] =
        (struct csv_row){update, live ? (float)holders / (float)live : 0.0f,
                         (double)(sim_now(s) - sim_track_start(s, update)) / SIM_US};
}

/* Rows come in time order; write them grouped by update (a stable counting sort). */
static void csv_write(struct run *r)
{
    if (!r->o->csv || !r->nrows) return;
    uint32_t nu = 0;
    for (size_t i = 0; i < r->nrows; i++)
        if (r->rows[i].update + 1 > nu) nu = r->rows[i].update + 1;
    size_t *start = calloc((size_t)nu + 1, sizeof(*start));
    size_t *order = malloc(r->nrows * sizeof(*order));
    if (start && order) {
        for (size_t i = 0; i < r->nrows; i++) start[r->rows[i].update + 1]++;
        for (uint32_t u = 0; u < nu; u++) start[u + 1] += start[u];
        for (size_t i = 0; i < r->nrows; i++) order[start[r->rows[i].update]++] = i;
        for (size_t i = 0; i < r->nrows; i++) {
            const struct csv_row *w = &r->rows[order[i]];
            fprintf(r->o->csv, "%" PRIu32 ",%.3f,%.6f\n", w->update, w->t_ms, (double)w->frac);
        }
    }
    free(start);
    free(order);
}

static void progress(struct run *r, double end_s)
{
    if (!r->o->progress) return;
    r->o->progress(r->o->progress_arg, r->o->scenario, (double)sim_now(r->s) / 1e6, end_s,
                   sim_stats(r->s)->events, sim_live(r->s));
}

/* Run to @p t_us in STEP_US slices (progress callback between slices). */
static void run_to(struct run *r, int64_t t_us, double end_s)
{
    while (sim_now(r->s) < t_us) {
        int64_t next = (sim_now(r->s) / STEP_US + 1) * STEP_US;
        if (next > t_us) next = t_us;
        sim_run_until(r->s, next);
        if (next % STEP_US == 0) progress(r, end_s);
    }
}

static uint32_t random_live(struct sim *s)
{
    uint32_t n = sim_nodes(s);
    for (;;) {
        uint32_t i = sim_rand_below(s, n);
        if (sim_node_up(s, i)) return i;
    }
}

static int write_random(struct run *r, uint32_t node, const char *key, uint32_t *update)
{
    uint8_t val[32];
    for (size_t i = 0; i < sizeof(val); i += 8) {
        uint64_t x = sim_rand(r->s);
        memcpy(val + i, &x, 8);
    }
    return sim_write(r->s, node, key, strlen(key), val, sizeof(val), update);
}

/* Traffic over the measured window: a snapshot of the counters at its start. */
static void traffic(struct run *r, const struct sim_stats *t0, int64_t t0_us, uint64_t updates)
{
    const struct sim_stats *t1 = sim_stats(r->s);
    uint64_t data = 0, bytes = 0;
    for (int c = 0; c < SIM_PKT_CLASSES; c++) {
        if (c != SIM_PKT_FD) data += t1->pkts[c] - t0->pkts[c];
        bytes += t1->bytes[c] - t0->bytes[c];
    }
    double live = sim_live(r->s) ? sim_live(r->s) : 1;
    double secs = (double)(sim_now(r->s) - t0_us) / 1e6;
    r->res->msgs_per_node_per_update = updates ? (double)data / live / (double)updates : -1;
    r->res->bytes_per_node_per_s = secs > 0 ? (double)bytes / live / secs : -1;
}

/* Convergence percentiles over the tracked updates. */
static void conv_stats(struct run *r)
{
    uint32_t n = sim_tracked(r->s), done = 0;
    double *v = malloc((n ? n : 1) * sizeof(*v));
    if (!v) return;
    for (uint32_t i = 0; i < n; i++) {
        int64_t d = sim_track_done(r->s, i);
        if (d >= 0) v[done++] = (double)(d - sim_track_start(r->s, i)) / SIM_US;
    }
    r->res->converged = done == n;
    if (done < n && getenv("SIM_DEBUG")) {
        /* diagnostics: who misses the first incomplete update */
        for (uint32_t i = 0; i < n; i++) {
            if (sim_track_done(r->s, i) >= 0) continue;
            fprintf(stderr, "update %" PRIu32 " (%" PRIu32 " holders) missing on:", i,
                    sim_track_holders(r->s, i));
            for (uint32_t j = 0; j < sim_nodes(r->s); j++)
                if (sim_node_up(r->s, j) && !sim_track_held(r->s, i, j))
                    fprintf(stderr, " n%" PRIu32, j);
            fputc('\n', stderr);
            break;
        }
    }
    if (done) {
        r->res->has_conv = true;
        r->res->conv_max = sim_percentile(v, done, 100);
        r->res->conv_p50 = sim_percentile(v, done, 50);
        r->res->conv_p99 = sim_percentile(v, done, 99);
    }
    free(v);
}

static bool all_done(struct sim *s)
{
    for (uint32_t i = 0; i < sim_tracked(s); i++)
        if (sim_track_done(s, i) < 0) return false;
    return true;
}

/* Run after @p t_us until every tracked update completed or @p limit_us. */
static void settle(struct run *r, int64_t limit_us, double end_s)
{
    while (sim_now(r->s) < limit_us && !all_done(r->s))
        run_to(r, sim_now(r->s) + 10 * SIM_US, end_s);
}

static int converge(struct run *r, int64_t warm)
{
    const struct sim_opts *o = r->o;
    double dur = o->duration_s >= 0 ? o->duration_s : 60;
    int64_t k = o->updates >= 0 ? o->updates : (int64_t)(dur * 10);
    int64_t start = warm, span = (int64_t)(dur * 1e6);
    double end_s = (double)(start + span) / 1e6;
    run_to(r, start, end_s);
    struct sim_stats t0 = *sim_stats(r->s);
    char key[48];
    for (int64_t i = 0; i < k; i++) {
        run_to(r, start + span * i / (k ? k : 1), end_s);
        snprintf(key, sizeof(key), "conv/%" PRId64, i);
        uint32_t u;
        int rc = write_random(r, random_live(r->s), key, &u);
        if (rc < 0) return rc;
    }
    run_to(r, start + span, end_s);
    settle(r, start + span + 30 * 1000 * SIM_US, end_s);
    traffic(r, &t0, start, (uint64_t)k);
    conv_stats(r);
    r->res->updates = (uint64_t)k;
    r->res->replicas_identical = sim_replicas_identical(r->s);
    return 0;
}

static int failure(struct run *r, int64_t warm)
{
    const struct sim_opts *o = r->o;
    double dur = o->duration_s >= 0 ? o->duration_s : 60;
    int64_t k = o->updates >= 0 ? o->updates : (int64_t)dur; /* one write a second */
    int64_t start = warm, span = (int64_t)(dur * 1e6);
    double end_s = (double)(start + span) / 1e6 + 30;
    uint32_t n = sim_nodes(r->s);
    if (n < 3) return SM_EINVAL;
    r->declared = calloc(n, 1);
    r->knew = calloc(n, 1);
    r->det_ms = calloc(n, sizeof(double));
    if (!r->declared || !r->knew || !r->det_ms) return SM_ENOMEM;
    run_to(r, start, end_s);
    struct sim_stats t0 = *sim_stats(r->s);
    r->slow = sim_rand_below(r->s, n);
    sim_set_slow(r->s, r->slow, true);
    char key[48];
    for (int64_t i = 0; i < k; i++) {
        run_to(r, start + span * i / (k ? k : 1), end_s);
        snprintf(key, sizeof(key), "fail/%" PRId64, i);
        uint32_t u;
        int rc = write_random(r, random_live(r->s), key, &u);
        if (rc < 0) return rc;
    }
    run_to(r, start + span, end_s);
    do r->victim = sim_rand_below(r->s, n);
    while (r->victim == r->slow);
    r->killed_at = sim_now(r->s);
    /* the observers that must declare it: every live node that counts it as a live member
     * (a node with a partial view that never heard of it cannot declare it dead) */
    uint32_t knew = 0;
    for (uint32_t i = 0; i < n; i++)
        if (i != r->victim && sim_knows(r->s, i, r->victim)) r->knew[i] = 1, knew++;
    r->res->knew_victim = knew;
    sim_crash(r->s, r->victim);
    /* wait until every one of them declared it dead, at most 60 s */
    int64_t limit = r->killed_at + 60 * 1000 * SIM_US;
    uint32_t need = knew;
    while (sim_now(r->s) < limit) {
        need = 0;
        for (uint32_t i = 0; i < n; i++)
            if (r->knew[i] && sim_node_up(r->s, i) && !r->declared[i]) need++;
        if (!need) break;
        run_to(r, sim_now(r->s) + 10 * SIM_US, end_s);
    }
    traffic(r, &t0, start, (uint64_t)k);
    settle(r, sim_now(r->s) + 10 * 1000 * SIM_US, end_s);
    conv_stats(r);
    r->res->updates = (uint64_t)k;
    r->res->false_positives = r->fp;
    r->res->detected_by = r->ndet;
    r->res->converged = r->res->converged && need == 0 && knew > 0;
    if (need == 0 && knew > 0) {
        r->res->detection_p99 = sim_percentile(r->det_ms, r->ndet, 99);
        r->res->detection_max = sim_percentile(r->det_ms, r->ndet, 100);
    }
    r->res->replicas_identical = sim_replicas_identical(r->s);
    return 0;
}

#define PART_SHARED 32 /* keys written on both sides */

static int partition(struct run *r, int64_t warm)
{
    const struct sim_opts *o = r->o;
    double dur = o->duration_s >= 0 ? o->duration_s : 60;
    int64_t k = o->updates >= 0 ? o->updates : (int64_t)(dur * 4);
    int64_t start = warm, span = (int64_t)(dur * 1e6);
    double end_s = (double)(start + span) / 1e6 + 10;
    uint32_t n = sim_nodes(r->s);
    if (n < 2) return SM_EINVAL;
    char key[48];
    for (int i = 0; i < PART_SHARED; i++) {
        snprintf(key, sizeof(key), "part/shared/%d", i);
        int rc = sim_watch_key(r->s, key, strlen(key));
        if (rc < 0) return rc;
    }
    run_to(r, start, end_s);
    struct sim_stats t0 = *sim_stats(r->s);
    /* a random half goes to group 1, the rest to group 2 */
    uint32_t *perm = malloc(n * sizeof(*perm));
    if (!perm) return SM_ENOMEM;
    for (uint32_t i = 0; i < n; i++) perm[i] = i;
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = sim_rand_below(r->s, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    for (uint32_t i = 0; i < n; i++) sim_set_group(r->s, perm[i], i < n / 2 ? 1 : 2);
    for (int64_t i = 0; i < k; i++) {
        run_to(r, start + span * i / (k ? k : 1), end_s);
        /* alternate sides; half the writes go to the shared keys */
        uint32_t side = (uint32_t)(i & 1);
        uint32_t lo = side ? n / 2 : 0, hi = side ? n : n / 2;
        uint32_t node = perm[lo + sim_rand_below(r->s, hi - lo)];
        if (sim_rand_below(r->s, 2))
            snprintf(key, sizeof(key), "part/shared/%" PRIu32, sim_rand_below(r->s, PART_SHARED));
        else
            snprintf(key, sizeof(key), "part/own/%" PRId64, i);
        int rc = write_random(r, node, key, NULL);
        if (rc < 0) {
            free(perm);
            return rc;
        }
    }
    free(perm);
    run_to(r, start + span, end_s);
    int64_t healed = sim_now(r->s);
    sim_heal(r->s);
    int64_t limit = healed + 60 * 1000 * SIM_US;
    /* step event by event so heal_ms is exact */
    uint64_t steps = 0;
    while (sim_matching_oracle(r->s) < sim_live(r->s) && sim_next_event(r->s) <= limit) {
        sim_step(r->s);
        if (++steps % 100000 == 0) progress(r, end_s);
    }
    if (sim_matching_oracle(r->s) == sim_live(r->s))
        r->res->heal_ms = (double)(sim_now(r->s) - healed) / SIM_US;
    traffic(r, &t0, start, (uint64_t)k);
    r->res->updates = (uint64_t)k;
    r->res->replicas_identical = sim_replicas_identical(r->s);
    r->res->converged = r->res->heal_ms >= 0;
    /* every conflicting key must hold the write the merge order picks (the oracle's) */
    int ok = 1;
    const struct crdt_replica *orc = sim_oracle(r->s);
    for (int i = 0; i < PART_SHARED && ok; i++) {
        snprintf(key, sizeof(key), "part/shared/%d", i);
        const struct crdt_rec *want = crdt_replica_find(orc, key, strlen(key));
        struct crdt_rec_view wv, hv;
        if (want) crdt_rec_view(orc, want, &wv);
        for (uint32_t j = 0; j < n && ok; j++) {
            const struct crdt_replica *rep = sim_replica(r->s, j);
            if (!rep) continue;
            const struct crdt_rec *have = crdt_replica_find(rep, key, strlen(key));
            if (!want || !have) {
                ok = !want && !have;
                continue;
            }
            crdt_rec_view(rep, have, &hv);
            ok = crdt_order_cmp(&wv, &hv) == 0 && wv.value_len == hv.value_len &&
                 (wv.value_len == 0 || memcmp(wv.value, hv.value, wv.value_len) == 0);
        }
    }
    r->res->conflicts_resolved = ok;
    return 0;
}

#define CHURN_KEYS SIM_MAX_WATCH /* every churn key is watched by the invariant checker */

static int churn(struct run *r, int64_t warm)
{
    const struct sim_opts *o = r->o;
    double dur = o->duration_s >= 0 ? o->duration_s : 120;
    int64_t k = o->updates >= 0 ? o->updates : (int64_t)(dur * 5);
    int64_t start = warm, span = (int64_t)(dur * 1e6), quiet = 30 * 1000 * SIM_US;
    double end_s = (double)(start + span + quiet) / 1e6;
    uint32_t n = sim_nodes(r->s);
    if (n < 3) return SM_EINVAL;
    char key[48];
    for (int i = 0; i < CHURN_KEYS; i++) {
        snprintf(key, sizeof(key), "churn/%d", i);
        int rc = sim_watch_key(r->s, key, strlen(key));
        if (rc < 0) return rc;
    }
    run_to(r, start, end_s);
    struct sim_stats t0 = *sim_stats(r->s);
    int64_t next_write = 0, next_churn = 1;
    int64_t secs = (int64_t)dur;
    uint32_t *down = malloc(n * sizeof(*down));
    if (!down) return SM_ENOMEM;
    uint32_t ndown = 0;
    for (;;) {
        int64_t tw = next_write < k ? start + span * next_write / (k ? k : 1) : INT64_MAX;
        int64_t tc = next_churn <= secs ? start + next_churn * 1000 * SIM_US : INT64_MAX;
        if (tw == INT64_MAX && tc == INT64_MAX) break;
        if (tw <= tc) {
            run_to(r, tw, end_s);
            snprintf(key, sizeof(key), "churn/%" PRIu32, sim_rand_below(r->s, CHURN_KEYS));
            int rc = write_random(r, random_live(r->s), key, NULL);
            if (rc < 0) goto err;
            next_write++;
        } else {
            run_to(r, tc, end_s);
            /* crash a live node or restart a crashed one; keep at least 3 alive */
            bool restart = ndown > 0 && (sim_rand_below(r->s, 2) || sim_live(r->s) <= 3);
            if (restart) {
                uint32_t j = sim_rand_below(r->s, ndown);
                uint32_t id = down[j];
                down[j] = down[--ndown];
                uint32_t seeds[3];
                for (int q = 0; q < 3; q++) seeds[q] = random_live(r->s);
                int rc = sim_restart(r->s, id, seeds, 3);
                if (rc < 0) goto err;
            } else {
                uint32_t id = random_live(r->s);
                sim_crash(r->s, id);
                down[ndown++] = id;
            }
            next_churn++;
        }
    }
    free(down);
    run_to(r, start + span + quiet, end_s);
    traffic(r, &t0, start, (uint64_t)k);
    r->res->updates = (uint64_t)k;
    r->res->replicas_identical = sim_replicas_identical(r->s);
    r->res->converged = r->res->replicas_identical == 1;
    return 0;
err:
    free(down);
    return SM_ENOMEM;
}

int sim_scenario_run(const struct sim_opts *o, struct sim_result *res, char *err, size_t errlen)
{
    int (*fn)(struct run *, int64_t) = NULL;
    if (!strcmp(o->scenario, "converge"))
        fn = converge;
    else if (!strcmp(o->scenario, "failure"))
        fn = failure;
    else if (!strcmp(o->scenario, "partition"))
        fn = partition;
    else if (!strcmp(o->scenario, "churn"))
        fn = churn;
    if (!fn) {
        snprintf(err, errlen, "unknown scenario '%s' (converge, failure, partition, churn)",
                 o->scenario);
        return SM_EINVAL;
    }
    memset(res, 0, sizeof(*res));
    res->scenario = o->scenario;
    res->nodes = o->nodes;
    res->seed = o->seed;
    res->msgs_per_node_per_update = -1;
    res->bytes_per_node_per_s = -1;
    res->false_positives = -1;
    res->detection_p99 = res->detection_max = -1;
    res->heal_ms = -1;
    res->detected_by = -1;
    res->knew_victim = -1;
    res->replicas_identical = -1;
    res->conflicts_resolved = -1;

    struct sim_core_opts copts;
    sim_core_opts_default(&copts);
    copts.crypto = o->crypto;
    struct sim_config cfg = {
        .nodes = o->nodes,
        .seed = o->seed,
        .lat_min_us = o->lat_min_us,
        .lat_max_us = o->lat_max_us,
        .loss = o->loss,
        .dup = o->dup,
        .reorder = o->reorder,
        .skew_max_ms = o->skew_ms,
        .proto = o->proto ? o->proto : &sim_proto_core,
        .proto_arg = o->proto ? o->proto_arg : &copts,
        .threads = o->threads,
        .min_window = o->min_window,
    };
    if (o->crypto && o->proto) {
        snprintf(err, errlen, "--crypto on needs the gossip core protocol");
        return SM_EINVAL;
    }
    int64_t warm = o->warmup_ms >= 0 ? o->warmup_ms * SIM_US
                   : o->proto        ? 0
                                     : sim_core_warmup_ms(o->nodes) * SIM_US;
    struct run r = {.o = o, .res = res, .victim = UINT32_MAX, .killed_at = -1};
    int rc = sim_new(&cfg, &r.s);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create the simulation: %s", sm_strerror(rc));
        return rc;
    }
    struct sim_hooks h = {
        .arg = &r, .member = on_member, .member_mask = 1u << SIM_MEV_DEAD, .spread = on_spread};
    sim_set_hooks(r.s, &h);
    rc = fn(&r, warm);
    if (rc < 0) snprintf(err, errlen, "scenario %s failed: %s", o->scenario, sm_strerror(rc));
    res->events = sim_stats(r.s)->events;
    res->live = sim_live(r.s);
    res->violations = sim_violations(r.s);
    res->virtual_s = (double)sim_now(r.s) / 1e6;
    res->stats = *sim_stats(r.s);
    if (res->violations) res->converged = false;
    csv_write(&r);
    if (o->keep)
        kept = r.s;
    else
        sim_delete(r.s);
    free(r.rows);
    free(r.declared);
    free(r.knew);
    free(r.det_ms);
    free(r.csv_pct);
    return rc;
}

static void num(FILE *f, const char *name, double v, bool null)
{
    if (null)
        fprintf(f, ",\"%s\":null", name);
    else if (v == floor(v) && fabs(v) < 1e15)
        fprintf(f, ",\"%s\":%.0f", name, v);
    else
        fprintf(f, ",\"%s\":%.6g", name, v);
}

static void tri(FILE *f, const char *name, int v)
{
    fprintf(f, ",\"%s\":%s", name, v < 0 ? "null" : v ? "true" : "false");
}

void sim_result_json(FILE *f, const struct sim_result *r, double wall_s)
{
    fprintf(f, "{\"scenario\":\"%s\",\"nodes\":%" PRIu32 ",\"seed\":%" PRIu64, r->scenario,
            r->nodes, r->seed);
    fprintf(f, ",\"converged\":%s", r->converged ? "true" : "false");
    num(f, "convergence_ms_p50", r->conv_p50, !r->has_conv);
    num(f, "convergence_ms_p99", r->conv_p99, !r->has_conv);
    num(f, "convergence_ms_max", r->conv_max, !r->has_conv);
    num(f, "msgs_per_node_per_update", r->msgs_per_node_per_update,
        r->msgs_per_node_per_update < 0);
    num(f, "bytes_per_node_per_s", r->bytes_per_node_per_s, r->bytes_per_node_per_s < 0);
    num(f, "false_positives", (double)r->false_positives, r->false_positives < 0);
    num(f, "detection_ms_p99", r->detection_p99, r->detection_p99 < 0);
    num(f, "detection_ms_max", r->detection_max, r->detection_max < 0);
    num(f, "detected_by", (double)r->detected_by, r->detected_by < 0);
    num(f, "knew_victim", (double)r->knew_victim, r->knew_victim < 0);
    num(f, "heal_ms", r->heal_ms, r->heal_ms < 0);
    tri(f, "replicas_identical", r->replicas_identical);
    tri(f, "conflicts_resolved", r->conflicts_resolved);
    fprintf(f, ",\"events\":%" PRIu64 ",\"updates\":%" PRIu64 ",\"live\":%" PRIu32, r->events,
            r->updates, r->live);
    fprintf(f, ",\"invariant_violations\":%" PRIu64, r->violations);
    num(f, "virtual_s", r->virtual_s, false);
    const struct sim_stats *st = &r->stats;
    fprintf(f,
            ",\"packets\":{\"fd\":%" PRIu64 ",\"data\":%" PRIu64 ",\"ae\":%" PRIu64
            ",\"member\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"partitioned\":%" PRIu64
            ",\"to_down\":%" PRIu64 ",\"duplicated\":%" PRIu64 "}",
            st->pkts[SIM_PKT_FD], st->pkts[SIM_PKT_DATA], st->pkts[SIM_PKT_AE],
            st->pkts[SIM_PKT_MEMBER], st->lost, st->partitioned, st->to_down, st->duplicated);
    num(f, "wall_s", wall_s, wall_s < 0);
    fputs("}\n", f);
}
