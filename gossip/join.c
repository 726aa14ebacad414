/* join.c: joining and membership sync: the padded join, the membership pages
 * that answer a join or a sync request, and leaving. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "gossip/node_int.h"

void gossip_send_join(struct sm_node *n, const struct sm_addr *to)
{
    struct gossip_enc e;
    size_t cap = gossip_payload_cap(n, SMC_SEAL_CERT);
    (void)gossip_enc_begin(&e, gossip_scratch.pkt, cap, n->id, n->cfg.id_len, n->self->inc);
    const uint8_t *cert = NULL;
    size_t cl = 0;
    if (n->crypto) cert = smc_ctx_cert(n->crypto, &cl);
    /* pad to the full packet: the answer may then be as large (no amplification) */
    size_t base = e.len + 8 + n->self->addr.len + (cert ? cl + 3 : 1);
    size_t pad = cap > base + 8 ? cap - base - 8 : 0;
    while (gossip_enc_join(&e, &n->self->addr, cert, cl, pad) != 0 && pad > 0)
        pad = pad > 16 ? pad - 16 : 0;
    gossip_pkt_send(n, to, &e, SM_PKT_MEMBER, SMC_SEAL_CERT);
}

void gossip_send_page(struct sm_node *n, struct reply *rp, uint32_t cursor, struct member *asker)
{
    if (!gossip_reply_open(rp)) return;
    rp->cls = SM_PKT_MEMBER;
    struct gossip_enc *e = &rp->e;
    size_t mark_len = e->len;
    unsigned mark_n = e->n_msgs;
    if (gossip_enc_sync(e, GOSSIP_SYNC_PAGE, 0, n->seed_heard)) return;
    size_t page_pos = mark_len;
    /* what we hold about the asker first, so it can refute at once */
    if (asker && !live_state(asker->state)) (void)gossip_enc_member_state(n, e, asker);
    if (cursor == 0) (void)gossip_enc_member_state(n, e, n->self);
    if (cursor >= n->n_members) cursor = n->n_members ? cursor % (uint32_t)n->n_members : 0;
    uint32_t i = cursor;
    for (; i < n->n_members; i++) {
        struct member *m = n->members[i];
        if (m->self || m == asker) continue;
        if (gossip_enc_member_state(n, e, m) != 0) break;
    }
    uint32_t next = i < n->n_members ? i : 0;
    /* rewrite the page header with the real cursor (same encoded size class
     * is not guaranteed, so rebuild it: header is small, re-encode in place) */
    uint8_t tmp[16];
    struct gossip_enc h = {.buf = tmp, .cap = sizeof(tmp)};
    (void)gossip_enc_sync(&h, GOSSIP_SYNC_PAGE, next, n->seed_heard);
    size_t old_hlen;
    {
        struct gossip_enc h0 = {.buf = tmp + 8, .cap = 8};
        (void)gossip_enc_sync(&h0, GOSSIP_SYNC_PAGE, 0, n->seed_heard);
        old_hlen = h0.len;
    }
    if (h.len != old_hlen) {
        if (h.len > old_hlen && gossip_enc_room(e) < h.len - old_hlen) {
            /* drop the last member to make room */
            e->len = mark_len;
            e->n_msgs = mark_n;
            return;
        }
        memmove(e->buf + page_pos + h.len, e->buf + page_pos + old_hlen,
                e->len - page_pos - old_hlen);
        e->len = e->len + h.len - old_hlen;
    }
    memcpy(e->buf + page_pos, tmp, h.len);
    gossip_reply_flush(rp);
}

