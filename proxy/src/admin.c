/* The admin listener's server: a loop on a thread of its own, keep-alive
 * HTTP/1.1 with heads parsed by the same strict parser as the data path,
 * GET and HEAD only, no request bodies. */
#define _GNU_SOURCE
#include "admin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "list.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "status.h"

#define ADMIN_HEAD_MAX  8192
#define ADMIN_IDLE_MS   30000
#define ADMIN_MAX_CONNS 256

struct admin {
    struct admin_view v;
    int reader_id;
    ev_loop *loop;
    int listen_fd;
    ev_op accept_op;
    struct list conns; /* admin_conn.link */
    int nconns;
    atomic_int stop;
    pthread_t thread;
};

struct admin_conn {
    struct admin *a;
    struct list link;
    int fd;
    ev_op rd, wr;
    ev_timer timer;
    char in[ADMIN_HEAD_MAX];
    size_t len;
    struct http_msg req;
    struct sbuf out;
    size_t off;
    int keep, closing;
};

static void read_more(struct admin_conn *c);
static void handle_buffered(struct admin_conn *c);

static void conn_release(struct admin_conn *c) {
    close(c->fd);
    http_msg_free(&c->req);
    sbuf_free(&c->out);
    free(c);
}

static void conn_free(struct admin_conn *c) {
    struct admin *a = c->a;
    ev_timer_stop(a->loop, &c->timer);
    ev_forget_fd(a->loop, c->fd);
    list_remove(&c->link);
    a->nconns--;
    conn_release(c);
}

/* Frees once the ops cancelled by conn_close have come back. */
static void settle(struct admin_conn *c) {
    if (c->closing && !ev_op_busy(&c->rd) && !ev_op_busy(&c->wr)) conn_free(c);
}

static void conn_close(struct admin_conn *c) {
    if (!c->closing) {
        c->closing = 1;
        ev_cancel(c->a->loop, &c->rd);
        ev_cancel(c->a->loop, &c->wr);
    }
    settle(c);
}

static void on_timer(ev_timer *t) {
    conn_close(t->ctx);
}

static void on_sent(ev_op *op, int res) {
    struct admin_conn *c = op->ctx;
    if (c->closing || res <= 0) {
        conn_close(c);
        return;
    }
    c->off += (size_t)res;
    if (c->off < c->out.len) {
        ev_send(c->a->loop, &c->wr, c->fd, c->out.data + c->off, c->out.len - c->off);
        return;
    }
    if (!c->keep) {
        conn_close(c);
        return;
    }
    /* pipelined requests may already be buffered */
    memmove(c->in, c->in + c->req.head_len, c->len - c->req.head_len);
    c->len -= c->req.head_len;
    http_msg_reset(&c->req);
    handle_buffered(c);
}

static void respond(struct admin_conn *c, int status, const char *type, const struct sbuf *body,
                    const char *extra_headers) {
    int head_only = c->req.head_done && c->req.method == HTTP_HEAD;
    c->out.len = 0;
    sbuf_addf(&c->out,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
              "Cache-Control: no-store\r\n%s%s\r\n",
              status, http_reason(status), type, body->len, extra_headers,
              c->keep ? "" : "Connection: close\r\n");
    if (!head_only) sbuf_add(&c->out, body->data, body->len);
    c->off = 0;
    ev_timer_start(c->a->loop, &c->timer, ADMIN_IDLE_MS);
    ev_send(c->a->loop, &c->wr, c->fd, c->out.data, c->out.len);
}

static void respond_text(struct admin_conn *c, int status, const char *text, const char *extra) {
    struct sbuf body = {0};
    sbuf_adds(&body, text);
    respond(c, status, "text/plain; charset=utf-8", &body, extra);
    sbuf_free(&body);
}

static int path_is(const struct http_msg *m, const char *path) {
    size_t n = strlen(path);
    return m->url_len >= n && !memcmp(m->url, path, n) && (m->url_len == n || m->url[n] == '?');
}

/* The admin thread is online only while it renders: idle, it never holds
 * up a table swap. */
static void render(struct admin *a, void (*fn)(const struct admin_view *, struct sbuf *),
                   struct sbuf *body) {
    balancer_reader_online(a->v.bal, a->reader_id);
    fn(&a->v, body);
    balancer_reader_offline(a->v.bal, a->reader_id);
}

static void route(struct admin_conn *c) {
    const struct http_msg *m = &c->req;
    if (m->framing != BODY_NONE) c->keep = 0; /* bodies are not read: the framing is lost */
    int known = path_is(m, "/metrics") || path_is(m, "/status") || path_is(m, "/healthz");
    if (!known) {
        respond_text(c, 404, "not found: try /metrics, /status or /healthz\n", "");
        return;
    }
    if (m->method != HTTP_GET && m->method != HTTP_HEAD) {
        respond_text(c, 405, "method not allowed\n", "Allow: GET, HEAD\r\n");
        return;
    }
    struct sbuf body = {0};
    if (path_is(m, "/metrics")) {
        render(c->a, metrics_render, &body);
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", &body, "");
    } else if (path_is(m, "/status")) {
        render(c->a, status_render, &body);
        respond(c, 200, "application/json", &body, "");
    } else if (atomic_load(&g_draining)) {
        /* load balancers in front stop sending new connections */
        respond_text(c, 503, "draining\n", "");
    } else {
        respond_text(c, 200, "ok\n", "");
    }
    sbuf_free(&body);
}

