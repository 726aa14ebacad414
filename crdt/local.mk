# crdt/: records, merge order, replica (lead); hlc, resolvers, models (crdt helper)
noinst_HEADERS += crdt/record.h crdt/replica.h
