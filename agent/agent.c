/*
 * agent.c - the agent daemon's core: its role, the events that change it, and the loop;
 * contract in agent.h.
 *
 * Roles (enum agent_role) and what moves between them (agent_dispatch logs every move):
 *
 *   STARTING --PostgreSQL is a standby, or pgdata has standby.signal----------> SINK
 *   STARTING --PostgreSQL is a primary (or, down, the arbiter / peer confirms
 *              this node holds the current epoch: it is started)--------------> SOURCE
 *   STARTING --another node holds a newer epoch (state file, arbiter, peer)---> FENCED
 *   SOURCE   --a newer epoch held elsewhere-------------------------------------> FENCED
 *   SOURCE   --switchover: the peer promoted, our standby started (op)---------> SINK
 *   SINK     --switchover or fail-over: promoted (op)---------------------------> SOURCE
 *   FENCED   --rejoin: rewound and started as a standby (op)-------------------> SINK
 *
 * The parts own their state: the peer links (link.h), the source's session with the primary
 * (sender.h), the sink's spool and WAL server (sink.h), the operations (op.h), the arbiter
 * (arbiter.h), SQL on the local PostgreSQL (pgconn.h, syncrep.h), maintenance windows
 * (windows.h).  This file wires them: their callbacks record what happened (pending events)
 * and the decisions are taken in agent_turn(), once per turn of the io_uring loop, after all
 * that turn's completions - the durability step of the sink included: drain what the link
 * delivered, write it, one fdatasync, one ACK.  Messages on the link and the arbiter's
 * verdicts go straight to the operation in progress.
 *
 * Time: every timed thing is a deadline in wake[] (enum agent_wake); the loop waits until the
 * earliest one, or a completion, and nothing is polled at a fixed interval.
 *
 * Availability (docs/operations.md): in maximum_availability the source watches its standby's
 * confirmations.  When there has been no stream, or commits have waited for a confirmation,
 * for standby_loss_timeout, it asks the arbiter to run exposed (an operation: op.h).  While
 * exposed it measures the WAL at risk; once the standby has caught up the operation puts the
 * synchronous requirement back, proves it in force, and has the arbiter record the standby
 * synchronous again.
 */
#include "agent.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "arbiter.h"
#include "clock.h"
#include "fdwatch.h"
#include "httpapi.h"
#include "lag.h"
#include "link.h"
#include "log.h"
#include "maint.h"
#include "op.h"
#include "pgconn.h"
#include "pgctl.h"
#include "sender.h"
#include "sink.h"
#include "state.h"
#include "status.h"
#include "syncrep.h"
#include "util.h"
#include "windows.h"

#define AGENT_RETRY_MS 1000       /* a lost primary session or link is tried again */
#define AGENT_SWITCH_RETRY_MS 20  /* ... the link, by a switchover's new primary (link_retry_ms) */
#define AGENT_STATUS_EVERY_MS 100 /* the snapshot for the HTTP API */
#define AGENT_JOB_POLL_MS 20      /* a job without a pidfd is polled this often */
#define AGENT_OUTCOME_KEEP_MS 30000 /* an operator's outcome outlives automatic retries */
#define AGENT_SQL_TIMEOUT_MS 5000   /* SQL on the local PostgreSQL */
#define AGENT_WATCH_MS 1000         /* standby loss and catch-up are looked at this often */
#define AGENT_CATCHUP_BYTES (16u << 20)

enum agent_role {
    ROLE_STARTING, /* learning its place: the local PostgreSQL, the arbiter, the peer */
    ROLE_SOURCE,   /* beside the primary */
    ROLE_SINK,     /* beside the standby */
    ROLE_FENCED,   /* a stale primary: its PostgreSQL stopped, waiting to rejoin */
};

static const char *const role_names[] = {"starting", "source", "sink", "fenced"};

/* What callbacks record for the turn. */
enum agent_event {
    EV_PRIMARY_ENDED, /* the source's session with the primary ended */
    EV_LINK_DOWN,     /* the active link, or a connect we made, ended */
    EV_NEWS,          /* a newer epoch record (peer, arbiter) */
    EV_SPOOL_FAILED,  /* stop: nothing more is safe */
    EV_COUNT,
};

static const char *const event_names[] = {"primary-ended", "link-down", "news", "spool-failed"};

enum agent_wake {
    WAKE_SESSION,   /* source: start a session with the primary */
    WAKE_LINK,      /* source: connect to the sink */
    WAKE_STATUS,    /* publish the snapshot */
    WAKE_FAILOVER,  /* sink: the source lost for failover_timeout */
    WAKE_WATCH,     /* source: standby loss, catch-up, WAL at risk */
    WAKE_OP,        /* the operation's own deadline */
    WAKE_JOB,       /* a job without a pidfd */
    WAKE_SCHEDULED, /* switchover --at */
    WAKE_START,     /* starting: look again */
    WAKE_COUNT,
};

struct agent {
    /* what every part needs */
    const struct wm_config *cfg;
    struct wio_loop *loop;
    char comp[80];
    enum agent_role role;
    struct wm_state state;     /* the epoch (fencing token), its holder and mark: durable */
    uint64_t wake[WAKE_COUNT]; /* monotonic ms deadlines, 0 = none */
    unsigned pending;          /* 1 << enum agent_event */
    int exit_status;
    bool failed;

    /* the parts */
    struct link_set *links;
    struct sender *sender; /* SOURCE: the session with the primary, or NULL */
    struct sink *sink;     /* SINK */
    struct arbiter *arbiter;
    struct op op;
    struct pgctl_job job; /* the operation's child program */
    struct fdwatch *job_watch;
    struct pgconn *pg; /* SQL on the local PostgreSQL */
    struct syncrep *syncrep;
    struct windows windows;

    /* learnt in callbacks, acted on in the turn */
    int ended_err;
    bool ended_by_link; /* the session ended on a failed send to the sink, not the primary */
    char ended_why[256];
    char down_why[256];
    struct wm_state news;

    /* SOURCE */
    uint64_t stream_lost_ms;  /* since when no stream to the sink (0: streaming) */
    int commit_stage;         /* the confirmation commits wait for (enum lag_stage), -1: none */
    uint64_t catchup_lsn;     /* the primary's flush position when the stream began, or
                               * when an exposure was asked for, if later */
    uint64_t head_lsn;        /* the primary's flush position, as last known */
    uint64_t standby_lsn;     /* the standby's durable end, as last confirmed (any session) */
    bool primary_up;          /* the local primary answered, and has not been lost since (a
                               * session restarted for the link's sake leaves it up) */
    bool watch_query;         /* a standby-loss or head query is in flight */
    bool expose_unreachable;  /* logged once: the arbiter cannot be reached */
    uint64_t expose_again_ms; /* an exposure that failed is asked again from then on */
    /* SINK */
    uint64_t link_lost_ms; /* since when no source is connected */
    /* STARTING */
    bool start_query;    /* pg_is_in_recovery() in flight */
    bool start_logged;   /* why it waits, said once */
    bool peer_confirmed; /* the peer is a sink at an epoch no newer than ours */
    bool pg_starting;    /* pg_ctl start of the primary this node holds */

    /* status and the HTTP API */
    struct status_board board;
    struct httpapi *http;
    struct maint_store *maint;
    struct status_metrics metrics;
    uint64_t started_us;
    bool failover_paused;
    char last_error[256];
    uint64_t last_op_id;
    enum op_kind last_op;
    bool last_op_ok;
    char last_op_result[256];
    uint64_t last_op_at_ms; /* when an operator's request (id != 0) last ended */
    int64_t last_unavailability_us;
    uint64_t switchovers, failovers;
    uint64_t incidents_seen;
    struct status_op_request scheduled; /* switchover --at, waiting for its time (id 0: none) */
    struct status_op_request held;      /* a fail-over request waiting for the automatic one */
    uint64_t at_risk_bytes, at_risk_peak;
    double exposed_s_done;  /* exposures that ended, seconds */
    double last_exposure_s; /* the last one that ended */
};

static void agent_dispatch(struct agent *a, enum agent_event ev);
static int become_source(struct agent *a);
static void start_session(struct agent *a);
static void start_pg_done(struct agent *a, int code);

/* ---- small things ---- */

static void
wake_at(struct agent *a, enum agent_wake w, uint64_t at_ms)
{
    a->wake[w] = at_ms;
}

static void
post(struct agent *a, enum agent_event ev)
{
    a->pending |= 1u << ev;
}

static void __attribute__((format(printf, 2, 3)))
set_last_error(struct agent *a, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(a->last_error, sizeof(a->last_error), fmt, ap);
    va_end(ap);
}

static void
set_role(struct agent *a, enum agent_role role, const char *why)
{
    if (a->role != role)
        log_info(a->comp, "%s -> %s (epoch %" PRIu64 "): %s", role_names[a->role], role_names[role],
                 a->state.epoch, why);
    a->role = role;
}

static const char *
mark_text(const struct wm_state *e, char *buf, size_t cap)
{
    time_t t = (time_t)(e->exposed_unix_us / 1000000);
    struct tm tm;
    char when[40];

    if (!state_exposed(e)) {
        snprintf(buf, cap, "synchronous");
        return buf;
    }
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    snprintf(buf, cap, "running exposed since " LSN_FMT " (%s)", LSN_ARGS(e->exposed_lsn), when);
    return buf;
}

/* ---- epochs ---- */

/*
 * Records rec (a newer epoch, or our epoch's record with another holder or mark) durably
 * before anything acts on it.  A failure to save is fatal: an agent that cannot remember that
 * it was fenced must not go on.  tell_links: the live links' frames carry the new epoch at
 * once; otherwise (an exposure, a resync: the link stays up) the peer is told by a FENCE and
 * the link's epoch follows when the peer's frames carry it.
 */
