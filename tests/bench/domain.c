/* bench_domain: throughput of the agent hot path on one core. Builds a realistic fleet's
 * traffic (an agent that sends stage messages and forwards its Windows events, app progress,
 * Delivery Optimization samples every 30 s and heartbeats; one device in ten goes red, one in
 * twenty hits the component-update error), cut into requests of about twenty messages, then
 * times: apply alone (messages decoded beforehand), decode + apply (the whole request path), and,
 * for reference, the device views and snapshots. Usage: bench_domain [devices] [seconds]. */
#include "domain/domain.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "protocol/protocol.h"
#include "util/util.h"

#define BATCH             20
#define APPLY_GOAL        1000000.0
#define DECODE_APPLY_GOAL 250000.0

static const char *const AP = "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot";
static const char *const DM = "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/"
                              "Admin";
static const char *const SC = "Microsoft-Windows-Shell-Core/Operational";
static const char *const UDR = "Microsoft-Windows-User Device Registration/Admin";

typedef struct request {
    char *body;
    size_t len;
    size_t n_msgs;
} request_t;

typedef struct fleet {
    request_t *reqs;
    size_t n_reqs, cap_reqs;
    size_t *dev_first; /* index of each device's first request; dev_first[n] = n_reqs */
    size_t n_devs;
    size_t n_msgs;
    size_t bytes;
} fleet_t;

/* The message under construction for one device. */
typedef struct gen {
    fleet_t *f;
    gb_buf_t body;
    size_t in_body;
    uint64_t seq;
    int64_t t;
    char serial[32];
    uint64_t rng;
} gen_t;

static uint64_t rnd(gen_t *g)
{
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 7;
    g->rng ^= g->rng << 17;
    return g->rng;
}

static void flush(gen_t *g)
{
    if (g->in_body == 0) {
        return;
    }
    gb_buf_append_str(&g->body, "]}");
    fleet_t *f = g->f;
    if (f->n_reqs == f->cap_reqs) {
        f->cap_reqs = f->cap_reqs ? f->cap_reqs * 2 : 1024;
        f->reqs = gb_xrealloc(f->reqs, f->cap_reqs * sizeof(*f->reqs));
    }
    request_t *r = &f->reqs[f->n_reqs++];
    r->len = g->body.len;
    r->body = gb_buf_steal(&g->body, NULL);
    r->n_msgs = g->in_body;
    f->bytes += r->len;
    g->in_body = 0;
}

/* Starts a message: {"seq":N,"at":"...","type":"T" and the caller appends the rest. */
static void begin(gen_t *g, const char *type, int64_t dt_ms)
{
    char at[32];
    g->t += dt_ms;
    if (g->in_body == 0) {
        gb_buf_appendf(&g->body, "{\"protocol\":1,\"device\":{\"serial\":\"%s\"},\"messages\":[",
                       g->serial);
    } else {
        gb_buf_append(&g->body, ",", 1);
    }
    gb_time_format_rfc3339(g->t, at);
    gb_buf_appendf(&g->body, "{\"seq\":%llu,\"at\":\"%s\",\"type\":\"%s\"",
                   (unsigned long long)++g->seq, at, type);
}

static void end(gen_t *g)
{
    gb_buf_append(&g->body, "}", 1);
    g->f->n_msgs++;
    if (++g->in_body == BATCH) {
        flush(g);
    }
}

static void stage(gen_t *g, int64_t dt, const char *st, const char *state, const char *hr)
{
    begin(g, "stage", dt);
    gb_buf_appendf(&g->body, ",\"stage\":\"%s\",\"state\":\"%s\"", st, state);
    if (hr != NULL) {
        gb_buf_appendf(&g->body, ",\"hresult\":\"%s\"", hr);
    }
    end(g);
}

static void event(gen_t *g, int64_t dt, const char *ch, int id, const char *msg)
{
    begin(g, "winevent", dt);
    gb_buf_appendf(&g->body, ",\"channel\":\"%s\",\"event_id\":%d,\"message\":", ch, id);
    gb_json_quote(&g->body, msg, strlen(msg));
    end(g);
}

static void heartbeat(gen_t *g, int64_t dt)
{
    begin(g, "heartbeat", dt);
    end(g);
}

