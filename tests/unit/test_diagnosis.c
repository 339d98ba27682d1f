/* test_diagnosis: the diagnosis and warning catalogues, HRESULT parsing, the diagnosis rules
 * one by one, and coverage: every catalogue code has a scenario in both forms (stage messages,
 * Windows events) whose outcome carries that code. */
#include "domain/internal.h"
#include "test_domain_support.h"

static const char *const contract_diags[] = {
    "tpm_attestation",     "device_object_missing", "multiple_mdm",
    "profile_unavailable", "no_wired_network",      "app_install_failed",
    "certificate_failed",  "esp_timeout",           "unknown",
};

static const char *const contract_warnings[] = {
    "component_update_error", "hybrid_join_unsupported",
    "virtual_machine",        "tpm_not_2_0",
    "not_imported",           "out_of_order",
    "user_flow_too_soon",     "reseal_expired",
};

static void test_diagnosis_catalogue_is_complete(void **state)
{
    GB_UNUSED(state);
    assert_int_equal(GB_ARRAY_LEN(contract_diags), GB_DIAG_COUNT - 1);
    assert_null(gb_diag_info(GB_DIAG_NONE));
    assert_null(gb_diag_info(GB_DIAG_COUNT));
    for (size_t i = 0; i < GB_ARRAY_LEN(contract_diags); i++) {
        gb_diag_code_t code;
        assert_true(gb_diag_parse(gb_str_from_cstr(contract_diags[i]), &code));
        const gb_diag_info_t *d = gb_diag_info(code);
        assert_non_null(d);
        assert_int_equal(d->code, code);
        assert_string_equal(d->id, contract_diags[i]);
        assert_string_equal(gb_diag_id(code), contract_diags[i]);
        assert_true(strlen(d->summary) > 20 && strlen(d->remedy) > 20 && strlen(d->signal) > 10);
        /* One line each. */
        assert_null(strchr(d->summary, '\n'));
        assert_null(strchr(d->remedy, '\n'));
        for (size_t e = 0; e < d->n_events; e++) {
            gb_wchan_t ch = gb_wchan_parse(gb_str_from_cstr(d->events[e].channel));
            assert_int_not_equal(ch, GB_WCHAN_UNKNOWN);
            assert_string_equal(gb_wchan_name(ch), d->events[e].channel);
        }
    }
    gb_diag_code_t code;
    assert_false(gb_diag_parse(GB_STR_LIT("tpm"), &code));
    assert_false(gb_diag_parse(GB_STR_LIT(""), &code));
}

static void test_diagnosis_warning_catalogue_is_complete(void **state)
{
    GB_UNUSED(state);
    assert_int_equal(GB_ARRAY_LEN(contract_warnings), GB_WARN_COUNT);
    for (size_t i = 0; i < GB_ARRAY_LEN(contract_warnings); i++) {
        gb_warn_t w;
        assert_true(gb_warn_parse(gb_str_from_cstr(contract_warnings[i]), &w));
        assert_int_equal(w, i);
        const gb_warn_info_t *info = gb_warn_info(w);
        assert_non_null(info);
        assert_string_equal(info->id, contract_warnings[i]);
        assert_true(strlen(info->summary) > 20 && strlen(info->remedy) > 10);
    }
    assert_null(gb_warn_info(GB_WARN_COUNT));
    assert_string_equal(gb_warn_id(GB_WARN_COUNT), "");
}

static void test_diagnosis_hresult_any_case_with_or_without_0x(void **state)
{
    GB_UNUSED(state);
    static const struct {
        const char *in;
        bool ok;
        uint32_t hr;
    } cases[] = {
        {"0x800705B4", true, 0x800705B4u},
        {"0x800705b4", true, 0x800705B4u},
        {"0X800705B4", true, 0x800705B4u},
        {"800705b4", true, 0x800705B4u},
        {"0x0", true, 0},
        {"0", true, 0},
        {"0x801c03f3", true, 0x801C03F3u},
        {"81036501", true, 0x81036501u},
        {"FFFFFFFF", true, 0xFFFFFFFFu},
        {"", false, 0},
        {"0x", false, 0},
        {"0x123456789", false, 0},
        {"123456789", false, 0},
        {"0x80070g05", false, 0},
        {"-0x1", false, 0},
        {" 0x1", false, 0},
        {"0x1 ", false, 0},
        {"x1", false, 0},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        uint32_t hr = 12345;
        bool ok = gb_hresult_parse(gb_str_from_cstr(cases[i].in), &hr);
        if (ok != cases[i].ok) {
            print_error("hresult \"%s\": expected %s\n", cases[i].in, cases[i].ok ? "ok" : "error");
            fail();
        }
        if (ok) {
            assert_int_equal(hr, cases[i].hr);
        }
    }
    char out[11];
    gb_hresult_format(0x800705B4u, out);
    assert_string_equal(out, "0x800705B4");
    gb_hresult_format(0, out);
    assert_string_equal(out, "0x00000000");
}

