/* Integration tests of streamed request bodies (gb_http_router_add_streamed), over real
 * sockets: the server runs its own loop on a thread with a test handler that reads a body in
 * pieces (pausing and resuming from a timer when asked), and the test drives it with the
 * harness's blocking client. Covers bodies by length and chunked, pauses, backpressure (a
 * paused body stops the socket being read), refusing without reading (with and without
 * Expect: 100-continue), the route's own limit, the progress deadline, a client leaving
 * mid-body, an answer given mid-body, pipelining behind a streamed request, and shutdown. The
 * server's deadlines, the handler's pauses and the test's sleeps and waits are scaled by
 * gb_th_scale_ms() (GB_TEST_TIME_SCALE), so a slow run (under valgrind) keeps their relations;
 * the times in the comments are those at scale 1. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "harness.h"
#include "http/http.h"
#include "net/net.h"

#define UP_LIMIT ((size_t)64 << 20)

typedef struct fixture {
    uv_loop_t loop;
    gb_http_router_t *router;
    gb_http_server_t *server;
    uv_async_t wake; /* main thread -> loop: shut down */
    pthread_t thread;
    bool running;
    int port;
    atomic_int stop_requested;
    atomic_int done_fired;
    atomic_int handler_calls; /* /up handler runs */
    atomic_int ends_ok;       /* bodies read to their end */
    atomic_int ends_err;      /* bodies that ended early */
    atomic_int last_err_status;
    atomic_int gone_ends; /* ended early because the client left */
    atomic_int paused;    /* a body is paused now */
    atomic_int pauses;    /* pauses so far */
} fixture_t;

/* ---- the streamed handler (loop thread) ----
 * POST /up reads the body and answers "bytes=N sum=X" (FNV-1a of the bytes). Query options:
 * pause=1 pauses after every piece for a millisecond; hold=MS pauses after the first piece for
 * MS (scaled by gb_th_scale_ms(), like the deadlines it is measured against); early=1 answers
 * 200 from inside the first piece. Header X-Refuse: answers 403 without reading. The operation
 * is heap-allocated: its timer may outlive the answer until closed. */
typedef struct up_op {
    uv_timer_t timer;
    bool timer_open;
    gb_http_req_t *req;
    fixture_t *f;
    uint64_t bytes;
    uint64_t sum;
    bool pause_each;
    unsigned hold_ms;
    bool early;
    unsigned npieces;
} up_op_t;

static void on_up_timer_closed(uv_handle_t *h)
{
    free(gb_container_of((uv_timer_t *)h, up_op_t, timer));
}

/* The request has been answered: the operation goes, once its timer is closed. */
static void up_done(up_op_t *op)
{
    if (op->timer_open) {
        uv_close((uv_handle_t *)&op->timer, on_up_timer_closed);
    } else {
        free(op);
    }
}

static void on_up_timer(uv_timer_t *t)
{
    up_op_t *op = gb_container_of(t, up_op_t, timer);
    atomic_store(&op->f->paused, 0);
    gb_http_req_body_resume(op->req);
}

