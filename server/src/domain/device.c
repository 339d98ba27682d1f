/* device: a device's state as memory: init, dispose, deep copy, identity setters, the arrays of
 * runs, attempts and apps, and the views derived on demand (durations, bandwidth, reseal clocks,
 * warnings at a given time, stalled). Invariant: attempt >= 1 and attempts[attempt - 1] exists;
 * every pointer the state holds is owned by it and freed by gb_dev_dispose(). */
#include <stdlib.h>
#include <string.h>

#include "domain/domain.h"
#include "domain/internal.h"

#define DAY_MS (86400000LL)

static char *dup_or_null(const char *s)
{
    return s ? gb_xstrdup(s) : NULL;
}

static void replace_str(char **slot, const char *s)
{
    free(*slot);
    *slot = dup_or_null(s);
}

static void push_attempt(gb_dev_t *dev, int64_t started_ms)
{
    if (dev->n_attempts == dev->cap_attempts) {
        dev->cap_attempts = dev->cap_attempts ? dev->cap_attempts * 2 : 2;
        dev->attempts = gb_xrealloc(dev->attempts, dev->cap_attempts * sizeof(*dev->attempts));
    }
    gb_attempt_t *a = &dev->attempts[dev->n_attempts++];
    memset(a, 0, sizeof(*a));
    a->started_ms = started_ms;
    a->ended_ms = GB_TIME_NONE;
    a->outcome = GB_DEV_PROVISIONING;
    a->fail_run = -1;
}

/* The derived half of the state, as gb_dev_init leaves it. */
static void init_derived(gb_dev_t *dev)
{
    dev->status = GB_DEV_REGISTERED;
    dev->stage = GB_STAGE_NONE;
    dev->stage_state = GB_RUN_NONE;
    dev->warnings = 0;
    dev->first_time_right = false;
    dev->resealed_ms = GB_TIME_NONE;
    dev->first_seen_ms = GB_TIME_NONE;
    dev->last_seen_ms = GB_TIME_NONE;
    dev->last_at_ms = GB_TIME_NONE;
    dev->last_arrival_ms = GB_TIME_NONE;
    dev->max_seq = 0;
    dev->contig_seq = 0;
    dev->n_applied = 0;
    dev->bytes_total = dev->bytes_http = dev->bytes_lan = dev->bytes_cache = 0;
    dev->setup_bytes = dev->setup_ms = 0;
    dev->agent = dev->os_build = dev->manufacturer = dev->model = dev->tpm_version = NULL;
    dev->user_upn = NULL;
    dev->tpm_attestation = GB_TRI_UNSET;
    dev->virtual_machine = GB_TRI_UNSET;
    dev->medium = GB_MEDIUM_UNKNOWN;
    dev->link_mbps = -1;
    dev->runs = NULL;
    dev->n_runs = dev->cap_runs = 0;
    dev->attempts = NULL;
    dev->n_attempts = dev->cap_attempts = 0;
    dev->apps = NULL;
    dev->n_apps = dev->cap_apps = 0;
    dev->attempt = 1;
    push_attempt(dev, GB_TIME_NONE);
}

static void dispose_derived(gb_dev_t *dev)
{
    free(dev->agent);
    free(dev->os_build);
    free(dev->manufacturer);
    free(dev->model);
    free(dev->tpm_version);
    free(dev->user_upn);
    free(dev->runs);
    free(dev->attempts);
    for (uint32_t i = 0; i < dev->n_apps; i++) {
        free(dev->apps[i].name);
    }
    free(dev->apps);
}

void gb_dev_init(gb_dev_t *dev, const char *serial)
{
    memset(dev, 0, sizeof(*dev));
    dev->serial = gb_xstrdup(serial ? serial : "");
    init_derived(dev);
}

void gb_dev_dispose(gb_dev_t *dev)
{
    free(dev->serial);
    free(dev->group_tag);
    free(dev->assigned_user);
    free(dev->profile);
    free(dev->slot);
    dispose_derived(dev);
    memset(dev, 0, sizeof(*dev));
}

