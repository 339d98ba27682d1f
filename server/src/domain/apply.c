/* apply: status derivation. Messages are applied strictly in seq order, each one exactly once
 * (max_seq guards it), and every rule depends only on the state and the message, so a state is
 * a pure function of the sorted sequence (plus retries). The contract's rules, as kept here:
 *   - a technician-flow stage moves registered to provisioning;
 *   - device_setup succeeded, or the green screen, moves provisioning to green;
 *   - a failed stage other than component_update, or the red screen, makes the device red;
 *   - reseal succeeded after green: resealed (with the two reseal clocks);
 *   - a user-flow stage after reseal: handover; desktop: delivered;
 *   - after red, an oobe or enterprise_provisioning start, or a retry, opens the next attempt.
 * Runs: one per stage per attempt. A start closes the earlier stages still running (ESP is
 * sequential); a repeated or late start changes nothing; the first end of a run wins, except
 * that a failed component_update may still be skipped. While red the flow is stopped: only a
 * new attempt starts stages again. */
#include <stdlib.h>
#include <string.h>

#include "domain/domain.h"
#include "domain/internal.h"

static const gb_apply_ctx_t default_ctx = {GB_ESP_TIMEOUT_DEFAULT_MIN, false, GB_TIME_NONE};

static gb_attempt_t *cur(gb_dev_t *dev)
{
    return &dev->attempts[dev->attempt - 1];
}

/* Index of the current attempt's run of stage, or -1. Runs of the current attempt are the
 * last ones, as runs are only ever added to the current attempt. */
static int32_t find_run(const gb_dev_t *dev, gb_stage_t stage)
{
    for (uint32_t i = dev->n_runs; i-- > 0;) {
        const gb_stage_run_t *r = &dev->runs[i];
        if (r->attempt != dev->attempt) {
            break;
        }
        if (r->stage == stage) {
            return (int32_t)i;
        }
    }
    return -1;
}

/* Index of the first run of the current attempt. */
static uint32_t attempt_first_run(const gb_dev_t *dev)
{
    uint32_t i = dev->n_runs;
    while (i > 0 && dev->runs[i - 1].attempt == dev->attempt) {
        i--;
    }
    return i;
}

static bool later_run_exists(const gb_dev_t *dev, gb_stage_t stage)
{
    for (uint32_t i = attempt_first_run(dev); i < dev->n_runs; i++) {
        if (dev->runs[i].stage > stage) {
            return true;
        }
    }
    return false;
}

static int32_t push_run(gb_dev_t *dev, gb_stage_t stage, int64_t started, int64_t ended,
                        gb_run_state_t state, bool has_hr, uint32_t hr)
{
    gb_stage_run_t r = {
        .started_ms = started,
        .ended_ms = ended,
        .hresult = has_hr ? hr : 0,
        .stage = (uint8_t)stage,
        .state = (uint8_t)state,
        .attempt = (uint8_t)dev->attempt,
        .has_hresult = has_hr,
    };
    gb_dev__push_run(dev, &r);
    return (int32_t)dev->n_runs - 1;
}

static void warn(gb_dev_t *dev, gb_warn_t w)
{
    dev->warnings |= GB_WARN_BIT(w);
}

/* Opens attempt n + 1. False when the device has used all its attempts. */
static bool open_attempt(gb_dev_t *dev, int64_t at)
{
    if (dev->n_attempts >= GB_DEV_MAX_ATTEMPTS) {
        return false;
    }
    gb_dev__push_attempt(dev, at);
    dev->attempt = dev->n_attempts;
    dev->status = GB_DEV_PROVISIONING;
    dev->stage = GB_STAGE_NONE;
    dev->stage_state = GB_RUN_NONE;
    dev->setup_bytes = 0;
    dev->setup_ms = 0;
    dev->resealed_ms = GB_TIME_NONE;
    return true;
}

