/* proxy: the load balancer. Reads its configuration, starts one worker per
 * thread, and waits for signals: SIGTERM/SIGINT drain and exit 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "balancer.h"
#include "config.h"
#include "ev.h"
#include "log.h"
#include "net.h"
#include "probe.h"
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

/* Waits for the workers to finish draining, at most drain_ms. */
static void wait_drain(struct worker *w, int n, int drain_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += drain_ms / 1000;
    deadline.tv_nsec += (long)(drain_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (int i = 0; i < n; i++) {
        if (pthread_timedjoin_np(w[i].thread, NULL, &deadline) == 0) continue;
        log_warn("drain timeout (%d ms): closing the remaining connections", drain_ms);
        atomic_store(&g_stop_now, 1);
        for (int j = i; j < n; j++)
            pthread_join(w[j].thread, NULL);
        return;
    }
}

static int run(const struct proxy_config *cfg, struct balancer *bal) {
    int n = cfg->threads;
    struct worker *w = calloc((size_t)n, sizeof(*w));
    if (!w) return 1;
    int started = 0, rc = 0;
    if (net_port_taken(&cfg->listen)) {
        log_error("cannot listen on %s: address already in use", cfg->listen_text);
        free(w);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        if (worker_init(&w[i], i, cfg, bal) < 0) {
            worker_fini(&w[i]);
            for (int j = 0; j < i; j++)
                worker_fini(&w[j]);
            free(w);
            return 1;
        }
    }
    log_start(cfg, &w[0]);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    for (; started < n; started++)
        if (pthread_create(&w[started].thread, NULL, worker_main, &w[started]) != 0) break;
    struct prober *prober = started == n ? prober_start(bal, cfg, n) : NULL;
    if (!prober) {
        log_error("cannot start the worker and health-check threads");
        atomic_store(&g_stop_now, 1);
        rc = 1;
    }
    while (!rc) {
        int sig = sigwaitinfo(&sigs, NULL);
        if (sig == SIGHUP) {
            log_warn("SIGHUP: reloading is not supported yet; configuration unchanged");
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("%s: draining (up to %d ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                     cfg->timeouts_ms.drain);
            atomic_store(&g_draining, 1);
            break;
        }
    }
    if (!rc)
        wait_drain(w, started, cfg->timeouts_ms.drain);
    else
        for (int i = 0; i < started; i++)
            pthread_join(w[i].thread, NULL);
    prober_stop(prober);
    struct ev_stats total = {0};
    unsigned long long copied = 0, requests = 0;
    for (int i = 0; i < n; i++) {
        const struct ev_stats *s = ev_loop_stats(w[i].loop);
        total.splice_bytes += s->splice_bytes;
        total.splice_ops += s->splice_ops;
        copied += w[i].stats.copied_bytes;
        requests += w[i].stats.requests;
        worker_fini(&w[i]);
    }
    log_info("exit: splice_bytes=%llu splice_ops=%llu copied_bytes=%llu requests=%llu",
             (unsigned long long)total.splice_bytes, (unsigned long long)total.splice_ops, copied,
             requests);
    free(w);
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
        config_free(&cfg);
        return 0;
    }
    struct balancer bal;
    if (balancer_init(&bal, &cfg, cfg.threads) < 0) {
        log_error("out of memory");
        return 1;
    }
    int rc = run(&cfg, &bal);
    balancer_free(&bal);
    config_free(&cfg);
    return rc;
}