void gb_dev_clear_derived(gb_dev_t *dev)
{
    dispose_derived(dev);
    init_derived(dev);
}

void gb_dev_copy(gb_dev_t *dst, const gb_dev_t *src)
{
    *dst = *src;
    dst->serial = dup_or_null(src->serial);
    dst->group_tag = dup_or_null(src->group_tag);
    dst->assigned_user = dup_or_null(src->assigned_user);
    dst->profile = dup_or_null(src->profile);
    dst->slot = dup_or_null(src->slot);
    dst->agent = dup_or_null(src->agent);
    dst->os_build = dup_or_null(src->os_build);
    dst->manufacturer = dup_or_null(src->manufacturer);
    dst->model = dup_or_null(src->model);
    dst->tpm_version = dup_or_null(src->tpm_version);
    dst->user_upn = dup_or_null(src->user_upn);

    dst->cap_runs = src->n_runs;
    dst->runs = NULL;
    if (src->n_runs > 0) {
        dst->runs = gb_xmalloc(src->n_runs * sizeof(*dst->runs));
        memcpy(dst->runs, src->runs, src->n_runs * sizeof(*dst->runs));
    }
    dst->cap_attempts = src->n_attempts;
    dst->attempts = NULL;
    if (src->n_attempts > 0) {
        dst->attempts = gb_xmalloc(src->n_attempts * sizeof(*dst->attempts));
        memcpy(dst->attempts, src->attempts, src->n_attempts * sizeof(*dst->attempts));
    }
    dst->cap_apps = src->n_apps;
    dst->apps = NULL;
    if (src->n_apps > 0) {
        dst->apps = gb_xmalloc(src->n_apps * sizeof(*dst->apps));
        for (uint32_t i = 0; i < src->n_apps; i++) {
            dst->apps[i] = src->apps[i];
            dst->apps[i].name = gb_xstrdup(src->apps[i].name);
        }
    }
}

void gb_dev_set_group_tag(gb_dev_t *dev, const char *group_tag)
{
    replace_str(&dev->group_tag, group_tag);
}

void gb_dev_set_assigned_user(gb_dev_t *dev, const char *assigned_user)
{
    replace_str(&dev->assigned_user, assigned_user);
}

void gb_dev_set_profile(gb_dev_t *dev, const char *name, bool hybrid_join)
{
    replace_str(&dev->profile, name);
    dev->profile_hybrid = hybrid_join;
}

void gb_dev_set_slot(gb_dev_t *dev, const char *slot)
{
    replace_str(&dev->slot, slot);
}

void gb_dev_set_imported(gb_dev_t *dev, bool imported)
{
    dev->imported = imported;
}

void gb_dev_set_last_arrival(gb_dev_t *dev, int64_t received_ms)
{
    dev->last_arrival_ms = received_ms;
}

void gb_dev__push_run(gb_dev_t *dev, const gb_stage_run_t *run)
{
    if (dev->n_runs == dev->cap_runs) {
        /* Room for one whole flow first (most devices need no more), then half as much again. */
        uint32_t cap = dev->cap_runs + dev->cap_runs / 2;
        dev->cap_runs = cap > GB_STAGE_COUNT - 1 ? cap : GB_STAGE_COUNT - 1;
        dev->runs = gb_xrealloc(dev->runs, dev->cap_runs * sizeof(*dev->runs));
    }
    dev->runs[dev->n_runs++] = *run;
}

void gb_dev__push_attempt(gb_dev_t *dev, int64_t started_ms)
{
    push_attempt(dev, started_ms);
}

gb_app_t *gb_dev__add_app(gb_dev_t *dev, const char *name, size_t len)
{
    if (dev->n_apps >= GB_DEV_MAX_APPS) {
        return NULL;
    }
    if (dev->n_apps == dev->cap_apps) {
        dev->cap_apps = dev->cap_apps ? dev->cap_apps * 2 : 4;
        dev->apps = gb_xrealloc(dev->apps, dev->cap_apps * sizeof(*dev->apps));
    }
    gb_app_t *app = &dev->apps[dev->n_apps++];
    memset(app, 0, sizeof(*app));
    app->name = gb_xstrndup(name, len > GB_APP_NAME_MAX ? GB_APP_NAME_MAX : len);
    return app;
}

