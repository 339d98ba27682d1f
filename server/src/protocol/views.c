/* views: the REST API's JSON for a device (list form and detail form) and the agent's reply,
 * appended straight to a gb_buf_t with gb_json_quote: the list endpoint writes a hundred of these
 * per request, so no JSON tree is built. Times are RFC 3339 UTC with milliseconds, durations are
 * seconds with up to three decimals, HRESULTs are "0x" and eight upper-case hex digits. */
#include <string.h>

#include "protocol/protocol.h"

/* Keys are literals of plain ASCII: written as they are, without going through the quoting, and
 * with their lengths known at compile time. */
#define key(b, k, first) key_lit((b), "\"" k "\":", sizeof("\"" k "\":") - 1, (first))

static inline void key_lit(gb_buf_t *b, const char *lit, size_t n, bool *first)
{
    if (!*first) {
        gb_buf_append(b, ",", 1);
    }
    *first = false;
    gb_buf_append(b, lit, n);
}

/* An id that is "" for "none" (stage, state) becomes null. */
static void id_or_null(gb_buf_t *b, const char *s)
{
    gb_json_str_or_null(b, s[0] != '\0' ? s : NULL);
}

static void hresult_or_null(gb_buf_t *b, bool has, uint32_t hr)
{
    if (!has) {
        gb_buf_append(b, "null", 4);
        return;
    }
    char s[11];
    gb_hresult_format(hr, s);
    gb_buf_append(b, "\"", 1);
    gb_buf_append(b, s, 10);
    gb_buf_append(b, "\"", 1);
}

static void tri_or_null(gb_buf_t *b, gb_tri_t t)
{
    gb_buf_append_str(b, t == GB_TRI_UNSET ? "null" : t == GB_TRI_TRUE ? "true" : "false");
}

void gb_proto_diagnosis_json(gb_buf_t *b, const gb_diagnosis_t *d)
{
    const gb_diag_info_t *info = d != NULL ? gb_diag_info(d->code) : NULL;
    if (info == NULL) {
        gb_buf_append(b, "null", 4);
        return;
    }
    gb_buf_append_str(b, "{\"code\":");
    gb_json_quote(b, info->id, strlen(info->id));
    gb_buf_append_str(b, ",\"stage\":");
    id_or_null(b, gb_stage_id(d->stage));
    gb_buf_append_str(b, ",\"hresult\":");
    hresult_or_null(b, d->has_hresult, d->hresult);
    gb_buf_append_str(b, ",\"summary\":");
    gb_json_quote(b, info->summary, strlen(info->summary));
    gb_buf_append_str(b, ",\"remedy\":");
    gb_json_quote(b, info->remedy, strlen(info->remedy));
    gb_buf_append(b, "}", 1);
}

void gb_proto_durations_json(const gb_dev_t *dev, gb_buf_t *b)
{
    gb_durations_t d;
    gb_dev_durations(dev, &d);
    gb_buf_append_str(b, "{\"device_preparation_s\":");
    gb_json_seconds(b, d.device_preparation_ms);
    gb_buf_append_str(b, ",\"device_setup_s\":");
    gb_json_seconds(b, d.device_setup_ms);
    gb_buf_append_str(b, ",\"account_setup_s\":");
    gb_json_seconds(b, d.account_setup_ms);
    gb_buf_append_str(b, ",\"total_s\":");
    gb_json_seconds(b, d.total_ms);
    gb_buf_append(b, "}", 1);
}

/* The Device object's members, in the order they are written; "fields" names them. */
#define DEVICE_MEMBERS(X) \
    X(serial)             \
    X(status)             \
    X(stage)              \
    X(stage_state)        \
    X(attempt)            \
    X(stalled)            \
    X(group_tag)          \
    X(assigned_user)      \
    X(profile)            \
    X(slot)               \
    X(imported)           \
    X(diagnosis)          \
    X(warnings)           \
    X(last_seen)          \
    X(durations)          \
    X(bytes_downloaded)   \
    X(bytes_by_source)    \
    X(mean_mbps)          \
    X(first_time_right)   \
    X(resealed_at)        \
    X(ready_for_user_at)  \
    X(reseal_expires_at)

enum {
#define X(name) M_##name,
    DEVICE_MEMBERS(X)
#undef X
        M_COUNT
};

