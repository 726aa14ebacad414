/* backend_raft.c: the raft backend: canonical raft (libraft + raft_uv) driven from libev,
 * the FSM of raft_fsm.c, request forwarding to the leader, linearizable reads, admin.
 *
 * How it fits together
 * --------------------
 * libraft runs on a private libuv loop. That loop never blocks: an ev_io
 * watches uv_backend_fd() (an epoll fd that turns readable when any uv handle
 * has work), an ev_timer is armed from uv_backend_timeout() before libev
 * sleeps (ev_prepare), and every wake-up runs uv_run(UV_RUN_NOWAIT). So the
 * whole backend is single-threaded on the store's libev loop; no locks.
 *
 * Every client operation becomes a *command* (msgpack, see raft_fsm.h) and
 * goes to the leader: on the leader it is executed directly; on a follower it
 * is sent over an authenticated forward connection (raft_transport.c, same
 * port as raft) to the leader, which executes it and answers with a *reply*.
 * The leader stamps write commands with its wall clock, appends them with
 * raft_apply() and answers from the FSM result once they are applied. Reads
 * (and pings) are linearizable: the leader appends a no-op entry (one per
 * batch of reads) and reads its FSM once the barrier applied, which proves it
 * was still the leader of a quorum. With raft.linearizable=false reads are
 * answered from the local FSM without any round trip (stale reads), and
 * sm_get_now()/sm_list() always are.
 *
 * An operation that cannot be executed because there is no leader (election
 * under way, leader unreachable, leadership lost while in flight) is retried
 * until its deadline (raft.timeout): all commands are idempotent when
 * retried (a lock acquire/release carries its token; a set rewrites the same
 * value), so a retry never does harm. At the deadline the operation fails with
 * SM_ENOQUORUM (no leader at all) or SM_ETIMEOUT (not committed in time).
 */
#include "config.h"

#include "backend.h"
#include "metrics.h"
#include "raft_admin.h"
#include "raft_fsm.h"
#include "raft_transport.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <limits.h>
#include <msgpack.h>
#include <raft.h>
#include <raft/uv.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <uv.h>
#include <xxhash.h>

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

#define TICK_S 0.02

struct rb;

/* A client operation of this node. */
struct rop {
    struct rb *rb;
    struct rop *next, *prev;
    sm_cb cb;
    void *arg;
    uint8_t *cmd;
    size_t cmdlen;
    int op;
    uint64_t deadline;
    uint64_t reqid;
    enum { R_WAIT, R_LOCAL, R_FWD, R_FAILED, R_STALE } state;
    struct lreq *lr;
    int fail_status;
    char errmsg[200];
    bool ever_sent;
};

/* A command being executed on the leader (for a local rop or a forwarded request). */
struct lreq {
    struct rb *rb;
    struct lreq *next, *prev;
    struct rop *rop;    /* local owner (NULL when forwarded or abandoned) */
    uint64_t conn_id;   /* forwarded: server connection id */
    uint64_t reqid;     /* forwarded: request id */
    struct lreq *batch; /* reads waiting for the same barrier */
    union {
        struct raft_apply apply;
        struct raft_barrier barrier;
        struct raft_change change;
        struct raft_transfer transfer;
    } u;
    uint8_t *cmd;
    size_t cmdlen;
    int op;
    uint64_t arg_id;
    bool in_raft; /* raft holds u: free only after its callback */
};

/* Per forward connection bookkeeping (the user pointer of a smt_conn). */
struct fconn {
    bool server;
    uint64_t id;
    struct smt_conn *c;
    struct fconn *next;
};

struct rb {
    struct sm_backend base;
    struct sm_store *st;
    struct ev_loop *ev;
    uv_loop_t uv;
    bool uv_inited;
    ev_io uvio;
    ev_timer uvtimer;
    ev_prepare prep;
    ev_timer tick;
    ev_timer kick; /* a 0 s timer, not an idle watcher: busy uv work would starve idles */
    struct raft raft;
    struct raft_io io;
    struct raft_fsm rfsm;
    struct raft_uv_transport tr;
    bool tr_inited, io_inited, raft_inited, started, raft_closed;
    struct smr_fsm fsm;
    raft_id id;
    char address[256];
    char data_dir[PATH_MAX];
    uint64_t timeout_ms;
    bool linearizable;
    struct rop *ops;
    uint64_t next_reqid;
    struct lreq *lreqs;
    struct lreq *read_q; /* reads waiting for the next barrier */
    bool barrier_busy;
    struct fconn *fwd; /* client connection to the leader */
    raft_id fwd_leader;
    bool fwd_ready;
    struct fconn *srv; /* server connections */
    uint64_t next_conn_id;
    bool purge_busy;
    bool closing;
    unsigned short last_state;
    uint64_t *leader_changes, *applied_total, *fwd_total;
    struct rb *next_all;
};

static struct rb *all_rbs; /* open raft backends, for the admin calls */

static struct rb *find_rb(struct sm_store *st)
{
    for (struct rb *r = all_rbs; r; r = r->next_all)
        if (r->st == st) return r;
    return NULL;
}

/* ---- libuv driven from libev ---- */

static void uv_pump(struct rb *rb)
{
    uv_run(&rb->uv, UV_RUN_NOWAIT);
}

static void uvio_cb(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l, (void)revents;
    uv_pump(w->data);
}

static void uvtimer_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l, (void)revents;
    uv_pump(w->data);
}

static void prep_cb(struct ev_loop *l, ev_prepare *w, int revents)
{
    (void)revents;
    struct rb *rb = w->data;
    /* Always run libuv once before libev sleeps: calls made outside uv_run()
     * (raft_apply() from a libev callback) queue new fd watchers that libuv
     * only registers with its epoll set inside uv_run(), and
     * uv_backend_timeout() does not account for them; without this a write
     * started from a libev callback waits for the next raft timer. Then run
     * what shows as a zero timeout (pending callbacks, closing handles). */
    uv_pump(rb);
    for (int i = 0; i < 8 && uv_loop_alive(&rb->uv); i++) {
        uv_update_time(&rb->uv);
        if (uv_backend_timeout(&rb->uv) != 0) break;
        uv_pump(rb);
    }
    ev_timer_stop(l, &rb->uvtimer);
    if (!uv_loop_alive(&rb->uv)) return;
    uv_update_time(&rb->uv);
    int t = uv_backend_timeout(&rb->uv);
    if (t < 0) return;
    ev_timer_set(&rb->uvtimer, t / 1000.0, 0.);
    ev_timer_start(l, &rb->uvtimer);
}

/* ---- msgpack helpers ---- */

struct pk {
    msgpack_sbuffer sb;
    msgpack_packer p;
};

static void pk_init(struct pk *k)
{
    msgpack_sbuffer_init(&k->sb);
    msgpack_packer_init(&k->p, &k->sb, msgpack_sbuffer_write);
}

static int pk_str(struct pk *k, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str_with_body(&k->p, s, n);
}

static bool o_u64(const msgpack_object *o, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return false;
    *v = o->via.u64;
    return true;
}

static bool o_i64(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *v = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return true;
    }
    return false;
}

static bool o_str_raw(const msgpack_object *o, const char **p, size_t *n)
{
    if (o->type == MSGPACK_OBJECT_STR) {
        *p = o->via.str.ptr, *n = o->via.str.size;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_BIN) {
        *p = o->via.bin.ptr, *n = o->via.bin.size;
        return true;
    }
    return false;
}

static bool o_str(const msgpack_object *o, const char **p, size_t *n)
{
    /* msgpack gives a NULL pointer for empty strings */
    bool ok = o_str_raw(o, p, n);
    if (ok && *n == 0) *p = "";
    return ok;
}

/* ---- replies ----
 * [status, version, fence, expires_ms, token, errmsg, [[status, key, value|nil, version, time,
 *  expires, origin]...]] */

static int reply_simple(int status, const struct smr_result *r, const char *msg, void **out,
                        size_t *len)
{
    struct pk k;
    pk_init(&k);
    int bad = msgpack_pack_array(&k.p, 7);
    bad |= msgpack_pack_int(&k.p, status);
    bad |= msgpack_pack_uint64(&k.p, r ? r->version : 0);
    bad |= msgpack_pack_uint64(&k.p, r ? r->fence : 0);
    bad |= msgpack_pack_int64(&k.p, r ? r->expires_ms : 0);
    bad |= pk_str(&k, r ? r->token : "");
    bad |= pk_str(&k, msg ? msg : "");
    bad |= msgpack_pack_array(&k.p, 0);
    if (bad) {
        msgpack_sbuffer_destroy(&k.sb);
        return SM_ENOMEM;
    }
    *out = k.sb.data;
    *len = k.sb.size;
    return 0;
}

