/* transport: delivers the model's messages to a glovebox server over HTTP/1.1 on a libuv loop.
 * Each device has an outbound queue of messages not yet acknowledged; a pool of keep-alive
 * connections posts them in batches (one request in flight per device, so a device's messages
 * arrive in seq order). A 200 drops everything up to the server's acked_seq; a 503, a timeout or
 * a broken connection pauses the whole transport (exponential backoff with jitter: the server
 * is shared, so its devices wait together), after which everything after acked_seq is sent
 * again. Nothing is dropped before the server acknowledges it. */
#ifndef GB_SIM_TRANSPORT_H
#define GB_SIM_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct gb_sim_tx gb_sim_tx_t;

typedef struct gb_sim_tx_config {
    const char *url; /* http://HOST[:PORT][/PREFIX] */
    const char *token;
    uint32_t batch; /* messages per request, 1..500 */
    uint32_t connections;
    double timeout_s; /* one request */
    double give_up_s; /* no acknowledgement for this long while work waits: fatal */
} gb_sim_tx_config_t;

typedef struct gb_sim_tx_stats {
    uint64_t requests;    /* requests answered 200 */
    uint64_t messages;    /* messages acknowledged */
    uint64_t retries;     /* requests that failed and were sent again later */
    uint64_t unavailable; /* 503 (and other retryable statuses) answers */
    uint64_t conn_errors; /* connect, read, write failures and timeouts */
    uint64_t bytes_sent;
    uint32_t ahead; /* devices whose serial already had higher seqs on the server */
} gb_sim_tx_stats_t;

/* Called after acknowledgements arrive (the queue shrank) and when a fatal error stops the
 * transport. */
typedef void (*gb_sim_tx_progress_cb)(void *arg);

/* Parses the URL and resolves its host (blocking, once). Returns NULL with err set when the URL
 * is not http:// or the host does not resolve. serials are borrowed for the transport's life. */
gb_sim_tx_t *gb_sim_tx_new(uv_loop_t *loop, const gb_sim_tx_config_t *cfg, uint32_t n_devices,
                           const char *const *serials, gb_sim_tx_progress_cb progress, void *arg,
                           char *err, size_t err_size);
/* Queues one message (copied) of device; its seq must follow the previous one. Nothing is sent
 * until gb_sim_tx_flush(), so a burst of messages leaves in full batches. */
void gb_sim_tx_enqueue(gb_sim_tx_t *tx, uint32_t device, uint64_t seq, const char *json,
                       size_t len);
/* Starts requests on the free connections for the devices with messages waiting. */
void gb_sim_tx_flush(gb_sim_tx_t *tx);
/* Messages queued and not yet acknowledged. */
uint64_t gb_sim_tx_pending(const gb_sim_tx_t *tx);
/* True once a fatal error stopped the transport; gb_sim_tx_error() says why. */
bool gb_sim_tx_failed(const gb_sim_tx_t *tx);
const char *gb_sim_tx_error(const gb_sim_tx_t *tx);
const gb_sim_tx_stats_t *gb_sim_tx_stats(const gb_sim_tx_t *tx);
/* Closes every handle; the transport frees itself once the last one has closed (the loop
 * must run on). Pending messages are discarded. */
void gb_sim_tx_close(gb_sim_tx_t *tx);

#endif
