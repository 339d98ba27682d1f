/* harness: helpers shared by the integration tests (see harness.c). */
#ifndef GB_TEST_HARNESS_H
#define GB_TEST_HARNESS_H

#include "util/util.h"

/* Reads a whole file under tests/data/ into a NUL-terminated heap string; NULL if missing. */
char *gb_th_read_data(const char *relpath, size_t *len);

#endif
