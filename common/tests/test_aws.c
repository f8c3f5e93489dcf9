/* Unit tests of the AWS client: form encoding, credential, region and
 * endpoint resolution from the environment and profile files in a temporary
 * HOME, error and XML parsing of canned replies, and requests against a small
 * server on 127.0.0.1 that answers from a script (retries, dry runs,
 * timeouts, what is signed), which also plays the EC2 instance metadata
 * service (role credentials, their refresh, the region). */
#define _GNU_SOURCE
#include "aws.h"
#include "log.h"
#include "testing.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char home[64];

static void write_file(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", home, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static void clear_env(void) {
    static const char *const vars[] = {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_EC2",
        "AWS_ENDPOINT_URL_SSM",
        "AWS_ENDPOINT_URL_CLOUDWATCH",
        "AWS_ENDPOINT_URL_IAM",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_MAX_ATTEMPTS",
        "LB_AWS_RETRY_BASE_MS",
        "http_proxy",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    };
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    setenv("HOME", home, 1);
    /* No test reaches for 169.254.169.254; test_imds turns it on, on 127.0.0.1. */
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
}

static void env_keys(void) {
    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret/with+chars", 1);
}

static void test_form(void) {
    struct aws_form *f = aws_form_new();
    aws_form_add(f, "Filter.1.Name", "tag:Cluster");
    aws_form_add(f, "V", "a b+c/d=e~f_g-h.i");
    aws_form_add(f, "U", "\xc3\xa9\x7f");
    aws_form_addf(f, "Count", "%d", 42);
    aws_form_add(f, "Empty", "");
    CHECK_STR(aws_form_body(f), "Filter.1.Name=tag%3ACluster&V=a%20b%2Bc%2Fd%3De~f_g-h.i"
                                "&U=%C3%A9%7F&Count=42&Empty=");
    aws_form_free(f);

    f = aws_form_new();
    CHECK_STR(aws_form_body(f), "");
    char big[1000];
    memset(big, '&', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    aws_form_add(f, "k", big);
    const char *b = aws_form_body(f);
    CHECK(b && strlen(b) == 2 + 3 * (sizeof(big) - 1) && !strncmp(b, "k=%26%26", 8));
    aws_form_free(f);

    f = aws_form_new();
    aws_form_filter(f, 2, "tag:Cluster", "a b");
    CHECK_STR(aws_form_body(f), "Filter.2.Name=tag%3ACluster&Filter.2.Value.1=a%20b");
    aws_form_free(f);
}

static struct aws_client *client(const char *region, char *err, size_t errlen) {
    err[0] = '\0';
    return aws_client_new(region, err, errlen);
}

static void test_credentials(void) {
    char err[512];
    struct aws_client *c;

    clear_env();
    env_keys();
    setenv("AWS_SESSION_TOKEN", "TOKEN", 1);
    setenv("AWS_REGION", "eu-west-1", 1);
    c = client(NULL, err, sizeof(err));
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(aws_client_access_key_id(c), "AKIDTEST");
        CHECK_STR(aws_client_credentials_source(c), "environment");
        aws_client_free(c);
    }

    unsetenv("AWS_SECRET_ACCESS_KEY");
    CHECK(client(NULL, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "AWS_SECRET_ACCESS_KEY is not") != NULL);

    /* Environment keys win over the default profile of ~/.aws. */
    clear_env();
    write_file(".aws/credentials", "[default]\naws_access_key_id = AKIDHOME\n"
                                   "aws_secret_access_key = s3cr3t\n");
    write_file(".aws/config", "[default]\nregion = us-east-2\n");
    c = client(NULL, err, sizeof(err));
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(aws_client_access_key_id(c), "AKIDHOME");
        CHECK(strstr(aws_client_credentials_source(c), "profile default (") != NULL);
        CHECK(strstr(aws_client_credentials_source(c), "/.aws/credentials)") != NULL);
        CHECK_STR(aws_client_region(c), "us-east-2");
        aws_client_free(c);
    }
    env_keys();
    c = client(NULL, err, sizeof(err));
    CHECK(c && !strcmp(aws_client_access_key_id(c), "AKIDTEST"));
    aws_client_free(c);

    /* A named profile in overridden files: comments, CRLF, a nested block,
     * keys in any case, a session token. */
    clear_env();
    write_file("creds", "# comment\n[default]\naws_access_key_id=AKIDDEFAULT\n"
                        "aws_secret_access_key=x\n\n[dev]\r\n"
                        "  AWS_Access_Key_Id = AKIDDEV \r\n"
                        "aws_secret_access_key = dev/secret=\r\n"
                        "aws_session_token = devtoken\r\n");
    write_file("conf", "[default]\nregion = us-east-1\n[profile dev]\ns3 =\n  region = bogus\n"
                       "region = ap-south-1\n[profile devx]\nregion = sa-east-1\n");
    char path[256];
    snprintf(path, sizeof(path), "%s/creds", home);
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    snprintf(path, sizeof(path), "%s/conf", home);
    setenv("AWS_CONFIG_FILE", path, 1);
    setenv("AWS_PROFILE", "dev", 1);
    c = client(NULL, err, sizeof(err));
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(aws_client_access_key_id(c), "AKIDDEV");
        CHECK(strstr(aws_client_credentials_source(c), "profile dev (") != NULL);
        CHECK(strstr(aws_client_credentials_source(c), "/creds)") != NULL);
        CHECK_STR(aws_client_region(c), "ap-south-1");
        aws_client_free(c);
    }

    /* Keys in the config file when the credentials file has none. */
    write_file("conf", "[profile cfg]\naws_access_key_id = AKIDCFG\naws_secret_access_key = y\n"
                       "region = eu-central-1\n");
    setenv("AWS_PROFILE", "cfg", 1);
    c = client(NULL, err, sizeof(err));
    CHECK(c && !strcmp(aws_client_access_key_id(c), "AKIDCFG"));
    CHECK(c && strstr(aws_client_credentials_source(c), "/conf)") != NULL);
    aws_client_free(c);

    /* [cfg] in the config file is not the profile: it needs "profile ". */
    write_file("conf", "[cfg]\naws_access_key_id = AKIDCFG\naws_secret_access_key = y\n");
    CHECK(client("us-east-1", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "profile 'cfg' is in neither") != NULL);
    CHECK(strstr(err, "/creds") && strstr(err, "/conf"));

    write_file("creds", "[half]\naws_access_key_id = AKIDHALF\n");
    setenv("AWS_PROFILE", "half", 1);
    CHECK(client("us-east-1", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "profile 'half'") && strstr(err, "no aws_secret_access_key"));

    write_file("conf", "[profile role]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = a\n");
    setenv("AWS_PROFILE", "role", 1);
    CHECK(client("us-east-1", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "profile 'role' has no aws_access_key_id") != NULL);

    /* No HOME, no files, no keys. */
    clear_env();
    unsetenv("HOME");
    CHECK(client("us-east-1", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "no AWS credentials") && strstr(err, "HOME unset"));
    CHECK(strstr(err, "instance metadata service is off (AWS_EC2_METADATA_DISABLED)"));
    setenv("HOME", home, 1);
    snprintf(path, sizeof(path), "%s/.aws/credentials", home);
    unlink(path);
    snprintf(path, sizeof(path), "%s/.aws/config", home);
    unlink(path);
}

