/* ratelimit: failed token checks counted per peer address, so that a flood of 401s from one
 * address turns into cheap 429s. The table is a fixed array (no allocation, ever): an address
 * hashes to a home slot and lives within GB_API_AUTHLIMIT_PROBE slots of it; when they are all
 * taken, the entry touched longest ago among them is evicted. Windows are fixed: they start at
 * an address's first failure and are not extended by the 429s sent while they last. */
#include <stdio.h>
#include <string.h>

#include "api/internal.h"

typedef struct authlimit_entry {
    char addr[48];      /* the peer's address without its port; "" when the slot is free */
    int64_t window_ms;  /* monotonic start of the current window */
    int64_t touched_ms; /* monotonic time of the last failure or 429: the eviction order */
    uint32_t failures;  /* failed checks in the current window */
} authlimit_entry_t;

/* The server runs one api object on one loop thread: one table per process, in zeroed static
 * storage, so that its size is fixed at build time. */
static authlimit_entry_t table[GB_API_AUTHLIMIT_SLOTS];
static uint64_t limited_total;

/* "10.0.0.5:51234" -> "10.0.0.5", "[fe80::1]:443" -> "fe80::1". The port changes with every
 * connection, so it must not be part of the key. */
static void peer_address(const char *peer, char out[48])
{
    const char *start = peer;
    const char *end = strrchr(peer, ':');
    if (peer[0] == '[') {
        start = peer + 1;
        end = strchr(start, ']');
    }
    size_t len = end != NULL ? (size_t)(end - start) : strlen(start);
    if (len >= 48) {
        len = 47;
    }
    memcpy(out, start, len);
    out[len] = '\0';
}

/* FNV-1a: enough to spread addresses over the table; collisions only shorten probe chains. */
static size_t home_slot(const char *addr)
{
    uint32_t h = 2166136261u;
    for (const char *p = addr; *p != '\0'; p++) {
        h = (h ^ (uint8_t)*p) * 16777619u;
    }
    return h % GB_API_AUTHLIMIT_SLOTS;
}

static bool window_open(const authlimit_entry_t *e, int64_t now_ms)
{
    return e->addr[0] != '\0' && now_ms - e->window_ms < GB_API_AUTHLIMIT_WINDOW_MS;
}

/* The entry for addr, or NULL. An entry whose window has passed is freed on the way: it no
 * longer says anything. */
static authlimit_entry_t *find(const char *addr, int64_t now_ms)
{
    size_t home = home_slot(addr);
    for (size_t i = 0; i < GB_API_AUTHLIMIT_PROBE; i++) {
        authlimit_entry_t *e = &table[(home + i) % GB_API_AUTHLIMIT_SLOTS];
        if (e->addr[0] != '\0' && strcmp(e->addr, addr) == 0) {
            if (!window_open(e, now_ms)) {
                e->addr[0] = '\0';
                return NULL;
            }
            return e;
        }
    }
    return NULL;
}

unsigned gb_api__authlimit_check(const char *peer, int64_t now_ms)
{
    char addr[48];
    peer_address(peer, addr);
    authlimit_entry_t *e = find(addr, now_ms);
    if (e == NULL || e->failures < GB_API_AUTHLIMIT_FAILURES) {
        return 0;
    }
    e->touched_ms = now_ms;
    int64_t left_ms = e->window_ms + GB_API_AUTHLIMIT_WINDOW_MS - now_ms;
    return (unsigned)((left_ms + 999) / 1000); /* >= 1: the window is still open */
}

void gb_api__authlimit_fail(const char *peer, int64_t now_ms)
{
    char addr[48];
    peer_address(peer, addr);
    authlimit_entry_t *e = find(addr, now_ms);
    if (e == NULL) {
        /* A free or expired slot near home, else the one touched longest ago. */
        size_t home = home_slot(addr);
        for (size_t i = 0; i < GB_API_AUTHLIMIT_PROBE; i++) {
            authlimit_entry_t *c = &table[(home + i) % GB_API_AUTHLIMIT_SLOTS];
            if (!window_open(c, now_ms)) {
                e = c;
                break;
            }
            if (e == NULL || c->touched_ms < e->touched_ms) {
                e = c;
            }
        }
        memcpy(e->addr, addr, sizeof(e->addr));
        e->window_ms = now_ms;
        e->failures = 0;
    }
    e->touched_ms = now_ms;
    if (e->failures < UINT32_MAX) {
        e->failures++;
    }
}

bool gb_api__authlimit_token_shaped(gb_str_t token)
{
    static const char prefix[] = "gbt_";
    if (token.len != GB_AUTH_TOKEN_LEN || memcmp(token.p, prefix, sizeof(prefix) - 1) != 0) {
        return false;
    }
    for (size_t i = sizeof(prefix) - 1; i < token.len; i++) {
        char c = token.p[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok) {
            return false;
        }
    }
    return true;
}

void gb_api__authlimit_respond(gb_http_req_t *req, unsigned retry_after_s)
{
    char headers[64];
    limited_total++;
    snprintf(headers, sizeof(headers), "Retry-After: %u\r\n", retry_after_s);
    gb_error_t e;
    gb_buf_t body;
    gb_error_clear(&e);
    gb_error_set(&e, 429, "too_many_requests", NULL,
                 "too many failed token checks from this address; retry in %u s", retry_after_s);
    gb_buf_init(&body);
    gb_error_to_json(&e, &body);
    gb_http_respond(req, 429, "application/json", headers, body.data, body.len);
    gb_buf_dispose(&body);
}

void gb_api__authlimit_write_metrics(gb_buf_t *out)
{
    gb_buf_appendf(out,
                   "# HELP gb_auth_limited_total Requests refused with 429 after too many failed "
                   "token checks from their address.\n"
                   "# TYPE gb_auth_limited_total counter\ngb_auth_limited_total %llu\n",
                   (unsigned long long)limited_total);
}
