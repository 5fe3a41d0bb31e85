/*
 * arbiter.c - the site agent's arbiter; contract in arbiter.h.
 *
 * struct arbiter (arbiter_impl.h) is the base every implementation embeds first; its const
 * ops table is the implementation.  Two live here: "none" (no arbiter configured) and
 * "witness", a client of the witness agent (witness.h) over conn.h.
 *
 * The witness arbiter is a small state machine over its link:
 *     IDLE --(first report; retry time reached)--> CONNECTING --(TCP up)--> HELLO
 *     HELLO --(witness accepted us)--> UP --(closed)--> IDLE
 * A periodic timer (WA_TICK_MS) frees a dead connection, starts the next attempt, sends the
 * STATE report every heartbeat interval, and times out a request.  News of a newer epoch
 * (conn's on_epoch) is held until it can be told with its holder and mark: a FENCE control,
 * the refusal's text, or the next tick while the link is up; an epoch rise that is the grant
 * we are waiting for is never reported as news.
 *
 * The timer and the TCP connector live apart from the arbiter (as conn.c's timer does): a
 * cancelled timeout or a connect in flight may complete after arbiter_free, and frees itself
 * then.
 */
#include "arbiter_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "log.h"
#include "msg.h"
#include "tls.h"
#include "util.h"
#include "witness.h"

#define WA_TICK_MS 100
#define WA_RETRY_MS 1000
#define WA_RETRY_FENCED_MS 5000

/* ---- none: no arbiter configured ---- */

static bool
none_reachable(const struct arbiter *a)
{
    (void)a;
    return false;
}

static void
none_report(struct arbiter *a, const struct arbiter_report *r)
{
    (void)a;
    (void)r;
}

static int
none_request(struct arbiter *a, const struct arbiter_request *req)
{
    (void)a;
    (void)req;
    return -ENOTCONN;
}

static enum arbiter_state
none_state(const struct arbiter *a)
{
    (void)a;
    return ARBITER_STATE_NONE;
}

static const char *
none_describe(const struct arbiter *a)
{
    (void)a;
    return "none (no arbiter configured: automatic fail-over is off)";
}

static void
none_destroy(struct arbiter *a)
{
    free(a);
}

static const struct arbiter_ops none_ops = {
    .kind = "none",
    .reachable = none_reachable,
    .report = none_report,
    .request = none_request,
    .state = none_state,
    .describe = none_describe,
    .destroy = none_destroy,
};

/* ---- witness ---- */

struct warb;

struct wa_timer {
    struct wio_timer t;
    struct warb *a; /* NULL once the arbiter is gone */
};

struct wa_connector {
    struct wio_connector con;
    struct warb *a; /* NULL once the arbiter is gone */
};

enum wa_link {
    WA_IDLE,       /* no link; the next attempt at retry_at_ms */
    WA_CONNECTING, /* TCP connect in flight */
    WA_HELLO,      /* conn set up: TLS and the HELLO exchange */
    WA_UP,         /* established: the witness accepted us */
};

static const char *const wa_link_names[] = {"idle", "connecting", "hello", "up"};

struct warb {
    struct arbiter base;
    const struct wm_config *cfg;
    struct wio_loop *loop;
    struct tls_config *tls;
    char comp[96];
    char where[CONFIG_NAME_MAX + CONFIG_HOSTPORT_MAX + 2]; /* "witness@10.0.3.10:5433" */

    enum wa_link link;
    struct wa_connector *connecting;
    struct conn *c;
    bool c_dead; /* c closed: free it at the next tick */
    bool freeing;
    struct wa_timer *timer;
    uint64_t retry_at_ms;
    char down_why[200];

    /* what the agent reported */
    bool reported;
    uint8_t role;
    uint64_t epoch; /* ours: reported or granted, never lower */
    uint64_t durable_lsn;
    uint64_t mark_lsn, mark_unix_us; /* our epoch's mark, as we know it */
    char holder[STATE_NAME_MAX + 1]; /* our epoch's holder, as we know it ("": unknown) */
    bool state_dirty;
    uint64_t state_at_ms;