#define NO_HR false, 0
#define HR(x) true, x

/* Each rule of catalogue.c, in its order, with a case that just reaches it. */
static void test_diagnosis_rules(void **state)
{
    GB_UNUSED(state);
    static const struct {
        const char *what;
        gb_stage_t stage;
        int has_hr;
        uint32_t hr;
        uint32_t evidence;
        uint32_t ev_hr; /* 0: none */
        gb_medium_t medium;
        gb_tri_t vm, att;
        int below2;
        int run_min; /* -1: unknown */
        gb_diag_code_t code;
        int want_has_hr;
        uint32_t want_hr;
    } cases[] = {
        {"object missing by HRESULT, any stage", GB_STAGE_REGISTERING_MDM, HR(0x801C03F3u), 0, 0,
         GB_MEDIUM_ETHERNET, 0, 0, false, -1, GB_DIAG_DEVICE_OBJECT_MISSING, HR(0x801C03F3u)},
        {"object missing by event 204/180, no HRESULT", GB_STAGE_JOINING_NETWORK, NO_HR,
         GB_EV_DEVICE_NOT_FOUND, 0, GB_MEDIUM_ETHERNET, 0, 0, false, -1,
         GB_DIAG_DEVICE_OBJECT_MISSING, HR(0x801C03F3u)},
        {"multiple MDM by HRESULT", GB_STAGE_REGISTERING_MDM, HR(0x81036501u), 0, 0,
         GB_MEDIUM_ETHERNET, 0, 0, false, -1, GB_DIAG_MULTIPLE_MDM, HR(0x81036501u)},
        {"multiple MDM by event 115", GB_STAGE_REGISTERING_MDM, NO_HR, GB_EV_NO_MDM, 0,
         GB_MEDIUM_ETHERNET, 0, 0, false, -1, GB_DIAG_MULTIPLE_MDM, HR(0x81036501u)},
        {"profile events beat a Wi-Fi link", GB_STAGE_PROFILE_DOWNLOAD, NO_HR, GB_EV_PROFILE, 0,
         GB_MEDIUM_WIFI, 0, 0, false, -1, GB_DIAG_PROFILE_UNAVAILABLE, NO_HR},
        {"TPM events anywhere", GB_STAGE_JOINING_NETWORK, HR(0x80070005u), GB_EV_TPM_FAILED, 0,
         GB_MEDIUM_ETHERNET, 0, 0, false, -1, GB_DIAG_TPM_ATTESTATION, HR(0x80070005u)},
        {"timeout at securing hardware", GB_STAGE_SECURING_HARDWARE, HR(0x800705B4u), 0, 0,
         GB_MEDIUM_ETHERNET, 0, 0, false, -1, GB_DIAG_TPM_ATTESTATION, HR(0x800705B4u)},
        {"509 and a failure at securing hardware", GB_STAGE_SECURING_HARDWARE, NO_HR,
         GB_EV_TPM_REQUIRED, 0, GB_MEDIUM_ETHERNET, 0, 0, false, -1, GB_DIAG_TPM_ATTESTATION,
         HR(0x800705B4u)},
        {"a VM failing at securing hardware", GB_STAGE_SECURING_HARDWARE, HR(0x80004005u), 0, 0,
         GB_MEDIUM_ETHERNET, GB_TRI_TRUE, 0, false, -1, GB_DIAG_TPM_ATTESTATION, HR(0x80004005u)},
        {"no attestation", GB_STAGE_SECURING_HARDWARE, NO_HR, 0, 0, GB_MEDIUM_ETHERNET, 0,
         GB_TRI_FALSE, false, -1, GB_DIAG_TPM_ATTESTATION, HR(0x800705B4u)},
        {"TPM 1.2", GB_STAGE_SECURING_HARDWARE, NO_HR, 0, 0, GB_MEDIUM_ETHERNET, 0, 0, true, -1,
         GB_DIAG_TPM_ATTESTATION, HR(0x800705B4u)},
        {"securing hardware with nothing to blame", GB_STAGE_SECURING_HARDWARE, HR(0x80004005u), 0,
         0, GB_MEDIUM_ETHERNET, GB_TRI_FALSE, GB_TRI_TRUE, false, -1, GB_DIAG_UNKNOWN,
         HR(0x80004005u)},
        {"the timeout code elsewhere is not TPM", GB_STAGE_JOINING_NETWORK, HR(0x800705B4u), 0, 0,
         GB_MEDIUM_ETHERNET, 0, 0, false, -1, GB_DIAG_UNKNOWN, HR(0x800705B4u)},
        {"Wi-Fi at the provisioning menu", GB_STAGE_ENTERPRISE_PROVISIONING, NO_HR, 0, 0,
         GB_MEDIUM_WIFI, 0, 0, false, -1, GB_DIAG_NO_WIRED_NETWORK, NO_HR},
        {"network unreachable at landing", GB_STAGE_LANDING, HR(0x800704CFu), 0, 0,
         GB_MEDIUM_UNKNOWN, 0, 0, false, -1, GB_DIAG_NO_WIRED_NETWORK, HR(0x800704CFu)},
        {"name not resolved at profile download", GB_STAGE_PROFILE_DOWNLOAD, HR(0x80072EE7u), 0, 0,
         GB_MEDIUM_UNKNOWN, 0, 0, false, -1, GB_DIAG_NO_WIRED_NETWORK, HR(0x80072EE7u)},
        {"Wi-Fi later on is no cable problem", GB_STAGE_DEVICE_SETUP, HR(0x80004005u), 0, 0,
         GB_MEDIUM_WIFI, 0, 0, false, 10, GB_DIAG_UNKNOWN, HR(0x80004005u)},
        {"profile download on Ethernet", GB_STAGE_PROFILE_DOWNLOAD, HR(0x80180014u), 0, 0,
         GB_MEDIUM_ETHERNET, 0, 0, false, -1, GB_DIAG_PROFILE_UNAVAILABLE, HR(0x80180014u)},
        {"timeout code in device setup", GB_STAGE_DEVICE_SETUP, HR(0x800705B4u), GB_EV_APP_FAILED,
         0x80070643u, GB_MEDIUM_ETHERNET, 0, 0, false, 12, GB_DIAG_ESP_TIMEOUT, HR(0x800705B4u)},
        {"failed app, code from the app", GB_STAGE_DEVICE_SETUP, NO_HR, GB_EV_APP_FAILED,
         0x80070643u, GB_MEDIUM_ETHERNET, 0, 0, false, 12, GB_DIAG_APP_INSTALL_FAILED,
         HR(0x80070643u)},
        {"failed app in account setup", GB_STAGE_ACCOUNT_SETUP, HR(0x80070643u), GB_EV_APP_FAILED,
         0, GB_MEDIUM_ETHERNET, 0, 0, false, 5, GB_DIAG_APP_INSTALL_FAILED, HR(0x80070643u)},
        {"certificate code", GB_STAGE_DEVICE_SETUP, HR(0x800B0109u), 0, 0, GB_MEDIUM_ETHERNET, 0, 0,
         false, 12, GB_DIAG_CERTIFICATE_FAILED, HR(0x800B0109u)},
        {"certificate event, code from it", GB_STAGE_DEVICE_SETUP, NO_HR, GB_EV_CERT_FAILED,
         0x80094800u, GB_MEDIUM_ETHERNET, 0, 0, false, 12, GB_DIAG_CERTIFICATE_FAILED,
         HR(0x80094800u)},
        {"ran past the timeout", GB_STAGE_DEVICE_SETUP, NO_HR, 0, 0, GB_MEDIUM_ETHERNET, 0, 0,
         false, 60, GB_DIAG_ESP_TIMEOUT, HR(0x800705B4u)},
        {"just under the timeout", GB_STAGE_DEVICE_SETUP, NO_HR, 0, 0, GB_MEDIUM_ETHERNET, 0, 0,
         false, 59, GB_DIAG_UNKNOWN, NO_HR},
        {"unknown keeps its code", GB_STAGE_PREPARING_MDM, HR(0x87D1041Cu), 0, 0,
         GB_MEDIUM_ETHERNET, 0, 0, false, -1, GB_DIAG_UNKNOWN, HR(0x87D1041Cu)},
        {"red with nothing running", GB_STAGE_NONE, NO_HR, 0, 0, GB_MEDIUM_UNKNOWN, 0, 0, false, -1,
         GB_DIAG_UNKNOWN, NO_HR},
        {"an app's code is not a TPM code", GB_STAGE_SECURING_HARDWARE, NO_HR,
         GB_EV_TPM_REQUIRED | GB_EV_APP_FAILED, 0x80070643u, GB_MEDIUM_ETHERNET, 0, 0, false, -1,
         GB_DIAG_TPM_ATTESTATION, HR(0x800705B4u)},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        gb_domain__diag_input_t in = {
            .stage = cases[i].stage,
            .has_hresult = cases[i].has_hr != 0,
            .hresult = cases[i].hr,
            .evidence = cases[i].evidence,
            .has_evidence_hresult = cases[i].ev_hr != 0,
            .evidence_hresult = cases[i].ev_hr,
            .medium = cases[i].medium,
            .virtual_machine = cases[i].vm,
            .tpm_attestation = cases[i].att,
            .tpm_below_2 = cases[i].below2 != 0,
            .run_ms = cases[i].run_min < 0 ? -1 : (int64_t)cases[i].run_min * 60000,
            .esp_timeout_ms = 60LL * 60000,
        };
        gb_diagnosis_t d;
        gb_domain__diagnose(&in, &d);
        if (d.code != cases[i].code || d.has_hresult != (cases[i].want_has_hr != 0) ||
            (d.has_hresult && d.hresult != cases[i].want_hr) || d.stage != cases[i].stage) {
            print_error("rule case \"%s\": got %s has_hr=%d hr=0x%08X\n", cases[i].what,
                        gb_diag_id(d.code), d.has_hresult, d.hresult);
            fail();
        }
    }
}

