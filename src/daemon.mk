# src/ daemon build fragment: statemeshd, the statemesh CLI, their tests (daemon helper)
noinst_HEADERS += src/log.h src/daemon_config.h src/http.h src/api.h

bin_PROGRAMS += src/statemeshd
src_statemeshd_SOURCES = src/statemeshd.c src/api.c src/http.c src/log.c src/daemon_config.c
src_statemeshd_LDADD = $(SM_PROG_LIBS) $(MHD_LIBS) $(JANSSON_LIBS) $(YAML_LIBS)

bin_PROGRAMS += src/statemesh
src_statemesh_SOURCES = src/cli.c
src_statemesh_LDADD = $(SM_PROG_LIBS) $(JANSSON_LIBS)

# Integration tests: real statemeshd processes on free loopback ports (TAP shell scripts).
TESTS += tests/integration/test_http.sh tests/integration/test_http_daemon.sh \
	tests/integration/test_cli.sh tests/integration/test_http_locks.sh
dist_noinst_SCRIPTS += tests/integration/test_http.sh tests/integration/test_http_daemon.sh \
	tests/integration/test_cli.sh tests/integration/test_http_locks.sh
EXTRA_DIST += tests/integration/http_lib.sh tests/integration/tap_lib.sh

check_PROGRAMS += tests/unit/test_config
TESTS += tests/unit/test_config
tests_unit_test_config_SOURCES = tests/unit/test_config.c src/daemon_config.c
tests_unit_test_config_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS) $(YAML_LIBS)

EXTRA_DIST += examples/statemeshd.yaml dist/statemeshd.service dist/statemesh-alerts.yml docs/api.md docs/config.md
