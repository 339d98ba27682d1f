/* The gloveboxd command line against a real database: --help, argument errors, migrate run
 * twice, token create (printed once, stored hashed) and revoke (the running server stops
 * accepting the token), and SIGTERM ending the server cleanly. */
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

#include "harness.h"

static char db_url[512];

static int setup(void **state)
{
    return gb_th_db_create(db_url, sizeof(db_url));
}

static void test_help_lists_commands_and_settings(void **state)
{
    char out[256];
    snprintf(out, sizeof(out), "/tmp/gb-help-%d.txt", (int)getpid());
    assert_int_equal(gb_th_sh("'%s' --help > '%s'", GB_GLOVEBOXD, out), 0);
    char *text = gb_th_sh_line("grep -c -e 'token create' -e GLOVEBOX_DATABASE_URL -e "
                               "GLOVEBOX_LISTEN -e '--max-body' '%s'",
                               out);
    assert_non_null(text);
    assert_true(atoi(text) >= 4);
    free(text);
    unlink(out);
}

static void test_bad_arguments_exit_2_with_a_message(void **state)
{
    assert_int_equal(gb_th_sh("'%s' frobnicate 2>/dev/null", GB_GLOVEBOXD), 2);
    assert_int_equal(gb_th_sh("'%s' --max-body lots 2>/dev/null", GB_GLOVEBOXD), 2);
    assert_int_equal(gb_th_sh("'%s' --no-such-flag 2>/dev/null", GB_GLOVEBOXD), 2);
    assert_int_equal(gb_th_sh("'%s' token create --role root --name x 2>/dev/null", GB_GLOVEBOXD),
                     2);
    assert_int_equal(gb_th_sh("'%s' token create --role admin 2>/dev/null", GB_GLOVEBOXD), 2);
    char *msg = gb_th_sh_line("'%s' --max-body lots 2>&1 >/dev/null | head -n 1", GB_GLOVEBOXD);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "--max-body: 'lots' is not a size"));
    free(msg);
}

static void test_migrate_twice_changes_nothing(void **state)
{
    assert_int_equal(
        gb_th_sh("'%s' migrate --database-url '%s' --log-level error", GB_GLOVEBOXD, db_url), 0);
    char *first = gb_th_sh_line("psql -X -At '%s' -c \"SELECT count(*) || ':' || "
                                "max(applied_at)::text FROM schema_migrations\"",
                                db_url);
    assert_non_null(first);
    char *log = gb_th_sh_line("'%s' migrate --database-url '%s' 2>&1 | grep -o '[0-9]* applied'",
                              GB_GLOVEBOXD, db_url);
    assert_non_null(log);
    assert_string_equal(log, "0 applied");
    char *second = gb_th_sh_line("psql -X -At '%s' -c \"SELECT count(*) || ':' || "
                                 "max(applied_at)::text FROM schema_migrations\"",
                                 db_url);
    assert_non_null(second);
    assert_string_equal(first, second);
    free(first);
    free(second);
    free(log);
}

static void test_token_is_printed_once_and_stored_hashed(void **state)
{
    char out[256];
    snprintf(out, sizeof(out), "/tmp/gb-token-%d.txt", (int)getpid());
    assert_int_equal(gb_th_sh("'%s' token create --role technician --name tech-1 "
                              "--database-url '%s' --log-level error > '%s'",
                              GB_GLOVEBOXD, db_url, out),
                     0);
    /* Exactly one line, and it is the token. */
    char *lines = gb_th_sh_line("wc -l < '%s'", out);
    assert_string_equal(lines, "1");
    free(lines);
    char *token = gb_th_sh_line("cat '%s'", out);
    assert_non_null(token);
    assert_int_equal(strlen(token), 47);
    /* The database holds its SHA-256, never the token. */
    char *match = gb_th_sh_line("psql -X -At '%s' -c \"SELECT count(*) FROM api_tokens WHERE "
                                "name = 'tech-1' AND token_sha256 = sha256('%s'::bytea)\"",
                                db_url, token);
    assert_string_equal(match, "1");
    free(match);
    char *plain = gb_th_sh_line("psql -X -At '%s' -c \"SELECT count(*) FROM api_tokens t WHERE "
                                "position('%s' in t::text) > 0\"",
                                db_url, token + 4);
    assert_string_equal(plain, "0");
    free(plain);
    /* A second live token of the same name is refused. */
    assert_int_equal(gb_th_sh("'%s' token create --role viewer --name tech-1 --database-url '%s' "
                              "--log-level error >/dev/null 2>&1",
                              GB_GLOVEBOXD, db_url),
                     1);
    free(token);
    unlink(out);
}