static void test_region(void) {
    char err[512];
    clear_env();
    env_keys();
    write_file("conf", "[default]\nregion = us-west-1\n");
    char path[256];
    snprintf(path, sizeof(path), "%s/conf", home);
    setenv("AWS_CONFIG_FILE", path, 1);
    struct aws_client *c = client(NULL, err, sizeof(err));
    CHECK(c && !strcmp(aws_client_region(c), "us-west-1"));
    aws_client_free(c);
    setenv("AWS_DEFAULT_REGION", "eu-north-1", 1);
    c = client(NULL, err, sizeof(err));
    CHECK(c && !strcmp(aws_client_region(c), "eu-north-1"));
    aws_client_free(c);
    setenv("AWS_REGION", "eu-west-3", 1);
    c = client("", err, sizeof(err));
    CHECK(c && !strcmp(aws_client_region(c), "eu-west-3"));
    aws_client_free(c);
    c = client("ca-central-1", err, sizeof(err));
    CHECK(c && !strcmp(aws_client_region(c), "ca-central-1"));
    aws_client_free(c);

    CHECK(client("us-east-1/../x", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "invalid region 'us-east-1/../x'") != NULL);

    clear_env();
    env_keys();
    CHECK(client(NULL, err, sizeof(err)) == NULL);
    CHECK(!strncmp(err, "no region", 9) && strstr(err, "AWS_REGION"));
}

