/* backend_mesh.c: the mesh backend: the local replica engine plus a gossip
 * node on a libev UDP socket. Reads are memory reads; writes merge locally,
 * then spread; remote changes raise the same watch events as local ones. */
#include "config.h"

#include "crypto/cert.h"
#include "crypto/ctx.h"
#include "crypto/keys.h"
#include "crypto/recsig.h"
#include "crdt/resolver.h"
#include "gossip/node.h"
#include "gossip/udp.h"
#include "localcore.h"
#include "metrics.h"

#include <ev.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_GRACE_MS (10u * 60u * 1000u) /* tombstones outlive any sane partition */

struct mesh {
    struct sm_localcore lc; /* first: the mesh is a local backend with a node */
    struct sm_node *node;
    struct gossip_udp *udp;
    struct smc_ctx *crypto;
    char advertise[128];
    uint64_t start_mono; /* when the node started (monotonic ms) */
    char *join;          /* seed list as configured: names are resolved again on rejoin */
    ev_timer rejoin;
    ev_prepare flush; /* pushes the writes of one loop iteration together */
    struct sm_hist *lag;
    uint64_t member_events[SM_MEV__COUNT];
};

/* ---- node callbacks ---- */

static void node_send(void *ud, const struct sm_addr *to, const uint8_t *buf, size_t len,
                      enum sm_pkt_class cls)
{
    (void)cls;
    struct mesh *m = ud;
    gossip_udp_send(m->udp, to, buf, len);
}

static void node_record(void *ud, const struct crdt_rec_view *rec, const struct crdt_rec_view *old)
{
    struct mesh *m = ud;
    int64_t lag = (int64_t)sm_wall_ms() - (int64_t)crdt_hlc_wall_ms(rec->hlc);
    sm_hist_observe(m->lag, lag > 0 ? (double)lag / 1000.0 : 0.0);
    /* two different writes of one version met: the resolver's precedence (then
     * hlc, origin) decided between them */
    if (old && old->version == rec->version && m->lc.resolvers)
        crdt_resolvers_note_conflict(m->lc.resolvers, rec->key, rec->key_len);
    sm_localcore_emit_remote(&m->lc, rec, old);
}

static enum sm_member_state mev_state(enum sm_member_event ev, enum sm_member_state cur)
{
    switch (ev) {
    case SM_MEV_SUSPECT:
        return SM_MEMBER_SUSPECT;
    case SM_MEV_DEAD:
    case SM_MEV_REAP:
        return SM_MEMBER_DEAD;
    case SM_MEV_LEAVE:
        return SM_MEMBER_LEFT;
    default:
        return cur ? cur : SM_MEMBER_ALIVE;
    }
}

static void node_member(void *ud, enum sm_member_event ev, const struct sm_member_info *mi)
{
    struct mesh *m = ud;
    if (ev < SM_MEV__COUNT) m->member_events[ev]++;
    char id[CRDT_MAX_ORIGIN + 1], addr[80];
    size_t n = mi->id_len < CRDT_MAX_ORIGIN ? mi->id_len : CRDT_MAX_ORIGIN;
    memcpy(id, mi->id, n);
    id[n] = '\0';
    gossip_addr_format(&mi->addr, addr, sizeof addr);
    struct sm_member sm = {.id = id,
                           .addr = addr,
                           .state = mev_state(ev, mi->state),
                           .incarnation = mi->incarnation,
                           .changed_ms = sm_wall_ms()};
    sm_store_member_event(m->lc.base.store, &sm);
}

/* ---- local writes: sign, then spread ---- */

static void prepare(struct sm_localcore *lc, struct crdt_rec_view *v, uint8_t *sig)
{
    struct mesh *m = (struct mesh *)lc;
    if (!m->crypto) return;
    if (smc_rec_sign(m->crypto, v, sig) == 0) {
        v->sig = sig;
        v->flags |= CRDT_F_SIGNED;
    }
}

/* Writes made during one loop iteration (a set_multi, a burst of HTTP
 * requests) are held and pushed together just before the loop waits again:
 * full packets instead of one packet per record and peer, at no added delay. */