static void test_revoked_token_stops_working_on_a_running_server(void **state)
{
    gb_th_server_t s;
    gb_th_resp_t r;
    char *token = gb_th_token_create(db_url, "viewer", "to-revoke");
    assert_non_null(token);
    const char *extra[] = {"--token-reload", "200ms", NULL};
    assert_int_equal(gb_th_server_start(&s, db_url, extra), 0);
    gb_th_request_auth(s.port, "GET", "/api/v1/whoami", token, NULL, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);

    /* A token created while the server runs works without a restart (at the latest after the
     * next reload; a miss also triggers one when the last is over a second old). */
    char *late = gb_th_token_create(db_url, "viewer", "created-late");
    assert_non_null(late);
    int late_status = 0;
    for (int i = 0; i < 30 && late_status != 200; i++) {
        gb_th_request_auth(s.port, "GET", "/api/v1/whoami", late, NULL, &r);
        late_status = r.status;
        gb_th_resp_free(&r);
        if (late_status != 200) {
            gb_th_sleep_ms(100);
        }
    }
    assert_int_equal(late_status, 200);

    assert_int_equal(gb_th_sh("'%s' token revoke to-revoke --database-url '%s' --log-level error",
                              GB_GLOVEBOXD, db_url),
                     0);
    int status = 0;
    for (int i = 0; i < 50 && status != 401; i++) {
        gb_th_sleep_ms(100);
        gb_th_request_auth(s.port, "GET", "/api/v1/whoami", token, NULL, &r);
        status = r.status;
        gb_th_resp_free(&r);
    }
    assert_int_equal(status, 401);
    /* Revoking an unknown name fails. */
    assert_int_equal(
        gb_th_sh("'%s' token revoke nobody --database-url '%s' 2>/dev/null", GB_GLOVEBOXD, db_url),
        1);
    assert_int_equal(gb_th_server_stop(&s, SIGTERM, 10000), 0);
    free(token);
    free(late);
}

static void test_sigterm_closes_connections_and_exits_0(void **state)
{
    gb_th_server_t s;
    gb_th_conn_t idle, busy;
    gb_th_resp_t r;
    assert_int_equal(gb_th_server_start(&s, db_url, NULL), 0);
    assert_int_equal(gb_th_conn_open(&idle, s.port), 0);
    assert_int_equal(gb_th_conn_open(&busy, s.port), 0);
    const char req[] = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    /* One answered request first: the server has accepted this connection (a connection still
     * in the listen backlog when the signal comes is refused, as it should be). */
    assert_int_equal(gb_th_conn_send(&busy, req, sizeof(req) - 1), 0);
    gb_th_conn_read(&busy, &r, 5000);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    /* The second request is in the socket's buffer, perhaps not yet read, when the signal
     * arrives: it is still answered. */
    assert_int_equal(gb_th_conn_send(&busy, req, sizeof(req) - 1), 0);
    assert_int_equal(gb_th_server_stop(&s, SIGTERM, 10000), 0);
    /* The request sent before the signal was answered; both connections are closed. */
    gb_th_conn_read(&busy, &r, 2000);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    assert_true(gb_th_conn_wait_closed(&idle, 2000));
    char *log = gb_th_server_log(&s);
    assert_non_null(strstr(log, "shutting down"));
    assert_non_null(strstr(log, "database closed"));
    free(log);
    gb_th_conn_close(&idle);
    gb_th_conn_close(&busy);
}

static void test_unreachable_database_fails_start_clearly(void **state)
{
    char out[256];
    snprintf(out, sizeof(out), "/tmp/gb-nodb-%d.txt", (int)getpid());
    int rc = gb_th_sh("'%s' serve --listen 127.0.0.1:0 --db-connect-timeout 1s --database-url "
                      "'postgresql://u:hunter2@127.0.0.1:1/none' 2> '%s'",
                      GB_GLOVEBOXD, out);
    assert_int_equal(rc, 1);
    char *says = gb_th_sh_line("grep -c 'cannot reach PostgreSQL' '%s'", out);
    assert_string_equal(says, "1");
    free(says);
    /* The password never reaches the log. */
    char *leak = gb_th_sh_line("grep -c hunter2 '%s' || true", out);
    assert_string_equal(leak, "0");
    free(leak);
    unlink(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_lists_commands_and_settings),
        cmocka_unit_test(test_bad_arguments_exit_2_with_a_message),
        cmocka_unit_test(test_migrate_twice_changes_nothing),
        cmocka_unit_test(test_token_is_printed_once_and_stored_hashed),
        cmocka_unit_test(test_revoked_token_stops_working_on_a_running_server),
        cmocka_unit_test(test_sigterm_closes_connections_and_exits_0),
        cmocka_unit_test(test_unreachable_database_fails_start_clearly),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
