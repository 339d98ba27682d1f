/* catalog: the fixed facts the model draws from: contract ids of stages, faults and warnings;
 * the fleet's hardware models and their serial styles; the named payloads; the built-in stage
 * times; and the one table of Windows events the simulated devices log, with texts in the form
 * the real events have (the domain brief's source article). The server's translation table
 * (server/src/domain/winevent.c) turns exactly these events back into the stage runs. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* ---- ids ---- */

static const char *const stage_ids[GB_SIM_STAGE_COUNT] = {
    "oobe",
    "enterprise_provisioning",
    "profile_download",
    "zdp_update",
    "component_update",
    "device_rename",
    "landing",
    "securing_hardware",
    "joining_network",
    "registering_mdm",
    "preparing_mdm",
    "device_setup",
    "reseal",
    "user_oobe",
    "user_signin",
    "account_setup",
    "hello_provisioning",
    "desktop",
};

static const char *const fault_ids[GB_SIM_FAULT_COUNT] = {
    "",
    "tpm_attestation",
    "device_object_missing",
    "multiple_mdm",
    "profile_unavailable",
    "no_wired_network",
    "app_install_failed",
    "certificate_failed",
    "component_update_error",
    "esp_timeout",
};

static const char *const warn_ids[GB_SIM_WARN_COUNT] = {
    "component_update_error",
    "virtual_machine",
    "tpm_not_2_0",
};

static const char *const status_ids[] = {"waiting", "red", "resealed", "delivered"};

const char *gb_sim_stage_id(gb_sim_stage_t stage)
{
    return (unsigned)stage < GB_SIM_STAGE_COUNT ? stage_ids[stage] : "";
}

bool gb_sim_stage_parse(const char *id, size_t len, gb_sim_stage_t *out)
{
    for (int i = 0; i < GB_SIM_STAGE_COUNT; i++) {
        if (strlen(stage_ids[i]) == len && memcmp(stage_ids[i], id, len) == 0) {
            *out = (gb_sim_stage_t)i;
            return true;
        }
    }
    return false;
}

const char *gb_sim_fault_id(gb_sim_fault_t fault)
{
    return (unsigned)fault < GB_SIM_FAULT_COUNT ? fault_ids[fault] : "";
}

bool gb_sim_fault_parse(const char *id, size_t len, gb_sim_fault_t *out)
{
    for (int i = 1; i < GB_SIM_FAULT_COUNT; i++) {
        if (strlen(fault_ids[i]) == len && memcmp(fault_ids[i], id, len) == 0) {
            *out = (gb_sim_fault_t)i;
            return true;
        }
    }
    return false;
}

bool gb_sim_fault_has_rate(gb_sim_fault_t fault)
{
    return fault > GB_SIM_FAULT_NONE && fault < GB_SIM_FAULT_ESP_TIMEOUT;
}

const char *gb_sim_warn_id(gb_sim_warn_t warn)
{
    return (unsigned)warn < GB_SIM_WARN_COUNT ? warn_ids[warn] : "";
}

const char *gb_sim_status_id(gb_sim_status_t status)
{
    return (unsigned)status < GB_ARRAY_LEN(status_ids) ? status_ids[status] : "";
}

/* ---- failures ---- */

/* HRESULTs the red screen shows: ERROR_TIMEOUT for TPM attestation and the ESP timeout, the
 * Azure AD and MDM discovery codes of the article, ERROR_NOT_FOUND for a missing profile,
 * ERROR_NETWORK_UNREACHABLE without a cable, the MSI "fatal error during installation", a
 * certificate-services refusal for SCEP, and E_FAIL behind the component update's error page. */
