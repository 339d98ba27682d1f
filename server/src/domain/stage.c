/* stage: the stage catalogue (contract ids in flow order, flows, phases, names for people) and
 * the small enumerations of the agent protocol (run states, message types, app states,
 * screens, network media, device statuses) with their contract spellings. Tables are indexed
 * by enum value, so every lookup is O(1) and every parse is a short linear scan. */
#include <string.h>

#include "domain/domain.h"

typedef struct stage_row {
    const char *id;
    const char *name;
    gb_flow_t flow;
    gb_phase_t phase;
} stage_row_t;

static const stage_row_t stages[GB_STAGE_COUNT] = {
    [GB_STAGE_NONE] = {"", "", GB_FLOW_NONE, GB_PHASE_NONE},
    [GB_STAGE_OOBE] = {"oobe", "Out-of-box experience", GB_FLOW_TECHNICIAN,
                       GB_PHASE_TECHNICIAN_OOBE},
    [GB_STAGE_ENTERPRISE_PROVISIONING] = {"enterprise_provisioning", "Provisioning menu",
                                          GB_FLOW_TECHNICIAN, GB_PHASE_TECHNICIAN_OOBE},
    [GB_STAGE_PROFILE_DOWNLOAD] = {"profile_download", "Autopilot profile download",
                                   GB_FLOW_TECHNICIAN, GB_PHASE_TECHNICIAN_OOBE},
    [GB_STAGE_ZDP_UPDATE] = {"zdp_update", "Zero-day updates", GB_FLOW_TECHNICIAN,
                             GB_PHASE_TECHNICIAN_OOBE},
    [GB_STAGE_COMPONENT_UPDATE] = {"component_update", "Autopilot component update",
                                   GB_FLOW_TECHNICIAN, GB_PHASE_TECHNICIAN_OOBE},
    [GB_STAGE_DEVICE_RENAME] = {"device_rename", "Device rename", GB_FLOW_TECHNICIAN,
                                GB_PHASE_TECHNICIAN_OOBE},
    [GB_STAGE_LANDING] = {"landing", "Landing page", GB_FLOW_TECHNICIAN, GB_PHASE_TECHNICIAN_OOBE},
    [GB_STAGE_SECURING_HARDWARE] = {"securing_hardware", "Securing your hardware",
                                    GB_FLOW_TECHNICIAN, GB_PHASE_DEVICE_PREPARATION},
    [GB_STAGE_JOINING_NETWORK] = {"joining_network", "Joining your organization's network",
                                  GB_FLOW_TECHNICIAN, GB_PHASE_DEVICE_PREPARATION},
    [GB_STAGE_REGISTERING_MDM] = {"registering_mdm", "Registering for mobile management",
                                  GB_FLOW_TECHNICIAN, GB_PHASE_DEVICE_PREPARATION},
    [GB_STAGE_PREPARING_MDM] = {"preparing_mdm", "Preparing for mobile management",
                                GB_FLOW_TECHNICIAN, GB_PHASE_DEVICE_PREPARATION},
    [GB_STAGE_DEVICE_SETUP] = {"device_setup", "Device setup", GB_FLOW_TECHNICIAN,
                               GB_PHASE_DEVICE_SETUP},
    [GB_STAGE_RESEAL] = {"reseal", "Reseal", GB_FLOW_TECHNICIAN, GB_PHASE_RESEAL},
    [GB_STAGE_USER_OOBE] = {"user_oobe", "User out-of-box experience", GB_FLOW_USER,
                            GB_PHASE_USER_OOBE},
    [GB_STAGE_USER_SIGNIN] = {"user_signin", "User sign-in", GB_FLOW_USER, GB_PHASE_USER_OOBE},
    [GB_STAGE_ACCOUNT_SETUP] = {"account_setup", "Account setup", GB_FLOW_USER,
                                GB_PHASE_ACCOUNT_SETUP},
    [GB_STAGE_HELLO_PROVISIONING] = {"hello_provisioning", "Windows Hello for Business",
                                     GB_FLOW_USER, GB_PHASE_COMPLETION},
    [GB_STAGE_DESKTOP] = {"desktop", "Desktop", GB_FLOW_USER, GB_PHASE_COMPLETION},
};

