#define _GNU_SOURCE
#include "accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ev.h"
#include "fmt.h"
#include "log.h"

#define CHUNK_SIZE   (64 * 1024)
#define MAX_BACKLOG  (16u * 1024 * 1024)
#define FLUSH_AGE_MS 100
#define CACHELINE    64
/* Bytes of a line other than its escaped strings: keys, punctuation, time, numbers. */
#define LINE_FIXED     512
#define ESCAPED_MAX(n) (6 * (size_t)(n) + 2) /* every byte as \u00XX, and the quotes */

_Static_assert(LINE_FIXED + ESCAPED_MAX(ALOG_PATH_MAX) + 7 * ESCAPED_MAX(ALOG_FIELD_MAX) <=
                   CHUNK_SIZE,
               "a longest line must fit an empty chunk");

struct chunk {
    struct chunk *next;
    size_t len;
    uint64_t nlines;
    unsigned epoch; /* alog.epoch when handed over: which file it belongs to */
    char data[CHUNK_SIZE];
};

struct alog_buf {
    struct alog *log;
    struct chunk *cur; /* NULL when none could be allocated */
    uint64_t tick_ms;  /* now_ms of the last alog_tick */
    uint64_t first_ms; /* tick_ms (the loop's now) when cur got its first line */
    ev_loop *loop;     /* the writing thread's loop, or NULL (alog_set_loop) */
    ev_timer flush;    /* armed at a first line, so that an idle loop ticks */
    int64_t cached_sec;
    char cached_time[20]; /* "YYYY-MM-DDTHH:MM:SS." of cached_sec */
} __attribute__((aligned(CACHELINE)));

struct alog {
    /* Read-only after alog_open. */
    char *path;
    int nthreads;
    int is_stdout;
    struct alog_buf *bufs;
    pthread_t writer;
    /* Writer-only. */
    int fd;
    unsigned w_epoch;
    int w_failing;
    /* Under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct chunk *head, **tailp;
    struct chunk *free;
    int nfree;
    size_t backlog; /* bytes handed over and not yet written */
    unsigned epoch; /* bumped by alog_reopen */
    int stop;
    _Atomic uint64_t dropped;
};

/* ---- formatting ---- */

static char *put_i64(char *p, int64_t v) {
    if (v < 0) {
        *p++ = '-';
        return fmt_u64(p, 0 - (uint64_t)v);
    }
    return fmt_u64(p, (uint64_t)v);
}

static char *put_2d(char *p, unsigned v) {
    *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

/* Length of the valid UTF-8 sequence of 2 to 4 bytes at s (RFC 3629: no
 * overlong forms, surrogates or code points above U+10FFFF), else 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    return len;
}

/* A JSON string of n bytes of s. Valid UTF-8 is copied; control bytes, DEL and
 * bytes that are not part of valid UTF-8 become \u00XX. */
static char *put_str(char *p, const char *str, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    *p++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            *p++ = (char)c;
            i++;
            continue;
        }
        size_t len = c >= 0x80 ? utf8_seq(s + i, n - i) : 0;
        if (len) {
            p = fmt_put(p, (const char *)s + i, len);
            i += len;
            continue;
        }
        *p++ = '\\';
        switch (c) {
        case '"': *p++ = '"'; break;
        case '\\': *p++ = '\\'; break;
        case '\n': *p++ = 'n'; break;
        case '\r': *p++ = 'r'; break;
        case '\t': *p++ = 't'; break;
        default:
            p = FMT_LIT(p, "u00");
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
        i++;
    }
    *p++ = '"';
    return p;
}

static char *put_str_or_null(char *p, const char *s, size_t n) {
    return s ? put_str(p, s, n) : FMT_LIT(p, "null");
}

/* Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
 * civil_from_days); gmtime_r would take glibc's global time-zone lock. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* RFC 3339 UTC with milliseconds, quoted; the date part is cached per buffer. */
