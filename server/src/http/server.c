/* server: the listener, limits and their defaults, graceful shutdown and the metrics text.
 * The server is freed only after shutdown's done callback, which fires once the listener,
 * every connection and every refused socket have run their close callbacks. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "http/http.h"
#include "http/internal.h"

#define READ_BUF_SIZE ((size_t)64 << 10)

static void apply_defaults(gb_http_config_t *c)
{
    if (c->max_header_bytes == 0) {
        c->max_header_bytes = (size_t)16 << 10;
    }
    if (c->max_body_bytes == 0) {
        c->max_body_bytes = (size_t)1 << 20;
    }
    if (c->max_connections == 0) {
        c->max_connections = 10000;
    }
    if (c->header_timeout_ms == 0) {
        c->header_timeout_ms = 10000;
    }
    if (c->body_timeout_ms == 0) {
        c->body_timeout_ms = 30000;
    }
    if (c->idle_timeout_ms == 0) {
        c->idle_timeout_ms = 60000;
    }
    if (c->write_timeout_ms == 0) {
        c->write_timeout_ms = 30000;
    }
    if (c->backlog <= 0) {
        c->backlog = 511;
    }
    if (c->reserved_fds == 0) {
        c->reserved_fds = 64;
    }
}

/* Every client connection holds a descriptor. Past the open-file limit accept() fails with
 * EMFILE, and libuv then closes its spare descriptor, accepts and closes whatever waits in the
 * backlog and reopens the spare, all without telling us: clients see their connection dropped
 * with no answer and nothing is logged. Fitting the connection cap under the limit instead
 * gives those clients the cap's 503 and the log its line, and keeps reserved_fds free for the
 * database, static files and the loop. */
static void fit_fd_limit(gb_http_server_t *s)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return;
    }
    uint64_t limit = (uint64_t)rl.rlim_cur;
    uint64_t reserved = s->cfg.reserved_fds;
    if (limit >= (uint64_t)s->cfg.max_connections + reserved) {
        return;
    }
    unsigned fit = limit > reserved + 1 ? (unsigned)(limit - reserved) : 1;
    gb_log(GB_LOG_WARN, "http",
           "the open-file limit of %llu descriptors leaves room for %u client connections, "
           "fewer than max_connections=%u: further clients get 503 (raise the limit: ulimit -n, "
           "LimitNOFILE=)",
           (unsigned long long)limit, fit, s->cfg.max_connections);
    s->cfg.max_connections = fit;
    s->cap_from_fd_limit = true;
}

static gb_http_server_t *server_alloc(uv_loop_t *loop, const gb_http_config_t *cfg,
                                      gb_http_router_t *router)
{
    gb_http_server_t *s = gb_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->cfg = *cfg;
    apply_defaults(&s->cfg);
    s->listen = gb_xstrdup(cfg->listen != NULL ? cfg->listen : "127.0.0.1:0");
    s->web_dir = cfg->web_dir != NULL ? gb_xstrdup(cfg->web_dir) : NULL;
    s->cfg.listen = s->listen;
    s->cfg.web_dir = s->web_dir;
    s->router = router;
    s->read_buf_size = READ_BUF_SIZE;
    s->read_buf = gb_xmalloc(READ_BUF_SIZE);
    s->statics = gb_http__static_new(s->web_dir);
    gb_http__metrics_init(&s->metrics);
    uv_tcp_init(loop, &s->listener);
    s->listener_open = true;
    return s;
}

static void server_release(gb_http_server_t *s)
{
    gb_http__static_free(s->statics);
    gb_http__metrics_dispose(&s->metrics);
    free(s->read_buf);
    free(s->listen);
    free(s->web_dir);
    free(s);
}

void gb_http__server_maybe_done(gb_http_server_t *s)
{
    if (!s->shutting_down || s->done_fired || s->listener_open || s->drain_open || s->nconns > 0 ||
        s->nrejected > 0) {
        return;
    }
    s->done_fired = true;
    gb_log(GB_LOG_DEBUG, "http", "server stopped: every connection closed");
    if (s->done != NULL) {
        s->done(s->done_arg);
    }
}

static void on_listener_closed(uv_handle_t *handle)
{
    gb_http_server_t *s = gb_container_of((uv_tcp_t *)handle, gb_http_server_t, listener);
    s->listener_open = false;
    gb_http__server_maybe_done(s);
}

/* A server whose listen failed never reaches the caller: it is freed once its handle closes. */
static void on_failed_listener_closed(uv_handle_t *handle)
{
    server_release(gb_container_of((uv_tcp_t *)handle, gb_http_server_t, listener));
}

static void on_listener_connection(uv_stream_t *stream, int status)
{
    gb_http_server_t *s = gb_container_of((uv_tcp_t *)stream, gb_http_server_t, listener);

    if (status < 0) {
        /* EMFILE never gets here while libuv's spare descriptor lasts (see fit_fd_limit());
         * what does may repeat for every waiting client, so the log gets a line a second. */
        int64_t now = (int64_t)uv_now(s->loop);
        if (now - s->accept_err_logged_ms >= 1000 || s->accept_err_logged_ms == 0) {
            s->accept_err_logged_ms = now;
            gb_log(GB_LOG_WARN, "http", "accept: %s", uv_strerror(status));
        }
        return;
    }
    if (s->shutting_down) {
        return;
    }
    gb_http__conn_accept(s);
}

