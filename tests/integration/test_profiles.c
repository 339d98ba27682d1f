/* Profiles against a real gloveboxd and a real PostgreSQL: PUT creates (201) then updates (200),
 * GET lists in name order with the devices each applies to, every invalid field is named in a
 * 400, roles and methods are enforced, two profiles cannot share a group tag, a hybrid profile
 * reaches the devices its group tag selects (and leaves them when the tag moves), profiles
 * survive a restart, and a PUT while the database refuses connections gets 503 and stores
 * nothing. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "harness.h"

#define PROFILES "/api/v1/profiles"

static char db_url[512];
static gb_th_server_t srv;
static PGconn *db;
static char *agent_token;
static char *viewer_token;
static char *technician_token;
static char *admin_token;

/* ---- server ---- */

static int start_server(void)
{
    const char *extra[] = {"--log-level", "info", "--db-connect-timeout", "1s", NULL};
    return gb_th_server_start(&srv, db_url, extra);
}

/* Stops and starts the server on the same database: the fleet and the profiles load again.
 * Returns once the pool has a connection (/readyz), as reports are refused before that. */
static void restart_server(void)
{
    assert_int_equal(gb_th_server_stop(&srv, SIGTERM, 10000), 0);
    assert_int_equal(start_server(), 0);
    assert_int_equal(gb_th_wait_status(srv.port, "/readyz", 200, 5000), 200);
}

static int setup(void **state)
{
    (void)state;
    if (gb_th_db_create(db_url, sizeof(db_url)) != 0) {
        return -1;
    }
    agent_token = gb_th_token_create(db_url, "agent", "bench-agent");
    viewer_token = gb_th_token_create(db_url, "viewer", "lead");
    technician_token = gb_th_token_create(db_url, "technician", "bench-tech");
    admin_token = gb_th_token_create(db_url, "admin", "it-admin");
    if (agent_token == NULL || viewer_token == NULL || technician_token == NULL ||
        admin_token == NULL || start_server() != 0) {
        return -1;
    }
    db = PQconnectdb(db_url);
    return PQstatus(db) == CONNECTION_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int rc = gb_th_server_stop(&srv, SIGTERM, 10000);
    PQfinish(db);
    free(agent_token);
    free(viewer_token);
    free(technician_token);
    free(admin_token);
    return rc == 0 ? 0 : -1;
}

/* ---- database ---- */

/* The single value of a one-row query (heap; "" for NULL), or NULL when there is no row. */
static char *query_text(const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    }
    char *v = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        v = gb_xstrdup(PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return v;
}

static void exec_sql(const char *sql, int n, const char *const *params)
{
    free(query_text(sql, n, params));
}

static long long count_profiles(void)
{
    char *v = query_text("SELECT count(*) FROM profiles", 0, NULL);
    long long n = atoll(v);
    free(v);
    return n;
}

/* ---- HTTP ---- */

static json_t *body_json(const gb_th_resp_t *r)
{
    json_t *j = json_loads(r->body != NULL ? r->body : "", 0, NULL);
    if (j == NULL) {
        fail_msg("not JSON (status %d): %s", r->status, r->body != NULL ? r->body : "");
    }
    return j;
}

static void put_profile(const char *token, const char *name, const char *body, gb_th_resp_t *r)
{
    char path[256];
    snprintf(path, sizeof(path), PROFILES "/%s", name);
    gb_th_request_auth(srv.port, "PUT", path, token, body, r);
}

/* PUTs as admin and checks the status; returns the reply's JSON. */
static json_t *put_ok(const char *name, const char *body, int want)
{
    gb_th_resp_t r;
    put_profile(admin_token, name, body, &r);
    if (r.status != want) {
        fail_msg("PUT %s: status %d, want %d; body %s", name, r.status, want,
                 r.body != NULL ? r.body : "");
    }
    json_t *j = body_json(&r);
    gb_th_resp_free(&r);
    return j;
}

/* Checks an error reply: status, code and (when given) the field at fault. */
static void assert_error_field(const gb_th_resp_t *r, int status, const char *code,
                               const char *field)
{
    gb_th_assert_json_error(r, status, code);
    if (field != NULL) {
        json_t *j = body_json(r);
        const char *got = json_string_value(json_object_get(json_object_get(j, "error"), "field"));
        if (got == NULL || strcmp(got, field) != 0) {
            fail_msg("error %s names field %s, want %s", r->body, got != NULL ? got : "(none)",
                     field);
        }
        json_decref(j);
    }
}