static void go_green(gb_dev_t *dev, int64_t at)
{
    gb_attempt_t *a = cur(dev);
    dev->status = GB_DEV_GREEN;
    a->outcome = GB_DEV_GREEN;
    a->ended_ms = at;
    if (dev->attempt == 1) {
        dev->first_time_right = true;
    }
}

static void go_red(gb_dev_t *dev, int64_t at, gb_stage_t stage, int32_t run)
{
    gb_attempt_t *a = cur(dev);
    /* The flow stops: nothing else of this attempt is running any more. */
    for (uint32_t i = attempt_first_run(dev); i < dev->n_runs; i++) {
        gb_stage_run_t *r = &dev->runs[i];
        if (r->state == GB_RUN_STARTED) {
            r->state = GB_RUN_FAILED;
            r->ended_ms = at;
        }
    }
    dev->status = GB_DEV_RED;
    a->outcome = GB_DEV_RED;
    a->ended_ms = at;
    a->fail_run = run;
    a->fail_stage = (uint8_t)stage;
}

/* The first user-flow activity after reseal: handover, and the two reseal clocks checked. */
static void enter_user_flow(gb_dev_t *dev, int64_t at)
{
    if (dev->status != GB_DEV_RESEALED) {
        return;
    }
    if (at < gb_dev_ready_for_user_ms(dev)) {
        warn(dev, GB_WARN_USER_FLOW_TOO_SOON);
    }
    if (at >= gb_dev_reseal_expires_ms(dev)) {
        warn(dev, GB_WARN_RESEAL_EXPIRED);
    }
    dev->status = GB_DEV_HANDOVER;
}

static void on_user_stage(gb_dev_t *dev, gb_stage_t stage, int64_t at)
{
    enter_user_flow(dev, at);
    if (stage == GB_STAGE_DESKTOP && dev->status == GB_DEV_HANDOVER) {
        dev->status = GB_DEV_DELIVERED;
    }
}

static void on_started(gb_dev_t *dev, gb_stage_t stage, int64_t at)
{
    if (gb_stage_flow(stage) == GB_FLOW_TECHNICIAN) {
        if (dev->status == GB_DEV_REGISTERED) {
            dev->status = GB_DEV_PROVISIONING;
        }
    } else {
        on_user_stage(dev, stage, at);
    }
}

static void on_succeeded(gb_dev_t *dev, gb_stage_t stage, int64_t at)
{
    if (gb_stage_flow(stage) == GB_FLOW_USER) {
        on_user_stage(dev, stage, at);
        return;
    }
    if (dev->status == GB_DEV_REGISTERED) {
        dev->status = GB_DEV_PROVISIONING;
    }
    if (stage == GB_STAGE_DEVICE_SETUP && dev->status == GB_DEV_PROVISIONING) {
        go_green(dev, at);
    } else if (stage == GB_STAGE_RESEAL && dev->status == GB_DEV_GREEN) {
        dev->status = GB_DEV_RESEALED;
        dev->resealed_ms = at;
    }
}

static void on_failed(gb_dev_t *dev, gb_stage_t stage, int64_t at, int32_t run)
{
    if (gb_stage_flow(stage) == GB_FLOW_USER) {
        enter_user_flow(dev, at);
    } else if (dev->status == GB_DEV_REGISTERED) {
        dev->status = GB_DEV_PROVISIONING;
    }
    if (stage == GB_STAGE_COMPONENT_UPDATE) {
        warn(dev, GB_WARN_COMPONENT_UPDATE_ERROR); /* not fatal: the technician skips it */
        return;
    }
    if (dev->status != GB_DEV_RED && dev->status != GB_DEV_DELIVERED) {
        go_red(dev, at, stage, run);
    }
}

/* ESP is sequential: when stage begins, every earlier stage of the attempt is over. A failed
 * component update that the flow left behind was skipped. */
