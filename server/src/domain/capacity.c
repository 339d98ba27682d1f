/* capacity: the staging room's capacity model, fitted from measured timings. A device's bench
 * stay is fixed work (changeover, the flow up to device setup, installs, reseal) plus its
 * downloads, which share the uplink max-min fairly under NIC caps. One small event simulation
 * (the "room") serves both directions: replaying the measured device-setup runs to fit the
 * uplink, and running N devices through K slots to predict. Invariants: the simulation is a
 * function of the fit and the query alone (its draws come from fixed seeds), so one question
 * always gets one answer; nothing here allocates outside the fit and per-call scratch. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/domain.h"

#define BYTES_PER_MBIT 125000.0
#define HUBER_K        1.345 /* 95% efficiency at the normal distribution */
#define WINSOR_K       5.0   /* robust standard deviations kept of a measured time */
#define MAX_GROUPS     16    /* distinct NIC speeds the uplink keeps apart */
#define FIT_PRECISION  1e-5  /* the uplink fit stops when its bracket is this narrow (relative) */
#define TARGET_SHARE   0.95  /* recommended: this share of the best devices per hour */

/* A measured bench stay the simulation replays: a green flow, or a red one (block_s only). */
typedef struct gb_cap_flow {
    double pre_s;    /* attempt start to device setup */
    double post_s;   /* device setup end to the result (usually 0) */
    double hold_s;   /* result to slot free: the technician's Reseal and the reseal */
    double rework_s; /* earlier failed attempts, resets included */
    double block_s;  /* red stays: attempt start to the red screen */
    double bytes;    /* device-setup payload, all sources */
    double nic;      /* bytes/s; 0 when unknown */
    double esp_s;    /* the profile's ESP timeout */
    uint32_t first_chunk;
    uint32_t n_chunks;
} gb_cap_flow_t;

