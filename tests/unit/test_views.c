/* test_views: the REST views of a device (list and detail form), the agent's reply, and the
 * state snapshot: every scenario's final state survives encode, decode, encode unchanged, and
 * damaged snapshots are refused without leaking. */
#include "test_domain_support.h"

static json_t *render(const gb_dev_t *dev, bool detail, int64_t now, int64_t stall)
{
    gb_buf_t b;
    gb_proto_view_opts_t opts = {now, stall, 0};
    gb_buf_init(&b);
    if (detail) {
        gb_proto_device_detail_json(dev, &opts, &b);
    } else {
        gb_proto_device_json(dev, &opts, &b);
    }
    json_error_t jerr;
    json_t *v = json_loadb(b.data, b.len, 0, &jerr);
    if (v == NULL) {
        print_error("not JSON (%s): %s\n", jerr.text, b.data);
        fail();
    }
    gb_buf_dispose(&b);
    return v;
}

static void test_views_list_form_has_the_contract_fields(void **state)
{
    GB_UNUSED(state);
    static const char *const contract[] = {
        "serial",   "status",    "stage",         "stage_state",      "attempt",
        "stalled",  "group_tag", "assigned_user", "profile",          "diagnosis",
        "warnings", "last_seen", "durations",     "bytes_downloaded", "mean_mbps",
    };
    gb_dev_t dev;
    th_run_file("domain/scenarios/tpm_attestation_stage.jsonl", &dev, false);
    gb_dev_set_assigned_user(&dev, "ada@contoso.com");
    json_t *v = render(&dev, false, GB_TIME_NONE, 0);
    for (size_t i = 0; i < GB_ARRAY_LEN(contract); i++) {
        if (json_object_get(v, contract[i]) == NULL) {
            print_error("missing %s\n", contract[i]);
            fail();
        }
    }
    assert_null(json_object_get(v, "timeline"));
    assert_string_equal(json_string_value(json_object_get(v, "serial")), "PF3ABC12");
    assert_string_equal(json_string_value(json_object_get(v, "status")), "red");
    assert_string_equal(json_string_value(json_object_get(v, "assigned_user")), "ada@contoso.com");
    assert_true(json_is_integer(json_object_get(v, "attempt")));
    assert_true(json_is_false(json_object_get(v, "stalled")));
    json_t *d = json_object_get(v, "diagnosis");
    const gb_diag_info_t *info = gb_diag_info(GB_DIAG_TPM_ATTESTATION);
    assert_string_equal(json_string_value(json_object_get(d, "code")), "tpm_attestation");
    assert_string_equal(json_string_value(json_object_get(d, "stage")), "securing_hardware");
    assert_string_equal(json_string_value(json_object_get(d, "hresult")), "0x800705B4");
    assert_string_equal(json_string_value(json_object_get(d, "summary")), info->summary);
    assert_string_equal(json_string_value(json_object_get(d, "remedy")), info->remedy);
    json_t *dur = json_object_get(v, "durations");
    assert_int_equal(json_object_size(dur), 4);
    assert_true(json_is_integer(json_object_get(dur, "device_preparation_s")));
    assert_true(json_is_null(json_object_get(dur, "device_setup_s")));
    assert_true(json_is_null(json_object_get(v, "mean_mbps")));
    json_decref(v);
    gb_dev_dispose(&dev);
}

/* Renders the list form with the members that `fields` names (it must parse). */
static json_t *render_fields(const gb_dev_t *dev, const char *fields, gb_buf_t *text)
{
    gb_proto_view_opts_t opts = {GB_TIME_NONE, 0, 0};
    gb_str_t bad = {NULL, 0};
    if (!gb_proto_device_fields_parse(gb_str_from_cstr(fields), &opts.fields, &bad)) {
        print_error("fields=%s refused at \"%.*s\"\n", fields, (int)bad.len, bad.p);
        fail();
    }
    gb_buf_reset(text);
    gb_proto_device_json(dev, &opts, text);
    json_t *v = json_loadb(text->data, text->len, 0, NULL);
    assert_non_null(v);
    return v;
}

