/*
 * fdwatch.h - a file descriptor someone else owns, waited for on the io_uring loop: one-shot
 * polls (IORING_OP_POLL_ADD, for POLLIN and POLLOUT) and one timer, delivered to the owner as
 * callbacks from the loop.  It serves a libpq connection's socket (libpq owns it: pgconn.c)
 * and a child program's pidfd (readable once the child has exited: the agent's jobs).
 *
 * The ring may still reference the polls and the timer after the owner is done with the fd,
 * so a fdwatch is allocated on its own: fdwatch_release() removes the polls, cancels the timer
 * and detaches the owner (no callback follows), and the struct frees itself once the last of
 * its completions has come back (or when the loop is freed).  Release the watch BEFORE closing
 * the fd (PQfinish): a poll in flight holds the file open in the kernel.  One watch serves one
 * fd: a new connection or child gets a new watch.
 *
 * Functions return 0 or a negative errno (-EBUSY: no SQE could be had).
 */
#ifndef WALMIRROR_AGENT_FDWATCH_H
#define WALMIRROR_AGENT_FDWATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "wio.h"

struct fdwatch;

struct fdwatch_ops {
    /* The fd is ready for what was asked (res >= 0: the poll's revents), or the poll failed
     * (res < 0). */
    void (*on_io)(void *ctx, bool write, int res);
    /* The timer armed with fdwatch_timer() has expired. */
    void (*on_timer)(void *ctx);
};

WM_MUSTCHECK int fdwatch_new(struct fdwatch **out, struct wio_loop *loop,
                             const struct fdwatch_ops *ops, void *ctx);
/* Waits once for fd to become readable (write false) or writable; nothing if that wait is
 * already in flight. */
WM_MUSTCHECK int fdwatch_wait(struct fdwatch *w, int fd, bool write);
/* Arms the timer for ms from now (re-arming moves it); fdwatch_timer_stop() disarms it. */
WM_MUSTCHECK int fdwatch_timer(struct fdwatch *w, uint64_t ms);
void fdwatch_timer_stop(struct fdwatch *w);
/* The owner is done: see above.  NULL is fine. */
void fdwatch_release(struct fdwatch *w);

#endif
