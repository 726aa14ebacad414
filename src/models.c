/* models.c: the seed's typed models: msgpack and JSON codecs and their records.
 *
 * Each model is described once by a field table (name, type, offset), and the
 * msgpack encoder/decoder and the JSON converters walk that table, so the three
 * codecs cannot drift apart field by field. Decoders treat input as hostile:
 * every length is bounded before use, duplicates and wrong types are refused. */
#include "config.h"

#include "models.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>

#include "crdt/mpread.h"
#include "crdt/replica.h"
#include "statemesh.h"

/* ---- enums ---- */

static const char *const backend_names[] = {"unknown", "healthy", "unhealthy", "rate-limited",
                                            "maintenance"};
static const char *const circuit_names[] = {"closed", "open", "half-open"};

#define NELEM(a) (sizeof(a) / sizeof *(a))

/* Compare a word with a canonical name: case-insensitive, '_' matches '-'. */
static bool word_eq(const char *s, size_t len, const char *name)
{
    if (strlen(name) != len) return false;
    for (size_t i = 0; i < len; i++) {
        char c = (char)tolower((unsigned char)s[i]);
        if (c == '_') c = '-';
        if (c != name[i]) return false;
    }
    return true;
}

const char *sm_backend_state_name(enum sm_backend_state s)
{
    return (unsigned)s < NELEM(backend_names) ? backend_names[s] : NULL;
}

int sm_backend_state_parse(const char *s, size_t len, enum sm_backend_state *out)
{
    for (size_t i = 0; i < NELEM(backend_names); i++)
        if (word_eq(s, len, backend_names[i])) {
            *out = (enum sm_backend_state)i;
            return 0;
        }
    return SM_EINVAL;
}

const char *sm_circuit_state_name(enum sm_circuit_state s)
{
    return (unsigned)s < NELEM(circuit_names) ? circuit_names[s] : NULL;
}

int sm_circuit_state_parse(const char *s, size_t len, enum sm_circuit_state *out)
{
    for (size_t i = 0; i < NELEM(circuit_names); i++)
        if (word_eq(s, len, circuit_names[i])) {
            *out = (enum sm_circuit_state)i;
            return 0;
        }
    return SM_EINVAL;
}

/* ---- time ---- */

#define GO_ZERO_TIME_MS INT64_C(-62135596800000) /* 0001-01-01T00:00:00Z */
#define MAX_TIME_MS     INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */

bool sm_time_format(int64_t ms, char buf[32])
{
    if (ms == 0) ms = GO_ZERO_TIME_MS; /* unset: Go's zero time */
    if (ms < GO_ZERO_TIME_MS || ms > MAX_TIME_MS) return false;
    int64_t sec = ms / 1000, frac = ms % 1000;
    if (frac < 0) frac += 1000, sec -= 1;
    time_t t = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) return false;
    int n = snprintf(buf, 32, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (frac) {
        char f[8];
        snprintf(f, sizeof f, ".%03d", (int)frac);
        size_t fl = strlen(f);
        while (f[fl - 1] == '0') f[--fl] = '\0'; /* Go trims trailing zeros */
        memcpy(buf + n, f, fl + 1);
        n += (int)fl;
    }
    buf[n] = 'Z';
    buf[n + 1] = '\0';
    return true;
}

static bool digits(const char *s, size_t n, int *v)
{
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return false;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return true;
}