static void test_views_fields_narrow_the_list_form(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    th_run_file("domain/scenarios/tpm_attestation_stage.jsonl", &dev, false);
    json_t *full = render(&dev, false, GB_TIME_NONE, 0);
    gb_buf_t text;
    gb_buf_init(&text);

    /* Named members only, serial always, in the object's own order whatever the list's. */
    json_t *v = render_fields(&dev, "slot,status", &text);
    assert_string_equal(text.data,
                        "{\"serial\":\"PF3ABC12\",\"status\":\"red\",\"slot\":\"A-12\"}");
    json_decref(v);

    /* Each member alone: serial and that member, with the value the whole object has. */
    const char *key;
    json_t *val;
    gb_buf_t all;
    gb_buf_init(&all);
    json_object_foreach(full, key, val)
    {
        v = render_fields(&dev, key, &text);
        size_t want = strcmp(key, "serial") == 0 ? 1 : 2;
        if (json_object_size(v) != want || !json_equal(json_object_get(v, key), val) ||
            !json_equal(json_object_get(v, "serial"), json_object_get(full, "serial"))) {
            print_error("fields=%s gave %s\n", key, text.data);
            fail();
        }
        json_decref(v);
        if (all.len > 0) {
            gb_buf_append_str(&all, ",");
        }
        gb_buf_append_str(&all, key);
    }
    /* Every member named: the same bytes as no fields at all. */
    gb_buf_t whole;
    gb_buf_init(&whole);
    gb_proto_device_json(&dev, NULL, &whole);
    v = render_fields(&dev, all.data, &text);
    assert_string_equal(text.data, whole.data);
    json_decref(v);

    /* The detail form has every member whatever fields says. */
    gb_proto_view_opts_t opts = {GB_TIME_NONE, 0, 0};
    gb_str_t bad;
    assert_true(gb_proto_device_fields_parse(GB_STR_LIT("status"), &opts.fields, &bad));
    gb_buf_reset(&text);
    gb_proto_device_detail_json(&dev, &opts, &text);
    v = json_loadb(text.data, text.len, 0, NULL);
    assert_non_null(json_object_get(v, "durations"));
    assert_non_null(json_object_get(v, "timeline"));
    json_decref(v);

    gb_buf_dispose(&whole);
    gb_buf_dispose(&all);
    gb_buf_dispose(&text);
    json_decref(full);
    gb_dev_dispose(&dev);
}

static void test_views_fields_refuse_what_is_not_a_member(void **state)
{
    GB_UNUSED(state);
    static const struct {
        const char *list, *bad;
    } cases[] = {
        {"", ""},
        {"status,", ""},
        {",status", ""},
        {"status,,slot", ""},
        {"Status", "Status"},
        {"status,nope", "nope"},
        {"timeline", "timeline"}, /* the detail form's, not the list's */
        {"serial\"", "serial\""}, /* a key's quote is not part of its name */
        {"status ,slot", "status "},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        uint32_t mask = 12345;
        gb_str_t bad = {NULL, 99};
        if (gb_proto_device_fields_parse(gb_str_from_cstr(cases[i].list), &mask, &bad)) {
            print_error("fields=%s accepted\n", cases[i].list);
            fail();
        }
        if (bad.len != strlen(cases[i].bad) || memcmp(bad.p, cases[i].bad, bad.len) != 0) {
            print_error("fields=%s: bad \"%.*s\", want \"%s\"\n", cases[i].list, (int)bad.len,
                        bad.p, cases[i].bad);
            fail();
        }
        assert_int_equal(mask, 12345); /* untouched */
    }
}

static void test_views_fresh_device(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "NEW-1");
    gb_dev_set_imported(&dev, true);
    json_t *v = render(&dev, true, TH_BASE_MS, 60000);
    const char *nulls[] = {"stage",     "stage_state", "group_tag",         "assigned_user",
                           "profile",   "slot",        "diagnosis",         "last_seen",
                           "mean_mbps", "resealed_at", "ready_for_user_at", "reseal_expires_at",
                           "agent",     "os_build",    "first_seen"};
    for (size_t i = 0; i < GB_ARRAY_LEN(nulls); i++) {
        if (!json_is_null(json_object_get(v, nulls[i]))) {
            print_error("%s is not null\n", nulls[i]);
            fail();
        }
    }
    assert_string_equal(json_string_value(json_object_get(v, "status")), "registered");
    assert_int_equal(json_integer_value(json_object_get(v, "attempt")), 1);
    assert_int_equal(json_array_size(json_object_get(v, "warnings")), 0);
    assert_int_equal(json_array_size(json_object_get(v, "timeline")), 0);
    assert_int_equal(json_array_size(json_object_get(v, "attempts")), 1);
    assert_int_equal(json_array_size(json_object_get(v, "apps")), 0);
    assert_int_equal(json_integer_value(json_object_get(v, "bytes_downloaded")), 0);
    json_t *hw = json_object_get(v, "hardware");
    assert_true(json_is_null(json_object_get(hw, "tpm_attestation")));
    assert_true(json_is_null(json_object_get(json_object_get(v, "network"), "medium")));
    json_decref(v);
    gb_dev_dispose(&dev);
}

