/* conn: one client connection: reading into a shared buffer, llhttp parsing with the limits
 * checked as bytes arrive, one request at a time (bytes that arrive meanwhile wait in conn->in),
 * responses, streamed request bodies, event streams, timeouts and closing.
 *
 * Invariants: a connection is freed only in the close callback of its last handle. The timer
 * stays open while a handler owns the request, so a request whose client went away stays valid
 * until it is answered. Parsing never recurses into a handler: a response given from a foreign
 * stack (a timer, a database callback) resumes parsing on the next loop iteration, and so do a
 * streamed body's start and resume; an early end of a streamed body reaches its handler from
 * the timer, never from inside the code that noticed it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/http.h"
#include "http/internal.h"

/* Unparsed bytes held while a request is busy before reading pauses (backpressure). */
#define IN_BUFFER_CAP ((size_t)64 << 10)
/* After a last response, how long the write side stays shut while input is drained, so the
 * client reads the response before the socket closes (closing with unread input sends RST,
 * which can destroy the response in the client's buffer). */
#define LINGER_MS 2000
/* Body and head buffers larger than this are released between requests, not kept. */
#define KEEP_BUFFER_CAP ((size_t)64 << 10)
/* Longest raw path written to an access log line. */
#define LOG_PATH_MAX 512

typedef struct stream_op {
    uv_write_t req;
    size_t len;
    char data[];
} stream_op_t;

typedef struct rejected {
    uv_tcp_t tcp;
    gb_http_server_t *server;
} rejected_t;

static int on_parser_message_begin(llhttp_t *p);
static int on_parser_method_complete(llhttp_t *p);
static int on_parser_url(llhttp_t *p, const char *at, size_t len);
static int on_parser_header_field(llhttp_t *p, const char *at, size_t len);
static int on_parser_header_field_complete(llhttp_t *p);
static int on_parser_header_value(llhttp_t *p, const char *at, size_t len);
static int on_parser_header_value_complete(llhttp_t *p);
static int on_parser_headers_complete(llhttp_t *p);
static int on_parser_body(llhttp_t *p, const char *at, size_t len);
static int on_parser_chunk_header(llhttp_t *p);
static int on_parser_message_complete(llhttp_t *p);

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_parser_message_begin,
    .on_method_complete = on_parser_method_complete,
    .on_url = on_parser_url,
    .on_header_field = on_parser_header_field,
    .on_header_field_complete = on_parser_header_field_complete,
    .on_header_value = on_parser_header_value,
    .on_header_value_complete = on_parser_header_value_complete,
    .on_headers_complete = on_parser_headers_complete,
    .on_body = on_parser_body,
    .on_chunk_header = on_parser_chunk_header,
    .on_message_complete = on_parser_message_complete,
};

static void conn_close(gb_http_conn_t *conn);
static void conn_after_io(gb_http_conn_t *conn);
static void conn_run_buffered(gb_http_conn_t *conn);
static void conn_response_sent(gb_http_conn_t *conn);

/* libuv wants a mutable base; bodies handed to us are const and only read. */
static char *unconst(const void *p)
{
    return (char *)(uintptr_t)p;
}

static void conn_log(gb_http_conn_t *conn, gb_log_level_t level, const char *fmt, ...)
    GB_PRINTF(3, 4);

static void conn_log(gb_http_conn_t *conn, gb_log_level_t level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!gb_log_enabled(level)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gb_logk(level, "http", conn->keys, "%s", msg);
}

static bool is_parse_phase(gb_http__phase_t phase)
{
    return phase == GB_HTTP_PHASE_IDLE || phase == GB_HTTP_PHASE_HEAD ||
           phase == GB_HTTP_PHASE_BODY;
}

/* Phases in which unparsed input is kept for later (in the others it is dropped). */
static bool keeps_input(gb_http__phase_t phase)
{
    return is_parse_phase(phase) || phase == GB_HTTP_PHASE_HANDLING ||
           phase == GB_HTTP_PHASE_WRITING || phase == GB_HTTP_PHASE_RESUME ||
           phase == GB_HTTP_PHASE_PAUSED;
}

static void body_fail(gb_http_conn_t *conn, int status, const char *code, const char *message);
static void body_complete(gb_http_conn_t *conn);
static void body_deliver_end(gb_http_conn_t *conn);

/* ---- life cycle ---- */

static gb_http_conn_t *conn_new(gb_http_server_t *s)
{
    gb_http_conn_t *conn = gb_xcalloc(1, sizeof(*conn));
    conn->server = s;
    conn->id = ++s->next_id;
    uv_tcp_init(s->loop, &conn->tcp);
    uv_timer_init(s->loop, &conn->timer);
    conn->open_handles = 2;
    llhttp_init(&conn->parser, HTTP_REQUEST, &parser_settings);
    gb_buf_init(&conn->in);
    gb_buf_init(&conn->head);
    gb_buf_init(&conn->out);
    gb_arena_init(&conn->req.arena);
    gb_buf_init(&conn->req.body);
    conn->phase = GB_HTTP_PHASE_IDLE;
    /* Nothing was armed yet: a phase the timer never uses forces the first arming. */
    conn->timer_phase = GB_HTTP_PHASE_CLOSING;
    snprintf(conn->peer, sizeof(conn->peer), "-");
    conn->next = s->conns;
    if (s->conns != NULL) {
        s->conns->prev = conn;
    }
    s->conns = conn;
    s->nconns++;
    s->metrics.connections_total++;
    return conn;
}

static void conn_free(gb_http_conn_t *conn)
{
    gb_http_server_t *s = conn->server;

    if (conn->stream_on_close != NULL) {
        /* Fired from a close callback: the stream's owner may free or restart anything. */
        gb_http_stream_close_cb cb = conn->stream_on_close;
        conn->stream_on_close = NULL;
        cb(&conn->req, conn->stream_ctx);
    }
    if (conn->prev != NULL) {
        conn->prev->next = conn->next;
    } else {
        s->conns = conn->next;
    }
    if (conn->next != NULL) {
        conn->next->prev = conn->prev;
    }
    s->nconns--;
    conn_log(conn, GB_LOG_DEBUG, "connection freed after %llu requests",
             (unsigned long long)conn->nrequests);
    gb_buf_dispose(&conn->in);
    gb_buf_dispose(&conn->head);
    gb_buf_dispose(&conn->out);
    gb_buf_dispose(&conn->req.body);
    gb_arena_dispose(&conn->req.arena);
    free(conn->hdrs);
    free(conn);
    gb_http__server_maybe_done(s);
}

static void conn_handle_released(gb_http_conn_t *conn)
{
    GB_ASSERT(conn->open_handles > 0);
    if (--conn->open_handles == 0) {
        conn_free(conn);
    }
}

static void on_conn_tcp_closed(uv_handle_t *handle)
{
    conn_handle_released(gb_container_of((uv_tcp_t *)handle, gb_http_conn_t, tcp));
}

static void on_conn_timer_closed(uv_handle_t *handle)
{
    conn_handle_released(gb_container_of((uv_timer_t *)handle, gb_http_conn_t, timer));
}

/* Closes the socket at once. A request a handler still owns keeps the timer (and so the whole
 * connection object) alive until it is answered; see conn_release_orphan(). */
static void conn_close(gb_http_conn_t *conn)
{
    if (conn->phase == GB_HTTP_PHASE_CLOSING) {
        return;
    }
    conn->phase = GB_HTTP_PHASE_CLOSING;
    conn->req.conn = NULL;
    if (conn->reading) {
        uv_read_stop((uv_stream_t *)&conn->tcp);
        conn->reading = false;
    }
    uv_close((uv_handle_t *)&conn->tcp, on_conn_tcp_closed);
    uv_timer_stop(&conn->timer);
    if (conn->req.state != GB_HTTP_REQ_HANDLER) {
        uv_close((uv_handle_t *)&conn->timer, on_conn_timer_closed);
    } else if (conn->streamed && !conn->body_complete) {
        /* The handler is reading (or about to read) a body that will never come: tell it,
         * through the timer that stays open for it. */
        body_fail(conn, 400, "incomplete_body",
                  "the connection closed before the whole request body arrived");
    }
}

