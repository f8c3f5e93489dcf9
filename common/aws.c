/* The AWS client: see aws.h for what it resolves and in which order. */
#define _GNU_SOURCE
#include "aws.h"

#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <curl/curl.h>
#include <libxml/parser.h>

#define MAX_REPLY (64u << 20)

static const struct {
    const char *name;    /* signing name, and the host's first label */
    const char *env;     /* service-specific endpoint override */
    const char *version; /* Query API version; NULL: JSON protocol only */
    bool global;         /* one endpoint per partition (IAM), not one per region */
} services[AWS_SERVICE_COUNT] = {
    [AWS_EC2] = {"ec2", "AWS_ENDPOINT_URL_EC2", "2016-11-15", false},
    [AWS_SSM] = {"ssm", "AWS_ENDPOINT_URL_SSM", NULL, false},
    [AWS_CLOUDWATCH] = {"monitoring", "AWS_ENDPOINT_URL_CLOUDWATCH", "2010-08-01", false},
    [AWS_IAM] = {"iam", "AWS_ENDPOINT_URL_IAM", "2010-05-08", true},
};

struct aws_client {
    char region[64];
    char *access_key, *secret_key, *session_token;
    char *source;
    time_t expires; /* credentials from the instance metadata: their expiry; else 0 */
    char *endpoint[AWS_SERVICE_COUNT];
    CURL *curl;
    int max_attempts;
    long base_ms, cap_ms, connect_ms, total_ms;
    bool quiet_retries;
    bool (*abort)(void *arg);
    void *abort_arg;
    uint64_t rng;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void) {
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    xmlInitParser();
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static void free_secret(char *s) {
    if (!s) return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* ---- shared credentials and config files ---- */

struct profile {
    bool found;
    char *access_key, *secret_key, *session_token, *region;
    const char *other; /* a setting of a kind of credentials lbaws does not read: role_arn, … */
};

static void profile_free(struct profile *p) {
    free_secret(p->access_key);
    free_secret(p->secret_key);
    free_secret(p->session_token);
    free(p->region);
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Whether section header text (between the brackets) names profile: the
 * credentials file says [NAME], the config file [profile NAME] or [default]. */
static bool section_is(char *section, const char *profile, bool config) {
    if (!config || !strcmp(section, "default")) return !strcmp(section, profile);
    if (strncmp(section, "profile", 7) || !isspace((unsigned char)section[7])) return false;
    return !strcmp(trim(section + 7), profile);
}

static void profile_set(struct profile *p, const char *key, const char *value) {
    static const char *const others[] = {"role_arn", "credential_process", "sso_session",
                                         "sso_start_url", "web_identity_token_file"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        if (!strcasecmp(key, others[i])) p->other = others[i];
    char **slot = !strcasecmp(key, "aws_access_key_id")       ? &p->access_key
                  : !strcasecmp(key, "aws_secret_access_key") ? &p->secret_key
                  : !strcasecmp(key, "aws_session_token")     ? &p->session_token
                  : !strcasecmp(key, "region")                ? &p->region
                                                              : NULL;
    if (!slot) return;
    free_secret(*slot);
    *slot = strdup(value);
}

/* Reads profile's keys from the INI file at path into p. A missing file is
 * no error: false only when it exists and cannot be read. */
static bool read_profile(const char *path, const char *profile, bool config, struct profile *p,
                         char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT || errno == ENOTDIR) return true;
        seterr(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return false;
    }
    char *line = NULL;
    size_t cap = 0;
    bool in = false, nested = false;
    while (getline(&line, &cap, f) >= 0) {
        bool indented = isspace((unsigned char)line[0]);
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';') continue;
        /* "s3 =" followed by indented lines is a nested block of sub-settings. */
        if (indented && nested) continue;
        nested = false;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (close) *close = '\0';
            in = section_is(trim(s + 1), profile, config);
            p->found |= in;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) continue;
        *eq = '\0';
        char *value = trim(eq + 1);
        nested = !*value;
        if (in) profile_set(p, trim(s), value);
    }
    explicit_bzero(line, cap);
    free(line);
    fclose(f);
    return true;
}

/* path is the variable's value, else ~/.aws/name; "" when HOME is unset too. */
static void aws_file(char *path, size_t len, const char *var, const char *name) {
    const char *v = env(var), *home = env("HOME");
    if (v)
        snprintf(path, len, "%s", v);
    else if (home)
        snprintf(path, len, "%s/.aws/%s", home, name);
    else
        path[0] = '\0';
}

/* ---- HTTP helpers ---- */

struct reply {
    char *data;
    size_t len;
    bool too_big;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
    struct reply *r = userdata;
    size_t n = size * nmemb;
    if (r->len + n > MAX_REPLY) {
        r->too_big = true;
        return 0;
    }
    char *d = realloc(r->data, r->len + n + 1);
    if (!d) return 0;
    memcpy(d + r->len, ptr, n);
    d[r->len += n] = '\0';
    r->data = d;
    return n;
}

static struct curl_slist *add_header(struct curl_slist *list, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static struct curl_slist *add_header(struct curl_slist *list, const char *fmt, ...) {
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    struct curl_slist *l =
        n >= 0 && (size_t)n < sizeof(line) ? curl_slist_append(list, line) : NULL;
    if (!l) curl_slist_free_all(list);
    return l;
}

static void set_plain_error(struct aws_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_plain_error(struct aws_error *err, const char *fmt, ...) {
    memset(err, 0, sizeof(*err));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

/* ---- instance metadata (IMDSv2) ---- */

#define IMDS_ENDPOINT   "http://169.254.169.254"
#define IMDS_TTL_S      21600 /* of the session token */
#define IMDS_REFRESH_S  300   /* credentials this close to their expiry are fetched again */
#define IMDS_CONNECT_MS 1000L /* short: a machine that is no EC2 instance fails fast */
#define IMDS_TOTAL_MS   2000L
#define IMDS_ROLES      "/latest/meta-data/iam/security-credentials/"

/* The instance role's credentials, shared by every client of the process: a
 * client per call asks the metadata service again only near their expiry. */
static struct {
    pthread_mutex_t lock;
    char endpoint[256]; /* where they came from */
    char role[128];
    char *access_key, *secret_key, *token;
    time_t expires;
} imds = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The metadata service's URL, or NULL with why in err when it is off. */
static const char *imds_endpoint(char *err, size_t errlen) {
    const char *off = env("AWS_EC2_METADATA_DISABLED");
    if (off && !strcasecmp(off, "true")) {
        seterr(err, errlen, "the instance metadata service is off (AWS_EC2_METADATA_DISABLED)");
        return NULL;
    }
    const char *url = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    return url ? url : IMDS_ENDPOINT;
}

/* One request to the metadata service at base: a session token (a PUT, when
 * token is NULL), else a GET of path with the token. The 200 reply's body
 * (free it), or NULL with why in err; *status the reply's (0: none came). */
static char *imds_call(const char *base, const char *path, const char *token, long *status,
                       char *err, size_t errlen) {
    char url[512], curl_err[CURL_ERROR_SIZE] = "";
    int baselen = (int)strlen(base);
    while (baselen > 0 && base[baselen - 1] == '/')
        baselen--;
    snprintf(url, sizeof(url), "%.*s%s", baselen, base, path);
    struct curl_slist *h =
        token ? add_header(NULL, "X-aws-ec2-metadata-token: %s", token)
              : add_header(NULL, "X-aws-ec2-metadata-token-ttl-seconds: %d", IMDS_TTL_S);
    CURL *curl = curl_easy_init();
    struct reply r = {0};
    CURLcode rc = CURLE_OUT_OF_MEMORY;
    *status = 0;
    if (curl && h) {
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_NOPROXY, "*"); /* link-local: never through a proxy */
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
        if (!token) curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "lb-aws/" LB_VERSION);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, IMDS_CONNECT_MS);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, IMDS_TOTAL_MS);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
        rc = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    }
    const char *method = token ? "GET" : "PUT";
    if (rc != CURLE_OK)
        seterr(err, errlen, "%s %s: %s", method, url,
               *curl_err ? curl_err : curl_easy_strerror(rc));
    else if (*status != 200)
        seterr(err, errlen, "%s %s: HTTP %ld", method, url, *status);
    curl_slist_free_all(h);
    if (curl) curl_easy_cleanup(curl);
    if (rc == CURLE_OK && *status == 200) return r.data ? r.data : strdup("");
    free(r.data);
    return NULL;
}

