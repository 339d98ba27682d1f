/* test_profile: the profile rules of domain/profile.c: device-name templates as Windows applies
 * them (characters, macros, the 15-character limit, %RAND:n% bounds, names that could be all
 * digits), tenant domains, group tags, assigned users, profile names, the whole-profile check
 * naming the field at fault, and group-tag matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "domain/domain.h"

static bool template_ok(const char *t, gb_name_template_t *out)
{
    char why[160] = "";
    bool ok = gb_name_template_check(t, out, why, sizeof(why));
    /* A refusal always says why; an acceptance says nothing. */
    assert_true(ok ? why[0] == '\0' : why[0] != '\0');
    return ok;
}

static void assert_template_refused(const char *t, const char *why_part)
{
    char why[160] = "";
    if (gb_name_template_check(t, NULL, why, sizeof(why))) {
        fail_msg("template \"%s\" accepted, want a refusal", t);
    }
    if (strstr(why, why_part) == NULL) {
        fail_msg("template \"%s\": reason \"%s\" lacks \"%s\"", t, why, why_part);
    }
}

static void test_template_valid_examples(void **state)
{
    static const char *const ok[] = {
        "CONTOSO-%SERIAL%", "TUI-%RAND:5%", "Contoso-%RAND:7%",     "%SERIAL%-HR",
        "K-%RAND:13%",      "a%RAND:14%",   "HR-%SERIAL%-%RAND:2%", "-%SERIAL%",
        "LAB1%RAND:05%",    "X%SERIAL%",
    };
    gb_name_template_t t;
    (void)state;
    for (size_t i = 0; i < GB_ARRAY_LEN(ok); i++) {
        if (!template_ok(ok[i], &t)) {
            fail_msg("template \"%s\" refused", ok[i]);
        }
    }
}

static void test_template_counts_what_it_makes(void **state)
{
    gb_name_template_t t;
    (void)state;
    assert_true(template_ok("CONTOSO-%SERIAL%", &t));
    assert_int_equal(t.fixed, 8);
    assert_int_equal(t.rand_digits, 0);
    assert_true(t.serial);
    assert_int_equal(t.serial_room, 7); /* Windows keeps 7 characters of the serial */

    assert_true(template_ok("TUI-%RAND:5%", &t));
    assert_int_equal(t.fixed, 4);
    assert_int_equal(t.rand_digits, 5);
    assert_false(t.serial);

    assert_true(template_ok("HR-%SERIAL%-%RAND:2%", &t));
    assert_int_equal(t.fixed, 4);
    assert_int_equal(t.rand_digits, 2);
    assert_int_equal(t.serial_room, 9);
}

static void test_template_fifteen_character_limit(void **state)
{
    (void)state;
    /* Exactly 15: 10 fixed + 5 random digits. */
    assert_true(template_ok("ABCDEFGHIJ%RAND:5%", NULL));
    assert_template_refused("ABCDEFGHIJK%RAND:5%", "16 characters");
    /* The exam's classic: 13 fixed + 5 digits = 18. */
    assert_template_refused("TUISOLUTIONS-%RAND:5%", "18 characters");
    /* With %SERIAL%, fixed and random parts must leave at least one of its characters. */
    assert_true(template_ok("ABCDEFGHIJKLMN%SERIAL%", NULL)); /* 14 + 1 */
    assert_template_refused("ABCDEFGHIJKLMNO%SERIAL%", "no room for the serial");
    assert_true(template_ok("ABCDEFGHI%SERIAL%%RAND:5%", NULL)); /* 9 + 5 + 1 */
    assert_template_refused("ABCDEFGHIJ%SERIAL%%RAND:5%", "no room for the serial");
}

static void test_template_rand_bounds(void **state)
{
    (void)state;
    assert_true(template_ok("A%RAND:1%", NULL));
    assert_true(template_ok("A%RAND:14%", NULL));
    assert_template_refused("A%RAND:15%", "16 characters"); /* n is fine, the name is not */
    assert_template_refused("A%RAND:0%", "from 1 to 15");
    assert_template_refused("A%RAND:16%", "from 1 to 15");
    assert_template_refused("A%RAND:100%", "from 1 to 15");
    assert_template_refused("A%RAND:%", "from 1 to 15");
    assert_template_refused("A%RAND:x%", "from 1 to 15");
    assert_template_refused("A%RAND:5", "from 1 to 15");
    assert_template_refused("A%RAND:-1%", "from 1 to 15");
    assert_template_refused("A-%RAND:3%-%RAND:3%", "only once");
    assert_template_refused("A-%SERIAL%%SERIAL%", "only once");
}

