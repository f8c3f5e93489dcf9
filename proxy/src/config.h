/* The proxy's configuration: built from --config JSON and the flags, checked
 * whole before anything starts. */
#ifndef LB_CONFIG_H
#define LB_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "net.h"
#include "strategy.h"

/* The ALB's desync mitigation modes: what a request's class (http.h) gets. */
enum desync_mode {
    DESYNC_DEFENSIVE, /* the default: severe refused, ambiguous forwarded then both ends closed */
    DESYNC_STRICTEST, /* only compliant requests are forwarded */
    DESYNC_MONITOR,   /* severe refused, the rest forwarded and counted */
};
const char *desync_mode_name(int mode);
int desync_mode_parse(const char *s); /* -1 when unknown */

struct health_check {
    char path[256];
    int interval_ms, timeout_ms;
    int healthy_threshold, unhealthy_threshold;
    int expect_lo, expect_hi; /* expect_status "200-399" */
};

struct ec2_discovery {
    int enabled;
    char region[64];
    int ntags;
    char tag_keys[8][128], tag_values[8][256];
    int port, interval_s;
};

struct backend_addr {
    char text[80]; /* as written: "10.0.1.5:8000", or "app-1.internal:8000" */
    struct net_addr addr;
    int is_name;     /* a DNS name: addr unset, its addresses come from resolving it */
    char origin[80]; /* an address resolved from a name: that name as written; else "" */
};

/* Envoy's consecutive-failure outlier detection (balancer.c applies it). */
struct outlier_config {
    int enabled;
    int consecutive_5xx, consecutive_gateway_failure; /* 0: that detector off */
    int interval_ms;                                  /* how often an ejection multiplier decays */
    int base_ejection_ms;                             /* × times ejected */
    int max_ejection_percent;
};

/* A cookie naming the backend, HMAC-signed (sticky.c). */
struct stickiness_config {
    int enabled;
    char cookie[64];
    int duration_s;
    char secret[256]; /* "": the key generated at start */
};

struct backend_weight {
    char backend[80]; /* as in backends (or as discovery and DNS find it) */
    int weight;
};

struct cluster_config {
    char name[64];
    char path_prefix[256];
    size_t prefix_len;
    int strip_prefix;
    enum strategy strategy;
    int strategy_set; /* given in the config (a --strategy flag does not override it) */
    struct backend_addr *backends;
    size_t nbackends;
    struct health_check health;
    struct ec2_discovery discovery;
    int retries;
    struct outlier_config outlier;
    int slow_start_ms; /* 0: off */
    struct stickiness_config sticky;
    struct backend_weight *weights;
    size_t nweights;
    int dns_refresh_s; /* how often backends given as names are resolved again */
};
/* The weight configured for a backend (its text or the name it came from), 1 if none. */
int cluster_weight(const struct cluster_config *c, const char *backend, const char *name);

struct cloudwatch_config {
    int enabled;
    char namespace_[128];
    char region[64];
    int interval_s;
    /* the LoadBalancer dimension: the proxies of a fleet share one */
    char load_balancer[256];
};

struct proxy_config {
    struct net_addr listen;
    char listen_text[80];
    int threads;
    int engine; /* enum ev_engine */
    int admin_set;
    struct net_addr admin;
    char admin_text[80];
    char access_log[512]; /* "" = off, "-" = stdout */
    int log_level;        /* enum log_level */
    struct {
        int max_header_bytes, max_headers, max_connections;
        int min_body_rate_bps; /* a request body slower than this over 10 s is cut; 0: off */
    } limits;
    int desync_mode; /* enum desync_mode */
    struct {
        int connect, client_header, idle, backend_response, drain;
    } timeouts_ms;
    struct {
        int status;
        char content_type[128];
        char *body;
        size_t body_len;
    } default_response;
    struct cluster_config *clusters;
    size_t nclusters;
    struct cloudwatch_config cloudwatch;
    char config_path[512];
    int check_only;
};

/* Fills cfg from argv (and the --config file it names). Returns 0 to run,
 * 1 when it printed --help/--version (exit 0), 2 on a bad flag or config
 * (message already printed, naming the flag or field). */
int config_from_args(struct proxy_config *cfg, int argc, char **argv);
/* The same, with the messages about bad flags or fields written to errors
 * (a reload captures them for its log line and /status). */
int config_load(struct proxy_config *cfg, int argc, char **argv, FILE *errors);
/* The same, the message (without "proxy: ") in err: what a reload logs and
 * shows in /status. */
int config_read(struct proxy_config *cfg, int argc, char **argv, char *err, size_t errlen);
/* Parses JSON text into cfg (on top of defaults). 0, or -1 with err naming
 * the field, e.g. "clusters[0].health_check.interval_ms: expected an integer". */
int config_parse_json(struct proxy_config *cfg, const char *json, char *err, size_t err_len);
void config_defaults(struct proxy_config *cfg);
void config_free(struct proxy_config *cfg);
/* The settings that differ between a and b but that a reload cannot apply
 * (they need a restart): their top-level names ("timeouts_ms"), each once, in
 * names (at most max). Returns how many differ. */
size_t config_restart_diff(const struct proxy_config *a, const struct proxy_config *b,
                           const char **names, size_t max);
/* Writes a human-readable summary of what would run (for --check). */
void config_print(const struct proxy_config *cfg, FILE *out);

#endif
