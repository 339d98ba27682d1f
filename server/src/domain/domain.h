/* domain: the WhiteGlove model in pure C. The stage catalogue, the diagnosis and warning
 * catalogues, Windows-event translation, and a device's derived state, built by applying agent
 * messages in seq order. No I/O and nothing beyond util: every result is a function of the
 * arguments, so applying the same sorted messages to a fresh state always gives the same state. */
#ifndef GB_DOMAIN_H
#define GB_DOMAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "util/util.h"

/* A time that is not known (all times are UTC milliseconds since the epoch). */
#define GB_TIME_NONE INT64_MIN

/* Wait after reseal before the user flow (token refresh) and how long a reseal stays good. */
#define GB_RESEAL_READY_MS     (90LL * 60 * 1000)
#define GB_RESEAL_VALID_MONTHS 6
/* The ESP timeout when the profile sets none. */
#define GB_ESP_TIMEOUT_DEFAULT_MIN 60

/* Bounds that keep one device's state small (about 1 KB in the usual case). */
#define GB_DEV_MAX_ATTEMPTS 64  /* beyond this, red stays red: no further attempt opens */
#define GB_DEV_MAX_APPS     32  /* apps beyond this are not tracked one by one */
#define GB_APP_NAME_MAX     128 /* bytes; longer names are cut */
#define GB_HELLO_STR_MAX    128 /* bytes kept of each hello string */

/* ---------------------------------------------------------------------------------------------
 * Stage catalogue
 * ------------------------------------------------------------------------------------------- */

/* The contract's stage ids in flow order (technician flow, then user flow). The order matters:
 * a stage that starts closes every earlier stage still running (ESP is sequential). */
typedef enum gb_stage {
    GB_STAGE_NONE = 0,                /* no stage seen yet in this attempt */
    GB_STAGE_OOBE,                    /* first boot enters OOBE */
    GB_STAGE_ENTERPRISE_PROVISIONING, /* Win key x5: the provisioning menu */
    GB_STAGE_PROFILE_DOWNLOAD,        /* Autopilot registration check and profile download */
    GB_STAGE_ZDP_UPDATE,              /* zero-day updates for OOBE */
    GB_STAGE_COMPONENT_UPDATE,        /* Autopilot component updates (may fail, not fatal) */
    GB_STAGE_DEVICE_RENAME,           /* name template applied, with a reboot */
    GB_STAGE_LANDING,                 /* landing page; the technician clicks Provision */
    GB_STAGE_SECURING_HARDWARE,       /* ESP device preparation: TPM, attestation, AIK */
    GB_STAGE_JOINING_NETWORK,         /* ESP device preparation: Azure AD join */
    GB_STAGE_REGISTERING_MDM,         /* ESP device preparation: Intune enrollment */
    GB_STAGE_PREPARING_MDM,           /* ESP device preparation: MDM and IME policy providers */
    GB_STAGE_DEVICE_SETUP,            /* ESP device setup: device policies, certificates, apps */
    GB_STAGE_RESEAL,                  /* the technician reseals; the device shuts down */
    GB_STAGE_USER_OOBE,               /* user flow: region, keyboard, already provisioned */
    GB_STAGE_USER_SIGNIN,             /* user flow: sign-in and user-device association */
    GB_STAGE_ACCOUNT_SETUP,           /* user flow: ESP account setup */
    GB_STAGE_HELLO_PROVISIONING,      /* user flow: Windows Hello for Business */
    GB_STAGE_DESKTOP,                 /* user flow: the desktop appears; handover complete */
    GB_STAGE_COUNT
} gb_stage_t;

typedef enum gb_flow {
    GB_FLOW_NONE = 0,
    GB_FLOW_TECHNICIAN, /* staging room: oobe .. reseal */
    GB_FLOW_USER,       /* handover: user_oobe .. desktop */
} gb_flow_t;

typedef enum gb_phase {
    GB_PHASE_NONE = 0,
    GB_PHASE_TECHNICIAN_OOBE,    /* oobe .. landing: before the ESP */
    GB_PHASE_DEVICE_PREPARATION, /* ESP: securing_hardware .. preparing_mdm */
    GB_PHASE_DEVICE_SETUP,       /* ESP: device_setup */
    GB_PHASE_RESEAL,             /* reseal */
    GB_PHASE_USER_OOBE,          /* user_oobe, user_signin */
    GB_PHASE_ACCOUNT_SETUP,      /* ESP: account_setup */
    GB_PHASE_COMPLETION,         /* hello_provisioning, desktop */
    GB_PHASE_COUNT
} gb_phase_t;

/* The contract id ("securing_hardware"); "" for GB_STAGE_NONE or out of range. */
const char *gb_stage_id(gb_stage_t stage);
/* A name for people ("Securing your hardware"). */
const char *gb_stage_name(gb_stage_t stage);
/* Parses a contract id (exact, case-sensitive). False for anything else. */
bool gb_stage_parse(gb_str_t id, gb_stage_t *out);
gb_flow_t gb_stage_flow(gb_stage_t stage);
gb_phase_t gb_stage_phase(gb_stage_t stage);
/* "device_preparation", and a name for people ("Device preparation"). */
const char *gb_phase_id(gb_phase_t phase);
const char *gb_phase_name(gb_phase_t phase);
/* True for the three phases the Enrollment Status Page tracks. */
bool gb_phase_is_esp(gb_phase_t phase);

/* The state of one stage run. */
typedef enum gb_run_state {
    GB_RUN_NONE = 0,
    GB_RUN_STARTED,   /* running: ended_ms is GB_TIME_NONE */
    GB_RUN_SUCCEEDED, /* done */
    GB_RUN_FAILED,    /* ended in error; red unless the stage is component_update */
    GB_RUN_SKIPPED,   /* the technician skipped it (component_update after its error) */
} gb_run_state_t;

const char *gb_run_state_id(gb_run_state_t state);
bool gb_run_state_parse(gb_str_t id, gb_run_state_t *out);

/* ---------------------------------------------------------------------------------------------
 * HRESULTs
 * ------------------------------------------------------------------------------------------- */