static void test_views_escape_strings(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "S\"1");
    gb_dev_set_group_tag(&dev, "</script><b>\\");
    gb_dev_set_profile(&dev, "Line\nbreak", false);
    gb_buf_t b;
    gb_buf_init(&b);
    gb_proto_device_json(&dev, NULL, &b);
    assert_null(strstr(b.data, "</script>"));
    json_t *v = json_loads(b.data, 0, NULL);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "serial")), "S\"1");
    assert_string_equal(json_string_value(json_object_get(v, "group_tag")), "</script><b>\\");
    assert_string_equal(json_string_value(json_object_get(v, "profile")), "Line\nbreak");
    json_decref(v);
    gb_buf_dispose(&b);
    gb_dev_dispose(&dev);
}

static void test_views_numbers(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "S1");
    const int64_t starts[] = {0, 500, 1250, 61001};
    uint64_t seq = 1;
    for (size_t i = 0; i < GB_ARRAY_LEN(starts); i++) {
        gb_msg_t m;
        memset(&m, 0, sizeof(m));
        m.type = GB_MSG_STAGE;
        m.seq = seq++;
        m.at_ms = TH_BASE_MS + 100000 * (int64_t)i;
        m.u.stage.stage = (gb_stage_t)(GB_STAGE_OOBE + i);
        m.u.stage.state = GB_RUN_STARTED;
        assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
        m.seq = seq++;
        m.at_ms += starts[i];
        m.u.stage.state = GB_RUN_SUCCEEDED;
        assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
    }
    gb_msg_t d;
    memset(&d, 0, sizeof(d));
    d.type = GB_MSG_DOWNLOAD;
    d.seq = seq++;
    d.at_ms = TH_BASE_MS + 1000000;
    d.u.download = (gb_msg_download_t){1000, 3, -1, -1, -1};
    assert_int_equal(gb_dev_apply(&dev, NULL, &d), 0);
    gb_buf_t b;
    gb_buf_init(&b);
    gb_proto_device_detail_json(&dev, NULL, &b);
    assert_non_null(strstr(b.data, "\"duration_s\":0,"));
    assert_non_null(strstr(b.data, "\"duration_s\":0.5,"));
    assert_non_null(strstr(b.data, "\"duration_s\":1.25,"));
    assert_non_null(strstr(b.data, "\"duration_s\":61.001,"));
    assert_non_null(strstr(b.data, "\"bytes_by_source\":{\"http\":0,\"lan\":0,\"cache\":0}"));
    assert_non_null(strstr(b.data, "\"mean_mbps\":null")); /* no sample during device setup */
    gb_buf_dispose(&b);
    gb_dev_dispose(&dev);
}

static void test_views_stalled_and_expiry_follow_the_clock(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    th_run_file("domain/scenarios/reseal_shelf_expiry.jsonl", &dev, false);
    json_t *v = render(&dev, false, GB_TIME_NONE, 0);
    assert_int_equal(json_array_size(json_object_get(v, "warnings")), 0);
    assert_string_equal(json_string_value(json_object_get(v, "ready_for_user_at")),
                        "2026-11-24T11:22:00.000Z");
    json_decref(v);
    int64_t later;
    assert_true(gb_time_parse_rfc3339("2027-06-01T00:00:00Z", 20, &later));
    v = render(&dev, false, later, 0);
    json_t *w = json_object_get(v, "warnings");
    assert_int_equal(json_array_size(w), 1);
    assert_string_equal(json_string_value(json_array_get(w, 0)), "reseal_expired");
    assert_true(json_is_false(json_object_get(v, "stalled"))); /* resealed is not working */
    json_decref(v);
    gb_dev_dispose(&dev);
}