/* "2026-11-28T05:00:00Z" */
static bool parse_utc(const char *s, time_t *t) {
    struct tm tm = {0};
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!end || strcmp(end, "Z")) return false;
    *t = timegm(&tm);
    return *t != (time_t)-1;
}

static bool set_secret(char **slot, const char *value) {
    free_secret(*slot);
    return (*slot = strdup(value)) != NULL;
}

/* The cache (its lock held) takes role's credentials document from base. */
static bool imds_take(const char *base, const char *role, const char *json, char *err,
                      size_t errlen) {
    cJSON *j = cJSON_Parse(json);
    const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "Code"));
    const char *ak = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "AccessKeyId"));
    const char *sk = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "SecretAccessKey"));
    const char *tok = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "Token"));
    const char *exp = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "Expiration"));
    time_t expires = 0;
    bool valid = code && !strcmp(code, "Success") && ak && *ak && sk && *sk && tok && *tok &&
                 parse_utc(exp, &expires);
    bool ok = valid && set_secret(&imds.access_key, ak) && set_secret(&imds.secret_key, sk) &&
              set_secret(&imds.token, tok);
    const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "Message"));
    if (code && strcmp(code, "Success"))
        seterr(err, errlen, "the credentials of role %s: %s%s%s", role, code, msg ? ": " : "",
               msg ? msg : "");
    else if (!valid)
        seterr(err, errlen,
               "the credentials of role %s: not a document with Code, AccessKeyId, "
               "SecretAccessKey, Token and Expiration (YYYY-MM-DDTHH:MM:SSZ)",
               role);
    else if (!ok)
        seterr(err, errlen, "out of memory");
    if (ok) {
        imds.expires = expires;
        snprintf(imds.endpoint, sizeof(imds.endpoint), "%s", base);
        snprintf(imds.role, sizeof(imds.role), "%s", role);
    } else if (valid) {
        imds.expires = 0; /* half replaced */
    }
    cJSON_Delete(j);
    return ok;
}

