/* daemon_config.c: statemeshd configuration: YAML file + flags → store options, routes, daemon
 * settings. */
#include "config.h"

#include "daemon_config.h"

#include "backend.h"

#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* clang-format off */
const struct smd_opt_info smd_opt_table[] = {
    /* store front */
    {"node_id", "--node-id", SMD_T_ID, 0, 0, "this node's id (default: the host name)"},
    {"storage", "--storage", SMD_T_BACKEND, 0, 0, "default backend: local, mesh, redis or raft"},
    {"data_dir", "--data-dir", SMD_T_PATH, 0, 0, "directory for persistent state (created 0700)"},
    {"max_key", "--max-key", SMD_T_U64, 0, 0, "longest key in bytes (default 256)"},
    {"max_value", "--max-value", SMD_T_U64, 0, 0, "largest value in bytes (default 1024)"},
    {"watch_queue", "--watch-queue", SMD_T_U64, 0, 0, "events queued per watch (default 1024)"},
    /* daemon: HTTP API */
    {"http.listen", "--http", SMD_T_ADDR, 1, 0, "HTTP API address (default 127.0.0.1:8500)"},
    {"http.unix_socket", "--http-socket", SMD_T_PATH, 1, 0, "also serve the API on this unix socket"},
    {"http.token", NULL, SMD_T_STR, 1, 1, "bearer token required by write endpoints"},
    {"http.token_file", "--http-token-file", SMD_T_PATH, 1, 0, "read the bearer token from this file"},
    {"http.max_body", NULL, SMD_T_SIZE, 1, 0, "largest JSON body of typed endpoints (default 64k)"},
    {"http.sse_queue", NULL, SMD_T_U64, 1, 0, "events queued per SSE client (default 256)"},
    {"http.sse_heartbeat", NULL, SMD_T_DUR, 1, 0, "SSE keep-alive comment interval (default 15s)"},
    {"http.max_connections", NULL, SMD_T_U64, 1, 0, "concurrent HTTP connections (default 1024)"},
    /* daemon: logs */
    {"log.level", "--log-level", SMD_T_LEVEL, 1, 0, "debug, info, warn or error (default info)"},
    {"log.format", "--log-format", SMD_T_LOGFMT, 1, 0, "logfmt or json (default logfmt)"},
    /* local backend */
    {"local.sweep_interval", NULL, SMD_T_DUR, 0, 0, "how often expired records are collected"},
    {"local.tombstone_grace", NULL, SMD_T_DUR, 0, 0, "how long deletes are remembered"},
    /* mesh backend */
    {"mesh.bind", "--bind", SMD_T_ADDR, 0, 0, "gossip UDP address (default 127.0.0.1:7946)"},
    {"mesh.advertise", "--advertise", SMD_T_ADDR, 0, 0, "address peers use to reach this node"},
    {"mesh.join", "--join", SMD_T_ADDRLIST, 0, 0, "seed addresses (comma list)"},
    {"mesh.ca", "--ca", SMD_T_PATH, 0, 0, "cluster CA public key file (ca.pub)"},
    {"mesh.cert", "--cert", SMD_T_PATH, 0, 0, "this node's certificate file"},
    {"mesh.key", "--key", SMD_T_PATH, 0, 0, "this node's secret key file"},
    {"mesh.keyring", "--keyring", SMD_T_PATH, 0, 0, "cluster encryption keyring file"},
    {"mesh.revocations", "--revocations", SMD_T_PATH, 0, 0, "revocation list file"},
    {"mesh.insecure", NULL, SMD_T_BOOL, 0, 0, "run without certificates (tests only)"},
    {"mesh.seed", NULL, SMD_T_U64, 0, 0, "PRNG seed of the gossip core (0: random)"},
    {"mesh.gossip_interval", "--gossip-interval", SMD_T_DUR, 0, 0, "gossip round interval"},
    {"mesh.probe_interval", "--probe-interval", SMD_T_DUR, 0, 0, "failure-detector probe interval"},
    {"mesh.probe_timeout", NULL, SMD_T_DUR, 0, 0, "failure-detector probe timeout"},
    {"mesh.indirect_k", NULL, SMD_T_U64, 0, 0, "peers asked for an indirect probe"},
    {"mesh.suspicion_mult", NULL, SMD_T_U64, 0, 0, "suspicion timeout multiplier"},
    {"mesh.ae_interval", NULL, SMD_T_DUR, 0, 0, "anti-entropy push-pull interval"},
    {"mesh.reap_timeout", NULL, SMD_T_DUR, 0, 0, "how long dead members are remembered"},
    {"mesh.active_view", NULL, SMD_T_U64, 0, 0, "eager-push (broadcast tree) peers"},
    {"mesh.mtu", NULL, SMD_T_U64, 0, 0, "largest datagram in bytes (default 1400)"},
    {"mesh.retransmit_mult", NULL, SMD_T_U64, 0, 0, "piggyback retransmissions multiplier"},
    {"mesh.sweep_interval", NULL, SMD_T_DUR, 0, 0, "how often expired records are collected"},
    {"mesh.tombstone_grace", NULL, SMD_T_DUR, 0, 0, "how long deletes are remembered"},
    {"mesh.dead_probe_interval", NULL, SMD_T_DUR, 0, 0, "how often dead members are re-probed"},
    {"mesh.rejoin_interval", NULL, SMD_T_DUR, 0, 0, "how often seeds are retried when alone"},
    /* redis backend */
    {"redis.addr", "--redis-addr", SMD_T_STR, 0, 0, "HOST:PORT or unix socket path"},
    {"redis.password", NULL, SMD_T_STR, 0, 1, "AUTH password"},
    {"redis.db", "--redis-db", SMD_T_U64, 0, 0, "database number (SELECT)"},
    {"redis.prefix", "--redis-prefix", SMD_T_STR, 0, 0, "key prefix for isolation"},
    {"redis.connect_timeout", NULL, SMD_T_DUR, 0, 0, "connect timeout"},
    {"redis.command_timeout", NULL, SMD_T_DUR, 0, 0, "command timeout"},
    {"redis.reconnect_min", NULL, SMD_T_DUR, 0, 0, "first reconnect delay"},
    {"redis.reconnect_max", NULL, SMD_T_DUR, 0, 0, "longest reconnect delay"},
    /* raft backend */
    {"raft.id", "--raft-id", SMD_T_U64, 0, 0, "this server's raft id (a number > 0)"},
    {"raft.bind", "--raft-bind", SMD_T_ADDR, 0, 0, "raft TCP address"},
    {"raft.advertise", "--raft-advertise", SMD_T_ADDR, 0, 0, "raft address peers use"},
    {"raft.peers", "--raft-peers", SMD_T_STR, 0, 0, "bootstrap voters: ID=HOST:PORT,..."},
    {"raft.join", "--raft-join", SMD_T_BOOL, 0, 0, "start empty and wait to be added"},
    {"raft.data_dir", NULL, SMD_T_PATH, 0, 0, "raft log and snapshots (default DATA_DIR/raft)"},
    {"raft.election_timeout", NULL, SMD_T_DUR, 0, 0, "election timeout"},
    {"raft.heartbeat", NULL, SMD_T_DUR, 0, 0, "heartbeat interval"},
    {"raft.heartbeat_timeout", NULL, SMD_T_DUR, 0, 0, "heartbeat timeout"},
    {"raft.snapshot_threshold", NULL, SMD_T_U64, 0, 0, "entries between snapshots"},
    {"raft.snapshot_trailing", NULL, SMD_T_U64, 0, 0, "entries kept after a snapshot"},
    {"raft.linearizable", NULL, SMD_T_BOOL, 0, 0, "linearizable reads (default true)"},
    {"raft.timeout", NULL, SMD_T_DUR, 0, 0, "operation timeout"},
    {"raft.restore", NULL, SMD_T_PATH, 0, 0, "restore from a 'statemesh backup' file"},
    {"raft.ca", NULL, SMD_T_PATH, 0, 0, "CA public key for raft peers (default mesh.ca)"},
    {"raft.cert", NULL, SMD_T_PATH, 0, 0, "certificate for raft (default mesh.cert)"},
    {"raft.key", NULL, SMD_T_PATH, 0, 0, "secret key for raft (default mesh.key)"},
    {"raft.insecure", NULL, SMD_T_BOOL, 0, 0, "unauthenticated raft transport (tests only)"},
    {NULL, NULL, 0, 0, 0, NULL},
};
/* clang-format on */

