# crypto/ build fragment: identity, CA/certificates, envelope, record signatures (crypto helper)
noinst_HEADERS += crypto/smc.h crypto/keys.h crypto/cert.h crypto/ctx.h crypto/envelope.h \
	crypto/recsig.h crypto/crypto.h
