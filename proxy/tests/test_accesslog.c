/* The access log: line format and escaping, concurrent writers (run by the
 * ASan and ThreadSanitizer builds), rotation, the backlog bound and write
 * errors. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "testing.h"

static char dir[64];
static const char *const keys[] = {"time",         "client",       "method",     "path",
                                   "status",       "cluster",      "backend",    "bytes_in",
                                   "bytes_out",    "duration_us",  "backend_us", "request_id",
                                   "desync_class", "desync_reason"};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static char *tmp_path(const char *name) {
    static char paths[16][128];
    static int next;
    char *p = paths[next++ % 16];
    snprintf(p, 128, "%s/%s", dir, name);
    return p;
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap + 1);
    size_t r;
    while ((r = fread(s + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) s = realloc(s, (cap *= 2) + 1);
    }
    fclose(f);
    s[n] = 0;
    *len = n;
    return s;
}

/* Splits the file into lines (the text is modified in place); every line must
 * end with '\n'. Returns the count, -1 when the file is missing or cut. */
static int split_lines(char *s, size_t len, char ***out) {
    int n = 0, cap = 1024;
    char **lines = malloc(sizeof(*lines) * (size_t)cap);
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\n') continue;
        s[i] = 0;
        if (n == cap) lines = realloc(lines, sizeof(*lines) * (size_t)(cap *= 2));
        lines[n++] = s + start;
        start = i + 1;
    }
    *out = lines;
    return start == len ? n : -1;
}

struct file_lines {
    char *text;
    char **lines;
    int n;
};

static struct file_lines read_lines(const char *path) {
    struct file_lines fl = {0};
    size_t len;
    fl.text = slurp(path, &len);
    fl.n = fl.text ? split_lines(fl.text, len, &fl.lines) : -1;
    return fl;
}

static void free_lines(struct file_lines *fl) {
    free(fl->text);
    free(fl->lines);
}

/* Strict UTF-8 (RFC 3629), written independently of the log's check. */
static int valid_utf8(const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s, cp, n;
        if (c < 0x80) {
            s++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            cp = c & 0x1f, n = 1;
        } else if ((c & 0xf0) == 0xe0) {
            cp = c & 0x0f, n = 2;
        } else if ((c & 0xf8) == 0xf0) {
            cp = c & 0x07, n = 3;
        } else {
            return 0;
        }
        for (unsigned i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i] & 0x3f);
        }
        static const unsigned min[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        s += n + 1;
    }
    return 1;
}

/* Parses a line, checks it is valid UTF-8 with every key in order. */
static cJSON *parse_line(const char *line) {
    CHECK(valid_utf8(line));
    cJSON *j = cJSON_Parse(line);
    CHECK(j != NULL);
    if (!j) {
        fprintf(stderr, "bad line: %s\n", line);
        return NULL;
    }
    int i = 0, in_order = 1;
    for (cJSON *c = j->child; c; c = c->next, i++)
        if (i >= (int)NKEYS || strcmp(c->string, keys[i])) in_order = 0;
    CHECK(in_order && i == (int)NKEYS);
    return j;
}

static const char *jstr(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -12345;
}

static int jnull(const cJSON *j, const char *key) {
    return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, key));
}

static struct alog_entry entry(const char *path, const char *id) {
    return (struct alog_entry){.time_us = 1795819801123456,
                               .client = "10.0.0.7",
                               .method = "GET",
                               .path = path,
                               .path_len = path ? strlen(path) : 0,
                               .status = 200,
                               .cluster = "api",
                               .backend = "127.0.0.1:9001",
                               .bytes_in = 120,
                               .bytes_out = 4096,
                               .duration_us = 1500,
                               .backend_us = 1200,
                               .request_id = id,
                               .desync_class = "compliant"};
}