int sm_time_parse(const char *s, size_t len, int64_t *ms)
{
    int Y, M, D, h, m, sec;
    if (len < 20 || !digits(s, 4, &Y) || s[4] != '-' || !digits(s + 5, 2, &M) || s[7] != '-' ||
        !digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) ||
        s[13] != ':' || !digits(s + 14, 2, &m) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return SM_EINVAL;
    if (Y < 1 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 59)
        return SM_EINVAL;
    size_t i = 19;
    int64_t frac = 0;
    if (s[i] == '.') {
        size_t nd = 0;
        i++;
        while (i < len && isdigit((unsigned char)s[i])) {
            if (nd < 3) frac = frac * 10 + (s[i] - '0');
            nd++, i++;
        }
        if (nd == 0 || nd > 9) return SM_EINVAL;
        for (; nd < 3; nd++) frac *= 10;
    }
    int64_t off = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (!digits(s + i + 1, 2, &oh) || !digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return SM_EINVAL;
        off = (oh * 60 + om) * 60 * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return SM_EINVAL;
    }
    if (i != len) return SM_EINVAL;
    struct tm tm = {.tm_year = Y - 1900,
                    .tm_mon = M - 1,
                    .tm_mday = D,
                    .tm_hour = h,
                    .tm_min = m,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    if (tm.tm_mday != D || tm.tm_mon != M - 1) return SM_EINVAL; /* e.g. February 30 */
    int64_t v = ((int64_t)t - off) * 1000 + frac;
    if (v < GO_ZERO_TIME_MS || v > MAX_TIME_MS) return SM_EINVAL;
    *ms = v == GO_ZERO_TIME_MS ? 0 : v;
    return 0;
}

/* ---- load-balancer maps ---- */

void sm_lb_state_init(struct sm_lb_state *s)
{
    memset(s, 0, sizeof *s);
}

static void map_free(struct sm_lb_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) free(e[i].url);
    free(e);
}

void sm_lb_state_close(struct sm_lb_state *s)
{
    map_free(s->backend_states, s->n_backend_states);
    map_free(s->weighted_counters, s->n_weighted_counters);
    sm_lb_state_init(s);
}

static int map_set(struct sm_lb_entry **v, size_t *n, const char *url, size_t ulen, int64_t value)
{
    if (ulen == 0 || ulen > SM_MODEL_URL_MAX || memchr(url, '\0', ulen)) return SM_EINVAL;
    for (size_t i = 0; i < *n; i++)
        if (strlen((*v)[i].url) == ulen && memcmp((*v)[i].url, url, ulen) == 0) {
            (*v)[i].value = value;
            return 0;
        }
    if (*n >= SM_LB_MAX_ENTRIES) return SM_ERANGE;
    struct sm_lb_entry *nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) return SM_ENOMEM;
    *v = nv;
    char *u = malloc(ulen + 1);
    if (!u) return SM_ENOMEM;
    memcpy(u, url, ulen);
    u[ulen] = '\0';
    nv[(*n)++] = (struct sm_lb_entry){u, value};
    return 0;
}

static int64_t map_get(const struct sm_lb_entry *v, size_t n, const char *url, bool *found)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].url, url) == 0) {
            if (found) *found = true;
            return v[i].value;
        }
    if (found) *found = false;
    return 0;
}

int sm_lb_state_set_conn(struct sm_lb_state *s, const char *url, int64_t value)
{
    return map_set(&s->backend_states, &s->n_backend_states, url, strlen(url), value);
}

int sm_lb_state_set_weight(struct sm_lb_state *s, const char *url, int64_t value)
{
    return map_set(&s->weighted_counters, &s->n_weighted_counters, url, strlen(url), value);
}

int64_t sm_lb_state_conn(const struct sm_lb_state *s, const char *url, bool *found)
{
    return map_get(s->backend_states, s->n_backend_states, url, found);
}

int64_t sm_lb_state_weight(const struct sm_lb_state *s, const char *url, bool *found)
{
    return map_get(s->weighted_counters, s->n_weighted_counters, url, found);
}

/* ---- field tables ---- */

enum ftype { F_STR, F_I64, F_I32, F_TIME, F_HSTATE, F_CSTATE, F_MAP };

struct field {
    const char *name;
    enum ftype type;
    size_t off;
    size_t aux; /* F_STR: max length; F_MAP: offset of the entry count */
};

#define FLD(T, name, type, member, aux)                                                            \
    {                                                                                              \
        name, type, offsetof(T, member), aux                                                       \
    }

