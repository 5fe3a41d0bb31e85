/*
 * agent.c - the agent daemon: role, peer link, source and sink wiring; contract in agent.h.
 *
 * Everything runs on one io_uring loop (wio.h).  Callbacks only record what happened; the
 * decisions that change state - starting a session, flushing the spool, sending an ACK,
 * freeing a dead connection - are taken in agent_tick(), once per turn of the loop, after all
 * the completions of that turn were dispatched.  That is where the durability loop lives:
 * drain what the link delivered, write it, one fdatasync, one ACK for the highest contiguous
 * durable position, never going backwards.
 *
 * Positions: the sink's ACK carries write = bytes written to the spool, flush = bytes made
 * durable by fdatasync, apply = the local standby's replay position (never above flush).  Each
 * only moves forward, and flush <= write; nothing is acknowledged before it is true.
 *
 * Roles change at run time.  Operations (struct op) are small state machines driven from the
 * tick, one at a time, each step a child program (pgctl.h) or a message on the link:
 *   switchover  source: preflight, SWITCHOVER_BEGIN, `pg_ctl stop -m fast` while the source
 *               carries the final WAL (the walsender waits for our flush), SWITCHOVER_PROMOTE
 *               with the end of WAL; then, on SWITCHOVER_DONE, it becomes the sink: a fresh
 *               spool, the standby configuration, `pg_ctl start`.
 *               sink: on PROMOTE, waits until its standby replayed that LSN, `pg_ctl promote`,
 *               raises the epoch, answers DONE and becomes the source; its first synchronous
 *               ACK ends the write-unavailability, reported with SWITCHOVER_SYNCED.
 *   failover    sink: the source lost for failover_timeout and the arbiter (arbiter.h) grants
 *               the next epoch (or --force): the standby receives all the spool holds,
 *               `pg_ctl promote`, become the source.
 *   fencing     an agent that learns of a newer epoch while it is the source stops its
 *               PostgreSQL (`pg_ctl stop -m fast`: sessions end, nothing more commits) and
 *               acts as nothing until it rejoins; a sink just adopts the newer epoch.
 *   rejoin      a fenced agent: CHECKPOINT on the new primary, pg_rewind from it (or, when
 *               rewind fails, a fresh pg_basebackup), its own configuration files back, the
 *               standby configuration, a fresh spool, `pg_ctl start`: it is the sink.
 */
#include "agent.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "arbiter.h"
#include "clock.h"
#include "conn.h"
#include "frame.h"
#include "httpapi.h"
#include "log.h"
#include "maint.h"
#include "pgctl.h"
#include "setup.h"
#include "source.h"
#include "spool.h"
#include "state.h"
#include "status.h"
#include "tls.h"
#include "util.h"
#include "walsrv.h"
#include "wio.h"

#define AGENT_RETRY_MS 1000
#define AGENT_BACKLOG_PAUSE (32u * 1024 * 1024)

enum agent_role {
    AGENT_SOURCE,
    AGENT_SINK,
    AGENT_FENCED, /* a stale primary: its PostgreSQL stopped, waiting to rejoin */
};

#define AGENT_OP_TIMEOUT_MS 120000           /* a step of an operation that takes longer fails */
#define AGENT_SWITCHOVER_MAX_LAG (16u << 20) /* default preflight bound on the sink's lag */

enum op_kind {
    OP_NONE,
    OP_SWITCHOVER,
    OP_FAILOVER,
    OP_FENCING,
    OP_REJOIN,
};

enum op_step {
    STEP_IDLE,
    /* switchover, at the source */
    STEP_SO_STOPPING,  /* pg_ctl stop runs; the source carries the final WAL */
    STEP_SO_WAIT_DONE, /* PROMOTE sent; the sink replays and promotes */
    /* switchover and fail-over, at the sink */
    STEP_K_WAIT_PROMOTE, /* BEGIN received; the source stops its primary */
    STEP_K_WAIT_VOTE,    /* fail-over: the arbiter decides */
    STEP_K_WAIT_REPLAY,  /* the standby catches up with target_lsn */
    STEP_K_PROMOTING,    /* pg_ctl promote runs */
    STEP_K_WAIT_SYNC,    /* the new source waits for its first synchronous ACK */
    /* fencing and becoming a standby */
    STEP_F_STOPPING,   /* pg_ctl stop runs */
    STEP_R_CHECKPOINT, /* psql CHECKPOINT on the new primary */
    STEP_R_REWIND,     /* pg_rewind */
    STEP_R_BASEBACKUP, /* pg_basebackup, when rewind failed */
    STEP_R_STARTING,   /* pg_ctl start of the new standby */
    STEP_R_WAIT_SYNC,  /* the new sink waits for the source's SWITCHOVER_SYNCED */
};

static const char *const op_names[] = {"none", "switchover", "failover", "fencing", "rejoin"};

/* The one operation in progress. */
struct op {
    enum op_kind kind;
    enum op_step step;
    uint64_t id;           /* the operator's request id, 0 if the agent started it */
    uint64_t step_at_ms;   /* when the step began */
    uint64_t target_lsn;   /* switchover: end of the old primary's WAL */
    uint64_t stop_unix_us; /* switchover: when the old primary stopped taking commits */
    uint64_t sync_lsn;     /* new source: an ACK flushing this is synchronous again */
    bool forced;
    bool synced; /* new sink: SWITCHOVER_SYNCED arrived (it may come before pg_ctl start ends) */
    uint64_t polled_ms; /* when the local standby's positions were last asked */
    char step_text[160];
    struct pgctl_job job;
};

#define AGENT_MAX_LINKS 4
#define AGENT_STATUS_EVERY_MS 100
#define AGENT_MAINT_EVERY_MS 1000 /* maintenance windows are evaluated this often */
/* A switchover window's switchover starts only this soon after the window opened (an agent
 * started later in the window, or one that became the primary by it, does not start one). */
#define AGENT_MAINT_SWITCHOVER_GRACE_S 60
#define LAG_SAMPLES 256

/*
 * Lag in seconds per stage, measured as PostgreSQL's LagTracker does: when WAL up to an LSN is
 * sent, remember (LSN, time); when the sink confirms a stage past that LSN, the stage's lag is
 * the time since.  Samples are taken at most once per millisecond; the oldest are dropped
 * when the ring is full, which only makes the figure coarser.
 */
struct lag_tracker {
    struct {
        uint64_t lsn;
        uint64_t at_us;
    } s[LAG_SAMPLES];
    unsigned head, n;
    unsigned next[3]; /* per stage: index (offset from the oldest) of the next sample to match */
    double lag_s[3];  /* per stage: last measured, or -1 */
};

enum lag_stage {
    LAG_WRITE,
    LAG_FLUSH,
    LAG_APPLY,
};

/* One connection with the peer; the callbacks' context, so they know which one fired. */
struct link {
    struct agent *a;
    struct conn *c;
    bool inbound; /* accepted here (a source only accepts to refuse) */
    bool established;
    bool dead;
};

struct agent {
    const struct wm_config *cfg;
    struct wio_loop *loop;
    enum agent_role role;
    struct tls_config *tls_server; /* accepting links */
    struct tls_config *tls_client; /* making them */
    struct wm_state state;         /* epoch: the fencing token, durable in state_dir */
    struct arbiter *arbiter;       /* NULL without a witness */
    struct op op;
    uint64_t link_lost_ms; /* sink: since when no source has been connected */
    char comp[80];
    int exit_status;
    bool failed;

    /* the local PostgreSQL */
    uint64_t local_sysid;
    uint32_t local_segsize;

    /* the peer link */
    int listen_fd;
    struct wio_acceptor acc;
    struct wio_connector con;
    bool connecting;
    struct link *links[AGENT_MAX_LINKS]; /* live or dead, freed in agent_tick when dead */
    struct link *active;                 /* the established link that carries the stream */
    struct msg_hello peer;               /* the active link's peer */

    /* SOURCE */
    struct source *src;
    bool src_identified;
    bool src_dead;
    bool streaming;
    struct source_identity src_id;
    uint8_t *batch;
    size_t batch_len;
    uint64_t batch_lsn;
    uint64_t ack_write, ack_flush, ack_apply;
    uint64_t retry_at_ms;
    uint64_t link_retry_at_ms; /* next attempt to reach the sink */

    struct lag_tracker lag;
    uint64_t primary_lsn; /* end of the WAL the primary gave us */
    uint64_t sent_lsn;    /* end of the WAL sent to the sink */

    /* status and the HTTP API */
    struct status_board board;
    struct httpapi *http;
    uint64_t started_us;
    uint64_t status_at_ms;
    bool failover_paused;
    char last_error[256];
    uint64_t last_op_id;
    enum op_kind last_op;
    bool last_op_ok;
    char last_op_result[256];
    int64_t last_unavailability_us;
    uint64_t switchovers, failovers;
    struct status_op_request scheduled; /* switchover --at, waiting for its time (id 0: none) */
    /* maintenance windows (maint.h): the store, the loop's copy, what maint_tick made of it */
    struct maint_store *maint;
    struct maint_window maint_w[MAINT_MAX];
    unsigned maint_n;
    bool maint_active;            /* a window is open: automatic fail-over is paused */
    char maint_text[128];         /* the snapshot's maintenance */
    uint64_t maint_at_ms;         /* last evaluation */
    bool maint_was_source;        /* the source at the last evaluation */
    struct {
        uint64_t id;
        int64_t start;
    } maint_seen[MAINT_MAX];      /* switchover windows: the last start seen open, per id */
    int64_t cert_not_after;             /* our certificate's expiry, -1 if unreadable */
    struct status_metrics metrics; /* histograms, lag history, incidents: see status_tick */
    uint64_t incidents_seen;       /* switchovers + failovers already in metrics.incidents */
    uint64_t flush_started_us;     /* SINK: when the pending spool_flush was asked; 0: none */
    struct lag_tracker sink_lag;   /* SINK: when each appended position arrived */
    uint64_t sink_lag_lsn;         /* SINK: the last position noted in sink_lag */

    /* SINK */
    struct spool *spool;
    struct walsrv *walsrv;
    uint64_t appended;        /* end of what was handed to the spool */
    uint64_t written;         /* spool write position */
    uint64_t flushed;         /* spool flush position */
    uint64_t applied;         /* the standby's replay position, <= flushed */
    uint64_t flush_requested; /* appended position covered by the last spool_flush */
    bool ack_dirty;
    struct msg_ack last_ack;
    /* The spool has no space (spool_stalled): WAL from the link is dropped, unacknowledged,
     * and the link is restarted once there is space, so the source sends it again. */
    bool wal_dropped;         /* on the active link since the stall began */
    uint64_t stall_dropped;   /* bytes dropped so, for the log */
    uint64_t stall_since_us;  /* unix time the stall was noticed; 0: none */
    uint64_t want_start;    /* an empty spool asks the source for WAL from here ... */
    uint32_t want_tli;      /* ... on this timeline (0: the source's choice) */
    bool src_clean_end;     /* SOURCE: the primary shut down cleanly (on_closed err 0) */
    bool sync_checked;      /* SOURCE: synchronous_standby_names restored if it was relaxed */

    /* a newer epoch learned in a callback, acted on in the tick */
    uint64_t fence_epoch;
    char fence_holder[MSG_NAME_MAX + 1];
};

static int sync_names(struct agent *a, bool relax);

static uint64_t
max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* The last error worth an operator's eye, shown in the status; cut to fit. */
static void __attribute__((format(printf, 2, 3)))
set_last_error(struct agent *a, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(a->last_error, sizeof(a->last_error), fmt, ap);
    va_end(ap);
}

/* ---- lag ---- */

static void
lag_reset(struct lag_tracker *t)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < 3; i++)
        t->lag_s[i] = -1;
}

static void
lag_sent(struct lag_tracker *t, uint64_t lsn, uint64_t now_us)
{
    unsigned last = (t->head + t->n - 1) % LAG_SAMPLES;

    if (t->n > 0 && now_us - t->s[last].at_us < 1000) {
        t->s[last].lsn = lsn; /* same millisecond: extend the sample */
        return;
    }
    if (t->n == LAG_SAMPLES) {
        t->head = (t->head + 1) % LAG_SAMPLES;
        t->n--;
        for (int i = 0; i < 3; i++)
            if (t->next[i] > 0)
                t->next[i]--;
    }
    t->s[(t->head + t->n) % LAG_SAMPLES].lsn = lsn;
    t->s[(t->head + t->n) % LAG_SAMPLES].at_us = now_us;
    t->n++;
}

