/* Backend connections: opening one, and the per-worker pools of idle
 * keep-alive connections (a slot per backend, and one list per worker,
 * oldest first, for the sweep), checked before reuse. */
#ifndef LB_UPSTREAM_H
#define LB_UPSTREAM_H

#include <stdint.h>

#include "ev.h"
#include "http.h"
#include "list.h"

/* Idle connections kept per backend and worker, and for how long: below
 * common backend keep-alive timeouts. */
#define POOL_MAX_IDLE   256
#define POOL_MAX_AGE_MS 10000

struct backend;
struct worker;

/* A connection to a backend, owned by one client while in use, else idle in
 * its worker's pool. */
struct upconn {
    int fd;
    struct backend *be; /* referenced while the connection exists */
    ev_op rd, wr;
    struct iobuf in;
    struct http_msg resp;
    int reused; /* taken from the pool: it may have been closed meanwhile */
    uint64_t idle_since_ms;
    struct list in_slot; /* in its backend's pool slot, while idle */
    struct list in_lru;  /* in its worker's idle list, oldest first, while idle */
};

/* A new connection to be, not yet connected (the caller issues the connect);
 * NULL when no socket can be had. */
struct upconn *upconn_open(struct worker *w, struct backend *be);
/* Closes and frees; its ops must be idle. */
void upconn_free(struct worker *w, struct upconn *u);

/* A pooled connection to be that still looks alive (not closed, and nothing
 * unsolicited to read: bytes beyond a response must never reach the next
 * client), or NULL. */
struct upconn *pool_take(struct worker *w, struct backend *be);
/* Keeps u for a later request to its backend, or closes it when the slot is
 * full, the worker drains or the backend was removed. */
void pool_put(struct worker *w, struct upconn *u);
/* Closes idle connections past their age or whose backend was removed. */
void pool_sweep(struct worker *w);
void pool_close_all(struct worker *w);

#endif
