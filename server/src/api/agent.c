/* agent: POST /api/v1/agent/messages, the hot path. A request is decoded and validated whole
 * (nothing is stored on any error), then joins the ingest batcher. When a transaction forms,
 * each request's messages are applied, in seq order, to a working copy of its device's state;
 * the transaction stores the new messages, the devices' rows and their changed stage runs.
 * Only after COMMIT are the working copies published and the requests answered 200; on any
 * failure they are dropped and every request of the batch gets 503, so nothing is
 * acknowledged that is not durably stored, and retries (same seqs) change nothing. Two
 * transactions may be in flight at once (GB_PG_BATCH_SLOTS): a device is in at most one of
 * them, and a request for a device in flight waits for the next transaction, so each device's
 * changes still commit one after the other, in the order they arrived.
 *
 * Messages below a device's highest seq that are not certain duplicates (gaps being filled)
 * are stored but cannot be applied in order: such a device is flagged needs_rebuild in the same
 * transaction and rebuilt from its stored events right after. That transaction's requests for
 * the device are answered when the rebuild ends, so their reply shows the state derived from
 * every message held; requests that arrive for it meanwhile get 503 and are retried by their
 * agents. */
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "protocol/protocol.h"

/* One item of a batch: an agent's request, or a technician's action on one device. Both change
 * the device's working copy, so both go through the same batches: their order is the order
 * they arrived in, and neither can overwrite the other's change. */
typedef struct ingest_req {
    gb_pg_batch_item_t item;
    gb_http_req_t *req;
    gb_proto_request_t pr;      /* for an action: only serial and serial_len */
    gb_api_action_t action;     /* GB_API_ACTION_NONE for an agent's messages */
    const char *actor;          /* the token's name, for the audit trail (and the action) */
    const char *arg;            /* action: the note's text or the slot (NULL clears it) */
    int action_rc;              /* action: gb_dev_retry's refusal, answered 409 */
    gb_fleet_dev_t *fdev;       /* set when the batch forms */
    bool refused;               /* answered 503 at batch time (device being rebuilt) */
    bool missing;               /* action: the device is gone */
    struct ingest_req *waiting; /* next request waiting for the same rebuild */
} ingest_req_t;

/* A device rebuild from its stored events: load them, rebuild a copy, save it, publish it, then
 * answer the committed requests that wait for it. */
typedef struct rebuild_op {
    gb_pg_query_t query;
    gb_api_t *api;
    gb_fleet_dev_t *fdev;
    bool saving; /* false: loading events; true: saving the rebuilt state */
    gb_dev_t dev;
    gb_arena_t arena;             /* the save's parameters */
    ingest_req_t *waiting;        /* committed requests answered when the rebuild ends, FIFO */
    ingest_req_t **waiting_tail;  /* where the next one is linked */
    struct rebuild_op *next_done; /* scratch: rebuilds one batch completion started */
} rebuild_op_t;

/* Rows in serial order, as imports write theirs: transactions that touch the same devices lock
 * their rows in the same order, so they wait for each other but never deadlock. */
static const char SQL_UPSERT_DEVICES[] =
    "INSERT INTO devices (serial, status, stage, attempt, diagnosis, max_seq, last_seen, state, "
    "snap_seq, needs_rebuild, slot, updated_at) "
    "SELECT s, st, sg, a, dg, m, ls, j, CASE WHEN j IS NULL THEN 0 ELSE m END, nr, sl, now() "
    "FROM unnest($1::text[], $2::text[], "
    "$3::text[], $4::int[], $5::text[], $6::bigint[], $7::timestamptz[], $8::jsonb[], $9::bool[], "
    "$10::text[]) AS u(s, st, sg, a, dg, m, ls, j, nr, sl) ORDER BY s "
    "ON CONFLICT (serial) DO UPDATE SET status = EXCLUDED.status, stage = EXCLUDED.stage, "
    "attempt = EXCLUDED.attempt, diagnosis = EXCLUDED.diagnosis, max_seq = EXCLUDED.max_seq, "
    "last_seen = EXCLUDED.last_seen, state = coalesce(EXCLUDED.state, devices.state), "
    "snap_seq = CASE WHEN EXCLUDED.state IS NULL THEN devices.snap_seq ELSE EXCLUDED.max_seq END, "
    "needs_rebuild = devices.needs_rebuild OR EXCLUDED.needs_rebuild, slot = EXCLUDED.slot, "
    "updated_at = now()";

/* A device's snapshot (its whole state as JSON, a kilobyte or more) is written when the device
 * is new, after an action or a rebuild, and otherwise once every SNAPSHOT_EVERY messages
 * (snapshot_due); its row's other columns and its stage runs are written with it, and whenever
 * its status, attempt, diagnosis or slot changes (row_changed). snap_seq says which seq the
 * stored snapshot reaches; at start the messages above it are replayed onto it (fleet.c). The
 * events are written every time: they are the truth, and the reply waits for them. */
