/* Integration tests of the http layer alone, over real sockets: the server runs its own loop on
 * a thread with test handlers (one answers later from a timer), and the test drives it from the
 * main thread with the harness's blocking client: keep-alive, pipelining, chunked bodies,
 * limits, timeouts, the connection cap, 404/405, static files and their containment, streams,
 * a client leaving mid-request, logs, metrics and graceful shutdown. Every test ends with the
 * shutdown's done callback and uv_loop_close() == 0. The server's deadlines and the test's
 * sleeps and waits around them are scaled by gb_th_scale_ms() (GB_TEST_TIME_SCALE), so a slow
 * run (under valgrind) keeps their relations: a sleep below a deadline stays below it. The times
 * in the comments are those at scale 1. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "harness.h"
#include "http/http.h"
#include "http/internal.h"
#include "net/net.h"

#define BIG_BODY    ((size_t)32 << 20)
#define FLOOD_CHUNK ((size_t)64 << 10)

static char big_body[BIG_BODY];
/* Handlers run on the server's thread, where cmocka's asserts must not jump: they count. */
static atomic_int handler_errors;
#define CHECK(expr)                                                    \
    do {                                                               \
        if (!(expr)) {                                                 \
            fprintf(stderr, "check failed in a handler: %s\n", #expr); \
            atomic_fetch_add(&handler_errors, 1);                      \
        }                                                              \
    } while (0)
static char web_dir[256];
static char outside_dir[300];

typedef struct fixture {
    uv_loop_t loop;
    gb_http_router_t *router;
    gb_http_server_t *server;
    uv_async_t wake;          /* main thread -> loop: shut down */
    uv_timer_t flood_timer;   /* feeds the /stream-flood stream */
    gb_http_req_t *flood_req; /* loop thread only */
    pthread_t thread;
    bool running;
    int port;
    atomic_int stop_requested;
    atomic_int done_fired;
    atomic_int slow_started;
    atomic_int slow_gone;
    atomic_int slow_answered;
    atomic_int flood_closed;
    atomic_int flood_rc;
    atomic_int hold_closed;
} fixture_t;

/* ---- handlers (loop thread) ---- */

static void on_fast(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_http_respond(req, 200, "text/plain", NULL, "fast", 4);
}

typedef struct slow_op {
    uv_timer_t timer;
    gb_http_req_t *req;
    fixture_t *f;
} slow_op_t;

/* The timer lives in the request's arena, so it is closed before the request is answered. */
static void on_slow_timer_closed(uv_handle_t *handle)
{
    slow_op_t *op = gb_container_of((uv_timer_t *)handle, slow_op_t, timer);
    if (gb_http_req_gone(op->req)) {
        atomic_fetch_add(&op->f->slow_gone, 1);
    }
    atomic_fetch_add(&op->f->slow_answered, 1);
    gb_http_respond(op->req, 200, "text/plain", NULL, "slow", 4);
}

static void on_slow_timer(uv_timer_t *timer)
{
    uv_close((uv_handle_t *)timer, on_slow_timer_closed);
}

static void on_slow(gb_http_req_t *req, void *ctx)
{
    fixture_t *f = ctx;
    gb_str_t v;
    uint64_t ms = 100;
    if (gb_http_req_query(req, "ms", &v)) {
        CHECK(gb_str_to_u64(v, 10000, &ms));
    }
    slow_op_t *op = gb_arena_alloc(&req->arena, sizeof(*op));
    op->req = req;
    op->f = f;
    uv_timer_init(&f->loop, &op->timer);
    uv_timer_start(&op->timer, on_slow_timer, ms, 0);
    atomic_fetch_add(&f->slow_started, 1);
}

static void on_echo(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_str_t ct = gb_http_req_header(req, "content-type");
    char type[128];
    snprintf(type, sizeof(type), "%.*s", (int)ct.len, ct.p != NULL ? ct.p : "text/plain");
    gb_http_respond(req, 200, type, NULL, req->body.data, req->body.len);
}

static void on_item(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_buf_t out;
    gb_str_t q;
    gb_buf_init(&out);
    gb_buf_append_str(&out, "{\"id\":");
    gb_json_quote(&out, req->params[0].p, req->params[0].len);
    if (gb_http_req_query(req, "q", &q)) {
        gb_buf_append_str(&out, ",\"q\":");
        gb_json_quote(&out, q.p, q.len);
    }
    gb_buf_append_str(&out, "}");
    gb_http_respond_json(req, 200, &out);
    gb_buf_dispose(&out);
}

static void on_item_put(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_http_respond(req, 204, NULL, NULL, NULL, 0);
}

static void on_big(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_http_respond(req, 200, "application/octet-stream", NULL, big_body, sizeof(big_body));
}

static void on_teapot(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_http_respond_errorf(req, 418, "teapot", "short and %s", "stout");
}

static void on_metrics(gb_http_req_t *req, void *ctx)
{
    fixture_t *f = ctx;
    gb_buf_t out;
    gb_buf_init(&out);
    gb_http_server_write_metrics(f->server, &out);
    gb_http_respond(req, 200, "text/plain; version=0.0.4", NULL, out.data, out.len);
    gb_buf_dispose(&out);
}

static void on_stream(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_http_stream_start(req, "text/event-stream", NULL, 1 << 20, NULL, NULL);
    for (int i = 1; i <= 3; i++) {
        char ev[32];
        int n = snprintf(ev, sizeof(ev), "data: %d\n\n", i);
        CHECK(gb_http_stream_write(req, ev, (size_t)n) == 0);
    }
    gb_http_stream_end(req);
    CHECK(gb_http_stream_write(req, "x", 1) == GB_ECLOSED);
}

static void on_hold_closed(gb_http_req_t *req, void *ctx)
{
    fixture_t *f = ctx;
    GB_UNUSED(req);
    atomic_fetch_add(&f->hold_closed, 1);
}

static void on_stream_hold(gb_http_req_t *req, void *ctx)
{
    gb_http_stream_start(req, NULL, "X-Stream: hold\r\n", 1 << 20, on_hold_closed, ctx);
    CHECK(gb_http_stream_write(req, ": hello\n\n", 9) == 0);
}

static void on_flood_tick(uv_timer_t *t)
{
    fixture_t *f = gb_container_of(t, fixture_t, flood_timer);
    if (f->flood_req == NULL) {
        uv_timer_stop(t);
        return;
    }
    int rc = gb_http_stream_write(f->flood_req, big_body, FLOOD_CHUNK);
    if (rc < 0) {
        atomic_store(&f->flood_rc, rc);
        f->flood_req = NULL;
        uv_timer_stop(t);
    }
}

static void on_flood_closed(gb_http_req_t *req, void *ctx)
{
    fixture_t *f = ctx;
    GB_UNUSED(req);
    f->flood_req = NULL;
    atomic_fetch_add(&f->flood_closed, 1);
}

static void on_stream_flood(gb_http_req_t *req, void *ctx)
{
    fixture_t *f = ctx;
    gb_http_stream_start(req, NULL, NULL, (size_t)256 << 10, on_flood_closed, f);
    f->flood_req = req;
    uv_timer_start(&f->flood_timer, on_flood_tick, 1, 1);
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
    if (atomic_load(&f->stop_requested) && !uv_is_closing((uv_handle_t *)&f->flood_timer)) {
        uv_close((uv_handle_t *)&f->flood_timer, NULL);
        gb_http_server_shutdown(f->server, on_server_done, f);
    }
}

static void *server_thread(void *arg)
{
    fixture_t *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* The deadlines, before gb_th_scale_ms(). */
#define HEADER_TIMEOUT_MS 300
#define BODY_TIMEOUT_MS   300
#define IDLE_TIMEOUT_MS   500
#define WRITE_TIMEOUT_MS  1000 /* a reader stalled by a loaded machine is not a slow client */

static gb_http_config_t test_config(void)
{
    gb_http_config_t cfg = {
        .listen = "127.0.0.1:0",
        .web_dir = web_dir,
        .max_header_bytes = 2048,
        .max_body_bytes = 4096,
        .max_connections = 8,
        .header_timeout_ms = gb_th_scale_ms(HEADER_TIMEOUT_MS),
        .body_timeout_ms = gb_th_scale_ms(BODY_TIMEOUT_MS),
        .idle_timeout_ms = gb_th_scale_ms(IDLE_TIMEOUT_MS),
        .write_timeout_ms = gb_th_scale_ms(WRITE_TIMEOUT_MS),
        .backlog = 64,
    };
    return cfg;
}

static void start_server(fixture_t *f)
{
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->router = gb_http_router_new();
    gb_http_router_add(f->router, GB_HTTP_GET, "/fast", on_fast, f);
    gb_http_router_add(f->router, GB_HTTP_GET, "/slow", on_slow, f);
    gb_http_router_add(f->router, GB_HTTP_POST, "/echo", on_echo, f);
    gb_http_router_add(f->router, GB_HTTP_GET, "/items/{id}", on_item, f);
    gb_http_router_add(f->router, GB_HTTP_PUT, "/items/{id}", on_item_put, f);
    gb_http_router_add(f->router, GB_HTTP_GET, "/big", on_big, f);
    gb_http_router_add(f->router, GB_HTTP_GET, "/teapot", on_teapot, f);
    gb_http_router_add(f->router, GB_HTTP_GET, "/metrics", on_metrics, f);
    gb_http_router_add(f->router, GB_HTTP_GET, "/stream", on_stream, f);
    gb_http_router_add(f->router, GB_HTTP_GET, "/stream-hold", on_stream_hold, f);
    gb_http_router_add(f->router, GB_HTTP_GET, "/stream-flood", on_stream_flood, f);
    gb_http_config_t cfg = test_config();
    assert_int_equal(gb_http_server_new(&f->loop, &cfg, f->router, &f->server), 0);
    /* Check files on every request, so a rewritten file is seen at once. */
    gb_http__server_set_static_ttl(f->server, 0);
    f->port = gb_http_server_port(f->server);
    assert_true(f->port > 0);
    uv_async_init(&f->loop, &f->wake, on_wake);
    uv_timer_init(&f->loop, &f->flood_timer);
    atomic_store(&f->stop_requested, 0);
    atomic_store(&f->done_fired, 0);
    assert_int_equal(pthread_create(&f->thread, NULL, server_thread, f), 0);
    f->running = true;
}

static void request_stop(fixture_t *f)
{
    atomic_store(&f->stop_requested, 1);
    uv_async_send(&f->wake);
}

static void join_server(fixture_t *f)
{
    pthread_join(f->thread, NULL);
    f->running = false;
    assert_int_equal(atomic_load(&f->done_fired), 1);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    gb_http_server_free(f->server);
    gb_http_router_free(f->router);
    f->server = NULL;
    f->router = NULL;
}

static void stop_server(fixture_t *f)
{
    request_stop(f);
    join_server(f);
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
    assert_int_equal(atomic_load(&handler_errors), 0);
    return 0;
}

/* ---- client helpers (main thread) ---- */

static void send_str(gb_th_conn_t *c, const char *s)
{
    assert_int_equal(gb_th_conn_send(c, s, strlen(s)), 0);
}

/* One raw request on a new connection; the response in r. */
static void raw_request(const fixture_t *f, const char *raw, gb_th_resp_t *r)
{
    gb_th_conn_t c;
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, raw);
    gb_th_conn_read(&c, r, 5000);
    gb_th_conn_close(&c);
}

static void get(const fixture_t *f, const char *path, const char *headers, gb_th_resp_t *r)
{
    gb_th_request(f->port, "GET", path, headers, NULL, 0, r);
}

static void assert_header(const gb_th_resp_t *r, const char *name, const char *want)
{
    char *v = gb_th_resp_header(r, name);
    if (v == NULL || strcmp(v, want) != 0) {
        fail_msg("%s: %s, want %s", name, v != NULL ? v : "(absent)", want);
    }
    free(v);
}

/* Reads raw bytes into c->in until it holds a full head; returns the head, leaves the rest.
 * Here and in the other waits below, as in the harness's, the timeout is scaled by
 * gb_th_scale_ms(). */
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

/* Reads and counts bytes until the peer closes; returns the count, or -1 on timeout. */
static long drain_until_closed(gb_th_conn_t *c, unsigned timeout_ms)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(timeout_ms);
    long total = (long)c->in.len;
    gb_buf_reset(&c->in);
    for (;;) {
        int64_t left = deadline - gb_time_mono_ms();
        struct pollfd pfd = {c->fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
            return -1;
        }
        char chunk[65536];
        ssize_t n = recv(c->fd, chunk, sizeof(chunk), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            return total;
        }
        if (n < 0) {
            return -1;
        }
        total += n;
    }
}

