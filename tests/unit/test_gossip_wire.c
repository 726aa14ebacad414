/* test_gossip_wire.c: wire codec round trips, bounds, truncation, bit flips, unknown fields. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "statemesh.h"
#include "gossip/wire.h"

static struct gossip_packet pkt;

static struct crdt_rec_view sample_rec(const uint8_t *sig)
{
    static const uint8_t val[] = "healthy";
    struct crdt_rec_view v = {
        .key = "backend:health:a",
        .key_len = 16,
        .value = val,
        .value_len = 7,
        .version = 42,
        .hlc = 0x123456789abcull,
        .origin = "node-1",
        .origin_len = 6,
        .precedence = 3,
        .flags = sig ? CRDT_F_SIGNED : 0,
        .expires_at = -5,
        .sig = sig,
    };
    return v;
}

/* One packet with every message type; decode must give every field back. */
static size_t build_all(uint8_t *buf, size_t cap)
{
    struct gossip_enc e;
    static uint8_t sig[CRDT_SIG_LEN];
    static const uint8_t cert[] = {0xC1, 1, 2, 3};
    struct sm_addr a = {.len = 6, .b = {10, 0, 0, 1, 0x1f, 0x90}};
    uint64_t ids[3] = {1, 0xffffffffffffffffull, 0x0102030405060708ull};
    uint64_t groups[GOSSIP_GROUPS];
    size_t w;
    for (unsigned i = 0; i < GOSSIP_GROUPS; i++) groups[i] = i * 0x1111;
    memset(sig, 0xAB, sizeof(sig));
    struct crdt_rec_view r = sample_rec(sig);
    struct crdt_rec_view t = sample_rec(NULL);
    t.value = NULL;
    t.value_len = 0;
    t.flags = CRDT_F_TOMBSTONE;

    assert_int_equal(gossip_enc_begin(&e, buf, cap, "me", 2, 7), 0);
    assert_int_equal(gossip_enc_probe(&e, GOSSIP_PING, 11, "you", 3, NULL), 0);
    assert_int_equal(gossip_enc_probe(&e, GOSSIP_ACK, 12, NULL, 0, NULL), 0);
    assert_int_equal(gossip_enc_probe(&e, GOSSIP_NACK, 13, NULL, 0, NULL), 0);
    assert_int_equal(gossip_enc_probe(&e, GOSSIP_PING_REQ, 14, "tgt", 3, &a), 0);
    assert_int_equal(gossip_enc_alive(&e, "n1", 2, 99, &a, cert, sizeof(cert)), 0);
    assert_int_equal(gossip_enc_member(&e, GOSSIP_SUSPECT, "n2", 2, 5, "acc", 3), 0);
    assert_int_equal(gossip_enc_member(&e, GOSSIP_DEAD, "n3", 2, 6, "acc", 3), 0);
    assert_int_equal(gossip_enc_member(&e, GOSSIP_LEAVE, "n4", 2, 8, NULL, 0), 0);
    assert_int_equal(gossip_enc_join(&e, &a, NULL, 0, 10), 0);
    assert_int_equal(gossip_enc_sync(&e, GOSSIP_SYNC_REQ, 300, 4), 0);
    assert_int_equal(gossip_enc_sync(&e, GOSSIP_SYNC_PAGE, 301, 0), 0);
    assert_int_equal(gossip_enc_rec(&e, GOSSIP_RK_GRAFT, 4, &r), 0);
    assert_int_equal(gossip_enc_rec(&e, GOSSIP_RK_AE, 0, &t), 0);
    assert_int_equal(gossip_enc_ids(&e, GOSSIP_IHAVE, 9, 0, ids, 3, &w), 0);
    assert_int_equal(w, 3);
    assert_int_equal(gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, ids, 2, &w), 0);
    assert_int_equal(gossip_enc_prune(&e, true), 0);
    assert_int_equal(gossip_enc_ids(&e, GOSSIP_DIGEST, 0, 0xdeadbeefull, groups, GOSSIP_GROUPS, &w),
                     0);
    assert_int_equal(
        gossip_enc_ids(&e, GOSSIP_DIGEST_LEAVES, 31, 0, groups, GOSSIP_GROUP_LEAVES, &w), 0);
    assert_int_equal(gossip_enc_ids(&e, GOSSIP_LEAF_IDS, 1023, 0, ids, 1, &w), 0);
    assert_int_equal(gossip_enc_ids(&e, GOSSIP_WANT, 5, 0, ids + 1, 2, &w), 0);
    assert_int_equal(gossip_enc_in_sync(&e, 77), 0);
    assert_int_equal(gossip_enc_whois(&e, "n-origin", 8), 0);
    assert_int_equal(gossip_enc_sync(&e, GOSSIP_SYNC_PAGE, 0, 1), 0);
    return gossip_enc_finish(&e);
}

