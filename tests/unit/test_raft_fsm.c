/* test_raft_fsm.c: the raft backend's state machine: apply semantics, expiry decided
 * by entry times only, lock fences, determinism across replicas, snapshots, bad input. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "src/raft_fsm.h"

/* ---- command builders ---- */

struct buf {
    void *p;
    size_t n;
};

static struct buf entry(uint64_t t, msgpack_sbuffer *cmd)
{
    struct buf b;
    assert_int_equal(smr_entry_build(t, "node-a", cmd->data, cmd->size, &b.p, &b.n), 0);
    msgpack_sbuffer_destroy(cmd);
    return b;
}

static void pstr(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static struct buf set_e(uint64_t t, const char *k, const char *v, uint64_t ttl)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, SMR_OP_SET);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 3);
    pstr(&pk, k);
    msgpack_pack_bin_with_body(&pk, v, strlen(v));
    msgpack_pack_uint64(&pk, ttl);
    return entry(t, &sb);
}

static struct buf lock_e(uint64_t t, int op, const char *name, const char *tok, uint64_t ttl)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, op == SMR_OP_UNLOCK ? 3 : 4);
    msgpack_pack_uint8(&pk, (uint8_t)op);
    pstr(&pk, name);
    pstr(&pk, tok);
    if (op != SMR_OP_UNLOCK) msgpack_pack_uint64(&pk, ttl);
    return entry(t, &sb);
}

static struct buf simple_e(uint64_t t, int op, const char *key)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, key ? 2 : 1);
    msgpack_pack_uint8(&pk, (uint8_t)op);
    if (key) pstr(&pk, key);
    return entry(t, &sb);
}

static const struct smr_result *ap(struct smr_fsm *f, uint64_t idx, struct buf b)
{
    const struct smr_result *r = smr_fsm_apply(f, idx, b.p, b.n);
    free(b.p);
    return r;
}

#define TOK_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define TOK_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* ---- event recorder ---- */

struct evlog {
    int n;
    int types[16];
    char keys[16][32];
    uint64_t versions[16];
};

static void rec(void *arg, enum sm_event_type type, const char *key, const void *value,
                size_t value_len, uint64_t version, uint64_t time_ms, const char *origin)
{
    (void)value, (void)value_len, (void)time_ms, (void)origin;
    struct evlog *l = arg;
    if (l->n >= 16) return;
    l->types[l->n] = type;
    snprintf(l->keys[l->n], sizeof l->keys[0], "%s", key);
    l->versions[l->n++] = version;
}

/* ---- tests ---- */

static void test_set_get_del(void **state)
{
    (void)state;
    struct smr_fsm f;
    struct evlog ev = {0};
    assert_int_equal(smr_fsm_init(&f), 0);
    f.emit = rec;
    f.emit_arg = &ev;
    const struct smr_result *r = ap(&f, 5, set_e(1000, "k", "v1", 0));
    assert_int_equal(r->status, 0);
    assert_int_equal(r->version, 5);
    const struct smr_kv *e = smr_fsm_get(&f, "k", 1000);
    assert_non_null(e);
    assert_int_equal(e->value_len, 2);
    assert_memory_equal(e->value, "v1", 2);
    assert_string_equal(e->origin, "node-a");
    assert_int_equal(e->time_ms, 1000);
    r = ap(&f, 6, simple_e(1001, SMR_OP_DEL, "k"));
    assert_int_equal(r->status, 0);
    assert_null(smr_fsm_get(&f, "k", 1001));
    assert_int_equal(ev.n, 2);
    assert_int_equal(ev.types[0], SM_EVENT_SET);
    assert_int_equal(ev.types[1], SM_EVENT_DELETE);
    assert_int_equal(ev.versions[1], 6);
    smr_fsm_close(&f);
}

/* Expiry follows the entries' times, never the local clock: the same entries give the
 * same state whatever time apply runs at; FSM time never goes backwards. */