/* Sleeps ms scaled by gb_th_scale_ms(). */
static void sleep_ms(unsigned ms)
{
    gb_th_sleep_ms(gb_th_scale_ms(ms));
}

static bool wait_for(atomic_int *v, int want, unsigned timeout_ms)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(timeout_ms);
    while (atomic_load(v) < want) {
        if (gb_time_mono_ms() > deadline) {
            return false;
        }
        gb_th_sleep_ms(5);
    }
    return true;
}

/* ---- tests ---- */

static void test_keep_alive_serves_many_requests_on_one_connection(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    for (int i = 0; i < 5; i++) {
        send_str(&c, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
        gb_th_conn_read(&c, &r, 3000);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "fast");
        assert_false(r.closed);
        char *date = gb_th_resp_header(&r, "Date");
        assert_non_null(date);
        assert_non_null(strstr(date, " GMT"));
        free(date);
        gb_th_resp_free(&r);
    }
    gb_th_conn_close(&c);
}

static void test_pipelined_requests_are_answered_in_order(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    /* The first answers late from a timer; the others must wait for it, in order. */
    send_str(&c, "GET /slow?ms=150 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz"
                 "GET /items/a%20b?q=x+y%21 HTTP/1.1\r\nHost: t\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "slow");
    gb_th_resp_free(&r);
    gb_th_conn_read(&c, &r, 3000);
    assert_string_equal(r.body, "fast");
    gb_th_resp_free(&r);
    gb_th_conn_read(&c, &r, 3000);
    assert_string_equal(r.body, "xyz");
    gb_th_resp_free(&r);
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"id\":\"a b\",\"q\":\"x y!\"}");
    assert_false(r.closed);
    gb_th_resp_free(&r);
    /* Two slow ones back to back, then a fast one: still in order. */
    send_str(&c, "GET /slow?ms=50 HTTP/1.1\r\nHost: t\r\n\r\nGET /slow?ms=10 HTTP/1.1\r\n"
                 "Host: t\r\n\r\nGET /items/3 HTTP/1.1\r\nHost: t\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    assert_string_equal(r.body, "slow");
    gb_th_resp_free(&r);
    gb_th_conn_read(&c, &r, 3000);
    assert_string_equal(r.body, "slow");
    gb_th_resp_free(&r);
    gb_th_conn_read(&c, &r, 3000);
    assert_string_equal(r.body, "{\"id\":\"3\"}");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
}

static void test_chunked_body_is_reassembled(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x-test\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n5\r\nhel");
    sleep_ms(20);
    send_str(&c, "lo\r\n1;ext=1\r\n \r\n");
    sleep_ms(20);
    send_str(&c, "6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world!");
    assert_header(&r, "Content-Type", "text/x-test");
    gb_th_resp_free(&r);
    /* The connection is still good after a chunked request. */
    send_str(&c, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    assert_string_equal(r.body, "fast");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
}

static void test_expect_100_continue_is_answered(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 "Content-Length: 4\r\n\r\n");
    char *head = read_head(&c, 3000);
    assert_non_null(head);
    assert_string_equal(head, "HTTP/1.1 100 Continue\r\n\r\n");
    free(head);
    send_str(&c, "data");
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "data");
    gb_th_resp_free(&r);
    /* Too big: refused at once, without a 100. */
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 "Content-Length: 999999\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 413, "body_too_large");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
    /* An unknown expectation. */
    raw_request(f, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\n",
                &r);
    gb_th_assert_json_error(&r, 417, "expectation_failed");
    gb_th_resp_free(&r);
}