/* Fetches the instance role's credentials into the cache (its lock held). */
static bool imds_fetch(const char *base, char *err, size_t errlen) {
    long status;
    char *token = imds_call(base, "/latest/api/token", NULL, &status, err, errlen);
    char *roles = token ? imds_call(base, IMDS_ROLES, token, &status, err, errlen) : NULL;
    size_t len = roles ? strcspn(roles, "\r\n") : 0;
    char role[sizeof(imds.role)], path[sizeof(IMDS_ROLES) + sizeof(role)];
    bool ok = false;
    if (token && (status == 404 || (roles && !len)))
        seterr(err, errlen, "no IAM role on this instance (%s%s: none): attach an instance profile",
               base, IMDS_ROLES);
    else if (roles && (len >= sizeof(role) || memchr(roles, '/', len)))
        seterr(err, errlen, "%s%s: '%.*s' is not a role name", base, IMDS_ROLES, (int)len, roles);
    else if (roles) {
        snprintf(role, sizeof(role), "%.*s", (int)len, roles);
        snprintf(path, sizeof(path), "%s%s", IMDS_ROLES, role);
        char *doc = imds_call(base, path, token, &status, err, errlen);
        ok = doc && imds_take(base, role, doc, err, errlen);
        free_secret(doc);
    }
    free(roles);
    free_secret(token);
    return ok;
}

/* The instance role's credentials into c: from the cache unless they came
 * from another endpoint or expire within IMDS_REFRESH_S; when fetching them
 * fails, cached ones that have not expired yet still serve. */
static bool imds_credentials(struct aws_client *c, char *err, size_t errlen) {
    const char *base = imds_endpoint(err, errlen);
    if (!base) return false;
    pthread_mutex_lock(&imds.lock);
    time_t now = time(NULL);
    char why[768];
    bool cached = imds.access_key && !strcmp(imds.endpoint, base);
    bool ok = (cached && imds.expires - now > IMDS_REFRESH_S) || imds_fetch(base, why, sizeof(why));
    if (!ok && cached && imds.expires > now) {
        log_warn("instance credentials expire in %ld s and could not be refreshed: %s",
                 (long)(imds.expires - now), why);
        ok = true;
    } else if (!ok) {
        seterr(err, errlen, "no credentials from the instance metadata service: %s", why);
    }
    if (ok) {
        char *source = NULL;
        ok = set_secret(&c->access_key, imds.access_key) &&
             set_secret(&c->secret_key, imds.secret_key) &&
             set_secret(&c->session_token, imds.token) &&
             asprintf(&source, "instance metadata (role %s)", imds.role) >= 0;
        if (ok) {
            free(c->source);
            c->source = source;
            c->expires = imds.expires;
        } else {
            seterr(err, errlen, "out of memory");
        }
    }
    pthread_mutex_unlock(&imds.lock);
    return ok;
}

/* The instance's region into out, or false with why in err. */
static bool imds_region(char *out, size_t outlen, char *err, size_t errlen) {
    const char *base = imds_endpoint(err, errlen);
    long status;
    char why[768];
    char *token =
        base ? imds_call(base, "/latest/api/token", NULL, &status, why, sizeof(why)) : NULL;
    char *region = token ? imds_call(base, "/latest/meta-data/placement/region", token, &status,
                                     why, sizeof(why))
                         : NULL;
    bool ok = region && snprintf(out, outlen, "%s", region) < (int)outlen;
    if (region && !ok) snprintf(why, sizeof(why), "'%.80s' is too long", region);
    if (base && !ok) seterr(err, errlen, "no region from the instance metadata service: %s", why);
    free(region);
    free_secret(token);
    return ok;
}

/* ---- resolution ---- */

