/* statemeshd.c: the statemesh daemon: a store on a libev loop, served over HTTP/JSON. */
#include "config.h"

#include "api.h"
#include "backend.h"
#include "daemon_config.h"
#include "http.h"
#include "log.h"
#include "statemesh.h"

#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_HTTP "127.0.0.1:8500"

static const char usage_text[] =
    "Usage: statemeshd [-c FILE.yaml] [OPTIONS]\n"
    "\n"
    "statemeshd runs one node of a statemesh: a replicated key/value store\n"
    "(local, gossip mesh, Redis or Raft backed) served to local clients over a\n"
    "small HTTP/JSON API. Settings come from a YAML file (-c) and from flags;\n"
    "a flag always wins over the file. See docs/config.md for every option and\n"
    "docs/api.md for the HTTP API.\n"
    "\n"
    "General:\n"
    "  -c, --config FILE        read settings from FILE (YAML)\n"
    "      --check-config       validate the settings, print the result, exit 0 (ok)\n"
    "                           or 1 (bad; the message names FILE:LINE and the option)\n"
    "      --node-id ID         this node's id (default: the host name)\n"
    "      --storage BACKEND    default backend: local (default), mesh, redis, raft\n"
    "      --route PREFIX=BACKEND\n"
    "                           send keys starting with PREFIX to BACKEND (repeatable;\n"
    "                           flag routes replace the file's routes)\n"
    "      --data-dir DIR       directory for persistent state (created mode 0700)\n"
    "      --max-key N          longest key in bytes (default 256)\n"
    "      --max-value N        largest value in bytes (default 1024)\n"
    "      --watch-queue N      events queued per watch (default 1024)\n"
    "  -o, --set KEY=VALUE      set any option by its dotted name (e.g. mesh.mtu=1200)\n"
    "\n"
    "HTTP API:\n"
    "      --http HOST:PORT     API address (default " DEFAULT_HTTP "; loopback unless\n"
    "                           you say otherwise; port 0 picks a free port)\n"
    "      --http-socket PATH   also serve the API on a unix socket\n"
    "      --http-token-file F  require 'Authorization: Bearer TOKEN' (TOKEN read from F)\n"
    "                           on write requests (PUT, POST, DELETE)\n"
    "\n"
    "Mesh (storage: mesh):\n"
    "      --bind HOST:PORT     gossip UDP address\n"
    "      --advertise HOST:PORT\n"
    "                           address other nodes use to reach this one\n"
    "      --join HOST:PORT[,HOST:PORT...]\n"
    "                           seed nodes to join through\n"
    "      --ca FILE            cluster CA public key (ca.pub from 'statemesh ca init')\n"
    "      --cert FILE          this node's certificate (ID.cert from 'statemesh cert issue')\n"
    "      --key FILE           this node's secret key (ID.key)\n"
    "      --keyring FILE       cluster encryption keyring (optional)\n"
    "      --gossip-interval D  gossip round interval (e.g. 200ms)\n"
    "      --probe-interval D   failure-detector probe interval (e.g. 1s)\n"
    "\n"
    "Redis (storage: redis):\n"
    "      --redis-addr ADDR    HOST:PORT or unix socket path\n"
    "      --redis-db N         database number\n"
    "      --redis-prefix P     key prefix for isolation\n"
    "\n"
    "Raft (storage: raft):\n"
    "      --raft-bind HOST:PORT  raft TCP address\n"
    "      --raft-peers LIST    bootstrap voters ID=HOST:PORT,...\n"
    "\n"
    "Logging:\n"
    "      --log-level LEVEL    debug, info (default), warn, error\n"
    "      --log-format FMT     logfmt (default) or json; logs go to stderr\n"
    "\n"
    "  -h, --help               show this help and exit\n"
    "  -V, --version            show the version and exit\n"
    "\n"
    "Signals: SIGTERM/SIGINT leave the mesh and exit 0; SIGHUP re-reads the file\n"
    "and applies the log level, the API token and (when the backend supports it)\n"
    "the keyring.\n"
    "\n"
    "Exit status: 0 clean shutdown or valid config, 1 error, 2 bad usage.\n";

struct daemon {
    struct ev_loop *loop;
    int argc;
    char **argv;
    const char *config_path;
    struct smd_config *cfg;
    struct sm_store *store;
    struct smd_api *api;
    struct smd_http *http, *unix_http;
    char *unix_path;
    ev_signal sigterm, sigint, sighup;
    ev_timer deadline;
    int stopping;
};

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "statemeshd: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'statemeshd --help'.\n");
    exit(2);
}

