/* core.c: drives the unmodified gossip core (sm_node) from the simulator's events. */
#include "config.h"

#include "sim/core.h"

#include "crdt/hlc.h"
#include "crypto/cert.h"
#include "crypto/ctx.h"
#include "crypto/recsig.h"
#include "gossip/node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Addresses are the 4-byte node index (little endian). The core's monotonic
 * clock is virtual time in ms plus MONO_BASE (so it never starts at zero);
 * its wall clock is the node's skewed wall clock from the engine.
 *
 * With crypto on, every node gets an Ed25519 identity derived from the seed
 * and a certificate from an in-process CA whose key is derived from a fixed
 * seed, so runs stay reproducible.
 */

#define MONO_BASE 1000000ULL

struct core {
    struct sim *sim;
    uint32_t id;
    struct sm_node *node;
    struct crdt_hlc hlc;
    int64_t wall; /* wall clock of the call in progress (for on_record) */
    struct smc_ctx *ctx;
    char name[16];
};

void sim_core_opts_default(struct sim_core_opts *o)
{
    memset(o, 0, sizeof(*o));
}

int64_t sim_core_warmup_ms(uint32_t nodes)
{
    /* joins fan out through seeds and membership pages; a few probe periods settle it */
    return nodes <= 200 ? 5000 : 10000;
}

static struct sm_addr addr_of(uint32_t id)
{
    struct sm_addr a = {.len = 4};
    for (int i = 0; i < 4; i++) a.b[i] = (uint8_t)(id >> (8 * i));
    return a;
}

static bool id_of(const struct sm_addr *a, uint32_t *id)
{
    if (a->len != 4) return false;
    *id = (uint32_t)a->b[0] | (uint32_t)a->b[1] << 8 | (uint32_t)a->b[2] << 16 |
          (uint32_t)a->b[3] << 24;
    return true;
}

static struct sm_time tm(const struct core *c, int64_t wall)
{
    struct sm_time t = {.mono_ms = MONO_BASE + (uint64_t)(sim_now(c->sim) / SIM_US),
                        .wall_ms = wall};
    return t;
}

static void cb_send(void *ud, const struct sm_addr *to, const uint8_t *buf, size_t len,
                    enum sm_pkt_class cls)
{
    struct core *c = ud;
    uint32_t dst;
    enum sim_pkt_class k = cls == SM_PKT_PROBE    ? SIM_PKT_FD
                           : cls == SM_PKT_MEMBER ? SIM_PKT_MEMBER
                           : cls == SM_PKT_AE     ? SIM_PKT_AE
                                                  : SIM_PKT_DATA;
    if (!id_of(to, &dst)) dst = UINT32_MAX; /* counted as refused */
    sim_send(c->sim, c->id, dst, buf, len, k);
}

static void cb_record(void *ud, const struct crdt_rec_view *rec, const struct crdt_rec_view *old)
{
    struct core *c = ud;
    (void)old;
    /* keep the writer's clock ahead of what it has seen, as the daemon does */
    (void)crdt_hlc_update(&c->hlc, (uint64_t)c->wall, rec->hlc, NULL);
}

static void cb_member(void *ud, enum sm_member_event ev, const struct sm_member_info *m)
{
    struct core *c = ud;
    uint32_t subj;
    if (m->self || !id_of(&m->addr, &subj)) return;
    enum sim_member_ev e;
    switch (ev) {
    case SM_MEV_JOIN:
        e = SIM_MEV_JOIN;
        break;
    case SM_MEV_SUSPECT:
        e = SIM_MEV_SUSPECT;
        break;
    case SM_MEV_ALIVE:
        e = SIM_MEV_ALIVE;
        break;
    case SM_MEV_DEAD:
        e = SIM_MEV_DEAD;
        break;
    case SM_MEV_LEAVE:
        e = SIM_MEV_LEAVE;
        break;
    default:
        return;
    }
    sim_member_event(c->sim, c->id, subj, e);
}

static void seed_bytes(uint64_t x, uint8_t out[32])
{
    for (int i = 0; i < 32; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        out[i] = (uint8_t)(x >> 56);
    }
}

