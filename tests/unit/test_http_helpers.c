/* Unit tests of http's pure helpers: percent-decoding, request-target splitting, the static
 * path check that keeps requests inside the web root, query lookup and redaction, content
 * types, ETag matching, status reasons and the metrics text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/internal.h"

static void test_pct_decode_handles_escapes_plus_and_errors(void **state)
{
    char out[64];
    long n = gb_http__pct_decode("a%20b%2Fc%2fd", 13, out, false);
    assert_int_equal(n, 7);
    assert_memory_equal(out, "a b/c/d", 7);
    n = gb_http__pct_decode("x+y%2B", 6, out, true);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "x y+", 4);
    n = gb_http__pct_decode("x+y", 3, out, false);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "x+y", 3);
    /* NUL bytes decode (callers refuse them) and malformed escapes fail. */
    n = gb_http__pct_decode("a%00b", 5, out, false);
    assert_int_equal(n, 3);
    assert_int_equal(out[1], '\0');
    assert_int_equal(gb_http__pct_decode("%", 1, out, false), -1);
    assert_int_equal(gb_http__pct_decode("%4", 2, out, false), -1);
    assert_int_equal(gb_http__pct_decode("ab%4", 4, out, false), -1);
    assert_int_equal(gb_http__pct_decode("%zz", 3, out, false), -1);
    assert_int_equal(gb_http__pct_decode("%g1", 3, out, false), -1);
    assert_int_equal(gb_http__pct_decode("", 0, out, false), 0);
}

static void test_split_target_origin_absolute_and_refused_forms(void **state)
{
    gb_str_t path, query;
    assert_true(gb_http__split_target(GB_STR_LIT("/a/b?x=1&y"), &path, &query));
    assert_true(gb_str_eq_cstr(path, "/a/b"));
    assert_true(gb_str_eq_cstr(query, "x=1&y"));
    assert_true(gb_http__split_target(GB_STR_LIT("/a#frag?no"), &path, &query));
    assert_true(gb_str_eq_cstr(path, "/a"));
    assert_int_equal(query.len, 0);
    assert_true(gb_http__split_target(GB_STR_LIT("http://host:8080/x/y?q"), &path, &query));
    assert_true(gb_str_eq_cstr(path, "/x/y"));
    assert_true(gb_str_eq_cstr(query, "q"));
    assert_true(gb_http__split_target(GB_STR_LIT("HTTPS://host?q=2"), &path, &query));
    assert_true(gb_str_eq_cstr(path, "/"));
    assert_true(gb_str_eq_cstr(query, "q=2"));
    assert_true(gb_http__split_target(GB_STR_LIT("http://host"), &path, &query));
    assert_true(gb_str_eq_cstr(path, "/"));
    assert_false(gb_http__split_target(GB_STR_LIT("*"), &path, &query));
    assert_false(gb_http__split_target(GB_STR_LIT("host:443"), &path, &query));
    assert_false(gb_http__split_target(GB_STR_LIT(""), &path, &query));
}

static int static_path(const char *raw, char *out)
{
    size_t len = 0;
    int rc = gb_http__static_path(gb_str_from_cstr(raw), out, 256, &len);
    if (rc == GB_HTTP_PATH_OK) {
        assert_int_equal(len, strlen(out));
    }
    return rc;
}

static void test_static_path_normalises_plain_paths(void **state)
{
    char out[256];
    assert_int_equal(static_path("/", out), GB_HTTP_PATH_OK);
    assert_string_equal(out, "");
    assert_int_equal(static_path("/index.html", out), GB_HTTP_PATH_OK);
    assert_string_equal(out, "index.html");
    assert_int_equal(static_path("//a///b.js", out), GB_HTTP_PATH_OK);
    assert_string_equal(out, "a/b.js");
    assert_int_equal(static_path("/sub/", out), GB_HTTP_PATH_OK);
    assert_string_equal(out, "sub/");
    assert_int_equal(static_path("/sub//", out), GB_HTTP_PATH_OK);
    assert_string_equal(out, "sub/");
    assert_int_equal(static_path("/my%20file.txt", out), GB_HTTP_PATH_OK);
    assert_string_equal(out, "my file.txt");
    /* Dots inside a name are fine; only whole "." / ".." segments and hidden names are not. */
    assert_int_equal(static_path("/a.b..c/x..y", out), GB_HTTP_PATH_OK);
    assert_string_equal(out, "a.b..c/x..y");
}

