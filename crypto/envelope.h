/* envelope.h: the signed (optionally encrypted) packet envelope and per-sender replay windows. */
#ifndef CRYPTO_ENVELOPE_H
#define CRYPTO_ENVELOPE_H

#include "crypto/ctx.h"

/**
 * @file
 * Packet layout (integers big-endian), see docs/security.md:
 *
 *     off  size  field
 *     0    1     version tag 0xE1 (also domain-separates packet signatures)
 *     1    1     flags: 0x01 encrypted, 0x02 sender certificate attached
 *     2    1     cluster key id (0 when not encrypted)
 *     3    1     sender node id length n (1..64)
 *     4    n     sender node id
 *     4+n  8     incarnation
 *     12+n 8     sequence
 *     [cert flag]   2 + c   certificate length c (u16) and encoded certificate
 *     [encrypted]   24      XChaCha20 nonce
 *     ...          payload, or ciphertext of it plus a 16-byte Poly1305 tag
 *                  (associated data: every header byte before the ciphertext)
 *     end-64  64    sender's Ed25519 signature over every byte before it
 *
 * smc_open() checks, before anything else is parsed: the header bounds, the
 * sender's certificate (trusted, or attached and valid), the signature, then
 * the replay window, then decrypts. Nothing in the payload is looked at.
 *
 * Replay protection: per sender, the highest (incarnation, sequence) seen and a
 * 128-bit window below it. A higher incarnation resets the window (the sender
 * restarted); an older incarnation is refused; within the current one a
 * sequence more than 127 below the highest, or already seen, is refused.
 * The window is only advanced by packets whose signature verified.
 */

#define SMC_ENV_TAG         0xE1
#define SMC_ENV_F_ENCRYPTED 0x01u
#define SMC_ENV_F_CERT      0x02u
#define SMC_ENV_NONCE_LEN   24
#define SMC_ENV_MAC_LEN     16
#define SMC_REPLAY_WINDOW   128

/** Header + signature bytes of a plain packet from a sender whose id is @p idlen bytes. */
#define SMC_ENV_OVERHEAD(idlen) (4 + (idlen) + 16 + SMC_SIG_LEN)
/** Extra bytes when encrypted (nonce + tag). */
#define SMC_ENV_ENC_OVERHEAD (SMC_ENV_NONCE_LEN + SMC_ENV_MAC_LEN)
/** Extra bytes when the sender's certificate is attached. */
#define SMC_ENV_CERT_OVERHEAD(certlen) (2 + (certlen))
/** Worst case over every id length, encryption and an attached certificate (376). */
#define SMC_ENV_MAX_OVERHEAD                                                                       \
    (SMC_ENV_OVERHEAD(SMC_MAX_ID) + SMC_ENV_ENC_OVERHEAD + SMC_ENV_CERT_OVERHEAD(SMC_CERT_MAX_LEN))

/** smc_seal() flag: attach the own certificate (first contact, join). */
#define SMC_SEAL_CERT 0x01u

/**
 * Exact envelope overhead of packets sealed by @p c with @p seal_flags
 * (SMC_SEAL_*), given its id length, keyring and certificate: a payload of
 * mtu - smc_seal_overhead() bytes fills an MTU-sized packet exactly.
 */
size_t smc_seal_overhead(const struct smc_ctx *c, unsigned seal_flags);

/**
 * Seal @p payload into a packet in @p out (@p cap bytes): header, payload
 * (encrypted with the primary cluster key when the keyring is not empty),
 * signature. @p seq should grow by one per packet within an incarnation.
 * Returns 0 and the length in @p outlen; SM_ERANGE when @p cap is too small
 * (nothing written that matters), SM_EINVAL on bad arguments.
 */
int smc_seal(struct smc_ctx *c, uint64_t seq, unsigned seal_flags, const uint8_t *payload,
             size_t len, uint8_t *out, size_t cap, size_t *outlen) SM_MUST_CHECK;

/** What smc_open() found in an accepted packet. */
struct smc_opened {
    const char *sender;     /**< sender node id, NOT NUL-terminated; borrowed from the packet */
    size_t sender_len;      /**< its length */
    uint64_t incarnation;   /**< sender incarnation */
    uint64_t seq;           /**< sequence number */
    const uint8_t *payload; /**< plaintext payload: points into the packet when not encrypted,
                                 or into the context's buffer (valid until the next smc_open()
                                 or smc_ctx_delete()) when encrypted */
    size_t payload_len;     /**< its length */
    uint8_t flags;          /**< SMC_ENV_F_* as received */
    int cert_added;         /**< 1 when an attached certificate changed the trust store
                                 (time to smc_pending_take_for() the sender) */
    enum smc_reason why;    /**< SMC_R_OK, or why the packet was rejected */
};

/**
 * Verify and open a packet. Returns 0 with @p out filled, or a negative code
 * with out->why set: SM_EPROTO (FORMAT, VERSION, TRUNCATED, TOO_LARGE),
 * SM_EAUTH (UNKNOWN_SENDER, ID_MISMATCH, EXPIRED, NOT_YET_VALID, REVOKED,
 * REPLAY, OLD_INCARNATION, PLAINTEXT, ENCRYPTED, NO_KEY), SM_ECRYPTO (BADSIG,
 * WRONG_CA, DECRYPT), SM_ENOMEM. A rejected packet changes no state.
 */
int smc_open(struct smc_ctx *c, int64_t now_ms, const uint8_t *pkt, size_t len,
             struct smc_opened *out) SM_MUST_CHECK;

/**
 * Read the sender id of a packet without verifying anything (for logging a
 * rejected packet). Returns 0 or SM_EPROTO.
 */
int smc_peek_sender(const uint8_t *pkt, size_t len, const char **id, size_t *idlen);

#endif /* CRYPTO_ENVELOPE_H */
