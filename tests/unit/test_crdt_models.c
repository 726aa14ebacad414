/* test_crdt_models.c: the seed's models: msgpack and JSON round trips of every
 * field, exact JSON text, bad input rejected, records and aggregation. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crdt/hlc.h"
#include "crdt/replica.h"
#include "crdt_prop.h"
#include "models.h"
#include "statemesh.h"

static struct sm_backend_health sample_health(void)
{
    struct sm_backend_health h;
    memset(&h, 0, sizeof h);
    strcpy(h.url, "http://10.0.0.1:8080");
    h.state = SM_BACKEND_UNHEALTHY;
    h.last_check_ms = 1700000000123;
    h.last_healthy_ms = 1699999940000;
    h.consecutive_fails = 3;
    h.consecutive_oks = 0;
    h.rate_limit_count = 7;
    strcpy(h.updated_by, "node-a");
    h.updated_at_ms = 1700000000500;
    h.version = 42;
    return h;
}

static struct sm_circuit_breaker sample_circuit(void)
{
    struct sm_circuit_breaker c;
    memset(&c, 0, sizeof c);
    strcpy(c.backend_url, "http://10.0.0.2:9090");
    c.state = SM_CIRCUIT_HALF_OPEN;
    c.last_state_change_ms = -1; /* 1969-12-31T23:59:59.999Z */
    c.consecutive_fails = 5;
    c.consecutive_success = INT32_MAX;
    c.requests_in_half_open = INT32_MIN;
    strcpy(c.updated_by, "node-b");
    c.updated_at_ms = 0; /* unset: Go's zero time */
    c.version = 9;
    return c;
}

static void sample_lb(struct sm_lb_state *s)
{
    sm_lb_state_init(s);
    strcpy(s->strategy, "least-connections");
    assert_int_equal(sm_lb_state_set_conn(s, "http://a", 12), 0);
    assert_int_equal(sm_lb_state_set_conn(s, "http://b", 0), 0);
    assert_int_equal(sm_lb_state_set_conn(s, "http://c", -4), 0);
    s->last_rotation = -7;
    assert_int_equal(sm_lb_state_set_weight(s, "http://a", 5), 0);
    assert_int_equal(sm_lb_state_set_weight(s, "http://c", 1), 0);
    strcpy(s->updated_by, "node-c");
    s->updated_at_ms = 1700000000001;
    s->version = INT64_MAX;
}

static void assert_health_eq(const struct sm_backend_health *a, const struct sm_backend_health *b)
{
    assert_string_equal(a->url, b->url);
    assert_int_equal(a->state, b->state);
    assert_true(a->last_check_ms == b->last_check_ms);
    assert_true(a->last_healthy_ms == b->last_healthy_ms);
    assert_true(a->consecutive_fails == b->consecutive_fails);
    assert_true(a->consecutive_oks == b->consecutive_oks);
    assert_true(a->rate_limit_count == b->rate_limit_count);
    assert_string_equal(a->updated_by, b->updated_by);
    assert_true(a->updated_at_ms == b->updated_at_ms);
    assert_true(a->version == b->version);
}

static void assert_circuit_eq(const struct sm_circuit_breaker *a,
                              const struct sm_circuit_breaker *b)
{
    assert_string_equal(a->backend_url, b->backend_url);
    assert_int_equal(a->state, b->state);
    assert_true(a->last_state_change_ms == b->last_state_change_ms);
    assert_int_equal(a->consecutive_fails, b->consecutive_fails);
    assert_int_equal(a->consecutive_success, b->consecutive_success);
    assert_int_equal(a->requests_in_half_open, b->requests_in_half_open);
    assert_string_equal(a->updated_by, b->updated_by);
    assert_true(a->updated_at_ms == b->updated_at_ms);
    assert_true(a->version == b->version);
}

static void assert_map_eq(const struct sm_lb_entry *a, size_t na, const struct sm_lb_entry *b,
                          size_t nb)
{
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        bool found = false;
        for (size_t j = 0; j < nb; j++)
            if (strcmp(a[i].url, b[j].url) == 0) {
                assert_true(a[i].value == b[j].value);
                found = true;
            }
        assert_true(found);
    }
}

static void assert_lb_eq(const struct sm_lb_state *a, const struct sm_lb_state *b)
{
    assert_string_equal(a->strategy, b->strategy);
    assert_map_eq(a->backend_states, a->n_backend_states, b->backend_states, b->n_backend_states);
    assert_int_equal(a->last_rotation, b->last_rotation);
    assert_map_eq(a->weighted_counters, a->n_weighted_counters, b->weighted_counters,
                  b->n_weighted_counters);
    assert_string_equal(a->updated_by, b->updated_by);
    assert_true(a->updated_at_ms == b->updated_at_ms);
    assert_true(a->version == b->version);
}

