/* awsctl down: terminates every instance tagged with the deployment (the
 * state file or not), then takes away the rules, the group, the key pair and
 * the proxy's IAM role and instance profile that up made, and the state file
 * last. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cmd_down(struct ctl *c, long timeout_s) {
    struct state *st = c->st;
    say("down: deployment %s in %s", st->name, st->region);
    if (!instances_terminate(c, timeout_s) || !state_save(st)) return 1;
    if (!ec2_network(c) || !ec2_remove_group(c, timeout_s) || !ec2_delete_key_pair(c) ||
        !state_save(st) || !iam_down(c))
        return 1;
    if (st->key_file_created && unlink(st->key_path) != 0 && errno != ENOENT)
        fail("cannot remove the private key %s: %s", st->key_path, strerror(errno));
    if (!state_remove(st)) return 1;
    say("deployment %s is down", st->name);
    return 0;
}
