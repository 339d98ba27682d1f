/* model: glovebox-sim's staging room as a pure discrete-event simulation. N devices queue for K
 * bench slots, run the WhiteGlove technician flow (and, for some, the user flow later), share one
 * uplink while they download their payload, and fail at configured rates the way real devices
 * do. The model emits agent-protocol messages (JSON objects with seq and a simulated `at`) through
 * a callback and keeps the ground truth. It does no I/O: its outcome depends on the settings and
 * the seed only, never on who consumes the messages or how fast. */
#ifndef GB_SIM_MODEL_H
#define GB_SIM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define GB_SIM_AGENT   "glovebox-sim/1.0"
#define GB_SIM_VERSION "1.0"
/* No further event: the model is done. */
#define GB_SIM_NEVER INT64_MAX

/* ---------------------------------------------------------------------------------------------
 * Stages and faults (the contract's ids)
 * ------------------------------------------------------------------------------------------- */

/* The contract's stage ids in flow order: technician flow, then user flow. */
typedef enum gb_sim_stage {
    GB_SIM_OOBE = 0,
    GB_SIM_ENTERPRISE_PROVISIONING,
    GB_SIM_PROFILE_DOWNLOAD,
    GB_SIM_ZDP_UPDATE,
    GB_SIM_COMPONENT_UPDATE,
    GB_SIM_DEVICE_RENAME,
    GB_SIM_LANDING,
    GB_SIM_SECURING_HARDWARE,
    GB_SIM_JOINING_NETWORK,
    GB_SIM_REGISTERING_MDM,
    GB_SIM_PREPARING_MDM,
    GB_SIM_DEVICE_SETUP,
    GB_SIM_RESEAL,
    GB_SIM_USER_OOBE,
    GB_SIM_USER_SIGNIN,
    GB_SIM_ACCOUNT_SETUP,
    GB_SIM_HELLO_PROVISIONING,
    GB_SIM_DESKTOP,
    GB_SIM_STAGE_COUNT
} gb_sim_stage_t;

const char *gb_sim_stage_id(gb_sim_stage_t stage);
/* Exact contract id; false for anything else. */
bool gb_sim_stage_parse(const char *id, size_t len, gb_sim_stage_t *out);

/* Failure causes. The first eight have a configurable rate; esp_timeout is never drawn, it
 * happens when device setup runs past the ESP timeout. The ids are the contract's diagnosis
 * and warning codes. */
typedef enum gb_sim_fault {
    GB_SIM_FAULT_NONE = 0,
    GB_SIM_FAULT_TPM_ATTESTATION,        /* a VM or a TPM 1.2: securing_hardware fails, always */
    GB_SIM_FAULT_DEVICE_OBJECT_MISSING,  /* joining_network fails with 0x801C03F3 */
    GB_SIM_FAULT_MULTIPLE_MDM,           /* registering_mdm fails with 0x81036501 */
    GB_SIM_FAULT_PROFILE_UNAVAILABLE,    /* profile_download fails (events 807 or 815) */
    GB_SIM_FAULT_NO_WIRED_NETWORK,       /* no cable: enterprise_provisioning fails */
    GB_SIM_FAULT_APP_INSTALL_FAILED,     /* one app fails to install during device setup */
    GB_SIM_FAULT_CERTIFICATE_FAILED,     /* the SCEP certificate fails during device setup */
    GB_SIM_FAULT_COMPONENT_UPDATE_ERROR, /* component update errors, is skipped: a warning only */
    GB_SIM_FAULT_ESP_TIMEOUT,            /* device setup ran past the ESP timeout */
    GB_SIM_FAULT_COUNT
} gb_sim_fault_t;

const char *gb_sim_fault_id(gb_sim_fault_t fault);
bool gb_sim_fault_parse(const char *id, size_t len, gb_sim_fault_t *out);
/* True for the faults whose rate the settings choose. */
bool gb_sim_fault_has_rate(gb_sim_fault_t fault);

/* Warnings the model's devices earn (bit i = 1u << gb_sim_warn_t). */
typedef enum gb_sim_warn {
    GB_SIM_WARN_COMPONENT_UPDATE_ERROR = 0,
    GB_SIM_WARN_VIRTUAL_MACHINE,
    GB_SIM_WARN_TPM_NOT_2_0,
    GB_SIM_WARN_COUNT
} gb_sim_warn_t;

const char *gb_sim_warn_id(gb_sim_warn_t warn);

/* ---------------------------------------------------------------------------------------------
 * Settings
 * ------------------------------------------------------------------------------------------- */

/* A duration drawn from a triangular distribution, in seconds: lo <= mode <= hi. */
typedef struct gb_sim_dist {
    double lo;
    double mode;
    double hi;
} gb_sim_dist_t;

#define GB_SIM_MAX_APPS     32
#define GB_SIM_APP_NAME_MAX 64

/* One item of the payload ESP tracks during device setup: downloaded, then installed. */
typedef struct gb_sim_app {
    char name[GB_SIM_APP_NAME_MAX];
    uint64_t bytes;        /* 0: nothing to download (a policy-like item) */
    gb_sim_dist_t install; /* install time once downloaded */
} gb_sim_app_t;

