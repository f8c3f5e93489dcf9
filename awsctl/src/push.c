/* Pushes the binaries, the proxy's configuration and the bootstraps to every
 * instance over SSH, one thread per instance, and runs the bootstraps.
 *
 * Where things are: `backend` and `proxy` beside the awsctl executable (the
 * build directory), the bootstraps in the source tree's scripts/ (or
 * AWSCTL_SCRIPTS_DIR). On the instance: AWSCTL_REMOTE_DIR (/opt/lb), or
 * AWSCTL_REMOTE_DIR/<instance-id> with AWSCTL_REMOTE_PER_INSTANCE=1, which
 * the tests use because all their instances are one machine. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define PROXY_ADMIN "127.0.0.1:9000"

struct file {
    char local[PATH_MAX];
    const char *remote; /* name in the remote directory */
    const char *data;   /* instead of local: contents */
    int mode;
};

struct job {
    const struct ctl *c;
    pthread_t tid;
    bool threaded;
    struct instance *in;
    const char *proxy_json, *proxy_env;
    bool ok;
    bool retryable; /* the SSH session failed midway, not a command or a host key */
    char summary[512];
    char err[4096];
};

int ssh_port(void) {
    int p = atoi(env_or("AWSCTL_SSH_PORT", "22"));
    return p > 0 && p < 65536 ? p : 22;
}

static void exe_dir(char *out, size_t len) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    dir_of(n > 0 ? self : ".", out, len);
}

static void binary_path(const char *name, char *out, size_t len) {
    char dir[PATH_MAX];
    exe_dir(dir, sizeof(dir));
    if (snprintf(out, len, "%s/%s", dir, name) >= (int)len) out[0] = '\0';
}

static void script_path(const char *name, char *out, size_t len) {
    const char *dir = env_or("AWSCTL_SCRIPTS_DIR", AWSCTL_SCRIPTS_DIR);
    if (snprintf(out, len, "%s/%s", dir, name) >= (int)len) out[0] = '\0';
}

bool push_check_files(char *err, size_t errlen) {
    char p[PATH_MAX];
    const char *bins[] = {"backend", "proxy"},
               *scripts[] = {"bootstrap-backend.sh", "bootstrap-proxy.sh", "bootstrap-service.sh"};
    for (int i = 0; i < 2; i++) {
        binary_path(bins[i], p, sizeof(p));
        if (access(p, R_OK)) {
            snprintf(err, errlen, "%s is missing: build it first (cmake --build BUILD --target %s)",
                     p, bins[i]);
            return false;
        }
    }
    for (int i = 0; i < 3; i++) {
        script_path(scripts[i], p, sizeof(p));
        if (access(p, R_OK)) {
            snprintf(err, errlen,
                     "%s is missing (set AWSCTL_SCRIPTS_DIR to the scripts/ directory)", p);
            return false;
        }
    }
    return true;
}

/* 'text' for sh, or false when it cannot be quoted in len bytes. */
static bool shq(const char *text, char *out, size_t len) {
    size_t w = 0;
    if (len < 3) return false;
    out[w++] = '\'';
    for (; *text; text++) {
        const char *piece = *text == '\'' ? "'\\''" : (char[2]){*text, 0};
        size_t n = strlen(piece);
        if (w + n + 2 > len) return false;
        memcpy(out + w, piece, n);
        w += n;
    }
    out[w++] = '\'';
    out[w] = '\0';
    return true;
}

static bool remote_dir(const struct instance *in, char *out, size_t len) {
    const char *base = env_or("AWSCTL_REMOTE_DIR", "/opt/lb");
    bool per_instance = !strcmp(env_or("AWSCTL_REMOTE_PER_INSTANCE", "0"), "1");
    int n = snprintf(out, len, "%s%s%s", base, per_instance ? "/" : "", per_instance ? in->id : "");
    return n > 0 && (size_t)n < len;
}

/* ---- what the proxy gets ---- */