static int
raise_epoch(struct agent *a, const struct wm_state *rec, bool tell_links)
{
    struct wm_state st = *rec;
    char err[512], m[120];
    int rc;

    if (st.epoch < a->state.epoch ||
        (st.epoch == a->state.epoch && strcmp(st.primary, a->state.primary) == 0 &&
         st.exposed_lsn == a->state.exposed_lsn && st.exposed_unix_us == a->state.exposed_unix_us))
        return 0;
    if (st.changed_unix_us == 0)
        st.changed_unix_us = clock_unix_us();
    rc = state_save(a->cfg->state_dir, &st, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "cannot record epoch %" PRIu64 ", stopping: %s", st.epoch, err);
        a->failed = true;
        a->exit_status = 1;
        return rc;
    }
    log_info(a->comp, "epoch %" PRIu64 " -> %" PRIu64 ", held by %s, %s", a->state.epoch, st.epoch,
             st.primary[0] != '\0' ? st.primary : "?", mark_text(&st, m, sizeof(m)));
    if (state_exposed(&a->state) && !state_exposed(&st) &&
        strcmp(a->state.primary, a->cfg->node_name) == 0) {
        a->last_exposure_s = (double)(clock_unix_us() - a->state.exposed_unix_us) / 1e6;
        a->exposed_s_done += a->last_exposure_s;
    }
    if (state_exposed(&st) && strcmp(st.primary, a->cfg->node_name) == 0 &&
        st.exposed_unix_us != a->state.exposed_unix_us)
        a->at_risk_peak = 0; /* a new exposure */
    a->state = st;
    if (tell_links) {
        link_set_epoch(a->links, st.epoch);
    } else if (link_active(a->links) != NULL && strcmp(st.primary, a->cfg->node_name) == 0) {
        /* Our own new record (an exposure, a resync): the peer learns it from us. */
        struct msg_control news = {.kind = MSG_CTL_FENCE,
                                   .value = st.epoch,
                                   .mark_lsn = st.exposed_lsn,
                                   .mark_unix_us = st.exposed_unix_us};

        snprintf(news.text, sizeof(news.text), "%s", st.primary);
        if (conn_send_control(link_active(a->links), &news) < 0)
            log_warning(a->comp, "cannot tell %s of epoch %" PRIu64, a->cfg->peer.name, st.epoch);
    }
    return 0;
}

/*
 * A record learnt from the peer or the arbiter, for the turn (never acted on in a callback):
 * a newer epoch, or more of one we know (its holder and mark after its bare number), or our
 * epoch's record as the arbiter or the holder tells it.
 */
static void
learn(struct agent *a, const struct wm_state *rec)
{
    const struct wm_state *best = a->news.epoch > a->state.epoch ? &a->news : &a->state;

    if (rec->epoch < best->epoch)
        return;
    if (rec->epoch == best->epoch &&
        (rec->primary[0] == '\0' ||
         (strcmp(rec->primary, best->primary) == 0 && rec->exposed_lsn == best->exposed_lsn &&
          rec->exposed_unix_us == best->exposed_unix_us)))
        return; /* nothing new */
    a->news = *rec;
    post(a, EV_NEWS);
}

/* ---- the local PostgreSQL's jobs ---- */

static void job_watch_io(void *ctx, bool write, int res);
static void job_watch_timer(void *ctx);
static const struct fdwatch_ops job_watch_ops = {.on_io = job_watch_io,
                                                 .on_timer = job_watch_timer};

static void
job_reaped(struct agent *a)
{
    struct op_event ev = {.kind = OPE_JOB_DONE, .code = a->job.exit_code};
    int rc = pgctl_poll(&a->job);

    if (rc == 0)
        return;
    fdwatch_release(a->job_watch);
    a->job_watch = NULL;
    a->wake[WAKE_JOB] = 0;
    ev.code = rc < 0 ? 255 : a->job.exit_code;
    log_debug(a->comp, "%s exited with %d", a->job.what, ev.code);
    if (a->pg_starting) {
        start_pg_done(a, ev.code);
        return;
    }
    op_handle(&a->op, &ev);
}

static void
job_watch_io(void *ctx, bool write, int res)
{
    (void)write;
    (void)res;
    job_reaped(ctx);
}

static void
job_watch_timer(void *ctx)
{
    (void)ctx;
}

/* A job was started: wait for its end on its pidfd (or poll it). */
static int
job_started(struct agent *a, int rc)
{
    if (rc < 0)
        return rc;
    fdwatch_release(a->job_watch);
    a->job_watch = NULL;
    if (a->job.pidfd >= 0 && fdwatch_new(&a->job_watch, a->loop, &job_watch_ops, a) == 0 &&
        fdwatch_wait(a->job_watch, a->job.pidfd, false) == 0)
        return 0;
    fdwatch_release(a->job_watch);
    a->job_watch = NULL;
    wake_at(a, WAKE_JOB, clock_mono_ms() + AGENT_JOB_POLL_MS);
    return 0;
}

static const char *
ops_log(struct agent *a, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/pg_ops.log", a->cfg->state_dir);
    return buf;
}

/* ---- the operation's world (op.h) ---- */

static uint64_t unconfirmed_ms(const struct agent *a);

static void
env_facts(void *ctx, struct op_facts *f)
{
    struct agent *a = ctx;
    struct sender_positions p = {0};

    if (a->sender != NULL)
        sender_positions(a->sender, &p);
    f->source = a->role == ROLE_SOURCE;
    f->sink = a->role == ROLE_SINK;
    f->fenced = a->role == ROLE_FENCED;
    f->link_up = link_active(a->links) != NULL;
    f->streaming = sender_streaming(a->sender);
    f->pg_running = pgctl_running(a->cfg->pgdata);
    f->arbiter_configured = a->arbiter != NULL;
    f->arbiter = arbiter_kind(a->arbiter);
    f->auto_rejoin = a->cfg->auto_rejoin;
    f->can_rejoin = a->cfg->peer_pg_conninfo != NULL;
    f->primary_lsn = p.primary > a->head_lsn ? p.primary : a->head_lsn;
    f->ack_flush = p.flush > a->standby_lsn ? p.flush : a->standby_lsn;
    f->ack_apply = p.apply;
    f->sink_flushed = a->sink != NULL ? sink_flushed(a->sink) : 0;
    f->lost_for_ms = a->role == ROLE_SINK && a->link_lost_ms != 0
                         ? clock_mono_ms() - a->link_lost_ms
                     : a->role == ROLE_SOURCE ? unconfirmed_ms(a)
                                              : 0;
    f->failover_timeout_ms = a->cfg->failover_timeout_ms;
    f->epoch = &a->state;
    f->node = a->cfg->node_name;
    f->peer = a->cfg->peer.name;
    f->state_dir = a->cfg->state_dir;
}

static int
env_pg(void *ctx, enum pgctl_action action)
{
    struct agent *a = ctx;
    char server_log[4200], log[4200];

    snprintf(server_log, sizeof(server_log), "%s/postgresql.log", a->cfg->state_dir);
    return job_started(a, pgctl_run_pg_ctl(&a->job, action, a->cfg->pgdata, server_log,
                                           ops_log(a, log, sizeof(log))));
}

static int
env_checkpoint_peer(void *ctx)
{
    struct agent *a = ctx;
    char log[4200];

    return job_started(
        a, pgctl_run_checkpoint(&a->job, a->cfg->peer_pg_conninfo, ops_log(a, log, sizeof(log))));
}

/* Before a switchover stops the primary: its dirty buffers written while it takes commits. */
static int
env_checkpoint_local(void *ctx)
{
    struct agent *a = ctx;
    char log[4200];

    return job_started(
        a, pgctl_run_local_checkpoint(&a->job, a->cfg->pg_conninfo, ops_log(a, log, sizeof(log))));
}

static int
env_rewind(void *ctx)
{
    struct agent *a = ctx;
    char log[4200];

    return job_started(a, pgctl_run_rewind(&a->job, a->cfg->pgdata, a->cfg->peer_pg_conninfo,
                                           ops_log(a, log, sizeof(log))));
}

static int
env_empty_pgdata(void *ctx)
{
    struct agent *a = ctx;
    char log[4200];

    return job_started(a, pgctl_run_empty(&a->job, a->cfg->pgdata, ops_log(a, log, sizeof(log))));
}

static int
env_basebackup(void *ctx)
{
    struct agent *a = ctx;
    char log[4200];

    return job_started(a, pgctl_run_basebackup(&a->job, a->cfg->pgdata, a->cfg->peer_pg_conninfo,
                                               ops_log(a, log, sizeof(log))));
}

static const char *
controldata_out(struct agent *a, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/pg_controldata.out", a->cfg->state_dir);
    return buf;
}

static int
env_controldata(void *ctx)
{
    struct agent *a = ctx;
    char out[4200];

    return job_started(
        a, pgctl_run_controldata(&a->job, a->cfg->pgdata, controldata_out(a, out, sizeof(out))));
}

static const char *
saved_configs(struct agent *a, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/pgconf.saved", a->cfg->state_dir);
    return buf;
}

static int
env_save_configs(void *ctx, char *err, size_t errlen)
{
    struct agent *a = ctx;
    char dir[4300];

    return pgctl_save_configs(a->cfg->pgdata, saved_configs(a, dir, sizeof(dir)), err, errlen);
}

static int
env_restore_configs(void *ctx, char *err, size_t errlen)
{
    struct agent *a = ctx;
    char dir[4300];

    return pgctl_restore_configs(a->cfg->pgdata, saved_configs(a, dir, sizeof(dir)), err, errlen);
}

/* The standby configuration; a synchronous requirement this site had lifted as a primary goes
 * back into it, for the day it is promoted again. */
static int
env_standby_config(void *ctx, char *err, size_t errlen)
{
    struct agent *a = ctx;
    bool relaxed = syncrep_relaxed(a->syncrep);
    int rc =
        pgctl_write_standby_config(a->cfg, relaxed ? syncrep_saved(a->syncrep) : NULL, err, errlen);

    if (rc == 0 && relaxed) {
        log_info(a->comp, "synchronous_standby_names = '%s' back in the configuration",
                 syncrep_saved(a->syncrep));
        rc = syncrep_forget(a->syncrep);
        if (rc < 0)
            snprintf(err, errlen, "cannot remove the saved synchronous_standby_names: %s",
                     strerror(-rc));
    }
    return rc;
}

