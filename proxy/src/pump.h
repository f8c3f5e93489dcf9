/* A pump moves one direction of a connection pair: the bytes already read
 * into the source's buffer first, then the rest of the body. Bodies of known
 * length and tunnels go socket -> pipe -> socket with splice; chunked bodies
 * pass through the buffer, their framing checked by llhttp as they go. */
#ifndef LB_PUMP_H
#define LB_PUMP_H

#include <stdint.h>

#include "ev.h"
#include "http.h"

#define PUMP_UNTIL_EOF UINT64_MAX

struct iobuf {
    char *data;
    size_t cap, pos, len; /* unread bytes are data[pos..len) */
};

struct pump;
typedef void (*pump_fn)(struct pump *p, int err);

struct pump {
    ev_loop *loop;
    ev_op *rd, *wr; /* the source's read-side op and the sink's write-side op */
    int src, dst;
    struct iobuf *in;     /* the source's buffer */
    struct http_msg *msg; /* chunked: the message whose body this is */
    uint64_t left;        /* length mode: bytes still to move, or PUMP_UNTIL_EOF */
    size_t checked;       /* chunked: bytes at in->pos validated, not yet sent */
    int complete;         /* chunked: the last chunk was seen */
    int active, aborted;
    int failed_at_dst; /* set with an error: the sink, not the source, failed */
    int from_buffer;   /* the pending write is a send from in, not a splice */
    int pipe_r, pipe_w;
    size_t piped;
    uint64_t moved, copied; /* bytes delivered; of which from user space */
    pump_fn done;           /* err: 0, -errno, -EBADMSG for bad chunk framing */
    pump_fn progress;       /* optional, after each step that moved bytes */
    void *owner;
};

void pump_init(struct pump *p, ev_loop *loop, void *owner, pump_fn done);
/* Sets the two ends for the next run; chunked_msg (or NULL) is the message
 * whose chunked body is to be checked as it passes. */
void pump_prepare(struct pump *p, ev_op *rd, int src, struct iobuf *in, ev_op *wr, int dst,
                  struct http_msg *chunked_msg);
/* Starts moving `length` bytes (or PUMP_UNTIL_EOF) from src to dst; for a
 * chunked body, up to the end of its last chunk. */
void pump_start(struct pump *p, uint64_t length);
/* Validates the chunked bytes already buffered, without any I/O: 0, or
 * -EBADMSG when they are malformed. */
int pump_check_chunked(struct pump *p);
/* Stops issuing ops: a pending one completes (cancelled) and done runs. */
void pump_abort(struct pump *p);
/* Closes the thread's cached pipes, at thread exit. */
void pump_thread_cleanup(void);

#endif
