/* A real gloveboxd: a flood of failed token checks from one address turns into 429
 * too_many_requests with Retry-After once the threshold is reached; a valid token from the same
 * address still works, the public endpoints are never limited, and once the window has passed
 * a bad token gets its 401 again. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

/* The server's constants (server/src/api/internal.h): 20 failures within 10 s. */
#define FAILURES  20
#define WINDOW_MS 10000

/* Of the issued shape ("gbt_" + 43 base64url characters), but never issued. */
#define BAD_TOKEN "gbt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static gb_th_server_t server;
static char db_url[512];
static char *viewer_token;

static int setup(void **state)
{
    if (gb_th_db_create(db_url, sizeof(db_url)) != 0) {
        return -1;
    }
    viewer_token = gb_th_token_create(db_url, "viewer", "lead");
    if (viewer_token == NULL) {
        return -1;
    }
    return gb_th_server_start(&server, db_url, NULL);
}

static int teardown(void **state)
{
    int rc = gb_th_server_stop(&server, SIGTERM, 10000);
    free(viewer_token);
    return rc == 0 ? 0 : -1;
}

static void get(const char *path, const char *token, gb_th_resp_t *r)
{
    char headers[128];
    if (token != NULL) {
        snprintf(headers, sizeof(headers), "Authorization: Bearer %s\r\n", token);
    }
    gb_th_request(server.port, "GET", path, token != NULL ? headers : NULL, NULL, 0, r);
}

/* The value of gb_auth_limited_total in /metrics. */
static long limited_total(void)
{
    gb_th_resp_t r;
    get("/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    const char *line = strstr(r.body, "\ngb_auth_limited_total ");
    assert_non_null(line);
    long v = strtol(line + strlen("\ngb_auth_limited_total "), NULL, 10);
    gb_th_resp_free(&r);
    return v;
}

static unsigned retry_after(const gb_th_resp_t *r)
{
    char *v = gb_th_resp_header(r, "Retry-After");
    assert_non_null(v);
    long s = strtol(v, NULL, 10);
    free(v);
    assert_true(s >= 1 && s <= WINDOW_MS / 1000);
    return (unsigned)s;
}

static void test_ratelimit_flood_gets_429_until_the_window_passes(void **state)
{
    gb_th_resp_t r;
    long before = limited_total();

    /* The threshold: every one of these is a plain 401 (missing, malformed or unknown). */
    for (int i = 0; i < FAILURES; i++) {
        get("/api/v1/devices", i % 3 == 0 ? NULL : i % 3 == 1 ? "nonsense" : BAD_TOKEN, &r);
        gb_th_assert_json_error(&r, 401, "unauthorized");
        gb_th_resp_free(&r);
    }

    /* Past it, a bad token of any shape and a missing one get 429 with Retry-After. */
    const char *bad[] = {BAD_TOKEN, "nonsense", NULL};
    unsigned wait_s = 0;
    for (size_t i = 0; i < 3; i++) {
        get("/api/v1/devices", bad[i], &r);
        gb_th_assert_json_error(&r, 429, "too_many_requests");
        wait_s = retry_after(&r);
        gb_th_resp_free(&r);
    }
    /* ?access_token= counts the same as the header. */
    get("/api/v1/stream?access_token=" BAD_TOKEN, NULL, &r);
    gb_th_assert_json_error(&r, 429, "too_many_requests");
    gb_th_resp_free(&r);

    /* A valid token from the same address is never limited. */
    get("/api/v1/devices", viewer_token, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);

    /* Nor are the public endpoints. */
    get("/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    get("/readyz", NULL, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    assert_int_equal(limited_total() - before, 4);

    /* The 429s do not extend the window: once Retry-After has passed, 401 again. */
    gb_th_sleep_ms(wait_s * 1000 + 300);
    get("/api/v1/devices", BAD_TOKEN, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);
    get("/api/v1/devices", viewer_token, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ratelimit_flood_gets_429_until_the_window_passes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
