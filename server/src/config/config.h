/* config: every setting of gloveboxd, from one table (name, flag, environment variable, type,
 * default, bounds, help). Parsing, validation and --help are all generated from that table,
 * so a setting cannot exist in one place and be missing in another. Precedence: default <
 * environment < command-line flag. */
#ifndef GB_CONFIG_H
#define GB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "util/util.h"

typedef struct gb_config {
    char *listen;       /* host:port */
    char *database_url; /* libpq URI or key=value conninfo */
    char *web_dir;      /* static web files */
    size_t max_body_bytes;
    size_t max_import_bytes;
    size_t max_header_bytes;
    unsigned max_connections;
    unsigned header_timeout_ms;
    unsigned body_timeout_ms;
    unsigned idle_timeout_ms;
    unsigned write_timeout_ms;
    unsigned db_pool_size;
    unsigned db_queue_max;
    unsigned db_connect_timeout_ms;
    unsigned db_query_timeout_ms;
    unsigned token_reload_ms;
    unsigned stall_timeout_ms;
    unsigned stream_max_subscribers;
    size_t stream_buffer_bytes;
    unsigned stream_heartbeat_ms;
    unsigned shutdown_timeout_ms;
    gb_log_level_t log_level;
} gb_config_t;

/* Fills cfg with the defaults. */
void gb_config_init(gb_config_t *cfg);
void gb_config_dispose(gb_config_t *cfg);

/* Applies the environment (through getenv_fn, normally getenv) and then the flags in
 * argv[0..argc). Arguments that are not settings are left in order in rest[0..*nrest) (rest
 * must hold argc entries). On a bad value or an unknown --flag, writes a one-line message to
 * err and returns GB_EINVAL. "--help" is not handled here. */
int gb_config_load(gb_config_t *cfg, int argc, char **argv, const char *(*getenv_fn)(const char *),
                   char **rest, int *nrest, char *err, size_t errlen) GB_MUST_CHECK;

/* Appends the settings table as help text (flag, environment variable, default, bounds). */
void gb_config_write_help(gb_buf_t *out);
/* Appends the settings table as Markdown (for the README). */
void gb_config_write_markdown(gb_buf_t *out);

#endif
