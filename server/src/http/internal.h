/* http internals shared by the files of http/: the connection, server and router structs, the
 * pure helpers (exposed as gb_http__x() so unit tests reach them through this header), the
 * static file cache and the metrics store. Nothing here is for other folders. */
#ifndef GB_HTTP_INTERNAL_H
#define GB_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>
#include <uv.h>

#include "http/http.h"
#include "util/util.h"

/* ---- pure helpers (helpers.c) ---- */

/* Percent-decodes in[0..len) into out (at least len bytes; may equal in). '+' becomes a
 * space when plus_is_space (query strings). Returns the decoded length, or -1 when an escape
 * is malformed ("%4", "%zz"). Decoded NUL bytes are kept; callers that cannot hold them check. */
long gb_http__pct_decode(const char *in, size_t len, char *out, bool plus_is_space);

/* Splits a request-target into its raw path and raw query. Accepts origin-form ("/a?b") and
 * absolute-form ("http://host/a?b", the host is ignored); a fragment is dropped. Returns false
 * for any other form ("*", authority-form, empty). */
bool gb_http__split_target(gb_str_t target, gb_str_t *path, gb_str_t *query);

/* Outcomes of gb_http__static_path(). */
enum {
    GB_HTTP_PATH_OK = 0,
    GB_HTTP_PATH_BAD = 400,    /* traversal or forbidden bytes: dot segments, %2f, \, NUL */
    GB_HTTP_PATH_HIDDEN = 404, /* a segment starts with '.': never served */
};
/* Turns a raw (still percent-encoded) URL path into a relative file path under the web root:
 * no leading '/', empty segments collapsed, a trailing '/' kept (it names a directory).
 * Refuses encoded slashes and backslashes (%2f, %5c, '\'), NUL (%00), control bytes, "." and
 * ".." segments in any spelling, and hidden files. out has room for outsz bytes (NUL
 * included). Returns GB_HTTP_PATH_OK and the length in *outlen, or a GB_HTTP_PATH_* error. */
int gb_http__static_path(gb_str_t raw_path, char *out, size_t outsz, size_t *outlen);

/* Finds name in a raw query string ("a=1&b=2"); names are compared after decoding. Returns
 * the raw (still encoded) value of the first match; a name without '=' has an empty value. */
bool gb_http__query_find(gb_str_t query, const char *name, gb_str_t *raw_value);

/* Appends the query to out with the value of every access_token parameter replaced, so a token
 * never reaches a log line. */
void gb_http__query_redact(gb_str_t query, gb_buf_t *out);

/* The Content-Type for a file name, by extension; application/octet-stream when unknown. */
const char *gb_http__content_type(const char *name, size_t len);

/* True when an If-None-Match header value matches etag (a quoted strong tag): "*", or a list
 * of tags compared weakly (W/"x" matches "x"), as RFC 9110 section 13.1.2 asks. */
bool gb_http__etag_match(gb_str_t if_none_match, const char *etag);

/* Appends s as a Prometheus label value (quotes included; \\, \" and \n escaped). */
void gb_http__prom_label(gb_buf_t *out, const char *s);

/* Maps llhttp's method to ours; GB_HTTP_OTHER for the rest. */
gb_http_method_t gb_http__method_from_llhttp(uint8_t m);

/* ---- router (router.c) ---- */

typedef struct gb_http__route gb_http__route_t;

typedef struct gb_http__match {
    const gb_http__route_t *route; /* the handler's route, NULL when none serves this method */
    const char *pattern;           /* route->pattern, or a pattern matching another method */
    gb_http_handler_cb cb;
    void *ctx;
    bool streamed;   /* the route takes its body in pieces (gb_http_router_add_streamed) */
    size_t max_body; /* a streamed route's body limit; 0: the server's max_body_bytes */
    unsigned allow;  /* bit (1 << method) for each method whose pattern matches */
    gb_str_t params[GB_HTTP_MAX_PARAMS];
    size_t nparams;
} gb_http__match_t;