static bool take_credentials(struct aws_client *c, struct profile *p, const char *profile,
                             const char *path, char *err, size_t errlen) {
    if (!p->secret_key) {
        seterr(err, errlen, "profile '%s' in %s has aws_access_key_id but no aws_secret_access_key",
               profile, path);
        return false;
    }
    c->access_key = p->access_key;
    c->secret_key = p->secret_key;
    c->session_token = p->session_token;
    p->access_key = p->secret_key = p->session_token = NULL;
    if (asprintf(&c->source, "profile %s (%s)", profile, path) < 0) c->source = NULL;
    return true;
}

/* After the environment and the files: the instance role, unless the
 * profile asks for a kind of credentials lbaws does not read or AWS_PROFILE
 * names a profile that is nowhere. */
static bool resolve_credentials(struct aws_client *c, const char *profile, struct profile *cred,
                                const char *cred_path, struct profile *conf, const char *conf_path,
                                char *err, size_t errlen) {
    const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");
    if (ak && sk) {
        c->access_key = strdup(ak);
        c->secret_key = strdup(sk);
        const char *token = env("AWS_SESSION_TOKEN");
        c->session_token = token ? strdup(token) : NULL;
        c->source = strdup("environment");
        if (token && !c->session_token) {
            free(c->source);
            c->source = NULL; /* aws_client_new reports it as out of memory */
        }
        return true;
    }
    if (ak || sk) {
        seterr(err, errlen, "%s is set but %s is not",
               ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
               ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
        return false;
    }
    if (cred->access_key) return take_credentials(c, cred, profile, cred_path, err, errlen);
    if (conf->access_key) return take_credentials(c, conf, profile, conf_path, err, errlen);
    const char *other = cred->other ? cred->other : conf->other;
    if (other) {
        seterr(err, errlen,
               "no AWS credentials: profile '%s' has no aws_access_key_id in %s or %s but %s, "
               "which lbaws does not support: export the keys, e.g. eval \"$(aws configure "
               "export-credentials --format env)\"",
               profile, cred_path, conf_path, other);
        return false;
    }
    char files[8400], why[1024];
    if (cred->found || conf->found)
        snprintf(files, sizeof(files), "profile '%s' has no aws_access_key_id in %s or %s", profile,
                 cred_path, conf_path);
    else
        snprintf(files, sizeof(files), "profile '%s' is in neither %s nor %s", profile,
                 *cred_path ? cred_path : "~/.aws/credentials (HOME unset)",
                 *conf_path ? conf_path : "~/.aws/config (HOME unset)");
    if (!cred->found && !conf->found && env("AWS_PROFILE")) {
        seterr(err, errlen, "no AWS credentials: AWS_PROFILE is set but %s", files);
        return false;
    }
    if (imds_credentials(c, why, sizeof(why))) return true;
    seterr(err, errlen, "no AWS credentials: AWS_ACCESS_KEY_ID is not set, %s, and %s", files, why);
    return false;
}

static bool resolve_region(struct aws_client *c, const char *arg, const char *profile,
                           const struct profile *conf, const char *conf_path, char *err,
                           size_t errlen) {
    const char *r = arg && *arg ? arg : NULL, *from = "the region argument";
    char found[sizeof(c->region) + 1], why[1024];
    if (!r && (r = env("AWS_REGION"))) from = "AWS_REGION";
    if (!r && (r = env("AWS_DEFAULT_REGION"))) from = "AWS_DEFAULT_REGION";
    if (!r && (r = conf->region)) from = conf_path;
    if (!r && imds_region(found, sizeof(found), why, sizeof(why))) {
        r = found;
        from = "the instance metadata";
    }
    if (!r) {
        seterr(err, errlen,
               "no region: pass one (--region), set AWS_REGION or AWS_DEFAULT_REGION, or set "
               "region in profile '%s' of %s; %s",
               profile, *conf_path ? conf_path : "~/.aws/config", why);
        return false;
    }
    size_t len = strlen(r);
    if (len >= sizeof(c->region) || strspn(r, "abcdefghijklmnopqrstuvwxyz0123456789-") != len) {
        seterr(err, errlen, "invalid region '%s' (from %s)", r, from);
        return false;
    }
    memcpy(c->region, r, len + 1);
    return true;
}

/* Where a global service (IAM) lives in each partition: the host's label
 * after the service name (NULL: none), and the region requests are signed for. */
static const struct partition {
    const char *prefix, *label, *signing;
} partitions[] = {
    {"cn-", "cn-north-1", "cn-north-1"},
    {"us-gov-", "us-gov", "us-gov-west-1"},
    {"", NULL, "us-east-1"},
};

static const struct partition *partition_of(const char *region) {
    const struct partition *p = partitions;
    while (strncmp(region, p->prefix, strlen(p->prefix)))
        p++;
    return p;
}

static const char *signing_region(const struct aws_client *c, enum aws_service svc) {
    return services[svc].global ? partition_of(c->region)->signing : c->region;
}

static bool resolve_endpoints(struct aws_client *c, char *err, size_t errlen) {
    const char *all = env("AWS_ENDPOINT_URL");
    /* China regions live under their own domain. */
    const char *domain = strncmp(c->region, "cn-", 3) ? "amazonaws.com" : "amazonaws.com.cn";
    for (int s = 0; s < AWS_SERVICE_COUNT; s++) {
        const char *var = services[s].env, *url = env(var);
        const char *label = services[s].global ? partition_of(c->region)->label : c->region;
        if (!url && (url = all)) var = "AWS_ENDPOINT_URL";
        if (url) {
            if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
                seterr(err, errlen, "%s=%s is not an http:// or https:// URL", var, url);
                return false;
            }
            c->endpoint[s] = strdup(url);
        } else if (asprintf(&c->endpoint[s], "https://%s%s%s.%s", services[s].name,
                            label ? "." : "", label ? label : "", domain) < 0) {
            c->endpoint[s] = NULL;
        }
        if (!c->endpoint[s]) {
            seterr(err, errlen, "out of memory");
            return false;
        }
    }
    return true;
}

