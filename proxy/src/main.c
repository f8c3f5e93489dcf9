/* proxy: the load balancer. Reads its configuration, starts one worker per
 * thread, the health checks and the admin listener, and waits for signals:
 * SIGTERM/SIGINT drain and exit 0, SIGHUP reloads, SIGUSR1 reopens the
 * access log. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "accesslog.h"
#include "admin.h"
#include "balancer.h"
#include "cloudwatch.h"
#include "config.h"
#include "discovery.h"
#include "dns.h"
#include "ev.h"
#include "log.h"
#include "net.h"
#include "probe.h"
#include "reload.h"
#include "sticky.h"
#include "worker.h"

static void log_start(const struct proxy_config *cfg, const struct worker *w0) {
    if (cfg->engine != EV_ENGINE_EPOLL && ev_loop_engine(w0->loop) == EV_ENGINE_EPOLL)
        log_warn("io_uring unavailable (%s): using epoll", w0->engine_note);
    log_info("listening on %s with %d threads, engine %s", cfg->listen_text, cfg->threads,
             ev_engine_name(ev_loop_engine(w0->loop)));
    if (!cfg->nclusters)
        log_warn("no route configured: every request gets the default %d response",
                 cfg->default_response.status);
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const struct cluster_config *c = &cfg->clusters[i];
        log_info("cluster %s: %s -> %zu backends, strategy %s", c->name, c->path_prefix,
                 c->nbackends, strategy_name(c->strategy));
    }
}

/* Descriptors kept for everything but connections (listeners, loops, logs,
 * health checks), and the share of the rest that client sockets may take:
 * three quarters, the last for backend connections and splice pipes. An idle
 * keep-alive client holds one descriptor, a request in flight two (pipes are
 * optional: a body goes through the buffer without one), so 10,000 clients
 * fit in 20,000 descriptors, as with nginx and HAProxy; a backend socket that
 * cannot be had then is a 503, the proxy's own limit. */
#define NOFILE_RESERVED     64
#define NOFILE_CLIENT_SHARE 3 / 4

/* Raises RLIMIT_NOFILE's soft limit to its hard limit (the hard one is the
 * operator's, as for nginx) and returns max_connections capped to what the
 * descriptors allow (at least 1). */
static long nofile_setup(long max_connections) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_warn("getrlimit(RLIMIT_NOFILE): %s: max_connections not capped", strerror(errno));
        return max_connections;
    }
    rlim_t have = rl.rlim_cur;
    if (have < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            log_info("RLIMIT_NOFILE raised from %llu to %llu (the hard limit)",
                     (unsigned long long)have, (unsigned long long)rl.rlim_max);
            have = rl.rlim_max;
        } else {
            log_warn("RLIMIT_NOFILE stays %llu: cannot raise it to %llu: %s",
                     (unsigned long long)have, (unsigned long long)rl.rlim_max, strerror(errno));
        }
    } else {
        log_info("RLIMIT_NOFILE %llu (the hard limit)", (unsigned long long)have);
    }
    long cap = have > NOFILE_RESERVED ? (long)(have - NOFILE_RESERVED) * NOFILE_CLIENT_SHARE : 0;
    if (cap < 1) cap = 1;
    if (cap >= max_connections) return max_connections;
    log_warn("limits.max_connections %ld capped to %ld by RLIMIT_NOFILE %llu (%d descriptors "
             "reserved, 3/4 of the rest for clients)",
             max_connections, cap, (unsigned long long)have, NOFILE_RESERVED);
    return cap;
}

/* Sets g_draining or g_stop_now and wakes every worker to see it: an idle
 * loop sleeps until then. */
static void tell_workers(atomic_int *flag, struct worker *w, int n) {
    atomic_store(flag, 1);
    for (int i = 0; i < n; i++)
        ev_wake(w[i].loop);
}

/* Waits for the workers to finish draining, at most drain_ms. */
static void wait_drain(struct worker *w, int n, int drain_ms) {
    struct timespec deadline = ev_timespec_in(CLOCK_REALTIME, (uint64_t)drain_ms);
    for (int i = 0; i < n; i++) {
        if (pthread_timedjoin_np(w[i].thread, NULL, &deadline) == 0) continue;
        log_warn("drain timeout (%d ms): closing the remaining connections", drain_ms);
        tell_workers(&g_stop_now, w + i, n - i);
        for (int j = i; j < n; j++)
            pthread_join(w[j].thread, NULL);
        return;
    }
}