/* Returns how many samples this confirmation matched (0: nothing new was confirmed). */
static unsigned
lag_confirmed(struct lag_tracker *t, enum lag_stage stage, uint64_t lsn, uint64_t now_us)
{
    unsigned min_next, matched = 0;

    while (t->next[stage] < t->n && t->s[(t->head + t->next[stage]) % LAG_SAMPLES].lsn <= lsn) {
        t->lag_s[stage] =
            (double)(now_us - t->s[(t->head + t->next[stage]) % LAG_SAMPLES].at_us) / 1e6;
        t->next[stage]++;
        matched++;
    }
    /* Drop the samples every stage has passed. */
    min_next = t->next[0];
    for (int i = 1; i < 3; i++)
        if (t->next[i] < min_next)
            min_next = t->next[i];
    t->head = (t->head + min_next) % LAG_SAMPLES;
    t->n -= min_next;
    for (int i = 0; i < 3; i++)
        t->next[i] -= min_next;
    return matched;
}

/* ---- the local PostgreSQL ---- */

/* Reads the cluster's system identifier and WAL segment size (running or not). */
static int
read_control_data(struct agent *a)
{
    struct pgctl_control ctl;
    char err[512];
    int rc;

    rc = pgctl_controldata(a->cfg->pgdata, &ctl, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "%s", err);
        return rc;
    }
    a->local_sysid = ctl.system_id;
    a->local_segsize = ctl.seg_size;
    return 0;
}

/* ---- epochs ---- */

/*
 * Records a newer epoch (and who holds it) durably before anything acts on it.  A failure to
 * save is fatal: an agent that cannot remember that it was fenced must not go on.
 */
static int
raise_epoch(struct agent *a, uint64_t epoch, const char *holder)
{
    struct wm_state st = a->state;
    char err[512];
    int rc;

    if (epoch < a->state.epoch || (epoch == a->state.epoch && strcmp(holder, st.primary) == 0))
        return 0;
    st.epoch = epoch;
    snprintf(st.primary, sizeof(st.primary), "%s", holder);
    st.changed_unix_us = clock_unix_us();
    rc = state_save(a->cfg->state_dir, &st, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "cannot record epoch %" PRIu64 ", stopping: %s", epoch, err);
        a->failed = true;
        a->exit_status = 1;
        return rc;
    }
    log_info(a->comp, "epoch %" PRIu64 " -> %" PRIu64 " (held by %s)", a->state.epoch, epoch,
             holder[0] != '\0' ? holder : "?");
    a->state = st;
    for (int i = 0; i < AGENT_MAX_LINKS; i++)
        if (a->links[i] != NULL && !a->links[i]->dead)
            conn_set_epoch(a->links[i]->c, epoch);
    return 0;
}

/* ---- operations ---- */

static void __attribute__((format(printf, 3, 4)))
op_step(struct agent *a, enum op_step step, const char *fmt, ...)
{
    va_list ap;

    a->op.step = step;
    a->op.step_at_ms = clock_mono_ms();
    va_start(ap, fmt);
    vsnprintf(a->op.step_text, sizeof(a->op.step_text), fmt, ap);
    va_end(ap);
    log_info(a->comp, "%s: %s", op_names[a->op.kind], a->op.step_text);
}

static void
op_begin(struct agent *a, enum op_kind kind, uint64_t id)
{
    memset(&a->op, 0, sizeof(a->op));
    a->op.kind = kind;
    a->op.id = id;
}

/* Ends the operation: ok or not, with a result for the status and the log. */
static void __attribute__((format(printf, 3, 4)))
op_end(struct agent *a, bool ok, const char *fmt, ...)
{
    va_list ap;

    if (a->op.kind == OP_NONE)
        return;
    va_start(ap, fmt);
    vsnprintf(a->last_op_result, sizeof(a->last_op_result), fmt, ap);
    va_end(ap);
    if (ok)
        log_info(a->comp, "%s done: %s", op_names[a->op.kind], a->last_op_result);
    else
        log_error(a->comp, "%s failed: %s", op_names[a->op.kind], a->last_op_result);
    if (!ok)
        set_last_error(a, "%s failed: %.200s", op_names[a->op.kind], a->last_op_result);
    else
        a->last_error[0] = '\0'; /* what broke on the way (the old link) is over */
    a->last_op = a->op.kind;
    a->last_op_id = a->op.id;
    a->last_op_ok = ok;
    pgctl_kill(&a->op.job);
    memset(&a->op, 0, sizeof(a->op));
}

/* A request the agent cannot take: recorded as a failed operation with that id. */
static void __attribute__((format(printf, 4, 5)))
op_refuse(struct agent *a, enum op_kind kind, uint64_t id, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(a->last_op_result, sizeof(a->last_op_result), fmt, ap);
    va_end(ap);
    log_warning(a->comp, "%s refused: %s", op_names[kind], a->last_op_result);
    a->last_op = kind;
    a->last_op_id = id;
    a->last_op_ok = false;
}

/* Runs a PostgreSQL program for the current step; its output goes to pg_ops.log. */
static int
op_run(struct agent *a, const char *what, char *const argv[])
{
    char log_path[4200];
    int rc;

    snprintf(log_path, sizeof(log_path), "%s/pg_ops.log", a->cfg->state_dir);
    rc = pgctl_spawn(&a->op.job, what, log_path, argv);
    if (rc < 0)
        log_error(a->comp, "cannot run %s: %s", what, strerror(-rc));
    return rc;
}

/* Path of a PostgreSQL program, in buf. */
static char *
pg_prog(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", setup_pg_bindir(), name);
    return buf;
}

/* pg_ctl ACTION [-m fast] -w -D pgdata [-l log] */
static int
op_pg_ctl(struct agent *a, const char *action)
{
    char prog[4200], logf[4200], what[64];
    char *argv[12];
    int n = 0;

    argv[n++] = pg_prog(prog, sizeof(prog), "pg_ctl");
    argv[n++] = (char *)action;
    if (strcmp(action, "stop") == 0) {
        argv[n++] = "-m";
        argv[n++] = "fast";
    }
    argv[n++] = "-w";
    argv[n++] = "-t";
    argv[n++] = "120";
    argv[n++] = "-D";
    argv[n++] = a->cfg->pgdata;
    if (strcmp(action, "start") == 0) {
        snprintf(logf, sizeof(logf), "%s/postgresql.log", a->cfg->state_dir);
        argv[n++] = "-l";
        argv[n++] = logf;
    }
    argv[n] = NULL;
    snprintf(what, sizeof(what), "pg_ctl %s", action);
    return op_run(a, what, argv);
}

/* Whether the local postmaster runs (postmaster.pid present and its process alive). */
static bool
pg_running(const struct agent *a)
{
    char path[4200];
    FILE *f;
    long pid = 0;

    snprintf(path, sizeof(path), "%s/postmaster.pid", a->cfg->pgdata);
    f = fopen(path, "r");
    if (f == NULL)
        return false;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/*
 * Decides the role: a primary makes this agent the source, a standby the sink.  When the
 * local server cannot be reached, standby.signal in pgdata decides for a standby (the sink
 * can spool WAL while its standby is down); a primary must be up for the source to work.
 */
static int
decide_role(struct agent *a)
{
    char path[4200], msg[512];
    PGconn *pg;
    PGresult *res;
    struct stat st;

    pg = PQconnectdb(a->cfg->pg_conninfo);
    if (PQstatus(pg) == CONNECTION_OK) {
        res = PQexec(pg, "SELECT pg_is_in_recovery()");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            a->role = strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? AGENT_SINK : AGENT_SOURCE;
            PQclear(res);
            PQfinish(pg);
            return 0;
        }
        log_error(a->comp, "pg_is_in_recovery() failed: %s",
                  log_one_line(msg, sizeof(msg), PQerrorMessage(pg)));
        PQclear(res);
        PQfinish(pg);
        return -EIO;
    }
    snprintf(path, sizeof(path), "%s/standby.signal", a->cfg->pgdata);
    if (stat(path, &st) == 0) {
        log_warning(a->comp, "local PostgreSQL not reachable (%s); %s exists: acting as sink",
                    log_one_line(msg, sizeof(msg), PQerrorMessage(pg)), path);
        PQfinish(pg);
        a->role = AGENT_SINK;
        return 0;
    }
    log_error(a->comp, "cannot reach the local PostgreSQL to learn the role: %s",
              log_one_line(msg, sizeof(msg), PQerrorMessage(pg)));
    PQfinish(pg);
    return -ECONNREFUSED;
}

/* ---- the peer link ---- */

static void
link_dead(struct link *l)
{
    l->dead = true;
    if (l->a->active == l)
        l->a->active = NULL;
}

/* The established link, if any, on which WAL and ACKs travel. */
static struct conn *
active_conn(const struct agent *a)
{
    return a->active != NULL ? a->active->c : NULL;
}

/* Remembers a newer epoch for the tick (fencing acts there, never inside a callback). */
static void
learn_epoch(struct agent *a, uint64_t epoch, const char *holder)
{
    if (epoch > a->state.epoch && epoch > a->fence_epoch) {
        a->fence_epoch = epoch;
        snprintf(a->fence_holder, sizeof(a->fence_holder), "%.63s", holder);
    }
}

static void
on_peer_epoch(void *ctx, uint64_t epoch)
{
    struct link *l = ctx;
    const struct msg_hello *peer = conn_peer_hello(l->c);

    /* The peer's HELLO may not be decoded yet; the peer is the configured one either way. */
    learn_epoch(l->a, epoch,
                peer != NULL && peer->node_name[0] != '\0' ? peer->node_name : l->a->cfg->peer.name);
}

