/* test_crdt_hlc.c: hybrid logical clock: step back, drift rejection, counter overflow. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crdt/hlc.h"
#include "crdt_prop.h"
#include "statemesh.h"

#define T(w, l) crdt_hlc_make((w), (l))

static void test_layout(void **state)
{
    (void)state;
    uint64_t t = T(1700000000123u, 7);
    assert_int_equal(t, (UINT64_C(1700000000123) << 16) | 7);
    assert_int_equal(crdt_hlc_wall_ms(t), 1700000000123u);
    assert_int_equal(crdt_hlc_logical(t), 7);
    /* both parts clamp rather than wrap into each other */
    assert_int_equal(T(UINT64_MAX, 0), CRDT_HLC_MAX_WALL_MS << 16);
    assert_int_equal(T(5, 1u << 20), (UINT64_C(5) << 16) | 0xffff);
}

static void test_now_and_step_back(void **state)
{
    (void)state;
    struct crdt_hlc c;
    crdt_hlc_init(&c, 0);
    assert_int_equal(c.max_drift_ms, 60000);
    assert_int_equal(crdt_hlc_now(&c, 1000), T(1000, 0));
    assert_int_equal(crdt_hlc_now(&c, 1000), T(1000, 1));
    assert_int_equal(crdt_hlc_now(&c, 1001), T(1001, 0));
    /* the wall clock steps back by 10 minutes: the counter carries on */
    assert_int_equal(crdt_hlc_now(&c, 1), T(1001, 1));
    for (unsigned i = 2; i < 12; i++) assert_int_equal(crdt_hlc_now(&c, 1), T(1001, i));
    /* wall time catches up: the counter resets */
    assert_int_equal(crdt_hlc_now(&c, 1002), T(1002, 0));
    assert_int_equal(c.logical_carries, 0);
    assert_int_equal(c.drift_rejects, 0);
}

static void test_update(void **state)
{
    (void)state;
    struct crdt_hlc c;
    crdt_hlc_init(&c, 0);
    uint64_t out = 0;
    assert_int_equal(crdt_hlc_now(&c, 5000), T(5000, 0));
    /* remote ahead (within drift): we move past it */
    assert_int_equal(crdt_hlc_update(&c, 5000, T(7000, 3), &out), 0);
    assert_int_equal(out, T(7000, 4));
    assert_int_equal(crdt_hlc_now(&c, 5001), T(7000, 5));
    /* remote behind: only our own counter moves */
    assert_int_equal(crdt_hlc_update(&c, 5002, T(100, 9), &out), 0);
    assert_int_equal(out, T(7000, 6));
    /* same wall ms on both sides: past the larger counter */
    assert_int_equal(crdt_hlc_update(&c, 6000, T(7000, 40), &out), 0);
    assert_int_equal(out, T(7000, 41));
    /* physical time beyond both: counter resets */
    assert_int_equal(crdt_hlc_update(&c, 9000, T(8000, 77), NULL), 0);
    assert_int_equal(c.last, T(9000, 0));
}

static void test_drift(void **state)
{
    (void)state;
    struct crdt_hlc c;
    crdt_hlc_init(&c, 0);
    const uint64_t now = 1700000000000u;
    assert_int_equal(crdt_hlc_now(&c, now), T(now, 0));
    uint64_t out = 0;
    /* exactly the maximum drift ahead is still accepted */
    assert_int_equal(crdt_hlc_update(&c, now, T(now + 60000, 0xffff), &out), 0);
    assert_int_equal(out, T(now + 60001, 0));
    assert_int_equal(c.logical_carries, 1);
    assert_int_equal(c.drift_rejects, 0);

    crdt_hlc_init(&c, 0);
    crdt_hlc_now(&c, now);
    uint64_t before = c.last;
    out = 42;
    assert_int_equal(crdt_hlc_update(&c, now, T(now + 60001, 0), &out), SM_ERANGE);
    assert_int_equal(c.drift_rejects, 1);
    assert_int_equal(c.last, before); /* not poisoned */
    assert_int_equal(out, 42);        /* untouched on error */
    assert_int_equal(crdt_hlc_update(&c, now, UINT64_MAX, NULL), SM_ERANGE);
    assert_int_equal(crdt_hlc_update(&c, now + 10, T(now + 3600000, 0), NULL), SM_ERANGE);
    assert_int_equal(c.drift_rejects, 3);
    assert_int_equal(c.last, before);
    /* check() says the same without counting */
    assert_int_equal(crdt_hlc_check(&c, now, T(now + 60001, 0)), SM_ERANGE);
    assert_int_equal(crdt_hlc_check(&c, now, T(now + 60000, 5)), 0);
    assert_int_equal(c.drift_rejects, 3);
    /* the next local event continues from where the clock was */
    assert_int_equal(crdt_hlc_now(&c, now), T(now, 1));

    /* a configured bound */
    crdt_hlc_init(&c, 250);
    assert_int_equal(crdt_hlc_update(&c, 1000, T(1250, 0), NULL), 0);
    assert_int_equal(crdt_hlc_update(&c, 1000, T(1251, 0), NULL), SM_ERANGE);
    assert_int_equal(c.drift_rejects, 1);
    assert_int_equal(c.last, T(1250, 1));
}