static void test_endpoints(void) {
    char err[512];
    clear_env();
    env_keys();
    struct aws_client *c = client("us-west-2", err, sizeof(err));
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(aws_client_endpoint(c, AWS_EC2), "https://ec2.us-west-2.amazonaws.com");
        CHECK_STR(aws_client_endpoint(c, AWS_SSM), "https://ssm.us-west-2.amazonaws.com");
        CHECK_STR(aws_client_endpoint(c, AWS_CLOUDWATCH),
                  "https://monitoring.us-west-2.amazonaws.com");
        CHECK_STR(aws_client_endpoint(c, AWS_IAM), "https://iam.amazonaws.com");
        aws_client_free(c);
    }
    c = client("cn-north-1", err, sizeof(err));
    CHECK(c && !strcmp(aws_client_endpoint(c, AWS_EC2), "https://ec2.cn-north-1.amazonaws.com.cn"));
    CHECK(c && !strcmp(aws_client_endpoint(c, AWS_IAM), "https://iam.cn-north-1.amazonaws.com.cn"));
    aws_client_free(c);
    c = client("us-gov-east-1", err, sizeof(err));
    CHECK(c && !strcmp(aws_client_endpoint(c, AWS_IAM), "https://iam.us-gov.amazonaws.com"));
    aws_client_free(c);

    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566", 1);
    setenv("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:4567/", 1);
    c = client("us-west-2", err, sizeof(err));
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(aws_client_endpoint(c, AWS_EC2), "http://127.0.0.1:4566");
        CHECK_STR(aws_client_endpoint(c, AWS_SSM), "http://127.0.0.1:4567/");
        CHECK_STR(aws_client_endpoint(c, AWS_CLOUDWATCH), "http://127.0.0.1:4566");
        CHECK_STR(aws_client_endpoint(c, AWS_IAM), "http://127.0.0.1:4566");
        aws_client_free(c);
    }
    setenv("AWS_ENDPOINT_URL_IAM", "http://127.0.0.1:4568", 1);
    c = client("us-west-2", err, sizeof(err));
    CHECK(c && !strcmp(aws_client_endpoint(c, AWS_IAM), "http://127.0.0.1:4568"));
    aws_client_free(c);
    setenv("AWS_ENDPOINT_URL_CLOUDWATCH", "127.0.0.1:9", 1);
    CHECK(client("us-west-2", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "AWS_ENDPOINT_URL_CLOUDWATCH=127.0.0.1:9 is not") != NULL);
}

static void test_errors(void) {
    struct aws_error e;
    const char *ec2 = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
                      "<Code>InvalidParameterValue</Code><Message>Value (x) for parameter "
                      "instanceType is invalid.</Message></Error></Errors>"
                      "<RequestID>ab-cd</RequestID></Response>";
    CHECK(aws_parse_error(ec2, strlen(ec2), 400, &e));
    CHECK_STR(e.code, "InvalidParameterValue");
    CHECK_STR(e.message, "InvalidParameterValue: Value (x) for parameter instanceType is invalid.");
    CHECK(e.http_status == 400 && !e.dry_run_ok);

    const char *dry = "<Response><Errors><Error><Code>DryRunOperation</Code><Message>Request "
                      "would have succeeded, but DryRun flag is set.</Message></Error></Errors>"
                      "</Response>";
    CHECK(aws_parse_error(dry, strlen(dry), 412, &e) && e.dry_run_ok);

    const char *cw = "  <ErrorResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\">"
                     "<Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded"
                     "</Message></Error><RequestId>x</RequestId></ErrorResponse>";
    CHECK(aws_parse_error(cw, strlen(cw), 400, &e));
    CHECK_STR(e.message, "Throttling: Rate exceeded");

    const char *j1 = "{\"__type\":\"com.amazonaws.ssm#ParameterNotFound\",\"message\":\"no such\"}";
    CHECK(aws_parse_error(j1, strlen(j1), 400, &e));
    CHECK_STR(e.code, "ParameterNotFound");
    CHECK_STR(e.message, "ParameterNotFound: no such");
    const char *j2 = "{\"__type\":\"AccessDeniedException\",\"Message\":\"User: x is not "
                     "authorized\"}";
    CHECK(aws_parse_error(j2, strlen(j2), 400, &e));
    CHECK_STR(e.message, "AccessDeniedException: User: x is not authorized");
    const char *j3 = "{\"__type\":\"ThrottlingException\"}";
    CHECK(aws_parse_error(j3, strlen(j3), 400, &e));
    CHECK_STR(e.message, "ThrottlingException");

    CHECK(!aws_parse_error("<html>oops</html>", 17, 502, &e) && !e.code[0]);
    CHECK(!aws_parse_error("Bad Gateway", 11, 502, &e));
    CHECK(!aws_parse_error("{\"x\":1}", 7, 500, &e));
    CHECK(!aws_parse_error("", 0, 500, &e));
}

