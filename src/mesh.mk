# src/ mesh backend and the libev UDP driver of the gossip node (lead)
libsmcore_la_SOURCES += src/backend_mesh.c gossip/udp.c
noinst_HEADERS += gossip/udp.h
