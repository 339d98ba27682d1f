/* test_domain_support: helpers the domain and protocol unit tests share (static, included by
 * each test). Scenario files (tests/data/domain/scenarios/NAME.jsonl) hold one JSON value a line:
 *   # comment
 *   {"ctx": {"serial": "...", "imported": bool, "hybrid_join": bool, "esp_timeout_min": n}}
 *   {"seq": 1, "at": "...", "type": "...", ...}       a message, as an agent sends it
 *   {"retry": "2026-11-24T10:00:00.000Z"}             the technician's retry action
 *   {"expect": {...}}                                  checked against the detail view here
 * Messages go through the server's path: one-message batches prepared by gb_msg_batch_prepare,
 * a store of seqs, and a rebuild from the sorted store when a lower seq arrives. An expectation
 * is a subset of the detail view: objects match on the keys given, arrays element by element;
 * "now" (RFC 3339, or "+Nm"/"+Ns" after the latest arrival) and "stall_timeout_s" set the view's
 * clock. */
#ifndef GB_TEST_DOMAIN_SUPPORT_H
#define GB_TEST_DOMAIN_SUPPORT_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "domain/domain.h"
#include "harness.h"
#include "protocol/protocol.h"

/* Helpers are static and may go unused by a given test. */
#define TH_FN static __attribute__((unused))

#define TH_BASE_MS 1795510800000LL /* 2026-11-24T09:00:00Z */

typedef enum th_step_kind { TH_MSG, TH_RETRY, TH_EXPECT } th_step_kind_t;

typedef struct th_step {
    th_step_kind_t kind;
    int line;
    gb_msg_t msg;   /* TH_MSG */
    int64_t at_ms;  /* TH_RETRY */
    json_t *expect; /* TH_EXPECT (owned) */
} th_step_t;

typedef struct th_scenario {
    char path[256];
    char serial[65];
    bool imported;
    bool hybrid_join;
    int esp_timeout_min;
    gb_arena_t arena; /* message strings */
    th_step_t *steps;
    size_t n_steps;
} th_scenario_t;

TH_FN void th_fail(const char *where, const char *fmt, ...) GB_PRINTF(2, 3);

TH_FN void th_fail(const char *where, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    print_error("%s: %s\n", where, msg);
    fail();
}

TH_FN char *th_read(const char *relpath, size_t *len)
{
    char *data = gb_th_read_data(relpath, len);
    if (data == NULL) {
        th_fail(relpath, "cannot read test data");
    }
    return data;
}

TH_FN void th_scenario_free(th_scenario_t *sc)
{
    for (size_t i = 0; i < sc->n_steps; i++) {
        if (sc->steps[i].expect != NULL) {
            json_decref(sc->steps[i].expect);
        }
    }
    free(sc->steps);
    gb_arena_dispose(&sc->arena);
    memset(sc, 0, sizeof(*sc));
}

