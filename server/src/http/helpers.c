/* helpers: the pure parts of HTTP handling: percent-decoding, request-target splitting, the
 * static-path check that keeps requests inside the web root, query lookup and redaction,
 * content types, ETag matching, status reasons. No I/O, no allocation beyond a caller's
 * buffer, so each is unit-tested and fuzzed on its own. */
#include <string.h>
#include <strings.h>

#include "http/http.h"
#include "http/internal.h"

const char *gb_http_method_name(gb_http_method_t m)
{
    switch (m) {
    case GB_HTTP_GET:
        return "GET";
    case GB_HTTP_HEAD:
        return "HEAD";
    case GB_HTTP_POST:
        return "POST";
    case GB_HTTP_PUT:
        return "PUT";
    case GB_HTTP_DELETE:
        return "DELETE";
    case GB_HTTP_PATCH:
        return "PATCH";
    case GB_HTTP_OPTIONS:
        return "OPTIONS";
    default:
        return "OTHER";
    }
}

gb_http_method_t gb_http__method_from_llhttp(uint8_t m)
{
    switch (m) {
    case HTTP_GET:
        return GB_HTTP_GET;
    case HTTP_HEAD:
        return GB_HTTP_HEAD;
    case HTTP_POST:
        return GB_HTTP_POST;
    case HTTP_PUT:
        return GB_HTTP_PUT;
    case HTTP_DELETE:
        return GB_HTTP_DELETE;
    case HTTP_PATCH:
        return GB_HTTP_PATCH;
    case HTTP_OPTIONS:
        return GB_HTTP_OPTIONS;
    default:
        return GB_HTTP_OTHER;
    }
}

const char *gb_http_status_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        break;
    }
    /* An unknown code still gets its class's name, so the status line is never empty. */
    if (status >= 100 && status < 200) {
        return "Informational";
    }
    if (status >= 200 && status < 300) {
        return "Success";
    }
    if (status >= 300 && status < 400) {
        return "Redirection";
    }
    if (status >= 400 && status < 500) {
        return "Client Error";
    }
    return "Server Error";
}

long gb_http__pct_decode(const char *in, size_t len, char *out, bool plus_is_space)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            if (i + 2 >= len) {
                return -1;
            }
            int hi = gb_hex_value(in[i + 1]);
            int lo = gb_hex_value(in[i + 2]);
            if (hi < 0 || lo < 0) {
                return -1;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out[o++] = ' ';
        } else {
            out[o++] = (char)c;
        }
    }
    return (long)o;
}

bool gb_http__split_target(gb_str_t target, gb_str_t *path, gb_str_t *query)
{
    if (target.p == NULL || target.len == 0) {
        return false;
    }
    const char *p = target.p;
    const char *end = target.p + target.len;

    if (p[0] != '/') {
        /* absolute-form: servers must accept it (RFC 9112 section 3.2.2); the host is ignored
         * because this server has one site. */
        size_t skip;
        if (target.len >= 7 && strncasecmp(p, "http://", 7) == 0) {
            skip = 7;
        } else if (target.len >= 8 && strncasecmp(p, "https://", 8) == 0) {
            skip = 8;
        } else {
            return false;
        }
        p += skip;
        while (p < end && *p != '/' && *p != '?' && *p != '#') {
            p++;
        }
        if (p == end || *p != '/') {
            /* "http://host" or "http://host?x": the path is "/". */
            static const char slash[] = "/";
            const char *q = p;
            *path = (gb_str_t){slash, 1};
            if (q < end && *q == '?') {
                const char *h = memchr(q, '#', (size_t)(end - q));
                *query = (gb_str_t){q + 1, (size_t)((h != NULL ? h : end) - q - 1)};
            } else {
                *query = (gb_str_t){q, 0};
            }
            return true;
        }
    }
    const char *hash = memchr(p, '#', (size_t)(end - p));
    if (hash != NULL) {
        end = hash;
    }
    const char *qm = memchr(p, '?', (size_t)(end - p));
    if (qm != NULL) {
        *path = (gb_str_t){p, (size_t)(qm - p)};
        *query = (gb_str_t){qm + 1, (size_t)(end - qm - 1)};
    } else {
        *path = (gb_str_t){p, (size_t)(end - p)};
        *query = (gb_str_t){end, 0};
    }
    return true;
}

int gb_http__static_path(gb_str_t raw_path, char *out, size_t outsz, size_t *outlen)
{
    size_t o = 0;
    size_t i = 0;
    const char *s = raw_path.p;
    size_t n = raw_path.len;

    if (n == 0 || s[0] != '/' || outsz == 0) {
        return GB_HTTP_PATH_BAD;
    }
    while (i < n) {
        /* One segment at a time: skip the slashes, then decode up to the next raw '/'. Decoding
         * per segment is what makes "%2f" visible: it must never become a separator. */
        while (i < n && s[i] == '/') {
            i++;
        }
        if (i == n) {
            break;
        }
        size_t seg_start = o;
        while (i < n && s[i] != '/') {
            unsigned char c = (unsigned char)s[i];
            if (c == '%') {
                if (i + 2 >= n) {
                    return GB_HTTP_PATH_BAD;
                }
                int hi = gb_hex_value(s[i + 1]);
                int lo = gb_hex_value(s[i + 2]);
                if (hi < 0 || lo < 0) {
                    return GB_HTTP_PATH_BAD;
                }
                c = (unsigned char)(hi * 16 + lo);
                i += 3;
            } else {
                i++;
            }
            if (c == '/' || c == '\\' || c < 0x20 || c == 0x7f) {
                return GB_HTTP_PATH_BAD;
            }
            if (o + 2 >= outsz) {
                return GB_HTTP_PATH_BAD;
            }
            out[o++] = (char)c;
        }
        size_t seg_len = o - seg_start;
        const char *seg = out + seg_start;
        if ((seg_len == 1 && seg[0] == '.') || (seg_len == 2 && seg[0] == '.' && seg[1] == '.')) {
            return GB_HTTP_PATH_BAD;
        }
        if (seg[0] == '.') {
            return GB_HTTP_PATH_HIDDEN;
        }
        if (i < n) {
            /* A raw '/' follows: keep one, whether more segments follow or it is trailing. */
            out[o++] = '/';
        }
    }
    /* Collapsing "//" may have left a trailing slash only when the raw path ended with one. */
    out[o] = '\0';
    *outlen = o;
    return GB_HTTP_PATH_OK;
}