    /* the request in flight */
    bool pending;
    struct arbiter_request req;
    uint64_t req_epoch; /* req.epoch + 1 */
    uint64_t req_deadline_ms;

    /* epochs learnt from the witness */
    uint64_t witness_epoch;
    struct wm_state fence; /* the newest epoch above ours (fence.epoch 0: none), as known */
    struct wm_state told;  /* what on_epoch_news was last given */

    char desc[640];
};

static void wa_tick(struct wio_timer *t);

static void
wa_set_state(struct warb *a, enum wa_link link)
{
    if (a->link != link)
        log_debug(a->comp, "link %s -> %s", wa_link_names[a->link], wa_link_names[link]);
    a->link = link;
}

static void
wa_update_desc(struct warb *a)
{
    uint64_t e = a->witness_epoch > a->epoch ? a->witness_epoch : a->epoch;

    if (a->fence.epoch > a->epoch)
        snprintf(a->desc, sizeof(a->desc), "%s fenced: epoch %" PRIu64 " is held by %s",
                 a->where, a->fence.epoch,
                 a->fence.primary[0] != '\0' ? a->fence.primary : "another node");
    else if (a->link == WA_UP)
        snprintf(a->desc, sizeof(a->desc), "%s up, epoch %" PRIu64, a->where, e);
    else if (!a->reported)
        snprintf(a->desc, sizeof(a->desc), "%s not connected yet", a->where);
    else
        snprintf(a->desc, sizeof(a->desc), "%s down (%s), epoch %" PRIu64, a->where,
                 a->down_why[0] != '\0' ? a->down_why : wa_link_names[a->link], e);
}

/* The verdict on the request in flight: granted with epoch as recorded, or denied. */
static void
wa_verdict(struct warb *a, bool granted, const struct wm_state *epoch, const char *why)
{
    struct arbiter_request req = a->req;

    a->pending = false;
    log_info(a->comp, "%s (epoch %" PRIu64 ") %s: %s", arbiter_ask_name(req.ask), a->req_epoch,
             granted ? "granted" : "denied", why);
    arbiter_tell_verdict(&a->base, &req, granted, epoch, why);
}

/* A denial that did not come from the witness (a timeout, the link lost). */
static void
wa_verdict_no_answer(struct warb *a, const char *why)
{
    struct wm_state unknown = {0};

    wa_verdict(a, false, &unknown, why);
}

/*
 * The witness's record of an epoch: newer than ours, or ours held by another node with another
 * mark than we reported (arbiter.h).  holder is NULL or "" when not said; mark NULL when the
 * message carried none.
 */
static void
wa_fence_seen(struct warb *a, uint64_t epoch, const char *holder, const struct msg_control *mark)
{
    if (epoch < a->epoch)
        return;
    if (epoch == a->epoch &&
        (holder == NULL || holder[0] == '\0' || strcmp(holder, a->cfg->node_name) == 0 ||
         mark == NULL ||
         (mark->mark_lsn == a->mark_lsn && mark->mark_unix_us == a->mark_unix_us)))
        return;
    if (epoch > a->fence.epoch) {
        memset(&a->fence, 0, sizeof(a->fence));
        a->fence.epoch = epoch;
    }
    if (epoch == a->fence.epoch && holder != NULL && holder[0] != '\0')
        snprintf(a->fence.primary, sizeof(a->fence.primary), "%.*s", STATE_NAME_MAX, holder);
    if (epoch == a->fence.epoch && mark != NULL) {
        a->fence.exposed_lsn = mark->mark_lsn;
        a->fence.exposed_unix_us = mark->mark_unix_us;
    }
    wa_update_desc(a);
}

/*
 * Tells the agent of a newer epoch, unless it may be the grant we await: once per epoch, and
 * again when what is known of it grows (its holder or mark arrived after the bare number).
 */