static const struct {
    gb_sim_stage_t stage;
    uint32_t hresult;
} fault_rows[GB_SIM_FAULT_COUNT] = {
    [GB_SIM_FAULT_NONE] = {GB_SIM_OOBE, 0},
    [GB_SIM_FAULT_TPM_ATTESTATION] = {GB_SIM_SECURING_HARDWARE, 0x800705B4u},
    [GB_SIM_FAULT_DEVICE_OBJECT_MISSING] = {GB_SIM_JOINING_NETWORK, 0x801C03F3u},
    [GB_SIM_FAULT_MULTIPLE_MDM] = {GB_SIM_REGISTERING_MDM, 0x81036501u},
    [GB_SIM_FAULT_PROFILE_UNAVAILABLE] = {GB_SIM_PROFILE_DOWNLOAD, 0x80070490u},
    [GB_SIM_FAULT_NO_WIRED_NETWORK] = {GB_SIM_ENTERPRISE_PROVISIONING, 0x800704CFu},
    [GB_SIM_FAULT_APP_INSTALL_FAILED] = {GB_SIM_DEVICE_SETUP, 0x80070643u},
    [GB_SIM_FAULT_CERTIFICATE_FAILED] = {GB_SIM_DEVICE_SETUP, 0x80094800u},
    [GB_SIM_FAULT_COMPONENT_UPDATE_ERROR] = {GB_SIM_COMPONENT_UPDATE, 0x80004005u},
    [GB_SIM_FAULT_ESP_TIMEOUT] = {GB_SIM_DEVICE_SETUP, 0x800705B4u},
};

gb_sim_stage_t gb_sim__fault_stage(gb_sim_fault_t fault)
{
    return fault_rows[fault].stage;
}

uint32_t gb_sim__fault_hresult(gb_sim_fault_t fault)
{
    return fault_rows[fault].hresult;
}

/* ---- stage times ---- */

void gb_sim__default_stage_times(gb_sim_config_t *cfg)
{
    /* Seconds (lo, mode, hi). Practitioners' figures: ESP device preparation takes a few
     * minutes, mostly waiting for the management extension; device setup is dominated by the
     * payload, which the uplink model adds on top of this fixed part. */
    static const gb_sim_dist_t d[GB_SIM_STAGE_COUNT] = {
        [GB_SIM_OOBE] = {60, 90, 150},
        [GB_SIM_ENTERPRISE_PROVISIONING] = {15, 25, 45},
        [GB_SIM_PROFILE_DOWNLOAD] = {10, 20, 45},
        [GB_SIM_ZDP_UPDATE] = {30, 60, 180},
        [GB_SIM_COMPONENT_UPDATE] = {30, 60, 120},
        [GB_SIM_DEVICE_RENAME] = {60, 90, 150},
        [GB_SIM_LANDING] = {10, 20, 60},
        [GB_SIM_SECURING_HARDWARE] = {30, 60, 120},
        [GB_SIM_JOINING_NETWORK] = {20, 40, 90},
        [GB_SIM_REGISTERING_MDM] = {20, 45, 90},
        [GB_SIM_PREPARING_MDM] = {120, 240, 480},
        [GB_SIM_DEVICE_SETUP] = {30, 60, 120},
        [GB_SIM_RESEAL] = {5, 10, 20},
        [GB_SIM_USER_OOBE] = {60, 120, 240},
        [GB_SIM_USER_SIGNIN] = {20, 40, 90},
        [GB_SIM_ACCOUNT_SETUP] = {120, 300, 600},
        [GB_SIM_HELLO_PROVISIONING] = {30, 60, 120},
        [GB_SIM_DESKTOP] = {0, 0, 0},
    };
    memcpy(cfg->stage_time, d, sizeof(d));
    cfg->tpm_fail_time = (gb_sim_dist_t){180, 300, 600};
}

/* ---- hardware ---- */

