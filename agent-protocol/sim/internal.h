/* internal: what the model's files share, and the pure pieces its unit tests call directly
 * (gb_sim__*): the random streams, the event heap, the uplink's fair share, and the catalogue
 * of hardware, payloads and Windows event texts. Nothing outside the model and its tests
 * includes this header. */
#ifndef GB_SIM_INTERNAL_H
#define GB_SIM_INTERNAL_H

#include "model.h"

/* ---- random streams: xoshiro256**, seeded through splitmix64 ---- */

typedef struct gb_sim__rng {
    uint64_t s[4];
} gb_sim__rng_t;

/* One independent stream per (seed, stream) pair: device i draws from stream i + 1, so a
 * device's draws never depend on what the other devices did. */
void gb_sim__rng_seed(gb_sim__rng_t *r, uint64_t seed, uint64_t stream);
uint64_t gb_sim__rng_next(gb_sim__rng_t *r);
/* Uniform in [0, 1) with 53 random bits. */
double gb_sim__rng_unit(gb_sim__rng_t *r);
/* Uniform integer in [0, n); n > 0. */
uint32_t gb_sim__rng_below(gb_sim__rng_t *r, uint32_t n);
/* A draw of d in milliseconds (triangular, rounded to the ms; sqrt only, so every IEEE
 * platform draws the same numbers). */
int64_t gb_sim__rng_dist_ms(gb_sim__rng_t *r, const gb_sim_dist_t *d);
/* A stateless 64-bit mix, for values that must not consume a stream (GUIDs in event texts). */
uint64_t gb_sim__mix(uint64_t a, uint64_t b);

/* ---- event heap: ordered by time, then by insertion (so ties are deterministic) ---- */

typedef struct gb_sim__event {
    int64_t t;      /* simulated ms */
    uint64_t order; /* insertion counter */
    uint32_t dev;   /* device index, or uplink group for GB_SIM__EV_BW */
    uint32_t token; /* the event is stale unless it matches its owner's current token */
    uint32_t kind;
} gb_sim__event_t;

typedef struct gb_sim__heap {
    gb_sim__event_t *v;
    size_t n;
    size_t cap;
    uint64_t next_order;
} gb_sim__heap_t;

void gb_sim__heap_init(gb_sim__heap_t *h);
void gb_sim__heap_dispose(gb_sim__heap_t *h);
void gb_sim__heap_push(gb_sim__heap_t *h, int64_t t, uint32_t kind, uint32_t dev, uint32_t token);
/* The earliest event, or NULL when empty. */
const gb_sim__event_t *gb_sim__heap_top(const gb_sim__heap_t *h);
/* Removes the earliest event into out; false when empty. */
bool gb_sim__heap_pop(gb_sim__heap_t *h, gb_sim__event_t *out);

/* ---- the uplink: processor sharing with max-min fair shares (water-filling) ----
 * Downloads with the same NIC cap form a group and always get the same rate, so the state per
 * group is one number, `served`: the bytes each member has received since the group began.
 * A download of b bytes that joins when served is s finishes when served reaches s + b; the
 * group keeps those finish marks in a min-heap. Rates change only when the set of downloads
 * changes; between changes bytes are integrated exactly. Only the HTTP share of each byte
 * crosses the uplink; LAN peers and the cache are limited by the NIC alone. */

typedef struct gb_sim__bw_mark {
    double finish; /* served value at which the download completes */
    uint32_t dev;
    uint32_t token;
} gb_sim__bw_mark_t;

typedef struct gb_sim__bw_group {
    double cap;    /* bytes/ms: the NIC */
    double rate;   /* bytes/ms each member gets now */
    double served; /* bytes per member since the start */
    uint32_t members;
    uint32_t version; /* bumped at each rebalance: older completion events are stale */
    gb_sim__bw_mark_t *marks;
    size_t n_marks;
    size_t cap_marks;
} gb_sim__bw_group_t;

/* True while the download (dev, token) is still wanted. */
typedef bool (*gb_sim__bw_live_cb)(void *arg, uint32_t dev, uint32_t token);

typedef struct gb_sim__bw {
    double uplink;              /* bytes/ms */
    double http_share;          /* share of each byte that crosses the uplink */
    int64_t t;                  /* time of the last advance */
    uint32_t active;            /* downloads in progress */
    double active_ms;           /* integral of `active` over time, in download-ms */
    gb_sim__bw_group_t *groups; /* ascending cap */
    uint32_t n_groups;
    gb_sim__bw_live_cb live;
    void *live_arg;
} gb_sim__bw_t;

/* caps: the distinct NIC rates in bytes/ms (any order). */
void gb_sim__bw_init(gb_sim__bw_t *bw, double uplink, double http_share, const double *caps,
                     uint32_t n_caps, gb_sim__bw_live_cb live, void *live_arg);