/* Matches method and a raw (percent-encoded) path against the routes. Captures are decoded into
 * arena. Returns 0 with m->route set, 405 when only other methods match (m->allow says which),
 * 404 when nothing matches, 400 when a matching capture holds a malformed escape or a NUL. A
 * HEAD request falls back to the GET route of the same path. */
int gb_http__router_match(const gb_http_router_t *r, gb_http_method_t method, gb_str_t raw_path,
                          gb_arena_t *arena, gb_http__match_t *m);
/* False when no streamed route serves method: the request need not be matched before its body
 * (the agents' hot path is spared a second match). */
bool gb_http__router_may_stream(const gb_http_router_t *r, gb_http_method_t method);
/* Writes the Allow header value for an allow mask ("GET, HEAD, POST") into out. */
void gb_http__allow_header(unsigned allow, gb_buf_t *out);

/* ---- metrics (metrics.c) ---- */

#define GB_HTTP_NBUCKETS 11

typedef struct gb_http__series {
    const char *route; /* a router pattern, "static" or "none": stable pointers */
    uint8_t method;
    uint16_t status;
    uint64_t count;
} gb_http__series_t;

typedef struct gb_http__hist {
    const char *route;
    uint8_t method;
    uint64_t buckets[GB_HTTP_NBUCKETS]; /* not cumulative; summed when written */
    uint64_t count;
    double sum;
} gb_http__hist_t;

typedef struct gb_http__metrics {
    gb_http__series_t *series; /* open addressing on (route, method, status) */
    size_t nseries, cap_series;
    gb_http__hist_t *hists; /* open addressing on (route, method) */
    size_t nhists, cap_hists;
    uint64_t connections_total;
    uint64_t connections_rejected;
    uint64_t timeouts_total;
    uint64_t bad_requests_total;
} gb_http__metrics_t;

void gb_http__metrics_init(gb_http__metrics_t *m);
void gb_http__metrics_dispose(gb_http__metrics_t *m);
void gb_http__metrics_record(gb_http__metrics_t *m, const char *route, gb_http_method_t method,
                             int status, double seconds);
void gb_http__metrics_write(const gb_http__metrics_t *m, unsigned open_connections, gb_buf_t *out);

/* ---- static files (static.c) ---- */

typedef struct gb_http__static gb_http__static_t;

/* Opens the web root (resolved once with realpath). NULL when web_dir is NULL or unusable; the
 * reason is logged. */
gb_http__static_t *gb_http__static_new(const char *web_dir);
void gb_http__static_free(gb_http__static_t *st);
/* Serves req from the web root: 200/304 (HEAD included), 301 to add a directory's slash,
 * 400/404 otherwise. Always answers the request. */
void gb_http__static_serve(gb_http__static_t *st, gb_http_req_t *req, int64_t now_ms);
/* How long a cached file is trusted before it is checked again (ms; 0: every request). */
void gb_http__static_set_ttl(gb_http__static_t *st, unsigned ttl_ms);

/* ---- connections and server (conn.c, server.c) ---- */

/* Where a connection sits. Exactly one request at a time: bytes that arrive while a request is
 * handled or its response written stay in conn->in until the response has gone. */
typedef enum gb_http__phase {
    GB_HTTP_PHASE_IDLE = 0, /* between requests, waiting for a first byte: idle timer */
    GB_HTTP_PHASE_HEAD,     /* a request line and headers are arriving: header timer */
    GB_HTTP_PHASE_BODY,     /* headers done, the body is arriving: body timer */
    GB_HTTP_PHASE_HANDLING, /* a handler owns the request; no timer (the handler bounds it) */
    GB_HTTP_PHASE_PAUSED,   /* a streamed body's reader asked for a pause: not reading, no timer */
    GB_HTTP_PHASE_WRITING,  /* the response is queued in libuv: write timer */
    GB_HTTP_PHASE_RESUME,   /* answered from a foreign stack; parsing resumes next iteration */
    GB_HTTP_PHASE_STREAM,   /* an event stream owns the connection: write timer while queued */
    GB_HTTP_PHASE_LINGER,   /* last response sent, write side shut: draining input until EOF */
    GB_HTTP_PHASE_CLOSING, /* handles are closing; freed when the last one (and the request) is done
                            */
} gb_http__phase_t;

