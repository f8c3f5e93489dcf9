/* Addresses and sockets. */
#ifndef LB_NET_H
#define LB_NET_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

struct net_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* Parses "[HOST:]PORT", "HOST:PORT" or "[V6]:PORT" with a numeric host (or
 * "localhost"); default_host is used when only a port is given (NULL: the
 * port alone is an error). 0 on success, -1 with *err set. */
int net_parse_addr(const char *s, const char *default_host, struct net_addr *out, const char **err);
/* "HOST:PORT" of an address, into buf. */
const char *net_addr_str(const struct net_addr *a, char *buf, size_t len);
int net_addr_port(const struct net_addr *a);
/* Same family, address and port (padding and IPv6 flow labels aside). */
int net_addr_equal(const struct net_addr *a, const struct net_addr *b);
/* A non-blocking listening socket with SO_REUSEADDR (and SO_REUSEPORT when
 * reuseport); -errno on failure. */
int net_listen(const struct net_addr *a, int reuseport, int backlog);
/* Whether another socket is bound to a: SO_REUSEPORT listeners would
 * otherwise silently share the port (and its connections) with it. */
int net_port_taken(const struct net_addr *a);
/* A non-blocking TCP socket for a's family with TCP_NODELAY; -errno. */
int net_socket_for(const struct net_addr *a);
void net_set_nodelay(int fd);
/* The peer's IP (no port) as text. */
const char *net_peer_ip(int fd, char *buf, size_t len);

#endif
