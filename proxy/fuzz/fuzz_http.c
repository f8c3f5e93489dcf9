/* libFuzzer target for the proxy's HTTP edges: request and response heads
 * fed in pieces, chunked bodies, and the rewrite. Property checked beyond
 * "no crash": a head the proxy accepts and rewrites parses again, with the
 * same framing, so the backend sees the message the proxy checked. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static void check_rewritten_request(const struct http_msg *req) {
    struct sbuf out = {0};
    struct forward_info fi = {
        .client_ip = "192.0.2.1", .listen_port = 8000, .request_id = "fuzz", .strip_len = 0};
    http_write_request(&out, req, &fi);
    struct http_msg again;
    http_msg_init(&again, HTTP_REQUEST, 200);
    int r = http_parse_head(&again, out.data, out.len, 0);
    if (r != HTTP_HEAD_DONE || again.framing != req->framing ||
        again.content_length != req->content_length || again.head_len != out.len)
        abort();
    http_msg_free(&again);
    sbuf_free(&out);
}

static void check_rewritten_response(const struct http_msg *resp) {
    struct sbuf out = {0};
    http_write_response(&out, resp, 1, 1);
    struct http_msg again;
    http_msg_init(&again, HTTP_RESPONSE, 200);
    int r = http_parse_head(&again, out.data, out.len, 0);
    if (r != HTTP_HEAD_DONE || again.framing != resp->framing ||
        again.content_length != resp->content_length)
        abort();
    http_msg_free(&again);
    sbuf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int response = data[0] & 1;
    size_t step = 1 + data[1] % 64; /* the head arrives in pieces of this size */
    const char *buf = (const char *)data + 2;
    size_t len = size - 2;
    struct http_msg m;
    http_msg_init(&m, response ? HTTP_RESPONSE : HTTP_REQUEST, 100);
    int r = HTTP_NEED_MORE;
    size_t fed = 0;
    while (r == HTTP_NEED_MORE && fed < len) {
        fed = fed + step < len ? fed + step : len;
        r = http_parse_head(&m, buf, fed, 0);
    }
    if (r == HTTP_HEAD_DONE) {
        if (m.head_len > fed) abort();
        if (response)
            check_rewritten_response(&m);
        else
            check_rewritten_request(&m);
        if (m.framing == BODY_CHUNKED) {
            size_t pos = m.head_len, used;
            while (pos < len) {
                size_t n = len - pos < step ? len - pos : step;
                int b = http_dechunk(&m, buf + pos, n, &used, NULL, 1);
                if (b < 0) break;
                if (used > n) abort();
                pos += used;
                if (b != HTTP_NEED_MORE) break;
            }
        }
    }
    http_msg_free(&m);
    return 0;
}
