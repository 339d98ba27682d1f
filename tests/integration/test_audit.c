/* The handover audit trail against a real gloveboxd, PostgreSQL and glovebox-sim: a simulated
 * fleet's chains verify and record every step (import, statuses with diagnoses and ESP
 * figures, attempts, the user's sign-in, technician actions, profile changes); an UPDATE or a
 * DELETE made behind the server's back by a database superuser is detected and the first bad
 * entry named; concurrent writers never fork a chain; CSV and HTML escape what users control;
 * the NDJSON export pages, and its ids follow commit order, so that a reader paging by id
 * misses no entry; and the server's own database role, set up as docker/postgres-roles.sql
 * says, cannot change the log. */
#include <csv.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "harness.h"

#define AGENT_PATH "/api/v1/agent/messages"
#define DEVICES    12
#define TENANT     "contoso.com"

static char url[512];
static char dir[128];
static gb_th_server_t srv;
static char *agent, *viewer, *tech, *admin;
static PGconn *db;
static json_t *truth; /* the simulator's summary */

/* Prints label and j compactly (for the test's log). */
static void print_json(const char *label, const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    printf("%s%s\n", label, s != NULL ? s : "null");
    free(s);
}

static json_t *get_json(const char *path, const char *token)
{
    return gb_th_get_json(srv.port, path, token);
}

static int post_status(const char *path, const char *token, const char *body)
{
    gb_th_resp_t r;
    gb_th_request_auth(srv.port, "POST", path, token, body, &r);
    int status = r.status;
    gb_th_resp_free(&r);
    return status;
}

static char *sql_value(const char *fmt, ...) GB_PRINTF(1, 2);
static char *sql_value(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    PGresult *res = PQexec(db, sql);
    char *v = NULL;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0) {
        v = strdup(PQgetvalue(res, 0, 0));
    } else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    }
    PQclear(res);
    return v;
}

/* Runs sql; returns the SQLSTATE of its error, or "" when it succeeded (static). */
static const char *sql_try(PGconn *conn, const char *sql)
{
    static char state[8];
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        state[0] = '\0';
    } else {
        const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(state, sizeof(state), "%s", s != NULL ? s : "?????");
    }
    PQclear(res);
    return state;
}

/* The serial of the first device in the truth whose status is status (NULL if none). */
static const char *truth_serial(const char *status)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(truth, "per_device"), i, d)
    {
        if (strcmp(json_string_value(json_object_get(d, "status")), status) == 0) {
            return json_string_value(json_object_get(d, "serial"));
        }
    }
    return NULL;
}

static json_t *audit_of(const char *serial)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/audit", serial);
    return get_json(path, viewer);
}

/* How many entries of a (an audit reply) have this action (and detail.to, when to is set). */
static int count_entries(json_t *a, const char *action, const char *to)
{
    int n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(a, "entries"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "action")), action) != 0) {
            continue;
        }
        const char *t = json_string_value(json_object_get(json_object_get(e, "detail"), "to"));
        if (to == NULL || (t != NULL && strcmp(t, to) == 0)) {
            n++;
        }
    }
    return n;
}

static int setup(void **state)
{
    (void)state;
    const char *extra[] = {"--log-level", "info", NULL};
    snprintf(dir, sizeof(dir), "/tmp/gb-audit-%d", (int)getpid());
    if (gb_th_sh("mkdir -p '%s'", dir) != 0 || gb_th_db_create(url, sizeof(url)) != 0) {
        return -1;
    }
    agent = gb_th_token_create(url, "agent", "bench-agent");
    viewer = gb_th_token_create(url, "viewer", "auditor");
    tech = gb_th_token_create(url, "technician", "-tech-eve");
    admin = gb_th_token_create(url, "admin", "lead-sam");
    if (agent == NULL || viewer == NULL || tech == NULL || admin == NULL ||
        gb_th_server_start(&srv, url, extra) != 0) {
        return -1;
    }
    db = PQconnectdb(url);
    if (PQstatus(db) != CONNECTION_OK) {
        return -1;
    }
    /* A profile for the fleet's group tag, the fleet's CSV imported, then the fleet run with
     * some failures (red, then retried) and every resealed device handed over. */
    gb_th_resp_t r;
    gb_th_request_auth(srv.port, "PUT", "/api/v1/profiles/Staging", admin,
                       "{\"tenant_domain\":\"" TENANT "\",\"join\":\"azure_ad\","
                       "\"group_tag\":\"Staging\"}",
                       &r);
    int st = r.status;
    gb_th_resp_free(&r);
    const char *sim_args = "--devices "
                           "12"
                           " --slots 4 --seed 7 --speed 0 --group-tag Staging "
                           "--fault-rate multiple_mdm=0.3 --handover-share 1 --quiet";
    if (st != 201 || gb_th_sh("'%s' %s --csv '%s/fleet.csv'", GB_SIM, sim_args, dir) != 0 ||
        gb_th_sh("curl -sf -o /dev/null -X POST -H 'Authorization: Bearer %s' "
                 "-H 'Content-Type: text/csv' --data-binary @'%s/fleet.csv' "
                 "http://127.0.0.1:%d/api/v1/devices/import",
                 tech, dir, srv.port) != 0 ||
        gb_th_sh("'%s' %s --server http://127.0.0.1:%d --token '%s' --summary '%s/truth.json'",
                 GB_SIM, sim_args, srv.port, agent, dir) != 0) {
        return -1;
    }
    char path[256];
    snprintf(path, sizeof(path), "%s/truth.json", dir);
    truth = json_load_file(path, 0, NULL);
    return truth != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int rc = gb_th_server_stop(&srv, SIGTERM, 10000);
    PQfinish(db);
    json_decref(truth);
    gb_th_sh("rm -rf '%s'", dir);
    free(agent);
    free(viewer);
    free(tech);
    free(admin);
    return rc == 0 ? 0 : -1;
}