/* Flags that take a value and are not in the option table. */
enum { F_CONFIG = 1, F_SET, F_ROUTE };

static const struct smd_opt_info *flag_info(const char *name)
{
    for (const struct smd_opt_info *i = smd_opt_table; i->key; i++)
        if (i->flag && strcmp(i->flag, name) == 0) return i;
    return NULL;
}

/*
 * Apply the flags to @p cfg. Returns 0, or exits with 2 on bad usage. With
 * @p cfg NULL only checks the syntax and returns the config path and mode.
 */
static void parse_flags(int argc, char **argv, struct smd_config *cfg, const char **config,
                        int *check)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("statemeshd %s\n", sm_version());
            exit(0);
        }
        if (strcmp(a, "--check-config") == 0) {
            if (check) *check = 1;
            continue;
        }
        if (a[0] != '-') die_usage("unexpected argument '%s'", a);
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (eq && a[1] == '-') {
            size_t n = (size_t)(eq - a);
            if (n >= sizeof name) die_usage("unknown option '%s'", a);
            memcpy(name, a, n);
            name[n] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        int special = 0;
        const struct smd_opt_info *info = NULL;
        if (strcmp(name, "-c") == 0 || strcmp(name, "--config") == 0)
            special = F_CONFIG;
        else if (strcmp(name, "-o") == 0 || strcmp(name, "--set") == 0)
            special = F_SET;
        else if (strcmp(name, "--route") == 0)
            special = F_ROUTE;
        else if (!(info = flag_info(name)))
            die_usage("unknown option '%s'", name);
        if (!val) {
            if (i + 1 >= argc) die_usage("option '%s' needs a value", name);
            val = argv[++i];
        }
        if (special == F_CONFIG) {
            if (config) *config = val;
            continue;
        }
        if (!cfg) continue;
        int rc = 0;
        if (special == F_SET || special == F_ROUTE) {
            const char *e = strchr(val, '=');
            if (!e || e == val)
                die_usage("%s needs %s, got '%s'", name,
                          special == F_SET ? "KEY=VALUE" : "PREFIX=BACKEND", val);
            char key[256];
            size_t kl = (size_t)(e - val);
            if (kl >= sizeof key) die_usage("option name too long: '%s'", val);
            memcpy(key, val, kl);
            key[kl] = '\0';
            char where[340];
            snprintf(where, sizeof where, "%s %s", name, key);
            if (special == F_SET)
                rc = smd_config_set(cfg, key, e + 1, where);
            else
                rc = smd_config_add_route(cfg, key, e + 1, "--route");
        } else {
            rc = smd_config_set(cfg, info->key, val, name);
        }
        if (rc < 0) {
            fprintf(stderr, "statemeshd: %s\n", sm_strerror(rc));
            exit(1);
        }
    }
}

/* Load file + flags into a fresh configuration and validate it. */
static int load_config(struct daemon *d, struct smd_config **out, char *err, size_t errlen)
{
    struct smd_config *c = smd_config_new();
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return SM_ENOMEM;
    }
    int rc = 0;
    if (d->config_path && (rc = smd_config_load_file(c, d->config_path, err, errlen)) < 0)
        goto fail;
    parse_flags(d->argc, d->argv, c, NULL, NULL);
    if ((rc = smd_config_validate(c, err, errlen)) < 0) goto fail;
    *out = c;
    return 0;
fail:
    smd_config_delete(c);
    return rc;
}

static int read_token(const struct smd_config *c, char **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *t = smd_config_get(c, "http.token");
    if (t) {
        *out = sm_strdup(t);
        return *out ? 0 : SM_ENOMEM;
    }
    const char *path = smd_config_get(c, "http.token_file");
    if (!path) return 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: option http.token_file: cannot read %s: %s",
                 smd_config_where(c, "http.token_file"), path, strerror(errno));
        return SM_EIO;
    }
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = '\0';
    if (!n) {
        snprintf(err, errlen, "%s: option http.token_file: %s is empty",
                 smd_config_where(c, "http.token_file"), path);
        return SM_ECONFIG;
    }
    *out = sm_strdup(buf);
    sodium_memzero(buf, sizeof buf);
    return *out ? 0 : SM_ENOMEM;
}

static int mkdir_p(const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        snprintf(err, errlen, "data_dir: path too long");
        return SM_EINVAL;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) goto fail;
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) goto fail;
    struct stat st;
    if (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        goto fail;
    }
    return 0;
fail:
    snprintf(err, errlen, "option data_dir: cannot create %.512s: %s", tmp, strerror(errno));
    return SM_EIO;
}

