/* options: glovebox-sim's settings table. One row per flag: its name, value, default, bounds and
 * help. Defaults are applied by parsing each row's default text with the row's own parser, so
 * the defaults --help prints are the defaults the program uses. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum kind {
    K_STR, /* char array (size from the row) */
    K_U32,
    K_U64,
    K_DBL,
    K_FLAG,   /* bool set to true, takes no value */
    K_CUSTOM, /* parsed by the row's function */
};

typedef int (*custom_fn)(gb_sim_options_t *o, const char *value, char *err, size_t n);

typedef struct row {
    const char *name;    /* without the leading "--" */
    const char *metavar; /* NULL for flags */
    enum kind kind;
    size_t offset;
    size_t size;     /* K_STR: the array's size */
    double lo, hi;   /* bounds for numbers */
    const char *def; /* default as text; NULL: none (zero, empty, off) */
    custom_fn fn;
    const char *help;
} row_t;

#define OFF(f)  offsetof(gb_sim_options_t, f)
#define MOFF(f) offsetof(gb_sim_options_t, model.f)
#define STR(f)  K_STR, OFF(f), sizeof(((gb_sim_options_t *)0)->f)
#define MSTR(f) K_STR, MOFF(f), sizeof(((gb_sim_options_t *)0)->model.f)

static int parse_start(gb_sim_options_t *o, const char *v, char *err, size_t n);
static int parse_faults(gb_sim_options_t *o, const char *v, char *err, size_t n);
static int parse_no_faults(gb_sim_options_t *o, const char *v, char *err, size_t n);
static int parse_stage_times(gb_sim_options_t *o, const char *v, char *err, size_t n);
static int parse_payload(gb_sim_options_t *o, const char *v, char *err, size_t n);
static int parse_winevents(gb_sim_options_t *o, const char *v, char *err, size_t n);
static int parse_no_rename(gb_sim_options_t *o, const char *v, char *err, size_t n);

#define DEFAULT_FAULTS                                                         \
    "tpm_attestation=0.01,device_object_missing=0.005,multiple_mdm=0.005,"     \
    "profile_unavailable=0.01,no_wired_network=0.01,app_install_failed=0.015," \
    "certificate_failed=0.005,component_update_error=0.03"

