/*
 * op.h - the agent's operations: switchover, fail-over, fencing, rejoin and exposure, each a
 * chain of steps.  One operation runs at a time (struct op); op_handle(op, event) is the only
 * place a step changes, and every change is logged with the step's text.  The operation acts
 * on the world only through struct op_env (PostgreSQL's programs, the peer link, the arbiter,
 * the durable epoch, the agent's role), so that tests drive it with fakes.
 *
 *   switchover, at the source: preflight (link streaming, the sink's flush and apply lag within
 *     the bound) -> a WAL switch and a CHECKPOINT on the primary while it still takes commits
 *     (SO_CHECKPOINT: the shutdown checkpoint, inside the write-unavailability, then has little
 *     left to write, and the switch point lies near the start of a segment, which is where the
 *     new primary streams the old site's fresh spool from; a failed job only costs that time) ->
 *     SWITCHOVER_BEGIN -> `pg_ctl stop -m fast` while
 *     the session carries the
 *     final WAL (SO_STOPPING: both the job and the primary's clean end are awaited) ->
 *     SWITCHOVER_PROMOTE with the end of WAL, only if the sink confirmed it flushed
 *     (SO_WAIT_DONE; the primary's clean end of its stream is enough, pg_ctl stop, which only
 *     notices the postmaster gone within 100 ms, may still run: what needs it stopped waits
 *     for it) -> on SWITCHOVER_DONE: the peer's epoch recorded, the standby
 *     configuration, pg_controldata, a fresh spool and WAL server (become_sink), `pg_ctl start`
 *     (R_CONTROLDATA, R_STARTING) -> SWITCHOVER_SYNCED ends it (R_WAIT_SYNC).
 *   switchover, at the sink: SWITCHOVER_BEGIN (K_WAIT_PROMOTE) -> SWITCHOVER_PROMOTE: the
 *     standby replays up to its LSN (K_WAIT_REPLAY, polled every 50 ms) -> `pg_ctl promote`
 *     (K_PROMOTING) -> the next epoch, durably, then SWITCHOVER_DONE, become_source ->
 *     the first ACK that flushes what the new primary had written ends the write-
 *     unavailability: SWITCHOVER_SYNCED (K_WAIT_SYNC).
 *   fail-over, at the sink: the arbiter's PROMOTE grant (K_WAIT_VOTE; --force skips it, and a
 *     stale standby - its record marked exposed by the peer - needs --accept-data-loss too) ->
 *     the standby receives all the spool holds (K_WAIT_REPLAY) -> promote -> become_source.
 *     The new primary has no standby: the epoch is recorded exposed, and the agent goes on
 *     with an exposure from its RELAXING step (op_resume_exposure).
 *   fencing: a source that learnt a newer epoch held elsewhere: `pg_ctl stop -m fast` of the
 *     stale primary (F_STOPPING); then rejoin if auto_rejoin.
 *   rejoin, of a fenced site: CHECKPOINT on the new primary (R_CHECKPOINT, retried every
 *     second until it is out of recovery), pg_rewind (R_REWIND) or, when that fails, emptying
 *     pgdata and pg_basebackup (R_EMPTYING, R_BASEBACKUP), the site's own configuration files
 *     back and the standby configuration, pg_controldata, become_sink, `pg_ctl start`.
 *   exposure, at the source whose standby has not confirmed for standby_loss_timeout while
 *     commits wait: the arbiter's EXPOSE grant (X_ASKING; without an arbiter the agent records
 *     the exposed epoch itself) -> synchronous_standby_names lifted (X_RELAXING) -> commits
 *     flow (X_EXPOSED) until the standby has caught up -> synchronous_standby_names back and
 *     proven in force (X_RESTORING) -> the arbiter's RESYNC grant records the standby
 *     synchronous again (X_RESYNCING).  An arbiter that cannot be reached keeps the agent in
 *     the step it is in (asking again every two seconds): never exposed without a grant, and
 *     never "synchronous again" at the arbiter before it is true.
 * Every step but X_EXPOSED ends the operation after OP_STEP_TIMEOUT_MS.  A newer epoch held
 * elsewhere ends any operation (op_fence).
 */
#ifndef WALMIRROR_AGENT_OP_H
#define WALMIRROR_AGENT_OP_H