static char *put_time(struct alog_buf *b, char *p, int64_t time_us) {
    const int64_t max_sec = 253402300799; /* 9999-12-31T23:59:59 */
    int64_t sec = time_us / 1000000, us = time_us % 1000000;
    if (us < 0) sec--, us += 1000000;
    if (sec < 0) sec = 0, us = 0;
    if (sec > max_sec) sec = max_sec;
    if (sec != b->cached_sec) {
        int64_t y;
        unsigned mo, d, s = (unsigned)(sec % 86400);
        civil_from_days(sec / 86400, &y, &mo, &d);
        char *q = b->cached_time;
        q = put_2d(q, (unsigned)(y / 100));
        q = put_2d(q, (unsigned)(y % 100));
        *q++ = '-';
        q = put_2d(q, mo);
        *q++ = '-';
        q = put_2d(q, d);
        *q++ = 'T';
        q = put_2d(q, s / 3600);
        *q++ = ':';
        q = put_2d(q, s / 60 % 60);
        *q++ = ':';
        q = put_2d(q, s % 60);
        *q++ = '.';
        b->cached_sec = sec;
    }
    *p++ = '"';
    p = fmt_put(p, b->cached_time, sizeof(b->cached_time));
    unsigned ms = (unsigned)(us / 1000);
    *p++ = (char)('0' + ms / 100);
    p = put_2d(p, ms % 100);
    return FMT_LIT(p, "Z\"");
}

/* ---- handing over ---- */

static struct chunk *chunk_new(void) {
    struct chunk *c = malloc(sizeof(*c));
    if (c) c->len = 0, c->nlines = 0;
    return c;
}

/* Queues b's chunk for the writer and takes a free one in the same critical
 * section. Unless forced (alog_close), a chunk over the backlog bound is
 * dropped instead and reused. */
static void hand_over(struct alog_buf *b, int force) {
    struct alog *l = b->log;
    struct chunk *c = b->cur, *fresh;
    pthread_mutex_lock(&l->mu);
    if (!force && l->backlog + c->len > MAX_BACKLOG) {
        pthread_mutex_unlock(&l->mu);
        atomic_fetch_add_explicit(&l->dropped, c->nlines, memory_order_relaxed);
        c->len = 0;
        c->nlines = 0;
        return;
    }
    c->epoch = l->epoch;
    c->next = NULL;
    *l->tailp = c;
    l->tailp = &c->next;
    l->backlog += c->len;
    fresh = l->free;
    if (fresh) {
        l->free = fresh->next;
        l->nfree--;
    }
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (fresh) {
        fresh->len = 0;
        fresh->nlines = 0;
    } else {
        fresh = chunk_new();
    }
    b->cur = fresh;
}

/* The clock, not the loop's now: that is as old as the loop's last sleep,
 * so a worker woken after a long idle would hand its line over at once while
 * a busy one waits FLUSH_AGE_MS, and the log would show two requests, one
 * after the other on two workers, in the wrong order. */
static void first_line(struct alog_buf *b) {
    if (!b->loop) {
        b->first_ms = b->tick_ms;
        return;
    }
    b->first_ms = ev_clock_ms();
    ev_timer_start(b->loop, &b->flush, FLUSH_AGE_MS);
}

static void on_flush(ev_timer *t) {
    struct alog_buf *b = t->ctx;
    alog_tick(b, ev_now_ms(b->loop));
}

void alog_set_loop(struct alog_buf *b, ev_loop *loop) {
    if (!b) return;
    b->loop = loop;
    ev_timer_init(&b->flush, on_flush, b);
}

static size_t field_len(const char *s) {
    return s ? strnlen(s, ALOG_FIELD_MAX) : 0;
}

