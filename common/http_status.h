/* HTTP status codes' reason phrases, for the heads proxy and backend write. */
#ifndef LB_HTTP_STATUS_H
#define LB_HTTP_STATUS_H

/* The RFC 9110 reason phrase, or "Status" for a code without one. */
const char *http_reason(int status);

#endif