static struct alog *open_log(const char *path, int nthreads) {
    char err[256] = "";
    struct alog *l = alog_open(path, nthreads, err, sizeof(err));
    CHECK(l != NULL);
    if (!l) fprintf(stderr, "alog_open: %s\n", err);
    return l;
}

/* One line per entry, through a single buffer. */
static struct file_lines log_entries(const char *name, const struct alog_entry *e, int n) {
    const char *path = tmp_path(name);
    struct alog *l = open_log(path, 1);
    if (!l) return (struct file_lines){.n = -1};
    for (int i = 0; i < n; i++)
        alog_write(alog_thread_buf(l, 0), &e[i]);
    alog_close(l);
    return read_lines(path);
}

static void test_fields(void) {
    struct alog_entry e[3];
    e[0] = entry("/v1/items?id=3", "req-1");
    e[1] = (struct alog_entry){.time_us = 1795819801123456,
                               .client = "::1",
                               .status = 0,
                               .cluster = "none",
                               .bytes_in = 17,
                               .duration_us = 3,
                               .backend_us = -1};
    e[2] = entry("/x", NULL);
    e[2].time_us = 0;
    e[2].bytes_out = UINT64_MAX;
    e[2].status = 502;
    e[2].backend_us = 0;
    struct file_lines fl = log_entries("fields.log", e, 3);
    CHECK(fl.n == 3);
    if (fl.n != 3) return free_lines(&fl);
    CHECK_STR(fl.lines[0],
              "{\"time\":\"2026-11-27T22:50:01.123Z\",\"client\":\"10.0.0.7\",\"method\":\"GET\","
              "\"path\":\"/v1/items?id=3\",\"status\":200,\"cluster\":\"api\",\"backend\":"
              "\"127.0.0.1:9001\",\"bytes_in\":120,\"bytes_out\":4096,\"duration_us\":1500,"
              "\"backend_us\":1200,\"request_id\":\"req-1\",\"desync_class\":\"compliant\","
              "\"desync_reason\":null}");
    cJSON *j = parse_line(fl.lines[0]);
    cJSON_Delete(j);
    j = parse_line(fl.lines[1]);
    if (j) {
        CHECK(jnull(j, "method"));
        CHECK(jnull(j, "path"));
        CHECK(jnull(j, "backend"));
        CHECK(jnull(j, "backend_us"));
        CHECK(jnull(j, "request_id"));
        CHECK(jnum(j, "status") == 0);
        CHECK(jnum(j, "bytes_out") == 0);
        CHECK_STR(jstr(j, "cluster"), "none");
        CHECK_STR(jstr(j, "client"), "::1");
    }
    cJSON_Delete(j);
    j = parse_line(fl.lines[2]);
    if (j) {
        CHECK_STR(jstr(j, "time"), "1970-01-01T00:00:00.000Z");
        CHECK(jnum(j, "backend_us") == 0);
        CHECK(jnull(j, "request_id"));
        CHECK(strstr(fl.lines[2], "\"bytes_out\":18446744073709551615,") != NULL);
    }
    cJSON_Delete(j);
    free_lines(&fl);
}

/* The time field against gmtime_r, over dates that test the calendar. */
static void test_times(void) {
    static const int64_t us[] = {
        0,
        59999999,
        951782400000000,  /* 2000-02-29 */
        951868800001000,  /* 2000-03-01 */
        4107542400999999, /* 2100-03-01 */
        1709164800500000, /* 2024-02-29 */
        1735689599999000, /* 2024-12-31T23:59:59.999 */
        1735689600000000,
        1795819801123456, /* the same second twice: the cached date */
        1795819801999999,
        253402300799999999, /* 9999-12-31T23:59:59.999 */
    };
    enum { N = sizeof(us) / sizeof(us[0]) };
    struct alog_entry e[N];
    for (int i = 0; i < N; i++) {
        e[i] = entry("/", NULL);
        e[i].time_us = us[i];
    }
    struct file_lines fl = log_entries("times.log", e, N);
    CHECK(fl.n == N);
    for (int i = 0; i < fl.n && i < N; i++) {
        time_t t = (time_t)(us[i] / 1000000);
        struct tm tm;
        gmtime_r(&t, &tm);
        char want[64];
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(us[i] % 1000000 / 1000));
        cJSON *j = parse_line(fl.lines[i]);
        if (j) CHECK_STR(jstr(j, "time"), want);
        cJSON_Delete(j);
    }
    free_lines(&fl);
}

