/* profiles: GET /api/v1/profiles and PUT /api/v1/profiles/{name}, the in-memory registry
 * (profiles by name, and by folded group tag) loaded at start, and the one place where a
 * profile reaches a device (gb_api__profile_apply). A PUT is checked whole, written in one
 * transaction, and only after COMMIT changes the registry and the devices. Writes run one at a
 * time, so the registry changes in the order the database did, and a group-tag conflict is
 * found against settled state before anything is sent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include <jansson.h>

#include "api/internal.h"

#undef uthash_malloc
#undef uthash_free
#define uthash_malloc(sz)    gb_xmalloc(sz)
#define uthash_free(ptr, sz) free(ptr)

/* PUTs waiting behind the one in flight at most; beyond it they get 503. Profiles change at
 * the pace of an administrator, so a long queue means something is stuck. */
#define PROFILE_WRITES_WAITING_MAX 64

/* One profile as committed. Strings are owned. */
typedef struct profile {
    char *name;
    char *tenant_domain;
    gb_join_t join;
    char *device_name_template; /* NULL: none */
    char *group_tag;
    char *tag_key;       /* group_tag folded by gb_group_tag_fold: the by-tag hash key */
    char *assigned_user; /* NULL: none */
    int esp_timeout_min;
    int64_t created_ms;
    int64_t updated_ms;
    UT_hash_handle hh; /* in by_tag */
} profile_t;

typedef struct put_op put_op_t;

struct gb_api_profiles {
    profile_t **list; /* every profile, by name (byte order) */
    size_t n;
    size_t cap;
    profile_t *by_tag;       /* uthash on tag_key */
    put_op_t *waiting;       /* PUTs checked and waiting for their turn, FIFO */
    put_op_t **waiting_tail; /* where the next one is linked */
    size_t n_waiting;
    bool writing; /* a PUT's transaction is in flight */
};

/* A PUT on its way to the database. Lives in its request's arena: it is never touched once
 * the request is answered. */
struct put_op {
    gb_pg_query_t query;
    gb_api_t *api;
    gb_http_req_t *req;
    gb_profile_t p; /* strings in the request's arena */
    const char *params[7];
    const char *audit_params[10];
    char esp[16];
    char who[GB_AUTH_NAME_MAX + 1];
    put_op_t *next;
};

/* The row both the start-up load and the PUT's RETURNING give, column by column. */
#define PROFILE_COLUMNS                                                                \
    "name, tenant_domain, join_type, device_name_template, group_tag, assigned_user, " \
    "esp_timeout_min, floor(extract(epoch FROM created_at) * 1000)::bigint, "          \
    "floor(extract(epoch FROM updated_at) * 1000)::bigint"
enum {
    C_NAME,
    C_TENANT,
    C_JOIN,
    C_TEMPLATE,
    C_TAG,
    C_USER,
    C_ESP,
    C_CREATED,
    C_UPDATED,
    C_INSERTED /* RETURNING only */
};

static const char SQL_LOAD[] = "SELECT " PROFILE_COLUMNS " FROM profiles";

/* The audit entry of every device the change touches (its group tag matches the profile's new
 * tag: "applied", or only its previous one: "removed"), in the profile's transaction. */
static const char SQL_AUDIT[] =
    "INSERT INTO audit_log (serial, actor, action, detail) "
    "SELECT s, $1, 'profile', jsonb_build_object('profile', $2::text, 'change', "
    "CASE WHEN a THEN 'applied' ELSE 'removed' END, 'tenant_domain', $3::text, 'join', "
    "$4::text, 'device_name_template', $5::text, 'group_tag', $6::text, 'assigned_user', "
    "$7::text, 'esp_timeout_min', $8::integer) "
    "FROM unnest($9::text[], $10::bool[]) AS u(s, a) ORDER BY s";

/* xmax is 0 on a row version the statement inserted and holds the updating transaction on one
 * that ON CONFLICT updated: the only way RETURNING can tell a creation (201) from an update
 * (200) that stays right when another writer races for the same name. greatest() keeps
 * updated_at >= created_at should the clock step back. */
