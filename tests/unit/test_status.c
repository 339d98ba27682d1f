/* test_status: status derivation, table-driven. Every row of tests/data/domain/scenarios.tsv is
 * run in its stage-message form and, when it has one, its Windows-event form; each form must meet
 * its expectations and both forms must end with the same status, stage runs and diagnosis. The
 * rest checks the rules that scenario files cannot reach: the apply and batch API, retries, the
 * stall clock, reseal clocks, bounds. */
#include "domain/internal.h"
#include "test_domain_support.h"

static void test_status_scenario(void **state)
{
    const th_row_t *row = *state;
    gb_dev_t a, b;

    th_run_file(row->stage_file, &a, true);
    if (row->event_file[0] != '\0') {
        th_run_file(row->event_file, &b, true);
        th_assert_same_outcome(&a, &b, row->name);
        gb_dev_dispose(&b);
    }
    gb_dev_dispose(&a);
}

static gb_msg_t stage_msg(uint64_t seq, int64_t at, gb_stage_t st, gb_run_state_t state)
{
    gb_msg_t m;
    memset(&m, 0, sizeof(m));
    m.seq = seq;
    m.at_ms = at;
    m.type = GB_MSG_STAGE;
    m.u.stage.stage = st;
    m.u.stage.state = state;
    return m;
}

static gb_msg_t heartbeat(uint64_t seq, int64_t at)
{
    gb_msg_t m;
    memset(&m, 0, sizeof(m));
    m.seq = seq;
    m.at_ms = at;
    m.type = GB_MSG_HEARTBEAT;
    return m;
}

static gb_msg_t hello_in_slot(uint64_t seq, int64_t at, const char *slot)
{
    gb_msg_t m;
    memset(&m, 0, sizeof(m));
    m.seq = seq;
    m.at_ms = at;
    m.type = GB_MSG_HELLO;
    m.u.hello.slot = (gb_str_t){slot, strlen(slot)};
    m.u.hello.link_mbps = -1;
    return m;
}

#define MIN (60 * 1000LL)

static void test_status_apply_rejects_seen_seq(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "S1");
    gb_msg_t m = heartbeat(5, TH_BASE_MS);
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), GB_EINVAL);
    m.seq = 4;
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), GB_EINVAL);
    m.seq = 0;
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), GB_EINVAL);
    assert_int_equal(dev.n_applied, 1);
    assert_int_equal(dev.max_seq, 5);
    assert_int_equal(dev.contig_seq, 0); /* seqs 1-4 never came */
    gb_dev_dispose(&dev);
}

static void test_status_batch_prepare_sorts_and_drops(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "S1");
    gb_msg_t batch[6];
    uint64_t seqs[] = {3, 1, 2, 3, 2, 4};
    for (int i = 0; i < 6; i++) {
        batch[i] = heartbeat(seqs[i], TH_BASE_MS + i);
        batch[i].index = (uint32_t)i;
    }
    size_t n = 6;
    assert_false(gb_msg_batch_prepare(&dev, batch, &n));
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(batch[i].seq, i + 1);
    }
    /* The first of two equal seqs in the request is the one kept. */
    assert_int_equal(batch[1].index, 2);
    assert_int_equal(batch[2].index, 0);
    assert_int_equal(gb_dev_apply_batch(&dev, NULL, batch, n), 4);
    assert_int_equal(dev.contig_seq, 4);

    /* A retry of everything: all known, nothing left, no replay. */
    n = 6;
    for (int i = 0; i < 6; i++) {
        batch[i] = heartbeat(seqs[i], TH_BASE_MS + i);
    }
    assert_false(gb_msg_batch_prepare(&dev, batch, &n));
    assert_int_equal(n, 0);

    /* A gap (6 before 5): 5 later needs a replay. */
    batch[0] = heartbeat(6, TH_BASE_MS + 10);
    n = 1;
    assert_false(gb_msg_batch_prepare(&dev, batch, &n));
    assert_int_equal(gb_dev_apply_batch(&dev, NULL, batch, n), 1);
    batch[0] = heartbeat(5, TH_BASE_MS + 9);
    batch[1] = heartbeat(7, TH_BASE_MS + 11);
    n = 2;
    assert_true(gb_msg_batch_prepare(&dev, batch, &n));
    assert_int_equal(n, 2);
    /* Applying without the replay skips the low one. */
    assert_int_equal(gb_dev_apply_batch(&dev, NULL, batch, n), 1);
    assert_int_equal(dev.max_seq, 7);
    gb_dev_dispose(&dev);
}

