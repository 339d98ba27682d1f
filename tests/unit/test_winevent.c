/* test_winevent: Windows-event translation. Table-driven from tests/data/domain/winevents.jsonl
 * (every event of the domain brief, with the status and stage it meets); the brief's event list
 * is checked against the table; phase and HRESULT parsing; unknown events change nothing; and an
 * agent that sends stage messages and forwards the events too counts nothing twice. */
#include "test_domain_support.h"

static const char *const action_ids[] = {
    [GB_WACT_NONE] = "none",
    [GB_WACT_START] = "start",
    [GB_WACT_SUCCEED] = "succeed",
    [GB_WACT_FAIL] = "fail",
    [GB_WACT_START_SUCCEED] = "start_succeed",
    [GB_WACT_RESULT_GREEN] = "result_green",
    [GB_WACT_RESULT_RED] = "result_red",
    [GB_WACT_EVIDENCE] = "evidence",
};

static const struct {
    const char *id;
    uint32_t bit;
} evidence_ids[] = {
    {"tpm_required", GB_EV_TPM_REQUIRED},
    {"tpm_failed", GB_EV_TPM_FAILED},
    {"device_not_found", GB_EV_DEVICE_NOT_FOUND},
    {"no_mdm", GB_EV_NO_MDM},
    {"profile", GB_EV_PROFILE},
    {"app_failed", GB_EV_APP_FAILED},
    {"cert_failed", GB_EV_CERT_FAILED},
};

static gb_stage_t stage_or_none(json_t *v)
{
    gb_stage_t st = GB_STAGE_NONE;
    if (json_is_string(v)) {
        assert_true(gb_stage_parse(gb_str_from_cstr(json_string_value(v)), &st));
    }
    return st;
}

static void test_winevent_table(void **state)
{
    GB_UNUSED(state);
    size_t len;
    char *text = th_read("domain/winevents.jsonl", &len);
    int lineno = 0, rows = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        lineno++;
        if (line[0] == '#') {
            continue;
        }
        json_error_t jerr;
        json_t *row = json_loads(line, 0, &jerr);
        assert_non_null(row);
        json_t *exp = json_object_get(row, "expect");
        gb_dev_status_t status;
        assert_true(gb_dev_status_parse(
            gb_str_from_cstr(json_string_value(json_object_get(row, "status"))), &status));
        gb_stage_t cur = stage_or_none(json_object_get(row, "stage"));
        const char *channel = json_string_value(json_object_get(row, "channel"));
        const char *message = json_string_value(json_object_get(row, "message"));

        gb_winevent_effect_t e;
        gb_winevent_translate(gb_str_from_cstr(channel),
                              (uint32_t)json_integer_value(json_object_get(row, "event_id")),
                              gb_str_from_cstr(message), status, cur, &e);

        uint32_t want_ev = 0;
        json_t *ev;
        size_t i;
        json_array_foreach(json_object_get(exp, "evidence"), i, ev)
        {
            bool found = false;
            for (size_t k = 0; k < GB_ARRAY_LEN(evidence_ids); k++) {
                if (strcmp(evidence_ids[k].id, json_string_value(ev)) == 0) {
                    want_ev |= evidence_ids[k].bit;
                    found = true;
                }
            }
            assert_true(found);
        }
        const char *want_action = json_string_value(json_object_get(exp, "action"));
        bool ok = e.known == json_is_true(json_object_get(exp, "known")) &&
                  strcmp(action_ids[e.action], want_action) == 0 &&
                  e.stage == stage_or_none(json_object_get(exp, "stage")) &&
                  e.then_start == stage_or_none(json_object_get(exp, "then")) &&
                  e.evidence == want_ev;
        json_t *hr = json_object_get(exp, "hresult");
        if (hr != NULL) {
            uint32_t want;
            assert_true(gb_hresult_parse(gb_str_from_cstr(json_string_value(hr)), &want));
            ok = ok && e.has_hresult && e.hresult == want;
        }
        json_t *phase = json_object_get(exp, "phase");
        if (phase != NULL) {
            ok = ok && strcmp(e.phase, json_string_value(phase)) == 0;
        }
        if (!ok) {
            print_error("winevents.jsonl:%d: got known=%d action=%s stage=%s then=%s "
                        "evidence=0x%x hresult=%s0x%08X phase=%s\n",
                        lineno, e.known, action_ids[e.action], gb_stage_id(e.stage),
                        gb_stage_id(e.then_start), e.evidence, e.has_hresult ? "" : "(none)",
                        e.hresult, e.phase);
            fail();
        }
        json_decref(row);
        rows++;
    }
    assert_true(rows > 50);
    free(text);
}

