/* net: signal watching on the loop and the process-wide settings a server needs (SIGPIPE
 * ignored, libuv error names for gb_strerror). The signal handles are embedded in the
 * caller's struct and counted; each has its own callbacks so gb_container_of() always knows
 * which member it holds. */
#include "net/net.h"

#include <signal.h>
#include <string.h>

static void on_sigint(uv_signal_t *handle, int signum)
{
    gb_net_signals_t *s = gb_container_of(handle, gb_net_signals_t, sigint);
    if (s->cb != NULL) {
        s->cb(signum, s->arg);
    }
}

static void on_sigterm(uv_signal_t *handle, int signum)
{
    gb_net_signals_t *s = gb_container_of(handle, gb_net_signals_t, sigterm);
    if (s->cb != NULL) {
        s->cb(signum, s->arg);
    }
}

static void on_sigint_closed(uv_handle_t *handle)
{
    gb_net_signals_t *s = gb_container_of((uv_signal_t *)handle, gb_net_signals_t, sigint);
    s->open_handles--;
}

static void on_sigterm_closed(uv_handle_t *handle)
{
    gb_net_signals_t *s = gb_container_of((uv_signal_t *)handle, gb_net_signals_t, sigterm);
    s->open_handles--;
}

void gb_net_ignore_sigpipe(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
}

void gb_net_install_strerror(void)
{
    gb_strerror_set_fallback(uv_strerror);
    gb_net_ignore_sigpipe();
}

int gb_net_signals_start(uv_loop_t *loop, gb_net_signal_cb cb, void *arg, gb_net_signals_t *s)
{
    int rc;

    memset(s, 0, sizeof(*s));
    s->cb = cb;
    s->arg = arg;
    gb_net_ignore_sigpipe();
    uv_signal_init(loop, &s->sigint);
    uv_signal_init(loop, &s->sigterm);
    s->open_handles = 2;
    rc = uv_signal_start(&s->sigint, on_sigint, SIGINT);
    if (rc == 0) {
        rc = uv_signal_start(&s->sigterm, on_sigterm, SIGTERM);
    }
    if (rc < 0) {
        gb_net_signals_stop(s);
    }
    return rc;
}

void gb_net_signals_stop(gb_net_signals_t *s)
{
    s->cb = NULL;
    if (!uv_is_closing((uv_handle_t *)&s->sigint)) {
        uv_close((uv_handle_t *)&s->sigint, on_sigint_closed);
    }
    if (!uv_is_closing((uv_handle_t *)&s->sigterm)) {
        uv_close((uv_handle_t *)&s->sigterm, on_sigterm_closed);
    }
}