static const char describe_instances[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\n"
    "  <requestId>8f7724cf</requestId>\n"
    "  <reservationSet>\n"
    "    <item>\n"
    "      <reservationId>r-1</reservationId>\n"
    "      <instancesSet>\n"
    "        <item>\n"
    "          <instanceId>i-0001</instanceId>\n"
    "          <instanceState><code>16</code><name>running</name></instanceState>\n"
    "          <privateIpAddress>10.0.0.1</privateIpAddress>\n"
    "          <ipAddress>3.3.3.1</ipAddress>\n"
    "          <reason/>\n"
    "          <tagSet>\n"
    "            <item><key>Deployment</key><value>lb</value></item>\n"
    "            <item><key>Cluster</key><value>cluster1</value></item>\n"
    "          </tagSet>\n"
    "        </item>\n"
    "        <item>\n"
    "          <instanceId>i-0002</instanceId>\n"
    "          <instanceState><code>0</code><name>pending</name></instanceState>\n"
    "          <tagSet><item><key>Cluster</key><value>cluster2 &amp; more</value></item>"
    "</tagSet>\n"
    "        </item>\n"
    "      </instancesSet>\n"
    "    </item>\n"
    "    <item>\n"
    "      <reservationId>r-2</reservationId>\n"
    "      <instancesSet>\n"
    "        <item><instanceId>i-0003</instanceId>"
    "<instanceState><name>running</name></instanceState></item>\n"
    "      </instancesSet>\n"
    "    </item>\n"
    "  </reservationSet>\n"
    "</DescribeInstancesResponse>\n";

static void check_describe_instances(xmlDocPtr doc) {
    xmlNodePtr root = xmlDocGetRootElement(doc);
    CHECK_STR(aws_xml_text(root, "requestId"), "8f7724cf");
    char seen[256] = "";
    AWS_XML_FOREACH(res, aws_xml_find(root, "reservationSet"), "item") {
        AWS_XML_FOREACH(inst, aws_xml_find(res, "instancesSet"), "item") {
            const char *cluster = aws_xml_tag(inst, "Cluster");
            size_t n = strlen(seen);
            snprintf(seen + n, sizeof(seen) - n, "%s/%s/%s/%s;", aws_xml_text(inst, "instanceId"),
                     aws_xml_text(inst, "instanceState/name"), cluster ? cluster : "-",
                     aws_xml_text(inst, "privateIpAddress") ? aws_xml_text(inst, "privateIpAddress")
                                                            : "-");
        }
    }
    CHECK_STR(seen, "i-0001/running/cluster1/10.0.0.1;i-0002/pending/cluster2 & more/-;"
                    "i-0003/running/-/-;");
    xmlNodePtr first = aws_xml_find(root, "reservationSet/item/instancesSet/item");
    CHECK_STR(aws_xml_text(first, "reason"), "");
    CHECK(aws_xml_text(first, "tagSet") == NULL);
    CHECK(aws_xml_text(first, "nosuch/name") == NULL);
    CHECK_STR(aws_xml_tag(first, "Deployment"), "lb");
    CHECK(aws_xml_tag(first, "Nope") == NULL);
    CHECK(aws_xml_find(NULL, "a") == NULL && aws_xml_next(NULL, "a") == NULL);
    CHECK(aws_xml_text(NULL, "a") == NULL && aws_xml_tag(NULL, "a") == NULL);
}

static void test_xml(void) {
    xmlDocPtr doc = xmlReadMemory(describe_instances, (int)strlen(describe_instances), NULL, NULL,
                                  XML_PARSE_NONET);
    CHECK(doc != NULL);
    if (doc) check_describe_instances(doc);
    xmlFreeDoc(doc);
}

/* ---- a scripted HTTP server on 127.0.0.1 ---- */

struct canned {
    int status; /* 0: read the request, answer nothing */
    const char *body;
};

struct server {
    int fd, port;
    const struct canned *replies;
    int n, served;
    char last[16384];    /* the last request, head and body */
    char heads[16][512]; /* the start of each request */
    pthread_t thread;
};

static ssize_t read_request(int fd, char *buf, size_t cap) {
    size_t len = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) != 1) return -1;
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r <= 0) return -1;
        buf[len += (size_t)r] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) continue;
        const char *cl = strcasestr(buf, "\r\nContent-Length:");
        size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
        if (len >= (size_t)(end + 4 - buf) + body) return (ssize_t)len;
        if (len + 1 >= cap) return -1;
    }
}

static void *serve(void *arg) {
    struct server *s = arg;
    for (; s->served < s->n; s->served++) {
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 5000) != 1) break;
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0) break;
        if (read_request(fd, s->last, sizeof(s->last)) > 0) {
            const struct canned *c = &s->replies[s->served];
            if (s->served < 16)
                snprintf(s->heads[s->served], sizeof(s->heads[0]), "%.511s", s->last);
            if (c->status) {
                char head[256];
                int n = snprintf(head, sizeof(head),
                                 "HTTP/1.1 %d Canned\r\nContent-Length: %zu\r\n"
                                 "Connection: close\r\n\r\n",
                                 c->status, strlen(c->body));
                if (write(fd, head, (size_t)n) != n ||
                    write(fd, c->body, strlen(c->body)) != (ssize_t)strlen(c->body))
                    perror("write");
            } else {
                char sink[64];
                struct pollfd q = {fd, POLLIN, 0};
                while (poll(&q, 1, 3000) == 1 && read(fd, sink, sizeof(sink)) > 0) {
                }
            }
        }
        close(fd);
    }
    return NULL;
}

static void server_start(struct server *s, const struct canned *replies, int n) {
    memset(s, 0, sizeof(*s));
    s->replies = replies;
    s->n = n;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) || listen(s->fd, 8) ||
        getsockname(s->fd, (struct sockaddr *)&a, &alen)) {
        perror("server");
        exit(1);
    }
    s->port = ntohs(a.sin_port);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", s->port);
    setenv("AWS_ENDPOINT_URL", url, 1);
    pthread_create(&s->thread, NULL, serve, s);
}

