/* catalogue: the diagnosis catalogue (every failure the domain brief documents, in the
 * project's own words), the warning catalogue, HRESULT parsing, and the rules that turn a
 * failed stage plus the evidence of its attempt into one diagnosis code. The rules are ordered
 * from the most specific signal (an HRESULT or event that names the cause) to the least (the
 * stage alone), and end in `unknown`, which keeps the HRESULT. */
#include <stdlib.h>
#include <string.h>

#include "domain/domain.h"
#include "domain/internal.h"

#define CH_AUTOPILOT "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot"
#define CH_MGMT      "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/ManagementService"
#define CH_UDR       "Microsoft-Windows-User Device Registration/Admin"
#define CH_DM        "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin"

static const uint32_t hr_tpm[] = {GB_HR_TIMEOUT};
static const gb_event_ref_t ev_tpm[] = {
    {CH_MGMT, 509}, {CH_AUTOPILOT, 156}, {CH_AUTOPILOT, 171}, {CH_AUTOPILOT, 172}};
static const uint32_t hr_dom[] = {GB_HR_DEVICE_NOT_FOUND};
static const gb_event_ref_t ev_dom[] = {{CH_AUTOPILOT, 180}, {CH_UDR, 204}};
static const uint32_t hr_mdm[] = {GB_HR_MULTIPLE_MDM};
static const gb_event_ref_t ev_mdm[] = {
    {CH_AUTOPILOT, 302}, {CH_AUTOPILOT, 180}, {CH_AUTOPILOT, 115}};
static const gb_event_ref_t ev_profile[] = {
    {CH_AUTOPILOT, 807}, {CH_AUTOPILOT, 809}, {CH_AUTOPILOT, 815}, {CH_AUTOPILOT, 908}};
static const uint32_t hr_net[] = {GB_HR_NETWORK_UNREACHABLE, GB_HR_NAME_NOT_RESOLVED,
                                  GB_HR_CANNOT_CONNECT};
static const gb_event_ref_t ev_app[] = {{CH_DM, 1924}};
static const uint32_t hr_cert[] = {0x80094011u, 0x80094012u, 0x80094800u,
                                   0x80094811u, 0x800B0109u, 0x80092013u};
static const gb_event_ref_t ev_cert[] = {{CH_DM, 32}, {CH_DM, 307}};
static const uint32_t hr_esp[] = {GB_HR_TIMEOUT};

#define LIST(a) a, GB_ARRAY_LEN(a)

