/* sm_inject.c: craft gossip packets (foreign-CA, replayed, relay-re-signed) and send them to a
 * running statemeshd over UDP, for the attack tests in test_mesh_attacks.sh. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "crdt/hlc.h"
#include "crdt/record.h"
#include "crypto/cert.h"
#include "crypto/ctx.h"
#include "crypto/envelope.h"
#include "crypto/recsig.h"
#include "gossip/udp.h"
#include "gossip/wire.h"
#include "tests/lib/udp_port.h"

/* Payload room: well under the daemon's default MTU once sealed. */
#define PAYLOAD_CAP 1024
#define PKT_CAP     (PAYLOAD_CAP + SMC_ENV_MAX_OVERHEAD)
#define RAW_CAP     65536

static const char usage[] =
    "Usage: sm_inject port\n"
    "       sm_inject raw PORT FILE...\n"
    "       sm_inject [OPTIONS] rec PORT KEY VALUE\n"
    "       sm_inject [OPTIONS] capture PORT FILE\n"
    "\n"
    "port     print a free UDP port on 127.0.0.1\n"
    "raw      send each FILE, unchanged, as one datagram to 127.0.0.1:PORT\n"
    "rec      seal a gossip packet holding one record message and send it to\n"
    "         127.0.0.1:PORT\n"
    "capture  join the daemon at 127.0.0.1:PORT (a sealed JOIN) and save the\n"
    "         first datagram it sends back to FILE (waits up to 5 s)\n"
    "\n"
    "Sender (rec and capture need --cert/--key/--ca or --self-signed):\n"
    "  --cert FILE --key FILE  a node identity (from 'statemesh cert issue')\n"
    "  --ca FILE               the CA that certified it (ca.pub or its directory)\n"
    "  --self-signed ID        a fresh key pair for node ID whose certificate it\n"
    "                          signed itself (a key no cluster CA certified)\n"
    "  --no-cert               do not attach the sender certificate to the packet\n"
    "  --inc N                 sender incarnation (default: wall-clock ms)\n"
    "  --seq N                 packet sequence number (default 1)\n"
    "  --payload-sender ID     sender id written in the gossip payload header\n"
    "                          (default: the sender's own, as in the envelope)\n"
    "  --save FILE             also write the sealed packet to FILE (for replays)\n"
    "  --no-send               rec: only --save the packet, do not send it\n"
    "Record:\n"
    "  --origin ID             record origin (default: the sender)\n"
    "  --version N             record version (default 1)\n"
    "  --delete                a tombstone (VALUE is ignored)\n"
    "  --sig-key FILE          sign the record with this secret key file (default:\n"
    "                          the sender's key)\n"
    "  --sig-value V           the value the signature covers (default: VALUE)\n"
    "  --unsigned              send the record without a signature\n";

struct opts {
    const char *cert, *key, *ca, *self_signed, *save;
    const char *origin, *sig_key, *sig_value, *payload_sender;
    bool no_cert, no_send, del, unsigned_rec;
    uint64_t inc, seq, version;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-') return -1;
    *out = v;
    return 0;
}

static int parse_port(const char *s)
{
    uint64_t v;
    if (parse_u64(s, &v) != 0 || v == 0 || v > 65535) {
        fprintf(stderr, "sm_inject: bad port '%s'\n", s);
        return -1;
    }
    return (int)v;
}

/* The PORT (first) argument of a subcommand taking @p min..@p max arguments;
 * -1 once the usage or the bad port has been reported. */
static int port_arg(int argc, int min, int max, char **argv)
{
    if (argc < min || argc > max) {
        fputs(usage, stderr);
        return -1;
    }
    return parse_port(argv[0]);
}

static int send_to(int port, const uint8_t *buf, size_t len)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("sm_inject: socket");
        return -1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ssize_t n = sendto(fd, buf, len, 0, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    close(fd);
    if (n != (ssize_t)len) {
        fprintf(stderr, "sm_inject: sendto 127.0.0.1:%d: %s\n", port,
                n < 0 ? strerror(e) : "short write");
        return -1;
    }
    return 0;
}

