/* backend_redis.c: the redis backend: hiredis (0.14) async on the store's libev
 * loop, pub/sub change events for watch, pipelined batches, atomic fenced locks.
 *
 * Design in brief (docs/redis.md has the long form):
 *
 * - Two connections per backend. "cmd" carries every operation; "sub" is
 *   SUBSCRIBEd to "<prefix>events" (change messages every writer PUBLISHes,
 *   see redis_event.h) and to "__keyevent@<db>__:expired" (keyspace
 *   notifications, for TTL expiry). Every event, this node's own writes
 *   included, reaches watchers through the subscription, so all nodes see the
 *   same stream in the order Redis saw it.
 * - Operations are pooled slots ("rops"). A rop may span several commands
 *   (SET + PUBLISH, MULTI … EXEC); it counts the hiredis callbacks it still
 *   waits for and completes its caller exactly once: on its last reply, on a
 *   timeout, or when hiredis frees the connection and calls every pending
 *   callback with a NULL reply.
 * - hiredis 0.14 has no timeouts on async contexts: a connect timer covers
 *   connect + handshake, and one command timer per backend watches the oldest
 *   command in flight (replies come back in order, so the oldest is the first
 *   to expire). A command timeout fails the expired operations with
 *   SM_ETIMEOUT and resets the connection (a reply may still be on its way and
 *   would otherwise be matched to the wrong command).
 * - A dropped connection is re-established after an exponential backoff with
 *   jitter (an ev_timer; nothing blocks). While the command connection is down
 *   operations are refused at once with SM_EUNAVAILABLE (SM_EAUTH when the
 *   server refused our credentials) and a message naming the cause; during the
 *   very first connect they queue behind the handshake instead.
 * - Hostnames are resolved once, when the store opens; connects use the
 *   numeric address, so getaddrinfo() never blocks the loop afterwards.
 */
#include "config.h"

#include "backend.h"
#include "metrics.h"
#include "redis_event.h"

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>

#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define DEFAULT_ADDR       "127.0.0.1:6379"
#define DEFAULT_PREFIX     "statemesh:"
#define DEFAULT_CONNECT_MS 2000
#define DEFAULT_COMMAND_MS 2000
#define DEFAULT_RMIN_MS    100
#define DEFAULT_RMAX_MS    5000
#define MAX_DB             100000
#define MAX_PREFIX         128
#define ROP_CHUNK          256
#define TOKEN_BYTES        16 /* lock owner token: 128 random bits, hex */
#define STACK_ARGS         16

/* Namespaces under the prefix that belong to locks, not to data. */
#define LOCK_NS  "lock:"
#define FENCE_NS "fence:"
#define META_NS  "lockmeta:" /* the lock epoch and the recovery wait */
#define EPOCH_LEN 40         /* a redis run id: 40 hex digits */

/* ---- Lua scripts (EVAL: Redis caches the compiled body by its SHA1) ---- */

/* KEYS[1] key, ARGV[1] channel, ARGV[2] event: delete and announce it, but
 * only when something was deleted (deleting a missing key changes nothing). */
static const char del_lua[] = "local n = redis.call('DEL', KEYS[1]) "
                              "if n == 1 then redis.call('PUBLISH', ARGV[1], ARGV[2]) end "
                              "return n";

/* Every lock script shares this prelude and these arguments:
 *   KEYS[1] lock, KEYS[2] fence counter, KEYS[3] epoch hash, KEYS[4] recovery
 *   wait key; ARGV[1] token, ARGV[2] ttl ms (0 for release), ARGV[3] the epoch
 *   this client saw last ('' none), ARGV[4] the latest lease end it saw
 *   (server ms), ARGV[5] '1' to wait out old leases after a loss, '0' not to,
 *   ARGV[6] the run id of the server this connection reached ('' not known
 *   yet: the script asks INFO, which formats a kilobyte of text per call, so
 *   the connection's handshake learns it once instead). Where INFO is
 *   forbidden (some managed services) the id is '?': a restart is then seen
 *   only when it lost the epoch hash.
 *
 * The epoch is the run id of the redis process that recorded it, with the
 * latest lease end granted under it ('until', server clock). A script that
 * finds another run id (or none: the data is gone) knows the server restarted
 * or lost its data since: leases granted before may still run although their
 * keys are gone, so no grant happens until the latest lease end known (kept
 * in the hash if it survived, or brought by this client) has passed. A client
 * that saw an older epoch brings its own 'until', in case a client that never
 * saw the old epoch recorded the new one first.
 *
 * Fences: INCR of a counter that never expires, raised to a floor of the
 * server's clock in ms * 1024 whenever it is below. A counter lost with the
 * data (or rolled back by a restore) restarts above every fence handed out
 * before, as long as the server clock does not go back and no name sees more
 * than 1024 grants in a millisecond. Numbers stay below 2^53 (Lua's doubles)
 * until the year 2248. Arguments are formatted with %d, never passed as Lua
 * numbers (which redis would format in floating point). */
#define LOCK_PRELUDE                                                                              \
    "redis.replicate_commands() "                                                                 \
    "local function s(n) return string.format('%d', n) end "                                      \
    "local t = redis.call('TIME') "                                                               \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "                      \
    "local run = ARGV[6] "                                                                        \
    "if run == '' then "                                                                          \
    "  local i = redis.pcall('INFO', 'server') "                                                  \
    "  run = type(i) == 'string' and string.match(i, 'run_id:(%x+)') or '?' "                     \
    "end "                                                                                        \
    "local ep = redis.call('HMGET', KEYS[3], 'id', 'until') "                                     \
    "local untl = tonumber(ep[2] or '0') "                                                        \
    "local known = tonumber(ARGV[4]) or 0 "                                                       \
    "local wait = 0 "                                                                             \
    "if ep[1] ~= run then "                                                                       \
    "  if known > untl then untl = known end "                                                    \
    "  wait = untl - now "                                                                        \
    "  redis.call('HSET', KEYS[3], 'id', run, 'until', s(untl)) "                                 \
    "elseif ARGV[3] ~= '' and ARGV[3] ~= run then "                                               \
    "  wait = known - now "                                                                       \
    "end "                                                                                        \
    "if ARGV[5] == '1' and wait > 0 and redis.call('PTTL', KEYS[4]) < wait then "                 \
    "  redis.call('SET', KEYS[4], '1', 'PX', s(wait)) "                                           \
    "end "                                                                                        \
    "local function lease(ttl) "                                                                  \
    "  if now + ttl > untl then untl = now + ttl; redis.call('HSET', KEYS[3], 'until', s(untl)) " \
    "  end "                                                                                      \
    "end "

/* Acquire: {1, fence, epoch, until} granted; {0, pttl, ...} held by another
 * owner; {2, wait ms, ...} waiting out leases from before a restart. The
 * grant and its fencing token are taken in one atomic step, so no grant can
 * exist without a fence or carry another grant's fence. */
static const char acquire_lua[] =
    LOCK_PRELUDE "if ARGV[5] == '1' then "
    "  local w = redis.call('PTTL', KEYS[4]) "
    "  if w > 0 then return {2, w, run, s(untl)} end "
    "end "
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
    "  lease(tonumber(ARGV[2])) "
    "  local f = redis.call('INCR', KEYS[2]) "
    "  if f < now * 1024 then f = now * 1024; redis.call('SET', KEYS[2], s(f)) end "
    "  return {1, f, run, s(untl)} "
    "end "
    "return {0, redis.call('PTTL', KEYS[1]), run, s(untl)}";

/* Renew: compare-and-extend; returns the fence of the grant being renewed. */
static const char renew_lua[] = LOCK_PRELUDE "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                             "  redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
                                             "  lease(tonumber(ARGV[2])) "
                                             "  return {1, tonumber(redis.call('GET', KEYS[2]) "
                                             "or '0'), run, s(untl)} "
                                             "end "
                                             "return {0, 0, run, s(untl)}";

/* Release: compare-and-delete. */
static const char release_lua[] = LOCK_PRELUDE "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                               "  redis.call('DEL', KEYS[1]) "
                                               "  return {1, tonumber(redis.call('GET', KEYS[2]) "
                                               "or '0'), run, s(untl)} "
                                               "end "
                                               "return {0, 0, run, s(untl)}";

/* Run by a client that knew an epoch, right after it reconnects and before
 * any of its operations: it brings the news of a restart (and its 'until')
 * before a client that never saw the old epoch can grant anything. */
