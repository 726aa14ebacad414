/* rumors.c: membership changes ("rumors"): a bounded queue piggybacked on probe
 * traffic λ·log N times, the push of a refutation or death along the tree, and
 * the direct notice that tells a member what we believe about it. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gossip/node_int.h"

static unsigned rumor_budget(const struct sm_node *n)
{
    double lg = ceil(log10((double)n->n_members + 1.0));
    if (lg < 1) lg = 1;
    return n->cfg.retransmit_mult * (unsigned)lg;
}

void gossip_rumor_queue(struct sm_node *n, struct member *m, uint8_t type, const char *from,
                        size_t from_len)
{
    struct rumor *r;
    n->st.rumors_queued++;
    if (m->rumor < 0 && n->n_rumors >= RUMOR_CAP) {
        /* bounded queue: a join storm must not keep every packet full for
         * minutes; the oldest plain ALIVE goes first (deaths, suspicions and
         * refutations also travel the broadcast tree) */
        size_t victim = SIZE_MAX;
        uint16_t best = UINT16_MAX;
        for (size_t i = 0; i < n->n_rumors; i++) {
            uint16_t score = n->rumors[i].left + (n->rumors[i].type == GOSSIP_ALIVE ? 0 : 256);
            if (score < best) best = score, victim = i;
        }
        if (victim != SIZE_MAX) gossip_rumor_drop(n, victim);
    }
    if (m->rumor >= 0) {
        r = &n->rumors[m->rumor];
    } else {
        if (n->n_rumors == n->cap_rumors) {
            size_t nc = n->cap_rumors ? n->cap_rumors * 2 : 64;
            struct rumor *p = realloc(n->rumors, nc * sizeof(*p));
            if (!p) return;
            n->rumors = p;
            n->cap_rumors = nc;
        }
        m->rumor = (int32_t)n->n_rumors;
        r = &n->rumors[n->n_rumors++];
    }
    r->m = m;
    r->type = type;
    r->inc = m->inc;
    r->left = (uint16_t)rumor_budget(n);
    r->from_len = 0;
    if (from && from_len <= CRDT_MAX_ORIGIN) {
        memcpy(r->from, from, from_len);
        r->from_len = (uint8_t)from_len;
    }
}

void gossip_rumor_drop(struct sm_node *n, size_t i)
{
    n->rumors[i].m->rumor = -1;
    n->n_rumors--;
    if (i != n->n_rumors) {
        n->rumors[i] = n->rumors[n->n_rumors];
        n->rumors[i].m->rumor = (int32_t)i;
    }
}

static int enc_rumor(struct sm_node *n, struct gossip_enc *e, const struct rumor *r)
{
    const struct member *m = r->m;
    if (r->type == GOSSIP_ALIVE) {
        const uint8_t *cert = NULL;
        size_t cl = 0;
        if (n->crypto) cert = smc_trust_get_encoded(n->crypto, m->id, m->id_len, &cl);
        return gossip_enc_alive(e, m->id, m->id_len, r->inc, &m->addr, cert, cl);
    }
    const char *from = r->from_len ? r->from : n->id;
    size_t fl = r->from_len ? r->from_len : n->cfg.id_len;
    return gossip_enc_member(e, r->type, m->id, m->id_len, r->inc, from, fl);
}

/* Fill the rest of a packet with rumors, least-sent first in spirit: we walk
 * the queue round-robin from where the last packet stopped. */
void gossip_piggyback(struct sm_node *n, struct gossip_enc *e)
{
    size_t tried = 0;
    while (n->n_rumors && tried < n->n_rumors && tried < RUMOR_PER_PKT && gossip_enc_room(e) > 16) {
        if (n->rumor_pos >= n->n_rumors) n->rumor_pos = 0;
        struct rumor *r = &n->rumors[n->rumor_pos];
        if (enc_rumor(n, e, r) != 0) break;
        tried++;
        if (--r->left == 0) {
            gossip_rumor_drop(n, n->rumor_pos);
        } else {
            n->rumor_pos++;
        }
    }
}

/* Send the newest state of @p m to every eager tree peer but @p except. */
void gossip_rumor_tree(struct sm_node *n, struct member *m, struct member *except)
{
    if (m->rumor < 0) return;
    for (size_t i = 0; i < n->n_peers; i++) {
        struct peer *p = &n->peers[i];
        if (!p->eager || p->m == except || p->m == m) continue;
        struct gossip_enc e;
        gossip_pkt_begin(n, &e, SIZE_MAX);
        if (enc_rumor(n, &e, &n->rumors[m->rumor]) != 0) continue;
        gossip_pkt_send(n, &p->addr, &e, SM_PKT_MEMBER, 0);
    }
}

/* Tell @p m directly what we believe about it (it should refute). */
void gossip_notice(struct sm_node *n, struct member *m, const struct sm_addr *to)
{
    if (m->last_notice && n->now.mono_ms - m->last_notice < 500) return;
    m->last_notice = n->now.mono_ms ? n->now.mono_ms : 1;
    struct gossip_enc e;
    gossip_pkt_begin(n, &e, SIZE_MAX);
    uint8_t t = m->state == SM_MEMBER_SUSPECT ? GOSSIP_SUSPECT : GOSSIP_DEAD;
    if (gossip_enc_member(&e, t, m->id, m->id_len, m->inc, n->id, n->cfg.id_len) != 0) return;
    gossip_pkt_send(n, to, &e, SM_PKT_MEMBER, 0);
}
