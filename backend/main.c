/* backend: flags, start-up, one event-loop thread per --threads, signals. */
#define _GNU_SOURCE
#include "backend.h"

#include "flags.h"
#include "log.h"
#include "net.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

#ifndef LB_VERSION
#define LB_VERSION "0"
#endif

struct config cfg;

static atomic_int stop_flag;
static atomic_int slow_mode;          /* toggled by SIGUSR2 */
static atomic_int fail_mode;          /* on with --fail-status, toggled by SIGUSR1 */
static atomic_uint_fast64_t health_n; /* /health requests seen, for --health-flip */

int backend_stop_requested(void) {
    return atomic_load_explicit(&stop_flag, memory_order_relaxed);
}

unsigned backend_slow_ms(void) {
    return atomic_load_explicit(&slow_mode, memory_order_relaxed) ? cfg.slow_ms : 0;
}

int backend_fail_status(void) {
    return atomic_load_explicit(&fail_mode, memory_order_relaxed) ? cfg.fail_status : 0;
}

int backend_health_flip_fails(void) {
    return (int)(atomic_fetch_add_explicit(&health_n, 1, memory_order_relaxed) & 1);
}

static void usage(FILE *f) {
    fprintf(f, "usage: backend [--host ADDR] [--port 8000] [--instance-id ID] [--cluster NAME]\n"
               "               [--threads N] [--delay-ms N] [--work-us N] [--slow-ms N]\n"
               "               [--fail-status CODE] [--health-flip] [--quiet]\n"
               "               [--engine auto|uring|epoll] [--help] [--version]\n"
               "\n"
               "The HTTP service of a cluster instance. Endpoints: GET /health, GET /bytes/N\n"
               "(?chunked=1), POST|PUT /echo, GET /status/CODE, GET /delay/MS, WebSocket echo\n"
               "(any path), and a JSON greeting for anything else.\n"
               "\n"
               "  --host ADDR         address to listen on (default 0.0.0.0)\n"
               "  --port N            port (default 8000)\n"
               "  --instance-id ID    default $INSTANCE_ID, else the host name\n"
               "  --cluster NAME      default $CLUSTER_NAME, else \"default\"\n"
               "  --threads N         event-loop threads (default: online CPUs)\n"
               "  --delay-ms N        wait N ms before every reply\n"
               "  --work-us N         burn N us of CPU before every reply\n"
               "  --slow-ms N         extra wait before every reply while slow mode is on\n"
               "                      (default 50); SIGUSR2 turns slow mode on and off\n"
               "  --fail-status CODE  answer CODE (400-599) at once, no delay or work, to\n"
               "                      every request but GET /health (which stays 200): an\n"
               "                      instance that fails fast; SIGUSR1 turns it off and on\n"
               "  --health-flip       GET /health answers 200 and 503 in turn (a flapping\n"
               "                      instance, for health-check tests)\n"
               "  --quiet             no per-request log lines on stdout\n"
               "  --engine E          I/O engine: auto (io_uring, else epoll), uring, epoll\n"
               "\n"
               "Signals: SIGTERM, SIGINT stop; SIGUSR2 toggles slow mode (--slow-ms); SIGUSR1\n"
               "toggles fail mode (with --fail-status; ignored without).\n");
}

/* Names go into headers and log lines: printable, no spaces, not too long. */
static void check_name(const char *flag, const char *v) {
    size_t n = strlen(v);
    if (!n || n > 128) flags_die("%s: must be 1 to 128 characters", flag);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] <= ' ' || (unsigned char)v[i] == 0x7f)
            flags_die("%s: '%s' must not contain spaces or control characters", flag, v);
}