/* ------------------------------------------------------------------------------------------ */
/* robust statistics                                                                          */
/* ------------------------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v (n > 0); sorts v. */
static double median_sorting(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Median and normalised median absolute deviation (a standard deviation at the normal). */
static void median_mad(const double *v, size_t n, double *med, double *scale)
{
    double *w = gb_xmalloc((n ? n : 1) * sizeof(*w));
    memcpy(w, v, n * sizeof(*w));
    *med = n > 0 ? median_sorting(w, n) : 0;
    for (size_t i = 0; i < n; i++) {
        w[i] = fabs(v[i] - *med);
    }
    *scale = n > 0 ? 1.4826 * median_sorting(w, n) : 0;
    free(w);
}

/* Huber's M-estimate of location by iteratively reweighted means, the scale held at the MAD.
 * Why Huber: the bulk of these times is close to symmetric (sums of many steps), so a mean is
 * what makespans add up, yet a technician's lunch break or a device left overnight must not
 * move it; Huber is the mean in the middle and the median in the tails. With no spread (MAD 0)
 * it is the median. 0 for no values. */
static double huber_location(const double *v, size_t n)
{
    double m, s;
    if (n == 0) {
        return 0;
    }
    median_mad(v, n, &m, &s);
    if (s <= 0) {
        return m;
    }
    for (int it = 0; it < 100; it++) {
        double sw = 0, swx = 0;
        for (size_t i = 0; i < n; i++) {
            double r = fabs(v[i] - m);
            double w = r <= HUBER_K * s ? 1.0 : HUBER_K * s / r;
            sw += w;
            swx += w * v[i];
        }
        double next = swx / sw;
        if (fabs(next - m) <= 1e-9 * s) {
            return next;
        }
        m = next;
    }
    return m;
}

/* Clips v to WINSOR_K robust deviations around its median: an outlier still counts as a long
 * stay when resampled, but not as one that would hold a slot for a week. */
static void winsorize(double *v, size_t n)
{
    double m, s;
    median_mad(v, n, &m, &s);
    if (s <= 0) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i] > m + WINSOR_K * s) {
            v[i] = m + WINSOR_K * s;
        } else if (v[i] < m - WINSOR_K * s) {
            v[i] = m - WINSOR_K * s;
        }
        if (v[i] < 0) {
            v[i] = 0;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* samples                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static double ms_to_s(int64_t ms)
{
    return (double)ms / 1000.0;
}

void gb_cap_sample_from_dev(const gb_dev_t *dev, int esp_timeout_min, gb_cap_sample_t *out)
{
    const gb_attempt_t *cur = gb_dev_current_attempt(dev);
    memset(out, 0, sizeof(*out));
    out->slot = dev->slot;
    out->bench_ms = dev->attempts[0].started_ms;
    out->start_ms = cur->started_ms;
    out->result_ms = cur->ended_ms;
    out->release_ms = GB_TIME_NONE;
    out->setup_start_ms = out->setup_end_ms = GB_TIME_NONE;
    out->prev_setup_ms = out->prev_setup_end_ms = GB_TIME_NONE;
    out->reset_ms = -1;
    out->attempts = dev->attempt;
    out->esp_timeout_min = esp_timeout_min;
    out->link_mbps = dev->link_mbps;

    if (cur->ended_ms == GB_TIME_NONE || cur->started_ms == GB_TIME_NONE) {
        out->outcome = GB_CAP_OPEN;
    } else if (cur->outcome == GB_DEV_GREEN) {
        out->outcome = GB_CAP_GREEN;
        out->release_ms = dev->resealed_ms;
    } else if (cur->diagnosis.code == GB_DIAG_ESP_TIMEOUT) {
        out->outcome = GB_CAP_ESP_TIMEOUT;
        out->release_ms = cur->ended_ms;
    } else {
        out->outcome = GB_CAP_RED;
        out->release_ms = cur->ended_ms;
    }

    const gb_stage_run_t *r = gb_dev_find_run(dev, dev->attempt, GB_STAGE_DEVICE_SETUP);
    if (r != NULL) {
        out->setup_start_ms = r->started_ms;
        out->setup_end_ms = r->ended_ms;
    }
    out->setup_bytes = (double)dev->setup_bytes;
    out->download_s = ms_to_s((int64_t)dev->setup_ms);
    if (dev->bytes_total > 0) {
        /* Bytes an agent did not split by source count as uplink bytes: the safe side. */
        out->lan_share = (double)dev->bytes_lan / (double)dev->bytes_total;
        out->cache_share = (double)dev->bytes_cache / (double)dev->bytes_total;
        if (out->lan_share + out->cache_share > 1) {
            double t = out->lan_share + out->cache_share;
            out->lan_share /= t;
            out->cache_share /= t;
        }
    }
    out->prev_bytes =
        dev->bytes_total > dev->setup_bytes ? (double)(dev->bytes_total - dev->setup_bytes) : 0;

    /* Earlier attempts: failed bench time (not the ESP timeouts: the model makes its own), the
     * latest reset, and the latest earlier device-setup run (its downloads loaded the uplink). */
    for (uint32_t a = 1; a < dev->attempt && a < dev->n_attempts; a++) {
        const gb_attempt_t *e = &dev->attempts[a - 1], *next = &dev->attempts[a];
        if (e->outcome != GB_DEV_RED || e->started_ms == GB_TIME_NONE ||
            next->started_ms == GB_TIME_NONE || next->started_ms < e->started_ms) {
            continue;
        }
        if (e->diagnosis.code != GB_DIAG_ESP_TIMEOUT) {
            out->rework_ms += next->started_ms - e->started_ms;
        }
        if (e->ended_ms != GB_TIME_NONE && next->started_ms >= e->ended_ms) {
            out->reset_ms = next->started_ms - e->ended_ms;
        }
        const gb_stage_run_t *pr = gb_dev_find_run(dev, a, GB_STAGE_DEVICE_SETUP);
        if (pr != NULL && pr->started_ms != GB_TIME_NONE) {
            out->prev_setup_ms = pr->started_ms;
            out->prev_setup_end_ms = pr->ended_ms;
        }
    }

    double total = 0;
    for (uint32_t i = 0; i < dev->n_apps && out->n_apps < GB_DEV_MAX_APPS; i++) {
        if (dev->apps[i].has_bytes && dev->apps[i].bytes > 0) {
            out->app_share[out->n_apps++] = (double)dev->apps[i].bytes;
            total += (double)dev->apps[i].bytes;
        }
    }
    out->app_bytes = total;
    for (uint32_t i = 0; i < out->n_apps; i++) {
        out->app_share[i] /= total;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the room: events, and the uplink as a fluid processor-sharing queue                        */
/* ------------------------------------------------------------------------------------------ */

enum ev_kind {
    EV_BEGIN = 0, /* a device starts an attempt (after the changeover, or a reset) */
    EV_SETUP,     /* its device setup starts */
    EV_STEP,      /* an install is done (or a download that needs no uplink): next chunk */
    EV_ESP,       /* its ESP timeout, unless device setup ended first */
    EV_RED,       /* a red stay ends at its red screen */
    EV_RELEASE,   /* its slot is free again */
    EV_UPLINK,    /* the uplink's next completion (token: the rates' version) */
};

typedef struct item {
    double key;   /* events: the time; marks: served bytes at which the download is done */
    uint64_t seq; /* ties run in insertion order */
    uint32_t dev;
    uint32_t token;
    uint32_t kind;
} item_t;

typedef struct heap {
    item_t *v;
    size_t n, cap;
} heap_t;

static bool item_before(const item_t *a, const item_t *b)
{
    return a->key < b->key || (a->key == b->key && a->seq < b->seq);
}

static void heap_push(heap_t *h, item_t it)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->v = gb_xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    size_t i = h->n++;
    while (i > 0 && item_before(&it, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = it;
}

static item_t heap_pop(heap_t *h)
{
    item_t top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const item_t *best = &last;
        if (l < h->n && item_before(&h->v[l], best)) {
            m = l;
            best = &h->v[l];
        }
        if (l + 1 < h->n && item_before(&h->v[l + 1], best)) {
            m = l + 1;
        }
        if (m == i) {
            break;
        }
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n > 0) {
        h->v[i] = last;
    }
    return top;
}

/* Downloads of equal NIC form a group: they always get the same rate, so one running total of
 * bytes served per member (a virtual clock) orders their completions. */
typedef struct group {
    double cap;    /* bytes/s; INFINITY when the NIC is unknown */
    double rate;   /* bytes/s each member gets now */
    double served; /* bytes each member has received since the room opened */
    uint32_t members;
    heap_t marks; /* key: served at which a member is done; dev, token: its download */
} group_t;

typedef struct sdev {
    const gb_cap_flow_t *flow;
    const double *share;   /* per chunk: share of bytes */
    const double *install; /* per chunk: install time after it */
    uint32_t n_chunks;
    double bytes; /* device-setup bytes, all sources */
    double nic;   /* bytes/s; 0 when unknown */
    double esp_s; /* 0: no timeout */
    double extra; /* changeover plus rework before its first attempt */
    uint32_t group;
    uint32_t chunk;
    uint32_t step;      /* token of its pending step: a cut-off makes it stale */
    uint32_t esp_token; /* token of its pending ESP timeout */
    uint32_t dl_token;  /* token of its download in progress */
    uint32_t attempts;
    bool downloading;
    bool red;
    double dl_start, dl_s, attempt_start;
} sdev_t;

typedef struct room {
    double capacity; /* total bytes/s the downloads may share: the uplink / its share */
    double now;
    heap_t events;
    uint64_t seq;
    group_t groups[MAX_GROUPS];
    uint32_t n_groups;
    uint32_t active;
    uint32_t version; /* bumped at each rate change: older completion events are stale */
    double full_s;    /* time the uplink ran full */
    double any_s;     /* time at least one download ran */
    sdev_t *devs;
    uint32_t n_devs;
    /* planning only */
    bool planning;
    const gb_cap_fit_t *fit;
    uint32_t max_attempts;
    uint32_t next_dev;
    uint32_t green, red, timeouts;
    double makespan, sum_device_s, sum_dl_s;
    uint64_t rng;
} room_t;

static void push_event(room_t *r, double t, uint32_t kind, uint32_t dev, uint32_t token)
{
    heap_push(&r->events, (item_t){t, r->seq++, dev, token, kind});
}

static void room_init(room_t *r, double capacity, const double *caps, uint32_t n_caps)
{
    memset(r, 0, sizeof(*r));
    r->capacity = capacity;
    double sorted[MAX_GROUPS];
    GB_ASSERT(n_caps <= MAX_GROUPS);
    memcpy(sorted, caps, n_caps * sizeof(*caps));
    qsort(sorted, n_caps, sizeof(*sorted), cmp_double);
    for (uint32_t i = 0; i < n_caps; i++) {
        if (r->n_groups == 0 || r->groups[r->n_groups - 1].cap != sorted[i]) {
            r->groups[r->n_groups++].cap = sorted[i];
        }
    }
}

static void room_dispose(room_t *r)
{
    for (uint32_t g = 0; g < r->n_groups; g++) {
        free(r->groups[g].marks.v);
    }
    free(r->events.v);
    free(r->devs);
}

static uint32_t group_of(const room_t *r, double nic)
{
    double cap = nic > 0 ? nic : INFINITY;
    for (uint32_t g = 0; g < r->n_groups; g++) {
        if (r->groups[g].cap == cap) {
            return g;
        }
    }
    GB_ASSERT(!"NIC speed without a group");
    return 0;
}

/* Integrates every group's bytes up to t: rates are constant between changes. */
static void advance(room_t *r, double t)
{
    if (t <= r->now) {
        return;
    }
    double dt = t - r->now, used = 0;
    for (uint32_t g = 0; g < r->n_groups; g++) {
        group_t *gr = &r->groups[g];
        if (gr->members > 0) {
            gr->served += gr->rate * dt;
            used += gr->rate * gr->members;
        }
    }
    if (r->active > 0) {
        r->any_s += dt;
        if (used >= r->capacity * (1 - 1e-9)) {
            r->full_s += dt;
        }
    }
    r->now = t;
}

/* Drops the marks of downloads that were cut off from the top of a group's heap. */
static const item_t *live_top(room_t *r, group_t *gr)
{
    while (gr->marks.n > 0) {
        const item_t *m = &gr->marks.v[0];
        const sdev_t *d = &r->devs[m->dev];
        if (d->downloading && d->dl_token == m->token) {
            return m;
        }
        heap_pop(&gr->marks);
    }
    return NULL;
}

/* A download is done when served is within a hair of its mark, or when what is left would
 * take less time than the clock can tell from now: completion times are computed from rates,
 * so floating-point error may leave a few bytes short, and waiting for them would stall. */
static bool reached(const room_t *r, const group_t *gr, const item_t *m)
{
    double left = m->key - gr->served;
    return left <= 1e-3 + fabs(m->key) * 1e-12 ||
           (gr->rate > 0 && r->now + left / gr->rate <= r->now);
}

/* Max-min fair rates (water-filling over the groups in ascending NIC), then one event at the
 * earliest completion in any group; the event of the previous rates becomes stale by version. */
static void rebalance(room_t *r)
{
    double left = r->capacity, next = INFINITY;
    uint32_t n_left = r->active;
    r->version++;
    for (uint32_t g = 0; g < r->n_groups; g++) {
        group_t *gr = &r->groups[g];
        if (gr->members == 0) {
            gr->rate = 0;
            continue;
        }
        double level = left > 0 ? left / (double)n_left : 0;
        if (gr->cap <= level) {
            gr->rate = gr->cap;
            left -= gr->cap * gr->members;
            n_left -= gr->members;
        } else {
            gr->rate = level;
        }
        const item_t *m = live_top(r, gr);
        if (m == NULL) {
            continue;
        }
        double t = r->now;
        if (!reached(r, gr, m)) {
            if (gr->rate <= 0) {
                continue;
            }
            t = r->now + (m->key - gr->served) / gr->rate;
        }
        next = t < next ? t : next;
    }
    if (next < INFINITY) {
        push_event(r, next, EV_UPLINK, 0, r->version);
    }
}

static void chunk_next(room_t *r, uint32_t id);

static void download_done(room_t *r, uint32_t id)
{
    sdev_t *d = &r->devs[id];
    d->downloading = false;
    d->dl_token++;
    d->dl_s += r->now - d->dl_start;
    push_event(r, r->now + d->install[d->chunk], EV_STEP, id, ++d->step);
}

static void download_cut(room_t *r, uint32_t id)
{
    sdev_t *d = &r->devs[id];
    if (!d->downloading) {
        return;
    }
    advance(r, r->now);
    r->groups[d->group].members--;
    r->active--;
    d->downloading = false;
    d->dl_token++;
    d->dl_s += r->now - d->dl_start;
    rebalance(r);
}

static void on_uplink(room_t *r, uint32_t version)
{
    if (version != r->version) {
        return;
    }
    advance(r, r->now);
    for (uint32_t g = 0; g < r->n_groups; g++) {
        group_t *gr = &r->groups[g];
        const item_t *m;
        while ((m = live_top(r, gr)) != NULL && reached(r, gr, m)) {
            uint32_t id = m->dev;
            heap_pop(&gr->marks);
            gr->members--;
            r->active--;
            download_done(r, id);
        }
    }
    rebalance(r);
}

static void setup_done(room_t *r, uint32_t id);

/* Starts the device's next chunk: a download over the uplink, one that needs none (every byte
 * from peers or the cache: only the NIC limits it), or the end of device setup. */
static void chunk_next(room_t *r, uint32_t id)
{
    sdev_t *d = &r->devs[id];
    if (d->chunk >= d->n_chunks) {
        setup_done(r, id);
        return;
    }
    double bytes = d->bytes * d->share[d->chunk];
    if (bytes <= 0 || !isfinite(r->capacity)) {
        double t = bytes > 0 && d->nic > 0 ? bytes / d->nic : 0;
        d->dl_s += t;
        push_event(r, r->now + t + d->install[d->chunk], EV_STEP, id, ++d->step);
        return;
    }
    advance(r, r->now);
    group_t *gr = &r->groups[d->group];
    d->downloading = true;
    d->dl_token++;
    d->dl_start = r->now;
    heap_push(&gr->marks, (item_t){gr->served + bytes, r->seq++, id, d->dl_token, 0});
    gr->members++;
    r->active++;
    rebalance(r);
}

static void setup_begin(room_t *r, uint32_t id)
{
    sdev_t *d = &r->devs[id];
    d->chunk = 0;
    if (d->esp_s > 0) {
        push_event(r, r->now + d->esp_s, EV_ESP, id, ++d->esp_token);
    }
    chunk_next(r, id);
}

static void run(room_t *r);

/* ------------------------------------------------------------------------------------------ */
/* planning: N devices through K slots                                                        */
/* ------------------------------------------------------------------------------------------ */

/* splitmix64: a fixed, portable stream, so the same fit and query always draw alike. */
static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t draw_below(uint64_t *s, size_t n)
{
    return (size_t)(next_random(s) % (uint64_t)n);
}

/* The device's final screen at t (>= now): it counts, and its slot frees after the reseal. */
static void device_result(room_t *r, uint32_t id, bool green, double t)
{
    sdev_t *d = &r->devs[id];
    if (t > r->makespan) {
        r->makespan = t;
    }
    r->sum_device_s += t - d->attempt_start;
    if (green) {
        r->green++;
        r->sum_dl_s += d->dl_s;
        push_event(r, t + d->flow->hold_s, EV_RELEASE, id, 0);
    } else {
        r->red++;
        push_event(r, t, EV_RELEASE, id, 0);
    }
}

static void setup_done(room_t *r, uint32_t id)
{
    sdev_t *d = &r->devs[id];
    d->esp_token++; /* device setup is over: its timeout no longer applies */
    if (!r->planning) {
        return;
    }
    /* The green screen comes post_s after device setup ends; nothing else happens to the
     * device in between, so it is booked at once. */
    device_result(r, id, true, r->now + d->flow->post_s);
}

static void on_esp(room_t *r, uint32_t id, uint32_t token)
{
    sdev_t *d = &r->devs[id];
    if (token != d->esp_token) {
        return;
    }
    /* Whatever device setup was doing stops: the download in progress, the pending install. */
    download_cut(r, id);
    d->step++;
    d->esp_token++;
    r->timeouts++;
    if (r->now > r->makespan) {
        r->makespan = r->now;
    }
    if (d->attempts < r->max_attempts) {
        const gb_cap_fit_t *f = r->fit;
        double reset = f->n_resets > 0  ? f->resets[draw_below(&r->rng, f->n_resets)]
                       : f->changeovers ? f->changeover[draw_below(&r->rng, f->changeovers)]
                                        : 0;
        push_event(r, r->now + reset, EV_BEGIN, id, 0);
        return;
    }
    device_result(r, id, false, r->now);
}

/* Gives the next waiting device the slot freed at now: a changeover, its earlier failures,
 * then its first attempt. */
static void take_slot(room_t *r)
{
    if (r->next_dev >= r->n_devs) {
        return;
    }
    uint32_t id = r->next_dev++;
    push_event(r, r->now + r->devs[id].extra, EV_BEGIN, id, 0);
}

static void on_begin(room_t *r, uint32_t id)
{
    sdev_t *d = &r->devs[id];
    d->attempts++;
    d->attempt_start = r->now;
    d->dl_s = 0;
    if (d->red) {
        push_event(r, r->now + d->flow->block_s, EV_RED, id, 0);
    } else {
        push_event(r, r->now + d->flow->pre_s, EV_SETUP, id, ++d->step);
    }
}

static void run(room_t *r)
{
    while (r->events.n > 0) {
        item_t e = heap_pop(&r->events);
        advance(r, e.key);
        switch (e.kind) {
        case EV_BEGIN:
            on_begin(r, e.dev);
            break;
        case EV_SETUP:
            if (e.token == r->devs[e.dev].step) {
                setup_begin(r, e.dev);
            }
            break;
        case EV_STEP:
            if (e.token == r->devs[e.dev].step) {
                r->devs[e.dev].chunk++;
                chunk_next(r, e.dev);
            }
            break;
        case EV_ESP:
            on_esp(r, e.dev, e.token);
            break;
        case EV_RED:
            device_result(r, e.dev, false, r->now);
            break;
        case EV_RELEASE:
            take_slot(r);
            break;
        case EV_UPLINK:
            on_uplink(r, e.token);
            break;
        default:
            GB_ASSERT(!"unknown event");
        }
    }
}

/* The distinct NIC speeds of the flows (0 for unknown), for the room's groups. Beyond
 * MAX_GROUPS speeds, the rest join the nearest group below. */
static uint32_t nic_groups(const gb_cap_flow_t *flows, size_t n, double *caps)
{
    uint32_t k = 0;
    for (size_t i = 0; i < n; i++) {
        double c = flows[i].nic > 0 ? flows[i].nic : INFINITY;
        bool seen = false;
        for (uint32_t j = 0; j < k; j++) {
            seen = seen || caps[j] == c;
        }
        if (!seen && k < MAX_GROUPS) {
            caps[k++] = c;
        }
    }
    return k;
}

/* The NIC a flow is simulated with: its own when it has a group, else the nearest below. */
static double nic_in_groups(double nic, const double *caps, uint32_t k)
{
    double c = nic > 0 ? nic : INFINITY, best = -1;
    for (uint32_t j = 0; j < k; j++) {
        if (caps[j] == c) {
            return nic;
        }
        if (caps[j] < c && caps[j] > best) {
            best = caps[j];
        }
    }
    return best > 0 && isfinite(best) ? best : 0;
}

/* A fixed shuffle of 0..n-1 from *s. */
static void shuffle(size_t *perm, size_t n, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        perm[i] = i;
    }
    for (size_t i = n; i > 1; i--) {
        size_t j = draw_below(s, i);
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

typedef struct settings {
    uint32_t devices, slots;
    double uplink;       /* bytes/s; INFINITY: unknown and not given (never limits) */
    double uplink_share; /* of each byte, the share over the uplink */
    double payload;      /* bytes per device; < 0: each flow's own */
    int esp_timeout_min; /* 0: each flow's */
} settings_t;

/* One run of the room with draws from seed. Each simulated device replays a measured stay:
 * green flows and red stays cycle through shuffled orders (every measured stay is used about
 * equally), red ones at the measured share, spread evenly by a low-discrepancy sequence. */
static void plan_once(const gb_cap_fit_t *f, const settings_t *st, uint64_t seed,
                      gb_cap_prediction_t *out)
{
    room_t r;
    double caps[MAX_GROUPS];
    uint32_t k = nic_groups(f->flows, f->n_green, caps);
    double capacity = st->uplink_share > 0 ? st->uplink / st->uplink_share : INFINITY;
    room_init(&r, capacity, caps, k);
    r.planning = true;
    r.fit = f;
    r.max_attempts = f->max_attempts > 0 ? f->max_attempts : 1;
    r.rng = seed;
    r.n_devs = st->devices;
    r.devs = gb_xcalloc(st->devices, sizeof(*r.devs));

    size_t n_red = f->n_flows - f->n_green;
    size_t *perm_g = gb_xmalloc(f->n_green * sizeof(size_t));
    size_t *perm_r = gb_xmalloc((n_red ? n_red : 1) * sizeof(size_t));
    size_t *perm_c = gb_xmalloc((f->changeovers ? f->changeovers : 1) * sizeof(size_t));
    size_t ig = 0, ir = 0, ic = 0;
    double phase = (double)(next_random(&r.rng) >> 11) / 9007199254740992.0;
    double red_share = n_red > 0 ? f->red_share : 0;
    double scale = st->payload >= 0 && f->payload_mb > 0 ? st->payload / (f->payload_mb * 1e6) : 1;

    for (uint32_t j = 0; j < st->devices; j++) {
        sdev_t *d = &r.devs[j];
        bool red = n_red > 0 && floor((j + 1) * red_share + phase) > floor(j * red_share + phase);
        const gb_cap_flow_t *fl;
        if (red) {
            if (ir % n_red == 0) {
                shuffle(perm_r, n_red, &r.rng);
            }
            fl = &f->flows[f->n_green + perm_r[ir++ % n_red]];
        } else {
            if (ig % f->n_green == 0) {
                shuffle(perm_g, f->n_green, &r.rng);
            }
            fl = &f->flows[perm_g[ig++ % f->n_green]];
        }
        double changeover = 0;
        if (f->changeovers > 0) {
            if (ic % f->changeovers == 0) {
                shuffle(perm_c, f->changeovers, &r.rng);
            }
            changeover = f->changeover[perm_c[ic++ % f->changeovers]];
        }
        d->flow = fl;
        d->red = red;
        d->extra = changeover + fl->rework_s;
        if (!red) {
            d->share = &f->chunk_share[fl->first_chunk];
            d->install = &f->chunk_install_s[fl->first_chunk];
            d->n_chunks = fl->n_chunks;
            /* A payload given for the room replaces the measured one: each flow keeps its
             * apps' proportions, scaled so that the typical device downloads the payload. */
            d->bytes = st->payload >= 0 && f->payload_mb <= 0 ? st->payload : fl->bytes * scale;
            d->nic = nic_in_groups(fl->nic, caps, k);
            d->group = group_of(&r, d->nic);
            d->esp_s = st->esp_timeout_min > 0 ? st->esp_timeout_min * 60.0 : fl->esp_s;
        }
    }
    free(perm_g);
    free(perm_r);
    free(perm_c);

    for (uint32_t s = 0; s < st->slots && s < st->devices; s++) {
        take_slot(&r);
    }
    run(&r);

    memset(out, 0, sizeof(*out));
    out->devices = st->devices;
    out->slots = st->slots;
    out->makespan_s = r.makespan;
    out->per_device_s = st->devices > 0 ? r.sum_device_s / st->devices : 0;
    out->download_s = r.green > 0 ? r.sum_dl_s / r.green : 0;
    out->uplink_busy = r.makespan > 0 ? r.full_s / r.makespan : 0;
    out->green = r.green;
    out->red = r.red;
    out->esp_timeouts = r.timeouts;
    room_dispose(&r);
}

/* How many runs a prediction averages: the draws make single runs of a small room wobble by a
 * few percent; a large room averages itself. */
static unsigned replications(uint32_t devices)
{
    return devices <= 1000 ? 3 : devices <= 4000 ? 2 : 1;
}

static void simulate(const gb_cap_fit_t *f, const settings_t *st, gb_cap_prediction_t *out)
{
    unsigned reps = replications(st->devices);
    double makespan = 0, per = 0, dl = 0, busy = 0, green = 0, red = 0, timeouts = 0;
    for (unsigned i = 0; i < reps; i++) {
        gb_cap_prediction_t p;
        plan_once(f, st, 0x5EED0000ull + i * 0x9E3779B97F4A7C15ull, &p);
        makespan += p.makespan_s;
        per += p.per_device_s;
        dl += p.download_s;
        busy += p.uplink_busy;
        green += p.green;
        red += p.red;
        timeouts += p.esp_timeouts;
    }
    memset(out, 0, sizeof(*out));
    out->devices = st->devices;
    out->slots = st->slots;
    out->uplink_mbps = isfinite(st->uplink) ? st->uplink / BYTES_PER_MBIT : 0;
    out->makespan_s = makespan / reps;
    out->per_device_s = per / reps;
    out->download_s = dl / reps;
    out->uplink_busy = busy / reps;
    out->green = (uint32_t)lround(green / reps);
    out->red = (uint32_t)lround(red / reps);
    /* Any run that times out counts: a planner wants the risk, not the average luck. */
    out->esp_timeouts = (uint32_t)ceil(timeouts / reps - 1e-9);
    out->devices_per_hour = out->makespan_s > 0 ? green / reps * 3600.0 / out->makespan_s : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* the fit                                                                                    */
/* ------------------------------------------------------------------------------------------ */

void gb_cap_fit_init(gb_cap_fit_t *fit)
{
    memset(fit, 0, sizeof(*fit));
}

void gb_cap_fit_dispose(gb_cap_fit_t *fit)
{
    free(fit->flows);
    free(fit->chunk_share);
    free(fit->chunk_install_s);
    free(fit->changeover);
    free(fit->resets);
    gb_cap_fit_init(fit);
}

/* Chunk shares and install times of a device setup: one download per app in the order they
 * came, each followed by its install. Per-app install times are not measured, only their sum
 * (device setup without its downloads), so half of it goes by package size and half evenly: an
 * install has a part that grows with the package and a part that does not (detection rules,
 * the ESP's bookkeeping). What matters to the uplink is that installs interleave with the
 * downloads, so one device installs while others download; the split itself is secondary. */
static uint32_t layout_chunks(const double *app_share, uint32_t n, double install_s, double *share,
                              double *install)
{
    if (n == 0) {
        share[0] = 1;
        install[0] = install_s;
        return 1;
    }
    for (uint32_t i = 0; i < n; i++) {
        share[i] = app_share[i];
        install[i] = install_s * (0.5 * app_share[i] + 0.5 / n);
    }
    return n;
}

static uint32_t make_chunks(const gb_cap_sample_t *s, double install_s, double *share,
                            double *install)
{
    return layout_chunks(s->app_share, s->n_apps, install_s, share, install);
}

/* The chunks of an earlier attempt's device setup: its bytes went to the apps in order, as far
 * as they reached (an attempt that failed at an app's install downloaded the apps before it),
 * and its run's length less their download time (at the rate the device's current attempt
 * had) was installing. */
static uint32_t prev_chunks(const gb_cap_sample_t *s, double *share, double *install)
{
    double app_share[GB_DEV_MAX_APPS], left = s->prev_bytes;
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->n_apps && left > 0; i++) {
        double b = s->app_share[i] * s->app_bytes;
        if (b > left || i + 1 == s->n_apps) {
            b = left; /* the last app reached takes the rest (several attempts may add up) */
        }
        app_share[n++] = b / s->prev_bytes;
        left -= b;
    }
    double run = s->prev_setup_end_ms != GB_TIME_NONE && s->prev_setup_end_ms > s->prev_setup_ms
                     ? ms_to_s(s->prev_setup_end_ms - s->prev_setup_ms)
                     : 0;
    double rate = s->download_s > 0 && s->setup_bytes > 0 ? s->setup_bytes / s->download_s : 0;
    double inst = rate > 0 ? run - s->prev_bytes / rate : run / 2;
    return layout_chunks(app_share, n, inst > 0 ? inst : 0, share, install);
}

static bool has_setup(const gb_cap_sample_t *s)
{
    return s->setup_start_ms != GB_TIME_NONE && s->setup_end_ms != GB_TIME_NONE &&
           s->setup_end_ms >= s->setup_start_ms && s->start_ms != GB_TIME_NONE &&
           s->result_ms != GB_TIME_NONE && s->setup_start_ms >= s->start_ms;
}

/* A green device whose downloads measure the uplink: bytes and time both above zero. */
static bool is_point(const gb_cap_sample_t *s)
{
    return s->outcome == GB_CAP_GREEN && has_setup(s) && s->setup_bytes > 0 && s->download_s > 0;
}

/* The replay: every device-setup run that downloaded anything, at its measured start, with its
 * measured bytes and install time, through an uplink of the given capacity. */
typedef struct replay {
    size_t n_jobs;
    double *start;
    double *bytes;
    double *nic;
    uint32_t *first_chunk, *n_chunks;
    double *share, *install;
    size_t *point; /* job of each point */
    double *obs;   /* each point's measured download time */
    double *pred;  /* and the replay's */
    size_t n_points;
    double caps[MAX_GROUPS];
    uint32_t n_caps;
} replay_t;

static void replay_free(replay_t *rp)
{
    free(rp->start);
    free(rp->bytes);
    free(rp->nic);
    free(rp->first_chunk);
    free(rp->n_chunks);
    free(rp->share);
    free(rp->install);
    free(rp->point);
    free(rp->obs);
    free(rp->pred);
}

static void replay_build(replay_t *rp, const gb_cap_sample_t *s, size_t n)
{
    memset(rp, 0, sizeof(*rp));
    size_t cap = 2 * n + 1;
    rp->start = gb_xmalloc(cap * sizeof(double));
    rp->bytes = gb_xmalloc(cap * sizeof(double));
    rp->nic = gb_xmalloc(cap * sizeof(double));
    rp->first_chunk = gb_xmalloc(cap * sizeof(uint32_t));
    rp->n_chunks = gb_xmalloc(cap * sizeof(uint32_t));
    rp->share = gb_xmalloc(cap * GB_DEV_MAX_APPS * sizeof(double));
    rp->install = gb_xmalloc(cap * GB_DEV_MAX_APPS * sizeof(double));
    rp->point = gb_xmalloc(cap * sizeof(size_t));
    rp->obs = gb_xmalloc(cap * sizeof(double));
    rp->pred = gb_xmalloc(cap * sizeof(double));
    int64_t t0 = INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        if (s[i].setup_start_ms != GB_TIME_NONE && s[i].setup_start_ms < t0) {
            t0 = s[i].setup_start_ms;
        }
        if (s[i].prev_setup_ms != GB_TIME_NONE && s[i].prev_setup_ms < t0) {
            t0 = s[i].prev_setup_ms;
        }
    }
    uint32_t chunks = 0;
    for (size_t i = 0; i < n; i++) {
        const gb_cap_sample_t *x = &s[i];
        double nic = x->link_mbps > 0 ? x->link_mbps * BYTES_PER_MBIT : 0;
        if (x->setup_start_ms != GB_TIME_NONE && (x->setup_bytes > 0 || is_point(x))) {
            size_t j = rp->n_jobs++;
            double inst = 0;
            if (x->setup_end_ms != GB_TIME_NONE && x->setup_end_ms >= x->setup_start_ms) {
                inst = ms_to_s(x->setup_end_ms - x->setup_start_ms) - x->download_s;
            }
            rp->start[j] = ms_to_s(x->setup_start_ms - t0);
            rp->bytes[j] = x->setup_bytes;
            rp->nic[j] = nic;
            rp->first_chunk[j] = chunks;
            rp->n_chunks[j] =
                make_chunks(x, inst > 0 ? inst : 0, &rp->share[chunks], &rp->install[chunks]);
            chunks += rp->n_chunks[j];
            if (is_point(x)) {
                rp->point[rp->n_points] = j;
                rp->obs[rp->n_points++] = x->download_s;
            }
        }
        /* An earlier attempt's downloads loaded the uplink too. */
        if (x->prev_setup_ms != GB_TIME_NONE && x->prev_bytes > 0) {
            size_t j = rp->n_jobs++;
            rp->start[j] = ms_to_s(x->prev_setup_ms - t0);
            rp->bytes[j] = x->prev_bytes;
            rp->nic[j] = nic;
            rp->first_chunk[j] = chunks;
            rp->n_chunks[j] = prev_chunks(x, &rp->share[chunks], &rp->install[chunks]);
            chunks += rp->n_chunks[j];
        }
    }
    /* Groups by NIC; beyond MAX_GROUPS speeds, the others take the nearest group below. */
    for (size_t j = 0; j < rp->n_jobs; j++) {
        double c = rp->nic[j] > 0 ? rp->nic[j] : INFINITY;
        bool seen = false;
        for (uint32_t g = 0; g < rp->n_caps; g++) {
            seen = seen || rp->caps[g] == c;
        }
        if (!seen && rp->n_caps < MAX_GROUPS) {
            rp->caps[rp->n_caps++] = c;
        }
    }
    for (size_t j = 0; j < rp->n_jobs; j++) {
        rp->nic[j] = nic_in_groups(rp->nic[j], rp->caps, rp->n_caps);
    }
}

/* Runs the replay at capacity (total bytes/s); fills rp->pred, and the share of the download
 * time during which the uplink ran full into *saturated (may be NULL). */
static void replay_run(replay_t *rp, double capacity, double *saturated)
{
    room_t r;
    room_init(&r, capacity, rp->caps, rp->n_caps);
    r.n_devs = (uint32_t)rp->n_jobs;
    r.devs = gb_xcalloc(rp->n_jobs ? rp->n_jobs : 1, sizeof(*r.devs));
    for (size_t j = 0; j < rp->n_jobs; j++) {
        sdev_t *d = &r.devs[j];
        d->share = &rp->share[rp->first_chunk[j]];
        d->install = &rp->install[rp->first_chunk[j]];
        d->n_chunks = rp->n_chunks[j];
        d->bytes = rp->bytes[j];
        d->nic = rp->nic[j];
        d->group = group_of(&r, d->nic);
        push_event(&r, rp->start[j], EV_SETUP, (uint32_t)j, 0);
    }
    run(&r);
    for (size_t i = 0; i < rp->n_points; i++) {
        rp->pred[i] = r.devs[rp->point[i]].dl_s;
    }
    if (saturated != NULL) {
        *saturated = r.any_s > 0 ? r.full_s / r.any_s : 0;
    }
    room_dispose(&r);
}

/* The estimating equation of the uplink fit: Huber's location of the log ratios of measured to
 * replayed download times. It rises with the capacity (more capacity, shorter replayed times). */
static double uplink_score(replay_t *rp, double capacity, double *resid)
{
    replay_run(rp, capacity, NULL);
    for (size_t i = 0; i < rp->n_points; i++) {
        resid[i] = log(rp->obs[i] / (rp->pred[i] > 1e-3 ? rp->pred[i] : 1e-3));
    }
    return huber_location(resid, rp->n_points);
}

/* Fits the uplink's capacity (total bytes/s the downloads shared) by a robust M-estimate with
 * the replay as the regression function: the capacity at which the replayed download times
 * match the measured ones in Huber's location of their log ratios.
 *
 * Why not a straight line through per-device rates against concurrency: a device's rate is the
 * uplink divided by the downloads running beside it, but the server knows device-setup runs,
 * not the moments each one downloaded, and downloads bunch (a wave of devices started together
 * downloads its first app together). Counting concurrency from the runs biases a regression by
 * 10 to 20%; replaying the runs through the same processor-sharing uplink the planner uses
 * reproduces the bunching and needs no concurrency at all. Log ratios because download times
 * differ tenfold with the load, so errors are relative; Huber because a device with a bad cable
 * or a stalled CDN must not drag the uplink. Bisection because the score is monotone in the
 * capacity and not smooth (completions reorder). Returns false when no capacity explains the
 * measured times: downloads ran as fast as their NICs allow, and the uplink never limited them. */
static bool fit_uplink(replay_t *rp, double *capacity)
{
    double min_rate = INFINITY, total = 0, min_obs = INFINITY;
    for (size_t i = 0; i < rp->n_points; i++) {
        double rate = rp->bytes[rp->point[i]] / rp->obs[i];
        min_rate = rate < min_rate ? rate : min_rate;
        min_obs = rp->obs[i] < min_obs ? rp->obs[i] : min_obs;
    }
    for (size_t j = 0; j < rp->n_jobs; j++) {
        total += rp->bytes[j];
    }
    double *resid = gb_xmalloc(rp->n_points * sizeof(double));
    /* At lo no point can have been as fast as measured; at hi the whole load would be served
     * in a sixteenth of the fastest measured download. */
    double lo = 0.5 * min_rate, hi = 16 * total / min_obs;
    bool ok = uplink_score(rp, hi, resid) > 0;
    if (ok) {
        while (hi > lo * (1 + FIT_PRECISION)) {
            double mid = sqrt(lo * hi);
            if (uplink_score(rp, mid, resid) > 0) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        *capacity = sqrt(lo * hi);
    }
    free(resid);
    return ok;
}

static size_t count_distinct_slots(const gb_cap_sample_t *s, size_t n)
{
    const char **names = gb_xmalloc((n ? n : 1) * sizeof(*names));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].slot == NULL || s[i].slot[0] == '\0') {
            continue;
        }
        bool seen = false;
        for (size_t j = 0; j < k && !seen; j++) {
            seen = strcmp(names[j], s[i].slot) == 0;
        }
        if (!seen) {
            names[k++] = s[i].slot;
        }
    }
    free(names);
    return k;
}

typedef struct bench_stay {
    const char *slot;
    int64_t from, to;
} bench_stay_t;

static int cmp_stay(const void *a, const void *b)
{
    const bench_stay_t *x = a, *y = b;
    int c = strcmp(x->slot, y->slot);
    return c != 0 ? c : (x->from > y->from) - (x->from < y->from);
}

/* Changeovers: on each slot, the time from one device's release to the next device's first
 * stage (unboxing, cabling, Win key x5). Returns how many were measured into out (room for n). */
static size_t measure_changeovers(const gb_cap_sample_t *s, size_t n, double *out)
{
    bench_stay_t *st = gb_xmalloc((n ? n : 1) * sizeof(*st));
    size_t k = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].slot != NULL && s[i].slot[0] != '\0' && s[i].bench_ms != GB_TIME_NONE) {
            st[k++] = (bench_stay_t){s[i].slot, s[i].bench_ms, s[i].release_ms};
        }
    }
    qsort(st, k, sizeof(*st), cmp_stay);
    for (size_t i = 1; i < k; i++) {
        if (strcmp(st[i].slot, st[i - 1].slot) == 0 && st[i - 1].to != GB_TIME_NONE &&
            st[i].from >= st[i - 1].to) {
            out[m++] = ms_to_s(st[i].from - st[i - 1].to);
        }
    }
    free(st);
    return m;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The most devices on the bench at once (first stage to release, or on while unreleased), for
 * a room whose agents report no slots. */
