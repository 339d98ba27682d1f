/* Unit tests of glovebox-sim's room model: repeatability, the uplink's fair share, the ESP
 * timeout, every fault as a real device shows it, retries, handover timing, bench slots, and the
 * ground truth's sums. Each test runs a small room in memory; no sockets, no files. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "internal.h"
#include "model.h"
#include "util/util.h"

/* ---- helpers ---- */

/* Every message the model emitted, per device, parsed. */
typedef struct rec {
    uint32_t n;
    json_t **msgs;  /* msgs[device]: array of message objects */
    gb_buf_t bytes; /* serial + message text, back to back: what a byte comparison needs */
    uint64_t total;
} rec_t;

static void on_msg(void *arg, const gb_sim_msg_t *m)
{
    rec_t *r = arg;
    json_error_t err;
    json_t *o = json_loadb(m->json, m->len, 0, &err);
    if (o == NULL) {
        fail_msg("message is not JSON (%s): %s", err.text, m->json);
    }
    json_array_append_new(r->msgs[m->device], o);
    gb_buf_append_str(&r->bytes, m->serial);
    gb_buf_append(&r->bytes, m->json, m->len);
    gb_buf_append(&r->bytes, "\n", 1);
    r->total++;
}

static void base_config(gb_sim_config_t *c)
{
    gb_sim_options_t o;
    gb_sim_options_defaults(&o);
    *c = o.model;
}

static void no_faults(gb_sim_config_t *c)
{
    for (int f = 0; f < GB_SIM_FAULT_COUNT; f++) {
        c->fault_rate[f] = 0;
    }
}

/* Every stage takes exactly s seconds and technicians take no time: devices move in step. */
static void fixed_times(gb_sim_config_t *c, double s)
{
    for (int i = 0; i < GB_SIM_STAGE_COUNT; i++) {
        c->stage_time[i] = (gb_sim_dist_t){s, s, s};
    }
    c->tech_s = 0;
}

static gb_sim_t *run(const gb_sim_config_t *c, rec_t *r)
{
    r->n = c->devices;
    r->msgs = calloc(c->devices, sizeof(*r->msgs));
    for (uint32_t i = 0; i < c->devices; i++) {
        r->msgs[i] = json_array();
    }
    gb_buf_init(&r->bytes);
    r->total = 0;
    gb_sim_t *sim = gb_sim_new(c, on_msg, r);
    gb_sim_run(sim, GB_SIM_NEVER, 0);
    assert_true(gb_sim_done(sim));
    return sim;
}

static void rec_free(rec_t *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        json_decref(r->msgs[i]);
    }
    free(r->msgs);
    gb_buf_dispose(&r->bytes);
}

static const char *str(json_t *m, const char *key)
{
    const char *s = json_string_value(json_object_get(m, key));
    return s ? s : "";
}

static int64_t at_ms(json_t *m)
{
    int64_t ms = 0;
    const char *s = str(m, "at");
    assert_true(gb_time_parse_rfc3339(s, strlen(s), &ms));
    return ms;
}

static bool is_stage(json_t *m, const char *stage, const char *state)
{
    return strcmp(str(m, "type"), "stage") == 0 && strcmp(str(m, "stage"), stage) == 0 &&
           strcmp(str(m, "state"), state) == 0;
}

/* Index of the first message at or after from matching stage/state, or -1. */
static long find_stage(json_t *msgs, size_t from, const char *stage, const char *state)
{
    for (size_t i = from; i < json_array_size(msgs); i++) {
        if (is_stage(json_array_get(msgs, i), stage, state)) {
            return (long)i;
        }
    }
    return -1;
}

static bool has_event(json_t *msgs, unsigned id)
{
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        if (strcmp(str(m, "type"), "winevent") == 0 &&
            json_integer_value(json_object_get(m, "event_id")) == (json_int_t)id) {
            return true;
        }
    }
    return false;
}

static size_t count_type(json_t *msgs, const char *type)
{
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        n += strcmp(str(json_array_get(msgs, i), "type"), type) == 0;
    }
    return n;
}

static void sha(const gb_buf_t *b, uint8_t out[GB_SHA256_LEN])
{
    gb_sha256(b->data ? b->data : "", b->len, out);
}

/* ---- repeatability ---- */

static void busy_room(gb_sim_config_t *c, uint64_t seed)
{
    base_config(c);
    c->devices = 60;
    c->slots = 12;
    c->seed = seed;
    c->uplink_mbps = 200;
    c->winevent_share = 0.5;
    c->technicians = 3;
    for (int f = 1; f < GB_SIM_FAULT_ESP_TIMEOUT; f++) {
        c->fault_rate[f] = 0.05;
    }
}

