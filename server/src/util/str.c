/* str: borrowed slices (gb_str_t) and the owned growable buffer (gb_buf_t).
 * A gb_buf_t's data is always NUL-terminated once anything was appended. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

gb_str_t gb_str_from_cstr(const char *s)
{
    return (gb_str_t){s, s ? strlen(s) : 0};
}

bool gb_str_eq(gb_str_t a, gb_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

bool gb_str_eq_cstr(gb_str_t a, const char *s)
{
    return gb_str_eq(a, gb_str_from_cstr(s));
}

bool gb_str_case_eq_cstr(gb_str_t a, const char *s)
{
    size_t n = strlen(s);
    return a.len == n && (n == 0 || strncasecmp(a.p, s, n) == 0);
}

bool gb_str_has_prefix(gb_str_t a, const char *prefix)
{
    size_t n = strlen(prefix);
    return a.len >= n && memcmp(a.p, prefix, n) == 0;
}

bool gb_str_to_u64(gb_str_t s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (s.len == 0 || s.len > 20) {
        return false;
    }
    for (size_t i = 0; i < s.len; i++) {
        unsigned d = (unsigned char)s.p[i] - '0';
        if (d > 9) {
            return false;
        }
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    if (v > max) {
        return false;
    }
    *out = v;
    return true;
}

void gb_buf_init(gb_buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void gb_buf_dispose(gb_buf_t *b)
{
    free(b->data);
    gb_buf_init(b);
}

void gb_buf_grow(gb_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        cap *= 2;
    }
    b->data = gb_xrealloc(b->data, cap);
    b->cap = cap;
}

void gb_buf_reserve(gb_buf_t *b, size_t extra)
{
    if (b->len + extra + 1 > b->cap) {
        gb_buf_grow(b, extra);
    }
}

void gb_buf_append_u64(gb_buf_t *b, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    gb_buf_append(b, tmp + sizeof(tmp) - n, n);
}

void gb_buf_append_i64(gb_buf_t *b, int64_t v)
{
    if (v < 0) {
        gb_buf_append(b, "-", 1);
        gb_buf_append_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        gb_buf_append_u64(b, (uint64_t)v);
    }
}

void gb_buf_vappendf(gb_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    gb_buf_reserve(b, 64);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n >= b->cap - b->len) {
        gb_buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    b->len += (size_t)n;
}

void gb_buf_appendf(gb_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gb_buf_vappendf(b, fmt, ap);
    va_end(ap);
}

void gb_buf_reset(gb_buf_t *b)
{
    b->len = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

void gb_buf_consume(gb_buf_t *b, size_t n)
{
    if (n >= b->len) {
        gb_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *gb_buf_steal(gb_buf_t *b, size_t *len)
{
    char *p;
    if (b->data == NULL) {
        gb_buf_reserve(b, 0);
        b->data[0] = '\0';
    }
    p = b->data;
    if (len != NULL) {
        *len = b->len;
    }
    gb_buf_init(b);
    return p;
}