static void test_roundtrip_every_type(void **state)
{
    (void)state;
    uint8_t buf[2048];
    size_t len = build_all(buf, sizeof(buf));
    assert_int_equal(gossip_decode(buf, len, &pkt), GOSSIP_DEC_OK);
    assert_int_equal(pkt.version, GOSSIP_WIRE_VERSION);
    assert_int_equal(pkt.sender_len, 2);
    assert_memory_equal(pkt.sender, "me", 2);
    assert_int_equal(pkt.sender_inc, 7);
    assert_int_equal(pkt.n_msgs, 23);
    assert_int_equal(pkt.n_unknown, 0);
    const struct gossip_msg *m = pkt.msgs;
    assert_int_equal(m[0].type, GOSSIP_PING);
    assert_int_equal(m[0].u.probe.seq, 11);
    assert_memory_equal(m[0].u.probe.target, "you", 3);
    assert_int_equal(m[1].type, GOSSIP_ACK);
    assert_int_equal(m[1].u.probe.seq, 12);
    assert_int_equal(m[2].type, GOSSIP_NACK);
    assert_int_equal(m[2].u.probe.seq, 13);
    assert_int_equal(m[3].type, GOSSIP_PING_REQ);
    assert_int_equal(m[3].u.probe.target_addr.len, 6);
    assert_int_equal(m[3].u.probe.target_addr.b[5], 0x90);
    assert_int_equal(m[4].type, GOSSIP_ALIVE);
    assert_int_equal(m[4].u.member.inc, 99);
    assert_int_equal(m[4].u.member.cert_len, 4);
    assert_int_equal(m[4].u.member.cert[0], 0xC1);
    assert_int_equal(m[5].type, GOSSIP_SUSPECT);
    assert_memory_equal(m[5].u.member.from, "acc", 3);
    assert_int_equal(m[6].type, GOSSIP_DEAD);
    assert_int_equal(m[6].u.member.inc, 6);
    assert_int_equal(m[7].type, GOSSIP_LEAVE);
    assert_int_equal(m[7].u.member.inc, 8);
    assert_int_equal(m[8].type, GOSSIP_JOIN);
    assert_int_equal(m[8].u.join.addr.len, 6);
    assert_null(m[8].u.join.cert);
    assert_int_equal(m[9].type, GOSSIP_SYNC_REQ);
    assert_int_equal(m[9].u.join.cursor, 300);
    assert_int_equal(m[10].u.join.cursor, 301);
    assert_false(m[10].u.join.rooted);
    assert_int_equal(m[11].type, GOSSIP_REC);
    assert_int_equal(m[11].u.rec.kind, GOSSIP_RK_GRAFT);
    assert_int_equal(m[11].u.rec.round, 4);
    const struct crdt_rec_view *v = &m[11].u.rec.v;
    assert_int_equal(v->key_len, 16);
    assert_memory_equal(v->key, "backend:health:a", 16);
    assert_int_equal(v->value_len, 7);
    assert_int_equal(v->version, 42);
    assert_int_equal(v->hlc, 0x123456789abcull);
    assert_memory_equal(v->origin, "node-1", 6);
    assert_int_equal(v->precedence, 3);
    assert_int_equal(v->flags, CRDT_F_SIGNED);
    assert_int_equal(v->expires_at, -5);
    assert_int_equal(v->sig[63], 0xAB);
    v = &m[12].u.rec.v;
    assert_null(v->value);
    assert_null(v->sig);
    assert_int_equal(v->flags, CRDT_F_TOMBSTONE);
    assert_int_equal(m[13].type, GOSSIP_IHAVE);
    assert_int_equal(m[13].u.ids.round, 9);
    assert_int_equal(m[13].u.ids.n_ids, 3);
    assert_true(gossip_id_at(m[13].u.ids.ids, 1) == 0xffffffffffffffffull);
    assert_true(gossip_id_at(m[13].u.ids.ids, 2) == 0x0102030405060708ull);
    assert_int_equal(m[14].type, GOSSIP_GRAFT);
    assert_int_equal(m[14].u.ids.n_ids, 2);
    assert_int_equal(m[15].type, GOSSIP_PRUNE);
    assert_true(m[15].u.ids.disconnect);
    assert_int_equal(m[16].type, GOSSIP_DIGEST);
    assert_true(m[16].u.ids.root == 0xdeadbeefull);
    assert_int_equal(m[16].u.ids.n_ids, GOSSIP_GROUPS);
    assert_true(gossip_id_at(m[16].u.ids.ids, 31) == 31 * 0x1111);
    assert_int_equal(m[17].u.ids.index, 31);
    assert_int_equal(m[18].u.ids.index, 1023);
    assert_int_equal(m[19].type, GOSSIP_WANT);
    assert_int_equal(m[19].u.ids.index, 5);
    assert_int_equal(m[19].u.ids.n_ids, 2);
    assert_int_equal(m[20].type, GOSSIP_IN_SYNC);
    assert_true(m[20].u.ids.root == 77);
    assert_int_equal(m[21].type, GOSSIP_WHOIS);
    assert_int_equal(m[21].u.member.id_len, 8);
    assert_memory_equal(m[21].u.member.id, "n-origin", 8);
    assert_int_equal(m[22].type, GOSSIP_SYNC_PAGE);
    assert_int_equal(m[22].u.join.cursor, 0);
    assert_true(m[22].u.join.rooted);
}