static void
wa_fence_report(struct warb *a)
{
    if (a->fence.epoch < a->epoch || a->fence.epoch < a->told.epoch || a->fence.epoch == 0)
        return;
    if (a->fence.epoch == a->told.epoch && memcmp(&a->fence, &a->told, sizeof(a->fence)) == 0)
        return;
    if (a->pending && a->fence.epoch == a->req_epoch)
        return;
    a->told = a->fence;
    log_warning(a->comp, "epoch %" PRIu64 " is held by %s%s; ours is %" PRIu64, a->fence.epoch,
                a->fence.primary[0] != '\0' ? a->fence.primary : "another node",
                state_exposed(&a->fence) ? ", running exposed" : "", a->epoch);
    arbiter_tell_epoch_news(&a->base, &a->fence);
}

/* The holder named in a witness's refusal "fenced: epoch E is held by NODE since ...". */
static void
holder_from(const char *msg, char *out, size_t cap)
{
    static const char held[] = " is held by ";
    const char *p = strstr(msg, WITNESS_FENCED_PREFIX);
    size_t n = 0;

    out[0] = '\0';
    if (p == NULL || (p = strstr(p, held)) == NULL)
        return;
    p += sizeof(held) - 1;
    if (strncmp(p, "an unknown node", 15) == 0)
        return;
    while (n + 1 < cap && ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') ||
                           (p[n] >= '0' && p[n] <= '9') || p[n] == '_' || p[n] == '.' ||
                           p[n] == '-'))
        n++;
    memcpy(out, p, n);
    out[n] = '\0';
}

static void
wa_send_state(struct warb *a)
{
    struct msg_control ctl = {.kind = MSG_CTL_STATE,
                              .lsn = a->durable_lsn,
                              .value = a->epoch,
                              .value2 = a->role,
                              .mark_lsn = a->mark_lsn,
                              .mark_unix_us = a->mark_unix_us};
    int rc;

    snprintf(ctl.text, sizeof(ctl.text), "%s", a->holder);
    rc = conn_send_control(a->c, &ctl);

    if (rc < 0)
        log_warning(a->comp, "cannot send STATE: %s", wire_strerror(rc));
    a->state_dirty = false;
    a->state_at_ms = clock_mono_ms();
}

static int
wa_on_hello(void *ctx, const struct msg_hello *peer, char *why, size_t whylen)
{
    struct warb *a = ctx;

    if (peer->role != MSG_ROLE_WITNESS) {
        snprintf(why, whylen, "%s is a %s, not a witness", peer->node_name,
                 msg_role_name(peer->role));
        return WIRE_EPROTO;
    }
    if (peer->epoch > a->witness_epoch)
        a->witness_epoch = peer->epoch;
    return 0;
}

static void
wa_on_established(void *ctx)
{
    struct warb *a = ctx;

    wa_set_state(a, WA_UP);
    a->down_why[0] = '\0';
    log_info(a->comp, "witness %s up (its epoch %" PRIu64 ", ours %" PRIu64 ")", a->where,
             a->witness_epoch, a->epoch);
    wa_update_desc(a);
    wa_send_state(a);
}