void gb_dev_restore_run(gb_dev_t *dev, const gb_stage_run_t *run)
{
    gb_dev__push_run(dev, run);
}

void gb_dev_restore_attempt(gb_dev_t *dev, const gb_attempt_t *attempt)
{
    push_attempt(dev, attempt->started_ms);
    dev->attempts[dev->n_attempts - 1] = *attempt;
}

void gb_dev_restore_app(gb_dev_t *dev, const char *name, const gb_app_t *fields)
{
    gb_app_t *a = gb_dev__add_app(dev, name, strlen(name));
    if (a != NULL) {
        char *copy = a->name;
        *a = *fields;
        a->name = copy;
    }
}

const gb_stage_run_t *gb_dev_find_run(const gb_dev_t *dev, uint32_t attempt, gb_stage_t stage)
{
    /* Runs of the current attempt sit at the end: search backwards. */
    for (uint32_t i = dev->n_runs; i-- > 0;) {
        const gb_stage_run_t *r = &dev->runs[i];
        if (r->attempt == attempt && r->stage == stage) {
            return r;
        }
        if (r->attempt < attempt) {
            break;
        }
    }
    return NULL;
}

const gb_app_t *gb_dev_find_app(const gb_dev_t *dev, const char *name)
{
    for (uint32_t i = 0; i < dev->n_apps; i++) {
        if (strcmp(dev->apps[i].name, name) == 0) {
            return &dev->apps[i];
        }
    }
    return NULL;
}

const gb_attempt_t *gb_dev_current_attempt(const gb_dev_t *dev)
{
    GB_ASSERT(dev->attempt >= 1 && dev->attempt <= dev->n_attempts);
    return &dev->attempts[dev->attempt - 1];
}

const gb_diagnosis_t *gb_dev_diagnosis(const gb_dev_t *dev)
{
    const gb_attempt_t *a = gb_dev_current_attempt(dev);
    if (dev->status != GB_DEV_RED || a->diagnosis.code == GB_DIAG_NONE) {
        return NULL;
    }
    return &a->diagnosis;
}

/* Each phase's span in the current attempt: first start to last end, or to the latest device
 * time while one of its runs is open. -1 when the phase has not begun. One pass over the runs
 * for all phases (the list view asks for every device's durations). */
typedef struct phase_span {
    int64_t first, last;
    bool open;
} phase_span_t;

static int64_t span_ms(const phase_span_t *p, int64_t last_seen_ms)
{
    if (p->first == GB_TIME_NONE) {
        return -1;
    }
    int64_t last = p->last;
    if (p->open && last_seen_ms != GB_TIME_NONE && (last == GB_TIME_NONE || last_seen_ms > last)) {
        last = last_seen_ms;
    }
    if (last == GB_TIME_NONE || last < p->first) {
        return 0;
    }
    return last - p->first;
}