static int write_file(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len) {
        fprintf(stderr, "sm_inject: cannot write %s: %s\n", path, strerror(errno));
        if (f) fclose(f);
        return -1;
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "sm_inject: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* `raw PORT FILE...`: replay captured or saved datagrams byte for byte. */
static int cmd_raw(int argc, char **argv)
{
    int port = port_arg(argc, 2, INT_MAX, argv);
    if (port < 0) return 2;
    uint8_t *buf = malloc(RAW_CAP);
    if (!buf) {
        perror("sm_inject");
        return 1;
    }
    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            fprintf(stderr, "sm_inject: cannot open %s: %s\n", argv[i], strerror(errno));
            rc = 1;
            break;
        }
        size_t n = fread(buf, 1, RAW_CAP, f);
        bool bad = ferror(f) || n == 0 || n >= RAW_CAP;
        fclose(f);
        if (bad) {
            fprintf(stderr, "sm_inject: %s: empty, unreadable or too large\n", argv[i]);
            rc = 1;
        } else if (send_to(port, buf, n) != 0) {
            rc = 1;
        }
    }
    free(buf);
    return rc;
}

/* A key pair for node @p id with a certificate signed by that same key. */
static int self_signed_identity(const char *id, struct smc_identity *out)
{
    struct smc_keypair kp;
    struct smc_cert c = {0};
    size_t len = strlen(id);
    if (!smc_node_id_valid(id, len)) {
        fprintf(stderr, "sm_inject: bad node id '%s'\n", id);
        return -1;
    }
    if (smc_keypair_generate(&kp) != 0) return -1;
    memcpy(c.node_id, id, len);
    c.node_id_len = len;
    memcpy(c.node_pk, kp.pk, SMC_PK_LEN);
    c.not_before_ms = wall_ms() - 60000;
    c.not_after_ms = wall_ms() + 86400000;
    int rc = smc_cert_sign(&c, &kp) == 0 && smc_identity_init(out, &c, &kp) == 0 ? 0 : -1;
    smc_keypair_wipe(&kp);
    if (rc) fprintf(stderr, "sm_inject: cannot make a self-signed certificate\n");
    return rc;
}

/* Build the record of `rec` and sign it as the options say; @p sig must outlive @p r. */
static int make_record(const struct opts *o, const struct smc_identity *id, const char *key,
                       const char *value, struct crdt_rec_view *r, uint8_t sig[SMC_SIG_LEN])
{
    *r = (struct crdt_rec_view){
        .key = key,
        .key_len = strlen(key),
        .value = o->del ? NULL : (const uint8_t *)value,
        .value_len = o->del ? 0 : strlen(value),
        .version = o->version,
        .hlc = crdt_hlc_make((uint64_t)wall_ms(), 0),
        .origin = o->origin ? o->origin : id->cert.node_id,
        .origin_len = o->origin ? strlen(o->origin) : id->cert.node_id_len,
        .flags = o->del ? CRDT_F_TOMBSTONE : 0,
    };
    if (o->unsigned_rec) return 0;
    struct crdt_rec_view covered = *r;
    if (o->sig_value) {
        covered.value = (const uint8_t *)o->sig_value;
        covered.value_len = strlen(o->sig_value);
    }
    struct smc_keypair kp;
    char err[256];
    if (o->sig_key && smc_key_load(o->sig_key, &kp, err, sizeof err) != 0) {
        fprintf(stderr, "sm_inject: %s\n", err);
        return -1;
    }
    int rc = smc_rec_sign_with(o->sig_key ? &kp : &id->kp, &covered, sig);
    if (o->sig_key) smc_keypair_wipe(&kp);
    if (rc != 0) {
        fprintf(stderr, "sm_inject: cannot sign the record: %s\n", sm_strerror(rc));
        return -1;
    }
    r->sig = sig;
    r->flags |= CRDT_F_SIGNED;
    return 0;
}

/* The sending side of `rec` and `capture`: identity, crypto context, incarnation. */
struct sender {
    struct smc_identity id;
    struct smc_ctx *ctx;
    uint64_t inc;
};

