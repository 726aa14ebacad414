/* broadcast.c: Plumtree dissemination of records: the peer set (chosen and
 * inbound links, shuffling), the eager push of fresh records in MTU-filled
 * packets with link receipts, IHAVE announcements to lazy links, and GRAFT and
 * PRUNE, which shape the tree. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "gossip/node_int.h"

void gossip_peer_remove(struct sm_node *n, struct member *m)
{
    int32_t i = m->peer;
    if (i < 0) return;
    m->peer = -1;
    m->unlinked = n->now.mono_ms ? n->now.mono_ms : 1;
    n->n_peers--;
    n->st.peers = n->n_peers;
    if ((size_t)i != n->n_peers) {
        n->peers[i] = n->peers[n->n_peers];
        n->pids[i] = n->pids[n->n_peers];
        n->peers[i].m->peer = i;
    }
    /* slot numbers changed: forget who-knows-what bits of the moved slots */
    for (size_t k = 0; k < RECENT_CAP; k++) n->recent[k].knows &= ~((1u << i) | (1u << n->n_peers));
}

static struct peer *peer_add(struct sm_node *n, struct member *m, bool eager, bool chosen)
{
    if (m->peer >= 0) return &n->peers[m->peer];
    if (m->self || !live_state(m->state) || n->n_peers >= MAX_PEERS) return NULL;
    struct peer *p = &n->peers[n->n_peers];
    memset(p, 0, sizeof(*p));
    p->m = m;
    p->addr = m->addr;
    p->eager = eager;
    p->chosen = chosen;
    p->linked_at = n->now.mono_ms;
    m->peer = (int32_t)n->n_peers++;
    n->st.peers = n->n_peers;
    return p;
}

/* Add a peer that contacted us; when our slots are full, tell it to pick
 * someone else (HyParView-style), so links stay symmetric. */
struct peer *gossip_peer_inbound(struct sm_node *n, struct member *m, bool eager)
{
    if (m->peer >= 0) return &n->peers[m->peer];
    struct peer *p = peer_add(n, m, eager, false);
    if (!p && live_state(m->state) && !m->self) {
        struct gossip_enc e;
        gossip_pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_prune(&e, true) == 0) gossip_pkt_send(n, &m->addr, &e, SM_PKT_DATA, 0);
    }
    return p;
}

static size_t chosen_peers(const struct sm_node *n)
{
    size_t c = 0;
    for (size_t i = 0; i < n->n_peers; i++) c += n->peers[i].chosen;
    return c;
}

/* A link we chose but never heard on: the link request (or its answer) may
 * have been lost, leaving a link only we know about, over which nothing ever
 * reaches us. Ask again every 500 ms until the peer answers. */
void gossip_links_check(struct sm_node *n)
{
    for (size_t i = 0; i < n->n_peers; i++) {
        struct peer *p = &n->peers[i];
        if (!p->chosen || p->confirmed || n->now.mono_ms - p->linked_at < 500) continue;
        p->linked_at = n->now.mono_ms;
        struct gossip_enc e;
        size_t w;
        gossip_pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, NULL, 0, &w) == 0)
            gossip_pkt_send(n, &p->addr, &e, SM_PKT_DATA, 0);
    }
}

void gossip_peers_fill(struct sm_node *n)
{
    size_t want = n->cfg.active_view, have = chosen_peers(n);
    for (int tries = 0; have < want && tries < 8; tries++) {
        struct member *m = gossip_random_live(n, true);
        if (!m) break;
        if (m->peer >= 0) {
            n->peers[m->peer].chosen = true;
        } else if (!peer_add(n, m, true, true)) {
            break;
        } else {
            /* an empty graft makes the link symmetric at once: the peer adds us */
            struct gossip_enc e;
            size_t w;
            gossip_pkt_begin(n, &e, SIZE_MAX);
            if (gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, NULL, 0, &w) == 0)
                gossip_pkt_send(n, &m->addr, &e, SM_PKT_DATA, 0);
        }
        have = chosen_peers(n);
    }
}

/* The missing entry for record @p id; a new one (with @p round and @p
 * deadline) when there is none and room; NULL when the table is full. */
