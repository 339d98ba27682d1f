/* harness: helpers shared by the tests: data files, a real gloveboxd and a small blocking HTTP
 * client. Everything is deliberately simple and blocking: the tests drive the server from the
 * outside, exactly as agents and browsers do. */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

char *gb_th_read_data(const char *relpath, size_t *len)
{
    char path[1024];
    gb_buf_t b;
    char chunk[8192];
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", GB_TEST_DATA_DIR, relpath);
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

int gb_th_sh(const char *fmt, ...)
{
    gb_buf_t cmd;
    va_list ap;
    gb_buf_init(&cmd);
    va_start(ap, fmt);
    gb_buf_vappendf(&cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd.data);
    gb_buf_dispose(&cmd);
    if (rc == -1 || !WIFEXITED(rc)) {
        return -1;
    }
    return WEXITSTATUS(rc);
}

char *gb_th_sh_line(const char *fmt, ...)
{
    gb_buf_t cmd;
    va_list ap;
    char line[4096];
    gb_buf_init(&cmd);
    va_start(ap, fmt);
    gb_buf_vappendf(&cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd.data, "r");
    gb_buf_dispose(&cmd);
    if (p == NULL) {
        return NULL;
    }
    char *out = NULL;
    if (fgets(line, sizeof(line), p) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        out = gb_xstrdup(line);
    }
    if (pclose(p) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

int gb_th_db_create_in(const char *dir, char *url, size_t n)
{
    static unsigned counter;
    char name[64];
    snprintf(name, sizeof(name), "t_%d_%u_%lld", (int)getpid(), counter++,
             (long long)(gb_time_now_ms() % 100000000));
    char *admin = gb_th_sh_line("'%s' url '%s' postgres", GB_PG_CLUSTER, dir);
    char *target = gb_th_sh_line("'%s' url '%s' %s", GB_PG_CLUSTER, dir, name);
    int rc = -1;
    if (admin != NULL && target != NULL &&
        gb_th_sh("psql -q -X '%s' -c 'CREATE DATABASE %s' >/dev/null", admin, name) == 0) {
        snprintf(url, n, "%s", target);
        rc = 0;
    }
    free(admin);
    free(target);
    return rc;
}

int gb_th_db_create(char *url, size_t n)
{
    return gb_th_db_create_in(GB_PGDIR, url, n);
}

bool gb_th_valgrind(void)
{
    const char *v = getenv("GB_TEST_VALGRIND");
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

unsigned gb_th_scale_ms(unsigned ms)
{
    static unsigned scale;
    if (scale == 0) {
        const char *v = getenv("GB_TEST_TIME_SCALE");
        long n = v != NULL ? strtol(v, NULL, 10) : 0;
        if (n >= 1 && n <= 100) {
            scale = (unsigned)n;
        } else {
            scale = gb_th_valgrind() ? 10 : 1;
        }
    }
    return ms * scale;
}

void gb_th_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

char *gb_th_server_log(const gb_th_server_t *s)
{
    FILE *f = fopen(s->log_path, "rb");
    gb_buf_t b;
    char chunk[4096];
    size_t n;
    gb_buf_init(&b);
    if (f != NULL) {
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
            gb_buf_append(&b, chunk, n);
        }
        fclose(f);
    }
    return gb_buf_steal(&b, NULL);
}

/* Set by gb_th_server_start_nofile() for the one gloveboxd it starts. */
static const struct rlimit *child_nofile;

/* Servers still running when the test program ends (a failed assertion skips their stop) are
 * killed, so no test leaves a gloveboxd behind. */
static pid_t live_pids[64];

static void kill_leftovers(void)
{
    for (size_t i = 0; i < GB_ARRAY_LEN(live_pids); i++) {
        if (live_pids[i] > 0) {
            kill(live_pids[i], SIGKILL);
            waitpid(live_pids[i], NULL, 0);
            live_pids[i] = 0;
        }
    }
}

static void track_pid(pid_t pid, bool add)
{
    static bool registered;
    if (!registered) {
        atexit(kill_leftovers);
        registered = true;
    }
    for (size_t i = 0; i < GB_ARRAY_LEN(live_pids); i++) {
        if (add ? live_pids[i] == 0 : live_pids[i] == pid) {
            live_pids[i] = add ? pid : 0;
            return;
        }
    }
}

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* The memcheck report of a server started under valgrind. */
static void valgrind_log_path(const gb_th_server_t *s, char *path, size_t n)
{
    snprintf(path, n, "%s.valgrind", s->log_path);
}

/* Puts valgrind and its options before gloveboxd's arguments. Errors and definite or indirect
 * leaks count (still reachable memory at exit is libraries' caches, not ours to free); the
 * error exit status tells a clean exit from a dirty one. */
static size_t valgrind_argv(const gb_th_server_t *s, const char **argv, char *log_opt, size_t n)
{
    char path[300];
    size_t i = 0;
    valgrind_log_path(s, path, sizeof(path));
    snprintf(log_opt, n, "--log-file=%s", path);
    argv[i++] = "valgrind";
    argv[i++] = "--tool=memcheck";
    argv[i++] = "--error-exitcode=" STRINGIFY(GB_TH_VALGRIND_ERROR);
    argv[i++] = "--leak-check=full";
    argv[i++] = "--errors-for-leak-kinds=definite,indirect";
    argv[i++] = "--show-leak-kinds=definite,indirect";
    argv[i++] = "--num-callers=30";
    argv[i++] = log_opt;
    return i;
}

int gb_th_server_start(gb_th_server_t *s, const char *db_url, const char *const *extra)
{
    static unsigned counter;
    const char *argv[80];
    char log_opt[320];
    size_t n = 0;

    memset(s, 0, sizeof(*s));
    snprintf(s->db_url, sizeof(s->db_url), "%s", db_url);
    /* Logs stay beside the test cluster in the build tree, for a look after a failure. */
    snprintf(s->log_path, sizeof(s->log_path), "%s-logs", GB_PGDIR);
    mkdir(s->log_path, 0755);
    snprintf(s->log_path, sizeof(s->log_path), "%s-logs/gloveboxd-%d-%u.log", GB_PGDIR,
             (int)getpid(), counter++);
    /* A process ID comes round again in a long run: a log of that name may be an earlier test's,
     * whose "listening ... port=" the wait below must not read before the child truncates it. */
    unlink(s->log_path);
    bool valgrind = gb_th_valgrind();
    if (valgrind) {
        n = valgrind_argv(s, argv, log_opt, sizeof(log_opt));
    }
    argv[n++] = GB_GLOVEBOXD;
    argv[n++] = "serve";
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--database-url";
    argv[n++] = s->db_url;
    argv[n++] = "--log-level";
    argv[n++] = "debug";
    if (valgrind) {
        /* Connecting under valgrind takes seconds on a busy machine; a test's own setting
         * (extra) comes later and wins. */
        argv[n++] = "--db-connect-timeout";
        argv[n++] = "60s";
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < GB_ARRAY_LEN(argv) - 2; i++) {
        argv[n++] = extra[i];
    }
    argv[n] = NULL;

    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        /* A test that dies (a crash, a timeout) takes its server with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (child_nofile != NULL && setrlimit(RLIMIT_NOFILE, child_nofile) != 0) {
            _exit(126);
        }
        int fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        if (valgrind) {
            execvp(argv[0], (char *const *)(uintptr_t)argv);
        } else {
            execv(GB_GLOVEBOXD, (char *const *)(uintptr_t)argv);
        }
        _exit(127);
    }
    s->pid = pid;
    track_pid(pid, true);
    /* Wait for "listening ... port=N" in the log. Loading a large fleet takes seconds. */
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(60000);
    while (gb_time_mono_ms() < deadline) {
        char *log = gb_th_server_log(s);
        const char *p = strstr(log, "listening on ");
        if (p != NULL && (p = strstr(p, "port=")) != NULL) {
            s->port = atoi(p + 5);
            free(log);
            return 0;
        }
        free(log);
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            track_pid(pid, false);
            s->pid = 0;
            break;
        }
        gb_th_sleep_ms(20);
    }
    char *log = gb_th_server_log(s);
    fprintf(stderr, "gloveboxd did not start; its log:\n%s\n", log);
    free(log);
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        track_pid(s->pid, false);
        s->pid = 0;
    }
    return -1;
}

bool gb_th_server_alive(gb_th_server_t *s)
{
    int status;
    if (s->pid <= 0) {
        return false;
    }
    return waitpid(s->pid, &status, WNOHANG) == 0;
}

/* Prints the memcheck report of a server that exited dirty. */
static void print_valgrind_report(const gb_th_server_t *s)
{
    char path[300];
    char line[1024];
    valgrind_log_path(s, path, sizeof(path));
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    fprintf(stderr, "gloveboxd exited with valgrind's error status; %s:\n", path);
    while (fgets(line, sizeof(line), f) != NULL) {
        fputs(line, stderr);
    }
    fclose(f);
}

int gb_th_server_stop(gb_th_server_t *s, int sig, unsigned timeout_ms)
{
    int status;
    if (s->pid <= 0) {
        return -1;
    }
    kill(s->pid, sig);
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(timeout_ms);
    for (;;) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) {
            track_pid(s->pid, false);
            s->pid = 0;
            if (WIFEXITED(status)) {
                if (gb_th_valgrind() && WEXITSTATUS(status) == GB_TH_VALGRIND_ERROR) {
                    print_valgrind_report(s);
                }
                return WEXITSTATUS(status);
            }
            return 128 + WTERMSIG(status);
        }
        if (gb_time_mono_ms() > deadline) {
            break;
        }
        gb_th_sleep_ms(10);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    track_pid(s->pid, false);
    s->pid = 0;
    return -1;
}