static void
wa_on_control(void *ctx, const struct msg_control *ctl)
{
    struct warb *a = ctx;

    switch (ctl->kind) {
    case MSG_CTL_VOTE_GRANT:
        if (!a->pending || ctl->value != a->req_epoch) {
            log_warning(a->comp, "ignoring an unexpected VOTE_GRANT for epoch %" PRIu64,
                        ctl->value);
            return;
        }
        /* Ours from now on.  The link keeps carrying the old epoch in its frame headers (the
         * witness does the same for it): raising either end of a live link would make it
         * refuse the other's frames already in flight.  The next connection says the new one. */
        {
            struct wm_state granted = {.epoch = ctl->value,
                                       .changed_unix_us = clock_unix_us(),
                                       .exposed_lsn = ctl->mark_lsn,
                                       .exposed_unix_us = ctl->mark_unix_us};

            snprintf(granted.primary, sizeof(granted.primary), "%s", a->cfg->node_name);
            if (ctl->value > a->epoch)
                a->epoch = ctl->value;
            a->mark_lsn = ctl->mark_lsn;
            a->mark_unix_us = ctl->mark_unix_us;
            snprintf(a->holder, sizeof(a->holder), "%s", a->cfg->node_name);
            if (a->witness_epoch < a->epoch)
                a->witness_epoch = a->epoch;
            a->state_dirty = true;
            wa_update_desc(a);
            wa_verdict(a, true, &granted, ctl->text);
        }
        return;
    case MSG_CTL_VOTE_DENY:
        if (!a->pending) {
            log_warning(a->comp, "ignoring an unexpected VOTE_DENY: %s", ctl->text);
            return;
        }
        {
            struct wm_state theirs = {.epoch = ctl->value,
                                      .exposed_lsn = ctl->mark_lsn,
                                      .exposed_unix_us = ctl->mark_unix_us};

            wa_verdict(a, false, &theirs, ctl->text);
        }
        wa_fence_report(a); /* an epoch rise held back for the request is news now */
        return;
    case MSG_CTL_FENCE:
        wa_fence_seen(a, ctl->value, ctl->text, ctl);
        wa_fence_report(a);
        return;
    default:
        log_debug(a->comp, "ignoring %s from the witness", msg_ctl_name(ctl->kind));
        return;
    }
}

static void
wa_on_epoch(void *ctx, uint64_t epoch)
{
    struct warb *a = ctx;

    if (epoch > a->witness_epoch)
        a->witness_epoch = epoch;
    if (epoch <= a->epoch) {
        /* The witness raised our link to an epoch we hold: speak it too (it refuses less). */
        conn_set_epoch(a->c, epoch);
        return;
    }
    wa_fence_seen(a, epoch, NULL, NULL); /* told once the holder is known, or at the next tick */
}

static void
wa_on_closed(void *ctx, int reason, const char *message)
{
    struct warb *a = ctx;
    char holder[CONFIG_NAME_MAX + 1];
    char why[320];

    (void)reason;
    if (a->freeing)
        return;
    if (a->link == WA_UP)
        log_warning(a->comp, "witness %s down: %s", a->where, message);
    else if (strcmp(a->down_why, message) != 0)
        log_warning(a->comp, "cannot reach the witness %s: %s", a->where, message);
    snprintf(a->down_why, sizeof(a->down_why), "%s", message);
    a->c_dead = true;
    wa_set_state(a, WA_IDLE);
    if (conn_peer_epoch(a->c) > a->witness_epoch)
        a->witness_epoch = conn_peer_epoch(a->c);
    holder_from(message, holder, sizeof(holder));
    if (conn_peer_epoch(a->c) > a->epoch)
        wa_fence_seen(a, conn_peer_epoch(a->c), holder, NULL);
    a->retry_at_ms = clock_mono_ms() + (a->fence.epoch > a->epoch ? WA_RETRY_FENCED_MS
                                                                   : WA_RETRY_MS);
    wa_update_desc(a);
    if (a->pending) {
        snprintf(why, sizeof(why), "the link to the witness was lost before it answered: %.200s",
                 message);
        wa_verdict_no_answer(a, why);
    }
    wa_fence_report(a);
}

static void
wa_ignore_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct warb *a = ctx;

    (void)lsn;
    (void)data;
    (void)len;
    conn_close(a->c, WIRE_EPROTO, "a witness sends no WAL");
}

static void
wa_ignore_ack(void *ctx, const struct msg_ack *ack)
{
    (void)ctx;
    (void)ack;
}

static const struct conn_ops wa_conn_ops = {
    .on_hello = wa_on_hello,
    .on_established = wa_on_established,
    .on_wal = wa_ignore_wal,
    .on_ack = wa_ignore_ack,
    .on_control = wa_on_control,
    .on_epoch = wa_on_epoch,
    .on_closed = wa_on_closed,
};

