/* health: /healthz (the process answers), /readyz (the database answers a query now) and
 * /metrics (Prometheus text from every layer). None needs a token. */
#include <stdlib.h>

#include "api/internal.h"

typedef struct ready_check {
    gb_pg_query_t query;
    gb_http_req_t *req;
} ready_check_t;

static void on_healthz(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    static const char body[] = "{\"status\":\"ok\"}";
    gb_http_respond(req, 200, "application/json", "Cache-Control: no-store\r\n", body,
                    sizeof(body) - 1);
}

static void respond_not_ready(gb_http_req_t *req, const char *why)
{
    gb_http_respond_errorf(req, 503, "unavailable", "the database does not answer: %s", why);
}

static void on_ready_query(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    ready_check_t *c = gb_container_of(q, ready_check_t, query);
    if (err != 0) {
        respond_not_ready(c->req, err == GB_EDB ? q->error : gb_strerror(err));
        return;
    }
    static const char body[] = "{\"status\":\"ready\",\"database\":\"up\"}";
    gb_http_respond(c->req, 200, "application/json", "Cache-Control: no-store\r\n", body,
                    sizeof(body) - 1);
}

static void on_readyz(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    ready_check_t *c = gb_arena_alloc(&req->arena, sizeof(*c));
    c->req = req;
    gb_pg_query_init(&c->query, "SELECT 1", 0, NULL, on_ready_query);
    int rc = gb_pg_submit(api->pg, &c->query);
    if (rc < 0) {
        respond_not_ready(req, gb_strerror(rc));
    }
}

static void on_metrics(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    gb_buf_t out;
    gb_buf_init(&out);
    gb_buf_append_str(&out, "# HELP gb_up Whether gloveboxd is running.\n# TYPE gb_up gauge\n"
                            "gb_up 1\n");
    gb_buf_appendf(&out,
                   "# HELP gb_start_time_seconds When gloveboxd started (Unix time).\n"
                   "# TYPE gb_start_time_seconds gauge\ngb_start_time_seconds %.3f\n",
                   (double)api->started_ms / 1000.0);
    if (api->server != NULL) {
        gb_http_server_write_metrics(api->server, &out);
    }
    gb_pg_write_metrics(api->pg, &out);
    gb_pg_batcher_write_metrics(api->batcher, &out);
    gb_api__stream_write_metrics(api, &out);
    gb_api__authlimit_write_metrics(&out);
    gb_buf_appendf(&out,
                   "# HELP gb_ingest_messages_total Agent messages acknowledged.\n"
                   "# TYPE gb_ingest_messages_total counter\ngb_ingest_messages_total %llu\n"
                   "# HELP gb_devices Devices known to the server.\n"
                   "# TYPE gb_devices gauge\ngb_devices %zu\n",
                   (unsigned long long)api->ingest_messages_total, api->fleet.count);
    gb_buf_appendf(&out,
                   "# HELP gb_auth_tokens Live API tokens known to the server.\n"
                   "# TYPE gb_auth_tokens gauge\ngb_auth_tokens %zu\n",
                   gb_auth_count(api->auth));
    gb_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                    "Cache-Control: no-store\r\n", out.data, out.len);
    gb_buf_dispose(&out);
}

void gb_api__health_register(gb_api_t *api)
{
    gb_api__route(api, GB_HTTP_GET, "/healthz", GB_ROLE_NONE, on_healthz);
    gb_api__route(api, GB_HTTP_HEAD, "/healthz", GB_ROLE_NONE, on_healthz);
    gb_api__route(api, GB_HTTP_GET, "/readyz", GB_ROLE_NONE, on_readyz);
    gb_api__route(api, GB_HTTP_GET, "/metrics", GB_ROLE_NONE, on_metrics);
}
