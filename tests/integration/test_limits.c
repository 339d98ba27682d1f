/* A real gloveboxd short of file descriptors, and one holding ten thousand idle clients.
 * Started under a low open-file limit it fits its connection cap under the limit: clients past
 * it get 503 and the log says why. With the limit lowered under a running server, accept()
 * fails with EMFILE: new clients are shed, the clients it holds are still served, it does not
 * spin, and it accepts again once descriptors are free. Ten thousand idle keep-alive clients
 * are all kept while a new client is served; the memory they take is printed. With gloveboxd
 * under valgrind (GB_TEST_VALGRIND) the same holds: valgrind lowers the program's open-file limit
 * to keep descriptors of its own above it, and those are left out of the server's count
 * (gb_th_server_fd_count()); the waits for the server grow with gb_th_scale_ms(). */
#define _GNU_SOURCE /* prlimit() */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static const char HEALTHZ[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

static gb_th_server_t server;
static char db_url[512];

static int setup(void **state)
{
    GB_UNUSED(state);
    return gb_th_db_create(db_url, sizeof(db_url));
}

/* A request on an open keep-alive connection; the status (0 when none came). */
static int ask(gb_th_conn_t *c)
{
    gb_th_resp_t r;
    if (gb_th_conn_send(c, HEALTHZ, sizeof(HEALTHZ) - 1) != 0) {
        return 0;
    }
    gb_th_conn_read(c, &r, 5000);
    int status = r.status;
    gb_th_resp_free(&r);
    return status;
}

/* True when the server has sent something (an answer or its close) on c, within ms. */
static bool readable(const gb_th_conn_t *c, int ms)
{
    struct pollfd p = {c->fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1;
}

/* A request on a new connection answered 200, retried for up to 5 s (scaled): descriptors the
 * server frees are released by its loop, not at the instant the client closes. */
static int ask_new_until_ok(void)
{
    return gb_th_wait_status(server.port, "/healthz", 200, 5000);
}

/* CPU the server spends in a quiet second: a loop spinning on a failing accept() uses it all. */
static long quiet_cpu_ms(void)
{
    long before = gb_th_proc_cpu_ms(server.pid);
    gb_th_sleep_ms(1000);
    long after = gb_th_proc_cpu_ms(server.pid);
    assert_true(before >= 0 && after >= before);
    return after - before;
}

static void test_low_fd_limit_at_start_fits_the_cap_and_refuses_with_503(void **state)
{
    enum { N = 60 };
    GB_UNUSED(state);
    assert_int_equal(gb_th_server_start_nofile(&server, db_url, NULL, 64), 0);
    char *log = gb_th_server_log(&server);
    const char *w = strstr(log, "leaves room for ");
    assert_non_null(w);
    int cap = atoi(w + strlen("leaves room for "));
    free(log);
    printf("# open-file limit 64: connection cap fitted to %d\n", cap);
    assert_true(cap >= 1 && cap < N);

    gb_th_conn_t c[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(gb_th_conn_open(&c[i], server.port), 0);
    }
    /* Clients past the cap are answered 503 as soon as the server takes them (before they
     * ask, so a request is sent only to the others); the rest are served. */
    int served = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        gb_th_resp_t r;
        if (!readable(&c[i], (int)gb_th_scale_ms(i == 0 ? 500 : 50))) {
            assert_int_equal(gb_th_conn_send(&c[i], HEALTHZ, sizeof(HEALTHZ) - 1), 0);
        }
        gb_th_conn_read(&c[i], &r, 5000);
        if (r.status == 200) {
            served++;
        } else {
            gb_th_assert_json_error(&r, 503, "unavailable");
            assert_true(r.closed);
            assert_true(gb_th_conn_wait_closed(&c[i], 2000));
            gb_th_conn_close(&c[i]);
            refused++;
        }
        gb_th_resp_free(&r);
    }
    printf("# %d clients: %d served, %d refused with 503\n", N, served, refused);
    assert_int_equal(served, cap);
    assert_int_equal(refused, N - cap);
    log = gb_th_server_log(&server);
    assert_non_null(strstr(log, "reached (the open-file limit); refusing new connections"));
    free(log);

    long cpu = quiet_cpu_ms();
    printf("# CPU in a quiet second at the cap: %ld ms\n", cpu);
    assert_true(cpu < 500);

    /* The clients held are still served, and once some leave, new ones are served again. */
    for (int i = 0; i < N; i++) {
        if (c[i].fd >= 0) {
            assert_int_equal(ask(&c[i]), 200);
        }
    }
    for (int i = 0; i < N; i++) {
        gb_th_conn_close(&c[i]);
    }
    assert_int_equal(ask_new_until_ok(), 200);
    assert_true(gb_th_server_alive(&server));
    assert_int_equal(gb_th_server_stop(&server, SIGTERM, 10000), 0);
}