static const gb_diag_info_t diags[GB_DIAG_COUNT] = {
    [GB_DIAG_TPM_ATTESTATION] =
        {GB_DIAG_TPM_ATTESTATION, GB_STAGE_SECURING_HARDWARE, "tpm_attestation", LIST(hr_tpm),
         LIST(ev_tpm),
         "Securing your hardware fails with 0x800705B4; Autopilot 156 (TPM not set up for "
         "attestation), 171 or 172; ManagementService 509 (TPM required)",
         "The TPM could not vouch for the device: pre-provisioning needs a TPM 2.0 chip that "
         "can do attestation, on physical hardware.",
         "Use a physical device, turn the TPM on in the firmware, update its firmware to 2.0 "
         "if it still runs 1.2, then reset the device and try again."},
    [GB_DIAG_DEVICE_OBJECT_MISSING] =
        {GB_DIAG_DEVICE_OBJECT_MISSING, GB_STAGE_JOINING_NETWORK, "device_object_missing",
         LIST(hr_dom), LIST(ev_dom),
         "0x801C03F3; Autopilot 180 in phase AADEnroll; User Device Registration 204 with "
         "HTTP 400 DeviceNotFound",
         "Azure AD refused the join: the device object made when the device was registered "
         "in Autopilot has been deleted, and a device without a user may not create a new one.",
         "Remove the device from Autopilot, import its hardware hash again, wait until a "
         "profile is assigned, then reset the device and try again."},
    [GB_DIAG_MULTIPLE_MDM] =
        {GB_DIAG_MULTIPLE_MDM, GB_STAGE_REGISTERING_MDM, "multiple_mdm", LIST(hr_mdm), LIST(ev_mdm),
         "0x81036501; Autopilot 302 and 180 in DeviceDiscovery; Autopilot 115 (no valid MDM)",
         "MDM discovery found more than one management service for the tenant and could not "
         "pick the one to enroll with.",
         "Keep exactly one MDM in scope for users (drop the duplicate Intune entry or the "
         "third-party MDM) and do not require MFA for enrollment through Conditional Access; "
         "then retry."},
    [GB_DIAG_PROFILE_UNAVAILABLE] =
        {GB_DIAG_PROFILE_UNAVAILABLE, GB_STAGE_PROFILE_DOWNLOAD, "profile_unavailable", NULL, 0,
         LIST(ev_profile),
         "Profile download fails; Autopilot 807, 809, 815 or 908; red screen saying no "
         "Autopilot profile was found",
         "The device got no Autopilot profile: it is not registered, its profile was deleted "
         "or unassigned, its serial or product key does not match, or the language was preset.",
         "Register the device and assign it a profile (check serial and product key), leave "
         "language and region for the user to choose, then restart the flow."},
    [GB_DIAG_NO_WIRED_NETWORK] =
        {GB_DIAG_NO_WIRED_NETWORK, GB_STAGE_ENTERPRISE_PROVISIONING, "no_wired_network",
         LIST(hr_net), NULL, 0,
         "Red screen at the start of the flow while the agent reports no Ethernet link",
         "The device had no wired network when the flow began; pre-provisioning offers no "
         "Wi-Fi screen.",
         "Plug in Ethernet (or a supported USB adapter) and restart the flow."},
    [GB_DIAG_APP_INSTALL_FAILED] =
        {GB_DIAG_APP_INSTALL_FAILED, GB_STAGE_DEVICE_SETUP, "app_install_failed", NULL, 0,
         LIST(ev_app), "An app reports failed with a non-zero last HRESULT during setup",
         "An app the Enrollment Status Page waits for did not install: the package or its "
         "detection rule failed.",
         "Fix the app's package or detection rule in Intune, then retry."},
    [GB_DIAG_CERTIFICATE_FAILED] =
        {GB_DIAG_CERTIFICATE_FAILED, GB_STAGE_DEVICE_SETUP, "certificate_failed", LIST(hr_cert),
         LIST(ev_cert),
         "Device setup fails with a certificate-services HRESULT (0x80094xxx, 0x800B01xx, "
         "0x800920xx); DeviceManagement 32 or 307 about SCEP or PKCS",
         "A SCEP or PKCS certificate profile could not be delivered during device setup.",
         "Check NDES and the Intune certificate connector (and their logs), then retry."},
    [GB_DIAG_ESP_TIMEOUT] =
        {GB_DIAG_ESP_TIMEOUT, GB_STAGE_DEVICE_SETUP, "esp_timeout", LIST(hr_esp), NULL, 0,
         "Device setup ends in 0x800705B4, or fails after running past the ESP timeout",
         "Device setup ran past the Enrollment Status Page time limit, usually because "
         "downloads were starved.",
         "Give each device more bandwidth (fewer devices per uplink, Delivery Optimization "
         "peers or a Connected Cache), track fewer apps in the ESP, or raise the profile's ESP "
         "timeout; then retry."},
    [GB_DIAG_UNKNOWN] =
        {GB_DIAG_UNKNOWN, GB_STAGE_NONE, "unknown", NULL, 0, NULL, 0,
         "A failure that matches no other entry; its HRESULT is kept",
         "The device failed for a reason the catalogue does not know.",
         "Look the HRESULT up, open Event Viewer on the device (Shift+F10) and read the "
         "Autopilot and device-management logs; then retry."},
};

/* The code the red screen shows for a failure, used when neither the run nor the evidence
 * carries one: it keeps a device that reports only Windows events equal to one that reports
 * stage messages with their HRESULT. */
static const uint32_t canonical_hr[GB_DIAG_COUNT] = {
    [GB_DIAG_TPM_ATTESTATION] = GB_HR_TIMEOUT,
    [GB_DIAG_DEVICE_OBJECT_MISSING] = GB_HR_DEVICE_NOT_FOUND,
    [GB_DIAG_MULTIPLE_MDM] = GB_HR_MULTIPLE_MDM,
    [GB_DIAG_ESP_TIMEOUT] = GB_HR_TIMEOUT,
};

