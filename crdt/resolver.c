/* resolver.c: conflict resolvers by key prefix, and per-node counter slots.
 *
 * A resolver never compares two records itself: the merge is one total order
 * for every key. What a resolver decides is the precedence byte stamped on a
 * write when it is made, from its value; the order then applies it among
 * writes of the same version. That keeps the merge a join (commutative,
 * associative, idempotent) whatever the resolver, and keeps resolvers out of
 * the hot merge path. */
#include "config.h"

#include "crdt/resolver.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/mpread.h"
#include "crdt/replica.h"
#include "statemesh.h"

struct crdt_resolver {
    char *prefix;
    size_t plen;
    char *name;
    enum crdt_resolver_kind kind;
    crdt_precedence_fn fn;
    void *arg;
    uint64_t conflicts;
};

struct crdt_resolvers {
    struct crdt_resolver **v; /* v[0] is the default LWW */
    size_t n, cap;
};

static void resolver_free(struct crdt_resolver *r)
{
    if (!r) return;
    free(r->prefix);
    free(r->name);
    free(r);
}

/* strdup() through malloc() proper, so allocation-failure tests can reach it. */
static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static struct crdt_resolver *resolver_new(const char *prefix, const char *name,
                                          enum crdt_resolver_kind kind, crdt_precedence_fn fn,
                                          void *arg)
{
    struct crdt_resolver *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->prefix = dup_str(prefix);
    r->name = dup_str(name);
    if (!r->prefix || !r->name) {
        resolver_free(r);
        return NULL;
    }
    r->plen = strlen(prefix);
    r->kind = kind;
    r->fn = fn;
    r->arg = arg;
    return r;
}

static int push(struct crdt_resolvers *rs, struct crdt_resolver *r)
{
    if (rs->n == rs->cap) {
        size_t nc = rs->cap ? rs->cap * 2 : 8;
        struct crdt_resolver **nv = realloc(rs->v, nc * sizeof *nv);
        if (!nv) return SM_ENOMEM;
        rs->v = nv;
        rs->cap = nc;
    }
    rs->v[rs->n++] = r;
    return 0;
}

struct crdt_resolvers *crdt_resolvers_new(void)
{
    struct crdt_resolvers *rs = calloc(1, sizeof *rs);
    if (!rs) return NULL;
    struct crdt_resolver *d = resolver_new("", "lww", CRDT_RESOLVER_LWW, NULL, NULL);
    if (!d || push(rs, d) < 0) {
        resolver_free(d);
        free(rs->v);
        free(rs);
        return NULL;
    }
    return rs;
}

void crdt_resolvers_delete(struct crdt_resolvers *rs)
{
    if (!rs) return;
    for (size_t i = 0; i < rs->n; i++) resolver_free(rs->v[i]);
    free(rs->v);
    free(rs);
}

struct crdt_resolvers *crdt_resolvers_new_default(void)
{
    struct crdt_resolvers *rs = crdt_resolvers_new();
    if (!rs) return NULL;
    if (crdt_resolvers_add(rs, CRDT_PREFIX_HEALTH, "backend_health", CRDT_RESOLVER_HEALTH, NULL,
                           NULL) < 0 ||
        crdt_resolvers_add(rs, CRDT_PREFIX_CIRCUIT, "circuit_breaker", CRDT_RESOLVER_CIRCUIT, NULL,
                           NULL) < 0 ||
        crdt_resolvers_add(rs, CRDT_PREFIX_LB_CONN, "connection_counter", CRDT_RESOLVER_COUNTER,
                           NULL, NULL) < 0 ||
        crdt_resolvers_add(rs, CRDT_PREFIX_RATELIMIT, "rate_limit_counter", CRDT_RESOLVER_COUNTER,
                           NULL, NULL) < 0) {
        crdt_resolvers_delete(rs);
        return NULL;
    }
    return rs;
}

