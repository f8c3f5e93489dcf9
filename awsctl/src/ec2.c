/* EC2 and SSM calls for the deployment's network, security group, key pair
 * and AMI, and the path of every call that changes something (ctl_mutate).
 * Every resource is tagged Deployment=<name> and CreatedBy=awsctl, so that
 * `down` finds what `up` made even without the state file. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AL2023_PARAM "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"

static bool listed(const char *const *list, const char *s) {
    for (; list && *list; list++)
        if (!strcmp(*list, s)) return true;
    return false;
}

xmlDocPtr ec2_read(struct ctl *c, const char *action, struct aws_form *f) {
    struct aws_error err;
    xmlDocPtr doc = aws_query(c->aws, AWS_EC2, action, f, &err);
    if (!doc) fail("%s: %s", action, err.message);
    return doc;
}

enum mut ctl_mutate(struct ctl *c, enum aws_service svc, const char *action, struct aws_form *f,
                    const char *what, const char *const *tolerated, xmlDocPtr *doc) {
    if (c->dry_run && svc == AWS_IAM) {
        say("would: %s", what);
        return MUT_WOULD;
    }
    if (c->dry_run) aws_form_add(f, "DryRun", "true");
    xmlDocPtr d = aws_query(c->aws, svc, action, f, &c->err);
    if (d) {
        if (doc)
            *doc = d;
        else
            xmlFreeDoc(d);
        return MUT_DONE;
    }
    if (c->dry_run && c->err.dry_run_ok) {
        say("would: %s", what);
        return MUT_WOULD;
    }
    if (listed(tolerated, c->err.code)) return MUT_TOLERATED;
    fail("%s (%s): %s", what, action, c->err.message);
    return MUT_FAILED;
}

enum mut ec2_mutate(struct ctl *c, const char *action, struct aws_form *f, const char *what,
                    const char *const *tolerated, xmlDocPtr *doc) {
    return ctl_mutate(c, AWS_EC2, action, f, what, tolerated, doc);
}

void ec2_tags(struct aws_form *f, int spec, const char *rtype, const char *name,
              const char *const *extra) {
    char p[64];
    snprintf(p, sizeof(p), "TagSpecification.%d.ResourceType", spec);
    aws_form_add(f, p, rtype);
    const char *base[] = {"Deployment", name, "CreatedBy", "awsctl"};
    int n = 0;
    for (int i = 0; i < 4; i += 2) {
        snprintf(p, sizeof(p), "TagSpecification.%d.Tag.%d.Key", spec, ++n);
        aws_form_add(f, p, base[i]);
        snprintf(p, sizeof(p), "TagSpecification.%d.Tag.%d.Value", spec, n);
        aws_form_add(f, p, base[i + 1]);
    }
    for (; extra && extra[0] && extra[1]; extra += 2) {
        snprintf(p, sizeof(p), "TagSpecification.%d.Tag.%d.Key", spec, ++n);
        aws_form_add(f, p, extra[0]);
        snprintf(p, sizeof(p), "TagSpecification.%d.Tag.%d.Value", spec, n);
        aws_form_add(f, p, extra[1]);
    }
}

static bool created_by_us(xmlNodePtr item, const char *name) {
    const char *by = aws_xml_tag(item, "CreatedBy"), *dep = aws_xml_tag(item, "Deployment");
    return by && dep && !strcmp(by, "awsctl") && !strcmp(dep, name);
}

/* ---- network ---- */

bool ec2_network(struct ctl *c) {
    struct state *st = c->st;
    struct aws_form *f = aws_form_new();
    aws_form_filter(f, 1, "is-default", "true");
    xmlDocPtr doc = ec2_read(c, "DescribeVpcs", f);
    aws_form_free(f);
    if (!doc) return false;
    xmlNodePtr vpc = aws_xml_find(xmlDocGetRootElement(doc), "vpcSet/item");
    bool ok = vpc && copy_str(st->vpc_id, sizeof(st->vpc_id), aws_xml_text(vpc, "vpcId"));
    xmlFreeDoc(doc);
    if (!ok)
        fail("no default VPC in %s: awsctl launches into the default VPC and its default "
             "subnets (create them with: aws ec2 create-default-vpc)",
             st->region);
    return ok;
}