static int sender_open(const struct opts *o, struct sender *s)
{
    uint8_t ca_pk[SMC_PK_LEN];
    char err[256];
    memset(s, 0, sizeof *s);
    if (!o->self_signed == !(o->cert && o->key) || (o->cert && !o->ca)) {
        fprintf(stderr, "sm_inject: needs --cert, --key and --ca, or --self-signed\n");
        return -1;
    }
    if (o->self_signed) {
        if (self_signed_identity(o->self_signed, &s->id) != 0) return -1;
        memcpy(ca_pk, s->id.kp.pk, SMC_PK_LEN);
    } else if (smc_identity_load(&s->id, o->cert, o->key, err, sizeof err) != 0 ||
               smc_ca_load_pub(o->ca, ca_pk, err, sizeof err) != 0) {
        fprintf(stderr, "sm_inject: %s\n", err);
        smc_identity_wipe(&s->id);
        return -1;
    }
    s->inc = o->inc ? o->inc : (uint64_t)wall_ms();
    struct smc_ctx_config cc = {
        .self = &s->id, .ca_pk = ca_pk, .now_ms = wall_ms(), .incarnation = s->inc};
    if (smc_ctx_new(&cc, &s->ctx, err, sizeof err) != 0) {
        fprintf(stderr, "sm_inject: %s\n", err);
        smc_identity_wipe(&s->id);
        return -1;
    }
    return 0;
}

static void sender_close(struct sender *s)
{
    smc_ctx_delete(s->ctx);
    smc_identity_wipe(&s->id);
}

/* Seal the finished payload @p e into @p pkt (PKT_CAP bytes) and save it if asked. */
static int sender_seal(const struct opts *o, struct sender *s, struct gossip_enc *e, uint8_t *pkt,
                       size_t *pkt_len)
{
    size_t len = gossip_enc_finish(e);
    int rc = smc_seal(s->ctx, o->seq, o->no_cert ? 0 : SMC_SEAL_CERT, e->buf, len, pkt, PKT_CAP,
                      pkt_len);
    if (rc != 0) {
        fprintf(stderr, "sm_inject: seal: %s\n", sm_strerror(rc));
        return -1;
    }
    return o->save ? write_file(o->save, pkt, *pkt_len) : 0;
}

/* `rec PORT KEY VALUE`: one sealed packet with one record message. */
static int cmd_rec(const struct opts *o, int argc, char **argv)
{
    int port = port_arg(argc, 3, 3, argv);
    if (port < 0) return 2;
    struct sender s;
    if (sender_open(o, &s) != 0) return 1;
    uint8_t payload[PAYLOAD_CAP], pkt[PKT_CAP], sig[SMC_SIG_LEN];
    size_t pkt_len = 0;
    struct crdt_rec_view r;
    struct gossip_enc e;
    int rc = 1;
    const char *ps = o->payload_sender ? o->payload_sender : s.id.cert.node_id;
    if (make_record(o, &s.id, argv[1], argv[2], &r, sig) != 0) goto out;
    if (gossip_enc_begin(&e, payload, sizeof payload, ps, strlen(ps), s.inc) != 0 ||
        gossip_enc_rec(&e, GOSSIP_RK_EAGER, 0, &r) != 0) {
        fprintf(stderr, "sm_inject: the record does not fit in one packet\n");
        goto out;
    }
    if (sender_seal(o, &s, &e, pkt, &pkt_len) != 0) goto out;
    if (!o->no_send && send_to(port, pkt, pkt_len) != 0) goto out;
    rc = 0;
out:
    sender_close(&s);
    sodium_memzero(sig, sizeof sig);
    return rc;
}

/*
 * `capture PORT FILE`: join the daemon at PORT from a fresh socket (a sealed
 * JOIN naming that socket) and save the first datagram the daemon sends back:
 * a real packet, signed by the daemon, for replaying elsewhere.
 */