static void log_exit(struct worker *w, int n, struct balancer *bal) {
    struct ev_stats total = {0};
    for (int i = 0; i < n; i++) {
        const struct ev_stats *s = ev_loop_stats(w[i].loop);
        total.splice_bytes += s->splice_bytes;
        total.splice_ops += s->splice_ops;
        total.bufs_allocated += s->bufs_allocated;
        total.bufs_ring_empty += s->bufs_ring_empty;
    }
    struct worker_sums sum;
    workers_sum(w, n, &sum);
    unsigned long long requests = 0;
    struct cluster **lcs;
    size_t nclusters = balancer_clusters(bal, &lcs);
    for (size_t i = 0; i < nclusters; i++) {
        struct cluster_sums cs;
        cluster_counters_sum(lcs[i]->per_worker, n, &cs);
        requests += cs.requests;
    }
    free(lcs);
    log_info("exit: splice_bytes=%llu splice_ops=%llu copied_bytes=%llu requests=%llu "
             "buffers_allocated=%llu buffer_ring_empty=%llu",
             (unsigned long long)total.splice_bytes, (unsigned long long)total.splice_ops,
             (unsigned long long)sum.copied_bytes, requests,
             (unsigned long long)total.bufs_allocated, (unsigned long long)total.bufs_ring_empty);
}

static int init_workers(struct worker *w, int n, const struct proxy_config *cfg,
                        struct balancer *bal, struct alog *alog) {
    for (int i = 0; i < n; i++) {
        if (worker_init(&w[i], i, cfg, bal) < 0) {
            for (int j = 0; j <= i; j++)
                worker_fini(&w[j]);
            return -1;
        }
        w[i].alog = alog_thread_buf(alog, i);
    }
    return 0;
}