static uint64_t fnv(uint64_t h, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int on_up_chunk(gb_http_req_t *req, const char *data, size_t len, void *ctx)
{
    up_op_t *op = ctx;
    op->bytes += len;
    op->sum = fnv(op->sum, data, len);
    op->npieces++;
    if (op->early) {
        gb_http_respond(req, 200, "text/plain", NULL, "early", 5);
        up_done(op);
        return 0;
    }
    unsigned ms = op->npieces == 1 && op->hold_ms > 0 ? op->hold_ms : op->pause_each ? 1 : 0;
    if (ms == 0) {
        return 0;
    }
    if (!op->timer_open) {
        uv_timer_init(&op->f->loop, &op->timer);
        op->timer_open = true;
    }
    uv_timer_start(&op->timer, on_up_timer, ms, 0);
    atomic_store(&op->f->paused, 1);
    atomic_fetch_add(&op->f->pauses, 1);
    return GB_HTTP_BODY_PAUSE;
}

static void on_up_end(gb_http_req_t *req, const gb_error_t *err, void *ctx)
{
    up_op_t *op = ctx;
    fixture_t *f = op->f;
    atomic_store(&f->paused, 0);
    if (err != NULL) {
        atomic_store(&f->last_err_status, err->status);
        if (strcmp(err->code, "incomplete_body") == 0) {
            atomic_fetch_add(&f->gone_ends, 1);
        }
        atomic_fetch_add(&f->ends_err, 1);
        gb_http_respond_error(req, err);
    } else {
        char out[64];
        int n = snprintf(out, sizeof(out), "bytes=%llu sum=%016llx", (unsigned long long)op->bytes,
                         (unsigned long long)op->sum);
        atomic_fetch_add(&f->ends_ok, 1);
        gb_http_respond(req, 200, "text/plain", NULL, out, (size_t)n);
    }
    up_done(op);
}

static void on_up(gb_http_req_t *req, void *ctx)
{
    fixture_t *f = ctx;
    gb_str_t v;
    uint64_t ms = 0;

    atomic_fetch_add(&f->handler_calls, 1);
    if (gb_http_req_header(req, "x-refuse").p != NULL) {
        gb_http_respond_errorf(req, 403, "forbidden", "refused before reading");
        return;
    }
    up_op_t *op = gb_xcalloc(1, sizeof(*op));
    op->req = req;
    op->f = f;
    op->sum = 1469598103934665603ULL;
    op->pause_each = gb_http_req_query(req, "pause", &v);
    op->early = gb_http_req_query(req, "early", &v);
    if (gb_http_req_query(req, "hold", &v) && gb_str_to_u64(v, 60000, &ms)) {
        op->hold_ms = gb_th_scale_ms((unsigned)ms);
    }
    gb_http_req_body_stream(req, on_up_chunk, on_up_end, op);
}

static void on_fast(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_http_respond(req, 200, "text/plain", NULL, "fast", 4);
}

static void on_echo(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_http_respond(req, 200, "text/plain", NULL, req->body.data, req->body.len);
}

/* ---- the server thread ---- */

static void on_server_done(void *arg)
{
    fixture_t *f = arg;
    atomic_store(&f->done_fired, 1);
    uv_close((uv_handle_t *)&f->wake, NULL);
}

static void on_wake(uv_async_t *a)
{
    fixture_t *f = gb_container_of(a, fixture_t, wake);
    if (atomic_load(&f->stop_requested)) {
        gb_http_server_shutdown(f->server, on_server_done, f);
    }
}

static void *server_thread(void *arg)
{
    fixture_t *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* The body's deadline (for progress), before gb_th_scale_ms(). */
#define BODY_TIMEOUT_MS 300

static gb_http_config_t test_config(void)
{
    gb_http_config_t cfg = {
        .listen = "127.0.0.1:0",
        .max_header_bytes = 2048,
        .max_body_bytes = 4096, /* the non-streamed routes' limit; /up has its own */
        .max_connections = 16,
        .header_timeout_ms = gb_th_scale_ms(1000),
        .body_timeout_ms = gb_th_scale_ms(BODY_TIMEOUT_MS),
        .idle_timeout_ms = gb_th_scale_ms(2000),
        .write_timeout_ms = gb_th_scale_ms(2000),
        .backlog = 64,
    };
    return cfg;
}

static void start_server(fixture_t *f)
{
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->router = gb_http_router_new();
    gb_http_router_add_streamed(f->router, GB_HTTP_POST, "/up", UP_LIMIT, on_up, f);
    gb_http_router_add(f->router, GB_HTTP_GET, "/fast", on_fast, f);
    gb_http_router_add(f->router, GB_HTTP_POST, "/echo", on_echo, f);
    gb_http_config_t cfg = test_config();
    assert_int_equal(gb_http_server_new(&f->loop, &cfg, f->router, &f->server), 0);
    f->port = gb_http_server_port(f->server);
    uv_async_init(&f->loop, &f->wake, on_wake);
    assert_int_equal(pthread_create(&f->thread, NULL, server_thread, f), 0);
    f->running = true;
}

static void stop_server(fixture_t *f)
{
    atomic_store(&f->stop_requested, 1);
    uv_async_send(&f->wake);
    pthread_join(f->thread, NULL);
    f->running = false;
    assert_int_equal(atomic_load(&f->done_fired), 1);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    gb_http_server_free(f->server);
    gb_http_router_free(f->router);
}

static int setup(void **state)
{
    fixture_t *f = test_calloc(1, sizeof(*f));
    start_server(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->running) {
        stop_server(f);
    }
    test_free(f);
    return 0;
}

/* ---- client helpers (main thread) ---- */

static void send_str(gb_th_conn_t *c, const char *s)
{
    assert_int_equal(gb_th_conn_send(c, s, strlen(s)), 0);
}

/* Sleeps ms scaled by gb_th_scale_ms(). */
static void sleep_ms(unsigned ms)
{
    gb_th_sleep_ms(gb_th_scale_ms(ms));
}

/* Waits until *v reaches want. Here and below, as in the harness, timeouts are scaled by
 * gb_th_scale_ms(). */
static bool wait_for(atomic_int *v, int want, unsigned timeout_ms)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(timeout_ms);
    while (atomic_load(v) < want) {
        if (gb_time_mono_ms() > deadline) {
            return false;
        }
        gb_th_sleep_ms(2);
    }
    return true;
}

/* Reads raw bytes until c->in holds a full head; returns it and leaves the rest. */
static char *read_head(gb_th_conn_t *c, unsigned timeout_ms)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(timeout_ms);
    for (;;) {
        const char *end = c->in.data != NULL ? strstr(c->in.data, "\r\n\r\n") : NULL;
        if (end != NULL) {
            size_t n = (size_t)(end - c->in.data) + 4;
            char *head = gb_xstrndup(c->in.data, n);
            gb_buf_consume(&c->in, n);
            return head;
        }
        int64_t left = deadline - gb_time_mono_ms();
        struct pollfd pfd = {c->fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
            return NULL;
        }
        char chunk[4096];
        ssize_t n = recv(c->fd, chunk, sizeof(chunk), 0);
        if (n <= 0) {
            return NULL;
        }
        gb_buf_append(&c->in, chunk, (size_t)n);
    }
}

