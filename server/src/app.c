/* app: start-up (migrations, tokens), the serving loop and an orderly shutdown. Shutdown order
 * is the reverse of dependencies: stop HTTP (requests in flight finish), then auth, then the
 * database pool; the loop then has no handles left and uv_loop_close() succeeds. */
#include "app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <libpq-fe.h>
#include <uv.h>

#include "api/api.h"
#include "db/db.h"
#include "http/http.h"
#include "net/net.h"

typedef struct app {
    uv_loop_t loop;
    const gb_config_t *cfg;
    gb_pg_t *pg;
    gb_auth_t *auth;
    gb_http_router_t *router;
    gb_api_t *api;
    gb_http_server_t *server;
    gb_net_signals_t signals;
    uv_timer_t shutdown_timer;
    bool stopping;
    int exit_code;
} app_t;

static PGconn *connect_or_say(const gb_config_t *cfg)
{
    char err[512];
    PGconn *conn =
        gb_pg_connect_blocking(cfg->database_url, cfg->db_connect_timeout_ms, err, sizeof(err));
    if (conn == NULL) {
        char where[300];
        gb_pg_conninfo_describe(cfg->database_url, where, sizeof(where));
        gb_log(GB_LOG_ERROR, "app", "cannot reach PostgreSQL (%s): %s", where, err);
    }
    return conn;
}

static bool migrate_conn(PGconn *conn)
{
    char err[512];
    int applied = 0;
    if (gb_pg_migrate(conn, &applied, err, sizeof(err)) < 0) {
        gb_log(GB_LOG_ERROR, "app", "migration failed: %s", err);
        return false;
    }
    gb_log(GB_LOG_INFO, "app", "migrations: %d applied, %zu known", applied, gb_migrations_count);
    return true;
}

int gb_app_migrate(const gb_config_t *cfg)
{
    PGconn *conn = connect_or_say(cfg);
    if (conn == NULL) {
        return 1;
    }
    bool ok = migrate_conn(conn);
    PQfinish(conn);
    return ok ? 0 : 1;
}

int gb_app_token_create(const gb_config_t *cfg, gb_role_t role, const char *name)
{
    char token[GB_AUTH_TOKEN_LEN + 1];
    char err[512];
    PGconn *conn = connect_or_say(cfg);
    if (conn == NULL) {
        return 1;
    }
    int rc = migrate_conn(conn) ? gb_auth_token_create(conn, role, name, token, err, sizeof(err))
                                : GB_EDB;
    PQfinish(conn);
    if (rc < 0) {
        if (err[0] != '\0' && rc != GB_EDB) {
            fprintf(stderr, "gloveboxd: %s\n", err);
        } else if (rc == GB_EDB) {
            fprintf(stderr, "gloveboxd: token not created: %s\n", err);
        }
        return 1;
    }
    printf("%s\n", token);
    fflush(stdout);
    memset(token, 0, sizeof(token));
    return 0;
}

int gb_app_token_revoke(const gb_config_t *cfg, const char *name)
{
    char err[512];
    PGconn *conn = connect_or_say(cfg);
    if (conn == NULL) {
        return 1;
    }
    int rc = migrate_conn(conn) ? gb_auth_token_revoke(conn, name, err, sizeof(err)) : GB_EDB;
    PQfinish(conn);
    if (rc < 0) {
        fprintf(stderr, "gloveboxd: %s\n", err);
        return 1;
    }
    gb_log(GB_LOG_INFO, "app", "token '%s' revoked", name);
    return 0;
}