#define SNAPSHOT_EVERY 32

static const char SQL_INSERT_ACTIONS[] =
    "INSERT INTO device_actions (serial, at, actor, action, detail, after_seq) "
    "SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::jsonb[], "
    "$6::bigint[])";

static const char SQL_INSERT_EVENTS[] =
    "INSERT INTO events (serial, seq, type, at, body) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::jsonb[]) "
    "ON CONFLICT (serial, seq) DO NOTHING";

static const char SQL_UPSERT_RUNS[] =
    "INSERT INTO stage_runs (serial, idx, attempt, stage, state, started_at, ended_at, hresult) "
    "SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::text[], "
    "$6::timestamptz[], $7::timestamptz[], $8::text[]) "
    "ON CONFLICT (serial, idx) DO UPDATE SET attempt = EXCLUDED.attempt, stage = EXCLUDED.stage, "
    "state = EXCLUDED.state, started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, "
    "hresult = EXCLUDED.hresult";

static const char SQL_DELETE_RUNS_FROM[] =
    "DELETE FROM stage_runs r USING unnest($1::text[], $2::int[]) AS u(s, n) "
    "WHERE r.serial = u.s AND r.idx >= u.n";

/* ---- row builders shared by ingest and rebuild ---- */

enum {
    D_SERIAL,
    D_STATUS,
    D_STAGE,
    D_ATTEMPT,
    D_DIAG,
    D_MAXSEQ,
    D_LASTSEEN,
    D_STATE,
    D_REBUILD,
    D_SLOT,
    D_COUNT
};
enum { E_SERIAL, E_SEQ, E_TYPE, E_AT, E_BODY, E_COUNT };
enum { A_SERIAL, A_AT, A_ACTOR, A_ACTION, A_DETAIL, A_AFTER, A_COUNT };
enum { R_SERIAL, R_IDX, R_ATTEMPT, R_STAGE, R_STATE, R_START, R_END, R_HRESULT, R_COUNT };

typedef struct batch_rows {
    gb_pg_array_t dev[D_COUNT];
    gb_pg_array_t ev[E_COUNT];
    gb_pg_array_t run[R_COUNT];
    gb_pg_array_t act[A_COUNT];
    gb_api_audit_rows_t audit;
    gb_buf_t scratch;
} batch_rows_t;

static void rows_init(batch_rows_t *r)
{
    for (size_t i = 0; i < D_COUNT; i++) {
        gb_pg_array_init(&r->dev[i]);
    }
    for (size_t i = 0; i < E_COUNT; i++) {
        gb_pg_array_init(&r->ev[i]);
    }
    for (size_t i = 0; i < R_COUNT; i++) {
        gb_pg_array_init(&r->run[i]);
    }
    for (size_t i = 0; i < A_COUNT; i++) {
        gb_pg_array_init(&r->act[i]);
    }
    gb_api__audit_rows_init(&r->audit);
    gb_buf_init(&r->scratch);
}

static void rows_dispose(batch_rows_t *r)
{
    for (size_t i = 0; i < D_COUNT; i++) {
        gb_pg_array_dispose(&r->dev[i]);
    }
    for (size_t i = 0; i < E_COUNT; i++) {
        gb_pg_array_dispose(&r->ev[i]);
    }
    for (size_t i = 0; i < R_COUNT; i++) {
        gb_pg_array_dispose(&r->run[i]);
    }
    for (size_t i = 0; i < A_COUNT; i++) {
        gb_pg_array_dispose(&r->act[i]);
    }
    gb_api__audit_rows_dispose(&r->audit);
    gb_buf_dispose(&r->scratch);
}

/* The device's row; its snapshot (the whole state as JSON) only when with_snapshot, else NULL
 * and the stored one stays (see SNAPSHOT_EVERY). */
static void add_device_row(batch_rows_t *r, const gb_dev_t *d, bool needs_rebuild,
                           bool with_snapshot)
{
    const gb_diagnosis_t *diag = gb_dev_diagnosis(d);
    gb_pg_array_cstr(&r->dev[D_SERIAL], d->serial);
    gb_pg_array_cstr(&r->dev[D_STATUS], gb_dev_status_id(d->status));
    if (d->stage != GB_STAGE_NONE) {
        gb_pg_array_cstr(&r->dev[D_STAGE], gb_stage_id(d->stage));
    } else {
        gb_pg_array_null(&r->dev[D_STAGE]);
    }
    gb_pg_array_i64(&r->dev[D_ATTEMPT], d->attempt);
    if (diag != NULL) {
        gb_pg_array_cstr(&r->dev[D_DIAG], gb_diag_id(diag->code));
    } else {
        gb_pg_array_null(&r->dev[D_DIAG]);
    }
    gb_pg_array_i64(&r->dev[D_MAXSEQ], (int64_t)d->max_seq);
    gb_pg_array_time_ms(&r->dev[D_LASTSEEN], d->last_seen_ms);
    if (with_snapshot) {
        gb_buf_reset(&r->scratch);
        gb_proto_snapshot_encode(d, &r->scratch);
        gb_pg_array_text(&r->dev[D_STATE], r->scratch.data, r->scratch.len);
    } else {
        gb_pg_array_null(&r->dev[D_STATE]);
    }
    gb_pg_array_cstr(&r->dev[D_REBUILD], needs_rebuild ? "t" : "f");
    gb_pg_array_cstr(&r->dev[D_SLOT], d->slot);
}

