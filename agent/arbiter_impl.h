/*
 * arbiter_impl.h - what an arbiter implementation (arbiter.h) is made of; for the files that
 * implement one (arbiter.c: none and witness; arbiter_etcd.c: etcd), not for its users.
 *
 * An implementation embeds struct arbiter first and points its ops at a const table.  Its
 * constructor returns 0 with the base filled but cb and ctx, which arbiter_new() sets; it
 * calls the callbacks through arbiter_tell_verdict() and arbiter_tell_epoch_news(), only from
 * its own completions on the loop (never from inside an ops call).
 */
#ifndef WALMIRROR_AGENT_ARBITER_IMPL_H
#define WALMIRROR_AGENT_ARBITER_IMPL_H

#include "arbiter.h"

struct arbiter_ops {
    const char *kind; /* "witness", "etcd", "none" */
    bool (*reachable)(const struct arbiter *a);
    void (*report)(struct arbiter *a, const struct arbiter_report *r);
    int (*request)(struct arbiter *a, const struct arbiter_request *req);
    enum arbiter_state (*state)(const struct arbiter *a);
    const char *(*describe)(const struct arbiter *a);
    void (*destroy)(struct arbiter *a);
};

/* The base of every implementation (embedded first). */
struct arbiter {
    const struct arbiter_ops *ops;
    const struct arbiter_cb *cb;
    void *ctx;
};

static inline void
arbiter_tell_verdict(struct arbiter *a, const struct arbiter_request *req, bool granted,
                     const struct wm_state *epoch, const char *why)
{
    if (a->cb->on_verdict != NULL)
        a->cb->on_verdict(a->ctx, req, granted, epoch, why);
}

static inline void
arbiter_tell_epoch_news(struct arbiter *a, const struct wm_state *epoch)
{
    if (a->cb->on_epoch_news != NULL)
        a->cb->on_epoch_news(a->ctx, epoch);
}

/* The constructors arbiter_new() picks from. */
WM_MUSTCHECK int arbiter_witness_new(struct arbiter **out, struct wio_loop *loop,
                                     const struct wm_config *cfg);
WM_MUSTCHECK int arbiter_etcd_new(struct arbiter **out, struct wio_loop *loop,
                                  const struct wm_config *cfg);

#endif