int crdt_resolvers_add(struct crdt_resolvers *rs, const char *prefix, const char *name,
                       enum crdt_resolver_kind kind, crdt_precedence_fn fn, void *arg)
{
    if (!rs || !prefix || !*prefix || !name || !*name) return SM_EINVAL;
    if (kind > CRDT_RESOLVER_CUSTOM || (kind == CRDT_RESOLVER_CUSTOM) != (fn != NULL))
        return SM_EINVAL;
    for (size_t i = 0; i < rs->n; i++)
        if (strcmp(rs->v[i]->prefix, prefix) == 0) return SM_EEXISTS;
    struct crdt_resolver *r = resolver_new(prefix, name, kind, fn, arg);
    if (!r) return SM_ENOMEM;
    if (push(rs, r) < 0) {
        resolver_free(r);
        return SM_ENOMEM;
    }
    return 0;
}

const struct crdt_resolver *crdt_resolver_find(const struct crdt_resolvers *rs, const char *key,
                                               size_t klen)
{
    /* A handful of prefixes: a linear scan beats any index here. */
    const struct crdt_resolver *best = rs->v[0];
    for (size_t i = 1; i < rs->n; i++) {
        const struct crdt_resolver *r = rs->v[i];
        if (r->plen <= klen && r->plen > best->plen && memcmp(key, r->prefix, r->plen) == 0)
            best = r;
    }
    return best;
}

/* ---- extracting the state word from a value ---- */

#define WORD_MAX 24

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Copy a word, normalised: lower case, '_' and ' ' as '-'. false if too long. */
static bool put_word(char *out, const char *s, size_t n)
{
    while (n && is_ws((uint8_t)*s)) s++, n--;
    while (n && is_ws((uint8_t)s[n - 1])) n--;
    if (n == 0 || n >= WORD_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c == '_' || c == ' ') ? '-' : (char)tolower(c);
    }
    out[n] = '\0';
    return true;
}

static bool word_from_msgpack(const uint8_t *v, size_t len, char *out)
{
    struct crdt_mp m;
    crdt_mp_init(&m, v, len);
    const char *s;
    uint32_t n;
    if (crdt_mp_str(&m, &s, &n) == 0) return put_word(out, s, n);
    uint32_t pairs;
    if (crdt_mp_map(&m, &pairs) < 0) return false;
    for (uint32_t i = 0; i < pairs; i++) {
        const char *k;
        uint32_t kl;
        if (crdt_mp_str(&m, &k, &kl) < 0) {
            if (crdt_mp_skip(&m) < 0) return false; /* non-string key */
        } else if (kl == 5 && memcmp(k, "state", 5) == 0) {
            return crdt_mp_str(&m, &s, &n) == 0 && put_word(out, s, n);
        }
        if (crdt_mp_skip(&m) < 0) return false;
    }
    return false;
}

/* JSON: read a string at *p (which is '"'); sets [*s, *n) to its raw body. */
static bool json_string(const uint8_t **p, const uint8_t *end, const char **s, size_t *n,
                        bool *escaped)
{
    const uint8_t *q = *p + 1;
    *escaped = false;
    while (q < end && *q != '"') {
        if (*q == '\\') {
            *escaped = true;
            if (++q >= end) return false;
        }
        q++;
    }
    if (q >= end) return false;
    *s = (const char *)*p + 1;
    *n = (size_t)(q - (*p + 1));
    *p = q + 1;
    return true;
}

/* JSON: skip one value of any kind (strings respected inside nesting). */
static bool json_skip(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *q = *p;
    if (q >= end) return false;
    if (*q == '"') {
        const char *s;
        size_t n;
        bool esc;
        if (!json_string(&q, end, &s, &n, &esc)) return false;
        *p = q;
        return true;
    }
    if (*q == '{' || *q == '[') {
        size_t depth = 0;
        while (q < end) {
            if (*q == '"') {
                const char *s;
                size_t n;
                bool esc;
                if (!json_string(&q, end, &s, &n, &esc)) return false;
                continue;
            }
            if (*q == '{' || *q == '[') depth++;
            if (*q == '}' || *q == ']') {
                if (--depth == 0) {
                    *p = q + 1;
                    return true;
                }
            }
            q++;
        }
        return false;
    }
    while (q < end && !is_ws(*q) && *q != ',' && *q != '}' && *q != ']') q++;
    if (q == *p) return false;
    *p = q;
    return true;
}

static void skip_ws(const uint8_t **p, const uint8_t *end)
{
    while (*p < end && is_ws(**p)) (*p)++;
}

