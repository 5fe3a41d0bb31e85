/*
 * spool.h - the sink's durable WAL spool.
 *
 * The spool holds the WAL received from the peer in segment files laid out and named as in
 * pg_wal (spool_dir/TTTTTTTTXXXXXXXXYYYYYYYY, seg_size bytes each, zero-filled when created).
 * The segment being written carries the suffix ".partial" and is renamed (and the directory
 * fsynced) once it is complete and durable.  A small identity file (spool_dir/spool.meta,
 * written atomically) records the cluster's system identifier, segment size and timeline, so a
 * spool is never mixed with another cluster's WAL.
 *
 * Durability loop (the invariant: nothing is acknowledged before it is durable, and positions
 * never go backwards): the owner appends what the link delivered
 * (spool_append; writes go to io_uring at once, many per submit), and when the input is
 * drained it calls spool_flush(): one fdatasync for everything written so far (group flush).
 * on_written / on_flushed report the highest contiguous position whose bytes are written /
 * durable; both only move forward and flush <= write.  A failed write or fdatasync is never
 * retried: on_failed is called, the spool refuses everything afterwards, and the owner must
 * stop acknowledging and exit (PostgreSQL's walreceiver PANICs in the same case).
 *
 * No space (ENOSPC, EDQUOT) is not a failure when it strikes where no WAL has been written: the
 * preparation of a new segment file (created and zero-filled before WAL goes in, so the WAL
 * writes into it never need space).  The file is removed; WAL due in that segment waits,
 * unwritten, in memory, so write and flush positions stop at the segment's start and nothing
 * past it is acknowledged; spool_stalled() reports it with a message for the operator.  Once a
 * second the spool checks the file system's free space and, when a segment fits, prepares the
 * segment again from scratch; when it is ready the waiting WAL is written and on_unstalled is
 * called.  The owner should stop appending while stalled (what it appends waits in memory).
 *
 * Recovery (spool_open): the last segment is scanned record by record (page headers, record
 * lengths, CRC-32C of each XLogRecord) from its start; the durable end is the end of the last
 * whole valid record.  Everything after it - a torn tail - is zeroed and never served.  All
 * spool files are then fsynced, so what recovery found is durable before it is reported.
 *
 * Reading (spool_read) serves only durable bytes: [spool_start_lsn, spool_flush_lsn).
 *
 * Retention: complete segments older than both spool_keep bytes behind the flush position and
 * the retain LSN (what the local standby still needs, spool_set_retain_lsn) are removed, of
 * whatever timeline; history files are never removed by retention.
 *
 * Timelines.  The spool is on one timeline at a time (spool_identity()->timeline, recorded in
 * spool.meta) and keeps the history files (spool_dir/%08X.history, exactly as PostgreSQL wrote
 * them) it was given.  After a switchover or fail-over the owner calls spool_set_timeline() once
 * the old timeline's WAL up to the switch point is appended; the spool then starts the segment
 * holding the switch point in the new timeline's file, with the bytes below the switch point
 * copied, and appends go to files named with the new timeline.  The new timeline's WAL re-sent
 * from that segment's start is skipped by spool_append as usual (those bytes are identical in
 * both timelines).  Segments wholly before the switch keep their old-timeline names, as in
 * pg_wal; one file per segment is held, so spool_read() needs no timeline: each segment is read
 * from the newest timeline's file holding it, as PostgreSQL's walsender does.
 *
 * Recovery after a crash during spool_set_timeline (steps in order: history file, new segment
 * file, spool.meta, removal of the old-timeline file): segment files of a timeline newer than
 * spool.meta's are removed (the switch did not happen); an old-timeline file shadowed by a newer
 * one is removed; when the segment holding the durable end is of an older timeline and reaches
 * past that timeline's switch point, it is started again in the current timeline's file.
 *
 * All functions return >= 0 or a negative errno; messages for the operator go to the log with
 * the LSNs involved.
 */
