/* static: files under the web root for GET/HEAD requests no route matched, with content types,
 * ETags (If-None-Match -> 304), index.html for directories and safety headers.
 *
 * Containment: the path is normalised first (gb_http__static_path refuses dot segments, encoded
 * slashes, backslashes, NUL and hidden files), then opened with openat2(RESOLVE_BENEATH) on a
 * descriptor of the root, which the kernel enforces atomically for every component, symlinks
 * included. Where openat2 is missing (old kernels, some seccomp profiles) the path is resolved
 * with realpath() and must stay under the root's real path, and the final open refuses a
 * symlink (O_NOFOLLOW).
 *
 * Reading: files are read with blocking reads on the loop, but only when a file is first asked
 * for or has changed, only up to STATIC_MAX_FILE, and the content is then served from memory.
 * The web view is a handful of small files, so a read costs well under a millisecond once per
 * change; uv_fs round trips on every request would cost more than they save. A cached file is
 * trusted for ttl_ms, then checked with one fstatat() (identity, size, mtime) and reloaded if it
 * changed. The cache is bounded in bytes and entries (LRU). */
#define _GNU_SOURCE /* syscall(2) for openat2 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "http/internal.h"

#define STATIC_MAX_FILE       (8u << 20)
#define STATIC_MAX_TOTAL      (64u << 20)
#define STATIC_MAX_ENTRIES    4096
#define STATIC_MAX_PATH       1024
#define STATIC_DEFAULT_TTL_MS 1000
#define STATIC_BUCKETS        1024 /* power of two */

/* Sent with every static response. no-cache lets browsers keep a copy but revalidate it with
 * the ETag each time, so a new web view shows up at once. */
#define SAFETY_HEADERS                                                                      \
    "Cache-Control: no-cache\r\n"                                                           \
    "X-Content-Type-Options: nosniff\r\n"                                                   \
    "Content-Security-Policy: default-src 'self'; img-src 'self' data:; style-src 'self'; " \
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'\r\n"                     \
    "Referrer-Policy: no-referrer\r\n"                                                      \
    "X-Frame-Options: DENY\r\n"

typedef struct entry {
    char *key;  /* the normalised request path: "", "sub/", "app.js" */
    char *file; /* the file served, relative to the root: "index.html", "sub/index.html" */
    char *data;
    size_t size;
    const char *type;
    char *headers; /* "ETag: ...\r\n" + SAFETY_HEADERS */
    char etag[20]; /* a quoted strong tag from the content's SHA-256 */
    dev_t dev;
    ino_t ino;
    off_t st_size;
    struct timespec mtime;
    int64_t checked_ms;
    struct entry *hnext;
    struct entry *lru_prev, *lru_next; /* most recently used first */
} entry_t;

struct gb_http__static {
    char *root; /* realpath of the web dir */
    size_t root_len;
    int root_fd;
    bool use_openat2;
    unsigned ttl_ms;
    entry_t *buckets[STATIC_BUCKETS];
    entry_t *lru_head, *lru_tail;
    size_t nentries;
    size_t total_bytes;
};

static size_t hash_key(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h & (STATIC_BUCKETS - 1);
}

static int open_beneath_openat2(gb_http__static_t *st, const char *rel)
{
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, st->root_fd, rel[0] != '\0' ? rel : ".", &how, sizeof(how));
}

/* Opens rel (relative to the root) only if it resolves inside the root. O_NONBLOCK keeps a FIFO
 * planted in the web dir from blocking the loop; regular files ignore it. */