/* The action's row: detail holds the note's text or the slot; after_seq places a retry among
 * the stored messages for a later rebuild. */
static void add_action_row(batch_rows_t *r, const ingest_req_t *ir, const gb_dev_t *d,
                           int64_t at_ms)
{
    gb_pg_array_cstr(&r->act[A_SERIAL], d->serial);
    gb_pg_array_time_ms(&r->act[A_AT], at_ms);
    gb_pg_array_cstr(&r->act[A_ACTOR], ir->actor);
    gb_pg_array_cstr(&r->act[A_ACTION], gb_api_action_id(ir->action));
    gb_buf_reset(&r->scratch);
    if (ir->action == GB_API_ACTION_NOTE || ir->action == GB_API_ACTION_ASSIGN_SLOT) {
        gb_buf_append_str(&r->scratch,
                          ir->action == GB_API_ACTION_NOTE ? "{\"text\":" : "{\"slot\":");
        if (ir->arg != NULL) {
            gb_json_quote(&r->scratch, ir->arg, strlen(ir->arg));
        } else {
            gb_buf_append_str(&r->scratch, "null");
        }
        gb_buf_append_str(&r->scratch, "}");
    } else {
        gb_buf_appendf(&r->scratch, "{\"attempt\":%u}", d->attempt);
    }
    gb_pg_array_text(&r->act[A_DETAIL], r->scratch.data, r->scratch.len);
    gb_pg_array_i64(&r->act[A_AFTER], (int64_t)d->max_seq);
    gb_api__audit_add(&r->audit, d->serial, ir->actor, gb_api_action_id(ir->action),
                      r->scratch.data, r->scratch.len);
}

/* Applies a technician's action to the working copy; false when it does not apply (a retry of
 * a device that is not red: answered 409, nothing stored for it). */
static bool apply_action(ingest_req_t *ir, gb_dev_t *work, int64_t now_ms)
{
    switch (ir->action) {
    case GB_API_ACTION_RETRY:
        ir->action_rc = gb_dev_retry(work, now_ms);
        return ir->action_rc == 0;
    case GB_API_ACTION_ASSIGN_SLOT:
        gb_dev_set_slot(work, ir->arg);
        return true;
    default:
        return true;
    }
}

static void add_event_row(batch_rows_t *r, const char *serial, const gb_msg_t *m)
{
    gb_pg_array_cstr(&r->ev[E_SERIAL], serial);
    gb_pg_array_i64(&r->ev[E_SEQ], (int64_t)m->seq);
    gb_pg_array_cstr(&r->ev[E_TYPE], gb_msg_type_id(m->type));
    gb_pg_array_time_ms(&r->ev[E_AT], m->at_ms);
    gb_buf_reset(&r->scratch);
    gb_proto_encode_message(m, &r->scratch);
    gb_pg_array_text(&r->ev[E_BODY], r->scratch.data, r->scratch.len);
}

/* Adds the runs of d from index from on. */
static void add_run_rows(batch_rows_t *r, const gb_dev_t *d, uint32_t from)
{
    char hr[11];
    for (uint32_t i = from; i < d->n_runs; i++) {
        const gb_stage_run_t *run = &d->runs[i];
        gb_pg_array_cstr(&r->run[R_SERIAL], d->serial);
        gb_pg_array_i64(&r->run[R_IDX], i);
        gb_pg_array_i64(&r->run[R_ATTEMPT], run->attempt);
        gb_pg_array_cstr(&r->run[R_STAGE], gb_stage_id((gb_stage_t)run->stage));
        gb_pg_array_cstr(&r->run[R_STATE], gb_run_state_id((gb_run_state_t)run->state));
        gb_pg_array_time_ms(&r->run[R_START], run->started_ms);
        gb_pg_array_time_ms(&r->run[R_END], run->ended_ms);
        if (run->has_hresult) {
            gb_hresult_format(run->hresult, hr);
            gb_pg_array_cstr(&r->run[R_HRESULT], hr);
        } else {
            gb_pg_array_null(&r->run[R_HRESULT]);
        }
    }
}

/* Whether a device's stored row must follow at once: the columns people query by (status,
 * attempt, diagnosis, slot) changed. Otherwise the row, like the snapshot, is written once every
 * SNAPSHOT_EVERY messages: most messages (stage progress, downloads, apps, heartbeats) then cost
 * one event row and nothing else. */
