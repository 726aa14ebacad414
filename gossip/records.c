/* records.c: records arriving and leaving: a received record is checked,
 * verified (or held until its origin's certificate arrives, which whois asks
 * for) and merged into the replica, then queued for forwarding; local writes
 * are signed, merged and published the same way. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "gossip/node_int.h"

static struct recent *recent_add(struct sm_node *n, uint64_t id, unsigned leaf, uint8_t round)
{
    struct recent *r = &n->recent[n->recent_pos];
    n->recent_pos = (n->recent_pos + 1) % RECENT_CAP;
    r->id = id;
    r->leaf = (uint16_t)leaf;
    r->round = round;
    r->knows = 0;
    r->used = true;
    return r;
}

/* A record we hold already (or newer): note that @p src holds it too, and
 * prune the link when this is a second eager copy. */
static void on_duplicate(struct sm_node *n, struct recent *dup, uint64_t id, uint8_t kind,
                         struct member *src)
{
    n->st.records_duplicate++;
    struct recent *r = dup ? dup : recent_find(n, id);
    if (r && src && src->peer >= 0) r->knows |= 1u << src->peer;
    if (n->cfg.prune && kind == GOSSIP_RK_EAGER && src && src->peer >= 0 &&
        n->peers[src->peer].eager) {
        /* a second eager copy: this link is redundant in the tree */
        n->peers[src->peer].eager = false;
        struct gossip_enc e;
        gossip_pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_prune(&e, false) == 0) {
            gossip_pkt_send(n, &src->addr, &e, SM_PKT_DATA, 0);
            n->st.prunes++;
        }
    }
}

/* A copy of the record @p ov that a merge is about to replace, for the
 * on_record callback (the view dies in the merge): in the thread's scratch
 * when it fits, else malloc'ed. Returns the buffer (NULL: out of memory, no
 * copy), *@p oldv pointing into it. */
static uint8_t *keep_old(const struct crdt_rec_view *ov, struct crdt_rec_view *oldv)
{
    size_t need = ov->key_len + ov->value_len + ov->origin_len + CRDT_SIG_LEN;
    uint8_t *oldbuf = need <= sizeof(gossip_scratch.old) ? gossip_scratch.old : malloc(need);
    if (!oldbuf) return NULL;
    *oldv = *ov;
    uint8_t *p = oldbuf;
    memcpy(p, ov->key, ov->key_len);
    oldv->key = (const char *)p;
    p += ov->key_len;
    if (ov->value) {
        memcpy(p, ov->value, ov->value_len);
        oldv->value = p;
        p += ov->value_len;
    }
    memcpy(p, ov->origin, ov->origin_len);
    oldv->origin = (const char *)p;
    p += ov->origin_len;
    if (ov->sig) {
        memcpy(p, ov->sig, CRDT_SIG_LEN);
        oldv->sig = p;
    }
    return oldbuf;
}

/* A new record came from @p src: the peer knows it, and the link it first
 * arrived on belongs to the tree. */
static void tree_link(struct sm_node *n, struct recent *r, uint8_t kind, struct member *src)
{
    if (!src || src->peer < 0) return;
    r->knows |= 1u << src->peer;
    /* Plumtree: the link a message first arrives on belongs to the tree.
     * If we had pruned it, our prune may have crossed this message: tell
     * the peer to keep pushing to us (an empty graft). */
    struct peer *pp = &n->peers[src->peer];
    if (kind != GOSSIP_RK_AE && !pp->eager) {
        pp->eager = true;
        struct gossip_enc e;
        size_t w;
        gossip_pkt_begin(n, &e, SIZE_MAX);
        if (gossip_enc_ids(&e, GOSSIP_GRAFT, 0, 0, NULL, 0, &w) == 0)
            gossip_pkt_send(n, &src->addr, &e, SM_PKT_DATA, 0);
    }
}

