/* PostgreSQL stopped (immediate shutdown, like a crash) and restarted while gloveboxd serves:
 * /readyz goes 503 promptly, no request hangs, the server does not crash, and it recovers by
 * itself once the database is back. Runs on a private cluster so other tests are undisturbed. */
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

static char pgdir[128];

static int setup(void **state)
{
    snprintf(pgdir, sizeof(pgdir), "/tmp/gb-outage-%d", (int)getpid());
    return gb_th_sh("'%s' start '%s' >/dev/null", GB_PG_CLUSTER, pgdir) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    gb_th_sh("'%s' stop '%s' >/dev/null 2>&1; rm -rf '%s'", GB_PG_CLUSTER, pgdir, pgdir);
    return 0;
}

/* Returns the status of GET /readyz and how long it took. */
static int readyz(int port, int64_t *took_ms)
{
    gb_th_resp_t r;
    int64_t t0 = gb_time_mono_ms();
    gb_th_request(port, "GET", "/readyz", NULL, NULL, 0, &r);
    *took_ms = gb_time_mono_ms() - t0;
    int status = r.status;
    gb_th_resp_free(&r);
    return status;
}

static void test_readyz_follows_the_database(void **state)
{
    char url[512];
    gb_th_server_t s;
    int64_t took;
    assert_int_equal(gb_th_db_create_in(pgdir, url, sizeof(url)), 0);
    const char *extra[] = {"--db-connect-timeout", "1s", NULL};
    assert_int_equal(gb_th_server_start(&s, url, extra), 0);
    assert_int_equal(readyz(s.port, &took), 200);

    assert_int_equal(gb_th_sh("'%s' kill '%s' >/dev/null", GB_PG_CLUSTER, pgdir), 0);
    /* Every request during the outage gets an answer, and promptly. */
    int unavailable = 0;
    for (int i = 0; i < 10; i++) {
        int st = readyz(s.port, &took);
        assert_true(st == 503 || st == 200);
        assert_true(took < 3000);
        unavailable += st == 503;
        gb_th_sleep_ms(100);
    }
    assert_true(unavailable >= 9);
    gb_th_resp_t r;
    gb_th_request(s.port, "GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    gb_th_request(s.port, "GET", "/metrics", NULL, NULL, 0, &r);
    assert_non_null(strstr(r.body, "gb_db_up 0"));
    gb_th_resp_free(&r);

    assert_int_equal(gb_th_sh("'%s' start '%s' >/dev/null", GB_PG_CLUSTER, pgdir), 0);
    int st = 0;
    for (int i = 0; i < 100 && st != 200; i++) {
        st = readyz(s.port, &took);
        if (st != 200) {
            gb_th_sleep_ms(100);
        }
    }
    assert_int_equal(st, 200);
    assert_true(gb_th_server_alive(&s));
    /* A second outage is survived as well. */
    assert_int_equal(gb_th_sh("'%s' kill '%s' >/dev/null", GB_PG_CLUSTER, pgdir), 0);
    assert_int_equal(readyz(s.port, &took), 503);
    assert_int_equal(gb_th_sh("'%s' start '%s' >/dev/null", GB_PG_CLUSTER, pgdir), 0);
    st = 0;
    for (int i = 0; i < 100 && st != 200; i++) {
        st = readyz(s.port, &took);
        if (st != 200) {
            gb_th_sleep_ms(100);
        }
    }
    assert_int_equal(st, 200);
    assert_int_equal(gb_th_server_stop(&s, SIGTERM, 10000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readyz_follows_the_database),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