static void
on_standby_positions(void *ctx, const PGresult *res, const char *err, const char *notice)
{
    struct agent *a = ctx;
    struct op_event ev = {.kind = OPE_REPLAY};
    unsigned hi, lo;

    (void)notice;
    if (err == NULL && PQntuples(res) == 1) {
        if (sscanf(PQgetvalue(res, 0, 0), "%X/%X", &hi, &lo) == 2)
            ev.lsn = (uint64_t)hi << 32 | lo;
        if (sscanf(PQgetvalue(res, 0, 1), "%X/%X", &hi, &lo) == 2)
            ev.lsn2 = (uint64_t)hi << 32 | lo;
    }
    op_handle(&a->op, &ev);
}

static int
env_query_standby(void *ctx)
{
    struct agent *a = ctx;

    return pgconn_query(a->pg, "SELECT pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()", 0,
                        NULL, AGENT_SQL_TIMEOUT_MS, on_standby_positions, a);
}

static int
env_send(void *ctx, const struct msg_control *ctl)
{
    struct conn *c = link_active(((struct agent *)ctx)->links);

    return c != NULL ? conn_send_control(c, ctl) : -ENOTCONN;
}

static int
env_ask(void *ctx, const struct arbiter_request *req)
{
    struct agent *a = ctx;

    if (!arbiter_reachable(a->arbiter))
        return -ENOTCONN;
    return arbiter_request(a->arbiter, req);
}

static int
env_raise_epoch(void *ctx, const struct wm_state *rec, bool tell_links)
{
    return raise_epoch(ctx, rec, tell_links);
}

static int
env_become_source(void *ctx)
{
    return become_source(ctx);
}

static void sink_failed(void *ctx, const char *why);
static void sink_restart_stream(void *ctx, const char *why);
static const struct sink_events sink_ev = {.failed = sink_failed,
                                           .restart_stream = sink_restart_stream};

static void
stop_source(struct agent *a)
{
    sender_free(a->sender);
    a->sender = NULL;
    a->pending &= ~(1u << EV_PRIMARY_ENDED);
    a->wake[WAKE_SESSION] = a->wake[WAKE_LINK] = a->wake[WAKE_WATCH] = 0;
}

/* A fresh spool and WAL server for the standby of pgdata, whose control data the job read. */
static int
env_become_sink(void *ctx)
{
    struct agent *a = ctx;
    struct pgctl_control ctl;
    char out[4200], err[512];
    int rc;

    rc = pgctl_controldata_read(controldata_out(a, out, sizeof(out)), a->cfg->pgdata, &ctl, err,
                                sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "%s", err);
        return rc;
    }
    link_close_all(a->links, "roles change");
    stop_source(a);
    sink_close(a->sink);
    a->sink = NULL;
    rc = sink_open(&a->sink, a->loop, a->cfg, &ctl, true, &a->metrics, &sink_ev, a);
    if (rc < 0) {
        a->failed = true; /* without a spool the site can neither serve nor fail over */
        a->exit_status = 1;
        return rc;
    }
    link_refuse(a->links, false);
    a->link_lost_ms = clock_mono_ms();
    set_role(a, ROLE_SINK, "the local PostgreSQL is now a standby");
    return 0;
}

static void
env_close_links(void *ctx, const char *why)
{
    link_close_all(((struct agent *)ctx)->links, why);
}

static void
on_syncrep_done(void *ctx, int rc, const char *why)
{
    struct agent *a = ctx;
    struct op_event ev = {.kind = OPE_SQL_DONE, .ok = rc == 0, .text = why};

    op_handle(&a->op, &ev);
}

static int
env_sync_relax(void *ctx)
{
    struct agent *a = ctx;

    return syncrep_relax(a->syncrep, on_syncrep_done, a);
}

static int
env_sync_restore(void *ctx)
{
    struct agent *a = ctx;

    return syncrep_restore(a->syncrep, on_syncrep_done, a);
}

static void
env_finished(void *ctx, enum op_kind kind, uint64_t id, bool ok, bool refused, const char *result,
             int64_t unavail_us)
{
    struct agent *a = ctx;
    uint64_t now = clock_mono_ms();

    /* walmirrorctl follows its request's id to its outcome: an automatic attempt that did not
     * succeed (the log has it) does not replace an operator's outcome for a while. */
    if (id != 0 || ok || a->last_op_id == 0 || now - a->last_op_at_ms > AGENT_OUTCOME_KEEP_MS) {
        snprintf(a->last_op_result, sizeof(a->last_op_result), "%s", result);
        a->last_op = kind;
        a->last_op_id = id;
        a->last_op_ok = ok;
        if (id != 0)
            a->last_op_at_ms = now;
    }
    if (refused)
        return;
    if (!ok)
        set_last_error(a, "%s failed: %.200s", op_kind_name(kind), result);
    else
        a->last_error[0] = '\0'; /* what broke on the way (the old link) is over */
    if (ok && (kind == OP_SWITCHOVER || kind == OP_FAILOVER)) {
        a->last_unavailability_us = unavail_us;
        if (kind == OP_SWITCHOVER)
            a->switchovers++;
        else
            a->failovers++;
    }
    if (kind == OP_EXPOSURE && !ok)
        a->expose_again_ms = clock_mono_ms() + OP_ARBITER_RETRY_MS;
    if (kind == OP_EXPOSURE && ok) {
        /* The incident closes with the exposure's duration and its peak WAL at risk. */
        struct status_incident e = {.at_unix_us = clock_unix_us(), .unavailability_us = -1};

        snprintf(e.kind, sizeof(e.kind), "exposure");
        snprintf(e.text, sizeof(e.text),
                 "ran exposed for %.0f s; at most %" PRIu64 " bytes of acknowledged WAL were at "
                 "risk; %.150s",
                 a->last_exposure_s, a->at_risk_peak, result);
        status_incident_add(&a->metrics.incidents, &e);
    }
    if (kind == OP_FAILOVER && ok)
        a->link_lost_ms = 0;
    if (kind == OP_FAILOVER && !ok && a->role == ROLE_SINK) {
        /* Ask again after another failover_timeout: the arbiter that said no (the primary
         * still heard, its liveness key still alive, no quorum) may say yes by then. */
        a->link_lost_ms = now;
        wake_at(a, WAKE_FAILOVER, now + a->cfg->failover_timeout_ms);
    }
    /* The source was lost while the operation ran (a switchover's or rejoin's last steps on
     * the new standby): its fail-over watch came and went meanwhile, so look again. */
    if (a->role == ROLE_SINK && a->link_lost_ms != 0 && a->wake[WAKE_FAILOVER] == 0 &&
        link_active(a->links) == NULL)
        wake_at(a, WAKE_FAILOVER, a->link_lost_ms + a->cfg->failover_timeout_ms);
}

static uint64_t
env_now_ms(void *ctx)
{
    (void)ctx;
    return clock_mono_ms();
}

static const struct op_env op_env = {
    .facts = env_facts,
    .now_ms = env_now_ms,
    .pg = env_pg,
    .checkpoint_peer = env_checkpoint_peer,
    .checkpoint_local = env_checkpoint_local,
    .rewind = env_rewind,
    .empty_pgdata = env_empty_pgdata,
    .basebackup = env_basebackup,
    .controldata = env_controldata,
    .save_configs = env_save_configs,
    .restore_configs = env_restore_configs,
    .standby_config = env_standby_config,
    .query_standby = env_query_standby,
    .send = env_send,
    .ask = env_ask,
    .raise_epoch = env_raise_epoch,
    .become_source = env_become_source,
    .become_sink = env_become_sink,
    .close_links = env_close_links,
    .sync_relax = env_sync_relax,
    .sync_restore = env_sync_restore,
    .finished = env_finished,
};

/* ---- the sink's events ---- */

static void
sink_failed(void *ctx, const char *why)
{
    struct agent *a = ctx;

    /* A failed WAL write or fdatasync is never retried (the kernel may have dropped the dirty
     * pages: a retry can report success for data that is gone) and nothing more is
     * acknowledged: the process ends, as PostgreSQL's walreceiver PANICs. */
    log_error(a->comp, "spool failure, stopping: %s", why);
    set_last_error(a, "%.250s", why);
    post(a, EV_SPOOL_FAILED);
}

static void
sink_restart_stream(void *ctx, const char *why)
{
    link_drop_active(((struct agent *)ctx)->links, why);
}

/* ---- the source's session with the primary ---- */

static void
on_primary_identified(void *ctx, const struct source_identity *id)
{
    struct agent *a = ctx;
    struct op_event ev = {.kind = OPE_IDENTIFIED, .lsn = id->xlogpos};

    if (id->xlogpos > a->head_lsn)
        a->head_lsn = id->xlogpos;
    a->primary_up = true;
    op_handle(&a->op, &ev);
    wake_at(a, WAKE_LINK, clock_mono_ms());
}

static void
on_primary_ended(void *ctx, int err, const char *why, bool by_link)
{
    struct agent *a = ctx;

    a->ended_err = err;
    a->ended_by_link = by_link;
    snprintf(a->ended_why, sizeof(a->ended_why), "%s", why);
    post(a, EV_PRIMARY_ENDED);
}

static void
on_primary_acked(void *ctx)
{
    struct agent *a = ctx;
    struct sender_positions p;
    struct op_event ev = {.kind = OPE_ACKED};

    sender_positions(a->sender, &p);
    ev.lsn = p.flush;
    if (p.flush > a->standby_lsn)
        a->standby_lsn = p.flush;
    op_handle(&a->op, &ev);
}

static const struct sender_events sender_ev = {
    .identified = on_primary_identified,
    .ended = on_primary_ended,
    .acked = on_primary_acked,
};

static void
on_commit_level(void *ctx, const PGresult *res, const char *err, const char *notice)
{
    struct agent *a = ctx;
    const char *v = err == NULL && PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "on";

    (void)notice;
    a->commit_stage = strcmp(v, "remote_apply") == 0   ? LAG_APPLY
                      : strcmp(v, "on") == 0           ? LAG_FLUSH
                      : strcmp(v, "remote_write") == 0 ? LAG_WRITE
                                                       : -1;
    log_debug(a->comp, "the primary's synchronous_commit is %s", v);
}