/* The handler has answered a request whose connection is closing: release the last handle. */
static void conn_release_orphan(gb_http_conn_t *conn)
{
    if (!uv_is_closing((uv_handle_t *)&conn->timer)) {
        uv_close((uv_handle_t *)&conn->timer, on_conn_timer_closed);
    }
}

static void on_rejected_closed(uv_handle_t *handle)
{
    rejected_t *r = gb_container_of((uv_tcp_t *)handle, rejected_t, tcp);
    gb_http_server_t *s = r->server;
    free(r);
    s->nrejected--;
    gb_http__server_maybe_done(s);
}

/* Over the connection cap: accept (so the client is not left in the backlog), try to say 503 in
 * one non-blocking write, and close. */
static void conn_reject(gb_http_server_t *s)
{
    static const char body[] = "{\"error\":{\"code\":\"unavailable\",\"message\":\"too many "
                               "connections; try again shortly\"}}";
    char resp[384];
    rejected_t *r = gb_xmalloc(sizeof(*r));

    r->server = s;
    uv_tcp_init(s->loop, &r->tcp);
    s->nrejected++;
    s->metrics.connections_rejected++;
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&r->tcp) == 0) {
        int n = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 503 Service Unavailable\r\n%sContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s",
                         gb_http__server_date(s), sizeof(body) - 1, body);
        uv_buf_t b = uv_buf_init(resp, (unsigned)n);
        (void)uv_try_write((uv_stream_t *)&r->tcp, &b, 1);
    }
    uv_close((uv_handle_t *)&r->tcp, on_rejected_closed);
    /* At most one line a second: a flood must not turn into a flood of logs. */
    int64_t now = (int64_t)uv_now(s->loop);
    if (now - s->reject_logged_ms >= 1000 || s->reject_logged_ms == 0) {
        s->reject_logged_ms = now;
        gb_log(GB_LOG_WARN, "http", "connection cap of %u reached%s; refusing new connections",
               s->cfg.max_connections, s->cap_from_fd_limit ? " (the open-file limit)" : "");
    }
}

static void set_peer(gb_http_conn_t *conn)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[48]; /* INET6_ADDRSTRLEN, with room for "[", "]:" and a port in conn->peer */

    if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&ss, &len) != 0) {
        return;
    }
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
        uv_ip4_name(sin, ip, sizeof(ip));
        snprintf(conn->peer, sizeof(conn->peer), "%s:%u", ip, (unsigned)ntohs(sin->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
        uv_ip6_name(sin6, ip, sizeof(ip));
        snprintf(conn->peer, sizeof(conn->peer), "[%s]:%u", ip, (unsigned)ntohs(sin6->sin6_port));
    }
}

static void set_keys(gb_http_conn_t *conn)
{
    snprintf(conn->keys, sizeof(conn->keys), "conn=%llu peer=%s", (unsigned long long)conn->id,
             conn->peer);
}

void gb_http__conn_accept(gb_http_server_t *s)
{
    if (s->nconns >= s->cfg.max_connections) {
        conn_reject(s);
        return;
    }
    gb_http_conn_t *conn = conn_new(s);
    int rc = uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&conn->tcp);
    if (rc < 0) {
        set_keys(conn);
        conn_log(conn, GB_LOG_WARN, "accept: %s", uv_strerror(rc));
        conn_close(conn);
        return;
    }
    /* Small responses go out at once; Nagle would hold them for the client's delayed ACK. */
    uv_tcp_nodelay(&conn->tcp, 1);
    set_peer(conn);
    set_keys(conn);
    conn_log(conn, GB_LOG_DEBUG, "accepted");
    conn_after_io(conn);
}

gb_http_conn_t *gb_http__conn_new_detached(gb_http_server_t *s, gb_buf_t *sink)
{
    gb_http_conn_t *conn = conn_new(s);
    conn->sink = sink;
    snprintf(conn->peer, sizeof(conn->peer), "detached");
    set_keys(conn);
    conn_after_io(conn);
    return conn;
}

/* ---- timers and reading ---- */

static void on_conn_timer(uv_timer_t *timer);

/* Arms the timer for the current phase. A phase's deadline starts when the phase is entered:
 * the header deadline runs from a request's first byte however slowly the rest trickles in. */
static void conn_arm_timer(gb_http_conn_t *conn)
{
    const gb_http_config_t *cfg = &conn->server->cfg;
    uint64_t ms = 0;
    bool on = true;

    if (conn->body_end_pending) {
        /* A streamed body's early end goes to its handler from the next timer callback. */
        conn->timer_phase = GB_HTTP_PHASE_CLOSING;
        uv_timer_start(&conn->timer, on_conn_timer, 0, 0);
        return;
    }
    if (conn->phase == conn->timer_phase && conn->timer_seq == conn->nrequests) {
        return;
    }
    switch (conn->phase) {
    case GB_HTTP_PHASE_IDLE:
        ms = cfg->idle_timeout_ms;
        break;
    case GB_HTTP_PHASE_HEAD:
        ms = cfg->header_timeout_ms;
        break;
    case GB_HTTP_PHASE_BODY:
        ms = cfg->body_timeout_ms;
        break;
    case GB_HTTP_PHASE_WRITING:
        ms = cfg->write_timeout_ms;
        break;
    case GB_HTTP_PHASE_RESUME:
        ms = 0;
        break;
    case GB_HTTP_PHASE_LINGER:
        ms = LINGER_MS;
        break;
    case GB_HTTP_PHASE_STREAM:
        /* Armed by the stream's writes while data waits for the reader. */
        on = conn->stream_queued > 0;
        ms = cfg->write_timeout_ms;
        break;
    case GB_HTTP_PHASE_HANDLING:
    case GB_HTTP_PHASE_PAUSED:
        /* The handler bounds its own work; a paused body waits for the server, not the
         * client, so no deadline runs against the client. */
        on = false;
        break;
    case GB_HTTP_PHASE_CLOSING:
        return;
    }
    conn->timer_phase = conn->phase;
    conn->timer_seq = conn->nrequests;
    /* The loop's clock was read before this iteration's callbacks; after a long one (a big
     * response copied, a slow handler) a deadline from it would already be partly spent. */
    uv_update_time(conn->server->loop);
    conn->write_queue_seen = uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp);
    if (on) {
        uv_timer_start(&conn->timer, on_conn_timer, ms, 0);
    } else {
        uv_timer_stop(&conn->timer);
    }
}

static void on_conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    gb_http_conn_t *conn = gb_container_of((uv_tcp_t *)handle, gb_http_conn_t, tcp);
    gb_http_server_t *s = conn->server;
    GB_UNUSED(suggested);
    /* One buffer for every connection: on_conn_read parses it before anything else can read,
     * and keeps only the unparsed rest in conn->in. */
    *buf = uv_buf_init(s->read_buf, (unsigned)s->read_buf_size);
}

static void conn_received(gb_http_conn_t *conn, const char *data, size_t len);

static void on_conn_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    gb_http_conn_t *conn = gb_container_of((uv_tcp_t *)stream, gb_http_conn_t, tcp);

    if (nread > 0) {
        conn_received(conn, buf->base, (size_t)nread);
    } else if (nread == UV_EOF) {
        gb_http__conn_feed_eof(conn);
    } else if (nread < 0) {
        conn_log(conn, GB_LOG_DEBUG, "read: %s", uv_strerror((int)nread));
        conn_close(conn);
    }
}

/* Starts or stops reading as the phase asks, then arms the timer. */
static void conn_after_io(gb_http_conn_t *conn)
{
    bool want_read = true;

    if (conn->phase == GB_HTTP_PHASE_CLOSING) {
        return;
    }
    if ((conn->phase == GB_HTTP_PHASE_HANDLING || conn->phase == GB_HTTP_PHASE_WRITING ||
         conn->phase == GB_HTTP_PHASE_RESUME) &&
        conn->in.len >= IN_BUFFER_CAP) {
        want_read = false;
    }
    if (conn->peer_eof || conn->sink != NULL || conn->phase == GB_HTTP_PHASE_PAUSED) {
        /* Paused: the kernel's buffer and then TCP's window hold the client back, so a body
         * read in pieces never takes more memory than a piece. */
        want_read = false;
    }
    if (want_read && !conn->reading) {
        if (uv_read_start((uv_stream_t *)&conn->tcp, on_conn_alloc, on_conn_read) == 0) {
            conn->reading = true;
        }
    } else if (!want_read && conn->reading) {
        uv_read_stop((uv_stream_t *)&conn->tcp);
        conn->reading = false;
    }
    conn_arm_timer(conn);
}