static struct missing *missing_get(struct sm_node *n, uint64_t id, uint8_t round, uint64_t deadline)
{
    for (size_t k = 0; k < n->n_missing; k++)
        if (n->missing[k].id == id) return &n->missing[k];
    if (n->n_missing >= MAX_MISSING) return NULL;
    struct missing *ms = &n->missing[n->n_missing++];
    memset(ms, 0, sizeof(*ms));
    ms->id = id;
    ms->round = round;
    ms->deadline = deadline;
    return ms;
}

void gossip_missing_drop(struct sm_node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_missing; i++)
        if (n->missing[i].id == id) {
            n->missing[i] = n->missing[--n->n_missing];
            return;
        }
}

void gossip_fresh_add(struct sm_node *n, const struct crdt_rec_view *v, uint8_t round,
                      struct member *src)
{
    size_t need = gossip_rec_size(v) + 16;
    /* a burst (a batch of local writes, a repair) goes out in full packets
     * as it comes, rather than being dropped or buffered without bound */
    if (n->n_fresh >= FRESH_MAX) gossip_fresh_flush(n);
    if (n->fresh_cap - n->fresh_len < need) {
        size_t nc = n->fresh_cap ? n->fresh_cap * 2 : 4096;
        while (nc - n->fresh_len < need) nc *= 2;
        uint8_t *b = realloc(n->fresh_buf, nc);
        if (!b) return;
        n->fresh_buf = b;
        n->fresh_cap = nc;
    }
    struct gossip_enc e;
    e.buf = n->fresh_buf + n->fresh_len;
    e.cap = n->fresh_cap - n->fresh_len;
    e.len = 0;
    e.n_msgs = 0;
    e.overflow = false;
    if (gossip_enc_rec(&e, GOSSIP_RK_EAGER, round, v) != 0) {
        n->st.encode_overflow++;
        return;
    }
    n->fresh[n->n_fresh].off = n->fresh_len;
    n->fresh[n->n_fresh].len = e.len;
    n->fresh[n->n_fresh].id = crdt_rec_digest(v);
    n->fresh[n->n_fresh].src = src;
    n->n_fresh++;
    n->fresh_len += e.len;
}

void gossip_lazy_add(struct sm_node *n, uint64_t id, uint8_t round)
{
    /* announcements go to lazy links only: none, nothing to remember (with
     * flooding every link is eager) */
    bool lazy_link = false;
    for (size_t i = 0; i < n->n_peers && !lazy_link; i++) lazy_link = !n->peers[i].eager;
    if (!lazy_link || n->n_lazy >= LAZY_CAP) return;
    if (!n->n_lazy && n->t_gossip < n->now.mono_ms)
        n->t_gossip = on_grid(n, n->now.mono_ms + n->cfg.gossip_interval_ms);
    n->lazy[n->n_lazy].id = id;
    n->lazy[n->n_lazy].round = round;
    n->n_lazy++;
}

/* Start a packet of records to @p p: the receipt of the previous one first. */
static void link_begin(struct sm_node *n, struct peer *p, struct gossip_enc *e)
{
    gossip_pkt_begin(n, e, SIZE_MAX);
    if (p->n_tx || p->n_prev) {
        /* every id is receipted twice (a lost receipt is covered by the
         * next one): the last packet's, then the one before */
        uint64_t ids[2 * RCPT_MAX];
        size_t k = 0, w = 0;
        struct peer_ids *pi = &n->pids[p - n->peers];
        for (unsigned i = 0; i < p->n_tx; i++) ids[k++] = pi->tx[i];
        for (unsigned i = 0; i < p->n_prev; i++) ids[k++] = pi->prev[i];
        (void)gossip_enc_ids(e, GOSSIP_IHAVE, GOSSIP_ROUND_RECEIPT, 0, ids, k, &w);
        memcpy(pi->prev, pi->tx, p->n_tx * sizeof(pi->tx[0]));
        p->n_prev = p->n_tx;
        p->n_tx = 0;
    }
}

