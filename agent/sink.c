/*
 * sink.c - the sink role; contract in sink.h.
 *
 * Positions: appended = end of what was handed to the spool; written / flushed = the spool's
 * reports (on_written, on_flushed); applied = the standby's replay, never above flushed.
 * flush_requested is the appended position covered by the fdatasync in flight: the next one
 * starts when it completes (group flush).  Lag in seconds is measured on the positions as
 * PostgreSQL's LagTracker does (lag.h): when each appended position was first seen at a turn
 * of the loop, until the spool wrote and flushed it and the standby replayed it.
 */
#include "sink.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "clock.h"
#include "lag.h"
#include "log.h"
#include "spool.h"
#include "util.h"
#include "walsrv.h"

/*
 * Back-pressure: while the spool holds more than SINK_BACKLOG_PAUSE bytes of WAL in memory
 * (appended, not yet written: it waits for a segment's preparation), the link's input is
 * paused, so that TCP holds the source back; it resumes below SINK_BACKLOG_RESUME.  What one
 * loop turn can still deliver after the pause is bounded by the loop's receive buffers.
 */
#define SINK_BACKLOG_PAUSE (2u * 1024 * 1024)
#define SINK_BACKLOG_RESUME (512u * 1024)

struct sink {
    const struct wm_config *cfg;
    const struct sink_events *ev;
    void *ctx;
    char comp[80];
    struct status_metrics *metrics;
    uint64_t local_sysid;
    uint32_t local_segsize;
    struct spool *spool;
    struct walsrv *walsrv;

    uint64_t appended;         /* end of what was handed to the spool */
    uint64_t written;          /* spool write position */
    uint64_t flushed;          /* spool flush position */
    uint64_t applied;          /* the standby's replay position, <= flushed */
    uint64_t flush_requested;  /* appended position covered by the last spool_flush */
    uint64_t flush_started_us; /* when that flush was asked; 0: none in flight */
    bool ack_dirty;
    struct msg_ack last_ack;
    uint64_t want_start; /* an empty spool asks the source for WAL from here ... */
    uint32_t want_tli;   /* ... on this timeline (0: the source's choice) */

    /* The spool has no space: WAL from the link is dropped, unacknowledged. */
    bool wal_dropped;        /* on the current stream since the stall began */
    uint64_t stall_dropped;  /* bytes dropped so, for the log */
    uint64_t stall_since_us; /* unix time the stall was noticed; 0: none */
    bool failed;
    const struct conn *paused; /* the link whose input is paused (back-pressure); NULL: none */

    struct lag_tracker lag;
    uint64_t lag_lsn; /* the last position noted in lag */
};

/* ---- the spool's reports ---- */

static void
on_spool_written(void *ctx, uint64_t write_lsn)
{
    struct sink *k = ctx;

    if (write_lsn > k->written)
        k->written = write_lsn;
    k->ack_dirty = true;
}

static void
on_spool_flushed(void *ctx, uint64_t flush_lsn)
{
    struct sink *k = ctx;

    if (flush_lsn > k->flushed)
        k->flushed = flush_lsn;
    k->ack_dirty = true;
    if (k->flush_started_us != 0 && k->flushed >= k->flush_requested) {
        status_hist_observe(&k->metrics->hist[STATUS_HIST_FSYNC], STATUS_HIST_FSYNC,
                            (double)(clock_mono_us() - k->flush_started_us) / 1e6);
        k->metrics->spool_flushes++;
        k->flush_started_us = 0;
    }
    if (k->walsrv != NULL)
        walsrv_wal_durable(k->walsrv, k->flushed);
}

static void
fail(struct sink *k, int err, const char *what)
{
    char why[600];

    if (k->failed)
        return;
    k->failed = true;
    snprintf(why, sizeof(why), "spool: %.400s: %s", what, wire_strerror(err));
    k->ev->failed(k->ctx, why);
}

static void
on_spool_failed(void *ctx, int err, const char *what)
{
    fail(ctx, err, what);
}

/*
 * True while the spool waits for space (spool.h).  The stall may begin inside spool_append or
 * in one of its completions; whoever sees it first logs it.
 */
static bool
stalled(struct sink *k)
{
    if (k->spool == NULL || spool_stalled(k->spool, NULL) == 0)
        return false;
    if (k->stall_since_us == 0) {
        k->stall_since_us = clock_unix_us();
        k->stall_dropped = 0;
        log_error(k->comp,
                  "commits are not acknowledged past " LSN_FMT " until the spool has space; WAL "
                  "that arrives meanwhile is dropped and sent again afterwards",
                  LSN_ARGS(k->flushed));
    }
    return true;
}