static const char SQL_UPSERT[] =
    "INSERT INTO profiles (name, tenant_domain, join_type, device_name_template, group_tag, "
    "assigned_user, esp_timeout_min) VALUES ($1, $2, $3, $4, $5, $6, $7::integer) "
    "ON CONFLICT (name) DO UPDATE SET tenant_domain = EXCLUDED.tenant_domain, "
    "join_type = EXCLUDED.join_type, device_name_template = EXCLUDED.device_name_template, "
    "group_tag = EXCLUDED.group_tag, assigned_user = EXCLUDED.assigned_user, "
    "esp_timeout_min = EXCLUDED.esp_timeout_min, "
    "updated_at = greatest(now(), profiles.created_at) "
    "RETURNING " PROFILE_COLUMNS ", xmax = 0";

/* ---- the registry ---- */

static void profile_free(profile_t *p)
{
    if (p == NULL) {
        return;
    }
    free(p->name);
    free(p->tenant_domain);
    free(p->device_name_template);
    free(p->group_tag);
    free(p->tag_key);
    free(p->assigned_user);
    free(p);
}

/* Builds a profile from a row of PROFILE_COLUMNS. */
static profile_t *profile_from_row(const PGresult *res, int row)
{
    profile_t *p = gb_xcalloc(1, sizeof(*p));
    gb_join_t join = GB_JOIN_AZURE_AD;
    const char *j = PQgetvalue(res, row, C_JOIN);

    p->name = gb_xstrdup(PQgetvalue(res, row, C_NAME));
    p->tenant_domain = gb_xstrdup(PQgetvalue(res, row, C_TENANT));
    /* The table's CHECK admits only the two ids. */
    (void)gb_join_parse(gb_str_from_cstr(j), &join);
    p->join = join;
    p->device_name_template =
        PQgetisnull(res, row, C_TEMPLATE) ? NULL : gb_xstrdup(PQgetvalue(res, row, C_TEMPLATE));
    p->group_tag = gb_xstrdup(PQgetvalue(res, row, C_TAG));
    p->tag_key = gb_xstrdup(p->group_tag);
    gb_group_tag_fold(p->tag_key);
    p->assigned_user =
        PQgetisnull(res, row, C_USER) ? NULL : gb_xstrdup(PQgetvalue(res, row, C_USER));
    p->esp_timeout_min = atoi(PQgetvalue(res, row, C_ESP));
    p->created_ms = strtoll(PQgetvalue(res, row, C_CREATED), NULL, 10);
    p->updated_ms = strtoll(PQgetvalue(res, row, C_UPDATED), NULL, 10);
    return p;
}