static void server_stop(struct server *s) {
    pthread_join(s->thread, NULL);
    close(s->fd);
}

static void live_env(struct server *s, const struct canned *replies, int n) {
    clear_env();
    env_keys();
    setenv("AWS_SESSION_TOKEN", "TOKEN123", 1);
    setenv("LB_AWS_RETRY_BASE_MS", "1", 1);
    server_start(s, replies, n);
}

static struct aws_client *live_client(struct server *s, const struct canned *replies, int n) {
    char err[512];
    live_env(s, replies, n);
    struct aws_client *c = aws_client_new("us-west-2", err, sizeof(err));
    if (!c) {
        fprintf(stderr, "aws_client_new: %s\n", err);
        exit(1);
    }
    return c;
}

static const char *body_of(const struct server *s) {
    const char *b = strstr(s->last, "\r\n\r\n");
    return b ? b + 4 : "";
}

static void test_query_retry(void) {
    const struct canned replies[] = {{503, "<html>busy</html>"}, {200, describe_instances}};
    struct server s;
    struct aws_client *c = live_client(&s, replies, 2);
    struct aws_form *f = aws_form_new();
    aws_form_add(f, "Filter.1.Name", "tag:Cluster");
    aws_form_add(f, "Filter.1.Value.1", "cluster 1");
    struct aws_error e;
    xmlDocPtr doc = aws_query(c, AWS_EC2, "DescribeInstances", f, &e);
    server_stop(&s);
    CHECK(doc != NULL);
    if (doc)
        check_describe_instances(doc);
    else
        fprintf(stderr, "aws_query: %s\n", e.message);
    xmlFreeDoc(doc);
    CHECK(s.served == 2);
    CHECK(!strncmp(s.last, "POST / HTTP/1.1\r\n", 17));
    CHECK(strstr(s.last, "\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"));
    CHECK(strstr(s.last, "\r\nX-Amz-Security-Token: TOKEN123\r\n"));
    CHECK(strstr(s.last, "Authorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/"));
    CHECK(strstr(s.last, "/us-west-2/ec2/aws4_request, "
                         "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, "));
    CHECK_STR(body_of(&s), "Action=DescribeInstances&Version=2016-11-15"
                           "&Filter.1.Name=tag%3ACluster&Filter.1.Value.1=cluster%201");
    aws_form_free(f);
    aws_client_free(c);
}

static void test_query_errors(void) {
    struct aws_error e;
    struct server s;
    const char *dry = "<Response><Errors><Error><Code>DryRunOperation</Code><Message>Request "
                      "would have succeeded, but DryRun flag is set.</Message></Error></Errors>"
                      "</Response>";
    const struct canned dry_run[] = {{412, dry}};
    struct aws_client *c = live_client(&s, dry_run, 1);
    struct aws_form *f = aws_form_new();
    aws_form_add(f, "DryRun", "true");
    CHECK(aws_query(c, AWS_EC2, "RunInstances", f, &e) == NULL);
    server_stop(&s);
    CHECK(e.dry_run_ok && e.http_status == 412 && s.served == 1);
    CHECK(strstr(body_of(&s), "&DryRun=true"));
    aws_form_free(f);
    aws_client_free(c);

    const char *limit = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>"
                        "Request limit exceeded.</Message></Error></Errors></Response>";
    const struct canned throttled[] = {{503, limit}, {503, limit}, {503, limit}};
    c = live_client(&s, throttled, 3);
    aws_client_set_retry(c, 3, 1, 5);
    CHECK(aws_query(c, AWS_EC2, "DescribeInstances", NULL, &e) == NULL);
    server_stop(&s);
    CHECK(s.served == 3 && !e.dry_run_ok);
    CHECK_STR(e.code, "RequestLimitExceeded");
    CHECK_STR(e.message, "RequestLimitExceeded: Request limit exceeded. (after 3 attempts)");
    CHECK_STR(body_of(&s), "Action=DescribeInstances&Version=2016-11-15");
    aws_client_free(c);

    const char *bad = "<Response><Errors><Error><Code>InvalidAMIID.Malformed</Code><Message>"
                      "Invalid id: \"x\"</Message></Error></Errors></Response>";
    const struct canned invalid[] = {{400, bad}};
    c = live_client(&s, invalid, 1);
    CHECK(aws_query(c, AWS_EC2, "RunInstances", NULL, &e) == NULL);
    server_stop(&s);
    CHECK(s.served == 1 && e.http_status == 400);
    CHECK_STR(e.message, "InvalidAMIID.Malformed: Invalid id: \"x\"");
    aws_client_free(c);

    /* CloudWatch: its Throttling comes as 400, then HTTP 429 without a body. */
    const char *cw_throttle = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
                              "<Message>Rate exceeded</Message></Error></ErrorResponse>";
    const struct canned cw[] = {{400, cw_throttle},
                                {429, ""},
                                {200, "<PutMetricDataResponse xmlns=\"http://monitoring."
                                      "amazonaws.com/doc/2010-08-01/\"><ResponseMetadata>"
                                      "<RequestId>r</RequestId></ResponseMetadata>"
                                      "</PutMetricDataResponse>"}};
    c = live_client(&s, cw, 3);
    xmlDocPtr doc = aws_query(c, AWS_CLOUDWATCH, "PutMetricData", NULL, &e);
    server_stop(&s);
    CHECK(doc && s.served == 3);
    CHECK_STR(aws_xml_text(xmlDocGetRootElement(doc), "ResponseMetadata/RequestId"), "r");
    CHECK(strstr(s.last, "/us-west-2/monitoring/aws4_request"));
    CHECK_STR(body_of(&s), "Action=PutMetricData&Version=2010-08-01");
    xmlFreeDoc(doc);
    CHECK(aws_query(c, AWS_SSM, "GetParameter", NULL, &e) == NULL);
    CHECK_STR(e.message, "ssm has no Query API");
    aws_client_free(c);

    const struct canned not_xml[] = {{200, "not xml"}};
    c = live_client(&s, not_xml, 1);
    CHECK(aws_query(c, AWS_EC2, "DescribeInstances", NULL, &e) == NULL);
    server_stop(&s);
    CHECK(strstr(e.message, "is not XML") != NULL);
    aws_client_free(c);
}

