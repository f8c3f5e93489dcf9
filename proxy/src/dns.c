/* Backends given as DNS names. Each cluster's names are resolved with
 * getaddrinfo at start (before the readers run: a name that does not
 * resolve stops the start) and then every dns_refresh_s on a thread of its
 * own, off the data path. The cluster's found set is the union of its
 * names' addresses, deduplicated and sorted; it joins the latency table
 * like a reload would (an address that stays keeps its backend). A name whose
 * resolution fails keeps its last addresses. The thread follows the
 * configuration in force across reloads, as discovery.c does. */
#define _GNU_SOURCE
#include "dns.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ev.h"
#include "log.h"
#include "periodic.h"

/* The most addresses one name contributes (an answer is cut there). */
#define MAX_PER_NAME 64

/* One name of a cluster and what it resolved to last. */
struct name {
    char text[80]; /* as written: "app-1.internal:8000" */
    struct backend_addr *addrs;
    size_t n;
    int resolved; /* at least once */
    int failing;  /* the last resolution failed: log recovery once */
};

/* What the thread knows of one cluster with names between two reloads. */
struct job {
    char cluster[64];
    int refresh_s;
    uint64_t last_ms; /* the last resolution (monotonic); 0: due at once */
    struct name *names;
    size_t nnames;
};

struct dns {
    struct balancer *bal;
    int reader_id;
    struct job *jobs;
    size_t njobs;
    int started;
    struct periodic thread;
};

/* ---- resolving ---- */

/* Resolves "HOST:PORT" (a name as config.c accepts it) into out (at most
 * MAX_PER_NAME, deduplicated, in the resolver's order): 0, or -1 with err
 * filled. Each address's text is net_addr_str's, its origin the name. */
static int resolve(const char *text, struct backend_addr *out, size_t *n, char *err,
                   size_t errlen) {
    char host[80];
    const char *colon = strrchr(text, ':');
    *n = 0;
    if (!colon || (size_t)(colon - text) >= sizeof(host)) {
        snprintf(err, errlen, "expected HOST:PORT");
        return -1;
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    errno = 0;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "cannot resolve \"%s\": %s", host,
                 rc == EAI_SYSTEM && errno ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai && *n < MAX_PER_NAME; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(out->addr.ss))
            continue;
        struct backend_addr *ba = &out[*n];
        memset(ba, 0, sizeof(*ba));
        memcpy(&ba->addr.ss, ai->ai_addr, ai->ai_addrlen);
        ba->addr.len = ai->ai_addrlen;
        net_addr_str(&ba->addr, ba->text, sizeof(ba->text));
        snprintf(ba->origin, sizeof(ba->origin), "%s", text);
        int dup = 0;
        for (size_t k = 0; k < *n && !dup; k++)
            dup = !strcmp(out[k].text, ba->text);
        if (!dup) ++*n;
    }
    freeaddrinfo(res);
    if (!*n) {
        snprintf(err, errlen, "cannot resolve \"%s\": no IPv4 or IPv6 address", host);
        return -1;
    }
    return 0;
}

/* The addresses as text, comma separated, into buf. */
static const char *list(const struct backend_addr *a, size_t n, char *buf, size_t len) {
    size_t at = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n && at < len; i++) {
        int w = snprintf(buf + at, len - at, "%s%s", i ? ", " : "", a[i].text);
        if (w < 0) break;
        at += (size_t)w;
    }
    if (!n) snprintf(buf, len, "none");
    return buf;
}

/* Where a name was written, for messages: "--route PREFIX" when a --route
 * flag gave that cluster its backends, else "clusters[i].backends[j]". */
static void field_of(const struct cluster_config *cc, size_t i, size_t j, int argc, char **argv,
                     char *out, size_t len) {
    for (int k = 1; k < argc; k++) {
        const char *v = NULL;
        if (!strcmp(argv[k], "--route") && k + 1 < argc)
            v = argv[k + 1];
        else if (!strncmp(argv[k], "--route=", 8))
            v = argv[k] + 8;
        const char *eq = v ? strchr(v, '=') : NULL;
        if (eq && (size_t)(eq - v) == strlen(cc->path_prefix) &&
            !strncmp(v, cc->path_prefix, (size_t)(eq - v))) {
            snprintf(out, len, "--route %s", cc->path_prefix);
            return;
        }
    }
    snprintf(out, len, "clusters[%zu].backends[%zu]", i, j);
}

