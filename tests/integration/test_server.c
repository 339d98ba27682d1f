/* A real gloveboxd on an ephemeral loopback port against a throwaway database: keep-alive,
 * pipelining, limits (431, 413, slow clients, connection cap), 404/405, 401/403, static files
 * and traversal attempts, metrics, and a clean exit on SIGTERM. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static gb_th_server_t server;
static char db_url[512];
static char web_dir[256];
static char *admin_token;
static char *agent_token;
static char *viewer_token;

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int setup(void **state)
{
    if (gb_th_db_create(db_url, sizeof(db_url)) != 0) {
        return -1;
    }
    snprintf(web_dir, sizeof(web_dir), "/tmp/gbweb-%d", (int)getpid());
    gb_th_sh("rm -rf '%s' && mkdir -p '%s/sub' '%s-outside'", web_dir, web_dir, web_dir);
    write_file(web_dir, "index.html", "<!doctype html><title>glovebox</title>");
    write_file(web_dir, "app.js", "export const x = 1;\n");
    write_file(web_dir, "sub/index.html", "sub index");
    char outside[300];
    snprintf(outside, sizeof(outside), "%s-outside", web_dir);
    write_file(outside, "secret.txt", "SECRET-CONTENT");
    gb_th_sh("ln -s '%s/secret.txt' '%s/link.txt'", outside, web_dir);
    /* Tokens are created before the server starts, as an operator would. */
    admin_token = gb_th_token_create(db_url, "admin", "it-admin");
    agent_token = gb_th_token_create(db_url, "agent", "bench-agent");
    viewer_token = gb_th_token_create(db_url, "viewer", "lead");
    if (admin_token == NULL || agent_token == NULL || viewer_token == NULL) {
        return -1;
    }
    const char *extra[] = {"--web-dir",
                           web_dir,
                           "--header-timeout",
                           "400ms",
                           "--body-timeout",
                           "400ms",
                           "--idle-timeout",
                           "600ms",
                           "--max-connections",
                           "20",
                           "--max-body",
                           "64K",
                           "--max-header",
                           "4K",
                           NULL};
    return gb_th_server_start(&server, db_url, extra);
}

static int teardown(void **state)
{
    int rc = gb_th_server_stop(&server, SIGTERM, 10000);
    gb_th_sh("rm -rf '%s' '%s-outside'", web_dir, web_dir);
    free(admin_token);
    free(agent_token);
    free(viewer_token);
    return rc == 0 ? 0 : -1;
}

