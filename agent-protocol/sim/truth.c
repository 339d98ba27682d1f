/* truth: the ground truth of a run, as JSON for validation (the server's counts, durations and
 * bandwidth figures must equal these) and as the human summary printed at the end. Everything
 * here is read from the model's per-device records; nothing is estimated. The README defines
 * every field. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const char *const state_ids[] = {"", "started", "succeeded", "failed", "skipped"};

static void put_s(gb_buf_t *b, const char *key, int64_t ms)
{
    if (ms < 0) {
        gb_buf_appendf(b, "\"%s\":null", key);
    } else {
        gb_buf_appendf(b, "\"%s\":%lld.%03lld", key, (long long)(ms / 1000),
                       (long long)(ms % 1000));
    }
}

static void put_at(gb_buf_t *b, const char *key, const gb_sim_config_t *c, int64_t ms)
{
    if (ms < 0) {
        gb_buf_appendf(b, "\"%s\":null", key);
    } else {
        char at[32];
        gb_time_format_rfc3339(c->start_ms + ms, at);
        gb_buf_appendf(b, "\"%s\":\"%s\"", key, at);
    }
}

static void put_dist(gb_buf_t *b, const gb_sim_dist_t *d)
{
    gb_buf_appendf(b, "{\"lo\":%g,\"mode\":%g,\"hi\":%g}", d->lo, d->mode, d->hi);
}

static uint64_t payload_bytes(const gb_sim_config_t *c)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < c->n_apps; i++) {
        sum += c->apps[i].bytes;
    }
    return sum;
}

static void settings_json(const gb_sim_config_t *c, gb_buf_t *b)
{
    char start[32];
    gb_time_format_rfc3339(c->start_ms, start);
    gb_buf_appendf(b,
                   "{\"devices\":%u,\"slots\":%u,\"technicians\":%u,\"max_attempts\":%u,"
                   "\"uplink_mbps\":%g,\"nic_mbps\":%g,\"peer_share\":%g,\"cache_share\":%g,"
                   "\"seed\":%llu,\"start\":\"%s\",\"tech_seconds\":%g,\"retry_delay_s\":%g,"
                   "\"reseal_wait_s\":%g,\"esp_timeout_min\":%g,\"handover_share\":%g,"
                   "\"handover_wait_min\":%g,\"handover_spread_min\":%g,\"winevent_share\":%g,"
                   "\"rename\":%s,\"sample_seconds\":%g,\"heartbeat_seconds\":%g,",
                   c->devices, c->slots, c->technicians, c->max_attempts, c->uplink_mbps,
                   c->nic_mbps, c->peer_share, c->cache_share, (unsigned long long)c->seed, start,
                   c->tech_s, c->retry_delay_s, c->reseal_wait_s, c->esp_timeout_min,
                   c->handover_share, c->handover_wait_min, c->handover_spread_min,
                   c->winevent_share, c->rename ? "true" : "false", c->sample_s, c->heartbeat_s);
    gb_buf_append_str(b, "\"payload\":");
    gb_json_quote(b, c->payload, strlen(c->payload));
    gb_buf_appendf(b, ",\"payload_bytes\":%llu,\"apps\":[", (unsigned long long)payload_bytes(c));
    for (uint32_t i = 0; i < c->n_apps; i++) {
        gb_buf_append_str(b, i ? ",{\"name\":" : "{\"name\":");
        gb_json_quote(b, c->apps[i].name, strlen(c->apps[i].name));
        gb_buf_appendf(b, ",\"bytes\":%llu,\"install_s\":", (unsigned long long)c->apps[i].bytes);
        put_dist(b, &c->apps[i].install);
        gb_buf_append_str(b, "}");
    }
    gb_buf_append_str(b, "],\"fault_rates\":{");
    bool first = true;
    for (int f = 1; f < GB_SIM_FAULT_COUNT; f++) {
        if (gb_sim_fault_has_rate((gb_sim_fault_t)f)) {
            gb_buf_appendf(b, "%s\"%s\":%g", first ? "" : ",", gb_sim_fault_id((gb_sim_fault_t)f),
                           c->fault_rate[f]);
            first = false;
        }
    }
    gb_buf_append_str(b, "},\"stage_times_s\":{");
    for (int s = 0; s < GB_SIM_STAGE_COUNT; s++) {
        gb_buf_appendf(b, "%s\"%s\":", s ? "," : "", gb_sim_stage_id((gb_sim_stage_t)s));
        put_dist(b, &c->stage_time[s]);
    }
    gb_buf_append_str(b, "},\"tpm_fail_time_s\":");
    put_dist(b, &c->tpm_fail_time);
    gb_buf_append_str(b, "}");
}

static double mbps(const gb_sim_truth_t *t)
{
    return t->setup_sample_ms > 0
               ? (double)t->setup_bytes * 8.0 / (double)t->setup_sample_ms / 1000.0
               : -1;
}

static double concurrency(const gb_sim_truth_t *t)
{
    return t->download_ms > 0 ? t->conc_ms / (double)t->download_ms : -1;
}

static void device_json(const gb_sim_t *sim, uint32_t i, gb_buf_t *b)
{
    const gb_sim_config_t *c = gb_sim_config(sim);
    const gb_sim_truth_t *t = gb_sim_truth(sim, i);
    const char *serial = gb_sim_device_serial(sim, i);
    gb_sim_durations_t du;
    gb_sim_truth_durations(t, &du);

    gb_buf_append_str(b, "{\"serial\":");
    gb_json_quote(b, serial, strlen(serial));
    gb_buf_appendf(b, ",\"slot\":\"%s\",\"manufacturer\":", t->slot);
    gb_json_quote(b, t->manufacturer, strlen(t->manufacturer));
    gb_buf_append_str(b, ",\"model\":");
    gb_json_quote(b, t->model, strlen(t->model));
    gb_buf_appendf(b, ",\"report\":\"%s\",\"status\":\"%s\",",
                   t->winevents ? "winevents" : "stages", gb_sim_status_id(t->status));
    if (t->status == GB_SIM_STATUS_RED) {
        gb_buf_appendf(b, "\"diagnosis\":\"%s\",\"failed_stage\":\"%s\",",
                       gb_sim_fault_id(t->diagnosis), gb_sim_stage_id(t->failed_stage));
        if (t->hresult != 0) {
            gb_buf_appendf(b, "\"hresult\":\"0x%08X\",", t->hresult);
        } else {
            gb_buf_append_str(b, "\"hresult\":null,");
        }
    } else {
        gb_buf_append_str(b, "\"diagnosis\":null,\"failed_stage\":null,\"hresult\":null,");
    }
    gb_buf_appendf(b, "\"attempts\":%u,\"first_time_right\":%s,\"warnings\":[", t->attempts,
                   t->attempts == 1 && t->status != GB_SIM_STATUS_RED &&
                           t->status != GB_SIM_STATUS_WAITING
                       ? "true"
                       : "false");
    bool first = true;
    for (int w = 0; w < GB_SIM_WARN_COUNT; w++) {
        if (t->warnings & (1u << w)) {
            gb_buf_appendf(b, "%s\"%s\"", first ? "" : ",", gb_sim_warn_id((gb_sim_warn_t)w));
            first = false;
        }
    }
    gb_buf_append_str(b, "],\"failures\":{");
    first = true;
    for (int f = 1; f < GB_SIM_FAULT_COUNT; f++) {
        if (t->failures[f] > 0) {
            gb_buf_appendf(b, "%s\"%s\":%u", first ? "" : ",", gb_sim_fault_id((gb_sim_fault_t)f),
                           t->failures[f]);
            first = false;
        }
    }
    gb_buf_append_str(b, "},");
    put_s(b, "slot_at_s", t->slot_at);
    gb_buf_append_str(b, ",");
    put_at(b, "started_at", c, t->attempt_at);
    gb_buf_append_str(b, ",");
    put_at(b, "result_at", c, t->result_at);
    gb_buf_append_str(b, ",");
    put_at(b, "resealed_at", c, t->resealed_at);
    gb_buf_append_str(b, ",");
    put_at(b, "delivered_at", c, t->delivered_at);
    gb_buf_append_str(b, ",\"stages\":{");
    first = true;
    for (int s = 0; s < GB_SIM_STAGE_COUNT; s++) {
        if (t->stage_state[s] == 0) {
            continue;
        }
        gb_buf_appendf(b, "%s\"%s\":{", first ? "" : ",", gb_sim_stage_id((gb_sim_stage_t)s));
        first = false;
        put_s(b, "start_s", t->stage_start[s]);
        gb_buf_append_str(b, ",");
        put_s(b, "duration_s", t->stage_end[s] >= 0 ? t->stage_end[s] - t->stage_start[s] : -1);
        gb_buf_appendf(b, ",\"state\":\"%s\"}", state_ids[t->stage_state[s]]);
    }
    gb_buf_append_str(b, "},");
    put_s(b, "device_preparation_s", du.device_preparation_ms);
    gb_buf_append_str(b, ",");
    put_s(b, "device_setup_s", du.device_setup_ms);
    gb_buf_append_str(b, ",");
    put_s(b, "account_setup_s", du.account_setup_ms);
    gb_buf_append_str(b, ",");
    put_s(b, "esp_s", du.esp_ms);
    gb_buf_append_str(b, ",");
    put_s(b, "total_s", du.total_ms);
    gb_buf_appendf(b,
                   ",\"bytes\":{\"total\":%llu,\"http\":%llu,\"lan\":%llu,\"cache\":%llu},"
                   "\"setup_bytes\":%llu,\"setup_sample_ms\":%llu,",
                   (unsigned long long)t->bytes, (unsigned long long)t->http_bytes,
                   (unsigned long long)t->lan_bytes, (unsigned long long)t->cache_bytes,
                   (unsigned long long)t->setup_bytes, (unsigned long long)t->setup_sample_ms);
    put_s(b, "download_s", t->download_ms > 0 || t->setup_bytes > 0 ? (int64_t)t->download_ms : -1);
    double m = mbps(t), k = concurrency(t);
    if (m >= 0) {
        gb_buf_appendf(b, ",\"mean_mbps\":%.3f", m);
    } else {
        gb_buf_append_str(b, ",\"mean_mbps\":null");
    }
    if (k >= 0) {
        gb_buf_appendf(b, ",\"concurrency\":%.3f", k);
    } else {
        gb_buf_append_str(b, ",\"concurrency\":null");
    }
    gb_buf_appendf(b, ",\"messages\":%llu}", (unsigned long long)t->messages);
}

/* Fleet-wide figures shared by the JSON and the text summary. */
typedef struct totals {
    uint32_t by_status[4];
    uint32_t by_diag[GB_SIM_FAULT_COUNT];
    uint32_t failures[GB_SIM_FAULT_COUNT];
    uint32_t warnings[GB_SIM_WARN_COUNT];
    uint32_t first_time_right;
    uint64_t attempts;
    int64_t makespan;
    int64_t end;
    double sum_total, sum_esp, sum_prep, sum_setup, sum_account;
    uint32_t n_total, n_esp, n_prep, n_setup, n_account;
    double stage_sum[GB_SIM_STAGE_COUNT];
    uint32_t stage_n[GB_SIM_STAGE_COUNT];
    uint64_t bytes, http, lan, cache;
    double sum_mbps, sum_conc;
    uint32_t n_mbps, n_conc;
} totals_t;

