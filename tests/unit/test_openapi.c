/* test_openapi: server/openapi.json against the server itself. The real api registers its routes
 * on a router: every route must be documented with the role it enforces, and every documented
 * operation must be routed. The document must be OpenAPI 3.1 with an operationId, responses and
 * security on every operation and no dangling $ref; its copy of the agent schema must equal
 * agent-protocol/schema.json; the JSON the views write for the agent-protocol vectors' devices
 * must validate against Device, DeviceDetail, AgentReply and AgentMessage; and the bytes
 * compiled into the server must be the file's. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "api/internal.h"
#include "harness.h"
#include "openapi_data.h"

#define SPEC_PATH   GB_SOURCE_DIR "/server/openapi.json"
#define AGENT_PATH  GB_SOURCE_DIR "/agent-protocol/schema.json"
#define VECTORS_DIR GB_SOURCE_DIR "/agent-protocol/vectors/valid"

static json_t *spec;

static const char *const http_methods[] = {"get",     "put",  "post",  "delete",
                                           "options", "head", "patch", "trace"};

static char *read_file(const char *path, size_t *len)
{
    gb_buf_t b;
    char chunk[8192];
    size_t n;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    gb_buf_init(&b);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        gb_buf_append(&b, chunk, n);
    }
    fclose(f);
    return gb_buf_steal(&b, len);
}

static json_t *load_json(const char *path)
{
    json_error_t jerr;
    json_t *v = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL) {
        print_error("%s: line %d: %s\n", path, jerr.line, jerr.text);
    }
    return v;
}

static int group_setup(void **state)
{
    GB_UNUSED(state);
    spec = load_json(SPEC_PATH);
    return spec != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
    GB_UNUSED(state);
    json_decref(spec);
    return 0;
}

static bool is_http_method(const char *key)
{
    for (size_t i = 0; i < GB_ARRAY_LEN(http_methods); i++) {
        if (strcmp(key, http_methods[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Resolves a local reference ("#/a/b~1c") in the document; NULL when it leads nowhere. */
static json_t *resolve_ref(const char *ref)
{
    char token[256];

    if (strncmp(ref, "#", 1) != 0) {
        return NULL;
    }
    json_t *at = spec;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        size_t n = 0;
        while (*p != '\0' && *p != '/') {
            char c = *p++;
            if (c == '~' && (*p == '0' || *p == '1')) {
                c = *p++ == '0' ? '~' : '/';
            }
            if (n + 1 >= sizeof(token)) {
                return NULL;
            }
            token[n++] = c;
        }
        token[n] = '\0';
        if (json_is_object(at)) {
            at = json_object_get(at, token);
        } else if (json_is_array(at)) {
            char *end;
            unsigned long i = strtoul(token, &end, 10);
            at = *end == '\0' && n > 0 ? json_array_get(at, i) : NULL;
        } else {
            at = NULL;
        }
        if (at == NULL) {
            return NULL;
        }
    }
    return *p == '\0' ? at : NULL;
}

static json_t *schema_named(const char *name)
{
    json_t *s =
        json_object_get(json_object_get(json_object_get(spec, "components"), "schemas"), name);
    if (s == NULL) {
        print_error("components.schemas.%s is missing\n", name);
        fail();
    }
    return s;
}

/* ---- the document's shape ---- */

static void test_openapi_is_3_1_with_info_and_paths(void **state)
{
    GB_UNUSED(state);
    const char *version = json_string_value(json_object_get(spec, "openapi"));
    assert_non_null(version);
    assert_int_equal(strncmp(version, "3.1.", 4), 0);
    json_t *info = json_object_get(spec, "info");
    assert_true(json_is_string(json_object_get(info, "title")));
    assert_true(json_is_string(json_object_get(info, "version")));
    assert_true(json_object_size(json_object_get(spec, "paths")) > 0);
    assert_true(json_is_object(json_object_get(json_object_get(spec, "components"), "schemas")));
    assert_true(json_is_object(schema_named("Error")));
}

/* Every {name} of a path template needs a required path parameter of that name, on the path
 * item or on the operation. */