int sm_node_join(struct sm_node *n, struct sm_time now, const struct sm_addr *seeds, size_t k)
{
    if (!seeds && k) return SM_EINVAL;
    n->now = now;
    struct sm_addr *s = k ? calloc(k, sizeof(*s)) : NULL;
    if (k && !s) return SM_ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (seeds[i].len > SM_ADDR_MAX) continue;
        if (addr_eq(&seeds[i], &n->self->addr)) continue;
        s[m++] = seeds[i];
    }
    free(n->seeds);
    n->seeds = s;
    n->n_seeds = m;
    /* shift the timers to this clock (the node may have been created at another time) */
    if (n->t_probe < now.mono_ms) {
        n->t_probe += now.mono_ms;
        n->t_gossip += now.mono_ms;
        n->t_ae += now.mono_ms;
        n->t_maint += now.mono_ms;
        n->t_shuffle += now.mono_ms;
        n->grid_phase += now.mono_ms;
    }
    for (size_t i = 0; i < m; i++) gossip_send_join(n, &s[i]);
    n->sync_walk = true;
    n->seed_heard = m == 0;
    n->rejoin_tries = 0;
    n->rejoin_wait = n->cfg.rejoin_interval_ms;
    n->sync_every = 1000;
    n->t_sync = now.mono_ms + n->sync_every + rng_below(n, 500);
    n->t_rejoin = now.mono_ms + n->cfg.rejoin_interval_ms;
    gossip_rumor_queue(n, n->self, GOSSIP_ALIVE, NULL, 0);
    gossip_recompute_next(n);
    return 0;
}

int sm_node_leave(struct sm_node *n, struct sm_time now)
{
    if (n->left) return 0;
    n->now = now;
    struct member *s = n->self;
    s->inc++;
    /* tell the tree peers and a few random members directly */
    struct member *targets[8];
    size_t c = 0;
    for (size_t i = 0; i < n->n_peers && c < 4; i++) targets[c++] = n->peers[i].m;
    for (int i = 0; i < 8 && c < 8; i++) {
        struct member *m = gossip_random_live(n, false);
        if (m) targets[c++] = m;
    }
    for (size_t i = 0; i < c; i++) {
        struct gossip_enc e;
        gossip_pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_member(&e, GOSSIP_LEAVE, s->id, s->id_len, s->inc, NULL, 0) == 0)
            gossip_pkt_send(n, &targets[i]->addr, &e, SM_PKT_MEMBER, 0);
    }
    gossip_set_state(n, s, SM_MEMBER_LEFT);
    n->left = true;
    n->next = UINT64_MAX;
    return 0;
}

/* A membership page (message 0 of @p p) from @p from. We are joined when a
 * seed answered and that seed is itself joined (else we would only be part
 * of its island); when every seed lists the others and none is rooted, an
 * answer counts after a while anyway. */
void gossip_on_seed_page(struct sm_node *n, const struct gossip_packet *p,
                         const struct sm_addr *from, bool env_auth)
{
    if (!(n->crypto ? env_auth : true) || n->seed_heard ||
        !(p->msgs[0].u.join.rooted || n->rejoin_tries >= 15))
        return;
    for (size_t i = 0; i < n->n_seeds && !n->seed_heard; i++)
        if (addr_eq(from, &n->seeds[i])) {
            n->seed_heard = n->sync_walk = true;
            /* those who joined through us while we were not rooted wait
             * for a rooted answer: give it now rather than at their next
             * retry, so rooting runs down a chain of joins at network
             * speed instead of one retry period per hop */
            for (size_t k = 0; k < n->n_early; k++) {
                struct reply er = {
                    .n = n, .to = &n->early[k], .budget = SIZE_MAX, .cls = SM_PKT_MEMBER};
                gossip_send_page(n, &er, 0, NULL);
            }
            n->n_early = 0;
        }
}

/* A join from @p p's sender (@p src, NULL when unknown) at @p from: take it
 * in, answer with the first membership page, and while we are not rooted
 * ourselves remember it (see gossip_on_seed_page). Returns the sender. */
