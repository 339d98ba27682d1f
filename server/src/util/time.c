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

static void put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

void gb_time_format_rfc3339(int64_t ms, char out[32])
{
    /* By hand rather than snprintf: the API's views format several times per device. Times of
     * one day share their date, so the last day's "YYYY-MM-DDT" is kept per thread. */
    static _Thread_local int64_t cached_day = INT64_MIN;
    static _Thread_local char cached_date[11];
    int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    unsigned rem_ms = (unsigned)(ms - secs * 1000);
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    unsigned sod = (unsigned)(secs - days * 86400);

    if (days != cached_day) {
        int y;
        unsigned m, d;
        civil_from_days(days, &y, &m, &d);
        if (y < 0 || y > 9999) {
            /* Outside RFC 3339's four-digit years: clamp rather than print a malformed time. */
            y = y < 0 ? 0 : 9999;
        }
        put2(cached_date, (unsigned)y / 100);
        put2(cached_date + 2, (unsigned)y % 100);
        cached_date[4] = '-';
        put2(cached_date + 5, m % 13u);
        cached_date[7] = '-';
        put2(cached_date + 8, d % 32u);
        cached_day = days;
    }
    memcpy(out, cached_date, 10);
    out[10] = 'T';
    put2(out + 11, sod / 3600 % 24u);
    out[13] = ':';
    put2(out + 14, sod / 60 % 60);
    out[16] = ':';
    put2(out + 17, sod % 60);
    out[19] = '.';
    out[20] = (char)('0' + rem_ms / 100 % 10);
    out[21] = (char)('0' + rem_ms / 10 % 10);
    out[22] = (char)('0' + rem_ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}
