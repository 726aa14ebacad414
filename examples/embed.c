/* embed.c: an example program that embeds libstatemesh on its own libev loop. */

/*
 * embed - join a statemesh mesh from your own program
 *
 *   embed --id ID --bind HOST:PORT [--join HOST:PORT[,HOST:PORT...]]
 *         --ca DIR/ca.pub --cert FILE --key FILE [--put KEY=VALUE]...
 *         [--watch PREFIX] [--expect KEY=VALUE]... [--timeout-s N] [-o OPTION=VALUE]...
 *
 * The program opens a "mesh" store on an event loop it owns (ev_loop_new), so
 * libstatemesh shares the loop with whatever else the program does. It joins
 * the mesh through the --join seeds (statemeshd daemons or other embedders),
 * writes the --put records, and prints one line per change of a key under
 * --watch and one per change of mesh membership:
 *
 *   set KEY=VALUE origin=NODE     delete KEY origin=NODE     expire KEY origin=NODE
 *   member NODE STATE HOST:PORT   (STATE: alive, suspect, dead, left)
 *
 * With --expect it exits 0 as soon as every KEY holds VALUE, 1 after
 * --timeout-s seconds (default 30). Without --expect it runs until SIGINT or
 * SIGTERM (or --timeout-s), then leaves the mesh gracefully and exits 0.
 * Bad arguments exit 2. Certificates come from the statemesh CLI:
 *
 *   statemesh ca init ca && statemesh cert issue --ca ca --node-id app1 --out certs
 *   embed --id app1 --bind 127.0.0.1:0 --join 127.0.0.1:7946 --ca ca/ca.pub \
 *         --cert certs/app1.cert --key certs/app1.key --put app:hello=world --watch app:
 *
 * Build against the installed library: cc embed.c $(pkg-config --cflags --libs statemesh) -lev
 */

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "statemesh.h"

#define DEFAULT_EXPECT_TIMEOUT_S 30

struct app;

/* A KEY=VALUE argument, split in place (the pointers point into argv). */
struct kv_arg {
    const char *key;
    const char *value;
    int met;         /* --expect: the store holds this value now */
    struct app *app; /* --put: lets the completion callback reach the app */
};

/* Everything the program owns. One struct so the callbacks find it via their
 * `arg`/`data` pointer and the cleanup path frees it all in one place. */
struct app {
    struct ev_loop *loop;
    struct sm_config *cfg;
    struct sm_store *store;
    struct sm_watch *printer;  /* prints events under --watch */
    struct sm_watch *expecter; /* re-checks --expect on every change */
    ev_signal sigint, sigterm;
    ev_timer timeout;
    const char *watch_prefix;
    struct kv_arg *puts, *expects;
    size_t nputs, nexpects;
    int done; /* finish() was called: the loop must not (keep) run(ning) */
    int exit_code;
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: embed --id ID --bind HOST:PORT [--join HOST:PORT[,...]]\n"
               "             --ca DIR/ca.pub --cert FILE --key FILE [--put KEY=VALUE]...\n"
               "             [--watch PREFIX] [--expect KEY=VALUE]... [--timeout-s N]\n"
               "             [-o OPTION=VALUE]...\n"
               "\n"
               "Joins a statemesh mesh on its own libev loop, writes records and watches them.\n"
               "\n"
               "  --id ID             this node's id (must match the certificate)\n"
               "  --bind HOST:PORT    UDP address for gossip (port 0 picks a free port)\n"
               "  --join SEEDS        comma-separated HOST:PORT of members to join through\n"
               "  --ca FILE           the cluster CA's public key (DIR/ca.pub)\n"
               "  --cert FILE         this node's certificate (from `statemesh cert issue`)\n"
               "  --key FILE          this node's secret key\n"
               "  --put KEY=VALUE     write a record once joined (repeatable)\n"
               "  --watch PREFIX      print every change of keys under PREFIX (\"\" = all)\n"
               "  --expect KEY=VALUE  exit 0 once KEY holds VALUE (repeatable; all must hold)\n"
               "  --timeout-s N       give up after N seconds: exit 1 when --expect is unmet,\n"
               "                      else 0 (default: 30 with --expect, no limit without)\n"
               "  -o OPTION=VALUE     any other store option, e.g. -o mesh.probe_interval=500ms\n"
               "  -h, --help          show this help\n"
               "\n"
               "Output: one line per change: `set KEY=VALUE origin=NODE`, `delete KEY\n"
               "origin=NODE`, `expire KEY origin=NODE`, `member NODE STATE HOST:PORT`.\n"
               "Exit status: 0 done, 1 failure or timeout, 2 bad arguments.\n");
}