static const char check_lua[] = LOCK_PRELUDE "return {1, 0, run, s(untl)}";

/* ---- types ---- */

enum cstate { C_DOWN, C_CONNECTING, C_UP };

struct rb;

/* One Redis connection (command or subscriber) and its reconnect machinery. */
struct rconn {
    struct rb *b;
    const char *what; /* "command" / "subscriber" */
    bool is_sub;
    redisAsyncContext *ac;
    enum cstate state;
    bool down;    /* a connect failed or the link dropped, not yet recovered */
    bool ever_up; /* subscribed at least once: a new subscription follows an outage */
    unsigned attempt;
    unsigned subs_confirmed;
    ev_timer conn_timer;  /* connect + handshake deadline */
    ev_timer retry_timer; /* backoff before the next attempt */
    int hs_err;           /* first handshake error */
    char hs_msg[384];
    int last_err; /* why it is down */
    char last_msg[384];
    uint64_t *reconnects;
};

enum rkind { K_GET, K_MGET, K_SET, K_DEL, K_PING, K_LOCK_ACQ, K_LOCK_RENEW, K_LOCK_REL };

/* One operation in flight: a pooled slot. */
struct rop {
    struct rb *b;
    sm_cb cb;
    void *arg;
    enum rkind kind;
    unsigned pending; /* hiredis callbacks still to come */
    bool done;        /* the caller has been answered */
    bool listed;      /* on the in-flight list */
    int err;          /* first error seen in a partial reply */
    double deadline;  /* ev_time() after which it times out */
    uint64_t version;
    uint64_t ttl_ms;
    size_t n;
    char *keybuf; /* get: the request's keys, prefixed, one allocation */
    char *name;   /* lock name */
    char token[2 * TOKEN_BYTES + 1];
    char emsg[384];
    struct rop *prev, *next; /* in-flight list, in issue order */
};

/* Who wrote each key that has a TTL, learnt from 'T' change events, so the
 * expiry event (Redis names only the key) can carry the writer's node id and
 * version. Bounded: beyond XT_MAX entries new ones are not remembered and
 * their expiry events carry an empty origin. */
#define XT_MAX 65536
struct xent {
    struct xent *next;
    uint64_t hash, version;
    size_t klen;
    char data[]; /* key \0 origin \0 */
};
struct xtab {
    struct xent **slots;
    size_t nslots, count;
};

struct rb {
    struct sm_backend base;
    struct sm_store *st;
    struct ev_loop *loop;
    /* options */
    char addr[96]; /* as configured (truncated), for messages */
    char host[NI_MAXHOST];
    int port;
    char *unix_path;
    char *password;
    uint64_t db;
    char prefix[MAX_PREFIX + 1];
    size_t plen;
    uint64_t connect_ms, command_ms, rmin_ms, rmax_ms;
    char node[SM_MAX_NODE_ID + 1];
    size_t node_len;
    char chan_events[MAX_PREFIX + 16];
    char chan_expired[64];
    char db_str[24];
    /* connections */
    struct rconn cmd, sub;
    ev_timer cmd_timer;
    struct rop *head, *tail; /* in flight on cmd, oldest first */
    /* rop pool */
    struct rop *free_ops;
    struct rop **chunks;
    size_t nchunks;
    /* scratch for building commands (hiredis copies arguments out) */
    char *scratch;
    size_t scratch_cap;
    uint64_t hlc_last;
    struct xtab xt; /* writers of keys that will expire */
    bool closing;
    int expiry_events; /* 1 on, 0 off (CONFIG refused), -1 not known yet */
    /* lock epochs (see LOCK_PRELUDE) */
    char epoch_key[MAX_PREFIX + 16], wait_key[MAX_PREFIX + 16];
    char epoch[EPOCH_LEN + 1]; /* run id of the last epoch seen, "" none */
    char run_id[EPOCH_LEN + 1];  /* of the server the command connection reached, "" */
    uint64_t known_until;      /* latest lease end seen under it (server ms) */
    bool recovery_wait;        /* redis.lock_recovery=wait */
    uint64_t *m_epochs, *m_recovery_refusals;
    uint64_t *m_timeouts, *m_events, *m_bad_events, *m_expired;
};

/* ---- small helpers ---- */

static int map_redis_error(const char *s)
{
    if (strncmp(s, "NOAUTH", 6) == 0 || strncmp(s, "WRONGPASS", 9) == 0 ||
        strncmp(s, "ERR AUTH", 8) == 0 || strncmp(s, "ERR invalid password", 20) == 0 ||
        strncmp(s, "ERR Client sent AUTH", 20) == 0)
        return SM_EAUTH;
    if (strncmp(s, "LOADING", 7) == 0 || strncmp(s, "MASTERDOWN", 10) == 0 ||
        strncmp(s, "READONLY", 8) == 0 || strncmp(s, "TRYAGAIN", 8) == 0)
        return SM_EUNAVAILABLE;
    return SM_EBACKEND;
}

static uint64_t next_version(struct rb *b, uint64_t wall)
{
    /* The writer's hybrid logical clock: wall ms in the high bits, a counter
     * below, so versions from one node strictly increase even within a ms. */
    uint64_t phys = wall << 16;
    b->hlc_last = phys > b->hlc_last ? phys : b->hlc_last + 1;
    return b->hlc_last;
}

static bool reserved_key(const char *key)
{
    return strncmp(key, LOCK_NS, sizeof LOCK_NS - 1) == 0 ||
           strncmp(key, FENCE_NS, sizeof FENCE_NS - 1) == 0 ||
           strncmp(key, META_NS, sizeof META_NS - 1) == 0;
}

static int scratch_reserve(struct rb *b, size_t need)
{
    if (need <= b->scratch_cap) return 0;
    size_t nc = b->scratch_cap ? b->scratch_cap : 4096;
    while (nc < need) nc *= 2;
    char *p = realloc(b->scratch, nc);
    if (!p) return SM_ENOMEM;
    b->scratch = p;
    b->scratch_cap = nc;
    return 0;
}

static size_t fmt_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) p[i] = tmp[n - 1 - i];
    p[n] = '\0';
    return n;
}

/* ---- rop pool and in-flight list ---- */

static struct rop *rop_get(struct rb *b, enum rkind kind, sm_cb cb, void *arg)
{
    if (!b->free_ops) {
        struct rop **nc = realloc(b->chunks, (b->nchunks + 1) * sizeof *nc);
        if (!nc) return NULL;
        b->chunks = nc;
        struct rop *c = calloc(ROP_CHUNK, sizeof *c);
        if (!c) return NULL;
        b->chunks[b->nchunks++] = c;
        for (size_t i = 0; i < ROP_CHUNK; i++) {
            c[i].next = b->free_ops;
            b->free_ops = &c[i];
        }
    }
    struct rop *o = b->free_ops;
    b->free_ops = o->next;
    o->b = b;
    o->cb = cb;
    o->arg = arg;
    o->kind = kind;
    o->pending = 0;
    o->done = false;
    o->listed = false;
    o->err = 0;
    o->emsg[0] = '\0';
    o->version = 0;
    o->ttl_ms = 0;
    o->n = 0;
    o->keybuf = NULL;
    o->name = NULL;
    o->token[0] = '\0';
    o->prev = o->next = NULL;
    return o;
}

static void rop_put(struct rop *o)
{
    struct rb *b = o->b;
    free(o->keybuf);
    free(o->name);
    o->keybuf = NULL;
    o->name = NULL;
    o->cb = NULL;
    o->next = b->free_ops;
    b->free_ops = o;
}

static void cmd_timer_arm(struct rb *b);

static void list_add(struct rb *b, struct rop *o)
{
    /* ev_time(), not ev_now(): a caller that blocked before calling us would
     * otherwise start with a deadline already in the past. */
    o->deadline = ev_time() + (double)b->command_ms / 1000.0;
    o->prev = b->tail;
    o->next = NULL;
    if (b->tail)
        b->tail->next = o;
    else
        b->head = o;
    b->tail = o;
    o->listed = true;
    if (!ev_is_active(&b->cmd_timer)) cmd_timer_arm(b);
}

static void list_del(struct rb *b, struct rop *o)
{
    if (!o->listed) return;
    if (o->prev)
        o->prev->next = o->next;
    else
        b->head = o->next;
    if (o->next)
        o->next->prev = o->prev;
    else
        b->tail = o->prev;
    o->prev = o->next = NULL;
    o->listed = false;
}