static uint32_t peak_bench(const gb_cap_sample_t *s, size_t n)
{
    int64_t *ev = gb_xmalloc((2 * n + 1) * sizeof(*ev));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].bench_ms == GB_TIME_NONE) {
            continue;
        }
        int64_t end = s[i].release_ms != GB_TIME_NONE  ? s[i].release_ms
                      : s[i].result_ms != GB_TIME_NONE ? s[i].result_ms
                                                       : INT64_MAX / 4;
        if (end < s[i].bench_ms) {
            end = s[i].bench_ms;
        }
        /* Doubled times, ends even and starts odd: at one instant a slot is freed before it
         * is taken again. */
        ev[k++] = s[i].bench_ms / 2 * 4 + 1;
        ev[k++] = end / 2 * 4;
    }
    qsort(ev, k, sizeof(*ev), cmp_i64);
    uint32_t level = 0, peak = 0;
    for (size_t i = 0; i < k; i++) {
        if (ev[i] & 1) {
            level++;
            peak = level > peak ? level : peak;
        } else if (level > 0) {
            level--;
        }
    }
    free(ev);
    return peak;
}

/* 422 insufficient_data: what the samples hold, and what the model would need. */
static int insufficient(gb_error_t *err, size_t n, size_t green, size_t points, size_t red,
                        size_t timeouts, size_t open, const char *need)
{
    gb_error_set(err, 422, "insufficient_data", NULL,
                 "devices %zu: green %zu (%zu with measured downloads), red %zu, at the ESP "
                 "timeout %zu, not finished %zu; %s",
                 n, green, points, red, timeouts, open, need);
    return GB_EINVAL;
}

