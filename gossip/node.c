/* node.c: the sans-IO gossip node (receive, timers, lifecycle): SWIM + Lifeguard membership,
 * Plumtree dissemination, hierarchical-digest anti-entropy.
 *
 * Design. A node is driven by three entry points (recv, on_timeout, the write
 * calls) and talks only through the send callback, so the same code runs
 * under libev and in the simulator.
 *
 * Membership is SWIM: once per protocol period the node pings the next member
 * of a shuffled round-robin list; without an ack within the probe timeout it
 * asks k others to ping the target for it (they answer ack or, Lifeguard, nack);
 * without any ack by the end of the period the target becomes suspect. A
 * suspect refutes by bumping its incarnation; otherwise it is declared dead
 * when its suspicion timer runs out. The timer starts long and shrinks with
 * every independent accuser (Lifeguard's dynamic suspicion), and a node's own
 * probe timeouts stretch with its local health score, which grows when it
 * misses acks or nacks (a sign that *it* is the slow one). Membership changes
 * ("rumors") are piggybacked on probe traffic λ·log N times and, on first
 * receipt, also sent along the broadcast tree so the whole cluster hears of a
 * death or a refutation within a few network hops.
 *
 * Every packet header carries the sender's id and incarnation: a direct packet
 * from a member we hold as dead with an older incarnation makes us tell it
 * (so it refutes), and a newer incarnation revives it at once. Together with
 * probing a random dead member every second, this heals partitions.
 *
 * Dissemination is Plumtree over a small random peer set: a record is pushed at
 * once to the eager peers and announced (IHAVE, batched per gossip tick) to the
 * lazy ones; a duplicate eager copy prunes the link, a missing announced record
 * is grafted after a short wait. Links are symmetric: a peer that talks
 * Plumtree to us becomes our peer.
 *
 * Anti-entropy: every ae interval the node sends a random member its replica
 * root and 32 group digests (XOR of 32 leaves each). The peer answers the
 * leaves of differing groups; for differing leaves the initiator lists its
 * record ids; the peer sends the records the initiator lacks and asks for the
 * ones it lacks. Records learned this way are re-broadcast on the tree, which
 * is what makes a healed partition converge in seconds.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "gossip/node_int.h"

_Thread_local struct gossip_scratch gossip_scratch;

void sm_node_prefetch(const struct sm_node *n, int stage, const char *sender, size_t len)
{
    if (!n) return;
    if (stage == 0) {
        /* the lines every receive reads: the header, the peers' slots */
        __builtin_prefetch(&n->cfg.cb);
        __builtin_prefetch(&n->rep);
        __builtin_prefetch(&n->st.pkts_recv);
        __builtin_prefetch(&n->t_probe);
        __builtin_prefetch(&n->self);
        __builtin_prefetch(&n->rumors);
        __builtin_prefetch(&n->recent_pos);
        __builtin_prefetch(&n->peers[0]);
        __builtin_prefetch(&n->peers[1]);
        __builtin_prefetch(&n->peers[2]);
        __builtin_prefetch(&n->peers[3]);
        return;
    }
    if (stage == 1) {
        /* forwarding appends to each peer's receipt ids; a duplicate looks
         * through the newest recent ids */
        size_t np = n->n_peers < MAX_PEERS ? n->n_peers : MAX_PEERS;
        for (size_t i = 0; i < np; i++) {
            unsigned t = n->peers[i].n_tx;
            if (t < RCPT_MAX) __builtin_prefetch(&n->pids[i].tx[t]);
        }
        __builtin_prefetch(&n->recent[(n->recent_pos + RECENT_CAP - 1) % RECENT_CAP]);
    }
    if (!len || len > CRDT_MAX_ORIGIN || !n->tab) return;
    const struct slot *sl = &n->tab[id_hash(sender, len) & (n->tab_cap - 1)];
    if (stage == 1)
        __builtin_prefetch(sl);
    else if (sl->m)
        __builtin_prefetch(&sl->m->hash), __builtin_prefetch(sl->m->id);
}

