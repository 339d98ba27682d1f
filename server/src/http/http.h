/* http: HTTP/1.1 server on libuv + llhttp. Owns connections, parsing, limits, the router,
 * static files, response writing and server-sent-event streams. It knows nothing of
 * devices: handlers are plain callbacks registered by the api layer.
 *
 * One request at a time per connection: while a handler has not answered, further pipelined
 * bytes stay buffered, so responses always leave in request order. */
#ifndef GB_HTTP_H
#define GB_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "util/util.h"

typedef struct gb_http_server gb_http_server_t;
typedef struct gb_http_conn gb_http_conn_t;
typedef struct gb_http_req gb_http_req_t;
typedef struct gb_http_router gb_http_router_t;

typedef enum gb_http_method {
    GB_HTTP_OTHER = 0,
    GB_HTTP_GET,
    GB_HTTP_HEAD,
    GB_HTTP_POST,
    GB_HTTP_PUT,
    GB_HTTP_DELETE,
    GB_HTTP_PATCH,
    GB_HTTP_OPTIONS,
} gb_http_method_t;

const char *gb_http_method_name(gb_http_method_t m);
const char *gb_http_status_reason(int status);

typedef struct gb_http_header {
    gb_str_t name;  /* as received; compare case-insensitively */
    gb_str_t value; /* leading/trailing whitespace trimmed */
} gb_http_header_t;

#define GB_HTTP_MAX_PARAMS 4

/* A request. Lives from the end of its headers until gb_http_respond*() (or the stream's end)
 * and, if the client went away first, until then too: a handler with work in flight always
 * finds its request valid. All strings point into req->arena. */
struct gb_http_req {
    gb_arena_t arena;                    /* public: per-request memory, released with the request */
    gb_http_method_t method;             /* read-only */
    gb_str_t method_name;                /* read-only: as received */
    gb_str_t target;                     /* read-only: raw request-target */
    gb_str_t path;                       /* read-only: percent-decoded path, no query */
    gb_str_t query;                      /* read-only: raw query string after '?', may be empty */
    gb_http_header_t *headers;           /* read-only */
    size_t nheaders;                     /* read-only */
    gb_buf_t body;                       /* read-only: the whole (de-chunked) body; empty on a
                                            streamed route (see gb_http_req_body_stream) */
    gb_str_t params[GB_HTTP_MAX_PARAMS]; /* read-only: router captures ({serial} etc.), decoded */
    size_t nparams;                      /* read-only */
    const char *route;     /* read-only: the matched route pattern, for metrics and logs */
    void *user;            /* public: free for the handler (e.g. the authenticated token) */
    gb_http_conn_t *conn;  /* read-only: NULL once the client has gone away */
    int64_t start_mono_ms; /* read-only */
    uint64_t conn_id;      /* read-only */
    char peer[64];         /* read-only: "ip:port" */
    bool head;             /* read-only: HEAD request, body is not sent */
    bool keep_alive;       /* private */
    int status;            /* read-only: status sent, 0 before */
    uint8_t state;         /* private */
};

/* Handlers answer exactly once, now or later, with one of the gb_http_respond* calls or by
 * turning the request into a stream. A handler may answer from inside its own call or from any
 * later callback on the loop; the next pipelined request never starts inside that call. */
typedef void (*gb_http_handler_cb)(gb_http_req_t *req, void *ctx);

/* Header lookup, case-insensitive; NULL slice (p == NULL) when absent. */
gb_str_t gb_http_req_header(const gb_http_req_t *req, const char *name);
/* Query parameter lookup, percent-decoded into req->arena ('+' is a space, as browsers' forms
 * and URLSearchParams encode it). Returns false when absent. A parameter given twice yields
 * the first. */
bool gb_http_req_query(gb_http_req_t *req, const char *name, gb_str_t *value);
/* True when the request's If-None-Match names etag (a quoted entity tag), or is "*": the
 * comparison is weak (RFC 9110 section 13.1.2), so W/"x" matches "x". */
