/* bench_sse: the live stream (GET /api/v1/stream) under an ingest load, for tests/bench/api.sh.
 * One libuv loop runs both sides:
 *
 *   subscribers  S connections to /api/v1/stream?access_token=VIEWER, parsed as Server-Sent
 *                Events; per subscriber: device events, heartbeats, bytes, and per load device
 *                the last_seen of the newest event received.
 *   load         D new devices (serials PREFIX00000 ...) posting R messages/s in all, K messages
 *                per request, round-robin, over C keep-alive connections; one request in flight
 *                per device; every message's `at` is the wall clock when it is built (strictly
 *                increasing per device), so an event's last_seen tells when its newest message
 *                was sent.
 *
 * Steps: connect every subscriber (each must get 200 and the stream's first bytes), run the load
 * for T seconds, wait for the last answers, then wait (up to a settle time) until every
 * subscriber holds every changed device's final state, that is an event whose last_seen is the
 * `at` of the device's last acknowledged message. Then it fetches GET /api/v1/devices/{serial}
 * for every changed device and checks that the newest event's Device is the detail's Device part
 * byte for byte, closes the subscribers and prints one line "GB_SSE key=value ..." (and, with
 * --subscriber-report, one line per subscriber: events, heartbeats, bytes, dropped, and how many
 * changed devices it never heard of or holds in an older state).
 *
 * Event lag = arrival time - last_seen: from building the newest message an event carries to
 * reading the event (the request, the commit, the coalescing interval and the delivery).
 * A subscriber the server closed before the end counts as dropped.
 *
 * Usage: bench_sse --port P [--host 127.0.0.1] [--subscribers 200] [--rate 1000] [--seconds 20]
 *                  [--devices 1000] [--batch 1] [--connections 200] [--settle 15] [--prefix SSE]
 *                  [--subscriber-report FILE]
 * Tokens come from the environment: GB_BENCH_VIEWER (viewer), GB_BENCH_TOKEN (agent).
 * Exit status: 0 when it measured (whatever the figures), 1 when it could not run, 2 on usage. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <llhttp.h>
#include <uv.h>

#include "util/util.h"

#define LAG_BUCKETS   60001  /* 1 ms each; the last one holds everything later */
#define ACK_BUCKETS   600001 /* 0.1 ms each */
#define TICK_MS       1
#define MAX_BODY      (4u << 20)
#define READ_BUF_SIZE (256u * 1024u)

typedef enum { KIND_SUB, KIND_LOAD } conn_kind_t;
typedef enum { REQ_NONE, REQ_POST, REQ_DETAIL } req_kind_t;
typedef enum {
    PHASE_CONNECT,
    PHASE_LOAD,
    PHASE_DRAIN,
    PHASE_SETTLE,
    PHASE_DETAIL,
    PHASE_DONE
} phase_t;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    llhttp_t parser;
    conn_kind_t kind;
    unsigned index;
    bool open;      /* the handle exists (not yet closed) */
    bool connected; /* TCP connected */
    bool by_us;     /* we closed it */
    gb_buf_t out;   /* the request being written */
    /* subscriber */
    bool streaming; /* 200 and the headers arrived */
    bool dropped;   /* the server ended the stream before we closed it */
    gb_buf_t line;  /* an SSE line split across reads */
    gb_buf_t data;  /* the current event's data */
    uint64_t event_id;
    int64_t *seen_at; /* per load device: last_seen of the newest event received, 0 if none */
    uint64_t events, other_events, heartbeats, bytes;
    /* load */
    req_kind_t req; /* the request in flight */
    int dev;        /* its device */
    int64_t req_at; /* its last message's `at` (posts) */
    uint64_t sent_ns;
    gb_buf_t body; /* the response's body */
    bool message_done;
    bool keep_alive;
} conn_t;

typedef struct device {
    char serial[32];
    uint32_t next_seq; /* the next message to send, from 1 */
    int64_t last_at;   /* `at` of the last message built */
    int64_t acked_at;  /* `at` of the last message acknowledged, 0 if none */
    bool in_flight;
    bool detail_done;
    char *event; /* data of the newest event any subscriber received for it */
    size_t event_len;
    uint64_t event_id; /* its id */
} device_t;

static struct {
    const char *host;
    int port;
    unsigned subscribers, devices, batch, connections;
    double rate, seconds, settle;
    const char *prefix;
    const char *subscriber_report; /* a file for one line per subscriber, or NULL */
    const char *viewer, *agent;
} opt = {.host = "127.0.0.1",
         .subscribers = 200,
         .devices = 1000,
         .batch = 1,
         .connections = 200,
         .rate = 1000.0,
         .seconds = 20.0,
         .settle = 15.0,
         .prefix = "SSE"};