/* Read keys from the local FSM into a reply. */
static int reply_get(struct rb *rb, const uint8_t *cmd, size_t cmdlen, void **out, size_t *len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = SM_EPROTO;
    struct pk k;
    pk_init(&k);
    if (msgpack_unpack_next(&u, (const char *)cmd, cmdlen, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size != 2 ||
        u.data.via.array.ptr[1].type != MSGPACK_OBJECT_ARRAY)
        goto out;
    const msgpack_object_array *keys = &u.data.via.array.ptr[1].via.array;
    int64_t now = (int64_t)sm_wall_ms();
    int bad = msgpack_pack_array(&k.p, 7);
    bad |= msgpack_pack_int(&k.p, 0);
    bad |= msgpack_pack_uint64(&k.p, rb->fsm.index_base + rb->fsm.last_index);
    bad |= msgpack_pack_uint64(&k.p, 0);
    bad |= msgpack_pack_int64(&k.p, 0);
    bad |= pk_str(&k, "");
    bad |= pk_str(&k, "");
    bad |= msgpack_pack_array(&k.p, keys->size);
    char kbuf[65536 + 1];
    for (uint32_t i = 0; i < keys->size; i++) {
        const char *kp;
        size_t kl;
        if (!o_str(&keys->ptr[i], &kp, &kl) || kl >= sizeof kbuf) goto out;
        memcpy(kbuf, kp, kl);
        kbuf[kl] = '\0';
        const struct smr_kv *e = smr_fsm_get(&rb->fsm, kbuf, now);
        bad |= msgpack_pack_array(&k.p, 7);
        bad |= msgpack_pack_int(&k.p, e ? 0 : SM_ENOTFOUND);
        bad |= msgpack_pack_str_with_body(&k.p, kp, kl);
        if (e)
            bad |= msgpack_pack_bin_with_body(&k.p, e->value, e->value_len);
        else
            bad |= msgpack_pack_nil(&k.p);
        bad |= msgpack_pack_uint64(&k.p, e ? e->version : 0);
        bad |= msgpack_pack_uint64(&k.p, e ? e->time_ms : 0);
        bad |= msgpack_pack_int64(&k.p, e ? e->expires_ms : 0);
        bad |= pk_str(&k, e ? e->origin : "");
    }
    if (bad) {
        rc = SM_ENOMEM;
        goto out;
    }
    msgpack_unpacked_destroy(&u);
    *out = k.sb.data;
    *len = k.sb.size;
    return 0;
out:
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&k.sb);
    return rc;
}

/* ---- completing client operations ---- */

static void rop_unlink(struct rop *o)
{
    struct rb *rb = o->rb;
    if (o->prev)
        o->prev->next = o->next;
    else
        rb->ops = o->next;
    if (o->next) o->next->prev = o->prev;
    if (o->lr) o->lr->rop = NULL;
    o->lr = NULL;
}

static void rop_free(struct rop *o)
{
    free(o->cmd);
    free(o);
}

static void rop_fail(struct rop *o, int status, const char *msg)
{
    rop_unlink(o);
    struct sm_result r = {.errmsg = msg};
    sm_store_seterr(o->rb->st, status, "%s", msg);
    o->cb(o->rb->st, status, &r, o->arg);
    rop_free(o);
}

/* Decode a reply and complete the operation. Returns false when the reply
 * says "not the leader": the caller then retries. */
/* The lock name of a lock command: its second element (NULL if unreadable).
 * The result lives in a static buffer, valid until the next call. */
static const char *cmd_lock_name(const struct rop *o)
{
    static char namebuf[65536 + 1];
    const char *lname = NULL, *np;
    size_t nl, coff = 0;
    msgpack_unpacked cu;
    msgpack_unpacked_init(&cu);
    if (msgpack_unpack_next(&cu, (const char *)o->cmd, o->cmdlen, &coff) ==
            MSGPACK_UNPACK_SUCCESS &&
        o_str(&cu.data.via.array.ptr[1], &np, &nl) && nl < sizeof namebuf) {
        memcpy(namebuf, np, nl);
        namebuf[nl] = '\0';
        lname = namebuf;
    }
    msgpack_unpacked_destroy(&cu);
    return lname;
}

/* The entries of a reply, [[status, key, value|nil, version, time, expires,
 * origin]...], into one calloc'ed array and one block for the strings (values
 * point into the reply itself). 0, SM_ENOMEM or SM_EPROTO. */
static int reply_entries(const msgpack_object_array *ea, struct sm_entry **out, char **outmem)
{
    size_t need = 0;
    for (uint32_t i = 0; i < ea->size; i++) {
        const msgpack_object *x = &ea->ptr[i];
        const char *p;
        size_t n;
        if (x->type != MSGPACK_OBJECT_ARRAY || x->via.array.size != 7) return SM_EPROTO;
        for (int j = 1; j < 7; j += 5)
            if (o_str(&x->via.array.ptr[j], &p, &n)) need += n + 1;
    }
    struct sm_entry *ents = calloc(ea->size, sizeof *ents);
    char *mem = malloc(need + 1);
    if (!ents || !mem) {
        free(ents);
        free(mem);
        return SM_ENOMEM;
    }
    char *w = mem;
    for (uint32_t i = 0; i < ea->size; i++) {
        const msgpack_object *x = ea->ptr[i].via.array.ptr;
        struct sm_entry *e = &ents[i];
        int64_t st, ex;
        uint64_t ver, t;
        const char *p;
        size_t n;
        if (!o_i64(&x[0], &st) || !o_u64(&x[3], &ver) || !o_u64(&x[4], &t) ||
            !o_i64(&x[5], &ex) || !o_str(&x[1], &p, &n)) {
            free(ents);
            free(mem);
            return SM_EPROTO;
        }
        memcpy(w, p, n);
        w[n] = '\0';
        e->key = w;
        w += n + 1;
        if (!o_str(&x[6], &p, &n)) n = 0, p = "";
        memcpy(w, p, n);
        w[n] = '\0';
        e->origin = w;
        w += n + 1;
        e->status = (int)st;
        if (x[2].type == MSGPACK_OBJECT_BIN) {
            e->value = x[2].via.bin.ptr;
            e->value_len = x[2].via.bin.size;
        }
        e->version = ver;
        e->time_ms = t;
        e->expires_ms = ex;
    }
    *out = ents;
    *outmem = mem;
    return 0;
}

static bool rop_reply(struct rop *o, const uint8_t *buf, size_t len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int64_t status, exp;
    uint64_t version, fence;
    const char *tok, *msg;
    size_t tl, ml;
    if (msgpack_unpack_next(&u, (const char *)buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size != 7)
        goto bad;
    const msgpack_object *a = u.data.via.array.ptr;
    if (!o_i64(&a[0], &status) || !o_u64(&a[1], &version) || !o_u64(&a[2], &fence) ||
        !o_i64(&a[3], &exp) || !o_str(&a[4], &tok, &tl) || !o_str(&a[5], &msg, &ml) ||
        a[6].type != MSGPACK_OBJECT_ARRAY || tl > SMR_TOKEN_LEN)
        goto bad;
    if (status == SM_ENOTLEADER) {
        msgpack_unpacked_destroy(&u);
        return false;
    }
    char token[SMR_TOKEN_LEN + 1], emsg[256];
    memcpy(token, tok, tl);
    token[tl] = '\0';
    snprintf(emsg, sizeof emsg, "%.*s", (int)ml, msg);
    struct sm_result r = {.version = version, .errmsg = status < 0 ? emsg : NULL};
    struct sm_lock lk;
    if (o->op == SMR_OP_LOCK || o->op == SMR_OP_RENEW || o->op == SMR_OP_UNLOCK) {
        const char *lname = cmd_lock_name(o);
        lk = (struct sm_lock){
            .name = lname ? lname : "", .token = token, .fence = fence, .expires_ms = exp};
        r.lock = &lk;
    }
    struct sm_entry *ents = NULL;
    char *mem = NULL;
    const msgpack_object_array *ea = &a[6].via.array;
    if (ea->size) {
        int rc = reply_entries(ea, &ents, &mem);
        if (rc == SM_ENOMEM) {
            msgpack_unpacked_destroy(&u);
            rop_fail(o, SM_ENOMEM, "out of memory");
            return true;
        }
        if (rc < 0) goto bad;
        r.entries = ents;
        r.n_entries = ea->size;
    }
    rop_unlink(o);
    if (status < 0) sm_store_seterr(o->rb->st, (int)status, "%s", emsg);
    o->cb(o->rb->st, (int)status, &r, o->arg);
    free(ents);
    free(mem);
    msgpack_unpacked_destroy(&u);
    rop_free(o);
    return true;
bad:
    msgpack_unpacked_destroy(&u);
    rop_fail(o, SM_EPROTO, "malformed reply from the raft leader");
    return true;
}

/* ---- executing commands on the leader ---- */

static void lreq_free(struct lreq *l)
{
    struct rb *rb = l->rb;
    if (l->prev)
        l->prev->next = l->next;
    else if (rb->lreqs == l)
        rb->lreqs = l->next;
    if (l->next) l->next->prev = l->prev;
    if (l->rop) l->rop->lr = NULL;
    free(l->cmd);
    free(l);
}

static struct fconn *srv_find(struct rb *rb, uint64_t id)
{
    for (struct fconn *f = rb->srv; f; f = f->next)
        if (f->id == id) return f;
    return NULL;
}

static void send_fwd_reply(struct rb *rb, uint64_t conn_id, uint64_t reqid, const void *reply,
                           size_t len)
{
    struct fconn *f = srv_find(rb, conn_id);
    if (!f) return; /* the requester went away; it retries elsewhere */
    struct pk k;
    pk_init(&k);
    if (!(msgpack_pack_array(&k.p, 2) || msgpack_pack_uint64(&k.p, reqid) ||
          msgpack_pack_bin_with_body(&k.p, reply, len)))
        smt_send(f->c, k.sb.data, k.sb.size);
    msgpack_sbuffer_destroy(&k.sb);
}

static void schedule(struct rb *rb);

/* Deliver the reply of a leader-side command and free it. */
static void lreq_done(struct lreq *l, const void *reply, size_t len)
{
    struct rb *rb = l->rb;
    if (l->rop) {
        struct rop *o = l->rop;
        l->rop = NULL;
        o->lr = NULL;
        if (!rop_reply(o, reply, len)) {
            o->state = R_WAIT; /* lost leadership: retry */
            schedule(rb);
        }
    } else if (l->conn_id) {
        send_fwd_reply(rb, l->conn_id, l->reqid, reply, len);
    }
    lreq_free(l);
}

static void lreq_status(struct lreq *l, int status, const struct smr_result *r, const char *msg)
{
    void *rep;
    size_t len;
    if (reply_simple(status, r, msg, &rep, &len) < 0) {
        if (l->rop) rop_fail(l->rop, SM_ENOMEM, "out of memory");
        lreq_free(l);
        return;
    }
    lreq_done(l, rep, len);
    free(rep);
}

static int raft_status(int rv, const char **msg)
{
    switch (rv) {
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
        *msg = "leadership lost";
        return SM_ENOTLEADER;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        *msg = "raft is shutting down";
        return SM_ECLOSED;
    case RAFT_NOMEM:
        *msg = "out of memory";
        return SM_ENOMEM;
    case RAFT_BADID:
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
    case RAFT_BADROLE:
    case RAFT_NOTFOUND:
        *msg = raft_strerror(rv);
        return SM_EINVAL;
    case RAFT_CANTCHANGE:
    case RAFT_BUSY:
        *msg = raft_strerror(rv);
        return SM_EUNAVAILABLE;
    default:
        *msg = raft_strerror(rv);
        return SM_EBACKEND;
    }
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct lreq *l = req->data;
    l->in_raft = false;
    if (status != 0) {
        const char *msg;
        int st = raft_status(status, &msg);
        lreq_status(l, st, NULL, msg);
        return;
    }
    const struct smr_result *r = result;
    const char *msg = r->status == SM_ELOCKED     ? "lock is held by another owner"
                      : r->status == SM_ENOTOWNER ? "not the lock owner, or the lock expired"
                      : r->status == SM_EPROTO    ? "malformed command"
                                                  : NULL;
    lreq_status(l, r->status, r, msg);
}

static void start_barrier(struct rb *rb);
static int entry_buf(void *entry, size_t elen, struct raft_buffer *buf);

/* The read barrier of batch @p b applied (or failed): answer its reads. */
static void reads_done(struct lreq *b, int status)
{
    struct rb *rb = b->rb;
    b->in_raft = false;
    rb->barrier_busy = false;
    struct lreq *batch = b->batch;
    b->batch = NULL;
    for (struct lreq *l = batch, *n; l; l = n) {
        n = l->batch;
        l->batch = NULL;
        if (status != 0 || rb->closing) {
            const char *msg;
            int st = status ? raft_status(status, &msg) : SM_ECLOSED;
            if (!status) msg = "closing";
            lreq_status(l, st, NULL, msg);
            continue;
        }
        if (l->op == SMR_OP_PING) {
            lreq_status(l, 0, NULL, NULL);
            continue;
        }
        void *rep;
        size_t len;
        int rc = reply_get(rb, l->cmd, l->cmdlen, &rep, &len);
        if (rc < 0) {
            lreq_status(l, rc, NULL, rc == SM_ENOMEM ? "out of memory" : "malformed read");
            continue;
        }
        lreq_done(l, rep, len);
        free(rep);
    }
    lreq_free(b);
    if (rb->read_q && !rb->closing) start_barrier(rb);
}

static void read_apply_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    reads_done(req->data, status);
}