int gb_cap_fit(gb_cap_fit_t *fit, const gb_cap_sample_t *s, size_t n, gb_error_t *err)
{
    size_t green = 0, points = 0, red = 0, timeouts = 0, open = 0, no_bytes = 0, no_time = 0;
    size_t chunks = 0;

    gb_cap_fit_dispose(fit);
    for (size_t i = 0; i < n; i++) {
        switch (s[i].outcome) {
        case GB_CAP_GREEN:
            if (has_setup(&s[i])) {
                green++;
                chunks += s[i].n_apps > 0 ? s[i].n_apps : 1;
                points += is_point(&s[i]);
                no_bytes += s[i].download_s > 0 && s[i].setup_bytes <= 0;
                no_time += s[i].setup_bytes > 0 && s[i].download_s <= 0;
            }
            break;
        case GB_CAP_RED:
            red += s[i].start_ms != GB_TIME_NONE && s[i].result_ms >= s[i].start_ms;
            break;
        case GB_CAP_ESP_TIMEOUT:
            timeouts++;
            break;
        case GB_CAP_OPEN:
            open++;
            break;
        }
    }
    if (green < GB_CAP_MIN_SAMPLES) {
        return insufficient(err, n, green, points, red, timeouts, open,
                            "the model needs at least 5 green devices with a device setup run");
    }
    if (points == 0 && no_bytes + no_time > 0) {
        return insufficient(err, n, green, points, red, timeouts, open,
                            no_bytes > 0 ? "their downloads took time but moved no bytes (zero "
                                           "bandwidth), so the uplink cannot be fitted"
                                         : "their downloads moved bytes in no time, so the "
                                           "uplink cannot be fitted");
    }
    if (points > 0 && points < GB_CAP_MIN_SAMPLES) {
        return insufficient(err, n, green, points, red, timeouts, open,
                            "the uplink fit needs at least 5 green devices whose downloads "
                            "moved bytes over a measured time");
    }

    fit->devices = n;
    fit->samples = green;
    fit->uplink_samples = points;
    fit->red = red;
    fit->esp_timeouts = timeouts;
    fit->n_green = green;
    fit->n_flows = green + red;
    fit->flows = gb_xcalloc(fit->n_flows, sizeof(*fit->flows));
    fit->chunk_share = gb_xmalloc((chunks ? chunks : 1) * sizeof(double));
    fit->chunk_install_s = gb_xmalloc((chunks ? chunks : 1) * sizeof(double));

    /* Per green device: the parts of its stay, winsorized before they become flows. */
    double *pre = gb_xmalloc(green * sizeof(double)), *inst = gb_xmalloc(green * sizeof(double));
    double *post = gb_xmalloc(green * sizeof(double)), *fixed = gb_xmalloc(green * sizeof(double));
    double *hold = gb_xmalloc(green * sizeof(double)), *bytes = gb_xmalloc(green * sizeof(double));
    double *lan = gb_xmalloc(green * sizeof(double)), *cache = gb_xmalloc(green * sizeof(double));
    double *nic = gb_xmalloc(green * sizeof(double)),
           *block = gb_xmalloc((red + 1) * sizeof(double));
    double *work = gb_xmalloc((n + 1) * sizeof(double));
    size_t g = 0, n_hold = 0, n_shares = 0, n_nic = 0, ended = 0;
    int esp_seen[8] = {0}, esp_count[8] = {0};
    double rework = 0;
    for (size_t i = 0; i < n; i++) {
        const gb_cap_sample_t *x = &s[i];
        if (x->outcome != GB_CAP_OPEN) {
            ended++;
            rework += ms_to_s(x->rework_ms);
        }
        if (x->outcome == GB_CAP_GREEN && has_setup(x)) {
            double setup = ms_to_s(x->setup_end_ms - x->setup_start_ms);
            pre[g] = ms_to_s(x->setup_start_ms - x->start_ms);
            inst[g] = setup > x->download_s ? setup - x->download_s : 0;
            post[g] = x->result_ms > x->setup_end_ms ? ms_to_s(x->result_ms - x->setup_end_ms) : 0;
            fixed[g] = ms_to_s(x->result_ms - x->start_ms) - x->download_s;
            bytes[g] = x->setup_bytes;
            if (x->release_ms != GB_TIME_NONE && x->release_ms >= x->result_ms) {
                hold[n_hold++] = ms_to_s(x->release_ms - x->result_ms);
            }
            if (x->setup_bytes > 0) {
                lan[n_shares] = x->lan_share;
                cache[n_shares++] = x->cache_share;
            }
            if (x->link_mbps > 0) {
                nic[n_nic++] = x->link_mbps;
            }
            int esp = x->esp_timeout_min > 0 ? x->esp_timeout_min : GB_ESP_TIMEOUT_DEFAULT_MIN;
            for (size_t k = 0; k < GB_ARRAY_LEN(esp_seen); k++) {
                if (esp_seen[k] == esp || esp_seen[k] == 0) {
                    esp_seen[k] = esp;
                    esp_count[k]++;
                    break;
                }
            }
            g++;
        }
    }
    fit->fixed_s = huber_location(fixed, green);
    fit->pre_setup_s = huber_location(pre, green);
    fit->setup_fixed_s = huber_location(inst, green);
    fit->reseal_s = huber_location(hold, n_hold);
    fit->payload_mb = huber_location(bytes, green) / 1e6;
    fit->peer_share = huber_location(lan, n_shares);
    fit->cache_share = huber_location(cache, n_shares);
    fit->nic_mbps = n_nic > 0 ? median_sorting(nic, n_nic) : 0;
    fit->rework_s = ended > 0 ? rework / (double)ended : 0;
    fit->red_share = (double)red / (double)(green + red + timeouts);
    fit->esp_timeout_min = GB_ESP_TIMEOUT_DEFAULT_MIN;
    for (size_t k = 0, best = 0; k < GB_ARRAY_LEN(esp_seen) && esp_seen[k] != 0; k++) {
        if ((size_t)esp_count[k] > best) {
            best = (size_t)esp_count[k];
            fit->esp_timeout_min = esp_seen[k];
        }
    }
    winsorize(pre, green);
    winsorize(inst, green);
    winsorize(post, green);

    /* Flows: green ones first (in sample order), then red stays. */
    uint32_t c = 0;
    g = 0;
    size_t r = 0;
    for (size_t i = 0; i < n; i++) {
        const gb_cap_sample_t *x = &s[i];
        if (x->outcome == GB_CAP_GREEN && has_setup(x)) {
            gb_cap_flow_t *fl = &fit->flows[g];
            fl->pre_s = pre[g];
            fl->post_s = post[g];
            fl->hold_s = x->release_ms != GB_TIME_NONE && x->release_ms >= x->result_ms
                             ? ms_to_s(x->release_ms - x->result_ms)
                             : fit->reseal_s;
            fl->rework_s = ms_to_s(x->rework_ms);
            fl->bytes = x->setup_bytes;
            fl->nic = x->link_mbps > 0 ? x->link_mbps * BYTES_PER_MBIT : 0;
            int esp = x->esp_timeout_min > 0 ? x->esp_timeout_min : GB_ESP_TIMEOUT_DEFAULT_MIN;
            fl->esp_s = esp * 60.0;
            fl->first_chunk = c;
            fl->n_chunks = make_chunks(x, inst[g], &fit->chunk_share[c], &fit->chunk_install_s[c]);
            c += fl->n_chunks;
            g++;
        } else if (x->outcome == GB_CAP_RED && x->start_ms != GB_TIME_NONE &&
                   x->result_ms >= x->start_ms) {
            block[r++] = ms_to_s(x->result_ms - x->start_ms);
        }
    }
    /* Holds measured on some devices: winsorize them in place on the flows. */
    for (size_t i = 0; i < green; i++) {
        hold[i] = fit->flows[i].hold_s;
    }
    winsorize(hold, green);
    for (size_t i = 0; i < green; i++) {
        fit->flows[i].hold_s = hold[i];
    }
    winsorize(block, r);
    r = 0;
    for (size_t i = 0; i < n; i++) {
        const gb_cap_sample_t *x = &s[i];
        if (x->outcome == GB_CAP_RED && x->start_ms != GB_TIME_NONE &&
            x->result_ms >= x->start_ms) {
            gb_cap_flow_t *fl = &fit->flows[green + r];
            fl->block_s = block[r++];
            fl->rework_s = ms_to_s(x->rework_ms);
        }
    }

    /* The bench: changeovers, resets, slots, attempts. */
    fit->changeover = gb_xmalloc((n ? n : 1) * sizeof(double));
    fit->changeovers = measure_changeovers(s, n, fit->changeover);
    fit->changeover_s = huber_location(fit->changeover, fit->changeovers);
    winsorize(fit->changeover, fit->changeovers);
    fit->resets = gb_xmalloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        if (s[i].reset_ms >= 0) {
            fit->resets[fit->n_resets++] = ms_to_s(s[i].reset_ms);
        }
        if (s[i].attempts > fit->max_attempts) {
            fit->max_attempts = s[i].attempts;
        }
    }
    winsorize(fit->resets, fit->n_resets);
    size_t slots = count_distinct_slots(s, n);
    fit->slots = (uint32_t)(slots > 0 ? slots : peak_bench(s, n));
    if (fit->slots == 0) {
        fit->slots = 1;
    }

    /* The uplink, and how well the model explains the measured per-device times. */
    double share = 1 - fit->peer_share - fit->cache_share;
    double *t_obs = gb_xmalloc(green * sizeof(double)), *t_fit = gb_xmalloc(green * sizeof(double));
    size_t m = 0;
    replay_t rp;
    replay_build(&rp, s, n);
    double capacity = 0;
    if (points > 0 && share > 1e-3 && fit_uplink(&rp, &capacity)) {
        fit->uplink_known = true;
        fit->uplink_mbps = capacity * share / BYTES_PER_MBIT;
        replay_run(&rp, capacity, &fit->saturated_share);
        for (size_t i = 0; i < rp.n_points; i++) {
            work[i] = rp.obs[i];
        }
        fit->download_s = huber_location(work, rp.n_points);
    } else if (points > 0) {
        /* Never limited: downloads ran at their NICs' speed (or the peers and the cache
         * served everything). The fit stands, with an uplink that does not limit. */
        replay_run(&rp, INFINITY, NULL);
        for (size_t i = 0; i < rp.n_points; i++) {
            work[i] = rp.obs[i];
        }
        fit->download_s = huber_location(work, rp.n_points);
    }
    for (size_t i = 0, p = 0; i < n; i++) {
        const gb_cap_sample_t *x = &s[i];
        if (points > 0 ? is_point(x) : (x->outcome == GB_CAP_GREEN && has_setup(x))) {
            t_obs[m] = ms_to_s(x->result_ms - x->start_ms);
            t_fit[m++] = fit->fixed_s + (points > 0 ? rp.pred[p++] : 0);
        }
    }
    double mean = 0, ss_tot = 0, ss_res = 0, abs_err = 0;
    for (size_t i = 0; i < m; i++) {
        mean += t_obs[i] / (double)m;
    }
    for (size_t i = 0; i < m; i++) {
        ss_tot += (t_obs[i] - mean) * (t_obs[i] - mean);
        ss_res += (t_obs[i] - t_fit[i]) * (t_obs[i] - t_fit[i]);
        abs_err += fabs(t_obs[i] - t_fit[i]);
    }
    fit->r2 = ss_tot > 0 ? 1 - ss_res / ss_tot : (ss_res > 0 ? 0 : 1);
    fit->mae_s = m > 0 ? abs_err / (double)m : 0;

    replay_free(&rp);
    free(t_obs);
    free(t_fit);
    free(pre);
    free(inst);
    free(post);
    free(fixed);
    free(hold);
    free(bytes);
    free(lan);
    free(cache);
    free(nic);
    free(block);
    free(work);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* queries                                                                                    */
