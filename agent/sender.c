/*
 * sender.c - the source role's session; contract in sender.h.
 *
 * WAL from the primary is gathered into batch (one frame's worth at most, FRAME_MAX_RAW) as
 * long as it is contiguous, and sent when the primary has nothing more for now (on_drained),
 * when the batch is full, or when the next WAL does not continue it: batching never holds data
 * back on an idle link.  When the link's send queue passes SENDER_BACKLOG_PAUSE the primary is
 * not read until it drains (back-pressure).
 *
 * The session ends once: ended is set, and the event goes to the owner from the loop's turn
 * (the owner frees the sender there, never from inside one of its callbacks).
 */
#include "sender.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "frame.h"
#include "log.h"
#include "msg.h"
#include "util.h"

/* Enough to keep the socket fed (the kernel's send buffer holds the bytes in flight: 125 KB at
 * 50 Mbit/s and 20 ms), and the agent's memory small: at 32 MB, a bulk load over a slow link
 * took site A's agent to 74 MB. */
#define SENDER_BACKLOG_PAUSE (4u * 1024 * 1024)

struct sender {
    const struct wm_config *cfg;
    const struct sender_events *ev;
    void *ctx;
    char comp[80];
    struct status_metrics *metrics;
    struct source *src;
    bool identified;
    struct source_identity id;
    struct conn *c; /* the link streaming, NULL before sender_stream */
    bool streaming;
    bool ended;

    uint8_t *batch;
    size_t batch_len;
    uint64_t batch_lsn;

    struct sender_positions pos;
    struct lag_tracker lag;
    bool held;
    uint64_t hold_lsn; /* reports stay at or below this while held */
};

/* The session is over: the owner hears it from the loop (the source delivers on_closed from
 * there; a failed send marks it here and tells at once, which is also from a callback). */
static void
end_session(struct sender *s, int err, const char *why, bool by_link)
{
    if (s->ended)
        return;
    s->ended = true;
    s->batch_len = 0;
    s->ev->ended(s->ctx, err, why, by_link);
}

/*
 * Sends the gathered WAL as one frame.  A send that fails ends the session: the stream starts
 * again from what the sink holds durably, so nothing is skipped.
 */
static void
flush_batch(struct sender *s)
{
    int rc;

    if (s->batch_len == 0 || s->c == NULL || s->ended)
        return;
    rc = conn_send_wal(s->c, s->batch_lsn, s->batch, s->batch_len);
    if (rc < 0) {
        char why[200];
        snprintf(why, sizeof(why), "cannot send WAL at " LSN_FMT ": %s", LSN_ARGS(s->batch_lsn),
                 wire_strerror(rc));
        log_error(s->comp, "%s", why);
        end_session(s, rc, why, true);
        return;
    }
    s->batch_lsn += s->batch_len;
    s->batch_len = 0;
    s->pos.sent = s->batch_lsn;
    lag_sent(&s->lag, s->pos.sent, clock_mono_us());
    if (conn_backlog(s->c) > SENDER_BACKLOG_PAUSE)
        source_pause(s->src, true);
}

/* The positions reported to the primary: the sink's, kept at hold_lsn while held. */
static void
report(struct sender *s)
{
    uint64_t w = s->pos.write, f = s->pos.flush, a = s->pos.apply;
    int rc;

    if (s->held) {
        w = w < s->hold_lsn ? w : s->hold_lsn;
        f = f < s->hold_lsn ? f : s->hold_lsn;
        a = a < s->hold_lsn ? a : s->hold_lsn;
    }
    rc = source_report(s->src, w, f, a);
    if (rc < 0)
        log_warning(s->comp, "cannot report positions to the primary: %s", wire_strerror(rc));
}

/* ---- the primary ---- */

static void
on_src_identified(void *ctx, const struct source_identity *id)
{
    struct sender *s = ctx;

    s->id = *id;
    s->identified = true;
    log_info(s->comp,
             "primary: cluster %" PRIu64 ", timeline %u, at " LSN_FMT "; slot %s restart " LSN_FMT,
             id->system_id, id->timeline, LSN_ARGS(id->xlogpos), s->cfg->slot_name,
             LSN_ARGS(id->slot_restart_lsn));
    s->ev->identified(s->ctx, id);
}

