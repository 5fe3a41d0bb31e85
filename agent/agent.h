/*
 * agent.h - the walmirror agent daemon: one per site.
 *
 * The role follows the local PostgreSQL: beside a primary (pg_is_in_recovery() false) the agent
 * is the SOURCE - a replication client of the primary (sender.h) that batches WAL into frames
 * and sends them to the peer, and reports the peer's acknowledgements to the primary as
 * standby status updates.  Beside a standby it is the SINK - it accepts the source's link,
 * writes WAL into the durable spool with one fdatasync per batch, serves it to the local
 * standby, and acknowledges write / flush / apply in order (sink.h).
 *
 * At start the agent learns its place before it acts: a running PostgreSQL says what it is; a
 * stopped one with standby.signal makes it the sink; a stopped primary's data directory is
 * started by the agent only when its state file says this node holds the current epoch AND the
 * arbiter (or, without one, the peer agent) confirms that nobody holds a newer one.  A node
 * that learns of a newer epoch held elsewhere is FENCED: its PostgreSQL is stopped and it
 * rejoins as a standby (op.h) - a stale primary never serves again as a primary.
 *
 * The source connects to the peer's `listen` address; the sink accepts.  Any failure of the
 * link or of the primary connection ends the source's session and a new one starts a second
 * later from the segment boundary of what the sink reports durable; the sink keeps its spool
 * and WAL server running throughout.  A failed spool write or fdatasync ends the process:
 * nothing more is ever acknowledged.
 *
 * In availability_mode = maximum_availability a source whose standby has not confirmed for
 * standby_loss_timeout while commits wait (or that has no stream to it) asks the arbiter to run
 * exposed, and goes back to synchronous by itself once the standby has caught up (op.h; docs/
 * operations.md, "Running exposed").  Without an arbiter reachable it never runs exposed.
 */
#ifndef WALMIRROR_AGENT_AGENT_H
#define WALMIRROR_AGENT_AGENT_H

#include <signal.h>

#include "config.h"

/* Runs the agent until *stop becomes non-zero (SIGINT/SIGTERM).  Returns the exit status:
 * 0 after a clean stop, 1 after a failure. */
int agent_run(const struct wm_config *cfg, volatile sig_atomic_t *stop);

#endif
