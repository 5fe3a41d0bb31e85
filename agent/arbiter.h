/*
 * arbiter.h - the site agent's third party: the one that decides, for each epoch (fencing
 * token), which site may act as the primary, and that tells a site when another holds a newer
 * epoch.  Two questions only a third party may answer safely go to it:
 *   PROMOTE  a sink whose source has been silent for failover_timeout: "may I take over?"
 *   EXPOSE   a source whose standby has not confirmed for standby_loss_timeout while commits
 *            wait: "may the primary run exposed, acknowledging commits without its standby?"
 * and one piece of news it must record:
 *   RESYNC   that source, once its standby has caught up and the synchronous requirement is
 *            in force again: "the standby is synchronous again" (it becomes promotable).
 * Each grant is a new epoch (the asker's + 1) recorded durably with its holder and its mark
 * (state.h: struct wm_state) BEFORE the answer is sent.  For one epoch the arbiter grants one
 * request, ever: a promotion of B and an exposure of A race for the same epoch, and one loses.
 *
 * The rules every implementation applies:
 *   PROMOTE of epoch+1 is granted iff automatic fail-over is not paused at the arbiter; the
 *     asker does not hold the current epoch; the current holder has not been heard reporting
 *     itself the source for the silence threshold (witness.h has the witness's exact rule);
 *     and the current epoch is not marked exposed - a stale standby (the primary acknowledged
 *     commits without it since the mark) is never promoted by an arbiter: the denial names the
 *     exposure's start (LSN and time) and the WAL that may be missing.  The new epoch is
 *     recorded marked exposed since the asker's durable LSN: the new primary has no standby
 *     until the old site rejoins, catches up and its source asks RESYNC.
 *   EXPOSE of epoch+1 is granted iff the asker holds the current epoch (or, with no holder on
 *     record, it reports itself the source and the other site does not) and reports itself
 *     the source now (its primary runs: a primary that is down needs no exposure, and its
 *     standby must stay promotable).  Pausing fail-over does not block it.  The new epoch is marked exposed since the request's standby_lsn.
 *   RESYNC of epoch+1 is granted iff the asker holds the current epoch.  The mark is cleared.
 *   The holder asking again for the epoch it holds gets the same grant (a grant lost with a
 *   link, or an agent restarted before it recorded it).
 *
 * Implementations sit behind a const ops table (arbiter_impl.h: a new backend is a new file
 * with a new table, not new branches here), chosen by arbiter_new() from the configuration:
 *   - witness (cfg->has_witness): a TLS 1.3 client link (conn.h) to the witness agent at
 *     cfg->witness.addr, whose certificate must be issued to cfg->witness.name.  It connects
 *     once the agent has said what it is (the first arbiter_report(): until then it does not
 *     know its epoch), reconnects every second while the link is down (every 5 s while the
 *     witness refuses us as fenced), and sends a CONTROL STATE at once when the reported role
 *     or epoch changes and at least every heartbeat_interval.  Rules in witness.h.
 *   - etcd (cfg->arbiter = etcd; arbiter_etcd.c): the same rules, decided by this agent on
 *     the pair's records in an etcd cluster (cfg->etcd_endpoints, under cfg->etcd_prefix), each
 *     grant one etcd transaction; a lease-bound liveness key stands for the STATE reports.
 *   - none: no arbiter configured.  Never reachable; every request is -ENOTCONN, so automatic
 *     fail-over is off (and the agent decides exposure alone: agent.h).
 *
 * Callbacks, all from inside the wio loop's turn (never from inside an arbiter_* call):
 *   on_verdict      exactly once for each arbiter_request() that returned 0: granted with
 *                   the new epoch as recorded (holder = this node, and its mark), or denied
 *                   with why - a refusal, no answer within ARBITER_VOTE_TIMEOUT_MS, or the
 *                   link lost first; epoch is then the arbiter's current one as far as it
 *                   said (epoch->epoch 0 when it did not).  On a grant the arbiter's own
 *                   epoch is the new one.
 *   on_epoch_news   the arbiter's record of its current epoch - holder ("" when it did not
 *                   say) and mark - when that epoch is newer than ours (the one last reported,
 *                   or last granted), or is ours but held by another node with another mark
 *                   than the one we reported (a site that learnt an epoch from its peer before
 *                   it learnt the epoch's mark).  A source told of a newer epoch must stop
 *                   acting as primary, keep its PostgreSQL from taking writes and rejoin; a
 *                   sink adopts the record (a stale standby knows it is stale).  Called once
 *                   per record learnt, again when more of it becomes known (the holder or the
 *                   mark arriving after the bare number).  The holder may be this very node:
 *                   the arbiter granted it that epoch but the agent did not record it (a crash
 *                   between grant and acting on it, or the grant lost with the link) - the
 *                   agent then adopts it as granted.
 * Do not call arbiter_free() from inside a callback.  A NULL arbiter behaves as "none" in
 * every function below (a caller that creates one only when configured needs no checks).
 *
 * Lifecycle: arbiter_new -> arbiter_report (at once, then on every change) ->
 * arbiter_request when needed -> arbiter_free.  All functions run on the loop's thread.
 */