static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    struct mesh *m = w->data;
    ev_prepare_stop(loop, w);
    sm_node_flush(m->node, gossip_udp_now());
    gossip_udp_rearm(m->udp);
}

static void on_local_write(struct sm_localcore *lc, const struct crdt_rec_view *v)
{
    struct mesh *m = (struct mesh *)lc;
    if (!ev_is_active(&m->flush)) {
        sm_node_hold(m->node);
        ev_prepare_start(lc->loop, &m->flush);
    }
    (void)sm_node_publish(m->node, gossip_udp_now(), v);
}

/* ---- options ---- */

static const char *const known_opts[] = {"bind",
                                         "advertise",
                                         "join",
                                         "ca",
                                         "cert",
                                         "key",
                                         "keyring",
                                         "revocations",
                                         "insecure",
                                         "seed",
                                         "gossip_interval",
                                         "probe_interval",
                                         "probe_timeout",
                                         "indirect_k",
                                         "suspicion_mult",
                                         "ae_interval",
                                         "reap_timeout",
                                         "active_view",
                                         "mtu",
                                         "retransmit_mult",
                                         "sweep_interval",
                                         "tombstone_grace",
                                         "dead_probe_interval",
                                         "rejoin_interval",
                                         NULL};

static int check_opt(const char *key, const char *value, void *arg)
{
    (void)value;
    const char **bad = arg;
    for (size_t i = 0; known_opts[i]; i++)
        if (strcmp(key + 5, known_opts[i]) == 0) return 0;
    *bad = key;
    return 1;
}

static int opt_u32(const struct sm_config *cfg, const char *key, uint32_t *out, bool duration,
                   char *err, size_t errlen)
{
    uint64_t v;
    int rc = duration ? sm_cfg_ms(cfg, key, 0, &v, err, errlen)
                      : sm_cfg_u64(cfg, key, 0, &v, err, errlen);
    if (rc < 0) return rc;
    if (v > UINT32_MAX) {
        snprintf(err, errlen, "option %s: value too large", key);
        return SM_ECONFIG;
    }
    *out = (uint32_t)v;
    return 0;
}

static bool opt_true(const char *v)
{
    return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "yes") == 0 ||
                 strcmp(v, "on") == 0);
}

/* Load a comma-separated list of key files into the keyring (first = primary).
 * All files are read before the running keyring is touched. */
static int load_keyring(struct mesh *m, const char *ring, char *err, size_t errlen)
{
    uint8_t keys[SMC_KEYRING_MAX][SMC_CLUSTER_KEY_LEN];
    size_t nk = 0;
    int rc = 0;
    char *list = sm_strdup(ring), *save = NULL;
    if (!list) return SM_ENOMEM;
    for (char *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        while (*p == ' ') p++;
        if (!*p) continue;
        if (nk == SMC_KEYRING_MAX) {
            snprintf(err, errlen, "keyring: at most %d keys (one primary, %d accepted)",
                     SMC_KEYRING_MAX, SMC_KEYRING_MAX - 1);
            rc = SM_ECONFIG;
            goto out;
        }
        if (smc_cluster_key_load(p, keys[nk], err, errlen) < 0) {
            rc = SM_ECONFIG;
            goto out;
        }
        nk++;
    }
    smc_keyring_clear(m->crypto);
    for (size_t i = 0; i < nk; i++) {
        rc = i == 0 ? smc_keyring_set_primary(m->crypto, keys[i])
                    : smc_keyring_add(m->crypto, keys[i]);
        if (rc < 0) {
            snprintf(err, errlen, "keyring: cannot install key %zu: %s", i + 1, sm_strerror(rc));
            goto out;
        }
    }
out:
    sodium_memzero(keys, sizeof keys);
    free(list);
    return rc;
}