/* IAM is global: signed for us-east-1 whatever the client's region. */
static void test_iam(void) {
    const char *missing = "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">"
                          "<Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>The role "
                          "with name x cannot be found.</Message></Error><RequestId>r</RequestId>"
                          "</ErrorResponse>";
    const struct canned replies[] = {{404, missing}};
    struct server s;
    struct aws_client *c = live_client(&s, replies, 1);
    struct aws_form *f = aws_form_new();
    aws_form_add(f, "RoleName", "x");
    struct aws_error e;
    CHECK(aws_query(c, AWS_IAM, "GetRole", f, &e) == NULL);
    server_stop(&s);
    CHECK(s.served == 1 && e.http_status == 404);
    CHECK_STR(e.code, "NoSuchEntity");
    CHECK_STR(e.message, "NoSuchEntity: The role with name x cannot be found.");
    CHECK(strstr(s.last, "Credential=AKIDTEST/") &&
          strstr(s.last, "/us-east-1/iam/aws4_request, "));
    CHECK_STR(body_of(&s), "Action=GetRole&Version=2010-05-08&RoleName=x");
    aws_form_free(f);
    aws_client_free(c);
}

static void test_json(void) {
    struct aws_error e;
    struct server s;
    const struct canned ok[] = {{500, "{\"__type\":\"InternalServerError\",\"message\":\"oops\"}"},
                                {200, "{\"Parameter\":{\"Name\":\"/x\",\"Value\":\"ami-0123\"}}"}};
    struct aws_client *c = live_client(&s, ok, 2);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "Name", "/aws/service/ami");
    cJSON *reply = aws_json(c, AWS_SSM, "AmazonSSM.GetParameter", req, &e);
    server_stop(&s);
    CHECK(reply != NULL && s.served == 2);
    CHECK_STR(
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(reply, "Parameter"), "Value")),
        "ami-0123");
    CHECK(strstr(s.last, "\r\nContent-Type: application/x-amz-json-1.1\r\n"));
    CHECK(strstr(s.last, "\r\nX-Amz-Target: AmazonSSM.GetParameter\r\n"));
    CHECK(strstr(s.last, "/us-west-2/ssm/aws4_request, SignedHeaders=content-type;host;"
                         "x-amz-date;x-amz-security-token;x-amz-target, "));
    CHECK_STR(body_of(&s), "{\"Name\":\"/aws/service/ami\"}");
    cJSON_Delete(reply);
    cJSON_Delete(req);
    aws_client_free(c);

    const struct canned missing[] = {
        {400, "{\"__type\":\"ParameterNotFound\",\"message\":\"Parameter /x not found.\"}"}};
    c = live_client(&s, missing, 1);
    CHECK(aws_json(c, AWS_SSM, "AmazonSSM.GetParameter", NULL, &e) == NULL);
    server_stop(&s);
    CHECK(s.served == 1 && e.http_status == 400);
    CHECK_STR(e.message, "ParameterNotFound: Parameter /x not found.");
    CHECK_STR(body_of(&s), "{}");
    aws_client_free(c);
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_transport(void) {
    struct aws_error e;
    struct server s;
    const struct canned silent[] = {{0, NULL}};
    struct aws_client *c = live_client(&s, silent, 1);
    aws_client_set_retry(c, 1, 1, 1);
    aws_client_set_timeouts(c, 1000, 300);
    long t0 = now_ms();
    CHECK(aws_query(c, AWS_EC2, "DescribeInstances", NULL, &e) == NULL);
    long took = now_ms() - t0;
    aws_client_free(c);
    server_stop(&s);
    CHECK(took >= 250 && took < 3000);
    CHECK(strstr(e.message, "cannot reach http://127.0.0.1:") && strstr(e.message, "timed out"));
    CHECK(e.http_status == 0 && !e.code[0]);

    /* A port nobody listens on: the server is gone once it has served. */
    c = live_client(&s, silent, 0);
    server_stop(&s);
    aws_client_set_retry(c, 2, 1, 1);
    CHECK(aws_query(c, AWS_EC2, "DescribeInstances", NULL, &e) == NULL);
    CHECK(strstr(e.message, "cannot reach") && strstr(e.message, "(after 2 attempts)"));
    aws_client_free(c);
}

