/* main: argv -> serve | migrate | token create | token revoke | plan; nothing else. Settings come
 * from the config table (flags and GLOVEBOX_* environment variables). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/capacity.h"
#include "app.h"
#include "config/config.h"

static void usage(FILE *out)
{
    gb_buf_t b;
    gb_buf_init(&b);
    gb_buf_append_str(
        &b,
        "gloveboxd: the glovebox server (Windows Autopilot pre-provisioning, staging rooms)\n\n"
        "Usage:\n"
        "  gloveboxd [serve] [SETTINGS]          run the server (the default)\n"
        "  gloveboxd migrate [SETTINGS]          apply pending database migrations and exit\n"
        "  gloveboxd token create --role ROLE --name NAME [SETTINGS]\n"
        "                                        create an API token; it is printed once, alone\n"
        "                                        on one line, and stored only as its SHA-256\n"
        "  gloveboxd token revoke NAME [SETTINGS]\n"
        "                                        revoke the live token called NAME\n"
        "  gloveboxd plan --devices N --slots K [--uplink-mbps U] [--payload-mb P]\n"
        "                 [--peer-share S] [--cache-share C] [--esp-timeout-min T]\n"
        "                 [--profile NAME] [--json] [SETTINGS]\n"
        "                                        capacity plan from the measured timings: how\n"
        "                                        long N devices take on K slots, throughput by\n"
        "                                        slots, the recommended slots, what LAN peers or\n"
        "                                        a Connected Cache would change; the same answer\n"
        "                                        as GET /api/v1/capacity (--json: its JSON).\n"
        "                                        Left out, a value is the fitted room's: devices\n"
        "                                        and slots seen, effective uplink, payload, LAN\n"
        "                                        peer and cache shares, each profile's timeout\n"
        "  gloveboxd --help | --version\n\n"
        "Roles: agent (only /api/v1/agent/*), viewer (every GET), technician (viewer, import and\n"
        "device actions), admin (everything).\n\n"
        "Settings (flag or environment variable; flags win):\n");
    gb_config_write_help(&b);
    fwrite(b.data, 1, b.len, out);
    gb_buf_dispose(&b);
}

static const char *env_get(const char *name)
{
    return getenv(name);
}

/* Finds "--key value" or "--key=value" among the subcommand's own arguments. */
static const char *arg_value(int n, char **args, const char *key, int *used)
{
    size_t klen = strlen(key);
    for (int i = 0; i < n; i++) {
        if (strncmp(args[i], key, klen) != 0) {
            continue;
        }
        if (args[i][klen] == '=') {
            used[i] = 1;
            return args[i] + klen + 1;
        }
        if (args[i][klen] == '\0' && i + 1 < n) {
            used[i] = used[i + 1] = 1;
            return args[i + 1];
        }
    }
    return NULL;
}

static int reject_leftovers(int n, char **args, const int *used)
{
    for (int i = 0; i < n; i++) {
        if (!used[i]) {
            fprintf(stderr, "gloveboxd: unexpected argument '%s' (see gloveboxd --help)\n",
                    args[i]);
            return 2;
        }
    }
    return 0;
}

static int run_command(gb_config_t *cfg, int n, char **rest, int *used);

/* gloveboxd plan's flags and the API parameters they set. */
static const char *const plan_flags[][2] = {
    {"--devices", "devices"},
    {"--slots", "slots"},
    {"--uplink-mbps", "uplink_mbps"},
    {"--payload-mb", "payload_mb"},
    {"--peer-share", "peer_share"},
    {"--cache-share", "cache_share"},
    {"--esp-timeout-min", "esp_timeout_min"},
    {"--profile", "profile"},
};

static bool plan_param(void *ctx, const char *name, gb_str_t *value)
{
    const char *const *values = ctx;
    for (size_t i = 0; i < GB_ARRAY_LEN(plan_flags); i++) {
        if (strcmp(plan_flags[i][1], name) == 0 && values[i] != NULL) {
            *value = gb_str_from_cstr(values[i]);
            return true;
        }
    }
    return false;
}