static void test_health_ready_and_metrics_need_no_token(void **state)
{
    gb_th_resp_t r;
    gb_th_request(server.port, "GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    gb_th_resp_free(&r);
    gb_th_request(server.port, "GET", "/readyz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    gb_th_request(server.port, "GET", "/metrics", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "# TYPE gb_http_requests_total counter"));
    assert_non_null(strstr(r.body, "gb_http_request_duration_seconds_bucket"));
    assert_non_null(strstr(r.body, "gb_http_open_connections"));
    assert_non_null(strstr(r.body, "gb_db_up 1"));
    assert_non_null(strstr(r.body, "gb_db_queue_depth"));
    /* The requests above were counted under their route and status. */
    assert_non_null(strstr(r.body, "route=\"/healthz\""));
    gb_th_resp_free(&r);
}

static void test_auth_401_and_403(void **state)
{
    gb_th_resp_t r;
    gb_th_request_auth(server.port, "GET", "/api/v1/whoami", NULL, NULL, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    char *www = gb_th_resp_header(&r, "WWW-Authenticate");
    assert_non_null(www);
    free(www);
    gb_th_resp_free(&r);

    gb_th_request_auth(server.port, "GET", "/api/v1/whoami", "gbt_not-a-real-token", NULL, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);

    gb_th_request(server.port, "GET", "/api/v1/whoami", "Authorization: Basic Zm9vOmJhcg==\r\n",
                  NULL, 0, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);

    gb_th_request_auth(server.port, "GET", "/api/v1/whoami", agent_token, NULL, &r);
    gb_th_assert_json_error(&r, 403, "forbidden");
    gb_th_resp_free(&r);

    gb_th_request_auth(server.port, "GET", "/api/v1/whoami", viewer_token, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"name\":\"lead\",\"role\":\"viewer\"}");
    gb_th_resp_free(&r);

    gb_th_request_auth(server.port, "GET", "/api/v1/whoami", admin_token, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"name\":\"it-admin\",\"role\":\"admin\"}");
    gb_th_resp_free(&r);
}

static void test_404_and_405_are_json(void **state)
{
    gb_th_resp_t r;
    gb_th_request(server.port, "GET", "/api/v1/nothing-here", NULL, NULL, 0, &r);
    gb_th_assert_json_error(&r, 404, "not_found");
    gb_th_resp_free(&r);
    gb_th_request(server.port, "DELETE", "/healthz", NULL, NULL, 0, &r);
    gb_th_assert_json_error(&r, 405, "method_not_allowed");
    char *allow = gb_th_resp_header(&r, "Allow");
    assert_non_null(allow);
    assert_non_null(strstr(allow, "GET"));
    free(allow);
    gb_th_resp_free(&r);
}

static void test_keep_alive_and_pipelining_answer_in_order(void **state)
{
    gb_th_conn_t c;
    gb_th_resp_t r;
    assert_int_equal(gb_th_conn_open(&c, server.port), 0);
    /* Three requests in one write, with different answers, must come back in order. */
    char req[1024];
    snprintf(req, sizeof(req),
             "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
             "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
             viewer_token);
    assert_int_equal(gb_th_conn_send(&c, req, strlen(req)), 0);
    gb_th_conn_read(&c, &r, 5000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    gb_th_resp_free(&r);
    gb_th_conn_read(&c, &r, 5000);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"lead\""));
    gb_th_resp_free(&r);
    gb_th_conn_read(&c, &r, 5000);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "ready"));
    assert_false(r.closed);
    gb_th_resp_free(&r);
    /* The same connection still serves. */
    const char again[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(gb_th_conn_send(&c, again, sizeof(again) - 1), 0);
    gb_th_conn_read(&c, &r, 5000);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
}

static void test_header_limit_gives_431(void **state)
{
    gb_buf_t big;
    gb_th_resp_t r;
    gb_buf_init(&big);
    gb_buf_append_str(&big, "X-Filler: ");
    for (int i = 0; i < 5000; i++) {
        gb_buf_append_str(&big, "a");
    }
    gb_buf_append_str(&big, "\r\n");
    gb_th_request(server.port, "GET", "/healthz", big.data, NULL, 0, &r);
    gb_th_assert_json_error(&r, 431, "header_too_large");
    gb_th_resp_free(&r);
    gb_buf_dispose(&big);
}

static void test_body_limit_gives_413_before_the_body_is_sent(void **state)
{
    gb_th_conn_t c;
    gb_th_resp_t r;
    assert_int_equal(gb_th_conn_open(&c, server.port), 0);
    /* Announce 10 MB but send none of it: the answer must come from the header alone. */
    const char head[] =
        "POST /api/v1/whoami HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 10485760\r\n\r\n";
    assert_int_equal(gb_th_conn_send(&c, head, sizeof(head) - 1), 0);
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 413, "body_too_large");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);

    /* Chunked: counted as the chunks arrive. */
    assert_int_equal(gb_th_conn_open(&c, server.port), 0);
    const char chead[] =
        "POST /api/v1/whoami HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(gb_th_conn_send(&c, chead, sizeof(chead) - 1), 0);
    char chunk[8192 + 16];
    int n = snprintf(chunk, sizeof(chunk), "2000\r\n");
    memset(chunk + n, 'z', 8192);
    memcpy(chunk + n + 8192, "\r\n", 2);
    int sent_ok = 0;
    for (int i = 0; i < 12; i++) {
        if (gb_th_conn_send(&c, chunk, (size_t)n + 8192 + 2) == 0) {
            sent_ok++;
        }
    }
    assert_true(sent_ok >= 8);
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 413, "body_too_large");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
}

static void test_slow_client_is_closed_by_the_timeouts(void **state)
{
    gb_th_conn_t c;
    assert_int_equal(gb_th_conn_open(&c, server.port), 0);
    /* Slowloris: a partial request line, then nothing. Header timeout is 400 ms. */
    assert_int_equal(gb_th_conn_send(&c, "GET /hea", 8), 0);
    int64_t t0 = gb_time_mono_ms();
    assert_true(gb_th_conn_wait_closed(&c, 5000));
    /* Closed by the timeout, not at once. */
    assert_true(gb_time_mono_ms() - t0 >= 300);
    gb_th_conn_close(&c);

    /* A body that stops half-way is closed by the body timeout. */
    assert_int_equal(gb_th_conn_open(&c, server.port), 0);
    const char head[] = "POST /api/v1/whoami HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc";
    assert_int_equal(gb_th_conn_send(&c, head, sizeof(head) - 1), 0);
    assert_true(gb_th_conn_wait_closed(&c, 5000));
    gb_th_conn_close(&c);

    /* An idle keep-alive connection is closed after the idle timeout. */
    gb_th_resp_t r;
    assert_int_equal(gb_th_conn_open(&c, server.port), 0);
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(gb_th_conn_send(&c, req, sizeof(req) - 1), 0);
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    assert_true(gb_th_conn_wait_closed(&c, 5000));
    gb_th_conn_close(&c);
}

