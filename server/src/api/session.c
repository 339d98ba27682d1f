/* session: GET /api/v1/whoami tells a client which token it holds (name and role), so the web
 * view can check a token at sign-in without side effects. */
#include <string.h>

#include "api/internal.h"

static void on_whoami(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    gb_buf_t out;
    gb_buf_init(&out);
    gb_buf_append_str(&out, "{\"name\":");
    gb_json_quote(&out, who->name, strlen(who->name));
    gb_buf_appendf(&out, ",\"role\":\"%s\"}", gb_role_name(who->role));
    gb_http_respond_json(req, 200, &out);
    gb_buf_dispose(&out);
}

void gb_api__session_register(gb_api_t *api)
{
    gb_api__route(api, GB_HTTP_GET, "/api/v1/whoami", GB_ROLE_VIEWER, on_whoami);
}
