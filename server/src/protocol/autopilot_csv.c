/* autopilot_csv: the Autopilot hardware-hash CSV, read as a stream. libcsv does the quoting;
 * this file feeds it one physical line at a time, so the line a row starts on is always known,
 * and adds what Intune asks of the file: the BOM, the exact header, per-row validation and
 * duplicate serials. Memory stays bounded whatever the input: one row of at most
 * GB_PROTO_CSV_MAX_ROW_BYTES, plus the set of serials already imported (at most
 * GB_PROTO_CSV_MAX_ROWS of them). */
#include <csv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/protocol.h"

/* Columns Intune knows, in the order it requires. */
static const char *const column_names[] = {"Device Serial Number", "Windows Product ID",
                                           "Hardware Hash", "Group Tag", "Assigned User"};
#define MIN_COLUMNS 3
#define MAX_COLUMNS 5
#define HEADER_TEXT \
    "Device Serial Number,Windows Product ID,Hardware Hash[,Group Tag][,Assigned User]"

enum { COL_SERIAL, COL_PRODUCT_ID, COL_HASH, COL_GROUP_TAG, COL_USER };

/* Where the reader is. */
typedef enum read_state {
    READ_BOM = 0, /* nothing decided yet: the first bytes may be a byte order mark */
    READ_HEADER,  /* the header row is being read */
    READ_ROWS,    /* the header was good: data rows */
    READ_CAPPED,  /* GB_PROTO_CSV_MAX_ROWS reached: everything else is ignored */
    READ_FAILED,  /* the file was refused (header_err); every call returns it */
} read_state_t;

/* One serial already imported, for duplicates: its bytes are serials.data[off..off+len). */
typedef struct seen {
    uint32_t off;  /* 0 with len 0: an empty slot */
    uint32_t len;  /* bytes */
    uint64_t line; /* where it was imported from */
} seen_t;

struct gb_proto_csv {
    struct csv_parser csv;
    gb_proto_csv_ops_t ops;
    void *arg;
    read_state_t state;
    gb_error_t header_err; /* READ_FAILED: why */
    unsigned char bom[3];  /* READ_BOM: the first bytes, until they decide */
    size_t bom_len;
    unsigned columns; /* of the header, once it was good */
    uint64_t rows;    /* data rows seen */

    uint64_t line;     /* the physical line being fed */
    uint64_t row_line; /* the line the current row began on; 0 between rows */
    size_t row_bytes;  /* bytes fed since the current row began */
    bool skip_line;    /* drop the rest of this physical line (after a broken row) */
    gb_buf_t fields;   /* the current row's first MAX_COLUMNS + 1 fields, each NUL-terminated */
    size_t field_off[MAX_COLUMNS + 1];
    size_t field_len[MAX_COLUMNS + 1];
    size_t nfields; /* fields of the current row, counting those not kept */

    gb_buf_t serials; /* bytes of every serial in seen (offset 0 is unused) */
    seen_t *seen;     /* open addressing, power-of-two size */
    size_t seen_cap;
    size_t seen_count;
};

/* Spaces around unquoted fields are not data; a CR before the LF is one of them, which is how
 * CRLF and LF files read the same. Only LF ends a line. */
static int is_csv_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static int is_csv_term(unsigned char c)
{
    return c == '\n';
}

gb_proto_csv_t *gb_proto_csv_new(const gb_proto_csv_ops_t *ops, void *arg)
{
    gb_proto_csv_t *p = gb_xcalloc(1, sizeof(*p));
    /* Strict: a stray quote in an unquoted field, or text after a closing quote, is an error
     * rather than a guess. */
    int rc = csv_init(&p->csv, CSV_STRICT);
    GB_ASSERT(rc == 0);
    csv_set_space_func(&p->csv, is_csv_space);
    csv_set_term_func(&p->csv, is_csv_term);
    /* Our allocator aborts on exhaustion, so libcsv never reports CSV_ENOMEM. */
    csv_set_realloc_func(&p->csv, gb_xrealloc);
    csv_set_free_func(&p->csv, free);
    p->ops = *ops;
    p->arg = arg;
    p->line = 1;
    gb_buf_init(&p->fields);
    gb_buf_init(&p->serials);
    gb_buf_append(&p->serials, "", 1); /* offset 0 marks an empty slot */
    return p;
}