static int open_beneath(gb_http__static_t *st, const char *rel)
{
    if (st->use_openat2) {
        return open_beneath_openat2(st, rel);
    }
    char full[PATH_MAX];
    char resolved[PATH_MAX];
    size_t n = (size_t)snprintf(full, sizeof(full), "%s/%s", st->root, rel);
    if (n >= sizeof(full)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (realpath(full, resolved) == NULL) {
        return -1;
    }
    if (strncmp(resolved, st->root, st->root_len) != 0 ||
        (resolved[st->root_len] != '\0' && resolved[st->root_len] != '/')) {
        errno = EXDEV;
        return -1;
    }
    return open(resolved, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
}

gb_http__static_t *gb_http__static_new(const char *web_dir)
{
    char resolved[PATH_MAX];

    if (web_dir == NULL || web_dir[0] == '\0') {
        return NULL;
    }
    if (realpath(web_dir, resolved) == NULL) {
        gb_log(GB_LOG_WARN, "http", "web dir %s: %s; static files are off", web_dir,
               strerror(errno));
        return NULL;
    }
    int fd = open(resolved, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        gb_log(GB_LOG_WARN, "http", "web dir %s: %s; static files are off", web_dir,
               strerror(errno));
        return NULL;
    }
    gb_http__static_t *st = gb_xcalloc(1, sizeof(*st));
    st->root = gb_xstrdup(resolved);
    st->root_len = strlen(resolved);
    if (st->root_len == 1) {
        st->root_len = 0; /* the root is "/": every resolved path is under it */
    }
    st->root_fd = fd;
    st->ttl_ms = STATIC_DEFAULT_TTL_MS;
    st->use_openat2 = true;
    int probe = open_beneath_openat2(st, "");
    if (probe < 0) {
        st->use_openat2 = false;
        gb_log(GB_LOG_INFO, "http", "openat2 unavailable (%s); confining static files by realpath",
               strerror(errno));
    } else {
        close(probe);
    }
    return st;
}

static void entry_free(entry_t *e)
{
    free(e->key);
    free(e->file);
    free(e->data);
    free(e->headers);
    free(e);
}

static void lru_unlink(gb_http__static_t *st, entry_t *e)
{
    if (e->lru_prev != NULL) {
        e->lru_prev->lru_next = e->lru_next;
    } else {
        st->lru_head = e->lru_next;
    }
    if (e->lru_next != NULL) {
        e->lru_next->lru_prev = e->lru_prev;
    } else {
        st->lru_tail = e->lru_prev;
    }
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(gb_http__static_t *st, entry_t *e)
{
    e->lru_prev = NULL;
    e->lru_next = st->lru_head;
    if (st->lru_head != NULL) {
        st->lru_head->lru_prev = e;
    }
    st->lru_head = e;
    if (st->lru_tail == NULL) {
        st->lru_tail = e;
    }
}

static void entry_remove(gb_http__static_t *st, entry_t *e)
{
    entry_t **pp = &st->buckets[hash_key(e->key)];
    while (*pp != NULL && *pp != e) {
        pp = &(*pp)->hnext;
    }
    GB_ASSERT(*pp == e); /* every entry on the LRU list is in its bucket */
    *pp = e->hnext;
    lru_unlink(st, e);
    GB_ASSERT(st->lru_head != e && st->lru_tail != e);
    st->nentries--;
    st->total_bytes -= e->size;
    entry_free(e);
}

void gb_http__static_free(gb_http__static_t *st)
{
    if (st == NULL) {
        return;
    }
    while (st->lru_head != NULL) {
        entry_remove(st, st->lru_head);
    }
    close(st->root_fd);
    free(st->root);
    free(st);
}

void gb_http__static_set_ttl(gb_http__static_t *st, unsigned ttl_ms)
{
    if (st != NULL) {
        st->ttl_ms = ttl_ms;
    }
}

static entry_t *lookup(gb_http__static_t *st, const char *key)
{
    for (entry_t *e = st->buckets[hash_key(key)]; e != NULL; e = e->hnext) {
        if (strcmp(e->key, key) == 0) {
            return e;
        }
    }
    return NULL;
}

static bool same_file(const entry_t *e, const struct stat *sb)
{
    return e->dev == sb->st_dev && e->ino == sb->st_ino && e->st_size == sb->st_size &&
           e->mtime.tv_sec == sb->st_mtim.tv_sec && e->mtime.tv_nsec == sb->st_mtim.tv_nsec;
}

static bool read_all(int fd, char *buf, size_t size)
{
    size_t off = 0;
    while (off < size) {
        ssize_t n = pread(fd, buf + off, size - off, (off_t)off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        off += (size_t)n;
    }
    return true;
}

/* Percent-encodes a relative path for a Location header: everything but unreserved
 * characters, sub-delims that need no escaping in a path, and '/'. */
static void append_location(gb_buf_t *out, const char *rel)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)rel; *p != '\0'; p++) {
        unsigned char c = *p;
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     strchr("-._~/!$&'()*+,;=:@", c) != NULL;
        if (plain) {
            gb_buf_append(out, p, 1);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            gb_buf_append(out, esc, 3);
        }
    }
}

static void respond_not_found(gb_http_req_t *req)
{
    gb_http_respond_errorf(req, 404, "not_found", "no such file");
}

/* Outcome of loading a path from disk. */
typedef enum load_result {
    LOAD_OK,
    LOAD_NOT_FOUND,
    LOAD_REDIRECT, /* a directory asked for without its trailing slash */
} load_result_t;

static load_result_t load_entry(gb_http__static_t *st, const char *key, size_t key_len,
                                int64_t now_ms, entry_t **out)
{
    char file[STATIC_MAX_PATH + 16];
    struct stat sb;

    memcpy(file, key, key_len + 1);
    int fd = open_beneath(st, file);
    if (fd < 0) {
        if (errno == EXDEV || errno == ELOOP) {
            gb_log(GB_LOG_WARN, "http", "refused /%s: it leads out of the web root", key);
        }
        return LOAD_NOT_FOUND;
    }
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return LOAD_NOT_FOUND;
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        if (key_len > 0 && key[key_len - 1] != '/') {
            return LOAD_REDIRECT;
        }
        memcpy(file + key_len, "index.html", sizeof("index.html"));
        fd = open_beneath(st, file);
        if (fd < 0) {
            if (errno == EXDEV || errno == ELOOP) {
                gb_log(GB_LOG_WARN, "http", "refused /%s: it leads out of the web root", file);
            }
            return LOAD_NOT_FOUND;
        }
        if (fstat(fd, &sb) != 0) {
            close(fd);
            return LOAD_NOT_FOUND;
        }
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return LOAD_NOT_FOUND;
    }
    if ((uint64_t)sb.st_size > STATIC_MAX_FILE) {
        close(fd);
        gb_log(GB_LOG_WARN, "http", "refused /%s: %lld bytes is over the %u-byte static file limit",
               file, (long long)sb.st_size, STATIC_MAX_FILE);
        return LOAD_NOT_FOUND;
    }
    size_t size = (size_t)sb.st_size;
    char *data = gb_xmalloc(size + 1);
    bool ok = read_all(fd, data, size);
    close(fd);
    if (!ok) {
        free(data);
        gb_log(GB_LOG_WARN, "http", "reading /%s failed or it shrank while read", file);
        return LOAD_NOT_FOUND;
    }

    entry_t *e = gb_xcalloc(1, sizeof(*e));
    e->key = gb_xstrndup(key, key_len);
    e->file = gb_xstrdup(file);
    e->data = data;
    e->size = size;
    size_t flen = strlen(file);
    e->type = gb_http__content_type(file, flen);
    uint8_t digest[GB_SHA256_LEN];
    char hex[2 * GB_SHA256_LEN + 1];
    gb_sha256(data, size, digest);
    gb_hex_encode(digest, 8, hex);
    /* 64 bits of the digest are plenty to tell versions of one file apart. */
    e->etag[0] = '"';
    memcpy(e->etag + 1, hex, 16);
    e->etag[17] = '"';
    e->etag[18] = '\0';
    e->headers = gb_xasprintf("ETag: %s\r\n" SAFETY_HEADERS, e->etag);
    e->dev = sb.st_dev;
    e->ino = sb.st_ino;
    e->st_size = sb.st_size;
    e->mtime = sb.st_mtim;
    e->checked_ms = now_ms;

    /* Make room, oldest first; the new entry itself may be alone over the byte budget. */
    while (st->lru_tail != NULL &&
           (st->total_bytes + size > STATIC_MAX_TOTAL || st->nentries >= STATIC_MAX_ENTRIES)) {
        entry_remove(st, st->lru_tail);
    }
    size_t b = hash_key(e->key);
    e->hnext = st->buckets[b];
    st->buckets[b] = e;
    lru_push_front(st, e);
    st->nentries++;
    st->total_bytes += size;
    *out = e;
    return LOAD_OK;
}