void alog_write(struct alog_buf *b, const struct alog_entry *e) {
    if (!b) return;
    size_t client_n = field_len(e->client), method_n = field_len(e->method);
    size_t cluster_n = field_len(e->cluster), backend_n = field_len(e->backend);
    size_t id_n = field_len(e->request_id);
    size_t class_n = field_len(e->desync_class), reason_n = field_len(e->desync_reason);
    size_t path_n = !e->path ? 0 : e->path_len < ALOG_PATH_MAX ? e->path_len : ALOG_PATH_MAX;
    size_t need =
        LINE_FIXED + ESCAPED_MAX(path_n) +
        ESCAPED_MAX(client_n + method_n + cluster_n + backend_n + id_n + class_n + reason_n);
    if (b->cur && CHUNK_SIZE - b->cur->len < need) hand_over(b, 0);
    if (!b->cur && !(b->cur = chunk_new())) {
        atomic_fetch_add_explicit(&b->log->dropped, 1, memory_order_relaxed);
        return;
    }
    struct chunk *c = b->cur;
    if (!c->len) first_line(b);
    char *p = c->data + c->len;
    p = FMT_LIT(p, "{\"time\":");
    p = put_time(b, p, e->time_us);
    p = FMT_LIT(p, ",\"client\":");
    p = put_str_or_null(p, e->client, client_n);
    p = FMT_LIT(p, ",\"method\":");
    p = put_str_or_null(p, e->method, method_n);
    p = FMT_LIT(p, ",\"path\":");
    p = put_str_or_null(p, e->path, path_n);
    p = FMT_LIT(p, ",\"status\":");
    p = put_i64(p, e->status);
    p = FMT_LIT(p, ",\"cluster\":");
    p = put_str_or_null(p, e->cluster, cluster_n);
    p = FMT_LIT(p, ",\"backend\":");
    p = put_str_or_null(p, e->backend, backend_n);
    p = FMT_LIT(p, ",\"bytes_in\":");
    p = fmt_u64(p, e->bytes_in);
    p = FMT_LIT(p, ",\"bytes_out\":");
    p = fmt_u64(p, e->bytes_out);
    p = FMT_LIT(p, ",\"duration_us\":");
    p = fmt_u64(p, e->duration_us);
    p = FMT_LIT(p, ",\"backend_us\":");
    p = e->backend_us < 0 ? FMT_LIT(p, "null") : put_i64(p, e->backend_us);
    p = FMT_LIT(p, ",\"request_id\":");
    p = put_str_or_null(p, e->request_id, id_n);
    p = FMT_LIT(p, ",\"desync_class\":");
    p = put_str_or_null(p, e->desync_class, class_n);
    p = FMT_LIT(p, ",\"desync_reason\":");
    p = put_str_or_null(p, e->desync_reason, reason_n);
    p = FMT_LIT(p, "}\n");
    c->len = (size_t)(p - c->data);
    c->nlines++;
}

void alog_tick(struct alog_buf *b, uint64_t now_ms) {
    if (!b) return;
    int flush_now = now_ms == ALOG_FLUSH_NOW;
    if (!flush_now) b->tick_ms = now_ms;
    if (!b->cur || !b->cur->len) return;
    /* Without a loop, first_ms is the tick before the first line, so the line
     * is at most FLUSH_AGE_MS older than it looks; ticks at least every 100 ms
     * bound the delay to ~200 ms. With one, the flush timer fires when the
     * first line is FLUSH_AGE_MS old (first_ms is then the clock's, which may
     * be a millisecond ahead of the loop's now). */
    if (flush_now || (now_ms >= b->first_ms && now_ms - b->first_ms >= FLUSH_AGE_MS))
        hand_over(b, 0);
}

/* ---- the writer thread ---- */

