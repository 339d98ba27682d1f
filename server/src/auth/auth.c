/* auth: roles, token generation and hashing, the command-line token store, and the server's
 * in-memory token table. The table maps SHA-256(token) -> identity (uthash); it is replaced
 * wholesale by each reload, so a revoked token disappears at the next reload. */
#include "auth/auth.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

/* uthash allocates through these; out-of-memory aborts like everywhere else. */
#undef uthash_malloc
#undef uthash_free
#define uthash_malloc(sz)    gb_xmalloc(sz)
#define uthash_free(ptr, sz) free(ptr)

static const char *const role_names[] = {"none", "agent", "viewer", "technician", "admin"};

bool gb_role_parse(const char *s, gb_role_t *out)
{
    for (size_t i = 1; i < GB_ARRAY_LEN(role_names); i++) {
        if (strcmp(s, role_names[i]) == 0) {
            *out = (gb_role_t)i;
            return true;
        }
    }
    return false;
}

const char *gb_role_name(gb_role_t role)
{
    return (unsigned)role < GB_ARRAY_LEN(role_names) ? role_names[role] : "none";
}

bool gb_role_allows(gb_role_t have, gb_role_t need)
{
    switch (have) {
    case GB_ROLE_ADMIN:
        return need != GB_ROLE_NONE;
    case GB_ROLE_TECHNICIAN:
        return need == GB_ROLE_VIEWER || need == GB_ROLE_TECHNICIAN;
    case GB_ROLE_VIEWER:
        return need == GB_ROLE_VIEWER;
    case GB_ROLE_AGENT:
        return need == GB_ROLE_AGENT;
    default:
        return false;
    }
}

bool gb_auth_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > GB_AUTH_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '@' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

