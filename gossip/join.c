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