char *gb_th_token_create(const char *db_url, const char *role, const char *name)
{
    return gb_th_sh_line("'%s' token create --role '%s' --name '%s' --database-url '%s' "
                         "--log-level error",
                         GB_GLOVEBOXD, role, name, db_url);
}

/* ---- HTTP client ---- */

void gb_th_resp_free(gb_th_resp_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

char *gb_th_resp_header(const gb_th_resp_t *r, const char *name)
{
    size_t n = strlen(name);
    const char *p = r->head;
    while (p != NULL && (p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ') {
                v++;
            }
            const char *e = strstr(v, "\r\n");
            return gb_xstrndup(v, e != NULL ? (size_t)(e - v) : strlen(v));
        }
    }
    return NULL;
}

int gb_th_conn_open(gb_th_conn_t *c, int port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    gb_buf_init(&c->in);
    c->head_request = false;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) {
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        /* Said on stderr: a test that expected a server gets "status 0" and nothing else. */
        fprintf(stderr, "harness: connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

void gb_th_conn_close(gb_th_conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    gb_buf_dispose(&c->in);
}

int gb_th_conn_send(gb_th_conn_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads more bytes into c->in; returns bytes read, 0 on close, -1 on timeout or error. */
static ssize_t fill(gb_th_conn_t *c, int64_t deadline)
{
    char chunk[16384];
    int64_t left = deadline - gb_time_mono_ms();
    if (left <= 0) {
        return -1;
    }
    struct pollfd pfd = {c->fd, POLLIN, 0};
    int pr = poll(&pfd, 1, (int)left);
    if (pr <= 0) {
        return -1;
    }
    ssize_t n = recv(c->fd, chunk, sizeof(chunk), 0);
    if (n < 0) {
        return errno == ECONNRESET ? 0 : -1;
    }
    gb_buf_append(&c->in, chunk, (size_t)n);
    return n;
}

static const char *find_crlf(const gb_buf_t *b)
{
    for (size_t i = 0; i + 1 < b->len; i++) {
        if (b->data[i] == '\r' && b->data[i + 1] == '\n') {
            return b->data + i;
        }
    }
    return NULL;
}

static const char *find_head_end(const gb_buf_t *b)
{
    if (b->len < 4) {
        return NULL;
    }
    for (size_t i = 0; i + 3 < b->len; i++) {
        if (memcmp(b->data + i, "\r\n\r\n", 4) == 0) {
            return b->data + i;
        }
    }
    return NULL;
}

void gb_th_conn_read(gb_th_conn_t *c, gb_th_resp_t *r, unsigned timeout_ms)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(timeout_ms);
    const char *end;
    bool eof = false;

    memset(r, 0, sizeof(*r));
    while ((end = find_head_end(&c->in)) == NULL) {
        ssize_t n = fill(c, deadline);
        if (n <= 0) {
            r->closed = n == 0;
            return;
        }
    }
    size_t head_len = (size_t)(end - c->in.data) + 4;
    r->head = gb_xstrndup(c->in.data, head_len - 4);
    gb_buf_consume(&c->in, head_len);
    if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1) {
        r->status = 0;
        return;
    }
    char *te = gb_th_resp_header(r, "Transfer-Encoding");
    char *cl = gb_th_resp_header(r, "Content-Length");
    char *conn = gb_th_resp_header(r, "Connection");
    bool chunked = te != NULL && strcasecmp(te, "chunked") == 0;
    bool no_body = c->head_request || r->status == 304 || r->status == 204 ||
                   (r->status >= 100 && r->status < 200);
    r->closed = conn != NULL && strcasecmp(conn, "close") == 0;
    gb_buf_t body;
    gb_buf_init(&body);
    if (no_body) {
        /* nothing */
    } else if (chunked) {
        for (;;) {
            const char *crlf;
            while ((crlf = find_crlf(&c->in)) == NULL) {
                if (fill(c, deadline) <= 0) {
                    r->status = 0;
                    goto out;
                }
            }
            size_t size = strtoul(c->in.data, NULL, 16);
            size_t line = (size_t)(crlf - c->in.data) + 2;
            while (c->in.len < line + size + 2) {
                if (fill(c, deadline) <= 0) {
                    r->status = 0;
                    goto out;
                }
            }
            gb_buf_append(&body, c->in.data + line, size);
            gb_buf_consume(&c->in, line + size + 2);
            if (size == 0) {
                break;
            }
        }
    } else if (cl != NULL) {
        size_t want = strtoul(cl, NULL, 10);
        while (c->in.len < want) {
            if (fill(c, deadline) <= 0) {
                r->status = 0;
                goto out;
            }
        }
        gb_buf_append(&body, c->in.data, want);
        gb_buf_consume(&c->in, want);
    } else {
        while (!eof) {
            ssize_t n = fill(c, deadline);
            eof = n <= 0;
        }
        gb_buf_append(&body, c->in.data ? c->in.data : "", c->in.len);
        gb_buf_reset(&c->in);
        r->closed = true;
    }
out:
    r->body = gb_buf_steal(&body, &r->body_len);
    free(te);
    free(cl);
    free(conn);
}

bool gb_th_conn_wait_closed(gb_th_conn_t *c, unsigned timeout_ms)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(timeout_ms);
    for (;;) {
        ssize_t n = fill(c, deadline);
        if (n == 0) {
            return true;
        }
        if (n < 0) {
            return false;
        }
    }
}