static void test_status_retry_only_when_red(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "S1");
    assert_int_equal(gb_dev_retry(&dev, TH_BASE_MS), GB_EINVAL);
    gb_msg_t m = stage_msg(1, TH_BASE_MS, GB_STAGE_OOBE, GB_RUN_STARTED);
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
    assert_int_equal(dev.status, GB_DEV_PROVISIONING);
    assert_int_equal(gb_dev_retry(&dev, TH_BASE_MS), GB_EINVAL);
    m = stage_msg(2, TH_BASE_MS + MIN, GB_STAGE_OOBE, GB_RUN_FAILED);
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
    assert_int_equal(dev.status, GB_DEV_RED);
    assert_int_equal(gb_dev_retry(&dev, TH_BASE_MS + 2 * MIN), 0);
    assert_int_equal(dev.status, GB_DEV_PROVISIONING);
    assert_int_equal(dev.attempt, 2);
    assert_null(gb_dev_diagnosis(&dev));
    assert_int_equal(gb_dev_retry(&dev, TH_BASE_MS), GB_EINVAL);
    gb_dev_dispose(&dev);
}

static void test_status_attempts_are_bounded(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "S1");
    uint64_t seq = 1;
    int64_t t = TH_BASE_MS;
    for (int i = 0; i < GB_DEV_MAX_ATTEMPTS + 5; i++) {
        gb_msg_t a = stage_msg(seq++, t++, GB_STAGE_OOBE, GB_RUN_STARTED);
        gb_msg_t b = stage_msg(seq++, t++, GB_STAGE_OOBE, GB_RUN_FAILED);
        assert_int_equal(gb_dev_apply(&dev, NULL, &a), 0);
        assert_int_equal(gb_dev_apply(&dev, NULL, &b), 0);
    }
    assert_int_equal(dev.attempt, GB_DEV_MAX_ATTEMPTS);
    assert_int_equal(dev.status, GB_DEV_RED);
    assert_int_equal(gb_dev_retry(&dev, t), GB_EBUSY);
    assert_true(dev.n_runs <= GB_DEV_MAX_ATTEMPTS);
    gb_dev_dispose(&dev);
}

static void test_status_stalled_only_while_working(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "S1");
    gb_apply_ctx_t ctx = {0, false, TH_BASE_MS};
    assert_false(gb_dev_is_stalled(&dev, TH_BASE_MS + 60 * MIN, 15 * MIN)); /* registered */
    gb_msg_t m = stage_msg(1, TH_BASE_MS - 5 * MIN, GB_STAGE_OOBE, GB_RUN_STARTED);
    assert_int_equal(gb_dev_apply(&dev, &ctx, &m), 0);
    /* Arrival time, not the device clock, drives the stall clock. */
    assert_false(gb_dev_is_stalled(&dev, TH_BASE_MS + 15 * MIN, 15 * MIN));
    assert_true(gb_dev_is_stalled(&dev, TH_BASE_MS + 15 * MIN + 1, 15 * MIN));
    gb_dev_set_last_arrival(&dev, TH_BASE_MS + 10 * MIN);
    assert_false(gb_dev_is_stalled(&dev, TH_BASE_MS + 16 * MIN, 15 * MIN));
    gb_dev_dispose(&dev);
}

static void test_status_reseal_clocks(void **state)
{
    GB_UNUSED(state);
    int64_t t;
    struct {
        const char *from, *to;
    } cases[] = {
        {"2026-11-24T10:00:00.000Z", "2027-05-24T10:00:00.000Z"},
        {"2026-08-31T23:59:59.999Z", "2027-02-28T23:59:59.999Z"},
        {"2027-08-31T12:00:00.000Z", "2028-02-29T12:00:00.000Z"},
        {"2026-12-31T00:00:00.000Z", "2027-06-30T00:00:00.000Z"},
        {"1969-12-31T23:00:00.000Z", "1970-06-30T23:00:00.000Z"},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        char out[32];
        assert_true(gb_time_parse_rfc3339(cases[i].from, strlen(cases[i].from), &t));
        gb_time_format_rfc3339(gb_domain__add_months(t, 6), out);
        assert_string_equal(out, cases[i].to);
    }
    assert_true(gb_time_parse_rfc3339("2026-03-31T00:00:00Z", 20, &t));
    char out[32];
    gb_time_format_rfc3339(gb_domain__add_months(t, -1), out);
    assert_string_equal(out, "2026-02-28T00:00:00.000Z");
    gb_time_format_rfc3339(gb_domain__add_months(t, 12 * 400), out);
    assert_string_equal(out, "2426-03-31T00:00:00.000Z");
}