static const gb_sim__hw_t models[] = {
    {"HP", "EliteBook 840 G8", "2.0", true, false, 1000, 30, 'H'},
    {"HP", "ProBook 450 G9", "2.0", true, false, 1000, 15, 'H'},
    {"LENOVO", "ThinkPad T14 Gen 3", "2.0", true, false, 1000, 25, 'L'},
    {"LENOVO", "ThinkPad X1 Carbon Gen 10", "2.0", true, false, 1000, 10, 'L'},
    {"Dell Inc.", "Latitude 5440", "2.0", true, false, 1000, 12, 'D'},
    /* No RJ45 port: a USB 2.0 Ethernet adapter, so 100 Mbit/s. */
    {"Dell Inc.", "Latitude 3140", "2.0", true, false, 100, 5, 'D'},
    {"Microsoft Corporation", "Surface Laptop 5", "2.0", true, false, 1000, 3, 'S'},
};

static const gb_sim__hw_t vm = {
    "Microsoft Corporation", "Virtual Machine", "2.0", false, true, 10000, 0, 'V'};
static const gb_sim__hw_t tpm12 = {"HP", "EliteBook 840 G3", "1.2", false, false, 1000, 0, 'H'};

const gb_sim__hw_t *gb_sim__hw_models(size_t *n)
{
    *n = GB_ARRAY_LEN(models);
    return models;
}

const gb_sim__hw_t *gb_sim__hw_vm(void)
{
    return &vm;
}

const gb_sim__hw_t *gb_sim__hw_tpm12(void)
{
    return &tpm12;
}

void gb_sim__serial(gb_sim__rng_t *r, char style, char *out, size_t size)
{
    static const char alnum[] = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"; /* no I or O */
    static const char digits[] = "0123456789";
    char s[48];
    size_t n = 0;

#define PICK(set) (set)[gb_sim__rng_below(r, (uint32_t)(sizeof(set) - 1))]
    switch (style) {
    case 'H': /* HP: 5CG + year/week digits + four characters, e.g. 5CG2341K7Q */
        memcpy(s, "5CG", 3);
        n = 3;
        for (int i = 0; i < 3; i++) {
            s[n++] = PICK(digits);
        }
        for (int i = 0; i < 4; i++) {
            s[n++] = PICK(alnum);
        }
        break;
    case 'L': /* Lenovo: PF + six characters, e.g. PF3ABC12 */
        s[n++] = 'P';
        s[n++] = 'F';
        for (int i = 0; i < 6; i++) {
            s[n++] = PICK(alnum);
        }
        break;
    case 'S': /* Surface: twelve digits */
        for (int i = 0; i < 12; i++) {
            s[n++] = PICK(digits);
        }
        break;
    case 'V': /* Hyper-V: 1234-5678-9012-3456-7890-1234-56 */
        for (int i = 0; i < 26; i++) {
            if (i > 0 && i % 4 == 0) {
                s[n++] = '-';
            }
            s[n++] = PICK(digits);
        }
        break;
    default: /* Dell service tag: seven characters */
        for (int i = 0; i < 7; i++) {
            s[n++] = PICK(alnum);
        }
        break;
    }
#undef PICK
    s[n] = '\0';
    snprintf(out, size, "%s", s);
}

/* ---- payloads ---- */

typedef struct payload_row {
    const char *name;
    double mb;
    gb_sim_dist_t install;
} payload_row_t;

/* Microsoft 365 Apps is about 1.5 GB plus about 0.25 GB per extra language (domain brief). */
static const payload_row_t standard[] = {
    {"Microsoft 365 Apps for enterprise", 1500, {240, 420, 720}},
    {"Microsoft 365 Apps language pack de-de", 250, {60, 90, 180}},
    {"Microsoft 365 Apps language pack fr-fr", 250, {60, 90, 180}},
    {"Microsoft Teams", 150, {45, 75, 150}},
    {"Company Portal", 60, {20, 30, 60}},
    {"Contoso VPN Client", 45, {20, 40, 90}},
    {"Contoso Line-of-Business Suite", 350, {90, 150, 300}},
};

static const payload_row_t light[] = {
    {"Company Portal", 60, {20, 30, 60}},
    {"Microsoft Teams", 150, {45, 75, 150}},
    {"Contoso VPN Client", 45, {20, 40, 90}},
};