static void test_sim_same_seed_gives_byte_identical_messages(void **state)
{
    gb_sim_config_t c;
    rec_t a, b;
    uint8_t ha[GB_SHA256_LEN], hb[GB_SHA256_LEN];

    busy_room(&c, 42);
    gb_sim_t *s1 = run(&c, &a);
    gb_sim_t *s2 = run(&c, &b);
    assert_true(a.total > 1000);
    assert_int_equal(a.total, b.total);
    assert_int_equal(a.bytes.len, b.bytes.len);
    sha(&a.bytes, ha);
    sha(&b.bytes, hb);
    assert_memory_equal(ha, hb, GB_SHA256_LEN);

    /* The ground truth is as repeatable as the messages. */
    gb_buf_t ja, jb;
    gb_buf_init(&ja);
    gb_buf_init(&jb);
    gb_sim_truth_json(s1, &ja);
    gb_sim_truth_json(s2, &jb);
    assert_int_equal(ja.len, jb.len);
    assert_memory_equal(ja.data, jb.data, ja.len);
    gb_buf_dispose(&ja);
    gb_buf_dispose(&jb);
    gb_sim_free(s1);
    gb_sim_free(s2);
    rec_free(&a);
    rec_free(&b);
}

static void test_sim_different_seeds_differ(void **state)
{
    gb_sim_config_t c;
    rec_t a, b;
    uint8_t ha[GB_SHA256_LEN], hb[GB_SHA256_LEN];

    busy_room(&c, 1);
    gb_sim_t *s1 = run(&c, &a);
    c.seed = 2;
    gb_sim_t *s2 = run(&c, &b);
    sha(&a.bytes, ha);
    sha(&b.bytes, hb);
    assert_memory_not_equal(ha, hb, GB_SHA256_LEN);
    assert_string_not_equal(gb_sim_device_serial(s1, 0), gb_sim_device_serial(s2, 0));
    gb_sim_free(s1);
    gb_sim_free(s2);
    rec_free(&a);
    rec_free(&b);
}

/* ---- messages ---- */

static void test_sim_messages_follow_the_protocol(void **state)
{
    gb_sim_config_t c;
    rec_t r;
    static const char *const types[] = {"hello",    "stage",  "app",      "download",
                                        "winevent", "result", "heartbeat"};

    busy_room(&c, 3);
    gb_sim_t *sim = run(&c, &r);
    for (uint32_t d = 0; d < r.n; d++) {
        json_t *msgs = r.msgs[d];
        int64_t prev = INT64_MIN;
        assert_true(json_array_size(msgs) > 0);
        assert_string_equal(str(json_array_get(msgs, 0), "type"), "hello");
        for (size_t i = 0; i < json_array_size(msgs); i++) {
            json_t *m = json_array_get(msgs, i);
            /* seq 1, 2, 3 ... and `at` never goes back (RFC 3339 with milliseconds). */
            assert_int_equal(json_integer_value(json_object_get(m, "seq")), (json_int_t)i + 1);
            int64_t at = at_ms(m);
            assert_true(at >= prev);
            prev = at;
            assert_int_equal(strlen(str(m, "at")), 24);
            bool known = false;
            for (size_t k = 0; k < GB_ARRAY_LEN(types); k++) {
                known |= strcmp(str(m, "type"), types[k]) == 0;
            }
            assert_true(known);
            if (strcmp(str(m, "type"), "stage") == 0) {
                gb_sim_stage_t st;
                const char *id = str(m, "stage");
                assert_true(gb_sim_stage_parse(id, strlen(id), &st));
            }
            if (strcmp(str(m, "type"), "download") == 0) {
                json_int_t b = json_integer_value(json_object_get(m, "bytes"));
                assert_true(json_integer_value(json_object_get(m, "ms")) >= 1);
                assert_int_equal(json_integer_value(json_object_get(m, "http_bytes")) +
                                     json_integer_value(json_object_get(m, "lan_bytes")) +
                                     json_integer_value(json_object_get(m, "cache_bytes")),
                                 b);
            }
        }
    }
    gb_sim_free(sim);
    rec_free(&r);
}

/* ---- the uplink ---- */

static bool all_live(void *arg, uint32_t dev, uint32_t token)
{
    GB_UNUSED(arg);
    GB_UNUSED(dev);
    GB_UNUSED(token);
    return true;
}

#define MBPS(x) ((x)*125.0) /* Mbit/s in bytes per ms */

static void test_sim_uplink_is_shared_fairly(void **state)
{
    gb_sim__bw_t bw;
    double caps[] = {MBPS(1000)};

    /* Four downloads behind 1 Gbit/s NICs on a 100 Mbit/s uplink: 25 Mbit/s each. */
    gb_sim__bw_init(&bw, MBPS(100), 1.0, caps, 1, all_live, NULL);
    for (uint32_t i = 0; i < 4; i++) {
        gb_sim__bw_add(&bw, 0, 0, i, 1, 1e6);
    }
    assert_true(bw.groups[0].rate == MBPS(25));
    /* 1 MB at 25 Mbit/s is 320 ms, and all four finish together. */
    assert_int_equal(gb_sim__bw_next_finish(&bw, 0), 320);
    gb_sim__bw_advance(&bw, 320);
    gb_sim__bw_mark_t m;
    int done = 0;
    while (gb_sim__bw_take_finished(&bw, 0, &m)) {
        done++;
    }
    assert_int_equal(done, 4);
    assert_true(bw.active_ms == 4 * 320.0);
    gb_sim__bw_dispose(&bw);
}