void gb_proto_csv_free(gb_proto_csv_t *p)
{
    if (p == NULL) {
        return;
    }
    csv_free(&p->csv);
    gb_buf_dispose(&p->fields);
    gb_buf_dispose(&p->serials);
    free(p->seen);
    free(p);
}

unsigned gb_proto_csv_columns(const gb_proto_csv_t *p)
{
    return p->state == READ_ROWS || p->state == READ_CAPPED ? p->columns : 0;
}

uint64_t gb_proto_csv_rows(const gb_proto_csv_t *p)
{
    return p->rows;
}

/* ---- duplicates ---- */

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static seen_t *seen_slot(seen_t *table, size_t cap, const gb_buf_t *serials, const char *s,
                         size_t len)
{
    size_t i = (size_t)hash_bytes(s, len) & (cap - 1);
    for (;;) {
        seen_t *e = &table[i];
        if (e->off == 0 || (e->len == len && memcmp(serials->data + e->off, s, len) == 0)) {
            return e;
        }
        i = (i + 1) & (cap - 1);
    }
}

static void seen_grow(gb_proto_csv_t *p)
{
    size_t cap = p->seen_cap != 0 ? p->seen_cap * 2 : 1024;
    seen_t *table = gb_xcalloc(cap, sizeof(*table));
    for (size_t i = 0; i < p->seen_cap; i++) {
        const seen_t *e = &p->seen[i];
        if (e->off != 0) {
            *seen_slot(table, cap, &p->serials, p->serials.data + e->off, e->len) = *e;
        }
    }
    free(p->seen);
    p->seen = table;
    p->seen_cap = cap;
}

/* The line an earlier valid row with this serial came from, or 0 (the serial is then
 * remembered as coming from line). */
static uint64_t seen_check_add(gb_proto_csv_t *p, gb_str_t serial, uint64_t line)
{
    GB_ASSERT(serial.p != NULL); /* a valid row's serial */
    /* Half full at most, so probes stay short. */
    if ((p->seen_count + 1) * 2 > p->seen_cap) {
        seen_grow(p);
    }
    seen_t *e = seen_slot(p->seen, p->seen_cap, &p->serials, serial.p, serial.len);
    if (e->off != 0) {
        return e->line;
    }
    e->off = (uint32_t)p->serials.len;
    e->len = (uint32_t)serial.len;
    e->line = line;
    gb_buf_append(&p->serials, serial.p, serial.len);
    p->seen_count++;
    return 0;
}

/* ---- field checks (each returns NULL or the reason, one sentence) ---- */

static bool is_alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static const char *check_product_id(gb_str_t v)
{
    if (v.len > GB_PROTO_CSV_PRODUCT_ID_MAX) {
        return "Windows Product ID must be at most 64 letters, digits and hyphens";
    }
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (!is_alnum(c) && c != '-') {
            return "Windows Product ID must be at most 64 letters, digits and hyphens";
        }
    }
    return NULL;
}

static const char *check_hash(gb_str_t v)
{
    size_t pad = 0;

    if (v.len == 0) {
        return "Hardware Hash is empty";
    }
    if (v.len > GB_PROTO_CSV_HASH_MAX) {
        return "Hardware Hash is longer than 16384 characters";
    }
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (c == '=') {
            pad++;
        } else if (pad > 0 || (!is_alnum(c) && c != '+' && c != '/')) {
            return "Hardware Hash is not base64 (A-Z, a-z, 0-9, + and /, with = only as padding)";
        }
    }
    if (pad > 2 || v.len % 4 != 0) {
        return "Hardware Hash is not base64 (its length must be a multiple of 4, with at most two "
               "= of padding)";
    }
    return NULL;
}

static const char *check_group_tag(gb_str_t v)
{
    if (v.len > GB_PROTO_CSV_GROUP_TAG_MAX) {
        return "Group Tag must be at most 128 printable ASCII characters";
    }
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (c < 0x20 || c > 0x7e) {
            return "Group Tag must be at most 128 printable ASCII characters";
        }
    }
    return NULL;
}

/* A user principal name as Azure AD takes it: local@domain, the local part of letters, digits
 * and the few symbols an address may hold, the domain of dot-separated labels (at least two) of
 * letters, digits and inner hyphens. */
