/* glovebox-sim drives a real gloveboxd; the simulator's ground truth must equal what the server
 * stored: status, diagnosis and attempts per device, counts by status and diagnosis, and each
 * stage's duration to the second. The same holds when devices report Windows events only, and
 * when PostgreSQL crashes or gloveboxd is SIGKILLed mid-run: every message is stored once. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "harness.h"

static PGconn *db(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fail_msg("connect: %s", PQerrorMessage(c));
    }
    return c;
}

static long long scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    }
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

/* Runs the simulator to completion; returns its exit status. */
static int run_sim(int port, const char *token, const char *args, const char *summary)
{
    return gb_th_sh("'%s' --server http://127.0.0.1:%d --token '%s' --summary '%s' --quiet "
                    "--give-up 120 %s",
                    GB_SIM, port, token, summary, args);
}

/* Starts the simulator in the background; returns its pid. */
static pid_t start_sim(int port, const char *token, const char *args, const char *summary)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "exec '%s' --server http://127.0.0.1:%d --token '%s' --summary '%s' --quiet "
             "--give-up 120 %s",
             GB_SIM, port, token, summary, args);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_sim(pid_t pid)
{
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Compares every device of the truth with the server's rows. */
static void check_against_truth(const char *url, const char *summary_path, const char *prefix)
{
    json_t *truth = gb_th_load_json(summary_path);
    PGconn *c = db(url);
    json_t *per = json_object_get(truth, "per_device");
    size_t i;
    json_t *d;
    size_t checked_runs = 0;

    assert_true(json_array_size(per) > 0);
    json_array_foreach(per, i, d)
    {
        const char *serial = json_string_value(json_object_get(d, "serial"));
        const char *want_status = json_string_value(json_object_get(d, "status"));
        const char *want_diag = json_string_value(json_object_get(d, "diagnosis"));
        long long want_attempts = json_integer_value(json_object_get(d, "attempts"));
        const char *params[1] = {serial};
        PGresult *r = PQexecParams(c,
                                   "SELECT status, coalesce(diagnosis, ''), attempt FROM devices "
                                   "WHERE serial = $1",
                                   1, NULL, params, NULL, NULL, 0);
        if (PQntuples(r) != 1) {
            fail_msg("device %s missing on the server", serial);
        }
        if (strcmp(PQgetvalue(r, 0, 0), want_status) != 0 ||
            strcmp(PQgetvalue(r, 0, 1), want_diag != NULL ? want_diag : "") != 0 ||
            atoll(PQgetvalue(r, 0, 2)) != want_attempts) {
            fail_msg("device %s: server says %s/%s/attempt %s, truth says %s/%s/attempt %lld",
                     serial, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
                     want_status, want_diag != NULL ? want_diag : "", want_attempts);
        }
        PQclear(r);
        /* Each stage of the last attempt lasted what the truth says, to the second. */
        json_t *stages = json_object_get(d, "stages");
        const char *stage;
        json_t *st;
        json_object_foreach(stages, stage, st)
        {
            json_t *dur = json_object_get(st, "duration_s");
            if (!json_is_number(dur)) {
                continue;
            }
            const char *p2[3] = {serial, stage, NULL};
            char att[16];
            snprintf(att, sizeof(att), "%lld", want_attempts);
            p2[2] = att;
            r = PQexecParams(c,
                             "SELECT extract(epoch FROM ended_at - started_at) FROM stage_runs "
                             "WHERE serial = $1 AND stage = $2 AND attempt = $3::int "
                             "ORDER BY idx DESC LIMIT 1",
                             3, NULL, p2, NULL, NULL, 0);
            if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
                fail_msg("device %s: no finished %s run in attempt %s on the server", serial, stage,
                         att);
            }
            double got = atof(PQgetvalue(r, 0, 0));
            double want = json_number_value(dur);
            if (fabs(got - want) >= 1.0) {
                fail_msg("device %s stage %s: server %.3f s, truth %.3f s", serial, stage, got,
                         want);
            }
            checked_runs++;
            PQclear(r);
        }
    }
    assert_true(checked_runs > json_array_size(per) * 5);
    /* Counts by status agree too (no device the truth does not know of). */
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM devices WHERE serial LIKE '%s%%'", prefix);
    assert_int_equal(scalar(c, sql), (long long)json_array_size(per));
    /* Every message the simulator sent is stored exactly once. */
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE serial LIKE '%s%%'", prefix);
    assert_int_equal(scalar(c, sql), json_integer_value(json_object_get(truth, "messages")));
    PQfinish(c);
    json_decref(truth);
}