static bool path_params_declared(const char *path, json_t *item, json_t *operation)
{
    bool ok = true;
    for (const char *p = strchr(path, '{'); p != NULL; p = strchr(p + 1, '{')) {
        const char *close = strchr(p, '}');
        assert_non_null(close);
        size_t n = (size_t)(close - p - 1);
        bool found = false;
        json_t *lists[2] = {json_object_get(item, "parameters"),
                            json_object_get(operation, "parameters")};
        for (size_t l = 0; l < 2 && !found; l++) {
            size_t i;
            json_t *prm;
            json_array_foreach(lists[l], i, prm)
            {
                json_t *ref = json_object_get(prm, "$ref");
                if (ref != NULL) {
                    prm = resolve_ref(json_string_value(ref));
                }
                const char *name = json_string_value(json_object_get(prm, "name"));
                const char *in = json_string_value(json_object_get(prm, "in"));
                if (name != NULL && in != NULL && strlen(name) == n &&
                    strncmp(name, p + 1, n) == 0 && strcmp(in, "path") == 0 &&
                    json_is_true(json_object_get(prm, "required"))) {
                    found = true;
                }
            }
        }
        if (!found) {
            print_error("%s: no required path parameter %.*s\n", path, (int)n, p + 1);
            ok = false;
        }
    }
    return ok;
}

static void test_openapi_operations_are_complete(void **state)
{
    GB_UNUSED(state);
    static const char *const roles[] = {"public", "agent", "viewer", "technician", "admin"};
    json_t *schemes = json_object_get(json_object_get(spec, "components"), "securitySchemes");
    json_t *ids = json_object();
    int bad = 0;
    const char *path;
    json_t *item;

    json_object_foreach(json_object_get(spec, "paths"), path, item)
    {
        const char *method;
        json_t *op;
        if (path[0] != '/') {
            print_error("path %s does not start with /\n", path);
            bad++;
        }
        json_object_foreach(item, method, op)
        {
            if (!is_http_method(method)) {
                continue;
            }
            const char *id = json_string_value(json_object_get(op, "operationId"));
            if (id == NULL || id[0] == '\0') {
                print_error("%s %s: no operationId\n", method, path);
                bad++;
            } else if (json_object_get(ids, id) != NULL) {
                print_error("%s %s: operationId %s is used twice\n", method, path, id);
                bad++;
            } else {
                json_object_set_new(ids, id, json_true());
            }
            json_t *responses = json_object_get(op, "responses");
            if (json_object_size(responses) == 0) {
                print_error("%s %s: no responses\n", method, path);
                bad++;
            }
            const char *code;
            json_t *r;
            json_object_foreach(responses, code, r)
            {
                bool ok = strcmp(code, "default") == 0 ||
                          (strlen(code) == 3 && code[0] >= '1' && code[0] <= '5');
                if (!ok || (json_object_get(r, "$ref") == NULL &&
                            !json_is_string(json_object_get(r, "description")))) {
                    print_error("%s %s: response %s is not a status with a description\n", method,
                                path, code);
                    bad++;
                }
            }
            const char *role = json_string_value(json_object_get(op, "x-glovebox-role"));
            bool known = false;
            for (size_t i = 0; role != NULL && i < GB_ARRAY_LEN(roles); i++) {
                known = known || strcmp(role, roles[i]) == 0;
            }
            if (!known) {
                print_error("%s %s: x-glovebox-role is missing or unknown\n", method, path);
                bad++;
                continue;
            }
            json_t *security = json_object_get(op, "security");
            bool is_public = strcmp(role, "public") == 0;
            if (!json_is_array(security) || (json_array_size(security) == 0) != is_public) {
                print_error("%s %s: security must be [] exactly when the role is public\n", method,
                            path);
                bad++;
                continue;
            }
            size_t i;
            json_t *req;
            json_array_foreach(security, i, req)
            {
                const char *scheme;
                json_t *scopes;
                json_object_foreach(req, scheme, scopes)
                {
                    if (json_object_get(schemes, scheme) == NULL) {
                        print_error("%s %s: unknown security scheme %s\n", method, path, scheme);
                        bad++;
                    }
                }
            }
            if (!path_params_declared(path, item, op)) {
                bad++;
            }
        }
    }
    json_decref(ids);
    assert_int_equal(bad, 0);
}

