/* bench/locks.c: lock grants/s and grant latency per backend under the fault
 * schedule of the lock checker (raft: leader SIGKILLs and, as root, nftables
 * partitions in network namespaces; redis: SIGKILL + restart with and without
 * persistence). The clients, the nemesis and the checker live in
 * tests/integration/lockcheck/lockcheck.py; this program runs it in bench mode
 * (JSON lines on stdout) so `make bench` finds it like any other benchmark.
 * A run that shows a fence violation or a raft lease overlap exits 1. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SM_SRCDIR
#define SM_SRCDIR "."
#endif

int main(void)
{
    char script[4096];
    snprintf(script, sizeof script, "%s/tests/integration/lockcheck/lockcheck.py", SM_SRCDIR);
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "bench/locks: cannot read %s: %s\n", script, strerror(errno));
        return 1;
    }
    /* raftnode is found under the build dir: the parent of the directory
     * this program sits in (it links nothing from libtool, so /proc/self/exe
     * is the program itself, not a wrapper). */
    if (!getenv("SM_BUILDDIR")) {
        char dir[4096];
        ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
        if (n <= 0) {
            fprintf(stderr, "bench/locks: cannot find myself: %s\n", strerror(errno));
            return 1;
        }
        dir[n] = '\0';
        for (int i = 0; i < 2; i++) {
            char *slash = strrchr(dir, '/');
            if (slash) *slash = '\0';
        }
        setenv("SM_BUILDDIR", dir, 1);
    }
    execlp("python3", "python3", script, "--bench", (char *)NULL);
    fprintf(stderr, "bench/locks: cannot run python3: %s\n", strerror(errno));
    return 1;
}
