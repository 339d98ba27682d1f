/* internal: what domain's own files share, and the pure helpers its unit tests call directly
 * (gb_domain__*). Nothing outside domain/ and its tests includes this header. */
#ifndef GB_DOMAIN_INTERNAL_H
#define GB_DOMAIN_INTERNAL_H

#include "domain/domain.h"

/* Well-known HRESULTs of the failure catalogue. */
#define GB_HR_TIMEOUT             0x800705B4u /* ERROR_TIMEOUT: TPM attestation, ESP timeout */
#define GB_HR_DEVICE_NOT_FOUND    0x801C03F3u /* Azure AD device object missing */
#define GB_HR_MULTIPLE_MDM        0x81036501u /* MDM discovery found no single MDM */
#define GB_HR_NETWORK_UNREACHABLE 0x800704CFu /* ERROR_NETWORK_UNREACHABLE */
#define GB_HR_NAME_NOT_RESOLVED   0x80072EE7u /* WININET_E_NAME_NOT_RESOLVED */
#define GB_HR_CANNOT_CONNECT      0x80072EFDu /* WININET_E_CANNOT_CONNECT */

/* Everything the diagnosis rules look at. */
typedef struct gb_domain__diag_input {
    gb_stage_t stage; /* the stage that failed (GB_STAGE_NONE: none was running) */
    bool has_hresult; /* the failed run's HRESULT */
    uint32_t hresult;
    uint32_t evidence; /* GB_EV_* bits of the attempt */
    bool has_evidence_hresult;
    uint32_t evidence_hresult;
    gb_medium_t medium; /* from hello */
    gb_tri_t virtual_machine;
    gb_tri_t tpm_attestation;
    bool tpm_below_2; /* hello reported a TPM older than 2.0, or none */
    int64_t run_ms;   /* how long the failed run ran; -1 when unknown */
    int64_t esp_timeout_ms;
} gb_domain__diag_input_t;

/* Applies the diagnosis rules (catalogue.c documents their order). out->hresult is the run's
 * HRESULT, else the evidence's, else the one the red screen shows for that code, if any. */
void gb_domain__diagnose(const gb_domain__diag_input_t *in, gb_diagnosis_t *out);

/* True for HRESULTs of certificate services, certificate chains and crypto messages. */
bool gb_domain__is_cert_hresult(uint32_t hr);
/* True for HRESULTs that mean "no network". */
bool gb_domain__is_network_hresult(uint32_t hr);
/* True when the TPM version string is below 2.0 ("1.2", "", "none"); false for unparsable. */
bool gb_domain__tpm_below_2(const char *version);

/* Case-insensitive substring test. */
bool gb_domain__icontains(gb_str_t hay, const char *needle);

/* Adds calendar months to a UTC time, keeping the time of day and clamping the day to the
 * month's length (31 August + 6 months = 28 or 29 February). */
int64_t gb_domain__add_months(int64_t ms, int months);

/* Array growth shared by apply.c and the restore functions (device.c). */
void gb_dev__push_run(gb_dev_t *dev, const gb_stage_run_t *run);
void gb_dev__push_attempt(gb_dev_t *dev, int64_t started_ms);
/* Adds an app (name cut to GB_APP_NAME_MAX); NULL when GB_DEV_MAX_APPS are tracked already. */
gb_app_t *gb_dev__add_app(gb_dev_t *dev, const char *name, size_t len);

#endif