static void test_http10_and_connection_close_are_honoured(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;

    /* HTTP/1.0 without keep-alive: answered, then closed. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "GET /fast HTTP/1.0\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_true(r.closed);
    gb_th_resp_free(&r);
    assert_true(gb_th_conn_wait_closed(&c, 3000));
    gb_th_conn_close(&c);

    /* HTTP/1.0 asking for keep-alive gets it. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "GET /fast HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Connection", "keep-alive");
    gb_th_resp_free(&r);
    send_str(&c, "GET /fast HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);

    /* HTTP/1.1 with Connection: close; a pipelined request after it is never answered. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "GET /fast HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                 "GET /items/x HTTP/1.1\r\nHost: t\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_true(r.closed);
    gb_th_resp_free(&r);
    assert_true(gb_th_conn_wait_closed(&c, 3000));
    gb_th_conn_close(&c);
}

static void test_header_limit_gives_431(void **state)
{
    fixture_t *f = *state;
    gb_buf_t req;
    gb_th_resp_t r;
    gb_buf_init(&req);
    gb_buf_append_str(&req, "GET /fast HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 100; i++) {
        gb_buf_appendf(&req, "X-Filler-%d: %s\r\n", i, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    }
    gb_buf_append_str(&req, "\r\n");
    raw_request(f, req.data, &r);
    gb_th_assert_json_error(&r, 431, "header_too_large");
    assert_true(r.closed);
    gb_th_resp_free(&r);
    /* One huge URL, sent in pieces. */
    gb_th_conn_t c;
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "GET /");
    for (int i = 0; i < 5; i++) {
        char part[1024];
        memset(part, 'u', sizeof(part) - 1);
        part[sizeof(part) - 1] = '\0';
        if (gb_th_conn_send(&c, part, strlen(part)) < 0) {
            break;
        }
    }
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 431, "header_too_large");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);
    gb_buf_dispose(&req);
}

