/* The state file: JSON (cJSON) written atomically, mode 0600. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <cjson/cJSON.h>

struct state *state_new(const char *path, const char *name) {
    struct state *st = calloc(1, sizeof(*st));
    if (!st) return NULL;
    copy_str(st->path, sizeof(st->path), path);
    copy_str(st->name, sizeof(st->name), name);
    unsigned char r[8] = {0};
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        uint64_t t = (uint64_t)(now_s() * 1e9) ^ (uint64_t)getpid();
        memcpy(r, &t, sizeof(r));
    }
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(st->epoch + 2 * i, 3, "%02x", r[i]);
    return st;
}

struct instance *state_find(struct state *st, const char *id) {
    for (int i = 0; i < st->ninst; i++)
        if (!strcmp(st->inst[i].id, id)) return &st->inst[i];
    return NULL;
}

/* ---- load ---- */

static void get_str(const cJSON *o, const char *key, char *dst, size_t len) {
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
    copy_str(dst, len, v);
}

static bool get_bool(const cJSON *o, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

#define GET_STR(o, key, field) get_str((o), (key), (field), sizeof(field))

static void load_instance(const cJSON *j, struct instance *in) {
    GET_STR(j, "id", in->id);
    GET_STR(j, "role", in->role);
    GET_STR(j, "cluster", in->cluster);
    GET_STR(j, "type", in->type);
    GET_STR(j, "state", in->state);
    GET_STR(j, "subnet", in->subnet);
    GET_STR(j, "public_ip", in->public_ip);
    GET_STR(j, "private_ip", in->private_ip);
    GET_STR(j, "host_key", in->host_key);
}

static void load_root(struct state *st, const cJSON *root) {
    GET_STR(root, "name", st->name);
    GET_STR(root, "region", st->region);
    GET_STR(root, "epoch", st->epoch);
    GET_STR(root, "vpc_id", st->vpc_id);
    GET_STR(root, "security_group_id", st->sg_id);
    st->sg_created = get_bool(root, "security_group_created");
    const cJSON *it;
    st->ncidrs = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, "rule_cidrs")) {
        if (cJSON_IsString(it) && st->ncidrs < MAX_CIDRS)
            copy_str(st->cidrs[st->ncidrs++], sizeof(st->cidrs[0]), it->valuestring);
    }
    GET_STR(root, "key_name", st->key_name);
    GET_STR(root, "key_path", st->key_path);
    st->key_created = get_bool(root, "key_created");
    st->key_file_created = get_bool(root, "key_file_created");
    GET_STR(root, "ami", st->ami);
    GET_STR(root, "iam_role", st->iam_role);
    GET_STR(root, "iam_instance_profile", st->iam_profile);
    st->ninst = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, "instances")) {
        if (st->ninst < MAX_INSTANCES && cJSON_IsObject(it))
            load_instance(it, &st->inst[st->ninst++]);
    }
}

bool state_load(struct state *st, bool *found) {
    char err[PATH_MAX + 128];
    *found = false;
    if (access(st->path, F_OK) != 0 && errno == ENOENT) return true;
    size_t len;
    char *text = read_file(st->path, &len, err, sizeof(err));
    if (!text) {
        fail("%s", err);
        return false;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        fail("%s: not a state file (expected a JSON object)", st->path);
        cJSON_Delete(root);
        return false;
    }
    char want[sizeof(st->name)];
    copy_str(want, sizeof(want), st->name);
    load_root(st, root);
    cJSON_Delete(root);
    if (strcmp(want, st->name)) {
        fail("%s is the state of deployment '%s', not '%s' (see --name, --state)", st->path,
             st->name, want);
        return false;
    }
    *found = true;
    return true;
}

/* ---- save ---- */

static cJSON *instance_json(const struct instance *in) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", in->id);
    cJSON_AddStringToObject(j, "role", in->role);
    cJSON_AddStringToObject(j, "cluster", in->cluster);
    cJSON_AddStringToObject(j, "type", in->type);
    cJSON_AddStringToObject(j, "state", in->state);
    cJSON_AddStringToObject(j, "subnet", in->subnet);
    cJSON_AddStringToObject(j, "public_ip", in->public_ip);
    cJSON_AddStringToObject(j, "private_ip", in->private_ip);
    cJSON_AddStringToObject(j, "host_key", in->host_key);
    return j;
}

static cJSON *state_json(const struct state *st) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "name", st->name);
    cJSON_AddStringToObject(root, "region", st->region);
    cJSON_AddStringToObject(root, "epoch", st->epoch);
    cJSON_AddStringToObject(root, "vpc_id", st->vpc_id);
    cJSON_AddStringToObject(root, "security_group_id", st->sg_id);
    cJSON_AddBoolToObject(root, "security_group_created", st->sg_created);
    cJSON *cidrs = cJSON_AddArrayToObject(root, "rule_cidrs");
    for (int i = 0; i < st->ncidrs; i++)
        cJSON_AddItemToArray(cidrs, cJSON_CreateString(st->cidrs[i]));
    cJSON_AddStringToObject(root, "key_name", st->key_name);
    cJSON_AddBoolToObject(root, "key_created", st->key_created);
    cJSON_AddStringToObject(root, "key_path", st->key_path);
    cJSON_AddBoolToObject(root, "key_file_created", st->key_file_created);
    cJSON_AddStringToObject(root, "ami", st->ami);
    cJSON_AddStringToObject(root, "iam_role", st->iam_role);
    cJSON_AddStringToObject(root, "iam_instance_profile", st->iam_profile);
    cJSON *insts = cJSON_AddArrayToObject(root, "instances");
    for (int i = 0; i < st->ninst; i++)
        cJSON_AddItemToArray(insts, instance_json(&st->inst[i]));
    return root;
}

bool state_save(const struct state *st) {
    cJSON *root = state_json(st);
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    char err[PATH_MAX + 128];
    bool ok = text && write_file_atomic(st->path, text, strlen(text), 0600, err, sizeof(err));
    if (!ok) fail("%s", text ? err : "out of memory writing the state");
    free(text);
    return ok;
}

bool ctl_save(struct ctl *c) {
    return c->dry_run || state_save(c->st);
}

bool state_remove(const struct state *st) {
    if (unlink(st->path) == 0 || errno == ENOENT) return true;
    fail("cannot remove %s: %s", st->path, strerror(errno));
    return false;
}
