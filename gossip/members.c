/* members.c: the member table (open addressing by id hash, eviction of a random
 * member when the partial view is full), member state changes (SWIM + Lifeguard
 * suspicion with independent accusers), the suspicion and reap timers, and the
 * member accessors of the API. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gossip/node_int.h"

static void member_info(const struct member *m, struct sm_member_info *i)
{
    i->id = m->id;
    i->id_len = m->id_len;
    i->addr = m->addr;
    i->incarnation = m->inc;
    i->state = (enum sm_member_state)m->state;
    i->state_since_ms = m->since;
    i->self = m->self;
}

static void emit(struct sm_node *n, enum sm_member_event ev, const struct member *m)
{
    if (!n->cfg.cb.on_member) return;
    struct sm_member_info i;
    member_info(m, &i);
    n->busy++;
    n->cfg.cb.on_member(n->cfg.ud, ev, &i);
    n->busy--;
}

static void tab_put(struct slot *tab, size_t cap, struct member *m)
{
    size_t i = m->hash & (cap - 1);
    while (tab[i].m) i = (i + 1) & (cap - 1);
    tab[i].hash = m->hash;
    tab[i].m = m;
}

static int tab_grow(struct sm_node *n)
{
    size_t cap = n->tab_cap * 2;
    struct slot *t = calloc(cap, sizeof(*t));
    if (!t) return SM_ENOMEM;
    for (size_t i = 0; i < n->n_members; i++) tab_put(t, cap, n->members[i]);
    free(n->tab);
    n->tab = t;
    n->tab_cap = cap;
    return 0;
}

static void tab_del(struct sm_node *n, struct member *m)
{
    size_t mask = n->tab_cap - 1, i = m->hash & mask;
    while (n->tab[i].m != m) i = (i + 1) & mask;
    /* backward-shift deletion keeps probe chains intact without tombstones */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!n->tab[j].m) break;
        size_t k = n->tab[j].hash & mask;
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            n->tab[i] = n->tab[j];
            i = j;
        }
    }
    n->tab[i].m = NULL;
    n->tab[i].hash = 0;
}

int gossip_vec_push(struct member ***v, size_t *len, size_t *cap, struct member *m)
{
    if (*len == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        struct member **p = realloc(*v, nc * sizeof(*p));
        if (!p) return SM_ENOMEM;
        *v = p;
        *cap = nc;
    }
    (*v)[(*len)++] = m;
    return 0;
}

/* A full table makes room by recycling a random member that nothing depends
 * on (not self, not a tree peer, not being probed): a random partial view. */
static struct member *evict(struct sm_node *n)
{
    for (int tries = 0; tries < 16; tries++) {
        struct member *v = n->members[rng_below(n, n->n_members)];
        if (v->self || v->peer >= 0 || v == n->pr.target) continue;
        if (v->rumor >= 0) gossip_rumor_drop(n, (size_t)v->rumor);
        for (size_t i = 0; i < n->n_missing; i++)
            for (unsigned k = 0; k < n->missing[i].n_ann; k++)
                if (n->missing[i].ann[k] == v) n->missing[i].ann[k] = n->missing[i].ann[0];
        for (size_t i = 0; i < n->n_fresh; i++)
            if (n->fresh[i].src == v) n->fresh[i].src = NULL;
        tab_del(n, v);
        n->st.members[v->state]--;
        if (live_state(v->state)) n->n_alive_other--;
        return v;
    }
    return NULL;
}