static void
on_src_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct sender *s = ctx;

    s->pos.primary = lsn + len;
    while (len > 0) {
        size_t n;

        if (s->batch_len > 0 &&
            (lsn != s->batch_lsn + s->batch_len || s->batch_len == FRAME_MAX_RAW))
            flush_batch(s);
        /* A session that is ending (send failed) restarts from the sink's durable position:
         * WAL still arriving for it is dropped, not batched. */
        if (s->ended || s->c == NULL) {
            s->batch_len = 0;
            return;
        }
        if (s->batch_len == 0)
            s->batch_lsn = lsn;
        n = FRAME_MAX_RAW - s->batch_len;
        if (n > len)
            n = len;
        memcpy(s->batch + s->batch_len, data, n);
        s->batch_len += n;
        lsn += n;
        data += n;
        len -= n;
    }
}

static void
on_src_drained(void *ctx)
{
    /* The primary has nothing more right now: send what was gathered. */
    flush_batch(ctx);
}

static void
on_src_closed(void *ctx, int err, const char *message)
{
    struct sender *s = ctx;

    if (err == 0)
        log_info(s->comp, "%s", message); /* a clean shutdown: everything was acknowledged */
    else
        log_warning(s->comp, "replication from the primary ended: %s", message);
    end_session(s, err, message, false);
}

/* The primary's WAL continues on a new timeline: the sink hears of it before that WAL. */
static void
on_src_timeline(void *ctx, uint32_t tli, uint64_t switch_lsn, const char *history, size_t len)
{
    struct sender *s = ctx;
    struct msg_timeline tl = {
        .tli = tli, .switch_lsn = switch_lsn, .history = history, .history_len = len};
    int rc;

    /* Bytes of the old timeline past the switch point are not part of the new history. */
    if (s->batch_len > 0 && s->batch_lsn + s->batch_len > switch_lsn)
        s->batch_len = s->batch_lsn < switch_lsn ? (size_t)(switch_lsn - s->batch_lsn) : 0;
    flush_batch(s);
    if (s->ended || s->c == NULL)
        return;
    log_info(s->comp, "the primary's timeline %u begins at " LSN_FMT, tli, LSN_ARGS(switch_lsn));
    rc = conn_send_timeline(s->c, &tl);
    if (rc < 0) {
        char why[160];
        snprintf(why, sizeof(why), "cannot send TIMELINE %u: %s", tli, wire_strerror(rc));
        log_error(s->comp, "%s", why);
        end_session(s, rc, why, true);
    }
}

static const struct source_ops src_ops = {
    .on_identified = on_src_identified,
    .on_wal = on_src_wal,
    .on_drained = on_src_drained,
    .on_closed = on_src_closed,
    .on_timeline = on_src_timeline,
};

/* ---- the link ---- */

void
sender_hello(const struct sender *s, struct msg_hello *hello)
{
    hello->role = MSG_ROLE_SOURCE;
    hello->system_id = s->id.system_id;
    hello->timeline = s->id.timeline;
    hello->durable_lsn = s->id.xlogpos;
}

int
sender_check_hello(const struct sender *s, const struct msg_hello *peer, char *why, size_t whylen)
{
    if (peer->role != MSG_ROLE_SINK) {
        snprintf(why, whylen, "%s is a %s at epoch %" PRIu64 ", and so is %s: two primaries?",
                 peer->node_name, msg_role_name(peer->role), peer->epoch, s->cfg->node_name);
        return WIRE_EPROTO;
    }
    if (peer->system_id != 0 && peer->system_id != s->id.system_id) {
        snprintf(why, whylen,
                 "system identifier mismatch: sink %s mirrors cluster %" PRIu64
                 ", this primary is cluster %" PRIu64,
                 peer->node_name, peer->system_id, s->id.system_id);
        return WIRE_EPROTO;
    }
    return 0;
}

int
sender_stream(struct sender *s, struct conn *c, const struct msg_hello *peer)
{
    int rc;

    /* Resume at the segment boundary of what the sink holds durably (source.h rounds). */
    log_info(s->comp, "sink %s holds WAL up to " LSN_FMT ": streaming from its segment",
             peer->node_name, LSN_ARGS(peer->durable_lsn));
    s->c = c;
    rc = source_start(s->src, peer->durable_lsn, peer->timeline);
    if (rc < 0) {
        log_error(s->comp, "cannot start streaming: %s", wire_strerror(rc));
        s->c = NULL;
        return rc;
    }
    s->streaming = true;
    return 0;
}

