# crdt/: records, merge order, replica (lead); hlc, resolvers, models are in crdt/extra.mk
libsmcore_la_SOURCES += crdt/record.c crdt/replica.c
noinst_HEADERS += crdt/record.h crdt/replica.h