static void test_logical_overflow(void **state)
{
    (void)state;
    struct crdt_hlc c;
    crdt_hlc_init(&c, 0);
    /* 65536 events in one millisecond use up the counter exactly */
    for (uint64_t i = 0; i <= 0xffff; i++) assert_int_equal(crdt_hlc_now(&c, 1000), T(1000, i));
    assert_int_equal(c.logical_carries, 0);
    /* the next one carries into the ms part: still strictly increasing */
    assert_int_equal(crdt_hlc_now(&c, 1000), T(1001, 0));
    assert_int_equal(c.logical_carries, 1);
    assert_int_equal(crdt_hlc_now(&c, 1000), T(1001, 1));
    assert_int_equal(crdt_hlc_now(&c, 1001), T(1001, 2));
    assert_int_equal(crdt_hlc_now(&c, 1002), T(1002, 0));
    /* a remote at the end of its counter */
    assert_int_equal(crdt_hlc_update(&c, 2000, T(2000, 0xffff), NULL), 0);
    assert_int_equal(c.last, T(2001, 0));
    assert_int_equal(c.logical_carries, 2);
    /* saturation at the very top: never wraps to small values */
    c.last = UINT64_MAX - 1;
    assert_int_equal(crdt_hlc_now(&c, 0), UINT64_MAX);
    assert_int_equal(crdt_hlc_now(&c, UINT64_MAX), UINT64_MAX);
    assert_int_equal(c.last, UINT64_MAX);
}

/* Random walks of the wall clock (forward, back, stuck) with local events and
 * receives: every timestamp is strictly greater than everything before it. */
static void test_monotonic_property(void **state)
{
    (void)state;
    uint64_t seed = prop_seed();
    struct prop_rng rng = {seed};
    size_t cases = prop_cases(100000);
    struct crdt_hlc c;
    crdt_hlc_init(&c, 0);
    uint64_t wall = 1700000000000u, prev = 0, rejects = 0;
    for (size_t i = 0; i < cases; i++) {
        switch (prop_below(&rng, 4)) {
        case 0:
            wall += prop_below(&rng, 50);
            break;
        case 1:
            wall -= prop_below(&rng, 2000);
            break; /* NTP step back */
        default:
            break;
        }
        uint64_t t;
        if (prop_below(&rng, 3) == 0) {
            int64_t off = (int64_t)prop_below(&rng, 140000) - 70000;
            uint64_t remote = T((uint64_t)((int64_t)wall + off), prop_below(&rng, 0x10000));
            int rc = crdt_hlc_update(&c, wall, remote, &t);
            bool too_far = off > 60000;
            if (too_far) {
                if (rc != SM_ERANGE || c.last != prev)
                    PROP_FAIL(seed, i, "drift not rejected (rc %d)", rc);
                rejects++;
                continue;
            }
            if (rc != 0 || t <= remote) PROP_FAIL(seed, i, "receive not after remote");
        } else {
            t = crdt_hlc_now(&c, wall);
        }
        if (t <= prev)
            PROP_FAIL(seed, i, "not monotonic: %llu after %llu", (unsigned long long)t,
                      (unsigned long long)prev);
        if (crdt_hlc_wall_ms(t) < wall) PROP_FAIL(seed, i, "behind the wall clock");
        prev = t;
    }
    assert_int_equal(c.drift_rejects, rejects);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),           cmocka_unit_test(test_now_and_step_back),
        cmocka_unit_test(test_update),           cmocka_unit_test(test_drift),
        cmocka_unit_test(test_logical_overflow), cmocka_unit_test(test_monotonic_property),
    };
    return cmocka_run_group_tests_name("crdt_hlc", tests, NULL, NULL);
}
