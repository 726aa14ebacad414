/* internal.h: helpers shared by the crypto/ sources (not part of the layer's API). */
#ifndef CRYPTO_INTERNAL_H
#define CRYPTO_INTERNAL_H

#include <stdarg.h>
#include <sys/types.h>

#include "crypto/crypto.h"

/** Format a message into @p err (NULL-safe) and return @p code. */
int smc__err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/**
 * Write "TAG BASE64(bin)\n" to a new file @p path (O_EXCL, @p mode). The file
 * is removed again when writing fails.
 */
int smc__write_b64_file(const char *path, mode_t mode, const char *tag, const uint8_t *bin,
                        size_t len, char *err, size_t errlen);
/**
 * Read a "TAG BASE64\n" file into @p bin (at most @p cap bytes, exactly
 * @p cap when @p exact). With @p secret, refuse group/other permissions.
 * Every buffer that held file contents is wiped.
 */
int smc__read_b64_file(const char *path, int secret, const char *tag, uint8_t *bin, size_t cap,
                       int exact, size_t *outlen, char *err, size_t errlen);

/** Join @p dir and @p name (plus optional @p ext) into @p out; SM_ERANGE when too long. */
int smc__path(char *out, size_t cap, const char *dir, const char *name, const char *ext);

static inline void smc__be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}
static inline uint64_t smc__get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

#endif /* CRYPTO_INTERNAL_H */
