/* migrate: applies the SQL migrations compiled into the binary (gb_migrations[], generated
 * from migrations/NNNN_name.sql), each in its own transaction together with its row in
 * schema_migrations, under a session-level advisory lock so concurrent starts take turns.
 * A database that a newer glovebox has migrated further is refused, never downgraded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "db/internal.h"

/* The advisory lock key: "glovebox" in ASCII read as a big-endian 64-bit integer. Every
 * glovebox that migrates a database takes this same lock, whatever its version. */
#define LOCK_KEY "7452454037689102200"

static const char LOCK_SQL[] = "SELECT pg_advisory_lock(" LOCK_KEY ")";
static const char UNLOCK_SQL[] = "SELECT pg_advisory_unlock(" LOCK_KEY ")";
static const char CREATE_SQL[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                 "version int PRIMARY KEY, "
                                 "name text NOT NULL, "
                                 "applied_at timestamptz NOT NULL DEFAULT now())";
/* Whether the table exists: CREATE TABLE IF NOT EXISTS needs the CREATE privilege on the schema
 * even when the table is there, and a server whose role may only read and write data
 * (SECURITY.md) must still start once the owner has migrated. */
static const char EXISTS_SQL[] = "SELECT to_regclass('schema_migrations') IS NOT NULL";
static const char APPLIED_SQL[] = "SELECT version FROM schema_migrations ORDER BY version";
static const char RECORD_SQL[] = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)";

static bool result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
}

static int failure_code(PGconn *conn)
{
    return PQstatus(conn) == CONNECTION_BAD ? GB_EDBDOWN : GB_EDB;
}

/* The server's message for a failed result (or the connection's, without one). */
static void result_message(PGconn *conn, const PGresult *res, char *out, size_t outlen)
{
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    gb_pg__copy_message(out, outlen, primary != NULL ? primary : PQerrorMessage(conn));
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state != NULL && strcmp(state, "42501") == 0) {
        /* A runtime role without the right to change the schema (SECURITY.md). */
        size_t n = strlen(out);
        snprintf(out + n, outlen - n, " (run gloveboxd migrate as the schema's owner role)");
    }
}

/* Runs one statement that must succeed. On failure writes "what: message" into err and
 * returns GB_EDB or GB_EDBDOWN; on success hands the result to *out when out is not NULL. */
static int exec(PGconn *conn, const char *sql, int nparams, const char *const *values,
                PGresult **out, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, values, NULL, NULL, 0);
    if (res == NULL || !result_ok(res)) {
        char msg[256];
        result_message(conn, res, msg, sizeof(msg));
        snprintf(err, errlen, "%s: %s", what, msg);
        PQclear(res);
        return failure_code(conn);
    }
    if (out != NULL) {
        *out = res;
    } else {
        PQclear(res);
    }
    return 0;
}

/* 1-based line of a 1-based character position (what PG_DIAG_STATEMENT_POSITION gives)
 * in UTF-8 text. */
static int line_of(const char *text, long position)
{
    int line = 1;
    long chars = 0;

    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        if ((*p & 0xC0) != 0x80 && ++chars >= position) {
            break;
        }
        if (*p == '\n') {
            line++;
        }
    }
    return line;
}