static int
on_peer_hello(void *ctx, const struct msg_hello *peer, char *why, size_t whylen)
{
    struct agent *a = ((struct link *)ctx)->a;

    if (a->role == AGENT_FENCED || a->fence_epoch > a->state.epoch) {
        snprintf(why, whylen, "%s is fenced (epoch %" PRIu64 " is held by %s)", a->cfg->node_name,
                 a->fence_epoch > a->state.epoch ? a->fence_epoch : a->state.epoch,
                 a->fence_epoch > a->state.epoch ? a->fence_holder : a->state.primary);
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
    if (a->role == AGENT_SOURCE) {
        if (peer->role != MSG_ROLE_SINK) {
            snprintf(why, whylen, "%s is a %s at epoch %" PRIu64 ", and so is %s: two primaries?",
                     peer->node_name, msg_role_name(peer->role), peer->epoch, a->cfg->node_name);
            return WIRE_EPROTO;
        }
        if (peer->system_id != 0 && peer->system_id != a->src_id.system_id) {
            snprintf(why, whylen,
                     "system identifier mismatch: sink %s mirrors cluster %" PRIu64
                     ", this primary is cluster %" PRIu64,
                     peer->node_name, peer->system_id, a->src_id.system_id);
            return WIRE_EPROTO;
        }
    } else {
        const struct spool_identity *have = spool_identity(a->spool);
        struct spool_identity id = {.system_id = peer->system_id,
                                    .seg_size = a->local_segsize,
                                    .timeline = have->system_id != 0 ? have->timeline
                                                : a->want_tli != 0 ? a->want_tli
                                                                   : peer->timeline};
        if (peer->role != MSG_ROLE_SOURCE) {
            snprintf(why, whylen, "%s is a %s, not a source", peer->node_name,
                     msg_role_name(peer->role));
            return WIRE_EPROTO;
        }
        if (peer->system_id != a->local_sysid) {
            snprintf(why, whylen,
                     "system identifier mismatch: source %s streams cluster %" PRIu64
                     ", the standby here is cluster %" PRIu64,
                     peer->node_name, peer->system_id, a->local_sysid);
            return WIRE_EPROTO;
        }
        if (spool_set_identity(a->spool, &id) < 0) {
            snprintf(why, whylen, "the spool in %s holds WAL of another cluster",
                     a->cfg->spool_dir);
            return WIRE_EPROTO;
        }
    }
    return 0;
}

static void
on_peer_established(void *ctx)
{
    struct link *l = ctx;
    struct agent *a = l->a;

    l->established = true;
    if (a->active != NULL && a->active != l) {
        /* An authenticated source that reconnected supersedes the link we still had. */
        struct link *old = a->active;
        log_info(a->comp, "new link from %s replaces the old one", a->cfg->peer.name);
        conn_close(old->c, WIRE_EPROTO, "superseded by a new connection from the same peer");
        link_dead(old);
    }
    a->active = l;
    a->peer = *conn_peer_hello(l->c);
    a->wal_dropped = false; /* a new stream starts from what the spool holds */
    if (a->role == AGENT_SINK)
        a->ack_dirty = true; /* tell the new source where we are */
}

/*
 * Sends the gathered WAL as one frame.  A send that fails ends the session: the stream starts
 * again from what the sink holds durably, so nothing is skipped.
 */
static void
flush_batch(struct agent *a)
{
    int rc;

    if (a->batch_len == 0 || active_conn(a) == NULL)
        return;
    rc = conn_send_wal(active_conn(a), a->batch_lsn, a->batch, a->batch_len);
    if (rc < 0) {
        log_error(a->comp, "cannot send WAL at %X/%X: %s", LSN_ARGS(a->batch_lsn),
                  wire_strerror(rc));
        a->batch_len = 0;
        a->src_dead = true;
        return;
    }
    a->batch_lsn += a->batch_len;
    a->batch_len = 0;
    a->sent_lsn = a->batch_lsn;
    lag_sent(&a->lag, a->sent_lsn, clock_mono_us());
    if (a->src != NULL && conn_backlog(active_conn(a)) > AGENT_BACKLOG_PAUSE)
        source_pause(a->src, true);
}

/*
 * True while the spool waits for space (spool.h).  The stall may begin inside spool_append or
 * in one of its completions; whoever sees it first logs it and shows it in /status.
 */
static bool
sink_stalled(struct agent *a)
{
    const char *what;

    if (a->spool == NULL || spool_stalled(a->spool, &what) == 0)
        return false;
    if (a->stall_since_us == 0) {
        a->stall_since_us = clock_unix_us();
        a->stall_dropped = 0;
        log_error(a->comp,
                  "commits are not acknowledged past %X/%X until the spool has space; WAL "
                  "that arrives meanwhile is dropped and sent again afterwards",
                  LSN_ARGS(a->flushed));
        set_last_error(a, "spool: %.240s", what);
    }
    return true;
}

static void
on_peer_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct link *l = ctx;
    struct agent *a = l->a;
    int rc;

    if (a->role != AGENT_SINK || a->failed || l != a->active)
        return;
    if (sink_stalled(a)) {
        /* It would wait in memory: dropped, and sent again after the link restarts. */
        a->wal_dropped = true;
        a->stall_dropped += len;
        return;
    }
    rc = spool_append(a->spool, lsn, data, len);
    if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "WAL at %X/%X does not continue the spool (at %X/%X)",
                 LSN_ARGS(lsn), LSN_ARGS(spool_write_lsn(a->spool)));
        conn_close(l->c, WIRE_EPROTO, msg);
        return;
    }
    a->appended = max_u64(a->appended, lsn + len);
    (void)sink_stalled(a);
}

static void
on_peer_ack(void *ctx, const struct msg_ack *ack)
{
    struct link *l = ctx;
    struct agent *a = l->a;
    int rc;

    if (a->role != AGENT_SOURCE || a->src == NULL || !a->streaming || l != a->active)
        return;
    /* Monotonic: a late or reordered ACK never moves a position back. */
    a->ack_write = max_u64(a->ack_write, ack->write_lsn);
    a->ack_flush = max_u64(a->ack_flush, ack->flush_lsn);
    a->ack_apply = max_u64(a->ack_apply, ack->apply_lsn);
    {
        uint64_t now = clock_mono_us();
        lag_confirmed(&a->lag, LAG_WRITE, a->ack_write, now);
        /* The ACK round trip: the newest WAL this ACK confirms flushed, from its sending. */
        if (lag_confirmed(&a->lag, LAG_FLUSH, a->ack_flush, now) > 0)
            status_hist_observe(&a->metrics.hist[STATUS_HIST_ACK_RTT], STATUS_HIST_ACK_RTT,
                                a->lag.lag_s[LAG_FLUSH]);
        lag_confirmed(&a->lag, LAG_APPLY, a->ack_apply, now);
        a->metrics.acks++;
    }
    rc = source_report(a->src, a->ack_write, a->ack_flush, a->ack_apply);
    if (rc < 0)
        log_warning(a->comp, "cannot report positions to the primary: %s", wire_strerror(rc));
    if (a->op.kind != OP_NONE && a->op.step == STEP_K_WAIT_SYNC && a->op.sync_lsn != 0 &&
        a->ack_flush >= a->op.sync_lsn) {
        /* The new primary's commits are acknowledged again: the unavailability ends here. */
        int64_t unavail = a->op.stop_unix_us != 0
                              ? (int64_t)(clock_unix_us() - a->op.stop_unix_us) : -1;
        struct msg_control ctl = {.kind = MSG_CTL_SWITCHOVER_SYNCED,
                                  .value = unavail > 0 ? (uint64_t)unavail : 0};
        bool switchover = a->op.kind == OP_SWITCHOVER;

        if (conn_send_control(active_conn(a), &ctl) < 0)
            log_warning(a->comp, "cannot send SWITCHOVER_SYNCED");
        a->last_unavailability_us = unavail;
        if (switchover)
            a->switchovers++;
        else
            a->failovers++;
        op_end(a, true,
               "%s is the primary (epoch %" PRIu64 "), synchronous with %s again; "
               "write-unavailability %.3f s",
               a->cfg->node_name, a->state.epoch, l->c != NULL ? conn_peer_hello(l->c)->node_name : "?",
               unavail >= 0 ? (double)unavail / 1e6 : -1.0);
    }
}

/* SWITCHOVER_* and FENCE from the peer; see msg.h for what each carries. */
static void
on_peer_control(void *ctx, const struct msg_control *ctl)
{
    struct link *l = ctx;
    struct agent *a = l->a;

    if (l != a->active)
        return;
    log_info(a->comp, "%s from %s (lsn %X/%X)", msg_ctl_name(ctl->kind),
             conn_peer_hello(l->c)->node_name, LSN_ARGS(ctl->lsn));
    switch (ctl->kind) {
    case MSG_CTL_SWITCHOVER_BEGIN:
        if (a->role != AGENT_SINK || a->op.kind != OP_NONE) {
            struct msg_control no = {.kind = MSG_CTL_SWITCHOVER_ABORT};
            snprintf(no.text, sizeof(no.text), "%s is busy (%s) or not a sink",
                     a->cfg->node_name, op_names[a->op.kind]);
            if (conn_send_control(l->c, &no) < 0)
                log_warning(a->comp, "cannot send SWITCHOVER_ABORT");
            return;
        }
        op_begin(a, OP_SWITCHOVER, ctl->value);
        op_step(a, STEP_K_WAIT_PROMOTE, "%s stops its primary; waiting for its final WAL",
                conn_peer_hello(l->c)->node_name);
        return;
    case MSG_CTL_SWITCHOVER_PROMOTE:
        if (a->role != AGENT_SINK || a->op.kind != OP_SWITCHOVER) {
            log_error(a->comp, "SWITCHOVER_PROMOTE outside a switchover: ignored");
            return;
        }
        a->op.target_lsn = ctl->lsn;
        a->op.stop_unix_us = ctl->value;
        op_step(a, STEP_K_WAIT_REPLAY, "waiting for the standby to replay up to %X/%X",
                LSN_ARGS(ctl->lsn));
        return;
    case MSG_CTL_SWITCHOVER_ABORT:
        if (a->op.kind == OP_SWITCHOVER)
            op_end(a, false, "%s aborted it: %s", conn_peer_hello(l->c)->node_name, ctl->text);
        return;
    case MSG_CTL_SWITCHOVER_DONE:
        if (a->role != AGENT_SOURCE || a->op.kind != OP_SWITCHOVER ||
            a->op.step != STEP_SO_WAIT_DONE) {
            log_error(a->comp, "SWITCHOVER_DONE outside a switchover: ignored");
            return;
        }
        /* The peer holds the new epoch; we become its sink (in the tick: still the source
         * while STEP_R_STARTING has no job). */
        learn_epoch(a, ctl->value2, conn_peer_hello(l->c)->node_name);
        op_step(a, STEP_R_STARTING, "%s promoted: becoming its standby",
                conn_peer_hello(l->c)->node_name);
        return;
    case MSG_CTL_SWITCHOVER_SYNCED:
        /* Ends the switchover in op_tick, once the local standby runs. */
        if (a->op.kind == OP_SWITCHOVER &&
            (a->op.step == STEP_R_STARTING || a->op.step == STEP_R_WAIT_SYNC)) {
            a->last_unavailability_us = (int64_t)ctl->value;
            a->op.synced = true;
        }
        return;
    case MSG_CTL_FENCE:
        learn_epoch(a, ctl->value, ctl->text);
        return;
    default:
        log_warning(a->comp, "unexpected %s from %s", msg_ctl_name(ctl->kind),
                    conn_peer_hello(l->c)->node_name);
        return;
    }
}

/* The source's WAL continues on a new timeline (sink). */
static void
on_peer_timeline(void *ctx, const struct msg_timeline *tl)
{
    struct link *l = ctx;
    struct agent *a = l->a;
    int rc;

    if (a->role != AGENT_SINK || a->failed || l != a->active)
        return;
    if (sink_stalled(a)) {
        a->wal_dropped = true; /* comes again with the restarted stream */
        return;
    }
    rc = spool_set_timeline(a->spool, tl->tli, tl->switch_lsn, tl->history, tl->history_len);
    if (rc < 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "cannot switch the spool to timeline %u at %X/%X: %s",
                 tl->tli, LSN_ARGS(tl->switch_lsn), strerror(-rc));
        conn_close(l->c, WIRE_EPROTO, msg);
        return;
    }
    log_info(a->comp, "timeline %u from %X/%X", tl->tli, LSN_ARGS(tl->switch_lsn));
    walsrv_timeline_switched(a->walsrv);
}

static void
on_peer_drained(void *ctx)
{
    struct agent *a = ((struct link *)ctx)->a;

    if (a->src != NULL)
        source_pause(a->src, false);
}

static void
on_peer_closed(void *ctx, int reason, const char *message)
{
    struct link *l = ctx;
    struct agent *a = l->a;
    bool was_active = a->active == l;

    if (l->established)
        log_warning(a->comp, "link to %s down: %s", a->cfg->peer.name, message);
    set_last_error(a, "link to %s: %.200s", a->cfg->peer.name, message);
    link_dead(l);
    /* A source's session is the link it made; one it accepted (and refused) is not. */
    if (a->role == AGENT_SOURCE && (was_active || !l->inbound)) {
        if (a->streaming)
            a->src_dead = true; /* start over from what the sink holds */
        else
            a->link_retry_at_ms = clock_mono_ms() + AGENT_RETRY_MS; /* keep the primary */
    }
    (void)reason;
}

static const struct conn_ops peer_ops = {
    .on_hello = on_peer_hello,
    .on_established = on_peer_established,
    .on_wal = on_peer_wal,
    .on_ack = on_peer_ack,
    .on_drained = on_peer_drained,
    .on_closed = on_peer_closed,
    .on_timeline = on_peer_timeline,
    .on_control = on_peer_control,
    .on_epoch = on_peer_epoch,
};