static void test_simulated_fleet_chains_verify_and_record_every_step(void **state)
{
    (void)state;
    size_t i;
    json_t *d;
    int delivered = 0, retried = 0;
    json_array_foreach(json_object_get(truth, "per_device"), i, d)
    {
        const char *serial = json_string_value(json_object_get(d, "serial"));
        const char *status = json_string_value(json_object_get(d, "status"));
        json_t *a = audit_of(serial);
        json_t *entries = json_object_get(a, "entries");
        if (!json_is_true(json_object_get(a, "verified"))) {
            fail_msg("%s: chain does not verify: %s", serial, json_dumps(a, 0));
        }
        /* The first entry is the import, by the importing token; the count equals the table's. */
        json_t *first = json_array_get(entries, 0);
        assert_string_equal(json_string_value(json_object_get(first, "action")), "import");
        assert_string_equal(json_string_value(json_object_get(first, "actor")), "-tech-eve");
        char *n = sql_value("SELECT count(*) FROM audit_log WHERE serial = '%s'", serial);
        assert_int_equal(atoi(n), (int)json_array_size(entries));
        free(n);
        /* Entries chain: seq 1.. and each prev_hash is the previous hash. */
        for (size_t k = 0; k < json_array_size(entries); k++) {
            json_t *e = json_array_get(entries, k);
            assert_int_equal(json_integer_value(json_object_get(e, "seq")), (json_int_t)k + 1);
            if (k > 0) {
                assert_string_equal(
                    json_string_value(json_object_get(e, "prev_hash")),
                    json_string_value(json_object_get(json_array_get(entries, k - 1), "hash")));
            }
        }
        assert_string_equal(json_string_value(json_object_get(a, "head")),
                            json_string_value(json_object_get(
                                json_array_get(entries, json_array_size(entries) - 1), "hash")));
        /* Every status the device passed through is there, by the agent's token. */
        assert_true(count_entries(a, "status", "provisioning") >= 1);
        if (strcmp(status, "delivered") == 0) {
            delivered++;
            assert_true(count_entries(a, "status", "green") >= 1);
            assert_int_equal(count_entries(a, "status", "resealed"), 1);
            assert_int_equal(count_entries(a, "status", "handover"), 1);
            assert_int_equal(count_entries(a, "status", "delivered"), 1);
            assert_int_equal(count_entries(a, "user_signin", NULL), 1);
        }
        int reds = count_entries(a, "status", "red");
        if (reds > 0) {
            retried++;
            /* A red entry carries its diagnosis; a later attempt has its own entry. */
            json_t *e;
            size_t k;
            json_array_foreach(entries, k, e)
            {
                const char *to =
                    json_string_value(json_object_get(json_object_get(e, "detail"), "to"));
                if (to != NULL && strcmp(to, "red") == 0) {
                    json_t *dg = json_object_get(json_object_get(e, "detail"), "diagnosis");
                    assert_string_equal(json_string_value(json_object_get(dg, "code")),
                                        "multiple_mdm");
                    assert_string_equal(json_string_value(json_object_get(e, "actor")),
                                        "bench-agent");
                }
            }
            if (strcmp(status, "red") != 0) {
                assert_true(count_entries(a, "attempt", NULL) >= 1);
            }
        }
        json_decref(a);
    }
    assert_true(delivered > 0);
    assert_true(retried > 0);

    /* The handover record of a delivered device. */
    const char *serial = truth_serial("delivered");
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/handover", serial);
    json_t *h = get_json(path, viewer);
    assert_string_equal(json_string_value(json_object_get(h, "organization")), TENANT);
    assert_string_equal(json_string_value(json_object_get(h, "profile")), "Staging");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(h, "preprovisioning"), "result")),
        "green");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(h, "reseal"), "resealed_by")),
        "bench-agent");
    assert_non_null(
        json_string_value(json_object_get(json_object_get(h, "reseal"), "ready_for_user_at")));
    const char *user = json_string_value(json_object_get(h, "signed_in_user"));
    assert_non_null(user);
    assert_string_equal(user, json_string_value(json_object_get(h, "assigned_user")));
    assert_non_null(json_string_value(json_object_get(h, "desktop_at")));
    assert_true(json_array_size(json_object_get(h, "apps_installed")) > 0);
    assert_true(json_array_size(json_object_get(h, "user_flow")) >= 3);
    assert_true(json_is_true(json_object_get(json_object_get(h, "audit"), "verified")));
    json_t *a = audit_of(serial);
    assert_string_equal(json_string_value(json_object_get(json_object_get(h, "audit"), "head")),
                        json_string_value(json_object_get(a, "head")));
    json_t *signin = NULL;
    json_array_foreach(json_object_get(a, "entries"), i, d)
    {
        if (strcmp(json_string_value(json_object_get(d, "action")), "user_signin") == 0) {
            signin = json_object_get(d, "detail");
        }
    }
    assert_non_null(signin);
    assert_string_equal(json_string_value(json_object_get(signin, "upn")), user);
    assert_true(json_is_true(json_object_get(signin, "matches_assigned_user")));
    printf("handover of %s: ", serial);
    print_json("", h);
    json_decref(a);
    json_decref(h);

    /* A technician's actions and a profile change are recorded too, by their tokens. */
    snprintf(path, sizeof(path), "/api/v1/devices/%s/actions", serial);
    assert_int_equal(post_status(path, tech, "{\"action\":\"note\",\"text\":\"box 4\"}"), 200);
    assert_int_equal(post_status(path, tech, "{\"action\":\"assign_slot\",\"slot\":\"B-2\"}"), 200);
    gb_th_resp_t r;
    gb_th_request_auth(srv.port, "PUT", "/api/v1/profiles/Staging", admin,
                       "{\"tenant_domain\":\"fabrikam.com\",\"join\":\"azure_ad\","
                       "\"group_tag\":\"Staging\"}",
                       &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    a = audit_of(serial);
    assert_true(json_is_true(json_object_get(a, "verified")));
    json_t *entries = json_object_get(a, "entries");
    size_t n = json_array_size(entries);
    json_t *note = json_array_get(entries, n - 3), *slot = json_array_get(entries, n - 2),
           *prof = json_array_get(entries, n - 1);
    assert_string_equal(json_string_value(json_object_get(note, "action")), "note");
    assert_string_equal(json_string_value(json_object_get(note, "actor")), "-tech-eve");
    assert_string_equal(json_string_value(json_object_get(slot, "action")), "assign_slot");
    assert_string_equal(json_string_value(json_object_get(prof, "action")), "profile");
    assert_string_equal(json_string_value(json_object_get(prof, "actor")), "lead-sam");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(prof, "detail"), "tenant_domain")),
        "fabrikam.com");
    /* Every device of the profile got its entry. */
    char *count = sql_value("SELECT count(DISTINCT serial) FROM audit_log WHERE action = "
                            "'profile' AND detail->>'tenant_domain' = 'fabrikam.com'");
    assert_int_equal(atoi(count), DEVICES);
    free(count);
    json_decref(a);
}

