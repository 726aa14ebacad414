/* test_config.c: statemeshd configuration: YAML flattening, routes, flags over the
 * file, validation messages with FILE:LINE, store options, value parsers. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "backend.h"
#include "daemon_config.h"
#include "statemesh.h"

static struct smd_config *load(const char *yaml, char *err, size_t errlen, int *rc)
{
    struct smd_config *c = smd_config_new();
    assert_non_null(c);
    err[0] = '\0';
    *rc = smd_config_load_string(c, "t.yaml", yaml, strlen(yaml), err, errlen);
    return c;
}

static void test_flatten(void **state)
{
    (void)state;
    char err[512];
    int rc;
    struct smd_config *c = load("node_id: n1\n"
                                "mesh:\n"
                                "  bind: 127.0.0.1:7946\n"
                                "  join: [10.0.0.1:7946, 10.0.0.2:7946]\n"
                                "  gossip_interval: 200ms\n"
                                "redis.addr: 127.0.0.1:6379\n"
                                "http: 127.0.0.1:9000\n"
                                "log: debug\n"
                                "mesh.advertise:\n",
                                err, sizeof err, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(smd_config_get(c, "node_id"), "n1");
    assert_string_equal(smd_config_get(c, "mesh.bind"), "127.0.0.1:7946");
    assert_string_equal(smd_config_get(c, "mesh.join"), "10.0.0.1:7946,10.0.0.2:7946");
    assert_string_equal(smd_config_get(c, "mesh.gossip_interval"), "200ms");
    assert_string_equal(smd_config_get(c, "redis.addr"), "127.0.0.1:6379");
    assert_string_equal(smd_config_get(c, "http.listen"), "127.0.0.1:9000");
    assert_string_equal(smd_config_get(c, "log.level"), "debug");
    assert_null(smd_config_get(c, "mesh.advertise")); /* empty value: unset */
    assert_string_equal(smd_config_where(c, "mesh.join"), "t.yaml:4");
    assert_string_equal(smd_config_where(c, "node_id"), "t.yaml:1");
    assert_int_equal(smd_config_validate(c, err, sizeof err), 0);
    smd_config_delete(c);
}