static json_t *get_profiles(void)
{
    gb_th_resp_t r;
    gb_th_request_auth(srv.port, "GET", PROFILES, viewer_token, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    gb_th_resp_free(&r);
    assert_true(json_is_array(json_object_get(j, "profiles")));
    return j;
}

/* The listed profile called name (borrowed from list), or NULL. */
static json_t *listed(json_t *list, const char *name)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(list, "profiles"), i, p)
    {
        if (strcmp(json_string_value(json_object_get(p, "name")), name) == 0) {
            return p;
        }
    }
    return NULL;
}

static const char *str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static long long num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) {
        fail_msg("%s is not an integer", key);
    }
    return json_integer_value(v);
}

/* One agent report for serial carrying messages (a JSON array's text), sent again on 503 for a
 * few seconds, as an agent does. */
static void post_messages(const char *serial, const char *messages)
{
    char *body = gb_xasprintf("{\"protocol\":1,\"device\":{\"serial\":\"%s\"},\"messages\":%s}",
                              serial, messages);
    gb_th_resp_t r;
    for (int i = 0;; i++) {
        gb_th_request_auth(srv.port, "POST", "/api/v1/agent/messages", agent_token, body, &r);
        if (r.status != 503 || i == 50) {
            break;
        }
        gb_th_resp_free(&r);
        gb_th_sleep_ms(100);
    }
    if (r.status != 200) {
        fail_msg("agent report: status %d, body %s", r.status, r.body != NULL ? r.body : "");
    }
    gb_th_resp_free(&r);
    free(body);
}

/* A heartbeat with the given seq. */
static void report(const char *serial, int seq)
{
    char msgs[128];
    snprintf(msgs, sizeof(msgs),
             "[{\"seq\":%d,\"at\":\"2026-11-24T10:00:%02d.000Z\",\"type\":\"heartbeat\"}]", seq,
             seq % 60);
    post_messages(serial, msgs);
}

/* The device as GET /api/v1/devices/{serial} shows it: "profile|warned" ("-" for no profile;
 * warned is "hybrid" when its warnings hold hybrid_join_unsupported, else "-"). Heap. */
static json_t *get_device(const char *serial)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/devices/%s", serial);
    return gb_th_get_json(srv.port, path, viewer_token);
}

static char *device_profile(const char *serial)
{
    json_t *d = get_device(serial);
    bool warned = false;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(d, "warnings"), i, w)
    {
        warned = warned || strcmp(json_string_value(w), "hybrid_join_unsupported") == 0;
    }
    const char *prof = str(d, "profile");
    char *v = gb_xasprintf("%s|%s", prof != NULL ? prof : "-", warned ? "hybrid" : "-");
    json_decref(d);
    return v;
}

static void assert_device_profile(const char *serial, const char *want)
{
    char *v = device_profile(serial);
    if (strcmp(v, want) != 0) {
        fail_msg("device %s: %s, want %s", serial, v, want);
    }
    free(v);
}

/* ---- tests ---- */

