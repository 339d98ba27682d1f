/* Tests of glovebox-sim's transport against a scripted fake server on loopback: requests follow
 * the contract (path, headers, body, batch size, seq order), 503 answers, connections dropped
 * before or after the server committed, and `Connection: close` lose nothing and double
 * nothing; 401 and 400 stop the run with status 1 and a clear message; an unreachable server is
 * given up on after --give-up seconds. The fake server is a poll() loop in this process; the
 * simulator runs as a child. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"
#include "util/util.h"

#define TOKEN     "sim-test-token"
#define MAX_CONNS 64
#define MAX_DEVS  256

enum script {
    SCRIPT_FLAKY,        /* 503s, drops, commit-then-drop, Connection: close, else 200 */
    SCRIPT_CLEAN,        /* always 200 */
    SCRIPT_UNAUTHORIZED, /* always 401 */
    SCRIPT_BAD_MESSAGE,  /* always 400 invalid_message */
};

typedef struct client {
    int fd;
    gb_buf_t in;
} client_t;

typedef struct held {
    char serial[64];
    json_t *msgs; /* stored messages, in seq order */
} held_t;

typedef struct server {
    int lfd;
    int port;
    enum script script;
    uint32_t batch;
    client_t clients[MAX_CONNS];
    held_t devs[MAX_DEVS];
    size_t n_devs;
    unsigned requests;
    unsigned unavailable, dropped, committed_dropped, closes, gaps, bad_requests, over_batch;
} server_t;

static char dir[64];

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/gb-sim-tx-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    return gb_th_sh("rm -rf '%s'", dir) == 0 ? 0 : -1;
}

static void server_open(server_t *s, enum script script, uint32_t batch)
{
    memset(s, 0, sizeof(*s));
    s->script = script;
    s->batch = batch;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 64), 0);
    socklen_t len = sizeof(a);
    getsockname(s->lfd, (struct sockaddr *)&a, &len);
    s->port = ntohs(a.sin_port);
    for (int i = 0; i < MAX_CONNS; i++) {
        s->clients[i].fd = -1;
    }
}

static void drop_client(client_t *c)
{
    close(c->fd);
    c->fd = -1;
    gb_buf_dispose(&c->in);
}

static void server_close(server_t *s)
{
    for (int i = 0; i < MAX_CONNS; i++) {
        if (s->clients[i].fd >= 0) {
            drop_client(&s->clients[i]);
        }
    }
    close(s->lfd);
    for (size_t i = 0; i < s->n_devs; i++) {
        json_decref(s->devs[i].msgs);
    }
}

static held_t *device(server_t *s, const char *serial)
{
    for (size_t i = 0; i < s->n_devs; i++) {
        if (strcmp(s->devs[i].serial, serial) == 0) {
            return &s->devs[i];
        }
    }
    assert_true(s->n_devs < MAX_DEVS);
    held_t *h = &s->devs[s->n_devs++];
    snprintf(h->serial, sizeof(h->serial), "%s", serial);
    h->msgs = json_array();
    return h;
}

static void reply(client_t *c, int status, const char *reason, const char *body, bool close_it)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s"
                     "\r\n",
                     status, reason, strlen(body), close_it ? "Connection: close\r\n" : "");
    if (write(c->fd, head, (size_t)n) < 0 || write(c->fd, body, strlen(body)) < 0) {
        return; /* the client went away; it will retry */
    }
}

/* The value of a header in a request head (case-insensitive name), copied into out. */
static bool header(const char *head, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':') {
            const char *v = p + 3 + nl;
            while (*v == ' ') {
                v++;
            }
            size_t len = strcspn(v, "\r\n");
            snprintf(out, n, "%.*s", (int)len, v);
            return true;
        }
    }
    return false;
}

