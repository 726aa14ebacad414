/* redis_server.h: start and stop a real redis-server for tests and benchmarks
 * (free loopback port, private temp dir; $REDIS_SERVER or redis-server on PATH). */
#ifndef SM_TEST_REDIS_SERVER_H
#define SM_TEST_REDIS_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

struct redisContext;

/** A running (or stopped) test server. Zero-initialise, then set the inputs. */
struct redis_server {
    /* inputs */
    const char *password; /**< --requirepass (NULL: none); also used by redis_server_connect */
    bool unix_socket;     /**< also listen on <dir>/redis.sock */
    const char *extra[8]; /**< more arguments for redis-server, NULL-terminated */
    /* state */
    pid_t pid;
    int port;
    char dir[128];
    char sock[160];
    char addr[64]; /**< "127.0.0.1:PORT" */
};

/** Start on a free port (retrying on a port race). 0 on success, -1 on failure. */
int redis_server_start(struct redis_server *rs);
/** Send @p sig to the server; for SIGKILL/SIGTERM also reap it. */
void redis_server_signal(struct redis_server *rs, int sig);
/** Start again on the same port and dir after a kill. 0 or -1. */
int redis_server_restart(struct redis_server *rs);
/** Stop the server (SIGKILL) and remove its temp dir. Safe to call twice. */
void redis_server_stop(struct redis_server *rs);
/** A synchronous hiredis connection (authenticated) for test assertions, or NULL. */
struct redisContext *redis_server_connect(const struct redis_server *rs);
/** Path of the redis-server binary in use. */
const char *redis_server_path(void);

#endif