static void test_sim_nic_cap_gives_the_rest_to_others(void **state)
{
    gb_sim__bw_t bw;
    double caps[] = {MBPS(1000), MBPS(10)};

    gb_sim__bw_init(&bw, MBPS(100), 1.0, caps, 2, all_live, NULL);
    uint32_t slow = gb_sim__bw_group_of(&bw, MBPS(10));
    uint32_t fast = gb_sim__bw_group_of(&bw, MBPS(1000));
    gb_sim__bw_add(&bw, 0, slow, 0, 1, 1e9);
    for (uint32_t i = 1; i < 4; i++) {
        gb_sim__bw_add(&bw, 0, fast, i, 1, 1e9);
    }
    /* The 10 Mbit/s NIC takes 10; the other three share the remaining 90. */
    assert_true(bw.groups[slow].rate == MBPS(10));
    assert_true(bw.groups[fast].rate == MBPS(30));
    gb_sim__bw_dispose(&bw);

    /* Half the bytes from LAN peers: only half of each download crosses the uplink. */
    double one[] = {MBPS(1000)};
    gb_sim__bw_init(&bw, MBPS(100), 0.5, one, 1, all_live, NULL);
    for (uint32_t i = 0; i < 4; i++) {
        gb_sim__bw_add(&bw, 0, 0, i, 1, 1e9);
    }
    assert_true(bw.groups[0].rate == MBPS(50));
    gb_sim__bw_dispose(&bw);
}

static void test_sim_uplink_integrates_bytes_exactly(void **state)
{
    gb_sim__bw_t bw;
    double caps[] = {MBPS(1000)};
    gb_sim__bw_mark_t m;

    /* A alone for 100 ms, then A and B share: the link never idles, so 4 MB at 100 Mbit/s
     * end at exactly 320 ms, A first. */
    gb_sim__bw_init(&bw, MBPS(100), 1.0, caps, 1, all_live, NULL);
    gb_sim__bw_add(&bw, 0, 0, 0, 1, 2e6);
    gb_sim__bw_add(&bw, 100, 0, 1, 1, 2e6);
    assert_int_equal(gb_sim__bw_next_finish(&bw, 0), 220);
    gb_sim__bw_advance(&bw, 220);
    assert_true(gb_sim__bw_take_finished(&bw, 0, &m));
    assert_int_equal(m.dev, 0);
    assert_false(gb_sim__bw_take_finished(&bw, 0, &m));
    gb_sim__bw_rebalance(&bw);
    assert_int_equal(gb_sim__bw_next_finish(&bw, 0), 320);
    gb_sim__bw_dispose(&bw);
}

static void test_sim_devices_downloading_together_get_equal_shares(void **state)
{
    gb_sim_config_t c;
    rec_t r;

    base_config(&c);
    no_faults(&c);
    fixed_times(&c, 10);
    c.devices = 4;
    c.slots = 4;
    c.uplink_mbps = 100;
    c.nic_mbps = 1000;
    c.peer_share = 0;
    c.heartbeat_s = 0;
    char err[128];
    assert_int_equal(gb_sim_payload_parse(&c, "Only=100@50", err, sizeof(err)), 0);
    gb_sim_t *sim = run(&c, &r);
    for (uint32_t d = 0; d < 4; d++) {
        const gb_sim_truth_t *t = gb_sim_truth(sim, d);
        /* 100 MB at 25 Mbit/s: 32 s, four devices at once all along. */
        assert_int_equal(t->setup_bytes, 100000000);
        assert_int_equal(t->download_ms, 32000);
        assert_int_equal(t->setup_sample_ms, 32000);
        assert_true(t->conc_ms / (double)t->download_ms == 4.0);
    }
    gb_sim_free(sim);
    rec_free(&r);

    /* NICs of 10 Mbit/s: the uplink is no longer the limit. */
    c.nic_mbps = 10;
    sim = run(&c, &r);
    for (uint32_t d = 0; d < 4; d++) {
        assert_int_equal(gb_sim_truth(sim, d)->download_ms, 80000);
    }
    gb_sim_free(sim);
    rec_free(&r);
}

/* ---- ESP timeout ---- */