static void
start_session(struct agent *a)
{
    int rc;

    a->wake[WAKE_SESSION] = 0;
    if (a->role != ROLE_SOURCE || a->sender != NULL || a->failed)
        return;
    rc = sender_new(&a->sender, a->loop, a->cfg, &a->metrics, &sender_ev, a);
    if (rc < 0) {
        a->sender = NULL;
        wake_at(a, WAKE_SESSION, clock_mono_ms() + AGENT_RETRY_MS);
        return;
    }
    /* What commits wait for: the level the primary runs at (sessions may set their own). */
    if (pgconn_query(a->pg, "SELECT current_setting('synchronous_commit')", 0, NULL,
                     AGENT_SQL_TIMEOUT_MS, on_commit_level, a) < 0)
        a->commit_stage = LAG_FLUSH;
}

/* Ends the session; a new one starts a second later, streaming from what the sink holds. */
static void
restart_session(struct agent *a, const char *why)
{
    log_info(a->comp, "source restarting: %s", why);
    link_close_all(a->links, "source restarting");
    stop_source(a);
    if (a->stream_lost_ms == 0)
        a->stream_lost_ms = clock_mono_ms();
    wake_at(a, WAKE_SESSION, clock_mono_ms() + AGENT_RETRY_MS);
    wake_at(a, WAKE_WATCH, clock_mono_ms());
}

/*
 * When a source tries its link again.  A switchover's new primary dials its old primary's agent
 * as soon as its own primary is identified, which is often before that agent has read the
 * control data and become a sink: it refuses, and a second's wait would be a second more of
 * write-unavailability.  Until it is synchronous again (K_WAIT_SYNC) it dials again at once.
 */
static uint64_t
link_retry_ms(const struct agent *a)
{
    return a->op.kind == OP_SWITCHOVER && a->op.step == OPS_K_WAIT_SYNC ? AGENT_SWITCH_RETRY_MS
                                                                        : AGENT_RETRY_MS;
}

static void
connect_link(struct agent *a)
{
    int rc;

    a->wake[WAKE_LINK] = 0;
    if ((a->role != ROLE_SOURCE && a->role != ROLE_STARTING) || link_busy(a->links))
        return;
    if (a->role == ROLE_SOURCE && sender_identity(a->sender) == NULL)
        return;
    rc = link_connect(a->links);
    if (rc < 0 && rc != -EALREADY) {
        log_error(a->comp, "cannot connect to %s: %s", a->cfg->peer.addr.text, wire_strerror(rc));
        wake_at(a, WAKE_LINK, clock_mono_ms() + link_retry_ms(a));
    }
}

/* ---- roles ---- */

static int
become_source(struct agent *a)
{
    link_close_all(a->links, "roles change");
    sink_close(a->sink);
    a->sink = NULL;
    stop_source(a);
    link_refuse(a->links, false);
    set_role(a, ROLE_SOURCE, "the local PostgreSQL is a primary");
    a->stream_lost_ms = clock_mono_ms();
    a->head_lsn = 0;
    a->standby_lsn = 0;
    a->primary_up = false;
    a->commit_stage = LAG_FLUSH;
    a->expose_unreachable = false;
    start_session(a);
    wake_at(a, WAKE_WATCH, clock_mono_ms() + AGENT_WATCH_MS);
    return 0;
}

/* Stops acting as the source and stops the local PostgreSQL: a stale primary takes no more
 * commits. */
static void
become_fenced(struct agent *a)
{
    const char *holder = a->state.primary[0] != '\0' ? a->state.primary : "another node";

    log_error(a->comp,
              "fenced: %s holds epoch %" PRIu64 "; stopping the local PostgreSQL so that it "
              "takes no writes",
              holder, a->state.epoch);
    set_last_error(a, "fenced: %s holds epoch %" PRIu64, holder, a->state.epoch);
    link_close_all(a->links, "fenced");
    link_refuse(a->links, true);
    stop_source(a);
    set_role(a, ROLE_FENCED, "another node holds a newer epoch");
    op_fence(&a->op);
}

/* ---- the peer links ---- */

static void
link_hello(void *ctx, struct msg_hello *hello, uint64_t *epoch)
{
    struct agent *a = ctx;

    *epoch = a->state.epoch;
    if (a->role == ROLE_SOURCE && a->sender != NULL)
        sender_hello(a->sender, hello);
    else if (a->role == ROLE_SINK && a->sink != NULL)
        sink_hello(a->sink, hello);
    else
        hello->role = MSG_ROLE_UNKNOWN;
}

static int
link_check(void *ctx, const struct msg_hello *peer, bool inbound, char *why, size_t whylen)
{
    struct agent *a = ctx;

    if (peer->epoch > a->state.epoch &&
        (peer->role == MSG_ROLE_SOURCE || peer->role == MSG_ROLE_SINK)) {
        /* A newer epoch: held by the peer if it is the source (a sink only adopted it). */
        struct wm_state rec = {.epoch = peer->epoch};

        if (peer->role == MSG_ROLE_SOURCE)
            snprintf(rec.primary, sizeof(rec.primary), "%s", peer->node_name);
        learn(a, &rec);
    }
    if (a->role == ROLE_FENCED || a->news.epoch > a->state.epoch) {
        snprintf(why, whylen, "%s is fenced (epoch %" PRIu64 " is held by %s)", a->cfg->node_name,
                 a->news.epoch > a->state.epoch ? a->news.epoch : a->state.epoch,
                 a->news.epoch > a->state.epoch ? a->news.primary : a->state.primary);
        return WIRE_EPROTO;
    }
    if (a->role == ROLE_STARTING) {
        /* Asked only to learn where we stand: a sink at no newer epoch means nobody was
         * promoted past us (each promotion raises the epoch). */
        snprintf(why, whylen, "%s is starting: it only wanted to know %s's epoch and role",
                 a->cfg->node_name, peer->node_name);
        if (peer->epoch <= a->state.epoch && peer->role == MSG_ROLE_SINK && !a->peer_confirmed) {
            log_info(a->comp,
                     "%s is a sink at epoch %" PRIu64 ": nobody holds a newer epoch "
                     "than this node's %" PRIu64,
                     peer->node_name, peer->epoch, a->state.epoch);
            a->peer_confirmed = true;
            wake_at(a, WAKE_START, clock_mono_ms());
        }
        return WIRE_EPROTO;
    }
    if (peer->role == MSG_ROLE_SOURCE && peer->epoch < a->state.epoch) {
        /* A primary acting on an older epoch: refused, and the refusal carries ours. */
        snprintf(why, whylen,
                 "%s is fenced: its epoch %" PRIu64 " is older than %" PRIu64 " (held by %s)",
                 peer->node_name, peer->epoch, a->state.epoch,
                 a->state.primary[0] != '\0' ? a->state.primary : "?");
        return WIRE_EPROTO;
    }
    (void)inbound;
    if (a->role == ROLE_SOURCE && a->sender != NULL)
        return sender_check_hello(a->sender, peer, why, whylen);
    if (a->role == ROLE_SINK && a->sink != NULL)
        return sink_check_hello(a->sink, peer, why, whylen);
    snprintf(why, whylen, "%s is not ready", a->cfg->node_name);
    return WIRE_EPROTO;
}

static void
link_up(void *ctx, const struct msg_hello *peer)
{
    struct agent *a = ctx;

    if (a->role == ROLE_SINK) {
        sink_link_up(a->sink);
        a->link_lost_ms = 0;
        a->wake[WAKE_FAILOVER] = 0;
        return;
    }
    if (a->role == ROLE_SOURCE && a->sender != NULL) {
        if (sender_stream(a->sender, link_active(a->links), peer) < 0) {
            post(a, EV_LINK_DOWN);
            return;
        }
        a->stream_lost_ms = 0;
        a->catchup_lsn = sender_identity(a->sender)->xlogpos;
        a->standby_lsn = peer->durable_lsn; /* this standby's own word, on this timeline */
        /* The peer adopts our record, mark included, if it knows an older one. */
        if (peer->epoch < a->state.epoch) {
            struct msg_control news = {.kind = MSG_CTL_FENCE,
                                       .value = a->state.epoch,
                                       .mark_lsn = a->state.exposed_lsn,
                                       .mark_unix_us = a->state.exposed_unix_us};

            snprintf(news.text, sizeof(news.text), "%s", a->state.primary);
            if (conn_send_control(link_active(a->links), &news) < 0)
                log_warning(a->comp, "cannot tell %s of epoch %" PRIu64, peer->node_name,
                            a->state.epoch);
        }
    }
}

static void
link_down(void *ctx, bool was_active, bool inbound, bool established, const char *why)
{
    struct agent *a = ctx;

    if (established || !inbound)
        set_last_error(a, "link to %s: %.200s", a->cfg->peer.name, why);
    /* A source's session is the link it made; one it accepted (and refused) is not. */
    if (was_active || !inbound) {
        snprintf(a->down_why, sizeof(a->down_why), "%s", why);
        post(a, EV_LINK_DOWN);
    }
}

static void
link_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct agent *a = ctx;
    char why[200];

    if (a->role == ROLE_SINK && a->sink != NULL &&
        sink_wal(a->sink, link_active(a->links), lsn, data, len, why, sizeof(why)) < 0)
        link_drop_active(a->links, why);
}

static void
link_ack(void *ctx, const struct msg_ack *ack)
{
    struct agent *a = ctx;

    if (a->role == ROLE_SOURCE && a->sender != NULL)
        sender_ack(a->sender, ack);
}

static void
link_control(void *ctx, const struct msg_control *ctl)
{
    struct agent *a = ctx;
    struct conn *c = link_active(a->links);
    struct op_event ev = {.kind = OPE_PEER_CONTROL, .ctl = ctl};

    log_info(a->comp, "%s from %s (lsn " LSN_FMT ")", msg_ctl_name(ctl->kind),
             c != NULL ? conn_peer_hello(c)->node_name : "?", LSN_ARGS(ctl->lsn));
    if (ctl->kind == MSG_CTL_FENCE) {
        struct wm_state rec = {.epoch = ctl->value,
                               .exposed_lsn = ctl->mark_lsn,
                               .exposed_unix_us = ctl->mark_unix_us};

        snprintf(rec.primary, sizeof(rec.primary), "%.*s", STATE_NAME_MAX, ctl->text);
        learn(a, &rec);
        return;
    }
    op_handle(&a->op, &ev);
}