static char *make_body(size_t len)
{
    char *b = gb_xmalloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        b[i] = (char)('a' + (i * 7 + i / 13) % 26);
    }
    b[len] = '\0';
    return b;
}

static void expect_sum(const gb_th_resp_t *r, const char *body, size_t len)
{
    char want[64];
    snprintf(want, sizeof(want), "bytes=%zu sum=%016llx", len,
             (unsigned long long)fnv(1469598103934665603ULL, body, len));
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, want);
}

/* ---- tests ---- */

static void test_streamed_body_arrives_in_pieces_and_the_connection_is_reused(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;
    size_t len = (size_t)3 << 20;
    char *body = make_body(len);
    char head[128];

    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    /* Far over max_body_bytes: the route's own limit applies, and nothing holds the body. */
    snprintf(head, sizeof(head),
             "POST /up?pause=1 HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", len);
    send_str(&c, head);
    assert_int_equal(gb_th_conn_send(&c, body, len), 0);
    gb_th_conn_read(&c, &r, 10000);
    expect_sum(&r, body, len);
    assert_false(r.closed);
    gb_th_resp_free(&r);
    assert_true(atomic_load(&f->pauses) > 1);
    /* Same connection, next request, then a streamed one without a body at all. */
    send_str(&c, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    assert_string_equal(r.body, "fast");
    gb_th_resp_free(&r);
    send_str(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    expect_sum(&r, "", 0);
    assert_false(r.closed);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
    assert_int_equal(atomic_load(&f->ends_ok), 2);
    free(body);
}

static void test_streamed_chunked_body_in_slow_pieces_then_pipelined_requests(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;
    const char *want = "hello streamed world";

    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c,
             "POST /up?pause=1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhel");
    sleep_ms(20);
    send_str(&c, "lo \r\n9\r\nstreamed \r\n");
    sleep_ms(20);
    /* The body's end and two more requests, one of them streamed, in one send. */
    send_str(&c, "5\r\nworld\r\n0\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz"
                 "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd"
                 "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    expect_sum(&r, want, strlen(want));
    gb_th_resp_free(&r);
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "xyz");
    gb_th_resp_free(&r);
    gb_th_conn_read(&c, &r, 3000);
    expect_sum(&r, "abcd", 4);
    gb_th_resp_free(&r);
    gb_th_conn_read(&c, &r, 3000);
    assert_string_equal(r.body, "fast");
    assert_false(r.closed);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
}

static void test_streamed_refusal_without_reading_closes_the_connection(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;
    size_t len = 200000;
    char *body = make_body(len);
    char head[160];

    /* The body is sent but never read: it must not be taken for a next request. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    snprintf(head, sizeof(head),
             "POST /up HTTP/1.1\r\nHost: t\r\nX-Refuse: 1\r\nContent-Length: %zu\r\n\r\n", len);
    send_str(&c, head);
    (void)gb_th_conn_send(&c, body, len);
    send_str(&c, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 403, "forbidden");
    assert_true(r.closed);
    gb_th_resp_free(&r);
    assert_true(gb_th_conn_wait_closed(&c, 3000));
    gb_th_conn_close(&c);

    /* With Expect: 100-continue the client is told no before it sends anything. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    snprintf(head, sizeof(head),
             "POST /up HTTP/1.1\r\nHost: t\r\nX-Refuse: 1\r\nExpect: 100-continue\r\n"
             "Content-Length: %zu\r\n\r\n",
             len);
    send_str(&c, head);
    char *h = read_head(&c, 3000);
    assert_non_null(h);
    assert_non_null(strstr(h, "HTTP/1.1 403 "));
    assert_non_null(strstr(h, "Connection: close\r\n"));
    free(h);
    gb_th_conn_close(&c);

    /* And when the handler reads, the 100 comes first. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c,
             "POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    h = read_head(&c, 3000);
    assert_non_null(h);
    assert_string_equal(h, "HTTP/1.1 100 Continue\r\n\r\n");
    free(h);
    send_str(&c, "data");
    gb_th_conn_read(&c, &r, 3000);
    expect_sum(&r, "data", 4);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
    free(body);
}

static void test_streamed_limit_refuses_announced_and_chunked_bodies(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;
    char head[160];

    /* Announced over the route's limit: 413 from the head alone, the handler never runs. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    snprintf(head, sizeof(head), "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
             UP_LIMIT + 1);
    send_str(&c, head);
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 413, "body_too_large");
    assert_true(r.closed);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
    assert_int_equal(atomic_load(&f->handler_calls), 0);

    /* Chunked: counted as it comes; the handler hears 413 and answers it. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "10\r\n0123456789abcdef\r\n");
    snprintf(head, sizeof(head), "%zx\r\n", UP_LIMIT);
    send_str(&c, head);
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 413, "body_too_large");
    assert_true(r.closed);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
    assert_true(wait_for(&f->ends_err, 1, 3000));
    assert_int_equal(atomic_load(&f->last_err_status), 413);

    /* Malformed chunk framing: 400, also through the handler. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "4\r\nabcdXX\r\n");
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 400, "bad_request");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
    assert_true(wait_for(&f->ends_err, 2, 3000));
}

static void test_streamed_deadline_is_for_progress(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;

    /* A byte every 100 ms for a second: three times the 300 ms deadline, yet never idle for
     * that long, so it is served. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n");
    for (int i = 0; i < 10; i++) {
        sleep_ms(100);
        send_str(&c, "z");
    }
    gb_th_conn_read(&c, &r, 3000);
    expect_sum(&r, "zzzzzzzzzz", 10);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);

    /* A body that stalls: 408 through the handler, and the connection closes. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    int64_t t0 = gb_time_mono_ms();
    send_str(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc");
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 408, "request_timeout");
    assert_true(gb_time_mono_ms() - t0 >= (int64_t)gb_th_scale_ms(BODY_TIMEOUT_MS - 50));
    gb_th_resp_free(&r);
    assert_true(gb_th_conn_wait_closed(&c, 3000));
    gb_th_conn_close(&c);
    assert_int_equal(atomic_load(&f->last_err_status), 408);

    /* A long pause by the handler is no stall of the client's. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /up?hold=700 HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nabc");
    sleep_ms(50);
    send_str(&c, "def");
    gb_th_conn_read(&c, &r, 3000);
    expect_sum(&r, "abcdef", 6);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
}

/* Sends as much of data as the socket takes within ms without blocking; returns the count. */
static size_t send_for(int fd, const char *data, size_t len, unsigned ms)
{
    size_t sent = 0;
    int64_t deadline = gb_time_mono_ms() + ms;
    while (sent < len) {
        int64_t left = deadline - gb_time_mono_ms();
        struct pollfd pfd = {fd, POLLOUT, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
            break;
        }
        ssize_t n = send(fd, data + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        sent += (size_t)n;
    }
    return sent;
}

static void test_streamed_pause_stops_reading_the_socket(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;
    size_t len = (size_t)48 << 20;
    char *body = make_body(len);
    char head[128];

    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    snprintf(head, sizeof(head),
             "POST /up?hold=1500 HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", len);
    send_str(&c, head);
    /* The handler holds its first piece for 1.5 s: meanwhile the server reads nothing, so
     * only the kernel's buffers take bytes, a few MiB at most, never the whole body. */
    size_t sent = send_for(c.fd, body, len, gb_th_scale_ms(1000));
    assert_int_equal(atomic_load(&f->paused), 1);
    assert_true(sent < len / 2);
    /* Then it reads on, and all of it arrives intact. */
    assert_int_equal(gb_th_conn_send(&c, body + sent, len - sent), 0);
    gb_th_conn_read(&c, &r, 20000);
    expect_sum(&r, body, len);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
    free(body);
}

static void test_streamed_client_leaving_mid_body_reaches_the_handler(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;

    /* Leaves while the body is being read. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nsome");
    assert_true(wait_for(&f->handler_calls, 1, 3000));
    gb_th_conn_close(&c);
    assert_true(wait_for(&f->gone_ends, 1, 3000));

    /* Leaves while the handler holds a piece: heard once reading resumes. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /up?hold=200 HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nsome");
    assert_true(wait_for(&f->paused, 1, 3000));
    gb_th_conn_close(&c);
    assert_true(wait_for(&f->gone_ends, 2, 3000));
    assert_int_equal(atomic_load(&f->last_err_status), 400);

    /* The server is none the worse. */
    gb_th_request(f->port, "GET", "/fast", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    assert_int_equal(atomic_load(&f->ends_ok), 0);
}

static void test_streamed_answer_mid_body_closes_after_it(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;

    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /up?early=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nfirst");
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "early");
    assert_true(r.closed);
    gb_th_resp_free(&r);
    assert_true(gb_th_conn_wait_closed(&c, 3000));
    gb_th_conn_close(&c);
    assert_int_equal(atomic_load(&f->ends_ok) + atomic_load(&f->ends_err), 0);
}

static void test_streamed_shutdown_ends_a_body_in_progress(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;

    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\npart");
    assert_true(wait_for(&f->handler_calls, 1, 3000));
    stop_server(f);
    /* The handler heard 503 and answered it before the server finished stopping. */
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 503, "unavailable");
    assert_true(r.closed);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
    assert_int_equal(atomic_load(&f->last_err_status), 503);
}

static int group_setup(void **state)
{
    GB_UNUSED(state);
    gb_net_install_strerror();
    gb_log_set_level(GB_LOG_ERROR);
    return 0;
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_streamed_body_arrives_in_pieces_and_the_connection_is_reused),
        T(test_streamed_chunked_body_in_slow_pieces_then_pipelined_requests),
        T(test_streamed_refusal_without_reading_closes_the_connection),
        T(test_streamed_limit_refuses_announced_and_chunked_bodies),
        T(test_streamed_deadline_is_for_progress),
        T(test_streamed_pause_stops_reading_the_socket),
        T(test_streamed_client_leaving_mid_body_reaches_the_handler),
        T(test_streamed_answer_mid_body_closes_after_it),
        T(test_streamed_shutdown_ends_a_body_in_progress),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
