/* fuzz_agent_json: libFuzzer harness for the agent protocol. Each input is decoded as a whole
 * request; a request that passes is applied to a fresh device through the server's path (batch
 * prepare, apply), rendered in both views, and its state must survive a snapshot round trip and
 * its messages a canonical-JSON round trip unchanged. The input is also fed to the lone-message
 * and snapshot decoders, which must refuse garbage without crashing or leaking. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/domain.h"
#include "protocol/protocol.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_agent_json: %s\n", what);
        abort();
    }
}

static char *snapshot(const gb_dev_t *dev)
{
    gb_buf_t b;
    gb_buf_init(&b);
    gb_proto_snapshot_encode(dev, &b);
    return gb_buf_steal(&b, NULL);
}

static void exercise_request(const gb_proto_request_t *req, gb_arena_t *arena)
{
    gb_dev_t dev;
    gb_apply_ctx_t ctx = {30, (req->n_msgs & 1) != 0, 1795510800000LL};
    gb_proto_view_opts_t opts = {1795510800000LL + 3600000, 900000, 0};
    gb_buf_t out;

    gb_dev_init(&dev, req->serial);
    check(gb_proto_serial_valid(req->serial, req->serial_len), "accepted an invalid serial");

    /* Every message written back canonically decodes to the same canonical text. */
    gb_buf_init(&out);
    for (size_t i = 0; i < req->n_msgs; i++) {
        gb_buf_t again;
        gb_msg_t m;
        gb_error_t err;
        gb_buf_reset(&out);
        gb_proto_encode_message(&req->msgs[i], &out);
        gb_error_clear(&err);
        check(gb_proto_decode_message(out.data, out.len, arena, &m, &err) == 0,
              "canonical message refused");
        gb_buf_init(&again);
        gb_proto_encode_message(&m, &again);
        check(again.len == out.len && memcmp(again.data, out.data, out.len) == 0,
              "canonical message changed");
        gb_buf_dispose(&again);
    }

    /* The server's path: prepare, apply (a replay when asked), twice to see retries. */
    for (int pass = 0; pass < 2; pass++) {
        gb_msg_t *batch = gb_arena_alloc(arena, req->n_msgs * sizeof(*batch));
        size_t n = req->n_msgs;
        memcpy(batch, req->msgs, n * sizeof(*batch));
        if (gb_msg_batch_prepare(&dev, batch, &n)) {
            gb_dev_rebuild(&dev, &ctx, batch, n, NULL, 0);
        } else {
            gb_dev_apply_batch(&dev, &ctx, batch, n);
        }
        check(dev.attempt >= 1 && dev.attempt == dev.n_attempts, "attempt invariant");
        if (gb_dev_retry(&dev, ctx.received_ms + pass) != 0) {
            check(dev.status != GB_DEV_RED || dev.n_attempts == GB_DEV_MAX_ATTEMPTS,
                  "retry refused while red");
        }
    }

    gb_buf_reset(&out);
    gb_proto_device_json(&dev, &opts, &out);
    gb_buf_reset(&out);
    gb_proto_device_detail_json(&dev, &opts, &out);
    gb_buf_reset(&out);
    gb_proto_agent_reply_json(&dev, &out);
    gb_buf_dispose(&out);

    char *a = snapshot(&dev);
    gb_dev_t back;
    gb_error_t err;
    gb_error_clear(&err);
    check(gb_proto_snapshot_decode(a, strlen(a), &back, &err) == 0, "own snapshot refused");
    char *b = snapshot(&back);
    check(strcmp(a, b) == 0, "snapshot round trip changed the state");
    free(a);
    free(b);
    gb_dev_dispose(&back);
    gb_dev_dispose(&dev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gb_arena_t arena;
    gb_error_t err;
    gb_proto_request_t req;
    const char *text = (const char *)data;

    gb_arena_init(&arena);
    gb_error_clear(&err);
    if (gb_proto_decode_request(text, size, &arena, &req, &err) == 0) {
        check(!gb_error_is_set(&err), "error set on success");
        exercise_request(&req, &arena);
    } else {
        check(err.status == 400 && err.code[0] != '\0', "rejection without an error");
    }

    gb_msg_t m;
    gb_error_clear(&err);
    if (gb_proto_decode_message(text, size, &arena, &m, &err) != 0) {
        check(err.status == 400, "lone message rejection without an error");
    }

    gb_dev_t dev;
    gb_error_clear(&err);
    if (gb_proto_snapshot_decode(text, size, &dev, &err) == 0) {
        gb_buf_t out;
        gb_buf_init(&out);
        gb_proto_device_detail_json(&dev, NULL, &out);
        gb_buf_dispose(&out);
        gb_dev_dispose(&dev);
    }
    gb_arena_dispose(&arena);
    return 0;
}
