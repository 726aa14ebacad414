/* test_gossip_node.c: the sans-IO gossip node in a tiny deterministic fake loop (exact outcomes).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "statemesh.h"
#include "gossip/wire.h"
#include "tests/unit/gossip_loop.h"

static int count_state(struct gl *g, int observer, enum sm_member_state st)
{
    return (int)sm_node_member_count(g->node[observer], st);
}

static enum sm_member_state state_of(struct gl *g, int observer, int subject)
{
    char id[8];
    struct sm_member_info mi;
    snprintf(id, sizeof(id), "n%d", subject);
    if (sm_node_member_get(g->node[observer], id, strlen(id), &mi) != 0) return 0;
    return mi.state;
}

/* Run in 1 ms steps until every live node holds key=value; returns the time taken. */
static uint64_t time_to_all(struct gl *g, const char *key, const char *value, uint64_t limit)
{
    uint64_t t0 = g->now;
    while (g->now - t0 < limit) {
        int c = 0, live = 0;
        for (int i = 0; i < g->n; i++) {
            if (g->down[i]) continue;
            live++;
            c += gl_has(g, i, key, value);
        }
        if (c == live) return g->now - t0;
        gl_run(g, g->now + 1);
    }
    return UINT64_MAX;
}

static struct gl *cluster(int n, uint64_t seed)
{
    struct gl *g = gl_new(n, seed, NULL);
    gl_join_all(g);
    gl_run(g, 4000);
    return g;
}

static void test_join(void **state)
{
    (void)state;
    struct gl *g = cluster(5, 1);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(count_state(g, i, SM_MEMBER_ALIVE), 5);
        assert_int_equal(g->events[i][SM_MEV_JOIN], 4);
        assert_int_equal(g->events[i][SM_MEV_SUSPECT], 0);
        assert_int_equal(g->events[i][SM_MEV_DEAD], 0);
    }
    gl_free(g);
}

/* A write is pushed at once: with a fixed 5 ms latency every node holds it
 * after exactly one or two hops over the peer graph. */
static void test_dissemination_exact(void **state)
{
    (void)state;
    struct gl *g = cluster(5, 1);
    const struct sm_node_stats *st = sm_node_stats(g->node[2]);
    uint64_t pub0 = st->records_published;
    assert_int_equal(gl_write(g, 2, "k", "v1"), 1);
    assert_int_equal(st->records_published, pub0 + 1);
    uint64_t t = time_to_all(g, "k", "v1", 1000);
    assert_true(t == 5 || t == 10);
    assert_int_equal(t, 10); /* seed 1: one node is two hops from n2 */
    /* a second write of the same key wins everywhere */
    assert_int_equal(gl_write(g, 4, "k", "v2"), 1);
    assert_int_equal(time_to_all(g, "k", "v2", 1000), 10);
    /* every node merged exactly the two remote writes it did not make */
    for (int i = 0; i < 5; i++) {
        const struct sm_node_stats *s = sm_node_stats(g->node[i]);
        uint64_t expect = (i == 2 || i == 4) ? 1 : 2;
        assert_int_equal(s->records_merged, expect);
        assert_int_equal(g->records[i], (int)expect);
    }
    gl_free(g);
}

/* A crashed node is suspected, then declared dead by every other node. */
static void test_failure_detection(void **state)
{
    (void)state;
    struct gl *g = cluster(5, 2);
    g->down[4] = true;
    uint64_t t0 = g->now, detected = 0;
    while (g->now - t0 < 20000) {
        gl_run(g, g->now + 100);
        int c = 0;
        for (int i = 0; i < 4; i++) c += state_of(g, i, 4) == SM_MEMBER_DEAD;
        if (c == 4) {
            detected = g->now - t0;
            break;
        }
    }
    assert_true(detected > 0);
    assert_true(detected <= 10000);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(g->events[i][SM_MEV_DEAD], 1);
        assert_int_equal(count_state(g, i, SM_MEMBER_ALIVE), 4);
        assert_int_equal(count_state(g, i, SM_MEMBER_DEAD), 1);
        assert_false(sm_node_member_live(g->node[i], "n4", 2));
        assert_true(sm_node_member_live(g->node[i], "n1", 2));
    }
    gl_free(g);
}

/* A node that cannot be reached for a moment is suspected, hears of it and
 * refutes with a higher incarnation: nobody declares it dead. */
