/* loadgen: flags, the threads, and the results (stdout, --csv, --summary). */
#define _GNU_SOURCE
#include "csv.h"
#include "flags.h"
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

#ifndef LB_VERSION
#define LB_VERSION "0"
#endif

#define MAX_CONCURRENCY 100000u
#define MAX_THREADS     256u
#define MAX_BODY        (1ull << 30)

static struct lg_config cfg;
static struct lg_run run;

static void usage(FILE *f) {
    fprintf(f,
            "usage: loadgen URL [--requests N] [--concurrency C] [--duration S] [--rate R]\n"
            "               [--no-keepalive] [--method M] [--body-size B] [--csv FILE]\n"
            "               [--summary FILE] [--label L] [--threads T] [--timeout-ms MS]\n"
            "               [--engine auto|uring|epoll] [--help] [--version]\n"
            "\n"
            "HTTP/1.1 load against URL (http://HOST[:PORT]/path, HOST a numeric IPv4 address or\n"
            "localhost). Closed loop: C connections, each sending its next request when the last\n"
            "one is answered. Open loop (--rate): request i is due at start + i/R and its latency\n"
            "counts from that time, also when it had to wait for a free connection.\n"
            "\n"
            "  --requests N      stop after N requests\n"
            "  --duration S      stop sending after S seconds (default 10 when neither is given)\n"
            "  --concurrency C   connections (default 10)\n"
            "  --rate R          open loop at R requests/s\n"
            "  --threads T       event-loop threads (default: online CPUs, at most C)\n"
            "  --timeout-ms MS   per request (default 10000; open loop: from the due time)\n"
            "  --no-keepalive    a new connection per request (Connection: close)\n"
            "  --method M        request method (default GET)\n"
            "  --body-size B     send a body of B bytes (Content-Length)\n"
            "  --csv FILE        one row per request: " CSV_REQUEST_HEADER "\n"
            "                    (at most %llu rows)\n"
            "  --summary FILE    append a row (header when the file is new or empty):\n"
            "                    " CSV_SUMMARY_HEADER "\n"
            "  --label L         the label column of --summary\n"
            "  --engine E        I/O engine: auto (io_uring, else epoll), uring, epoll\n"
            "\n"
            "requests counts every request ended (answered or failed); ok those answered 2xx or\n"
            "3xx; errors the rest (no response, or 4xx/5xx). Latencies and rps count the\n"
            "requests that got a response (any status); mbytes_s is response bodies in MB/s.\n"
            "Exit status: 0 when the run ended (errors included), 1 when it could not run or\n"
            "write its files, 2 for bad arguments.\n",
            LG_MAX_ROWS);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double parse_pos(const char *flag, const char *v, double max) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(d) || !(d > 0) || d > max)
        flags_die("%s: invalid value '%s' (expected a number above 0, at most %g)", flag, v, max);
    return d;
}

/* http://HOST[:PORT][/path]: HOST numeric IPv4 or localhost. */
static void parse_url(const char *url) {
    static char path[8192];
    static const char scheme[] = "http://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        flags_die("URL '%s': expected http://HOST:PORT/path", url);
    const char *h = url + sizeof(scheme) - 1;
    size_t hl = strcspn(h, ":/?#");
    char host[64];
    if (!hl || hl >= sizeof(host)) flags_die("URL '%s': missing or overlong host", url);
    memcpy(host, h, hl);
    host[hl] = 0;
    const char *p = h + hl;
    int port = 80;
    if (*p == ':') {
        p++;
        size_t pl = strspn(p, "0123456789");
        char *end;
        long v = pl && pl <= 5 ? strtol(p, &end, 10) : 0;
        if (!pl || pl > 5 || v < 1 || v > 65535 || (p[pl] && p[pl] != '/' && p[pl] != '?'))
            flags_die("URL '%s': the port must be 1-65535", url);
        port = (int)v;
        p += pl;
    }
    if (*p && *p != '/' && *p != '?') flags_die("URL '%s': expected http://HOST:PORT/path", url);
    const char *ip = !strcmp(host, "localhost") ? "127.0.0.1" : host;
    struct sockaddr_in *sin = (struct sockaddr_in *)&cfg.addr.ss;
    memset(&cfg.addr, 0, sizeof(cfg.addr));
    if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1)
        flags_die("URL '%s': the host must be a numeric IPv4 address or localhost", url);
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    cfg.addr.len = sizeof(*sin);
    snprintf(cfg.host, sizeof(cfg.host), "%.*s", (int)(p - h), h);
    for (const char *q = p; *q; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f || *q == '#')
            flags_die("URL '%s': spaces, control characters and fragments are not allowed", url);
    if (strlen(p) + 2 > sizeof(path)) flags_die("URL '%s': the path is too long", url);
    snprintf(path, sizeof(path), "%s%s", *p == '/' ? "" : "/", p);
    cfg.path = path;
    cfg.url = url;
}

