/* test_autopilot_csv: the streaming reader of the Autopilot hardware-hash CSV. Rows and errors
 * are written to a transcript ("R line|serial|pid|hash|tag|user", "E line|message") that each
 * test compares with what it expects; every input is also fed in pieces of every small size
 * and one byte at a time, and must give the same transcript, since the server feeds it as the
 * bytes arrive. Covers the header rules, the BOM, CRLF, quoting, line numbers, each field's
 * checks, duplicates, broken rows that leave their neighbours intact, and the limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/protocol.h"

typedef struct transcript {
    gb_buf_t text;
    size_t rows;
    size_t errors;
} transcript_t;

static void put_field(gb_buf_t *b, gb_str_t s)
{
    if (s.p == NULL) {
        gb_buf_append_str(b, "-");
        return;
    }
    /* The slices are promised NUL-terminated. */
    assert_int_equal(strlen(s.p), s.len);
    gb_buf_append(b, s.p, s.len);
}

static void on_row(const gb_proto_csv_row_t *row, void *arg)
{
    transcript_t *t = arg;
    gb_buf_appendf(&t->text, "R %llu|", (unsigned long long)row->line);
    put_field(&t->text, row->serial);
    gb_buf_append_str(&t->text, "|");
    put_field(&t->text, row->product_id);
    gb_buf_append_str(&t->text, "|");
    put_field(&t->text, row->hardware_hash);
    gb_buf_append_str(&t->text, "|");
    put_field(&t->text, row->group_tag);
    gb_buf_append_str(&t->text, "|");
    put_field(&t->text, row->assigned_user);
    gb_buf_append_str(&t->text, "\n");
    t->rows++;
}

static void on_error(uint64_t line, const char *message, void *arg)
{
    transcript_t *t = arg;
    assert_true(strlen(message) > 0);
    gb_buf_appendf(&t->text, "E %llu|%s\n", (unsigned long long)line, message);
    t->errors++;
}

static const gb_proto_csv_ops_t ops = {on_row, on_error};

/* Feeds in[0..len) in pieces of step bytes (0: all at once); the transcript goes to t. Returns
 * the first non-zero status of feed or finish, with its error in err. */
static int run(const char *in, size_t len, size_t step, transcript_t *t, gb_error_t *err)
{
    gb_proto_csv_t *p = gb_proto_csv_new(&ops, t);
    int rc = 0;
    gb_buf_init(&t->text);
    gb_buf_append_str(&t->text, "");
    t->rows = 0;
    t->errors = 0;
    gb_error_clear(err);
    if (step == 0) {
        step = len > 0 ? len : 1;
    }
    for (size_t off = 0; off < len && rc == 0; off += step) {
        size_t n = len - off < step ? len - off : step;
        rc = gb_proto_csv_feed(p, in + off, n, err);
    }
    if (rc == 0) {
        rc = gb_proto_csv_finish(p, err);
    } else {
        /* A refused file stays refused. */
        gb_error_t again;
        assert_int_equal(gb_proto_csv_feed(p, "x\n", 2, &again), GB_EINVAL);
        assert_string_equal(again.code, err->code);
        assert_int_equal(gb_proto_csv_finish(p, &again), GB_EINVAL);
    }
    gb_proto_csv_free(p);
    return rc;
}

/* Reads in whole and in pieces of 1 to 9 bytes, checks every run gives the same transcript
 * and status, and checks that transcript against want (NULL: not checked). Returns the status;
 * the transcript of the whole run is left in t (the caller disposes it). */
static int check_len(const char *in, size_t len, const char *want, transcript_t *t, gb_error_t *err)
{
    int rc = run(in, len, 0, t, err);
    if (want != NULL && strcmp(t->text.data, want) != 0) {
        fail_msg("transcript:\n%s\nwant:\n%s", t->text.data, want);
    }
    for (size_t step = 1; step <= 9; step++) {
        transcript_t t2;
        gb_error_t err2;
        int rc2 = run(in, len, step, &t2, &err2);
        if (rc2 != rc || strcmp(t2.text.data, t->text.data) != 0 ||
            strcmp(err2.message, err->message) != 0) {
            fail_msg("in pieces of %zu: rc %d, transcript:\n%s\nerror %s\nwhole: rc %d:\n%s\n%s",
                     step, rc2, t2.text.data, err2.message, rc, t->text.data, err->message);
        }
        gb_buf_dispose(&t2.text);
    }
    return rc;
}

