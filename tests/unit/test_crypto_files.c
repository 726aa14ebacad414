/* test_crypto_files.c: key/cert/CA files, permissions, formats, revocation lists, CLI helpers. */
#include "config.h"

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/test_crypto_util.h"

struct fx {
    char dir[256];
    char err[512];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/smc-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static const char *path(struct fx *f, const char *name)
{
    static char buf[16][512];
    static int i;
    i = (i + 1) % 16;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", f->dir, name);
    return buf[i];
}

static void write_text(const char *p, const char *text, mode_t mode)
{
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    assert_int_equal(chmod(p, mode), 0);
}

static unsigned mode_of(const char *p)
{
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    return (unsigned)(st.st_mode & 07777);
}

static void test_key_roundtrip(void **state)
{
    struct fx *f = *state;
    struct smc_keypair kp = tc_keypair(3), back;
    const char *p = path(f, "n.key");
    assert_int_equal(smc_key_save(p, &kp, f->err, sizeof(f->err)), 0);
    assert_int_equal(mode_of(p), 0600);
    assert_int_equal(smc_key_load(p, &back, f->err, sizeof(f->err)), 0);
    assert_memory_equal(&back, &kp, sizeof(kp));
    /* never overwritten */
    assert_int_equal(smc_key_save(p, &kp, f->err, sizeof(f->err)), SM_EEXISTS);
    /* the exact file content: tag + base64(seed of 0x03 bytes) */
    FILE *fp = fopen(p, "r");
    char line[256] = "";
    assert_non_null(fgets(line, sizeof(line), fp));
    fclose(fp);
    assert_string_equal(
        line, "statemesh-ed25519-secret-v1 AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n");
}

static void test_key_permissions(void **state)
{
    struct fx *f = *state;
    struct smc_keypair kp = tc_keypair(3), back;
    const char *p = path(f, "n.key");
    assert_int_equal(smc_key_save(p, &kp, f->err, sizeof(f->err)), 0);
    static const mode_t bad[] = {0644, 0640, 0604, 0660, 0666, 0700};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[16];
        assert_int_equal(chmod(p, bad[i]), 0);
        memset(&back, 0xAA, sizeof(back));
        int rc = smc_key_load(p, &back, f->err, sizeof(f->err));
        if (bad[i] == 0700) {
            assert_int_equal(rc, 0); /* owner-only is fine */
            continue;
        }
        assert_int_equal(rc, SM_ECONFIG);
        snprintf(want, sizeof(want), "%04o", (unsigned)bad[i]);
        assert_non_null(strstr(f->err, want));
        assert_non_null(strstr(f->err, "too open"));
        assert_non_null(strstr(f->err, p));
    }
    assert_int_equal(chmod(p, 0400), 0);
    assert_int_equal(smc_key_load(p, &back, f->err, sizeof(f->err)), 0);
    /* the cluster key file follows the same rule */
    uint8_t ck[32], ck2[32];
    smc_cluster_key_generate(ck);
    const char *cp = path(f, "cluster.key");
    assert_int_equal(smc_cluster_key_save(cp, ck, f->err, sizeof(f->err)), 0);
    assert_int_equal(mode_of(cp), 0600);
    assert_int_equal(smc_cluster_key_load(cp, ck2, f->err, sizeof(f->err)), 0);
    assert_memory_equal(ck, ck2, 32);
    assert_int_equal(chmod(cp, 0644), 0);
    assert_int_equal(smc_cluster_key_load(cp, ck2, f->err, sizeof(f->err)), SM_ECONFIG);
}

