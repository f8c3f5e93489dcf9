/* SSH key files: the public half of --ssh-key for ImportKeyPair, and base64
 * (OpenSSL's) for key blobs. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define OPENSSH_BEGIN "-----BEGIN OPENSSH PRIVATE KEY-----"
#define OPENSSH_END   "-----END OPENSSH PRIVATE KEY-----"
#define OPENSSH_MAGIC "openssh-key-v1"

bool b64_encode(const unsigned char *in, size_t len, char *out, size_t outlen) {
    if (len > INT32_MAX / 2 || (len + 2) / 3 * 4 + 1 > outlen) return false;
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return true;
}

long b64_decode(const char *text, size_t textlen, unsigned char **out) {
    *out = NULL;
    char *clean = calloc(1, textlen + 1);
    if (!clean) return -1;
    size_t n = 0;
    for (size_t i = 0; i < textlen; i++)
        if (!isspace((unsigned char)text[i])) clean[n++] = text[i];
    long len = -1;
    if (n % 4 == 0 && n < INT32_MAX && (*out = malloc(n / 4 * 3 + 1)))
        len = EVP_DecodeBlock(*out, (unsigned char *)clean, (int)n);
    /* EVP_DecodeBlock counts the padding as decoded zero bytes. */
    for (size_t i = n; len > 0 && i > 0 && clean[i - 1] == '='; i--)
        len--;
    free(clean);
    if (len < 0) {
        free(*out);
        *out = NULL;
    }
    return len;
}

/* An SSH wire-format string at *p (uint32 length, bytes), advancing *p. */
static bool wire_string(const unsigned char **p, const unsigned char *end, const unsigned char **s,
                        uint32_t *len) {
    if (end - *p < 4) return false;
    uint32_t n = (uint32_t)(*p)[0] << 24 | (uint32_t)(*p)[1] << 16 | (uint32_t)(*p)[2] << 8 |
                 (uint32_t)(*p)[3];
    if ((size_t)(end - *p - 4) < n) return false;
    *s = *p + 4;
    *len = n;
    *p += 4 + n;
    return true;
}

/* The public key blob of a decoded openssh-key-v1 body, which it carries in
 * the clear ahead of its (possibly encrypted) private part. */
static bool openssh_blob(const unsigned char *raw, size_t len, const unsigned char **blob,
                         uint32_t *bloblen) {
    const unsigned char *p = raw + sizeof(OPENSSH_MAGIC), *end = raw + len, *s;
    uint32_t n;
    if (len < sizeof(OPENSSH_MAGIC) + 4 || memcmp(raw, OPENSSH_MAGIC, sizeof(OPENSSH_MAGIC)))
        return false;           /* the magic with its NUL */
    for (int i = 0; i < 3; i++) /* cipher, kdf name, kdf options */
        if (!wire_string(&p, end, &s, &n)) return false;
    if (end - p < 4) return false;
    p += 4; /* the number of keys */
    return wire_string(&p, end, blob, bloblen);
}

/* "type base64" of an OpenSSH-format private key's public key. */
static bool openssh_public(const char *pem, char *out, size_t outlen) {
    const char *b = strstr(pem, OPENSSH_BEGIN), *e = b ? strstr(b, OPENSSH_END) : NULL;
    if (!e) return false;
    b += strlen(OPENSSH_BEGIN);
    unsigned char *raw;
    long len = b64_decode(b, (size_t)(e - b), &raw);
    if (len < 0) return false;
    const unsigned char *blob = NULL, *type = NULL;
    uint32_t bloblen = 0, typelen = 0;
    bool ok = openssh_blob(raw, (size_t)len, &blob, &bloblen);
    const unsigned char *q = blob;
    ok = ok && wire_string(&q, blob + bloblen, &type, &typelen) && typelen < 64;
    int w = ok ? snprintf(out, outlen, "%.*s ", (int)typelen, (const char *)type) : -1;
    ok = w > 0 && (size_t)w < outlen && b64_encode(blob, bloblen, out + w, outlen - (size_t)w);
    free(raw);
    return ok;
}

/* "type base64" from an authorized_keys-style line (options not allowed). */
static bool pub_line(const char *text, char *out, size_t outlen) {
    char type[64], blob[8192];
    if (sscanf(text, " %63s %8191s", type, blob) != 2) return false;
    int n = snprintf(out, outlen, "%s %s", type, blob);
    return n > 0 && (size_t)n < outlen;
}

static bool check_type(const char *line, const char *path, char *err, size_t errlen) {
    if (!strncmp(line, "ssh-ed25519 ", 12)) return true;
    if (!strncmp(line, "ssh-rsa ", 8))
        snprintf(err, errlen,
                 "--ssh-key %s is an RSA key: Debian's libssh2 1.10 signs RSA only with SHA-1, "
                 "which Amazon Linux 2023's OpenSSH refuses: use an ed25519 key "
                 "(ssh-keygen -t ed25519)",
                 path);
    else
        snprintf(err, errlen,
                 "--ssh-key %s is a %.*s key: EC2 imports only RSA and ed25519 keys, and RSA "
                 "does not work with libssh2 1.10: use an ed25519 key (ssh-keygen -t ed25519)",
                 path, (int)strcspn(line, " "), line);
    return false;
}

bool key_public_line(const char *path, char *out, size_t outlen, char *err, size_t errlen) {
    char pub[PATH_MAX + 8], why[256];
    snprintf(pub, sizeof(pub), "%s.pub", path);
    char *text = read_file(pub, NULL, why, sizeof(why));
    bool ok = text && pub_line(text, out, outlen);
    free(text);
    if (!ok) {
        char *priv = read_file(path, NULL, err, errlen);
        if (!priv) return false;
        ok = openssh_public(priv, out, outlen);
        bool rsa = !ok && strstr(priv, "-----BEGIN RSA PRIVATE KEY-----");
        explicit_bzero(priv, strlen(priv));
        free(priv);
        if (rsa) return check_type("ssh-rsa ", path, err, errlen);
        if (!ok) {
            snprintf(err, errlen,
                     "--ssh-key %s: not an OpenSSH private key and no readable %s beside it", path,
                     pub);
            return false;
        }
    }
    return check_type(out, path, err, errlen);
}
