/* The live stream, GET /api/v1/stream, against a real gloveboxd and a real PostgreSQL: device
 * events after acknowledged agent reports, auth by header or ?access_token=, coalescing of a
 * burst, heartbeats, a stalled subscriber dropped while ingest goes on, the subscriber limit,
 * and a clean exit on SIGTERM with subscribers connected. Subscribers are raw sockets read by a
 * small Server-Sent Events parser, as a browser's EventSource would read them. Waits for an event,
 * a close or a metric are scaled by gb_th_scale_ms() (GB_TEST_TIME_SCALE), so a slow run (under
 * valgrind) gets the time it needs; windows in which nothing may happen are not. */
#include <errno.h>
#include <netinet/in.h>
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
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"

#define AGENT_PATH  "/api/v1/agent/messages"
#define STREAM_PATH "/api/v1/stream"
#define INTERVAL_MS 250 /* the server's coalescing interval */

/* ---- servers and tokens ---- */

typedef struct srv {
    char url[512];
    gb_th_server_t proc;
    char *agent;
    char *viewer;
} srv_t;

static srv_t main_srv; /* started with a one-second heartbeat */

static int srv_start(srv_t *s, const char *const *extra)
{
    memset(s, 0, sizeof(*s));
    if (gb_th_db_create(s->url, sizeof(s->url)) != 0) {
        return -1;
    }
    s->agent = gb_th_token_create(s->url, "agent", "bench-agent");
    s->viewer = gb_th_token_create(s->url, "viewer", "wall-board");
    if (s->agent == NULL || s->viewer == NULL) {
        return -1;
    }
    if (gb_th_server_start(&s->proc, s->url, extra) != 0) {
        return -1;
    }
    /* Reports are refused (503, as agents retry) until the pool's first connection is up:
     * wait for readiness so that every report below must be acknowledged. */
    return gb_th_wait_status(s->proc.port, "/readyz", 200, 10000) == 200 ? 0 : -1;
}

static int srv_stop(srv_t *s)
{
    int rc = gb_th_server_stop(&s->proc, SIGTERM, 15000);
    free(s->agent);
    free(s->viewer);
    memset(s, 0, sizeof(*s));
    return rc;
}

static int setup(void **state)
{
    const char *extra[] = {"--stream-heartbeat", "1s", NULL};
    return srv_start(&main_srv, extra);
}

static int teardown(void **state)
{
    return srv_stop(&main_srv) == 0 ? 0 : -1;
}

/* ---- a subscriber: raw socket and a Server-Sent Events parser ---- */

typedef struct sub {
    int fd;
    gb_buf_t in;
    int status;
    char *head;
} sub_t;

typedef struct sse_event {
    char *event;   /* "event:" field, NULL when absent */
    char *id;      /* "id:" field */
    char *data;    /* "data:" lines joined by '\n' */
    char *comment; /* a comment line's text (": heartbeat ..."), NULL when none */
    char *retry;   /* "retry:" field */
} sse_event_t;

static void sse_event_free(sse_event_t *e)
{
    free(e->event);
    free(e->id);
    free(e->data);
    free(e->comment);
    free(e->retry);
    memset(e, 0, sizeof(*e));
}

/* Reads what is there into s->in within timeout_ms: bytes read, 0 on close, -1 on timeout. */
static ssize_t sub_fill(sub_t *s, int timeout_ms)
{
    char chunk[16384];
    struct pollfd pfd = {s->fd, POLLIN, 0};
    int pr = poll(&pfd, 1, timeout_ms < 0 ? 0 : timeout_ms);
    if (pr <= 0) {
        return -1;
    }
    ssize_t n = recv(s->fd, chunk, sizeof(chunk), 0);
    if (n < 0) {
        return errno == ECONNRESET ? 0 : -1;
    }
    gb_buf_append(&s->in, chunk, (size_t)n);
    return n;
}

static int left_ms(int64_t deadline)
{
    int64_t left = deadline - gb_time_mono_ms();
    return left < 0 ? 0 : (int)left;
}

/* Connects and sends GET path (token: as a bearer header, or NULL). rcvbuf > 0 shrinks the
 * socket's receive buffer first, so that a subscriber that never reads fills up fast. Does
 * not read anything. */