static int check_refs(json_t *v, int *count)
{
    int bad = 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child)
        {
            if (strcmp(key, "$ref") == 0 && json_is_string(child)) {
                (*count)++;
                if (resolve_ref(json_string_value(child)) == NULL) {
                    print_error("$ref %s resolves to nothing\n", json_string_value(child));
                    bad++;
                }
            } else if (strcmp(key, "mapping") == 0 && json_is_object(child)) {
                /* A discriminator's mapping holds references too. */
                const char *k;
                json_t *target;
                json_object_foreach(child, k, target)
                {
                    if (json_is_string(target) && resolve_ref(json_string_value(target)) == NULL) {
                        print_error("mapping %s: %s resolves to nothing\n", k,
                                    json_string_value(target));
                        bad++;
                    }
                }
            } else {
                bad += check_refs(child, count);
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
        {
            bad += check_refs(child, count);
        }
    }
    return bad;
}

static void test_openapi_every_ref_resolves(void **state)
{
    GB_UNUSED(state);
    int count = 0;
    assert_int_equal(check_refs(spec, &count), 0);
    assert_true(count > 50);
    assert_null(resolve_ref("#/components/schemas/NoSuchThing"));
    assert_non_null(resolve_ref("#/paths/~1api~1v1~1devices~1{serial}"));
}

/* ---- the document against the router ---- */

typedef struct route_seen {
    gb_http_method_t method;
    char *pattern;
} route_seen_t;

typedef struct routes {
    route_seen_t *v;
    size_t n;
} routes_t;

static void on_route(gb_http_method_t method, const char *pattern, void *arg)
{
    routes_t *r = arg;
    r->v = gb_xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
    r->v[r->n].method = method;
    r->v[r->n].pattern = gb_xstrdup(pattern);
    r->n++;
}

static void lower(const char *in, char *out, size_t n)
{
    size_t i = 0;
    for (; in[i] != '\0' && i + 1 < n; i++) {
        out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] - 'A' + 'a' : in[i]);
    }
    out[i] = '\0';
}

static bool security_has(json_t *op, const char *scheme)
{
    size_t i;
    json_t *req;
    json_array_foreach(json_object_get(op, "security"), i, req)
    {
        if (json_object_get(req, scheme) != NULL) {
            return true;
        }
    }
    return false;
}

/* The real api on a fresh router. Registering touches neither the database nor the token
 * cache, so the deps carry none: a registration that starts using them shows up here as a
 * crash, which is the moment to give this test real ones. */