/* ---- security group ---- */

static void group_name(const struct state *st, char *out, size_t len) {
    snprintf(out, len, "awsctl-%s", st->name);
}

/* Finds the deployment's group by name in the default VPC; sg_id "" if none. */
static bool find_group(struct ctl *c) {
    struct state *st = c->st;
    char name[160];
    group_name(st, name, sizeof(name));
    struct aws_form *f = aws_form_new();
    aws_form_filter(f, 1, "group-name", name);
    if (st->vpc_id[0]) aws_form_filter(f, 2, "vpc-id", st->vpc_id);
    xmlDocPtr doc = ec2_read(c, "DescribeSecurityGroups", f);
    aws_form_free(f);
    if (!doc) return false;
    xmlNodePtr g = aws_xml_find(xmlDocGetRootElement(doc), "securityGroupInfo/item");
    const char *id = aws_xml_text(g, "groupId");
    if (!id || strcmp(id, st->sg_id)) st->sg_created = g && created_by_us(g, st->name);
    copy_str(st->sg_id, sizeof(st->sg_id), id);
    xmlFreeDoc(doc);
    return true;
}

static bool create_group(struct ctl *c) {
    struct state *st = c->st;
    char name[160], what[256], desc[256];
    group_name(st, name, sizeof(name));
    snprintf(what, sizeof(what), "create security group %s in %s", name, st->vpc_id);
    snprintf(desc, sizeof(desc), "lb deployment %s (awsctl)", st->name);
    struct aws_form *f = aws_form_new();
    aws_form_add(f, "GroupName", name);
    aws_form_add(f, "GroupDescription", desc);
    aws_form_add(f, "VpcId", st->vpc_id);
    ec2_tags(f, 1, "security-group", st->name, NULL);
    xmlDocPtr doc = NULL;
    enum mut m = ec2_mutate(c, "CreateSecurityGroup", f, what, NULL, &doc);
    aws_form_free(f);
    if (m == MUT_WOULD) c->sg_pending = true;
    if (m != MUT_DONE) return m == MUT_WOULD;
    bool ok = copy_str(st->sg_id, sizeof(st->sg_id),
                       aws_xml_text(xmlDocGetRootElement(doc), "groupId")) &&
              st->sg_id[0];
    xmlFreeDoc(doc);
    if (!ok) {
        fail("CreateSecurityGroup: the reply has no groupId");
        return false;
    }
    st->sg_created = true;
    say("created security group %s (%s)", st->sg_id, name);
    return ctl_save(c);
}

/* One ingress rule on tcp port from cidr, or from the group itself when
 * cidr is NULL. revoke: take it away instead. */
static bool ingress(struct ctl *c, bool revoke, int port, const char *cidr) {
    struct state *st = c->st;
    char what[256];
    snprintf(what, sizeof(what), "%s tcp %d from %s %s %s", revoke ? "revoke" : "allow", port,
             cidr ? cidr : st->sg_id, revoke ? "on" : "in", st->sg_id);
    struct aws_form *f = aws_form_new();
    aws_form_add(f, "GroupId", st->sg_id);
    aws_form_add(f, "IpPermissions.1.IpProtocol", "tcp");
    aws_form_addf(f, "IpPermissions.1.FromPort", "%d", port);
    aws_form_addf(f, "IpPermissions.1.ToPort", "%d", port);
    if (cidr) {
        aws_form_add(f, "IpPermissions.1.IpRanges.1.CidrIp", cidr);
        if (!revoke)
            aws_form_addf(f, "IpPermissions.1.IpRanges.1.Description", "awsctl %s", st->name);
    } else {
        aws_form_add(f, "IpPermissions.1.Groups.1.GroupId", st->sg_id);
    }
    static const char *const dup[] = {"InvalidPermission.Duplicate", NULL};
    static const char *const gone[] = {"InvalidPermission.NotFound", "InvalidGroup.NotFound", NULL};
    enum mut m =
        ec2_mutate(c, revoke ? "RevokeSecurityGroupIngress" : "AuthorizeSecurityGroupIngress", f,
                   what, revoke ? gone : dup, NULL);
    aws_form_free(f);
    if (m == MUT_DONE) say("%s", what);
    return m != MUT_FAILED;
}

