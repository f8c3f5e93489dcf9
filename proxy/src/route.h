/* Path-based routing: the longest path_prefix matching on a segment boundary. */
#ifndef LB_ROUTE_H
#define LB_ROUTE_H

#include <stddef.h>

#include "config.h"

/* Index of the cluster for this request target (origin-form "/a/b?q" or
 * absolute-form "http://host/a/b"), or -1 for the default response. */
int route_match(const struct proxy_config *cfg, const char *target, size_t len);
/* True when prefix matches path on a segment boundary: "/cluster1" matches
 * "/cluster1", "/cluster1/x", "/cluster1?q", not "/cluster10". */
int route_prefix_matches(const char *prefix, size_t plen, const char *path, size_t len);

#endif