static int
start_link(struct agent *a, int fd, bool acceptor)
{
    struct msg_hello hello = {.role = a->role == AGENT_SOURCE ? MSG_ROLE_SOURCE : MSG_ROLE_SINK,
                              .capabilities = MSG_CAP_LZ4};
    struct conn_config cc = {
        .tls = acceptor ? a->tls_server : a->tls_client,
        .peer_name = a->cfg->peer.name,
        .hello = &hello,
        .epoch = a->state.epoch,
        .compress = a->cfg->compression == CONFIG_COMPRESSION_LZ4,
        .lz4_acceleration = 1,
        .heartbeat_ms = (unsigned)a->cfg->heartbeat_interval_ms,
        .timeout_ms = (unsigned)a->cfg->peer_timeout_ms,
    };
    struct link *l;
    int rc, slot;

    snprintf(hello.node_name, sizeof(hello.node_name), "%s", a->cfg->node_name);
    if (a->role == AGENT_SOURCE) {
        hello.system_id = a->src_id.system_id;
        hello.timeline = a->src_id.timeline;
        hello.durable_lsn = a->src_id.xlogpos;
    } else {
        const struct spool_identity *id = spool_identity(a->spool);
        hello.system_id = id->system_id;
        hello.timeline = id->timeline != 0 ? id->timeline : a->want_tli;
        hello.durable_lsn = a->flushed != 0 ? a->flushed : a->want_start;
        hello.applied_lsn = a->applied;
    }
    for (slot = 0; slot < AGENT_MAX_LINKS && a->links[slot] != NULL; slot++)
        ;
    if (slot == AGENT_MAX_LINKS) {
        log_warning(a->comp, "too many connections from peers at once; dropping one");
        close(fd);
        return -EBUSY;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        close(fd);
        return -ENOMEM;
    }
    l->a = a;
    l->inbound = acceptor;
    rc = conn_new(&l->c, a->loop, fd, acceptor, &cc, &peer_ops, l);
    if (rc < 0) {
        free(l);
        log_error(a->comp, "cannot set up the link: %s", wire_strerror(rc));
        return rc;
    }
    a->links[slot] = l;
    return 0;
}

static void
on_accept(struct wio_acceptor *acc, int fd)
{
    struct agent *a = (struct agent *)((char *)acc - offsetof(struct agent, acc));

    if (fd < 0) {
        log_error(a->comp, "accept on %s failed: %s", a->cfg->listen.text, wire_strerror(fd));
        return;
    }
    if (a->role == AGENT_FENCED) {
        close(fd); /* a fenced agent talks to no one */
        return;
    }
    /* A source accepts too, only to refuse with its epoch: a stale primary learns it is
     * fenced, and two primaries at one epoch are named on both sides. */
    if (start_link(a, fd, true) < 0)
        log_warning(a->comp, "dropped an incoming link");
}

static void
on_connect(struct wio_connector *con, int fd)
{
    struct agent *a = (struct agent *)((char *)con - offsetof(struct agent, con));

    a->connecting = false;
    if (fd < 0) {
        log_warning(a->comp, "cannot connect to %s at %s: %s", a->cfg->peer.name,
                    a->cfg->peer.addr.text, wire_strerror(fd));
        set_last_error(a, "cannot connect to %s at %s: %s", a->cfg->peer.name,
                       a->cfg->peer.addr.text, wire_strerror(fd));
        /* The primary's session stays; only the link is tried again. */
        a->link_retry_at_ms = clock_mono_ms() + AGENT_RETRY_MS;
        return;
    }
    if (a->src == NULL || a->src_dead) {
        close(fd);
        return;
    }
    if (start_link(a, fd, false) < 0)
        a->src_dead = true;
}

/* ---- SOURCE ---- */

static void
on_src_identified(void *ctx, const struct source_identity *id)
{
    struct agent *a = ctx;

    a->src_id = *id;
    a->src_identified = true;
    if (a->op.kind != OP_NONE && a->op.step == STEP_K_WAIT_SYNC)
        a->op.sync_lsn = id->xlogpos; /* what the promoted primary has written so far */
    log_info(a->comp, "primary: cluster %" PRIu64 ", timeline %u, at %X/%X; slot %s restart %X/%X",
             id->system_id, id->timeline, LSN_ARGS(id->xlogpos), a->cfg->slot_name,
             LSN_ARGS(id->slot_restart_lsn));
}

static void
on_src_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct agent *a = ctx;

    a->primary_lsn = lsn + len;
    while (len > 0) {
        size_t n;

        if (a->batch_len > 0 &&
            (lsn != a->batch_lsn + a->batch_len || a->batch_len == FRAME_MAX_RAW))
            flush_batch(a);
        /* A session that is ending (link lost, send failed) restarts from the sink's
         * durable position: WAL still arriving for it is dropped, not batched. */
        if (a->src_dead || active_conn(a) == NULL) {
            a->batch_len = 0;
            return;
        }
        if (a->batch_len == 0)
            a->batch_lsn = lsn;
        n = FRAME_MAX_RAW - a->batch_len;
        if (n > len)
            n = len;
        memcpy(a->batch + a->batch_len, data, n);
        a->batch_len += n;
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
    struct agent *a = ctx;

    if (err == 0) {
        /* A clean shutdown: everything the primary wrote was received and acknowledged. */
        log_info(a->comp, "%s", message);
        a->src_clean_end = true;
    } else {
        log_warning(a->comp, "replication from the primary ended: %s", message);
        set_last_error(a, "primary: %.230s", message);
    }
    a->src_dead = true;
}

/* The primary's WAL continues on a new timeline: the sink hears of it before that WAL. */
static void
on_src_timeline(void *ctx, uint32_t tli, uint64_t switch_lsn, const char *history, size_t len)
{
    struct agent *a = ctx;
    struct msg_timeline tl = {
        .tli = tli, .switch_lsn = switch_lsn, .history = history, .history_len = len};
    int rc;

    /* Bytes of the old timeline past the switch point are not part of the new history. */
    if (a->batch_len > 0 && a->batch_lsn + a->batch_len > switch_lsn)
        a->batch_len = a->batch_lsn < switch_lsn ? (size_t)(switch_lsn - a->batch_lsn) : 0;
    flush_batch(a);
    if (a->src_dead || active_conn(a) == NULL)
        return;
    log_info(a->comp, "the primary's timeline %u begins at %X/%X", tli, LSN_ARGS(switch_lsn));
    rc = conn_send_timeline(active_conn(a), &tl);
    if (rc < 0) {
        log_error(a->comp, "cannot send TIMELINE %u: %s", tli, wire_strerror(rc));
        a->src_dead = true;
    }
}

static const struct source_ops src_ops = {
    .on_identified = on_src_identified,
    .on_wal = on_src_wal,
    .on_drained = on_src_drained,
    .on_closed = on_src_closed,
    .on_timeline = on_src_timeline,
};

static void
close_links(struct agent *a, const char *why)
{
    for (int i = 0; i < AGENT_MAX_LINKS; i++) {
        struct link *l = a->links[i];
        if (l != NULL && !l->dead) {
            conn_close(l->c, 0, why);
            link_dead(l);
        }
    }
}

static bool
have_link(const struct agent *a)
{
    for (int i = 0; i < AGENT_MAX_LINKS; i++)
        if (a->links[i] != NULL && !a->links[i]->dead)
            return true;
    return false;
}

static void
source_teardown(struct agent *a)
{
    close_links(a, "source restarting");
    if (a->src != NULL) {
        source_free(a->src);
        a->src = NULL;
    }
    a->src_identified = false;
    a->src_dead = false;
    a->streaming = false;
    a->batch_len = 0;
    a->ack_write = a->ack_flush = a->ack_apply = 0;
    a->sync_checked = false;
    lag_reset(&a->lag);
    a->retry_at_ms = clock_mono_ms() + AGENT_RETRY_MS;
}

static void
source_tick(struct agent *a)
{
    int rc;

    if (a->src_dead && a->op.kind == OP_SWITCHOVER)
        return; /* the stopped primary's session: switchover_tick takes it from here */
    if (a->src_dead)
        source_teardown(a);
    if (a->src == NULL) {
        if (clock_mono_ms() < a->retry_at_ms)
            return;
        rc = source_new(&a->src, a->loop, a->cfg->pg_conninfo, a->cfg->slot_name,
                        a->cfg->application_name, &src_ops, a);
        if (rc < 0) {
            a->src = NULL;
            log_error(a->comp, "cannot start replication from the primary: %s", wire_strerror(rc));
            a->retry_at_ms = clock_mono_ms() + AGENT_RETRY_MS;
        }
        return;
    }
    if (!a->src_identified)
        return;
    if (!have_link(a) && !a->connecting && clock_mono_ms() >= a->link_retry_at_ms) {
        rc = wio_connect_start(a->loop, &a->con, a->cfg->peer.addr.text, on_connect);
        if (rc < 0) {
            log_error(a->comp, "cannot connect to %s: %s", a->cfg->peer.addr.text,
                      wire_strerror(rc));
            a->src_dead = true;
            return;
        }
        a->connecting = true;
        return;
    }
    if (a->active != NULL && !a->streaming) {
        /* Resume at the segment boundary of what the sink holds durably (source.h rounds). */
        uint64_t start = a->peer.durable_lsn;
        log_info(a->comp, "sink %s holds WAL up to %X/%X: streaming from its segment",
                 a->peer.node_name, LSN_ARGS(start));
        rc = source_start(a->src, start, a->peer.timeline);
        if (rc < 0) {
            log_error(a->comp, "cannot start streaming: %s", wire_strerror(rc));
            a->src_dead = true;
            return;
        }
        a->streaming = true;
    }
    /* After a fail-over: synchronous again once the rejoined sink has caught up. */
    if (a->streaming && !a->sync_checked && a->ack_flush != 0 &&
        a->ack_flush >= a->src_id.xlogpos) {
        a->sync_checked = true;
        if (sync_names(a, false) < 0)
            a->sync_checked = false; /* try again at the next tick */
    }
}

/* ---- SINK ---- */

static void
on_spool_written(void *ctx, uint64_t write_lsn)
{
    struct agent *a = ctx;

    a->written = max_u64(a->written, write_lsn);
    a->ack_dirty = true;
}

static void
on_spool_flushed(void *ctx, uint64_t flush_lsn)
{
    struct agent *a = ctx;

    a->flushed = max_u64(a->flushed, flush_lsn);
    a->ack_dirty = true;
    if (a->flush_started_us != 0 && a->flushed >= a->flush_requested) {
        status_hist_observe(&a->metrics.hist[STATUS_HIST_FSYNC], STATUS_HIST_FSYNC,
                            (double)(clock_mono_us() - a->flush_started_us) / 1e6);
        a->metrics.spool_flushes++;
        a->flush_started_us = 0;
    }
    if (a->walsrv != NULL)
        walsrv_wal_durable(a->walsrv, a->flushed);
}

static void
on_spool_failed(void *ctx, int err, const char *what)
{
    struct agent *a = ctx;

    /* A failed WAL write or fdatasync is never retried (the kernel may have dropped the dirty
     * pages: a retry can report success for data that is gone) and nothing more is
     * acknowledged: the process ends, as PostgreSQL's walreceiver PANICs. */
    log_error(a->comp, "spool failure, stopping: %s: %s", what, wire_strerror(err));
    set_last_error(a, "spool: %.200s: %s", what, wire_strerror(err));
    a->failed = true;
    a->exit_status = 1;
}

/* The spool has space again (it wrote what waited): the dropped WAL must come again. */
static void
on_spool_unstalled(void *ctx)
{
    struct agent *a = ctx;

    log_info(a->comp, "the spool has space again after %.1f s (%" PRIu64 " bytes of WAL dropped)%s",
             a->stall_since_us != 0 ? (double)(clock_unix_us() - a->stall_since_us) / 1e6 : 0.0,
             a->stall_dropped, a->wal_dropped ? ": restarting the stream" : "");
    a->stall_since_us = 0;
    if (strncmp(a->last_error, "spool: ", 7) == 0)
        a->last_error[0] = '\0';
    if (a->wal_dropped && active_conn(a) != NULL)
        conn_close(active_conn(a), WIRE_EPROTO,
                   "the sink's spool has space again: restarting the stream from what it holds");
    a->wal_dropped = false;
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
    struct agent *a = ctx;
    uint64_t apply = apply_lsn < a->flushed ? apply_lsn : a->flushed;

    (void)application_name;
    (void)write_lsn;
    (void)flush_lsn;
    if (apply > a->applied) {
        a->applied = apply;
        a->ack_dirty = true;
    }
}

static const struct walsrv_ops walsrv_cb = {
    .on_reply = on_standby_reply,
};