static const struct field health_fields[] = {
    FLD(struct sm_backend_health, "url", F_STR, url, SM_MODEL_URL_MAX),
    FLD(struct sm_backend_health, "state", F_HSTATE, state, 0),
    FLD(struct sm_backend_health, "last_check", F_TIME, last_check_ms, 0),
    FLD(struct sm_backend_health, "last_healthy", F_TIME, last_healthy_ms, 0),
    FLD(struct sm_backend_health, "consecutive_fails", F_I64, consecutive_fails, 0),
    FLD(struct sm_backend_health, "consecutive_oks", F_I64, consecutive_oks, 0),
    FLD(struct sm_backend_health, "rate_limit_count", F_I64, rate_limit_count, 0),
    FLD(struct sm_backend_health, "updated_by", F_STR, updated_by, SM_MODEL_NODE_MAX),
    FLD(struct sm_backend_health, "updated_at", F_TIME, updated_at_ms, 0),
    FLD(struct sm_backend_health, "version", F_I64, version, 0),
};

static const struct field circuit_fields[] = {
    FLD(struct sm_circuit_breaker, "backend_url", F_STR, backend_url, SM_MODEL_URL_MAX),
    FLD(struct sm_circuit_breaker, "state", F_CSTATE, state, 0),
    FLD(struct sm_circuit_breaker, "last_state_change", F_TIME, last_state_change_ms, 0),
    FLD(struct sm_circuit_breaker, "consecutive_fails", F_I32, consecutive_fails, 0),
    FLD(struct sm_circuit_breaker, "consecutive_success", F_I32, consecutive_success, 0),
    FLD(struct sm_circuit_breaker, "requests_in_half_open", F_I32, requests_in_half_open, 0),
    FLD(struct sm_circuit_breaker, "updated_by", F_STR, updated_by, SM_MODEL_NODE_MAX),
    FLD(struct sm_circuit_breaker, "updated_at", F_TIME, updated_at_ms, 0),
    FLD(struct sm_circuit_breaker, "version", F_I64, version, 0),
};

static const struct field lb_fields[] = {
    FLD(struct sm_lb_state, "strategy", F_STR, strategy, SM_MODEL_STRATEGY_MAX),
    FLD(struct sm_lb_state, "backend_states", F_MAP, backend_states,
        offsetof(struct sm_lb_state, n_backend_states)),
    FLD(struct sm_lb_state, "last_rotation", F_I32, last_rotation, 0),
    FLD(struct sm_lb_state, "weighted_counters", F_MAP, weighted_counters,
        offsetof(struct sm_lb_state, n_weighted_counters)),
    FLD(struct sm_lb_state, "updated_by", F_STR, updated_by, SM_MODEL_NODE_MAX),
    FLD(struct sm_lb_state, "updated_at", F_TIME, updated_at_ms, 0),
    FLD(struct sm_lb_state, "version", F_I64, version, 0),
};

struct model {
    const struct field *f;
    size_t n;
    size_t size;
};

static const struct model health_model = {health_fields, NELEM(health_fields),
                                          sizeof(struct sm_backend_health)};
static const struct model circuit_model = {circuit_fields, NELEM(circuit_fields),
                                           sizeof(struct sm_circuit_breaker)};
static const struct model lb_model = {lb_fields, NELEM(lb_fields), sizeof(struct sm_lb_state)};

#define AT(obj, fl, T)  ((T *)((char *)(obj) + (fl)->off))
#define CAT(obj, fl, T) ((const T *)((const char *)(obj) + (fl)->off))

static struct sm_lb_entry **map_ptr(void *obj, const struct field *f)
{
    return AT(obj, f, struct sm_lb_entry *);
}

static size_t *map_count(void *obj, const struct field *f)
{
    return (size_t *)((char *)obj + f->aux);
}

/* Free the maps of a model object (only the LB state has any). */
static void model_reset(const struct model *md, void *obj)
{
    for (size_t i = 0; i < md->n; i++)
        if (md->f[i].type == F_MAP) map_free(*map_ptr(obj, &md->f[i]), *map_count(obj, &md->f[i]));
    memset(obj, 0, md->size);
}

/* ---- msgpack encoding ---- */

struct bbuf {
    uint8_t *p;
    size_t cap, len;
};

static int bbuf_write(void *data, const char *buf, size_t len)
{
    struct bbuf *b = data;
    if (len > b->cap - b->len) return -1;
    memcpy(b->p + b->len, buf, len);
    b->len += len;
    return 0;
}