bool gb_http__query_find(gb_str_t query, const char *name, gb_str_t *raw_value)
{
    if (query.p == NULL) {
        return false;
    }
    size_t name_len = strlen(name);
    const char *p = query.p;
    const char *end = query.p + query.len;
    char key[128];

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        const char *key_end = eq != NULL ? eq : pair_end;
        size_t klen = (size_t)(key_end - p);
        /* Compare decoded keys, so "access%5Ftoken" is the same name as "access_token". */
        if (klen > 0 && klen < sizeof(key)) {
            long dl = gb_http__pct_decode(p, klen, key, true);
            if (dl == (long)name_len && memcmp(key, name, name_len) == 0) {
                if (eq != NULL) {
                    *raw_value = (gb_str_t){eq + 1, (size_t)(pair_end - eq - 1)};
                } else {
                    *raw_value = (gb_str_t){pair_end, 0};
                }
                return true;
            }
        }
        p = pair_end + (amp != NULL ? 1 : 0);
    }
    return false;
}

void gb_http__query_redact(gb_str_t query, gb_buf_t *out)
{
    if (query.p == NULL) {
        return;
    }
    const char *p = query.p;
    const char *end = query.p + query.len;
    char key[128];

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        const char *key_end = eq != NULL ? eq : pair_end;
        size_t klen = (size_t)(key_end - p);
        long dl = klen < sizeof(key) ? gb_http__pct_decode(p, klen, key, true) : -1;
        /* A key too long or malformed to decode is kept whole but its value is still hidden if
         * it could spell access_token; the only such keys are the ones we can decode. */
        bool secret = dl == 12 && memcmp(key, "access_token", 12) == 0;
        if (secret) {
            gb_buf_append(out, p, klen);
            gb_buf_append_str(out, "=REDACTED");
        } else {
            gb_buf_append(out, p, (size_t)(pair_end - p));
        }
        if (amp != NULL) {
            gb_buf_append(out, "&", 1);
        }
        p = pair_end + (amp != NULL ? 1 : 0);
    }
}

const char *gb_http__content_type(const char *name, size_t len)
{
    static const struct {
        const char *ext;
        const char *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"ico", "image/x-icon"},
        {"txt", "text/plain; charset=utf-8"},
        {"woff2", "font/woff2"},
        {"webmanifest", "application/manifest+json"},
    };
    const char *dot = NULL;

    for (size_t i = len; i > 0; i--) {
        if (name[i - 1] == '.') {
            dot = name + i;
            break;
        }
        if (name[i - 1] == '/') {
            break;
        }
    }
    if (dot != NULL) {
        size_t elen = (size_t)(name + len - dot);
        for (size_t i = 0; i < GB_ARRAY_LEN(types); i++) {
            if (strlen(types[i].ext) == elen && strncasecmp(dot, types[i].ext, elen) == 0) {
                return types[i].type;
            }
        }
    }
    return "application/octet-stream";
}

bool gb_http__etag_match(gb_str_t inm, const char *etag)
{
    if (inm.p == NULL) {
        return false;
    }
    size_t elen = strlen(etag);
    const char *p = inm.p;
    const char *end = inm.p + inm.len;

    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }
        if (p == end) {
            break;
        }
        if (*p == '*') {
            return true;
        }
        if (end - p >= 2 && p[0] == 'W' && p[1] == '/') {
            p += 2;
        }
        if (p == end || *p != '"') {
            /* Not an entity-tag: skip to the next list element. */
            while (p < end && *p != ',') {
                p++;
            }
            continue;
        }
        const char *close = memchr(p + 1, '"', (size_t)(end - p - 1));
        if (close == NULL) {
            return false;
        }
        size_t tlen = (size_t)(close - p) + 1;
        if (tlen == elen && memcmp(p, etag, elen) == 0) {
            return true;
        }
        p = close + 1;
    }
    return false;
}

bool gb_http_req_etag_matches(const gb_http_req_t *req, const char *etag)
{
    return gb_http__etag_match(gb_http_req_header(req, "if-none-match"), etag);
}

void gb_http__prom_label(gb_buf_t *out, const char *s)
{
    gb_buf_append(out, "\"", 1);
    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"') {
            char esc[2] = {'\\', *s};
            gb_buf_append(out, esc, 2);
        } else if (*s == '\n') {
            gb_buf_append(out, "\\n", 2);
        } else {
            gb_buf_append(out, s, 1);
        }
    }
    gb_buf_append(out, "\"", 1);
}
