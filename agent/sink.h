/*
 * sink.h - the sink role: beside a standby, the agent writes the source's WAL into the durable
 * spool (spool.h), serves it to the local standby (walsrv.h), and acknowledges write / flush /
 * apply in order.
 *
 * The durability loop runs once per turn of the agent's loop (sink_turn): whatever the link
 * delivered since the last turn is already appended; one fdatasync covers all of it (group
 * flush, inline on the loop: the ACK goes out in the same turn); one ACK carries the highest
 * contiguous positions - write = written to the spool,
 * flush = made durable by fdatasync, apply = the standby's replay (never above flush).  Each
 * only moves forward, flush never passes write, and nothing is acknowledged before it is true.
 *
 * Memory: WAL that waits in the spool (spool_backlog: a segment still being prepared) pauses
 * the link's input above 2 MB and resumes it below 512 KB (conn_pause_input), so a source that
 * sends faster than the spool takes is held back by TCP, never by dropping WAL.
 *
 * A spool without space (spool_stalled): WAL from the link is dropped unacknowledged, so memory
 * stays bounded, and once the spool has space again the owner is told to restart the stream
 * (events.restart_stream), so the source sends the dropped WAL again.  A failed spool write or
 * fdatasync is never retried (the kernel may have dropped the dirty pages): events.failed is
 * called once and the process must end.
 *
 * Lifecycle: sink_open (the spool recovered, or emptied when fresh; the WAL server listening)
 * -> per link: sink_check_hello, sink_link_up, sink_wal / sink_timeline, sink_turn each turn
 * -> sink_close.  All on the loop's thread.
 */
#ifndef WALMIRROR_AGENT_SINK_H
#define WALMIRROR_AGENT_SINK_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "conn.h"
#include "err.h"
#include "pgctl.h"
#include "status.h"
#include "wio.h"

struct sink;

struct sink_events {
    /* The spool failed (why names the file and the error): stop; nothing more is safe. */
    void (*failed)(void *ctx, const char *why);
    /* WAL was dropped while the spool had no space, and it has space again: the stream must
     * start over from what the spool holds (close the active link with why). */
    void (*restart_stream)(void *ctx, const char *why);
};

/*
 * Opens the spool in cfg->spool_dir (fresh: emptied first, and the new standby of pgdata will
 * want WAL from its latest checkpoint's redo point on, read from ctl; not fresh: the spool keeps
 * WAL from that point until the standby streams and says what it needs) and the WAL server on
 * cfg->wal_listen.  ctl is pg_controldata of the local pgdata.  metrics: where the spool's
 * flush times and the ACKs sent are counted (the owner's; outlives the sink).  Returns 0 or a
 * negative errno, logged.
 */
WM_MUSTCHECK int sink_open(struct sink **out, struct wio_loop *loop, const struct wm_config *cfg,
                           const struct pgctl_control *ctl, bool fresh,
                           struct status_metrics *metrics, const struct sink_events *ev, void *ctx);
void sink_close(struct sink *k);

/* Fills the positions of our HELLO: system id, timeline, durable and applied LSN. */
void sink_hello(const struct sink *k, struct msg_hello *hello);
/* A source's HELLO: it must stream the cluster of the local standby and of the spool.
 * Returns 0 or WIRE_EPROTO with why. */
int sink_check_hello(struct sink *k, const struct msg_hello *peer, char *why, size_t whylen);
/* A new stream began: its first ACK goes out at the next turn. */
void sink_link_up(struct sink *k);
/* WAL from the active link c.  Returns 0, or WIRE_EPROTO with why when it does not continue
 * the spool (the link must be closed).  While the spool holds too much WAL in memory, c's input
 * is paused (back-pressure) until sink_turn sees the spool catch up. */
int sink_wal(struct sink *k, struct conn *c, uint64_t lsn, const uint8_t *data, size_t len,
             char *why, size_t whylen);
/* The source's WAL continues on a new timeline.  Returns 0, or < 0 with why (close the link). */
int sink_timeline(struct sink *k, const struct msg_timeline *tl, char *why, size_t whylen);
/* The durability step of a turn: group flush, then the ACK on c (NULL: no link). */
void sink_turn(struct sink *k, struct conn *c);

/* Durable end of the spool (what a fail-over's standby must receive). */
uint64_t sink_flushed(const struct sink *k);
/* Fills the snapshot's sink fields (positions, lag, spool stall, pg_state, sync_state given
 * whether a link is up). */
void sink_status(struct sink *k, bool link_up, struct status_snapshot *st);
/* Notes the lag in seconds at every turn (it is measured to within one turn). */
void sink_lag_note(struct sink *k);

#endif
