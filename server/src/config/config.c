/* config: the settings table and the code generated from it (parse, validate, help).
 * Each row names the field it fills by offset, so adding a setting is one row here and one
 * field in gb_config_t. */
#include "config/config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum setting_type {
    T_STRING,   /* char * */
    T_SIZE,     /* size_t, bytes; suffixes K, M, G (powers of 1024) */
    T_UINT,     /* unsigned */
    T_DURATION, /* unsigned milliseconds; suffixes ms, s, m, h; a bare number is milliseconds */
    T_LOGLEVEL, /* gb_log_level_t */
} setting_type_t;

typedef struct setting {
    const char *flag; /* without the leading "--" */
    const char *env;
    setting_type_t type;
    size_t offset;
    const char *def;
    unsigned long long min, max; /* for numbers; ignored for strings */
    const char *help;
} setting_t;

#define F(field) offsetof(gb_config_t, field)
#define KIB      1024ULL
#define MIB      (1024ULL * 1024ULL)
#define SEC      1000ULL
#define MIN      (60ULL * 1000ULL)

static const setting_t settings[] = {
    {"listen", "GLOVEBOX_LISTEN", T_STRING, F(listen), "127.0.0.1:8080", 0, 0,
     "address and port to listen on (host:port, [v6]:port; port 0 picks a free one)"},
    {"database-url", "GLOVEBOX_DATABASE_URL", T_STRING, F(database_url), "postgresql:///glovebox",
     0, 0, "PostgreSQL connection (libpq URI or key=value conninfo)"},
    {"web-dir", "GLOVEBOX_WEB_DIR", T_STRING, F(web_dir), "web", 0, 0,
     "directory of the static web view"},
    {"max-body", "GLOVEBOX_MAX_BODY", T_SIZE, F(max_body_bytes), "1M", KIB, 1024 * MIB,
     "largest request body; larger ones get 413"},
    {"max-import", "GLOVEBOX_MAX_IMPORT", T_SIZE, F(max_import_bytes), "512M", KIB, 4096 * MIB,
     "largest Autopilot CSV a device import takes (streamed, never held whole)"},
    {"max-header", "GLOVEBOX_MAX_HEADER", T_SIZE, F(max_header_bytes), "16K", KIB, MIB,
     "largest request line plus headers; larger ones get 431"},
    {"max-connections", "GLOVEBOX_MAX_CONNECTIONS", T_UINT, F(max_connections), "10000", 1, 1000000,
     "open client connections at most; further ones are refused"},
    {"header-timeout", "GLOVEBOX_HEADER_TIMEOUT", T_DURATION, F(header_timeout_ms), "10s", 100,
     10 * MIN, "time allowed for a request's line and headers to arrive"},
    {"body-timeout", "GLOVEBOX_BODY_TIMEOUT", T_DURATION, F(body_timeout_ms), "30s", 100, 60 * MIN,
     "time allowed for a request's body (an import: the longest pause in it)"},
    {"idle-timeout", "GLOVEBOX_IDLE_TIMEOUT", T_DURATION, F(idle_timeout_ms), "60s", 100, 60 * MIN,
     "keep-alive connection closed after this long without a request"},
    {"write-timeout", "GLOVEBOX_WRITE_TIMEOUT", T_DURATION, F(write_timeout_ms), "30s", 100,
     60 * MIN, "a response not taken by the client within this closes the connection"},
    {"db-pool", "GLOVEBOX_DB_POOL", T_UINT, F(db_pool_size), "4", 1, 64, "PostgreSQL connections"},
    {"db-queue", "GLOVEBOX_DB_QUEUE", T_UINT, F(db_queue_max), "10000", 1, 1000000,
     "queries waiting for a connection at most; beyond it requests get 503"},
    {"db-connect-timeout", "GLOVEBOX_DB_CONNECT_TIMEOUT", T_DURATION, F(db_connect_timeout_ms),
     "5s", 100, 10 * MIN, "time allowed to connect to PostgreSQL"},
    {"db-query-timeout", "GLOVEBOX_DB_QUERY_TIMEOUT", T_DURATION, F(db_query_timeout_ms), "30s",
     100, 60 * MIN, "statement_timeout of the server's queries"},
    {"token-reload", "GLOVEBOX_TOKEN_RELOAD", T_DURATION, F(token_reload_ms), "5s", 100, 60 * MIN,
     "API tokens are re-read this often (a revoked token stops working within it)"},
    {"stall-timeout", "GLOVEBOX_STALL_TIMEOUT", T_DURATION, F(stall_timeout_ms), "15m", SEC,
     24 * 60 * MIN, "a provisioning device silent this long is marked stalled"},
    {"stream-max-subscribers", "GLOVEBOX_STREAM_MAX_SUBSCRIBERS", T_UINT, F(stream_max_subscribers),
     "1000", 1, 100000, "live-stream (SSE) subscribers at most"},
    {"stream-buffer", "GLOVEBOX_STREAM_BUFFER", T_SIZE, F(stream_buffer_bytes), "1M", 4 * KIB,
     256 * MIB, "bytes waiting for a slow live-stream subscriber before it is dropped"},
    {"stream-heartbeat", "GLOVEBOX_STREAM_HEARTBEAT", T_DURATION, F(stream_heartbeat_ms), "15s",
     SEC, 10 * MIN, "a live stream with nothing to send gets a heartbeat this often"},
    {"shutdown-timeout", "GLOVEBOX_SHUTDOWN_TIMEOUT", T_DURATION, F(shutdown_timeout_ms), "10s",
     100, 10 * MIN, "on SIGINT/SIGTERM, time given to requests in flight before exiting"},
    {"log-level", "GLOVEBOX_LOG_LEVEL", T_LOGLEVEL, F(log_level), "info", 0, 0,
     "debug, info, warn or error"},
};