static void test_template_all_digit_names_refused(void **state)
{
    (void)state;
    /* Windows refuses names made of digits only; a serial or random digits may be just that. */
    assert_template_refused("%RAND:8%", "digits only");
    assert_template_refused("%SERIAL%", "digits only");
    assert_template_refused("2024%RAND:4%", "digits only");
    assert_template_refused("12%SERIAL%34", "digits only");
    assert_true(template_ok("2024-%RAND:4%", NULL)); /* a hyphen is not a digit */
    assert_true(template_ok("2024X%SERIAL%", NULL));
}

static void test_template_bad_characters(void **state)
{
    static const char *const bad[] = {
        "CON TOSO-%SERIAL%", "CON_%RAND:4%",
        "CON.%RAND:4%",      "ÉCOLE-%RAND:4%",
        "A\t%RAND:4%",       "A/%RAND:4%",
        "A%%RAND:4%",        "A%serial%",
        "A%Serial%",         "A%rand:4%",
        "A%DATE%",           "A%RAND:4%%",
        "A%SERIAL",          "%",
        "A-%RAND:4% ",
    };
    (void)state;
    for (size_t i = 0; i < GB_ARRAY_LEN(bad); i++) {
        char why[160] = "";
        if (gb_name_template_check(bad[i], NULL, why, sizeof(why))) {
            fail_msg("template \"%s\" accepted", bad[i]);
        }
        assert_true(why[0] != '\0');
    }
    assert_template_refused("", "empty");
    /* Without a macro every device of the profile gets the same name. */
    assert_template_refused("KIOSK-01", "same name");
}

static void test_tenant_domains(void **state)
{
    static const char *const ok[] = {"contoso.com",  "contoso.onmicrosoft.com",
                                     "a.b",          "xn--bcher-kva.example",
                                     "my-org.co.uk", "Contoso.COM"};
    static const char *const bad[] = {"",
                                      "contoso",
                                      "contoso.",
                                      ".contoso.com",
                                      "contoso..com",
                                      "-contoso.com",
                                      "contoso-.com",
                                      "cont oso.com",
                                      "contoso.com/x",
                                      "user@contoso.com",
                                      "10.0.0.1",
                                      "bücher.example",
                                      "contoso_x.com"};
    char why[160];
    char label[80];
    char longname[400];
    (void)state;
    for (size_t i = 0; i < GB_ARRAY_LEN(ok); i++) {
        if (!gb_tenant_domain_check(ok[i], why, sizeof(why))) {
            fail_msg("domain \"%s\" refused: %s", ok[i], why);
        }
    }
    for (size_t i = 0; i < GB_ARRAY_LEN(bad); i++) {
        if (gb_tenant_domain_check(bad[i], why, sizeof(why))) {
            fail_msg("domain \"%s\" accepted", bad[i]);
        }
    }
    /* Labels of 63 bytes are fine, 64 are not; the whole name stops at 253. */
    memset(label, 'a', 63);
    label[63] = '\0';
    snprintf(longname, sizeof(longname), "%s.com", label);
    assert_true(gb_tenant_domain_check(longname, why, sizeof(why)));
    snprintf(longname, sizeof(longname), "%sa.com", label);
    assert_false(gb_tenant_domain_check(longname, why, sizeof(why)));
    snprintf(longname, sizeof(longname), "%s.%s.%s.%s", label, label, label, label);
    longname[253] = '\0'; /* 4 * 63 + 3 = 255: cut to 253, ending in a 61-byte label */
    assert_true(gb_tenant_domain_check(longname, why, sizeof(why)));
    snprintf(longname, sizeof(longname), "%s.%s.%s.%s", label, label, label, label);
    longname[254] = '\0';
    assert_false(gb_tenant_domain_check(longname, why, sizeof(why)));
}

