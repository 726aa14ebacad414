# src/ core: public API, store front, local backend, metrics
libsmcore_la_SOURCES += src/error.c
noinst_HEADERS += src/backend.h src/metrics.h
