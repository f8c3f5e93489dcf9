/* awsctl: flags and commands. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libssh2.h>

#include "flags.h"

static const char usage[] =
    "usage: awsctl up     [--region R] [--name DEPLOYMENT] [--micro 4] [--large 4]\n"
    "                     [--lb-type t2.large] [--ami ID] [--key-name NAME] [--ssh-key FILE]\n"
    "                     [--allow-cidr CIDR|auto] [--state FILE] [--wait-timeout S] "
    "[--dry-run]\n"
    "       awsctl down   [--region R] [--name DEPLOYMENT] [--state FILE] [--wait-timeout S]\n"
    "       awsctl status [--region R] [--name DEPLOYMENT] [--state FILE]\n"
    "\n"
    "up launches --micro t2.micro instances (cluster1), --large t2.large (cluster2) and one\n"
    "--lb-type proxy in the default VPC, all tagged Deployment=DEPLOYMENT, pushes backend,\n"
    "proxy and the bootstraps over SSH and prints the proxy's URLs. The proxy instance gets\n"
    "the IAM role awsctl-DEPLOYMENT-proxy (ec2:DescribeInstances, cloudwatch:PutMetricData)\n"
    "for its EC2 discovery and CloudWatch metrics. down terminates every instance tagged\n"
    "with the deployment and removes what up created. status shows the instances and\n"
    "whether they answer. Defaults: --name lb-demo, --state awsctl-DEPLOYMENT.json,\n"
    "--allow-cidr auto, --wait-timeout 300.\n"
    "Credentials, region and endpoints as the AWS CLI reads them (AWS_ACCESS_KEY_ID,\n"
    "AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, ...).\n"
    "\n"
    "Environment:\n"
    "  AWSCTL_SSH_USER (ec2-user), AWSCTL_SSH_PORT (22)   how up logs in to the instances\n"
    "  AWSCTL_REMOTE_DIR (/opt/lb)        where the files go on an instance;\n"
    "  AWSCTL_REMOTE_PER_INSTANCE=1       ... in <dir>/<instance-id> (many instances, one host)\n"
    "  AWSCTL_SERVICE_MODE (auto)         systemd, nohup or auto: how the bootstraps start\n"
    "  AWSCTL_PROXY_ADMIN (127.0.0.1:9000) the proxy's admin listener\n"
    "  AWSCTL_FORWARD_ENV                 names of variables passed on to the proxy\n"
    "  AWSCTL_CHECKIP_URL (https://checkip.amazonaws.com)  for --allow-cidr auto\n"
    "  AWSCTL_SCRIPTS_DIR, AWSCTL_CJSON_LIB  the bootstraps, the libcjson.so.1 pushed\n"
    "\n"
    "Exit status: 0 done (status: all healthy), 1 failed (AWS errors are shown as\n"
    "Code: Message; status: something does not answer), 2 bad flags.\n";

struct args {
    const char *cmd, *region, *name, *state;
    bool dry_run;
    struct up_opts up;
};

static bool name_ok(const char *s) {
    size_t n = strlen(s);
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') return false;
    return n > 0 && n <= 64;
}

static bool type_ok(const char *s) {
    const char *dot = strchr(s, '.');
    if (!dot || dot == s || !dot[1] || strlen(s) > 31) return false;
    for (const char *p = s; *p; p++)
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '.' && *p != '-')
            return false;
    return true;
}

static bool cidr_ok(const char *s) {
    char ip[64];
    const char *slash = strchr(s, '/');
    struct in_addr a;
    if (!slash || (size_t)(slash - s) >= sizeof(ip)) return false;
    snprintf(ip, sizeof(ip), "%.*s", (int)(slash - s), s);
    char *end;
    long bits = strtol(slash + 1, &end, 10);
    return inet_pton(AF_INET, ip, &a) == 1 && slash[1] && !*end && bits >= 0 && bits <= 32;
}

static void check_up_value(const char *flag, const char *v) {
    if (!strcmp(flag, "--lb-type") && !type_ok(v))
        flags_die("--lb-type: '%s' is not an instance type such as t2.large", v);
    if (!strcmp(flag, "--ami") && (strncmp(v, "ami-", 4) || strlen(v) > 30))
        flags_die("--ami: '%s' is not an AMI id (ami-...)", v);
    if (!strcmp(flag, "--allow-cidr") && strcmp(v, "auto") && !cidr_ok(v))
        flags_die("--allow-cidr: '%s' is not an IPv4 CIDR such as 203.0.113.7/32, or auto", v);
    if (!strcmp(flag, "--ssh-key") && access(v, R_OK)) flags_die("--ssh-key: cannot read %s", v);
    if (!strcmp(flag, "--key-name") && (!*v || strlen(v) > 255))
        flags_die("--key-name: expected 1 to 255 characters");
}

static void set_flag(struct args *a, const char *flag, const char *v) {
    if (!strcmp(flag, "--region")) a->region = v;
    if (!strcmp(flag, "--name")) a->name = v;
    if (!strcmp(flag, "--state")) a->state = v;
    if (!strcmp(flag, "--dry-run")) a->dry_run = true;
    if (!strcmp(flag, "--micro")) a->up.micro = (int)flags_uint(flag, v, 0, 50);
    if (!strcmp(flag, "--large")) a->up.large = (int)flags_uint(flag, v, 0, 50);
    if (!strcmp(flag, "--wait-timeout")) a->up.wait_timeout = (long)flags_uint(flag, v, 1, 86400);
    if (!strcmp(flag, "--lb-type")) a->up.lb_type = v;
    if (!strcmp(flag, "--ami")) a->up.ami = v;
    if (!strcmp(flag, "--key-name")) a->up.key_name = v;
    if (!strcmp(flag, "--ssh-key")) a->up.ssh_key = v;
    if (!strcmp(flag, "--allow-cidr")) a->up.allow_cidr = v;
    check_up_value(flag, v ? v : "");
}

static void parse(int argc, char **argv, struct args *a) {
    static const char *const up_flags[] = {"--region",     "--name",  "--micro",        "--large",
                                           "--lb-type",    "--ami",   "--key-name",     "--ssh-key",
                                           "--allow-cidr", "--state", "--wait-timeout", NULL};
    static const char *const down_flags[] = {"--region", "--name", "--state", "--wait-timeout",
                                             NULL};
    static const char *const status_flags[] = {"--region", "--name", "--state", NULL};
    static const char *const up_switches[] = {"--dry-run", NULL};
    bool up = !strcmp(a->cmd, "up"), down = !strcmp(a->cmd, "down");
    for (int i = 2; i < argc; i++) {
        const char *v;
        const char *flag = flags_next(argc, argv, &i,
                                      up     ? up_flags
                                      : down ? down_flags
                                             : status_flags,
                                      up ? up_switches : NULL, &v);
        if (!flag) flags_die("unexpected argument '%s'", argv[i]);
        set_flag(a, flag, v);
    }
    if (a->region && (!*a->region || !name_ok(a->region)))
        flags_die("--region: '%s' is not a region name such as us-east-1", a->region);
    if (!name_ok(a->name))
        flags_die("--name: '%s' must be 1 to 64 letters, digits, '-' or '_'", a->name);
}

/* The region: --region, else the state file's, else as the AWS CLI finds it. */
static struct aws_client *client_for(const struct args *a, struct state *st) {
    if (a->region && st->region[0] && strcmp(a->region, st->region)) {
        fail("%s is for region %s, not %s (--region)", st->path, st->region, a->region);
        return NULL;
    }
    char err[512];
    struct aws_client *c = aws_client_new(a->region ? a->region : st->region, err, sizeof(err));
    if (!c) fail("%s", err);
    if (c) copy_str(st->region, sizeof(st->region), aws_client_region(c));
    return c;
}