/* Every event the domain brief names, and the channel it is in. */
static void test_winevent_brief_events_are_all_known(void **state)
{
    GB_UNUSED(state);
    static const struct {
        gb_wchan_t chan;
        uint32_t ids[32];
    } brief[] = {
        {GB_WCHAN_AUTOPILOT,
         {100, 115, 151, 152, 153, 156, 160, 161, 163, 164, 168, 169, 171, 172,
          177, 179, 180, 181, 186, 201, 205, 250, 252, 302, 807, 809, 815, 908}},
        {GB_WCHAN_MANAGEMENT_SERVICE, {509}},
        {GB_WCHAN_USER_DEVICE_REG, {102, 104, 204, 358}},
        {GB_WCHAN_DM_ENTERPRISE, {72, 1905, 1906, 1920, 1922, 1924}},
        {GB_WCHAN_SHELL_CORE, {62404, 62407}},
    };
    size_t len;
    char *table = th_read("domain/winevents.jsonl", &len);
    for (size_t c = 0; c < GB_ARRAY_LEN(brief); c++) {
        for (size_t i = 0; i < 32 && brief[c].ids[i] != 0; i++) {
            const char *channel = gb_wchan_name(brief[c].chan);
            char needle[200];
            snprintf(needle, sizeof(needle), "{\"channel\": \"%s\", \"event_id\": %u,", channel,
                     brief[c].ids[i]);
            if (strstr(table, needle) == NULL) {
                print_error("winevents.jsonl has no row for %s %u\n", channel, brief[c].ids[i]);
                fail();
            }
            /* Known in any state, with any text. */
            gb_winevent_effect_t e;
            gb_winevent_translate(gb_str_from_cstr(channel), brief[c].ids[i], GB_STR_LIT(""),
                                  GB_DEV_PROVISIONING, GB_STAGE_NONE, &e);
            assert_true(e.known);
        }
    }
    free(table);
}

static void test_winevent_find_hresult(void **state)
{
    GB_UNUSED(state);
    static const struct {
        const char *text;
        bool ok;
        uint32_t hr;
    } cases[] = {
        {"failed during device enrollment phase AADEnroll. HRESULT=0x801C03F3", true, 0x801C03F3u},
        {"completed device enrollment AADDiscover. HRESULT 0x0", true, 0},
        {"HRESULT = 0x81036501", true, 0x81036501u},
        {"failed duinrg stage DeviceDiscovery with error 0x81036501", true, 0x81036501u},
        {"Activity 0x1 then HResult Error code: 0x801c03f3.", true, 0x801C03F3u},
        {"Result: (0x80070643).", true, 0x80070643u},
        {"id 10x5 and 0x123456789 and abc0x12 are not codes", false, 0},
        {"no code at all", false, 0},
        {"0x", false, 0},
        {"", false, 0},
        {"trailing 0xdeadbeef", true, 0xDEADBEEFu},
        {"HRESULT: none here, but 0x5 later", true, 5},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        uint32_t hr = 7;
        bool ok = gb_winevent_find_hresult(gb_str_from_cstr(cases[i].text), &hr);
        if (ok != cases[i].ok || (ok && hr != cases[i].hr)) {
            print_error("\"%s\": got %d 0x%08X\n", cases[i].text, ok, hr);
            fail();
        }
    }
}

static void test_winevent_find_phase(void **state)
{
    GB_UNUSED(state);
    static const struct {
        const char *text, *phase;
    } cases[] = {
        {"AutopilotManager began device enrollment phase AADDiscover", "AADDiscover"},
        {"completed device enrollment AADConfigure. HRESULT 0x0", "AADConfigure"},
        {"failed during device enrollment phase AADEnroll. HRESULT=0x801C03F3", "AADEnroll"},
        {"failed duinrg stage DeviceDiscovery with error", "DeviceDiscovery"},
        {"phase MDMEnroll began", "MDMEnroll"},
        {"phase DeviceEnroll began", "DeviceEnroll"},
        {"AAD alone is no phase, nor is deviceDiscovery", ""},
        {"", ""},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        char out[32];
        bool ok = gb_winevent_find_phase(gb_str_from_cstr(cases[i].text), out, sizeof(out));
        assert_int_equal(ok, cases[i].phase[0] != '\0');
        assert_string_equal(out, cases[i].phase);
    }
    char tiny[4];
    assert_false(gb_winevent_find_phase(GB_STR_LIT("phase AADEnroll"), tiny, sizeof(tiny)));
    assert_string_equal(tiny, "");
}

static void test_winevent_channel_names(void **state)
{
    GB_UNUSED(state);
    for (int c = 1; c < GB_WCHAN_COUNT; c++) {
        const char *name = gb_wchan_name((gb_wchan_t)c);
        assert_int_equal(gb_wchan_parse(gb_str_from_cstr(name)), c);
        assert_int_equal(gb_wchan_parse(gb_str_from_cstr(name + strlen("Microsoft-Windows-"))), c);
    }
    assert_int_equal(gb_wchan_parse(GB_STR_LIT("MICROSOFT-WINDOWS-SHELL-CORE/OPERATIONAL")),
                     GB_WCHAN_SHELL_CORE);
    assert_int_equal(gb_wchan_parse(GB_STR_LIT("Shell-Core")), GB_WCHAN_UNKNOWN);
    assert_int_equal(gb_wchan_parse(GB_STR_LIT("")), GB_WCHAN_UNKNOWN);
}

