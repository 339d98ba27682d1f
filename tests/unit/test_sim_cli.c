/* Tests of the glovebox-sim binary without a server: the ground truth JSON has the contract's
 * fields, the same seed writes byte-identical messages, the CSV has Intune's exact header and
 * one row per device, and bad flags exit with status 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"
#include "util/util.h"

static char dir[64];

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/gb-sim-cli-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    return gb_th_sh("rm -rf '%s'", dir) == 0 ? 0 : -1;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    gb_buf_t b;
    gb_buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        gb_buf_append(&b, chunk, n);
    }
    fclose(f);
    *len = b.len;
    return gb_buf_steal(&b, len);
}

static void test_sim_dry_run_summary_has_the_contract_fields(void **state)
{
    int rc = gb_th_sh("%s --devices 50 --slots 10 --seed 3 --mix 0.5 --summary %s/truth.json "
                      "--quiet",
                      GB_SIM_BIN, dir);
    assert_int_equal(rc, 0);
    char path[128];
    snprintf(path, sizeof(path), "%s/truth.json", dir);
    json_error_t err;
    json_t *t = json_load_file(path, 0, &err);
    if (t == NULL) {
        fail_msg("summary is not JSON: %s (line %d)", err.text, err.line);
    }
    static const char *const top[] = {"devices",      "green",      "red",           "delivered",
                                      "resealed",     "makespan_s", "mean_device_s", "by_status",
                                      "by_diagnosis", "settings",   "bytes"};
    for (size_t i = 0; i < GB_ARRAY_LEN(top); i++) {
        if (json_object_get(t, top[i]) == NULL) {
            fail_msg("summary lacks %s", top[i]);
        }
    }
    assert_int_equal(json_integer_value(json_object_get(t, "devices")), 50);
    assert_int_equal(json_integer_value(json_object_get(t, "green")) +
                         json_integer_value(json_object_get(t, "red")),
                     50);
    assert_true(json_number_value(json_object_get(t, "makespan_s")) > 0);
    json_t *pd = json_object_get(t, "per_device");
    assert_int_equal(json_array_size(pd), 50);
    size_t i;
    json_t *d;
    json_array_foreach(pd, i, d)
    {
        static const char *const keys[] = {
            "serial",    "status",      "diagnosis",           "stages",
            "bytes",     "attempts",    "device_setup_s",      "total_s",
            "mean_mbps", "concurrency", "device_preparation_s"};
        for (size_t k = 0; k < GB_ARRAY_LEN(keys); k++) {
            if (json_object_get(d, keys[k]) == NULL) {
                fail_msg("per_device[%zu] lacks %s", i, keys[k]);
            }
        }
        const char *status = json_string_value(json_object_get(d, "status"));
        assert_true(strcmp(status, "red") == 0 || strcmp(status, "resealed") == 0 ||
                    strcmp(status, "delivered") == 0);
        assert_true(json_is_integer(json_object_get(json_object_get(d, "bytes"), "total")));
        json_t *oobe = json_object_get(json_object_get(d, "stages"), "oobe");
        assert_true(json_is_number(json_object_get(oobe, "duration_s")));
    }
    json_decref(t);
}

static void test_sim_same_seed_writes_the_same_messages(void **state)
{
    for (int run = 0; run < 2; run++) {
        int rc = gb_th_sh("%s --devices 30 --seed 8 --mix 0.3 --messages %s/m%d.jsonl --quiet",
                          GB_SIM_BIN, dir, run);
        assert_int_equal(rc, 0);
    }
    char p0[128], p1[128];
    size_t n0 = 0, n1 = 0;
    snprintf(p0, sizeof(p0), "%s/m0.jsonl", dir);
    snprintf(p1, sizeof(p1), "%s/m1.jsonl", dir);
    char *a = slurp(p0, &n0), *b = slurp(p1, &n1);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(n0 > 10000);
    assert_int_equal(n0, n1);
    assert_memory_equal(a, b, n0);
    free(a);
    free(b);
}

static void test_sim_csv_has_the_exact_header_and_n_rows(void **state)
{
    int rc =
        gb_th_sh("%s --devices 20 --seed 4 --group-tag Lab --csv %s/fleet.csv", GB_SIM_BIN, dir);
    assert_int_equal(rc, 0);
    char path[128];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/fleet.csv", dir);
    char *csv = slurp(path, &len);
    assert_non_null(csv);
    char *save = NULL;
    char *line = strtok_r(csv, "\n", &save);
    assert_string_equal(line, "Device Serial Number,Windows Product ID,Hardware Hash,Group Tag,"
                              "Assigned User");
    int rows = 0;
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        int commas = 0;
        for (char *p = line; *p; p++) {
            commas += *p == ',';
        }
        assert_int_equal(commas, 4);
        assert_non_null(strstr(line, ",Lab,"));
        rows++;
    }
    assert_int_equal(rows, 20);
    free(csv);
}

static void test_sim_bad_flags_exit_2_and_help_lists_defaults(void **state)
{
    assert_int_equal(gb_th_sh("%s --devices 0 2>/dev/null", GB_SIM_BIN), 2);
    assert_int_equal(gb_th_sh("%s --bogus 2>/dev/null", GB_SIM_BIN), 2);
    assert_int_equal(
        gb_th_sh("%s --server https://example.invalid --token t 2>/dev/null", GB_SIM_BIN), 2);
    assert_int_equal(gb_th_sh("%s --help | grep -q -- '--uplink-mbps U'", GB_SIM_BIN), 0);
    assert_int_equal(gb_th_sh("%s --help | grep -q 'default: 1000'", GB_SIM_BIN), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sim_dry_run_summary_has_the_contract_fields, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sim_same_seed_writes_the_same_messages, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sim_csv_has_the_exact_header_and_n_rows, setup,
                                        teardown),
        cmocka_unit_test(test_sim_bad_flags_exit_2_and_help_lists_defaults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
