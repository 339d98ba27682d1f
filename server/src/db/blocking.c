/* blocking: the blocking connection used at start-up and by the command line (migrations,
 * token management), and the notice logger every connection of ours installs so server
 * notices become "db" log lines instead of raw text on stderr. Never used on the loop. */
#include <stdio.h>
#include <string.h>

#include "db/db.h"
#include "db/internal.h"

void gb_pg__log_notice(void *arg, const PGresult *res)
{
    const char *keys = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    char msg[512];

    gb_pg__copy_message(msg, sizeof(msg), primary != NULL ? primary : PQresultErrorMessage(res));
    /* NOTICE and below are chatter ("relation already exists, skipping"); a WARNING, or the
     * FATAL a server sends before it closes an idle connection, deserves attention. */
    bool quiet = severity == NULL || strcmp(severity, "NOTICE") == 0 ||
                 strcmp(severity, "INFO") == 0 || strcmp(severity, "DEBUG") == 0 ||
                 strcmp(severity, "LOG") == 0;
    gb_logk(quiet ? GB_LOG_DEBUG : GB_LOG_WARN, "db", keys, "server %s: %s",
            severity != NULL ? severity : "notice", msg);
}

PGconn *gb_pg_connect_blocking(const char *conninfo, unsigned timeout_ms, char *err, size_t errlen)
{
    gb_pg__params_t params;

    if (gb_pg__params_init(&params, conninfo, err, errlen) != 0) {
        return NULL;
    }
    if (timeout_ms > 0) {
        /* libpq counts whole seconds (and treats 1 as 2): round up so the wait is never
         * shorter than asked. */
        char seconds[16];
        snprintf(seconds, sizeof(seconds), "%u", (timeout_ms + 999) / 1000);
        gb_pg__params_set(&params, "connect_timeout", seconds);
    }
    PGconn *conn = PQconnectdbParams((const char *const *)params.keywords,
                                     (const char *const *)params.values, 0);
    gb_pg__params_dispose(&params);
    GB_ASSERT(conn != NULL); /* NULL only when libpq cannot allocate */
    if (PQstatus(conn) != CONNECTION_OK) {
        gb_pg__copy_message(err, errlen, PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeReceiver(conn, gb_pg__log_notice, NULL);
    return conn;
}

void gb_pg_error_text(PGconn *conn, const PGresult *res, char *out, size_t outlen)
{
    const char *m = res != NULL ? PQresultErrorMessage(res) : NULL;
    gb_pg__copy_message(out, outlen, m != NULL && m[0] != '\0' ? m : PQerrorMessage(conn));
}