/* Every section's options are known here, so a typo fails --check-config
 * with FILE:LINE; the backends check the same names again when they open. */

struct opt {
    char *key, *value, *where;
    int secret;
};
struct route {
    char *prefix, *backend, *where;
    int from_flag;
};
struct smd_config {
    struct opt *opts;
    size_t nopts, copts;
    struct route *routes;
    size_t nroutes, croutes;
};

static char *xstrdup(const char *s)
{
    return s ? sm_strdup(s) : NULL;
}

static void wipe_free(char *s)
{
    if (!s) return;
    sodium_memzero(s, strlen(s));
    free(s);
}

static const struct smd_opt_info *find_info(const char *key)
{
    for (const struct smd_opt_info *i = smd_opt_table; i->key; i++)
        if (strcmp(i->key, key) == 0) return i;
    return NULL;
}

struct smd_config *smd_config_new(void)
{
    return calloc(1, sizeof(struct smd_config));
}

static void route_free(struct route *r)
{
    free(r->prefix);
    free(r->backend);
    free(r->where);
}

void smd_config_delete(struct smd_config *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->nopts; i++) {
        free(c->opts[i].key);
        wipe_free(c->opts[i].value); /* tokens, passwords */
        free(c->opts[i].where);
    }
    for (size_t i = 0; i < c->nroutes; i++) route_free(&c->routes[i]);
    free(c->opts);
    free(c->routes);
    free(c);
}

