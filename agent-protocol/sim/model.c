/* model: the staging room's discrete-event simulation. Devices wait for a bench slot, get a
 * technician, run the technician flow stage by stage, download and install their payload over
 * the shared uplink, go green (reseal, shelf, maybe a user flow later) or red (reset and retry,
 * or set aside), and report every step as agent-protocol messages stamped with the simulated
 * clock. Invariants: events run in (time, insertion) order; each device draws only from its own
 * random stream, in an order fixed by its own history; every message of a device has a seq one
 * above the previous one and an `at` no earlier than the previous one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum ev_kind {
    EV_OPEN = 0, /* the room opens at time 0: the first devices take their slots */
    EV_DEVICE,   /* a device's next step (token: the device's step token) */
    EV_BW,       /* an uplink group's next completion (dev: group, token: group version) */
    EV_SAMPLE,   /* a download sample is due (token: the device's sample token) */
    EV_ESP,      /* the ESP timeout of a device setup (token: the device's ESP token) */
    EV_BEAT,     /* heartbeat check (token: the device's heartbeat token) */
};

/* What a device does when its EV_DEVICE fires. */
enum step {
    STEP_NONE = 0,
    STEP_TECH_DONE,    /* a technician finished a task on it */
    STEP_STAGE_MID,    /* a stage logs its next progress event (winevent mode) */
    STEP_STAGE_END,    /* the running stage ends as planned */
    STEP_SKIP,         /* the technician skips the failed component update */
    STEP_SETUP_FIXED,  /* device setup's policies and certificates are done */
    STEP_INSTALL_DONE, /* the current app has installed (or failed to) */
    STEP_HANDOVER,     /* the user powers the resealed device on */
};

enum task {
    TASK_SETUP = 0, /* unbox, cable, power on, Win key x5 */
    TASK_RESET,     /* diagnose the red screen and reset the device */
    TASK_RESEAL,    /* notice the green screen and click Reseal */
};

typedef struct device {
    char serial[48];
    const gb_sim__hw_t *hw;
    const char *os_build;
    gb_sim__rng_t rng;
    uint32_t index;
    int32_t slot;   /* -1: not on the bench */
    uint32_t group; /* uplink group (its NIC) */
    double link_mbps;
    bool tpm_fault; /* hardware that cannot attest: every attempt fails */

    /* this attempt's plan, drawn when it begins */
    uint32_t attempt;
    gb_sim_fault_t fault; /* NONE: goes green */
    uint32_t variant;
    uint32_t fault_app;
    bool update_error;

    /* where it is */
    enum step next;
    uint32_t token;
    enum task task;
    int64_t task_ms;
    gb_sim_stage_t stage;
    bool stage_fails;
    gb_sim_fault_t stage_fault; /* why the running stage fails, when it does */
    int64_t stage_start;
    int64_t stage_ms;
    const gb_sim__wevent_t *mids;
    uint32_t n_mids;
    uint32_t next_mid;
    uint32_t app;
    uint32_t esp_token;

    /* the download in progress */
    bool downloading;
    uint32_t dl_token;
    uint32_t sample_token;
    double dl_served0;
    uint64_t dl_size;
    uint64_t dl_reported;
    int64_t dl_sample_at;
    int64_t dl_seg_start;
    double dl_active0;

    /* reporting */
    uint64_t seq;
    int64_t last_msg_at;
    bool alive; /* the agent runs: heartbeats while silent */
    uint32_t beat_token;
    uint32_t fail_hr; /* the HRESULT event texts quote */

    gb_sim_truth_t truth;
} device_t;

struct gb_sim {
    gb_sim_config_t cfg;
    gb_sim_sink_cb sink;
    void *sink_arg;
    device_t *devs;
    uint32_t n;
    gb_sim__heap_t heap;
    gb_sim__bw_t bw;
    int64_t now;
    uint64_t messages;
    gb_buf_t msg; /* the message being written */

    uint32_t next_waiting; /* devices below this index have had a slot */
    uint32_t *free_slots;  /* min-heap of free slot numbers */
    uint32_t n_free_slots;
    uint32_t techs_free;
    uint32_t *tech_queue; /* FIFO ring of devices waiting for a technician */
    uint32_t tq_head;
    uint32_t tq_len;
};

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

static int64_t s_to_ms(double s)
{
    return (int64_t)(s * 1000.0 + 0.5);
}

static void schedule(gb_sim_t *sim, device_t *d, int64_t t, enum step step)
{
    d->token++;
    d->next = step;
    gb_sim__heap_push(&sim->heap, t, EV_DEVICE, d->index, d->token);
}

static void slot_push(gb_sim_t *sim, uint32_t slot)
{
    uint32_t i = sim->n_free_slots++;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (sim->free_slots[p] <= slot) {
            break;
        }
        sim->free_slots[i] = sim->free_slots[p];
        i = p;
    }
    sim->free_slots[i] = slot;
}

static uint32_t slot_pop(gb_sim_t *sim)
{
    uint32_t top = sim->free_slots[0];
    uint32_t last = sim->free_slots[--sim->n_free_slots];
    uint32_t i = 0;
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        uint32_t best = last;
        if (l < sim->n_free_slots && sim->free_slots[l] < best) {
            m = l;
            best = sim->free_slots[l];
        }
        if (r < sim->n_free_slots && sim->free_slots[r] < best) {
            m = r;
        }
        if (m == i) {
            break;
        }
        sim->free_slots[i] = sim->free_slots[m];
        i = m;
    }
    if (sim->n_free_slots > 0) {
        sim->free_slots[i] = last;
    }
    return top;
}