json_t *gb_th_resp_json(const gb_th_resp_t *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body != NULL ? r->body : "", r->body_len, 0, &e);
    if (j == NULL) {
        fail_msg("not JSON (%s): %s", e.text, r->body != NULL ? r->body : "");
    }
    return j;
}

json_t *gb_th_get_json(int port, const char *path, const char *token)
{
    gb_th_resp_t r;
    gb_th_request_auth(port, "GET", path, token, NULL, &r);
    if (r.status != 200) {
        fail_msg("GET %s: %d %s", path, r.status, r.body != NULL ? r.body : "");
    }
    json_t *j = gb_th_resp_json(&r);
    gb_th_resp_free(&r);
    return j;
}

#if defined(__SANITIZE_ADDRESS__)
#define QUARANTINE_MB 16
#else
#define QUARANTINE_MB 0
#endif
#define FREELIST_MB 4

long gb_th_held_mb(void)
{
    return QUARANTINE_MB + (gb_th_valgrind() ? 2L * FREELIST_MB : 0);
}

/* Appends opt to the options in the environment variable var (sep between two options). */
static void env_append(const char *var, const char *sep, const char *opt)
{
    char buf[1024];
    const char *old = getenv(var);
    snprintf(buf, sizeof(buf), "%s%s%s", old != NULL ? old : "",
             old != NULL && old[0] != '\0' ? sep : "", opt);
    setenv(var, buf, 1);
}