static void add(double *sum, uint32_t *n, int64_t ms)
{
    if (ms >= 0) {
        *sum += (double)ms / 1000.0;
        (*n)++;
    }
}

static void tally(const gb_sim_t *sim, totals_t *x)
{
    memset(x, 0, sizeof(*x));
    x->makespan = -1;
    x->end = -1;
    for (uint32_t i = 0; i < gb_sim_device_count(sim); i++) {
        const gb_sim_truth_t *t = gb_sim_truth(sim, i);
        gb_sim_durations_t du;
        gb_sim_truth_durations(t, &du);
        x->by_status[t->status]++;
        if (t->status == GB_SIM_STATUS_RED) {
            x->by_diag[t->diagnosis]++;
        } else if (t->status != GB_SIM_STATUS_WAITING && t->attempts == 1) {
            x->first_time_right++;
        }
        for (int f = 0; f < GB_SIM_FAULT_COUNT; f++) {
            x->failures[f] += t->failures[f];
        }
        for (int w = 0; w < GB_SIM_WARN_COUNT; w++) {
            if (t->warnings & (1u << w)) {
                x->warnings[w]++;
            }
        }
        x->attempts += t->attempts;
        if (t->result_at > x->makespan) {
            x->makespan = t->result_at;
        }
        int64_t last = t->delivered_at > t->resealed_at ? t->delivered_at : t->resealed_at;
        last = last > t->result_at ? last : t->result_at;
        if (last > x->end) {
            x->end = last;
        }
        add(&x->sum_total, &x->n_total, du.total_ms);
        add(&x->sum_esp, &x->n_esp, du.esp_ms);
        add(&x->sum_prep, &x->n_prep, du.device_preparation_ms);
        add(&x->sum_setup, &x->n_setup, du.device_setup_ms);
        add(&x->sum_account, &x->n_account, du.account_setup_ms);
        for (int s = 0; s < GB_SIM_STAGE_COUNT; s++) {
            if (t->stage_state[s] != 0 && t->stage_end[s] >= 0) {
                add(&x->stage_sum[s], &x->stage_n[s], t->stage_end[s] - t->stage_start[s]);
            }
        }
        x->bytes += t->bytes;
        x->http += t->http_bytes;
        x->lan += t->lan_bytes;
        x->cache += t->cache_bytes;
        if (mbps(t) >= 0) {
            x->sum_mbps += mbps(t);
            x->n_mbps++;
        }
        if (concurrency(t) >= 0) {
            x->sum_conc += concurrency(t);
            x->n_conc++;
        }
    }
}