static void start_barrier(struct rb *rb)
{
    struct lreq *b = calloc(1, sizeof *b);
    if (!b) return; /* retried on the next read or tick */
    b->rb = rb;
    b->next = rb->lreqs;
    if (rb->lreqs) rb->lreqs->prev = b;
    rb->lreqs = b;
    b->batch = rb->read_q;
    rb->read_q = NULL;
    /* A no-op command entry: like raft_barrier() it proves this node led a
     * quorum in its term once applied, and it goes through the same apply path
     * (and leader-time stamping) as every write. */
    static const uint8_t noop[] = {0x91, SMR_OP_NOOP};
    void *entry;
    size_t elen;
    struct raft_buffer buf;
    int rv = RAFT_NOMEM;
    if (smr_entry_build(sm_wall_ms(), sm_store_node_id(rb->st), noop, sizeof noop, &entry, &elen) ==
            0 &&
        entry_buf(entry, elen, &buf) == 0) {
        b->u.apply.data = b;
        rv = raft_apply(&rb->raft, &b->u.apply, &buf, 1, read_apply_cb);
        if (rv != 0) raft_free(buf.base);
    }
    if (rv != 0) {
        /* Not the leader any more: everyone in the batch retries. */
        struct lreq *batch = b->batch;
        b->batch = NULL;
        lreq_free(b);
        const char *msg;
        int st = raft_status(rv, &msg);
        for (struct lreq *l = batch, *n; l; l = n) {
            n = l->batch;
            l->batch = NULL;
            lreq_status(l, st, NULL, msg);
        }
        return;
    }
    b->in_raft = true;
    rb->barrier_busy = true;
}

static void change_cb(struct raft_change *req, int status);

static void assign_after_add(struct lreq *l)
{
    struct rb *rb = l->rb;
    l->op = SMR_OP_TRANSFER + 100; /* marks the second step */
    l->u.change.data = l;
    int rv = raft_assign(&rb->raft, &l->u.change, l->arg_id, RAFT_VOTER, change_cb);
    if (rv != 0) {
        const char *msg;
        lreq_status(l, raft_status(rv, &msg), NULL, raft_errmsg(&rb->raft));
        return;
    }
    l->in_raft = true;
}

static void change_cb(struct raft_change *req, int status)
{
    struct lreq *l = req->data;
    l->in_raft = false;
    if (status != 0) {
        const char *msg;
        int st = raft_status(status, &msg);
        lreq_status(l, st, NULL, msg);
        return;
    }
    if (l->op == SMR_OP_ADD) {
        assign_after_add(l);
        return;
    }
    lreq_status(l, 0, NULL, NULL);
}

static void transfer_cb(struct raft_transfer *req)
{
    struct lreq *l = req->data;
    struct rb *rb = l->rb;
    l->in_raft = false;
    raft_id lid;
    const char *addr;
    raft_leader(&rb->raft, &lid, &addr);
    bool ok = lid != 0 && lid != rb->id && (l->arg_id == 0 || lid == l->arg_id);
    lreq_status(l, ok ? 0 : SM_ETIMEOUT, NULL,
                ok ? NULL : "leadership transfer did not complete in time");
}

/* Copy an entry into a raft_malloc'd buffer padded with zeros to a multiple of
 * 8 bytes: libraft 0.15's segment code mis-sizes batches of other lengths when
 * it closes a segment (canonical/raft#304), which corrupts the log on restart.
 * msgpack decoding stops at the end of the entry, so the padding is ignored.
 * Frees @p entry. */
static int entry_buf(void *entry, size_t elen, struct raft_buffer *buf)
{
    size_t padded = (elen + 7) & ~(size_t)7;
    buf->base = raft_malloc(padded);
    buf->len = padded;
    if (!buf->base) {
        free(entry);
        return SM_ENOMEM;
    }
    memcpy(buf->base, entry, elen);
    memset((char *)buf->base + elen, 0, padded - elen);
    free(entry);
    return 0;
}

/* Execute command @p cmd on this node (the leader). Takes ownership of cmd. */
/* A leader request for @p cmd (taken over), linked in; NULL when out of
 * memory (the owner, if any, is failed). */
static struct lreq *lreq_new(struct rb *rb, uint8_t *cmd, size_t cmdlen, struct rop *owner,
                             uint64_t conn_id, uint64_t reqid)
{
    struct lreq *l = calloc(1, sizeof *l);
    if (!l) {
        free(cmd);
        if (owner) {
            owner->state = R_FAILED;
            owner->fail_status = SM_ENOMEM;
            snprintf(owner->errmsg, sizeof owner->errmsg, "out of memory");
            schedule(rb);
        }
        return NULL;
    }
    l->rb = rb;
    l->rop = owner;
    if (owner) owner->lr = l;
    l->conn_id = conn_id;
    l->reqid = reqid;
    l->cmd = cmd;
    l->cmdlen = cmdlen;
    l->next = rb->lreqs;
    if (rb->lreqs) rb->lreqs->prev = l;
    rb->lreqs = l;
    return l;
}

/* Peek at the operation and its arguments (the address of an ADD into
 * @p abuf). 0, or -1 with the request answered. */
static int lreq_parse(struct lreq *l, uint64_t *opp, char *abuf, size_t abuflen)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    uint64_t op = 0;
    const char *addr = NULL;
    size_t alen = 0;
    if (msgpack_unpack_next(&u, (const char *)l->cmd, l->cmdlen, &off) !=
            MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size < 1 ||
        !o_u64(&u.data.via.array.ptr[0], &op)) {
        msgpack_unpacked_destroy(&u);
        lreq_status(l, SM_EPROTO, NULL, "malformed command");
        return -1;
    }
    l->op = (int)op;
    if (op >= SMR_OP_ADD && op <= SMR_OP_TRANSFER) {
        if (u.data.via.array.size < 2 || !o_u64(&u.data.via.array.ptr[1], &l->arg_id) ||
            (op == SMR_OP_ADD &&
             (u.data.via.array.size != 3 || !o_str(&u.data.via.array.ptr[2], &addr, &alen)))) {
            msgpack_unpacked_destroy(&u);
            lreq_status(l, SM_EPROTO, NULL, "malformed command");
            return -1;
        }
    }
    abuf[0] = '\0';
    if (addr) snprintf(abuf, abuflen, "%.*s", (int)alen, addr);
    msgpack_unpacked_destroy(&u);
    *opp = op;
    return 0;
}

/* A write: stamp it with our clock (FSM time comes from these stamps only)
 * and propose it. A raft_apply return code, or -1 with the request answered. */
static int leader_apply(struct rb *rb, struct lreq *l)
{
    void *entry;
    size_t elen;
    if (smr_entry_build(sm_wall_ms(), sm_store_node_id(rb->st), l->cmd, l->cmdlen, &entry,
                        &elen) < 0) {
        lreq_status(l, SM_ENOMEM, NULL, "out of memory");
        return -1;
    }
    struct raft_buffer buf;
    if (entry_buf(entry, elen, &buf) < 0) {
        lreq_status(l, SM_ENOMEM, NULL, "out of memory");
        return -1;
    }
    l->u.apply.data = l;
    int rv = raft_apply(&rb->raft, &l->u.apply, &buf, 1, apply_cb);
    if (rv != 0) raft_free(buf.base);
    return rv;
}