static void test_key_bad_format(void **state)
{
    struct fx *f = *state;
    struct smc_keypair kp;
    static const char *const bad[] = {
        "",
        "statemesh-ed25519-secret-v1\n",
        "statemesh-ed25519-public-v1 AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n",
        "statemesh-ed25519-secret-v1 AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw==\n", /* 31 bytes */
        "statemesh-ed25519-secret-v1 AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMD\n", /* 33 */
        "statemesh-ed25519-secret-v1 AwMDAwMDAwMDAwMDAwMDAw!DAwMDAwMDAwMDAwMDAwM=\n",
        "statemesh-ed25519-secret-v1 AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM= extra\n",
        "statemesh-ed25519-secret-v2 AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *p = path(f, "bad.key");
        unlink(p);
        write_text(p, bad[i], 0600);
        assert_int_equal(smc_key_load(p, &kp, f->err, sizeof(f->err)), SM_ECONFIG);
        assert_non_null(strstr(f->err, "bad format"));
    }
    /* a good line with CRLF and trailing spaces loads */
    const char *p = path(f, "ok.key");
    write_text(p, "statemesh-ed25519-secret-v1 AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM= \r\n",
               0600);
    assert_int_equal(smc_key_load(p, &kp, f->err, sizeof(f->err)), 0);
    struct smc_keypair want = tc_keypair(3);
    assert_memory_equal(kp.pk, want.pk, 32);
    /* missing file, directory */
    assert_int_equal(smc_key_load(path(f, "nope.key"), &kp, f->err, sizeof(f->err)), SM_EIO);
    assert_non_null(strstr(f->err, "cannot open"));
    assert_int_equal(smc_key_load(f->dir, &kp, f->err, sizeof(f->err)), SM_ECONFIG);
}

static void test_pub_files(void **state)
{
    struct fx *f = *state;
    struct smc_keypair kp = tc_keypair(4);
    uint8_t pk[32];
    const char *p = path(f, "x.pub");
    assert_int_equal(smc_pub_save(p, kp.pk, f->err, sizeof(f->err)), 0);
    assert_int_equal(chmod(p, 0644), 0); /* public: any mode */
    assert_int_equal(smc_pub_load(p, pk, f->err, sizeof(f->err)), 0);
    assert_memory_equal(pk, kp.pk, 32);
    /* a secret key file is not a public key file */
    const char *k = path(f, "x.key");
    assert_int_equal(smc_key_save(k, &kp, f->err, sizeof(f->err)), 0);
    assert_int_equal(smc_pub_load(k, pk, f->err, sizeof(f->err)), SM_ECONFIG);
}