bool gb_http_req_etag_matches(const gb_http_req_t *req, const char *etag);
/* True once the peer has closed or the connection failed. */
bool gb_http_req_gone(const gb_http_req_t *req);

/* Extra response headers: "Name: value\r\n" lines, may be NULL. The body is borrowed (copied if
 * the socket cannot take it at once). Content-Length is added; HEAD requests and 1xx/204/304
 * get no body. Once this returns, req belongs to the server again: do not touch it. */
void gb_http_respond(gb_http_req_t *req, int status, const char *content_type,
                     const char *extra_headers, const void *body, size_t len);
/* Content-Type application/json. */
void gb_http_respond_json(gb_http_req_t *req, int status, const gb_buf_t *json);
/* The contract's error body: {"error": {...}}. */
void gb_http_respond_error(gb_http_req_t *req, const gb_error_t *err);
/* Shorthand for gb_error_set + gb_http_respond_error. */
void gb_http_respond_errorf(gb_http_req_t *req, int status, const char *code, const char *fmt, ...)
    GB_PRINTF(4, 5);

/* ---- streamed request bodies ----
 * A route added with gb_http_router_add_streamed() takes bodies too large to hold: its handler
 * runs as soon as the request's head is in, before any of the body is read, and req->body
 * stays empty. A Content-Length over the route's limit is refused with 413 before that.
 *
 * The handler may answer at once without reading the body (401, 403, 415...): the connection
 * then closes after the answer (the unread body could not be told from a next request), and a
 * client that sent "Expect: 100-continue" is spared the upload. Or it calls
 * gb_http_req_body_stream() (once, now or from a later callback) and the body comes in pieces:
 *   - on_chunk gets each piece (borrowed: valid during the call only) and returns 0 for more, or
 *     GB_HTTP_BODY_PAUSE: it keeps that piece, and no more is read from the socket (so memory
 *     stays bounded) until gb_http_req_body_resume(). No body timer runs while paused.
 *   - on_end fires once: err NULL when the whole body has arrived; else err says why it ended
 *     early, as the answer the client should get: 413 body_too_large (a chunked body passed the
 *     limit), 408 request_timeout (no byte for body_timeout_ms while reading), 400 bad_request
 *     (malformed chunked framing), 400 incomplete_body (the client went away; the answer then
 *     goes nowhere, see gb_http_req_gone) or 503 unavailable (the server is shutting down).
 * Neither fires once the handler has answered, which it may do at any time, from inside
 * on_chunk as well; it must answer exactly once, after on_end at the latest, even when the
 * client has gone (that releases the request). After an early end the connection closes.
 * Callbacks never fire from inside gb_http_req_body_stream() or gb_http_req_body_resume(): the
 * reading goes on from the loop. A handler that holds a piece's work in flight (a database
 * write) pauses, so at most one such piece is outstanding; on_end may still fire while it is
 * paused (client gone, shutdown), and the handler then answers once its work is done. */
#define GB_HTTP_BODY_PAUSE 1
typedef int (*gb_http_body_chunk_cb)(gb_http_req_t *req, const char *data, size_t len, void *ctx);
typedef void (*gb_http_body_end_cb)(gb_http_req_t *req, const gb_error_t *err, void *ctx);
/* Starts reading a streamed route's body (see above); asserts that the route is streamed and
 * that the body is not being read already. */
void gb_http_req_body_stream(gb_http_req_t *req, gb_http_body_chunk_cb on_chunk,
                             gb_http_body_end_cb on_end, void *ctx);
/* Goes on reading after on_chunk returned GB_HTTP_BODY_PAUSE; does nothing otherwise. */
void gb_http_req_body_resume(gb_http_req_t *req);

/* ---- streams (server-sent events) ----
 * gb_http_stream_start() sends the status line and headers (no Content-Length; the connection
 * is not reused). Writes are queued; when more than max_queued bytes are waiting for a slow
 * reader, the write fails with GB_EBUSY and the stream is closed. on_close fires once when the
 * stream ends for any reason (client gone, overflow, gb_http_stream_end, server shutdown);
 * after it the request is freed. on_close always runs from a loop callback of its own, never
 * inside gb_http_stream_write() or gb_http_stream_end(). A write after the end gives
 * GB_ECLOSED. */