static void test_put_creates_then_updates(void **state)
{
    (void)state;
    gb_th_resp_t r;
    const char *body = "{\"tenant_domain\":\"contoso.onmicrosoft.com\",\"join\":\"azure_ad\","
                       "\"device_name_template\":\"SLS-%RAND:6%\",\"group_tag\":\"Sales\"}";
    put_profile(admin_token, "sales", body, &r);
    assert_int_equal(r.status, 201);
    char *loc = gb_th_resp_header(&r, "Location");
    assert_non_null(loc);
    assert_string_equal(loc, "/api/v1/profiles/sales");
    free(loc);
    json_t *j = body_json(&r);
    gb_th_resp_free(&r);
    assert_string_equal(str(j, "name"), "sales");
    assert_string_equal(str(j, "tenant_domain"), "contoso.onmicrosoft.com");
    assert_string_equal(str(j, "join"), "azure_ad");
    assert_string_equal(str(j, "device_name_template"), "SLS-%RAND:6%");
    assert_string_equal(str(j, "group_tag"), "Sales");
    assert_true(json_is_null(json_object_get(j, "assigned_user")));
    assert_int_equal(num(j, "esp_timeout_min"), 60);
    assert_int_equal(num(j, "devices"), 0);
    int64_t created = 0, updated = 0;
    assert_true(
        gb_time_parse_rfc3339(str(j, "created_at"), strlen(str(j, "created_at")), &created));
    assert_true(
        gb_time_parse_rfc3339(str(j, "updated_at"), strlen(str(j, "updated_at")), &updated));
    assert_true(updated >= created);
    /* Answered after COMMIT: the row is there now. */
    const char *p[] = {"sales"};
    char *row = query_text("SELECT concat_ws('|', tenant_domain, join_type, device_name_template, "
                           "group_tag, coalesce(assigned_user, '-'), esp_timeout_min) "
                           "FROM profiles WHERE name = $1",
                           1, p);
    assert_non_null(row);
    assert_string_equal(row, "contoso.onmicrosoft.com|azure_ad|SLS-%RAND:6%|Sales|-|60");
    free(row);
    char *first_created = gb_xstrdup(str(j, "created_at"));
    json_decref(j);

    /* The same name again updates: 200, creation time kept, every field replaced. */
    gb_th_sleep_ms(5);
    j = put_ok("sales",
               "{\"tenant_domain\":\"contoso.com\",\"join\":\"hybrid\",\"device_name_template\":"
               "null,\"group_tag\":\"Sales-EU\",\"assigned_user\":\"alice@contoso.com\","
               "\"esp_timeout_min\":90}",
               200);
    assert_string_equal(str(j, "tenant_domain"), "contoso.com");
    assert_string_equal(str(j, "join"), "hybrid");
    assert_true(json_is_null(json_object_get(j, "device_name_template")));
    assert_string_equal(str(j, "group_tag"), "Sales-EU");
    assert_string_equal(str(j, "assigned_user"), "alice@contoso.com");
    assert_int_equal(num(j, "esp_timeout_min"), 90);
    assert_string_equal(str(j, "created_at"), first_created);
    assert_true(strcmp(str(j, "updated_at"), first_created) > 0);
    json_decref(j);
    free(first_created);
    row = query_text("SELECT concat_ws('|', join_type, coalesce(device_name_template, '-'), "
                     "group_tag, assigned_user, esp_timeout_min, updated_at > created_at) "
                     "FROM profiles WHERE name = $1",
                     1, p);
    assert_string_equal(row, "hybrid|-|Sales-EU|alice@contoso.com|90|t");
    free(row);

    /* A profile as GET shows it can be sent back as it is. */
    json_t *list = get_profiles();
    char *again = json_dumps(listed(list, "sales"), JSON_COMPACT);
    json_decref(list);
    j = put_ok("sales", again, 200);
    assert_string_equal(str(j, "group_tag"), "Sales-EU");
    json_decref(j);
    free(again);
}

static void test_get_lists_in_name_order(void **state)
{
    (void)state;
    static const char *const names[] = {"zeta", "Alpha", "mid-1", "beta.2"};
    for (size_t i = 0; i < GB_ARRAY_LEN(names); i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"tenant_domain\":\"fabrikam.com\",\"join\":\"azure_ad\",\"group_tag\":"
                 "\"order-%s\"}",
                 names[i]);
        json_decref(put_ok(names[i], body, 201));
    }
    json_t *list = get_profiles();
    json_t *arr = json_object_get(list, "profiles");
    const char *prev = NULL;
    size_t i;
    json_t *p;
    json_array_foreach(arr, i, p)
    {
        static const char *const keys[] = {
            "name",       "tenant_domain", "join",    "device_name_template",
            "group_tag",  "assigned_user", "devices", "esp_timeout_min",
            "created_at", "updated_at",
        };
        const char *name = str(p, "name");
        assert_non_null(name);
        if (prev != NULL && strcmp(prev, name) >= 0) {
            fail_msg("profiles out of order: %s before %s", prev, name);
        }
        prev = name;
        for (size_t k = 0; k < GB_ARRAY_LEN(keys); k++) {
            if (json_object_get(p, keys[k]) == NULL) {
                fail_msg("profile %s lacks %s", name, keys[k]);
            }
        }
        assert_int_equal(json_object_size(p), GB_ARRAY_LEN(keys));
    }
    for (size_t k = 0; k < GB_ARRAY_LEN(names); k++) {
        json_t *z = listed(list, names[k]);
        assert_non_null(z);
        assert_int_equal(num(z, "esp_timeout_min"), 60);
        assert_true(json_is_null(json_object_get(z, "device_name_template")));
    }
    /* Byte order: upper case sorts first. */
    assert_string_equal(str(json_array_get(arr, 0), "name"), "Alpha");
    json_decref(list);
}

