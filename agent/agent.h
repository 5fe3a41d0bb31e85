/*
 * agent.h - the walmirror agent daemon: one per site.
 *
 * The role follows the local PostgreSQL: beside a primary (pg_is_in_recovery() false) the agent
 * is the SOURCE - a replication client of the primary (source.h) that batches WAL into frames
 * and sends them to the peer, and reports the peer's acknowledgements to the primary as
 * standby status updates.  Beside a standby it is the SINK - it accepts the source's link,
 * writes WAL into the durable spool (spool.h) with one fdatasync per batch, serves it to the
 * local standby (walsrv.h), and acknowledges write / flush / apply in order.
 *
 * The source connects to the peer's `listen` address; the sink accepts.  Any failure of the
 * link or of the primary connection tears the source's session down and it starts again a
 * second later from the segment boundary of what the sink reports durable; the sink keeps its
 * spool and WAL server running throughout.  A failed spool write or fdatasync ends the
 * process: nothing more is ever acknowledged.
 */
#ifndef WALMIRROR_AGENT_AGENT_H
#define WALMIRROR_AGENT_AGENT_H

#include <signal.h>

#include "config.h"

/* Runs the agent until *stop becomes non-zero (SIGINT/SIGTERM).  Returns the exit status. */
int agent_run(const struct wm_config *cfg, volatile sig_atomic_t *stop);

#endif