static void put_mean(gb_buf_t *b, const char *key, double sum, uint32_t n)
{
    if (n == 0) {
        gb_buf_appendf(b, ",\"%s\":null", key);
    } else {
        gb_buf_appendf(b, ",\"%s\":%.3f", key, sum / n);
    }
}

void gb_sim_truth_json(const gb_sim_t *sim, gb_buf_t *b)
{
    const gb_sim_config_t *c = gb_sim_config(sim);
    totals_t x;
    tally(sim, &x);
    uint32_t green = x.by_status[GB_SIM_STATUS_RESEALED] + x.by_status[GB_SIM_STATUS_DELIVERED];

    gb_buf_appendf(b, "{\"generator\":\"%s\",\"settings\":", GB_SIM_AGENT);
    settings_json(c, b);
    gb_buf_appendf(b,
                   ",\"devices\":%u,\"green\":%u,\"red\":%u,\"resealed\":%u,\"delivered\":%u,"
                   "\"unfinished\":%u,\"first_time_right\":%u,\"attempts\":%llu,",
                   gb_sim_device_count(sim), green, x.by_status[GB_SIM_STATUS_RED],
                   x.by_status[GB_SIM_STATUS_RESEALED], x.by_status[GB_SIM_STATUS_DELIVERED],
                   x.by_status[GB_SIM_STATUS_WAITING], x.first_time_right,
                   (unsigned long long)x.attempts);
    gb_buf_appendf(b, "\"by_status\":{\"red\":%u,\"resealed\":%u,\"delivered\":%u}",
                   x.by_status[GB_SIM_STATUS_RED], x.by_status[GB_SIM_STATUS_RESEALED],
                   x.by_status[GB_SIM_STATUS_DELIVERED]);
    gb_buf_append_str(b, ",\"by_diagnosis\":{");
    bool first = true;
    for (int f = 1; f < GB_SIM_FAULT_COUNT; f++) {
        if (f != GB_SIM_FAULT_COMPONENT_UPDATE_ERROR) {
            gb_buf_appendf(b, "%s\"%s\":%u", first ? "" : ",", gb_sim_fault_id((gb_sim_fault_t)f),
                           x.by_diag[f]);
            first = false;
        }
    }
    gb_buf_append_str(b, "},\"failures_by_diagnosis\":{");
    first = true;
    for (int f = 1; f < GB_SIM_FAULT_COUNT; f++) {
        if (f != GB_SIM_FAULT_COMPONENT_UPDATE_ERROR) {
            gb_buf_appendf(b, "%s\"%s\":%u", first ? "" : ",", gb_sim_fault_id((gb_sim_fault_t)f),
                           x.failures[f]);
            first = false;
        }
    }
    gb_buf_append_str(b, "},\"warnings\":{");
    for (int w = 0; w < GB_SIM_WARN_COUNT; w++) {
        gb_buf_appendf(b, "%s\"%s\":%u", w ? "," : "", gb_sim_warn_id((gb_sim_warn_t)w),
                       x.warnings[w]);
    }
    gb_buf_append_str(b, "},");
    put_s(b, "makespan_s", x.makespan);
    gb_buf_append_str(b, ",");
    put_at(b, "makespan_at", c, x.makespan);
    gb_buf_append_str(b, ",");
    put_s(b, "end_s", x.end);
    put_mean(b, "mean_device_s", x.sum_total, x.n_total);
    put_mean(b, "mean_esp_s", x.sum_esp, x.n_esp);
    put_mean(b, "mean_device_preparation_s", x.sum_prep, x.n_prep);
    put_mean(b, "mean_device_setup_s", x.sum_setup, x.n_setup);
    put_mean(b, "mean_account_setup_s", x.sum_account, x.n_account);
    if (x.makespan > 0) {
        gb_buf_appendf(b, ",\"devices_per_hour\":%.3f",
                       (double)green * 3600000.0 / (double)x.makespan);
    } else {
        gb_buf_append_str(b, ",\"devices_per_hour\":null");
    }
    gb_buf_append_str(b, ",\"mean_stage_s\":{");
    first = true;
    for (int s = 0; s < GB_SIM_STAGE_COUNT; s++) {
        if (x.stage_n[s] > 0) {
            gb_buf_appendf(b, "%s\"%s\":%.3f", first ? "" : ",", gb_sim_stage_id((gb_sim_stage_t)s),
                           x.stage_sum[s] / x.stage_n[s]);
            first = false;
        }
    }
    gb_buf_appendf(b, "},\"bytes\":{\"total\":%llu,\"http\":%llu,\"lan\":%llu,\"cache\":%llu}",
                   (unsigned long long)x.bytes, (unsigned long long)x.http,
                   (unsigned long long)x.lan, (unsigned long long)x.cache);
    put_mean(b, "mean_mbps", x.sum_mbps, x.n_mbps);
    put_mean(b, "mean_concurrency", x.sum_conc, x.n_conc);
    gb_buf_appendf(b, ",\"messages\":%llu,\"per_device\":[",
                   (unsigned long long)gb_sim_messages(sim));
    for (uint32_t i = 0; i < gb_sim_device_count(sim); i++) {
        if (i > 0) {
            gb_buf_append_str(b, ",\n");
        } else {
            gb_buf_append_str(b, "\n");
        }
        device_json(sim, i, b);
    }
    gb_buf_append_str(b, "\n]}\n");
}