static enum sm_pkt_class classify(const struct gossip_packet *p)
{
    if (!p->n_msgs) return SM_PKT_MEMBER;
    switch (p->msgs[0].type) {
    case GOSSIP_PING:
    case GOSSIP_ACK:
    case GOSSIP_NACK:
    case GOSSIP_PING_REQ:
        return SM_PKT_PROBE;
    case GOSSIP_REC:
        return p->msgs[0].u.rec.kind == GOSSIP_RK_AE ? SM_PKT_AE : SM_PKT_DATA;
    case GOSSIP_IHAVE:
    case GOSSIP_GRAFT:
    case GOSSIP_PRUNE:
        return SM_PKT_DATA;
    case GOSSIP_DIGEST:
    case GOSSIP_DIGEST_LEAVES:
    case GOSSIP_LEAF_IDS:
    case GOSSIP_WANT:
    case GOSSIP_IN_SYNC:
        return SM_PKT_AE;
    default:
        return SM_PKT_MEMBER;
    }
}

static void trust_cert(struct sm_node *n, const uint8_t *cert, size_t len, const char *id,
                       size_t idl)
{
    if (!n->crypto || !cert) return;
    enum smc_reason why;
    int rc = smc_trust_add(n->crypto, n->now.wall_ms, cert, len, &why);
    if (rc < 0) {
        n->st.rejected[SM_REJ_CERT]++;
        return;
    }
    if (rc == 1) gossip_release_pending(n, id, idl);
}

/* The packet's header, before its messages: count the packet, decide whether
 * it is authenticated, take in a stranger, and treat the header as a direct
 * "alive" from its sender. Returns the sender (NULL: still unknown). */
static struct member *on_header(struct sm_node *n, const struct gossip_packet *p,
                                const struct sm_addr *from, size_t req_len, enum sm_pkt_class cls,
                                bool env_auth, bool *authed)
{
    struct member *src = mfind(n, p->sender, p->sender_len);
    n->st.pkts_recv[cls]++;
    n->st.bytes_recv[cls] += req_len;
    n->st.rejected[SM_REJ_UNKNOWN_MSG] += p->n_unknown;

    /* authenticated: the envelope verified it, or (crypto off) it is a live
     * member speaking from its known address; decided before a stranger is
     * added below */
    *authed = n->crypto ? env_auth : (src && live_state(src->state) && addr_eq(&src->addr, from));
    /* a stranger talking to us (its join or rumor did not reach us, or our
     * partial view evicted it) becomes a member at the address it spoke from */
    if (!src && p->n_msgs && p->msgs[0].type != GOSSIP_JOIN && p->msgs[0].type != GOSSIP_LEAVE) {
        /* with a full (partial) view, a prober we do not know is usually just
         * someone whose view holds us: taking it in evicts another member at
         * every such probe (nine in ten at 10,000 nodes with 1,024-member
         * views), so it gets in like a rumor does, now and then */
        enum alive_via via = cls == SM_PKT_PROBE ? VIA_PROBE : VIA_DIRECT;
        if (gossip_on_alive(n, p->sender, p->sender_len, p->sender_inc, from, NULL, via))
            src = mfind(n, p->sender, p->sender_len);
    }
    /* the header is an implicit, direct "alive" from the sender */
    if (src && !src->self) {
        if (p->sender_inc > src->inc) {
            src->cert_left = CERT_SENDS; /* restarted: its trust store may be empty */
            gossip_on_alive(n, p->sender, p->sender_len, p->sender_inc, NULL, NULL, VIA_DIRECT);
        } else if (!live_state(src->state) ||
                   (src->state == SM_MEMBER_SUSPECT && p->sender_inc == src->inc)) {
            gossip_notice(n, src, from);
        }
    }
    if (src && src->peer >= 0) n->peers[src->peer].confirmed = true;
    return src;
}

/* Membership messages (the header's sender is @p p's; @p page: the packet is
 * a membership page, whose ALIVEs are state transfer rather than news). */
