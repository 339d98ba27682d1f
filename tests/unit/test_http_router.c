/* Unit tests of the router: literal and {capture} segments, decoded captures, the most specific
 * pattern winning, 404 versus 405 with its Allow list, HEAD falling back to GET, and foreach. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/internal.h"

static int marks[8];

static void handler(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(req);
    marks[(intptr_t)ctx]++;
}

typedef struct fixture {
    gb_http_router_t *r;
    gb_arena_t arena;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = test_malloc(sizeof(*f));
    f->r = gb_http_router_new();
    gb_arena_init(&f->arena);
    gb_http_router_add(f->r, GB_HTTP_GET, "/healthz", handler, (void *)1);
    gb_http_router_add(f->r, GB_HTTP_HEAD, "/healthz", handler, (void *)2);
    gb_http_router_add(f->r, GB_HTTP_GET, "/api/v1/devices", handler, (void *)3);
    gb_http_router_add(f->r, GB_HTTP_GET, "/api/v1/devices/{serial}", handler, (void *)4);
    gb_http_router_add(f->r, GB_HTTP_POST, "/api/v1/devices/import", handler, (void *)5);
    gb_http_router_add(f->r, GB_HTTP_GET, "/api/v1/devices/{serial}/events", handler, (void *)6);
    gb_http_router_add(f->r, GB_HTTP_PUT, "/api/v1/profiles/{name}", handler, (void *)7);
    gb_http_router_add(f->r, GB_HTTP_GET, "/a/{x}/b/{y}", handler, (void *)0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    gb_arena_dispose(&f->arena);
    gb_http_router_free(f->r);
    test_free(f);
    return 0;
}

static int match(fixture_t *f, gb_http_method_t method, const char *path, gb_http__match_t *m)
{
    return gb_http__router_match(f->r, method, gb_str_from_cstr(path), &f->arena, m);
}

static void test_literal_routes_match_exactly(void **state)
{
    fixture_t *f = *state;
    gb_http__match_t m;
    assert_int_equal(match(f, GB_HTTP_GET, "/healthz", &m), 0);
    assert_ptr_equal(m.ctx, (void *)1);
    assert_string_equal(m.pattern, "/healthz");
    assert_int_equal(m.nparams, 0);
    assert_int_equal(match(f, GB_HTTP_HEAD, "/healthz", &m), 0);
    assert_ptr_equal(m.ctx, (void *)2);
    assert_int_equal(match(f, GB_HTTP_GET, "/healthz/", &m), 404);
    assert_int_equal(match(f, GB_HTTP_GET, "/healthzz", &m), 404);
    assert_int_equal(match(f, GB_HTTP_GET, "/", &m), 404);
    /* An escaped literal is still the literal. */
    assert_int_equal(match(f, GB_HTTP_GET, "/%68ealthz", &m), 0);
    assert_ptr_equal(m.ctx, (void *)1);
    m.cb(NULL, m.ctx);
    assert_int_equal(marks[1], 1);
}

static void test_captures_are_decoded_and_keep_encoded_slashes(void **state)
{
    fixture_t *f = *state;
    gb_http__match_t m;
    assert_int_equal(match(f, GB_HTTP_GET, "/api/v1/devices/PF3ABC12", &m), 0);
    assert_ptr_equal(m.ctx, (void *)4);
    assert_string_equal(m.pattern, "/api/v1/devices/{serial}");
    assert_int_equal(m.nparams, 1);
    assert_true(gb_str_eq_cstr(m.params[0], "PF3ABC12"));
    assert_int_equal(match(f, GB_HTTP_GET, "/api/v1/devices/A%2FB%20C/events", &m), 0);
    assert_ptr_equal(m.ctx, (void *)6);
    assert_true(gb_str_eq_cstr(m.params[0], "A/B C"));
    assert_int_equal(match(f, GB_HTTP_GET, "/a/1/b/two", &m), 0);
    assert_int_equal(m.nparams, 2);
    assert_true(gb_str_eq_cstr(m.params[0], "1"));
    assert_true(gb_str_eq_cstr(m.params[1], "two"));
    /* An empty segment never fills a capture. */
    assert_int_equal(match(f, GB_HTTP_GET, "/api/v1/devices/", &m), 404);
    assert_int_equal(match(f, GB_HTTP_GET, "/a//b/x", &m), 404);
    /* Malformed escapes and NUL in a capture are the client's error. */
    assert_int_equal(match(f, GB_HTTP_GET, "/api/v1/devices/%zz", &m), 400);
    assert_int_equal(match(f, GB_HTTP_GET, "/api/v1/devices/a%00b", &m), 400);
}

static void test_literal_beats_capture_and_405_lists_methods(void **state)
{
    fixture_t *f = *state;
    gb_http__match_t m;
    gb_buf_t allow;
    assert_int_equal(match(f, GB_HTTP_POST, "/api/v1/devices/import", &m), 0);
    assert_ptr_equal(m.ctx, (void *)5);
    /* GET on the same path is the {serial} route, with "import" as the serial. */
    assert_int_equal(match(f, GB_HTTP_GET, "/api/v1/devices/import", &m), 0);
    assert_ptr_equal(m.ctx, (void *)4);
    assert_true(gb_str_eq_cstr(m.params[0], "import"));

    assert_int_equal(match(f, GB_HTTP_DELETE, "/api/v1/devices/import", &m), 405);
    gb_buf_init(&allow);
    gb_http__allow_header(m.allow, &allow);
    assert_string_equal(allow.data, "GET, HEAD, POST");
    gb_buf_reset(&allow);
    assert_int_equal(match(f, GB_HTTP_GET, "/api/v1/profiles/default", &m), 405);
    assert_string_equal(m.pattern, "/api/v1/profiles/{name}");
    gb_http__allow_header(m.allow, &allow);
    assert_string_equal(allow.data, "PUT");
    gb_buf_dispose(&allow);
    assert_int_equal(match(f, GB_HTTP_OTHER, "/healthz", &m), 405);
}

static void test_head_falls_back_to_get(void **state)
{
    fixture_t *f = *state;
    gb_http__match_t m;
    assert_int_equal(match(f, GB_HTTP_HEAD, "/api/v1/devices", &m), 0);
    assert_ptr_equal(m.ctx, (void *)3);
    assert_int_equal(match(f, GB_HTTP_HEAD, "/api/v1/profiles/x", &m), 405);
}

static void test_deep_and_odd_paths_do_not_match(void **state)
{
    fixture_t *f = *state;
    gb_http__match_t m;
    char deep[400];
    size_t n = 0;
    for (int i = 0; i < 60; i++) {
        deep[n++] = '/';
        deep[n++] = 'x';
    }
    deep[n] = '\0';
    assert_int_equal(match(f, GB_HTTP_GET, deep, &m), 404);
    assert_int_equal(match(f, GB_HTTP_GET, "", &m), 404);
    assert_int_equal(match(f, GB_HTTP_GET, "healthz", &m), 404);
}

static void count_route(gb_http_method_t method, const char *pattern, void *arg)
{
    GB_UNUSED(method);
    GB_UNUSED(pattern);
    (*(int *)arg)++;
}

static void test_foreach_visits_routes_in_order(void **state)
{
    fixture_t *f = *state;
    int n = 0;
    gb_http_router_foreach(f->r, count_route, &n);
    assert_int_equal(n, 8);
    gb_http_router_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_literal_routes_match_exactly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_captures_are_decoded_and_keep_encoded_slashes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_literal_beats_capture_and_405_lists_methods, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_head_falls_back_to_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deep_and_odd_paths_do_not_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreach_visits_routes_in_order, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
