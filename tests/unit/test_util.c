/* Unit tests of util: buffers, slices, arena, JSON quoting, errors, RFC 3339 times, hashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/util.h"

static void test_buf_appends_and_formats(void **state)
{
    gb_buf_t b;
    gb_buf_init(&b);
    gb_buf_append_str(&b, "abc");
    gb_buf_appendf(&b, "-%d-%s", 42, "x");
    assert_string_equal(b.data, "abc-42-x");
    assert_int_equal(b.len, 8);
    /* Growth past the first allocation keeps content and NUL termination. */
    for (int i = 0; i < 1000; i++) {
        gb_buf_appendf(&b, "%04d", i);
    }
    assert_int_equal(b.len, 8 + 4000);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data + 8 + 4 * 999, "0999", 4);
    /* The printf-free integer appends agree with printf at the edges. */
    static const int64_t ints[] = {0, 7, -7, 10, 99, 1000000007, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < GB_ARRAY_LEN(ints); i++) {
        char want[32];
        gb_buf_t n;
        gb_buf_init(&n);
        gb_buf_append_i64(&n, ints[i]);
        snprintf(want, sizeof(want), "%lld", (long long)ints[i]);
        assert_string_equal(n.data, want);
        gb_buf_reset(&n);
        gb_buf_append_u64(&n, UINT64_MAX);
        assert_string_equal(n.data, "18446744073709551615");
        gb_buf_dispose(&n);
    }
    gb_buf_consume(&b, 8);
    assert_memory_equal(b.data, "0000", 4);
    assert_int_equal(b.len, 4000);
    size_t len = 0;
    char *p = gb_buf_steal(&b, &len);
    assert_int_equal(len, 4000);
    assert_null(b.data);
    free(p);
    gb_buf_dispose(&b);
}

static void test_str_compare_and_numbers(void **state)
{
    uint64_t v = 0;
    assert_true(gb_str_eq_cstr(GB_STR_LIT("abc"), "abc"));
    assert_false(gb_str_eq_cstr(GB_STR_LIT("abc"), "abcd"));
    assert_true(gb_str_case_eq_cstr(GB_STR_LIT("Bearer"), "bearer"));
    assert_true(gb_str_has_prefix(GB_STR_LIT("/api/v1/x"), "/api/"));
    assert_true(gb_str_to_u64(GB_STR_LIT("18446744073709551615"), UINT64_MAX, &v));
    assert_true(v == UINT64_MAX);
    assert_false(gb_str_to_u64(GB_STR_LIT("18446744073709551616"), UINT64_MAX, &v));
    assert_false(gb_str_to_u64(GB_STR_LIT("12a"), UINT64_MAX, &v));
    assert_false(gb_str_to_u64(GB_STR_LIT(""), UINT64_MAX, &v));
    assert_false(gb_str_to_u64(GB_STR_LIT("1001"), 1000, &v));
    assert_true(gb_str_to_u64(GB_STR_LIT("1000"), 1000, &v));
    assert_int_equal(v, 1000);
}

static void test_arena_alignment_and_large_blocks(void **state)
{
    gb_arena_t a;
    gb_arena_init(&a);
    for (int i = 1; i < 300; i++) {
        unsigned char *p = gb_arena_alloc(&a, (size_t)i);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xab, (size_t)i);
    }
    char *big = gb_arena_alloc(&a, 100000);
    memset(big, 1, 100000);
    char *s = gb_arena_sprintf(&a, "%s-%d", "dev", 7);
    assert_string_equal(s, "dev-7");
    char *longs = gb_arena_sprintf(&a, "%0300d", 5);
    assert_int_equal(strlen(longs), 300);
    gb_arena_reset(&a);
    assert_int_equal(a.total, 0);
    assert_string_equal(gb_arena_strndup(&a, "hello", 4), "hell");
    gb_arena_dispose(&a);
}

static void test_json_quote_escapes_everything_needed(void **state)
{
    gb_buf_t b;
    gb_buf_init(&b);
    const char in[] = "a\"b\\c\n\x01<script>";
    gb_json_quote(&b, in, sizeof(in) - 1);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001\\u003cscript\\u003e\"");
    gb_buf_dispose(&b);
}

static void test_error_json_has_contract_shape(void **state)
{
    gb_error_t e;
    gb_buf_t b;
    gb_error_clear(&e);
    assert_false(gb_error_is_set(&e));
    gb_error_set(&e, 400, "invalid_message", "at", "not an RFC 3339 time: \"%s\"", "x");
    e.index = 3;
    gb_buf_init(&b);
    gb_error_to_json(&e, &b);
    assert_string_equal(b.data, "{\"error\":{\"code\":\"invalid_message\",\"message\":\"not an RFC "
                                "3339 time: \\\"x\\\"\",\"index\":3,\"field\":\"at\"}}");
    gb_buf_dispose(&b);
}

