/* GET /api/v1/capacity and `gloveboxd plan` against a real gloveboxd and PostgreSQL. The
 * validation: glovebox-sim runs a fleet at 20 slots through the server, the model is fitted from
 * what the server stored, and its predictions for 10 and 40 slots and for half the fitted uplink
 * are compared with the simulator's own runs of those rooms (makespan within 10%, mean time per
 * device within 15%); the table of predicted against measured figures is printed. Then every
 * parameter's refusals, the roles, too little data, and the command line's agreement with the
 * API. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"

/* The fitted room: small uplink against the payload times the slots, so bandwidth matters
 * (20 devices downloading 2.6 GB, a fifth from LAN peers, share 200 Mbit/s). */
#define ROOM "--devices 200 --uplink-mbps 200 --seed 11 --speed 0"

typedef struct fixture {
    char url[512];
    char dir[128];
    char *agent;
    char *viewer;
    gb_th_server_t server;
} fixture_t;

static void fixture_start(fixture_t *f)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(gb_th_db_create(f->url, sizeof(f->url)), 0);
    f->agent = gb_th_token_create(f->url, "agent", "capacity-sim");
    f->viewer = gb_th_token_create(f->url, "viewer", "capacity-viewer");
    assert_non_null(f->agent);
    assert_non_null(f->viewer);
    snprintf(f->dir, sizeof(f->dir), "/tmp/gb-capacity-%d-%lld", (int)getpid(),
             (long long)gb_time_mono_ms());
    assert_int_equal(gb_th_sh("mkdir -p '%s'", f->dir), 0);
    assert_int_equal(gb_th_server_start(&f->server, f->url, NULL), 0);
}

static void fixture_stop(fixture_t *f)
{
    assert_int_equal(gb_th_server_stop(&f->server, SIGTERM, 20000), 0);
    gb_th_sh("rm -rf '%s'", f->dir);
    free(f->agent);
    free(f->viewer);
}

/* Runs the simulator (through the server when served, else the model alone) and loads its
 * ground truth. */
static json_t *run_sim(const fixture_t *f, bool served, const char *name, const char *args)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s.json", f->dir, name);
    if (served) {
        assert_int_equal(gb_th_sh("'%s' --server http://127.0.0.1:%d --token '%s' --summary '%s' "
                                  "--quiet --give-up 60 %s",
                                  GB_SIM, f->server.port, f->agent, path, args),
                         0);
    } else {
        assert_int_equal(gb_th_sh("'%s' --summary '%s' --quiet %s", GB_SIM, path, args), 0);
    }
    return gb_th_load_json(path);
}

/* GET path with token; the status must be want and the body a JSON object. */
static json_t *get(const fixture_t *f, const char *token, const char *path, int want)
{
    gb_th_resp_t r;
    gb_th_request_auth(f->server.port, "GET", path, token, NULL, &r);
    if (r.status != want) {
        fail_msg("GET %s: status %d (want %d), body %s", path, r.status, want,
                 r.body != NULL ? r.body : "");
    }
    json_error_t e;
    json_t *j = json_loadb(r.body, r.body_len, 0, &e);
    if (!json_is_object(j)) {
        fail_msg("GET %s: not a JSON object (%s): %s", path, e.text, r.body);
    }
    gb_th_resp_free(&r);
    return j;
}

static json_t *at(json_t *obj, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *j = obj;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k != NULL;
         k = strtok_r(NULL, ".", &save)) {
        j = json_object_get(j, k);
    }
    if (j == NULL) {
        fail_msg("%s is missing", path);
    }
    return j;
}

static double num(json_t *obj, const char *path)
{
    json_t *j = at(obj, path);
    if (!json_is_number(j)) {
        fail_msg("%s is not a number", path);
    }
    return json_number_value(j);
}

/* ---- the validation against the simulator ---- */

typedef struct row {
    const char *name;
    double ms_pred, ms_meas, pd_pred, pd_meas;
    long long to_pred, to_meas;
} row_t;