int smd_config_set(struct smd_config *c, const char *key, const char *value, const char *where)
{
    if (!c || !key || !*key || !value) return SM_EINVAL;
    char *v = xstrdup(value), *w = xstrdup(where ? where : "");
    if (!v || !w) goto oom;
    for (size_t i = 0; i < c->nopts; i++) {
        if (strcmp(c->opts[i].key, key) == 0) {
            wipe_free(c->opts[i].value);
            free(c->opts[i].where);
            c->opts[i].value = v;
            c->opts[i].where = w;
            return 0;
        }
    }
    if (c->nopts == c->copts) {
        size_t nc = c->copts ? c->copts * 2 : 32;
        struct opt *no = realloc(c->opts, nc * sizeof *no);
        if (!no) goto oom;
        c->opts = no;
        c->copts = nc;
    }
    char *k = xstrdup(key);
    if (!k) goto oom;
    const struct smd_opt_info *info = find_info(key);
    c->opts[c->nopts++] = (struct opt){k, v, w, info ? info->secret : 0};
    return 0;
oom:
    wipe_free(v);
    free(w);
    return SM_ENOMEM;
}

static const struct opt *find_opt(const struct smd_config *c, const char *key)
{
    for (size_t i = 0; i < c->nopts; i++)
        if (strcmp(c->opts[i].key, key) == 0) return &c->opts[i];
    return NULL;
}

const char *smd_config_get(const struct smd_config *c, const char *key)
{
    const struct opt *o = c ? find_opt(c, key) : NULL;
    return o ? o->value : NULL;
}

const char *smd_config_where(const struct smd_config *c, const char *key)
{
    const struct opt *o = c ? find_opt(c, key) : NULL;
    return o ? o->where : NULL;
}

int smd_config_add_route(struct smd_config *c, const char *prefix, const char *backend,
                         const char *where)
{
    if (!c || !prefix || !backend) return SM_EINVAL;
    int from_flag = where && where[0] == '-';
    if (from_flag) {
        /* the first route given by a flag replaces the file's routes */
        size_t keep = 0;
        for (size_t i = 0; i < c->nroutes; i++) {
            if (c->routes[i].from_flag)
                c->routes[keep++] = c->routes[i];
            else
                route_free(&c->routes[i]);
        }
        c->nroutes = keep;
    }
    if (c->nroutes == c->croutes) {
        size_t nc = c->croutes ? c->croutes * 2 : 4;
        struct route *nr = realloc(c->routes, nc * sizeof *nr);
        if (!nr) return SM_ENOMEM;
        c->routes = nr;
        c->croutes = nc;
    }
    struct route r = {xstrdup(prefix), xstrdup(backend), xstrdup(where ? where : ""), from_flag};
    if (!r.prefix || !r.backend || !r.where) {
        route_free(&r);
        return SM_ENOMEM;
    }
    c->routes[c->nroutes++] = r;
    return 0;
}

