/* profile: the rules a profile's settings must follow, checked before anything is stored: the
 * name (a URL segment), the tenant's DNS domain, the group tag, the assigned user's UPN and the
 * device-name template as Windows applies it (15 characters, letters, digits and hyphens, never
 * all digits, %SERIAL% and %RAND:n%). Pure functions of their arguments. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "domain/domain.h"

static const char *const join_ids[] = {
    [GB_JOIN_AZURE_AD] = "azure_ad",
    [GB_JOIN_HYBRID] = "hybrid",
};

const char *gb_join_id(gb_join_t join)
{
    if ((unsigned)join >= GB_ARRAY_LEN(join_ids)) {
        return "";
    }
    return join_ids[join];
}

bool gb_join_parse(gb_str_t id, gb_join_t *out)
{
    for (size_t i = 0; i < GB_ARRAY_LEN(join_ids); i++) {
        if (gb_str_eq_cstr(id, join_ids[i])) {
            *out = (gb_join_t)i;
            return true;
        }
    }
    return false;
}

/* Writes the reason into why (when given) and returns false, so checks end in one line. */
static bool refuse(char *why, size_t why_len, const char *fmt, ...) GB_PRINTF(3, 4);

static bool refuse(char *why, size_t why_len, const char *fmt, ...)
{
    if (why != NULL && why_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return false;
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_alpha(c) || is_digit(c);
}

bool gb_profile_name_check(const char *s, char *why, size_t why_len)
{
    size_t n = strlen(s);
    bool only_dots = true;

    if (n == 0 || n > GB_PROFILE_NAME_MAX) {
        return refuse(why, why_len, "must be 1 to %d characters long", GB_PROFILE_NAME_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-') {
            return refuse(why, why_len,
                          "may hold only letters, digits, dots, underscores and hyphens");
        }
        only_dots = only_dots && c == '.';
    }
    /* "." and ".." are path segments that clients and proxies rewrite before they arrive. */
    if (only_dots) {
        return refuse(why, why_len, "must not be made of dots only");
    }
    return true;
}

/* A DNS name of two labels or more, at most max bytes. */
static bool check_domain(const char *s, size_t max, char *why, size_t why_len)
{
    size_t n = strlen(s);
    size_t labels = 0;

    if (n == 0 || n > max) {
        return refuse(why, why_len, "must be 1 to %zu characters long", max);
    }
    for (size_t start = 0; start <= n;) {
        size_t end = start;
        bool all_digits = true;
        while (end < n && s[end] != '.') {
            char c = s[end];
            if (!is_alnum(c) && c != '-') {
                return refuse(why, why_len,
                              "may hold only letters, digits, hyphens and dots (an "
                              "internationalised name goes in its xn-- form)");
            }
            all_digits = all_digits && is_digit(c);
            end++;
        }
        size_t len = end - start;
        if (len == 0) {
            return refuse(why, why_len,
                          "has an empty label (two dots in a row, or a dot at either end)");
        }
        if (len > 63) {
            return refuse(why, why_len, "has a label longer than 63 characters");
        }
        if (s[start] == '-' || s[end - 1] == '-') {
            return refuse(why, why_len, "has a label that begins or ends with a hyphen");
        }
        labels++;
        /* A numeric top-level label is what an IP address looks like; no TLD is numeric. */
        if (end == n && all_digits) {
            return refuse(why, why_len, "must be a domain name, not an address");
        }
        start = end + 1;
    }
    if (labels < 2) {
        return refuse(why, why_len, "must be a full domain name (contoso.com)");
    }
    return true;
}

bool gb_tenant_domain_check(const char *s, char *why, size_t why_len)
{
    return check_domain(s, GB_TENANT_DOMAIN_MAX, why, why_len);
}

/* Decodes one UTF-8 sequence at s[i] (n bytes in all); returns its length, or 0 when it is not
 * valid UTF-8 (overlong forms, surrogates and values above U+10FFFF included). */
static size_t utf8_next(const unsigned char *s, size_t i, size_t n, uint32_t *cp)
{
    unsigned char c = s[i];
    size_t len;
    uint32_t v, min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2;
        v = c & 0x1Fu;
        min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        v = c & 0x0Fu;
        min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        v = c & 0x07u;
        min = 0x10000;
    } else {
        return 0;
    }
    if (i + len > n) {
        return 0;
    }
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) {
            return 0;
        }
        v = (v << 6) | (s[i + k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        return 0;
    }
    *cp = v;
    return len;
}