static void close_earlier(gb_dev_t *dev, gb_stage_t stage, int64_t at)
{
    for (uint32_t i = attempt_first_run(dev); i < dev->n_runs; i++) {
        gb_stage_run_t *r = &dev->runs[i];
        if (r->stage >= stage) {
            continue;
        }
        if (r->state == GB_RUN_STARTED) {
            r->state = GB_RUN_SUCCEEDED;
            r->ended_ms = at;
            on_succeeded(dev, (gb_stage_t)r->stage, at);
        } else if (r->state == GB_RUN_FAILED && r->stage == GB_STAGE_COMPONENT_UPDATE) {
            r->state = GB_RUN_SKIPPED;
            r->ended_ms = at;
        }
    }
}

static void start_stage(gb_dev_t *dev, gb_stage_t stage, int64_t at)
{
    if (stage <= GB_STAGE_NONE || stage >= GB_STAGE_COUNT) {
        return;
    }
    if (dev->status == GB_DEV_RED) {
        bool restart = stage == GB_STAGE_OOBE || stage == GB_STAGE_ENTERPRISE_PROVISIONING;
        if (!restart || !open_attempt(dev, at)) {
            return;
        }
    }
    if (find_run(dev, stage) >= 0 || later_run_exists(dev, stage)) {
        return;
    }
    close_earlier(dev, stage, at);
    push_run(dev, stage, at, GB_TIME_NONE, GB_RUN_STARTED, false, 0);
    if (cur(dev)->started_ms == GB_TIME_NONE) {
        cur(dev)->started_ms = at;
    }
    dev->stage = stage;
    on_started(dev, stage, at);
}

static void end_stage(gb_dev_t *dev, gb_stage_t stage, gb_run_state_t state, int64_t at,
                      bool has_hr, uint32_t hr)
{
    if (stage <= GB_STAGE_NONE || stage >= GB_STAGE_COUNT || state == GB_RUN_NONE ||
        state == GB_RUN_STARTED) {
        return;
    }
    int32_t i = find_run(dev, stage);
    if (i < 0) {
        if (dev->status == GB_DEV_RED) {
            return;
        }
        /* Only its end was reported: the run is kept, without a start. */
        close_earlier(dev, stage, at);
        i = push_run(dev, stage, GB_TIME_NONE, at, state, has_hr, hr);
        if (cur(dev)->started_ms == GB_TIME_NONE) {
            cur(dev)->started_ms = at;
        }
    } else {
        gb_stage_run_t *r = &dev->runs[i];
        if (r->state == GB_RUN_STARTED) {
            r->state = (uint8_t)state;
            r->ended_ms = at;
            if (has_hr) {
                r->has_hresult = true;
                r->hresult = hr;
            }
        } else {
            bool skip_after_failure = r->state == GB_RUN_FAILED && state == GB_RUN_SKIPPED;
            if (skip_after_failure) {
                r->state = GB_RUN_SKIPPED;
                r->ended_ms = at;
                dev->stage = stage;
            }
            if ((r->state == state || skip_after_failure) && !r->has_hresult && has_hr) {
                r->has_hresult = true;
                r->hresult = hr;
            }
            return; /* the first end wins; its effects happened then */
        }
    }
    dev->stage = stage;
    if (state == GB_RUN_SUCCEEDED) {
        on_succeeded(dev, stage, at);
    } else if (state == GB_RUN_FAILED) {
        on_failed(dev, stage, at, i);
    } else if (gb_stage_flow(stage) == GB_FLOW_USER) {
        on_user_stage(dev, stage, at);
    }
}

static void result_green(gb_dev_t *dev, int64_t at)
{
    if (dev->status != GB_DEV_REGISTERED && dev->status != GB_DEV_PROVISIONING) {
        return;
    }
    for (uint32_t i = attempt_first_run(dev); i < dev->n_runs; i++) {
        gb_stage_run_t *r = &dev->runs[i];
        if (r->state == GB_RUN_STARTED) {
            r->state = GB_RUN_SUCCEEDED;
            r->ended_ms = at;
            on_succeeded(dev, (gb_stage_t)r->stage, at);
        }
    }
    if (dev->status == GB_DEV_REGISTERED || dev->status == GB_DEV_PROVISIONING) {
        go_green(dev, at);
    }
}