static int load_crypto(struct mesh *m, const struct sm_config *cfg, const char *node_id,
                       uint64_t incarnation, char *err, size_t errlen)
{
    const char *ca = sm_config_get(cfg, "mesh.ca"), *cert = sm_config_get(cfg, "mesh.cert"),
               *key = sm_config_get(cfg, "mesh.key");
    if (!ca || !cert || !key) {
        if (opt_true(sm_config_get(cfg, "mesh.insecure"))) return 0;
        snprintf(err, errlen,
                 "the mesh needs mesh.ca, mesh.cert and mesh.key (--ca/--cert/--key; create "
                 "them with 'statemesh ca init' and 'statemesh cert issue'), or "
                 "mesh.insecure=true for unauthenticated gossip");
        return SM_ECONFIG;
    }
    uint8_t ca_pk[SMC_PK_LEN];
    struct smc_identity id;
    int rc = smc_ca_load_pub(ca, ca_pk, err, errlen);
    if (rc < 0) return SM_ECONFIG;
    rc = smc_identity_load(&id, cert, key, err, errlen);
    if (rc < 0) return SM_ECONFIG;
    if (id.cert.node_id_len != strlen(node_id) ||
        memcmp(id.cert.node_id, node_id, id.cert.node_id_len) != 0) {
        snprintf(err, errlen, "certificate %s is for node '%.*s', not node_id '%s'", cert,
                 (int)id.cert.node_id_len, id.cert.node_id, node_id);
        smc_identity_wipe(&id);
        return SM_ECONFIG;
    }
    struct smc_ctx_config cc = {
        .self = &id, .ca_pk = ca_pk, .now_ms = (int64_t)sm_wall_ms(), .incarnation = incarnation};
    rc = smc_ctx_new(&cc, &m->crypto, err, errlen);
    smc_identity_wipe(&id);
    if (rc < 0) return SM_ECONFIG;
    const char *rev = sm_config_get(cfg, "mesh.revocations");
    if (rev && smc_ctx_load_revlist(m->crypto, rev, err, errlen) < 0) return SM_ECONFIG;
    const char *ring = sm_config_get(cfg, "mesh.keyring");
    if (ring && *ring && load_keyring(m, ring, err, errlen) < 0) return SM_ECONFIG;
    return 0;
}

/* ---- metrics ---- */

struct statref {
    struct mesh *m;
    int kind; /* 0 sent pkts, 1 sent bytes, 2 recv pkts, 3 recv bytes, 4 rejected, 5 members */
    int idx;
};

static double stat_fn(void *arg)
{
    struct statref *r = arg;
    const struct sm_node_stats *s = sm_node_stats(r->m->node);
    switch (r->kind) {
    case 0:
        return (double)s->pkts_sent[r->idx];
    case 1:
        return (double)s->bytes_sent[r->idx];
    case 2:
        return (double)s->pkts_recv[r->idx];
    case 3:
        return (double)s->bytes_recv[r->idx];
    case 4:
        return (double)s->rejected[r->idx];
    case 5:
        return (double)s->members[r->idx];
    case 6: {
        const uint64_t *f[] = {&s->records_merged, &s->records_duplicate, &s->grafts,
                               &s->prunes,         &s->ihave_ids,         &s->ae_rounds,
                               &s->ae_in_sync,     &s->ae_records_sent,   &s->probes,
                               &s->probe_timeouts, &s->indirect_probes,   &s->suspicions,
                               &s->refutations,    &s->encode_overflow,   &s->receipt_misses,
                               &s->whois_sent};
        return (double)*f[r->idx];
    }
    case 7:
        return (double)smc_ctx_stats(r->m->crypto)->rejected[r->idx];
    }
    return 0;
}

static double udp_oversize(void *arg)
{
    struct mesh *m = arg;
    return (double)gossip_udp_stats(m->udp)->rx_oversize;
}

static double resolver_conflicts(void *arg)
{
    return (double)crdt_resolver_conflicts(arg);
}

static double mev_fn(void *arg)
{
    return (double)*(uint64_t *)arg;
}