_Static_assert(M_COUNT <= 32, "a member's bit must fit the 32-bit mask");

/* Each member's key as written: "\"name\":". */
static const struct {
    const char *lit;
    size_t len;
} MEMBER_KEYS[] = {
#define X(name) {"\"" #name "\":", sizeof("\"" #name "\":") - 1},
    DEVICE_MEMBERS(X)
#undef X
};

bool gb_proto_device_fields_parse(gb_str_t list, uint32_t *mask, gb_str_t *bad)
{
    uint32_t m = 0;
    size_t i = 0;
    while (i <= list.len) {
        size_t j = i;
        while (j < list.len && list.p[j] != ',') {
            j++;
        }
        gb_str_t name = {list.p + i, j - i};
        size_t k = 0;
        while (k < M_COUNT && !(MEMBER_KEYS[k].len - 3 == name.len && name.len > 0 &&
                                memcmp(MEMBER_KEYS[k].lit + 1, name.p, name.len) == 0)) {
            k++;
        }
        if (k == M_COUNT) {
            *bad = name;
            return false;
        }
        m |= 1u << k;
        i = j + 1;
    }
    *mask = m | 1u << M_serial;
    return true;
}

/* Writes member m's key and returns true when the view has it. */
static bool member(gb_buf_t *b, const gb_proto_view_opts_t *opts, unsigned m, bool *first)
{
    uint32_t want = opts != NULL ? opts->fields : 0;
    if (want != 0 && (want & 1u << m) == 0) {
        return false;
    }
    key_lit(b, MEMBER_KEYS[m].lit, MEMBER_KEYS[m].len, first);
    return true;
}

/* The Device object's members, without the braces (the detail form adds its own). */
static void device_members(const gb_dev_t *dev, const gb_proto_view_opts_t *opts, gb_buf_t *b,
                           bool *first)
{
    int64_t now = opts != NULL ? opts->now_ms : GB_TIME_NONE;
    int64_t stall = opts != NULL ? opts->stall_timeout_ms : 0;

    if (member(b, opts, M_serial, first)) {
        gb_json_str_or_null(b, dev->serial);
    }
    if (member(b, opts, M_status, first)) {
        gb_json_str_or_null(b, gb_dev_status_id(dev->status));
    }
    if (member(b, opts, M_stage, first)) {
        id_or_null(b, gb_stage_id(dev->stage));
    }
    if (member(b, opts, M_stage_state, first)) {
        id_or_null(b, gb_run_state_id(dev->stage_state));
    }
    if (member(b, opts, M_attempt, first)) {
        gb_buf_append_u64(b, dev->attempt);
    }
    if (member(b, opts, M_stalled, first)) {
        gb_buf_append_str(b, now != GB_TIME_NONE && gb_dev_is_stalled(dev, now, stall) ? "true"
                                                                                       : "false");
    }
    if (member(b, opts, M_group_tag, first)) {
        gb_json_str_or_null(b, dev->group_tag);
    }
    if (member(b, opts, M_assigned_user, first)) {
        gb_json_str_or_null(b, dev->assigned_user);
    }
    if (member(b, opts, M_profile, first)) {
        gb_json_str_or_null(b, dev->profile);
    }
    if (member(b, opts, M_slot, first)) {
        gb_json_str_or_null(b, dev->slot);
    }
    if (member(b, opts, M_imported, first)) {
        gb_buf_append_str(b, dev->imported ? "true" : "false");
    }
    if (member(b, opts, M_diagnosis, first)) {
        gb_proto_diagnosis_json(b, gb_dev_diagnosis(dev));
    }
    if (member(b, opts, M_warnings, first)) {
        gb_buf_append(b, "[", 1);
        uint32_t w = gb_dev_warnings(dev, now);
        bool wfirst = true;
        for (int i = 0; i < GB_WARN_COUNT; i++) {
            if (w & GB_WARN_BIT(i)) {
                if (!wfirst) {
                    gb_buf_append(b, ",", 1);
                }
                wfirst = false;
                const char *id = gb_warn_id((gb_warn_t)i);
                gb_json_quote(b, id, strlen(id));
            }
        }
        gb_buf_append(b, "]", 1);
    }
    if (member(b, opts, M_last_seen, first)) {
        gb_json_time(b, dev->last_seen_ms);
    }
    if (member(b, opts, M_durations, first)) {
        gb_proto_durations_json(dev, b);
    }
    if (member(b, opts, M_bytes_downloaded, first)) {
        gb_buf_append_u64(b, dev->bytes_total);
    }
    if (member(b, opts, M_bytes_by_source, first)) {
        gb_buf_append_str(b, "{\"http\":");
        gb_buf_append_u64(b, dev->bytes_http);
        gb_buf_append_str(b, ",\"lan\":");
        gb_buf_append_u64(b, dev->bytes_lan);
        gb_buf_append_str(b, ",\"cache\":");
        gb_buf_append_u64(b, dev->bytes_cache);
        gb_buf_append(b, "}", 1);
    }
    if (member(b, opts, M_mean_mbps, first)) {
        double mbps;
        if (gb_dev_mean_mbps(dev, &mbps)) {
            gb_json_number(b, mbps);
        } else {
            gb_buf_append(b, "null", 4);
        }
    }
    if (member(b, opts, M_first_time_right, first)) {
        gb_buf_append_str(b, dev->first_time_right ? "true" : "false");
    }
    if (member(b, opts, M_resealed_at, first)) {
        gb_json_time(b, dev->resealed_ms);
    }
    if (member(b, opts, M_ready_for_user_at, first)) {
        gb_json_time(b, gb_dev_ready_for_user_ms(dev));
    }
    if (member(b, opts, M_reseal_expires_at, first)) {
        gb_json_time(b, gb_dev_reseal_expires_ms(dev));
    }
}

