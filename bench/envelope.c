/* envelope.c: bench/envelope: sign+encode and verify+decode of full gossip packets vs raw Ed25519.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "crypto/crypto.h"
#include "gossip/wire.h"

/*
 * What is measured, all in one run, interleaved in short slices so that load
 * from other processes hits every metric alike:
 *
 *  - sign_encode_pps: a relay's send path: gossip_enc_* a batch of one origin's
 *    already signed records into a payload that fills a 1400-byte packet, then
 *    smc_seal() it (one Ed25519 signature over the packet).
 *  - verify_decode_pps: the receive path: smc_open() (header, sender lookup,
 *    replay window, one Ed25519 verify), gossip_decode(), then smc_rec_verify()
 *    of every record (answered by the warm verified-record cache).
 *  - raw_verify_pps: crypto_sign_verify_detached() alone over the same packets.
 *  - verify_ratio: verify_decode over raw_verify rate, the median of the per-round
 *    ratios (target >= 0.9); stderr also shows the ratio of the totals.
 *  - origin_sign_encode_pps (extra): the origin's path, which also signs every
 *    record of the packet (one Ed25519 signature per record).
 */

#define MTU         1400
#define POOL        2048     /* distinct packets; re-sealed with a new incarnation when used up */
#define SLICE_NS    25000000 /* 25 ms per slice */
#define MIN_NS      1500000000LL /* at least 1.5 s for each signing metric */
#define MIN_PAIR_NS 8000000000LL /* and 8 s each for raw and verify: the ratio is the target */
#define N_RECS      256          /* distinct records of the origin */
#define T0          INT64_C(1700000000000)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench/envelope: %s failed: %d (%s)\n", what, rc, sm_strerror(rc));
    exit(1);
}

struct rec {
    char key[40];
    char value[128];
    uint8_t sig[SMC_SIG_LEN];
    struct crdt_rec_view v;
};

struct bench {
    struct smc_ctx *a, *b;
    struct rec recs[N_RECS];
    size_t next_rec;
    uint8_t pkt[POOL][MTU];
    size_t len[POOL];
    size_t pos; /* next pool packet to verify */
    uint64_t seq;
    size_t records_per_packet;
};

/* Fill one packet with the next records of the origin; @p sign_records: sign them too. */
static void build_packet(struct bench *bn, uint8_t *out, size_t *outlen, int sign_records)
{
    uint8_t payload[MTU];
    struct gossip_enc e;
    size_t idlen, n = 0;
    const char *id = smc_ctx_node_id(bn->a, &idlen);
    size_t cap = MTU - smc_seal_overhead(bn->a, 0);
    int rc;
    if ((rc = gossip_enc_begin(&e, payload, cap, id, idlen, 1)) < 0) die("gossip_enc_begin", rc);
    /* Records have different sizes: when the next one does not fit, try a few more so the
     * packet ends up close to the MTU, as a real batch would. */
    for (int misses = 0; misses < 16;) {
        struct rec *r = &bn->recs[bn->next_rec];
        bn->next_rec = (bn->next_rec + 1) % N_RECS;
        if (sign_records && (rc = smc_rec_sign(bn->a, &r->v, r->sig)) < 0) die("smc_rec_sign", rc);
        if (gossip_enc_rec(&e, GOSSIP_RK_EAGER, 1, &r->v) < 0) {
            misses++;
            continue;
        }
        n++;
    }
    bn->records_per_packet = n;
    size_t plen = gossip_enc_finish(&e);
    if ((rc = smc_seal(bn->a, ++bn->seq, 0, payload, plen, out, MTU, outlen)) < 0)
        die("smc_seal", rc);
}

/* New incarnation, fresh packets: the receiver's replay window accepts them all again. */
static void refill(struct bench *bn)
{
    smc_ctx_set_incarnation(bn->a, smc_ctx_incarnation(bn->a) + 1);
    bn->seq = 0;
    for (size_t i = 0; i < POOL; i++) build_packet(bn, bn->pkt[i], &bn->len[i], 0);
    bn->pos = 0;
}

