/* app: wires configuration, the loop, the database, auth, the router, the api and the HTTP
 * server together, and runs the subcommands that need a database. */
#ifndef GB_APP_H
#define GB_APP_H

#include "auth/auth.h"
#include "config/config.h"

/* Runs the server until SIGINT/SIGTERM. Returns the process exit status. */
int gb_app_serve(const gb_config_t *cfg);
/* Applies pending migrations and exits. */
int gb_app_migrate(const gb_config_t *cfg);
/* Creates a token and prints it alone on one line to stdout. */
int gb_app_token_create(const gb_config_t *cfg, gb_role_t role, const char *name);
int gb_app_token_revoke(const gb_config_t *cfg, const char *name);

#endif
