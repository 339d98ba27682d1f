/* import: POST /api/v1/devices/import, the Autopilot hardware-hash CSV, streamed. The body is
 * parsed as it arrives; every CHUNK_ROWS valid rows (or CHUNK_BYTES of them) go to PostgreSQL
 * as one transaction (an upsert: a serial already known is updated), and reading the body
 * pauses until that transaction has committed, so memory holds one chunk whatever the file's
 * size. After each commit the fleet takes the stored identity of every row. The reply comes
 * only after the last chunk has committed.
 *
 * Good rows are imported and bad ones listed with their line numbers; a missing or wrong
 * header refuses the whole file (400 invalid_csv) before anything is stored. When the database
 * fails (or the body ends early) midway, the chunks committed before stay stored and the error
 * says how many rows that was: sending the same file again is safe, since a re-import updates.
 * An import is freed only once no query of its own is in flight and its request is answered. */
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"

/* A chunk is written once it holds this many rows, or this many bytes of fields. */
#define CHUNK_ROWS  1000
#define CHUNK_BYTES ((size_t)1 << 20)
/* Errors listed in the reply; errors_total counts them all, and errors_truncated (present only
 * then) says the list stopped short. */
#define MAX_LISTED_ERRORS 1000

/* Rows go in serial order, as ingest writes its own: transactions that touch the same devices
 * lock them in the same order and never deadlock.
 * Each row also writes its audit entry (actor: the importing token's name), in the same
 * statement: an entry says whether the import created the device, and what it set (the hardware
 * hash by its SHA-256: the hash itself is kilobytes). */
static const char SQL_UPSERT[] =
    "WITH up AS (INSERT INTO devices AS d (serial, product_id, hardware_hash, group_tag, "
    "assigned_user, imported_at) "
    "SELECT s, p, h, g, u, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
    "$5::text[]) AS r(s, p, h, g, u) ORDER BY s "
    "ON CONFLICT (serial) DO UPDATE SET product_id = EXCLUDED.product_id, "
    "hardware_hash = EXCLUDED.hardware_hash, "
    "group_tag = CASE WHEN $6::bool THEN EXCLUDED.group_tag ELSE d.group_tag END, "
    "assigned_user = CASE WHEN $7::bool THEN EXCLUDED.assigned_user ELSE d.assigned_user END, "
    "imported_at = EXCLUDED.imported_at, updated_at = now() "
    "RETURNING d.serial, d.xmax = 0 AS created, d.group_tag, d.assigned_user, d.product_id, "
    "d.hardware_hash), "
    "audit AS (INSERT INTO audit_log (serial, actor, action, detail) "
    "SELECT serial, $8, 'import', jsonb_build_object('new_device', created, 'product_id', "
    "product_id, 'group_tag', group_tag, 'assigned_user', assigned_user, "
    "'hardware_hash_sha256', encode(sha256(convert_to(hardware_hash, 'UTF8')), 'hex')) "
    "FROM up ORDER BY serial) "
    "SELECT serial, created, group_tag, assigned_user FROM up";

enum { C_SERIAL, C_PRODUCT_ID, C_HASH, C_GROUP_TAG, C_USER, C_COUNT };

/* Imports in progress, for the shutdown's bookkeeping. */
struct gb_api_import {
    struct import_op *ops; /* doubly linked, newest first */
    size_t active;
};

/* One import: the request, the CSV reader and the chunk being gathered or written. */
typedef struct import_op {
    gb_pg_query_t query; /* the chunk in flight */
    gb_api_t *api;
    gb_http_req_t *req; /* NULL once answered */
    gb_proto_csv_t *csv;
    struct import_op *prev, *next;
    char actor[GB_AUTH_NAME_MAX + 1];

    gb_pg_array_t cols[C_COUNT]; /* the chunk: gathered, then written from these */
    size_t chunk_rows;
    size_t chunk_bytes;
    uint64_t chunk_last_line; /* the last line the chunk holds */
    const char *params[C_COUNT + 3];
    bool in_flight; /* query is with the pool: the op must not be freed */

    bool body_done;     /* on_end fired */
    gb_error_t end_err; /* status 0, or why the body ended early */
    int db_err;         /* 0, or how the last chunk failed */

    uint64_t imported;       /* rows inserted */
    uint64_t updated;        /* rows that updated a known serial */
    uint64_t stored_to_line; /* the last line of the last committed chunk */
    gb_buf_t errors;         /* the listed errors, as JSON array elements */
    uint64_t errors_listed;
    uint64_t errors_total;
} import_op_t;