static const row_t rows[] = {
    /* the contract's flags */
    {"server", "URL", STR(server), 0, 0, NULL, NULL,
     "glovebox server, http://HOST[:PORT][/PREFIX]; without it the model runs alone (dry run)"},
    {"token", "TOKEN", STR(token), 0, 0, NULL, NULL, "agent-role bearer token for the server"},
    {"devices", "N", K_U32, MOFF(devices), 0, 1, 1000000, "100", NULL, "devices to provision"},
    {"slots", "K", K_U32, MOFF(slots), 0, 1, 16000, "40", NULL,
     "bench slots (wired ports); devices wait for a free one"},
    {"uplink-mbps", "U", K_DBL, MOFF(uplink_mbps), 0, 0.01, 1e7, "1000", NULL,
     "the room's internet uplink in Mbit/s, shared fairly by the downloads in progress"},
    {"seed", "S", K_U64, MOFF(seed), 0, 0, 0, "1", NULL,
     "random seed; the same seed and settings give byte-identical messages"},
    {"speed", "X", K_DBL, OFF(speed), 0, 0, 1e9, "0", NULL,
     "0: run the simulated clock as fast as possible; X: X times real time (live demo)"},
    {"winevents", NULL, K_CUSTOM, 0, 0, 0, 0, NULL, parse_winevents,
     "devices report Windows events instead of stage messages (same as --mix 1)"},
    {"csv", "FILE", STR(csv), 0, 0, NULL, NULL,
     "write the fleet's Autopilot hardware-hash CSV to FILE and exit"},
    {"summary", "FILE", STR(summary), 0, 0, NULL, NULL,
     "write the ground truth as JSON to FILE at the end"},
    /* reporting and transport */
    {"mix", "P", K_DBL, MOFF(winevent_share), 0, 0, 1, "0", NULL,
     "share of devices that report Windows events only (the rest send stage messages)"},
    {"dry-run", NULL, K_FLAG, OFF(dry_run), 0, 0, 0, NULL, NULL,
     "run the model only, even with --server"},
    {"messages", "FILE", STR(messages), 0, 0, NULL, NULL,
     "also write every message as a JSON line {\"serial\":...,\"message\":{...}} to FILE"},
    {"batch", "M", K_U32, OFF(batch), 0, 1, 500, "100", NULL, "messages per request at most"},
    {"connections", "C", K_U32, OFF(connections), 0, 1, 1024, "8", NULL,
     "keep-alive connections to the server"},
    {"max-queued", "N", K_U32, OFF(max_queued), 0, 100, 100000000, "200000", NULL,
     "unacknowledged messages the model may run ahead by (bounds memory at --speed 0)"},
    {"timeout", "S", K_DBL, OFF(timeout_s), 0, 0.1, 3600, "30", NULL,
     "seconds one request may take before it is retried on a new connection"},
    {"give-up", "S", K_DBL, OFF(give_up_s), 0, 1, 1e7, "300", NULL,
     "stop (exit 1) when the server has acknowledged nothing for S seconds while work waits"},
    {"quiet", NULL, K_FLAG, OFF(quiet), 0, 0, 0, NULL, NULL, "print no summary on stdout"},
    {"log-level", "LEVEL", STR(log_level), 0, 0, "warn", NULL, "debug, info, warn or error"},
    /* the room */
    {"start", "TIME", K_CUSTOM, 0, 0, 0, 0, "2026-11-24T08:00:00.000Z", parse_start,
     "the simulated clock's start (RFC 3339, or \"now\" for a live demo); messages' `at` "
     "count from here"},
    {"technicians", "T", K_U32, MOFF(technicians), 0, 0, 100000, "0", NULL,
     "technicians serving the bench (0: one per slot, nobody waits for a technician)"},
    {"tech-seconds", "S", K_DBL, MOFF(tech_s), 0, 0, 86400, "120", NULL,
     "technician time to unbox, cable and start a device (drawn in [0.75 S, 1.5 S])"},
    {"retry-delay", "S", K_DBL, MOFF(retry_delay_s), 0, 0, 86400 * 7, "900", NULL,
     "technician time to diagnose and reset a red device before attempt n+1"},
    {"reseal-wait", "S", K_DBL, MOFF(reseal_wait_s), 0, 0, 86400, "120", NULL,
     "typical wait until a technician clicks Reseal on a green screen"},
    {"max-attempts", "N", K_U32, MOFF(max_attempts), 0, 1, 50, "2", NULL,
     "attempts per device before a red one is set aside"},
    {"nic-mbps", "M", K_DBL, MOFF(nic_mbps), 0, 0, 1e6, "0", NULL,
     "every device's link speed in Mbit/s (0: by hardware model, 100 or 1000)"},
    {"peer-share", "P", K_DBL, MOFF(peer_share), 0, 0, 1, "0.2", NULL,
     "share of bytes Delivery Optimization gets from LAN peers (not over the uplink)"},
    {"cache-share", "P", K_DBL, MOFF(cache_share), 0, 0, 1, "0", NULL,
     "share of bytes served by a Connected Cache on the LAN (not over the uplink)"},
    {"payload", "SPEC", K_CUSTOM, 0, 0, 0, 0, "standard", parse_payload,
     "apps tracked in device setup: standard (2.6 GB), light, heavy (6.3 GB), or "
     "\"Name=MB[@install_s],...\""},
    {"esp-timeout-min", "M", K_DBL, MOFF(esp_timeout_min), 0, 1, 10000, "60", NULL,
     "ESP timeout: device setup running longer turns red esp_timeout"},
    {"fault-rate", "LIST", K_CUSTOM, 0, 0, 0, 0, DEFAULT_FAULTS, parse_faults,
     "failure rates per attempt, name=p,... (tpm_attestation is per device: its hardware)"},
    {"no-faults", NULL, K_CUSTOM, 0, 0, 0, 0, NULL, parse_no_faults, "set every fault rate to 0"},
    {"stage-time", "LIST", K_CUSTOM, 0, 0, 0, 0, NULL, parse_stage_times,
     "stage time distributions, stage=lo:mode:hi seconds,... (README lists the built-ins; "
     "device_setup is its fixed part before the apps)"},
    {"no-rename", NULL, K_CUSTOM, 0, 0, 0, 0, NULL, parse_no_rename,
     "the profile has no device-name template: no device_rename stage"},
    {"handover-share", "P", K_DBL, MOFF(handover_share), 0, 0, 1, "0.5", NULL,
     "share of resealed devices whose user flow runs later, through to the desktop"},
    {"handover-wait-min", "M", K_DBL, MOFF(handover_wait_min), 0, 90, 1e6, "90", NULL,
     "minimum minutes between reseal and the user flow (at least 90)"},
    {"handover-spread-min", "M", K_DBL, MOFF(handover_spread_min), 0, 0, 1e6, "120", NULL,
     "extra minutes before the user flow, uniform in [0, M]"},
    {"sample-seconds", "S", K_DBL, MOFF(sample_s), 0, 1, 3600, "30", NULL,
     "period of download samples while an app downloads (and one at each download's end)"},
    {"heartbeat-seconds", "S", K_DBL, MOFF(heartbeat_s), 0, 0, 86400, "120", NULL,
     "heartbeat after S seconds of silence while a flow runs (0: never)"},
    {"serial-prefix", "P", MSTR(serial_prefix), 0, 0, NULL, NULL,
     "prefix for every serial (run twice against one database without clashes)"},
    {"tenant-domain", "D", MSTR(tenant_domain), 0, 0, "contoso.onmicrosoft.com", NULL,
     "tenant domain quoted in join events"},
    {"group-tag", "TAG", STR(group_tag), 0, 0, NULL, NULL, "Group Tag column of the CSV"},
    {"hash-bytes", "N", K_U32, OFF(hash_bytes), 0, 16, 8192, "256", NULL,
     "raw bytes of each CSV hardware hash (real ones are about 4000)"},
    {"help", NULL, K_FLAG, OFF(help), 0, 0, 0, NULL, NULL, "print this help and exit"},
    {"version", NULL, K_FLAG, OFF(version), 0, 0, 0, NULL, NULL, "print the version and exit"},
};