/* ------------------------------------------------------------------------------------------ */

void gb_cap_query_init(gb_cap_query_t *q)
{
    q->devices = 0;
    q->slots = 0;
    q->uplink_mbps = -1;
    q->payload_mb = -1;
    q->peer_share = -1;
    q->cache_share = -1;
    q->esp_timeout_min = 0;
}

const char *gb_cap_change_id(gb_cap_change_t change)
{
    static const char *const ids[] = {"peer_share", "cache_share", "uplink_mbps", "slots"};
    return (unsigned)change < GB_ARRAY_LEN(ids) ? ids[change] : "";
}

static int bad(gb_error_t *err, const char *field, const char *why)
{
    gb_error_set(err, 400, "invalid_query", field, "query parameter %s: %s", field, why);
    return GB_EINVAL;
}

/* Fills q's defaults from the fit and checks every value; st gets what the simulation runs. */
static int resolve(const gb_cap_fit_t *f, const gb_cap_query_t *in, gb_cap_query_t *q,
                   settings_t *st, gb_error_t *err)
{
    *q = *in;
    if (f->n_green == 0) {
        gb_error_set(err, 422, "insufficient_data", NULL, "the model has not been fitted");
        return GB_EINVAL;
    }
    if (q->devices == 0) {
        q->devices = (uint32_t)(f->devices < GB_CAP_DEVICES_MAX ? f->devices : GB_CAP_DEVICES_MAX);
    }
    if (q->devices > GB_CAP_DEVICES_MAX) {
        return bad(err, "devices", "must be a whole number from 1 to 20000");
    }
    if (q->slots == 0) {
        q->slots = f->slots;
    }
    if (q->slots > GB_CAP_SLOTS_MAX) {
        return bad(err, "slots", "must be a whole number from 1 to 10000");
    }
    bool given = q->uplink_mbps >= 0;
    if (given && (!(q->uplink_mbps > 0) || !(q->uplink_mbps <= GB_CAP_UPLINK_MAX))) {
        return bad(err, "uplink_mbps", "must be a number above 0 and at most 10000000");
    }
    if (!given) {
        q->uplink_mbps = f->uplink_known ? f->uplink_mbps : 0;
    }
    if (q->payload_mb >= 0 && !(q->payload_mb <= GB_CAP_PAYLOAD_MAX)) {
        return bad(err, "payload_mb", "must be a number from 0 to 10000000");
    }
    bool peer_given = q->peer_share >= 0, cache_given = q->cache_share >= 0;
    if (peer_given && !(q->peer_share <= 1)) {
        return bad(err, "peer_share", "must be a number from 0 to 1");
    }
    if (cache_given && !(q->cache_share <= 1)) {
        return bad(err, "cache_share", "must be a number from 0 to 1");
    }
    if (!peer_given) {
        q->peer_share = f->peer_share;
    }
    if (!cache_given) {
        q->cache_share = f->cache_share;
    }
    if (q->peer_share + q->cache_share > 1 + 1e-9) {
        return bad(err, cache_given ? "cache_share" : "peer_share",
                   "the peer and cache shares add up to more than 1");
    }
    if (q->esp_timeout_min < 0 || q->esp_timeout_min > GB_ESP_TIMEOUT_MAX_MIN) {
        return bad(err, "esp_timeout_min", "must be a whole number of minutes from 1 to 1440");
    }
    if (!given && !f->uplink_known && f->uplink_samples == 0 && q->payload_mb > 0) {
        return bad(err, "uplink_mbps",
                   "no download has measured the uplink yet: give uplink_mbps with payload_mb");
    }
    st->devices = q->devices;
    st->slots = q->slots < q->devices ? q->slots : q->devices;
    st->uplink = q->uplink_mbps > 0 ? q->uplink_mbps * BYTES_PER_MBIT : INFINITY;
    st->uplink_share = 1 - q->peer_share - q->cache_share;
    if (st->uplink_share < 0) {
        st->uplink_share = 0;
    }
    st->payload = q->payload_mb >= 0 ? q->payload_mb * 1e6 : -1;
    st->esp_timeout_min = q->esp_timeout_min;
    return 0;
}

