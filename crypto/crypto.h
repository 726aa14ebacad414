/* crypto.h: umbrella header of the crypto layer (identity, CA, envelope, record signatures). */
#ifndef CRYPTO_CRYPTO_H
#define CRYPTO_CRYPTO_H

#include "crypto/smc.h"
#include "crypto/keys.h"
#include "crypto/cert.h"
#include "crypto/ctx.h"
#include "crypto/envelope.h"
#include "crypto/recsig.h"

#endif /* CRYPTO_CRYPTO_H */
