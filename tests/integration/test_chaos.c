/* Chaos under load: glovebox-sim drives a few thousand devices as fast as gloveboxd acknowledges
 * while PostgreSQL crashes twice (immediate shutdown, then start) and gloveboxd is SIGKILLed once
 * and started again on the same port, each fault when the stored messages reach a share of the
 * run. With gloveboxd under valgrind (GB_TEST_VALGRIND) the fleet is a tenth of that, with the
 * same faults at the same shares and the same checks. Afterwards every message the simulator had
 * acknowledged is stored exactly once (per device: seqs 1..n, n as the ground truth says), and
 * every device's JSON as the running server shows it equals what the server derives after a restart
 * (snapshots plus the messages after them) and after a rebuild of every device from its stored
 * messages alone. Runs on a private cluster, so the crashes disturb no other test. */
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

#define DEVICES          2000
#define DEVICES_VALGRIND 200 /* under memcheck, whose gloveboxd is many times slower */
#define SIM_ARGS         "--seed 31 --mix 0.3 --serial-prefix X"
#define PHASE_MS         90000 /* the longest wait for the simulator's progress or its end */
#define OUTAGE_MS        1000  /* how long PostgreSQL stays down at each crash */

typedef struct chaos {
    char pgdir[200];
    char url[512];
    char truth_path[300];
    char listen[64];
    char *agent;
    char *viewer;
    gb_th_server_t server;
    int port;
    pid_t sim;
    int devices;        /* DEVICES, or DEVICES_VALGRIND under valgrind */
    int list_limit;     /* half the fleet: the list comes in two pages */
    long long expected; /* messages of the whole run, from a dry run of the same settings */
} chaos_t;

static PGconn *db(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fail_msg("connect: %s", PQerrorMessage(c));
    }
    return c;
}

static void exec_ok(const char *url, const char *sql)
{
    PGconn *c = db(url);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    }
    PQclear(r);
    PQfinish(c);
}

/* The stored messages so far; -1 while the database does not answer. */
static long long stored_messages(const char *url)
{
    PGconn *c = PQconnectdb(url);
    long long n = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, "SELECT count(*) FROM events");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            n = atoll(PQgetvalue(r, 0, 0));
        }
        PQclear(r);
    }
    PQfinish(c);
    return n;
}

static void server_start(chaos_t *c)
{
    /* The same port every time, so the simulator's retries find the new process. */
    const char *extra[] = {"--listen", c->listen, "--log-level", "info", "--db-connect-timeout",
                           "1s",       NULL};
    assert_int_equal(gb_th_server_start(&c->server, c->url, extra), 0);
    assert_int_equal(c->server.port, c->port);
}

static void pg_cluster(const chaos_t *c, const char *cmd)
{
    assert_int_equal(gb_th_sh("'%s' %s '%s' >/dev/null", GB_PG_CLUSTER, cmd, c->pgdir), 0);
}

/* Waits until the database holds at least share of the run's messages (the simulator is then
 * well into the run) and returns the count; fails when the simulator ends first or stalls. */
static long long wait_progress(chaos_t *c, double share)
{
    long long want = (long long)((double)c->expected * share);
    int64_t deadline = gb_time_mono_ms() + PHASE_MS;
    while (gb_time_mono_ms() < deadline) {
        long long n = stored_messages(c->url);
        if (n >= want) {
            return n;
        }
        int status;
        if (waitpid(c->sim, &status, WNOHANG) == c->sim) {
            c->sim = 0;
            fail_msg("the simulator ended (status %d) with %lld of %lld messages stored", status, n,
                     c->expected);
        }
        gb_th_sleep_ms(20);
    }
    fail_msg("fewer than %lld messages stored after %d ms", want, PHASE_MS);
    return -1;
}

static void crash_postgres(chaos_t *c)
{
    pg_cluster(c, "kill");
    gb_th_sleep_ms(OUTAGE_MS);
    pg_cluster(c, "start");
}

static void sim_start(chaos_t *c)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "exec '%s' --server http://127.0.0.1:%d --token '%s' --summary '%s' --quiet "
             "--give-up 60 --devices %d %s",
             GB_SIM, c->port, c->agent, c->truth_path, c->devices, SIM_ARGS);
    c->sim = fork();
    assert_true(c->sim >= 0);
    if (c->sim == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
}

