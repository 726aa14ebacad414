/* test_mesh.c: mesh backend stores gossiping over real UDP on 127.0.0.1, in
 * one process on one libev loop: replication, deletes, watch events with
 * origins, members, counters, certificates (trusted and foreign), options. */
#include "config.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "crypto/cert.h"
#include "statemesh.h"
#include "tests/lib/udp_port.h"

#define MAXN 4

struct node {
    struct sm_config *cfg;
    struct sm_store *st;
    int port;
    char id[16];
};

struct mesh_fx {
    struct ev_loop *loop;
    struct node n[MAXN];
    int count;
    char dir[64];
};

static void opt(struct sm_config *c, const char *k, const char *v)
{
    assert_int_equal(sm_config_set(c, k, v), 0);
}

/* Configure node i; ca_name selects the CA directory (NULL = insecure). */
static void node_config(struct mesh_fx *f, int i, const char *ca_name)
{
    struct node *n = &f->n[i];
    char buf[256];
    n->cfg = sm_config_new();
    snprintf(n->id, sizeof n->id, "n%d", i);
    opt(n->cfg, "node_id", n->id);
    opt(n->cfg, "storage", "mesh");
    n->port = free_udp_port();
    assert_true(n->port > 0);
    snprintf(buf, sizeof buf, "127.0.0.1:%d", n->port);
    opt(n->cfg, "mesh.bind", buf);
    if (i > 0) {
        snprintf(buf, sizeof buf, "127.0.0.1:%d", f->n[0].port);
        opt(n->cfg, "mesh.join", buf);
    }
    opt(n->cfg, "mesh.gossip_interval", "50ms");
    opt(n->cfg, "mesh.probe_interval", "200ms");
    opt(n->cfg, "mesh.ae_interval", "300ms");
    if (!ca_name) {
        opt(n->cfg, "mesh.insecure", "true");
        return;
    }
    char err[256], ca[128], out[128];
    snprintf(ca, sizeof ca, "%s/%s", f->dir, ca_name);
    snprintf(out, sizeof out, "%s/%s-certs", f->dir, ca_name);
    if (access(ca, F_OK) != 0 && smc_ca_init(ca, err, sizeof err) != 0) fail_msg("%s", err);
    if (smc_cert_issue(ca, n->id, out, 1, err, sizeof err) != 0) fail_msg("%s", err);
    /* each node trusts the CA that signed it: the foreign one lives in its own world */
    snprintf(buf, sizeof buf, "%s/ca.pub", ca);
    opt(n->cfg, "mesh.ca", buf);
    snprintf(buf, sizeof buf, "%s/%s.cert", out, n->id);
    opt(n->cfg, "mesh.cert", buf);
    snprintf(buf, sizeof buf, "%s/%s.key", out, n->id);
    opt(n->cfg, "mesh.key", buf);
}

static void node_open(struct mesh_fx *f, int i)
{
    char err[512];
    int rc = sm_store_new(f->loop, f->n[i].cfg, &f->n[i].st, err, sizeof err);
    if (rc != 0) fail_msg("node %d: %s", i, err);
}