static void test_validation_errors_name_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        const char *body;
        const char *field;
    } cases[] = {
        {"v1", "{\"tenant_domain\":\"contoso\",\"join\":\"azure_ad\",\"group_tag\":\"v\"}",
         "tenant_domain"},
        {"v1", "{\"tenant_domain\":7,\"join\":\"azure_ad\",\"group_tag\":\"v\"}", "tenant_domain"},
        {"v1", "{\"join\":\"azure_ad\",\"group_tag\":\"v\"}", "tenant_domain"},
        {"v1", "{\"tenant_domain\":\"c.com\",\"join\":\"aad\",\"group_tag\":\"v\"}", "join"},
        {"v1", "{\"tenant_domain\":\"c.com\",\"group_tag\":\"v\"}", "join"},
        {"v1", "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"\"}",
         "group_tag"},
        {"v1", "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\" v\"}",
         "group_tag"},
        {"v1", "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":null}",
         "group_tag"},
        {"v1", "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\"}", "group_tag"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"device_name_template\":\"CONTOSO-LAPTOP-%RAND:4%\"}",
         "device_name_template"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"device_name_template\":\"%RAND:6%\"}",
         "device_name_template"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"device_name_template\":\"PC_%SERIAL%\"}",
         "device_name_template"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"device_name_template\":\"PC-%RAND:0%\"}",
         "device_name_template"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"assigned_user\":\"alice\"}",
         "assigned_user"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"esp_timeout_min\":0}",
         "esp_timeout_min"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"esp_timeout_min\":1441}",
         "esp_timeout_min"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"esp_timeout_min\":\"60\"}",
         "esp_timeout_min"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"esp_timeout_min\":60.5}",
         "esp_timeout_min"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"grouptag\":\"w\"}",
         "grouptag"},
        {"v1",
         "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
         "\"name\":\"v2\"}",
         "name"},
        {"bad%20name", "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\"}",
         "name"},
        {"..", "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\"}", NULL},
        {"v1", "[]", NULL},
        {"v1", "\"profile\"", NULL},
    };
    long long before = count_profiles();
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        gb_th_resp_t r;
        put_profile(admin_token, cases[i].name, cases[i].body, &r);
        if (r.status == 404 && strcmp(cases[i].name, "..") == 0) {
            /* A path with a dot segment may be resolved before routing: also a refusal. */
            gb_th_resp_free(&r);
            continue;
        }
        if (r.status != 400) {
            fail_msg("case %zu (%s): status %d, want 400; body %s", i, cases[i].body, r.status,
                     r.body != NULL ? r.body : "");
        }
        assert_error_field(&r, 400, "invalid_request", cases[i].field);
        gb_th_resp_free(&r);
    }

    gb_th_resp_t r;
    put_profile(admin_token, "v1", "{\"tenant_domain\":", &r);
    assert_error_field(&r, 400, "malformed_json", NULL);
    gb_th_resp_free(&r);
    /* Keys given twice are refused rather than one of them silently winning. */
    put_profile(admin_token, "v1",
                "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\","
                "\"group_tag\":\"w\"}",
                &r);
    assert_error_field(&r, 400, "malformed_json", NULL);
    gb_th_resp_free(&r);
    /* A JSON body is required. */
    char auth[256];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\nContent-Type: text/plain\r\n",
             admin_token);
    const char *ok = "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"v\"}";
    gb_th_request(srv.port, "PUT", PROFILES "/v1", auth, ok, strlen(ok), &r);
    assert_error_field(&r, 415, "unsupported_media_type", NULL);
    gb_th_resp_free(&r);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", admin_token);
    gb_th_request(srv.port, "PUT", PROFILES "/v1", auth, NULL, 0, &r);
    assert_error_field(&r, 415, "unsupported_media_type", NULL);
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "PUT", PROFILES "/v1", admin_token, "", &r);
    assert_error_field(&r, 400, "malformed_json", NULL);
    gb_th_resp_free(&r);

    assert_int_equal(count_profiles(), before);
}

