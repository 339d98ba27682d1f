/* time: wall and monotonic clocks, and RFC 3339 parsing/formatting in UTC milliseconds.
 * Parsing is strict (RFC 3339 section 5.6) and uses no locale or TZ environment. */
#include <stdio.h>
#include <time.h>

#include "util.h"

int64_t gb_time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t gb_time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

static bool digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool is_leap(unsigned y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

bool gb_time_parse_rfc3339(const char *s, size_t len, int64_t *out_ms)
{
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h, mi, sec, ms = 0;
    size_t i = 19;
    int64_t offset_min = 0;

    if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        s[13] != ':' || s[16] != ':') {
        return false;
    }
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) ||
        !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &sec)) {
        return false;
    }
    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60) {
        return false;
    }
    if (d > mdays[mo - 1] + (mo == 2 && is_leap(y) ? 1 : 0)) {
        return false;
    }
    if (s[i] == '.') {
        size_t start = ++i;
        unsigned scale = 100;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            ms += (unsigned)(s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == start || i - start > 9) {
            return false;
        }
    }
    if (i >= len) {
        return false;
    }
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        unsigned oh, om;
        if (len - i != 6 || s[i + 3] != ':' || !digits(s + i + 1, 2, &oh) ||
            !digits(s + i + 4, 2, &om) || oh > 23 || om > 59) {
            return false;
        }
        offset_min = (int64_t)oh * 60 + om;
        if (s[i] == '-') {
            offset_min = -offset_min;
        }
        i += 6;
    } else {
        return false;
    }
    if (i != len) {
        return false;
    }
    /* A leap second is folded into the next second's start. */
    int64_t secs = days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + mi * 60 + sec;
    *out_ms = (secs - offset_min * 60) * 1000 + ms;
    return true;
}

void gb_time_format_rfc3339(int64_t ms, char out[32])
{
    int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    int64_t rem_ms = ms - secs * 1000;
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int64_t sod = secs - days * 86400;
    int y;
    unsigned m, d;

    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999) {
        /* Outside RFC 3339's four-digit years: clamp rather than print a malformed time. */
        y = y < 0 ? 0 : 9999;
    }
    /* By hand rather than snprintf: the API's views format several times per device. */
    unsigned f[] = {(unsigned)y,
                    m % 13u,
                    d % 32u,
                    (unsigned)(sod / 3600) % 24u,
                    (unsigned)(sod / 60 % 60),
                    (unsigned)(sod % 60),
                    (unsigned)rem_ms % 1000u};
    static const char seps[] = "--T::.Z";
    static const unsigned widths[] = {4, 2, 2, 2, 2, 2, 3};
    size_t o = 0;
    for (size_t i = 0; i < sizeof(widths) / sizeof(widths[0]); i++) {
        for (unsigned w = widths[i]; w > 0; w--) {
            out[o + w - 1] = (char)('0' + f[i] % 10);
            f[i] /= 10;
        }
        o += widths[i];
        out[o++] = seps[i];
    }
    out[o] = '\0';
}
