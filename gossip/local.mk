# gossip/ build fragment: wire codec and the sans-IO node (protocol engineer); udp.c is the lead's
libsmcore_la_SOURCES += gossip/node.c gossip/wire.c
noinst_HEADERS += gossip/node.h gossip/wire.h

# tests (protocol engineer)
noinst_HEADERS += tests/unit/gossip_loop.h
check_PROGRAMS += tests/unit/test_gossip_wire
TESTS += tests/unit/test_gossip_wire
tests_unit_test_gossip_wire_SOURCES = tests/unit/test_gossip_wire.c
tests_unit_test_gossip_wire_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)
check_PROGRAMS += tests/unit/test_gossip_node
TESTS += tests/unit/test_gossip_node
tests_unit_test_gossip_node_SOURCES = tests/unit/test_gossip_node.c
tests_unit_test_gossip_node_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)
check_PROGRAMS += tests/unit/test_gossip_corpus
TESTS += tests/unit/test_gossip_corpus
tests_unit_test_gossip_corpus_SOURCES = tests/unit/test_gossip_corpus.c
tests_unit_test_gossip_corpus_LDADD = $(SM_PROG_LIBS) $(CMOCKA_LIBS)
EXTRA_DIST += tests/fuzz/fuzz_recv.c tests/data/gossip-corpus
dist_noinst_SCRIPTS += tests/fuzz/run.sh