static void leader_exec(struct rb *rb, uint8_t *cmd, size_t cmdlen, struct rop *owner,
                        uint64_t conn_id, uint64_t reqid)
{
    struct lreq *l = lreq_new(rb, cmd, cmdlen, owner, conn_id, reqid);
    char abuf[256];
    uint64_t op;
    if (!l || lreq_parse(l, &op, abuf, sizeof abuf) < 0) return;
    int rv = 0;
    switch (op) {
    case SMR_OP_GET:
    case SMR_OP_PING:
        if (raft_state(&rb->raft) != RAFT_LEADER) {
            lreq_status(l, SM_ENOTLEADER, NULL, "not the leader");
            return;
        }
        l->batch = rb->read_q;
        rb->read_q = l;
        if (!rb->barrier_busy) start_barrier(rb);
        return;
    case SMR_OP_ADD:
        l->u.change.data = l;
        rv = raft_add(&rb->raft, &l->u.change, l->arg_id, abuf, change_cb);
        break;
    case SMR_OP_REMOVE:
        l->u.change.data = l;
        rv = raft_remove(&rb->raft, &l->u.change, l->arg_id, change_cb);
        break;
    case SMR_OP_TRANSFER:
        l->u.transfer.data = l;
        rv = raft_transfer(&rb->raft, &l->u.transfer, l->arg_id, transfer_cb);
        break;
    default:
        if ((rv = leader_apply(rb, l)) < 0) return;
        break;
    }
    if (rv != 0) {
        const char *msg;
        int st = raft_status(rv, &msg);
        if (op >= SMR_OP_ADD) msg = raft_errmsg(&rb->raft)[0] ? raft_errmsg(&rb->raft) : msg;
        lreq_status(l, st, NULL, msg);
        return;
    }
    l->in_raft = true;
}

/* ---- forwarding ---- */

static void fwd_drop(struct rb *rb)
{
    if (!rb->fwd) return;
    struct fconn *f = rb->fwd;
    rb->fwd = NULL;
    rb->fwd_ready = false;
    f->c = NULL;
    for (struct rop *o = rb->ops; o; o = o->next)
        if (o->state == R_FWD) o->state = R_WAIT;
}

static void hook_fwd_open(void *arg, struct smt_conn *c)
{
    struct rb *rb = arg;
    struct fconn *f = smt_conn_user(c);
    if (!f) {
        /* A follower connected to us to forward requests. */
        f = calloc(1, sizeof *f);
        if (!f) {
            smt_conn_close(c);
            return;
        }
        f->server = true;
        f->id = ++rb->next_conn_id;
        f->c = c;
        f->next = rb->srv;
        rb->srv = f;
        smt_conn_set_user(c, f);
        return;
    }
    if (f == rb->fwd) {
        rb->fwd_ready = true;
        schedule(rb);
    }
}

static void hook_fwd_close(void *arg, struct smt_conn *c)
{
    struct rb *rb = arg;
    struct fconn *f = smt_conn_user(c);
    if (!f) return;
    if (f->server) {
        for (struct fconn **p = &rb->srv; *p; p = &(*p)->next)
            if (*p == f) {
                *p = f->next;
                break;
            }
    } else if (f == rb->fwd) {
        fwd_drop(rb);
        schedule(rb);
    }
    free(f);
}

static void hook_fwd_msg(void *arg, struct smt_conn *c, const uint8_t *msg, size_t len)
{
    struct rb *rb = arg;
    struct fconn *f = smt_conn_user(c);
    if (!f) return;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    uint64_t reqid;
    if (msgpack_unpack_next(&u, (const char *)msg, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size != 2 ||
        !o_u64(&u.data.via.array.ptr[0], &reqid) ||
        u.data.via.array.ptr[1].type != MSGPACK_OBJECT_BIN) {
        msgpack_unpacked_destroy(&u);
        smt_conn_close(c);
        return;
    }
    const msgpack_object_bin *b = &u.data.via.array.ptr[1].via.bin;
    if (f->server) {
        if (rb->fwd_total) (*rb->fwd_total)++;
        if (raft_state(&rb->raft) != RAFT_LEADER) {
            void *rep;
            size_t rl;
            if (reply_simple(SM_ENOTLEADER, NULL, "not the leader", &rep, &rl) == 0) {
                send_fwd_reply(rb, f->id, reqid, rep, rl);
                free(rep);
            }
        } else {
            uint8_t *cmd = malloc(b->size ? b->size : 1);
            if (cmd) {
                memcpy(cmd, b->ptr, b->size);
                leader_exec(rb, cmd, b->size, NULL, f->id, reqid);
            }
        }
    } else {
        for (struct rop *o = rb->ops; o; o = o->next) {
            if (o->state != R_FWD || o->reqid != reqid) continue;
            if (!rop_reply(o, (const uint8_t *)b->ptr, b->size)) {
                o->state = R_WAIT;
                schedule(rb);
            }
            break;
        }
    }
    msgpack_unpacked_destroy(&u);
}

static void hook_log(void *arg, const char *msg)
{
    (void)arg;
    fprintf(stderr, "level=warn component=raft msg=\"%s\"\n", msg);
}

static int fwd_send(struct rb *rb, struct rop *o)
{
    struct pk k;
    pk_init(&k);
    o->reqid = ++rb->next_reqid;
    int rc = SM_ENOMEM;
    if (msgpack_pack_array(&k.p, 2) == 0 && msgpack_pack_uint64(&k.p, o->reqid) == 0 &&
        msgpack_pack_bin_with_body(&k.p, o->cmd, o->cmdlen) == 0)
        rc = smt_send(rb->fwd->c, k.sb.data, k.sb.size);
    msgpack_sbuffer_destroy(&k.sb);
    return rc;
}

/* ---- scheduling ---- */

/* Try to move a waiting operation forward. */
static void rop_try(struct rb *rb, struct rop *o)
{
    if (raft_state(&rb->raft) == RAFT_LEADER) {
        uint8_t *copy = malloc(o->cmdlen);
        if (!copy) return;
        memcpy(copy, o->cmd, o->cmdlen);
        o->state = R_LOCAL;
        o->ever_sent = true;
        leader_exec(rb, copy, o->cmdlen, o, 0, 0);
        return;
    }
    raft_id lid;
    const char *laddr;
    raft_leader(&rb->raft, &lid, &laddr);
    if (lid == 0 || lid == rb->id || !laddr) return;
    if (rb->fwd && rb->fwd_leader != lid) {
        struct fconn *f = rb->fwd;
        struct smt_conn *c = f->c;
        fwd_drop(rb);
        f->server = false;
        smt_conn_set_user(c, NULL); /* freed here; the close hook sees no user */
        free(f);
        smt_conn_close(c);
    }
    if (!rb->fwd) {
        struct fconn *f = calloc(1, sizeof *f);
        if (!f) return;
        struct smt_conn *c;
        if (smt_fwd_connect(&rb->tr, laddr, f, &c) < 0) {
            free(f);
            return;
        }
        f->c = c;
        rb->fwd = f;
        rb->fwd_leader = lid;
        rb->fwd_ready = false;
        return;
    }
    if (!rb->fwd_ready) return;
    if (fwd_send(rb, o) == 0) {
        o->state = R_FWD;
        o->ever_sent = true;
    }
}

static void local_read(struct rb *rb, struct rop *o);

static void process(struct rb *rb, bool retry)
{
    uint64_t now = sm_mono_ms();
    for (struct rop *o = rb->ops, *n; o; o = n) {
        n = o->next;
        if (o->state == R_FAILED) {
            rop_fail(o, o->fail_status, o->errmsg);
            continue;
        }
        if (o->state == R_STALE) {
            local_read(rb, o);
            continue;
        }
        if (now >= o->deadline) {
            raft_id lid;
            const char *la;
            raft_leader(&rb->raft, &lid, &la);
            char msg[200];
            if (lid == 0) {
                snprintf(msg, sizeof msg,
                         "raft: no leader within %llu ms (no quorum of the cluster reachable)",
                         (unsigned long long)rb->timeout_ms);
                rop_fail(o, SM_ENOQUORUM, msg);
            } else {
                snprintf(msg, sizeof msg,
                         "raft: not committed within %llu ms (leader %llu at %s; no quorum?)",
                         (unsigned long long)rb->timeout_ms, (unsigned long long)lid,
                         la ? la : "?");
                rop_fail(o, SM_ETIMEOUT, msg);
            }
            continue;
        }
        if (retry && o->state == R_WAIT) rop_try(rb, o);
    }
}

static void kick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)revents;
    (void)l, (void)w;
    struct rb *rb = w->data;
    process(rb, true);
}

static void schedule(struct rb *rb)
{
    if (!rb->closing && !ev_is_active(&rb->kick)) ev_timer_start(rb->ev, &rb->kick);
}

static void maybe_purge(struct rb *rb);

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l, (void)revents;
    struct rb *rb = w->data;
    unsigned short s = raft_state(&rb->raft);
    if (s != rb->last_state) {
        if (rb->leader_changes && (s == RAFT_LEADER || rb->last_state == RAFT_LEADER))
            (*rb->leader_changes)++;
        rb->last_state = s;
    }
    process(rb, true);
    maybe_purge(rb);
}

static void purge_reply(struct rb *rb)
{
    rb->purge_busy = false;
}

static void purge_done_cb(struct raft_apply *req, int status, void *result)
{
    (void)status, (void)result;
    struct lreq *l = req->data;
    struct rb *rb = l->rb;
    l->in_raft = false;
    purge_reply(rb);
    lreq_free(l);
}

/* The leader proposes a purge entry once keys expired by its clock; every
 * replica then drops exactly the keys that expired by the entry's time. */