static void test_escaping(void) {
    static char longest[ALOG_PATH_MAX + 100], nasty_long[ALOG_PATH_MAX + 10];
    memset(longest, 'a', sizeof(longest) - 1);
    memset(nasty_long, 0xff, sizeof(nasty_long) - 1);
    memcpy(nasty_long + ALOG_PATH_MAX - 2, "\xe2\x82\xac", 3); /* € cut by the cap */
    struct {
        const char *in;
        size_t len;
        const char *raw;  /* must occur in the line */
        const char *want; /* the path cJSON reads back */
    } cases[] = {
        {"/a\"b", 0, "\"/a\\\"b\"", "/a\"b"},
        {"/a\\b", 0, "\"/a\\\\b\"", "/a\\b"},
        {"/a\nb\r\t", 0, "\"/a\\nb\\r\\t\"", "/a\nb\r\t"},
        {"/\x01\x1f\x7f", 0, "\"/\\u0001\\u001f\\u007f\"", "/\x01\x1f\x7f"},
        {"/\xff\xfe", 0, "\"/\\u00ff\\u00fe\"", "/\xc3\xbf\xc3\xbe"},
        {"/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80", 0,
         "\"/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80\"",
         "/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80"},
        {"/\xc0\xaf", 0, "\"/\\u00c0\\u00af\"", "/\xc3\x80\xc2\xaf"},        /* overlong */
        {"/\xed\xa0\x80", 0, "\"/\\u00ed\\u00a0\\u0080\"", NULL},            /* surrogate */
        {"/\xf4\x90\x80\x80", 0, "\"/\\u00f4\\u0090\\u0080\\u0080\"", NULL}, /* > U+10FFFF */
        {"/\xe2\x82", 0, "\"/\\u00e2\\u0082\"", "/\xc3\xa2\xc2\x82"},        /* cut short */
        {"/a\0b", 4, "\"/a\\u0000b\"", NULL},
        {longest, 0, NULL, NULL},
        {nasty_long, 0, NULL, NULL},
    };
    enum { N = sizeof(cases) / sizeof(cases[0]) };
    struct alog_entry e[N];
    for (int i = 0; i < N; i++) {
        e[i] = entry(cases[i].in, "\"id\\\n");
        if (cases[i].len) e[i].path_len = cases[i].len;
        e[i].client = "\x01";
    }
    struct file_lines fl = log_entries("escape.log", e, N);
    CHECK(fl.n == N);
    for (int i = 0; i < fl.n && i < N; i++) {
        if (cases[i].raw && !strstr(fl.lines[i], cases[i].raw)) {
            fprintf(stderr, "case %d: %s lacks %s\n", i, fl.lines[i], cases[i].raw);
            CHECK(0);
        }
        cJSON *j = parse_line(fl.lines[i]);
        if (!j) continue;
        if (cases[i].want) CHECK_STR(jstr(j, "path"), cases[i].want);
        CHECK_STR(jstr(j, "request_id"), "\"id\\\n");
        CHECK_STR(jstr(j, "client"), "\x01");
        cJSON_Delete(j);
    }
    if (fl.n == N) {
        cJSON *j = cJSON_Parse(fl.lines[N - 2]);
        const char *p = jstr(j, "path");
        CHECK(p && strlen(p) == ALOG_PATH_MAX && !strncmp(p, longest, ALOG_PATH_MAX));
        cJSON_Delete(j);
        /* 4094 bytes 0xff, then the first two bytes of the cut € */
        CHECK(strstr(fl.lines[N - 1], "\\u00ff\\u00e2\\u0082\",\"status\"") != NULL);
    }
    free_lines(&fl);
}

