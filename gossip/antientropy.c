/* antientropy.c: hierarchical-digest anti-entropy: root and 32 group digests,
 * then the leaves of differing groups, then record ids per differing leaf, then
 * the records each side lacks; the root also rides on pings (on_root). */
#include "config.h"

#include <string.h>

#include "gossip/node_int.h"

static void group_digests(const struct sm_node *n, uint64_t g[GOSSIP_GROUPS])
{
    for (unsigned i = 0; i < GOSSIP_GROUPS; i++) {
        uint64_t x = 0;
        for (unsigned k = 0; k < GOSSIP_GROUP_LEAVES; k++)
            x ^= crdt_replica_leaf(n->rep, i * GOSSIP_GROUP_LEAVES + k);
        g[i] = x;
    }
}

void gossip_ae_start(struct sm_node *n)
{
    struct member *m = gossip_random_live(n, true);
    if (!m) return;
    uint64_t g[GOSSIP_GROUPS];
    group_digests(n, g);
    struct gossip_enc e;
    gossip_pkt_begin(n, &e, SIZE_MAX);
    size_t w;
    if (gossip_enc_ids(&e, GOSSIP_DIGEST, 0, crdt_replica_root(n->rep), g, GOSSIP_GROUPS, &w))
        return;
    n->st.ae_rounds++;
    gossip_pkt_send(n, &m->addr, &e, SM_PKT_AE, 0);
}

static void on_digest(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    if (msg->u.ids.root == crdt_replica_root(n->rep)) {
        n->st.ae_in_sync++;
        return;
    }
    uint64_t g[GOSSIP_GROUPS], leaves[GOSSIP_GROUP_LEAVES];
    group_digests(n, g);
    for (unsigned i = 0; i < GOSSIP_GROUPS; i++) {
        if (g[i] == gossip_id_at(msg->u.ids.ids, i)) continue;
        for (unsigned k = 0; k < GOSSIP_GROUP_LEAVES; k++)
            leaves[k] = crdt_replica_leaf(n->rep, i * GOSSIP_GROUP_LEAVES + k);
        if (!gossip_reply_open(rp)) return;
        size_t w;
        if (gossip_enc_ids(&rp->e, GOSSIP_DIGEST_LEAVES, i, 0, leaves, GOSSIP_GROUP_LEAVES, &w) ||
            w != GOSSIP_GROUP_LEAVES) {
            gossip_reply_flush(rp);
            if (!gossip_reply_open(rp)) return;
            if (gossip_enc_ids(&rp->e, GOSSIP_DIGEST_LEAVES, i, 0, leaves, GOSSIP_GROUP_LEAVES, &w))
                return;
        }
    }
}

/* A ping carried the prober's root digest. Idle replicas are compared this
 * way for free; when they differ and we have been quiet for a while (so the
 * difference is not just records in flight), our digest rides on the ack and
 * the prober starts the repair. The periodic round (ae_start) only runs while
 * the replica is changing. */
static void on_root(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    uint64_t now = n->now.mono_ms;
    if (msg->u.ids.root == crdt_replica_root(n->rep)) {
        n->st.ae_in_sync++;
        return;
    }
    if (now < n->t_ae_ack || now - n->last_change < n->cfg.ae_interval_ms) return;
    if (!rp->open || rp->cls != SM_PKT_PROBE) return; /* only on our ack */
    uint64_t g[GOSSIP_GROUPS];
    group_digests(n, g);
    size_t w;
    /* no room (an unauthenticated ping's budget): the message rolls back */
    if (gossip_enc_ids(&rp->e, GOSSIP_DIGEST, 0, crdt_replica_root(n->rep), g, GOSSIP_GROUPS, &w))
        return;
    n->t_ae_ack = now + n->cfg.ae_interval_ms;
    n->st.ae_rounds++;
}

struct ids_coll {
    uint64_t *ids;
    size_t n, cap;
};

static int coll_fn(const struct crdt_rec_view *v, void *arg)
{
    struct ids_coll *c = arg;
    if (c->n < c->cap) c->ids[c->n++] = crdt_rec_digest(v);
    return 0;
}

static void on_digest_leaves(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    uint64_t buf[256];
    unsigned g = msg->u.ids.index;
    for (unsigned k = 0; k < GOSSIP_GROUP_LEAVES; k++) {
        unsigned leaf = g * GOSSIP_GROUP_LEAVES + k;
        if (crdt_replica_leaf(n->rep, leaf) == gossip_id_at(msg->u.ids.ids, k)) continue;
        struct ids_coll c = {buf, 0, 256};
        crdt_replica_foreach_leaf(n->rep, leaf, coll_fn, &c);
        size_t off = 0;
        do {
            if (!gossip_reply_open(rp)) return;
            size_t w = 0;
            if (gossip_enc_ids(&rp->e, GOSSIP_LEAF_IDS, leaf, 0, buf + off, c.n - off, &w)) {
                gossip_reply_flush(rp);
                if (!gossip_reply_open(rp)) return;
                if (gossip_enc_ids(&rp->e, GOSSIP_LEAF_IDS, leaf, 0, buf + off, c.n - off, &w))
                    return;
            }
            off += w;
        } while (off < c.n);
    }
}

