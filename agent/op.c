/*
 * op.c - the agent's operations as state machines; contract and the steps in op.h.
 *
 * op_handle() dispatches on (step, event); a step that does not expect an event ignores it.
 * Entering a step (set_step) logs it with a line for people, which also goes to the status.
 * An operation ends in end(): its result is logged and handed to env->finished, and the op is
 * idle again.  Requests that cannot begin are refused (env->finished with refused) without
 * touching the operation in progress.
 */
#include "op.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "util.h"

/* clang-format off */
static const char *const kind_names[] = {
    [OP_NONE] = "none",
    [OP_SWITCHOVER] = "switchover",
    [OP_FAILOVER] = "failover",
    [OP_FENCING] = "fencing",
    [OP_REJOIN] = "rejoin",
    [OP_EXPOSURE] = "exposure",
};

static const char *const step_names[OPS_COUNT] = {
    [OPS_IDLE] = "idle",
    [OPS_SO_CHECKPOINT] = "so-checkpoint",
    [OPS_SO_STOPPING] = "so-stopping",
    [OPS_SO_WAIT_DONE] = "so-wait-done",
    [OPS_K_WAIT_PROMOTE] = "k-wait-promote",
    [OPS_K_WAIT_VOTE] = "k-wait-vote",
    [OPS_K_WAIT_REPLAY] = "k-wait-replay",
    [OPS_K_PROMOTING] = "k-promoting",
    [OPS_K_WAIT_SYNC] = "k-wait-sync",
    [OPS_F_STOPPING] = "f-stopping",
    [OPS_R_CHECKPOINT] = "r-checkpoint",
    [OPS_R_REWIND] = "r-rewind",
    [OPS_R_EMPTYING] = "r-emptying",
    [OPS_R_BASEBACKUP] = "r-basebackup",
    [OPS_R_CONTROLDATA] = "r-controldata",
    [OPS_R_STARTING] = "r-starting",
    [OPS_R_WAIT_SYNC] = "r-wait-sync",
    [OPS_X_ASKING] = "x-asking",
    [OPS_X_RELAXING] = "x-relaxing",
    [OPS_X_EXPOSED] = "x-exposed",
    [OPS_X_RESTORING] = "x-restoring",
    [OPS_X_RESYNCING] = "x-resyncing",
};
/* clang-format on */

const char *
op_kind_name(enum op_kind kind)
{
    return (unsigned)kind <= OP_EXPOSURE ? kind_names[kind] : "?";
}

const char *
op_step_name(enum op_step step)
{
    return (unsigned)step < OPS_COUNT ? step_names[step] : "?";
}

bool
op_running(const struct op *op)
{
    return op->kind != OP_NONE;
}

static uint64_t
now_ms(const struct op *op)
{
    return op->env->now_ms(op->ctx);
}

static struct op_facts
facts(const struct op *op)
{
    struct op_facts f;

    memset(&f, 0, sizeof(f));
    op->env->facts(op->ctx, &f);
    return f;
}

static void __attribute__((format(printf, 3, 4)))
set_step(struct op *op, enum op_step step, const char *fmt, ...)
{
    va_list ap;

    log_debug(op->comp, "%s: %s -> %s", kind_names[op->kind], step_names[op->step],
              step_names[step]);
    op->step = step;
    op->step_at_ms = now_ms(op);
    op->retry_at_ms = 0;
    va_start(ap, fmt);
    vsnprintf(op->step_text, sizeof(op->step_text), fmt, ap);
    va_end(ap);
    log_info(op->comp, "%s: %s", kind_names[op->kind], op->step_text);
}

static void
begin(struct op *op, enum op_kind kind, uint64_t id)
{
    const struct op_env *env = op->env;
    void *ctx = op->ctx;
    char comp[sizeof(op->comp)];

    memcpy(comp, op->comp, sizeof(comp));
    memset(op, 0, sizeof(*op));
    op->env = env;
    op->ctx = ctx;
    memcpy(op->comp, comp, sizeof(comp));
    op->kind = kind;
    op->id = id;
    op->unavailability_us = -1;
}

/* Ends the operation: ok or not, with a result for the status and the log. */
static void __attribute__((format(printf, 3, 4)))
end(struct op *op, bool ok, const char *fmt, ...)
{
    enum op_kind kind = op->kind;
    uint64_t id = op->id;
    int64_t unavail = op->unavailability_us;
    char result[256];
    va_list ap;

    if (kind == OP_NONE)
        return;
    va_start(ap, fmt);
    vsnprintf(result, sizeof(result), fmt, ap);
    va_end(ap);
    if (ok)
        log_info(op->comp, "%s done: %s", kind_names[kind], result);
    else
        log_error(op->comp, "%s failed: %s", kind_names[kind], result);
    begin(op, OP_NONE, 0);
    op->env->finished(op->ctx, kind, id, ok, false, result, unavail);
}