static void maybe_purge(struct rb *rb)
{
    if (rb->purge_busy || raft_state(&rb->raft) != RAFT_LEADER ||
        !smr_fsm_needs_purge(&rb->fsm, (int64_t)sm_wall_ms()))
        return;
    static const uint8_t cmd[] = {0x91, SMR_OP_PURGE};
    void *entry;
    size_t elen;
    if (smr_entry_build(sm_wall_ms(), sm_store_node_id(rb->st), cmd, sizeof cmd, &entry, &elen) < 0)
        return;
    struct lreq *l = calloc(1, sizeof *l);
    struct raft_buffer buf;
    if (!l) {
        free(entry);
        return;
    }
    if (entry_buf(entry, elen, &buf) < 0) {
        free(l);
        return;
    }
    l->rb = rb;
    l->next = rb->lreqs;
    if (rb->lreqs) rb->lreqs->prev = l;
    rb->lreqs = l;
    l->u.apply.data = l;
    if (raft_apply(&rb->raft, &l->u.apply, &buf, 1, purge_done_cb) != 0) {
        raft_free(buf.base);
        lreq_free(l);
        return;
    }
    l->in_raft = true;
    rb->purge_busy = true;
}

/* ---- submitting client operations ---- */

static int submit(struct rb *rb, int op, struct pk *k, sm_cb cb, void *arg)
{
    if (rb->closing) {
        msgpack_sbuffer_destroy(&k->sb);
        return SM_ECLOSED;
    }
    struct rop *o = calloc(1, sizeof *o);
    if (!o) {
        msgpack_sbuffer_destroy(&k->sb);
        return SM_ENOMEM;
    }
    o->rb = rb;
    o->cb = cb;
    o->arg = arg;
    o->op = op;
    o->cmd = (uint8_t *)k->sb.data;
    o->cmdlen = k->sb.size;
    o->deadline = sm_mono_ms() + rb->timeout_ms;
    o->state = R_WAIT;
    o->next = rb->ops;
    if (rb->ops) rb->ops->prev = o;
    rb->ops = o;
    /* Never complete from inside the caller's call: the first attempt runs
     * from the loop. */
    schedule(rb);
    return 0;
}

/* A stale read straight from the local FSM (raft.linearizable=false). */
static void local_read(struct rb *rb, struct rop *o)
{
    void *rep;
    size_t len;
    int rc = reply_get(rb, o->cmd, o->cmdlen, &rep, &len);
    if (rc < 0) {
        rop_fail(o, rc, "cannot read");
        return;
    }
    rop_reply(o, rep, len);
    free(rep);
}

static int rb_get_multi(struct sm_backend *b, const char *const *keys, size_t n, sm_cb cb,
                        void *arg)
{
    struct rb *rb = (struct rb *)b;
    struct pk k;
    pk_init(&k);
    int bad = msgpack_pack_array(&k.p, 2) | msgpack_pack_uint8(&k.p, SMR_OP_GET) |
              msgpack_pack_array(&k.p, n);
    for (size_t i = 0; i < n; i++) bad |= pk_str(&k, keys[i]);
    if (bad) {
        msgpack_sbuffer_destroy(&k.sb);
        return SM_ENOMEM;
    }
    int rc = submit(rb, SMR_OP_GET, &k, cb, arg);
    if (rc == 0 && !rb->linearizable) rb->ops->state = R_STALE; /* served by the kick */
    return rc;
}

static int rb_set_multi(struct sm_backend *b, const struct sm_kv *items, size_t n, sm_cb cb,
                        void *arg)
{
    struct pk k;
    pk_init(&k);
    int bad = msgpack_pack_array(&k.p, 2) | msgpack_pack_uint8(&k.p, SMR_OP_SET) |
              msgpack_pack_array(&k.p, n);
    for (size_t i = 0; i < n; i++) {
        bad |= msgpack_pack_array(&k.p, 3);
        bad |= pk_str(&k, items[i].key);
        bad |= msgpack_pack_bin_with_body(&k.p, items[i].value, items[i].value_len);
        bad |= msgpack_pack_uint64(&k.p, items[i].ttl_ms);
    }
    if (bad) {
        msgpack_sbuffer_destroy(&k.sb);
        return SM_ENOMEM;
    }
    return submit((struct rb *)b, SMR_OP_SET, &k, cb, arg);
}

static int rb_del(struct sm_backend *b, const char *key, sm_cb cb, void *arg)
{
    struct pk k;
    pk_init(&k);
    if (msgpack_pack_array(&k.p, 2) | msgpack_pack_uint8(&k.p, SMR_OP_DEL) | pk_str(&k, key)) {
        msgpack_sbuffer_destroy(&k.sb);
        return SM_ENOMEM;
    }
    return submit((struct rb *)b, SMR_OP_DEL, &k, cb, arg);
}

static int rb_ping(struct sm_backend *b, sm_cb cb, void *arg)
{
    struct pk k;
    pk_init(&k);
    if (msgpack_pack_array(&k.p, 1) | msgpack_pack_uint8(&k.p, SMR_OP_PING)) {
        msgpack_sbuffer_destroy(&k.sb);
        return SM_ENOMEM;
    }
    return submit((struct rb *)b, SMR_OP_PING, &k, cb, arg);
}

static int lock_cmd(struct sm_backend *b, int op, const char *name, const char *token,
                    uint64_t ttl_ms, sm_cb cb, void *arg)
{
    char tok[SMR_TOKEN_LEN + 1];
    if (op == SMR_OP_LOCK) {
        uint8_t raw[SMR_TOKEN_LEN / 2];
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(tok, sizeof tok, raw, sizeof raw);
        token = tok;
    } else if (strlen(token) != SMR_TOKEN_LEN) {
        return sm_store_seterr(b->store, SM_ENOTOWNER, "not a token of this lock backend");
    }
    struct pk k;
    pk_init(&k);
    int bad = msgpack_pack_array(&k.p, op == SMR_OP_UNLOCK ? 3 : 4) |
              msgpack_pack_uint8(&k.p, (uint8_t)op) | pk_str(&k, name) | pk_str(&k, token);
    if (op != SMR_OP_UNLOCK) bad |= msgpack_pack_uint64(&k.p, ttl_ms);
    if (bad) {
        msgpack_sbuffer_destroy(&k.sb);
        return SM_ENOMEM;
    }
    return submit((struct rb *)b, op, &k, cb, arg);
}

static int rb_lock_acquire(struct sm_backend *b, const char *name, uint64_t ttl_ms, sm_cb cb,
                           void *arg)
{
    return lock_cmd(b, SMR_OP_LOCK, name, NULL, ttl_ms, cb, arg);
}

static int rb_lock_renew(struct sm_backend *b, const char *name, const char *token, uint64_t ttl_ms,
                         sm_cb cb, void *arg)
{
    return lock_cmd(b, SMR_OP_RENEW, name, token, ttl_ms, cb, arg);
}

static int rb_lock_release(struct sm_backend *b, const char *name, const char *token, sm_cb cb,
                           void *arg)
{
    return lock_cmd(b, SMR_OP_UNLOCK, name, token, 1, cb, arg);
}

static int rb_get_now(struct sm_backend *b, const char *key, struct sm_entry *out)
{
    struct rb *rb = (struct rb *)b;
    const struct smr_kv *e = smr_fsm_get(&rb->fsm, key, (int64_t)sm_wall_ms());
    if (!e) return SM_ENOTFOUND;
    *out = (struct sm_entry){.key = e->key,
                             .value = e->value,
                             .value_len = e->value_len,
                             .version = e->version,
                             .time_ms = e->time_ms,
                             .expires_ms = e->expires_ms,
                             .origin = e->origin};
    return 0;
}

struct list_arg {
    sm_list_fn fn;
    void *arg;
};

static int list_tramp(const struct smr_kv *e, void *arg)
{
    struct list_arg *la = arg;
    struct sm_entry x = {.key = e->key,
                         .value = e->value,
                         .value_len = e->value_len,
                         .version = e->version,
                         .time_ms = e->time_ms,
                         .expires_ms = e->expires_ms,
                         .origin = e->origin};
    return la->fn(&x, la->arg);
}

static int rb_list(struct sm_backend *b, const char *prefix, sm_list_fn fn, void *arg)
{
    struct rb *rb = (struct rb *)b;
    struct list_arg la = {fn, arg};
    return smr_fsm_list(&rb->fsm, prefix, (int64_t)sm_wall_ms(), list_tramp, &la);
}

static int rb_connected(struct sm_backend *b)
{
    struct rb *rb = (struct rb *)b;
    raft_id lid;
    const char *a;
    raft_leader(&rb->raft, &lid, &a);
    return lid != 0;
}

/* ---- FSM glue ---- */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct rb *rb = fsm->data;
    /* raft applies entries in index order and bumps last_applied after each. */
    uint64_t index = raft_last_applied(&rb->raft) + 1;
    const struct smr_result *r = smr_fsm_apply(&rb->fsm, index, buf->base, buf->len);
    if (rb->applied_total) (*rb->applied_total)++;
    *result = (void *)r;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    struct rb *rb = fsm->data;
    void *data;
    size_t len;
    if (smr_fsm_snapshot(&rb->fsm, &data, &len) < 0) return RAFT_NOMEM;
    *bufs = raft_malloc(sizeof **bufs);
    void *copy = raft_malloc(len);
    if (!*bufs || !copy) {
        raft_free(*bufs);
        raft_free(copy);
        free(data);
        return RAFT_NOMEM;
    }
    memcpy(copy, data, len);
    free(data);
    (*bufs)[0].base = copy;
    (*bufs)[0].len = len;
    *n = 1;
    return 0;
}

struct diff_arg {
    struct rb *rb;
    const struct smr_fsm *other;
    bool added; /* true: report keys new or changed in the snapshot; false: keys gone */
};

