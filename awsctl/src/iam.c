/* The proxy instance's IAM role: the proxy on EC2 calls DescribeInstances (EC2
 * discovery) and PutMetricData (CloudWatch) with the credentials the instance
 * metadata gives it, which come from this role through its instance profile.
 * IAM is global and has no DryRun: a dry run only reads. The role and the
 * profile are tagged Deployment=<name> and CreatedBy=awsctl, and are used or
 * removed only when they carry those tags. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#define ROLE_NAME_MAX 64 /* IAM's limit for role names */
#define POLICY_NAME   "awsctl-proxy"

static const char assume_by_ec2[] =
    "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":"
    "{\"Service\":\"ec2.amazonaws.com\"},\"Action\":\"sts:AssumeRole\"}]}";
static const char proxy_policy[] =
    "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":"
    "[\"ec2:DescribeInstances\",\"cloudwatch:PutMetricData\"],\"Resource\":\"*\"}]}";

bool iam_names(struct state *st) {
    char name[sizeof(st->name) + 16];
    if (snprintf(name, sizeof(name), "awsctl-%s-proxy", st->name) > ROLE_NAME_MAX) return false;
    copy_str(st->iam_role, sizeof(st->iam_role), name);
    copy_str(st->iam_profile, sizeof(st->iam_profile), name);
    return true;
}

/* A form of one or two parameters (name2 may be NULL). */
static struct aws_form *form(const char *name, const char *value, const char *name2,
                             const char *value2) {
    struct aws_form *f = aws_form_new();
    aws_form_add(f, name, value);
    if (name2) aws_form_add(f, name2, value2);
    return f;
}

/* A read: the reply, or NULL with *missing (NoSuchEntity) or the error printed. */
static xmlDocPtr iam_read(struct ctl *c, const char *action, struct aws_form *f, bool *missing) {
    struct aws_error err;
    xmlDocPtr doc = aws_query(c->aws, AWS_IAM, action, f, &err);
    aws_form_free(f);
    *missing = !doc && !strcmp(err.code, "NoSuchEntity");
    if (!doc && !*missing) fail("%s: %s", action, err.message);
    return doc;
}

/* A change (form f freed); what is already so (codes in done) is no error. */
static enum mut iam_change(struct ctl *c, const char *action, struct aws_form *f, const char *what,
                           const char *const *done) {
    enum mut m = ctl_mutate(c, AWS_IAM, action, f, what, done, NULL);
    aws_form_free(f);
    if (m == MUT_DONE) say("%s", what);
    return m;
}

static void add_tags(struct aws_form *f, const char *name) {
    aws_form_add(f, "Tags.member.1.Key", "Deployment");
    aws_form_add(f, "Tags.member.1.Value", name);
    aws_form_add(f, "Tags.member.2.Key", "CreatedBy");
    aws_form_add(f, "Tags.member.2.Value", "awsctl");
}

/* Whether an IAM entity (Role, InstanceProfile) is awsctl's for deployment name. */
static bool ours(xmlNodePtr entity, const char *name) {
    bool deployment = false, by = false;
    AWS_XML_FOREACH(t, aws_xml_find(entity, "Tags"), "member") {
        const char *key = aws_xml_text(t, "Key"), *value = aws_xml_text(t, "Value");
        if (!key || !value) continue;
        deployment |= !strcmp(key, "Deployment") && !strcmp(value, name);
        by |= !strcmp(key, "CreatedBy") && !strcmp(value, "awsctl");
    }
    return deployment && by;
}

static void not_ours(const char *kind, const char *entity, const char *name) {
    fail("%s %s exists but is not awsctl's for deployment %s (tags Deployment=%s, "
         "CreatedBy=awsctl): delete it or choose another --name",
         kind, entity, name, name);
}

/* ---- up ---- */