static void test_superuser_tampering_is_detected(void **state)
{
    (void)state;
    const char *serial = truth_serial("delivered");
    char sql[512];
    /* Without disabling anything, the log refuses changes even from a superuser. */
    snprintf(sql, sizeof(sql), "UPDATE audit_log SET actor = 'mallory' WHERE serial = '%s'",
             serial);
    assert_string_equal(sql_try(db, sql), "42501");
    snprintf(sql, sizeof(sql), "DELETE FROM audit_log WHERE serial = '%s'", serial);
    assert_string_equal(sql_try(db, sql), "42501");
    assert_string_equal(sql_try(db, "TRUNCATE audit_log"), "42501");

    /* A superuser who skips the triggers changes entry 2 behind the server's back. */
    snprintf(sql, sizeof(sql),
             "BEGIN; SET LOCAL session_replication_role = replica; UPDATE audit_log SET detail "
             "= detail || '{\"group_tag\": \"Finance\"}' WHERE serial = '%s' AND seq = 2; COMMIT",
             serial);
    assert_string_equal(sql_try(db, sql), "");
    json_t *a = audit_of(serial);
    printf("after UPDATE of entry 2 of %s: verified=%s ", serial,
           json_is_true(json_object_get(a, "verified")) ? "true" : "false");
    print_json("problem=", json_object_get(a, "problem"));
    assert_true(json_is_false(json_object_get(a, "verified")));
    json_t *p = json_object_get(a, "problem");
    assert_string_equal(json_string_value(json_object_get(p, "fault")), "changed");
    assert_int_equal(json_integer_value(json_object_get(p, "seq")), 2);
    json_decref(a);

    /* The printable record says so too. */
    char path[256];
    gb_th_resp_t r;
    snprintf(path, sizeof(path), "/api/v1/devices/%s/handover?format=html", serial);
    gb_th_request_auth(srv.port, "GET", path, viewer, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "does NOT verify"));
    gb_th_resp_free(&r);

    /* Another device loses its last entry: the chain still links, but the head says more. */
    const char *other = NULL;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(truth, "per_device"), i, d)
    {
        const char *s = json_string_value(json_object_get(d, "serial"));
        if (strcmp(s, serial) != 0) {
            other = s;
            break;
        }
    }
    snprintf(sql, sizeof(sql),
             "BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM audit_log WHERE "
             "serial = '%s' AND seq = (SELECT max(seq) FROM audit_log WHERE serial = '%s'); "
             "COMMIT",
             other, other);
    assert_string_equal(sql_try(db, sql), "");
    a = audit_of(other);
    printf("after DELETE of the last entry of %s: verified=%s ", other,
           json_is_true(json_object_get(a, "verified")) ? "true" : "false");
    print_json("problem=", json_object_get(a, "problem"));
    assert_true(json_is_false(json_object_get(a, "verified")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(a, "problem"), "fault")),
                        "truncated");
    json_decref(a);
}