static void result_red(gb_dev_t *dev, int64_t at)
{
    if (dev->status != GB_DEV_REGISTERED && dev->status != GB_DEV_PROVISIONING &&
        dev->status != GB_DEV_GREEN) {
        return;
    }
    int32_t run = -1;
    for (uint32_t i = attempt_first_run(dev); i < dev->n_runs; i++) {
        if (dev->runs[i].state == GB_RUN_STARTED) {
            run = (int32_t)i; /* the last one still running is the one that failed */
        }
    }
    gb_stage_t stage = dev->stage;
    if (run >= 0) {
        stage = (gb_stage_t)dev->runs[run].stage;
    } else {
        int32_t i = find_run(dev, stage);
        if (i >= 0 && dev->runs[i].state == GB_RUN_FAILED) {
            run = i;
        }
    }
    dev->stage = stage;
    go_red(dev, at, stage, run);
}

/* Recomputes the current attempt's diagnosis while red: evidence may arrive after the failure.
 * A failed run without an HRESULT takes the diagnosis's, as the red screen would show it. */
static void refresh_diagnosis(gb_dev_t *dev, const gb_apply_ctx_t *ctx)
{
    if (dev->status != GB_DEV_RED) {
        return;
    }
    gb_attempt_t *a = cur(dev);
    gb_stage_run_t *run = a->fail_run >= 0 ? &dev->runs[a->fail_run] : NULL;
    int timeout_min = ctx->esp_timeout_min > 0 ? ctx->esp_timeout_min : GB_ESP_TIMEOUT_DEFAULT_MIN;
    gb_domain__diag_input_t in = {
        .stage = (gb_stage_t)a->fail_stage,
        .has_hresult = run != NULL && run->has_hresult,
        .hresult = run != NULL ? run->hresult : 0,
        .evidence = a->evidence,
        .has_evidence_hresult = a->has_evidence_hresult,
        .evidence_hresult = a->evidence_hresult,
        .medium = dev->medium,
        .virtual_machine = dev->virtual_machine,
        .tpm_attestation = dev->tpm_attestation,
        .tpm_below_2 = gb_domain__tpm_below_2(dev->tpm_version),
        .run_ms = -1,
        .esp_timeout_ms = (int64_t)timeout_min * 60000,
    };
    if (run != NULL && run->started_ms != GB_TIME_NONE && run->ended_ms != GB_TIME_NONE) {
        in.run_ms = run->ended_ms > run->started_ms ? run->ended_ms - run->started_ms : 0;
    }
    gb_domain__diagnose(&in, &a->diagnosis);
    if (run != NULL && !run->has_hresult && a->diagnosis.has_hresult) {
        run->has_hresult = true;
        run->hresult = a->diagnosis.hresult;
    }
}

static void set_hello_str(char **slot, gb_str_t s)
{
    if (s.p == NULL) {
        return;
    }
    free(*slot);
    *slot = gb_xstrndup(s.p, s.len > GB_HELLO_STR_MAX ? GB_HELLO_STR_MAX : s.len);
}

static void apply_hello(gb_dev_t *dev, const gb_msg_hello_t *h)
{
    set_hello_str(&dev->agent, h->agent);
    set_hello_str(&dev->os_build, h->os_build);
    set_hello_str(&dev->manufacturer, h->manufacturer);
    set_hello_str(&dev->model, h->model);
    set_hello_str(&dev->tpm_version, h->tpm_version);
    set_hello_str(&dev->slot, h->slot);
    if (h->tpm_attestation != GB_TRI_UNSET) {
        dev->tpm_attestation = h->tpm_attestation;
    }
    if (h->virtual_machine != GB_TRI_UNSET) {
        dev->virtual_machine = h->virtual_machine;
    }
    if (h->medium != GB_MEDIUM_UNKNOWN) {
        dev->medium = h->medium;
    }
    if (h->link_mbps >= 0) {
        dev->link_mbps = h->link_mbps;
    }
    /* Preflight warnings follow the latest hardware report. */
    dev->warnings &= ~(GB_WARN_BIT(GB_WARN_VIRTUAL_MACHINE) | GB_WARN_BIT(GB_WARN_TPM_NOT_2_0));
    if (dev->virtual_machine == GB_TRI_TRUE) {
        warn(dev, GB_WARN_VIRTUAL_MACHINE);
    }
    if (dev->tpm_attestation == GB_TRI_FALSE || gb_domain__tpm_below_2(dev->tpm_version)) {
        warn(dev, GB_WARN_TPM_NOT_2_0);
    }
}

