/* router: method + path pattern -> handler. Patterns are split into segments once, at
 * registration; a request's raw path is split per request and compared segment by segment, so
 * an encoded slash inside a capture ("A%2FB") stays one segment. Captures are decoded into the
 * request's arena. The most specific pattern wins: literals beat captures, leftmost first. A
 * streamed route (its body read in pieces by the handler) carries its own body limit, which the
 * connection looks up when a request's head is in. */
#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "http/internal.h"

#define MAX_SEGMENTS 32

typedef struct route_seg {
    const char *p; /* into route->pattern */
    size_t len;
    bool capture;
} route_seg_t;

struct gb_http__route {
    gb_http_method_t method;
    char *pattern;
    route_seg_t *segs;
    size_t nsegs;
    uint64_t literal_bits; /* bit (63 - i) set when segment i is literal: higher is more specific */
    gb_http_handler_cb cb;
    void *ctx;
    bool streamed;   /* the handler runs after the head and reads the body in pieces */
    size_t max_body; /* a streamed route's body limit; 0: the server's */
};

struct gb_http_router {
    gb_http__route_t *routes;
    size_t nroutes;
    size_t cap;
    unsigned streamed_methods; /* bit (1 << method) for each method a streamed route serves */
};

gb_http_router_t *gb_http_router_new(void)
{
    return gb_xcalloc(1, sizeof(gb_http_router_t));
}

void gb_http_router_free(gb_http_router_t *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->nroutes; i++) {
        free(r->routes[i].pattern);
        free(r->routes[i].segs);
    }
    free(r->routes);
    free(r);
}

void gb_http_router_add(gb_http_router_t *r, gb_http_method_t method, const char *pattern,
                        gb_http_handler_cb cb, void *ctx)
{
    /* Bad patterns are programming errors in the route table, caught at start-up. */
    GB_ASSERT(pattern != NULL && pattern[0] == '/');
    GB_ASSERT(method != GB_HTTP_OTHER);
    if (r->nroutes == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->routes = gb_xrealloc(r->routes, r->cap * sizeof(*r->routes));
    }
    gb_http__route_t *rt = &r->routes[r->nroutes++];
    memset(rt, 0, sizeof(*rt));
    rt->method = method;
    rt->pattern = gb_xstrdup(pattern);
    rt->cb = cb;
    rt->ctx = ctx;

    size_t ncaptures = 0;
    const char *p = rt->pattern + 1;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash != NULL ? (size_t)(slash - p) : strlen(p);
        GB_ASSERT(rt->nsegs < MAX_SEGMENTS);
        rt->segs = gb_xrealloc(rt->segs, (rt->nsegs + 1) * sizeof(*rt->segs));
        route_seg_t *seg = &rt->segs[rt->nsegs];
        seg->capture = len >= 2 && p[0] == '{' && p[len - 1] == '}';
        seg->p = p;
        seg->len = len;
        if (seg->capture) {
            ncaptures++;
        } else {
            rt->literal_bits |= (uint64_t)1 << (63 - rt->nsegs);
        }
        rt->nsegs++;
        if (slash == NULL) {
            break;
        }
        p = slash + 1;
    }
    GB_ASSERT(ncaptures <= GB_HTTP_MAX_PARAMS);
}

void gb_http_router_add_streamed(gb_http_router_t *r, gb_http_method_t method, const char *pattern,
                                 size_t max_body_bytes, gb_http_handler_cb cb, void *ctx)
{
    gb_http_router_add(r, method, pattern, cb, ctx);
    r->routes[r->nroutes - 1].streamed = true;
    r->routes[r->nroutes - 1].max_body = max_body_bytes;
    r->streamed_methods |= 1u << method;
    if (method == GB_HTTP_GET) {
        r->streamed_methods |= 1u << GB_HTTP_HEAD; /* HEAD falls back to the GET route */
    }
}

bool gb_http__router_may_stream(const gb_http_router_t *r, gb_http_method_t method)
{
    return (r->streamed_methods & (1u << method)) != 0;
}

void gb_http_router_foreach(const gb_http_router_t *r,
                            void (*fn)(gb_http_method_t method, const char *pattern, void *arg),
                            void *arg)
{
    for (size_t i = 0; i < r->nroutes; i++) {
        fn(r->routes[i].method, r->routes[i].pattern, arg);
    }
}