static void test_emfile_sheds_new_clients_keeps_the_old_and_recovers(void **state)
{
    enum { OLD = 10, NEW = 40, HEADROOM = 4 };
    gb_th_conn_t old[OLD], fresh[NEW];
    GB_UNUSED(state);
    assert_int_equal(gb_th_server_start(&server, db_url, NULL), 0);
    for (int i = 0; i < OLD; i++) {
        assert_int_equal(gb_th_conn_open(&old[i], server.port), 0);
        assert_int_equal(ask(&old[i]), 200);
    }
    gb_th_sleep_ms(gb_th_scale_ms(100)); /* the harness's start-up probes are released */
    /* Lowered under the running server, past the cap it fitted at start: accept() itself
     * fails with EMFILE once HEADROOM more descriptors are taken. */
    long fds = gb_th_server_fd_count(&server);
    assert_true(fds > OLD);
    struct rlimit rl = {(rlim_t)(fds + HEADROOM), (rlim_t)(fds + HEADROOM)};
    assert_int_equal(prlimit(server.pid, RLIMIT_NOFILE, &rl, NULL), 0);

    int served = 0, shed = 0;
    for (int i = 0; i < NEW; i++) {
        assert_int_equal(gb_th_conn_open(&fresh[i], server.port), 0);
        /* Every client hears something, 200 or its connection closed, never silence. */
        int status = ask(&fresh[i]);
        if (status == 200) {
            served++;
        } else {
            assert_int_equal(status, 0);
            shed++;
            gb_th_conn_close(&fresh[i]);
        }
    }
    printf("# open-file limit %ld (server held %ld): %d new clients served, %d shed\n",
           fds + HEADROOM, fds, served, shed);
    assert_true(served <= HEADROOM + 2);
    assert_true(shed >= NEW - HEADROOM - 2);

    long cpu = quiet_cpu_ms();
    printf("# CPU in a quiet second out of descriptors: %ld ms\n", cpu);
    assert_true(cpu < 500);
    /* The clients it holds are served as before. */
    for (int i = 0; i < OLD; i++) {
        assert_int_equal(ask(&old[i]), 200);
    }
    /* Some leave: new clients are accepted again. */
    for (int i = 0; i < OLD; i++) {
        gb_th_conn_close(&old[i]);
    }
    assert_int_equal(ask_new_until_ok(), 200);
    for (int i = 0; i < NEW; i++) {
        gb_th_conn_close(&fresh[i]);
    }
    assert_true(gb_th_server_alive(&server));
    assert_int_equal(gb_th_server_stop(&server, SIGTERM, 10000), 0);
}

/* The value of a metric line "name value" in /metrics; -1 when absent. */
static long metric(const char *name)
{
    return gb_th_metric(server.port, name);
}