bool
sender_streaming(const struct sender *s)
{
    return s != NULL && s->streaming && !s->ended;
}

void
sender_ack(struct sender *s, const struct msg_ack *ack)
{
    uint64_t now = clock_mono_us();

    if (!s->streaming || s->ended)
        return;
    /* Monotonic: a late or reordered ACK never moves a position back. */
    if (ack->write_lsn > s->pos.write)
        s->pos.write = ack->write_lsn;
    if (ack->flush_lsn > s->pos.flush)
        s->pos.flush = ack->flush_lsn;
    if (ack->apply_lsn > s->pos.apply)
        s->pos.apply = ack->apply_lsn;
    lag_confirmed(&s->lag, LAG_WRITE, s->pos.write, now);
    /* The ACK round trip: the newest WAL this ACK confirms flushed, from its sending. */
    if (lag_confirmed(&s->lag, LAG_FLUSH, s->pos.flush, now) > 0)
        status_hist_observe(&s->metrics->hist[STATUS_HIST_ACK_RTT], STATUS_HIST_ACK_RTT,
                            s->lag.lag_s[LAG_FLUSH]);
    lag_confirmed(&s->lag, LAG_APPLY, s->pos.apply, now);
    s->metrics->acks++;
    report(s);
    s->ev->acked(s->ctx);
}

void
sender_drained(struct sender *s)
{
    source_pause(s->src, false);
}

void
sender_hold(struct sender *s)
{
    s->held = true;
    s->hold_lsn = s->pos.primary;
    log_debug(s->comp, "reports held at " LSN_FMT, LSN_ARGS(s->hold_lsn));
}

void
sender_release(struct sender *s)
{
    if (!s->held)
        return;
    s->held = false;
    if (s->streaming && !s->ended)
        report(s);
}

/* ---- life ---- */

int
sender_new(struct sender **out, struct wio_loop *loop, const struct wm_config *cfg,
           struct status_metrics *metrics, const struct sender_events *ev, void *ctx)
{
    struct sender *s = calloc(1, sizeof(*s));
    int rc;

    if (s == NULL)
        return -ENOMEM;
    s->batch = malloc(FRAME_MAX_RAW);
    if (s->batch == NULL) {
        free(s);
        return -ENOMEM;
    }
    s->cfg = cfg;
    s->ev = ev;
    s->ctx = ctx;
    s->metrics = metrics;
    snprintf(s->comp, sizeof(s->comp), "sender[%s]", cfg->node_name);
    lag_reset(&s->lag);
    rc = source_new(&s->src, loop, cfg->pg_conninfo, cfg->slot_name, cfg->application_name,
                    &src_ops, s);
    if (rc < 0) {
        log_error(s->comp, "cannot start replication from the primary: %s", wire_strerror(rc));
        free(s->batch);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void
sender_free(struct sender *s)
{
    if (s == NULL)
        return;
    source_free(s->src);
    free(s->batch);
    free(s);
}

const struct source_identity *
sender_identity(const struct sender *s)
{
    return s != NULL && s->identified ? &s->id : NULL;
}

void
sender_positions(const struct sender *s, struct sender_positions *p)
{
    *p = s->pos;
}

uint64_t
sender_waiting_us(const struct sender *s, enum lag_stage stage)
{
    return lag_waiting_us(&s->lag, stage, clock_mono_us());
}

void
sender_status(const struct sender *s, struct status_snapshot *st)
{
    uint64_t now = clock_mono_us(), head = s->pos.primary;

    st->system_id = s->id.system_id;
    st->timeline = s->id.timeline;
    st->primary_lsn = s->pos.primary;
    st->sent_lsn = s->pos.sent;
    st->write_lsn = s->pos.write;
    st->flush_lsn = s->pos.flush;
    st->apply_lsn = s->pos.apply;
    st->write_lag_bytes = head > s->pos.write ? head - s->pos.write : 0;
    st->flush_lag_bytes = head > s->pos.flush ? head - s->pos.flush : 0;
    st->apply_lag_bytes = head > s->pos.apply ? head - s->pos.apply : 0;
    st->write_lag_s = lag_now(&s->lag, LAG_WRITE, now);
    st->flush_lag_s = lag_now(&s->lag, LAG_FLUSH, now);
    st->apply_lag_s = lag_now(&s->lag, LAG_APPLY, now);
}