/* The spool has space again (it wrote what waited): the dropped WAL must come again. */
static void
on_spool_unstalled(void *ctx)
{
    struct sink *k = ctx;

    log_info(k->comp, "the spool has space again after %.1f s (%" PRIu64 " bytes of WAL dropped)%s",
             k->stall_since_us != 0 ? (double)(clock_unix_us() - k->stall_since_us) / 1e6 : 0.0,
             k->stall_dropped, k->wal_dropped ? ": restarting the stream" : "");
    k->stall_since_us = 0;
    if (k->wal_dropped)
        k->ev->restart_stream(k->ctx, "the sink's spool has space again: restarting the stream "
                                      "from what it holds");
    k->wal_dropped = false;
}

static const struct spool_ops spool_cb = {
    .on_written = on_spool_written,
    .on_flushed = on_spool_flushed,
    .on_failed = on_spool_failed,
    .on_unstalled = on_spool_unstalled,
};

static void
on_standby_reply(void *ctx, const char *application_name, uint64_t write_lsn, uint64_t flush_lsn,
                 uint64_t apply_lsn)
{
    struct sink *k = ctx;
    uint64_t apply = apply_lsn < k->flushed ? apply_lsn : k->flushed;

    (void)application_name;
    (void)write_lsn;
    (void)flush_lsn;
    if (apply > k->applied) {
        k->applied = apply;
        k->ack_dirty = true;
    }
}

static const struct walsrv_ops walsrv_cb = {
    .on_reply = on_standby_reply,
};

/* ---- the link ---- */

void
sink_hello(const struct sink *k, struct msg_hello *hello)
{
    const struct spool_identity *id = spool_identity(k->spool);

    hello->role = MSG_ROLE_SINK;
    hello->system_id = id->system_id;
    hello->timeline = id->timeline != 0 ? id->timeline : k->want_tli;
    hello->durable_lsn = k->flushed != 0 ? k->flushed : k->want_start;
    hello->applied_lsn = k->applied;
}

int
sink_check_hello(struct sink *k, const struct msg_hello *peer, char *why, size_t whylen)
{
    const struct spool_identity *have = spool_identity(k->spool);
    struct spool_identity id = {.system_id = peer->system_id,
                                .seg_size = k->local_segsize,
                                .timeline = have->system_id != 0 ? have->timeline
                                            : k->want_tli != 0   ? k->want_tli
                                                                 : peer->timeline};

    if (peer->role != MSG_ROLE_SOURCE) {
        snprintf(why, whylen, "%s is a %s, not a source", peer->node_name,
                 msg_role_name(peer->role));
        return WIRE_EPROTO;
    }
    if (peer->system_id != k->local_sysid) {
        snprintf(why, whylen,
                 "system identifier mismatch: source %s streams cluster %" PRIu64
                 ", the standby here is cluster %" PRIu64,
                 peer->node_name, peer->system_id, k->local_sysid);
        return WIRE_EPROTO;
    }
    if (spool_set_identity(k->spool, &id) < 0) {
        snprintf(why, whylen, "the spool in %s holds WAL of another cluster", k->cfg->spool_dir);
        return WIRE_EPROTO;
    }
    return 0;
}

void
sink_link_up(struct sink *k)
{
    k->wal_dropped = false; /* a new stream starts from what the spool holds */
    k->paused = NULL;       /* a new link's input runs */
    k->ack_dirty = true;    /* tell the new source where we are */
}

/*
 * Pauses the link's input while the spool's backlog is above SINK_BACKLOG_PAUSE, resumes it
 * below SINK_BACKLOG_RESUME.  Not while the spool waits for space: WAL is then dropped
 * (sink_wal), and the link must still carry the peer's other frames.
 */
static void
input_backpressure(struct sink *k, struct conn *c)
{
    uint64_t backlog = spool_backlog(k->spool);
    bool stall = stalled(k);

    if (k->paused != NULL && k->paused != c)
        k->paused = NULL; /* that link is gone */
    if (c == NULL)
        return;
    if (k->paused == NULL && !stall && backlog > SINK_BACKLOG_PAUSE) {
        log_debug(k->comp, "%" PRIu64 " bytes of WAL wait in memory: pausing the link's input",
                  backlog);
        conn_pause_input(c, true);
        k->paused = c;
    } else if (k->paused != NULL && (stall || backlog < SINK_BACKLOG_RESUME)) {
        log_debug(k->comp, "%" PRIu64 " bytes of WAL wait in memory: resuming the link's input",
                  backlog);
        conn_pause_input(c, false);
        k->paused = NULL;
    }
}