static void test_openapi_documents_exactly_the_routes(void **state)
{
    GB_UNUSED(state);
    uv_loop_t loop;
    gb_config_t cfg;
    routes_t seen = {NULL, 0};
    int bad = 0;

    assert_int_equal(uv_loop_init(&loop), 0);
    gb_config_init(&cfg);
    gb_http_router_t *router = gb_http_router_new();
    gb_api_deps_t deps = {.loop = &loop, .cfg = &cfg, .pg = NULL, .auth = NULL, .router = router};
    gb_api_t *api = gb_api_new(&deps);
    gb_http_router_foreach(router, on_route, &seen);

    /* Every route of the api is registered through gb_api__route*, in the router's order, so
     * route i of the router is api->routes[i]: its role can be compared too. */
    if (seen.n != api->nroutes) {
        print_error("the router has %zu routes but the api registered %zu: a route added "
                    "around gb_api__route* escapes the role check\n",
                    seen.n, api->nroutes);
    }
    assert_int_equal(seen.n, api->nroutes);
    json_t *paths = json_object_get(spec, "paths");
    for (size_t i = 0; i < seen.n; i++) {
        char m[16];
        lower(gb_http_method_name(seen.v[i].method), m, sizeof(m));
        json_t *op = json_object_get(json_object_get(paths, seen.v[i].pattern), m);
        if (op == NULL) {
            print_error("routed but not documented: %s %s\n", m, seen.v[i].pattern);
            bad++;
            continue;
        }
        const gb_api_route_t *route = api->routes[i];
        const char *want = route->need == GB_ROLE_NONE ? "public" : gb_role_name(route->need);
        const char *role = json_string_value(json_object_get(op, "x-glovebox-role"));
        if (role == NULL || strcmp(role, want) != 0) {
            print_error("%s %s: documented role %s, enforced role %s\n", m, seen.v[i].pattern,
                        role != NULL ? role : "(none)", want);
            bad++;
        }
        if (route->query_token != security_has(op, "accessTokenQuery")) {
            print_error("%s %s: the access_token query is %s but documented as %s\n", m,
                        seen.v[i].pattern, route->query_token ? "accepted" : "refused",
                        route->query_token ? "refused" : "accepted");
            bad++;
        }
    }

    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item)
    {
        const char *method;
        json_t *op;
        json_object_foreach(item, method, op)
        {
            if (!is_http_method(method)) {
                continue;
            }
            bool routed = false;
            for (size_t i = 0; i < seen.n && !routed; i++) {
                char m[16];
                lower(gb_http_method_name(seen.v[i].method), m, sizeof(m));
                routed = strcmp(m, method) == 0 && strcmp(seen.v[i].pattern, path) == 0;
            }
            if (!routed) {
                print_error("documented but not routed: %s %s\n", method, path);
                bad++;
            }
        }
    }

    for (size_t i = 0; i < seen.n; i++) {
        free(seen.v[i].pattern);
    }
    free(seen.v);
    gb_api_close(api);
    /* Anything the api started on the loop must end once it is closed. */
    for (int i = 0; i < 100 && uv_loop_alive(&loop); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    gb_api_free(api);
    gb_http_router_free(router);
    gb_config_dispose(&cfg);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(bad, 0);
}

/* ---- the agent schema's copy ---- */

/* "stage_message" -> "AgentStageMessage": where agent-protocol/schema.json's $defs live in the
 * document. */
static void agent_component_name(const char *def, char *out, size_t n)
{
    size_t o = (size_t)snprintf(out, n, "Agent");
    bool upper = true;
    for (const char *p = def; *p != '\0' && o + 1 < n; p++) {
        if (*p == '_') {
            upper = true;
            continue;
        }
        out[o++] = (char)(upper && *p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
        upper = false;
    }
    out[o] = '\0';
}

/* A copy of v with every "#/$defs/x" reference rewritten to "#/components/schemas/AgentX". */
static json_t *rewrite_refs(json_t *v)
{
    if (json_is_object(v)) {
        json_t *out = json_object();
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child)
        {
            const char *s = json_string_value(child);
            if (strcmp(key, "$ref") == 0 && s != NULL && strncmp(s, "#/$defs/", 8) == 0) {
                char name[128], ref[192];
                agent_component_name(s + 8, name, sizeof(name));
                snprintf(ref, sizeof(ref), "#/components/schemas/%s", name);
                json_object_set_new(out, key, json_string(ref));
            } else {
                json_object_set_new(out, key, rewrite_refs(child));
            }
        }
        return out;
    }
    if (json_is_array(v)) {
        json_t *out = json_array();
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
        {
            json_array_append_new(out, rewrite_refs(child));
        }
        return out;
    }
    return json_deep_copy(v);
}

static int expect_same(json_t *want, const char *component)
{
    json_t *got =
        json_object_get(json_object_get(json_object_get(spec, "components"), "schemas"), component);
    if (got == NULL || !json_equal(got, want)) {
        print_error("components.schemas.%s differs from agent-protocol/schema.json\n", component);
        return 1;
    }
    return 0;
}

static void test_openapi_agent_schemas_equal_the_protocol_schema(void **state)
{
    GB_UNUSED(state);
    json_t *schema = load_json(AGENT_PATH);
    assert_non_null(schema);
    int bad = 0;

    json_t *root = rewrite_refs(schema);
    json_object_del(root, "$schema");
    json_object_del(root, "$id");
    json_object_del(root, "$defs");
    bad += expect_same(root, "AgentReport");
    json_decref(root);

    const char *def;
    json_t *body;
    json_object_foreach(json_object_get(schema, "$defs"), def, body)
    {
        char name[128];
        agent_component_name(def, name, sizeof(name));
        json_t *want = rewrite_refs(body);
        bad += expect_same(want, name);
        json_decref(want);
    }
    json_decref(schema);
    assert_int_equal(bad, 0);
}

