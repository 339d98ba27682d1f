/* stream: GET /api/v1/stream, the live stream of device changes as Server-Sent Events.
 * Changes are coalesced in a pending set keyed by a copy of the serial (a device may leave the
 * fleet before the flush, so the set never points into it) and flushed at most once per
 * FLUSH_INTERVAL_MS: each pending device is rendered once per set of members that subscribers
 * asked for ("fields"; most ask for one set or none), and the same bytes go to every subscriber
 * that asked for that set. A subscriber whose unsent bytes pass --stream-buffer is dropped by the
 * http layer, so a slow reader never holds the server back. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include <uv.h>

#include "api/internal.h"

#undef uthash_malloc
#undef uthash_free
#define uthash_malloc(sz)    gb_xmalloc(sz)
#define uthash_free(ptr, sz) free(ptr)

/* A device gets at most one event per this interval: a device reporting in bursts costs its
 * watchers a bounded rate, and a whole group commit leaves as one write per subscriber. */
#define FLUSH_INTERVAL_MS 250
/* Sent first: how long EventSource waits before reconnecting after the stream breaks. */
#define RETRY_HINT "retry: 3000\n\n"

typedef struct gb_api_stream gb_api_stream_t;

/* A device with a change not yet sent. */
typedef struct pending_dev {
    char *serial; /* owned; the hash key */
    UT_hash_handle hh;
} pending_dev_t;

/* One subscriber. Lives in its request's arena: the request stays valid until on_sub_closed,
 * which unlinks it, and is freed right after that callback. */
typedef struct stream_sub {
    gb_api_stream_t *st;
    gb_http_req_t *req;
    struct stream_sub *prev;
    struct stream_sub *next;
    uint64_t last_sent_ms; /* loop time of the last write that was taken */
    uint32_t fields;       /* the members its events carry (gb_proto_view_opts_t.fields) */
    bool dead;             /* a write failed: the stream is ending, on_sub_closed follows */
    bool served;           /* this flush has written to it (or had nothing for it) */
} stream_sub_t;

/* A device of the current flush, with the event id it has for every subscriber. */
typedef struct flush_item {
    const gb_fleet_dev_t *fd;
    uint64_t id;
} flush_item_t;

struct gb_api_stream {
    gb_api_t *api;
    uv_timer_t flush;     /* one-shot, armed while devices are pending */
    uv_timer_t heartbeat; /* repeating, runs while there are subscribers */
    unsigned open_handles;
    bool timers_ready;  /* the timers were initialised (by the first subscriber) */
    bool closing;       /* gb_api__stream_close ran: no new subscriber, the timers are closing */
    bool free_on_close; /* gb_api__stream_free ran while a timer was still closing */
    bool flushed;       /* last_flush_ms is set */
    uint64_t last_flush_ms;
    stream_sub_t *subs; /* every subscriber whose stream has not yet closed */
    unsigned nsubs;
    pending_dev_t *pending; /* uthash head; iteration is in insertion order, so oldest first */
    uint64_t next_id;       /* the last event id given */
    gb_buf_t out;           /* the current flush's rendered events, reused */
    flush_item_t *items;    /* the current flush's devices, reused */
    size_t items_cap;
    /* metrics */
    uint64_t subscribers_total;
    uint64_t refused_total;
    uint64_t dropped_total;
    uint64_t events_total;
    uint64_t heartbeats_total;
};

static void pending_clear(gb_api_stream_t *st)
{
    pending_dev_t *p, *tmp;
    HASH_ITER(hh, st->pending, p, tmp)
    {
        HASH_DEL(st->pending, p);
        free(p->serial);
        free(p);
    }
}

/* Writes to one subscriber; a refusal marks it dead (its stream is closing). */
static bool sub_write(stream_sub_t *sub, const char *data, size_t len, uint64_t now)
{
    gb_api_stream_t *st = sub->st;
    if (sub->dead) {
        return false;
    }
    int rc = gb_http_stream_write(sub->req, data, len);
    if (rc < 0) {
        sub->dead = true;
        if (rc == GB_EBUSY) {
            /* The http layer has logged it with the connection's identity. */
            st->dropped_total++;
        }
        return false;
    }
    sub->last_sent_ms = now;
    return true;
}

static void on_flush_timer(uv_timer_t *timer);

/* Arms the flush timer unless it already is: now when the last flush is at least an interval
 * old, else when it will be. Flushes are thus an interval apart at least, which is what bounds
 * each device to one event per interval. */