static void test_sim_device_past_esp_timeout_ends_red(void **state)
{
    gb_sim_config_t c;
    rec_t r;
    char err[128];

    base_config(&c);
    no_faults(&c);
    c.devices = 1;
    c.max_attempts = 1;
    c.uplink_mbps = 1;
    c.peer_share = 0; /* every byte over the uplink */
    c.esp_timeout_min = 10;
    assert_int_equal(gb_sim_payload_parse(&c, "Big=1000", err, sizeof(err)), 0);
    gb_sim_t *sim = run(&c, &r);
    const gb_sim_truth_t *t = gb_sim_truth(sim, 0);
    assert_int_equal(t->status, GB_SIM_STATUS_RED);
    assert_int_equal(t->diagnosis, GB_SIM_FAULT_ESP_TIMEOUT);
    assert_int_equal(t->hresult, 0x800705B4u);
    gb_sim_durations_t du;
    gb_sim_truth_durations(t, &du);
    assert_int_equal(du.device_setup_ms, 10 * 60 * 1000); /* exactly the timeout */

    json_t *msgs = r.msgs[0];
    long i = find_stage(msgs, 0, "device_setup", "failed");
    assert_true(i > 0);
    assert_string_equal(str(json_array_get(msgs, (size_t)i), "hresult"), "0x800705B4");
    assert_string_equal(str(json_array_get(msgs, (size_t)i + 1), "screen"), "red");
    /* The download was cut off: what arrived was reported, and no more than fits in 10 min. */
    assert_true(t->bytes > 0 && t->bytes <= 600u * 125000u);
    gb_sim_free(sim);
    rec_free(&r);
}

/* ---- faults ---- */

typedef struct fault_case {
    gb_sim_fault_t fault;
    const char *stage;
    const char *hresult;
    unsigned events[3]; /* each must be logged (0: unused) */
} fault_case_t;

static const fault_case_t fault_cases[] = {
    {GB_SIM_FAULT_TPM_ATTESTATION, "securing_hardware", "0x800705B4", {509, 156, 0}},
    {GB_SIM_FAULT_DEVICE_OBJECT_MISSING, "joining_network", "0x801C03F3", {180, 204, 0}},
    {GB_SIM_FAULT_MULTIPLE_MDM, "registering_mdm", "0x81036501", {302, 180, 115}},
    {GB_SIM_FAULT_PROFILE_UNAVAILABLE, "profile_download", "0x80070490", {0, 0, 0}},
    {GB_SIM_FAULT_NO_WIRED_NETWORK, "enterprise_provisioning", "0x800704CF", {0, 0, 0}},
    {GB_SIM_FAULT_APP_INSTALL_FAILED, "device_setup", "0x80070643", {1924, 0, 0}},
    {GB_SIM_FAULT_CERTIFICATE_FAILED, "device_setup", "0x80094800", {32, 0, 0}},
};

static gb_sim_t *one_device_with(gb_sim_fault_t f, double winevents, uint64_t seed, rec_t *r)
{
    gb_sim_config_t c;
    base_config(&c);
    no_faults(&c);
    c.devices = 1;
    c.max_attempts = 1;
    c.seed = seed;
    c.winevent_share = winevents;
    c.fault_rate[f] = 1.0;
    return run(&c, r);
}

static void test_sim_each_fault_shows_its_stage_hresult_and_events(void **state)
{
    for (size_t k = 0; k < GB_ARRAY_LEN(fault_cases); k++) {
        const fault_case_t *fc = &fault_cases[k];
        rec_t r;
        gb_sim_t *sim = one_device_with(fc->fault, 0, 11, &r);
        const gb_sim_truth_t *t = gb_sim_truth(sim, 0);
        json_t *msgs = r.msgs[0];

        if (t->diagnosis != fc->fault) {
            fail_msg("%s: diagnosis %s", gb_sim_fault_id(fc->fault), gb_sim_fault_id(t->diagnosis));
        }
        assert_int_equal(t->status, GB_SIM_STATUS_RED);
        assert_string_equal(gb_sim_stage_id(t->failed_stage), fc->stage);
        long i = find_stage(msgs, 0, fc->stage, "failed");
        if (i < 0) {
            fail_msg("%s: no failed %s stage", gb_sim_fault_id(fc->fault), fc->stage);
        }
        assert_string_equal(str(json_array_get(msgs, (size_t)i), "hresult"), fc->hresult);
        assert_string_equal(str(json_array_get(msgs, (size_t)i + 1), "type"), "result");
        assert_string_equal(str(json_array_get(msgs, (size_t)i + 1), "screen"), "red");
        for (size_t e = 0; e < 3; e++) {
            if (fc->events[e] != 0 && !has_event(msgs, fc->events[e])) {
                fail_msg("%s: event %u missing", gb_sim_fault_id(fc->fault), fc->events[e]);
            }
        }
        gb_sim_free(sim);
        rec_free(&r);
    }
}