/* ---- the views against the document ----
 * A small JSON Schema checker for the keywords the document's schemas use: $ref, type, enum,
 * const, minimum, maximum, required, properties, items, allOf, anyOf, oneOf, if/then. Others
 * (pattern, format, lengths, ...) are not checked. It is also strict where a schema is not: an
 * object member that no schema of the object names is an error, so a field added to the views
 * but not to the document is caught. */

typedef struct checker {
    int quiet; /* > 0 inside anyOf/oneOf branches, whose failures are expected */
    int errors;
} checker_t;

static void complain(checker_t *c, const char *path, const char *fmt, ...) GB_PRINTF(3, 4);

static void complain(checker_t *c, const char *path, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->quiet == 0) {
        print_error("%s: %s\n", path, msg);
    }
    c->errors++;
}

static bool type_is(const char *type, const json_t *v)
{
    if (strcmp(type, "null") == 0) {
        return json_is_null(v);
    }
    if (strcmp(type, "boolean") == 0) {
        return json_is_boolean(v);
    }
    if (strcmp(type, "integer") == 0) {
        return json_is_integer(v);
    }
    if (strcmp(type, "number") == 0) {
        return json_is_number(v);
    }
    if (strcmp(type, "string") == 0) {
        return json_is_string(v);
    }
    if (strcmp(type, "array") == 0) {
        return json_is_array(v);
    }
    if (strcmp(type, "object") == 0) {
        return json_is_object(v);
    }
    return false;
}

static bool values_equal(json_t *a, json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        return json_number_value(a) == json_number_value(b);
    }
    return json_equal(a, b);
}

/* Whether some schema that applies to the object itself ($ref, allOf and then followed) names
 * key. */
static bool names_member(json_t *s, const char *key)
{
    if (json_object_get(json_object_get(s, "properties"), key) != NULL) {
        return true;
    }
    json_t *ref = json_object_get(s, "$ref");
    if (ref != NULL && names_member(resolve_ref(json_string_value(ref)), key)) {
        return true;
    }
    json_t *then = json_object_get(s, "then");
    if (then != NULL && names_member(then, key)) {
        return true;
    }
    size_t i;
    json_t *sub;
    json_array_foreach(json_object_get(s, "allOf"), i, sub)
    {
        if (names_member(sub, key)) {
            return true;
        }
    }
    return false;
}

static bool describes_members(json_t *s)
{
    if (json_object_get(s, "properties") != NULL) {
        return true;
    }
    json_t *ref = json_object_get(s, "$ref");
    if (ref != NULL && describes_members(resolve_ref(json_string_value(ref)))) {
        return true;
    }
    size_t i;
    json_t *sub;
    json_array_foreach(json_object_get(s, "allOf"), i, sub)
    {
        if (describes_members(sub)) {
            return true;
        }
    }
    return false;
}

static void check(checker_t *c, json_t *s, json_t *v, const char *path, bool strict);

static bool branch_ok(checker_t *c, json_t *s, json_t *v, const char *path, bool strict)
{
    int before = c->errors;
    c->quiet++;
    check(c, s, v, path, strict);
    c->quiet--;
    bool ok = c->errors == before;
    c->errors = before;
    return ok;
}