void gb_th_hold_little_freed_memory(void)
{
    char opt[64];
#if defined(__SANITIZE_ADDRESS__)
    snprintf(opt, sizeof(opt), "quarantine_size_mb=%d", QUARANTINE_MB);
    env_append("ASAN_OPTIONS", ":", opt);
#endif
    if (gb_th_valgrind()) {
        snprintf(opt, sizeof(opt), "--freelist-vol=%d", FREELIST_MB << 20);
        env_append("VALGRIND_OPTS", " ", opt);
    }
}

json_t *gb_th_load_json(const char *path)
{
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (j == NULL) {
        fail_msg("%s: %s", path, e.text);
    }
    return j;
}

int gb_th_wait_status(int port, const char *path, int want, unsigned timeout_ms)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(timeout_ms);
    for (;;) {
        gb_th_resp_t r;
        gb_th_request(port, "GET", path, NULL, NULL, 0, &r);
        int status = r.status;
        gb_th_resp_free(&r);
        if (status == want || gb_time_mono_ms() >= deadline) {
            return status;
        }
        gb_th_sleep_ms(100);
    }
}

long gb_th_metric(int port, const char *name)
{
    gb_th_resp_t r;
    char key[128];
    gb_th_request(port, "GET", "/metrics", NULL, NULL, 0, &r);
    if (r.status != 200) {
        fail_msg("GET /metrics: status %d", r.status);
    }
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *p = strstr(r.body, key);
    long v = p != NULL ? strtol(p + strlen(key), NULL, 10) : -1;
    gb_th_resp_free(&r);
    return v;
}