static bool word_from_json(const uint8_t *p, const uint8_t *end, char *out)
{
    const char *s;
    size_t n;
    bool esc;
    if (*p == '"') return json_string(&p, end, &s, &n, &esc) && !esc && put_word(out, s, n);
    p++; /* '{' */
    for (;;) {
        skip_ws(&p, end);
        if (p >= end || *p != '"') return false;
        if (!json_string(&p, end, &s, &n, &esc)) return false;
        bool is_state = !esc && n == 5 && memcmp(s, "state", 5) == 0;
        skip_ws(&p, end);
        if (p >= end || *p != ':') return false;
        p++;
        skip_ws(&p, end);
        if (is_state) {
            if (p >= end || *p != '"') return false;
            return json_string(&p, end, &s, &n, &esc) && !esc && put_word(out, s, n);
        }
        if (!json_skip(&p, end)) return false;
        skip_ws(&p, end);
        if (p >= end || *p != ',') return false;
        p++;
    }
}

/* The state word of a value in any of the accepted encodings. */
static bool state_word(const uint8_t *v, size_t len, char *out)
{
    if (!v || !len) return false;
    uint8_t t = v[0];
    if ((t >= 0x80 && t <= 0x8f) || t == 0xde || t == 0xdf || (t >= 0xa0 && t <= 0xbf) ||
        t == 0xd9 || t == 0xda || t == 0xdb)
        return word_from_msgpack(v, len, out);
    const uint8_t *p = v, *end = v + len;
    skip_ws(&p, end);
    if (p < end && (*p == '{' || *p == '"')) return word_from_json(p, end, out);
    return put_word(out, (const char *)v, len);
}

struct word_prec {
    const char *word;
    uint8_t prec;
};

static const struct word_prec health_words[] = {
    {"healthy", CRDT_PREC_HEALTH_HEALTHY},
    {"up", CRDT_PREC_HEALTH_HEALTHY},
    {"rate-limited", CRDT_PREC_HEALTH_RATE_LIMITED},
    {"ratelimited", CRDT_PREC_HEALTH_RATE_LIMITED},
    {"maintenance", CRDT_PREC_HEALTH_MAINTENANCE},
    {"unhealthy", CRDT_PREC_HEALTH_UNHEALTHY},
    {"down", CRDT_PREC_HEALTH_UNHEALTHY},
};

static const struct word_prec circuit_words[] = {
    {"closed", CRDT_PREC_CIRCUIT_CLOSED},
    {"half-open", CRDT_PREC_CIRCUIT_HALF_OPEN},
    {"halfopen", CRDT_PREC_CIRCUIT_HALF_OPEN},
    {"open", CRDT_PREC_CIRCUIT_OPEN},
};

static uint8_t lookup(const struct word_prec *t, size_t n, const uint8_t *v, size_t len)
{
    char w[WORD_MAX];
    if (!state_word(v, len, w)) return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(w, t[i].word) == 0) return t[i].prec;
    return 0;
}

uint8_t crdt_resolver_precedence(const struct crdt_resolver *r, const uint8_t *value, size_t len)
{
    if (!r || !value || !len) return 0;
    switch (r->kind) {
    case CRDT_RESOLVER_HEALTH:
        return lookup(health_words, sizeof health_words / sizeof *health_words, value, len);
    case CRDT_RESOLVER_CIRCUIT:
        return lookup(circuit_words, sizeof circuit_words / sizeof *circuit_words, value, len);
    case CRDT_RESOLVER_CUSTOM:
        return r->fn(value, len, r->arg);
    case CRDT_RESOLVER_LWW:
    case CRDT_RESOLVER_COUNTER:
    default:
        return 0;
    }
}

uint8_t crdt_resolvers_precedence(const struct crdt_resolvers *rs, const char *key, size_t klen,
                                  const uint8_t *value, size_t len)
{
    return crdt_resolver_precedence(crdt_resolver_find(rs, key, klen), value, len);
}

const char *crdt_resolver_name(const struct crdt_resolver *r)
{
    return r->name;
}

const char *crdt_resolver_prefix(const struct crdt_resolver *r)
{
    return r->prefix;
}