static void
link_timeline(void *ctx, const struct msg_timeline *tl)
{
    struct agent *a = ctx;
    char why[200];

    if (a->role == ROLE_SINK && a->sink != NULL && sink_timeline(a->sink, tl, why, sizeof(why)) < 0)
        link_drop_active(a->links, why);
}

static void
link_drained(void *ctx)
{
    struct agent *a = ctx;

    if (a->sender != NULL)
        sender_drained(a->sender);
}

static void
link_epoch(void *ctx, uint64_t epoch, const char *holder)
{
    struct agent *a = ctx;
    struct wm_state rec = {.epoch = epoch};

    if (epoch <= a->state.epoch)
        return;
    /* The peer carries a newer epoch: it holds it (it promoted, or runs exposed); its record,
     * mark included, follows as a FENCE when the link is up, or from the arbiter. */
    snprintf(rec.primary, sizeof(rec.primary), "%s", holder);
    learn(a, &rec);
}

static const struct link_events link_ev = {
    .hello = link_hello,
    .check = link_check,
    .up = link_up,
    .down = link_down,
    .wal = link_wal,
    .ack = link_ack,
    .control = link_control,
    .timeline = link_timeline,
    .drained = link_drained,
    .epoch = link_epoch,
};

/* ---- the arbiter ---- */

static void
on_verdict(void *ctx, const struct arbiter_request *req, bool granted, const struct wm_state *rec,
           const char *why)
{
    struct agent *a = ctx;
    struct op_event ev = {.kind = OPE_VERDICT, .ok = granted, .epoch = rec, .text = why};

    (void)req;
    if (!granted && rec->epoch > a->state.epoch)
        learn(a, rec);
    op_handle(&a->op, &ev);
}

static void
on_epoch_news(void *ctx, const struct wm_state *rec)
{
    learn(ctx, rec);
}

static const struct arbiter_cb arbiter_cb = {
    .on_verdict = on_verdict,
    .on_epoch_news = on_epoch_news,
};

/* ---- events, in the turn ---- */

/* A newer record of the epoch (or more of ours): recorded durably, then what it means. */
static void
on_news(struct agent *a)
{
    struct wm_state rec = a->news;
    bool mine = strcmp(rec.primary, a->cfg->node_name) == 0;
    bool newer = rec.epoch > a->state.epoch;
    bool switching = a->op.kind == OP_SWITCHOVER &&
                     (a->op.step == OPS_SO_WAIT_DONE || a->op.step == OPS_SO_STOPPING);
    struct conn *c = link_active(a->links);

    memset(&a->news, 0, sizeof(a->news));
    /* A link keeps its epoch until the peer's frames carry the new one (raising our end first
     * would refuse the peer's frames already in flight). */
    if (raise_epoch(a, &rec, c != NULL && conn_peer_epoch(c) >= rec.epoch) < 0)
        return;
    switch (a->role) {
    case ROLE_SOURCE:
        /* The holder may be this node: granted an epoch it had not recorded (a crash). */
        if (newer && !mine && !switching)
            become_fenced(a);
        return;
    case ROLE_STARTING:
        if (newer && !mine)
            wake_at(a, WAKE_START, clock_mono_ms()); /* it decides with the new record */
        return;
    case ROLE_SINK:
    case ROLE_FENCED:
        return;
    }
}

static void
agent_dispatch(struct agent *a, enum agent_event ev)
{
    log_debug(a->comp, "%s: %s", role_names[a->role], event_names[ev]);
    switch (ev) {
    case EV_SPOOL_FAILED:
        a->failed = true;
        a->exit_status = 1;
        return;
    case EV_NEWS:
        on_news(a);
        return;
    case EV_PRIMARY_ENDED: {
        struct op_event oe = {.kind = OPE_PRIMARY_ENDED, .ok = a->ended_err == 0};

        if (a->role != ROLE_SOURCE || a->sender == NULL)
            return;
        op_handle(&a->op, &oe);
        /* A switchover's stopped primary: the operation takes it from here. */
        if (a->op.kind == OP_SWITCHOVER &&
            (a->op.step == OPS_SO_STOPPING || a->op.step == OPS_SO_WAIT_DONE))
            return;
        if (a->ended_err != 0)
            set_last_error(a, "%s: %.230s", a->ended_by_link ? "link" : "primary", a->ended_why);
        /* A send to a lost sink ends the session too, but the primary is as up as it was
         * (/primary and the arbiter keep saying so while the session restarts). */
        if (!a->ended_by_link)
            a->primary_up = false;
        restart_session(a, a->ended_why);
        return;
    }
    case EV_LINK_DOWN:
        if (a->role == ROLE_SINK) {
            if (a->link_lost_ms == 0)
                a->link_lost_ms = clock_mono_ms();
            wake_at(a, WAKE_FAILOVER, a->link_lost_ms + a->cfg->failover_timeout_ms);
            return;
        }
        if (a->role == ROLE_STARTING) {
            wake_at(a, WAKE_LINK, clock_mono_ms() + AGENT_RETRY_MS);
            return;
        }
        if (a->role != ROLE_SOURCE)
            return;
        if (a->op.kind == OP_SWITCHOVER &&
            (a->op.step == OPS_SO_STOPPING || a->op.step == OPS_SO_WAIT_DONE))
            return; /* the operation fails by its own checks or timeout */
        if (sender_streaming(a->sender))
            restart_session(a, a->down_why); /* start over from what the sink holds */
        else
            wake_at(a, WAKE_LINK, clock_mono_ms() + link_retry_ms(a)); /* keep the primary */
        if (a->stream_lost_ms == 0)
            a->stream_lost_ms = clock_mono_ms();
        return;
    case EV_COUNT:
        return;
    }
}

/* ---- watches ---- */

/* Automatic fail-over: the sink has lost its source for failover_timeout. */
static void
failover_watch(struct agent *a)
{
    a->wake[WAKE_FAILOVER] = 0;
    if (a->role != ROLE_SINK || op_running(&a->op) || a->failover_paused || a->windows.active ||
        a->arbiter == NULL || link_active(a->links) != NULL || a->link_lost_ms == 0 ||
        sink_flushed(a->sink) == 0)
        return;
    if (clock_mono_ms() - a->link_lost_ms < a->cfg->failover_timeout_ms) {
        wake_at(a, WAKE_FAILOVER, a->link_lost_ms + a->cfg->failover_timeout_ms);
        return;
    }
    if (!arbiter_reachable(a->arbiter)) {
        wake_at(a, WAKE_FAILOVER, clock_mono_ms() + AGENT_RETRY_MS); /* never without it */
        return;
    }
    log_warning(a->comp, "no source for %.1f s: asking the arbiter whether %s is gone",
                (double)(clock_mono_ms() - a->link_lost_ms) / 1000, a->cfg->peer.name);
    op_failover(&a->op, 0, false, false);
}

/* How long (ms) commits have waited for the standby: since the stream was lost, or since the
 * oldest WAL not confirmed at the level commits wait for was sent.  0: nothing waits. */
static uint64_t
unconfirmed_ms(const struct agent *a)
{
    if (!sender_streaming(a->sender))
        return a->stream_lost_ms != 0 ? clock_mono_ms() - a->stream_lost_ms : 0;
    if (a->commit_stage < 0)
        return 0;
    return sender_waiting_us(a->sender, (enum lag_stage)a->commit_stage) / 1000;
}

/* Grace before a source counts as "waiting" (status, /primary): a commit that waits longer
 * for its confirmation is one a client notices. */
static uint64_t
sync_grace_ms(const struct agent *a)
{
    uint64_t g = 2 * a->cfg->heartbeat_interval_ms;
    return g > 1000 ? g : 1000;
}

static void
try_expose(struct agent *a, const char *why)
{
    int rc;

    /* Caught up, later, means past all that commits waited for now, whatever this stream
     * confirmed before it fell silent. */
    if (a->head_lsn > a->catchup_lsn)
        a->catchup_lsn = a->head_lsn;
    rc = op_expose(&a->op);

    if (rc == -ENOTCONN) {
        if (!a->expose_unreachable)
            log_warning(a->comp,
                        "%s, but the arbiter cannot be reached: not running exposed, "
                        "commits keep waiting (asking again every %d s)",
                        why, OP_ARBITER_RETRY_MS / 1000);
        a->expose_unreachable = true;
        set_last_error(a, "%s; the arbiter cannot be reached: commits wait", why);
        return;
    }
    a->expose_unreachable = false;
}

static void
on_syncrep_waiters(void *ctx, const PGresult *res, const char *err, const char *notice)
{
    struct agent *a = ctx;
    char why[160];

    (void)notice;
    a->watch_query = false;
    if (err != NULL || a->role != ROLE_SOURCE || op_running(&a->op))
        return;
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "0") == 0)
        return; /* WAL waits for the standby, but no commit does */
    snprintf(why, sizeof(why), "%s has not confirmed for %.1f s while %s commits wait",
             a->cfg->peer.name, (double)unconfirmed_ms(a) / 1000, PQgetvalue(res, 0, 0));
    try_expose(a, why);
}

static void
on_head(void *ctx, const PGresult *res, const char *err, const char *notice)
{
    struct agent *a = ctx;
    unsigned hi, lo;

    (void)notice;
    a->watch_query = false;
    if (err == NULL && PQntuples(res) == 1 &&
        sscanf(PQgetvalue(res, 0, 0), "%X/%X", &hi, &lo) == 2 &&
        ((uint64_t)hi << 32 | lo) > a->head_lsn)
        a->head_lsn = (uint64_t)hi << 32 | lo;
}

/*
 * The source's availability, every AGENT_WATCH_MS: in maximum_availability, the standby lost
 * (no stream, or commits waiting for it) for standby_loss_timeout starts an exposure; while
 * exposed, the WAL at risk is measured and a standby that has caught up ends it.
 */