void gb_proto_device_json(const gb_dev_t *dev, const gb_proto_view_opts_t *opts, gb_buf_t *out)
{
    bool first = true;
    gb_buf_append(out, "{", 1);
    device_members(dev, opts, out, &first);
    gb_buf_append(out, "}", 1);
}

static void timeline_json(const gb_dev_t *dev, gb_buf_t *b)
{
    gb_buf_append(b, "[", 1);
    for (uint32_t i = 0; i < dev->n_runs; i++) {
        const gb_stage_run_t *r = &dev->runs[i];
        gb_stage_t st = (gb_stage_t)r->stage;
        if (i > 0) {
            gb_buf_append(b, ",", 1);
        }
        gb_buf_appendf(b, "{\"attempt\":%u,\"stage\":", (unsigned)r->attempt);
        id_or_null(b, gb_stage_id(st));
        gb_buf_append_str(b, ",\"name\":");
        id_or_null(b, gb_stage_name(st));
        gb_buf_append_str(b, ",\"state\":");
        id_or_null(b, gb_run_state_id((gb_run_state_t)r->state));
        gb_buf_append_str(b, ",\"started_at\":");
        gb_json_time(b, r->started_ms);
        gb_buf_append_str(b, ",\"ended_at\":");
        gb_json_time(b, r->ended_ms);
        gb_buf_append_str(b, ",\"duration_s\":");
        int64_t dur = -1;
        if (r->started_ms != GB_TIME_NONE) {
            /* A run still going counts up to the latest device time seen. */
            int64_t end = r->ended_ms != GB_TIME_NONE ? r->ended_ms : dev->last_seen_ms;
            if (end != GB_TIME_NONE) {
                dur = end > r->started_ms ? end - r->started_ms : 0;
            }
        }
        gb_json_seconds(b, dur);
        gb_buf_append_str(b, ",\"hresult\":");
        hresult_or_null(b, r->has_hresult, r->hresult);
        gb_buf_append(b, "}", 1);
    }
    gb_buf_append(b, "]", 1);
}

static void attempts_json(const gb_dev_t *dev, gb_buf_t *b)
{
    gb_buf_append(b, "[", 1);
    for (uint32_t i = 0; i < dev->n_attempts; i++) {
        const gb_attempt_t *a = &dev->attempts[i];
        if (i > 0) {
            gb_buf_append(b, ",", 1);
        }
        gb_buf_appendf(b, "{\"attempt\":%u,\"started_at\":", i + 1);
        gb_json_time(b, a->started_ms);
        gb_buf_append_str(b, ",\"ended_at\":");
        gb_json_time(b, a->ended_ms);
        gb_buf_append_str(b, ",\"outcome\":");
        bool done = a->outcome == GB_DEV_GREEN || a->outcome == GB_DEV_RED;
        gb_json_str_or_null(b, done ? gb_dev_status_id(a->outcome) : NULL);
        gb_buf_append_str(b, ",\"diagnosis\":");
        gb_proto_diagnosis_json(b, a->outcome == GB_DEV_RED ? &a->diagnosis : NULL);
        gb_buf_append(b, "}", 1);
    }
    gb_buf_append(b, "]", 1);
}