static void check_method(const char *m) {
    size_t n = strlen(m);
    if (!n || n > 32) flags_die("--method: '%s' must be 1 to 32 characters", m);
    for (size_t i = 0; i < n; i++)
        if (!strchr("!#$%&'*+-.^_`|~", m[i]) &&
            !((m[i] >= 'A' && m[i] <= 'Z') || (m[i] >= 'a' && m[i] <= 'z') ||
              (m[i] >= '0' && m[i] <= '9')))
            flags_die("--method: '%s' is not an HTTP token", m);
}

static void parse_args(int argc, char **argv) {
    static const char *const with_value[] = {
        "--requests",   "--concurrency", "--duration", "--rate",  "--method",
        "--body-size",  "--csv",         "--summary",  "--label", "--threads",
        "--timeout-ms", "--engine",      NULL};
    cfg.concurrency = 10;
    cfg.timeout_ms = 10000;
    cfg.keepalive = 1;
    cfg.method = "GET";
    cfg.label = "";
    cfg.engine = EV_ENGINE_AUTO;
    const char *url = NULL;
    int threads_given = 0;
    static const char *const no_value[] = {"--help", "--version", "--no-keepalive", NULL};
    flags_init("loadgen");
    for (int i = 1; i < argc; i++) {
        const char *val;
        const char *flag = flags_next(argc, argv, &i, with_value, no_value, &val);
        if (!flag) {
            if (url) flags_die("unexpected argument '%s' (one URL only)", argv[i]);
            url = argv[i];
            continue;
        }
        if (!strcmp(flag, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(flag, "--version")) {
            printf("loadgen %s\n", LB_VERSION);
            exit(0);
        }
        if (!strcmp(flag, "--no-keepalive")) {
            cfg.keepalive = 0;
        } else if (!strcmp(flag, "--requests")) {
            cfg.requests = flags_uint(flag, val, 1, 1000000000000ull);
        } else if (!strcmp(flag, "--concurrency")) {
            cfg.concurrency = (unsigned)flags_uint(flag, val, 1, MAX_CONCURRENCY);
        } else if (!strcmp(flag, "--duration")) {
            cfg.duration_s = parse_pos(flag, val, 7 * 86400.0);
        } else if (!strcmp(flag, "--rate")) {
            cfg.rate = parse_pos(flag, val, 1e8);
        } else if (!strcmp(flag, "--method")) {
            check_method(val);
            cfg.method = val;
        } else if (!strcmp(flag, "--body-size")) {
            cfg.body_size = flags_uint(flag, val, 0, MAX_BODY);
        } else if (!strcmp(flag, "--csv")) {
            if (!*val) flags_die("--csv: empty file name");
            cfg.csv_path = val;
        } else if (!strcmp(flag, "--summary")) {
            if (!*val) flags_die("--summary: empty file name");
            cfg.summary_path = val;
        } else if (!strcmp(flag, "--label")) {
            cfg.label = val;
        } else if (!strcmp(flag, "--threads")) {
            cfg.threads = (unsigned)flags_uint(flag, val, 1, MAX_THREADS);
            threads_given = 1;
        } else if (!strcmp(flag, "--timeout-ms")) {
            cfg.timeout_ms = (unsigned)flags_uint(flag, val, 1, 3600000);
        } else if (!strcmp(flag, "--engine")) {
            int e = ev_engine_parse(val);
            if (e < 0)
                flags_die("--engine: invalid value '%s' (expected auto, uring or epoll)", val);
            cfg.engine = (enum ev_engine)e;
        }
    }
    if (!url) flags_die("missing URL");
    parse_url(url);
    cfg.head = !strcmp(cfg.method, "HEAD");
    if (!threads_given) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg.threads = n > 0 ? (unsigned)(n > MAX_THREADS ? MAX_THREADS : n) : 1;
    }
    if (cfg.threads > cfg.concurrency) cfg.threads = cfg.concurrency;
    if (!cfg.requests && !cfg.duration_s) cfg.duration_s = 10;
    if (cfg.csv_path) {
        if (cfg.requests > LG_MAX_ROWS)
            flags_die("--csv: at most %llu rows: lower --requests", LG_MAX_ROWS);
        if (!cfg.requests && cfg.rate && ceil(cfg.duration_s * cfg.rate) > (double)LG_MAX_ROWS)
            flags_die("--csv: at most %llu rows: lower --duration or --rate", LG_MAX_ROWS);
    }
}