static int run_plan(const gb_config_t *cfg, int n, char **rest, int *used)
{
    const char *values[GB_ARRAY_LEN(plan_flags)];
    bool json = false;
    for (size_t i = 0; i < GB_ARRAY_LEN(plan_flags); i++) {
        values[i] = arg_value(n, rest, plan_flags[i][0], used);
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(rest[i], "--json") == 0) {
            json = true;
            used[i] = 1;
        }
    }
    int rc = reject_leftovers(n, rest, used);
    if (rc != 0) {
        return rc;
    }
    gb_buf_t out;
    gb_error_t err;
    gb_buf_init(&out);
    gb_error_clear(&err);
    rc = gb_api_capacity_cli(cfg, plan_param, values, json, &out, &err);
    if (rc == 0) {
        fwrite(out.data, 1, out.len, stdout);
        if (json) {
            fputc('\n', stdout);
        }
        fflush(stdout);
    } else if (err.status == 400) {
        /* The API's wording names the query parameter; here it is a flag. */
        const char *why = strstr(err.message, ": ");
        char flag[sizeof(err.field) + 2];
        snprintf(flag, sizeof(flag), "--%s", err.field);
        for (char *c = flag; *c != '\0'; c++) {
            if (*c == '_') {
                *c = '-';
            }
        }
        fprintf(stderr, "gloveboxd: plan: %s: %s\n", flag, why != NULL ? why + 2 : err.message);
    } else {
        fprintf(stderr, "gloveboxd: plan: %s\n", err.message);
    }
    gb_buf_dispose(&out);
    return rc == 0 ? 0 : err.status == 400 ? 2 : 1;
}

static int run(gb_config_t *cfg, int n, char **rest)
{
    int *used = gb_xcalloc((size_t)n + 1, sizeof(int));
    int rc = run_command(cfg, n, rest, used);
    free(used);
    return rc;
}

static int run_command(gb_config_t *cfg, int n, char **rest, int *used)
{
    const char *cmd = n > 0 ? rest[0] : "serve";
    if (n > 0) {
        used[0] = 1;
    }
    if (strcmp(cmd, "serve") == 0) {
        int rc = reject_leftovers(n, rest, used);
        return rc != 0 ? rc : gb_app_serve(cfg);
    }
    if (strcmp(cmd, "migrate") == 0) {
        int rc = reject_leftovers(n, rest, used);
        return rc != 0 ? rc : gb_app_migrate(cfg);
    }
    if (strcmp(cmd, "plan") == 0) {
        return run_plan(cfg, n, rest, used);
    }
    if (strcmp(cmd, "token") != 0) {
        fprintf(stderr, "gloveboxd: unknown command '%s' (see gloveboxd --help)\n", cmd);
        return 2;
    }
    const char *sub = n > 1 ? rest[1] : "";
    if (n > 1) {
        used[1] = 1;
    }
    if (strcmp(sub, "create") == 0) {
        const char *role_s = arg_value(n, rest, "--role", used);
        const char *name = arg_value(n, rest, "--name", used);
        gb_role_t role;
        int rc = reject_leftovers(n, rest, used);
        if (rc != 0) {
            return rc;
        }
        if (role_s == NULL || name == NULL) {
            fprintf(stderr, "gloveboxd: token create needs --role ROLE and --name NAME\n");
            return 2;
        }
        if (!gb_role_parse(role_s, &role)) {
            fprintf(stderr, "gloveboxd: --role '%s' is not agent, viewer, technician or admin\n",
                    role_s);
            return 2;
        }
        return gb_app_token_create(cfg, role, name);
    }
    if (strcmp(sub, "revoke") == 0) {
        if (n != 3) {
            fprintf(stderr, "gloveboxd: token revoke needs exactly one NAME\n");
            return 2;
        }
        return gb_app_token_revoke(cfg, rest[2]);
    }
    fprintf(stderr, "gloveboxd: token needs 'create' or 'revoke' (see gloveboxd --help)\n");
    return 2;
}

int main(int argc, char **argv)
{
    gb_config_t cfg;
    char err[512];
    int nrest = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ||
            strcmp(argv[i], "help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("gloveboxd %s\n", GB_VERSION);
            return 0;
        }
    }
    char **rest = gb_xcalloc((size_t)argc + 1, sizeof(char *));
    gb_config_init(&cfg);
    if (gb_config_load(&cfg, argc - 1, argv + 1, env_get, rest, &nrest, err, sizeof(err)) < 0) {
        fprintf(stderr, "gloveboxd: %s\n", err);
        gb_config_dispose(&cfg);
        free(rest);
        return 2;
    }
    gb_log_set_level(cfg.log_level);
    int rc = run(&cfg, nrest, rest);
    gb_config_dispose(&cfg);
    free(rest);
    return rc;
}