/* Answer the caller (once) and take the rop off the in-flight list. */
static void rop_finish(struct rop *o, int status, const struct sm_result *res)
{
    struct rb *b = o->b;
    if (o->done) return;
    o->done = true;
    list_del(b, o);
    struct sm_result r0;
    if (status < 0) {
        if (!o->emsg[0]) snprintf(o->emsg, sizeof o->emsg, "%s", sm_strerror(status));
        sm_store_seterr(b->st, status, "%s", o->emsg);
        if (!res) {
            memset(&r0, 0, sizeof r0);
            res = &r0;
        }
        r0 = *res;
        r0.errmsg = o->emsg;
        res = &r0;
    }
    o->cb(b->st, status, res, o->arg);
}

static void rop_fail(struct rop *o, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void rop_fail(struct rop *o, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->emsg, sizeof o->emsg, fmt, ap);
    va_end(ap);
    rop_finish(o, status, NULL);
}

/* ---- connection management ---- */

static void conn_start(struct rconn *c);

static void schedule_retry(struct rconn *c)
{
    struct rb *b = c->b;
    if (b->closing) return;
    /* Exponential backoff with "equal jitter": half the step is fixed, the
     * other half random, so a fleet that lost the same server spreads out. */
    uint64_t step = b->rmin_ms;
    for (unsigned i = 0; i < c->attempt && step < b->rmax_ms; i++) step *= 2;
    if (step > b->rmax_ms) step = b->rmax_ms;
    uint64_t half = step / 2;
    uint64_t delay = half + randombytes_uniform((uint32_t)(step - half + 1));
    if (c->attempt < 64) c->attempt++;
    ev_timer_stop(b->loop, &c->retry_timer);
    ev_timer_set(&c->retry_timer, (double)delay / 1000.0, 0.);
    ev_timer_start(b->loop, &c->retry_timer);
}

/* The connection is gone (or never came up): remember why, retry later. */
static void conn_failed(struct rconn *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_failed(struct rconn *c, int err, const char *fmt, ...)
{
    struct rb *b = c->b;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_msg, sizeof c->last_msg, fmt, ap);
    va_end(ap);
    c->last_err = err;
    c->state = C_DOWN;
    c->down = true;
    c->subs_confirmed = 0;
    ev_timer_stop(b->loop, &c->conn_timer);
    if (c->reconnects) (*c->reconnects)++;
    schedule_retry(c);
}

/* Tear a live context down ourselves. hiredis answers its pending callbacks
 * with NULL replies (now, or right after the current callback returns when
 * called from inside one); they read c->last_err to know why. */
static void conn_drop(struct rconn *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_drop(struct rconn *c, int err, const char *fmt, ...)
{
    struct rb *b = c->b;
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_msg, sizeof c->last_msg, fmt, ap);
    va_end(ap);
    c->last_err = err;
    c->state = C_DOWN;
    c->down = true;
    c->subs_confirmed = 0;
    ev_timer_stop(b->loop, &c->conn_timer);
    if (!b->closing) {
        if (c->reconnects) (*c->reconnects)++;
        schedule_retry(c);
    }
    if (ac) {
        ac->data = NULL; /* its disconnect callback must not touch c */
        redisAsyncFree(ac);
    }
}

static void conn_up(struct rconn *c)
{
    struct rb *b = c->b;
    c->state = C_UP;
    c->down = false;
    c->attempt = 0;
    c->last_err = 0;
    c->last_msg[0] = '\0';
    ev_timer_stop(b->loop, &c->conn_timer);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn *c = ac->data;
    if (!c || c->ac != ac || status == REDIS_OK) return;
    /* hiredis frees the context when this returns. */
    c->ac = NULL;
    conn_failed(c, SM_EUNAVAILABLE, "cannot connect to redis at %s: %s", c->b->addr,
                ac->errstr[0] ? ac->errstr : "connection failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct rconn *c = ac->data;
    if (!c || c->ac != ac) return; /* we dropped it ourselves */
    c->ac = NULL;
    const char *why = ac->errstr[0] ? ac->errstr : "connection closed";
    int err = ac->err == REDIS_ERR_OTHER ? map_redis_error(why) : SM_EUNAVAILABLE;
    if (err == SM_EBACKEND) err = SM_EUNAVAILABLE;
    if (err == SM_EAUTH)
        conn_failed(c, err, "redis at %s refused the %s connection: %s (check redis.password)",
                    c->b->addr, c->what, why);
    else
        conn_failed(c, err, "lost the %s connection to redis at %s: %s", c->what, c->b->addr, why);
}

static void conn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    struct rconn *c = w->data;
    if (c->b->closing) return;
    conn_drop(c, SM_ETIMEOUT, "connecting to redis at %s timed out after %llu ms", c->b->addr,
              (unsigned long long)c->b->connect_ms);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    struct rconn *c = w->data;
    conn_start(c);
}

/* A handshake reply (AUTH, SELECT, CONFIG…): keep the first error. */
static void record_hs_error(struct rconn *c, const redisReply *r, const char *cmd)
{
    if (c->hs_err || !r || r->type != REDIS_REPLY_ERROR) return;
    c->hs_err = map_redis_error(r->str);
    if (c->hs_err == SM_EAUTH)
        snprintf(c->hs_msg, sizeof c->hs_msg,
                 "redis at %s refused authentication (%s): %s; check redis.password", c->b->addr,
                 cmd, r->str);
    else
        snprintf(c->hs_msg, sizeof c->hs_msg, "redis at %s: %s failed: %s", c->b->addr, cmd,
                 r->str);
}

static void on_hs_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *c = priv;
    if (c->ac != ac) return;
    record_hs_error(c, reply, "AUTH");
}

static void on_hs_select(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *c = priv;
    if (c->ac != ac) return;
    record_hs_error(c, reply, "SELECT");
}

static void on_config_set(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct rb *b = priv;
    redisReply *r = reply;
    if (!r) return;
    b->expiry_events = r->type == REDIS_REPLY_ERROR ? 0 : 1;
}

/* Expiry events need "E" (keyevent channel) and "x" (expired; "A" includes
 * it) in notify-keyspace-events. Add what is missing, keep what is there. */
static void on_config_get(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rb *b = priv;
    redisReply *r = reply;
    if (!r || b->cmd.ac != ac) return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        b->expiry_events = 0; /* CONFIG renamed or forbidden (managed Redis): no expiry events */
        return;
    }
    const char *cur = r->element[1]->str;
    bool has_e = strchr(cur, 'E') != NULL;
    bool has_x = strchr(cur, 'x') != NULL || strchr(cur, 'A') != NULL;
    if (has_e && has_x) {
        b->expiry_events = 1;
        return;
    }
    char want[64];
    snprintf(want, sizeof want, "%.40s%s%s", cur, has_e ? "" : "E", has_x ? "" : "x");
    if (redisAsyncCommand(ac, on_config_set, b, "CONFIG SET notify-keyspace-events %s", want) !=
        REDIS_OK)
        b->expiry_events = 0;
}

static void learn_epoch(struct rb *b, const redisReply *id, const redisReply *until);

static void on_epoch_check(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rb *b = priv;
    redisReply *r = reply;
    if (!r || b->cmd.ac != ac || r->type != REDIS_REPLY_ARRAY || r->elements != 4) return;
    learn_epoch(b, r->element[2], r->element[3]);
}

/* A client that knew an epoch checks it on every reconnect, ahead of any of
 * its own operations (they are queued behind this in the same pipeline). */
static void epoch_check(struct rb *b, redisAsyncContext *ac)
{
    if (!b->epoch[0]) return;
    char until[24];
    fmt_u64(until, b->known_until);
    const char *argv[] = {"EVAL",      check_lua, "4",      "-",   "-",
                          b->epoch_key, b->wait_key, "",     "0",   b->epoch,
                          until,        b->recovery_wait ? "1" : "0", b->run_id};
    size_t lens[13];
    for (size_t i = 0; i < 13; i++) lens[i] = strlen(argv[i]);
    redisAsyncCommandArgv(ac, on_epoch_check, b, 13, argv, lens);
}

/* INFO server: the run id the lock scripts are then handed (see LOCK_PRELUDE). */
static void on_hs_info(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rb *b = priv;
    redisReply *r = reply;
    if (!r || b->cmd.ac != ac || r->type != REDIS_REPLY_STRING) return;
    const char *p = strstr(r->str, "run_id:");
    if (!p) return;
    p += 7;
    size_t n = strspn(p, "0123456789abcdef");
    if (n == 0 || n > EPOCH_LEN) return;
    memcpy(b->run_id, p, n);
    b->run_id[n] = '\0';
}