static void test_roles_and_methods(void **state)
{
    (void)state;
    const char *body = "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"r\"}";
    gb_th_resp_t r;

    gb_th_request(srv.port, "GET", PROFILES, NULL, NULL, 0, &r);
    assert_error_field(&r, 401, "unauthorized", NULL);
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", PROFILES, "not-a-token", NULL, &r);
    assert_error_field(&r, 401, "unauthorized", NULL);
    gb_th_resp_free(&r);
    put_profile(NULL, "roles", body, &r);
    assert_error_field(&r, 401, "unauthorized", NULL);
    gb_th_resp_free(&r);

    /* Reading is for every person's role; changing is for admins only. */
    gb_th_request_auth(srv.port, "GET", PROFILES, agent_token, NULL, &r);
    assert_error_field(&r, 403, "forbidden", NULL);
    gb_th_resp_free(&r);
    const char *readers[] = {viewer_token, technician_token, admin_token};
    for (size_t i = 0; i < GB_ARRAY_LEN(readers); i++) {
        gb_th_request_auth(srv.port, "GET", PROFILES, readers[i], NULL, &r);
        assert_int_equal(r.status, 200);
        gb_th_resp_free(&r);
    }
    const char *writers[] = {agent_token, viewer_token, technician_token};
    for (size_t i = 0; i < GB_ARRAY_LEN(writers); i++) {
        put_profile(writers[i], "roles", body, &r);
        assert_error_field(&r, 403, "forbidden", NULL);
        gb_th_resp_free(&r);
    }
    const char *p[] = {"roles"};
    assert_null(query_text("SELECT name FROM profiles WHERE name = $1", 1, p));

    /* Methods the resource does not have. */
    gb_th_request_auth(srv.port, "DELETE", PROFILES "/roles", admin_token, NULL, &r);
    assert_error_field(&r, 405, "method_not_allowed", NULL);
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "POST", PROFILES, admin_token, body, &r);
    assert_int_equal(r.status, 405);
    char *allow = gb_th_resp_header(&r, "Allow");
    assert_non_null(allow);
    assert_non_null(strstr(allow, "GET"));
    free(allow);
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", PROFILES "/roles", admin_token, NULL, &r);
    assert_int_equal(r.status, 405);
    gb_th_resp_free(&r);
}

static void test_a_group_tag_belongs_to_one_profile(void **state)
{
    (void)state;
    gb_th_resp_t r;
    json_decref(put_ok("kiosk-a",
                       "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":"
                       "\"Kiosk\"}",
                       201));
    /* Tags match regardless of ASCII case, as the groups that assign profiles compare them. */
    put_profile(admin_token, "kiosk-b",
                "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"KIOSK\"}", &r);
    assert_error_field(&r, 409, "conflict", NULL);
    assert_non_null(strstr(r.body, "kiosk-a"));
    gb_th_resp_free(&r);
    const char *p[] = {"kiosk-b"};
    assert_null(query_text("SELECT name FROM profiles WHERE name = $1", 1, p));

    /* A profile may rewrite its own tag in another case. */
    json_t *j = put_ok("kiosk-a",
                       "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":"
                       "\"kiosk\"}",
                       200);
    assert_string_equal(str(j, "group_tag"), "kiosk");
    json_decref(j);
    /* Once the tag moves on, another profile may take it. */
    json_decref(put_ok("kiosk-a",
                       "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":"
                       "\"Kiosk-Old\"}",
                       200));
    json_decref(put_ok("kiosk-b",
                       "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":"
                       "\"Kiosk\"}",
                       201));

    /* The database holds the same rule on its own. */
    PGresult *res = PQexec(db, "INSERT INTO profiles (name, tenant_domain, join_type, group_tag) "
                               "VALUES ('kiosk-c', 'c.com', 'azure_ad', 'kIOSk')");
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(res, PG_DIAG_SQLSTATE), "23505");
    PQclear(res);
}