static void simulate_at(const gb_cap_fit_t *f, const gb_cap_query_t *q, const settings_t *st,
                        gb_cap_prediction_t *out)
{
    simulate(f, st, out);
    out->slots = st->slots;
    out->peer_share = q->peer_share;
    out->cache_share = q->cache_share;
}

int gb_cap_predict(const gb_cap_fit_t *fit, const gb_cap_query_t *q, gb_cap_prediction_t *out,
                   gb_error_t *err)
{
    gb_cap_query_t rq;
    settings_t st;
    int rc = resolve(fit, q, &rq, &st, err);
    if (rc != 0) {
        return rc;
    }
    simulate_at(fit, &rq, &st, out);
    return 0;
}

/* Slot counts for the chart: every count up to 8, then steps of a quarter or more (widened
 * until the counts up to the devices fit), and the devices themselves. Two places stay free for
 * the query's count and the recommended one. */
static size_t chart_slots(uint32_t devices, uint32_t *out)
{
    const size_t room = GB_CAP_CHART_MAX - 2;
    for (double factor = 1.25;; factor += 0.05) {
        size_t n = 0;
        uint32_t k = 1;
        while (k < devices && n < room) {
            out[n++] = k;
            uint32_t next = k < 8 ? k + 1 : (uint32_t)lround(k * factor);
            k = next > k ? next : k + 1;
        }
        if (n < room) {
            out[n++] = devices;
            return n;
        }
    }
}