static void *query_thread(void *arg) {
    char err[512];
    struct aws_error e;
    struct aws_client *c = aws_client_new("us-west-2", err, sizeof(err));
    xmlDocPtr doc = c ? aws_query(c, AWS_EC2, "DescribeInstances", NULL, &e) : NULL;
    *(bool *)arg = doc && aws_xml_text(xmlDocGetRootElement(doc), "requestId");
    xmlFreeDoc(doc);
    aws_client_free(c);
    return NULL;
}

/* One client per thread, all at once (run under TSan too). */
static void test_threads(void) {
    enum { N = 4 };
    const struct canned replies[N] = {{200, describe_instances},
                                      {200, describe_instances},
                                      {200, describe_instances},
                                      {200, describe_instances}};
    struct server s;
    live_env(&s, replies, N);
    pthread_t t[N];
    bool ok[N] = {false};
    for (int i = 0; i < N; i++)
        pthread_create(&t[i], NULL, query_thread, &ok[i]);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    server_stop(&s);
    CHECK(s.served == N);
    for (int i = 0; i < N; i++)
        CHECK(ok[i]);
}

/* ---- instance metadata: the scripted server plays 169.254.169.254 ---- */

static void imds_env(struct server *s, const struct canned *replies, int n) {
    clear_env();
    unsetenv("AWS_EC2_METADATA_DISABLED");
    server_start(s, replies, n);
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", getenv("AWS_ENDPOINT_URL"), 1);
}

/* A role's credentials document for key, expiring in expires_s. */
static void creds_doc(char *out, size_t len, const char *key, long expires_s) {
    char when[32];
    time_t t = time(NULL) + expires_s;
    struct tm tm;
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    snprintf(out, len,
             "{\"Code\":\"Success\",\"LastUpdated\":\"2026-01-01T00:00:00Z\",\"Type\":"
             "\"AWS-HMAC\",\"AccessKeyId\":\"%s\",\"SecretAccessKey\":\"secret-%s\",\"Token\":"
             "\"token-%s\",\"Expiration\":\"%s\"}",
             key, key, key, when);
}

static bool head_is(const struct server *s, int i, const char *line, const char *header) {
    return !strncmp(s->heads[i], line, strlen(line)) && strstr(s->heads[i], header);
}

/* No keys, no profile: the instance's role, through a session token.
 * Credentials within 5 minutes of their expiry are fetched again by the next
 * client and before the next call of a client that holds them; others are
 * shared without asking. */
static void test_imds_credentials(void) {
    char err[1024], soon1[512], soon2[512], later[512];
    creds_doc(soon1, sizeof(soon1), "ASIASOON1", 120);
    creds_doc(soon2, sizeof(soon2), "ASIASOON2", 240);
    creds_doc(later, sizeof(later), "ASIALATER", 3600);
    const struct canned replies[] = {{200, "TOKEN-1"},         {200, "lb-proxy\n"}, {200, soon1},
                                     {200, "TOKEN-2"},         {200, "lb-proxy"},   {200, soon2},
                                     {200, "TOKEN-3"},         {200, "lb-proxy"},   {200, later},
                                     {200, describe_instances}};
    struct server s;
    imds_env(&s, replies, 10);
    struct aws_client *c1 = client("us-west-2", err, sizeof(err));
    struct aws_client *c2 = client("us-west-2", err, sizeof(err));
    struct aws_error e;
    xmlDocPtr doc = c1 ? aws_query(c1, AWS_EC2, "DescribeInstances", NULL, &e) : NULL;
    server_stop(&s);
    CHECK(c1 && c2 && doc && s.served == 10);
    xmlFreeDoc(doc);
    CHECK(c2 && !strcmp(aws_client_access_key_id(c2), "ASIASOON2"));
    CHECK(c1 && !strcmp(aws_client_access_key_id(c1), "ASIALATER"));
    CHECK(c1 && !strcmp(aws_client_credentials_source(c1), "instance metadata (role lb-proxy)"));
    CHECK(head_is(&s, 0, "PUT /latest/api/token HTTP/1.1\r\n",
                  "\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n"));
    CHECK(head_is(&s, 1, "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\n",
                  "\r\nX-aws-ec2-metadata-token: TOKEN-1\r\n"));
    CHECK(head_is(&s, 2, "GET /latest/meta-data/iam/security-credentials/lb-proxy HTTP/1.1\r\n",
                  "\r\nX-aws-ec2-metadata-token: TOKEN-1\r\n"));
    CHECK(head_is(&s, 6, "PUT /latest/api/token ", "ttl-seconds: 21600\r\n"));
    CHECK(head_is(&s, 8, "GET /latest/meta-data/iam/security-credentials/lb-proxy ",
                  "\r\nX-aws-ec2-metadata-token: TOKEN-3\r\n"));
    CHECK(strstr(s.last, "Credential=ASIALATER/") &&
          strstr(s.last, "\r\nX-Amz-Security-Token: token-ASIALATER\r\n"));
    aws_client_free(c1);
    aws_client_free(c2);

    /* They last an hour: the next client takes them as they are (the
     * server is gone: asking it would fail). */
    struct aws_client *c = client("us-west-2", err, sizeof(err));
    CHECK(c && !strcmp(aws_client_access_key_id(c), "ASIALATER"));
    aws_client_free(c);
}