static void test_sim_fault_details_match_the_brief(void **state)
{
    rec_t r;

    /* TPM: a VM or a TPM 1.2 chip, and hello says so. */
    gb_sim_t *sim = one_device_with(GB_SIM_FAULT_TPM_ATTESTATION, 0, 5, &r);
    json_t *hw = json_object_get(json_array_get(r.msgs[0], 0), "hardware");
    assert_true(json_is_true(json_object_get(hw, "virtual_machine")) ||
                strcmp(str(hw, "tpm_version"), "1.2") == 0);
    assert_true(json_is_false(json_object_get(hw, "tpm_attestation")));
    assert_true(gb_sim_truth(sim, 0)->warnings & (1u << GB_SIM_WARN_TPM_NOT_2_0));
    gb_sim_free(sim);
    rec_free(&r);

    /* No cable: hello reports no wired link. */
    sim = one_device_with(GB_SIM_FAULT_NO_WIRED_NETWORK, 0, 5, &r);
    json_t *net = json_object_get(json_array_get(r.msgs[0], 0), "network");
    assert_string_equal(str(net, "medium"), "none");
    gb_sim_free(sim);
    rec_free(&r);

    /* Profile: event 807 or 815 (both show up across seeds). */
    bool seen807 = false, seen815 = false;
    for (uint64_t seed = 1; seed < 20 && !(seen807 && seen815); seed++) {
        sim = one_device_with(GB_SIM_FAULT_PROFILE_UNAVAILABLE, 0, seed, &r);
        seen807 |= has_event(r.msgs[0], 807);
        seen815 |= has_event(r.msgs[0], 815);
        assert_true(has_event(r.msgs[0], 807) != has_event(r.msgs[0], 815));
        gb_sim_free(sim);
        rec_free(&r);
    }
    assert_true(seen807 && seen815);

    /* App failure: the app itself reports failed with its LastHResult. */
    sim = one_device_with(GB_SIM_FAULT_APP_INSTALL_FAILED, 0, 5, &r);
    bool app_failed = false;
    for (size_t i = 0; i < json_array_size(r.msgs[0]); i++) {
        json_t *m = json_array_get(r.msgs[0], i);
        if (strcmp(str(m, "type"), "app") == 0 && strcmp(str(m, "state"), "failed") == 0) {
            app_failed = strcmp(str(m, "hresult"), "0x80070643") == 0;
        }
    }
    assert_true(app_failed);
    gb_sim_free(sim);
    rec_free(&r);

    /* Event texts are the real ones (the source article's form). */
    sim = one_device_with(GB_SIM_FAULT_DEVICE_OBJECT_MISSING, 0, 5, &r);
    bool text = false;
    for (size_t i = 0; i < json_array_size(r.msgs[0]); i++) {
        json_t *m = json_array_get(r.msgs[0], i);
        if (json_integer_value(json_object_get(m, "event_id")) == 180) {
            text = strcmp(str(m, "message"), "AutopilotManager failed during device enrollment "
                                             "phase AADEnroll. HRESULT=0x801C03F3") == 0;
            assert_string_equal(
                str(m, "channel"),
                "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot");
        }
    }
    assert_true(text);
    gb_sim_free(sim);
    rec_free(&r);
}

static void test_sim_component_update_error_is_skipped_and_stays_green(void **state)
{
    rec_t r;
    gb_sim_t *sim = one_device_with(GB_SIM_FAULT_COMPONENT_UPDATE_ERROR, 0, 5, &r);
    const gb_sim_truth_t *t = gb_sim_truth(sim, 0);
    json_t *msgs = r.msgs[0];

    assert_int_not_equal(t->status, GB_SIM_STATUS_RED);
    assert_true(t->warnings & (1u << GB_SIM_WARN_COMPONENT_UPDATE_ERROR));
    long f = find_stage(msgs, 0, "component_update", "failed");
    long s = find_stage(msgs, 0, "component_update", "skipped");
    assert_true(f > 0 && s > f);
    assert_true(has_event(msgs, 62407));
    assert_true(find_stage(msgs, (size_t)s, "device_setup", "succeeded") > s);
    gb_sim_free(sim);
    rec_free(&r);
}

static void test_sim_winevent_mode_sends_events_not_stages(void **state)
{
    for (size_t k = 0; k < GB_ARRAY_LEN(fault_cases); k++) {
        rec_t r;
        gb_sim_t *sim = one_device_with(fault_cases[k].fault, 1.0, 11, &r);
        json_t *msgs = r.msgs[0];
        assert_true(gb_sim_truth(sim, 0)->winevents);
        assert_int_equal(count_type(msgs, "stage"), 0);
        assert_int_equal(count_type(msgs, "result"), 0);
        assert_true(count_type(msgs, "hello") >= 1);
        for (size_t e = 0; e < 3; e++) {
            if (fault_cases[k].events[e] != 0) {
                assert_true(has_event(msgs, fault_cases[k].events[e]));
            }
        }
        assert_true(has_event(msgs, 62407)); /* the red screen */
        gb_sim_free(sim);
        rec_free(&r);
    }
    /* A green device logs the whole technician flow: TPM, join, MDM, setup, green page. */
    rec_t r;
    gb_sim_t *sim = one_device_with(GB_SIM_FAULT_NONE, 1.0, 11, &r);
    static const unsigned flow[] = {62404, 164, 161, 177, 169, 179, 181, 102, 104, 72, 1922, 62407};
    for (size_t i = 0; i < GB_ARRAY_LEN(flow); i++) {
        if (!has_event(r.msgs[0], flow[i])) {
            fail_msg("event %u missing from a green device's flow", flow[i]);
        }
    }
    gb_sim_free(sim);
    rec_free(&r);
}

/* ---- retries, handover, slots ---- */

