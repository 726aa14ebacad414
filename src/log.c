/* log.c: structured daemon logging (logfmt or JSON lines) with levels, to stderr. */
#include "config.h"

#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static enum smd_log_level g_level = SMD_LOG_INFO;
static enum smd_log_format g_fmt = SMD_LOG_LOGFMT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void smd_log_setup(enum smd_log_level level, enum smd_log_format fmt)
{
    g_level = level;
    g_fmt = fmt;
}

void smd_log_set_level(enum smd_log_level level)
{
    g_level = level;
}

enum smd_log_level smd_log_level(void)
{
    return g_level;
}

const char *smd_log_level_name(enum smd_log_level level)
{
    return (unsigned)level <= SMD_LOG_ERROR ? level_names[level] : "unknown";
}

int smd_log_parse_level(const char *s)
{
    if (!s) return -1;
    for (int i = 0; i <= SMD_LOG_ERROR; i++)
        if (strcasecmp(s, level_names[i]) == 0) return i;
    if (strcasecmp(s, "warning") == 0) return SMD_LOG_WARN;
    return -1;
}

int smd_log_parse_format(const char *s)
{
    if (!s) return -1;
    if (strcasecmp(s, "logfmt") == 0) return SMD_LOG_LOGFMT;
    if (strcasecmp(s, "json") == 0) return SMD_LOG_JSON;
    return -1;
}

/* A line is built in one buffer and written with one fwrite so concurrent
 * writers (several daemons sharing a terminal) do not interleave mid-line. */
struct line {
    char buf[4096];
    size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
    size_t room = sizeof l->buf - 2 - l->len; /* keep space for "\n\0" */
    if (n > room) n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void putc_(struct line *l, char c)
{
    put(l, &c, 1);
}

static void put_json_str(struct line *l, const char *s)
{
    putc_(l, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p == '\n') {
            put(l, "\\n", 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            put(l, esc, 6);
        } else {
            putc_(l, (char)*p);
        }
    }
    putc_(l, '"');
}

static void put_logfmt_val(struct line *l, const char *s)
{
    int quote = *s == '\0';
    for (const char *p = s; *p && !quote; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x21) quote = 1;
    if (!quote) {
        put(l, s, strlen(s));
        return;
    }
    put_json_str(l, s); /* logfmt quoting uses the same escapes */
}

static void put_kv(struct line *l, int first, const char *k, const char *v)
{
    if (g_fmt == SMD_LOG_JSON) {
        if (!first) putc_(l, ',');
        put_json_str(l, k);
        putc_(l, ':');
        put_json_str(l, v);
    } else {
        if (!first) putc_(l, ' ');
        put(l, k, strlen(k));
        putc_(l, '=');
        put_logfmt_val(l, v);
    }
}

void smd_log(enum smd_log_level level, const char *msg, ...)
{
    if (level < g_level) return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    time_t secs = tv.tv_sec;
    gmtime_r(&secs, &tm);
    char ts[96];
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    struct line l = {.len = 0};
    if (g_fmt == SMD_LOG_JSON) putc_(&l, '{');
    put_kv(&l, 1, "ts", ts);
    put_kv(&l, 0, "level", smd_log_level_name(level));
    put_kv(&l, 0, "msg", msg ? msg : "");
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k) break;
        const char *v = va_arg(ap, const char *);
        put_kv(&l, 0, k, v ? v : "");
    }
    va_end(ap);
    if (g_fmt == SMD_LOG_JSON) putc_(&l, '}');
    l.buf[l.len++] = '\n';
    fwrite(l.buf, 1, l.len, stderr);
    fflush(stderr);
}