/* Print a value on one line: printable ASCII as is, anything else as \xNN, so
 * one event is always exactly one line whatever the bytes are. */
static void print_value(const void *value, size_t len)
{
    const unsigned char *p = value;
    for (size_t i = 0; i < len; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            putchar(p[i]);
        else
            printf("\\x%02x", p[i]);
    }
}

/* Stop the loop with an exit status; the cleanup happens after ev_run returns
 * (never close the store from inside one of its own callbacks). */
static void finish(struct app *a, int code)
{
    if (a->done) return; /* the first reason wins */
    a->done = 1;
    a->exit_code = code;
    ev_break(a->loop, EVBREAK_ALL);
}

/* Compare every --expect with the local replica. sm_get_now() reads local
 * memory synchronously, so this is cheap enough to run on every change. */
static void check_expectations(struct app *a)
{
    size_t met = 0;
    for (size_t i = 0; i < a->nexpects; i++) {
        struct kv_arg *e = &a->expects[i];
        struct sm_entry ent;
        size_t vlen = strlen(e->value);
        e->met = sm_get_now(a->store, e->key, &ent) == 0 && ent.value_len == vlen &&
                 memcmp(ent.value, e->value, vlen) == 0;
        met += (size_t)e->met;
    }
    if (a->nexpects && met == a->nexpects) finish(a, 0);
}

/* Watch callback for --watch: one line per event. Pointers in `ev` are valid
 * only during this call, so print (or copy) them here. */
static void on_print(struct sm_watch *w, const struct sm_event *ev, void *arg)
{
    (void)w, (void)arg;
    switch (ev->type) {
    case SM_EVENT_SET:
        printf("set %s=", ev->key);
        print_value(ev->value, ev->value_len);
        printf(" origin=%s\n", ev->origin);
        break;
    case SM_EVENT_DELETE:
        printf("delete %s origin=%s\n", ev->key, ev->origin);
        break;
    case SM_EVENT_EXPIRE:
        printf("expire %s origin=%s\n", ev->key, ev->origin);
        break;
    case SM_EVENT_OVERFLOW:
        /* The queue was full and events were lost: a real consumer would
         * re-read the state it cares about (sm_list) here. */
        printf("overflow dropped=%llu\n", (unsigned long long)ev->dropped);
        break;
    }
    fflush(stdout);
}

/* Watch callback for --expect: any change (or lost changes) may settle it. */
static void on_change(struct sm_watch *w, const struct sm_event *ev, void *arg)
{
    (void)w, (void)ev;
    check_expectations(arg);
}

/* Member callback: the mesh tells embedders who joined, failed or left. */
static void on_member(struct sm_store *s, const struct sm_member *m, void *arg)
{
    (void)s, (void)arg;
    printf("member %s %s %s\n", m->id, sm_member_state_name(m->state), m->addr);
    fflush(stdout);
}

/* Completion of one --put. It runs once, from the loop, never from inside
 * sm_set(); with the mesh backend the write is merged locally and then gossiped. */
static void on_put(struct sm_store *s, int status, const struct sm_result *res, void *arg)
{
    (void)s;
    struct kv_arg *p = arg;
    if (status < 0) {
        /* SM_ECLOSED here just means we are shutting down. */
        if (status != SM_ECLOSED) {
            fprintf(stderr, "embed: put %s: %s (%s)\n", p->key, sm_strerror(status),
                    res && res->errmsg ? res->errmsg : "");
            finish(p->app, 1);
        }
        return;
    }
    fprintf(stderr, "embed: put %s version=%llu\n", p->key, (unsigned long long)res->version);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop, (void)revents;
    struct app *a = w->data;
    fprintf(stderr, "embed: %s: leaving the mesh\n", w->signum == SIGINT ? "SIGINT" : "SIGTERM");
    /* A stop by signal is a success unless --expect is still waiting. */
    finish(a, a->nexpects ? 1 : 0);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    struct app *a = w->data;
    if (a->nexpects) {
        for (size_t i = 0; i < a->nexpects; i++)
            if (!a->expects[i].met)
                fprintf(stderr, "embed: timeout: %s does not hold %s\n", a->expects[i].key,
                        a->expects[i].value);
        finish(a, 1);
    } else {
        finish(a, 0);
    }
}