bool gb_auth_token_generate(char out[GB_AUTH_TOKEN_LEN + 1])
{
    unsigned char raw[32];
    unsigned char b64[48];

    if (!gb_random_bytes(raw, sizeof(raw))) {
        return false;
    }
    int n = EVP_EncodeBlock(b64, raw, (int)sizeof(raw)); /* 44 chars, one '=' of padding */
    memcpy(out, "gbt_", 4);
    size_t o = 4;
    for (int i = 0; i < n && b64[i] != '='; i++) {
        char c = (char)b64[i];
        out[o++] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    out[o] = '\0';
    GB_ASSERT(o == GB_AUTH_TOKEN_LEN);
    return true;
}

void gb_auth_token_hash(const char *token, size_t len, uint8_t out[GB_SHA256_LEN])
{
    gb_sha256(token, len, out);
}

int gb_auth_token_create(PGconn *conn, gb_role_t role, const char *name,
                         char out[GB_AUTH_TOKEN_LEN + 1], char *err, size_t errlen)
{
    uint8_t hash[GB_SHA256_LEN];
    char hex[2 * GB_SHA256_LEN + 1];

    if (!gb_auth_name_valid(name)) {
        snprintf(err, errlen,
                 "token name must be 1 to %d characters of letters, digits, '.', '_', '@', '-'",
                 GB_AUTH_NAME_MAX);
        return GB_EINVAL;
    }
    if (role == GB_ROLE_NONE) {
        snprintf(err, errlen, "role must be agent, viewer, technician or admin");
        return GB_EINVAL;
    }
    if (!gb_auth_token_generate(out)) {
        snprintf(err, errlen, "the system random source failed");
        return GB_EINVAL;
    }
    gb_auth_token_hash(out, strlen(out), hash);
    gb_hex_encode(hash, sizeof(hash), hex);
    const char *params[3] = {name, gb_role_name(role), hex};
    /* A revoked token's name may be reused; a live one may not. */
    PGresult *res = PQexecParams(
        conn,
        "INSERT INTO api_tokens (name, role, token_sha256) VALUES ($1, $2, decode($3, 'hex')) "
        "ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, "
        "token_sha256 = EXCLUDED.token_sha256, created_at = now(), revoked_at = NULL "
        "WHERE api_tokens.revoked_at IS NOT NULL",
        3, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        gb_pg_error_text(conn, res, err, errlen);
        rc = GB_EDB;
    } else if (strcmp(PQcmdTuples(res), "1") != 0) {
        snprintf(err, errlen, "a token named '%s' already exists; revoke it first", name);
        rc = GB_EDB;
    }
    PQclear(res);
    if (rc != 0) {
        memset(out, 0, GB_AUTH_TOKEN_LEN + 1);
    }
    return rc;
}

int gb_auth_token_revoke(PGconn *conn, const char *name, char *err, size_t errlen)
{
    const char *params[1] = {name};
    PGresult *res = PQexecParams(conn,
                                 "UPDATE api_tokens SET revoked_at = now() "
                                 "WHERE name = $1 AND revoked_at IS NULL",
                                 1, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        gb_pg_error_text(conn, res, err, errlen);
        rc = GB_EDB;
    } else if (strcmp(PQcmdTuples(res), "1") != 0) {
        snprintf(err, errlen, "no live token is named '%s'", name);
        rc = GB_ENOTFOUND;
    }
    PQclear(res);
    return rc;
}

/* ---- the server's table ---- */

typedef struct token_entry {
    uint8_t hash[GB_SHA256_LEN];
    gb_auth_identity_t id;
    UT_hash_handle hh;
} token_entry_t;

struct gb_auth {
    uv_loop_t *loop;
    gb_pg_t *pg;
    uv_timer_t timer;
    token_entry_t *table;
    gb_auth_wait_t *waiters; /* lookups waiting for the reload in flight */
    gb_pg_query_t query;     /* the reload in flight, when reloading */
    bool reloading;
    bool closing;
    unsigned reload_ms;
    int64_t last_reload_mono_ms;
    void (*done)(void *arg);
    void *done_arg;
    bool timer_closed;
};

#define SELECT_TOKENS                                                 \
    "SELECT name, role, encode(token_sha256, 'hex') FROM api_tokens " \
    "WHERE revoked_at IS NULL"
/* A miss triggers a reload at most this often, so a flood of bad tokens costs the database
 * at most one query a second. */
#define MISS_RELOAD_MS 1000

static void table_free(token_entry_t **table)
{
    token_entry_t *e, *tmp;
    HASH_ITER(hh, *table, e, tmp)
    {
        HASH_DEL(*table, e);
        free(e);
    }
}

static bool hex_decode(const char *hex, uint8_t *out, size_t n)
{
    if (strlen(hex) != 2 * n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + (size_t)k];
            unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                         : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                                : 16;
            if (d > 15) {
                return false;
            }
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return true;
}

/* Builds a new table from a result (name, role, hex hash) and swaps it in. */
static void table_replace(gb_auth_t *auth, const PGresult *res)
{
    token_entry_t *table = NULL;
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        token_entry_t *e = gb_xcalloc(1, sizeof(*e));
        if (!hex_decode(PQgetvalue(res, r, 2), e->hash, sizeof(e->hash)) ||
            !gb_role_parse(PQgetvalue(res, r, 1), &e->id.role)) {
            free(e);
            continue;
        }
        snprintf(e->id.name, sizeof(e->id.name), "%s", PQgetvalue(res, r, 0));
        token_entry_t *dup = NULL;
        HASH_FIND(hh, table, e->hash, sizeof(e->hash), dup);
        if (dup != NULL) {
            free(e);
            continue;
        }
        HASH_ADD(hh, table, hash, sizeof(e->hash), e);
    }
    table_free(&auth->table);
    auth->table = table;
    auth->last_reload_mono_ms = gb_time_mono_ms();
}

static const token_entry_t *table_find(const gb_auth_t *auth, const uint8_t *hash)
{
    token_entry_t *e = NULL;
    HASH_FIND(hh, auth->table, hash, GB_SHA256_LEN, e);
    /* The hash table found the bucket by hash; the final comparison is constant-time anyway. */
    if (e != NULL && !gb_const_time_eq(e->hash, hash, GB_SHA256_LEN)) {
        return NULL;
    }
    return e;
}

static void maybe_done(gb_auth_t *auth)
{
    if (auth->closing && auth->timer_closed && !auth->reloading && auth->done != NULL) {
        void (*done)(void *) = auth->done;
        auth->done = NULL;
        done(auth->done_arg);
    }
}

static void wake_waiters(gb_auth_t *auth)
{
    gb_auth_wait_t *w = auth->waiters;
    auth->waiters = NULL;
    while (w != NULL) {
        gb_auth_wait_t *next = w->next;
        const token_entry_t *e = auth->closing ? NULL : table_find(auth, w->hash);
        w->cb(w, e != NULL ? &e->id : NULL);
        w = next;
    }
}