static const char *env_or(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static void parse_args(int argc, char **argv) {
    static char hostname[256];
    if (gethostname(hostname, sizeof(hostname) - 1) < 0 || !hostname[0])
        snprintf(hostname, sizeof(hostname), "backend");
    cfg.host = "0.0.0.0";
    cfg.port = 8000;
    cfg.instance_id = env_or("INSTANCE_ID", hostname);
    cfg.cluster = env_or("CLUSTER_NAME", "default");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg.threads = ncpu > 0 ? (int)ncpu : 1;
    cfg.engine = EV_ENGINE_AUTO;
    cfg.slow_ms = 50;

    static const char *const with_value[] = {
        "--host",    "--port",    "--instance-id", "--cluster",     "--threads", "--delay-ms",
        "--work-us", "--slow-ms", "--engine",      "--fail-status", NULL};
    static const char *const no_value[] = {"--help", "--version", "--quiet", "--health-flip", NULL};
    flags_init("backend");
    for (int i = 1; i < argc; i++) {
        const char *val;
        const char *flag = flags_next(argc, argv, &i, with_value, no_value, &val);
        if (!flag) flags_die("unexpected argument '%s'", argv[i]);
        if (!strcmp(flag, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(flag, "--version")) {
            printf("backend %s\n", LB_VERSION);
            exit(0);
        }
        if (!strcmp(flag, "--quiet")) {
            cfg.quiet = 1;
        } else if (!strcmp(flag, "--health-flip")) {
            cfg.health_flip = 1;
        } else if (!strcmp(flag, "--host")) {
            if (!*val) flags_die("--host: empty address");
            cfg.host = val;
        } else if (!strcmp(flag, "--port")) {
            cfg.port = (int)flags_uint(flag, val, 1, 65535);
        } else if (!strcmp(flag, "--instance-id")) {
            cfg.instance_id = val;
        } else if (!strcmp(flag, "--cluster")) {
            cfg.cluster = val;
        } else if (!strcmp(flag, "--threads")) {
            cfg.threads = (int)flags_uint(flag, val, 1, 1024);
        } else if (!strcmp(flag, "--delay-ms")) {
            cfg.delay_ms = (unsigned)flags_uint(flag, val, 0, 3600000);
        } else if (!strcmp(flag, "--work-us")) {
            cfg.work_us = (unsigned)flags_uint(flag, val, 0, 10000000);
        } else if (!strcmp(flag, "--slow-ms")) {
            cfg.slow_ms = (unsigned)flags_uint(flag, val, 0, 3600000);
        } else if (!strcmp(flag, "--fail-status")) {
            cfg.fail_status = (int)flags_uint(flag, val, 400, 599);
        } else if (!strcmp(flag, "--engine")) {
            int e = ev_engine_parse(val);
            if (e < 0)
                flags_die("--engine: invalid value '%s' (expected auto, uring or epoll)", val);
            cfg.engine = (enum ev_engine)e;
        }
    }
    check_name("--instance-id (or $INSTANCE_ID)", cfg.instance_id);
    check_name("--cluster (or $CLUSTER_NAME)", cfg.cluster);
}

static void listen_addr(struct net_addr *addr) {
    char s[300];
    if (strchr(cfg.host, ':') && cfg.host[0] != '[')
        snprintf(s, sizeof(s), "[%s]:%d", cfg.host, cfg.port);
    else
        snprintf(s, sizeof(s), "%s:%d", cfg.host, cfg.port);
    const char *err = NULL;
    if (net_parse_addr(s, NULL, addr, &err) < 0) flags_die("--host: '%s': %s", cfg.host, err);
}

/* ---- threads ---- */

struct thread {
    pthread_t tid;
    struct worker w;
    const struct net_addr *addr;
    atomic_int done;
};

static pthread_mutex_t start_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cv = PTHREAD_COND_INITIALIZER;
static int started, start_failed;

static void on_wake(int sig) {
    (void)sig; /* only interrupts the loop's wait */
}

static void *thread_main(void *arg) {
    struct thread *t = arg;
    sigset_t wake;
    sigemptyset(&wake);
    sigaddset(&wake, SIGRTMIN);
    pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
    int rc = worker_setup(&t->w, t->addr);
    pthread_mutex_lock(&start_mu);
    started++;
    if (rc < 0) start_failed = 1;
    pthread_cond_signal(&start_cv);
    pthread_mutex_unlock(&start_mu);
    if (rc == 0) worker_run(&t->w);
    worker_teardown(&t->w);
    atomic_store(&t->done, 1);
    return NULL;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Stops every loop: the flag is read in each loop's tick, SIGRTMIN cuts its
 * wait short (sent again until the thread is gone, so none is missed). */
static void stop_all(struct thread *ts, int n) {
    atomic_store(&stop_flag, 1);
    for (;;) {
        int alive = 0;
        for (int i = 0; i < n; i++) {
            if (atomic_load(&ts[i].done)) continue;
            alive++;
            pthread_kill(ts[i].tid, SIGRTMIN);
        }
        if (!alive) break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    for (int i = 0; i < n; i++)
        pthread_join(ts[i].tid, NULL);
}

int main(int argc, char **argv) {
    /* From the start: the threads inherit the mask, and a SIGTERM that comes
     * early still ends in the orderly stop (sigwait below). */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGUSR2);
    sigaddset(&sigs, SIGRTMIN);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* the threads unblock SIGRTMIN */
    log_init("backend", LOG_INFO);
    parse_args(argc, argv);
    atomic_store(&fail_mode, cfg.fail_status != 0); /* on from the start */
    struct net_addr addr;
    listen_addr(&addr);
    if (net_port_taken(&addr)) {
        char abuf[128];
        log_error("cannot listen on %s: %s", net_addr_str(&addr, abuf, sizeof(abuf)),
                  strerror(EADDRINUSE));
        return 1;
    }
    if (handlers_init() < 0) {
        log_error("out of memory");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();

    struct sigaction sa = {.sa_handler = on_wake}; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGRTMIN, &sa, NULL);

    struct thread *ts = calloc((size_t)cfg.threads, sizeof(*ts));
    if (!ts) {
        log_error("out of memory");
        return 1;
    }
    int n = 0;
    for (; n < cfg.threads; n++) {
        ts[n].w.idx = n;
        ts[n].addr = &addr;
        int rc = pthread_create(&ts[n].tid, NULL, thread_main, &ts[n]);
        if (rc) {
            log_error("pthread_create: %s", strerror(rc));
            pthread_mutex_lock(&start_mu);
            start_failed = 1;
            pthread_mutex_unlock(&start_mu);
            break;
        }
    }
    pthread_mutex_lock(&start_mu);
    while (started < n)
        pthread_cond_wait(&start_cv, &start_mu);
    int failed = start_failed;
    pthread_mutex_unlock(&start_mu);
    if (failed) {
        for (int i = 0; i < n; i++)
            if (ts[i].w.errmsg[0]) {
                log_error("%s", ts[i].w.errmsg);
                break;
            }
        stop_all(ts, n);
        return 1;
    }

    char abuf[128];
    struct worker *w0 = &ts[0].w;
    if (cfg.engine == EV_ENGINE_AUTO && w0->engine == EV_ENGINE_EPOLL)
        log_warn("io_uring unavailable (%s): using epoll", w0->why_fallback);
    char fail[40] = "";
    if (cfg.fail_status) snprintf(fail, sizeof(fail), ", fail status %d", cfg.fail_status);
    log_info("listening on %s: %d threads, engine %s, instance %s, cluster %s%s%s%s",
             net_addr_str(&addr, abuf, sizeof(abuf)), cfg.threads, ev_engine_name(w0->engine),
             cfg.instance_id, cfg.cluster, cfg.quiet ? ", quiet" : "",
             cfg.health_flip ? ", health flip" : "", fail);

    /* SIGUSR2 and SIGUSR1 (blocked in every thread) toggle slow mode and fail
     * mode; the workers read the flags for each request (backend_slow_ms,
     * backend_fail_status). */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    sigaddset(&term, SIGUSR2);
    sigaddset(&term, SIGUSR1);
    int sig = 0;
    for (;;) {
        if (sigwait(&term, &sig) != 0) continue;
        if (sig == SIGUSR2) {
            int on = !atomic_fetch_xor(&slow_mode, 1);
            log_info("SIGUSR2: slow mode %s (+%u ms per reply)", on ? "on" : "off", cfg.slow_ms);
        } else if (sig == SIGUSR1) {
            if (!cfg.fail_status) {
                log_info("SIGUSR1: no --fail-status, ignored");
                continue;
            }
            int on = !atomic_fetch_xor(&fail_mode, 1);
            log_info("SIGUSR1: fail mode %s (%d to all but GET /health)", on ? "on" : "off",
                     cfg.fail_status);
        } else {
            break;
        }
    }
    log_info("signal %d: stopping", sig);
    stop_all(ts, n);
    free(ts);
    free((void *)pattern_block);
    free(cfg.id_json);
    free(cfg.cluster_json);
    free(cfg.health_body);
    free(cfg.default_prefix);
    return 0;
}