static void test_enums(void **state)
{
    (void)state;
    enum sm_backend_state b;
    enum sm_circuit_state c;
    assert_string_equal(sm_backend_state_name(SM_BACKEND_RATE_LIMITED), "rate-limited");
    assert_null(sm_backend_state_name((enum sm_backend_state)99));
    assert_int_equal(sm_backend_state_parse("Rate_Limited", 12, &b), 0);
    assert_int_equal(b, SM_BACKEND_RATE_LIMITED);
    assert_int_equal(sm_backend_state_parse("UNHEALTHY", 9, &b), 0);
    assert_int_equal(b, SM_BACKEND_UNHEALTHY);
    assert_int_equal(sm_backend_state_parse("sick", 4, &b), SM_EINVAL);
    assert_string_equal(sm_circuit_state_name(SM_CIRCUIT_HALF_OPEN), "half-open");
    assert_int_equal(sm_circuit_state_parse("half_open", 9, &c), 0);
    assert_int_equal(c, SM_CIRCUIT_HALF_OPEN);
    assert_int_equal(sm_circuit_state_parse("opened", 6, &c), SM_EINVAL);
}

static void test_time(void **state)
{
    (void)state;
    char b[32];
    int64_t ms = 1;
    assert_true(sm_time_format(0, b));
    assert_string_equal(b, "0001-01-01T00:00:00Z");
    assert_true(sm_time_format(1700000000123, b));
    assert_string_equal(b, "2023-11-14T22:13:20.123Z");
    assert_true(sm_time_format(1700000000120, b));
    assert_string_equal(b, "2023-11-14T22:13:20.12Z");
    assert_true(sm_time_format(1700000000000, b));
    assert_string_equal(b, "2023-11-14T22:13:20Z");
    assert_true(sm_time_format(-1, b));
    assert_string_equal(b, "1969-12-31T23:59:59.999Z");
    assert_true(sm_time_format(253402300799999, b));
    assert_string_equal(b, "9999-12-31T23:59:59.999Z");
    assert_false(sm_time_format(253402300800000, b));
    assert_false(sm_time_format(INT64_MIN, b));

#define TP(s) sm_time_parse((s), strlen(s), &ms)
    assert_int_equal(TP("0001-01-01T00:00:00Z"), 0);
    assert_true(ms == 0);
    assert_int_equal(TP("2023-11-14T22:13:20.123Z"), 0);
    assert_true(ms == 1700000000123);
    assert_int_equal(TP("2023-11-14T22:13:20.123456789Z"), 0); /* Go's nanoseconds: cut */
    assert_true(ms == 1700000000123);
    assert_int_equal(TP("2023-11-15T00:13:20.5+02:00"), 0);
    assert_true(ms == 1700000000500);
    assert_int_equal(TP("2023-11-14t17:43:20-04:30"), 0);
    assert_true(ms == 1700000000000);
    assert_int_equal(TP("1970-01-01T00:00:00Z"), 0);
    assert_true(ms == 0); /* the epoch itself is also "0": unset and epoch coincide */
    assert_int_equal(TP("2024-02-29T00:00:00Z"), 0);
    const char *bad[] = {"",
                         "2023-11-14",
                         "2023-11-14T22:13:20",
                         "2023-11-14 22:13:20Z",
                         "2023-02-30T00:00:00Z",
                         "2023-02-29T00:00:00Z",
                         "2023-13-01T00:00:00Z",
                         "2023-11-14T24:00:00Z",
                         "2023-11-14T22:60:00Z",
                         "2023-11-14T22:13:60Z",
                         "2023-11-14T22:13:20.Z",
                         "2023-11-14T22:13:20.1234567891Z",
                         "2023-11-14T22:13:20+0200",
                         "2023-11-14T22:13:20ZZ",
                         "0000-12-31T23:59:59Z",
                         "0001-01-01T00:00:00+00:01",
                         "2023-1x-14T22:13:20Z"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (TP(bad[i]) != SM_EINVAL) fail_msg("accepted bad time '%s'", bad[i]);
    }
#undef TP
}

static void test_msgpack_roundtrip(void **state)
{
    (void)state;
    uint8_t buf[1024];
    size_t len;
    struct sm_backend_health h = sample_health(), h2;
    memset(&h2, 0xa5, sizeof h2);
    assert_int_equal(sm_health_encode(&h, buf, sizeof buf, &len), 0);
    assert_int_equal(sm_health_decode(buf, len, &h2), 0);
    assert_health_eq(&h, &h2);
    /* too small a buffer is reported, not overrun */
    assert_int_equal(sm_health_encode(&h, buf, len - 1, &len), SM_EVALUELEN);

    struct sm_circuit_breaker c = sample_circuit(), c2;
    assert_int_equal(sm_circuit_encode(&c, buf, sizeof buf, &len), 0);
    assert_int_equal(sm_circuit_decode(buf, len, &c2), 0);
    assert_circuit_eq(&c, &c2);

    struct sm_lb_state l, l2;
    sample_lb(&l);
    sm_lb_state_init(&l2);
    assert_int_equal(sm_lb_state_encode(&l, buf, sizeof buf, &len), 0);
    assert_int_equal(sm_lb_state_decode(buf, len, &l2), 0);
    assert_lb_eq(&l, &l2);
    /* decoding again into a used state frees the old maps (valgrind/ASan check) */
    assert_int_equal(sm_lb_state_decode(buf, len, &l2), 0);
    assert_lb_eq(&l, &l2);
    sm_lb_state_close(&l2);
    sm_lb_state_close(&l);
    assert_null(l.backend_states);
    assert_int_equal(l.n_backend_states, 0);
}