static int run(const struct args *a) {
    char path[PATH_MAX];
    if (a->state)
        copy_str(path, sizeof(path), a->state);
    else
        snprintf(path, sizeof(path), "awsctl-%s.json", a->name);
    struct state *st = state_new(path, a->name);
    bool found = false;
    if (!st || !state_load(st, &found)) {
        if (!st) fail("out of memory");
        free(st);
        return 1;
    }
    struct ctl c = {.st = st, .dry_run = a->dry_run, .aws = client_for(a, st)};
    int rc = 1;
    if (c.aws && !strcmp(a->cmd, "up")) rc = cmd_up(&c, &a->up);
    if (c.aws && !strcmp(a->cmd, "down")) rc = cmd_down(&c, a->up.wait_timeout);
    if (c.aws && !strcmp(a->cmd, "status")) rc = cmd_status(&c);
    aws_client_free(c.aws);
    free(st);
    return rc;
}

int main(int argc, char **argv) {
    flags_init("awsctl");
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("awsctl %s\n", LB_VERSION);
        return 0;
    }
    struct args a = {.cmd = argv[1],
                     .name = "lb-demo",
                     .up = {.micro = 4,
                            .large = 4,
                            .lb_type = "t2.large",
                            .allow_cidr = "auto",
                            .wait_timeout = 300}};
    if (strcmp(a.cmd, "up") && strcmp(a.cmd, "down") && strcmp(a.cmd, "status"))
        flags_die("unknown command '%s' (expected up, down or status)", a.cmd);
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help")) {
            fputs(usage, stdout);
            return 0;
        }
    parse(argc, argv, &a);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (libssh2_init(0)) {
        fail("cannot initialise libssh2");
        return 1;
    }
    int rc = run(&a);
    libssh2_exit();
    return rc;
}
