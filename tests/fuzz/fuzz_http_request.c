/* fuzz_http_request: arbitrary bytes through a socket-less connection: llhttp glue, header and
 * body limits, chunked bodies, pipelining, routing with captures, queries, static files, an
 * answer given later (from a timer), a stream, a streamed body read in pieces with pauses, and
 * a client that leaves mid-request. Every response must start with a status line, and each
 * connection must be freed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "http/http.h"
#include "http/internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static gb_http_router_t *router;
static gb_http_server_t *server;
static char web_dir[64];

static void on_plain(gb_http_req_t *req, void *ctx)
{
    gb_str_t v;
    GB_UNUSED(ctx);
    (void)gb_http_req_query(req, "q", &v);
    (void)gb_http_req_header(req, "x-test");
    gb_http_respond(req, 200, "text/plain", NULL, req->path.p, req->path.len);
}

static void on_echo(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_http_respond(req, 200, "application/octet-stream", NULL, req->body.data, req->body.len);
}

static void on_item(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_http_respond_errorf(req, 404, "not_found", "no item %.*s", (int)req->params[0].len,
                           req->params[0].p);
}

typedef struct later {
    uv_timer_t timer;
    gb_http_req_t *req;
} later_t;

static void on_later_closed(uv_handle_t *h)
{
    later_t *l = gb_container_of((uv_timer_t *)h, later_t, timer);
    gb_http_respond(l->req, 202, "text/plain", NULL, "later", 5);
}

static void on_later_timer(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, on_later_closed);
}

static void on_later(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    later_t *l = gb_arena_alloc(&req->arena, sizeof(*l));
    l->req = req;
    uv_timer_init(&loop, &l->timer);
    uv_timer_start(&l->timer, on_later_timer, 0, 0);
}

static void on_stream(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    gb_http_stream_start(req, NULL, NULL, 1024, NULL, NULL);
    (void)gb_http_stream_write(req, "data: x\n\n", 9);
    gb_http_stream_end(req);
}

/* A streamed body: every other piece pauses it until a timer resumes it; a refusal header
 * answers without reading; the answer comes at the end (or at an early end). The operation is
 * freed once its timer has closed. */
typedef struct upload {
    uv_timer_t timer;
    gb_http_req_t *req;
    unsigned pieces;
} upload_t;

static void on_upload_closed(uv_handle_t *h)
{
    free(gb_container_of((uv_timer_t *)h, upload_t, timer));
}

static void on_upload_timer(uv_timer_t *t)
{
    gb_http_req_body_resume(gb_container_of(t, upload_t, timer)->req);
}

static int on_upload_chunk(gb_http_req_t *req, const char *data, size_t len, void *ctx)
{
    upload_t *u = ctx;
    GB_UNUSED(req);
    GB_UNUSED(data);
    GB_UNUSED(len);
    if (++u->pieces % 2 == 0) {
        uv_timer_start(&u->timer, on_upload_timer, 0, 0);
        return GB_HTTP_BODY_PAUSE;
    }
    return 0;
}

static void on_upload_end(gb_http_req_t *req, const gb_error_t *err, void *ctx)
{
    upload_t *u = ctx;
    if (err != NULL) {
        gb_http_respond_error(req, err);
    } else {
        gb_http_respond(req, 201, "text/plain", NULL, "stored", 6);
    }
    uv_close((uv_handle_t *)&u->timer, on_upload_closed);
}

static void on_upload(gb_http_req_t *req, void *ctx)
{
    GB_UNUSED(ctx);
    if (gb_http_req_header(req, "x-refuse").p != NULL) {
        gb_http_respond_errorf(req, 403, "forbidden", "refused");
        return;
    }
    upload_t *u = gb_xcalloc(1, sizeof(*u));
    u->req = req;
    uv_timer_init(&loop, &u->timer);
    gb_http_req_body_stream(req, on_upload_chunk, on_upload_end, u);
}

static void write_file(const char *name, const char *content)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", web_dir, name);
    FILE *f = fopen(path, "wb");
    if (f != NULL) {
        fputs(content, f);
        fclose(f);
    }
}