static int check(const char *in, const char *want, transcript_t *t, gb_error_t *err)
{
    return check_len(in, strlen(in), want, t, err);
}

/* The input must read without a refusal and give exactly want. */
static void expect(const char *in, const char *want)
{
    transcript_t t;
    gb_error_t err;
    assert_int_equal(check(in, want, &t, &err), 0);
    gb_buf_dispose(&t.text);
}

/* The input must be refused as a whole (400 invalid_csv) before any row comes out, with a
 * message holding needle. */
static void expect_refused_len(const char *in, size_t len, const char *needle)
{
    transcript_t t;
    gb_error_t err;
    assert_int_equal(check_len(in, len, "", &t, &err), GB_EINVAL);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.code, "invalid_csv");
    if (strstr(err.message, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", err.message, needle);
    }
    gb_buf_dispose(&t.text);
}

static void expect_refused(const char *in, const char *needle)
{
    expect_refused_len(in, strlen(in), needle);
}

#define HDR3 "Device Serial Number,Windows Product ID,Hardware Hash"
#define HDR4 HDR3 ",Group Tag"
#define HDR5 HDR4 ",Assigned User"

/* ---- tests ---- */

static void test_csv_reads_three_four_and_five_columns(void **state)
{
    GB_UNUSED(state);
    expect(HDR3 "\nPF1,,QUJD\nPF2,00330-80000-00000-AA123,QUJDRA==\n",
           "R 2|PF1||QUJD|-|-\n"
           "R 3|PF2|00330-80000-00000-AA123|QUJDRA==|-|-\n");
    expect(HDR4 "\nPF1,,QUJD,Lab\nPF2,,QUJD,\n", "R 2|PF1||QUJD|Lab|-\n"
                                                 "R 3|PF2||QUJD||-\n");
    expect(HDR5 "\nPF1,3304000001234,QUJD,Lab,ana@contoso.com\nPF2,,QUJD,,\n",
           "R 2|PF1|3304000001234|QUJD|Lab|ana@contoso.com\n"
           "R 3|PF2||QUJD||\n");
    /* A header alone is a valid file with no devices. */
    expect(HDR5 "\n", "");
    expect(HDR3, "");
}

static void test_csv_bom_crlf_quotes_and_spaces(void **state)
{
    GB_UNUSED(state);
    expect("\xef\xbb\xbf" HDR5 "\r\n"
           "\"PF1\",\"\",\"QUJD\",\"Lab, bench 3\",\"ana@contoso.com\"\r\n"
           "PF2 , 00330-80000-00000-AA123 ,QUJD,\"Tag \"\"A\"\"\",\r\n"
           "\r\n"
           "  PF3,,\"QUJD\"  ,Lab,\r\n",
           "R 2|PF1||QUJD|Lab, bench 3|ana@contoso.com\n"
           "R 3|PF2|00330-80000-00000-AA123|QUJD|Tag \"A\"|\n"
           "R 5|PF3||QUJD|Lab|\n");
    /* The header may be quoted too, and the last row may lack its line break. */
    expect("\"Device Serial Number\",\"Windows Product ID\",\"Hardware Hash\"\r\nPF1,,QUJD",
           "R 2|PF1||QUJD|-|-\n");
}

static void test_csv_line_numbers_skip_blank_lines_and_follow_quoted_breaks(void **state)
{
    GB_UNUSED(state);
    /* A quoted field spanning lines 3-4: the row is numbered by its first line, and the ones
     * after it by their own. */
    expect(HDR4 "\n\n"
                "PF1,,\"QU\nJD\",Lab\n"
                "\n\n"
                "PF2,,QUJD,\"two\nlines\"\n"
                "PF3,,QUJD,Lab\n\n\n",
           "E 3|Hardware Hash is not base64 (A-Z, a-z, 0-9, + and /, with = only as padding)\n"
           "E 7|Group Tag must be at most 128 printable ASCII characters\n"
           "R 9|PF3||QUJD|Lab|-\n");
}