static void on_hs_ping(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rconn *c = priv;
    redisReply *r = reply;
    if (c->ac != ac || !r) return;
    record_hs_error(c, r, "PING");
    if (c->hs_err) {
        conn_drop(c, c->hs_err, "%s", c->hs_msg);
        return;
    }
    struct rb *b = c->b;
    epoch_check(b, ac);
    conn_up(c);
    if (redisAsyncCommand(ac, on_config_get, b, "CONFIG GET notify-keyspace-events") != REDIS_OK)
        b->expiry_events = 0;
}

static void on_sub_msg(redisAsyncContext *ac, void *reply, void *priv);

static void conn_start(struct rconn *c)
{
    struct rb *b = c->b;
    if (b->closing || c->ac) return;
    redisAsyncContext *ac =
        b->unix_path ? redisAsyncConnectUnix(b->unix_path) : redisAsyncConnect(b->host, b->port);
    if (!ac) {
        conn_failed(c, SM_ENOMEM, "cannot connect to redis at %s: out of memory", b->addr);
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac->errstr);
        redisAsyncFree(ac);
        conn_failed(c, SM_EUNAVAILABLE, "cannot connect to redis at %s: %s", b->addr, why);
        return;
    }
    if (redisLibevAttach(b->loop, ac) != REDIS_OK) {
        redisAsyncFree(ac);
        conn_failed(c, SM_EUNAVAILABLE, "cannot attach to the event loop");
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = C_CONNECTING;
    c->hs_err = 0;
    c->hs_msg[0] = '\0';
    c->subs_confirmed = 0;
    ev_timer_set(&c->conn_timer, (double)b->connect_ms / 1000.0, 0.);
    ev_timer_start(b->loop, &c->conn_timer);
    /* The handshake is queued before anything else, so commands issued
     * during the first connect run after it, in order. hiredis sends it once
     * the socket is writable (that is also how the connect completes). */
    if (b->password) {
        const char *argv[2] = {"AUTH", b->password};
        size_t lens[2] = {4, strlen(b->password)};
        redisAsyncCommandArgv(ac, on_hs_auth, c, 2, argv, lens);
    }
    if (c->is_sub) {
        const char *argv[3] = {"SUBSCRIBE", b->chan_events, b->chan_expired};
        size_t lens[3] = {9, strlen(b->chan_events), strlen(b->chan_expired)};
        redisAsyncCommandArgv(ac, on_sub_msg, b, 3, argv, lens);
    } else {
        if (b->db) {
            const char *argv[2] = {"SELECT", b->db_str};
            size_t lens[2] = {6, strlen(b->db_str)};
            redisAsyncCommandArgv(ac, on_hs_select, c, 2, argv, lens);
        }
        redisAsyncCommand(ac, on_hs_ping, c, "PING");
        b->run_id[0] = '\0'; /* until INFO answers (operations queue behind it) */
        redisAsyncCommand(ac, on_hs_info, b, "INFO server");
    }
}

/* ---- subscriber: change events in, watchers out ---- */

/* ---- expiring-key writers ---- */

static uint64_t xt_hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h;
}