/* The role, found or created; *pending: a dry run would create it. */
static bool ensure_role(struct ctl *c, bool *pending) {
    struct state *st = c->st;
    bool missing;
    xmlDocPtr doc = iam_read(c, "GetRole", form("RoleName", st->iam_role, NULL, NULL), &missing);
    *pending = false;
    if (doc) {
        bool mine = ours(aws_xml_find(xmlDocGetRootElement(doc), "GetRoleResult/Role"), st->name);
        xmlFreeDoc(doc);
        if (!mine) not_ours("IAM role", st->iam_role, st->name);
        return mine;
    }
    if (!missing) return false;
    char what[256], desc[256];
    snprintf(what, sizeof(what), "create IAM role %s (assumed by ec2.amazonaws.com)", st->iam_role);
    snprintf(desc, sizeof(desc), "The proxy of lb deployment %s (awsctl)", st->name);
    struct aws_form *f = form("RoleName", st->iam_role, "AssumeRolePolicyDocument", assume_by_ec2);
    aws_form_add(f, "Description", desc);
    add_tags(f, st->name);
    enum mut m = iam_change(c, "CreateRole", f, what, NULL);
    *pending = m == MUT_WOULD;
    return m != MUT_FAILED;
}

/* *same: the role's inline policy is proxy_policy (as JSON: IAM may keep
 * another spelling of it). */
static bool policy_is_ours(struct ctl *c, bool *same) {
    struct state *st = c->st;
    bool missing;
    xmlDocPtr doc = iam_read(c, "GetRolePolicy",
                             form("RoleName", st->iam_role, "PolicyName", POLICY_NAME), &missing);
    *same = false;
    if (!doc) return missing;
    const char *text =
        aws_xml_text(xmlDocGetRootElement(doc), "GetRolePolicyResult/PolicyDocument");
    char *json = text ? curl_easy_unescape(NULL, text, 0, NULL) : NULL;
    cJSON *have = json ? cJSON_Parse(json) : NULL, *want = cJSON_Parse(proxy_policy);
    *same = have && want && cJSON_Compare(have, want, true);
    cJSON_Delete(have);
    cJSON_Delete(want);
    curl_free(json);
    xmlFreeDoc(doc);
    return true;
}

static bool ensure_policy(struct ctl *c, bool role_pending) {
    struct state *st = c->st;
    bool same = false;
    if (!role_pending && !policy_is_ours(c, &same)) return false;
    if (same) return true;
    char what[256];
    snprintf(what, sizeof(what),
             "allow ec2:DescribeInstances and cloudwatch:PutMetricData to IAM role %s (inline "
             "policy %s)",
             st->iam_role, POLICY_NAME);
    struct aws_form *f = form("RoleName", st->iam_role, "PolicyName", POLICY_NAME);
    aws_form_add(f, "PolicyDocument", proxy_policy);
    return iam_change(c, "PutRolePolicy", f, what, NULL) != MUT_FAILED;
}

/* The profile, found or created; *holds: it has the role already. */
static bool ensure_profile(struct ctl *c, bool *holds) {
    struct state *st = c->st;
    bool missing;
    xmlDocPtr doc = iam_read(c, "GetInstanceProfile",
                             form("InstanceProfileName", st->iam_profile, NULL, NULL), &missing);
    *holds = false;
    if (doc) {
        xmlNodePtr ip = aws_xml_find(xmlDocGetRootElement(doc), "GetInstanceProfileResult/"
                                                                "InstanceProfile");
        const char *role = aws_xml_text(ip, "Roles/member/RoleName");
        bool mine = ours(ip, st->name), other = role && strcmp(role, st->iam_role);
        if (!mine) not_ours("instance profile", st->iam_profile, st->name);
        if (mine && other)
            fail("instance profile %s holds IAM role %s, not %s: remove that role from it "
                 "(aws iam remove-role-from-instance-profile)",
                 st->iam_profile, role, st->iam_role);
        *holds = role && !other;
        xmlFreeDoc(doc);
        return mine && !other;
    }
    if (!missing) return false;
    char what[256];
    snprintf(what, sizeof(what), "create instance profile %s", st->iam_profile);
    struct aws_form *f = form("InstanceProfileName", st->iam_profile, NULL, NULL);
    add_tags(f, st->name);
    enum mut m = iam_change(c, "CreateInstanceProfile", f, what, NULL);
    c->profile_pending = m == MUT_WOULD;
    return m != MUT_FAILED;
}