/* Parses "0x800705B4", "0X800705b4" or "800705b4": an optional 0x and 1 to 8 hex digits. */
bool gb_hresult_parse(gb_str_t s, uint32_t *out);
/* Writes "0x800705B4" (upper-case digits, always 8) into out. */
void gb_hresult_format(uint32_t hr, char out[11]);

/* ---------------------------------------------------------------------------------------------
 * Diagnosis and warning catalogues
 * ------------------------------------------------------------------------------------------- */

typedef enum gb_diag_code {
    GB_DIAG_NONE = 0,
    GB_DIAG_TPM_ATTESTATION,
    GB_DIAG_DEVICE_OBJECT_MISSING,
    GB_DIAG_MULTIPLE_MDM,
    GB_DIAG_PROFILE_UNAVAILABLE,
    GB_DIAG_NO_WIRED_NETWORK,
    GB_DIAG_APP_INSTALL_FAILED,
    GB_DIAG_CERTIFICATE_FAILED,
    GB_DIAG_ESP_TIMEOUT,
    GB_DIAG_UNKNOWN,
    GB_DIAG_COUNT
} gb_diag_code_t;

/* A Windows event named by a catalogue entry. */
typedef struct gb_event_ref {
    const char *channel; /* full channel name */
    uint32_t id;
} gb_event_ref_t;

/* One row of the diagnosis catalogue. All strings are static. */
typedef struct gb_diag_info {
    gb_diag_code_t code;
    gb_stage_t stage;         /* where it usually strikes (GB_STAGE_NONE: anywhere) */
    const char *id;           /* contract code: "tpm_attestation" */
    const uint32_t *hresults; /* HRESULTs that identify it on their own (or at its stage) */
    size_t n_hresults;
    const gb_event_ref_t *events; /* events that identify it */
    size_t n_events;
    const char *signal;  /* what gives it away, for people */
    const char *summary; /* one line: what went wrong */
    const char *remedy;  /* what the technician does about it */
} gb_diag_info_t;

/* The catalogue row for code (GB_DIAG_NONE and out-of-range codes give NULL). */
const gb_diag_info_t *gb_diag_info(gb_diag_code_t code);
const char *gb_diag_id(gb_diag_code_t code);
bool gb_diag_parse(gb_str_t id, gb_diag_code_t *out);

/* A device's diagnosis: what made the current attempt red. */
typedef struct gb_diagnosis {
    gb_diag_code_t code; /* GB_DIAG_NONE when the device is not red */
    gb_stage_t stage;    /* the stage that failed (GB_STAGE_NONE if none was running) */
    bool has_hresult;
    uint32_t hresult;
} gb_diagnosis_t;

/* Warning codes, in catalogue order. A device's warnings are a bitmask: 1u << code. */
typedef enum gb_warn {
    GB_WARN_COMPONENT_UPDATE_ERROR = 0,
    GB_WARN_HYBRID_JOIN_UNSUPPORTED,
    GB_WARN_VIRTUAL_MACHINE,
    GB_WARN_TPM_NOT_2_0,
    GB_WARN_NOT_IMPORTED,
    GB_WARN_OUT_OF_ORDER,
    GB_WARN_USER_FLOW_TOO_SOON,
    GB_WARN_RESEAL_EXPIRED,
    GB_WARN_COUNT
} gb_warn_t;

#define GB_WARN_BIT(w) (1u << (w))

typedef struct gb_warn_info {
    gb_warn_t code;
    gb_stage_t stage; /* where it is noticed (GB_STAGE_NONE: preflight or any) */
    const char *id;   /* contract code: "out_of_order" */
    const char *summary;
    const char *remedy;
} gb_warn_info_t;

const gb_warn_info_t *gb_warn_info(gb_warn_t code);
const char *gb_warn_id(gb_warn_t code);
bool gb_warn_parse(gb_str_t id, gb_warn_t *out);

/* ---------------------------------------------------------------------------------------------
 * Messages (decoded by protocol/, applied here)
 * ------------------------------------------------------------------------------------------- */

typedef enum gb_msg_type {
    GB_MSG_HELLO = 0,
    GB_MSG_STAGE,
    GB_MSG_APP,
    GB_MSG_DOWNLOAD,
    GB_MSG_WINEVENT,
    GB_MSG_RESULT,
    GB_MSG_HEARTBEAT,
    GB_MSG_TYPE_COUNT
} gb_msg_type_t;

const char *gb_msg_type_id(gb_msg_type_t type);
bool gb_msg_type_parse(gb_str_t id, gb_msg_type_t *out);

typedef enum gb_app_state {
    GB_APP_NONE = 0,
    GB_APP_DOWNLOADING,
    GB_APP_INSTALLING,
    GB_APP_INSTALLED,
    GB_APP_FAILED,
} gb_app_state_t;

const char *gb_app_state_id(gb_app_state_t state);
bool gb_app_state_parse(gb_str_t id, gb_app_state_t *out);

typedef enum gb_screen {
    GB_SCREEN_NONE = 0,
    GB_SCREEN_GREEN,
    GB_SCREEN_RED,
} gb_screen_t;

const char *gb_screen_id(gb_screen_t screen);
bool gb_screen_parse(gb_str_t id, gb_screen_t *out);

typedef enum gb_medium {
    GB_MEDIUM_UNKNOWN = 0, /* not reported */
    GB_MEDIUM_ETHERNET,
    GB_MEDIUM_WIFI,
    GB_MEDIUM_CELLULAR,
    GB_MEDIUM_OTHER, /* any other value the agent sent */
} gb_medium_t;

const char *gb_medium_id(gb_medium_t medium);
/* Never fails: unknown names give GB_MEDIUM_OTHER. */
gb_medium_t gb_medium_parse(gb_str_t id);

/* A boolean the agent may leave out. */
typedef enum gb_tri {
    GB_TRI_UNSET = 0,
    GB_TRI_FALSE,
    GB_TRI_TRUE,
} gb_tri_t;

typedef struct gb_msg_hello {
    gb_str_t agent; /* p == NULL when absent */
    gb_str_t os_build;
    gb_str_t slot;
    gb_str_t manufacturer;
    gb_str_t model;
    gb_str_t tpm_version; /* "2.0", "1.2"; "" when the device has no TPM */
    gb_tri_t tpm_attestation;
    gb_tri_t virtual_machine;
    gb_medium_t medium;
    double link_mbps; /* < 0 when absent */
} gb_msg_hello_t;

