/* harness: helpers shared by the tests: data files, a real gloveboxd started on an ephemeral
 * loopback port against a throwaway database, and a small blocking HTTP client that can send
 * raw bytes (for pipelining, slow clients and hostile input). */
#ifndef GB_TEST_HARNESS_H
#define GB_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#include "util/util.h"

/* Reads a whole file under tests/data/ into a NUL-terminated heap string; NULL if missing. */
char *gb_th_read_data(const char *relpath, size_t *len);

void gb_th_sleep_ms(unsigned ms);

/* ms times GB_TEST_TIME_SCALE (a whole number >= 1; 1 when unset, 10 when GB_TEST_VALGRIND is
 * set): the harness's own waits for a server pass through it, and tests may scale theirs, so a
 * slow run (under valgrind) waits longer without the normal run waiting any longer. */
unsigned gb_th_scale_ms(unsigned ms);
/* True when GB_TEST_VALGRIND is set (and not "0"): gloveboxd then runs under valgrind's memcheck
 * (see gb_th_server_start). */
bool gb_th_valgrind(void);

/* Runs a shell command; returns its exit status (or -1). Output goes to the test's stderr. */
int gb_th_sh(const char *fmt, ...) GB_PRINTF(1, 2);
/* Runs a command and returns its first line of stdout (heap, no newline), NULL on failure. */
char *gb_th_sh_line(const char *fmt, ...) GB_PRINTF(1, 2);

/* Creates a new, empty database in the shared test cluster (started by the ctest fixture) and
 * writes its libpq URL into url. Returns 0 or -1. */
int gb_th_db_create(char *url, size_t n);
/* Same in the cluster kept in dir (see scripts/lib/pg-cluster). */
int gb_th_db_create_in(const char *dir, char *url, size_t n);

/* ---- a real gloveboxd ---- */
#define GB_TH_VALGRIND_ERROR 97

typedef struct gb_th_server {
    pid_t pid;
    int port;
    char db_url[512];
    char log_path[256];
} gb_th_server_t;

/* Starts `gloveboxd serve --listen 127.0.0.1:0 --database-url URL [extra args...]` (extra is a
 * NULL-terminated list, may be NULL) and waits until it listens. Returns 0 or -1 (the log is
 * printed to stderr then). With GB_TEST_VALGRIND set the server runs under memcheck, its
 * report in log_path + ".valgrind": any error or definite or indirect leak makes it exit with
 * status GB_TH_VALGRIND_ERROR (as a clean exit it would be 0), and a stop prints the report. */
int gb_th_server_start(gb_th_server_t *s, const char *db_url, const char *const *extra);
/* Sends sig and waits up to timeout_ms (scaled by gb_th_scale_ms()); returns the exit status,
 * 128+signal if killed by one, or -1 when it did not exit in time (it is then SIGKILLed). */
int gb_th_server_stop(gb_th_server_t *s, int sig, unsigned timeout_ms);
/* True while the process runs. */
bool gb_th_server_alive(gb_th_server_t *s);
/* The server's log so far (heap). */
char *gb_th_server_log(const gb_th_server_t *s);
/* Runs `gloveboxd token create --role R --name N` against the URL; returns the token (heap). */
char *gb_th_token_create(const char *db_url, const char *role, const char *name);

/* ---- HTTP client ---- */
typedef struct gb_th_resp {
    int status; /* 0 when no complete response arrived */
    char *head; /* status line and headers, NUL-terminated */
    char *body; /* NUL-terminated */
    size_t body_len;
    bool closed; /* the server closed the connection after this response */
} gb_th_resp_t;

void gb_th_resp_free(gb_th_resp_t *r);
/* The value of a response header (heap), NULL when absent. */
char *gb_th_resp_header(const gb_th_resp_t *r, const char *name);

typedef struct gb_th_conn {
    int fd;
    gb_buf_t in;       /* bytes received but not yet consumed */
    bool head_request; /* the next response answers a HEAD: it has no body */
} gb_th_conn_t;

