/* The AWS client shared by awsctl and the proxy: credentials, region and
 * endpoints resolved as the AWS CLI resolves them, requests over libcurl signed
 * with its SigV4 support, Query (XML) and JSON replies, AWS errors as
 * "Code: Message", retries with backoff on throttling, 5xx and transport errors.
 *
 * One client per thread: a client is not shared, but any number of threads may
 * each use their own. Link the lbaws library (libcurl, libxml2, cJSON).
 *
 * Resolution, in order:
 *   credentials  AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
 *                else profile AWS_PROFILE ("default") from the credentials file
 *                (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials, section [NAME]),
 *                then from the config file (AWS_CONFIG_FILE, ~/.aws/config, section
 *                [profile NAME], [default] for the default profile):
 *                aws_access_key_id, aws_secret_access_key, aws_session_token;
 *                else the instance's role from the EC2 instance metadata service
 *                (IMDSv2: a session token, then iam/security-credentials/ROLE;
 *                AWS_EC2_METADATA_SERVICE_ENDPOINT, default http://169.254.169.254,
 *                off with AWS_EC2_METADATA_DISABLED=true; 1 s to connect, 2 s per
 *                request, so that a machine that is no instance fails fast). It is
 *                not asked when the profile holds role_arn, credential_process or
 *                SSO settings (not supported: an error), nor when AWS_PROFILE names
 *                a profile that is in neither file. Instance credentials expire:
 *                the process keeps one copy for all its clients, fetched again
 *                when within 5 minutes of the expiry, at aws_client_new and
 *                before every call, so both a client per call (the proxy's
 *                discovery and CloudWatch) and a long-lived one (awsctl) stay valid.
 *   region       the argument, AWS_REGION, AWS_DEFAULT_REGION, the profile's region
 *                in the config file, the instance's (from the instance metadata);
 *                no default: a client without one is an error, as it is for the
 *                AWS CLI (a guessed region would launch instances where nobody
 *                looks for them).
 *   endpoints    AWS_ENDPOINT_URL_EC2 / _SSM / _CLOUDWATCH / _IAM, AWS_ENDPOINT_URL,
 *                https://{ec2,ssm,monitoring}.REGION.amazonaws.com; IAM is global:
 *                https://iam.amazonaws.com signed for us-east-1 (China:
 *                iam.cn-north-1.amazonaws.com.cn, GovCloud: iam.us-gov.amazonaws.com),
 *                whatever the client's region and endpoint.
 *   retries      AWS_MAX_ATTEMPTS (default 5); LB_AWS_RETRY_BASE_MS (default 200):
 *                full-jitter exponential backoff, capped at 5 s between attempts.
 */
#ifndef LB_AWS_H
#define LB_AWS_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>
#include <libxml/tree.h>

enum aws_service { AWS_EC2, AWS_SSM, AWS_CLOUDWATCH, AWS_IAM, AWS_SERVICE_COUNT };

struct aws_error {
    long http_status;   /* of the last reply; 0 when none came */
    char code[128];     /* the AWS error code; "" for transport and unparsable errors */
    char message[1024]; /* for the user: "Code: Message", or what went wrong on the way */
    bool dry_run_ok;    /* code is DryRunOperation: the request (DryRun=true) would succeed */
};

struct aws_client;

/* A client for region_or_null (NULL or "": resolved as above), or NULL with
 * the reason in err, naming what is missing and where it was looked for. */
struct aws_client *aws_client_new(const char *region_or_null, char *err, size_t errlen);
void aws_client_free(struct aws_client *c);
const char *aws_client_region(const struct aws_client *c);
const char *aws_client_endpoint(const struct aws_client *c, enum aws_service svc);
const char *aws_client_access_key_id(const struct aws_client *c);
/* Where the credentials came from: "environment", "profile NAME (FILE)" or
 * "instance metadata (role NAME)". */