typedef struct gb_msg_stage {
    gb_stage_t stage;
    gb_run_state_t state;
    bool has_hresult;
    uint32_t hresult;
    gb_str_t upn; /* user_signin only: who signed in (p NULL when absent) */
} gb_msg_stage_t;

typedef struct gb_msg_app {
    gb_str_t name;
    gb_app_state_t state;
    int64_t bytes; /* < 0 when absent */
    bool has_hresult;
    uint32_t hresult;
} gb_msg_app_t;

typedef struct gb_msg_download {
    int64_t bytes; /* fetched during the last ms milliseconds */
    int64_t ms;
    int64_t http_bytes; /* < 0 when absent */
    int64_t lan_bytes;
    int64_t cache_bytes;
} gb_msg_download_t;

typedef struct gb_msg_winevent {
    gb_str_t channel;
    uint32_t event_id;
    gb_str_t message; /* "" when absent */
} gb_msg_winevent_t;

/* One agent message. Strings are borrowed (protocol/ puts them in the request's arena, each
 * NUL-terminated). */
typedef struct gb_msg {
    uint64_t seq;   /* >= 1 */
    int64_t at_ms;  /* device clock, UTC */
    uint32_t index; /* position in its request (for errors and stable sorting) */
    gb_msg_type_t type;
    union {
        gb_msg_hello_t hello;
        gb_msg_stage_t stage;
        gb_msg_app_t app;
        gb_msg_download_t download;
        gb_msg_winevent_t winevent;
        gb_screen_t result;
    } u;
} gb_msg_t;

/* ---------------------------------------------------------------------------------------------
 * Device status
 * ------------------------------------------------------------------------------------------- */

typedef enum gb_dev_status {
    GB_DEV_REGISTERED = 0, /* known (imported, or it only said hello): no stage seen yet */
    GB_DEV_PROVISIONING,   /* in the technician flow */
    GB_DEV_GREEN,          /* green screen: waiting for reseal */
    GB_DEV_RED,            /* red screen: waiting for a retry */
    GB_DEV_RESEALED,       /* on the shelf: ready for the user after the wait */
    GB_DEV_HANDOVER,       /* in the user flow */
    GB_DEV_DELIVERED,      /* the user has the desktop */
    GB_DEV_STATUS_COUNT
} gb_dev_status_t;

const char *gb_dev_status_id(gb_dev_status_t status);
bool gb_dev_status_parse(gb_str_t id, gb_dev_status_t *out);

/* ---------------------------------------------------------------------------------------------
 * Windows event translation
 * ------------------------------------------------------------------------------------------- */

typedef enum gb_wchan {
    GB_WCHAN_UNKNOWN = 0,
    GB_WCHAN_AUTOPILOT,          /* ModernDeployment-Diagnostics-Provider/Autopilot */
    GB_WCHAN_MANAGEMENT_SERVICE, /* ModernDeployment-Diagnostics-Provider/ManagementService */
    GB_WCHAN_DM_ENTERPRISE,      /* DeviceManagement-Enterprise-Diagnostics-Provider/Admin */
    GB_WCHAN_USER_DEVICE_REG,    /* User Device Registration/Admin */
    GB_WCHAN_SHELL_CORE,         /* Shell-Core/Operational */
    GB_WCHAN_COUNT
} gb_wchan_t;

/* Full channel name ("Microsoft-Windows-Shell-Core/Operational"). */
const char *gb_wchan_name(gb_wchan_t chan);
/* Case-insensitive; the "Microsoft-Windows-" prefix may be left out. */
gb_wchan_t gb_wchan_parse(gb_str_t name);

/* What an event does to a device. */
typedef enum gb_wact {
    GB_WACT_NONE = 0,      /* kept; changes nothing (unknown events, progress notes) */
    GB_WACT_START,         /* the stage runs (nothing if it already ran in this attempt) */
    GB_WACT_SUCCEED,       /* the stage succeeded */
    GB_WACT_FAIL,          /* the stage failed (GB_STAGE_NONE: the running stage) */
    GB_WACT_START_SUCCEED, /* a stage that is over as soon as it begins (reseal, desktop) */
    GB_WACT_RESULT_GREEN,  /* the green screen */
    GB_WACT_RESULT_RED,    /* the red screen */
    GB_WACT_EVIDENCE,      /* only evidence for the diagnosis */
} gb_wact_t;

/* Evidence bits an event (or message) leaves in the current attempt for the diagnosis. */
enum {
    GB_EV_TPM_REQUIRED = 1u << 0,     /* ManagementService 509 */
    GB_EV_TPM_FAILED = 1u << 1,       /* Autopilot 156, 171, 172 */
    GB_EV_DEVICE_NOT_FOUND = 1u << 2, /* Autopilot 180 in AADEnroll; UDR 204 DeviceNotFound */
    GB_EV_NO_MDM = 1u << 3,           /* Autopilot 115; 180 / 302 in DeviceDiscovery */
    GB_EV_PROFILE = 1u << 4,          /* Autopilot 807, 809, 815, 908 */
    GB_EV_APP_FAILED = 1u << 5,       /* app message failed; DM 1924 during setup */
    GB_EV_CERT_FAILED = 1u << 6,      /* DM 32 / 307 (SCEP, PKCS) */
};

/* The translation of one event. */
typedef struct gb_winevent_effect {
    gb_wchan_t channel;
    bool known; /* the event is in the translation table */
    gb_wact_t action;
    gb_stage_t stage;      /* the stage acted on */
    gb_stage_t then_start; /* a stage that starts right after (GB_STAGE_NONE: none) */
    uint32_t evidence;     /* GB_EV_* bits */
    bool has_hresult;      /* an HRESULT found in the text */
    uint32_t hresult;
    char phase[32]; /* enrollment phase named by 179/180/181/302 ("AADEnroll"), or "" */
} gb_winevent_effect_t;

/* Translates one Windows event. status and stage are the device's current status and stage:
 * the same OOBE event means oobe before reseal and user_oobe after it, and MSI events mean
 * different things while preparing MDM and during device setup. Never fails: an unknown event
 * gives known == false and GB_WACT_NONE. The table and the words looked for in message texts
 * are listed in winevent.c. */