static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int model_encode(const struct model *md, const void *obj, uint8_t *buf, size_t cap,
                        size_t *len)
{
    struct bbuf b = {buf, cap, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, bbuf_write);
    if (msgpack_pack_map(&pk, md->n)) return SM_EVALUELEN;
    for (size_t i = 0; i < md->n; i++) {
        const struct field *f = &md->f[i];
        int rc = pack_str(&pk, f->name);
        switch (f->type) {
        case F_STR:
            rc = rc || pack_str(&pk, CAT(obj, f, char));
            break;
        case F_I64:
        case F_TIME:
            rc = rc || msgpack_pack_int64(&pk, *CAT(obj, f, int64_t));
            break;
        case F_I32:
            rc = rc || msgpack_pack_int32(&pk, *CAT(obj, f, int32_t));
            break;
        case F_HSTATE: {
            const char *nm = sm_backend_state_name(*CAT(obj, f, enum sm_backend_state));
            if (!nm) return SM_EINVAL;
            rc = rc || pack_str(&pk, nm);
            break;
        }
        case F_CSTATE: {
            const char *nm = sm_circuit_state_name(*CAT(obj, f, enum sm_circuit_state));
            if (!nm) return SM_EINVAL;
            rc = rc || pack_str(&pk, nm);
            break;
        }
        case F_MAP: {
            const struct sm_lb_entry *e = *CAT(obj, f, struct sm_lb_entry *);
            size_t n = *(const size_t *)((const char *)obj + f->aux);
            rc = rc || msgpack_pack_map(&pk, n);
            for (size_t j = 0; j < n && !rc; j++)
                rc = pack_str(&pk, e[j].url) || msgpack_pack_int64(&pk, e[j].value);
            break;
        }
        }
        if (rc) return SM_EVALUELEN;
    }
    *len = b.len;
    return 0;
}

int sm_health_encode(const struct sm_backend_health *s, uint8_t *buf, size_t cap, size_t *len)
{
    return model_encode(&health_model, s, buf, cap, len);
}

int sm_circuit_encode(const struct sm_circuit_breaker *s, uint8_t *buf, size_t cap, size_t *len)
{
    return model_encode(&circuit_model, s, buf, cap, len);
}

int sm_lb_state_encode(const struct sm_lb_state *s, uint8_t *buf, size_t cap, size_t *len)
{
    return model_encode(&lb_model, s, buf, cap, len);
}

/* ---- msgpack decoding ---- */

static int find_field(const struct model *md, const char *k, size_t kl)
{
    for (size_t i = 0; i < md->n; i++)
        if (strlen(md->f[i].name) == kl && memcmp(md->f[i].name, k, kl) == 0) return (int)i;
    return -1;
}

static int mp_field(struct crdt_mp *m, const struct field *f, void *obj)
{
    const char *s;
    uint32_t n;
    int64_t v;
    switch (f->type) {
    case F_STR:
        if (crdt_mp_str(m, &s, &n) || n > f->aux || memchr(s, '\0', n)) return SM_EINVAL;
        memcpy(AT(obj, f, char), s, n);
        AT(obj, f, char)[n] = '\0';
        return 0;
    case F_I64:
    case F_TIME:
        if (crdt_mp_int(m, &v)) return SM_EINVAL;
        *AT(obj, f, int64_t) = v;
        return 0;
    case F_I32:
        if (crdt_mp_int(m, &v) || v < INT32_MIN || v > INT32_MAX) return SM_EINVAL;
        *AT(obj, f, int32_t) = (int32_t)v;
        return 0;
    case F_HSTATE:
        if (crdt_mp_str(m, &s, &n)) return SM_EINVAL;
        return sm_backend_state_parse(s, n, AT(obj, f, enum sm_backend_state));
    case F_CSTATE:
        if (crdt_mp_str(m, &s, &n)) return SM_EINVAL;
        return sm_circuit_state_parse(s, n, AT(obj, f, enum sm_circuit_state));
    case F_MAP: {
        uint32_t pairs;
        if (crdt_mp_map(m, &pairs) || pairs > SM_LB_MAX_ENTRIES) return SM_EINVAL;
        struct sm_lb_entry **e = map_ptr(obj, f);
        size_t *cnt = map_count(obj, f);
        for (uint32_t i = 0; i < pairs; i++) {
            if (crdt_mp_str(m, &s, &n) || crdt_mp_int(m, &v)) return SM_EINVAL;
            size_t before = *cnt;
            int rc = map_set(e, cnt, s, n, v);
            if (rc) return rc;
            if (*cnt == before) return SM_EINVAL; /* duplicate URL */
        }
        return 0;
    }
    }
    return SM_EINVAL;
}

