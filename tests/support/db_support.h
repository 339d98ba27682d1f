/* db_support: helpers for the db layer's tests: a throwaway database per test on the shared
 * fixture cluster, private clusters for tests that stop or kill the server, blocking queries
 * for checks, and running a libuv loop until a condition holds or a deadline passes. */
#ifndef GB_TEST_DB_SUPPORT_H
#define GB_TEST_DB_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>
#include <uv.h>

#include "db/db.h"

/* A database created for one test. */
typedef struct gb_tdb {
    char name[64]; /* t_<pid>_<counter>_<random> */
    char *url;     /* libpq URI (heap) */
} gb_tdb_t;

/* The libpq URI of database dbname in the cluster kept in dir (heap; the caller frees). */
char *gb_tdb_cluster_url(const char *dir, const char *dbname);
/* Creates an empty database on the fixture cluster (GB_PGDIR), or on the cluster in dir when
 * dir is not NULL. Fails the running test when it cannot. */
void gb_tdb_create(gb_tdb_t *db, const char *dir);
/* Drops the database (terminating its sessions) and frees db->url. */
void gb_tdb_drop(gb_tdb_t *db, const char *dir);

/* Runs sql on a new blocking connection; true when it succeeded. */
bool gb_tdb_exec(const char *url, const char *sql);
/* Runs sql and returns the first column of the first row (heap), or NULL on error / no row. */
char *gb_tdb_value(const char *url, const char *sql);

/* Creates a private cluster in a new directory /tmp/gbdbtest.XXXXXX (written into dir) and
 * starts it. Fails the running test when it cannot. */
void gb_tdb_cluster_create(char dir[64]);
/* Runs "pg-cluster cmd dir" (start, stop, kill, status); returns its exit status. */
int gb_tdb_cluster(const char *cmd, const char *dir);
/* Stops the cluster and removes its directory. */
void gb_tdb_cluster_destroy(const char *dir);

/* A query and what its callback saw; the db layer's types only (no link dependency). Zero
 * it, then gb_pg_query_init(&op->q, sql, n, values, gb_tdb_on_op). */
typedef struct gb_tdb_op {
    gb_pg_query_t q;
    bool fired;
    int err;
    size_t nresults;
    ExecStatusType status[GB_PG_MAX_STMTS];
    char *row[GB_PG_MAX_STMTS];           /* first row of each result, columns joined by '|' */
    char cmd_tuples[GB_PG_MAX_STMTS][16]; /* PQcmdTuples of each result */
    char sqlstate[6];
    char error[256];
    int64_t fired_ms;  /* gb_time_mono_ms() when the callback ran */
    unsigned *counter; /* incremented by the callback when not NULL */
} gb_tdb_op_t;

/* The callback: copies what the results say into the op (the results are borrowed). */
void gb_tdb_on_op(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults);
/* Frees the copied rows and zeroes the op. */
void gb_tdb_op_reset(gb_tdb_op_t *op);
/* A predicate for gb_tdb_run_until(): the op's callback has run. */
bool gb_tdb_op_fired(void *op);

/* Runs loop until done(arg) is true (checked between iterations and at least every 5 ms) or
 * timeout_ms pass; returns the last value of done(arg). done may be NULL: run for timeout_ms. */
bool gb_tdb_run_until(uv_loop_t *loop, bool (*done)(void *arg), void *arg, unsigned timeout_ms);
/* Runs the loop briefly to finish pending closes, then uv_loop_close(); returns its result
 * (0 when every handle was closed). */
int gb_tdb_loop_close(uv_loop_t *loop);

#endif
