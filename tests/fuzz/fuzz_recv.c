/* fuzz_recv.c: libFuzzer target for the full receive path (crypto envelope + wire decode + node). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "statemesh.h"
#include "crdt/replica.h"
#include "crypto/crypto.h"
#include "gossip/node.h"
#include "gossip/wire.h"

/*
 * Input: byte 0 selects the receiver (bit 0: 0 = crypto off, 1 = crypto on),
 * the rest is one datagram handed to sm_node_recv(). With crypto on, the
 * receiver "fz0" trusts a peer "fz1" whose key and certificate come from
 * fixed seeds, so corpus packets sealed by fz1 get past the envelope and
 * exercise decoding and the protocol behind it. Both receivers also hold a
 * few members and records so that replies, merges and digests happen.
 */

#define FZ_NOW_WALL 1700000000000LL

struct fz {
    struct crdt_replica *rep[2];
    struct sm_node *node[2];
    struct smc_ctx *ctx, *peer_ctx;
    uint64_t mono;
    size_t sent;
};

static struct fz FZ;

static void fz_send(void *ud, const struct sm_addr *to, const uint8_t *buf, size_t len,
                    enum sm_pkt_class cls)
{
    (void)ud, (void)to, (void)buf, (void)cls;
    FZ.sent += len;
}

static void fz_seed(uint8_t out[32], uint8_t tag)
{
    for (int i = 0; i < 32; i++) out[i] = (uint8_t)(tag * 31 + i);
}

/* An identity for @p name signed by the fixed CA; its context in *out. */
static int fz_ctx(const char *name, uint8_t tag, struct smc_ctx **out)
{
    struct smc_keypair ca, kp;
    struct smc_identity ident;
    struct smc_cert cert;
    uint8_t seed[32];
    char err[128];
    fz_seed(seed, 1);
    if (smc_keypair_from_seed(&ca, seed) < 0) return -1;
    fz_seed(seed, tag);
    if (smc_keypair_from_seed(&kp, seed) < 0) return -1;
    memset(&cert, 0, sizeof(cert));
    memcpy(cert.node_id, name, strlen(name) + 1);
    cert.node_id_len = strlen(name);
    memcpy(cert.node_pk, kp.pk, SMC_PK_LEN);
    cert.not_before_ms = FZ_NOW_WALL - 86400000LL;
    cert.not_after_ms = FZ_NOW_WALL + 86400000LL;
    if (smc_cert_sign(&cert, &ca) < 0) return -1;
    if (smc_identity_init(&ident, &cert, &kp) < 0) return -1;
    fz_seed(seed, (uint8_t)(tag + 100));
    struct smc_ctx_config cfg = {.self = &ident, .ca_pk = ca.pk, .now_ms = FZ_NOW_WALL,
                                 .incarnation = 1, .seed = seed};
    int rc = smc_ctx_new(&cfg, out, err, sizeof(err));
    smc_identity_wipe(&ident);
    smc_keypair_wipe(&ca);
    smc_keypair_wipe(&kp);
    return rc;
}

static struct sm_time fz_time(void)
{
    struct sm_time t = {.mono_ms = FZ.mono, .wall_ms = FZ_NOW_WALL + (int64_t)FZ.mono};
    return t;
}

static void fz_setup(void)
{
    if (FZ.node[0]) return;
    FZ.mono = 1000;
    if (fz_ctx("fz0", 2, &FZ.ctx) < 0 || fz_ctx("fz1", 3, &FZ.peer_ctx) < 0) abort();
    /* fz0 trusts fz1 (as if its certificate had come with membership) */
    size_t cl;
    const uint8_t *cert = smc_ctx_cert(FZ.peer_ctx, &cl);
    enum smc_reason why;
    if (smc_trust_add(FZ.ctx, FZ_NOW_WALL, cert, cl, &why) < 0) abort();
    for (int i = 0; i < 2; i++) {
        FZ.rep[i] = crdt_replica_new();
        struct sm_node_config c = {0};
        c.id = "fz0";
        c.addr.len = 1;
        c.seed = 7;
        c.cb.send = fz_send;
        c.crypto = i ? FZ.ctx : NULL;
        FZ.node[i] = sm_node_new(&c, FZ.rep[i]);
        if (!FZ.node[i]) abort();
        struct sm_addr seed = {.len = 1, .b = {1}};
        (void)sm_node_join(FZ.node[i], fz_time(), &seed, 1);
        for (int k = 0; k < 8; k++) {
            char key[8] = {'k', (char)('0' + k), 0};
            struct crdt_rec_view v = {.key = key, .key_len = 2, .value = (const uint8_t *)"v",
                                      .value_len = 1, .version = 1, .hlc = 1, .origin = "fz0",
                                      .origin_len = 3};
            (void)sm_node_write(FZ.node[i], fz_time(), &v);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_setup();
    if (size < 1) return 0;
    int which = data[0] & 1;
    struct sm_addr from = {.len = 1, .b = {1}};
    FZ.mono += 7;
    (void)sm_node_recv(FZ.node[which], fz_time(), &from, data + 1, size - 1);
    /* also drive its timers, so state created by the packet is exercised */
    if (sm_node_next_timeout(FZ.node[which]) <= FZ.mono)
        sm_node_on_timeout(FZ.node[which], fz_time());
    /* the decoder alone, on the raw bytes */
    static struct gossip_packet p;
    (void)gossip_decode(data + 1, size - 1, &p);
    return 0;
}

/* For corpus generation and replay: seal @p payload as fz1 (crypto mode). */
static inline int fz_seal_as_peer(uint64_t seq, const uint8_t *payload, size_t len, uint8_t *out,
                                  size_t cap, size_t *outlen)
{
    fz_setup();
    return smc_seal(FZ.peer_ctx, seq, 0, payload, len, out, cap, outlen);
}