static bool rec_live_to_send(const struct sm_node *n, const struct crdt_rec_view *v)
{
    /* an expired record is not gossiped (its expiry tombstone is, after the sweep) */
    return !(v->expires_at && v->expires_at <= n->now.wall_ms && !(v->flags & CRDT_F_TOMBSTONE));
}

struct leaf_send {
    struct sm_node *n;
    struct reply *rp;
    const uint8_t *ids; /* the peer's ids (has) or the wanted ids */
    size_t n_ids;
    bool send_if_absent; /* true: send ours not in ids; false: send ours in ids */
    uint64_t *mine;
    size_t n_mine, cap_mine;
    bool stop;
};

static bool ids_contain(const uint8_t *ids, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (gossip_id_at(ids, i) == id) return true;
    return false;
}

static int leaf_send_fn(const struct crdt_rec_view *v, void *arg)
{
    struct leaf_send *s = arg;
    uint64_t id = crdt_rec_digest(v);
    if (s->mine && s->n_mine < s->cap_mine) s->mine[s->n_mine++] = id;
    if (s->stop) return 0;
    bool in = ids_contain(s->ids, s->n_ids, id);
    if (in == s->send_if_absent) return 0;
    if (!rec_live_to_send(s->n, v)) return 0;
    struct reply *rp = s->rp;
    if (!gossip_reply_open(rp)) {
        s->stop = true;
        return 0;
    }
    if (gossip_enc_rec(&rp->e, GOSSIP_RK_AE, 0, v) != 0) {
        gossip_reply_flush(rp);
        if (!gossip_reply_open(rp) || gossip_enc_rec(&rp->e, GOSSIP_RK_AE, 0, v) != 0) {
            s->stop = true;
            return 0;
        }
    }
    s->n->st.ae_records_sent++;
    return 0;
}

static void on_leaf_ids(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    uint64_t mine[256], want[256];
    unsigned leaf = msg->u.ids.index;
    struct leaf_send s = {n, rp, msg->u.ids.ids, msg->u.ids.n_ids, true, mine, 0, 256, false};
    crdt_replica_foreach_leaf(n->rep, leaf, leaf_send_fn, &s);
    size_t nw = 0;
    for (size_t i = 0; i < msg->u.ids.n_ids && nw < 256; i++) {
        uint64_t id = gossip_id_at(msg->u.ids.ids, i);
        bool have = false;
        for (size_t k = 0; k < s.n_mine && !have; k++) have = mine[k] == id;
        if (!have) want[nw++] = id;
    }
    size_t off = 0;
    while (off < nw) {
        if (!gossip_reply_open(rp)) return;
        size_t w = 0;
        if (gossip_enc_ids(&rp->e, GOSSIP_WANT, leaf, 0, want + off, nw - off, &w)) {
            gossip_reply_flush(rp);
            continue;
        }
        off += w;
    }
}

static void on_want(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    struct leaf_send s = {n, rp, msg->u.ids.ids, msg->u.ids.n_ids, false, NULL, 0, 0, false};
    crdt_replica_foreach_leaf(n->rep, msg->u.ids.index, leaf_send_fn, &s);
}

/* An anti-entropy message; the answers to a digest exchange go out as
 * anti-entropy traffic (a root on a ping is answered on the ack). */
void gossip_on_ae_msg(struct sm_node *n, const struct gossip_msg *m, struct reply *rp)
{
    switch (m->type) {
    case GOSSIP_DIGEST:
        rp->cls = SM_PKT_AE;
        on_digest(n, m, rp);
        break;
    case GOSSIP_DIGEST_LEAVES:
        rp->cls = SM_PKT_AE;
        on_digest_leaves(n, m, rp);
        break;
    case GOSSIP_LEAF_IDS:
        rp->cls = SM_PKT_AE;
        on_leaf_ids(n, m, rp);
        break;
    case GOSSIP_WANT:
        rp->cls = SM_PKT_AE;
        on_want(n, m, rp);
        break;
    case GOSSIP_IN_SYNC:
        on_root(n, m, rp);
        break;
    default: /* not an anti-entropy message */
        break;
    }
}