static void sub_connect(sub_t *s, int port, const char *path, const char *token, int rcvbuf)
{
    struct sockaddr_in sa;
    memset(s, 0, sizeof(*s));
    gb_buf_init(&s->in);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    if (rcvbuf > 0) {
        assert_int_equal(setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    }
    assert_int_equal(connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    gb_buf_t req;
    gb_buf_init(&req);
    gb_buf_appendf(&req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n",
                   path);
    if (token != NULL) {
        gb_buf_appendf(&req, "Authorization: Bearer %s\r\n", token);
    }
    gb_buf_append_str(&req, "\r\n");
    assert_int_equal(send(s->fd, req.data, req.len, MSG_NOSIGNAL), (ssize_t)req.len);
    gb_buf_dispose(&req);
}

/* Reads the response head; fails the test unless it is a 200 event stream. */
static void sub_expect_stream(sub_t *s)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(10000);
    char *end;
    while ((end = s->in.len > 0 ? strstr(s->in.data, "\r\n\r\n") : NULL) == NULL) {
        if (sub_fill(s, left_ms(deadline)) <= 0) {
            fail_msg("no response head for the stream");
        }
    }
    size_t hl = (size_t)(end - s->in.data);
    s->head = gb_xstrndup(s->in.data, hl);
    gb_buf_consume(&s->in, hl + 4);
    if (sscanf(s->head, "HTTP/1.1 %d", &s->status) != 1 || s->status != 200) {
        fail_msg("stream answered: %s", s->head);
    }
    gb_th_resp_t r = {.head = s->head};
    char *ct = gb_th_resp_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "text/event-stream"));
    free(ct);
}

static void sub_open(sub_t *s, int port, const char *path, const char *token)
{
    sub_connect(s, port, path, token, 0);
    sub_expect_stream(s);
}

static void sub_close(sub_t *s)
{
    if (s->fd >= 0) {
        close(s->fd);
    }
    s->fd = -1;
    gb_buf_dispose(&s->in);
    free(s->head);
    s->head = NULL;
}

static char *field_value(const char *line, size_t len, size_t name_len)
{
    /* "name: value" or "name:value": one leading space is not part of the value (SSE). */
    size_t i = name_len + 1;
    if (i < len && line[i] == ' ') {
        i++;
    }
    return gb_xstrndup(line + i, len - i);
}

/* The next event or comment block: 1, 0 when the server closed the stream, -1 on timeout. */
static int sub_next(sub_t *s, sse_event_t *e, int timeout_ms)
{
    int64_t deadline = gb_time_mono_ms() + timeout_ms;
    char *end;
    memset(e, 0, sizeof(*e));
    while ((end = s->in.len > 0 ? strstr(s->in.data, "\n\n") : NULL) == NULL) {
        ssize_t n = sub_fill(s, left_ms(deadline));
        if (n <= 0) {
            return n == 0 ? 0 : -1;
        }
    }
    size_t block = (size_t)(end - s->in.data) + 1;
    gb_buf_t data;
    gb_buf_init(&data);
    bool has_data = false;
    for (size_t i = 0; i < block;) {
        const char *line = s->in.data + i;
        size_t len = (size_t)((const char *)memchr(line, '\n', block - i) - line);
        if (len > 0 && line[0] == ':') {
            free(e->comment);
            e->comment = field_value(line, len, 0);
        } else if (len >= 6 && strncmp(line, "event:", 6) == 0) {
            e->event = field_value(line, len, 5);
        } else if (len >= 3 && strncmp(line, "id:", 3) == 0) {
            e->id = field_value(line, len, 2);
        } else if (len >= 6 && strncmp(line, "retry:", 6) == 0) {
            e->retry = field_value(line, len, 5);
        } else if (len >= 5 && strncmp(line, "data:", 5) == 0) {
            char *v = field_value(line, len, 4);
            if (has_data) {
                gb_buf_append(&data, "\n", 1);
            }
            gb_buf_append_str(&data, v);
            has_data = true;
            free(v);
        } else {
            fail_msg("unexpected line in the stream: %.*s", (int)len, line);
        }
        i += len + 1;
    }
    if (has_data) {
        e->data = gb_buf_steal(&data, NULL);
    }
    gb_buf_dispose(&data);
    gb_buf_consume(&s->in, block + 1);
    return 1;
}