size_t smd_config_nroutes(const struct smd_config *c)
{
    return c->nroutes;
}

void smd_config_route(const struct smd_config *c, size_t i, const char **prefix,
                      const char **backend, const char **where)
{
    if (prefix) *prefix = c->routes[i].prefix;
    if (backend) *backend = c->routes[i].backend;
    if (where) *where = c->routes[i].where;
}

/* ---- value parsers ---- */

int smd_parse_size(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s)) return SM_EINVAL;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(s, &end, 10);
    if (errno) return SM_EINVAL;
    uint64_t mult = 1;
    if (*end) {
        char u = (char)tolower((unsigned char)*end++);
        if (u == 'k')
            mult = 1024;
        else if (u == 'm')
            mult = 1024 * 1024;
        else if (u == 'g')
            mult = 1024ull * 1024 * 1024;
        else
            return SM_EINVAL;
        if (*end == 'b' || *end == 'B' || (*end == 'i' && (end[1] == 'B' || end[1] == 'b')))
            end += *end == 'i' ? 2 : 1;
        if (*end) return SM_EINVAL;
    }
    if (n > UINT64_MAX / mult) return SM_EINVAL;
    *out = n * mult;
    return 0;
}

int smd_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1", NULL};
    static const char *const no[] = {"false", "no", "off", "0", NULL};
    if (!s) return SM_EINVAL;
    for (int i = 0; yes[i]; i++)
        if (strcasecmp(s, yes[i]) == 0) return *out = 1, 0;
    for (int i = 0; no[i]; i++)
        if (strcasecmp(s, no[i]) == 0) return *out = 0, 0;
    return SM_EINVAL;
}

int smd_parse_hostport(const char *s, char *host, size_t hostlen, unsigned *port)
{
    if (!s || !*s) return SM_EINVAL;
    const char *h = s, *colon;
    size_t hl;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') return SM_EINVAL;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return SM_EINVAL;
        hl = (size_t)(colon - s);
        if (memchr(s, ':', hl)) return SM_EINVAL; /* bare IPv6 needs brackets */
    }
    if (hl >= hostlen) return SM_EINVAL;
    const char *p = colon + 1;
    if (!*p) return SM_EINVAL;
    unsigned long v = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p)) return SM_EINVAL;
        v = v * 10 + (unsigned)(*p - '0');
        if (v > 65535) return SM_EINVAL;
    }
    for (size_t i = 0; i < hl; i++)
        if (isspace((unsigned char)h[i])) return SM_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (unsigned)v;
    return 0;
}

static int is_backend(const char *s)
{
    return strcmp(s, "local") == 0 || strcmp(s, "mesh") == 0 || strcmp(s, "redis") == 0 ||
           strcmp(s, "raft") == 0;
}

static const char *type_hint(enum smd_opt_type t)
{
    switch (t) {
    case SMD_T_STR:
        return "a non-empty string";
    case SMD_T_ID:
        return "1..64 bytes without spaces";
    case SMD_T_U64:
        return "an unsigned integer";
    case SMD_T_SIZE:
        return "a size such as 1024, 64k or 2m";
    case SMD_T_DUR:
        return "a duration such as 250ms, 2s or 1m";
    case SMD_T_BOOL:
        return "true or false";
    case SMD_T_ADDR:
        return "HOST:PORT";
    case SMD_T_ADDRLIST:
        return "HOST:PORT[,HOST:PORT…]";
    case SMD_T_PATH:
        return "a path";
    case SMD_T_BACKEND:
        return "one of local, mesh, redis, raft";
    case SMD_T_LEVEL:
        return "one of debug, info, warn, error";
    case SMD_T_LOGFMT:
        return "logfmt or json";
    }
    return "?";
}

