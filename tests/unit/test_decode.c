/* test_decode: decoding and validating agent requests. Every rejection case is a row of
 * tests/data/domain/invalid_requests.jsonl (body and the error expected); the valid cases check
 * what a decoded message holds (UTC times, unknown fields ignored, optional fields), the
 * all-or-nothing rule, and that the canonical JSON written back decodes to the same message. */
#include "test_domain_support.h"

static int hex_digit(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

static void test_decode_rejects_every_invalid_case(void **state)
{
    GB_UNUSED(state);
    size_t len;
    char *text = th_read("domain/invalid_requests.jsonl", &len);
    int rows = 0;
    gb_arena_t arena;
    gb_arena_init(&arena);
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#') {
            continue;
        }
        json_error_t jerr;
        json_t *row = json_loads(line, 0, &jerr);
        assert_non_null(row);
        const char *name = json_string_value(json_object_get(row, "name"));
        char *body;
        size_t blen;
        json_t *hex = json_object_get(row, "body_hex");
        if (hex != NULL) {
            const char *h = json_string_value(hex);
            blen = strlen(h) / 2;
            body = malloc(blen + 1);
            for (size_t i = 0; i < blen; i++) {
                body[i] = (char)(hex_digit(h[2 * i]) * 16 + hex_digit(h[2 * i + 1]));
            }
        } else {
            json_t *b = json_object_get(row, "body");
            blen = json_string_length(b);
            body = malloc(blen + 1);
            memcpy(body, json_string_value(b), blen);
        }
        body[blen] = '\0';

        gb_error_t err;
        gb_error_clear(&err);
        gb_proto_request_t req;
        memset(&req, 0x5a, sizeof(req));
        gb_proto_request_t untouched = req;
        int rc = gb_proto_decode_request(body, blen, &arena, &req, &err);
        json_t *want_index = json_object_get(row, "index");
        long index = want_index != NULL ? (long)json_integer_value(want_index) : -1;
        bool ok = rc == GB_EINVAL &&
                  err.status == json_integer_value(json_object_get(row, "status")) &&
                  strcmp(err.code, json_string_value(json_object_get(row, "code"))) == 0 &&
                  strcmp(err.field, json_string_value(json_object_get(row, "field"))) == 0 &&
                  err.index == index && err.message[0] != '\0' &&
                  memcmp(&req, &untouched, sizeof(req)) == 0;
        if (!ok) {
            print_error("case \"%s\": rc=%d status=%d code=%s field=%s index=%ld message=%s\n",
                        name, rc, err.status, err.code, err.field, err.index, err.message);
            fail();
        }
        /* The error renders as the contract's body. */
        gb_buf_t out;
        gb_buf_init(&out);
        gb_error_to_json(&err, &out);
        json_t *ej = json_loadb(out.data, out.len, 0, &jerr);
        assert_non_null(ej);
        assert_non_null(json_object_get(json_object_get(ej, "error"), "code"));
        json_decref(ej);
        gb_buf_dispose(&out);
        free(body);
        json_decref(row);
        gb_arena_reset(&arena);
        rows++;
    }
    assert_true(rows >= 100);
    gb_arena_dispose(&arena);
    free(text);
}

