/* fuzz_winevent: libFuzzer harness for the Windows-event translator. The input's first bytes pick
 * the channel (one of the known names, full or short, or raw bytes), the event id (one of the
 * translated ids, or any 32-bit value), the device's status and stage; the rest is the message
 * text. Every piece is copied into an allocation of its exact size, so any read past a slice's
 * end is caught. The effect must be well formed and the same on a second call, and the two text
 * scanners must agree with what the translation stored. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/domain.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every id the translator has a row for, on any channel: picking from these reaches the tables
 * far sooner than 32 random bits would. */
static const uint32_t known_ids[] = {
    32,  72,  100, 102, 104, 115, 151,  152,  153,  156,  160,  161,   163,   164, 168,
    169, 171, 172, 177, 179, 180, 181,  186,  201,  204,  205,  250,   252,   302, 307,
    358, 509, 807, 809, 815, 908, 1905, 1906, 1920, 1922, 1924, 62404, 62407,
};

#define SHORT_PREFIX "Microsoft-Windows-"

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_winevent: %s\n", what);
        abort();
    }
}

/* An exact-size heap copy (at least one byte, so an empty slice still has a valid pointer). */
static char *copy(const void *p, size_t len)
{
    char *c = malloc(len > 0 ? len : 1);
    check(c != NULL, "out of memory");
    if (len > 0) {
        memcpy(c, p, len);
    }
    return c;
}