/* ---- writing ---- */

static void on_conn_written(uv_write_t *wr, int status)
{
    gb_http_conn_t *conn = gb_container_of(wr, gb_http_conn_t, write_req);

    conn->write_pending = false;
    if (conn->phase == GB_HTTP_PHASE_CLOSING) {
        return;
    }
    if (status < 0) {
        conn_log(conn, GB_LOG_DEBUG, "write: %s", uv_strerror(status));
        conn_close(conn);
        return;
    }
    if (conn->phase == GB_HTTP_PHASE_WRITING) {
        /* A large response is not kept in memory for the rest of a keep-alive connection. */
        if (conn->out.cap > KEEP_BUFFER_CAP) {
            gb_buf_dispose(&conn->out);
        }
        gb_buf_reset(&conn->out);
        conn_response_sent(conn);
    }
}

/* Sends head (conn->out) and an optional borrowed body. Returns 0 when all of it reached the
 * kernel, 1 when the rest waits in libuv (on_conn_written follows), or a negative error after
 * which the connection is closing. */
static int conn_write(gb_http_conn_t *conn, const void *body, size_t blen)
{
    gb_buf_t *out = &conn->out;
    size_t hlen = out->len;
    uv_buf_t bufs[2];
    unsigned nbufs = 1;

    if (conn->sink != NULL) {
        gb_buf_append(conn->sink, out->data, hlen);
        gb_buf_append(conn->sink, body, blen);
        gb_buf_reset(out);
        return 0;
    }
    bufs[0] = uv_buf_init(out->data, (unsigned)hlen);
    if (blen > 0) {
        bufs[1] = uv_buf_init(unconst(body), (unsigned)blen);
        nbufs = 2;
    }
    int w = uv_try_write((uv_stream_t *)&conn->tcp, bufs, nbufs);
    if (w == UV_EAGAIN) {
        w = 0;
    }
    if (w < 0) {
        conn_log(conn, GB_LOG_DEBUG, "write: %s", uv_strerror(w));
        conn_close(conn);
        return w;
    }
    if ((size_t)w == hlen + blen) {
        gb_buf_reset(out);
        return 0;
    }
    /* Keep what is left in conn->out: the body is only borrowed from the caller. */
    size_t done = (size_t)w;
    if (done < hlen) {
        gb_buf_consume(out, done);
        gb_buf_append(out, body, blen);
    } else {
        gb_buf_reset(out);
        gb_buf_append(out, (const char *)body + (done - hlen), blen - (done - hlen));
    }
    uv_buf_t rest = uv_buf_init(out->data, (unsigned)out->len);
    int rc = uv_write(&conn->write_req, (uv_stream_t *)&conn->tcp, &rest, 1, on_conn_written);
    if (rc < 0) {
        conn_log(conn, GB_LOG_DEBUG, "write: %s", uv_strerror(rc));
        conn_close(conn);
        return rc;
    }
    conn->write_pending = true;
    return 1;
}

static void on_continue_written(uv_write_t *wr, int status)
{
    /* Nothing to do: a failed write shows up on the next read or write of the connection. */
    GB_UNUSED(wr);
    GB_UNUSED(status);
}

static void send_continue(gb_http_conn_t *conn)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    size_t len = sizeof(cont) - 1;

    if (conn->sink != NULL) {
        gb_buf_append(conn->sink, cont, len);
        return;
    }
    uv_buf_t b = uv_buf_init(unconst(cont), (unsigned)len);
    int w = uv_try_write((uv_stream_t *)&conn->tcp, &b, 1);
    if (w == UV_EAGAIN) {
        w = 0;
    }
    if (w >= 0 && (size_t)w < len) {
        /* The rest of a static string: nothing to keep alive. Only one can be pending, since the
         * next request is not parsed before this one's final response has been written. */
        b = uv_buf_init(unconst(cont + w), (unsigned)(len - (size_t)w));
        (void)uv_write(&conn->continue_req, (uv_stream_t *)&conn->tcp, &b, 1, on_continue_written);
    }
}

static void on_conn_shutdown(uv_shutdown_t *sr, int status)
{
    gb_http_conn_t *conn = gb_container_of(sr, gb_http_conn_t, shutdown_req);
    if (status < 0 && conn->phase != GB_HTTP_PHASE_CLOSING) {
        conn_close(conn);
    }
}

/* The last response has gone: shut the write side and drain input until the client closes. */
static void conn_linger(gb_http_conn_t *conn)
{
    conn->phase = GB_HTTP_PHASE_LINGER;
    gb_buf_reset(&conn->in);
    if (conn->sink != NULL || conn->peer_eof) {
        conn_close(conn);
        return;
    }
    if (uv_shutdown(&conn->shutdown_req, (uv_stream_t *)&conn->tcp, on_conn_shutdown) < 0) {
        conn_close(conn);
        return;
    }
    conn_after_io(conn);
}

/* Parsing goes on from the timer, on the next loop iteration: with the next request, or with
 * the current request's streamed body. */
static void conn_resume_later(gb_http_conn_t *conn, bool body)
{
    conn->phase = GB_HTTP_PHASE_RESUME;
    conn->body_resume = body;
    /* Armed afresh even when this request already resumed once (a body resumes many times). */
    conn->timer_phase = GB_HTTP_PHASE_CLOSING;
}

/* A response has been handed to the kernel in full. */
static void conn_response_sent(gb_http_conn_t *conn)
{
    if (!conn->keep_alive || conn->server->shutting_down) {
        conn_linger(conn);
        return;
    }
    conn->phase = GB_HTTP_PHASE_IDLE;
    if (conn->processing) {
        return; /* conn_run() goes on with the buffered bytes */
    }
    if (conn->in.len > 0) {
        /* Answered from a handler's own callback: parsing the next request here would run
         * its handler inside that callback. Resume from a fresh stack instead. */
        conn_resume_later(conn, false);
    }
    conn_after_io(conn);
}

/* ---- requests ---- */

static void request_reset(gb_http_conn_t *conn)
{
    gb_http_req_t *req = &conn->req;
    size_t max_head = conn->server->cfg.max_header_bytes;

    gb_arena_reset(&req->arena);
    if (req->body.cap > KEEP_BUFFER_CAP) {
        gb_buf_dispose(&req->body);
    }
    gb_buf_reset(&req->body);
    gb_buf_reserve(&req->body, 0);
    req->body.data[0] = '\0';
    if (conn->head.cap > KEEP_BUFFER_CAP && conn->head.cap > max_head) {
        gb_buf_dispose(&conn->head);
    }
    gb_buf_reset(&conn->head);
    conn->url_len = 0;
    conn->nhdrs = 0;
    conn->hstate = 0;
    conn->head_bytes = 0;
    conn->headers_done = false;
    conn->method_known = false;
    conn->trailer_bytes = 0;
    conn->err_status = 0;
    conn->keep_alive = false;
    conn->start_ns = uv_hrtime();
    conn->body_limit = conn->server->cfg.max_body_bytes;
    conn->body_bytes = 0;
    conn->streamed = false;
    conn->dispatch_early = false;
    conn->body_reading = false;
    conn->body_complete = false;
    conn->body_ended = false;
    conn->body_resume = false;
    conn->body_paused_now = false;
    conn->continue_wanted = false;
    conn->body_end_pending = false;
    conn->body_err_status = 0;
    conn->body_on_chunk = NULL;
    conn->body_on_end = NULL;
    conn->body_ctx = NULL;

    req->method = GB_HTTP_OTHER;
    req->method_name = GB_STR_LIT("");
    req->target = GB_STR_LIT("");
    req->path = GB_STR_LIT("");
    req->query = GB_STR_LIT("");
    req->headers = NULL;
    req->nheaders = 0;
    memset(req->params, 0, sizeof(req->params));
    req->nparams = 0;
    req->route = NULL;
    req->user = NULL;
    req->conn = NULL;
    req->start_mono_ms = (int64_t)(conn->start_ns / 1000000);
    req->conn_id = conn->id;
    memcpy(req->peer, conn->peer, sizeof(req->peer));
    req->head = false;
    req->keep_alive = false;
    req->status = 0;
    req->state = GB_HTTP_REQ_NONE;
}