static void schedule_flush(gb_api_stream_t *st)
{
    if (uv_is_active((uv_handle_t *)&st->flush)) {
        return;
    }
    uint64_t now = uv_now(st->api->loop);
    uint64_t delay = 0;
    if (st->flushed && now < st->last_flush_ms + FLUSH_INTERVAL_MS) {
        delay = st->last_flush_ms + FLUSH_INTERVAL_MS - now;
    }
    uv_timer_start(&st->flush, on_flush_timer, delay, 0);
}

/* Appends one device event to out, with the members `fields` names. */
static void render_event(gb_buf_t *out, const flush_item_t *it, const gb_proto_view_opts_t *base,
                         uint32_t fields)
{
    gb_proto_view_opts_t opts = *base;
    opts.fields = fields;
    /* The views escape every control byte, so the JSON is one line, as SSE data must be. */
    gb_buf_appendf(out, "event: device\nid: %llu\ndata: ", (unsigned long long)it->id);
    gb_proto_device_json(&it->fd->dev, &opts, out);
    gb_buf_append(out, "\n\n", 2);
}

/* Writes out to every subscriber not yet served that asked for `fields`. */
static void write_to(gb_api_stream_t *st, uint32_t fields, size_t nevents, uint64_t now)
{
    for (stream_sub_t *sub = st->subs; sub != NULL; sub = sub->next) {
        if (sub->served || sub->fields != fields) {
            continue;
        }
        sub->served = true;
        if (nevents > 0 && sub_write(sub, st->out.data, st->out.len, now)) {
            st->events_total += nevents;
        }
    }
}

/* How many members a mask names; 0 names them all, more than any mask. */
static unsigned members_in(uint32_t fields)
{
    return fields == 0 ? UINT_MAX : (unsigned)__builtin_popcount(fields);
}

static void on_flush_timer(uv_timer_t *timer)
{
    gb_api_stream_t *st = gb_container_of(timer, gb_api_stream_t, flush);
    gb_api_t *api = st->api;
    gb_proto_view_opts_t opts;
    pending_dev_t *p, *tmp;
    uint64_t now = uv_now(api->loop);
    size_t nevents = 0;
    /* A flush renders at most half a subscriber's buffer; the rest stays pending for the next
     * one. A large import then reaches readers that keep up as a steady flow, instead of one
     * burst bigger than the buffer that would drop every subscriber at once. The bound holds for
     * the largest set of members asked for, which is rendered first. */
    size_t cap = api->cfg->stream_buffer_bytes / 2;
    uint32_t widest = 0;
    unsigned widest_n = 0;

    st->flushed = true;
    st->last_flush_ms = now;
    gb_api__view_opts(api, &opts);
    for (stream_sub_t *sub = st->subs; sub != NULL; sub = sub->next) {
        sub->served = false;
        if (members_in(sub->fields) > widest_n) {
            widest_n = members_in(sub->fields);
            widest = sub->fields;
        }
    }
    gb_buf_reset(&st->out);
    HASH_ITER(hh, st->pending, p, tmp)
    {
        if (st->out.len > 0 && st->out.len >= cap) {
            break;
        }
        const gb_fleet_dev_t *fd = gb_fleet_find(&api->fleet, p->serial, strlen(p->serial));
        HASH_DEL(st->pending, p);
        if (fd != NULL) {
            if (nevents == st->items_cap) {
                st->items_cap = st->items_cap > 0 ? st->items_cap * 2 : 64;
                st->items = gb_xrealloc(st->items, st->items_cap * sizeof(*st->items));
            }
            flush_item_t *it = &st->items[nevents++];
            it->fd = fd;
            it->id = ++st->next_id;
            render_event(&st->out, it, &opts, widest);
        }
        free(p->serial);
        free(p);
    }
    /* Writes never close a stream synchronously (on_sub_closed comes later from a loop
     * callback), so the list stays intact while it is walked. */
    write_to(st, widest, nevents, now);
    for (stream_sub_t *sub = st->subs; sub != NULL; sub = sub->next) {
        if (sub->served) {
            continue;
        }
        uint32_t fields = sub->fields;
        gb_buf_reset(&st->out);
        for (size_t i = 0; i < nevents; i++) {
            render_event(&st->out, &st->items[i], &opts, fields);
        }
        write_to(st, fields, nevents, now);
    }
    /* A large flush's buffers are not worth keeping between flushes. */
    if (st->out.cap > 64 * 1024) {
        gb_buf_dispose(&st->out);
        gb_buf_init(&st->out);
    }
    if (st->items_cap > 1024) {
        free(st->items);
        st->items = NULL;
        st->items_cap = 0;
    }
    if (st->pending != NULL) {
        schedule_flush(st);
    }
}