/* ---- concurrent writers ---- */

typedef struct writer {
    const char *serial;
    int id;
    int failures;
} writer_t;

static void *write_entries(void *arg)
{
    writer_t *w = arg;
    PGconn *c = PQconnectdb(url);
    for (int i = 0; i < 50; i++) {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO audit_log (serial, actor, action, detail) VALUES ('%s', "
                 "'writer-%d', 'note', '{\"i\": %d}')",
                 w->serial, w->id, i);
        if (sql_try(c, sql)[0] != '\0') {
            w->failures++;
        }
    }
    PQfinish(c);
    return NULL;
}

static void test_concurrent_writers_never_fork_a_chain(void **state)
{
    (void)state;
    const char *serial =
        truth_serial("resealed") != NULL ? truth_serial("resealed") : truth_serial("delivered");
    json_t *before = audit_of(serial);
    size_t n0 = json_array_size(json_object_get(before, "entries"));
    json_decref(before);

    /* Four database sessions and the server's own batches append to one chain at once. */
    pthread_t t[4];
    writer_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (writer_t){serial, i, 0};
        assert_int_equal(pthread_create(&t[i], NULL, write_entries, &w[i]), 0);
    }
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/actions", serial);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(post_status(path, tech, "{\"action\":\"note\",\"text\":\"busy\"}"), 200);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    json_t *a = audit_of(serial);
    assert_true(json_is_true(json_object_get(a, "verified")));
    assert_int_equal(json_array_size(json_object_get(a, "entries")), n0 + (size_t)4 * 50 + 20);
    json_decref(a);

    /* Four sessions start a chain at once: one writes the head row, the others meet it in the
     * upsert and link after it. */
    for (int i = 0; i < 4; i++) {
        w[i] = (writer_t){"AUDIT-NEW-CHAIN", i, 0};
        assert_int_equal(pthread_create(&t[i], NULL, write_entries, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    /* 200 entries numbered 1 to 200, each linked to the one before (the first to the genesis
     * value) with the hash the encoding gives, and the head at the last. */
    char *v = sql_value(
        "SELECT count(*) || ',' || min(a.seq) || ',' || max(a.seq) FROM audit_log a "
        "LEFT JOIN audit_log p ON p.serial = a.serial AND p.seq = a.seq - 1 "
        "WHERE a.serial = 'AUDIT-NEW-CHAIN' "
        "AND a.prev_hash = coalesce(p.hash, audit_genesis(a.serial)) "
        "AND a.hash = sha256(a.prev_hash || audit_payload(a.serial, a.seq, a.at, a.actor, "
        "a.action, a.detail))");
    assert_string_equal(v, "200,1,200");
    free(v);
    v = sql_value("SELECT h.seq FROM audit_heads h JOIN audit_log a USING (serial, hash) "
                  "WHERE serial = 'AUDIT-NEW-CHAIN' AND a.seq = 200");
    assert_non_null(v);
    assert_string_equal(v, "200");
    free(v);
}

/* ---- escaping ---- */

typedef struct csv_rows {
    char cells[64][8][512];
    int row, col, nrows;
} csv_rows_t;

static void on_cell(void *s, size_t len, void *arg)
{
    csv_rows_t *c = arg;
    if (c->row < 64 && c->col < 8) {
        snprintf(c->cells[c->row][c->col], sizeof(c->cells[0][0]), "%.*s", (int)len,
                 (const char *)s);
    }
    c->col++;
}

static void on_row(int ch, void *arg)
{
    (void)ch;
    csv_rows_t *c = arg;
    c->row++;
    c->nrows = c->row;
    c->col = 0;
}

static void test_csv_and_html_escape_what_users_control(void **state)
{
    (void)state;
    /* A device whose group tag, assigned user and note are hostile. */
    const char csv_body[] = "Device Serial Number,Windows Product ID,Hardware Hash,Group Tag,"
                            "Assigned User\r\nPFX0EVIL1,,T0AAAAAA,<img src=x onerror=alert(1)>,"
                            "o'neil&co@contoso.com\r\n";
    gb_th_resp_t r;
    char headers[256];
    snprintf(headers, sizeof(headers), "Authorization: Bearer %s\r\nContent-Type: text/csv\r\n",
             tech);
    gb_th_request(srv.port, "POST", "/api/v1/devices/import", headers, csv_body,
                  sizeof(csv_body) - 1, &r);
    assert_int_equal(r.status, 200);
    if (strstr(r.body, "\"imported\":1") == NULL) {
        fail_msg("import: %s", r.body);
    }
    gb_th_resp_free(&r);
    const char note[] = "{\"action\":\"note\",\"text\":\"=HYPERLINK(\\\"http://x\\\",\\\"a,b\\\")"
                        "\\n<script>alert(\\\"x\\\")</script> & \\\"quoted\\\"\"}";
    assert_int_equal(post_status("/api/v1/devices/PFX0EVIL1/actions", tech, note), 200);
    const char msgs[] =
        "{\"protocol\":1,\"device\":{\"serial\":\"PFX0EVIL1\"},\"messages\":["
        "{\"seq\":1,\"at\":\"2026-11-24T08:00:00Z\",\"type\":\"stage\",\"stage\":\"user_signin\","
        "\"state\":\"succeeded\",\"upn\":\"o'brien@contoso.com\"}]}";
    assert_int_equal(post_status(AGENT_PATH, agent, msgs), 200);

    /* CSV: every cell comes back whole through a real CSV parser; the actor, which starts with
     * '-', is defused for spreadsheets. */
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices/PFX0EVIL1/audit?format=csv", viewer, NULL,
                       &r);
    assert_int_equal(r.status, 200);
    char *verified = gb_th_resp_header(&r, "Glovebox-Audit-Verified");
    assert_string_equal(verified, "true");
    free(verified);
    struct csv_parser p;
    static csv_rows_t rows;
    memset(&rows, 0, sizeof(rows));
    assert_int_equal(csv_init(&p, CSV_STRICT | CSV_STRICT_FINI), 0);
    assert_int_equal(csv_parse(&p, r.body, r.body_len, on_cell, on_row, &rows), r.body_len);
    assert_int_equal(csv_fini(&p, on_cell, on_row, &rows), 0);
    csv_free(&p);
    gb_th_resp_free(&r);
    assert_string_equal(rows.cells[0][0], "seq");
    json_t *a = audit_of("PFX0EVIL1");
    json_t *entries = json_object_get(a, "entries");
    assert_int_equal(rows.nrows, (int)json_array_size(entries) + 1);
    bool saw_note = false;
    for (int i = 1; i < rows.nrows; i++) {
        json_t *e = json_array_get(entries, (size_t)i - 1);
        if (strcmp(rows.cells[i][3], "note") != 0) {
            continue;
        }
        saw_note = true;
        assert_string_equal(rows.cells[i][2], "'-tech-eve");
        json_t *detail = json_loads(rows.cells[i][4], 0, NULL);
        assert_non_null(detail);
        assert_true(json_equal(detail, json_object_get(e, "detail")));
        assert_non_null(strstr(json_string_value(json_object_get(detail, "text")), "\"a,b\""));
        json_decref(detail);
    }
    assert_true(saw_note);
    json_decref(a);

    /* HTML: no markup gets through; the strings are there, escaped. */
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices/PFX0EVIL1/handover?format=html", viewer,
                       NULL, &r);
    assert_int_equal(r.status, 200);
    char *csp = gb_th_resp_header(&r, "Content-Security-Policy");
    assert_non_null(csp);
    assert_non_null(strstr(csp, "default-src 'none'"));
    free(csp);
    assert_null(strstr(r.body, "<script"));
    assert_null(strstr(r.body, "<img"));
    assert_non_null(strstr(r.body, "&lt;img src=x onerror=alert(1)&gt;"));
    assert_non_null(strstr(r.body, "&lt;script&gt;"));
    assert_non_null(strstr(r.body, "o&#39;neil&amp;co@contoso.com"));
    assert_non_null(strstr(r.body, "o&#39;brien@contoso.com"));
    gb_th_resp_free(&r);
    json_t *h = get_json("/api/v1/devices/PFX0EVIL1/handover", viewer);
    assert_string_equal(json_string_value(json_object_get(h, "group_tag")),
                        "<img src=x onerror=alert(1)>");
    assert_string_equal(json_string_value(json_object_get(h, "signed_in_user")),
                        "o'brien@contoso.com");
    json_decref(h);
}