static void test_views_agent_reply(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_buf_t b;
    gb_dev_init(&dev, "S1");
    gb_buf_init(&b);
    gb_proto_agent_reply_json(&dev, &b);
    assert_string_equal(b.data, "{\"acked_seq\":0,\"status\":\"registered\",\"stage\":null}");
    gb_dev_dispose(&dev);
    th_run_file("domain/scenarios/multiple_mdm_events.jsonl", &dev, false);
    gb_buf_reset(&b);
    gb_proto_agent_reply_json(&dev, &b);
    char want[128];
    snprintf(want, sizeof(want),
             "{\"acked_seq\":%llu,\"status\":\"red\",\"stage\":\"registering_mdm\"}",
             (unsigned long long)dev.max_seq);
    assert_string_equal(b.data, want);
    gb_buf_dispose(&b);
    gb_dev_dispose(&dev);
}

static void check_round_trip(const gb_dev_t *dev, const char *name)
{
    char *a = th_snapshot(dev);
    gb_dev_t back;
    gb_error_t err;
    gb_error_clear(&err);
    if (gb_proto_snapshot_decode(a, strlen(a), &back, &err) != 0) {
        print_error("%s: snapshot refused: %s (%s)\n%s\n", name, err.message, err.field, a);
        fail();
    }
    char *b = th_snapshot(&back);
    assert_string_equal(a, b);
    for (int detail = 0; detail < 2; detail++) {
        json_t *va = render(dev, detail, TH_BASE_MS + 3600000, 900000);
        json_t *vb = render(&back, detail, TH_BASE_MS + 3600000, 900000);
        assert_true(json_equal(va, vb));
        json_decref(va);
        json_decref(vb);
    }
    /* The restored state keeps working exactly as the original. */
    gb_dev_t c1, c2;
    gb_dev_copy(&c1, dev);
    gb_dev_copy(&c2, &back);
    gb_msg_t m;
    memset(&m, 0, sizeof(m));
    m.type = GB_MSG_STAGE;
    m.seq = dev->max_seq + 1;
    m.at_ms = TH_BASE_MS + 86400000LL * 2;
    m.u.stage.stage = GB_STAGE_OOBE;
    m.u.stage.state = GB_RUN_STARTED;
    assert_int_equal(gb_dev_apply(&c1, NULL, &m), 0);
    assert_int_equal(gb_dev_apply(&c2, NULL, &m), 0);
    char *s1 = th_snapshot(&c1), *s2 = th_snapshot(&c2);
    assert_string_equal(s1, s2);
    free(s1);
    free(s2);
    gb_dev_dispose(&c1);
    gb_dev_dispose(&c2);
    gb_dev_dispose(&back);
    free(a);
    free(b);
}

static void test_views_snapshot_round_trips_every_scenario(void **state)
{
    GB_UNUSED(state);
    th_row_t *rows;
    size_t n = th_load_index(&rows);
    for (size_t r = 0; r < n; r++) {
        for (int form = 0; form < 2; form++) {
            const char *file = form == 0 ? rows[r].stage_file : rows[r].event_file;
            if (file[0] == '\0') {
                continue;
            }
            gb_dev_t dev;
            th_run_file(file, &dev, false);
            check_round_trip(&dev, file);
            gb_dev_dispose(&dev);
        }
    }
    gb_dev_t dev;
    gb_dev_init(&dev, "EMPTY");
    check_round_trip(&dev, "fresh");
    gb_dev_dispose(&dev);
    free(rows);
}