enum crdt_resolver_kind crdt_resolver_kind(const struct crdt_resolver *r)
{
    return r->kind;
}

uint64_t crdt_resolver_conflicts(const struct crdt_resolver *r)
{
    return r->conflicts;
}

size_t crdt_resolvers_count(const struct crdt_resolvers *rs)
{
    return rs->n;
}

const struct crdt_resolver *crdt_resolvers_at(const struct crdt_resolvers *rs, size_t i)
{
    return i < rs->n ? rs->v[i] : NULL;
}

bool crdt_is_conflict(const struct crdt_rec_view *stored, const struct crdt_rec_view *in)
{
    return stored->version == in->version && crdt_order_cmp(stored, in) != 0;
}

void crdt_resolvers_note_conflict(struct crdt_resolvers *rs, const char *key, size_t klen)
{
    /* find() hands out const pointers; the registry owns them, so it may count. */
    struct crdt_resolver *r = (struct crdt_resolver *)crdt_resolver_find(rs, key, klen);
    r->conflicts++;
}

int crdt_resolvers_merge(struct crdt_resolvers *rs, struct crdt_replica *rep,
                         const struct crdt_rec_view *in)
{
    const struct crdt_rec *old = crdt_replica_find(rep, in->key, in->key_len);
    bool conflict = false;
    if (old) {
        struct crdt_rec_view ov;
        crdt_rec_view(rep, old, &ov);
        conflict = crdt_is_conflict(&ov, in);
    }
    int rc = crdt_replica_merge(rep, in);
    if (rc >= 0 && conflict) crdt_resolvers_note_conflict(rs, in->key, in->key_len);
    return rc;
}

/* ---- counters ---- */

