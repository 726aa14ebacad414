/* udp_port.h: pick a free UDP port on 127.0.0.1 for tests, tools and benchmarks. */
#ifndef SM_TEST_UDP_PORT_H
#define SM_TEST_UDP_PORT_H

/**
 * Bind a UDP socket to 127.0.0.1 port 0, read the port the kernel chose and
 * close the socket. Returns the port (1..65535), or -1 with errno set. The
 * port is only likely to stay free until the caller binds it.
 */
int free_udp_port(void);

#endif