static const row_t *find_row(const char *name, size_t len)
{
    for (size_t i = 0; i < GB_ARRAY_LEN(rows); i++) {
        if (strlen(rows[i].name) == len && memcmp(rows[i].name, name, len) == 0) {
            return &rows[i];
        }
    }
    return NULL;
}

static int fail(char *err, size_t n, const char *fmt, ...) GB_PRINTF(3, 4);

/* Writes the sentence into err and returns -1, so parsers can `return fail(...)`. */
static int fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static int parse_double(const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || x != x) {
        return -1;
    }
    *out = x;
    return 0;
}

static int set_value(gb_sim_options_t *o, const row_t *r, const char *v, char *err, size_t n)
{
    char *base = (char *)o;

    switch (r->kind) {
    case K_STR:
        if (strlen(v) >= r->size) {
            return fail(err, n, "--%s: value too long (%s)", r->name, v);
        }
        memcpy(base + r->offset, v, strlen(v) + 1);
        return 0;
    case K_FLAG:
        *(bool *)(base + r->offset) = true;
        return 0;
    case K_CUSTOM:
        return r->fn(o, v, err, n);
    case K_U32:
    case K_U64: {
        char *end;
        errno = 0;
        if (v[0] == '-' || v[0] == '\0') {
            return fail(err, n, "--%s: not a non-negative integer: %s", r->name, v);
        }
        unsigned long long x = strtoull(v, &end, 10);
        if (errno != 0 || *end != '\0') {
            return fail(err, n, "--%s: not a non-negative integer: %s", r->name, v);
        }
        if (r->kind == K_U32) {
            if ((double)x < r->lo || (double)x > r->hi) {
                return fail(err, n, "--%s: out of range: %s (allowed %.0f to %.0f)", r->name, v,
                            r->lo, r->hi);
            }
            *(uint32_t *)(base + r->offset) = (uint32_t)x;
        } else {
            *(uint64_t *)(base + r->offset) = (uint64_t)x;
        }
        return 0;
    }
    case K_DBL: {
        double x;
        if (parse_double(v, &x) != 0) {
            return fail(err, n, "--%s: not a number: %s", r->name, v);
        }
        if (x < r->lo || x > r->hi) {
            return fail(err, n, "--%s: out of range: %s (allowed %g to %g)", r->name, v, r->lo,
                        r->hi);
        }
        *(double *)(base + r->offset) = x;
        return 0;
    }
    }
    return -1;
}