/* Every strict prefix of a valid packet is rejected, never accepted or crashing. */
static void test_truncation(void **state)
{
    (void)state;
    uint8_t buf[2048];
    size_t len = build_all(buf, sizeof(buf));
    for (size_t i = 0; i < len; i++) {
        enum gossip_decode_err rc = gossip_decode(buf, i, &pkt);
        assert_int_not_equal(rc, GOSSIP_DEC_OK);
    }
    /* trailing garbage is rejected too */
    buf[len] = 0xc0;
    assert_int_equal(gossip_decode(buf, len + 1, &pkt), GOSSIP_DEC_FORMAT);
}

/* Single bit flips: each decodes to OK or an error; counted distinctly; no crash. */
static void test_bit_flips(void **state)
{
    (void)state;
    uint8_t buf[2048], copy[2048];
    size_t len = build_all(buf, sizeof(buf));
    size_t ok = 0, bad = 0;
    for (size_t i = 0; i < len; i++)
        for (int b = 0; b < 8; b++) {
            memcpy(copy, buf, len);
            copy[i] ^= (uint8_t)(1u << b);
            if (gossip_decode(copy, len, &pkt) == GOSSIP_DEC_OK)
                ok++;
            else
                bad++;
        }
    assert_int_equal(ok + bad, len * 8);
    /* most flips in the structure break it; flips inside payload bytes do not */
    assert_true(bad > 0);
    assert_true(ok > 0);
}

/* Unknown trailing fields in a message and in the packet, and unknown message
 * types, are skipped; a newer version is refused. */
static void test_unknown_fields_and_types(void **state)
{
    (void)state;
    char buf[256];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 6); /* 2 extra packet fields */
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_bin(&pk, 1);
    msgpack_pack_bin_body(&pk, "x", 1);
    msgpack_pack_uint8(&pk, 3);
    msgpack_pack_array(&pk, 3);
    /* ack with two extra fields, one nested */
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint8(&pk, GOSSIP_ACK);
    msgpack_pack_uint32(&pk, 5);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "k", 1);
    msgpack_pack_double(&pk, 1.5);
    msgpack_pack_nil(&pk);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "hi", 2);
    /* unknown type 99 */
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 99);
    msgpack_pack_true(&pk);
    /* nack */
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, GOSSIP_NACK);
    msgpack_pack_uint8(&pk, 6);
    msgpack_pack_str(&pk, 3);
    msgpack_pack_str_body(&pk, "new", 3);
    msgpack_pack_int8(&pk, -1);
    assert_true(sb.size < sizeof(buf));
    memcpy(buf, sb.data, sb.size);
    assert_int_equal(gossip_decode((uint8_t *)buf, sb.size, &pkt), GOSSIP_DEC_OK);
    assert_int_equal(pkt.n_msgs, 2);
    assert_int_equal(pkt.n_unknown, 1);
    assert_int_equal(pkt.msgs[0].type, GOSSIP_ACK);
    assert_int_equal(pkt.msgs[0].u.probe.seq, 5);
    assert_int_equal(pkt.msgs[1].type, GOSSIP_NACK);
    assert_int_equal(pkt.msgs[1].u.probe.seq, 6);
    /* version 2 is refused */
    buf[1] = 2;
    assert_int_equal(gossip_decode((uint8_t *)buf, sb.size, &pkt), GOSSIP_DEC_VERSION);
    msgpack_sbuffer_destroy(&sb);
}

