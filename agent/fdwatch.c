/*
 * fdwatch.c - an fd's polls and a timer on the io_uring loop; contract in fdwatch.h.
 */
#include "fdwatch.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include "util.h"

struct fdwatch {
    struct wio_loop *loop;
    const struct fdwatch_ops *ops;
    void *ctx; /* NULL once released */
    struct wio_op rd, wr;
    bool rd_inflight, wr_inflight;
    struct wio_timer timer;
    bool released;
};

static void
maybe_free(struct fdwatch *w)
{
    if (w->released && !w->rd_inflight && !w->wr_inflight && !wio_timer_busy(&w->timer))
        free(w);
}

static void
timer_release(struct wio_timer *t)
{
    maybe_free(container_of(t, struct fdwatch, timer));
}

static void
poll_done(struct fdwatch *w, bool write, int res)
{
    if (w->released) {
        maybe_free(w);
        return;
    }
    w->ops->on_io(w->ctx, write, res);
}

static void
rd_cb(struct wio_op *op, int res, unsigned flags)
{
    struct fdwatch *w = container_of(op, struct fdwatch, rd);

    (void)flags;
    w->rd_inflight = false;
    poll_done(w, false, res);
}

static void
wr_cb(struct wio_op *op, int res, unsigned flags)
{
    struct fdwatch *w = container_of(op, struct fdwatch, wr);

    (void)flags;
    w->wr_inflight = false;
    poll_done(w, true, res);
}

static void
timer_fire(struct wio_timer *t)
{
    struct fdwatch *w = container_of(t, struct fdwatch, timer);

    if (!w->released)
        w->ops->on_timer(w->ctx);
}

int
fdwatch_new(struct fdwatch **out, struct wio_loop *loop, const struct fdwatch_ops *ops, void *ctx)
{
    struct fdwatch *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return -ENOMEM;
    w->loop = loop;
    w->ops = ops;
    w->ctx = ctx;
    w->rd.cb = rd_cb;
    w->wr.cb = wr_cb;
    w->timer.release = timer_release;
    *out = w;
    return 0;
}

int
fdwatch_wait(struct fdwatch *w, int fd, bool write)
{
    bool *inflight = write ? &w->wr_inflight : &w->rd_inflight;
    struct io_uring_sqe *sqe;

    if (fd < 0)
        return -EBADF;
    if (*inflight)
        return 0;
    sqe = wio_sqe(w->loop, write ? &w->wr : &w->rd);
    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_poll_add(sqe, fd, write ? POLLOUT : POLLIN);
    *inflight = true;
    return 0;
}

int
fdwatch_timer(struct fdwatch *w, uint64_t ms)
{
    return wio_timer_arm(w->loop, &w->timer, ms, timer_fire);
}

void
fdwatch_timer_stop(struct fdwatch *w)
{
    wio_timer_cancel(&w->timer);
}

void
fdwatch_release(struct fdwatch *w)
{
    struct io_uring_sqe *sqe;

    if (w == NULL)
        return;
    w->released = true;
    w->ctx = NULL;
    if (w->rd_inflight && (sqe = wio_sqe(w->loop, NULL)) != NULL)
        io_uring_prep_poll_remove(sqe, (__u64)(uintptr_t)&w->rd);
    if (w->wr_inflight && (sqe = wio_sqe(w->loop, NULL)) != NULL)
        io_uring_prep_poll_remove(sqe, (__u64)(uintptr_t)&w->wr);
    wio_timer_cancel(&w->timer);
    maybe_free(w);
}