static void op_free(import_op_t *op)
{
    struct gb_api_import *im = op->api->imports;
    if (op->prev != NULL) {
        op->prev->next = op->next;
    } else {
        im->ops = op->next;
    }
    if (op->next != NULL) {
        op->next->prev = op->prev;
    }
    im->active--;
    gb_proto_csv_free(op->csv);
    for (size_t i = 0; i < C_COUNT; i++) {
        gb_pg_array_dispose(&op->cols[i]);
    }
    gb_buf_dispose(&op->errors);
    free(op);
}

/* Frees op once it has answered and has no query in flight (whichever comes last). */
static void op_maybe_free(import_op_t *op)
{
    if (op->req == NULL && !op->in_flight) {
        op_free(op);
    }
}

static void chunk_reset(import_op_t *op)
{
    for (size_t i = 0; i < C_COUNT; i++) {
        gb_pg_array_dispose(&op->cols[i]);
        gb_pg_array_init(&op->cols[i]);
    }
    op->chunk_rows = 0;
    op->chunk_bytes = 0;
}

/* ---- answers ---- */

static void answer_ok(import_op_t *op)
{
    gb_buf_t out;
    gb_http_req_t *req = op->req;

    gb_buf_init(&out);
    gb_buf_appendf(&out, "{\"imported\":%llu,\"updated\":%llu,\"errors\":[",
                   (unsigned long long)op->imported, (unsigned long long)op->updated);
    if (op->errors.len > 0) {
        gb_buf_append(&out, op->errors.data, op->errors.len);
    }
    gb_buf_appendf(&out, "],\"errors_total\":%llu", (unsigned long long)op->errors_total);
    if (op->errors_total > op->errors_listed) {
        gb_buf_append_str(&out, ",\"errors_truncated\":true");
    }
    gb_buf_append_str(&out, "}");
    gb_log(GB_LOG_INFO, "import", "by=%s imported=%llu updated=%llu errors=%llu", op->actor,
           (unsigned long long)op->imported, (unsigned long long)op->updated,
           (unsigned long long)op->errors_total);
    op->req = NULL;
    gb_http_respond_json(req, 200, &out);
    gb_buf_dispose(&out);
}

/* An answer that ends the import before the file's end: what was stored is said, since the
 * chunks committed before stay committed. */
static void answer_stopped(import_op_t *op, int status, const char *code, const char *why)
{
    gb_http_req_t *req = op->req;
    uint64_t stored = op->imported + op->updated;

    if (stored == 0) {
        gb_http_respond_errorf(req, status, code, "%s; no device was stored", why);
    } else {
        gb_http_respond_errorf(req, status, code,
                               "%s; the %llu devices up to line %llu were stored, the rest were "
                               "not (sending the same file again is safe: known serials are "
                               "updated)",
                               why, (unsigned long long)stored,
                               (unsigned long long)op->stored_to_line);
    }
    gb_log(GB_LOG_WARN, "import", "by=%s stopped: %s; stored=%llu", op->actor, why,
           (unsigned long long)stored);
    op->req = NULL;
}

static void answer_db_failed(import_op_t *op)
{
    char why[160];
    snprintf(why, sizeof(why), "the database is unavailable (%s)",
             op->db_err == GB_EDB ? "it refused the rows" : gb_strerror(op->db_err));
    answer_stopped(op, 503, "unavailable", why);
}

/* The body ended early: the client's answer, as the http layer phrased it. */
static void answer_body_failed(import_op_t *op)
{
    answer_stopped(op, op->end_err.status, op->end_err.code, op->end_err.message);
}

/* ---- the CSV reader's callbacks ---- */

static void on_csv_row(const gb_proto_csv_row_t *row, void *arg)
{
    import_op_t *op = arg;

    gb_pg_array_text(&op->cols[C_SERIAL], row->serial.p, row->serial.len);
    if (row->product_id.len > 0) {
        gb_pg_array_text(&op->cols[C_PRODUCT_ID], row->product_id.p, row->product_id.len);
    } else {
        gb_pg_array_null(&op->cols[C_PRODUCT_ID]);
    }
    gb_pg_array_text(&op->cols[C_HASH], row->hardware_hash.p, row->hardware_hash.len);
    /* Empty and absent both store NULL; whether an update overwrites is the column's presence
     * in the header ($6, $7). */
    if (row->group_tag.len > 0) {
        gb_pg_array_text(&op->cols[C_GROUP_TAG], row->group_tag.p, row->group_tag.len);
    } else {
        gb_pg_array_null(&op->cols[C_GROUP_TAG]);
    }
    if (row->assigned_user.len > 0) {
        gb_pg_array_text(&op->cols[C_USER], row->assigned_user.p, row->assigned_user.len);
    } else {
        gb_pg_array_null(&op->cols[C_USER]);
    }
    op->chunk_rows++;
    op->chunk_bytes += row->serial.len + row->product_id.len + row->hardware_hash.len +
                       row->group_tag.len + row->assigned_user.len;
    op->chunk_last_line = row->line;
}

