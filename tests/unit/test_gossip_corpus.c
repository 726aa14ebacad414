/* test_gossip_corpus.c: replays every fuzz corpus file through the receive path (and makes seeds).
 */
#include "config.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "tests/fuzz/fuzz_recv.c"

/* Packet-level outcomes: every datagram is either accepted or rejected for one of these. */
static uint64_t accounted(const struct sm_node *n)
{
    const struct sm_node_stats *s = sm_node_stats(n);
    uint64_t a = 0;
    for (int c = 0; c < SM_PKT__COUNT; c++) a += s->pkts_recv[c];
    a += s->rejected[SM_REJ_DECODE] + s->rejected[SM_REJ_VERSION] + s->rejected[SM_REJ_TOO_LARGE] +
         s->rejected[SM_REJ_ENVELOPE] + s->rejected[SM_REJ_SENDER] + s->rejected[SM_REJ_LEFT];
    return a;
}

static void test_replay_corpus(void **state)
{
    (void)state;
    const char *src = getenv("SM_SRCDIR");
    char dir[4096], path[4096 + 256];
    snprintf(dir, sizeof(dir), "%s/tests/data/gossip-corpus", src ? src : ".");
    DIR *d = opendir(dir);
    assert_non_null(d);
    fz_setup();
    size_t files = 0, files_mode[2] = {0, 0};
    uint64_t before[2] = {accounted(FZ.node[0]), accounted(FZ.node[1])};
    uint64_t opened0 = smc_ctx_stats(FZ.ctx)->opened;
    struct dirent *e;
    static uint8_t buf[70000];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        size_t len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        if (len < 1) continue;
        assert_int_equal(LLVMFuzzerTestOneInput(buf, len), 0);
        files++;
        files_mode[buf[0] & 1]++;
    }
    closedir(d);
    assert_true(files >= 20);
    /* every replayed datagram was accounted for exactly once */
    assert_int_equal(accounted(FZ.node[0]) - before[0], files_mode[0]);
    assert_int_equal(accounted(FZ.node[1]) - before[1], files_mode[1]);
    /* the sealed seeds got through the envelope */
    assert_true(smc_ctx_stats(FZ.ctx)->opened > opened0);
}

/* Seeds: one packet per message type from "fz1", plain (0x00) and sealed (0x01). */
static int generate(const char *dir)
{
    fz_setup();
    uint8_t pay[1400], pkt[1600];
    struct sm_addr a = {.len = 1, .b = {1}};
    uint64_t ids[4] = {1, 2, 3, 4}, groups[GOSSIP_GROUPS] = {0};
    struct crdt_rec_view r = {.key = "k1",
                              .key_len = 2,
                              .value = (const uint8_t *)"zz",
                              .value_len = 2,
                              .version = 9,
                              .hlc = 77,
                              .origin = "fz1",
                              .origin_len = 3};
    int n = 0;
    for (int t = 1; t <= GOSSIP_MSG__MAX; t++) {
        struct gossip_enc e;
        size_t w;
        gossip_enc_begin(&e, pay, sizeof(pay), "fz1", 3, 5);
        switch (t) {
        case GOSSIP_PING:
            gossip_enc_probe(&e, t, 1, "fz0", 3, NULL);
            break;
        case GOSSIP_ACK:
        case GOSSIP_NACK:
            gossip_enc_probe(&e, t, 1, NULL, 0, NULL);
            break;
        case GOSSIP_PING_REQ:
            gossip_enc_probe(&e, t, 2, "fz2", 3, &a);
            break;
        case GOSSIP_ALIVE:
            gossip_enc_alive(&e, "fz2", 3, 4, &a, NULL, 0);
            break;
        case GOSSIP_SUSPECT:
        case GOSSIP_DEAD:
            gossip_enc_member(&e, t, "fz0", 3, 0, "fz1", 3);
            break;
        case GOSSIP_LEAVE:
            gossip_enc_member(&e, t, "fz1", 3, 6, NULL, 0);
            break;
        case GOSSIP_JOIN:
            gossip_enc_join(&e, &a, NULL, 0, 8);
            break;
        case GOSSIP_SYNC_REQ:
        case GOSSIP_SYNC_PAGE:
            gossip_enc_sync(&e, t, 0, 4);
            break;
        case GOSSIP_REC:
            gossip_enc_rec(&e, GOSSIP_RK_EAGER, 1, &r);
            break;
        case GOSSIP_IHAVE:
        case GOSSIP_GRAFT:
        case GOSSIP_LEAF_IDS:
        case GOSSIP_WANT:
            gossip_enc_ids(&e, t, 3, 0, ids, 4, &w);
            break;
        case GOSSIP_PRUNE:
            gossip_enc_prune(&e, false);
            break;
        case GOSSIP_DIGEST:
            gossip_enc_ids(&e, t, 0, 5, groups, GOSSIP_GROUPS, &w);
            break;
        case GOSSIP_DIGEST_LEAVES:
            gossip_enc_ids(&e, t, 2, 0, groups, GOSSIP_GROUP_LEAVES, &w);
            break;
        case GOSSIP_IN_SYNC:
            gossip_enc_in_sync(&e, 5);
            break;
        case GOSSIP_WHOIS:
            gossip_enc_whois(&e, "fz2", 3);
            break;
        }
        size_t len = gossip_enc_finish(&e);
        for (int mode = 0; mode < 2; mode++) {
            size_t plen = len;
            pkt[0] = (uint8_t)mode;
            if (mode) {
                if (fz_seal_as_peer((uint64_t)t, pay, len, pkt + 1, sizeof(pkt) - 1, &plen) < 0)
                    return 1;
            } else {
                memcpy(pkt + 1, pay, len);
            }
            char path[4096];
            snprintf(path, sizeof(path), "%s/seed-%02d-%s-%s", dir, t, gossip_msg_name(t),
                     mode ? "sealed" : "plain");
            FILE *f = fopen(path, "wb");
            if (!f) return 1;
            fwrite(pkt, 1, plen + 1, f);
            fclose(f);
            n++;
        }
    }
    printf("%d seeds written to %s\n", n, dir);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--generate") == 0) return generate(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