/* ---- custom parsers ---- */

static int parse_start(gb_sim_options_t *o, const char *v, char *err, size_t n)
{
    int64_t ms;
    if (strcmp(v, "now") == 0) {
        /* A live demo wants device times near the server's clock; whole seconds keep the
         * simulated times readable. */
        o->model.start_ms = gb_time_now_ms() / 1000 * 1000;
        return 0;
    }
    if (!gb_time_parse_rfc3339(v, strlen(v), &ms)) {
        return fail(err, n, "--%s: not an RFC 3339 time: %s", "start", v);
    }
    o->model.start_ms = ms;
    return 0;
}

static int parse_winevents(gb_sim_options_t *o, const char *v, char *err, size_t n)
{
    GB_UNUSED(v);
    GB_UNUSED(err);
    GB_UNUSED(n);
    o->model.winevent_share = 1.0;
    return 0;
}

static int parse_no_rename(gb_sim_options_t *o, const char *v, char *err, size_t n)
{
    GB_UNUSED(v);
    GB_UNUSED(err);
    GB_UNUSED(n);
    o->model.rename = false;
    return 0;
}

static int parse_no_faults(gb_sim_options_t *o, const char *v, char *err, size_t n)
{
    GB_UNUSED(v);
    GB_UNUSED(err);
    GB_UNUSED(n);
    for (int i = 0; i < GB_SIM_FAULT_COUNT; i++) {
        o->model.fault_rate[i] = 0;
    }
    return 0;
}

/* Calls fn for each "key=value" item of a comma-separated list. */
static int each_item(const char *list, const char *flag, char *err, size_t n,
                     int (*fn)(void *ctx, const char *key, size_t klen, const char *val, char *err,
                               size_t n),
                     void *ctx)
{
    char item[256];
    const char *p = list;

    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= sizeof(item)) {
            return fail(err, n, "--%s: bad item in %s", flag, list);
        }
        memcpy(item, p, len);
        item[len] = '\0';
        char *eq = strchr(item, '=');
        if (eq == NULL) {
            return fail(err, n, "--%s: expected name=value, got %s", flag, item);
        }
        *eq = '\0';
        if (fn(ctx, item, (size_t)(eq - item), eq + 1, err, n) != 0) {
            return -1;
        }
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    return 0;
}

static int fault_item(void *ctx, const char *key, size_t klen, const char *val, char *err, size_t n)
{
    gb_sim_options_t *o = ctx;
    gb_sim_fault_t f;
    double x;
    if (!gb_sim_fault_parse(key, klen, &f) || !gb_sim_fault_has_rate(f)) {
        return fail(err, n, "--%s: unknown fault %s", "fault-rate", key);
    }
    if (parse_double(val, &x) != 0 || x < 0 || x > 1) {
        return fail(err, n, "--%s: rate must be within 0..1: %s", "fault-rate", val);
    }
    o->model.fault_rate[f] = x;
    return 0;
}