static int model_decode(const struct model *md, const uint8_t *buf, size_t len, void *obj)
{
    model_reset(md, obj);
    struct crdt_mp m;
    crdt_mp_init(&m, buf, len);
    uint32_t pairs, seen = 0;
    int rc = SM_EINVAL;
    if (crdt_mp_map(&m, &pairs)) goto err;
    for (uint32_t i = 0; i < pairs; i++) {
        const char *k;
        uint32_t kl;
        if (crdt_mp_str(&m, &k, &kl)) goto err;
        int fi = find_field(md, k, kl);
        if (fi < 0) { /* a field from a newer writer */
            if (crdt_mp_skip(&m)) goto err;
            continue;
        }
        if (seen & (1u << fi)) goto err; /* duplicate key */
        seen |= 1u << fi;
        rc = mp_field(&m, &md->f[fi], obj);
        if (rc) goto err;
        rc = SM_EINVAL;
    }
    if (crdt_mp_left(&m) != 0) goto err;
    return 0;
err:
    model_reset(md, obj);
    return rc == SM_ENOMEM ? SM_ENOMEM : SM_EINVAL;
}

int sm_health_decode(const uint8_t *buf, size_t len, struct sm_backend_health *out)
{
    return model_decode(&health_model, buf, len, out);
}

int sm_circuit_decode(const uint8_t *buf, size_t len, struct sm_circuit_breaker *out)
{
    return model_decode(&circuit_model, buf, len, out);
}

int sm_lb_state_decode(const uint8_t *buf, size_t len, struct sm_lb_state *out)
{
    return model_decode(&lb_model, buf, len, out);
}

/* ---- JSON ---- */

static json_t *time_json(int64_t ms)
{
    char b[32];
    return sm_time_format(ms, b) ? json_string(b) : json_integer(ms);
}

