/* awsctl up: the proxy's IAM role, security group, key pair, AMI, instances,
 * wait, push. Each step saves the state file, so that a rerun continues where
 * one stopped. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* --allow-cidr auto: this machine's public address as checkip sees it. */
static bool resolve_cidr(const char *arg, char *out, size_t len) {
    if (strcmp(arg, "auto")) return copy_str(out, len, arg);
    const char *url = env_or("AWSCTL_CHECKIP_URL", "https://checkip.amazonaws.com");
    char body[256], err[512];
    long status = http_get(url, 10000, body, sizeof(body), err, sizeof(err));
    if (status != 200) {
        if (status) snprintf(err, sizeof(err), "GET %s: HTTP %ld", url, status);
        fail("--allow-cidr auto: cannot learn this machine's public address: %s (pass "
             "--allow-cidr CIDR)",
             err);
        return false;
    }
    char *s = body, *e;
    while (isspace((unsigned char)*s))
        s++;
    for (e = s; *e && !isspace((unsigned char)*e); e++) {
    }
    *e = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1) {
        fail("--allow-cidr auto: %s answered '%.40s', not an IPv4 address (pass --allow-cidr "
             "CIDR)",
             url, s);
        return false;
    }
    if (snprintf(out, len, "%s/32", s) >= (int)len) return false;
    say("allowing %s (this machine's public address, from %s)", out, url);
    return true;
}

static void print_urls(const struct state *st) {
    for (int i = 0; i < st->ninst; i++) {
        if (strcmp(st->inst[i].role, "proxy")) continue;
        say("http://%s:%d/cluster1", st->inst[i].public_ip, APP_PORT);
        say("http://%s:%d/cluster2", st->inst[i].public_ip, APP_PORT);
    }
}

int cmd_up(struct ctl *c, const struct up_opts *o) {
    char cidr[64], err[PATH_MAX + 256], line[8192];
    /* Whatever can be refused here is refused before anything is created. */
    if ((!c->dry_run && !push_check_files(err, sizeof(err))) ||
        (o->ssh_key && !key_public_line(o->ssh_key, line, sizeof(line), err, sizeof(err)))) {
        fail("%s", err);
        return 1;
    }
    if (!iam_names(c->st)) {
        fail("--name %s: too long for the proxy's IAM role awsctl-%s-proxy (IAM allows 64 "
             "characters: --name may have 51)",
             c->st->name, c->st->name);
        return 1;
    }
    if (!resolve_cidr(o->allow_cidr, cidr, sizeof(cidr))) return 1;
    say("%s deployment %s in %s (state %s)", c->dry_run ? "dry run of" : "up:", c->st->name,
        c->st->region, c->dry_run ? "not written" : c->st->path);
    /* IAM first: its changes take seconds to reach EC2, and an operator
     * without IAM permissions is told so before anything is launched. */
    if (!ctl_save(c) || !ec2_network(c) || !iam_up(c) || !ec2_security_group(c, cidr) ||
        !ec2_key_pair(c, o) || !ec2_ami(c, o->ami) || !instances_launch(c, o))
        return 1;
    if (c->dry_run) {
        say("dry run: nothing was created or changed");
        return 0;
    }
    if (!instances_wait_ready(c, o->wait_timeout, ssh_port()) || !push_all(c)) return 1;
    say("deployment %s is up:", c->st->name);
    print_urls(c->st);
    return 0;
}