/* Waits for signals until one asks to drain (the caller tells the workers). */
static void serve_signals(const sigset_t *sigs, struct reloader *rl, struct alog *alog) {
    for (;;) {
        int sig = sigwaitinfo(sigs, NULL);
        if (sig == SIGHUP) {
            log_info("SIGHUP: reloading the configuration");
            reload_config(rl);
        } else if (sig == SIGUSR1) {
            if (alog) {
                log_info("SIGUSR1: reopening the access log");
                alog_reopen(alog);
            }
        } else if (sig == SIGTERM || sig == SIGINT) {
            log_info("%s: draining (up to %d ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                     rl->boot->timeouts_ms.drain);
            return;
        }
    }
}

/* A start's result (0, or -errno with err filled): 1, logged with its
 * reason, when it failed. */
static int start_failed(int rc, const char *what, const char *err) {
    if (rc >= 0) return 0;
    log_error("%s: %s", what, err);
    return 1;
}

/* What run() starts, stopped in the reverse order. */
struct running {
    const struct proxy_config *cfg;
    struct balancer *bal;
    struct worker *w;
    int n, started; /* workers, and of them the threads running */
    struct alog *alog;
    struct admin *admin;
    struct prober *prober;
    struct discovery *disc;
    struct cloudwatch *cw;
};

/* The listener check, the access log and the workers' loops and sockets. */
static int prepare(struct running *r) {
    const struct proxy_config *cfg = r->cfg;
    char err[300];
    if (net_port_taken(&cfg->listen)) {
        log_error("cannot listen on %s: address already in use", cfg->listen_text);
        return 1;
    }
    if (cfg->access_log[0] && !(r->alog = alog_open(cfg->access_log, r->n, err, sizeof(err)))) {
        log_error("access log: %s", err);
        return 1;
    }
    r->w = aligned_alloc(64, (size_t)r->n * sizeof(*r->w));
    if (r->w) memset(r->w, 0, (size_t)r->n * sizeof(*r->w));
    if (!r->w || init_workers(r->w, r->n, cfg, r->bal, r->alog) < 0) {
        free(r->w);
        alog_close(r->alog);
        return 1;
    }
    return 0;
}

/* The admin listener, the workers' threads, then the threads that read or
 * change the table. 1 when one failed (logged). */
static int start_threads(struct running *r, struct proxy_status *st, struct dns *dns) {
    const struct proxy_config *cfg = r->cfg;
    char err[300];
    if (cfg->admin_set) {
        struct admin_view view = {cfg, r->bal, r->w, r->n, r->alog, st};
        if (start_failed(admin_start(&view, &r->admin, err, sizeof(err)), "admin listener", err))
            return 1;
    }
    log_start(cfg, &r->w[0]);
    balancer_ready(r->bal);
    for (; r->started < r->n; r->started++)
        if (pthread_create(&r->w[r->started].thread, NULL, worker_main, &r->w[r->started])) {
            log_error("cannot start worker thread %d of %d", r->started + 1, r->n);
            return 1;
        }
    if (start_failed(prober_start(r->bal, cfg, &r->prober, err, sizeof(err)), "health checks",
                     err) ||
        start_failed(discovery_start(r->bal, &r->disc, err, sizeof(err)), "discovery", err))
        return 1;
    if (cfg->cloudwatch.enabled && start_failed(cloudwatch_start(&cfg->cloudwatch, r->bal, r->w,
                                                                 r->n, &r->cw, err, sizeof(err)),
                                                "cloudwatch", err))
        return 1;
    /* the names' refresher, once the readers run */
    return start_failed(dns_start(dns, err, sizeof(err)), "dns", err);
}

/* SIGTERM: the writers stop first (their table changes wait for the
 * workers), then the workers drain, then the last CloudWatch publication. */
static void drain(struct running *r, struct dns *dns) {
    tell_workers(&g_draining, r->w, r->started);
    uint64_t drain_until = ev_clock_ms() + (uint64_t)r->cfg->timeouts_ms.drain;
    dns_stop(dns);
    discovery_stop(r->disc);
    r->disc = NULL;
    wait_drain(r->w, r->started, r->cfg->timeouts_ms.drain);
    cloudwatch_stop_flush(r->cw, drain_until);
    r->cw = NULL;
}

static void stop_threads(struct running *r) {
    tell_workers(&g_stop_now, r->w, r->started);
    for (int i = 0; i < r->started; i++)
        pthread_join(r->w[i].thread, NULL);
    r->started = 0;
}

static void release(struct running *r) {
    discovery_stop(r->disc);
    cloudwatch_stop(r->cw);
    prober_stop(r->prober);
    admin_stop(r->admin);
    alog_close(r->alog);
    log_exit(r->w, r->n, r->bal);
    for (int i = 0; i < r->n; i++)
        worker_fini(&r->w[i]);
    free(r->w);
}

static int run(const struct proxy_config *cfg, struct balancer *bal, struct dns *dns, int argc,
               char **argv) {
    struct running r = {.cfg = cfg, .bal = bal, .n = cfg->threads};
    /* Blocked before the first listener opens: a SIGHUP or SIGTERM sent as
     * soon as the port answers waits for serve_signals() instead of taking
     * its default action (the end of the process) while the other workers
     * are still being set up. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (prepare(&r)) return 1;
    struct proxy_status st = {.started_ms = ev_wall_us() / 1000};
    pthread_mutex_init(&st.lock, NULL);
    struct reloader rl = {.argc = argc,
                          .argv = argv,
                          .boot = cfg,
                          .current = (struct proxy_config *)cfg,
                          .bal = bal,
                          .st = &st};
    int rc = start_threads(&r, &st, dns);
    rl.disc = r.disc;
    rl.dns = dns;
    if (!rc) {
        if (r.admin) log_info("admin listener on %s: /metrics /status /healthz", cfg->admin_text);
        if (r.cw)
            log_info("cloudwatch: PutMetricData to %s every %d s", cfg->cloudwatch.namespace_,
                     cfg->cloudwatch.interval_s);
        serve_signals(&sigs, &rl, r.alog);
        drain(&r, dns);
    } else {
        stop_threads(&r);
    }
    release(&r);
    reloader_free(&rl);
    pthread_mutex_destroy(&st.lock);
    return rc;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    struct proxy_config cfg;
    int r = config_from_args(&cfg, argc, argv);
    if (r) {
        config_free(&cfg);
        return r == 1 ? 0 : 2;
    }
    log_init("proxy", (enum log_level)cfg.log_level);
    if (cfg.check_only) {
        config_print(&cfg, stdout);
        int unresolved = dns_check(&cfg, argc, argv, stdout); /* each name's addresses */
        config_free(&cfg);
        return unresolved ? 1 : 0;
    }
    atomic_store(&g_max_connections, nofile_setup(cfg.limits.max_connections));
    if (sticky_init() < 0) {
        log_error("no random bytes for the stickiness key: %s", strerror(errno));
        return 1;
    }
    struct balancer *bal = balancer_new(&cfg, cfg.threads);
    if (!bal) {
        log_error("out of memory");
        return 1;
    }
    /* names resolved at start, before the readers (one that does not resolve: exit 2) */
    struct dns *dns = NULL;
    char err[300];
    int dr = dns_open(bal, argc, argv, &dns, err, sizeof(err));
    if (dr < 0) {
        log_error("dns: %s", err);
        balancer_free(bal);
        config_free(&cfg);
        return dr == -EINVAL ? 2 : 1;
    }
    int rc = run(&cfg, bal, dns, argc, argv);
    dns_free(dns);
    balancer_free(bal);
    config_free(&cfg);
    return rc;
}