static void link_send(struct sm_node *n, struct peer *p, struct gossip_enc *e)
{
    p->tx_at = n->now.mono_ms;
    gossip_pkt_send(n, &p->addr, e, SM_PKT_DATA, 0);
}

/* Push every fresh record to the eager peers (but its source), in packets
 * filled up to the MTU. */
void gossip_fresh_flush(struct sm_node *n)
{
    if (!n->n_fresh) return;
    for (size_t pi = 0; pi < n->n_peers; pi++) {
        struct peer *p = &n->peers[pi];
        if (!p->eager) continue;
        struct gossip_enc e;
        bool open = false;
        for (size_t i = 0; i < n->n_fresh; i++) {
            struct fresh *f = &n->fresh[i];
            if (f->src == p->m) continue;
            if (!open) link_begin(n, p, &e), open = true;
            if (f->len > gossip_enc_room(&e) || e.n_msgs >= GOSSIP_MAX_MSGS) {
                link_send(n, p, &e);
                link_begin(n, p, &e);
                if (f->len > gossip_enc_room(&e)) {
                    n->st.encode_overflow++;
                    continue;
                }
            }
            memcpy(e.buf + e.len, n->fresh_buf + f->off, f->len);
            e.len += f->len;
            e.n_msgs++;
            if (p->n_tx < RCPT_MAX) n->pids[pi].tx[p->n_tx++] = f->id;
        }
        if (open && !pkt_empty(&e)) link_send(n, p, &e);
    }
    n->n_fresh = 0;
    n->fresh_len = 0;
}

/* Gossip tick: a link quiet since its last packet of records gets the
 * receipt on its own. */
void gossip_receipts_tick(struct sm_node *n)
{
    for (size_t pi = 0; pi < n->n_peers; pi++) {
        struct peer *p = &n->peers[pi];
        if ((!p->n_tx && !p->n_prev) || n->now.mono_ms - p->tx_at < n->cfg.gossip_interval_ms)
            continue;
        p->tx_at = n->now.mono_ms; /* the second receipt one tick later */
        struct gossip_enc e;
        link_begin(n, p, &e);
        gossip_pkt_send(n, &p->addr, &e, SM_PKT_DATA, 0);
    }
}

bool gossip_receipts_pending(const struct sm_node *n)
{
    for (size_t pi = 0; pi < n->n_peers; pi++)
        if (n->peers[pi].n_tx || n->peers[pi].n_prev) return true;
    return false;
}

/* A receipt from @p src: what it sent us in its previous packet. Whatever of
 * it did not arrive (and did not reach us another way) is grafted now. */
void gossip_on_receipt(struct sm_node *n, const struct gossip_msg *msg, struct member *src)
{
    if (!src || src->peer < 0) return;
    struct peer *p = &n->peers[src->peer];
    for (size_t i = 0; i < msg->u.ids.n_ids; i++) {
        uint64_t id = gossip_id_at(msg->u.ids.ids, i);
        bool got = false;
        for (unsigned k = 0; k < p->n_rx && !got; k++) got = n->pids[src->peer].rx[k] == id;
        if (got || recent_find(n, id)) continue;
        struct missing *ms = missing_get(n, id, 1, 0);
        if (!ms) continue;
        /* this peer had it: ask it first, now */
        ms->deadline = n->now.mono_ms;
        bool dup = false;
        for (unsigned k = 0; k < ms->n_ann; k++) dup |= ms->ann[k] == src;
        if (!dup) {
            if (ms->n_ann < MAX_ANNOUNCE) ms->n_ann++;
            memmove(ms->ann + 1, ms->ann, (ms->n_ann - 1) * sizeof(ms->ann[0]));
            ms->ann[0] = src;
            ms->next = 0;
        }
        n->st.receipt_misses++;
    }
    p->n_rx = 0;
}

/* Find the stored record of leaf @p leaf whose digest is @p id. */
struct leaf_find {
    uint64_t id;
    struct crdt_rec_view v;
    bool found;
};

