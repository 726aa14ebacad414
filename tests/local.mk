# tests/: shared test helpers and the store/replica unit tests (lead)
noinst_HEADERS += tests/lib/heap.h tests/lib/udp_port.h
EXTRA_DIST += tests/lib/valgrind.supp

# Allocation-failure injection: malloc/calloc/realloc wrapped at link time.
SM_HEAP_WRAP = -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc

check_PROGRAMS += tests/unit/test_store tests/unit/test_replica
TESTS += tests/unit/test_store tests/unit/test_replica
tests_unit_test_store_SOURCES = tests/unit/test_store.c tests/lib/heap.c
tests_unit_test_store_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)
tests_unit_test_store_LDFLAGS = $(AM_LDFLAGS) $(SM_HEAP_WRAP)
tests_unit_test_replica_SOURCES = tests/unit/test_replica.c
tests_unit_test_replica_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)

check_PROGRAMS += tests/unit/test_mesh
TESTS += tests/unit/test_mesh
tests_unit_test_mesh_SOURCES = tests/unit/test_mesh.c tests/lib/udp_port.c
tests_unit_test_mesh_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)

# five real statemeshd processes over UDP (needs the daemon and CLI)
TESTS += tests/integration/test_mesh_cluster.sh
EXTRA_DIST += tests/integration/test_mesh_cluster.sh scripts/setup.sh scripts/test.sh scripts/demo_probe.py \
	scripts/demo.sh .ci/run

# attacks on running statemeshd daemons: foreign-CA/uncertified senders, replays,
# relay-re-signed records (sm_inject crafts the packets)
check_PROGRAMS += tests/integration/sm_inject
tests_integration_sm_inject_SOURCES = tests/integration/sm_inject.c tests/lib/udp_port.c
tests_integration_sm_inject_LDADD = $(SM_PROG_LIBS)
TESTS += tests/integration/test_mesh_attacks.sh
EXTRA_DIST += tests/integration/test_mesh_attacks.sh
