#define _GNU_SOURCE
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse_port(const char *s, int *port) {
    if (!*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno || v < 1 || v > 65535) return -1;
    *port = (int)v;
    return 0;
}

static int fill(const char *host, int port, struct net_addr *out) {
    memset(out, 0, sizeof(*out));
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        out->len = sizeof(*v4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*v6);
        return 0;
    }
    return -1;
}

int net_parse_addr(const char *s, const char *default_host, struct net_addr *out,
                   const char **err) {
    char host[128];
    const char *port_s;
    int port;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(host)) {
            *err = "expected [IPv6]:PORT";
            return -1;
        }
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = 0;
        port_s = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            if (!default_host) {
                *err = "expected HOST:PORT";
                return -1;
            }
            snprintf(host, sizeof(host), "%s", default_host);
            port_s = s;
        } else {
            if ((size_t)(colon - s) >= sizeof(host) || colon == s) {
                *err = "bad host";
                return -1;
            }
            memcpy(host, s, (size_t)(colon - s));
            host[colon - s] = 0;
            port_s = colon + 1;
        }
    }
    if (parse_port(port_s, &port) < 0) {
        *err = "port must be 1-65535";
        return -1;
    }
    if (fill(host, port, out) < 0) {
        *err = "host must be a numeric IPv4/IPv6 address or localhost";
        return -1;
    }
    return 0;
}

int net_addr_port(const struct net_addr *a) {
    if (a->ss.ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

int net_addr_equal(const struct net_addr *a, const struct net_addr *b) {
    if (a->ss.ss_family != b->ss.ss_family) return 0;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss.ss_family != AF_INET6) return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
    const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
    return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
           !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
}

const char *net_addr_str(const struct net_addr *a, char *buf, size_t len) {
    char ip[INET6_ADDRSTRLEN] = "?";
    if (a->ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%d", ip, net_addr_port(a));
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%d", ip, net_addr_port(a));
    }
    return buf;
}

void net_set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int net_socket_for(const struct net_addr *a) {
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    net_set_nodelay(fd);
    return fd;
}

int net_listen(const struct net_addr *a, int reuseport, int backlog) {
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) goto fail;
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0) goto fail;
    if (listen(fd, backlog) < 0) goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    return -e;
}

int net_port_taken(const struct net_addr *a) {
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0; /* the listeners will say what is wrong */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int taken = bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

const char *net_peer_ip(int fd, char *buf, size_t len) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    snprintf(buf, len, "unknown");
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) return buf;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, (socklen_t)len);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf, (socklen_t)len);
    return buf;
}