static void put_dur(gb_buf_t *b, double s)
{
    long v = (long)(s + 0.5);
    if (v >= 3600) {
        gb_buf_appendf(b, "%ldh%02ldm%02lds", v / 3600, v / 60 % 60, v % 60);
    } else if (v >= 60) {
        gb_buf_appendf(b, "%ldm%02lds", v / 60, v % 60);
    } else {
        gb_buf_appendf(b, "%lds", v);
    }
}

static double mean_or_zero(double sum, uint32_t n)
{
    return n ? sum / n : 0;
}

void gb_sim_summary_text(const gb_sim_t *sim, gb_buf_t *b)
{
    const gb_sim_config_t *c = gb_sim_config(sim);
    totals_t x;
    tally(sim, &x);
    uint32_t green = x.by_status[GB_SIM_STATUS_RESEALED] + x.by_status[GB_SIM_STATUS_DELIVERED];

    gb_buf_appendf(b,
                   "glovebox-sim: %u devices, %u slots, uplink %g Mbit/s, payload %s (%.2f GB), "
                   "seed %llu\n",
                   gb_sim_device_count(sim), c->slots, c->uplink_mbps, c->payload,
                   (double)payload_bytes(c) / 1e9, (unsigned long long)c->seed);
    gb_buf_appendf(b,
                   "  outcome     green %u (first time right %u), red %u; resealed %u, "
                   "delivered %u",
                   green, x.first_time_right, x.by_status[GB_SIM_STATUS_RED],
                   x.by_status[GB_SIM_STATUS_RESEALED], x.by_status[GB_SIM_STATUS_DELIVERED]);
    if (x.by_status[GB_SIM_STATUS_WAITING] > 0) {
        gb_buf_appendf(b, "; unfinished %u", x.by_status[GB_SIM_STATUS_WAITING]);
    }
    gb_buf_append_str(b, "\n  makespan    ");
    put_dur(b, (double)(x.makespan > 0 ? x.makespan : 0) / 1000.0);
    gb_buf_appendf(b, " (%.1f s) to the last result",
                   (double)(x.makespan > 0 ? x.makespan : 0) / 1000.0);
    if (x.makespan > 0) {
        gb_buf_appendf(b, ", %.1f green devices/hour",
                       (double)green * 3600000.0 / (double)x.makespan);
    }
    gb_buf_append_str(b, "\n  per device  mean ");
    put_dur(b, mean_or_zero(x.sum_total, x.n_total));
    gb_buf_append_str(b, " first stage to result; ESP ");
    put_dur(b, mean_or_zero(x.sum_esp, x.n_esp));
    gb_buf_append_str(b, " (preparation ");
    put_dur(b, mean_or_zero(x.sum_prep, x.n_prep));
    gb_buf_append_str(b, ", setup ");
    put_dur(b, mean_or_zero(x.sum_setup, x.n_setup));
    gb_buf_append_str(b, ", account ");
    put_dur(b, mean_or_zero(x.sum_account, x.n_account));
    gb_buf_append_str(b, ")\n  stages      ");
    int col = 0;
    for (int s = 0; s < GB_SIM_STAGE_COUNT; s++) {
        if (x.stage_n[s] == 0) {
            continue;
        }
        if (col > 0 && col % 4 == 0) {
            gb_buf_append_str(b, "\n              ");
        } else if (col > 0) {
            gb_buf_append_str(b, ", ");
        }
        gb_buf_appendf(b, "%s ", gb_sim_stage_id((gb_sim_stage_t)s));
        put_dur(b, x.stage_sum[s] / x.stage_n[s]);
        col++;
    }
    gb_buf_appendf(b,
                   "\n  bytes       %.3f GB (http %.3f, LAN peers %.3f, cache %.3f); mean %.1f "
                   "Mbit/s per device while downloading, concurrency %.1f\n",
                   (double)x.bytes / 1e9, (double)x.http / 1e9, (double)x.lan / 1e9,
                   (double)x.cache / 1e9, mean_or_zero(x.sum_mbps, x.n_mbps),
                   mean_or_zero(x.sum_conc, x.n_conc));
    gb_buf_append_str(b, "  red by      ");
    bool any = false;
    for (int f = 1; f < GB_SIM_FAULT_COUNT; f++) {
        if (x.by_diag[f] > 0) {
            gb_buf_appendf(b, "%s%s %u", any ? ", " : "", gb_sim_fault_id((gb_sim_fault_t)f),
                           x.by_diag[f]);
            any = true;
        }
    }
    gb_buf_append_str(b, any ? "\n" : "none\n");
    gb_buf_append_str(b, "  failures    ");
    any = false;
    for (int f = 1; f < GB_SIM_FAULT_COUNT; f++) {
        if (x.failures[f] > 0) {
            gb_buf_appendf(b, "%s%s %u", any ? ", " : "", gb_sim_fault_id((gb_sim_fault_t)f),
                           x.failures[f]);
            any = true;
        }
    }
    gb_buf_append_str(b, any ? " (all attempts)\n" : "none\n");
    gb_buf_appendf(b,
                   "  warnings    component_update_error %u, virtual_machine %u, tpm_not_2_0 %u\n",
                   x.warnings[GB_SIM_WARN_COMPONENT_UPDATE_ERROR],
                   x.warnings[GB_SIM_WARN_VIRTUAL_MACHINE], x.warnings[GB_SIM_WARN_TPM_NOT_2_0]);
    gb_buf_appendf(b, "  messages    %llu\n", (unsigned long long)gb_sim_messages(sim));
}