/* statref cells live as long as the store: one static-size array per mesh. */
struct mesh_metrics {
    struct statref refs[4 * SM_PKT__COUNT + SM_REJ__COUNT + SM_MEMBER_STATE__COUNT + 16 +
                        SMC_R__COUNT];
};

static void register_metrics(struct mesh *m, struct mesh_metrics *mm)
{
    struct sm_metrics *reg = sm_store_metrics(m->lc.base.store);
    size_t k = 0;
    char l[128];
    static const char *const dirn[2] = {"out", "in"};
    for (int d = 0; d < 2; d++) {
        for (int c = 0; c < SM_PKT__COUNT; c++) {
            snprintf(l, sizeof l, "direction=\"%s\",type=\"%s\"", dirn[d],
                     sm_pkt_class_name((enum sm_pkt_class)c));
            mm->refs[k] = (struct statref){m, d == 0 ? 0 : 2, c};
            sm_metrics_counter_fn(reg, "statemesh_gossip_packets_total",
                                  "Gossip packets by direction and type", l, stat_fn,
                                  &mm->refs[k++]);
            mm->refs[k] = (struct statref){m, d == 0 ? 1 : 3, c};
            sm_metrics_counter_fn(reg, "statemesh_gossip_bytes_total",
                                  "Gossip bytes by direction and type", l, stat_fn, &mm->refs[k++]);
        }
    }
    for (int r = 0; r < SM_REJ__COUNT; r++) {
        snprintf(l, sizeof l, "reason=\"%s\"", sm_node_reject_name((enum sm_node_reject)r));
        mm->refs[k] = (struct statref){m, 4, r};
        sm_metrics_counter_fn(reg, "statemesh_gossip_rejected_total",
                              "Received packets or records rejected, by reason", l, stat_fn,
                              &mm->refs[k++]);
    }
    sm_metrics_counter_fn(reg, "statemesh_gossip_rejected_total",
                          "Received packets or records rejected, by reason",
                          "reason=\"oversize_datagram\"", udp_oversize, m);
    for (int s = 1; s < SM_MEMBER_STATE__COUNT; s++) {
        snprintf(l, sizeof l, "state=\"%s\"", sm_member_state_name((enum sm_member_state)s));
        mm->refs[k] = (struct statref){m, 5, s};
        sm_metrics_gauge_fn(reg, "statemesh_members", "Mesh members by state", l, stat_fn,
                            &mm->refs[k++]);
    }
    static const char *const evn[16] = {
        "record_merged",  "record_duplicate", "graft",          "prune",          "ihave_id",
        "ae_round",       "ae_in_sync",       "ae_record_sent", "probe",          "probe_timeout",
        "indirect_probe", "suspicion",        "refutation",     "encode_overflow", "receipt_miss",
        "whois"};
    for (int i = 0; i < 16; i++) {
        snprintf(l, sizeof l, "event=\"%s\"", evn[i]);
        mm->refs[k] = (struct statref){m, 6, i};
        sm_metrics_counter_fn(reg, "statemesh_gossip_events_total",
                              "Protocol events of this node (dissemination, anti-entropy, "
                              "failure detection)",
                              l, stat_fn, &mm->refs[k++]);
    }
    /* why the envelope or a record signature was refused: the "envelope" and
     * "record_sig" reasons above, told apart (replay, wrong CA, ...) */
    for (int r = 1; m->crypto && r < SMC_R__COUNT; r++) {
        char name[40];
        const char *src = smc_reason_name((enum smc_reason)r);
        size_t j = 0;
        for (; src[j] && j + 1 < sizeof name; j++)
            name[j] = (char)(src[j] >= 'A' && src[j] <= 'Z' ? src[j] - 'A' + 'a' : src[j]);
        name[j] = '\0';
        snprintf(l, sizeof l, "reason=\"%s\"", name);
        mm->refs[k] = (struct statref){m, 7, r};
        sm_metrics_counter_fn(reg, "statemesh_gossip_auth_rejected_total",
                              "Packets and records refused by the security layer, by reason", l,
                              stat_fn, &mm->refs[k++]);
    }
    for (int e = 0; e < SM_MEV__COUNT; e++) {
        snprintf(l, sizeof l, "event=\"%s\"", sm_member_event_name((enum sm_member_event)e));
        sm_metrics_counter_fn(reg, "statemesh_member_events_total", "Member events seen", l, mev_fn,
                              &m->member_events[e]);
    }
    for (size_t i = 0; m->lc.resolvers && i < crdt_resolvers_count(m->lc.resolvers); i++) {
        const struct crdt_resolver *r = crdt_resolvers_at(m->lc.resolvers, i);
        snprintf(l, sizeof l, "resolver=\"%s\"", crdt_resolver_name(r));
        sm_metrics_counter_fn(reg, "statemesh_conflicts_resolved_total",
                              "Concurrent writes of one version decided by a resolver", l,
                              resolver_conflicts, (void *)r);
    }
    static const double lag_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                         0.25,  0.5,   1.0,  2.5,   5.0,  10.0};
    m->lag = sm_metrics_hist(reg, "statemesh_convergence_lag_seconds",
                             "Delay from a remote write to its arrival here (wall clocks)", "",
                             lag_buckets, sizeof lag_buckets / sizeof lag_buckets[0]);
}