static void test_sim_red_device_is_retried_as_attempt_2(void **state)
{
    gb_sim_config_t c;
    rec_t r;

    base_config(&c);
    no_faults(&c);
    c.devices = 40;
    c.slots = 40;
    c.fault_rate[GB_SIM_FAULT_DEVICE_OBJECT_MISSING] = 0.5;
    c.retry_delay_s = 600;
    gb_sim_t *sim = run(&c, &r);
    int retried_green = 0, red_twice = 0;
    for (uint32_t d = 0; d < c.devices; d++) {
        const gb_sim_truth_t *t = gb_sim_truth(sim, d);
        json_t *msgs = r.msgs[d];
        assert_true(t->attempts >= 1 && t->attempts <= 2);
        if (t->attempts == 1) {
            assert_int_equal(count_type(msgs, "hello"),
                             t->status == GB_SIM_STATUS_DELIVERED ? 2 : 1);
            continue;
        }
        /* Red, a technician delay, then a new hello and oobe start: attempt 2. */
        long red = -1;
        for (size_t i = 0; i < json_array_size(msgs); i++) {
            if (strcmp(str(json_array_get(msgs, i), "screen"), "red") == 0) {
                red = (long)i;
                break;
            }
        }
        assert_true(red > 0);
        json_t *hello = json_array_get(msgs, (size_t)red + 1);
        assert_string_equal(str(hello, "type"), "hello");
        assert_true(at_ms(hello) - at_ms(json_array_get(msgs, (size_t)red)) >= 450000);
        assert_true(is_stage(json_array_get(msgs, (size_t)red + 2), "oobe", "started"));
        if (t->status == GB_SIM_STATUS_RED) {
            assert_int_equal(t->failures[GB_SIM_FAULT_DEVICE_OBJECT_MISSING], 2);
            red_twice++;
        } else {
            assert_int_equal(t->failures[GB_SIM_FAULT_DEVICE_OBJECT_MISSING], 1);
            retried_green++;
        }
    }
    assert_true(retried_green > 0);
    assert_true(red_twice > 0);
    gb_sim_free(sim);
    rec_free(&r);
}

static void test_sim_handover_starts_90_minutes_after_reseal(void **state)
{
    gb_sim_config_t c;
    rec_t r;

    base_config(&c);
    no_faults(&c);
    c.devices = 30;
    c.handover_share = 1.0;
    c.handover_spread_min = 0;
    gb_sim_t *sim = run(&c, &r);
    for (uint32_t d = 0; d < c.devices; d++) {
        const gb_sim_truth_t *t = gb_sim_truth(sim, d);
        assert_int_equal(t->status, GB_SIM_STATUS_DELIVERED);
        assert_true(t->stage_start[GB_SIM_USER_OOBE] - t->resealed_at >= 90 * 60 * 1000);
        for (int s = GB_SIM_USER_OOBE; s < GB_SIM_DESKTOP; s++) {
            assert_true(t->stage_end[s] == t->stage_start[s + 1]);
        }
        assert_true(t->delivered_at == t->stage_end[GB_SIM_DESKTOP]);
    }
    gb_sim_free(sim);
    rec_free(&r);

    c.handover_share = 0;
    sim = run(&c, &r);
    for (uint32_t d = 0; d < c.devices; d++) {
        assert_int_equal(gb_sim_truth(sim, d)->status, GB_SIM_STATUS_RESEALED);
        assert_int_equal(find_stage(r.msgs[d], 0, "user_oobe", "started"), -1);
    }
    gb_sim_free(sim);
    rec_free(&r);
}

static void test_sim_slots_limit_devices_on_the_bench(void **state)
{
    gb_sim_config_t c;
    rec_t r;
    int64_t in[64], out[64];

    base_config(&c);
    c.devices = 40;
    c.slots = 5;
    gb_sim_t *sim = run(&c, &r);
    for (uint32_t d = 0; d < c.devices; d++) {
        const gb_sim_truth_t *t = gb_sim_truth(sim, d);
        in[d] = t->slot_at;
        out[d] = t->status == GB_SIM_STATUS_RED ? t->result_at : t->resealed_at;
        assert_true(in[d] >= 0 && out[d] > in[d]);
        assert_true(strcmp(t->slot, "A-1") == 0 || strcmp(t->slot, "A-2") == 0 ||
                    strcmp(t->slot, "A-3") == 0 || strcmp(t->slot, "A-4") == 0 ||
                    strcmp(t->slot, "A-5") == 0);
    }
    /* At each arrival, count who is on the bench: never more than the slots, and full. */
    int most = 0;
    for (uint32_t d = 0; d < c.devices; d++) {
        int n = 0;
        for (uint32_t e = 0; e < c.devices; e++) {
            n += in[e] <= in[d] && out[e] > in[d];
        }
        most = n > most ? n : most;
    }
    assert_int_equal(most, 5);
    gb_sim_free(sim);
    rec_free(&r);
}

/* ---- ground truth ---- */