/* Waits for the simulator (bounded: it is killed after PHASE_MS); returns its exit status. */
static int sim_wait(chaos_t *c)
{
    int status = 0;
    int64_t deadline = gb_time_mono_ms() + PHASE_MS;
    while (waitpid(c->sim, &status, WNOHANG) == 0) {
        if (gb_time_mono_ms() > deadline) {
            kill(c->sim, SIGKILL);
            waitpid(c->sim, &status, 0);
            c->sim = 0;
            fail_msg("the simulator did not finish within %d ms", PHASE_MS);
        }
        gb_th_sleep_ms(50);
    }
    c->sim = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static json_t *get_json(const chaos_t *c, const char *path)
{
    gb_th_resp_t r;
    json_error_t e;
    gb_th_request_auth(c->server.port, "GET", path, c->viewer, NULL, &r);
    if (r.status != 200) {
        fail_msg("GET %s: status %d, body %s", path, r.status, r.body != NULL ? r.body : "");
    }
    json_t *j = json_loadb(r.body, r.body_len, 0, &e);
    if (j == NULL) {
        fail_msg("GET %s: %s", path, e.text);
    }
    gb_th_resp_free(&r);
    return j;
}

/* Every device as the running server shows it: {serial: {"list": item, "detail": detail}}. */
static json_t *fleet_view(const chaos_t *c)
{
    json_t *view = json_object();
    char path[512];
    char *cursor = NULL;
    do {
        if (cursor == NULL) {
            snprintf(path, sizeof(path), "/api/v1/devices?limit=%d", c->list_limit);
        } else {
            snprintf(path, sizeof(path), "/api/v1/devices?limit=%d&cursor=%s", c->list_limit,
                     cursor);
        }
        free(cursor);
        cursor = NULL;
        json_t *page = get_json(c, path);
        size_t i;
        json_t *item;
        json_array_foreach(json_object_get(page, "devices"), i, item)
        {
            const char *serial = json_string_value(json_object_get(item, "serial"));
            assert_non_null(serial);
            assert_null(json_object_get(view, serial));
            json_object_set_new(view, serial, json_pack("{sO}", "list", item));
        }
        json_t *next = json_object_get(page, "next_cursor");
        if (json_is_string(next)) {
            cursor = gb_xstrdup(json_string_value(next));
        }
        json_decref(page);
    } while (cursor != NULL);
    const char *serial;
    json_t *dev;
    json_object_foreach(view, serial, dev)
    {
        snprintf(path, sizeof(path), "/api/v1/devices/%s", serial);
        json_object_set_new(dev, "detail", get_json(c, path));
    }
    return view;
}

/* Fails unless both views hold the same devices with equal JSON; returns the devices compared. */
static size_t compare_views(json_t *want, json_t *got, const char *what)
{
    const char *serial;
    json_t *dev;
    size_t differ = 0;
    assert_int_equal(json_object_size(got), json_object_size(want));
    json_object_foreach(want, serial, dev)
    {
        json_t *other = json_object_get(got, serial);
        if (other == NULL) {
            fail_msg("%s: device %s is gone", what, serial);
        }
        if (!json_equal(dev, other)) {
            if (differ++ < 3) {
                char *a = json_dumps(dev, JSON_SORT_KEYS | JSON_COMPACT);
                char *b = json_dumps(other, JSON_SORT_KEYS | JSON_COMPACT);
                print_error("%s: device %s differs\n  before: %s\n  after:  %s\n", what, serial, a,
                            b);
                free(a);
                free(b);
            }
        }
    }
    if (differ > 0) {
        fail_msg("%s: %zu of %zu devices differ", what, differ, json_object_size(want));
    }
    return json_object_size(want);
}

/* Every message the simulator sent is stored once: per device seqs 1..n without a gap, n as the
 * ground truth counts them, and the device row's max_seq agrees. */
static void check_exactly_once(const chaos_t *c, json_t *truth)
{
    PGconn *conn = db(c->url);
    PGresult *r = PQexec(conn, "SELECT e.serial, count(*), min(e.seq), max(e.seq), d.max_seq "
                               "FROM events e JOIN devices d USING (serial) "
                               "GROUP BY e.serial, d.max_seq");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    json_t *stored = json_object();
    for (int i = 0; i < PQntuples(r); i++) {
        json_object_set_new(stored, PQgetvalue(r, i, 0),
                            json_pack("[IIII]", (json_int_t)atoll(PQgetvalue(r, i, 1)),
                                      (json_int_t)atoll(PQgetvalue(r, i, 2)),
                                      (json_int_t)atoll(PQgetvalue(r, i, 3)),
                                      (json_int_t)atoll(PQgetvalue(r, i, 4))));
    }
    PQclear(r);
    json_t *per = json_object_get(truth, "per_device");
    assert_int_equal(json_array_size(per), c->devices);
    assert_int_equal(json_object_size(stored), c->devices);
    size_t i;
    json_t *d;
    json_array_foreach(per, i, d)
    {
        const char *serial = json_string_value(json_object_get(d, "serial"));
        json_int_t sent = json_integer_value(json_object_get(d, "messages"));
        json_t *s = json_object_get(stored, serial);
        if (s == NULL) {
            fail_msg("device %s: nothing stored", serial);
        }
        json_int_t count = json_integer_value(json_array_get(s, 0));
        json_int_t lo = json_integer_value(json_array_get(s, 1));
        json_int_t hi = json_integer_value(json_array_get(s, 2));
        json_int_t max_seq = json_integer_value(json_array_get(s, 3));
        if (sent < 1 || count != sent || lo != 1 || hi != sent || max_seq != sent) {
            fail_msg("device %s: sent seqs 1..%lld; stored %lld messages, seqs %lld..%lld, "
                     "max_seq %lld",
                     serial, (long long)sent, (long long)count, (long long)lo, (long long)hi,
                     (long long)max_seq);
        }
    }
    json_decref(stored);
    PQfinish(conn);
}

/* The server's view agrees with the ground truth: status, diagnosis and attempt per device. */
static void check_against_truth(json_t *view, json_t *truth)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(truth, "per_device"), i, d)
    {
        const char *serial = json_string_value(json_object_get(d, "serial"));
        json_t *dev = json_object_get(json_object_get(view, serial), "detail");
        if (dev == NULL) {
            fail_msg("device %s missing on the server", serial);
        }
        const char *want_diag = json_string_value(json_object_get(d, "diagnosis"));
        const char *got_diag =
            json_string_value(json_object_get(json_object_get(dev, "diagnosis"), "code"));
        const char *want_status = json_string_value(json_object_get(d, "status"));
        const char *got_status = json_string_value(json_object_get(dev, "status"));
        json_int_t want_attempts = json_integer_value(json_object_get(d, "attempts"));
        json_int_t got_attempt = json_integer_value(json_object_get(dev, "attempt"));
        if (got_status == NULL || strcmp(got_status, want_status) != 0 ||
            strcmp(got_diag != NULL ? got_diag : "", want_diag != NULL ? want_diag : "") != 0 ||
            got_attempt != want_attempts) {
            fail_msg("device %s: server says %s/%s/attempt %lld, truth says %s/%s/attempt %lld",
                     serial, got_status, got_diag != NULL ? got_diag : "", (long long)got_attempt,
                     want_status, want_diag != NULL ? want_diag : "", (long long)want_attempts);
        }
    }
}