static json_t *model_to_json(const struct model *md, const void *obj)
{
    json_t *o = json_object();
    if (!o) return NULL;
    for (size_t i = 0; i < md->n; i++) {
        const struct field *f = &md->f[i];
        json_t *v = NULL;
        switch (f->type) {
        case F_STR:
            v = json_string(CAT(obj, f, char));
            break;
        case F_I64:
            v = json_integer(*CAT(obj, f, int64_t));
            break;
        case F_TIME:
            v = time_json(*CAT(obj, f, int64_t));
            break;
        case F_I32:
            v = json_integer(*CAT(obj, f, int32_t));
            break;
        case F_HSTATE: {
            const char *nm = sm_backend_state_name(*CAT(obj, f, enum sm_backend_state));
            v = json_string(nm ? nm : "unknown");
            break;
        }
        case F_CSTATE: {
            const char *nm = sm_circuit_state_name(*CAT(obj, f, enum sm_circuit_state));
            v = json_string(nm ? nm : "closed");
            break;
        }
        case F_MAP: {
            const struct sm_lb_entry *e = *CAT(obj, f, struct sm_lb_entry *);
            size_t n = *(const size_t *)((const char *)obj + f->aux);
            v = json_object();
            for (size_t j = 0; v && j < n; j++)
                if (json_object_set_new(v, e[j].url, json_integer(e[j].value)) < 0) {
                    json_decref(v);
                    v = NULL;
                }
            break;
        }
        }
        if (!v || json_object_set_new(o, f->name, v) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *sm_health_to_json(const struct sm_backend_health *s)
{
    return model_to_json(&health_model, s);
}

json_t *sm_circuit_to_json(const struct sm_circuit_breaker *s)
{
    return model_to_json(&circuit_model, s);
}

json_t *sm_lb_state_to_json(const struct sm_lb_state *s)
{
    return model_to_json(&lb_model, s);
}

static int errf(char *err, size_t cap, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return SM_EINVAL;
}

static int json_field(const struct field *f, json_t *v, void *obj, char *err, size_t cap)
{
    const char *nm = f->name;
    switch (f->type) {
    case F_STR: {
        if (!json_is_string(v)) return errf(err, cap, "field '%s': expected a string", nm);
        size_t n = json_string_length(v);
        const char *s = json_string_value(v);
        if (n > f->aux)
            return errf(err, cap, "field '%s': longer than %zu bytes", nm, (size_t)f->aux);
        if (memchr(s, '\0', n)) return errf(err, cap, "field '%s': contains a NUL byte", nm);
        memcpy(AT(obj, f, char), s, n + 1);
        return 0;
    }
    case F_I64:
    case F_I32: {
        if (!json_is_integer(v)) return errf(err, cap, "field '%s': expected an integer", nm);
        json_int_t x = json_integer_value(v);
        if (f->type == F_I32) {
            if (x < INT32_MIN || x > INT32_MAX)
                return errf(err, cap, "field '%s': out of the 32-bit range", nm);
            *AT(obj, f, int32_t) = (int32_t)x;
        } else {
            *AT(obj, f, int64_t) = (int64_t)x;
        }
        return 0;
    }
    case F_TIME:
        if (json_is_integer(v)) {
            *AT(obj, f, int64_t) = (int64_t)json_integer_value(v);
            return 0;
        }
        if (!json_is_string(v) ||
            sm_time_parse(json_string_value(v), json_string_length(v), AT(obj, f, int64_t)))
            return errf(err, cap, "field '%s': expected an RFC 3339 time or integer ms", nm);
        return 0;
    case F_HSTATE:
        if (!json_is_string(v) ||
            sm_backend_state_parse(json_string_value(v), json_string_length(v),
                                   AT(obj, f, enum sm_backend_state)))
            return errf(err, cap,
                        "field '%s': expected one of healthy, unhealthy, rate-limited, "
                        "maintenance, unknown",
                        nm);
        return 0;
    case F_CSTATE:
        if (!json_is_string(v) ||
            sm_circuit_state_parse(json_string_value(v), json_string_length(v),
                                   AT(obj, f, enum sm_circuit_state)))
            return errf(err, cap, "field '%s': expected one of closed, open, half-open", nm);
        return 0;
    case F_MAP: {
        if (json_is_null(v)) return 0; /* Go's nil map */
        if (!json_is_object(v)) return errf(err, cap, "field '%s': expected an object", nm);
        if (json_object_size(v) > SM_LB_MAX_ENTRIES)
            return errf(err, cap, "field '%s': more than %d entries", nm, SM_LB_MAX_ENTRIES);
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            if (!json_is_integer(x))
                return errf(err, cap, "field '%s': value of '%s' is not an integer", nm, k);
            int rc = map_set(map_ptr(obj, f), map_count(obj, f), k, strlen(k),
                             (int64_t)json_integer_value(x));
            if (rc == SM_ENOMEM) return rc;
            if (rc) return errf(err, cap, "field '%s': bad URL '%.40s'", nm, k);
        }
        return 0;
    }
    }
    return SM_EINVAL;
}

static int model_from_json(const struct model *md, const json_t *j, void *obj, char *err,
                           size_t cap)
{
    if (err && cap) err[0] = '\0';
    model_reset(md, obj);
    if (!json_is_object(j)) return errf(err, cap, "expected a JSON object");
    const char *k;
    json_t *v;
    int rc = 0;
    /* json_object_foreach wants a non-const object; it only reads it here */
    json_object_foreach((json_t *)j, k, v)
    {
        int fi = find_field(md, k, strlen(k));
        if (fi < 0) {
            rc = errf(err, cap, "unknown field '%.60s'", k);
            break;
        }
        rc = json_field(&md->f[fi], v, obj, err, cap);
        if (rc) break;
    }
    if (rc) model_reset(md, obj);
    return rc;
}

int sm_health_from_json(const json_t *j, struct sm_backend_health *out, char *err, size_t errcap)
{
    return model_from_json(&health_model, j, out, err, errcap);
}

int sm_circuit_from_json(const json_t *j, struct sm_circuit_breaker *out, char *err, size_t errcap)
{
    return model_from_json(&circuit_model, j, out, err, errcap);
}

int sm_lb_state_from_json(const json_t *j, struct sm_lb_state *out, char *err, size_t errcap)
{
    return model_from_json(&lb_model, j, out, err, errcap);
}

static char *dump(json_t *j)
{
    if (!j) return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    return s;
}

char *sm_health_to_json_str(const struct sm_backend_health *s)
{
    return dump(sm_health_to_json(s));
}

char *sm_circuit_to_json_str(const struct sm_circuit_breaker *s)
{
    return dump(sm_circuit_to_json(s));
}

char *sm_lb_state_to_json_str(const struct sm_lb_state *s)
{
    return dump(sm_lb_state_to_json(s));
}

static int from_str(const struct model *md, const char *txt, size_t len, void *obj, char *err,
                    size_t cap)
{
    json_error_t je;
    json_t *j = json_loadb(txt, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        model_reset(md, obj);
#if JANSSON_VERSION_HEX >= 0x020b00
        if (json_error_code(&je) == json_error_out_of_memory) return SM_ENOMEM;
#endif
        return errf(err, cap, "bad JSON at line %d column %d: %s", je.line, je.column, je.text);
    }
    int rc = model_from_json(md, j, obj, err, cap);
    json_decref(j);
    return rc;
}

int sm_health_from_json_str(const char *txt, size_t len, struct sm_backend_health *out, char *err,
                            size_t errcap)
{
    return from_str(&health_model, txt, len, out, err, errcap);
}

int sm_circuit_from_json_str(const char *txt, size_t len, struct sm_circuit_breaker *out, char *err,
                             size_t errcap)
{
    return from_str(&circuit_model, txt, len, out, err, errcap);
}

int sm_lb_state_from_json_str(const char *txt, size_t len, struct sm_lb_state *out, char *err,
                              size_t errcap)
{
    return from_str(&lb_model, txt, len, out, err, errcap);
}

/* ---- keys and records ---- */

static int make_key(char *buf, size_t cap, const char *prefix, const char *part)
{
    if (!part || !*part) return SM_EINVAL;
    size_t pl = strlen(prefix), n = strlen(part);
    if (pl + n > SM_DEFAULT_MAX_KEY || pl + n + 1 > cap) return SM_EKEYLEN;
    memcpy(buf, prefix, pl);
    memcpy(buf + pl, part, n + 1);
    return (int)(pl + n);
}

int sm_health_key(const char *url, char *buf, size_t cap)
{
    return make_key(buf, cap, CRDT_PREFIX_HEALTH, url);
}

int sm_circuit_key(const char *url, char *buf, size_t cap)
{
    return make_key(buf, cap, CRDT_PREFIX_CIRCUIT, url);
}

int sm_lb_state_key(const char *strategy, char *buf, size_t cap)
{
    return make_key(buf, cap, SM_LB_STATE_PREFIX, strategy);
}

int sm_lb_conn_key(const char *url, const char *node, char *buf, size_t cap)
{
    if (!url || !*url) return SM_EINVAL;
    return crdt_counter_key(buf, cap, CRDT_PREFIX_LB_CONN, url, node);
}

static int emit_model(const struct model *md, const void *obj, const char *key, int klen,
                      int64_t version, sm_model_emit_fn emit, void *arg)
{
    if (klen < 0) return klen;
    if (version < 1) return SM_EINVAL;
    uint8_t val[SM_DEFAULT_MAX_VALUE];
    size_t vlen;
    int rc = model_encode(md, obj, val, sizeof val, &vlen);
    if (rc) return rc;
    return emit(key, (size_t)klen, val, vlen, (uint64_t)version, arg);
}

int sm_health_records(const struct sm_backend_health *s, sm_model_emit_fn emit, void *arg)
{
    char key[SM_DEFAULT_MAX_KEY + 1];
    int kl = sm_health_key(s->url, key, sizeof key);
    return emit_model(&health_model, s, key, kl, s->version, emit, arg);
}

int sm_circuit_records(const struct sm_circuit_breaker *s, sm_model_emit_fn emit, void *arg)
{
    char key[SM_DEFAULT_MAX_KEY + 1];
    int kl = sm_circuit_key(s->backend_url, key, sizeof key);
    return emit_model(&circuit_model, s, key, kl, s->version, emit, arg);
}

int sm_lb_state_records(const struct sm_lb_state *s, const char *node, sm_model_emit_fn emit,
                        void *arg)
{
    if (!node || !*node) node = s->updated_by;
    if (!*node || strchr(node, '/')) return SM_EINVAL;
    char key[SM_DEFAULT_MAX_KEY + 1];
    /* Check every slot key first so a bad URL does not leave half a write. */
    for (size_t i = 0; i < s->n_backend_states; i++) {
        int kl = sm_lb_conn_key(s->backend_states[i].url, node, key, sizeof key);
        if (kl < 0) return kl;
    }
    /* The connection counts live in the slots; the shared record carries the rest. */
    struct sm_lb_state shared = *s;
    shared.backend_states = NULL;
    shared.n_backend_states = 0;
    int kl = sm_lb_state_key(s->strategy, key, sizeof key);
    int rc = emit_model(&lb_model, &shared, key, kl, s->version, emit, arg);
    if (rc) return rc;
    for (size_t i = 0; i < s->n_backend_states; i++) {
        kl = sm_lb_conn_key(s->backend_states[i].url, node, key, sizeof key);
        uint8_t val[9];
        size_t vl = crdt_counter_encode(s->backend_states[i].value, val);
        rc = emit(key, (size_t)kl, val, vl, 0, arg);
        if (rc) return rc;
    }
    return 0;
}

static int load(const struct crdt_replica *rep, const char *key, int klen, int64_t now_ms,
                const struct model *md, void *out)
{
    if (klen < 0) return klen;
    const struct crdt_rec *e = crdt_replica_get(rep, key, (size_t)klen, now_ms);
    if (!e) return SM_ENOTFOUND;
    struct crdt_rec_view v;
    crdt_rec_view(rep, e, &v);
    return model_decode(md, v.value, v.value_len, out);
}

int sm_health_load(const struct crdt_replica *rep, const char *url, int64_t now_ms,
                   struct sm_backend_health *out)
{
    char key[SM_DEFAULT_MAX_KEY + 1];
    return load(rep, key, sm_health_key(url, key, sizeof key), now_ms, &health_model, out);
}

int sm_circuit_load(const struct crdt_replica *rep, const char *url, int64_t now_ms,
                    struct sm_circuit_breaker *out)
{
    char key[SM_DEFAULT_MAX_KEY + 1];
    return load(rep, key, sm_circuit_key(url, key, sizeof key), now_ms, &circuit_model, out);
}

int sm_lb_state_load(const struct crdt_replica *rep, const char *strategy, crdt_live_fn is_live,
                     void *arg, int64_t now_ms, struct sm_lb_state *out)
{
    char key[SM_DEFAULT_MAX_KEY + 1];
    model_reset(&lb_model, out);
    int rc = load(rep, key, sm_lb_state_key(strategy, key, sizeof key), now_ms, &lb_model, out);
    if (rc && rc != SM_ENOTFOUND) return rc;
    bool have_state = rc == 0;
    if (!have_state) snprintf(out->strategy, sizeof out->strategy, "%s", strategy);
    struct crdt_counter_total *t;
    size_t n;
    rc = crdt_counter_totals(rep, CRDT_PREFIX_LB_CONN, is_live, arg, now_ms, &t, &n);
    if (rc) goto err;
    map_free(out->backend_states, out->n_backend_states);
    out->backend_states = NULL;
    out->n_backend_states = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = map_set(&out->backend_states, &out->n_backend_states, t[i].name, strlen(t[i].name),
                     t[i].sum);
        if (rc == SM_EINVAL || rc == SM_ERANGE) rc = 0; /* a slot no model can name: skip */
    }
    crdt_counter_totals_free(t, n);
    if (rc) goto err;
    if (!have_state && n == 0) {
        rc = SM_ENOTFOUND;
        goto err;
    }
    return 0;
err:
    sm_lb_state_close(out);
    return rc;
}
