/* conninfo: turns the user's connection string (URI or key=value) into the keyword/value
 * arrays libpq's *Params functions take, so our own settings can be merged in without
 * re-quoting, and keeps passwords out of everything we log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/internal.h"

void gb_pg__copy_message(char *out, size_t outlen, const char *msg)
{
    size_t n = 0;
    bool space = false;

    if (outlen == 0) {
        return;
    }
    /* libpq messages span lines ("...failed: ...\n\tIs the server running...\n"): fold them
     * into one line with single spaces so a log line or an error field stays one line. */
    for (const char *p = msg != NULL ? msg : ""; *p != '\0' && n + 1 < outlen; p++) {
        char ch = *p;
        if (ch == '\n' || ch == '\t' || ch == '\r' || ch == ' ') {
            space = n > 0;
            continue;
        }
        if (space) {
            if (n + 2 >= outlen) {
                break;
            }
            out[n++] = ' ';
            space = false;
        }
        out[n++] = ch;
    }
    out[n] = '\0';
}

/* Finds the passwords a conninfo may carry: "password=..." in key=value form or as a URI
 * query parameter, and the part after ':' in a URI's user info. Each is reported as a slice
 * of conninfo itself, raw (not unquoted or percent-decoded), because that raw text is what a
 * parse error quotes back. */
static size_t find_secrets(const char *conninfo, gb_str_t *out, size_t max)
{
    size_t n = 0;
    const char *p = conninfo;

    if (strncmp(p, "postgresql://", 13) == 0 || strncmp(p, "postgres://", 11) == 0) {
        const char *auth = strstr(p, "://") + 3;
        size_t span = strcspn(auth, "/?");
        const char *at = memchr(auth, '@', span);
        if (at != NULL) {
            const char *colon = memchr(auth, ':', (size_t)(at - auth));
            if (colon != NULL && n < max) {
                out[n++] = (gb_str_t){colon + 1, (size_t)(at - colon - 1)};
            }
        }
    }
    while ((p = strstr(p, "password")) != NULL && n < max) {
        p += 8;
        while (*p == ' ') {
            p++;
        }
        if (*p != '=') {
            continue;
        }
        p++;
        while (*p == ' ') {
            p++;
        }
        const char *start = p;
        if (*p == '\'') {
            start = ++p;
            while (*p != '\0' && *p != '\'') {
                p += (*p == '\\' && p[1] != '\0') ? 2 : 1;
            }
        } else {
            p += strcspn(p, " &#");
        }
        out[n++] = (gb_str_t){start, (size_t)(p - start)};
    }
    return n;
}

void gb_pg__redact(const char *conninfo, const char *msg, char *out, size_t outlen)
{
    gb_str_t secrets[8];
    size_t nsecrets = find_secrets(conninfo != NULL ? conninfo : "", secrets, 8);
    gb_buf_t b;

    gb_buf_init(&b);
    for (const char *p = msg; *p != '\0';) {
        bool hit = false;
        for (size_t i = 0; i < nsecrets; i++) {
            if (secrets[i].len == 0) {
                continue;
            }
            if (strncmp(p, secrets[i].p, secrets[i].len) == 0) {
                gb_buf_append_str(&b, "***");
                p += secrets[i].len;
                hit = true;
                break;
            }
        }
        if (!hit) {
            gb_buf_append(&b, p, 1);
            p++;
        }
    }
    gb_pg__copy_message(out, outlen, b.data);
    gb_buf_dispose(&b);
}

static void params_append(gb_pg__params_t *p, const char *keyword, const char *value)
{
    /* One spare slot for the NULL terminators. */
    if (p->n + 2 > p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->keywords = gb_xrealloc(p->keywords, p->cap * sizeof(char *));
        p->values = gb_xrealloc(p->values, p->cap * sizeof(char *));
    }
    p->keywords[p->n] = gb_xstrdup(keyword);
    p->values[p->n] = gb_xstrdup(value);
    p->n++;
    p->keywords[p->n] = NULL;
    p->values[p->n] = NULL;
}

int gb_pg__params_init(gb_pg__params_t *p, const char *conninfo, char *err, size_t errlen)
{
    char *msg = NULL;

    memset(p, 0, sizeof(*p));
    PQconninfoOption *opts = PQconninfoParse(conninfo != NULL ? conninfo : "", &msg);
    if (opts == NULL) {
        gb_pg__redact(conninfo, msg != NULL ? msg : "out of memory", err, errlen);
        PQfreemem(msg);
        return GB_EINVAL;
    }
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val != NULL) {
            params_append(p, o->keyword, o->val);
        }
    }
    PQconninfoFree(opts);
    /* Name ourselves in pg_stat_activity unless the user chose a name. */
    if (gb_pg__params_get(p, "fallback_application_name") == NULL) {
        params_append(p, "fallback_application_name", "gloveboxd");
    }

    /* What we log to say which database we mean; unset parts come from libpq's defaults. */
    const char *host = gb_pg__params_get(p, "host");
    if (host == NULL) {
        host = gb_pg__params_get(p, "hostaddr");
    }
    const char *port = gb_pg__params_get(p, "port");
    const char *dbname = gb_pg__params_get(p, "dbname");
    const char *user = gb_pg__params_get(p, "user");
    snprintf(p->target, sizeof(p->target), "host=%s port=%s dbname=%s user=%s",
             host != NULL ? host : "(default)", port != NULL ? port : "(default)",
             dbname != NULL ? dbname : "(default)", user != NULL ? user : "(default)");
    return 0;
}

void gb_pg__params_dispose(gb_pg__params_t *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->keywords[i]);
        free(p->values[i]);
    }
    free(p->keywords);
    free(p->values);
    memset(p, 0, sizeof(*p));
}

const char *gb_pg__params_get(const gb_pg__params_t *p, const char *keyword)
{
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->keywords[i], keyword) == 0) {
            return p->values[i];
        }
    }
    return NULL;
}

void gb_pg__params_set(gb_pg__params_t *p, const char *keyword, const char *value)
{
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->keywords[i], keyword) == 0) {
            free(p->values[i]);
            p->values[i] = gb_xstrdup(value);
            return;
        }
    }
    params_append(p, keyword, value);
}

void gb_pg__params_add_statement_timeout(gb_pg__params_t *p, unsigned timeout_ms)
{
    const char *user = gb_pg__params_get(p, "options");
    char *options;

    /* Later -c switches win in the backend, so ours goes last: the watchdog in pg_conn.c is
     * sized from the same setting and must agree with the server. */
    if (user != NULL && user[0] != '\0') {
        options = gb_xasprintf("%s -c statement_timeout=%u", user, timeout_ms);
    } else {
        options = gb_xasprintf("-c statement_timeout=%u", timeout_ms);
    }
    gb_pg__params_set(p, "options", options);
    free(options);
}

void gb_pg_conninfo_describe(const char *conninfo, char *out, size_t outlen)
{
    gb_pg__params_t p;
    char err[256];
    if (gb_pg__params_init(&p, conninfo, err, sizeof(err)) < 0) {
        snprintf(out, outlen, "unparsable conninfo: %s", err);
        return;
    }
    snprintf(out, outlen, "%s", p.target);
    gb_pg__params_dispose(&p);
}