/* An identity for node @p name signed by the simulation's CA, and its context. */
static int make_ctx(struct core *c, const struct sim_node_init *in)
{
    struct smc_keypair ca, kp;
    struct smc_identity ident;
    uint8_t seed[32];
    char err[128];
    int rc;
    seed_bytes(0x5ca1ab1eULL, seed);
    if ((rc = smc_keypair_from_seed(&ca, seed)) < 0) return rc;
    seed_bytes(in->seed, seed);
    if ((rc = smc_keypair_from_seed(&kp, seed)) < 0) goto out;
    struct smc_cert cert;
    memset(&cert, 0, sizeof(cert));
    memcpy(cert.node_id, in->name, strlen(in->name) + 1);
    cert.node_id_len = strlen(in->name);
    memcpy(cert.node_pk, kp.pk, SMC_PK_LEN);
    cert.not_before_ms = SIM_EPOCH_MS - 86400000LL;
    cert.not_after_ms = SIM_EPOCH_MS + 365 * 86400000LL;
    if ((rc = smc_cert_sign(&cert, &ca)) < 0) goto out;
    if ((rc = smc_identity_init(&ident, &cert, &kp)) < 0) goto out;
    struct smc_ctx_config cfg = {
        .self = &ident,
        .ca_pk = ca.pk,
        .now_ms = in->now_ms,
        .incarnation = (uint64_t)in->now_ms,
        .seed = seed,
    };
    rc = smc_ctx_new(&cfg, &c->ctx, err, sizeof(err));
    if (rc < 0) fprintf(stderr, "statemesh-sim: crypto context for %s: %s\n", in->name, err);
    smc_identity_wipe(&ident);
out:
    smc_keypair_wipe(&ca);
    smc_keypair_wipe(&kp);
    return rc;
}

static int core_new(struct sim *s, const struct sim_node_init *in, void **out)
{
    const struct sim_core_opts *o = in->proto_arg;
    struct core *c = calloc(1, sizeof(*c));
    if (!c) return SM_ENOMEM;
    c->sim = s;
    c->id = in->id;
    c->wall = in->now_ms;
    snprintf(c->name, sizeof(c->name), "%s", in->name);
    crdt_hlc_init(&c->hlc, 0);
    int rc = 0;
    if (o && o->crypto && (rc = make_ctx(c, in)) < 0) goto err;
    struct sm_node_config cfg = {
        .id = c->name,
        .addr = addr_of(in->id),
        .seed = in->seed,
        /* a restarted node must outrank its former self */
        .incarnation = (uint64_t)in->now_ms,
        .cb = {.send = cb_send, .on_record = cb_record, .on_member = cb_member},
        .ud = c,
        .crypto = c->ctx,
    };
    if (o) {
        cfg.gossip_interval_ms = o->gossip_interval_ms;
        cfg.probe_interval_ms = o->probe_interval_ms;
        cfg.ae_interval_ms = o->ae_interval_ms;
        cfg.suspicion_mult = o->suspicion_mult;
        cfg.active_view = o->active_view;
    }
    c->node = sm_node_new(&cfg, in->replica);
    if (!c->node) {
        rc = SM_ENOMEM;
        goto err;
    }
    if (in->nseeds) {
        struct sm_addr seeds[8];
        size_t n = in->nseeds < 8 ? in->nseeds : 8;
        for (size_t i = 0; i < n; i++) seeds[i] = addr_of(in->seeds[i]);
        rc = sm_node_join(c->node, tm(c, in->now_ms), seeds, n);
        if (rc < 0) goto err;
    }
    *out = c;
    return 0;
err:
    sm_node_delete(c->node);
    smc_ctx_delete(c->ctx);
    free(c);
    return rc;
}

/* SIM_DEBUG=1: per-node drop counters on stderr when a node goes away (diagnostics) */
static void debug_dump(const struct core *c)
{
    static int on = -1;
    if (on < 0) on = getenv("SIM_DEBUG") != NULL;
    if (!on) return;
    const struct sm_node_stats *st = sm_node_stats(c->node);
    fprintf(stderr,
            "%s: alive=%llu suspect=%llu dead=%llu merged=%llu ae_rounds=%llu peers=%llu "
            "susp=%llu refute=%llu rumq=%llu rumr=%llu member_tx=%llu data_tx=%llu rmiss=%llu "
            "grafts=%llu overflow=%llu |",
            c->name, (unsigned long long)st->members[SM_MEMBER_ALIVE],
            (unsigned long long)st->members[SM_MEMBER_SUSPECT],
            (unsigned long long)st->members[SM_MEMBER_DEAD], (unsigned long long)st->records_merged,
            (unsigned long long)st->ae_rounds, (unsigned long long)st->peers,
            (unsigned long long)st->suspicions, (unsigned long long)st->refutations,
            (unsigned long long)st->rumors_queued, (unsigned long long)st->rumors_received,
            (unsigned long long)st->pkts_sent[SM_PKT_MEMBER],
            (unsigned long long)st->pkts_sent[SM_PKT_DATA], (unsigned long long)st->receipt_misses,
            (unsigned long long)st->grafts, (unsigned long long)st->encode_overflow);
    for (int i = 0; i < SM_REJ__COUNT; i++)
        if (st->rejected[i])
            fprintf(stderr, " %s=%llu", sm_node_reject_name((enum sm_node_reject)i),
                    (unsigned long long)st->rejected[i]);
    if (c->ctx) {
        const struct smc_stats *cs = smc_ctx_stats(c->ctx);
        fprintf(stderr, " | sealed=%llu opened=%llu certs=%llu prel=%llu pdrop=%llu pnow=%zu",
                (unsigned long long)cs->sealed, (unsigned long long)cs->opened,
                (unsigned long long)cs->certs_added, (unsigned long long)cs->pending_released,
                (unsigned long long)cs->pending_dropped, smc_pending_count(c->ctx));
        for (int i = 0; i < SMC_R__COUNT; i++)
            if (cs->rejected[i])
                fprintf(stderr, " %s=%llu", smc_reason_name((enum smc_reason)i),
                        (unsigned long long)cs->rejected[i]);
    }
    fputc('\n', stderr);
}