/* Bench positions as a patch panel labels them: rows of 24 ports, A-1 .. A-24, B-1 ... */
static void slot_name(uint32_t slot, char out[8])
{
    uint32_t row = slot / 24, port = slot % 24 + 1;
    if (row < 26) {
        snprintf(out, 8, "%c-%u", 'A' + (int)row, port);
    } else {
        row -= 26;
        snprintf(out, 8, "%c%c-%u", 'A' + (int)(row / 26 % 26), 'A' + (int)(row % 26), port);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* messages                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void msg_begin(gb_sim_t *sim, device_t *d, const char *type)
{
    char at[32];
    gb_time_format_rfc3339(sim->cfg.start_ms + sim->now, at);
    gb_buf_reset(&sim->msg);
    gb_buf_appendf(&sim->msg, "{\"seq\":%llu,\"at\":\"%s\",\"type\":\"%s\"",
                   (unsigned long long)(d->seq + 1), at, type);
}

static void msg_end(gb_sim_t *sim, device_t *d)
{
    gb_buf_append(&sim->msg, "}", 1);
    d->seq++;
    d->last_msg_at = sim->now;
    d->truth.messages++;
    sim->messages++;
    if (sim->sink != NULL) {
        gb_sim_msg_t m = {d->index,      d->serial,   d->seq, sim->cfg.start_ms + sim->now,
                          sim->msg.data, sim->msg.len};
        sim->sink(sim->sink_arg, &m);
    }
}

static void put_str(gb_sim_t *sim, const char *key, const char *value)
{
    gb_buf_appendf(&sim->msg, ",\"%s\":", key);
    gb_json_quote(&sim->msg, value, strlen(value));
}

static void put_hresult(gb_sim_t *sim, uint32_t hr)
{
    gb_buf_appendf(&sim->msg, ",\"hresult\":\"0x%08X\"", hr);
}

static void send_hello(gb_sim_t *sim, device_t *d, bool on_bench)
{
    const gb_sim__hw_t *hw = d->hw;
    bool wired = !(on_bench && d->fault == GB_SIM_FAULT_NO_WIRED_NETWORK);

    msg_begin(sim, d, "hello");
    put_str(sim, "agent", GB_SIM_AGENT);
    put_str(sim, "os_build", d->os_build);
    gb_buf_append_str(&sim->msg, ",\"hardware\":{\"manufacturer\":");
    gb_json_quote(&sim->msg, hw->manufacturer, strlen(hw->manufacturer));
    gb_buf_append_str(&sim->msg, ",\"model\":");
    gb_json_quote(&sim->msg, hw->model, strlen(hw->model));
    gb_buf_appendf(&sim->msg,
                   ",\"tpm_version\":\"%s\",\"tpm_attestation\":%s,\"virtual_machine\":%s}",
                   hw->tpm_version, hw->tpm_attestation ? "true" : "false",
                   hw->virtual_machine ? "true" : "false");
    /* Without a cable the technician flow has no network screen; the agent reports no link. */
    if (wired) {
        gb_buf_appendf(&sim->msg, ",\"network\":{\"medium\":\"ethernet\",\"link_mbps\":%g}",
                       d->link_mbps);
    } else {
        gb_buf_append_str(&sim->msg, ",\"network\":{\"medium\":\"none\",\"link_mbps\":0}");
    }
    if (on_bench && d->truth.slot[0] != '\0') {
        put_str(sim, "slot", d->truth.slot);
    }
    msg_end(sim, d);
}

/* The device's user, as the fleet's CSV assigns it and as the user signs in:
 * "user.<serial in lower case>@<GB_SIM_USER_DOMAIN>". */
static void append_upn(gb_buf_t *b, const char *serial)
{
    gb_buf_append_str(b, "user.");
    for (const char *c = serial; *c != '\0'; c++) {
        char l = *c >= 'A' && *c <= 'Z' ? (char)(*c - 'A' + 'a') : *c;
        gb_buf_append(b, &l, 1);
    }
    gb_buf_append_str(b, "@" GB_SIM_USER_DOMAIN);
}

static void send_stage(gb_sim_t *sim, device_t *d, gb_sim_stage_t stage, const char *state,
                       uint32_t hr)
{
    msg_begin(sim, d, "stage");
    gb_buf_appendf(&sim->msg, ",\"stage\":\"%s\",\"state\":\"%s\"", gb_sim_stage_id(stage), state);
    if (hr != 0) {
        put_hresult(sim, hr);
    }
    if (stage == GB_SIM_USER_SIGNIN && strcmp(state, "succeeded") == 0) {
        gb_buf_append_str(&sim->msg, ",\"upn\":\"");
        append_upn(&sim->msg, d->serial);
        gb_buf_append_str(&sim->msg, "\"");
    }
    msg_end(sim, d);
}

static void send_result(gb_sim_t *sim, device_t *d, bool green)
{
    msg_begin(sim, d, "result");
    gb_buf_appendf(&sim->msg, ",\"screen\":\"%s\"", green ? "green" : "red");
    msg_end(sim, d);
}

static void send_app(gb_sim_t *sim, device_t *d, const gb_sim_app_t *app, const char *state,
                     uint32_t hr)
{
    msg_begin(sim, d, "app");
    put_str(sim, "name", app->name);
    gb_buf_appendf(&sim->msg, ",\"state\":\"%s\",\"bytes\":%llu", state,
                   (unsigned long long)app->bytes);
    if (hr != 0) {
        put_hresult(sim, hr);
    }
    msg_end(sim, d);
}

static void send_download(gb_sim_t *sim, device_t *d, uint64_t bytes, int64_t ms)
{
    /* Delivery Optimization's counters, split in the configured shares. */
    uint64_t lan = (uint64_t)((double)bytes * sim->cfg.peer_share + 0.5);
    uint64_t cache = (uint64_t)((double)bytes * sim->cfg.cache_share + 0.5);
    if (lan > bytes) {
        lan = bytes;
    }
    if (cache > bytes - lan) {
        cache = bytes - lan;
    }
    uint64_t http = bytes - lan - cache;

    msg_begin(sim, d, "download");
    gb_buf_appendf(&sim->msg,
                   ",\"bytes\":%llu,\"ms\":%lld,\"http_bytes\":%llu,\"lan_bytes\":%llu,"
                   "\"cache_bytes\":%llu",
                   (unsigned long long)bytes, (long long)ms, (unsigned long long)http,
                   (unsigned long long)lan, (unsigned long long)cache);
    msg_end(sim, d);

    gb_sim_truth_t *t = &d->truth;
    t->bytes += bytes;
    t->http_bytes += http;
    t->lan_bytes += lan;
    t->cache_bytes += cache;
    t->setup_bytes += bytes;
    t->setup_sample_ms += (uint64_t)ms;
}

static void append_guid(gb_buf_t *b, uint64_t h1, uint64_t h2)
{
    gb_buf_appendf(b, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(h1 >> 32),
                   (unsigned)(h1 >> 16) & 0xFFFFu, (unsigned)h1 & 0xFFFu,
                   (unsigned)(0x8000u | ((h2 >> 48) & 0x3FFFu)),
                   (unsigned long long)(h2 & 0xFFFFFFFFFFFFull));
}

/* Expands an event text's placeholders (internal.h lists them). */
static void expand(gb_sim_t *sim, device_t *d, const char *text, gb_buf_t *out)
{
    uint64_t key = gb_sim__mix(sim->cfg.seed, d->index);
    uint64_t per_msg = gb_sim__mix(key, d->seq + 1);

    for (const char *p = text; *p != '\0'; p++) {
        if (*p != '{') {
            gb_buf_append(out, p, 1);
            continue;
        }
        const char *close = strchr(p, '}');
        size_t n = close ? (size_t)(close - p - 1) : 0;
        const char *name = p + 1;
        bool known = true;
#define IS(s) (n == sizeof(s) - 1 && memcmp(name, s, n) == 0)
        if (IS("HR")) {
            gb_buf_appendf(out, "0x%08X", d->fail_hr);
        } else if (IS("hr")) {
            gb_buf_appendf(out, "0x%08x", d->fail_hr);
        } else if (IS("APP")) {
            const char *app = d->app < sim->cfg.n_apps ? sim->cfg.apps[d->app].name : "";
            gb_buf_append_str(out, app);
        } else if (IS("GUID")) {
            append_guid(out, per_msg, gb_sim__mix(per_msg, 1));
        } else if (IS("GUID2")) {
            append_guid(out, gb_sim__mix(key, 2), gb_sim__mix(key, 3));
        } else if (IS("THUMB")) {
            gb_buf_appendf(out, "%016llX%016llX%08X", (unsigned long long)gb_sim__mix(key, 4),
                           (unsigned long long)gb_sim__mix(key, 5), (unsigned)gb_sim__mix(key, 6));
        } else if (IS("DOMAIN")) {
            gb_buf_append_str(out, sim->cfg.tenant_domain);
        } else if (IS("TIME")) {
            char at[32];
            gb_time_format_rfc3339(sim->cfg.start_ms + sim->now, at);
            /* "2026-11-24T10:00:00.000Z" -> "11-24-2026 10:00:00Z", as Azure AD writes it */
            gb_buf_appendf(out, "%.2s-%.2s-%.4s %.8sZ", at + 5, at + 8, at, at + 11);
        } else {
            known = false;
        }
#undef IS
        if (known) {
            p = close;
        } else {
            gb_buf_append(out, p, 1); /* a literal brace (JSON inside a text) */
        }
    }
}

static void send_event(gb_sim_t *sim, device_t *d, const gb_sim__wevent_t *ev)
{
    gb_buf_t text;
    gb_buf_init(&text);
    expand(sim, d, ev->text, &text);
    msg_begin(sim, d, "winevent");
    put_str(sim, "channel", gb_sim__chan_name(ev->chan));
    gb_buf_appendf(&sim->msg, ",\"event_id\":%u,\"message\":", (unsigned)ev->id);
    gb_json_quote(&sim->msg, text.data ? text.data : "", text.len);
    msg_end(sim, d);
    gb_buf_dispose(&text);
}

static void send_events(gb_sim_t *sim, device_t *d, const gb_sim__wevent_t *ev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        send_event(sim, d, &ev[i]);
    }
}

static void send_heartbeat(gb_sim_t *sim, device_t *d)
{
    msg_begin(sim, d, "heartbeat");
    msg_end(sim, d);
}

/* ------------------------------------------------------------------------------------------ */
/* ground truth bookkeeping                                                                   */
/* ------------------------------------------------------------------------------------------ */

enum { TS_NONE = 0, TS_STARTED, TS_SUCCEEDED, TS_FAILED, TS_SKIPPED };

static void truth_start(gb_sim_t *sim, device_t *d, gb_sim_stage_t stage)
{
    d->truth.stage_start[stage] = sim->now;
    d->truth.stage_state[stage] = TS_STARTED;
    if (d->truth.attempt_at < 0) {
        d->truth.attempt_at = sim->now;
    }
}

static void truth_end(gb_sim_t *sim, device_t *d, gb_sim_stage_t stage, int state)
{
    if (d->truth.stage_start[stage] < 0) {
        d->truth.stage_start[stage] = sim->now;
    }
    d->truth.stage_end[stage] = sim->now;
    d->truth.stage_state[stage] = (uint8_t)state;
}

static void truth_new_attempt(device_t *d)
{
    gb_sim_truth_t *t = &d->truth;
    for (int i = 0; i < GB_SIM_STAGE_COUNT; i++) {
        t->stage_start[i] = -1;
        t->stage_end[i] = -1;
        t->stage_state[i] = TS_NONE;
    }
    t->attempt_at = -1;
    t->result_at = -1;
    t->diagnosis = GB_SIM_FAULT_NONE;
    t->failed_stage = GB_SIM_OOBE;
    t->hresult = 0;
    t->setup_bytes = 0;
    t->setup_sample_ms = 0;
    t->conc_ms = 0;
    t->download_ms = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* heartbeats, technicians and slots                                                          */
/* ------------------------------------------------------------------------------------------ */

static void set_alive(gb_sim_t *sim, device_t *d, bool alive)
{
    d->alive = alive;
    d->beat_token++;
    if (alive && sim->cfg.heartbeat_s > 0) {
        gb_sim__heap_push(&sim->heap, sim->now + s_to_ms(sim->cfg.heartbeat_s), EV_BEAT, d->index,
                          d->beat_token);
    }
}

static void on_beat(gb_sim_t *sim, device_t *d, uint32_t token)
{
    if (token != d->beat_token || !d->alive) {
        return;
    }
    int64_t period = s_to_ms(sim->cfg.heartbeat_s);
    if (sim->now - d->last_msg_at >= period) {
        send_heartbeat(sim, d);
    }
    gb_sim__heap_push(&sim->heap, d->last_msg_at + period, EV_BEAT, d->index, d->beat_token);
}

static void tech_start(gb_sim_t *sim, device_t *d)
{
    schedule(sim, d, sim->now + d->task_ms, STEP_TECH_DONE);
}

/* Asks for a technician; the task starts at once if one is free, else in FIFO order. */
static void tech_request(gb_sim_t *sim, device_t *d, enum task task, const gb_sim_dist_t *dist)
{
    d->task = task;
    d->task_ms = gb_sim__rng_dist_ms(&d->rng, dist);
    if (sim->cfg.technicians == 0) {
        tech_start(sim, d);
    } else if (sim->techs_free > 0) {
        sim->techs_free--;
        tech_start(sim, d);
    } else {
        sim->tech_queue[(sim->tq_head + sim->tq_len++) % sim->n] = d->index;
    }
}

static void tech_release(gb_sim_t *sim)
{
    if (sim->cfg.technicians == 0) {
        return;
    }
    if (sim->tq_len > 0) {
        device_t *next = &sim->devs[sim->tech_queue[sim->tq_head]];
        sim->tq_head = (sim->tq_head + 1) % sim->n;
        sim->tq_len--;
        tech_start(sim, next);
    } else {
        sim->techs_free++;
    }
}

static gb_sim_dist_t around(double s)
{
    return (gb_sim_dist_t){0.75 * s, s, 1.5 * s};
}

static void take_slot(gb_sim_t *sim, device_t *d)
{
    d->slot = (int32_t)slot_pop(sim);
    slot_name((uint32_t)d->slot, d->truth.slot);
    d->truth.slot_at = sim->now;
    gb_sim_dist_t setup = around(sim->cfg.tech_s);
    tech_request(sim, d, TASK_SETUP, &setup);
}

/* The device leaves the bench; the next device in the pile takes its slot. */
static void leave_slot(gb_sim_t *sim, device_t *d)
{
    if (d->slot < 0) {
        return;
    }
    slot_push(sim, (uint32_t)d->slot);
    d->slot = -1;
    if (sim->next_waiting < sim->n) {
        take_slot(sim, &sim->devs[sim->next_waiting++]);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the flow                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void stage_begin(gb_sim_t *sim, device_t *d, gb_sim_stage_t stage);
static void setup_begin(gb_sim_t *sim, device_t *d);

/* Draws the attempt's fate. Always the same number of draws, whatever the outcome, so one
 * device's later history does not shift when a rate changes. */
static void plan_attempt(gb_sim_t *sim, device_t *d)
{
    static const gb_sim_fault_t drawn[] = {
        GB_SIM_FAULT_DEVICE_OBJECT_MISSING, GB_SIM_FAULT_MULTIPLE_MDM,
        GB_SIM_FAULT_PROFILE_UNAVAILABLE,   GB_SIM_FAULT_NO_WIRED_NETWORK,
        GB_SIM_FAULT_APP_INSTALL_FAILED,    GB_SIM_FAULT_CERTIFICATE_FAILED,
    };
    const double *rate = sim->cfg.fault_rate;
    double u = gb_sim__rng_unit(&d->rng);
    double acc = 0;

    d->fault = GB_SIM_FAULT_NONE;
    for (size_t i = 0; i < GB_ARRAY_LEN(drawn); i++) {
        acc += rate[drawn[i]];
        if (u < acc) {
            d->fault = drawn[i];
            break;
        }
    }
    d->variant = gb_sim__rng_below(&d->rng, 2);
    d->fault_app = sim->cfg.n_apps > 0 ? gb_sim__rng_below(&d->rng, sim->cfg.n_apps) : 0;
    d->update_error = gb_sim__rng_unit(&d->rng) < rate[GB_SIM_FAULT_COMPONENT_UPDATE_ERROR];
    if (d->fault == GB_SIM_FAULT_APP_INSTALL_FAILED && sim->cfg.n_apps == 0) {
        d->fault = GB_SIM_FAULT_NONE;
    }
    if (d->tpm_fault) {
        d->fault = GB_SIM_FAULT_TPM_ATTESTATION; /* the hardware has not changed */
    }
    d->fail_hr = gb_sim__fault_hresult(d->fault);
}

static void begin_attempt(gb_sim_t *sim, device_t *d)
{
    d->attempt++;
    d->truth.attempts = d->attempt;
    truth_new_attempt(d);
    plan_attempt(sim, d);
    set_alive(sim, d, true);
    send_hello(sim, d, true);
    stage_begin(sim, d, GB_SIM_OOBE);
}

static bool uses_events(const device_t *d)
{
    return d->truth.winevents;
}

static void report_start(gb_sim_t *sim, device_t *d, gb_sim_stage_t stage)
{
    /* Reseal logs a single event when it completes, so in winevent mode it starts then too. */
    if (!(uses_events(d) && stage == GB_SIM_RESEAL)) {
        truth_start(sim, d, stage);
    }
    if (uses_events(d)) {
        const gb_sim__wstage_t *w = gb_sim__wstage(stage);
        send_events(sim, d, w->start, w->n_start);
    } else {
        send_stage(sim, d, stage, "started", 0);
        if (d->stage_fails) {
            /* Evidence the brief names at the start of a failing stage (ManagementService 509). */
            const gb_sim__wstage_t *f = gb_sim__wfault(d->stage_fault, d->variant);
            send_events(sim, d, f->start, f->n_start);
        }
    }
}

static void report_success(gb_sim_t *sim, device_t *d, gb_sim_stage_t stage)
{
    if (uses_events(d)) {
        const gb_sim__wstage_t *w = gb_sim__wstage(stage);
        if (stage == GB_SIM_RESEAL) {
            send_event(sim, d, gb_sim__wreseal()); /* reseal logs one page event, at its end */
        }
        send_events(sim, d, w->end, w->n_end);
    } else {
        send_stage(sim, d, stage, "succeeded", 0);
    }
    truth_end(sim, d, stage, TS_SUCCEEDED);
}

/* A failing stage: its events, then the stage's failure (stage mode) with the HRESULT. */
static void report_failure(gb_sim_t *sim, device_t *d, gb_sim_stage_t stage, gb_sim_fault_t why)
{
    const gb_sim__wstage_t *f = gb_sim__wfault(why, d->variant);
    uint32_t hr = gb_sim__fault_hresult(why);

    d->fail_hr = hr;
    send_events(sim, d, f->end, f->n_end);
    if (!uses_events(d)) {
        send_stage(sim, d, stage, "failed", hr);
    }
    truth_end(sim, d, stage, TS_FAILED);
}

static void go_red(gb_sim_t *sim, device_t *d, gb_sim_stage_t stage, gb_sim_fault_t why)
{
    gb_sim_truth_t *t = &d->truth;

    if (uses_events(d)) {
        send_event(sim, d, gb_sim__wresult(false));
    } else {
        send_result(sim, d, false);
    }
    t->result_at = sim->now;
    t->diagnosis = why;
    t->failed_stage = stage;
    /* The HRESULT the server can know. No Windows event names the missing cable's code, so a
     * device reporting events only leaves it unknown (the red-screen page event quotes it, but
     * the translation does not read codes from result pages). */
    t->hresult =
        uses_events(d) && why == GB_SIM_FAULT_NO_WIRED_NETWORK ? 0 : gb_sim__fault_hresult(why);
    t->failures[why]++;
    set_alive(sim, d, false);
    if (d->attempt < sim->cfg.max_attempts) {
        gb_sim_dist_t reset = around(sim->cfg.retry_delay_s);
        tech_request(sim, d, TASK_RESET, &reset);
    } else {
        t->status = GB_SIM_STATUS_RED;
        leave_slot(sim, d);
    }
}

static void go_green(gb_sim_t *sim, device_t *d)
{
    if (uses_events(d)) {
        send_event(sim, d, gb_sim__wresult(true));
    } else {
        send_result(sim, d, true);
    }
    d->truth.result_at = sim->now;
    d->truth.diagnosis = GB_SIM_FAULT_NONE;
    gb_sim_dist_t wait = {0.25 * sim->cfg.reseal_wait_s, sim->cfg.reseal_wait_s,
                          2 * sim->cfg.reseal_wait_s};
    tech_request(sim, d, TASK_RESEAL, &wait);
}

static void schedule_stage_step(gb_sim_t *sim, device_t *d)
{
    if (d->next_mid < d->n_mids) {
        int64_t at =
            d->stage_start + d->stage_ms * (int64_t)(d->next_mid + 1) / (int64_t)(d->n_mids + 1);
        schedule(sim, d, at, STEP_STAGE_MID);
    } else {
        schedule(sim, d, d->stage_start + d->stage_ms, STEP_STAGE_END);
    }
}

static void stage_begin(gb_sim_t *sim, device_t *d, gb_sim_stage_t stage)
{
    d->stage = stage;
    if (stage == GB_SIM_DEVICE_SETUP) {
        d->stage_fails = false; /* decided inside device setup */
        d->stage_fault = GB_SIM_FAULT_NONE;
        setup_begin(sim, d);
        return;
    }
    if (stage == GB_SIM_COMPONENT_UPDATE) {
        d->stage_fails = d->update_error;
        d->stage_fault = GB_SIM_FAULT_COMPONENT_UPDATE_ERROR;
    } else {
        d->stage_fails = d->fault != GB_SIM_FAULT_NONE && gb_sim__fault_stage(d->fault) == stage;
        d->stage_fault = d->fault;
    }
    report_start(sim, d, stage);
    const gb_sim_dist_t *dist = &sim->cfg.stage_time[stage];
    if (d->stage_fails && d->fault == GB_SIM_FAULT_TPM_ATTESTATION) {
        dist = &sim->cfg.tpm_fail_time; /* attestation retries until it times out */
    }
    d->stage_start = sim->now;
    d->stage_ms = gb_sim__rng_dist_ms(&d->rng, dist);
    d->next_mid = 0;
    d->n_mids = 0;
    d->mids = NULL;
    if (uses_events(d)) {
        const gb_sim__wstage_t *w = gb_sim__wstage(stage);
        if (d->stage_fails) {
            w = gb_sim__wfault(d->stage_fault, d->variant);
        }
        d->mids = w->mid;
        d->n_mids = (uint32_t)w->n_mid;
    }
    schedule_stage_step(sim, d);
}

static gb_sim_stage_t next_stage(const gb_sim_t *sim, gb_sim_stage_t stage)
{
    if (stage == GB_SIM_COMPONENT_UPDATE && !sim->cfg.rename) {
        return GB_SIM_LANDING;
    }
    return (gb_sim_stage_t)(stage + 1);
}

static void stage_end(gb_sim_t *sim, device_t *d)
{
    gb_sim_stage_t stage = d->stage;

    if (d->stage_fails && stage == GB_SIM_COMPONENT_UPDATE) {
        /* "Something went wrong" (AUTOPILOTWHITEGLOVEUPDATE): not fatal, the technician skips. */
        report_failure(sim, d, stage, GB_SIM_FAULT_COMPONENT_UPDATE_ERROR);
        d->truth.warnings |= 1u << GB_SIM_WARN_COMPONENT_UPDATE_ERROR;
        static const gb_sim_dist_t skip = {20, 45, 120};
        schedule(sim, d, sim->now + gb_sim__rng_dist_ms(&d->rng, &skip), STEP_SKIP);
        return;
    }
    if (d->stage_fails) {
        report_failure(sim, d, stage, d->stage_fault);
        go_red(sim, d, stage, d->stage_fault);
        return;
    }
    report_success(sim, d, stage);
    switch (stage) {
    case GB_SIM_RESEAL:
        d->truth.resealed_at = sim->now;
        d->truth.status = GB_SIM_STATUS_RESEALED;
        set_alive(sim, d, false);
        leave_slot(sim, d);
        /* Two draws always: whether the user flow runs, and when. */
        {
            bool handover = gb_sim__rng_unit(&d->rng) < sim->cfg.handover_share;
            double wait_min = sim->cfg.handover_wait_min +
                              gb_sim__rng_unit(&d->rng) * sim->cfg.handover_spread_min;
            if (handover) {
                schedule(sim, d, sim->now + s_to_ms(wait_min * 60.0), STEP_HANDOVER);
            }
        }
        break;
    case GB_SIM_DESKTOP:
        d->truth.status = GB_SIM_STATUS_DELIVERED;
        d->truth.delivered_at = sim->now;
        set_alive(sim, d, false);
        break;
    default:
        stage_begin(sim, d, next_stage(sim, stage));
        break;
    }
}

/* ---- device setup: fixed part, then each app downloaded and installed in turn ---- */

static void setup_begin(gb_sim_t *sim, device_t *d)
{
    report_start(sim, d, GB_SIM_DEVICE_SETUP);
    d->esp_token++;
    gb_sim__heap_push(&sim->heap, sim->now + s_to_ms(sim->cfg.esp_timeout_min * 60.0), EV_ESP,
                      d->index, d->esp_token);
    d->app = 0;
    int64_t ms = gb_sim__rng_dist_ms(&d->rng, &sim->cfg.stage_time[GB_SIM_DEVICE_SETUP]);
    schedule(sim, d, sim->now + ms, STEP_SETUP_FIXED);
}

static void setup_fail(gb_sim_t *sim, device_t *d, gb_sim_fault_t why)
{
    d->esp_token++;
    report_failure(sim, d, GB_SIM_DEVICE_SETUP, why);
    go_red(sim, d, GB_SIM_DEVICE_SETUP, why);
}

static void setup_succeed(gb_sim_t *sim, device_t *d)
{
    d->esp_token++;
    if (!uses_events(d)) {
        send_stage(sim, d, GB_SIM_DEVICE_SETUP, "succeeded", 0);
    }
    truth_end(sim, d, GB_SIM_DEVICE_SETUP, TS_SUCCEEDED);
    go_green(sim, d); /* winevent mode: the green screen's event ends device setup */
}

static void reschedule_uplink(gb_sim_t *sim)
{
    for (uint32_t g = 0; g < sim->bw.n_groups; g++) {
        int64_t t = gb_sim__bw_next_finish(&sim->bw, g);
        if (t != GB_SIM_NEVER) {
            gb_sim__heap_push(&sim->heap, t, EV_BW, g, sim->bw.groups[g].version);
        }
    }
}

static void install_begin(gb_sim_t *sim, device_t *d)
{
    const gb_sim_app_t *app = &sim->cfg.apps[d->app];
    send_app(sim, d, app, "installing", 0);
    schedule(sim, d, sim->now + gb_sim__rng_dist_ms(&d->rng, &app->install), STEP_INSTALL_DONE);
}

static void next_app(gb_sim_t *sim, device_t *d)
{
    if (d->app >= sim->cfg.n_apps) {
        setup_succeed(sim, d);
        return;
    }
    const gb_sim_app_t *app = &sim->cfg.apps[d->app];
    send_app(sim, d, app, "downloading", 0);
    if (app->bytes == 0) {
        install_begin(sim, d);
        return;
    }
    d->downloading = true;
    d->dl_token++;
    d->dl_size = app->bytes;
    d->dl_reported = 0;
    d->dl_sample_at = sim->now;
    d->dl_seg_start = sim->now;
    d->dl_served0 =
        gb_sim__bw_add(&sim->bw, sim->now, d->group, d->index, d->dl_token, (double)app->bytes);
    d->dl_active0 = sim->bw.active_ms;
    reschedule_uplink(sim);
    d->sample_token++;
    gb_sim__heap_push(&sim->heap, sim->now + s_to_ms(sim->cfg.sample_s), EV_SAMPLE, d->index,
                      d->sample_token);
}

/* Bytes of the current download received by now (the uplink is advanced to now). */
static uint64_t dl_received(const gb_sim_t *sim, const device_t *d)
{
    double got = floor(sim->bw.groups[d->group].served - d->dl_served0);
    if (got < (double)d->dl_reported) {
        return d->dl_reported;
    }
    if (got > (double)d->dl_size) {
        return d->dl_size;
    }
    return (uint64_t)got;
}

/* Reports what arrived since the last sample. ms may be 0 only when nothing arrived. */
static void dl_sample(gb_sim_t *sim, device_t *d, uint64_t received)
{
    uint64_t bytes = received - d->dl_reported;
    int64_t ms = sim->now - d->dl_sample_at;
    if (ms <= 0) {
        if (bytes == 0) {
            return;
        }
        ms = 1; /* the last bytes of a download that a sample just missed */
    }
    send_download(sim, d, bytes, ms);
    d->dl_reported = received;
    d->dl_sample_at = sim->now;
}

static void dl_finish_segment(gb_sim_t *sim, device_t *d)
{
    d->truth.conc_ms += sim->bw.active_ms - d->dl_active0;
    d->truth.download_ms += (uint64_t)(sim->now - d->dl_seg_start);
    d->downloading = false;
    d->dl_token++;
    d->sample_token++;
}

static void on_sample(gb_sim_t *sim, device_t *d, uint32_t token)
{
    if (token != d->sample_token || !d->downloading) {
        return;
    }
    gb_sim__bw_advance(&sim->bw, sim->now);
    dl_sample(sim, d, dl_received(sim, d));
    gb_sim__heap_push(&sim->heap, sim->now + s_to_ms(sim->cfg.sample_s), EV_SAMPLE, d->index,
                      d->sample_token);
}

static void on_download_done(gb_sim_t *sim, device_t *d)
{
    dl_sample(sim, d, d->dl_size);
    dl_finish_segment(sim, d);
    install_begin(sim, d);
}

static void on_uplink(gb_sim_t *sim, uint32_t group, uint32_t version)
{
    if (group >= sim->bw.n_groups || version != sim->bw.groups[group].version) {
        return; /* the rates changed since this completion was computed */
    }
    gb_sim__bw_advance(&sim->bw, sim->now);
    gb_sim__bw_mark_t done[64];
    size_t n;
    do {
        n = 0;
        while (n < GB_ARRAY_LEN(done) && gb_sim__bw_take_finished(&sim->bw, group, &done[n])) {
            n++;
        }
        gb_sim__bw_rebalance(&sim->bw);
        for (size_t i = 0; i < n; i++) {
            on_download_done(sim, &sim->devs[done[i].dev]);
        }
    } while (n == GB_ARRAY_LEN(done));
    reschedule_uplink(sim);
}

static void on_esp_timeout(gb_sim_t *sim, device_t *d, uint32_t token)
{
    if (token != d->esp_token) {
        return;
    }
    /* Whatever device setup was doing stops: a download is cut off, an install abandoned. */
    if (d->downloading) {
        gb_sim__bw_cancel(&sim->bw, sim->now, d->group);
        dl_sample(sim, d, dl_received(sim, d));
        dl_finish_segment(sim, d);
        reschedule_uplink(sim);
    }
    d->token++; /* the pending install or fixed-part step is stale */
    setup_fail(sim, d, GB_SIM_FAULT_ESP_TIMEOUT);
}

static void on_device(gb_sim_t *sim, device_t *d, uint32_t token)
{
    if (token != d->token) {
        return;
    }
    enum step step = d->next;
    d->next = STEP_NONE;
    switch (step) {
    case STEP_TECH_DONE:
        tech_release(sim);
        if (d->task == TASK_RESEAL) {
            stage_begin(sim, d, GB_SIM_RESEAL);
        } else {
            begin_attempt(sim, d);
        }
        break;
    case STEP_STAGE_MID:
        send_event(sim, d, &d->mids[d->next_mid++]);
        schedule_stage_step(sim, d);
        break;
    case STEP_STAGE_END:
        stage_end(sim, d);
        break;
    case STEP_SKIP:
        if (!uses_events(d)) {
            send_stage(sim, d, GB_SIM_COMPONENT_UPDATE, "skipped", 0);
        }
        truth_end(sim, d, GB_SIM_COMPONENT_UPDATE, TS_SKIPPED);
        stage_begin(sim, d, next_stage(sim, GB_SIM_COMPONENT_UPDATE));
        break;
    case STEP_SETUP_FIXED:
        if (d->fault == GB_SIM_FAULT_CERTIFICATE_FAILED) {
            setup_fail(sim, d, GB_SIM_FAULT_CERTIFICATE_FAILED);
        } else {
            next_app(sim, d);
        }
        break;
    case STEP_INSTALL_DONE: {
        const gb_sim_app_t *app = &sim->cfg.apps[d->app];
        if (d->fault == GB_SIM_FAULT_APP_INSTALL_FAILED && d->app == d->fault_app) {
            send_app(sim, d, app, "failed", gb_sim__fault_hresult(d->fault));
            setup_fail(sim, d, GB_SIM_FAULT_APP_INSTALL_FAILED);
        } else {
            send_app(sim, d, app, "installed", 0);
            d->app++;
            next_app(sim, d);
        }
        break;
    }
    case STEP_HANDOVER:
        set_alive(sim, d, true);
        send_hello(sim, d, false);
        stage_begin(sim, d, GB_SIM_USER_OOBE);
        break;
    case STEP_NONE:
        break;
    }
}

static void on_open(gb_sim_t *sim)
{
    while (sim->n_free_slots > 0 && sim->next_waiting < sim->n) {
        take_slot(sim, &sim->devs[sim->next_waiting++]);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* construction and the run loop                                                              */
/* ------------------------------------------------------------------------------------------ */

static bool download_live(void *arg, uint32_t dev, uint32_t token)
{
    const gb_sim_t *sim = arg;
    const device_t *d = &sim->devs[dev];
    return d->downloading && d->dl_token == token;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

static const gb_sim__hw_t *pick_model(gb_sim__rng_t *r)
{
    size_t n;
    const gb_sim__hw_t *m = gb_sim__hw_models(&n);
    uint32_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += m[i].weight;
    }
    uint32_t x = gb_sim__rng_below(r, total);
    for (size_t i = 0; i < n; i++) {
        if (x < m[i].weight) {
            return &m[i];
        }
        x -= m[i].weight;
    }
    return &m[0];
}

static void init_devices(gb_sim_t *sim)
{
    const gb_sim_config_t *cfg = &sim->cfg;
    size_t cap = 16;
    while (cap < (size_t)sim->n * 2) {
        cap *= 2;
    }
    int64_t *seen = gb_xmalloc(cap * sizeof(*seen)); /* open addressing over device indices */
    for (size_t i = 0; i < cap; i++) {
        seen[i] = -1;
    }

    for (uint32_t i = 0; i < sim->n; i++) {
        device_t *d = &sim->devs[i];
        d->index = i;
        d->slot = -1;
        gb_sim__rng_seed(&d->rng, cfg->seed, (uint64_t)i + 1);
        /* Fixed draw order: TPM fault, its kind, the model, the OS build, the report mode. */
        double u_tpm = gb_sim__rng_unit(&d->rng);
        double u_kind = gb_sim__rng_unit(&d->rng);
        const gb_sim__hw_t *model = pick_model(&d->rng);
        double u_os = gb_sim__rng_unit(&d->rng);
        double u_ev = gb_sim__rng_unit(&d->rng);
        d->tpm_fault = u_tpm < cfg->fault_rate[GB_SIM_FAULT_TPM_ATTESTATION];
        d->hw = d->tpm_fault ? (u_kind < 0.5 ? gb_sim__hw_vm() : gb_sim__hw_tpm12()) : model;
        d->os_build = u_os < 0.6 ? "10.0.22631" : "10.0.19045";
        d->truth.winevents = u_ev < cfg->winevent_share;
        d->link_mbps = cfg->nic_mbps > 0 ? cfg->nic_mbps : d->hw->link_mbps;
        d->group = gb_sim__bw_group_of(&sim->bw, d->link_mbps * 125.0);
        d->truth.manufacturer = d->hw->manufacturer;
        d->truth.model = d->hw->model;
        if (d->hw->virtual_machine) {
            d->truth.warnings |= 1u << GB_SIM_WARN_VIRTUAL_MACHINE;
        }
        if (!d->hw->tpm_attestation || strcmp(d->hw->tpm_version, "2.0") != 0) {
            d->truth.warnings |= 1u << GB_SIM_WARN_TPM_NOT_2_0;
        }

        /* A serial in the model's style, unique in the fleet (redrawn on a clash). */
        for (;;) {
            char raw[32];
            gb_sim__serial(&d->rng, d->hw->serial_style, raw, sizeof(raw));
            snprintf(d->serial, sizeof(d->serial), "%.15s%.31s", cfg->serial_prefix, raw);
            size_t h = (size_t)hash_str(d->serial) & (cap - 1);
            bool clash = false;
            while (seen[h] >= 0) {
                if (strcmp(sim->devs[seen[h]].serial, d->serial) == 0) {
                    clash = true;
                    break;
                }
                h = (h + 1) & (cap - 1);
            }
            if (!clash) {
                seen[h] = i;
                break;
            }
        }
        d->truth.slot_at = -1;
        d->truth.resealed_at = -1;
        d->truth.delivered_at = -1;
        truth_new_attempt(d);
    }
    free(seen);
}

gb_sim_t *gb_sim_new(const gb_sim_config_t *cfg, gb_sim_sink_cb sink, void *arg)
{
    gb_sim_t *sim = gb_xcalloc(1, sizeof(*sim));
    sim->cfg = *cfg;
    sim->sink = sink;
    sim->sink_arg = arg;
    sim->n = cfg->devices;
    sim->devs = gb_xcalloc(sim->n ? sim->n : 1, sizeof(*sim->devs));
    gb_sim__heap_init(&sim->heap);
    gb_buf_init(&sim->msg);

    /* One uplink group per distinct NIC rate in the fleet. */
    size_t n_models;
    const gb_sim__hw_t *m = gb_sim__hw_models(&n_models);
    double caps[16];
    uint32_t n_caps = 0;
    if (cfg->nic_mbps > 0) {
        caps[n_caps++] = cfg->nic_mbps * 125.0;
    } else {
        for (size_t i = 0; i < n_models && n_caps < 14; i++) {
            caps[n_caps++] = m[i].link_mbps * 125.0;
        }
        caps[n_caps++] = gb_sim__hw_vm()->link_mbps * 125.0;
        caps[n_caps++] = gb_sim__hw_tpm12()->link_mbps * 125.0;
    }
    double http_share = 1.0 - cfg->peer_share - cfg->cache_share;
    gb_sim__bw_init(&sim->bw, cfg->uplink_mbps * 125.0, http_share > 0 ? http_share : 0, caps,
                    n_caps, download_live, sim);

    init_devices(sim);

    uint32_t slots = cfg->slots < sim->n ? cfg->slots : sim->n;
    sim->free_slots = gb_xmalloc((cfg->slots ? cfg->slots : 1) * sizeof(*sim->free_slots));
    for (uint32_t s = 0; s < slots; s++) {
        slot_push(sim, s);
    }
    sim->techs_free = cfg->technicians;
    sim->tech_queue = gb_xmalloc((sim->n ? sim->n : 1) * sizeof(*sim->tech_queue));
    gb_sim__heap_push(&sim->heap, 0, EV_OPEN, 0, 0);
    return sim;
}

void gb_sim_free(gb_sim_t *sim)
{
    if (sim == NULL) {
        return;
    }
    gb_sim__heap_dispose(&sim->heap);
    gb_sim__bw_dispose(&sim->bw);
    gb_buf_dispose(&sim->msg);
    free(sim->devs);
    free(sim->free_slots);
    free(sim->tech_queue);
    free(sim);
}

size_t gb_sim_run(gb_sim_t *sim, int64_t until_ms, size_t max_events)
{
    size_t done = 0;
    const gb_sim__event_t *top;

    while ((top = gb_sim__heap_top(&sim->heap)) != NULL && top->t <= until_ms &&
           (max_events == 0 || done < max_events)) {
        gb_sim__event_t e;
        gb_sim__heap_pop(&sim->heap, &e);
        GB_ASSERT(e.t >= sim->now);
        sim->now = e.t;
        done++;
        switch (e.kind) {
        case EV_OPEN:
            on_open(sim);
            break;
        case EV_DEVICE:
            on_device(sim, &sim->devs[e.dev], e.token);
            break;
        case EV_BW:
            on_uplink(sim, e.dev, e.token);
            break;
        case EV_SAMPLE:
            on_sample(sim, &sim->devs[e.dev], e.token);
            break;
        case EV_ESP:
            on_esp_timeout(sim, &sim->devs[e.dev], e.token);
            break;
        case EV_BEAT:
            on_beat(sim, &sim->devs[e.dev], e.token);
            break;
        default:
            GB_ASSERT(!"unknown event kind");
        }
    }
    return done;
}

int64_t gb_sim_next_ms(const gb_sim_t *sim)
{
    const gb_sim__event_t *top = gb_sim__heap_top(&sim->heap);
    return top ? top->t : GB_SIM_NEVER;
}

bool gb_sim_done(const gb_sim_t *sim)
{
    return sim->heap.n == 0;
}

int64_t gb_sim_now_ms(const gb_sim_t *sim)
{
    return sim->now;
}

const gb_sim_config_t *gb_sim_config(const gb_sim_t *sim)
{
    return &sim->cfg;
}

uint32_t gb_sim_device_count(const gb_sim_t *sim)
{
    return sim->n;
}

const char *gb_sim_device_serial(const gb_sim_t *sim, uint32_t device)
{
    return device < sim->n ? sim->devs[device].serial : "";
}

uint64_t gb_sim_messages(const gb_sim_t *sim)
{
    return sim->messages;
}

const gb_sim_truth_t *gb_sim_truth(const gb_sim_t *sim, uint32_t device)
{
    return device < sim->n ? &sim->devs[device].truth : NULL;
}

void gb_sim_truth_durations(const gb_sim_truth_t *t, gb_sim_durations_t *out)
{
    /* Device preparation spans securing_hardware .. preparing_mdm: first start to last end. */
    int64_t first = -1, last = -1;
    for (int s = GB_SIM_SECURING_HARDWARE; s <= GB_SIM_PREPARING_MDM; s++) {
        if (t->stage_start[s] >= 0 && (first < 0 || t->stage_start[s] < first)) {
            first = t->stage_start[s];
        }
        if (t->stage_end[s] > last) {
            last = t->stage_end[s];
        }
    }
    out->device_preparation_ms = first >= 0 && last >= first ? last - first : -1;
    out->device_setup_ms =
        t->stage_start[GB_SIM_DEVICE_SETUP] >= 0 && t->stage_end[GB_SIM_DEVICE_SETUP] >= 0
            ? t->stage_end[GB_SIM_DEVICE_SETUP] - t->stage_start[GB_SIM_DEVICE_SETUP]
            : -1;
    out->account_setup_ms =
        t->stage_start[GB_SIM_ACCOUNT_SETUP] >= 0 && t->stage_end[GB_SIM_ACCOUNT_SETUP] >= 0
            ? t->stage_end[GB_SIM_ACCOUNT_SETUP] - t->stage_start[GB_SIM_ACCOUNT_SETUP]
            : -1;
    out->esp_ms = -1;
    int64_t parts[] = {out->device_preparation_ms, out->device_setup_ms, out->account_setup_ms};
    for (size_t i = 0; i < GB_ARRAY_LEN(parts); i++) {
        if (parts[i] >= 0) {
            out->esp_ms = (out->esp_ms < 0 ? 0 : out->esp_ms) + parts[i];
        }
    }
    out->total_ms =
        t->attempt_at >= 0 && t->result_at >= t->attempt_at ? t->result_at - t->attempt_at : -1;
}

/* The CSV lives here because it needs the devices' serials and the seed. */
void gb_sim_csv(const gb_sim_t *sim, uint32_t hash_bytes, const char *group_tag, gb_buf_t *out)
{
    uint8_t *raw = gb_xmalloc(hash_bytes ? hash_bytes : 1);

    gb_buf_append_str(out, GB_SIM_CSV_HEADER "\n");
    for (uint32_t i = 0; i < sim->n; i++) {
        const device_t *d = &sim->devs[i];
        /* A stream of its own, so the hash never shifts the device's simulation draws. */
        gb_sim__rng_t r;
        gb_sim__rng_seed(&r, sim->cfg.seed ^ 0x4841534855ull, (uint64_t)i + 1);
        for (uint32_t k = 0; k < hash_bytes; k++) {
            raw[k] = (uint8_t)(gb_sim__rng_next(&r) >> 56);
        }
        /* Real hashes start with the same few bytes (a format header): "T0..." in base64. */
        if (hash_bytes >= 2) {
            raw[0] = 'O';
            raw[1] = 'A';
        }
        gb_buf_appendf(out, "%s,,", d->serial);
        gb_sim__base64(raw, hash_bytes, out);
        gb_buf_appendf(out, ",%s,", group_tag ? group_tag : "");
        append_upn(out, d->serial);
        gb_buf_append_str(out, "\n");
    }
    free(raw);
}