static void on_reload_done(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    gb_auth_t *auth = gb_container_of(q, gb_auth_t, query);
    auth->reloading = false;
    if (err == 0 && nresults == 1) {
        size_t before = HASH_COUNT(auth->table);
        table_replace(auth, results[0]);
        if (HASH_COUNT(auth->table) != before) {
            gb_log(GB_LOG_INFO, "auth", "tokens reloaded: %u live", HASH_COUNT(auth->table));
        }
    } else {
        /* Keep the old table: a database blip must not lock everyone out. */
        gb_log(GB_LOG_WARN, "auth", "token reload failed: %s",
               err ? gb_strerror(err) : "no result");
    }
    wake_waiters(auth);
    maybe_done(auth);
}

/* Returns true when a reload is in flight afterwards. */
static bool start_reload(gb_auth_t *auth)
{
    if (auth->reloading || auth->closing) {
        return auth->reloading;
    }
    gb_pg_query_init(&auth->query, SELECT_TOKENS, 0, NULL, on_reload_done);
    int rc = gb_pg_submit(auth->pg, &auth->query);
    if (rc < 0) {
        gb_log(GB_LOG_DEBUG, "auth", "token reload not sent: %s", gb_strerror(rc));
        return false;
    }
    auth->reloading = true;
    return true;
}

static void on_reload_timer(uv_timer_t *t)
{
    gb_auth_t *auth = gb_container_of(t, gb_auth_t, timer);
    (void)start_reload(auth);
}

int gb_auth_new(uv_loop_t *loop, gb_pg_t *pg, unsigned reload_ms, gb_auth_t **out)
{
    gb_auth_t *auth = gb_xcalloc(1, sizeof(*auth));
    auth->loop = loop;
    auth->pg = pg;
    auth->reload_ms = reload_ms;
    int rc = uv_timer_init(loop, &auth->timer);
    if (rc < 0) {
        free(auth);
        return rc;
    }
    rc = uv_timer_start(&auth->timer, on_reload_timer, reload_ms, reload_ms);
    GB_ASSERT(rc == 0);
    uv_unref((uv_handle_t *)&auth->timer);
    *out = auth;
    return 0;
}

int gb_auth_load_blocking(gb_auth_t *auth, PGconn *conn, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, SELECT_TOKENS);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        gb_pg_error_text(conn, res, err, errlen);
        PQclear(res);
        return GB_EDB;
    }
    table_replace(auth, res);
    PQclear(res);
    return 0;
}

int gb_auth_lookup(gb_auth_t *auth, const char *token, size_t len, gb_auth_wait_t *w,
                   gb_auth_identity_t *out)
{
    uint8_t hash[GB_SHA256_LEN];

    gb_auth_token_hash(token, len, hash);
    const token_entry_t *e = table_find(auth, hash);
    if (e != NULL) {
        *out = e->id;
        return GB_AUTH_FOUND;
    }
    if (auth->closing || len == 0 || len > 256 ||
        (!auth->reloading && gb_time_mono_ms() - auth->last_reload_mono_ms < MISS_RELOAD_MS)) {
        return GB_AUTH_UNKNOWN;
    }
    /* Perhaps created since the last reload: look again once the table is fresh. */
    if (!start_reload(auth)) {
        return GB_AUTH_UNKNOWN;
    }
    memcpy(w->hash, hash, sizeof(hash));
    w->next = auth->waiters;
    auth->waiters = w;
    return GB_AUTH_PENDING;
}

size_t gb_auth_count(const gb_auth_t *auth)
{
    return HASH_COUNT(auth->table);
}

static void on_timer_closed(uv_handle_t *h)
{
    gb_auth_t *auth = gb_container_of(h, gb_auth_t, timer);
    auth->timer_closed = true;
    maybe_done(auth);
}

void gb_auth_shutdown(gb_auth_t *auth, void (*done)(void *arg), void *arg)
{
    auth->closing = true;
    auth->done = done;
    auth->done_arg = arg;
    if (!auth->reloading) {
        wake_waiters(auth);
    }
    uv_close((uv_handle_t *)&auth->timer, on_timer_closed);
}

void gb_auth_free(gb_auth_t *auth)
{
    if (auth == NULL) {
        return;
    }
    table_free(&auth->table);
    free(auth);
}