static long env_long(const char *name, long def, long min, long max) {
    const char *v = env(name);
    if (!v) return def;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < min || n > max) {
        log_warn("ignoring %s=%s: not a number in [%ld, %ld]", name, v, min, max);
        return def;
    }
    return n;
}

struct aws_client *aws_client_new(const char *region_or_null, char *err, size_t errlen) {
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        seterr(err, errlen, "curl_global_init: %s", curl_easy_strerror(global_rc));
        return NULL;
    }
    struct aws_client *c = calloc(1, sizeof(*c));
    if (!c) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    const char *profile = env("AWS_PROFILE") ? env("AWS_PROFILE") : "default";
    char cred_path[4096], conf_path[4096];
    aws_file(cred_path, sizeof(cred_path), "AWS_SHARED_CREDENTIALS_FILE", "credentials");
    aws_file(conf_path, sizeof(conf_path), "AWS_CONFIG_FILE", "config");
    struct profile cred = {0}, conf = {0};
    bool ok = (!*cred_path || read_profile(cred_path, profile, false, &cred, err, errlen)) &&
              (!*conf_path || read_profile(conf_path, profile, true, &conf, err, errlen)) &&
              resolve_credentials(c, profile, &cred, cred_path, &conf, conf_path, err, errlen) &&
              resolve_region(c, region_or_null, profile, &conf, conf_path, err, errlen) &&
              resolve_endpoints(c, err, errlen);
    profile_free(&cred);
    profile_free(&conf);
    if (ok && (!c->access_key || !c->secret_key || !c->source || !(c->curl = curl_easy_init()))) {
        seterr(err, errlen, "out of memory");
        ok = false;
    }
    if (!ok) {
        aws_client_free(c);
        return NULL;
    }
    c->max_attempts = (int)env_long("AWS_MAX_ATTEMPTS", 5, 1, 100);
    c->base_ms = env_long("LB_AWS_RETRY_BASE_MS", 200, 0, 60000);
    c->cap_ms = 5000;
    c->connect_ms = 10000;
    c->total_ms = 30000;
    if (getrandom(&c->rng, sizeof(c->rng), GRND_NONBLOCK) != sizeof(c->rng))
        c->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)c;
    c->rng |= 1;
    return c;
}

void aws_client_free(struct aws_client *c) {
    if (!c) return;
    free_secret(c->access_key);
    free_secret(c->secret_key);
    free_secret(c->session_token);
    free(c->source);
    for (int s = 0; s < AWS_SERVICE_COUNT; s++)
        free(c->endpoint[s]);
    if (c->curl) curl_easy_cleanup(c->curl);
    free(c);
}

const char *aws_client_region(const struct aws_client *c) {
    return c->region;
}

const char *aws_client_endpoint(const struct aws_client *c, enum aws_service svc) {
    return c->endpoint[svc];
}

const char *aws_client_access_key_id(const struct aws_client *c) {
    return c->access_key;
}

const char *aws_client_credentials_source(const struct aws_client *c) {
    return c->source;
}

void aws_client_set_retry(struct aws_client *c, int max_attempts, long base_ms, long cap_ms) {
    c->max_attempts = max_attempts < 1 ? 1 : max_attempts;
    c->base_ms = base_ms < 0 ? 0 : base_ms;
    c->cap_ms = cap_ms < c->base_ms ? c->base_ms : cap_ms;
}

void aws_client_set_timeouts(struct aws_client *c, long connect_ms, long total_ms) {
    c->connect_ms = connect_ms;
    c->total_ms = total_ms;
}

