# crypto/ build fragment: identity, CA/certificates, envelope, record signatures (crypto helper)
noinst_HEADERS += crypto/smc.h crypto/keys.h crypto/cert.h crypto/ctx.h crypto/envelope.h \
	crypto/recsig.h crypto/crypto.h
noinst_HEADERS += crypto/internal.h crypto/ctx_int.h
libsmcore_la_SOURCES += crypto/util.c crypto/keys.c crypto/cert.c crypto/ctx.c crypto/envelope.c \
	crypto/recsig.c

# Tests (cmocka) and the envelope benchmark.
noinst_HEADERS += tests/unit/test_crypto_util.h
check_PROGRAMS += tests/unit/test_crypto_envelope
TESTS += tests/unit/test_crypto_envelope
tests_unit_test_crypto_envelope_SOURCES = tests/unit/test_crypto_envelope.c
tests_unit_test_crypto_envelope_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_crypto_envelope_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS) $(SODIUM_LIBS)
check_PROGRAMS += tests/unit/test_crypto_record
TESTS += tests/unit/test_crypto_record
tests_unit_test_crypto_record_SOURCES = tests/unit/test_crypto_record.c
tests_unit_test_crypto_record_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_crypto_record_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS) $(SODIUM_LIBS)
check_PROGRAMS += tests/unit/test_crypto_files
TESTS += tests/unit/test_crypto_files
tests_unit_test_crypto_files_SOURCES = tests/unit/test_crypto_files.c
tests_unit_test_crypto_files_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_crypto_files_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS) $(SODIUM_LIBS)
check_PROGRAMS += tests/unit/test_crypto_kat
TESTS += tests/unit/test_crypto_kat
tests_unit_test_crypto_kat_SOURCES = tests/unit/test_crypto_kat.c
tests_unit_test_crypto_kat_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) -DSM_TEST_SRCDIR='"$(abs_top_srcdir)"'
tests_unit_test_crypto_kat_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS) $(SODIUM_LIBS)
check_PROGRAMS += tests/unit/test_crypto_oom
TESTS += tests/unit/test_crypto_oom
tests_unit_test_crypto_oom_SOURCES = tests/unit/test_crypto_oom.c tests/lib/heap.c
tests_unit_test_crypto_oom_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_crypto_oom_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS) $(SODIUM_LIBS)
tests_unit_test_crypto_oom_LDFLAGS = $(AM_LDFLAGS) $(SM_HEAP_WRAP)
EXTRA_DIST += tests/data/crypto/kat.txt tests/data/crypto/kat_check.py

BENCHES += bench/envelope
bench_envelope_SOURCES = bench/envelope.c
bench_envelope_LDADD = $(SM_PROG_LIBS) $(SODIUM_LIBS)
