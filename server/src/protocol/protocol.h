/* protocol: JSON in and out. Decodes and validates the agent protocol (jansson) into domain's
 * gb_msg_t, writes the REST API's device views straight into a gb_buf_t, writes one message
 * back as canonical JSON (what the server stores), and saves or restores a whole device state
 * as a JSON snapshot. No I/O; all-or-nothing: a failed decode leaves no partial result. */
#ifndef GB_PROTOCOL_H
#define GB_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/domain.h"
#include "util/util.h"

#define GB_PROTO_VERSION      1
#define GB_PROTO_MAX_MESSAGES 500
/* seq and byte counts stay within what every JSON reader holds exactly (2^53 - 1). */
#define GB_PROTO_MAX_INT 9007199254740991LL

/* Limits on strings, in bytes of UTF-8. */
#define GB_PROTO_SERIAL_MAX    64
#define GB_PROTO_AGENT_MAX     128
#define GB_PROTO_OS_BUILD_MAX  32
#define GB_PROTO_HW_STR_MAX    64 /* manufacturer, model */
#define GB_PROTO_TPM_VER_MAX   16
#define GB_PROTO_MEDIUM_MAX    32
#define GB_PROTO_SLOT_MAX      32
#define GB_PROTO_UPN_MAX       113 /* a user_signin's upn, as profiles take assigned users */
#define GB_PROTO_CHANNEL_MAX   256
#define GB_PROTO_EVENT_MSG_MAX 65536
#define GB_PROTO_APP_NAME_MAX  GB_APP_NAME_MAX
#define GB_PROTO_AT_MAX        64
#define GB_PROTO_MS_MAX        2147483647LL /* a download sample covers at most ~24 days */
#define GB_PROTO_LINK_MBPS_MAX 1000000.0

/* A decoded agent request. Everything points into the arena given to the decoder. */
typedef struct gb_proto_request {
    const char *serial; /* NUL-terminated */
    size_t serial_len;
    gb_msg_t *msgs; /* in request order; msgs[i].index == i */
    size_t n_msgs;
} gb_proto_request_t;

/* True when s is a valid serial: 1 to 64 bytes of printable ASCII (0x21-0x7E) other than
 * / \ ? # % (which would break the device's URL). */
bool gb_proto_serial_valid(const char *s, size_t len);

/* Decodes and validates a whole agent request body:
 *   {"protocol": 1, "device": {"serial": "..."}, "messages": [ ...1 to 500 messages... ]}
 * Unknown fields are ignored; times are normalised to UTC milliseconds. Strings are copied into
 * arena (so the body may be freed) and stay valid until the arena is reset. Returns 0, or
 * GB_EINVAL with err set (status 400) and *out untouched:
 *   malformed_json        the body is not JSON (including strings holding U+0000);
 *   unsupported_protocol  field "protocol": missing, not an integer, or not 1;
 *   invalid_request       the body is not an object, or field "device", "device.serial" or
 *                         "messages" is missing, of the wrong type, or out of bounds;
 *   invalid_message       err->index is the message's index and err->field its path,
 *                         e.g. "messages[3].at" or "messages[0].hardware.tpm_version". */
int gb_proto_decode_request(const char *body, size_t len, gb_arena_t *arena,
                            gb_proto_request_t *out, gb_error_t *err) GB_MUST_CHECK;

/* Decodes one message object (as stored by the server, or as sent in a request), with the same
 * rules; errors are invalid_message with a field relative to the message ("at") and index -1,
 * or malformed_json. out->index is 0. */
int gb_proto_decode_message(const char *json, size_t len, gb_arena_t *arena, gb_msg_t *out,
                            gb_error_t *err) GB_MUST_CHECK;

/* Appends msg as canonical JSON: known fields only, "at" in UTC with milliseconds. Decoding the
 * result gives msg back (index aside). */
void gb_proto_encode_message(const gb_msg_t *msg, gb_buf_t *out);

/* What the views need besides the state: the clock, the stall timeout and, for the list form,
 * which members to write. */
typedef struct gb_proto_view_opts {
    int64_t now_ms;           /* server time; GB_TIME_NONE: no stall or expiry check */
    int64_t stall_timeout_ms; /* silence after which a working device is stalled */
    uint32_t fields;          /* gb_proto_device_fields_parse's mask; 0: every member */
} gb_proto_view_opts_t;

/* Parses a comma-separated list of the Device object's member names (GET /api/v1/devices'
 * "fields") into a mask for gb_proto_view_opts_t.fields. "serial" is always written, named or
 * not. False, with *bad set to the offending name, for an empty or unknown name. */
bool gb_proto_device_fields_parse(gb_str_t list, uint32_t *mask, gb_str_t *bad) GB_MUST_CHECK;

/* Appends the contract's Device object: serial, status, stage, stage_state, attempt, stalled,
 * group_tag, assigned_user, profile, diagnosis {code, stage, hresult, summary, remedy} | null,
 * warnings [code], last_seen, durations {device_preparation_s, device_setup_s,
 * account_setup_s, total_s}, bytes_downloaded, mean_mbps; and in addition: slot, imported,
 * first_time_right, bytes_by_source {http, lan, cache}, resealed_at, ready_for_user_at,
 * reseal_expires_at. Unknown values are null. With opts->fields set, only those members (and
 * serial), in this order. */
void gb_proto_device_json(const gb_dev_t *dev, const gb_proto_view_opts_t *opts, gb_buf_t *out);

