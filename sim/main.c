/* main.c: statemesh-sim, the command-line front of the discrete-event simulator. */
#include "config.h"

#include "sim/scenario.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "Usage: statemesh-sim --scenario S --nodes N --seed X [OPTIONS]\n"
    "\n"
    "Run N statemesh gossip nodes (the unmodified protocol core) in one process on a\n"
    "virtual clock over a modelled network, and report how the mesh behaved. The same\n"
    "seed gives the same result, bit for bit (wall_s aside).\n"
    "\n"
    "Scenarios (-s, --scenario):\n"
    "  converge   K updates written at random nodes, spread evenly over the duration\n"
    "             (default 60 s, K = 10 per second); each is timed until every live\n"
    "             node holds it: convergence_ms_p50/p99/max, msgs_per_node_per_update.\n"
    "  failure    duration (default 60 s) of normal running with one random node slowed\n"
    "             10x (counts false_positives: live nodes declared dead), then another\n"
    "             node is killed: detection_ms_p99 over the live nodes declaring it dead.\n"
    "  partition  the nodes split into two random halves for the duration (default 60 s)\n"
    "             with writes on both sides (half to 32 shared keys), then healed:\n"
    "             heal_ms until every replica equals the union of all writes,\n"
    "             replicas_identical, conflicts_resolved (merge-order winner everywhere).\n"
    "  churn      every second for the duration (default 120 s) a random node crashes or\n"
    "             a crashed one restarts empty and rejoins, while writes go on (5/s); then\n"
    "             30 s of quiet: replicas_identical across the live nodes.\n"
    "Every scenario first lets membership settle (warm-up: 5 s up to 200 nodes, 10 s\n"
    "beyond); traffic figures cover the measured part only.\n"
    "\n"
    "Options:\n"
    "  -s, --scenario S        converge | failure | partition | churn (required)\n"
    "  -n, --nodes N           number of nodes, 1..1000000 (required)\n"
    "  -S, --seed X            master seed, an unsigned 64-bit integer (required)\n"
    "  -l, --loss P            packet loss probability, 0 <= P < 1 (default 0)\n"
    "  -L, --latency-ms MIN-MAX  one-way link latency range in ms, uniform (default 1-10);\n"
    "                          fractions allowed (0.5-2.5); MIN alone means a fixed latency\n"
    "  -d, --duration-s T      measured duration in virtual seconds (scenario default)\n"
    "  -u, --updates K         writes during the run (scenario default)\n"
    "  -c, --crypto on|off     sign every packet and record (N <= 200 advised; default off)\n"
    "      --dup P             duplicate packets with probability P (default 0)\n"
    "      --reorder P         delay packets by up to 2x the max latency with probability P\n"
    "      --skew-ms S         per-node wall-clock skew drawn from [-S, S] ms (default 0)\n"
    "      --warmup-ms W       override the warm-up\n"
    "      --threads T         run each millisecond's events on T threads, 1..16 (default:\n"
    "                          the online CPUs, at most 4); every T gives the same result,\n"
    "                          bit for bit; a latency under 1 ms makes the run serial\n"
    "      --protocol P        gossip (the real core, default) or flood (a trivial test\n"
    "                          protocol: every write sent to every node; no membership)\n"
    "  -j, --json              print one JSON object with the results on stdout\n"
    "      --csv FILE          write the spread of each update: update,t_ms,fraction rows\n"
    "                          (t_ms since the write; fraction of live nodes holding it);\n"
    "                          render it with sim/plot.gp\n"
    "  -q, --quiet             no progress line on stderr\n"
    "  -h, --help              this text\n"
    "\n"
    "JSON fields: scenario, nodes, seed, converged, convergence_ms_p50, convergence_ms_p99,\n"
    "convergence_ms_max, msgs_per_node_per_update (packets other than failure-detection\n"
    "probes/acks / live nodes / updates), bytes_per_node_per_s (every byte), false_positives,\n"
    "detection_ms_p99, detection_ms_max, heal_ms, replicas_identical, conflicts_resolved,\n"
    "events, updates, live, invariant_violations, virtual_s, packets{...}, wall_s. Fields\n"
    "that do not apply to the scenario are null.\n"
    "\n"
    "Environment: STATEMESH_SIM_HUGETLB=0 keeps the heap on normal pages (by default the\n"
    "simulator re-executes itself once with GLIBC_TUNABLES=glibc.malloc.hugetlb=1);\n"
    "SIM_DEBUG=1 prints diagnostics on stderr (slow updates, false positives, per-node\n"
    "figures at the end).\n"
    "\n"
    "Exit status: 0 when the run completed (whether or not targets were met), 1 when an\n"
    "invariant was violated (a record moved backwards in the merge order, an incarnation\n"
    "decreased; the seed is printed), 2 on bad arguments.\n"
    "\n"
    "Example:\n"
    "  statemesh-sim --scenario converge --nodes 10000 --seed 1 --json --csv spread.csv\n";

