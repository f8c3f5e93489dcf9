/* CSV output of loadgen (RFC 4180): the per-request file and the summary
 * file. A field with a comma, a double quote, CR or LF is quoted, its quotes
 * doubled; anything else is written as it is. */
#ifndef LOADGEN_CSV_H
#define LOADGEN_CSV_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CSV_REQUEST_HEADER "seq,start_us,latency_us,status,bytes,instance_id,error"
#define CSV_SUMMARY_HEADER                                                                         \
    "label,url,requests,ok,errors,duration_s,rps,mean_ms,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,"     \
    "mbytes_s"

/* s as one CSV field, into out (NUL-terminated, cut at cap - 1 bytes but
 * never inside a doubled quote or without its closing quote); returns the
 * length it needs, as snprintf does. */
size_t csv_escape(char *out, size_t cap, const char *s);
/* Writes s as one CSV field. */
void csv_put_field(FILE *f, const char *s);

struct csv_request_row {
    uint64_t seq, start_us, latency_us, bytes;
    int status;
    const char *instance_id; /* "" when none */
    const char *error;       /* "" when none */
};

void csv_write_request_header(FILE *f);
void csv_write_request(FILE *f, const struct csv_request_row *r);

struct csv_summary {
    const char *label, *url;
    uint64_t requests, ok, errors;
    double duration_s, rps, mean_ms, p50_ms, p90_ms, p99_ms, p999_ms, max_ms, mbytes_s;
};

/* Appends one row to the summary file at path, with the header first when
 * the file is new or empty. 0, or -1 with errno set. */
int csv_append_summary(const char *path, const struct csv_summary *s);

#endif
