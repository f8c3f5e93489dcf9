/* A connection's input buffer, lent by its worker's loop only while bytes of
 * a message are in flight (ev_recv_lent): an idle keep-alive connection, on
 * either side, holds none. A lent block is the header index of the message
 * parsed from it (the loop's headroom), then the bytes. */
#ifndef LB_INBUF_H
#define LB_INBUF_H

#include "ev.h"
#include "http.h"

/* Once per worker loop: blocks for heads of up to max_header_bytes (and for
 * a backend's response heads: 16 KiB at least) with max_headers fields. */
static inline int inbuf_setup(ev_loop *loop, int max_header_bytes, int max_headers) {
    size_t size = (size_t)max_header_bytes + 1;
    return ev_bufs_init(loop, HTTP_INDEX_LEN(max_headers) * sizeof(struct http_hdr),
                        size < 16384 ? 16384 : size);
}

/* Makes block b's buffer, holding n bytes just read, and m's index. */
static inline void inbuf_attach(ev_loop *loop, struct iobuf *b, struct http_msg *m, char *block,
                                size_t n) {
    *b = (struct iobuf){.data = block + ev_buf_headroom(loop), .cap = ev_buf_size(loop), .len = n};
    m->hdr = (struct http_hdr *)(void *)block;
}

/* Reads into b: into a block lent when the bytes come if b has none, else
 * into the room left after what b holds. */
static inline void inbuf_read(ev_loop *loop, ev_op *op, int fd, struct iobuf *b) {
    if (!b->data)
        ev_recv_lent(loop, op, fd);
    else
        ev_recv(loop, op, fd, b->data + b->len, b->cap - b->len);
}

/* What inbuf_read's op brought (res > 0): the block it was lent becomes b's
 * (and m's index), or the bytes extend b. Called before any other check, so
 * that even a result nobody wants any more is given back with b. */
static inline void inbuf_took(ev_loop *loop, struct iobuf *b, struct http_msg *m, ev_op *op,
                              int res) {
    if (res <= 0) return;
    if (!b->data)
        inbuf_attach(loop, b, m, ev_op_buf(op), (size_t)res);
    else
        b->len += (size_t)res;
}

/* Gives the block back; the buffer must hold nothing unread. */
static inline void inbuf_release(ev_loop *loop, struct iobuf *b, struct http_msg *m) {
    if (b->data) ev_buf_put(loop, b->data - ev_buf_headroom(loop));
    *b = (struct iobuf){0};
    m->hdr = NULL;
}

#endif