/* Metrics and the access line, once per request. */
static void request_finished(gb_http_conn_t *conn, size_t bytes)
{
    gb_http_req_t *req = &conn->req;
    gb_http_server_t *s = conn->server;
    double secs = (double)(uv_hrtime() - conn->start_ns) / 1e9;
    const char *route = req->route != NULL ? req->route : "none";

    gb_http__metrics_record(&s->metrics, route, req->method, req->status, secs);
    if (!gb_log_enabled(GB_LOG_INFO)) {
        return;
    }
    gb_str_t raw_path = GB_STR_LIT("");
    gb_str_t query = GB_STR_LIT("");
    if (req->target.len > 0 && !gb_http__split_target(req->target, &raw_path, &query)) {
        /* A target refused as unparsable ("*?...", "ftp://...") may still carry a token: split
         * it at the first '?' so that its query goes through the redaction below too. */
        const char *q = memchr(req->target.p, '?', req->target.len);
        raw_path = q != NULL ? (gb_str_t){req->target.p, (size_t)(q - req->target.p)} : req->target;
        query = q != NULL ? (gb_str_t){q + 1, req->target.len - raw_path.len - 1} : query;
    }
    gb_buf_t keys, target;
    gb_buf_init(&keys);
    gb_buf_init(&target);
    gb_buf_append(&target, raw_path.p, raw_path.len < LOG_PATH_MAX ? raw_path.len : LOG_PATH_MAX);
    if (query.len > 0) {
        /* Tokens may ride in ?access_token= (EventSource): never let one reach a log. */
        gb_buf_append(&target, "?", 1);
        gb_http__query_redact(query, &target);
        if (target.len > LOG_PATH_MAX) {
            target.len = LOG_PATH_MAX;
        }
    }
    gb_buf_appendf(&keys, "%s method=%.*s path=", conn->keys, (int)req->method_name.len,
                   req->method_name.len > 0 ? req->method_name.p : "-");
    gb_log_quote(&keys, target.data != NULL ? target.data : "", target.len);
    gb_buf_append_str(&keys, " route=");
    gb_log_quote(&keys, route, strlen(route));
    gb_buf_appendf(&keys, " status=%d bytes=%zu ms=%.3f%s", req->status, bytes, secs * 1000.0,
                   conn->phase == GB_HTTP_PHASE_CLOSING ? " gone=true" : "");
    gb_logk(GB_LOG_INFO, "http", keys.data, "request");
    gb_buf_dispose(&keys);
    gb_buf_dispose(&target);
}

static void append_uint(gb_buf_t *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    gb_buf_append(b, tmp + i, sizeof(tmp) - i);
}

static void append_status_line(gb_http_conn_t *conn, int status)
{
    gb_buf_t *out = &conn->out;
    gb_buf_append(out, "HTTP/1.1 ", 9);
    append_uint(out, (uint64_t)status);
    gb_buf_append(out, " ", 1);
    gb_buf_append_str(out, gb_http_status_reason(status));
    gb_buf_append(out, "\r\n", 2);
    gb_buf_append_str(out, gb_http__server_date(conn->server));
}

void gb_http_respond(gb_http_req_t *req, int status, const char *content_type,
                     const char *extra_headers, const void *body, size_t len)
{
    gb_http_conn_t *conn = gb_container_of(req, gb_http_conn_t, req);
    gb_buf_t *out = &conn->out;

    /* Answering twice, or answering a stream, is a bug in the caller. */
    GB_ASSERT(req->state == GB_HTTP_REQ_HANDLER);
    if (status < 100 || status > 599) {
        status = 500;
    }
    if (conn->streamed) {
        /* No body callback follows an answer. A body not read to its end cannot be told from
         * a next request, so the connection closes after this answer. */
        conn->body_ended = true;
        conn->body_end_pending = false;
        conn->body_resume = false;
        if (!conn->body_complete) {
            conn->keep_alive = false;
        }
    }
    req->status = status;
    req->state = GB_HTTP_REQ_DONE;
    if (conn->phase == GB_HTTP_PHASE_CLOSING) {
        request_finished(conn, 0);
        conn_release_orphan(conn);
        return;
    }
    bool keep = conn->keep_alive && !conn->server->shutting_down && !conn->peer_eof;
    bool bodiless = status < 200 || status == 204 || status == 304;
    bool send_body = !bodiless && !req->head && len > 0;

    conn->keep_alive = keep;
    gb_buf_reset(out);
    append_status_line(conn, status);
    if (content_type != NULL && !bodiless) {
        gb_buf_append(out, "Content-Type: ", 14);
        gb_buf_append_str(out, content_type);
        gb_buf_append(out, "\r\n", 2);
    }
    if (!bodiless) {
        gb_buf_append(out, "Content-Length: ", 16);
        append_uint(out, len);
        gb_buf_append(out, "\r\n", 2);
    }
    if (!keep) {
        gb_buf_append_str(out, "Connection: close\r\n");
    } else if (conn->http10) {
        gb_buf_append_str(out, "Connection: keep-alive\r\n");
    }
    if (extra_headers != NULL) {
        gb_buf_append_str(out, extra_headers);
    }
    gb_buf_append(out, "\r\n", 2);
    request_finished(conn, out->len + (send_body ? len : 0));
    conn->phase = GB_HTTP_PHASE_WRITING;
    int rc = conn_write(conn, send_body ? body : NULL, send_body ? len : 0);
    if (rc == 0) {
        conn_response_sent(conn);
    } else if (rc > 0 && !conn->processing) {
        conn_after_io(conn); /* arm the write timer */
    }
}

void gb_http_respond_json(gb_http_req_t *req, int status, const gb_buf_t *json)
{
    gb_http_respond(req, status, "application/json", NULL, json->data, json->len);
}

static void respond_error_with(gb_http_req_t *req, const gb_error_t *err, const char *extra)
{
    gb_buf_t body;
    gb_buf_init(&body);
    gb_error_to_json(err, &body);
    gb_http_respond(req, err->status, "application/json", extra, body.data, body.len);
    gb_buf_dispose(&body);
}

void gb_http_respond_error(gb_http_req_t *req, const gb_error_t *err)
{
    respond_error_with(req, err, NULL);
}

void gb_http_respond_errorf(gb_http_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char msg[256];
    gb_error_t e;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gb_error_clear(&e);
    gb_error_set(&e, status, code, NULL, "%s", msg);
    respond_error_with(req, &e, NULL);
}

gb_str_t gb_http_req_header(const gb_http_req_t *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->nheaders; i++) {
        const gb_http_header_t *h = &req->headers[i];
        if (h->name.len == n && strncasecmp(h->name.p, name, n) == 0) {
            return h->value;
        }
    }
    return (gb_str_t){NULL, 0};
}

bool gb_http_req_query(gb_http_req_t *req, const char *name, gb_str_t *value)
{
    gb_str_t raw;
    if (!gb_http__query_find(req->query, name, &raw)) {
        return false;
    }
    char *out = gb_arena_alloc(&req->arena, raw.len + 1);
    long n = gb_http__pct_decode(raw.p, raw.len, out, true);
    if (n < 0) {
        /* A malformed escape: hand back the raw text rather than pretend it is absent. */
        memcpy(out, raw.p, raw.len);
        n = (long)raw.len;
    }
    out[n] = '\0';
    *value = (gb_str_t){out, (size_t)n};
    return true;
}

bool gb_http_req_gone(const gb_http_req_t *req)
{
    const gb_http_conn_t *conn =
        (const gb_http_conn_t *)((const char *)req - offsetof(gb_http_conn_t, req));
    return req->conn == NULL || conn->phase == GB_HTTP_PHASE_CLOSING;
}

