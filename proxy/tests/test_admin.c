/* The admin listener's start (admin.h): a failure says why, with -errno;
 * a start on a free port serves /healthz and stops cleanly. */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"
#include "testing.h"

/* A port of 127.0.0.1 held by a listener of our own (its fd), which
 * cfg->admin names. */
static int hold_port(struct proxy_config *cfg) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    if (bind(fd, (struct sockaddr *)&sin, len) < 0 || listen(fd, 8) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
        return -1;
    snprintf(cfg->admin_text, sizeof(cfg->admin_text), "127.0.0.1:%d", ntohs(sin.sin_port));
    const char *err;
    return net_parse_addr(cfg->admin_text, NULL, &cfg->admin, &err) < 0 ? -1 : fd;
}

static void test_port_taken(struct admin_view *v, struct proxy_config *cfg) {
    int fd = hold_port(cfg);
    CHECK(fd >= 0);
    struct admin *a = (struct admin *)v; /* anything but NULL: a failure sets it */
    char err[200] = "";
    CHECK(admin_start(v, &a, err, sizeof(err)) == -EADDRINUSE);
    CHECK(a == NULL);
    CHECK(strstr(err, "cannot listen on 127.0.0.1:") && strstr(err, "address already in use"));
    close(fd);
}

/* Freed by the hold: the port is free again, and /healthz answers. */
static void test_start_stop(struct admin_view *v) {
    struct admin *a = NULL;
    char err[200] = "";
    CHECK(admin_start(v, &a, err, sizeof(err)) == 0 && a != NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(fd, (const struct sockaddr *)&v->cfg->admin.ss, v->cfg->admin.len) == 0);
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    CHECK(write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1);
    char buf[512];
    ssize_t n, got = 0;
    while ((n = read(fd, buf + got, sizeof(buf) - 1 - (size_t)got)) > 0)
        got += n;
    buf[got > 0 ? got : 0] = 0;
    CHECK(!strncmp(buf, "HTTP/1.1 200", 12) && strstr(buf, "\r\n\r\nok\n"));
    close(fd);
    admin_stop(a);
}

int main(void) {
    log_init("test_admin", LOG_ERROR);
    struct proxy_config cfg = {0};
    cfg.engine = EV_ENGINE_AUTO;
    struct balancer *bal = balancer_new(&cfg, 1);
    struct proxy_status st = {0};
    struct admin_view v = {.cfg = &cfg, .bal = bal, .nworkers = 1, .st = &st};
    test_port_taken(&v, &cfg);
    test_start_stop(&v);
    balancer_free(bal);
    return test_summary();
}
