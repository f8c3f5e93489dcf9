/* backend: the small HTTP service that runs on every cluster instance.
 *
 * One event loop per thread (common/ev.h), each with its own SO_REUSEPORT
 * listener. A connection is a state machine driven by conn_pump(): requests
 * are parsed one at a time from the input buffer (so pipelined requests are
 * answered in order), responses are built into the output buffer, and large
 * bodies are streamed (pattern bytes from a static block, echo bodies through
 * a pipe with splice). */
#ifndef BACKEND_H
#define BACKEND_H

#include "ev.h"
#include "list.h"

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>

#define IN_BUF_INIT    16384u
#define MAX_HEAD       65536u /* request heads above this get 431 */
#define IN_BUF_MAX     (MAX_HEAD + 4096u)
#define OUT_BUF_INIT   8192u
#define OUT_HIGH       65536u /* stop producing output while this much is unsent */
#define IDLE_MS        60000u
#define LINGER_MS      2000u
#define PATTERN_PERIOD 251u
#define PATTERN_LEN    (PATTERN_PERIOD * 4096u)
#define LOG_CAP        16384u
#define LOG_FLUSH_AT   8192u
#define SPLICE_MIN     16384u /* echo bodies larger than this go through a pipe */
#define PIPE_SIZE      (1u << 20)

struct config {
    const char *host;
    int port;
    const char *instance_id;
    const char *cluster;
    int threads;
    unsigned delay_ms;
    unsigned work_us;
    unsigned slow_ms; /* extra delay per reply while slow mode is on (SIGUSR2) */
    int fail_status;  /* --fail-status: the answer to all but GET /health in fail mode; 0 off */
    int quiet;
    int health_flip; /* GET /health alternates 200 and 503 */
    enum ev_engine engine;
    /* Precomputed at start-up (handlers_init). */
    char *id_json; /* JSON-escaped instance id and cluster */
    size_t id_json_len;
    char *cluster_json;
    size_t cluster_json_len;
    char *health_body;
    size_t health_len;
    char *default_prefix; /* the default JSON up to the path's opening quote */
    size_t default_prefix_len;
};

extern struct config cfg;
/* PATTERN_LEN bytes, byte i being i % 251: /bytes/N is served from it. */
extern const unsigned char *pattern_block;

enum phase {
    PH_HEAD,       /* reading and parsing a request head */
    PH_BODY_START, /* head parsed, the request has a body: decide how to read it */
    PH_BODY,       /* llhttp parses the body (discarded, or echoed as chunks) */
    PH_RESPOND,    /* build the response (after the delay, if any) */
    PH_DELAY,      /* waiting for the delay timer */
    PH_STREAM,     /* a response body is being streamed */
    PH_WS,         /* WebSocket echo */
    PH_CLOSING,    /* flush what is queued, then shut down and linger */
    PH_LINGER,     /* output shut down: drain input until EOF, then close */
};

enum route { R_DEFAULT, R_HEALTH, R_BYTES, R_ECHO, R_STATUS, R_DELAY, R_WS, R_BAD, R_FAIL };
enum stream_kind { S_NONE, S_BYTES, S_CHUNKED, S_ECHO };
enum { RD_NONE, RD_RECV, RD_SPLICE };
enum { WR_NONE, WR_OUT, WR_BYTES, WR_SPLICE };

/* A piece of the request head, as an offset from the head's start in the
 * input buffer: llhttp hands a field over in pieces, all contiguous there. */
struct span {
    uint32_t off, len;
};

struct req {
    /* Captured while the head is parsed. */
    struct span url, field, value, ctype, expect, upgrade, wskey;
    uint8_t url_open, field_open, value_open;
    /* Set when the head is complete. */
    uint8_t method, http_major, http_minor;
    uint8_t keepalive, has_body, chunked_in, expect_continue, head_only;
    uint8_t msg_complete, delay_done, head_done, ws_upgrade;
    enum route route;
    uint64_t arg; /* N of /bytes/N, code of /status or fail mode, ms of /delay, 1: /health fails */
    uint8_t chunked_out;
    uint64_t content_length;
    /* Copies of the head's fields that outlive the input buffer. */
    uint32_t n_url, i_ctype, n_ctype, i_key, n_key;
    /* Response accounting, for the log line. */
    int status;
    uint64_t bytes_out;
    uint64_t t_start_us;
};

struct ws_state {
    uint64_t left; /* payload bytes of the current frame still to echo */
    uint8_t mask[4];
    uint8_t mpos;
    uint8_t opcode;
    uint8_t in_frame;
};