void gb_winevent_translate(gb_str_t channel, uint32_t event_id, gb_str_t message,
                           gb_dev_status_t status, gb_stage_t stage, gb_winevent_effect_t *out);

/* Finds the HRESULT in an event text: the first 0x-prefixed hex number after the word
 * "HRESULT" (any case), else the first one anywhere. */
bool gb_winevent_find_hresult(gb_str_t text, uint32_t *out);
/* Finds the enrollment phase in an event text: the first word that starts with "AAD", or is
 * "DeviceDiscovery", "DeviceEnroll" or starts with "MDM". Writes it NUL-terminated into out. */
bool gb_winevent_find_phase(gb_str_t text, char *out, size_t out_size);

/* ---------------------------------------------------------------------------------------------
 * Device state
 * ------------------------------------------------------------------------------------------- */

/* One run of one stage. 24 bytes. */
typedef struct gb_stage_run {
    int64_t started_ms; /* GB_TIME_NONE if only its end was reported */
    int64_t ended_ms;   /* GB_TIME_NONE while running */
    uint32_t hresult;
    uint8_t stage;   /* gb_stage_t */
    uint8_t state;   /* gb_run_state_t */
    uint8_t attempt; /* 1-based */
    uint8_t has_hresult;
} gb_stage_run_t;

/* One attempt: from the first stage (or a retry) to green or red, and on through the user flow. */
typedef struct gb_attempt {
    int64_t started_ms;        /* read-only: first stage start, or the retry time */
    int64_t ended_ms;          /* read-only: when it went green or red; GB_TIME_NONE before */
    gb_dev_status_t outcome;   /* read-only: GB_DEV_GREEN, GB_DEV_RED, or PROVISIONING while open */
    gb_diagnosis_t diagnosis;  /* read-only: set while red */
    uint32_t evidence;         /* private: GB_EV_* bits seen in this attempt */
    uint32_t evidence_hresult; /* private: HRESULT of the latest failure evidence */
    bool has_evidence_hresult; /* private */
    int32_t fail_run;          /* private: index in runs of the run that made it red, or -1 */
    uint8_t fail_stage;        /* private: the stage that made it red */
} gb_attempt_t;

typedef struct gb_app {
    char *name;
    uint64_t bytes;
    uint32_t hresult;
    uint8_t state; /* gb_app_state_t */
    bool has_bytes;
    bool has_hresult;
} gb_app_t;

/* Settings that steer derivation. */
typedef struct gb_apply_ctx {
    int esp_timeout_min; /* the profile's ESP timeout; <= 0 means GB_ESP_TIMEOUT_DEFAULT_MIN */
    bool hybrid_join;    /* the profile asks for hybrid Azure AD join: warning */
    int64_t received_ms; /* server time the messages arrived; GB_TIME_NONE leaves it */
} gb_apply_ctx_t;

/* A device's state. Embed it; move it by plain assignment (it holds no pointer to itself).
 * Fields are read-only outside domain/: change them through the functions below. */
typedef struct gb_dev {
    /* identity, set by the server */
    char *serial;
    char *group_tag; /* NULL when unset */
    char *assigned_user;
    char *profile;
    char *slot;
    bool imported;
    bool profile_hybrid; /* the profile asks for hybrid join */

    /* derived from messages */
    gb_dev_status_t status;
    gb_stage_t stage;           /* current stage (GB_STAGE_NONE at first and after a retry) */
    gb_run_state_t stage_state; /* state of the current stage's run */
    uint32_t attempt;           /* 1-based */
    uint32_t warnings;          /* GB_WARN_BIT() mask of message-derived warnings */
    bool first_time_right;      /* went green on attempt 1 */
    int64_t resealed_ms;        /* when reseal succeeded in this attempt, else GB_TIME_NONE */
    int64_t first_seen_ms;      /* smallest device time seen */
    int64_t last_seen_ms;       /* largest device time seen */
    int64_t last_at_ms;         /* device time of the highest-seq message */
    int64_t last_arrival_ms;    /* server time of the latest batch or retry */
    uint64_t max_seq;           /* highest seq applied */
    uint64_t contig_seq;        /* every seq from 1 to this has been applied */
    uint64_t n_applied;         /* messages applied */
    uint64_t bytes_total;       /* downloaded, all attempts */
    uint64_t bytes_http;
    uint64_t bytes_lan;
    uint64_t bytes_cache;
    uint64_t setup_bytes; /* downloaded while device_setup ran, this attempt */
    uint64_t setup_ms;    /* sampling time of those downloads */

    /* from the latest hello */
    char *agent;
    char *os_build;
    char *manufacturer;
    char *model;
    char *tpm_version;
    gb_tri_t tpm_attestation;
    gb_tri_t virtual_machine;
    gb_medium_t medium;
    double link_mbps; /* < 0 when unknown */

    char *user_upn; /* who signed in during the user flow (the latest user_signin's upn) */

    gb_stage_run_t *runs; /* all attempts, in the order the runs began */
    uint32_t n_runs;
    uint32_t cap_runs;
    gb_attempt_t *attempts; /* attempts[i] is attempt i + 1 */
    uint32_t n_attempts;
    uint32_t cap_attempts;
    gb_app_t *apps;
    uint32_t n_apps;
    uint32_t cap_apps;
} gb_dev_t;

/* Starts a fresh state for serial (copied): registered, attempt 1, nothing seen. */
void gb_dev_init(gb_dev_t *dev, const char *serial);
/* Frees what the state owns. The state may be initialised again afterwards. */
void gb_dev_dispose(gb_dev_t *dev);
/* Makes dst (uninitialised, or disposed) a deep copy of src. */
void gb_dev_copy(gb_dev_t *dst, const gb_dev_t *src);
/* Forgets everything derived from messages and keeps the identity: the start of a replay. */
void gb_dev_clear_derived(gb_dev_t *dev);

/* Identity setters; strings are copied, NULL clears. */
void gb_dev_set_group_tag(gb_dev_t *dev, const char *group_tag);
void gb_dev_set_assigned_user(gb_dev_t *dev, const char *assigned_user);
/* The profile's name and whether it asks for hybrid join (warning hybrid_join_unsupported). */
void gb_dev_set_profile(gb_dev_t *dev, const char *name, bool hybrid_join);
void gb_dev_set_slot(gb_dev_t *dev, const char *slot);
/* Whether the serial came from an imported Autopilot CSV; a device that did not carries warning
 * not_imported (see gb_dev_warnings). A fresh state is not imported. */