static void
wa_connect_failed(struct warb *a, const char *why)
{
    if (strcmp(a->down_why, why) != 0)
        log_warning(a->comp, "cannot reach the witness %s: %s", a->where, why);
    snprintf(a->down_why, sizeof(a->down_why), "%s", why);
    wa_set_state(a, WA_IDLE);
    a->retry_at_ms = clock_mono_ms() + WA_RETRY_MS;
    wa_update_desc(a);
}

static void
wa_on_connect(struct wio_connector *con, int fd)
{
    struct wa_connector *wc = (struct wa_connector *)con;
    struct warb *a = wc->a;
    struct msg_hello hello = {0};
    struct conn_config cc;
    int rc;

    free(wc);
    if (a == NULL) { /* the arbiter went away meanwhile */
        if (fd >= 0)
            close(fd);
        return;
    }
    a->connecting = NULL;
    if (fd < 0) {
        wa_connect_failed(a, wire_strerror(fd));
        return;
    }
    snprintf(hello.node_name, sizeof(hello.node_name), "%s", a->cfg->node_name);
    hello.role = a->role;
    hello.durable_lsn = a->durable_lsn;
    cc = (struct conn_config){
        .tls = a->tls,
        .peer_name = a->cfg->witness.name,
        .hello = &hello,
        .epoch = a->epoch,
        .heartbeat_ms = (unsigned)a->cfg->heartbeat_interval_ms,
        .timeout_ms = (unsigned)a->cfg->peer_timeout_ms,
    };
    rc = conn_new(&a->c, a->loop, fd, false, &cc, &wa_conn_ops, a);
    if (rc < 0) {
        a->c = NULL;
        wa_connect_failed(a, wire_strerror(rc));
        return;
    }
    wa_set_state(a, WA_HELLO);
}

static void
wa_start_connect(struct warb *a)
{
    struct wa_connector *wc = calloc(1, sizeof(*wc));
    int rc;

    if (wc == NULL) {
        wa_connect_failed(a, "out of memory");
        return;
    }
    wc->a = a;
    rc = wio_connect_start(a->loop, &wc->con, a->cfg->witness.addr.text, wa_on_connect);
    if (rc < 0) {
        free(wc);
        wa_connect_failed(a, wire_strerror(rc));
        return;
    }
    a->connecting = wc;
    wa_set_state(a, WA_CONNECTING);
}

static void
wa_tick(struct wio_timer *t)
{
    struct wa_timer *wt = (struct wa_timer *)t;
    struct warb *a = wt->a;
    uint64_t now = clock_mono_ms();

    if (a == NULL)
        return;
    if (a->c_dead) {
        conn_free(a->c);
        a->c = NULL;
        a->c_dead = false;
    }
    if (a->reported && a->link == WA_IDLE && a->c == NULL && now >= a->retry_at_ms)
        wa_start_connect(a);
    /* Every heartbeat interval, to the tick (half a tick early rather than a tick late). */
    if (a->link == WA_UP && (a->state_dirty || now - a->state_at_ms + WA_TICK_MS / 2 >=
                                                   a->cfg->heartbeat_interval_ms))
        wa_send_state(a);
    if (a->pending && now >= a->req_deadline_ms) {
        char why[96];
        snprintf(why, sizeof(why), "no answer from the witness within %.1f s",
                 ARBITER_VOTE_TIMEOUT_MS / 1000.0);
        wa_verdict_no_answer(a, why);
    }
    if (a->link == WA_UP)
        wa_fence_report(a); /* an epoch rise seen without a FENCE to name its holder */
    if (wio_timer_arm(a->loop, t, WA_TICK_MS, wa_tick) < 0)
        log_error(a->comp, "cannot re-arm the arbiter's timer");
}

static void
wa_timer_release(struct wio_timer *t)
{
    free((struct wa_timer *)t);
}

static bool
wa_reachable(const struct arbiter *base)
{
    const struct warb *a = (const struct warb *)base;

    return a->link == WA_UP;
}

