#define _GNU_SOURCE
#include "csv.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

static int needs_quotes(const char *s) {
    return s[strcspn(s, ",\"\r\n")] != 0;
}

size_t csv_escape(char *out, size_t cap, const char *s) {
    int quote = needs_quotes(s);
    size_t need = strlen(s) + (quote ? 2 : 0);
    if (quote)
        for (const char *p = s; *p; p++)
            need += *p == '"';
    if (!cap) return need;
    size_t n = 0, room = cap - 1;
    if (quote) {
        /* room for the opening and closing quotes, else an empty field */
        if (room < 2) {
            out[0] = 0;
            return need;
        }
        room--; /* the closing quote */
        out[n++] = '"';
    }
    for (const char *p = s; *p; p++) {
        size_t w = (quote && *p == '"') ? 2 : 1;
        if (n + w > room) break;
        if (w == 2) out[n++] = '"';
        out[n++] = *p;
    }
    if (quote) out[n++] = '"';
    out[n] = 0;
    return need;
}

void csv_put_field(FILE *f, const char *s) {
    if (!needs_quotes(s)) {
        fputs_unlocked(s, f);
        return;
    }
    putc_unlocked('"', f);
    for (const char *p = s; *p; p++) {
        if (*p == '"') putc_unlocked('"', f);
        putc_unlocked(*p, f);
    }
    putc_unlocked('"', f);
}

/* Decimal digits of v, then a comma: the hot path when writing millions of
 * rows, where fprintf would cost more than the rest. */
static void put_u64(FILE *f, uint64_t v) {
    char buf[24];
    char *p = buf + sizeof(buf);
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    fwrite_unlocked(p, 1, (size_t)(buf + sizeof(buf) - p), f);
}

void csv_write_request_header(FILE *f) {
    fputs(CSV_REQUEST_HEADER "\n", f);
}

void csv_write_request(FILE *f, const struct csv_request_row *r) {
    put_u64(f, r->seq);
    putc_unlocked(',', f);
    put_u64(f, r->start_us);
    putc_unlocked(',', f);
    put_u64(f, r->latency_us);
    putc_unlocked(',', f);
    put_u64(f, r->status > 0 ? (uint64_t)r->status : 0);
    putc_unlocked(',', f);
    put_u64(f, r->bytes);
    putc_unlocked(',', f);
    csv_put_field(f, r->instance_id ? r->instance_id : "");
    putc_unlocked(',', f);
    csv_put_field(f, r->error ? r->error : "");
    putc_unlocked('\n', f);
}

int csv_append_summary(const char *path, const struct csv_summary *s) {
    FILE *f = fopen(path, "a");
    if (!f) return -1;
    struct stat st;
    if (fstat(fileno(f), &st) < 0) goto fail;
    if (st.st_size == 0) fputs(CSV_SUMMARY_HEADER "\n", f);
    csv_put_field(f, s->label ? s->label : "");
    putc(',', f);
    csv_put_field(f, s->url ? s->url : "");
    fprintf(f, ",%llu,%llu,%llu,%.3f,%.1f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f\n",
            (unsigned long long)s->requests, (unsigned long long)s->ok,
            (unsigned long long)s->errors, s->duration_s, s->rps, s->mean_ms, s->p50_ms, s->p90_ms,
            s->p99_ms, s->p999_ms, s->max_ms, s->mbytes_s);
    if (ferror(f)) goto fail;
    return fclose(f) == 0 ? 0 : -1;
fail:;
    int e = errno;
    fclose(f);
    errno = e ? e : EIO;
    return -1;
}