static void on_member_msg(struct sm_node *n, const struct gossip_packet *p,
                          const struct gossip_msg *m, struct member *src, bool page)
{
    switch (m->type) {
    case GOSSIP_ALIVE:
        n->st.rumors_received++;
        trust_cert(n, m->u.member.cert, m->u.member.cert_len, m->u.member.id, m->u.member.id_len);
        gossip_on_alive(n, m->u.member.id, m->u.member.id_len, m->u.member.inc, &m->u.member.addr,
                        src, page ? VIA_PAGE : VIA_RUMOR);
        break;
    case GOSSIP_SUSPECT:
        gossip_on_suspect(n, m->u.member.id, m->u.member.id_len, m->u.member.inc, m->u.member.from,
                          m->u.member.from_len, src);
        break;
    case GOSSIP_DEAD:
    case GOSSIP_LEAVE:
        gossip_on_dead(n, (uint8_t)m->type, m->u.member.id, m->u.member.id_len, m->u.member.inc,
                       m->u.member.from ? m->u.member.from : p->sender,
                       m->u.member.from ? m->u.member.from_len : p->sender_len, src);
        break;
    default: /* not a membership message */
        break;
    }
}

/* Message @p i of @p p, to its handler. A join makes its sender a member:
 * *@p srcp is updated for the messages after it. */
static void dispatch(struct sm_node *n, const struct gossip_packet *p, size_t i,
                     struct member **srcp, const struct sm_addr *from, bool authed, bool page,
                     struct reply *rp)
{
    const struct gossip_msg *m = &p->msgs[i];
    struct member *src = *srcp;
    switch (m->type) {
    case GOSSIP_PING:
        gossip_on_ping(n, m, rp);
        break;
    case GOSSIP_ACK:
        gossip_on_ack(n, m);
        break;
    case GOSSIP_NACK:
        gossip_on_nack(n, m);
        break;
    case GOSSIP_PING_REQ:
        gossip_on_ping_req(n, m, from, authed);
        break;
    case GOSSIP_ALIVE:
    case GOSSIP_SUSPECT:
    case GOSSIP_DEAD:
    case GOSSIP_LEAVE:
        on_member_msg(n, p, m, src, page);
        break;
    case GOSSIP_JOIN:
        trust_cert(n, m->u.join.cert, m->u.join.cert_len, p->sender, p->sender_len);
        *srcp = gossip_on_join(n, p, src, m, from, rp);
        break;
    case GOSSIP_SYNC_REQ:
        gossip_send_page(n, rp, m->u.join.cursor, src);
        break;
    case GOSSIP_SYNC_PAGE:
        gossip_on_sync_page(n, m, from);
        break;
    case GOSSIP_REC:
        if (m->u.rec.kind == GOSSIP_RK_EAGER && src) gossip_on_push(n, p, i, src);
        gossip_on_record(n, m, src);
        break;
    case GOSSIP_IHAVE:
        if (m->u.ids.round == GOSSIP_ROUND_RECEIPT)
            gossip_on_receipt(n, m, src);
        else
            gossip_on_ihave(n, m, src);
        break;
    case GOSSIP_GRAFT:
        gossip_on_graft(n, m, src, from);
        break;
    case GOSSIP_PRUNE:
        gossip_on_prune(n, m, src);
        break;
    case GOSSIP_DIGEST:
    case GOSSIP_DIGEST_LEAVES:
    case GOSSIP_LEAF_IDS:
    case GOSSIP_WANT:
    case GOSSIP_IN_SYNC:
        gossip_on_ae_msg(n, m, rp);
        break;
    case GOSSIP_WHOIS:
        gossip_on_whois(n, m, rp);
        break;
    }
}

