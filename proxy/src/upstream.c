/* Backend connections and their per-worker pools (upstream.h). */
#define _GNU_SOURCE
#include "upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer.h"
#include "inbuf.h"
#include "log.h"
#include "net.h"
#include "worker.h"

struct upconn *upconn_open(struct worker *w, struct backend *be) {
    int fd = net_socket_for(&be->addr);
    if (fd < 0) {
        log_warn("socket for backend %s: %s", be->name, strerror(-fd));
        return NULL;
    }
    struct upconn *u = calloc(1, sizeof(*u));
    if (!u) {
        close(fd);
        return NULL;
    }
    http_msg_init_lent(&u->resp, HTTP_RESPONSE, w->cfg->limits.max_headers);
    u->fd = fd;
    u->be = be;
    list_init(&u->in_slot);
    list_init(&u->in_lru);
    backend_ref(be);
    return u;
}

void upconn_free(struct worker *w, struct upconn *u) {
    ev_forget_fd(w->loop, u->fd);
    close(u->fd);
    backend_unref(u->be);
    inbuf_release(w->loop, &u->in, &u->resp);
    free(u);
}

/* An idle connection the backend closed (or wrote to, which it must not) is
 * readable; one still open and quiet says EAGAIN. */
static int still_open(int fd) {
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void unlink_idle(struct worker *w, struct upconn *u) {
    u->be->slots[w->id].n--;
    list_remove(&u->in_slot);
    list_remove(&u->in_lru);
}

/* What the loop knows costs nothing (epoll: no edge since it went quiet);
 * otherwise one recv(MSG_PEEK) asks. */
static int looks_alive(struct worker *w, const struct upconn *u) {
    return ev_fd_quiet(w->loop, u->fd) || still_open(u->fd);
}

struct upconn *pool_take(struct worker *w, struct backend *be) {
    struct row_slot *p = &be->slots[w->id];
    uint64_t now = ev_now_ms(w->loop);
    while (!list_empty(&p->idle)) {
        struct upconn *u = list_first(&p->idle, struct upconn, in_slot);
        unlink_idle(w, u);
        if (now - u->idle_since_ms < POOL_MAX_AGE_MS && looks_alive(w, u)) {
            u->reused = 1;
            return u;
        }
        upconn_free(w, u);
    }
    return NULL;
}

void pool_put(struct worker *w, struct upconn *u) {
    struct row_slot *p = &u->be->slots[w->id];
    if (p->n >= POOL_MAX_IDLE || w->draining || atomic_load(&u->be->removed)) {
        upconn_free(w, u);
        return;
    }
    inbuf_release(w->loop, &u->in, &u->resp); /* the caller checked: nothing unread */
    http_msg_reset(&u->resp);
    u->idle_since_ms = ev_now_ms(w->loop);
    list_push(&p->idle, &u->in_slot);
    p->n++;
    list_append(&w->idle_lru, &u->in_lru);
}

void pool_sweep(struct worker *w) {
    uint64_t now = ev_now_ms(w->loop);
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &w->idle_lru) {
        struct upconn *u = list_entry(pos, struct upconn, in_lru);
        if (now - u->idle_since_ms >= POOL_MAX_AGE_MS || atomic_load(&u->be->removed)) {
            unlink_idle(w, u);
            upconn_free(w, u);
        }
    }
}

void pool_close_all(struct worker *w) {
    while (!list_empty(&w->idle_lru)) {
        struct upconn *u = list_first(&w->idle_lru, struct upconn, in_lru);
        unlink_idle(w, u);
        upconn_free(w, u);
    }
}