static int check_value(enum smd_opt_type t, const char *v)
{
    char host[256];
    unsigned port;
    uint64_t u;
    int b;
    switch (t) {
    case SMD_T_STR:
    case SMD_T_PATH:
        return *v ? 0 : -1;
    case SMD_T_ID: {
        size_t n = strlen(v);
        if (n == 0 || n > SM_MAX_NODE_ID) return -1;
        for (const char *p = v; *p; p++)
            if ((unsigned char)*p <= ' ' || *p == 0x7f) return -1;
        return 0;
    }
    case SMD_T_U64: {
        if (!isdigit((unsigned char)*v)) return -1;
        errno = 0;
        char *end;
        (void)strtoull(v, &end, 10);
        return errno || *end ? -1 : 0;
    }
    case SMD_T_SIZE:
        return smd_parse_size(v, &u);
    case SMD_T_DUR:
        return isdigit((unsigned char)*v) ? sm_parse_duration_ms(v, &u) : -1;
    case SMD_T_BOOL:
        return smd_parse_bool(v, &b);
    case SMD_T_ADDR:
        return smd_parse_hostport(v, host, sizeof host, &port);
    case SMD_T_ADDRLIST: {
        if (!*v) return -1;
        const char *p = v;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            char one[300];
            if (n == 0 || n >= sizeof one) return -1;
            memcpy(one, p, n);
            one[n] = '\0';
            if (smd_parse_hostport(one, host, sizeof host, &port) < 0 || !*host) return -1;
            p += n;
            if (*p == ',') p++;
        }
        return 0;
    }
    case SMD_T_BACKEND:
        return is_backend(v) ? 0 : -1;
    case SMD_T_LEVEL:
        return strcasecmp(v, "debug") == 0 || strcasecmp(v, "info") == 0 ||
                       strcasecmp(v, "warn") == 0 || strcasecmp(v, "warning") == 0 ||
                       strcasecmp(v, "error") == 0
                   ? 0
                   : -1;
    case SMD_T_LOGFMT:
        return strcasecmp(v, "logfmt") == 0 || strcasecmp(v, "json") == 0 ? 0 : -1;
    }
    return -1;
}

static const char *where_prefix(const char *where, char *buf, size_t len)
{
    if (!where || !*where) return "";
    snprintf(buf, len, "%s: ", where);
    return buf;
}

int smd_config_validate(const struct smd_config *c, char *err, size_t errlen)
{
    char wb[512];
    for (size_t i = 0; i < c->nopts; i++) {
        const struct opt *o = &c->opts[i];
        const struct smd_opt_info *info = find_info(o->key);
        const char *wp = where_prefix(o->where, wb, sizeof wb);
        if (!info) {
            snprintf(err, errlen, "%sunknown option '%s' (see docs/config.md)", wp, o->key);
            return SM_ECONFIG;
        }
        if (check_value(info->type, o->value) != 0) {
            if (info->secret)
                snprintf(err, errlen, "%soption %s: must be %s", wp, o->key, type_hint(info->type));
            else
                snprintf(err, errlen, "%soption %s: '%s' is not %s", wp, o->key, o->value,
                         type_hint(info->type));
            return SM_ECONFIG;
        }
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct route *r = &c->routes[i];
        const char *wp = where_prefix(r->where, wb, sizeof wb);
        if (!*r->prefix) {
            snprintf(err, errlen, "%sroutes: prefix must not be empty", wp);
            return SM_ECONFIG;
        }
        if (!is_backend(r->backend)) {
            snprintf(err, errlen, "%sroutes: backend '%s' is not one of local, mesh, redis, raft",
                     wp, r->backend);
            return SM_ECONFIG;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->routes[j].prefix, r->prefix) == 0) {
                snprintf(err, errlen, "%sroutes: prefix '%s' is routed twice", wp, r->prefix);
                return SM_ECONFIG;
            }
        }
    }
    if (smd_config_get(c, "http.token") && smd_config_get(c, "http.token_file")) {
        snprintf(err, errlen, "%soption http.token_file: http.token is set as well; keep one",
                 where_prefix(smd_config_where(c, "http.token_file"), wb, sizeof wb));
        return SM_ECONFIG;
    }
    return 0;
}

int smd_config_to_store(const struct smd_config *c, struct sm_config **out)
{
    struct sm_config *sc = sm_config_new();
    if (!sc) return SM_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < c->nopts && rc == 0; i++) {
        const struct smd_opt_info *info = find_info(c->opts[i].key);
        if (info && info->daemon) continue;
        rc = sm_config_set(sc, c->opts[i].key, c->opts[i].value);
    }
    for (size_t i = 0; i < c->nroutes && rc == 0; i++)
        rc = sm_config_route(sc, c->routes[i].prefix, c->routes[i].backend);
    if (rc < 0) {
        sm_config_delete(sc);
        return rc;
    }
    *out = sc;
    return 0;
}