typedef void (*gb_http_stream_close_cb)(gb_http_req_t *req, void *ctx);
void gb_http_stream_start(gb_http_req_t *req, const char *content_type, const char *extra_headers,
                          size_t max_queued, gb_http_stream_close_cb on_close, void *ctx);
int gb_http_stream_write(gb_http_req_t *req, const void *data, size_t len) GB_MUST_CHECK;
void gb_http_stream_end(gb_http_req_t *req);

/* ---- router ---- */
/* Patterns are literal paths with {name} segments ("/api/v1/devices/{serial}/events"). A path
 * that matches a pattern under another method gets 405 with an Allow header; no match at all
 * falls through to static files for GET/HEAD, else 404. Errors are the contract's JSON. */
gb_http_router_t *gb_http_router_new(void);
void gb_http_router_free(gb_http_router_t *r);
void gb_http_router_add(gb_http_router_t *r, gb_http_method_t method, const char *pattern,
                        gb_http_handler_cb cb, void *ctx);
/* A route whose handler runs once the head is in and reads the body in pieces, up to
 * max_body_bytes (0: the server's max_body_bytes); see "streamed request bodies" above. */
void gb_http_router_add_streamed(gb_http_router_t *r, gb_http_method_t method, const char *pattern,
                                 size_t max_body_bytes, gb_http_handler_cb cb, void *ctx);
/* Calls fn once per registered route, in registration order. */
void gb_http_router_foreach(const gb_http_router_t *r,
                            void (*fn)(gb_http_method_t method, const char *pattern, void *arg),
                            void *arg);

/* ---- server ----
 * A zero limit or timeout takes the default: 16 KiB of head, 1 MiB of body, 10000 connections,
 * 10 s for a head, 30 s for a body, 60 s idle, 30 s without write progress, backlog 511. */
typedef struct gb_http_config {
    const char *listen;         /* "host:port"; port 0 picks a free one */
    const char *web_dir;        /* static files root, NULL for none */
    size_t max_header_bytes;    /* request line + headers; over it: 431 */
    size_t max_body_bytes;      /* over it: 413, checked as bytes arrive (streamed routes have
                                   their own limit) */
    unsigned max_connections;   /* over it: new connections get a 503 and are closed */
    unsigned header_timeout_ms; /* a request's head must arrive within this */
    unsigned body_timeout_ms;   /* a request's body must arrive within this; a streamed body
                                   must not stall this long while it is read */
    unsigned idle_timeout_ms;   /* keep-alive connection with no request */
    unsigned write_timeout_ms;  /* a response write that makes no progress for this long closes */
    int backlog;
    unsigned reserved_fds; /* descriptors the process needs besides client sockets (database,
                              files, the loop's own); 0: 64. max_connections is lowered to fit
                              the open-file limit with these kept free (logged once). */
} gb_http_config_t;

/* Binds and listens. The router stays owned by the caller and must outlive the server.
 * Returns 0 or a negative libuv/GB_E* error. The process must ignore SIGPIPE
 * (gb_net_install_strerror() and gb_net_signals_start() do). */
int gb_http_server_new(uv_loop_t *loop, const gb_http_config_t *cfg, gb_http_router_t *router,
                       gb_http_server_t **out) GB_MUST_CHECK;
/* The bound port (useful with port 0). */
int gb_http_server_port(const gb_http_server_t *s);
/* Stops accepting; idle connections close now, busy ones after their current response;
 * streams end. done fires once every connection is closed and every handle is released;
 * then gb_http_server_free() may be called. */
void gb_http_server_shutdown(gb_http_server_t *s, void (*done)(void *arg), void *arg);
void gb_http_server_free(gb_http_server_t *s);
/* Appends Prometheus text: gb_http_requests_total{route,method,status},
 * gb_http_request_duration_seconds histogram, gb_http_open_connections. */
void gb_http_server_write_metrics(const gb_http_server_t *s, gb_buf_t *out);

#endif