static void handle_buffered(struct admin_conn *c) {
    int r = c->len ? http_parse_head(&c->req, c->in, c->len, 0) : HTTP_NEED_MORE;
    if (r == HTTP_NEED_MORE) {
        if (c->len == sizeof(c->in)) {
            c->keep = 0;
            respond_text(c, 431, "request head too large\n", "");
            return;
        }
        read_more(c);
        return;
    }
    if (r < 0) {
        c->keep = 0;
        respond_text(c, c->req.refuse_status, "bad request\n", "");
        return;
    }
    c->keep = c->req.keep_alive && !atomic_load(&c->a->stop);
    route(c);
}

static void on_read(ev_op *op, int res) {
    struct admin_conn *c = op->ctx;
    if (c->closing || res <= 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)res;
    handle_buffered(c);
}

static void read_more(struct admin_conn *c) {
    ev_timer_start(c->a->loop, &c->timer, ADMIN_IDLE_MS);
    ev_recv(c->a->loop, &c->rd, c->fd, c->in + c->len, sizeof(c->in) - c->len);
}

static void conn_start(struct admin *a, int fd) {
    struct admin_conn *c = calloc(1, sizeof(*c));
    if (!c || http_msg_init(&c->req, HTTP_REQUEST, 64) < 0) {
        free(c);
        close(fd);
        return;
    }
    c->a = a;
    c->fd = fd;
    ev_op_init(&c->rd, on_read, c);
    ev_op_init(&c->wr, on_sent, c);
    ev_timer_init(&c->timer, on_timer, c);
    list_push(&a->conns, &c->link);
    a->nconns++;
    read_more(c);
}

static void on_accept(ev_op *op, int res) {
    struct admin *a = op->ctx;
    if (res >= 0) {
        if (a->nconns >= ADMIN_MAX_CONNS)
            close(res);
        else
            conn_start(a, res);
    } else if (res != -ECANCELED && res != -EAGAIN && res != -ECONNABORTED && res != -EINTR) {
        log_warn("admin accept: %s", strerror(-res));
    }
    if (!atomic_load(&a->stop)) ev_accept(a->loop, op, a->listen_fd);
}

static void tick(ev_loop *loop, void *arg) {
    struct admin *a = arg;
    if (atomic_load(&a->stop)) ev_stop(loop);
}

static void *admin_main(void *arg) {
    struct admin *a = arg;
    ev_accept(a->loop, &a->accept_op, a->listen_fd);
    ev_run(a->loop);
    return NULL;
}

/* The listening socket: 0, or -errno with err filled. */
static int admin_listen(struct admin *a, char *err, size_t errlen) {
    const struct proxy_config *cfg = a->v.cfg;
    if (net_port_taken(&cfg->admin)) {
        snprintf(err, errlen, "cannot listen on %s: address already in use", cfg->admin_text);
        return -EADDRINUSE;
    }
    if ((a->listen_fd = net_listen(&cfg->admin, 0, 128)) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", cfg->admin_text, strerror(-a->listen_fd));
        return a->listen_fd;
    }
    return 0;
}

/* Its loop and thread: 0, or -errno with err filled. */
static int admin_run(struct admin *a, char *err, size_t errlen) {
    char why[256] = "";
    errno = 0;
    if (!(a->loop = ev_loop_new(a->v.cfg->engine, why, sizeof(why)))) {
        int e = errno ? errno : ENOMEM;
        snprintf(err, errlen, "cannot create its event loop: %s", why[0] ? why : strerror(e));
        return -e;
    }
    ev_op_init(&a->accept_op, on_accept, a);
    ev_set_tick(a->loop, tick, a);
    int rc = pthread_create(&a->thread, NULL, admin_main, a);
    if (!rc) return 0;
    snprintf(err, errlen, "cannot start its thread: %s", strerror(rc));
    ev_loop_free(a->loop);
    return -rc;
}

int admin_start(const struct admin_view *v, struct admin **out, char *err, size_t errlen) {
    struct admin *a = calloc(1, sizeof(*a));
    *out = NULL;
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    a->v = *v;
    list_init(&a->conns);
    a->reader_id = balancer_reader_id(v->bal, READER_ADMIN);
    a->listen_fd = -1;
    int rc = admin_listen(a, err, errlen);
    if (!rc) rc = admin_run(a, err, errlen);
    if (rc) {
        if (a->listen_fd >= 0) close(a->listen_fd);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void admin_stop(struct admin *a) {
    if (!a) return;
    atomic_store(&a->stop, 1);
    ev_wake(a->loop);
    pthread_join(a->thread, NULL);
    ev_loop_free(a->loop); /* first: no pending op may still reach a buffer */
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &a->conns) conn_release(list_entry(pos, struct admin_conn, link));
    close(a->listen_fd);
    free(a);
}