static bool is_space_cp(uint32_t cp)
{
    return cp == ' ' || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}

bool gb_group_tag_check(const char *s, char *why, size_t why_len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    size_t chars = 0;
    uint32_t cp = 0;

    if (n == 0) {
        return refuse(why, why_len, "must not be empty");
    }
    for (size_t i = 0; i < n;) {
        size_t len = utf8_next(u, i, n, &cp);
        if (len == 0) {
            return refuse(why, why_len, "is not valid UTF-8");
        }
        /* C0, DEL and C1 controls: invisible in every list and a CSV line's end in disguise. */
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) {
            return refuse(why, why_len, "must not hold control characters");
        }
        /* Leading or trailing blanks would make two tags that look the same select different
         * profiles. */
        if (i == 0 && is_space_cp(cp)) {
            return refuse(why, why_len, "must not begin or end with white space");
        }
        chars++;
        i += len;
    }
    if (is_space_cp(cp)) {
        return refuse(why, why_len, "must not begin or end with white space");
    }
    if (chars > GB_GROUP_TAG_MAX) {
        return refuse(why, why_len, "must be at most %d characters long", GB_GROUP_TAG_MAX);
    }
    return true;
}

bool gb_assigned_user_check(const char *s, char *why, size_t why_len)
{
    const char *at = strchr(s, '@');
    if (at == NULL || strchr(at + 1, '@') != NULL) {
        return refuse(why, why_len, "must be a user principal name (user@contoso.com)");
    }
    size_t local = (size_t)(at - s);
    if (local == 0 || local > GB_UPN_LOCAL_MAX) {
        return refuse(why, why_len, "must have 1 to %d characters before the @", GB_UPN_LOCAL_MAX);
    }
    for (size_t i = 0; i < local; i++) {
        char c = s[i];
        if (!is_alnum(c) && strchr("'._!#^~-", c) == NULL) {
            return refuse(why, why_len,
                          "may hold only letters, digits and ' . - _ ! # ^ ~ before the @");
        }
        if (c == '.' && (i == 0 || i == local - 1 || s[i - 1] == '.')) {
            return refuse(why, why_len,
                          "must not have a dot at either end of the part before the @, or two "
                          "dots in a row");
        }
    }
    char dwhy[128];
    if (!check_domain(at + 1, GB_UPN_DOMAIN_MAX, dwhy, sizeof(dwhy))) {
        return refuse(why, why_len, "has a domain after the @ that %s", dwhy);
    }
    return true;
}

#define MACRO_SERIAL "%SERIAL%"
#define MACRO_RAND   "%RAND:"