/* Reads and discards until the server closes the stream; false on timeout. */
static bool sub_wait_closed(sub_t *s, int timeout_ms)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms((unsigned)timeout_ms);
    for (;;) {
        ssize_t n = sub_fill(s, left_ms(deadline));
        gb_buf_reset(&s->in);
        if (n == 0) {
            return true;
        }
        if (n < 0) {
            return false;
        }
    }
}

/* Discards every complete block received so far, keeping a partial one for the next read
 * (for a subscriber that must keep up while the test does something else). */
static void sub_skip_complete(sub_t *s)
{
    size_t keep = 0;
    for (size_t i = s->in.len; i >= 2; i--) {
        if (s->in.data[i - 1] == '\n' && s->in.data[i - 2] == '\n') {
            keep = i;
            break;
        }
    }
    gb_buf_consume(&s->in, keep);
}

/* A device event's JSON (checks the event's framing). */
static json_t *event_device(const sse_event_t *e)
{
    json_error_t err;
    assert_non_null(e->event);
    assert_string_equal(e->event, "device");
    assert_non_null(e->id);
    assert_non_null(e->data);
    assert_null(strchr(e->data, '\n'));
    json_t *j = json_loads(e->data, 0, &err);
    if (j == NULL || !json_is_object(j)) {
        fail_msg("device event is not a JSON object: %s", e->data);
    }
    return j;
}

static const char *jstr(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v != NULL ? v : "";
}

/* Waits for a device event for serial whose JSON satisfies want (NULL: any); returns its JSON
 * (or fails). Counts the events seen for serial in *count when given. Ids must increase. */
static json_t *wait_device_event(sub_t *s, const char *serial, bool (*want)(json_t *, void *),
                                 void *arg, int timeout_ms, int *count, unsigned long long *last_id)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms((unsigned)timeout_ms);
    sse_event_t e;
    for (;;) {
        int rc = sub_next(s, &e, left_ms(deadline));
        if (rc <= 0) {
            fail_msg("no matching device event for %s (%s)", serial,
                     rc == 0 ? "stream closed" : "timed out");
        }
        if (e.event == NULL) {
            sse_event_free(&e);
            continue;
        }
        json_t *j = event_device(&e);
        unsigned long long id = strtoull(e.id, NULL, 10);
        if (last_id != NULL) {
            if (id <= *last_id) {
                fail_msg("event id %llu after %llu", id, *last_id);
            }
            *last_id = id;
        }
        sse_event_free(&e);
        if (strcmp(jstr(j, "serial"), serial) == 0) {
            if (count != NULL) {
                (*count)++;
            }
            if (want == NULL || want(j, arg)) {
                return j;
            }
        }
        json_decref(j);
    }
}

/* ---- agent reports ---- */

static json_t *msg(uint64_t seq, const char *type)
{
    char at[32];
    gb_time_format_rfc3339(1795334400000LL + (int64_t)seq * 5000, at); /* 2026-11-22T08:00Z */
    return json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)seq, "at", at, "type", type);
}

/* A hello with what the protocol requires of one. */
static json_t *hello_msg(uint64_t seq)
{
    json_t *m = msg(seq, "hello");
    json_object_set_new(m, "agent", json_string("glovebox-agent/1.2.0"));
    json_object_set_new(m, "os_build", json_string("10.0.22631"));
    json_object_set_new(m, "hardware",
                        json_pack("{s:s, s:s, s:s, s:b, s:b}", "manufacturer", "HP", "model",
                                  "EliteBook 840 G8", "tpm_version", "2.0", "tpm_attestation", 1,
                                  "virtual_machine", 0));
    json_object_set_new(m, "network",
                        json_pack("{s:s, s:i}", "medium", "ethernet", "link_mbps", 1000));
    return m;
}

static json_t *stage_msg(uint64_t seq, const char *stage, const char *st)
{
    json_t *m = msg(seq, "stage");
    json_object_set_new(m, "stage", json_string(stage));
    json_object_set_new(m, "state", json_string(st));
    return m;
}

static json_t *download_msg(uint64_t seq, long long bytes)
{
    json_t *m = msg(seq, "download");
    json_object_set_new(m, "bytes", json_integer(bytes));
    json_object_set_new(m, "ms", json_integer(5000));
    return m;
}

