/* api: the api object, route registration and the authentication step every protected route
 * goes through (bearer token -> identity -> role check), before its handler runs. */
#include "api/api.h"

#include <stdlib.h>
#include <string.h>

#include "api/internal.h"

/* A lookup that waits for a token reload lives in the request's arena. */
typedef struct auth_pending {
    gb_auth_wait_t wait;
    gb_api_route_t *route;
    gb_http_req_t *req;
} auth_pending_t;

static void respond_unauthorized(gb_http_req_t *req, const char *why)
{
    gb_error_t e;
    gb_buf_t body;

    gb_error_clear(&e);
    gb_error_set(&e, 401, "unauthorized", NULL, "%s", why);
    gb_buf_init(&body);
    gb_error_to_json(&e, &body);
    gb_http_respond(req, 401, "application/json", "WWW-Authenticate: Bearer realm=\"glovebox\"\r\n",
                    body.data, body.len);
    gb_buf_dispose(&body);
}

/* A failed token check: 401, or 429 once the address has failed too often (ratelimit.c). */
static void respond_failed(gb_http_req_t *req, const char *why)
{
    int64_t now = gb_time_mono_ms();
    unsigned wait_s = gb_api__authlimit_check(req->peer, now);
    if (wait_s > 0) {
        gb_api__authlimit_respond(req, wait_s);
        return;
    }
    gb_api__authlimit_fail(req->peer, now);
    respond_unauthorized(req, why);
}

static void proceed(gb_api_route_t *route, gb_http_req_t *req, const gb_auth_identity_t *id)
{
    if (id == NULL) {
        respond_failed(req, "the token is not known or was revoked");
        return;
    }
    if (!gb_role_allows(id->role, route->need)) {
        gb_http_respond_errorf(req, 403, "forbidden", "a %s token may not use this endpoint",
                               gb_role_name(id->role));
        return;
    }
    gb_auth_identity_t *who = gb_arena_alloc(&req->arena, sizeof(*who));
    *who = *id;
    req->user = who;
    route->cb(route->api, req, who);
}

static void on_auth_reloaded(gb_auth_wait_t *w, const gb_auth_identity_t *id)
{
    auth_pending_t *p = gb_container_of(w, auth_pending_t, wait);
    proceed(p->route, p->req, id);
}

/* Finds the presented token: "Authorization: Bearer X", or ?access_token=X where allowed. */
static bool presented_token(gb_api_route_t *route, gb_http_req_t *req, gb_str_t *token)
{
    gb_str_t h = gb_http_req_header(req, "authorization");
    if (h.p != NULL) {
        if (h.len > 7 && gb_str_case_eq_cstr((gb_str_t){h.p, 7}, "bearer ")) {
            size_t i = 7;
            while (i < h.len && h.p[i] == ' ') {
                i++;
            }
            *token = (gb_str_t){h.p + i, h.len - i};
            return token->len > 0;
        }
        return false;
    }
    if (route->query_token) {
        return gb_http_req_query(req, "access_token", token) && token->len > 0;
    }
    return false;
}

static void on_route(gb_http_req_t *req, void *ctx)
{
    gb_api_route_t *route = ctx;
    gb_str_t token;
    gb_auth_identity_t id;

    if (route->need == GB_ROLE_NONE) {
        route->cb(route->api, req, NULL);
        return;
    }
    if (!presented_token(route, req, &token)) {
        respond_failed(req, "a bearer token is required (Authorization: Bearer TOKEN)");
        return;
    }
    /* From a limited address, a token that cannot be an issued one is refused unseen. */
    unsigned wait_s = gb_api__authlimit_check(req->peer, gb_time_mono_ms());
    if (wait_s > 0 && !gb_api__authlimit_token_shaped(token)) {
        gb_api__authlimit_respond(req, wait_s);
        return;
    }
    auth_pending_t *p = gb_arena_alloc(&req->arena, sizeof(*p));
    p->wait.cb = on_auth_reloaded;
    p->route = route;
    p->req = req;
    switch (gb_auth_lookup(route->api->auth, token.p, token.len, &p->wait, &id)) {
    case GB_AUTH_FOUND:
        proceed(route, req, &id);
        break;
    case GB_AUTH_PENDING:
        break; /* on_auth_reloaded continues */
    default:
        proceed(route, req, NULL);
        break;
    }
}