static bool has_cidr(const struct state *st, const char *cidr) {
    for (int i = 0; i < st->ncidrs; i++)
        if (!strcmp(st->cidrs[i], cidr)) return true;
    return false;
}

bool ec2_security_group(struct ctl *c, const char *cidr) {
    struct state *st = c->st;
    if (!find_group(c)) return false;
    if (!st->sg_id[0] && !create_group(c)) return false;
    if (c->sg_pending) {
        say("would: allow tcp 22 and %d from %s, and tcp %d within the group", APP_PORT, cidr,
            APP_PORT);
        return true;
    }
    if (!ctl_save(c)) return false;
    bool ok = ingress(c, false, 22, cidr) && ingress(c, false, APP_PORT, cidr) &&
              ingress(c, false, APP_PORT, NULL);
    if (ok && !c->dry_run && !has_cidr(st, cidr) && st->ncidrs < MAX_CIDRS)
        copy_str(st->cidrs[st->ncidrs++], sizeof(st->cidrs[0]), cidr);
    return ok && ctl_save(c);
}

/* A group still used by network interfaces of instances just terminated
 * cannot be deleted yet (DependencyViolation): retried until timeout. */
static bool delete_group(struct ctl *c, long timeout_s) {
    struct state *st = c->st;
    char what[128];
    snprintf(what, sizeof(what), "delete security group %s", st->sg_id);
    double deadline = now_s() + (double)timeout_s, pause = 1;
    for (;;) {
        struct aws_form *f = aws_form_new();
        aws_form_add(f, "GroupId", st->sg_id);
        struct aws_error err;
        xmlDocPtr doc = aws_query(c->aws, AWS_EC2, "DeleteSecurityGroup", f, &err);
        aws_form_free(f);
        xmlFreeDoc(doc);
        if (doc || !strcmp(err.code, "InvalidGroup.NotFound")) break;
        if (strcmp(err.code, "DependencyViolation") || now_s() + pause > deadline) {
            fail("%s (DeleteSecurityGroup): %s", what, err.message);
            return false;
        }
        sleep_s(pause);
        pause = pause * 2 > 10 ? 10 : pause * 2;
    }
    say("deleted security group %s", st->sg_id);
    st->sg_id[0] = '\0';
    st->sg_created = false;
    return true;
}

bool ec2_remove_group(struct ctl *c, long timeout_s) {
    struct state *st = c->st;
    if (!st->sg_id[0] && !find_group(c)) return false;
    if (!st->sg_id[0]) return true;
    bool ok = true;
    for (int i = 0; i < st->ncidrs; i++)
        ok = ingress(c, true, 22, st->cidrs[i]) && ingress(c, true, APP_PORT, st->cidrs[i]) && ok;
    ok = ingress(c, true, APP_PORT, NULL) && ok;
    if (!ok) return false;
    st->ncidrs = 0;
    return (!st->sg_created || delete_group(c, timeout_s)) && ctl_save(c);
}

/* ---- key pair ---- */

/* DescribeKeyPairs for name: *exists, its public key (when EC2 gives it)
 * and whether awsctl created it for this deployment. */
static bool describe_key(struct ctl *c, const char *name, bool *exists, char *pub, size_t publen,
                         bool *ours) {
    struct aws_form *f = aws_form_new();
    aws_form_filter(f, 1, "key-name", name);
    aws_form_add(f, "IncludePublicKey", "true");
    xmlDocPtr doc = ec2_read(c, "DescribeKeyPairs", f);
    aws_form_free(f);
    if (!doc) return false;
    xmlNodePtr k = aws_xml_find(xmlDocGetRootElement(doc), "keySet/item");
    *exists = k != NULL;
    *ours = k && created_by_us(k, c->st->name);
    copy_str(pub, publen, aws_xml_text(k, "publicKey"));
    xmlFreeDoc(doc);
    return true;
}

