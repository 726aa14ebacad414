/* test_crdt_mpread.c: the bounded msgpack reader against msgpack-c's packer,
 * and hostile bytes thrown at every value parser of crdt/. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "crdt/mpread.h"
#include "crdt/resolver.h"
#include "crdt_prop.h"
#include "statemesh.h"

static void test_ints(void **state)
{
    (void)state;
    const int64_t s[] = {
        0,         1,  127, 128, 255,  256,  65535,  65536,  INT32_MAX, (int64_t)INT32_MAX + 1,
        INT64_MAX, -1, -32, -33, -128, -129, -32768, -32769, INT32_MIN, (int64_t)INT32_MIN - 1,
        INT64_MIN};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        /* both signed and unsigned packers, so every width and sign marker shows up */
        assert_int_equal(msgpack_pack_int64(&pk, s[i]), 0);
        if (s[i] >= 0) assert_int_equal(msgpack_pack_uint64(&pk, (uint64_t)s[i]), 0);
        struct crdt_mp m;
        crdt_mp_init(&m, sb.data, sb.size);
        int64_t v;
        assert_int_equal(crdt_mp_int(&m, &v), 0);
        assert_true(v == s[i]);
        if (s[i] >= 0) {
            uint64_t u;
            assert_int_equal(crdt_mp_uint(&m, &u), 0);
            assert_true(u == (uint64_t)s[i]);
        } else {
            uint64_t u;
            crdt_mp_init(&m, sb.data, sb.size);
            assert_int_equal(crdt_mp_uint(&m, &u), SM_EINVAL);
            assert_ptr_equal(m.p, (const uint8_t *)sb.data); /* cursor unchanged */
            crdt_mp_int(&m, &v);
        }
        assert_int_equal(crdt_mp_left(&m), 0);
        msgpack_sbuffer_destroy(&sb);
    }
    const uint8_t big[] = {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 1};
    struct crdt_mp m;
    int64_t v;
    uint64_t u;
    crdt_mp_init(&m, big, sizeof big);
    assert_int_equal(crdt_mp_int(&m, &v), SM_EINVAL);
    assert_int_equal(crdt_mp_left(&m), sizeof big);
    assert_int_equal(crdt_mp_uint(&m, &u), 0);
    assert_true(u == (UINT64_C(1) << 63) + 1);
    for (size_t n = 0; n < sizeof big; n++) {
        crdt_mp_init(&m, big, n);
        assert_int_equal(crdt_mp_uint(&m, &u), SM_EINVAL);
    }
    const uint8_t nil[] = {0xc0, 0xc2};
    crdt_mp_init(&m, nil, 2);
    assert_true(crdt_mp_nil(&m));
    assert_false(crdt_mp_nil(&m));
    assert_int_equal(crdt_mp_int(&m, &v), SM_EINVAL);
}

static void test_strs(void **state)
{
    (void)state;
    const size_t lens[] = {0, 1, 31, 32, 255, 256, 65535, 65536};
    char *body = malloc(70000);
    assert_non_null(body);
    memset(body, 'x', 70000);
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_str_with_body(&pk, body, lens[i]);
        struct crdt_mp m;
        crdt_mp_init(&m, sb.data, sb.size);
        const char *s;
        uint32_t n;
        assert_int_equal(crdt_mp_str(&m, &s, &n), 0);
        assert_int_equal(n, lens[i]);
        assert_int_equal(crdt_mp_left(&m), 0);
        crdt_mp_init(&m, sb.data, sb.size - 1); /* one byte short */
        if (sb.size > 1 || lens[i]) assert_int_equal(crdt_mp_str(&m, &s, &n), SM_EINVAL);
        msgpack_sbuffer_destroy(&sb);
    }
    free(body);
}