/* Checks a few times per heartbeat period, so that a quiet stream hears from the server at
 * most a quarter period late. */
static void on_heartbeat_timer(uv_timer_t *timer)
{
    gb_api_stream_t *st = gb_container_of(timer, gb_api_stream_t, heartbeat);
    uint64_t now = uv_now(st->api->loop);
    uint64_t period = st->api->cfg->stream_heartbeat_ms;
    char line[64];
    char at[32];
    int len = 0;

    for (stream_sub_t *sub = st->subs; sub != NULL; sub = sub->next) {
        if (sub->dead || now - sub->last_sent_ms < period) {
            continue;
        }
        if (len == 0) {
            gb_time_format_rfc3339(gb_time_now_ms(), at);
            len = snprintf(line, sizeof(line), ": heartbeat %s\n\n", at);
        }
        if (sub_write(sub, line, (size_t)len, now)) {
            st->heartbeats_total++;
        }
    }
}

static void timer_released(gb_api_stream_t *st)
{
    GB_ASSERT(st->open_handles > 0);
    if (--st->open_handles == 0 && st->free_on_close) {
        free(st);
    }
}

static void on_flush_closed(uv_handle_t *handle)
{
    timer_released(gb_container_of((uv_timer_t *)handle, gb_api_stream_t, flush));
}

static void on_heartbeat_closed(uv_handle_t *handle)
{
    timer_released(gb_container_of((uv_timer_t *)handle, gb_api_stream_t, heartbeat));
}

/* The timers exist only once someone subscribes: a server that fails to start before serving
 * never had one, so it has no handle of ours to close. Neither keeps the loop alive. */
static void timers_init(gb_api_stream_t *st)
{
    if (st->timers_ready) {
        return;
    }
    uv_timer_init(st->api->loop, &st->flush);
    uv_timer_init(st->api->loop, &st->heartbeat);
    uv_unref((uv_handle_t *)&st->flush);
    uv_unref((uv_handle_t *)&st->heartbeat);
    st->open_handles = 2;
    st->timers_ready = true;
}

static void on_sub_closed(gb_http_req_t *req, void *ctx)
{
    stream_sub_t *sub = ctx;
    gb_api_stream_t *st = sub->st;

    if (sub->prev != NULL) {
        sub->prev->next = sub->next;
    } else {
        st->subs = sub->next;
    }
    if (sub->next != NULL) {
        sub->next->prev = sub->prev;
    }
    st->nsubs--;
    gb_log(GB_LOG_DEBUG, "stream", "subscriber left conn=%llu subscribers=%u",
           (unsigned long long)req->conn_id, st->nsubs);
    if (st->nsubs == 0 && !st->closing) {
        /* Nobody listens: pending changes have no reader, and no reader needs heartbeats. */
        pending_clear(st);
        uv_timer_stop(&st->flush);
        uv_timer_stop(&st->heartbeat);
    }
}

static void on_stream(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    gb_api_stream_t *st = api->stream;
    const gb_config_t *cfg = api->cfg;
    uint32_t fields;

    /* A bad "fields" is the request's fault whatever the stream's state: 400 before any 503. */
    if (!gb_api__parse_fields(req, &fields)) {
        return;
    }
    if (st->closing) {
        gb_http_respond_errorf(req, 503, "unavailable", "the server is shutting down");
        return;
    }
    if (st->nsubs >= cfg->stream_max_subscribers) {
        st->refused_total++;
        gb_http_respond_errorf(req, 503, "unavailable",
                               "the live stream has its %u subscribers already; retry later",
                               cfg->stream_max_subscribers);
        return;
    }
    timers_init(st);
    stream_sub_t *sub = gb_arena_alloc(&req->arena, sizeof(*sub));
    sub->st = st;
    sub->req = req;
    sub->fields = fields;
    sub->dead = false;
    sub->served = false;
    sub->last_sent_ms = uv_now(api->loop);
    /* Linked before the stream starts, so on_sub_closed finds it whenever it fires. */
    sub->prev = NULL;
    sub->next = st->subs;
    if (st->subs != NULL) {
        st->subs->prev = sub;
    }
    st->subs = sub;
    st->nsubs++;
    st->subscribers_total++;
    if (st->nsubs == 1) {
        uint64_t every = cfg->stream_heartbeat_ms / 4;
        uv_timer_start(&st->heartbeat, on_heartbeat_timer, every, every);
    }
    gb_log(GB_LOG_DEBUG, "stream", "subscriber joined conn=%llu token=%s subscribers=%u",
           (unsigned long long)req->conn_id, who->name, st->nsubs);
    /* X-Accel-Buffering: a reverse proxy that buffers responses would hold events back. */
    gb_http_stream_start(req, "text/event-stream", "X-Accel-Buffering: no\r\n",
                         cfg->stream_buffer_bytes, on_sub_closed, sub);
    (void)sub_write(sub, RETRY_HINT, sizeof(RETRY_HINT) - 1, sub->last_sent_ms);
}

