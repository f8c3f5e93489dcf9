/* loadgen: an HTTP/1.1 load generator on the shared event loop (common/ev.h),
 * one loop per thread. The configuration and the state the threads share. */
#ifndef LOADGEN_H
#define LOADGEN_H

#include "ev.h"
#include "histogram.h"
#include "net.h"

#include <llhttp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Rows the per-request CSV may hold (32 bytes of memory each). */
#define LG_MAX_ROWS 10000000ull

struct lg_config {
    const char *url;
    struct net_addr addr;
    char host[64]; /* the Host header: as the URL spells it */
    const char *path;
    uint64_t requests; /* 0: no bound */
    double duration_s; /* 0: no bound */
    double rate;       /* requests/s; 0: closed loop */
    unsigned concurrency, threads, timeout_ms;
    int keepalive;
    const char *method;
    int head; /* HEAD: responses have no body */
    uint64_t body_size;
    const char *csv_path, *summary_path, *label;
    enum ev_engine engine;
    /* the request, built once: head and body */
    char *req;
    size_t req_len;
};

/* What ended a request without a response. */
enum lg_err {
    LG_OK,
    LG_ERR_SOCKET,  /* socket(): errno */
    LG_ERR_CONNECT, /* connect: errno */
    LG_ERR_SEND,    /* send: errno */
    LG_ERR_RECV,    /* recv: errno */
    LG_ERR_RESET,   /* ECONNRESET or EPIPE */
    LG_ERR_CLOSED,  /* EOF before the response was complete */
    LG_ERR_TIMEOUT, /* no full response within --timeout-ms */
    LG_ERR_PARSE,   /* llhttp refused the response: its errno */
    LG_ERR_KINDS
};

/* One request, for the per-request CSV. */
struct lg_rec {
    uint64_t start_us, bytes;
    uint32_t seq, latency_us;
    uint16_t status, iid; /* iid: index + 1 in the worker's ids; 0: none */
    uint8_t err;
    uint8_t pad;
    uint16_t err_no;
};

struct lg_run {
    const struct lg_config *cfg;
    uint64_t start_us, end_us; /* end_us: UINT64_MAX without --duration */
    uint64_t k_end;            /* open loop: requests scheduled in all */
    int open_loop, record;     /* record: keep lg_rec rows (--csv) */
    atomic_uint_fast64_t next_seq;
    atomic_int stop;    /* SIGINT/SIGTERM */
    atomic_int cap_hit; /* closed loop: the --csv row cap stopped it */
    int abort;          /* set before the start: a worker could not start */
    pthread_barrier_t ready, go;
};

struct lg_stats {
    uint64_t requests, ok, errors, responses, body_bytes, rx_bytes;
    uint64_t status_class[6];              /* [1..5]: 1xx..5xx, [0]: other */
    uint64_t err_count[LG_ERR_KINDS][256]; /* by kind and errno */
    uint64_t last_us;                      /* the last request ended (absolute) */
    struct histogram hist;                 /* latency (us) of every response */
};

struct lg_conn;

struct lg_worker {
    int id;
    pthread_t thread;
    struct lg_run *run;
    ev_loop *loop;
    char why[256]; /* when the loop could not be made */
    int failed;
    struct lg_conn *conns;
    unsigned nconns, ndone;
    int stopping;
    /* open loop: the next request index of this worker (id, id + T, ...),
     * the connections free to send and the timer of the next send */
    uint64_t next_k, step;
    struct lg_conn **idle;
    unsigned nidle;
    unsigned rotate; /* open loop: which free connection goes next */
    ev_timer sched_timer;
    struct lg_stats st;
    atomic_uint_fast64_t progress_requests, progress_errors; /* for the progress line */
    atomic_int finished;
    /* per-request rows and the instance ids they name */
    struct lg_rec *recs;
    size_t nrecs, caprecs;
    char **ids;
    size_t nids, capids;
    int oom;
};

void *lg_worker_main(void *arg);
/* Text of an error kind with its errno ("connect: Connection refused"). */
const char *lg_err_text(int kind, int err_no, char *buf, size_t len);

#endif
