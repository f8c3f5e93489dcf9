/* Backend connections: opening, and per-worker pools of idle keep-alive
 * connections, checked before reuse. */
#define _GNU_SOURCE
#include "worker.h"

#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "net.h"

#define UPCONN_BUF      16384
#define POOL_MAX_IDLE   256
#define POOL_MAX_AGE_MS 10000 /* below common backend keep-alive timeouts */

struct upconn *upconn_open(struct worker *w, struct backend *be) {
    struct upconn *u = calloc(1, sizeof(*u));
    if (!u) return NULL;
    u->in.data = malloc(UPCONN_BUF);
    if (!u->in.data || http_msg_init(&u->resp, HTTP_RESPONSE, w->cfg->limits.max_headers) < 0) {
        free(u->in.data);
        free(u);
        return NULL;
    }
    u->in.cap = UPCONN_BUF;
    u->be = be;
    u->fd = net_socket_for(&be->addr);
    if (u->fd < 0) {
        log_warn("socket for backend %s: %s", be->name, strerror(-u->fd));
        http_msg_free(&u->resp);
        free(u->in.data);
        free(u);
        return NULL;
    }
    return u;
}

void upconn_free(struct worker *w, struct upconn *u) {
    ev_forget_fd(w->loop, u->fd);
    close(u->fd);
    http_msg_free(&u->resp);
    free(u->in.data);
    free(u);
}

/* An idle connection the backend closed (or wrote to, which it must not) is
 * readable; one still open and quiet says EAGAIN. */
static int still_open(int fd) {
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

struct upconn *pool_take(struct worker *w, struct backend *be) {
    struct idle_pool *p = &w->pools[be->index];
    uint64_t now = ev_now_ms(w->loop);
    while (p->head) {
        struct upconn *u = p->head;
        p->head = u->next_idle;
        p->n--;
        if (now - u->idle_since_ms < POOL_MAX_AGE_MS && still_open(u->fd)) {
            u->reused = 1;
            return u;
        }
        upconn_free(w, u);
    }
    return NULL;
}

void pool_put(struct worker *w, struct upconn *u) {
    struct idle_pool *p = &w->pools[u->be->index];
    if (p->n >= POOL_MAX_IDLE || w->draining) {
        upconn_free(w, u);
        return;
    }
    u->in.pos = u->in.len = 0;
    http_msg_reset(&u->resp);
    u->idle_since_ms = ev_now_ms(w->loop);
    u->next_idle = p->head;
    p->head = u;
    p->n++;
}

void pool_close_all(struct worker *w) {
    for (size_t i = 0; i < w->bal->nbackends; i++) {
        struct idle_pool *p = &w->pools[i];
        while (p->head) {
            struct upconn *u = p->head;
            p->head = u->next_idle;
            upconn_free(w, u);
        }
        p->n = 0;
    }
}