static void test_sim_ground_truth_adds_up(void **state)
{
    gb_sim_config_t c;
    rec_t r;

    busy_room(&c, 9);
    gb_sim_t *sim = run(&c, &r);
    int64_t last_result = -1;
    for (uint32_t d = 0; d < c.devices; d++) {
        const gb_sim_truth_t *t = gb_sim_truth(sim, d);
        json_t *msgs = r.msgs[d];
        uint64_t bytes = 0;
        for (size_t i = 0; i < json_array_size(msgs); i++) {
            json_t *m = json_array_get(msgs, i);
            if (strcmp(str(m, "type"), "download") == 0) {
                bytes += (uint64_t)json_integer_value(json_object_get(m, "bytes"));
            }
            bool result = strcmp(str(m, "type"), "result") == 0 ||
                          strstr(str(m, "message"), "WhiteGloveSuccess") != NULL ||
                          strstr(str(m, "message"), "WhiteGloveFailed") != NULL;
            if (result && at_ms(m) > last_result) {
                last_result = at_ms(m);
            }
        }
        assert_int_equal(bytes, t->bytes);
        assert_int_equal(t->bytes, t->http_bytes + t->lan_bytes + t->cache_bytes);
        assert_int_equal(json_array_size(msgs), t->messages);
    }

    gb_buf_t j;
    gb_buf_init(&j);
    gb_sim_truth_json(sim, &j);
    json_error_t err;
    json_t *root = json_loadb(j.data, j.len, 0, &err);
    assert_non_null(root);
    double makespan = json_real_value(json_object_get(root, "makespan_s"));
    assert_int_equal((int64_t)(makespan * 1000 + 0.5), last_result - c.start_ms);
    json_int_t green = json_integer_value(json_object_get(root, "green"));
    json_int_t red = json_integer_value(json_object_get(root, "red"));
    assert_int_equal(green + red, c.devices);
    assert_int_equal(json_array_size(json_object_get(root, "per_device")), c.devices);
    json_decref(root);
    gb_buf_dispose(&j);
    gb_sim_free(sim);
    rec_free(&r);
}

static void test_sim_durations_follow_the_stage_times(void **state)
{
    gb_sim_config_t c;
    rec_t r;

    base_config(&c);
    no_faults(&c);
    fixed_times(&c, 10);
    c.devices = 1;
    c.handover_share = 1;
    c.n_apps = 0; /* device setup is its fixed part alone */
    gb_sim_t *sim = run(&c, &r);
    gb_sim_durations_t du;
    gb_sim_truth_durations(gb_sim_truth(sim, 0), &du);
    assert_int_equal(du.device_preparation_ms, 40000); /* four stages of 10 s */
    assert_int_equal(du.device_setup_ms, 10000);
    assert_int_equal(du.account_setup_ms, 10000);
    assert_int_equal(du.esp_ms, 60000);
    assert_int_equal(du.total_ms, 12 * 10000); /* oobe .. device_setup */
    gb_sim_free(sim);
    rec_free(&r);
}

/* ---- pieces ---- */

static void test_sim_heap_orders_by_time_then_insertion(void **state)
{
    gb_sim__heap_t h;
    gb_sim__event_t e;
    gb_sim__rng_t rng;

    gb_sim__heap_init(&h);
    gb_sim__rng_seed(&rng, 1, 0);
    for (uint32_t i = 0; i < 2000; i++) {
        gb_sim__heap_push(&h, (int64_t)gb_sim__rng_below(&rng, 50), 0, i, 0);
    }
    int64_t t = -1;
    uint32_t last_dev = 0;
    while (gb_sim__heap_pop(&h, &e)) {
        assert_true(e.t >= t);
        if (e.t == t) {
            assert_true(e.dev > last_dev); /* same time: insertion order */
        }
        t = e.t;
        last_dev = e.dev;
    }
    gb_sim__heap_dispose(&h);
}

