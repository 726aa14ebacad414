/* cert.c: node certificates signed by the cluster CA, revocation lists, CA files, identities. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "crypto/internal.h"

#define TAG_CERT "statemesh-cert-v1"
/* Certificates are back-dated this much so that nodes whose clocks lag the
 * issuing machine a little can use a certificate at once. */
#define SMC_ISSUE_BACKDATE_MS (5 * 60 * 1000)

size_t smc_cert_encoded_len(const struct smc_cert *c)
{
    return SMC_CERT_FIXED_LEN + c->node_id_len;
}

/* Encode everything but the signature; returns the signed length. */
static size_t cert_body(const struct smc_cert *c, uint8_t *out)
{
    size_t n = c->node_id_len, off = 0;
    out[off++] = SMC_CERT_TAG;
    out[off++] = (uint8_t)n;
    memcpy(out + off, c->node_id, n);
    off += n;
    memcpy(out + off, c->node_pk, SMC_PK_LEN);
    off += SMC_PK_LEN;
    smc__be64(out + off, (uint64_t)c->not_before_ms);
    off += 8;
    smc__be64(out + off, (uint64_t)c->not_after_ms);
    off += 8;
    memcpy(out + off, c->issuer, SMC_KEYID_LEN);
    off += SMC_KEYID_LEN;
    return off;
}

int smc_cert_encode(const struct smc_cert *c, uint8_t *out, size_t cap, size_t *outlen)
{
    if (!c || !out || !smc_node_id_valid(c->node_id, c->node_id_len)) return SM_EINVAL;
    size_t need = smc_cert_encoded_len(c);
    if (cap < need) return SM_ERANGE;
    size_t off = cert_body(c, out);
    memcpy(out + off, c->sig, SMC_SIG_LEN);
    if (outlen) *outlen = need;
    return 0;
}

static int set_why(enum smc_reason *why, enum smc_reason r, int code)
{
    if (why) *why = r;
    return code;
}

int smc_cert_decode(const uint8_t *buf, size_t len, struct smc_cert *out, enum smc_reason *why)
{
    if (!buf || !out) return set_why(why, SMC_R_FORMAT, SM_EINVAL);
    if (len < 2) return set_why(why, SMC_R_TRUNCATED, SM_EPROTO);
    if (buf[0] != SMC_CERT_TAG) return set_why(why, SMC_R_VERSION, SM_EPROTO);
    size_t n = buf[1];
    if (n == 0 || n > SMC_MAX_ID) return set_why(why, SMC_R_FORMAT, SM_EPROTO);
    if (len < SMC_CERT_FIXED_LEN + n) return set_why(why, SMC_R_TRUNCATED, SM_EPROTO);
    if (len > SMC_CERT_FIXED_LEN + n) return set_why(why, SMC_R_FORMAT, SM_EPROTO);
    if (!smc_node_id_valid((const char *)buf + 2, n)) return set_why(why, SMC_R_FORMAT, SM_EPROTO);
    memset(out, 0, sizeof(*out));
    memcpy(out->node_id, buf + 2, n);
    out->node_id_len = n;
    size_t off = 2 + n;
    memcpy(out->node_pk, buf + off, SMC_PK_LEN);
    off += SMC_PK_LEN;
    out->not_before_ms = (int64_t)smc__get_be64(buf + off);
    off += 8;
    out->not_after_ms = (int64_t)smc__get_be64(buf + off);
    off += 8;
    memcpy(out->issuer, buf + off, SMC_KEYID_LEN);
    off += SMC_KEYID_LEN;
    memcpy(out->sig, buf + off, SMC_SIG_LEN);
    return set_why(why, SMC_R_OK, 0);
}

int smc_cert_sign(struct smc_cert *c, const struct smc_keypair *ca)
{
    uint8_t body[SMC_CERT_MAX_LEN];
    if (!c || !ca || !smc_node_id_valid(c->node_id, c->node_id_len)) return SM_EINVAL;
    if (c->not_after_ms < c->not_before_ms) return SM_EINVAL;
    if (smc_init() < 0) return SM_ECRYPTO;
    smc_key_id(ca->pk, c->issuer);
    size_t n = cert_body(c, body);
    if (crypto_sign_detached(c->sig, NULL, body, n, ca->sk) != 0) return SM_ECRYPTO;
    return 0;
}

/* ---- revocation list ---- */

struct smc_revlist {
    char (*ids)[SMC_MAX_ID + 1];
    size_t n_ids, cap_ids;
    uint8_t (*fps)[SMC_FP_LEN];
    size_t n_fps, cap_fps;
};

struct smc_revlist *smc_revlist_new(void)
{
    return calloc(1, sizeof(struct smc_revlist));
}