const char *aws_client_credentials_source(const struct aws_client *c);
/* Attempts per call (>= 1) and the backoff base and cap in milliseconds. */
void aws_client_set_retry(struct aws_client *c, int max_attempts, long base_ms, long cap_ms);
/* Connect and whole-request timeouts of every attempt, in milliseconds
 * (defaults 10000 and 30000; 0 is none, as for libcurl). Timeouts are retried
 * like other transport errors. */
void aws_client_set_timeouts(struct aws_client *c, long connect_ms, long total_ms);
/* Retries are logged at debug level, not as warnings: for a caller that logs
 * its own failures, rate-limited. */
void aws_client_set_quiet_retries(struct aws_client *c, bool quiet);
/* abort(arg) is polled during every call (every 100 ms, from the calling
 * thread) and between attempts; once it returns true the call fails at once,
 * without another attempt. NULL: never. */
void aws_client_set_abort(struct aws_client *c, bool (*abort)(void *arg), void *arg);

/* The parameters of a Query request, encoded as they are added: unreserved
 * characters (letters, digits, -_.~) as they are, every other byte %XX. */
struct aws_form;
struct aws_form *aws_form_new(void);
void aws_form_free(struct aws_form *f);
void aws_form_add(struct aws_form *f, const char *name, const char *value);
void aws_form_addf(struct aws_form *f, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An EC2 filter with one value: Filter.n.Name=name, Filter.n.Value.1=value. */
void aws_form_filter(struct aws_form *f, int n, const char *name, const char *value);
/* "name=value&name=value…"; NULL after an allocation failure. */
const char *aws_form_body(const struct aws_form *f);

/* A Query API call (EC2 Version=2016-11-15, CloudWatch 2010-08-01, IAM
 * 2010-05-08): POSTs
 * Action, Version and params (may be NULL), returns the parsed reply (free it
 * with xmlFreeDoc) or NULL with err filled; err is untouched on success. An EC2
 * DryRun=true that would succeed comes back as NULL with err->dry_run_ok.
 * Retried calls must be idempotent: give RunInstances a ClientToken. */
xmlDocPtr aws_query(struct aws_client *c, enum aws_service svc, const char *action,
                    const struct aws_form *params, struct aws_error *err);
/* A JSON-protocol call (SSM): target is the X-Amz-Target ("AmazonSSM.GetParameter"),
 * body may be NULL for {}. Returns the reply (free with cJSON_Delete) or NULL
 * with err filled. */
cJSON *aws_json(struct aws_client *c, enum aws_service svc, const char *target, const cJSON *body,
                struct aws_error *err);

/* Fills err from an error reply body: EC2 <Response><Errors><Error>, Query
 * <ErrorResponse><Error>, or JSON {"__type": "…#Code", "message"|"Message"}.
 * Returns false (err->code "") when the body holds none of these. */
bool aws_parse_error(const char *body, size_t len, long http_status, struct aws_error *err);

/* XML helpers for Query replies. Names are local names: namespaces ignored.
 * All accept a NULL node and then return NULL. */

/* The element reached from node by path, "a/b/c" of child element names. */
xmlNodePtr aws_xml_find(xmlNodePtr node, const char *path);
/* The next sibling element of node named name. */
xmlNodePtr aws_xml_next(xmlNodePtr node, const char *name);
/* The text of the element at path ("" when empty), or NULL when there is no
 * such element or it holds more than one text node; lives as long as the doc. */
const char *aws_xml_text(xmlNodePtr node, const char *path);
/* The value of tag key in node's tagSet (an EC2 instance, volume, …), or NULL. */
const char *aws_xml_tag(xmlNodePtr node, const char *key);
/* Each child element named name (one name, not a path) of parent (may be NULL):
 * AWS_XML_FOREACH(inst, aws_xml_find(res, "instancesSet"), "item") { … } */
#define AWS_XML_FOREACH(var, parent, name)                                                         \
    for (xmlNodePtr var = aws_xml_find((parent), (name)); var; var = aws_xml_next(var, (name)))

#endif