static const char *check_user(gb_str_t v)
{
    static const char why[] = "Assigned User must be a user principal name such as "
                              "name@contoso.com (at most 256 characters)";
    const char *at = memchr(v.p, '@', v.len);

    if (v.len == 0) {
        return NULL;
    }
    if (v.len > GB_PROTO_CSV_USER_MAX || at == NULL || at == v.p) {
        return why;
    }
    for (const char *c = v.p; c < at; c++) {
        if (!is_alnum((unsigned char)*c) && strchr(".-_+'!#$%&*/=?^`{|}~", *c) == NULL) {
            return why;
        }
    }
    if (v.p[0] == '.' || at[-1] == '.') {
        return why;
    }
    const char *d = at + 1;
    const char *end = v.p + v.len;
    size_t labels = 0;
    while (d <= end) {
        const char *dot = memchr(d, '.', (size_t)(end - d));
        const char *label_end = dot != NULL ? dot : end;
        size_t n = (size_t)(label_end - d);
        if (n == 0 || n > 63 || d[0] == '-' || label_end[-1] == '-') {
            return why;
        }
        for (const char *c = d; c < label_end; c++) {
            if (!is_alnum((unsigned char)*c) && *c != '-') {
                return why;
            }
        }
        labels++;
        if (dot == NULL) {
            break;
        }
        d = dot + 1;
    }
    return labels >= 2 ? NULL : why;
}

/* ---- rows ---- */

static gb_str_t field(const gb_proto_csv_t *p, size_t i)
{
    if (i >= p->nfields || i > MAX_COLUMNS) {
        return (gb_str_t){NULL, 0};
    }
    return (gb_str_t){p->fields.data + p->field_off[i], p->field_len[i]};
}

static void report(gb_proto_csv_t *p, uint64_t line, const char *fmt, ...) GB_PRINTF(3, 4);

static void report(gb_proto_csv_t *p, uint64_t line, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    p->ops.error(line, msg, p->arg);
}

static void fail(gb_proto_csv_t *p, const char *fmt, ...) GB_PRINTF(2, 3);

static void fail(gb_proto_csv_t *p, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gb_error_clear(&p->header_err);
    gb_error_set(&p->header_err, 400, "invalid_csv", NULL, "%s", msg);
    p->state = READ_FAILED;
}