static int leaf_find_fn(const struct crdt_rec_view *v, void *arg)
{
    struct leaf_find *f = arg;
    if (crdt_rec_digest(v) == f->id) {
        f->v = *v;
        f->found = true;
        return 1;
    }
    return 0;
}

void gossip_send_ihave_tick(struct sm_node *n)
{
    if (!n->n_lazy) return;
    uint64_t ids[LAZY_CAP];
    for (size_t pi = 0; pi < n->n_peers; pi++) {
        struct peer *p = &n->peers[pi];
        if (p->eager) continue;
        size_t k = 0;
        uint8_t round = 0;
        for (size_t i = 0; i < n->n_lazy; i++) {
            struct recent *r = recent_find(n, n->lazy[i].id);
            if (r && (r->knows & (1u << pi))) continue;
            ids[k++] = n->lazy[i].id;
            round = n->lazy[i].round;
        }
        size_t off = 0;
        while (off < k) {
            struct gossip_enc e;
            size_t w = 0;
            gossip_pkt_begin(n, &e, SIZE_MAX);
            if (gossip_enc_ids(&e, GOSSIP_IHAVE, round, 0, ids + off, k - off, &w) != 0 || !w)
                break;
            gossip_pkt_send(n, &p->addr, &e, SM_PKT_DATA, 0);
            n->st.ihave_ids += w;
            off += w;
        }
    }
    n->n_lazy = 0;
}

/* An eager push from @p src (message @p i of @p p): a push from a non-peer
 * re-creates the link (its graft was lost), unless we just dropped it
 * ourselves and the push crossed our prune: re-adding then would leave a
 * link only we know about, and such one-sided links pile up. The record's id
 * goes into the next receipt we expect from the link. */
void gossip_on_push(struct sm_node *n, const struct gossip_packet *p, size_t i, struct member *src)
{
    const struct gossip_msg *m = &p->msgs[i];
    if (src->peer < 0) {
        if (!src->unlinked || n->now.mono_ms - src->unlinked > 2000) {
            gossip_peer_inbound(n, src, true);
        } else if (i == 0 || p->msgs[0].type == GOSSIP_IHAVE) {
            /* it still pushes to us: our prune was lost; repeat it
             * (once per packet), or it would keep a link we do not
             * have and wait on it for records that never come */
            struct gossip_enc pe;
            gossip_pkt_begin(n, &pe, SIZE_MAX);
            if (gossip_enc_prune(&pe, true) == 0)
                gossip_pkt_send(n, &src->addr, &pe, SM_PKT_DATA, 0);
        }
    }
    if (src->peer >= 0) {
        struct peer *pp = &n->peers[src->peer];
        if (pp->n_rx < RCPT_MAX)
            n->pids[pp - n->peers].rx[pp->n_rx++] = crdt_rec_digest(&m->u.rec.v);
    }
}

void gossip_on_ihave(struct sm_node *n, const struct gossip_msg *msg, struct member *src)
{
    if (!src) return;
    if (src->peer < 0) gossip_peer_inbound(n, src, false);
    for (size_t i = 0; i < msg->u.ids.n_ids; i++) {
        uint64_t id = gossip_id_at(msg->u.ids.ids, i);
        struct recent *r = recent_find(n, id);
        if (r) {
            if (src->peer >= 0) r->knows |= 1u << src->peer;
            continue;
        }
        struct missing *ms =
            missing_get(n, id, msg->u.ids.round, n->now.mono_ms + n->cfg.graft_timeout_ms);
        if (!ms) continue;
        bool dup = false;
        for (unsigned k = 0; k < ms->n_ann; k++) dup |= ms->ann[k] == src;
        if (!dup && ms->n_ann < MAX_ANNOUNCE) ms->ann[ms->n_ann++] = src;
    }
}