/* ---- seeds ---- */

#define REJOIN_CHECK_S 5.0

/* Resolve the configured seeds (names included) and ask the node to join. */
static int join_seeds(struct mesh *m, char *err, size_t errlen)
{
    struct sm_addr seeds[64];
    size_t ns = 0;
    char *list = sm_strdup(m->join), *save = NULL;
    if (!list) return SM_ENOMEM;
    for (char *p = strtok_r(list, ",", &save); p && ns < 64; p = strtok_r(NULL, ",", &save)) {
        while (*p == ' ') p++;
        if (!*p) continue;
        if (gossip_addr_parse(p, &seeds[ns], err, errlen) < 0) {
            free(list);
            return SM_ECONFIG;
        }
        ns++;
    }
    free(list);
    if (ns) sm_node_join(m->node, gossip_udp_now(), seeds, ns);
    gossip_udp_rearm(m->udp);
    return 0;
}

/* While the node knows no live peer, resolve the seed names again and rejoin:
 * seeds behind DNS may have moved since start. */
static void rejoin_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    struct mesh *m = w->data;
    if (sm_node_member_count(m->node, SM_MEMBER_ALIVE) > 1) return;
    char err[256];
    (void)join_seeds(m, err, sizeof err); /* unresolvable now: try again next time */
}

/* ---- open/close ---- */