static int open_path(const char *path) {
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static void reopen_file(struct alog *l, unsigned epoch) {
    l->w_epoch = epoch;
    if (l->is_stdout) return;
    int fd = open_path(l->path);
    if (fd < 0) {
        log_warn("access log %s: reopen failed, still writing to the old file: %s", l->path,
                 strerror(errno));
        return;
    }
    close(l->fd);
    l->fd = fd;
    l->w_failing = 0;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { /* a non-blocking stdout */
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                poll(&pfd, 1, -1);
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* A failed write is reported once per run of failures, not for every chunk;
 * its lines count as dropped. */
static void write_chunk(struct alog *l, struct chunk *c) {
    if (write_all(l->fd, c->data, c->len) == 0) {
        if (l->w_failing) log_info("access log %s: writing again", l->path);
        l->w_failing = 0;
        return;
    }
    if (!l->w_failing)
        log_warn("access log %s: write failed, dropping lines: %s", l->path, strerror(errno));
    l->w_failing = 1;
    atomic_fetch_add_explicit(&l->dropped, c->nlines, memory_order_relaxed);
}

static void *writer_main(void *arg) {
    struct alog *l = arg;
    struct chunk *surplus = NULL;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->head && !l->stop && l->epoch == l->w_epoch)
            pthread_cond_wait(&l->cv, &l->mu);
        struct chunk *batch = l->head;
        unsigned epoch = l->epoch;
        l->head = NULL;
        l->tailp = &l->head;
        pthread_mutex_unlock(&l->mu);

        size_t bytes = 0;
        int n = 0;
        struct chunk *last = NULL;
        for (struct chunk *c = batch; c; last = c, c = c->next, n++) {
            if (c->epoch != l->w_epoch) reopen_file(l, c->epoch);
            write_chunk(l, c);
            bytes += c->len;
        }
        /* Everything handed over before the reopen is written: switch now,
         * not at the next line, so the old file is complete. */
        if (epoch != l->w_epoch && !batch) reopen_file(l, epoch);

        pthread_mutex_lock(&l->mu);
        l->backlog -= bytes;
        if (last) {
            last->next = l->free;
            l->free = batch;
            l->nfree += n;
        }
        while (l->nfree > 2 * l->nthreads + 2) {
            struct chunk *c = l->free;
            l->free = c->next;
            l->nfree--;
            c->next = surplus;
            surplus = c;
        }
        if (surplus) {
            pthread_mutex_unlock(&l->mu);
            while (surplus) {
                struct chunk *c = surplus;
                surplus = c->next;
                free(c);
            }
            pthread_mutex_lock(&l->mu);
        }
        if (l->stop && !l->head && l->epoch == l->w_epoch) break;
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- the log ---- */

struct alog *alog_open(const char *path, int nthreads, char *err, size_t errlen) {
    if (nthreads <= 0) {
        snprintf(err, errlen, "access log %s: bad thread count %d", path, nthreads);
        return NULL;
    }
    struct alog *l = calloc(1, sizeof(*l));
    size_t bufs_size = (size_t)nthreads * sizeof(struct alog_buf);
    if (!l || !(l->path = strdup(path)) || !(l->bufs = aligned_alloc(CACHELINE, bufs_size))) {
        snprintf(err, errlen, "access log %s: out of memory", path);
        goto fail;
    }
    memset(l->bufs, 0, bufs_size);
    for (int i = 0; i < nthreads; i++) {
        l->bufs[i].log = l;
        l->bufs[i].cached_sec = -1;
    }
    l->nthreads = nthreads;
    l->is_stdout = !strcmp(path, "-");
    l->fd = l->is_stdout ? STDOUT_FILENO : open_path(path);
    if (l->fd < 0) {
        snprintf(err, errlen, "access log %s: %s", path, strerror(errno));
        goto fail;
    }
    l->tailp = &l->head;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    int rc = pthread_create(&l->writer, NULL, writer_main, l);
    if (rc) {
        snprintf(err, errlen, "access log %s: writer thread: %s", path, strerror(rc));
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
        if (!l->is_stdout) close(l->fd);
        goto fail;
    }
    return l;
fail:
    if (l) {
        free(l->bufs);
        free(l->path);
        free(l);
    }
    return NULL;
}

struct alog_buf *alog_thread_buf(struct alog *l, int thread_id) {
    if (!l || thread_id < 0 || thread_id >= l->nthreads) return NULL;
    return &l->bufs[thread_id];
}

void alog_reopen(struct alog *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->epoch++;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

uint64_t alog_dropped(const struct alog *l) {
    return l ? atomic_load_explicit(&l->dropped, memory_order_relaxed) : 0;
}

void alog_close(struct alog *l) {
    if (!l) return;
    for (int i = 0; i < l->nthreads; i++) {
        struct alog_buf *b = &l->bufs[i];
        if (b->cur && b->cur->len) hand_over(b, 1);
        free(b->cur);
    }
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->writer, NULL);
    if (!l->is_stdout) close(l->fd);
    while (l->free) {
        struct chunk *c = l->free;
        l->free = c->next;
        free(c);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l->bufs);
    free(l->path);
    free(l);
}