/* Request states (req->state). A streamed request (gb_http_router_add_streamed) is dispatched
 * when its head is in, so it is in GB_HTTP_REQ_HANDLER while its body arrives. */
enum {
    GB_HTTP_REQ_NONE = 0, /* being parsed, or no request */
    GB_HTTP_REQ_HANDLER,  /* dispatched; a handler must answer */
    GB_HTTP_REQ_STREAM,   /* answered with a stream that has not ended */
    GB_HTTP_REQ_DONE,     /* answered */
};

/* One header of the request being parsed, as offsets into conn->head. */
typedef struct gb_http__hdr {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
} gb_http__hdr_t;

struct gb_http_conn {
    uv_tcp_t tcp;     /* the socket; a detached (socket-less) connection never reads it */
    uv_timer_t timer; /* the deadline of the current phase; stays open while a handler runs */
    llhttp_t parser;
    gb_http_server_t *server;
    gb_http_conn_t *prev, *next; /* the server's list of live connections */
    uint64_t id;
    char peer[64];
    char keys[96];         /* "conn=N peer=ip:port", the prefix of every log line */
    unsigned open_handles; /* freed in the close callback that brings this to 0 */
    gb_http__phase_t phase;
    gb_http__phase_t timer_phase; /* the phase the timer was last armed for */
    uint64_t timer_seq;           /* nrequests when the timer was last armed */
    uint64_t nrequests;           /* requests begun on this connection */
    size_t write_queue_seen;      /* libuv's write queue when the write deadline was last set */
    bool reading;                 /* uv_read_start is in effect */
    bool processing;              /* inside conn_run(): a response need not resume parsing */
    bool headers_done;
    bool headers_paused; /* on_headers_complete paused the parser */
    bool message_ready;  /* on_message_complete paused the parser */
    bool keep_alive;     /* this response leaves the connection open */
    bool write_pending;  /* write_req is in libuv */
    bool peer_eof;       /* the client has shut its side */
    bool http10;         /* the current request is HTTP/1.0 */
    bool method_known;   /* llhttp has reported the current request's method */
    gb_buf_t *sink;      /* detached connections write here instead of the socket */

    gb_buf_t in;    /* bytes received but not yet parsed (pipelined, or read while busy) */
    gb_buf_t head;  /* the request line and headers of the request being parsed */
    size_t url_len; /* the URL is head[0..url_len) */
    gb_http__hdr_t *hdrs;
    size_t nhdrs, cap_hdrs;
    int hstate;           /* 0 between headers, 1 in a name, 2 in a value */
    size_t head_bytes;    /* head bytes counted so far, against max_header_bytes */
    size_t trailer_bytes; /* chunked trailer bytes, counted against the same limit */
    int err_status;       /* set by a parser callback that returns HPE_USER */
    const char *err_code;
    const char *err_message;
    uint64_t start_ns; /* when the current request began (uv_hrtime) */

    /* The current request's body: its limit, and the state of a streamed one. */
    size_t body_limit;   /* max_body_bytes, or the streamed route's own limit */
    uint64_t body_bytes; /* body bytes received so far */
    gb_http_body_chunk_cb body_on_chunk;
    gb_http_body_end_cb body_on_end;
    void *body_ctx;
    const char *body_err_code; /* with body_err_status: why the body ended early */
    const char *body_err_message;
    int body_err_status;   /* 0 while the body has not ended early */
    bool need_execute;     /* llhttp paused inside a message and must run again, on no bytes */
    bool streamed;         /* the route takes its body in pieces; dispatched after the head */
    bool dispatch_early;   /* scratch: conn_run dispatches right after the head */
    bool body_reading;     /* the handler called gb_http_req_body_stream() */
    bool body_complete;    /* the parser reached the end of the message */
    bool body_ended;       /* on_end fired or the handler answered: no body callback follows */
    bool body_resume;      /* PHASE_RESUME goes on with the body, not with the next request */
    bool body_paused_now;  /* scratch: on_chunk asked for a pause from inside llhttp */
    bool continue_wanted;  /* Expect: 100-continue, answered when the handler starts reading */
    bool body_end_pending; /* an early end waits for the timer to tell the handler */