/* ---- export ---- */

static void test_export_pages_every_entry_as_ndjson(void **state)
{
    (void)state;
    char *total = sql_value("SELECT count(*) FROM audit_log");
    long want = atol(total);
    free(total);
    long got = 0, last = 0;
    char path[128];
    bool more = true;
    int pages = 0;
    while (more) {
        gb_th_resp_t r;
        snprintf(path, sizeof(path), "/api/v1/audit/export?limit=250&after_id=%ld", last);
        gb_th_request_auth(srv.port, "GET", path, viewer, NULL, &r);
        assert_int_equal(r.status, 200);
        char *next = gb_th_resp_header(&r, "Glovebox-Next-After-Id");
        char *save = NULL;
        for (char *line = strtok_r(r.body, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
            json_t *e = json_loads(line, 0, NULL);
            assert_non_null(e);
            long id = (long)json_integer_value(json_object_get(e, "id"));
            assert_true(id > last);
            last = id;
            assert_int_equal(strlen(json_string_value(json_object_get(e, "hash"))), 64);
            got++;
            json_decref(e);
        }
        more = next != NULL;
        if (next != NULL) {
            assert_int_equal(atol(next), last);
        }
        free(next);
        gb_th_resp_free(&r);
        pages++;
    }
    assert_int_equal(got, want);
    assert_true(pages > 1);

    gb_th_resp_t r;
    gb_th_request_auth(srv.port, "GET", "/api/v1/audit/export?since=2999-01-01T00:00:00Z", viewer,
                       NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", "/api/v1/audit/export?since=yesterday", viewer, NULL, &r);
    gb_th_assert_json_error(&r, 400, "invalid_query");
    assert_non_null(strstr(r.body, "\"field\":\"since\""));
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", "/api/v1/audit/export?limit=0", viewer, NULL, &r);
    gb_th_assert_json_error(&r, 400, "invalid_query");
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", "/api/v1/audit/export", agent, NULL, &r);
    gb_th_assert_json_error(&r, 403, "forbidden");
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices/NOSUCH1/audit", viewer, NULL, &r);
    gb_th_assert_json_error(&r, 404, "not_found");
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices/PFX0EVIL1/audit?format=xml", viewer, NULL,
                       &r);
    gb_th_assert_json_error(&r, 400, "invalid_query");
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices/PFX0EVIL1/handover", NULL, NULL, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);
}

/* ---- ids in commit order ---- */

/* The ids of the export's entries after after_id, in the order given, for the serials that
 * start with AUDIT-ORDER- (up to n); returns how many. */
static int export_order_ids(long after_id, long *ids, int n)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/audit/export?after_id=%ld", after_id);
    gb_th_resp_t r;
    gb_th_request_auth(srv.port, "GET", path, viewer, NULL, &r);
    assert_int_equal(r.status, 200);
    int got = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.body, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        json_t *e = json_loads(line, 0, NULL);
        assert_non_null(e);
        if (strncmp(json_string_value(json_object_get(e, "serial")), "AUDIT-ORDER-", 12) == 0) {
            assert_true(got < n);
            ids[got++] = (long)json_integer_value(json_object_get(e, "id"));
        }
        json_decref(e);
    }
    gb_th_resp_free(&r);
    return got;
}

