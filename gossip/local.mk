# gossip/ build fragment: wire codec and the sans-IO node (protocol engineer); udp.c is the lead's
# the node: one concept per file, sharing gossip/node_int.h (see docs/protocol.md, "Source layout")
libsmcore_la_SOURCES += gossip/node.c gossip/members.c gossip/rumors.c gossip/send.c \
	gossip/broadcast.c gossip/records.c gossip/antientropy.c gossip/probe.c gossip/join.c \
	gossip/wire.c
noinst_HEADERS += gossip/node.h gossip/node_int.h gossip/wire.h

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
