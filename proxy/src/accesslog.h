/* The access log: one JSON line per request, formatted by each worker into its
 * own buffer and written to the file by one writer thread, so a worker never
 * waits on the disk and shares nothing per line with the other workers. */
#ifndef LB_ACCESSLOG_H
#define LB_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

#include "ev.h"

struct alog;     /* the log file and its writer thread */
struct alog_buf; /* one per worker thread: only that thread appends to it */

/* Strings longer than these are cut (the line stays valid JSON). */
#define ALOG_PATH_MAX  4096
#define ALOG_FIELD_MAX 256 /* every other string field */

struct alog_entry {
    int64_t time_us;     /* CLOCK_REALTIME when the request started, µs */
    const char *client;  /* client IP text */
    const char *method;  /* NULL -> null */
    const char *path;    /* request target as received, NULL -> null */
    size_t path_len;     /* bytes of path (it need not be NUL-terminated) */
    int status;          /* 0 when no response was sent (written as 0) */
    const char *cluster; /* "none" for unrouted */
    const char *backend; /* NULL when no backend was involved -> null */
    uint64_t bytes_in, bytes_out, duration_us;
    int64_t backend_us;        /* -1 (any negative) when no backend answered -> null */
    const char *request_id;    /* NULL -> null */
    const char *desync_class;  /* compliant .. severe; NULL (no complete head) -> null */
    const char *desync_reason; /* why, when not compliant; NULL -> null */
};

/* Opens path ("-" = stdout) for appending (O_APPEND|O_CREAT, 0644) and starts
 * the writer thread, with nthreads per-thread buffers. NULL with err filled on
 * failure. */
struct alog *alog_open(const char *path, int nthreads, char *err, size_t errlen);
/* NULL when l is NULL or thread_id is out of range. */
struct alog_buf *alog_thread_buf(struct alog *l, int thread_id);
/* Formats one JSON line into the thread's buffer; a full buffer is handed to
 * the writer. Never blocks on I/O; when the writer is more than 16 MiB behind,
 * the buffer's lines are dropped and counted. b NULL: no-op. */
void alog_write(struct alog_buf *b, const struct alog_entry *e);
/* From the worker's loop tick (now_ms monotonic): hands over a non-empty
 * buffer whose first line is ~100 ms old. Lines reach the file within ~200 ms
 * when ticks come at least every 100 ms, or within ~100 ms with a loop set. */
void alog_tick(struct alog_buf *b, uint64_t now_ms);
/* b's lines are written from loop's thread: a first line in the buffer arms
 * a timer on loop, so that it is handed over even when the loop is idle and
 * does not tick. b NULL: no-op. */
void alog_set_loop(struct alog_buf *b, ev_loop *loop);
/* As now_ms: hand over whatever is buffered, at once (tests). */
#define ALOG_FLUSH_NOW UINT64_MAX
/* Asks the writer to reopen the path (log rotation, SIGUSR1); returns at once.
 * Lines handed over before the call (by a full buffer, alog_tick or alog_close)
 * go to the old file, the rest to the new one: the lines still in a worker's
 * buffer at the call (at most ~200 ms of them) land in the new file. No line is
 * lost or written twice. If the new file cannot be opened, log_warn and keep
 * writing to the old one. No-op for stdout. */
void alog_reopen(struct alog *l);
/* Lines dropped so far: over the backlog bound, or lost to a failed write(). */
uint64_t alog_dropped(const struct alog *l);
/* Hands over every thread's buffer (call after the workers stopped), writes
 * everything, stops the writer, closes. NULL is fine. */
void alog_close(struct alog *l);

#endif