static const char *const phase_ids[GB_PHASE_COUNT] = {
    [GB_PHASE_NONE] = "",
    [GB_PHASE_TECHNICIAN_OOBE] = "technician_oobe",
    [GB_PHASE_DEVICE_PREPARATION] = "device_preparation",
    [GB_PHASE_DEVICE_SETUP] = "device_setup",
    [GB_PHASE_RESEAL] = "reseal",
    [GB_PHASE_USER_OOBE] = "user_oobe",
    [GB_PHASE_ACCOUNT_SETUP] = "account_setup",
    [GB_PHASE_COMPLETION] = "completion",
};

static const char *const phase_names[GB_PHASE_COUNT] = {
    [GB_PHASE_NONE] = "",
    [GB_PHASE_TECHNICIAN_OOBE] = "Technician OOBE",
    [GB_PHASE_DEVICE_PREPARATION] = "Device preparation",
    [GB_PHASE_DEVICE_SETUP] = "Device setup",
    [GB_PHASE_RESEAL] = "Reseal",
    [GB_PHASE_USER_OOBE] = "User OOBE and sign-in",
    [GB_PHASE_ACCOUNT_SETUP] = "Account setup",
    [GB_PHASE_COMPLETION] = "Hello and desktop",
};

static const char *const run_state_ids[] = {
    [GB_RUN_NONE] = "",         [GB_RUN_STARTED] = "started", [GB_RUN_SUCCEEDED] = "succeeded",
    [GB_RUN_FAILED] = "failed", [GB_RUN_SKIPPED] = "skipped",
};

static const char *const msg_type_ids[GB_MSG_TYPE_COUNT] = {
    [GB_MSG_HELLO] = "hello",         [GB_MSG_STAGE] = "stage",       [GB_MSG_APP] = "app",
    [GB_MSG_DOWNLOAD] = "download",   [GB_MSG_WINEVENT] = "winevent", [GB_MSG_RESULT] = "result",
    [GB_MSG_HEARTBEAT] = "heartbeat",
};

static const char *const app_state_ids[] = {
    [GB_APP_NONE] = "",
    [GB_APP_DOWNLOADING] = "downloading",
    [GB_APP_INSTALLING] = "installing",
    [GB_APP_INSTALLED] = "installed",
    [GB_APP_FAILED] = "failed",
};

static const char *const screen_ids[] = {
    [GB_SCREEN_NONE] = "",
    [GB_SCREEN_GREEN] = "green",
    [GB_SCREEN_RED] = "red",
};

static const char *const medium_ids[] = {
    [GB_MEDIUM_UNKNOWN] = "",          [GB_MEDIUM_ETHERNET] = "ethernet", [GB_MEDIUM_WIFI] = "wifi",
    [GB_MEDIUM_CELLULAR] = "cellular", [GB_MEDIUM_OTHER] = "other",
};

static const char *const status_ids[GB_DEV_STATUS_COUNT] = {
    [GB_DEV_REGISTERED] = "registered", [GB_DEV_PROVISIONING] = "provisioning",
    [GB_DEV_GREEN] = "green",           [GB_DEV_RED] = "red",
    [GB_DEV_RESEALED] = "resealed",     [GB_DEV_HANDOVER] = "handover",
    [GB_DEV_DELIVERED] = "delivered",
};

/* s equals the NUL-terminated id: byte by byte with an early exit, no strlen (parsing runs for
 * every message decoded). */
static bool id_eq(gb_str_t s, const char *id)
{
    for (size_t i = 0; i < s.len; i++) {
        if (id[i] != s.p[i] || id[i] == '\0') {
            return false;
        }
    }
    return id[s.len] == '\0';
}

/* Index of s in table[first..n), or -1. Contract ids are exact and case-sensitive. */
static int find_id(const char *const *table, int first, int n, gb_str_t s)
{
    for (int i = first; i < n; i++) {
        if (id_eq(s, table[i])) {
            return i;
        }
    }
    return -1;
}

const char *gb_stage_id(gb_stage_t stage)
{
    return (unsigned)stage < GB_STAGE_COUNT ? stages[stage].id : "";
}

const char *gb_stage_name(gb_stage_t stage)
{
    return (unsigned)stage < GB_STAGE_COUNT ? stages[stage].name : "";
}

bool gb_stage_parse(gb_str_t id, gb_stage_t *out)
{
    for (int i = 1; i < GB_STAGE_COUNT; i++) {
        if (id_eq(id, stages[i].id)) {
            *out = (gb_stage_t)i;
            return true;
        }
    }
    return false;
}