void smc_revlist_delete(struct smc_revlist *rl)
{
    if (!rl) return;
    free(rl->ids);
    free(rl->fps);
    free(rl);
}

static int revlist_has_id(const struct smc_revlist *rl, const char *id, size_t len)
{
    for (size_t i = 0; i < rl->n_ids; i++)
        if (strlen(rl->ids[i]) == len && memcmp(rl->ids[i], id, len) == 0) return 1;
    return 0;
}

static int revlist_has_fp(const struct smc_revlist *rl, const uint8_t fp[SMC_FP_LEN])
{
    for (size_t i = 0; i < rl->n_fps; i++)
        if (memcmp(rl->fps[i], fp, SMC_FP_LEN) == 0) return 1;
    return 0;
}

int smc_revlist_add_id(struct smc_revlist *rl, const char *id, size_t len)
{
    if (!rl || !smc_node_id_valid(id, len)) return SM_EINVAL;
    if (revlist_has_id(rl, id, len)) return 0;
    if (rl->n_ids == rl->cap_ids) {
        size_t cap = rl->cap_ids ? rl->cap_ids * 2 : 8;
        void *p = realloc(rl->ids, cap * sizeof(*rl->ids));
        if (!p) return SM_ENOMEM;
        rl->ids = p;
        rl->cap_ids = cap;
    }
    memcpy(rl->ids[rl->n_ids], id, len);
    rl->ids[rl->n_ids][len] = '\0';
    rl->n_ids++;
    return 0;
}

int smc_revlist_add_fp(struct smc_revlist *rl, const uint8_t fp[SMC_FP_LEN])
{
    if (!rl || !fp) return SM_EINVAL;
    if (revlist_has_fp(rl, fp)) return 0;
    if (rl->n_fps == rl->cap_fps) {
        size_t cap = rl->cap_fps ? rl->cap_fps * 2 : 8;
        void *p = realloc(rl->fps, cap * sizeof(*rl->fps));
        if (!p) return SM_ENOMEM;
        rl->fps = p;
        rl->cap_fps = cap;
    }
    memcpy(rl->fps[rl->n_fps++], fp, SMC_FP_LEN);
    return 0;
}

int smc_revlist_load(struct smc_revlist *rl, const char *path, char *err, size_t errlen)
{
    char line[512];
    unsigned lineno = 0;
    int rc = 0;
    if (!rl || !path) return smc__err(err, errlen, SM_EINVAL, "no list or path");
    FILE *f = fopen(path, "re");
    if (!f) return smc__err(err, errlen, SM_EIO, "%s: cannot open: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
            rc = smc__err(err, errlen, SM_ECONFIG, "%s:%u: line too long", path, lineno);
            goto out;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t'))
            line[--n] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '\0' || *p == '#') continue;
        if (strncmp(p, "id ", 3) == 0) {
            const char *id = p + 3;
            while (*id == ' ') id++;
            if (!smc_node_id_valid(id, strlen(id))) {
                rc = smc__err(err, errlen, SM_ECONFIG, "%s:%u: invalid node id", path, lineno);
                goto out;
            }
            rc = smc_revlist_add_id(rl, id, strlen(id));
        } else if (strncmp(p, "fp ", 3) == 0) {
            uint8_t fp[SMC_FP_LEN];
            size_t binlen = 0;
            const char *hex = p + 3, *end = NULL;
            while (*hex == ' ') hex++;
            if (sodium_hex2bin(fp, sizeof(fp), hex, strlen(hex), NULL, &binlen, &end) != 0 ||
                binlen != SMC_FP_LEN || *end != '\0') {
                rc = smc__err(err, errlen, SM_ECONFIG, "%s:%u: a fingerprint must be 64 hex digits",
                              path, lineno);
                goto out;
            }
            rc = smc_revlist_add_fp(rl, fp);
        } else {
            rc = smc__err(err, errlen, SM_ECONFIG, "%s:%u: expected \"id NODE_ID\" or \"fp HEX64\"",
                          path, lineno);
            goto out;
        }
        if (rc < 0) {
            smc__err(err, errlen, rc, "%s:%u: out of memory", path, lineno);
            goto out;
        }
    }
    if (ferror(f)) rc = smc__err(err, errlen, SM_EIO, "%s: read error", path);
out:
    fclose(f);
    return rc;
}

int smc_revlist_contains(const struct smc_revlist *rl, const struct smc_cert *c)
{
    if (!rl || !c) return 0;
    if (revlist_has_id(rl, c->node_id, c->node_id_len)) return 1;
    if (rl->n_fps) {
        uint8_t fp[SMC_FP_LEN];
        smc_fingerprint(c->node_pk, fp);
        if (revlist_has_fp(rl, fp)) return 1;
    }
    return 0;
}