static void
availability_watch(struct agent *a)
{
    struct sender_positions p = {0};
    uint64_t lost = unconfirmed_ms(a);

    a->wake[WAKE_WATCH] = 0;
    if (a->role != ROLE_SOURCE)
        return;
    wake_at(a, WAKE_WATCH, clock_mono_ms() + AGENT_WATCH_MS);
    if (a->sender != NULL)
        sender_positions(a->sender, &p);
    if (p.primary > a->head_lsn)
        a->head_lsn = p.primary;
    /* The primary's position while exposed and nothing streams: for the WAL at risk. */
    if (state_exposed(&a->state) && !sender_streaming(a->sender) && !a->watch_query &&
        pgconn_pending(a->pg) == 0 &&
        pgconn_query(a->pg, "SELECT pg_current_wal_flush_lsn()", 0, NULL, AGENT_SQL_TIMEOUT_MS,
                     on_head, a) == 0)
        a->watch_query = true;
    if (state_exposed(&a->state) && strcmp(a->state.primary, a->cfg->node_name) == 0) {
        uint64_t durable =
            a->standby_lsn > a->state.exposed_lsn ? a->standby_lsn : a->state.exposed_lsn;

        a->at_risk_bytes = a->head_lsn > durable ? a->head_lsn - durable : 0;
        if (a->at_risk_bytes > a->at_risk_peak)
            a->at_risk_peak = a->at_risk_bytes;
        if (a->op.kind == OP_EXPOSURE && a->op.step == OPS_X_EXPOSED &&
            sender_streaming(a->sender) && p.flush >= a->catchup_lsn &&
            p.primary < p.flush + AGENT_CATCHUP_BYTES &&
            sender_waiting_us(a->sender, LAG_FLUSH) / 1000 < sync_grace_ms(a)) {
            struct op_event ev = {.kind = OPE_CAUGHT_UP};
            op_handle(&a->op, &ev);
        }
        if (!op_running(&a->op))
            op_resume_exposure(&a->op); /* exposed by the record: commits must go on */
        return;
    }
    a->at_risk_bytes = 0;
    if (a->cfg->availability_mode != CONFIG_MAXIMUM_AVAILABILITY || op_running(&a->op) ||
        lost < a->cfg->standby_loss_timeout_ms || clock_mono_ms() < a->expose_again_ms) {
        a->expose_unreachable = lost >= a->cfg->standby_loss_timeout_ms && a->expose_unreachable;
        return;
    }
    if (!sender_streaming(a->sender)) {
        char why[160];

        /* Only a primary that takes commits may need to go on without B: one that is down
         * (the session with it is not even identified) is the standby's to replace. */
        if (sender_identity(a->sender) == NULL)
            return;
        snprintf(why, sizeof(why), "no stream to %s for %.1f s", a->cfg->peer.name,
                 (double)lost / 1000);
        try_expose(a, why);
        return;
    }
    /* Streaming, but confirmations are overdue: only commits that wait count. */
    if (!a->watch_query && pgconn_query(a->pg,
                                        "SELECT count(*) FROM pg_stat_activity WHERE "
                                        "wait_event = 'SyncRep'",
                                        0, NULL, AGENT_SQL_TIMEOUT_MS, on_syncrep_waiters, a) == 0)
        a->watch_query = true;
}

/* ---- starting: learning this node's place ---- */

static bool
has_standby_signal(const struct agent *a)
{
    char path[4200];
    struct stat st;

    snprintf(path, sizeof(path), "%s/standby.signal", a->cfg->pgdata);
    return stat(path, &st) == 0;
}

static int
become_sink_at_start(struct agent *a)
{
    struct pgctl_control ctl;
    char err[512];
    int rc;

    /* Quick and local: the loop has nothing else to serve yet at start. */
    rc = pgctl_controldata(a->cfg->pgdata, &ctl, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "%s", err);
        return rc;
    }
    rc = sink_open(&a->sink, a->loop, a->cfg, &ctl, false, &a->metrics, &sink_ev, a);
    if (rc < 0)
        return rc;
    a->link_lost_ms = clock_mono_ms();
    wake_at(a, WAKE_FAILOVER, a->link_lost_ms + a->cfg->failover_timeout_ms);
    set_role(a, ROLE_SINK, "the local PostgreSQL is a standby");
    return 0;
}

static void
on_recovery_state(void *ctx, const PGresult *res, const char *err, const char *notice)
{
    struct agent *a = ctx;

    (void)notice;
    a->start_query = false;
    if (a->role != ROLE_STARTING)
        return;
    if (err != NULL || PQntuples(res) != 1) {
        log_warning(a->comp, "cannot learn the local PostgreSQL's role: %s",
                    err != NULL ? err : "no row");
        wake_at(a, WAKE_START, clock_mono_ms() + AGENT_RETRY_MS);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        if (become_sink_at_start(a) < 0) {
            a->failed = true;
            a->exit_status = 1;
        }
        return;
    }
    if (strcmp(a->state.primary, a->cfg->node_name) != 0 &&
        !(a->state.primary[0] == '\0' && a->state.epoch == 1)) {
        /* Fenced before (another site holds the epoch), and still a primary here. */
        become_fenced(a);
        return;
    }
    if (a->state.primary[0] == '\0') {
        /* The original primary: its record names it from now on (the witness does so too). */
        struct wm_state rec = a->state;

        snprintf(rec.primary, sizeof(rec.primary), "%s", a->cfg->node_name);
        if (raise_epoch(a, &rec, false) < 0)
            return;
    }
    (void)become_source(a);
}

/*
 * STARTING, at start and whenever something new is known (WAKE_START).  A running PostgreSQL
 * says what it is.  A stopped one with standby.signal is a standby: the sink spools for it.
 * A stopped primary's data directory is started only when this node is entitled to it: it
 * holds the current epoch by its state file AND the arbiter (when one is configured: it
 * answers, and names no newer epoch) or else the peer (a sink at no newer epoch) confirms it.
 * Anything newer held elsewhere makes it a stale primary: fenced, to rejoin as a standby.
 */
static void
start_decide(struct agent *a)
{
    /* This node holds the epoch by its record - or nobody was ever promoted (epoch 1, no
     * holder recorded yet: the original primary's data directory). */
    bool mine = strcmp(a->state.primary, a->cfg->node_name) == 0 ||
                (a->state.primary[0] == '\0' && a->state.epoch == 1);
    bool confirmed;

    a->wake[WAKE_START] = 0;
    if (a->role != ROLE_STARTING || a->start_query || a->pg_starting)
        return;
    if (pgctl_running(a->cfg->pgdata)) {
        if (pgconn_query(a->pg, "SELECT pg_is_in_recovery()", 0, NULL, AGENT_SQL_TIMEOUT_MS,
                         on_recovery_state, a) == 0)
            a->start_query = true;
        else
            wake_at(a, WAKE_START, clock_mono_ms() + AGENT_RETRY_MS);
        return;
    }
    if (has_standby_signal(a)) {
        log_info(a->comp,
                 "the local PostgreSQL is down and %s/standby.signal exists: acting as "
                 "sink (start the standby when you will)",
                 a->cfg->pgdata);
        if (become_sink_at_start(a) < 0) {
            a->failed = true;
            a->exit_status = 1;
        }
        return;
    }
    if (!mine) {
        log_warning(a->comp,
                    "the local PostgreSQL is down, and epoch %" PRIu64 " is held by %s: "
                    "this site is a stale primary; it is not started",
                    a->state.epoch,
                    a->state.primary[0] != '\0' ? a->state.primary : "another node");
        become_fenced(a);
        return;
    }
    confirmed = a->arbiter != NULL ? arbiter_state(a->arbiter) == ARBITER_STATE_UP &&
                                         a->news.epoch <= a->state.epoch
                                   : a->peer_confirmed;
    if (!confirmed) {
        if (!a->start_logged)
            log_warning(a->comp,
                        "the local PostgreSQL (a primary's data directory) is down: "
                        "not starting it until %s confirms that %s still holds epoch %" PRIu64,
                        a->arbiter != NULL ? "the arbiter" : a->cfg->peer.name, a->cfg->node_name,
                        a->state.epoch);
        a->start_logged = true;
        set_last_error(a, "starting: waiting for %s to confirm epoch %" PRIu64,
                       a->arbiter != NULL ? arbiter_describe(a->arbiter) : a->cfg->peer.name,
                       a->state.epoch);
        if (a->arbiter == NULL && !link_busy(a->links))
            connect_link(a); /* ask the peer */
        wake_at(a, WAKE_START, clock_mono_ms() + AGENT_RETRY_MS);
        return;
    }
    log_info(a->comp,
             "%s confirms that %s holds epoch %" PRIu64 ": starting the local "
             "PostgreSQL as the primary",
             a->arbiter != NULL ? "the arbiter" : a->cfg->peer.name, a->cfg->node_name,
             a->state.epoch);
    if (env_pg(a, PGCTL_START) < 0) {
        log_error(a->comp, "cannot run pg_ctl start");
        wake_at(a, WAKE_START, clock_mono_ms() + AGENT_RETRY_MS);
        return;
    }
    a->pg_starting = true;
    a->last_error[0] = '\0';
}

/* The primary's pg_ctl start ended (STARTING). */
static void
start_pg_done(struct agent *a, int code)
{
    char path[4200];

    a->pg_starting = false;
    if (code != 0) {
        snprintf(path, sizeof(path), "%s/postgresql.log", a->cfg->state_dir);
        log_error(a->comp, "pg_ctl start failed (exit %d); see %s", code, path);
        set_last_error(a, "pg_ctl start failed (exit %d); see %s", code, path);
        wake_at(a, WAKE_START, clock_mono_ms() + 5 * AGENT_RETRY_MS);
        return;
    }
    wake_at(a, WAKE_START, clock_mono_ms()); /* it asks the running server what it is */
}

/* ---- requests from the HTTP API ---- */