TH_FN void th_scenario_load(th_scenario_t *sc, const char *relpath)
{
    size_t len;
    char *text = th_read(relpath, &len);
    size_t cap = 16;

    memset(sc, 0, sizeof(*sc));
    snprintf(sc->path, sizeof(sc->path), "%s", relpath);
    snprintf(sc->serial, sizeof(sc->serial), "%s", "PF3ABC12");
    sc->imported = true;
    gb_arena_init(&sc->arena);
    sc->steps = calloc(cap, sizeof(*sc->steps));

    int lineno = 0;
    char *line = text;
    while (line != NULL && *line != '\0') {
        char *nl = strchr(line, '\n');
        size_t n = nl != NULL ? (size_t)(nl - line) : strlen(line);
        lineno++;
        if (n == 0 || line[0] == '#') {
            line = nl != NULL ? nl + 1 : NULL;
            continue;
        }
        char where[320];
        snprintf(where, sizeof(where), "%s:%d", relpath, lineno);
        json_error_t jerr;
        json_t *v = json_loadb(line, n, 0, &jerr);
        if (v == NULL || !json_is_object(v)) {
            th_fail(where, "not a JSON object: %s", jerr.text);
        }
        if (sc->n_steps == cap) {
            cap *= 2;
            sc->steps = realloc(sc->steps, cap * sizeof(*sc->steps));
        }
        th_step_t *st = &sc->steps[sc->n_steps];
        memset(st, 0, sizeof(*st));
        st->line = lineno;
        json_t *ctx = json_object_get(v, "ctx");
        if (ctx != NULL) {
            json_t *x;
            if ((x = json_object_get(ctx, "serial")) != NULL) {
                snprintf(sc->serial, sizeof(sc->serial), "%s", json_string_value(x));
            }
            if ((x = json_object_get(ctx, "imported")) != NULL) {
                sc->imported = json_is_true(x);
            }
            if ((x = json_object_get(ctx, "hybrid_join")) != NULL) {
                sc->hybrid_join = json_is_true(x);
            }
            if ((x = json_object_get(ctx, "esp_timeout_min")) != NULL) {
                sc->esp_timeout_min = (int)json_integer_value(x);
            }
            json_decref(v);
        } else if (json_object_get(v, "expect") != NULL) {
            st->kind = TH_EXPECT;
            st->expect = json_incref(json_object_get(v, "expect"));
            json_decref(v);
            sc->n_steps++;
        } else if (json_object_get(v, "retry") != NULL) {
            const char *at = json_string_value(json_object_get(v, "retry"));
            st->kind = TH_RETRY;
            if (at == NULL || !gb_time_parse_rfc3339(at, strlen(at), &st->at_ms)) {
                th_fail(where, "bad retry time");
            }
            json_decref(v);
            sc->n_steps++;
        } else {
            gb_error_t err;
            gb_error_clear(&err);
            json_decref(v);
            st->kind = TH_MSG;
            if (gb_proto_decode_message(line, n, &sc->arena, &st->msg, &err) != 0) {
                th_fail(where, "message rejected: %s %s (%s)", err.code, err.field, err.message);
            }
            st->msg.index = (uint32_t)sc->n_steps;
            sc->n_steps++;
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    free(text);
}

TH_FN gb_apply_ctx_t th_ctx(const th_scenario_t *sc, int64_t received_ms)
{
    gb_apply_ctx_t ctx = {sc->esp_timeout_min, sc->hybrid_join, received_ms};
    return ctx;
}

TH_FN void th_dev_init(const th_scenario_t *sc, gb_dev_t *dev)
{
    gb_dev_init(dev, sc->serial);
    gb_dev_set_imported(dev, sc->imported);
    gb_dev_set_profile(dev, "Staging room", sc->hybrid_join);
    gb_dev_set_group_tag(dev, "STAGING");
}

/* ---- comparing JSON ---- */

TH_FN bool th_json_subset(json_t *want, json_t *got, char *path, size_t path_size, char *why,
                          size_t why_size)
{
    size_t plen = strlen(path);
    if (json_is_object(want)) {
        if (!json_is_object(got)) {
            snprintf(why, why_size, "expected an object");
            return false;
        }
        const char *k;
        json_t *v;
        json_object_foreach(want, k, v)
        {
            snprintf(path + plen, path_size - plen, ".%s", k);
            json_t *g = json_object_get(got, k);
            if (g == NULL) {
                snprintf(why, why_size, "missing");
                return false;
            }
            if (!th_json_subset(v, g, path, path_size, why, why_size)) {
                return false;
            }
            path[plen] = '\0';
        }
        return true;
    }
    if (json_is_array(want)) {
        if (!json_is_array(got) || json_array_size(got) != json_array_size(want)) {
            char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
            snprintf(why, why_size, "expected an array of %zu, got %s", json_array_size(want),
                     g ? g : "?");
            free(g);
            return false;
        }
        for (size_t i = 0; i < json_array_size(want); i++) {
            snprintf(path + plen, path_size - plen, "[%zu]", i);
            if (!th_json_subset(json_array_get(want, i), json_array_get(got, i), path, path_size,
                                why, why_size)) {
                return false;
            }
            path[plen] = '\0';
        }
        return true;
    }
    bool ok;
    if (json_is_number(want) && json_is_number(got)) {
        ok = fabs(json_number_value(want) - json_number_value(got)) < 1e-6;
    } else {
        ok = json_equal(want, got);
    }
    if (!ok) {
        char *w = json_dumps(want, JSON_ENCODE_ANY);
        char *g = json_dumps(got, JSON_ENCODE_ANY);
        snprintf(why, why_size, "expected %s, got %s", w ? w : "?", g ? g : "?");
        free(w);
        free(g);
    }
    return ok;
}

TH_FN json_t *th_detail(const gb_dev_t *dev, int64_t now_ms, int64_t stall_ms)
{
    gb_buf_t b;
    json_error_t jerr;
    gb_proto_view_opts_t opts = {now_ms, stall_ms, 0};
    gb_buf_init(&b);
    gb_proto_device_detail_json(dev, &opts, &b);
    json_t *v = json_loadb(b.data, b.len, 0, &jerr);
    if (v == NULL) {
        print_error("detail view is not JSON (%s): %s\n", jerr.text, b.data);
        fail();
    }
    gb_buf_dispose(&b);
    return v;
}

TH_FN void th_check_expect(const gb_dev_t *dev, json_t *expect, const char *where)
{
    int64_t now = GB_TIME_NONE;
    int64_t stall = 15 * 60 * 1000;
    json_t *want = json_deep_copy(expect);
    json_t *x;

    if ((x = json_object_get(want, "now")) != NULL) {
        const char *s = json_string_value(x);
        if (s[0] == '+') {
            long long n = strtoll(s + 1, NULL, 10);
            char unit = s[strlen(s) - 1];
            now = dev->last_arrival_ms + n * (unit == 'm' ? 60000 : 1000);
        } else if (!gb_time_parse_rfc3339(s, strlen(s), &now)) {
            th_fail(where, "bad now");
        }
        json_object_del(want, "now");
    }
    if ((x = json_object_get(want, "stall_timeout_s")) != NULL) {
        stall = json_integer_value(x) * 1000;
        json_object_del(want, "stall_timeout_s");
    }
    json_t *got = th_detail(dev, now, stall);
    char path[256] = "", why[512] = "";
    if (!th_json_subset(want, got, path, sizeof(path), why, sizeof(why))) {
        char *all = json_dumps(got, JSON_COMPACT);
        print_error("%s: %s: %s\nview: %s\n", where, path, why, all);
        free(all);
        fail();
    }
    json_decref(got);
    json_decref(want);
}

/* ---- the server's ingest path, modelled ---- */

typedef struct th_store {
    gb_msg_t *msgs;
    size_t n, cap;
    gb_action_mark_t *retries;
    size_t n_retries, cap_retries;
    size_t rebuilds;
} th_store_t;

TH_FN void th_store_free(th_store_t *st)
{
    free(st->msgs);
    free(st->retries);
    memset(st, 0, sizeof(*st));
}

TH_FN bool th_store_has(const th_store_t *st, uint64_t seq)
{
    for (size_t i = 0; i < st->n; i++) {
        if (st->msgs[i].seq == seq) {
            return true;
        }
    }
    return false;
}

TH_FN void th_store_add(th_store_t *st, const gb_msg_t *m)
{
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 64;
        st->msgs = realloc(st->msgs, st->cap * sizeof(*st->msgs));
    }
    st->msgs[st->n++] = *m;
}

/* Ingests one batch as the server does. Returns the number of messages newly stored. */
TH_FN size_t th_ingest(gb_dev_t *dev, th_store_t *st, const gb_apply_ctx_t *ctx, gb_msg_t *batch,
                       size_t n)
{
    bool replay = gb_msg_batch_prepare(dev, batch, &n);
    size_t added = 0;
    bool need_rebuild = false;

    for (size_t i = 0; i < n; i++) {
        if (th_store_has(st, batch[i].seq)) {
            continue;
        }
        th_store_add(st, &batch[i]);
        added++;
        if (batch[i].seq < dev->max_seq) {
            need_rebuild = true;
        }
    }
    if (!replay) {
        assert_false(need_rebuild);
    }
    if (need_rebuild) {
        gb_msg_t *copy = malloc((st->n ? st->n : 1) * sizeof(*copy));
        memcpy(copy, st->msgs, st->n * sizeof(*copy));
        gb_dev_rebuild(dev, ctx, copy, st->n, st->retries, st->n_retries);
        free(copy);
        st->rebuilds++;
    } else {
        for (size_t i = 0; i < n; i++) {
            if (batch[i].seq > dev->max_seq) {
                assert_int_equal(gb_dev_apply(dev, ctx, &batch[i]), 0);
            }
        }
    }
    return added;
}

TH_FN void th_store_retry(gb_dev_t *dev, th_store_t *st, int64_t at_ms)
{
    assert_int_equal(gb_dev_retry(dev, at_ms), 0);
    if (st->n_retries == st->cap_retries) {
        st->cap_retries = st->cap_retries ? st->cap_retries * 2 : 4;
        st->retries = realloc(st->retries, st->cap_retries * sizeof(*st->retries));
    }
    st->retries[st->n_retries++] = (gb_action_mark_t){.after_seq = dev->max_seq, .at_ms = at_ms};
}

/* Runs a scenario into dev (initialised here), checking every expectation. */
TH_FN void th_scenario_run(const th_scenario_t *sc, gb_dev_t *dev, bool check)
{
    th_store_t st;
    memset(&st, 0, sizeof(st));
    th_dev_init(sc, dev);
    for (size_t i = 0; i < sc->n_steps; i++) {
        const th_step_t *s = &sc->steps[i];
        char where[320];
        snprintf(where, sizeof(where), "%s:%d", sc->path, s->line);
        switch (s->kind) {
        case TH_MSG: {
            gb_msg_t m = s->msg;
            gb_apply_ctx_t ctx = th_ctx(sc, m.at_ms);
            th_ingest(dev, &st, &ctx, &m, 1);
            break;
        }
        case TH_RETRY:
            th_store_retry(dev, &st, s->at_ms);
            break;
        case TH_EXPECT:
            if (check) {
                th_check_expect(dev, s->expect, where);
            }
            break;
        }
    }
    th_store_free(&st);
}

TH_FN void th_run_file(const char *relpath, gb_dev_t *dev, bool check)
{
    th_scenario_t sc;
    th_scenario_load(&sc, relpath);
    th_scenario_run(&sc, dev, check);
    th_scenario_free(&sc);
}

/* ---- the scenario index ---- */

typedef struct th_row {
    char name[160];
    char stage_file[192];
    char event_file[192]; /* "" when the scenario has one form */
    char codes[160];      /* comma-separated catalogue codes, "" for none */
} th_row_t;

TH_FN size_t th_load_index(th_row_t **rows)
{
    size_t len, n = 0, cap = 64;
    char *text = th_read("domain/scenarios.tsv", &len);
    *rows = calloc(cap, sizeof(**rows));
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        char f[4][160];
        if (sscanf(line, "%159[^\t]\t%159[^\t]\t%159[^\t]\t%159s", f[0], f[1], f[2], f[3]) != 4) {
            th_fail("domain/scenarios.tsv", "bad row: %s", line);
        }
        if (n == cap) {
            cap *= 2;
            *rows = realloc(*rows, cap * sizeof(**rows));
        }
        th_row_t *r = &(*rows)[n++];
        snprintf(r->name, sizeof(r->name), "%s", f[0]);
        snprintf(r->stage_file, sizeof(r->stage_file), "domain/scenarios/%s", f[1]);
        if (strcmp(f[2], "-") == 0) {
            r->event_file[0] = '\0';
        } else {
            snprintf(r->event_file, sizeof(r->event_file), "domain/scenarios/%s", f[2]);
        }
        snprintf(r->codes, sizeof(r->codes), "%s", strcmp(f[3], "-") == 0 ? "" : f[3]);
    }
    free(text);
    return n;
}