static int process(struct sm_node *n, const struct sm_addr *from, size_t req_len, bool env_auth)
{
    struct gossip_packet *p = &gossip_scratch.in;
    enum sm_pkt_class cls = classify(p);
    bool authed;
    struct member *src = on_header(n, p, from, req_len, cls, env_auth, &authed);
    n->accused_now = false;
    bool page = p->n_msgs && p->msgs[0].type == GOSSIP_SYNC_PAGE;
    if (page) gossip_on_seed_page(n, p, from, env_auth);
    struct reply rp = {.n = n, .to = from, .budget = authed ? SIZE_MAX : req_len, .cls = cls};

    for (size_t i = 0; i < p->n_msgs; i++) dispatch(n, p, i, &src, from, authed, page, &rp);
    /* an ack (or any reply) carries piggybacked rumors */
    if (rp.open && rp.cls == SM_PKT_PROBE) gossip_piggyback(n, &rp.e);
    gossip_reply_flush(&rp);
    /* this packet told us we are suspect or dead (and made us refute, or
     * named an incarnation we already refuted): our current state goes
     * straight back to the sender, most likely the accuser, instead of only
     * along the links, which may not reach it before its timer runs out */
    if (n->accused_now) {
        /* (to a sender we cannot authenticate, no more than it sent us) */
        struct gossip_enc e;
        gossip_pkt_begin(n, &e, authed ? SIZE_MAX : req_len);
        if (gossip_enc_member_state(n, &e, n->self) == 0)
            gossip_pkt_send(n, from, &e, SM_PKT_MEMBER, 0);
    }
    gossip_fresh_flush(n);
    return 0;
}

int sm_node_recv(struct sm_node *n, struct sm_time now, const struct sm_addr *from,
                 const uint8_t *buf, size_t len)
{
    if (n->left) {
        n->st.rejected[SM_REJ_LEFT]++;
        return 0;
    }
    n->now = now;
    const uint8_t *payload = buf;
    size_t plen = len;
    int rc = 0;
    if (len > 65507) {
        n->st.rejected[SM_REJ_TOO_LARGE]++;
        return SM_ERANGE;
    }
    const char *esender = NULL;
    size_t esl = 0;
    if (n->crypto) {
        struct smc_opened o;
        rc = smc_open(n->crypto, now.wall_ms, buf, len, &o);
        if (rc != 0) {
            n->st.rejected[SM_REJ_ENVELOPE]++;
            return rc;
        }
        payload = o.payload;
        plen = o.payload_len;
        esender = o.sender;
        esl = o.sender_len;
        if (o.cert_added) gossip_release_pending(n, o.sender, o.sender_len);
    }
    enum gossip_decode_err de = gossip_decode(payload, plen, &gossip_scratch.in);
    if (de != GOSSIP_DEC_OK) {
        n->st.rejected[de == GOSSIP_DEC_VERSION    ? SM_REJ_VERSION
                       : de == GOSSIP_DEC_TOO_MANY ? SM_REJ_TOO_LARGE
                                                   : SM_REJ_DECODE]++;
        return SM_EPROTO;
    }
    if (is_self_id(n, gossip_scratch.in.sender, gossip_scratch.in.sender_len) ||
        (esender && (esl != gossip_scratch.in.sender_len ||
                     memcmp(esender, gossip_scratch.in.sender, esl) != 0))) {
        n->st.rejected[SM_REJ_SENDER]++;
        return SM_EAUTH;
    }
    process(n, from, len, n->crypto != NULL);
    gossip_recompute_next(n);
    return 0;
}

void gossip_recompute_next(struct sm_node *n)
{
    if (n->left) {
        n->next = UINT64_MAX;
        return;
    }
    uint64_t t = min64(n->t_probe, min64(n->t_ae, n->t_maint));
    /* the gossip tick only announces and sends receipts of quiet links */
    if (n->n_lazy || gossip_receipts_pending(n)) t = min64(t, n->t_gossip);
    if (n->pr.active && !n->pr.acked && !n->pr.indirect) t = min64(t, n->pr.direct_deadline);
    for (size_t i = 0; i < n->n_susp; i++)
        if (n->susp[i]->state == SM_MEMBER_SUSPECT) t = min64(t, n->susp[i]->susp_deadline);
    for (size_t i = 0; i < n->n_missing; i++) t = min64(t, n->missing[i].deadline);
    for (size_t i = 0; i < MAX_RELAYS && n->n_relays; i++)
        if (n->relays[i].used) t = min64(t, n->relays[i].deadline);
    n->next = t;
}