/* A request the parser refused (malformed, over a limit, too slow): answer it and close. */
static void conn_fail(gb_http_conn_t *conn, int status, const char *code, const char *message)
{
    gb_http_req_t *req = &conn->req;

    if (conn->streamed && req->state == GB_HTTP_REQ_HANDLER) {
        /* A streamed request belongs to its handler, which hears why the body ended and
         * answers (the connection closes after it). */
        body_fail(conn, status, code, message);
        return;
    }
    if (req->state != GB_HTTP_REQ_NONE || conn->phase == GB_HTTP_PHASE_IDLE) {
        /* The bytes never began a message (or belong to one already answered). */
        request_reset(conn);
    }
    if (!conn->method_known) {
        req->method = GB_HTTP_OTHER;
    }
    conn->keep_alive = false;
    req->keep_alive = false;
    req->state = GB_HTTP_REQ_HANDLER;
    req->conn = conn;
    conn->phase = GB_HTTP_PHASE_HANDLING;
    gb_http_respond_errorf(req, status, code, "%s", message);
}

/* ---- parser callbacks ---- */

static gb_http_conn_t *parser_conn(llhttp_t *p)
{
    return gb_container_of(p, gb_http_conn_t, parser);
}

static int parser_error(gb_http_conn_t *conn, int status, const char *code, const char *message)
{
    conn->err_status = status;
    conn->err_code = code;
    conn->err_message = message;
    llhttp_set_error_reason(&conn->parser, message);
    return HPE_USER;
}

static int head_too_large(gb_http_conn_t *conn)
{
    return parser_error(conn, 431, "header_too_large",
                        "the request line and headers are larger than the server accepts");
}

static int head_append(gb_http_conn_t *conn, const char *at, size_t len)
{
    if (conn->head.len + len > conn->server->cfg.max_header_bytes) {
        return head_too_large(conn);
    }
    gb_buf_append(&conn->head, at, len);
    return 0;
}

static int on_parser_message_begin(llhttp_t *p)
{
    gb_http_conn_t *conn = parser_conn(p);
    request_reset(conn);
    conn->nrequests++;
    conn->phase = GB_HTTP_PHASE_HEAD;
    return 0;
}

static int on_parser_method_complete(llhttp_t *p)
{
    gb_http_conn_t *conn = parser_conn(p);
    gb_http_req_t *req = &conn->req;
    req->method = gb_http__method_from_llhttp(p->method);
    req->method_name = gb_str_from_cstr(llhttp_method_name((llhttp_method_t)p->method));
    req->head = req->method == GB_HTTP_HEAD;
    conn->method_known = true;
    return 0;
}

static int on_parser_url(llhttp_t *p, const char *at, size_t len)
{
    gb_http_conn_t *conn = parser_conn(p);
    int rc = head_append(conn, at, len);
    conn->url_len += len;
    return rc;
}

/* Trailer fields of a chunked body are counted against the header limit and dropped. */
static int count_trailer(gb_http_conn_t *conn, size_t len)
{
    conn->trailer_bytes += len;
    if (conn->trailer_bytes > conn->server->cfg.max_header_bytes) {
        return head_too_large(conn);
    }
    return 0;
}

static int on_parser_header_field(llhttp_t *p, const char *at, size_t len)
{
    gb_http_conn_t *conn = parser_conn(p);
    if (conn->headers_done) {
        return count_trailer(conn, len);
    }
    if (conn->hstate != 1) {
        if (conn->nhdrs == conn->cap_hdrs) {
            conn->cap_hdrs = conn->cap_hdrs ? conn->cap_hdrs * 2 : 16;
            conn->hdrs = gb_xrealloc(conn->hdrs, conn->cap_hdrs * sizeof(*conn->hdrs));
        }
        gb_http__hdr_t *h = &conn->hdrs[conn->nhdrs++];
        memset(h, 0, sizeof(*h));
        h->name_off = (uint32_t)conn->head.len;
        conn->hstate = 1;
    }
    conn->hdrs[conn->nhdrs - 1].name_len += (uint32_t)len;
    return head_append(conn, at, len);
}

static int on_parser_header_field_complete(llhttp_t *p)
{
    gb_http_conn_t *conn = parser_conn(p);
    if (!conn->headers_done && conn->nhdrs > 0) {
        conn->hstate = 2;
        conn->hdrs[conn->nhdrs - 1].value_off = (uint32_t)conn->head.len;
    }
    return 0;
}

static int on_parser_header_value(llhttp_t *p, const char *at, size_t len)
{
    gb_http_conn_t *conn = parser_conn(p);
    if (conn->headers_done) {
        return count_trailer(conn, len);
    }
    if (conn->nhdrs == 0 || conn->hstate != 2) {
        return 0; /* llhttp always reports a field first; nothing to attach this to */
    }
    conn->hdrs[conn->nhdrs - 1].value_len += (uint32_t)len;
    return head_append(conn, at, len);
}

static int on_parser_header_value_complete(llhttp_t *p)
{
    parser_conn(p)->hstate = 0;
    return 0;
}

static gb_str_t trim(const char *p, size_t len)
{
    while (len > 0 && (p[0] == ' ' || p[0] == '\t')) {
        p++;
        len--;
    }
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) {
        len--;
    }
    return (gb_str_t){p, len};
}

/* RFC 9110 token characters: what a field name may hold. */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* llhttp 8 lets a space inside a field name ("Bad Header:") and obsolete line folding through;
 * either can smuggle a header past a proxy, so both are refused here (RFC 9112 section 5). */
static bool header_is_valid(gb_str_t name, gb_str_t value)
{
    if (name.len == 0) {
        return false;
    }
    for (size_t i = 0; i < name.len; i++) {
        if (!is_tchar((unsigned char)name.p[i])) {
            return false;
        }
    }
    for (size_t i = 0; i < value.len; i++) {
        unsigned char c = (unsigned char)value.p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return false;
        }
    }
    return true;
}

static int on_parser_headers_complete(llhttp_t *p)
{
    gb_http_conn_t *conn = parser_conn(p);
    gb_http_req_t *req = &conn->req;
    const gb_http_config_t *cfg = &conn->server->cfg;

    conn->headers_done = true;
    /* llhttp's spans pointed into the read buffer: the head moves into the arena in one copy. */
    char *h = gb_arena_alloc(&req->arena, conn->head.len + 1);
    if (conn->head.len > 0) {
        memcpy(h, conn->head.data, conn->head.len);
    }
    h[conn->head.len] = '\0';
    req->target = (gb_str_t){h, conn->url_len};
    req->headers = gb_arena_alloc(&req->arena, (conn->nhdrs + 1) * sizeof(*req->headers));
    for (size_t i = 0; i < conn->nhdrs; i++) {
        const gb_http__hdr_t *x = &conn->hdrs[i];
        req->headers[i].name = (gb_str_t){h + x->name_off, x->name_len};
        req->headers[i].value = trim(h + x->value_off, x->value_len);
        if (!header_is_valid(req->headers[i].name, req->headers[i].value)) {
            req->nheaders = i;
            return parser_error(conn, 400, "bad_request", "a header field is malformed");
        }
    }
    req->nheaders = conn->nhdrs;
    if (!conn->method_known) {
        on_parser_method_complete(p);
    }
    if (p->http_major != 1) {
        return parser_error(conn, 505, "http_version_not_supported",
                            "only HTTP/1.0 and HTTP/1.1 are served");
    }
    conn->http10 = p->http_minor == 0;
    /* An upgrade (or CONNECT) is answered like any request, and the connection then closes:
     * whatever follows is not HTTP/1 any more. */
    conn->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    req->keep_alive = conn->keep_alive;

    /* A streamed route is known now, before any body byte: it brings its own body limit, and
     * its handler runs as soon as this head is counted (conn_run). */
    gb_str_t raw_path, query;
    gb_http__match_t m;
    conn->body_limit = cfg->max_body_bytes;
    if (gb_http__router_may_stream(conn->server->router, req->method) &&
        gb_http__split_target(req->target, &raw_path, &query) &&
        gb_http__router_match(conn->server->router, req->method, raw_path, &req->arena, &m) == 0 &&
        m.streamed) {
        conn->streamed = true;
        conn->body_limit = m.max_body != 0 ? m.max_body : cfg->max_body_bytes;
    }
    bool chunked = (p->flags & F_CHUNKED) != 0;
    bool has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    if (has_length && p->content_length > conn->body_limit) {
        return parser_error(conn, 413, "body_too_large",
                            "the request body is larger than the server accepts");
    }
    bool body_expected = chunked || (has_length && p->content_length > 0);
    if (has_length && p->content_length > 0 && !conn->streamed) {
        gb_buf_reserve(&req->body, (size_t)p->content_length);
    }
    gb_str_t expect = gb_http_req_header(req, "expect");
    if (expect.p != NULL) {
        if (!gb_str_case_eq_cstr(expect, "100-continue")) {
            return parser_error(conn, 417, "expectation_failed",
                                "the only expectation served is 100-continue");
        }
        if (!conn->http10 && body_expected) {
            /* A streamed route's handler may refuse without the body (a wrong token, say):
             * the client is invited to send it only once the handler starts reading. */
            if (conn->streamed) {
                conn->continue_wanted = true;
            } else {
                send_continue(conn);
            }
        }
    }
    conn->dispatch_early = conn->streamed;
    conn->phase = body_expected ? GB_HTTP_PHASE_BODY : GB_HTTP_PHASE_HEAD;
    /* Pause so conn_run() learns exactly where the head ended and can count its bytes. */
    conn->headers_paused = true;
    return HPE_PAUSED;
}