static const payload_row_t heavy[] = {
    {"Microsoft 365 Apps for enterprise", 1500, {240, 420, 720}},
    {"Microsoft 365 Apps language pack de-de", 250, {60, 90, 180}},
    {"Microsoft 365 Apps language pack fr-fr", 250, {60, 90, 180}},
    {"Microsoft 365 Apps language pack es-es", 250, {60, 90, 180}},
    {"Microsoft 365 Apps language pack it-it", 250, {60, 90, 180}},
    {"Microsoft Teams", 150, {45, 75, 150}},
    {"Company Portal", 60, {20, 30, 60}},
    {"Adobe Acrobat Reader", 400, {60, 120, 240}},
    {"Contoso VPN Client", 45, {20, 40, 90}},
    {"Contoso Line-of-Business Suite", 350, {90, 150, 300}},
    {"Autodesk AutoCAD LT", 2800, {300, 600, 1200}},
};

static void load(gb_sim_config_t *cfg, const char *name, const payload_row_t *rows, size_t n)
{
    cfg->n_apps = 0;
    for (size_t i = 0; i < n && i < GB_SIM_MAX_APPS; i++) {
        gb_sim_app_t *a = &cfg->apps[cfg->n_apps++];
        snprintf(a->name, sizeof(a->name), "%s", rows[i].name);
        a->bytes = (uint64_t)(rows[i].mb * 1e6);
        a->install = rows[i].install;
    }
    snprintf(cfg->payload, sizeof(cfg->payload), "%s", name);
}

bool gb_sim__payload_named(gb_sim_config_t *cfg, const char *name)
{
    if (strcmp(name, "standard") == 0) {
        load(cfg, name, standard, GB_ARRAY_LEN(standard));
    } else if (strcmp(name, "light") == 0) {
        load(cfg, name, light, GB_ARRAY_LEN(light));
    } else if (strcmp(name, "heavy") == 0) {
        load(cfg, name, heavy, GB_ARRAY_LEN(heavy));
    } else {
        return false;
    }
    return true;
}

/* ---- Windows events ---- */

static const char *const chan_names[GB_SIM__CH_COUNT] = {
    [GB_SIM__CH_AUTOPILOT] = "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot",
    [GB_SIM__CH_MGMT] = "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/ManagementService",
    [GB_SIM__CH_DM] = "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin",
    [GB_SIM__CH_UDR] = "Microsoft-Windows-User Device Registration/Admin",
    [GB_SIM__CH_SHELL] = "Microsoft-Windows-Shell-Core/Operational",
};

const char *gb_sim__chan_name(gb_sim__chan_t chan)
{
    return (unsigned)chan < GB_SIM__CH_COUNT ? chan_names[chan] : "";
}

#define AP                 GB_SIM__CH_AUTOPILOT
#define MGMT               GB_SIM__CH_MGMT
#define DM                 GB_SIM__CH_DM
#define UDR                GB_SIM__CH_UDR
#define SHELL              GB_SIM__CH_SHELL
#define CXH_ACTIVITY(cxid) "CloudExperienceHost Web App Activity started. CXID: '" cxid "'."
#define CXH_EVENT(name, value) \
    "CloudExperienceHost Web App Event 2. Name: '" name "', Value: '" value "'."
#define L(a) a, GB_ARRAY_LEN(a)
#define NONE NULL, 0

/* oobe .. landing: CloudExperienceHost pages (Shell-Core 62404 names the activity). */
static const gb_sim__wevent_t ev_oobe[] = {{SHELL, 62404, CXH_ACTIVITY("OobeRegion")}};
static const gb_sim__wevent_t ev_ep[] = {
    {SHELL, 62404, CXH_ACTIVITY("oobeEnterpriseProvisioning")}};
static const gb_sim__wevent_t ev_profile_start[] = {
    {AP, 164, "AutopilotManager determined Internet is available to attempt policy download."}};