static uv_loop_t *loop;
static uv_timer_t tick;
static struct sockaddr_in addr;
static llhttp_settings_t sub_settings, load_settings;
static conn_t *subs, *loads;
static device_t *devs;
static phase_t phase = PHASE_CONNECT;
static uint64_t phase_ns;   /* when the current phase began */
static uint64_t load_t0_ns; /* the load's start */
static double load_s;       /* the load's duration */
static uint64_t last_ack_ns;
static uint64_t settle_ms; /* last answer to every subscriber holding every final state */
static bool settled;
static uint64_t settle_checks;
static unsigned next_dev;
static uint64_t due_msgs; /* messages handed to requests so far */
static uint64_t sent_msgs, acked_msgs, post_errors, conn_errors;
static uint64_t reqs_sent, reqs_acked;
static unsigned max_in_flight, in_flight;
static uint64_t behind_ticks; /* ticks that ended with a request due but not sent */
static uint64_t max_backlog;  /* the most messages ever due but not yet sent */
static uint64_t *lag_hist, *ack_hist;
static uint64_t lag_count, ack_count;
static int64_t lag_max, ack_max_us;
static unsigned detail_next, details_done, details_equal, details_failed;
static unsigned mismatch_shown;
static char first_error[512];
static char readbuf[READ_BUF_SIZE];

static void fail(const char *fmt, ...) GB_PRINTF(1, 2);
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_sse: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void note_error(const char *fmt, ...) GB_PRINTF(1, 2);
static void note_error(const char *fmt, ...)
{
    if (first_error[0] != '\0') {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(first_error, sizeof(first_error), fmt, ap);
    va_end(ap);
    fprintf(stderr, "bench_sse: %s\n", first_error);
}

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static double since_s(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e9;
}

static void set_phase(phase_t p)
{
    phase = p;
    phase_ns = now_ns();
}

/* ---- the load's messages (those of tests/bench/agent.lua) ---- */

static const char *const STAGES[] = {
    "oobe",
    "enterprise_provisioning",
    "profile_download",
    "zdp_update",
    "component_update",
    "device_rename",
    "landing",
    "securing_hardware",
    "joining_network",
    "registering_mdm",
    "preparing_mdm",
};
#define N_STAGES ((int)GB_ARRAY_LEN(STAGES))

static const struct {
    const char *name;
    uint64_t bytes;
} APPS[] = {
    {"Microsoft 365 Apps", 1610612736u}, {"Microsoft Teams", 157286400u},
    {"Company Portal", 52428800u},       {"Contoso VPN Client", 83886080u},
    {"Language Pack de-DE", 268435456u},
};
#define N_APPS          ((int)GB_ARRAY_LEN(APPS))
#define SAMPLES_PER_APP 5
#define APP_CYCLE       (SAMPLES_PER_APP + 3)

static const struct {
    const char *manufacturer, *model;
} HARDWARE[] = {
    {"HP", "EliteBook 840 G8"},
    {"LENOVO", "ThinkPad T14 Gen 3"},
    {"Dell Inc.", "Latitude 5440"},
    {"Microsoft Corporation", "Surface Laptop 5"},
};

/* Appends device d's message number seq, sent at wall time at. */
static void append_message(gb_buf_t *b, unsigned d, uint32_t seq, int64_t at)
{
    char ts[32];
    gb_time_format_rfc3339(at, ts);
    gb_buf_appendf(b, "{\"seq\":%" PRIu32 ",\"at\":\"%s\",", seq, ts);
    if (seq == 1) {
        unsigned h = d % (unsigned)GB_ARRAY_LEN(HARDWARE);
        gb_buf_appendf(b,
                       "\"type\":\"hello\",\"agent\":\"glovebox-bench/1.0\",\"os_build\":"
                       "\"10.0.22631\",\"hardware\":{\"manufacturer\":\"%s\",\"model\":\"%s\","
                       "\"tpm_version\":\"2.0\",\"tpm_attestation\":true,\"virtual_machine\":"
                       "false},\"network\":{\"medium\":\"ethernet\",\"link_mbps\":1000},"
                       "\"slot\":\"A-%u\"}",
                       HARDWARE[h].manufacturer, HARDWARE[h].model, d % 24 + 1);
        return;
    }
    int i = (int)seq - 2;
    if (i < 2 * N_STAGES) {
        gb_buf_appendf(b, "\"type\":\"stage\",\"stage\":\"%s\",\"state\":\"%s\"}", STAGES[i / 2],
                       i % 2 == 0 ? "started" : "succeeded");
        return;
    }
    if (i == 2 * N_STAGES) {
        gb_buf_append_str(b,
                          "\"type\":\"stage\",\"stage\":\"device_setup\",\"state\":\"started\"}");
        return;
    }
    i -= 2 * N_STAGES + 1;
    int app = (i / APP_CYCLE) % N_APPS;
    int step = i % APP_CYCLE;
    if (step == 0 || step == SAMPLES_PER_APP + 1 || step == SAMPLES_PER_APP + 2) {
        const char *state = step == 0                     ? "downloading"
                            : step == SAMPLES_PER_APP + 1 ? "installing"
                                                          : "installed";
        gb_buf_appendf(b,
                       "\"type\":\"app\",\"name\":\"%s\",\"state\":\"%s\",\"bytes\":%" PRIu64 "}",
                       APPS[app].name, state, APPS[app].bytes);
        return;
    }
    uint64_t bytes = APPS[app].bytes / SAMPLES_PER_APP;
    uint64_t lan = bytes / 5;
    gb_buf_appendf(b,
                   "\"type\":\"download\",\"bytes\":%" PRIu64
                   ",\"ms\":10000,\"http_bytes\":%" PRIu64 ",\"lan_bytes\":%" PRIu64
                   ",\"cache_bytes\":0}",
                   bytes, bytes - lan, lan);
}

/* ---- connections ---- */

static void conn_start(conn_t *c);

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    GB_UNUSED(handle);
    GB_UNUSED(suggested);
    buf->base = readbuf;
    buf->len = sizeof(readbuf);
}

static void on_closed(uv_handle_t *handle)
{
    conn_t *c = gb_container_of((uv_tcp_t *)handle, conn_t, tcp);
    c->open = false;
}

static void conn_close(conn_t *c)
{
    if (c->open && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
    c->connected = false;
}

static void on_written(uv_write_t *w, int status)
{
    conn_t *c = gb_container_of(w, conn_t, write_req);
    if (status < 0 && status != UV_ECANCELED) {
        if (c->kind == KIND_SUB) {
            fail("subscriber %u: write failed: %s", c->index, uv_strerror(status));
        }
        conn_errors++;
        note_error("load connection %u: write failed: %s", c->index, uv_strerror(status));
    }
}

static void conn_send(conn_t *c)
{
    uv_buf_t buf = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, on_written);
    if (rc < 0) {
        fail("write: %s", uv_strerror(rc));
    }
}

/* A load connection's request ended without an answer: its device may go again. */
static void load_request_lost(conn_t *c, const char *why)
{
    if (c->req == REQ_NONE) {
        return;
    }
    conn_errors++;
    note_error("load connection %u: %s", c->index, why);
    if (c->req == REQ_POST) {
        devs[c->dev].in_flight = false;
        in_flight--;
    } else {
        detail_next = detail_next > (unsigned)c->dev ? (unsigned)c->dev : detail_next;
    }
    c->req = REQ_NONE;
}

/* ---- subscribers: Server-Sent Events ---- */

static int64_t parse_time_field(const char *json, size_t len, const char *key)
{
    size_t klen = strlen(key);
    const char *end = json + len;
    const char *p = json;
    while ((p = memchr(p, '"', (size_t)(end - p))) != NULL) {
        if ((size_t)(end - p) > klen + 3 && memcmp(p + 1, key, klen) == 0 && p[klen + 1] == '"' &&
            p[klen + 2] == ':') {
            p += klen + 3;
            if (*p != '"') {
                return 0;
            }
            const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
            int64_t ms;
            if (q == NULL || !gb_time_parse_rfc3339(p + 1, (size_t)(q - p - 1), &ms)) {
                return 0;
            }
            return ms;
        }
        p++;
    }
    return 0;
}

/* The load device an event's data is about, or -1. */
static int event_device(const char *json, size_t len)
{
    static const char head[] = "{\"serial\":\"";
    size_t plen = strlen(opt.prefix);
    if (len < sizeof(head) - 1 + plen || memcmp(json, head, sizeof(head) - 1) != 0 ||
        memcmp(json + sizeof(head) - 1, opt.prefix, plen) != 0) {
        return -1;
    }
    const char *p = json + sizeof(head) - 1 + plen;
    const char *end = json + len;
    unsigned n = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        n = n * 10 + (unsigned)(*p - '0');
        p++;
        digits++;
    }
    if (digits != 5 || p >= end || *p != '"' || n >= opt.devices) {
        return -1;
    }
    return (int)n;
}

static void sub_dispatch(conn_t *c, int64_t now_ms)
{
    if (c->data.len == 0) {
        return;
    }
    c->events++;
    int d = event_device(c->data.data, c->data.len);
    if (d < 0) {
        c->other_events++;
        return;
    }
    int64_t seen = parse_time_field(c->data.data, c->data.len, "last_seen");
    if (seen > 0) {
        int64_t lag = now_ms - seen;
        lag = lag < 0 ? 0 : lag;
        lag_hist[lag < LAG_BUCKETS ? lag : LAG_BUCKETS - 1]++;
        lag_count++;
        lag_max = lag > lag_max ? lag : lag_max;
        if (seen > c->seen_at[d]) {
            c->seen_at[d] = seen;
        }
    }
    device_t *dev = &devs[d];
    if (c->event_id > dev->event_id) {
        dev->event_id = c->event_id;
        dev->event = gb_xrealloc(dev->event, c->data.len + 1);
        memcpy(dev->event, c->data.data, c->data.len + 1);
        dev->event_len = c->data.len;
    }
}

static void sub_line(conn_t *c, const char *p, size_t len, int64_t now_ms)
{
    if (len > 0 && p[len - 1] == '\r') {
        len--;
    }
    if (len == 0) {
        sub_dispatch(c, now_ms);
        gb_buf_reset(&c->data);
        c->event_id = 0;
        return;
    }
    if (p[0] == ':') {
        c->heartbeats++;
        return;
    }
    const char *colon = memchr(p, ':', len);
    size_t flen = colon != NULL ? (size_t)(colon - p) : len;
    const char *v = colon != NULL ? colon + 1 : p + len;
    if (v < p + len && *v == ' ') {
        v++;
    }
    size_t vlen = (size_t)(p + len - v);
    if (flen == 4 && memcmp(p, "data", 4) == 0) {
        if (c->data.len > 0) {
            gb_buf_append(&c->data, "\n", 1);
        }
        gb_buf_append(&c->data, v, vlen);
    } else if (flen == 2 && memcmp(p, "id", 2) == 0) {
        uint64_t id = 0;
        if (gb_str_to_u64((gb_str_t){v, vlen}, UINT64_MAX, &id)) {
            c->event_id = id;
        }
    }
    /* event: (always "device"), retry: and anything else carry nothing to count. */
}

static int on_sub_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = gb_container_of(p, conn_t, parser);
    int64_t now_ms = gb_time_now_ms();
    const char *end = at + len;
    c->bytes += len;
    while (at < end) {
        const char *nl = memchr(at, '\n', (size_t)(end - at));
        if (nl == NULL) {
            gb_buf_append(&c->line, at, (size_t)(end - at));
            break;
        }
        if (c->line.len > 0) {
            gb_buf_append(&c->line, at, (size_t)(nl - at));
            sub_line(c, c->line.data, c->line.len, now_ms);
            gb_buf_reset(&c->line);
        } else {
            sub_line(c, at, (size_t)(nl - at), now_ms);
        }
        at = nl + 1;
    }
    return 0;
}

static int on_sub_headers_complete(llhttp_t *p)
{
    conn_t *c = gb_container_of(p, conn_t, parser);
    if (p->status_code != 200) {
        fail("subscriber %u: GET /api/v1/stream answered %d", c->index, p->status_code);
    }
    c->streaming = true;
    return 0;
}

static void on_sub_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = gb_container_of((uv_tcp_t *)stream, conn_t, tcp);
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        if (!c->streaming) {
            fail("subscriber %u: the connection ended before the stream began: %s", c->index,
                 uv_strerror((int)nread));
        }
        if (phase < PHASE_DONE) {
            c->dropped = true;
            fprintf(stderr,
                    "bench_sse: subscriber %u: the server ended the stream (%s) after %" PRIu64
                    " events\n",
                    c->index, nread == UV_EOF ? "closed" : uv_strerror((int)nread), c->events);
        }
        conn_close(c);
        return;
    }
    llhttp_errno_t rc = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (rc != HPE_OK) {
        fail("subscriber %u: bad HTTP response: %s", c->index, llhttp_errno_name(rc));
    }
}

/* ---- the load: posts and detail fetches ---- */

static int on_load_message_begin(llhttp_t *p)
{
    conn_t *c = gb_container_of(p, conn_t, parser);
    gb_buf_reset(&c->body);
    c->message_done = false;
    return 0;
}

static int on_load_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = gb_container_of(p, conn_t, parser);
    if (c->body.len + len > MAX_BODY) {
        return HPE_USER;
    }
    gb_buf_append(&c->body, at, len);
    return 0;
}

static int on_load_message_complete(llhttp_t *p)
{
    conn_t *c = gb_container_of(p, conn_t, parser);
    c->message_done = true;
    c->keep_alive = llhttp_should_keep_alive(p) != 0;
    return HPE_PAUSED;
}

static void show_mismatch(const device_t *dev, const char *detail, size_t dlen)
{
    size_t n = dev->event_len > 0 ? dev->event_len - 1 : 0;
    size_t i = 0;
    while (i < n && i < dlen && dev->event[i] == detail[i]) {
        i++;
    }
    size_t from = i > 60 ? i - 60 : 0;
    fprintf(stderr,
            "bench_sse: %s: the newest event differs from the detail at byte %zu:\n"
            "  event:  ...%.*s\n  detail: ...%.*s\n",
            dev->serial, i, (int)((n - from) < 160 ? n - from : 160), dev->event + from,
            (int)((dlen - from) < 160 ? dlen - from : 160), detail + from);
}

static void load_answered(conn_t *c)
{
    int status = c->parser.status_code;
    device_t *dev = &devs[c->dev];
    if (c->req == REQ_POST) {
        uint64_t us = (now_ns() - c->sent_ns) / 1000;
        ack_hist[us / 100 < ACK_BUCKETS ? us / 100 : ACK_BUCKETS - 1]++;
        ack_count++;
        ack_max_us = (int64_t)us > ack_max_us ? (int64_t)us : ack_max_us;
        dev->in_flight = false;
        in_flight--;
        if (status == 200) {
            acked_msgs += opt.batch;
            reqs_acked++;
            dev->acked_at = c->req_at;
            last_ack_ns = now_ns();
        } else {
            post_errors++;
            note_error("POST for %s answered %d: %.*s", dev->serial, status,
                       (int)(c->body.len < 300 ? c->body.len : 300),
                       c->body.data != NULL ? c->body.data : "");
        }
    } else if (c->req == REQ_DETAIL) {
        details_done++;
        dev->detail_done = true;
        size_t n = dev->event_len;
        if (status != 200) {
            details_failed++;
            note_error("GET /api/v1/devices/%s answered %d", dev->serial, status);
        } else if (dev->event != NULL && n >= 2 && c->body.len > n &&
                   memcmp(c->body.data, dev->event, n - 1) == 0 && c->body.data[n - 1] == ',') {
            details_equal++;
        } else if (mismatch_shown++ < 3) {
            if (dev->event == NULL) {
                fprintf(stderr, "bench_sse: %s: no event was received\n", dev->serial);
            } else {
                show_mismatch(dev, c->body.data, c->body.len);
            }
        }
    }
    c->req = REQ_NONE;
}

static void on_load_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = gb_container_of((uv_tcp_t *)stream, conn_t, tcp);
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        load_request_lost(c, nread == UV_EOF ? "closed by the server" : uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    if (c->req == REQ_NONE) {
        load_request_lost(c, "bytes nobody asked for");
        conn_close(c);
        return;
    }
    llhttp_errno_t rc = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (rc == HPE_PAUSED && c->message_done) {
        load_answered(c);
        if (c->keep_alive) {
            llhttp_resume(&c->parser);
        } else {
            conn_close(c);
        }
    } else if (rc != HPE_OK) {
        load_request_lost(c, llhttp_errno_name(rc));
        conn_close(c);
    }
}

static void on_connected(uv_connect_t *req, int status)
{
    conn_t *c = gb_container_of(req, conn_t, connect_req);
    if (status < 0) {
        if (status == UV_ECANCELED) {
            return;
        }
        fail("%s %u: connect to %s:%d failed: %s", c->kind == KIND_SUB ? "subscriber" : "load",
             c->index, opt.host, opt.port, uv_strerror(status));
    }
    c->connected = true;
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc,
                           c->kind == KIND_SUB ? on_sub_read : on_load_read);
    if (rc < 0) {
        fail("read: %s", uv_strerror(rc));
    }
    if (c->kind == KIND_SUB) {
        gb_buf_reset(&c->out);
        gb_buf_appendf(&c->out,
                       "GET /api/v1/stream?access_token=%s HTTP/1.1\r\nHost: %s:%d\r\n"
                       "Accept: text/event-stream\r\n\r\n",
                       opt.viewer, opt.host, opt.port);
        conn_send(c);
    }
}

static void conn_start(conn_t *c)
{
    int rc = uv_tcp_init(loop, &c->tcp);
    if (rc < 0) {
        fail("tcp: %s", uv_strerror(rc));
    }
    c->open = true;
    c->connected = false;
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_RESPONSE, c->kind == KIND_SUB ? &sub_settings : &load_settings);
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&addr, on_connected);
    if (rc < 0) {
        fail("connect: %s", uv_strerror(rc));
    }
}

/* A load connection free to carry a request (reopened when the server closed it), or NULL. */
static conn_t *free_load_conn(void)
{
    for (unsigned i = 0; i < opt.connections; i++) {
        conn_t *c = &loads[i];
        if (!c->open) {
            conn_start(c);
            continue;
        }
        if (c->connected && c->req == REQ_NONE) {
            return c;
        }
    }
    return NULL;
}

static void post_next(conn_t *c, unsigned d)
{
    device_t *dev = &devs[d];
    gb_buf_t body;
    gb_buf_init(&body);
    gb_buf_appendf(&body, "{\"protocol\":1,\"device\":{\"serial\":\"%s\"},\"messages\":[",
                   dev->serial);
    for (unsigned k = 0; k < opt.batch; k++) {
        int64_t at = gb_time_now_ms();
        if (at <= dev->last_at) {
            at = dev->last_at + 1;
        }
        dev->last_at = at;
        if (k > 0) {
            gb_buf_append(&body, ",", 1);
        }
        append_message(&body, d, dev->next_seq++, at);
    }
    gb_buf_append(&body, "]}", 2);
    gb_buf_reset(&c->out);
    gb_buf_appendf(&c->out,
                   "POST /api/v1/agent/messages HTTP/1.1\r\nHost: %s:%d\r\n"
                   "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\n\r\n",
                   opt.host, opt.port, opt.agent, body.len);
    gb_buf_append(&c->out, body.data, body.len);
    gb_buf_dispose(&body);
    c->req = REQ_POST;
    c->dev = (int)d;
    c->req_at = dev->last_at;
    c->sent_ns = now_ns();
    dev->in_flight = true;
    in_flight++;
    max_in_flight = in_flight > max_in_flight ? in_flight : max_in_flight;
    sent_msgs += opt.batch;
    reqs_sent++;
    conn_send(c);
}

static void get_detail(conn_t *c, unsigned d)
{
    gb_buf_reset(&c->out);
    gb_buf_appendf(&c->out,
                   "GET /api/v1/devices/%s HTTP/1.1\r\nHost: %s:%d\r\n"
                   "Authorization: Bearer %s\r\n\r\n",
                   devs[d].serial, opt.host, opt.port, opt.viewer);
    c->req = REQ_DETAIL;
    c->dev = (int)d;
    conn_send(c);
}

/* ---- the steps ---- */

static void pace(void)
{
    /* Messages due by now at the rate, handed out a request (K messages) at a time. */
    uint64_t due = (uint64_t)(since_s(load_t0_ns) * opt.rate);
    bool starved = false;
    while (due_msgs + opt.batch <= due) {
        unsigned d = next_dev;
        if (devs[d].in_flight) {
            starved = true; /* its previous request is still unanswered: keep the order */
            break;
        }
        conn_t *c = free_load_conn();
        if (c == NULL) {
            starved = true;
            break;
        }
        post_next(c, d);
        next_dev = (next_dev + 1) % opt.devices;
        due_msgs += opt.batch;
    }
    if (starved) {
        behind_ticks++;
    }
    if (due > due_msgs && due - due_msgs > max_backlog) {
        max_backlog = due - due_msgs;
    }
}

static bool everyone_caught_up(void)
{
    for (unsigned s = 0; s < opt.subscribers; s++) {
        const conn_t *c = &subs[s];
        if (c->dropped) {
            continue;
        }
        for (unsigned d = 0; d < opt.devices; d++) {
            if (devs[d].acked_at != 0 && c->seen_at[d] != devs[d].acked_at) {
                return false;
            }
        }
    }
    return true;
}

static void on_tick(uv_timer_t *t)
{
    GB_UNUSED(t);
    switch (phase) {
    case PHASE_CONNECT: {
        unsigned ready = 0;
        for (unsigned s = 0; s < opt.subscribers; s++) {
            ready += subs[s].streaming ? 1u : 0u;
        }
        unsigned loads_ready = 0;
        for (unsigned i = 0; i < opt.connections; i++) {
            loads_ready += loads[i].connected ? 1u : 0u;
        }
        if (ready == opt.subscribers && loads_ready == opt.connections) {
            set_phase(PHASE_LOAD);
            load_t0_ns = phase_ns;
        } else if (since_s(phase_ns) > 30) {
            fail("after 30 s, %u of %u subscribers and %u of %u load connections are ready", ready,
                 opt.subscribers, loads_ready, opt.connections);
        }
        break;
    }
    case PHASE_LOAD:
        if (since_s(load_t0_ns) >= opt.seconds) {
            load_s = since_s(load_t0_ns);
            set_phase(PHASE_DRAIN);
        } else {
            pace();
        }
        break;
    case PHASE_DRAIN:
        if (in_flight == 0) {
            set_phase(PHASE_SETTLE);
        } else if (since_s(phase_ns) > 60) {
            fail("%u requests still unanswered 60 s after the load ended", in_flight);
        }
        break;
    case PHASE_SETTLE:
        /* The check walks every subscriber's devices: a few times a second is enough. */
        if (++settle_checks % 20 == 0 && everyone_caught_up()) {
            settled = true;
            settle_ms = (now_ns() - last_ack_ns) / 1000000;
            set_phase(PHASE_DETAIL);
        } else if (since_s(phase_ns) >= opt.settle) {
            settle_ms = (now_ns() - last_ack_ns) / 1000000;
            set_phase(PHASE_DETAIL);
        }
        break;
    case PHASE_DETAIL: {
        conn_t *c;
        while (detail_next < opt.devices && (c = free_load_conn()) != NULL) {
            unsigned d = detail_next++;
            if (devs[d].acked_at != 0 && !devs[d].detail_done) {
                get_detail(c, d);
            }
        }
        bool busy = false;
        for (unsigned i = 0; i < opt.connections; i++) {
            busy = busy || loads[i].req != REQ_NONE;
        }
        if (detail_next >= opt.devices && !busy) {
            set_phase(PHASE_DONE);
            for (unsigned s = 0; s < opt.subscribers; s++) {
                subs[s].by_us = true;
                conn_close(&subs[s]);
            }
            for (unsigned i = 0; i < opt.connections; i++) {
                conn_close(&loads[i]);
            }
            uv_close((uv_handle_t *)&tick, NULL);
        } else if (since_s(phase_ns) > 120) {
            fail("the device details were not all answered within 120 s");
        }
        break;
    }
    case PHASE_DONE:
        break;
    }
}

/* ---- the report ---- */

static double hist_pct(const uint64_t *h, size_t n, uint64_t count, double pct)
{
    if (count == 0) {
        return -1;
    }
    uint64_t want = (uint64_t)((double)count * pct / 100.0 + 0.999999);
    uint64_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc += h[i];
        if (acc >= want) {
            return (double)i;
        }
    }
    return (double)(n - 1);
}

static void report(void)
{
    unsigned changed = 0;
    for (unsigned d = 0; d < opt.devices; d++) {
        changed += devs[d].acked_at != 0 ? 1u : 0u;
    }
    FILE *per_sub = NULL;
    if (opt.subscriber_report != NULL) {
        per_sub = fopen(opt.subscriber_report, "w");
        if (per_sub == NULL) {
            fail("cannot write %s", opt.subscriber_report);
        }
        fputs("subscriber events other_events heartbeats bytes dropped missing behind\n", per_sub);
    }
    unsigned dropped = 0, complete = 0;
    uint64_t missing = 0, behind = 0, ev_min = UINT64_MAX, ev_max = 0, ev_sum = 0, other = 0;
    uint64_t hb = 0, bytes = 0;
    for (unsigned s = 0; s < opt.subscribers; s++) {
        const conn_t *c = &subs[s];
        dropped += c->dropped ? 1u : 0u;
        unsigned miss = 0, beh = 0;
        for (unsigned d = 0; d < opt.devices; d++) {
            if (devs[d].acked_at == 0) {
                continue;
            }
            if (c->seen_at[d] == 0) {
                miss++;
            } else if (c->seen_at[d] != devs[d].acked_at) {
                beh++;
            }
        }
        missing += miss;
        behind += beh;
        if (per_sub != NULL) {
            fprintf(per_sub, "%u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %d %u %u\n", s,
                    c->events, c->other_events, c->heartbeats, c->bytes, c->dropped ? 1 : 0, miss,
                    beh);
        }
        complete += (miss == 0 && beh == 0 && !c->dropped) ? 1u : 0u;
        ev_min = c->events < ev_min ? c->events : ev_min;
        ev_max = c->events > ev_max ? c->events : ev_max;
        ev_sum += c->events;
        other += c->other_events;
        hb += c->heartbeats;
        bytes += c->bytes;
    }
    if (per_sub != NULL && fclose(per_sub) != 0) {
        fail("cannot write %s", opt.subscriber_report);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("GB_SSE subscribers=%u dropped=%u complete=%u devices=%u changed=%u batch=%u "
           "rate_goal=%.0f load_s=%.2f sent_msgs=%" PRIu64 " acked_msgs=%" PRIu64
           " msgs_per_s=%.1f requests=%" PRIu64 " post_errors=%" PRIu64 " conn_errors=%" PRIu64
           " behind_ticks=%" PRIu64 " max_backlog=%" PRIu64
           " max_in_flight=%u ack_p50_ms=%.1f ack_p99_ms=%.1f"
           " ack_max_ms=%.1f events=%" PRIu64 " events_min=%" PRIu64 " events_max=%" PRIu64
           " other_events=%" PRIu64 " heartbeats=%" PRIu64 " mbytes=%.1f lag_p50_ms=%.0f"
           " lag_p99_ms=%.0f lag_max_ms=%" PRId64 " missing=%" PRIu64 " behind=%" PRIu64
           " settled=%d settle_ms=%" PRIu64 " details=%u details_equal=%u details_failed=%u"
           " client_cpu_s=%.2f\n",
           opt.subscribers, dropped, complete, opt.devices, changed, opt.batch, opt.rate, load_s,
           sent_msgs, acked_msgs, load_s > 0 ? (double)acked_msgs / load_s : 0.0, reqs_sent,
           post_errors, conn_errors, behind_ticks, max_backlog, max_in_flight,
           hist_pct(ack_hist, ACK_BUCKETS, ack_count, 50) / 10.0,
           hist_pct(ack_hist, ACK_BUCKETS, ack_count, 99) / 10.0, (double)ack_max_us / 1000.0,
           ev_sum, ev_min == UINT64_MAX ? 0 : ev_min, ev_max, other, hb, (double)bytes / 1048576.0,
           hist_pct(lag_hist, LAG_BUCKETS, lag_count, 50),
           hist_pct(lag_hist, LAG_BUCKETS, lag_count, 99), lag_max, missing, behind,
           settled ? 1 : 0, settle_ms, details_done, details_equal, details_failed, cpu);
}

/* ---- command line ---- */

static _Noreturn void usage(int status)
{
    fputs("usage: bench_sse --port P [--host 127.0.0.1] [--subscribers 200] [--rate 1000]\n"
          "                 [--seconds 20] [--devices 1000] [--batch 1] [--connections 200]\n"
          "                 [--settle 15] [--prefix SSE] [--subscriber-report FILE]\n"
          "       GB_BENCH_VIEWER: a viewer token; GB_BENCH_TOKEN: an agent token\n",
          status == 0 ? stdout : stderr);
    exit(status);
}

static double number_arg(const char *name, const char *v, double lo, double hi)
{
    char *end;
    double x = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || !(x >= lo && x <= hi)) {
        fprintf(stderr, "bench_sse: %s: a number from %g to %g\n", name, lo, hi);
        exit(2);
    }
    return x;
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(0);
        }
        if (i + 1 >= argc) {
            usage(2);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--host") == 0) {
            opt.host = v;
        } else if (strcmp(a, "--port") == 0) {
            opt.port = (int)number_arg(a, v, 1, 65535);
        } else if (strcmp(a, "--subscribers") == 0) {
            opt.subscribers = (unsigned)number_arg(a, v, 1, 50000);
        } else if (strcmp(a, "--rate") == 0) {
            opt.rate = number_arg(a, v, 1, 1e6);
        } else if (strcmp(a, "--seconds") == 0) {
            opt.seconds = number_arg(a, v, 0.1, 3600);
        } else if (strcmp(a, "--devices") == 0) {
            opt.devices = (unsigned)number_arg(a, v, 1, 99999);
        } else if (strcmp(a, "--batch") == 0) {
            opt.batch = (unsigned)number_arg(a, v, 1, 500);
        } else if (strcmp(a, "--connections") == 0) {
            opt.connections = (unsigned)number_arg(a, v, 1, 10000);
        } else if (strcmp(a, "--settle") == 0) {
            opt.settle = number_arg(a, v, 0, 600);
        } else if (strcmp(a, "--prefix") == 0) {
            opt.prefix = v;
        } else if (strcmp(a, "--subscriber-report") == 0) {
            opt.subscriber_report = v;
        } else {
            usage(2);
        }
    }
    if (opt.port == 0 || strlen(opt.prefix) > 20) {
        usage(2);
    }
    opt.viewer = getenv("GB_BENCH_VIEWER");
    opt.agent = getenv("GB_BENCH_TOKEN");
    if (opt.viewer == NULL || *opt.viewer == '\0' || opt.agent == NULL || *opt.agent == '\0') {
        fputs("bench_sse: GB_BENCH_VIEWER and GB_BENCH_TOKEN must hold a viewer and an agent "
              "token\n",
              stderr);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    loop = uv_default_loop();
    int rc = uv_ip4_addr(opt.host, opt.port, &addr);
    if (rc < 0) {
        fail("--host %s: %s", opt.host, uv_strerror(rc));
    }
    llhttp_settings_init(&sub_settings);
    sub_settings.on_headers_complete = on_sub_headers_complete;
    sub_settings.on_body = on_sub_body;
    llhttp_settings_init(&load_settings);
    load_settings.on_message_begin = on_load_message_begin;
    load_settings.on_body = on_load_body;
    load_settings.on_message_complete = on_load_message_complete;
    lag_hist = gb_xcalloc(LAG_BUCKETS, sizeof(*lag_hist));
    ack_hist = gb_xcalloc(ACK_BUCKETS, sizeof(*ack_hist));

    devs = gb_xcalloc(opt.devices, sizeof(*devs));
    for (unsigned d = 0; d < opt.devices; d++) {
        snprintf(devs[d].serial, sizeof(devs[d].serial), "%s%05u", opt.prefix, d);
        devs[d].next_seq = 1;
    }
    subs = gb_xcalloc(opt.subscribers, sizeof(*subs));
    for (unsigned s = 0; s < opt.subscribers; s++) {
        conn_t *c = &subs[s];
        c->kind = KIND_SUB;
        c->index = s;
        c->seen_at = gb_xcalloc(opt.devices, sizeof(*c->seen_at));
        gb_buf_init(&c->out);
        gb_buf_init(&c->line);
        gb_buf_init(&c->data);
        conn_start(c);
    }
    loads = gb_xcalloc(opt.connections, sizeof(*loads));
    for (unsigned i = 0; i < opt.connections; i++) {
        conn_t *c = &loads[i];
        c->kind = KIND_LOAD;
        c->index = i;
        gb_buf_init(&c->out);
        gb_buf_init(&c->body);
        conn_start(c);
    }
    uv_timer_init(loop, &tick);
    set_phase(PHASE_CONNECT);
    uv_timer_start(&tick, on_tick, TICK_MS, TICK_MS);
    uv_run(loop, UV_RUN_DEFAULT);
    report();
    return 0;
}
