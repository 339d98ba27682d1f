/* api: the REST and agent handlers. The only layer that sees http, protocol, domain, db and
 * auth together: it decodes requests, decides with the domain, and reads or writes through db. */
#ifndef GB_API_H
#define GB_API_H

#include <uv.h>

#include "auth/auth.h"
#include "config/config.h"
#include "db/db.h"
#include "http/http.h"

typedef struct gb_api gb_api_t;

typedef struct gb_api_deps {
    uv_loop_t *loop;
    const gb_config_t *cfg;
    gb_pg_t *pg;
    gb_auth_t *auth;
    gb_http_router_t *router; /* the api registers its routes here */
} gb_api_deps_t;

/* Registers every route. The dependencies must outlive the api. */
gb_api_t *gb_api_new(const gb_api_deps_t *deps);
/* Loads the device table from the database (blocking; at start-up, before serving). Returns 0
 * or GB_EDB with a message in err. */
int gb_api_load(gb_api_t *api, PGconn *conn, char *err, size_t errlen) GB_MUST_CHECK;
/* Stops taking agent reports: waiting ones get 503; the transaction in flight ends normally. */
void gb_api_close(gb_api_t *api);
/* The server whose metrics /metrics reports (set once it is listening). */
void gb_api_set_server(gb_api_t *api, gb_http_server_t *server);
void gb_api_free(gb_api_t *api);

#endif