void gb_dev_set_imported(gb_dev_t *dev, bool imported);
void gb_dev_set_last_arrival(gb_dev_t *dev, int64_t received_ms);

/* Restoring a saved state (protocol/'s snapshots): appends a run, an attempt or an app exactly
 * as given (the app's name is copied from name; fields->name is not read). Plain fields may be
 * written directly; strings assigned to the state must come from the gb_x* allocators, as
 * gb_dev_dispose frees them. */
void gb_dev_restore_run(gb_dev_t *dev, const gb_stage_run_t *run);
void gb_dev_restore_attempt(gb_dev_t *dev, const gb_attempt_t *attempt);
void gb_dev_restore_app(gb_dev_t *dev, const char *name, const gb_app_t *fields);

/* Sorts a batch for applying: by seq (stable, so the first of two equal seqs stays first),
 * then drops duplicate seqs within the batch and the messages the state certainly holds
 * (seq == dev->max_seq, or seq <= dev->contig_seq). *n becomes the count kept, at the front.
 * Returns true when a kept message has a seq below dev->max_seq: the caller must then find out
 * from its store which of those it already holds, drop those, and if any is new, rebuild the
 * state by replaying the whole stored sequence (gb_dev_rebuild). Returns false when every kept
 * message can be applied as it is (gb_dev_apply_batch). */
bool gb_msg_batch_prepare(const gb_dev_t *dev, gb_msg_t *msgs, size_t *n) GB_MUST_CHECK;

/* Applies one message (ctx may be NULL for the defaults). Returns 0, or GB_EINVAL when
 * msg->seq is 0, above INT64_MAX, or not above dev->max_seq; nothing changes then (a lower seq
 * needs a replay, an equal one is a duplicate). */
int gb_dev_apply(gb_dev_t *dev, const gb_apply_ctx_t *ctx, const gb_msg_t *msg) GB_MUST_CHECK;
/* Applies messages sorted by seq (after gb_msg_batch_prepare). Returns the number applied;
 * messages whose seq is not above the state's max_seq are skipped. */
size_t gb_dev_apply_batch(gb_dev_t *dev, const gb_apply_ctx_t *ctx, const gb_msg_t *msgs, size_t n);

/* The technician's retry action: when red, opens attempt n + 1 at at_ms (server time) and
 * returns 0; otherwise returns GB_EINVAL (the API's 409 conflict), or GB_EBUSY when the
 * device has used GB_DEV_MAX_ATTEMPTS attempts. A retry is not a message: a replay must
 * repeat it after the message whose seq was max_seq when it was made (gb_dev_rebuild). */
int gb_dev_retry(gb_dev_t *dev, int64_t at_ms) GB_MUST_CHECK;

/* A technician's action that changed the state, taken when its max_seq was after_seq: a retry
 * (at_ms: when), or with assign_slot set a slot assignment (slot; NULL clears it). */
typedef struct gb_action_mark {
    uint64_t after_seq;
    int64_t at_ms;
    bool assign_slot;
    const char *slot;
} gb_action_mark_t;

/* Rebuilds the state from the whole stored sequence: clears what was derived, sorts msgs by
 * seq (in place), drops duplicate seqs and applies them, repeating each action (in after_seq
 * order, ties in the order given) right after the message it followed. A retry that does not
 * apply at that point is skipped; a slot assignment always applies (a later hello that names a
 * slot replaces it, as it did live). */
void gb_dev_rebuild(gb_dev_t *dev, const gb_apply_ctx_t *ctx, gb_msg_t *msgs, size_t n,
                    const gb_action_mark_t *actions, size_t n_actions);

/* ---- derived views ---- */

/* ESP durations of the current attempt in milliseconds; -1 when the phase has not started. A
 * phase still running counts up to the latest device time seen. total is the sum of the three
 * ESP phases that have started. */
typedef struct gb_durations {
    int64_t device_preparation_ms;
    int64_t device_setup_ms;
    int64_t account_setup_ms;
    int64_t total_ms;
} gb_durations_t;

void gb_dev_durations(const gb_dev_t *dev, gb_durations_t *out);
/* Mean Mbit/s of the download samples taken while device setup ran in the current attempt.
 * False when there are none. */
bool gb_dev_mean_mbps(const gb_dev_t *dev, double *out);
/* reseal + 90 minutes and reseal + 6 calendar months; GB_TIME_NONE when not resealed. */
int64_t gb_dev_ready_for_user_ms(const gb_dev_t *dev);
int64_t gb_dev_reseal_expires_ms(const gb_dev_t *dev);
/* The warnings to show at now_ms: message-derived ones, plus not_imported, the profile's
 * hybrid_join_unsupported, and reseal_expired once a resealed device is past its expiry. */
uint32_t gb_dev_warnings(const gb_dev_t *dev, int64_t now_ms);
/* True when a provisioning or handover device has been silent (server time) for longer than
 * stall_timeout_ms. */
bool gb_dev_is_stalled(const gb_dev_t *dev, int64_t now_ms, int64_t stall_timeout_ms);
/* The current attempt's diagnosis, or NULL when the device is not red. */
const gb_diagnosis_t *gb_dev_diagnosis(const gb_dev_t *dev);
/* The current attempt. */
const gb_attempt_t *gb_dev_current_attempt(const gb_dev_t *dev);
/* The run of stage in attempt (1-based), or NULL. */
const gb_stage_run_t *gb_dev_find_run(const gb_dev_t *dev, uint32_t attempt, gb_stage_t stage);
/* Looks up an app by name, or NULL. */
const gb_app_t *gb_dev_find_app(const gb_dev_t *dev, const char *name);

/* ---------------------------------------------------------------------------------------------
 * Fleet statistics: the pure computations behind the summary and timings views (stats.c). The
 * caller owns every array; nothing here allocates, so a view over n devices costs a few arrays
 * of n that the caller keeps from one computation to the next.
 * ------------------------------------------------------------------------------------------- */

#define GB_HOUR_MS (3600LL * 1000)