/* The web root is made at start and removed at exit (libFuzzer leaves through exit()). */
static void remove_web_dir(void)
{
    static const char *const files[] = {"index.html", "app.js", "sub/index.html", "sub", ""};
    char path[128];
    for (size_t i = 0; i < GB_ARRAY_LEN(files); i++) {
        snprintf(path, sizeof(path), "%s/%s", web_dir, files[i]);
        (void)remove(path);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    GB_UNUSED(argc);
    GB_UNUSED(argv);
    gb_log_set_level(GB_LOG_ERROR);
    snprintf(web_dir, sizeof(web_dir), "/tmp/gbfuzz-web-XXXXXX");
    if (mkdtemp(web_dir) != NULL) {
        char sub[96];
        snprintf(sub, sizeof(sub), "%s/sub", web_dir);
        mkdir(sub, 0755);
        write_file("index.html", "<!doctype html>");
        write_file("app.js", "export {};");
        write_file("sub/index.html", "sub");
        atexit(remove_web_dir);
    }
    uv_loop_init(&loop);
    router = gb_http_router_new();
    gb_http_router_add(router, GB_HTTP_GET, "/a", on_plain, NULL);
    gb_http_router_add(router, GB_HTTP_POST, "/echo", on_echo, NULL);
    gb_http_router_add(router, GB_HTTP_GET, "/items/{id}", on_item, NULL);
    gb_http_router_add(router, GB_HTTP_PUT, "/items/{id}/x/{y}", on_plain, NULL);
    gb_http_router_add(router, GB_HTTP_GET, "/later", on_later, NULL);
    gb_http_router_add(router, GB_HTTP_GET, "/stream", on_stream, NULL);
    gb_http_router_add_streamed(router, GB_HTTP_POST, "/upload", 8192, on_upload, NULL);
    gb_http_config_t cfg = {
        .web_dir = web_dir,
        .max_header_bytes = 1024,
        .max_body_bytes = 2048,
        .max_connections = 4,
    };
    if (gb_http__server_new_detached(&loop, &cfg, router, &server) != 0) {
        abort();
    }
    return 0;
}

static void check_output(const gb_buf_t *out)
{
    static const char status_line[] = "HTTP/1.1 ";
    if (out->len > 0 && (out->len < sizeof(status_line) - 1 ||
                         memcmp(out->data, status_line, sizeof(status_line) - 1) != 0)) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gb_buf_t out;
    size_t step = size;
    bool leave_early = false;

    /* The first byte picks how the bytes arrive: one read, or small pieces. */
    if (size > 0) {
        unsigned mode = data[0];
        data++;
        size--;
        step = (mode & 0x3f) == 0 ? (size > 0 ? size : 1) : (mode & 0x3f);
        leave_early = (mode & 0x40) != 0;
    }
    gb_buf_init(&out);
    gb_http_conn_t *conn = gb_http__conn_new_detached(server, &out);
    /* One connection per input: once nconns is 0 it has been freed and conn must not be read.
     * Feeding never frees synchronously (only close callbacks do), so after a feed it is safe. */
    for (size_t off = 0; off < size; off += step) {
        size_t n = size - off < step ? size - off : step;
        gb_http__conn_feed(conn, data + off, n);
        if (conn->phase == GB_HTTP_PHASE_CLOSING) {
            break;
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        if (server->nconns == 0 || conn->phase == GB_HTTP_PHASE_CLOSING) {
            break;
        }
    }
    if (!leave_early) {
        /* Let a late answer and the requests pipelined behind it run. */
        for (int i = 0; i < 8 && server->nconns > 0 && conn->phase != GB_HTTP_PHASE_CLOSING; i++) {
            uv_run(&loop, UV_RUN_NOWAIT);
        }
    }
    if (server->nconns > 0 && conn->phase != GB_HTTP_PHASE_CLOSING) {
        gb_http__conn_feed_eof(conn);
    }
    /* The connection (and an orphaned request's timer) must all be released. */
    for (int i = 0; i < 100 && server->nconns > 0; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    if (server->nconns != 0) {
        abort();
    }
    check_output(&out);
    gb_buf_dispose(&out);
    return 0;
}