static void *field_ptr(gb_config_t *cfg, const setting_t *s)
{
    return (char *)cfg + s->offset;
}

/* Splits "123K" into a number and a lower-cased suffix; false when the number is malformed. */
static bool split_number(const char *v, unsigned long long *num, const char **suffix)
{
    char *end;
    if (v[0] < '0' || v[0] > '9') {
        return false;
    }
    errno = 0;
    *num = strtoull(v, &end, 10);
    if (errno != 0) {
        return false;
    }
    *suffix = end;
    return true;
}

static bool scale(unsigned long long *v, unsigned long long by)
{
    if (*v > ULLONG_MAX / by) {
        return false;
    }
    *v *= by;
    return true;
}

static bool parse_number(const setting_t *s, const char *v, unsigned long long *out)
{
    unsigned long long n;
    const char *suf;

    if (!split_number(v, &n, &suf)) {
        return false;
    }
    if (s->type == T_SIZE) {
        if (strcmp(suf, "K") == 0 || strcmp(suf, "k") == 0) {
            return scale(&n, KIB) && (*out = n, true);
        }
        if (strcmp(suf, "M") == 0 || strcmp(suf, "m") == 0) {
            return scale(&n, MIB) && (*out = n, true);
        }
        if (strcmp(suf, "G") == 0 || strcmp(suf, "g") == 0) {
            return scale(&n, 1024 * MIB) && (*out = n, true);
        }
    } else if (s->type == T_DURATION) {
        if (strcmp(suf, "ms") == 0) {
            suf = "";
        } else if (strcmp(suf, "s") == 0) {
            return scale(&n, SEC) && (*out = n, true);
        } else if (strcmp(suf, "m") == 0) {
            return scale(&n, MIN) && (*out = n, true);
        } else if (strcmp(suf, "h") == 0) {
            return scale(&n, 60 * MIN) && (*out = n, true);
        }
    }
    if (*suf != '\0') {
        return false;
    }
    *out = n;
    return true;
}

static const char *type_hint(setting_type_t t)
{
    switch (t) {
    case T_SIZE:
        return "a size in bytes (suffix K, M or G)";
    case T_DURATION:
        return "a duration (suffix ms, s, m or h; a bare number is milliseconds)";
    case T_UINT:
        return "a whole number";
    case T_LOGLEVEL:
        return "debug, info, warn or error";
    default:
        return "a value";
    }
}

static void format_bound(const setting_t *s, unsigned long long v, char *out, size_t n)
{
    if (s->type == T_SIZE && v % MIB == 0) {
        snprintf(out, n, "%lluM", v / MIB);
    } else if (s->type == T_SIZE && v % KIB == 0) {
        snprintf(out, n, "%lluK", v / KIB);
    } else if (s->type == T_DURATION && v % (60 * MIN) == 0 && v >= 60 * MIN) {
        snprintf(out, n, "%lluh", v / (60 * MIN));
    } else if (s->type == T_DURATION && v % MIN == 0 && v >= MIN) {
        snprintf(out, n, "%llum", v / MIN);
    } else if (s->type == T_DURATION && v % SEC == 0) {
        snprintf(out, n, "%llus", v / SEC);
    } else if (s->type == T_DURATION) {
        snprintf(out, n, "%llums", v);
    } else {
        snprintf(out, n, "%llu", v);
    }
}