static const char *prog = "statemesh-sim";

/*
 * A 10,000-node run keeps ~3 GB of small allocations and touches them at
 * random: with 4 KiB pages most of its time went to TLB misses and to
 * first-touch page faults (very dear in a virtual machine). glibc puts
 * malloc's heap on transparent huge pages only when the process starts with
 * GLIBC_TUNABLES=glibc.malloc.hugetlb=1, so the simulator re-executes itself
 * once with it (same pid, same arguments). STATEMESH_SIM_HUGETLB=0 turns this
 * off; it is skipped under valgrind (an exec would leave the tool) and when
 * the kernel has transparent huge pages disabled.
 */
static void hugetlb_reexec(char **argv)
{
    const char *off = getenv("STATEMESH_SIM_HUGETLB");
    if (off && !strcmp(off, "0")) return;
    const char *cur = getenv("GLIBC_TUNABLES");
    if (cur && strstr(cur, "glibc.malloc.hugetlb")) return;
    const char *pre = getenv("LD_PRELOAD");
    if (pre && strstr(pre, "vgpreload")) return;
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return;
    char mode[128] = "";
    bool never = !fgets(mode, sizeof(mode), f) || strstr(mode, "[never]");
    fclose(f);
    if (never) return;
    char buf[2048];
    int n = snprintf(buf, sizeof(buf), "%s%sglibc.malloc.hugetlb=1", cur ? cur : "",
                     cur && *cur ? ":" : "");
    if (n < 0 || (size_t)n >= sizeof(buf)) return;
    if (setenv("GLIBC_TUNABLES", buf, 1) != 0) return;
    execv("/proc/self/exe", argv);
    unsetenv("GLIBC_TUNABLES"); /* the exec failed: carry on as we are */
    if (cur) setenv("GLIBC_TUNABLES", cur, 1);
}

__attribute__((format(printf, 1, 2), noreturn)) static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", prog);
    exit(2);
}

/* @p what names the option */
static double parse_double(const char *s, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) die_usage("%s: '%s' is not a number", what, s);
    return v;
}

static uint64_t parse_u64(const char *s, const char *what)
{
    char *end;
    errno = 0;
    if (*s == '-' || *s == '\0') die_usage("%s: '%s' is not an unsigned integer", what, s);
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end) die_usage("%s: '%s' is not an unsigned integer", what, s);
    return v;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct prog_state {
    double start, last;
    bool quiet;
};

static void on_progress(void *arg, const char *scenario, double t_s, double end_s, uint64_t events,
                        uint32_t live)
{
    struct prog_state *p = arg;
    if (p->quiet) return;
    double w = now_s();
    if (w - p->last < 2.0) return;
    p->last = w;
    fprintf(stderr,
            "%s: %s t=%.1f/%.1f s virtual, %" PRIu64 " events, %" PRIu32 " live, %.1f s wall\n",
            prog, scenario, t_s, end_s, events, live, w - p->start);
}

