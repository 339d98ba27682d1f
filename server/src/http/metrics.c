/* metrics: request counters and duration histograms keyed by route pattern (never the raw
 * path, so cardinality stays bounded by the route table), method and status. Recording is a
 * hash probe and a few increments; the Prometheus text is built only when scraped. */
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"

/* Prometheus' default buckets (seconds). */
static const double bucket_le[GB_HTTP_NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                   0.5,   1,    2.5,   5,    10};
static const char *const bucket_le_text[GB_HTTP_NBUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"};

static size_t hash_key(const char *route, unsigned method, unsigned status)
{
    uint64_t h = (uint64_t)(uintptr_t)route * 0x9e3779b97f4a7c15ULL;
    h ^= ((uint64_t)method << 16 | status) * 0xff51afd7ed558ccdULL;
    return (size_t)(h ^ (h >> 29));
}

void gb_http__metrics_init(gb_http__metrics_t *m)
{
    memset(m, 0, sizeof(*m));
}

void gb_http__metrics_dispose(gb_http__metrics_t *m)
{
    free(m->series);
    free(m->hists);
    memset(m, 0, sizeof(*m));
}

static gb_http__series_t *series_slot(gb_http__series_t *tab, size_t cap, const char *route,
                                      unsigned method, unsigned status)
{
    size_t i = hash_key(route, method, status) & (cap - 1);
    for (;;) {
        gb_http__series_t *s = &tab[i];
        if (s->route == NULL || (s->route == route && s->method == method && s->status == status)) {
            return s;
        }
        i = (i + 1) & (cap - 1);
    }
}

static gb_http__hist_t *hist_slot(gb_http__hist_t *tab, size_t cap, const char *route,
                                  unsigned method)
{
    size_t i = hash_key(route, method, 0) & (cap - 1);
    for (;;) {
        gb_http__hist_t *h = &tab[i];
        if (h->route == NULL || (h->route == route && h->method == method)) {
            return h;
        }
        i = (i + 1) & (cap - 1);
    }
}

static void grow_series(gb_http__metrics_t *m)
{
    size_t cap = m->cap_series ? m->cap_series * 2 : 64;
    gb_http__series_t *tab = gb_xcalloc(cap, sizeof(*tab));
    for (size_t i = 0; i < m->cap_series; i++) {
        gb_http__series_t *old = &m->series[i];
        if (old->route != NULL) {
            *series_slot(tab, cap, old->route, old->method, old->status) = *old;
        }
    }
    free(m->series);
    m->series = tab;
    m->cap_series = cap;
}

static void grow_hists(gb_http__metrics_t *m)
{
    size_t cap = m->cap_hists ? m->cap_hists * 2 : 32;
    gb_http__hist_t *tab = gb_xcalloc(cap, sizeof(*tab));
    for (size_t i = 0; i < m->cap_hists; i++) {
        gb_http__hist_t *old = &m->hists[i];
        if (old->route != NULL) {
            *hist_slot(tab, cap, old->route, old->method) = *old;
        }
    }
    free(m->hists);
    m->hists = tab;
    m->cap_hists = cap;
}

void gb_http__metrics_record(gb_http__metrics_t *m, const char *route, gb_http_method_t method,
                             int status, double seconds)
{
    if (status < 100 || status > 999) {
        status = 0;
    }
    /* Keep the tables at most half full so probes stay short. */
    if ((m->nseries + 1) * 2 > m->cap_series) {
        grow_series(m);
    }
    gb_http__series_t *s = series_slot(m->series, m->cap_series, route, method, (unsigned)status);
    if (s->route == NULL) {
        s->route = route;
        s->method = (uint8_t)method;
        s->status = (uint16_t)status;
        m->nseries++;
    }
    s->count++;

    if ((m->nhists + 1) * 2 > m->cap_hists) {
        grow_hists(m);
    }
    gb_http__hist_t *h = hist_slot(m->hists, m->cap_hists, route, method);
    if (h->route == NULL) {
        h->route = route;
        h->method = (uint8_t)method;
        m->nhists++;
    }
    h->count++;
    h->sum += seconds;
    for (size_t i = 0; i < GB_HTTP_NBUCKETS; i++) {
        if (seconds <= bucket_le[i]) {
            h->buckets[i]++;
            break;
        }
    }
}

static void labels(gb_buf_t *out, const char *route, unsigned method)
{
    gb_buf_append_str(out, "route=");
    gb_http__prom_label(out, route);
    gb_buf_appendf(out, ",method=\"%s\"", gb_http_method_name((gb_http_method_t)method));
}

void gb_http__metrics_write(const gb_http__metrics_t *m, unsigned open_connections, gb_buf_t *out)
{
    gb_buf_append_str(out, "# HELP gb_http_requests_total HTTP requests answered, by route "
                           "pattern, method and status.\n"
                           "# TYPE gb_http_requests_total counter\n");
    for (size_t i = 0; i < m->cap_series; i++) {
        const gb_http__series_t *s = &m->series[i];
        if (s->route == NULL) {
            continue;
        }
        gb_buf_append_str(out, "gb_http_requests_total{");
        labels(out, s->route, s->method);
        gb_buf_appendf(out, ",status=\"%u\"} %llu\n", (unsigned)s->status,
                       (unsigned long long)s->count);
    }

    gb_buf_append_str(out, "# HELP gb_http_request_duration_seconds Time from a request's first "
                           "byte to its response, by route pattern and method.\n"
                           "# TYPE gb_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i < m->cap_hists; i++) {
        const gb_http__hist_t *h = &m->hists[i];
        if (h->route == NULL) {
            continue;
        }
        uint64_t cumulative = 0;
        for (size_t b = 0; b < GB_HTTP_NBUCKETS; b++) {
            cumulative += h->buckets[b];
            gb_buf_append_str(out, "gb_http_request_duration_seconds_bucket{");
            labels(out, h->route, h->method);
            gb_buf_appendf(out, ",le=\"%s\"} %llu\n", bucket_le_text[b],
                           (unsigned long long)cumulative);
        }
        gb_buf_append_str(out, "gb_http_request_duration_seconds_bucket{");
        labels(out, h->route, h->method);
        gb_buf_appendf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)h->count);
        gb_buf_append_str(out, "gb_http_request_duration_seconds_sum{");
        labels(out, h->route, h->method);
        gb_buf_appendf(out, "} %.6f\n", h->sum);
        gb_buf_append_str(out, "gb_http_request_duration_seconds_count{");
        labels(out, h->route, h->method);
        gb_buf_appendf(out, "} %llu\n", (unsigned long long)h->count);
    }

    gb_buf_appendf(out,
                   "# HELP gb_http_open_connections Client connections open now.\n"
                   "# TYPE gb_http_open_connections gauge\n"
                   "gb_http_open_connections %u\n"
                   "# HELP gb_http_connections_total Client connections accepted.\n"
                   "# TYPE gb_http_connections_total counter\n"
                   "gb_http_connections_total %llu\n"
                   "# HELP gb_http_connections_rejected_total Connections refused because the "
                   "connection cap was reached.\n"
                   "# TYPE gb_http_connections_rejected_total counter\n"
                   "gb_http_connections_rejected_total %llu\n"
                   "# HELP gb_http_timeouts_total Connections closed because a request head, a "
                   "body or a response write was too slow.\n"
                   "# TYPE gb_http_timeouts_total counter\n"
                   "gb_http_timeouts_total %llu\n"
                   "# HELP gb_http_bad_requests_total Requests refused as malformed or over a "
                   "limit before reaching a handler.\n"
                   "# TYPE gb_http_bad_requests_total counter\n"
                   "gb_http_bad_requests_total %llu\n",
                   open_connections, (unsigned long long)m->connections_total,
                   (unsigned long long)m->connections_rejected,
                   (unsigned long long)m->timeouts_total,
                   (unsigned long long)m->bad_requests_total);
}