static row_t compare(const char *name, json_t *answer, json_t *truth)
{
    row_t r = {name,
               num(answer, "prediction.makespan_s"),
               num(truth, "makespan_s"),
               num(answer, "prediction.per_device_s"),
               num(truth, "mean_device_s"),
               (long long)num(answer, "prediction.esp_timeouts"),
               (long long)num(truth, "failures_by_diagnosis.esp_timeout")};
    return r;
}

static double err_pct(double pred, double meas)
{
    return 100 * (pred / meas - 1);
}

static void test_capacity_predicts_the_simulator(void **state)
{
    fixture_t f;
    char path[256];
    fixture_start(&f);
    json_t *fitted = run_sim(&f, true, "fit", ROOM " --slots 20");

    /* The fit, from what the server stored: defaults are the room it saw. */
    json_t *base = get(&f, f.viewer, "/api/v1/capacity", 200);
    assert_int_equal((long long)num(base, "query.devices"), 200);
    assert_int_equal((long long)num(base, "query.slots"), 20);
    assert_int_equal((long long)num(base, "basis.devices"), 200);
    assert_int_equal((long long)num(base, "basis.samples"), (long long)num(fitted, "green"));
    assert_true(num(base, "basis.uplink_samples") >= num(fitted, "green") - 1);
    double uplink = num(base, "model.uplink_mbps");
    assert_true(fabs(uplink / 200 - 1) < 0.1);
    assert_true(fabs(num(base, "model.payload_mb") / 2605 - 1) < 0.005);
    assert_true(fabs(num(base, "model.peer_share") - 0.2) < 0.01);
    assert_true(num(base, "model.fixed_s") > 0);
    assert_true(num(base, "basis.r2") > 0 && num(base, "basis.r2") <= 1);
    assert_true(num(base, "basis.mae_s") > 0);
    assert_true(json_is_integer(at(base, "recommended_slots")));
    const char *bound = json_string_value(at(base, "bound"));
    assert_true(strcmp(bound, "install") == 0 || strcmp(bound, "bandwidth") == 0);
    json_t *chart = at(base, "throughput_by_slots");
    assert_true(json_array_size(chart) >= 10);
    for (size_t i = 1; i < json_array_size(chart); i++) {
        assert_true(num(json_array_get(chart, i), "slots") >
                    num(json_array_get(chart, i - 1), "slots"));
    }
    assert_int_equal(json_array_size(at(base, "what_if")), 4);
    assert_true(json_array_size(at(base, "explain")) >= 4);

    /* The predictions, then the simulator's runs of the same rooms (model only: the ground
     * truth of a run is the same with or without a server). */
    json_t *p10 = get(&f, f.viewer, "/api/v1/capacity?slots=10", 200);
    json_t *p40 = get(&f, f.viewer, "/api/v1/capacity?slots=40", 200);
    snprintf(path, sizeof(path), "/api/v1/capacity?slots=20&uplink_mbps=%.3f", uplink / 2);
    json_t *half = get(&f, f.viewer, path, 200);
    json_t *t10 = run_sim(&f, false, "s10", ROOM " --slots 10");
    json_t *t40 = run_sim(&f, false, "s40", ROOM " --slots 40");
    json_t *thalf = run_sim(&f, false, "half",
                            "--devices 200 --uplink-mbps 100 --seed 11 "
                            "--speed 0 --slots 20");
    row_t rows[] = {
        compare("20 slots (the fitted room)", base, fitted),
        compare("10 slots", p10, t10),
        compare("40 slots", p40, t40),
        compare("20 slots, half the uplink", half, thalf),
    };

    printf("\ncapacity model against glovebox-sim: 200 devices, seed 11, fitted at 20 slots and "
           "200 Mbit/s (fitted uplink %.1f Mbit/s)\n",
           uplink);
    printf("%-28s %12s %12s %8s %11s %11s %8s %9s\n", "room", "makespan_s", "measured", "error",
           "per_dev_s", "measured", "error", "timeouts");
    for (size_t i = 0; i < GB_ARRAY_LEN(rows); i++) {
        row_t *r = &rows[i];
        printf("%-28s %12.0f %12.0f %+7.1f%% %11.0f %11.0f %+7.1f%% %4lld/%-4lld\n", r->name,
               r->ms_pred, r->ms_meas, err_pct(r->ms_pred, r->ms_meas), r->pd_pred, r->pd_meas,
               err_pct(r->pd_pred, r->pd_meas), r->to_pred, r->to_meas);
    }
    fflush(stdout);
    for (size_t i = 0; i < GB_ARRAY_LEN(rows); i++) {
        row_t *r = &rows[i];
        if (fabs(err_pct(r->ms_pred, r->ms_meas)) > 10 ||
            fabs(err_pct(r->pd_pred, r->pd_meas)) > 15) {
            fail_msg("%s: makespan %.0f predicted, %.0f measured; per device %.0f predicted, %.0f "
                     "measured",
                     r->name, r->ms_pred, r->ms_meas, r->pd_pred, r->pd_meas);
        }
    }
    /* The rooms differ as they should: the answer is not one figure for every question. */
    assert_true(rows[1].ms_pred > 1.5 * rows[2].ms_pred);
    assert_true(rows[3].ms_pred > rows[0].ms_pred);

    /* gloveboxd plan gives the API's answer from the same data. */
    snprintf(path, sizeof(path), "%s/plan.json", f.dir);
    assert_int_equal(gb_th_sh("'%s' plan --database-url '%s' --slots 40 --json --log-level error "
                              "> '%s'",
                              GB_GLOVEBOXD, f.url, path),
                     0);
    json_t *cli = gb_th_load_json(path);
    assert_true(json_equal(at(cli, "prediction"), at(p40, "prediction")));
    assert_true(json_equal(at(cli, "model"), at(p40, "model")));
    assert_true(json_equal(at(cli, "recommended_slots"), at(p40, "recommended_slots")));
    char *line = gb_th_sh_line("'%s' plan --database-url '%s' --devices 400 --slots 40 "
                               "--log-level error | head -1",
                               GB_GLOVEBOXD, f.url);
    assert_non_null(line);
    assert_non_null(strstr(line, "Capacity plan: 400 devices on 40 slots"));
    free(line);

    json_t *all[] = {fitted, base, p10, p40, half, t10, t40, thalf, cli};
    for (size_t i = 0; i < GB_ARRAY_LEN(all); i++) {
        json_decref(all[i]);
    }
    fixture_stop(&f);
}

