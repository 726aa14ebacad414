/* metrics.h: a small Prometheus metrics registry (counters, gauges, histograms). */
#ifndef SM_METRICS_H
#define SM_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sm_metrics;
struct sm_hist;

struct sm_metrics *sm_metrics_new(void);
void sm_metrics_delete(struct sm_metrics *m);

/**
 * Find or create a series. @p family is the full metric name (e.g.
 * "statemesh_operations_total"), @p help its HELP text (used when the family
 * is first created), @p labels the label set without braces
 * (e.g. `storage_type="local",operation="get",result="ok"`, or "" for none).
 * The returned pointer stays valid until sm_metrics_delete(): cache it on hot
 * paths. NULL on OOM (callers may then skip counting).
 */
uint64_t *sm_metrics_counter(struct sm_metrics *m, const char *family, const char *help,
                             const char *labels);
double *sm_metrics_gauge(struct sm_metrics *m, const char *family, const char *help,
                         const char *labels);
/** A gauge computed when rendering, by fn(arg). */
int sm_metrics_gauge_fn(struct sm_metrics *m, const char *family, const char *help,
                        const char *labels, double (*fn)(void *arg), void *arg);
/** A counter whose value is read from fn(arg) when rendering (e.g. protocol stats). */
int sm_metrics_counter_fn(struct sm_metrics *m, const char *family, const char *help,
                          const char *labels, double (*fn)(void *arg), void *arg);
/** Histogram with the given upper bounds (ascending, +Inf implied). */
struct sm_hist *sm_metrics_hist(struct sm_metrics *m, const char *family, const char *help,
                                const char *labels, const double *bounds, size_t nbounds);
void sm_hist_observe(struct sm_hist *h, double v);

/** Convenience: add @p n to a counter series (creating it). */
void sm_metrics_add(struct sm_metrics *m, const char *family, const char *help, const char *labels,
                    uint64_t n);

/** Render everything in the text exposition format (malloc'd, caller frees). */
char *sm_metrics_render_text(const struct sm_metrics *m);

/** The seed's operation-duration buckets, in seconds. */
extern const double sm_op_duration_buckets[];
extern const size_t sm_op_duration_nbuckets;

#endif
