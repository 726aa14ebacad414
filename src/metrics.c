/* metrics.c: a small registry of Prometheus counters, gauges and histograms. */
#include "config.h"

#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind { K_COUNTER, K_GAUGE, K_GAUGE_FN, K_HIST, K_COUNTER_FN };

struct sm_hist {
    const double *bounds; /* owned copy */
    size_t nb;
    uint64_t *counts; /* nb + 1 (last = +Inf) */
    double sum;
    uint64_t count;
};

struct series {
    struct series *next;
    char *labels;
    union {
        uint64_t counter;
        double gauge;
        struct {
            double (*fn)(void *);
            void *arg;
        } gfn;
        struct sm_hist hist;
    } u;
};

struct family {
    struct family *next;
    char *name;
    char *help;
    enum kind kind;
    struct series *series, **tail;
};

struct sm_metrics {
    struct family *families, **tail;
};

const double sm_op_duration_buckets[] = {0.0001, 0.0005, 0.001, 0.005, 0.01,
                                         0.05,   0.1,    0.5,   1.0,   5.0};
const size_t sm_op_duration_nbuckets = sizeof sm_op_duration_buckets / sizeof(double);

struct sm_metrics *sm_metrics_new(void)
{
    struct sm_metrics *m = calloc(1, sizeof *m);
    if (m) m->tail = &m->families;
    return m;
}

void sm_metrics_delete(struct sm_metrics *m)
{
    if (!m) return;
    struct family *f = m->families;
    while (f) {
        struct family *fn = f->next;
        struct series *s = f->series;
        while (s) {
            struct series *sn = s->next;
            if (f->kind == K_HIST) {
                free((void *)s->u.hist.bounds);
                free(s->u.hist.counts);
            }
            free(s->labels);
            free(s);
            s = sn;
        }
        free(f->name);
        free(f->help);
        free(f);
        f = fn;
    }
    free(m);
}