/* Pack a random object tree with msgpack-c. */
static void pack_random(msgpack_packer *pk, struct prop_rng *r, int depth)
{
    static const char bytes[300] = {0};
    unsigned kind = (unsigned)prop_below(r, depth >= 4 ? 10 : 12);
    switch (kind) {
    case 0:
        msgpack_pack_nil(pk);
        break;
    case 1:
        prop_below(r, 2) ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        break;
    case 2:
        msgpack_pack_int64(pk, (int64_t)prop_next(r) >> prop_below(r, 64));
        break;
    case 3:
        msgpack_pack_uint64(pk, prop_next(r) >> prop_below(r, 64));
        break;
    case 4:
        msgpack_pack_float(pk, 1.5f);
        break;
    case 5:
        msgpack_pack_double(pk, -2.25);
        break;
    case 6:
        msgpack_pack_str_with_body(pk, bytes, (size_t)prop_below(r, 300));
        break;
    case 7:
        msgpack_pack_bin_with_body(pk, bytes, (size_t)prop_below(r, 300));
        break;
    case 8: {
        static const size_t ext[] = {1, 2, 4, 8, 16, 0, 3, 17, 256};
        msgpack_pack_ext_with_body(pk, bytes, ext[prop_below(r, 9)], (int8_t)prop_below(r, 100));
        break;
    }
    case 9:
        msgpack_pack_v4raw(pk, 0);
        break; /* raw with no body: a fixstr of 0 */
    case 10: {
        size_t n = (size_t)prop_below(r, prop_below(r, 8) == 0 ? 40 : 5);
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++) pack_random(pk, r, depth + 1);
        break;
    }
    default: {
        size_t n = (size_t)prop_below(r, prop_below(r, 8) == 0 ? 20 : 4);
        msgpack_pack_map(pk, n);
        for (size_t i = 0; i < 2 * n; i++) pack_random(pk, r, depth + 1);
    }
    }
}

static void test_skip_property(void **state)
{
    (void)state;
    uint64_t seed = prop_seed();
    struct prop_rng rng = {seed};
    size_t cases = prop_cases(100000) / 10;
    for (size_t i = 0; i < cases; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        pack_random(&pk, &rng, 0);
        pack_random(&pk, &rng, 0);
        /* the first object ends where a fresh skip of it ends */
        struct crdt_mp m;
        crdt_mp_init(&m, sb.data, sb.size);
        if (crdt_mp_skip(&m)) PROP_FAIL(seed, i, "skip of a valid object failed");
        size_t first = sb.size - crdt_mp_left(&m);
        if (crdt_mp_skip(&m) || crdt_mp_left(&m) != 0) PROP_FAIL(seed, i, "second skip failed");
        /* any truncation of the first object fails and leaves the cursor alone */
        size_t cut = (size_t)prop_below(&rng, first);
        crdt_mp_init(&m, sb.data, cut);
        if (crdt_mp_skip(&m) != SM_EINVAL || crdt_mp_left(&m) != cut)
            PROP_FAIL(seed, i, "truncated object (%zu of %zu bytes) accepted", cut, first);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* Random bytes (biased towards msgpack markers and JSON punctuation) never make
 * a parser read out of bounds (ASan/valgrind watch) or return nonsense. */
static void test_garbage(void **state)
{
    (void)state;
    uint64_t seed = prop_seed();
    struct prop_rng rng = {seed};
    size_t cases = prop_cases(100000);
    struct crdt_resolvers *rs = crdt_resolvers_new_default();
    static const uint8_t alphabet[] = "{}[]\":,\\ state open unhealthy 0123456789-";
    for (size_t i = 0; i < cases; i++) {
        size_t len = (size_t)prop_below(&rng, 48);
        /* exact-size heap buffer: one byte of overread is an ASan/valgrind error */
        uint8_t *b = malloc(len ? len : 1);
        assert_non_null(b);
        for (size_t k = 0; k < len; k++) {
            uint64_t x = prop_next(&rng);
            b[k] = (x & 3) == 0   ? alphabet[(x >> 8) % (sizeof alphabet - 1)]
                   : (x & 3) == 1 ? (uint8_t)(0x80 + (x >> 8) % 0x80)
                                  : (uint8_t)(x >> 8);
        }
        uint8_t ph = crdt_resolvers_precedence(rs, "backend:health:x", 16, b, len);
        uint8_t pc = crdt_resolvers_precedence(rs, "circuit:x", 9, b, len);
        if (ph > CRDT_PREC_HEALTH_UNHEALTHY || pc > CRDT_PREC_CIRCUIT_OPEN)
            PROP_FAIL(seed, i, "precedence out of range");
        int64_t v;
        int rc = crdt_counter_parse(b, len, &v);
        if (rc != 0 && rc != SM_EINVAL) PROP_FAIL(seed, i, "counter parse gave %d", rc);
        struct crdt_mp m;
        crdt_mp_init(&m, b, len);
        rc = crdt_mp_skip(&m);
        if ((rc != 0 && rc != SM_EINVAL) || crdt_mp_left(&m) > len)
            PROP_FAIL(seed, i, "skip misbehaved");
        free(b);
    }
    crdt_resolvers_delete(rs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ints),
        cmocka_unit_test(test_strs),
        cmocka_unit_test(test_skip_property),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests_name("crdt_mpread", tests, NULL, NULL);
}