/* The request body for serial with msgs (stolen). Heap, free(). */
static char *report(const char *serial, json_t *msgs)
{
    json_t *req = json_pack("{s:i, s:{s:s}, s:o}", "protocol", 1, "device", "serial", serial,
                            "messages", msgs);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return text;
}

/* One keep-alive connection an agent posts on. */
typedef struct agent {
    int port;
    const char *token;
    gb_th_conn_t conn;
    bool open;
} agent_t;

/* Posts body (freed here); returns the reply's status (0: no reply within 10 s, or the
 * connection failed). Makes no cmocka assertion, so threads may call it. */
static int agent_post(agent_t *a, char *body, char **reply)
{
    gb_th_resp_t r;
    int status = 0;
    if (!a->open) {
        if (gb_th_conn_open(&a->conn, a->port) != 0) {
            free(body);
            return 0;
        }
        a->open = true;
    }
    gb_buf_t req;
    gb_buf_init(&req);
    gb_buf_appendf(&req,
                   "POST " AGENT_PATH " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\n\r\n%s",
                   a->token, strlen(body), body);
    memset(&r, 0, sizeof(r));
    if (gb_th_conn_send(&a->conn, req.data, req.len) == 0) {
        gb_th_conn_read(&a->conn, &r, 10000);
        status = r.status;
    }
    gb_buf_dispose(&req);
    if (r.closed || status == 0) {
        gb_th_conn_close(&a->conn);
        a->open = false;
    }
    if (reply != NULL) {
        *reply = r.body;
        r.body = NULL;
    }
    gb_th_resp_free(&r);
    free(body);
    return status;
}

/* Posts body (freed here) and fails the test unless it is acknowledged with 200. */
static void agent_post_ok(agent_t *a, char *body)
{
    char *reply = NULL;
    int status = agent_post(a, body, &reply);
    if (status != 200) {
        fail_msg("report not acknowledged: status %d, body %s", status, reply != NULL ? reply : "");
    }
    free(reply);
}

static void agent_close(agent_t *a)
{
    if (a->open) {
        gb_th_conn_close(&a->conn);
        a->open = false;
    }
}

/* ---- metrics ---- */

/* The value of an unlabelled metric from /metrics, -1 when absent. */
static long long metric(int port, const char *name)
{
    gb_th_resp_t r;
    long long v = -1;
    gb_th_request(port, "GET", "/metrics", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    size_t n = strlen(name);
    for (const char *p = r.body; p != NULL && *p != '\0';) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            v = atoll(p + n + 1);
            break;
        }
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    gb_th_resp_free(&r);
    return v;
}

/* Waits until metric name equals want; fails after timeout_ms. */
static void wait_metric(int port, const char *name, long long want, int timeout_ms)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms((unsigned)timeout_ms);
    long long v;
    while ((v = metric(port, name)) != want) {
        if (gb_time_mono_ms() > deadline) {
            fail_msg("%s is %lld, want %lld", name, v, want);
        }
        gb_th_sleep_ms(20);
    }
}

/* ---- tests ---- */

static void test_a_subscriber_sees_each_acknowledged_change(void **state)
{
    int port = main_srv.proc.port;
    sub_t s;
    sse_event_t e;
    unsigned long long last_id = 0;
    agent_t a = {.port = port, .token = main_srv.agent};

    sub_open(&s, port, STREAM_PATH, main_srv.viewer);
    /* The stream opens with the reconnection hint. */
    assert_int_equal(sub_next(&s, &e, (int)gb_th_scale_ms(5000)), 1);
    assert_non_null(e.retry);
    assert_true(atoi(e.retry) > 0);
    sse_event_free(&e);

    json_t *msgs = json_array();
    json_array_append_new(msgs, hello_msg(1));
    json_array_append_new(msgs, stage_msg(2, "oobe", "started"));
    agent_post_ok(&a, report("STRM-0001", msgs));
    json_t *j = wait_device_event(&s, "STRM-0001", NULL, NULL, 5000, NULL, &last_id);
    assert_string_equal(jstr(j, "status"), "provisioning");
    assert_string_equal(jstr(j, "stage"), "oobe");
    json_decref(j);

    msgs = json_array();
    json_array_append_new(msgs, stage_msg(3, "device_setup", "started"));
    json_array_append_new(msgs, stage_msg(4, "device_setup", "succeeded"));
    agent_post_ok(&a, report("STRM-0001", msgs));
    j = wait_device_event(&s, "STRM-0001", NULL, NULL, 5000, NULL, &last_id);
    assert_string_equal(jstr(j, "status"), "green");
    assert_string_equal(jstr(j, "stage"), "device_setup");
    json_decref(j);

    agent_close(&a);
    sub_close(&s);
}

