/* test_migrations: the migrations runner on the fixture cluster, one fresh database per test:
 * the embedded list matches migrations/ byte for byte and in order, a second run applies
 * nothing, concurrent runners apply each version once, a failing migration is rolled back
 * and named, a database migrated by a newer build is refused, and api_tokens' constraints. */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "db/db.h"
#include "db/internal.h"
#include "db_support.h"

static int setup(void **state)
{
    gb_tdb_t *db = calloc(1, sizeof(*db));
    if (db == NULL) {
        return -1;
    }
    gb_tdb_create(db, NULL);
    *state = db;
    return 0;
}

static int teardown(void **state)
{
    gb_tdb_t *db = *state;
    gb_tdb_drop(db, NULL);
    free(db);
    return 0;
}

static PGconn *connect_db(const gb_tdb_t *db)
{
    char err[256];
    PGconn *conn = gb_pg_connect_blocking(db->url, 5000, err, sizeof(err));
    if (conn == NULL) {
        fail_msg("connect: %s", err);
    }
    return conn;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    gb_buf_t b;
    char chunk[4096];
    size_t n;

    assert_non_null(f);
    gb_buf_init(&b);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        gb_buf_append(&b, chunk, n);
    }
    fclose(f);
    return gb_buf_steal(&b, len);
}

static void test_embedded_migrations_match_files_in_order(void **state)
{
    GB_UNUSED(state);
    char *names[256];
    size_t n = 0;
    DIR *dir = opendir(GB_SOURCE_DIR "/migrations");
    struct dirent *e;

    assert_non_null(dir);
    while ((e = readdir(dir)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".sql") == 0) {
            assert_true(n < GB_ARRAY_LEN(names));
            names[n++] = gb_xstrdup(e->d_name);
        }
    }
    closedir(dir);
    qsort(names, n, sizeof(names[0]), cmp_names);

    assert_true(gb_migrations_count >= 1);
    assert_int_equal(gb_migrations_count, n);
    assert_int_equal(gb_migrations[0].version, 1);
    assert_string_equal(gb_migrations[0].name, "api_tokens");
    for (size_t i = 0; i < n; i++) {
        const gb_migration_t *m = &gb_migrations[i];
        char expect[128];
        if (i > 0) {
            assert_true(m->version > gb_migrations[i - 1].version);
        }
        snprintf(expect, sizeof(expect), "%04d_%s.sql", m->version, m->name);
        assert_string_equal(names[i], expect);
        char *path = gb_xasprintf("%s/migrations/%s", GB_SOURCE_DIR, names[i]);
        size_t len = 0;
        char *text = read_file(path, &len);
        assert_int_equal(strlen(m->sql), len);
        assert_memory_equal(m->sql, text, len);
        free(text);
        free(path);
        free(names[i]);
    }
}