static volatile uint64_t sink;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of per-round ratios: a burst of load from another process skews one round, not all. */
static double median(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int verify_decode(struct bench *bn, const uint8_t *pkt, size_t len)
{
    static struct gossip_packet gp;
    struct smc_opened o;
    enum smc_reason why;
    if (smc_open(bn->b, T0, pkt, len, &o) != 0) return -1;
    if (gossip_decode(o.payload, o.payload_len, &gp) != GOSSIP_DEC_OK) return -1;
    for (size_t i = 0; i < gp.n_msgs; i++) {
        if (gp.msgs[i].type != GOSSIP_REC) continue;
        if (smc_rec_verify(bn->b, T0, &gp.msgs[i].u.rec.v, &why) != 0) return -1;
        sink += gp.msgs[i].u.rec.v.version;
    }
    return 0;
}

enum metric { M_RAW, M_VERIFY, M_SIGN, M_ORIGIN, M__N };
static const char *const names[M__N] = {"raw_verify_pps", "verify_decode_pps", "sign_encode_pps",
                                        "origin_sign_encode_pps"};

/* Run metric @p m for one slice; returns operations done and adds the time to *ns. */
static uint64_t slice(struct bench *bn, enum metric m, uint64_t *ns)
{
    uint64_t ops = 0, paused = 0, t0 = now_ns(), t;
    static uint8_t scratch[MTU];
    size_t slen;
    size_t rp = 0;
    do {
        for (int k = 0; k < 16; k++) {
            switch (m) {
            case M_RAW: {
                const uint8_t *p = bn->pkt[rp];
                size_t len = bn->len[rp];
                rp = (rp + 1) % POOL;
                if (crypto_sign_verify_detached(p + len - 64, p, len - 64, smc_ctx_pk(bn->a)) != 0)
                    die("crypto_sign_verify_detached", SM_ECRYPTO);
                break;
            }
            case M_VERIFY:
                if (bn->pos == POOL) {
                    uint64_t p0 = now_ns();
                    refill(bn);
                    paused += now_ns() - p0;
                }
                if (verify_decode(bn, bn->pkt[bn->pos], bn->len[bn->pos]) != 0)
                    die("verify+decode", SM_ECRYPTO);
                bn->pos++;
                break;
            case M_SIGN:
                build_packet(bn, scratch, &slen, 0);
                break;
            case M_ORIGIN:
                build_packet(bn, scratch, &slen, 1);
                break;
            default:
                break;
            }
            ops++;
        }
        t = now_ns();
    } while (t - t0 - paused < SLICE_NS);
    *ns += t - t0 - paused;
    return ops;
}

int main(void)
{
    struct bench *bn = calloc(1, sizeof(*bn));
    struct smc_keypair ca, kp;
    struct smc_identity alice, bob;
    struct smc_cert c;
    uint8_t seed[32];
    int rc;

    if (!bn || smc_init() < 0) die("init", SM_ENOMEM);
    memset(seed, 1, 32);
    if ((rc = smc_keypair_from_seed(&ca, seed)) < 0) die("ca key", rc);
    const char *ids[2] = {"proxy-eu-west-1a-017", "proxy-eu-west-1b-042"};
    struct smc_identity *idents[2] = {&alice, &bob};
    for (int i = 0; i < 2; i++) {
        memset(seed, 2 + i, 32);
        if ((rc = smc_keypair_from_seed(&kp, seed)) < 0) die("node key", rc);
        memset(&c, 0, sizeof(c));
        c.node_id_len = strlen(ids[i]);
        memcpy(c.node_id, ids[i], c.node_id_len);
        memcpy(c.node_pk, kp.pk, SMC_PK_LEN);
        c.not_before_ms = T0 - 86400000;
        c.not_after_ms = T0 + 86400000;
        if ((rc = smc_cert_sign(&c, &ca)) < 0) die("cert", rc);
        if ((rc = smc_identity_init(idents[i], &c, &kp)) < 0) die("identity", rc);
        smc_keypair_wipe(&kp);
    }
    struct smc_ctx_config cfg = {
        .ca_pk = ca.pk, .now_ms = T0, .incarnation = 1, .cache_slots = 4096};
    cfg.self = &alice;
    if ((rc = smc_ctx_new(&cfg, &bn->a, NULL, 0)) < 0) die("ctx a", rc);
    cfg.self = &bob;
    if ((rc = smc_ctx_new(&cfg, &bn->b, NULL, 0)) < 0) die("ctx b", rc);
    enum smc_reason why;
    if ((rc = smc_trust_add(bn->b, T0, alice.cert_bytes, alice.cert_len, &why)) < 0)
        die("trust", rc);

    /* One origin's records: backend health entries, signed once at write time. */
    for (int i = 0; i < N_RECS; i++) {
        struct rec *r = &bn->recs[i];
        snprintf(r->key, sizeof(r->key), "backend:health:pool-a/web-%03d", i);
        if (i % 4 == 3) /* a per-node counter slot: small records fill the packet's tail */
            snprintf(r->key, sizeof(r->key), "lb:conns:pool-a/web-%03d", i);
        /* 40..90-byte JSON values, as the health model writes them */
        if (i % 4 == 3)
            snprintf(r->value, sizeof(r->value), "%d", 100 + i);
        else
            snprintf(r->value, sizeof(r->value),
                     "{\"healthy\":%s,\"latency_ms\":%d,\"checked_at\":%lld%s}",
                     i % 7 ? "true" : "false", 10 + i % 50, (long long)T0 / 1000 + i,
                     i % 3 == 0 ? ",\"reason\":\"connect timeout after 3 tries\"" : "");
        r->v = (struct crdt_rec_view){.key = r->key,
                                      .key_len = strlen(r->key),
                                      .value = (const uint8_t *)r->value,
                                      .value_len = strlen(r->value),
                                      .version = 1000 + (uint64_t)i,
                                      .hlc = ((uint64_t)T0 << 16) + (uint64_t)i,
                                      .origin = ids[0],
                                      .origin_len = strlen(ids[0]),
                                      .precedence = 0,
                                      .flags = CRDT_F_SIGNED,
                                      .expires_at = T0 + 30000,
                                      .sig = r->sig};
        if ((rc = smc_rec_sign(bn->a, &r->v, r->sig)) < 0) die("record sign", rc);
    }
    refill(bn);
    /* Warm the verified-record cache: every record seen once (as a relayed copy would be). */
    for (size_t i = 0; i < POOL && i < N_RECS; i++)
        if (verify_decode(bn, bn->pkt[i], bn->len[i]) != 0) die("warm-up", SM_ECRYPTO);
    bn->pos = N_RECS < POOL ? N_RECS : POOL;

    uint64_t ops[M__N] = {0}, ns[M__N] = {0};
    static double ratios[4096];
    size_t n_ratios = 0;
    /*
     * A round is raw, verify, verify, raw (ABBA, so a drift in machine load within the
     * round cancels out) and yields one verify/raw ratio; every fourth round also runs
     * the two signing paths. The headline ratio is the median over the rounds.
     */
    static const enum metric abba[4] = {M_RAW, M_VERIFY, M_VERIFY, M_RAW};
    for (int round = 0;; round++) {
        uint64_t o[M__N] = {0}, t[M__N] = {0};
        for (int i = 0; i < 4; i++) {
            enum metric m = abba[i];
            /* Refill between slices, so no verify slice is interrupted by signing. */
            if (m == M_VERIFY && POOL - bn->pos < POOL / 2) refill(bn);
            o[m] += slice(bn, m, &t[m]);
        }
        if (round % 4 == 0) {
            o[M_SIGN] = slice(bn, M_SIGN, &t[M_SIGN]);
            o[M_ORIGIN] = slice(bn, M_ORIGIN, &t[M_ORIGIN]);
        }
        for (int m = 0; m < M__N; m++) {
            ops[m] += o[m];
            ns[m] += t[m];
        }
        if (n_ratios < sizeof(ratios) / sizeof(ratios[0]))
            ratios[n_ratios++] =
                ((double)o[M_VERIFY] / (double)t[M_VERIFY]) / ((double)o[M_RAW] / (double)t[M_RAW]);
        if (ns[M_RAW] >= (uint64_t)MIN_PAIR_NS && ns[M_VERIFY] >= (uint64_t)MIN_PAIR_NS &&
            ns[M_SIGN] >= (uint64_t)MIN_NS && ns[M_ORIGIN] >= (uint64_t)MIN_NS)
            break;
    }
    double pps[M__N];
    for (int m = 0; m < M__N; m++) pps[m] = (double)ops[m] * 1e9 / (double)ns[m];
    for (int m = 0; m < M__N; m++)
        printf("{\"bench\":\"envelope\",\"metric\":\"%s\",\"value\":%.0f,\"unit\":\"packets/s\"}\n",
               names[m], pps[m]);
    printf(
        "{\"bench\":\"envelope\",\"metric\":\"verify_ratio\",\"value\":%.3f,\"unit\":\"ratio\"}\n",
        median(ratios, n_ratios));
    printf("{\"bench\":\"envelope\",\"metric\":\"records_per_packet\",\"value\":%zu,\"unit\":"
           "\"records\"}\n",
           bn->records_per_packet);
    printf(
        "{\"bench\":\"envelope\",\"metric\":\"packet_bytes\",\"value\":%zu,\"unit\":\"bytes\"}\n",
        bn->len[0]);
    const struct smc_stats *st = smc_ctx_stats(bn->b);
    fprintf(stderr,
            "bench/envelope: %zu records/packet, %zu-byte packets, cache hits %llu, record "
            "verifies %llu, ratio of totals %.3f over %zu rounds\n",
            bn->records_per_packet, bn->len[0], (unsigned long long)st->rec_cache_hits,
            (unsigned long long)st->rec_verified, pps[M_VERIFY] / pps[M_RAW], n_ratios);
    smc_ctx_delete(bn->a);
    smc_ctx_delete(bn->b);
    smc_identity_wipe(&alice);
    smc_identity_wipe(&bob);
    smc_keypair_wipe(&ca);
    free(bn);
    return 0;
}