static int mesh_open(struct sm_store *st, const struct sm_config *cfg, struct sm_backend **out,
                     char *err, size_t errlen)
{
    const char *bad = NULL;
    if (sm_cfg_foreach(cfg, "mesh.", check_opt, &bad)) {
        snprintf(err, errlen, "unknown option '%s'", bad);
        return SM_ECONFIG;
    }
    struct sm_localcore *lc;
    int rc = sm_localcore_open(st, cfg, "mesh.", DEFAULT_GRACE_MS,
                               sizeof(struct mesh) + sizeof(struct mesh_metrics), &lc, err, errlen);
    if (rc < 0) return rc;
    struct mesh *m = (struct mesh *)lc;
    struct mesh_metrics *mm = (struct mesh_metrics *)(m + 1);
    const char *node_id = sm_store_node_id(st);
    uint64_t incarnation = sm_wall_ms(); /* a restarted node outranks its old self */
    m->start_mono = gossip_udp_now().mono_ms;
    struct sm_node_config nc = {0};

    if ((rc = load_crypto(m, cfg, node_id, incarnation, err, errlen)) < 0) goto fail;
    const char *bind = sm_cfg_str(cfg, "mesh.bind", "127.0.0.1:7946");
    if ((rc = gossip_udp_new(lc->loop, bind, &m->udp, err, errlen)) < 0) goto fail;
    const char *adv = sm_config_get(cfg, "mesh.advertise");
    if (adv) {
        if ((rc = gossip_addr_parse(adv, &nc.addr, err, errlen)) < 0) {
            rc = SM_ECONFIG;
            goto fail;
        }
    } else {
        if ((rc = gossip_udp_local(m->udp, &nc.addr)) < 0) goto fail;
        char b[80];
        gossip_addr_format(&nc.addr, b, sizeof b);
        if (strncmp(b, "0.0.0.0:", 8) == 0 || strncmp(b, "[::]:", 5) == 0) {
            snprintf(err, errlen,
                     "mesh.bind %s is a wildcard address: set mesh.advertise "
                     "(--advertise) to the address peers should use",
                     bind);
            rc = SM_ECONFIG;
            goto fail;
        }
    }
    gossip_addr_format(&nc.addr, m->advertise, sizeof m->advertise);
    nc.id = node_id;
    nc.incarnation = incarnation;
    uint64_t seed;
    if ((rc = sm_cfg_u64(cfg, "mesh.seed", 0, &seed, err, errlen)) < 0) goto fail;
    if (!seed) randombytes_buf(&seed, sizeof seed);
    nc.seed = seed;
    struct {
        const char *key;
        uint32_t *field;
        bool duration;
    } u32s[] = {
        {"mesh.gossip_interval", &nc.gossip_interval_ms, true},
        {"mesh.probe_interval", &nc.probe_interval_ms, true},
        {"mesh.probe_timeout", &nc.probe_timeout_ms, true},
        {"mesh.indirect_k", &nc.indirect_k, false},
        {"mesh.suspicion_mult", &nc.suspicion_mult, false},
        {"mesh.ae_interval", &nc.ae_interval_ms, true},
        {"mesh.reap_timeout", &nc.reap_timeout_ms, true},
        {"mesh.active_view", &nc.active_view, false},
        {"mesh.mtu", &nc.mtu, false},
        {"mesh.retransmit_mult", &nc.retransmit_mult, false},
        {"mesh.dead_probe_interval", &nc.dead_probe_interval_ms, true},
        {"mesh.rejoin_interval", &nc.rejoin_interval_ms, true},
    };
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++)
        if ((rc = opt_u32(cfg, u32s[i].key, u32s[i].field, u32s[i].duration, err, errlen)) < 0)
            goto fail;
    if (nc.mtu && nc.mtu < 512) {
        snprintf(err, errlen, "option mesh.mtu: %u is below the minimum of 512", nc.mtu);
        rc = SM_ECONFIG;
        goto fail;
    }
    nc.max_value_len = (uint32_t)sm_store_max_value(st);
    nc.cb.send = node_send;
    nc.cb.on_record = node_record;
    nc.cb.on_member = node_member;
    nc.ud = m;
    nc.crypto = m->crypto;
    m->node = sm_node_new(&nc, lc->rep);
    if (!m->node) {
        snprintf(err, errlen, "cannot create the gossip node (bad node id or out of memory)");
        rc = SM_ECONFIG;
        goto fail;
    }
    lc->hooks.prepare = prepare;
    lc->hooks.on_local_write = on_local_write;
    ev_prepare_init(&m->flush, flush_cb);
    m->flush.data = m;
    register_metrics(m, mm);
    gossip_udp_attach(m->udp, m->node);

    const char *join = sm_config_get(cfg, "mesh.join");
    if (join && *join) {
        m->join = sm_strdup(join);
        if (!m->join) {
            rc = SM_ENOMEM;
            goto fail;
        }
        if ((rc = join_seeds(m, err, errlen)) < 0) goto fail;
        ev_timer_init(&m->rejoin, rejoin_cb, REJOIN_CHECK_S, REJOIN_CHECK_S);
        m->rejoin.data = m;
        ev_timer_start(lc->loop, &m->rejoin);
        ev_unref(lc->loop);
    }
    *out = &lc->base;
    return 0;
fail:
    if (ev_is_active(&m->rejoin)) {
        ev_ref(lc->loop);
        ev_timer_stop(lc->loop, &m->rejoin);
    }
    free(m->join);
    sm_node_delete(m->node);
    gossip_udp_delete(m->udp);
    smc_ctx_delete(m->crypto);
    sm_localcore_close(lc);
    free(m);
    return rc;
}