/* Percentiles by the nearest-rank method: the p-th percentile of n values is the value of rank
 * ceil(p * n / 100) (1-based) in ascending order. Every percentile is therefore one of the
 * values (no interpolation), a single value is every percentile, and p = 100 is the maximum. */
typedef struct gb_stats_pctl {
    size_t count;
    int64_t p50, p90, p95, p99, max; /* 0 when count is 0 */
} gb_stats_pctl_t;

/* The pct-th percentile (1 to 100) of n > 0 values sorted ascending. */
int64_t gb_stats_nearest_rank(const int64_t *sorted, size_t n, unsigned pct);
/* Sorts v ascending (in place) and fills out with its count and percentiles. */
void gb_stats_percentiles(int64_t *v, size_t n, gb_stats_pctl_t *out);

/* The start of the UTC hour that holds ms (floor, also before 1970). */
int64_t gb_stats_hour_floor(int64_t ms);

/* How many times fall in one UTC hour. */
typedef struct gb_stats_hour {
    int64_t hour_ms; /* the hour's start */
    uint32_t count;  /* >= 1 */
} gb_stats_hour_t;

/* Counts times by UTC hour: sorts times ascending (in place) and writes one bucket per hour
 * that holds at least one of them, in ascending order, into out (room for n). Returns the
 * number of buckets written. */
size_t gb_stats_by_hour(int64_t *times, size_t n, gb_stats_hour_t *out);

/* A span of device time. It runs over [start_ms, end_ms): one that ends when another starts
 * does not overlap it. end_ms < start_ms is taken as end_ms == start_ms (empty). */
typedef struct gb_stats_interval {
    int64_t start_ms;
    int64_t end_ms;
} gb_stats_interval_t;

/* Scratch for gb_stats_concurrency: one step of the running-count function. */
typedef struct gb_stats_step {
    int64_t at_ms; /* a time where intervals start or end */
    int64_t level; /* intervals running from at_ms until the next step */
    double area;   /* integral of the running count from the first step to at_ms */
} gb_stats_step_t;

/* Concurrency by a sweep over all n intervals: for each of the first n_out of them (n_out <= n),
 * out[i] is the time-weighted mean number of the n intervals running during iv[i], iv[i] itself
 * included, so it is >= 1. An empty interval gets the number running at its instant, plus one
 * for itself. steps is scratch with room for 2 * n. O(n log n): one sort of the 2n ends, a
 * running integral, and a binary search per interval. The integral is a double: exact while
 * the intervals' lengths add up to less than 2^53 ms (10,000 devices of 28 years each). */
void gb_stats_concurrency(const gb_stats_interval_t *iv, size_t n, size_t n_out,
                          gb_stats_step_t *steps, double *out);

/* ---------------------------------------------------------------------------------------------
 * Profiles
 *
 * A profile is glovebox's copy of an Autopilot deployment profile: what the landing page shows
 * (organization, profile name, assigned user), the join type, the device-name template, and the
 * group tag that selects its devices. These checks are pure; the api layer stores profiles and
 * applies them to devices.
 * ------------------------------------------------------------------------------------------- */

#define GB_PROFILE_NAME_MAX    64  /* bytes of [A-Za-z0-9._-]: the name is a URL path segment */
#define GB_GROUP_TAG_MAX       128 /* characters (Unicode code points) of a group tag */
#define GB_DEVICE_NAME_MAX     15  /* characters of a Windows computer name (NetBIOS) */
#define GB_TENANT_DOMAIN_MAX   253 /* bytes of a DNS name */
#define GB_UPN_LOCAL_MAX       64  /* bytes before the @ of an assigned user */
#define GB_UPN_DOMAIN_MAX      48  /* bytes after it (Microsoft Entra ID's limits) */
#define GB_ESP_TIMEOUT_MAX_MIN 1440

typedef enum gb_join {
    GB_JOIN_AZURE_AD = 0, /* Azure AD (Entra) join: what pre-provisioning performs */
    GB_JOIN_HYBRID,       /* hybrid Azure AD join: not done in the technician flow (a warning) */
} gb_join_t;

/* "azure_ad" or "hybrid"; "" out of range. */
const char *gb_join_id(gb_join_t join);
/* Parses a contract id (exact, case-sensitive). */
bool gb_join_parse(gb_str_t id, gb_join_t *out);

/* A profile's settings. Strings are borrowed and NUL-terminated. */
typedef struct gb_profile {
    const char *name;
    const char *tenant_domain;
    gb_join_t join;
    const char *device_name_template; /* NULL: Windows keeps the name it generates */
    const char *group_tag;
    const char *assigned_user; /* NULL: none */
    int64_t esp_timeout_min;   /* 1 .. GB_ESP_TIMEOUT_MAX_MIN */
} gb_profile_t;

/* What a valid device-name template produces. */
typedef struct gb_name_template {
    unsigned fixed;       /* literal characters */
    unsigned rand_digits; /* digits %RAND:n% adds (0 without it) */
    bool serial;          /* %SERIAL% is there */
    unsigned serial_room; /* with %SERIAL%: characters of the serial that fit in the name */
} gb_name_template_t;

/* Each check returns true when s is valid; otherwise false with a sentence for people in why
 * (why may be NULL; it is always NUL-terminated when why_len > 0). */

/* A profile name: 1 to GB_PROFILE_NAME_MAX of [A-Za-z0-9._-], not only dots. */
bool gb_profile_name_check(const char *s, char *why, size_t why_len);
/* The tenant's DNS domain ("contoso.onmicrosoft.com"): two labels or more of [A-Za-z0-9-]
 * (1..63 bytes, no hyphen at either end), at most GB_TENANT_DOMAIN_MAX bytes, a last label that
 * is not all digits, no trailing dot. Internationalised names go in their xn-- form. */
bool gb_tenant_domain_check(const char *s, char *why, size_t why_len);
/* An Autopilot group tag: valid UTF-8, 1 to GB_GROUP_TAG_MAX characters, no control
 * characters, no white space at either end. */
bool gb_group_tag_check(const char *s, char *why, size_t why_len);
/* A user principal name: local@domain, the local part 1..GB_UPN_LOCAL_MAX of
 * [A-Za-z0-9'._!#^~-] with no dot at either end and no two dots in a row, the domain as
 * gb_tenant_domain_check with at most GB_UPN_DOMAIN_MAX bytes. */