struct worker;

struct conn {
    struct worker *w;
    struct list in_worker; /* in w->conns */
    int fd;
    uint64_t id;
    enum phase phase;
    ev_op rd, wr;
    ev_timer idle_timer, delay_timer;
    uint64_t last_active_ms;
    llhttp_t parser;

    /* Input: [head_start, parse_off) is the part of the current head llhttp
     * has seen (kept: spans point into it), [parse_off, in_len) is unparsed. */
    char *in;
    uint32_t in_cap, in_len, parse_off, head_start;
    /* Output: [out_off, out_len) is queued. */
    char *out;
    size_t out_cap, out_len, out_off;
    /* Copied head fields (url, content type, websocket key). */
    char *info;
    size_t info_cap;

    struct req req;

    /* A streamed response body. */
    enum stream_kind stream;
    uint64_t body_left; /* bytes still to produce (S_BYTES, S_CHUNKED) or to read (S_ECHO) */
    uint64_t body_pos;
    int pipe_r, pipe_w;
    size_t pipe_fill, pipe_cap;

    struct ws_state ws;

    uint8_t closing;  /* close requested: ops cancelled, freed once idle */
    uint8_t peer_eof; /* the client shut down its side */
    uint8_t rd_kind;  /* what rd is doing (RD_*) */
    uint8_t wr_kind;  /* what wr is doing (WR_*) */
    uint8_t splicing; /* this echo body goes through the pipe */
};

struct worker {
    int idx;
    ev_loop *loop;
    int lfd;
    ev_op accept_op;
    ev_timer accept_retry;
    struct list conns; /* every open connection */
    size_t nconns;
    int draining;
    ev_timer drain_timer; /* the loop stops then, connections closed or not */
    char logbuf[LOG_CAP];
    size_t loglen;
    /* Start-up report: errmsg when it failed, why_fallback when AUTO fell
     * back to epoll. */
    char errmsg[256];
    char why_fallback[256];
    enum ev_engine engine; /* the engine the loop got, for main's start-up line */
};

/* server.c */
struct net_addr;
int worker_setup(struct worker *w, const struct net_addr *addr);
void worker_run(struct worker *w);
void worker_teardown(struct worker *w);
void conn_close(struct conn *c);
void conn_pump(struct conn *c);
char *out_reserve(struct conn *c, size_t n);
size_t out_room(const struct conn *c);
static inline size_t out_pending(const struct conn *c) {
    return c->out_len - c->out_off;
}
static inline void out_commit(struct conn *c, const char *end) {
    c->out_len = (size_t)(end - c->out);
}
void log_line(struct worker *w, const char *line, size_t len);
void conn_start_delay(struct conn *c, uint64_t ms);
int conn_open_pipe(struct conn *c);
extern int backend_stop_requested(void);
/* Slow mode (toggled by SIGUSR2): the extra ms for a reply now, 0 when off. */
unsigned backend_slow_ms(void);
/* Fail mode (--fail-status, toggled by SIGUSR1): the status to answer, 0 when off. */
int backend_fail_status(void);
/* --health-flip: 1 when this /health request gets 503 (every other one). */
int backend_health_flip_fails(void);

/* http.c */
void http_conn_init(struct conn *c);
int http_step_parse(struct conn *c);
int http_step_body_start(struct conn *c);
void request_log(struct conn *c);
void request_finished(struct conn *c);
void http_error(struct conn *c, int status);
static inline const char *req_url(const struct conn *c) {
    return c->info;
}
static inline const char *req_ctype(const struct conn *c) {
    return c->info + c->req.i_ctype;
}
static inline const char *req_key(const struct conn *c) {
    return c->info + c->req.i_key;
}

/* handlers.c */
int handlers_init(void);
int respond_error(struct conn *c, int status, const char *msg);
void route_request(struct conn *c);
int handler_respond(struct conn *c);
int stream_step(struct conn *c);
size_t json_escape(char *dst, const char *src, size_t len);
size_t json_escaped_len(const char *src, size_t len);
char *put_head(struct conn *c, char *p, int status, const char *ctype, size_t ctype_len,
               int framing, uint64_t clen);
enum { FR_LENGTH, FR_CHUNKED, FR_NONE };
size_t head_max(const struct conn *c, size_t ctype_len);
void burn_cpu(unsigned us);

/* websocket.c */
int ws_handshake(struct conn *c);
int ws_step(struct conn *c);

#endif