static int count_rows(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    int n = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        n = atoi(PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return n;
}

/* Advisory locks this session holds. Other suites share the cluster and take
 * their own, so the count is limited to this backend. */
static int own_advisory_locks(PGconn *conn)
{
    return count_rows(conn, "SELECT count(*) FROM pg_locks"
                            " WHERE locktype = 'advisory' AND pid = pg_backend_pid()");
}

static void test_second_run_applies_nothing(void **state)
{
    gb_tdb_t *db = *state;
    char err[512];
    int applied = -1;

    PGconn *conn = connect_db(db);
    assert_int_equal(gb_pg_migrate(conn, &applied, err, sizeof(err)), 0);
    assert_int_equal(applied, (int)gb_migrations_count);
    assert_int_equal(gb_pg_migrate(conn, &applied, err, sizeof(err)), 0);
    assert_int_equal(applied, 0);
    assert_int_equal(count_rows(conn, "SELECT count(*) FROM schema_migrations"),
                     (int)gb_migrations_count);
    assert_int_equal(count_rows(conn, "SELECT count(*) FROM api_tokens"), 0);
    /* The advisory lock is released at the end (and the count does see a held one). */
    assert_int_equal(own_advisory_locks(conn), 0);
    assert_int_equal(count_rows(conn, "SELECT count(*) FROM (SELECT pg_advisory_lock(7)) l"), 1);
    assert_int_equal(own_advisory_locks(conn), 1);
    assert_int_equal(count_rows(conn, "SELECT count(*) FROM (SELECT pg_advisory_unlock(7)) l"), 1);
    PQfinish(conn);
}

/* Three versions, the second slow, so concurrent runners overlap for real. */
static const gb_migration_t slow_list[] = {
    {1, "first", "CREATE TABLE first (id int)"},
    {2, "slow", "SELECT pg_sleep(0.3); CREATE TABLE slow (id int)"},
    {3, "third", "CREATE TABLE third (id int); INSERT INTO third VALUES (3)"},
};

typedef struct runner {
    const gb_tdb_t *db;
    int rc;
    int applied;
    char err[512];
} runner_t;

static void *run_migrations(void *arg)
{
    runner_t *r = arg;
    PGconn *conn = gb_pg_connect_blocking(r->db->url, 5000, r->err, sizeof(r->err));
    if (conn == NULL) {
        r->rc = GB_EDBDOWN;
        return NULL;
    }
    r->rc = gb_pg__migrate_list(conn, slow_list, GB_ARRAY_LEN(slow_list), &r->applied, r->err,
                                sizeof(r->err));
    PQfinish(conn);
    return NULL;
}

static void test_concurrent_runs_apply_each_version_once(void **state)
{
    gb_tdb_t *db = *state;
    runner_t runners[4];
    pthread_t threads[4];

    for (int i = 0; i < 4; i++) {
        runners[i] = (runner_t){.db = db, .rc = -1};
        assert_int_equal(pthread_create(&threads[i], NULL, run_migrations, &runners[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        if (runners[i].rc != 0) {
            fail_msg("runner %d: %s", i, runners[i].err);
        }
        total += runners[i].applied;
    }
    assert_int_equal(total, 3);
    PGconn *conn = connect_db(db);
    assert_int_equal(count_rows(conn, "SELECT count(DISTINCT version) FROM schema_migrations"), 3);
    assert_int_equal(count_rows(conn, "SELECT count(*) FROM third"), 1);
    PQfinish(conn);
}

static void test_failing_migration_is_rolled_back_and_reported(void **state)
{
    gb_tdb_t *db = *state;
    char err[512];
    int applied = -1;
    static const gb_migration_t list[] = {
        {1, "good", "CREATE TABLE good (id int)"},
        {2, "broken",
         "CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\n"
         "SELECT nope FROM missing_table;\n"},
        {3, "after", "CREATE TABLE after (id int)"},
    };

    PGconn *conn = connect_db(db);
    int rc = gb_pg__migrate_list(conn, list, GB_ARRAY_LEN(list), &applied, err, sizeof(err));
    print_message("reported: %s\n", err);
    assert_int_equal(rc, GB_EDB);
    assert_int_equal(applied, 1);
    assert_non_null(strstr(err, "0002_broken"));
    assert_non_null(strstr(err, "missing_table"));
    assert_non_null(strstr(err, "line 3"));
    assert_non_null(strstr(err, "42P01"));
    /* Version 2 left nothing; version 3 never ran; the session is usable and unlocked. */
    assert_int_equal(count_rows(conn, "SELECT count(*) FROM pg_class WHERE relname = 'half'"), 0);
    assert_int_equal(count_rows(conn, "SELECT count(*) FROM pg_class WHERE relname = 'after'"), 0);
    assert_int_equal(count_rows(conn, "SELECT max(version) FROM schema_migrations"), 1);
    assert_int_equal(own_advisory_locks(conn), 0);

    /* Transaction control inside a file is refused: it would break atomicity. */
    static const gb_migration_t sneaky[] = {
        {1, "good", "CREATE TABLE good (id int)"},
        {2, "sneaky", "COMMIT; CREATE TABLE sneaky (id int)"},
    };
    rc = gb_pg__migrate_list(conn, sneaky, GB_ARRAY_LEN(sneaky), &applied, err, sizeof(err));
    assert_int_equal(rc, GB_EDB);
    assert_int_equal(applied, 0);
    assert_non_null(strstr(err, "ended its own transaction"));
    assert_int_equal(count_rows(conn, "SELECT max(version) FROM schema_migrations"), 1);
    PQfinish(conn);
}

static void test_newer_database_is_refused(void **state)
{
    gb_tdb_t *db = *state;
    char err[512];
    int applied = -1;
    static const gb_migration_t newer[] = {
        {1, "one", "CREATE TABLE one (id int)"},
        {2, "two", "CREATE TABLE two (id int)"},
    };

    PGconn *conn = connect_db(db);
    assert_int_equal(gb_pg__migrate_list(conn, newer, 2, &applied, err, sizeof(err)), 0);
    assert_int_equal(applied, 2);
    /* An older build, knowing only version 1, must not run against it. */
    int rc = gb_pg__migrate_list(conn, newer, 1, &applied, err, sizeof(err));
    print_message("reported: %s\n", err);
    assert_int_equal(rc, GB_EINVAL);
    assert_int_equal(applied, 0);
    assert_non_null(strstr(err, "version 2"));
    assert_non_null(strstr(err, "newer"));
    PQfinish(conn);
}

static const char *insert_token(PGconn *conn, const char *name, const char *role,
                                const char *sha_hex)
{
    static char state[6];
    const char *values[3] = {name, role, sha_hex};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO api_tokens (name, role, token_sha256) "
                                 "VALUES ($1, $2, decode($3, 'hex'))",
                                 3, NULL, values, NULL, NULL, 0);
    const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(state, sizeof(state), "%s", PQresultStatus(res) == PGRES_COMMAND_OK ? "ok" : s);
    PQclear(res);
    return state;
}

static void test_api_tokens_constraints(void **state)
{
    gb_tdb_t *db = *state;
    char err[512];
    int applied;
    char sha_a[65], sha_b[65], sha_short[63];

    memset(sha_a, 'a', 64);
    sha_a[64] = '\0';
    memset(sha_b, 'b', 64);
    sha_b[64] = '\0';
    memset(sha_short, 'c', 62);
    sha_short[62] = '\0';
    PGconn *conn = connect_db(db);
    assert_int_equal(gb_pg_migrate(conn, &applied, err, sizeof(err)), 0);
    assert_string_equal(insert_token(conn, "room-1 agent", "agent", sha_a), "ok");
    assert_string_equal(insert_token(conn, "room-1 agent", "viewer", sha_b), "23505");
    assert_string_equal(insert_token(conn, "other", "viewer", sha_a), "23505");
    assert_string_equal(insert_token(conn, "other", "root", sha_b), "23514");
    assert_string_equal(insert_token(conn, "other", "admin", sha_short), "23514");
    assert_string_equal(insert_token(conn, "", "admin", sha_b), "23514");
    assert_string_equal(insert_token(conn, "tab\there", "admin", sha_b), "23514");
    assert_string_equal(insert_token(conn, "tech", "technician", sha_b), "ok");
    assert_int_equal(count_rows(conn, "SELECT count(*) FROM api_tokens "
                                      "WHERE revoked_at IS NULL AND created_at <= now()"),
                     2);
    PGresult *res = PQexec(conn, "UPDATE api_tokens SET revoked_at = created_at - interval '1 s'");
    assert_string_equal(PQresultErrorField(res, PG_DIAG_SQLSTATE), "23514");
    PQclear(res);
    PQfinish(conn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_migrations_match_files_in_order),
        cmocka_unit_test_setup_teardown(test_second_run_applies_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_runs_apply_each_version_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failing_migration_is_rolled_back_and_reported, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_newer_database_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api_tokens_constraints, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