static const char contract_example[] =
    "{\"protocol\": 1, \"unknown_top\": {\"x\": [1,2]},"
    " \"device\": {\"serial\": \"PF3ABC12\", \"vendor\": \"HP\"},"
    " \"messages\": ["
    "  {\"seq\": 1, \"at\": \"2026-11-24T10:00:00.000Z\", \"type\": \"hello\","
    "   \"agent\": \"glovebox-sim/1.0\", \"os_build\": \"10.0.19045\","
    "   \"hardware\": {\"manufacturer\": \"HP\", \"model\": \"EliteBook 840 G8\","
    "                \"tpm_version\": \"2.0\", \"tpm_attestation\": true, "
    "\"virtual_machine\": false, \"bios\": \"X\"},"
    "   \"network\": {\"medium\": \"ethernet\", \"link_mbps\": 1000}, \"slot\": \"A-12\"},"
    "  {\"seq\": 2, \"at\": \"2026-11-24T12:00:01+02:00\", \"type\": \"stage\", \"stage\": "
    "\"securing_hardware\", \"state\": \"started\", \"extra\": null},"
    "  {\"seq\": 3, \"at\": \"2026-11-24T05:00:02.5-05:00\", \"type\": \"stage\", \"stage\": "
    "\"securing_hardware\", \"state\": \"failed\", \"hresult\": \"0x800705b4\"},"
    "  {\"seq\": 4, \"at\": \"2026-11-24t10:00:03z\", \"type\": \"winevent\", \"channel\": "
    "\"Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot\", \"event_id\": 156, "
    "\"message\": \"TPM \\u00e9 \\\"quoted\\\" <b>\"},"
    "  {\"seq\": 5, \"at\": \"2026-11-24T10:00:04Z\", \"type\": \"app\", \"name\": \"Microsoft 365 "
    "Apps\", \"state\": \"installed\", \"bytes\": 2900000000},"
    "  {\"seq\": 6, \"at\": \"2026-11-24T10:00:05Z\", \"type\": \"download\", \"bytes\": 52428800, "
    "\"ms\": 5000, \"http_bytes\": 31457280, \"lan_bytes\": 20971520, \"cache_bytes\": 0},"
    "  {\"seq\": 7, \"at\": \"2026-11-24T10:00:06Z\", \"type\": \"result\", \"screen\": \"red\"},"
    "  {\"seq\": 8, \"at\": \"2026-11-24T10:00:07Z\", \"type\": \"heartbeat\", \"battery\": 97},"
    "  {\"seq\": 9, \"at\": \"2026-11-24T10:00:08Z\", \"type\": \"hello\", \"agent\": \"a\", "
    "\"hardware\": null, \"network\": {\"medium\": \"Wi-Fi\"}, \"slot\": null},"
    "  {\"seq\": 10, \"at\": \"2026-11-24T10:00:09Z\", \"type\": \"winevent\", \"channel\": "
    "\"X\", \"event_id\": 0}"
    " ]}";