static void check(checker_t *c, json_t *s, json_t *v, const char *path, bool strict)
{
    char sub[512];
    size_t i;
    json_t *x;

    if (!json_is_object(s)) {
        complain(c, path, "no schema");
        return;
    }
    json_t *ref = json_object_get(s, "$ref");
    if (ref != NULL) {
        check(c, resolve_ref(json_string_value(ref)), v, path, false);
    }
    json_t *type = json_object_get(s, "type");
    if (json_is_string(type) && !type_is(json_string_value(type), v)) {
        complain(c, path, "is not of type %s", json_string_value(type));
        return;
    }
    if (json_is_array(type)) {
        bool any = false;
        json_array_foreach(type, i, x)
        {
            any = any || type_is(json_string_value(x), v);
        }
        if (!any) {
            complain(c, path, "is not of any type listed");
            return;
        }
    }
    json_t *en = json_object_get(s, "enum");
    if (en != NULL) {
        bool any = false;
        json_array_foreach(en, i, x)
        {
            any = any || values_equal(x, v);
        }
        if (!any) {
            char *dump = json_dumps(v, JSON_ENCODE_ANY);
            complain(c, path, "value %s is not in the enum", dump);
            free(dump);
        }
    }
    json_t *cst = json_object_get(s, "const");
    if (cst != NULL && !values_equal(cst, v)) {
        complain(c, path, "is not the const value");
    }
    json_t *min = json_object_get(s, "minimum");
    if (min != NULL && json_is_number(v) && json_number_value(v) < json_number_value(min)) {
        complain(c, path, "is below the minimum");
    }
    json_t *max = json_object_get(s, "maximum");
    if (max != NULL && json_is_number(v) && json_number_value(v) > json_number_value(max)) {
        complain(c, path, "is above the maximum");
    }
    if (json_is_object(v)) {
        json_array_foreach(json_object_get(s, "required"), i, x)
        {
            if (json_object_get(v, json_string_value(x)) == NULL) {
                complain(c, path, "lacks required member %s", json_string_value(x));
            }
        }
        const char *key;
        json_t *member;
        json_t *props = json_object_get(s, "properties");
        json_object_foreach(v, key, member)
        {
            snprintf(sub, sizeof(sub), "%s.%s", path, key);
            json_t *ps = json_object_get(props, key);
            if (ps != NULL) {
                check(c, ps, member, sub, true);
            }
            if (strict && describes_members(s) && !names_member(s, key)) {
                complain(c, sub, "is written but not documented");
            }
        }
    }
    json_t *items = json_object_get(s, "items");
    if (items != NULL && json_is_array(v)) {
        json_array_foreach(v, i, x)
        {
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            check(c, items, x, sub, true);
        }
    }
    json_array_foreach(json_object_get(s, "allOf"), i, x)
    {
        check(c, x, v, path, false);
    }
    json_t *any_of = json_object_get(s, "anyOf");
    if (any_of != NULL) {
        bool any = false;
        json_array_foreach(any_of, i, x)
        {
            any = any || branch_ok(c, x, v, path, true);
        }
        if (!any) {
            complain(c, path, "matches no anyOf branch");
        }
    }
    json_t *one_of = json_object_get(s, "oneOf");
    if (one_of != NULL) {
        int n = 0;
        json_array_foreach(one_of, i, x)
        {
            n += branch_ok(c, x, v, path, true) ? 1 : 0;
        }
        if (n != 1) {
            complain(c, path, "matches %d oneOf branches, not 1", n);
        }
    }
    json_t *cond = json_object_get(s, "if");
    if (cond != NULL && branch_ok(c, cond, v, path, false)) {
        check(c, json_object_get(s, "then"), v, path, false);
    }
}

/* Validates the JSON text in b against the named component; returns the errors found. */
static int validate_text(const gb_buf_t *b, const char *component, const char *what,
                         json_t *extra_members)
{
    json_error_t jerr;
    json_t *v = json_loadb(b->data, b->len, 0, &jerr);
    if (v == NULL) {
        print_error("%s: the view is not JSON: %s\n", what, jerr.text);
        return 1;
    }
    if (extra_members != NULL) {
        json_object_update(v, extra_members);
    }
    checker_t c = {0, 0};
    char path[256];
    snprintf(path, sizeof(path), "%s (%s)", what, component);
    check(&c, schema_named(component), v, path, true);
    json_decref(v);
    return c.errors;
}