/* Every MAINT_MS: reaping, probing the dead, rejoining and membership
 * pulls, peer set upkeep. */
static void maint_tick(struct sm_node *n, uint64_t t)
{
    n->t_maint = on_grid(n, t + MAINT_MS);
    gossip_reap_dead(n);
    if (t >= n->t_dead_probe) {
        gossip_dead_probe(n);
        n->t_dead_probe = t + n->cfg.dead_probe_interval_ms;
    }
    gossip_rejoin_tick(n, t);
    gossip_sync_tick(n, t);
    if (t >= n->t_shuffle) {
        gossip_shuffle(n);
        n->t_shuffle = t + n->cfg.shuffle_interval_ms;
    }
    gossip_peers_fill(n);
    gossip_links_check(n);
    if (n->crypto) smc_pending_expire(n->crypto, n->now.wall_ms);
    n->st.local_health = n->lh;
}

void sm_node_on_timeout(struct sm_node *n, struct sm_time now)
{
    if (n->left) return;
    n->now = now;
    uint64_t t = now.mono_ms;
    if (n->pr.active && !n->pr.acked && !n->pr.indirect && t >= n->pr.direct_deadline)
        gossip_probe_indirect(n);
    if (t >= n->t_probe) {
        gossip_probe_finish(n);
        gossip_probe_start(n);
        n->t_probe = on_grid(n, t + scaled(n, n->cfg.probe_interval_ms));
    }
    gossip_reap_and_suspicion(n);
    if (n->n_missing) gossip_missing_tick(n);
    gossip_relays_tick(n);
    if (t >= n->t_gossip) {
        gossip_send_ihave_tick(n);
        gossip_receipts_tick(n);
        n->t_gossip = on_grid(n, t + n->cfg.gossip_interval_ms);
    }
    if (t >= n->t_ae) {
        /* quiet replicas compare roots on every ping instead (on_root) */
        if (n->last_change && t - n->last_change < 3 * (uint64_t)n->cfg.ae_interval_ms)
            gossip_ae_start(n);
        n->t_ae = on_grid(n, t + n->cfg.ae_interval_ms);
    }
    if (t >= n->t_maint) maint_tick(n, t);
    gossip_fresh_flush(n);
    gossip_recompute_next(n);
}

uint64_t sm_node_next_timeout(const struct sm_node *n)
{
    return n->next;
}

#define DEF(f, v)                                                                                  \
    do {                                                                                           \
        if (!c->f) c->f = (v);                                                                     \
    } while (0)