int smc_cert_verify(const struct smc_cert *c, const uint8_t ca_pk[SMC_PK_LEN], int64_t now_ms,
                    const struct smc_revlist *rl, enum smc_reason *why)
{
    uint8_t body[SMC_CERT_MAX_LEN], ca_id[SMC_KEYID_LEN];
    if (!c || !ca_pk || !smc_node_id_valid(c->node_id, c->node_id_len))
        return set_why(why, SMC_R_FORMAT, SM_EINVAL);
    if (smc_init() < 0) return set_why(why, SMC_R_BADSIG, SM_ECRYPTO);
    smc_key_id(ca_pk, ca_id);
    if (sodium_memcmp(ca_id, c->issuer, SMC_KEYID_LEN) != 0)
        return set_why(why, SMC_R_WRONG_CA, SM_ECRYPTO);
    size_t n = cert_body(c, body);
    if (crypto_sign_verify_detached(c->sig, body, n, ca_pk) != 0)
        return set_why(why, SMC_R_BADSIG, SM_ECRYPTO);
    if (now_ms < c->not_before_ms) return set_why(why, SMC_R_NOT_YET_VALID, SM_EAUTH);
    if (now_ms > c->not_after_ms) return set_why(why, SMC_R_EXPIRED, SM_EAUTH);
    if (smc_revlist_contains(rl, c)) return set_why(why, SMC_R_REVOKED, SM_EAUTH);
    return set_why(why, SMC_R_OK, 0);
}

int smc_cert_save(const char *path, const struct smc_cert *c, char *err, size_t errlen)
{
    uint8_t buf[SMC_CERT_MAX_LEN];
    size_t n = 0;
    if (!path || !c) return smc__err(err, errlen, SM_EINVAL, "no path or certificate");
    if (smc_cert_encode(c, buf, sizeof(buf), &n) != 0)
        return smc__err(err, errlen, SM_EINVAL, "%s: invalid certificate", path);
    return smc__write_b64_file(path, 0644, TAG_CERT, buf, n, err, errlen);
}

int smc_cert_load(const char *path, struct smc_cert *c, char *err, size_t errlen)
{
    uint8_t buf[SMC_CERT_MAX_LEN];
    size_t n = 0;
    enum smc_reason why;
    if (!path || !c) return smc__err(err, errlen, SM_EINVAL, "no path or certificate");
    int rc = smc__read_b64_file(path, 0, TAG_CERT, buf, sizeof(buf), 0, &n, err, errlen);
    if (rc < 0) return rc;
    if (smc_cert_decode(buf, n, c, &why) != 0)
        return smc__err(err, errlen, SM_ECONFIG, "%s: bad certificate: %s", path,
                        smc_reason_str(why));
    return 0;
}

/* ---- CA and issuing (CLI helpers; these use the wall clock and the file system) ---- */

static int ensure_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (mkdir(dir, 0700) == 0) return 0;
    if (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    return smc__err(err, errlen, SM_EIO, "%s: cannot create directory: %s", dir,
                    strerror(errno == EEXIST ? ENOTDIR : errno));
}

int smc_ca_init(const char *dir, char *err, size_t errlen)
{
    char kpath[4096], ppath[4096];
    struct smc_keypair ca;
    int rc;
    if (!dir || !*dir) return smc__err(err, errlen, SM_EINVAL, "no CA directory given");
    if (smc__path(kpath, sizeof(kpath), dir, "ca", ".key") < 0 ||
        smc__path(ppath, sizeof(ppath), dir, "ca", ".pub") < 0)
        return smc__err(err, errlen, SM_ERANGE, "%s: path too long", dir);
    if ((rc = ensure_dir(dir, err, errlen)) < 0) return rc;
    if ((rc = smc_keypair_generate(&ca)) < 0)
        return smc__err(err, errlen, rc, "cannot generate the CA key");
    if ((rc = smc_key_save(kpath, &ca, err, errlen)) < 0) goto out;
    if ((rc = smc_pub_save(ppath, ca.pk, err, errlen)) < 0) unlink(kpath);
out:
    smc_keypair_wipe(&ca);
    return rc;
}