static int cmd_capture(const struct opts *o, int argc, char **argv)
{
    int port = port_arg(argc, 2, 2, argv);
    if (port < 0) return 2;
    struct sender s;
    if (sender_open(o, &s) != 0) return 1;
    uint8_t payload[PAYLOAD_CAP], pkt[PKT_CAP];
    uint8_t *in = malloc(RAW_CAP);
    size_t pkt_len = 0;
    int rc = 1;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in to = me;
    to.sin_port = htons((uint16_t)port);
    socklen_t ml = sizeof me;
    if (!in || fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof me) != 0 ||
        getsockname(fd, (struct sockaddr *)&me, &ml) != 0) {
        perror("sm_inject: capture socket");
        goto out;
    }
    char hp[32], err[128];
    struct sm_addr self;
    snprintf(hp, sizeof hp, "127.0.0.1:%u", (unsigned)ntohs(me.sin_port));
    if (gossip_addr_parse(hp, &self, err, sizeof err) != 0) {
        fprintf(stderr, "sm_inject: %s\n", err);
        goto out;
    }
    struct gossip_enc e;
    if (gossip_enc_begin(&e, payload, sizeof payload, s.id.cert.node_id, s.id.cert.node_id_len,
                         s.inc) != 0 ||
        gossip_enc_join(&e, &self, s.id.cert_bytes, s.id.cert_len, 0) != 0 ||
        sender_seal(o, &s, &e, pkt, &pkt_len) != 0)
        goto out;
    if (sendto(fd, pkt, pkt_len, 0, (struct sockaddr *)&to, sizeof to) != (ssize_t)pkt_len) {
        perror("sm_inject: sendto");
        goto out;
    }
    int64_t deadline = wall_ms() + 5000;
    for (int64_t now = wall_ms(); now < deadline; now = wall_ms()) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(deadline - now)) <= 0) continue;
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, in, RAW_CAP, 0, (struct sockaddr *)&from, &fl);
        if (n <= 0 || from.sin_port != to.sin_port) continue;
        rc = write_file(argv[1], in, (size_t)n) == 0 ? 0 : 1;
        break;
    }
    if (rc) fprintf(stderr, "sm_inject: nothing came back from 127.0.0.1:%d\n", port);
out:
    if (fd >= 0) close(fd);
    free(in);
    sender_close(&s);
    return rc;
}

/* Parse the options before the command; returns the index of the command, or -1 (usage error). */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    const struct {
        const char *name;
        bool *flag;
    } flags[] = {{"--no-cert", &o->no_cert},
                 {"--no-send", &o->no_send},
                 {"--delete", &o->del},
                 {"--unsigned", &o->unsigned_rec}};
    const struct {
        const char *name;
        const char **str;
        uint64_t *num;
    } vals[] = {{"--cert", &o->cert, NULL},
                {"--key", &o->key, NULL},
                {"--ca", &o->ca, NULL},
                {"--self-signed", &o->self_signed, NULL},
                {"--save", &o->save, NULL},
                {"--origin", &o->origin, NULL},
                {"--sig-key", &o->sig_key, NULL},
                {"--sig-value", &o->sig_value, NULL},
                {"--payload-sender", &o->payload_sender, NULL},
                {"--inc", NULL, &o->inc},
                {"--seq", NULL, &o->seq},
                {"--version", NULL, &o->version}};
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        const char *a = argv[i++];
        bool known = false;
        for (size_t k = 0; k < sizeof flags / sizeof flags[0] && !known; k++)
            if (!strcmp(a, flags[k].name)) *flags[k].flag = known = true;
        for (size_t k = 0; k < sizeof vals / sizeof vals[0] && !known; k++) {
            if (strcmp(a, vals[k].name) != 0) continue;
            known = true;
            if (i >= argc) {
                fprintf(stderr, "sm_inject: %s needs a value\n", a);
                return -1;
            }
            const char *v = argv[i++];
            if (vals[k].str) {
                *vals[k].str = v;
            } else if (parse_u64(v, vals[k].num) != 0) {
                fprintf(stderr, "sm_inject: bad number for %s: '%s'\n", a, v);
                return -1;
            }
        }
        if (!known) {
            fprintf(stderr, "sm_inject: unknown option %s\n", a);
            return -1;
        }
    }
    return i;
}

int main(int argc, char **argv)
{
    struct opts o = {.seq = 1, .version = 1};
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        fputs(usage, stdout);
        return 0;
    }
    int i = parse_opts(argc, argv, &o);
    if (i < 0) {
        fputs(usage, stderr);
        return 2;
    }
    if (i >= argc) {
        fputs(usage, stderr);
        return 2;
    }
    if (smc_init() != 0) {
        fprintf(stderr, "sm_inject: libsodium failed to initialise\n");
        return 1;
    }
    const char *cmd = argv[i++];
    if (!strcmp(cmd, "port")) {
        int p = free_udp_port();
        if (p < 0) {
            perror("sm_inject: port");
            return 1;
        }
        printf("%d\n", p);
        return 0;
    }
    if (!strcmp(cmd, "raw")) return cmd_raw(argc - i, argv + i);
    if (!strcmp(cmd, "rec")) return cmd_rec(&o, argc - i, argv + i);
    if (!strcmp(cmd, "capture")) return cmd_capture(&o, argc - i, argv + i);
    fprintf(stderr, "sm_inject: unknown command '%s'\n%s", cmd, usage);
    return 2;
}
