/*
 * syncrep.h - the local primary's synchronous requirement: synchronous_standby_names lifted
 * while the primary must go on without its standby (running exposed, or a new primary after a
 * fail-over), and put back - provably in force - once the standby has caught up.
 *
 *   syncrep_relax()    SHOW synchronous_standby_names; the value is saved durably in
 *                      state_dir/synchronous_standby_names.saved (tmp file, fsync, rename,
 *                      directory fsync) BEFORE `ALTER SYSTEM SET synchronous_standby_names =
 *                      ''` and pg_reload_conf(); commits waiting for the standby are released
 *                      once the checkpointer has reloaded.  An empty setting has nothing to
 *                      relax (nothing is saved); a saved file from before (an agent that
 *                      restarted while relaxed) is kept and the setting emptied again.
 *   syncrep_restore()  puts the saved value back (ALTER SYSTEM, pg_reload_conf()), waits until
 *                      the walsender of application_name counts as synchronous in
 *                      pg_stat_replication, and then proves the requirement is in force for
 *                      commits: while the owner holds back the positions it reports to the
 *                      primary (hooks.hold), a probe transaction at synchronous_commit =
 *                      remote_write commits on a connection of its own; seeing its backend
 *                      wait for the standby (pg_stat_activity.wait_event = 'SyncRep') is the
 *                      proof, and pg_cancel_backend lets it go.  A probe that commits at once
 *                      (the checkpointer had not reloaded yet) is repeated every 200 ms, for
 *                      up to 10 s.  Then the saved file is removed.  Commits that need the
 *                      standby's confirmation meanwhile wait a few tens of milliseconds: the
 *                      price of knowing, before anyone is told "synchronous again", that no
 *                      commit can be acknowledged without the standby.
 * Either runs alone (-EBUSY while one is in progress).  done(ctx, 0 or a negative errno, why)
 * follows exactly once when the call returned 0, from the loop.  All SQL goes through the
 * owner's pgconn (pgconn.h): nothing blocks.
 */
#ifndef WALMIRROR_AGENT_SYNCREP_H
#define WALMIRROR_AGENT_SYNCREP_H

#include <stdbool.h>

#include "err.h"
#include "pgconn.h"

struct syncrep;

typedef void (*syncrep_done)(void *ctx, int rc, const char *why);

struct syncrep_hooks {
    /* Report no position past what the primary had sent when this is called, until release:
     * a commit made from now on cannot be confirmed by the standby meanwhile. */
    void (*hold)(void *ctx);
    void (*release)(void *ctx);
};

/* pg: the owner's connection to the local primary (outlives s); conninfo: for the probe's
 * own connection; state_dir holds the saved value; application_name: the name the primary
 * lists for this site's source. */
WM_MUSTCHECK int syncrep_new(struct syncrep **out, struct pgconn *pg, struct wio_loop *loop,
                             const char *conninfo, const char *state_dir,
                             const char *application_name, const struct syncrep_hooks *hooks,
                             void *hooks_ctx, const char *comp);
/* An operation in progress is dropped: no done follows; a hold is released.  NULL is fine. */
void syncrep_free(struct syncrep *s);

/* Whether the requirement is lifted: the saved value is on disk. */
bool syncrep_relaxed(const struct syncrep *s);

WM_MUSTCHECK int syncrep_relax(struct syncrep *s, syncrep_done done, void *ctx);
WM_MUSTCHECK int syncrep_restore(struct syncrep *s, syncrep_done done, void *ctx);

/* The saved value ("" when none). */
const char *syncrep_saved(const struct syncrep *s);
/* The saved value went back into the server's configuration some other way (a rejoin writes
 * it into the standby's postgresql.auto.conf): the file is removed.  0 or a negative errno. */
WM_MUSTCHECK int syncrep_forget(struct syncrep *s);

#endif