struct member *gossip_madd(struct sm_node *n, const char *id, size_t len, uint64_t inc,
                           const struct sm_addr *addr, uint64_t now)
{
    struct member *m;
    bool fresh_slot = true;
    if (n->n_members >= n->cfg.max_members && n->n_members > 0) {
        m = evict(n);
        if (!m) return NULL;
        fresh_slot = false;
        uint32_t idx = m->idx;
        bool in_s = m->in_susp, in_d = m->in_dead;
        uint8_t cap = m->id_cap;
        if (len > cap) {
            /* the newcomer's id is longer: a larger struct in the same places */
            struct member *b = realloc(m, sizeof(*m) + id_room(len));
            if (!b) {
                /* out of memory: the evicted member stays as it was */
                tab_put(n->tab, n->tab_cap, m);
                n->st.members[m->state]++;
                if (live_state(m->state)) n->n_alive_other++;
                return NULL;
            }
            for (size_t i = 0; i < n->probe_n; i++)
                if (n->probe_list[i] == m) n->probe_list[i] = b;
            for (size_t i = 0; i < n->n_susp; i++)
                if (n->susp[i] == m) n->susp[i] = b;
            for (size_t i = 0; i < n->n_dead; i++)
                if (n->dead[i] == m) n->dead[i] = b;
            n->members[idx] = b;
            m = b;
            cap = (uint8_t)id_room(len);
        }
        memset(m, 0, sizeof(*m));
        m->idx = idx;
        m->in_susp = in_s;
        m->in_dead = in_d;
        m->id_cap = cap;
    } else {
        if ((n->n_members + 1) * 2 > n->tab_cap && tab_grow(n)) return NULL;
        m = calloc(1, sizeof(*m) + id_room(len));
        if (!m) return NULL;
        if (gossip_vec_push(&n->members, &n->n_members, &n->cap_members, m)) {
            free(m);
            return NULL;
        }
        m->idx = (uint32_t)(n->n_members - 1);
        m->id_cap = (uint8_t)id_room(len);
    }
    memcpy(m->id, id, len);
    m->id_len = (uint8_t)len;
    m->inc = inc;
    m->addr = *addr;
    m->state = SM_MEMBER_ALIVE;
    m->since = now;
    m->hash = id_hash(id, len);
    m->rumor = -1;
    m->peer = -1;
    m->cert_left = CERT_SENDS;
    tab_put(n->tab, n->tab_cap, m);
    n->st.members[SM_MEMBER_ALIVE]++;
    n->n_alive_other++;
    /* a new member goes to a random place of the remaining probe round */
    if (fresh_slot && gossip_vec_push(&n->probe_list, &n->probe_n, &n->probe_cap, m) == 0) {
        size_t lo = n->probe_pos, span = n->probe_n - lo;
        size_t j = lo + rng_below(n, span);
        struct member *t = n->probe_list[j];
        n->probe_list[j] = m;
        n->probe_list[n->probe_n - 1] = t;
    }
    return m;
}

void gossip_set_state(struct sm_node *n, struct member *m, uint8_t st)
{
    if (m->state == st) return;
    bool was_live = live_state(m->state), is_live = live_state(st);
    n->st.members[m->state]--;
    n->st.members[st]++;
    m->state = st;
    m->since = n->now.mono_ms;
    if (!m->self && was_live != is_live) {
        if (is_live)
            n->n_alive_other++;
        else
            n->n_alive_other--;
    }
    if (st == SM_MEMBER_SUSPECT && !m->in_susp) {
        if (gossip_vec_push(&n->susp, &n->n_susp, &n->cap_susp, m) == 0) m->in_susp = true;
    }
    if ((st == SM_MEMBER_DEAD || st == SM_MEMBER_LEFT) && !m->in_dead) {
        if (gossip_vec_push(&n->dead, &n->n_dead, &n->cap_dead, m) == 0) m->in_dead = true;
    }
    if (!is_live && m->peer >= 0) gossip_peer_remove(n, m);
    if (st != SM_MEMBER_SUSPECT) m->n_acc = 0, m->accused = false, m->verifying = false;
}

struct member *gossip_random_live(struct sm_node *n, bool alive_only)
{
    if (!n->n_alive_other) return NULL;
    for (int tries = 0; tries < 32; tries++) {
        struct member *m = n->members[rng_below(n, n->n_members)];
        if (m->self) continue;
        if (alive_only ? m->state == SM_MEMBER_ALIVE : live_state(m->state)) return m;
    }
    return NULL;
}

static double log10n(const struct sm_node *n)
{
    double l = log10((double)(n->n_members > 1 ? n->n_members : 2));
    return l < 1 ? 1 : l;
}