static int has_names(const struct cluster_config *cc) {
    for (size_t j = 0; j < cc->nbackends; j++)
        if (cc->backends[j].is_name) return 1;
    return 0;
}

/* ---- the jobs ---- */

static void job_free(struct job *j) {
    for (size_t k = 0; k < j->nnames; k++)
        free(j->names[k].addrs);
    free(j->names);
    j->names = NULL;
    j->nnames = 0;
}

static struct job *job_for(struct job *jobs, size_t n, const char *cluster) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(jobs[i].cluster, cluster)) return &jobs[i];
    return NULL;
}

static struct name *name_in(struct job *j, const char *text) {
    for (size_t k = 0; j && k < j->nnames; k++)
        if (!strcasecmp(j->names[k].text, text)) return &j->names[k];
    return NULL;
}

/* The clusters with names in the configuration in force now (a reload may
 * have changed them); keeps what the names still there resolved to, and
 * their schedule. A new name makes its cluster due at once. */
static void refresh_jobs(struct dns *d) {
    struct balancer *b = d->bal;
    balancer_reader_online(b, d->reader_id);
    const struct proxy_config *cfg = balancer_config(b);
    struct job *jobs = calloc(cfg->nclusters + 1, sizeof(*jobs));
    size_t n = 0;
    int oom = !jobs;
    for (size_t i = 0; !oom && i < cfg->nclusters; i++) {
        const struct cluster_config *cc = &cfg->clusters[i];
        if (!has_names(cc)) continue;
        struct job *was = job_for(d->jobs, d->njobs, cc->name), *j = &jobs[n++];
        snprintf(j->cluster, sizeof(j->cluster), "%s", cc->name);
        j->refresh_s = cc->dns_refresh_s > 0 ? cc->dns_refresh_s : 30;
        j->last_ms = was ? was->last_ms : 0;
        if (!(j->names = calloc(cc->nbackends, sizeof(*j->names)))) {
            oom = 1;
            break;
        }
        for (size_t k = 0; k < cc->nbackends; k++) {
            if (!cc->backends[k].is_name) continue;
            struct name *nm = &j->names[j->nnames++];
            snprintf(nm->text, sizeof(nm->text), "%s", cc->backends[k].text);
            const struct name *old = name_in(was, nm->text);
            if (!old) {
                j->last_ms = 0;
                continue;
            }
            nm->addrs = malloc((old->n ? old->n : 1) * sizeof(*nm->addrs));
            if (!nm->addrs) {
                oom = 1;
                break;
            }
            memcpy(nm->addrs, old->addrs, old->n * sizeof(*nm->addrs));
            nm->n = old->n;
            nm->resolved = old->resolved;
            nm->failing = old->failing;
        }
    }
    balancer_reader_offline(b, d->reader_id);
    if (oom) {
        for (size_t i = 0; i < n; i++)
            job_free(&jobs[i]);
        free(jobs);
        log_error("dns: out of memory: the names keep their last addresses");
        return;
    }
    /* clusters that no longer have names: forget what they resolved to, so
     * that names given to them again start afresh */
    struct backend_addr none;
    for (size_t i = 0; i < d->njobs; i++) {
        if (!job_for(jobs, n, d->jobs[i].cluster))
            balancer_set_found(b, d->jobs[i].cluster, FOUND_BY_DNS, &none, 0, "dns");
        job_free(&d->jobs[i]);
    }
    free(d->jobs);
    d->jobs = jobs;
    d->njobs = n;
}

static int cmp_text(const void *a, const void *b) {
    return strcmp(((const struct backend_addr *)a)->text, ((const struct backend_addr *)b)->text);
}

/* The cluster's found set: every name's last addresses, each address once
 * (with the first name that gave it), sorted. NULL when out of memory. */