static int diff_fn(const struct smr_kv *kv, void *arg)
{
    struct diff_arg *d = arg;
    const struct smr_kv *o = smr_fsm_get(d->other, kv->key, 0);
    struct sm_event ev = {.key = kv->key, .version = kv->version, .origin = kv->origin};
    if (d->added) {
        if (o && o->version == kv->version) return 0;
        ev.type = SM_EVENT_SET;
        ev.value = kv->value;
        ev.value_len = kv->value_len;
        ev.time_ms = kv->time_ms;
    } else {
        if (o) return 0;
        ev.type = SM_EVENT_DELETE;
        ev.time_ms = d->other->now_ms;
    }
    sm_store_emit(d->rb->st, &ev);
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct rb *rb = fsm->data;
    struct smr_fsm nf;
    if (smr_fsm_init(&nf) < 0) return RAFT_NOMEM;
    int rc = smr_fsm_restore(&nf, buf->base, buf->len);
    if (rc < 0) {
        smr_fsm_close(&nf);
        return rc == SM_ENOMEM ? RAFT_NOMEM : RAFT_MALFORMED;
    }
    raft_free(buf->base);
    /* A node that catches up by snapshot skips the entries the snapshot
     * covers: tell the watchers what changed, so every node's watchers see
     * every key's latest value. */
    struct diff_arg d = {rb, &rb->fsm, true};
    smr_fsm_list(&nf, "", 0, diff_fn, &d);
    d = (struct diff_arg){rb, &nf, false};
    smr_fsm_list(&rb->fsm, "", 0, diff_fn, &d);
    nf.emit = rb->fsm.emit;
    nf.emit_arg = rb->fsm.emit_arg;
    smr_fsm_close(&rb->fsm);
    rb->fsm = nf;
    return 0;
}

static void emit_cb(void *arg, enum sm_event_type type, const char *key, const void *value,
                    size_t value_len, uint64_t version, uint64_t time_ms, const char *origin)
{
    struct rb *rb = arg;
    struct sm_event ev = {.type = type,
                          .key = key,
                          .value = value,
                          .value_len = value_len,
                          .version = version,
                          .time_ms = time_ms,
                          .origin = origin};
    sm_store_emit(rb->st, &ev);
}

/* ---- options ---- */

static const char *const known_opts[] = {"raft.id",
                                         "raft.bind",
                                         "raft.advertise",
                                         "raft.peers",
                                         "raft.data_dir",
                                         "raft.election_timeout",
                                         "raft.heartbeat",
                                         "raft.snapshot_threshold",
                                         "raft.snapshot_trailing",
                                         "raft.linearizable",
                                         "raft.timeout",
                                         "raft.join",
                                         "raft.restore",
                                         "raft.ca",
                                         "raft.cert",
                                         "raft.key",
                                         "raft.insecure",
                                         "raft.heartbeat_timeout",
                                         NULL};

static int check_opt(const char *key, const char *value, void *arg)
{
    (void)value;
    for (size_t i = 0; known_opts[i]; i++)
        if (strcmp(key, known_opts[i]) == 0) return 0;
    *(const char **)arg = key;
    return 1;
}

static int parse_bool(const struct sm_config *cfg, const char *key, bool def, bool *out, char *err,
                      size_t errlen)
{
    const char *v = sm_cfg_str(cfg, key, NULL);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on")) {
        *out = true;
        return 0;
    }
    if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off")) {
        *out = false;
        return 0;
    }
    snprintf(err, errlen, "option %s: '%s' is not a boolean", key, v);
    return SM_ECONFIG;
}

/** Raft id of a node id: the number itself when numeric, else a hash. */
static uint64_t derive_id(const char *node)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(node, &end, 10);
    if (*node && !*end && !errno && v) return v;
    uint64_t h = XXH64(node, strlen(node), 0) & 0x7fffffffffffffffull;
    return h ? h : 1;
}

static int parse_peers(const char *s, struct raft_configuration *conf, raft_id self, bool *found,
                       char *err, size_t errlen)
{
    *found = false;
    char *dup = sm_strdup(s);
    if (!dup) return SM_ENOMEM;
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(dup, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        char *at = strpbrk(tok, "@=");
        char *end;
        unsigned long long id = at ? strtoull(tok, &end, 10) : 0;
        struct sockaddr_storage sa;
        if (!at || end != at || id == 0 || smt_parse_addr(at + 1, &sa) < 0) {
            snprintf(err, errlen, "option raft.peers: bad entry '%s' (expected ID=HOST:PORT)", tok);
            rc = SM_ECONFIG;
            break;
        }
        int rv = raft_configuration_add(conf, id, at + 1, RAFT_VOTER);
        if (rv != 0) {
            snprintf(err, errlen, "option raft.peers: entry '%s': %s", tok, raft_strerror(rv));
            rc = rv == RAFT_NOMEM ? SM_ENOMEM : SM_ECONFIG;
            break;
        }
        if (id == self) *found = true;
    }
    free(dup);
    return rc;
}

static bool dir_empty(const char *path)
{
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/metadata1", path);
    if (access(p, F_OK) == 0) return false;
    snprintf(p, sizeof p, "%s/metadata2", path);
    return access(p, F_OK) != 0;
}

static int prepare_dir(const char *dir, char *err, size_t errlen)
{
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        if (errno != ENOENT || mkdir(dir, 0700) != 0) {
            snprintf(err, errlen,
                     "raft.data_dir %s: cannot create it: %s (its parent directory must exist)",
                     dir, strerror(errno));
            return SM_EIO;
        }
    } else if (!S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "raft.data_dir %s: not a directory", dir);
        return SM_ECONFIG;
    } else if (sb.st_mode & 077) {
        /* Raft logs hold every value written: keep them private. */
        if (chmod(dir, 0700) != 0) {
            snprintf(err, errlen, "raft.data_dir %s: cannot restrict it to 0700: %s", dir,
                     strerror(errno));
            return SM_EIO;
        }
    }
    struct statfs fs;
    if (statfs(dir, &fs) == 0 && (unsigned long)fs.f_type == (unsigned long)TMPFS_MAGIC) {
        snprintf(err, errlen,
                 "raft.data_dir %s is on tmpfs: libraft's direct/async I/O does not work there "
                 "and the log would not survive a reboot; use a directory on a real disk",
                 dir);
        return SM_ECONFIG;
    }
    return 0;
}

static int load_restore(struct rb *rb, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "raft.restore %s: %s", path, strerror(errno));
        return SM_EIO;
    }
    char magic[32];
    size_t hl = strlen("statemesh-raft-backup-v1\n");
    if (fread(magic, 1, hl, f) != hl || memcmp(magic, "statemesh-raft-backup-v1\n", hl) != 0) {
        fclose(f);
        snprintf(err, errlen, "raft.restore %s: not a statemesh raft backup file", path);
        return SM_ECONFIG;
    }
    fseek(f, 0, SEEK_END);
    long total = ftell(f);
    fseek(f, (long)hl, SEEK_SET);
    size_t n = total > (long)hl ? (size_t)(total - (long)hl) : 0;
    void *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return SM_ENOMEM;
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    int rc = got == n ? smr_fsm_restore(&rb->fsm, buf, n) : SM_EIO;
    free(buf);
    if (rc < 0) {
        snprintf(err, errlen, "raft.restore %s: corrupt backup file", path);
        return rc;
    }
    /* Versions and fences must keep increasing past everything in the backup. */
    rb->fsm.index_base += rb->fsm.last_index;
    rb->fsm.last_index = 0;
    return 0;
}

/* ---- open / close ---- */

static void rb_close(struct sm_backend *b);

static void raft_closed_cb(struct raft *r)
{
    struct rb *rb = r->data;
    rb->raft_closed = true;
}

static double g_state(void *arg)
{
    struct rb *rb = arg;
    return raft_state(&rb->raft);
}

static double g_term(void *arg)
{
    return (double)((struct rb *)arg)->raft.current_term;
}

static double g_applied(void *arg)
{
    return (double)raft_last_applied(&((struct rb *)arg)->raft);
}

/* Options that rb_open needs beyond what it stores in rb. */
struct raft_opts {
    const char *bind, *peers;
    uint64_t et, hb, snap, trail;
    bool join, insecure, found;
};

/* raft.id, raft.bind, raft.advertise, raft.data_dir. */
static int parse_id_dirs(struct rb *rb, const struct sm_config *cfg, struct raft_opts *o,
                         char *err, size_t errlen)
{
    const char *ids = sm_cfg_str(cfg, "raft.id", NULL);
    if (ids) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(ids, &end, 10);
        if (!*ids || *end || errno || v == 0) {
            snprintf(err, errlen, "option raft.id: '%s' is not a positive integer", ids);
            return SM_ECONFIG;
        }
        rb->id = v;
    } else {
        rb->id = derive_id(sm_store_node_id(rb->st));
    }
    o->bind = sm_cfg_str(cfg, "raft.bind", NULL);
    if (!o->bind) {
        snprintf(err, errlen, "option raft.bind is required (HOST:PORT for raft traffic)");
        return SM_ECONFIG;
    }
    const char *adv = sm_cfg_str(cfg, "raft.advertise", o->bind);
    snprintf(rb->address, sizeof rb->address, "%s", adv);
    const char *dd = sm_cfg_str(cfg, "raft.data_dir", NULL);
    const char *shared = sm_cfg_str(cfg, "data_dir", NULL);
    if (dd)
        snprintf(rb->data_dir, sizeof rb->data_dir, "%s", dd);
    else if (shared)
        snprintf(rb->data_dir, sizeof rb->data_dir, "%s/raft", shared);
    else {
        snprintf(err, errlen, "option raft.data_dir (or data_dir) is required");
        return SM_ECONFIG;
    }
    return 0;
}

