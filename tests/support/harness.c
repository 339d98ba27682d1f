/* harness: helpers shared by the tests: data files, and (for integration tests) the
 * throwaway database, a real gloveboxd and a small blocking HTTP client. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>

char *gb_th_read_data(const char *relpath, size_t *len)
{
    char path[1024];
    gb_buf_t b;
    char chunk[8192];
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", GB_TEST_DATA_DIR, relpath);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    gb_buf_init(&b);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        gb_buf_append(&b, chunk, n);
    }
    fclose(f);
    return gb_buf_steal(&b, len);
}