static bool is_alnum(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool has_substring(gb_str_t hay, const char *needle, size_t n)
{
    for (size_t i = 0; i + n <= hay.len; i++) {
        if (memcmp(hay.p + i, needle, n) == 0) {
            return true;
        }
    }
    return false;
}

/* The phase scanner, with several output sizes: the output is always terminated inside the
 * buffer, and a found phase is a whole alphanumeric word of the text. */
static void check_phase(gb_str_t text)
{
    static const size_t sizes[] = {1, 4, 12, 32};
    char big[32];
    bool found_big = gb_winevent_find_phase(text, big, sizeof(big));

    for (size_t k = 0; k < GB_ARRAY_LEN(sizes); k++) {
        char *out = malloc(sizes[k]);
        check(out != NULL, "out of memory");
        bool found = gb_winevent_find_phase(text, out, sizes[k]);
        size_t n = strnlen(out, sizes[k]);
        check(n < sizes[k], "phase not terminated inside its buffer");
        if (found) {
            check(n > 0, "empty phase reported as found");
            for (size_t i = 0; i < n; i++) {
                check(is_alnum(out[i]), "phase is not one word");
            }
            check(has_substring(text, out, n), "phase not in the text");
        } else {
            check(n == 0, "phase written although none was found");
        }
        if (sizes[k] == sizeof(big)) {
            check(found == found_big && strcmp(out, big) == 0, "phase scan not deterministic");
        }
        free(out);
    }
}

static void check_effect(const gb_winevent_effect_t *e, gb_str_t message, uint32_t id)
{
    check((unsigned)e->channel < GB_WCHAN_COUNT, "channel out of range");
    check((unsigned)e->action <= GB_WACT_EVIDENCE, "action out of range");
    check((unsigned)e->stage < GB_STAGE_COUNT, "stage out of range");
    check((unsigned)e->then_start < GB_STAGE_COUNT, "then_start out of range");
    check(strnlen(e->phase, sizeof(e->phase)) < sizeof(e->phase), "phase not terminated");
    if (!e->known) {
        check(e->action == GB_WACT_NONE && e->stage == GB_STAGE_NONE && e->evidence == 0 &&
                  e->then_start == GB_STAGE_NONE,
              "an unknown event has an effect");
    } else {
        check(e->channel != GB_WCHAN_UNKNOWN, "known event on an unknown channel");
    }
    switch (e->action) {
    case GB_WACT_NONE:
        check(e->stage == GB_STAGE_NONE, "no action but a stage");
        break;
    case GB_WACT_START:
    case GB_WACT_SUCCEED:
    case GB_WACT_START_SUCCEED:
        check(e->stage != GB_STAGE_NONE, "a start or success without a stage");
        break;
    case GB_WACT_RESULT_GREEN:
    case GB_WACT_RESULT_RED:
    case GB_WACT_EVIDENCE:
        check(e->stage == GB_STAGE_NONE, "a result or evidence with a stage");
        break;
    case GB_WACT_FAIL:
        break; /* GB_STAGE_NONE means the running stage */
    }
    /* What the translation read from the text is what the scanners find in it. */
    if (e->has_hresult) {
        uint32_t hr = 0;
        check(gb_winevent_find_hresult(message, &hr) && hr == e->hresult, "hresult disagrees");
        check(has_substring(message, "0x", 2) || has_substring(message, "0X", 2),
              "hresult without a 0x number in the text");
    }
    if (e->phase[0] != '\0') {
        char again[sizeof(e->phase)];
        check(gb_winevent_find_phase(message, again, sizeof(again)) && strcmp(again, e->phase) == 0,
              "phase disagrees");
    }
    GB_UNUSED(id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Header: channel selector, channel length (raw mode), id selector, 4 id bytes, status,
     * stage. Short inputs are padded with zeros so that every input is used. */
    uint8_t h[9] = {0};
    size_t hn = size < sizeof(h) ? size : sizeof(h);
    memcpy(h, data, hn);
    const uint8_t *rest = data + hn;
    size_t rest_len = size - hn;

    char *chan_mem;
    size_t chan_len;
    unsigned mode = h[0] % 8;
    if (mode >= 1 && mode <= 5) {
        const char *name = gb_wchan_name((gb_wchan_t)mode);
        chan_len = strlen(name);
        chan_mem = copy(name, chan_len);
    } else if (mode == 6) {
        /* The short form agents may send, without the "Microsoft-Windows-" prefix. */
        const char *name = gb_wchan_name((gb_wchan_t)(1 + (h[0] >> 3) % 5));
        chan_len = strlen(name) - strlen(SHORT_PREFIX);
        chan_mem = copy(name + strlen(SHORT_PREFIX), chan_len);
    } else {
        chan_len = h[1] < rest_len ? h[1] : rest_len;
        chan_mem = copy(rest, chan_len);
        rest += chan_len;
        rest_len -= chan_len;
    }

    uint32_t raw_id =
        (uint32_t)h[3] | (uint32_t)h[4] << 8 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 24;
    uint32_t id = (h[2] & 1) != 0 ? raw_id : known_ids[raw_id % GB_ARRAY_LEN(known_ids)];
    gb_dev_status_t status = (gb_dev_status_t)(h[7] % GB_DEV_STATUS_COUNT);
    gb_stage_t stage = (gb_stage_t)(h[8] % GB_STAGE_COUNT);

    char *msg_mem = copy(rest, rest_len);
    gb_str_t channel = {chan_mem, chan_len};
    gb_str_t message = {msg_mem, rest_len};

    gb_winevent_effect_t a, b;
    gb_winevent_translate(channel, id, message, status, stage, &a);
    check_effect(&a, message, id);
    gb_winevent_translate(channel, id, message, status, stage, &b);
    check(memcmp(&a, &b, sizeof(a)) == 0, "translation not deterministic");
    if (mode >= 1 && mode <= 6) {
        check(a.channel != GB_WCHAN_UNKNOWN, "a known channel name was not recognised");
    }

    /* The scanners on their own, over the whole text whatever the event. */
    uint32_t hr1 = 0, hr2 = 0;
    bool f1 = gb_winevent_find_hresult(message, &hr1);
    bool f2 = gb_winevent_find_hresult(message, &hr2);
    check(f1 == f2 && (!f1 || hr1 == hr2), "hresult scan not deterministic");
    check_phase(message);

    free(chan_mem);
    free(msg_mem);
    return 0;
}