static int on_parser_body(llhttp_t *p, const char *at, size_t len)
{
    gb_http_conn_t *conn = parser_conn(p);
    gb_http_req_t *req = &conn->req;
    if (len > conn->body_limit - conn->body_bytes) {
        return parser_error(conn, 413, "body_too_large",
                            "the request body is larger than the server accepts");
    }
    if (len == 0) {
        return 0; /* llhttp flushes an open span even when no byte of it is here */
    }
    conn->body_bytes += len;
    if (!conn->streamed) {
        gb_buf_append(&req->body, at, len);
        return 0;
    }
    if (conn->body_ended || conn->body_on_chunk == NULL) {
        return HPE_PAUSED; /* nobody reads any more: stop here (never expected) */
    }
    int rc = conn->body_on_chunk(req, at, len, conn->body_ctx);
    if (conn->body_ended) {
        return HPE_PAUSED; /* answered from inside on_chunk */
    }
    if (rc == GB_HTTP_BODY_PAUSE) {
        /* llhttp stops right after this piece, which counts as consumed. */
        conn->phase = GB_HTTP_PHASE_PAUSED;
        conn->body_paused_now = true;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_parser_chunk_header(llhttp_t *p)
{
    gb_http_conn_t *conn = parser_conn(p);
    /* The chunk's size is known before its bytes: refuse now rather than after buffering it. */
    if (p->content_length > conn->body_limit - conn->body_bytes) {
        return parser_error(conn, 413, "body_too_large",
                            "the request body is larger than the server accepts");
    }
    return 0;
}

static int on_parser_message_complete(llhttp_t *p)
{
    gb_http_conn_t *conn = parser_conn(p);
    conn->message_ready = true;
    /* Stop right after this message: the next one waits until this one is answered. */
    return HPE_PAUSED;
}

/* ---- parsing and dispatch ---- */

static void conn_dispatch(gb_http_conn_t *conn)
{
    gb_http_server_t *s = conn->server;
    gb_http_req_t *req = &conn->req;
    gb_str_t raw_path, query;
    gb_http__match_t m;

    req->conn = conn;
    req->state = GB_HTTP_REQ_HANDLER;
    conn->phase = GB_HTTP_PHASE_HANDLING;
    if (!gb_http__split_target(req->target, &raw_path, &query)) {
        gb_http_respond_errorf(req, 400, "bad_request", "the request target must be a path");
        return;
    }
    req->query = query;
    char *path = gb_arena_alloc(&req->arena, raw_path.len + 1);
    long n = gb_http__pct_decode(raw_path.p, raw_path.len, path, false);
    if (n < 0 || memchr(path, '\0', (size_t)n) != NULL) {
        gb_http_respond_errorf(req, 400, "bad_request",
                               "the path holds a malformed escape or a NUL byte");
        return;
    }
    path[n] = '\0';
    req->path = (gb_str_t){path, (size_t)n};

    int rc = gb_http__router_match(s->router, req->method, raw_path, &req->arena, &m);
    if (rc == 0) {
        req->route = m.pattern;
        memcpy(req->params, m.params, sizeof(req->params));
        req->nparams = m.nparams;
        m.cb(req, m.ctx);
        return;
    }
    if (rc == 400) {
        req->route = m.pattern;
        gb_http_respond_errorf(req, 400, "bad_request",
                               "the path holds a malformed escape or a NUL byte");
        return;
    }
    if (rc == 405) {
        gb_buf_t allow;
        gb_error_t e;
        gb_buf_init(&allow);
        gb_buf_append_str(&allow, "Allow: ");
        gb_http__allow_header(m.allow, &allow);
        gb_buf_append_str(&allow, "\r\n");
        gb_error_clear(&e);
        gb_error_set(&e, 405, "method_not_allowed", NULL, "%.*s is not allowed on this path",
                     (int)req->method_name.len, req->method_name.p);
        req->route = m.pattern;
        respond_error_with(req, &e, allow.data);
        gb_buf_dispose(&allow);
        return;
    }
    if ((req->method == GB_HTTP_GET || req->method == GB_HTTP_HEAD) && s->statics != NULL) {
        req->route = "static";
        gb_http__static_serve(s->statics, req, (int64_t)uv_now(s->loop));
        return;
    }
    req->route = "none";
    gb_http_respond_errorf(req, 404, "not_found", "nothing is served at this path");
}

static void conn_parse_failed(gb_http_conn_t *conn, llhttp_errno_t err)
{
    conn->server->metrics.bad_requests_total++;
    /* Our callbacks set err_status before failing; llhttp reports a failed on_headers_complete
     * or on_chunk_header under its own codes, so the status is what tells. */
    if (conn->err_status != 0) {
        conn_log(conn, GB_LOG_WARN, "refused request: %s", conn->err_message);
        conn_fail(conn, conn->err_status, conn->err_code, conn->err_message);
        return;
    }
    const char *reason = llhttp_get_error_reason(&conn->parser);
    conn_log(conn, GB_LOG_WARN, "malformed request: %s (%s)", reason != NULL ? reason : "?",
             llhttp_errno_name(err));
    if (err == HPE_INVALID_VERSION) {
        conn_fail(conn, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served");
        return;
    }
    conn_fail(conn, 400, "bad_request", "the request is not valid HTTP/1.1");
}

/* Parses p[0..n) and dispatches each complete request, one at a time, for as long as requests
 * are answered at once. Returns the bytes consumed; the rest waits for the current response. */
static size_t conn_run(gb_http_conn_t *conn, const char *p, size_t n)
{
    size_t off = 0;
    size_t max_head = conn->server->cfg.max_header_bytes;

    if (p == NULL) {
        /* An empty buffer may have no storage, and llhttp takes the pointer as where an open
         * span (a body piece) continues: a NULL there would lose it. */
        p = "";
    }
    conn->processing = true;
    /* After the pause at the end of the headers (or after a streamed body's pause) llhttp must
     * run once more, even with no bytes left, to reach on_message_complete for a request
     * without more body. A streamed request dispatched at that pause carries this over to
     * when its body is read. */
    bool again = conn->need_execute;
    conn->need_execute = false;
    while ((off < n || again) && is_parse_phase(conn->phase)) {
        const char *start = p + off;
        bool counting = !conn->headers_done || conn->phase == GB_HTTP_PHASE_IDLE;
        llhttp_errno_t err = llhttp_execute(&conn->parser, start, n - off);
        size_t used;
        if (err == HPE_OK) {
            used = n - off;
        } else if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
            used = (size_t)(llhttp_get_error_pos(&conn->parser) - start);
            if (err == HPE_PAUSED) {
                llhttp_resume(&conn->parser);
            }
        } else {
            conn_parse_failed(conn, err);
            break;
        }
        off += used;
        again = err == HPE_PAUSED && (conn->headers_paused || conn->body_paused_now);
        conn->headers_paused = false;
        conn->body_paused_now = false;
        if (counting) {
            conn->head_bytes += used;
            if (conn->head_bytes > max_head) {
                conn->server->metrics.bad_requests_total++;
                conn_log(conn, GB_LOG_WARN, "refused request: head over %zu bytes", max_head);
                conn_fail(conn, 431, "header_too_large",
                          "the request line and headers are larger than the server accepts");
                break;
            }
        }
        if (conn->dispatch_early) {
            conn->dispatch_early = false;
            conn_dispatch(conn);
        }
        if (conn->message_ready) {
            conn->message_ready = false;
            if (conn->streamed) {
                body_complete(conn);
            } else {
                conn_dispatch(conn);
            }
        }
    }
    conn->need_execute = again;
    conn->processing = false;
    /* A response given synchronously during the loop left the connection idle, possibly with
     * a new deadline to set; the caller calls conn_after_io(). */
    return off;
}

static void conn_run_buffered(gb_http_conn_t *conn)
{
    size_t used = conn_run(conn, conn->in.data, conn->in.len);
    if (keeps_input(conn->phase)) {
        gb_buf_consume(&conn->in, used);
    } else {
        gb_buf_reset(&conn->in);
    }
    if (conn->in.len == 0 && conn->in.cap > KEEP_BUFFER_CAP) {
        gb_buf_dispose(&conn->in);
    }
}

static void conn_received(gb_http_conn_t *conn, const char *data, size_t len)
{
    switch (conn->phase) {
    case GB_HTTP_PHASE_STREAM:
    case GB_HTTP_PHASE_LINGER:
    case GB_HTTP_PHASE_CLOSING:
        return; /* drained and dropped */
    case GB_HTTP_PHASE_IDLE:
    case GB_HTTP_PHASE_HEAD:
    case GB_HTTP_PHASE_BODY:
        if (conn->in.len == 0) {
            size_t used = conn_run(conn, data, len);
            if (used < len && keeps_input(conn->phase)) {
                gb_buf_append(&conn->in, data + used, len - used);
            }
        } else {
            gb_buf_append(&conn->in, data, len);
            conn_run_buffered(conn);
        }
        break;
    default:
        /* Busy with a request: keep the bytes for later, in order. */
        gb_buf_append(&conn->in, data, len);
        break;
    }
    if (conn->phase == GB_HTTP_PHASE_BODY && conn->streamed) {
        /* A streamed body's deadline is for progress: any byte read re-arms it. */
        conn->timer_phase = GB_HTTP_PHASE_CLOSING;
    }
    conn_after_io(conn);
}

void gb_http__conn_feed(gb_http_conn_t *conn, const void *data, size_t len)
{
    if (len > 0) {
        conn_received(conn, data, len);
    }
}

void gb_http__conn_feed_eof(gb_http_conn_t *conn)
{
    conn->peer_eof = true;
    switch (conn->phase) {
    case GB_HTTP_PHASE_WRITING:
        /* The client stopped sending but may still read: finish this response, then close. */
        conn->keep_alive = false;
        conn_after_io(conn);
        break;
    case GB_HTTP_PHASE_CLOSING:
        break;
    default:
        /* Idle, mid-request, lingering, streaming, or a handler is busy (its request becomes
         * an orphan: still valid, answered into the void). */
        conn_log(conn, GB_LOG_DEBUG, "peer closed");
        conn_close(conn);
        break;
    }
}

static void on_conn_timer(uv_timer_t *timer)
{
    gb_http_conn_t *conn = gb_container_of(timer, gb_http_conn_t, timer);
    gb_http_server_t *s = conn->server;

    if (conn->body_end_pending) {
        body_deliver_end(conn);
        return;
    }
    switch (conn->phase) {
    case GB_HTTP_PHASE_RESUME:
        conn->phase = conn->body_resume ? GB_HTTP_PHASE_BODY : GB_HTTP_PHASE_IDLE;
        conn->body_resume = false;
        conn_run_buffered(conn);
        conn_after_io(conn);
        break;
    case GB_HTTP_PHASE_IDLE:
        conn_log(conn, GB_LOG_DEBUG, "idle for %u ms; closing", s->cfg.idle_timeout_ms);
        conn_close(conn);
        break;
    case GB_HTTP_PHASE_HEAD:
    case GB_HTTP_PHASE_BODY: {
        bool head = conn->phase == GB_HTTP_PHASE_HEAD;
        s->metrics.timeouts_total++;
        conn_log(conn, GB_LOG_WARN, "request %s not received within %u ms; closing",
                 head ? "head" : "body", head ? s->cfg.header_timeout_ms : s->cfg.body_timeout_ms);
        conn_fail(conn, 408, "request_timeout",
                  head ? "the request head took too long" : "the request body took too long");
        break;
    }
    case GB_HTTP_PHASE_WRITING:
    case GB_HTTP_PHASE_STREAM: {
        /* The deadline is for progress, not for the whole response: a large answer to a client
         * that keeps reading, however slowly, is not cut off. */
        size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp);
        if (queued > 0 && queued < conn->write_queue_seen) {
            conn->write_queue_seen = queued;
            uv_timer_start(&conn->timer, on_conn_timer, s->cfg.write_timeout_ms, 0);
            break;
        }
        s->metrics.timeouts_total++;
        conn_log(conn, GB_LOG_WARN, "response not taken by the client within %u ms; closing",
                 s->cfg.write_timeout_ms);
        conn_close(conn);
        break;
    }
    case GB_HTTP_PHASE_LINGER:
        conn_close(conn);
        break;
    default:
        break;
    }
}

/* ---- streamed request bodies ---- */

/* The whole body has been parsed: the handler hears it at once (we are in conn_run, on the
 * loop's stack); its answer, now or later, finishes the request. */
static void body_complete(gb_http_conn_t *conn)
{
    conn->body_complete = true;
    if (!conn->body_reading || conn->body_ended) {
        return;
    }
    conn->body_ended = true;
    conn->phase = GB_HTTP_PHASE_HANDLING;
    conn->body_on_end(&conn->req, NULL, conn->body_ctx);
}

/* Ends a streamed body early (client gone, over the limit, malformed, too slow, shutdown). The
 * handler is told from the timer, or when it starts reading if it has not yet; the connection
 * is not reused. */
static void body_fail(gb_http_conn_t *conn, int status, const char *code, const char *message)
{
    if (conn->body_ended || conn->body_err_status != 0) {
        return;
    }
    conn->body_err_status = status;
    conn->body_err_code = code;
    conn->body_err_message = message;
    conn->keep_alive = false;
    conn->body_resume = false;
    if (conn->phase != GB_HTTP_PHASE_CLOSING) {
        conn->phase = GB_HTTP_PHASE_HANDLING;
    }
    if (conn->body_reading) {
        conn->body_end_pending = true;
        uv_timer_start(&conn->timer, on_conn_timer, 0, 0);
    }
}

static void body_deliver_end(gb_http_conn_t *conn)
{
    gb_error_t e;

    conn->body_end_pending = false;
    conn->body_ended = true;
    gb_error_clear(&e);
    gb_error_set(&e, conn->body_err_status, conn->body_err_code, NULL, "%s",
                 conn->body_err_message);
    conn->body_on_end(&conn->req, &e, conn->body_ctx);
    if (conn->phase == GB_HTTP_PHASE_HANDLING) {
        conn_after_io(conn); /* the timer is spent: let the phase set it again */
    }
}

void gb_http_req_body_stream(gb_http_req_t *req, gb_http_body_chunk_cb on_chunk,
                             gb_http_body_end_cb on_end, void *ctx)
{
    gb_http_conn_t *conn = gb_container_of(req, gb_http_conn_t, req);

    GB_ASSERT(req->state == GB_HTTP_REQ_HANDLER && conn->streamed && !conn->body_reading);
    conn->body_reading = true;
    conn->body_on_chunk = on_chunk;
    conn->body_on_end = on_end;
    conn->body_ctx = ctx;
    if (conn->body_err_status != 0) {
        /* It ended before anyone read it. */
        conn->body_end_pending = true;
        uv_timer_start(&conn->timer, on_conn_timer, 0, 0);
        return;
    }
    if (conn->continue_wanted) {
        conn->continue_wanted = false;
        send_continue(conn);
    }
    if (conn->processing) {
        /* Called from the handler that conn_run dispatched: it goes on parsing on return. */
        conn->phase = GB_HTTP_PHASE_BODY;
        return;
    }
    conn_resume_later(conn, true);
    conn_after_io(conn);
}

void gb_http_req_body_resume(gb_http_req_t *req)
{
    gb_http_conn_t *conn = gb_container_of(req, gb_http_conn_t, req);

    if (conn->phase != GB_HTTP_PHASE_PAUSED || conn->body_ended) {
        return;
    }
    if (conn->processing) {
        conn->phase = GB_HTTP_PHASE_BODY;
        return;
    }
    conn_resume_later(conn, true);
    conn_after_io(conn);
}

/* ---- streams ---- */

static void on_stream_written(uv_write_t *wr, int status)
{
    stream_op_t *op = gb_container_of(wr, stream_op_t, req);
    gb_http_conn_t *conn = gb_container_of((uv_tcp_t *)wr->handle, gb_http_conn_t, tcp);

    conn->stream_queued -= op->len;
    free(op);
    if (conn->phase == GB_HTTP_PHASE_CLOSING) {
        return;
    }
    if (status < 0) {
        conn_log(conn, GB_LOG_DEBUG, "stream write: %s", uv_strerror(status));
        conn_close(conn);
        return;
    }
    if (conn->stream_queued == 0) {
        uv_timer_stop(&conn->timer);
        if (conn->stream_ending) {
            conn_close(conn);
        }
    } else {
        /* Progress: the reader is slow but alive. */
        conn->write_queue_seen = uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp);
        uv_timer_start(&conn->timer, on_conn_timer, conn->server->cfg.write_timeout_ms, 0);
    }
}