static void
sink_tick(struct agent *a)
{
    int rc;

    if (a->failed)
        return;
    (void)sink_stalled(a);
    /* Group flush: one fdatasync for everything appended since the last one completed. */
    if (a->appended > a->flush_requested && a->flushed >= a->flush_requested) {
        rc = spool_flush(a->spool);
        if (rc < 0) {
            on_spool_failed(a, rc, "cannot request a spool flush");
            return;
        }
        a->flush_requested = a->appended;
        a->flush_started_us = clock_mono_us();
    }
    if (a->ack_dirty && active_conn(a) != NULL) {
        struct msg_ack ack = {.write_lsn = a->written,
                              .flush_lsn = a->flushed,
                              .apply_lsn = a->applied,
                              .send_time_us = clock_unix_us()};
        /* The spool reports write and flush separately; flush never passes write. */
        if (ack.write_lsn < ack.flush_lsn)
            ack.write_lsn = ack.flush_lsn;
        if (memcmp(&ack, &a->last_ack, offsetof(struct msg_ack, send_time_us)) != 0) {
            rc = conn_send_ack(active_conn(a), &ack);
            if (rc < 0)
                log_warning(a->comp, "cannot send ACK: %s", wire_strerror(rc));
            else
                a->last_ack = ack;
            if (rc >= 0)
                a->metrics.acks++;
        }
        a->ack_dirty = false;
    }
}

/* ---- role changes ---- */

/* Opens the spool and the WAL server.  fresh: the spool starts empty (a new standby). */
static int
sink_open(struct agent *a, bool fresh)
{
    char err[512];
    int rc;

    rc = read_control_data(a);
    if (rc < 0)
        return rc;
    a->want_start = 0;
    a->want_tli = 0;
    if (fresh) {
        rc = spool_remove_all(a->cfg->spool_dir, err, sizeof(err));
        if (rc < 0) {
            log_error(a->comp, "cannot empty the spool %s: %s", a->cfg->spool_dir, err);
            return rc;
        }
        /* The new standby reads WAL from its last checkpoint's redo point on. */
        rc = pgctl_wal_start(a->cfg->pgdata, &a->want_start, &a->want_tli, err, sizeof(err));
        if (rc < 0) {
            log_error(a->comp, "%s", err);
            return rc;
        }
        a->want_start -= a->want_start % a->local_segsize;
    }
    rc = spool_open(&a->spool, a->loop, a->cfg->spool_dir,
                    a->cfg->spool_keep_segments ? a->cfg->spool_keep * a->local_segsize
                                                : a->cfg->spool_keep,
                    &spool_cb, a, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "spool %s: %s", a->cfg->spool_dir, err);
        return rc;
    }
    a->written = a->flushed = a->appended = a->flush_requested = spool_flush_lsn(a->spool);
    a->applied = 0;
    a->flush_started_us = 0;
    memset(&a->last_ack, 0, sizeof(a->last_ack));
    rc = walsrv_new(&a->walsrv, a->loop, a->cfg->wal_listen.text, a->spool, &walsrv_cb, a, err,
                    sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "WAL server on %s: %s", a->cfg->wal_listen.text, err);
        return rc;
    }
    a->link_lost_ms = clock_mono_ms();
    log_info(a->comp, "sink ready: peer link on %s, WAL server on %s, spool %s at %X/%X%s",
             a->cfg->listen.text, a->cfg->wal_listen.text, a->cfg->spool_dir,
             LSN_ARGS(a->flushed), fresh ? " (fresh)" : "");
    return 0;
}

static void
sink_close(struct agent *a)
{
    if (a->walsrv != NULL)
        walsrv_free(a->walsrv);
    a->walsrv = NULL;
    if (a->spool != NULL)
        spool_close(a->spool);
    a->spool = NULL;
}

static int
become_source(struct agent *a)
{
    close_links(a, "roles change");
    sink_close(a);
    if (a->batch == NULL)
        a->batch = malloc(FRAME_MAX_RAW);
    if (a->batch == NULL)
        return -ENOMEM;
    a->role = AGENT_SOURCE;
    a->src_dead = false;
    a->src_clean_end = false;
    a->sync_checked = false;
    a->retry_at_ms = 0;
    a->link_retry_at_ms = 0;
    a->primary_lsn = a->sent_lsn = 0;
    lag_reset(&a->lag);
    log_info(a->comp, "acting as source now (epoch %" PRIu64 ")", a->state.epoch);
    return 0;
}

static int
become_sink(struct agent *a)
{
    close_links(a, "roles change");
    if (a->src != NULL)
        source_free(a->src);
    a->src = NULL;
    a->src_identified = a->src_dead = a->streaming = a->src_clean_end = false;
    a->batch_len = 0;
    a->ack_write = a->ack_flush = a->ack_apply = 0;
    a->role = AGENT_SINK;
    log_info(a->comp, "acting as sink now (epoch %" PRIu64 ")", a->state.epoch);
    return sink_open(a, true);
}

/* Stops acting as the source and stops the local PostgreSQL: a stale primary takes no more
 * commits. */
static void
fence(struct agent *a)
{
    log_error(a->comp,
              "fenced: %s holds epoch %" PRIu64 "; stopping the local PostgreSQL so that it "
              "takes no writes",
              a->state.primary, a->state.epoch);
    set_last_error(a, "fenced: %s holds epoch %" PRIu64, a->state.primary, a->state.epoch);
    if (a->op.kind != OP_NONE)
        op_end(a, false, "fenced by %s (epoch %" PRIu64 ")", a->state.primary, a->state.epoch);
    close_links(a, "fenced");
    if (a->src != NULL)
        source_free(a->src);
    a->src = NULL;
    a->src_identified = a->src_dead = a->streaming = false;
    a->role = AGENT_FENCED;
    op_begin(a, OP_FENCING, 0);
    if (!pg_running(a)) {
        /* Nothing to stop: the step ends at the next tick (and rejoin follows if asked). */
        op_step(a, STEP_F_STOPPING, "PostgreSQL is not running");
        return;
    }
    if (op_pg_ctl(a, "stop") < 0) {
        op_end(a, false, "cannot stop PostgreSQL: stop it by hand, it is a stale primary");
        return;
    }
    op_step(a, STEP_F_STOPPING, "stopping the stale primary (pg_ctl stop -m fast)");
}

/*
 * A newer epoch is held elsewhere: a source is fenced (unless it is handing over in a
 * switchover); anything else only records the epoch.
 */
static void
apply_learned_epoch(struct agent *a)
{
    uint64_t epoch = a->fence_epoch;
    bool switching = a->op.kind == OP_SWITCHOVER && a->op.step >= STEP_SO_WAIT_DONE;

    a->fence_epoch = 0;
    if (epoch <= a->state.epoch || raise_epoch(a, epoch, a->fence_holder) < 0)
        return;
    /* The holder may be this node: granted an epoch it had not recorded (a crash). */
    if (a->role == AGENT_SOURCE && !switching && strcmp(a->fence_holder, a->cfg->node_name) != 0)
        fence(a);
}

/* The local standby's received and replayed positions, straight from it (0 when unknown). */
static void
standby_positions(struct agent *a, uint64_t *received, uint64_t *replayed)
{
    PGconn *pg = PQconnectdb(a->cfg->pg_conninfo);
    PGresult *res;
    unsigned hi, lo;

    *received = *replayed = 0;
    if (PQstatus(pg) == CONNECTION_OK) {
        res = PQexec(pg, "SELECT pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            if (sscanf(PQgetvalue(res, 0, 0), "%X/%X", &hi, &lo) == 2)
                *received = (uint64_t)hi << 32 | lo;
            if (sscanf(PQgetvalue(res, 0, 1), "%X/%X", &hi, &lo) == 2)
                *replayed = (uint64_t)hi << 32 | lo;
        }
        PQclear(res);
    }
    PQfinish(pg);
}

/*
 * After a fail-over the new primary has no standby until the old site rejoins: its commits
 * would wait for ever.  synchronous_standby_names is emptied (the value kept in state_dir)
 * and put back once the rejoined sink has caught up.  relax = true empties, false restores.
 */
