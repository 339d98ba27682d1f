/* net: process-level plumbing around the loop: SIGINT/SIGTERM delivered as loop callbacks,
 * SIGPIPE ignored (a peer that goes away must give EPIPE, not kill the server), and
 * gb_strerror() taught libuv's error names. Tiny on purpose: the listener and connections
 * live in http/. */
#ifndef GB_NET_H
#define GB_NET_H

#include <uv.h>

#include "util/util.h"

typedef void (*gb_net_signal_cb)(int signum, void *arg);

/* Watches SIGINT and SIGTERM. Embedded by the caller, which keeps it valid until the loop
 * has run the close callbacks that gb_net_signals_stop() starts. */
typedef struct gb_net_signals {
    uv_signal_t sigint;    /* private */
    uv_signal_t sigterm;   /* private */
    gb_net_signal_cb cb;   /* private */
    void *arg;             /* private */
    unsigned open_handles; /* private: handles not yet closed */
} gb_net_signals_t;

/* Starts watching SIGINT and SIGTERM on loop and ignores SIGPIPE. cb(signum, arg) runs on the
 * loop for each signal received, as often as it arrives. Returns 0 or a negative libuv error;
 * on error nothing is left open. */
int gb_net_signals_start(uv_loop_t *loop, gb_net_signal_cb cb, void *arg,
                         gb_net_signals_t *s) GB_MUST_CHECK;
/* Stops watching and closes the handles; cb never runs again. Idempotent. The handles are
 * released by the loop's next iteration, so s must stay valid until uv_run() returns. */
void gb_net_signals_stop(gb_net_signals_t *s);

/* Makes gb_strerror() fall back to uv_strerror() for codes that are not ours, and ignores
 * SIGPIPE. Call once at start-up, before the loop runs. */
void gb_net_install_strerror(void);
/* Sets SIGPIPE to be ignored for the whole process (libuv writes with writev(2), which raises
 * it when the peer has gone). */
void gb_net_ignore_sigpipe(void);

#endif
