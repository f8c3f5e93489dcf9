/* A pump moves one direction of a connection pair: the bytes already read
 * into the source's buffer first, then the rest of the body. Bodies of known
 * length and tunnels go socket -> pipe -> socket with splice, through two
 * pipes taken in turn so that one fills while the other drains (one pipe
 * when a second cannot be had, the buffer when none can: EMFILE); chunked
 * bodies are decoded and written
 * out canonically re-encoded (or de-chunked), never relayed byte for byte.
 * Without a sink (dst < 0) a pump drains: it reads and drops a body the
 * other side will not take, so that it is never read as requests.
 *
 * Ownership of the ops: from pump_start until done runs, the pump owns the
 * source's read op and the sink's write op (their cb/ctx are its own; their
 * owner's are saved and given back before done runs). The owner issues
 * nothing on them meanwhile; pump_abort cancels the one in flight. */
#ifndef LB_PUMP_H
#define LB_PUMP_H

#include <stdint.h>

#include "ev.h"
#include "http.h"

#define PUMP_UNTIL_EOF UINT64_MAX

struct pump;
typedef void (*pump_fn)(struct pump *p, int err);

/* An op's owner while a pump holds it. */
struct op_owner {
    ev_cb cb;
    void *ctx;
};

struct pump {
    ev_loop *loop;
    ev_op *rd, *wr; /* the source's read-side op and the sink's write-side op */
    struct op_owner rd_owner, wr_owner;
    int src, dst;
    int drain;            /* no sink: what is read is dropped */
    struct iobuf *in;     /* the source's buffer */
    struct http_msg *msg; /* chunked: the message whose body this is */
    int rechunk;          /* chunked: re-encode (else de-chunk) */
    struct sbuf enc;      /* chunked: decoded bytes waiting to be written */
    size_t enc_off;
    uint64_t left;   /* length mode: bytes still to move, or PUMP_UNTIL_EOF */
    uint64_t budget; /* drain: most bytes to read, then -EMSGSIZE */
    int complete;    /* chunked: the last chunk was seen */
    int aborted;
    int from_buffer; /* the pending write is a send from in or enc, not a splice */
    struct pump_pipe {
        int r, w;     /* -1: none */
        size_t piped; /* bytes in it */
    } pipes[2];
    unsigned fill, empty;   /* the pipe splice_in fills next, the one splice_out drains */
    int err;                /* the first failure: finish once no op is in flight */
    int src_eof;            /* until-EOF: the source closed, what is piped still goes */
    uint64_t moved, copied; /* delivered since pump_take_counts(); of which from user space */
    pump_fn done;           /* err: 0, -errno, -EBADMSG for bad chunk framing */
    pump_fn progress;       /* optional, after each step that moved bytes */
    void *owner;
    /* read by the owner, written by the pump alone */
    int active;        /* between pump_start and done */
    int failed_at_dst; /* set with an error: the sink, not the source, failed */
    uint64_t received; /* bytes read from the source (its buffer included) */
};

void pump_init(struct pump *p, ev_loop *loop, void *owner, pump_fn done, pump_fn progress);
/* Sets the two ends for the next run; chunked_msg (or NULL) is the message
 * whose chunked body is to be decoded as it passes, re-encoded if rechunk,
 * else de-chunked. wr may be NULL (dst -1) until pump_set_sink. */
void pump_prepare(struct pump *p, ev_op *rd, int src, struct iobuf *in, ev_op *wr, int dst,
                  struct http_msg *chunked_msg, int rechunk);
/* Gives a prepared pump that is not running its sink. */
void pump_set_sink(struct pump *p, ev_op *wr, int dst);
/* Starts moving `length` bytes (or PUMP_UNTIL_EOF) from src to dst; for a
 * chunked body, up to the end of its last chunk. Its ops must be idle. */
void pump_start(struct pump *p, uint64_t length);
/* Drains: reads and drops `length` bytes (PUMP_UNTIL_EOF: up to the close;
 * chunked: to the end of the body), at most budget bytes. */
void pump_start_drain(struct pump *p, uint64_t length, uint64_t budget);
/* Decodes the chunked bytes already buffered, without any I/O: 0, or
 * -EBADMSG when they are malformed (nothing of the body has left then). */
int pump_decode_buffered(struct pump *p);
/* Stops issuing ops: the pending one completes (cancelled), the ops go back
 * to their owners and done runs (-ECANCELED). No-op on a pump not running. */
void pump_abort(struct pump *p);
/* Whether the pump waits for its source (not for its sink). */
int pump_waits_for_source(const struct pump *p);
/* Whether the source gave the whole body (its last chunk, or every byte of
 * its length, read), even when the sink then failed. */
int pump_source_done(const struct pump *p);
/* Length mode: what is left of the length given to pump_start. */
uint64_t pump_left(const struct pump *p);
/* The bytes delivered since the last call, and of those how many passed
 * through user space; the counts start again from zero. */
static inline void pump_take_counts(struct pump *p, uint64_t *moved, uint64_t *copied) {
    *moved = p->moved;
    *copied = p->copied;
    p->moved = p->copied = 0;
}
/* Frees what a finished pump still holds (its encoding buffer). */
void pump_free(struct pump *p);
/* Closes the thread's cached pipes, at thread exit. */
void pump_thread_cleanup(void);

#endif