bool gb_assigned_user_check(const char *s, char *why, size_t why_len);
/* A device-name template as Windows applies it: literal letters, digits and hyphens, at most
 * one %SERIAL% and at most one %RAND:n% (n from 1 to 15 random digits), and at least one of
 * the two (without a macro every device gets the same name). The name has at most
 * GB_DEVICE_NAME_MAX characters: Windows shortens the serial to fit, so with %SERIAL% the
 * literal characters and the random digits must leave room for at least one character of it.
 * The name must not be all digits, and a serial or random digits may be just that, so the
 * literal part must hold a letter or a hyphen. out (may be NULL) describes a valid template. */
bool gb_name_template_check(const char *s, gb_name_template_t *out, char *why, size_t why_len);
/* Checks every field of p (name, tenant_domain, join, device_name_template, group_tag,
 * assigned_user, esp_timeout_min, in that order). Returns 0, or GB_EINVAL with err set to 400
 * invalid_request naming the first field at fault. */
int gb_profile_validate(const gb_profile_t *p, gb_error_t *err) GB_MUST_CHECK;

/* Group tags select profiles without regard to letter case, as the dynamic device groups that
 * assign Autopilot profiles by group tag compare strings. Only ASCII letters are folded (the
 * same rule as the database's unique index, lower() under the C collation); other characters
 * must match exactly. NULL equals nothing. */
bool gb_group_tag_eq(const char *a, const char *b);
/* Lower-cases the ASCII letters of s in place: equal keys for tags gb_group_tag_eq matches. */
void gb_group_tag_fold(char *s);

/* ---------------------------------------------------------------------------------------------
 * Capacity planning (capacity.c)
 *
 * A device holds its bench slot for fixed work (the technician's changeover, the flow up to
 * device setup, the installs, the reseal) plus the time its payload takes to download. The
 * downloads in progress share the room's uplink max-min fairly, each capped by its NIC, and only
 * the bytes that LAN peers and a Connected Cache do not serve cross the uplink. The model is
 * fitted from the fleet's measured timings, then answers "N devices on K slots" with a small
 * deterministic event simulation of the room. Pure: the caller owns every sample, and nothing
 * reads a clock or draws true randomness, so the same samples and query give the same answer.
 * ------------------------------------------------------------------------------------------- */

#define GB_CAP_MIN_SAMPLES 5     /* green devices (with downloads, if any) a fit needs */
#define GB_CAP_DEVICES_MAX 20000 /* devices a query may plan */
#define GB_CAP_SLOTS_MAX   10000 /* slots a query may plan */
#define GB_CAP_PAYLOAD_MAX 1e7   /* MB per device a query may plan */
#define GB_CAP_UPLINK_MAX  1e7   /* Mbit/s a query may plan */
#define GB_CAP_CHART_MAX   40    /* points of throughput_by_slots at most */
#define GB_CAP_WHAT_IF_MAX 4
#define GB_CAP_EXPLAIN_MAX 6
#define GB_CAP_EXPLAIN_LEN 400

/* How the current attempt of a device ended, as the model sees it. */
typedef enum gb_cap_outcome {
    GB_CAP_OPEN = 0,    /* not ended yet (or never started): no timings to fit from */
    GB_CAP_GREEN,       /* green: a full flow, the fit's sample */
    GB_CAP_RED,         /* red for a cause other than the ESP timeout: a failed bench stay */
    GB_CAP_ESP_TIMEOUT, /* red at the ESP timeout: the room was too slow, the model decides */
} gb_cap_outcome_t;

/* One device's measured timings (times are device times, UTC ms; GB_TIME_NONE when unknown). */
typedef struct gb_cap_sample {
    gb_cap_outcome_t outcome;
    uint32_t attempts;      /* attempts so far (>= 1) */
    const char *slot;       /* borrowed: its bench slot; NULL when unknown */
    int64_t bench_ms;       /* first stage of its first attempt: when the bench started on it */
    int64_t start_ms;       /* first stage of the current attempt */
    int64_t setup_start_ms; /* the current attempt's device_setup run */
    int64_t setup_end_ms;
    int64_t result_ms;         /* the current attempt's green or red screen */
    int64_t release_ms;        /* its slot was free again: reseal end (green) or the red screen */
    int64_t rework_ms;         /* bench time of earlier attempts that went red for causes other than
                                  the ESP timeout, each up to the next attempt's start */
    int64_t reset_ms;          /* red screen to the next attempt's start, the latest; -1: none */
    int64_t prev_setup_ms;     /* an earlier attempt's device_setup run, the latest: its start */
    int64_t prev_setup_end_ms; /* and its end */
    double prev_bytes;         /* bytes downloaded by earlier attempts */
    double setup_bytes;        /* bytes downloaded while device setup ran (all sources) */
    double download_s;         /* the time those downloads took (the samples' ms) */
    double lan_share;          /* of all its bytes, the share LAN peers served */
    double cache_share;  /* and the share a Connected Cache served (the rest crossed the uplink) */
    double link_mbps;    /* its NIC; <= 0 when unknown */
    int esp_timeout_min; /* its profile's ESP timeout; <= 0 means the default */
    uint32_t n_apps;     /* apps with a known size, in the order they appeared */
    double app_bytes;    /* their sizes added up */
    double app_share[GB_DEV_MAX_APPS]; /* each one's share of app_bytes (they add up to 1) */
} gb_cap_sample_t;

/* Fills out from dev's state; esp_timeout_min is its profile's (<= 0: the default). Strings
 * are borrowed from dev. */
void gb_cap_sample_from_dev(const gb_dev_t *dev, int esp_timeout_min, gb_cap_sample_t *out);

/* The fitted model. The public fields are read-only; the rest are the measured flows the
 * simulation draws from (private). */
