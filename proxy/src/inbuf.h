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

/* Gives the block back; the buffer must hold nothing unread. */
static inline void inbuf_release(ev_loop *loop, struct iobuf *b, struct http_msg *m) {
    if (b->data) ev_buf_put(loop, b->data - ev_buf_headroom(loop));
    *b = (struct iobuf){0};
    m->hdr = NULL;
}

#endif
