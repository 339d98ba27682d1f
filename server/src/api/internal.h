/* api internals shared by the resource files: the api object, route registration with a
 * required role, and small reply helpers. */
#ifndef GB_API_INTERNAL_H
#define GB_API_INTERNAL_H

#include "api/api.h"
#include "api/fleet.h"
#include "db/db.h"
#include "protocol/protocol.h"

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
    struct gb_api_stream *stream;     /* stream.c: live-stream subscribers */
    struct gb_api_summary *summary;   /* summary.c: cached summary and timings */
    struct gb_api_profiles *profiles; /* profiles.c: profiles by name and by group tag */
    struct gb_api_import *imports;    /* import.c: imports in progress */
};

void gb_api__route(gb_api_t *api, gb_http_method_t method, const char *pattern, gb_role_t need,
                   gb_api_handler_cb cb);
/* Like gb_api__route, and the token may also come as ?access_token=. */
void gb_api__route_query_token(gb_api_t *api, gb_http_method_t method, const char *pattern,
                               gb_role_t need, gb_api_handler_cb cb);
/* Like gb_api__route, for a body too large to hold: the handler runs (after authentication and
 * the role check, which read none of the body) as soon as the request's head is in, and reads
 * the body itself with gb_http_req_body_stream(), up to max_body bytes. */
void gb_api__route_streamed(gb_api_t *api, gb_http_method_t method, const char *pattern,
                            gb_role_t need, size_t max_body, gb_api_handler_cb cb);

/* Every resource file registers its routes (and sets up its state) here, and releases its
 * state in its _free (which must accept a register that never ran). */
void gb_api__health_register(gb_api_t *api);
void gb_api__session_register(gb_api_t *api);
void gb_api__agent_register(gb_api_t *api);
void gb_api__devices_register(gb_api_t *api);
void gb_api__import_register(gb_api_t *api);
void gb_api__profiles_register(gb_api_t *api);
void gb_api__summary_register(gb_api_t *api);
void gb_api__capacity_register(gb_api_t *api);
void gb_api__stream_register(gb_api_t *api);
void gb_api__openapi_register(gb_api_t *api);
void gb_api__audit_register(gb_api_t *api);
void gb_api__import_free(gb_api_t *api);
void gb_api__profiles_free(gb_api_t *api);
void gb_api__summary_free(gb_api_t *api);
void gb_api__stream_free(gb_api_t *api);

/* A device's published state changed (after a commit): bumps the fleet's generation and tells
 * the live stream. Every publisher calls it once per device and change. */
void gb_api__device_changed(gb_api_t *api, gb_fleet_dev_t *fd);
/* stream.c: queues fd for the live stream's subscribers (coalesced). */
void gb_api__stream_device_changed(gb_api_t *api, const gb_fleet_dev_t *fd);
/* stream.c: ends every subscriber's stream (at shutdown). */
void gb_api__stream_close(gb_api_t *api);
/* stream.c: appends the live stream's Prometheus metrics (subscribers, events, drops). */
void gb_api__stream_write_metrics(gb_api_t *api, gb_buf_t *out);

/* profiles.c: loads the profiles (blocking, at start-up, before the fleet is loaded). Returns 0
 * or GB_EDB with a message in err. */
int gb_api__profiles_load(gb_api_t *api, PGconn *conn, char *err, size_t errlen) GB_MUST_CHECK;
/* profiles.c: gives fd the profile its group tag selects (or none), on its published state and
 * on its working copy if it has one. Does not call gb_api__device_changed. */
void gb_api__profile_apply(gb_api_t *api, gb_fleet_dev_t *fd);

/* A technician's action on a device. */
typedef enum gb_api_action {
    GB_API_ACTION_NONE = 0,
    GB_API_ACTION_RETRY,       /* open the next attempt of a red device */
    GB_API_ACTION_NOTE,        /* a free-text note */
    GB_API_ACTION_ASSIGN_SLOT, /* set (or clear) the bench slot */
} gb_api_action_t;

const char *gb_api_action_id(gb_api_action_t action);
/* agent.c: queues action on the device serial with the ingest batches, so it is ordered with
 * the agents' reports and stored (device_actions, acting token's name) in the same transaction
 * as the device's new row. Answers req: the device detail after COMMIT, 409 for a retry of a
 * device that is not red, 404 when the device is gone, 503 when nothing could be stored. arg is
 * the note's text or the slot (NULL clears it); both are copied. */
void gb_api__ingest_action(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who,
                           const char *serial, gb_api_action_t action, const char *arg);
/* devices.c: answers 503 unavailable for a read the database could not serve (err says why). */
void gb_api__db_unavailable(gb_http_req_t *req, int err);
/* devices.c: answers 400 invalid_query naming the query parameter field. */
void gb_api__bad_query(gb_http_req_t *req, const char *field, const char *why);
/* devices.c: a decimal integer in [min, max]; false for anything else. */
bool gb_api__parse_int(gb_str_t s, long long min, long long max, long long *out);
/* devices.c: the "fields" query parameter (gb_proto_device_fields_parse) into *mask, 0 when absent;
 * false after answering 400 invalid_query when it names something that is not a Device member. */
bool gb_api__parse_fields(gb_http_req_t *req, uint32_t *mask);
/* devices.c: a paged read from the database: its query, the request it answers, the page size
 * asked for and the query's parameters. */
