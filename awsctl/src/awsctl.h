/* awsctl: launches the proxy and two clusters of backends on EC2 and pushes
 * the binaries to them over SSH. The pieces: flags and commands (main.c), the
 * state file (state.c), EC2 and SSM calls (ec2.c, instances.c), the proxy
 * instance's IAM role (iam.c), SSH key files (keys.c), libssh2 sessions
 * (ssh.c), the files pushed and the bootstraps run (push.c), the commands
 * (up.c, down.c, status.c) and small helpers (util.c). */
#ifndef AWSCTL_H
#define AWSCTL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "aws.h"

#define MAX_INSTANCES 128
#define MAX_CIDRS     8
#define APP_PORT      8000       /* the backends' and the proxy's port */
#define CW_NAMESPACE  "CustomLB" /* where the proxies publish to CloudWatch */

struct instance {
    char id[32];
    char role[16];    /* "backend" or "proxy" */
    char cluster[32]; /* "cluster1", "cluster2"; "" for the proxy */
    char type[32];
    char state[24];
    char subnet[48];
    char public_ip[48], private_ip[48];
    char host_key[1024]; /* "ssh-ed25519 AAAA…": recorded on first contact */
};

/* What awsctl made for a deployment: written after every step of `up`, so
 * that `up` and `down` can continue from any point. */
struct state {
    char path[PATH_MAX];
    char name[128], region[64];
    char epoch[40]; /* random per deployment: part of every ClientToken */
    char vpc_id[48];
    char sg_id[48];
    bool sg_created;
    char cidrs[MAX_CIDRS][48]; /* the --allow-cidr rules authorized */
    int ncidrs;
    char key_name[256], key_path[PATH_MAX];
    bool key_created;      /* the key pair: awsctl created or imported it */
    bool key_file_created; /* the private key file: awsctl wrote it (CreateKeyPair) */
    char ami[64];
    char iam_role[72], iam_profile[72]; /* the proxy's role and instance profile */
    struct instance inst[MAX_INSTANCES];
    int ninst;
};

struct up_opts {
    const char *lb_type, *ami, *key_name, *ssh_key, *allow_cidr;
    int micro, large;
    long wait_timeout;
};

/* One command's context. */
struct ctl {
    struct aws_client *aws;
    struct state *st;
    bool dry_run;
    /* dry run: would be created, so not named in RunInstances */
    bool sg_pending, key_pending, profile_pending;
    struct aws_error err; /* of the last change that did not go through (ctl_mutate) */
};

/* util.c */
void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
double now_s(void);
void sleep_s(double s);
char *read_file(const char *path, size_t *len, char *err, size_t errlen);
bool write_file_atomic(const char *path, const char *data, size_t len, int mode, char *err,
                       size_t errlen);
/* GET url with libcurl: the status (0 when none) and up to outlen-1 bytes of body. */
long http_get(const char *url, long timeout_ms, char *out, size_t outlen, char *err, size_t errlen);
const char *env_or(const char *name, const char *fallback);
bool copy_str(char *dst, size_t len, const char *src);
/* The directory of path (for "x" it is "."), in out. */
void dir_of(const char *path, char *out, size_t len);

/* keys.c */
bool b64_encode(const unsigned char *in, size_t len, char *out, size_t outlen);
/* Decodes base64 text (whitespace ignored) into *out (free it): its length, or -1. */
long b64_decode(const char *text, size_t textlen, unsigned char **out);
/* The "type base64" public line of the SSH key at path (from path.pub or the
 * private key), or false with the reason; only ed25519 keys are accepted. */
bool key_public_line(const char *path, char *out, size_t outlen, char *err, size_t errlen);

/* state.c */
struct state *state_new(const char *path, const char *name);
/* Loads path into st; *found false when it does not exist. */
bool state_load(struct state *st, bool *found);
bool state_save(const struct state *st);
bool state_remove(const struct state *st);
struct instance *state_find(struct state *st, const char *id);
/* state_save, except in a dry run, which writes nothing. */
bool ctl_save(struct ctl *c);

