/* probe.c: SWIM failure detection with Lifeguard: one probe per period along a
 * shuffled round-robin list, indirect probes through k relays with nacks, the
 * local health score, relaying for others, and probing dead members (which
 * heals partitions). */
#include "config.h"

#include <string.h>

#include "gossip/node_int.h"

static struct member *next_probe_target(struct sm_node *n)
{
    for (int round = 0; round < 2; round++) {
        while (n->probe_pos < n->probe_n) {
            struct member *m = n->probe_list[n->probe_pos++];
            if (!m->self && live_state(m->state)) return m;
        }
        /* end of a round: reshuffle the live members (O(N) once per N probes) */
        n->probe_n = 0;
        n->probe_pos = 0;
        for (size_t i = 0; i < n->n_members; i++) {
            struct member *m = n->members[i];
            if (m->self || !live_state(m->state)) continue;
            if (gossip_vec_push(&n->probe_list, &n->probe_n, &n->probe_cap, m)) break;
        }
        for (size_t i = n->probe_n; i > 1; i--) {
            size_t j = rng_below(n, i);
            struct member *t = n->probe_list[i - 1];
            n->probe_list[i - 1] = n->probe_list[j];
            n->probe_list[j] = t;
        }
        if (!n->probe_n) return NULL;
    }
    return NULL;
}

void gossip_send_ping(struct sm_node *n, struct member *t, uint32_t seq, bool notice_dead)
{
    struct gossip_enc e;
    gossip_pkt_begin(n, &e, SIZE_MAX);
    if (gossip_enc_probe(&e, GOSSIP_PING, seq, t->id, t->id_len, NULL)) return;
    /* our replica's root digest (11 bytes): a quiet peer that differs
     * answers with its full digest on the ack (see on_root) */
    (void)gossip_enc_in_sync(&e, crdt_replica_root(n->rep));
    if (notice_dead)
        (void)gossip_enc_member(&e, t->state == SM_MEMBER_LEFT ? GOSSIP_LEAVE : GOSSIP_DEAD, t->id,
                                t->id_len, t->inc, n->id, n->cfg.id_len);
    gossip_piggyback(n, &e);
    gossip_pkt_send(n, &t->addr, &e, SM_PKT_PROBE, 0);
}

void gossip_probe_finish(struct sm_node *n)
{
    if (!n->pr.active) return;
    struct member *t = n->pr.target;
    n->pr.active = false;
    if (n->pr.acked) {
        if (n->lh > 0) n->lh--;
        return;
    }
    n->st.probe_timeouts++;
    /* Lifeguard: relays that should have nacked but did not mean our own
     * network is in trouble: become more patient. */
    if (n->pr.nacks < n->pr.nacks_expected || n->pr.nacks_expected == 0) {
        if (n->lh < n->cfg.max_local_health) n->lh++;
    }
    if (t->state == SM_MEMBER_ALIVE) {
        n->st.suspicions++;
        gossip_start_suspect(n, t, n->id, n->cfg.id_len, NULL);
        t->accused = true;
        gossip_notice(n, t, &t->addr);
    }
}

void gossip_probe_start(struct sm_node *n)
{
    struct member *t = next_probe_target(n);
    if (!t) return;
    n->pr.active = true;
    n->pr.acked = false;
    n->pr.indirect = false;
    n->pr.target = t;
    n->pr.seq = ++n->seq;
    n->pr.nacks = n->pr.nacks_expected = 0;
    n->pr.direct_deadline = n->now.mono_ms + scaled(n, n->cfg.probe_timeout_ms);
    n->st.probes++;
    gossip_send_ping(n, t, n->pr.seq, false);
}

void gossip_probe_indirect(struct sm_node *n)
{
    struct member *t = n->pr.target;
    n->pr.indirect = true;
    /* one more direct try alongside the relays: on a lossy path a single
     * lost ping or ack should not be what decides (same sequence number,
     * either ack counts) */
    gossip_send_ping(n, t, n->pr.seq, false);
    unsigned want = n->cfg.indirect_k, sent = 0;
    struct member *used[16];
    for (int tries = 0; sent < want && sent < 16 && tries < 32; tries++) {
        struct member *r = gossip_random_live(n, true);
        if (!r) break;
        if (r == t) continue;
        bool dup = false;
        for (unsigned i = 0; i < sent; i++) dup |= used[i] == r;
        if (dup) continue;
        used[sent++] = r;
        struct gossip_enc e;
        gossip_pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_probe(&e, GOSSIP_PING_REQ, n->pr.seq, t->id, t->id_len, &t->addr)) break;
        gossip_piggyback(n, &e);
        gossip_pkt_send(n, &r->addr, &e, SM_PKT_PROBE, 0);
        n->st.indirect_probes++;
    }
    n->pr.nacks_expected = sent;
}

