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

/* Whether an If-None-Match value names etag: "*", or a comma-separated list of entity tags that
 * holds it. The comparison is weak (RFC 9110 section 13.1.2), so W/"x" matches "x". */
static bool etag_listed(gb_str_t inm, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = inm.p;
    const char *end = inm.p + inm.len;

    if (inm.p == NULL) {
        return false;
    }
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }
        if (p == end) {
            break;
        }
        if (*p == '*') {
            return true;
        }
        if (end - p >= 2 && p[0] == 'W' && p[1] == '/') {
            p += 2;
        }
        if (p == end || *p != '"') {
            /* Not an entity tag: skip to the next element of the list. */
            while (p < end && *p != ',') {
                p++;
            }
            continue;
        }
        const char *close = memchr(p + 1, '"', (size_t)(end - p - 1));
        if (close == NULL) {
            return false;
        }
        size_t tlen = (size_t)(close - p) + 1;
        if (tlen == elen && memcmp(p, etag, elen) == 0) {
            return true;
        }
        p = close + 1;
    }
    return false;
}

static void on_openapi(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    if (etag_listed(gb_http_req_header(req, "if-none-match"), GB_API_OPENAPI_JSON_ETAG)) {
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