static bool row_changed(const gb_dev_t *before, const gb_dev_t *after)
{
    const gb_diagnosis_t *a = gb_dev_diagnosis(before), *b = gb_dev_diagnosis(after);
    if (before->status != after->status || before->attempt != after->attempt ||
        (a == NULL) != (b == NULL) || (a != NULL && a->code != b->code)) {
        return true;
    }
    if ((before->slot == NULL) != (after->slot == NULL)) {
        return true;
    }
    return before->slot != NULL && strcmp(before->slot, after->slot) != 0;
}

/* Whether a device's snapshot is due: each time its count of applied messages, shifted by a
 * phase of its own (from its serial's hash), passes a multiple of SNAPSHOT_EVERY. So at most
 * SNAPSHOT_EVERY messages lie between two snapshots, and devices that report in step (a fleet
 * started together, a benchmark's round-robin) spread their snapshots evenly over the batches
 * instead of all writing theirs in the same few, which would make those batches slow. */
static bool snapshot_due(const gb_fleet_dev_t *fd)
{
    uint64_t phase = fd->hh.hashv % SNAPSHOT_EVERY;
    return (fd->work->n_applied + phase) / SNAPSHOT_EVERY !=
           (fd->snap_applied + phase) / SNAPSHOT_EVERY;
}

/* The first run of after that differs from before (or is new). */
static uint32_t first_changed_run(const gb_dev_t *before, const gb_dev_t *after)
{
    uint32_t i = 0;
    while (i < before->n_runs && i < after->n_runs &&
           memcmp(&before->runs[i], &after->runs[i], sizeof(gb_stage_run_t)) == 0) {
        i++;
    }
    return i;
}

/* Copies the finished arrays into arena-owned parameter vectors of q's statements. */
static const char **params_from(gb_arena_t *arena, gb_pg_array_t *arrays, size_t n)
{
    const char **p = gb_arena_alloc(arena, n * sizeof(*p));
    for (size_t i = 0; i < n; i++) {
        const char *lit = gb_pg_array_finish(&arrays[i]);
        p[i] = gb_arena_strndup(arena, lit, arrays[i].buf.len);
    }
    return p;
}

/* ---- the batch ---- */