static void test_suspicion_refuted(void **state)
{
    (void)state;
    struct gl *g = cluster(5, 3);
    uint64_t inc0 = sm_node_incarnation(g->node[3]);
    /* everybody's packets to n3 are lost for 2.5 s */
    for (int i = 0; i < 5; i++) g->cut[i][3] = true;
    gl_run(g, g->now + 2500);
    for (int i = 0; i < 5; i++) g->cut[i][3] = false;
    gl_run(g, g->now + 15000);
    int suspects = 0;
    for (int i = 0; i < 5; i++) {
        if (i == 3) continue;
        suspects += g->events[i][SM_MEV_SUSPECT];
        assert_int_equal(g->events[i][SM_MEV_DEAD], 0);
        assert_int_equal(state_of(g, i, 3), SM_MEMBER_ALIVE);
    }
    assert_true(suspects >= 1);
    assert_true(sm_node_incarnation(g->node[3]) > inc0);
    assert_true(sm_node_stats(g->node[3])->refutations >= 1);
    gl_free(g);
}

/* Records that bypassed dissemination are found by anti-entropy, and only
 * the differing records travel. */
static void test_anti_entropy(void **state)
{
    (void)state;
    struct gl *g = cluster(4, 4);
    /* put 20 records into n1's replica behind the node's back */
    for (int k = 0; k < 20; k++) {
        char key[16];
        snprintf(key, sizeof(key), "ae:%d", k);
        struct crdt_rec_view v = {.key = key,
                                  .key_len = strlen(key),
                                  .value = (const uint8_t *)"x",
                                  .value_len = 1,
                                  .version = 1,
                                  .hlc = 5,
                                  .origin = "n1",
                                  .origin_len = 2};
        assert_int_equal(crdt_replica_merge(g->rep[1], &v), 1);
    }
    uint64_t t = time_to_all(g, "ae:19", "x", 10000);
    assert_true(t <= 5000);
    gl_run(g, g->now + 3000);
    uint64_t root = crdt_replica_root(g->rep[0]);
    uint64_t sent = 0, insync = 0;
    for (int i = 0; i < 4; i++) {
        assert_true(crdt_replica_root(g->rep[i]) == root);
        assert_int_equal(crdt_replica_size(g->rep[i]), 20);
        sent += sm_node_stats(g->node[i])->ae_records_sent;
        insync += sm_node_stats(g->node[i])->ae_in_sync;
    }
    /* 3 nodes lacked 20 records each; the first one to learn them also
     * re-broadcasts them, so AE sends each at least once and at most 60 */
    assert_true(sent >= 20 && sent <= 60);
    assert_true(insync > 0);
    gl_free(g);
}

/* Split {0,1,2} | {3,4}: each side declares the other dead; writes on both
 * sides; after the heal everyone is alive again and the replicas agree. */
static void test_partition_heal(void **state)
{
    (void)state;
    struct gl *g = cluster(5, 5);
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++) g->cut[a][b] = (a < 3) != (b < 3);
    gl_run(g, g->now + 30000);
    for (int i = 0; i < 3; i++) assert_int_equal(state_of(g, i, 4), SM_MEMBER_DEAD);
    for (int i = 3; i < 5; i++) assert_int_equal(state_of(g, i, 0), SM_MEMBER_DEAD);
    assert_int_equal(gl_write(g, 0, "left", "L"), 1);
    assert_int_equal(gl_write(g, 4, "right", "R"), 1);
    assert_int_equal(gl_write(g, 1, "both", "from-left"), 1);
    gl_run(g, g->now + 1);
    assert_int_equal(gl_write(g, 3, "both", "from-right"), 1);
    gl_run(g, g->now + 1000);
    memset(g->cut, 0, sizeof(g->cut));
    uint64_t t0 = g->now, healed = 0;
    while (g->now - t0 < 20000) {
        gl_run(g, g->now + 100);
        bool ok = true;
        uint64_t root = crdt_replica_root(g->rep[0]);
        for (int i = 0; i < 5 && ok; i++) {
            ok = crdt_replica_root(g->rep[i]) == root && count_state(g, i, SM_MEMBER_ALIVE) == 5;
        }
        if (ok) {
            healed = g->now - t0;
            break;
        }
    }
    assert_true(healed > 0);
    assert_true(healed <= 10000);
    /* the merge order picks the later write of "both" (higher hlc) everywhere */
    for (int i = 0; i < 5; i++) {
        assert_true(gl_has(g, i, "left", "L"));
        assert_true(gl_has(g, i, "right", "R"));
        assert_true(gl_has(g, i, "both", "from-right"));
    }
    gl_free(g);
}