static void test_status_copy_is_deep(void **state)
{
    GB_UNUSED(state);
    gb_dev_t a, b;
    th_run_file("domain/scenarios/happy_stage.jsonl", &a, false);
    gb_dev_copy(&b, &a);
    char *sa = th_snapshot(&a);
    char *sb = th_snapshot(&b);
    assert_string_equal(sa, sb);
    /* Changing the copy leaves the original alone. */
    gb_dev_set_slot(&b, "B-1");
    b.runs[0].state = GB_RUN_FAILED;
    b.apps[0].name[0] = 'X';
    char *sa2 = th_snapshot(&a);
    assert_string_equal(sa, sa2);
    gb_dev_dispose(&a);
    /* The copy outlives the original. */
    assert_int_equal(b.status, GB_DEV_DELIVERED);
    gb_dev_dispose(&b);
    free(sa);
    free(sb);
    free(sa2);
}

static void test_status_clear_derived_keeps_identity(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    th_run_file("domain/scenarios/happy_stage.jsonl", &dev, false);
    gb_dev_clear_derived(&dev);
    assert_string_equal(dev.serial, "PF3ABC12");
    assert_string_equal(dev.group_tag, "STAGING");
    assert_string_equal(dev.profile, "Staging room");
    assert_true(dev.imported);
    assert_string_equal(dev.slot, "A-12"); /* the bench position stays with the identity */
    assert_int_equal(dev.status, GB_DEV_REGISTERED);
    assert_int_equal(dev.n_runs, 0);
    assert_int_equal(dev.n_apps, 0);
    assert_int_equal(dev.max_seq, 0);
    assert_int_equal(dev.attempt, 1);
    gb_dev_dispose(&dev);
}

static void test_status_rebuild_repeats_retries(void **state)
{
    GB_UNUSED(state);
    th_scenario_t sc;
    gb_dev_t live, again;
    th_scenario_load(&sc, "domain/scenarios/retry_action.jsonl");
    th_scenario_run(&sc, &live, false);

    /* The stored sequence in reverse order, and the retry mark, rebuild the same state. */
    gb_msg_t msgs[64];
    size_t n = 0;
    memset(msgs, 0, sizeof(msgs));
    gb_action_mark_t mark = {.after_seq = 0};
    uint64_t max_seq = 0;
    for (size_t i = 0; i < sc.n_steps; i++) {
        if (sc.steps[i].kind == TH_MSG) {
            msgs[n++] = sc.steps[i].msg;
            max_seq = sc.steps[i].msg.seq;
        } else if (sc.steps[i].kind == TH_RETRY) {
            mark = (gb_action_mark_t){.after_seq = max_seq, .at_ms = sc.steps[i].at_ms};
        }
    }
    for (size_t i = 0; i < n / 2; i++) {
        gb_msg_t t = msgs[i];
        msgs[i] = msgs[n - 1 - i];
        msgs[n - 1 - i] = t;
    }
    assert_true(n > 0);
    th_dev_init(&sc, &again);
    gb_apply_ctx_t ctx = th_ctx(&sc, msgs[0].at_ms);
    gb_dev_rebuild(&again, &ctx, msgs, n, &mark, 1);
    gb_dev_set_last_arrival(&again, live.last_arrival_ms);
    char *a = th_snapshot(&live), *b = th_snapshot(&again);
    assert_string_equal(a, b);
    assert_int_equal(again.attempt, 2);
    free(a);
    free(b);
    gb_dev_dispose(&live);
    gb_dev_dispose(&again);
    th_scenario_free(&sc);
}

/* A technician's slot assignment is repeated where it was made: it replaces the slot of an
 * earlier hello, and a later hello that names a slot replaces it, as live. */
static void test_status_rebuild_repeats_slot_assignments(void **state)
{
    GB_UNUSED(state);
    gb_msg_t msgs[3] = {
        hello_in_slot(1, TH_BASE_MS, "A-12"),
        stage_msg(2, TH_BASE_MS + MIN, GB_STAGE_SECURING_HARDWARE, GB_RUN_STARTED),
        hello_in_slot(3, TH_BASE_MS + 2 * MIN, "C-03"),
    };
    gb_action_mark_t marks[] = {
        {.after_seq = 2, .at_ms = TH_BASE_MS + 90000, .assign_slot = true, .slot = "B-07"},
    };
    gb_dev_t dev;
    gb_dev_init(&dev, "S1");
    gb_dev_rebuild(&dev, NULL, msgs, 2, marks, 1);
    assert_string_equal(dev.slot, "B-07");
    gb_dev_rebuild(&dev, NULL, msgs, 3, marks, 1);
    assert_string_equal(dev.slot, "C-03");
    /* Two assignments after one message keep their order; the last one clears the slot. */
    gb_action_mark_t two[] = {
        {.after_seq = 2, .assign_slot = true, .slot = "B-07"},
        {.after_seq = 2, .assign_slot = true, .slot = NULL},
    };
    gb_dev_rebuild(&dev, NULL, msgs, 2, two, 2);
    assert_null(dev.slot);
    gb_dev_dispose(&dev);
}