/* ec2.c: calls print what failed ("<what>: Code: Message") and return false. */
enum mut { MUT_FAILED, MUT_DONE, MUT_WOULD, MUT_TOLERATED };
/* A read-only call: the reply, or NULL (printed). */
xmlDocPtr ec2_read(struct ctl *c, const char *action, struct aws_form *f);
/* A Query call to svc that changes something. In a dry run, an EC2 call
 * carries DryRun=true and prints "would: <what>" when EC2 says it would
 * succeed; IAM has no DryRun: the call is not made, "would: <what>" printed.
 * MUT_TOLERATED: it failed with a code in tolerated (NULL-terminated, may be
 * NULL), not printed. The error of a call that did not go through is left in
 * c->err. *doc (doc may be NULL) gets the reply. */
enum mut ctl_mutate(struct ctl *c, enum aws_service svc, const char *action, struct aws_form *f,
                    const char *what, const char *const *tolerated, xmlDocPtr *doc);
/* ctl_mutate for EC2. */
enum mut ec2_mutate(struct ctl *c, const char *action, struct aws_form *f, const char *what,
                    const char *const *tolerated, xmlDocPtr *doc);
/* TagSpecification.<spec> for rtype: Deployment=<name>, CreatedBy=awsctl and
 * the key/value pairs of extra (NULL-terminated, may be NULL). */
void ec2_tags(struct aws_form *f, int spec, const char *rtype, const char *name,
              const char *const *extra);
bool ec2_network(struct ctl *c);
bool ec2_security_group(struct ctl *c, const char *cidr);
/* down: revokes the rules of the state (looking the group up by name when
 * the state has none) and deletes the group when awsctl created it. */
bool ec2_remove_group(struct ctl *c, long timeout_s);
bool ec2_key_pair(struct ctl *c, const struct up_opts *o);
bool ec2_delete_key_pair(struct ctl *c);
bool ec2_ami(struct ctl *c, const char *ami);

/* iam.c: the proxy instance's role (awsctl-<name>-proxy), allowed
 * ec2:DescribeInstances and cloudwatch:PutMetricData, in an instance profile of
 * the same name. */
/* Sets the state's role and profile names; false when the deployment's name
 * makes them too long for IAM. */
bool iam_names(struct state *st);
/* up: makes the role, its inline policy and the profile, or finds them
 * (created by awsctl for this deployment: tagged so). A dry run only reads. */
bool iam_up(struct ctl *c);
/* down: takes the role out of the profile and deletes both, when they are
 * awsctl's for this deployment; what is already gone is no error. */
bool iam_down(struct ctl *c);

/* instances.c */
/* The deployment's instances (by tag) in the given states ("pending,running"). */
bool instances_describe(struct ctl *c, const char *states, struct instance *out, int *n, int max);
bool instances_launch(struct ctl *c, const struct up_opts *o);
bool instances_wait_ready(struct ctl *c, long timeout_s, int ssh_port);
bool instances_terminate(struct ctl *c, long timeout_s);

/* ssh.c */
struct ssh;
/* Connects to host:port, checks (or records, when *host_key is "") the host
 * key and logs in with the private key at key_path. */
struct ssh *ssh_open(const char *host, int port, const char *user, const char *key_path,
                     char *host_key, size_t host_key_len, char *err, size_t errlen);
void ssh_close(struct ssh *s);
bool ssh_upload(struct ssh *s, const char *local, const char *remote, int mode, char *err,
                size_t errlen);
bool ssh_upload_mem(struct ssh *s, const char *data, size_t len, const char *remote, int mode,
                    char *err, size_t errlen);
/* Runs cmd; *status its exit status, out the tail of its output. */
bool ssh_exec(struct ssh *s, const char *cmd, int *status, char *out, size_t outlen, char *err,
              size_t errlen);
/* Whether host:port answers with an SSH banner within timeout_ms. */
bool ssh_banner(const char *host, int port, long timeout_ms);

/* push.c */
bool push_all(struct ctl *c);
bool push_check_files(char *err, size_t errlen);
int ssh_port(void);
/* The CloudWatch LoadBalancer name of every proxy of the deployment
 * ("app/<name>"): the proxies add up as one load balancer. */
void push_load_balancer(const struct state *st, char *out, size_t len);

/* commands */
int cmd_up(struct ctl *c, const struct up_opts *o);
int cmd_down(struct ctl *c, long timeout_s);
int cmd_status(struct ctl *c);

#endif