static bool on_batch_build(gb_pg_batcher_t *b, gb_pg_batch_item_t **itemsp,
                           gb_pg_batch_item_t **deferred, gb_pg_query_t *q, gb_arena_t *arena,
                           void *arg)
{
    gb_api_t *api = arg;
    batch_rows_t rows;
    gb_apply_ctx_t ctx = {
        .esp_timeout_min = 0, .hybrid_join = false, .received_ms = gb_time_now_ms()};
    size_t n_devices = 0;
    gb_pg_batch_item_t *items = NULL, **taken_tail = &items, **deferred_tail = deferred, *next;

    rows_init(&rows);
    for (gb_pg_batch_item_t *it = *itemsp; it != NULL; it = next) {
        next = it->next;
        ingest_req_t *ir = gb_container_of(it, ingest_req_t, item);
        gb_fleet_dev_t *fd = gb_fleet_find(&api->fleet, ir->pr.serial, ir->pr.serial_len);
        it->next = NULL;
        if (fd != NULL && fd->has_work && fd->work_batch != q) {
            /* The device is in the other transaction in flight: its state there is not
             * committed yet, so this item waits for that transaction's end. */
            *deferred_tail = it;
            deferred_tail = &it->next;
            continue;
        }
        *taken_tail = it;
        taken_tail = &it->next;
        if (fd == NULL && ir->action != GB_API_ACTION_NONE) {
            ir->missing = true;
            continue;
        }
        if (fd == NULL) {
            fd = gb_fleet_add(&api->fleet, ir->pr.serial, ir->pr.serial_len);
            gb_dev_set_imported(&fd->dev, false);
        }
        if (fd->rebuilding) {
            ir->refused = true;
            continue;
        }
        ir->fdev = fd;
        if (!fd->has_work) {
            fd->work = gb_xmalloc(sizeof(*fd->work));
            gb_dev_copy(fd->work, &fd->dev);
            fd->has_work = true;
            fd->work_batch = q;
            fd->snap_now = !fd->in_db;
            fd->gap = fd->stale; /* a failed rebuild is retried with this batch */
            n_devices++;
        }
        gb_api_audit_mark_t mark;
        if (ir->action != GB_API_ACTION_NONE) {
            gb_api__audit_mark(&mark, fd->work);
            if (apply_action(ir, fd->work, ctx.received_ms)) {
                add_action_row(&rows, ir, fd->work, ctx.received_ms);
                gb_api__audit_changes(&rows.audit, &mark, fd->work, ir->actor, NULL);
                /* A replay at start-up repeats stored messages, not actions: the state after an
                 * action must be in a snapshot. */
                fd->snap_now = true;
            }
            continue;
        }
        size_t n = ir->pr.n_msgs;
        if (gb_msg_batch_prepare(fd->work, ir->pr.msgs, &n)) {
            fd->gap = true;
        }
        /* The profile's hybrid-join warning is shown from the profile itself (gb_dev_warnings),
         * not recorded by the messages: a profile changed later must not leave it behind. */
        ctx.hybrid_join = false;
        ctx.esp_timeout_min = gb_api__profile_esp_timeout_min(api, fd->work);
        gb_dev_set_last_arrival(fd->work, ctx.received_ms);
        /* One message at a time, so that the audit trail has every status a request passes
         * through (a request may carry green and reseal both). */
        for (size_t i = 0; i < n; i++) {
            gb_api__audit_mark(&mark, fd->work);
            if (gb_dev_apply(fd->work, &ctx, &ir->pr.msgs[i]) == 0) {
                gb_api__audit_changes(&rows.audit, &mark, fd->work, ir->actor, NULL);
            }
            add_event_row(&rows, fd->work->serial, &ir->pr.msgs[i]);
        }
    }
    /* One row per device of the batch, written once with its final working state. */
    for (gb_pg_batch_item_t *it = items; it != NULL; it = it->next) {
        ingest_req_t *ir = gb_container_of(it, ingest_req_t, item);
        gb_fleet_dev_t *fd = ir->fdev;
        if (fd == NULL || fd->row_added) {
            continue;
        }
        fd->row_added = true;
        uint32_t changed = first_changed_run(&fd->dev, fd->work);
        if (changed < fd->runs_dirty_from) {
            fd->runs_dirty_from = changed;
        }
        if (fd->gap || fd->snap_applied == 0 || snapshot_due(fd)) {
            fd->snap_now = true;
        }
        fd->row_now = fd->snap_now || fd->row_stale || row_changed(&fd->dev, fd->work);
        if (fd->row_now) {
            add_device_row(&rows, fd->work, fd->gap, fd->snap_now);
            if (fd->runs_dirty_from < fd->work->n_runs) {
                add_run_rows(&rows, fd->work, fd->runs_dirty_from);
            }
        }
    }
    for (gb_pg_batch_item_t *it = items; it != NULL; it = it->next) {
        ingest_req_t *ir = gb_container_of(it, ingest_req_t, item);
        if (ir->fdev != NULL) {
            ir->fdev->row_added = false;
        }
    }
    *itemsp = items;
    if (n_devices == 0) {
        rows_dispose(&rows);
        return false;
    }
    const char **dp = params_from(arena, rows.dev, D_COUNT);
    const char **ep = params_from(arena, rows.ev, E_COUNT);
    const char **rp = params_from(arena, rows.run, R_COUNT);
    const char **ap = params_from(arena, rows.act, A_COUNT);
    const char **aup = params_from(arena, rows.audit.col, GB_API_AUDIT_COLS);
    bool any_audit = rows.audit.col[0].n > 0;
    bool any_rows = rows.dev[D_SERIAL].n > 0;
    bool any_events = rows.ev[E_SERIAL].n > 0;
    bool any_runs = rows.run[R_SERIAL].n > 0;
    bool any_actions = rows.act[A_SERIAL].n > 0;
    rows_dispose(&rows);

    /* The batch's statements run at every commit: each connection prepares them once. The
     * audit entries go last (api/audit.c says why). */
    gb_pg_query_init(q, "BEGIN", 0, NULL, q->cb);
    if (any_rows) {
        gb_pg_query_add_prepared(q, SQL_UPSERT_DEVICES, D_COUNT, dp);
    }
    if (any_events) {
        gb_pg_query_add_prepared(q, SQL_INSERT_EVENTS, E_COUNT, ep);
    }
    if (any_runs) {
        gb_pg_query_add_prepared(q, SQL_UPSERT_RUNS, R_COUNT, rp);
    }
    if (any_actions) {
        gb_pg_query_add_prepared(q, SQL_INSERT_ACTIONS, A_COUNT, ap);
    }
    if (any_audit) {
        gb_pg_query_add_prepared(q, GB_API_SQL_INSERT_AUDIT, GB_API_AUDIT_COLS, aup);
    }
    gb_pg_query_add(q, "COMMIT", 0, NULL);
    api->ingest_devices_total += n_devices;
    return true;
}

static void reply_ok(gb_http_req_t *req, const gb_dev_t *dev)
{
    gb_buf_t out;
    gb_buf_init(&out);
    gb_proto_agent_reply_json(dev, &out);
    gb_http_respond_json(req, 200, &out);
    gb_buf_dispose(&out);
}

static rebuild_op_t *start_rebuild(gb_api_t *api, gb_fleet_dev_t *fd);