void gb_dev_durations(const gb_dev_t *dev, gb_durations_t *out)
{
    phase_span_t span[GB_PHASE_COUNT];
    for (size_t i = 0; i < GB_ARRAY_LEN(span); i++) {
        span[i] = (phase_span_t){GB_TIME_NONE, GB_TIME_NONE, false};
    }
    for (uint32_t i = dev->n_runs; i-- > 0;) {
        const gb_stage_run_t *r = &dev->runs[i];
        if (r->attempt < dev->attempt) {
            break;
        }
        gb_phase_t ph = gb_stage_phase((gb_stage_t)r->stage);
        if (r->attempt != dev->attempt || (unsigned)ph >= GB_PHASE_COUNT) {
            continue;
        }
        phase_span_t *p = &span[ph];
        int64_t s = r->started_ms != GB_TIME_NONE ? r->started_ms : r->ended_ms;
        if (s != GB_TIME_NONE && (p->first == GB_TIME_NONE || s < p->first)) {
            p->first = s;
        }
        if (r->ended_ms == GB_TIME_NONE) {
            p->open = true;
        } else if (p->last == GB_TIME_NONE || r->ended_ms > p->last) {
            p->last = r->ended_ms;
        }
    }
    out->device_preparation_ms = span_ms(&span[GB_PHASE_DEVICE_PREPARATION], dev->last_seen_ms);
    out->device_setup_ms = span_ms(&span[GB_PHASE_DEVICE_SETUP], dev->last_seen_ms);
    out->account_setup_ms = span_ms(&span[GB_PHASE_ACCOUNT_SETUP], dev->last_seen_ms);
    out->total_ms = -1;
    int64_t parts[] = {out->device_preparation_ms, out->device_setup_ms, out->account_setup_ms};
    for (size_t i = 0; i < GB_ARRAY_LEN(parts); i++) {
        if (parts[i] >= 0) {
            out->total_ms = (out->total_ms < 0 ? 0 : out->total_ms) + parts[i];
        }
    }
}

bool gb_dev_mean_mbps(const gb_dev_t *dev, double *out)
{
    if (dev->setup_ms == 0) {
        return false;
    }
    /* bits per millisecond / 1000 = Mbit/s */
    *out = (double)dev->setup_bytes * 8.0 / (double)dev->setup_ms / 1000.0;
    return true;
}

int64_t gb_dev_ready_for_user_ms(const gb_dev_t *dev)
{
    if (dev->resealed_ms == GB_TIME_NONE) {
        return GB_TIME_NONE;
    }
    return dev->resealed_ms + GB_RESEAL_READY_MS;
}

int64_t gb_dev_reseal_expires_ms(const gb_dev_t *dev)
{
    if (dev->resealed_ms == GB_TIME_NONE) {
        return GB_TIME_NONE;
    }
    return gb_domain__add_months(dev->resealed_ms, GB_RESEAL_VALID_MONTHS);
}

uint32_t gb_dev_warnings(const gb_dev_t *dev, int64_t now_ms)
{
    uint32_t w = dev->warnings;
    if (!dev->imported) {
        w |= GB_WARN_BIT(GB_WARN_NOT_IMPORTED);
    }
    if (dev->profile_hybrid) {
        w |= GB_WARN_BIT(GB_WARN_HYBRID_JOIN_UNSUPPORTED);
    }
    if (dev->status == GB_DEV_RESEALED && now_ms != GB_TIME_NONE &&
        now_ms >= gb_dev_reseal_expires_ms(dev)) {
        w |= GB_WARN_BIT(GB_WARN_RESEAL_EXPIRED);
    }
    return w;
}

bool gb_dev_is_stalled(const gb_dev_t *dev, int64_t now_ms, int64_t stall_timeout_ms)
{
    if (dev->status != GB_DEV_PROVISIONING && dev->status != GB_DEV_HANDOVER) {
        return false;
    }
    if (dev->last_arrival_ms == GB_TIME_NONE || now_ms == GB_TIME_NONE) {
        return false;
    }
    return now_ms - dev->last_arrival_ms > stall_timeout_ms;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned len[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : len[m - 1];
}

int64_t gb_domain__add_months(int64_t ms, int months)
{
    int64_t days = ms / DAY_MS;
    int64_t rem = ms % DAY_MS;
    if (rem < 0) {
        rem += DAY_MS;
        days--;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    int64_t idx = y * 12 + (int64_t)(m - 1) + months;
    int64_t y2 = idx >= 0 ? idx / 12 : (idx - 11) / 12;
    unsigned m2 = (unsigned)(idx - y2 * 12) + 1;
    unsigned dim = days_in_month(y2, m2);
    return days_from_civil(y2, m2, d < dim ? d : dim) * DAY_MS + rem;
}