/* Timeouts, snapshot sizes, read mode. */
static int parse_timing(struct rb *rb, const struct sm_config *cfg, struct raft_opts *o,
                        char *err, size_t errlen)
{
    int rc;
    if ((rc = sm_cfg_ms(cfg, "raft.election_timeout", 1000, &o->et, err, errlen)) < 0 ||
        (rc = sm_cfg_ms(cfg, "raft.heartbeat", 100, &o->hb, err, errlen)) < 0 ||
        (rc = sm_cfg_ms(cfg, "raft.heartbeat_timeout", o->hb, &o->hb, err, errlen)) < 0 ||
        (rc = sm_cfg_u64(cfg, "raft.snapshot_threshold", 1024, &o->snap, err, errlen)) < 0 ||
        (rc = sm_cfg_u64(cfg, "raft.snapshot_trailing", 128, &o->trail, err, errlen)) < 0 ||
        (rc = sm_cfg_ms(cfg, "raft.timeout", 5000, &rb->timeout_ms, err, errlen)) < 0 ||
        (rc = parse_bool(cfg, "raft.linearizable", true, &rb->linearizable, err, errlen)) < 0)
        return rc;
    if (o->et < 10 || o->et > 600000 || o->hb == 0 || o->hb >= o->et) {
        snprintf(err, errlen,
                 "options raft.election_timeout/raft.heartbeat: need 0 < heartbeat < "
                 "election_timeout (got %llu/%llu ms)",
                 (unsigned long long)o->et, (unsigned long long)o->hb);
        return SM_ECONFIG;
    }
    if (o->snap == 0 || o->snap > UINT_MAX || o->trail > UINT_MAX) {
        snprintf(err, errlen, "option raft.snapshot_threshold must be 1..%u", UINT_MAX);
        return SM_ECONFIG;
    }
    return 0;
}

/* raft.join, raft.insecure, raft.peers (into @p conf). */
static int parse_membership(struct rb *rb, const struct sm_config *cfg, struct raft_opts *o,
                            struct raft_configuration *conf, char *err, size_t errlen)
{
    int rc;
    if ((rc = parse_bool(cfg, "raft.join", false, &o->join, err, errlen)) < 0 ||
        (rc = parse_bool(cfg, "raft.insecure", false, &o->insecure, err, errlen)) < 0)
        return rc;
    o->peers = sm_cfg_str(cfg, "raft.peers", NULL);
    o->found = false;
    if (o->peers && (rc = parse_peers(o->peers, conf, rb->id, &o->found, err, errlen)) < 0)
        return rc;
    if (!o->peers && !o->join) {
        snprintf(err, errlen,
                 "option raft.peers is required (ID=HOST:PORT,...), or raft.join=true for a "
                 "node that an existing cluster will add");
        return SM_ECONFIG;
    }
    if (o->peers && !o->found && !o->join) {
        snprintf(err, errlen,
                 "raft id %llu (node '%s') is not in raft.peers '%s'; set raft.id to one of "
                 "them, or raft.join=true to start a node that the cluster adds later",
                 (unsigned long long)rb->id, sm_store_node_id(rb->st), o->peers);
        return SM_ECONFIG;
    }
    return 0;
}

/* The CA key and this node's certified identity (the mesh identity by
 * default: one certificate per node). Nothing to load when insecure. */
static int load_identity(const struct sm_config *cfg, bool insecure, uint8_t *ca_pk,
                         struct smc_identity *ident, char *err, size_t errlen)
{
    const char *ca = sm_cfg_str(cfg, "raft.ca", sm_cfg_str(cfg, "mesh.ca", NULL)),
               *cert = sm_cfg_str(cfg, "raft.cert", sm_cfg_str(cfg, "mesh.cert", NULL)),
               *key = sm_cfg_str(cfg, "raft.key", sm_cfg_str(cfg, "mesh.key", NULL));
    if (insecure) return 0;
    if (!ca || !cert || !key) {
        snprintf(err, errlen,
                 "raft traffic is authenticated: set raft.ca (CA dir or ca.pub), raft.cert "
                 "and raft.key (or mesh.ca/mesh.cert/mesh.key; from `statemesh cert "
                 "issue`), or raft.insecure=true for tests");
        return SM_ECONFIG;
    }
    int rc;
    if ((rc = smc_ca_load_pub(ca, ca_pk, err, errlen)) < 0 ||
        (rc = smc_identity_load(ident, cert, key, err, errlen)) < 0)
        return rc;
    enum smc_reason why;
    if (smc_cert_verify(&ident->cert, ca_pk, (int64_t)sm_wall_ms(), NULL, &why) < 0) {
        snprintf(err, errlen, "raft.cert %s: %s", cert, smc_reason_str(why));
        return SM_EAUTH;
    }
    return 0;
}

/* The data dir (0700), and a backup loaded into it when raft.restore asks. */
static int prepare_data(struct rb *rb, const struct sm_config *cfg, bool *fresh, char *err,
                        size_t errlen)
{
    int rc;
    if ((rc = prepare_dir(rb->data_dir, err, errlen)) < 0) return rc;
    const char *restore = sm_cfg_str(cfg, "raft.restore", NULL);
    *fresh = dir_empty(rb->data_dir);
    if (!restore) return 0;
    if (!*fresh) {
        snprintf(err, errlen, "raft.restore needs an empty raft.data_dir (%s holds raft state)",
                 rb->data_dir);
        return SM_ECONFIG;
    }
    return load_restore(rb, restore, err, errlen);
}

/* libuv loop, our transport, libraft's disk I/O. */
static int init_io(struct rb *rb, const struct raft_opts *o, const uint8_t *ca_pk,
                   const struct smc_identity *ident, char *err, size_t errlen)
{
    if (uv_loop_init(&rb->uv) != 0) return SM_ENOMEM;
    rb->uv_inited = true;
    struct smt_config tc = {.bind = o->bind,
                            .insecure = o->insecure,
                            .ca_pk = ca_pk,
                            .self = ident,
                            .hooks = {.arg = rb,
                                      .fwd_open = hook_fwd_open,
                                      .fwd_msg = hook_fwd_msg,
                                      .fwd_close = hook_fwd_close,
                                      .log = hook_log}};
    int rc;
    if ((rc = smt_init(&rb->tr, &rb->uv, &tc, err, errlen)) < 0) return rc;
    rb->tr_inited = true;
    int rv = raft_uv_init(&rb->io, &rb->uv, rb->data_dir, &rb->tr);
    if (rv != 0) {
        snprintf(err, errlen, "raft.data_dir %s: %s", rb->data_dir, raft_strerror(rv));
        return SM_EIO;
    }
    rb->io_inited = true;
    return 0;
}

/* libraft itself: init, tuning, bootstrap on a fresh dir, start. */
static int start_raft(struct rb *rb, const struct raft_opts *o,
                      const struct raft_configuration *conf, bool fresh, char *err,
                      size_t errlen)
{
    rb->rfsm.version = 2;
    rb->rfsm.data = rb;
    rb->rfsm.apply = fsm_apply;
    rb->rfsm.snapshot = fsm_snapshot;
    rb->rfsm.restore = fsm_restore;
    int rv = raft_init(&rb->raft, &rb->io, &rb->rfsm, rb->id, rb->address);
    if (rv != 0) {
        snprintf(err, errlen,
                 "raft.data_dir %s: cannot start from it (%s); it is damaged or from another "
                 "cluster: restore it from a backup or move it away",
                 rb->data_dir, raft_errmsg(&rb->raft));
        return SM_EIO;
    }
    rb->raft_inited = true;
    rb->raft.data = rb;
    raft_set_election_timeout(&rb->raft, (unsigned)o->et);
    raft_set_heartbeat_timeout(&rb->raft, (unsigned)o->hb);
    raft_set_snapshot_threshold(&rb->raft, (unsigned)o->snap);
    raft_set_snapshot_trailing(&rb->raft, (unsigned)o->trail);
    raft_set_pre_vote(&rb->raft, true);
    raft_uv_set_connect_retry_delay(&rb->io, (unsigned)(o->et / 4 ? o->et / 4 : 1));
    if (o->peers && o->found && fresh) {
        rv = raft_bootstrap(&rb->raft, conf);
        if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
            snprintf(err, errlen, "raft.data_dir %s: cannot bootstrap: %s", rb->data_dir,
                     raft_errmsg(&rb->raft)[0] ? raft_errmsg(&rb->raft) : raft_strerror(rv));
            return SM_EIO;
        }
    }
    rv = raft_start(&rb->raft);
    if (rv != 0) {
        snprintf(err, errlen,
                 "raft.data_dir %s: cannot start from it (%s: %s); it is damaged or from "
                 "another cluster: restore it from a backup or move it away",
                 rb->data_dir, raft_strerror(rv), raft_errmsg(&rb->raft));
        return SM_EIO;
    }
    rb->started = true;
    return 0;
}

/* libuv driven from libev (see "Event loop" in docs/raft.md), and our timers. */
static void watch_loop(struct rb *rb)
{
    ev_io_init(&rb->uvio, uvio_cb, uv_backend_fd(&rb->uv), EV_READ);
    rb->uvio.data = rb;
    ev_io_start(rb->ev, &rb->uvio);
    ev_init(&rb->uvtimer, uvtimer_cb);
    rb->uvtimer.data = rb;
    ev_prepare_init(&rb->prep, prep_cb);
    rb->prep.data = rb;
    ev_prepare_start(rb->ev, &rb->prep);
    ev_unref(rb->ev);
    ev_timer_init(&rb->tick, tick_cb, TICK_S, TICK_S);
    rb->tick.data = rb;
    ev_timer_start(rb->ev, &rb->tick);
    ev_timer_init(&rb->kick, kick_cb, 0., 0.);
    rb->kick.data = rb;
}