static void mesh_close(struct sm_backend *b)
{
    struct mesh *m = (struct mesh *)b;
    if (ev_is_active(&m->flush)) {
        ev_prepare_stop(m->lc.loop, &m->flush);
        sm_node_flush(m->node, gossip_udp_now());
    }
    /* A graceful leave: peers learn at once instead of suspecting us. */
    (void)sm_node_leave(m->node, gossip_udp_now());
    if (ev_is_active(&m->rejoin)) {
        ev_ref(m->lc.loop);
        ev_timer_stop(m->lc.loop, &m->rejoin);
    }
    free(m->join);
    gossip_udp_delete(m->udp);
    sm_node_delete(m->node);
    smc_ctx_delete(m->crypto);
    sm_localcore_close(&m->lc);
    free(m);
}

struct members_arg {
    sm_member_fn fn;
    void *arg;
    uint64_t mono_now, wall_now, start_mono;
};

static int member_one(const struct sm_member_info *mi, void *arg)
{
    struct members_arg *ma = arg;
    char id[CRDT_MAX_ORIGIN + 1], addr[80];
    size_t n = mi->id_len < CRDT_MAX_ORIGIN ? mi->id_len : CRDT_MAX_ORIGIN;
    memcpy(id, mi->id, n);
    id[n] = '\0';
    gossip_addr_format(&mi->addr, addr, sizeof addr);
    /* state_since_ms is 0 for a state held since the node started */
    uint64_t since = mi->state_since_ms ? mi->state_since_ms : ma->start_mono;
    uint64_t age = ma->mono_now > since ? ma->mono_now - since : 0;
    struct sm_member sm = {.id = id,
                           .addr = addr,
                           .state = mi->state,
                           .incarnation = mi->incarnation,
                           .changed_ms = ma->wall_now - age};
    return ma->fn(&sm, ma->arg);
}

static int mesh_members(struct sm_backend *b, sm_member_fn fn, void *arg)
{
    struct mesh *m = (struct mesh *)b;
    struct sm_time now = gossip_udp_now();
    struct members_arg ma = {fn, arg, now.mono_ms, (uint64_t)now.wall_ms, m->start_mono};
    return sm_node_foreach_member(m->node, member_one, &ma);
}

static int mesh_reload_keyring(struct sm_backend *b, const char *keyring, char *err, size_t errlen)
{
    struct mesh *m = (struct mesh *)b;
    if (!m->crypto) {
        snprintf(err, errlen, "the mesh runs without certificates (mesh.insecure): no keyring");
        return SM_ENOTSUP;
    }
    return load_keyring(m, keyring, err, errlen);
}

static bool live_fn(const char *node, size_t len, void *arg)
{
    struct mesh *m = arg;
    return sm_node_member_live(m->node, node, len);
}

static int mesh_counter_sum(struct sm_backend *b, const char *prefix, int64_t *out)
{
    struct mesh *m = (struct mesh *)b;
    *out = crdt_counter_sum(m->lc.rep, prefix, live_fn, m, (int64_t)sm_wall_ms());
    return 0;
}

static int mesh_connected(struct sm_backend *b)
{
    struct mesh *m = (struct mesh *)b;
    return sm_node_member_count(m->node, SM_MEMBER_ALIVE) > 1 ? 1 : 0;
}

const struct sm_backend_vt sm_backend_mesh = {
    .name = "mesh",
    .open = mesh_open,
    .close = mesh_close,
    .get_now = sm_localcore_get_now,
    .list = sm_localcore_list,
    .get_multi = sm_localcore_get_multi,
    .set_multi = sm_localcore_set_multi,
    .del = sm_localcore_del,
    .ping = sm_localcore_ping,
    .members = mesh_members,
    .counter_sum = mesh_counter_sum,
    .connected = mesh_connected,
    .reload_keyring = mesh_reload_keyring,
};
