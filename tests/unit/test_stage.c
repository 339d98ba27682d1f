/* test_stage: the stage catalogue and the protocol's small enumerations: contract ids in flow
 * order, flows, phases, names for people, and exact parsing. */
#include "test_domain_support.h"

static const char *const contract_stages[] = {
    "oobe",
    "enterprise_provisioning",
    "profile_download",
    "zdp_update",
    "component_update",
    "device_rename",
    "landing",
    "securing_hardware",
    "joining_network",
    "registering_mdm",
    "preparing_mdm",
    "device_setup",
    "reseal",
    "user_oobe",
    "user_signin",
    "account_setup",
    "hello_provisioning",
    "desktop",
};

static void test_stage_ids_follow_the_contract_in_order(void **state)
{
    GB_UNUSED(state);
    assert_int_equal(GB_ARRAY_LEN(contract_stages), GB_STAGE_COUNT - 1);
    for (int i = 1; i < GB_STAGE_COUNT; i++) {
        gb_stage_t st;
        assert_string_equal(gb_stage_id((gb_stage_t)i), contract_stages[i - 1]);
        assert_true(gb_stage_parse(gb_str_from_cstr(contract_stages[i - 1]), &st));
        assert_int_equal(st, i);
        assert_true(strlen(gb_stage_name((gb_stage_t)i)) > 0);
    }
    assert_string_equal(gb_stage_id(GB_STAGE_NONE), "");
    assert_string_equal(gb_stage_id(GB_STAGE_COUNT), "");
    assert_string_equal(gb_stage_id((gb_stage_t)-1), "");
}

static void test_stage_parse_is_exact(void **state)
{
    GB_UNUSED(state);
    const char *bad[] = {"", "OOBE", "oobe ", " oobe", "device-setup", "result", "none", "desk"};
    for (size_t i = 0; i < GB_ARRAY_LEN(bad); i++) {
        gb_stage_t st = GB_STAGE_COUNT;
        assert_false(gb_stage_parse(gb_str_from_cstr(bad[i]), &st));
        assert_int_equal(st, GB_STAGE_COUNT);
    }
}

static void test_stage_flows_and_phases(void **state)
{
    GB_UNUSED(state);
    static const struct {
        gb_stage_t first, last;
        gb_flow_t flow;
        gb_phase_t phase;
    } spans[] = {
        {GB_STAGE_OOBE, GB_STAGE_LANDING, GB_FLOW_TECHNICIAN, GB_PHASE_TECHNICIAN_OOBE},
        {GB_STAGE_SECURING_HARDWARE, GB_STAGE_PREPARING_MDM, GB_FLOW_TECHNICIAN,
         GB_PHASE_DEVICE_PREPARATION},
        {GB_STAGE_DEVICE_SETUP, GB_STAGE_DEVICE_SETUP, GB_FLOW_TECHNICIAN, GB_PHASE_DEVICE_SETUP},
        {GB_STAGE_RESEAL, GB_STAGE_RESEAL, GB_FLOW_TECHNICIAN, GB_PHASE_RESEAL},
        {GB_STAGE_USER_OOBE, GB_STAGE_USER_SIGNIN, GB_FLOW_USER, GB_PHASE_USER_OOBE},
        {GB_STAGE_ACCOUNT_SETUP, GB_STAGE_ACCOUNT_SETUP, GB_FLOW_USER, GB_PHASE_ACCOUNT_SETUP},
        {GB_STAGE_HELLO_PROVISIONING, GB_STAGE_DESKTOP, GB_FLOW_USER, GB_PHASE_COMPLETION},
    };
    int covered = 0;
    for (size_t i = 0; i < GB_ARRAY_LEN(spans); i++) {
        for (int s = spans[i].first; s <= (int)spans[i].last; s++) {
            assert_int_equal(gb_stage_flow((gb_stage_t)s), spans[i].flow);
            assert_int_equal(gb_stage_phase((gb_stage_t)s), spans[i].phase);
            covered++;
        }
    }
    assert_int_equal(covered, GB_STAGE_COUNT - 1);
    assert_int_equal(gb_stage_flow(GB_STAGE_NONE), GB_FLOW_NONE);
    assert_int_equal(gb_stage_phase(GB_STAGE_COUNT), GB_PHASE_NONE);

    int esp = 0;
    for (int p = 1; p < GB_PHASE_COUNT; p++) {
        assert_true(strlen(gb_phase_id((gb_phase_t)p)) > 0);
        assert_true(strlen(gb_phase_name((gb_phase_t)p)) > 0);
        esp += gb_phase_is_esp((gb_phase_t)p);
    }
    assert_int_equal(esp, 3);
    assert_true(gb_phase_is_esp(GB_PHASE_DEVICE_PREPARATION));
    assert_true(gb_phase_is_esp(GB_PHASE_DEVICE_SETUP));
    assert_true(gb_phase_is_esp(GB_PHASE_ACCOUNT_SETUP));
    assert_string_equal(gb_phase_name(GB_PHASE_DEVICE_PREPARATION), "Device preparation");
    assert_string_equal(gb_stage_name(GB_STAGE_SECURING_HARDWARE), "Securing your hardware");
}