/* A technician's action has been through a batch: answer it. */
static void reply_action(gb_api_t *api, ingest_req_t *ir, int err)
{
    if (ir->missing) {
        gb_http_respond_errorf(ir->req, 404, "not_found", "no device has this serial");
    } else if (ir->refused) {
        gb_http_respond_errorf(ir->req, 503, "unavailable",
                               "the device's state is being rebuilt; retry shortly");
    } else if (err != 0) {
        gb_http_respond_errorf(ir->req, 503, "unavailable",
                               "the database is unavailable (%s); the action was not recorded",
                               err == GB_EDB ? "it refused the batch" : gb_strerror(err));
    } else if (ir->action_rc == GB_EBUSY) {
        gb_http_respond_errorf(ir->req, 409, "conflict",
                               "the device has used every attempt it may have (%d)",
                               GB_DEV_MAX_ATTEMPTS);
    } else if (ir->action_rc != 0) {
        gb_http_respond_errorf(ir->req, 409, "conflict",
                               "only a red device can be retried; this one is %s",
                               gb_dev_status_id(ir->fdev->dev.status));
    } else {
        gb_api__device_detail_respond(api, ir->req, ir->fdev);
    }
}

/* The rebuild just started for fd (in the list this batch's completion started), or NULL. */
static rebuild_op_t *started_rebuild(rebuild_op_t *started, const gb_fleet_dev_t *fd)
{
    for (rebuild_op_t *op = started; op != NULL; op = op->next_done) {
        if (op->fdev == fd) {
            return op;
        }
    }
    return NULL;
}

static void on_batch_done(gb_pg_batcher_t *b, gb_pg_batch_item_t *items, int err,
                          PGresult *const *results, size_t nresults, void *arg)
{
    gb_api_t *api = arg;
    gb_pg_batch_item_t *next;
    rebuild_op_t *started = NULL;

    /* First settle every device: publish its working copy after COMMIT, else drop it. */
    for (gb_pg_batch_item_t *it = items; it != NULL; it = it->next) {
        ingest_req_t *ir = gb_container_of(it, ingest_req_t, item);
        gb_fleet_dev_t *fd = ir->fdev;
        if (fd == NULL || !fd->has_work) {
            continue;
        }
        fd->has_work = false;
        if (err == 0) {
            gb_dev_dispose(&fd->dev);
            fd->dev = *fd->work; /* plain move: the state holds no pointer to itself */
            free(fd->work);
            fd->work = NULL;
            if (fd->snap_now) {
                fd->snap_applied = fd->dev.n_applied;
            }
            if (fd->row_now) {
                fd->runs_dirty_from = UINT32_MAX;
                fd->row_stale = false;
            }
            fd->in_db = true;
            gb_api__device_changed(api, fd);
            if (fd->gap) {
                fd->gap = false;
                fd->stale = true; /* until a rebuild has been saved */
                rebuild_op_t *op = start_rebuild(api, fd);
                if (op != NULL) {
                    op->next_done = started;
                    started = op;
                }
            }
        } else {
            gb_dev_dispose(fd->work);
            free(fd->work);
            fd->work = NULL;
            fd->gap = false;
        }
    }
    if (err != 0) {
        /* A device first seen in a batch that did not commit exists nowhere: forget it
         * (before the replies, which hand the requests and their arenas back to the server). The
         * lookup goes by the request's serial, so a device shared by several requests of the
         * batch is removed once. */
        for (gb_pg_batch_item_t *it = items; it != NULL; it = next) {
            next = it->next;
            ingest_req_t *ir = gb_container_of(it, ingest_req_t, item);
            gb_fleet_dev_t *fd = gb_fleet_find(&api->fleet, ir->pr.serial, ir->pr.serial_len);
            if (fd != NULL && !fd->in_db && !fd->rebuilding && !fd->has_work) {
                gb_fleet_remove(&api->fleet, fd);
            }
        }
    }
    for (gb_pg_batch_item_t *it = items; it != NULL; it = next) {
        next = it->next;
        ingest_req_t *ir = gb_container_of(it, ingest_req_t, item);
        rebuild_op_t *op;
        if (ir->action != GB_API_ACTION_NONE) {
            reply_action(api, ir, err);
            continue;
        }
        if (ir->refused) {
            gb_http_respond_errorf(ir->req, 503, "unavailable",
                                   "the device's state is being rebuilt; retry shortly");
        } else if (err == 0 && (op = started_rebuild(started, ir->fdev)) != NULL) {
            /* Stored, but the published state lacks the gap's messages until the rebuild: the
             * reply waits for it rather than showing a state that is about to change. */
            api->ingest_messages_total += ir->pr.n_msgs;
            ir->waiting = NULL;
            *op->waiting_tail = ir;
            op->waiting_tail = &ir->waiting;
        } else if (err == 0) {
            api->ingest_messages_total += ir->pr.n_msgs;
            reply_ok(ir->req, &ir->fdev->dev);
        } else {
            gb_http_respond_errorf(ir->req, 503, "unavailable",
                                   "the database is unavailable (%s); nothing was stored, "
                                   "retry later",
                                   err == GB_EDB ? "it refused the batch" : gb_strerror(err));
        }
    }
    if (err != 0 && err != GB_ECLOSED) {
        gb_log(GB_LOG_WARN, "ingest", "batch failed: %s", gb_strerror(err));
    }
}

/* ---- rebuild after a gap was filled ---- */