/* Damaging a good snapshot in each of these ways must be refused. */
static void test_views_snapshot_refuses_damage(void **state)
{
    GB_UNUSED(state);
    static const struct {
        const char *from, *to;
    } edits[] = {
        {"\"v\":2", "\"v\":3"},
        {"\"v\":2", "\"v\":0"},
        {"\"user_upn\":null", "\"user_upn\":5"},
        {"\"serial\":\"PF3ABC12\"", "\"serial\":7"},
        {"\"status\":\"red\"", "\"status\":\"purple\""},
        {"\"stage\":\"registering_mdm\"", "\"stage\":\"nap\""},
        {"\"attempt\":1", "\"attempt\":2"},
        {"\"attempt\":1", "\"attempt\":0"},
        {"\"imported\":true", "\"imported\":1"},
        {"\"warnings\":0", "\"warnings\":-1"},
        {"\"max_seq\":", "\"max_seq\":-"},
        {"\"bytes\":[", "\"bytes\":[1,"},
        {"\"runs\":[[\"oobe\"", "\"runs\":[[\"nope\""},
        {"\"succeeded\",1,", "\"succeeded\",9,"},
        {"\"succeeded\",1,", "\"won\",1,"},
        {"\"tpm_attestation\":2", "\"tpm_attestation\":3"},
        {"\"link_mbps\":1000", "\"link_mbps\":\"fast\""},
        {"\"red\",\"multiple_mdm\"", "\"red\",\"gremlins\""},
        {"\"apps\":[]", "\"apps\":[[\"a\",\"installed\",null,null,5]]"},
        {"\"apps\":[]", "\"apps\":[[\"a\",\"gone\",null,null]]"},
        {"\"apps\":[]", "\"apps\":[[7,\"installed\",null,null]]"},
        {"\"agent\":\"glovebox-sim/1.0\"", "\"agent\":[]"},
        {"\"contig_seq\":", "\"contig_seq\":9999"},
        {"{\"v\":2", "[{\"v\":2"},
    };
    gb_dev_t dev;
    th_run_file("domain/scenarios/multiple_mdm_stage.jsonl", &dev, false);
    char *good = th_snapshot(&dev);
    gb_dev_dispose(&dev);
    for (size_t i = 0; i < GB_ARRAY_LEN(edits); i++) {
        const char *at = strstr(good, edits[i].from);
        if (at == NULL) {
            print_error("edit %zu: \"%s\" not found in %s\n", i, edits[i].from, good);
            fail();
        }
        gb_buf_t b;
        gb_buf_init(&b);
        gb_buf_append(&b, good, (size_t)(at - good));
        gb_buf_append_str(&b, edits[i].to);
        gb_buf_append_str(&b, at + strlen(edits[i].from));
        gb_error_t err;
        gb_error_clear(&err);
        gb_dev_t back;
        if (gb_proto_snapshot_decode(b.data, b.len, &back, &err) != GB_EINVAL) {
            print_error("edit %zu accepted: %s\n", i, b.data);
            fail();
        }
        assert_string_equal(err.code, "invalid_snapshot");
        assert_int_equal(err.status, 500);
        gb_buf_dispose(&b);
    }
    /* Dropping any member is refused too. */
    json_t *root = json_loads(good, 0, NULL);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        json_t *copy = json_deep_copy(root);
        json_object_del(copy, key);
        char *s = json_dumps(copy, JSON_COMPACT);
        gb_error_t err;
        gb_error_clear(&err);
        gb_dev_t back;
        if (gb_proto_snapshot_decode(s, strlen(s), &back, &err) != GB_EINVAL) {
            print_error("snapshot without %s accepted\n", key);
            fail();
        }
        free(s);
        json_decref(copy);
    }
    json_decref(root);
    /* A version 1 snapshot (written before user_upn existed) still decodes, without it. */
    root = json_loads(good, 0, NULL);
    json_object_set_new(root, "v", json_integer(1));
    json_object_del(root, "user_upn");
    char *v1 = json_dumps(root, JSON_COMPACT);
    gb_error_t err;
    gb_error_clear(&err);
    gb_dev_t back;
    assert_int_equal(gb_proto_snapshot_decode(v1, strlen(v1), &back, &err), 0);
    assert_null(back.user_upn);
    assert_int_equal(back.status, GB_DEV_RED);
    gb_dev_dispose(&back);
    free(v1);
    json_decref(root);
    free(good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_views_list_form_has_the_contract_fields),
        cmocka_unit_test(test_views_fields_narrow_the_list_form),
        cmocka_unit_test(test_views_fields_refuse_what_is_not_a_member),
        cmocka_unit_test(test_views_fresh_device),
        cmocka_unit_test(test_views_escape_strings),
        cmocka_unit_test(test_views_numbers),
        cmocka_unit_test(test_views_stalled_and_expiry_follow_the_clock),
        cmocka_unit_test(test_views_agent_reply),
        cmocka_unit_test(test_views_snapshot_round_trips_every_scenario),
        cmocka_unit_test(test_views_snapshot_refuses_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