static void restart_server(chaos_t *c)
{
    assert_int_equal(gb_th_server_stop(&c->server, SIGTERM, 20000), 0);
    server_start(c);
}

static void test_crashes_under_load_lose_nothing_and_replay_the_same(void **state)
{
    chaos_t *c = *state;
    int64_t t0 = gb_time_mono_ms();
    long long at[3];

    sim_start(c);
    at[0] = wait_progress(c, 0.15);
    crash_postgres(c);
    at[1] = wait_progress(c, 0.40);
    assert_int_equal(gb_th_server_stop(&c->server, SIGKILL, 5000), 128 + SIGKILL);
    gb_th_sleep_ms(300);
    server_start(c);
    at[2] = wait_progress(c, 0.65);
    crash_postgres(c);
    assert_int_equal(sim_wait(c), 0);
    int64_t load_ms = gb_time_mono_ms() - t0;

    json_t *truth = gb_th_load_json(c->truth_path);
    assert_int_equal(json_integer_value(json_object_get(truth, "messages")), c->expected);
    check_exactly_once(c, truth);

    /* The running server, then a restart (snapshots plus the messages after them), then a
     * rebuild of every device from its stored messages alone. */
    json_t *live = fleet_view(c);
    check_against_truth(live, truth);
    restart_server(c);
    json_t *restarted = fleet_view(c);
    size_t compared = compare_views(live, restarted, "after a restart");
    json_decref(restarted);
    assert_int_equal(gb_th_server_stop(&c->server, SIGTERM, 20000), 0);
    exec_ok(c->url, "UPDATE devices SET needs_rebuild = true");
    /* The crashes are over: the rebuild's snapshot writes, one transaction per device, need not
     * each wait for the disk. */
    exec_ok(c->url, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = off', "
                    "current_database()); END $$");
    server_start(c);
    char *log = gb_th_server_log(&c->server);
    char want[128];
    snprintf(want, sizeof(want), "loaded %d devices (%d rebuilt from events", c->devices,
             c->devices);
    if (strstr(log, want) == NULL) {
        fail_msg("no \"%s\" in the server's log:\n%s", want, log);
    }
    free(log);
    json_t *rebuilt = fleet_view(c);
    assert_int_equal(compare_views(live, rebuilt, "after a rebuild from the stored messages"),
                     compared);

    print_message("chaos: %d devices, %lld messages stored exactly once in %.1f s of load; "
                  "PostgreSQL crashed at %lld and %lld stored messages, gloveboxd SIGKILLed at "
                  "%lld; %zu devices (list item and detail) equal after a restart and after a "
                  "rebuild from events\n",
                  c->devices, c->expected, (double)load_ms / 1000.0, at[0], at[2], at[1], compared);
    json_decref(rebuilt);
    json_decref(live);
    json_decref(truth);
}

