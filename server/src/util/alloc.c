/* alloc: allocation that aborts on out-of-memory (as h2o, Redis and kore do), plus the
 * assertion and error-string helpers. Nothing here returns NULL to its caller. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *(*strerror_fallback)(int err);

_Noreturn void gb__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "level=error module=assert msg=\"%s\" at=%s:%d\n", expr, file, line);
    abort();
}

static _Noreturn void out_of_memory(size_t n)
{
    fprintf(stderr, "level=error module=alloc msg=\"out of memory\" bytes=%zu\n", n);
    abort();
}

void *gb_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        out_of_memory(n);
    }
    return p;
}

void *gb_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL) {
        out_of_memory(count * size);
    }
    return p;
}

void *gb_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        out_of_memory(n);
    }
    return q;
}

char *gb_xstrdup(const char *s)
{
    return gb_xstrndup(s, strlen(s));
}

char *gb_xstrndup(const char *s, size_t n)
{
    char *p = gb_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *gb_xasprintf(const char *fmt, ...)
{
    gb_buf_t b;
    va_list ap;

    gb_buf_init(&b);
    va_start(ap, fmt);
    gb_buf_vappendf(&b, fmt, ap);
    va_end(ap);
    return gb_buf_steal(&b, NULL);
}

void gb_strerror_set_fallback(const char *(*fallback)(int err))
{
    strerror_fallback = fallback;
}

const char *gb_strerror(int err)
{
    switch (err) {
    case GB_EBUSY:
        return "queue full";
    case GB_EDBDOWN:
        return "database unavailable";
    case GB_EINVAL:
        return "invalid argument";
    case GB_ENOTFOUND:
        return "not found";
    case GB_ECLOSED:
        return "closed";
    case GB_ETIMEOUT:
        return "timed out";
    case GB_EDB:
        return "database error";
    default:
        break;
    }
    if (strerror_fallback != NULL) {
        return strerror_fallback(err);
    }
    return err < 0 ? strerror(-err) : "unknown error";
}