static void test_expiry_by_entry_time(void **state)
{
    (void)state;
    struct smr_fsm f;
    struct evlog ev = {0};
    assert_int_equal(smr_fsm_init(&f), 0);
    f.emit = rec;
    f.emit_arg = &ev;
    ap(&f, 1, set_e(10000, "t", "x", 500));
    const struct smr_kv *e = smr_fsm_get(&f, "t", 10000);
    assert_non_null(e);
    assert_int_equal(e->expires_ms, 10500);
    assert_false(smr_fsm_needs_purge(&f, 10499));
    assert_true(smr_fsm_needs_purge(&f, 10500));
    /* a purge stamped before the expiry keeps the key */
    ap(&f, 2, simple_e(10400, SMR_OP_PURGE, NULL));
    assert_non_null(smr_fsm_get(&f, "t", 0));
    /* a leader with a clock behind the FSM time cannot move time back */
    ap(&f, 3, set_e(9000, "u", "y", 0));
    assert_int_equal(f.now_ms, 10400);
    ap(&f, 4, simple_e(10600, SMR_OP_PURGE, NULL));
    assert_null(smr_fsm_get(&f, "t", 0));
    assert_non_null(smr_fsm_get(&f, "u", 0));
    assert_int_equal(ev.types[ev.n - 1], SM_EVENT_EXPIRE);
    assert_string_equal(ev.keys[ev.n - 1], "t");
    smr_fsm_close(&f);
}

static void test_locks(void **state)
{
    (void)state;
    struct smr_fsm f;
    assert_int_equal(smr_fsm_init(&f), 0);
    const struct smr_result *r = ap(&f, 10, lock_e(1000, SMR_OP_LOCK, "L", TOK_A, 1000));
    assert_int_equal(r->status, 0);
    assert_int_equal(r->fence, 1000 * 1024); /* FSM time's floor, above the index */
    assert_int_equal(r->expires_ms, 2000);
    /* another owner is refused while the grant is live */
    r = ap(&f, 11, lock_e(1500, SMR_OP_LOCK, "L", TOK_B, 1000));
    assert_int_equal(r->status, SM_ELOCKED);
    /* a retried acquire with the same token is the same grant */
    r = ap(&f, 12, lock_e(1600, SMR_OP_LOCK, "L", TOK_A, 1000));
    assert_int_equal(r->status, 0);
    assert_int_equal(r->fence, 1000 * 1024);
    /* renew by the owner keeps the fence and extends from the entry time */
    r = ap(&f, 13, lock_e(1900, SMR_OP_RENEW, "L", TOK_A, 1000));
    assert_int_equal(r->status, 0);
    assert_int_equal(r->fence, 1000 * 1024);
    assert_int_equal(r->expires_ms, 2900);
    r = ap(&f, 14, lock_e(1900, SMR_OP_RENEW, "L", TOK_B, 1000));
    assert_int_equal(r->status, SM_ENOTOWNER);
    /* after expiry (by entry time) another owner gets it with a larger fence */
    r = ap(&f, 15, lock_e(2900, SMR_OP_LOCK, "L", TOK_B, 1000));
    assert_int_equal(r->status, 0);
    assert_int_equal(r->fence, 2900 * 1024);
    /* the old owner can neither renew nor release */
    r = ap(&f, 16, lock_e(2901, SMR_OP_RENEW, "L", TOK_A, 1000));
    assert_int_equal(r->status, SM_ENOTOWNER);
    r = ap(&f, 17, lock_e(2902, SMR_OP_UNLOCK, "L", TOK_A, 0));
    assert_int_equal(r->status, SM_ENOTOWNER);
    /* release, and a retried release is answered ok */
    r = ap(&f, 18, lock_e(2903, SMR_OP_UNLOCK, "L", TOK_B, 0));
    assert_int_equal(r->status, 0);
    r = ap(&f, 19, lock_e(2904, SMR_OP_UNLOCK, "L", TOK_B, 0));
    assert_int_equal(r->status, 0);
    r = ap(&f, 20, lock_e(2905, SMR_OP_RENEW, "L", TOK_B, 1000));
    assert_int_equal(r->status, SM_ENOTOWNER);
    r = ap(&f, 21, lock_e(2906, SMR_OP_LOCK, "L", TOK_A, 1000));
    assert_int_equal(r->status, 0);
    assert_int_equal(r->fence, 2906 * 1024);
    /* released and taken again within one ms: one above the last fence */
    r = ap(&f, 22, lock_e(2906, SMR_OP_UNLOCK, "L", TOK_A, 0));
    assert_int_equal(r->status, 0);
    r = ap(&f, 23, lock_e(2906, SMR_OP_LOCK, "L", TOK_B, 1000));
    assert_int_equal(r->fence, 2906 * 1024 + 1);
    /* a leader whose clock went back: FSM time holds, the fence still rises */
    r = ap(&f, 24, lock_e(2906, SMR_OP_UNLOCK, "L", TOK_B, 0));
    r = ap(&f, 25, lock_e(100, SMR_OP_LOCK, "L", TOK_A, 1000));
    assert_int_equal(r->status, 0);
    assert_int_equal(r->fence, 2906 * 1024 + 2);
    /* entries without a time (version above the floor): the version wins */
    struct smr_fsm g;
    assert_int_equal(smr_fsm_init(&g), 0);
    r = ap(&g, 7, lock_e(0, SMR_OP_LOCK, "L", TOK_A, 1000));
    assert_int_equal(r->fence, 7);
    smr_fsm_close(&g);
    smr_fsm_close(&f);
}