static void test_group_tags(void **state)
{
    char why[160];
    char tag[600];
    (void)state;
    assert_true(gb_group_tag_check("Sales", why, sizeof(why)));
    assert_true(gb_group_tag_check("Kiosk devices (HQ) #2", why, sizeof(why)));
    assert_true(gb_group_tag_check("Bücher-Zentrale", why, sizeof(why)));
    assert_true(gb_group_tag_check("a", why, sizeof(why)));
    assert_false(gb_group_tag_check("", why, sizeof(why)));
    assert_false(gb_group_tag_check(" Sales", why, sizeof(why)));
    assert_false(gb_group_tag_check("Sales ", why, sizeof(why)));
    assert_false(gb_group_tag_check("Sales\u00a0", why, sizeof(why)));
    assert_false(gb_group_tag_check("Sa\tles", why, sizeof(why)));
    assert_false(gb_group_tag_check("Sales\n", why, sizeof(why)));
    assert_false(gb_group_tag_check("Sa\x7fles", why, sizeof(why)));
    assert_false(gb_group_tag_check("Sa\xc2\x85les", why, sizeof(why))); /* U+0085 */
    assert_false(gb_group_tag_check("Sa\xffles", why, sizeof(why)));
    assert_false(gb_group_tag_check("Sa\xc0\xafles", why, sizeof(why)));     /* overlong '/' */
    assert_false(gb_group_tag_check("Sa\xed\xa0\x80les", why, sizeof(why))); /* surrogate */
    assert_false(gb_group_tag_check("Sales\xc3", why, sizeof(why)));         /* cut short */
    /* 128 characters, counted as characters: 128 two-byte ones pass, 129 do not. */
    memset(tag, 'x', 128);
    tag[128] = '\0';
    assert_true(gb_group_tag_check(tag, why, sizeof(why)));
    tag[128] = 'x';
    tag[129] = '\0';
    assert_false(gb_group_tag_check(tag, why, sizeof(why)));
    for (size_t i = 0; i < 128; i++) {
        memcpy(tag + 2 * i, "\xc3\xa9", 2);
    }
    tag[256] = '\0';
    assert_true(gb_group_tag_check(tag, why, sizeof(why)));
    memcpy(tag + 256, "\xc3\xa9", 3);
    assert_false(gb_group_tag_check(tag, why, sizeof(why)));
}

static void test_assigned_users(void **state)
{
    static const char *const ok[] = {"alice@contoso.com", "a.b-c_d!#^~'x@contoso.onmicrosoft.com",
                                     "_x_@contoso.com", "A@b.co"};
    static const char *const bad[] = {
        "alice",
        "@contoso.com",
        "alice@",
        "alice@contoso",
        "alice@@x.com",
        "al@ice@contoso.com",
        ".alice@contoso.com",
        "alice.@contoso.com",
        "al..ice@x.com",
        "al ice@contoso.com",
        "al+ice@contoso.com",
        "alice@contoso..com",
        "élise@x.com",
        "al&ice@contoso.com",
    };
    char why[160];
    char upn[200];
    (void)state;
    for (size_t i = 0; i < GB_ARRAY_LEN(ok); i++) {
        if (!gb_assigned_user_check(ok[i], why, sizeof(why))) {
            fail_msg("user \"%s\" refused: %s", ok[i], why);
        }
    }
    for (size_t i = 0; i < GB_ARRAY_LEN(bad); i++) {
        if (gb_assigned_user_check(bad[i], why, sizeof(why))) {
            fail_msg("user \"%s\" accepted", bad[i]);
        }
    }
    /* 64 before the @, 48 after. */
    memset(upn, 'u', 64);
    snprintf(upn + 64, sizeof(upn) - 64, "@%s.com", "dddddddddddddddddddddddddddddddddddddddddddd");
    assert_int_equal(strlen(upn), 64 + 1 + 48);
    assert_true(gb_assigned_user_check(upn, why, sizeof(why)));
    memset(upn, 'u', 65);
    snprintf(upn + 65, sizeof(upn) - 65, "@contoso.com");
    assert_false(gb_assigned_user_check(upn, why, sizeof(why)));
    memset(upn, 'u', 4);
    snprintf(upn + 4, sizeof(upn) - 4, "@%s.com", "ddddddddddddddddddddddddddddddddddddddddddddd");
    assert_false(gb_assigned_user_check(upn, why, sizeof(why))); /* 49 after the @ */
}

static void test_profile_names(void **state)
{
    char why[160];
    char name[80];
    (void)state;
    assert_true(gb_profile_name_check("kiosk", why, sizeof(why)));
    assert_true(gb_profile_name_check("HQ_Sales-2026.v2", why, sizeof(why)));
    assert_true(gb_profile_name_check(".hidden", why, sizeof(why)));
    assert_false(gb_profile_name_check("", why, sizeof(why)));
    assert_false(gb_profile_name_check(".", why, sizeof(why)));
    assert_false(gb_profile_name_check("..", why, sizeof(why)));
    assert_false(gb_profile_name_check("a b", why, sizeof(why)));
    assert_false(gb_profile_name_check("a/b", why, sizeof(why)));
    assert_false(gb_profile_name_check("a%20b", why, sizeof(why)));
    assert_false(gb_profile_name_check("sälj", why, sizeof(why)));
    memset(name, 'n', 64);
    name[64] = '\0';
    assert_true(gb_profile_name_check(name, why, sizeof(why)));
    name[64] = 'n';
    name[65] = '\0';
    assert_false(gb_profile_name_check(name, why, sizeof(why)));
}