void aws_client_set_quiet_retries(struct aws_client *c, bool quiet) {
    c->quiet_retries = quiet;
}

void aws_client_set_abort(struct aws_client *c, bool (*abort)(void *arg), void *arg) {
    c->abort = abort;
    c->abort_arg = arg;
}

/* ---- Query form bodies ---- */

struct aws_form {
    char *buf;
    size_t len, cap;
    bool failed;
};

struct aws_form *aws_form_new(void) {
    struct aws_form *f = calloc(1, sizeof(*f));
    if (f && !(f->buf = calloc(1, f->cap = 256))) {
        free(f);
        return NULL;
    }
    return f;
}

void aws_form_free(struct aws_form *f) {
    if (!f) return;
    free(f->buf);
    free(f);
}

static void form_put(struct aws_form *f, const char *s, size_t n) {
    if (f->failed) return;
    if (f->len + n + 1 > f->cap) {
        size_t cap = f->cap * 2 > f->len + n + 1 ? f->cap * 2 : f->len + n + 1;
        char *b = realloc(f->buf, cap);
        if (!b) {
            f->failed = true;
            return;
        }
        f->buf = b;
        f->cap = cap;
    }
    memcpy(f->buf + f->len, s, n);
    f->buf[f->len += n] = '\0';
}

/* RFC 3986 unreserved characters as they are, every other byte %XX: what
 * SigV4 canonicalisation expects, so '+' never stands for a space. */
static void form_put_encoded(struct aws_form *f, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            form_put(f, s, 1);
        } else {
            char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            form_put(f, esc, 3);
        }
    }
}

void aws_form_add(struct aws_form *f, const char *name, const char *value) {
    if (f->len) form_put(f, "&", 1);
    form_put_encoded(f, name);
    form_put(f, "=", 1);
    form_put_encoded(f, value);
}

void aws_form_filter(struct aws_form *f, int n, const char *name, const char *value) {
    char key[48];
    snprintf(key, sizeof(key), "Filter.%d.Name", n);
    aws_form_add(f, key, name);
    snprintf(key, sizeof(key), "Filter.%d.Value.1", n);
    aws_form_add(f, key, value);
}

void aws_form_addf(struct aws_form *f, const char *name, const char *fmt, ...) {
    char *value;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&value, fmt, ap);
    va_end(ap);
    if (n < 0) {
        f->failed = true;
        return;
    }
    aws_form_add(f, name, value);
    free(value);
}

const char *aws_form_body(const struct aws_form *f) {
    return f->failed ? NULL : f->buf;
}

/* ---- error replies ---- */

static void set_aws_error(struct aws_error *err, const char *code, const char *message) {
    snprintf(err->code, sizeof(err->code), "%s", code);
    if (message && *message)
        snprintf(err->message, sizeof(err->message), "%s: %s", code, message);
    else
        snprintf(err->message, sizeof(err->message), "%s", code);
    err->dry_run_ok = !strcmp(code, "DryRunOperation");
}

static bool parse_xml_error(const char *body, size_t len, struct aws_error *err) {
    xmlDocPtr doc = xmlReadMemory(body, (int)len, NULL, NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    xmlNodePtr root = xmlDocGetRootElement(doc), e = root;
    if (root && strcmp((const char *)root->name, "Error") &&
        !(e = aws_xml_find(root, "Errors/Error")))
        e = aws_xml_find(root, "Error");
    const char *code = aws_xml_text(e, "Code");
    bool found = code && *code;
    if (found) set_aws_error(err, code, aws_xml_text(e, "Message"));
    xmlFreeDoc(doc);
    return found;
}

static bool parse_json_error(const char *body, size_t len, struct aws_error *err) {
    cJSON *j = cJSON_ParseWithLength(body, len);
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "__type"));
    if (!type) type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "code"));
    const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "message"));
    if (!msg) msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "Message"));
    bool ok = type && *type;
    if (ok) {
        /* "com.amazonaws.ssm#ParameterNotFound" or "Code:http://…": the code alone. */
        const char *hash = strrchr(type, '#');
        char code[sizeof(err->code)];
        snprintf(code, sizeof(code), "%.*s", (int)strcspn(hash ? hash + 1 : type, ":"),
                 hash ? hash + 1 : type);
        set_aws_error(err, code, msg);
    }
    cJSON_Delete(j);
    return ok;
}

bool aws_parse_error(const char *body, size_t len, long http_status, struct aws_error *err) {
    memset(err, 0, sizeof(*err));
    err->http_status = http_status;
    size_t skip = 0;
    while (skip < len && isspace((unsigned char)body[skip]))
        skip++;
    if (skip < len && body[skip] == '<' && len - skip <= INT32_MAX)
        return parse_xml_error(body + skip, len - skip, err);
    if (skip < len && body[skip] == '{') return parse_json_error(body + skip, len - skip, err);
    return false;
}

