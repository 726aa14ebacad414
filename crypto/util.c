/* util.c: libsodium start-up, reason names and the small text file formats of the crypto layer. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "crypto/internal.h"

int smc_init(void)
{
    return sodium_init() < 0 ? SM_ECRYPTO : 0;
}

static const char *const reason_text[] = {
#define SMC__REASON_TEXT(name, text) text,
    SMC_REASON_MAP(SMC__REASON_TEXT)
#undef SMC__REASON_TEXT
};
static const char *const reason_name[] = {
#define SMC__REASON_NAME(name, text) #name,
    SMC_REASON_MAP(SMC__REASON_NAME)
#undef SMC__REASON_NAME
};

const char *smc_reason_str(enum smc_reason r)
{
    if ((unsigned)r >= SMC_R__COUNT) return "unknown reason";
    return reason_text[r];
}

const char *smc_reason_name(enum smc_reason r)
{
    if ((unsigned)r >= SMC_R__COUNT) return "UNKNOWN";
    return reason_name[r];
}

int smc__err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int smc__path(char *out, size_t cap, const char *dir, const char *name, const char *ext)
{
    int n = snprintf(out, cap, "%s/%s%s", dir, name, ext ? ext : "");
    return (n < 0 || (size_t)n >= cap) ? SM_ERANGE : 0;
}

/* The largest file we accept: a certificate is ~250 base64 characters. */
#define SMC_FILE_MAX 4096

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int smc__write_b64_file(const char *path, mode_t mode, const char *tag, const uint8_t *bin,
                        size_t len, char *err, size_t errlen)
{
    char line[SMC_FILE_MAX];
    size_t taglen = strlen(tag);
    size_t b64len = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    int rc = 0, fd = -1;

    if (smc_init() < 0) return smc__err(err, errlen, SM_ECRYPTO, "libsodium failed to start");
    if (taglen + 1 + b64len + 1 > sizeof(line))
        return smc__err(err, errlen, SM_ERANGE, "%s: content too large", path);
    memcpy(line, tag, taglen);
    line[taglen] = ' ';
    sodium_bin2base64(line + taglen + 1, b64len, bin, len, sodium_base64_VARIANT_ORIGINAL);
    size_t n = taglen + 1 + strlen(line + taglen + 1);
    line[n++] = '\n';

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        rc = smc__err(err, errlen, errno == EEXIST ? SM_EEXISTS : SM_EIO, "%s: cannot create: %s",
                      path, strerror(errno));
        goto out;
    }
    /* The umask may only have narrowed the mode; make it exact for secrets. */
    if (fchmod(fd, mode) < 0 || write_all(fd, line, n) < 0 || fsync(fd) < 0) {
        rc = smc__err(err, errlen, SM_EIO, "%s: cannot write: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        goto out;
    }
    if (close(fd) < 0) {
        rc = smc__err(err, errlen, SM_EIO, "%s: cannot write: %s", path, strerror(errno));
        unlink(path);
    }
out:
    sodium_memzero(line, sizeof(line));
    return rc;
}

int smc__read_b64_file(const char *path, int secret, const char *tag, uint8_t *bin, size_t cap,
                       int exact, size_t *outlen, char *err, size_t errlen)
{
    char buf[SMC_FILE_MAX + 1];
    size_t n = 0, taglen = strlen(tag), binlen = 0;
    const char *end = NULL;
    struct stat st;
    int rc = 0;

    if (smc_init() < 0) return smc__err(err, errlen, SM_ECRYPTO, "libsodium failed to start");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return smc__err(err, errlen, SM_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0) {
        rc = smc__err(err, errlen, SM_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = smc__err(err, errlen, SM_ECONFIG, "%s: not a regular file", path);
        goto out;
    }
    /* A secret that others can read (or replace) may already be leaked: refuse, like ssh. */
    if (secret && (st.st_mode & 077)) {
        rc = smc__err(err, errlen, SM_ECONFIG,
                      "%s: permissions %04o are too open: a secret key file must be 0600 or "
                      "stricter (chmod 600 %s)",
                      path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            rc = smc__err(err, errlen, SM_EIO, "%s: cannot read: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n == sizeof(buf) - 1) {
            rc = smc__err(err, errlen, SM_ECONFIG, "%s: file too large", path);
            goto out;
        }
    }
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = '\0';
    if (n < taglen + 2 || memcmp(buf, tag, taglen) != 0 || buf[taglen] != ' ') {
        rc = smc__err(err, errlen, SM_ECONFIG, "%s: bad format: expected a line \"%s <base64>\"",
                      path, tag);
        goto out;
    }
    if (sodium_base642bin(bin, cap, buf + taglen + 1, n - taglen - 1, NULL, &binlen, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != buf + n || (exact && binlen != cap)) {
        rc = smc__err(err, errlen, SM_ECONFIG, "%s: bad format: invalid base64 or wrong length",
                      path);
        sodium_memzero(bin, cap);
        goto out;
    }
    if (outlen) *outlen = binlen;
out:
    close(fd);
    sodium_memzero(buf, sizeof(buf));
    return rc;
}