static void test_decode_contract_example(void **state)
{
    GB_UNUSED(state);
    gb_arena_t arena;
    gb_error_t err;
    gb_proto_request_t req;
    gb_arena_init(&arena);
    gb_error_clear(&err);
    int rc =
        gb_proto_decode_request(contract_example, strlen(contract_example), &arena, &req, &err);
    if (rc != 0) {
        print_error("%s %s %s\n", err.code, err.field, err.message);
    }
    assert_int_equal(rc, 0);
    assert_string_equal(req.serial, "PF3ABC12");
    assert_int_equal(req.serial_len, 8);
    assert_int_equal(req.n_msgs, 10);
    for (size_t i = 0; i < req.n_msgs; i++) {
        assert_int_equal(req.msgs[i].seq, i + 1);
        assert_int_equal(req.msgs[i].index, i);
        assert_int_equal(req.msgs[i].at_ms,
                         1795514400000LL + (int64_t)i * 1000 + (i == 2 ? 500 : 0));
    }
    const gb_msg_hello_t *h = &req.msgs[0].u.hello;
    assert_int_equal(req.msgs[0].type, GB_MSG_HELLO);
    assert_string_equal(h->agent.p, "glovebox-sim/1.0");
    assert_string_equal(h->os_build.p, "10.0.19045");
    assert_string_equal(h->manufacturer.p, "HP");
    assert_string_equal(h->model.p, "EliteBook 840 G8");
    assert_string_equal(h->tpm_version.p, "2.0");
    assert_int_equal(h->tpm_attestation, GB_TRI_TRUE);
    assert_int_equal(h->virtual_machine, GB_TRI_FALSE);
    assert_int_equal(h->medium, GB_MEDIUM_ETHERNET);
    assert_true(h->link_mbps == 1000.0);
    assert_string_equal(h->slot.p, "A-12");

    assert_int_equal(req.msgs[1].u.stage.stage, GB_STAGE_SECURING_HARDWARE);
    assert_int_equal(req.msgs[1].u.stage.state, GB_RUN_STARTED);
    assert_false(req.msgs[1].u.stage.has_hresult);
    assert_true(req.msgs[2].u.stage.has_hresult);
    assert_int_equal(req.msgs[2].u.stage.hresult, 0x800705B4u);

    const gb_msg_winevent_t *w = &req.msgs[3].u.winevent;
    assert_int_equal(w->event_id, 156);
    assert_string_equal(w->message.p, "TPM \xc3\xa9 \"quoted\" <b>");
    assert_int_equal(w->message.len, strlen("TPM \xc3\xa9 \"quoted\" <b>"));

    assert_string_equal(req.msgs[4].u.app.name.p, "Microsoft 365 Apps");
    assert_int_equal(req.msgs[4].u.app.state, GB_APP_INSTALLED);
    assert_int_equal(req.msgs[4].u.app.bytes, 2900000000LL);
    assert_false(req.msgs[4].u.app.has_hresult);

    const gb_msg_download_t *d = &req.msgs[5].u.download;
    assert_int_equal(d->bytes, 52428800);
    assert_int_equal(d->ms, 5000);
    assert_int_equal(d->http_bytes, 31457280);
    assert_int_equal(d->lan_bytes, 20971520);
    assert_int_equal(d->cache_bytes, 0);
    assert_int_equal(req.msgs[6].u.result, GB_SCREEN_RED);
    assert_int_equal(req.msgs[7].type, GB_MSG_HEARTBEAT);

    /* null optional members are absent members. */
    const gb_msg_hello_t *h2 = &req.msgs[8].u.hello;
    assert_null(h2->manufacturer.p);
    assert_null(h2->slot.p);
    assert_int_equal(h2->tpm_attestation, GB_TRI_UNSET);
    assert_int_equal(h2->medium, GB_MEDIUM_WIFI);
    assert_true(h2->link_mbps < 0);
    assert_string_equal(req.msgs[9].u.winevent.message.p, "");

    /* Strings live in the arena, not in the body. */
    assert_true(req.serial < contract_example ||
                req.serial >= contract_example + sizeof(contract_example));
    gb_arena_dispose(&arena);
}

static void test_decode_lone_message(void **state)
{
    GB_UNUSED(state);
    gb_arena_t arena;
    gb_error_t err;
    gb_msg_t m;
    gb_arena_init(&arena);
    gb_error_clear(&err);
    const char ok[] = "{\"seq\":42,\"at\":\"2026-11-24T10:00:00Z\",\"type\":\"result\","
                      "\"screen\":\"green\"}";
    assert_int_equal(gb_proto_decode_message(ok, strlen(ok), &arena, &m, &err), 0);
    assert_int_equal(m.seq, 42);
    assert_int_equal(m.index, 0);
    assert_int_equal(m.u.result, GB_SCREEN_GREEN);

    const char bad[] = "{\"seq\":42,\"at\":\"soon\",\"type\":\"heartbeat\"}";
    memset(&m, 0x33, sizeof(m));
    gb_msg_t untouched = m;
    assert_int_equal(gb_proto_decode_message(bad, strlen(bad), &arena, &m, &err), GB_EINVAL);
    assert_string_equal(err.code, "invalid_message");
    assert_string_equal(err.field, "at");
    assert_int_equal(err.index, -1);
    assert_memory_equal(&m, &untouched, sizeof(m));

    gb_error_clear(&err);
    assert_int_equal(gb_proto_decode_message("[]", 2, &arena, &m, &err), GB_EINVAL);
    assert_string_equal(err.code, "invalid_message");
    assert_string_equal(err.field, "");
    gb_error_clear(&err);
    assert_int_equal(gb_proto_decode_message("{", 1, &arena, &m, &err), GB_EINVAL);
    assert_string_equal(err.code, "malformed_json");
    gb_arena_dispose(&arena);
}