void smd_config_annotate(const struct smd_config *c, const char *msg, char *out, size_t outlen)
{
    /* find the longest option name the message mentions as a whole word */
    const struct opt *best = NULL;
    size_t bestlen = 0;
    for (size_t i = 0; i < c->nopts; i++) {
        const char *k = c->opts[i].key;
        size_t kl = strlen(k);
        for (const char *p = strstr(msg, k); p; p = strstr(p + 1, k)) {
            int before =
                p == msg || !(isalnum((unsigned char)p[-1]) || p[-1] == '_' || p[-1] == '.');
            int after = !(isalnum((unsigned char)p[kl]) || p[kl] == '_' || p[kl] == '.');
            if (before && after && kl > bestlen) {
                best = &c->opts[i];
                bestlen = kl;
            }
        }
    }
    if (best && best->where && *best->where)
        snprintf(out, outlen, "%s: %s", best->where, msg);
    else
        snprintf(out, outlen, "%s", msg);
}

/* ---- YAML ---- */

struct yctx {
    struct smd_config *c;
    yaml_document_t *doc;
    const char *name;
    char *err;
    size_t errlen;
};

static int yerr(struct yctx *y, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int yerr(struct yctx *y, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(y->err, y->errlen, "%s:%lu: %s", y->name,
             n ? (unsigned long)n->start_mark.line + 1 : 1, msg);
    return SM_ECONFIG;
}

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static int set_at(struct yctx *y, const yaml_node_t *n, const char *key, const char *value)
{
    const char *prev = smd_config_where(y->c, key);
    if (prev) {
        char msg[300];
        snprintf(msg, sizeof msg, "option %s: duplicate (first set at %s)", key, prev);
        return yerr(y, n, "%s", msg);
    }
    char where[300];
    snprintf(where, sizeof where, "%s:%lu", y->name, (unsigned long)n->start_mark.line + 1);
    return smd_config_set(y->c, key, value, where);
}

static int load_routes(struct yctx *y, const yaml_node_t *seq)
{
    if (seq->type == YAML_SCALAR_NODE && scalar(seq)[0] == '\0') return 0; /* routes: (empty) */
    if (seq->type != YAML_SEQUENCE_NODE)
        return yerr(y, seq, "routes: must be a list of {prefix: P, backend: B}");
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        yaml_node_t *m = yaml_document_get_node(y->doc, *it);
        if (!m || m->type != YAML_MAPPING_NODE)
            return yerr(y, m ? m : seq, "routes: each item must be {prefix: P, backend: B}");
        const char *prefix = NULL, *backend = NULL;
        for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
            yaml_node_t *v = yaml_document_get_node(y->doc, p->value);
            if (!k || !v || k->type != YAML_SCALAR_NODE || v->type != YAML_SCALAR_NODE)
                return yerr(y, k ? k : m, "routes: prefix and backend must be plain values");
            if (strcmp(scalar(k), "prefix") == 0)
                prefix = scalar(v);
            else if (strcmp(scalar(k), "backend") == 0)
                backend = scalar(v);
            else
                return yerr(y, k, "routes: unknown field '%s' (expected prefix, backend)",
                            scalar(k));
        }
        if (!prefix || !backend)
            return yerr(y, m, "routes: each item needs both prefix and backend");
        char where[300];
        snprintf(where, sizeof where, "%s:%lu", y->name, (unsigned long)m->start_mark.line + 1);
        int rc = smd_config_add_route(y->c, prefix, backend, where);
        if (rc < 0) return rc;
    }
    return 0;
}