void gb_http__static_serve(gb_http__static_t *st, gb_http_req_t *req, int64_t now_ms)
{
    char key[STATIC_MAX_PATH];
    size_t key_len = 0;
    gb_str_t raw_path, query;

    if (st == NULL) {
        respond_not_found(req);
        return;
    }
    if (!gb_http__split_target(req->target, &raw_path, &query)) {
        gb_http_respond_errorf(req, 400, "bad_request", "the request target is not a path");
        return;
    }
    int rc = gb_http__static_path(raw_path, key, sizeof(key), &key_len);
    if (rc == GB_HTTP_PATH_BAD) {
        gb_http_respond_errorf(req, 400, "bad_request", "the path is not allowed");
        return;
    }
    if (rc != GB_HTTP_PATH_OK) {
        respond_not_found(req);
        return;
    }

    entry_t *e = lookup(st, key);
    if (e != NULL && now_ms - e->checked_ms >= (int64_t)st->ttl_ms) {
        struct stat sb;
        if (fstatat(st->root_fd, e->file, &sb, 0) == 0 && S_ISREG(sb.st_mode) &&
            same_file(e, &sb)) {
            e->checked_ms = now_ms;
        } else {
            /* Changed, replaced or gone: load it again through the confined open. */
            entry_remove(st, e);
            e = NULL;
        }
    }
    if (e == NULL) {
        switch (load_entry(st, key, key_len, now_ms, &e)) {
        case LOAD_OK:
            break;
        case LOAD_REDIRECT: {
            gb_buf_t loc;
            gb_buf_init(&loc);
            gb_buf_append_str(&loc, "Location: /");
            append_location(&loc, key);
            gb_buf_append_str(&loc, "/\r\n");
            gb_http_respond(req, 301, NULL, loc.data, NULL, 0);
            gb_buf_dispose(&loc);
            return;
        }
        default:
            respond_not_found(req);
            return;
        }
    }
    if (e != st->lru_head) {
        lru_unlink(st, e);
        lru_push_front(st, e);
    }
    if (gb_http__etag_match(gb_http_req_header(req, "if-none-match"), e->etag)) {
        gb_http_respond(req, 304, NULL, e->headers, NULL, 0);
        return;
    }
    gb_http_respond(req, 200, e->type, e->headers, e->data, e->size);
}