#ifndef WALMIRROR_AGENT_SPOOL_H
#define WALMIRROR_AGENT_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "wio.h"

struct spool;

struct spool_ops {
    void (*on_written)(void *ctx, uint64_t write_lsn);
    void (*on_flushed)(void *ctx, uint64_t flush_lsn);
    /* A write or fdatasync failed (err: negative errno); what names the file and LSN. */
    void (*on_failed)(void *ctx, int err, const char *what);
    /* Optional: the stall for space (spool_stalled) is over; called from the loop. */
    void (*on_unstalled)(void *ctx);
};

struct spool_identity {
    uint64_t system_id; /* 0: the spool is empty and has no identity yet */
    uint32_t seg_size;
    uint32_t timeline;
};

/*
 * Opens (creating the directory if needed) and recovers the spool.  keep_bytes: spool_keep.
 * On failure writes a message into err.
 */
WM_MUSTCHECK int spool_open(struct spool **out, struct wio_loop *loop, const char *dir,
                            uint64_t keep_bytes, const struct spool_ops *ops, void *ctx, char *err,
                            size_t errlen);
void spool_close(struct spool *s);

const struct spool_identity *spool_identity(const struct spool *s);

/*
 * Gives an empty spool its identity, or checks it against the one it has: a different system
 * identifier or segment size is -EEXIST (with a message in the log naming both).  The timeline:
 * while the spool holds no WAL, a higher one is recorded (without a history file: give it with
 * spool_set_timeline); once it holds WAL, a different one is only logged - the timeline of a
 * spool holding WAL changes through spool_set_timeline alone.
 */
WM_MUSTCHECK int spool_set_identity(struct spool *s, const struct spool_identity *id);

/*
 * The WAL that follows belongs to timeline tli.  history/len: the content of tli's history file
 * (%08X.history) as PostgreSQL wrote it; len 0 (history may be NULL) only for timeline 1.  The
 * history must parse as PostgreSQL's readTimeLineHistory does (lines "parentTLI<TAB>X/X<TAB>
 * reason", comments and blank lines ignored), with increasing parent timelines below tli.
 *  - spool without identity: -EINVAL;
 *  - empty spool (no WAL yet): records tli as the spool's timeline (spool.meta) and stores the
 *    history file durably; switch_lsn is not used;
 *  - tli == the spool's timeline: nothing (returns 0) - except that a spool whose timeline came
 *    from spool_set_identity, without its history file, stores the history given;
 *  - tli > the spool's timeline: a timeline switch at switch_lsn, which must equal the end of
 *    the WAL appended so far (else -EINVAL, logged with both LSNs); the history's last line must
 *    name the spool's timeline as parent and switch_lsn as switch point, and its earlier lines
 *    the spool's known history (else -EINVAL).  The history file is written durably (file fsync,
 *    rename, directory fsync), the segment holding switch_lsn is started in the new timeline's
 *    file with the bytes below switch_lsn copied (from the old timeline's file, and from the
 *    spool's write buffers for bytes appended but not yet written) and zeros after, file and
 *    directory fsynced, and spool.meta records the new timeline - all before returning.  It
 *    blocks on synchronous I/O (a segment's worth; once per switch) but never turns the loop, so
 *    it may be called from any callback.  Afterwards appends go to new-timeline files;
 *    on_written/on_flushed still reach switch_lsn as the old timeline's writes complete.
 *  - tli < the spool's timeline: -EINVAL.
 *  - while the spool is stalled for space: -EAGAIN (give it again after on_unstalled).
 * An I/O failure fails the spool (on_failed) and is returned.
 */
WM_MUSTCHECK int spool_set_timeline(struct spool *s, uint32_t tli, uint64_t switch_lsn,
                                    const char *history, size_t len);

/* One timeline of the spool's history. */
struct spool_timeline {
    uint32_t tli;
    uint64_t end; /* its switch point to the next; UINT64_MAX for the current timeline */
};

