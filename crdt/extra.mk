# crdt/ extras: hlc, resolvers, models (crdt helper)
libsmcore_la_SOURCES += crdt/hlc.c crdt/resolver.c crdt/mpread.c
noinst_HEADERS += crdt/hlc.h crdt/resolver.h crdt/mpread.h

# tests (crdt helper)
noinst_HEADERS += tests/unit/crdt_prop.h
check_PROGRAMS += tests/unit/test_crdt_hlc
TESTS += tests/unit/test_crdt_hlc
tests_unit_test_crdt_hlc_SOURCES = tests/unit/test_crdt_hlc.c
tests_unit_test_crdt_hlc_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)

# typed models of the seed (src/, owned by the crdt helper)
libsmcore_la_SOURCES += src/models.c
noinst_HEADERS += src/models.h
libsmcore_la_LIBADD += $(JANSSON_LIBS)
check_PROGRAMS += tests/unit/test_crdt_resolver
TESTS += tests/unit/test_crdt_resolver
tests_unit_test_crdt_resolver_SOURCES = tests/unit/test_crdt_resolver.c
tests_unit_test_crdt_resolver_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)
check_PROGRAMS += tests/unit/test_crdt_models
TESTS += tests/unit/test_crdt_models
tests_unit_test_crdt_models_SOURCES = tests/unit/test_crdt_models.c
tests_unit_test_crdt_models_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS) $(JANSSON_LIBS)
noinst_HEADERS += tests/unit/crdt_canon.h
check_PROGRAMS += tests/unit/test_crdt_merge
TESTS += tests/unit/test_crdt_merge
tests_unit_test_crdt_merge_SOURCES = tests/unit/test_crdt_merge.c
tests_unit_test_crdt_merge_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)
check_PROGRAMS += tests/unit/test_crdt_converge
TESTS += tests/unit/test_crdt_converge
tests_unit_test_crdt_converge_SOURCES = tests/unit/test_crdt_converge.c
tests_unit_test_crdt_converge_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)
check_PROGRAMS += tests/unit/test_crdt_mpread
TESTS += tests/unit/test_crdt_mpread
tests_unit_test_crdt_mpread_SOURCES = tests/unit/test_crdt_mpread.c
tests_unit_test_crdt_mpread_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS) $(MSGPACK_LIBS)
check_PROGRAMS += tests/unit/test_crdt_oom
TESTS += tests/unit/test_crdt_oom
tests_unit_test_crdt_oom_SOURCES = tests/unit/test_crdt_oom.c tests/lib/heap.c
tests_unit_test_crdt_oom_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS) $(JANSSON_LIBS)
tests_unit_test_crdt_oom_LDFLAGS = $(AM_LDFLAGS) -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc
