/* transport: glovebox-sim's HTTP/1.1 client. Invariants: a device has at most one request in
 * flight, and its queue always starts at acked_seq + 1, so whatever fails is simply sent again
 * from the front of the queue; a connection serves one request at a time (no pipelining) and
 * is reused while the server keeps it alive; every handle is closed before the transport is
 * freed, in the close callback of the last one. */
#include "transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <llhttp.h>

#include "model.h"
#include "util/util.h"

#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS   10000

typedef struct txdev {
    gb_buf_t q;     /* JSON messages not yet acknowledged, back to back */
    uint32_t *lens; /* length of each, from lens[head] */
    size_t head;
    size_t n; /* messages in the queue */
    size_t cap;
    uint64_t first_seq; /* seq of the message at the front (acked + 1) */
    uint64_t acked;     /* the server's acked_seq */
    uint32_t inflight;  /* messages in the request in flight; 0 when none */
    bool ready;         /* in the ready FIFO */
    bool warned;
} txdev_t;

enum conn_state {
    C_CLOSED = 0, /* no socket: the next request connects first */
    C_CONNECTING, /* connect in progress; the request waits in out */
    C_IDLE,       /* connected, keep-alive, no request */
    C_BUSY,       /* a request is written or awaiting its response */
    C_CLOSING,    /* the socket is closing; back to C_CLOSED in its close callback */
};

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* the request's time limit */
    uv_connect_t connect;
    uv_write_t write;
    llhttp_t parser;
    gb_sim_tx_t *tx;
    enum conn_state state;
    unsigned open_handles; /* freed when 0 during shutdown */
    bool tcp_open;
    bool done; /* a complete response arrived */
    bool keep_alive;
    uint32_t dev; /* the device whose batch is in flight */
    uint32_t n_msgs;
    gb_buf_t out;
    gb_buf_t body;
    char readbuf[65536];
} conn_t;

struct gb_sim_tx {
    uv_loop_t *loop;
    gb_sim_tx_config_t cfg;
    char host_header[300];
    char path[512];
    char *auth;
    struct sockaddr_storage addr;
    txdev_t *devs;
    uint32_t n;
    const char *const *serials;
    conn_t **conns;
    uint32_t n_conns;
    uint32_t *ready; /* FIFO ring of devices with something to send */
    uint32_t ready_head;
    uint32_t ready_len;
    /* Backoff is the transport's, not a device's: 503s and refused connections come from the
     * one server, so every device waits together instead of thousands retrying on their own
     * clocks. */
    uint32_t failures;   /* failure rounds since the last 200: the backoff exponent */
    int64_t pause_until; /* no new request before this (loop ms) */
    uv_timer_t backoff;  /* fires when the pause ends */
    uv_timer_t watchdog; /* once a second: give up after give_up_s without progress */
    unsigned open_handles;
    bool closing;
    bool failed;
    char error[1024];
    char last_problem[512];
    uint64_t pending;
    int64_t last_progress;
    uint64_t jitter;
    gb_sim_tx_stats_t stats;
    gb_sim_tx_progress_cb progress;
    void *arg;
};

static void dispatch(gb_sim_tx_t *tx);
static void conn_close_tcp(conn_t *c);

/* ------------------------------------------------------------------------------------------ */
/* device queues                                                                              */
/* ------------------------------------------------------------------------------------------ */

static void ready_push(gb_sim_tx_t *tx, uint32_t dev)
{
    txdev_t *d = &tx->devs[dev];
    if (d->ready || d->inflight > 0 || d->n == 0) {
        return;
    }
    d->ready = true;
    tx->ready[(tx->ready_head + tx->ready_len++) % tx->n] = dev;
}

static bool ready_pop(gb_sim_tx_t *tx, uint32_t *dev)
{
    if (tx->ready_len == 0) {
        return false;
    }
    *dev = tx->ready[tx->ready_head];
    tx->ready_head = (tx->ready_head + 1) % tx->n;
    tx->ready_len--;
    tx->devs[*dev].ready = false;
    return true;
}

void gb_sim_tx_enqueue(gb_sim_tx_t *tx, uint32_t device, uint64_t seq, const char *json, size_t len)
{
    txdev_t *d = &tx->devs[device];
    if (d->n == 0) {
        d->first_seq = seq;
        d->head = 0;
    }
    GB_ASSERT(seq == d->first_seq + d->n);
    if (d->head + d->n == d->cap) {
        if (d->head > 0) {
            memmove(d->lens, d->lens + d->head, d->n * sizeof(*d->lens));
            d->head = 0;
        } else {
            d->cap = d->cap ? d->cap * 2 : 32;
            d->lens = gb_xrealloc(d->lens, d->cap * sizeof(*d->lens));
        }
    }
    d->lens[d->head + d->n++] = (uint32_t)len;
    gb_buf_append(&d->q, json, len);
    tx->pending++;
    if (tx->pending == 1) {
        tx->last_progress = (int64_t)uv_now(tx->loop); /* the give-up clock starts with work */
    }
    ready_push(tx, device);
}

void gb_sim_tx_flush(gb_sim_tx_t *tx)
{
    dispatch(tx);
}

/* Drops the messages up to acked_seq from the front of the queue. */
static void ack(gb_sim_tx_t *tx, uint32_t dev, uint64_t acked)
{
    txdev_t *d = &tx->devs[dev];
    if (acked > d->acked) {
        d->acked = acked;
    }
    if (d->n == 0 || acked < d->first_seq) {
        return;
    }
    uint64_t k = acked - d->first_seq + 1;
    if (k > d->n) {
        k = d->n;
    }
    size_t bytes = 0;
    for (uint64_t i = 0; i < k; i++) {
        bytes += d->lens[d->head + i];
    }
    gb_buf_consume(&d->q, bytes);
    d->head += k;
    d->n -= k;
    d->first_seq += k;
    tx->pending -= k;
    tx->stats.messages += k;
    if (d->n == 0) {
        d->head = 0;
        gb_buf_reset(&d->q);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* backoff                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static void on_backoff_timer(uv_timer_t *timer)
{
    dispatch(gb_container_of(timer, gb_sim_tx_t, backoff));
}

/* The request of c failed without an answer to trust: the device goes back in line (it will
 * send everything after acked_seq again) and the transport pauses. Failures that arrive during
 * a pause belong to the same round and do not lengthen it. */
static void request_failed(conn_t *c, const char *why)
{
    gb_sim_tx_t *tx = c->tx;
    txdev_t *d = &tx->devs[c->dev];
    int64_t now = (int64_t)uv_now(tx->loop);

    snprintf(tx->last_problem, sizeof(tx->last_problem), "%s", why);
    d->inflight = 0;
    c->n_msgs = 0;
    tx->stats.retries++;
    ready_push(tx, c->dev);
    if (now < tx->pause_until) {
        return;
    }
    tx->failures++;
    gb_log(tx->failures == 1 ? GB_LOG_WARN : GB_LOG_DEBUG, "sim",
           "request for %s failed (%s); pausing, then sending again from acked_seq",
           tx->serials[c->dev], why);
    int64_t delay = BACKOFF_FIRST_MS;
    for (uint32_t i = 1; i < tx->failures && delay < BACKOFF_MAX_MS; i++) {
        delay *= 2;
    }
    if (delay > BACKOFF_MAX_MS) {
        delay = BACKOFF_MAX_MS;
    }
    /* Jitter (50 % .. 100 %) so that several simulators sharing a server do not retry in step. */
    tx->jitter = tx->jitter * 6364136223846793005ull + 1442695040888963407ull;
    delay = delay / 2 + (int64_t)((tx->jitter >> 33) % (uint64_t)(delay / 2 + 1));
    tx->pause_until = now + delay;
    if (!tx->closing) {
        uv_timer_start(&tx->backoff, on_backoff_timer, (uint64_t)delay, 0);
    }
}

static void fatal(gb_sim_tx_t *tx, const char *fmt, ...) GB_PRINTF(2, 3);

static void fatal(gb_sim_tx_t *tx, const char *fmt, ...)
{
    if (tx->failed) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tx->error, sizeof(tx->error), fmt, ap);
    va_end(ap);
    tx->failed = true;
    if (tx->progress != NULL) {
        tx->progress(tx->arg);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* responses                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* The server's error body, trimmed for a log line. */
static void error_text(const conn_t *c, char *out, size_t n)
{
    json_error_t jerr;
    json_t *root = json_loadb(c->body.data ? c->body.data : "", c->body.len, 0, &jerr);
    json_t *e = root ? json_object_get(root, "error") : NULL;
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code != NULL) {
        json_t *field = json_object_get(e, "field"), *index = json_object_get(e, "index");
        snprintf(out, n, "%s: %s%s%s%s", code, msg ? msg : "",
                 json_is_string(field) ? " (field " : "",
                 json_is_string(field) ? json_string_value(field) : "",
                 json_is_string(field) ? ")" : "");
        if (json_is_integer(index)) {
            size_t len = strlen(out);
            snprintf(out + len, n - len, " [message index %lld]",
                     (long long)json_integer_value(index));
        }
    } else {
        snprintf(out, n, "%.*s", (int)(c->body.len < 300 ? c->body.len : 300),
                 c->body.data ? c->body.data : "");
    }
    json_decref(root);
}

static void handle_response(conn_t *c)
{
    gb_sim_tx_t *tx = c->tx;
    txdev_t *d = &tx->devs[c->dev];
    int status = c->parser.status_code;
    char text[600];

    if (status == 200) {
        json_error_t jerr;
        json_t *root = json_loadb(c->body.data ? c->body.data : "", c->body.len, 0, &jerr);
        json_t *a = root ? json_object_get(root, "acked_seq") : NULL;
        if (!json_is_integer(a) || json_integer_value(a) < 0) {
            json_decref(root);
            fatal(tx, "the server answered 200 without an acked_seq (body: %.200s)",
                  c->body.data ? c->body.data : "");
            return;
        }
        uint64_t acked = (uint64_t)json_integer_value(a);
        json_decref(root);
        uint64_t last_sent = d->first_seq + c->n_msgs - 1;
        if (acked > last_sent && d->first_seq + d->n - 1 < acked && !d->warned) {
            /* The server held higher seqs for this serial before we sent them: a database that
             * already saw these serials. The server ignores what it holds, so this run's
             * messages for the device are lost to it: say so. */
            d->warned = true;
            tx->stats.ahead++;
            gb_log(GB_LOG_WARN, "sim",
                   "server already holds seq %llu for %s (a previous run with the same serials? "
                   "use another --seed or a --serial-prefix)",
                   (unsigned long long)acked, tx->serials[c->dev]);
        } else if (acked < last_sent) {
            gb_log(GB_LOG_WARN, "sim",
                   "server acknowledged %s only up to seq %llu of %llu: resending",
                   tx->serials[c->dev], (unsigned long long)acked, (unsigned long long)last_sent);
        }
        ack(tx, c->dev, acked);
        d->inflight = 0;
        c->n_msgs = 0;
        if (tx->failures > 0) {
            gb_log(GB_LOG_WARN, "sim", "server answers again after %u failed rounds", tx->failures);
            tx->failures = 0;
        }
        tx->stats.requests++;
        tx->last_progress = (int64_t)uv_now(tx->loop);
        ready_push(tx, c->dev);
        if (tx->progress != NULL) {
            tx->progress(tx->arg);
        }
        return;
    }
    error_text(c, text, sizeof(text));
    if (status == 503 || status == 502 || status == 504 || status == 500 || status == 429 ||
        status == 408) {
        tx->stats.unavailable++;
        char why[700];
        snprintf(why, sizeof(why), "HTTP %d %s", status, text);
        request_failed(c, why);
        return;
    }
    if (status == 401) {
        fatal(tx, "the server refused the token (401 unauthorized): check --token");
    } else if (status == 403) {
        fatal(tx, "the token may not post agent messages (403 forbidden): use a token with the "
                  "agent role");
    } else if (status == 400 || status == 413 || status == 415 || status == 422) {
        fatal(tx, "the server rejected a request for %s (HTTP %d: %s); a protocol bug, stopping",
              tx->serials[c->dev], status, text);
    } else if (status == 404) {
        fatal(tx, "the server has no agent endpoint at %s (HTTP 404): check --server", tx->path);
    } else {
        fatal(tx, "unexpected HTTP %d from the server: %s", status, text);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* connections                                                                                */
/* ------------------------------------------------------------------------------------------ */

static int on_http_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = gb_container_of(p, conn_t, parser);
    if (c->body.len + len > (1u << 20)) {
        return HPE_USER; /* no answer of ours is this large */
    }
    gb_buf_append(&c->body, at, len);
    return 0;
}

static int on_http_message_begin(llhttp_t *p)
{
    conn_t *c = gb_container_of(p, conn_t, parser);
    gb_buf_reset(&c->body);
    return 0;
}

static int on_http_message_complete(llhttp_t *p)
{
    conn_t *c = gb_container_of(p, conn_t, parser);
    c->done = true;
    c->keep_alive = llhttp_should_keep_alive(p) != 0;
    return HPE_PAUSED; /* one response at a time: handled once execute returns */
}

static llhttp_settings_t http_settings;

static void on_conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = gb_container_of(handle, conn_t, tcp);
    GB_UNUSED(suggested);
    buf->base = c->readbuf;
    buf->len = sizeof(c->readbuf);
}

static void finish_request(conn_t *c)
{
    uv_timer_stop(&c->timer);
    bool keep = c->keep_alive && !c->tx->closing;
    handle_response(c);
    if (c->tx->failed) {
        keep = false;
    }
    if (keep) {
        c->state = C_IDLE;
        llhttp_resume(&c->parser);
    } else {
        conn_close_tcp(c);
    }
    dispatch(c->tx);
}

static void on_conn_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = gb_container_of(stream, conn_t, tcp);

    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        if (c->state == C_BUSY) {
            char why[128];
            snprintf(why, sizeof(why), "connection: %s", uv_strerror((int)nread));
            c->tx->stats.conn_errors++;
            request_failed(c, why);
        }
        conn_close_tcp(c);
        dispatch(c->tx);
        return;
    }
    if (c->state != C_BUSY) {
        conn_close_tcp(c); /* bytes nobody asked for */
        return;
    }
    llhttp_errno_t rc = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (rc == HPE_PAUSED && c->done) {
        finish_request(c);
    } else if (rc != HPE_OK) {
        char why[160];
        snprintf(why, sizeof(why), "bad HTTP response: %s", llhttp_errno_name(rc));
        c->tx->stats.conn_errors++;
        request_failed(c, why);
        conn_close_tcp(c);
        dispatch(c->tx);
    }
}

static void on_conn_timeout(uv_timer_t *timer)
{
    conn_t *c = gb_container_of(timer, conn_t, timer);
    if (c->state == C_BUSY || c->state == C_CONNECTING) {
        c->tx->stats.conn_errors++;
        request_failed(c, "timeout");
        conn_close_tcp(c);
        dispatch(c->tx);
    }
}

static void on_conn_written(uv_write_t *req, int status)
{
    conn_t *c = gb_container_of(req, conn_t, write);
    if (status < 0 && c->state == C_BUSY) {
        char why[128];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(status));
        c->tx->stats.conn_errors++;
        request_failed(c, why);
        conn_close_tcp(c);
        dispatch(c->tx);
    }
}

static void send_request(conn_t *c)
{
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    c->state = C_BUSY;
    c->done = false;
    c->tx->stats.bytes_sent += c->out.len;
    int rc = uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_conn_written);
    if (rc < 0) {
        char why[128];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(rc));
        c->tx->stats.conn_errors++;
        request_failed(c, why);
        conn_close_tcp(c);
    }
}

static void on_conn_connected(uv_connect_t *req, int status)
{
    conn_t *c = gb_container_of(req, conn_t, connect);
    if (c->state != C_CONNECTING) {
        return; /* timed out meanwhile; the socket is closing */
    }
    if (status < 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(status));
        c->tx->stats.conn_errors++;
        request_failed(c, why);
        conn_close_tcp(c);
        dispatch(c->tx);
        return;
    }
    llhttp_init(&c->parser, HTTP_RESPONSE, &http_settings);
    uv_read_start((uv_stream_t *)&c->tcp, on_conn_alloc, on_conn_read);
    send_request(c);
}

static void free_tx(gb_sim_tx_t *tx);

/* One of the transport's own handles has closed (during shutdown). */
static void tx_handle_closed(gb_sim_tx_t *tx)
{
    if (--tx->open_handles == 0) {
        free_tx(tx);
    }
}

/* One of c's handles has closed; the last one frees it during shutdown. */
static void conn_handle_closed(conn_t *c)
{
    gb_sim_tx_t *tx = c->tx;
    if (--c->open_handles == 0 && tx->closing) {
        gb_buf_dispose(&c->out);
        gb_buf_dispose(&c->body);
        free(c);
        tx_handle_closed(tx);
    }
}

static void on_tcp_closed(uv_handle_t *handle)
{
    conn_t *c = gb_container_of(handle, conn_t, tcp);
    gb_sim_tx_t *tx = c->tx;
    bool closing = tx->closing;
    c->tcp_open = false;
    c->state = C_CLOSED;
    conn_handle_closed(c);
    if (!closing) {
        dispatch(tx);
    }
}

static void conn_close_tcp(conn_t *c)
{
    uv_timer_stop(&c->timer);
    if (c->tcp_open && c->state != C_CLOSING) {
        c->state = C_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    }
}

/* Writes the request for the device's first `batch` messages into c->out. */
static void build_request(gb_sim_tx_t *tx, conn_t *c, uint32_t dev)
{
    txdev_t *d = &tx->devs[dev];
    uint32_t k = d->n < tx->cfg.batch ? (uint32_t)d->n : tx->cfg.batch;
    gb_buf_t body;
    size_t off = 0;

    gb_buf_init(&body);
    gb_buf_append_str(&body, "{\"protocol\":1,\"device\":{\"serial\":");
    gb_json_quote(&body, tx->serials[dev], strlen(tx->serials[dev]));
    gb_buf_append_str(&body, "},\"messages\":[");
    for (uint32_t i = 0; i < k; i++) {
        uint32_t len = d->lens[d->head + i];
        if (i > 0) {
            gb_buf_append(&body, ",", 1);
        }
        gb_buf_append(&body, d->q.data + off, len);
        off += len;
    }
    gb_buf_append_str(&body, "]}");

    gb_buf_reset(&c->out);
    gb_buf_appendf(&c->out,
                   "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " GB_SIM_AGENT "\r\n"
                   "Content-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n",
                   tx->path, tx->host_header, tx->auth, body.len);
    gb_buf_append(&c->out, body.data, body.len);
    gb_buf_dispose(&body);
    c->dev = dev;
    c->n_msgs = k;
    d->inflight = k;
}

static void start_on(gb_sim_tx_t *tx, conn_t *c, uint32_t dev)
{
    build_request(tx, c, dev);
    uv_timer_start(&c->timer, on_conn_timeout, (uint64_t)(tx->cfg.timeout_s * 1000.0), 0);
    if (c->state == C_IDLE) {
        send_request(c);
        return;
    }
    /* A new connection. */
    uv_tcp_init(tx->loop, &c->tcp);
    c->tcp_open = true;
    c->open_handles++;
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = C_CONNECTING;
    int rc =
        uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&tx->addr, on_conn_connected);
    if (rc < 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(rc));
        tx->stats.conn_errors++;
        request_failed(c, why);
        conn_close_tcp(c);
    }
}

/* Gives every free connection a device with messages to send; idle connections first, so
 * keep-alive sockets are reused before new ones are opened. */
static void dispatch(gb_sim_tx_t *tx)
{
    if (tx->closing || tx->failed || (int64_t)uv_now(tx->loop) < tx->pause_until) {
        return;
    }
    for (int pass = 0; pass < 2 && tx->ready_len > 0; pass++) {
        enum conn_state want = pass == 0 ? C_IDLE : C_CLOSED;
        for (uint32_t i = 0; i < tx->n_conns && tx->ready_len > 0; i++) {
            conn_t *c = tx->conns[i];
            uint32_t dev;
            if (c->state == want && ready_pop(tx, &dev)) {
                start_on(tx, c, dev);
            }
        }
    }
}

static void on_watchdog(uv_timer_t *timer)
{
    gb_sim_tx_t *tx = gb_container_of(timer, gb_sim_tx_t, watchdog);
    int64_t now = (int64_t)uv_now(tx->loop);
    if (tx->pending > 0 && !tx->failed &&
        (double)(now - tx->last_progress) > tx->cfg.give_up_s * 1000.0) {
        fatal(tx,
              "no acknowledgement from the server for %.0f s (last problem: %s); giving up "
              "with %llu messages unacknowledged",
              tx->cfg.give_up_s, tx->last_problem[0] ? tx->last_problem : "none",
              (unsigned long long)tx->pending);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* construction                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* Splits http://HOST[:PORT][/PREFIX]. */
static int parse_url(const char *url, char *host, size_t host_size, int *port, char *prefix,
                     size_t prefix_size, char *err, size_t err_size)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) != 0) {
        snprintf(err, err_size,
                 "--server %s: only http:// URLs are supported (run glovebox behind a TLS proxy "
                 "for https)",
                 url);
        return -1;
    }
    p += 7;
    const char *host_end;
    const char *h = p;
    if (*p == '[') {
        host_end = strchr(p, ']');
        if (host_end == NULL) {
            snprintf(err, err_size, "--server %s: unterminated [IPv6] address", url);
            return -1;
        }
        h = p + 1;
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/");
        p = host_end;
    }
    size_t hl = (size_t)(host_end - h);
    if (hl == 0 || hl >= host_size) {
        snprintf(err, err_size, "--server %s: missing or too long host", url);
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = 80;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535 || (*end != '\0' && *end != '/')) {
            snprintf(err, err_size, "--server %s: bad port", url);
            return -1;
        }
        *port = (int)v;
        p = end;
    }
    size_t pl = strlen(p);
    while (pl > 0 && p[pl - 1] == '/') {
        pl--;
    }
    if (pl >= prefix_size) {
        snprintf(err, err_size, "--server %s: path too long", url);
        return -1;
    }
    memcpy(prefix, p, pl);
    prefix[pl] = '\0';
    return 0;
}