static const gb_sim__wevent_t ev_profile_mid[] = {
    {AP, 160, "AutopilotRetrieveSettings beginning acquisition."},
    {AP, 153, "AutopilotManager profile state changed from Unknown to Available."}};
static const gb_sim__wevent_t ev_profile_end[] = {
    {AP, 161, "AutopilotRetrieveSettings retrieved the Autopilot profile successfully."}};
static const gb_sim__wevent_t ev_zdp[] = {
    {SHELL, 62404, CXH_ACTIVITY("AutopilotWhiteGloveOobeZdp")}};
static const gb_sim__wevent_t ev_update[] = {
    {SHELL, 62404, CXH_ACTIVITY("AutopilotWhiteGloveUpdate")}};
static const gb_sim__wevent_t ev_rename[] = {
    {SHELL, 62404, CXH_ACTIVITY("AutopilotWhiteGloveReboot")}};
static const gb_sim__wevent_t ev_landing[] = {
    {SHELL, 62404, CXH_ACTIVITY("AutopilotWhiteGloveLanding")}};

/* securing_hardware: the TPM sequence of the article. */
static const gb_sim__wevent_t ev_tpm_start[] = {
    {SHELL, 62407,
     CXH_EVENT("CommercialOOBE_ESPProgress_DevicePreparation", "Securing your hardware")},
    {MGMT, 509, "AutopilotManager enabled TPM requirement due to WhiteGlove policy value 1"},
    {AP, 177, "Configuring TPM for attestation. Current attempt 1 of 10 maximum."}};
static const gb_sim__wevent_t ev_tpm_mid[] = {
    {AP, 201, "Windows AIK not found by name."},
    {AP, 151, "AutopilotManager started the TPM maintenance task to update TPM attestation"},
    {AP, 152, "AutopilotManager reported TPM maintenance task is complete"},
    {AP, 252, "AutopilotManager reported AIK key was located"},
    {AP, 250, "AutopilotManager started AIK certificate acquisition task"},
    {AP, 205, "Windows AIK certificate request succeeded and new certificate is available"},
    {AP, 168, "AutopilotManager reported MSA TPM device identity was updated"}};
static const gb_sim__wevent_t ev_tpm_end[] = {
    {AP, 169, "AutopilotManager set TPM identity confirmed"}};

/* joining_network: the Azure AD phases and the join request (User Device Registration). */
static const gb_sim__wevent_t ev_join_start[] = {
    {AP, 179, "AutopilotManager began device enrollment phase AADDiscover"}};
static const gb_sim__wevent_t ev_join_mid[] = {
    {AP, 181, "AutopilotManager completed device enrollment AADDiscover. HRESULT 0x0"},
    {AP, 179, "AutopilotManager began device enrollment phase AADConfigure"},
    {AP, 181, "AutopilotManager completed device enrollment AADConfigure. HRESULT 0x0"},
    {AP, 179, "AutopilotManager began device enrollment phase AADEnroll"},
    {UDR, 102,
     "The initialization of the join request was successful. Inputs: JoinRequest: 11 "
     "(DEVICE_AUTO_DDID) Domain: {DOMAIN}"},
    {UDR, 104,
     "Server response was: "
     "{\"Certificate\":{\"Thumbprint\":\"{THUMB}\",\"RawBody\":\"MIID9TCCAt2gAwIBAgIQ...\"},"
     "\"ResponseStatus\":{\"message\":\"Successfully updated pre-created device with id {GUID2}.\","
     "\"traceId\":\"{GUID}\",\"time\":\"{TIME}\"},\"MembershipChanges\":[{\"LocalSID\":\"S-1-5-32-"
     "544\"}]}"}};
static const gb_sim__wevent_t ev_join_end[] = {
    {AP, 181, "AutopilotManager completed device enrollment AADEnroll. HRESULT 0x0"}};

