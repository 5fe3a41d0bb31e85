/*
 * source.h - the source: a physical replication client of the local primary, through libpq.
 *
 * Like pg_receivewal: a replication connection derived from pg_conninfo (replication=true,
 * application_name = the name the primary lists in synchronous_standby_names), IDENTIFY_SYSTEM,
 * TIMELINE_HISTORY of the primary's timeline when it is not 1, SHOW wal_segment_size, the
 * physical slot created if missing (RESERVE_WAL), then START_REPLICATION SLOT s PHYSICAL X/X
 * TIMELINE n at a segment boundary.  Everything is non-blocking: libpq's socket is polled
 * through the io_uring loop (PQconnectStart/Poll, PQgetCopyData async), so the agent's loop
 * never waits on the primary.
 *
 * WAL is delivered in order and contiguous within a timeline (a gap is a protocol error: the
 * connection is dropped).  on_drained tells the owner that nothing more is readable right now,
 * so that it can send what it batched without holding data back on an idle link.
 *
 * Timelines.  source_start() may name a timeline older than the primary's (the sink's, after
 * a switchover or fail-over): the primary streams it up to the point where its history forked
 * off, and the source then follows, as pg_receivewal does, once per switch (1 -> 2 -> 3 ...):
 *   1. on_timeline(next_tli, switch_lsn, history): next_tli's history file, and switch_lsn,
 *      where next_tli begins.  Everything on_wal delivered before belongs to the old timeline,
 *      which is complete; on_timeline follows its last on_wal directly when they arrived
 *      together (no on_drained in between), so the owner's batch may still hold its end.
 *      The walsender may have sent a few bytes of the old timeline PAST switch_lsn (a record
 *      cut in half when a cascading standby was promoted, walsender.c XLogSendPhysical):
 *      those bytes are not part of next_tli's history and the owner must not keep them as
 *      such - they may even have been delivered and drained well before on_timeline;
 *   2. streaming resumes on next_tli at the segment start of switch_lsn: the next on_wal LSN
 *      goes BACKWARDS once, to that segment start (as the walreceiver and pg_receivewal
 *      request it).  The bytes from there up to switch_lsn are the same WAL as the old
 *      timeline's (the new timeline's first segment is a copy of it); the owner may skip what
 *      it already holds.  Contiguity is checked again from that segment start.
 * An owner without on_timeline (NULL) does not follow: the end of a timeline ends the session
 * (WIRE_ECLOSED) as a lost connection would.  A start position past the requested timeline's
 * switch point is refused by PostgreSQL ("... is not in this server's history"): on_closed
 * with WIRE_EPEER and the server's message.
 *
 * Standby status updates ('r') go to the primary whenever source_report() changes a position,
 * and at once when a keepalive asks for a reply; positions are sent as given (the owner keeps
 * them monotonic and true, and after on_timeline they are positions on the new timeline).
 * write/flush/apply = 0 are never sent as such: before anything is confirmed the update
 * carries the start position, as the walreceiver does.
 *
 * End of the session: on_closed, once, then nothing else; the owner source_free()s it and
 * decides when to retry.
 *   err == 0: the primary shut down cleanly (smart or fast).  Its walsender waited until the
 *     reported flush (or write) position reached everything it had sent, then ended the stream
 *     with CommandComplete and no CopyDone (WalSndDone); the message says "the primary shut
 *     down cleanly at X/X" with the end of WAL received, source_received_lsn().  Nothing was
 *     lost; the primary's last record (its shutdown checkpoint) ends there.
 *   err < 0: anything else - the connection lost (WIRE_ECLOSED: an immediate shutdown, a
 *     crash, the network), an error from the server (WIRE_EPEER: a terminated walsender, a
 *     missing slot, a bad start position), a malformed reply (WIRE_EPROTO), local resources.
 */
#ifndef WALMIRROR_AGENT_SOURCE_H
#define WALMIRROR_AGENT_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "wio.h"

struct source;

struct source_identity {
    uint64_t system_id;
    uint32_t timeline;
    uint64_t xlogpos; /* the primary's flush position at IDENTIFY_SYSTEM */
    uint32_t seg_size;
    uint64_t slot_restart_lsn; /* 0 if the slot was just created without WAL reserved */
    /* The primary's timeline history file (TIMELINE_HISTORY of timeline), NUL-terminated,
     * history_len not counting the NUL; NULL and 0 on timeline 1.  Valid until source_free(). */
    const char *history;
    size_t history_len;
};

struct source_ops {
    /* Connected and identified; the slot exists.  The owner calls source_start() next. */
    void (*on_identified)(void *ctx, const struct source_identity *id);
    /* XLogData: contiguous with the previous call, except once after on_timeline (see above).
     * data valid during the call only. */
    void (*on_wal)(void *ctx, uint64_t lsn, const uint8_t *data, size_t len);
    /* Nothing more to read for now. */
    void (*on_drained)(void *ctx);
    /* The session ended with a message for the log; source_free() it.  err == 0: the primary
     * shut down cleanly and everything it wrote was received (see above); err < 0: a loss or
     * an error. */
    void (*on_closed)(void *ctx, int err, const char *message);
    /* Optional (NULL: timelines are not followed).  The timeline streamed so far ended;
     * next_tli > the old one begins at switch_lsn; history/history_len: next_tli's history
     * file ("%08X.history" checked), valid during the call only, its last entry being
     * (old timeline, switch_lsn).  The next on_wal starts at switch_lsn's segment start on
     * next_tli.  The owner may call source_free() here; source_report() stores positions for
     * the first update on the new timeline. */
    void (*on_timeline)(void *ctx, uint32_t next_tli, uint64_t switch_lsn, const char *history,
                        size_t history_len);
};

/* Starts connecting (non-blocking).  conninfo: pg_conninfo; the replication connection
 * overrides replication, application_name and dbname. */
WM_MUSTCHECK int source_new(struct source **out, struct wio_loop *loop, const char *conninfo,
                            const char *slot_name, const char *application_name,
                            const struct source_ops *ops, void *ctx);
void source_free(struct source *s);

/* Starts streaming at start_lsn (rounded down to a segment boundary; 0: the slot's
 * restart_lsn, or the primary's position when none) on timeline tli (0: the primary's
 * current one; an older one is followed to the current one, see above).  Returns 0,
 * -EINVAL when not identified or already started, or the session's error once it ended
 * (WIRE_ECLOSED after a clean shutdown). */
WM_MUSTCHECK int source_start(struct source *s, uint64_t start_lsn, uint32_t tli);

/* Confirmed positions from the sink; an 'r' goes out at once if any changed (while streaming;
 * otherwise they are kept for the next one).  Returns 0, or the session's error once it ended
 * (WIRE_ECLOSED after a clean shutdown). */
WM_MUSTCHECK int source_report(struct source *s, uint64_t write_lsn, uint64_t flush_lsn,
                               uint64_t apply_lsn);

/* Back-pressure: stop (true) or resume (false) reading from the primary. */
void source_pause(struct source *s, bool paused);

/* The end of the WAL received so far on the current timeline: where the last on_wal ended;
 * the start position before any (0 before source_start); after on_timeline, switch_lsn until
 * the re-delivered segment start passes it.  After a clean shutdown: the end of the primary's
 * WAL. */
uint64_t source_received_lsn(const struct source *s);

#endif