static int validate_device(const gb_dev_t *dev, const char *what)
{
    gb_proto_view_opts_t opts = {
        .now_ms = dev->last_seen_ms != GB_TIME_NONE ? dev->last_seen_ms + 3600000 : 1795000000000,
        .stall_timeout_ms = 900000};
    gb_buf_t b;
    int bad = 0;

    gb_buf_init(&b);
    gb_proto_device_json(dev, &opts, &b);
    bad += validate_text(&b, "Device", what, NULL);
    gb_buf_reset(&b);
    /* The device endpoints add the recent technician actions to the detail view. */
    json_t *actions =
        json_pack("{s:[{s:s, s:s, s:s, s:{s:s}}]}", "actions", "at", "2026-11-24T10:00:00.000Z",
                  "actor", "alice", "action", "note", "detail", "text", "reseated the TPM");
    gb_proto_device_detail_json(dev, &opts, &b);
    bad += validate_text(&b, "DeviceDetail", what, actions);
    json_decref(actions);
    gb_buf_reset(&b);
    gb_proto_agent_reply_json(dev, &b);
    bad += validate_text(&b, "AgentReply", what, NULL);
    gb_buf_dispose(&b);
    return bad;
}

static int replay_vector(const char *file)
{
    char path[1024];
    json_error_t jerr;
    int bad = 0;

    snprintf(path, sizeof(path), "%s/%s", VECTORS_DIR, file);
    json_t *vec = json_load_file(path, 0, &jerr);
    json_t *request = json_object_get(vec, "request");
    if (request == NULL) {
        print_error("%s: no request\n", file);
        json_decref(vec);
        return 1;
    }
    char *body = json_dumps(request, 0);
    gb_arena_t arena;
    gb_arena_init(&arena);
    gb_proto_request_t pr;
    gb_error_t err;
    gb_error_clear(&err);
    if (gb_proto_decode_request(body, strlen(body), &arena, &pr, &err) != 0) {
        print_error("%s: refused: %s\n", file, err.message);
        bad++;
    } else {
        gb_dev_t dev;
        gb_dev_init(&dev, pr.serial);
        gb_dev_set_group_tag(&dev, "SALES");
        gb_dev_set_profile(&dev, "sales-emea", false);
        gb_dev_set_imported(&dev, true);
        size_t n = pr.n_msgs;
        bool replay = gb_msg_batch_prepare(&dev, pr.msgs, &n);
        assert_false(replay);
        gb_dev_apply_batch(&dev, NULL, pr.msgs, n);
        bad += validate_device(&dev, file);

        /* The events endpoint shows each message as stored. */
        gb_buf_t b;
        gb_buf_init(&b);
        for (size_t i = 0; i < n; i++) {
            gb_buf_reset(&b);
            gb_proto_encode_message(&pr.msgs[i], &b);
            bad += validate_text(&b, "AgentMessage", file, NULL);
        }
        gb_buf_dispose(&b);
        gb_dev_dispose(&dev);
    }
    free(body);
    gb_arena_dispose(&arena);
    json_decref(vec);
    return bad;
}

static void test_openapi_describes_what_the_views_write(void **state)
{
    GB_UNUSED(state);
    int bad = 0, vectors = 0;

    /* A device known only from the CSV: every optional field is null. */
    gb_dev_t fresh;
    gb_dev_init(&fresh, "PF3ABC12");
    bad += validate_device(&fresh, "registered device");
    gb_dev_dispose(&fresh);

    DIR *dir = opendir(VECTORS_DIR);
    assert_non_null(dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0) {
            bad += replay_vector(e->d_name);
            vectors++;
        }
    }
    closedir(dir);
    assert_true(vectors > 0);
    assert_int_equal(bad, 0);
}

/* "fields" (of the list and the stream) names exactly the members a Device is written with, in
 * their order, and the server takes each of them. */