/* registering_mdm: MDM discovery and enrollment; DM 72 ends it and starts preparing_mdm. */
static const gb_sim__wevent_t ev_mdm_start[] = {
    {AP, 179, "AutopilotManager began device enrollment phase DeviceDiscovery"}};
static const gb_sim__wevent_t ev_mdm_mid[] = {
    {AP, 181, "AutopilotManager completed device enrollment DeviceDiscovery. HRESULT 0x0"},
    {AP, 179, "AutopilotManager began device enrollment phase DeviceEnroll"}};
static const gb_sim__wevent_t ev_mdm_end[] = {
    {AP, 181, "AutopilotManager completed device enrollment DeviceEnroll. HRESULT 0x0"},
    {DM, 72, "MDM Enroll: Succeeded."}};

/* preparing_mdm: the management extension arrives as an MSI. */
static const gb_sim__wevent_t ev_ime_mid[] = {
    {DM, 1905,
     "EnterpriseDesktopAppManagement CSP: MSI download started for product "
     "({GUID}) Microsoft Intune Management Extension."},
    {DM, 1906,
     "EnterpriseDesktopAppManagement CSP: MSI download finished for product "
     "({GUID}) Microsoft Intune Management Extension."},
    {DM, 1920,
     "EnterpriseDesktopAppManagement CSP: MSI installation started for product "
     "({GUID}) Microsoft Intune Management Extension."},
    {DM, 1922,
     "EnterpriseDesktopAppManagement CSP: MSI installation succeeded for product "
     "({GUID}) Microsoft Intune Management Extension."}};

static const gb_sim__wevent_t ev_setup[] = {
    {SHELL, 62407, CXH_EVENT("CommercialOOBE_ESPProgress_DeviceSetup", "Device setup")}};

/* The user flow: an already provisioned device does not download its profile again. */
static const gb_sim__wevent_t ev_user_oobe[] = {
    {SHELL, 62404, CXH_ACTIVITY("OobeRegion")},
    {AP, 163,
     "AutopilotManager determined the device is already provisioned; the Autopilot profile is "
     "not downloaded again."}};
static const gb_sim__wevent_t ev_signin[] = {{SHELL, 62404, CXH_ACTIVITY("OobeAadSignIn")}};
static const gb_sim__wevent_t ev_account[] = {
    {SHELL, 62407, CXH_EVENT("CommercialOOBE_ESPProgress_AccountSetup", "Account setup")}};
static const gb_sim__wevent_t ev_hello[] = {
    {UDR, 358,
     "Windows Hello for Business provisioning will be launched. Device is AAD joined ( AADJ or "
     "DJ++ ): Yes User has logged on with AAD credentials: Yes Windows Hello for Business policy "
     "is enabled: Yes Windows Hello for Business post-logon provisioning is enabled: Yes Local "
     "computer meets Windows hello for business hardware requirements: Yes User is not "
     "connected to the machine via Remote Desktop: Yes User certificate for on premise auth "
     "policy is enabled: No"}};
static const gb_sim__wevent_t ev_desktop[] = {
    {SHELL, 62407, CXH_EVENT("CommercialOOBE_ESPProgress_Desktop", "The desktop is ready")}};