void gb_sim__bw_dispose(gb_sim__bw_t *bw);
/* The group of a cap given to init. */
uint32_t gb_sim__bw_group_of(const gb_sim__bw_t *bw, double cap);
/* Integrates served bytes and the activity integral up to t. */
void gb_sim__bw_advance(gb_sim__bw_t *bw, int64_t t);
/* Starts a download of bytes at t; returns the group's served value at its start. Rebalances. */
double gb_sim__bw_add(gb_sim__bw_t *bw, int64_t t, uint32_t group, uint32_t dev, uint32_t token,
                      double bytes);
/* Ends a download early (its mark turns stale through the live callback). Rebalances. */
void gb_sim__bw_cancel(gb_sim__bw_t *bw, int64_t t, uint32_t group);
/* Recomputes every group's rate (called by add and cancel). */
void gb_sim__bw_rebalance(gb_sim__bw_t *bw);
/* When the group's next download completes, given the state at bw->t; GB_SIM_NEVER if none. */
int64_t gb_sim__bw_next_finish(gb_sim__bw_t *bw, uint32_t group);
/* Removes one download of the group that has completed by bw->t into *mark; false if none.
 * The caller calls gb_sim__bw_rebalance() after taking them all. */
bool gb_sim__bw_take_finished(gb_sim__bw_t *bw, uint32_t group, gb_sim__bw_mark_t *mark);

/* ---- catalogue ---- */

/* A hardware model of the fleet. */
typedef struct gb_sim__hw {
    const char *manufacturer;
    const char *model;
    const char *tpm_version;
    bool tpm_attestation;
    bool virtual_machine;
    double link_mbps;
    uint32_t weight;   /* share of the fleet (0: only for the TPM fault) */
    char serial_style; /* 'H' HP, 'L' Lenovo, 'D' Dell, 'S' Surface, 'V' Hyper-V */
} gb_sim__hw_t;

/* The physical models, in draw order. */
const gb_sim__hw_t *gb_sim__hw_models(size_t *n);
/* The two ways a device fails TPM attestation: a VM, or a chip still on TPM 1.2. */
const gb_sim__hw_t *gb_sim__hw_vm(void);
const gb_sim__hw_t *gb_sim__hw_tpm12(void);
/* Writes a serial in the model's style (NUL-terminated, at most 40 bytes). */
void gb_sim__serial(gb_sim__rng_t *r, char style, char *out, size_t size);

/* A named payload; false when unknown. */
bool gb_sim__payload_named(gb_sim_config_t *cfg, const char *name);

/* Windows event channels. */
typedef enum gb_sim__chan {
    GB_SIM__CH_AUTOPILOT = 0,
    GB_SIM__CH_MGMT,
    GB_SIM__CH_DM,
    GB_SIM__CH_UDR,
    GB_SIM__CH_SHELL,
    GB_SIM__CH_COUNT
} gb_sim__chan_t;

const char *gb_sim__chan_name(gb_sim__chan_t chan);

/* One Windows event as the device logs it. The text may hold placeholders, filled when it is
 * sent: {HR} the failure's HRESULT (0x801C03F3), {hr} the same in lower case, {APP} the app,
 * {GUID} an activity id, {GUID2} a device id, {DOMAIN} the tenant domain, {TIME} the time as
 * "MM-DD-YYYY HH:MM:SSZ", {N} the TPM attempt number. */
typedef struct gb_sim__wevent {
    gb_sim__chan_t chan;
    uint16_t id;
    const char *text;
} gb_sim__wevent_t;

/* Which events a stage shows, in order: at its start, spread over its run, at its end. */
typedef struct gb_sim__wstage {
    const gb_sim__wevent_t *start;
    size_t n_start;
    const gb_sim__wevent_t *mid;
    size_t n_mid;
    const gb_sim__wevent_t *end;
    size_t n_end;
} gb_sim__wstage_t;

/* The events of a stage that succeeds (winevent mode). */
const gb_sim__wstage_t *gb_sim__wstage(gb_sim_stage_t stage);
/* The events of a failure: at the start of the failing stage (as the run begins), during it,
 * and at the failure itself; used in both modes (stage mode sends only `fail`, plus `start`
 * where the brief names it as evidence). */
const gb_sim__wstage_t *gb_sim__wfault(gb_sim_fault_t fault, uint32_t variant);
/* The green and red screens, and reseal (winevent mode). */
const gb_sim__wevent_t *gb_sim__wresult(bool green);
const gb_sim__wevent_t *gb_sim__wreseal(void);

/* The failure's stage and the HRESULT the red screen shows. */
gb_sim_stage_t gb_sim__fault_stage(gb_sim_fault_t fault);
uint32_t gb_sim__fault_hresult(gb_sim_fault_t fault);

/* Built-in stage time distributions (seconds). */
void gb_sim__default_stage_times(gb_sim_config_t *cfg);

/* Base64 (RFC 4648, padded). */
void gb_sim__base64(const uint8_t *in, size_t n, gb_buf_t *out);

#endif
