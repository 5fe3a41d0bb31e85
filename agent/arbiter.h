/*
 * arbiter.h - the site agent's question "is the primary site gone? may I promote?", and the
 * fencing news that comes back, behind one interface.
 *
 * Implementations sit behind a const ops table (a new backend is a new table, not new branches),
 * chosen by arbiter_new() from the configuration:
 *   - witness: cfg->has_witness.  A TLS 1.3 client link (conn.h) to the witness agent at
 *     cfg->witness.addr, whose certificate must be issued to cfg->witness.name.  It connects
 *     once the agent has said what it is (the first arbiter_report(): until then it does not
 *     know its epoch), reconnects every second while the link is down (every 5 s while the
 *     witness refuses us as fenced), and sends a CONTROL STATE at once when the reported role
 *     or epoch changes and at least every heartbeat_interval.  The witness's rules for a
 *     vote are in witness.h and docs/configuration.md.
 *   - none: no witness configured.  Never reachable; every request is -ENOTCONN, so
 *     automatic fail-over is off.
 * An etcd-backed arbiter would be a third table with its own constructor, picked here.
 *
 * Callbacks, all from inside the wio loop's turn (never from inside an arbiter_* call):
 *   on_verdict  exactly once for each arbiter_request_promotion() that returned 0:
 *               granted with the new epoch (recorded durably by the arbiter before it told
 *               us), or denied with why - a refusal, no answer within ARBITER_VOTE_TIMEOUT_MS,
 *               or the link lost first.  On a grant the arbiter's own epoch is the new one.
 *   on_fenced   the arbiter knows an epoch newer than ours (the one last reported, or last
 *               granted), held by holder ("" when it did not say): we must stop acting as
 *               primary, keep the local PostgreSQL from taking writes, and rejoin.  Called
 *               once per newer epoch learnt.  holder may be this very node: the arbiter
 *               granted it that epoch but the agent did not record it (a crash between grant
 *               and promotion, or the grant lost with the link) - the agent then adopts the
 *               epoch as granted (arbiter_request_promotion(epoch - 1) confirms it: the
 *               holder asking again gets the same grant).
 * Do not call arbiter_free() from inside a callback.  A NULL arbiter behaves as "none" in
 * every function below (a caller that creates one only with a witness needs no checks).
 *
 * Lifecycle: arbiter_new -> arbiter_report (at once, then on every change) ->
 * arbiter_request_promotion when the source has been lost for failover_timeout ->
 * arbiter_free.  All functions run on the loop's thread.
 */
#ifndef WALMIRROR_AGENT_ARBITER_H
#define WALMIRROR_AGENT_ARBITER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "wio.h"

/* How long a vote request may wait for its answer before it counts as denied. */
#define ARBITER_VOTE_TIMEOUT_MS 3000

struct arbiter;

struct arbiter_cb {
    /* The answer to arbiter_request_promotion: granted with the new epoch, or denied with why
     * (epoch is then the one that was asked for). */
    void (*on_verdict)(void *ctx, bool granted, uint64_t epoch, const char *why);
    /* The arbiter knows a newer epoch than ours, held by holder: we are fenced. */
    void (*on_fenced)(void *ctx, uint64_t epoch, const char *holder);
};

/*
 * Creates the arbiter cfg asks for (see above); cfg and cb must outlive it.  For the witness,
 * loads the TLS files (a failure is logged, naming the file).  Returns 0 or a negative errno.
 */
WM_MUSTCHECK int arbiter_new(struct arbiter **out, struct wio_loop *loop,
                             const struct wm_config *cfg, const struct arbiter_cb *cb, void *ctx);

/* Closes the link (BYE) and frees; no callback follows.  NULL is fine. */
void arbiter_free(struct arbiter *a);

/* Whether a request could be put now: the link is established (the witness accepted us). */
bool arbiter_reachable(const struct arbiter *a);

/*
 * What this site is now: role (enum msg_role) - MSG_ROLE_SOURCE only while the local primary
 * is up and this agent streams from it, MSG_ROLE_SINK beside a standby, MSG_ROLE_UNKNOWN when
 * the local PostgreSQL is down or its state unknown (a source whose primary died must say so:
 * the witness counts a site as a live primary only while it reports SOURCE) - its epoch, and
 * its durable LSN (source: what the primary flushed; sink: the spool's flush position).  The
 * first call lets the arbiter connect.  A role or epoch change is sent at once; the LSN rides
 * with the periodic report.  The epoch never goes down: a lower one than the arbiter holds
 * (after a grant) is ignored.
 */
void arbiter_report(struct arbiter *a, uint8_t role, uint64_t epoch, uint64_t durable_lsn);

/*
 * Asks for epoch + 1, epoch being this site's current one; durable_lsn is what this site holds
 * durably, failover_timeout_ms how long it has lost the source (the witness uses it in its
 * rule).  One request at a time.  Returns 0 (the verdict follows through on_verdict),
 * -ENOTCONN when the arbiter cannot be reached now (the caller must then NOT promote),
 * -EBUSY when a request is already in flight, or another negative errno.
 */
WM_MUSTCHECK int arbiter_request_promotion(struct arbiter *a, uint64_t epoch,
                                           uint64_t durable_lsn, uint64_t failover_timeout_ms);

/* One line for the status: "witness@127.0.0.1:5433 up, epoch 2", "witness@... down
 * (connection refused), epoch 1", "witness@... fenced: epoch 3 is held by site-b", "none". */
const char *arbiter_describe(const struct arbiter *a);

#endif
