/* array: PostgreSQL array literals in text form, for unnest()-based batch statements. Every
 * element is double-quoted with backslash escapes, which is correct for any element type's
 * text input (PostgreSQL's array_in rules). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "db/db.h"

void gb_pg_array_init(gb_pg_array_t *a)
{
    gb_buf_init(&a->buf);
    gb_buf_append(&a->buf, "{", 1);
    a->n = 0;
}

void gb_pg_array_dispose(gb_pg_array_t *a)
{
    gb_buf_dispose(&a->buf);
    a->n = 0;
}

static void separator(gb_pg_array_t *a)
{
    if (a->n++ > 0) {
        gb_buf_append(&a->buf, ",", 1);
    }
}

void gb_pg_array_text(gb_pg_array_t *a, const char *s, size_t len)
{
    separator(a);
    gb_buf_reserve(&a->buf, len + 2);
    gb_buf_append(&a->buf, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            gb_buf_append(&a->buf, s + i - run, run);
            run = 0;
            char esc[2] = {'\\', s[i]};
            gb_buf_append(&a->buf, esc, 2);
        } else {
            run++;
        }
    }
    gb_buf_append(&a->buf, s + len - run, run);
    gb_buf_append(&a->buf, "\"", 1);
}

void gb_pg_array_cstr(gb_pg_array_t *a, const char *s)
{
    if (s == NULL) {
        gb_pg_array_null(a);
    } else {
        gb_pg_array_text(a, s, strlen(s));
    }
}

void gb_pg_array_null(gb_pg_array_t *a)
{
    separator(a);
    gb_buf_append(&a->buf, "NULL", 4);
}

void gb_pg_array_i64(gb_pg_array_t *a, int64_t v)
{
    separator(a);
    gb_buf_appendf(&a->buf, "%" PRId64, v);
}

void gb_pg_array_time_ms(gb_pg_array_t *a, int64_t ms)
{
    char t[32];
    if (ms == INT64_MIN) {
        gb_pg_array_null(a);
        return;
    }
    gb_time_format_rfc3339(ms, t);
    separator(a);
    gb_buf_append_str(&a->buf, t);
}

const char *gb_pg_array_finish(gb_pg_array_t *a)
{
    gb_buf_append(&a->buf, "}", 1);
    return a->buf.data;
}