void gossip_on_ping(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    if (msg->u.probe.target_len && !is_self_id(n, msg->u.probe.target, msg->u.probe.target_len))
        return; /* meant for someone who used to have this address */
    if (!gossip_reply_open(rp)) return;
    rp->cls = SM_PKT_PROBE;
    if (gossip_enc_probe(&rp->e, GOSSIP_ACK, msg->u.probe.seq, NULL, 0, NULL)) return;
}

void gossip_on_ack(struct sm_node *n, const struct gossip_msg *msg)
{
    uint32_t seq = msg->u.probe.seq;
    if (n->pr.active && seq == n->pr.seq) {
        n->pr.acked = true;
        return;
    }
    for (size_t i = 0; i < MAX_RELAYS && n->n_relays; i++) {
        struct relay *r = &n->relays[i];
        if (r->used && r->my_seq == seq) {
            struct gossip_enc e;
            gossip_pkt_begin(n, &e, SIZE_MAX);
            if (gossip_enc_probe(&e, GOSSIP_ACK, r->their_seq, NULL, 0, NULL) == 0)
                gossip_pkt_send(n, &r->to, &e, SM_PKT_PROBE, 0);
            r->used = false;
            n->n_relays--;
            return;
        }
    }
    n->st.rejected[SM_REJ_STALE]++;
}

void gossip_on_nack(struct sm_node *n, const struct gossip_msg *msg)
{
    n->st.nacks_recv++;
    if (n->pr.active && msg->u.probe.seq == n->pr.seq) n->pr.nacks++;
}

void gossip_on_ping_req(struct sm_node *n, const struct gossip_msg *msg, const struct sm_addr *from,
                        bool authed)
{
    if (!authed) return; /* relaying for strangers would make us an amplifier */
    struct relay *r = NULL;
    for (size_t i = 0; i < MAX_RELAYS && !r; i++)
        if (!n->relays[i].used) r = &n->relays[i];
    if (!r) return;
    r->used = true;
    n->n_relays++;
    r->my_seq = ++n->seq;
    r->their_seq = msg->u.probe.seq;
    r->to = *from;
    r->deadline = n->now.mono_ms + n->cfg.probe_timeout_ms;
    struct gossip_enc e;
    gossip_pkt_begin(n, &e, SIZE_MAX);
    if (gossip_enc_probe(&e, GOSSIP_PING, r->my_seq, msg->u.probe.target, msg->u.probe.target_len,
                         NULL))
        return;
    gossip_piggyback(n, &e);
    gossip_pkt_send(n, &msg->u.probe.target_addr, &e, SM_PKT_PROBE, 0);
}

void gossip_relays_tick(struct sm_node *n)
{
    for (size_t i = 0; i < MAX_RELAYS && n->n_relays; i++) {
        struct relay *r = &n->relays[i];
        if (!r->used || r->deadline > n->now.mono_ms) continue;
        r->used = false;
        n->n_relays--;
        struct gossip_enc e;
        gossip_pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_probe(&e, GOSSIP_NACK, r->their_seq, NULL, 0, NULL) == 0)
            gossip_pkt_send(n, &r->to, &e, SM_PKT_PROBE, 0);
    }
}

void gossip_dead_probe(struct sm_node *n)
{
    /* compact first so we pick among real dead members */
    size_t live_dead = 0;
    for (size_t i = 0; i < n->n_dead; i++) {
        struct member *m = n->dead[i];
        if (m->state == SM_MEMBER_DEAD) live_dead++;
    }
    if (!live_dead) return;
    unsigned k = 1 + (unsigned)(live_dead / 64);
    if (k > 4) k = 4;
    for (unsigned j = 0; j < k; j++) {
        struct member *m = n->dead[rng_below(n, n->n_dead)];
        if (m->state != SM_MEMBER_DEAD) continue;
        gossip_send_ping(n, m, ++n->seq, true);
    }
}