/*
 * The spool's timeline history, oldest first, the current timeline last: the entries of the
 * current timeline's history file, then the current timeline.  Without that file (timeline 1,
 * or a timeline recorded by spool_set_identity) only the current timeline.  *n is 0 when the
 * spool has no identity.  Valid until the next spool_set_timeline or spool_set_identity.
 */
const struct spool_timeline *spool_timelines(const struct spool *s, size_t *n);

/* Where timeline tli ends in this spool: its switch point, or UINT64_MAX when tli is the spool's
 * current timeline; 0 when tli is unknown (newer than the spool's, or not in its history). */
uint64_t spool_timeline_end(const struct spool *s, uint32_t tli);

/*
 * Copies the history file of tli (2 <= tli <= the spool's timeline) into a malloc'd buffer
 * (*out, NUL-terminated for convenience, *len bytes without the NUL); the caller frees it.
 * -ENOENT if the spool does not hold it (or tli is out of that range), another negative errno
 * if it cannot be read.
 */
WM_MUSTCHECK int spool_read_history(const struct spool *s, uint32_t tli, char **out, size_t *len);

/*
 * Removes everything walmirror keeps in dir - segment files (.partial too), history files,
 * spool.meta and their temporary files - durably (directory fsync; spool.meta last), for an
 * agent whose standby is being rebuilt: the next spool_open() finds it empty and without
 * identity.  Other files and the directory itself are left.  A missing dir is fine (0).  The
 * spool must not be open: -EBUSY if a process holds it.  If interrupted, call it again.  On
 * failure writes a message into err.
 */
WM_MUSTCHECK int spool_remove_all(const char *dir, char *err, size_t errlen);

/* Oldest LSN held (0 if empty), and the write and flush positions. */
uint64_t spool_start_lsn(const struct spool *s);
uint64_t spool_write_lsn(const struct spool *s);
uint64_t spool_flush_lsn(const struct spool *s);
/* Bytes appended and not yet written (held in memory): what waits for a segment's preparation
 * or for its write's completion.  For back-pressure on what feeds spool_append. */
uint64_t spool_backlog(const struct spool *s);

/*
 * Appends WAL received at lsn.  An empty spool starts at lsn, which must be a segment boundary.
 * Bytes below the write position are already held and skipped (a reconnecting source restarts
 * at a segment boundary); a gap (lsn > write position) is -EINVAL.  data is copied.
 */
WM_MUSTCHECK int spool_append(struct spool *s, uint64_t lsn, const void *data, size_t len);

/*
 * Requests one fdatasync covering everything appended so far; on_flushed follows, from inside
 * this call when the writes are done and the fdatasync is inline (spool.c, "Write and flush"),
 * else from the loop.  spool_close from on_flushed is allowed.
 */
WM_MUSTCHECK int spool_flush(struct spool *s);

/*
 * Copies durable WAL [lsn, lsn + len) into buf; returns the bytes copied (short at the flush
 * position), -ENOENT if lsn is below spool_start_lsn (removed or never held).
 */
WM_MUSTCHECK ssize_t spool_read(struct spool *s, uint64_t lsn, void *buf, size_t len);

/* The oldest LSN the local standby still needs; segments at or after it are kept. */
void spool_set_retain_lsn(struct spool *s, uint64_t lsn);

/* True after on_failed: nothing more is accepted. */
bool spool_failed(const struct spool *s);

/*
 * 0, or the negative errno (-ENOSPC, -EDQUOT) while WAL waits for a segment the spool has no
 * space to prepare; *what (if not NULL) then points to a message naming the directory, the
 * segment, the error and the LSN that waits ("" when not stalled), valid until the next call
 * into the spool.  A stall begins inside spool_append or a completion, and ends with
 * on_unstalled.
 */
int spool_stalled(const struct spool *s, const char **what);

#endif