static void
wa_report(struct arbiter *base, const struct arbiter_report *r)
{
    struct warb *a = (struct warb *)base;
    bool first = !a->reported;

    a->reported = true;
    if (r->role != a->role) {
        a->role = r->role;
        a->state_dirty = true;
    }
    if (r->epoch > a->epoch) {
        a->epoch = r->epoch;
        a->state_dirty = true;
        /* Only where the witness's frames carry it already (see VOTE_GRANT); else the STATE
         * tells the witness, and the next connection carries it. */
        if (a->c != NULL && !a->c_dead && conn_peer_epoch(a->c) >= r->epoch)
            conn_set_epoch(a->c, r->epoch);
        if (a->fence.epoch != 0 && a->fence.epoch <= r->epoch && a->link == WA_IDLE)
            a->retry_at_ms = clock_mono_ms(); /* rejoined: no need to wait */
    }
    if (r->epoch == a->epoch && r->mark != NULL && r->mark->epoch == a->epoch &&
        (r->mark->exposed_lsn != a->mark_lsn || r->mark->exposed_unix_us != a->mark_unix_us ||
         strcmp(r->mark->primary, a->holder) != 0)) {
        a->mark_lsn = r->mark->exposed_lsn;
        a->mark_unix_us = r->mark->exposed_unix_us;
        snprintf(a->holder, sizeof(a->holder), "%s", r->mark->primary);
        a->state_dirty = true;
    }
    a->durable_lsn = r->durable_lsn;
    if (a->state_dirty && a->link == WA_UP)
        wa_send_state(a);
    if (first) {
        a->retry_at_ms = clock_mono_ms();
        if (a->link == WA_IDLE && a->c == NULL)
            wa_start_connect(a);
    }
    wa_update_desc(a);
}

static int
wa_request(struct arbiter *base, const struct arbiter_request *req)
{
    static const uint8_t kinds[] = {[ARBITER_PROMOTE] = MSG_CTL_VOTE_REQUEST,
                                    [ARBITER_EXPOSE] = MSG_CTL_EXPOSE_REQUEST,
                                    [ARBITER_RESYNC] = MSG_CTL_RESYNC_REQUEST};
    struct warb *a = (struct warb *)base;
    struct msg_control ctl = {.kind = kinds[req->ask],
                              .lsn = req->durable_lsn,
                              .value = req->epoch + 1,
                              .value2 = req->ask == ARBITER_PROMOTE ? req->failover_timeout_ms
                                        : req->ask == ARBITER_EXPOSE ? req->standby_lsn
                                                                     : 0};
    int rc;

    if (a->link != WA_UP)
        return -ENOTCONN;
    if (a->pending)
        return -EBUSY;
    rc = conn_send_control(a->c, &ctl);
    if (rc < 0)
        return rc;
    a->pending = true;
    a->req = *req;
    a->req_epoch = req->epoch + 1;
    a->req_deadline_ms = clock_mono_ms() + ARBITER_VOTE_TIMEOUT_MS;
    log_info(a->comp, "asking the witness for epoch %" PRIu64 ": %s (durable " LSN_FMT ")",
             req->epoch + 1, arbiter_ask_name(req->ask), LSN_ARGS(req->durable_lsn));
    return 0;
}

static enum arbiter_state
wa_state(const struct arbiter *base)
{
    const struct warb *a = (const struct warb *)base;

    if (a->fence.epoch > a->epoch && a->link != WA_UP)
        return ARBITER_STATE_FENCED;
    return a->link == WA_UP ? ARBITER_STATE_UP : ARBITER_STATE_DOWN;
}

static const char *
wa_describe(const struct arbiter *base)
{
    return ((const struct warb *)base)->desc;
}

static void
wa_destroy(struct arbiter *base)
{
    struct warb *a = (struct warb *)base;

    a->freeing = true;
    if (a->c != NULL) {
        if (!a->c_dead)
            conn_close(a->c, 0, "site agent stopping");
        conn_free(a->c);
    }
    if (a->connecting != NULL)
        a->connecting->a = NULL; /* it frees itself when the connect completes */
    if (a->timer != NULL) {
        a->timer->a = NULL;
        wio_timer_cancel(&a->timer->t);
        if (wio_timer_busy(&a->timer->t))
            a->timer->t.release = wa_timer_release;
        else
            free(a->timer);
    }
    tls_config_free(a->tls);
    free(a);
}