static void test_malformed(void **state)
{
    (void)state;
    struct smr_fsm f;
    assert_int_equal(smr_fsm_init(&f), 0);
    const struct smr_result *r = smr_fsm_apply(&f, 1, "\xff\x00", 2);
    assert_int_equal(r->status, SM_EPROTO);
    r = ap(&f, 2, lock_e(1, SMR_OP_LOCK, "L", "short", 10));
    assert_int_equal(r->status, SM_EPROTO);
    r = ap(&f, 3, simple_e(1, 99, "x"));
    assert_int_equal(r->status, SM_EPROTO);
    /* trailing zero padding (entries are padded to 8 bytes) is ignored */
    struct buf b = set_e(5, "p", "q", 0);
    char padded[256] = {0};
    memcpy(padded, b.p, b.n);
    free(b.p);
    r = smr_fsm_apply(&f, 4, padded, (b.n + 7) & ~(size_t)7);
    assert_int_equal(r->status, 0);
    assert_int_equal(f.kv_count, 1);
    smr_fsm_close(&f);
}

struct cmp_arg {
    struct smr_fsm *other;
    size_t seen, bad;
};

static int cmp_fn(const struct smr_kv *kv, void *arg)
{
    struct cmp_arg *ca = arg;
    const struct smr_kv *o = smr_fsm_get(ca->other, kv->key, 0);
    ca->seen++;
    if (!o || o->value_len != kv->value_len || memcmp(o->value, kv->value, kv->value_len) ||
        o->version != kv->version || o->expires_ms != kv->expires_ms || o->time_ms != kv->time_ms ||
        strcmp(o->origin, kv->origin))
        ca->bad++;
    return 0;
}

/* Two replicas applying the same entries end in byte-identical snapshots; a
 * restore reproduces the state, and a corrupt snapshot changes nothing. */
static void test_snapshot_determinism(void **state)
{
    (void)state;
    struct smr_fsm a, b, c;
    assert_int_equal(smr_fsm_init(&a), 0);
    assert_int_equal(smr_fsm_init(&b), 0);
    assert_int_equal(smr_fsm_init(&c), 0);
    for (int i = 1; i <= 300; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "key:%d", i % 97);
        snprintf(v, sizeof v, "v%d", i);
        struct buf e = i % 7 == 0    ? simple_e(1000 + i, SMR_OP_DEL, k)
                       : i % 11 == 0 ? lock_e(1000 + i, SMR_OP_LOCK, k, TOK_A, 50)
                                     : set_e(1000 + i, k, v, i % 3 ? 0 : 40);
        smr_fsm_apply(&a, (uint64_t)i, e.p, e.n);
        smr_fsm_apply(&b, (uint64_t)i, e.p, e.n);
        free(e.p);
    }
    void *sa, *sb;
    size_t la, lb;
    assert_int_equal(smr_fsm_snapshot(&a, &sa, &la), 0);
    assert_int_equal(smr_fsm_snapshot(&b, &sb, &lb), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    assert_int_equal(smr_fsm_restore(&c, sa, la), 0);
    /* the restored replica holds the same records (the byte order of a
     * snapshot follows hash-chain order, so compare record by record) */
    struct cmp_arg ca = {&c, 0, 0};
    smr_fsm_list(&a, "", 0, cmp_fn, &ca);
    assert_int_equal(ca.seen, a.kv_count);
    assert_int_equal(ca.bad, 0);
    assert_int_equal(c.kv_count, a.kv_count);
    assert_int_equal(c.lock_count, a.lock_count);
    assert_int_equal(c.now_ms, a.now_ms);
    assert_int_equal(c.last_index, a.last_index);
    /* truncated snapshot: refused, state unchanged */
    assert_int_equal(smr_fsm_restore(&c, sa, la / 2), SM_EPROTO);
    assert_int_equal(c.kv_count, a.kv_count);
    free(sa);
    free(sb);
    smr_fsm_close(&a);
    smr_fsm_close(&b);
    smr_fsm_close(&c);
}