gb_sim_tx_t *gb_sim_tx_new(uv_loop_t *loop, const gb_sim_tx_config_t *cfg, uint32_t n_devices,
                           const char *const *serials, gb_sim_tx_progress_cb progress, void *arg,
                           char *err, size_t err_size)
{
    char host[256], prefix[256], port_s[16];
    int port;

    if (parse_url(cfg->url, host, sizeof(host), &port, prefix, sizeof(prefix), err, err_size) !=
        0) {
        return NULL;
    }
    snprintf(port_s, sizeof(port_s), "%d", port);
    uv_getaddrinfo_t gai;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(loop, &gai, NULL, host, port_s, &hints);
    if (rc < 0 || gai.addrinfo == NULL) {
        snprintf(err, err_size, "--server: cannot resolve %s: %s", host,
                 rc < 0 ? uv_strerror(rc) : "no address");
        return NULL;
    }

    gb_sim_tx_t *tx = gb_xcalloc(1, sizeof(*tx));
    memcpy(&tx->addr, gai.addrinfo->ai_addr, gai.addrinfo->ai_addrlen);
    uv_freeaddrinfo(gai.addrinfo);
    tx->loop = loop;
    tx->cfg = *cfg;
    if (strchr(host, ':') != NULL) {
        snprintf(tx->host_header, sizeof(tx->host_header), "[%s]:%d", host, port);
    } else {
        snprintf(tx->host_header, sizeof(tx->host_header), "%s:%d", host, port);
    }
    snprintf(tx->path, sizeof(tx->path), "%s/api/v1/agent/messages", prefix);
    tx->auth = gb_xasprintf("Authorization: Bearer %s\r\n", cfg->token);
    tx->n = n_devices ? n_devices : 1;
    tx->serials = serials;
    tx->devs = gb_xcalloc(tx->n, sizeof(*tx->devs));
    for (uint32_t i = 0; i < tx->n; i++) {
        gb_buf_init(&tx->devs[i].q);
    }
    tx->ready = gb_xmalloc(tx->n * sizeof(*tx->ready));
    tx->progress = progress;
    tx->arg = arg;
    tx->jitter = 0x853C49E6748FEA9Bull;
    tx->last_progress = (int64_t)uv_now(loop);

    llhttp_settings_init(&http_settings);
    http_settings.on_message_begin = on_http_message_begin;
    http_settings.on_body = on_http_body;
    http_settings.on_message_complete = on_http_message_complete;

    tx->n_conns = cfg->connections;
    tx->conns = gb_xcalloc(tx->n_conns, sizeof(*tx->conns));
    for (uint32_t i = 0; i < tx->n_conns; i++) {
        conn_t *c = gb_xcalloc(1, sizeof(*c));
        c->tx = tx;
        gb_buf_init(&c->out);
        gb_buf_init(&c->body);
        uv_timer_init(loop, &c->timer);
        c->open_handles = 1;
        tx->conns[i] = c;
        tx->open_handles++;
    }
    uv_timer_init(loop, &tx->backoff);
    uv_timer_init(loop, &tx->watchdog);
    tx->open_handles += 2;
    uv_timer_start(&tx->watchdog, on_watchdog, 1000, 1000);
    return tx;
}

uint64_t gb_sim_tx_pending(const gb_sim_tx_t *tx)
{
    return tx->pending;
}

bool gb_sim_tx_failed(const gb_sim_tx_t *tx)
{
    return tx->failed;
}

const char *gb_sim_tx_error(const gb_sim_tx_t *tx)
{
    return tx->error;
}

const gb_sim_tx_stats_t *gb_sim_tx_stats(const gb_sim_tx_t *tx)
{
    return &tx->stats;
}

static void free_tx(gb_sim_tx_t *tx)
{
    for (uint32_t i = 0; i < tx->n; i++) {
        gb_buf_dispose(&tx->devs[i].q);
        free(tx->devs[i].lens);
    }
    free(tx->devs);
    free(tx->ready);
    free(tx->conns);
    free(tx->auth);
    free(tx);
}

static void on_backoff_closed(uv_handle_t *handle)
{
    tx_handle_closed(gb_container_of(handle, gb_sim_tx_t, backoff));
}

static void on_watchdog_closed(uv_handle_t *handle)
{
    tx_handle_closed(gb_container_of(handle, gb_sim_tx_t, watchdog));
}

static void on_conn_timer_closed(uv_handle_t *handle)
{
    conn_handle_closed(gb_container_of(handle, conn_t, timer));
}

void gb_sim_tx_close(gb_sim_tx_t *tx)
{
    if (tx == NULL || tx->closing) {
        return;
    }
    tx->closing = true;
    for (uint32_t i = 0; i < tx->n_conns; i++) {
        conn_t *c = tx->conns[i];
        if (c->tcp_open && c->state != C_CLOSING) {
            c->state = C_CLOSING;
            uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
        }
        uv_close((uv_handle_t *)&c->timer, on_conn_timer_closed);
    }
    uv_close((uv_handle_t *)&tx->backoff, on_backoff_closed);
    uv_close((uv_handle_t *)&tx->watchdog, on_watchdog_closed);
}