static void register_metrics(struct rb *rb, struct sm_metrics *m)
{
    sm_metrics_gauge_fn(m, "statemesh_raft_state",
                        "Raft state (0 unavailable, 1 follower, 2 candidate, 3 leader)", "",
                        g_state, rb);
    sm_metrics_gauge_fn(m, "statemesh_raft_term", "Current raft term", "", g_term, rb);
    sm_metrics_gauge_fn(m, "statemesh_raft_applied_index", "Last applied raft index", "", g_applied,
                        rb);
    rb->leader_changes = sm_metrics_counter(m, "statemesh_raft_leader_changes_total",
                                            "Times this node became or stopped being leader", "");
    rb->applied_total =
        sm_metrics_counter(m, "statemesh_raft_applied_total", "Raft entries applied", "");
    rb->fwd_total = sm_metrics_counter(m, "statemesh_raft_forwarded_total",
                                       "Requests forwarded to this node by followers", "");
}

static int rb_open(struct sm_store *st, const struct sm_config *cfg, struct sm_backend **out,
                   char *err, size_t errlen)
{
    const char *bad = NULL;
    if (sm_cfg_foreach(cfg, "raft.", check_opt, &bad)) {
        snprintf(err, errlen, "unknown option '%s'", bad);
        return SM_ECONFIG;
    }
    struct rb *rb = calloc(1, sizeof *rb);
    if (!rb) return SM_ENOMEM;
    int rc = 0;
    struct smc_identity ident;
    memset(&ident, 0, sizeof ident);
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    rb->st = st;
    rb->base.store = st;
    rb->ev = sm_store_loop(st);
    if (smr_fsm_init(&rb->fsm) < 0) {
        free(rb);
        return SM_ENOMEM;
    }
    rb->fsm.emit = emit_cb;
    rb->fsm.emit_arg = rb;
    struct raft_opts o;
    memset(&o, 0, sizeof o);
    uint8_t ca_pk[SMC_PK_LEN];
    bool fresh;
    if ((rc = parse_id_dirs(rb, cfg, &o, err, errlen)) < 0 ||
        (rc = parse_timing(rb, cfg, &o, err, errlen)) < 0 ||
        (rc = parse_membership(rb, cfg, &o, &conf, err, errlen)) < 0 ||
        (rc = load_identity(cfg, o.insecure, ca_pk, &ident, err, errlen)) < 0 ||
        (rc = prepare_data(rb, cfg, &fresh, err, errlen)) < 0 ||
        (rc = init_io(rb, &o, ca_pk, &ident, err, errlen)) < 0 ||
        (rc = start_raft(rb, &o, &conf, fresh, err, errlen)) < 0)
        goto fail;
    raft_configuration_close(&conf);
    smc_identity_wipe(&ident);
    watch_loop(rb);
    register_metrics(rb, sm_store_metrics(st));
    rb->next_all = all_rbs;
    all_rbs = rb;
    *out = &rb->base;
    return 0;
fail:
    raft_configuration_close(&conf);
    smc_identity_wipe(&ident);
    rb_close(&rb->base);
    return rc;
}

static void rb_close(struct sm_backend *b)
{
    struct rb *rb = (struct rb *)b;
    rb->closing = true;
    for (struct rb **p = &all_rbs; *p; p = &(*p)->next_all)
        if (*p == rb) {
            *p = rb->next_all;
            break;
        }
    while (rb->ops) rop_fail(rb->ops, SM_ECLOSED, "store closed");
    if (rb->fwd) {
        struct fconn *f = rb->fwd;
        struct smt_conn *c = f->c;
        fwd_drop(rb);
        smt_conn_set_user(c, NULL);
        free(f);
        smt_conn_close(c);
    }
    if (rb->raft_inited) {
        raft_close(&rb->raft, raft_closed_cb);
        for (int i = 0; i < 1000 && !rb->raft_closed; i++)
            if (uv_run(&rb->uv, UV_RUN_ONCE) == 0 && !rb->raft_closed) break;
    }
    if (rb->io_inited) raft_uv_close(&rb->io);
    if (rb->uv_inited) {
        /* Let every handle finish closing; then close whatever is left. */
        uv_run(&rb->uv, UV_RUN_NOWAIT);
        for (int i = 0; i < 100 && uv_loop_close(&rb->uv) == UV_EBUSY; i++)
            uv_run(&rb->uv, UV_RUN_ONCE);
    }
    if (rb->tr_inited) smt_cleanup(&rb->tr);
    /* Leader-side requests raft still held were completed by raft_close. */
    while (rb->lreqs) lreq_free(rb->lreqs);
    while (rb->srv) {
        struct fconn *f = rb->srv;
        rb->srv = f->next;
        free(f);
    }
    if (rb->ev) {
        if (ev_is_active(&rb->prep)) {
            ev_ref(rb->ev);
            ev_prepare_stop(rb->ev, &rb->prep);
        }
        ev_io_stop(rb->ev, &rb->uvio);
        ev_timer_stop(rb->ev, &rb->uvtimer);
        ev_timer_stop(rb->ev, &rb->tick);
        ev_timer_stop(rb->ev, &rb->kick);
    }
    smr_fsm_close(&rb->fsm);
    free(rb);
}

const struct sm_backend_vt sm_backend_raft = {
    .name = "raft",
    .open = rb_open,
    .close = rb_close,
    .get_now = rb_get_now,
    .list = rb_list,
    .get_multi = rb_get_multi,
    .set_multi = rb_set_multi,
    .del = rb_del,
    .ping = rb_ping,
    .lock_acquire = rb_lock_acquire,
    .lock_renew = rb_lock_renew,
    .lock_release = rb_lock_release,
    .connected = rb_connected,
};

/* ---- admin ---- */

int sm_raft_status(struct sm_store *store, struct sm_raft_status *out)
{
    struct rb *rb = find_rb(store);
    if (!rb) return sm_store_seterr(store, SM_ENOTSUP, "this store has no raft backend");
    memset(out, 0, sizeof *out);
    out->id = rb->id;
    snprintf(out->address, sizeof out->address, "%s", rb->address);
    static const char *const names[] = {"unavailable", "follower", "candidate", "leader"};
    int s = raft_state(&rb->raft);
    out->state = s >= 0 && s <= 3 ? names[s] : "unknown";
    raft_id lid;
    const char *la;
    raft_leader(&rb->raft, &lid, &la);
    out->leader_id = lid;
    snprintf(out->leader_address, sizeof out->leader_address, "%s", la ? la : "");
    out->term = rb->raft.current_term;
    out->last_index = raft_last_index(&rb->raft);
    out->commit_index = rb->raft.commit_index;
    out->applied_index = raft_last_applied(&rb->raft);
    out->n_servers = rb->raft.configuration.n;
    for (size_t i = 0; i < out->n_servers && i < 16; i++) {
        const struct raft_server *sv = &rb->raft.configuration.servers[i];
        out->servers[i].id = sv->id;
        snprintf(out->servers[i].address, sizeof out->servers[i].address, "%s", sv->address);
        out->servers[i].voter = sv->role == RAFT_VOTER;
    }
    out->rejected_peers = smt_rejected(&rb->tr);
    return 0;
}

static int admin_submit(struct sm_store *store, int op, uint64_t id, const char *address, sm_cb cb,
                        void *arg)
{
    struct rb *rb = find_rb(store);
    if (!rb) return sm_store_seterr(store, SM_ENOTSUP, "this store has no raft backend");
    if (!cb) return sm_store_seterr(store, SM_EINVAL, "a completion callback is required");
    if (op != SMR_OP_TRANSFER && id == 0)
        return sm_store_seterr(store, SM_EINVAL, "raft id must be positive");
    struct sockaddr_storage sa;
    if (op == SMR_OP_ADD && (!address || smt_parse_addr(address, &sa) < 0))
        return sm_store_seterr(store, SM_EINVAL, "address must be HOST:PORT");
    struct pk k;
    pk_init(&k);
    int bad = msgpack_pack_array(&k.p, op == SMR_OP_ADD ? 3 : 2) |
              msgpack_pack_uint8(&k.p, (uint8_t)op) | msgpack_pack_uint64(&k.p, id);
    if (op == SMR_OP_ADD) bad |= pk_str(&k, address);
    if (bad) {
        msgpack_sbuffer_destroy(&k.sb);
        return SM_ENOMEM;
    }
    return submit(rb, op, &k, cb, arg);
}

int sm_raft_add(struct sm_store *store, uint64_t id, const char *address, sm_cb cb, void *arg)
{
    return admin_submit(store, SMR_OP_ADD, id, address, cb, arg);
}

int sm_raft_remove(struct sm_store *store, uint64_t id, sm_cb cb, void *arg)
{
    return admin_submit(store, SMR_OP_REMOVE, id, NULL, cb, arg);
}

int sm_raft_transfer(struct sm_store *store, uint64_t id, sm_cb cb, void *arg)
{
    return admin_submit(store, SMR_OP_TRANSFER, id, NULL, cb, arg);
}

int sm_raft_backup(struct sm_store *store, const char *path, char *err, size_t errlen)
{
    struct rb *rb = find_rb(store);
    if (!rb) {
        snprintf(err, errlen, "this store has no raft backend");
        return SM_ENOTSUP;
    }
    void *data;
    size_t len;
    if (smr_fsm_snapshot(&rb->fsm, &data, &len) < 0) {
        snprintf(err, errlen, "out of memory");
        return SM_ENOMEM;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = 0;
    if (fd < 0) {
        snprintf(err, errlen, "backup %s: %s", tmp, strerror(errno));
        free(data);
        return SM_EIO;
    }
    static const char hdr[] = "statemesh-raft-backup-v1\n";
    if (write(fd, hdr, sizeof hdr - 1) != (ssize_t)(sizeof hdr - 1) ||
        write(fd, data, len) != (ssize_t)len || fsync(fd) != 0) {
        snprintf(err, errlen, "backup %s: %s", tmp, strerror(errno));
        rc = SM_EIO;
    }
    close(fd);
    free(data);
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errlen, "backup %s: %s", path, strerror(errno));
        rc = SM_EIO;
    }
    if (rc < 0) unlink(tmp);
    return rc;
}