static void test_decode_serial_rules(void **state)
{
    GB_UNUSED(state);
    assert_true(gb_proto_serial_valid("PF3ABC12", 8));
    assert_true(gb_proto_serial_valid("5CD1234XYZ-01_a.b", 17));
    assert_true(gb_proto_serial_valid("~!@$^&*()[]{}", 13));
    char max[GB_PROTO_SERIAL_MAX + 1];
    memset(max, 'A', sizeof(max));
    assert_true(gb_proto_serial_valid(max, GB_PROTO_SERIAL_MAX));
    assert_false(gb_proto_serial_valid(max, GB_PROTO_SERIAL_MAX + 1));
    assert_false(gb_proto_serial_valid("", 0));
    assert_false(gb_proto_serial_valid("A B", 3));
    assert_false(gb_proto_serial_valid("A/B", 3));
    assert_false(gb_proto_serial_valid("A\\B", 3));
    assert_false(gb_proto_serial_valid("A#B", 3));
    assert_false(gb_proto_serial_valid("A\x7f", 2));
    assert_false(gb_proto_serial_valid("A\0B", 3));
}

static void test_decode_boundaries_accepted(void **state)
{
    GB_UNUSED(state);
    static const char *const ok[] = {
        "{\"seq\":9007199254740991,\"at\":\"2026-11-24T10:00:00Z\",\"type\":\"heartbeat\"}",
        "{\"seq\":1,\"at\":\"2026-11-24T10:00:00Z\",\"type\":\"download\",\"bytes\":0,\"ms\":1}",
        "{\"seq\":1,\"at\":\"2026-11-24T10:00:00Z\",\"type\":\"download\",\"bytes\":"
        "9007199254740991,\"ms\":2147483647}",
        "{\"seq\":1,\"at\":\"2026-11-24T10:00:00Z\",\"type\":\"winevent\",\"channel\":\"c\","
        "\"event_id\":65535,\"message\":\"\"}",
        "{\"seq\":1,\"at\":\"2026-11-24T10:00:00Z\",\"type\":\"hello\",\"agent\":\"a\","
        "\"network\":{\"link_mbps\":0.5},\"hardware\":{\"tpm_version\":\"\"}}",
        "{\"seq\":1,\"at\":\"2026-11-24T10:00:00Z\",\"type\":\"stage\",\"stage\":\"desktop\","
        "\"state\":\"skipped\",\"hresult\":\"0\"}",
    };
    gb_arena_t arena;
    gb_arena_init(&arena);
    for (size_t i = 0; i < GB_ARRAY_LEN(ok); i++) {
        gb_error_t err;
        gb_msg_t m;
        gb_error_clear(&err);
        if (gb_proto_decode_message(ok[i], strlen(ok[i]), &arena, &m, &err) != 0) {
            print_error("case %zu: %s %s %s\n", i, err.code, err.field, err.message);
            fail();
        }
    }
    gb_arena_dispose(&arena);
}

/* decode -> encode -> decode gives the same message, for every message of every scenario. */
static void test_decode_encode_round_trip(void **state)
{
    GB_UNUSED(state);
    th_row_t *rows;
    size_t n = th_load_index(&rows);
    size_t checked = 0;
    for (size_t r = 0; r < n; r++) {
        for (int form = 0; form < 2; form++) {
            const char *file = form == 0 ? rows[r].stage_file : rows[r].event_file;
            if (file[0] == '\0') {
                continue;
            }
            th_scenario_t sc;
            th_scenario_load(&sc, file);
            for (size_t i = 0; i < sc.n_steps; i++) {
                if (sc.steps[i].kind != TH_MSG) {
                    continue;
                }
                gb_buf_t a, b;
                gb_buf_init(&a);
                gb_buf_init(&b);
                gb_proto_encode_message(&sc.steps[i].msg, &a);
                gb_msg_t again;
                gb_error_t err;
                gb_error_clear(&err);
                if (gb_proto_decode_message(a.data, a.len, &sc.arena, &again, &err) != 0) {
                    print_error("%s: canonical form rejected (%s): %s\n", file, err.field, a.data);
                    fail();
                }
                gb_proto_encode_message(&again, &b);
                assert_string_equal(a.data, b.data);
                assert_int_equal(again.seq, sc.steps[i].msg.seq);
                assert_int_equal(again.at_ms, sc.steps[i].msg.at_ms);
                assert_int_equal(again.type, sc.steps[i].msg.type);
                gb_buf_dispose(&a);
                gb_buf_dispose(&b);
                checked++;
            }
            th_scenario_free(&sc);
        }
    }
    assert_true(checked > 500);
    free(rows);
}

