/* SHA-1 and base64, just enough for the WebSocket handshake. */
#ifndef BACKEND_SHA1_H
#define BACKEND_SHA1_H

#include <stddef.h>
#include <stdint.h>

void sha1(const void *data, size_t len, uint8_t out[20]);
/* Writes the base64 of src (padded) and a NUL; returns the length. dst needs
 * 4 * ((len + 2) / 3) + 1 bytes. */
size_t base64_encode(char *dst, const uint8_t *src, size_t len);

#endif
