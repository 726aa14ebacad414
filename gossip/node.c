/* node.c: the sans-IO gossip node (stub: full protocol lands next). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "statemesh.h"
#include "gossip/node.h"

struct sm_node {
    struct sm_node_config cfg;
    char id[CRDT_MAX_ORIGIN];
    struct crdt_replica *replica;
    struct sm_node_stats stats;
    uint64_t inc;
};

struct sm_node *sm_node_new(const struct sm_node_config *cfg, struct crdt_replica *replica)
{
    size_t idl = cfg->id_len ? cfg->id_len : (cfg->id ? strlen(cfg->id) : 0);
    if (!cfg->cb.send || !idl || idl > CRDT_MAX_ORIGIN) return NULL;
    struct sm_node *n = calloc(1, sizeof(*n));
    if (!n) return NULL;
    n->cfg = *cfg;
    memcpy(n->id, cfg->id, idl);
    n->cfg.id = n->id;
    n->cfg.id_len = idl;
    n->replica = replica;
    n->inc = cfg->incarnation;
    return n;
}
void sm_node_delete(struct sm_node *node)
{
    free(node);
}
int sm_node_recv(struct sm_node *node, struct sm_time now, const struct sm_addr *from,
                 const uint8_t *buf, size_t len)
{
    (void)node, (void)now, (void)from, (void)buf, (void)len;
    return 0;
}
void sm_node_on_timeout(struct sm_node *node, struct sm_time now)
{
    (void)node, (void)now;
}
uint64_t sm_node_next_timeout(const struct sm_node *node)
{
    (void)node;
    return UINT64_MAX;
}
int sm_node_join(struct sm_node *node, struct sm_time now, const struct sm_addr *seeds, size_t n)
{
    (void)node, (void)now, (void)seeds, (void)n;
    return 0;
}
int sm_node_leave(struct sm_node *node, struct sm_time now)
{
    (void)node, (void)now;
    return 0;
}
int sm_node_publish(struct sm_node *node, struct sm_time now, const struct crdt_rec_view *rec)
{
    (void)node, (void)now, (void)rec;
    return 0;
}
int sm_node_write(struct sm_node *node, struct sm_time now, const struct crdt_rec_view *rec)
{
    (void)node, (void)now, (void)rec;
    return SM_ENOTSUP;
}
size_t sm_node_member_count(const struct sm_node *node, enum sm_member_state state)
{
    (void)node;
    return state == SM_MEMBER_ALIVE ? 1 : 0;
}
int sm_node_foreach_member(const struct sm_node *node,
                           int (*fn)(const struct sm_member_info *m, void *arg), void *arg)
{
    (void)node, (void)fn, (void)arg;
    return 0;
}
int sm_node_member_get(const struct sm_node *node, const char *id, size_t id_len,
                       struct sm_member_info *out)
{
    (void)node, (void)id, (void)id_len, (void)out;
    return SM_ENOTFOUND;
}
bool sm_node_member_live(const struct sm_node *node, const char *id, size_t id_len)
{
    return id_len == node->cfg.id_len && memcmp(id, node->id, id_len) == 0;
}
const char *sm_node_id(const struct sm_node *node, size_t *len)
{
    if (len) *len = node->cfg.id_len;
    return node->id;
}
uint64_t sm_node_incarnation(const struct sm_node *node)
{
    return node->inc;
}
const struct sm_node_stats *sm_node_stats(const struct sm_node *node)
{
    return &node->stats;
}
struct crdt_replica *sm_node_replica(const struct sm_node *node)
{
    return node->replica;
}
const struct sm_node_config *sm_node_config(const struct sm_node *node)
{
    return &node->cfg;
}
const char *sm_member_event_name(enum sm_member_event e)
{
    static const char *const n[] = {"join", "suspect", "alive", "dead", "leave", "reap", "update"};
    return (unsigned)e < SM_MEV__COUNT ? n[e] : "?";
}
const char *sm_pkt_class_name(enum sm_pkt_class c)
{
    static const char *const n[] = {"probe", "member", "data", "ae"};
    return (unsigned)c < SM_PKT__COUNT ? n[c] : "?";
}
const char *sm_node_reject_name(enum sm_node_reject r)
{
    static const char *const n[] = {"decode", "version",    "too_large", "envelope",
                                    "sender", "record_sig", "record",    "unknown_msg",
                                    "stale",  "cert",       "left"};
    return (unsigned)r < SM_REJ__COUNT ? n[r] : "?";
}