static int
sync_names(struct agent *a, bool relax)
{
    char path[4200], value[1024] = "", msg[512];
    const char *params[1];
    PGconn *pg;
    PGresult *res;
    FILE *f;
    int rc = 0;

    snprintf(path, sizeof(path), "%s/synchronous_standby_names.saved", a->cfg->state_dir);
    if (!relax) {
        f = fopen(path, "r");
        if (f == NULL)
            return 0; /* nothing relaxed */
        if (fgets(value, sizeof(value), f) == NULL)
            value[0] = '\0';
        fclose(f);
        value[strcspn(value, "\n")] = '\0';
    }
    pg = PQconnectdb(a->cfg->pg_conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        PQfinish(pg);
        return -ECONNREFUSED;
    }
    if (relax) {
        res = PQexec(pg, "SHOW synchronous_standby_names");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
            snprintf(value, sizeof(value), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        if (value[0] == '\0') {
            PQfinish(pg);
            return 0; /* not synchronous: nothing to relax */
        }
        f = fopen(path, "w");
        if (f == NULL || fprintf(f, "%s\n", value) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0)
            rc = -EIO;
        if (f != NULL && fclose(f) != 0)
            rc = -EIO;
        if (rc < 0) {
            PQfinish(pg);
            return rc;
        }
        value[0] = '\0';
    }
    params[0] = value;
    res = PQexecParams(pg, "SELECT format('ALTER SYSTEM SET synchronous_standby_names = %L', "
                           "$1::text)",
                       1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        char sql[1200];
        snprintf(sql, sizeof(sql), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        res = PQexec(pg, sql);
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            PQclear(res);
            res = PQexec(pg, "SELECT pg_reload_conf()");
        }
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
        log_error(a->comp, "cannot set synchronous_standby_names: %s",
                  log_one_line(msg, sizeof(msg), PQerrorMessage(pg)));
        rc = -EIO;
    }
    PQclear(res);
    PQfinish(pg);
    if (rc == 0 && !relax) {
        unlink(path);
        log_info(a->comp, "synchronous again: synchronous_standby_names = '%s'", params[0]);
    } else if (rc == 0) {
        log_warning(a->comp, "no standby after the fail-over: synchronous_standby_names emptied "
                             "until %s rejoins and catches up", a->cfg->peer.name);
    }
    return rc;
}

/* ---- operations: requests ---- */

static void
switchover_start(struct agent *a, const struct status_op_request *req)
{
    uint64_t max_lag = req->max_lag_bytes != 0 ? req->max_lag_bytes : AGENT_SWITCHOVER_MAX_LAG;
    struct msg_control begin = {.kind = MSG_CTL_SWITCHOVER_BEGIN, .value = req->id};

    /* Preflight: everything a clean switchover needs, checked before anything is touched. */
    if (a->role != AGENT_SOURCE) {
        op_refuse(a, OP_SWITCHOVER, req->id,
                  "%s is the %s: ask the primary's agent (%s) for a switchover", a->cfg->node_name,
                  a->role == AGENT_SINK ? "standby" : "fenced node", a->cfg->peer.name);
        return;
    }
    if (a->op.kind != OP_NONE) {
        op_refuse(a, OP_SWITCHOVER, req->id, "busy with %s", op_names[a->op.kind]);
        return;
    }
    if (req->target[0] != '\0' && strcmp(req->target, a->cfg->peer.name) != 0) {
        op_refuse(a, OP_SWITCHOVER, req->id, "unknown node %s (the peer is %s)", req->target,
                  a->cfg->peer.name);
        return;
    }
    if (active_conn(a) == NULL || !a->streaming) {
        op_refuse(a, OP_SWITCHOVER, req->id, "the link to %s is down", a->cfg->peer.name);
        return;
    }
    if (a->primary_lsn > a->ack_flush + max_lag) {
        op_refuse(a, OP_SWITCHOVER, req->id,
                  "%s is %" PRIu64 " bytes behind (more than %" PRIu64 ")", a->cfg->peer.name,
                  a->primary_lsn - a->ack_flush, max_lag);
        return;
    }
    if (a->ack_apply == 0 || a->primary_lsn > a->ack_apply + max_lag) {
        op_refuse(a, OP_SWITCHOVER, req->id,
                  "the standby at %s is not replaying (applied %X/%X, primary at %X/%X)",
                  a->cfg->peer.name, LSN_ARGS(a->ack_apply), LSN_ARGS(a->primary_lsn));
        return;
    }
    op_begin(a, OP_SWITCHOVER, req->id);
    if (conn_send_control(active_conn(a), &begin) < 0) {
        op_end(a, false, "cannot reach %s", a->cfg->peer.name);
        return;
    }
    a->op.stop_unix_us = clock_unix_us();
    if (op_pg_ctl(a, "stop") < 0) {
        op_end(a, false, "cannot run pg_ctl stop");
        return;
    }
    op_step(a, STEP_SO_STOPPING, "stopping the primary (pg_ctl stop -m fast); %s receives its "
            "final WAL", a->cfg->peer.name);
}

static void
failover_start(struct agent *a, uint64_t id, bool forced)
{
    if (a->role != AGENT_SINK) {
        op_refuse(a, OP_FAILOVER, id, "%s is not a standby: nothing to fail over to",
                  a->cfg->node_name);
        return;
    }
    if (a->op.kind != OP_NONE) {
        op_refuse(a, OP_FAILOVER, id, "busy with %s", op_names[a->op.kind]);
        return;
    }
    if (!forced && active_conn(a) != NULL) {
        op_refuse(a, OP_FAILOVER, id,
                  "the primary's agent %s is connected: use switchover (or failover --force)",
                  a->cfg->peer.name);
        return;
    }
    op_begin(a, OP_FAILOVER, id);
    a->op.forced = forced;
    if (forced) {
        /* The operator vouches that the primary site is gone: no arbiter asked. */
        close_links(a, "forced fail-over");
        if (raise_epoch(a, a->state.epoch + 1, a->cfg->node_name) < 0)
            return;
        op_step(a, STEP_K_WAIT_REPLAY, "forced: the standby receives all the spool holds (%X/%X)",
                LSN_ARGS(a->flushed));
        return;
    }
    struct arbiter_request req = {.ask = ARBITER_PROMOTE,
                                  .epoch = a->state.epoch,
                                  .durable_lsn = a->flushed,
                                  .failover_timeout_ms = a->cfg->failover_timeout_ms};

    if (a->arbiter == NULL || !arbiter_reachable(a->arbiter) ||
        arbiter_request(a->arbiter, &req) < 0) {
        op_end(a, false, "no arbiter reachable: not promoting (failover --force overrides)");
        return;
    }
    op_step(a, STEP_K_WAIT_VOTE, "asking the witness for epoch %" PRIu64, a->state.epoch + 1);
}

/*
 * CHECKPOINT on the new primary, refused while it is still in recovery: we may learn of the
 * new epoch (from the witness's grant) before the peer's promotion has ended, and pg_rewind
 * against a server whose control file still says the old timeline - a standby, or a primary
 * before its first checkpoint - finds "no rewind required".
 */
static int
rejoin_checkpoint(struct agent *a)
{
    char prog[4200], conninfo[4300];
    char *argv[] = {pg_prog(prog, sizeof(prog), "psql"),
                    "-X",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    conninfo,
                    "-c",
                    "DO $$BEGIN IF pg_is_in_recovery() THEN RAISE EXCEPTION "
                    "'still in recovery: not promoted yet'; END IF; END$$",
                    "-c",
                    "CHECKPOINT",
                    NULL};

    snprintf(conninfo, sizeof(conninfo), "%s", a->cfg->peer_pg_conninfo);
    if (op_run(a, "CHECKPOINT on the new primary", argv) < 0) {
        op_end(a, false, "cannot run psql");
        return -1;
    }
    return 0;
}

static void
rejoin_start(struct agent *a, uint64_t id)
{
    if (a->role != AGENT_FENCED) {
        op_refuse(a, OP_REJOIN, id, "%s is not fenced: it has nothing to rejoin",
                  a->cfg->node_name);
        return;
    }
    if (a->op.kind != OP_NONE) {
        op_refuse(a, OP_REJOIN, id, "busy with %s", op_names[a->op.kind]);
        return;
    }
    if (a->cfg->peer_pg_conninfo == NULL) {
        op_refuse(a, OP_REJOIN, id,
                  "peer_pg_conninfo is not set: pg_rewind needs to reach %s's PostgreSQL",
                  a->cfg->peer.name);
        return;
    }
    if (pg_running(a)) {
        op_refuse(a, OP_REJOIN, id, "the local PostgreSQL still runs: stop it first");
        return;
    }
    op_begin(a, OP_REJOIN, id);
    if (rejoin_checkpoint(a) < 0)
        return;
    op_step(a, STEP_R_CHECKPOINT, "CHECKPOINT on %s's PostgreSQL", a->cfg->peer.name);
}

/* Runs pg_rewind (or, when rewind == false, pg_basebackup) from the peer's PostgreSQL. */
static int
rejoin_copy(struct agent *a, bool rewind)
{
    char prog[4200], src[4400], pgdata[4200];
    char *argv[12];
    int n = 0;

    if (rewind) {
        argv[n++] = pg_prog(prog, sizeof(prog), "pg_rewind");
        snprintf(src, sizeof(src), "--source-server=%s", a->cfg->peer_pg_conninfo);
        snprintf(pgdata, sizeof(pgdata), "--target-pgdata=%s", a->cfg->pgdata);
        argv[n++] = pgdata;
        argv[n++] = src;
        argv[n++] = "--progress";
    } else {
        argv[n++] = pg_prog(prog, sizeof(prog), "pg_basebackup");
        argv[n++] = "-D";
        argv[n++] = a->cfg->pgdata;
        argv[n++] = "-d";
        argv[n++] = a->cfg->peer_pg_conninfo;
        argv[n++] = "--wal-method=stream";
        argv[n++] = "--checkpoint=fast";
        argv[n++] = "--no-password";
    }
    argv[n] = NULL;
    return op_run(a, rewind ? "pg_rewind" : "pg_basebackup", argv);
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level == 0)
        return 0; /* pgdata itself stays, with its owner and mode */
    return remove(path) == 0 ? 0 : -1;
}

/* Empties pgdata for a fresh base backup (its own configuration files are saved first). */
static int
empty_pgdata(struct agent *a)
{
    if (nftw(a->cfg->pgdata, remove_entry, 32, FTW_DEPTH | FTW_PHYS) != 0) {
        log_error(a->comp, "cannot empty %s: %s", a->cfg->pgdata, strerror(errno));
        return -EIO;
    }
    return 0;
}

static void
take_requests(struct agent *a)
{
    struct status_op_request req;

    if (a->scheduled.id != 0 && clock_unix_us() >= a->scheduled.at_unix_us) {
        req = a->scheduled;
        a->scheduled.id = 0;
        log_info(a->comp, "the switchover scheduled for now (request %" PRIu64 ") starts",
                 req.id);
        switchover_start(a, &req);
    }
    if (!status_take_op(&a->board, &req))
        return;
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
                log_info(a->comp, "the switchover scheduled before (request %" PRIu64
                                  ") is replaced", a->scheduled.id);
            a->scheduled = req;
            log_info(a->comp, "switchover scheduled for %s (request %" PRIu64 ")", when, req.id);
            break;
        }
        switchover_start(a, &req);
        break;
    case STATUS_REQ_FAILOVER:
        failover_start(a, req.id, req.force);
        break;
    case STATUS_REQ_REJOIN:
        rejoin_start(a, req.id);
        break;
    default:
        break;
    }
}

/* ---- operations: progress ---- */

/* The job of the current step, if any, has ended: true, with its exit code in *code. */
static bool
job_done(struct agent *a, int *code)
{
    int rc = pgctl_poll(&a->op.job);

    if (rc < 0) {
        *code = 255;
        return true;
    }
    *code = a->op.job.exit_code;
    return rc == 1;
}