static void test_csv_refuses_a_wrong_or_missing_header(void **state)
{
    GB_UNUSED(state);
    static const char utf16[] = "\xff\xfe"
                                "D\0e\0";
    expect_refused("", "empty");
    expect_refused("\n\n  \r\n", "empty");
    expect_refused("\xef\xbb\xbf", "empty");
    expect_refused("\xef\xbb", "header column 1");
    expect_refused_len(utf16, sizeof(utf16) - 1, "UTF-16");
    expect_refused("PF1,,QUJD\n", "header column 1 is \"PF1\"");
    expect_refused("Device Serial Number,Windows Product Id,Hardware Hash\nPF1,,QUJD\n",
                   "header column 2 is \"Windows Product Id\", not \"Windows Product ID\"");
    expect_refused("Device Serial Number,Hardware Hash,Windows Product ID\n", "header column 2");
    expect_refused(HDR3 ",Assigned User\n",
                   "header column 4 is \"Assigned User\", not \"Group Tag\"");
    expect_refused(HDR5 ",Notes\nPF1,,QUJD,,,x\n", "the header has 6 columns");
    expect_refused("Device Serial Number,Windows Product ID\n", "the header has 2 columns");
    expect_refused("Device Serial Number,\"Windows\"x,Hardware Hash\n", "not valid CSV");
    expect_refused("Device Serial Number,\"Windows Product ID,Hardware Hash\n", "not closed");
}

static void test_csv_reports_bad_rows_and_keeps_the_good_ones(void **state)
{
    GB_UNUSED(state);
    char long_serial[80], long_tag[160], long_user[300], in[4096];
    memset(long_serial, 'S', 65);
    long_serial[65] = '\0';
    memset(long_tag, 'g', 129);
    long_tag[129] = '\0';
    memset(long_user, 'u', 250);
    memcpy(long_user + 250, "@contoso.com", 13);
    snprintf(in, sizeof(in),
             HDR5 "\n"
                  "PF1,,QUJD,,\n"          /* 2 good */
                  "PF2,,QUJD\n"            /* 3 too few */
                  "PF3,,QUJD,,,extra\n"    /* 4 too many */
                  ",,QUJD,,\n"             /* 5 empty serial */
                  "PF 6,,QUJD,,\n"         /* 6 space in serial */
                  "PF/7,,QUJD,,\n"         /* 7 slash */
                  "%s,,QUJD,,\n"           /* 8 65 bytes */
                  "PF9,00330_8,QUJD,,\n"   /* 9 product id */
                  "PF10,,,,\n"             /* 10 empty hash */
                  "PF11,,QUJ,,\n"          /* 11 length */
                  "PF12,,QU=D,,\n"         /* 12 padding inside */
                  "PF13,,QU*D,,\n"         /* 13 not base64 */
                  "PF14,,QUJD,%s,\n"       /* 14 tag too long */
                  "PF15,,QUJD,\"a\tb\",\n" /* 15 tab in tag */
                  "PF16,,QUJD,,ana\n"      /* 16 no @ */
                  "PF17,,QUJD,,@contoso.com\n"
                  "PF18,,QUJD,,ana@contoso\n"
                  "PF19,,QUJD,,ana@-x.com\n"
                  "PF20,,QUJD,,ana@x..com\n"
                  "PF21,,QUJD,,an a@x.com\n"
                  "PF22,,QUJD,,%s\n"
                  "PF1,,QUJD,,\n" /* 23 duplicate of line 2 */
                  "PF24,,QUJD,,o'brien.x+1@mail.contoso.co.uk\n"
                  "PF25,,QUI=,,\n",
             long_serial, long_tag, long_user);
    transcript_t t;
    gb_error_t err;
    assert_int_equal(check(in, NULL, &t, &err), 0);
    static const char *const want[] = {
        "R 2|PF1||QUJD||\n",
        "E 3|the row has 3 fields but the header has 5\n",
        "E 4|the row has 6 fields but the header has 5 (extra columns are not accepted)\n",
        "E 5|Device Serial Number is empty\n",
        "E 6|Device Serial Number must be 1 to 64 printable ASCII characters without spaces",
        "E 7|Device Serial Number must be",
        "E 8|Device Serial Number must be",
        "E 9|Windows Product ID must be at most 64 letters, digits and hyphens\n",
        "E 10|Hardware Hash is empty\n",
        "E 11|Hardware Hash is not base64 (its length",
        "E 12|Hardware Hash is not base64 (A-Z",
        "E 13|Hardware Hash is not base64 (A-Z",
        "E 14|Group Tag must be at most 128 printable ASCII characters\n",
        "E 15|Group Tag must be",
        "E 16|Assigned User must be a user principal name",
        "E 17|Assigned User must be",
        "E 18|Assigned User must be",
        "E 19|Assigned User must be",
        "E 20|Assigned User must be",
        "E 21|Assigned User must be",
        "E 22|Assigned User must be",
        "E 23|serial PF1 already appears on line 2; only that first row is imported\n",
        "R 24|PF24||QUJD||o'brien.x+1@mail.contoso.co.uk\n",
        "R 25|PF25||QUI=||\n",
    };
    const char *at = t.text.data;
    for (size_t i = 0; i < GB_ARRAY_LEN(want); i++) {
        if (strncmp(at, want[i], strlen(want[i])) != 0) {
            fail_msg("entry %zu: want \"%s\" in:\n%s", i, want[i], t.text.data);
        }
        at = strchr(at, '\n') + 1;
    }
    assert_string_equal(at, "");
    assert_int_equal(t.rows, 3);
    assert_int_equal(t.errors, 21);
    gb_buf_dispose(&t.text);
}