static void test_auth_by_query_token_and_refusals(void **state)
{
    int port = main_srv.proc.port;
    gb_th_resp_t r;
    sub_t s;
    char path[256];
    unsigned long long last_id = 0;
    agent_t a = {.port = port, .token = main_srv.agent};

    /* EventSource cannot set headers: the token comes in the query. */
    snprintf(path, sizeof(path), STREAM_PATH "?access_token=%s", main_srv.viewer);
    sub_open(&s, port, path, NULL);
    agent_post_ok(&a, report("STRM-AUTH", json_pack("[o]", hello_msg(1))));
    json_t *j = wait_device_event(&s, "STRM-AUTH", NULL, NULL, 5000, NULL, &last_id);
    assert_string_equal(jstr(j, "status"), "registered");
    json_decref(j);
    sub_close(&s);

    gb_th_request(port, "GET", STREAM_PATH, NULL, NULL, 0, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);
    gb_th_request(port, "GET", STREAM_PATH "?access_token=gbt_not-a-real-token", NULL, NULL, 0, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);
    gb_th_request_auth(port, "GET", STREAM_PATH, "gbt_not-a-real-token", NULL, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);
    /* An agent token is known but may only report. */
    snprintf(path, sizeof(path), STREAM_PATH "?access_token=%s", main_srv.agent);
    gb_th_request(port, "GET", path, NULL, NULL, 0, &r);
    gb_th_assert_json_error(&r, 403, "forbidden");
    gb_th_resp_free(&r);
    gb_th_request_auth(port, "GET", STREAM_PATH, main_srv.agent, NULL, &r);
    gb_th_assert_json_error(&r, 403, "forbidden");
    gb_th_resp_free(&r);
    /* The query token is for the stream only. */
    snprintf(path, sizeof(path), "/api/v1/devices?access_token=%s", main_srv.viewer);
    gb_th_request(port, "GET", path, NULL, NULL, 0, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);
    agent_close(&a);
}

/* Subscribers that name members (fields=) get only those, with serial; others get whole
 * Devices; the same change has the same event id for each of them. */
static void test_fields_narrow_a_subscribers_events(void **state)
{
    int port = main_srv.proc.port;
    gb_th_resp_t r;
    sub_t wide, narrow, bytes;
    char path[256];
    unsigned long long id_wide = 0, id_narrow = 0, id_bytes = 0;
    agent_t a = {.port = port, .token = main_srv.agent};

    sub_open(&wide, port, STREAM_PATH, main_srv.viewer);
    sub_open(&narrow, port, STREAM_PATH "?fields=stage,status", main_srv.viewer);
    snprintf(path, sizeof(path), STREAM_PATH "?fields=bytes_downloaded&access_token=%s",
             main_srv.viewer);
    sub_open(&bytes, port, path, NULL);
    json_t *msgs = json_array();
    json_array_append_new(msgs, hello_msg(1));
    json_array_append_new(msgs, stage_msg(2, "oobe", "started"));
    agent_post_ok(&a, report("STRM-FLD", msgs));

    json_t *w = wait_device_event(&wide, "STRM-FLD", NULL, NULL, 5000, NULL, &id_wide);
    json_t *n = wait_device_event(&narrow, "STRM-FLD", NULL, NULL, 5000, NULL, &id_narrow);
    json_t *b = wait_device_event(&bytes, "STRM-FLD", NULL, NULL, 5000, NULL, &id_bytes);
    assert_non_null(json_object_get(w, "durations"));
    assert_non_null(json_object_get(w, "bytes_by_source"));
    assert_int_equal(json_object_size(n), 3);
    assert_string_equal(jstr(n, "status"), "provisioning");
    assert_string_equal(jstr(n, "stage"), "oobe");
    assert_int_equal(json_object_size(b), 2);
    assert_true(
        json_equal(json_object_get(b, "bytes_downloaded"), json_object_get(w, "bytes_downloaded")));
    assert_true(id_wide == id_narrow && id_narrow == id_bytes);
    json_decref(w);
    json_decref(n);
    json_decref(b);
    sub_close(&wide);
    sub_close(&narrow);
    sub_close(&bytes);
    agent_close(&a);

    /* A name that is not a member is refused before the stream starts. */
    gb_th_request_auth(port, "GET", STREAM_PATH "?fields=status,timeline", main_srv.viewer, NULL,
                       &r);
    gb_th_assert_json_error(&r, 400, "invalid_query");
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    assert_string_equal(jstr(json_object_get(j, "error"), "field"), "fields");
    json_decref(j);
    gb_th_resp_free(&r);
}