    gb_buf_t out; /* the response head; also holds whatever a write left for libuv */
    uv_write_t write_req;
    uv_write_t continue_req;
    uv_shutdown_t shutdown_req;

    gb_http_req_t req; /* the current request, reused */

    /* An event stream (PHASE_STREAM). */
    size_t stream_max_queued;
    size_t stream_queued; /* bytes handed to libuv and not written yet */
    bool stream_ending;
    gb_http_stream_close_cb stream_on_close;
    void *stream_ctx;
};

struct gb_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listener_open;   /* uv_tcp_init done, close callback not yet run */
    gb_http_config_t cfg; /* listen and web_dir point into strings owned below */
    char *listen;
    char *web_dir;
    gb_http_router_t *router;
    gb_http__static_t *statics;
    gb_http_conn_t *conns; /* live connections, newest first */
    unsigned nconns;       /* connection objects not yet freed */
    unsigned nrejected;    /* refused sockets still closing */
    uint64_t next_id;
    int64_t reject_logged_ms;     /* loop time of the last "connection cap reached" line */
    int64_t accept_err_logged_ms; /* loop time of the last "accept: ..." line */
    bool cap_from_fd_limit;       /* max_connections was lowered to fit the open-file limit */
    int port;
    bool shutting_down;
    /* Shutdown closes idle connections from a check handle, after the poll phase that saw the
     * signal: a request already in a socket's buffer is read first, then answered. */
    uv_check_t drain;
    bool drain_open; /* uv_check_init done, close callback not yet run */
    bool done_fired;
    void (*done)(void *arg);
    void *done_arg;
    char *read_buf; /* one read buffer shared by every connection (parsed before reuse) */
    size_t read_buf_size;
    char date[40]; /* "Date: ...\r\n" for the current second */
    uint64_t date_second;
    gb_http__metrics_t metrics;
};

/* conn.c */
void gb_http__conn_accept(gb_http_server_t *s);
void gb_http__conn_shutdown(gb_http_conn_t *conn);
/* Called by conn.c when a connection object is freed, and by server.c when the listener or a
 * refused socket has closed: fires done once everything is released during shutdown. */
void gb_http__server_maybe_done(gb_http_server_t *s);
/* The current "Date: ...\r\n" line. */
const char *gb_http__server_date(gb_http_server_t *s);

/* ---- driving a connection without a socket (fuzzing and tests) ---- */

/* A server with no listener: connections are made by gb_http__conn_new_detached() and their
 * output is appended to a caller's buffer. Shut down and freed as usual. */
int gb_http__server_new_detached(uv_loop_t *loop, const gb_http_config_t *cfg,
                                 gb_http_router_t *router, gb_http_server_t **out) GB_MUST_CHECK;
/* A connection whose responses are appended to sink (borrowed; must outlive the connection). */
gb_http_conn_t *gb_http__conn_new_detached(gb_http_server_t *s, gb_buf_t *sink);
/* Hands bytes to the connection as if they had been read from its socket. */
void gb_http__conn_feed(gb_http_conn_t *conn, const void *data, size_t len);
/* As if the peer had closed its side. The connection closes (and is freed by the loop). */
void gb_http__conn_feed_eof(gb_http_conn_t *conn);
/* Sets the static cache's TTL (see gb_http__static_set_ttl). */
void gb_http__server_set_static_ttl(gb_http_server_t *s, unsigned ttl_ms);

#endif