static void test_sim_options_parse_and_check_bounds(void **state)
{
    gb_sim_options_t o;
    char err[256];
    char *ok[] = {"sim",
                  "--devices=5",
                  "--slots",
                  "3",
                  "--winevents",
                  "--fault-rate",
                  "multiple_mdm=0.5",
                  "--stage-time",
                  "landing=1:2:3",
                  "--payload",
                  "light"};

    gb_sim_options_defaults(&o);
    assert_int_equal(o.model.devices, 100);
    assert_int_equal(o.model.slots, 40);
    assert_true(o.model.uplink_mbps == 1000);
    assert_true(o.speed == 0);
    assert_true(o.model.fault_rate[GB_SIM_FAULT_TPM_ATTESTATION] == 0.01);
    assert_int_equal(gb_sim_options_parse(&o, (int)GB_ARRAY_LEN(ok), ok, err, sizeof(err)), 0);
    assert_int_equal(o.model.devices, 5);
    assert_int_equal(o.model.slots, 3);
    assert_true(o.model.winevent_share == 1.0);
    assert_true(o.model.fault_rate[GB_SIM_FAULT_MULTIPLE_MDM] == 0.5);
    assert_true(o.model.fault_rate[GB_SIM_FAULT_TPM_ATTESTATION] == 0.01); /* kept */
    assert_true(o.model.stage_time[GB_SIM_LANDING].hi == 3);
    assert_int_equal(o.model.n_apps, 3);

    static char *bad[][3] = {
        {"sim", "--devices", "0"},
        {"sim", "--uplink-mbps", "fast"},
        {"sim", "--no-such-flag", "1"},
        {"sim", "--fault-rate", "esp_timeout=0.1"},
        {"sim", "--stage-time", "oobe=3:2:1"},
        {"sim", "--payload", "nothing"},
        {"sim", "--handover-wait-min", "30"},
        {"sim", "--server", "http://x"},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(bad); i++) {
        gb_sim_options_defaults(&o);
        err[0] = '\0';
        if (gb_sim_options_parse(&o, 3, bad[i], err, sizeof(err)) == 0) {
            fail_msg("%s %s was accepted", bad[i][1], bad[i][2]);
        }
        assert_true(strlen(err) > 0);
    }
    gb_buf_t help;
    gb_buf_init(&help);
    gb_sim_options_help(&help);
    static const char *const contract[] = {
        "--server URL", "--token TOKEN", "--devices N", "--slots K",  "--uplink-mbps U",
        "--seed S",     "--speed X",     "--winevents", "--csv FILE", "--summary FILE"};
    for (size_t i = 0; i < GB_ARRAY_LEN(contract); i++) {
        assert_non_null(strstr(help.data, contract[i]));
    }
    gb_buf_dispose(&help);
}

static void test_sim_csv_has_the_intune_header_and_one_row_per_device(void **state)
{
    gb_sim_config_t c;
    base_config(&c);
    c.devices = 25;
    gb_sim_t *sim = gb_sim_new(&c, NULL, NULL);
    gb_buf_t csv;
    gb_buf_init(&csv);
    gb_sim_csv(sim, 300, "Staging", &csv);
    char *line = strtok(csv.data, "\n");
    assert_string_equal(line, "Device Serial Number,Windows Product ID,Hardware Hash,Group Tag,"
                              "Assigned User");
    int rows = 0;
    while ((line = strtok(NULL, "\n")) != NULL) {
        char *comma = strchr(line, ',');
        assert_non_null(comma);
        assert_memory_equal(line, gb_sim_device_serial(sim, (uint32_t)rows),
                            (size_t)(comma - line));
        assert_true(comma[1] == ',');            /* empty product id */
        assert_memory_equal(comma + 2, "T0", 2); /* the hash format's header bytes */
        char *tag = strchr(comma + 2, ',');
        assert_int_equal(tag - (comma + 2), 400); /* base64 of 300 bytes */
        /* The group tag, then the device's user (who signs in at the handover). */
        char want[96];
        const char *serial = gb_sim_device_serial(sim, (uint32_t)rows);
        int n = snprintf(want, sizeof(want), ",Staging,user.");
        for (const char *ch = serial; *ch != '\0'; ch++) {
            want[n++] = (char)tolower((unsigned char)*ch);
        }
        snprintf(want + n, sizeof(want) - (size_t)n, "@%s", GB_SIM_USER_DOMAIN);
        assert_string_equal(tag, want);
        rows++;
    }
    assert_int_equal(rows, 25);
    gb_buf_dispose(&csv);
    gb_sim_free(sim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim_same_seed_gives_byte_identical_messages),
        cmocka_unit_test(test_sim_different_seeds_differ),
        cmocka_unit_test(test_sim_messages_follow_the_protocol),
        cmocka_unit_test(test_sim_uplink_is_shared_fairly),
        cmocka_unit_test(test_sim_nic_cap_gives_the_rest_to_others),
        cmocka_unit_test(test_sim_uplink_integrates_bytes_exactly),
        cmocka_unit_test(test_sim_devices_downloading_together_get_equal_shares),
        cmocka_unit_test(test_sim_device_past_esp_timeout_ends_red),
        cmocka_unit_test(test_sim_each_fault_shows_its_stage_hresult_and_events),
        cmocka_unit_test(test_sim_fault_details_match_the_brief),
        cmocka_unit_test(test_sim_component_update_error_is_skipped_and_stays_green),
        cmocka_unit_test(test_sim_winevent_mode_sends_events_not_stages),
        cmocka_unit_test(test_sim_red_device_is_retried_as_attempt_2),
        cmocka_unit_test(test_sim_handover_starts_90_minutes_after_reseal),
        cmocka_unit_test(test_sim_slots_limit_devices_on_the_bench),
        cmocka_unit_test(test_sim_ground_truth_adds_up),
        cmocka_unit_test(test_sim_durations_follow_the_stage_times),
        cmocka_unit_test(test_sim_heap_orders_by_time_then_insertion),
        cmocka_unit_test(test_sim_options_parse_and_check_bounds),
        cmocka_unit_test(test_sim_csv_has_the_intune_header_and_one_row_per_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
