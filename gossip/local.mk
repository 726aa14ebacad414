# gossip/ build fragment: wire codec and the sans-IO node (protocol engineer); udp.c is the lead's
libsmcore_la_SOURCES += gossip/node.c gossip/wire.c
noinst_HEADERS += gossip/node.h gossip/wire.h