/* Split "KEY=VALUE" in place. The key must not be empty; the value may be. */
static int split_kv(char *arg, struct kv_arg *out)
{
    char *eq = strchr(arg, '=');
    if (!eq || eq == arg) return -1;
    *eq = '\0';
    out->key = arg;
    out->value = eq + 1;
    out->met = 0;
    return 0;
}

/* Set a store option, reporting the (rare) failure: only OOM or an empty key. */
static int set_opt(struct sm_config *cfg, const char *key, const char *value)
{
    int rc = sm_config_set(cfg, key, value);
    if (rc < 0) fprintf(stderr, "embed: option %s: %s\n", key, sm_strerror(rc));
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"id", required_argument, NULL, 'i'},     {"bind", required_argument, NULL, 'b'},
        {"join", required_argument, NULL, 'j'},   {"ca", required_argument, NULL, 'C'},
        {"cert", required_argument, NULL, 'c'},   {"key", required_argument, NULL, 'k'},
        {"put", required_argument, NULL, 'p'},    {"watch", required_argument, NULL, 'w'},
        {"expect", required_argument, NULL, 'e'}, {"timeout-s", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    struct app a = {.exit_code = 1};
    const char *id = NULL, *bind = NULL, *join = NULL, *ca = NULL, *cert = NULL, *key = NULL;
    long timeout_s = -1;
    char err[512];
    int rc;

    /* Both lists hold at most one entry per argument; no reallocation needed. */
    a.puts = calloc((size_t)argc, sizeof *a.puts);
    a.expects = calloc((size_t)argc, sizeof *a.expects);
    a.cfg = sm_config_new();
    if (!a.puts || !a.expects || !a.cfg) {
        fprintf(stderr, "embed: out of memory\n");
        goto out;
    }

    /* ---- arguments ---- */
    int c;
    opterr = 0; /* we print our own messages */
    while ((c = getopt_long(argc, argv, ":ho:", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            id = optarg;
            break;
        case 'b':
            bind = optarg;
            break;
        case 'j':
            join = optarg;
            break;
        case 'C':
            ca = optarg;
            break;
        case 'c':
            cert = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'w':
            a.watch_prefix = optarg;
            break;
        case 'p':
            if (split_kv(optarg, &a.puts[a.nputs]) < 0) goto bad_kv;
            a.nputs++;
            break;
        case 'e':
            if (split_kv(optarg, &a.expects[a.nexpects]) < 0) goto bad_kv;
            a.nexpects++;
            break;
        case 't': {
            char *end;
            errno = 0;
            timeout_s = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || timeout_s < 1 || timeout_s > 86400) {
                fprintf(stderr, "embed: --timeout-s: '%s' is not a number of seconds (1..86400)\n",
                        optarg);
                a.exit_code = 2;
                goto out;
            }
            break;
        }
        case 'o': {
            /* Generic store options ("mesh.gossip_interval=200ms", "max_value=4096", …):
             * the store validates them when it opens. */
            struct kv_arg o;
            if (split_kv(optarg, &o) < 0) goto bad_kv;
            if (set_opt(a.cfg, o.key, o.value) < 0) goto out;
            break;
        }
        case 'h':
            usage(stdout);
            a.exit_code = 0;
            goto out;
        case ':':
            fprintf(stderr, "embed: %s needs an argument (see --help)\n", argv[optind - 1]);
            a.exit_code = 2;
            goto out;
        default:
            fprintf(stderr, "embed: unknown option '%s' (see --help)\n", argv[optind - 1]);
            a.exit_code = 2;
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "embed: unexpected argument '%s' (see --help)\n", argv[optind]);
        a.exit_code = 2;
        goto out;
    }
    const char *missing = !id     ? "--id"
                          : !bind ? "--bind"
                          : !ca   ? "--ca"
                          : !cert ? "--cert"
                          : !key  ? "--key"
                                  : NULL;
    if (missing) {
        fprintf(stderr, "embed: %s is required (see --help)\n", missing);
        a.exit_code = 2;
        goto out;
    }
    if (timeout_s < 0 && a.nexpects) timeout_s = DEFAULT_EXPECT_TIMEOUT_S;

    /* ---- configuration: dotted options, validated when the store opens ---- */
    if (set_opt(a.cfg, "node_id", id) < 0 || set_opt(a.cfg, "storage", "mesh") < 0 ||
        set_opt(a.cfg, "mesh.bind", bind) < 0 || set_opt(a.cfg, "mesh.ca", ca) < 0 ||
        set_opt(a.cfg, "mesh.cert", cert) < 0 || set_opt(a.cfg, "mesh.key", key) < 0 ||
        (join && set_opt(a.cfg, "mesh.join", join) < 0))
        goto out;

    /* ---- our own loop; the store adds its watchers (UDP socket, timers) to it ---- */
    a.loop = ev_loop_new(EVFLAG_AUTO);
    if (!a.loop) {
        fprintf(stderr, "embed: cannot create an event loop\n");
        goto out;
    }
    rc = sm_store_new(a.loop, a.cfg, &a.store, err, sizeof err);
    if (rc < 0) {
        /* Bad option values, unreadable certificates, a busy port all land here. */
        fprintf(stderr, "embed: cannot open the store: %s\n", err);
        goto out;
    }
    /* The configuration was only borrowed during sm_store_new(). */
    sm_config_delete(a.cfg);
    a.cfg = NULL;
    fprintf(stderr, "embed: node %s running libstatemesh %s\n", sm_store_node_id(a.store),
            sm_version());

    sm_on_member(a.store, on_member, &a);
    if (a.watch_prefix) {
        rc = sm_watch(a.store, a.watch_prefix, on_print, &a, &a.printer);
        if (rc < 0) {
            fprintf(stderr, "embed: watch: %s\n", sm_strerror(rc));
            goto out;
        }
    }
    if (a.nexpects) {
        rc = sm_watch(a.store, "", on_change, &a, &a.expecter);
        if (rc < 0) {
            fprintf(stderr, "embed: watch: %s\n", sm_strerror(rc));
            goto out;
        }
    }

    /* Writes may start before the join completes: the mesh merges them
     * locally now and hands them to peers as they are found. */
    for (size_t i = 0; i < a.nputs; i++) {
        struct kv_arg *p = &a.puts[i];
        p->app = &a;
        rc = sm_set(a.store, p->key, p->value, strlen(p->value), 0, on_put, p);
        if (rc < 0) {
            /* refused at once (bad key, value too large): no callback will run */
            fprintf(stderr, "embed: put %s: %s\n", p->key, sm_strerror(rc));
            goto out;
        }
    }

    ev_signal_init(&a.sigint, on_signal, SIGINT);
    ev_signal_init(&a.sigterm, on_signal, SIGTERM);
    a.sigint.data = a.sigterm.data = &a;
    ev_signal_start(a.loop, &a.sigint);
    ev_signal_start(a.loop, &a.sigterm);
    if (timeout_s > 0) {
        ev_timer_init(&a.timeout, on_timeout, (ev_tstamp)timeout_s, 0.);
        a.timeout.data = &a;
        ev_timer_start(a.loop, &a.timeout);
    }

    /* The expectation may already hold (a key this node wrote itself). */
    a.exit_code = 0;
    check_expectations(&a);
    /* Runs until finish() breaks out of it (expectation met, timeout, signal,
     * failed write). Anything else the program does can share this loop. */
    if (!a.done) ev_run(a.loop, 0);
    goto out;

bad_kv:
    fprintf(stderr, "embed: '%s' is not KEY=VALUE (see --help)\n", optarg);
    a.exit_code = 2;
out:
    if (a.loop) {
        ev_signal_stop(a.loop, &a.sigint);
        ev_signal_stop(a.loop, &a.sigterm);
        ev_timer_stop(a.loop, &a.timeout);
    }
    sm_unwatch(a.printer);
    sm_unwatch(a.expecter);
    /* Closing the store leaves the mesh gracefully (peers see us "left" at
     * once instead of suspecting a failure), completes any unfinished write
     * with SM_ECLOSED, and removes its watchers from the loop. */
    sm_store_delete(a.store);
    if (a.loop) ev_loop_destroy(a.loop);
    sm_config_delete(a.cfg);
    free(a.puts);
    free(a.expects);
    return a.exit_code;
}