#include <stdbool.h>
#include <stdint.h>

#include "arbiter.h"
#include "msg.h"
#include "pgctl.h"
#include "state.h"

#define OP_STEP_TIMEOUT_MS 120000  /* a step that takes longer fails the operation */
#define OP_SWITCHOVER_MAX_LAG (16u << 20) /* default preflight bound on the sink's lag */
#define OP_REPLAY_POLL_MS 50       /* K_WAIT_REPLAY asks the standby this often */
#define OP_RETRY_MS 1000           /* CHECKPOINT and relaxing retried this often */
#define OP_ARBITER_RETRY_MS 2000   /* an unreachable arbiter is asked again this often */

enum op_kind {
    OP_NONE,
    OP_SWITCHOVER,
    OP_FAILOVER,
    OP_FENCING,
    OP_REJOIN,
    OP_EXPOSURE,
};

enum op_step {
    OPS_IDLE,
    OPS_SO_CHECKPOINT,
    OPS_SO_STOPPING,
    OPS_SO_WAIT_DONE,
    OPS_K_WAIT_PROMOTE,
    OPS_K_WAIT_VOTE,
    OPS_K_WAIT_REPLAY,
    OPS_K_PROMOTING,
    OPS_K_WAIT_SYNC,
    OPS_F_STOPPING,
    OPS_R_CHECKPOINT,
    OPS_R_REWIND,
    OPS_R_EMPTYING,
    OPS_R_BASEBACKUP,
    OPS_R_CONTROLDATA,
    OPS_R_STARTING,
    OPS_R_WAIT_SYNC,
    OPS_X_ASKING,
    OPS_X_RELAXING,
    OPS_X_EXPOSED,
    OPS_X_RESTORING,
    OPS_X_RESYNCING,
    OPS_COUNT,
};

enum op_event_kind {
    OPE_JOB_DONE,         /* the step's child program ended: code */
    OPE_WAKE,             /* the time op_next_wake() named has come */
    OPE_PRIMARY_ENDED,    /* the session with the local primary ended: ok = clean shutdown */
    OPE_IDENTIFIED,       /* a new session with the local primary: lsn = its flush position */
    OPE_PEER_CONTROL,     /* a SWITCHOVER_* message from the peer: ctl */
    OPE_VERDICT,          /* the arbiter's answer: ok = granted, epoch, text */
    OPE_REPLAY,           /* the standby's positions: lsn = received, lsn2 = replayed (0: unknown) */
    OPE_SQL_DONE,         /* sync_relax / sync_restore finished: ok, text */
    OPE_ACKED,            /* the sink confirmed: lsn = its flush */
    OPE_CAUGHT_UP,        /* exposure: the standby has caught up */
};

struct op_event {
    enum op_event_kind kind;
    bool ok;
    int code;
    uint64_t lsn, lsn2;
    const struct msg_control *ctl;
    const struct wm_state *epoch;
    const char *text;
};

/* What the operation needs to know of the agent, read when it needs it. */
struct op_facts {
    bool source;           /* the agent is the source (beside a primary) */
    bool sink;             /* the sink (beside a standby) */
    bool fenced;           /* a stale primary, stopped or to be stopped */
    bool link_up;          /* an established link to the peer */
    bool streaming;        /* the source streams on it */
    bool pg_running;       /* the local postmaster runs */
    bool arbiter_configured;
    const char *arbiter;   /* its kind for messages: "witness", "etcd" */
    bool auto_rejoin;
    bool can_rejoin;       /* peer_pg_conninfo is set */
    uint64_t primary_lsn;  /* source: end of the primary's WAL as known */
    uint64_t ack_flush, ack_apply; /* source: what the sink confirmed */
    uint64_t sink_flushed; /* sink: the spool's durable end */
    uint64_t lost_for_ms;  /* sink: how long the source has been lost (0: connected);
                            * source: how long commits have waited for the standby */
    uint64_t failover_timeout_ms;
    const struct wm_state *epoch; /* the agent's durable record */
    const char *node;      /* this node's name */
    const char *peer;      /* the peer's name */
    const char *state_dir; /* for messages naming the logs */
};

/* The world, as the operation acts on it.  Functions returning int return 0 or a negative
 * errno; a job's end comes back as OPE_JOB_DONE, an asynchronous answer as its event. */