static int all_local(const struct smd_config *c)
{
    const char *s = smd_config_get(c, "storage");
    if (s && strcmp(s, "local") != 0) return 0;
    for (size_t i = 0; i < smd_config_nroutes(c); i++) {
        const char *b;
        smd_config_route(c, i, NULL, &b, NULL);
        if (strcmp(b, "local") != 0) return 0;
    }
    return 1;
}

static void apply_log(const struct smd_config *c)
{
    int lvl = smd_log_parse_level(smd_config_get(c, "log.level"));
    int fmt = smd_log_parse_format(smd_config_get(c, "log.format"));
    smd_log_setup(lvl < 0 ? SMD_LOG_INFO : (enum smd_log_level)lvl,
                  fmt < 0 ? SMD_LOG_LOGFMT : (enum smd_log_format)fmt);
}

/* ---- shutdown and signals ---- */

static void stop(struct daemon *d, const char *why)
{
    if (d->stopping) return;
    d->stopping = 1;
    smd_log(SMD_LOG_INFO, "shutting down", "reason", why, NULL);
    smd_api_detach(d->api);    /* SSE streams end */
    sm_store_delete(d->store); /* leaves the mesh; pending requests get 503 */
    d->store = NULL;
    smd_http_delete(d->http); /* flushes, closes connections */
    smd_http_delete(d->unix_http);
    d->http = d->unix_http = NULL;
    if (d->unix_path) unlink(d->unix_path);
    ev_signal_stop(d->loop, &d->sighup);
    ev_break(d->loop, EVBREAK_ALL);
}