void gb_th_request(int port, const char *method, const char *path, const char *headers,
                   const char *body, size_t body_len, gb_th_resp_t *r)
{
    gb_th_conn_t c;
    gb_buf_t req;
    memset(r, 0, sizeof(*r));
    if (gb_th_conn_open(&c, port) < 0) {
        return;
    }
    c.head_request = strcmp(method, "HEAD") == 0;
    gb_buf_init(&req);
    gb_buf_appendf(&req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s", method,
                   path, headers != NULL ? headers : "");
    if (body != NULL) {
        gb_buf_appendf(&req, "Content-Length: %zu\r\n", body_len);
    }
    gb_buf_append_str(&req, "\r\n");
    if (body != NULL) {
        gb_buf_append(&req, body, body_len);
    }
    if (gb_th_conn_send(&c, req.data, req.len) == 0) {
        gb_th_conn_read(&c, r, 10000);
    }
    gb_buf_dispose(&req);
    gb_th_conn_close(&c);
}

void gb_th_request_auth(int port, const char *method, const char *path, const char *token,
                        const char *json_body, gb_th_resp_t *r)
{
    gb_buf_t h;
    gb_buf_init(&h);
    if (token != NULL) {
        gb_buf_appendf(&h, "Authorization: Bearer %s\r\n", token);
    }
    if (json_body != NULL) {
        gb_buf_append_str(&h, "Content-Type: application/json\r\n");
    }
    gb_th_request(port, method, path, h.data, json_body, json_body != NULL ? strlen(json_body) : 0,
                  r);
    gb_buf_dispose(&h);
}

void gb_th_assert_json_error(const gb_th_resp_t *r, int status, const char *code)
{
    char want[128];
    if (r->status != status) {
        fail_msg("status %d, want %d; body %s", r->status, status, r->body ? r->body : "");
    }
    char *ct = gb_th_resp_header(r, "Content-Type");
    if (ct == NULL || strstr(ct, "application/json") == NULL) {
        fail_msg("content type %s, want application/json", ct != NULL ? ct : "(absent)");
    }
    free(ct);
    snprintf(want, sizeof(want), "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    if (r->body == NULL || strncmp(r->body, want, strlen(want)) != 0) {
        fail_msg("body %s, want code %s", r->body != NULL ? r->body : "(none)", code);
    }
}

/* ---- resource limits ---- */

int gb_th_server_start_nofile(gb_th_server_t *s, const char *db_url, const char *const *extra,
                              unsigned nofile)
{
    /* Soft and hard alike: gloveboxd raises its soft limit to the hard one when it starts. */
    struct rlimit rl = {nofile, nofile};
    child_nofile = &rl;
    int rc = gb_th_server_start(s, db_url, extra);
    child_nofile = NULL;
    return rc;
}

long gb_th_proc_status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    size_t n = strlen(field);
    long kb = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

long gb_th_proc_cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    /* The command name may hold spaces and parentheses: fields are counted after the last ')'.
     * utime and stime are fields 14 and 15, in clock ticks. */
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) {
        return -1;
    }
    long hz = sysconf(_SC_CLK_TCK);
    return (long)((ut + st) * 1000ULL / (unsigned long long)(hz > 0 ? hz : 100));
}

long gb_th_server_fd_count(const gb_th_server_t *s)
{
    char dir[64], path[512], target[PATH_MAX];
    if (!gb_th_valgrind()) {
        return gb_th_proc_fd_count(s->pid);
    }
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)s->pid);
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -1;
    }
    /* Every descriptor's number, and where valgrind's own begin: at the one on the program's
     * executable (kept open for the program's /proc/self/exe), the first valgrind moves up
     * there, to the lowest number past the limit it gives the program. Files are told by
     * their names, as a link names a file by its real path. */
    const char *exe = strrchr(GB_GLOVEBOXD, '/') != NULL ? strrchr(GB_GLOVEBOXD, '/') : "/";
    size_t exe_len = strlen(exe);
    long *fds = NULL;
    size_t n = 0, cap = 0;
    long reserved = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        long fd = strtol(e->d_name, NULL, 10);
        if (n == cap) {
            cap = cap == 0 ? 256 : cap * 2;
            fds = gb_xrealloc(fds, cap * sizeof(*fds));
        }
        fds[n++] = fd;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        ssize_t len = readlink(path, target, sizeof(target) - 1);
        if (len >= (ssize_t)exe_len && memcmp(target + len - exe_len, exe, exe_len) == 0 &&
            (reserved < 0 || fd < reserved)) {
            reserved = fd;
        }
    }
    closedir(d);
    long count = 0;
    for (size_t i = 0; i < n; i++) {
        count += reserved < 0 || fds[i] < reserved;
    }
    free(fds);
    return count;
}

long gb_th_proc_fd_count(pid_t pid)
{
    char path[64];
    long n = 0;
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL) {
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n;
}