typedef struct fixture {
    char url[512];
    char summary[256];
    char *token;
    gb_th_server_t server;
} fixture_t;

static void fixture_start(fixture_t *f, const char *cluster_dir)
{
    memset(f, 0, sizeof(*f));
    if (cluster_dir != NULL) {
        assert_int_equal(gb_th_db_create_in(cluster_dir, f->url, sizeof(f->url)), 0);
    } else {
        assert_int_equal(gb_th_db_create(f->url, sizeof(f->url)), 0);
    }
    f->token = gb_th_token_create(f->url, "agent", "fleet-sim");
    assert_non_null(f->token);
    snprintf(f->summary, sizeof(f->summary), "/tmp/gb-fleet-%d-%lld.json", (int)getpid(),
             (long long)gb_time_mono_ms());
    const char *extra[] = {"--log-level", "info", "--db-connect-timeout", "1s", NULL};
    assert_int_equal(gb_th_server_start(&f->server, f->url, extra), 0);
}

static void fixture_stop(fixture_t *f)
{
    assert_int_equal(gb_th_server_stop(&f->server, SIGTERM, 20000), 0);
    unlink(f->summary);
    free(f->token);
}

static void test_stage_messages_match_the_ground_truth(void **state)
{
    fixture_t f;
    fixture_start(&f, NULL);
    assert_int_equal(
        run_sim(f.server.port, f.token, "--devices 200 --seed 11 --serial-prefix S", f.summary), 0);
    check_against_truth(f.url, f.summary, "S");
    fixture_stop(&f);
}

static void test_windows_events_alone_match_the_ground_truth(void **state)
{
    fixture_t f;
    fixture_start(&f, NULL);
    assert_int_equal(run_sim(f.server.port, f.token,
                             "--devices 200 --seed 12 --winevents --serial-prefix W", f.summary),
                     0);
    check_against_truth(f.url, f.summary, "W");
    fixture_stop(&f);
}

static void test_postgres_crash_loses_nothing(void **state)
{
    char dir[128];
    fixture_t f;
    snprintf(dir, sizeof(dir), "/tmp/gb-fleet-pg-%d", (int)getpid());
    assert_int_equal(gb_th_sh("'%s' start '%s' >/dev/null", GB_PG_CLUSTER, dir), 0);
    fixture_start(&f, dir);
    pid_t sim =
        start_sim(f.server.port, f.token, "--devices 1000 --seed 13 --serial-prefix P", f.summary);
    gb_th_sleep_ms(1500);
    assert_int_equal(gb_th_sh("'%s' kill '%s' >/dev/null", GB_PG_CLUSTER, dir), 0);
    gb_th_sleep_ms(1000);
    assert_int_equal(gb_th_sh("'%s' start '%s' >/dev/null", GB_PG_CLUSTER, dir), 0);
    assert_int_equal(wait_sim(sim), 0);
    check_against_truth(f.url, f.summary, "P");
    fixture_stop(&f);
    gb_th_sh("'%s' stop '%s' >/dev/null; rm -rf '%s'", GB_PG_CLUSTER, dir, dir);
}

static void test_sigkill_and_restart_loses_nothing(void **state)
{
    fixture_t f;
    char listen[64];
    fixture_start(&f, NULL);
    pid_t sim =
        start_sim(f.server.port, f.token, "--devices 1000 --seed 14 --serial-prefix K", f.summary);
    gb_th_sleep_ms(1500);
    assert_int_equal(gb_th_server_stop(&f.server, SIGKILL, 5000), 128 + SIGKILL);
    gb_th_sleep_ms(300);
    /* The same port, so the simulator's retries find the new process. */
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", f.server.port);
    int port = f.server.port;
    const char *extra[] = {"--listen", listen, "--log-level", "info", NULL};
    assert_int_equal(gb_th_server_start(&f.server, f.url, extra), 0);
    assert_int_equal(f.server.port, port);
    assert_int_equal(wait_sim(sim), 0);
    check_against_truth(f.url, f.summary, "K");
    fixture_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage_messages_match_the_ground_truth),
        cmocka_unit_test(test_windows_events_alone_match_the_ground_truth),
        cmocka_unit_test(test_postgres_crash_loses_nothing),
        cmocka_unit_test(test_sigkill_and_restart_loses_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
