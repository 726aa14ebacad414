# examples/: a program embedding libstatemesh on its own libev loop, and its test (embed helper)
# It includes only the public statemesh.h, so it shows what an installed-library user writes.
check_PROGRAMS += examples/embed
examples_embed_SOURCES = examples/embed.c
examples_embed_LDADD = $(SM_PROG_LIBS)

# one statemeshd and a few embed processes over UDP on loopback
TESTS += tests/integration/test_embed.sh
dist_noinst_SCRIPTS += tests/integration/test_embed.sh