/* Sets one setting from text; origin names where it came from, for the error message. */
static int apply(gb_config_t *cfg, const setting_t *s, const char *value, const char *origin,
                 char *err, size_t errlen)
{
    void *p = field_ptr(cfg, s);
    unsigned long long n;
    char lo[32], hi[32];

    switch (s->type) {
    case T_STRING:
        if (value[0] == '\0') {
            snprintf(err, errlen, "%s: must not be empty", origin);
            return GB_EINVAL;
        }
        free(*(char **)p);
        *(char **)p = gb_xstrdup(value);
        return 0;
    case T_LOGLEVEL:
        if (!gb_log_level_parse(value, (gb_log_level_t *)p)) {
            snprintf(err, errlen, "%s: '%s' is not %s", origin, value, type_hint(s->type));
            return GB_EINVAL;
        }
        return 0;
    default:
        break;
    }
    if (!parse_number(s, value, &n)) {
        snprintf(err, errlen, "%s: '%s' is not %s", origin, value, type_hint(s->type));
        return GB_EINVAL;
    }
    if (n < s->min || n > s->max) {
        format_bound(s, s->min, lo, sizeof(lo));
        format_bound(s, s->max, hi, sizeof(hi));
        snprintf(err, errlen, "%s: '%s' is out of range (%s to %s)", origin, value, lo, hi);
        return GB_EINVAL;
    }
    if (s->type == T_SIZE) {
        *(size_t *)p = (size_t)n;
    } else {
        *(unsigned *)p = (unsigned)n;
    }
    return 0;
}

void gb_config_init(gb_config_t *cfg)
{
    char err[256];
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < GB_ARRAY_LEN(settings); i++) {
        /* Defaults are part of the table and checked by the unit tests. */
        int rc = apply(cfg, &settings[i], settings[i].def, settings[i].flag, err, sizeof(err));
        GB_ASSERT(rc == 0);
    }
}

void gb_config_dispose(gb_config_t *cfg)
{
    for (size_t i = 0; i < GB_ARRAY_LEN(settings); i++) {
        if (settings[i].type == T_STRING) {
            char **p = field_ptr(cfg, &settings[i]);
            free(*p);
            *p = NULL;
        }
    }
}

static const setting_t *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < GB_ARRAY_LEN(settings); i++) {
        if (strlen(settings[i].flag) == len && memcmp(settings[i].flag, name, len) == 0) {
            return &settings[i];
        }
    }
    return NULL;
}

int gb_config_load(gb_config_t *cfg, int argc, char **argv, const char *(*getenv_fn)(const char *),
                   char **rest, int *nrest, char *err, size_t errlen)
{
    char origin[128];
    int rc;

    *nrest = 0;
    for (size_t i = 0; i < GB_ARRAY_LEN(settings); i++) {
        const char *v = getenv_fn != NULL ? getenv_fn(settings[i].env) : NULL;
        if (v != NULL) {
            snprintf(origin, sizeof(origin), "%s", settings[i].env);
            rc = apply(cfg, &settings[i], v, origin, err, errlen);
            if (rc < 0) {
                return rc;
            }
        }
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            while (++i < argc) {
                rest[(*nrest)++] = argv[i];
            }
            break;
        }
        if (strncmp(a, "--", 2) != 0) {
            rest[(*nrest)++] = argv[i];
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const setting_t *s = find_flag(name, nlen);
        if (s == NULL) {
            /* Not a setting: the subcommand may know it (e.g. token create --role). */
            rest[(*nrest)++] = argv[i];
            continue;
        }
        const char *value;
        if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            snprintf(err, errlen, "--%s needs a value", s->flag);
            return GB_EINVAL;
        }
        snprintf(origin, sizeof(origin), "--%s", s->flag);
        rc = apply(cfg, s, value, origin, err, errlen);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

static void bounds_text(const setting_t *s, char *out, size_t n)
{
    char lo[32], hi[32];
    if (s->type == T_STRING || s->type == T_LOGLEVEL) {
        out[0] = '\0';
        return;
    }
    format_bound(s, s->min, lo, sizeof(lo));
    format_bound(s, s->max, hi, sizeof(hi));
    snprintf(out, n, "%s..%s", lo, hi);
}

void gb_config_write_help(gb_buf_t *out)
{
    char bounds[80];
    for (size_t i = 0; i < GB_ARRAY_LEN(settings); i++) {
        const setting_t *s = &settings[i];
        bounds_text(s, bounds, sizeof(bounds));
        gb_buf_appendf(out, "  --%-20s %s\n", s->flag, s->help);
        gb_buf_appendf(out, "  %-22s env %s, default %s%s%s\n", "", s->env, s->def,
                       bounds[0] ? ", range " : "", bounds);
    }
}

void gb_config_write_markdown(gb_buf_t *out)
{
    char bounds[80];
    gb_buf_append_str(out, "| flag | environment | default | range | what it sets |\n");
    gb_buf_append_str(out, "|---|---|---|---|---|\n");
    for (size_t i = 0; i < GB_ARRAY_LEN(settings); i++) {
        const setting_t *s = &settings[i];
        bounds_text(s, bounds, sizeof(bounds));
        gb_buf_appendf(out, "| `--%s` | `%s` | `%s` | %s | %s |\n", s->flag, s->env, s->def, bounds,
                       s->help);
    }
}