static void susp_update_deadline(struct sm_node *n, struct member *m)
{
    /* Lifeguard: start at max = max_mult * min, fall towards min as
     * independent accusers confirm: max - (max-min)*log(C+1)/log(K+1). */
    double minv = n->cfg.suspicion_mult * log10n(n) * n->cfg.probe_interval_ms;
    double maxv = minv * n->cfg.suspicion_max_mult;
    double k = n->cfg.indirect_k ? n->cfg.indirect_k : 1;
    double c = m->n_acc > 0 ? m->n_acc - 1 : 0;
    double t = maxv - (maxv - minv) * log(c + 1) / log(k + 1);
    if (t < minv) t = minv;
    m->susp_deadline = m->susp_start + (uint64_t)t;
}

static bool add_accuser(struct member *m, const char *from, size_t fl)
{
    uint32_t h = (uint32_t)id_hash(from, fl);
    for (unsigned i = 0; i < m->n_acc; i++)
        if (m->acc[i] == h) return false;
    if (m->n_acc >= MAX_ACCUSERS) return false;
    m->acc[m->n_acc++] = h;
    return true;
}

static void refute(struct sm_node *n, uint64_t inc)
{
    struct member *s = n->self;
    if (n->left) return;
    if (inc >= s->inc) s->inc = inc + 1;
    n->st.refutations++;
    if (n->lh < n->cfg.max_local_health) n->lh++;
    gossip_rumor_queue(n, s, GOSSIP_ALIVE, NULL, 0);
    gossip_rumor_tree(n, s, NULL);
}

bool gossip_on_alive(struct sm_node *n, const char *id, size_t idl, uint64_t inc,
                     const struct sm_addr *addr, struct member *src, enum alive_via via)
{
    if (is_self_id(n, id, idl)) {
        /* someone claims a newer me (an old life of ours): outrank it */
        if (inc > n->self->inc) refute(n, inc);
        return false;
    }
    struct member *m = mfind(n, id, idl);
    if (!m) {
        if (!addr || !addr->len) return false;
        /* With a full (partial) view, a member we merely hear about replaces
         * a random one only now and then, so views keep mixing without an
         * eviction storm; members talking to us directly always get in. */
        bool full = n->n_members >= n->cfg.max_members;
        if (full && via != VIA_DIRECT && via != VIA_JOIN && rng_below(n, 8) != 0) return false;
        m = gossip_madd(n, id, idl, inc, addr, n->now.mono_ms);
        if (!m) return false;
        /* a join is spread by piggybacking only (a tree broadcast per member
         * would cost O(N) packets per join). Only a join and the rumor it
         * started are news: a member we did not know that probes us, or that
         * a page lists, is usually one our partial view never held, and
         * spreading each of those kept ~17 rumors a second per node going
         * in a 10,000-node mesh long after every join */
        if (!full && (via == VIA_RUMOR || via == VIA_JOIN))
            gossip_rumor_queue(n, m, GOSSIP_ALIVE, NULL, 0);
        emit(n, SM_MEV_JOIN, m);
        return true;
    }
    if (inc <= m->inc) {
        /* same incarnation alive does not override suspect/dead */
        return false;
    }
    uint8_t old = m->state;
    bool moved = addr && addr->len && !addr_eq(addr, &m->addr);
    m->inc = inc;
    if (addr && addr->len) {
        m->addr = *addr;
        if (m->peer >= 0) n->peers[m->peer].addr = *addr;
    }
    gossip_set_state(n, m, SM_MEMBER_ALIVE);
    gossip_rumor_queue(n, m, GOSSIP_ALIVE, NULL, 0);
    if (old != SM_MEMBER_ALIVE)
        emit(n, SM_MEV_ALIVE, m);
    else if (moved)
        emit(n, SM_MEV_UPDATE, m);
    if (old != SM_MEMBER_ALIVE) gossip_peers_fill(n);
    /* a newer incarnation is a refutation: forward it even where the member
     * was still alive, or nodes behind us that heard the suspicion by
     * another path would never hear the refutation in time */
    gossip_rumor_tree(n, m, src);
    return true;
}