static void add_route(gb_api_t *api, gb_http_method_t method, const char *pattern, gb_role_t need,
                      bool query_token, gb_api_handler_cb cb)
{
    gb_api_route_t *r = gb_xcalloc(1, sizeof(*r));
    r->api = api;
    r->need = need;
    r->query_token = query_token;
    r->cb = cb;
    api->routes = gb_xrealloc(api->routes, (api->nroutes + 1) * sizeof(*api->routes));
    api->routes[api->nroutes++] = r;
    gb_http_router_add(api->router, method, pattern, on_route, r);
}

void gb_api__route(gb_api_t *api, gb_http_method_t method, const char *pattern, gb_role_t need,
                   gb_api_handler_cb cb)
{
    add_route(api, method, pattern, need, false, cb);
}

void gb_api__route_query_token(gb_api_t *api, gb_http_method_t method, const char *pattern,
                               gb_role_t need, gb_api_handler_cb cb)
{
    add_route(api, method, pattern, need, true, cb);
}

void gb_api__route_streamed(gb_api_t *api, gb_http_method_t method, const char *pattern,
                            gb_role_t need, size_t max_body, gb_api_handler_cb cb)
{
    gb_api_route_t *r = gb_xcalloc(1, sizeof(*r));
    r->api = api;
    r->need = need;
    r->cb = cb;
    api->routes = gb_xrealloc(api->routes, (api->nroutes + 1) * sizeof(*api->routes));
    api->routes[api->nroutes++] = r;
    gb_http_router_add_streamed(api->router, method, pattern, max_body, on_route, r);
}

bool gb_api__is_json(const gb_http_req_t *req)
{
    gb_str_t ct = gb_http_req_header(req, "content-type");
    if (ct.p == NULL) {
        return false;
    }
    size_t n = 0;
    while (n < ct.len && ct.p[n] != ';' && ct.p[n] != ' ') {
        n++;
    }
    return gb_str_case_eq_cstr((gb_str_t){ct.p, n}, "application/json");
}

gb_api_t *gb_api_new(const gb_api_deps_t *deps)
{
    gb_api_t *api = gb_xcalloc(1, sizeof(*api));
    api->loop = deps->loop;
    api->cfg = deps->cfg;
    api->pg = deps->pg;
    api->auth = deps->auth;
    api->router = deps->router;
    api->started_ms = gb_time_now_ms();
    gb_api__health_register(api);
    gb_fleet_init(&api->fleet);
    gb_api__session_register(api);
    gb_api__agent_register(api);
    gb_api__devices_register(api);
    gb_api__import_register(api);
    gb_api__profiles_register(api);
    gb_api__summary_register(api);
    gb_api__capacity_register(api);
    gb_api__stream_register(api);
    gb_api__openapi_register(api);
    gb_api__audit_register(api);
    return api;
}

static int load_esp_timeout(void *arg, const gb_dev_t *dev)
{
    return gb_api__profile_esp_timeout_min(arg, dev);
}

int gb_api_load(gb_api_t *api, PGconn *conn, char *err, size_t errlen)
{
    /* Profiles first: the devices' stored messages are applied with their profiles' ESP
     * timeouts, as ingest applied them. */
    int rc = gb_api__profiles_load(api, conn, err, errlen);
    if (rc < 0) {
        return rc;
    }
    rc = gb_fleet_load(&api->fleet, conn, load_esp_timeout, api, err, errlen);
    if (rc < 0) {
        return rc;
    }
    for (gb_fleet_dev_t *fd = gb_fleet_first_after(&api->fleet, NULL, 0); fd != NULL;
         fd = gb_fleet_next(&api->fleet, fd)) {
        gb_api__profile_apply(api, fd);
    }
    return 0;
}

void gb_api_close(gb_api_t *api)
{
    gb_pg_batcher_close(api->batcher);
    gb_api__stream_close(api);
}

void gb_api__device_changed(gb_api_t *api, gb_fleet_dev_t *fd)
{
    api->fleet.gen++;
    gb_api__stream_device_changed(api, fd);
}

void gb_api__view_opts(const gb_api_t *api, gb_proto_view_opts_t *opts)
{
    opts->now_ms = gb_time_now_ms();
    opts->stall_timeout_ms = api->cfg->stall_timeout_ms;
    opts->fields = 0;
}

void gb_api_set_server(gb_api_t *api, gb_http_server_t *server)
{
    api->server = server;
}

void gb_api_free(gb_api_t *api)
{
    if (api == NULL) {
        return;
    }
    for (size_t i = 0; i < api->nroutes; i++) {
        free(api->routes[i]);
    }
    gb_pg_batcher_free(api->batcher);
    gb_api__import_free(api);
    gb_api__stream_free(api);
    gb_api__summary_free(api);
    gb_api__profiles_free(api);
    gb_fleet_dispose(&api->fleet);
    free(api->routes);
    free(api);
}