static void apply_app(gb_dev_t *dev, const gb_msg_app_t *m)
{
    size_t len = m->name.len > GB_APP_NAME_MAX ? GB_APP_NAME_MAX : m->name.len;
    gb_app_t *app = NULL;

    for (uint32_t i = 0; i < dev->n_apps; i++) {
        if (strlen(dev->apps[i].name) == len && memcmp(dev->apps[i].name, m->name.p, len) == 0) {
            app = &dev->apps[i];
            break;
        }
    }
    if (app == NULL) {
        app = gb_dev__add_app(dev, m->name.p ? m->name.p : "", len);
    }
    if (app != NULL) {
        app->state = (uint8_t)m->state;
        if (m->bytes >= 0) {
            app->has_bytes = true;
            app->bytes = (uint64_t)m->bytes;
        }
        if (m->has_hresult) {
            app->has_hresult = true;
            app->hresult = m->hresult;
        }
    }
    if (m->state == GB_APP_FAILED) {
        gb_attempt_t *a = cur(dev);
        a->evidence |= GB_EV_APP_FAILED;
        if (m->has_hresult && m->hresult != 0) {
            a->has_evidence_hresult = true;
            a->evidence_hresult = m->hresult;
        }
    }
}

static uint64_t sat_add(uint64_t a, int64_t b)
{
    if (b <= 0) {
        return a;
    }
    /* Capped at INT64_MAX so every counter fits a signed 64-bit column and a JSON integer. */
    if (a >= (uint64_t)INT64_MAX || (uint64_t)b > (uint64_t)INT64_MAX - a) {
        return (uint64_t)INT64_MAX;
    }
    return a + (uint64_t)b;
}

static void apply_download(gb_dev_t *dev, const gb_msg_download_t *d)
{
    dev->bytes_total = sat_add(dev->bytes_total, d->bytes);
    dev->bytes_http = sat_add(dev->bytes_http, d->http_bytes);
    dev->bytes_lan = sat_add(dev->bytes_lan, d->lan_bytes);
    dev->bytes_cache = sat_add(dev->bytes_cache, d->cache_bytes);
    int32_t i = find_run(dev, GB_STAGE_DEVICE_SETUP);
    if (i >= 0 && dev->runs[i].state == GB_RUN_STARTED && d->ms > 0) {
        dev->setup_bytes = sat_add(dev->setup_bytes, d->bytes);
        dev->setup_ms = sat_add(dev->setup_ms, d->ms);
    }
}