/* Everything the model's outcome depends on. gb_sim_options_defaults() fills it. */
typedef struct gb_sim_config {
    uint32_t devices;
    uint32_t slots;
    uint32_t technicians;  /* 0: every bench slot has its own technician (nobody waits) */
    uint32_t max_attempts; /* attempts per device before it is set aside red */
    double uplink_mbps;    /* shared internet uplink, Mbit/s */
    double nic_mbps;       /* every device's link; 0: by hardware model */
    double peer_share;     /* share of bytes from LAN peers (Delivery Optimization) */
    double cache_share;    /* share of bytes from a Connected Cache on the LAN */
    uint64_t seed;
    int64_t start_ms;     /* the simulated clock's start (epoch ms) */
    double tech_s;        /* technician time to unbox, cable and start one device */
    double retry_delay_s; /* technician time to diagnose and reset a red device */
    double reseal_wait_s; /* time until a technician clicks Reseal on a green device */
    double esp_timeout_min;
    double fault_rate[GB_SIM_FAULT_COUNT];
    gb_sim_dist_t stage_time[GB_SIM_STAGE_COUNT]; /* device_setup: its fixed part (policies,
                                                     certificates) before the apps */
    gb_sim_dist_t tpm_fail_time; /* how long securing_hardware tries before 0x800705B4 */
    double handover_share;       /* share of resealed devices whose user flow runs */
    double handover_wait_min;    /* minimum wait after reseal (>= 90) */
    double handover_spread_min;  /* extra wait, uniform in [0, spread] */
    double winevent_share;       /* share of devices that report Windows events only */
    bool rename;                 /* the profile has a device-name template */
    double sample_s;             /* download sample period */
    double heartbeat_s;          /* heartbeat after this much silence; 0: never */
    gb_sim_app_t apps[GB_SIM_MAX_APPS];
    uint32_t n_apps;
    char payload[32]; /* the named payload, or "custom" */
    char serial_prefix[16];
    char tenant_domain[64];
} gb_sim_config_t;

/* The program's settings: the model's plus those of the transport and the outputs. */
typedef struct gb_sim_options {
    gb_sim_config_t model;
    char server[512]; /* "" : no server (a dry run) */
    char token[512];
    char csv[512];      /* write the Autopilot CSV here and exit */
    char summary[512];  /* write the ground truth JSON here */
    char messages[512]; /* write every message as JSON lines here */
    char group_tag[64]; /* the CSV's Group Tag column */
    char log_level[16];
    double speed;         /* 0: as fast as possible; X: X times real time */
    uint32_t batch;       /* messages per request */
    uint32_t connections; /* keep-alive connections to the server */
    uint32_t max_queued;  /* unacknowledged messages the model may run ahead by */
    uint32_t hash_bytes;  /* raw bytes of each CSV hardware hash */
    double timeout_s;     /* one request's time limit */
    double give_up_s;     /* stop when nothing is acknowledged for this long */
    bool dry_run;
    bool quiet;
    bool help;
    bool version;
} gb_sim_options_t;

/* Sets every setting to its default (the same table --help prints). */
void gb_sim_options_defaults(gb_sim_options_t *o);
/* Parses argv (argv[0] is skipped) over the defaults already in o. Returns 0, or -1 with a
 * sentence naming the flag in err. Values are checked against their bounds. */
int gb_sim_options_parse(gb_sim_options_t *o, int argc, char **argv, char *err,
                         size_t err_size) GB_MUST_CHECK;
/* Appends the --help text: every flag with its default and meaning. */
void gb_sim_options_help(gb_buf_t *out);
/* Parses a payload: a named profile ("standard", "light", "heavy") or a list
 * "Name=MB[@install_s],...". Returns 0 or -1 with err set. */
int gb_sim_payload_parse(gb_sim_config_t *cfg, const char *spec, char *err,
                         size_t err_size) GB_MUST_CHECK;

/* ---------------------------------------------------------------------------------------------
 * The model
 * ------------------------------------------------------------------------------------------- */

typedef struct gb_sim gb_sim_t;

/* One message as the model emits it; everything is borrowed for the callback's duration. */
typedef struct gb_sim_msg {
    uint32_t device; /* index, 0 .. devices-1 */
    const char *serial;
    uint64_t seq;     /* 1, 2, 3 ... per device */
    int64_t at_ms;    /* epoch ms on the simulated clock */
    const char *json; /* the message object, NUL-terminated */
    size_t len;
} gb_sim_msg_t;

typedef void (*gb_sim_sink_cb)(void *arg, const gb_sim_msg_t *msg);

/* Builds the room: devices with their hardware and serials, all waiting for a slot at time 0.
 * cfg is copied. sink (may be NULL) receives every message in emission order. */
gb_sim_t *gb_sim_new(const gb_sim_config_t *cfg, gb_sim_sink_cb sink, void *arg);
void gb_sim_free(gb_sim_t *sim);

/* Runs the events due at or before until_ms (simulated ms since the start), at most max_events
 * of them (0: no limit). Returns the number run. */
