/* Request/response head parsing, the smuggling checks, and head rewriting. */
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "testing.h"

static int parse_req(struct http_msg *m, const char *head) {
    http_msg_init(m, HTTP_REQUEST, 100);
    return http_parse_head(m, head, strlen(head), 0);
}

/* HTTP_HEAD_DONE, HTTP_NEED_MORE, or the status a refused head gets. */
static int req_status(const char *head) {
    struct http_msg m;
    int r = parse_req(&m, head);
    if (r == HTTP_REFUSED) r = m.refuse_status;
    http_msg_free(&m);
    return r;
}

static char *rewrite(const char *head, size_t strip) {
    struct http_msg m;
    struct sbuf out = {0};
    if (parse_req(&m, head) != HTTP_HEAD_DONE) {
        http_msg_free(&m);
        return NULL;
    }
    struct forward_info fi = {
        .client_ip = "10.1.2.3", .listen_port = 8000, .request_id = "abc123", .strip_len = strip};
    http_write_request(&out, &m, &fi);
    http_msg_free(&m);
    return out.data;
}

static void test_smuggling_refused(void) {
    CHECK(req_status("GET / HTTP/1.1\r\nHost: a\r\n\r\n") == HTTP_HEAD_DONE);
    CHECK(req_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n") == 400);
    CHECK(req_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                     "Content-Length: 6\r\n\r\n") == 400);
    CHECK(req_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n") == 400); /* obs-fold */
    CHECK(req_status("GET / HTTP/1.1\r\nHost : a\r\n\r\n") == 400);
    CHECK(req_status("GET / HTTP/1.1\r\nX: y\r\n\r\n") == 400); /* no Host */
    CHECK(req_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400);
    CHECK(req_status("GET / HTTP/1.0\r\n\r\n") == HTTP_HEAD_DONE); /* 1.0 needs no Host */
    CHECK(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") ==
          400);
    CHECK(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n") ==
          400);
    CHECK(req_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") == 400);
    CHECK(req_status("GET / HTTP/2.0\r\nHost: a\r\n\r\n") == 505);
    CHECK(req_status("GET / HTTP/1.1\nHost: a\n\n") == 400);
    CHECK(req_status("G@T / HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
}

static void test_framing(void) {
    struct http_msg m;
    CHECK(parse_req(&m, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n") ==
          HTTP_HEAD_DONE);
    CHECK(m.framing == BODY_LENGTH && m.content_length == 12 && m.keep_alive);
    http_msg_free(&m);
    CHECK(parse_req(&m, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n") ==
          HTTP_HEAD_DONE);
    CHECK(m.framing == BODY_CHUNKED);
    const char body[] = "5\r\nhello\r\n0\r\n\r\nGET /next";
    size_t used = 0;
    struct sbuf out = {0};
    CHECK(http_dechunk(&m, body, strlen(body), &used, &out, 1) == HTTP_BODY_DONE);
    CHECK(used == strlen("5\r\nhello\r\n0\r\n\r\n"));
    CHECK(out.len == used && !memcmp(out.data, body, used));
    sbuf_free(&out);
    http_msg_free(&m);
    CHECK(parse_req(&m, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n") ==
          HTTP_HEAD_DONE);
    CHECK(http_dechunk(&m, "zz\r\n", 4, &used, NULL, 0) == -1);
    http_msg_free(&m);
    CHECK(parse_req(&m, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == HTTP_HEAD_DONE);
    CHECK(m.keep_alive && m.minor == 0);
    http_msg_free(&m);
    CHECK(parse_req(&m, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") ==
          HTTP_HEAD_DONE);
    CHECK(!m.keep_alive);
    http_msg_free(&m);
}

static void test_head_in_pieces(void) {
    const char *head = "GET /cluster1/x?y=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n";
    struct http_msg m;
    http_msg_init(&m, HTTP_REQUEST, 100);
    int r = HTTP_NEED_MORE;
    for (size_t len = 1; len <= strlen(head) && r == HTTP_NEED_MORE; len++)
        r = http_parse_head(&m, head, len, 0);
    CHECK(r == HTTP_HEAD_DONE);
    CHECK(m.head_len == strlen(head));
    CHECK(m.url_len == strlen("/cluster1/x?y=1") && !strncmp(m.url, "/cluster1/x?y=1", m.url_len));
    const struct http_hdr *h = http_find(&m, "accept");
    CHECK(h && h->vlen == 3 && !strncmp(h->value, "*/*", 3));
    http_msg_free(&m);
}

static void test_too_many_headers(void) {
    struct http_msg m;
    http_msg_init(&m, HTTP_REQUEST, 3);
    const char *head = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    CHECK(http_parse_head(&m, head, strlen(head), 0) == HTTP_REFUSED && m.refuse_status == 431);
    http_msg_free(&m);
}

static void test_request_rewrite(void) {
    char *out =
        rewrite("GET /cluster1/x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\n"
                "X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X\r\n"
                "Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\n"
                "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n",
                0);
    CHECK(out != NULL);
    if (!out) return;
    CHECK(!strncmp(out, "GET /cluster1/x HTTP/1.1\r\n", 26));
    CHECK(strstr(out, "Host: a\r\n") != NULL);
    CHECK(strstr(out, "Accept: */*\r\n") != NULL);
    CHECK(strstr(out, "X-Secret") == NULL);
    CHECK(strstr(out, "Keep-Alive") == NULL);
    CHECK(strstr(out, "TE:") == NULL);
    CHECK(strstr(out, "Trailer") == NULL);
    CHECK(strstr(out, "Proxy-Connection") == NULL);
    CHECK(strstr(out, "Upgrade") == NULL);
    CHECK(strstr(out, "Connection") == NULL);
    CHECK(strstr(out, "X-Forwarded-For: 1.1.1.1, 10.1.2.3\r\n") != NULL);
    CHECK(strstr(out, "X-Forwarded-Proto: http\r\n") != NULL);
    CHECK(strstr(out, "https") == NULL);
    CHECK(strstr(out, "X-Forwarded-Port: 8000\r\n") != NULL);
    CHECK(strstr(out, "X-Request-Id: abc123\r\n") != NULL);
    CHECK(strlen(out) > 4 && !strcmp(out + strlen(out) - 4, "\r\n\r\n"));
    free(out);
}

static void test_request_rewrite_keeps(void) {
    /* Connection cannot take away the framing headers. */
    char *out = rewrite("POST /a HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host\r\n"
                        "Content-Length: 3\r\nX-Request-Id: given\r\n\r\n",
                        0);
    CHECK(out != NULL);
    if (!out) return;
    CHECK(strstr(out, "Content-Length: 3\r\n") != NULL);
    CHECK(strstr(out, "Host: a\r\n") != NULL);
    CHECK(strstr(out, "X-Request-Id: given\r\n") != NULL);
    CHECK(strstr(out, "abc123") == NULL);
    free(out);
    out = rewrite(
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 0);
    CHECK(out && strstr(out, "Connection: Upgrade\r\nUpgrade: websocket\r\n") != NULL);
    free(out);
    out = rewrite("GET /x HTTP/1.0\r\n\r\n", 0);
    CHECK(out && !strncmp(out, "GET /x HTTP/1.0\r\n", 17));
    CHECK(out && strstr(out, "Connection: keep-alive\r\n") != NULL);
    free(out);
}

static void test_strip_prefix(void) {
    char *out = rewrite("GET /cluster1/x?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", strlen("/cluster1"));
    CHECK(out && !strncmp(out, "GET /x?q=1 HTTP/1.1\r\n", 21));
    free(out);
    out = rewrite("GET /cluster1 HTTP/1.1\r\nHost: a\r\n\r\n", strlen("/cluster1"));
    CHECK(out && !strncmp(out, "GET / HTTP/1.1\r\n", 16));
    free(out);
    out = rewrite("GET /cluster1?q HTTP/1.1\r\nHost: a\r\n\r\n", strlen("/cluster1"));
    CHECK(out && !strncmp(out, "GET /?q HTTP/1.1\r\n", 18));
    free(out);
}

static void test_response(void) {
    struct http_msg m;
    struct sbuf out = {0};
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\n"
                       "X-Hop: 1\r\nX-App: 2\r\nKeep-Alive: timeout=3\r\n\r\n";
    http_msg_init(&m, HTTP_RESPONSE, 100);
    CHECK(http_parse_head(&m, head, strlen(head), 0) == HTTP_HEAD_DONE);
    CHECK(m.status == 200 && m.framing == BODY_LENGTH && m.keep_alive);
    http_write_response(&out, &m, 1, 0);
    CHECK(out.data && !strncmp(out.data, "HTTP/1.1 200 OK\r\n", 17));
    CHECK(out.data && strstr(out.data, "X-App: 2\r\n") && !strstr(out.data, "X-Hop") &&
          !strstr(out.data, "Keep-Alive") && strstr(out.data, "Connection: close\r\n"));
    sbuf_free(&out);
    http_write_response(&out, &m, 0, 1);
    CHECK(out.data && strstr(out.data, "Connection: keep-alive\r\n"));
    sbuf_free(&out);
    http_msg_free(&m);

    http_msg_init(&m, HTTP_RESPONSE, 100);
    head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
    CHECK(http_parse_head(&m, head, strlen(head), 1) == HTTP_HEAD_DONE);
    CHECK(m.framing == BODY_NONE); /* the answer to a HEAD */
    http_msg_reset(&m);
    head = "HTTP/1.0 200 OK\r\n\r\n";
    CHECK(http_parse_head(&m, head, strlen(head), 0) == HTTP_HEAD_DONE);
    CHECK(m.framing == BODY_UNTIL_CLOSE && !m.keep_alive);
    http_msg_reset(&m);
    head = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    CHECK(http_parse_head(&m, head, strlen(head), 0) < 0);
    http_msg_reset(&m);
    head = "HTTP/1.1 204 No Content\r\n\r\n";
    CHECK(http_parse_head(&m, head, strlen(head), 0) == HTTP_HEAD_DONE);
    CHECK(m.framing == BODY_NONE && m.keep_alive);
    http_msg_reset(&m);
    head = "NOT HTTP\r\n\r\n";
    CHECK(http_parse_head(&m, head, strlen(head), 0) < 0);
    http_msg_free(&m);
}

static void test_error_response(void) {
    struct sbuf out = {0};
    http_write_error(&out, 431, 0);
    CHECK(out.data && !strncmp(out.data, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46));
    CHECK(out.data && strstr(out.data, "Connection: close\r\n"));
    CHECK(out.data && strstr(out.data, "Content-Length: "));
    sbuf_free(&out);
}

int main(void) {
    test_smuggling_refused();
    test_framing();
    test_head_in_pieces();
    test_too_many_headers();
    test_request_rewrite();
    test_request_rewrite_keeps();
    test_strip_prefix();
    test_response();
    test_error_response();
    return test_summary();
}