/* A map with one extra key (from a newer writer) decodes; every field still read. */
static void test_msgpack_unknown_field(void **state)
{
    (void)state;
    uint8_t buf[1024];
    size_t len;
    struct sm_backend_health h = sample_health(), h2;
    assert_int_equal(sm_health_encode(&h, buf, sizeof buf, &len), 0);
    assert_int_equal(buf[0], 0x8a); /* fixmap of 10 fields */
    uint8_t ext[1100];
    ext[0] = 0x8b;
    memcpy(ext + 1, buf + 1, len - 1);
    const uint8_t extra[] = {0xa4, 'z', 'o', 'n', 'e', 0x92, 0xa2, 'e', 'u',
                             0xcb, 0,   0,   0,   0,   0,    0,    0,   0};
    memcpy(ext + len, extra, sizeof extra);
    assert_int_equal(sm_health_decode(ext, len + sizeof extra, &h2), 0);
    assert_health_eq(&h, &h2);
    /* missing fields read as zero */
    const uint8_t small[] = {0x81, 0xa3, 'u', 'r', 'l', 0xa1, 'x'};
    assert_int_equal(sm_health_decode(small, sizeof small, &h2), 0);
    assert_string_equal(h2.url, "x");
    assert_int_equal(h2.state, SM_BACKEND_UNKNOWN);
    assert_true(h2.version == 0);
}