typedef struct final_state {
    const char *status;
    long long bytes;
} final_state_t;

static bool is_final(json_t *j, void *arg)
{
    final_state_t *f = arg;
    return strcmp(jstr(j, "status"), f->status) == 0 &&
           json_integer_value(json_object_get(j, "bytes_downloaded")) == f->bytes;
}

static void test_a_burst_for_one_device_is_coalesced(void **state)
{
    enum { REPORTS = 60 };
    int port = main_srv.proc.port;
    sub_t s;
    sse_event_t e;
    unsigned long long last_id = 0;
    agent_t a = {.port = port, .token = main_srv.agent};
    long long bytes = 0;
    int events = 0;

    sub_open(&s, port, STREAM_PATH, main_srv.viewer);
    int64_t t0 = gb_time_mono_ms();
    agent_post_ok(&a, report("STRM-BURST", json_pack("[o,o]", hello_msg(1),
                                                     stage_msg(2, "device_setup", "started"))));
    /* Every report changes what the device shows (its bytes), so each one is a change. */
    for (int i = 0; i < REPORTS - 2; i++) {
        bytes += 1000000 + i;
        agent_post_ok(&a, report("STRM-BURST", json_pack("[o]", download_msg(3 + i, 1000000 + i))));
    }
    json_t *last = msg(REPORTS + 1, "result");
    json_object_set_new(last, "screen", json_string("green"));
    agent_post_ok(&a, report("STRM-BURST", json_pack("[o]", last)));
    int64_t elapsed = gb_time_mono_ms() - t0;

    final_state_t f = {"green", bytes};
    json_t *j = wait_device_event(&s, "STRM-BURST", is_final, &f, 5000, &events, &last_id);
    json_decref(j);
    /* Nothing changes any more, so nothing more comes for the device (heartbeats do). */
    int64_t quiet_until = gb_time_mono_ms() + 3 * INTERVAL_MS;
    int rc;
    while ((rc = sub_next(&s, &e, left_ms(quiet_until))) == 1) {
        if (e.event != NULL) {
            json_t *o = event_device(&e);
            if (strcmp(jstr(o, "serial"), "STRM-BURST") == 0) {
                events++;
            }
            json_decref(o);
        }
        sse_event_free(&e);
    }
    assert_int_equal(rc, -1);
    /* Flushes are at least an interval apart and fall between the first report and an
     * interval after the last: that bounds the events whatever the reports' pace. */
    int bound = (int)(elapsed / INTERVAL_MS) + 3;
    print_message("%d reports in %lld ms gave %d events (bound %d)\n", REPORTS, (long long)elapsed,
                  events, bound);
    assert_true(events >= 1);
    assert_true(events <= bound);
    assert_true(events < REPORTS);
    agent_close(&a);
    sub_close(&s);
}

static void test_heartbeats_keep_a_quiet_stream_alive(void **state)
{
    int port = main_srv.proc.port;
    sub_t s;
    sse_event_t e;
    int beats = 0;
    long long before = metric(port, "gb_stream_heartbeats_total");
    int64_t deadline = gb_time_mono_ms() + 5000;

    assert_true(before >= 0);
    sub_open(&s, port, STREAM_PATH, main_srv.viewer);
    while (beats < 2) {
        int rc = sub_next(&s, &e, left_ms(deadline));
        if (rc != 1) {
            fail_msg("%d heartbeats within 5 s on a 1 s heartbeat", beats);
        }
        if (e.comment != NULL && strncmp(e.comment, "heartbeat ", 10) == 0) {
            int64_t ms;
            const char *at = e.comment + 10;
            assert_true(gb_time_parse_rfc3339(at, strlen(at), &ms));
            beats++;
        }
        sse_event_free(&e);
    }
    assert_true(metric(port, "gb_stream_heartbeats_total") >= before + 2);
    sub_close(&s);
}