static void apply_winevent(gb_dev_t *dev, const gb_msg_winevent_t *w, int64_t at)
{
    gb_winevent_effect_t e;
    gb_winevent_translate(w->channel, w->event_id, w->message, dev->status, dev->stage, &e);

    gb_attempt_t *a = cur(dev);
    a->evidence |= e.evidence;
    if (e.action == GB_WACT_EVIDENCE && e.has_hresult && e.hresult != 0) {
        a->has_evidence_hresult = true;
        a->evidence_hresult = e.hresult;
    }
    bool has_hr = e.has_hresult && e.hresult != 0;
    switch (e.action) {
    case GB_WACT_START:
        start_stage(dev, e.stage, at);
        break;
    case GB_WACT_SUCCEED:
        end_stage(dev, e.stage, GB_RUN_SUCCEEDED, at, false, 0);
        break;
    case GB_WACT_FAIL: {
        gb_stage_t st = e.stage;
        if (st == GB_STAGE_NONE) {
            int32_t i = find_run(dev, dev->stage);
            st = i >= 0 && dev->runs[i].state == GB_RUN_STARTED ? dev->stage : GB_STAGE_NONE;
        }
        end_stage(dev, st, GB_RUN_FAILED, at, has_hr, e.hresult);
        break;
    }
    case GB_WACT_START_SUCCEED:
        start_stage(dev, e.stage, at);
        end_stage(dev, e.stage, GB_RUN_SUCCEEDED, at, false, 0);
        break;
    case GB_WACT_RESULT_GREEN:
        result_green(dev, at);
        break;
    case GB_WACT_RESULT_RED:
        result_red(dev, at);
        break;
    case GB_WACT_NONE:
    case GB_WACT_EVIDENCE:
        break;
    }
    if (e.then_start != GB_STAGE_NONE) {
        start_stage(dev, e.then_start, at);
    }
}

int gb_dev_apply(gb_dev_t *dev, const gb_apply_ctx_t *ctx, const gb_msg_t *msg)
{
    if (ctx == NULL) {
        ctx = &default_ctx;
    }
    if (msg->seq == 0 || msg->seq > (uint64_t)INT64_MAX || msg->seq <= dev->max_seq) {
        return GB_EINVAL;
    }
    int64_t at = msg->at_ms;

    /* What every message carries: its place in the sequence and the device clock. */
    if (dev->n_applied > 0 && dev->last_at_ms != GB_TIME_NONE && at < dev->last_at_ms) {
        warn(dev, GB_WARN_OUT_OF_ORDER);
    }
    dev->last_at_ms = at;
    if (dev->first_seen_ms == GB_TIME_NONE || at < dev->first_seen_ms) {
        dev->first_seen_ms = at;
    }
    if (dev->last_seen_ms == GB_TIME_NONE || at > dev->last_seen_ms) {
        dev->last_seen_ms = at;
    }
    if (dev->contig_seq == dev->max_seq && msg->seq == dev->max_seq + 1) {
        dev->contig_seq = msg->seq;
    }
    dev->max_seq = msg->seq;
    dev->n_applied++;
    if (ctx->received_ms != GB_TIME_NONE &&
        (dev->last_arrival_ms == GB_TIME_NONE || ctx->received_ms > dev->last_arrival_ms)) {
        dev->last_arrival_ms = ctx->received_ms;
    }
    if (ctx->hybrid_join) {
        warn(dev, GB_WARN_HYBRID_JOIN_UNSUPPORTED);
    }

    switch (msg->type) {
    case GB_MSG_HELLO:
        apply_hello(dev, &msg->u.hello);
        break;
    case GB_MSG_STAGE: {
        const gb_msg_stage_t *s = &msg->u.stage;
        if (s->upn.p != NULL) {
            free(dev->user_upn);
            dev->user_upn = gb_xstrndup(s->upn.p, s->upn.len);
        }
        if (s->state == GB_RUN_STARTED) {
            start_stage(dev, s->stage, at);
        } else {
            end_stage(dev, s->stage, s->state, at, s->has_hresult, s->hresult);
        }
        break;
    }
    case GB_MSG_APP:
        apply_app(dev, &msg->u.app);
        break;
    case GB_MSG_DOWNLOAD:
        apply_download(dev, &msg->u.download);
        break;
    case GB_MSG_WINEVENT:
        apply_winevent(dev, &msg->u.winevent, at);
        break;
    case GB_MSG_RESULT:
        if (msg->u.result == GB_SCREEN_GREEN) {
            result_green(dev, at);
        } else if (msg->u.result == GB_SCREEN_RED) {
            result_red(dev, at);
        }
        break;
    case GB_MSG_HEARTBEAT:
    case GB_MSG_TYPE_COUNT:
        break;
    }

    refresh_diagnosis(dev, ctx);
    int32_t i = find_run(dev, dev->stage);
    dev->stage_state = i >= 0 ? (gb_run_state_t)dev->runs[i].state : GB_RUN_NONE;
    return 0;
}