size_t gb_sim_run(gb_sim_t *sim, int64_t until_ms, size_t max_events);
/* Time of the next event (ms since the start), or GB_SIM_NEVER when the model is done. */
int64_t gb_sim_next_ms(const gb_sim_t *sim);
bool gb_sim_done(const gb_sim_t *sim);
/* Simulated ms since the start of the latest event run. */
int64_t gb_sim_now_ms(const gb_sim_t *sim);
const gb_sim_config_t *gb_sim_config(const gb_sim_t *sim);
uint32_t gb_sim_device_count(const gb_sim_t *sim);
const char *gb_sim_device_serial(const gb_sim_t *sim, uint32_t device);
uint64_t gb_sim_messages(const gb_sim_t *sim);

/* ---------------------------------------------------------------------------------------------
 * Ground truth
 * ------------------------------------------------------------------------------------------- */

typedef enum gb_sim_status {
    GB_SIM_STATUS_WAITING = 0, /* not finished yet (the model is still running) */
    GB_SIM_STATUS_RED,         /* set aside red after its last attempt */
    GB_SIM_STATUS_RESEALED,    /* green, resealed, on the shelf */
    GB_SIM_STATUS_DELIVERED,   /* the user flow reached the desktop */
} gb_sim_status_t;

const char *gb_sim_status_id(gb_sim_status_t status);

/* What the server should derive for one device. Times are simulated ms since the start, -1 when
 * they did not happen; stage times are those of the last attempt, as reported. */
typedef struct gb_sim_truth {
    gb_sim_status_t status;
    gb_sim_fault_t diagnosis; /* the last attempt's cause when red, else NONE */
    gb_sim_stage_t failed_stage;
    uint32_t hresult; /* of the failure, 0 when none */
    uint32_t attempts;
    uint32_t warnings;                     /* 1u << gb_sim_warn_t */
    uint32_t failures[GB_SIM_FAULT_COUNT]; /* red attempts by cause, over all attempts */
    bool winevents;                        /* reports Windows events instead of stage messages */
    char slot[8];
    const char *manufacturer;
    const char *model;
    int64_t slot_at;    /* got its bench slot */
    int64_t attempt_at; /* the last attempt's first stage start */
    int64_t result_at;  /* the last attempt's green or red screen */
    int64_t resealed_at;
    int64_t delivered_at;
    int64_t stage_start[GB_SIM_STAGE_COUNT];
    int64_t stage_end[GB_SIM_STAGE_COUNT];
    uint8_t stage_state[GB_SIM_STAGE_COUNT]; /* 0 none, 1 started, 2 succeeded, 3 failed,
                                                4 skipped */
    uint64_t bytes;                          /* downloaded over all attempts, by source */
    uint64_t http_bytes;
    uint64_t lan_bytes;
    uint64_t cache_bytes;
    uint64_t setup_bytes; /* download samples of the last attempt's device setup */
    uint64_t setup_sample_ms;
    double conc_ms;       /* last attempt: integral of active downloads while downloading */
    uint64_t download_ms; /* last attempt: time spent downloading */
    uint64_t messages;
} gb_sim_truth_t;

const gb_sim_truth_t *gb_sim_truth(const gb_sim_t *sim, uint32_t device);

/* Duration figures of one device in ms, -1 when they do not apply. Definitions (README):
 * device_preparation: securing_hardware start -> last end among securing_hardware ..
 * preparing_mdm; device_setup: device_setup start -> end; account_setup: account_setup start ->
 * end; esp: the sum of those that apply; total: the last attempt's first stage start -> its
 * result. */
typedef struct gb_sim_durations {
    int64_t device_preparation_ms;
    int64_t device_setup_ms;
    int64_t account_setup_ms;
    int64_t esp_ms;
    int64_t total_ms;
} gb_sim_durations_t;

void gb_sim_truth_durations(const gb_sim_truth_t *t, gb_sim_durations_t *out);

/* Appends the ground truth as JSON (README documents every field). */
void gb_sim_truth_json(const gb_sim_t *sim, gb_buf_t *out);
/* Appends the human summary printed at the end of a run. */
void gb_sim_summary_text(const gb_sim_t *sim, gb_buf_t *out);

/* ---------------------------------------------------------------------------------------------
 * The fleet's Autopilot CSV
 * ------------------------------------------------------------------------------------------- */

#define GB_SIM_CSV_HEADER \
    "Device Serial Number,Windows Product ID,Hardware Hash,Group Tag,Assigned User"

/* The domain of the simulated users (each device's user signs in as user.<serial>@ it). */
#define GB_SIM_USER_DOMAIN "contoso.com"

/* Appends the hardware-hash CSV of the model's devices: the header, then one row per device
 * with an empty product id, a base64 hardware hash of hash_bytes raw bytes derived from the
 * seed, group_tag, and the device's user as Assigned User (the user who signs in during the
 * handover: user.<serial in lower case>@GB_SIM_USER_DOMAIN). */
void gb_sim_csv(const gb_sim_t *sim, uint32_t hash_bytes, const char *group_tag, gb_buf_t *out);

#endif