static cJSON *cluster_json(const struct state *st, const char *name) {
    cJSON *c = cJSON_CreateObject();
    char prefix[64], addr[80];
    snprintf(prefix, sizeof(prefix), "/%s", name);
    cJSON_AddStringToObject(c, "name", name);
    cJSON_AddStringToObject(c, "path_prefix", prefix);
    cJSON *backends = cJSON_AddArrayToObject(c, "backends");
    for (int i = 0; i < st->ninst; i++) {
        if (strcmp(st->inst[i].cluster, name)) continue;
        snprintf(addr, sizeof(addr), "%s:%d", st->inst[i].private_ip, APP_PORT);
        cJSON_AddItemToArray(backends, cJSON_CreateString(addr));
    }
    cJSON *ec2 = cJSON_AddObjectToObject(cJSON_AddObjectToObject(c, "discovery"), "ec2");
    cJSON_AddStringToObject(ec2, "region", st->region);
    cJSON *tags = cJSON_AddObjectToObject(ec2, "tags");
    cJSON_AddStringToObject(tags, "Cluster", name);
    cJSON_AddStringToObject(tags, "Deployment", st->name);
    cJSON_AddNumberToObject(ec2, "port", APP_PORT);
    cJSON_AddNumberToObject(ec2, "interval_s", 15);
    return c;
}

void push_load_balancer(const struct state *st, char *out, size_t len) {
    snprintf(out, len, "app/%s", st->name);
}

/* Every proxy of the deployment the same: one load balancer in CloudWatch. */
static cJSON *cloudwatch_json(const struct state *st) {
    cJSON *cw = cJSON_CreateObject();
    char lb[160];
    push_load_balancer(st, lb, sizeof(lb));
    cJSON_AddStringToObject(cw, "namespace", CW_NAMESPACE);
    cJSON_AddStringToObject(cw, "region", st->region);
    cJSON_AddStringToObject(cw, "load_balancer", lb);
    return cw;
}

/* The proxy's configuration: the backends known now, EC2 discovery by tag
 * for what changes later, CloudWatch under the deployment's name. */