/* Stores the batch (all or nothing, duplicates ignored) and returns the device's acked_seq. */
static uint64_t commit(server_t *s, json_t *body)
{
    const char *serial =
        json_string_value(json_object_get(json_object_get(body, "device"), "serial"));
    held_t *h = device(s, serial);
    json_t *msgs = json_object_get(body, "messages");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        uint64_t seq = (uint64_t)json_integer_value(json_object_get(m, "seq"));
        uint64_t held = json_array_size(h->msgs);
        if (seq == held + 1) {
            json_array_append(h->msgs, m);
        } else if (seq > held + 1) {
            s->gaps++; /* a message would be lost: the client skipped one */
        }
    }
    return json_array_size(h->msgs);
}

/* Handles one complete request in c->in (head + body of content_length bytes). */
static void serve(server_t *s, client_t *c, size_t head_len, size_t content_length)
{
    char head[4096], v[256];
    snprintf(head, sizeof(head), "%.*s", (int)head_len, c->in.data);
    unsigned r = ++s->requests;

    bool ok = strncmp(head, "POST /api/v1/agent/messages HTTP/1.1\r\n", 38) == 0 &&
              header(head, "Content-Type", v, sizeof(v)) && strcmp(v, "application/json") == 0 &&
              header(head, "Authorization", v, sizeof(v)) && strcmp(v, "Bearer " TOKEN) == 0 &&
              header(head, "Host", v, sizeof(v));
    json_error_t err;
    json_t *body = json_loadb(c->in.data + head_len, content_length, 0, &err);
    json_t *msgs = json_object_get(body, "messages");
    ok = ok && body != NULL && json_integer_value(json_object_get(body, "protocol")) == 1 &&
         json_is_string(json_object_get(json_object_get(body, "device"), "serial")) &&
         json_array_size(msgs) >= 1;
    if (!ok) {
        s->bad_requests++;
    }
    if (json_array_size(msgs) > s->batch) {
        s->over_batch++;
    }
    gb_buf_consume(&c->in, head_len + content_length);

    switch (s->script) {
    case SCRIPT_UNAUTHORIZED:
        reply(c, 401, "Unauthorized",
              "{\"error\":{\"code\":\"unauthorized\",\"message\":\"unknown token\"}}", false);
        break;
    case SCRIPT_BAD_MESSAGE:
        reply(c, 400, "Bad Request",
              "{\"error\":{\"code\":\"invalid_message\",\"message\":\"seq must be at least 1\","
              "\"index\":0,\"field\":\"messages[0].seq\"}}",
              false);
        break;
    case SCRIPT_CLEAN:
    case SCRIPT_FLAKY:
        if (s->script == SCRIPT_FLAKY && r % 9 == 1) {
            s->unavailable++;
            reply(c, 503, "Service Unavailable",
                  "{\"error\":{\"code\":\"unavailable\",\"message\":\"database unreachable\"}}",
                  false);
        } else if (s->script == SCRIPT_FLAKY && r % 13 == 3) {
            s->dropped++; /* crash before commit: nothing stored, no answer */
            drop_client(c);
        } else if (s->script == SCRIPT_FLAKY && r % 17 == 6) {
            s->committed_dropped++; /* committed, then the answer is lost */
            commit(s, body);
            drop_client(c);
        } else {
            char out[128];
            bool close_it = s->script == SCRIPT_FLAKY && r % 19 == 0;
            snprintf(out, sizeof(out), "{\"acked_seq\":%llu,\"status\":\"provisioning\"}",
                     (unsigned long long)commit(s, body));
            s->closes += close_it;
            reply(c, 200, "OK", out, close_it);
            if (close_it) {
                drop_client(c);
            }
        }
        break;
    }
    json_decref(body);
}

