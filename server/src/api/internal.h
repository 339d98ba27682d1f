/* api internals shared by the resource files: the api object, route registration with a
 * required role, and small reply helpers. */
#ifndef GB_API_INTERNAL_H
#define GB_API_INTERNAL_H

#include "api/api.h"
#include "api/fleet.h"
#include "db/db.h"

/* Called once the caller is authenticated and allowed (who is NULL on public routes). */
typedef void (*gb_api_handler_cb)(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who);

typedef struct gb_api_route {
    gb_api_t *api;
    gb_role_t need;   /* GB_ROLE_NONE: public */
    bool query_token; /* also accept ?access_token= (EventSource cannot set headers) */
    gb_api_handler_cb cb;
} gb_api_route_t;

struct gb_api {
    uv_loop_t *loop;
    const gb_config_t *cfg;
    gb_pg_t *pg;
    gb_auth_t *auth;
    gb_http_router_t *router;
    gb_http_server_t *server;
    gb_api_route_t **routes;
    size_t nroutes;
    int64_t started_ms;
    gb_fleet_t fleet;         /* every device, as last committed */
    gb_pg_batcher_t *batcher; /* ingest group commit */
    uint64_t ingest_messages_total;
    uint64_t ingest_devices_total;
};

void gb_api__route(gb_api_t *api, gb_http_method_t method, const char *pattern, gb_role_t need,
                   gb_api_handler_cb cb);
/* Like gb_api__route, and the token may also come as ?access_token=. */
void gb_api__route_query_token(gb_api_t *api, gb_http_method_t method, const char *pattern,
                               gb_role_t need, gb_api_handler_cb cb);

void gb_api__health_register(gb_api_t *api);
void gb_api__session_register(gb_api_t *api);
void gb_api__agent_register(gb_api_t *api);

#endif