struct sm_node *sm_node_new(const struct sm_node_config *cfg, struct crdt_replica *replica)
{
    if (!cfg || !cfg->cb.send || !cfg->id || !replica) return NULL;
    size_t idl = cfg->id_len ? cfg->id_len : strlen(cfg->id);
    if (!idl || idl > CRDT_MAX_ORIGIN || cfg->addr.len > SM_ADDR_MAX) return NULL;
    struct sm_node *n = calloc(1, sizeof(*n));
    if (!n) return NULL;
    n->cfg = *cfg;
    struct sm_node_config *c = &n->cfg;
    memcpy(n->id, cfg->id, idl);
    c->id = n->id;
    c->id_len = idl;
    DEF(gossip_interval_ms, 200);
    DEF(probe_interval_ms, 1000);
    DEF(probe_timeout_ms, 200);
    DEF(indirect_k, 3);
    DEF(suspicion_mult, 1);
    DEF(suspicion_max_mult, 2);
    DEF(max_local_health, 8);
    DEF(ae_interval_ms, 1000);
    DEF(reap_timeout_ms, 180000);
    DEF(dead_probe_interval_ms, 1000);
    DEF(rejoin_interval_ms, 2000);
    DEF(retransmit_mult, 4);
    DEF(active_view, 2);
    DEF(graft_timeout_ms, 100);
    DEF(shuffle_interval_ms, 5000);
    DEF(mtu, 1400);
    DEF(max_value_len, 1024);
    DEF(max_members, 1024);
    if (c->max_members < 8) c->max_members = 8;
    if (c->mtu < 512) c->mtu = 512;
    if (c->mtu > 65000) c->mtu = 65000;
    n->rep = replica;
    n->crypto = cfg->crypto;
    n->rng = cfg->seed ^ 0x5DEECE66Dull;
    n->tab_cap = 64;
    n->tab = calloc(n->tab_cap, sizeof(*n->tab));
    if (!n->tab) goto err;
    n->self = gossip_madd(n, n->id, idl, cfg->incarnation, &cfg->addr, 0);
    if (!n->self) goto err;
    n->self->self = true;
    n->n_alive_other = 0;
    /* timers start staggered by the seed so a cluster does not tick in lockstep */
    n->grid = c->gossip_interval_ms < GRID_MAX_MS ? c->gossip_interval_ms : GRID_MAX_MS;
    n->grid_phase = rng_below(n, n->grid ? n->grid : 1);
    n->t_probe = on_grid(n, rng_below(n, c->probe_interval_ms));
    n->t_gossip = on_grid(n, rng_below(n, c->gossip_interval_ms));
    n->t_ae = on_grid(n, rng_below(n, c->ae_interval_ms));
    n->t_maint = on_grid(n, rng_below(n, MAINT_MS));
    n->t_dead_probe = 0;
    n->t_shuffle = c->shuffle_interval_ms + rng_below(n, c->shuffle_interval_ms);
    n->sync_every = 60000;
    n->t_sync = UINT64_MAX;
    n->seed_heard = true; /* no seeds (yet): this node is where others join */
    n->next = 0;
    return n;
err:
    sm_node_delete(n);
    return NULL;
}

void sm_node_delete(struct sm_node *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->n_members; i++) free(n->members[i]);
    free(n->members);
    free(n->tab);
    free(n->probe_list);
    free(n->susp);
    free(n->dead);
    free(n->rumors);
    free(n->seeds);
    free(n->fresh_buf);
    free(n);
}

const char *sm_node_id(const struct sm_node *n, size_t *len)
{
    if (len) *len = n->cfg.id_len;
    return n->id;
}

uint64_t sm_node_incarnation(const struct sm_node *n)
{
    return n->self->inc;
}

const struct sm_node_stats *sm_node_stats(const struct sm_node *n)
{
    return &n->st;
}

struct crdt_replica *sm_node_replica(const struct sm_node *n)
{
    return n->rep;
}

const struct sm_node_config *sm_node_config(const struct sm_node *n)
{
    return &n->cfg;
}

const char *sm_member_event_name(enum sm_member_event e)
{
    static const char *const names[] = {"join",  "suspect", "alive", "dead",
                                        "leave", "reap",    "update"};
    return (unsigned)e < SM_MEV__COUNT ? names[e] : "?";
}

const char *sm_pkt_class_name(enum sm_pkt_class c)
{
    static const char *const names[] = {"probe", "member", "data", "ae"};
    return (unsigned)c < SM_PKT__COUNT ? names[c] : "?";
}

const char *sm_node_reject_name(enum sm_node_reject r)
{
    static const char *const names[] = {"decode", "version",    "too_large", "envelope",
                                        "sender", "record_sig", "record",    "unknown_msg",
                                        "stale",  "cert",       "left"};
    return (unsigned)r < SM_REJ__COUNT ? names[r] : "?";
}

/* Test hook (not part of the API): the Plumtree peers, for tests and debugging. */
size_t gossip_node_peers(const struct sm_node *n, const char **ids, size_t *id_lens, bool *eager,
                         size_t max);
size_t gossip_node_peers(const struct sm_node *n, const char **ids, size_t *id_lens, bool *eager,
                         size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < n->n_peers && k < max; i++, k++) {
        ids[k] = n->peers[i].m->id;
        id_lens[k] = n->peers[i].m->id_len;
        eager[k] = n->peers[i].eager;
    }
    return k;
}