static const gb_warn_info_t warns[GB_WARN_COUNT] = {
    [GB_WARN_COMPONENT_UPDATE_ERROR] =
        {GB_WARN_COMPONENT_UPDATE_ERROR, GB_STAGE_COMPONENT_UPDATE, "component_update_error",
         "Autopilot's component update showed \"Something went wrong\" "
         "(AUTOPILOTWHITEGLOVEUPDATE); the flow went on after Skip.",
         "Nothing to do for this device. Put the fix (KB4505903) into the image so the next "
         "devices do not stop here."},
    [GB_WARN_HYBRID_JOIN_UNSUPPORTED] =
        {GB_WARN_HYBRID_JOIN_UNSUPPORTED, GB_STAGE_NONE, "hybrid_join_unsupported",
         "The profile asks for hybrid Azure AD join, which the technician flow does not do.",
         "Expect the join in the user flow, with a second sign-in at Winlogon; or use an "
         "Azure AD join profile."},
    [GB_WARN_VIRTUAL_MACHINE] =
        {GB_WARN_VIRTUAL_MACHINE, GB_STAGE_NONE, "virtual_machine",
         "The agent reports a virtual machine; pre-provisioning needs physical hardware and "
         "will fail at Securing your hardware.",
         "Take it off the bench before it holds a slot; provision physical devices only."},
    [GB_WARN_TPM_NOT_2_0] =
        {GB_WARN_TPM_NOT_2_0, GB_STAGE_NONE, "tpm_not_2_0",
         "The TPM is missing, older than 2.0, or cannot do attestation; Securing your "
         "hardware will fail.",
         "Turn the TPM on and update its firmware to 2.0 before provisioning."},
    [GB_WARN_NOT_IMPORTED] = {GB_WARN_NOT_IMPORTED, GB_STAGE_NONE, "not_imported",
                              "This serial was never imported from an Autopilot CSV.",
                              "Import the device's hardware hash (and check it is registered "
                              "in Autopilot)."},
    [GB_WARN_OUT_OF_ORDER] =
        {GB_WARN_OUT_OF_ORDER, GB_STAGE_NONE, "out_of_order",
         "A message carries an earlier device time than the one before it: the device clock "
         "went backwards. Nothing was lost.",
         "Check the device's clock and time sync if its durations look wrong."},
    [GB_WARN_USER_FLOW_TOO_SOON] =
        {GB_WARN_USER_FLOW_TOO_SOON, GB_STAGE_USER_OOBE, "user_flow_too_soon",
         "The user flow began less than 90 minutes after reseal.",
         "Wait at least 90 minutes after reseal before handing a device over; if sign-in "
         "fails, restart and try again later."},
    [GB_WARN_RESEAL_EXPIRED] =
        {GB_WARN_RESEAL_EXPIRED, GB_STAGE_RESEAL, "reseal_expired",
         "More than six months have passed since reseal; the management certificates may no "
         "longer be valid.",
         "Reset the device and pre-provision it again before handover."},
};

const gb_diag_info_t *gb_diag_info(gb_diag_code_t code)
{
    if (code <= GB_DIAG_NONE || code >= GB_DIAG_COUNT) {
        return NULL;
    }
    return &diags[code];
}

const char *gb_diag_id(gb_diag_code_t code)
{
    const gb_diag_info_t *d = gb_diag_info(code);
    return d ? d->id : "";
}

bool gb_diag_parse(gb_str_t id, gb_diag_code_t *out)
{
    for (int i = 1; i < GB_DIAG_COUNT; i++) {
        if (gb_str_eq_cstr(id, diags[i].id)) {
            *out = (gb_diag_code_t)i;
            return true;
        }
    }
    return false;
}

const gb_warn_info_t *gb_warn_info(gb_warn_t code)
{
    if ((unsigned)code >= GB_WARN_COUNT) {
        return NULL;
    }
    return &warns[code];
}

const char *gb_warn_id(gb_warn_t code)
{
    const gb_warn_info_t *w = gb_warn_info(code);
    return w ? w->id : "";
}

bool gb_warn_parse(gb_str_t id, gb_warn_t *out)
{
    for (int i = 0; i < GB_WARN_COUNT; i++) {
        if (gb_str_eq_cstr(id, warns[i].id)) {
            *out = (gb_warn_t)i;
            return true;
        }
    }
    return false;
}