/* One of the agents that report while a subscriber stalls: new devices, one report each,
 * until told to stop or a report is not acknowledged. */
typedef struct poster {
    pthread_t thread;
    agent_t agent;
    int index;
    atomic_bool *stop;
    int acked;
    int failed_status; /* 0 while every report was acknowledged */
} poster_t;

/* A report that leaves the device red with a diagnosis and warnings: a larger event, so that
 * fewer reports fill the stalled subscriber's socket and buffer. */
static char *red_report(const char *serial)
{
    json_t *hello = hello_msg(1);
    json_t *hw = json_object_get(hello, "hardware");
    json_object_set_new(hw, "virtual_machine", json_true());
    json_object_set_new(hw, "tpm_version", json_string("1.2"));
    json_t *failed = stage_msg(3, "securing_hardware", "failed");
    json_object_set_new(failed, "hresult", json_string("0x800705B4"));
    return report(
        serial, json_pack("[o,o,o]", hello, stage_msg(2, "securing_hardware", "started"), failed));
}

static void *poster_run(void *arg)
{
    poster_t *p = arg;
    char serial[32];
    while (!atomic_load(p->stop)) {
        snprintf(serial, sizeof(serial), "STALL-%02d-%06d", p->index, p->acked);
        int status = agent_post(&p->agent, red_report(serial), NULL);
        if (status != 200) {
            p->failed_status = status;
            break;
        }
        p->acked++;
    }
    agent_close(&p->agent);
    return NULL;
}

static void test_a_stalled_subscriber_is_dropped_and_ingest_goes_on(void **state)
{
    enum { POSTERS = 32 };
    srv_t srv;
    /* Each flush sends at most half the buffer, so the buffer also sets how fast the stalled
     * subscriber's backlog can grow past what the kernel's socket buffers hold (megabytes on
     * loopback). */
    const char *extra[] = {"--stream-buffer", "512K", NULL};
    sub_t stalled, reader;
    unsigned long long last_id = 0;
    poster_t posters[POSTERS];
    atomic_bool stop;

    assert_int_equal(srv_start(&srv, extra), 0);
    int port = srv.proc.port;
    /* The stalled subscriber sends its request and never reads a byte. */
    sub_connect(&stalled, port, STREAM_PATH, srv.viewer, 4096);
    sub_open(&reader, port, STREAM_PATH, srv.viewer);
    wait_metric(port, "gb_stream_subscribers", 2, 5000);
    assert_int_equal(metric(port, "gb_stream_dropped_total"), 0);

    /* Agents report new devices (each report is an event for every subscriber) until the
     * stalled subscriber is dropped; every report must be acknowledged meanwhile. */
    atomic_init(&stop, false);
    for (int i = 0; i < POSTERS; i++) {
        memset(&posters[i], 0, sizeof(posters[i]));
        posters[i].agent = (agent_t){.port = port, .token = srv.agent};
        posters[i].index = i;
        posters[i].stop = &stop;
        assert_int_equal(pthread_create(&posters[i].thread, NULL, poster_run, &posters[i]), 0);
    }
    int64_t deadline = gb_time_mono_ms() + 40000;
    int64_t next_check = 0;
    bool dropped = false;
    while (!dropped && gb_time_mono_ms() < deadline) {
        /* The reader keeps up: it must not be dropped with the stalled one. */
        if (sub_fill(&reader, 10) == 0) {
            break;
        }
        sub_skip_complete(&reader);
        if (gb_time_mono_ms() >= next_check) {
            dropped = metric(port, "gb_stream_dropped_total") == 1;
            next_check = gb_time_mono_ms() + 100;
        }
    }
    atomic_store(&stop, true);
    int acked = 0;
    for (int i = 0; i < POSTERS; i++) {
        pthread_join(posters[i].thread, NULL);
        acked += posters[i].acked;
        if (posters[i].failed_status != 0) {
            fail_msg("a report got status %d while a subscriber stalled", posters[i].failed_status);
        }
    }
    print_message("stalled subscriber %s after %d acknowledged reports\n",
                  dropped ? "dropped" : "NOT dropped", acked);
    assert_true(dropped);
    /* The server closed the stalled stream; the reader that kept up is still served. */
    assert_true(sub_wait_closed(&stalled, 10000));
    wait_metric(port, "gb_stream_subscribers", 1, 5000);
    agent_t a = {.port = port, .token = srv.agent};
    agent_post_ok(&a, report("STALL-LAST", json_pack("[o]", hello_msg(1))));
    json_t *j = wait_device_event(&reader, "STALL-LAST", NULL, NULL, 20000, NULL, &last_id);
    json_decref(j);
    assert_int_equal(metric(port, "gb_stream_dropped_total"), 1);

    agent_close(&a);
    sub_close(&stalled);
    sub_close(&reader);
    assert_int_equal(srv_stop(&srv), 0);
}