static int setup_n(void **state, int count, const char *const *cas)
{
    struct mesh_fx *f = calloc(1, sizeof *f);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    f->count = count;
    snprintf(f->dir, sizeof f->dir, "/tmp/sm-test-mesh-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    for (int i = 0; i < count; i++) node_config(f, i, cas ? cas[i] : NULL);
    if (cas) {
        /* the "good" CA must exist before anyone loads its public key */
        char err[256], ca[128];
        snprintf(ca, sizeof ca, "%s/good", f->dir);
        if (access(ca, F_OK) != 0 && smc_ca_init(ca, err, sizeof err) != 0) fail_msg("%s", err);
    }
    for (int i = 0; i < count; i++) node_open(f, i);
    *state = f;
    return 0;
}

static int setup3(void **state)
{
    return setup_n(state, 3, NULL);
}

static int setup_secure(void **state)
{
    static const char *const cas[] = {"good", "good", "good", "evil"};
    return setup_n(state, 4, cas);
}

static int teardown(void **state)
{
    struct mesh_fx *f = *state;
    for (int i = 0; i < f->count; i++) {
        sm_store_delete(f->n[i].st);
        sm_config_delete(f->n[i].cfg);
    }
    ev_loop_destroy(f->loop);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Run the loop until pred() holds or the (real) time limit passes. */
static bool run_until(struct mesh_fx *f, double seconds, bool (*pred)(struct mesh_fx *, void *),
                      void *arg)
{
    double end = ev_time() + seconds;
    while (ev_time() < end) {
        if (pred(f, arg)) return true;
        ev_run(f->loop, EVRUN_ONCE | EVRUN_NOWAIT);
        usleep(2000);
    }
    return pred(f, arg);
}

static bool value_is(struct sm_store *st, const char *key, const char *val)
{
    struct sm_entry e;
    if (sm_get_now(st, key, &e) != 0) return val == NULL;
    return val && e.value_len == strlen(val) && memcmp(e.value, val, e.value_len) == 0;
}

struct kv {
    const char *key, *val;
    int upto;
};

static bool all_have(struct mesh_fx *f, void *arg)
{
    struct kv *kv = arg;
    for (int i = 0; i < kv->upto; i++)
        if (!value_is(f->n[i].st, kv->key, kv->val)) return false;
    return true;
}

static int count_alive(const struct sm_member *m, void *arg)
{
    if (m->state == SM_MEMBER_ALIVE) (*(int *)arg)++;
    return 0;
}

static int alive_on(struct sm_store *st)
{
    int n = 0;
    if (sm_members(st, count_alive, &n) != 0) return -1;
    return n;
}

struct want_alive {
    int upto, alive;
};

static bool all_see_alive(struct mesh_fx *f, void *arg)
{
    struct want_alive *w = arg;
    for (int i = 0; i < w->upto; i++)
        if (alive_on(f->n[i].st) != w->alive) return false;
    return true;
}

static void done_ok(struct sm_store *s, int status, const struct sm_result *r, void *arg)
{
    (void)s, (void)r;
    assert_int_equal(status, 0);
    (*(int *)arg)++;
}

struct evlog {
    int n;
    char key[64], val[64], origin[16];
    enum sm_event_type type;
};

static void on_ev(struct sm_watch *w, const struct sm_event *ev, void *arg)
{
    (void)w;
    struct evlog *l = arg;
    l->n++;
    l->type = ev->type;
    snprintf(l->key, sizeof l->key, "%s", ev->key);
    snprintf(l->val, sizeof l->val, "%.*s", (int)ev->value_len,
             ev->value ? (const char *)ev->value : "");
    snprintf(l->origin, sizeof l->origin, "%s", ev->origin);
}

static bool evlog_has(struct mesh_fx *f, void *arg)
{
    (void)f;
    return ((struct evlog *)arg)->n > 0;
}

static void test_replicates_and_members(void **state)
{
    struct mesh_fx *f = *state;
    struct want_alive wa = {3, 3};
    assert_true(run_until(f, 10, all_see_alive, &wa));
    struct evlog l = {0};
    struct sm_watch *w;
    assert_int_equal(sm_watch(f->n[2].st, "backend:", on_ev, &l, &w), 0);
    int done = 0;
    assert_int_equal(sm_set(f->n[0].st, "backend:health:a", "unhealthy", 9, 0, done_ok, &done), 0);
    struct kv kv = {"backend:health:a", "unhealthy", 3};
    assert_true(run_until(f, 5, all_have, &kv));
    assert_int_equal(done, 1);
    assert_true(run_until(f, 2, evlog_has, &l));
    assert_int_equal(l.type, SM_EVENT_SET);
    assert_string_equal(l.key, "backend:health:a");
    assert_string_equal(l.val, "unhealthy");
    assert_string_equal(l.origin, "n0"); /* remote events carry the writer */
    struct sm_entry e;
    assert_int_equal(sm_get_now(f->n[1].st, "backend:health:a", &e), 0);
    assert_string_equal(e.origin, "n0");
    assert_int_equal(e.version, 1);

    /* a delete on another node spreads too */
    l.n = 0;
    assert_int_equal(sm_del(f->n[1].st, "backend:health:a", done_ok, &done), 0);
    struct kv gone = {"backend:health:a", NULL, 3};
    assert_true(run_until(f, 5, all_have, &gone));
    assert_true(run_until(f, 2, evlog_has, &l));
    assert_int_equal(l.type, SM_EVENT_DELETE);
    assert_string_equal(l.origin, "n1");
    sm_unwatch(w);
}

struct sum_want {
    const char *name;
    int64_t want;
    int upto;
};

static bool sums_are(struct mesh_fx *f, void *arg)
{
    struct sum_want *s = arg;
    for (int i = 0; i < s->upto; i++) {
        int64_t v = -1;
        if (sm_counter_sum(f->n[i].st, "lb:conn:", s->name, &v) != 0 || v != s->want) return false;
    }
    return true;
}

static void test_counters_sum_live_members(void **state)
{
    struct mesh_fx *f = *state;
    struct want_alive wa = {3, 3};
    assert_true(run_until(f, 10, all_see_alive, &wa));
    int done = 0;
    assert_int_equal(sm_counter_add(f->n[0].st, "lb:conn:", "http://b1", 5, done_ok, &done), 0);
    assert_int_equal(sm_counter_add(f->n[1].st, "lb:conn:", "http://b1", 7, done_ok, &done), 0);
    assert_int_equal(sm_counter_add(f->n[2].st, "lb:conn:", "http://b1", 1, done_ok, &done), 0);
    struct sum_want s = {"http://b1", 13, 3};
    assert_true(run_until(f, 5, sums_are, &s));
    assert_int_equal(sm_counter_add(f->n[2].st, "lb:conn:", "http://b1", -1, done_ok, &done), 0);
    s.want = 12;
    assert_true(run_until(f, 5, sums_are, &s));
    /* n1 goes away: its slot stops counting on the others */
    sm_store_delete(f->n[1].st);
    sm_config_delete(f->n[1].cfg);
    f->n[1] = f->n[2];
    memset(&f->n[2], 0, sizeof f->n[2]);
    f->count = 2;
    s.want = 5;
    s.upto = 2;
    assert_true(run_until(f, 10, sums_are, &s));
    assert_int_equal(done, 4);
}

static bool never(struct mesh_fx *f, void *arg)
{
    (void)f, (void)arg;
    return false;
}

static void test_secure_mesh_keeps_foreign_node_out(void **state)
{
    struct mesh_fx *f = *state; /* n0..n2 certified by "good", n3 by "evil" */
    struct want_alive wa = {3, 3};
    assert_true(run_until(f, 10, all_see_alive, &wa));
    int done = 0;
    assert_int_equal(sm_set(f->n[0].st, "circuit:x", "open", 4, 0, done_ok, &done), 0);
    struct kv kv = {"circuit:x", "open", 3};
    assert_true(run_until(f, 5, all_have, &kv));
    /* the foreign node writes the same key with a higher version; nobody takes it */
    for (int i = 0; i < 3; i++)
        assert_int_equal(sm_set(f->n[3].st, "circuit:x", "closed", 6, 0, done_ok, &done), 0);
    run_until(f, 2, never, NULL);
    assert_true(all_have(f, &kv));
    for (int i = 0; i < 3; i++) assert_int_equal(alive_on(f->n[i].st), 3);
    char *m = sm_metrics_render(f->n[0].st);
    assert_non_null(strstr(m, "statemesh_gossip_rejected_total{reason="));
    assert_non_null(strstr(m, "statemesh_members{state=\"alive\"} 3"));
    free(m);
}

static void test_options(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct {
        const char *k, *v, *needle;
    } cases[] = {
        {"mesh.bogus", "1", "unknown option 'mesh.bogus'"},
        {"mesh.bind", "not-an-address", "not host:port"},
        {"mesh.bind", "0.0.0.0:0", "wildcard"},
        {"mesh.mtu", "100", "minimum of 512"},
        {"mesh.probe_interval", "soon", "not a duration"},
        {"mesh.ca", "/nonexistent/ca.pub", "mesh"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sm_config *c = sm_config_new();
        opt(c, "storage", "mesh");
        opt(c, "node_id", "x");
        if (strcmp(cases[i].k, "mesh.ca") != 0) opt(c, "mesh.insecure", "true");
        if (strcmp(cases[i].k, "mesh.bind") != 0) opt(c, "mesh.bind", "127.0.0.1:0");
        opt(c, cases[i].k, cases[i].v);
        struct sm_store *st = NULL;
        char err[512];
        int rc = sm_store_new(loop, c, &st, err, sizeof err);
        assert_int_equal(rc, SM_ECONFIG);
        if (!strstr(err, cases[i].needle))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].needle);
        sm_config_delete(c);
    }
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replicates_and_members, setup3, teardown),
        cmocka_unit_test_setup_teardown(test_counters_sum_live_members, setup3, teardown),
        cmocka_unit_test_setup_teardown(test_secure_mesh_keeps_foreign_node_out, setup_secure,
                                        teardown),
        cmocka_unit_test(test_options),
    };
    return cmocka_run_group_tests_name("mesh", tests, NULL, NULL);
}