static char *dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static struct family *family_get(struct sm_metrics *m, const char *name, const char *help,
                                 enum kind kind)
{
    for (struct family *f = m->families; f; f = f->next)
        if (strcmp(f->name, name) == 0) return f->kind == kind ? f : NULL;
    struct family *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->name = dup(name);
    f->help = dup(help ? help : "");
    if (!f->name || !f->help) {
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    f->kind = kind;
    f->tail = &f->series;
    *m->tail = f;
    m->tail = &f->next;
    return f;
}

static struct series *series_get(struct family *f, const char *labels, bool *created)
{
    *created = false;
    for (struct series *s = f->series; s; s = s->next)
        if (strcmp(s->labels, labels) == 0) return s;
    struct series *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->labels = dup(labels ? labels : "");
    if (!s->labels) {
        free(s);
        return NULL;
    }
    *f->tail = s;
    f->tail = &s->next;
    *created = true;
    return s;
}

uint64_t *sm_metrics_counter(struct sm_metrics *m, const char *family, const char *help,
                             const char *labels)
{
    bool c;
    struct family *f = m ? family_get(m, family, help, K_COUNTER) : NULL;
    struct series *s = f ? series_get(f, labels ? labels : "", &c) : NULL;
    return s ? &s->u.counter : NULL;
}

void sm_metrics_add(struct sm_metrics *m, const char *family, const char *help, const char *labels,
                    uint64_t n)
{
    uint64_t *c = sm_metrics_counter(m, family, help, labels);
    if (c) *c += n;
}

double *sm_metrics_gauge(struct sm_metrics *m, const char *family, const char *help,
                         const char *labels)
{
    bool c;
    struct family *f = m ? family_get(m, family, help, K_GAUGE) : NULL;
    struct series *s = f ? series_get(f, labels ? labels : "", &c) : NULL;
    return s ? &s->u.gauge : NULL;
}

int sm_metrics_gauge_fn(struct sm_metrics *m, const char *family, const char *help,
                        const char *labels, double (*fn)(void *arg), void *arg)
{
    bool c;
    struct family *f = m ? family_get(m, family, help, K_GAUGE_FN) : NULL;
    struct series *s = f ? series_get(f, labels ? labels : "", &c) : NULL;
    if (!s) return -1;
    s->u.gfn.fn = fn;
    s->u.gfn.arg = arg;
    return 0;
}

int sm_metrics_counter_fn(struct sm_metrics *m, const char *family, const char *help,
                          const char *labels, double (*fn)(void *arg), void *arg)
{
    bool c;
    struct family *f = m ? family_get(m, family, help, K_COUNTER_FN) : NULL;
    struct series *s = f ? series_get(f, labels ? labels : "", &c) : NULL;
    if (!s) return -1;
    s->u.gfn.fn = fn;
    s->u.gfn.arg = arg;
    return 0;
}

struct sm_hist *sm_metrics_hist(struct sm_metrics *m, const char *family, const char *help,
                                const char *labels, const double *bounds, size_t nbounds)
{
    bool c;
    struct family *f = m ? family_get(m, family, help, K_HIST) : NULL;
    struct series *s = f ? series_get(f, labels ? labels : "", &c) : NULL;
    if (!s) return NULL;
    if (c) {
        double *b = malloc(nbounds * sizeof *b);
        uint64_t *counts = calloc(nbounds + 1, sizeof *counts);
        if (!b || !counts) {
            free(b);
            free(counts);
            return NULL; /* the series stays empty and renders nothing */
        }
        memcpy(b, bounds, nbounds * sizeof *b);
        s->u.hist.bounds = b;
        s->u.hist.nb = nbounds;
        s->u.hist.counts = counts;
    }
    return s->u.hist.counts ? &s->u.hist : NULL;
}

void sm_hist_observe(struct sm_hist *h, double v)
{
    if (!h) return;
    size_t i = 0;
    while (i < h->nb && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void bprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(struct buf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap * 2 + (size_t)n + 1;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

static void series_name(struct buf *b, const char *name, const char *suffix, const char *labels,
                        const char *extra)
{
    bool any = (labels && *labels) || (extra && *extra);
    bprintf(b, "%s%s", name, suffix);
    if (!any) return;
    bprintf(b, "{%s%s%s}", labels ? labels : "", (labels && *labels && extra && *extra) ? "," : "",
            extra ? extra : "");
}

char *sm_metrics_render_text(const struct sm_metrics *m)
{
    struct buf b = {.p = malloc(4096), .cap = 4096};
    if (!b.p) return NULL;
    b.p[0] = '\0';
    static const char *types[] = {"counter", "gauge", "gauge", "histogram", "counter"};
    for (const struct family *f = m->families; f; f = f->next) {
        if (!f->series) continue;
        bprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, types[f->kind]);
        for (const struct series *s = f->series; s; s = s->next) {
            switch (f->kind) {
            case K_COUNTER:
                series_name(&b, f->name, "", s->labels, NULL);
                bprintf(&b, " %llu\n", (unsigned long long)s->u.counter);
                break;
            case K_GAUGE:
                series_name(&b, f->name, "", s->labels, NULL);
                bprintf(&b, " %.17g\n", s->u.gauge);
                break;
            case K_GAUGE_FN:
            case K_COUNTER_FN:
                series_name(&b, f->name, "", s->labels, NULL);
                bprintf(&b, " %.17g\n", s->u.gfn.fn(s->u.gfn.arg));
                break;
            case K_HIST: {
                const struct sm_hist *h = &s->u.hist;
                if (!h->counts) break;
                uint64_t cum = 0;
                char le[64];
                for (size_t i = 0; i <= h->nb; i++) {
                    cum += h->counts[i];
                    if (i < h->nb)
                        snprintf(le, sizeof le, "le=\"%g\"", h->bounds[i]);
                    else
                        snprintf(le, sizeof le, "le=\"+Inf\"");
                    series_name(&b, f->name, "_bucket", s->labels, le);
                    bprintf(&b, " %llu\n", (unsigned long long)cum);
                }
                series_name(&b, f->name, "_sum", s->labels, NULL);
                bprintf(&b, " %.9g\n", h->sum);
                series_name(&b, f->name, "_count", s->labels, NULL);
                bprintf(&b, " %llu\n", (unsigned long long)h->count);
                break;
            }
            }
        }
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