static void apps_json(const gb_dev_t *dev, gb_buf_t *b)
{
    gb_buf_append(b, "[", 1);
    for (uint32_t i = 0; i < dev->n_apps; i++) {
        const gb_app_t *a = &dev->apps[i];
        if (i > 0) {
            gb_buf_append(b, ",", 1);
        }
        gb_buf_append_str(b, "{\"name\":");
        gb_json_str_or_null(b, a->name);
        gb_buf_append_str(b, ",\"state\":");
        id_or_null(b, gb_app_state_id((gb_app_state_t)a->state));
        gb_buf_append_str(b, ",\"bytes\":");
        if (a->has_bytes) {
            gb_buf_appendf(b, "%llu", (unsigned long long)a->bytes);
        } else {
            gb_buf_append(b, "null", 4);
        }
        gb_buf_append_str(b, ",\"hresult\":");
        hresult_or_null(b, a->has_hresult, a->hresult);
        gb_buf_append(b, "}", 1);
    }
    gb_buf_append(b, "]", 1);
}

void gb_proto_device_detail_json(const gb_dev_t *dev, const gb_proto_view_opts_t *opts,
                                 gb_buf_t *out)
{
    gb_proto_view_opts_t all = {GB_TIME_NONE, 0, 0};
    if (opts != NULL) {
        all = *opts;
        all.fields = 0;
    }
    bool first = true;
    gb_buf_append(out, "{", 1);
    device_members(dev, &all, out, &first);
    key(out, "timeline", &first);
    timeline_json(dev, out);
    key(out, "attempts", &first);
    attempts_json(dev, out);
    key(out, "user_upn", &first);
    gb_json_str_or_null(out, dev->user_upn);

    key(out, "hardware", &first);
    gb_buf_append_str(out, "{\"manufacturer\":");
    gb_json_str_or_null(out, dev->manufacturer);
    gb_buf_append_str(out, ",\"model\":");
    gb_json_str_or_null(out, dev->model);
    gb_buf_append_str(out, ",\"tpm_version\":");
    gb_json_str_or_null(out, dev->tpm_version);
    gb_buf_append_str(out, ",\"tpm_attestation\":");
    tri_or_null(out, dev->tpm_attestation);
    gb_buf_append_str(out, ",\"virtual_machine\":");
    tri_or_null(out, dev->virtual_machine);
    gb_buf_append(out, "}", 1);

    key(out, "network", &first);
    gb_buf_append_str(out, "{\"medium\":");
    id_or_null(out, gb_medium_id(dev->medium));
    gb_buf_append_str(out, ",\"link_mbps\":");
    if (dev->link_mbps >= 0) {
        gb_json_number(out, dev->link_mbps);
    } else {
        gb_buf_append(out, "null", 4);
    }
    gb_buf_append(out, "}", 1);

    key(out, "agent", &first);
    gb_json_str_or_null(out, dev->agent);
    key(out, "os_build", &first);
    gb_json_str_or_null(out, dev->os_build);
    key(out, "apps", &first);
    apps_json(dev, out);
    key(out, "first_seen", &first);
    gb_json_time(out, dev->first_seen_ms);
    key(out, "max_seq", &first);
    gb_buf_appendf(out, "%llu", (unsigned long long)dev->max_seq);
    key(out, "messages", &first);
    gb_buf_appendf(out, "%llu", (unsigned long long)dev->n_applied);
    gb_buf_append(out, "}", 1);
}

void gb_proto_agent_reply_json(const gb_dev_t *dev, gb_buf_t *out)
{
    gb_buf_appendf(out, "{\"acked_seq\":%llu,\"status\":\"%s\",\"stage\":",
                   (unsigned long long)dev->max_seq, gb_dev_status_id(dev->status));
    id_or_null(out, gb_stage_id(dev->stage));
    gb_buf_append(out, "}", 1);
}