static void test_csv_broken_quotes_cost_only_their_row(void **state)
{
    GB_UNUSED(state);
    expect(HDR4 "\n"
                "PF1,,QUJD,La\"b\n"
                "PF2,,\"QUJD\"x,Lab\n"
                "PF3,,\"QUJD\n"
                "more\"junk,Lab\n"
                "PF4,,QUJD,Lab\n"
                "PF5,,QUJD,\"open\n",
           "E 2|a quoted field is malformed (inside quotes a quote must be doubled, and only a "
           "comma or the line's end may follow the closing quote)\n"
           "E 3|a quoted field is malformed (inside quotes a quote must be doubled, and only a "
           "comma or the line's end may follow the closing quote)\n"
           "E 4|a quoted field is malformed (inside quotes a quote must be doubled, and only a "
           "comma or the line's end may follow the closing quote)\n"
           "R 6|PF4||QUJD|Lab|-\n"
           "E 7|a quoted field is not closed before the end of the file\n");
}

static void test_csv_long_rows_are_refused_and_reading_goes_on(void **state)
{
    GB_UNUSED(state);
    gb_buf_t in;
    gb_buf_init(&in);
    gb_buf_append_str(&in, HDR3 "\nPF1,,\"");
    for (int i = 0; i < 2000; i++) {
        gb_buf_append_str(&in, "QUJDQUJDQUJDQUJDQUJDQUJDQUJDQUJDQUJDQUJD\n"); /* an open quote */
    }
    gb_buf_append_str(&in, "PF2,,QUJD\n");
    /* A hash of the largest size is fine; one byte of base64 more is not. */
    gb_buf_append_str(&in, "PF3,,");
    for (int i = 0; i < GB_PROTO_CSV_HASH_MAX / 4; i++) {
        gb_buf_append_str(&in, "QUJD");
    }
    gb_buf_append_str(&in, "\nPF4,,QUJD");
    for (int i = 0; i < GB_PROTO_CSV_HASH_MAX / 4; i++) {
        gb_buf_append_str(&in, "QUJD");
    }
    gb_buf_append_str(&in, "\n");
    transcript_t t;
    gb_error_t err;
    assert_int_equal(run(in.data, in.len, 4096, &t, &err), 0);
    /* The open quote swallows lines until the row passes 64 KiB, some 1600 lines on; then
     * reading starts afresh on a later line, still inside the junk, whose lines are rows of
     * one field each. */
    static const char first[] = "E 2|the row is longer than 65536 bytes (is a quote left open?)\n";
    assert_true(strncmp(t.text.data, first, sizeof(first) - 1) == 0);
    assert_non_null(strstr(t.text.data, "|the row has 1 field but the header has 3\n"));
    assert_non_null(strstr(t.text.data, "R 2002|PF2||QUJD|-|-\n"));
    assert_non_null(strstr(t.text.data, "R 2003|PF3||QUJD"));
    assert_non_null(strstr(t.text.data, "E 2004|Hardware Hash is longer than 16384 characters\n"));
    gb_buf_dispose(&t.text);
    gb_buf_dispose(&in);
}