/* Quotes at most 40 bytes of s for a message, with anything unprintable as '?'. */
static void excerpt(gb_str_t s, char *out, size_t outsz)
{
    size_t n = 0;
    for (size_t i = 0; i < s.len && n + 4 < outsz && i < 40; i++) {
        unsigned char c = (unsigned char)s.p[i];
        out[n++] = (char)(c >= 0x20 && c < 0x7f ? c : '?');
    }
    if (s.len > 40 && n + 4 < outsz) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static void read_header(gb_proto_csv_t *p)
{
    char got[48];

    if (p->nfields > MAX_COLUMNS) {
        fail(p, "the header has %zu columns; the file takes at most 5 and no others: " HEADER_TEXT,
             p->nfields);
        return;
    }
    for (size_t i = 0; i < p->nfields; i++) {
        gb_str_t name = field(p, i);
        if (!gb_str_eq_cstr(name, column_names[i])) {
            excerpt(name, got, sizeof(got));
            fail(p,
                 "header column %zu is \"%s\", not \"%s\"; the header must be " HEADER_TEXT
                 " (names exact, in this order)",
                 i + 1, got, column_names[i]);
            return;
        }
    }
    if (p->nfields < MIN_COLUMNS) {
        fail(p, "the header has %zu columns; it must be " HEADER_TEXT, p->nfields);
        return;
    }
    p->columns = (unsigned)p->nfields;
    p->state = READ_ROWS;
}

/* Counts a data row; past the cap, reports it once and stops reading. */
static bool count_row(gb_proto_csv_t *p, uint64_t line)
{
    if (++p->rows > GB_PROTO_CSV_MAX_ROWS) {
        report(p, line,
               "the file holds more than %d devices; this row and every one after it were not "
               "imported (split the file)",
               GB_PROTO_CSV_MAX_ROWS);
        p->state = READ_CAPPED;
        return false;
    }
    return true;
}

static void read_row(gb_proto_csv_t *p)
{
    uint64_t line = p->row_line;
    const char *why;

    if (!count_row(p, line)) {
        return;
    }
    if (p->nfields != p->columns) {
        report(p, line, "the row has %zu field%s but the header has %u%s", p->nfields,
               p->nfields == 1 ? "" : "s", p->columns,
               p->nfields > p->columns ? " (extra columns are not accepted)" : "");
        return;
    }
    gb_proto_csv_row_t row = {
        .line = line,
        .serial = field(p, COL_SERIAL),
        .product_id = field(p, COL_PRODUCT_ID),
        .hardware_hash = field(p, COL_HASH),
        .group_tag = field(p, COL_GROUP_TAG),
        .assigned_user = field(p, COL_USER),
    };
    if (row.serial.len == 0) {
        report(p, line, "Device Serial Number is empty");
        return;
    }
    if (!gb_proto_serial_valid(row.serial.p, row.serial.len)) {
        report(p, line,
               "Device Serial Number must be 1 to %d printable ASCII characters without spaces "
               "or / \\ ? # %%",
               GB_PROTO_SERIAL_MAX);
        return;
    }
    if ((why = check_product_id(row.product_id)) != NULL ||
        (why = check_hash(row.hardware_hash)) != NULL ||
        (row.group_tag.p != NULL && (why = check_group_tag(row.group_tag)) != NULL) ||
        (row.assigned_user.p != NULL && (why = check_user(row.assigned_user)) != NULL)) {
        report(p, line, "%s", why);
        return;
    }
    uint64_t first = seen_check_add(p, row.serial, line);
    if (first != 0) {
        report(p, line, "serial %s already appears on line %llu; only that first row is imported",
               row.serial.p, (unsigned long long)first);
        return;
    }
    p->ops.row(&row, p->arg);
}

static void row_reset(gb_proto_csv_t *p)
{
    p->row_line = 0;
    p->row_bytes = 0;
    p->nfields = 0;
    gb_buf_reset(&p->fields);
}

/* libcsv: a field ended. Only the fields a valid row can hold are kept; the rest are counted. */
static void on_csv_field(void *s, size_t len, void *data)
{
    gb_proto_csv_t *p = data;
    if (p->row_line == 0) {
        p->row_line = p->line;
    }
    if (p->nfields <= MAX_COLUMNS) {
        p->field_off[p->nfields] = p->fields.len;
        p->field_len[p->nfields] = len;
        gb_buf_append(&p->fields, s != NULL ? s : "", len);
        gb_buf_append(&p->fields, "", 1);
    }
    p->nfields++;
}

/* libcsv: a row ended (always at the end of a fed line, since only LF ends one). */
static void on_csv_row(int c, void *data)
{
    gb_proto_csv_t *p = data;
    GB_UNUSED(c);
    if (p->row_line == 0) {
        p->row_line = p->line;
    }
    if (p->state == READ_HEADER) {
        read_header(p);
    } else if (p->state == READ_ROWS) {
        read_row(p);
    }
    row_reset(p);
}

/* The current row cannot be read: report it (or refuse the file, for the header), forget it
 * and reset libcsv. The caller drops what is left of the current physical line. */
static void row_broken(gb_proto_csv_t *p, const char *why)
{
    uint64_t line = p->row_line != 0 ? p->row_line : p->line;
    if (p->state == READ_HEADER) {
        fail(p, "the header line is not valid CSV: %s", why);
    } else if (p->state == READ_ROWS && count_row(p, line)) {
        report(p, line, "%s", why);
    }
    /* With no callbacks, csv_fini only resets the parser's state (and its error). */
    (void)csv_fini(&p->csv, NULL, NULL, NULL);
    row_reset(p);
}

static bool has_content(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_csv_space((unsigned char)s[i]) && !is_csv_term((unsigned char)s[i])) {
            return true;
        }
    }
    return false;
}

/* Feeds bytes to libcsv a physical line (or the part of one that is here) at a time. A row
 * ends only at a LF, which always ends what was fed, so a row that begins in a piece begins on
 * that piece's line. */
