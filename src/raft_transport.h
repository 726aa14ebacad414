/* raft_transport.h: an authenticated, encrypted raft_uv_transport over TCP, plus the
 * request-forwarding channel that shares its port. */
#ifndef SM_RAFT_TRANSPORT_H
#define SM_RAFT_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/cert.h"

/**
 * @file
 * Every TCP connection between two raft nodes starts with a handshake:
 *
 *     both sides send   HELLO = "SMR1" | purpose u8 | raft id u64 | X25519 pk (32)
 *                               | addr len u8 | addr | cert len u16 | certificate
 *     then both send    AUTH  = Ed25519 signature (64) by the certificate's key over
 *                               BLAKE2b("statemesh-raft-v1" | role | HELLO_client | HELLO_server)
 *
 * (each a frame: u32 big-endian length, then the bytes). A peer whose
 * certificate does not verify against the cluster CA, or whose signature over
 * this connection's fresh ephemeral keys does not verify, is dropped before a
 * single raft byte is read from it. The X25519 keys give per-direction session
 * keys (crypto_kx); every later frame is XChaCha20-Poly1305 with a counter
 * nonce, so a tampered, replayed or reordered frame closes the connection.
 *
 * Purpose RAFT connections are handed to libraft as a uv stream (one end of a
 * socketpair; this module encrypts/decrypts between the other end and the TCP
 * socket). Purpose FWD connections carry the backend's forwarded requests,
 * one message per frame.
 */

enum smt_purpose { SMT_RAFT = 1, SMT_FWD = 2 };

struct smt_conn;

/** Hooks for forward connections (all run from the uv loop). */
struct smt_hooks {
    void *arg;
    /** A forward connection finished its handshake (client or server side). */
    void (*fwd_open)(void *arg, struct smt_conn *c);
    /** A message arrived (borrowed during the call). */
    void (*fwd_msg)(void *arg, struct smt_conn *c, const uint8_t *msg, size_t len);
    /** The connection is gone (failed handshake included); @p c is freed after the call. */
    void (*fwd_close)(void *arg, struct smt_conn *c);
    /** A log line (peer rejected, ...). */
    void (*log)(void *arg, const char *msg);
};

/** Transport configuration (copied). */
struct smt_config {
    const char *bind;     /**< "host:port" to listen on */
    bool insecure;        /**< no certificates: encrypted but unauthenticated (tests only) */
    const uint8_t *ca_pk; /**< cluster CA public key (SMC_PK_LEN) unless insecure */
    const struct smc_identity *self; /**< own certificate and key unless insecure */
    unsigned handshake_timeout_ms;
    struct smt_hooks hooks;
};

/**
 * Initialise @p t as a transport on @p loop. Returns 0, SM_ENOMEM or
 * SM_ECONFIG (bad bind address; message in @p err).
 */
int smt_init(struct raft_uv_transport *t, uv_loop_t *loop, const struct smt_config *cfg, char *err,
             size_t errlen);
/** Free what smt_init() allocated, once the transport's close callback ran (or it never started).
 */
void smt_cleanup(struct raft_uv_transport *t);
/** Start listening now (normally raft_uv does it through ->listen). */

/** Open a forward connection to @p address; hooks->fwd_open or fwd_close follows. */
int smt_fwd_connect(struct raft_uv_transport *t, const char *address, void *user,
                    struct smt_conn **out);
/** Send one message on an open forward connection. SM_ENOMEM, SM_EUNAVAILABLE. */
int smt_send(struct smt_conn *c, const void *msg, size_t len);
/** Close a connection (hooks->fwd_close runs later from the loop). */
void smt_conn_close(struct smt_conn *c);
/** User pointer of a connection. */
void *smt_conn_user(const struct smt_conn *c);
void smt_conn_set_user(struct smt_conn *c, void *user);
/** Peer's certified node id ("" when insecure) and claimed raft id. */
const char *smt_conn_peer(const struct smt_conn *c);
/** Count of connections rejected by authentication since start. */
uint64_t smt_rejected(const struct raft_uv_transport *t);

/** Parse "host:port" into a socket address (numeric or resolvable host). SM_ECONFIG. */
int smt_parse_addr(const char *s, struct sockaddr_storage *out);

#endif /* SM_RAFT_TRANSPORT_H */