size_t gb_dev_apply_batch(gb_dev_t *dev, const gb_apply_ctx_t *ctx, const gb_msg_t *msgs, size_t n)
{
    size_t applied = 0;
    for (size_t i = 0; i < n; i++) {
        if (gb_dev_apply(dev, ctx, &msgs[i]) == 0) {
            applied++;
        }
    }
    return applied;
}

static int cmp_msg(const void *pa, const void *pb)
{
    const gb_msg_t *a = pa, *b = pb;
    if (a->seq != b->seq) {
        return a->seq < b->seq ? -1 : 1;
    }
    if (a->index != b->index) {
        return a->index < b->index ? -1 : 1;
    }
    return 0;
}

static void sort_msgs(gb_msg_t *msgs, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if (cmp_msg(&msgs[i - 1], &msgs[i]) > 0) {
            qsort(msgs, n, sizeof(*msgs), cmp_msg);
            return;
        }
    }
}

bool gb_msg_batch_prepare(const gb_dev_t *dev, gb_msg_t *msgs, size_t *n)
{
    size_t k = 0;
    uint64_t prev = 0;
    bool replay = false;

    sort_msgs(msgs, *n);
    for (size_t i = 0; i < *n; i++) {
        uint64_t s = msgs[i].seq;
        if (s == prev) {
            continue; /* the same seq twice in the batch: the first one counts */
        }
        prev = s;
        if (s <= dev->contig_seq || (dev->max_seq > 0 && s == dev->max_seq)) {
            continue; /* certainly held already */
        }
        if (s < dev->max_seq) {
            replay = true;
        }
        if (k != i) {
            msgs[k] = msgs[i];
        }
        k++;
    }
    *n = k;
    return replay;
}

int gb_dev_retry(gb_dev_t *dev, int64_t at_ms)
{
    if (dev->status != GB_DEV_RED) {
        return GB_EINVAL;
    }
    if (!open_attempt(dev, at_ms)) {
        return GB_EBUSY;
    }
    if (at_ms != GB_TIME_NONE &&
        (dev->last_arrival_ms == GB_TIME_NONE || at_ms > dev->last_arrival_ms)) {
        dev->last_arrival_ms = at_ms; /* a retry counts as activity for the stall clock */
    }
    return 0;
}

static void replay_action(gb_dev_t *dev, const gb_action_mark_t *a)
{
    if (a->assign_slot) {
        gb_dev_set_slot(dev, a->slot);
    } else if (gb_dev_retry(dev, a->at_ms) != 0) {
        return; /* the retry did not apply at this point of the sequence: skipped */
    }
}

void gb_dev_rebuild(gb_dev_t *dev, const gb_apply_ctx_t *ctx, gb_msg_t *msgs, size_t n,
                    const gb_action_mark_t *actions, size_t n_actions)
{
    gb_action_mark_t *as = NULL;
    size_t ai = 0;

    gb_dev_clear_derived(dev);
    sort_msgs(msgs, n);
    if (n_actions > 0) {
        /* Insertion sort by after_seq: stable, so actions after one message keep their order
         * (a handful per device). */
        as = gb_xmalloc(n_actions * sizeof(*as));
        for (size_t i = 0; i < n_actions; i++) {
            size_t j = i;
            while (j > 0 && as[j - 1].after_seq > actions[i].after_seq) {
                as[j] = as[j - 1];
                j--;
            }
            as[j] = actions[i];
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && msgs[i].seq == msgs[i - 1].seq) {
            continue;
        }
        while (ai < n_actions && as[ai].after_seq < msgs[i].seq) {
            replay_action(dev, &as[ai++]);
        }
        if (gb_dev_apply(dev, ctx, &msgs[i]) != 0) {
            continue; /* seq 0 cannot come from a decoder; nothing else fails here */
        }
    }
    while (ai < n_actions) {
        replay_action(dev, &as[ai++]);
    }
    free(as);
}