static int parse_faults(gb_sim_options_t *o, const char *v, char *err, size_t n)
{
    if (each_item(v, "fault-rate", err, n, fault_item, o) != 0) {
        return -1;
    }
    double sum = 0;
    for (int i = GB_SIM_FAULT_DEVICE_OBJECT_MISSING; i <= GB_SIM_FAULT_CERTIFICATE_FAILED; i++) {
        sum += o->model.fault_rate[i];
    }
    if (sum > 1.0) {
        return fail(err, n, "--%s: the rates of %s add up to more than 1", "fault-rate",
                    "device_object_missing .. certificate_failed");
    }
    return 0;
}

static int stage_item(void *ctx, const char *key, size_t klen, const char *val, char *err, size_t n)
{
    gb_sim_options_t *o = ctx;
    gb_sim_stage_t st;
    gb_sim_dist_t d;
    char extra;
    if (!gb_sim_stage_parse(key, klen, &st)) {
        return fail(err, n, "--%s: unknown stage %s", "stage-time", key);
    }
    if (sscanf(val, "%lf:%lf:%lf%c", &d.lo, &d.mode, &d.hi, &extra) != 3 || d.lo < 0 ||
        d.mode < d.lo || d.hi < d.mode || d.hi > 1e6) {
        return fail(err, n, "--%s: expected lo:mode:hi seconds with lo <= mode <= hi, got %s",
                    "stage-time", val);
    }
    o->model.stage_time[st] = d;
    return 0;
}

static int parse_stage_times(gb_sim_options_t *o, const char *v, char *err, size_t n)
{
    return each_item(v, "stage-time", err, n, stage_item, o);
}

static int parse_payload(gb_sim_options_t *o, const char *v, char *err, size_t n)
{
    return gb_sim_payload_parse(&o->model, v, err, n);
}

int gb_sim_payload_parse(gb_sim_config_t *cfg, const char *spec, char *err, size_t err_size)
{
    if (gb_sim__payload_named(cfg, spec)) {
        return 0;
    }
    if (strchr(spec, '=') == NULL) {
        return fail(err, err_size, "--%s: unknown payload %s (standard, light, heavy or a list)",
                    "payload", spec);
    }
    gb_sim_config_t tmp = *cfg;
    tmp.n_apps = 0;
    const char *p = spec;
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[256];
        if (len == 0 || len >= sizeof(item)) {
            return fail(err, err_size, "--%s: bad item in %s", "payload", spec);
        }
        if (tmp.n_apps == GB_SIM_MAX_APPS) {
            return fail(err, err_size, "--payload: more than %d apps", GB_SIM_MAX_APPS);
        }
        memcpy(item, p, len);
        item[len] = '\0';
        char *eq = strrchr(item, '=');
        if (eq == NULL || eq == item || (size_t)(eq - item) >= GB_SIM_APP_NAME_MAX) {
            return fail(err, err_size, "--%s: expected Name=MB[@install_s], got %s", "payload",
                        item);
        }
        *eq = '\0';
        char *at = strchr(eq + 1, '@');
        double mb, inst;
        if (at != NULL) {
            *at = '\0';
        }
        if (parse_double(eq + 1, &mb) != 0 || mb < 0 || mb > 1e7) {
            return fail(err, err_size, "--%s: bad size in MB for %s", "payload", item);
        }
        if (at != NULL) {
            if (parse_double(at + 1, &inst) != 0 || inst < 0 || inst > 1e6) {
                return fail(err, err_size, "--%s: bad install seconds for %s", "payload", item);
            }
        } else {
            inst = 30 + 0.2 * mb; /* a rough rule: bigger packages take longer to install */
        }
        gb_sim_app_t *a = &tmp.apps[tmp.n_apps++];
        memcpy(a->name, item, strlen(item) + 1); /* shorter than the name array: checked above */
        a->bytes = (uint64_t)(mb * 1e6 + 0.5);
        a->install = (gb_sim_dist_t){0.75 * inst, inst, 1.5 * inst};
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    snprintf(tmp.payload, sizeof(tmp.payload), "custom");
    *cfg = tmp;
    return 0;
}

/* ---- the public face ---- */