/* ---- requests ---- */

static bool transient_code(const char *code) {
    static const char *const codes[] = {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestThrottled",
        "EC2ThrottledException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (!strcmp(code, codes[i])) return true;
    return false;
}

/* Transport errors worth another try: not the ones a retry cannot change. */
static bool transient_curl(CURLcode rc) {
    switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_WRITE_ERROR:
    case CURLE_LOGIN_DENIED: return false;
    default: return true;
    }
}

static uint64_t next_random(struct aws_client *c) {
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 2685821657736338717ull;
}

/* Full jitter: uniform in [0, min(cap, base * 2^attempt)]. */
static long backoff_ms(struct aws_client *c, int attempt) {
    long ceiling = c->base_ms;
    for (int i = 0; i < attempt && ceiling < c->cap_ms; i++)
        ceiling *= 2;
    if (ceiling > c->cap_ms) ceiling = c->cap_ms;
    return ceiling > 0 ? (long)(next_random(c) % (uint64_t)(ceiling + 1)) : 0;
}

static bool aborted(const struct aws_client *c) {
    return c->abort && c->abort(c->abort_arg);
}

/* curl_easy_perform, but polling abort every 100 ms when there is one (curl's
 * progress callback can wait a second between calls). */
static CURLcode perform(struct aws_client *c) {
    if (!c->abort) return curl_easy_perform(c->curl);
    CURLM *m = curl_multi_init();
    if (!m || curl_multi_add_handle(m, c->curl) != CURLM_OK) {
        curl_multi_cleanup(m);
        return CURLE_OUT_OF_MEMORY;
    }
    CURLcode rc = CURLE_OK;
    int running = 1;
    while (running) {
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            rc = CURLE_OUT_OF_MEMORY;
            break;
        }
        if (running && aborted(c)) {
            rc = CURLE_ABORTED_BY_CALLBACK;
            break;
        }
        if (running) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    int left;
    for (CURLMsg *msg; !running && (msg = curl_multi_info_read(m, &left));)
        if (msg->msg == CURLMSG_DONE) rc = msg->data.result;
    curl_multi_remove_handle(m, c->curl);
    curl_multi_cleanup(m);
    return rc;
}

/* Sleeps ms, in slices short enough to see an abort soon. */
static void sleep_ms(const struct aws_client *c, long ms) {
    while (ms > 0 && !aborted(c)) {
        long slice = ms < 100 ? ms : 100;
        struct timespec ts = {0, slice * 1000000L};
        while (nanosleep(&ts, &ts) && errno == EINTR) {
        }
        ms -= slice;
    }
}

static void body_snippet(char *out, size_t outlen, const struct reply *r) {
    size_t n = 0;
    for (size_t i = 0; i < r->len && n + 1 < outlen && n < 200; i++)
        out[n++] = isprint((unsigned char)r->data[i]) ? r->data[i] : ' ';
    out[n] = '\0';
}

/* One attempt: false with err filled when it failed; *retry says whether
 * another attempt may do better. */
static bool attempt(struct aws_client *c, const char *url, struct reply *r, struct aws_error *err,
                    bool *retry) {
    char errbuf[CURL_ERROR_SIZE] = "";
    free(r->data);
    *r = (struct reply){0};
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, r);
    CURLcode rc = perform(c);
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, NULL);
    long status = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    memset(err, 0, sizeof(*err));
    err->http_status = status;
    if (r->too_big) {
        snprintf(err->message, sizeof(err->message), "reply from %s is over %u MiB", url,
                 MAX_REPLY >> 20);
        *retry = false;
        return false;
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(err->message, sizeof(err->message), "call to %s abandoned", url);
        *retry = false;
        return false;
    }
    if (rc != CURLE_OK) {
        snprintf(err->message, sizeof(err->message), "cannot reach %s: %s", url,
                 *errbuf ? errbuf : curl_easy_strerror(rc));
        *retry = transient_curl(rc);
        return false;
    }
    if (status >= 200 && status < 300) return true;
    if (!aws_parse_error(r->data ? r->data : "", r->len, status, err)) {
        char snippet[256];
        body_snippet(snippet, sizeof(snippet), r);
        snprintf(err->message, sizeof(err->message), "HTTP %ld from %s%s%s", status, url,
                 *snippet ? ": " : "", snippet);
    }
    *retry = status >= 500 || status == 429 || transient_code(err->code);
    return false;
}

/* POSTs body with headers to svc's endpoint, signed, retrying what is
 * transient; the 2xx reply is left in r. */