int
sink_wal(struct sink *k, struct conn *c, uint64_t lsn, const uint8_t *data, size_t len, char *why,
         size_t whylen)
{
    if (k->failed)
        return 0;
    if (stalled(k)) {
        /* It would wait in memory: dropped, and sent again after the stream restarts. */
        k->wal_dropped = true;
        k->stall_dropped += len;
        return 0;
    }
    if (spool_append(k->spool, lsn, data, len) < 0) {
        snprintf(why, whylen, "WAL at " LSN_FMT " does not continue the spool (at " LSN_FMT ")",
                 LSN_ARGS(lsn), LSN_ARGS(spool_write_lsn(k->spool)));
        return WIRE_EPROTO;
    }
    if (lsn + len > k->appended)
        k->appended = lsn + len;
    input_backpressure(k, c);
    return 0;
}

int
sink_timeline(struct sink *k, const struct msg_timeline *tl, char *why, size_t whylen)
{
    int rc;

    if (k->failed)
        return 0;
    if (stalled(k)) {
        k->wal_dropped = true; /* comes again with the restarted stream */
        return 0;
    }
    rc = spool_set_timeline(k->spool, tl->tli, tl->switch_lsn, tl->history, tl->history_len);
    if (rc < 0) {
        snprintf(why, whylen, "cannot switch the spool to timeline %u at " LSN_FMT ": %s", tl->tli,
                 LSN_ARGS(tl->switch_lsn), strerror(-rc));
        return rc;
    }
    log_info(k->comp, "timeline %u from " LSN_FMT, tl->tli, LSN_ARGS(tl->switch_lsn));
    walsrv_timeline_switched(k->walsrv);
    return 0;
}

void
sink_turn(struct sink *k, struct conn *c)
{
    int rc;

    if (k->failed)
        return;
    (void)stalled(k);
    /* Group flush: one fdatasync for everything appended since the last one completed. */
    if (k->appended > k->flush_requested && k->flushed >= k->flush_requested) {
        /* Set first: with the inline fdatasync, on_spool_flushed comes from inside
         * spool_flush, and the ack below goes out in this same turn. */
        k->flush_requested = k->appended;
        k->flush_started_us = clock_mono_us();
        rc = spool_flush(k->spool);
        if (rc < 0) {
            fail(k, rc, "cannot request a spool flush");
            return;
        }
        if (k->failed)
            return;
    }
    input_backpressure(k, c);
    if (k->ack_dirty && c != NULL) {
        struct msg_ack ack = {.write_lsn = k->written,
                              .flush_lsn = k->flushed,
                              .apply_lsn = k->applied,
                              .send_time_us = clock_unix_us()};
        /* The spool reports write and flush separately; flush never passes write. */
        if (ack.write_lsn < ack.flush_lsn)
            ack.write_lsn = ack.flush_lsn;
        if (memcmp(&ack, &k->last_ack, offsetof(struct msg_ack, send_time_us)) != 0) {
            rc = conn_send_ack(c, &ack);
            if (rc < 0) {
                log_warning(k->comp, "cannot send ACK: %s", wire_strerror(rc));
            } else {
                k->last_ack = ack;
                k->metrics->acks++;
            }
        }
        k->ack_dirty = false;
    }
}

/* ---- life ---- */

/*
 * A restarted sink does not know what its standby needs until the standby streams again, and
 * the standby may be down for long (it is what a rejoin or a stopped standby looks like).
 * Until it streams, the spool keeps what the standby needs to start: the redo point of its
 * latest restartpoint, or a backup_label's start - everything after that point the standby
 * may lack.  Without this, retention would keep only spool_keep behind the flush position, and
 * a standby further behind could never catch up.  The WAL server replaces the mark with the
 * standby's own flush position as soon as it streams.
 */
static void
retain_for_standby(struct sink *k, const struct pgctl_control *ctl)
{
    uint64_t lsn;
    uint32_t tli;
    char err[512];

    if (pgctl_wal_start(k->cfg->pgdata, ctl, &lsn, &tli, err, sizeof(err)) < 0) {
        log_warning(k->comp, "%s: the spool keeps only spool_keep until the standby streams",
                    err);
        return;
    }
    if (lsn == 0)
        return;
    log_info(k->comp,
             "keeping WAL from " LSN_FMT " (the standby's redo point) until the standby streams",
             LSN_ARGS(lsn));
    spool_set_retain_lsn(k->spool, lsn);
}