static void test_static_path_refuses_every_traversal_spelling(void **state)
{
    static const char *const bad[] = {
        "/../etc/passwd",
        "/a/../../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/%2E%2E/x",
        "/.%2e/x",
        "/%2e./x",
        "/a/..",
        "/a/.",
        "/./a",
        "/a%2fb",
        "/a%2F..%2Fb",
        "/..%5cetc",
        "/a\\b",
        "/index.html%00.js",
        "/a%0ab",
        "/a%7f",
        "/%",
        "/%zz",
        "relative",
        "",
    };
    char out[256];
    for (size_t i = 0; i < GB_ARRAY_LEN(bad); i++) {
        int rc = static_path(bad[i], out);
        if (rc != GB_HTTP_PATH_BAD) {
            fail_msg("%s gave %d", bad[i], rc);
        }
    }
    /* Hidden files (.env, .git/...) are not found rather than refused. */
    assert_int_equal(static_path("/.env", out), GB_HTTP_PATH_HIDDEN);
    assert_int_equal(static_path("/.git/config", out), GB_HTTP_PATH_HIDDEN);
    assert_int_equal(static_path("/a/%2egit", out), GB_HTTP_PATH_HIDDEN);
    /* Double encoding is just a strange file name, not a way up. */
    assert_int_equal(static_path("/%252e%252e/x", out), GB_HTTP_PATH_OK);
    assert_string_equal(out, "%2e%2e/x");
}

static void test_static_path_respects_the_output_size(void **state)
{
    char small[8];
    size_t len;
    assert_int_equal(gb_http__static_path(GB_STR_LIT("/abcdef"), small, sizeof(small), &len),
                     GB_HTTP_PATH_OK);
    assert_string_equal(small, "abcdef");
    assert_int_equal(gb_http__static_path(GB_STR_LIT("/abcdefgh"), small, sizeof(small), &len),
                     GB_HTTP_PATH_BAD);
    assert_int_equal(gb_http__static_path(GB_STR_LIT("/abc/def/"), small, sizeof(small), &len),
                     GB_HTTP_PATH_BAD);
}

static void test_query_find_first_match_decoded_names(void **state)
{
    gb_str_t v;
    gb_str_t q = GB_STR_LIT("status=red&q=a%20b&empty=&flag&status=green&access%5Ftoken=t1");
    assert_true(gb_http__query_find(q, "status", &v));
    assert_true(gb_str_eq_cstr(v, "red"));
    assert_true(gb_http__query_find(q, "q", &v));
    assert_true(gb_str_eq_cstr(v, "a%20b")); /* raw: decoded by gb_http_req_query */
    assert_true(gb_http__query_find(q, "empty", &v));
    assert_int_equal(v.len, 0);
    assert_true(gb_http__query_find(q, "flag", &v));
    assert_int_equal(v.len, 0);
    assert_true(gb_http__query_find(q, "access_token", &v));
    assert_true(gb_str_eq_cstr(v, "t1"));
    assert_false(gb_http__query_find(q, "stat", &v));
    assert_false(gb_http__query_find(GB_STR_LIT(""), "a", &v));
    assert_false(gb_http__query_find(GB_STR_LIT("&&=x&"), "a", &v));
}

static void test_query_redact_hides_access_tokens(void **state)
{
    gb_buf_t b;
    gb_buf_init(&b);
    gb_http__query_redact(GB_STR_LIT("a=1&access_token=secret&b=2&access%5ftoken=s2"), &b);
    assert_string_equal(b.data, "a=1&access_token=REDACTED&b=2&access%5ftoken=REDACTED");
    assert_null(strstr(b.data, "secret"));
    gb_buf_reset(&b);
    gb_http__query_redact(GB_STR_LIT("access_token"), &b);
    assert_string_equal(b.data, "access_token=REDACTED");
    gb_buf_dispose(&b);
}

static void test_content_types_by_extension(void **state)
{
    static const struct {
        const char *name;
        const char *want;
    } cases[] = {
        {"index.html", "text/html"},
        {"app.js", "text/javascript"},
        {"mod.MJS", "text/javascript"},
        {"style.css", "text/css"},
        {"data.json", "application/json"},
        {"app.js.map", "application/json"},
        {"logo.svg", "image/svg+xml"},
        {"a.png", "image/png"},
        {"favicon.ico", "image/x-icon"},
        {"notes.txt", "text/plain"},
        {"f.woff2", "font/woff2"},
        {"README", "application/octet-stream"},
        {"dir.d/file", "application/octet-stream"},
        {"x.exe", "application/octet-stream"},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        const char *t = gb_http__content_type(cases[i].name, strlen(cases[i].name));
        if (strncmp(t, cases[i].want, strlen(cases[i].want)) != 0) {
            fail_msg("%s -> %s, want %s", cases[i].name, t, cases[i].want);
        }
    }
    assert_non_null(strstr(gb_http__content_type("a.html", 6), "charset=utf-8"));
}

static void test_etag_if_none_match_lists_weak_and_star(void **state)
{
    const char *etag = "\"abc123\"";
    assert_true(gb_http__etag_match(GB_STR_LIT("\"abc123\""), etag));
    assert_true(gb_http__etag_match(GB_STR_LIT("W/\"abc123\""), etag));
    assert_true(gb_http__etag_match(GB_STR_LIT("\"x\", \"abc123\""), etag));
    assert_true(gb_http__etag_match(GB_STR_LIT("\"x\",W/\"abc123\" "), etag));
    assert_true(gb_http__etag_match(GB_STR_LIT("*"), etag));
    assert_false(gb_http__etag_match(GB_STR_LIT("\"abc12\""), etag));
    assert_false(gb_http__etag_match(GB_STR_LIT("abc123"), etag));
    assert_false(gb_http__etag_match(GB_STR_LIT("\"abc123"), etag));
    assert_false(gb_http__etag_match(GB_STR_LIT(""), etag));
    assert_false(gb_http__etag_match((gb_str_t){NULL, 0}, etag));
}

