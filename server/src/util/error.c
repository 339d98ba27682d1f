/* error: client-visible errors and their JSON form, the contract's
 * {"error": {"code", "message", "index"?, "field"?}}. */
#include <stdio.h>
#include <string.h>

#include "util.h"

void gb_error_clear(gb_error_t *e)
{
    memset(e, 0, sizeof(*e));
    e->index = -1;
}

void gb_error_set(gb_error_t *e, int status, const char *code, const char *field, const char *fmt,
                  ...)
{
    va_list ap;

    e->status = status;
    snprintf(e->code, sizeof(e->code), "%s", code);
    snprintf(e->field, sizeof(e->field), "%s", field ? field : "");
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

bool gb_error_is_set(const gb_error_t *e)
{
    return e->status != 0;
}

void gb_json_quote(gb_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    gb_buf_reserve(b, n + 2);
    gb_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            break;
        }
        /* '<' and '>' are escaped too, so JSON embedded in HTML can never close a tag. */
        if (esc == NULL && (c < 0x20 || c == '<' || c == '>' || c == 0x7f)) {
            u[0] = '\\';
            u[1] = 'u';
            u[2] = '0';
            u[3] = '0';
            u[4] = hex[c >> 4];
            u[5] = hex[c & 15];
            gb_buf_append(b, s + i - run, run);
            run = 0;
            gb_buf_append(b, u, 6);
            continue;
        }
        if (esc != NULL) {
            gb_buf_append(b, s + i - run, run);
            run = 0;
            gb_buf_append(b, esc, 2);
            continue;
        }
        run++;
    }
    gb_buf_append(b, s + n - run, run);
    gb_buf_append(b, "\"", 1);
}

void gb_error_to_json(const gb_error_t *e, gb_buf_t *out)
{
    gb_buf_append_str(out, "{\"error\":{\"code\":");
    gb_json_quote(out, e->code, strlen(e->code));
    gb_buf_append_str(out, ",\"message\":");
    gb_json_quote(out, e->message, strlen(e->message));
    if (e->index >= 0) {
        gb_buf_appendf(out, ",\"index\":%ld", e->index);
    }
    if (e->field[0] != '\0') {
        gb_buf_append_str(out, ",\"field\":");
        gb_json_quote(out, e->field, strlen(e->field));
    }
    gb_buf_append_str(out, "}}");
}