typedef struct gb_api_page_op {
    gb_pg_query_t query;
    gb_http_req_t *req;
    long long limit;
    const char *params[3];
} gb_api_page_op_t;
/* devices.c: reads the query parameters after_name (an integer of 0 or more; 0 when absent) and
 * limit (1 to limit_max; limit_default when absent); answers 400 naming the parameter and
 * returns false on a bad one. */
bool gb_api__parse_page(gb_http_req_t *req, const char *after_name, long long limit_default,
                        long long limit_max, long long *after, long long *limit);
/* devices.c: a page op for req (in its arena, limit set, parameters NULL). */
gb_api_page_op_t *gb_api__page_op_new(gb_http_req_t *req, long long limit);
/* devices.c: the page op q belongs to, or NULL after answering 503 when its query failed. */
gb_api_page_op_t *gb_api__page_loaded(gb_pg_query_t *q, int err, size_t nresults);
/* devices.c: the device the route's {serial} names, or NULL after answering 404 not_found. */
gb_fleet_dev_t *gb_api__find_or_404(gb_api_t *api, gb_http_req_t *req);
/* devices.c: answers req with fd's detail (its recent actions read from the database). */
void gb_api__device_detail_respond(gb_api_t *api, gb_http_req_t *req, gb_fleet_dev_t *fd);

/* profiles.c: what the handover record shows of the profile dev's group tag selects. */
typedef struct gb_api_profile_info {
    const char *name;
    const char *tenant_domain;
    const char *join;          /* "azure_ad" or "hybrid" */
    const char *assigned_user; /* NULL: none */
} gb_api_profile_info_t;
/* False when no profile matches; the strings live until the next profile change. */
bool gb_api__profile_info(const gb_api_t *api, const gb_dev_t *dev, gb_api_profile_info_t *out);

/* audit.c: the entries a batch writes to audit_log (serial, actor, action, detail as JSON),
 * inserted with GB_API_SQL_INSERT_AUDIT from these four arrays. */
#define GB_API_AUDIT_COLS 4
typedef struct gb_api_audit_rows {
    gb_pg_array_t col[GB_API_AUDIT_COLS];
    gb_buf_t detail; /* scratch */
} gb_api_audit_rows_t;
extern const char GB_API_SQL_INSERT_AUDIT[];
void gb_api__audit_rows_init(gb_api_audit_rows_t *r);
void gb_api__audit_rows_dispose(gb_api_audit_rows_t *r);
void gb_api__audit_add(gb_api_audit_rows_t *r, const char *serial, const char *actor,
                       const char *action, const char *detail, size_t detail_len);
/* What a device's entries compare: taken before a change, compared after it. */
typedef struct gb_api_audit_mark {
    gb_dev_status_t status;
    uint32_t attempt;
    bool has_upn;
    char upn[GB_PROTO_UPN_MAX + 1];
} gb_api_audit_mark_t;
void gb_api__audit_mark(gb_api_audit_mark_t *m, const gb_dev_t *dev);
/* Adds the entries of what changed between before and dev: a new attempt ("attempt"), a new
 * status ("status": from, to, attempt, stage, device time; red with its diagnosis, green and
 * resealed with the ESP's durations and bytes, resealed with its clocks), the user who signed
 * in ("user_signin"). cause (NULL, or e.g. "rebuild") is recorded with them. */
void gb_api__audit_changes(gb_api_audit_rows_t *r, const gb_api_audit_mark_t *before,
                           const gb_dev_t *dev, const char *actor, const char *cause);

/* profiles.c: the ESP timeout (minutes) of the profile dev's group tag selects, or 0 for the
 * default. */
int gb_api__profile_esp_timeout_min(const gb_api_t *api, const gb_dev_t *dev);

/* True when the request's Content-Type is application/json (parameters such as charset
 * aside). */
bool gb_api__is_json(const gb_http_req_t *req);

/* The view options for now (the clock and the stall timeout). */
void gb_api__view_opts(const gb_api_t *api, gb_proto_view_opts_t *opts);

/* ratelimit.c: failed token checks per peer address. After GB_API_AUTHLIMIT_FAILURES failures
 * (a missing or unknown token) from one address within GB_API_AUTHLIMIT_WINDOW_MS of its first
 * failure, that address's requests without a valid token get 429 too_many_requests with
 * Retry-After until the window ends. A valid token is never refused. The table holds
 * GB_API_AUTHLIMIT_SLOTS addresses (an address may sit within GB_API_AUTHLIMIT_PROBE slots of
 * its hash; the least recently touched one there is evicted) and never allocates. */
#define GB_API_AUTHLIMIT_FAILURES  20
#define GB_API_AUTHLIMIT_WINDOW_MS 10000
#define GB_API_AUTHLIMIT_SLOTS     1024
#define GB_API_AUTHLIMIT_PROBE     8
/* 0 when peer ("ip:port", as in req->peer) may go on, else the seconds left in its window. */
unsigned gb_api__authlimit_check(const char *peer, int64_t now_ms);
/* Counts one failed token check from peer. */
void gb_api__authlimit_fail(const char *peer, int64_t now_ms);
/* Whether token has the shape of an issued token ("gbt_" + 43 base64url characters): from a
 * limited address, only such a token is worth looking up. */
bool gb_api__authlimit_token_shaped(gb_str_t token);
/* Answers req with 429 too_many_requests and Retry-After, and counts it. */
void gb_api__authlimit_respond(gb_http_req_t *req, unsigned retry_after_s);
/* Appends gb_auth_limited_total (Prometheus text). */
void gb_api__authlimit_write_metrics(gb_buf_t *out);

#endif
