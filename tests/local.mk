# tests/: shared test helpers and the store/replica unit tests (lead)
noinst_HEADERS += tests/lib/heap.h
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