static void
op_tick(struct agent *a)
{
    char err[512], saved[4300];
    int code;

    if (a->op.kind == OP_NONE)
        return;
    snprintf(saved, sizeof(saved), "%s/pgconf.saved", a->cfg->state_dir);
    if (clock_mono_ms() - a->op.step_at_ms > AGENT_OP_TIMEOUT_MS) {
        op_end(a, false, "timed out while %s", a->op.step_text);
        return;
    }
    switch (a->op.step) {
    case STEP_SO_STOPPING:
        if (!job_done(a, &code) || !a->src_dead)
            return;
        if (code != 0 || !a->src_clean_end) {
            op_end(a, false,
                   "the primary did not stop cleanly (pg_ctl exit %d%s); see %s/pg_ops.log",
                   code, a->src_clean_end ? "" : ", its stream broke", a->cfg->state_dir);
            if (a->src != NULL)
                source_free(a->src);
            a->src = NULL;
            a->src_dead = true; /* source_tick starts over: the primary must be started */
            return;
        }
        a->op.target_lsn = a->primary_lsn;
        source_free(a->src);
        a->src = NULL;
        if (a->ack_flush < a->op.target_lsn || active_conn(a) == NULL) {
            op_end(a, false, "%s confirmed %X/%X of %X/%X: not promoting it", a->cfg->peer.name,
                   LSN_ARGS(a->ack_flush), LSN_ARGS(a->op.target_lsn));
            a->src_dead = true;
            return;
        }
        {
            struct msg_control promote = {.kind = MSG_CTL_SWITCHOVER_PROMOTE,
                                          .lsn = a->op.target_lsn,
                                          .value = a->op.stop_unix_us};
            if (conn_send_control(active_conn(a), &promote) < 0) {
                op_end(a, false, "cannot send SWITCHOVER_PROMOTE");
                a->src_dead = true;
                return;
            }
        }
        op_step(a, STEP_SO_WAIT_DONE, "the primary stopped at %X/%X; %s replays and promotes",
                LSN_ARGS(a->op.target_lsn), a->cfg->peer.name);
        return;
    case STEP_SO_WAIT_DONE:
        return; /* on_peer_control moves on at SWITCHOVER_DONE */
    case STEP_R_STARTING:
        if (a->role != AGENT_SINK) {
            /* Switchover, old primary: the peer promoted; become its standby. */
            if (pgctl_write_standby_config(a->cfg, err, sizeof(err)) < 0) {
                op_end(a, false, "%s", err);
                return;
            }
            if (become_sink(a) < 0) {
                op_end(a, false, "cannot open the spool and WAL server");
                a->failed = true;
                a->exit_status = 1;
                return;
            }
            if (op_pg_ctl(a, "start") < 0) {
                op_end(a, false, "cannot run pg_ctl start");
                return;
            }
            op_step(a, STEP_R_STARTING, "starting PostgreSQL as a standby of %s",
                    a->cfg->peer.name);
            return;
        }
        if (!job_done(a, &code))
            return;
        if (code != 0) {
            op_end(a, false, "pg_ctl start failed (exit %d); see %s/postgresql.log", code,
                   a->cfg->state_dir);
            return;
        }
        if (a->op.kind == OP_REJOIN) {
            /* Mirroring resumes whenever the new primary's agent connects. */
            op_end(a, true, "%s runs as a standby of %s; mirroring resumes when its source "
                            "connects", a->cfg->node_name, a->cfg->peer.name);
            return;
        }
        op_step(a, STEP_R_WAIT_SYNC, "standby running; waiting for %s to be synchronous",
                a->cfg->peer.name);
        return;
    case STEP_R_WAIT_SYNC:
        if (a->op.synced) {
            a->switchovers++;
            op_end(a, true,
                   "%s is the primary, %s its synchronous standby; write-unavailability %.3f s",
                   a->cfg->peer.name, a->cfg->node_name,
                   (double)a->last_unavailability_us / 1e6);
        }
        return;
    case STEP_K_WAIT_PROMOTE:
    case STEP_K_WAIT_VOTE:
        return;
    case STEP_K_WAIT_REPLAY: {
        uint64_t received, replayed;
        char prog[4200];
        char *argv[] = {pg_prog(prog, sizeof(prog), "pg_ctl"), "promote", "-w", "-t", "120",
                        "-D", a->cfg->pgdata, NULL};

        /* Asked straight from the standby (a reply may be 10 s away), every 50 ms. */
        if (clock_mono_ms() - a->op.polled_ms < 50)
            return;
        a->op.polled_ms = clock_mono_ms();
        standby_positions(a, &received, &replayed);
        if (a->op.kind == OP_SWITCHOVER ? replayed < a->op.target_lsn : received < a->flushed)
            return;
        if (op_run(a, "pg_ctl promote", argv) < 0) {
            op_end(a, false, "cannot run pg_ctl promote");
            return;
        }
        op_step(a, STEP_K_PROMOTING, "the standby has %s %X/%X: promoting it",
                a->op.kind == OP_SWITCHOVER ? "replayed" : "received", LSN_ARGS(received));
        return;
    }
    case STEP_K_PROMOTING:
        if (!job_done(a, &code))
            return;
        if (code != 0) {
            op_end(a, false, "pg_ctl promote failed (exit %d); see %s/pg_ops.log", code,
                   a->cfg->state_dir);
            return;
        }
        if (a->op.kind == OP_SWITCHOVER) {
            struct msg_control done = {.kind = MSG_CTL_SWITCHOVER_DONE};
            if (raise_epoch(a, a->state.epoch + 1, a->cfg->node_name) < 0)
                return;
            done.value2 = a->state.epoch;
            if (active_conn(a) == NULL || conn_send_control(active_conn(a), &done) < 0)
                log_warning(a->comp, "cannot tell %s of the promotion; it learns the epoch "
                                     "when it reconnects", a->cfg->peer.name);
        }
        if (become_source(a) < 0) {
            op_end(a, false, "out of memory");
            return;
        }
        if (a->op.kind == OP_FAILOVER) {
            if (sync_names(a, true) < 0)
                log_error(a->comp, "commits on the new primary wait for a standby: could not "
                                   "empty synchronous_standby_names");
            a->last_unavailability_us =
                (int64_t)(clock_mono_ms() - a->link_lost_ms) * 1000;
            a->failovers++;
            op_end(a, true,
                   "%s promoted (epoch %" PRIu64 "); writable %.1f s after the source was "
                   "lost; %s must rejoin",
                   a->cfg->node_name, a->state.epoch,
                   (double)a->last_unavailability_us / 1e6, a->cfg->peer.name);
            return;
        }
        op_step(a, STEP_K_WAIT_SYNC, "promoted (epoch %" PRIu64 "); waiting for %s to follow",
                a->state.epoch, a->cfg->peer.name);
        return;
    case STEP_K_WAIT_SYNC:
        return; /* on_peer_ack ends it */
    case STEP_F_STOPPING:
        if (!job_done(a, &code))
            return;
        if (code != 0 && pg_running(a)) {
            op_end(a, false, "pg_ctl stop failed (exit %d): stop the stale primary by hand",
                   code);
            return;
        }
        op_end(a, true, "the stale primary is stopped; it takes no writes until it rejoins");
        if (a->cfg->auto_rejoin)
            rejoin_start(a, 0);
        return;
    case STEP_R_CHECKPOINT:
        if (a->op.job.pid == 0 && a->op.polled_ms != 0) {
            /* Waiting to try again: the new primary was not reachable or not promoted yet. */
            if (clock_mono_ms() < a->op.polled_ms)
                return;
            a->op.polled_ms = 0;
            if (rejoin_checkpoint(a) < 0)
                return;
        }
        if (!job_done(a, &code))
            return;
        if (code != 0) {
            /* Until the step's timeout: the peer may still be promoting. */
            log_warning(a->comp, "CHECKPOINT on %s failed (exit %d; see %s/pg_ops.log): "
                                 "trying again in a second", a->cfg->peer.name, code,
                        a->cfg->state_dir);
            a->op.polled_ms = clock_mono_ms() + 1000;
            return;
        }
        if (pgctl_save_configs(a->cfg->pgdata, saved, err, sizeof(err)) < 0) {
            op_end(a, false, "%s", err);
            return;
        }
        if (rejoin_copy(a, true) < 0) {
            op_end(a, false, "cannot run pg_rewind");
            return;
        }
        op_step(a, STEP_R_REWIND, "pg_rewind from %s", a->cfg->peer.name);
        return;
    case STEP_R_REWIND:
    case STEP_R_BASEBACKUP:
        if (!job_done(a, &code))
            return;
        if (code != 0 && a->op.step == STEP_R_REWIND) {
            log_warning(a->comp, "pg_rewind failed (exit %d; see %s/pg_ops.log): taking a "
                                 "fresh base backup instead", code, a->cfg->state_dir);
            if (empty_pgdata(a) < 0 || rejoin_copy(a, false) < 0) {
                op_end(a, false, "cannot start a base backup into %s", a->cfg->pgdata);
                return;
            }
            op_step(a, STEP_R_BASEBACKUP, "pg_basebackup from %s", a->cfg->peer.name);
            return;
        }
        if (code != 0) {
            op_end(a, false, "pg_basebackup failed (exit %d); see %s/pg_ops.log", code,
                   a->cfg->state_dir);
            return;
        }
        if (pgctl_restore_configs(a->cfg->pgdata, saved, err, sizeof(err)) < 0 ||
            pgctl_write_standby_config(a->cfg, err, sizeof(err)) < 0) {
            op_end(a, false, "%s", err);
            return;
        }
        if (become_sink(a) < 0) {
            op_end(a, false, "cannot open the spool and WAL server");
            return;
        }
        if (op_pg_ctl(a, "start") < 0) {
            op_end(a, false, "cannot run pg_ctl start");
            return;
        }
        op_step(a, STEP_R_STARTING, "starting PostgreSQL as a standby of %s", a->cfg->peer.name);
        return;
    case STEP_IDLE:
        return;
    }
}

/* Automatic fail-over: the sink has lost its source for failover_timeout. */
static void
failover_watch(struct agent *a)
{
    if (a->role != AGENT_SINK || a->op.kind != OP_NONE || a->failover_paused ||
        a->maint_active || a->arbiter == NULL)
        return;
    if (active_conn(a) != NULL) {
        a->link_lost_ms = clock_mono_ms();
        return;
    }
    if (a->flushed == 0 || clock_mono_ms() - a->link_lost_ms < a->cfg->failover_timeout_ms)
        return;
    if (!arbiter_reachable(a->arbiter))
        return; /* no witness: never promote */
    log_warning(a->comp, "no source for %.1f s: asking the witness whether %s is gone",
                (double)(clock_mono_ms() - a->link_lost_ms) / 1000, a->cfg->peer.name);
    failover_start(a, 0, false);
}

static void
on_arbiter_verdict(void *ctx, const struct arbiter_request *req, bool granted,
                   const struct wm_state *rec, const char *why)
{
    struct agent *a = ctx;
    uint64_t epoch = rec->epoch;

    (void)req;
    if (a->op.kind != OP_FAILOVER || a->op.step != STEP_K_WAIT_VOTE)
        return;
    if (!granted) {
        op_end(a, false, "the witness says no: %s", why);
        a->link_lost_ms = clock_mono_ms(); /* ask again after another failover_timeout */
        return;
    }
    if (active_conn(a) != NULL) {
        op_end(a, false, "the source came back while the witness voted: not promoting");
        return;
    }
    if (raise_epoch(a, epoch, a->cfg->node_name) < 0)
        return;
    op_step(a, STEP_K_WAIT_REPLAY,
            "epoch %" PRIu64 " granted: the standby receives all the spool holds (%X/%X)", epoch,
            LSN_ARGS(a->flushed));
}

static void
on_arbiter_epoch_news(void *ctx, const struct wm_state *rec)
{
    learn_epoch(ctx, rec->epoch, rec->primary);
}

static const struct arbiter_cb arbiter_cb = {
    .on_verdict = on_arbiter_verdict,
    .on_epoch_news = on_arbiter_epoch_news,
};

/* ---- lifecycle ---- */

/* ---- status ---- */

/*
 * A stage's lag in seconds now: the last measured, or, when WAL is waiting for that stage's
 * confirmation, how long the oldest of it has waited if that is longer (so that a stalled
 * stage shows a growing lag, not its last good value).  -1 while unknown.
 */
static double
lag_now(const struct lag_tracker *t, enum lag_stage stage, uint64_t now_us)
{
    double v = t->lag_s[stage];

    if (t->next[stage] < t->n) {
        uint64_t at = t->s[(t->head + t->next[stage]) % LAG_SAMPLES].at_us;
        double waited = now_us > at ? (double)(now_us - at) / 1e6 : 0;
        if (waited > v)
            v = waited;
    }
    return v;
}

static void
format_lag(struct status_snapshot *st, uint64_t head, const struct lag_tracker *t, uint64_t now_us)
{
    st->write_lag_bytes = head > st->write_lsn ? head - st->write_lsn : 0;
    st->flush_lag_bytes = head > st->flush_lsn ? head - st->flush_lsn : 0;
    st->apply_lag_bytes = head > st->apply_lsn ? head - st->apply_lsn : 0;
    st->write_lag_s = t != NULL ? lag_now(t, LAG_WRITE, now_us) : -1;
    st->flush_lag_s = t != NULL ? lag_now(t, LAG_FLUSH, now_us) : -1;
    st->apply_lag_s = t != NULL ? lag_now(t, LAG_APPLY, now_us) : -1;
}

/*
 * Lag in seconds on a sink: when each appended position was first seen (at a turn of the loop)
 * until the spool wrote and flushed it and the standby replayed it.
 */
static void
sink_lag_note(struct agent *a)
{
    uint64_t now = clock_mono_us();

    if (a->appended < a->sink_lag_lsn) {
        lag_reset(&a->sink_lag); /* a fresh spool */
        a->sink_lag_lsn = 0;
    }
    /* A full ring takes no more samples (PostgreSQL's LagTracker lowers its sampling rate
     * too): dropping the oldest would hide how long a stalled stage has waited. */
    if (a->appended > a->sink_lag_lsn && a->sink_lag.n < LAG_SAMPLES) {
        lag_sent(&a->sink_lag, a->appended, now);
        a->sink_lag_lsn = a->appended;
    }
    lag_confirmed(&a->sink_lag, LAG_WRITE, a->written, now);
    lag_confirmed(&a->sink_lag, LAG_FLUSH, a->flushed, now);
    lag_confirmed(&a->sink_lag, LAG_APPLY, a->applied, now);
}

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
        snprintf(e.kind, sizeof(e.kind), "%s", op_names[a->last_op]);
        snprintf(e.text, sizeof(e.text), "%s", a->last_op_result);
        status_incident_add(&a->metrics.incidents, &e);
        if (a->last_unavailability_us >= 0)
            status_hist_observe(&a->metrics.hist[STATUS_HIST_UNAVAIL], STATUS_HIST_UNAVAIL,
                                (double)a->last_unavailability_us / 1e6);
    }
}

/*
 * Maintenance windows, every AGENT_MAINT_EVERY_MS: takes a copy of the store (keeping the last
 * one while the API's thread saves), sets maint_text and maint_active (automatic fail-over
 * pauses while a window is open), and at the start of a window marked switchover files a
 * switchover request if this agent serves the primary and did at its last evaluation too.
 * Both agents note each switchover window's start as they see it open, so the agent that
 * becomes the primary by that switchover does not start another one back.
 */
static void
maint_tick(struct agent *a)
{
    int64_t now = (int64_t)(clock_unix_us() / 1000000);
    bool was = a->maint_active, was_source = a->maint_was_source || a->maint_at_ms == 0;
    int n;

    if (a->maint == NULL) {
        snprintf(a->maint_text, sizeof(a->maint_text), "none");
        return;
    }
    if (a->maint_at_ms != 0 && clock_mono_ms() - a->maint_at_ms < AGENT_MAINT_EVERY_MS)
        return;
    a->maint_at_ms = clock_mono_ms();
    n = maint_store_list(a->maint, a->maint_w, MAINT_MAX, false);
    if (n >= 0)
        a->maint_n = (unsigned)n;
    a->maint_active = maint_describe(a->maint_w, a->maint_n, now, a->maint_text,
                                     sizeof(a->maint_text));
    if (a->maint_active != was)
        log_info(a->comp, "%s", a->maint_active
                                    ? "maintenance window open: automatic fail-over paused"
                                    : "maintenance window closed: automatic fail-over resumes");
    for (unsigned i = 0; i < a->maint_n; i++) {
        const struct maint_window *w = &a->maint_w[i];
        struct rrule_span act, next;
        unsigned slot = MAINT_MAX;

        if (!w->switchover || maint_window_eval(w, now, &act, &next) < 0 || act.start < 0)
            continue;
        for (unsigned j = 0; j < MAINT_MAX && slot == MAINT_MAX; j++)
            if (a->maint_seen[j].id == w->id)
                slot = j;
        for (unsigned j = 0; j < MAINT_MAX && slot == MAINT_MAX; j++)
            if (a->maint_seen[j].id == 0)
                slot = j;
        if (slot == MAINT_MAX)
            slot = i; /* full of removed windows' entries: reuse one */
        if (a->maint_seen[slot].id == w->id && a->maint_seen[slot].start == act.start)
            continue;
        a->maint_seen[slot].id = w->id;
        a->maint_seen[slot].start = act.start;
        /* Not by an agent that became the source since its last evaluation: the other one's
         * switchover for this window can run whole between two (it takes under a second). */
        if (a->role != AGENT_SOURCE || !was_source ||
            now - act.start >= AGENT_MAINT_SWITCHOVER_GRACE_S)
            continue;
        struct status_op_request req = {.kind = STATUS_REQ_SWITCHOVER,
                                        .at_unix_us = (uint64_t)act.start * 1000000};
        log_info(a->comp, "maintenance window %" PRIu64 " opens: switchover requested (id %"
                          PRIu64 ")", w->id, status_request_op(&a->board, &req));
    }
    a->maint_was_source = a->role == AGENT_SOURCE;
}