/* Ten thousand keep-alive clients need more descriptors than the usual soft limit of 1024. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            gb_log(GB_LOG_WARN, "app", "could not raise the open-file limit");
        }
    }
}

static void on_pg_closed(void *arg)
{
    app_t *app = arg;
    gb_log(GB_LOG_INFO, "app", "database closed; bye");
    GB_UNUSED(app);
}

static void on_auth_closed(void *arg)
{
    app_t *app = arg;
    gb_pg_shutdown(app->pg, on_pg_closed, app);
}

static void on_http_closed(void *arg)
{
    app_t *app = arg;
    gb_api_close(app->api);
    uv_timer_stop(&app->shutdown_timer);
    uv_close((uv_handle_t *)&app->shutdown_timer, NULL);
    gb_net_signals_stop(&app->signals);
    gb_auth_shutdown(app->auth, on_auth_closed, app);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    app_t *app = gb_container_of(t, app_t, shutdown_timer);
    gb_log(GB_LOG_ERROR, "app", "requests still in flight after %u ms; exiting anyway",
           app->cfg->shutdown_timeout_ms);
    exit(1);
}

static void on_signal(int signum, void *arg)
{
    app_t *app = arg;
    if (app->stopping) {
        gb_log(GB_LOG_WARN, "app", "second signal %d: exiting at once", signum);
        exit(1);
    }
    app->stopping = true;
    gb_log(GB_LOG_INFO, "app", "signal %d: shutting down", signum);
    uv_timer_start(&app->shutdown_timer, on_shutdown_timeout, app->cfg->shutdown_timeout_ms, 0);
    gb_http_server_shutdown(app->server, on_http_closed, app);
}

static bool start_up(app_t *app, const gb_config_t *cfg)
{
    char err[512];
    PGconn *conn = connect_or_say(cfg);
    if (conn == NULL) {
        return false;
    }
    if (!migrate_conn(conn)) {
        PQfinish(conn);
        return false;
    }
    gb_pg_config_t pgc = {
        .conninfo = cfg->database_url,
        .pool_size = cfg->db_pool_size,
        .queue_max = cfg->db_queue_max,
        .connect_timeout_ms = cfg->db_connect_timeout_ms,
        .query_timeout_ms = cfg->db_query_timeout_ms,
        .reconnect_min_ms = 100,
        .reconnect_max_ms = 5000,
    };
    int rc = gb_pg_new(&app->loop, &pgc, &app->pg);
    if (rc < 0) {
        gb_log(GB_LOG_ERROR, "app", "database pool: %s", gb_strerror(rc));
        PQfinish(conn);
        return false;
    }
    rc = gb_auth_new(&app->loop, app->pg, cfg->token_reload_ms, &app->auth);
    GB_ASSERT(rc == 0);
    if (gb_auth_load_blocking(app->auth, conn, err, sizeof(err)) < 0) {
        gb_log(GB_LOG_ERROR, "app", "loading tokens: %s", err);
        PQfinish(conn);
        return false;
    }
    if (gb_auth_count(app->auth) == 0) {
        gb_log(GB_LOG_WARN, "app",
               "no API token exists yet: create one with 'gloveboxd token create --role admin "
               "--name NAME'");
    }
    app->router = gb_http_router_new();
    gb_api_deps_t deps = {
        .loop = &app->loop,
        .cfg = cfg,
        .pg = app->pg,
        .auth = app->auth,
        .router = app->router,
    };
    app->api = gb_api_new(&deps);
    if (gb_api_load(app->api, conn, err, sizeof(err)) < 0) {
        gb_log(GB_LOG_ERROR, "app", "loading devices: %s", err);
        PQfinish(conn);
        return false;
    }
    PQfinish(conn);
    gb_http_config_t hc = {
        .listen = cfg->listen,
        .web_dir = cfg->web_dir,
        .max_header_bytes = cfg->max_header_bytes,
        .max_body_bytes = cfg->max_body_bytes,
        .max_connections = cfg->max_connections,
        .header_timeout_ms = cfg->header_timeout_ms,
        .body_timeout_ms = cfg->body_timeout_ms,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .write_timeout_ms = cfg->write_timeout_ms,
        .backlog = 1024,
        /* The pool's connections, a reconnect each, and room for stdio, the loop, the
         * listener, libuv's spare and the static files being read. */
        .reserved_fds = 2 * cfg->db_pool_size + 32,
    };
    rc = gb_http_server_new(&app->loop, &hc, app->router, &app->server);
    if (rc < 0) {
        gb_log(GB_LOG_ERROR, "app", "listen on %s: %s", cfg->listen, gb_strerror(rc));
        return false;
    }
    gb_api_set_server(app->api, app->server);
    uv_timer_init(&app->loop, &app->shutdown_timer);
    rc = gb_net_signals_start(&app->loop, on_signal, app, &app->signals);
    GB_ASSERT(rc == 0);
    gb_log(GB_LOG_INFO, "app", "listening on %s port=%d web_dir=%s", cfg->listen,
           gb_http_server_port(app->server), cfg->web_dir);
    return true;
}

int gb_app_serve(const gb_config_t *cfg)
{
    app_t *app = gb_xcalloc(1, sizeof(*app));
    app->cfg = cfg;
    gb_net_install_strerror();
    raise_fd_limit();
    int rc = uv_loop_init(&app->loop);
    GB_ASSERT(rc == 0);
    if (!start_up(app, cfg)) {
        /* Close what start_up() opened before it failed, in the usual order. */
        if (app->server != NULL) {
            gb_http_server_shutdown(app->server, on_http_closed, app);
        } else if (app->auth != NULL) {
            gb_auth_shutdown(app->auth, on_auth_closed, app);
        } else if (app->pg != NULL) {
            gb_pg_shutdown(app->pg, on_pg_closed, app);
        }
        uv_run(&app->loop, UV_RUN_DEFAULT);
        app->exit_code = 1;
    } else {
        uv_run(&app->loop, UV_RUN_DEFAULT);
    }
    gb_http_server_free(app->server);
    gb_api_free(app->api);
    gb_http_router_free(app->router);
    gb_auth_free(app->auth);
    gb_pg_free(app->pg);
    rc = uv_loop_close(&app->loop);
    if (rc != 0) {
        gb_log(GB_LOG_WARN, "app", "loop closed with handles still open");
    }
    int code = app->exit_code;
    free(app);
    return code;
}
