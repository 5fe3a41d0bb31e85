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
 * Durability loop (the invariant of STYLE.md): the owner appends what the link delivered
 * (spool_append; writes go to io_uring at once, many per submit), and when the input is
 * drained it calls spool_flush(): one fdatasync for everything written so far (group flush).
 * on_written / on_flushed report the highest contiguous position whose bytes are written /
 * durable; both only move forward and flush <= write.  A failed write or fdatasync is never
 * retried: on_failed is called, the spool refuses everything afterwards, and the owner must
 * stop acknowledging and exit (PostgreSQL's walreceiver PANICs in the same case).
 *
 * Recovery (spool_open): the last segment is scanned record by record (page headers, record
 * lengths, CRC-32C of each XLogRecord) from its start; the durable end is the end of the last
 * whole valid record.  Everything after it - a torn tail - is zeroed and never served.  All
 * spool files are then fsynced, so what recovery found is durable before it is reported.
 *
 * Reading (spool_read) serves only durable bytes: [spool_start_lsn, spool_flush_lsn).
 *
 * Retention: complete segments older than both spool_keep bytes behind the flush position and
 * the retain LSN (what the local standby still needs, spool_set_retain_lsn) are removed.
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
                            uint64_t keep_bytes, const struct spool_ops *ops, void *ctx,
                            char *err, size_t errlen);
void spool_close(struct spool *s);

const struct spool_identity *spool_identity(const struct spool *s);

/*
 * Gives an empty spool its identity, or checks it against the one it has: a different system
 * identifier or segment size is -EEXIST (with a message in the log naming both).  A higher
 * timeline is recorded (timeline switches arrive with a later issue).
 */
WM_MUSTCHECK int spool_set_identity(struct spool *s, const struct spool_identity *id);

/* Oldest LSN held (0 if empty), and the write and flush positions. */
uint64_t spool_start_lsn(const struct spool *s);
uint64_t spool_write_lsn(const struct spool *s);
uint64_t spool_flush_lsn(const struct spool *s);

/*
 * Appends WAL received at lsn.  An empty spool starts at lsn, which must be a segment boundary.
 * Bytes below the write position are already held and skipped (a reconnecting source restarts
 * at a segment boundary); a gap (lsn > write position) is -EINVAL.  data is copied.
 */
WM_MUSTCHECK int spool_append(struct spool *s, uint64_t lsn, const void *data, size_t len);

/* Requests one fdatasync covering everything appended so far; on_flushed follows. */
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

#endif