/* Writes to a stream; with a limit, refuses (GB_EBUSY) when the queue would exceed it. */
static int stream_send(gb_http_conn_t *conn, const char *data, size_t len, bool limit)
{
    size_t done = 0;

    if (conn->sink != NULL) {
        gb_buf_append(conn->sink, data, len);
        return 0;
    }
    if (conn->stream_queued == 0) {
        uv_buf_t b = uv_buf_init(unconst(data), (unsigned)len);
        int w = uv_try_write((uv_stream_t *)&conn->tcp, &b, 1);
        if (w == UV_EAGAIN) {
            w = 0;
        }
        if (w < 0) {
            conn_log(conn, GB_LOG_DEBUG, "stream write: %s", uv_strerror(w));
            conn_close(conn);
            return GB_ECLOSED;
        }
        done = (size_t)w;
    }
    if (done == len) {
        return 0;
    }
    size_t rest = len - done;
    if (limit && conn->stream_queued + rest > conn->stream_max_queued) {
        conn_log(conn, GB_LOG_WARN, "stream reader too slow: %zu bytes queued; closing",
                 conn->stream_queued + rest);
        conn_close(conn);
        return GB_EBUSY;
    }
    stream_op_t *op = gb_xmalloc(sizeof(*op) + rest);
    op->len = rest;
    memcpy(op->data, data + done, rest);
    uv_buf_t b = uv_buf_init(op->data, (unsigned)rest);
    int rc = uv_write(&op->req, (uv_stream_t *)&conn->tcp, &b, 1, on_stream_written);
    if (rc < 0) {
        free(op);
        conn_close(conn);
        return GB_ECLOSED;
    }
    conn->stream_queued += rest;
    if (conn->stream_queued == rest) {
        conn->write_queue_seen = uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp);
        uv_timer_start(&conn->timer, on_conn_timer, conn->server->cfg.write_timeout_ms, 0);
    }
    return 0;
}