static void test_body_limit_gives_413_before_the_body_arrives(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;

    /* Announced too large: refused from the headers alone. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10485760\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 413, "body_too_large");
    assert_true(r.closed);
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);

    /* Chunked: refused as soon as a chunk header would pass the limit. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[1100];
    int n = snprintf(chunk, sizeof(chunk), "400\r\n");
    memset(chunk + n, 'z', 1024);
    memcpy(chunk + n + 1024, "\r\n", 2);
    int sent = 0;
    for (int i = 0; i < 8; i++) {
        if (gb_th_conn_send(&c, chunk, (size_t)n + 1026) == 0) {
            sent++;
        }
    }
    assert_true(sent >= 5);
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 413, "body_too_large");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);

    /* One chunk announcing more than the limit is refused before its bytes come. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "100000\r\n");
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 413, "body_too_large");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);

    /* Just under the limit is fine. */
    char *body = gb_xmalloc(4096);
    memset(body, 'b', 4096);
    gb_th_request(f->port, "POST", "/echo", NULL, body, 4096, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 4096);
    gb_th_resp_free(&r);
    free(body);
}

static void test_timeouts_close_slow_clients(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;

    /* Slowloris: half a request line, then a byte now and then: the header deadline runs from
     * the first byte, not the last. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    int64_t t0 = gb_time_mono_ms();
    send_str(&c, "GET /fa");
    sleep_ms(100);
    send_str(&c, "s");
    sleep_ms(100);
    send_str(&c, "t");
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 408, "request_timeout");
    gb_th_resp_free(&r);
    assert_true(gb_th_conn_wait_closed(&c, 3000));
    int64_t took = gb_time_mono_ms() - t0;
    /* Closed by the deadline, not at once. */
    assert_true(took >= (int64_t)gb_th_scale_ms(HEADER_TIMEOUT_MS - 50));
    gb_th_conn_close(&c);

    /* A body that stops half-way. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc");
    gb_th_conn_read(&c, &r, 3000);
    gb_th_assert_json_error(&r, 408, "request_timeout");
    gb_th_resp_free(&r);
    assert_true(gb_th_conn_wait_closed(&c, 3000));
    gb_th_conn_close(&c);

    /* An idle keep-alive connection. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    t0 = gb_time_mono_ms();
    assert_true(gb_th_conn_wait_closed(&c, 3000));
    took = gb_time_mono_ms() - t0;
    assert_true(took >= (int64_t)gb_th_scale_ms(IDLE_TIMEOUT_MS - 100));
    gb_th_conn_close(&c);

    /* A client that does not read a large response: the write deadline closes it. The server
     * counts the close; up to five write timeouts are allowed for it, so the deadline fires
     * even on a loaded machine whose timers run late. Only then does the client read. */
    long timeouts0 = gb_th_metric(f->port, "gb_http_timeouts_total");
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(5 * WRITE_TIMEOUT_MS);
    while (gb_th_metric(f->port, "gb_http_timeouts_total") == timeouts0 &&
           gb_time_mono_ms() < deadline) {
        sleep_ms(50);
    }
    long got = drain_until_closed(&c, 5000);
    assert_true(got >= 0);
    assert_true(got < (long)BIG_BODY);
    gb_th_conn_close(&c);

    get(f, "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "gb_http_timeouts_total 0\n"));
    gb_th_resp_free(&r);
}

static void test_large_response_is_written_in_full(void **state)
{
    fixture_t *f = *state;
    gb_th_resp_t r;
    /* Far beyond the socket buffer: the rest goes out through libuv's queue. */
    get(f, "/big", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, BIG_BODY);
    gb_th_resp_free(&r);
}

static void test_connection_cap_refuses_extra_clients(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c[8], extra;
    gb_th_resp_t r;
    for (int i = 0; i < 8; i++) {
        assert_int_equal(gb_th_conn_open(&c[i], f->port), 0);
        send_str(&c[i], "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
        gb_th_conn_read(&c[i], &r, 3000);
        assert_int_equal(r.status, 200);
        gb_th_resp_free(&r);
    }
    /* The ninth is accepted and turned away at once: a 503, or a bare close. */
    assert_int_equal(gb_th_conn_open(&extra, f->port), 0);
    gb_th_conn_read(&extra, &r, 3000);
    if (r.status != 0) {
        gb_th_assert_json_error(&r, 503, "unavailable");
        assert_true(r.closed);
    }
    gb_th_resp_free(&r);
    gb_th_conn_close(&extra);
    /* Once one leaves, a new client is served. */
    gb_th_conn_close(&c[0]);
    sleep_ms(100);
    get(f, "/fast", NULL, &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    for (int i = 1; i < 8; i++) {
        gb_th_conn_close(&c[i]);
    }
    sleep_ms(100);
    get(f, "/metrics", NULL, &r);
    assert_non_null(strstr(r.body, "gb_http_connections_rejected_total 1\n"));
    gb_th_resp_free(&r);
}

static void test_404_and_405_are_json_with_allow(void **state)
{
    fixture_t *f = *state;
    gb_th_resp_t r;
    raw_request(f, "DELETE /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    gb_th_assert_json_error(&r, 404, "not_found");
    assert_false(r.closed);
    gb_th_resp_free(&r);
    raw_request(f, "DELETE /items/7 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    gb_th_assert_json_error(&r, 405, "method_not_allowed");
    assert_header(&r, "Allow", "GET, HEAD, PUT");
    gb_th_resp_free(&r);
    raw_request(f, "POST /fast HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi", &r);
    gb_th_assert_json_error(&r, 405, "method_not_allowed");
    assert_header(&r, "Allow", "GET, HEAD");
    gb_th_resp_free(&r);
    raw_request(f, "PUT /items/7 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r);
    assert_int_equal(r.status, 204);
    gb_th_resp_free(&r);
    get(f, "/teapot", NULL, &r);
    gb_th_assert_json_error(&r, 418, "teapot");
    assert_string_equal(r.body,
                        "{\"error\":{\"code\":\"teapot\",\"message\":\"short and stout\"}}");
    gb_th_resp_free(&r);
    get(f, "/items/%zz", NULL, &r);
    gb_th_assert_json_error(&r, 400, "bad_request");
    gb_th_resp_free(&r);
}

static void test_malformed_requests_get_400_and_close(void **state)
{
    fixture_t *f = *state;
    static const char *const junk[] = {
        "THIS IS NOT HTTP\r\n\r\n",
        "GET /fast HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET /fast HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET /fast HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "GET /fast\x01 HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(junk); i++) {
        gb_th_conn_t c;
        gb_th_resp_t r;
        assert_int_equal(gb_th_conn_open(&c, f->port), 0);
        send_str(&c, junk[i]);
        gb_th_conn_read(&c, &r, 3000);
        if (r.status != 400) {
            fail_msg("case %zu: status %d", i, r.status);
        }
        gb_th_assert_json_error(&r, 400, "bad_request");
        assert_true(r.closed);
        assert_true(gb_th_conn_wait_closed(&c, 3000));
        gb_th_resp_free(&r);
        gb_th_conn_close(&c);
    }
    gb_th_resp_t r;
    raw_request(f, "GET /fast HTTP/2.0\r\n\r\n", &r);
    gb_th_assert_json_error(&r, 505, "http_version_not_supported");
    gb_th_resp_free(&r);
}

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

static void test_static_files_types_etags_head_and_index(void **state)
{
    fixture_t *f = *state;
    gb_th_resp_t r;

    get(f, "/", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "<!doctype html><title>t</title>");
    assert_header(&r, "Content-Type", "text/html; charset=utf-8");
    assert_header(&r, "Cache-Control", "no-cache");
    assert_header(&r, "X-Content-Type-Options", "nosniff");
    assert_header(&r, "X-Frame-Options", "DENY");
    assert_header(&r, "Referrer-Policy", "no-referrer");
    assert_header(&r, "Content-Security-Policy",
                  "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                  "script-src 'self'; connect-src 'self'; frame-ancestors 'none'");
    char *etag = gb_th_resp_header(&r, "ETag");
    assert_non_null(etag);
    assert_int_equal(etag[0], '"');
    gb_th_resp_free(&r);

    /* The same file by its name has the same tag; a match gives 304 without a body. */
    char h[200];
    snprintf(h, sizeof(h), "If-None-Match: \"nope\", %s\r\n", etag);
    get(f, "/index.html", h, &r);
    assert_int_equal(r.status, 304);
    assert_int_equal(r.body_len, 0);
    assert_header(&r, "ETag", etag);
    gb_th_resp_free(&r);
    get(f, "/index.html", "If-None-Match: \"other\"\r\n", &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);

    static const struct {
        const char *path;
        const char *type;
    } types[] = {
        {"/app.js", "text/javascript; charset=utf-8"},
        {"/mod.mjs", "text/javascript; charset=utf-8"},
        {"/style.css", "text/css; charset=utf-8"},
        {"/data.json", "application/json"},
        {"/icon.svg", "image/svg+xml"},
        {"/notes.txt", "text/plain; charset=utf-8"},
        {"/app.js.map", "application/json"},
        {"/font.woff2", "font/woff2"},
        {"/favicon.ico", "image/x-icon"},
        {"/img.png", "image/png"},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(types); i++) {
        get(f, types[i].path, NULL, &r);
        if (r.status != 200) {
            fail_msg("%s: %d", types[i].path, r.status);
        }
        assert_header(&r, "Content-Type", types[i].type);
        gb_th_resp_free(&r);
    }

    /* HEAD: the same head, no body. The next pipelined response starts right after it. */
    gb_th_conn_t c;
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "HEAD /app.js HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    char *head = read_head(&c, 3000);
    assert_non_null(head);
    assert_non_null(strstr(head, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(head, "Content-Length: 20\r\n"));
    assert_non_null(strstr(head, "ETag: \""));
    free(head);
    gb_th_conn_read(&c, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "fast");
    gb_th_resp_free(&r);
    /* HEAD of a route handler drops the body too. */
    send_str(&c, "HEAD /items/9 HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    head = read_head(&c, 3000);
    assert_non_null(head);
    assert_non_null(strstr(head, "Content-Length: 10\r\n"));
    free(head);
    gb_th_conn_read(&c, &r, 3000);
    assert_string_equal(r.body, "fast");
    gb_th_resp_free(&r);
    gb_th_conn_close(&c);

    /* Directories: index.html behind a slash, a redirect without one. */
    get(f, "/sub/", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "sub index");
    gb_th_resp_free(&r);
    get(f, "/sub", NULL, &r);
    assert_int_equal(r.status, 301);
    assert_header(&r, "Location", "/sub/");
    gb_th_resp_free(&r);
    get(f, "/empty/", NULL, &r);
    gb_th_assert_json_error(&r, 404, "not_found");
    gb_th_resp_free(&r);
    get(f, "/missing.js", NULL, &r);
    gb_th_assert_json_error(&r, 404, "not_found");
    gb_th_resp_free(&r);
    /* A symlink that stays inside the root is followed. */
    get(f, "/alias.js", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "export const x = 1;\n");
    gb_th_resp_free(&r);

    /* A changed file gets a new body and a new tag. */
    write_file(web_dir, "index.html", "<!doctype html><title>t2</title>");
    snprintf(h, sizeof(h), "If-None-Match: %s\r\n", etag);
    get(f, "/", h, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "<!doctype html><title>t2</title>");
    char *etag2 = gb_th_resp_header(&r, "ETag");
    assert_string_not_equal(etag, etag2);
    free(etag2);
    gb_th_resp_free(&r);
    write_file(web_dir, "index.html", "<!doctype html><title>t</title>");
    free(etag);

    /* Only GET and HEAD reach static files. */
    raw_request(f, "POST /app.js HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r);
    gb_th_assert_json_error(&r, 404, "not_found");
    gb_th_resp_free(&r);
}

static void test_no_way_out_of_the_web_root(void **state)
{
    fixture_t *f = *state;
    static const char *const attempts[] = {
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/sub/..%2f..%2f..%2fetc/passwd",
        "/..%5c..%5cetc%5cpasswd",
        "/sub\\..\\..\\etc\\passwd",
        "/index.html%00.js",
        "/link.txt",
        "/linkdir/secret.txt",
        "/%252e%252e/etc/passwd",
        "/.hidden",
        "/sub/.%2e/.%2e/etc/passwd",
        "//etc/passwd",
        "/fifo",
    };
    char sibling[400];
    /* The sibling directory, reached by climbing out of the root. */
    snprintf(sibling, sizeof(sibling), "/sub/../../%s/secret.txt", strrchr(outside_dir, '/') + 1);
    for (size_t i = 0; i <= GB_ARRAY_LEN(attempts); i++) {
        const char *path = i < GB_ARRAY_LEN(attempts) ? attempts[i] : sibling;
        gb_th_resp_t r;
        gb_buf_t raw;
        gb_buf_init(&raw);
        gb_buf_appendf(&raw, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
        raw_request(f, raw.data, &r);
        gb_buf_dispose(&raw);
        if (r.status != 400 && r.status != 403 && r.status != 404) {
            fail_msg("%s answered %d", path, r.status);
        }
        if (r.body != NULL &&
            (strstr(r.body, "root:") != NULL || strstr(r.body, "SECRET-CONTENT") != NULL ||
             strstr(r.body, "hidden-content") != NULL)) {
            fail_msg("%s leaked a file", path);
        }
        gb_th_resp_free(&r);
    }
}

static void test_client_leaving_before_the_answer_is_handled(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t c;
    gb_th_resp_t r;
    char req[64];
    /* The handler answers late enough for the client to have left by then. */
    snprintf(req, sizeof(req), "GET /slow?ms=%u HTTP/1.1\r\nHost: t\r\n\r\n", gb_th_scale_ms(200));
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, req);
    assert_true(wait_for(&f->slow_started, 1, 3000));
    gb_th_conn_close(&c);
    /* The handler still answers, finds the client gone, and the connection is freed. */
    assert_true(wait_for(&f->slow_answered, 1, 3000));
    assert_int_equal(atomic_load(&f->slow_gone), 1);
    sleep_ms(50);
    get(f, "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "gb_http_open_connections 1\n"));
    assert_non_null(strstr(
        r.body, "gb_http_requests_total{route=\"/slow\",method=\"GET\",status=\"200\"} 1\n"));
    gb_th_resp_free(&r);
}

static void test_streams_write_end_and_close_slow_readers(void **state)
{
    fixture_t *f = *state;
    gb_th_resp_t r;
    get(f, "/stream", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "text/event-stream");
    assert_header(&r, "Cache-Control", "no-cache");
    assert_string_equal(r.body, "data: 1\n\ndata: 2\n\ndata: 3\n\n");
    assert_true(r.closed);
    gb_th_resp_free(&r);

    /* A reader that never reads: the queue passes its bound and the stream is closed. */
    gb_th_conn_t c;
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "GET /stream-flood HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(wait_for(&f->flood_closed, 1, 10000));
    int rc = atomic_load(&f->flood_rc);
    assert_true(rc == GB_EBUSY || rc == GB_ECLOSED || rc == 0);
    gb_th_conn_close(&c);

    /* A reader that leaves: on_close fires. */
    assert_int_equal(gb_th_conn_open(&c, f->port), 0);
    send_str(&c, "GET /stream-hold HTTP/1.1\r\nHost: t\r\n\r\n");
    char *head = read_head(&c, 3000);
    assert_non_null(head);
    assert_non_null(strstr(head, "X-Stream: hold\r\n"));
    free(head);
    gb_th_conn_close(&c);
    assert_true(wait_for(&f->hold_closed, 1, 3000));
}

static void test_access_log_has_one_line_per_request_without_tokens(void **state)
{
    fixture_t *f = *state;
    gb_th_resp_t r;
    char path[] = "/tmp/gbhttp-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);

    stop_server(f);
    gb_log_set_level(GB_LOG_INFO);
    int saved = dup(2);
    dup2(fd, 2);
    start_server(f);
    get(f, "/items/42?access_token=SUPERSECRET&q=1", "Authorization: Bearer ALSOSECRET\r\n", &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    stop_server(f);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    gb_log_set_level(GB_LOG_WARN);
    start_server(f);

    char *log = gb_th_sh_line("grep -c 'route=\"/items/{id}\"' %s", path);
    assert_non_null(log);
    assert_string_equal(log, "1");
    free(log);
    log = gb_th_sh_line("grep 'route=\"/items/{id}\"' %s", path);
    assert_non_null(log);
    assert_non_null(strstr(log, "method=GET"));
    assert_non_null(strstr(log, "status=200"));
    assert_non_null(strstr(log, "conn="));
    assert_non_null(strstr(log, "peer=127.0.0.1:"));
    assert_non_null(strstr(log, "access_token=REDACTED"));
    free(log);
    assert_int_equal(gb_th_sh("grep -q SECRET %s", path), 1);
    close(fd);
    unlink(path);
}

static void test_metrics_count_by_route_pattern(void **state)
{
    fixture_t *f = *state;
    gb_th_resp_t r;
    for (int i = 0; i < 3; i++) {
        char p[32];
        snprintf(p, sizeof(p), "/items/%d", i);
        get(f, p, NULL, &r);
        gb_th_resp_free(&r);
    }
    get(f, "/app.js", NULL, &r);
    gb_th_resp_free(&r);
    get(f, "/nothing-here.js", NULL, &r);
    gb_th_resp_free(&r);
    raw_request(f, "DELETE /nope HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    gb_th_resp_free(&r);
    get(f, "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    const char *b = r.body;
    assert_non_null(strstr(b, "# HELP gb_http_requests_total "));
    assert_non_null(strstr(b, "# TYPE gb_http_requests_total counter\n"));
    assert_non_null(strstr(
        b, "gb_http_requests_total{route=\"/items/{id}\",method=\"GET\",status=\"200\"} 3\n"));
    assert_non_null(
        strstr(b, "gb_http_requests_total{route=\"static\",method=\"GET\",status=\"200\"} 1\n"));
    assert_non_null(
        strstr(b, "gb_http_requests_total{route=\"static\",method=\"GET\",status=\"404\"} 1\n"));
    assert_non_null(
        strstr(b, "gb_http_requests_total{route=\"none\",method=\"DELETE\",status=\"404\"} 1\n"));
    assert_non_null(strstr(b, "# TYPE gb_http_request_duration_seconds histogram\n"));
    assert_non_null(strstr(b, "gb_http_request_duration_seconds_bucket{route=\"/items/{id}\","
                              "method=\"GET\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(b, "gb_http_request_duration_seconds_count{route=\"/items/{id}\","
                              "method=\"GET\"} 3\n"));
    assert_non_null(strstr(b, "# TYPE gb_http_open_connections gauge\n"));
    assert_null(strstr(b, "/items/0"));
    gb_th_resp_free(&r);
}

static void test_graceful_shutdown_finishes_the_request_in_flight(void **state)
{
    fixture_t *f = *state;
    gb_th_conn_t busy, idle, stream;
    gb_th_resp_t r;

    assert_int_equal(gb_th_conn_open(&idle, f->port), 0);
    send_str(&idle, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    gb_th_conn_read(&idle, &r, 3000);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    assert_int_equal(gb_th_conn_open(&stream, f->port), 0);
    send_str(&stream, "GET /stream-hold HTTP/1.1\r\nHost: t\r\n\r\n");
    char *head = read_head(&stream, 3000);
    assert_non_null(head);
    free(head);
    /* Answered late enough to be in flight when the shutdown starts. */
    char req[64];
    snprintf(req, sizeof(req), "GET /slow?ms=%u HTTP/1.1\r\nHost: t\r\n\r\n", gb_th_scale_ms(300));
    assert_int_equal(gb_th_conn_open(&busy, f->port), 0);
    send_str(&busy, req);
    assert_true(wait_for(&f->slow_started, 1, 3000));

    request_stop(f);
    /* The idle connection and the stream close at once. */
    assert_true(gb_th_conn_wait_closed(&idle, 1000));
    assert_true(drain_until_closed(&stream, 1000) >= 0);
    assert_true(wait_for(&f->hold_closed, 1, 1000));
    /* The busy one gets its answer, marked as the last. */
    gb_th_conn_read(&busy, &r, 3000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "slow");
    assert_true(r.closed);
    gb_th_resp_free(&r);
    gb_th_conn_close(&busy);
    gb_th_conn_close(&idle);
    gb_th_conn_close(&stream);
    join_server(f);
    /* Nobody listens any more. */
    gb_th_conn_t late;
    assert_int_equal(gb_th_conn_open(&late, f->port), -1);
}

static void on_test_signal(int signum, void *arg)
{
    int *got = arg;
    *got = signum;
}

static void on_signal_timeout(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, NULL);
}

static void test_net_signals_reach_the_loop_and_close_clean(void **state)
{
    GB_UNUSED(state);
    uv_loop_t loop;
    uv_timer_t guard;
    gb_net_signals_t sig;
    int got = 0;

    assert_string_equal(gb_strerror(UV_ECONNRESET), uv_strerror(UV_ECONNRESET));
    assert_string_equal(gb_strerror(GB_EBUSY), "queue full");
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(gb_net_signals_start(&loop, on_test_signal, &got, &sig), 0);
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, on_signal_timeout, gb_th_scale_ms(2000), 0);
    assert_int_equal(uv_kill(getpid(), SIGTERM), 0);
    while (got == 0 && uv_loop_alive(&loop)) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(got, SIGTERM);
    gb_net_signals_stop(&sig);
    gb_net_signals_stop(&sig);
    uv_timer_stop(&guard);
    if (!uv_is_closing((uv_handle_t *)&guard)) {
        uv_close((uv_handle_t *)&guard, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(sig.open_handles, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the web root ---- */

static int group_setup(void **state)
{
    GB_UNUSED(state);
    gb_net_install_strerror();
    gb_log_set_level(GB_LOG_WARN);
    snprintf(web_dir, sizeof(web_dir), "/tmp/gbhttp-web-XXXXXX");
    if (mkdtemp(web_dir) == NULL) {
        return -1;
    }
    snprintf(outside_dir, sizeof(outside_dir), "%s-outside", web_dir);
    if (gb_th_sh("mkdir -p '%s/sub' '%s/empty' '%s'", web_dir, web_dir, outside_dir) != 0) {
        return -1;
    }
    write_file(web_dir, "index.html", "<!doctype html><title>t</title>");
    write_file(web_dir, "app.js", "export const x = 1;\n");
    write_file(web_dir, "mod.mjs", "export {};\n");
    write_file(web_dir, "style.css", "body{}\n");
    write_file(web_dir, "data.json", "{}\n");
    write_file(web_dir, "icon.svg", "<svg/>\n");
    write_file(web_dir, "notes.txt", "notes\n");
    write_file(web_dir, "app.js.map", "{}\n");
    write_file(web_dir, "font.woff2", "wOF2");
    write_file(web_dir, "favicon.ico", "ico");
    write_file(web_dir, "img.png", "\x89PNG");
    write_file(web_dir, ".hidden", "hidden-content");
    write_file(web_dir, "sub/index.html", "sub index");
    write_file(outside_dir, "secret.txt", "SECRET-CONTENT");
    if (gb_th_sh("ln -s '%s/secret.txt' '%s/link.txt' && ln -s '%s' '%s/linkdir' && "
                 "ln -s app.js '%s/alias.js' && mkfifo '%s/fifo'",
                 outside_dir, web_dir, outside_dir, web_dir, web_dir, web_dir) != 0) {
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    GB_UNUSED(state);
    gb_th_sh("rm -rf '%s' '%s'", web_dir, outside_dir);
    return 0;
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_keep_alive_serves_many_requests_on_one_connection),
        T(test_pipelined_requests_are_answered_in_order),
        T(test_chunked_body_is_reassembled),
        T(test_expect_100_continue_is_answered),
        T(test_http10_and_connection_close_are_honoured),
        T(test_header_limit_gives_431),
        T(test_body_limit_gives_413_before_the_body_arrives),
        T(test_timeouts_close_slow_clients),
        T(test_large_response_is_written_in_full),
        T(test_connection_cap_refuses_extra_clients),
        T(test_404_and_405_are_json_with_allow),
        T(test_malformed_requests_get_400_and_close),
        T(test_static_files_types_etags_head_and_index),
        T(test_no_way_out_of_the_web_root),
        T(test_client_leaving_before_the_answer_is_handled),
        T(test_streams_write_end_and_close_slow_readers),
        T(test_access_log_has_one_line_per_request_without_tokens),
        T(test_metrics_count_by_route_pattern),
        T(test_graceful_shutdown_finishes_the_request_in_flight),
        cmocka_unit_test(test_net_signals_reach_the_loop_and_close_clean),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
