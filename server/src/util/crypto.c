/* crypto: SHA-256 and constant-time comparison from libcrypto, randomness from the OS
 * (getrandom(2)). Token secrets and audit hashes use these; nothing here is hand-rolled. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/random.h>

#include "util.h"

/* The digest is fetched from libcrypto once. SHA256(), like EVP_Digest() given EVP_sha256(),
 * fetches it from the provider tables again at every call, which costs more than hashing a token
 * (every request hashes its bearer token). Kept for the life of the process. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void gb_sha256(const void *data, size_t len, uint8_t out[GB_SHA256_LEN])
{
    int once = pthread_once(&sha256_once, sha256_fetch);
    GB_ASSERT(once == 0 && sha256_md != NULL);
    unsigned int n = 0;
    int ok = EVP_Digest(data, len, out, &n, sha256_md, NULL);
    GB_ASSERT(ok == 1 && n == GB_SHA256_LEN);
}

void gb_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int gb_hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool gb_hex_decode(const char *in, size_t len, uint8_t *out, size_t n)
{
    if (len != 2 * n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        int hi = gb_hex_value(in[2 * i]), lo = gb_hex_value(in[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

bool gb_random_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        p += got;
        n -= (size_t)got;
    }
    return true;
}

bool gb_const_time_eq(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}