#ifndef WALMIRROR_AGENT_ARBITER_H
#define WALMIRROR_AGENT_ARBITER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "state.h"
#include "wio.h"

/* How long a request may wait for its answer before it counts as denied. */
#define ARBITER_VOTE_TIMEOUT_MS 3000

struct arbiter;

enum arbiter_ask {
    ARBITER_PROMOTE, /* a sink: take over from a silent source */
    ARBITER_EXPOSE,  /* the source: acknowledge commits without the standby */
    ARBITER_RESYNC,  /* the source: the standby is synchronous again */
};

struct arbiter_request {
    enum arbiter_ask ask;
    uint64_t epoch;       /* the asker's current epoch: epoch + 1 is asked for */
    uint64_t durable_lsn; /* PROMOTE: the spool's flush; EXPOSE, RESYNC: the primary's flush */
    uint64_t standby_lsn; /* EXPOSE: the standby's last durable LSN (the WAL at risk begins) */
    uint64_t failover_timeout_ms; /* PROMOTE: how long the source has been lost */
};

/* What a site tells its arbiter about itself: at once on a change of role or epoch, and at
 * least every heartbeat interval.  The positions and lag serve fleet views (an etcd arbiter
 * keeps them in the site's liveness key); the witness uses role, epoch and durable_lsn. */
struct arbiter_report {
    uint8_t role;         /* enum msg_role: SOURCE only while the local primary is up and
                           * streamed from; UNKNOWN while the local PostgreSQL is down */
    uint64_t epoch;       /* never lower than a granted one (a lower one is ignored) */
    uint64_t durable_lsn; /* source: what the primary flushed; sink: the spool's flush */
    const struct wm_state *mark; /* this site's record of its epoch (holder, mark); or NULL */
    uint32_t timeline;
    char sync_state[16]; /* as in status.h: "sync", "catchup", "exposed", "down", ... */
    uint64_t flush_lag_bytes, apply_lag_bytes;
    double flush_lag_s, apply_lag_s; /* negative: unknown */
    uint64_t wal_at_risk_bytes;      /* exposed: acknowledged WAL the standby lacks */
};

struct arbiter_cb {
    void (*on_verdict)(void *ctx, const struct arbiter_request *req, bool granted,
                       const struct wm_state *epoch, const char *why);
    void (*on_epoch_news)(void *ctx, const struct wm_state *epoch);
};

/* What the status shows of the arbiter. */
enum arbiter_state {
    ARBITER_STATE_NONE,   /* none configured */
    ARBITER_STATE_UP,     /* reachable: requests can be made */
    ARBITER_STATE_DOWN,   /* configured, not reachable (not yet, or lost) */
    ARBITER_STATE_FENCED, /* it refuses us: another site holds a newer epoch */
};

/*
 * Creates the arbiter cfg asks for (see above); cfg and cb must outlive it.  Loads what it
 * needs (TLS files: a failure is logged, naming the file).  Returns 0 or a negative errno.
 */
WM_MUSTCHECK int arbiter_new(struct arbiter **out, struct wio_loop *loop,
                             const struct wm_config *cfg, const struct arbiter_cb *cb, void *ctx);

/* Closes the link (BYE) and frees; no callback follows.  NULL is fine. */
void arbiter_free(struct arbiter *a);

/* Whether a request could be put now (the witness accepted us; etcd answers). */
bool arbiter_reachable(const struct arbiter *a);

/* See struct arbiter_report.  The first call lets the arbiter connect. */
void arbiter_report(struct arbiter *a, const struct arbiter_report *r);

/*
 * Asks for req->epoch + 1 (see the rules above).  One request at a time.  Returns 0 (the
 * verdict follows through on_verdict), -ENOTCONN when the arbiter cannot be reached now (the
 * caller must then NOT promote, and NOT go exposed), -EBUSY when a request is already in
 * flight, or another negative errno.
 */
WM_MUSTCHECK int arbiter_request(struct arbiter *a, const struct arbiter_request *req);

enum arbiter_state arbiter_state(const struct arbiter *a);
/* "witness", "etcd" or "none". */
const char *arbiter_kind(const struct arbiter *a);
/* One line for the status: "witness@127.0.0.1:5433 up, epoch 2", "witness@... down
 * (connection refused), epoch 1", "witness@... fenced: epoch 3 is held by site-b", "none". */
const char *arbiter_describe(const struct arbiter *a);

/* "promotion", "exposure", "resync": for logs. */
const char *arbiter_ask_name(enum arbiter_ask ask);

#endif
