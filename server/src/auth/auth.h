/* auth: API tokens and roles. A token is shown once at creation and stored only as its SHA-256;
 * the server keeps the hashes of live tokens in memory (reloaded every token_reload_ms, and at
 * most once a second on a miss) and checks bearer tokens against them. */
#ifndef GB_AUTH_H
#define GB_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>
#include <uv.h>

#include "db/db.h"
#include "util/util.h"

typedef enum gb_role {
    GB_ROLE_NONE = 0,
    GB_ROLE_AGENT,      /* only the agent endpoints (/api/v1/agent/...) */
    GB_ROLE_VIEWER,     /* every GET */
    GB_ROLE_TECHNICIAN, /* viewer + import + device actions */
    GB_ROLE_ADMIN,      /* everything */
} gb_role_t;

bool gb_role_parse(const char *s, gb_role_t *out);
const char *gb_role_name(gb_role_t role);
/* Whether a token of role `have` may use an endpoint that needs `need`. */
bool gb_role_allows(gb_role_t have, gb_role_t need);

#define GB_AUTH_NAME_MAX  64 /* token names: 1..64 of [A-Za-z0-9._@-] */
#define GB_AUTH_TOKEN_LEN 47 /* "gbt_" + 43 base64url characters (256 random bits) */

typedef struct gb_auth_identity {
    char name[GB_AUTH_NAME_MAX + 1];
    gb_role_t role;
} gb_auth_identity_t;

bool gb_auth_name_valid(const char *name);
/* Writes a new random token (NUL-terminated) into out; false if the OS random source failed. */
bool gb_auth_token_generate(char out[GB_AUTH_TOKEN_LEN + 1]) GB_MUST_CHECK;
/* SHA-256 of the token text. */
void gb_auth_token_hash(const char *token, size_t len, uint8_t out[GB_SHA256_LEN]);

/* ---- command line (blocking) ---- */
/* Creates a token and writes it to out. Fails with GB_EINVAL (bad name: message in err) or
 * GB_EDB (a live token of that name exists, or the database failed: message in err). A revoked
 * name may be reused. */
int gb_auth_token_create(PGconn *conn, gb_role_t role, const char *name,
                         char out[GB_AUTH_TOKEN_LEN + 1], char *err, size_t errlen) GB_MUST_CHECK;
/* Revokes the live token of that name; GB_ENOTFOUND when there is none. */
int gb_auth_token_revoke(PGconn *conn, const char *name, char *err, size_t errlen) GB_MUST_CHECK;

/* ---- server side (on the loop) ---- */
typedef struct gb_auth gb_auth_t;
typedef struct gb_auth_wait gb_auth_wait_t;

/* Fires once with the identity (borrowed for the call) or NULL for an unknown token. */
typedef void (*gb_auth_cb)(gb_auth_wait_t *w, const gb_auth_identity_t *id);

struct gb_auth_wait {
    gb_auth_cb cb; /* public */
    /* private */
    uint8_t hash[GB_SHA256_LEN];
    gb_auth_wait_t *next;
};

enum {
    GB_AUTH_FOUND = 0,   /* *out is set */
    GB_AUTH_UNKNOWN = 1, /* no live token has this value */
    GB_AUTH_PENDING = 2, /* a reload is under way; w->cb fires when it ends */
};

int gb_auth_new(uv_loop_t *loop, gb_pg_t *pg, unsigned reload_ms, gb_auth_t **out) GB_MUST_CHECK;
/* Loads the tokens now, blocking, from an open connection (used at start-up). */
int gb_auth_load_blocking(gb_auth_t *auth, PGconn *conn, char *err, size_t errlen) GB_MUST_CHECK;
/* Checks a presented token. w must stay valid until its callback fires (when PENDING). */
int gb_auth_lookup(gb_auth_t *auth, const char *token, size_t len, gb_auth_wait_t *w,
                   gb_auth_identity_t *out);
size_t gb_auth_count(const gb_auth_t *auth);
/* Stops the reload timer; pending lookups fire with NULL; done fires when handles are closed. */
void gb_auth_shutdown(gb_auth_t *auth, void (*done)(void *arg), void *arg);
void gb_auth_free(gb_auth_t *auth);

#endif
