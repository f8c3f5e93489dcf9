/* The CSV writer: escaping, the per-request rows, the summary file with its
 * header written once. */
#define _GNU_SOURCE
#include "csv.h"
#include "testing.h"

#include <stdlib.h>
#include <unistd.h>

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static char *stream_text(FILE *f) {
    static char buf[65536];
    fflush(f);
    rewind(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    return buf;
}

static void test_escape(void) {
    char out[128];
    CHECK(csv_escape(out, sizeof(out), "plain") == 5);
    CHECK_STR(out, "plain");
    CHECK(csv_escape(out, sizeof(out), "") == 0);
    CHECK_STR(out, "");
    CHECK(csv_escape(out, sizeof(out), "connect: Connection refused") == 27);
    CHECK_STR(out, "connect: Connection refused");
    CHECK(csv_escape(out, sizeof(out), "a,b") == 5);
    CHECK_STR(out, "\"a,b\"");
    CHECK(csv_escape(out, sizeof(out), "say \"hi\"") == 12);
    CHECK_STR(out, "\"say \"\"hi\"\"\"");
    csv_escape(out, sizeof(out), "two\nlines");
    CHECK_STR(out, "\"two\nlines\"");
    csv_escape(out, sizeof(out), "cr\r");
    CHECK_STR(out, "\"cr\r\"");
    csv_escape(out, sizeof(out), "\"");
    CHECK_STR(out, "\"\"\"\"");
    /* cut short: still a closed field, never half a doubled quote */
    CHECK(csv_escape(out, 6, "a,\"bcdef") == 11);
    CHECK_STR(out, "\"a,\"");
    CHECK(csv_escape(out, 7, "a,\"bcdef") == 11);
    CHECK_STR(out, "\"a,\"\"\"");
    CHECK(csv_escape(out, 3, "abcdef") == 6);
    CHECK_STR(out, "ab");
    CHECK(csv_escape(out, 2, "a,b") == 5);
    CHECK_STR(out, "");
    CHECK(csv_escape(NULL, 0, "a,b") == 5);
}

static void test_rows(void) {
    FILE *f = tmpfile();
    CHECK(f != NULL);
    if (!f) return;
    csv_write_request_header(f);
    struct csv_request_row ok = {.seq = 0,
                                 .start_us = 12,
                                 .latency_us = 345,
                                 .status = 200,
                                 .bytes = 87,
                                 .instance_id = "b1",
                                 .error = ""};
    struct csv_request_row bad = {.seq = 18446744073709551615ull,
                                  .start_us = 1000000,
                                  .latency_us = 0,
                                  .status = 0,
                                  .bytes = 0,
                                  .instance_id = NULL,
                                  .error = "connect: Connection refused"};
    struct csv_request_row odd = {.seq = 7,
                                  .status = 502,
                                  .instance_id = "x,\"y\"",
                                  .error = "parse: HPE_INVALID_STATUS, \"bad\""};
    csv_write_request(f, &ok);
    csv_write_request(f, &bad);
    csv_write_request(f, &odd);
    CHECK_STR(stream_text(f),
              CSV_REQUEST_HEADER "\n"
                                 "0,12,345,200,87,b1,\n"
                                 "18446744073709551615,1000000,0,0,0,,connect: Connection refused\n"
                                 "7,0,0,502,0,\"x,\"\"y\"\"\",\"parse: HPE_INVALID_STATUS, "
                                 "\"\"bad\"\"\"\n");
    fclose(f);
}

static void test_summary_file(void) {
    char path[] = "/tmp/loadgen-test-csv-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd); /* exists, empty: the header comes first */
    struct csv_summary s = {.label = "run, \"one\"",
                            .url = "http://127.0.0.1:8000/",
                            .requests = 500,
                            .ok = 498,
                            .errors = 2,
                            .duration_s = 1.5,
                            .rps = 332.0,
                            .mean_ms = 1.25,
                            .p50_ms = 1,
                            .p90_ms = 2,
                            .p99_ms = 3.5,
                            .p999_ms = 4,
                            .max_ms = 10.0625,
                            .mbytes_s = 0.1};
    CHECK(csv_append_summary(path, &s) == 0);
    s.label = "two";
    s.requests = 1;
    CHECK(csv_append_summary(path, &s) == 0);
    const char *want =
        CSV_SUMMARY_HEADER "\n"
                           "\"run, \"\"one\"\"\",http://127.0.0.1:8000/,500,498,2,"
                           "1.500,332.0,1.250,1.000,2.000,3.500,4.000,10.062,0.100\n"
                           "two,http://127.0.0.1:8000/,1,498,2,"
                           "1.500,332.0,1.250,1.000,2.000,3.500,4.000,10.062,0.100\n";
    CHECK_STR(slurp(path), want);
    unlink(path);
    /* a new file gets the header too */
    CHECK(csv_append_summary(path, &s) == 0);
    const char *text = slurp(path);
    CHECK(text && !strncmp(text, CSV_SUMMARY_HEADER "\ntwo,", strlen(CSV_SUMMARY_HEADER) + 5));
    CHECK(text && strstr(text + 1, "label,") == NULL);
    unlink(path);
    /* a file that cannot be written */
    CHECK(csv_append_summary("/nonexistent-dir/x.csv", &s) == -1);
}

int main(void) {
    test_escape();
    test_rows();
    test_summary_file();
    return test_summary();
}
