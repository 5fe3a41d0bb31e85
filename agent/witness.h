/*
 * witness.h - the witness daemon: the arbiter at a third site that lets a sink promote when
 * the primary site is gone, and hands out the epochs (fencing tokens) that go with it.
 * `walmirror-agent -c witness.conf` with role = witness runs it.
 *
 * It listens on `listen` (TLS 1.3, mutual authentication: a certificate issued to either of
 * the two `sites` is accepted, nothing else).  The sites connect to it (arbiter.h) and report
 * a CONTROL STATE (epoch, role, durable LSN) at least every heartbeat interval; any CONTROL
 * frame counts as hearing from the site.  Its own epoch, and the node that holds it, live in
 * state_dir/agent.state (state.h).
 *
 * A site asks for the next epoch (arbiter.h has the three requests and their common rules):
 *   VOTE_REQUEST (promotion; value: the epoch it asks for; lsn: its durable end; value2: its
 *   failover_timeout in ms) is granted iff
 *   - fail-over is not paused at the witness (POST /pause on its HTTP API);
 *   - the epoch asked for is the witness's epoch + 1;
 *   - the requester is not the current primary: the site that holds the witness's epoch per
 *     its state file, or else the site that last reported role source (or else the other
 *     site);
 *   - the current epoch is not marked exposed: a stale standby is refused, the reason naming
 *     the exposure's start (LSN, time), the standby's durable LSN and the primary's last
 *     reported one (the WAL that may be missing);
 *   - that primary has not been heard while reporting role source for the silence threshold:
 *     min(value2, 3 x heartbeat_interval), but never less than 2 x heartbeat_interval nor than
 *     twice the interval at which that site has been sending its STATE reports.  Since the
 *     witness's start counts as hearing every site, a freshly started witness waits that long
 *     before any grant.
 *   The new epoch is recorded exposed since lsn: the new primary has no standby yet.
 *   EXPOSE_REQUEST (value: the epoch; lsn: the primary's flush; value2: the standby's last
 *   durable LSN) and RESYNC_REQUEST (value: the epoch; lsn: the primary's flush) are granted
 *   iff the epoch asked for is the witness's + 1 and the requester is the current primary
 *   (the holder on record; with none, a requester that reports itself the source); EXPOSE
 *   also only while the requester reports itself the source (its primary runs).  Pausing
 *   does not block them.  EXPOSE's epoch is recorded exposed since value2; RESYNC's clean.
 * On a grant the new epoch, its holder and its mark are saved durably (state_save) BEFORE
 * VOTE_GRANT (value: the new epoch; the mark) is sent; every other live link is then raised
 * to the new epoch and sent a FENCE (value: the epoch, text: the holder, the mark), so an old
 * primary that still talks is refused from its next frame on and a standby learns whether it
 * is stale.  The requester's own link keeps the old epoch in its frame headers (raising one
 * end of a live link would refuse the other end's frames in flight, a STATE sent before the
 * grant arrived); its next connection carries the new one.  One grant per epoch, ever: across
 * restarts too, through the state file.  A denial is a VOTE_DENY whose text says why (e.g.
 * "the primary site-a was heard 0.4 s ago ..."; value: the witness's epoch, with its mark).
 * The holder asking again for the epoch it holds gets the same grant again (its agent may have
 * lost the first with a link, or restarted before recording it).
 *
 * A site whose STATE reports the witness's epoch with another mark than the record's (it
 * learnt the epoch from its peer, or from a refusal, before the mark) is sent the record as a
 * FENCE, once per link and record.
 *
 * A site whose HELLO carries an older epoch than the witness's is refused with the reason
 *     fenced: epoch E is held by NODE since YYYY-MM-DD HH:MM:SS UTC
 * ("by an unknown node" when the state names none); the ERROR frame carries the witness's
 * epoch, so the site learns it (arbiter.c reads NODE back from that text).  A site reporting a
 * newer epoch than the witness's (a switchover the witness did not see) has it adopted: saved
 * durably, with that site as holder if it reports role source, and the other links raised.
 * A fresh witness (no holder recorded) records the site that reports itself the source at
 * its epoch as the holder.
 *
 * Every event is one log line: a site up or down, a vote granted or denied and why, an epoch
 * adopted.  /status (status.h) shows role "witness", the epoch, and as "peer" the current
 * primary: its name, address, link and RTT; last_error is the last denial or failure.
 *
 * A failure to save the state is fatal (the vote is denied, the process exits 1): nothing is
 * retried and no grant is ever sent that is not on disk.
 */
#ifndef WALMIRROR_AGENT_WITNESS_H
#define WALMIRROR_AGENT_WITNESS_H

#include <signal.h>

#include "config.h"

/* The reason a stale site is refused with starts with this. */
#define WITNESS_FENCED_PREFIX "fenced: epoch "

/* Runs the witness until *stop becomes non-zero (SIGINT/SIGTERM).  Returns the exit status:
 * 0 after a clean stop, 1 when it could not start or failed. */
int witness_run(const struct wm_config *cfg, volatile sig_atomic_t *stop);

#endif
