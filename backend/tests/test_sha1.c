/* SHA-1 and base64 against known answers, and the WebSocket accept key of
 * RFC 6455's example. */
#include "../sha1.h"
#include "testing.h"

#include <string.h>

static const char *sha1_b64(const char *s, char *out) {
    uint8_t d[20];
    sha1(s, strlen(s), d);
    base64_encode(out, d, sizeof(d));
    return out;
}

static const char *sha1_hex(const char *s, size_t len, char *out) {
    uint8_t d[20];
    sha1(s, len, d);
    for (int i = 0; i < 20; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
    return out;
}

int main(void) {
    char buf[64];
    CHECK_STR(sha1_hex("", 0, buf), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    CHECK_STR(sha1_hex("abc", 3, buf), "a9993e364706816aba3e25717850c26c9cd0d89d");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK_STR(sha1_hex(two, strlen(two), buf), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    char big[1000];
    memset(big, 'a', sizeof(big));
    CHECK_STR(sha1_hex(big, sizeof(big), buf), "291e9a6c66994949b57ba5e650361e98fc36b1ba");
    /* 55, 56 and 64 bytes: the padding's edge cases. */
    CHECK_STR(sha1_hex(big, 55, buf), "c1c8bbdc22796e28c0e15163d20899b65621d65a");
    CHECK_STR(sha1_hex(big, 56, buf), "c2db330f6083854c99d4b5bfb6e8f29f201be699");
    CHECK_STR(sha1_hex(big, 64, buf), "0098ba824b5c16427bd7a1122a5a442a25ec644d");

    uint8_t raw[] = {'f', 'o', 'o', 'b', 'a', 'r'};
    base64_encode(buf, raw, 1);
    CHECK_STR(buf, "Zg==");
    base64_encode(buf, raw, 2);
    CHECK_STR(buf, "Zm8=");
    base64_encode(buf, raw, 3);
    CHECK_STR(buf, "Zm9v");
    base64_encode(buf, raw, 6);
    CHECK_STR(buf, "Zm9vYmFy");

    CHECK_STR(sha1_b64("dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11", buf),
              "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    return test_summary();
}