/* ---- concurrent writers ---- */

#define THREADS 4
#define K       10000

static struct alog *shared_log;

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    struct alog_buf *b = alog_thread_buf(shared_log, id);
    char rid[32], path[64];
    for (int i = 0; i < K; i++) {
        snprintf(rid, sizeof(rid), "t%d-%d", id, i);
        snprintf(path, sizeof(path), "/w/%d/%.*s", i, i % 30,
                 "\"\\\n\x01\xff-------------------------");
        struct alog_entry e = entry(path, rid);
        e.bytes_in = (uint64_t)id;
        e.bytes_out = (uint64_t)i;
        alog_write(b, &e);
        if (i % 16 == 0) alog_tick(b, now_ms());
    }
    return NULL;
}

static void test_concurrent(void) {
    const char *path = tmp_path("concurrent.log");
    shared_log = open_log(path, THREADS);
    if (!shared_log) return;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* Well under the backlog bound, so nothing may be dropped. */
    CHECK(alog_dropped(shared_log) == 0);
    alog_close(shared_log);

    struct file_lines fl = read_lines(path);
    CHECK(fl.n == THREADS * K);
    int next[THREADS] = {0}, bad = 0;
    for (int i = 0; i < fl.n; i++) {
        cJSON *j = parse_line(fl.lines[i]);
        if (!j) {
            bad++;
            continue;
        }
        int id = (int)jnum(j, "bytes_in"), seq = (int)jnum(j, "bytes_out");
        char rid[32];
        snprintf(rid, sizeof(rid), "t%d-%d", id, seq);
        const char *got = jstr(j, "request_id");
        /* a thread's lines come out in the order it wrote them */
        if (id < 0 || id >= THREADS || seq != next[id] || !got || strcmp(got, rid))
            bad++;
        else
            next[id]++;
        cJSON_Delete(j);
    }
    CHECK(bad == 0);
    for (int i = 0; i < THREADS; i++)
        CHECK(next[i] == K);
    free_lines(&fl);
}

/* ---- rotation ---- */

/* Lines r<from>..r<to-1> over two threads' buffers, handed over when tick. */
static void write_ids(struct alog *l, int from, int to, int tick) {
    char rid[32];
    for (int i = from; i < to; i++) {
        snprintf(rid, sizeof(rid), "r%d", i);
        struct alog_entry e = entry("/r", rid);
        alog_write(alog_thread_buf(l, i % 2), &e);
    }
    if (!tick) return;
    alog_tick(alog_thread_buf(l, 0), ALOG_FLUSH_NOW);
    alog_tick(alog_thread_buf(l, 1), ALOG_FLUSH_NOW);
}

/* The file holds each id of [from, to) once; the two threads' chunks
 * interleave, so only the set matters. */
static int ids_are(const char *path, int from, int to) {
    struct file_lines fl = read_lines(path);
    int ok = fl.n == to - from;
    char *seen = calloc((size_t)(to - from + 1), 1);
    for (int i = 0; ok && i < fl.n; i++) {
        cJSON *j = cJSON_Parse(fl.lines[i]);
        const char *got = jstr(j, "request_id");
        int id = got && got[0] == 'r' ? atoi(got + 1) : -1;
        ok = id >= from && id < to && !seen[id - from]++;
        cJSON_Delete(j);
    }
    free(seen);
    if (!ok) fprintf(stderr, "%s: %d lines, want ids %d..%d\n", path, fl.n, from, to - 1);
    free_lines(&fl);
    return ok;
}

static int wait_exists(const char *path) {
    struct stat st;
    for (int i = 0; i < 500; i++) {
        if (stat(path, &st) == 0) return 1;
        sleep_ms(10);
    }
    return 0;
}

