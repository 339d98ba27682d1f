/* Unit tests of the settings table: defaults, environment, flags, precedence, bounds, help. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"

static const char *const *fake_env;

static const char *env_lookup(const char *name)
{
    for (size_t i = 0; fake_env != NULL && fake_env[i] != NULL; i += 2) {
        if (strcmp(fake_env[i], name) == 0) {
            return fake_env[i + 1];
        }
    }
    return NULL;
}

static int load(gb_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    char *rest[16];
    int nrest;
    return gb_config_load(cfg, argc, argv, env_lookup, rest, &nrest, err, errlen);
}

static void test_defaults_match_the_contract(void **state)
{
    gb_config_t cfg;
    gb_config_init(&cfg);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_int_equal(cfg.max_body_bytes, 1024 * 1024);
    assert_int_equal(cfg.header_timeout_ms, 10000);
    assert_int_equal(cfg.stall_timeout_ms, 15 * 60 * 1000);
    assert_int_equal(cfg.log_level, GB_LOG_INFO);
    gb_config_dispose(&cfg);
}

static void test_flags_override_environment(void **state)
{
    static const char *const env[] = {"GLOVEBOX_LISTEN",
                                      "0.0.0.0:9000",
                                      "GLOVEBOX_MAX_BODY",
                                      "2M",
                                      "GLOVEBOX_LOG_LEVEL",
                                      "debug",
                                      NULL};
    char *argv[] = {"--listen", "127.0.0.1:0", "--idle-timeout=1500ms", "serve", "--role", "admin"};
    char *rest[8];
    int nrest = 0;
    char err[256] = "";
    gb_config_t cfg;

    fake_env = env;
    gb_config_init(&cfg);
    assert_int_equal(gb_config_load(&cfg, 6, argv, env_lookup, rest, &nrest, err, sizeof(err)), 0);
    assert_string_equal(cfg.listen, "127.0.0.1:0");
    assert_int_equal(cfg.max_body_bytes, 2 * 1024 * 1024);
    assert_int_equal(cfg.idle_timeout_ms, 1500);
    assert_int_equal(cfg.log_level, GB_LOG_DEBUG);
    /* Non-settings stay for the subcommand, in order. */
    assert_int_equal(nrest, 3);
    assert_string_equal(rest[0], "serve");
    assert_string_equal(rest[1], "--role");
    assert_string_equal(rest[2], "admin");
    gb_config_dispose(&cfg);
    fake_env = NULL;
}

static void test_units_are_parsed(void **state)
{
    char *argv[] = {"--header-timeout", "2s",  "--stall-timeout", "1h",
                    "--max-header",     "64K", "--body-timeout",  "750"};
    char err[256];
    gb_config_t cfg;
    gb_config_init(&cfg);
    assert_int_equal(load(&cfg, 8, argv, err, sizeof(err)), 0);
    assert_int_equal(cfg.header_timeout_ms, 2000);
    assert_int_equal(cfg.stall_timeout_ms, 3600000);
    assert_int_equal(cfg.max_header_bytes, 65536);
    assert_int_equal(cfg.body_timeout_ms, 750);
    gb_config_dispose(&cfg);
}

typedef struct bad_case {
    const char *flag;
    const char *value;
    const char *expect; /* substring of the error */
} bad_case_t;

static void test_bad_values_are_refused_with_a_clear_message(void **state)
{
    static const bad_case_t cases[] = {
        {"--max-body", "12Q", "--max-body: '12Q' is not a size"},
        {"--max-body", "10", "out of range (1K to 1024M)"},
        {"--max-connections", "0", "out of range"},
        {"--max-connections", "-5", "is not a whole number"},
        {"--idle-timeout", "5 s", "is not a duration"},
        {"--db-pool", "99999999999999999999999", "is not a whole number"},
        {"--log-level", "loud", "is not debug, info, warn or error"},
        {"--listen", "", "must not be empty"},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        char flag[64], value[64];
        snprintf(flag, sizeof(flag), "%s", cases[i].flag);
        snprintf(value, sizeof(value), "%s", cases[i].value);
        char *argv[] = {flag, value};
        char err[256] = "";
        gb_config_t cfg;
        gb_config_init(&cfg);
        int rc = load(&cfg, 2, argv, err, sizeof(err));
        if (rc != GB_EINVAL || strstr(err, cases[i].expect) == NULL) {
            fail_msg("case %zu (%s %s): rc=%d err='%s'", i, cases[i].flag, cases[i].value, rc, err);
        }
        gb_config_dispose(&cfg);
    }
}

static void test_bad_environment_names_the_variable(void **state)
{
    static const char *const env[] = {"GLOVEBOX_DB_POOL", "500", NULL};
    char err[256] = "";
    gb_config_t cfg;
    fake_env = env;
    gb_config_init(&cfg);
    assert_int_equal(load(&cfg, 0, NULL, err, sizeof(err)), GB_EINVAL);
    assert_non_null(strstr(err, "GLOVEBOX_DB_POOL"));
    gb_config_dispose(&cfg);
    fake_env = NULL;
}

static void test_missing_value_is_an_error(void **state)
{
    char *argv[] = {"--listen"};
    char err[256] = "";
    gb_config_t cfg;
    gb_config_init(&cfg);
    assert_int_equal(load(&cfg, 1, argv, err, sizeof(err)), GB_EINVAL);
    assert_string_equal(err, "--listen needs a value");
    gb_config_dispose(&cfg);
}

static void test_help_lists_every_setting(void **state)
{
    gb_buf_t b;
    gb_buf_init(&b);
    gb_config_write_help(&b);
    const char *must[] = {
        "--listen",       "GLOVEBOX_LISTEN",  "--database-url", "GLOVEBOX_DATABASE_URL",
        "--web-dir",      "GLOVEBOX_WEB_DIR", "--max-body",     "--max-connections",
        "--idle-timeout", "--log-level",      "range 1K..1024M"};
    for (size_t i = 0; i < GB_ARRAY_LEN(must); i++) {
        if (strstr(b.data, must[i]) == NULL) {
            fail_msg("help lacks %s", must[i]);
        }
    }
    gb_buf_reset(&b);
    gb_config_write_markdown(&b);
    assert_non_null(strstr(b.data, "| `--listen` | `GLOVEBOX_LISTEN` | `127.0.0.1:8080` |"));
    gb_buf_dispose(&b);
}

static void test_readme_settings_table_matches_the_code(void **state)
{
    char path[1024];
    gb_buf_t want, readme;
    char chunk[4096];
    size_t n;

    snprintf(path, sizeof(path), "%s/README.md", GB_SOURCE_DIR);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    gb_buf_init(&readme);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        gb_buf_append(&readme, chunk, n);
    }
    fclose(f);
    gb_buf_init(&want);
    gb_config_write_markdown(&want);
    if (strstr(readme.data, want.data) == NULL) {
        fail_msg("README.md's settings table differs from the code; expected:\n%s", want.data);
    }
    gb_buf_dispose(&want);
    gb_buf_dispose(&readme);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_match_the_contract),
        cmocka_unit_test(test_flags_override_environment),
        cmocka_unit_test(test_units_are_parsed),
        cmocka_unit_test(test_bad_values_are_refused_with_a_clear_message),
        cmocka_unit_test(test_bad_environment_names_the_variable),
        cmocka_unit_test(test_missing_value_is_an_error),
        cmocka_unit_test(test_help_lists_every_setting),
        cmocka_unit_test(test_readme_settings_table_matches_the_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