bool gb_hresult_parse(gb_str_t s, uint32_t *out)
{
    size_t i = 0;
    uint32_t v = 0;

    if (s.len >= 2 && s.p[0] == '0' && (s.p[1] == 'x' || s.p[1] == 'X')) {
        i = 2;
    }
    if (s.len - i < 1 || s.len - i > 8) {
        return false;
    }
    for (; i < s.len; i++) {
        int d = gb_hex_value(s.p[i]);
        if (d < 0) {
            return false;
        }
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return true;
}

void gb_hresult_format(uint32_t hr, char out[11])
{
    static const char hex[] = "0123456789ABCDEF";
    out[0] = '0';
    out[1] = 'x';
    for (int i = 0; i < 8; i++) {
        out[2 + i] = hex[(hr >> (28 - 4 * i)) & 15];
    }
    out[10] = '\0';
}

bool gb_domain__is_cert_hresult(uint32_t hr)
{
    /* Certificate services (CERTSRV_E_*), certificate chains (CERT_E_*, TRUST_E_*) and crypto
     * messages (CRYPT_E_*): the families SCEP and PKCS delivery fail with. */
    return (hr & 0xFFFFF000u) == 0x80094000u || (hr & 0xFFFFF000u) == 0x800B0000u ||
           (hr & 0xFFFFFF00u) == 0x80092000u;
}

bool gb_domain__is_network_hresult(uint32_t hr)
{
    for (size_t i = 0; i < GB_ARRAY_LEN(hr_net); i++) {
        if (hr_net[i] == hr) {
            return true;
        }
    }
    return false;
}

bool gb_domain__tpm_below_2(const char *version)
{
    if (version == NULL) {
        return false;
    }
    if (version[0] == '\0' || gb_str_case_eq_cstr(gb_str_from_cstr(version), "none")) {
        return true;
    }
    /* "2.0", "2.0, 0, 1.59", "1.2": the major number decides. */
    if (version[0] < '0' || version[0] > '9') {
        return false;
    }
    return strtol(version, NULL, 10) < 2;
}

static bool early_stage(gb_stage_t s)
{
    return s == GB_STAGE_OOBE || s == GB_STAGE_ENTERPRISE_PROVISIONING ||
           s == GB_STAGE_PROFILE_DOWNLOAD || s == GB_STAGE_LANDING;
}

static gb_diag_code_t pick_code(const gb_domain__diag_input_t *in)
{
    bool hr = in->has_hresult;
    uint32_t h = in->hresult;
    uint32_t ev = in->evidence;
    bool setup = in->stage == GB_STAGE_DEVICE_SETUP || in->stage == GB_STAGE_ACCOUNT_SETUP;

    /* 1-2: HRESULTs and events that name the cause wherever they strike. */
    if ((hr && h == GB_HR_DEVICE_NOT_FOUND) || (ev & GB_EV_DEVICE_NOT_FOUND)) {
        return GB_DIAG_DEVICE_OBJECT_MISSING;
    }
    if ((hr && h == GB_HR_MULTIPLE_MDM) || (ev & GB_EV_NO_MDM)) {
        return GB_DIAG_MULTIPLE_MDM;
    }
    /* 3: the profile events explain any early red screen. */
    if (ev & GB_EV_PROFILE) {
        return GB_DIAG_PROFILE_UNAVAILABLE;
    }
    /* 4: TPM. Its generic timeout code only means TPM at Securing your hardware; the events
     * and a hardware report that cannot pass are enough there too. */
    if (ev & GB_EV_TPM_FAILED) {
        return GB_DIAG_TPM_ATTESTATION;
    }
    if (in->stage == GB_STAGE_SECURING_HARDWARE &&
        ((hr && h == GB_HR_TIMEOUT) || (ev & GB_EV_TPM_REQUIRED) ||
         in->virtual_machine == GB_TRI_TRUE || in->tpm_attestation == GB_TRI_FALSE ||
         in->tpm_below_2)) {
        return GB_DIAG_TPM_ATTESTATION;
    }
    /* 5-6: the start of the flow: no cable, else no profile. */
    if (early_stage(in->stage) &&
        ((in->medium != GB_MEDIUM_UNKNOWN && in->medium != GB_MEDIUM_ETHERNET) ||
         (hr && gb_domain__is_network_hresult(h)))) {
        return GB_DIAG_NO_WIRED_NETWORK;
    }
    if (in->stage == GB_STAGE_PROFILE_DOWNLOAD) {
        return GB_DIAG_PROFILE_UNAVAILABLE;
    }
    /* 7: setup. The timeout code wins (an app still installing at the limit is a victim,
     * not the cause); then what failed; then the clock. */
    if (setup) {
        if (hr && h == GB_HR_TIMEOUT) {
            return GB_DIAG_ESP_TIMEOUT;
        }
        if (ev & GB_EV_APP_FAILED) {
            return GB_DIAG_APP_INSTALL_FAILED;
        }
        if ((ev & GB_EV_CERT_FAILED) || (hr && gb_domain__is_cert_hresult(h))) {
            return GB_DIAG_CERTIFICATE_FAILED;
        }
        if (in->stage == GB_STAGE_DEVICE_SETUP && in->run_ms >= 0 &&
            in->run_ms >= in->esp_timeout_ms) {
            return GB_DIAG_ESP_TIMEOUT;
        }
    }
    return GB_DIAG_UNKNOWN;
}

void gb_domain__diagnose(const gb_domain__diag_input_t *in, gb_diagnosis_t *out)
{
    out->code = pick_code(in);
    out->stage = in->stage;
    if (in->has_hresult) {
        out->has_hresult = true;
        out->hresult = in->hresult;
    } else if (in->has_evidence_hresult && (out->code == GB_DIAG_APP_INSTALL_FAILED ||
                                            out->code == GB_DIAG_CERTIFICATE_FAILED)) {
        /* The failed app's or certificate's code is what the red screen shows. */
        out->has_hresult = true;
        out->hresult = in->evidence_hresult;
    } else if (canonical_hr[out->code] != 0) {
        out->has_hresult = true;
        out->hresult = canonical_hr[out->code];
    } else {
        out->has_hresult = false;
        out->hresult = 0;
    }
}