static void test_rotation(void) {
    const char *path = tmp_path("rot.log"), *old1 = tmp_path("rot.log.1"),
               *old2 = tmp_path("rot.log.2");
    struct alog *l = open_log(path, 2);
    if (!l) return;
    write_ids(l, 0, 300, 1);
    CHECK(rename(path, old1) == 0);
    alog_reopen(l);
    /* the writer reopens at once when idle, not at the next line */
    CHECK(wait_exists(path));
    write_ids(l, 300, 500, 1);
    /* lines still in a worker's buffer at the reopen go to the new file */
    write_ids(l, 500, 510, 0);
    CHECK(rename(path, old2) == 0);
    alog_reopen(l);
    write_ids(l, 510, 520, 0);
    alog_close(l);
    CHECK(ids_are(old1, 0, 300));
    CHECK(ids_are(old2, 300, 500));
    CHECK(ids_are(path, 500, 520));
}

/* Runs f with stderr sent to a file; returns how often needle occurs in what
 * it wrote there. */
static int count_in_stderr(void (*f)(void *), void *arg, const char *needle) {
    const char *path = tmp_path("stderr.txt");
    fflush(stderr);
    int saved = dup(STDERR_FILENO), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDERR_FILENO);
    close(fd);
    f(arg);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    size_t len;
    char *text = slurp(path, &len);
    int n = 0;
    for (char *p = text; p && (p = strstr(p, needle)); p++)
        n++;
    free(text);
    unlink(path);
    return n;
}

/* The new file cannot be opened: warn, and keep writing to the old one. */
static void reopen_into_missing_dir(void *arg) {
    char **p = arg; /* the log's directory, where it is moved to */
    struct alog *l = open_log(p[2], 2);
    if (!l) return;
    write_ids(l, 0, 100, 1);
    CHECK(rename(p[0], p[1]) == 0);
    alog_reopen(l);
    write_ids(l, 100, 150, 1);
    alog_close(l);
}

static void test_reopen_fails(void) {
    char sub[128], moved[128], path[160], moved_path[160];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    snprintf(moved, sizeof(moved), "%s/sub.moved", dir);
    snprintf(path, sizeof(path), "%s/a.log", sub);
    snprintf(moved_path, sizeof(moved_path), "%s/a.log", moved);
    CHECK(mkdir(sub, 0755) == 0);
    char *arg[] = {sub, moved, path};
    CHECK(count_in_stderr(reopen_into_missing_dir, arg, "reopen failed") == 1);
    CHECK(ids_are(moved_path, 0, 150));
    unlink(moved_path);
    rmdir(moved);
}

/* ---- timing, errors, bounds ---- */

static void test_tick_age(void) {
    const char *path = tmp_path("age.log");
    struct alog *l = open_log(path, 1);
    if (!l) return;
    struct alog_buf *b = alog_thread_buf(l, 0);
    struct alog_entry e = entry("/age", "a");
    alog_tick(b, 1000);
    alog_write(b, &e);
    alog_tick(b, 1050);
    sleep_ms(50);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 0);
    alog_tick(b, 1100);
    int seen = 0;
    for (int i = 0; i < 500 && !seen; i++) {
        if (stat(path, &st) == 0 && st.st_size > 0)
            seen = 1;
        else
            sleep_ms(10);
    }
    CHECK(seen);
    alog_close(l);
    struct file_lines fl = read_lines(path);
    CHECK(fl.n == 1);
    free_lines(&fl);
}