static void test_csv_stops_after_the_row_limit(void **state)
{
    GB_UNUSED(state);
    gb_buf_t in;
    gb_buf_init(&in);
    gb_buf_append_str(&in, HDR3 "\n");
    for (int i = 1; i <= GB_PROTO_CSV_MAX_ROWS + 5; i++) {
        gb_buf_appendf(&in, "S%d,,QUJD\n", i);
    }
    transcript_t t;
    gb_error_t err;
    gb_proto_csv_t *p = gb_proto_csv_new(&ops, &t);
    gb_buf_init(&t.text);
    t.rows = t.errors = 0;
    for (size_t off = 0; off < in.len; off += 65536) {
        size_t n = in.len - off < 65536 ? in.len - off : 65536;
        assert_int_equal(gb_proto_csv_feed(p, in.data + off, n, &err), 0);
    }
    assert_int_equal(gb_proto_csv_finish(p, &err), 0);
    assert_int_equal(gb_proto_csv_columns(p), 3);
    assert_int_equal(gb_proto_csv_rows(p), GB_PROTO_CSV_MAX_ROWS + 1);
    gb_proto_csv_free(p);
    assert_int_equal(t.rows, GB_PROTO_CSV_MAX_ROWS);
    assert_int_equal(t.errors, 1);
    assert_non_null(strstr(t.text.data, "E 100002|the file holds more than 100000 devices"));
    gb_buf_dispose(&t.text);
    gb_buf_dispose(&in);
}

static void test_csv_duplicates_compare_exact_bytes(void **state)
{
    GB_UNUSED(state);
    /* Serials are case-sensitive, and an invalid row does not claim its serial. */
    expect(HDR3 "\npf1,,QUJD\nPF1,,QUJD\nPF2,,QU\nPF2,,QUJD\nPF2,,QUJD\n",
           "R 2|pf1||QUJD|-|-\n"
           "R 3|PF1||QUJD|-|-\n"
           "E 4|Hardware Hash is not base64 (its length must be a multiple of 4, with at most two "
           "= of padding)\n"
           "R 5|PF2||QUJD|-|-\n"
           "E 6|serial PF2 already appears on line 5; only that first row is imported\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_reads_three_four_and_five_columns),
        cmocka_unit_test(test_csv_bom_crlf_quotes_and_spaces),
        cmocka_unit_test(test_csv_line_numbers_skip_blank_lines_and_follow_quoted_breaks),
        cmocka_unit_test(test_csv_refuses_a_wrong_or_missing_header),
        cmocka_unit_test(test_csv_reports_bad_rows_and_keeps_the_good_ones),
        cmocka_unit_test(test_csv_broken_quotes_cost_only_their_row),
        cmocka_unit_test(test_csv_long_rows_are_refused_and_reading_goes_on),
        cmocka_unit_test(test_csv_stops_after_the_row_limit),
        cmocka_unit_test(test_csv_duplicates_compare_exact_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