typedef struct gb_cap_fit {
    size_t devices;            /* read-only: samples given (the default number to plan) */
    size_t samples;            /* read-only: green devices the fixed parts were fitted from */
    size_t uplink_samples;     /* read-only: those of them whose downloads fitted the uplink */
    size_t red;                /* read-only: current attempts red for other causes */
    size_t esp_timeouts;       /* read-only: current attempts red at the ESP timeout */
    size_t changeovers;        /* read-only: measured slot changeovers */
    double r2, mae_s;          /* read-only: per-device time, fitted against measured */
    double fixed_s;            /* read-only: per-device time without the downloads */
    double pre_setup_s;        /* read-only: attempt start to device setup */
    double setup_fixed_s;      /* read-only: device setup without its downloads */
    double changeover_s;       /* read-only: slot free to the next device's first stage */
    double reseal_s;           /* read-only: green screen to reseal end */
    double rework_s;           /* read-only: mean bench time per device lost to failed attempts */
    double red_share;          /* read-only: share of bench stays that end red (not timeouts) */
    double uplink_mbps;        /* read-only: the effective uplink; 0 when unknown */
    bool uplink_known;         /* read-only: false when no download measured it */
    double saturated_share;    /* read-only: share of download time the uplink ran full */
    double payload_mb;         /* read-only: setup bytes per device, all sources */
    double peer_share;         /* read-only: share of the bytes LAN peers served */
    double cache_share;        /* read-only: share a Connected Cache served */
    double nic_mbps;           /* read-only: the typical NIC; 0 when unknown */
    double download_s;         /* read-only: measured download time per device */
    uint32_t slots;            /* read-only: bench slots seen in use */
    uint32_t max_attempts;     /* read-only: the most attempts a device had */
    int esp_timeout_min;       /* read-only: the most common ESP timeout */
    struct gb_cap_flow *flows; /* private: green flows, then red stays */
    size_t n_flows, n_green;   /* private */
    double *chunk_share;       /* private: per flow, the payload share of each download */
    double *chunk_install_s;   /* private: and the install time after it */
    double *changeover;        /* private: measured changeovers (s) */
    double *resets;            /* private: measured resets (s) */
    size_t n_resets;           /* private */
} gb_cap_fit_t;

/* A planning question. Fields left at their default (gb_cap_query_init) take the fit's value. */
typedef struct gb_cap_query {
    uint32_t devices;    /* 0: the fit's devices */
    uint32_t slots;      /* 0: the slots seen in use */
    double uplink_mbps;  /* < 0: the fitted effective uplink */
    double payload_mb;   /* < 0: each sampled device's own payload */
    double peer_share;   /* < 0: the measured LAN-peer share */
    double cache_share;  /* < 0: the measured cache share */
    int esp_timeout_min; /* 0: each device's profile's */
} gb_cap_query_t;

/* What the simulation predicts for one configuration. */
typedef struct gb_cap_prediction {
    uint32_t devices, slots;
    double uplink_mbps, peer_share, cache_share;
    double per_device_s;     /* mean time of a device's last attempt: first stage to result */
    double makespan_s;       /* bench opens to the last green or red screen */
    double devices_per_hour; /* green devices per hour of makespan */
    double download_s;       /* mean download time of a green device */
    double uplink_busy;      /* share of the makespan the uplink ran full */
    uint32_t green, red;     /* devices by final screen (red includes ESP timeouts) */
    uint32_t esp_timeouts;   /* red screens at the ESP timeout, retries included */
} gb_cap_prediction_t;

typedef enum gb_cap_change {
    GB_CAP_CHANGE_PEER_SHARE = 0, /* LAN peering serves more of the bytes */
    GB_CAP_CHANGE_CACHE_SHARE,    /* a Connected Cache serves most of them */
    GB_CAP_CHANGE_UPLINK,         /* twice the uplink */
    GB_CAP_CHANGE_SLOTS,          /* twice the slots */
} gb_cap_change_t;

/* "peer_share", "cache_share", "uplink_mbps", "slots". */
const char *gb_cap_change_id(gb_cap_change_t change);

typedef struct gb_cap_what_if {
    gb_cap_change_t change;
    double value; /* the changed setting */
    gb_cap_prediction_t prediction;
} gb_cap_what_if_t;

/* The full answer to a query. */
typedef struct gb_cap_plan {
    gb_cap_query_t query;           /* resolved: no value left at its default */
    gb_cap_prediction_t prediction; /* for the query */
    uint32_t recommended_slots;     /* fewest reaching 95% of the best devices per hour with no
                                       predicted ESP timeout; 0 when no slot count avoids it */
    bool bandwidth_bound;           /* twice the uplink helps more than twice the slots */
    gb_cap_prediction_t chart[GB_CAP_CHART_MAX]; /* by slots, ascending */
    size_t n_chart;
    gb_cap_what_if_t what_if[GB_CAP_WHAT_IF_MAX];
    size_t n_what_if;
    char explain[GB_CAP_EXPLAIN_MAX][GB_CAP_EXPLAIN_LEN]; /* sentences for people */
    size_t n_explain;
} gb_cap_plan_t;

void gb_cap_fit_init(gb_cap_fit_t *fit);
void gb_cap_fit_dispose(gb_cap_fit_t *fit);
/* Fits the model from n samples (borrowed; fit keeps copies of what it needs). Returns 0, or
 * GB_EINVAL with err set to 422 insufficient_data saying how many usable samples there are
 * and what is missing (fewer than GB_CAP_MIN_SAMPLES green devices, downloads that moved no
 * bytes); fit is then left empty (but may still be disposed). */
int gb_cap_fit(gb_cap_fit_t *fit, const gb_cap_sample_t *samples, size_t n,
               gb_error_t *err) GB_MUST_CHECK;

void gb_cap_query_init(gb_cap_query_t *q);
/* One configuration, simulated. Returns 0, or GB_EINVAL with err set to 400 invalid_query
 * naming the field at fault (out of range, peer and cache shares above 1 together, a payload
 * with no measured or given uplink). */
int gb_cap_predict(const gb_cap_fit_t *fit, const gb_cap_query_t *q, gb_cap_prediction_t *out,
                   gb_error_t *err) GB_MUST_CHECK;
/* The whole answer: the prediction, throughput by slots, the recommended slots, the bound,
 * what a peer share, a cache, twice the uplink or twice the slots would change, and sentences
 * that explain it. Same errors as gb_cap_predict. */
int gb_cap_plan(const gb_cap_fit_t *fit, const gb_cap_query_t *q, gb_cap_plan_t *out,
                gb_error_t *err) GB_MUST_CHECK;

#endif
