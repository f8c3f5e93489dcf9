/* Sticky sessions (a cluster's "stickiness"): a cookie that names the
 * backend, signed with HMAC-SHA256 so that any proxy holding the same
 * secret honours it and nobody else can forge one. It is signed, not
 * encrypted: its value is base64url(expiry, cluster-independent backend
 * address) "." base64url(MAC), the MAC over the cluster's name too, so a
 * cookie of one cluster means nothing to another. */
#ifndef LB_STICKY_H
#define LB_STICKY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http.h"

/* The key used where no stickiness.secret is set, generated once per
 * process. 0, or -1 when no random bytes could be had. */
int sticky_init(void);
/* The backend named by a valid cookie of the request for this cluster
 * (signature good, not expired), copied to out; 0 when there is none. */
int sticky_find(const struct stickiness_config *sc, const char *cluster, const struct http_msg *req,
                int64_t now_s, char *out, size_t outlen);
/* Appends the Set-Cookie header line (with its CRLF) naming backend. */
void sticky_set_cookie(struct sbuf *out, const struct stickiness_config *sc, const char *cluster,
                       const char *path_prefix, const char *backend, int64_t now_s);

#endif