/* Resolves "host:port" ("[::1]:8080", "0.0.0.0:80", ":8080", "localhost:8080"). */
static int resolve_listen(const char *listen, struct sockaddr_storage *out)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    const char *port;
    struct addrinfo hints, *res = NULL;

    if (colon == NULL) {
        return GB_EINVAL;
    }
    size_t hlen = (size_t)(colon - listen);
    const char *h = listen;
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen >= sizeof(host)) {
        return GB_EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    port = colon + 1;
    if (port[0] == '\0') {
        return GB_EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    /* Resolution blocks, but only here, once, before the loop serves anyone. */
    int rc = getaddrinfo(hlen == 0 || strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        if (res != NULL) {
            freeaddrinfo(res);
        }
        return rc == EAI_NONAME ? UV_ENOENT : GB_EINVAL;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

int gb_http_server_new(uv_loop_t *loop, const gb_http_config_t *cfg, gb_http_router_t *router,
                       gb_http_server_t **out)
{
    struct sockaddr_storage addr;
    struct sockaddr_storage bound;
    int len = sizeof(bound);

    memset(&bound, 0, sizeof(bound));
    *out = NULL;
    int rc = resolve_listen(cfg->listen != NULL ? cfg->listen : "127.0.0.1:0", &addr);
    if (rc < 0) {
        return rc;
    }
    gb_http_server_t *s = server_alloc(loop, cfg, router);
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)&s->listener, s->cfg.backlog, on_listener_connection);
    }
    if (rc == 0) {
        rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    }
    if (rc < 0) {
        uv_close((uv_handle_t *)&s->listener, on_failed_listener_closed);
        return rc;
    }
    fit_fd_limit(s);
    if (bound.ss_family == AF_INET) {
        s->port = ntohs(((const struct sockaddr_in *)&bound)->sin_port);
    } else {
        s->port = ntohs(((const struct sockaddr_in6 *)&bound)->sin6_port);
    }
    *out = s;
    return 0;
}

int gb_http__server_new_detached(uv_loop_t *loop, const gb_http_config_t *cfg,
                                 gb_http_router_t *router, gb_http_server_t **out)
{
    /* The listener handle is initialised but never bound, so shutdown closes it the same way
     * and done still fires from a close callback. */
    *out = server_alloc(loop, cfg, router);
    return 0;
}

void gb_http__server_set_static_ttl(gb_http_server_t *s, unsigned ttl_ms)
{
    gb_http__static_set_ttl(s->statics, ttl_ms);
}

int gb_http_server_port(const gb_http_server_t *s)
{
    return s->port;
}

static void on_drain_closed(uv_handle_t *handle)
{
    gb_http_server_t *s = gb_container_of((uv_check_t *)handle, gb_http_server_t, drain);
    s->drain_open = false;
    gb_http__server_maybe_done(s);
}

static void on_drain(uv_check_t *check)
{
    gb_http_server_t *s = gb_container_of(check, gb_http_server_t, drain);
    uv_check_stop(check);
    uv_close((uv_handle_t *)check, on_drain_closed);
    /* Closing never frees synchronously, so walking the list while closing is safe. */
    for (gb_http_conn_t *c = s->conns; c != NULL; c = c->next) {
        gb_http__conn_shutdown(c);
    }
}

void gb_http_server_shutdown(gb_http_server_t *s, void (*done)(void *arg), void *arg)
{
    if (s->shutting_down) {
        return;
    }
    s->shutting_down = true;
    s->done = done;
    s->done_arg = arg;
    gb_log(GB_LOG_DEBUG, "http", "shutting down: %u connections open", s->nconns);
    if (!uv_is_closing((uv_handle_t *)&s->listener)) {
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    }
    /* The signal may be handled in the same poll phase as a read that brings a whole request;
     * closing idle connections right here would drop that request unanswered. */
    uv_check_init(s->loop, &s->drain);
    s->drain_open = true;
    uv_check_start(&s->drain, on_drain);
}

void gb_http_server_free(gb_http_server_t *s)
{
    if (s == NULL) {
        return;
    }
    /* Freed only after done: anything else would free handles libuv still holds. */
    GB_ASSERT(s->done_fired);
    server_release(s);
}

void gb_http_server_write_metrics(const gb_http_server_t *s, gb_buf_t *out)
{
    gb_http__metrics_write(&s->metrics, s->nconns, out);
}

const char *gb_http__server_date(gb_http_server_t *s)
{
    time_t now = time(NULL);
    if ((uint64_t)now != s->date_second) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date, sizeof(s->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        s->date_second = (uint64_t)now;
    }
    return s->date;
}
