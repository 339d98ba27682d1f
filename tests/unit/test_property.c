/* test_property: arrival order does not matter. For every scenario's message sequence, batches
 * of its messages arrive shuffled and duplicated; the server model (a store of seqs, batches
 * prepared by gb_msg_batch_prepare, a rebuild from the sorted store whenever a lower seq is new)
 * must never crash, never lose a message, and end in exactly the state the sorted sequence
 * gives. Seeded, bounded iterations (GB_PROPERTY_ROUNDS overrides the count per sequence). */
#include "test_domain_support.h"

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* xorshift64*: small, fast and good enough to shuffle test input. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t rng_below(size_t n)
{
    return (size_t)(rng_next() % n);
}

/* The scenario's messages, one per seq (the first in file order), sorted by seq. */
static size_t unique_sequence(const th_scenario_t *sc, gb_msg_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < sc->n_steps; i++) {
        if (sc->steps[i].kind != TH_MSG) {
            continue;
        }
        bool seen = false;
        for (size_t k = 0; k < n; k++) {
            seen = seen || out[k].seq == sc->steps[i].msg.seq;
        }
        if (!seen) {
            out[n++] = sc->steps[i].msg;
        }
    }
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && out[j - 1].seq > out[j].seq; j--) {
            gb_msg_t t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    }
    return n;
}

static bool has_retry(const th_scenario_t *sc)
{
    for (size_t i = 0; i < sc->n_steps; i++) {
        if (sc->steps[i].kind == TH_RETRY) {
            return true;
        }
    }
    return false;
}

static int rounds(void)
{
    const char *env = getenv("GB_PROPERTY_ROUNDS");
    int n = env != NULL ? atoi(env) : 0;
    return n > 0 ? n : 40;
}

static void run_property(const char *file, size_t *total_rounds, size_t *total_rebuilds)
{
    th_scenario_t sc;
    th_scenario_load(&sc, file);
    if (has_retry(&sc)) {
        /* A retry happens at an arrival, so its place depends on arrival order by design. */
        th_scenario_free(&sc);
        return;
    }
    gb_msg_t *seq = calloc(sc.n_steps + 1, sizeof(*seq));
    size_t n = unique_sequence(&sc, seq);
    gb_apply_ctx_t ctx = th_ctx(&sc, TH_BASE_MS);

    gb_dev_t want;
    th_dev_init(&sc, &want);
    assert_int_equal(gb_dev_apply_batch(&want, &ctx, seq, n), n);
    char *want_snap = th_snapshot(&want);

    /* Every message one to three times, shuffled, cut into batches of 1 to 25. */
    gb_msg_t *arrivals = calloc(3 * n + 1, sizeof(*arrivals));
    gb_msg_t *batch = calloc(3 * n + 1, sizeof(*batch));
    for (int round = 0; round < rounds(); round++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            size_t copies = 1 + rng_below(round % 3 == 0 ? 1 : 3);
            for (size_t c = 0; c < copies; c++) {
                arrivals[m++] = seq[i];
            }
        }
        /* Round 0 keeps the order (duplicates only); the rest shuffle, some only locally. */
        if (round > 0) {
            size_t window = round % 2 == 0 ? 4 : m;
            for (size_t i = m; i-- > 1;) {
                size_t lo = i >= window ? i - window : 0;
                size_t j = lo + rng_below(i - lo + 1);
                gb_msg_t t = arrivals[i];
                arrivals[i] = arrivals[j];
                arrivals[j] = t;
            }
        }
        gb_dev_t dev;
        th_store_t store;
        memset(&store, 0, sizeof(store));
        th_dev_init(&sc, &dev);
        for (size_t i = 0; i < m;) {
            size_t k = 1 + rng_below(25);
            if (k > m - i) {
                k = m - i;
            }
            for (size_t j = 0; j < k; j++) {
                batch[j] = arrivals[i + j];
                batch[j].index = (uint32_t)j;
            }
            th_ingest(&dev, &store, &ctx, batch, k);
            i += k;
        }
        /* Nothing lost, nothing doubled, same state. */
        assert_int_equal(store.n, n);
        assert_int_equal(dev.n_applied, n);
        assert_int_equal(dev.max_seq, seq[n - 1].seq);
        char *got = th_snapshot(&dev);
        if (strcmp(got, want_snap) != 0) {
            print_error("%s round %d: state differs from the sorted sequence\n want %s\n got  %s\n",
                        file, round, want_snap, got);
            fail();
        }
        free(got);
        *total_rebuilds += store.rebuilds;
        th_store_free(&store);
        gb_dev_dispose(&dev);

        /* Applied blindly in arrival order (no replay): never crashes, and stays consistent. */
        gb_dev_t blind;
        th_dev_init(&sc, &blind);
        for (size_t i = 0; i < m; i++) {
            if (gb_dev_apply(&blind, &ctx, &arrivals[i]) != 0) {
                continue; /* an old or repeated seq: refused, as documented */
            }
        }
        assert_true(blind.attempt >= 1 && blind.attempt == blind.n_attempts);
        char *s = th_snapshot(&blind);
        gb_dev_t back;
        gb_error_t err;
        gb_error_clear(&err);
        assert_int_equal(gb_proto_snapshot_decode(s, strlen(s), &back, &err), 0);
        gb_dev_dispose(&back);
        free(s);
        gb_dev_dispose(&blind);
        (*total_rounds)++;
    }
    free(arrivals);
    free(batch);
    free(want_snap);
    gb_dev_dispose(&want);
    free(seq);
    th_scenario_free(&sc);
}

static void test_property_arrival_order_does_not_matter(void **state)
{
    GB_UNUSED(state);
    th_row_t *rows;
    size_t n = th_load_index(&rows);
    size_t total = 0, rebuilds = 0;
    rng_state = 0x9E3779B97F4A7C15ULL;
    for (size_t r = 0; r < n; r++) {
        run_property(rows[r].stage_file, &total, &rebuilds);
        if (rows[r].event_file[0] != '\0') {
            run_property(rows[r].event_file, &total, &rebuilds);
        }
    }
    print_message("%zu shuffled arrivals, %zu rebuilds\n", total, rebuilds);
    assert_true(total > 500);
    assert_true(rebuilds > 0);
    free(rows);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_property_arrival_order_does_not_matter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