static struct backend_addr *union_of(const struct job *j, size_t *n) {
    size_t cap = 1;
    for (size_t k = 0; k < j->nnames; k++)
        cap += j->names[k].n;
    struct backend_addr *set = malloc(cap * sizeof(*set));
    *n = 0;
    if (!set) return NULL;
    for (size_t k = 0; k < j->nnames; k++)
        for (size_t a = 0; a < j->names[k].n; a++) {
            const struct backend_addr *ba = &j->names[k].addrs[a];
            int dup = 0;
            for (size_t m = 0; m < *n && !dup; m++)
                dup = !strcmp(set[m].text, ba->text);
            if (!dup) set[(*n)++] = *ba;
        }
    qsort(set, *n, sizeof(*set), cmp_text);
    return set;
}

/* Resolves every name of j again (a failed one keeps its last addresses)
 * and hands the union to the balancer, which swaps a table in only when it
 * changed. */
static void run_job(struct dns *d, struct job *j) {
    struct backend_addr buf[MAX_PER_NAME];
    char err[256], addrs[512], why[96];
    for (size_t k = 0; k < j->nnames; k++) {
        struct name *nm = &j->names[k];
        size_t n;
        if (resolve(nm->text, buf, &n, err, sizeof(err)) < 0) {
            if (!nm->failing)
                log_warn("dns %s: %s: %s: keeping its last addresses (%s)", j->cluster, nm->text,
                         err, list(nm->addrs, nm->n, addrs, sizeof(addrs)));
            nm->failing = 1;
            continue;
        }
        struct backend_addr *copy = malloc(n * sizeof(*copy));
        if (!copy) {
            log_error("dns %s: %s: out of memory: keeping its last addresses", j->cluster,
                      nm->text);
            continue;
        }
        memcpy(copy, buf, n * sizeof(*copy));
        free(nm->addrs);
        nm->addrs = copy;
        nm->n = n;
        if (nm->failing || !nm->resolved)
            log_info("dns %s: %s %s: %s", j->cluster, nm->text,
                     nm->failing ? "resolves again" : "resolves",
                     list(copy, n, addrs, sizeof(addrs)));
        nm->failing = 0;
        nm->resolved = 1;
    }
    size_t n;
    struct backend_addr *set = union_of(j, &n);
    snprintf(why, sizeof(why), "dns %s", j->cluster);
    if (!set || balancer_set_found(d->bal, j->cluster, FOUND_BY_DNS, set, n, why) < 0)
        log_error("dns %s: out of memory", j->cluster);
    free(set);
}

/* One pass: the clusters due now; the seconds until the next is due, or 0
 * when no cluster has names (a reload that adds one kicks the thread). */
static int refresh(void *arg) {
    struct dns *d = arg;
    refresh_jobs(d);
    uint64_t next = 0;
    for (size_t i = 0; i < d->njobs; i++) {
        struct job *j = &d->jobs[i];
        uint64_t now = ev_clock_ms();
        if (!j->last_ms || now >= j->last_ms + (uint64_t)j->refresh_s * 1000) {
            run_job(d, j);
            j->last_ms = ev_clock_ms();
            if (!j->last_ms) j->last_ms = 1;
        }
        uint64_t due = j->last_ms + (uint64_t)j->refresh_s * 1000;
        if (!next || due < next) next = due;
    }
    return next ? periodic_seconds_until(next, ev_clock_ms()) : 0;
}

/* ---- the interface ---- */

/* Resolves every name of the configuration in force, each failure reported
 * on stderr where it was written: how many failed, or -ENOMEM. */
static int resolve_all(struct dns *d, int argc, char **argv) {
    struct backend_addr buf[MAX_PER_NAME];
    char err[256], field[300];
    int failed = 0;
    balancer_reader_online(d->bal, d->reader_id);
    const struct proxy_config *cfg = balancer_config(d->bal);
    for (size_t i = 0; i < cfg->nclusters && failed >= 0; i++) {
        const struct cluster_config *cc = &cfg->clusters[i];
        struct job *j = job_for(d->jobs, d->njobs, cc->name);
        for (size_t k = 0; j && k < cc->nbackends && failed >= 0; k++) {
            struct name *nm = cc->backends[k].is_name ? name_in(j, cc->backends[k].text) : NULL;
            size_t n;
            if (!nm) continue;
            if (resolve(nm->text, buf, &n, err, sizeof(err)) < 0) {
                field_of(cc, i, k, argc, argv, field, sizeof(field));
                fprintf(stderr, "proxy: %s: %s\n", field, err);
                failed++;
            } else if (!(nm->addrs = malloc(n * sizeof(*nm->addrs)))) {
                failed = -ENOMEM;
            } else {
                memcpy(nm->addrs, buf, n * sizeof(*nm->addrs));
                nm->n = n;
                nm->resolved = 1;
            }
        }
    }
    balancer_reader_offline(d->bal, d->reader_id);
    return failed;
}

