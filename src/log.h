/* log.h: structured daemon logging (logfmt or JSON lines) with levels, to stderr. */
#ifndef SMD_LOG_H
#define SMD_LOG_H

/** Log levels, most verbose first. */
enum smd_log_level {
    SMD_LOG_DEBUG = 0,
    SMD_LOG_INFO = 1,
    SMD_LOG_WARN = 2,
    SMD_LOG_ERROR = 3,
};

/** Output formats. */
enum smd_log_format {
    SMD_LOG_LOGFMT = 0,
    SMD_LOG_JSON = 1,
};

/** Set the minimum level and the format (defaults: info, logfmt). */
void smd_log_setup(enum smd_log_level level, enum smd_log_format fmt);
/** Change only the minimum level (SIGHUP reload). */
void smd_log_set_level(enum smd_log_level level);
/** Current minimum level. */
enum smd_log_level smd_log_level(void);
/** Parse "debug", "info", "warn"/"warning", "error"; -1 when unknown. */
int smd_log_parse_level(const char *s);
/** Parse "logfmt" or "json"; -1 when unknown. */
int smd_log_parse_format(const char *s);
/** Name of a level ("info"). */
const char *smd_log_level_name(enum smd_log_level level);

/**
 * Write one log line if @p level is enabled: `ts=… level=… msg=…` followed by
 * the key/value pairs given as NULL-terminated varargs of `const char *`
 * (key, value, key, value, …, NULL). A NULL value prints as an empty string.
 * Values are quoted and escaped as the format needs.
 */
void smd_log(enum smd_log_level level, const char *msg, ...) __attribute__((sentinel));

#endif /* SMD_LOG_H */