static void build_request(void) {
    int with_length = cfg.body_size > 0 || !strcmp(cfg.method, "POST") ||
                      !strcmp(cfg.method, "PUT") || !strcmp(cfg.method, "PATCH");
    char head[10000];
    int n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: loadgen/%s\r\n",
                     cfg.method, cfg.path, cfg.host, LB_VERSION);
    if (with_length)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %llu\r\n",
                      (unsigned long long)cfg.body_size);
    if (!cfg.keepalive) n += snprintf(head + n, sizeof(head) - (size_t)n, "Connection: close\r\n");
    n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
    if (n < 0 || (size_t)n >= sizeof(head)) die("request head too long");
    cfg.req_len = (size_t)n + cfg.body_size;
    cfg.req = malloc(cfg.req_len);
    if (!cfg.req) die("out of memory for a body of %llu bytes", (unsigned long long)cfg.body_size);
    memcpy(cfg.req, head, (size_t)n);
    for (uint64_t i = 0; i < cfg.body_size; i++)
        cfg.req[(size_t)n + i] = (char)('a' + i % 26);
}

static void on_signal(int sig) {
    (void)sig;
    atomic_store(&run.stop, 1);
}

/* Raises the soft limit on open files to the hard one; a connection each
 * and some to spare must fit. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && (uint64_t)cfg.concurrency + cfg.threads + 32 > rl.rlim_cur)
        flags_die("--concurrency: %u connections need more open files than the limit allows "
                  "(%llu): raise ulimit -n",
                  cfg.concurrency, (unsigned long long)rl.rlim_cur);
}

/* ---- results ---- */

/* The per-request rows of all workers, by seq. 0, or -1 with errno. */
static int write_csv(FILE *f, struct lg_worker *ws, unsigned n) {
    /* instance ids: one table, and each worker's index into it */
    char **ids = NULL;
    size_t nids = 0;
    uint16_t **map = calloc(n, sizeof(*map));
    if (!map) return -1;
    for (unsigned t = 0; t < n; t++) {
        map[t] = calloc(ws[t].nids + 1, sizeof(**map));
        if (!map[t]) return -1;
        for (size_t i = 0; i < ws[t].nids; i++) {
            size_t j = 0;
            while (j < nids && strcmp(ids[j], ws[t].ids[i]))
                j++;
            if (j == nids) {
                char **p = realloc(ids, (nids + 1) * sizeof(*ids));
                if (!p) return -1;
                ids = p;
                ids[nids++] = ws[t].ids[i];
            }
            map[t][i + 1] = (uint16_t)(j + 1);
        }
    }
    /* seqs are unique: a table indexed by seq orders them */
    uint64_t max_seq = 0, rows = 0;
    for (unsigned t = 0; t < n; t++) {
        rows += ws[t].nrecs;
        for (size_t i = 0; i < ws[t].nrecs; i++)
            if (ws[t].recs[i].seq > max_seq) max_seq = ws[t].recs[i].seq;
    }
    struct lg_rec **by_seq = rows ? calloc(max_seq + 1, sizeof(*by_seq)) : NULL;
    uint8_t *owner = rows ? malloc(max_seq + 1) : NULL;
    if (rows && (!by_seq || !owner)) return -1;
    for (unsigned t = 0; t < n; t++) {
        for (size_t i = 0; i < ws[t].nrecs; i++) {
            by_seq[ws[t].recs[i].seq] = &ws[t].recs[i];
            owner[ws[t].recs[i].seq] = (uint8_t)t;
        }
    }
    static char fbuf[1 << 20];
    setvbuf(f, fbuf, _IOFBF, sizeof(fbuf));
    csv_write_request_header(f);
    char ebuf[160];
    for (uint64_t s = 0; rows && s <= max_seq; s++) {
        const struct lg_rec *r = by_seq[s];
        if (!r) continue;
        uint16_t iid = r->iid ? map[owner[s]][r->iid] : 0;
        struct csv_request_row row = {
            .seq = r->seq,
            .start_us = r->start_us,
            .latency_us = r->latency_us,
            .bytes = r->bytes,
            .status = r->status,
            .instance_id = iid ? ids[iid - 1] : "",
            .error = lg_err_text(r->err, r->err_no, ebuf, sizeof(ebuf)),
        };
        csv_write_request(f, &row);
    }
    free(by_seq);
    free(owner);
    for (unsigned t = 0; t < n; t++)
        free(map[t]);
    free(map);
    free(ids);
    return ferror(f) ? -1 : 0;
}