int crdt_counter_parse(const uint8_t *value, size_t len, int64_t *out)
{
    if (!value || !len) return SM_EINVAL;
    uint8_t t = value[0];
    /* msgpack ints other than positive fixints start at 0x80 or above; those
     * (bytes 0x00-0x7f) would collide with text, so text wins below 0x80. */
    if (t >= 0x80) {
        struct crdt_mp m;
        crdt_mp_init(&m, value, len);
        if (crdt_mp_int(&m, out) < 0 || crdt_mp_left(&m) != 0) return SM_EINVAL;
        return 0;
    }
    const uint8_t *p = value, *end = value + len;
    skip_ws(&p, end);
    bool neg = false;
    if (p < end && (*p == '-' || *p == '+')) neg = *p++ == '-';
    if (p >= end || !isdigit(*p)) return SM_EINVAL;
    uint64_t mag = 0;
    while (p < end && isdigit(*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (mag > ((uint64_t)INT64_MAX + 1 - d) / 10) return SM_EINVAL;
        mag = mag * 10 + d;
        p++;
    }
    skip_ws(&p, end);
    if (p != end) return SM_EINVAL;
    if (!neg && mag > (uint64_t)INT64_MAX) return SM_EINVAL;
    *out = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    return 0;
}

size_t crdt_counter_encode(int64_t v, uint8_t buf[9])
{
    /* Always int64 (0xd3): a positive fixint would be an ASCII byte and read
     * back as text ('5' is 0x35 = 53), so slot values use one fixed shape. */
    uint64_t u = (uint64_t)v;
    buf[0] = 0xd3;
    for (int i = 0; i < 8; i++) buf[1 + i] = (uint8_t)(u >> (56 - 8 * i));
    return 9;
}

int crdt_counter_key(char *buf, size_t cap, const char *base, const char *counter, const char *node)
{
    if (!buf || !base || !counter || !node || !*node || strchr(node, '/')) return SM_EINVAL;
    size_t bl = strlen(base), cl = strlen(counter), nl = strlen(node);
    size_t total = bl + cl + 1 + nl;
    if (total > SM_DEFAULT_MAX_KEY || total + 1 > cap) return SM_EKEYLEN;
    memcpy(buf, base, bl);
    memcpy(buf + bl, counter, cl);
    buf[bl + cl] = '/';
    memcpy(buf + bl + cl + 1, node, nl + 1);
    return (int)total;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* Split a slot key into counter name and node (after the last '/'). */
static bool slot_split(const struct crdt_rec_view *v, size_t base_len, size_t *name_len,
                       const char **node, size_t *node_len)
{
    const char *k = v->key + base_len;
    size_t n = v->key_len - base_len;
    const char *slash = NULL;
    for (size_t i = n; i > 0; i--)
        if (k[i - 1] == '/') {
            slash = k + i - 1;
            break;
        }
    if (!slash || slash + 1 == k + n) return false;
    *name_len = (size_t)(slash - k);
    *node = slash + 1;
    *node_len = (size_t)(k + n - *node);
    return true;
}

struct sum_ctx {
    size_t plen;
    crdt_live_fn is_live;
    void *arg;
    int64_t sum;
};

static int sum_one(const struct crdt_rec_view *v, void *arg)
{
    struct sum_ctx *c = arg;
    const char *node = v->key + c->plen;
    size_t nl = v->key_len - c->plen;
    if (nl == 0 || memchr(node, '/', nl)) return 0; /* a longer counter name's slot */
    if (c->is_live && !c->is_live(node, nl, c->arg)) return 0;
    int64_t x;
    if (crdt_counter_parse(v->value, v->value_len, &x) < 0) return 0;
    c->sum = sat_add(c->sum, x);
    return 0;
}

int64_t crdt_counter_sum(const struct crdt_replica *rep, const char *prefix, crdt_live_fn is_live,
                         void *arg, int64_t now_ms)
{
    struct sum_ctx c = {strlen(prefix), is_live, arg, 0};
    crdt_replica_foreach(rep, prefix, c.plen, true, now_ms, sum_one, &c);
    return c.sum;
}

struct totals_ctx {
    size_t blen;
    crdt_live_fn is_live;
    void *arg;
    struct crdt_counter_total *t;
    size_t n, cap;
    bool oom;
};

static int totals_one(const struct crdt_rec_view *v, void *arg)
{
    struct totals_ctx *c = arg;
    size_t name_len, node_len;
    const char *node;
    if (!slot_split(v, c->blen, &name_len, &node, &node_len)) return 0;
    if (c->is_live && !c->is_live(node, node_len, c->arg)) return 0;
    int64_t x;
    if (crdt_counter_parse(v->value, v->value_len, &x) < 0) return 0;
    const char *name = v->key + c->blen;
    for (size_t i = 0; i < c->n; i++) {
        if (strlen(c->t[i].name) == name_len && memcmp(c->t[i].name, name, name_len) == 0) {
            c->t[i].sum = sat_add(c->t[i].sum, x);
            c->t[i].slots++;
            return 0;
        }
    }
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 8;
        struct crdt_counter_total *nt = realloc(c->t, nc * sizeof *nt);
        if (!nt) goto oom;
        c->t = nt;
        c->cap = nc;
    }
    char *s = malloc(name_len + 1);
    if (!s) goto oom;
    memcpy(s, name, name_len);
    s[name_len] = '\0';
    c->t[c->n++] = (struct crdt_counter_total){s, x, 1};
    return 0;
oom:
    c->oom = true;
    return 1;
}

static int total_cmp(const void *a, const void *b)
{
    return strcmp(((const struct crdt_counter_total *)a)->name,
                  ((const struct crdt_counter_total *)b)->name);
}

int crdt_counter_totals(const struct crdt_replica *rep, const char *base, crdt_live_fn is_live,
                        void *arg, int64_t now_ms, struct crdt_counter_total **out, size_t *n)
{
    struct totals_ctx c = {.blen = strlen(base), .is_live = is_live, .arg = arg};
    crdt_replica_foreach(rep, base, c.blen, true, now_ms, totals_one, &c);
    if (c.oom) {
        crdt_counter_totals_free(c.t, c.n);
        *out = NULL;
        *n = 0;
        return SM_ENOMEM;
    }
    if (c.n > 1) qsort(c.t, c.n, sizeof *c.t, total_cmp);
    *out = c.t;
    *n = c.n;
    return 0;
}

void crdt_counter_totals_free(struct crdt_counter_total *t, size_t n)
{
    for (size_t i = 0; i < n; i++) free(t[i].name);
    free(t);
}