static struct xent **xt_find(struct xtab *t, const char *k, size_t n, uint64_t h)
{
    if (!t->nslots) return NULL;
    struct xent **pp = &t->slots[h & (t->nslots - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->klen == n && memcmp((*pp)->data, k, n) == 0) return pp;
    return pp; /* where it would go */
}

static void xt_del(struct xtab *t, const char *k, size_t n)
{
    struct xent **pp = xt_find(t, k, n, xt_hash(k, n));
    if (!pp || !*pp) return;
    struct xent *e = *pp;
    *pp = e->next;
    free(e);
    t->count--;
}

static void xt_put(struct xtab *t, const char *k, size_t n, const char *origin, size_t ol,
                   uint64_t version)
{
    uint64_t h = xt_hash(k, n);
    if (t->count >= t->nslots * 3 / 4 && t->nslots < XT_MAX) {
        size_t nn = t->nslots ? t->nslots * 2 : 64;
        struct xent **ns = calloc(nn, sizeof *ns);
        if (ns) {
            for (size_t i = 0; i < t->nslots; i++) {
                for (struct xent *e = t->slots[i], *next; e; e = next) {
                    next = e->next;
                    e->next = ns[e->hash & (nn - 1)];
                    ns[e->hash & (nn - 1)] = e;
                }
            }
            free(t->slots);
            t->slots = ns;
            t->nslots = nn;
        }
    }
    struct xent **pp = xt_find(t, k, n, h);
    if (!pp) return;
    if (*pp) { /* replace */
        struct xent *old = *pp;
        *pp = old->next;
        free(old);
        t->count--;
    } else if (t->count >= XT_MAX) {
        return;
    }
    struct xent *e = malloc(sizeof *e + n + 1 + ol + 1);
    if (!e) return; /* only the expiry event's origin is lost */
    e->hash = h;
    e->version = version;
    e->klen = n;
    memcpy(e->data, k, n);
    e->data[n] = '\0';
    memcpy(e->data + n + 1, origin, ol);
    e->data[n + 1 + ol] = '\0';
    e->next = *pp;
    *pp = e;
    t->count++;
}

static void xt_clear(struct xtab *t)
{
    for (size_t i = 0; i < t->nslots; i++) {
        for (struct xent *e = t->slots[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(t->slots);
    t->slots = NULL;
    t->nslots = t->count = 0;
}

static void emit_change(struct rb *b, const struct sm_redis_ev *e)
{
    /* Keys in messages are not NUL-terminated and values may be anything:
     * copy the key out (keys are short: the front caps them). */
    char kbuf[1024];
    char *key = e->key_len < sizeof kbuf ? kbuf : malloc(e->key_len + 1);
    char obuf[SM_MAX_NODE_ID + 1];
    if (!key) return;
    memcpy(key, e->key, e->key_len);
    key[e->key_len] = '\0';
    size_t ol = e->origin_len < sizeof obuf ? e->origin_len : sizeof obuf - 1;
    memcpy(obuf, e->origin, ol);
    obuf[ol] = '\0';
    if (e->type == 'T')
        xt_put(&b->xt, e->key, e->key_len, obuf, ol, e->version);
    else if (b->xt.count)
        xt_del(&b->xt, e->key, e->key_len);
    struct sm_event ev = {.type = e->type == 'D' ? SM_EVENT_DELETE : SM_EVENT_SET,
                          .key = key,
                          .value = e->type != 'D' ? (e->value ? e->value : "") : NULL,
                          .value_len = e->value_len,
                          .version = e->version,
                          .time_ms = e->time_ms,
                          .origin = obuf};
    sm_store_emit(b->st, &ev);
    if (key != kbuf) free(key);
}

static void handle_events(struct rb *b, const char *msg, size_t len)
{
    size_t off = 0;
    struct sm_redis_ev e;
    int rc;
    /* Validate the whole message first: a malformed one is dropped whole
     * rather than half-delivered. */
    while ((rc = sm_redis_ev_decode(msg, len, &off, &e)) == 1) {
    }
    if (rc < 0) {
        if (b->m_bad_events) (*b->m_bad_events)++;
        return;
    }
    off = 0;
    while (sm_redis_ev_decode(msg, len, &off, &e) == 1) {
        if (b->m_events) (*b->m_events)++;
        if (memchr(e.key, '\0', e.key_len)) continue;
        emit_change(b, &e);
    }
}

static void handle_expired(struct rb *b, const char *rkey, size_t len)
{
    if (len <= b->plen || memcmp(rkey, b->prefix, b->plen) != 0) return;
    const char *k = rkey + b->plen;
    size_t kl = len - b->plen;
    if (memchr(k, '\0', kl)) return;
    char kbuf[1024];
    char *key = kl < sizeof kbuf ? kbuf : malloc(kl + 1);
    if (!key) return;
    memcpy(key, k, kl);
    key[kl] = '\0';
    if (!reserved_key(key)) {
        if (b->m_expired) (*b->m_expired)++;
        /* Redis reports only the key; the writer comes from the 'T' event
         * that announced the TTL, when this node saw it. */
        struct sm_event ev = {
            .type = SM_EVENT_EXPIRE, .key = key, .time_ms = sm_wall_ms(), .origin = ""};
        struct xent **pp = xt_find(&b->xt, key, kl, xt_hash(key, kl));
        struct xent *x = pp ? *pp : NULL;
        if (x) {
            ev.origin = x->data + kl + 1;
            ev.version = x->version;
        }
        sm_store_emit(b->st, &ev);
        if (x) xt_del(&b->xt, key, kl);
    }
    if (key != kbuf) free(key);
}

static void on_sub_msg(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rb *b = priv;
    struct rconn *c = &b->sub;
    redisReply *r = reply;
    if (!r || c->ac != ac) return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        if (++c->subs_confirmed == 2) {
            /* Changes published while we were away are lost (pub/sub is
             * at-most-once): forget writers we may have stale data on. */
            if (c->ever_up) xt_clear(&b->xt);
            c->ever_up = true;
            conn_up(c);
        }
        return;
    }
    if (strcmp(kind, "message") != 0 || r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *ch = r->element[1], *msg = r->element[2];
    if (ch->len == strlen(b->chan_events) && memcmp(ch->str, b->chan_events, ch->len) == 0)
        handle_events(b, msg->str, msg->len);
    else
        handle_expired(b, msg->str, msg->len);
}

/* ---- command timeouts ---- */

static void cmd_timer_arm(struct rb *b)
{
    if (!b->head) return;
    double in = b->head->deadline - ev_time();
    ev_timer_set(&b->cmd_timer, in > 0 ? in : 0., 0.);
    ev_timer_start(b->loop, &b->cmd_timer);
}

static void cmd_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct rb *b = w->data;
    double now = ev_time();
    (void)loop;
    if (!b->head) return;
    if (b->head->deadline > now) {
        cmd_timer_arm(b);
        return;
    }
    /* Answer every expired operation with SM_ETIMEOUT, then reset the
     * connection: late replies must never be matched to later commands. */
    while (b->head && b->head->deadline <= now) {
        struct rop *o = b->head;
        if (b->m_timeouts) (*b->m_timeouts)++;
        rop_fail(o, SM_ETIMEOUT, "redis at %s did not answer within %llu ms", b->addr,
                 (unsigned long long)b->command_ms);
    }
    conn_drop(&b->cmd, SM_EUNAVAILABLE,
              "connection to redis at %s reset after a command timed out (%llu ms)", b->addr,
              (unsigned long long)b->command_ms);
}

/* ---- replies ---- */

static void null_reply_error(struct rop *o, const redisAsyncContext *ac)
{
    struct rb *b = o->b;
    if (b->closing) {
        snprintf(o->emsg, sizeof o->emsg, "store closed");
        o->err = SM_ECLOSED;
    } else if (ac->err) {
        snprintf(o->emsg, sizeof o->emsg, "lost the connection to redis at %s: %s", b->addr,
                 ac->errstr);
        o->err = SM_EUNAVAILABLE;
    } else {
        snprintf(o->emsg, sizeof o->emsg, "%s",
                 b->cmd.last_msg[0] ? b->cmd.last_msg : "redis connection reset");
        o->err = b->cmd.last_err ? b->cmd.last_err : SM_EUNAVAILABLE;
    }
}

static void reply_error(struct rop *o, const redisReply *r)
{
    o->err = map_redis_error(r->str);
    if (o->err == SM_EAUTH)
        snprintf(o->emsg, sizeof o->emsg, "redis at %s: %s (check redis.password)", o->b->addr,
                 r->str);
    else
        snprintf(o->emsg, sizeof o->emsg, "redis: %s", r->str);
}

static void finish_get(struct rop *o, const redisReply *r)
{
    struct sm_entry one, *ents = &one;
    if (o->n > 1) {
        ents = calloc(o->n, sizeof *ents);
        if (!ents) {
            rop_fail(o, SM_ENOMEM, "out of memory");
            return;
        }
    }
    const redisReply *const *el = o->kind == K_GET ? &r : (const redisReply *const *)r->element;
    if (o->kind == K_MGET && (r->type != REDIS_REPLY_ARRAY || r->elements != o->n)) {
        if (ents != &one) free(ents);
        rop_fail(o, SM_EPROTO, "redis: unexpected reply to MGET");
        return;
    }
    const char *k = o->keybuf;
    for (size_t i = 0; i < o->n; i++) {
        struct sm_entry *e = &ents[i];
        memset(e, 0, sizeof *e);
        e->key = k + o->b->plen;
        e->origin = "";
        k += strlen(k) + 1;
        if (el[i]->type == REDIS_REPLY_STRING) {
            e->value = el[i]->str;
            e->value_len = el[i]->len;
        } else {
            e->status = SM_ENOTFOUND;
        }
    }
    struct sm_result res = {.entries = ents, .n_entries = o->n};
    rop_finish(o, 0, &res);
    if (ents != &one) free(ents);
}

/* Remember the epoch and latest lease end a lock reply names: a later
 * reconnect to a restarted server brings them back (see LOCK_PRELUDE). */
static void learn_epoch(struct rb *b, const redisReply *id, const redisReply *until)
{
    if (id->type != REDIS_REPLY_STRING || until->type != REDIS_REPLY_STRING ||
        id->len > EPOCH_LEN)
        return;
    uint64_t u = strtoull(until->str, NULL, 10);
    if (strcmp(b->epoch, id->str) != 0) {
        if (b->epoch[0] && b->m_epochs) (*b->m_epochs)++;
        memcpy(b->epoch, id->str, id->len + 1);
    }
    if (u > b->known_until) b->known_until = u;
}

static void finish_lock(struct rop *o, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
        rop_fail(o, SM_EPROTO, "redis: unexpected reply to a lock script");
        return;
    }
    learn_epoch(o->b, r->element[2], r->element[3]);
    long long ok = r->element[0]->integer, v = r->element[1]->integer;
    if (ok == 2) {
        if (o->b->m_recovery_refusals) (*o->b->m_recovery_refusals)++;
        rop_fail(o, SM_EUNAVAILABLE,
                 "lock '%s': redis restarted or lost its data; no grant for %lld ms, until "
                 "every lease granted before has run out",
                 o->name, v);
        return;
    }
    if (!ok) {
        if (o->kind == K_LOCK_ACQ)
            rop_fail(o, SM_ELOCKED, "lock '%s' is held by another owner (expires in %lld ms)",
                     o->name, v);
        else
            rop_fail(o, SM_ENOTOWNER,
                     "lock '%s': token is not the current owner (released, "
                     "expired or taken over)",
                     o->name);
        return;
    }
    struct sm_lock l = {.name = o->name,
                        .token = o->token,
                        .fence = (uint64_t)v,
                        .expires_ms =
                            o->kind == K_LOCK_REL ? 0 : (int64_t)(sm_wall_ms() + o->ttl_ms)};
    struct sm_result res = {.lock = &l, .version = (uint64_t)v};
    rop_finish(o, 0, &res);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rop *o = priv;
    redisReply *r = reply;
    o->pending--;
    if (!o->done) {
        if (!r) {
            if (!o->err) null_reply_error(o, ac);
        } else if (r->type == REDIS_REPLY_ERROR && !o->err) {
            reply_error(o, r);
        } else if (r->type == REDIS_REPLY_ARRAY && o->kind == K_SET && !o->err) {
            /* EXEC: a command of the transaction can fail on its own */
            for (size_t i = 0; i < r->elements && !o->err; i++)
                if (r->element[i]->type == REDIS_REPLY_ERROR) reply_error(o, r->element[i]);
        } else if (r->type == REDIS_REPLY_NIL && o->kind == K_SET && !o->err) {
            o->err = SM_EBACKEND;
            snprintf(o->emsg, sizeof o->emsg, "redis: transaction aborted");
        }
        if (o->pending == 0) {
            if (o->err) {
                rop_finish(o, o->err, NULL);
            } else {
                switch (o->kind) {
                case K_GET:
                case K_MGET:
                    finish_get(o, r);
                    break;
                case K_LOCK_ACQ:
                case K_LOCK_RENEW:
                case K_LOCK_REL:
                    finish_lock(o, r);
                    break;
                case K_SET:
                case K_DEL: {
                    struct sm_result res = {.version = o->version};
                    rop_finish(o, 0, &res);
                    break;
                }
                case K_PING: {
                    struct sm_result res = {0};
                    rop_finish(o, 0, &res);
                    break;
                }
                }
            }
        }
    }
    if (o->pending == 0) rop_put(o);
}

/* ---- issuing commands ---- */

/* Refuse at once when the command connection is down; queue during the first
 * connect (the handshake is already ahead in the output buffer). */
static int check_ready(struct rb *b)
{
    struct rconn *c = &b->cmd;
    if (c->ac && (c->state == C_UP || (c->state == C_CONNECTING && !c->down))) return 0;
    int err = c->last_err == SM_EAUTH ? SM_EAUTH : SM_EUNAVAILABLE;
    double left =
        ev_is_active(&c->retry_timer) ? ev_timer_remaining(b->loop, &c->retry_timer) * 1000.0 : 0.0;
    return sm_store_seterr(b->st, err, "redis at %s is unavailable: %s (next attempt in %.0f ms)",
                           b->addr, c->last_msg[0] ? c->last_msg : "connecting", left);
}

/* Send one command of rop @p o. On failure (the context is being torn down)
 * the rop is marked answered so its earlier commands drain silently. */
static int send_argv(struct rb *b, struct rop *o, int argc, const char **argv, const size_t *lens)
{
    if (redisAsyncCommandArgv(b->cmd.ac, on_reply, o, argc, argv, lens) != REDIS_OK) {
        o->done = true;
        list_del(b, o);
        if (o->pending == 0) rop_put(o);
        return sm_store_seterr(b->st, SM_EUNAVAILABLE, "redis at %s: connection is closing",
                               b->addr);
    }
    o->pending++;
    return 0;
}

static int redis_get_multi(struct sm_backend *base, const char *const *keys, size_t n, sm_cb cb,
                           void *arg)
{
    struct rb *b = (struct rb *)base;
    int rc = check_ready(b);
    if (rc < 0) return rc;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (reserved_key(keys[i]))
            return sm_store_seterr(b->st, SM_EINVAL,
                                   "key '%s': keys starting with '" LOCK_NS "' or '" FENCE_NS
                                   "' are reserved for locks in the redis backend",
                                   keys[i]);
        total += b->plen + strlen(keys[i]) + 1;
    }
    struct rop *o = rop_get(b, n == 1 ? K_GET : K_MGET, cb, arg);
    if (!o) return SM_ENOMEM;
    const char *sargv[STACK_ARGS + 1];
    size_t slens[STACK_ARGS + 1];
    const char **argv = sargv;
    size_t *lens = slens;
    o->keybuf = malloc(total);
    if (n + 1 > STACK_ARGS + 1) {
        argv = malloc((n + 1) * sizeof *argv);
        lens = malloc((n + 1) * sizeof *lens);
    }
    if (!o->keybuf || !argv || !lens) {
        rc = SM_ENOMEM;
        goto fail;
    }
    o->n = n;
    argv[0] = n == 1 ? "GET" : "MGET";
    lens[0] = n == 1 ? 3 : 4;
    char *p = o->keybuf;
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(keys[i]);
        memcpy(p, b->prefix, b->plen);
        memcpy(p + b->plen, keys[i], kl + 1);
        argv[i + 1] = p;
        lens[i + 1] = b->plen + kl;
        p += b->plen + kl + 1;
    }
    list_add(b, o);
    rc = send_argv(b, o, (int)n + 1, argv, lens);
    if (argv != sargv) free(argv);
    if (lens != slens) free(lens);
    return rc;
fail:
    if (argv != sargv) free(argv);
    if (lens != slens) free(lens);
    rop_put(o);
    return rc;
}

