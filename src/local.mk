# src/ core: public API, store front, local backend, metrics (lead)
libsmcore_la_SOURCES += src/error.c src/config.c src/metrics.c src/store.c src/backend_local.c
noinst_HEADERS += src/backend.h src/metrics.h src/localcore.h