static void test_status_reasons_and_method_names(void **state)
{
    assert_string_equal(gb_http_status_reason(200), "OK");
    assert_string_equal(gb_http_status_reason(304), "Not Modified");
    assert_string_equal(gb_http_status_reason(404), "Not Found");
    assert_string_equal(gb_http_status_reason(405), "Method Not Allowed");
    assert_string_equal(gb_http_status_reason(413), "Content Too Large");
    assert_string_equal(gb_http_status_reason(431), "Request Header Fields Too Large");
    assert_string_equal(gb_http_status_reason(503), "Service Unavailable");
    assert_string_equal(gb_http_status_reason(499), "Client Error");
    assert_string_equal(gb_http_status_reason(599), "Server Error");
    assert_string_equal(gb_http_method_name(GB_HTTP_GET), "GET");
    assert_string_equal(gb_http_method_name(GB_HTTP_PATCH), "PATCH");
    assert_string_equal(gb_http_method_name(GB_HTTP_OTHER), "OTHER");
    assert_int_equal(gb_http__method_from_llhttp(HTTP_DELETE), GB_HTTP_DELETE);
    assert_int_equal(gb_http__method_from_llhttp(HTTP_TRACE), GB_HTTP_OTHER);
}

/* Every line is a comment or "name{labels} value"; every family has HELP and TYPE first. */
static void test_metrics_text_is_prometheus_exposition(void **state)
{
    gb_http__metrics_t m;
    gb_buf_t out;
    gb_http__metrics_init(&m);
    static const char route[] = "/api/v1/devices/{serial}";
    for (int i = 0; i < 200; i++) {
        gb_http__metrics_record(&m, i % 2 ? route : "static", GB_HTTP_GET, 200 + (i % 5),
                                0.001 * i);
    }
    gb_http__metrics_record(&m, "we\"ird\\", GB_HTTP_POST, 404, 20.0);
    gb_buf_init(&out);
    gb_http__metrics_write(&m, 3, &out);
    assert_non_null(strstr(out.data, "# TYPE gb_http_requests_total counter\n"));
    assert_non_null(strstr(out.data, "# TYPE gb_http_request_duration_seconds histogram\n"));
    assert_non_null(strstr(out.data, "gb_http_open_connections 3\n"));
    assert_non_null(strstr(out.data, "gb_http_requests_total{route=\"/api/v1/devices/{serial}\","
                                     "method=\"GET\",status=\"201\"} 20\n"));
    assert_non_null(strstr(out.data, "route=\"we\\\"ird\\\\\""));
    /* Buckets are cumulative and end with +Inf equal to the count. */
    assert_non_null(strstr(out.data, "gb_http_request_duration_seconds_bucket{route=\"static\","
                                     "method=\"GET\",le=\"+Inf\"} 100\n"));
    assert_non_null(strstr(out.data, "gb_http_request_duration_seconds_count{route=\"static\","
                                     "method=\"GET\"} 100\n"));
    assert_non_null(strstr(out.data, "gb_http_request_duration_seconds_bucket{route=\"we\\\"ird"
                                     "\\\\\",method=\"POST\",le=\"10\"} 0\n"));
    char *save = NULL;
    for (char *line = strtok_r(out.data, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            assert_true(strncmp(line, "# HELP gb_", 10) == 0 ||
                        strncmp(line, "# TYPE gb_", 10) == 0);
            continue;
        }
        assert_true(strncmp(line, "gb_http_", 8) == 0);
        char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        char *end = NULL;
        strtod(sp + 1, &end);
        assert_true(end != NULL && *end == '\0');
    }
    gb_buf_dispose(&out);
    gb_http__metrics_dispose(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pct_decode_handles_escapes_plus_and_errors),
        cmocka_unit_test(test_split_target_origin_absolute_and_refused_forms),
        cmocka_unit_test(test_static_path_normalises_plain_paths),
        cmocka_unit_test(test_static_path_refuses_every_traversal_spelling),
        cmocka_unit_test(test_static_path_respects_the_output_size),
        cmocka_unit_test(test_query_find_first_match_decoded_names),
        cmocka_unit_test(test_query_redact_hides_access_tokens),
        cmocka_unit_test(test_content_types_by_extension),
        cmocka_unit_test(test_etag_if_none_match_lists_weak_and_star),
        cmocka_unit_test(test_status_reasons_and_method_names),
        cmocka_unit_test(test_metrics_text_is_prometheus_exposition),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
