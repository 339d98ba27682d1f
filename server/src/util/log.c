/* log: one line per event on stderr, key=value style, message always quoted so a line
 * can be split on spaces outside quotes. The level is process-wide. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util.h"

static gb_log_level_t current_level = GB_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void gb_log_set_level(gb_log_level_t level)
{
    current_level = level;
}

gb_log_level_t gb_log_get_level(void)
{
    return current_level;
}

bool gb_log_enabled(gb_log_level_t level)
{
    return level >= current_level;
}

bool gb_log_level_parse(const char *s, gb_log_level_t *out)
{
    for (size_t i = 0; i < GB_ARRAY_LEN(level_names); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (gb_log_level_t)i;
            return true;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = GB_LOG_WARN;
        return true;
    }
    return false;
}

const char *gb_log_level_name(gb_log_level_t level)
{
    return (unsigned)level < GB_ARRAY_LEN(level_names) ? level_names[level] : "?";
}

void gb_log_quote(gb_buf_t *b, const char *s, size_t n)
{
    gb_buf_reserve(b, n + 2);
    gb_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            gb_buf_append(b, esc, 2);
        } else if (c == '\n') {
            gb_buf_append(b, "\\n", 2);
        } else if (c < 0x20 || c == 0x7f) {
            gb_buf_appendf(b, "\\x%02x", c);
        } else {
            gb_buf_append(b, &s[i], 1);
        }
    }
    gb_buf_append(b, "\"", 1);
}

/* Formats the whole line and writes it with one fwrite on unbuffered stderr (one write(2)),
 * so concurrent processes never interleave halves of lines. The usual line fits the stack. */
static GB_PRINTF(4, 0) void vlog(gb_log_level_t level, const char *module, const char *keys,
                                 const char *fmt, va_list ap)
{
    char ts[32];
    char small[512];
    gb_buf_t heap, line;
    const char *msg = small;
    va_list ap2;

    if (!gb_log_enabled(level)) {
        return;
    }
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    gb_buf_init(&heap);
    if (n < 0) {
        n = 0;
        small[0] = '\0';
    } else if ((size_t)n >= sizeof(small)) {
        gb_buf_vappendf(&heap, fmt, ap2);
        msg = heap.data;
    }
    va_end(ap2);
    size_t len = (size_t)n;
    /* Library messages (PQerrorMessage) end with a newline: trim trailing whitespace. */
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' ')) {
        len--;
    }
    gb_time_format_rfc3339(gb_time_now_ms(), ts);
    gb_buf_init(&line);
    gb_buf_reserve(&line, len + 128);
    gb_buf_appendf(&line, "ts=%s level=%s module=%s ", ts, gb_log_level_name(level), module);
    if (keys != NULL && keys[0] != '\0') {
        gb_buf_append_str(&line, keys);
        gb_buf_append(&line, " ", 1);
    }
    gb_buf_append_str(&line, "msg=");
    gb_log_quote(&line, msg, len);
    gb_buf_append(&line, "\n", 1);
    fwrite(line.data, 1, line.len, stderr);
    gb_buf_dispose(&line);
    gb_buf_dispose(&heap);
}

void gb_log(gb_log_level_t level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, module, NULL, fmt, ap);
    va_end(ap);
}

void gb_logk(gb_log_level_t level, const char *module, const char *keys, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, module, keys, fmt, ap);
    va_end(ap);
}
