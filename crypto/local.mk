# crypto/ build fragment: identity, CA/certificates, envelope, record signatures (crypto helper)
noinst_HEADERS += crypto/smc.h crypto/keys.h crypto/cert.h crypto/ctx.h crypto/envelope.h \
	crypto/recsig.h crypto/crypto.h
noinst_HEADERS += crypto/internal.h crypto/ctx_int.h
libsmcore_la_SOURCES += crypto/util.c crypto/keys.c crypto/cert.c crypto/ctx.c crypto/envelope.c \
	crypto/recsig.c