int main(int argc, char **argv)
{
    enum { O_DUP = 256, O_REORDER, O_SKEW, O_WARMUP, O_CSV, O_PROTO, O_THREADS };
    static const struct option longopts[] = {
        {"scenario", required_argument, NULL, 's'},
        {"nodes", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 'S'},
        {"loss", required_argument, NULL, 'l'},
        {"latency-ms", required_argument, NULL, 'L'},
        {"duration-s", required_argument, NULL, 'd'},
        {"updates", required_argument, NULL, 'u'},
        {"crypto", required_argument, NULL, 'c'},
        {"dup", required_argument, NULL, O_DUP},
        {"reorder", required_argument, NULL, O_REORDER},
        {"skew-ms", required_argument, NULL, O_SKEW},
        {"warmup-ms", required_argument, NULL, O_WARMUP},
        {"protocol", required_argument, NULL, O_PROTO},
        {"threads", required_argument, NULL, O_THREADS},
        {"json", no_argument, NULL, 'j'},
        {"csv", required_argument, NULL, O_CSV},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct sim_opts o;
    sim_opts_default(&o);
    bool have_scenario = false, have_nodes = false, have_seed = false, json = false;
    const char *csv_path = NULL;
    struct prog_state ps = {0};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:n:S:l:L:d:u:c:jqh", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            o.scenario = optarg;
            have_scenario = true;
            break;
        case 'n': {
            uint64_t n = parse_u64(optarg, "--nodes");
            if (n < 1 || n > 1000000) die_usage("--nodes: %s is out of range (1..1000000)", optarg);
            o.nodes = (uint32_t)n;
            have_nodes = true;
            break;
        }
        case 'S':
            o.seed = parse_u64(optarg, "--seed");
            have_seed = true;
            break;
        case 'l':
            o.loss = parse_double(optarg, "--loss");
            if (!(o.loss >= 0 && o.loss < 1)) die_usage("--loss: %s is not in [0, 1)", optarg);
            break;
        case 'L': {
            char buf[64];
            snprintf(buf, sizeof(buf), "%s", optarg);
            char *dash = strchr(buf, '-');
            if (dash) *dash = '\0';
            double lo = parse_double(buf, "--latency-ms");
            double hi = dash ? parse_double(dash + 1, "--latency-ms") : lo;
            if (lo < 0 || hi < lo || hi > 60000)
                die_usage("--latency-ms: '%s' needs 0 <= MIN <= MAX <= 60000", optarg);
            o.lat_min_us = (int64_t)(lo * SIM_US + 0.5);
            o.lat_max_us = (int64_t)(hi * SIM_US + 0.5);
            break;
        }
        case 'd':
            o.duration_s = parse_double(optarg, "--duration-s");
            if (!(o.duration_s >= 0 && o.duration_s <= 86400))
                die_usage("--duration-s: %s is not in [0, 86400]", optarg);
            break;
        case 'u': {
            uint64_t k = parse_u64(optarg, "--updates");
            if (k > 10000000) die_usage("--updates: %s is too many (max 10000000)", optarg);
            o.updates = (int64_t)k;
            break;
        }
        case 'c':
            if (!strcmp(optarg, "on"))
                o.crypto = true;
            else if (!strcmp(optarg, "off"))
                o.crypto = false;
            else
                die_usage("--crypto: '%s' is not on or off", optarg);
            break;
        case O_DUP:
            o.dup = parse_double(optarg, "--dup");
            if (!(o.dup >= 0 && o.dup <= 1)) die_usage("--dup: %s is not in [0, 1]", optarg);
            break;
        case O_REORDER:
            o.reorder = parse_double(optarg, "--reorder");
            if (!(o.reorder >= 0 && o.reorder <= 1))
                die_usage("--reorder: %s is not in [0, 1]", optarg);
            break;
        case O_SKEW:
            o.skew_ms = (int64_t)parse_u64(optarg, "--skew-ms");
            break;
        case O_WARMUP:
            o.warmup_ms = (int64_t)parse_u64(optarg, "--warmup-ms");
            break;
        case O_THREADS: {
            uint64_t t = parse_u64(optarg, "--threads");
            if (t < 1 || t > SIM_MAX_THREADS)
                die_usage("--threads: %s is out of range (1..%d)", optarg, SIM_MAX_THREADS);
            o.threads = (unsigned)t;
            break;
        }
        case O_PROTO:
            if (!strcmp(optarg, "flood"))
                o.proto = &sim_proto_flood;
            else if (strcmp(optarg, "gossip"))
                die_usage("--protocol: '%s' is not gossip or flood", optarg);
            break;
        case 'j':
            json = true;
            break;
        case O_CSV:
            csv_path = optarg;
            break;
        case 'q':
            ps.quiet = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case ':':
            die_usage("option '%s' needs an argument", argv[optind - 1]);
            break;
        default:
            die_usage("unknown option '%s'", argv[optind - 1]);
            break;
        }
    }
    if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);
    if (!have_scenario) die_usage("%s", "--scenario is required");
    if (!have_nodes) die_usage("%s", "--nodes is required");
    if (!have_seed) die_usage("%s", "--seed is required");
    if (strcmp(o.scenario, "converge") && strcmp(o.scenario, "failure") &&
        strcmp(o.scenario, "partition") && strcmp(o.scenario, "churn"))
        die_usage("--scenario: '%s' is not converge, failure, partition or churn", o.scenario);
    if (o.nodes < 3 && strcmp(o.scenario, "converge"))
        die_usage("--nodes: the %s scenario needs at least 3 nodes", o.scenario);
    if (o.crypto && o.nodes > 200)
        fprintf(stderr, "%s: warning: --crypto on with %" PRIu32 " nodes (> 200) will be slow\n",
                prog, o.nodes);
    hugetlb_reexec(argv);
    if (csv_path) {
        o.csv = fopen(csv_path, "w");
        if (!o.csv) {
            fprintf(stderr, "%s: cannot write %s: %s\n", prog, csv_path, strerror(errno));
            return 2;
        }
        fputs("update,t_ms,fraction\n", o.csv);
    }
    if (!o.threads) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = ncpu < 1 ? 1 : ncpu > 4 ? 4 : (unsigned)ncpu;
    }
    o.keep = !getenv("SIM_DEBUG"); /* exit frees faster than a teardown (SIM_DEBUG prints
                                      per-node figures at the teardown) */
    ps.start = ps.last = now_s();
    o.progress = on_progress;
    o.progress_arg = &ps;

    struct sim_result res;
    char err[256] = "";
    int rc = sim_scenario_run(&o, &res, err, sizeof(err));
    double wall = now_s() - ps.start;
    if (!ps.quiet)
        fprintf(stderr, "%s: done: %.1f s wall, %.1f s CPU\n", prog, wall,
                (double)clock() / CLOCKS_PER_SEC);
    if (o.csv && fclose(o.csv) != 0) {
        fprintf(stderr, "%s: writing %s failed\n", prog, csv_path);
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "%s: %s (seed %" PRIu64 ")\n", prog, err, o.seed);
        return 1;
    }
    if (json) {
        sim_result_json(stdout, &res, wall);
    } else {
        printf("scenario %s, %" PRIu32 " nodes, seed %" PRIu64 ": %s\n", res.scenario, res.nodes,
               res.seed, res.converged ? "converged" : "NOT converged");
        if (res.has_conv)
            printf("  convergence p50 %.1f ms, p99 %.1f ms, max %.1f ms over %" PRIu64 " updates\n",
                   res.conv_p50, res.conv_p99, res.conv_max, res.updates);
        if (res.msgs_per_node_per_update >= 0)
            printf("  %.2f msgs/node/update, ", res.msgs_per_node_per_update);
        if (res.bytes_per_node_per_s >= 0) printf("%.0f bytes/node/s\n", res.bytes_per_node_per_s);
        if (res.false_positives >= 0)
            printf("  false positives %" PRId64 ", detection p99 %.0f ms, max %.0f ms\n",
                   res.false_positives, res.detection_p99, res.detection_max);
        if (res.heal_ms >= 0) printf("  healed in %.1f ms\n", res.heal_ms);
        if (res.replicas_identical >= 0)
            printf("  replicas identical: %s\n", res.replicas_identical ? "yes" : "no");
        if (res.conflicts_resolved >= 0)
            printf("  conflicting keys hold the merge-order winner: %s\n",
                   res.conflicts_resolved ? "yes" : "no");
        printf("  %" PRIu64 " events, %.1f s virtual, %.2f s wall\n", res.events, res.virtual_s,
               wall);
    }
    if (res.violations) {
        fprintf(stderr, "%s: %" PRIu64 " invariant violations (seed %" PRIu64 ")\n", prog,
                res.violations, o.seed);
        return 1;
    }
    return 0;
}
