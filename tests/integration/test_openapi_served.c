/* A real gloveboxd serves its OpenAPI document: GET /api/v1/openapi.json without a token gives
 * the bytes of server/openapi.json with a strong ETag of them, If-None-Match gives 304, HEAD
 * gives the headers alone; and every operation the document lists answers on the real server
 * with the authentication the document states (public ones without a token, the others 401). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"

#define SPEC_PATH GB_SOURCE_DIR "/server/openapi.json"
#define DOC_PATH  "/api/v1/openapi.json"

static gb_th_server_t server;
static char *spec;
static size_t spec_len;
static char etag[20];

static char *read_file(const char *path, size_t *len)
{
    gb_buf_t b;
    char chunk[8192];
    size_t n;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    gb_buf_init(&b);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        gb_buf_append(&b, chunk, n);
    }
    fclose(f);
    return gb_buf_steal(&b, len);
}

static int setup(void **state)
{
    char db_url[512];
    GB_UNUSED(state);
    spec = read_file(SPEC_PATH, &spec_len);
    if (spec == NULL) {
        return -1;
    }
    uint8_t digest[GB_SHA256_LEN];
    char hex[2 * GB_SHA256_LEN + 1];
    gb_sha256(spec, spec_len, digest);
    gb_hex_encode(digest, 8, hex);
    snprintf(etag, sizeof(etag), "\"%.16s\"", hex);
    if (gb_th_db_create(db_url, sizeof(db_url)) != 0) {
        return -1;
    }
    return gb_th_server_start(&server, db_url, NULL);
}

static int teardown(void **state)
{
    GB_UNUSED(state);
    int rc = gb_th_server_stop(&server, SIGTERM, 10000);
    free(spec);
    return rc == 0 ? 0 : -1;
}

static void assert_header(const gb_th_resp_t *r, const char *name, const char *want)
{
    char *v = gb_th_resp_header(r, name);
    if (v == NULL) {
        print_error("no %s header in:\n%s\n", name, r->head);
        fail();
    }
    assert_string_equal(v, want);
    free(v);
}

static void test_openapi_get_returns_the_file_without_a_token(void **state)
{
    GB_UNUSED(state);
    gb_th_resp_t r;
    char len[32];

    gb_th_request(server.port, "GET", DOC_PATH, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "application/json");
    snprintf(len, sizeof(len), "%zu", spec_len);
    assert_header(&r, "Content-Length", len);
    assert_header(&r, "ETag", etag);
    assert_int_equal(r.body_len, spec_len);
    assert_memory_equal(r.body, spec, spec_len);
    gb_th_resp_free(&r);

    /* A token is not needed, and one that is not known changes nothing. */
    gb_th_request(server.port, "GET", DOC_PATH, "Authorization: Bearer gbt_not_a_token\r\n", NULL,
                  0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, spec_len);
    gb_th_resp_free(&r);
}

static void test_openapi_if_none_match_gives_304(void **state)
{
    GB_UNUSED(state);
    char h[320];
    gb_th_resp_t r;
    char matching[4][64];

    snprintf(matching[0], sizeof(matching[0]), "%s", etag);
    snprintf(matching[1], sizeof(matching[1]), "W/%s", etag);
    snprintf(matching[2], sizeof(matching[2]), "\"0000000000000000\", %s", etag);
    snprintf(matching[3], sizeof(matching[3]), "*");
    for (size_t i = 0; i < GB_ARRAY_LEN(matching); i++) {
        const char *value = matching[i];
        snprintf(h, sizeof(h), "If-None-Match: %s\r\n", value);
        gb_th_request(server.port, "GET", DOC_PATH, h, NULL, 0, &r);
        if (r.status != 304) {
            print_error("If-None-Match: %s gave %d\n", value, r.status);
        }
        assert_int_equal(r.status, 304);
        assert_header(&r, "ETag", etag);
        gb_th_resp_free(&r);
    }
    gb_th_request(server.port, "GET", DOC_PATH, "If-None-Match: \"0123456789abcdef\"\r\n", NULL, 0,
                  &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, spec_len);
    gb_th_resp_free(&r);
}