bool iam_up(struct ctl *c) {
    struct state *st = c->st;
    bool role_pending, holds;
    if (!ensure_role(c, &role_pending) || !ensure_policy(c, role_pending) ||
        !ensure_profile(c, &holds))
        return false;
    if (!holds) {
        char what[256];
        snprintf(what, sizeof(what), "add IAM role %s to instance profile %s", st->iam_role,
                 st->iam_profile);
        /* LimitExceeded: the profile has its one role already. */
        static const char *const there[] = {"LimitExceeded", "EntityAlreadyExists", NULL};
        if (iam_change(c, "AddRoleToInstanceProfile",
                       form("InstanceProfileName", st->iam_profile, "RoleName", st->iam_role), what,
                       there) == MUT_FAILED)
            return false;
    }
    return ctl_save(c);
}

/* ---- down ---- */

static bool remove_profile(struct ctl *c) {
    struct state *st = c->st;
    bool missing, ok = true;
    xmlDocPtr doc = iam_read(c, "GetInstanceProfile",
                             form("InstanceProfileName", st->iam_profile, NULL, NULL), &missing);
    if (!doc) return missing;
    xmlNodePtr ip =
        aws_xml_find(xmlDocGetRootElement(doc), "GetInstanceProfileResult/InstanceProfile");
    static const char *const gone[] = {"NoSuchEntity", NULL};
    char what[256];
    if (!ours(ip, st->name)) {
        say("leaving instance profile %s: not awsctl's for deployment %s", st->iam_profile,
            st->name);
    } else {
        AWS_XML_FOREACH(r, aws_xml_find(ip, "Roles"), "member") {
            const char *role = aws_xml_text(r, "RoleName");
            if (!ok || !role) continue;
            snprintf(what, sizeof(what), "remove IAM role %s from instance profile %s", role,
                     st->iam_profile);
            ok = iam_change(c, "RemoveRoleFromInstanceProfile",
                            form("InstanceProfileName", st->iam_profile, "RoleName", role), what,
                            gone) != MUT_FAILED;
        }
        snprintf(what, sizeof(what), "delete instance profile %s", st->iam_profile);
        ok = ok && iam_change(c, "DeleteInstanceProfile",
                              form("InstanceProfileName", st->iam_profile, NULL, NULL), what,
                              gone) != MUT_FAILED;
    }
    xmlFreeDoc(doc);
    return ok;
}

static bool remove_role(struct ctl *c) {
    struct state *st = c->st;
    bool missing;
    xmlDocPtr doc = iam_read(c, "GetRole", form("RoleName", st->iam_role, NULL, NULL), &missing);
    if (!doc) return missing;
    bool mine = ours(aws_xml_find(xmlDocGetRootElement(doc), "GetRoleResult/Role"), st->name);
    xmlFreeDoc(doc);
    if (!mine) {
        say("leaving IAM role %s: not awsctl's for deployment %s", st->iam_role, st->name);
        return true;
    }
    static const char *const gone[] = {"NoSuchEntity", NULL};
    char what[256];
    snprintf(what, sizeof(what), "delete inline policy %s of IAM role %s", POLICY_NAME,
             st->iam_role);
    if (iam_change(c, "DeleteRolePolicy", form("RoleName", st->iam_role, "PolicyName", POLICY_NAME),
                   what, gone) == MUT_FAILED)
        return false;
    snprintf(what, sizeof(what), "delete IAM role %s", st->iam_role);
    return iam_change(c, "DeleteRole", form("RoleName", st->iam_role, NULL, NULL), what, gone) !=
           MUT_FAILED;
}

bool iam_down(struct ctl *c) {
    struct state *st = c->st;
    /* A name too long for IAM: up made no role. */
    if (!st->iam_role[0] && !iam_names(st)) return true;
    if (!remove_profile(c) || !remove_role(c)) return false;
    st->iam_role[0] = st->iam_profile[0] = '\0';
    return state_save(st);
}