static void test_status_open_phase_counts_to_last_seen(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "S1");
    gb_msg_t m = stage_msg(1, TH_BASE_MS, GB_STAGE_SECURING_HARDWARE, GB_RUN_STARTED);
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
    m = heartbeat(2, TH_BASE_MS + 7 * MIN);
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
    gb_durations_t d;
    gb_dev_durations(&dev, &d);
    assert_int_equal(d.device_preparation_ms, 7 * MIN);
    assert_int_equal(d.device_setup_ms, -1);
    assert_int_equal(d.total_ms, 7 * MIN);
    double mbps;
    assert_false(gb_dev_mean_mbps(&dev, &mbps));
    gb_dev_dispose(&dev);
}

static void test_status_late_start_is_ignored(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "S1");
    gb_msg_t m = stage_msg(1, TH_BASE_MS, GB_STAGE_LANDING, GB_RUN_STARTED);
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
    /* A delayed report of an earlier stage does not reopen the flow. */
    m = stage_msg(2, TH_BASE_MS + MIN, GB_STAGE_OOBE, GB_RUN_STARTED);
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
    assert_int_equal(dev.n_runs, 1);
    assert_int_equal(dev.stage, GB_STAGE_LANDING);
    assert_int_equal(dev.stage_state, GB_RUN_STARTED);
    /* An end without a start is kept without a start time. */
    m = stage_msg(3, TH_BASE_MS + 2 * MIN, GB_STAGE_PROFILE_DOWNLOAD, GB_RUN_SUCCEEDED);
    assert_int_equal(gb_dev_apply(&dev, NULL, &m), 0);
    const gb_stage_run_t *r = gb_dev_find_run(&dev, 1, GB_STAGE_PROFILE_DOWNLOAD);
    assert_non_null(r);
    assert_true(r->started_ms == GB_TIME_NONE);
    assert_int_equal(r->ended_ms, TH_BASE_MS + 2 * MIN);
    gb_dev_dispose(&dev);
}

static void test_status_hybrid_from_ctx(void **state)
{
    GB_UNUSED(state);
    gb_dev_t dev;
    gb_dev_init(&dev, "S1");
    gb_dev_set_imported(&dev, true);
    assert_int_equal(gb_dev_warnings(&dev, GB_TIME_NONE), 0);
    gb_dev_set_imported(&dev, false);
    assert_int_equal(gb_dev_warnings(&dev, GB_TIME_NONE), GB_WARN_BIT(GB_WARN_NOT_IMPORTED));
    gb_dev_set_imported(&dev, true);
    gb_apply_ctx_t ctx = {45, true, GB_TIME_NONE};
    gb_msg_t m = heartbeat(1, TH_BASE_MS);
    assert_int_equal(gb_dev_apply(&dev, &ctx, &m), 0);
    assert_int_equal(gb_dev_warnings(&dev, GB_TIME_NONE),
                     GB_WARN_BIT(GB_WARN_HYBRID_JOIN_UNSUPPORTED));
    assert_true(dev.last_arrival_ms == GB_TIME_NONE);
    gb_dev_dispose(&dev);
}

int main(void)
{
    th_row_t *rows;
    size_t n = th_load_index(&rows);
    struct CMUnitTest *tests = calloc(n + 16, sizeof(*tests));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        tests[k] = (struct CMUnitTest)cmocka_unit_test_prestate(test_status_scenario, &rows[i]);
        tests[k].name = rows[i].name;
        k++;
    }
    const struct CMUnitTest more[] = {
        cmocka_unit_test(test_status_apply_rejects_seen_seq),
        cmocka_unit_test(test_status_batch_prepare_sorts_and_drops),
        cmocka_unit_test(test_status_retry_only_when_red),
        cmocka_unit_test(test_status_attempts_are_bounded),
        cmocka_unit_test(test_status_stalled_only_while_working),
        cmocka_unit_test(test_status_reseal_clocks),
        cmocka_unit_test(test_status_copy_is_deep),
        cmocka_unit_test(test_status_clear_derived_keeps_identity),
        cmocka_unit_test(test_status_rebuild_repeats_retries),
        cmocka_unit_test(test_status_rebuild_repeats_slot_assignments),
        cmocka_unit_test(test_status_open_phase_counts_to_last_seen),
        cmocka_unit_test(test_status_late_start_is_ignored),
        cmocka_unit_test(test_status_hybrid_from_ctx),
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(more); i++) {
        tests[k++] = more[i];
    }
    int rc = _cmocka_run_group_tests("status", tests, k, NULL, NULL);
    free(tests);
    free(rows);
    return rc;
}