/* The on_record callback, with the record as the replica now holds it. */
static void notify_record(struct sm_node *n, const struct crdt_rec_view *v,
                          const struct crdt_rec_view *old)
{
    const struct crdt_rec *now = crdt_replica_find(n->rep, v->key, v->key_len);
    struct crdt_rec_view nv;
    if (now) {
        crdt_rec_view(n->rep, now, &nv);
        n->busy++;
        n->cfg.cb.on_record(n->cfg.ud, &nv, old);
        n->busy--;
    }
}

/* Merge a verified remote (or pending-released) record. Returns 1 when new. */
static int merge_in(struct sm_node *n, const struct crdt_rec_view *v, uint8_t kind, uint8_t round,
                    struct member *src)
{
    uint64_t id = crdt_rec_digest(v);
    /* a flood's duplicate copies follow the first within milliseconds: the
     * write is among the newest merged, known without a replica lookup (the
     * same digest is the same write, so the replica holds it or newer) */
    struct recent *dup = recent_find_in(n, id, RECENT_QUICK);
    const struct crdt_rec *cur = dup ? NULL : crdt_replica_find(n->rep, v->key, v->key_len);
    struct crdt_rec_view ov;
    uint8_t *oldbuf = NULL;
    struct crdt_rec_view oldv;
    if (cur) crdt_rec_view(n->rep, cur, &ov);
    if (dup || (cur && crdt_order_cmp(v, &ov) <= 0)) {
        on_duplicate(n, dup, id, kind, src);
        return 0;
    }
    if (cur && n->cfg.cb.on_record) oldbuf = keep_old(&ov, &oldv);
    int rc = crdt_replica_merge(n->rep, v);
    if (rc != 1) {
        if (oldbuf && oldbuf != gossip_scratch.old) free(oldbuf);
        if (rc == 0) n->st.records_duplicate++;
        return 0;
    }
    n->st.records_merged++;
    n->last_change = n->now.mono_ms;
    unsigned leaf = (unsigned)(crdt_key_hash(v->key, v->key_len) & (CRDT_DIGEST_LEAVES - 1));
    tree_link(n, recent_add(n, id, leaf, round), kind, src);
    gossip_missing_drop(n, id);
    uint8_t nround = round < 255 ? round + 1 : 255;
    gossip_fresh_add(n, v, nround, src);
    gossip_lazy_add(n, id, nround);
    if (n->cfg.cb.on_record) notify_record(n, v, oldbuf ? &oldv : NULL);
    if (oldbuf && oldbuf != gossip_scratch.old) free(oldbuf);
    return 1;
}

static bool rec_fields_ok(const struct sm_node *n, const struct crdt_rec_view *v)
{
    if (v->value_len > n->cfg.max_value_len) return false;
    if (!(v->flags & CRDT_F_TOMBSTONE) && !v->value) return false;
    return true;
}

struct pend_arg {
    struct sm_node *n;
};

static void pending_cb(const struct crdt_rec_view *r, void *arg)
{
    struct pend_arg *a = arg;
    merge_in(a->n, r, GOSSIP_RK_AE, 0, NULL);
}

void gossip_release_pending(struct sm_node *n, const char *id, size_t len)
{
    if (!n->crypto) return;
    struct pend_arg a = {n};
    (void)smc_pending_take_for(n->crypto, n->now.wall_ms, id, len, pending_cb, &a);
}

/* A record whose origin we do not know yet (no certificate: it joined and we
 * have not heard): ask the peer that sent it, which verified it and so holds
 * the certificate, instead of waiting for membership gossip to bring it. At
 * most one question per origin every 500 ms. */
static void whois(struct sm_node *n, const char *id, size_t len, struct member *src)
{
    uint64_t h = id_hash(id, len), now = n->now.mono_ms;
    struct whois_ask *slot = &n->asked[0];
    for (size_t i = 0; i < WHOIS_RING; i++) {
        struct whois_ask *a = &n->asked[i];
        if (a->hash == h) {
            if (now - a->at < 500) return;
            slot = a;
            break;
        }
        if (a->at < slot->at) slot = a;
    }
    slot->hash = h;
    slot->at = now ? now : 1;
    struct gossip_enc e;
    gossip_pkt_begin(n, &e, SIZE_MAX);
    if (gossip_enc_whois(&e, id, len) == 0) {
        gossip_pkt_send(n, &src->addr, &e, SM_PKT_MEMBER, 0);
        n->st.whois_sent++;
    }
}

