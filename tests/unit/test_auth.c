/* Unit tests of auth's pure parts: role rules of the contract, names, token format, hashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth/auth.h"

static void test_roles_follow_the_contract(void **state)
{
    /* rows: have; columns: need = agent, viewer, technician, admin */
    static const struct {
        gb_role_t have;
        bool allows[4];
    } table[] = {
        {GB_ROLE_AGENT, {true, false, false, false}},
        {GB_ROLE_VIEWER, {false, true, false, false}},
        {GB_ROLE_TECHNICIAN, {false, true, true, false}},
        {GB_ROLE_ADMIN, {true, true, true, true}},
        {GB_ROLE_NONE, {false, false, false, false}},
    };
    static const gb_role_t needs[4] = {GB_ROLE_AGENT, GB_ROLE_VIEWER, GB_ROLE_TECHNICIAN,
                                       GB_ROLE_ADMIN};
    for (size_t r = 0; r < GB_ARRAY_LEN(table); r++) {
        for (size_t c = 0; c < 4; c++) {
            if (gb_role_allows(table[r].have, needs[c]) != table[r].allows[c]) {
                fail_msg("%s needing %s", gb_role_name(table[r].have), gb_role_name(needs[c]));
            }
        }
    }
    gb_role_t role;
    assert_true(gb_role_parse("technician", &role));
    assert_int_equal(role, GB_ROLE_TECHNICIAN);
    assert_false(gb_role_parse("root", &role));
    assert_false(gb_role_parse("none", &role));
}

static void test_token_names(void **state)
{
    assert_true(gb_auth_name_valid("bench-A.12@room_3"));
    assert_false(gb_auth_name_valid(""));
    assert_false(gb_auth_name_valid("has space"));
    assert_false(gb_auth_name_valid("quote'"));
    char longname[GB_AUTH_NAME_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_false(gb_auth_name_valid(longname));
    longname[GB_AUTH_NAME_MAX] = '\0';
    assert_true(gb_auth_name_valid(longname));
}

static void test_tokens_are_random_and_url_safe(void **state)
{
    char a[GB_AUTH_TOKEN_LEN + 1], b[GB_AUTH_TOKEN_LEN + 1];
    assert_true(gb_auth_token_generate(a));
    assert_true(gb_auth_token_generate(b));
    assert_int_equal(strlen(a), GB_AUTH_TOKEN_LEN);
    assert_memory_equal(a, "gbt_", 4);
    assert_string_not_equal(a, b);
    for (size_t i = 4; i < GB_AUTH_TOKEN_LEN; i++) {
        char c = a[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        assert_true(ok);
    }
    uint8_t h1[GB_SHA256_LEN], h2[GB_SHA256_LEN];
    gb_auth_token_hash(a, strlen(a), h1);
    gb_auth_token_hash(b, strlen(b), h2);
    assert_memory_not_equal(h1, h2, GB_SHA256_LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roles_follow_the_contract),
        cmocka_unit_test(test_token_names),
        cmocka_unit_test(test_tokens_are_random_and_url_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
