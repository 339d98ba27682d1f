/* util: the small pieces every other folder uses. No libuv, no libpq.
 * Memory: gb_x* allocators abort on OOM, so callers never test for NULL.
 * Strings: gb_str_t is a borrowed slice (no NUL); gb_buf_t is an owned growable buffer;
 * gb_arena_t hands out memory released in one step (one per request). */
#ifndef GB_UTIL_H
#define GB_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define GB_UNUSED(x)                       ((void)(x))
#define GB_MUST_CHECK                      __attribute__((warn_unused_result))
#define GB_PRINTF(f, a)                    __attribute__((format(printf, f, a)))
#define GB_ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))
#define gb_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Invariants only, never compiled out; bad input never asserts. */
#define GB_ASSERT(expr)                                 \
    do {                                                \
        if (!(expr)) {                                  \
            gb__assert_fail(#expr, __FILE__, __LINE__); \
        }                                               \
    } while (0)
_Noreturn void gb__assert_fail(const char *expr, const char *file, int line);

/* Our own error codes, below libuv's range. gb_strerror() falls back to uv_strerror() through
 * a hook the net layer installs, so util itself needs no libuv. */
enum {
    GB_EBUSY = -20001,   /* a queue is full */
    GB_EDBDOWN = -20002, /* the database is unreachable */
    GB_EINVAL = -20003,  /* invalid argument or input */
    GB_ENOTFOUND = -20004,
    GB_ECLOSED = -20005, /* the object is shutting down */
    GB_ETIMEOUT = -20006,
    GB_EDB = -20007, /* the database answered with an error */
};
const char *gb_strerror(int err);
void gb_strerror_set_fallback(const char *(*fallback)(int err));

/* ---- allocation (abort on out of memory) ---- */
void *gb_xmalloc(size_t n);
void *gb_xcalloc(size_t count, size_t size);
void *gb_xrealloc(void *p, size_t n);
char *gb_xstrdup(const char *s);
char *gb_xstrndup(const char *s, size_t n);
/* Allocates and formats; the caller frees. */
char *gb_xasprintf(const char *fmt, ...) GB_PRINTF(1, 2);

/* ---- borrowed slices ---- */
typedef struct gb_str {
    const char *p;
    size_t len;
} gb_str_t;

#define GB_STR_LIT(s) ((gb_str_t){(s), sizeof(s) - 1})
gb_str_t gb_str_from_cstr(const char *s);
bool gb_str_eq(gb_str_t a, gb_str_t b);
bool gb_str_eq_cstr(gb_str_t a, const char *s);
bool gb_str_case_eq_cstr(gb_str_t a, const char *s);
bool gb_str_has_prefix(gb_str_t a, const char *prefix);
/* Parses a whole slice as an unsigned decimal number no larger than max. */
bool gb_str_to_u64(gb_str_t s, uint64_t max, uint64_t *out);

/* ---- owned growable buffer ---- */
typedef struct gb_buf {
    char *data; /* NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
} gb_buf_t;

void gb_buf_init(gb_buf_t *b);
void gb_buf_dispose(gb_buf_t *b);
void gb_buf_reserve(gb_buf_t *b, size_t extra);
/* Grows the buffer for extra more bytes and the NUL (the slow path of the appends). */
void gb_buf_grow(gb_buf_t *b, size_t extra);
/* Inline: the JSON views call these a few dozen times per device, and the string form lets the
 * compiler take a literal's length at compile time. */
static inline void gb_buf_append(gb_buf_t *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        gb_buf_grow(b, n);
    }
    if (n > 0) { /* p may be NULL then */
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
}
static inline void gb_buf_append_str(gb_buf_t *b, const char *s)
{
    gb_buf_append(b, s, strlen(s));
}
void gb_buf_appendf(gb_buf_t *b, const char *fmt, ...) GB_PRINTF(2, 3);
/* Decimal integers without printf (the JSON views write thousands of them per request). */
void gb_buf_append_u64(gb_buf_t *b, uint64_t v);
void gb_buf_append_i64(gb_buf_t *b, int64_t v);
void gb_buf_vappendf(gb_buf_t *b, const char *fmt, va_list ap) GB_PRINTF(2, 0);
void gb_buf_reset(gb_buf_t *b);
/* Removes the first n bytes. */
void gb_buf_consume(gb_buf_t *b, size_t n);
/* Hands the data to the caller (who frees it) and leaves the buffer empty. */
char *gb_buf_steal(gb_buf_t *b, size_t *len);

/* ---- arena: many small allocations, one release ---- */
typedef struct gb_arena_chunk gb_arena_chunk_t;
typedef struct gb_arena {
    gb_arena_chunk_t *head; /* private */
    size_t total;           /* read-only: bytes handed out */
} gb_arena_t;

void gb_arena_init(gb_arena_t *a);
void gb_arena_dispose(gb_arena_t *a);
/* Releases everything but keeps the first chunk for reuse. */
void gb_arena_reset(gb_arena_t *a);
void *gb_arena_alloc(gb_arena_t *a, size_t n);
char *gb_arena_strndup(gb_arena_t *a, const char *s, size_t n);
char *gb_arena_sprintf(gb_arena_t *a, const char *fmt, ...) GB_PRINTF(2, 3);

/* ---- logging: one key=value line per event on stderr ---- */
typedef enum gb_log_level {
    GB_LOG_DEBUG = 0,
    GB_LOG_INFO,
    GB_LOG_WARN,
    GB_LOG_ERROR,
} gb_log_level_t;

void gb_log_set_level(gb_log_level_t level);
gb_log_level_t gb_log_get_level(void);
bool gb_log_enabled(gb_log_level_t level);
/* Parses "debug", "info", "warn" or "error". */
bool gb_log_level_parse(const char *s, gb_log_level_t *out);
const char *gb_log_level_name(gb_log_level_t level);
/* Writes "ts=... level=... module=... msg=\"...\"" with the message quoted and escaped. */
void gb_log(gb_log_level_t level, const char *module, const char *fmt, ...) GB_PRINTF(3, 4);
/* Same, with extra key=value pairs (already formatted, e.g. "conn=4 peer=1.2.3.4:5") first. */
void gb_logk(gb_log_level_t level, const char *module, const char *keys, const char *fmt, ...)
    GB_PRINTF(4, 5);
/* Appends s to b as a double-quoted string with \" \\ and control bytes escaped. */
void gb_log_quote(gb_buf_t *b, const char *s, size_t n);

/* ---- client-visible errors: map onto {"error": {code, message, field, index}} ---- */
typedef struct gb_error {
    int status;     /* HTTP status; 0 when no error is set */
    char code[48];  /* snake_case */
    char field[96]; /* "" when none */
    long index;     /* batch element, -1 when none */
    char message[256];
} gb_error_t;

void gb_error_clear(gb_error_t *e);
void gb_error_set(gb_error_t *e, int status, const char *code, const char *field, const char *fmt,
                  ...) GB_PRINTF(5, 6);
bool gb_error_is_set(const gb_error_t *e);
/* Writes the error as the contract's JSON body (no trailing newline). */
void gb_error_to_json(const gb_error_t *e, gb_buf_t *out);
/* Appends s as a JSON string literal (quotes included), escaping as RFC 8259 requires. */
void gb_json_quote(gb_buf_t *b, const char *s, size_t n);
/* JSON values as the API writes them, each null for its "not known" input:
 *   gb_json_str_or_null   a string (NULL: null);
 *   gb_json_number        a number with up to three decimals, trailing zeros trimmed (not
 *                         finite: null);
 *   gb_json_seconds       milliseconds as seconds, the same way (negative: null);
 *   gb_json_time          UTC milliseconds as an RFC 3339 string with milliseconds (INT64_MIN,
 *                         which the domain calls GB_TIME_NONE: null). */
void gb_json_str_or_null(gb_buf_t *b, const char *s);
void gb_json_number(gb_buf_t *b, double x);
void gb_json_seconds(gb_buf_t *b, int64_t ms);
void gb_json_time(gb_buf_t *b, int64_t ms);

/* ---- time ---- */
/* Wall clock in milliseconds since the Unix epoch. */
int64_t gb_time_now_ms(void);
/* Monotonic clock in milliseconds, for durations. */
int64_t gb_time_mono_ms(void);
/* Parses an RFC 3339 date-time ("2026-11-24T10:00:00.123+02:00", 'Z' or offset, optional
 * fraction, 't'/'z' accepted) into UTC milliseconds since the epoch. False when invalid. */
bool gb_time_parse_rfc3339(const char *s, size_t len, int64_t *out_ms);
/* Formats UTC milliseconds as "2026-11-24T10:00:00.000Z" into out (at least 25 bytes). */
void gb_time_format_rfc3339(int64_t ms, char out[32]);

/* ---- hashing and randomness (libcrypto and the OS) ---- */
#define GB_SHA256_LEN 32
void gb_sha256(const void *data, size_t len, uint8_t out[GB_SHA256_LEN]);
/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void gb_hex_encode(const uint8_t *in, size_t n, char *out);
/* The value of one hex digit (either case), or -1. */
int gb_hex_value(char c);
/* Decodes exactly 2n hex digits (either case) of in[0..len) into out[0..n); false otherwise. */
bool gb_hex_decode(const char *in, size_t len, uint8_t *out, size_t n) GB_MUST_CHECK;
/* Fills out with n bytes from the OS random source; false on failure. */
bool gb_random_bytes(void *out, size_t n) GB_MUST_CHECK;
/* Compares in time that depends only on n. */
bool gb_const_time_eq(const void *a, const void *b, size_t n);

#endif