void gb_sim_options_defaults(gb_sim_options_t *o)
{
    char err[256];

    memset(o, 0, sizeof(*o));
    o->model.rename = true;
    o->model.max_attempts = 2;
    gb_sim__default_stage_times(&o->model);
    for (size_t i = 0; i < GB_ARRAY_LEN(rows); i++) {
        if (rows[i].def != NULL) {
            int rc = set_value(o, &rows[i], rows[i].def, err, sizeof(err));
            GB_ASSERT(rc == 0); /* a default that does not parse is a bug in the table */
        }
    }
}

int gb_sim_options_parse(gb_sim_options_t *o, int argc, char **argv, char *err, size_t err_size)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            return fail(err, err_size, "unexpected argument %s (flags start with --)", a);
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const row_t *r = find_row(name, len);
        if (r == NULL) {
            return fail(err, err_size, "unknown flag %s (see --help)", a);
        }
        const char *value = NULL;
        if (r->metavar == NULL) {
            if (eq != NULL) {
                return fail(err, err_size, "--%s takes no value", r->name);
            }
            value = "";
        } else if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return fail(err, err_size, "--%s needs a value (%s)", r->name, r->metavar);
        }
        if (set_value(o, r, value, err, err_size) != 0) {
            return -1;
        }
    }
    if (o->model.peer_share + o->model.cache_share > 1.0 + 1e-12) {
        return fail(err, err_size, "--peer-share plus --cache-share exceed 1");
    }
    if (o->server[0] != '\0' && o->token[0] == '\0' && !o->dry_run) {
        return fail(err, err_size, "--server needs --token (an agent-role token)");
    }
    gb_log_level_t level;
    if (!gb_log_level_parse(o->log_level, &level)) {
        return fail(err, err_size, "--log-level: expected debug, info, warn or error, got %s",
                    o->log_level);
    }
    return 0;
}

void gb_sim_options_help(gb_buf_t *out)
{
    gb_buf_append_str(
        out, "usage: glovebox-sim --server URL --token TOKEN --devices N [--slots K]\n"
             "                    [--uplink-mbps U] [--seed S] [--speed X] [--winevents]\n"
             "                    [--csv FILE] [--summary FILE] [more flags below]\n\n"
             "Simulates a staging room pre-provisioning N Windows Autopilot devices\n"
             "(WhiteGlove) and reports them to a glovebox server through the agent protocol.\n"
             "Without --server it runs the model alone and prints the summary.\n"
             "Exit status: 0 when every message was acknowledged (or a dry run), 1 when the\n"
             "server refused or could not be reached, 2 on a usage error.\n\n");
    for (size_t i = 0; i < GB_ARRAY_LEN(rows); i++) {
        const row_t *r = &rows[i];
        char head[64];
        snprintf(head, sizeof(head), "--%s%s%s", r->name, r->metavar ? " " : "",
                 r->metavar ? r->metavar : "");
        gb_buf_appendf(out, "  %-26s %s", head, r->help);
        if (r->def != NULL) {
            gb_buf_appendf(out, "\n  %-26s default: %s", "", r->def);
        } else if (r->kind == K_STR) {
            gb_buf_appendf(out, "\n  %-26s default: none", "");
        } else if (r->kind == K_CUSTOM && r->metavar != NULL) {
            gb_buf_appendf(out, "\n  %-26s default: the built-in table below", "");
        } else if (r->kind == K_FLAG || r->metavar == NULL) {
            gb_buf_appendf(out, "\n  %-26s default: off", "");
        }
        gb_buf_append_str(out, "\n");
    }
    gb_sim_config_t c;
    gb_sim__default_stage_times(&c);
    gb_buf_append_str(out, "\nBuilt-in stage times, seconds lo:mode:hi (--stage-time):\n");
    for (int s = 0; s < GB_SIM_STAGE_COUNT; s++) {
        gb_buf_appendf(out, "  %-24s %g:%g:%g\n", gb_sim_stage_id((gb_sim_stage_t)s),
                       c.stage_time[s].lo, c.stage_time[s].mode, c.stage_time[s].hi);
    }
}