static void core_delete(void *p)
{
    struct core *c = p;
    debug_dump(c);
    sm_node_delete(c->node);
    smc_ctx_delete(c->ctx);
    free(c);
}

static void core_recv(void *p, int64_t now_ms, uint32_t from, const uint8_t *buf, size_t len)
{
    struct core *c = p;
    struct sm_addr a = addr_of(from);
    c->wall = now_ms;
    (void)sm_node_recv(c->node, tm(c, now_ms), &a, buf, len);
}

static void core_timeout(void *p, int64_t now_ms)
{
    struct core *c = p;
    c->wall = now_ms;
    sm_node_on_timeout(c->node, tm(c, now_ms));
}

static int64_t core_next(void *p)
{
    const struct core *c = p;
    uint64_t t = sm_node_next_timeout(c->node);
    if (t >= (uint64_t)INT64_MAX) return SIM_NEVER;
    return t < MONO_BASE ? 0 : (int64_t)(t - MONO_BASE);
}

static int core_write(void *p, int64_t now_ms, const char *key, size_t klen, const uint8_t *val,
                      size_t vlen)
{
    struct core *c = p;
    c->wall = now_ms;
    struct crdt_rec_view v = {
        .key = key,
        .key_len = klen,
        .value = val,
        .value_len = vlen,
        .version = crdt_replica_version(sm_node_replica(c->node), key, klen) + 1,
        .hlc = crdt_hlc_now(&c->hlc, (uint64_t)now_ms),
        .origin = c->name,
        .origin_len = strlen(c->name),
    };
    int rc = sm_node_write(c->node, tm(c, now_ms), &v);
    return rc < 0 ? rc : 0;
}

static uint64_t core_incarnation(void *p)
{
    return sm_node_incarnation(((struct core *)p)->node);
}

/* Node @p id's member id, "n<id>" as the engine names nodes (no snprintf: the
 * prefetch path spells one per event). Returns its length. */
static size_t member_id(uint32_t id, char out[12])
{
    char digits[10];
    size_t nd = 0, len = 0;
    do digits[nd++] = (char)('0' + id % 10);
    while ((id /= 10) && nd < sizeof(digits));
    out[len++] = 'n';
    while (nd) out[len++] = digits[--nd];
    return len;
}

static bool core_knows(void *p, uint32_t id)
{
    const struct core *c = p;
    char name[12];
    struct sm_member_info m;
    size_t len = member_id(id, name);
    if (sm_node_member_get(c->node, name, len, &m) < 0) return false;
    return m.state == SM_MEMBER_ALIVE || m.state == SM_MEMBER_SUSPECT;
}

static void core_prefetch(void *p, int stage, uint32_t from)
{
    const struct core *c = p;
    if (stage == 0) {
        __builtin_prefetch(c);
        return;
    }
    char id[12];
    size_t len = from != UINT32_MAX && stage >= 2 ? member_id(from, id) : 0;
    sm_node_prefetch(c->node, stage - 1, id, len);
}

const struct sim_proto sim_proto_core = {
    .name = "gossip",
    .node_new = core_new,
    .node_delete = core_delete,
    .recv = core_recv,
    .timeout = core_timeout,
    .next_timeout = core_next,
    .write = core_write,
    .incarnation = core_incarnation,
    .knows = core_knows,
    .prefetch = core_prefetch,
};
