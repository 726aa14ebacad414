/* crdt_prop.h: seeded PRNG and case counts shared by the crdt property tests. */
#ifndef SM_TEST_CRDT_PROP_H
#define SM_TEST_CRDT_PROP_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/** splitmix64: tiny, fast, and every seed gives a full-period stream. */
struct prop_rng {
    uint64_t s;
};

static inline uint64_t prop_next(struct prop_rng *r)
{
    uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/** Uniform in [0, n) (n > 0; the tiny modulo bias does not matter here). */
static inline uint64_t prop_below(struct prop_rng *r, uint64_t n)
{
    return prop_next(r) % n;
}

/**
 * Cases per property: SM_PROP_CASES, default @p dflt. Under valgrind
 * (SM_VALGRIND=1, as tests/lib/run-test sees it) the default is cut to a
 * fiftieth: memory checking needs coverage of the code, not of the space.
 */
static inline size_t prop_cases(size_t dflt)
{
    const char *e = getenv("SM_PROP_CASES");
    if (e && *e) {
        unsigned long long v = strtoull(e, NULL, 10);
        if (v > 0) return (size_t)v;
    }
    const char *vg = getenv("SM_VALGRIND");
    if (vg && strcmp(vg, "1") == 0) return dflt / 50 ? dflt / 50 : 1;
    return dflt;
}

/**
 * The run's seed: SM_PROP_SEED (a number, or "random" for a time-based one),
 * default fixed so CI runs are reproducible. Printed so a failure can be replayed.
 */
static inline uint64_t prop_seed(void)
{
    const char *e = getenv("SM_PROP_SEED");
    uint64_t s = UINT64_C(0x5eed5eed2026);
    if (e && strcmp(e, "random") == 0)
        s = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    else if (e && *e)
        s = strtoull(e, NULL, 0);
    return s;
}

/** Fail the current cmocka test, naming the seed and case to replay it. */
#define PROP_FAIL(seed, i, ...)                                                                    \
    do {                                                                                           \
        fprintf(stderr,                                                                            \
                "# property failed: SM_PROP_SEED=%llu case %zu: ", (unsigned long long)(seed),     \
                (size_t)(i));                                                                      \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        fail_msg("property failed (SM_PROP_SEED=%llu case %zu)", (unsigned long long)(seed),       \
                 (size_t)(i));                                                                     \
    } while (0)

#endif
