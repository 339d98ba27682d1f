/* Unit tests of the audit trail's hash chain (domain/audit.c): the genesis value and an entry's
 * hash against vectors computed independently (Python's hashlib over the encoding that
 * migrations/0007_audit_log.sql specifies), and every fault the verifier names. The database's
 * side of the same encoding is tested by integration.test_audit (a chain written by the
 * trigger verifies here). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "domain/audit.h"

#define SERIAL "PF3ABC12"

static gb_str_t S(const char *s)
{
    return gb_str_from_cstr(s);
}

static void hex(const uint8_t h[GB_AUDIT_HASH_LEN], char out[2 * GB_AUDIT_HASH_LEN + 1])
{
    gb_hex_encode(h, GB_AUDIT_HASH_LEN, out);
}

static void test_genesis_and_hash_match_independent_vectors(void **state)
{
    (void)state;
    uint8_t g[GB_AUDIT_HASH_LEN], h[GB_AUDIT_HASH_LEN];
    char x[2 * GB_AUDIT_HASH_LEN + 1];
    gb_audit_genesis(S(SERIAL), g);
    hex(g, x);
    assert_string_equal(x, "ca8df1849f223bec0715beed6a5f6c2c26fdc36dc4f0f5fe01c54fd4a86f042f");
    /* Multi-byte characters count in bytes. */
    gb_audit_entry_t e = {.serial = S(SERIAL),
                          .seq = 1,
                          .at_us = 1795507200123456,
                          .actor = S("tech-\xc3\xa4nna"),
                          .action = S("note"),
                          .detail = S("{\"text\": \"box 4 \xe2\x80\x93 shelf\"}")};
    gb_audit_hash(g, &e, h);
    hex(h, x);
    assert_string_equal(x, "3d2f5432ab7eb6545cac3a388e8922b6549373c64a0f3a7fe88e375da1ba8518");
}

/* A chain of n entries built as the database builds it. */
static void build(gb_audit_entry_t *e, size_t n)
{
    static const char *const details[] = {"{\"new_device\": true}", "{\"to\": \"green\"}",
                                          "{\"to\": \"resealed\"}", "{\"text\": \"x\"}"};
    uint8_t prev[GB_AUDIT_HASH_LEN];
    gb_audit_genesis(S(SERIAL), prev);
    for (size_t i = 0; i < n; i++) {
        e[i] = (gb_audit_entry_t){.serial = S(SERIAL),
                                  .seq = i + 1,
                                  .at_us = 1795507200000000 + (int64_t)i * 1000,
                                  .actor = S("bench-agent"),
                                  .action = S("status"),
                                  .detail = S(details[i % 4])};
        memcpy(e[i].prev_hash, prev, GB_AUDIT_HASH_LEN);
        gb_audit_hash(prev, &e[i], e[i].hash);
        memcpy(prev, e[i].hash, GB_AUDIT_HASH_LEN);
    }
}

static gb_audit_check_t verify(const gb_audit_entry_t *e, size_t n)
{
    return gb_audit_verify(S(SERIAL), e, n, n > 0, n, n > 0 ? e[n - 1].hash : NULL);
}

static void test_verify_names_the_first_bad_entry(void **state)
{
    (void)state;
    gb_audit_entry_t e[4], t[4];
    build(e, 4);
    assert_int_equal(verify(e, 4).fault, GB_AUDIT_OK);
    assert_int_equal(verify(e, 0).fault, GB_AUDIT_OK);

    /* A changed detail, actor or time: that entry's hash no longer matches. */
    memcpy(t, e, sizeof(e));
    t[2].detail = S("{\"to\": \"red\"}");
    gb_audit_check_t c = verify(t, 4);
    assert_int_equal(c.fault, GB_AUDIT_HASH);
    assert_int_equal(c.index, 2);
    memcpy(t, e, sizeof(e));
    t[1].at_us += 1;
    c = verify(t, 4);
    assert_int_equal(c.fault, GB_AUDIT_HASH);
    assert_int_equal(c.index, 1);

    /* An entry removed from the middle: the numbering breaks there. */
    memcpy(t, e, sizeof(e));
    memmove(&t[1], &t[2], 2 * sizeof(t[0]));
    c = gb_audit_verify(S(SERIAL), t, 3, true, 4, e[3].hash);
    assert_int_equal(c.fault, GB_AUDIT_SEQ);
    assert_int_equal(c.index, 1);

    /* Removed and renumbered: the link to the previous entry breaks. */
    t[1].seq = 2;
    t[2].seq = 3;
    c = gb_audit_verify(S(SERIAL), t, 3, true, 3, t[2].hash);
    assert_int_equal(c.fault, GB_AUDIT_PREV);
    assert_int_equal(c.index, 1);

    /* The last entry removed: the rest verifies, but not against the recorded head. */
    c = gb_audit_verify(S(SERIAL), e, 3, true, 4, e[3].hash);
    assert_int_equal(c.fault, GB_AUDIT_HEAD);
    assert_int_equal(c.index, 3);

    /* Entries without a head, or a head without entries. */
    assert_int_equal(gb_audit_verify(S(SERIAL), e, 4, false, 0, NULL).fault, GB_AUDIT_NO_HEAD);
    assert_int_equal(gb_audit_verify(S(SERIAL), e, 0, true, 4, e[3].hash).fault, GB_AUDIT_NO_HEAD);

    /* Another device's chain does not verify as this one's. */
    c = gb_audit_verify(S("PF3ABC13"), e, 4, true, 4, e[3].hash);
    assert_int_equal(c.fault, GB_AUDIT_PREV);
    assert_int_equal(c.index, 0);
    assert_string_equal(gb_audit_fault_id(GB_AUDIT_HASH), "changed");
    assert_non_null(strstr(gb_audit_fault_text(GB_AUDIT_HEAD), "removed"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_genesis_and_hash_match_independent_vectors),
        cmocka_unit_test(test_verify_names_the_first_bad_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