static void next_stage(gen_t *g, int64_t dt, const char *done, const char *next)
{
    if (done != NULL) {
        stage(g, dt, done, "succeeded", NULL);
        dt = 0;
    }
    stage(g, dt, next, "started", NULL);
}

static void make_device(fleet_t *f, size_t i)
{
    gen_t g = {.f = f, .t = 1795510800000LL + (int64_t)(i % 97) * 60000, .rng = 0x1234567 + i};
    gb_buf_init(&g.body);
    snprintf(g.serial, sizeof(g.serial), "PF%07zu", i);
    bool red = i % 10 == 3;
    bool cu_error = i % 20 == 7;

    begin(&g, "hello", 0);
    gb_buf_append_str(&g.body, ",\"agent\":\"glovebox-agent/1.0\",\"os_build\":\"10.0.19045\","
                               "\"hardware\":{\"manufacturer\":\"HP\",\"model\":\"EliteBook 840 "
                               "G8\",\"tpm_version\":\"2.0\",\"tpm_attestation\":true,"
                               "\"virtual_machine\":false},\"network\":{\"medium\":\"ethernet\","
                               "\"link_mbps\":1000},\"slot\":\"A-12\"");
    end(&g);
    next_stage(&g, 5000, NULL, "oobe");
    event(&g, 0, SC, 62404, "CloudExperienceHost Web App Activity started. CXID: 'OobeRegion'.");
    next_stage(&g, 55000, "oobe", "enterprise_provisioning");
    event(&g, 0, SC, 62404,
          "CloudExperienceHost Web App Activity started. CXID: 'OobeEnterpriseProvisioning'.");
    next_stage(&g, 60000, "enterprise_provisioning", "profile_download");
    event(&g, 0, AP, 160, "AutopilotManager profile download starting.");
    event(&g, 1000, AP, 164, "Internet available for profile download.");
    event(&g, 1000, AP, 153, "AutopilotManager profile state changed from Unknown to Available.");
    event(&g, 30000, AP, 161, "AutopilotManager profile download succeeded.");
    next_stage(&g, 0, "profile_download", "zdp_update");
    heartbeat(&g, 60000);
    next_stage(&g, 60000, "zdp_update", "component_update");
    if (cu_error) {
        stage(&g, 60000, "component_update", "failed", NULL);
        event(&g, 0, SC, 62407,
              "CloudExperienceHost Web App Event 2. Name: 'ErrorPage', Value: 'Something went "
              "wrong. AUTOPILOTWHITEGLOVEUPDATE'.");
        stage(&g, 30000, "component_update", "skipped", NULL);
        next_stage(&g, 0, NULL, "device_rename");
    } else {
        next_stage(&g, 90000, "component_update", "device_rename");
    }
    heartbeat(&g, 60000);
    next_stage(&g, 60000, "device_rename", "landing");
    next_stage(&g, 30000, "landing", "securing_hardware");
    event(&g, 0, "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/ManagementService", 509,
          "AutopilotManager enabled TPM requirement due to WhiteGlove policy value 1");
    event(&g, 1000, AP, 177, "Configuring TPM for attestation. Current attempt 1 of 10 maximum.");
    event(&g, 5000, AP, 201, "Windows AIK not found by name.");
    event(&g, 5000, AP, 151, "AutopilotManager started the TPM maintenance task");
    if (red) {
        event(&g, 600000, AP, 156,
              "AutopilotManager reported that MSA TPM is not configured for hardware TPM "
              "attestation even though profile indicates it is required. Autopilot cannot "
              "proceed.");
        stage(&g, 0, "securing_hardware", "failed", "0x800705B4");
        begin(&g, "result", 5000);
        gb_buf_append_str(&g.body, ",\"screen\":\"red\"");
        end(&g);
        for (int k = 0; k < 5; k++) {
            heartbeat(&g, 60000);
        }
        flush(&g);
        gb_buf_dispose(&g.body);
        return;
    }
    event(&g, 60000, AP, 152, "AutopilotManager reported TPM maintenance task is complete");
    event(&g, 5000, AP, 252, "AutopilotManager reported AIK key was located");
    event(&g, 5000, AP, 250, "AutopilotManager started AIK certificate acquisition task");
    event(&g, 5000, AP, 205, "Windows AIK certificate request succeeded");
    event(&g, 5000, AP, 168, "AutopilotManager reported MSA TPM device identity was updated");
    event(&g, 5000, AP, 169, "AutopilotManager set TPM identity confirmed");
    next_stage(&g, 0, "securing_hardware", "joining_network");
    static const char *const phases[] = {"AADDiscover", "AADConfigure", "AADEnroll"};
    for (int k = 0; k < 3; k++) {
        char msg[128];
        snprintf(msg, sizeof(msg), "AutopilotManager began device enrollment phase %s", phases[k]);
        event(&g, 2000, AP, 179, msg);
        if (k == 2) {
            event(&g, 2000, UDR, 102,
                  "The initialization of the join request was successful. Inputs: JoinRequest: 11 "
                  "(DEVICE_AUTO_DDID)");
            event(&g, 20000, UDR, 104,
                  "Server response was: {\"ResponseStatus\":{\"message\":\"Successfully updated "
                  "pre-created device\"}}");
        }
        snprintf(msg, sizeof(msg), "AutopilotManager completed device enrollment %s. HRESULT 0x0",
                 phases[k]);
        event(&g, 15000, AP, 181, msg);
    }
    next_stage(&g, 0, "joining_network", "registering_mdm");
    event(&g, 0, AP, 179, "AutopilotManager began device enrollment phase DeviceDiscovery");
    event(&g, 40000, DM, 72, "MDM Enroll: Succeeded.");
    next_stage(&g, 0, "registering_mdm", "preparing_mdm");
    event(&g, 10000, DM, 1905, "MSI download started for 'Microsoft Intune Management Extension'.");
    event(&g, 60000, DM, 1906,
          "MSI download finished for 'Microsoft Intune Management Extension'.");
    event(&g, 5000, DM, 1920, "MSI install started for 'Microsoft Intune Management Extension'.");
    event(&g, 60000, DM, 1922, "MSI install finished for 'Microsoft Intune Management Extension'.");
    next_stage(&g, 60000, "preparing_mdm", "device_setup");
    event(&g, 0, SC, 62407,
          "CloudExperienceHost Web App Event 2. Name: 'ESPPage', Value: "
          "'DeviceSetup'.");
    static const char *const apps[] = {"Microsoft 365 Apps", "Contoso VPN", "Company Portal",
                                       "Microsoft Teams",    "Zoom",        "7-Zip"};
    for (size_t a = 0; a < GB_ARRAY_LEN(apps); a++) {
        begin(&g, "app", 1000);
        gb_buf_append_str(&g.body, ",\"name\":");
        gb_json_quote(&g.body, apps[a], strlen(apps[a]));
        gb_buf_append_str(&g.body, ",\"state\":\"downloading\"");
        end(&g);
    }
    for (int s = 0; s < 60; s++) {
        uint64_t bytes = 20000000 + rnd(&g) % 40000000;
        begin(&g, "download", 30000);
        gb_buf_appendf(&g.body,
                       ",\"bytes\":%llu,\"ms\":30000,\"http_bytes\":%llu,\"lan_bytes\":%llu,"
                       "\"cache_bytes\":0",
                       (unsigned long long)bytes, (unsigned long long)(bytes * 3 / 4),
                       (unsigned long long)(bytes - bytes * 3 / 4));
        end(&g);
        if (s % 2 == 1) {
            heartbeat(&g, 0);
        }
        if (s % 10 == 9) {
            const char *name = apps[(size_t)(s / 10) % GB_ARRAY_LEN(apps)];
            begin(&g, "app", 0);
            gb_buf_append_str(&g.body, ",\"name\":");
            gb_json_quote(&g.body, name, strlen(name));
            gb_buf_appendf(&g.body, ",\"state\":\"installed\",\"bytes\":%llu",
                           (unsigned long long)(rnd(&g) % 3000000000ULL));
            end(&g);
        }
    }
    stage(&g, 10000, "device_setup", "succeeded", NULL);
    event(&g, 0, SC, 62407,
          "CloudExperienceHost Web App Event 2. Name: 'ESPPage', Value: "
          "'WhiteGloveSuccess'.");
    begin(&g, "result", 1000);
    gb_buf_append_str(&g.body, ",\"screen\":\"green\"");
    end(&g);
    stage(&g, 60000, "reseal", "started", NULL);
    stage(&g, 1000, "reseal", "succeeded", NULL);
    flush(&g);
    gb_buf_dispose(&g.body);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Per-pass rates of one measurement. The machine may be shared: the best pass is the figure
 * (the least disturbed), the median shows the spread. */
typedef struct rates {
    double r[4096];
    size_t n;
    double secs;
} rates_t;

static void rates_add(rates_t *rs, double n, double secs)
{
    if (rs->n < GB_ARRAY_LEN(rs->r) && secs > 0) {
        rs->r[rs->n++] = n / secs;
    }
    rs->secs += secs;
}

static bool rates_done(const rates_t *rs, double min_secs)
{
    return rs->n >= 5 && rs->secs >= min_secs;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void print_rates(const char *what, rates_t *rs, const char *unit, double goal)
{
    qsort(rs->r, rs->n, sizeof(rs->r[0]), cmp_double);
    double best = rs->r[rs->n - 1], median = rs->r[rs->n / 2];
    printf("%-16s best %11.0f  median %11.0f %s/s  (%zu passes)", what, best, median, unit, rs->n);
    if (goal > 0) {
        printf("  goal %8.0f: %s", goal, best >= goal ? "met" : "NOT MET");
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    size_t n_devs = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 1000;
    double min_secs = argc > 2 ? strtod(argv[2], NULL) : 2.0;
    fleet_t f;
    memset(&f, 0, sizeof(f));
    if (n_devs == 0) {
        n_devs = 1;
    }

    f.n_devs = n_devs;
    f.dev_first = gb_xcalloc(n_devs + 1, sizeof(*f.dev_first));
    for (size_t i = 0; i < n_devs; i++) {
        f.dev_first[i] = f.n_reqs;
        make_device(&f, i);
    }
    f.dev_first[n_devs] = f.n_reqs;
    printf("fleet: %zu devices, %zu messages in %zu requests (%.1f per request, %.0f bytes per "
           "message)\n",
           n_devs, f.n_msgs, f.n_reqs, (double)f.n_msgs / (double)f.n_reqs,
           (double)f.bytes / (double)f.n_msgs);

    /* Decode everything once, for the apply-alone run. */
    gb_arena_t keep;
    gb_arena_init(&keep);
    gb_proto_request_t *decoded = gb_xcalloc(f.n_reqs, sizeof(*decoded));
    for (size_t r = 0; r < f.n_reqs; r++) {
        gb_error_t err;
        gb_error_clear(&err);
        if (gb_proto_decode_request(f.reqs[r].body, f.reqs[r].len, &keep, &decoded[r], &err) != 0) {
            fprintf(stderr, "request %zu rejected: %s %s: %s\n", r, err.code, err.field,
                    err.message);
            return 1;
        }
    }
    gb_msg_t *scratch = gb_xcalloc(BATCH, sizeof(*scratch));
    gb_apply_ctx_t ctx = {60, false, 1795510800000LL};

    /* Apply alone: prepare + apply each batch to its device, fresh devices each pass. */
    rates_t rs;
    size_t greens = 0, reds = 0;
    gb_dev_t *devs = gb_xcalloc(n_devs, sizeof(*devs));
    memset(&rs, 0, sizeof(rs));
    for (size_t d = 0; d < n_devs; d++) {
        gb_dev_init(&devs[d], decoded[f.dev_first[d]].serial);
    }
    while (!rates_done(&rs, min_secs)) {
        for (size_t d = 0; d < n_devs; d++) {
            gb_dev_dispose(&devs[d]);
            gb_dev_init(&devs[d], decoded[f.dev_first[d]].serial);
        }
        double applied = 0, t0 = now_s();
        for (size_t d = 0; d < n_devs; d++) {
            for (size_t r = f.dev_first[d]; r < f.dev_first[d + 1]; r++) {
                size_t n = decoded[r].n_msgs;
                memcpy(scratch, decoded[r].msgs, n * sizeof(*scratch));
                if (gb_msg_batch_prepare(&devs[d], scratch, &n)) {
                    fprintf(stderr, "unexpected replay\n");
                    return 1;
                }
                applied += (double)gb_dev_apply_batch(&devs[d], &ctx, scratch, n);
            }
        }
        rates_add(&rs, applied, now_s() - t0);
    }
    for (size_t d = 0; d < n_devs; d++) {
        greens += devs[d].status == GB_DEV_RESEALED;
        reds += devs[d].status == GB_DEV_RED;
    }
    printf("outcome: %zu resealed, %zu red, %zu other\n", greens, reds, n_devs - greens - reds);
    print_rates("apply alone", &rs, "messages", APPLY_GOAL);

    /* Decode + apply: the request path from body to state, one arena per request. */
    gb_arena_t arena;
    gb_arena_init(&arena);
    memset(&rs, 0, sizeof(rs));
    while (!rates_done(&rs, min_secs)) {
        for (size_t d = 0; d < n_devs; d++) {
            gb_dev_dispose(&devs[d]);
            gb_dev_init(&devs[d], decoded[f.dev_first[d]].serial);
        }
        double done = 0, t0 = now_s();
        for (size_t d = 0; d < n_devs; d++) {
            for (size_t r = f.dev_first[d]; r < f.dev_first[d + 1]; r++) {
                gb_error_t err;
                gb_proto_request_t req;
                gb_error_clear(&err);
                gb_arena_reset(&arena);
                if (gb_proto_decode_request(f.reqs[r].body, f.reqs[r].len, &arena, &req, &err) !=
                    0) {
                    return 1;
                }
                size_t n = req.n_msgs;
                if (gb_msg_batch_prepare(&devs[d], req.msgs, &n)) {
                    return 1;
                }
                done += (double)gb_dev_apply_batch(&devs[d], &ctx, req.msgs, n);
            }
        }
        rates_add(&rs, done, now_s() - t0);
    }
    print_rates("decode + apply", &rs, "messages", DECODE_APPLY_GOAL);

    memset(&rs, 0, sizeof(rs));
    while (!rates_done(&rs, min_secs / 2)) {
        double n = 0, t0 = now_s();
        for (size_t r = 0; r < f.n_reqs; r++) {
            gb_error_t err;
            gb_proto_request_t req;
            gb_arena_reset(&arena);
            if (gb_proto_decode_request(f.reqs[r].body, f.reqs[r].len, &arena, &req, &err) != 0) {
                return 1;
            }
            n += (double)req.n_msgs;
        }
        rates_add(&rs, n, now_s() - t0);
    }
    print_rates("decode alone", &rs, "messages", 0);

    /* Reference figures for the layers above: views and snapshots per device. */
    gb_buf_t out;
    gb_buf_init(&out);
    gb_proto_view_opts_t opts = {1795510800000LL + 7200000, 900000, 0};
    for (int kind = 0; kind < 2; kind++) {
        memset(&rs, 0, sizeof(rs));
        while (!rates_done(&rs, min_secs / 4)) {
            double t0 = now_s();
            for (size_t d = 0; d < n_devs; d++) {
                gb_buf_reset(&out);
                if (kind == 0) {
                    gb_proto_device_json(&devs[d], &opts, &out);
                } else {
                    gb_proto_snapshot_encode(&devs[d], &out);
                }
            }
            rates_add(&rs, (double)n_devs, now_s() - t0);
        }
        print_rates(kind == 0 ? "list view" : "snapshot encode", &rs, "devices", 0);
    }

    size_t state_bytes = 0;
    for (size_t d = 0; d < n_devs; d++) {
        const gb_dev_t *v = &devs[d];
        state_bytes += sizeof(*v) + v->cap_runs * sizeof(gb_stage_run_t) +
                       v->cap_attempts * sizeof(gb_attempt_t) + v->cap_apps * sizeof(gb_app_t);
        for (uint32_t a = 0; a < v->n_apps; a++) {
            state_bytes += strlen(v->apps[a].name) + 1;
        }
        const char *strs[] = {v->serial, v->slot,         v->agent,      v->os_build,
                              v->model,  v->manufacturer, v->tpm_version};
        for (size_t s = 0; s < GB_ARRAY_LEN(strs); s++) {
            state_bytes += strs[s] != NULL ? strlen(strs[s]) + 1 : 0;
        }
    }
    printf("%-22s %12.0f bytes per device (allocations, before allocator overhead)\n", "state size",
           (double)state_bytes / (double)n_devs);

    for (size_t d = 0; d < n_devs; d++) {
        gb_dev_dispose(&devs[d]);
    }
    free(devs);
    gb_buf_dispose(&out);
    gb_arena_dispose(&arena);
    gb_arena_dispose(&keep);
    free(decoded);
    free(scratch);
    for (size_t r = 0; r < f.n_reqs; r++) {
        free(f.reqs[r].body);
    }
    free(f.reqs);
    free(f.dev_first);
    return 0;
}