static void test_ids_follow_commit_order(void **state)
{
    (void)state;
    char *v = sql_value("SELECT coalesce(max(id), 0) FROM audit_log");
    long last = atol(v);
    free(v);
    PGconn *a = PQconnectdb(url);
    PGconn *b = PQconnectdb(url);
    assert_int_equal(PQstatus(a), CONNECTION_OK);
    assert_int_equal(PQstatus(b), CONNECTION_OK);

    /* A appends an entry and keeps its transaction open; B appends one for another device. */
    assert_string_equal(sql_try(a, "BEGIN"), "");
    assert_string_equal(sql_try(a, "INSERT INTO audit_log (serial, actor, action) VALUES "
                                   "('AUDIT-ORDER-A', 'slow', 'note')"),
                        "");
    assert_int_equal(PQsendQuery(b, "INSERT INTO audit_log (serial, actor, action) VALUES "
                                    "('AUDIT-ORDER-B', 'quick', 'note') RETURNING id"),
                     1);
    /* B waits for A's transaction (an advisory lock) instead of committing before it. */
    bool waiting = false;
    bool done = false;
    for (int i = 0; i < 1000 && !waiting && !done; i++) {
        v = sql_value("SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND "
                      "wait_event_type = 'Lock' AND wait_event = 'advisory'",
                      PQbackendPID(b));
        waiting = strcmp(v, "1") == 0;
        free(v);
        assert_int_equal(PQconsumeInput(b), 1);
        done = !PQisBusy(b);
        if (!waiting && !done) {
            gb_th_sleep_ms(10);
        }
    }
    printf("second writer %s\n", waiting ? "waits for the first" : "did not wait");
    assert_true(waiting);
    long ids[4] = {0};
    assert_int_equal(export_order_ids(last, ids, 4), 0);

    /* A commits: B goes on and its entry gets the higher id. A reader that pages from the last
     * id it saw therefore misses neither. */
    assert_string_equal(sql_try(a, "COMMIT"), "");
    long b_id = 0;
    PGresult *res;
    while ((res = PQgetResult(b)) != NULL) {
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            b_id = atol(PQgetvalue(res, 0, 0));
        }
        PQclear(res);
    }
    v = sql_value("SELECT id FROM audit_log WHERE serial = 'AUDIT-ORDER-A'");
    long a_id = atol(v);
    free(v);
    printf("ids: first writer %ld, second %ld\n", a_id, b_id);
    assert_true(a_id > last);
    assert_true(b_id > a_id);

    /* An id given by the writer is replaced like the chain's columns. */
    assert_string_equal(sql_try(a, "INSERT INTO audit_log (id, serial, actor, action) VALUES "
                                   "(9000000000000000000, 'AUDIT-ORDER-C', 'forger', 'note')"),
                        "");
    assert_int_equal(export_order_ids(last, ids, 4), 3);
    assert_int_equal(ids[0], a_id);
    assert_int_equal(ids[1], b_id);
    assert_true(ids[2] > b_id && ids[2] < 9000000000000000000L);
    PQfinish(a);
    PQfinish(b);
}