static void test_stage_small_enums_round_trip(void **state)
{
    GB_UNUSED(state);
    const char *runs[] = {"started", "succeeded", "failed", "skipped"};
    for (size_t i = 0; i < GB_ARRAY_LEN(runs); i++) {
        gb_run_state_t s;
        assert_true(gb_run_state_parse(gb_str_from_cstr(runs[i]), &s));
        assert_string_equal(gb_run_state_id(s), runs[i]);
    }
    const char *types[] = {"hello", "stage", "app", "download", "winevent", "result", "heartbeat"};
    assert_int_equal(GB_ARRAY_LEN(types), GB_MSG_TYPE_COUNT);
    for (size_t i = 0; i < GB_ARRAY_LEN(types); i++) {
        gb_msg_type_t t;
        assert_true(gb_msg_type_parse(gb_str_from_cstr(types[i]), &t));
        assert_string_equal(gb_msg_type_id(t), types[i]);
    }
    const char *apps[] = {"downloading", "installing", "installed", "failed"};
    for (size_t i = 0; i < GB_ARRAY_LEN(apps); i++) {
        gb_app_state_t a;
        assert_true(gb_app_state_parse(gb_str_from_cstr(apps[i]), &a));
        assert_string_equal(gb_app_state_id(a), apps[i]);
    }
    const char *statuses[] = {"registered", "provisioning", "green",    "red",
                              "resealed",   "handover",     "delivered"};
    assert_int_equal(GB_ARRAY_LEN(statuses), GB_DEV_STATUS_COUNT);
    for (size_t i = 0; i < GB_ARRAY_LEN(statuses); i++) {
        gb_dev_status_t s;
        assert_true(gb_dev_status_parse(gb_str_from_cstr(statuses[i]), &s));
        assert_int_equal(s, i);
        assert_string_equal(gb_dev_status_id(s), statuses[i]);
    }
    gb_screen_t sc;
    assert_true(gb_screen_parse(GB_STR_LIT("green"), &sc));
    assert_int_equal(sc, GB_SCREEN_GREEN);
    assert_true(gb_screen_parse(GB_STR_LIT("red"), &sc));
    assert_false(gb_screen_parse(GB_STR_LIT("Red"), &sc));
    assert_false(gb_screen_parse(GB_STR_LIT("blue"), &sc));
    gb_run_state_t rs;
    assert_false(gb_run_state_parse(GB_STR_LIT("done"), &rs));
    gb_msg_type_t mt;
    assert_false(gb_msg_type_parse(GB_STR_LIT("Hello"), &mt));
    gb_app_state_t as;
    assert_false(gb_app_state_parse(GB_STR_LIT(""), &as));
}

static void test_stage_medium_spellings(void **state)
{
    GB_UNUSED(state);
    assert_int_equal(gb_medium_parse(GB_STR_LIT("ethernet")), GB_MEDIUM_ETHERNET);
    assert_int_equal(gb_medium_parse(GB_STR_LIT("Ethernet")), GB_MEDIUM_ETHERNET);
    assert_int_equal(gb_medium_parse(GB_STR_LIT("wired")), GB_MEDIUM_ETHERNET);
    assert_int_equal(gb_medium_parse(GB_STR_LIT("wifi")), GB_MEDIUM_WIFI);
    assert_int_equal(gb_medium_parse(GB_STR_LIT("Wi-Fi")), GB_MEDIUM_WIFI);
    assert_int_equal(gb_medium_parse(GB_STR_LIT("cellular")), GB_MEDIUM_CELLULAR);
    assert_int_equal(gb_medium_parse(GB_STR_LIT("thunderbolt")), GB_MEDIUM_OTHER);
    assert_int_equal(gb_medium_parse(GB_STR_LIT("")), GB_MEDIUM_UNKNOWN);
    assert_string_equal(gb_medium_id(GB_MEDIUM_ETHERNET), "ethernet");
    assert_string_equal(gb_medium_id(GB_MEDIUM_OTHER), "other");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage_ids_follow_the_contract_in_order),
        cmocka_unit_test(test_stage_parse_is_exact),
        cmocka_unit_test(test_stage_flows_and_phases),
        cmocka_unit_test(test_stage_small_enums_round_trip),
        cmocka_unit_test(test_stage_medium_spellings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