/* Unknown events are kept (counted) and change nothing else. */
static void test_winevent_unknown_events_change_nothing(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    th_run_file("domain/scenarios/tpm_attestation_events.jsonl", &dev, false);
    gb_dev_t before;
    gb_dev_copy(&before, &dev);
    const char *channels[] = {"Application", "Microsoft-Windows-Shell-Core/Operational",
                              "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot"};
    uint32_t ids[] = {1000, 1, 999};
    for (size_t i = 0; i < GB_ARRAY_LEN(ids); i++) {
        gb_msg_t m;
        memset(&m, 0, sizeof(m));
        m.seq = dev.max_seq + 1;
        m.at_ms = dev.last_at_ms;
        m.type = GB_MSG_WINEVENT;
        m.u.winevent.channel = gb_str_from_cstr(channels[i]);
        m.u.winevent.event_id = ids[i];
        m.u.winevent.message = GB_STR_LIT("HRESULT 0x80070005 AADEnroll DeviceSetup Desktop");
        assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
    }
    assert_int_equal(dev.n_applied, before.n_applied + 3);
    assert_int_equal(dev.max_seq, before.max_seq + 3);
    dev.n_applied = before.n_applied;
    dev.max_seq = before.max_seq;
    dev.contig_seq = before.contig_seq;
    char *a = th_snapshot(&before), *b = th_snapshot(&dev);
    assert_string_equal(a, b);
    free(a);
    free(b);
    gb_dev_dispose(&dev);
    gb_dev_dispose(&before);
}

static int cmp_at(const void *pa, const void *pb)
{
    const gb_msg_t *a = pa, *b = pb;
    if (a->at_ms != b->at_ms) {
        return a->at_ms < b->at_ms ? -1 : 1;
    }
    return a->index < b->index ? -1 : a->index > b->index;
}

/* An agent sending stage messages and forwarding the events as well: merged in time order
 * (stage messages first at equal times), the outcome is the stage-message form's. */
static void test_winevent_both_sources_do_not_double_count(void **state)
{
    GB_UNUSED(state);
    th_row_t *rows;
    size_t n = th_load_index(&rows);
    for (size_t r = 0; r < n; r++) {
        /* Merging by time would undo a clock that goes backwards: those rows are left out. */
        if (rows[r].event_file[0] == '\0' || strstr(rows[r].codes, "out_of_order") != NULL) {
            continue;
        }
        th_scenario_t sa, sb;
        th_scenario_load(&sa, rows[r].stage_file);
        th_scenario_load(&sb, rows[r].event_file);
        gb_msg_t *all = calloc(sa.n_steps + sb.n_steps, sizeof(*all));
        size_t k = 0;
        for (size_t i = 0; i < sa.n_steps; i++) {
            if (sa.steps[i].kind == TH_MSG) {
                all[k] = sa.steps[i].msg;
                all[k].index = (uint32_t)k;
                k++;
            }
        }
        for (size_t i = 0; i < sb.n_steps; i++) {
            if (sb.steps[i].kind == TH_MSG && sb.steps[i].msg.type == GB_MSG_WINEVENT) {
                all[k] = sb.steps[i].msg;
                all[k].index = (uint32_t)k;
                k++;
            }
        }
        qsort(all, k, sizeof(*all), cmp_at);
        gb_dev_t a, mixed;
        th_scenario_run(&sa, &a, false);
        th_dev_init(&sa, &mixed);
        for (size_t i = 0; i < k; i++) {
            all[i].seq = i + 1;
            gb_apply_ctx_t ctx = th_ctx(&sa, all[i].at_ms);
            assert_int_equal(gb_dev_apply(&mixed, &ctx, &all[i]), 0);
        }
        th_assert_same_outcome(&a, &mixed, rows[r].name);
        assert_int_equal(a.bytes_total, mixed.bytes_total);
        assert_int_equal(a.n_runs, mixed.n_runs);
        gb_dev_dispose(&a);
        gb_dev_dispose(&mixed);
        free(all);
        th_scenario_free(&sa);
        th_scenario_free(&sb);
    }
    free(rows);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_winevent_table),
        cmocka_unit_test(test_winevent_brief_events_are_all_known),
        cmocka_unit_test(test_winevent_find_hresult),
        cmocka_unit_test(test_winevent_find_phase),
        cmocka_unit_test(test_winevent_channel_names),
        cmocka_unit_test(test_winevent_unknown_events_change_nothing),
        cmocka_unit_test(test_winevent_both_sources_do_not_double_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