void gossip_on_record(struct sm_node *n, const struct gossip_msg *msg, struct member *src)
{
    const struct crdt_rec_view *v = &msg->u.rec.v;
    if (!rec_fields_ok(n, v)) {
        n->st.rejected[SM_REJ_RECORD]++;
        return;
    }
    if (n->crypto) {
        enum smc_reason why = SMC_R_OK;
        int rc = smc_rec_verify(n->crypto, n->now.wall_ms, v, &why);
        if (rc != 0) {
            if (why == SMC_R_UNKNOWN_ORIGIN) {
                if (smc_pending_add(n->crypto, n->now.wall_ms, v) == 0) n->st.records_pending++;
                if (src) whois(n, v->origin, v->origin_len, src);
            } else {
                n->st.rejected[SM_REJ_RECORD_SIG]++;
            }
            return;
        }
    }
    merge_in(n, v, msg->u.rec.kind, msg->u.rec.round, src);
}

void gossip_on_whois(struct sm_node *n, const struct gossip_msg *msg, struct reply *rp)
{
    const char *id = msg->u.member.id;
    size_t len = msg->u.member.id_len;
    struct member *m = is_self_id(n, id, len) ? n->self : mfind(n, id, len);
    if (!m || !live_state(m->state) || !gossip_reply_open(rp)) return;
    rp->cls = SM_PKT_MEMBER;
    (void)gossip_enc_member_state(n, &rp->e, m);
}

int sm_node_publish(struct sm_node *n, struct sm_time now, const struct crdt_rec_view *rec)
{
    if (!rec || !rec->key || !rec->key_len || rec->key_len > GOSSIP_MAX_KEY) return SM_EINVAL;
    if (n->left) return 0;
    n->now = now;
    uint64_t id = crdt_rec_digest(rec);
    unsigned leaf = (unsigned)(crdt_key_hash(rec->key, rec->key_len) & (CRDT_DIGEST_LEAVES - 1));
    recent_add(n, id, leaf, 0);
    gossip_fresh_add(n, rec, 1, NULL);
    gossip_lazy_add(n, id, 1);
    n->st.records_published++;
    n->last_change = now.mono_ms;
    if (!n->busy && !n->hold) {
        gossip_fresh_flush(n);
        gossip_recompute_next(n);
    }
    return 0;
}

void sm_node_hold(struct sm_node *n)
{
    n->hold = true;
}

void sm_node_flush(struct sm_node *n, struct sm_time now)
{
    n->hold = false;
    if (n->busy || n->left) return;
    n->now = now;
    gossip_fresh_flush(n);
    gossip_recompute_next(n);
}

int sm_node_write(struct sm_node *n, struct sm_time now, const struct crdt_rec_view *rec)
{
    if (!rec || !rec->key || !rec->key_len || rec->key_len > GOSSIP_MAX_KEY) return SM_EINVAL;
    struct crdt_rec_view v = *rec;
    uint8_t sig[CRDT_SIG_LEN];
    v.sig = NULL;
    v.flags &= (uint8_t)~CRDT_F_SIGNED;
    if (n->crypto && v.origin_len == n->cfg.id_len && memcmp(v.origin, n->id, v.origin_len) == 0) {
        int rc = smc_rec_sign(n->crypto, &v, sig);
        if (rc != 0) return rc;
        v.sig = sig;
        v.flags |= CRDT_F_SIGNED;
    }
    int rc = crdt_replica_merge(n->rep, &v);
    if (rc < 0) return SM_ENOMEM;
    if (rc == 0) return 0;
    rc = sm_node_publish(n, now, &v);
    return rc < 0 ? rc : 1;
}