static void test_routes_and_flags(void **state)
{
    (void)state;
    char err[512];
    int rc;
    struct smd_config *c = load("storage: mesh\n"
                                "routes:\n"
                                "  - prefix: \"lock:\"\n"
                                "    backend: raft\n"
                                "  - {prefix: \"session:\", backend: redis}\n",
                                err, sizeof err, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(smd_config_nroutes(c), 2);
    const char *p, *b, *w;
    smd_config_route(c, 1, &p, &b, &w);
    assert_string_equal(p, "session:");
    assert_string_equal(b, "redis");
    assert_string_equal(w, "t.yaml:5");
    /* a flag replaces the value and its source */
    assert_int_equal(smd_config_set(c, "storage", "local", "--storage"), 0);
    assert_string_equal(smd_config_get(c, "storage"), "local");
    assert_string_equal(smd_config_where(c, "storage"), "--storage");
    /* the first flag route replaces every file route; later flag routes add */
    assert_int_equal(smd_config_add_route(c, "a:", "local", "--route"), 0);
    assert_int_equal(smd_config_add_route(c, "b:", "mesh", "--route"), 0);
    assert_int_equal(smd_config_nroutes(c), 2);
    smd_config_route(c, 0, &p, &b, NULL);
    assert_string_equal(p, "a:");
    smd_config_route(c, 1, &p, &b, NULL);
    assert_string_equal(b, "mesh");
    smd_config_delete(c);
}

static void expect_error(const char *yaml, const char *want)
{
    char err[512];
    int rc;
    struct smd_config *c = load(yaml, err, sizeof err, &rc);
    if (rc == 0) rc = smd_config_validate(c, err, sizeof err);
    assert_int_equal(rc, SM_ECONFIG);
    assert_string_equal(err, want);
    smd_config_delete(c);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("a: 1\nmesh:\n  bindd: x\n", "t.yaml:1: unknown option 'a' (see docs/config.md)");
    expect_error("mesh:\n  bindd: x\n",
                 "t.yaml:2: unknown option 'mesh.bindd' (see docs/config.md)");
    expect_error("max_key: -1\n", "t.yaml:1: option max_key: '-1' is not an unsigned integer");
    expect_error("mesh:\n  gossip_interval: fast\n",
                 "t.yaml:2: option mesh.gossip_interval: 'fast' is not a duration such as 250ms, "
                 "2s or 1m");
    expect_error("mesh:\n  join: [a:1, nope]\n",
                 "t.yaml:2: option mesh.join: 'a:1,nope' is not HOST:PORT[,HOST:PORT…]");
    expect_error("log:\n  format: xml\n",
                 "t.yaml:2: option log.format: 'xml' is not logfmt or json");
    expect_error("http:\n  token: ''\n", "t.yaml:2: option http.token: must be a non-empty string");
    expect_error("node_id: 'has space'\n",
                 "t.yaml:1: option node_id: 'has space' is not 1..64 bytes without spaces");
    expect_error("x: 1\nx: 2\n", "t.yaml:2: option x: duplicate (first set at t.yaml:1)");
    expect_error("- a\n- b\n", "t.yaml:1: the top level must be a mapping of options");
    expect_error("a: [b\n", "t.yaml:2: YAML error: did not find expected ',' or ']' while parsing "
                            "a flow sequence");
    expect_error("routes:\n  - prefix: p\n",
                 "t.yaml:2: routes: each item needs both prefix and backend");
    expect_error("routes:\n  - {prefix: p, backend: mesh, weight: 2}\n",
                 "t.yaml:2: routes: unknown field 'weight' (expected prefix, backend)");
    expect_error("routes:\n  - {prefix: p, backend: mesh}\n  - {prefix: p, backend: raft}\n",
                 "t.yaml:3: routes: prefix 'p' is routed twice");
    expect_error("routes: 3\n", "t.yaml:1: routes: must be a list of {prefix: P, backend: B}");
    expect_error("a: 1\n---\nb: 2\n", "t.yaml:3: only one YAML document is allowed");
}

static void test_flag_errors(void **state)
{
    (void)state;
    struct smd_config *c = smd_config_new();
    char err[512];
    assert_int_equal(smd_config_set(c, "mesh.bind", "localhost", "--bind"), 0);
    assert_int_equal(smd_config_validate(c, err, sizeof err), SM_ECONFIG);
    assert_string_equal(err, "--bind: option mesh.bind: 'localhost' is not HOST:PORT");
    smd_config_delete(c);
    /* secrets are not echoed */
    c = smd_config_new();
    assert_int_equal(smd_config_set(c, "http.token", "", "f.yaml:3"), 0);
    assert_int_equal(smd_config_validate(c, err, sizeof err), SM_ECONFIG);
    assert_null(strstr(err, "''"));
    smd_config_delete(c);
}

static void test_to_store_and_annotate(void **state)
{
    (void)state;
    char err[512];
    int rc;
    struct smd_config *c = load("node_id: s1\n"
                                "max_value: 0\n"
                                "http:\n  listen: 127.0.0.1:0\n"
                                "log:\n  level: warn\n"
                                "routes:\n  - {prefix: \"x:\", backend: local}\n",
                                err, sizeof err, &rc);
    assert_int_equal(rc, 0);
    struct sm_config *sc = NULL;
    assert_int_equal(smd_config_to_store(c, &sc), 0);
    assert_string_equal(sm_config_get(sc, "node_id"), "s1");
    assert_null(sm_config_get(sc, "http.listen")); /* daemon settings stay behind */
    assert_null(sm_config_get(sc, "log.level"));
    assert_int_equal(sm_cfg_nroutes(sc), 1);
    /* the store rejects max_value 0; the daemon maps its message to FILE:LINE */
    struct sm_store *st = NULL;
    assert_int_equal(sm_store_new(EV_DEFAULT, sc, &st, err, sizeof err), SM_ECONFIG);
    char msg[600];
    smd_config_annotate(c, err, msg, sizeof msg);
    assert_string_equal(msg, "t.yaml:2: option max_value: 0 is out of range 1..67108864");
    smd_config_annotate(c, "nothing to see", msg, sizeof msg);
    assert_string_equal(msg, "nothing to see");
    /* "max_value" inside another word is not a match */
    smd_config_annotate(c, "option xmax_value: x", msg, sizeof msg);
    assert_string_equal(msg, "option xmax_value: x");
    sm_config_delete(sc);
    smd_config_delete(c);
}

static void test_parsers(void **state)
{
    (void)state;
    uint64_t u;
    assert_int_equal(smd_parse_size("1024", &u), 0);
    assert_int_equal(u, 1024);
    assert_int_equal(smd_parse_size("64k", &u), 0);
    assert_int_equal(u, 65536);
    assert_int_equal(smd_parse_size("2MiB", &u), 0);
    assert_int_equal(u, 2u << 20);
    assert_int_equal(smd_parse_size("2x", &u), SM_EINVAL);
    assert_int_equal(smd_parse_size("-1", &u), SM_EINVAL);
    int b;
    assert_int_equal(smd_parse_bool("Yes", &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(smd_parse_bool("off", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(smd_parse_bool("maybe", &b), SM_EINVAL);
    char host[64];
    unsigned port;
    assert_int_equal(smd_parse_hostport("127.0.0.1:8500", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8500);
    assert_int_equal(smd_parse_hostport("[::1]:0", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 0);
    assert_int_equal(smd_parse_hostport(":7946", host, sizeof host, &port), 0);
    assert_string_equal(host, "");
    assert_int_equal(smd_parse_hostport("::1:80", host, sizeof host, &port), SM_EINVAL);
    assert_int_equal(smd_parse_hostport("h:65536", host, sizeof host, &port), SM_EINVAL);
    assert_int_equal(smd_parse_hostport("h:", host, sizeof host, &port), SM_EINVAL);
    assert_int_equal(smd_parse_hostport("h", host, sizeof host, &port), SM_EINVAL);
}

static void test_file(void **state)
{
    (void)state;
    char path[] = "/tmp/sm-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *y = "node_id: f1\nstorage: local\n";
    assert_int_equal(write(fd, y, strlen(y)), (ssize_t)strlen(y));
    close(fd);
    struct smd_config *c = smd_config_new();
    char err[512], where[600];
    assert_int_equal(smd_config_load_file(c, path, err, sizeof err), 0);
    snprintf(where, sizeof where, "%s:2", path);
    assert_string_equal(smd_config_where(c, "storage"), where);
    unlink(path);
    smd_config_delete(c);
    c = smd_config_new();
    assert_int_equal(smd_config_load_file(c, path, err, sizeof err), SM_EIO);
    snprintf(where, sizeof where, "%s: cannot open: No such file or directory", path);
    assert_string_equal(err, where);
    smd_config_delete(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flatten),
        cmocka_unit_test(test_routes_and_flags),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_to_store_and_annotate),
        cmocka_unit_test(test_parsers),
        cmocka_unit_test(test_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