/* Publishes a snapshot for the HTTP API and takes its requests; every AGENT_STATUS_EVERY_MS. */
static void
status_tick(struct agent *a)
{
    struct status_snapshot st = {0};
    struct conn *c = active_conn(a);
    unsigned req;

    if (a->role == AGENT_SINK && a->spool != NULL)
        sink_lag_note(a); /* at every turn: the lag in seconds is measured to within one */
    if (clock_mono_ms() - a->status_at_ms < AGENT_STATUS_EVERY_MS)
        return;
    a->status_at_ms = clock_mono_ms();
    req = status_take(&a->board);
    if (req & (1u << STATUS_REQ_PAUSE) && !a->failover_paused) {
        a->failover_paused = true;
        log_info(a->comp, "automatic fail-over paused by an operator");
    }
    if (req & (1u << STATUS_REQ_RESUME) && a->failover_paused) {
        a->failover_paused = false;
        log_info(a->comp, "automatic fail-over resumed by an operator");
    }
    snprintf(st.node_name, sizeof(st.node_name), "%s", a->cfg->node_name);
    snprintf(st.peer_name, sizeof(st.peer_name), "%s", a->cfg->peer.name);
    snprintf(st.peer_addr, sizeof(st.peer_addr), "%s", a->cfg->peer.addr.text);
    maint_tick(a);
    snprintf(st.maintenance, sizeof(st.maintenance), "%s", a->maint_text);
    snprintf(st.last_error, sizeof(st.last_error), "%s", a->last_error);
    st.epoch = a->state.epoch;
    snprintf(st.operation, sizeof(st.operation), "%s", op_names[a->op.kind]);
    snprintf(st.op_step, sizeof(st.op_step), "%s", a->op.step_text);
    st.op_id = a->op.id;
    st.last_op_id = a->last_op_id;
    snprintf(st.last_op, sizeof(st.last_op), "%s", op_names[a->last_op]);
    st.last_op_ok = a->last_op_ok;
    snprintf(st.last_op_result, sizeof(st.last_op_result), "%s", a->last_op_result);
    st.last_unavailability_us = a->last_unavailability_us;
    st.switchovers = a->switchovers;
    st.scheduled_switchover_unix_us = a->scheduled.id != 0 ? a->scheduled.at_unix_us : 0;
    st.cert_not_after_unix = a->cert_not_after;
    if (a->spool != NULL && spool_stalled(a->spool, NULL) != 0) {
        const char *what;

        spool_stalled(a->spool, &what);
        snprintf(st.spool_stall, sizeof(st.spool_stall), "%s", what);
        st.spool_stalled_since_unix_us = a->stall_since_us;
    }
    {
        struct statvfs fs;
        st.spool_free_bytes = statvfs(a->cfg->spool_dir, &fs) == 0
                                  ? (int64_t)fs.f_bavail * (int64_t)fs.f_frsize
                                  : -1;
    }
    st.failovers = a->failovers;
    st.started_unix_us = a->started_us;
    st.now_unix_us = clock_unix_us();
    st.failover_paused = a->failover_paused || a->maint_active; /* by an operator or a window */
    st.link_up = c != NULL;
    st.rtt_us = c != NULL ? conn_rtt_us(c) : 0;
    if (c != NULL) {
        st.wal_raw_bytes = a->role == AGENT_SOURCE ? conn_tx_stats(c)->wal_raw_bytes
                                                   : conn_rx_stats(c)->wal_raw_bytes;
        st.wal_wire_bytes = a->role == AGENT_SOURCE ? conn_tx_stats(c)->wal_wire_bytes
                                                    : conn_rx_stats(c)->wal_wire_bytes;
    }
    if (a->role == AGENT_SOURCE) {
        snprintf(st.role, sizeof(st.role), "source");
        snprintf(st.pg_state, sizeof(st.pg_state), "%s", a->src_identified ? "primary" : "unknown");
        st.system_id = a->src_id.system_id;
        st.timeline = a->src_id.timeline;
        st.primary_lsn = a->primary_lsn;
        st.sent_lsn = a->sent_lsn;
        st.write_lsn = a->ack_write;
        st.flush_lsn = a->ack_flush;
        st.apply_lsn = a->ack_apply;
        format_lag(&st, a->primary_lsn, &a->lag, clock_mono_us());
        snprintf(st.sync_state, sizeof(st.sync_state), "%s",
                 !a->streaming || c == NULL                       ? "down"
                 : a->ack_flush + 16u * 1024 * 1024 < a->sent_lsn ? "catchup"
                                                                  : "sync");
    } else if (a->role == AGENT_FENCED || a->spool == NULL) {
        snprintf(st.role, sizeof(st.role), "fenced");
        snprintf(st.pg_state, sizeof(st.pg_state), "%s", pg_running(a) ? "stale" : "down");
        snprintf(st.sync_state, sizeof(st.sync_state), "down");
    } else {
        const struct spool_identity *id = spool_identity(a->spool);
        snprintf(st.role, sizeof(st.role), "sink");
        snprintf(st.pg_state, sizeof(st.pg_state), "%s",
                 walsrv_streaming_clients(a->walsrv) > 0 ? "standby" : "unknown");
        st.system_id = id->system_id;
        st.timeline = id->timeline;
        st.primary_lsn = a->appended;
        st.sent_lsn = a->appended;
        st.write_lsn = a->written;
        st.flush_lsn = a->flushed;
        st.apply_lsn = a->applied;
        format_lag(&st, a->appended, &a->sink_lag, clock_mono_us());
        snprintf(st.sync_state, sizeof(st.sync_state), "%s", c != NULL ? "sync" : "down");
    }
    status_metrics_tick(a, &st);
    st.metrics = a->metrics;
    status_publish(&a->board, &st);
    if (a->arbiter != NULL) {
        struct arbiter_report r = {
            .role = a->role == AGENT_SOURCE && a->src_identified ? MSG_ROLE_SOURCE
                    : a->role == AGENT_SINK                     ? MSG_ROLE_SINK
                                                                : MSG_ROLE_UNKNOWN,
            .epoch = a->state.epoch,
            .durable_lsn = a->role == AGENT_SINK ? a->flushed : a->ack_flush,
            .mark = &a->state};
        arbiter_report(a->arbiter, &r);
    }
}

/* Frees the links that died during the last turn (never from inside their callbacks). */
static void
reap_links(struct agent *a)
{
    for (int i = 0; i < AGENT_MAX_LINKS; i++) {
        struct link *l = a->links[i];
        if (l != NULL && l->dead) {
            conn_free(l->c);
            free(l);
            a->links[i] = NULL;
        }
    }
}

static void
agent_tick(struct agent *a)
{
    reap_links(a);
    if (a->fence_epoch > a->state.epoch)
        apply_learned_epoch(a);
    take_requests(a);
    op_tick(a);
    if (a->failed)
        return;
    if (a->role == AGENT_SOURCE)
        source_tick(a);
    else if (a->role == AGENT_SINK)
        sink_tick(a);
    failover_watch(a);
    status_tick(a);
}

static int
agent_setup(struct agent *a)
{
    char err[512];
    int rc, port;

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
    rc = decide_role(a);
    if (rc < 0)
        return rc;
    log_info(a->comp, "local PostgreSQL is a %s: acting as %s (epoch %" PRIu64 ")",
             a->role == AGENT_SOURCE ? "primary" : "standby",
             a->role == AGENT_SOURCE ? "source" : "sink", a->state.epoch);
    if (tls_cert_not_after(a->cfg->tls_cert, &a->cert_not_after) < 0)
        a->cert_not_after = -1;
    rc = tls_config_new(&a->tls_server, a->cfg->tls_ca, a->cfg->tls_cert, a->cfg->tls_key, true,
                        err, sizeof(err));
    if (rc == 0)
        rc = tls_config_new(&a->tls_client, a->cfg->tls_ca, a->cfg->tls_cert, a->cfg->tls_key,
                            false, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "%s", err);
        return rc;
    }
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
    a->listen_fd = wio_listen_tcp(a->cfg->listen.text, 16, &port);
    if (a->listen_fd < 0) {
        log_error(a->comp, "cannot listen on %s: %s", a->cfg->listen.text,
                  wire_strerror(a->listen_fd));
        return a->listen_fd;
    }
    rc = wio_accept_start(a->loop, &a->acc, a->listen_fd, on_accept);
    if (rc < 0)
        return rc;
    if (a->cfg->has_witness) {
        rc = arbiter_new(&a->arbiter, a->loop, a->cfg, &arbiter_cb, a);
        if (rc < 0) {
            log_error(a->comp, "cannot set up the arbiter: %s", wire_strerror(rc));
            return rc;
        }
    }
    if (a->role == AGENT_SOURCE && a->state.primary[0] != '\0' &&
        strcmp(a->state.primary, a->cfg->node_name) != 0) {
        /* Fenced before (the other site holds the epoch), and still a primary here. */
        fence(a);
        return 0;
    }
    if (a->role == AGENT_SOURCE) {
        a->batch = malloc(FRAME_MAX_RAW);
        return a->batch == NULL ? -ENOMEM : 0;
    }
    return sink_open(a, false);
}

static void
agent_teardown(struct agent *a)
{
    if (a->http != NULL)
        httpapi_stop(a->http); /* first: its thread reads the board */
    close_links(a, "agent shutting down");
    pgctl_kill(&a->op.job);
    if (a->arbiter != NULL)
        arbiter_free(a->arbiter);
    if (a->src != NULL) {
        source_free(a->src);
        a->src = NULL;
    }
    /* A few turns, so that BYE frames leave and cancelled operations complete. */
    for (int i = 0; i < 20 && a->loop != NULL; i++)
        if (wio_run_once(a->loop, 10) <= 0)
            break;
    reap_links(a);
    if (a->listen_fd > 0) {
        wio_accept_stop(&a->acc);
        for (int i = 0; i < 20 && wio_accept_busy(&a->acc); i++)
            if (wio_run_once(a->loop, 10) < 0)
                break;
        close(a->listen_fd);
    }
    sink_close(a);
    if (a->loop != NULL)
        wio_loop_free(a->loop);
    tls_config_free(a->tls_server);
    tls_config_free(a->tls_client);
    free(a->batch);
    maint_store_close(a->maint); /* after httpapi_stop: its thread uses the store */
}

int
agent_run(const struct wm_config *cfg, volatile sig_atomic_t *stop)
{
    struct agent a = {.cfg = cfg, .listen_fd = -1, .last_unavailability_us = -1};
    int rc;

    snprintf(a.comp, sizeof(a.comp), "agent[%s]", cfg->node_name);
    status_board_init(&a.board);
    lag_reset(&a.lag);
    a.started_us = clock_unix_us();
    rc = agent_setup(&a);
    if (rc < 0) {
        agent_teardown(&a);
        status_board_destroy(&a.board);
        return 1;
    }
    while (!*stop && !a.failed) {
        rc = wio_run_once(a.loop, 200);
        if (rc < 0) {
            log_error(a.comp, "event loop failed: %s", wire_strerror(rc));
            a.exit_status = 1;
            break;
        }
        agent_tick(&a);
    }
    log_info(a.comp, "stopping%s", a.failed ? " after a failure" : "");
    agent_teardown(&a);
    status_board_destroy(&a.board);
    return a.exit_status;
}