static void test_a_hybrid_profile_warns_its_devices(void **state)
{
    (void)state;
    const char *serial = "PF3HYB01";
    const char *sp[] = {serial};

    /* The device is created by its agent (not imported), so it has no group tag yet; give it
     * one in the table, and restart so that the fleet loads it. */
    report(serial, 1);
    exec_sql("UPDATE devices SET group_tag = 'Lab-Hybrid' WHERE serial = $1", 1, sp);
    restart_server();
    assert_device_profile(serial, "-|-");

    /* A hybrid profile for that tag (in another case) reaches the device at once. */
    json_t *j = put_ok("lab",
                       "{\"tenant_domain\":\"contoso.com\",\"join\":\"hybrid\",\"group_tag\":"
                       "\"lab-hybrid\",\"device_name_template\":\"LAB-%SERIAL%\"}",
                       201);
    assert_int_equal(num(j, "devices"), 1);
    json_decref(j);
    json_t *list = get_profiles();
    assert_int_equal(num(listed(list, "lab"), "devices"), 1);
    json_decref(list);
    assert_device_profile(serial, "lab|hybrid");

    /* Azure AD join instead: the profile stays, the warning goes. */
    json_decref(put_ok("lab",
                       "{\"tenant_domain\":\"contoso.com\",\"join\":\"azure_ad\",\"group_tag\":"
                       "\"lab-hybrid\"}",
                       200));
    assert_device_profile(serial, "lab|-");
    /* A report's batch publishes a working copy of the device: the profile survives it. */
    report(serial, 2);
    assert_device_profile(serial, "lab|-");

    /* The tag moves elsewhere: the device is left without a profile. */
    j = put_ok("lab",
               "{\"tenant_domain\":\"contoso.com\",\"join\":\"hybrid\",\"group_tag\":\"Lab-2\"}",
               200);
    assert_int_equal(num(j, "devices"), 0);
    json_decref(j);
    assert_device_profile(serial, "-|-");

    /* And back on the original tag, hybrid: the warning returns. */
    json_decref(put_ok("lab",
                       "{\"tenant_domain\":\"contoso.com\",\"join\":\"hybrid\",\"group_tag\":"
                       "\"Lab-Hybrid\"}",
                       200));
    assert_device_profile(serial, "lab|hybrid");
}

static void test_a_restart_keeps_profiles(void **state)
{
    (void)state;
    json_t *before = get_profiles();
    assert_true(json_array_size(json_object_get(before, "profiles")) >= 5);
    restart_server();
    json_t *after = get_profiles();
    if (!json_equal(before, after)) {
        char *a = json_dumps(before, JSON_COMPACT);
        char *b = json_dumps(after, JSON_COMPACT);
        fail_msg("profiles changed across a restart:\nbefore %s\nafter  %s", a, b);
    }
    /* The device gets its profile when the fleet loads, before any report. */
    assert_int_equal(num(listed(after, "lab"), "devices"), 1);
    json_decref(before);
    json_decref(after);
    assert_device_profile("PF3HYB01", "lab|hybrid");
    report("PF3HYB01", 3);
    assert_device_profile("PF3HYB01", "lab|hybrid");
}

/* The device's "status|diagnosis code" as GET /api/v1/devices/{serial} shows it ("-" for no
 * diagnosis). Heap. */
static char *device_diagnosis(const char *serial)
{
    json_t *d = get_device(serial);
    const char *code = str(json_object_get(d, "diagnosis"), "code");
    char *v = gb_xasprintf("%s|%s", str(d, "status"), code != NULL ? code : "-");
    json_decref(d);
    return v;
}

static void assert_device_diagnosis(const char *serial, const char *want, const char *when)
{
    char *v = device_diagnosis(serial);
    if (strcmp(v, want) != 0) {
        fail_msg("device %s %s: %s, want %s", serial, when, v, want);
    }
    free(v);
}

/* A profile's ESP timeout decides a diagnosis (device setup failing without a code after 31
 * minutes is the timeout under a 30-minute profile, unknown under the default 60), and it must
 * decide it the same way when the server loads the device again: from a snapshot that lags the
 * failure, and from the stored messages alone. */