static void test_connection_cap_refuses_extra_clients(void **state)
{
    enum { N = 30 };
    gb_th_conn_t c[N];
    int open_ok = 0;
    for (int i = 0; i < N; i++) {
        if (gb_th_conn_open(&c[i], server.port) == 0) {
            open_ok++;
        }
    }
    assert_int_equal(open_ok, N);
    /* Ask every connection for /healthz: at most 20 (the cap) may be served. */
    int served = 0;
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < N; i++) {
        gb_th_resp_t r;
        if (gb_th_conn_send(&c[i], req, sizeof(req) - 1) == 0) {
            gb_th_conn_read(&c[i], &r, 2000);
            if (r.status == 200) {
                served++;
            }
            gb_th_resp_free(&r);
        }
    }
    for (int i = 0; i < N; i++) {
        gb_th_conn_close(&c[i]);
    }
    assert_true(served <= 20);
    assert_true(served >= 15);
    /* Once they are gone, new clients are served again. */
    gb_th_sleep_ms(200);
    gb_th_resp_t r;
    gb_th_request(server.port, "GET", "/healthz", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
}

static void test_static_files(void **state)
{
    gb_th_resp_t r;
    gb_th_request(server.port, "GET", "/", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "<!doctype html><title>glovebox</title>");
    char *ct = gb_th_resp_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "text/html"));
    free(ct);
    char *etag = gb_th_resp_header(&r, "ETag");
    assert_non_null(etag);
    char *csp = gb_th_resp_header(&r, "Content-Security-Policy");
    assert_non_null(csp);
    free(csp);
    gb_th_resp_free(&r);

    char h[300];
    snprintf(h, sizeof(h), "If-None-Match: %s\r\n", etag);
    gb_th_request(server.port, "GET", "/index.html", h, NULL, 0, &r);
    assert_int_equal(r.status, 304);
    assert_int_equal(r.body_len, 0);
    gb_th_resp_free(&r);
    free(etag);

    gb_th_request(server.port, "GET", "/app.js", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    ct = gb_th_resp_header(&r, "Content-Type");
    assert_non_null(strstr(ct, "javascript"));
    free(ct);
    gb_th_resp_free(&r);

    gb_th_request(server.port, "HEAD", "/app.js", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    char *cl = gb_th_resp_header(&r, "Content-Length");
    assert_string_equal(cl, "20");
    free(cl);
    assert_int_equal(r.body_len, 0);
    gb_th_resp_free(&r);

    gb_th_request(server.port, "GET", "/sub/", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "sub index");
    gb_th_resp_free(&r);
}

static void test_no_way_out_of_the_web_root(void **state)
{
    static const char *const attempts[] = {
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/sub/..%2f..%2f..%2fetc/passwd",
        "/..%5c..%5cetc%5cpasswd",
        "/index.html%00.js",
        "/link.txt",
        "/%252e%252e/etc/passwd",
    };
    char sibling[300];
    /* The sibling directory next to the web root, reached by climbing out of it. */
    snprintf(sibling, sizeof(sibling), "/sub/../../%s-outside/secret.txt",
             strrchr(web_dir, '/') + 1);
    for (size_t i = 0; i <= GB_ARRAY_LEN(attempts); i++) {
        const char *path = i < GB_ARRAY_LEN(attempts) ? attempts[i] : sibling;
        gb_th_resp_t r;
        gb_th_request(server.port, "GET", path, NULL, NULL, 0, &r);
        if (r.status != 400 && r.status != 403 && r.status != 404) {
            fail_msg("%s answered %d", path, r.status);
        }
        if (r.body != NULL &&
            (strstr(r.body, "root:") != NULL || strstr(r.body, "SECRET-CONTENT") != NULL)) {
            fail_msg("%s leaked a file", path);
        }
        gb_th_resp_free(&r);
    }
}

static void test_malformed_request_gets_400(void **state)
{
    gb_th_conn_t c;
    gb_th_resp_t r;
    assert_int_equal(gb_th_conn_open(&c, server.port), 0);
    const char junk[] = "THIS IS NOT HTTP\r\n\r\n";
    assert_int_equal(gb_th_conn_send(&c, junk, sizeof(junk) - 1), 0);
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 400, "bad_request");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_ready_and_metrics_need_no_token),
        cmocka_unit_test(test_auth_401_and_403),
        cmocka_unit_test(test_404_and_405_are_json),
        cmocka_unit_test(test_keep_alive_and_pipelining_answer_in_order),
        cmocka_unit_test(test_header_limit_gives_431),
        cmocka_unit_test(test_body_limit_gives_413_before_the_body_is_sent),
        cmocka_unit_test(test_slow_client_is_closed_by_the_timeouts),
        cmocka_unit_test(test_connection_cap_refuses_extra_clients),
        cmocka_unit_test(test_static_files),
        cmocka_unit_test(test_no_way_out_of_the_web_root),
        cmocka_unit_test(test_malformed_request_gets_400),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