static void test_open_errors(void) {
    char err[256] = "";
    const char *bad = "/nonexistent-dir-alog/x/access.log";
    CHECK(alog_open(bad, 2, err, sizeof(err)) == NULL);
    CHECK(strstr(err, bad) != NULL);
    CHECK(alog_open(tmp_path("z.log"), 0, err, sizeof(err)) == NULL);
    struct alog *l = open_log("-", 1);
    CHECK(alog_thread_buf(l, 1) == NULL && alog_thread_buf(l, -1) == NULL);
    alog_reopen(l);
    alog_close(l);
    CHECK(fcntl(STDOUT_FILENO, F_GETFD) != -1); /* stdout stays open */
    alog_close(NULL);
    struct alog_entry e = entry("/", NULL);
    alog_write(NULL, &e);
    alog_tick(NULL, 0);
    CHECK(alog_thread_buf(NULL, 0) == NULL && alog_dropped(NULL) == 0);
}

/* Writes to /dev/full fail: one warning for many chunks, the lines counted. */
static void write_to_full(void *arg) {
    uint64_t *dropped = arg;
    struct alog *l = open_log("/dev/full", 1);
    if (!l) return;
    struct alog_buf *b = alog_thread_buf(l, 0);
    struct alog_entry e = entry("/full", "f");
    for (int chunk = 0; chunk < 5; chunk++) {
        for (int i = 0; i < 10; i++)
            alog_write(b, &e);
        alog_tick(b, ALOG_FLUSH_NOW);
    }
    for (int i = 0; i < 500 && alog_dropped(l) < 50; i++)
        sleep_ms(10);
    *dropped = alog_dropped(l);
    alog_close(l);
}

static void test_write_errors(void) {
    if (access("/dev/full", W_OK) != 0) return;
    uint64_t dropped = 0;
    CHECK(count_in_stderr(write_to_full, &dropped, "write failed") == 1);
    CHECK(dropped == 50);
}

static int fifo_rd;
static long fifo_lines;

static void *drain_fifo(void *arg) {
    (void)arg;
    char buf[65536];
    ssize_t n;
    while ((n = read(fifo_rd, buf, sizeof(buf))) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (ssize_t i = 0; i < n; i++)
            fifo_lines += buf[i] == '\n';
    }
    return NULL;
}

/* Nobody reads the FIFO: the writer blocks, the backlog grows to its bound,
 * then lines are dropped while alog_write keeps returning. */
static void test_backlog_bound(void) {
    const char *path = tmp_path("fifo");
    CHECK(mkfifo(path, 0600) == 0);
    fifo_rd = open(path, O_RDONLY | O_NONBLOCK);
    CHECK(fifo_rd >= 0);
    struct alog *l = open_log(path, 1);
    if (!l || fifo_rd < 0) return;
    static char big[ALOG_PATH_MAX + 1];
    memset(big, 'p', ALOG_PATH_MAX);
    struct alog_entry e = entry(big, "b");
    struct alog_buf *b = alog_thread_buf(l, 0);
    const int n = 6000; /* ~26 MB, over the 16 MiB bound */
    for (int i = 0; i < n; i++) {
        alog_write(b, &e);
        if (i % 8 == 0) alog_tick(b, ALOG_FLUSH_NOW);
    }
    uint64_t dropped = alog_dropped(l);
    CHECK(dropped > 0 && dropped < (uint64_t)n);
    fcntl(fifo_rd, F_SETFL, 0);
    pthread_t t;
    pthread_create(&t, NULL, drain_fifo, NULL);
    alog_close(l);
    pthread_join(t, NULL);
    close(fifo_rd);
    CHECK(fifo_lines == n - (long)dropped);
    unlink(path);
}

static void remove_dir(void) {
    static const char *const names[] = {"fields.log",     "times.log", "escape.log",
                                        "concurrent.log", "rot.log",   "rot.log.1",
                                        "rot.log.2",      "age.log",   "z.log"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unlink(tmp_path(names[i]));
    rmdir(dir);
}

int main(void) {
    snprintf(dir, sizeof(dir), "/tmp/alog-test-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_fields();
    test_times();
    test_escaping();
    test_concurrent();
    test_rotation();
    test_reopen_fails();
    test_tick_age();
    test_open_errors();
    test_write_errors();
    test_backlog_bound();
    remove_dir();
    return test_summary();
}