static void test_msgpack_bad(void **state)
{
    (void)state;
    uint8_t buf[1024], mut[1024];
    size_t len;
    struct sm_backend_health h = sample_health(), h2;
    assert_int_equal(sm_health_encode(&h, buf, sizeof buf, &len), 0);
    /* every truncation fails */
    for (size_t n = 0; n < len; n++)
        if (sm_health_decode(buf, n, &h2) != SM_EINVAL) fail_msg("truncation at %zu accepted", n);
    /* trailing garbage */
    buf[len] = 0xc0;
    assert_int_equal(sm_health_decode(buf, len + 1, &h2), SM_EINVAL);

    const uint8_t dup[] = {0x82, 0xa3, 'u', 'r', 'l', 0xa1, 'x', 0xa3, 'u', 'r', 'l', 0xa1, 'y'};
    assert_int_equal(sm_health_decode(dup, sizeof dup, &h2), SM_EINVAL);
    const uint8_t badstate[] = {0x81, 0xa5, 's', 't', 'a', 't', 'e', 0xa4, 's', 'i', 'c', 'k'};
    assert_int_equal(sm_health_decode(badstate, sizeof badstate, &h2), SM_EINVAL);
    const uint8_t wrongtype[] = {0x81, 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0xa1, '1'};
    assert_int_equal(sm_health_decode(wrongtype, sizeof wrongtype, &h2), SM_EINVAL);
    const uint8_t nulstr[] = {0x81, 0xa3, 'u', 'r', 'l', 0xa3, 'a', 0, 'b'};
    assert_int_equal(sm_health_decode(nulstr, sizeof nulstr, &h2), SM_EINVAL);
    const uint8_t notmap[] = {0x91, 0x01};
    assert_int_equal(sm_health_decode(notmap, sizeof notmap, &h2), SM_EINVAL);
    const uint8_t biglie[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(sm_health_decode(biglie, sizeof biglie, &h2), SM_EINVAL);
    /* a url one byte too long */
    uint8_t longurl[300] = {0x81, 0xa3, 'u', 'r', 'l', 0xd9, SM_MODEL_URL_MAX + 1};
    memset(longurl + 7, 'u', SM_MODEL_URL_MAX + 1);
    assert_int_equal(sm_health_decode(longurl, 7 + SM_MODEL_URL_MAX + 1, &h2), SM_EINVAL);
    longurl[6] = SM_MODEL_URL_MAX;
    assert_int_equal(sm_health_decode(longurl, 7 + SM_MODEL_URL_MAX, &h2), 0);
    assert_int_equal(strlen(h2.url), SM_MODEL_URL_MAX);

    /* int32 fields refuse values beyond 32 bits */
    struct sm_circuit_breaker c2;
    const uint8_t big32[] = {0x81, 0xb1, 'c', 'o', 'n', 's', 'e', 'c',  'u',  't', 'i', 'v',
                             'e',  '_',  'f', 'a', 'i', 'l', 's', 0xce, 0x80, 0,   0,   0};
    assert_int_equal(sm_circuit_decode(big32, sizeof big32, &c2), SM_EINVAL);

    /* LB: duplicate URL in a map, too many entries, a non-integer count */
    struct sm_lb_state l;
    sm_lb_state_init(&l);
    const uint8_t dupurl[] = {0x81, 0xae, 'b', 'a', 'c',  'k',  'e', 'n',  'd',  '_', 's', 't',
                              'a',  't',  'e', 's', 0x82, 0xa1, 'u', 0x01, 0xa1, 'u', 0x02};
    assert_int_equal(sm_lb_state_decode(dupurl, sizeof dupurl, &l), SM_EINVAL);
    assert_null(l.backend_states);
    uint8_t many[16] = {0x81, 0xae, 'b', 'a', 'c', 'k', 'e', 'n',
                        'd',  '_',  's', 't', 'a', 't', 'e', 's'};
    uint8_t manybuf[4096];
    memcpy(manybuf, many, 16);
    size_t off = 16;
    manybuf[off++] = 0xde;
    manybuf[off++] = (SM_LB_MAX_ENTRIES + 1) >> 8;
    manybuf[off++] = (SM_LB_MAX_ENTRIES + 1) & 0xff;
    for (int i = 0; i <= SM_LB_MAX_ENTRIES; i++) {
        manybuf[off++] = 0xa4;
        off += (size_t)sprintf((char *)manybuf + off, "u%03d", i);
        manybuf[off++] = 0x01;
    }
    assert_int_equal(sm_lb_state_decode(manybuf, off, &l), SM_EINVAL);
    const uint8_t strcount[] = {0x81, 0xae, 'b', 'a', 'c', 'k',  'e',  'n', 'd',  '_', 's',
                                't',  'a',  't', 'e', 's', 0x81, 0xa1, 'u', 0xa1, '1'};
    assert_int_equal(sm_lb_state_decode(strcount, sizeof strcount, &l), SM_EINVAL);

    /* random corruption never crashes and never leaves a half-filled LB state */
    uint64_t seed = prop_seed();
    struct prop_rng rng = {seed};
    struct sm_lb_state src;
    sample_lb(&src);
    assert_int_equal(sm_lb_state_encode(&src, buf, sizeof buf, &len), 0);
    size_t accepted = 0, cases = prop_cases(100000) / 5;
    for (size_t i = 0; i < cases; i++) {
        memcpy(mut, buf, len);
        size_t flips = 1 + prop_below(&rng, 4);
        for (size_t f = 0; f < flips; f++)
            mut[prop_below(&rng, len)] ^= (uint8_t)(1 + prop_below(&rng, 255));
        size_t n = prop_below(&rng, 8) == 0 ? prop_below(&rng, len + 1) : len;
        int rc = sm_lb_state_decode(mut, n, &l);
        if (rc == 0) {
            accepted++;
        } else if (rc != SM_EINVAL || l.backend_states || l.n_weighted_counters) {
            PROP_FAIL(seed, i, "bad decode result %d", rc);
        }
        rc = sm_health_decode(mut, n, &h2);
        if (rc != 0 && rc != SM_EINVAL) PROP_FAIL(seed, i, "health decode gave %d", rc);
    }
    assert_true(accepted < cases);
    sm_lb_state_close(&l);
    sm_lb_state_close(&src);
}

static void test_json_exact(void **state)
{
    (void)state;
    struct sm_backend_health h = sample_health();
    char *s = sm_health_to_json_str(&h);
    assert_non_null(s);
    assert_string_equal(s, "{\"url\":\"http://10.0.0.1:8080\",\"state\":\"unhealthy\","
                           "\"last_check\":\"2023-11-14T22:13:20.123Z\","
                           "\"last_healthy\":\"2023-11-14T22:12:20Z\",\"consecutive_fails\":3,"
                           "\"consecutive_oks\":0,\"rate_limit_count\":7,\"updated_by\":\"node-a\","
                           "\"updated_at\":\"2023-11-14T22:13:20.5Z\",\"version\":42}");
    free(s);
    struct sm_circuit_breaker c = sample_circuit();
    s = sm_circuit_to_json_str(&c);
    assert_string_equal(s, "{\"backend_url\":\"http://10.0.0.2:9090\",\"state\":\"half-open\","
                           "\"last_state_change\":\"1969-12-31T23:59:59.999Z\","
                           "\"consecutive_fails\":5,\"consecutive_success\":2147483647,"
                           "\"requests_in_half_open\":-2147483648,\"updated_by\":\"node-b\","
                           "\"updated_at\":\"0001-01-01T00:00:00Z\",\"version\":9}");
    free(s);
    struct sm_lb_state l;
    sample_lb(&l);
    s = sm_lb_state_to_json_str(&l);
    assert_string_equal(s, "{\"strategy\":\"least-connections\",\"backend_states\":{\"http://a\":"
                           "12,\"http://b\":0,\"http://c\":-4},\"last_rotation\":-7,"
                           "\"weighted_counters\":{\"http://a\":5,\"http://c\":1},"
                           "\"updated_by\":\"node-c\",\"updated_at\":\"2023-11-14T22:13:20.001Z\","
                           "\"version\":9223372036854775807}");
    free(s);
    sm_lb_state_close(&l);
}

static void test_json_roundtrip(void **state)
{
    (void)state;
    char err[200];
    struct sm_backend_health h = sample_health(), h2;
    char *s = sm_health_to_json_str(&h);
    assert_int_equal(sm_health_from_json_str(s, strlen(s), &h2, err, sizeof err), 0);
    assert_health_eq(&h, &h2);
    free(s);
    struct sm_circuit_breaker c = sample_circuit(), c2;
    s = sm_circuit_to_json_str(&c);
    assert_int_equal(sm_circuit_from_json_str(s, strlen(s), &c2, err, sizeof err), 0);
    assert_circuit_eq(&c, &c2);
    free(s);
    struct sm_lb_state l, l2;
    sample_lb(&l);
    sm_lb_state_init(&l2);
    s = sm_lb_state_to_json_str(&l);
    assert_int_equal(sm_lb_state_from_json_str(s, strlen(s), &l2, err, sizeof err), 0);
    assert_lb_eq(&l, &l2);
    free(s);
    sm_lb_state_close(&l);
    /* Go's nil maps arrive as null; times as integer ms are fine too */
    const char *go = "{\"strategy\":\"rr\",\"backend_states\":null,\"weighted_counters\":{},"
                     "\"updated_at\":1700000000000}";
    assert_int_equal(sm_lb_state_from_json_str(go, strlen(go), &l2, err, sizeof err), 0);
    assert_int_equal(l2.n_backend_states, 0);
    assert_true(l2.updated_at_ms == 1700000000000);
    sm_lb_state_close(&l2);
    /* out-of-range times go out as integers and come back exactly */
    h.last_check_ms = INT64_MIN;
    s = sm_health_to_json_str(&h);
    assert_non_null(strstr(s, "\"last_check\":-9223372036854775808"));
    assert_int_equal(sm_health_from_json_str(s, strlen(s), &h2, err, sizeof err), 0);
    assert_health_eq(&h, &h2);
    free(s);
}

/* Random models through both codecs: every field survives. */
static void test_roundtrip_property(void **state)
{
    (void)state;
    uint64_t seed = prop_seed();
    struct prop_rng rng = {seed};
    size_t cases = prop_cases(100000) / 10, json_ok = 0;
    uint8_t buf[1024];
    char err[200];
    for (size_t i = 0; i < cases; i++) {
        struct sm_backend_health h, h2, h3;
        memset(&h, 0, sizeof h);
        size_t ul = 1 + prop_below(&rng, SM_MODEL_URL_MAX);
        bool binary = prop_below(&rng, 8) == 0; /* mostly text, sometimes any byte */
        for (size_t k = 0; k < ul; k++)
            h.url[k] = (char)(binary ? 1 + prop_below(&rng, 255) : ' ' + prop_below(&rng, 95));
        size_t nl = prop_below(&rng, SM_MODEL_NODE_MAX + 1);
        for (size_t k = 0; k < nl; k++) h.updated_by[k] = (char)(' ' + prop_below(&rng, 95));
        h.state = (enum sm_backend_state)prop_below(&rng, 5);
        h.last_check_ms = (int64_t)prop_next(&rng);
        h.last_healthy_ms = (int64_t)(prop_next(&rng) % 253402300799999u);
        h.consecutive_fails = (int64_t)prop_next(&rng) >> prop_below(&rng, 64);
        h.consecutive_oks = (int64_t)prop_below(&rng, 1000);
        h.rate_limit_count = -(int64_t)prop_below(&rng, 1000);
        h.updated_at_ms = prop_below(&rng, 2) ? 0 : (int64_t)prop_below(&rng, 4102444800000u);
        h.version = (int64_t)prop_next(&rng);
        size_t len;
        if (sm_health_encode(&h, buf, sizeof buf, &len) || sm_health_decode(buf, len, &h2))
            PROP_FAIL(seed, i, "msgpack failed");
        if (memcmp(&h, &h2, sizeof h) != 0) PROP_FAIL(seed, i, "msgpack round trip differs");
        json_t *j = sm_health_to_json(&h);
        int rc = sm_health_from_json(j, &h3, err, sizeof err);
        json_decref(j);
        /* url bytes above 0x7f may not be valid UTF-8: jansson refuses those */
        if (rc == 0 && memcmp(&h, &h3, sizeof h) != 0)
            PROP_FAIL(seed, i, "JSON round trip differs");
        if (rc == 0)
            json_ok++;
        else if (!binary)
            PROP_FAIL(seed, i, "JSON refused: %s", err);
    }
    assert_true(json_ok > cases / 2);
}

static void expect_json_err(const char *txt, int which, const char *needle)
{
    char err[256];
    struct sm_backend_health h;
    struct sm_circuit_breaker c;
    struct sm_lb_state l;
    int rc;
    sm_lb_state_init(&l);
    if (which == 0)
        rc = sm_health_from_json_str(txt, strlen(txt), &h, err, sizeof err);
    else if (which == 1)
        rc = sm_circuit_from_json_str(txt, strlen(txt), &c, err, sizeof err);
    else
        rc = sm_lb_state_from_json_str(txt, strlen(txt), &l, err, sizeof err);
    if (rc != SM_EINVAL) fail_msg("accepted: %s", txt);
    if (!strstr(err, needle)) fail_msg("error '%s' does not name '%s'", err, needle);
    assert_null(l.backend_states);
    sm_lb_state_close(&l);
}

static void test_json_bad(void **state)
{
    (void)state;
    expect_json_err("{\"consecutive_fails\":\"3\"}", 0, "'consecutive_fails': expected an integer");
    expect_json_err("{\"consecutive_fails\":3.5}", 0, "'consecutive_fails'");
    expect_json_err("{\"state\":\"sick\"}", 0, "'state'");
    expect_json_err("{\"state\":1}", 0, "'state'");
    expect_json_err("{\"consecutive_fail\":3}", 0, "unknown field 'consecutive_fail'");
    expect_json_err("{\"last_check\":\"yesterday\"}", 0, "'last_check'");
    expect_json_err("{\"last_check\":true}", 0, "'last_check'");
    expect_json_err("{\"url\":5}", 0, "'url': expected a string");
    expect_json_err("{\"updated_by\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    "aaaaa\"}",
                    0, "'updated_by': longer than 64 bytes");
    expect_json_err("{\"url\":\"a\\u0000b\"}", 0, "bad JSON at line 1 column 17");
    /* built directly (JSON_ALLOW_NUL input, say), a NUL is refused by field */
    json_t *j = json_pack("{s:s%}", "url", "a\0b", (size_t)3);
    assert_non_null(j);
    char err[128];
    struct sm_backend_health h;
    assert_int_equal(sm_health_from_json(j, &h, err, sizeof err), SM_EINVAL);
    assert_string_equal(err, "field 'url': contains a NUL byte");
    json_decref(j);
    assert_int_equal(sm_health_from_json(NULL, &h, NULL, 0), SM_EINVAL);
    expect_json_err("[1,2]", 0, "expected a JSON object");
    expect_json_err("{\"url\":", 0, "bad JSON at line 1");
    expect_json_err("{\"url\":\"a\",\"url\":\"b\"}", 0, "bad JSON");
    expect_json_err("{\"consecutive_success\":2147483648}", 1,
                    "'consecutive_success': out of the 32-bit range");
    expect_json_err("{\"state\":\"unhealthy\"}", 1, "'state': expected one of closed");
    expect_json_err("{\"backend_states\":{\"u\":\"1\"}}", 2,
                    "'backend_states': value of 'u' is not an integer");
    expect_json_err("{\"weighted_counters\":[1]}", 2, "'weighted_counters': expected an object");
    expect_json_err("{\"backend_states\":{\"u\":1},\"last_rotation\":\"x\"}", 2, "'last_rotation'");
    expect_json_err("{\"backend_states\":{\"\":1}}", 2, "'backend_states': bad URL");
}

static void test_precedence_of_models(void **state)
{
    (void)state;
    struct crdt_resolvers *rs = crdt_resolvers_new_default();
    uint8_t buf[1024];
    size_t len;
    struct sm_backend_health h = sample_health();
    const uint8_t want_h[] = {0, 1, 4, 2, 3}; /* by enum sm_backend_state */
    for (int st = 0; st < 5; st++) {
        h.state = (enum sm_backend_state)st;
        assert_int_equal(sm_health_encode(&h, buf, sizeof buf, &len), 0);
        assert_int_equal(crdt_resolvers_precedence(rs, "backend:health:u", 16, buf, len),
                         want_h[st]);
        char *s = sm_health_to_json_str(&h);
        assert_int_equal(
            crdt_resolvers_precedence(rs, "backend:health:u", 16, (uint8_t *)s, strlen(s)),
            want_h[st]);
        free(s);
    }
    struct sm_circuit_breaker c = sample_circuit();
    const uint8_t want_c[] = {1, 3, 2}; /* closed, open, half-open */
    for (int st = 0; st < 3; st++) {
        c.state = (enum sm_circuit_state)st;
        assert_int_equal(sm_circuit_encode(&c, buf, sizeof buf, &len), 0);
        assert_int_equal(crdt_resolvers_precedence(rs, "circuit:u", 9, buf, len), want_c[st]);
        char *s = sm_circuit_to_json_str(&c);
        assert_int_equal(crdt_resolvers_precedence(rs, "circuit:u", 9, (uint8_t *)s, strlen(s)),
                         want_c[st]);
        free(s);
    }
    crdt_resolvers_delete(rs);
}

/* A minimal local writer: what a backend does with a model's records. */
struct writer {
    struct crdt_replica *rep;
    struct crdt_resolvers *rs;
    struct crdt_hlc hlc;
    const char *node;
    uint64_t wall;
    int emitted;
    char keys[8][300];
};

static int write_rec(const char *key, size_t klen, const uint8_t *value, size_t vlen,
                     uint64_t version, void *arg)
{
    struct writer *w = arg;
    if (w->emitted < 8) snprintf(w->keys[w->emitted], 300, "%.*s", (int)klen, key);
    w->emitted++;
    struct crdt_rec_view v = {
        .key = key,
        .key_len = klen,
        .value = value,
        .value_len = vlen,
        .version = version ? version : crdt_replica_version(w->rep, key, klen) + 1,
        .hlc = crdt_hlc_now(&w->hlc, w->wall),
        .origin = w->node,
        .origin_len = strlen(w->node),
        .precedence = crdt_resolvers_precedence(w->rs, key, klen, value, vlen)};
    return crdt_replica_merge(w->rep, &v) < 0 ? SM_ENOMEM : 0;
}

static bool only_n1(const char *node, size_t len, void *arg)
{
    (void)arg;
    return len == 2 && memcmp(node, "n1", 2) == 0;
}

static void test_records(void **state)
{
    (void)state;
    struct writer w = {.rep = crdt_replica_new(),
                       .rs = crdt_resolvers_new_default(),
                       .node = "n1",
                       .wall = 1700000000000};
    crdt_hlc_init(&w.hlc, 0);
    char key[300];
    assert_int_equal(sm_health_key("http://a", key, sizeof key), 23);
    assert_string_equal(key, "backend:health:http://a");
    assert_int_equal(sm_circuit_key("http://a", key, sizeof key), 16);
    assert_string_equal(key, "circuit:http://a");
    assert_int_equal(sm_lb_state_key("round-robin", key, sizeof key), 20);
    assert_string_equal(key, "lb:state:round-robin");
    assert_int_equal(sm_lb_conn_key("http://a", "n1", key, sizeof key), 19);
    assert_string_equal(key, "lb:conn:http://a/n1");
    assert_int_equal(sm_health_key("", key, sizeof key), SM_EINVAL);
    assert_int_equal(sm_lb_conn_key("http://a", "n/1", key, sizeof key), SM_EINVAL);
    assert_int_equal(sm_health_key("http://a", key, 10), SM_EKEYLEN);

    /* health: one record; unhealthy outranks healthy within a version */
    struct sm_backend_health h = sample_health(), got;
    h.state = SM_BACKEND_HEALTHY;
    assert_int_equal(sm_health_records(&h, write_rec, &w), 0);
    assert_int_equal(w.emitted, 1);
    assert_string_equal(w.keys[0], "backend:health:http://10.0.0.1:8080");
    w.node = "n0"; /* a concurrent writer of the same version, lower origin and later hlc */
    w.wall += 1000;
    h.state = SM_BACKEND_UNHEALTHY;
    strcpy(h.updated_by, "n0");
    assert_int_equal(sm_health_records(&h, write_rec, &w), 0);
    assert_int_equal(sm_health_load(w.rep, h.url, 0, &got), 0);
    assert_int_equal(got.state, SM_BACKEND_UNHEALTHY);
    assert_true(got.version == 42);
    const struct crdt_rec *rec = crdt_replica_find(w.rep, w.keys[0], strlen(w.keys[0]));
    struct crdt_rec_view v;
    crdt_rec_view(w.rep, rec, &v);
    assert_int_equal(v.precedence, CRDT_PREC_HEALTH_UNHEALTHY);
    assert_true(v.version == 42);
    h.version = 0;
    assert_int_equal(sm_health_records(&h, write_rec, &w), SM_EINVAL);
    assert_int_equal(sm_health_load(w.rep, "http://nope", 0, &got), SM_ENOTFOUND);

    struct sm_circuit_breaker c = sample_circuit(), cgot;
    w.emitted = 0;
    assert_int_equal(sm_circuit_records(&c, write_rec, &w), 0);
    assert_string_equal(w.keys[0], "circuit:http://10.0.0.2:9090");
    assert_int_equal(sm_circuit_load(w.rep, c.backend_url, 0, &cgot), 0);
    assert_circuit_eq(&c, &cgot);

    /* load balancer: two nodes' slots sum; the shared record keeps the rest */
    struct sm_lb_state l, agg;
    sample_lb(&l);
    sm_lb_state_init(&agg);
    w.emitted = 0;
    w.node = "n1";
    assert_int_equal(sm_lb_state_records(&l, "n1", write_rec, &w), 0);
    assert_int_equal(w.emitted, 4);
    assert_string_equal(w.keys[0], "lb:state:least-connections");
    assert_string_equal(w.keys[1], "lb:conn:http://a/n1");
    assert_string_equal(w.keys[3], "lb:conn:http://c/n1");
    struct sm_lb_state l2;
    sm_lb_state_init(&l2);
    strcpy(l2.strategy, "least-connections");
    assert_int_equal(sm_lb_state_set_conn(&l2, "http://a", 30), 0);
    assert_int_equal(sm_lb_state_set_conn(&l2, "http://d", 2), 0);
    strcpy(l2.updated_by, "n2");
    l2.version = 1; /* older than n1's: the shared record stays n1's */
    w.node = "n2";
    assert_int_equal(sm_lb_state_records(&l2, NULL, write_rec, &w), 0);
    assert_int_equal(sm_lb_state_load(w.rep, "least-connections", NULL, NULL, 0, &agg), 0);
    assert_int_equal(agg.n_backend_states, 4);
    assert_true(sm_lb_state_conn(&agg, "http://a", NULL) == 42);
    assert_true(sm_lb_state_conn(&agg, "http://c", NULL) == -4);
    assert_true(sm_lb_state_conn(&agg, "http://d", NULL) == 2);
    assert_int_equal(agg.last_rotation, -7);
    assert_true(sm_lb_state_weight(&agg, "http://a", NULL) == 5);
    assert_string_equal(agg.updated_by, "node-c");
    /* n2 dies: its slots stop counting */
    assert_int_equal(sm_lb_state_load(w.rep, "least-connections", only_n1, NULL, 0, &agg), 0);
    assert_int_equal(agg.n_backend_states, 3);
    assert_true(sm_lb_state_conn(&agg, "http://a", NULL) == 12);
    bool found = true;
    assert_true(sm_lb_state_conn(&agg, "http://d", &found) == 0);
    assert_false(found);
    /* a node rewrites its slot: the stored version goes up by one */
    assert_int_equal(sm_lb_state_set_conn(&l2, "http://a", 1), 0);
    l2.version = 2;
    assert_int_equal(sm_lb_state_records(&l2, "n2", write_rec, &w), 0);
    assert_int_equal(crdt_replica_version(w.rep, "lb:conn:http://a/n2", 19), 2);
    assert_int_equal(sm_lb_state_load(w.rep, "least-connections", NULL, NULL, 0, &agg), 0);
    assert_true(sm_lb_state_conn(&agg, "http://a", NULL) == 13);
    /* a strategy with no record but slots: the sums still come back */
    assert_int_equal(sm_lb_state_load(w.rep, "random", NULL, NULL, 0, &agg), 0);
    assert_string_equal(agg.strategy, "random");
    assert_int_equal(agg.n_backend_states, 4);
    sm_lb_state_close(&agg);
    struct crdt_replica *empty = crdt_replica_new();
    assert_int_equal(sm_lb_state_load(empty, "random", NULL, NULL, 0, &agg), SM_ENOTFOUND);
    crdt_replica_delete(empty);
    /* bad inputs */
    assert_int_equal(sm_lb_state_records(&l2, "a/b", write_rec, &w), SM_EINVAL);
    l2.strategy[0] = '\0';
    assert_int_equal(sm_lb_state_records(&l2, "n2", write_rec, &w), SM_EINVAL);
    assert_int_equal(sm_lb_state_set_conn(&l2, "", 1), SM_EINVAL);
    for (int i = 0; sm_lb_state_set_weight(&l2, "x", 0) == 0 && i < 5; i++) {
    }
    char u[16];
    int rc = 0;
    for (int i = 0; i <= SM_LB_MAX_ENTRIES && rc == 0; i++) {
        snprintf(u, sizeof u, "u%d", i);
        rc = sm_lb_state_set_weight(&l2, u, i);
    }
    assert_int_equal(rc, SM_ERANGE);
    assert_int_equal(l2.n_weighted_counters, SM_LB_MAX_ENTRIES);
    sm_lb_state_close(&agg);
    sm_lb_state_close(&l2);
    sm_lb_state_close(&l);
    crdt_resolvers_delete(w.rs);
    crdt_replica_delete(w.rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enums),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_msgpack_roundtrip),
        cmocka_unit_test(test_msgpack_unknown_field),
        cmocka_unit_test(test_msgpack_bad),
        cmocka_unit_test(test_json_exact),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_roundtrip_property),
        cmocka_unit_test(test_json_bad),
        cmocka_unit_test(test_precedence_of_models),
        cmocka_unit_test(test_records),
    };
    return cmocka_run_group_tests_name("crdt_models", tests, NULL, NULL);
}
