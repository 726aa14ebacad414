# src/ raft backend: libraft FSM, encrypted transport, forwarding, admin (consensus engineer)
libsmcore_la_SOURCES += src/backend_raft.c src/raft_fsm.c src/raft_transport.c
noinst_HEADERS += src/raft_fsm.h src/raft_transport.h src/raft_admin.h

# Integration-test driver: a raft store behind a line protocol (also used by bench/raft).
check_PROGRAMS += tests/integration/raftnode
tests_integration_raftnode_SOURCES = tests/integration/raftnode.c
tests_integration_raftnode_LDADD = $(SM_PROG_LIBS)

BENCHES += bench/raft
bench_raft_SOURCES = bench/raft.c
bench_raft_LDADD = $(SM_PROG_LIBS)

TESTS += tests/integration/test_raft.sh
dist_noinst_SCRIPTS += tests/integration/test_raft.sh
EXTRA_DIST += tests/integration/raft_cluster.py

check_PROGRAMS += tests/unit/test_raft_fsm
TESTS += tests/unit/test_raft_fsm
tests_unit_test_raft_fsm_SOURCES = tests/unit/test_raft_fsm.c
tests_unit_test_raft_fsm_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)

# Lock safety under real faults (raft leader kills, netns partitions, redis
# restarts) with a history checker; bench/locks runs the same schedule.
TESTS += tests/integration/test_lockcheck.sh
dist_noinst_SCRIPTS += tests/integration/test_lockcheck.sh
EXTRA_DIST += tests/integration/lockcheck/lockcheck.py

BENCHES += bench/locks
bench_locks_SOURCES = bench/locks.c
bench_locks_CPPFLAGS = $(AM_CPPFLAGS) -DSM_SRCDIR='"$(abs_top_srcdir)"'