gb_flow_t gb_stage_flow(gb_stage_t stage)
{
    return (unsigned)stage < GB_STAGE_COUNT ? stages[stage].flow : GB_FLOW_NONE;
}

gb_phase_t gb_stage_phase(gb_stage_t stage)
{
    return (unsigned)stage < GB_STAGE_COUNT ? stages[stage].phase : GB_PHASE_NONE;
}

const char *gb_phase_id(gb_phase_t phase)
{
    return (unsigned)phase < GB_PHASE_COUNT ? phase_ids[phase] : "";
}

const char *gb_phase_name(gb_phase_t phase)
{
    return (unsigned)phase < GB_PHASE_COUNT ? phase_names[phase] : "";
}

bool gb_phase_is_esp(gb_phase_t phase)
{
    return phase == GB_PHASE_DEVICE_PREPARATION || phase == GB_PHASE_DEVICE_SETUP ||
           phase == GB_PHASE_ACCOUNT_SETUP;
}

const char *gb_run_state_id(gb_run_state_t state)
{
    return (unsigned)state < GB_ARRAY_LEN(run_state_ids) ? run_state_ids[state] : "";
}

bool gb_run_state_parse(gb_str_t id, gb_run_state_t *out)
{
    int i = find_id(run_state_ids, 1, (int)GB_ARRAY_LEN(run_state_ids), id);
    if (i < 0) {
        return false;
    }
    *out = (gb_run_state_t)i;
    return true;
}

const char *gb_msg_type_id(gb_msg_type_t type)
{
    return (unsigned)type < GB_MSG_TYPE_COUNT ? msg_type_ids[type] : "";
}

bool gb_msg_type_parse(gb_str_t id, gb_msg_type_t *out)
{
    int i = find_id(msg_type_ids, 0, GB_MSG_TYPE_COUNT, id);
    if (i < 0) {
        return false;
    }
    *out = (gb_msg_type_t)i;
    return true;
}

const char *gb_app_state_id(gb_app_state_t state)
{
    return (unsigned)state < GB_ARRAY_LEN(app_state_ids) ? app_state_ids[state] : "";
}

bool gb_app_state_parse(gb_str_t id, gb_app_state_t *out)
{
    int i = find_id(app_state_ids, 1, (int)GB_ARRAY_LEN(app_state_ids), id);
    if (i < 0) {
        return false;
    }
    *out = (gb_app_state_t)i;
    return true;
}

const char *gb_screen_id(gb_screen_t screen)
{
    return (unsigned)screen < GB_ARRAY_LEN(screen_ids) ? screen_ids[screen] : "";
}

bool gb_screen_parse(gb_str_t id, gb_screen_t *out)
{
    int i = find_id(screen_ids, 1, (int)GB_ARRAY_LEN(screen_ids), id);
    if (i < 0) {
        return false;
    }
    *out = (gb_screen_t)i;
    return true;
}

const char *gb_medium_id(gb_medium_t medium)
{
    return (unsigned)medium < GB_ARRAY_LEN(medium_ids) ? medium_ids[medium] : "";
}

gb_medium_t gb_medium_parse(gb_str_t id)
{
    /* Agents spell the wired medium in several ways; all of them count as Ethernet. */
    if (gb_str_case_eq_cstr(id, "ethernet") || gb_str_case_eq_cstr(id, "wired") ||
        gb_str_case_eq_cstr(id, "lan")) {
        return GB_MEDIUM_ETHERNET;
    }
    if (gb_str_case_eq_cstr(id, "wifi") || gb_str_case_eq_cstr(id, "wi-fi") ||
        gb_str_case_eq_cstr(id, "wireless") || gb_str_case_eq_cstr(id, "wlan")) {
        return GB_MEDIUM_WIFI;
    }
    if (gb_str_case_eq_cstr(id, "cellular") || gb_str_case_eq_cstr(id, "mobile")) {
        return GB_MEDIUM_CELLULAR;
    }
    if (id.len == 0) {
        return GB_MEDIUM_UNKNOWN;
    }
    return GB_MEDIUM_OTHER;
}

const char *gb_dev_status_id(gb_dev_status_t status)
{
    return (unsigned)status < GB_DEV_STATUS_COUNT ? status_ids[status] : "";
}

bool gb_dev_status_parse(gb_str_t id, gb_dev_status_t *out)
{
    int i = find_id(status_ids, 0, GB_DEV_STATUS_COUNT, id);
    if (i < 0) {
        return false;
    }
    *out = (gb_dev_status_t)i;
    return true;
}