void gb_api__stream_register(gb_api_t *api)
{
    gb_api_stream_t *st = gb_xcalloc(1, sizeof(*st));
    st->api = api;
    gb_buf_init(&st->out);
    api->stream = st;
    gb_api__route_query_token(api, GB_HTTP_GET, "/api/v1/stream", GB_ROLE_VIEWER, on_stream);
}

void gb_api__stream_device_changed(gb_api_t *api, const gb_fleet_dev_t *fd)
{
    gb_api_stream_t *st = api->stream;
    pending_dev_t *p = NULL;

    if (st == NULL || st->closing || st->nsubs == 0) {
        return;
    }
    size_t len = strlen(fd->key);
    HASH_FIND(hh, st->pending, fd->key, len, p);
    if (p == NULL) {
        p = gb_xmalloc(sizeof(*p));
        p->serial = gb_xstrndup(fd->key, len);
        HASH_ADD_KEYPTR(hh, st->pending, p->serial, len, p);
    }
    schedule_flush(st);
}

void gb_api__stream_close(gb_api_t *api)
{
    gb_api_stream_t *st = api->stream;

    if (st == NULL || st->closing) {
        return;
    }
    st->closing = true;
    /* The http server's shutdown normally ended every stream already; this covers a caller
     * that closes the api first. Each on_sub_closed follows from its own callback. */
    for (stream_sub_t *sub = st->subs; sub != NULL; sub = sub->next) {
        gb_http_stream_end(sub->req);
    }
    pending_clear(st);
    if (st->timers_ready) {
        uv_close((uv_handle_t *)&st->flush, on_flush_closed);
        uv_close((uv_handle_t *)&st->heartbeat, on_heartbeat_closed);
    }
}

void gb_api__stream_free(gb_api_t *api)
{
    gb_api_stream_t *st = api->stream;

    if (st == NULL) {
        return;
    }
    api->stream = NULL;
    pending_clear(st);
    gb_buf_dispose(&st->out);
    free(st->items);
    if (st->timers_ready && !st->closing) {
        /* Never closed (the api was freed without gb_api_close): close now, free in the
         * callbacks if the loop runs again; leaking beats a handle pointing at freed memory. */
        st->closing = true;
        uv_close((uv_handle_t *)&st->flush, on_flush_closed);
        uv_close((uv_handle_t *)&st->heartbeat, on_heartbeat_closed);
    }
    if (st->open_handles > 0) {
        st->free_on_close = true;
        return;
    }
    free(st);
}

void gb_api__stream_write_metrics(gb_api_t *api, gb_buf_t *out)
{
    const gb_api_stream_t *st = api->stream;

    if (st == NULL) {
        return;
    }
    gb_buf_appendf(
        out,
        "# HELP gb_stream_subscribers Live-stream subscribers connected now.\n"
        "# TYPE gb_stream_subscribers gauge\ngb_stream_subscribers %u\n"
        "# HELP gb_stream_subscribers_total Live-stream subscribers accepted.\n"
        "# TYPE gb_stream_subscribers_total counter\ngb_stream_subscribers_total %llu\n"
        "# HELP gb_stream_refused_total Live-stream subscribers refused at the limit.\n"
        "# TYPE gb_stream_refused_total counter\ngb_stream_refused_total %llu\n"
        "# HELP gb_stream_dropped_total Live-stream subscribers dropped for reading too slowly.\n"
        "# TYPE gb_stream_dropped_total counter\ngb_stream_dropped_total %llu\n"
        "# HELP gb_stream_events_total Device events written to live-stream subscribers.\n"
        "# TYPE gb_stream_events_total counter\ngb_stream_events_total %llu\n"
        "# HELP gb_stream_heartbeats_total Heartbeats written to live-stream subscribers.\n"
        "# TYPE gb_stream_heartbeats_total counter\ngb_stream_heartbeats_total %llu\n",
        st->nsubs, (unsigned long long)st->subscribers_total, (unsigned long long)st->refused_total,
        (unsigned long long)st->dropped_total, (unsigned long long)st->events_total,
        (unsigned long long)st->heartbeats_total);
}