static bool request(struct aws_client *c, enum aws_service svc, const char *what,
                    struct curl_slist *headers, const char *body, struct reply *r,
                    struct aws_error *err) {
    const char *url = c->endpoint[svc];
    char sigv4[128];
    snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:%s", signing_region(c, svc), services[svc].name);
    CURL *h = c->curl;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, c->access_key);
    curl_easy_setopt(h, CURLOPT_PASSWORD, c->secret_key);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_USERAGENT, "lb-aws/" LB_VERSION);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->total_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    for (int n = 1;; n++) {
        log_debug("%s %s: POST %s (attempt %d/%d)", services[svc].name, what, url, n,
                  c->max_attempts);
        bool retry = false;
        if (attempt(c, url, r, err, &retry)) return true;
        if (!retry || n >= c->max_attempts) {
            if (n > 1) {
                size_t used = strlen(err->message);
                snprintf(err->message + used, sizeof(err->message) - used, " (after %d attempts)",
                         n);
            }
            return false;
        }
        long ms = backoff_ms(c, n - 1);
        log_msg(c->quiet_retries ? LOG_DEBUG : LOG_WARN,
                "%s %s: %s; retrying in %ld ms (attempt %d/%d)", services[svc].name, what,
                err->message, ms, n + 1, c->max_attempts);
        sleep_ms(c, ms);
        if (aborted(c)) {
            size_t used = strlen(err->message);
            snprintf(err->message + used, sizeof(err->message) - used,
                     " (abandoned after %d attempts)", n);
            return false;
        }
    }
}

/* The headers every call carries besides its Content-Type. libcurl signs the
 * headers it is given, so Content-Type is set here rather than left to its
 * default, which it would send unsigned. */
static struct curl_slist *headers_for(const struct aws_client *c, const char *content_type) {
    struct curl_slist *h = add_header(NULL, "Content-Type: %s", content_type);
    if (h && c->session_token) h = add_header(h, "X-Amz-Security-Token: %s", c->session_token);
    return h;
}

/* Instance credentials are replaced before a call once they near their expiry. */
static bool fresh_credentials(struct aws_client *c, struct aws_error *err) {
    if (!c->expires || c->expires - time(NULL) > IMDS_REFRESH_S) return true;
    char why[sizeof(err->message) - 64];
    if (imds_credentials(c, why, sizeof(why))) return true;
    set_plain_error(err, "cannot refresh the instance credentials: %s", why);
    return false;
}

xmlDocPtr aws_query(struct aws_client *c, enum aws_service svc, const char *action,
                    const struct aws_form *params, struct aws_error *err) {
    if (!services[svc].version) {
        set_plain_error(err, "%s has no Query API", services[svc].name);
        return NULL;
    }
    if (!fresh_credentials(c, err)) return NULL;
    const char *extra = params ? aws_form_body(params) : "";
    struct aws_form *form = aws_form_new();
    struct curl_slist *headers = headers_for(c, "application/x-www-form-urlencoded; charset=utf-8");
    xmlDocPtr doc = NULL;
    if (form) {
        aws_form_add(form, "Action", action);
        aws_form_add(form, "Version", services[svc].version);
        if (extra && *extra) {
            form_put(form, "&", 1);
            form_put(form, extra, strlen(extra));
        }
    }
    struct reply r = {0};
    if (!form || !extra || !aws_form_body(form) || !headers) {
        set_plain_error(err, "out of memory");
    } else if (request(c, svc, action, headers, aws_form_body(form), &r, err)) {
        doc = r.len <= INT32_MAX
                  ? xmlReadMemory(r.data ? r.data : "", (int)r.len, NULL, NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)
                  : NULL;
        if (!doc) set_plain_error(err, "the reply from %s is not XML", c->endpoint[svc]);
    }
    free(r.data);
    curl_slist_free_all(headers);
    aws_form_free(form);
    return doc;
}

cJSON *aws_json(struct aws_client *c, enum aws_service svc, const char *target, const cJSON *body,
                struct aws_error *err) {
    if (!fresh_credentials(c, err)) return NULL;
    char *text = body ? cJSON_PrintUnformatted(body) : strdup("{}");
    struct curl_slist *headers = headers_for(c, "application/x-amz-json-1.1");
    if (headers) headers = add_header(headers, "X-Amz-Target: %s", target);
    cJSON *reply = NULL;
    struct reply r = {0};
    if (!text || !headers) {
        set_plain_error(err, "out of memory");
    } else if (request(c, svc, target, headers, text, &r, err)) {
        reply = r.len ? cJSON_ParseWithLength(r.data, r.len) : cJSON_CreateObject();
        if (!reply) set_plain_error(err, "the reply from %s is not JSON", c->endpoint[svc]);
    }
    free(r.data);
    curl_slist_free_all(headers);
    free(text);
    return reply;
}