static const struct arbiter_ops witness_ops = {
    .kind = "witness",
    .reachable = wa_reachable,
    .report = wa_report,
    .request = wa_request,
    .state = wa_state,
    .describe = wa_describe,
    .destroy = wa_destroy,
};

int
arbiter_witness_new(struct arbiter **out, struct wio_loop *loop, const struct wm_config *cfg)
{
    struct warb *a = calloc(1, sizeof(*a));
    char err[512];
    int rc;

    if (a == NULL)
        return -ENOMEM;
    a->base.ops = &witness_ops;
    a->cfg = cfg;
    a->loop = loop;
    a->epoch = 1;
    snprintf(a->where, sizeof(a->where), "%s@%s", cfg->witness.name, cfg->witness.addr.text);
    snprintf(a->comp, sizeof(a->comp), "arbiter[%s]", cfg->witness.name);
    wa_update_desc(a);
    rc = tls_config_new(&a->tls, cfg->tls_ca, cfg->tls_cert, cfg->tls_key, false, err,
                        sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "%s", err);
        free(a);
        return rc;
    }
    a->timer = calloc(1, sizeof(*a->timer));
    if (a->timer == NULL) {
        tls_config_free(a->tls);
        free(a);
        return -ENOMEM;
    }
    a->timer->a = a;
    rc = wio_timer_arm(loop, &a->timer->t, WA_TICK_MS, wa_tick);
    if (rc < 0) {
        free(a->timer);
        tls_config_free(a->tls);
        free(a);
        return rc;
    }
    *out = &a->base;
    return 0;
}

/* ---- the interface ---- */

int
arbiter_new(struct arbiter **out, struct wio_loop *loop, const struct wm_config *cfg,
            const struct arbiter_cb *cb, void *ctx)
{
    struct arbiter *a;
    int rc;

    if (cfg->arbiter == CONFIG_ARBITER_ETCD) {
        rc = arbiter_etcd_new(&a, loop, cfg);
        if (rc < 0)
            return rc;
    } else if (cfg->has_witness) {
        rc = arbiter_witness_new(&a, loop, cfg);
        if (rc < 0)
            return rc;
    } else {
        a = calloc(1, sizeof(*a));
        if (a == NULL)
            return -ENOMEM;
        a->ops = &none_ops;
    }
    a->cb = cb;
    a->ctx = ctx;
    *out = a;
    return 0;
}

void
arbiter_free(struct arbiter *a)
{
    if (a != NULL)
        a->ops->destroy(a);
}

/* A NULL arbiter is the "none" one: a caller that made none needs no checks of its own. */

bool
arbiter_reachable(const struct arbiter *a)
{
    return a != NULL && a->ops->reachable(a);
}

void
arbiter_report(struct arbiter *a, const struct arbiter_report *r)
{
    if (a != NULL)
        a->ops->report(a, r);
}

int
arbiter_request(struct arbiter *a, const struct arbiter_request *req)
{
    if (a == NULL)
        return -ENOTCONN;
    if ((unsigned)req->ask > ARBITER_RESYNC)
        return -EINVAL;
    return a->ops->request(a, req);
}

enum arbiter_state
arbiter_state(const struct arbiter *a)
{
    return a != NULL ? a->ops->state(a) : ARBITER_STATE_NONE;
}

const char *
arbiter_kind(const struct arbiter *a)
{
    return a != NULL ? a->ops->kind : none_ops.kind;
}

const char *
arbiter_describe(const struct arbiter *a)
{
    return a != NULL ? a->ops->describe(a) : none_describe(NULL);
}

const char *
arbiter_ask_name(enum arbiter_ask ask)
{
    switch (ask) {
    case ARBITER_PROMOTE:
        return "promotion";
    case ARBITER_EXPOSE:
        return "exposure";
    case ARBITER_RESYNC:
        return "resync";
    }
    return "request";
}
