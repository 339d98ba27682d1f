/* arena: bump allocation in chunks, released in one step (h2o's per-request pool).
 * Large requests get a chunk of their own so a big body never wastes a standard chunk. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define ARENA_CHUNK 4096
#define ARENA_ALIGN 16

struct gb_arena_chunk {
    gb_arena_chunk_t *next;
    size_t size;
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

void gb_arena_init(gb_arena_t *a)
{
    a->head = NULL;
    a->total = 0;
}

void gb_arena_dispose(gb_arena_t *a)
{
    gb_arena_chunk_t *c = a->head;
    while (c != NULL) {
        gb_arena_chunk_t *next = c->next;
        free(c);
        c = next;
    }
    gb_arena_init(a);
}

void gb_arena_reset(gb_arena_t *a)
{
    gb_arena_chunk_t *keep = NULL;
    gb_arena_chunk_t *c = a->head;
    while (c != NULL) {
        gb_arena_chunk_t *next = c->next;
        if (keep == NULL && c->size == ARENA_CHUNK) {
            keep = c;
        } else {
            free(c);
        }
        c = next;
    }
    if (keep != NULL) {
        keep->next = NULL;
        keep->used = 0;
    }
    a->head = keep;
    a->total = 0;
}

void *gb_arena_alloc(gb_arena_t *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    gb_arena_chunk_t *c = a->head;

    if (need == 0) {
        need = ARENA_ALIGN;
    }
    if (c == NULL || c->size - c->used < need) {
        size_t size = need > ARENA_CHUNK / 4 ? need : ARENA_CHUNK;
        gb_arena_chunk_t *nc = gb_xmalloc(sizeof(*nc) + size);
        nc->size = size;
        nc->used = 0;
        if (size == ARENA_CHUNK || c == NULL) {
            nc->next = c;
            a->head = nc;
        } else {
            /* A dedicated chunk goes behind the current one, which keeps its free space. */
            nc->next = c->next;
            c->next = nc;
        }
        c = nc;
    }
    void *p = c->data + c->used;
    c->used += need;
    a->total += n;
    return p;
}

char *gb_arena_strndup(gb_arena_t *a, const char *s, size_t n)
{
    char *p = gb_arena_alloc(a, n + 1);
    if (n > 0) {
        memcpy(p, s, n);
    }
    p[n] = '\0';
    return p;
}

char *gb_arena_sprintf(gb_arena_t *a, const char *fmt, ...)
{
    va_list ap;
    char small[256];

    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return gb_arena_strndup(a, "", 0);
    }
    char *p = gb_arena_alloc(a, (size_t)n + 1);
    if ((size_t)n < sizeof(small)) {
        memcpy(p, small, (size_t)n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(p, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return p;
}