static void test_diagnosis_helpers(void **state)
{
    GB_UNUSED(state);
    assert_true(gb_domain__tpm_below_2("1.2"));
    assert_true(gb_domain__tpm_below_2(""));
    assert_true(gb_domain__tpm_below_2("none"));
    assert_false(gb_domain__tpm_below_2("2.0"));
    assert_false(gb_domain__tpm_below_2("2.0, 0, 1.38"));
    assert_false(gb_domain__tpm_below_2(NULL));
    assert_false(gb_domain__tpm_below_2("unknown"));
    assert_true(gb_domain__is_cert_hresult(0x80094800u));
    assert_true(gb_domain__is_cert_hresult(0x800B0109u));
    assert_true(gb_domain__is_cert_hresult(0x80092013u));
    assert_false(gb_domain__is_cert_hresult(0x80070643u));
    assert_true(gb_domain__is_network_hresult(0x800704CFu));
    assert_false(gb_domain__is_network_hresult(0x800705B4u));
}

static bool has_code(const char *list, const char *code)
{
    size_t n = strlen(code);
    for (const char *p = list; *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncmp(p, code, n) == 0) {
            return true;
        }
        p += len + (comma != NULL);
    }
    return false;
}

static bool outcome_has(const gb_dev_t *dev, const char *code, bool diag)
{
    if (diag) {
        const gb_diagnosis_t *d = gb_dev_diagnosis(dev);
        return d != NULL && strcmp(gb_diag_id(d->code), code) == 0;
    }
    gb_warn_t w;
    assert_true(gb_warn_parse(gb_str_from_cstr(code), &w));
    return (dev->warnings | gb_dev_warnings(dev, GB_TIME_NONE)) & GB_WARN_BIT(w);
}

