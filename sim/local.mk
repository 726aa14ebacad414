# sim/: the discrete-event simulator and statemesh-sim (simulation engineer)
noinst_LTLIBRARIES += sim/libsmsim.la
sim_libsmsim_la_SOURCES = sim/sim.c sim/flood.c sim/core.c sim/scenario.c
noinst_HEADERS += sim/sim.h sim/rng.h sim/core.h sim/scenario.h

bin_PROGRAMS += sim/statemesh-sim
sim_statemesh_sim_SOURCES = sim/main.c
sim_statemesh_sim_LDADD = sim/libsmsim.la $(SM_PROG_LIBS)

EXTRA_DIST += sim/plot.gp

check_PROGRAMS += tests/unit/test_sim
TESTS += tests/unit/test_sim
tests_unit_test_sim_SOURCES = tests/unit/test_sim.c
tests_unit_test_sim_LDADD = sim/libsmsim.la $(SM_PROG_LIBS) $(CMOCKA_LIBS)

TESTS += tests/unit/test_sim_cli.sh
EXTRA_DIST += tests/unit/test_sim_cli.sh

check_PROGRAMS += tests/unit/test_sim_scenarios
TESTS += tests/unit/test_sim_scenarios
tests_unit_test_sim_scenarios_SOURCES = tests/unit/test_sim_scenarios.c
tests_unit_test_sim_scenarios_LDADD = sim/libsmsim.la $(SM_PROG_LIBS) $(CMOCKA_LIBS)