/* Appends the detail form (every member, whatever opts->fields says): the Device object plus
 * timeline [{attempt, stage, name, state, started_at, ended_at, duration_s, hresult}], attempts
 * [{attempt, started_at, ended_at, outcome, diagnosis}], user_upn, hardware {manufacturer, model,
 * tpm_version, tpm_attestation, virtual_machine}, network {medium, link_mbps}, agent, os_build,
 * apps [{name, state, bytes, hresult}], first_seen, max_seq and messages (count applied). */
void gb_proto_device_detail_json(const gb_dev_t *dev, const gb_proto_view_opts_t *opts,
                                 gb_buf_t *out);

/* Appends a diagnosis {code, stage, hresult, summary, remedy}, or null. */
void gb_proto_diagnosis_json(gb_buf_t *b, const gb_diagnosis_t *d);
/* Appends the current attempt's ESP durations {device_preparation_s, device_setup_s,
 * account_setup_s, total_s} (null where unknown). */
void gb_proto_durations_json(const gb_dev_t *dev, gb_buf_t *b);

/* Appends the agent's reply: {"acked_seq": N, "status": "...", "stage": "..." | null}. */
void gb_proto_agent_reply_json(const gb_dev_t *dev, gb_buf_t *out);

/* Appends the whole state (identity included) as a compact JSON snapshot, versioned with
 * "v": 1. Restoring it gives a state equal in every field. */
void gb_proto_snapshot_encode(const gb_dev_t *dev, gb_buf_t *out);

/* Restores a snapshot into dev, which must not be initialised (or must be disposed): on
 * success dev is a full state the caller disposes. Returns 0, or GB_EINVAL with err set
 * (status 500, code "invalid_snapshot", field naming what is wrong) and dev left empty. */
int gb_proto_snapshot_decode(const char *json, size_t len, gb_dev_t *dev,
                             gb_error_t *err) GB_MUST_CHECK;

/* ---- the Autopilot hardware-hash CSV (autopilot_csv.c) ----
 * A streaming reader of the file Intune takes (Get-WindowsAutopilotInfo writes it): bytes go in
 * as they arrive, in pieces of any size, and each data row comes out, validated, through a
 * callback, with the physical line it starts on (the header is line 1). Nothing but the row
 * being read and the serials seen so far (for duplicates) is held.
 *
 * Format: an optional UTF-8 byte order mark, then the header, exactly
 *   Device Serial Number,Windows Product ID,Hardware Hash[,Group Tag][,Assigned User]
 * (names case-sensitive, in this order; no other column is accepted, as Intune accepts none),
 * then one row per device with as many fields as the header. RFC 4180 quoting (a quoted field
 * may hold commas, doubled quotes and line breaks), LF or CRLF line ends, spaces around
 * unquoted fields ignored, blank lines skipped. A wrong or missing header refuses the whole
 * file; a bad row is reported and skipped, and the rows around it still come out. */
#define GB_PROTO_CSV_MAX_ROWS       100000 /* data rows per file; the rest is refused */
#define GB_PROTO_CSV_MAX_ROW_BYTES  65536  /* one row, line breaks in quotes included */
#define GB_PROTO_CSV_PRODUCT_ID_MAX 64
#define GB_PROTO_CSV_HASH_MAX       16384
#define GB_PROTO_CSV_GROUP_TAG_MAX  128
#define GB_PROTO_CSV_USER_MAX       256

typedef struct gb_proto_csv gb_proto_csv_t;

/* A valid row. The slices are NUL-terminated and valid only during the callback. */
typedef struct gb_proto_csv_row {
    uint64_t line;          /* physical line the row starts on; the header is line 1 */
    gb_str_t serial;        /* passes gb_proto_serial_valid() */
    gb_str_t product_id;    /* len 0: none given (Intune allows that) */
    gb_str_t hardware_hash; /* non-empty base64 */
    gb_str_t group_tag;     /* p NULL: the file has no Group Tag column; len 0: empty */
    gb_str_t assigned_user; /* p NULL: no Assigned User column; len 0: empty; else a UPN */
} gb_proto_csv_row_t;

typedef struct gb_proto_csv_ops {
    /* A valid row whose serial did not appear on an earlier valid row. */
    void (*row)(const gb_proto_csv_row_t *row, void *arg);
    /* A row that is not imported: message is one human sentence (no line number in it). */
    void (*error)(uint64_t line, const char *message, void *arg);
} gb_proto_csv_ops_t;

/* A reader calling ops (copied) with arg. Callbacks fire only from inside feed and finish. */
gb_proto_csv_t *gb_proto_csv_new(const gb_proto_csv_ops_t *ops, void *arg);
/* Frees p; NULL does nothing. */
void gb_proto_csv_free(gb_proto_csv_t *p);
/* Reads the next len bytes. Returns 0, or GB_EINVAL with err set (400 invalid_csv) when the
 * file cannot be read at all: a missing or wrong header, or UTF-16. That error comes before any
 * row callback, and every later call returns it again. Rows past GB_PROTO_CSV_MAX_ROWS are
 * reported once, as an error on the first of them, and everything after it is ignored. */
int gb_proto_csv_feed(gb_proto_csv_t *p, const void *data, size_t len,
                      gb_error_t *err) GB_MUST_CHECK;
/* The end of the file: reads a last row without a line break, reports an unclosed quote.
 * Returns 0, or GB_EINVAL with err set (invalid_csv) when no valid header was read (an empty
 * file included). */
int gb_proto_csv_finish(gb_proto_csv_t *p, gb_error_t *err) GB_MUST_CHECK;
/* The header's column count (3 to 5), or 0 before a valid header has been read. */
unsigned gb_proto_csv_columns(const gb_proto_csv_t *p);
/* Data rows read so far, valid or not. */
uint64_t gb_proto_csv_rows(const gb_proto_csv_t *p);

#endif