static void test_subscribers_beyond_the_limit_get_503(void **state)
{
    srv_t srv;
    const char *extra[] = {"--stream-max-subscribers", "2", NULL};
    sub_t s1, s2, s3;
    gb_th_resp_t r;

    assert_int_equal(srv_start(&srv, extra), 0);
    int port = srv.proc.port;
    sub_open(&s1, port, STREAM_PATH, srv.viewer);
    sub_open(&s2, port, STREAM_PATH, srv.viewer);
    gb_th_request_auth(port, "GET", STREAM_PATH, srv.viewer, NULL, &r);
    gb_th_assert_json_error(&r, 503, "unavailable");
    gb_th_resp_free(&r);
    assert_int_equal(metric(port, "gb_stream_refused_total"), 1);

    /* A subscriber that leaves frees its place. */
    sub_close(&s1);
    wait_metric(port, "gb_stream_subscribers", 1, 5000);
    sub_open(&s3, port, STREAM_PATH, srv.viewer);
    assert_int_equal(metric(port, "gb_stream_subscribers"), 2);
    assert_int_equal(metric(port, "gb_stream_subscribers_total"), 3);

    sub_close(&s2);
    sub_close(&s3);
    assert_int_equal(srv_stop(&srv), 0);
}

static void test_sigterm_with_subscribers_exits_cleanly(void **state)
{
    srv_t srv;
    sub_t subs[3];
    unsigned long long last_id = 0;

    assert_int_equal(srv_start(&srv, NULL), 0);
    int port = srv.proc.port;
    agent_t a = {.port = port, .token = srv.agent};
    for (size_t i = 0; i < GB_ARRAY_LEN(subs); i++) {
        sub_open(&subs[i], port, STREAM_PATH, srv.viewer);
    }
    /* Events have flowed (the flush timer has run) before the signal. */
    agent_post_ok(&a, report("STRM-BYE", json_pack("[o]", hello_msg(1))));
    agent_close(&a);
    json_t *j = wait_device_event(&subs[0], "STRM-BYE", NULL, NULL, 5000, NULL, &last_id);
    json_decref(j);

    pid_t pid = srv.proc.pid;
    assert_int_equal(kill(pid, SIGTERM), 0);
    for (size_t i = 0; i < GB_ARRAY_LEN(subs); i++) {
        assert_true(sub_wait_closed(&subs[i], 10000));
        sub_close(&subs[i]);
    }
    /* A zero exit (sanitizer builds exit non-zero on a leak) after the whole orderly path.
     * Signal 0 only waits: a second SIGTERM would cut the shutdown short. */
    int rc = gb_th_server_stop(&srv.proc, 0, 15000);
    char *log = gb_th_server_log(&srv.proc);
    (void)srv_stop(&srv); /* the process is gone: this only frees the tokens */
    if (rc != 0 || strstr(log, "database closed; bye") == NULL ||
        strstr(log, "handles still open") != NULL) {
        fail_msg("exit %d; log:\n%s", rc, log);
    }
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_subscriber_sees_each_acknowledged_change),
        cmocka_unit_test(test_auth_by_query_token_and_refusals),
        cmocka_unit_test(test_fields_narrow_a_subscribers_events),
        cmocka_unit_test(test_a_burst_for_one_device_is_coalesced),
        cmocka_unit_test(test_heartbeats_keep_a_quiet_stream_alive),
        cmocka_unit_test(test_a_stalled_subscriber_is_dropped_and_ingest_goes_on),
        cmocka_unit_test(test_subscribers_beyond_the_limit_get_503),
        cmocka_unit_test(test_sigterm_with_subscribers_exits_cleanly),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