static void on_csv_error(uint64_t line, const char *message, void *arg)
{
    import_op_t *op = arg;

    op->errors_total++;
    if (op->errors_listed >= MAX_LISTED_ERRORS) {
        return;
    }
    if (op->errors_listed > 0) {
        gb_buf_append(&op->errors, ",", 1);
    }
    gb_buf_appendf(&op->errors, "{\"line\":%llu,\"message\":", (unsigned long long)line);
    gb_json_quote(&op->errors, message, strlen(message));
    gb_buf_append(&op->errors, "}", 1);
    op->errors_listed++;
}

/* ---- chunks ---- */

typedef struct identity {
    const char *group_tag;
    const char *assigned_user;
} identity_t;

static void set_identity(gb_dev_t *dev, void *arg)
{
    const identity_t *id = arg;
    gb_dev_set_group_tag(dev, id->group_tag);
    gb_dev_set_assigned_user(dev, id->assigned_user);
    gb_dev_set_imported(dev, true);
}

/* A chunk committed: every row it returned (serial, inserted, group_tag, assigned_user, as
 * stored) reaches the fleet. The working copy of an ingest batch in flight gets the identity
 * too (gb_fleet_dev_edit), so the batch's publish does not undo it. */
static void publish_rows(import_op_t *op, const PGresult *res)
{
    gb_api_t *api = op->api;
    int rows = PQntuples(res);

    for (int r = 0; r < rows; r++) {
        const char *serial = PQgetvalue(res, r, 0);
        size_t len = (size_t)PQgetlength(res, r, 0);
        identity_t id = {
            .group_tag = PQgetisnull(res, r, 2) ? NULL : PQgetvalue(res, r, 2),
            .assigned_user = PQgetisnull(res, r, 3) ? NULL : PQgetvalue(res, r, 3),
        };
        if (PQgetvalue(res, r, 1)[0] == 't') {
            op->imported++;
        } else {
            op->updated++;
        }
        gb_fleet_dev_t *fd = gb_fleet_find(&api->fleet, serial, len);
        if (fd == NULL) {
            fd = gb_fleet_add(&api->fleet, serial, len);
        }
        gb_fleet_dev_edit(fd, set_identity, &id);
        fd->in_db = true;
        gb_api__profile_apply(api, fd);
        gb_api__device_changed(api, fd);
    }
}

static void on_chunk_done(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    import_op_t *op = gb_container_of(q, import_op_t, query);

    op->in_flight = false;
    if (err == 0 && nresults == 3) {
        publish_rows(op, results[1]);
        op->stored_to_line = op->chunk_last_line;
    } else {
        op->db_err = err != 0 ? err : GB_EDB;
        if (err != GB_ECLOSED) {
            gb_log(GB_LOG_WARN, "import", "by=%s chunk of %zu rows failed: %s%s%s", op->actor,
                   op->chunk_rows, gb_strerror(op->db_err), q->error[0] != '\0' ? ": " : "",
                   q->error);
        }
    }
    chunk_reset(op);
    if (op->req == NULL) {
        op_free(op); /* answered while the chunk was in flight (cannot happen today) */
        return;
    }
    if (op->db_err != 0) {
        answer_db_failed(op); /* mid-body too: the connection then closes */
    } else if (op->end_err.status != 0) {
        answer_body_failed(op);
    } else if (op->body_done) {
        answer_ok(op); /* that was the last chunk */
    } else {
        gb_http_req_body_resume(op->req);
        return;
    }
    op_maybe_free(op);
}

/* Sends the gathered chunk as one transaction. Returns 0 (on_chunk_done follows) or the pool's
 * refusal (the import is then over). */
static int chunk_submit(import_op_t *op)
{
    /* Only a file whose header has the column overwrites it: one without Group Tag leaves the
     * tags of known serials alone. */
    unsigned columns = gb_proto_csv_columns(op->csv);

    for (size_t i = 0; i < C_COUNT; i++) {
        op->params[i] = gb_pg_array_finish(&op->cols[i]);
    }
    op->params[C_COUNT] = columns >= 4 ? "t" : "f";
    op->params[C_COUNT + 1] = columns >= 5 ? "t" : "f";
    op->params[C_COUNT + 2] = op->actor;
    gb_pg_query_init(&op->query, "BEGIN", 0, NULL, on_chunk_done);
    gb_pg_query_add(&op->query, SQL_UPSERT, C_COUNT + 3, op->params);
    gb_pg_query_add(&op->query, "COMMIT", 0, NULL);
    int rc = gb_pg_submit(op->api->pg, &op->query);
    if (rc < 0) {
        op->db_err = rc;
        chunk_reset(op);
        return rc;
    }
    op->in_flight = true;
    return 0;
}