/* Ends a rebuild, saved or not. The waiting requests' messages were committed before it began,
 * so they are answered 200 either way, with the state now published (the rebuilt one, or the
 * previous one when the rebuild failed; the device then stays flagged in the database). */
static void rebuild_finish(rebuild_op_t *op)
{
    ingest_req_t *next;
    op->fdev->rebuilding = false;
    for (ingest_req_t *ir = op->waiting; ir != NULL; ir = next) {
        next = ir->waiting;
        reply_ok(ir->req, &op->fdev->dev);
    }
    gb_arena_dispose(&op->arena);
    free(op);
}

/* What imports and profiles set (not the slot: the replayed hello may have brought it, and an
 * assigned slot is an action, which no batch runs beside a rebuild). */
static void copy_identity(gb_dev_t *dst, const gb_dev_t *src)
{
    gb_dev_set_group_tag(dst, src->group_tag);
    gb_dev_set_assigned_user(dst, src->assigned_user);
    gb_dev_set_profile(dst, src->profile, src->profile_hybrid);
    gb_dev_set_imported(dst, src->imported);
}

/* Phase 2: the rebuilt state is saved (or not); publish it or keep the old one. */
static void on_rebuild_saved(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    rebuild_op_t *op = gb_container_of(q, rebuild_op_t, query);
    if (err != 0) {
        /* The device stays flagged in the database; the next start rebuilds it. */
        gb_log(GB_LOG_WARN, "ingest", "saving the rebuilt state of %s failed: %s",
               op->fdev->dev.serial, gb_strerror(err));
        gb_dev_dispose(&op->dev);
    } else {
        /* The identity may have changed while the rebuild ran (an import, a profile, a slot):
         * the published state has the newest; the rebuilt one has the messages. */
        copy_identity(&op->dev, &op->fdev->dev);
        gb_dev_dispose(&op->fdev->dev);
        op->fdev->dev = op->dev;
        op->fdev->stale = false;
        op->fdev->snap_applied = op->dev.n_applied;
        op->fdev->runs_dirty_from = UINT32_MAX;
        op->fdev->row_stale = false;
        gb_api__device_changed(op->api, op->fdev);
    }
    rebuild_finish(op);
}

/* Phase 1: the stored events arrived; rebuild a copy from them and save it. */
static void on_rebuild_loaded(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    rebuild_op_t *op = gb_container_of(q, rebuild_op_t, query);
    gb_fleet_dev_t *fd = op->fdev;

    if (err != 0 || nresults != 2) {
        gb_log(GB_LOG_WARN, "ingest", "loading the events of %s failed: %s", fd->dev.serial,
               gb_strerror(err != 0 ? err : GB_EDB));
        rebuild_finish(op);
        return;
    }
    gb_apply_ctx_t ctx = {.received_ms = GB_TIME_NONE,
                          .hybrid_join = false,
                          .esp_timeout_min = gb_api__profile_esp_timeout_min(op->api, &fd->dev)};
    gb_dev_copy(&op->dev, &fd->dev);
    gb_fleet_rebuild_from_rows(&op->dev, &ctx, results[0], results[1]);

    batch_rows_t rows_b;
    gb_pg_array_t del[2];
    gb_api_audit_mark_t mark;
    rows_init(&rows_b);
    /* What the messages that filled the gap changed, beyond what their batches recorded. */
    gb_api__audit_mark(&mark, &fd->dev);
    gb_api__audit_changes(&rows_b.audit, &mark, &op->dev, "glovebox", "rebuild");
    add_device_row(&rows_b, &op->dev, false, true);
    add_run_rows(&rows_b, &op->dev, 0);
    gb_pg_array_init(&del[0]);
    gb_pg_array_init(&del[1]);
    gb_pg_array_cstr(&del[0], op->dev.serial);
    gb_pg_array_i64(&del[1], op->dev.n_runs);
    const char **dp = params_from(&op->arena, rows_b.dev, D_COUNT);
    const char **rp = params_from(&op->arena, rows_b.run, R_COUNT);
    const char **xp = params_from(&op->arena, del, 2);
    const char **aup = params_from(&op->arena, rows_b.audit.col, GB_API_AUDIT_COLS);
    bool any_audit = rows_b.audit.col[0].n > 0;
    bool any_runs = rows_b.run[R_SERIAL].n > 0;
    rows_dispose(&rows_b);
    gb_pg_array_dispose(&del[0]);
    gb_pg_array_dispose(&del[1]);

    /* The upsert ORs needs_rebuild, so clearing it is a statement of its own. */
    const char **sp = gb_arena_alloc(&op->arena, sizeof(*sp));
    sp[0] = gb_arena_strndup(&op->arena, op->dev.serial, strlen(op->dev.serial));
    gb_pg_query_init(&op->query, "BEGIN", 0, NULL, on_rebuild_saved);
    gb_pg_query_add(&op->query, SQL_UPSERT_DEVICES, D_COUNT, dp);
    gb_pg_query_add(&op->query, "UPDATE devices SET needs_rebuild = false WHERE serial = $1", 1,
                    sp);
    gb_pg_query_add(&op->query, SQL_DELETE_RUNS_FROM, 2, xp);
    if (any_runs) {
        gb_pg_query_add(&op->query, SQL_UPSERT_RUNS, R_COUNT, rp);
    }
    if (any_audit) {
        gb_pg_query_add(&op->query, GB_API_SQL_INSERT_AUDIT, GB_API_AUDIT_COLS, aup);
    }
    gb_pg_query_add(&op->query, "COMMIT", 0, NULL);
    op->saving = true;
    int rc = gb_pg_submit(op->api->pg, &op->query);
    if (rc < 0) {
        gb_log(GB_LOG_WARN, "ingest", "saving the rebuilt state of %s: %s", fd->dev.serial,
               gb_strerror(rc));
        gb_dev_dispose(&op->dev);
        rebuild_finish(op);
    }
}