/* Hands each cluster's addresses to the balancer: 0, or -ENOMEM. */
static int publish_all(struct dns *d) {
    char addrs[512], why[96];
    for (size_t i = 0; i < d->njobs; i++) {
        struct job *j = &d->jobs[i];
        for (size_t k = 0; k < j->nnames; k++)
            log_info("dns %s: %s resolves to %s (again every %d s)", j->cluster, j->names[k].text,
                     list(j->names[k].addrs, j->names[k].n, addrs, sizeof(addrs)), j->refresh_s);
        size_t n;
        struct backend_addr *set = union_of(j, &n);
        snprintf(why, sizeof(why), "dns %s", j->cluster);
        int rc = set ? balancer_set_found(d->bal, j->cluster, FOUND_BY_DNS, set, n, why) : -ENOMEM;
        free(set);
        if (rc < 0) return rc;
        j->last_ms = ev_clock_ms();
        if (!j->last_ms) j->last_ms = 1;
    }
    return 0;
}

int dns_open(struct balancer *b, int argc, char **argv, struct dns **out, char *err,
             size_t errlen) {
    struct dns *d = calloc(1, sizeof(*d));
    *out = NULL;
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    d->bal = b;
    d->reader_id = balancer_reader_id(b, READER_DNS);
    refresh_jobs(d);
    int failed = resolve_all(d, argc, argv);
    int rc = failed > 0 ? -EINVAL : failed < 0 ? failed : publish_all(d);
    if (rc == -EINVAL)
        snprintf(err, errlen, "%d backend name%s of the configuration do%s not resolve", failed,
                 failed > 1 ? "s" : "", failed > 1 ? "" : "es");
    else if (rc)
        snprintf(err, errlen, "out of memory");
    if (rc) {
        dns_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

int dns_start(struct dns *d, char *err, size_t errlen) {
    int rc = periodic_start(&d->thread, 1, refresh, d);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start its thread: %s", strerror(-rc));
        return rc;
    }
    d->started = 1;
    return 0;
}

void dns_kick(struct dns *d) {
    if (d && d->started) periodic_kick(&d->thread);
}

void dns_stop(struct dns *d) {
    if (!d || !d->started) return;
    periodic_stop(&d->thread);
    d->started = 0;
}

void dns_free(struct dns *d) {
    if (!d) return;
    dns_stop(d);
    for (size_t i = 0; i < d->njobs; i++)
        job_free(&d->jobs[i]);
    free(d->jobs);
    free(d);
}

int dns_check(const struct proxy_config *cfg, int argc, char **argv, FILE *out) {
    struct backend_addr buf[MAX_PER_NAME];
    char err[256], field[300], addrs[2048];
    int failed = 0;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const struct cluster_config *cc = &cfg->clusters[i];
        for (size_t k = 0; k < cc->nbackends; k++) {
            const struct backend_addr *ba = &cc->backends[k];
            if (!ba->is_name) continue;
            size_t n;
            if (resolve(ba->text, buf, &n, err, sizeof(err)) < 0) {
                field_of(cc, i, k, argc, argv, field, sizeof(field));
                fprintf(out, "dns cluster %s backend %s: %s\n", cc->name, ba->text, err);
                fprintf(stderr, "proxy: %s: %s\n", field, err);
                failed++;
                continue;
            }
            fprintf(out, "dns cluster %s backend %s -> %s (again every %d s)\n", cc->name, ba->text,
                    list(buf, n, addrs, sizeof(addrs)), cc->dns_refresh_s);
        }
    }
    return failed;
}
