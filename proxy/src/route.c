/* Path-based routing: the longest path_prefix matching on a segment boundary. */
#include "route.h"

#include <string.h>
#include <strings.h>

int route_prefix_matches(const char *prefix, size_t plen, const char *path, size_t len) {
    if (!plen || plen > len || memcmp(prefix, path, plen)) return 0;
    if (plen == len || prefix[plen - 1] == '/') return 1;
    char next = path[plen];
    return next == '/' || next == '?' || next == '#';
}

/* The path (with its query) of an origin-form or absolute-form target. */
static int target_path(const char *t, size_t len, const char **path, size_t *plen) {
    if (len && t[0] == '/') {
        *path = t;
        *plen = len;
        return 0;
    }
    size_t skip;
    if (len >= 7 && !strncasecmp(t, "http://", 7))
        skip = 7;
    else if (len >= 8 && !strncasecmp(t, "https://", 8))
        skip = 8;
    else
        return -1;
    size_t i = skip;
    while (i < len && t[i] != '/' && t[i] != '?' && t[i] != '#')
        i++;
    if (i == skip) return -1; /* no authority */
    if (i < len && t[i] == '/') {
        *path = t + i;
        *plen = len - i;
    } else {
        *path = "/";
        *plen = 1;
    }
    return 0;
}

int route_match(const struct proxy_config *cfg, const char *target, size_t len) {
    const char *path;
    size_t plen;
    if (!cfg || !target || target_path(target, len, &path, &plen) < 0) return -1;
    int best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const struct cluster_config *c = &cfg->clusters[i];
        size_t l = c->prefix_len ? c->prefix_len : strlen(c->path_prefix);
        if (l > best_len && route_prefix_matches(c->path_prefix, l, path, plen)) {
            best = (int)i;
            best_len = l;
        }
    }
    return best;
}
