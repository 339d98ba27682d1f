/* audit: the handover audit trail's hash chain (migrations/0007_audit_log.sql defines it; the
 * database computes it when an entry is written, this code recomputes it when it is read).
 * Pure: SHA-256 from util, no I/O. */
#ifndef GB_DOMAIN_AUDIT_H
#define GB_DOMAIN_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define GB_AUDIT_HASH_LEN GB_SHA256_LEN
#define GB_AUDIT_HEX_LEN  ((size_t)2 * GB_AUDIT_HASH_LEN) /* a hash in hex, without the NUL */

/* One stored entry, as read back: strings are not NUL-terminated copies but views (p, len). */
typedef struct gb_audit_entry {
    gb_str_t serial;
    uint64_t seq;
    int64_t at_us; /* microseconds since 1970-01-01 UTC */
    gb_str_t actor;
    gb_str_t action;
    gb_str_t detail; /* PostgreSQL's text form of the jsonb value */
    uint8_t prev_hash[GB_AUDIT_HASH_LEN];
    uint8_t hash[GB_AUDIT_HASH_LEN];
} gb_audit_entry_t;

/* Why a chain does not verify. */
typedef enum gb_audit_fault {
    GB_AUDIT_OK = 0,
    GB_AUDIT_SEQ,     /* entries are not numbered 1, 2, 3... (one removed or inserted) */
    GB_AUDIT_PREV,    /* prev_hash is not the previous entry's hash (or the genesis value) */
    GB_AUDIT_HASH,    /* hash does not match the entry's contents: the entry was changed */
    GB_AUDIT_HEAD,    /* the last entry is not the device's recorded head (tail removed) */
    GB_AUDIT_NO_HEAD, /* entries exist but no head was recorded, or a head but no entries */
    GB_AUDIT_FAULT_COUNT
} gb_audit_fault_t;

/* The outcome of gb_audit_verify. */
typedef struct gb_audit_check {
    gb_audit_fault_t fault;
    size_t index; /* the first bad entry (entries[index]); n for GB_AUDIT_HEAD / NO_HEAD */
} gb_audit_check_t;

/* The device's genesis value: SHA-256("glovebox-audit-genesis\n" len ":" serial "\n"). */
void gb_audit_genesis(gb_str_t serial, uint8_t out[GB_AUDIT_HASH_LEN]);
/* Appends the canonical encoding of e (what its hash covers after prev_hash) to b. */
void gb_audit_payload(const gb_audit_entry_t *e, gb_buf_t *b);
/* SHA-256(prev || payload(e)). */
void gb_audit_hash(const uint8_t prev[GB_AUDIT_HASH_LEN], const gb_audit_entry_t *e,
                   uint8_t out[GB_AUDIT_HASH_LEN]);
/* Walks a device's entries in seq order: numbered from 1 without a gap, each linked to the one
 * before (the first to the genesis value of serial), each hash recomputed; then the last entry
 * must be the head (head_seq, head_hash; has_head false when none is recorded). */
gb_audit_check_t gb_audit_verify(gb_str_t serial, const gb_audit_entry_t *entries, size_t n,
                                 bool has_head, uint64_t head_seq,
                                 const uint8_t head_hash[GB_AUDIT_HASH_LEN]);
/* A sentence for a fault ("entry 3 was changed after it was written"). */
const char *gb_audit_fault_text(gb_audit_fault_t fault);
/* Stable snake_case id of a fault ("changed"). */
const char *gb_audit_fault_id(gb_audit_fault_t fault);

#endif