void gb_http_stream_start(gb_http_req_t *req, const char *content_type, const char *extra_headers,
                          size_t max_queued, gb_http_stream_close_cb on_close, void *ctx)
{
    gb_http_conn_t *conn = gb_container_of(req, gb_http_conn_t, req);
    gb_buf_t *out = &conn->out;

    GB_ASSERT(req->state == GB_HTTP_REQ_HANDLER);
    req->status = 200;
    req->state = GB_HTTP_REQ_STREAM;
    conn->body_ended = true;
    conn->body_end_pending = false;
    conn->body_resume = false;
    conn->stream_on_close = on_close;
    conn->stream_ctx = ctx;
    conn->stream_max_queued = max_queued;
    conn->stream_queued = 0;
    conn->stream_ending = false;
    if (conn->phase == GB_HTTP_PHASE_CLOSING) {
        /* The client left before the stream began: on_close fires as the connection is freed. */
        request_finished(conn, 0);
        conn_release_orphan(conn);
        return;
    }
    conn->keep_alive = false;
    gb_buf_reset(out);
    append_status_line(conn, 200);
    gb_buf_append_str(out, "Content-Type: ");
    gb_buf_append_str(out, content_type != NULL ? content_type : "text/event-stream");
    gb_buf_append_str(out, "\r\nCache-Control: no-cache\r\nConnection: close\r\n");
    if (extra_headers != NULL) {
        gb_buf_append_str(out, extra_headers);
    }
    gb_buf_append(out, "\r\n", 2);
    request_finished(conn, out->len);
    conn->phase = GB_HTTP_PHASE_STREAM;
    gb_buf_reset(&conn->in);
    int rc = stream_send(conn, out->data, out->len, false);
    gb_buf_reset(out);
    if (rc < 0) {
        return;
    }
    if (req->head) {
        gb_http_stream_end(req);
        return;
    }
    if (!conn->processing) {
        conn_after_io(conn);
    }
}

int gb_http_stream_write(gb_http_req_t *req, const void *data, size_t len)
{
    gb_http_conn_t *conn = gb_container_of(req, gb_http_conn_t, req);

    if (req->state != GB_HTTP_REQ_STREAM || conn->phase != GB_HTTP_PHASE_STREAM ||
        conn->stream_ending) {
        return GB_ECLOSED;
    }
    if (len == 0 || req->head) {
        return 0;
    }
    return stream_send(conn, data, len, true);
}

void gb_http_stream_end(gb_http_req_t *req)
{
    gb_http_conn_t *conn = gb_container_of(req, gb_http_conn_t, req);

    if (req->state != GB_HTTP_REQ_STREAM || conn->phase != GB_HTTP_PHASE_STREAM ||
        conn->stream_ending) {
        return;
    }
    conn->stream_ending = true;
    if (conn->stream_queued == 0) {
        conn_close(conn);
    }
}

/* ---- shutdown ---- */

void gb_http__conn_shutdown(gb_http_conn_t *conn)
{
    if (conn->streamed && conn->req.state == GB_HTTP_REQ_HANDLER && !conn->body_complete &&
        conn->phase != GB_HTTP_PHASE_CLOSING) {
        /* A body still arriving could hold the shutdown for as long as its client likes: it
         * ends here, and the handler answers once its own work is done. */
        body_fail(conn, 503, "unavailable", "the server is shutting down; send the request again");
        conn_after_io(conn);
        return;
    }
    switch (conn->phase) {
    case GB_HTTP_PHASE_HANDLING:
    case GB_HTTP_PHASE_WRITING:
        /* Busy: the response goes out (marked Connection: close), then the connection closes. */
        conn->keep_alive = false;
        break;
    case GB_HTTP_PHASE_STREAM:
        /* A live stream has no end to reach: what is still queued for a slow reader is dropped
         * rather than holding the shutdown up until the write timeout. */
        conn->stream_ending = true;
        conn_close(conn);
        break;
    case GB_HTTP_PHASE_CLOSING:
        break;
    default:
        conn_close(conn);
        break;
    }
}