/* Bounds: a 1400-byte packet of records fills up and reports what did not fit. */
static void test_encoder_fills_mtu(void **state)
{
    (void)state;
    uint8_t buf[1400];
    struct gossip_enc e;
    struct crdt_rec_view r = sample_rec(NULL);
    assert_int_equal(gossip_enc_begin(&e, buf, sizeof(buf), "me", 2, 1), 0);
    int added = 0;
    while (gossip_enc_rec(&e, GOSSIP_RK_EAGER, 1, &r) == 0) added++;
    size_t before = e.len;
    assert_int_equal(gossip_enc_rec(&e, GOSSIP_RK_EAGER, 1, &r), SM_ERANGE);
    assert_int_equal(e.len, before); /* rolled back */
    assert_true(e.len <= sizeof(buf));
    /* the size estimate is an upper bound within 2 bytes (round is counted as 2) */
    size_t one = (e.len - 12) / (size_t)added;
    assert_true(gossip_rec_size(&r) >= one && gossip_rec_size(&r) <= one + 2);
    assert_true(sizeof(buf) - e.len < one);
    assert_int_equal(added, (int)((sizeof(buf) - 12) / one));
    size_t len = gossip_enc_finish(&e);
    assert_int_equal(gossip_decode(buf, len, &pkt), GOSSIP_DEC_OK);
    assert_int_equal(pkt.n_msgs, (size_t)added);
    /* ids: as many as fit, count reported */
    uint64_t ids[400];
    for (int i = 0; i < 400; i++) ids[i] = (uint64_t)i;
    size_t w = 0;
    assert_int_equal(gossip_enc_begin(&e, buf, sizeof(buf), "me", 2, 1), 0);
    assert_int_equal(gossip_enc_ids(&e, GOSSIP_IHAVE, 0, 0, ids, 400, &w), 0);
    assert_true(w > 100 && w < 400);
    assert_true(e.len <= sizeof(buf) && sizeof(buf) - e.len < 8);
    len = gossip_enc_finish(&e);
    assert_int_equal(gossip_decode(buf, len, &pkt), GOSSIP_DEC_OK);
    assert_int_equal(pkt.msgs[0].u.ids.n_ids, w);
    assert_true(gossip_id_at(pkt.msgs[0].u.ids.ids, w - 1) == w - 1);
}

/* Hostile shapes: huge claimed lengths, deep nesting, too many messages. */
static void test_hostile(void **state)
{
    (void)state;
    /* array32 claiming 2^32-1 messages */
    uint8_t a[] = {0x94, 0x01, 0xc4, 0x01, 'x', 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(gossip_decode(a, sizeof(a), &pkt), GOSSIP_DEC_TOO_MANY);
    /* bin32 claiming 4 GiB sender */
    uint8_t b[] = {0x94, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff, 'x'};
    assert_int_equal(gossip_decode(b, sizeof(b), &pkt), GOSSIP_DEC_TRUNCATED);
    /* an unknown message of 2^32 nested arrays claimed */
    uint8_t c[] = {0x94, 0x01, 0xc4, 0x01, 'x',  0x00, 0x91,
                   0x92, 0x63, 0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(gossip_decode(c, sizeof(c), &pkt), GOSSIP_DEC_TRUNCATED);
    /* deep nesting inside an unknown field: bounded by input length, no recursion */
    uint8_t d[4096];
    size_t n = 0;
    d[n++] = 0x94, d[n++] = 0x01, d[n++] = 0xc4, d[n++] = 0x01, d[n++] = 'x', d[n++] = 0x00;
    d[n++] = 0x91, d[n++] = 0x92, d[n++] = 0x63;
    while (n < sizeof(d) - 1) d[n++] = 0x91;
    d[n++] = 0xc0;
    assert_int_equal(gossip_decode(d, n, &pkt), GOSSIP_DEC_OK);
    assert_int_equal(pkt.n_unknown, 1);
    /* empty input / NULL */
    assert_int_not_equal(gossip_decode(NULL, 0, &pkt), GOSSIP_DEC_OK);
    assert_int_not_equal(gossip_decode(a, 0, &pkt), GOSSIP_DEC_OK);
    /* a record with a 300-byte key is out of range */
    uint8_t buf[1400];
    struct gossip_enc e;
    char key[300];
    memset(key, 'k', sizeof(key));
    struct crdt_rec_view r = sample_rec(NULL);
    r.key = key;
    r.key_len = sizeof(key);
    assert_int_equal(gossip_enc_begin(&e, buf, sizeof(buf), "me", 2, 1), 0);
    assert_int_equal(gossip_enc_rec(&e, GOSSIP_RK_EAGER, 1, &r), 0);
    size_t len = gossip_enc_finish(&e);
    assert_int_equal(gossip_decode(buf, len, &pkt), GOSSIP_DEC_FORMAT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bit_flips),
        cmocka_unit_test(test_unknown_fields_and_types),
        cmocka_unit_test(test_encoder_fills_mtu),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