/* Serves requests until the child exits; returns its exit status. */
static int serve_until_exit(server_t *s, pid_t child)
{
    for (;;) {
        int status;
        if (waitpid(child, &status, WNOHANG) == child) {
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        struct pollfd fds[MAX_CONNS + 1];
        int map[MAX_CONNS + 1];
        nfds_t n = 0;
        fds[n].fd = s->lfd;
        fds[n].events = POLLIN;
        map[n++] = -1;
        for (int i = 0; i < MAX_CONNS; i++) {
            if (s->clients[i].fd >= 0) {
                fds[n].fd = s->clients[i].fd;
                fds[n].events = POLLIN;
                map[n++] = i;
            }
        }
        if (poll(fds, n, 50) <= 0) {
            continue;
        }
        for (nfds_t k = 0; k < n; k++) {
            if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            if (map[k] < 0) {
                int fd = accept(s->lfd, NULL, NULL);
                for (int i = 0; i < MAX_CONNS && fd >= 0; i++) {
                    if (s->clients[i].fd < 0) {
                        s->clients[i].fd = fd;
                        gb_buf_init(&s->clients[i].in);
                        fd = -1;
                    }
                }
                if (fd >= 0) {
                    close(fd);
                }
                continue;
            }
            client_t *c = &s->clients[map[k]];
            char buf[65536];
            ssize_t got = read(c->fd, buf, sizeof(buf));
            if (got <= 0) {
                drop_client(c);
                continue;
            }
            gb_buf_append(&c->in, buf, (size_t)got);
            while (c->fd >= 0 && c->in.len > 0) {
                char *end = strstr(c->in.data, "\r\n\r\n");
                if (end == NULL) {
                    break;
                }
                size_t head_len = (size_t)(end - c->in.data) + 4;
                char v[32] = "0";
                char head[4096];
                snprintf(head, sizeof(head), "%.*s", (int)head_len, c->in.data);
                header(head, "Content-Length", v, sizeof(v));
                size_t cl = (size_t)strtoul(v, NULL, 10);
                if (c->in.len < head_len + cl) {
                    break;
                }
                serve(s, c, head_len, cl);
            }
        }
    }
}

static pid_t spawn(const char *cmd)
{
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return gb_xstrdup("");
    }
    gb_buf_t b;
    gb_buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        gb_buf_append(&b, chunk, n);
    }
    fclose(f);
    gb_buf_append(&b, "", 0);
    size_t len;
    char *s = gb_buf_steal(&b, &len);
    return s ? s : gb_xstrdup("");
}

/* Every message the simulator wrote to its --messages file is held by the server, in order,
 * exactly once. */
static void assert_all_delivered(server_t *s, const char *messages_path)
{
    FILE *f = fopen(messages_path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    size_t lines = 0;
    json_t *next = json_object(); /* serial -> index of the next expected message */
    while (getline(&line, &cap, f) > 0) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        assert_non_null(o);
        const char *serial = json_string_value(json_object_get(o, "serial"));
        held_t *h = device(s, serial);
        json_int_t i = json_integer_value(json_object_get(next, serial));
        json_t *stored = json_array_get(h->msgs, (size_t)i);
        if (stored == NULL || !json_equal(stored, json_object_get(o, "message"))) {
            fail_msg("%s: message %lld not held as sent", serial, (long long)i + 1);
        }
        json_object_set_new(next, serial, json_integer(i + 1));
        json_decref(o);
        lines++;
    }
    free(line);
    fclose(f);
    for (size_t d = 0; d < s->n_devs; d++) {
        assert_int_equal(json_array_size(s->devs[d].msgs),
                         json_integer_value(json_object_get(next, s->devs[d].serial)));
    }
    assert_true(lines > 500);
    json_decref(next);
}

static void test_sim_flaky_server_loses_and_doubles_nothing(void **state)
{
    server_t s;
    char cmd[1024], msgs[128], out[128];
    server_open(&s, SCRIPT_FLAKY, 10);
    snprintf(msgs, sizeof(msgs), "%s/messages.jsonl", dir);
    snprintf(out, sizeof(out), "%s/out.txt", dir);
    snprintf(cmd, sizeof(cmd),
             "exec %s --server http://127.0.0.1:%d --token " TOKEN " --devices 20 --slots 10 "
             "--seed 9 --mix 0.5 --batch 10 --connections 3 --max-queued 100 --timeout 5 "
             "--messages %s >%s 2>&1",
             GB_SIM_BIN, s.port, msgs, out);
    pid_t child = spawn(cmd);
    int rc = serve_until_exit(&s, child);
    char *text = slurp(out);
    if (rc != 0) {
        fail_msg("glovebox-sim exited %d:\n%s", rc, text);
    }
    assert_int_equal(s.bad_requests, 0);
    assert_int_equal(s.over_batch, 0);
    assert_int_equal(s.gaps, 0);
    assert_true(s.unavailable > 0 && s.dropped > 0 && s.committed_dropped > 0 && s.closes > 0);
    assert_int_equal(s.n_devs, 20);
    assert_all_delivered(&s, msgs);
    assert_non_null(strstr(text, "all acknowledged"));
    free(text);
    server_close(&s);
}