struct member *gossip_on_join(struct sm_node *n, const struct gossip_packet *p, struct member *src,
                              const struct gossip_msg *m, const struct sm_addr *from,
                              struct reply *rp)
{
    if (is_self_id(n, p->sender, p->sender_len)) return src;
    if (!src || p->sender_inc > src->inc) {
        gossip_on_alive(n, p->sender, p->sender_len, p->sender_inc, &m->u.join.addr, NULL,
                        VIA_JOIN);
        src = mfind(n, p->sender, p->sender_len);
    }
    rp->to = from;
    gossip_send_page(n, rp, 0, src);
    if (!n->seed_heard && n->n_early < EARLY_MAX) {
        bool dup = false;
        for (size_t k = 0; k < n->n_early && !dup; k++) dup = addr_eq(&n->early[k], from);
        if (!dup) n->early[n->n_early++] = *from;
    }
    return src;
}

/* A membership page that names a cursor: while walking the peer's list
 * (after a join), ask for the next page. */
void gossip_on_sync_page(struct sm_node *n, const struct gossip_msg *m, const struct sm_addr *from)
{
    if (!m->u.join.cursor || !n->sync_walk) return;
    struct gossip_enc e;
    gossip_pkt_begin(n, &e, SIZE_MAX);
    size_t cap = e.cap;
    /* padding keeps an unauthenticated answer no larger than its
     * request; with the envelope every packet is authenticated */
    size_t pad = !n->crypto && cap > e.len + 24 ? cap - e.len - 24 : 0;
    while (gossip_enc_sync(&e, GOSSIP_SYNC_REQ, m->u.join.cursor, pad) != 0 && pad)
        pad = pad > 16 ? pad - 16 : 0;
    gossip_pkt_send(n, from, &e, SM_PKT_MEMBER, 0);
}

/* Maintenance: alone, or only found by others, we join again. */
void gossip_rejoin_tick(struct sm_node *n, uint64_t t)
{
    /* alone, or only found by others: a node whose join was lost and
     * that others then joined through would otherwise stay an island
     * with them; retry until a seed answers (backing off while we are
     * not alone, in case the seeds are gone for good) */
    bool alone = n->n_alive_other == 0;
    if ((alone || !n->seed_heard) && n->n_seeds && t >= n->t_rejoin) {
        for (size_t i = 0; i < n->n_seeds; i++) gossip_send_join(n, &n->seeds[i]);
        /* not alone: only the answer that roots us is worth a walk */
        n->sync_walk = alone;
        if (alone || ++n->rejoin_tries < 15) {
            n->rejoin_wait = n->cfg.rejoin_interval_ms;
        } else if (n->rejoin_wait < 60000) {
            n->rejoin_wait *= 2;
        }
        n->t_rejoin = t + n->rejoin_wait;
    }
}

/* Maintenance: the membership pull (SYNC_REQ), once per sync period. */
void gossip_sync_tick(struct sm_node *n, uint64_t t)
{
    if (t >= n->t_sync) {
        /* membership pull from a random member: fills the view quickly
         * after a join storm, then keeps partial views fresh */
        struct member *m = gossip_random_live(n, true);
        if (m) {
            /* the first pulls after a join walk the peer's whole list;
             * later ones take one page from a random place: enough to
             * keep views mixing, and a walk of 1,000 members every
             * minute would be most of a quiet node's traffic */
            n->sync_walk = n->sync_every <= SYNC_WALK_MS;
            uint32_t cursor = n->sync_walk ? 0 : (uint32_t)(1 + rng_below(n, n->n_members));
            struct gossip_enc e;
            gossip_pkt_begin(n, &e, SIZE_MAX);
            size_t pad = !n->crypto && e.cap > e.len + 24 ? e.cap - e.len - 24 : 0;
            while (gossip_enc_sync(&e, GOSSIP_SYNC_REQ, cursor, pad) != 0 && pad)
                pad = pad > 16 ? pad - 16 : 0;
            gossip_pkt_send(n, &m->addr, &e, SM_PKT_MEMBER, 0);
        }
        n->t_sync = t + n->sync_every;
        if (n->sync_every < 60000) n->sync_every *= 2;
    }
}