static void test_ca_init_and_issue(void **state)
{
    struct fx *f = *state;
    char ca[512], out[512];
    snprintf(ca, sizeof(ca), "%s", path(f, "ca"));
    snprintf(out, sizeof(out), "%s", path(f, "out"));
    uint8_t ca_pk[32], pk2[32];
    struct smc_identity id;
    struct smc_keypair cak;
    enum smc_reason why;
    assert_int_equal(smc_ca_init(ca, f->err, sizeof(f->err)), 0);
    assert_int_equal(mode_of(ca), 0700);
    assert_int_equal(mode_of(path(f, "ca/ca.key")), 0600);
    assert_int_equal(smc_ca_init(ca, f->err, sizeof(f->err)), SM_EEXISTS);
    assert_non_null(strstr(f->err, "ca.key"));
    assert_int_equal(smc_ca_load_pub(ca, ca_pk, f->err, sizeof(f->err)), 0);
    assert_int_equal(smc_ca_load_pub(path(f, "ca/ca.pub"), pk2, f->err, sizeof(f->err)), 0);
    assert_memory_equal(ca_pk, pk2, 32);
    assert_int_equal(smc_key_load(path(f, "ca/ca.key"), &cak, f->err, sizeof(f->err)), 0);
    assert_memory_equal(cak.pk, ca_pk, 32);
    smc_keypair_wipe(&cak);

    assert_int_equal(smc_cert_issue(ca, "web-1", out, 10, f->err, sizeof(f->err)), 0);
    assert_int_equal(mode_of(path(f, "out/web-1.key")), 0600);
    assert_int_equal(smc_cert_issue(ca, "web-1", out, 10, f->err, sizeof(f->err)), SM_EEXISTS);
    assert_int_equal(smc_identity_load(&id, path(f, "out/web-1.cert"), path(f, "out/web-1.key"),
                                       f->err, sizeof(f->err)),
                     0);
    assert_string_equal(id.cert.node_id, "web-1");
    int64_t now = (int64_t)time(NULL) * 1000;
    assert_int_equal(smc_cert_verify(&id.cert, ca_pk, now, NULL, &why), 0);
    /* valid for 10 days, back-dated 5 minutes for clock skew */
    assert_true(id.cert.not_after_ms - id.cert.not_before_ms == 10 * DAY_MS + 300000);
    assert_true(id.cert.not_before_ms <= now - 299000 && id.cert.not_before_ms > now - 400000);
    assert_int_equal(smc_cert_verify(&id.cert, ca_pk, now + 11 * DAY_MS, NULL, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_EXPIRED);
    /* a context starts from these files */
    struct smc_ctx_config cfg = {.self = &id, .ca_pk = ca_pk, .now_ms = now};
    struct smc_ctx *c;
    assert_int_equal(smc_ctx_new(&cfg, &c, f->err, sizeof(f->err)), 0);
    smc_ctx_delete(c);
    /* ...but not with another CA */
    uint8_t other[32];
    assert_int_equal(smc_ca_init(path(f, "ca2"), f->err, sizeof(f->err)), 0);
    assert_int_equal(smc_ca_load_pub(path(f, "ca2"), other, f->err, sizeof(f->err)), 0);
    cfg.ca_pk = other;
    assert_int_equal(smc_ctx_new(&cfg, &c, f->err, sizeof(f->err)), SM_ECRYPTO);
    assert_non_null(strstr(f->err, "another CA"));
    smc_identity_wipe(&id);

    /* key of another node: refused */
    assert_int_equal(smc_cert_issue(ca, "web-2", out, 0, f->err, sizeof(f->err)), 0);
    assert_int_equal(smc_identity_load(&id, path(f, "out/web-1.cert"), path(f, "out/web-2.key"),
                                       f->err, sizeof(f->err)),
                     SM_ECONFIG);
    assert_non_null(strstr(f->err, "does not belong"));
    /* default validity: 365 days */
    assert_int_equal(smc_identity_load(&id, path(f, "out/web-2.cert"), path(f, "out/web-2.key"),
                                       f->err, sizeof(f->err)),
                     0);
    assert_true(id.cert.not_after_ms - id.cert.not_before_ms == 365 * DAY_MS + 300000);
    smc_identity_wipe(&id);
    /* a CA key with loose permissions is refused when issuing */
    assert_int_equal(chmod(path(f, "ca/ca.key"), 0644), 0);
    assert_int_equal(smc_cert_issue(ca, "web-3", out, 0, f->err, sizeof(f->err)), SM_ECONFIG);
    assert_non_null(strstr(f->err, "too open"));
    assert_int_equal(access(path(f, "out/web-3.key"), F_OK), -1);
}

static void test_issue_bad_input(void **state)
{
    struct fx *f = *state;
    char ca[512];
    snprintf(ca, sizeof(ca), "%s", path(f, "ca"));
    assert_int_equal(smc_ca_init(ca, f->err, sizeof(f->err)), 0);
    static const char *const bad_ids[] = {"",
                                          ".hidden",
                                          "../etc",
                                          "a/b",
                                          "sp ace",
                                          "0123456789012345678901234567890123456789012345678901"
                                          "234567890123x"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        assert_int_equal(smc_cert_issue(ca, bad_ids[i], path(f, "o"), 1, f->err, sizeof(f->err)),
                         SM_EINVAL);
        assert_non_null(strstr(f->err, "invalid node id"));
    }
    assert_int_equal(
        smc_cert_issue(path(f, "no-ca"), "web-1", path(f, "o"), 1, f->err, sizeof(f->err)), SM_EIO);
    assert_int_equal(smc_cert_issue(ca, "web-1", path(f, "o"), 1000000, f->err, sizeof(f->err)),
                     SM_ERANGE);
    /* a file where the CA directory should be */
    write_text(path(f, "file"), "x", 0600);
    assert_int_equal(smc_ca_init(path(f, "file"), f->err, sizeof(f->err)), SM_EIO);
    assert_true(smc_node_id_valid("node-1.example.com:7946", 23));
    assert_true(smc_node_id_valid("a@b_c", 5));
    assert_false(smc_node_id_valid("a\nb", 3));
    assert_false(smc_node_id_valid(NULL, 0));
}

static void test_cert_file_format(void **state)
{
    struct fx *f = *state;
    struct smc_keypair ca = tc_keypair(1), kp = tc_keypair(2);
    struct smc_cert c = tc_cert(&ca, "alice", &kp, T0, T0 + DAY_MS), back;
    const char *p = path(f, "alice.cert");
    assert_int_equal(smc_cert_save(p, &c, f->err, sizeof(f->err)), 0);
    assert_int_equal(smc_cert_load(p, &back, f->err, sizeof(f->err)), 0);
    assert_memory_equal(&back, &c, sizeof(c));
    /* a tampered certificate file loads (format) but does not verify */
    FILE *fp = fopen(p, "r");
    char line[512];
    assert_non_null(fgets(line, sizeof(line), fp));
    fclose(fp);
    assert_memory_equal(line, "statemesh-cert-v1 wQVhbGljZ", 26);
    line[40] = line[40] == 'A' ? 'B' : 'A';
    const char *q = path(f, "t.cert");
    write_text(q, line, 0644);
    enum smc_reason why;
    assert_int_equal(smc_cert_load(q, &back, f->err, sizeof(f->err)), 0);
    assert_int_equal(smc_cert_verify(&back, ca.pk, T0, NULL, &why), SM_ECRYPTO);
    assert_int_equal(why, SMC_R_BADSIG);
    write_text(q, "statemesh-cert-v1 AAAA\n", 0644);
    assert_int_equal(smc_cert_load(q, &back, f->err, sizeof(f->err)), SM_ECONFIG);
    assert_non_null(strstr(f->err, "bad certificate"));
}

static void test_revlist_file(void **state)
{
    struct fx *f = *state;
    struct smc_keypair ca = tc_keypair(1), k2 = tc_keypair(2), k3 = tc_keypair(3),
                       k4 = tc_keypair(4);
    char hex[65], text[512];
    smc_fingerprint_hex(k3.pk, hex);
    snprintf(text, sizeof(text), "# revoked nodes\n\nid alice\n  fp %s\n", hex);
    const char *p = path(f, "revoked");
    write_text(p, text, 0644);
    struct smc_revlist *rl = smc_revlist_new();
    assert_int_equal(smc_revlist_load(rl, p, f->err, sizeof(f->err)), 0);
    struct smc_cert a = tc_cert(&ca, "alice", &k2, T0, T0 + DAY_MS);
    struct smc_cert b = tc_cert(&ca, "bob", &k3, T0, T0 + DAY_MS);
    struct smc_cert c = tc_cert(&ca, "carol", &k4, T0, T0 + DAY_MS);
    assert_true(smc_revlist_contains(rl, &a));
    assert_true(smc_revlist_contains(rl, &b));
    assert_false(smc_revlist_contains(rl, &c));
    enum smc_reason why;
    assert_int_equal(smc_cert_verify(&b, ca.pk, T0, rl, &why), SM_EAUTH);
    assert_int_equal(why, SMC_R_REVOKED);
    assert_int_equal(smc_cert_verify(&c, ca.pk, T0, rl, &why), 0);
    smc_revlist_delete(rl);

    static const char *const bad[] = {"id\n", "fp 1234\n", "key alice\n", "id ../x\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "# x\n%s", bad[i]);
        write_text(p, text, 0644);
        rl = smc_revlist_new();
        assert_int_equal(smc_revlist_load(rl, p, f->err, sizeof(f->err)), SM_ECONFIG);
        char want[300];
        snprintf(want, sizeof(want), "%s:2:", p);
        assert_non_null(strstr(f->err, want));
        smc_revlist_delete(rl);
    }
    /* loaded into a context, it drops matching trust entries */
    struct smc_identity bob = tc_identity(&ca, "bob", 3), carol = tc_identity(&ca, "carol", 4);
    struct smc_ctx *ctx = tc_ctx(&ca, &carol, 1);
    assert_int_equal(smc_trust_add(ctx, T0, bob.cert_bytes, bob.cert_len, &why), 1);
    snprintf(text, sizeof(text), "fp %s\n", hex);
    write_text(p, text, 0644);
    assert_int_equal(smc_ctx_load_revlist(ctx, p, f->err, sizeof(f->err)), 0);
    assert_int_equal(smc_trust_count(ctx), 1);
    smc_ctx_delete(ctx);
    smc_identity_wipe(&bob);
    smc_identity_wipe(&carol);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_key_roundtrip),    T(test_key_permissions),   T(test_key_bad_format),
        T(test_pub_files),        T(test_ca_init_and_issue), T(test_issue_bad_input),
        T(test_cert_file_format), T(test_revlist_file),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