static void test_sim_paced_run_delivers_everything(void **state)
{
    server_t s;
    char cmd[1024], msgs[128], out[128];
    server_open(&s, SCRIPT_CLEAN, 100);
    snprintf(msgs, sizeof(msgs), "%s/messages.jsonl", dir);
    snprintf(out, sizeof(out), "%s/out.txt", dir);
    /* About six simulated hours at 40000 x real time: under a second of wall time. */
    snprintf(cmd, sizeof(cmd),
             "exec %s --server http://127.0.0.1:%d/ --token " TOKEN " --devices 8 --slots 4 "
             "--seed 2 --speed 40000 --messages %s >%s 2>&1",
             GB_SIM_BIN, s.port, msgs, out);
    int rc = serve_until_exit(&s, spawn(cmd));
    char *text = slurp(out);
    if (rc != 0) {
        fail_msg("glovebox-sim exited %d:\n%s", rc, text);
    }
    assert_int_equal(s.gaps, 0);
    assert_int_equal(s.bad_requests, 0);
    assert_all_delivered(&s, msgs);
    free(text);
    server_close(&s);
}

static void expect_failure(enum script script, const char *needle)
{
    server_t s;
    char cmd[1024], out[128];
    server_open(&s, script, 100);
    snprintf(out, sizeof(out), "%s/out.txt", dir);
    snprintf(cmd, sizeof(cmd),
             "exec %s --server http://127.0.0.1:%d --token " TOKEN " --devices 5 >%s 2>&1",
             GB_SIM_BIN, s.port, out);
    int rc = serve_until_exit(&s, spawn(cmd));
    char *text = slurp(out);
    if (rc != 1 || strstr(text, needle) == NULL) {
        fail_msg("expected exit 1 mentioning '%s', got %d:\n%s", needle, rc, text);
    }
    free(text);
    server_close(&s);
}

static void test_sim_unauthorized_stops_with_a_token_message(void **state)
{
    expect_failure(SCRIPT_UNAUTHORIZED, "check --token");
}

static void test_sim_bad_request_stops_and_prints_the_error(void **state)
{
    expect_failure(SCRIPT_BAD_MESSAGE, "invalid_message");
}

static void test_sim_unreachable_server_is_given_up(void **state)
{
    server_t s;
    char cmd[1024], out[128];
    server_open(&s, SCRIPT_CLEAN, 100);
    int port = s.port;
    server_close(&s); /* nothing listens there any more: connections are refused */
    snprintf(out, sizeof(out), "%s/out.txt", dir);
    snprintf(cmd, sizeof(cmd),
             "%s --server http://127.0.0.1:%d --token " TOKEN " --devices 3 --give-up 2 >%s 2>&1",
             GB_SIM_BIN, port, out);
    int64_t t0 = gb_time_mono_ms();
    int rc = gb_th_sh("%s", cmd);
    char *text = slurp(out);
    if (rc != 1 || strstr(text, "no acknowledgement") == NULL) {
        fail_msg("expected exit 1 after giving up, got %d:\n%s", rc, text);
    }
    assert_true(gb_time_mono_ms() - t0 < 20000);
    free(text);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sim_flaky_server_loses_and_doubles_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sim_paced_run_delivers_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sim_unauthorized_stops_with_a_token_message, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sim_bad_request_stops_and_prints_the_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sim_unreachable_server_is_given_up, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