/* Every catalogue code has a scenario in both forms, and both forms end with that code. */
static void test_diagnosis_every_code_has_a_scenario_in_both_forms(void **state)
{
    GB_UNUSED(state);
    th_row_t *rows;
    size_t n = th_load_index(&rows);
    for (int pass = 0; pass < 2; pass++) {
        bool diag = pass == 0;
        size_t count = diag ? GB_ARRAY_LEN(contract_diags) : GB_ARRAY_LEN(contract_warnings);
        for (size_t c = 0; c < count; c++) {
            const char *code = diag ? contract_diags[c] : contract_warnings[c];
            size_t found = 0;
            for (size_t r = 0; r < n; r++) {
                if (!has_code(rows[r].codes, code) || rows[r].event_file[0] == '\0') {
                    continue;
                }
                gb_dev_t a, b;
                th_run_file(rows[r].stage_file, &a, false);
                th_run_file(rows[r].event_file, &b, false);
                if (!outcome_has(&a, code, diag) || !outcome_has(&b, code, diag)) {
                    print_error("scenario %s does not end with %s in both forms\n", rows[r].name,
                                code);
                    fail();
                }
                gb_dev_dispose(&a);
                gb_dev_dispose(&b);
                found++;
            }
            if (found == 0) {
                print_error("no two-form scenario covers %s\n", code);
                fail();
            }
        }
    }
    free(rows);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_diagnosis_catalogue_is_complete),
        cmocka_unit_test(test_diagnosis_warning_catalogue_is_complete),
        cmocka_unit_test(test_diagnosis_hresult_any_case_with_or_without_0x),
        cmocka_unit_test(test_diagnosis_rules),
        cmocka_unit_test(test_diagnosis_helpers),
        cmocka_unit_test(test_diagnosis_every_code_has_a_scenario_in_both_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