int
sink_open(struct sink **out, struct wio_loop *loop, const struct wm_config *cfg,
          const struct pgctl_control *ctl, bool fresh, struct status_metrics *metrics,
          const struct sink_events *ev, void *ctx)
{
    struct sink *k = calloc(1, sizeof(*k));
    char err[512];
    uint64_t keep;
    int rc;

    if (k == NULL)
        return -ENOMEM;
    k->cfg = cfg;
    k->ev = ev;
    k->ctx = ctx;
    k->metrics = metrics;
    k->local_sysid = ctl->system_id;
    k->local_segsize = ctl->seg_size;
    snprintf(k->comp, sizeof(k->comp), "sink[%s]", cfg->node_name);
    lag_reset(&k->lag);
    if (fresh) {
        rc = spool_remove_all(cfg->spool_dir, err, sizeof(err));
        if (rc < 0) {
            log_error(k->comp, "cannot empty the spool %s: %s", cfg->spool_dir, err);
            goto fail;
        }
        /* The new standby reads WAL from its last checkpoint's redo point on. */
        rc = pgctl_wal_start(cfg->pgdata, ctl, &k->want_start, &k->want_tli, err, sizeof(err));
        if (rc < 0) {
            log_error(k->comp, "%s", err);
            goto fail;
        }
        k->want_start -= k->want_start % k->local_segsize;
    }
    keep = cfg->spool_keep_segments ? cfg->spool_keep * k->local_segsize : cfg->spool_keep;
    rc = spool_open(&k->spool, loop, cfg->spool_dir, keep, &spool_cb, k, err, sizeof(err));
    if (rc < 0) {
        log_error(k->comp, "spool %s: %s", cfg->spool_dir, err);
        goto fail;
    }
    k->written = k->flushed = k->appended = k->flush_requested = spool_flush_lsn(k->spool);
    if (!fresh)
        retain_for_standby(k, ctl);
    rc = walsrv_new(&k->walsrv, loop, cfg->wal_listen.text, k->spool, &walsrv_cb, k, err,
                    sizeof(err));
    if (rc < 0) {
        log_error(k->comp, "WAL server on %s: %s", cfg->wal_listen.text, err);
        goto fail;
    }
    log_info(k->comp, "sink ready: WAL server on %s, spool %s at " LSN_FMT "%s",
             cfg->wal_listen.text, cfg->spool_dir, LSN_ARGS(k->flushed), fresh ? " (fresh)" : "");
    *out = k;
    return 0;

fail:
    sink_close(k);
    return rc;
}

void
sink_close(struct sink *k)
{
    if (k == NULL)
        return;
    if (k->walsrv != NULL)
        walsrv_free(k->walsrv);
    if (k->spool != NULL)
        spool_close(k->spool);
    free(k);
}

/* ---- status ---- */

uint64_t
sink_flushed(const struct sink *k)
{
    return k->flushed;
}

void
sink_lag_note(struct sink *k)
{
    uint64_t now = clock_mono_us();

    if (k->appended < k->lag_lsn) {
        lag_reset(&k->lag); /* a fresh spool */
        k->lag_lsn = 0;
    }
    /* A full ring takes no more samples (PostgreSQL's LagTracker lowers its sampling rate
     * too): dropping the oldest would hide how long a stalled stage has waited. */
    if (k->appended > k->lag_lsn && lag_sent_bounded(&k->lag, k->appended, now))
        k->lag_lsn = k->appended;
    lag_confirmed(&k->lag, LAG_WRITE, k->written, now);
    lag_confirmed(&k->lag, LAG_FLUSH, k->flushed, now);
    lag_confirmed(&k->lag, LAG_APPLY, k->applied, now);
}

void
sink_status(struct sink *k, bool link_up, struct status_snapshot *st)
{
    const struct spool_identity *id = spool_identity(k->spool);
    uint64_t now = clock_mono_us();
    const char *what;

    snprintf(st->role, sizeof(st->role), "sink");
    snprintf(st->pg_state, sizeof(st->pg_state), "%s",
             walsrv_streaming_clients(k->walsrv) > 0 ? "standby" : "unknown");
    st->system_id = id->system_id;
    st->timeline = id->timeline;
    st->primary_lsn = k->appended;
    st->sent_lsn = k->appended;
    st->write_lsn = k->written;
    st->flush_lsn = k->flushed;
    st->apply_lsn = k->applied;
    st->write_lag_bytes = k->appended > k->written ? k->appended - k->written : 0;
    st->flush_lag_bytes = k->appended > k->flushed ? k->appended - k->flushed : 0;
    st->apply_lag_bytes = k->appended > k->applied ? k->appended - k->applied : 0;
    st->write_lag_s = lag_now(&k->lag, LAG_WRITE, now);
    st->flush_lag_s = lag_now(&k->lag, LAG_FLUSH, now);
    st->apply_lag_s = lag_now(&k->lag, LAG_APPLY, now);
    snprintf(st->sync_state, sizeof(st->sync_state), "%s", link_up ? "sync" : "down");
    if (stalled(k)) { /* a stall that began in a completion is noticed here at the latest */
        spool_stalled(k->spool, &what);
        snprintf(st->spool_stall, sizeof(st->spool_stall), "%s", what);
        st->spool_stalled_since_unix_us = k->stall_since_us;
    }
    {
        struct statvfs fs;
        st->spool_free_bytes =
            statvfs(k->cfg->spool_dir, &fs) == 0 ? (int64_t)fs.f_bavail * (int64_t)fs.f_frsize : -1;
    }
}