static void test_ten_thousand_idle_connections_are_held(void **state)
{
    /* SLACK: descriptors the server may open or close meanwhile on its own. */
    enum { N = 10000, BATCH = 250, SLACK = 8 };
    GB_UNUSED(state);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < N + 500) {
        printf("# open-file hard limit %llu is below %d: skipped\n",
               (unsigned long long)rl.rlim_max, N + 500);
        skip();
    }
    /* The test holds the client ends; gloveboxd raises its own soft limit to the hard one. */
    rl.rlim_cur = rl.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    const char *extra[] = {
        "--max-connections", "10100", "--idle-timeout", "5m", "--log-level", "info", NULL};
    assert_int_equal(gb_th_server_start(&server, db_url, extra), 0);

    gb_th_conn_t *c = gb_xcalloc(N, sizeof(*c));
    assert_int_equal(ask_new_until_ok(), 200);
    gb_th_sleep_ms(gb_th_scale_ms(100)); /* that client's descriptor is released */
    long fds0 = gb_th_server_fd_count(&server);
    long rss0 = gb_th_proc_status_kb(server.pid, "VmRSS");
    int64_t t0 = gb_time_mono_ms();
    for (int i = 0; i < N; i++) {
        assert_int_equal(gb_th_conn_open(&c[i], server.port), 0);
        if ((i + 1) % BATCH == 0) {
            /* Let the server take them from its backlog before the next batch: a full
             * backlog drops handshakes, which clients only retry a second later. */
            int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(10000);
            while (gb_th_server_fd_count(&server) < fds0 + i + 1 - SLACK &&
                   gb_time_mono_ms() < deadline) {
                gb_th_sleep_ms(2);
            }
        }
    }
    int64_t t1 = gb_time_mono_ms();
    /* Bounded wait for the last ones to be accepted. */
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(5000);
    while (gb_th_server_fd_count(&server) < fds0 + N - SLACK && gb_time_mono_ms() < deadline) {
        gb_th_sleep_ms(10);
    }
    long fds1 = gb_th_server_fd_count(&server);
    long rss1 = gb_th_proc_status_kb(server.pid, "VmRSS");
    printf("# %d idle connections opened in %lld ms; server descriptors %ld -> %ld\n", N,
           (long long)(t1 - t0), fds0, fds1);
    printf("# VmRSS %ld kB -> %ld kB: %.2f kB per idle connection\n", rss0, rss1,
           (double)(rss1 - rss0) / N);
    assert_true(fds1 >= fds0 + N - SLACK);

    /* A new client is served while all of them are held. */
    int64_t t2 = gb_time_mono_ms();
    gb_th_resp_t r;
    gb_th_request(server.port, "GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    printf("# a new client's request answered in %lld ms\n", (long long)(gb_time_mono_ms() - t2));
    assert_true(metric("gb_http_open_connections") >= N);

    /* None was closed, and a sample of them is served. */
    struct pollfd *p = gb_xcalloc(N, sizeof(*p));
    for (int i = 0; i < N; i++) {
        p[i].fd = c[i].fd;
        p[i].events = POLLIN;
    }
    assert_int_equal(poll(p, N, 0), 0);
    free(p);
    for (int i = 0; i < N; i += N / 50) {
        assert_int_equal(ask(&c[i]), 200);
    }
    assert_int_equal(metric("gb_http_connections_rejected_total"), 0);

    for (int i = 0; i < N; i++) {
        gb_th_conn_close(&c[i]);
    }
    free(c);
    assert_int_equal(ask_new_until_ok(), 200);
    printf("# VmHWM %ld kB\n", gb_th_proc_status_kb(server.pid, "VmHWM"));
    assert_int_equal(gb_th_server_stop(&server, SIGTERM, 20000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_low_fd_limit_at_start_fits_the_cap_and_refuses_with_503),
        cmocka_unit_test(test_emfile_sheds_new_clients_keeps_the_old_and_recovers),
        cmocka_unit_test(test_ten_thousand_idle_connections_are_held),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