static const gb_sim__wstage_t wstages[GB_SIM_STAGE_COUNT] = {
    [GB_SIM_OOBE] = {L(ev_oobe), NONE, NONE},
    [GB_SIM_ENTERPRISE_PROVISIONING] = {L(ev_ep), NONE, NONE},
    [GB_SIM_PROFILE_DOWNLOAD] = {L(ev_profile_start), L(ev_profile_mid), L(ev_profile_end)},
    [GB_SIM_ZDP_UPDATE] = {L(ev_zdp), NONE, NONE},
    [GB_SIM_COMPONENT_UPDATE] = {L(ev_update), NONE, NONE},
    [GB_SIM_DEVICE_RENAME] = {L(ev_rename), NONE, NONE},
    [GB_SIM_LANDING] = {L(ev_landing), NONE, NONE},
    [GB_SIM_SECURING_HARDWARE] = {L(ev_tpm_start), L(ev_tpm_mid), L(ev_tpm_end)},
    [GB_SIM_JOINING_NETWORK] = {L(ev_join_start), L(ev_join_mid), L(ev_join_end)},
    [GB_SIM_REGISTERING_MDM] = {L(ev_mdm_start), L(ev_mdm_mid), L(ev_mdm_end)},
    [GB_SIM_PREPARING_MDM] = {NONE, L(ev_ime_mid), NONE},
    [GB_SIM_DEVICE_SETUP] = {L(ev_setup), NONE, NONE},
    [GB_SIM_RESEAL] = {NONE, NONE, NONE},
    [GB_SIM_USER_OOBE] = {L(ev_user_oobe), NONE, NONE},
    [GB_SIM_USER_SIGNIN] = {L(ev_signin), NONE, NONE},
    [GB_SIM_ACCOUNT_SETUP] = {L(ev_account), NONE, NONE},
    [GB_SIM_HELLO_PROVISIONING] = {L(ev_hello), NONE, NONE},
    [GB_SIM_DESKTOP] = {NONE, NONE, L(ev_desktop)},
};

const gb_sim__wstage_t *gb_sim__wstage(gb_sim_stage_t stage)
{
    return &wstages[stage];
}

/* Failures. A failing stage shows its usual start events, then these. */
static const gb_sim__wevent_t f_tpm_mid[] = {
    {AP, 201, "Windows AIK not found by name."},
    {AP, 151, "AutopilotManager started the TPM maintenance task to update TPM attestation"},
    {AP, 177, "Configuring TPM for attestation. Current attempt 10 of 10 maximum."}};
static const gb_sim__wevent_t f_tpm_end[] = {
    {AP, 156,
     "AutopilotManager reported that MSA TPM is not configured for hardware TPM attestation even "
     "though profile indicates it is required. Autopilot cannot proceed."}};
static const gb_sim__wevent_t f_tpm_start[] = {
    {MGMT, 509, "AutopilotManager enabled TPM requirement due to WhiteGlove policy value 1"}};
static const gb_sim__wevent_t f_dom_end[] = {
    {AP, 180,
     "AutopilotManager failed during device enrollment phase AADEnroll. HRESULT=0x801C03F3"},
    {UDR, 204,
     "The get join response operation callback failed with exit code: Unknown HResult Error "
     "code: 0x801c03f3. Activity Id: {GUID} The server returned HTTP status: 400 Server response "
     "was: {\"Code\":\"AuthenticationError\",\"Subcode\":\"DeviceNotFound\",\"Message\":\"A device "
     "with the expected device identifiers was not "
     "found\",\"TraceId\":\"{GUID}\",\"Time\":\"{TIME}\"}"}};
static const gb_sim__wevent_t f_mdm_end[] = {
    {AP, 302,
     "AutopilotManager device enrollment failed during stage DeviceDiscovery with error "
     "0x81036501"},
    {AP, 180,
     "AutopilotManager failed during device enrollment phase DeviceDiscovery. HRESULT = "
     "0x81036501"},
    {AP, 115,
     "Autopilot discovery failed to find a valid MDM. Confirm that the AAD tenant is properly "
     "provisioned and licensed for exactly one MDM. HRESULT = 0x81036501"}};
static const gb_sim__wevent_t f_profile_mid[] = {
    {AP, 160, "AutopilotRetrieveSettings beginning acquisition."}};
static const gb_sim__wevent_t f_profile807_end[] = {
    {AP, 807,
     "AutopilotManager reported that the device is not registered with the Windows Autopilot "
     "deployment service (ZtdDeviceIsNotRegistered). HRESULT = 0x80070490"}};
static const gb_sim__wevent_t f_profile815_end[] = {
    {AP, 815,
     "AutopilotManager found no Windows Autopilot profile assigned to this device "
     "(ZtdDeviceHasNoAssignedProfile). HRESULT = 0x80070490"}};
