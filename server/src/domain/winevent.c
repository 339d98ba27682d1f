/* winevent: Windows events to stage transitions, diagnosis evidence and nothing else. Every
 * event of the domain brief's tables has a row below; the enrollment events (179/180/181/302)
 * name their phase and HRESULT in the text, which is parsed. The two Shell-Core events name the
 * CloudExperienceHost page in their text; the words looked for are listed with them. Events
 * that are not in the table are kept by the caller and change nothing.
 *
 * The two Shell-Core events carry the page in their text; words are matched without regard to
 * case unless noted, the first match wins:
 *   62404 (an OOBE page started): "EnterpriseProvisioning" -> enterprise_provisioning,
 *     "OobeZdp" -> zdp_update, "WhiteGloveUpdate" -> component_update, "WhiteGloveReboot" ->
 *     device_rename, "WhiteGloveLanding" -> landing, any other page -> oobe; after reseal,
 *     "SignIn" -> user_signin and any other page -> user_oobe.
 *   62407 (an ESP or result page): "AUTOPILOTWHITEGLOVEUPDATE" (exact case, the error page's
 *     code) -> component_update failed, "WhiteGloveSuccess" -> green screen,
 *     "WhiteGloveFailure" / "WhiteGloveFailed" -> red screen, "Reseal" (when green) -> reseal,
 *     "DevicePreparation" -> securing_hardware, "DeviceSetup" -> device_setup, and after
 *     reseal "AccountSetup" -> account_setup, "Desktop" -> desktop.
 * For example "CloudExperienceHost Web App Activity started. CXID: 'OobeEnterpriseProvisioning'."
 * or "CloudExperienceHost Web App Event 2. Name: 'ESPPage', Value: 'DeviceSetup'.".
 *
 * The translation is chosen so that an agent forwarding only these events yields the same
 * stage runs as one sending stage messages: a stage start closes the stages before it, a
 * repeated start is a no-op, and the first end of a run wins, so an agent sending both never
 * counts a stage twice. */
#include <string.h>
#include <strings.h>

#include "domain/domain.h"
#include "domain/internal.h"

#define CHAN(name)             \
    {                          \
        name, sizeof(name) - 1 \
    }

static const struct {
    const char *name;
    size_t len;
} chans[GB_WCHAN_COUNT] = {
    [GB_WCHAN_UNKNOWN] = CHAN(""),
    [GB_WCHAN_AUTOPILOT] =
        CHAN("Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot"),
    [GB_WCHAN_MANAGEMENT_SERVICE] =
        CHAN("Microsoft-Windows-ModernDeployment-Diagnostics-Provider/ManagementService"),
    [GB_WCHAN_DM_ENTERPRISE] =
        CHAN("Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin"),
    [GB_WCHAN_USER_DEVICE_REG] = CHAN("Microsoft-Windows-User Device Registration/Admin"),
    [GB_WCHAN_SHELL_CORE] = CHAN("Microsoft-Windows-Shell-Core/Operational"),
};

#define CHAN_PREFIX     "Microsoft-Windows-"
#define CHAN_PREFIX_LEN (sizeof(CHAN_PREFIX) - 1)

const char *gb_wchan_name(gb_wchan_t chan)
{
    return (unsigned)chan < GB_WCHAN_COUNT ? chans[chan].name : "";
}

gb_wchan_t gb_wchan_parse(gb_str_t name)
{
    /* Runs for every event: compare lengths before any bytes. */
    for (int i = 1; i < GB_WCHAN_COUNT; i++) {
        const char *full = chans[i].name;
        if (name.len == chans[i].len && strncasecmp(name.p, full, name.len) == 0) {
            return (gb_wchan_t)i;
        }
        if (name.len == chans[i].len - CHAN_PREFIX_LEN &&
            strncasecmp(name.p, full + CHAN_PREFIX_LEN, name.len) == 0) {
            return (gb_wchan_t)i;
        }
    }
    return GB_WCHAN_UNKNOWN;
}