void gossip_missing_tick(struct sm_node *n)
{
    uint64_t now = n->now.mono_ms;
    for (size_t i = 0; i < n->n_missing;) {
        struct missing *ms = &n->missing[i];
        if (ms->deadline > now) {
            i++;
            continue;
        }
        if (ms->next >= ms->n_ann) {
            /* every announcer asked: on a lossy path the graft or its answer
             * may have been lost, so go round again a few times before
             * leaving the record to anti-entropy */
            if (++ms->tries >= GRAFT_TRIES || !ms->n_ann) {
                n->missing[i] = n->missing[--n->n_missing];
                continue;
            }
            ms->next = 0;
        }
        struct member *a = ms->ann[ms->next++];
        if (live_state(a->state)) {
            struct peer *p = a->peer >= 0 ? &n->peers[a->peer] : peer_add(n, a, true, false);
            if (p) p->eager = true;
            struct gossip_enc e;
            gossip_pkt_begin(n, &e, SIZE_MAX);
            size_t w;
            if (gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, &ms->id, 1, &w) == 0) {
                gossip_pkt_send(n, &a->addr, &e, SM_PKT_DATA, 0);
                n->st.grafts++;
            }
        }
        ms->deadline = now + 2 * (uint64_t)n->cfg.graft_timeout_ms;
        i++;
    }
}

void gossip_on_graft(struct sm_node *n, const struct gossip_msg *msg, struct member *src,
                     const struct sm_addr *from)
{
    if (src) {
        struct peer *p = gossip_peer_inbound(n, src, true);
        if (p) p->eager = true;
        if (p && !msg->u.ids.n_ids) {
            /* a link request: acknowledge it (an empty receipt), so the
             * requester knows the link exists on both sides */
            struct gossip_enc a;
            size_t w;
            gossip_pkt_begin(n, &a, SIZE_MAX);
            if (gossip_enc_ids(&a, GOSSIP_IHAVE, GOSSIP_ROUND_RECEIPT, 0, NULL, 0, &w) == 0)
                gossip_pkt_send(n, from, &a, SM_PKT_DATA, 0);
            return;
        }
    }
    struct gossip_enc e;
    gossip_pkt_begin(n, &e, SIZE_MAX);
    for (size_t i = 0; i < msg->u.ids.n_ids; i++) {
        uint64_t id = gossip_id_at(msg->u.ids.ids, i);
        struct recent *r = recent_find(n, id);
        if (!r) continue;
        struct leaf_find f = {.id = id};
        crdt_replica_foreach_leaf(n->rep, r->leaf, leaf_find_fn, &f);
        if (!f.found) continue;
        if (gossip_enc_rec(&e, GOSSIP_RK_GRAFT, r->round, &f.v) != 0) {
            if (!pkt_empty(&e)) gossip_pkt_send(n, from, &e, SM_PKT_DATA, 0);
            gossip_pkt_begin(n, &e, SIZE_MAX);
            if (gossip_enc_rec(&e, GOSSIP_RK_GRAFT, r->round, &f.v) != 0) n->st.encode_overflow++;
        }
    }
    if (!pkt_empty(&e)) gossip_pkt_send(n, from, &e, SM_PKT_DATA, 0);
}

void gossip_on_prune(struct sm_node *n, const struct gossip_msg *msg, struct member *src)
{
    if (!src || src->peer < 0) return;
    if (msg->u.ids.disconnect)
        gossip_peer_remove(n, src);
    else
        n->peers[src->peer].eager = false;
}

void gossip_shuffle(struct sm_node *n)
{
    if (n->n_alive_other <= n->cfg.active_view) return;
    size_t idx[MAX_PEERS], c = 0;
    for (size_t i = 0; i < n->n_peers; i++)
        if (n->peers[i].chosen) idx[c++] = i;
    if (!c) return;
    struct member *old = n->peers[idx[rng_below(n, c)]].m;
    struct member *nw = gossip_random_live(n, true);
    if (!nw || nw->peer >= 0) return;
    struct gossip_enc e;
    gossip_pkt_begin(n, &e, SIZE_MAX);
    if (gossip_enc_prune(&e, true) == 0) gossip_pkt_send(n, &old->addr, &e, SM_PKT_DATA, 0);
    gossip_peer_remove(n, old);
    if (peer_add(n, nw, true, true)) {
        size_t w;
        gossip_pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, NULL, 0, &w) == 0)
            gossip_pkt_send(n, &nw->addr, &e, SM_PKT_DATA, 0);
    }
}
