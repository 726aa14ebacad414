# src/ redis build fragment: the redis backend, its tests and its benchmark (redis helper)
libsmcore_la_SOURCES += src/backend_redis.c src/redis_event.c
noinst_HEADERS += src/redis_event.h tests/lib/redis_server.h

check_PROGRAMS += tests/unit/test_redis
TESTS += tests/unit/test_redis
tests_unit_test_redis_SOURCES = tests/unit/test_redis.c tests/lib/redis_server.c
tests_unit_test_redis_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS) $(HIREDIS_LIBS)

BENCHES += bench/redis
bench_redis_SOURCES = bench/redis.c tests/lib/redis_server.c
bench_redis_LDADD = $(SM_PROG_LIBS) $(HIREDIS_LIBS)
EXTRA_DIST += docs/redis.md