static void on_term(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop, (void)revents;
    stop(w->data, w->signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop, (void)revents;
    struct daemon *d = w->data;
    char err[1024];
    struct smd_config *nc = NULL;
    if (load_config(d, &nc, err, sizeof err) < 0) {
        smd_log(SMD_LOG_ERROR, "reload failed; keeping the running configuration", "error", err,
                NULL);
        return;
    }
    char *token = NULL;
    if (read_token(nc, &token, err, sizeof err) < 0) {
        smd_log(SMD_LOG_ERROR, "reload failed; keeping the running configuration", "error", err,
                NULL);
        smd_config_delete(nc);
        return;
    }
    int lvl = smd_log_parse_level(smd_config_get(nc, "log.level"));
    smd_log_set_level(lvl < 0 ? SMD_LOG_INFO : (enum smd_log_level)lvl);
    if (smd_api_set_token(d->api, token) < 0)
        smd_log(SMD_LOG_ERROR, "reload: out of memory setting the API token", NULL);
    if (token) {
        sodium_memzero(token, strlen(token));
        free(token);
    }
    /* the keyring is re-read on every reload: rotate by editing the files or
     * the list (new primary first, old key still accepted), then SIGHUP */
    const char *kr = smd_config_get(nc, "mesh.keyring");
    const char *okr = smd_config_get(d->cfg, "mesh.keyring");
    if (kr || okr) {
        char kerr[512];
        int krc = d->store ? sm_store_reload_keyring(d->store, kr ? kr : "", kerr, sizeof kerr)
                           : SM_ECLOSED;
        if (krc == 0)
            smd_log(SMD_LOG_INFO, "keyring reloaded", "keyring", kr ? kr : "(none)", NULL);
        else
            smd_log(SMD_LOG_ERROR, "keyring reload failed; keeping the running keyring", "error",
                    krc == SM_ECLOSED ? "store closed" : kerr, NULL);
    }
    smd_config_delete(d->cfg);
    d->cfg = nc;
    smd_log(SMD_LOG_INFO, "reloaded", "log_level", smd_log_level_name(smd_log_level()), NULL);
}

static int start_http(struct daemon *d, char *err, size_t errlen)
{
    char bound[300];
    int fd;
    const char *listen = smd_config_get(d->cfg, "http.listen");
    if (!listen) listen = DEFAULT_HTTP;
    int rc = smd_http_listen_tcp(listen, &fd, bound, sizeof bound, err, errlen);
    if (rc < 0) return rc;
    struct smd_http_opts o;
    smd_api_http_opts(d->api, &o);
    const char *mc = smd_config_get(d->cfg, "http.max_connections");
    if (mc) o.max_connections = (unsigned)strtoul(mc, NULL, 10);
    if ((rc = smd_http_new(d->loop, fd, &o, &d->http, err, errlen)) < 0) return rc;
    smd_log(SMD_LOG_INFO, "http listening", "addr", bound, NULL);
    const char *up = smd_config_get(d->cfg, "http.unix_socket");
    if (up) {
        if ((rc = smd_http_listen_unix(up, &fd, err, errlen)) < 0) return rc;
        if ((rc = smd_http_new(d->loop, fd, &o, &d->unix_http, err, errlen)) < 0) return rc;
        d->unix_path = sm_strdup(up);
        smd_log(SMD_LOG_INFO, "http listening", "unix", up, NULL);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct daemon d = {.argc = argc, .argv = argv};
    int check = 0;
    parse_flags(argc, argv, NULL, &d.config_path, &check);
    char err[1024], msg[1200];
    if (load_config(&d, &d.cfg, err, sizeof err) < 0) {
        fprintf(stderr, "statemeshd: %s\n", err);
        return 1;
    }
    apply_log(d.cfg);
    struct sm_config *sc = NULL;
    char *token = NULL;
    int rc = 1;
    if (smd_config_to_store(d.cfg, &sc) < 0) {
        fprintf(stderr, "statemeshd: out of memory\n");
        goto out;
    }
    if (read_token(d.cfg, &token, err, sizeof err) < 0) {
        fprintf(stderr, "statemeshd: %s\n", err);
        goto out;
    }
    d.loop = EV_DEFAULT;
    if (!d.loop) {
        fprintf(stderr, "statemeshd: cannot create the event loop\n");
        goto out;
    }
    if (check) {
        /* a local-only store opens without side effects: let it judge too */
        if (all_local(d.cfg)) {
            struct sm_store *st = NULL;
            if (sm_store_new(d.loop, sc, &st, err, sizeof err) < 0) {
                smd_config_annotate(d.cfg, err, msg, sizeof msg);
                fprintf(stderr, "statemeshd: %s\n", msg);
                goto out;
            }
            sm_store_delete(st);
        }
        printf("config ok%s%s\n", d.config_path ? ": " : "", d.config_path ? d.config_path : "");
        rc = 0;
        goto out;
    }
    const char *dd = smd_config_get(d.cfg, "data_dir");
    if (dd && mkdir_p(dd, err, sizeof err) < 0) {
        smd_config_annotate(d.cfg, err, msg, sizeof msg);
        smd_log(SMD_LOG_ERROR, "cannot start", "error", msg, NULL);
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    if (sm_store_new(d.loop, sc, &d.store, err, sizeof err) < 0) {
        smd_config_annotate(d.cfg, err, msg, sizeof msg);
        smd_log(SMD_LOG_ERROR, "cannot open the store", "error", msg, NULL);
        goto out;
    }
    struct smd_api_opts ao = {.token = token};
    const char *v;
    uint64_t u;
    if ((v = smd_config_get(d.cfg, "http.max_body")) && smd_parse_size(v, &u) == 0)
        ao.max_body = (size_t)u;
    if ((v = smd_config_get(d.cfg, "http.sse_queue"))) ao.sse_queue = strtoul(v, NULL, 10);
    if ((v = smd_config_get(d.cfg, "http.sse_heartbeat")) && sm_parse_duration_ms(v, &u) == 0)
        ao.sse_heartbeat_ms = u;
    ao.storage = smd_config_get(d.cfg, "storage");
    d.api = smd_api_new(d.store, &ao);
    if (!d.api) {
        smd_log(SMD_LOG_ERROR, "out of memory", NULL);
        goto out;
    }
    if (start_http(&d, err, sizeof err) < 0) {
        smd_config_annotate(d.cfg, err, msg, sizeof msg);
        smd_log(SMD_LOG_ERROR, "cannot start the HTTP API", "error", msg, NULL);
        goto out;
    }
    ev_signal_init(&d.sigterm, on_term, SIGTERM);
    ev_signal_init(&d.sigint, on_term, SIGINT);
    ev_signal_init(&d.sighup, on_hup, SIGHUP);
    d.sigterm.data = d.sigint.data = d.sighup.data = &d;
    ev_signal_start(d.loop, &d.sigterm);
    ev_signal_start(d.loop, &d.sigint);
    ev_signal_start(d.loop, &d.sighup);
    smd_log(SMD_LOG_INFO, "started", "node", sm_store_node_id(d.store), "storage",
            ao.storage ? ao.storage : "local", "version", sm_version(), NULL);
    ev_run(d.loop, 0);
    rc = 0;
out:
    if (d.store || d.http) stop(&d, "exit");
    smd_api_delete(d.api);
    free(d.unix_path);
    if (token) {
        sodium_memzero(token, strlen(token));
        free(token);
    }
    sm_config_delete(sc);
    smd_config_delete(d.cfg);
    return rc;
}