static void test_openapi_head_sends_headers_only(void **state)
{
    GB_UNUSED(state);
    gb_th_conn_t c;
    gb_th_resp_t r;
    char len[32];
    static const char reqs[] = "HEAD " DOC_PATH " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                               "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    /* Pipelined: had HEAD sent a body, the next response would not parse. */
    assert_int_equal(gb_th_conn_open(&c, server.port), 0);
    assert_int_equal(gb_th_conn_send(&c, reqs, sizeof(reqs) - 1), 0);
    c.head_request = true;
    gb_th_conn_read(&c, &r, 10000);
    assert_int_equal(r.status, 200);
    snprintf(len, sizeof(len), "%zu", spec_len);
    assert_header(&r, "Content-Length", len);
    assert_header(&r, "ETag", etag);
    gb_th_resp_free(&r);
    c.head_request = false;
    gb_th_conn_read(&c, &r, 10000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
}

static void test_openapi_other_methods_get_405(void **state)
{
    GB_UNUSED(state);
    gb_th_resp_t r;
    gb_th_request(server.port, "POST", DOC_PATH, "Content-Type: application/json\r\n", "{}", 2, &r);
    gb_th_assert_json_error(&r, 405, "method_not_allowed");
    gb_th_resp_free(&r);
}

/* The path with each {name} replaced by a value the server takes. */
static void fill_template(const char *path, char *out, size_t n)
{
    size_t o = 0;
    for (const char *p = path; *p != '\0' && o + 16 < n; p++) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (close == NULL) {
                break;
            }
            o += (size_t)snprintf(out + o, n - o, "X1");
            p = close;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static void test_openapi_every_operation_is_served_with_its_auth(void **state)
{
    GB_UNUSED(state);
    json_error_t jerr;
    json_t *doc = json_loadb(spec, spec_len, 0, &jerr);
    assert_non_null(doc);
    int bad = 0, ops = 0;
    const char *path;
    json_t *item;

    json_object_foreach(json_object_get(doc, "paths"), path, item)
    {
        const char *method;
        json_t *op;
        json_object_foreach(item, method, op)
        {
            const char *role = json_string_value(json_object_get(op, "x-glovebox-role"));
            if (role == NULL) {
                continue; /* not an operation (parameters, summary, ...) */
            }
            char target[256], verb[16];
            fill_template(path, target, sizeof(target));
            size_t i = 0;
            for (; method[i] != '\0' && i + 1 < sizeof(verb); i++) {
                verb[i] = (char)(method[i] >= 'a' && method[i] <= 'z' ? method[i] - 32 : method[i]);
            }
            verb[i] = '\0';
            gb_th_resp_t r;
            bool has_body = strcmp(verb, "POST") == 0 || strcmp(verb, "PUT") == 0;
            gb_th_request(server.port, verb, target,
                          has_body ? "Content-Type: application/json\r\n" : NULL,
                          has_body ? "{}" : NULL, has_body ? 2 : 0, &r);
            bool is_public = strcmp(role, "public") == 0;
            /* Public operations answer (readyz may be 503 with a database that is slow to
             * answer); the others want a token before anything else. */
            bool ok = is_public ? (r.status == 200 || r.status == 503) : r.status == 401;
            if (!ok) {
                print_error("%s %s (%s): status %d\n", verb, target, role, r.status);
                bad++;
            }
            ops++;
            gb_th_resp_free(&r);
        }
    }
    json_decref(doc);
    assert_true(ops > 10);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openapi_get_returns_the_file_without_a_token),
        cmocka_unit_test(test_openapi_if_none_match_gives_304),
        cmocka_unit_test(test_openapi_head_sends_headers_only),
        cmocka_unit_test(test_openapi_other_methods_get_405),
        cmocka_unit_test(test_openapi_every_operation_is_served_with_its_auth),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