/* Compares a raw path segment with a pattern literal, decoding the segment only if it holds
 * an escape (browsers may encode characters that need none). */
static bool segment_equals(gb_str_t raw, const route_seg_t *lit)
{
    char tmp[256];

    if (memchr(raw.p, '%', raw.len) == NULL) {
        return raw.len == lit->len && memcmp(raw.p, lit->p, raw.len) == 0;
    }
    if (raw.len > sizeof(tmp)) {
        return false;
    }
    long n = gb_http__pct_decode(raw.p, raw.len, tmp, false);
    return n == (long)lit->len && memcmp(tmp, lit->p, lit->len) == 0;
}

static bool route_matches(const gb_http__route_t *rt, const gb_str_t *segs, size_t nsegs)
{
    if (rt->nsegs != nsegs) {
        return false;
    }
    for (size_t i = 0; i < nsegs; i++) {
        const route_seg_t *s = &rt->segs[i];
        if (s->capture) {
            if (segs[i].len == 0) {
                return false;
            }
        } else if (!segment_equals(segs[i], s)) {
            return false;
        }
    }
    return true;
}

int gb_http__router_match(const gb_http_router_t *r, gb_http_method_t method, gb_str_t raw_path,
                          gb_arena_t *arena, gb_http__match_t *m)
{
    gb_str_t segs[MAX_SEGMENTS];
    size_t nsegs = 0;
    const gb_http__route_t *best = NULL;
    const gb_http__route_t *best_get = NULL;

    memset(m, 0, sizeof(*m));
    if (raw_path.len == 0 || raw_path.p[0] != '/') {
        return 404;
    }
    const char *p = raw_path.p + 1;
    const char *end = raw_path.p + raw_path.len;
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash != NULL ? slash : end;
        if (nsegs == MAX_SEGMENTS) {
            return 404; /* deeper than any pattern can be */
        }
        segs[nsegs++] = (gb_str_t){p, (size_t)(seg_end - p)};
        if (slash == NULL) {
            break;
        }
        p = slash + 1;
    }

    for (size_t i = 0; i < r->nroutes; i++) {
        const gb_http__route_t *rt = &r->routes[i];
        if (!route_matches(rt, segs, nsegs)) {
            continue;
        }
        m->allow |= 1u << rt->method;
        if (m->pattern == NULL) {
            m->pattern = rt->pattern;
        }
        if (rt->method == method && (best == NULL || rt->literal_bits > best->literal_bits)) {
            best = rt;
        }
        if (rt->method == GB_HTTP_GET &&
            (best_get == NULL || rt->literal_bits > best_get->literal_bits)) {
            best_get = rt;
        }
    }
    if (best == NULL && method == GB_HTTP_HEAD) {
        /* HEAD is GET without the body (RFC 9110 section 9.3.2); the response layer drops it. */
        best = best_get;
    }
    if (best == NULL) {
        return m->allow != 0 ? 405 : 404;
    }
    m->route = best;
    m->pattern = best->pattern;
    m->cb = best->cb;
    m->ctx = best->ctx;
    m->streamed = best->streamed;
    m->max_body = best->max_body;
    for (size_t i = 0; i < best->nsegs; i++) {
        if (!best->segs[i].capture) {
            continue;
        }
        char *out = gb_arena_alloc(arena, segs[i].len + 1);
        long n = gb_http__pct_decode(segs[i].p, segs[i].len, out, false);
        if (n < 0 || memchr(out, '\0', (size_t)n) != NULL) {
            return 400;
        }
        out[n] = '\0';
        m->params[m->nparams++] = (gb_str_t){out, (size_t)n};
    }
    return 0;
}

void gb_http__allow_header(unsigned allow, gb_buf_t *out)
{
    static const gb_http_method_t order[] = {GB_HTTP_GET,    GB_HTTP_HEAD,  GB_HTTP_POST,
                                             GB_HTTP_PUT,    GB_HTTP_PATCH, GB_HTTP_DELETE,
                                             GB_HTTP_OPTIONS};
    bool first = true;

    if (allow & (1u << GB_HTTP_GET)) {
        allow |= 1u << GB_HTTP_HEAD;
    }
    for (size_t i = 0; i < GB_ARRAY_LEN(order); i++) {
        if (allow & (1u << order[i])) {
            if (!first) {
                gb_buf_append(out, ", ", 2);
            }
            gb_buf_append_str(out, gb_http_method_name(order[i]));
            first = false;
        }
    }
}