static void
take_requests(struct agent *a)
{
    struct status_op_request req;
    unsigned bits = status_take(&a->board);

    if (bits & (1u << STATUS_REQ_PAUSE) && !a->failover_paused) {
        a->failover_paused = true;
        log_info(a->comp, "automatic fail-over paused by an operator");
    }
    if (bits & (1u << STATUS_REQ_RESUME) && a->failover_paused) {
        a->failover_paused = false;
        log_info(a->comp, "automatic fail-over resumed by an operator");
        wake_at(a, WAKE_FAILOVER, clock_mono_ms());
    }
    if (a->held.id != 0) {
        if (op_running(&a->op))
            return;
        req = a->held;
        a->held.id = 0;
    } else if (!status_take_op(&a->board, &req)) {
        return;
    }
    switch (req.kind) {
    case STATUS_REQ_SWITCHOVER:
        if (req.at_unix_us > clock_unix_us()) {
            /* Kept until its time (in memory: an agent restarted before then forgets it). */
            time_t t = (time_t)(req.at_unix_us / 1000000);
            struct tm tm;
            char when[64];

            gmtime_r(&t, &tm);
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
            if (a->scheduled.id != 0)
                log_info(a->comp,
                         "the switchover scheduled before (request %" PRIu64 ") is replaced",
                         a->scheduled.id);
            a->scheduled = req;
            log_info(a->comp, "switchover scheduled for %s (request %" PRIu64 ")", when, req.id);
            wake_at(a, WAKE_SCHEDULED, clock_mono_ms() + (req.at_unix_us - clock_unix_us()) / 1000);
            break;
        }
        op_switchover(&a->op, req.id, req.target, req.max_lag_bytes);
        break;
    case STATUS_REQ_FAILOVER:
        if (a->op.kind == OP_FAILOVER && a->op.id == 0) {
            /* The automatic attempt only asks the arbiter: the request follows it, rather
             * than being refused as busy. */
            a->held = req;
            log_info(a->comp,
                     "fail-over request %" PRIu64 " waits for the automatic fail-over "
                     "under way",
                     req.id);
            break;
        }
        op_failover(&a->op, req.id, req.force, req.accept_data_loss);
        break;
    case STATUS_REQ_REJOIN:
        op_rejoin(&a->op, req.id);
        break;
    default:
        break;
    }
}

static void
run_scheduled(struct agent *a)
{
    struct status_op_request req = a->scheduled;

    a->wake[WAKE_SCHEDULED] = 0;
    if (req.id == 0)
        return;
    if (clock_unix_us() < req.at_unix_us) {
        wake_at(a, WAKE_SCHEDULED, clock_mono_ms() + (req.at_unix_us - clock_unix_us()) / 1000);
        return;
    }
    a->scheduled.id = 0;
    log_info(a->comp, "the switchover scheduled for now (request %" PRIu64 ") starts", req.id);
    op_switchover(&a->op, req.id, req.target, req.max_lag_bytes);
}

/* ---- status ---- */

/* Metrics gathered at each status tick: the lag history, and an incident (with its
 * write-unavailability observed) for each switchover or fail-over completed since the last. */
static void
status_metrics_tick(struct agent *a, const struct status_snapshot *st)
{
    struct status_lag_sample v = {.flush_bytes = st->flush_lag_bytes,
                                  .apply_bytes = st->apply_lag_bytes,
                                  .flush_s = st->flush_lag_s,
                                  .apply_s = st->apply_lag_s};

    status_lag_note(&a->metrics.lag, st->now_unix_us, &v);
    /* Totals across links: a count below the last one seen is a new link, counting from 0. */
    if (st->wal_raw_bytes < a->metrics.wal_raw_link ||
        st->wal_wire_bytes < a->metrics.wal_wire_link)
        a->metrics.wal_raw_link = a->metrics.wal_wire_link = 0;
    a->metrics.wal_raw_total += st->wal_raw_bytes - a->metrics.wal_raw_link;
    a->metrics.wal_wire_total += st->wal_wire_bytes - a->metrics.wal_wire_link;
    a->metrics.wal_raw_link = st->wal_raw_bytes;
    a->metrics.wal_wire_link = st->wal_wire_bytes;
    while (a->incidents_seen < a->switchovers + a->failovers) {
        struct status_incident e = {.at_unix_us = st->now_unix_us,
                                    .unavailability_us = a->last_unavailability_us};
        a->incidents_seen++;
        snprintf(e.kind, sizeof(e.kind), "%s", op_kind_name(a->last_op));
        snprintf(e.text, sizeof(e.text), "%s", a->last_op_result);
        status_incident_add(&a->metrics.incidents, &e);
        if (a->last_unavailability_us >= 0)
            status_hist_observe(&a->metrics.hist[STATUS_HIST_UNAVAIL], STATUS_HIST_UNAVAIL,
                                (double)a->last_unavailability_us / 1e6);
    }
}

/* The source's sync_state (status.h): what a commit waiting for the standby sees now. */
static const char *
source_sync_state(const struct agent *a)
{
    struct sender_positions p;

    if (state_exposed(&a->state) && strcmp(a->state.primary, a->cfg->node_name) == 0 &&
        !(a->op.kind == OP_EXPOSURE && a->op.step == OPS_X_RESYNCING))
        return "exposed";
    if (!sender_streaming(a->sender) || link_active(a->links) == NULL)
        return "down";
    if (unconfirmed_ms(a) >= sync_grace_ms(a))
        return "waiting";
    sender_positions(a->sender, &p);
    return p.flush + AGENT_CATCHUP_BYTES < p.sent ? "catchup" : "sync";
}

static void
arbiter_report_now(struct agent *a, const struct status_snapshot *st)
{
    /* Not the source once our record names another holder: a switchover's old primary, its
     * server stopping, has learnt the new epoch held by its peer. */
    bool other_holds = a->state.primary[0] != '\0' &&
                       strcmp(a->state.primary, a->cfg->node_name) != 0;
    struct arbiter_report r = {
        .role = a->role == ROLE_SOURCE && a->primary_up && !other_holds ? MSG_ROLE_SOURCE
                : a->role == ROLE_SINK                                  ? MSG_ROLE_SINK
                                                                        : MSG_ROLE_UNKNOWN,
        .epoch = a->state.epoch,
        .durable_lsn = a->role == ROLE_SINK ? st->flush_lsn : st->primary_lsn,
        .mark = &a->state,
        .timeline = st->timeline,
        .flush_lag_bytes = st->flush_lag_bytes,
        .apply_lag_bytes = st->apply_lag_bytes,
        .flush_lag_s = st->flush_lag_s,
        .apply_lag_s = st->apply_lag_s,
        .wal_at_risk_bytes = st->wal_at_risk_bytes,
    };

    snprintf(r.sync_state, sizeof(r.sync_state), "%s", st->sync_state);
    arbiter_report(a->arbiter, &r);
}

/* Publishes a snapshot for the HTTP API, every AGENT_STATUS_EVERY_MS. */
static void
status_tick(struct agent *a)
{
    static const char *const arbiter_states[] = {"none", "up", "down", "fenced"};
    struct status_snapshot st = {0};
    struct conn *c = link_active(a->links);
    bool mine = strcmp(a->state.primary, a->cfg->node_name) == 0;

    wake_at(a, WAKE_STATUS, clock_mono_ms() + AGENT_STATUS_EVERY_MS);
    if (windows_tick(&a->windows, a->role == ROLE_SOURCE, a->comp, &a->board) && !a->windows.active)
        wake_at(a, WAKE_FAILOVER, clock_mono_ms());
    take_requests(a);
    snprintf(st.node_name, sizeof(st.node_name), "%s", a->cfg->node_name);
    snprintf(st.peer_name, sizeof(st.peer_name), "%s", a->cfg->peer.name);
    snprintf(st.peer_addr, sizeof(st.peer_addr), "%s", a->cfg->peer.addr.text);
    snprintf(st.maintenance, sizeof(st.maintenance), "%s", a->windows.text);
    st.epoch = a->state.epoch;
    snprintf(st.operation, sizeof(st.operation), "%s", op_kind_name(a->op.kind));
    snprintf(st.op_step, sizeof(st.op_step), "%.*s", (int)sizeof(st.op_step) - 1,
             op_running(&a->op) ? a->op.step_text : "");
    st.op_takes_commits = a->op.kind == OP_SWITCHOVER && a->op.step == OPS_SO_CHECKPOINT;
    st.op_id = a->op.id;
    st.last_op_id = a->last_op_id;
    snprintf(st.last_op, sizeof(st.last_op), "%s", op_kind_name(a->last_op));
    st.last_op_ok = a->last_op_ok;
    snprintf(st.last_op_result, sizeof(st.last_op_result), "%s", a->last_op_result);
    st.last_unavailability_us = a->last_unavailability_us;
    st.switchovers = a->switchovers;
    st.failovers = a->failovers;
    st.scheduled_switchover_unix_us = a->scheduled.id != 0 ? a->scheduled.at_unix_us : 0;
    st.cert_not_after_unix = link_cert_not_after(a->links);
    st.started_unix_us = a->started_us;
    st.now_unix_us = clock_unix_us();
    st.failover_paused = a->failover_paused || a->windows.active; /* by an operator or a window */
    st.link_up = c != NULL;
    st.rtt_us = c != NULL ? conn_rtt_us(c) : 0;
    if (c != NULL) {
        st.wal_raw_bytes = a->role == ROLE_SOURCE ? conn_tx_stats(c)->wal_raw_bytes
                                                  : conn_rx_stats(c)->wal_raw_bytes;
        st.wal_wire_bytes = a->role == ROLE_SOURCE ? conn_tx_stats(c)->wal_wire_bytes
                                                   : conn_rx_stats(c)->wal_wire_bytes;
        if (a->role == ROLE_SOURCE)
            snprintf(st.wal_compression, sizeof(st.wal_compression), "%s", conn_compression(c));
    }
    st.spool_free_bytes = -1;
    {
        struct statvfs fs;
        if (statvfs(a->cfg->spool_dir, &fs) == 0)
            st.spool_free_bytes = (int64_t)fs.f_bavail * (int64_t)fs.f_frsize;
    }
    switch (a->role) {
    case ROLE_SOURCE:
        snprintf(st.role, sizeof(st.role), "source");
        snprintf(st.pg_state, sizeof(st.pg_state), "%s", a->primary_up ? "primary" : "unknown");
        if (a->sender != NULL)
            sender_status(a->sender, &st);
        if (a->head_lsn > st.primary_lsn)
            st.primary_lsn = a->head_lsn;
        snprintf(st.sync_state, sizeof(st.sync_state), "%s", source_sync_state(a));
        break;
    case ROLE_SINK:
        sink_status(a->sink, c != NULL, &st);
        if (st.spool_stall[0] != '\0')
            set_last_error(a, "spool: %.240s", st.spool_stall);
        else if (strncmp(a->last_error, "spool: ", 7) == 0)
            a->last_error[0] = '\0';
        break;
    case ROLE_FENCED:
        snprintf(st.role, sizeof(st.role), "fenced");
        snprintf(st.pg_state, sizeof(st.pg_state), "%s",
                 pgctl_running(a->cfg->pgdata) ? "stale" : "down");
        snprintf(st.sync_state, sizeof(st.sync_state), "down");
        break;
    case ROLE_STARTING:
        snprintf(st.role, sizeof(st.role), "starting");
        snprintf(st.pg_state, sizeof(st.pg_state), "%s",
                 pgctl_running(a->cfg->pgdata) ? "unknown" : "down");
        snprintf(st.sync_state, sizeof(st.sync_state), "down");
        break;
    }
    snprintf(st.last_error, sizeof(st.last_error), "%s", a->last_error);
    /* availability */
    snprintf(st.availability_mode, sizeof(st.availability_mode), "%s",
             a->cfg->availability_mode == CONFIG_MAXIMUM_PROTECTION ? "maximum_protection"
                                                                    : "maximum_availability");
    if (state_exposed(&a->state)) {
        st.exposed = mine && a->role == ROLE_SOURCE;
        st.stale = !mine && a->role != ROLE_SOURCE;
        st.exposed_since_unix_us = a->state.exposed_unix_us;
        st.exposed_lsn = a->state.exposed_lsn;
    }
    st.wal_at_risk_bytes = st.exposed ? a->at_risk_bytes : 0;
    st.wal_at_risk_peak_bytes = a->at_risk_peak;
    st.exposed_seconds_total =
        a->exposed_s_done +
        (st.exposed ? (double)(st.now_unix_us - a->state.exposed_unix_us) / 1e6 : 0);
    snprintf(st.arbiter, sizeof(st.arbiter), "%s", arbiter_kind(a->arbiter));
    snprintf(st.arbiter_state, sizeof(st.arbiter_state), "%s",
             arbiter_states[arbiter_state(a->arbiter)]);
    snprintf(st.arbiter_desc, sizeof(st.arbiter_desc), "%s", arbiter_describe(a->arbiter));

    status_metrics_tick(a, &st);
    st.metrics = a->metrics;
    status_publish(&a->board, &st);
    if (a->arbiter != NULL)
        arbiter_report_now(a, &st);
}