/* ---- refusals ---- */

static void assert_refused(const fixture_t *f, const char *query, const char *field)
{
    char path[512];
    gb_th_resp_t r;
    snprintf(path, sizeof(path), "/api/v1/capacity?%s", query);
    gb_th_request_auth(f->server.port, "GET", path, f->viewer, NULL, &r);
    gb_th_assert_json_error(&r, 400, "invalid_query");
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    const char *got = json_string_value(json_object_get(json_object_get(j, "error"), "field"));
    if (got == NULL || strcmp(got, field) != 0) {
        fail_msg("?%s: field %s, want %s (%s)", query, got ? got : "(none)", field, r.body);
    }
    json_decref(j);
    gb_th_resp_free(&r);
}

static void test_capacity_refuses_bad_parameters(void **state)
{
    fixture_t f;
    fixture_start(&f);
    static const char *const bad[][2] = {
        {"devices=0", "devices"},
        {"devices=20001", "devices"},
        {"devices=ten", "devices"},
        {"devices=-5", "devices"},
        {"devices=1.5", "devices"},
        {"devices=", "devices"},
        {"slots=0", "slots"},
        {"slots=10001", "slots"},
        {"slots=4x", "slots"},
        {"uplink_mbps=0", "uplink_mbps"},
        {"uplink_mbps=-100", "uplink_mbps"},
        {"uplink_mbps=1e3", "uplink_mbps"},
        {"uplink_mbps=inf", "uplink_mbps"},
        {"uplink_mbps=10000001", "uplink_mbps"},
        {"uplink_mbps=1.2.3", "uplink_mbps"},
        {"payload_mb=-1", "payload_mb"},
        {"payload_mb=lots", "payload_mb"},
        {"payload_mb=10000001", "payload_mb"},
        {"peer_share=1.5", "peer_share"},
        {"peer_share=-0.1", "peer_share"},
        {"peer_share=half", "peer_share"},
        {"cache_share=2", "cache_share"},
        {"peer_share=0.6&cache_share=0.5", "cache_share"},
        {"esp_timeout_min=0", "esp_timeout_min"},
        {"esp_timeout_min=1441", "esp_timeout_min"},
        {"esp_timeout_min=30.5", "esp_timeout_min"},
        {"profile=no%20spaces", "profile"},
        {"profile=...", "profile"},
        {"profile=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "profile"},
        {"slot=40", "slot"},
        {"slots=40&uplink=100", "uplink"},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(bad); i++) {
        assert_refused(&f, bad[i][0], bad[i][1]);
    }

    /* Roles: any person's token; an agent's is refused, and so is none. */
    gb_th_resp_t r;
    gb_th_request_auth(f.server.port, "GET", "/api/v1/capacity", f.agent, NULL, &r);
    gb_th_assert_json_error(&r, 403, "forbidden");
    gb_th_resp_free(&r);
    gb_th_request(f.server.port, "GET", "/api/v1/capacity", NULL, NULL, 0, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);

    /* The command line refuses the same values and names the flag. */
    assert_int_equal(
        gb_th_sh("'%s' plan --database-url '%s' --slots 0 2>/dev/null", GB_GLOVEBOXD, f.url), 2);
    char *line = gb_th_sh_line("'%s' plan --database-url '%s' --peer-share 2 2>&1; true",
                               GB_GLOVEBOXD, f.url);
    assert_non_null(line);
    assert_non_null(strstr(line, "--peer-share: must be a number from 0 to 1"));
    free(line);
    assert_int_equal(
        gb_th_sh("'%s' plan --database-url '%s' --slot 4 2>/dev/null", GB_GLOVEBOXD, f.url), 2);
    fixture_stop(&f);
}

static void assert_insufficient(const fixture_t *f, const char *path, const char *says)
{
    gb_th_resp_t r;
    gb_th_request_auth(f->server.port, "GET", path, f->viewer, NULL, &r);
    gb_th_assert_json_error(&r, 422, "insufficient_data");
    if (strstr(r.body, says) == NULL) {
        fail_msg("GET %s: %s lacks \"%s\"", path, r.body, says);
    }
    gb_th_resp_free(&r);
}

static void test_capacity_needs_enough_devices(void **state)
{
    fixture_t f;
    fixture_start(&f);
    assert_insufficient(&f, "/api/v1/capacity", "devices 0: green 0");
    /* Three devices through the flow are not enough to fit five parameters from. */
    json_t *t = run_sim(&f, true, "few", "--devices 3 --seed 5 --no-faults --speed 0");
    assert_insufficient(&f, "/api/v1/capacity?slots=4", "devices 3: green 3");
    assert_insufficient(&f, "/api/v1/capacity?profile=nosuch", "devices 0");
    /* The command line says the same, and fails. */
    assert_int_equal(gb_th_sh("'%s' plan --database-url '%s' --log-level error 2>/dev/null",
                              GB_GLOVEBOXD, f.url),
                     1);
    char *line = gb_th_sh_line("'%s' plan --database-url '%s' --log-level error 2>&1; true",
                               GB_GLOVEBOXD, f.url);
    assert_non_null(line);
    assert_non_null(strstr(line, "at least 5 green devices"));
    free(line);
    json_decref(t);
    fixture_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capacity_predicts_the_simulator),
        cmocka_unit_test(test_capacity_refuses_bad_parameters),
        cmocka_unit_test(test_capacity_needs_enough_devices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