static gb_profile_t good_profile(void)
{
    gb_profile_t p = {.name = "sales",
                      .tenant_domain = "contoso.onmicrosoft.com",
                      .join = GB_JOIN_AZURE_AD,
                      .device_name_template = "SLS-%RAND:6%",
                      .group_tag = "Sales",
                      .assigned_user = NULL,
                      .esp_timeout_min = GB_ESP_TIMEOUT_DEFAULT_MIN};
    return p;
}

static void assert_field_refused(const gb_profile_t *p, const char *field)
{
    gb_error_t e;
    gb_error_clear(&e);
    assert_int_equal(gb_profile_validate(p, &e), GB_EINVAL);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.code, "invalid_request");
    assert_string_equal(e.field, field);
    /* The message starts with the field, so it reads on its own. */
    assert_true(strncmp(e.message, field, strlen(field)) == 0);
}

static void test_profile_validate_names_the_field(void **state)
{
    gb_error_t e;
    gb_profile_t p = good_profile();
    (void)state;

    gb_error_clear(&e);
    assert_int_equal(gb_profile_validate(&p, &e), 0);
    assert_false(gb_error_is_set(&e));
    p.device_name_template = NULL; /* no template: Windows keeps its name */
    p.assigned_user = "alice@contoso.com";
    p.join = GB_JOIN_HYBRID;
    p.esp_timeout_min = 1440;
    assert_int_equal(gb_profile_validate(&p, &e), 0);

    p = good_profile();
    p.name = "a b";
    assert_field_refused(&p, "name");
    p = good_profile();
    p.tenant_domain = "contoso";
    assert_field_refused(&p, "tenant_domain");
    p = good_profile();
    p.join = (gb_join_t)7;
    assert_field_refused(&p, "join");
    p = good_profile();
    p.device_name_template = "%RAND:8%";
    assert_field_refused(&p, "device_name_template");
    p = good_profile();
    p.group_tag = "";
    assert_field_refused(&p, "group_tag");
    p = good_profile();
    p.assigned_user = "alice";
    assert_field_refused(&p, "assigned_user");
    p = good_profile();
    p.esp_timeout_min = 0;
    assert_field_refused(&p, "esp_timeout_min");
    p.esp_timeout_min = 1441;
    assert_field_refused(&p, "esp_timeout_min");
    p.esp_timeout_min = -60;
    assert_field_refused(&p, "esp_timeout_min");
}

static void test_join_ids(void **state)
{
    gb_join_t j;
    (void)state;
    assert_string_equal(gb_join_id(GB_JOIN_AZURE_AD), "azure_ad");
    assert_string_equal(gb_join_id(GB_JOIN_HYBRID), "hybrid");
    assert_string_equal(gb_join_id((gb_join_t)9), "");
    assert_true(gb_join_parse(GB_STR_LIT("hybrid"), &j));
    assert_int_equal(j, GB_JOIN_HYBRID);
    assert_true(gb_join_parse(GB_STR_LIT("azure_ad"), &j));
    assert_int_equal(j, GB_JOIN_AZURE_AD);
    assert_false(gb_join_parse(GB_STR_LIT("Hybrid"), &j));
    assert_false(gb_join_parse(GB_STR_LIT("azuread"), &j));
    assert_false(gb_join_parse(GB_STR_LIT(""), &j));
}

static void test_group_tags_match_without_ascii_case(void **state)
{
    char key[32] = "Sales-HQ Ä";
    (void)state;
    assert_true(gb_group_tag_eq("Sales", "sales"));
    assert_true(gb_group_tag_eq("SALES-hq", "sales-HQ"));
    assert_false(gb_group_tag_eq("Sales", "Sales "));
    assert_false(gb_group_tag_eq("Sales", "Sale"));
    assert_false(gb_group_tag_eq("Ä", "ä")); /* only ASCII letters fold, as the database does */
    assert_false(gb_group_tag_eq(NULL, "x"));
    assert_false(gb_group_tag_eq("x", NULL));
    assert_false(gb_group_tag_eq(NULL, NULL));
    gb_group_tag_fold(key);
    assert_string_equal(key, "sales-hq Ä");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_template_valid_examples),
        cmocka_unit_test(test_template_counts_what_it_makes),
        cmocka_unit_test(test_template_fifteen_character_limit),
        cmocka_unit_test(test_template_rand_bounds),
        cmocka_unit_test(test_template_all_digit_names_refused),
        cmocka_unit_test(test_template_bad_characters),
        cmocka_unit_test(test_tenant_domains),
        cmocka_unit_test(test_group_tags),
        cmocka_unit_test(test_assigned_users),
        cmocka_unit_test(test_profile_names),
        cmocka_unit_test(test_profile_validate_names_the_field),
        cmocka_unit_test(test_join_ids),
        cmocka_unit_test(test_group_tags_match_without_ascii_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