/* RESP, written by hand for the hot path: hiredis's generic formatter
 * (sdscatfmt, an allocation per command) costs more than the rest of a set. */
#define RESP_ARG_OVERHEAD 25 /* "$" + 20 digits + CRLF + CRLF */

static char *resp_hdr(char *p, char type, size_t n)
{
    *p++ = type;
    p += fmt_u64(p, n);
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

static char *resp_arg(char *p, const void *s, size_t n)
{
    p = resp_hdr(p, '$', n);
    if (n) memcpy(p, s, n);
    p += n;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

static int send_fmt(struct rb *b, struct rop *o, const char *cmd, size_t len)
{
    if (redisAsyncFormattedCommand(b->cmd.ac, on_reply, o, cmd, len) != REDIS_OK) {
        o->done = true;
        list_del(b, o);
        if (o->pending == 0) rop_put(o);
        return sm_store_seterr(b->st, SM_EUNAVAILABLE, "redis at %s: connection is closing",
                               b->addr);
    }
    o->pending++;
    return 0;
}

static int redis_set_multi(struct sm_backend *base, const struct sm_kv *items, size_t n, sm_cb cb,
                           void *arg)
{
    struct rb *b = (struct rb *)base;
    int rc = check_ready(b);
    if (rc < 0) return rc;
    uint64_t wall = sm_wall_ms();
    /* scratch layout: the event message, then room for the largest single
     * command (each is handed to hiredis, which copies it, before the next
     * is written). Sized before anything is sent. */
    size_t msg_need = 0, cmd_need = 0;
    for (size_t i = 0; i < n; i++) {
        if (reserved_key(items[i].key))
            return sm_store_seterr(b->st, SM_EINVAL,
                                   "key '%s': keys starting with '" LOCK_NS "' or '" FENCE_NS
                                   "' are reserved for locks in the redis backend",
                                   items[i].key);
        size_t kl = strlen(items[i].key);
        struct sm_redis_ev e = {
            .type = 'S', .origin_len = b->node_len, .key_len = kl, .value_len = items[i].value_len};
        msg_need += sm_redis_ev_size(&e);
        size_t c = 24 + 5 * RESP_ARG_OVERHEAD + 3 + b->plen + kl + items[i].value_len + 2 + 20;
        if (c > cmd_need) cmd_need = c;
    }
    size_t pub_need = 24 + 3 * RESP_ARG_OVERHEAD + 7 + strlen(b->chan_events) + msg_need;
    if (pub_need > cmd_need) cmd_need = pub_need;
    if ((rc = scratch_reserve(b, msg_need + cmd_need)) < 0) return rc;
    struct rop *o = rop_get(b, K_SET, cb, arg);
    if (!o) return SM_ENOMEM;
    char *msg = b->scratch, *cmdbuf = b->scratch + msg_need;
    size_t mlen = 0;
    for (size_t i = 0; i < n; i++) {
        o->version = next_version(b, wall);
        struct sm_redis_ev e = {.type = items[i].ttl_ms ? 'T' : 'S',
                                .version = o->version,
                                .time_ms = wall,
                                .origin = b->node,
                                .origin_len = b->node_len,
                                .key = items[i].key,
                                .key_len = strlen(items[i].key),
                                .value = items[i].value,
                                .value_len = items[i].value_len};
        mlen += sm_redis_ev_encode(msg + mlen, msg_need - mlen, &e);
    }
    list_add(b, o);
    /* One round trip: every command lands in hiredis's output buffer and
     * leaves in one write when the loop next polls. A batch is a MULTI/EXEC
     * transaction so readers never see half of it. */
    if (n > 1 && (rc = send_fmt(b, o, "*1\r\n$5\r\nMULTI\r\n", 15)) < 0) return rc;
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(items[i].key);
        char *p = resp_hdr(cmdbuf, '*', items[i].ttl_ms ? 5 : 3);
        p = resp_arg(p, "SET", 3);
        p = resp_hdr(p, '$', b->plen + kl);
        memcpy(p, b->prefix, b->plen);
        memcpy(p + b->plen, items[i].key, kl);
        p += b->plen + kl;
        *p++ = '\r';
        *p++ = '\n';
        p = resp_arg(p, items[i].value, items[i].value_len);
        if (items[i].ttl_ms) {
            char ttl[24];
            size_t tl = fmt_u64(ttl, items[i].ttl_ms);
            p = resp_arg(p, "PX", 2);
            p = resp_arg(p, ttl, tl);
        }
        if ((rc = send_fmt(b, o, cmdbuf, (size_t)(p - cmdbuf))) < 0) return rc;
    }
    char *p = resp_hdr(cmdbuf, '*', 3);
    p = resp_arg(p, "PUBLISH", 7);
    p = resp_arg(p, b->chan_events, strlen(b->chan_events));
    p = resp_arg(p, msg, mlen);
    if ((rc = send_fmt(b, o, cmdbuf, (size_t)(p - cmdbuf))) < 0) return rc;
    if (n > 1 && (rc = send_fmt(b, o, "*1\r\n$4\r\nEXEC\r\n", 14)) < 0) return rc;
    return 0;
}

static int redis_del(struct sm_backend *base, const char *key, sm_cb cb, void *arg)
{
    struct rb *b = (struct rb *)base;
    int rc = check_ready(b);
    if (rc < 0) return rc;
    if (reserved_key(key))
        return sm_store_seterr(b->st, SM_EINVAL,
                               "key '%s': keys starting with '" LOCK_NS "' or '" FENCE_NS
                               "' are reserved for locks in the redis backend",
                               key);
    size_t kl = strlen(key);
    uint64_t wall = sm_wall_ms();
    struct sm_redis_ev e = {.type = 'D',
                            .time_ms = wall,
                            .origin = b->node,
                            .origin_len = b->node_len,
                            .key = key,
                            .key_len = kl};
    size_t esz = sm_redis_ev_size(&e);
    if ((rc = scratch_reserve(b, esz + b->plen + kl + 1)) < 0) return rc;
    struct rop *o = rop_get(b, K_DEL, cb, arg);
    if (!o) return SM_ENOMEM;
    o->version = e.version = next_version(b, wall);
    size_t mlen = sm_redis_ev_encode(b->scratch, esz, &e);
    char *pk = b->scratch + mlen;
    memcpy(pk, b->prefix, b->plen);
    memcpy(pk + b->plen, key, kl + 1);
    const char *argv[6] = {"EVAL", del_lua, "1", pk, b->chan_events, b->scratch};
    size_t lens[6] = {4, sizeof del_lua - 1, 1, b->plen + kl, strlen(b->chan_events), mlen};
    list_add(b, o);
    return send_argv(b, o, 6, argv, lens);
}

static int redis_ping(struct sm_backend *base, sm_cb cb, void *arg)
{
    struct rb *b = (struct rb *)base;
    int rc = check_ready(b);
    if (rc < 0) return rc;
    if (b->sub.state != C_UP && b->sub.down) {
        /* Writes would work, but nobody would hear about them. */
        return sm_store_seterr(b->st, SM_EUNAVAILABLE,
                               "redis at %s: the subscriber connection is down: %s", b->addr,
                               b->sub.last_msg);
    }
    struct rop *o = rop_get(b, K_PING, cb, arg);
    if (!o) return SM_ENOMEM;
    const char *argv[1] = {"PING"};
    size_t lens[1] = {4};
    list_add(b, o);
    return send_argv(b, o, 1, argv, lens);
}

/* ---- locks ---- */

static int lock_call(struct rb *b, enum rkind kind, const char *name, const char *token,
                     uint64_t ttl_ms, sm_cb cb, void *arg)
{
    int rc = check_ready(b);
    if (rc < 0) return rc;
    size_t nl = strlen(name);
    if (token && strlen(token) != 2 * TOKEN_BYTES)
        return sm_store_seterr(b->st, SM_ENOTOWNER, "lock '%s': not a token this backend issued",
                               name);
    if ((rc = scratch_reserve(b, 2 * (b->plen + sizeof FENCE_NS + nl + 1) + 48)) < 0) return rc;
    struct rop *o = rop_get(b, kind, cb, arg);
    if (!o) return SM_ENOMEM;
    o->name = sm_strdup(name);
    if (!o->name) {
        rop_put(o);
        return SM_ENOMEM;
    }
    o->ttl_ms = ttl_ms;
    if (token) {
        memcpy(o->token, token, 2 * TOKEN_BYTES + 1);
    } else {
        unsigned char raw[TOKEN_BYTES];
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(o->token, sizeof o->token, raw, sizeof raw);
    }
    char *lk = b->scratch;
    int ll = sprintf(lk, "%s" LOCK_NS "%s", b->prefix, name);
    char *fk = lk + ll + 1;
    int fl = sprintf(fk, "%s" FENCE_NS "%s", b->prefix, name);
    char *ttl = fk + fl + 1;
    size_t tl = fmt_u64(ttl, ttl_ms);
    char *until = ttl + tl + 1;
    size_t ul = fmt_u64(until, b->known_until);
    const char *script = kind == K_LOCK_ACQ     ? acquire_lua
                         : kind == K_LOCK_RENEW ? renew_lua
                                                : release_lua;
    const char *argv[13] = {"EVAL",      script,   "4",     lk,      fk,
                            b->epoch_key, b->wait_key, o->token, ttl, b->epoch,
                            until,        b->recovery_wait ? "1" : "0", b->run_id};
    size_t lens[13] = {4,
                       strlen(script),
                       1,
                       (size_t)ll,
                       (size_t)fl,
                       strlen(b->epoch_key),
                       strlen(b->wait_key),
                       2 * TOKEN_BYTES,
                       tl,
                       strlen(b->epoch),
                       ul,
                       1,
                       strlen(b->run_id)};
    list_add(b, o);
    return send_argv(b, o, 13, argv, lens);
}

static int redis_lock_acquire(struct sm_backend *base, const char *name, uint64_t ttl_ms, sm_cb cb,
                              void *arg)
{
    return lock_call((struct rb *)base, K_LOCK_ACQ, name, NULL, ttl_ms, cb, arg);
}

static int redis_lock_renew(struct sm_backend *base, const char *name, const char *token,
                            uint64_t ttl_ms, sm_cb cb, void *arg)
{
    return lock_call((struct rb *)base, K_LOCK_RENEW, name, token, ttl_ms, cb, arg);
}

static int redis_lock_release(struct sm_backend *base, const char *name, const char *token,
                              sm_cb cb, void *arg)
{
    return lock_call((struct rb *)base, K_LOCK_REL, name, token, 0, cb, arg);
}

static int redis_connected(struct sm_backend *base)
{
    struct rb *b = (struct rb *)base;
    return b->cmd.state == C_UP && b->sub.state == C_UP;
}

/* ---- open/close ---- */

static const char *const known_opts[] = {"addr",          "password",        "db",
                                         "prefix",        "connect_timeout", "command_timeout",
                                         "reconnect_min", "reconnect_max",   "lock_recovery", NULL};

static int check_opt(const char *key, const char *value, void *arg)
{
    (void)value;
    const char **bad = arg;
    for (size_t i = 0; known_opts[i]; i++)
        if (strcmp(key + 6, known_opts[i]) == 0) return 0;
    *bad = key;
    return 1;
}

/* "host:port", "[v6]:port", "host" (port 6379) or "unix:/path". Hostnames are
 * resolved here, once, so later connects never wait on DNS. */
static int parse_addr(struct rb *b, const char *addr, char *err, size_t errlen)
{
    snprintf(b->addr, sizeof b->addr, "%s", addr);
    if (strncmp(addr, "unix:", 5) == 0) {
        if (!addr[5]) goto bad;
        b->unix_path = sm_strdup(addr + 5);
        return b->unix_path ? 0 : SM_ENOMEM;
    }
    char host[NI_MAXHOST];
    const char *port = "6379";
    if (addr[0] == '[') {
        const char *e = strchr(addr, ']');
        if (!e || (size_t)(e - addr - 1) >= sizeof host) goto bad;
        memcpy(host, addr + 1, (size_t)(e - addr - 1));
        host[e - addr - 1] = '\0';
        if (e[1] == ':')
            port = e + 2;
        else if (e[1])
            goto bad;
    } else {
        const char *colon = strrchr(addr, ':');
        size_t hl = colon ? (size_t)(colon - addr) : strlen(addr);
        if (hl >= sizeof host || (colon && strchr(addr, ':') != colon)) goto bad;
        memcpy(host, addr, hl);
        host[hl] = '\0';
        if (colon) port = colon + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!host[0] || *end || p <= 0 || p > 65535) goto bad;
    b->port = (int)p;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int gr = getaddrinfo(host, NULL, &hints, &res);
    if (gr != 0 || !res) {
        snprintf(err, errlen, "option redis.addr: cannot resolve '%s': %s", host, gai_strerror(gr));
        return SM_ECONFIG;
    }
    gr = getnameinfo(res->ai_addr, res->ai_addrlen, b->host, sizeof b->host, NULL, 0,
                     NI_NUMERICHOST);
    freeaddrinfo(res);
    if (gr != 0) {
        snprintf(err, errlen, "option redis.addr: cannot resolve '%s'", host);
        return SM_ECONFIG;
    }
    return 0;
bad:
    snprintf(err, errlen, "option redis.addr: '%s' is not host:port, [ipv6]:port or unix:/path",
             addr);
    return SM_ECONFIG;
}

static void rb_free(struct rb *b)
{
    xt_clear(&b->xt);
    if (b->password) {
        sodium_memzero(b->password, strlen(b->password));
        free(b->password);
    }
    free(b->unix_path);
    for (size_t i = 0; i < b->nchunks; i++) free(b->chunks[i]);
    free(b->chunks);
    free(b->scratch);
    free(b);
}

static void conn_init(struct rb *b, struct rconn *c, bool is_sub)
{
    c->b = b;
    c->is_sub = is_sub;
    c->what = is_sub ? "subscriber" : "command";
    ev_timer_init(&c->conn_timer, conn_timeout_cb, 1., 0.);
    c->conn_timer.data = c;
    ev_timer_init(&c->retry_timer, retry_cb, 1., 0.);
    c->retry_timer.data = c;
    char l[64];
    snprintf(l, sizeof l, "connection=\"%s\"", is_sub ? "subscriber" : "command");
    c->reconnects = sm_metrics_counter(sm_store_metrics(b->st), "statemesh_redis_disconnects_total",
                                       "Redis connections lost or failed to establish", l);
}

/* The duration options, each 1 ms .. 1 h. */
static int parse_durations(struct rb *b, const struct sm_config *cfg, char *err, size_t errlen)
{
    static const struct {
        const char *key;
        uint64_t def;
        size_t off;
    } durs[] = {{"redis.connect_timeout", DEFAULT_CONNECT_MS, offsetof(struct rb, connect_ms)},
                {"redis.command_timeout", DEFAULT_COMMAND_MS, offsetof(struct rb, command_ms)},
                {"redis.reconnect_min", DEFAULT_RMIN_MS, offsetof(struct rb, rmin_ms)},
                {"redis.reconnect_max", DEFAULT_RMAX_MS, offsetof(struct rb, rmax_ms)}};
    int rc;
    for (size_t i = 0; i < sizeof durs / sizeof durs[0]; i++) {
        uint64_t *dst = (uint64_t *)((char *)b + durs[i].off);
        if ((rc = sm_cfg_ms(cfg, durs[i].key, durs[i].def, dst, err, errlen)) < 0) return rc;
        if (*dst == 0 || *dst > 3600 * 1000) {
            snprintf(err, errlen, "option %s: must be between 1 ms and 1 h", durs[i].key);
            return SM_ECONFIG;
        }
    }
    if (b->rmin_ms > b->rmax_ms) {
        snprintf(err, errlen,
                 "option redis.reconnect_min (%llu ms) exceeds reconnect_max (%llu ms)",
                 (unsigned long long)b->rmin_ms, (unsigned long long)b->rmax_ms);
        return SM_ECONFIG;
    }
    return 0;
}

/* Every option but the durations; names derived from the prefix. */
static int parse_options(struct rb *b, const struct sm_config *cfg, char *err, size_t errlen)
{
    int rc;
    if ((rc = parse_addr(b, sm_cfg_str(cfg, "redis.addr", DEFAULT_ADDR), err, errlen)) < 0)
        return rc;
    const char *pw = sm_cfg_str(cfg, "redis.password", NULL);
    if (pw && *pw && !(b->password = sm_strdup(pw))) return SM_ENOMEM;
    if ((rc = sm_cfg_u64(cfg, "redis.db", 0, &b->db, err, errlen)) < 0) return rc;
    if (b->db > MAX_DB) {
        snprintf(err, errlen, "option redis.db: %llu is out of range 0..%d",
                 (unsigned long long)b->db, MAX_DB);
        return SM_ECONFIG;
    }
    fmt_u64(b->db_str, b->db);
    const char *prefix = sm_cfg_str(cfg, "redis.prefix", DEFAULT_PREFIX);
    if (strlen(prefix) > MAX_PREFIX) {
        snprintf(err, errlen, "option redis.prefix: longer than %d bytes", MAX_PREFIX);
        return SM_ECONFIG;
    }
    snprintf(b->prefix, sizeof b->prefix, "%s", prefix);
    b->plen = strlen(b->prefix);
    snprintf(b->chan_events, sizeof b->chan_events, "%sevents", b->prefix);
    snprintf(b->chan_expired, sizeof b->chan_expired, "__keyevent@%llu__:expired",
             (unsigned long long)b->db);
    snprintf(b->epoch_key, sizeof b->epoch_key, "%s" META_NS "epoch", b->prefix);
    snprintf(b->wait_key, sizeof b->wait_key, "%s" META_NS "wait", b->prefix);
    const char *rec = sm_cfg_str(cfg, "redis.lock_recovery", "wait");
    if (strcmp(rec, "wait") != 0 && strcmp(rec, "off") != 0) {
        snprintf(err, errlen, "option redis.lock_recovery: '%s' is neither 'wait' nor 'off'", rec);
        return SM_ECONFIG;
    }
    b->recovery_wait = strcmp(rec, "wait") == 0;
    return parse_durations(b, cfg, err, errlen);
}

static void register_metrics(struct rb *b, struct sm_metrics *m)
{
    b->m_timeouts =
        sm_metrics_counter(m, "statemesh_redis_command_timeouts_total",
                           "Redis commands that timed out (the connection is reset)", "");
    b->m_events = sm_metrics_counter(m, "statemesh_redis_events_received_total",
                                     "Change events received on the redis subscription", "");
    b->m_bad_events = sm_metrics_counter(m, "statemesh_redis_bad_events_total",
                                         "Malformed messages dropped from the events channel", "");
    b->m_expired = sm_metrics_counter(m, "statemesh_redis_expired_events_total",
                                      "Key expiry notifications received from redis", "");
    b->m_epochs = sm_metrics_counter(m, "statemesh_redis_lock_epochs_total",
                                     "Redis restarts or data losses seen by the lock scripts", "");
    b->m_recovery_refusals =
        sm_metrics_counter(m, "statemesh_redis_lock_recovery_refusals_total",
                           "Lock acquires refused while leases from before a redis restart "
                           "may still run",
                           "");
}

static int redis_open(struct sm_store *st, const struct sm_config *cfg, struct sm_backend **out,
                      char *err, size_t errlen)
{
    const char *bad = NULL;
    if (sm_cfg_foreach(cfg, "redis.", check_opt, &bad)) {
        snprintf(err, errlen,
                 "unknown option '%s' (redis backend knows addr, password, db, prefix, "
                 "connect_timeout, command_timeout, reconnect_min, reconnect_max, "
                 "lock_recovery)",
                 bad);
        return SM_ECONFIG;
    }
    struct rb *b = calloc(1, sizeof *b);
    if (!b) return SM_ENOMEM;
    b->st = st;
    b->loop = sm_store_loop(st);
    b->expiry_events = -1;
    int rc = parse_options(b, cfg, err, errlen);
    if (rc < 0) {
        rb_free(b);
        return rc;
    }
    snprintf(b->node, sizeof b->node, "%s", sm_store_node_id(st));
    b->node_len = strlen(b->node);
    register_metrics(b, sm_store_metrics(st));
    b->base.store = st;
    ev_now_update(b->loop); /* relative timers below start from a fresh "now" */
    conn_init(b, &b->cmd, false);
    conn_init(b, &b->sub, true);
    ev_timer_init(&b->cmd_timer, cmd_timeout_cb, 1., 0.);
    b->cmd_timer.data = b;
    conn_start(&b->cmd);
    conn_start(&b->sub);
    *out = &b->base;
    return 0;
}

static void redis_close(struct sm_backend *base)
{
    struct rb *b = (struct rb *)base;
    b->closing = true;
    struct rconn *cs[2] = {&b->cmd, &b->sub};
    for (int i = 0; i < 2; i++) {
        ev_timer_stop(b->loop, &cs[i]->retry_timer);
        ev_timer_stop(b->loop, &cs[i]->conn_timer);
        /* Frees the context: every pending callback runs now with a NULL
         * reply and answers its caller with SM_ECLOSED. */
        conn_drop(cs[i], SM_ECLOSED, "store closed");
    }
    ev_timer_stop(b->loop, &b->cmd_timer);
    /* Anything still unanswered (only possible if hiredis deferred the free
     * because we are inside one of its callbacks) is answered now. */
    while (b->head) rop_fail(b->head, SM_ECLOSED, "store closed");
    rb_free(b);
}

const struct sm_backend_vt sm_backend_redis = {
    .name = "redis",
    .open = redis_open,
    .close = redis_close,
    .get_multi = redis_get_multi,
    .set_multi = redis_set_multi,
    .del = redis_del,
    .ping = redis_ping,
    .lock_acquire = redis_lock_acquire,
    .lock_renew = redis_lock_renew,
    .lock_release = redis_lock_release,
    .connected = redis_connected,
};