static void test_a_restart_applies_the_profiles_esp_timeout(void **state)
{
    (void)state;
    const char *serial = "PF3ESP30";
    const char *sp[] = {serial};

    json_decref(put_ok("short-esp",
                       "{\"tenant_domain\":\"contoso.com\",\"join\":\"azure_ad\",\"group_tag\":"
                       "\"Short-ESP\",\"esp_timeout_min\":30}",
                       201));
    report(serial, 1);
    exec_sql("UPDATE devices SET group_tag = 'Short-ESP' WHERE serial = $1", 1, sp);
    restart_server();
    assert_device_profile(serial, "short-esp|-");

    post_messages(serial, "[{\"seq\":2,\"at\":\"2026-11-24T10:20:00.000Z\",\"type\":\"stage\","
                          "\"stage\":\"device_setup\",\"state\":\"started\"}]");
    /* The stored snapshot as it is now, from before the failure. */
    char *snap = query_text("SELECT state::text FROM devices WHERE serial = $1", 1, sp);
    char *snap_seq = query_text("SELECT snap_seq FROM devices WHERE serial = $1", 1, sp);
    assert_non_null(snap);
    assert_non_null(snap_seq);
    assert_true(atoll(snap_seq) < 3);
    post_messages(serial, "[{\"seq\":3,\"at\":\"2026-11-24T10:51:00.000Z\",\"type\":\"stage\","
                          "\"stage\":\"device_setup\",\"state\":\"failed\"}]");
    assert_device_diagnosis(serial, "red|esp_timeout", "as ingested");

    /* A snapshot lagging the failure: the failure is applied on top of it at start-up. */
    const char *up[] = {serial, snap, snap_seq};
    exec_sql("UPDATE devices SET state = $2::jsonb, snap_seq = $3::bigint WHERE serial = $1", 3,
             up);
    restart_server();
    assert_device_diagnosis(serial, "red|esp_timeout", "replayed onto an older snapshot");

    /* No usable snapshot: rebuilt from the stored messages. */
    exec_sql("UPDATE devices SET needs_rebuild = true WHERE serial = $1", 1, sp);
    restart_server();
    assert_device_diagnosis(serial, "red|esp_timeout", "rebuilt from its messages");
    char *flag = query_text("SELECT needs_rebuild FROM devices WHERE serial = $1", 1, sp);
    assert_string_equal(flag, "f");
    free(flag);
    free(snap);
    free(snap_seq);
}

static void test_a_put_while_the_database_is_away_gets_503(void **state)
{
    (void)state;
    char *admin_url = gb_th_sh_line("'%s' url '%s' postgres", GB_PG_CLUSTER, GB_PGDIR);
    assert_non_null(admin_url);
    PGconn *adm = PQconnectdb(admin_url);
    free(admin_url);
    assert_int_equal(PQstatus(adm), CONNECTION_OK);
    char dbname[128];
    char sql[256];
    snprintf(dbname, sizeof(dbname), "%s", PQdb(db));

    /* No new connection to this database, and the server's current ones cut. */
    snprintf(sql, sizeof(sql), "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS false", dbname);
    PQclear(PQexec(adm, sql));
    const char *p[] = {dbname};
    PQclear(PQexecParams(adm,
                         "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                         "$1 AND pid <> pg_backend_pid()",
                         1, NULL, p, NULL, NULL, 0));
    const char *body = "{\"tenant_domain\":\"c.com\",\"join\":\"azure_ad\",\"group_tag\":\"away\"}";
    gb_th_resp_t r;
    int64_t t0 = gb_time_mono_ms();
    put_profile(admin_token, "away", body, &r);
    assert_error_field(&r, 503, "unavailable", NULL);
    assert_true(gb_time_mono_ms() - t0 < 5000);
    gb_th_resp_free(&r);
    /* Reading needs no database. */
    gb_th_request_auth(srv.port, "GET", PROFILES, viewer_token, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "\"away\""));
    gb_th_resp_free(&r);

    snprintf(sql, sizeof(sql), "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS true", dbname);
    PQclear(PQexec(adm, sql));
    PQfinish(adm);
    /* The test's own connection was cut too. */
    PQreset(db);
    assert_int_equal(PQstatus(db), CONNECTION_OK);
    const char *ap[] = {"away"};
    assert_null(query_text("SELECT name FROM profiles WHERE name = $1", 1, ap));

    /* The server reconnects by itself; the same PUT then succeeds. */
    int status = 0;
    for (int i = 0; i < 150 && status != 201; i++) {
        put_profile(admin_token, "away", body, &r);
        status = r.status;
        gb_th_resp_free(&r);
        if (status != 201) {
            assert_int_equal(status, 503);
            gb_th_sleep_ms(100);
        }
    }
    assert_int_equal(status, 201);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_creates_then_updates),
        cmocka_unit_test(test_get_lists_in_name_order),
        cmocka_unit_test(test_validation_errors_name_the_field),
        cmocka_unit_test(test_roles_and_methods),
        cmocka_unit_test(test_a_group_tag_belongs_to_one_profile),
        cmocka_unit_test(test_a_hybrid_profile_warns_its_devices),
        cmocka_unit_test(test_a_restart_keeps_profiles),
        cmocka_unit_test(test_a_restart_applies_the_profiles_esp_timeout),
        cmocka_unit_test(test_a_put_while_the_database_is_away_gets_503),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
