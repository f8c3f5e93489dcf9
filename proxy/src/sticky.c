#define _GNU_SOURCE
#include "sticky.h"

#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MAC_BYTES 16 /* of the SHA-256 HMAC: 128 bits are plenty against forgery */
#define MAX_NAME  80

static unsigned char process_key[32];

int sticky_init(void) {
    return getrandom(process_key, sizeof(process_key), 0) == (ssize_t)sizeof(process_key) ? 0 : -1;
}

static void mac_of(const struct stickiness_config *sc, const char *cluster,
                   const unsigned char *msg, size_t len, unsigned char out[MAC_BYTES]) {
    const void *key = sc->secret[0] ? (const void *)sc->secret : process_key;
    int klen = sc->secret[0] ? (int)strlen(sc->secret) : (int)sizeof(process_key);
    unsigned char full[EVP_MAX_MD_SIZE], buf[64 + 1 + 8 + MAX_NAME];
    size_t clen = strlen(cluster);
    memcpy(buf, cluster, clen);
    buf[clen] = 0; /* the cluster's name, then the message: no two pairs read the same */
    memcpy(buf + clen + 1, msg, len);
    unsigned int flen = 0;
    HMAC(EVP_sha256(), key, klen, buf, clen + 1 + len, full, &flen);
    memcpy(out, full, MAC_BYTES);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64_encode(const unsigned char *in, size_t len, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) v |= in[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        if (i + 1 < len) out[o++] = b64[v >> 6 & 63];
        if (i + 2 < len) out[o++] = b64[v & 63];
    }
    out[o] = 0;
    return o;
}

static int b64_value(char ch) {
    const char *p = ch ? strchr(b64, ch) : NULL;
    return p ? (int)(p - b64) : -1;
}

/* -1 on a byte outside the alphabet or a length no encoding has. */
static long b64_decode(const char *in, size_t len, unsigned char *out, size_t cap) {
    if (len % 4 == 1) return -1;
    size_t o = 0;
    uint32_t v = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int d = b64_value(in[i]);
        if (d < 0) return -1;
        v = v << 6 | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap) return -1;
            out[o++] = (unsigned char)(v >> bits);
        }
    }
    return (long)o;
}

/* The message signed: the expiry (8 bytes, big-endian) and the name. */
static size_t message(unsigned char *msg, int64_t expires, const char *name) {
    size_t n = strlen(name);
    for (int i = 0; i < 8; i++)
        msg[i] = (unsigned char)((uint64_t)expires >> (56 - 8 * i));
    memcpy(msg + 8, name, n);
    return 8 + n;
}

void sticky_set_cookie(struct sbuf *out, const struct stickiness_config *sc, const char *cluster,
                       const char *path_prefix, const char *backend, int64_t now_s) {
    unsigned char msg[8 + MAX_NAME], mac[MAC_BYTES];
    char v[(sizeof(msg) + 2) / 3 * 4 + 1], m[(MAC_BYTES + 2) / 3 * 4 + 1];
    if (strlen(backend) >= MAX_NAME) return;
    size_t len = message(msg, now_s + sc->duration_s, backend);
    mac_of(sc, cluster, msg, len, mac);
    b64_encode(msg, len, v);
    b64_encode(mac, MAC_BYTES, m);
    sbuf_addf(out, "Set-Cookie: %s=%s.%s; Max-Age=%d; Path=%s; HttpOnly\r\n", sc->cookie, v, m,
              sc->duration_s, path_prefix);
}

/* One cookie value: the backend it names when it verifies. */
static int verify(const struct stickiness_config *sc, const char *cluster, const char *val,
                  size_t len, int64_t now_s, char *out, size_t outlen) {
    const char *dot = memchr(val, '.', len);
    if (!dot) return 0;
    unsigned char msg[8 + MAX_NAME], mac[MAC_BYTES], want[MAC_BYTES];
    long n = b64_decode(val, (size_t)(dot - val), msg, sizeof(msg));
    long k = b64_decode(dot + 1, len - (size_t)(dot + 1 - val), mac, sizeof(mac));
    if (n <= 8 || k != MAC_BYTES || (size_t)(n - 8) >= outlen) return 0;
    mac_of(sc, cluster, msg, (size_t)n, want);
    if (CRYPTO_memcmp(mac, want, MAC_BYTES)) return 0;
    int64_t expires = 0;
    for (int i = 0; i < 8; i++)
        expires = (int64_t)((uint64_t)expires << 8 | msg[i]);
    if (expires < now_s) return 0;
    memcpy(out, msg + 8, (size_t)(n - 8));
    out[n - 8] = 0;
    return 1;
}

int sticky_find(const struct stickiness_config *sc, const char *cluster, const struct http_msg *req,
                int64_t now_s, char *out, size_t outlen) {
    size_t clen = strlen(sc->cookie);
    for (int i = 0; i < req->nhdr; i++) {
        const struct http_hdr *h = &req->hdr[i];
        if (h->nlen != 6 || strncasecmp(h->name, "cookie", 6)) continue;
        /* "a=1; LBSTICKY=v; b=2": each pair in turn, the first that verifies */
        const char *p = h->value, *end = h->value + h->vlen;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *stop = semi ? semi : end;
            if ((size_t)(stop - p) > clen && !memcmp(p, sc->cookie, clen) && p[clen] == '=' &&
                verify(sc, cluster, p + clen + 1, (size_t)(stop - p - clen - 1), now_s, out,
                       outlen))
                return 1;
            p = stop;
        }
    }
    return 0;
}