/* Graceful leave: everyone sees LEAVE, the leaver is not live. */
static void test_leave(void **state)
{
    (void)state;
    struct gl *g = cluster(5, 6);
    assert_int_equal(sm_node_leave(g->node[4], gl_time(g)), 0);
    gl_run(g, g->now + 2000);
    g->down[4] = true;
    gl_run(g, g->now + 2000);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(g->events[i][SM_MEV_LEAVE], 1);
        assert_int_equal(g->events[i][SM_MEV_DEAD], 0);
        assert_int_equal(state_of(g, i, 4), SM_MEMBER_LEFT);
        assert_false(sm_node_member_live(g->node[i], "n4", 2));
    }
    gl_free(g);
}

/* A crashed node restarts empty with the same id: it rejoins, outranks its
 * old self and pulls every record. */
static void test_restart_empty(void **state)
{
    (void)state;
    struct gl *g = cluster(5, 7);
    assert_int_equal(gl_write(g, 1, "keep", "me"), 1);
    gl_run(g, g->now + 200);
    g->down[4] = true;
    gl_run(g, g->now + 15000);
    for (int i = 0; i < 4; i++) assert_int_equal(state_of(g, i, 4), SM_MEMBER_DEAD);
    /* restart: new node, empty replica, incarnation 0 (worst case) */
    sm_node_delete(g->node[4]);
    crdt_replica_delete(g->rep[4]);
    g->rep[4] = crdt_replica_new();
    struct sm_node_config c = {0};
    c.id = "n4";
    c.addr = gl_addr(4);
    c.seed = 99;
    c.cb.send = gl_send;
    c.cb.on_member = gl_on_member;
    c.cb.on_record = gl_on_record;
    c.ud = &g->ud[4];
    g->node[4] = sm_node_new(&c, g->rep[4]);
    assert_non_null(g->node[4]);
    g->down[4] = false;
    struct sm_addr seed = gl_addr(2);
    assert_int_equal(sm_node_join(g->node[4], gl_time(g), &seed, 1), 0);
    assert_true(time_to_all(g, "keep", "me", 5000) <= 5000);
    gl_run(g, g->now + 3000);
    for (int i = 0; i < 4; i++) assert_int_equal(state_of(g, i, 4), SM_MEMBER_ALIVE);
    assert_true(sm_node_incarnation(g->node[4]) > 0);
    assert_int_equal(count_state(g, 4, SM_MEMBER_ALIVE), 5);
    gl_free(g);
}

/* Malformed input is counted by reason; a stranger's request never gets a
 * larger answer than itself. */
static struct gl *tap_g;
static size_t tap_max_to_stranger;
static void tap_stranger(struct gl *g, const struct gl_pkt *p)
{
    (void)g;
    if (p->to == 9 && p->len > tap_max_to_stranger) tap_max_to_stranger = p->len;
}

static void test_rejects_and_amplification(void **state)
{
    (void)state;
    struct gl *g = cluster(3, 8);
    tap_g = g;
    struct sm_node *n = g->node[0];
    const struct sm_node_stats *st = sm_node_stats(n);
    struct sm_addr from = gl_addr(9);
    uint8_t junk[] = {0x93, 0x01, 0x02};
    assert_int_equal(sm_node_recv(n, gl_time(g), &from, junk, sizeof(junk)), SM_EPROTO);
    assert_int_equal(st->rejected[SM_REJ_DECODE], 1);
    uint8_t v9[] = {0x94, 0x09, 0xc4, 0x01, 'x', 0x00, 0x90};
    assert_int_equal(sm_node_recv(n, gl_time(g), &from, v9, sizeof(v9)), SM_EPROTO);
    assert_int_equal(st->rejected[SM_REJ_VERSION], 1);
    /* a packet claiming to come from the node itself */
    uint8_t buf[1400];
    struct gossip_enc e;
    assert_int_equal(gossip_enc_begin(&e, buf, sizeof(buf), "n0", 2, 0), 0);
    assert_int_equal(gossip_enc_probe(&e, GOSSIP_ACK, 1, NULL, 0, NULL), 0);
    size_t len = gossip_enc_finish(&e);
    assert_int_equal(sm_node_recv(n, gl_time(g), &from, buf, len), SM_EAUTH);
    assert_int_equal(st->rejected[SM_REJ_SENDER], 1);
    /* a stranger at an unknown address asks for a digest exchange and a
     * membership page with tiny requests: answers are no larger */
    g->tap = tap_stranger;
    for (int k = 0; k < 30; k++) {
        char key[16];
        snprintf(key, sizeof(key), "amp:%d", k);
        gl_write(g, 0, key, "0123456789012345678901234567890123456789");
    }
    gl_run(g, g->now + 100);
    uint64_t zero[GOSSIP_GROUPS] = {0};
    size_t w;
    assert_int_equal(gossip_enc_begin(&e, buf, sizeof(buf), "evil", 4, 0), 0);
    assert_int_equal(gossip_enc_ids(&e, GOSSIP_DIGEST, 0, 1, zero, GOSSIP_GROUPS, &w), 0);
    len = gossip_enc_finish(&e);
    size_t req1 = len;
    gl_cur = g;
    assert_int_equal(sm_node_recv(n, gl_time(g), &from, buf, len), 0);
    assert_int_equal(gossip_enc_begin(&e, buf, sizeof(buf), "evil2", 5, 0), 0);
    assert_int_equal(gossip_enc_sync(&e, GOSSIP_SYNC_REQ, 0, 0), 0);
    len = gossip_enc_finish(&e);
    assert_int_equal(sm_node_recv(n, gl_time(g), &from, buf, len), 0);
    assert_true(tap_max_to_stranger > 0);
    assert_true(tap_max_to_stranger <= req1);
    gl_free(g);
}

