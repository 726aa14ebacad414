/* send.c: packets out: a packet is begun in the thread's scratch with the node's
 * header, sealed (with our certificate while a peer may not know it) and handed
 * to the send callback; a reply is held to its budget (an unauthenticated
 * sender gets no more bytes back than it sent). */
#include "config.h"

#include <string.h>

#include "gossip/node_int.h"

size_t gossip_payload_cap(const struct sm_node *n, unsigned seal_flags)
{
    size_t cap = n->cfg.mtu;
    if (n->crypto) {
        size_t o = smc_seal_overhead(n->crypto, seal_flags);
        cap = o < cap ? cap - o : 0;
    }
    return cap;
}

static void pkt_begin_buf(struct sm_node *n, struct gossip_enc *e, uint8_t *buf, size_t cap)
{
    /* room for an attached certificate is always kept (see CERT_SENDS) */
    size_t pc = gossip_payload_cap(n, n->crypto ? SMC_SEAL_CERT : 0);
    if (cap > pc) cap = pc;
    (void)gossip_enc_begin(e, buf, cap, n->id, n->cfg.id_len, n->self->inc);
}

void gossip_pkt_begin(struct sm_node *n, struct gossip_enc *e, size_t cap)
{
    pkt_begin_buf(n, e, gossip_scratch.pkt, cap);
}

void gossip_pkt_send(struct sm_node *n, const struct sm_addr *to, struct gossip_enc *e,
                     enum sm_pkt_class cls, unsigned seal_flags)
{
    size_t len = gossip_enc_finish(e);
    const uint8_t *out = e->buf;
    if (n->crypto) {
        size_t olen;
        if (!(seal_flags & SMC_SEAL_CERT)) {
            struct member *m = NULL;
            for (size_t i = 0; i < n->n_members && !m; i++)
                if (addr_eq(&n->members[i]->addr, to)) m = n->members[i];
            if (!m || m->cert_left) {
                seal_flags |= SMC_SEAL_CERT;
                if (m) m->cert_left--;
            }
        }
        if (smc_seal(n->crypto, ++n->env_seq, seal_flags, e->buf, len, gossip_scratch.wire,
                     sizeof(gossip_scratch.wire), &olen) != 0) {
            n->st.encode_overflow++;
            return;
        }
        out = gossip_scratch.wire;
        len = olen;
    }
    n->st.pkts_sent[cls]++;
    n->st.bytes_sent[cls] += len;
    n->busy++;
    n->cfg.cb.send(n->cfg.ud, to, out, len, cls);
    n->busy--;
}

void gossip_reply_flush(struct reply *r)
{
    if (r->open && !pkt_empty(&r->e)) {
        size_t len = r->e.len;
        gossip_pkt_send(r->n, r->to, &r->e, r->cls, 0);
        r->budget = len >= r->budget ? 0 : r->budget - len;
    }
    r->open = false;
}

bool gossip_reply_open(struct reply *r)
{
    if (r->open) return true;
    if (r->budget < 64) return false;
    pkt_begin_buf(r->n, &r->e, gossip_scratch.reply, r->budget);
    r->open = true;
    return true;
}