static void test_decode_encode_shapes(void **state)
{
    GB_UNUSED(state);
    gb_arena_t arena;
    gb_error_t err;
    gb_proto_request_t req;
    gb_arena_init(&arena);
    gb_error_clear(&err);
    assert_int_equal(
        gb_proto_decode_request(contract_example, strlen(contract_example), &arena, &req, &err), 0);
    static const char *const want[] = {
        "{\"seq\":1,\"at\":\"2026-11-24T10:00:00.000Z\",\"type\":\"hello\",\"agent\":\"glovebox-"
        "sim/1.0\",\"os_build\":\"10.0.19045\",\"hardware\":{\"manufacturer\":\"HP\",\"model\":"
        "\"EliteBook 840 G8\",\"tpm_version\":\"2.0\",\"tpm_attestation\":true,"
        "\"virtual_machine\":false},\"network\":{\"medium\":\"ethernet\",\"link_mbps\":1000},"
        "\"slot\":\"A-12\"}",
        "{\"seq\":2,\"at\":\"2026-11-24T10:00:01.000Z\",\"type\":\"stage\",\"stage\":"
        "\"securing_hardware\",\"state\":\"started\"}",
        "{\"seq\":3,\"at\":\"2026-11-24T10:00:02.500Z\",\"type\":\"stage\",\"stage\":"
        "\"securing_hardware\",\"state\":\"failed\",\"hresult\":\"0x800705B4\"}",
        "{\"seq\":4,\"at\":\"2026-11-24T10:00:03.000Z\",\"type\":\"winevent\",\"channel\":"
        "\"Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot\",\"event_id\":156,"
        "\"message\":\"TPM \xc3\xa9 \\\"quoted\\\" \\u003cb\\u003e\"}",
        "{\"seq\":5,\"at\":\"2026-11-24T10:00:04.000Z\",\"type\":\"app\",\"name\":\"Microsoft 365 "
        "Apps\",\"state\":\"installed\",\"bytes\":2900000000}",
        "{\"seq\":6,\"at\":\"2026-11-24T10:00:05.000Z\",\"type\":\"download\",\"bytes\":52428800,"
        "\"ms\":5000,\"http_bytes\":31457280,\"lan_bytes\":20971520,\"cache_bytes\":0}",
        "{\"seq\":7,\"at\":\"2026-11-24T10:00:06.000Z\",\"type\":\"result\",\"screen\":\"red\"}",
        "{\"seq\":8,\"at\":\"2026-11-24T10:00:07.000Z\",\"type\":\"heartbeat\"}",
        "{\"seq\":9,\"at\":\"2026-11-24T10:00:08.000Z\",\"type\":\"hello\",\"agent\":\"a\","
        "\"network\":{\"medium\":\"wifi\"}}",
        "{\"seq\":10,\"at\":\"2026-11-24T10:00:09.000Z\",\"type\":\"winevent\",\"channel\":\"X\","
        "\"event_id\":0,\"message\":\"\"}",
    };
    for (size_t i = 0; i < req.n_msgs; i++) {
        gb_buf_t b;
        gb_buf_init(&b);
        gb_proto_encode_message(&req.msgs[i], &b);
        assert_string_equal(b.data, want[i]);
        gb_buf_dispose(&b);
    }
    gb_arena_dispose(&arena);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_rejects_every_invalid_case),
        cmocka_unit_test(test_decode_contract_example),
        cmocka_unit_test(test_decode_lone_message),
        cmocka_unit_test(test_decode_serial_rules),
        cmocka_unit_test(test_decode_boundaries_accepted),
        cmocka_unit_test(test_decode_encode_round_trip),
        cmocka_unit_test(test_decode_encode_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