static void test_imds_failures(void) {
    char err[1024];
    struct server s;

    /* Off: the error says where else it looked. */
    clear_env();
    write_file(".aws/config", "[default]\nregion = us-east-2\n");
    CHECK(client(NULL, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "profile 'default' has no aws_access_key_id in ") &&
          strstr(err, "(AWS_EC2_METADATA_DISABLED)"));
    char path[256];
    snprintf(path, sizeof(path), "%s/.aws/config", home);
    unlink(path);

    /* Nothing answers: a fast failure that names the metadata service. */
    const struct canned silent[] = {{0, NULL}};
    imds_env(&s, silent, 1);
    long t0 = now_ms();
    CHECK(client("us-west-2", err, sizeof(err)) == NULL);
    long took = now_ms() - t0;
    server_stop(&s);
    CHECK(took >= 1500 && took < 3000);
    CHECK(strstr(err, "no AWS credentials: AWS_ACCESS_KEY_ID is not set, profile 'default' is in "
                      "neither ") &&
          strstr(err, "PUT http://127.0.0.1:") && strstr(err, "/latest/api/token: ") &&
          strstr(err, "timed out"));

    /* An instance without a role; a role EC2 cannot assume. */
    const struct canned no_role[] = {{200, "T"}, {404, "Not Found"}};
    imds_env(&s, no_role, 2);
    CHECK(client("us-west-2", err, sizeof(err)) == NULL);
    server_stop(&s);
    CHECK(strstr(err, "no IAM role on this instance") && strstr(err, "attach an instance profile"));
    const struct canned refused[] = {
        {200, "T"},
        {200, "lb-proxy"},
        {200, "{\"Code\":\"AssumeRoleUnauthorizedAccess\",\"Message\":\"EC2 cannot assume the "
              "role lb-proxy.\"}"}};
    imds_env(&s, refused, 3);
    CHECK(client("us-west-2", err, sizeof(err)) == NULL);
    server_stop(&s);
    CHECK(strstr(err, "the credentials of role lb-proxy: AssumeRoleUnauthorizedAccess: EC2 cannot "
                      "assume the role lb-proxy.") != NULL);
}

/* The region too, when nothing else names one. */
static void test_imds_region(void) {
    char err[1024];
    const struct canned replies[] = {{200, "T"}, {200, "eu-south-2"}};
    struct server s;
    imds_env(&s, replies, 2);
    env_keys();
    struct aws_client *c = client(NULL, err, sizeof(err));
    server_stop(&s);
    CHECK(c && !strcmp(aws_client_region(c), "eu-south-2"));
    CHECK(head_is(&s, 1, "GET /latest/meta-data/placement/region HTTP/1.1\r\n",
                  "\r\nX-aws-ec2-metadata-token: T\r\n"));
    aws_client_free(c);
}

int main(void) {
    log_init("test_aws", LOG_ERROR);
    snprintf(home, sizeof(home), "/tmp/test_aws.XXXXXX");
    if (!mkdtemp(home)) {
        perror("mkdtemp");
        return 1;
    }
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/.aws", home);
    mkdir(dir, 0700);

    test_form();
    test_credentials();
    test_region();
    test_endpoints();
    test_errors();
    test_xml();
    test_query_retry();
    test_query_errors();
    test_iam();
    test_json();
    test_transport();
    test_threads();
    test_imds_credentials();
    test_imds_failures();
    test_imds_region();

    char path[256];
    snprintf(path, sizeof(path), "%s/creds", home);
    unlink(path);
    snprintf(path, sizeof(path), "%s/conf", home);
    unlink(path);
    rmdir(dir);
    rmdir(home);
    return test_summary();
}