static const gb_sim__wevent_t f_app_end[] = {
    {DM, 1924,
     "EnterpriseDesktopAppManagement CSP: MSI installation failed for product ({APP}). Result: "
     "({hr}) Fatal error during installation."}};
static const gb_sim__wevent_t f_cert_end[] = {
    {DM, 32,
     "SCEP: Certificate request generation failed. Result: ({hr}) The requested certificate "
     "template is not supported by this CA."}};
static const gb_sim__wevent_t f_update_end[] = {
    {SHELL, 62407,
     CXH_EVENT("CommercialOOBE_Error",
               "Something went wrong. Error code: AUTOPILOTWHITEGLOVEUPDATE")}};

static const gb_sim__wstage_t wfaults[][2] = {
    [GB_SIM_FAULT_NONE] = {{NONE, NONE, NONE}, {NONE, NONE, NONE}},
    [GB_SIM_FAULT_TPM_ATTESTATION] = {{L(f_tpm_start), L(f_tpm_mid), L(f_tpm_end)},
                                      {L(f_tpm_start), L(f_tpm_mid), L(f_tpm_end)}},
    [GB_SIM_FAULT_DEVICE_OBJECT_MISSING] = {{NONE, L(ev_join_mid) - 1, L(f_dom_end)},
                                            {NONE, L(ev_join_mid) - 1, L(f_dom_end)}},
    [GB_SIM_FAULT_MULTIPLE_MDM] = {{NONE, NONE, L(f_mdm_end)}, {NONE, NONE, L(f_mdm_end)}},
    [GB_SIM_FAULT_PROFILE_UNAVAILABLE] = {{NONE, L(f_profile_mid), L(f_profile807_end)},
                                          {NONE, L(f_profile_mid), L(f_profile815_end)}},
    [GB_SIM_FAULT_NO_WIRED_NETWORK] = {{NONE, NONE, NONE}, {NONE, NONE, NONE}},
    [GB_SIM_FAULT_APP_INSTALL_FAILED] = {{NONE, NONE, L(f_app_end)}, {NONE, NONE, L(f_app_end)}},
    [GB_SIM_FAULT_CERTIFICATE_FAILED] = {{NONE, NONE, L(f_cert_end)}, {NONE, NONE, L(f_cert_end)}},
    [GB_SIM_FAULT_COMPONENT_UPDATE_ERROR] = {{NONE, NONE, L(f_update_end)},
                                             {NONE, NONE, L(f_update_end)}},
    [GB_SIM_FAULT_ESP_TIMEOUT] = {{NONE, NONE, NONE}, {NONE, NONE, NONE}},
};

const gb_sim__wstage_t *gb_sim__wfault(gb_sim_fault_t fault, uint32_t variant)
{
    return &wfaults[fault][variant & 1];
}

static const gb_sim__wevent_t ev_green = {
    SHELL, 62407, CXH_EVENT("CommercialOOBE_WhiteGloveSuccess", "Provisioning succeeded")};
static const gb_sim__wevent_t ev_red = {
    SHELL, 62407, CXH_EVENT("CommercialOOBE_WhiteGloveFailed", "Provisioning failed: {HR}")};
static const gb_sim__wevent_t ev_reseal = {SHELL, 62407,
                                           CXH_EVENT("CommercialOOBE_WhiteGloveReseal", "Reseal")};

const gb_sim__wevent_t *gb_sim__wresult(bool green)
{
    return green ? &ev_green : &ev_red;
}

const gb_sim__wevent_t *gb_sim__wreseal(void)
{
    return &ev_reseal;
}

/* ---- base64 ---- */

void gb_sim__base64(const uint8_t *in, size_t n, gb_buf_t *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    gb_buf_reserve(out, (n + 2) / 3 * 4);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= in[i + 2];
        }
        char q[4] = {tab[(v >> 18) & 63], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        gb_buf_append(out, q, 4);
    }
}