void gossip_start_suspect(struct sm_node *n, struct member *m, const char *from, size_t fl,
                          struct member *src)
{
    gossip_set_state(n, m, SM_MEMBER_SUSPECT);
    m->susp_start = n->now.mono_ms;
    m->n_acc = 0;
    m->verifying = false;
    add_accuser(m, from, fl);
    susp_update_deadline(n, m);
    gossip_rumor_queue(n, m, GOSSIP_SUSPECT, from, fl);
    emit(n, SM_MEV_SUSPECT, m);
    /* a suspicion travels by piggybacking only, while refutations and
     * deaths are also pushed over the dissemination links: the refutation
     * overtakes the suspicion it answers, and a false suspicion costs a
     * few bytes on probes instead of a packet on every link of the mesh */
    (void)src;
}

void gossip_on_suspect(struct sm_node *n, const char *id, size_t idl, uint64_t inc,
                       const char *from, size_t fl, struct member *src)
{
    if (is_self_id(n, id, idl)) {
        if (inc >= n->self->inc) refute(n, inc);
        n->accused_now = true; /* (an old incarnation: the sender missed our refutation) */
        return;
    }
    struct member *m = mfind(n, id, idl);
    if (!m || inc < m->inc) return;
    if (m->state == SM_MEMBER_DEAD || m->state == SM_MEMBER_LEFT) {
        if (inc <= m->inc) return;
    }
    if (m->state == SM_MEMBER_SUSPECT && inc == m->inc) {
        /* an independent confirmation shortens the timer (Lifeguard); pass
         * it on so every node's timer shrinks together */
        if (add_accuser(m, from, fl)) {
            susp_update_deadline(n, m);
            gossip_rumor_queue(n, m, GOSSIP_SUSPECT, from, fl);
        }
        return;
    }
    if (m->state == SM_MEMBER_ALIVE && inc < m->inc) return;
    m->inc = inc;
    gossip_start_suspect(n, m, from, fl, src);
}

static void declare_dead(struct sm_node *n, struct member *m, uint8_t type, const char *from,
                         size_t fl, struct member *src)
{
    gossip_set_state(n, m, type == GOSSIP_LEAVE ? SM_MEMBER_LEFT : SM_MEMBER_DEAD);
    gossip_rumor_queue(n, m, type, from, fl);
    emit(n, type == GOSSIP_LEAVE ? SM_MEV_LEAVE : SM_MEV_DEAD, m);
    gossip_rumor_tree(n, m, src);
    if (n->pr.active && n->pr.target == m) n->pr.active = false;
    gossip_peers_fill(n);
}

void gossip_on_dead(struct sm_node *n, uint8_t type, const char *id, size_t idl, uint64_t inc,
                    const char *from, size_t fl, struct member *src)
{
    if (is_self_id(n, id, idl)) {
        if (type == GOSSIP_LEAVE && n->left) return;
        if (inc >= n->self->inc) refute(n, inc);
        n->accused_now = true;
        return;
    }
    struct member *m = mfind(n, id, idl);
    if (!m || inc < m->inc) return;
    if (m->state == SM_MEMBER_LEFT) return;
    if (m->state == SM_MEMBER_DEAD && (type != GOSSIP_LEAVE || inc < m->inc)) return;
    m->inc = inc;
    declare_dead(n, m, type, from, fl, src);
}

int gossip_enc_member_state(struct sm_node *n, struct gossip_enc *e, const struct member *m)
{
    if (m->state == SM_MEMBER_ALIVE) {
        const uint8_t *cert = NULL;
        size_t cl = 0;
        if (n->crypto) cert = smc_trust_get_encoded(n->crypto, m->id, m->id_len, &cl);
        return gossip_enc_alive(e, m->id, m->id_len, m->inc, &m->addr, cert, cl);
    }
    uint8_t t = m->state == SM_MEMBER_SUSPECT ? GOSSIP_SUSPECT
                : m->state == SM_MEMBER_DEAD  ? GOSSIP_DEAD
                                              : GOSSIP_LEAVE;
    return gossip_enc_member(e, t, m->id, m->id_len, m->inc, n->id, n->cfg.id_len);
}