static int apply_one(PGconn *conn, const gb_migration_t *m, char *err, size_t errlen)
{
    char what[96];
    int rc;

    snprintf(what, sizeof(what), "migration %04d_%s", m->version, m->name);
    rc = exec(conn, "BEGIN", 0, NULL, NULL, what, err, errlen);
    if (rc < 0) {
        return rc;
    }
    /* PQexec (simple protocol): a migration file holds several statements. */
    PGresult *res = PQexec(conn, m->sql);
    if (res == NULL || !result_ok(res)) {
        char msg[256];
        const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *pos = res != NULL ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
        result_message(conn, res, msg, sizeof(msg));
        if (pos != NULL) {
            snprintf(err, errlen, "%s failed at line %d: %s (SQLSTATE %s); rolled back", what,
                     line_of(m->sql, strtol(pos, NULL, 10)), msg, state != NULL ? state : "-");
        } else {
            snprintf(err, errlen, "%s failed: %s (SQLSTATE %s); rolled back", what, msg,
                     state != NULL ? state : "-");
        }
        PQclear(res);
        rc = failure_code(conn);
        PQclear(PQexec(conn, "ROLLBACK"));
        return rc;
    }
    PQclear(res);
    PGTransactionStatusType ts = PQtransactionStatus(conn);
    if (ts != PQTRANS_INTRANS) {
        /* The file ended our transaction itself (transaction control inside it), so it did
         * not apply atomically: refuse to record it, and say that part of it may remain. */
        snprintf(err, errlen,
                 "%s ended its own transaction (BEGIN/COMMIT/ROLLBACK in the file, which "
                 "migrations must not contain): not recorded; statements after that point "
                 "were not rolled back",
                 what);
        if (ts != PQTRANS_IDLE) {
            PQclear(PQexec(conn, "ROLLBACK"));
        }
        return GB_EDB;
    }
    char version[16];
    snprintf(version, sizeof(version), "%d", m->version);
    const char *values[2] = {version, m->name};
    rc = exec(conn, RECORD_SQL, 2, values, NULL, what, err, errlen);
    if (rc == 0) {
        rc = exec(conn, "COMMIT", 0, NULL, NULL, what, err, errlen);
    }
    if (rc < 0) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return rc;
    }
    gb_log(GB_LOG_INFO, "db", "applied migration %04d_%s", m->version, m->name);
    return 0;
}

static bool contains(const int *sorted, size_t n, int v)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] == v) {
            return true;
        }
        if (sorted[mid] < v) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return false;
}

static int migrate_locked(PGconn *conn, const gb_migration_t *list, size_t count, int *applied,
                          char *err, size_t errlen)
{
    PGresult *res;
    int rc = exec(conn, EXISTS_SQL, 0, NULL, &res, "look for schema_migrations", err, errlen);
    if (rc < 0) {
        return rc;
    }
    bool exists = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!exists) {
        rc = exec(conn, CREATE_SQL, 0, NULL, NULL, "create schema_migrations", err, errlen);
        if (rc < 0) {
            return rc;
        }
    }
    rc = exec(conn, APPLIED_SQL, 0, NULL, &res, "read schema_migrations", err, errlen);
    if (rc < 0) {
        return rc;
    }
    size_t ndone = (size_t)PQntuples(res);
    int *done = gb_xcalloc(ndone + 1, sizeof(int));
    for (size_t i = 0; i < ndone; i++) {
        done[i] = (int)strtol(PQgetvalue(res, (int)i, 0), NULL, 10);
    }
    PQclear(res);

    int known = count > 0 ? list[count - 1].version : 0;
    if (ndone > 0 && done[ndone - 1] > known) {
        snprintf(err, errlen,
                 "the database is at schema version %d but this build knows versions up to %d: "
                 "a newer glovebox migrated it; refusing to run",
                 done[ndone - 1], known);
        free(done);
        return GB_EINVAL;
    }
    for (size_t i = 0; i < count && rc == 0; i++) {
        if (!contains(done, ndone, list[i].version)) {
            rc = apply_one(conn, &list[i], err, errlen);
            if (rc == 0) {
                (*applied)++;
            }
        }
    }
    free(done);
    return rc;
}

int gb_pg__migrate_list(PGconn *conn, const gb_migration_t *list, size_t count, int *applied,
                        char *err, size_t errlen)
{
    int napplied = 0;

    for (size_t i = 0; i < count; i++) {
        GB_ASSERT(list[i].version >= 1 && (i == 0 || list[i].version > list[i - 1].version));
    }
    if (errlen > 0) {
        err[0] = '\0';
    }
    /* Session-level, taken before CREATE TABLE IF NOT EXISTS (which itself races), and held
     * across the per-migration transactions: a second runner waits here, then finds
     * everything applied. */
    int rc = exec(conn, LOCK_SQL, 0, NULL, NULL, "advisory lock", err, errlen);
    if (rc == 0) {
        rc = migrate_locked(conn, list, count, &napplied, err, errlen);
        /* Best effort: a broken session has released the lock already. */
        PQclear(PQexec(conn, UNLOCK_SQL));
    }
    if (applied != NULL) {
        *applied = napplied;
    }
    return rc;
}

int gb_pg_migrate(PGconn *conn, int *applied, char *err, size_t errlen)
{
    return gb_pg__migrate_list(conn, gb_migrations, gb_migrations_count, applied, err, errlen);
}