/* The parts of the detail view both forms of a scenario must agree on. */
TH_FN void th_assert_same_outcome(const gb_dev_t *a, const gb_dev_t *b, const char *name)
{
    static const char *const keys[] = {
        "status",    "stage",    "stage_state", "attempt",          "timeline",   "attempts",
        "diagnosis", "warnings", "durations",   "first_time_right", "resealed_at"};
    json_t *ja = th_detail(a, GB_TIME_NONE, 0);
    json_t *jb = th_detail(b, GB_TIME_NONE, 0);
    for (size_t i = 0; i < GB_ARRAY_LEN(keys); i++) {
        json_t *va = json_object_get(ja, keys[i]);
        json_t *vb = json_object_get(jb, keys[i]);
        if (!json_equal(va, vb)) {
            char *sa = json_dumps(va, JSON_COMPACT | JSON_ENCODE_ANY);
            char *sb = json_dumps(vb, JSON_COMPACT | JSON_ENCODE_ANY);
            print_error("%s: %s differs between forms\n  stage messages: %s\n  Windows events: "
                        "%s\n",
                        name, keys[i], sa, sb);
            free(sa);
            free(sb);
            fail();
        }
    }
    json_decref(ja);
    json_decref(jb);
}

TH_FN char *th_snapshot(const gb_dev_t *dev)
{
    gb_buf_t b;
    gb_buf_init(&b);
    gb_proto_snapshot_encode(dev, &b);
    return gb_buf_steal(&b, NULL);
}

#endif
