/* daemon_config.h: statemeshd configuration: YAML file + flags → store options, routes, daemon
 * settings. */
#ifndef SMD_CONFIG_H
#define SMD_CONFIG_H

#include "statemesh.h"

#include <stddef.h>

/**
 * @file
 * The daemon's configuration is one flat set of dotted options ("mesh.bind",
 * "http.listen", "log.level", …) plus prefix routes. A YAML file is flattened
 * into it (nested mappings join their keys with '.', sequences of scalars join
 * their items with ','), then command-line flags replace what they name, so
 * flags win. Every option remembers where it came from ("FILE:LINE" or
 * "--flag") so errors can point at it.
 *
 * Options under "http." and "log." belong to the daemon; everything else is a
 * store option handed to sm_config_set() (see docs/config.md for the table).
 */

struct smd_config;

/** Types of option values, checked by smd_config_validate(). */
enum smd_opt_type {
    SMD_T_STR,      /**< any non-empty string */
    SMD_T_ID,       /**< node id: 1..64 bytes, no whitespace */
    SMD_T_U64,      /**< unsigned integer */
    SMD_T_SIZE,     /**< byte size: 1024, 64k, 2m */
    SMD_T_DUR,      /**< duration: 250ms, 2s, 1m, 1h (bare number = ms) */
    SMD_T_BOOL,     /**< true/false/yes/no/on/off/1/0 */
    SMD_T_ADDR,     /**< HOST:PORT ([v6]:PORT) */
    SMD_T_ADDRLIST, /**< comma-separated HOST:PORT list */
    SMD_T_PATH,     /**< file system path */
    SMD_T_BACKEND,  /**< local|mesh|redis|raft */
    SMD_T_LEVEL,    /**< log level */
    SMD_T_LOGFMT,   /**< logfmt|json */
};

/** One known option (the table is exported for --help and docs). */
struct smd_opt_info {
    const char *key;        /**< dotted option name */
    const char *flag;       /**< command-line flag ("--bind") or NULL: use --set KEY=VALUE */
    enum smd_opt_type type; /**< value type */
    int daemon;             /**< 1: a daemon setting, not passed to the store */
    int secret;             /**< 1: never printed */
    const char *help;       /**< one-line description */
};

/** The table of known options, terminated by an entry with key NULL. */
extern const struct smd_opt_info smd_opt_table[];

/** New empty configuration; NULL on OOM. */
struct smd_config *smd_config_new(void);
/** Free (NULL is fine); secret values are wiped. */
void smd_config_delete(struct smd_config *c);

/**
 * Load a YAML file into @p c. Errors (syntax, duplicate option, a value of the
 * wrong shape) fail with SM_ECONFIG and "FILE:LINE: …" in @p err; SM_EIO when
 * the file cannot be read.
 */
int smd_config_load_file(struct smd_config *c, const char *path, char *err, size_t errlen);
/** Load YAML from memory; @p name is used in messages in place of a file name. */
int smd_config_load_string(struct smd_config *c, const char *name, const char *yaml, size_t len,
                           char *err, size_t errlen);

/**
 * Set option @p key (copied) from @p where (e.g. "--bind" or "FILE:LINE";
 * copied), replacing an earlier value. 0, SM_EINVAL, SM_ENOMEM.
 */
int smd_config_set(struct smd_config *c, const char *key, const char *value, const char *where);
/** Value of option @p key or NULL (borrowed until the next set). */
const char *smd_config_get(const struct smd_config *c, const char *key);
/** Where option @p key came from ("FILE:LINE", "--flag"), or NULL. */
const char *smd_config_where(const struct smd_config *c, const char *key);

/**
 * Add a prefix route. Routes from flags replace every route from the file
 * (the first flag route clears them), so flags win here too.
 */
int smd_config_add_route(struct smd_config *c, const char *prefix, const char *backend,
                         const char *where);
/** Number of routes, and route @p i. */
size_t smd_config_nroutes(const struct smd_config *c);
void smd_config_route(const struct smd_config *c, size_t i, const char **prefix,
                      const char **backend, const char **where);

/**
 * Check every option: known name (smd_opt_table), value of the right type,
 * routes well formed. Backends check their own options again at open.
 * SM_ECONFIG with "WHERE: option KEY: …" in @p err.
 */
int smd_config_validate(const struct smd_config *c, char *err, size_t errlen);

/**
 * Build the store configuration (every option that is not a daemon setting,
 * plus the routes). SM_ENOMEM; *out is owned by the caller.
 */
int smd_config_to_store(const struct smd_config *c, struct sm_config **out);

/**
 * Prefix a store error message with the source of the option it names, e.g.
 * "unknown option 'mesh.foo'" → "x.yaml:7: unknown option 'mesh.foo'".
 * Copies @p msg unchanged when it names no option we know the source of.
 */
void smd_config_annotate(const struct smd_config *c, const char *msg, char *out, size_t outlen);

/** Parse a byte size ("1024", "64k", "2m", "1g"); SM_EINVAL on bad input. */
int smd_parse_size(const char *s, uint64_t *out);
/** Parse a boolean; SM_EINVAL on bad input. */
int smd_parse_bool(const char *s, int *out);
/**
 * Split "HOST:PORT" or "[V6]:PORT" into @p host (no brackets) and @p port.
 * SM_EINVAL on bad input (empty host allowed: means any address).
 */
int smd_parse_hostport(const char *s, char *host, size_t hostlen, unsigned *port);

#endif /* SMD_CONFIG_H */
