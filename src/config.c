/* config.c: store configuration as dotted string options plus prefix routes. */
#include "config.h"

#include "backend.h"

#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct opt {
    char *key;
    char *value;
};
struct route {
    char *prefix;
    char *backend;
};
struct sm_config {
    struct opt *opts;
    size_t nopts, copts;
    struct route *routes;
    size_t nroutes, croutes;
};

char *sm_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void wipe_free(char *s)
{
    if (!s) return;
    sodium_memzero(s, strlen(s));
    free(s);
}

SM_API struct sm_config *sm_config_new(void)
{
    return calloc(1, sizeof(struct sm_config));
}

SM_API void sm_config_delete(struct sm_config *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->nopts; i++) {
        free(cfg->opts[i].key);
        wipe_free(cfg->opts[i].value); /* passwords, keyring paths… */
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].prefix);
        free(cfg->routes[i].backend);
    }
    free(cfg->opts);
    free(cfg->routes);
    free(cfg);
}

SM_API int sm_config_set(struct sm_config *cfg, const char *key, const char *value)
{
    if (!cfg || !key || !*key || !value) return SM_EINVAL;
    char *v = dupstr(value);
    if (!v) return SM_ENOMEM;
    for (size_t i = 0; i < cfg->nopts; i++) {
        if (strcmp(cfg->opts[i].key, key) == 0) {
            wipe_free(cfg->opts[i].value);
            cfg->opts[i].value = v;
            return 0;
        }
    }
    if (cfg->nopts == cfg->copts) {
        size_t nc = cfg->copts ? cfg->copts * 2 : 16;
        struct opt *no = realloc(cfg->opts, nc * sizeof *no);
        if (!no) goto err;
        cfg->opts = no;
        cfg->copts = nc;
    }
    char *k = dupstr(key);
    if (!k) goto err;
    cfg->opts[cfg->nopts].key = k;
    cfg->opts[cfg->nopts].value = v;
    cfg->nopts++;
    return 0;
err:
    wipe_free(v);
    return SM_ENOMEM;
}

SM_API const char *sm_config_get(const struct sm_config *cfg, const char *key)
{
    if (!cfg || !key) return NULL;
    for (size_t i = 0; i < cfg->nopts; i++)
        if (strcmp(cfg->opts[i].key, key) == 0) return cfg->opts[i].value;
    return NULL;
}

SM_API int sm_config_route(struct sm_config *cfg, const char *prefix, const char *backend)
{
    if (!cfg || !prefix || !backend || !*backend) return SM_EINVAL;
    if (cfg->nroutes == cfg->croutes) {
        size_t nc = cfg->croutes ? cfg->croutes * 2 : 4;
        struct route *nr = realloc(cfg->routes, nc * sizeof *nr);
        if (!nr) return SM_ENOMEM;
        cfg->routes = nr;
        cfg->croutes = nc;
    }
    char *p = dupstr(prefix), *b = dupstr(backend);
    if (!p || !b) {
        free(p);
        free(b);
        return SM_ENOMEM;
    }
    cfg->routes[cfg->nroutes].prefix = p;
    cfg->routes[cfg->nroutes].backend = b;
    cfg->nroutes++;
    return 0;
}

size_t sm_cfg_nroutes(const struct sm_config *cfg)
{
    return cfg->nroutes;
}

void sm_cfg_route_at(const struct sm_config *cfg, size_t i, const char **prefix,
                     const char **backend)
{
    *prefix = cfg->routes[i].prefix;
    *backend = cfg->routes[i].backend;
}

int sm_cfg_foreach(const struct sm_config *cfg, const char *prefix,
                   int (*fn)(const char *key, const char *value, void *arg), void *arg)
{
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < cfg->nopts; i++) {
        if (strncmp(cfg->opts[i].key, prefix, plen) != 0) continue;
        int rc = fn(cfg->opts[i].key, cfg->opts[i].value, arg);
        if (rc) return rc;
    }
    return 0;
}

const char *sm_cfg_str(const struct sm_config *cfg, const char *key, const char *def)
{
    const char *v = sm_config_get(cfg, key);
    return v ? v : def;
}

int sm_cfg_u64(const struct sm_config *cfg, const char *key, uint64_t def, uint64_t *out, char *err,
               size_t errlen)
{
    const char *v = sm_config_get(cfg, key);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || end == v || *end || *v == '-') {
        if (err) snprintf(err, errlen, "option %s: '%s' is not a non-negative integer", key, v);
        return SM_ECONFIG;
    }
    *out = n;
    return 0;
}

int sm_parse_duration_ms(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-') return SM_EINVAL;
    char *end;
    errno = 0;
    double n = strtod(s, &end);
    if (errno || end == s || n < 0) return SM_EINVAL;
    double mult;
    if (!*end || strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else if (strcmp(end, "d") == 0)
        mult = 86400000;
    else if (strcmp(end, "us") == 0)
        mult = 0.001;
    else
        return SM_EINVAL;
    double ms = n * mult;
    if (ms > 9.0e15) return SM_ERANGE;
    *out = (uint64_t)(ms + 0.5);
    return 0;
}

int sm_cfg_ms(const struct sm_config *cfg, const char *key, uint64_t def, uint64_t *out, char *err,
              size_t errlen)
{
    const char *v = sm_config_get(cfg, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (sm_parse_duration_ms(v, out) != 0) {
        if (err)
            snprintf(err, errlen, "option %s: '%s' is not a duration (e.g. 250ms, 2s, 1m)", key, v);
        return SM_ECONFIG;
    }
    return 0;
}

uint64_t sm_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t sm_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t sm_mono_ms(void)
{
    return sm_mono_ns() / 1000000u;
}