static void drop_send(void *ud, const struct sm_addr *to, const uint8_t *buf, size_t len,
                      enum sm_pkt_class cls)
{
    (void)ud, (void)to, (void)buf, (void)len, (void)cls;
}

/* A full member table recycles members for newcomers: ids of every length
 * (a recycled member grows when the newcomer's id is longer) stay findable,
 * and the table never holds more than max_members (8, the least allowed). */
static void test_partial_view_recycles(void **state)
{
    (void)state;
    struct crdt_replica *rep = crdt_replica_new();
    assert_non_null(rep);
    struct sm_node_config cfg = {
        .id = "me", .addr = gl_addr(0), .seed = 5, .max_members = 8, .cb = {.send = drop_send}};
    struct sm_node *n = sm_node_new(&cfg, rep);
    assert_non_null(n);
    char id[CRDT_MAX_ORIGIN];
    memset(id, 'a', sizeof(id));
    for (size_t len = 1; len <= CRDT_MAX_ORIGIN; len++) {
        id[0] = (char)('A' + len % 26);
        uint8_t buf[1400];
        struct gossip_enc e;
        struct sm_addr a = gl_addr((int)len);
        assert_int_equal(gossip_enc_begin(&e, buf, sizeof(buf), id, len, 7), 0);
        assert_int_equal(gossip_enc_alive(&e, id, len, 7, &a, NULL, 0), 0);
        size_t plen = gossip_enc_finish(&e);
        struct sm_time t = {.mono_ms = 1000000 + len, .wall_ms = 1700000000000 + len};
        assert_int_equal(sm_node_recv(n, t, &a, buf, plen), 0);
        struct sm_member_info mi;
        assert_int_equal(sm_node_member_get(n, id, len, &mi), 0);
        assert_int_equal(mi.id_len, len);
        assert_memory_equal(mi.id, id, len);
        assert_int_equal(mi.incarnation, 7);
        size_t all = 0;
        for (int st = SM_MEMBER_ALIVE; st <= SM_MEMBER_LEFT; st++)
            all += sm_node_member_count(n, (enum sm_member_state)st);
        assert_int_equal(all, len < 8 ? len + 1 : 8);
    }
    sm_node_delete(n);
    crdt_replica_delete(rep);
}

/* Same seed, same packets: the node is deterministic. */
static uint64_t run_digest(uint64_t seed)
{
    struct gl *g = cluster(5, seed);
    gl_write(g, 1, "a", "1");
    gl_write(g, 3, "b", "2");
    gl_run(g, g->now + 3000);
    uint64_t h = g->sent * 1000003u + g->now;
    for (int i = 0; i < 5; i++) h = h * 31 + crdt_replica_root(g->rep[i]);
    gl_free(g);
    return h;
}

static void test_deterministic(void **state)
{
    (void)state;
    assert_true(run_digest(11) == run_digest(11));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join),
        cmocka_unit_test(test_dissemination_exact),
        cmocka_unit_test(test_failure_detection),
        cmocka_unit_test(test_suspicion_refuted),
        cmocka_unit_test(test_anti_entropy),
        cmocka_unit_test(test_partition_heal),
        cmocka_unit_test(test_leave),
        cmocka_unit_test(test_restart_empty),
        cmocka_unit_test(test_rejects_and_amplification),
        cmocka_unit_test(test_partial_view_recycles),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
