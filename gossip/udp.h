/* udp.h: the libev UDP driver of the sans-IO gossip node (IPv4 and IPv6). */
#ifndef GOSSIP_UDP_H
#define GOSSIP_UDP_H

#include <stddef.h>
#include <stdint.h>

#include "gossip/node.h"

struct ev_loop;
struct gossip_udp;

/** Counters of the driver (transport-level, below the node's own stats). */
struct gossip_udp_stats {
    uint64_t rx_datagrams; /**< datagrams read from the socket */
    uint64_t rx_bytes;     /**< their bytes */
    uint64_t rx_oversize;  /**< datagrams larger than the buffer (truncated, dropped) */
    uint64_t rx_dropped;   /**< datagrams the node rejected (its stats say why) */
    uint64_t tx_datagrams; /**< datagrams sent */
    uint64_t tx_bytes;     /**< their bytes */
    uint64_t tx_errors;    /**< sendto/sendmmsg failures (e.g. unreachable) */
};

/**
 * Open a non-blocking UDP socket bound to @p bind ("host:port", "[v6]:port",
 * port 0 = any free port) on @p loop. No node is driven until
 * gossip_udp_attach(). Errors (bad address, port in use) fail with a message.
 */
int gossip_udp_new(struct ev_loop *loop, const char *bind, struct gossip_udp **out, char *err,
                   size_t errlen);
/** Start driving @p node: reads feed sm_node_recv(), one timer follows its deadline. */
void gossip_udp_attach(struct gossip_udp *u, struct sm_node *node);
/** Stop watchers and close the socket (the node is not freed). NULL is fine. */
void gossip_udp_delete(struct gossip_udp *u);
/** Send one datagram (the node's send callback forwards here). */
void gossip_udp_send(struct gossip_udp *u, const struct sm_addr *to, const uint8_t *buf,
                     size_t len);
/** Re-arm the timer after the embedder called into the node (publish, join, write). */
void gossip_udp_rearm(struct gossip_udp *u);
/** The bound address (with the real port when bound to port 0). */
int gossip_udp_local(const struct gossip_udp *u, struct sm_addr *out);
const struct gossip_udp_stats *gossip_udp_stats(const struct gossip_udp *u);
/** The current time for node calls (CLOCK_MONOTONIC and CLOCK_REALTIME in ms). */
struct sm_time gossip_udp_now(void);

/** Resolve "host:port" / "[v6]:port" (names allowed) into an address. */
int gossip_addr_parse(const char *hostport, struct sm_addr *out, char *err, size_t errlen);
/** Format an address as "host:port" ("[v6]:port"). Returns @p buf. */
char *gossip_addr_format(const struct sm_addr *a, char *buf, size_t len);

#endif