static bool eligible(const gb_cap_prediction_t *p, double best)
{
    return p->esp_timeouts == 0 && p->devices_per_hour >= TARGET_SHARE * best;
}

static void add_chart(gb_cap_plan_t *out, const gb_cap_prediction_t *p)
{
    for (size_t i = 0; i < out->n_chart; i++) {
        if (out->chart[i].slots == p->slots) {
            return;
        }
    }
    if (out->n_chart == GB_CAP_CHART_MAX) {
        return;
    }
    size_t i = out->n_chart++;
    while (i > 0 && out->chart[i - 1].slots > p->slots) {
        out->chart[i] = out->chart[i - 1];
        i--;
    }
    out->chart[i] = *p;
}

static void what_if(gb_cap_plan_t *out, const gb_cap_fit_t *f, gb_cap_change_t change, double value,
                    const gb_cap_query_t *q)
{
    gb_cap_query_t wq = *q;
    settings_t st;
    gb_error_t e;
    switch (change) {
    case GB_CAP_CHANGE_PEER_SHARE:
        wq.peer_share = value;
        break;
    case GB_CAP_CHANGE_CACHE_SHARE:
        wq.cache_share = value;
        break;
    case GB_CAP_CHANGE_UPLINK:
        wq.uplink_mbps = value;
        break;
    case GB_CAP_CHANGE_SLOTS:
        wq.slots = (uint32_t)value;
        break;
    }
    gb_error_clear(&e);
    if (resolve(f, &wq, &wq, &st, &e) != 0) {
        return;
    }
    gb_cap_what_if_t *w = &out->what_if[out->n_what_if++];
    w->change = change;
    w->value = value;
    simulate_at(f, &wq, &st, &w->prediction);
}

static const gb_cap_what_if_t *find_what_if(const gb_cap_plan_t *p, gb_cap_change_t change)
{
    for (size_t i = 0; i < p->n_what_if; i++) {
        if (p->what_if[i].change == change) {
            return &p->what_if[i];
        }
    }
    return NULL;
}

static void say(gb_cap_plan_t *out, const char *fmt, ...) GB_PRINTF(2, 3);

static void say(gb_cap_plan_t *out, const char *fmt, ...)
{
    if (out->n_explain == GB_CAP_EXPLAIN_MAX) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->explain[out->n_explain++], GB_CAP_EXPLAIN_LEN, fmt, ap);
    va_end(ap);
}

