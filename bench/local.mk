# bench/: benchmark programs owned by the lead (others declare theirs in their own fragments)
BENCHES += bench/store
bench_store_SOURCES = bench/store.c tests/lib/redis_server.c
bench_store_LDADD = $(SM_PROG_LIBS) $(HIREDIS_LIBS)

BENCHES += bench/mesh
bench_mesh_SOURCES = bench/mesh.c tests/lib/udp_port.c
bench_mesh_LDADD = $(SM_PROG_LIBS)

# a script: minutes at 10,000 nodes, so not part of `make bench`
EXTRA_DIST += bench/sim.sh
