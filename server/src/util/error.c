/* error: client-visible errors and their JSON form, the contract's
 * {"error": {"code", "message", "index"?, "field"?}}. */
#include <math.h>
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

/* Bytes that need escaping: control characters, '"', '\\', DEL, and '<' and '>' (so JSON
 * embedded in HTML can never close a tag). A table keeps the common case, a run of plain bytes,
 * to one load and test per byte. */
static const unsigned char json_escape[256] = {
    ['\0'] = 1, [1] = 1,    [2] = 1,    [3] = 1,   [4] = 1,    [5] = 1,    [6] = 1,  [7] = 1,
    [8] = 1,    ['\t'] = 1, ['\n'] = 1, [11] = 1,  [12] = 1,   ['\r'] = 1, [14] = 1, [15] = 1,
    [16] = 1,   [17] = 1,   [18] = 1,   [19] = 1,  [20] = 1,   [21] = 1,   [22] = 1, [23] = 1,
    [24] = 1,   [25] = 1,   [26] = 1,   [27] = 1,  [28] = 1,   [29] = 1,   [30] = 1, [31] = 1,
    ['"'] = 1,  ['\\'] = 1, ['<'] = 1,  ['>'] = 1, [0x7f] = 1,
};

void gb_json_quote(gb_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    gb_buf_reserve(b, n + 2);
    gb_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!json_escape[c]) {
            run++;
            continue;
        }
        gb_buf_append(b, s + i - run, run);
        run = 0;
        switch (c) {
        case '"':
            gb_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            gb_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            gb_buf_append(b, "\\n", 2);
            break;
        case '\r':
            gb_buf_append(b, "\\r", 2);
            break;
        case '\t':
            gb_buf_append(b, "\\t", 2);
            break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            gb_buf_append(b, u, 6);
            break;
        }
        }
    }
    gb_buf_append(b, s + n - run, run);
    gb_buf_append(b, "\"", 1);
}

void gb_json_str_or_null(gb_buf_t *b, const char *s)
{
    if (s == NULL) {
        gb_buf_append(b, "null", 4);
    } else {
        gb_json_quote(b, s, strlen(s));
    }
}

void gb_json_seconds(gb_buf_t *b, int64_t ms)
{
    if (ms < 0) {
        gb_buf_append(b, "null", 4);
        return;
    }
    gb_buf_append_i64(b, ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac != 0) {
        char d[4] = {'.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10),
                     (char)('0' + frac % 10)};
        size_t n = 4;
        while (d[n - 1] == '0') {
            n--;
        }
        gb_buf_append(b, d, n);
    }
}

void gb_json_number(gb_buf_t *b, double x)
{
    if (!isfinite(x)) {
        gb_buf_append(b, "null", 4);
        return;
    }
    if (fabs(x) < 1e12) {
        /* The usual case, without printf: thousandths rounded half away from zero, then the
         * same digits as a duration. */
        int64_t t = llround(x * 1000.0);
        if (t < 0) {
            gb_buf_append(b, "-", 1);
            t = -t;
        }
        gb_json_seconds(b, t);
        return;
    }
    char s[64];
    int n = snprintf(s, sizeof(s), "%.3f", x);
    if (n <= 0 || (size_t)n >= sizeof(s)) {
        gb_buf_append(b, "null", 4);
        return;
    }
    while (n > 1 && s[n - 1] == '0') {
        n--;
    }
    if (s[n - 1] == '.') {
        n--;
    }
    gb_buf_append(b, s, (size_t)n);
}

void gb_json_time(gb_buf_t *b, int64_t ms)
{
    if (ms == INT64_MIN) {
        gb_buf_append(b, "null", 4);
        return;
    }
    char t[32];
    gb_time_format_rfc3339(ms, t);
    gb_buf_append(b, "\"", 1);
    gb_buf_append(b, t, 24); /* always "YYYY-MM-DDTHH:MM:SS.mmmZ" */
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