static void explain(gb_cap_plan_t *out, const gb_cap_fit_t *f)
{
    const gb_cap_prediction_t *p = &out->prediction;
    const gb_cap_query_t *q = &out->query;
    const gb_cap_what_if_t *up = find_what_if(out, GB_CAP_CHANGE_UPLINK);
    const gb_cap_what_if_t *sl = find_what_if(out, GB_CAP_CHANGE_SLOTS);
    const gb_cap_what_if_t *peer = find_what_if(out, GB_CAP_CHANGE_PEER_SHARE);
    const gb_cap_what_if_t *cache = find_what_if(out, GB_CAP_CHANGE_CACHE_SHARE);

    if (f->uplink_known) {
        say(out,
            "Fitted from %zu green devices (%zu with measured downloads): %.0f s of fixed work "
            "and %.0f MB per device, %.0f%% of it over an effective uplink of %.0f Mbit/s; "
            "per-device time R2 %.2f, mean absolute error %.0f s.",
            f->samples, f->uplink_samples, f->fixed_s, f->payload_mb,
            100 * (1 - f->peer_share - f->cache_share), f->uplink_mbps, f->r2, f->mae_s);
    } else {
        say(out,
            "Fitted from %zu green devices: %.0f s of fixed work and %.0f MB per device. No "
            "download ever waited for the uplink, so its capacity is unknown%s.",
            f->samples, f->fixed_s, f->payload_mb,
            q->uplink_mbps > 0 ? "" : " and the plan lets it never limit: give uplink_mbps");
    }
    double now = p->devices_per_hour;
    if (out->bandwidth_bound) {
        say(out,
            "Bandwidth-bound: at %u slots the uplink runs full %.0f%% of the time; twice the "
            "uplink would give %.1f devices/h, twice the slots %.1f (now %.1f).",
            p->slots, 100 * p->uplink_busy, up ? up->prediction.devices_per_hour : now,
            sl ? sl->prediction.devices_per_hour : now, now);
    } else {
        say(out,
            "Install-bound: the fixed work per device limits the room more than the uplink "
            "(full %.0f%% of the time); twice the slots would give %.1f devices/h, twice the "
            "uplink %.1f (now %.1f).",
            100 * p->uplink_busy, sl ? sl->prediction.devices_per_hour : now,
            up ? up->prediction.devices_per_hour : now, now);
    }
    char esp[32], from[96] = "";
    snprintf(esp, sizeof(esp), "%d-minute",
             q->esp_timeout_min > 0 ? q->esp_timeout_min : f->esp_timeout_min);
    for (size_t i = 0; i < out->n_chart; i++) {
        if (out->chart[i].esp_timeouts > 0) {
            snprintf(from, sizeof(from), "; from %u slots on, devices start to reach it",
                     out->chart[i].slots);
            break;
        }
    }
    if (p->esp_timeouts > 0) {
        say(out,
            "The %s ESP timeout is predicted to turn devices red %u times, retries included: "
            "%u slots share the uplink%s.",
            esp, p->esp_timeouts, p->slots, from);
    } else {
        say(out,
            "No device is predicted to reach the %s ESP timeout (a device's downloads take %.0f "
            "min)%s.",
            esp, p->download_s / 60, from[0] ? from : "; no slot count charted reaches it");
    }
    if (out->recommended_slots > 0) {
        double best = 0;
        uint32_t at = 0;
        for (size_t i = 0; i < out->n_chart; i++) {
            if (out->chart[i].esp_timeouts == 0 && out->chart[i].devices_per_hour > best) {
                best = out->chart[i].devices_per_hour;
                at = out->chart[i].slots;
            }
        }
        say(out,
            "%u slots reach %.0f%% of the best throughput (%.1f devices/h, at %u slots) with no "
            "ESP timeout.",
            out->recommended_slots, 100 * TARGET_SHARE, best, at);
    } else {
        say(out, "No number of slots avoids the ESP timeout with this payload and uplink.");
    }
    if (peer != NULL && cache != NULL) {
        say(out,
            "LAN peering serving %.0f%% of the bytes would give %.1f devices/h (%.1f h for "
            "all); a Connected Cache serving %.0f%% (%.0f%% off the uplink with the peers) "
            "would give %.1f devices/h (%.1f h).",
            100 * peer->value, peer->prediction.devices_per_hour,
            peer->prediction.makespan_s / 3600, 100 * cache->value,
            100 * (cache->value + q->peer_share), cache->prediction.devices_per_hour,
            cache->prediction.makespan_s / 3600);
    }
    if (f->red_share > 0 || f->rework_s > 0) {
        say(out,
            "%.1f%% of bench stays ended red for other causes than the timeout, and failed "
            "attempts cost %.0f s of bench time per device: the plan includes both.",
            100 * f->red_share, f->rework_s);
    }
}

int gb_cap_plan(const gb_cap_fit_t *fit, const gb_cap_query_t *q, gb_cap_plan_t *out,
                gb_error_t *err)
{
    settings_t st;
    memset(out, 0, sizeof(*out));
    int rc = resolve(fit, q, &out->query, &st, err);
    if (rc != 0) {
        return rc;
    }
    const gb_cap_query_t *rq = &out->query;
    simulate_at(fit, rq, &st, &out->prediction);

    /* Throughput by slots, the best without ESP timeouts, then the fewest slots that reach
     * TARGET_SHARE of it: the first chart point that does, narrowed down by bisection from the
     * point below it (throughput grows with slots up to the bandwidth's limit). */
    uint32_t ks[GB_CAP_CHART_MAX];
    size_t nk = chart_slots(rq->devices, ks);
    double best = 0;
    for (size_t i = 0, past = 0; i < nk && past < 2; i++) {
        settings_t s2 = st;
        gb_cap_prediction_t p;
        s2.slots = ks[i];
        simulate_at(fit, rq, &s2, &p);
        add_chart(out, &p);
        if (p.esp_timeouts == 0 && p.devices_per_hour > best) {
            best = p.devices_per_hour;
        }
        /* Past the uplink's limit more slots only add timeouts: two such counts in a row end
         * the chart, which spares the costliest runs (every device waiting on the uplink). */
        past = p.esp_timeouts > 0 && p.devices_per_hour < 0.8 * best ? past + 1 : 0;
    }
    add_chart(out, &out->prediction);
    if (out->prediction.esp_timeouts == 0 && out->prediction.devices_per_hour > best) {
        best = out->prediction.devices_per_hour;
    }
    /* The best may lie between the last count without timeouts and the first with them (the
     * uplink's limit): narrow that gap down too. */
    uint32_t ok_k = 0, to_k = 0;
    for (size_t i = 0; i + 1 < out->n_chart; i++) {
        const gb_cap_prediction_t *a = &out->chart[i], *b = &out->chart[i + 1];
        if (a->esp_timeouts == 0 && a->devices_per_hour == best && b->esp_timeouts > 0) {
            ok_k = a->slots;
            to_k = b->slots;
        }
    }
    while (to_k - ok_k > 1) {
        settings_t s2 = st;
        gb_cap_prediction_t p;
        s2.slots = ok_k + (to_k - ok_k) / 2;
        simulate_at(fit, rq, &s2, &p);
        add_chart(out, &p);
        if (p.esp_timeouts > 0) {
            to_k = s2.slots;
        } else {
            ok_k = s2.slots;
            best = p.devices_per_hour > best ? p.devices_per_hour : best;
        }
    }
    for (size_t i = 0; i < out->n_chart && best > 0; i++) {
        if (!eligible(&out->chart[i], best)) {
            continue;
        }
        uint32_t hi = out->chart[i].slots, lo = i > 0 ? out->chart[i - 1].slots : 0;
        gb_cap_prediction_t found = out->chart[i];
        while (hi - lo > 1) {
            settings_t s2 = st;
            gb_cap_prediction_t p;
            s2.slots = lo + (hi - lo) / 2;
            simulate_at(fit, rq, &s2, &p);
            if (eligible(&p, best)) {
                hi = s2.slots;
                found = p;
            } else {
                lo = s2.slots;
            }
        }
        out->recommended_slots = hi;
        add_chart(out, &found);
        break;
    }

    /* What a LAN-peer share, a Connected Cache, twice the uplink and twice the slots change. */
    double peer = rq->peer_share, cache = rq->cache_share, free_share = 1 - peer - cache;
    double more_peer = peer + 0.3 > 0.5 ? peer + 0.3 : 0.5;
    if (more_peer > peer + free_share) {
        more_peer = peer + free_share / 2;
    }
    double more_cache = 0.9 - peer > cache ? 0.9 - peer : cache + free_share / 2;
    if (more_cache > 1 - peer) {
        more_cache = 1 - peer;
    }
    what_if(out, fit, GB_CAP_CHANGE_PEER_SHARE, more_peer, rq);
    what_if(out, fit, GB_CAP_CHANGE_CACHE_SHARE, more_cache, rq);
    if (rq->uplink_mbps > 0) {
        what_if(out, fit, GB_CAP_CHANGE_UPLINK, 2 * rq->uplink_mbps, rq);
    }
    uint32_t twice = 2 * rq->slots < rq->devices ? 2 * rq->slots : rq->devices;
    if (twice > rq->slots) {
        what_if(out, fit, GB_CAP_CHANGE_SLOTS, twice, rq);
    }
    const gb_cap_what_if_t *up = find_what_if(out, GB_CAP_CHANGE_UPLINK);
    const gb_cap_what_if_t *sl = find_what_if(out, GB_CAP_CHANGE_SLOTS);
    double gain_up = up ? up->prediction.devices_per_hour - out->prediction.devices_per_hour : 0;
    double gain_sl = sl ? sl->prediction.devices_per_hour - out->prediction.devices_per_hour : 0;
    out->bandwidth_bound = up != NULL && gain_up > gain_sl;
    explain(out, fit);
    return 0;
}