static char *proxy_config(const struct state *st, const struct instance *proxy) {
    cJSON *root = cJSON_CreateObject();
    char listen[80];
    snprintf(listen, sizeof(listen), "%s:%d", proxy->private_ip, APP_PORT);
    cJSON_AddStringToObject(root, "listen", listen);
    cJSON_AddStringToObject(root, "admin", env_or("AWSCTL_PROXY_ADMIN", PROXY_ADMIN));
    cJSON *clusters = cJSON_AddArrayToObject(root, "clusters");
    cJSON_AddItemToArray(clusters, cluster_json(st, "cluster1"));
    cJSON_AddItemToArray(clusters, cluster_json(st, "cluster2"));
    cJSON_AddItemToObject(root, "cloudwatch", cloudwatch_json(st));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

/* NAME='value' lines for the proxy's environment: the variables that
 * AWSCTL_FORWARD_ENV names (tests: the stand-in's endpoint and keys). */
static char *proxy_env(void) {
    char *names = strdup(env_or("AWSCTL_FORWARD_ENV", "")), *save = NULL, *out = NULL;
    size_t len = 0;
    FILE *f = names ? open_memstream(&out, &len) : NULL;
    for (char *n = f ? strtok_r(names, ", ", &save) : NULL; n; n = strtok_r(NULL, ", ", &save)) {
        const char *v = getenv(n);
        char q[4096];
        bool name_ok =
            strspn(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_0123456789") ==
                strlen(n) &&
            !isdigit((unsigned char)*n);
        if (name_ok && v && !strchr(v, '\n') && !strchr(v, '\'') && shq(v, q, sizeof(q)))
            fprintf(f, "%s=%s\n", n, q);
        else if (v || !name_ok)
            fail("AWSCTL_FORWARD_ENV: %s is not passed on (not a name, or a value with a "
                 "newline or quote, or too long)",
                 n);
    }
    if (f) fclose(f);
    free(names);
    return out ? out : strdup("");
}

/* ---- one instance ---- */

/* Runs cmd: true when it exited 0; a failed session marks the job retryable. */
static bool run(struct job *j, struct ssh *s, const char *cmd, const char *what, char *tail,
                size_t taillen) {
    int status = -1;
    if (!ssh_exec(s, cmd, &status, tail, taillen, j->err, sizeof(j->err))) {
        j->retryable = true;
        return false;
    }
    if (status == 0) return true;
    snprintf(j->err, sizeof(j->err), "%s exited with status %d:\n%s", what, status, tail);
    return false;
}

static int file_list(const struct job *j, struct file *files) {
    bool proxy = !strcmp(j->in->role, "proxy");
    int n = 0;
    files[n] = (struct file){.remote = proxy ? "proxy" : "backend", .mode = 0755};
    binary_path(files[n].remote, files[n].local, sizeof(files[n].local));
    n++;
    files[n] = (struct file){.remote = proxy ? "bootstrap-proxy.sh" : "bootstrap-backend.sh",
                             .mode = 0755};
    script_path(files[n].remote, files[n].local, sizeof(files[n].local));
    n++;
    files[n] = (struct file){.remote = "bootstrap-service.sh", .mode = 0644};
    script_path(files[n].remote, files[n].local, sizeof(files[n].local));
    n++;
    if (!proxy) return n;
    files[n++] = (struct file){.remote = "proxy.json", .data = j->proxy_json, .mode = 0644};
    files[n++] = (struct file){.remote = "proxy.env", .data = j->proxy_env, .mode = 0600};
    /* A fallback for hosts without cJSON: the bootstrap uses it only then. */
    char lib[PATH_MAX];
    if (realpath(env_or("AWSCTL_CJSON_LIB", AWSCTL_CJSON_LIB), lib) && !access(lib, R_OK)) {
        files[n] = (struct file){.remote = "lib/libcjson.so.1", .mode = 0644};
        copy_str(files[n++].local, sizeof(files[0].local), lib);
    }
    return n;
}

static bool upload_all(struct job *j, struct ssh *s, const char *dir, struct file *files, int n,
                       char *mv, size_t mvlen) {
    size_t w = 0;
    mv[0] = '\0';
    for (int i = 0; i < n; i++) {
        char remote[PATH_MAX + 64];
        snprintf(remote, sizeof(remote), "%s/%s.new", dir, files[i].remote);
        bool ok = files[i].data ? ssh_upload_mem(s, files[i].data, strlen(files[i].data), remote,
                                                 files[i].mode, j->err, sizeof(j->err))
                                : ssh_upload(s, files[i].local, remote, files[i].mode, j->err,
                                             sizeof(j->err));
        if (!ok) {
            j->retryable = true;
            return false;
        }
        /* Renamed into place: a running binary cannot be overwritten (ETXTBSY). */
        w += (size_t)snprintf(mv + w, mvlen - w, "mv -f %s.new %s && ", files[i].remote,
                              files[i].remote);
        if (w >= mvlen) return false;
    }
    return true;
}

static void bootstrap_cmd(const struct job *j, const char *qdir, const char *mv, char *cmd,
                          size_t len) {
    const struct instance *in = j->in;
    bool proxy = !strcmp(in->role, "proxy");
    char mode[64];
    if (!shq(env_or("AWSCTL_SERVICE_MODE", "auto"), mode, sizeof(mode))) strcpy(mode, "auto");
    int n =
        snprintf(cmd, len,
                 "cd %s && %sINSTANCE_ID=%s CLUSTER_NAME=%s BIND_ADDR=%s PORT=%d SERVICE_MODE=%s "
                 "sh ./%s 2>&1",
                 qdir, mv, in->id, proxy ? "proxy" : in->cluster, in->private_ip, APP_PORT, mode,
                 proxy ? "bootstrap-proxy.sh" : "bootstrap-backend.sh");
    if (n < 0 || (size_t)n >= len) cmd[0] = '\0';
}

static void push_one(struct job *j) {
    struct instance *in = j->in;
    char dir[256], qdir[1024], cmd[8192], mv[1024], tail[2048];
    struct file files[6];
    if (!remote_dir(in, dir, sizeof(dir)) || !shq(dir, qdir, sizeof(qdir))) {
        snprintf(j->err, sizeof(j->err), "the remote directory (AWSCTL_REMOTE_DIR) is too long");
        return;
    }
    struct ssh *s =
        ssh_open(in->public_ip, ssh_port(), env_or("AWSCTL_SSH_USER", "ec2-user"),
                 j->c->st->key_path, in->host_key, sizeof(in->host_key), j->err, sizeof(j->err));
    if (!s) return;
    int n = file_list(j, files);
    const char *sub = strcmp(in->role, "proxy") ? "" : "/lib";
    snprintf(cmd, sizeof(cmd),
             "mkdir -p %s%s 2>/dev/null && test -w %s || "
             "sudo -n install -d -o \"$(id -un)\" -g \"$(id -gn)\" %s %s%s",
             qdir, sub, qdir, qdir, qdir, sub);
    if (run(j, s, cmd, "creating the remote directory", tail, sizeof(tail)) &&
        upload_all(j, s, dir, files, n, mv, sizeof(mv))) {
        bootstrap_cmd(j, qdir, mv, cmd, sizeof(cmd));
        j->ok = run(j, s, cmd, files[1].remote, tail, sizeof(tail));
        /* The bootstrap's last line says what it started. */
        char *end = tail + strlen(tail);
        while (end > tail && end[-1] == '\n')
            *--end = '\0';
        char *last = strrchr(tail, '\n');
        copy_str(j->summary, sizeof(j->summary), last ? last + 1 : tail);
    }
    ssh_close(s);
}

/* Pushes to one instance; a session that broke midway gets one more try
 * (every step can be repeated: uploads are renamed into place, the
 * bootstraps are idempotent). */
static void *push_thread(void *arg) {
    struct job *j = arg;
    push_one(j);
    if (!j->ok && j->retryable) {
        say("%s: %s; trying again", j->in->id, j->err);
        j->retryable = false;
        sleep(1);
        push_one(j);
    }
    return NULL;
}

/* Pushes to the instances of one role at once, a thread each. */
static bool push_role(struct job *jobs, int n, const char *role) {
    for (int i = 0; i < n; i++) {
        struct job *j = &jobs[i];
        if (strcmp(j->in->role, role)) continue;
        j->threaded = pthread_create(&j->tid, NULL, push_thread, j) == 0;
        if (!j->threaded) push_thread(j);
    }
    bool ok = true;
    for (int i = 0; i < n; i++) {
        struct job *j = &jobs[i];
        if (strcmp(j->in->role, role)) continue;
        if (j->threaded) pthread_join(j->tid, NULL);
        if (j->ok)
            say("%s %-8s %-8s %s: %s", j->in->id, j->in->role, j->in->cluster, j->in->public_ip,
                j->summary);
        else
            fail("%s (%s %s): %s", j->in->id, j->in->role, j->in->cluster, j->err);
        ok = ok && j->ok;
    }
    return ok;
}

static void free_all(struct job *jobs, char *json, char *env) {
    free(jobs);
    free(json);
    free(env);
}

bool push_all(struct ctl *c) {
    struct state *st = c->st;
    struct job *jobs = calloc((size_t)st->ninst, sizeof(*jobs));
    char *json = NULL, *env = proxy_env();
    for (int i = 0; i < st->ninst; i++)
        if (!strcmp(st->inst[i].role, "proxy")) json = proxy_config(st, &st->inst[i]);
    if (!jobs || !env || !json) {
        fail(json ? "out of memory" : "no proxy instance in the deployment");
        free_all(jobs, json, env);
        return false;
    }
    say("pushing to %d instance(s) over SSH", st->ninst);
    for (int i = 0; i < st->ninst; i++)
        jobs[i] = (struct job){.c = c, .in = &st->inst[i], .proxy_json = json, .proxy_env = env};
    /* The backends first, so that the proxy starts with them answering. */
    bool ok = push_role(jobs, st->ninst, "backend");
    ok = push_role(jobs, st->ninst, "proxy") && ok;
    free_all(jobs, json, env);
    return state_save(st) && ok;
}