/* Whether two public key lines hold the same key (type and blob). */
static bool same_key(const char *a, const char *b) {
    size_t la = strcspn(a, " "), lb = strcspn(b, " ");
    if (la != lb || strncmp(a, b, la) || !a[la] || !b[lb]) return false;
    a += la + 1;
    b += lb + 1;
    return strcspn(a, " \n") == strcspn(b, " \n") && !strncmp(a, b, strcspn(a, " \n"));
}

static bool import_key(struct ctl *c, const char *line) {
    struct state *st = c->st;
    char b64[8192], what[PATH_MAX + 512];
    if (!b64_encode((const unsigned char *)line, strlen(line), b64, sizeof(b64))) {
        fail("--ssh-key %s: public key too long", st->key_path);
        return false;
    }
    snprintf(what, sizeof(what), "import key pair %s from %s", st->key_name, st->key_path);
    struct aws_form *f = aws_form_new();
    aws_form_add(f, "KeyName", st->key_name);
    aws_form_add(f, "PublicKeyMaterial", b64);
    ec2_tags(f, 1, "key-pair", st->name, NULL);
    enum mut m = ec2_mutate(c, "ImportKeyPair", f, what, NULL, NULL);
    aws_form_free(f);
    if (m == MUT_WOULD) c->key_pending = true;
    if (m != MUT_DONE) return m == MUT_WOULD;
    st->key_created = true;
    say("imported key pair %s", st->key_name);
    return ctl_save(c);
}

static bool save_private_key(const char *path, const char *pem) {
    char err[PATH_MAX + 128];
    if (write_file_atomic(path, pem, strlen(pem), 0600, err, sizeof(err))) return true;
    fail("%s", err);
    return false;
}

static bool create_key(struct ctl *c) {
    struct state *st = c->st;
    char what[PATH_MAX + 512];
    snprintf(what, sizeof(what), "create ed25519 key pair %s (private key to %s)", st->key_name,
             st->key_path);
    struct aws_form *f = aws_form_new();
    aws_form_add(f, "KeyName", st->key_name);
    aws_form_add(f, "KeyType", "ed25519");
    ec2_tags(f, 1, "key-pair", st->name, NULL);
    xmlDocPtr doc = NULL;
    enum mut m = ec2_mutate(c, "CreateKeyPair", f, what, NULL, &doc);
    aws_form_free(f);
    if (m == MUT_WOULD) c->key_pending = true;
    if (m != MUT_DONE) return m == MUT_WOULD;
    const char *pem = aws_xml_text(xmlDocGetRootElement(doc), "keyMaterial");
    bool ok = pem && *pem && save_private_key(st->key_path, pem);
    if (!pem || !*pem) fail("CreateKeyPair: the reply has no keyMaterial");
    xmlFreeDoc(doc);
    if (!ok) return false;
    st->key_created = st->key_file_created = true;
    say("created key pair %s, private key in %s", st->key_name, st->key_path);
    return ctl_save(c);
}

static bool own_key(struct ctl *c, const char *file, bool exists, const char *pub) {
    struct state *st = c->st;
    char line[8192], err[PATH_MAX + 256];
    if (!key_public_line(file, line, sizeof(line), err, sizeof(err))) {
        fail("%s", err);
        return false;
    }
    if (!realpath(file, st->key_path)) copy_str(st->key_path, sizeof(st->key_path), file);
    st->key_file_created = false;
    if (!exists) return import_key(c, line);
    if (*pub && !same_key(pub, line)) {
        fail("key pair %s exists in %s with another public key than %s: choose another "
             "--key-name or delete that key pair",
             st->key_name, st->region, file);
        return false;
    }
    return ctl_save(c);
}

static bool delete_key(struct ctl *c) {
    struct state *st = c->st;
    char what[320];
    snprintf(what, sizeof(what), "delete key pair %s", st->key_name);
    struct aws_form *f = aws_form_new();
    aws_form_add(f, "KeyName", st->key_name);
    enum mut m = ec2_mutate(c, "DeleteKeyPair", f, what, NULL, NULL);
    aws_form_free(f);
    if (m == MUT_FAILED) return false;
    say("deleted key pair %s", st->key_name);
    st->key_created = false;
    return true;
}