/* Connects to 127.0.0.1:port; -1 on failure. */
int gb_th_conn_open(gb_th_conn_t *c, int port);
void gb_th_conn_close(gb_th_conn_t *c);
/* Sends all bytes; -1 when the peer has closed. */
int gb_th_conn_send(gb_th_conn_t *c, const void *data, size_t len);
/* Reads one response (Content-Length, chunked, or until close). status 0 on timeout/close.
 * Here and in gb_th_conn_wait_closed() the timeout is scaled by gb_th_scale_ms(). */
void gb_th_conn_read(gb_th_conn_t *c, gb_th_resp_t *r, unsigned timeout_ms);
/* True when the server closes the connection within timeout_ms (reading and discarding). */
bool gb_th_conn_wait_closed(gb_th_conn_t *c, unsigned timeout_ms);

/* Fails the running test unless r has this status, a JSON content type and the contract's
 * error body {"error": {"code": code, "message": ...}}. */
void gb_th_assert_json_error(const gb_th_resp_t *r, int status, const char *code);

/* r's body parsed as JSON; fails the running test when it is not JSON. */
json_t *gb_th_resp_json(const gb_th_resp_t *r);
/* GET path as token; fails the running test unless the answer is 200 with a JSON body, which
 * it returns (the caller decrefs it). */
json_t *gb_th_get_json(int port, const char *path, const char *token);
/* Freed memory that the gloveboxd processes started after gb_th_hold_little_freed_memory() may
 * keep from reuse besides the program's own, in MB: AddressSanitizer's quarantine in an ASan
 * build, and under valgrind twice memcheck's freed-block volume (the blocks, memcheck's shadow
 * of them and its allocator's slack); 0 otherwise. A bound on such a server's RSS adds it. */
long gb_th_held_mb(void);
/* Lowers what gb_th_held_mb() counts, for the servers started from now on (ASAN_OPTIONS,
 * VALGRIND_OPTS): the defaults (256 MB, 20 MB) would swamp a bound on their RSS, while a few
 * MB still catch a use after free. */
void gb_th_hold_little_freed_memory(void);
/* The JSON file at path; fails the running test when it cannot be read or parsed. */
json_t *gb_th_load_json(const char *path);
/* Asks GET path (no token) until the answer is want, for up to timeout_ms (scaled by
 * gb_th_scale_ms()), a tenth of a second apart; returns the last status (0: no answer). */
int gb_th_wait_status(int port, const char *path, int want, unsigned timeout_ms);
/* The value of the Prometheus line "name value" in the server's /metrics, or -1 when there is
 * none. Fails the running test when /metrics does not answer 200. */
long gb_th_metric(int port, const char *name);
/* One request on a new connection. headers: extra "Name: value\r\n" lines or NULL. */
void gb_th_request(int port, const char *method, const char *path, const char *headers,
                   const char *body, size_t body_len, gb_th_resp_t *r);
/* Same with "Authorization: Bearer token" and a JSON body. */
void gb_th_request_auth(int port, const char *method, const char *path, const char *token,
                        const char *json_body, gb_th_resp_t *r);

/* ---- resource limits ---- */

/* gb_th_server_start() with RLIMIT_NOFILE (soft and hard) set to nofile in the server. */
int gb_th_server_start_nofile(gb_th_server_t *s, const char *db_url, const char *const *extra,
                              unsigned nofile);
/* A "Name:   123 kB" field of /proc/PID/status (VmRSS, VmHWM...), in kB; -1 when unreadable. */
long gb_th_proc_status_kb(pid_t pid, const char *field);
/* CPU time (user + system) the process has used, in ms; -1 when unreadable. */
long gb_th_proc_cpu_ms(pid_t pid);
/* Open file descriptors of the process; -1 when unreadable. */
long gb_th_proc_fd_count(pid_t pid);
/* The server's open file descriptors that count against its open-file limit (what accept()
 * runs short of); -1 when unreadable. Under valgrind those valgrind keeps for itself are left
 * out: it lowers the program's limit and keeps them above it, from the one on the program's
 * executable up. */
long gb_th_server_fd_count(const gb_th_server_t *s);

#endif