static int load_mapping(struct yctx *y, const yaml_node_t *map, const char *prefix, int depth)
{
    if (depth > 4) return yerr(y, map, "nesting too deep");
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(y->doc, p->value);
        if (!k || !v) return yerr(y, map, "malformed mapping");
        if (k->type != YAML_SCALAR_NODE || !*scalar(k))
            return yerr(y, k, "option names must be plain words");
        char key[256];
        if ((size_t)snprintf(key, sizeof key, "%s%s", prefix, scalar(k)) >= sizeof key)
            return yerr(y, k, "option name too long");
        if (depth == 0 && strcmp(key, "routes") == 0) {
            int rc = load_routes(y, v);
            if (rc < 0) return rc;
            continue;
        }
        int rc = 0;
        if (v->type == YAML_MAPPING_NODE) {
            size_t kl = strlen(key);
            if (kl + 2 > sizeof key) return yerr(y, k, "option name too long");
            key[kl] = '.';
            key[kl + 1] = '\0';
            rc = load_mapping(y, v, key, depth + 1);
        } else if (v->type == YAML_SEQUENCE_NODE) {
            /* a list of plain values becomes a comma list (mesh.join, raft.peers) */
            size_t cap = 256, len = 0;
            char *buf = malloc(cap);
            if (!buf) return SM_ENOMEM;
            buf[0] = '\0';
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++) {
                yaml_node_t *e = yaml_document_get_node(y->doc, *it);
                if (!e || e->type != YAML_SCALAR_NODE || strchr(scalar(e), ',')) {
                    free(buf);
                    return yerr(y, e ? e : v, "option %s: list items must be plain values", key);
                }
                size_t el = strlen(scalar(e));
                if (len + el + 2 > cap) {
                    cap = (len + el + 2) * 2;
                    char *nb = realloc(buf, cap);
                    if (!nb) {
                        free(buf);
                        return SM_ENOMEM;
                    }
                    buf = nb;
                }
                if (len) buf[len++] = ',';
                memcpy(buf + len, scalar(e), el + 1);
                len += el;
            }
            if (len == 0) {
                free(buf);
                return yerr(y, v, "option %s: empty list", key);
            }
            rc = set_at(y, k, key, buf);
            free(buf);
        } else {
            const char *val = scalar(v);
            int plain = v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
            if (plain && (!*val || strcmp(val, "~") == 0 || strcmp(val, "null") == 0))
                continue; /* "advertise:" with no value: leave unset */
            if (depth == 0 && strcmp(key, "http") == 0)
                rc = set_at(y, k, "http.listen", val); /* shorthand http: HOST:PORT */
            else if (depth == 0 && strcmp(key, "log") == 0)
                rc = set_at(y, k, "log.level", val); /* shorthand log: LEVEL */
            else
                rc = set_at(y, k, key, val);
        }
        if (rc < 0) return rc;
    }
    return 0;
}

int smd_config_load_string(struct smd_config *c, const char *name, const char *yamltext, size_t len,
                           char *err, size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return SM_ENOMEM;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yamltext, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        unsigned long line = (unsigned long)parser.problem_mark.line + 1;
        if (parser.error == YAML_MEMORY_ERROR) {
            rc = SM_ENOMEM;
        } else {
            if (parser.context)
                snprintf(err, errlen, "%s:%lu: YAML error: %s %s", name, line, parser.problem,
                         parser.context);
            else
                snprintf(err, errlen, "%s:%lu: YAML error: %s", name, line,
                         parser.problem ? parser.problem : "syntax error");
            rc = SM_ECONFIG;
        }
        yaml_parser_delete(&parser);
        return rc;
    }
    struct yctx y = {c, &doc, name, err, errlen};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) {
        if (root->type == YAML_MAPPING_NODE)
            rc = load_mapping(&y, root, "", 0);
        else if (!(root->type == YAML_SCALAR_NODE && !*scalar(root)))
            rc = yerr(&y, root, "the top level must be a mapping of options");
    }
    /* a second document is almost certainly a mistake */
    if (rc == 0) {
        yaml_document_t doc2;
        if (yaml_parser_load(&parser, &doc2)) {
            if (yaml_document_get_root_node(&doc2))
                rc = yerr(&y, yaml_document_get_root_node(&doc2),
                          "only one YAML document is allowed");
            yaml_document_delete(&doc2);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int smd_config_load_file(struct smd_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return SM_EIO;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int rc = 0;
    if (!buf) {
        rc = SM_ENOMEM;
        goto out;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= (16u << 20)) {
                snprintf(err, errlen, "%s: file too large", path);
                rc = SM_ECONFIG;
                goto out;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = SM_ENOMEM;
                goto out;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
        rc = SM_EIO;
        goto out;
    }
    rc = smd_config_load_string(c, path, buf, len, err, errlen);
out:
    if (buf) sodium_memzero(buf, len); /* the file may hold a token or password */
    free(buf);
    fclose(f);
    return rc;
}