/* ---- the loop ---- */

/* The durability step and everything due: after all the completions of a turn. */
static void
agent_turn(struct agent *a)
{
    uint64_t now;

    link_reap(a->links);
    for (int ev = 0; ev < EV_COUNT && !a->failed; ev++)
        if (a->pending & (1u << ev)) {
            a->pending &= ~(1u << ev);
            agent_dispatch(a, (enum agent_event)ev);
        }
    if (a->failed)
        return;
    if (a->role == ROLE_SINK && a->sink != NULL) {
        sink_turn(a->sink, link_active(a->links));
        sink_lag_note(a->sink);
    }
    now = clock_mono_ms();
    a->wake[WAKE_OP] = op_next_wake(&a->op);
    for (int w = 0; w < WAKE_COUNT && !a->failed; w++) {
        if (a->wake[w] == 0 || a->wake[w] > now)
            continue;
        a->wake[w] = 0;
        switch ((enum agent_wake)w) {
        case WAKE_SESSION:
            start_session(a);
            break;
        case WAKE_LINK:
            connect_link(a);
            break;
        case WAKE_STATUS:
            status_tick(a);
            break;
        case WAKE_FAILOVER:
            failover_watch(a);
            break;
        case WAKE_WATCH:
            availability_watch(a);
            break;
        case WAKE_OP: {
            struct op_event ev = {.kind = OPE_WAKE};
            op_handle(&a->op, &ev);
            break;
        }
        case WAKE_JOB:
            job_reaped(a);
            if (a->job.pid > 0)
                wake_at(a, WAKE_JOB, now + AGENT_JOB_POLL_MS);
            break;
        case WAKE_SCHEDULED:
            run_scheduled(a);
            break;
        case WAKE_START:
            start_decide(a);
            break;
        case WAKE_COUNT:
            break;
        }
    }
    a->wake[WAKE_OP] = op_next_wake(&a->op);
}

/* Milliseconds until the earliest deadline (-1: none). */
static int
next_timeout(const struct agent *a)
{
    uint64_t next = 0, now = clock_mono_ms();

    if (a->pending != 0)
        return 0;
    for (int w = 0; w < WAKE_COUNT; w++)
        if (a->wake[w] != 0 && (next == 0 || a->wake[w] < next))
            next = a->wake[w];
    if (next == 0)
        return -1;
    return next > now ? (int)(next - now < 60000 ? next - now : 60000) : 0;
}

/* ---- life ---- */

static void
hold_reports(void *ctx)
{
    struct agent *a = ctx;

    if (a->sender != NULL)
        sender_hold(a->sender);
}

static void
release_reports(void *ctx)
{
    struct agent *a = ctx;

    if (a->sender != NULL)
        sender_release(a->sender);
}

static const struct syncrep_hooks syncrep_hooks = {.hold = hold_reports,
                                                   .release = release_reports};

static int
agent_setup(struct agent *a)
{
    char err[512];
    int rc;

    /* A site's state_dir is its spool_dir by default, made here when new. */
    if (mkdir(a->cfg->state_dir, 0700) != 0 && errno != EEXIST) {
        log_error(a->comp, "cannot create the state directory %s: %s", a->cfg->state_dir,
                  strerror(errno));
        return -errno;
    }
    rc = state_load(a->cfg->state_dir, &a->state, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "%s", err);
        return rc;
    }
    rc = maint_store_open(&a->maint, a->cfg->state_dir, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "maintenance windows: %s", err);
        return rc;
    }
    windows_init(&a->windows, a->maint);
    rc = wio_loop_new(&a->loop, 512);
    if (rc < 0) {
        log_error(a->comp, "cannot set up io_uring: %s", wire_strerror(rc));
        return rc;
    }
    rc = httpapi_start(&a->http, a->cfg->http_listen.text, a->cfg->http_token_file, &a->board, err,
                       sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "HTTP API on %s: %s", a->cfg->http_listen.text, err);
        return rc;
    }
    httpapi_set_maint(a->http, a->maint);
    {
        struct statuspage_thresholds th; /* the status_*_lag_* keys */

        statuspage_thresholds_from_config(&th, a->cfg);
        httpapi_set_thresholds(a->http, &th);
    }
    /* Both roles listen: the sink for its source, the source to refuse stale peers. */
    rc = link_set_new(&a->links, a->loop, a->cfg, &link_ev, a, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "%s", err);
        return rc;
    }
    rc = pgconn_new(&a->pg, a->loop, a->cfg->pg_conninfo, a->comp);
    if (rc == 0)
        rc = syncrep_new(&a->syncrep, a->pg, a->loop, a->cfg->pg_conninfo, a->cfg->state_dir,
                         a->cfg->application_name, &syncrep_hooks, a, a->comp);
    if (rc < 0)
        return rc;
    if (a->cfg->arbiter != CONFIG_ARBITER_NONE) {
        rc = arbiter_new(&a->arbiter, a->loop, a->cfg, &arbiter_cb, a);
        if (rc < 0) {
            log_error(a->comp, "cannot set up the arbiter: %s", wire_strerror(rc));
            return rc;
        }
    }
    op_init(&a->op, &op_env, a, a->cfg->node_name);
    {
        char m[120];
        log_info(a->comp, "epoch %" PRIu64 " held by %s, %s; learning this site's role",
                 a->state.epoch, a->state.primary[0] != '\0' ? a->state.primary : "?",
                 mark_text(&a->state, m, sizeof(m)));
    }
    a->role = ROLE_STARTING;
    wake_at(a, WAKE_START, clock_mono_ms());
    wake_at(a, WAKE_STATUS, clock_mono_ms());
    return 0;
}

static void
agent_teardown(struct agent *a)
{
    if (a->http != NULL)
        httpapi_stop(a->http); /* first: its thread reads the board */
    pgctl_kill(&a->job);
    fdwatch_release(a->job_watch);
    arbiter_free(a->arbiter);
    stop_source(a);
    syncrep_free(a->syncrep);
    pgconn_free(a->pg);
    if (a->loop != NULL)
        link_set_free(a->links); /* runs the loop a few turns: BYEs leave */
    sink_close(a->sink);
    if (a->loop != NULL)
        wio_loop_free(a->loop);
    maint_store_close(a->maint); /* after httpapi_stop: its thread uses the store */
}

int
agent_run(const struct wm_config *cfg, volatile sig_atomic_t *stop)
{
    struct agent a = {.cfg = cfg, .last_unavailability_us = -1, .commit_stage = LAG_FLUSH};
    int rc;

    snprintf(a.comp, sizeof(a.comp), "agent[%s]", cfg->node_name);
    status_board_init(&a.board);
    pgctl_job_init(&a.job);
    a.started_us = clock_unix_us();
    rc = agent_setup(&a);
    if (rc < 0) {
        agent_teardown(&a);
        status_board_destroy(&a.board);
        return 1;
    }
    while (!*stop && !a.failed) {
        rc = wio_run_once(a.loop, next_timeout(&a));
        if (rc < 0) {
            log_error(a.comp, "event loop failed: %s", wire_strerror(rc));
            a.exit_status = 1;
            break;
        }
        agent_turn(&a);
    }
    log_info(a.comp, "stopping%s", a.failed ? " after a failure" : "");
    agent_teardown(&a);
    status_board_destroy(&a.board);
    return a.exit_status;
}