typedef struct time_case {
    const char *in;
    bool ok;
    int64_t ms;
} time_case_t;

static void test_rfc3339_parse_table(void **state)
{
    static const time_case_t cases[] = {
        {"2026-11-24T10:00:00Z", true, 1795514400000},
        {"2026-11-24T10:00:00.123Z", true, 1795514400123},
        {"2026-11-24T12:00:00+02:00", true, 1795514400000},
        {"2026-11-24T05:30:00.5-04:30", true, 1795514400500},
        {"2026-11-24t10:00:00z", true, 1795514400000},
        {"1970-01-01T00:00:00Z", true, 0},
        {"2024-02-29T00:00:00Z", true, 1709164800000},
        {"2023-02-29T00:00:00Z", false, 0},
        {"2026-13-01T00:00:00Z", false, 0},
        {"2026-11-24T24:00:00Z", false, 0},
        {"2026-11-24T10:00:00", false, 0},
        {"2026-11-24T10:00:00+0200", false, 0},
        {"2026-11-24T10:00:00.Z", false, 0},
        {"2026-11-24 10:00:00Z", true, 1795514400000},
        {"26-11-24T10:00:00Z", false, 0},
        {"2026-11-24T10:00:00Zjunk", false, 0},
        {"", false, 0},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        int64_t ms = -1;
        bool ok = gb_time_parse_rfc3339(cases[i].in, strlen(cases[i].in), &ms);
        if (ok != cases[i].ok || (ok && ms != cases[i].ms)) {
            fail_msg("case %zu '%s': ok=%d ms=%lld", i, cases[i].in, ok, (long long)ms);
        }
    }
}

static void test_rfc3339_round_trip(void **state)
{
    char out[32];
    gb_time_format_rfc3339(1795514400123, out);
    assert_string_equal(out, "2026-11-24T10:00:00.123Z");
    gb_time_format_rfc3339(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    gb_time_format_rfc3339(-1, out);
    assert_string_equal(out, "1969-12-31T23:59:59.999Z");
    gb_time_format_rfc3339(253402300799999LL, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999Z");
    for (int64_t ms = -86400000LL * 3; ms < 86400000LL * 800; ms += 86400000LL / 7 + 13) {
        int64_t back = 0;
        gb_time_format_rfc3339(ms + 1700000000000LL, out);
        assert_true(gb_time_parse_rfc3339(out, strlen(out), &back));
        assert_true(back == ms + 1700000000000LL);
    }
}

static void test_sha256_known_vector(void **state)
{
    uint8_t h[GB_SHA256_LEN];
    char hex[2 * GB_SHA256_LEN + 1];
    gb_sha256("abc", 3, h);
    gb_hex_encode(h, sizeof(h), hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_true(gb_const_time_eq("abcd", "abcd", 4));
    assert_false(gb_const_time_eq("abcd", "abce", 4));
    uint8_t r1[16], r2[16];
    assert_true(gb_random_bytes(r1, sizeof(r1)));
    assert_true(gb_random_bytes(r2, sizeof(r2)));
    assert_memory_not_equal(r1, r2, sizeof(r1));
}

static void test_log_quote_and_levels(void **state)
{
    gb_buf_t b;
    gb_log_level_t l;
    gb_buf_init(&b);
    gb_log_quote(&b, "a \"q\"\nb\x02", 8);
    assert_string_equal(b.data, "\"a \\\"q\\\"\\nb\\x02\"");
    gb_buf_dispose(&b);
    assert_true(gb_log_level_parse("WARN", &l));
    assert_int_equal(l, GB_LOG_WARN);
    assert_false(gb_log_level_parse("verbose", &l));
    gb_log_set_level(GB_LOG_ERROR);
    assert_false(gb_log_enabled(GB_LOG_INFO));
    assert_true(gb_log_enabled(GB_LOG_ERROR));
    gb_log_set_level(GB_LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_appends_and_formats),
        cmocka_unit_test(test_str_compare_and_numbers),
        cmocka_unit_test(test_arena_alignment_and_large_blocks),
        cmocka_unit_test(test_json_quote_escapes_everything_needed),
        cmocka_unit_test(test_error_json_has_contract_shape),
        cmocka_unit_test(test_rfc3339_parse_table),
        cmocka_unit_test(test_rfc3339_round_trip),
        cmocka_unit_test(test_sha256_known_vector),
        cmocka_unit_test(test_log_quote_and_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