static int teardown(void **state);

static int setup(void **state)
{
    static chaos_t c;
    memset(&c, 0, sizeof(c));
    *state = &c;
    c.devices = gb_th_valgrind() ? DEVICES_VALGRIND : DEVICES;
    c.list_limit = c.devices / 2;
    snprintf(c.pgdir, sizeof(c.pgdir), "%s-chaos-%d", GB_PGDIR, (int)getpid());
    snprintf(c.truth_path, sizeof(c.truth_path), "%s/truth.json", c.pgdir);
    if (gb_th_sh("'%s' start '%s' >/dev/null", GB_PG_CLUSTER, c.pgdir) != 0 ||
        gb_th_db_create_in(c.pgdir, c.url, sizeof(c.url)) != 0) {
        teardown(state);
        return -1;
    }
    c.agent = gb_th_token_create(c.url, "agent", "chaos-sim");
    c.viewer = gb_th_token_create(c.url, "viewer", "chaos-viewer");
    /* The run's size, from the model alone: the same settings give the same messages. */
    json_t *dry = NULL;
    if (gb_th_sh("'%s' --dry-run --quiet --summary '%s' --devices %d %s", GB_SIM, c.truth_path,
                 c.devices, SIM_ARGS) == 0) {
        dry = json_load_file(c.truth_path, 0, NULL);
        unlink(c.truth_path);
    }
    c.expected = json_integer_value(json_object_get(dry, "messages"));
    json_decref(dry);
    const char *extra[] = {"--log-level", "info", "--db-connect-timeout", "1s", NULL};
    if (c.agent == NULL || c.viewer == NULL || c.expected <= 0 ||
        gb_th_server_start(&c.server, c.url, extra) != 0) {
        teardown(state);
        return -1;
    }
    c.port = c.server.port;
    snprintf(c.listen, sizeof(c.listen), "127.0.0.1:%d", c.port);
    return 0;
}

static int teardown(void **state)
{
    chaos_t *c = *state;
    if (c->sim > 0) {
        kill(c->sim, SIGKILL);
        waitpid(c->sim, NULL, 0);
    }
    int rc = 0;
    if (c->server.pid > 0 && gb_th_server_stop(&c->server, SIGTERM, 20000) != 0) {
        rc = -1;
    }
    free(c->agent);
    free(c->viewer);
    gb_th_sh("'%s' stop '%s' >/dev/null 2>&1; rm -rf '%s'", GB_PG_CLUSTER, c->pgdir, c->pgdir);
    return rc;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crashes_under_load_lose_nothing_and_replay_the_same,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