/* Whether the deployment has instances (which hold the key pair's key). */
static bool in_use(struct ctl *c) {
    struct instance *live = calloc(MAX_INSTANCES, sizeof(*live));
    int n = 0;
    bool ok =
        live && instances_describe(c, "pending,running,stopping,stopped", live, &n, MAX_INSTANCES);
    free(live);
    return !ok || n > 0;
}

static bool made_key(struct ctl *c, bool exists, bool ours) {
    struct state *st = c->st;
    if (!st->key_path[0]) {
        char rel[PATH_MAX], dir[PATH_MAX];
        dir_of(st->path, rel, sizeof(rel));
        if (!realpath(rel, dir)) copy_str(dir, sizeof(dir), rel);
        if (snprintf(st->key_path, sizeof(st->key_path), "%s/%s.pem", dir, st->key_name) >=
            (int)sizeof(st->key_path)) {
            fail("%s/%s.pem: path too long", dir, st->key_name);
            return false;
        }
    }
    if (!exists) return create_key(c);
    if (access(st->key_path, R_OK) != 0 && ours && !in_use(c)) {
        /* up stopped between CreateKeyPair and writing the key: no instance has it yet. */
        say("key pair %s has no private key at %s: making it again", st->key_name, st->key_path);
        return delete_key(c) && create_key(c);
    }
    if (access(st->key_path, R_OK) != 0) {
        fail("key pair %s exists in %s but its private key is not at %s: pass --ssh-key with "
             "it, or --key-name for another key pair",
             st->key_name, st->region, st->key_path);
        return false;
    }
    return ctl_save(c);
}

bool ec2_key_pair(struct ctl *c, const struct up_opts *o) {
    struct state *st = c->st;
    if (o->key_name)
        copy_str(st->key_name, sizeof(st->key_name), o->key_name);
    else if (!st->key_name[0])
        snprintf(st->key_name, sizeof(st->key_name), "awsctl-%s", st->name);
    bool exists, ours;
    char pub[8192];
    if (!describe_key(c, st->key_name, &exists, pub, sizeof(pub), &ours)) return false;
    if (exists && ours) st->key_created = true;
    if (!exists) st->key_created = false;
    if (o->ssh_key) return own_key(c, o->ssh_key, exists, pub);
    return made_key(c, exists, ours);
}

bool ec2_delete_key_pair(struct ctl *c) {
    struct state *st = c->st;
    if (!st->key_name[0]) snprintf(st->key_name, sizeof(st->key_name), "awsctl-%s", st->name);
    bool exists, ours;
    char pub[8192];
    if (!describe_key(c, st->key_name, &exists, pub, sizeof(pub), &ours)) return false;
    return !exists || !(ours || st->key_created) || delete_key(c);
}

/* ---- AMI ---- */

bool ec2_ami(struct ctl *c, const char *ami) {
    struct state *st = c->st;
    if (ami) return copy_str(st->ami, sizeof(st->ami), ami) && ctl_save(c);
    if (st->ami[0]) return true; /* keep the deployment's AMI across reruns */
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "Name", AL2023_PARAM);
    struct aws_error err;
    cJSON *reply = aws_json(c->aws, AWS_SSM, "AmazonSSM.GetParameter", req, &err);
    cJSON_Delete(req);
    if (!reply) {
        fail("SSM GetParameter %s: %s (or pass --ami)", AL2023_PARAM, err.message);
        return false;
    }
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(reply, "Parameter"), "Value"));
    bool ok = v && !strncmp(v, "ami-", 4) && copy_str(st->ami, sizeof(st->ami), v);
    if (!ok) fail("SSM GetParameter %s: no AMI id in the reply (pass --ami)", AL2023_PARAM);
    cJSON_Delete(reply);
    if (ok) say("AMI %s (Amazon Linux 2023)", st->ami);
    return ok && ctl_save(c);
}