/* The profile named name, or NULL; *at (may be NULL) gets its index, or where it would go. */
static profile_t *find_by_name(const struct gb_api_profiles *reg, const char *name, size_t *at)
{
    size_t lo = 0, hi = reg->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(reg->list[mid]->name, name);
        if (c == 0) {
            if (at != NULL) {
                *at = mid;
            }
            return reg->list[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (at != NULL) {
        *at = lo;
    }
    return NULL;
}

/* The profile whose group tag matches tag (gb_group_tag_eq), or NULL. */
static profile_t *find_by_tag(const struct gb_api_profiles *reg, const char *tag)
{
    /* A profile's tag is at most GB_GROUP_TAG_MAX characters of up to 4 bytes: a longer
     * device tag matches none, and the key fits on the stack. */
    char key[GB_GROUP_TAG_MAX * 4 + 1];
    profile_t *p = NULL;

    if (reg == NULL || tag == NULL) {
        return NULL;
    }
    size_t len = strlen(tag);
    if (len >= sizeof(key)) {
        return NULL;
    }
    memcpy(key, tag, len + 1);
    gb_group_tag_fold(key);
    HASH_FIND(hh, reg->by_tag, key, len, p);
    return p;
}

/* Puts p in the registry in place of the profile of the same name, and returns that one (now
 * out of the registry, the caller frees it), or NULL. */
static profile_t *registry_put(struct gb_api_profiles *reg, profile_t *p)
{
    size_t at;
    profile_t *old = find_by_name(reg, p->name, &at);
    if (old != NULL) {
        HASH_DELETE(hh, reg->by_tag, old);
        reg->list[at] = p;
    } else {
        if (reg->n == reg->cap) {
            reg->cap = reg->cap != 0 ? reg->cap * 2 : 16;
            reg->list = gb_xrealloc(reg->list, reg->cap * sizeof(profile_t *));
        }
        memmove(&reg->list[at + 1], &reg->list[at], (reg->n - at) * sizeof(profile_t *));
        reg->list[at] = p;
        reg->n++;
    }
    HASH_ADD_KEYPTR(hh, reg->by_tag, p->tag_key, strlen(p->tag_key), p);
    return old;
}

/* ---- profiles and devices ---- */

typedef struct profile_choice {
    const char *name; /* NULL: no profile */
    bool hybrid;
} profile_choice_t;

static void choose(const struct gb_api_profiles *reg, const gb_dev_t *dev, profile_choice_t *c)
{
    const profile_t *p = find_by_tag(reg, dev->group_tag);
    c->name = p != NULL ? p->name : NULL;
    c->hybrid = p != NULL && p->join == GB_JOIN_HYBRID;
}

static void set_profile(gb_dev_t *dev, void *arg)
{
    const profile_choice_t *c = arg;
    gb_dev_set_profile(dev, c->name, c->hybrid);
}

void gb_api__profile_apply(gb_api_t *api, gb_fleet_dev_t *fd)
{
    profile_choice_t c;
    choose(api->profiles, &fd->dev, &c);
    /* Through the fleet, so that a batch's working copy gets it too and its publish after
     * COMMIT does not bring the previous profile back. */
    gb_fleet_dev_edit(fd, set_profile, &c);
}

bool gb_api__profile_info(const gb_api_t *api, const gb_dev_t *dev, gb_api_profile_info_t *out)
{
    const profile_t *p = find_by_tag(api->profiles, dev->group_tag);
    if (p == NULL) {
        return false;
    }
    out->name = p->name;
    out->tenant_domain = p->tenant_domain;
    out->join = gb_join_id(p->join);
    out->assigned_user = p->assigned_user;
    return true;
}

int gb_api__profile_esp_timeout_min(const gb_api_t *api, const gb_dev_t *dev)
{
    const profile_t *p = find_by_tag(api->profiles, dev->group_tag);
    return p != NULL ? p->esp_timeout_min : 0;
}

static bool same_choice(const gb_dev_t *dev, const profile_choice_t *c)
{
    bool same_name =
        (dev->profile == NULL && c->name == NULL) ||
        (dev->profile != NULL && c->name != NULL && strcmp(dev->profile, c->name) == 0);
    return same_name && dev->profile_hybrid == c->hybrid;
}

/* The one place where a committed profile change reaches devices: every device whose group
 * tag matches the profile's previous tag (old_tag, NULL for a new profile) or its new one is
 * given its profile again, and those whose view changed (profile name or hybrid warning) are
 * published. Returns how many were published. */
static size_t apply_change(gb_api_t *api, const char *old_tag, const char *new_tag)
{
    size_t changed = 0;
    for (gb_fleet_dev_t *fd = gb_fleet_first_after(&api->fleet, NULL, 0); fd != NULL;
         fd = gb_fleet_next(&api->fleet, fd)) {
        const char *tag = fd->dev.group_tag;
        if (!gb_group_tag_eq(tag, new_tag) && !gb_group_tag_eq(tag, old_tag)) {
            continue;
        }
        profile_choice_t c;
        choose(api->profiles, &fd->dev, &c);
        if (same_choice(&fd->dev, &c)) {
            continue; /* e.g. only the tenant changed: nothing a device view shows */
        }
        gb_api__profile_apply(api, fd);
        gb_api__device_changed(api, fd);
        changed++;
    }
    return changed;
}

/* How many devices show p now. */
static size_t count_devices(gb_api_t *api, const profile_t *p)
{
    size_t n = 0;
    for (gb_fleet_dev_t *fd = gb_fleet_first_after(&api->fleet, NULL, 0); fd != NULL;
         fd = gb_fleet_next(&api->fleet, fd)) {
        if (fd->dev.profile != NULL && strcmp(fd->dev.profile, p->name) == 0) {
            n++;
        }
    }
    return n;
}

/* ---- JSON ---- */

static void put_key(gb_buf_t *b, const char *key)
{
    gb_buf_appendf(b, ",\"%s\":", key);
}

static void put_str(gb_buf_t *b, const char *key, const char *s)
{
    put_key(b, key);
    if (s == NULL) {
        gb_buf_append_str(b, "null");
    } else {
        gb_json_quote(b, s, strlen(s));
    }
}

static void put_time(gb_buf_t *b, const char *key, int64_t ms)
{
    char t[32];
    gb_time_format_rfc3339(ms, t);
    put_str(b, key, t);
}

static void profile_json(gb_buf_t *b, const profile_t *p, size_t devices)
{
    gb_buf_append_str(b, "{\"name\":");
    gb_json_quote(b, p->name, strlen(p->name));
    put_str(b, "tenant_domain", p->tenant_domain);
    put_str(b, "join", gb_join_id(p->join));
    put_str(b, "device_name_template", p->device_name_template);
    put_str(b, "group_tag", p->group_tag);
    put_str(b, "assigned_user", p->assigned_user);
    put_key(b, "esp_timeout_min");
    gb_buf_appendf(b, "%d", p->esp_timeout_min);
    put_key(b, "devices");
    gb_buf_appendf(b, "%zu", devices);
    put_time(b, "created_at", p->created_ms);
    put_time(b, "updated_at", p->updated_ms);
    gb_buf_append_str(b, "}");
}

/* ---- GET /api/v1/profiles ---- */

static void on_list(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    struct gb_api_profiles *reg = api->profiles;
    size_t *counts = gb_xcalloc(reg->n + 1, sizeof(*counts));
    gb_buf_t out;

    /* One walk over the fleet counts the devices of every profile. */
    for (gb_fleet_dev_t *fd = gb_fleet_first_after(&api->fleet, NULL, 0); fd != NULL;
         fd = gb_fleet_next(&api->fleet, fd)) {
        size_t at;
        if (fd->dev.profile != NULL && find_by_name(reg, fd->dev.profile, &at) != NULL) {
            counts[at]++;
        }
    }
    gb_buf_init(&out);
    gb_buf_append_str(&out, "{\"profiles\":[");
    for (size_t i = 0; i < reg->n; i++) {
        if (i > 0) {
            gb_buf_append_str(&out, ",");
        }
        profile_json(&out, reg->list[i], counts[i]);
    }
    gb_buf_append_str(&out, "]}");
    gb_http_respond_json(req, 200, &out);
    gb_buf_dispose(&out);
    free(counts);
}

/* ---- PUT /api/v1/profiles/{name} ---- */

static int field_error(gb_error_t *err, const char *field, const char *why)
{
    gb_error_set(err, 400, "invalid_request", field, "%s %s", field, why);
    return GB_EINVAL;
}

/* A string field (or null, where nullable) copied into the arena. */
static int take_string(gb_arena_t *arena, const char *key, json_t *v, bool nullable,
                       const char **out, gb_error_t *err)
{
    if (nullable && json_is_null(v)) {
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v)) {
        return field_error(err, key, nullable ? "must be a string or null" : "must be a string");
    }
    *out = gb_arena_strndup(arena, json_string_value(v), json_string_length(v));
    return 0;
}

/* Fills p from the body. Fields the API writes itself (devices, created_at, updated_at) are
 * ignored, so a profile from GET can be sent back as it is; name must equal the path's; any
 * other unknown field is refused, so a misspelt one does not silently keep its default. */
static int decode_body(gb_arena_t *arena, json_t *root, gb_profile_t *p, gb_error_t *err)
{
    const char *key;
    json_t *v;
    bool have_tenant = false, have_join = false, have_tag = false;

    json_object_foreach(root, key, v)
    {
        int rc = 0;
        if (strcmp(key, "tenant_domain") == 0) {
            rc = take_string(arena, key, v, false, &p->tenant_domain, err);
            have_tenant = true;
        } else if (strcmp(key, "join") == 0) {
            const char *s = json_string_value(v);
            if (s == NULL || !gb_join_parse(gb_str_from_cstr(s), &p->join)) {
                rc = field_error(err, key, "must be \"azure_ad\" or \"hybrid\"");
            }
            have_join = true;
        } else if (strcmp(key, "device_name_template") == 0) {
            rc = take_string(arena, key, v, true, &p->device_name_template, err);
        } else if (strcmp(key, "group_tag") == 0) {
            rc = take_string(arena, key, v, false, &p->group_tag, err);
            have_tag = true;
        } else if (strcmp(key, "assigned_user") == 0) {
            rc = take_string(arena, key, v, true, &p->assigned_user, err);
        } else if (strcmp(key, "esp_timeout_min") == 0) {
            if (json_is_integer(v)) {
                p->esp_timeout_min = json_integer_value(v);
            } else if (!json_is_null(v)) {
                rc = field_error(err, key, "must be a whole number of minutes, or null");
            }
        } else if (strcmp(key, "name") == 0) {
            const char *s = json_string_value(v);
            if (s == NULL || strcmp(s, p->name) != 0) {
                rc = field_error(err, key, "must be left out or equal the name in the path");
            }
        } else if (strcmp(key, "devices") != 0 && strcmp(key, "created_at") != 0 &&
                   strcmp(key, "updated_at") != 0) {
            gb_error_set(err, 400, "invalid_request", key, "%s is not a profile field", key);
            rc = GB_EINVAL;
        }
        if (rc != 0) {
            return rc;
        }
    }
    if (!have_tenant) {
        return field_error(err, "tenant_domain", "is required");
    }
    if (!have_join) {
        return field_error(err, "join", "is required");
    }
    if (!have_tag) {
        return field_error(err, "group_tag", "is required");
    }
    return 0;
}

static void pump(gb_api_t *api);

static void respond_profile(gb_http_req_t *req, int status, gb_api_t *api, const profile_t *p)
{
    gb_buf_t out;
    gb_buf_init(&out);
    profile_json(&out, p, count_devices(api, p));
    if (status == 201) {
        char loc[GB_PROFILE_NAME_MAX + 64];
        snprintf(loc, sizeof(loc), "Location: /api/v1/profiles/%s\r\n", p->name);
        gb_http_respond(req, status, "application/json", loc, out.data, out.len);
    } else {
        gb_http_respond_json(req, status, &out);
    }
    gb_buf_dispose(&out);
}

static void on_written(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    put_op_t *op = gb_container_of(q, put_op_t, query);
    gb_api_t *api = op->api;
    gb_http_req_t *req = op->req;

    api->profiles->writing = false;
    if (err == 0 && (nresults < 2 || PQntuples(results[1]) != 1)) {
        err = GB_EDB; /* cannot happen: the statement returns its one row */
    }
    if (err == 0) {
        profile_t *p = profile_from_row(results[1], 0);
        bool created = PQgetvalue(results[1], 0, C_INSERTED)[0] == 't';
        profile_t *old = registry_put(api->profiles, p);
        size_t changed = apply_change(api, old != NULL ? old->group_tag : NULL, p->group_tag);
        gb_log(GB_LOG_INFO, "profiles",
               "profile %s %s by %s: group tag \"%s\", join %s, %zu "
               "devices changed",
               p->name, created ? "created" : "updated", op->who, p->group_tag, gb_join_id(p->join),
               changed);
        profile_free(old);
        respond_profile(req, created ? 201 : 200, api, p);
    } else if (err == GB_EDB && strcmp(q->sqlstate, "23505") == 0) {
        /* The unique index on the folded group tag: another writer took it meanwhile. */
        gb_http_respond_errorf(req, 409, "conflict",
                               "another profile already uses the group tag \"%s\"",
                               op->p.group_tag);
    } else if (err == GB_EDB) {
        gb_log(GB_LOG_ERROR, "profiles", "writing profile %s failed: %s (sqlstate %s)", op->p.name,
               q->error, q->sqlstate);
        gb_http_respond_errorf(req, 500, "internal_error",
                               "the database refused the profile; nothing was changed");
    } else {
        gb_http_respond_errorf(req, 503, "unavailable",
                               "the database is unavailable (%s); nothing was changed, retry "
                               "later",
                               gb_strerror(err));
    }
    /* op lived in the request just answered: only api from here on. */
    pump(api);
}

/* Fills op's audit parameters with the devices the change touches (as apply_change will find
 * them after COMMIT: PUTs are written one at a time); false when it touches none. */
static bool audit_params(gb_api_t *api, put_op_t *op)
{
    const profile_t *old = find_by_name(api->profiles, op->p.name, NULL);
    const char *old_tag = old != NULL ? old->group_tag : NULL;
    gb_pg_array_t serials, applied;
    gb_arena_t *arena = &op->req->arena;
    gb_pg_array_init(&serials);
    gb_pg_array_init(&applied);
    for (gb_fleet_dev_t *fd = gb_fleet_first_after(&api->fleet, NULL, 0); fd != NULL;
         fd = gb_fleet_next(&api->fleet, fd)) {
        const char *tag = fd->dev.group_tag;
        bool now = gb_group_tag_eq(tag, op->p.group_tag);
        if (now || gb_group_tag_eq(tag, old_tag)) {
            gb_pg_array_cstr(&serials, fd->key);
            gb_pg_array_cstr(&applied, now ? "t" : "f");
        }
    }
    bool any = serials.n > 0;
    if (any) {
        const char *lit = gb_pg_array_finish(&serials);
        op->audit_params[8] = gb_arena_strndup(arena, lit, serials.buf.len);
        lit = gb_pg_array_finish(&applied);
        op->audit_params[9] = gb_arena_strndup(arena, lit, applied.buf.len);
        op->audit_params[0] = op->who;
        for (size_t i = 0; i < 7; i++) {
            op->audit_params[1 + i] = op->params[i];
        }
    }
    gb_pg_array_dispose(&serials);
    gb_pg_array_dispose(&applied);
    return any;
}

/* Sends op's transaction, or answers it at once (group tag taken, database down). Returns true
 * when a transaction is now in flight. */
static bool start_write(gb_api_t *api, put_op_t *op)
{
    const profile_t *holder = find_by_tag(api->profiles, op->p.group_tag);
    if (holder != NULL && strcmp(holder->name, op->p.name) != 0) {
        gb_http_respond_errorf(op->req, 409, "conflict",
                               "profile %s already uses the group tag \"%s\" (tags match "
                               "regardless of letter case)",
                               holder->name, holder->group_tag);
        return false;
    }
    snprintf(op->esp, sizeof(op->esp), "%d", (int)op->p.esp_timeout_min);
    op->params[0] = op->p.name;
    op->params[1] = op->p.tenant_domain;
    op->params[2] = gb_join_id(op->p.join);
    op->params[3] = op->p.device_name_template;
    op->params[4] = op->p.group_tag;
    op->params[5] = op->p.assigned_user;
    op->params[6] = op->esp;
    gb_pg_query_init(&op->query, "BEGIN", 0, NULL, on_written);
    gb_pg_query_add(&op->query, SQL_UPSERT, 7, op->params);
    if (audit_params(api, op)) {
        gb_pg_query_add(&op->query, SQL_AUDIT, 10, op->audit_params);
    }
    gb_pg_query_add(&op->query, "COMMIT", 0, NULL);
    int rc = gb_pg_submit(api->pg, &op->query);
    if (rc < 0) {
        gb_http_respond_errorf(op->req, 503, "unavailable",
                               "the database is unavailable (%s); nothing was changed, retry "
                               "later",
                               gb_strerror(rc));
        return false;
    }
    return true;
}

/* Starts the next waiting PUT unless one is in flight. */
static void pump(gb_api_t *api)
{
    struct gb_api_profiles *reg = api->profiles;
    while (!reg->writing && reg->waiting != NULL) {
        put_op_t *op = reg->waiting;
        reg->waiting = op->next;
        if (reg->waiting == NULL) {
            reg->waiting_tail = &reg->waiting;
        }
        reg->n_waiting--;
        reg->writing = start_write(api, op);
    }
}

static void on_put(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    struct gb_api_profiles *reg = api->profiles;
    gb_error_t err;

    if (!gb_api__is_json(req)) {
        gb_http_respond_errorf(req, 415, "unsupported_media_type",
                               "a profile must be sent as Content-Type: application/json");
        return;
    }
    put_op_t *op = gb_arena_alloc(&req->arena, sizeof(*op));
    memset(op, 0, sizeof(*op));
    op->api = api;
    op->req = req;
    snprintf(op->who, sizeof(op->who), "%s", who->name);
    op->p.name = gb_arena_strndup(&req->arena, req->params[0].p, req->params[0].len);
    op->p.esp_timeout_min = GB_ESP_TIMEOUT_DEFAULT_MIN;

    gb_error_clear(&err);
    json_error_t jerr;
    json_t *root = json_loadb(req->body.data != NULL ? req->body.data : "", req->body.len,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        gb_http_respond_errorf(req, 400, "malformed_json", "the body is not JSON: %s", jerr.text);
        return;
    }
    int rc;
    if (!json_is_object(root)) {
        gb_error_set(&err, 400, "invalid_request", NULL, "the body must be a JSON object");
        rc = GB_EINVAL;
    } else if (strlen(op->p.name) != req->params[0].len) {
        rc = field_error(&err, "name", "must not hold a NUL byte");
    } else {
        rc = decode_body(&req->arena, root, &op->p, &err);
    }
    json_decref(root);
    if (rc == 0) {
        rc = gb_profile_validate(&op->p, &err);
    }
    if (rc != 0) {
        gb_http_respond_error(req, &err);
        return;
    }
    if (reg->n_waiting >= PROFILE_WRITES_WAITING_MAX) {
        gb_http_respond_errorf(req, 503, "unavailable",
                               "too many profile changes are waiting; retry shortly");
        return;
    }
    *reg->waiting_tail = op;
    reg->waiting_tail = &op->next;
    reg->n_waiting++;
    pump(api);
}

/* ---- set-up ---- */

void gb_api__profiles_register(gb_api_t *api)
{
    struct gb_api_profiles *reg = gb_xcalloc(1, sizeof(*reg));
    reg->waiting_tail = &reg->waiting;
    api->profiles = reg;
    gb_api__route(api, GB_HTTP_GET, "/api/v1/profiles", GB_ROLE_VIEWER, on_list);
    gb_api__route(api, GB_HTTP_PUT, "/api/v1/profiles/{name}", GB_ROLE_ADMIN, on_put);
}

void gb_api__profiles_free(gb_api_t *api)
{
    struct gb_api_profiles *reg = api->profiles;
    if (reg == NULL) {
        return;
    }
    HASH_CLEAR(hh, reg->by_tag);
    for (size_t i = 0; i < reg->n; i++) {
        profile_free(reg->list[i]);
    }
    free(reg->list);
    free(reg);
    api->profiles = NULL;
}

int gb_api__profiles_load(gb_api_t *api, PGconn *conn, char *err, size_t errlen)
{
    struct gb_api_profiles *reg = api->profiles;
    PGresult *res = PQexec(conn, SQL_LOAD);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        gb_pg_error_text(conn, res, err, errlen);
        PQclear(res);
        return GB_EDB;
    }
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        profile_t *p = profile_from_row(res, r);
        gb_profile_t view = {
            p->name,      p->tenant_domain, p->join,           p->device_name_template,
            p->group_tag, p->assigned_user, p->esp_timeout_min};
        gb_error_t e;
        gb_error_clear(&e);
        /* Rows were checked when written; one that fails now was written under other rules
         * (or by hand). It still selects its devices, as Intune's copy would. */
        if (gb_profile_validate(&view, &e) != 0) {
            gb_log(GB_LOG_WARN, "profiles", "profile %s no longer passes the checks: %s", p->name,
                   e.message);
        }
        profile_free(registry_put(reg, p));
    }
    PQclear(res);
    gb_log(GB_LOG_INFO, "profiles", "loaded %zu profiles", reg->n);
    return 0;
}