bool gb_name_template_check(const char *s, gb_name_template_t *out, char *why, size_t why_len)
{
    gb_name_template_t t = {0};
    bool has_rand = false;
    bool non_digit = false;
    size_t n = strlen(s);

    if (n == 0) {
        return refuse(why, why_len, "must not be empty (use null for no template)");
    }
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c != '%') {
            if (!is_alnum(c) && c != '-') {
                return refuse(why, why_len,
                              "may hold only letters, digits, hyphens and the macros %%SERIAL%% "
                              "and %%RAND:n%%");
            }
            non_digit = non_digit || !is_digit(c);
            t.fixed++;
            i++;
            continue;
        }
        if (strncmp(s + i, MACRO_SERIAL, strlen(MACRO_SERIAL)) == 0) {
            if (t.serial) {
                return refuse(why, why_len, "may use %%SERIAL%% only once");
            }
            t.serial = true;
            i += strlen(MACRO_SERIAL);
            continue;
        }
        if (strncmp(s + i, MACRO_RAND, strlen(MACRO_RAND)) == 0) {
            size_t d = i + strlen(MACRO_RAND);
            unsigned digits = 0;
            size_t k = d;
            while (k < n && is_digit(s[k]) && k - d < 2) {
                digits = digits * 10 + (unsigned)(s[k] - '0');
                k++;
            }
            if (k == d || k >= n || s[k] != '%' || digits < 1 || digits > GB_DEVICE_NAME_MAX) {
                return refuse(why, why_len,
                              "has a %%RAND:n%% whose n is not a number of digits "
                              "from 1 to %d",
                              GB_DEVICE_NAME_MAX);
            }
            if (has_rand) {
                return refuse(why, why_len, "may use %%RAND:n%% only once");
            }
            has_rand = true;
            t.rand_digits = digits;
            i = k + 1;
            continue;
        }
        return refuse(why, why_len,
                      "has a %% that starts neither %%SERIAL%% nor %%RAND:n%% (macros are "
                      "upper-case)");
    }
    if (!t.serial && !has_rand) {
        return refuse(why, why_len,
                      "must hold %%SERIAL%% or %%RAND:n%%, or every device gets the same name");
    }
    unsigned used = t.fixed + t.rand_digits;
    if (t.serial) {
        if (used + 1 > GB_DEVICE_NAME_MAX) {
            return refuse(why, why_len,
                          "leaves no room for the serial: %u fixed characters and random digits, "
                          "and a name holds at most %d",
                          used, GB_DEVICE_NAME_MAX);
        }
        t.serial_room = GB_DEVICE_NAME_MAX - used;
    } else if (used > GB_DEVICE_NAME_MAX) {
        return refuse(why, why_len, "makes names of %u characters; Windows allows at most %d", used,
                      GB_DEVICE_NAME_MAX);
    }
    if (!non_digit) {
        return refuse(why, why_len,
                      "could make a name of digits only, which Windows refuses: add a letter or "
                      "a hyphen");
    }
    if (out != NULL) {
        *out = t;
    }
    return true;
}

int gb_profile_validate(const gb_profile_t *p, gb_error_t *err)
{
    char why[160];

#define FIELD_ERROR(field)                                                     \
    do {                                                                       \
        gb_error_set(err, 400, "invalid_request", field, "%s %s", field, why); \
        return GB_EINVAL;                                                      \
    } while (0)

    if (!gb_profile_name_check(p->name, why, sizeof(why))) {
        FIELD_ERROR("name");
    }
    if (!gb_tenant_domain_check(p->tenant_domain, why, sizeof(why))) {
        FIELD_ERROR("tenant_domain");
    }
    if (gb_join_id(p->join)[0] == '\0') {
        snprintf(why, sizeof(why), "must be \"azure_ad\" or \"hybrid\"");
        FIELD_ERROR("join");
    }
    if (p->device_name_template != NULL &&
        !gb_name_template_check(p->device_name_template, NULL, why, sizeof(why))) {
        FIELD_ERROR("device_name_template");
    }
    if (!gb_group_tag_check(p->group_tag, why, sizeof(why))) {
        FIELD_ERROR("group_tag");
    }
    if (p->assigned_user != NULL && !gb_assigned_user_check(p->assigned_user, why, sizeof(why))) {
        FIELD_ERROR("assigned_user");
    }
    if (p->esp_timeout_min < 1 || p->esp_timeout_min > GB_ESP_TIMEOUT_MAX_MIN) {
        snprintf(why, sizeof(why), "must be a whole number of minutes from 1 to %d",
                 GB_ESP_TIMEOUT_MAX_MIN);
        FIELD_ERROR("esp_timeout_min");
    }
#undef FIELD_ERROR
    return 0;
}

static char fold(char c)
{
    static const char lower[] = "abcdefghijklmnopqrstuvwxyz";
    if (c >= 'A' && c <= 'Z') {
        return lower[c - 'A'];
    }
    return c;
}

bool gb_group_tag_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return false;
    }
    while (*a != '\0' && fold(*a) == fold(*b)) {
        a++;
        b++;
    }
    return *a == '\0' && *b == '\0';
}

void gb_group_tag_fold(char *s)
{
    for (; *s != '\0'; s++) {
        *s = fold(*s);
    }
}