static void __attribute__((format(printf, 4, 5)))
refuse(struct op *op, enum op_kind kind, uint64_t id, const char *fmt, ...)
{
    char result[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(result, sizeof(result), fmt, ap);
    va_end(ap);
    log_warning(op->comp, "%s refused: %s", kind_names[kind], result);
    op->env->finished(op->ctx, kind, id, false, true, result, -1);
}

/* Starts a job for the step; a failure to start it ends the operation with what. */
static bool
job(struct op *op, int rc, const char *what)
{
    if (rc < 0) {
        end(op, false, "cannot run %s: %s", what, strerror(-rc));
        return false;
    }
    op->job_running = true;
    return true;
}

void
op_init(struct op *op, const struct op_env *env, void *ctx, const char *node)
{
    memset(op, 0, sizeof(*op));
    op->env = env;
    op->ctx = ctx;
    op->unavailability_us = -1;
    snprintf(op->comp, sizeof(op->comp), "op[%s]", node);
}

/* ---- becoming a standby (switchover's old primary, rejoin) ---- */

/* Standby configuration written (rejoin: own configuration files back first), then
 * pg_controldata of the new standby, whose output become_sink reads. */
static void
to_controldata(struct op *op, bool restore_configs)
{
    struct op_facts f = facts(op);
    char err[512];

    if ((restore_configs && op->env->restore_configs(op->ctx, err, sizeof(err)) < 0) ||
        op->env->standby_config(op->ctx, err, sizeof(err)) < 0) {
        end(op, false, "%s", err);
        return;
    }
    if (!job(op, op->env->controldata(op->ctx), "pg_controldata"))
        return;
    set_step(op, OPS_R_CONTROLDATA, "reading the control data of the new standby of %s", f.peer);
}

static void
to_starting(struct op *op)
{
    struct op_facts f = facts(op);

    if (op->env->become_sink(op->ctx) < 0) {
        end(op, false, "cannot open the spool and WAL server");
        return;
    }
    if (!job(op, op->env->pg(op->ctx, PGCTL_START), "pg_ctl start"))
        return;
    set_step(op, OPS_R_STARTING, "starting PostgreSQL as a standby of %s", f.peer);
}

static void
rejoin_checkpoint(struct op *op)
{
    struct op_facts f = facts(op);

    if (!job(op, op->env->checkpoint_peer(op->ctx), "psql"))
        return;
    set_step(op, OPS_R_CHECKPOINT, "CHECKPOINT on %s's PostgreSQL", f.peer);
}

/* ---- requests ---- */

/*
 * The switchover's point of no return for commits: the sink is told, and the primary stops
 * (the write-unavailability starts).  The link must still stream: it may have gone down while
 * SO_CHECKPOINT ran.
 */
static void
so_stop(struct op *op)
{
    struct op_facts f = facts(op);
    struct msg_control begin_ctl = {.kind = MSG_CTL_SWITCHOVER_BEGIN, .value = op->id};

    if (!f.link_up || !f.streaming) {
        end(op, false, "the link to %s went down before the primary was stopped", f.peer);
        return;
    }
    if (op->env->send(op->ctx, &begin_ctl) < 0) {
        end(op, false, "cannot reach %s", f.peer);
        return;
    }
    op->stop_unix_us = clock_unix_us();
    if (!job(op, op->env->pg(op->ctx, PGCTL_STOP), "pg_ctl stop"))
        return;
    set_step(op, OPS_SO_STOPPING,
             "stopping the primary (pg_ctl stop -m fast); %s receives its final WAL", f.peer);
}

void
op_switchover(struct op *op, uint64_t id, const char *target, uint64_t max_lag_bytes)
{
    struct op_facts f = facts(op);
    uint64_t max_lag = max_lag_bytes != 0 ? max_lag_bytes : OP_SWITCHOVER_MAX_LAG;

    /* Preflight: everything a clean switchover needs, checked before anything is touched. */
    if (!f.source) {
        refuse(op, OP_SWITCHOVER, id, "%s is the %s: ask the primary's agent (%s) for a switchover",
               f.node, f.sink ? "standby" : "fenced node", f.peer);
        return;
    }
    if (op->kind == OP_EXPOSURE && op->step != OPS_X_ASKING) {
        refuse(op, OP_SWITCHOVER, id,
               "%s runs exposed: its standby %s is not synchronous (%s)", f.node, f.peer,
               op->step_text);
        return;
    }
    if (op->kind != OP_NONE) {
        refuse(op, OP_SWITCHOVER, id, "busy with %s", kind_names[op->kind]);
        return;
    }
    if (target != NULL && target[0] != '\0' && strcmp(target, f.peer) != 0) {
        refuse(op, OP_SWITCHOVER, id, "unknown node %s (the peer is %s)", target, f.peer);
        return;
    }
    if (!f.link_up || !f.streaming) {
        refuse(op, OP_SWITCHOVER, id, "the link to %s is down", f.peer);
        return;
    }
    if (f.primary_lsn > f.ack_flush + max_lag) {
        refuse(op, OP_SWITCHOVER, id, "%s is %" PRIu64 " bytes behind (more than %" PRIu64 ")",
               f.peer, f.primary_lsn - f.ack_flush, max_lag);
        return;
    }
    if (f.ack_apply == 0 || f.primary_lsn > f.ack_apply + max_lag) {
        refuse(op, OP_SWITCHOVER, id,
               "the standby at %s is not replaying (applied " LSN_FMT ", primary at " LSN_FMT ")",
               f.peer, LSN_ARGS(f.ack_apply), LSN_ARGS(f.primary_lsn));
        return;
    }
    begin(op, OP_SWITCHOVER, id);
    if (op->env->checkpoint_local == NULL) {
        so_stop(op);
        return;
    }
    if (!job(op, op->env->checkpoint_local(op->ctx), "CHECKPOINT"))
        return;
    set_step(op, OPS_SO_CHECKPOINT,
             "WAL switch and CHECKPOINT on the primary, which still takes commits (the stop "
             "then has little to write, the standby site little to stream again)");
}

void
op_failover(struct op *op, uint64_t id, bool forced, bool accept_data_loss)
{
    struct op_facts f = facts(op);
    const struct wm_state *e = f.epoch;

    if (!f.sink) {
        refuse(op, OP_FAILOVER, id, "%s is not a standby: nothing to fail over to", f.node);
        return;
    }
    if (op->kind != OP_NONE) {
        refuse(op, OP_FAILOVER, id, "busy with %s", kind_names[op->kind]);
        return;
    }
    if (!forced && f.link_up) {
        refuse(op, OP_FAILOVER, id,
               "the primary's agent %s is connected: use switchover (or failover --force)", f.peer);
        return;
    }
    if (forced && state_exposed(e) && strcmp(e->primary, f.node) != 0 && !accept_data_loss) {
        /* A stale standby: what the primary acknowledged since the mark may be missing. */
        char when[64];
        time_t t = (time_t)(e->exposed_unix_us / 1000000);
        struct tm tm;

        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
        refuse(op, OP_FAILOVER, id,
               "%s is stale: %s runs exposed since " LSN_FMT " (%s) and %s holds WAL up to " LSN_FMT
               "; commits %s acknowledged since may be lost: add --accept-data-loss to promote "
               "anyway",
               f.node, e->primary, LSN_ARGS(e->exposed_lsn), when, f.node,
               LSN_ARGS(f.sink_flushed), e->primary);
        return;
    }
    begin(op, OP_FAILOVER, id);
    op->forced = forced;
    if (forced) {
        bool stale = state_exposed(e) && strcmp(e->primary, f.node) != 0;
        /* The operator vouches that the primary site is gone: no arbiter asked.  The new
         * primary has no standby: its epoch is exposed from its durable end on. */
        struct wm_state rec = {.epoch = e->epoch + 1,
                               .changed_unix_us = clock_unix_us(),
                               .exposed_lsn = f.sink_flushed,
                               .exposed_unix_us = clock_unix_us()};

        snprintf(rec.primary, sizeof(rec.primary), "%s", f.node);
        op->env->close_links(op->ctx, "forced fail-over");
        if (op->env->raise_epoch(op->ctx, &rec, true) < 0) {
            end(op, false, "cannot record epoch %" PRIu64, rec.epoch);
            return;
        }
        set_step(op, OPS_K_WAIT_REPLAY,
                 "forced%s: the standby receives all the spool holds (" LSN_FMT ")",
                 stale ? " with --accept-data-loss" : "", LSN_ARGS(f.sink_flushed));
        op->retry_at_ms = now_ms(op);
        return;
    }
    {
        struct arbiter_request req = {.ask = ARBITER_PROMOTE,
                                      .epoch = e->epoch,
                                      .durable_lsn = f.sink_flushed,
                                      .failover_timeout_ms = f.failover_timeout_ms};

        if (op->env->ask(op->ctx, &req) < 0) {
            end(op, false, "no arbiter reachable: not promoting (failover --force overrides)");
            return;
        }
    }
    set_step(op, OPS_K_WAIT_VOTE, "asking the %s for epoch %" PRIu64, f.arbiter, e->epoch + 1);
}

void
op_rejoin(struct op *op, uint64_t id)
{
    struct op_facts f = facts(op);

    if (!f.fenced) {
        refuse(op, OP_REJOIN, id, "%s is not fenced: it has nothing to rejoin", f.node);
        return;
    }
    if (op->kind != OP_NONE) {
        refuse(op, OP_REJOIN, id, "busy with %s", kind_names[op->kind]);
        return;
    }
    if (!f.can_rejoin) {
        refuse(op, OP_REJOIN, id,
               "peer_pg_conninfo is not set: pg_rewind needs to reach %s's PostgreSQL", f.peer);
        return;
    }
    if (f.pg_running) {
        refuse(op, OP_REJOIN, id, "the local PostgreSQL still runs: stop it first");
        return;
    }
    begin(op, OP_REJOIN, id);
    rejoin_checkpoint(op);
}

void
op_fence(struct op *op)
{
    struct op_facts f = facts(op);

    if (op->kind != OP_NONE && op->kind != OP_FENCING)
        end(op, false, "fenced by %s (epoch %" PRIu64 ")", f.epoch->primary, f.epoch->epoch);
    if (op->kind == OP_FENCING)
        return;
    begin(op, OP_FENCING, 0);
    if (!f.pg_running) {
        /* Nothing to stop: the step ends at once (and rejoin follows if asked). */
        set_step(op, OPS_F_STOPPING, "PostgreSQL is not running");
        op->retry_at_ms = now_ms(op);
        return;
    }
    if (!job(op, op->env->pg(op->ctx, PGCTL_STOP), "pg_ctl stop: stop it by hand, it is a stale "
                                                   "primary"))
        return;
    set_step(op, OPS_F_STOPPING, "stopping the stale primary (pg_ctl stop -m fast)");
}

/* X_ASKING and X_RESYNCING: one request to the arbiter; false when it cannot be asked now. */
static bool
ask_arbiter(struct op *op, enum arbiter_ask ask)
{
    struct op_facts f = facts(op);
    struct arbiter_request req = {.ask = ask,
                                  .epoch = f.epoch->epoch,
                                  .durable_lsn = f.primary_lsn,
                                  .standby_lsn = f.ack_flush};

    op->asked = op->env->ask(op->ctx, &req) == 0;
    if (!op->asked)
        op->retry_at_ms = now_ms(op) + OP_ARBITER_RETRY_MS;
    return op->asked;
}

/* Without an arbiter the agent records the next epoch itself, with the mark given. */
static bool
self_grant(struct op *op, bool exposed)
{
    struct op_facts f = facts(op);
    struct wm_state rec = {.epoch = f.epoch->epoch + 1, .changed_unix_us = clock_unix_us()};

    snprintf(rec.primary, sizeof(rec.primary), "%s", f.node);
    if (exposed) {
        rec.exposed_lsn = f.ack_flush;
        rec.exposed_unix_us = rec.changed_unix_us;
    }
    if (op->env->raise_epoch(op->ctx, &rec, false) < 0) {
        end(op, false, "cannot record epoch %" PRIu64, rec.epoch);
        return false;
    }
    return true;
}

static void
relax(struct op *op)
{
    struct op_facts f = facts(op);

    if (op->env->sync_relax(op->ctx) < 0) {
        op->retry_at_ms = now_ms(op) + OP_RETRY_MS;
        return;
    }
    set_step(op, OPS_X_RELAXING, "lifting synchronous_standby_names: commits go on without %s",
             f.peer);
}

int
op_expose(struct op *op)
{
    struct op_facts f = facts(op);

    if (op->kind != OP_NONE)
        return -EBUSY;
    begin(op, OP_EXPOSURE, 0);
    if (!f.arbiter_configured) {
        log_warning(op->comp, "no arbiter configured: %s goes on without %s on its own (epoch %"
                    PRIu64 ")", f.node, f.peer, f.epoch->epoch + 1);
        if (self_grant(op, true))
            relax(op);
        return 0;
    }
    if (!ask_arbiter(op, ARBITER_EXPOSE)) {
        begin(op, OP_NONE, 0); /* an isolated primary never runs exposed: commits keep waiting */
        return -ENOTCONN;
    }
    set_step(op, OPS_X_ASKING, "%s has not confirmed for %.1f s while commits wait: asking the "
             "arbiter to run exposed (epoch %" PRIu64 ")", f.peer,
             (double)f.lost_for_ms / 1000, f.epoch->epoch + 1);
    return 0;
}

void
op_resume_exposure(struct op *op)
{
    if (op->kind != OP_NONE)
        return;
    begin(op, OP_EXPOSURE, 0);
    relax(op);
}

/* ---- progress ---- */

static void so_stopped(struct op *op);

static void
on_job_done(struct op *op, int code)
{
    struct op_facts f = facts(op);
    char err[512];

    op->job_running = false;
    switch (op->step) {
    case OPS_SO_CHECKPOINT:
        if (code != 0)
            log_warning(op->comp,
                        "WAL switch or CHECKPOINT before the stop failed (exit %d; see "
                        "%s/pg_ops.log): the stop takes longer",
                        code, f.state_dir);
        so_stop(op);
        return;
    case OPS_SO_STOPPING:
        op->job_ended = true;
        op->job_code = code;
        so_stopped(op); /* goes on once the session has ended too */
        return;
    case OPS_SO_WAIT_DONE:
        /* pg_ctl stop, ended after the stream's clean end sent SWITCHOVER_PROMOTE */
        op->job_ended = true;
        op->job_code = code;
        if (code != 0) {
            end(op, false,
                "pg_ctl stop failed (exit %d) after the primary's clean end, while %s promotes: "
                "stop it by hand; see %s/pg_ops.log",
                code, f.peer, f.state_dir);
            return;
        }
        if (op->done_pending)
            to_controldata(op, false);
        return;
    case OPS_K_PROMOTING:
        if (code != 0) {
            end(op, false, "pg_ctl promote failed (exit %d); see %s/pg_ops.log", code,
                f.state_dir);
            return;
        }
        if (op->kind == OP_SWITCHOVER) {
            struct wm_state rec = {.epoch = f.epoch->epoch + 1, .changed_unix_us = clock_unix_us()};
            struct msg_control done = {.kind = MSG_CTL_SWITCHOVER_DONE};

            snprintf(rec.primary, sizeof(rec.primary), "%s", f.node);
            if (op->env->raise_epoch(op->ctx, &rec, true) < 0) {
                end(op, false, "cannot record epoch %" PRIu64, rec.epoch);
                return;
            }
            done.value2 = rec.epoch;
            if (op->env->send(op->ctx, &done) < 0)
                log_warning(op->comp, "cannot tell %s of the promotion; it learns the epoch when "
                                      "it reconnects", f.peer);
        }
        if (op->env->become_source(op->ctx) < 0) {
            end(op, false, "cannot act as the source");
            return;
        }
        if (op->kind == OP_FAILOVER) {
            op->unavailability_us = (int64_t)f.lost_for_ms * 1000;
            end(op, true,
                "%s promoted (epoch %" PRIu64 "); writable %.1f s after the source was lost; %s "
                "must rejoin",
                f.node, facts(op).epoch->epoch, (double)f.lost_for_ms / 1000, f.peer);
            return;
        }
        set_step(op, OPS_K_WAIT_SYNC, "promoted (epoch %" PRIu64 "); waiting for %s to follow",
                 facts(op).epoch->epoch, f.peer);
        return;
    case OPS_F_STOPPING:
        if (code != 0 && f.pg_running) {
            end(op, false, "pg_ctl stop failed (exit %d): stop the stale primary by hand", code);
            return;
        }
        end(op, true, "the stale primary is stopped; it takes no writes until it rejoins");
        if (f.auto_rejoin)
            op_rejoin(op, 0);
        return;
    case OPS_R_CHECKPOINT:
        if (code != 0) {
            /* Until the step's timeout: the peer may still be promoting. */
            log_warning(op->comp, "CHECKPOINT on %s failed (exit %d; see %s/pg_ops.log): trying "
                                  "again in a second", f.peer, code, f.state_dir);
            op->retry_at_ms = now_ms(op) + OP_RETRY_MS;
            return;
        }
        if (op->env->save_configs(op->ctx, err, sizeof(err)) < 0) {
            end(op, false, "%s", err);
            return;
        }
        if (!job(op, op->env->rewind(op->ctx), "pg_rewind"))
            return;
        set_step(op, OPS_R_REWIND, "pg_rewind from %s", f.peer);
        return;
    case OPS_R_REWIND:
        if (code != 0) {
            log_warning(op->comp, "pg_rewind failed (exit %d; see %s/pg_ops.log): taking a fresh "
                                  "base backup instead", code, f.state_dir);
            if (!job(op, op->env->empty_pgdata(op->ctx), "emptying pgdata"))
                return;
            set_step(op, OPS_R_EMPTYING, "emptying pgdata for a base backup from %s", f.peer);
            return;
        }
        to_controldata(op, true);
        return;
    case OPS_R_EMPTYING:
        if (code != 0) {
            end(op, false, "cannot empty pgdata (exit %d); see %s/pg_ops.log", code, f.state_dir);
            return;
        }
        if (!job(op, op->env->basebackup(op->ctx), "pg_basebackup"))
            return;
        set_step(op, OPS_R_BASEBACKUP, "pg_basebackup from %s", f.peer);
        return;
    case OPS_R_BASEBACKUP:
        if (code != 0) {
            end(op, false, "pg_basebackup failed (exit %d); see %s/pg_ops.log", code, f.state_dir);
            return;
        }
        to_controldata(op, true);
        return;
    case OPS_R_CONTROLDATA:
        if (code != 0) {
            end(op, false, "pg_controldata failed (exit %d)", code);
            return;
        }
        to_starting(op);
        return;
    case OPS_R_STARTING:
        if (code != 0) {
            end(op, false, "pg_ctl start failed (exit %d); see %s/postgresql.log", code,
                f.state_dir);
            return;
        }
        if (op->kind == OP_REJOIN) {
            /* Mirroring resumes whenever the new primary's agent connects. */
            end(op, true, "%s runs as a standby of %s; mirroring resumes when its source connects",
                f.node, f.peer);
            return;
        }
        if (op->synced) {
            end(op, true, "%s is the primary, %s its synchronous standby; write-unavailability "
                          "%.3f s", f.peer, f.node, (double)op->unavailability_us / 1e6);
            return;
        }
        set_step(op, OPS_R_WAIT_SYNC, "standby running; waiting for %s to be synchronous", f.peer);
        return;
    default:
        return;
    }
}

/*
 * SO_STOPPING: the session has ended, and either cleanly or with pg_ctl stop ended too.  A
 * clean end of the stream comes once the walsender has sent the shutdown checkpoint: the
 * primary writes no more WAL, and the promotion need not wait for pg_ctl, which notices the
 * postmaster gone only at its next 100 ms poll.  What needs the server stopped (its control
 * data, starting it as a standby) waits for the job in SO_WAIT_DONE.
 */
static void
so_stopped(struct op *op)
{
    struct op_facts f = facts(op);
    struct msg_control promote = {.kind = MSG_CTL_SWITCHOVER_PROMOTE};

    if (!op->primary_ended)
        return;
    /* Early only on the way to PROMOTE; a failure is reported once pg_ctl has ended too. */
    if (!op->job_ended && (!op->clean_end || f.ack_flush < f.primary_lsn || !f.link_up))
        return;
    if ((op->job_ended && op->job_code != 0) || !op->clean_end) {
        end(op, false, "the primary did not stop cleanly (pg_ctl exit %d%s); see %s/pg_ops.log",
            op->job_code, op->clean_end ? "" : ", its stream broke", f.state_dir);
        return;
    }
    op->target_lsn = f.primary_lsn;
    if (f.ack_flush < op->target_lsn || !f.link_up) {
        end(op, false, "%s confirmed " LSN_FMT " of " LSN_FMT ": not promoting it", f.peer,
            LSN_ARGS(f.ack_flush), LSN_ARGS(op->target_lsn));
        return;
    }
    promote.lsn = op->target_lsn;
    promote.value = op->stop_unix_us;
    if (op->env->send(op->ctx, &promote) < 0) {
        end(op, false, "cannot send SWITCHOVER_PROMOTE");
        return;
    }
    set_step(op, OPS_SO_WAIT_DONE, "the primary stopped at " LSN_FMT "; %s replays and promotes",
             LSN_ARGS(op->target_lsn), f.peer);
}

static void
on_peer_control(struct op *op, const struct msg_control *ctl)
{
    struct op_facts f = facts(op);

    switch (ctl->kind) {
    case MSG_CTL_SWITCHOVER_BEGIN:
        if (!f.sink || op->kind != OP_NONE) {
            struct msg_control no = {.kind = MSG_CTL_SWITCHOVER_ABORT};
            snprintf(no.text, sizeof(no.text), "%s is busy (%s) or not a sink", f.node,
                     kind_names[op->kind]);
            if (op->env->send(op->ctx, &no) < 0)
                log_warning(op->comp, "cannot send SWITCHOVER_ABORT");
            return;
        }
        begin(op, OP_SWITCHOVER, ctl->value);
        set_step(op, OPS_K_WAIT_PROMOTE, "%s stops its primary; waiting for its final WAL",
                 f.peer);
        return;
    case MSG_CTL_SWITCHOVER_PROMOTE:
        if (op->kind != OP_SWITCHOVER || op->step != OPS_K_WAIT_PROMOTE) {
            log_error(op->comp, "SWITCHOVER_PROMOTE outside a switchover: ignored");
            return;
        }
        op->target_lsn = ctl->lsn;
        op->stop_unix_us = ctl->value;
        set_step(op, OPS_K_WAIT_REPLAY, "waiting for the standby to replay up to " LSN_FMT,
                 LSN_ARGS(ctl->lsn));
        op->retry_at_ms = now_ms(op);
        return;
    case MSG_CTL_SWITCHOVER_ABORT:
        if (op->kind == OP_SWITCHOVER &&
            (op->step == OPS_SO_STOPPING || op->step == OPS_K_WAIT_PROMOTE))
            end(op, false, "%s aborted it: %s", f.peer, ctl->text);
        return;
    case MSG_CTL_SWITCHOVER_DONE: {
        struct wm_state rec = {.epoch = ctl->value2, .changed_unix_us = clock_unix_us()};
        char err[512];

        if (op->kind != OP_SWITCHOVER || op->step != OPS_SO_WAIT_DONE || op->done_pending) {
            log_error(op->comp, "SWITCHOVER_DONE outside a switchover: ignored");
            return;
        }
        /* The peer holds the new epoch; we become its standby. */
        snprintf(rec.primary, sizeof(rec.primary), "%s", f.peer);
        if (rec.epoch > f.epoch->epoch && op->env->raise_epoch(op->ctx, &rec, true) < 0) {
            end(op, false, "cannot record epoch %" PRIu64, rec.epoch);
            return;
        }
        if (op->env->save_configs(op->ctx, err, sizeof(err)) < 0) {
            end(op, false, "%s", err);
            return;
        }
        if (!op->job_ended) {
            op->done_pending = true;
            set_step(op, OPS_SO_WAIT_DONE, "%s promoted; waiting for pg_ctl stop to end", f.peer);
            return;
        }
        to_controldata(op, false);
        return;
    }
    case MSG_CTL_SWITCHOVER_SYNCED:
        if (op->kind != OP_SWITCHOVER)
            return;
        op->unavailability_us = (int64_t)ctl->value;
        if (op->step == OPS_R_WAIT_SYNC)
            end(op, true, "%s is the primary, %s its synchronous standby; write-unavailability "
                          "%.3f s", f.peer, f.node, (double)op->unavailability_us / 1e6);
        else if (op->step == OPS_R_CONTROLDATA || op->step == OPS_R_STARTING)
            op->synced = true; /* it may come before pg_ctl start ends */
        return;
    default:
        return;
    }
}

static void
on_verdict(struct op *op, const struct op_event *ev)
{
    struct op_facts f = facts(op);

    op->asked = false;
    switch (op->step) {
    case OPS_K_WAIT_VOTE:
        if (!ev->ok) {
            end(op, false, "the %s says no: %s", f.arbiter, ev->text);
            return;
        }
        if (f.link_up) {
            end(op, false, "the source came back while the %s voted: not promoting", f.arbiter);
            return;
        }
        if (op->env->raise_epoch(op->ctx, ev->epoch, true) < 0) {
            end(op, false, "cannot record epoch %" PRIu64, ev->epoch->epoch);
            return;
        }
        set_step(op, OPS_K_WAIT_REPLAY,
                 "epoch %" PRIu64 " granted: the standby receives all the spool holds (" LSN_FMT
                 ")", ev->epoch->epoch, LSN_ARGS(f.sink_flushed));
        op->retry_at_ms = now_ms(op);
        return;
    case OPS_X_ASKING:
        if (!ev->ok) {
            end(op, false, "the %s says no: %s", f.arbiter, ev->text);
            return;
        }
        if (op->env->raise_epoch(op->ctx, ev->epoch, false) < 0) {
            end(op, false, "cannot record epoch %" PRIu64, ev->epoch->epoch);
            return;
        }
        relax(op);
        return;
    case OPS_X_RESYNCING:
        if (!ev->ok) {
            /* Synchronous already; the arbiter keeps the standby stale until it records it. */
            log_warning(op->comp, "the arbiter did not record %s synchronous again: %s; asking "
                                  "again", f.peer, ev->text);
            op->retry_at_ms = now_ms(op) + OP_ARBITER_RETRY_MS;
            return;
        }
        if (op->env->raise_epoch(op->ctx, ev->epoch, false) < 0) {
            end(op, false, "cannot record epoch %" PRIu64, ev->epoch->epoch);
            return;
        }
        end(op, true, "%s is synchronous again (epoch %" PRIu64 "): commits wait for it, and it "
                      "may be promoted again", f.peer, ev->epoch->epoch);
        return;
    default:
        return;
    }
}

static void
on_sql_done(struct op *op, const struct op_event *ev)
{
    struct op_facts f = facts(op);

    switch (op->step) {
    case OPS_X_RELAXING:
        if (!ev->ok) {
            log_error(op->comp, "cannot lift synchronous_standby_names (%s): trying again in a "
                                "second", ev->text);
            op->retry_at_ms = now_ms(op) + OP_RETRY_MS;
            return;
        }
        set_step(op, OPS_X_EXPOSED, "running exposed: commits are acknowledged without %s; "
                 "waiting for it to catch up", f.peer);
        return;
    case OPS_X_RESTORING:
        if (!ev->ok) {
            log_warning(op->comp, "%s is not synchronous yet (%s): running exposed again",
                        f.peer, ev->text);
            relax(op);
            return;
        }
        if (!f.arbiter_configured) {
            if (self_grant(op, false))
                end(op, true, "%s is synchronous again (epoch %" PRIu64 ")", f.peer,
                    facts(op).epoch->epoch);
            return;
        }
        set_step(op, OPS_X_RESYNCING, "synchronous_standby_names in force again: telling the "
                 "arbiter that %s is synchronous", f.peer);
        (void)ask_arbiter(op, ARBITER_RESYNC);
        return;
    default:
        return;
    }
}

static void
on_wake(struct op *op)
{
    struct op_facts f = facts(op);
    uint64_t now = now_ms(op);

    if (op->step != OPS_X_EXPOSED && op->step != OPS_X_RESYNCING &&
        op->step != OPS_X_RELAXING && now - op->step_at_ms >= OP_STEP_TIMEOUT_MS) {
        end(op, false, "timed out while %s", op->step_text);
        return;
    }
    if (op->retry_at_ms == 0 || now < op->retry_at_ms)
        return;
    op->retry_at_ms = 0;
    switch (op->step) {
    case OPS_K_WAIT_REPLAY:
        /* Asked straight from the standby (a reply may be 10 s away). */
        if (op->env->query_standby(op->ctx) < 0)
            op->retry_at_ms = now + OP_REPLAY_POLL_MS;
        return;
    case OPS_F_STOPPING:
        if (!op->job_running)
            on_job_done(op, 0); /* nothing was running */
        return;
    case OPS_R_CHECKPOINT:
        /* Again, within the same step (its timeout counts from the first try). */
        (void)job(op, op->env->checkpoint_peer(op->ctx), "psql");
        return;
    case OPS_X_RELAXING:
        relax(op);
        return;
    case OPS_X_ASKING:
    case OPS_X_RESYNCING:
        if (!op->asked && !ask_arbiter(op, op->step == OPS_X_ASKING ? ARBITER_EXPOSE
                                                                    : ARBITER_RESYNC))
            log_debug(op->comp, "the arbiter cannot be reached: asking again in %.0f s",
                      OP_ARBITER_RETRY_MS / 1000.0);
        return;
    default:
        (void)f;
        return;
    }
}

void
op_handle(struct op *op, const struct op_event *ev)
{
    struct op_facts f;

    if (op->kind == OP_NONE && !(ev->kind == OPE_PEER_CONTROL && ev->ctl != NULL &&
                                 ev->ctl->kind == MSG_CTL_SWITCHOVER_BEGIN))
        return;
    switch (ev->kind) {
    case OPE_JOB_DONE:
        on_job_done(op, ev->code);
        return;
    case OPE_WAKE:
        on_wake(op);
        return;
    case OPE_PRIMARY_ENDED:
        if (op->step == OPS_SO_STOPPING) {
            op->primary_ended = true;
            op->clean_end = ev->ok;
            so_stopped(op);
        }
        return;
    case OPE_IDENTIFIED:
        if (op->step == OPS_K_WAIT_SYNC)
            op->sync_lsn = ev->lsn; /* what the promoted primary has written so far */
        return;
    case OPE_PEER_CONTROL:
        on_peer_control(op, ev->ctl);
        return;
    case OPE_VERDICT:
        on_verdict(op, ev);
        return;
    case OPE_REPLAY:
        if (op->step != OPS_K_WAIT_REPLAY)
            return;
        f = facts(op);
        if (op->kind == OP_SWITCHOVER ? ev->lsn2 < op->target_lsn : ev->lsn < f.sink_flushed) {
            op->retry_at_ms = now_ms(op) + OP_REPLAY_POLL_MS;
            return;
        }
        if (!job(op, op->env->pg(op->ctx, PGCTL_PROMOTE), "pg_ctl promote"))
            return;
        set_step(op, OPS_K_PROMOTING, "the standby has %s " LSN_FMT ": promoting it",
                 op->kind == OP_SWITCHOVER ? "replayed" : "received",
                 LSN_ARGS(op->kind == OP_SWITCHOVER ? ev->lsn2 : ev->lsn));
        return;
    case OPE_SQL_DONE:
        on_sql_done(op, ev);
        return;
    case OPE_ACKED:
        if (op->step != OPS_K_WAIT_SYNC || op->sync_lsn == 0 || ev->lsn < op->sync_lsn)
            return;
        {
            /* The new primary's commits are acknowledged again: the unavailability ends. */
            int64_t unavail = op->stop_unix_us != 0
                                  ? (int64_t)(clock_unix_us() - op->stop_unix_us) : -1;
            struct msg_control ctl = {.kind = MSG_CTL_SWITCHOVER_SYNCED,
                                      .value = unavail > 0 ? (uint64_t)unavail : 0};

            f = facts(op);
            if (op->env->send(op->ctx, &ctl) < 0)
                log_warning(op->comp, "cannot send SWITCHOVER_SYNCED");
            op->unavailability_us = unavail;
            end(op, true,
                "%s is the primary (epoch %" PRIu64 "), synchronous with %s again; "
                "write-unavailability %.3f s",
                f.node, f.epoch->epoch, f.peer, unavail >= 0 ? (double)unavail / 1e6 : -1.0);
        }
        return;
    case OPE_CAUGHT_UP:
        if (op->step != OPS_X_EXPOSED)
            return;
        f = facts(op);
        if (op->env->sync_restore(op->ctx) < 0)
            return; /* the next CAUGHT_UP tries again */
        set_step(op, OPS_X_RESTORING, "%s has caught up: putting synchronous_standby_names back",
                 f.peer);
        return;
    }
}

uint64_t
op_next_wake(const struct op *op)
{
    uint64_t next = 0;

    if (op->kind == OP_NONE)
        return 0;
    if (op->step != OPS_X_EXPOSED && op->step != OPS_X_RESYNCING && op->step != OPS_X_RELAXING)
        next = op->step_at_ms + OP_STEP_TIMEOUT_MS;
    if (op->retry_at_ms != 0 && (next == 0 || op->retry_at_ms < next))
        next = op->retry_at_ms;
    return next;
}
