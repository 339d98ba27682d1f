/* main: argv -> serve | migrate | token create | token revoke; nothing else. Settings come from
 * the config table (flags and GLOVEBOX_* environment variables). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
