/* main: glovebox-sim's command line. Parses the flags, builds the room model, and either writes
 * the fleet's CSV, runs the model alone (dry run), or drives it against a server: the model runs
 * on the loop in chunks (as fast as the acknowledgements allow at --speed 0, or paced by the wall
 * clock at --speed X) and the transport delivers every message it emits. The ground truth is the
 * model's alone, so it is the same whichever way the run goes. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "model.h"
#include "transport.h"
#include "util/util.h"

/* Events the model runs between two looks at the network. */
#define CHUNK 20000

enum { EXIT_OK = 0, EXIT_SERVER = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

typedef struct app {
    gb_sim_options_t opt;
    gb_sim_t *sim;
    FILE *messages;
    uv_loop_t loop;
    uv_idle_t pump;   /* runs the model while it may run ahead */
    uv_timer_t clock; /* --speed X: wakes when the next event is due */
    uv_signal_t sigint;
    uv_signal_t sigterm;
    gb_sim_tx_t *tx;
    gb_sim_tx_stats_t stats; /* copied when the transport closes */
    const char **serials;
    uint64_t wall0; /* loop time when the run began */
    bool finished;
    int exit_code;
    char reason[1100];
} app_t;

static int write_file(const char *path, const char *data, size_t len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "glovebox-sim: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = fwrite(data, 1, len, f);
    int rc = (f == stdout) ? fflush(f) : fclose(f);
    if (n != len || rc != 0) {
        fprintf(stderr, "glovebox-sim: writing %s failed\n", path);
        return -1;
    }
    return 0;
}

/* The model's sink: every message goes to the transport and, if asked, to the JSON-lines file. */
static void on_model_message(void *arg, const gb_sim_msg_t *m)
{
    app_t *a = arg;
    if (a->messages != NULL) {
        gb_buf_t line;
        gb_buf_init(&line);
        gb_buf_append_str(&line, "{\"serial\":");
        gb_json_quote(&line, m->serial, strlen(m->serial));
        gb_buf_append_str(&line, ",\"message\":");
        gb_buf_append(&line, m->json, m->len);
        gb_buf_append_str(&line, "}\n");
        fwrite(line.data, 1, line.len, a->messages);
        gb_buf_dispose(&line);
    }
    if (a->tx != NULL) {
        gb_sim_tx_enqueue(a->tx, m->device, m->seq, m->json, m->len);
    }
}

static void on_pump(uv_idle_t *idle);

static void finish(app_t *a, int code, const char *why)
{
    if (a->finished) {
        return;
    }
    a->finished = true;
    a->exit_code = code;
    snprintf(a->reason, sizeof(a->reason), "%s", why ? why : "");
    uv_close((uv_handle_t *)&a->pump, NULL);
    uv_close((uv_handle_t *)&a->clock, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    if (a->tx != NULL) {
        a->stats = *gb_sim_tx_stats(a->tx);
        gb_sim_tx_close(a->tx); /* frees itself once its handles have closed */
    }
}

/* The transport acknowledged something or failed: look again. */
static void on_tx_progress(void *arg)
{
    app_t *a = arg;
    if (!a->finished) {
        uv_idle_start(&a->pump, on_pump);
    }
}

static void on_clock(uv_timer_t *timer)
{
    app_t *a = gb_container_of(timer, app_t, clock);
    uv_idle_start(&a->pump, on_pump);
}

/* Simulated ms the wall clock allows at --speed X. */
static int64_t paced_until(const app_t *a)
{
    double elapsed = (double)(uv_now(&a->loop) - a->wall0);
    return (int64_t)(elapsed * a->opt.speed);
}

static void on_pump(uv_idle_t *idle)
{
    app_t *a = gb_container_of(idle, app_t, pump);

    if (gb_sim_tx_failed(a->tx)) {
        finish(a, EXIT_SERVER, gb_sim_tx_error(a->tx));
        return;
    }
    if (!gb_sim_done(a->sim)) {
        if (gb_sim_tx_pending(a->tx) >= a->opt.max_queued) {
            uv_idle_stop(idle); /* far enough ahead: acknowledgements restart the pump */
            return;
        }
        int64_t until = a->opt.speed > 0 ? paced_until(a) : GB_SIM_NEVER;
        size_t ran = gb_sim_run(a->sim, until, CHUNK);
        gb_sim_tx_flush(a->tx);
        if (ran == CHUNK || gb_sim_done(a->sim)) {
            return; /* more to run, or the end: look again on the next turn */
        }
        /* Paced: nothing is due yet. Sleep until the next event (or a second, to stay live). */
        uv_idle_stop(idle);
        double wait = (double)(gb_sim_next_ms(a->sim) - until) / a->opt.speed;
        uint64_t ms = wait < 1 ? 1 : wait > 1000 ? 1000 : (uint64_t)wait;
        uv_timer_start(&a->clock, on_clock, ms, 0);
        return;
    }
    gb_sim_tx_flush(a->tx);
    if (gb_sim_tx_pending(a->tx) == 0) {
        finish(a, EXIT_OK, NULL);
    } else {
        uv_idle_stop(idle); /* waiting for the last acknowledgements */
    }
}

static void on_signal(uv_signal_t *sig, int signum)
{
    app_t *a = gb_container_of(sig, app_t, sigint);
    if (signum == SIGTERM) {
        a = gb_container_of(sig, app_t, sigterm);
    }
    char why[128];
    snprintf(why, sizeof(why), "interrupted with %llu messages unacknowledged",
             (unsigned long long)(a->tx ? gb_sim_tx_pending(a->tx) : 0));
    finish(a, EXIT_INTERRUPTED, why);
}

static int run_against_server(app_t *a)
{
    char err[512];
    uint32_t n = gb_sim_device_count(a->sim);

    uv_loop_init(&a->loop);
    a->serials = gb_xmalloc((n ? n : 1) * sizeof(*a->serials));
    for (uint32_t i = 0; i < n; i++) {
        a->serials[i] = gb_sim_device_serial(a->sim, i);
    }
    gb_sim_tx_config_t tc = {a->opt.server,      a->opt.token,     a->opt.batch,
                             a->opt.connections, a->opt.timeout_s, a->opt.give_up_s};
    a->tx = gb_sim_tx_new(&a->loop, &tc, n, a->serials, on_tx_progress, a, err, sizeof(err));
    if (a->tx == NULL) {
        fprintf(stderr, "glovebox-sim: %s\n", err);
        uv_loop_close(&a->loop);
        free(a->serials);
        return EXIT_USAGE;
    }
    uv_idle_init(&a->loop, &a->pump);
    uv_timer_init(&a->loop, &a->clock);
    uv_signal_init(&a->loop, &a->sigint);
    uv_signal_init(&a->loop, &a->sigterm);
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    a->wall0 = uv_now(&a->loop);
    uv_idle_start(&a->pump, on_pump);

    uv_run(&a->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&a->loop);
    GB_ASSERT(rc == 0); /* every handle was closed in finish() */
    free(a->serials);
    return a->exit_code;
}

int main(int argc, char **argv)
{
    app_t app;
    char err[512];

    memset(&app, 0, sizeof(app));
    signal(SIGPIPE, SIG_IGN);
    gb_strerror_set_fallback(uv_strerror);
    gb_sim_options_defaults(&app.opt);
    if (gb_sim_options_parse(&app.opt, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "glovebox-sim: %s\n", err);
        return EXIT_USAGE;
    }
    if (app.opt.help) {
        gb_buf_t help;
        gb_buf_init(&help);
        gb_sim_options_help(&help);
        fwrite(help.data, 1, help.len, stdout);
        gb_buf_dispose(&help);
        return EXIT_OK;
    }
    if (app.opt.version) {
        printf("%s\n", GB_SIM_AGENT);
        return EXIT_OK;
    }
    gb_log_level_t level;
    if (gb_log_level_parse(app.opt.log_level, &level)) {
        gb_log_set_level(level);
    }
    if (app.opt.messages[0] != '\0') {
        app.messages = fopen(app.opt.messages, "w");
        if (app.messages == NULL) {
            fprintf(stderr, "glovebox-sim: cannot write %s: %s\n", app.opt.messages,
                    strerror(errno));
            return EXIT_USAGE;
        }
    }

    app.sim = gb_sim_new(&app.opt.model, on_model_message, &app);

    if (app.opt.csv[0] != '\0') {
        gb_buf_t csv;
        gb_buf_init(&csv);
        gb_sim_csv(app.sim, app.opt.hash_bytes, app.opt.group_tag, &csv);
        int rc = write_file(app.opt.csv, csv.data, csv.len);
        gb_buf_dispose(&csv);
        gb_sim_free(app.sim);
        if (app.messages != NULL) {
            fclose(app.messages);
        }
        return rc == 0 ? EXIT_OK : EXIT_USAGE;
    }

    int code;
    int64_t t0 = gb_time_mono_ms();
    if (app.opt.server[0] == '\0' || app.opt.dry_run) {
        gb_sim_run(app.sim, GB_SIM_NEVER, 0);
        code = EXIT_OK;
    } else {
        code = run_against_server(&app);
    }
    int64_t wall = gb_time_mono_ms() - t0;
    if (app.messages != NULL && fclose(app.messages) != 0) {
        fprintf(stderr, "glovebox-sim: writing %s failed\n", app.opt.messages);
        code = code == EXIT_OK ? EXIT_USAGE : code;
    }

    if (code != EXIT_OK) {
        fprintf(stderr, "glovebox-sim: %s\n", app.reason[0] ? app.reason : "failed");
    } else if (gb_sim_done(app.sim)) {
        if (app.opt.summary[0] != '\0') {
            gb_buf_t json;
            gb_buf_init(&json);
            gb_sim_truth_json(app.sim, &json);
            if (write_file(app.opt.summary, json.data, json.len) != 0) {
                code = EXIT_USAGE;
            }
            gb_buf_dispose(&json);
        }
        if (!app.opt.quiet) {
            gb_buf_t text;
            gb_buf_init(&text);
            gb_sim_summary_text(app.sim, &text);
            fwrite(text.data, 1, text.len, stdout);
            gb_buf_dispose(&text);
            printf("  run         %.3f s wall, %.0f messages/s", (double)wall / 1000.0,
                   wall > 0 ? (double)gb_sim_messages(app.sim) * 1000.0 / (double)wall : 0.0);
            if (app.opt.server[0] == '\0' || app.opt.dry_run) {
                printf(" (dry run: model only)\n");
            } else {
                const gb_sim_tx_stats_t *st = &app.stats;
                printf(", all acknowledged: %llu requests, %llu retries (%llu unavailable, %llu "
                       "connection errors), %.1f MB sent\n",
                       (unsigned long long)st->requests, (unsigned long long)st->retries,
                       (unsigned long long)st->unavailable, (unsigned long long)st->conn_errors,
                       (double)st->bytes_sent / 1e6);
            }
        }
    }
    gb_sim_free(app.sim);
    return code;
}