/* Starts rebuilding fd; returns the operation, or NULL when it could not start (the device
 * then stays flagged in the database and is rebuilt at the next start). */
static rebuild_op_t *start_rebuild(gb_api_t *api, gb_fleet_dev_t *fd)
{
    rebuild_op_t *op = gb_xcalloc(1, sizeof(*op));
    op->api = api;
    op->fdev = fd;
    op->waiting_tail = &op->waiting;
    gb_arena_init(&op->arena);
    const char **p = gb_arena_alloc(&op->arena, sizeof(*p));
    p[0] = gb_arena_strndup(&op->arena, fd->dev.serial, strlen(fd->dev.serial));
    gb_pg_query_init(&op->query, GB_FLEET_SQL_EVENTS, 1, p, on_rebuild_loaded);
    gb_pg_query_add(&op->query, GB_FLEET_SQL_ACTIONS, 1, p);
    fd->rebuilding = true;
    int rc = gb_pg_submit(api->pg, &op->query);
    if (rc < 0) {
        gb_log(GB_LOG_WARN, "ingest", "rebuild of %s not started: %s", fd->dev.serial,
               gb_strerror(rc));
        rebuild_finish(op);
        return NULL;
    }
    return op;
}

/* ---- the handler ---- */

static void on_agent_messages(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    gb_error_t err;

    if (!gb_api__is_json(req)) {
        gb_http_respond_errorf(req, 415, "unsupported_media_type",
                               "agent reports must be sent as Content-Type: application/json");
        return;
    }
    ingest_req_t *ir = gb_arena_alloc(&req->arena, sizeof(*ir));
    memset(ir, 0, sizeof(*ir));
    ir->req = req;
    ir->actor = gb_arena_strndup(&req->arena, who->name, strlen(who->name));
    gb_error_clear(&err);
    if (gb_proto_decode_request(req->body.data != NULL ? req->body.data : "", req->body.len,
                                &req->arena, &ir->pr, &err) != 0) {
        gb_http_respond_error(req, &err);
        return;
    }
    int rc = gb_pg_batcher_add(api->batcher, &ir->item);
    if (rc < 0) {
        gb_http_respond_errorf(req, 503, "unavailable",
                               "the server cannot store reports right now (%s); retry later",
                               gb_strerror(rc));
    }
}

const char *gb_api_action_id(gb_api_action_t action)
{
    switch (action) {
    case GB_API_ACTION_RETRY:
        return "retry";
    case GB_API_ACTION_NOTE:
        return "note";
    case GB_API_ACTION_ASSIGN_SLOT:
        return "assign_slot";
    default:
        return "";
    }
}

void gb_api__ingest_action(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who,
                           const char *serial, gb_api_action_t action, const char *arg)
{
    ingest_req_t *ir = gb_arena_alloc(&req->arena, sizeof(*ir));
    memset(ir, 0, sizeof(*ir));
    ir->req = req;
    ir->action = action;
    ir->pr.serial = gb_arena_strndup(&req->arena, serial, strlen(serial));
    ir->pr.serial_len = strlen(serial);
    ir->actor = gb_arena_strndup(&req->arena, who->name, strlen(who->name));
    ir->arg = arg != NULL ? gb_arena_strndup(&req->arena, arg, strlen(arg)) : NULL;
    int rc = gb_pg_batcher_add(api->batcher, &ir->item);
    if (rc < 0) {
        gb_http_respond_errorf(req, 503, "unavailable",
                               "the server cannot record actions right now (%s); retry later",
                               gb_strerror(rc));
    }
}

void gb_api__agent_register(gb_api_t *api)
{
    static const gb_pg_batcher_ops_t ops = {on_batch_build, on_batch_done};
    api->batcher = gb_pg_batcher_new(api->pg, &ops, api, api->cfg->db_queue_max);
    gb_api__route(api, GB_HTTP_POST, "/api/v1/agent/messages", GB_ROLE_AGENT, on_agent_messages);
}