static void test_openapi_fields_are_the_device_members(void **state)
{
    GB_UNUSED(state);
    static const char *const ops[] = {"/api/v1/devices", "/api/v1/stream"};
    for (size_t o = 0; o < GB_ARRAY_LEN(ops); o++) {
        json_t *params = json_object_get(
            json_object_get(json_object_get(json_object_get(spec, "paths"), ops[o]), "get"),
            "parameters");
        bool found = false;
        size_t i;
        json_t *p;
        json_array_foreach(params, i, p)
        {
            const char *ref = json_string_value(json_object_get(p, "$ref"));
            found = found || (ref != NULL && strcmp(ref, "#/components/parameters/Fields") == 0);
        }
        if (!found) {
            fail_msg("%s does not take fields", ops[o]);
        }
    }
    json_t *names = json_object_get(
        json_object_get(
            json_object_get(
                json_object_get(json_object_get(json_object_get(spec, "components"), "parameters"),
                                "Fields"),
                "schema"),
            "items"),
        "enum");
    assert_true(json_is_array(names));

    gb_dev_t dev;
    gb_dev_init(&dev, "PF3ABC12");
    gb_buf_t b;
    gb_buf_init(&b);
    gb_proto_device_json(&dev, NULL, &b);
    json_t *whole = json_loadb(b.data, b.len, JSON_PRESERVE_ORDER, NULL);
    assert_non_null(whole);
    assert_int_equal(json_array_size(names), json_object_size(whole));
    const char *key;
    json_t *val;
    size_t k = 0;
    json_object_foreach(whole, key, val)
    {
        const char *name = json_string_value(json_array_get(names, k++));
        assert_non_null(name);
        assert_string_equal(name, key);
        uint32_t mask = 0;
        gb_str_t bad;
        assert_true(gb_proto_device_fields_parse(gb_str_from_cstr(name), &mask, &bad));
    }
    json_decref(whole);
    gb_buf_dispose(&b);
    gb_dev_dispose(&dev);
}

static void test_openapi_checker_catches_drift(void **state)
{
    GB_UNUSED(state);
    /* The checker itself: an undocumented member, a wrong type, a value outside an enum and a
     * missing required member are each caught. */
    static const char *const bad_replies[] = {
        "{\"acked_seq\":1,\"status\":\"green\",\"stage\":null,\"extra\":1}",
        "{\"acked_seq\":\"1\",\"status\":\"green\",\"stage\":null}",
        "{\"acked_seq\":1,\"status\":\"blue\",\"stage\":null}",
        "{\"acked_seq\":1,\"status\":\"green\"}",
        "{\"acked_seq\":1,\"status\":\"green\",\"stage\":\"nowhere\"}",
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(bad_replies); i++) {
        json_t *v = json_loads(bad_replies[i], 0, NULL);
        assert_non_null(v);
        checker_t c = {1, 0};
        check(&c, schema_named("AgentReply"), v, "reply", true);
        assert_true(c.errors > 0);
        json_decref(v);
    }
    json_t *ok = json_loads("{\"acked_seq\":1,\"status\":\"green\",\"stage\":\"reseal\"}", 0, NULL);
    checker_t c = {0, 0};
    check(&c, schema_named("AgentReply"), ok, "reply", true);
    assert_int_equal(c.errors, 0);
    json_decref(ok);
}

/* ---- the compiled-in copy ---- */

static void test_openapi_compiled_bytes_are_the_file(void **state)
{
    GB_UNUSED(state);
    size_t len = 0;
    char *file = read_file(SPEC_PATH, &len);
    assert_non_null(file);
    assert_int_equal(gb_api__openapi_json_len, len);
    assert_memory_equal(gb_api__openapi_json, file, len);
    assert_int_equal(gb_api__openapi_json[len], 0);

    uint8_t digest[GB_SHA256_LEN];
    char hex[2 * GB_SHA256_LEN + 1];
    char etag[20];
    gb_sha256(file, len, digest);
    gb_hex_encode(digest, 8, hex);
    snprintf(etag, sizeof(etag), "\"%.16s\"", hex);
    assert_string_equal(GB_API_OPENAPI_JSON_ETAG, etag);
    free(file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openapi_is_3_1_with_info_and_paths),
        cmocka_unit_test(test_openapi_operations_are_complete),
        cmocka_unit_test(test_openapi_every_ref_resolves),
        cmocka_unit_test(test_openapi_agent_schemas_equal_the_protocol_schema),
        cmocka_unit_test(test_openapi_fields_are_the_device_members),
        cmocka_unit_test(test_openapi_checker_catches_drift),
        cmocka_unit_test(test_openapi_describes_what_the_views_write),
        cmocka_unit_test(test_openapi_compiled_bytes_are_the_file),
        cmocka_unit_test(test_openapi_documents_exactly_the_routes),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