void gossip_reap_and_suspicion(struct sm_node *n)
{
    uint64_t now = n->now.mono_ms;
    for (size_t i = 0; i < n->n_susp;) {
        struct member *m = n->susp[i];
        if (m->state != SM_MEMBER_SUSPECT) {
            m->in_susp = false;
            n->susp[i] = n->susp[--n->n_susp];
            continue;
        }
        if (m->susp_deadline <= now && !m->accused && !m->verifying) {
            /* we only heard of this suspicion and may have missed the
             * refutation: look for ourselves first (two direct pings: an
             * ack's header carries the member's current incarnation, which
             * revives it here) before declaring a death */
            m->verifying = true;
            gossip_send_ping(n, m, ++n->seq, false);
            gossip_send_ping(n, m, n->seq, false);
            m->susp_deadline = now + scaled(n, 2 * n->cfg.probe_timeout_ms);
        }
        if (m->susp_deadline <= now) {
            m->in_susp = false;
            n->susp[i] = n->susp[--n->n_susp];
            declare_dead(n, m, GOSSIP_DEAD, n->id, n->cfg.id_len, NULL);
            continue;
        }
        /* our own accusation: keep telling the suspect (every 500 ms) so a
         * lost notice cannot decide its fate on a lossy network */
        if (m->accused) gossip_notice(n, m, &m->addr);
        i++;
    }
}

static void member_free(struct sm_node *n, struct member *m)
{
    if (m->rumor >= 0) gossip_rumor_drop(n, (size_t)m->rumor);
    if (m->peer >= 0) gossip_peer_remove(n, m);
    if (n->pr.target == m) n->pr.active = false, n->pr.target = NULL;
    for (size_t i = 0; i < n->n_missing; i++)
        for (unsigned k = 0; k < n->missing[i].n_ann; k++)
            if (n->missing[i].ann[k] == m) {
                n->missing[i].ann[k] = n->missing[i].ann[--n->missing[i].n_ann];
                if (n->missing[i].next > n->missing[i].n_ann)
                    n->missing[i].next = n->missing[i].n_ann;
                k--;
            }
    for (size_t i = 0; i < n->n_fresh; i++)
        if (n->fresh[i].src == m) n->fresh[i].src = NULL;
    /* probe list: drop it (rare; O(list)) */
    for (size_t i = 0; i < n->probe_n; i++)
        if (n->probe_list[i] == m) {
            memmove(n->probe_list + i, n->probe_list + i + 1,
                    (n->probe_n - i - 1) * sizeof(*n->probe_list));
            n->probe_n--;
            if (n->probe_pos > i) n->probe_pos--;
            break;
        }
    tab_del(n, m);
    uint32_t idx = m->idx;
    n->members[idx] = n->members[--n->n_members];
    n->members[idx]->idx = idx;
    n->st.members[m->state]--;
    if (!m->self && live_state(m->state)) n->n_alive_other--;
    free(m);
}

void gossip_reap_dead(struct sm_node *n)
{
    uint64_t now = n->now.mono_ms;
    for (size_t i = 0; i < n->n_dead;) {
        struct member *m = n->dead[i];
        if (m->state != SM_MEMBER_DEAD && m->state != SM_MEMBER_LEFT) {
            m->in_dead = false;
            n->dead[i] = n->dead[--n->n_dead];
            continue;
        }
        if (now - m->since >= n->cfg.reap_timeout_ms) {
            n->dead[i] = n->dead[--n->n_dead];
            emit(n, SM_MEV_REAP, m);
            member_free(n, m);
            continue;
        }
        i++;
    }
}

size_t sm_node_member_count(const struct sm_node *n, enum sm_member_state state)
{
    return (unsigned)state < SM_MEMBER_STATE__COUNT ? (size_t)n->st.members[state] : 0;
}

int sm_node_foreach_member(const struct sm_node *n,
                           int (*fn)(const struct sm_member_info *m, void *arg), void *arg)
{
    for (size_t i = 0; i < n->n_members; i++) {
        struct sm_member_info info;
        member_info(n->members[i], &info);
        int rc = fn(&info, arg);
        if (rc) return rc;
    }
    return 0;
}

int sm_node_member_get(const struct sm_node *n, const char *id, size_t id_len,
                       struct sm_member_info *out)
{
    const struct member *m = mfind(n, id, id_len);
    if (!m) return SM_ENOTFOUND;
    member_info(m, out);
    return 0;
}

bool sm_node_member_live(const struct sm_node *n, const char *id, size_t id_len)
{
    const struct member *m = mfind(n, id, id_len);
    return m && live_state(m->state);
}