struct op_env {
    void (*facts)(void *ctx, struct op_facts *f);
    uint64_t (*now_ms)(void *ctx); /* monotonic milliseconds (the tests' clock is their own) */
    int (*pg)(void *ctx, enum pgctl_action action);   /* pg_ctl job */
    int (*checkpoint_peer)(void *ctx);                /* job */
    int (*checkpoint_local)(void *ctx);               /* job; NULL: the switchover has none */
    int (*rewind)(void *ctx);                         /* job */
    int (*empty_pgdata)(void *ctx);                   /* job */
    int (*basebackup)(void *ctx);                     /* job */
    int (*controldata)(void *ctx);                    /* job (its output for become_sink) */
    int (*save_configs)(void *ctx, char *err, size_t errlen);
    int (*restore_configs)(void *ctx, char *err, size_t errlen);
    int (*standby_config)(void *ctx, char *err, size_t errlen);
    int (*query_standby)(void *ctx);                  /* OPE_REPLAY follows */
    int (*send)(void *ctx, const struct msg_control *ctl); /* on the active link */
    int (*ask)(void *ctx, const struct arbiter_request *req); /* OPE_VERDICT follows if 0 */
    /* Records rec durably as this agent's epoch; tell_links: the live links' frames carry it
     * at once (a promotion) rather than the peer being told by a FENCE (an exposure). */
    int (*raise_epoch)(void *ctx, const struct wm_state *rec, bool tell_links);
    int (*become_source)(void *ctx);
    int (*become_sink)(void *ctx);                    /* a fresh spool from the job's output */
    void (*close_links)(void *ctx, const char *why);
    int (*sync_relax)(void *ctx);                     /* OPE_SQL_DONE follows if 0 */
    int (*sync_restore)(void *ctx);                   /* OPE_SQL_DONE follows if 0 */
    /* An operation ended (ok or not) or a request was refused (refused: it never began). */
    void (*finished)(void *ctx, enum op_kind kind, uint64_t id, bool ok, bool refused,
                     const char *result, int64_t unavailability_us);
};

struct op {
    const struct op_env *env;
    void *ctx;
    char comp[80];
    enum op_kind kind;
    enum op_step step;
    uint64_t id;            /* the operator's request id, 0 if the agent started it */
    uint64_t step_at_ms;    /* when the step began */
    uint64_t retry_at_ms;   /* a poll or retry due then (0: none) */
    bool job_running;       /* the step's child program runs */
    /* switchover */
    uint64_t target_lsn;    /* end of the old primary's WAL */
    uint64_t stop_unix_us;  /* when the old primary stopped taking commits */
    uint64_t sync_lsn;      /* new source: an ACK flushing this is synchronous again */
    bool primary_ended, clean_end, job_ended;
    int job_code;
    bool synced;            /* new sink: SWITCHOVER_SYNCED arrived */
    bool done_pending;      /* SWITCHOVER_DONE came while pg_ctl stop still ran */
    int64_t unavailability_us;
    bool forced;
    /* exposure */
    bool asked;             /* a request to the arbiter is in flight */
    char step_text[200];
};

void op_init(struct op *op, const struct op_env *env, void *ctx, const char *node);

/* The requests.  Each either starts the operation or refuses it (finished with refused). */
void op_switchover(struct op *op, uint64_t id, const char *target, uint64_t max_lag_bytes);
void op_failover(struct op *op, uint64_t id, bool forced, bool accept_data_loss);
void op_rejoin(struct op *op, uint64_t id);
/* A newer epoch held elsewhere: ends what runs, stops the stale primary. */
void op_fence(struct op *op);
/* Asks to run exposed (the source's standby is lost).  Returns 0 when started, -EBUSY when
 * another operation runs, -ENOTCONN when the arbiter cannot be reached (nothing started). */
int op_expose(struct op *op);
/* Goes on with an exposure granted before (the record says so): from relaxing. */
void op_resume_exposure(struct op *op);

void op_handle(struct op *op, const struct op_event *ev);

/* The next time the operation wants OPE_WAKE (monotonic ms; 0: none). */
uint64_t op_next_wake(const struct op *op);

const char *op_kind_name(enum op_kind kind);
const char *op_step_name(enum op_step step);
bool op_running(const struct op *op);

#endif
