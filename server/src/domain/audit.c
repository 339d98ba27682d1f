/* audit: recomputing the hash chain of migrations/0007_audit_log.sql, byte for byte. */
#include "domain/audit.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void put_field(gb_buf_t *b, const char *p, size_t len)
{
    gb_buf_append_u64(b, len);
    gb_buf_append(b, ":", 1);
    gb_buf_append(b, p, len);
    gb_buf_append(b, "\n", 1);
}

static void put_i64(gb_buf_t *b, int64_t v)
{
    char digits[24];
    int n = snprintf(digits, sizeof(digits), "%" PRId64, v);
    put_field(b, digits, (size_t)n);
}

void gb_audit_genesis(gb_str_t serial, uint8_t out[GB_AUDIT_HASH_LEN])
{
    gb_buf_t b;
    gb_buf_init(&b);
    gb_buf_append_str(&b, "glovebox-audit-genesis\n");
    put_field(&b, serial.p, serial.len);
    gb_sha256(b.data, b.len, out);
    gb_buf_dispose(&b);
}

void gb_audit_payload(const gb_audit_entry_t *e, gb_buf_t *b)
{
    gb_buf_append_str(b, "glovebox-audit-v1\n");
    put_field(b, e->serial.p, e->serial.len);
    put_i64(b, (int64_t)e->seq);
    put_i64(b, e->at_us);
    put_field(b, e->actor.p, e->actor.len);
    put_field(b, e->action.p, e->action.len);
    put_field(b, e->detail.p, e->detail.len);
}

void gb_audit_hash(const uint8_t prev[GB_AUDIT_HASH_LEN], const gb_audit_entry_t *e,
                   uint8_t out[GB_AUDIT_HASH_LEN])
{
    gb_buf_t b;
    gb_buf_init(&b);
    gb_buf_append(&b, prev, GB_AUDIT_HASH_LEN);
    gb_audit_payload(e, &b);
    gb_sha256(b.data, b.len, out);
    gb_buf_dispose(&b);
}

gb_audit_check_t gb_audit_verify(gb_str_t serial, const gb_audit_entry_t *entries, size_t n,
                                 bool has_head, uint64_t head_seq,
                                 const uint8_t head_hash[GB_AUDIT_HASH_LEN])
{
    uint8_t prev[GB_AUDIT_HASH_LEN], h[GB_AUDIT_HASH_LEN];
    gb_audit_genesis(serial, prev);
    for (size_t i = 0; i < n; i++) {
        const gb_audit_entry_t *e = &entries[i];
        if (e->seq != (uint64_t)i + 1) {
            return (gb_audit_check_t){GB_AUDIT_SEQ, i};
        }
        if (memcmp(e->prev_hash, prev, GB_AUDIT_HASH_LEN) != 0) {
            return (gb_audit_check_t){GB_AUDIT_PREV, i};
        }
        gb_audit_hash(prev, e, h);
        if (memcmp(h, e->hash, GB_AUDIT_HASH_LEN) != 0) {
            return (gb_audit_check_t){GB_AUDIT_HASH, i};
        }
        memcpy(prev, e->hash, GB_AUDIT_HASH_LEN);
    }
    if (has_head != (n > 0)) {
        return (gb_audit_check_t){GB_AUDIT_NO_HEAD, n};
    }
    if (n > 0 && (head_seq != n || memcmp(head_hash, prev, GB_AUDIT_HASH_LEN) != 0)) {
        return (gb_audit_check_t){GB_AUDIT_HEAD, n};
    }
    return (gb_audit_check_t){GB_AUDIT_OK, n};
}

const char *gb_audit_fault_text(gb_audit_fault_t fault)
{
    switch (fault) {
    case GB_AUDIT_OK:
        return "every entry verifies";
    case GB_AUDIT_SEQ:
        return "an entry is missing or was inserted here: the numbering breaks";
    case GB_AUDIT_PREV:
        return "this entry does not link to the one before it: an entry was removed or replaced";
    case GB_AUDIT_HASH:
        return "this entry was changed after it was written: its hash does not match";
    case GB_AUDIT_HEAD:
        return "entries were removed from the end: the last one is not the recorded head";
    case GB_AUDIT_NO_HEAD:
        return "the chain's recorded head and its entries disagree";
    default:
        return "unknown fault";
    }
}

const char *gb_audit_fault_id(gb_audit_fault_t fault)
{
    static const char *const ids[GB_AUDIT_FAULT_COUNT] = {"none",    "renumbered", "relinked",
                                                          "changed", "truncated",  "head_mismatch"};
    return fault < GB_AUDIT_FAULT_COUNT ? ids[fault] : "unknown";
}
