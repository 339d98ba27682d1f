/* openapi: GET /api/v1/openapi.json, the OpenAPI 3.1 description of the REST API. The document
 * is server/openapi.json, compiled in at build time (cmake/embed_file.cmake), so the server
 * always describes itself as built. Public, like /healthz. The bytes never change while the
 * process runs: a strong ETag of them lets a client revalidate with If-None-Match (304). */
#include <stdbool.h>
#include <string.h>

#include "api/internal.h"
#include "openapi_data.h"

#define OPENAPI_HEADERS                      \
    "ETag: " GB_API_OPENAPI_JSON_ETAG "\r\n" \
    "Cache-Control: no-cache\r\n"            \
    "X-Content-Type-Options: nosniff\r\n"

static void on_openapi(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    if (gb_http_req_etag_matches(req, GB_API_OPENAPI_JSON_ETAG)) {
        gb_http_respond(req, 304, NULL, OPENAPI_HEADERS, NULL, 0);
        return;
    }
    gb_http_respond(req, 200, "application/json", OPENAPI_HEADERS, gb_api__openapi_json,
                    gb_api__openapi_json_len);
}

void gb_api__openapi_register(gb_api_t *api)
{
    /* HEAD is answered by the same handler (the router falls back to GET; no body is sent). */
    gb_api__route(api, GB_HTTP_GET, "/api/v1/openapi.json", GB_ROLE_NONE, on_openapi);
}
