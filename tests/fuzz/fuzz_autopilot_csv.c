/* fuzz_autopilot_csv: arbitrary bytes through the Autopilot CSV reader, once whole and once in
 * pieces whose size the first byte picks. Both runs must give the same rows, errors and verdict
 * (the server feeds bytes as they arrive); every row must pass the checks it promises (a valid
 * serial, base64 hash, line numbers after the header and never going back). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct run {
    gb_buf_t text;
    uint64_t last_line;
} run_t;

static void on_row(const gb_proto_csv_row_t *row, void *arg)
{
    run_t *r = arg;
    if (row->line < 2 || row->line < r->last_line ||
        !gb_proto_serial_valid(row->serial.p, row->serial.len) ||
        strlen(row->serial.p) != row->serial.len || row->hardware_hash.len == 0 ||
        row->hardware_hash.len % 4 != 0) {
        abort();
    }
    r->last_line = row->line;
    gb_buf_appendf(&r->text, "R%llu %s %s %s %s %s\n", (unsigned long long)row->line, row->serial.p,
                   row->product_id.p, row->hardware_hash.p,
                   row->group_tag.p != NULL ? row->group_tag.p : "-",
                   row->assigned_user.p != NULL ? row->assigned_user.p : "-");
}

static void on_error(uint64_t line, const char *message, void *arg)
{
    run_t *r = arg;
    if (line < 2 || line < r->last_line || message[0] == '\0') {
        abort();
    }
    r->last_line = line;
    gb_buf_appendf(&r->text, "E%llu %s\n", (unsigned long long)line, message);
}

static const gb_proto_csv_ops_t ops = {on_row, on_error};

static void read_all(const uint8_t *data, size_t size, size_t step, run_t *r)
{
    gb_error_t err;
    int rc = 0;
    gb_proto_csv_t *p = gb_proto_csv_new(&ops, r);
    gb_buf_init(&r->text);
    gb_buf_append_str(&r->text, "");
    r->last_line = 0;
    for (size_t off = 0; off < size && rc == 0; off += step) {
        size_t n = size - off < step ? size - off : step;
        rc = gb_proto_csv_feed(p, data + off, n, &err);
    }
    if (rc == 0) {
        rc = gb_proto_csv_finish(p, &err);
    }
    if (rc != 0) {
        if (rc != GB_EINVAL || strcmp(err.code, "invalid_csv") != 0) {
            abort();
        }
        gb_buf_appendf(&r->text, "refused: %s\n", err.message);
    }
    gb_proto_csv_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_t whole, pieces;
    size_t step = 1;

    if (size > 0) {
        step = (size_t)data[0] % 64 + 1;
        data++;
        size--;
    }
    read_all(data, size, size > 0 ? size : 1, &whole);
    read_all(data, size, step, &pieces);
    if (whole.text.len != pieces.text.len ||
        memcmp(whole.text.data, pieces.text.data, whole.text.len) != 0) {
        abort();
    }
    gb_buf_dispose(&whole.text);
    gb_buf_dispose(&pieces.text);
    return 0;
}
