/* redis_server.c: run a throwaway redis-server for tests and benchmarks. */
#include "config.h"

#include "tests/lib/redis_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Every server started and not yet stopped, by value: a test that fails
 * half-way (cmocka longjmps out of it) or a bench that exits on an error
 * must not leave a redis-server behind. An atexit handler reaps them. */
#define MAX_LIVE 32
static struct {
    pid_t pid;
    char dir[128];
} live[MAX_LIVE];
static bool atexit_set;

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char p[400];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void live_set(const char *dir, pid_t pid)
{
    int free_slot = -1;
    for (int i = 0; i < MAX_LIVE; i++) {
        if (live[i].dir[0] && strcmp(live[i].dir, dir) == 0) {
            live[i].pid = pid;
            return;
        }
        if (!live[i].dir[0] && free_slot < 0) free_slot = i;
    }
    if (free_slot < 0) return;
    live[free_slot].pid = pid;
    snprintf(live[free_slot].dir, sizeof live[free_slot].dir, "%s", dir);
}

static void live_forget(const char *dir)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i].dir[0] && strcmp(live[i].dir, dir) == 0) live[i].dir[0] = '\0';
}

static void reap_all(void)
{
    for (int i = 0; i < MAX_LIVE; i++) {
        if (!live[i].dir[0]) continue;
        if (live[i].pid > 0) {
            kill(live[i].pid, SIGKILL);
            waitpid(live[i].pid, NULL, 0);
        }
        remove_dir(live[i].dir);
        live[i].dir[0] = '\0';
    }
}

const char *redis_server_path(void)
{
    const char *p = getenv("REDIS_SERVER");
    return p && *p ? p : "redis-server";
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static pid_t spawn(struct redis_server *rs)
{
    char port[16], log[200];
    snprintf(port, sizeof port, "%d", rs->port);
    snprintf(log, sizeof log, "%s/redis.log", rs->dir);
    const char *argv[48];
    int n = 0;
    argv[n++] = redis_server_path();
    const char *base[] = {
        "--port", port,    "--bind",    "127.0.0.1", "--save",      "",   "--appendonly",     "no",
        "--dir",  rs->dir, "--logfile", log,         "--daemonize", "no", "--protected-mode", "no"};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) argv[n++] = base[i];
    if (rs->password) {
        argv[n++] = "--requirepass";
        argv[n++] = rs->password;
    }
    if (rs->unix_socket) {
        argv[n++] = "--unixsocket";
        argv[n++] = rs->sock;
        argv[n++] = "--unixsocketperm";
        argv[n++] = "700";
    }
    for (int i = 0; i < 8 && rs->extra[i]; i++) argv[n++] = rs->extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0), dup2(fd, 1), dup2(fd, 2);
            if (fd > 2) close(fd);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Up when the process we started answers on the port. */
static int wait_ready(struct redis_server *rs)
{
    for (int i = 0; i < 500; i++) {
        int st;
        if (waitpid(rs->pid, &st, WNOHANG) == rs->pid) {
            rs->pid = 0;
            live_set(rs->dir, 0); /* reaped: never signal that pid again */
            return -1;
        }
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", rs->port, tv);
        if (c && !c->err) {
            if (rs->password) {
                redisReply *a = redisCommand(c, "AUTH %s", rs->password);
                if (a) freeReplyObject(a);
            }
            /* Ours, not another program's server that won the port race. */
            redisReply *r = redisCommand(c, "INFO server");
            char want[48];
            snprintf(want, sizeof want, "process_id:%ld\r", (long)rs->pid);
            bool ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, want);
            if (r) freeReplyObject(r);
            redisFree(c);
            if (ok) return 0;
        } else if (c) {
            redisFree(c);
        }
        sleep_ms(10);
    }
    return -1;
}

int redis_server_start(struct redis_server *rs)
{
    snprintf(rs->dir, sizeof rs->dir, "/tmp/smredis.XXXXXX");
    if (!mkdtemp(rs->dir)) return -1;
    snprintf(rs->sock, sizeof rs->sock, "%s/redis.sock", rs->dir);
    if (!atexit_set) {
        atexit(reap_all);
        atexit_set = true;
    }
    live_set(rs->dir, 0);
    for (int attempt = 0; attempt < 5; attempt++) {
        rs->port = free_port();
        if (rs->port <= 0) continue;
        snprintf(rs->addr, sizeof rs->addr, "127.0.0.1:%d", rs->port);
        rs->pid = spawn(rs);
        if (rs->pid <= 0) continue;
        live_set(rs->dir, rs->pid);
        if (wait_ready(rs) == 0) return 0;
        redis_server_signal(rs, SIGKILL);
    }
    return -1;
}

void redis_server_signal(struct redis_server *rs, int sig)
{
    if (rs->pid <= 0) return;
    kill(rs->pid, sig);
    if (sig == SIGKILL || sig == SIGTERM) {
        if (sig == SIGTERM) kill(rs->pid, SIGCONT);
        while (waitpid(rs->pid, NULL, 0) < 0 && errno == EINTR) {
        }
        rs->pid = 0;
        live_set(rs->dir, 0); /* reaped: never signal that pid again */
    }
}

int redis_server_restart(struct redis_server *rs)
{
    if (rs->pid > 0) redis_server_signal(rs, SIGKILL);
    /* The old listener is gone with the process; the port is normally free
     * again at once (redis sets SO_REUSEADDR). Retry briefly regardless. */
    for (int i = 0; i < 50; i++) {
        rs->pid = spawn(rs);
        live_set(rs->dir, rs->pid);
        if (rs->pid > 0 && wait_ready(rs) == 0) return 0;
        if (rs->pid > 0) redis_server_signal(rs, SIGKILL);
        sleep_ms(100);
    }
    return -1;
}

void redis_server_stop(struct redis_server *rs)
{
    if (rs->pid > 0) {
        kill(rs->pid, SIGCONT);
        redis_server_signal(rs, SIGKILL);
    }
    if (!rs->dir[0]) return;
    live_forget(rs->dir);
    remove_dir(rs->dir);
    rs->dir[0] = '\0';
}

redisContext *redis_server_connect(const struct redis_server *rs)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", rs->port, tv);
    if (!c || c->err) {
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (rs->password) {
        redisReply *r = redisCommand(c, "AUTH %s", rs->password);
        if (r) freeReplyObject(r);
    }
    return c;
}