int smc_ca_load_pub(const char *path, uint8_t pk[SMC_PK_LEN], char *err, size_t errlen)
{
    char buf[4096];
    struct stat st;
    if (!path || !pk) return smc__err(err, errlen, SM_EINVAL, "no CA path");
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (smc__path(buf, sizeof(buf), path, "ca", ".pub") < 0)
            return smc__err(err, errlen, SM_ERANGE, "%s: path too long", path);
        return smc_pub_load(buf, pk, err, errlen);
    }
    return smc_pub_load(path, pk, err, errlen);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int smc_cert_issue_at(const char *ca_dir, const char *node_id, const char *out_dir,
                      int64_t not_before_ms, int64_t not_after_ms, char *err, size_t errlen)
{
    char path[4096], kpath[4096], cpath[4096];
    struct smc_keypair ca, node;
    struct smc_cert cert;
    int rc;

    memset(&ca, 0, sizeof(ca));
    memset(&node, 0, sizeof(node));
    if (!ca_dir || !node_id || !out_dir)
        return smc__err(err, errlen, SM_EINVAL, "need a CA directory, a node id and an output");
    size_t idlen = strlen(node_id);
    if (!smc_node_id_valid(node_id, idlen))
        return smc__err(err, errlen, SM_EINVAL,
                        "invalid node id \"%s\": 1..64 characters of [A-Za-z0-9._:@-], not "
                        "starting with '.'",
                        node_id);
    if (not_after_ms < not_before_ms)
        return smc__err(err, errlen, SM_EINVAL, "validity ends before it starts");
    if (smc__path(path, sizeof(path), ca_dir, "ca", ".key") < 0 ||
        smc__path(kpath, sizeof(kpath), out_dir, node_id, ".key") < 0 ||
        smc__path(cpath, sizeof(cpath), out_dir, node_id, ".cert") < 0)
        return smc__err(err, errlen, SM_ERANGE, "path too long");
    if ((rc = smc_key_load(path, &ca, err, errlen)) < 0) goto out;
    if ((rc = ensure_dir(out_dir, err, errlen)) < 0) goto out;
    if ((rc = smc_keypair_generate(&node)) < 0) {
        smc__err(err, errlen, rc, "cannot generate the node key");
        goto out;
    }
    memset(&cert, 0, sizeof(cert));
    memcpy(cert.node_id, node_id, idlen);
    cert.node_id_len = idlen;
    memcpy(cert.node_pk, node.pk, SMC_PK_LEN);
    cert.not_before_ms = not_before_ms;
    cert.not_after_ms = not_after_ms;
    if ((rc = smc_cert_sign(&cert, &ca)) < 0) {
        smc__err(err, errlen, rc, "cannot sign the certificate");
        goto out;
    }
    if ((rc = smc_key_save(kpath, &node, err, errlen)) < 0) goto out;
    if ((rc = smc_cert_save(cpath, &cert, err, errlen)) < 0) unlink(kpath);
out:
    smc_keypair_wipe(&ca);
    smc_keypair_wipe(&node);
    return rc;
}

int smc_cert_issue(const char *ca_dir, const char *node_id, const char *out_dir,
                   unsigned validity_days, char *err, size_t errlen)
{
    if (validity_days == 0) validity_days = SMC_DEFAULT_VALIDITY_DAYS;
    if (validity_days > 100 * 366)
        return smc__err(err, errlen, SM_ERANGE, "validity of %u days is too long", validity_days);
    int64_t now = wall_ms();
    return smc_cert_issue_at(ca_dir, node_id, out_dir, now - SMC_ISSUE_BACKDATE_MS,
                             now + (int64_t)validity_days * 86400000, err, errlen);
}

/* ---- identity ---- */

int smc_identity_init(struct smc_identity *id, const struct smc_cert *c,
                      const struct smc_keypair *kp)
{
    if (!id || !c || !kp) return SM_EINVAL;
    if (sodium_memcmp(c->node_pk, kp->pk, SMC_PK_LEN) != 0) return SM_EINVAL;
    memset(id, 0, sizeof(*id));
    if (smc_cert_encode(c, id->cert_bytes, sizeof(id->cert_bytes), &id->cert_len) != 0)
        return SM_EINVAL;
    id->cert = *c;
    id->kp = *kp;
    return 0;
}

int smc_identity_load(struct smc_identity *id, const char *cert_path, const char *key_path,
                      char *err, size_t errlen)
{
    struct smc_cert c;
    struct smc_keypair kp;
    int rc;
    if (!id || !cert_path || !key_path)
        return smc__err(err, errlen, SM_EINVAL, "need a certificate and a key file");
    if ((rc = smc_cert_load(cert_path, &c, err, errlen)) < 0) return rc;
    if ((rc = smc_key_load(key_path, &kp, err, errlen)) < 0) return rc;
    if (smc_identity_init(id, &c, &kp) != 0)
        rc = smc__err(err, errlen, SM_ECONFIG, "%s does not belong to certificate %s (node %s)",
                      key_path, cert_path, c.node_id);
    smc_keypair_wipe(&kp);
    return rc;
}

void smc_identity_wipe(struct smc_identity *id)
{
    if (id) sodium_memzero(id, sizeof(*id));
}