/* ---- the body ---- */

static int on_import_chunk(gb_http_req_t *req, const char *data, size_t len, void *ctx)
{
    import_op_t *op = ctx;
    gb_error_t err;

    if (gb_proto_csv_feed(op->csv, data, len, &err) != 0) {
        /* The header: nothing was stored, and the rest need not be read. */
        op->req = NULL;
        gb_http_respond_error(req, &err);
        op_maybe_free(op);
        return 0;
    }
    if (op->chunk_rows < CHUNK_ROWS && op->chunk_bytes < CHUNK_BYTES) {
        return 0;
    }
    if (chunk_submit(op) < 0) {
        answer_db_failed(op);
        op_maybe_free(op);
        return 0;
    }
    return GB_HTTP_BODY_PAUSE; /* resumed by on_chunk_done */
}

static void on_import_end(gb_http_req_t *req, const gb_error_t *err, void *ctx)
{
    import_op_t *op = ctx;
    gb_error_t e;

    op->body_done = true;
    if (err != NULL) {
        op->end_err = *err;
        if (!op->in_flight) {
            answer_body_failed(op);
            op_maybe_free(op);
        }
        return; /* else on_chunk_done answers once its chunk is settled */
    }
    /* The whole body is in, so nothing can be in flight: reading resumed after the last
     * commit. */
    GB_ASSERT(!op->in_flight);
    if (gb_proto_csv_finish(op->csv, &e) != 0) {
        op->req = NULL;
        gb_http_respond_error(req, &e);
        op_maybe_free(op);
        return;
    }
    if (op->chunk_rows == 0) {
        answer_ok(op);
        op_maybe_free(op);
        return;
    }
    if (chunk_submit(op) < 0) {
        answer_db_failed(op);
        op_maybe_free(op);
    }
}

/* text/csv, with or without parameters ("text/csv; charset=utf-8"). */
static bool is_csv(gb_str_t ct)
{
    if (ct.p == NULL) {
        return false;
    }
    size_t n = 0;
    while (n < ct.len && ct.p[n] != ';' && ct.p[n] != ' ' && ct.p[n] != '\t') {
        n++;
    }
    return gb_str_case_eq_cstr((gb_str_t){ct.p, n}, "text/csv");
}

static void on_import(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    static const gb_proto_csv_ops_t csv_ops = {on_csv_row, on_csv_error};

    if (!is_csv(gb_http_req_header(req, "content-type"))) {
        gb_http_respond_errorf(req, 415, "unsupported_media_type",
                               "the Autopilot CSV must be sent as Content-Type: text/csv");
        return;
    }
    import_op_t *op = gb_xcalloc(1, sizeof(*op));
    struct gb_api_import *im = api->imports;
    op->api = api;
    op->req = req;
    snprintf(op->actor, sizeof(op->actor), "%s", who != NULL ? who->name : "-");
    op->csv = gb_proto_csv_new(&csv_ops, op);
    for (size_t i = 0; i < C_COUNT; i++) {
        gb_pg_array_init(&op->cols[i]);
    }
    gb_buf_init(&op->errors);
    gb_error_clear(&op->end_err);
    op->next = im->ops;
    if (im->ops != NULL) {
        im->ops->prev = op;
    }
    im->ops = op;
    im->active++;
    gb_http_req_body_stream(req, on_import_chunk, on_import_end, op);
}

void gb_api__import_register(gb_api_t *api)
{
    api->imports = gb_xcalloc(1, sizeof(*api->imports));
    gb_api__route_streamed(api, GB_HTTP_POST, "/api/v1/devices/import", GB_ROLE_TECHNICIAN,
                           api->cfg->max_import_bytes, on_import);
}

void gb_api__import_free(gb_api_t *api)
{
    if (api->imports == NULL) {
        return;
    }
    /* Every import answered before the http server finished, and the pool has shut down, so
     * none is left with a query in flight; one still here never got its end. */
    while (api->imports->ops != NULL) {
        GB_ASSERT(!api->imports->ops->in_flight);
        op_free(api->imports->ops);
    }
    free(api->imports);
    api->imports = NULL;
}