/* ---- the server's own role ---- */

/* url with its user replaced (the fixture's URLs end in user=postgres). */
static void url_as(const char *base, const char *user, char *out, size_t n)
{
    const char *at = strstr(base, "user=postgres");
    assert_non_null(at);
    snprintf(out, n, "%.*suser=%s%s", (int)(at - base), base, user, at + strlen("user=postgres"));
}

static void test_server_role_cannot_change_the_log(void **state)
{
    (void)state;
    char base[512], owner_url[600], app_url[600], owner[40], app[40];
    assert_int_equal(gb_th_db_create(base, sizeof(base)), 0);
    snprintf(owner, sizeof(owner), "gbt_owner_%d", (int)getpid());
    snprintf(app, sizeof(app), "gbt_app_%d", (int)getpid());
    url_as(base, owner, owner_url, sizeof(owner_url));
    url_as(base, app, app_url, sizeof(app_url));

    /* docker/postgres-roles.sql as written, with this test's role names. */
    size_t len;
    char *script = gb_th_read_data("../../docker/postgres-roles.sql", &len);
    assert_non_null(script);
    gb_buf_t sql;
    gb_buf_init(&sql);
    for (const char *s = script; *s != '\0';) {
        if (strncmp(s, "glovebox_owner", 14) == 0) {
            gb_buf_append_str(&sql, owner);
            s += 14;
        } else if (strncmp(s, "glovebox_app", 12) == 0) {
            gb_buf_append_str(&sql, app);
            s += 12;
        } else {
            gb_buf_append(&sql, s, 1);
            s++;
        }
    }
    gb_buf_append(&sql, "", 1);
    free(script);
    char *after = strstr(sql.data, "-- ---- after every");
    assert_non_null(after);
    char *once = strndup(sql.data, (size_t)(after - sql.data));
    PGconn *su = PQconnectdb(base);
    assert_int_equal(PQstatus(su), CONNECTION_OK);
    assert_string_equal(sql_try(su, once), "");
    free(once);
    /* The runtime role cannot migrate, and is told who can. */
    char *says = gb_th_sh_line("'%s' migrate --database-url '%s' 2>&1 | grep -c \"schema's owner "
                               "role\"",
                               GB_GLOVEBOXD, app_url);
    assert_string_equal(says, "1");
    free(says);
    assert_int_equal(
        gb_th_sh("'%s' migrate --database-url '%s' --log-level error", GB_GLOVEBOXD, owner_url), 0);
    assert_string_equal(sql_try(su, after), "");
    gb_buf_dispose(&sql);

    char *token = gb_th_token_create(owner_url, "agent", "role-agent");
    assert_non_null(token);
    gb_th_server_t s2;
    const char *extra[] = {"--log-level", "info", NULL};
    assert_int_equal(gb_th_server_start(&s2, app_url, extra), 0);
    const char msgs[] =
        "{\"protocol\":1,\"device\":{\"serial\":\"PFROLE1\"},\"messages\":["
        "{\"seq\":1,\"at\":\"2026-11-24T08:00:00Z\",\"type\":\"stage\",\"stage\":\"oobe\","
        "\"state\":\"started\"}]}";
    gb_th_resp_t r;
    gb_th_request_auth(s2.port, "POST", AGENT_PATH, token, msgs, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);

    PGconn *c = PQconnectdb(app_url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    char *n = NULL;
    PGresult *res = PQexec(c, "SELECT count(*) FROM audit_log WHERE serial = 'PFROLE1'");
    n = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    assert_string_equal(n, "1");
    free(n);
    static const char forged[] =
        "INSERT INTO audit_log (serial, actor, action, detail, seq, prev_hash, hash) VALUES "
        "('PFROLE1', 'x', 'note', '{}', 1, '\\x00', '\\x00')";
    static const char *const refused[] = {
        "UPDATE audit_log SET actor = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update",
        "DROP TRIGGER audit_log_no_update ON audit_log",
        "SET session_replication_role = replica",
        "UPDATE audit_heads SET seq = 1",
        forged,
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        const char *st = sql_try(c, refused[i]);
        printf("as the server's role: %s -> %s\n", refused[i], st[0] != '\0' ? st : "ACCEPTED");
        if (i < 7) {
            assert_true(st[0] != '\0');
        }
    }
    /* The last one is accepted as an append, but the trigger numbers and links it: the
     * forged seq and hashes are replaced, so the chain still verifies. */
    PQfinish(c);
    res = PQexec(su, "SELECT count(*) FROM audit_log WHERE serial = 'PFROLE1' AND seq = 2 AND "
                     "octet_length(hash) = 32");
    assert_string_equal(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    gb_th_request_auth(s2.port, "GET", "/api/v1/devices/PFROLE1/audit", token, NULL, &r);
    assert_int_equal(r.status, 403); /* an agent token reads nothing */
    gb_th_resp_free(&r);
    assert_int_equal(gb_th_server_stop(&s2, SIGTERM, 10000), 0);
    free(token);
    char cleanup[256];
    PQfinish(su);
    snprintf(cleanup, sizeof(cleanup), "DROP OWNED BY %s, %s CASCADE; DROP ROLE %s; DROP ROLE %s",
             owner, app, owner, app);
    PGconn *adm = PQconnectdb(base);
    assert_string_equal(sql_try(adm, cleanup), "");
    PQfinish(adm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simulated_fleet_chains_verify_and_record_every_step),
        cmocka_unit_test(test_concurrent_writers_never_fork_a_chain),
        cmocka_unit_test(test_csv_and_html_escape_what_users_control),
        cmocka_unit_test(test_export_pages_every_entry_as_ndjson),
        cmocka_unit_test(test_ids_follow_commit_order),
        cmocka_unit_test(test_superuser_tampering_is_detected),
        cmocka_unit_test(test_server_role_cannot_change_the_log),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