static void progress(struct lg_worker *ws, unsigned n, uint64_t *last_req, uint64_t *last_us) {
    uint64_t req = 0, err = 0, now = ev_clock_us();
    for (unsigned t = 0; t < n; t++) {
        req += atomic_load_explicit(&ws[t].progress_requests, memory_order_relaxed);
        err += atomic_load_explicit(&ws[t].progress_errors, memory_order_relaxed);
    }
    double dt = (double)(now - *last_us) / 1e6;
    fprintf(stderr, "\r[%5.1fs] %llu requests, %.0f req/s, %llu errors   ",
            (double)(now - run.start_us) / 1e6, (unsigned long long)req,
            dt > 0 ? (double)(req - *last_req) / dt : 0.0, (unsigned long long)err);
    *last_req = req;
    *last_us = now;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    build_request();
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    FILE *csv = NULL;
    if (cfg.csv_path && !(csv = fopen(cfg.csv_path, "w")))
        die("--csv: cannot write %s: %s", cfg.csv_path, strerror(errno));
    if (cfg.summary_path) {
        FILE *f = fopen(cfg.summary_path, "a");
        if (!f) die("--summary: cannot write %s: %s", cfg.summary_path, strerror(errno));
        fclose(f);
    }

    unsigned n = cfg.threads;
    run.cfg = &cfg;
    run.open_loop = cfg.rate > 0;
    run.record = csv != NULL;
    run.end_us = UINT64_MAX;
    if (run.open_loop) {
        run.k_end = cfg.requests ? cfg.requests : UINT64_MAX;
        if (cfg.duration_s) {
            double k = ceil(cfg.duration_s * cfg.rate);
            if (k < (double)run.k_end) run.k_end = (uint64_t)k;
        }
    }
    struct lg_worker *ws = calloc(n, sizeof(*ws));
    if (!ws) die("out of memory");
    pthread_barrier_init(&run.ready, NULL, n + 1);
    pthread_barrier_init(&run.go, NULL, n + 1);
    for (unsigned t = 0; t < n; t++) {
        ws[t].id = (int)t;
        ws[t].run = &run;
        ws[t].nconns = cfg.concurrency / n + (t < cfg.concurrency % n);
        ws[t].next_k = t;
        ws[t].step = n;
        hist_init(&ws[t].st.hist);
        int e = pthread_create(&ws[t].thread, NULL, lg_worker_main, &ws[t]);
        if (e) die("pthread_create: %s", strerror(e));
    }
    pthread_barrier_wait(&run.ready);
    for (unsigned t = 0; t < n; t++) {
        if (ws[t].failed) {
            fprintf(stderr, "loadgen: thread %u cannot run: %s\n", t, ws[t].why);
            run.abort = 1;
        }
    }
    run.start_us = ev_clock_us();
    if (cfg.duration_s && !run.open_loop)
        run.end_us = run.start_us + (uint64_t)(cfg.duration_s * 1e6);
    pthread_barrier_wait(&run.go);

    int tty = isatty(STDERR_FILENO);
    uint64_t last_req = 0, last_us = run.start_us, next_progress = run.start_us + 1000000;
    for (;;) {
        unsigned done = 0;
        for (unsigned t = 0; t < n; t++)
            done += (unsigned)atomic_load(&ws[t].finished);
        if (done == n) break;
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
        if (tty && !run.abort && ev_clock_us() >= next_progress) {
            progress(ws, n, &last_req, &last_us);
            next_progress += 1000000;
        }
    }
    for (unsigned t = 0; t < n; t++)
        pthread_join(ws[t].thread, NULL);
    if (tty && last_req) fputc('\n', stderr);
    uint64_t finished_us = ev_clock_us();
    if (run.abort) return 1;

    struct lg_stats *all = calloc(1, sizeof(*all));
    if (!all) die("out of memory");
    hist_init(&all->hist);
    int oom = 0;
    for (unsigned t = 0; t < n; t++) {
        struct lg_stats *s = &ws[t].st;
        all->requests += s->requests;
        all->ok += s->ok;
        all->errors += s->errors;
        all->responses += s->responses;
        all->body_bytes += s->body_bytes;
        all->rx_bytes += s->rx_bytes;
        for (int k = 0; k < 6; k++)
            all->status_class[k] += s->status_class[k];
        for (int k = 0; k < LG_ERR_KINDS; k++)
            for (int e = 0; e < 256; e++)
                all->err_count[k][e] += s->err_count[k][e];
        if (s->last_us > all->last_us) all->last_us = s->last_us;
        hist_merge(&all->hist, &s->hist);
        oom |= ws[t].oom;
    }
    uint64_t end_us = all->last_us ? all->last_us : finished_us;
    double dur = (double)(end_us - run.start_us) / 1e6;
    if (dur <= 0) dur = 1e-6;
    const struct histogram *h = &all->hist;
    struct csv_summary sum = {
        .label = cfg.label,
        .url = cfg.url,
        .requests = all->requests,
        .ok = all->ok,
        .errors = all->errors,
        .duration_s = dur,
        .rps = (double)all->responses / dur,
        .mean_ms = hist_mean(h) / 1000.0,
        .p50_ms = hist_percentile(h, 50) / 1000.0,
        .p90_ms = hist_percentile(h, 90) / 1000.0,
        .p99_ms = hist_percentile(h, 99) / 1000.0,
        .p999_ms = hist_percentile(h, 99.9) / 1000.0,
        .max_ms = (h->count ? (double)h->max : 0) / 1000.0,
        .mbytes_s = (double)all->body_bytes / dur / 1e6,
    };

    char addr[64];
    printf("loadgen%s%s: %s %s, %s loop", cfg.label[0] ? " " : "", cfg.label, cfg.method, cfg.url,
           run.open_loop ? "open" : "closed");
    if (run.open_loop) printf(" at %g req/s", cfg.rate);
    printf(", %u connections (%s), %u threads, target %s\n", cfg.concurrency,
           cfg.keepalive ? "keep-alive" : "one per request", n,
           net_addr_str(&cfg.addr, addr, sizeof(addr)));
    printf("  requests %llu: ok %llu, errors %llu, in %.3f s\n", (unsigned long long)sum.requests,
           (unsigned long long)sum.ok, (unsigned long long)sum.errors, sum.duration_s);
    printf("  %.1f responses/s, %.3f MB/s of bodies (%.3f MB/s received)\n", sum.rps, sum.mbytes_s,
           (double)all->rx_bytes / dur / 1e6);
    printf("  latency ms: mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
           sum.mean_ms, sum.p50_ms, sum.p90_ms, sum.p99_ms, sum.p999_ms, sum.max_ms);
    static const char *const cls[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
    printf("  status:");
    for (int k = 1; k <= 6; k++)
        if (all->status_class[k % 6])
            printf(" %s %llu", cls[k % 6], (unsigned long long)all->status_class[k % 6]);
    printf("%s\n", all->responses ? "" : " none");
    char ebuf[160];
    for (int k = 1; k < LG_ERR_KINDS; k++)
        for (int e = 0; e < 256; e++)
            if (all->err_count[k][e])
                printf("  error %s: %llu\n", lg_err_text(k, e, ebuf, sizeof(ebuf)),
                       (unsigned long long)all->err_count[k][e]);
    fflush(stdout);

    int rc = 0;
    if (run.record) {
        if (oom) {
            fprintf(stderr, "loadgen: --csv: out of memory: some rows were not kept\n");
            rc = 1;
        }
        if (write_csv(csv, ws, n) < 0 || fclose(csv) != 0) {
            fprintf(stderr, "loadgen: --csv: writing %s: %s\n", cfg.csv_path, strerror(errno));
            rc = 1;
        }
    }
    if (atomic_load(&run.cap_hit)) {
        fprintf(stderr,
                "loadgen: --csv: stopped at %llu rows, the most it keeps: use --requests or a "
                "shorter --duration\n",
                LG_MAX_ROWS);
        rc = 1;
    }
    if (cfg.summary_path && csv_append_summary(cfg.summary_path, &sum) < 0) {
        fprintf(stderr, "loadgen: --summary: writing %s: %s\n", cfg.summary_path, strerror(errno));
        rc = 1;
    }
    for (unsigned t = 0; t < n; t++) {
        free(ws[t].recs);
        for (size_t i = 0; i < ws[t].nids; i++)
            free(ws[t].ids[i]);
        free(ws[t].ids);
    }
    free(ws);
    free(all);
    free(cfg.req);
    return rc;
}