static void feed_lines(gb_proto_csv_t *p, const char *s, size_t len)
{
    while (len > 0 && (p->state == READ_HEADER || p->state == READ_ROWS)) {
        const char *nl = memchr(s, '\n', len);
        size_t n = nl != NULL ? (size_t)(nl - s) + 1 : len;
        if (p->skip_line) {
            if (nl != NULL) {
                p->skip_line = false;
                p->line++;
            }
            s += n;
            len -= n;
            continue;
        }
        if (p->row_line == 0 && has_content(s, n)) {
            p->row_line = p->line;
        }
        if (p->row_line != 0) {
            p->row_bytes += n;
        }
        size_t used = csv_parse(&p->csv, s, n, on_csv_field, on_csv_row, p);
        bool broken = true;
        if (used < n) {
            /* CSV_EPARSE, the only error left since the allocator never fails. It stopped on
             * this line, whose rest is dropped with the row. */
            row_broken(p, "a quoted field is malformed (inside quotes a quote must be doubled, "
                          "and only a comma or the line's end may follow the closing quote)");
        } else if (p->row_line != 0 && p->row_bytes > GB_PROTO_CSV_MAX_ROW_BYTES) {
            row_broken(p, "the row is longer than 65536 bytes (is a quote left open?)");
        } else {
            broken = false;
        }
        /* What is left of a broken row's line is in this piece when it holds the LF; else the
         * next pieces are dropped up to it. */
        if (broken && nl == NULL) {
            p->skip_line = true;
        }
        if (nl != NULL) {
            p->line++;
        }
        s += n;
        len -= n;
    }
}

static const unsigned char utf8_bom[3] = {0xef, 0xbb, 0xbf};

/* True while the first bytes could still be a byte order mark: more are needed to decide. */
static bool mark_pending(const gb_proto_csv_t *p)
{
    if (p->bom_len == 0) {
        return true;
    }
    if (p->bom[0] == 0xff || p->bom[0] == 0xfe) {
        return p->bom_len < 2;
    }
    return p->bom_len < 3 && memcmp(p->bom, utf8_bom, p->bom_len) == 0;
}

/* The first bytes: a UTF-8 byte order mark is dropped; UTF-16 is refused by name, since its
 * header would otherwise be reported as garbled text. Bytes that turn out to be text go on to
 * the header. */
static void feed_start(gb_proto_csv_t *p, const unsigned char **s, size_t *len)
{
    while (*len > 0 && mark_pending(p)) {
        p->bom[p->bom_len++] = **s;
        (*s)++;
        (*len)--;
    }
    if (p->bom_len == 2 &&
        ((p->bom[0] == 0xff && p->bom[1] == 0xfe) || (p->bom[0] == 0xfe && p->bom[1] == 0xff))) {
        fail(p, "the file is UTF-16; save it as UTF-8 (or ANSI) text");
        return;
    }
    if (p->bom_len == 3 && memcmp(p->bom, utf8_bom, 3) == 0) {
        p->state = READ_HEADER;
        return;
    }
    if (mark_pending(p)) {
        return; /* the input ended inside what may be a mark */
    }
    p->state = READ_HEADER;
    feed_lines(p, (const char *)p->bom, p->bom_len);
}

static int failed(const gb_proto_csv_t *p, gb_error_t *err)
{
    if (err != NULL) {
        *err = p->header_err;
    }
    return GB_EINVAL;
}

int gb_proto_csv_feed(gb_proto_csv_t *p, const void *data, size_t len, gb_error_t *err)
{
    const unsigned char *s = data;

    if (p->state == READ_BOM) {
        feed_start(p, &s, &len);
    }
    if (p->state == READ_FAILED) {
        return failed(p, err);
    }
    if (p->state == READ_BOM || p->state == READ_CAPPED) {
        return 0;
    }
    feed_lines(p, (const char *)s, len);
    return p->state == READ_FAILED ? failed(p, err) : 0;
}

int gb_proto_csv_finish(gb_proto_csv_t *p, gb_error_t *err)
{
    if (p->state == READ_BOM) {
        /* Fewer than three bytes, all a prefix of the mark: they are text after all. */
        p->state = READ_HEADER;
        feed_lines(p, (const char *)p->bom, p->bom_len);
    }
    if (p->state == READ_HEADER || p->state == READ_ROWS) {
        if (p->skip_line) {
            /* The broken row was already reported; nothing of it is left in libcsv. */
            p->skip_line = false;
        } else {
            /* Strict at the end too: an open quote is an error, not a field. */
            csv_set_opts(&p->csv, CSV_STRICT | CSV_STRICT_FINI);
            if (csv_fini(&p->csv, on_csv_field, on_csv_row, p) != 0) {
                row_broken(p, "a quoted field is not closed before the end of the file");
            }
        }
    }
    if (p->state == READ_HEADER) {
        fail(p, "the file is empty; it must begin with the header " HEADER_TEXT);
    }
    return p->state == READ_FAILED ? failed(p, err) : 0;
}