/* A restored backup moves the index base so versions keep increasing; fences
 * keep increasing even past the grants made after the backup was taken,
 * which the restore loses (index-derived fences would repeat them). */
static void test_index_base(void **state)
{
    (void)state;
    struct smr_fsm a, b;
    assert_int_equal(smr_fsm_init(&a), 0);
    assert_int_equal(smr_fsm_init(&b), 0);
    const struct smr_result *r = ap(&a, 500, lock_e(1, SMR_OP_LOCK, "L", TOK_A, 10));
    assert_int_equal(r->fence, 1024);
    assert_int_equal(r->version, 500);
    void *s;
    size_t n;
    assert_int_equal(smr_fsm_snapshot(&a, &s, &n), 0);
    /* after the backup: more grants, up to index 90000 (lost by the restore) */
    r = ap(&a, 90000, lock_e(5000, SMR_OP_LOCK, "L", TOK_B, 10));
    uint64_t lost = r->fence;
    assert_int_equal(lost, 5000 * 1024);
    assert_int_equal(smr_fsm_restore(&b, s, n), 0);
    free(s);
    b.index_base += b.last_index; /* what raft.restore does */
    b.last_index = 0;
    r = ap(&b, 3, lock_e(6000, SMR_OP_LOCK, "L", TOK_B, 10));
    assert_int_equal(r->status, 0);
    assert_int_equal(r->version, 503);
    assert_true(r->fence > lost);
    assert_int_equal(r->fence, 6000 * 1024);
    smr_fsm_close(&a);
    smr_fsm_close(&b);
}

static int count_fn(const struct smr_kv *kv, void *arg)
{
    (void)kv;
    (*(int *)arg)++;
    return 0;
}

static void test_list_and_multi(void **state)
{
    (void)state;
    struct smr_fsm f;
    assert_int_equal(smr_fsm_init(&f), 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, SMR_OP_SET);
    msgpack_pack_array(&pk, 3);
    const char *keys[] = {"a:1", "a:2", "b:1"};
    for (int i = 0; i < 3; i++) {
        msgpack_pack_array(&pk, 3);
        pstr(&pk, keys[i]);
        msgpack_pack_bin_with_body(&pk, "v", 1);
        msgpack_pack_uint64(&pk, 0);
    }
    const struct smr_result *r = ap(&f, 7, entry(5, &sb));
    assert_int_equal(r->status, 0);
    for (int i = 0; i < 3; i++) assert_int_equal(smr_fsm_get(&f, keys[i], 0)->version, 7);
    int n = 0;
    smr_fsm_list(&f, "a:", 0, count_fn, &n);
    assert_int_equal(n, 2);
    /* one bad item makes the whole multi-set fail with no change */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, SMR_OP_SET);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_array(&pk, 3);
    pstr(&pk, "c:1");
    msgpack_pack_bin_with_body(&pk, "v", 1);
    msgpack_pack_uint64(&pk, 0);
    msgpack_pack_array(&pk, 2);
    pstr(&pk, "c:2");
    msgpack_pack_nil(&pk);
    r = ap(&f, 8, entry(6, &sb));
    assert_int_equal(r->status, SM_EPROTO);
    assert_null(smr_fsm_get(&f, "c:1", 0));
    smr_fsm_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get_del),
        cmocka_unit_test(test_expiry_by_entry_time),
        cmocka_unit_test(test_locks),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_snapshot_determinism),
        cmocka_unit_test(test_index_base),
        cmocka_unit_test(test_list_and_multi),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