/* ASCII lower case, as an int (no locale, no narrowing). */
static int lower(char c)
{
    int x = (unsigned char)c;
    return x >= 'A' && x <= 'Z' ? x + ('a' - 'A') : x;
}

bool gb_domain__icontains(gb_str_t hay, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0) {
        return true;
    }
    if (hay.len < n) {
        return false;
    }
    /* Event texts are short, but this runs for every event: compare the first byte inline. */
    int first = lower(needle[0]);
    for (size_t i = 0; i + n <= hay.len; i++) {
        if (lower(hay.p[i]) == first && strncasecmp(hay.p + i, needle, n) == 0) {
            return true;
        }
    }
    return false;
}

/* Case-sensitive substring test, for the upper-case error code of the update page. */
static bool contains(gb_str_t hay, const char *needle)
{
    size_t n = strlen(needle);
    if (hay.len < n) {
        return false;
    }
    for (size_t i = 0; i + n <= hay.len; i++) {
        if (memcmp(hay.p + i, needle, n) == 0) {
            return true;
        }
    }
    return false;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_alnum(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* The first "0x" + 1..8 hex digits (not part of a longer word) in text[from..). */
static bool scan_hex(gb_str_t text, size_t from, uint32_t *out)
{
    for (size_t i = from; i + 2 < text.len; i++) {
        if (text.p[i] != '0' || (text.p[i + 1] != 'x' && text.p[i + 1] != 'X')) {
            continue;
        }
        if (i > 0 && is_alnum(text.p[i - 1])) {
            continue;
        }
        size_t j = i + 2;
        while (j < text.len && is_hex(text.p[j])) {
            j++;
        }
        size_t digits = j - (i + 2);
        if (digits >= 1 && digits <= 8 && (j == text.len || !is_alnum(text.p[j]))) {
            gb_str_t s = {text.p + i, j - i};
            return gb_hresult_parse(s, out);
        }
    }
    return false;
}

bool gb_winevent_find_hresult(gb_str_t text, uint32_t *out)
{
    static const char word[] = "hresult";
    for (size_t i = 0; i + sizeof(word) - 1 <= text.len; i++) {
        if (lower(text.p[i]) == 'h' && strncasecmp(text.p + i, word, sizeof(word) - 1) == 0) {
            if (scan_hex(text, i + sizeof(word) - 1, out)) {
                return true;
            }
            break;
        }
    }
    return scan_hex(text, 0, out);
}

bool gb_winevent_find_phase(gb_str_t text, char *out, size_t out_size)
{
    size_t i = 0;
    while (i < text.len) {
        while (i < text.len && !is_alnum(text.p[i])) {
            i++;
        }
        size_t start = i;
        while (i < text.len && is_alnum(text.p[i])) {
            i++;
        }
        gb_str_t w = {text.p + start, i - start};
        bool phase = (w.len > 3 && (gb_str_has_prefix(w, "AAD") || gb_str_has_prefix(w, "MDM"))) ||
                     gb_str_eq_cstr(w, "DeviceDiscovery") || gb_str_eq_cstr(w, "DeviceEnroll");
        if (phase && w.len < out_size) {
            memcpy(out, w.p, w.len);
            out[w.len] = '\0';
            return true;
        }
    }
    if (out_size > 0) {
        out[0] = '\0';
    }
    return false;
}

static bool user_flow(gb_dev_status_t status)
{
    return status == GB_DEV_RESEALED || status == GB_DEV_HANDOVER || status == GB_DEV_DELIVERED;
}

static void set(gb_winevent_effect_t *e, gb_wact_t action, gb_stage_t stage)
{
    e->known = true;
    e->action = action;
    e->stage = stage;
}

/* The stage an enrollment phase belongs to: Azure AD phases join, the rest enroll in MDM. */
static gb_stage_t phase_stage(const char *phase)
{
    if (phase[0] == '\0') {
        return GB_STAGE_NONE;
    }
    return strncmp(phase, "AAD", 3) == 0 ? GB_STAGE_JOINING_NETWORK : GB_STAGE_REGISTERING_MDM;
}

/* Autopilot 179 (phase began), 180 (phase failed), 181 (phase completed with an HRESULT),
 * 302 (enrollment failed at a stage). */
static void enrollment_event(gb_winevent_effect_t *e, uint32_t id)
{
    gb_stage_t st = phase_stage(e->phase);
    bool failed = id == 180 || id == 302 || (id == 181 && e->has_hresult && e->hresult != 0);

    if (failed) {
        if (id == 302 && st == GB_STAGE_NONE) {
            st = GB_STAGE_REGISTERING_MDM;
        }
        set(e, GB_WACT_FAIL, st);
        if (id != 181 && strcmp(e->phase, "AADEnroll") == 0) {
            e->evidence |= GB_EV_DEVICE_NOT_FOUND;
        }
        if (id != 181 && strcmp(e->phase, "DeviceDiscovery") == 0) {
            e->evidence |= GB_EV_NO_MDM;
        }
    } else if (st == GB_STAGE_NONE) {
        set(e, GB_WACT_NONE, GB_STAGE_NONE);
    } else if (id == 181 && strcmp(e->phase, "AADEnroll") == 0) {
        set(e, GB_WACT_SUCCEED, GB_STAGE_JOINING_NETWORK); /* the last Azure AD phase */
    } else {
        set(e, GB_WACT_START, st);
    }
}

static void autopilot_event(gb_winevent_effect_t *e, uint32_t id, gb_dev_status_t status)
{
    switch (id) {
    case 100: /* policy not found yet: waiting for the profile */
    case 153: /* profile state changed */
    case 160: /* profile download starting */
    case 164: /* internet available for the profile download */
        set(e, GB_WACT_START, GB_STAGE_PROFILE_DOWNLOAD);
        break;
    case 161: /* profile downloaded */
        set(e, GB_WACT_SUCCEED, GB_STAGE_PROFILE_DOWNLOAD);
        break;
    case 163: /* already provisioned: the user flow does not download the profile again */
        set(e, user_flow(status) ? GB_WACT_START : GB_WACT_NONE,
            user_flow(status) ? GB_STAGE_USER_OOBE : GB_STAGE_NONE);
        break;
    case 807: /* device not registered */
    case 809: /* assigned profile deleted */
    case 815: /* no profile assigned */
    case 908: /* serial number or product key mismatch */
        set(e, GB_WACT_FAIL, GB_STAGE_PROFILE_DOWNLOAD);
        e->evidence |= GB_EV_PROFILE;
        break;
    case 151: /* TPM maintenance task started */
    case 152: /* TPM maintenance task complete */
    case 168: /* TPM device identity updated */
    case 177: /* configuring the TPM for attestation */
    case 186: /* TPM configuration already in progress */
    case 201: /* AIK not found by name */
    case 205: /* AIK certificate obtained */
    case 250: /* AIK certificate request started */
    case 252: /* AIK located */
        set(e, GB_WACT_START, GB_STAGE_SECURING_HARDWARE);
        break;
    case 169: /* TPM identity confirmed */
        set(e, GB_WACT_SUCCEED, GB_STAGE_SECURING_HARDWARE);
        break;
    case 156: /* TPM not set up for attestation: Autopilot cannot proceed */
    case 171: /* failed to confirm the TPM identity */
    case 172: /* failed to mark the profile available (TPM) */
        set(e, GB_WACT_FAIL, GB_STAGE_SECURING_HARDWARE);
        e->evidence |= GB_EV_TPM_FAILED;
        break;
    case 115: /* discovery found no valid MDM: the tenant must have exactly one */
        set(e, GB_WACT_FAIL, GB_STAGE_REGISTERING_MDM);
        e->evidence |= GB_EV_NO_MDM;
        break;
    case 179:
    case 180:
    case 181:
    case 302:
        enrollment_event(e, id);
        break;
    default:
        break;
    }
}

static void dm_event(gb_winevent_effect_t *e, uint32_t id, gb_str_t text, gb_stage_t stage)
{
    switch (id) {
    case 72: /* MDM enrollment succeeded: ESP moves on to the policy providers */
        set(e, GB_WACT_SUCCEED, GB_STAGE_REGISTERING_MDM);
        e->then_start = GB_STAGE_PREPARING_MDM;
        break;
    case 1905: /* MSI download started */
    case 1906: /* MSI download finished */
    case 1920: /* MSI install started */
    case 1922: /* MSI install finished */
        /* Right after enrollment, the MSI is the management extension being delivered. */
        if (stage == GB_STAGE_REGISTERING_MDM) {
            set(e, GB_WACT_START, GB_STAGE_PREPARING_MDM);
        } else {
            set(e, GB_WACT_NONE, GB_STAGE_NONE);
        }
        break;
    case 1924: /* MSI install failed */
        if (stage == GB_STAGE_PREPARING_MDM) {
            set(e, GB_WACT_FAIL, GB_STAGE_PREPARING_MDM); /* the management extension */
        } else {
            /* During setup an app failing does not end the ESP by itself (the app may not be
             * blocking); the red screen does, and this names its cause. */
            set(e, GB_WACT_EVIDENCE, GB_STAGE_NONE);
            e->evidence |= GB_EV_APP_FAILED;
        }
        break;
    case 32:  /* SCEP: certificate enroll failed */
    case 307: /* SCEP: failed (LogError) */
        if (gb_domain__icontains(text, "SCEP") || gb_domain__icontains(text, "PKCS")) {
            set(e, GB_WACT_EVIDENCE, GB_STAGE_NONE);
            e->evidence |= GB_EV_CERT_FAILED;
        } else {
            set(e, GB_WACT_NONE, GB_STAGE_NONE);
        }
        break;
    default:
        break;
    }
}

static void udr_event(gb_winevent_effect_t *e, uint32_t id, gb_str_t text)
{
    switch (id) {
    case 102: /* join request initialised (type 11, DEVICE_AUTO_DDID) */
    case 104: /* join response: pre-created device updated */
        set(e, GB_WACT_START, GB_STAGE_JOINING_NETWORK);
        break;
    case 204: /* join response failed */
        set(e, GB_WACT_FAIL, GB_STAGE_JOINING_NETWORK);
        if (gb_domain__icontains(text, "DeviceNotFound") ||
            gb_domain__icontains(text, "AuthenticationError") ||
            (e->has_hresult && e->hresult == GB_HR_DEVICE_NOT_FOUND)) {
            e->evidence |= GB_EV_DEVICE_NOT_FOUND;
        }
        break;
    case 358: /* Windows Hello for Business provisioning will be launched */
        set(e, GB_WACT_START, GB_STAGE_HELLO_PROVISIONING);
        break;
    default:
        break;
    }
}

/* 62404: a CloudExperienceHost activity (OOBE page) started; its text names the activity. */
static void oobe_page_event(gb_winevent_effect_t *e, gb_str_t text, gb_dev_status_t status)
{
    static const struct {
        const char *word;
        gb_stage_t stage;
    } pages[] = {
        {"EnterpriseProvisioning", GB_STAGE_ENTERPRISE_PROVISIONING},
        {"OobeZdp", GB_STAGE_ZDP_UPDATE},
        {"WhiteGloveUpdate", GB_STAGE_COMPONENT_UPDATE},
        {"WhiteGloveReboot", GB_STAGE_DEVICE_RENAME},
        {"WhiteGloveLanding", GB_STAGE_LANDING},
    };

    if (user_flow(status)) {
        set(e, GB_WACT_START,
            gb_domain__icontains(text, "SignIn") ? GB_STAGE_USER_SIGNIN : GB_STAGE_USER_OOBE);
        return;
    }
    for (size_t i = 0; i < GB_ARRAY_LEN(pages); i++) {
        if (gb_domain__icontains(text, pages[i].word)) {
            set(e, GB_WACT_START, pages[i].stage);
            return;
        }
    }
    set(e, GB_WACT_START, GB_STAGE_OOBE); /* any other page: the device is in OOBE */
}

/* 62407: an ESP or result page transition; its text names the page. */
static void esp_page_event(gb_winevent_effect_t *e, gb_str_t text, gb_dev_status_t status)
{
    bool user = user_flow(status);

    if (contains(text, "AUTOPILOTWHITEGLOVEUPDATE")) {
        set(e, GB_WACT_FAIL, GB_STAGE_COMPONENT_UPDATE); /* "Something went wrong" */
    } else if (gb_domain__icontains(text, "WhiteGloveSuccess")) {
        set(e, GB_WACT_RESULT_GREEN, GB_STAGE_NONE);
    } else if (gb_domain__icontains(text, "WhiteGloveFailure") ||
               gb_domain__icontains(text, "WhiteGloveFailed")) {
        set(e, GB_WACT_RESULT_RED, GB_STAGE_NONE);
    } else if (gb_domain__icontains(text, "Reseal")) {
        set(e, status == GB_DEV_GREEN ? GB_WACT_START_SUCCEED : GB_WACT_NONE, GB_STAGE_RESEAL);
    } else if (gb_domain__icontains(text, "DevicePreparation")) {
        set(e, GB_WACT_START, GB_STAGE_SECURING_HARDWARE);
    } else if (gb_domain__icontains(text, "DeviceSetup")) {
        set(e, GB_WACT_START, GB_STAGE_DEVICE_SETUP);
    } else if (gb_domain__icontains(text, "AccountSetup")) {
        set(e, user ? GB_WACT_START : GB_WACT_NONE, GB_STAGE_ACCOUNT_SETUP);
    } else if (gb_domain__icontains(text, "Desktop")) {
        set(e, user ? GB_WACT_START_SUCCEED : GB_WACT_NONE, GB_STAGE_DESKTOP);
    } else {
        set(e, GB_WACT_NONE, GB_STAGE_NONE);
    }
    if (e->action == GB_WACT_NONE) {
        e->stage = GB_STAGE_NONE;
    }
}

/* Events whose text holds an HRESULT or an enrollment phase that the translation uses. */
static bool reads_text(gb_wchan_t chan, uint32_t id)
{
    switch (chan) {
    case GB_WCHAN_AUTOPILOT:
        return id == 115 || id == 156 || id == 171 || id == 172 || id == 179 || id == 180 ||
               id == 181 || id == 302;
    case GB_WCHAN_USER_DEVICE_REG:
        return id == 204;
    case GB_WCHAN_DM_ENTERPRISE:
        return id == 1924 || id == 32 || id == 307;
    default:
        return false;
    }
}

void gb_winevent_translate(gb_str_t channel, uint32_t event_id, gb_str_t message,
                           gb_dev_status_t status, gb_stage_t stage, gb_winevent_effect_t *out)
{
    memset(out, 0, sizeof(*out));
    out->channel = gb_wchan_parse(channel);
    /* Only the events that carry a code or a phase are scanned for them. */
    if (reads_text(out->channel, event_id)) {
        out->has_hresult = gb_winevent_find_hresult(message, &out->hresult);
        gb_winevent_find_phase(message, out->phase, sizeof(out->phase));
    }

    switch (out->channel) {
    case GB_WCHAN_AUTOPILOT:
        autopilot_event(out, event_id, status);
        break;
    case GB_WCHAN_MANAGEMENT_SERVICE:
        if (event_id == 509) { /* TPM required by the pre-provisioning policy */
            set(out, GB_WACT_EVIDENCE, GB_STAGE_NONE);
            out->evidence |= GB_EV_TPM_REQUIRED;
        }
        break;
    case GB_WCHAN_DM_ENTERPRISE:
        dm_event(out, event_id, message, stage);
        break;
    case GB_WCHAN_USER_DEVICE_REG:
        udr_event(out, event_id, message);
        break;
    case GB_WCHAN_SHELL_CORE:
        if (event_id == 62404) {
            oobe_page_event(out, message, status);
        } else if (event_id == 62407) {
            esp_page_event(out, message, status);
        }
        break;
    default:
        break;
    }
}
