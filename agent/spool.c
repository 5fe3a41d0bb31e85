/*
 * spool.c - the sink's durable WAL spool; see spool.h for the contract.
 *
 * Files
 *   spool_dir/TTTTTTTTXXXXXXXXYYYYYYYY[.partial]  one per segment, seg_size bytes, mode 0600
 *   spool_dir/spool.meta                          identity (text), replaced atomically
 *   spool_dir/TTTTTTTT.history                    timeline history, as PostgreSQL wrote it
 *   The directory is flock()ed while open: a second agent on the same spool gets -EBUSY.
 *
 * Segment lifecycle (struct seg; the held segments form one contiguous run, oldest first)
 *   PREPARING  NAME.partial created and zero-filled with writes through io_uring (at most
 *              ZERO_PARALLEL writes of ZERO_BUF_SIZE in flight), then fsync of the file and of
 *              the directory (both must succeed) -> OPEN.  WAL appended meanwhile waits in the
 *              segment's queue and is submitted when it is OPEN.  The next segment is prepared
 *              ahead as soon as the WAL reaches the second half of the current one, so the
 *              zero-fill is normally off the acknowledgement path.  Zero writes rather than
 *              fallocate: blocks are allocated and written before WAL lands in them, as
 *              PostgreSQL's XLogFileInit does, so the data writes and fdatasyncs that follow
 *              need no metadata change.
 *   PREP_FAILED creating or zero-filling failed; the file is removed.  Not yet fatal (the
 *              segment may never be needed); fatal (on_failed) as soon as WAL is due in it.
 *   NOSPACE    creating or zero-filling failed for want of space (ENOSPC, EDQUOT); the file is
 *              removed.  Not a failure: WAL due in the segment waits in its queue, in memory,
 *              unwritten and so never acknowledged, and the spool is stalled (spool_stalled).
 *              Every NOSPACE_RETRY_MS the spool looks at the file system's free space and, once
 *              a segment fits, prepares the segment again from scratch -> PREPARING.  This is
 *              not the retry of a failed write, which is never done: the file never held WAL,
 *              it is deleted, and a new one is written and fsynced before any WAL goes in.
 *   OPEN       WAL writes (IORING_OP_WRITE, one per append piece, many per submit).
 *   RENAMING   flush_lsn passed the segment's end and nothing of it is in flight: renameat
 *              NAME.partial -> NAME, then fsync of the directory -> COMPLETE (fd closed).
 *              Renames run one at a time, in order, so a complete segment never follows a
 *              partial one on disk.
 *
 * Write and flush
 *   Appended bytes are copied into CHUNK_SIZE buffers owned by the spool and written from
 *   there; a chunk is recycled once every write from it has completed, so the memory held is
 *   what is appended and not yet written (plus a small cache of chunks).  Writes are kept in a
 *   FIFO in LSN order; write_lsn is the start of the oldest incomplete one.  A short write
 *   resubmits its remainder (not a retry: the kernel took part of it); an error or a write of
 *   0 bytes fails the spool.
 *   Into an OPEN segment the write is done at once with pwrite(2) from the loop (inline
 *   writes, the default): the segment is zero-filled, so the write is a copy into the page
 *   cache with no block allocation, and the io_uring alternative costs a hand-off to an io-wq
 *   worker thread per write (ext4 cannot take a buffered write inline from io_uring) - about
 *   1.3 context switches per commit of the sink, measured.  The completion is reported
 *   (fifo_advance, on_written) by the next spool_flush, so that the fdatasync goes out in the
 *   same loop turn, or by an SOP_ADVANCE NOP completion, never from inside spool_append.
 *   WALMIRROR_SPOOL_WRITES=uring in the environment writes through io_uring instead (writes
 *   waiting for a segment's preparation always do).
 *   Group flush: spool_flush() records the wanted position; once every write up to it has
 *   completed, ONE fdatasync (IORING_OP_FSYNC + IORING_FSYNC_DATASYNC) per file written since
 *   the previous flush batch began is issued, all in one submit; when all of them completed,
 *   flush_lsn becomes the write position the batch started from.  The fdatasyncs are issued
 *   after the writes' completions rather than linked behind them (IOSQE_IO_LINK): writes from
 *   earlier appends may already be queued or in flight, and io_uring orders nothing across
 *   separate chains; waiting for their CQEs costs one loop turn and makes the rule simple -
 *   an fdatasync issued after a write completed covers that write.  A second spool_flush()
 *   while a batch is in flight is served by the next batch.
 *
 * Failure
 *   A failed write, fdatasync, zero-fill of a needed segment, rename or directory fsync is
 *   never retried: the spool is failed (spool_failed()), on_failed is called once with a
 *   message naming the file, the LSN and the error, and everything but spool_read and
 *   spool_close is refused.  When the failure is found inside spool_append or spool_flush,
 *   on_failed is delivered from the loop (a NOP completion) so that the caller's stack is
 *   not re-entered.  spool_read keeps serving what was durable before the failure.
 *
 * Recovery (spool_open)
 *   Segment files are listed; the newest contiguous run is the spool (older files past a gap
 *   are left alone, with a warning).  Complete segments are durable by construction (renamed
 *   only after their fdatasync).  The partial ones are scanned with walfmt_scan from the start
 *   of the segment before the first of them when that one is held (so a record crossing into
 *   the partial segment has its CRC checked), else from the partial segment's start (its
 *   leading continuation skipped by xlp_rem_len).  The durable end E is the end of the last
 *   valid record, but never less than the end of the last complete segment.  Partial files
 *   wholly before E are fsynced and renamed; the one holding E is zeroed from E to its end
 *   (also re-extending a file cut short); partial files after it are removed.  Then every file
 *   and the directory are fsynced, and write_lsn = flush_lsn = E.
 *
 * Reading
 *   spool_read uses synchronous pread(2): the bytes it serves were just written and are in the
 *   page cache, and a blocking read of a few hundred KB costs less than the bookkeeping of an
 *   asynchronous one.  Partial segments are read through the spool's own descriptor; complete
 *   segments by name, with one descriptor cached for sequential readers.
 *
 * Retention
 *   After each flush batch and each spool_set_retain_lsn: complete segments are removed from
 *   the oldest while their end is at least keep_bytes behind flush_lsn and not after the retain
 *   LSN (0: not set, keep_bytes alone decides).  The segment holding the last durable byte is
 *   never removed, so a restarted spool always finds its position.  History files are never
 *   removed (only spool_remove_all does).
 *
 * Timeline switch (spool_set_timeline)
 *   Synchronous, in this order, each step durable before the next: (1) the history file
 *   (temporary file, fsync, rename, directory fsync); (2) the switch segment S in the new
 *   timeline's file, created as NAME.partial with its bytes below the switch point - those
 *   below write_lsn read from the old file (their writes completed), the rest copied from the
 *   queued writes' buffers (the FIFO covers [write_lsn, append_end) exactly) - and zeros after,
 *   then fsync of the file and the directory; (3) spool.meta with the new timeline; (4) removal
 *   of the old-timeline files of S and of any segment prepared ahead after it.  Their struct
 *   seg become orphans: out of segs[], so no later flush batch fdatasyncs them (their bytes are
 *   durable in the new file already), but their writes and preparation still in flight complete
 *   normally - the FIFO, and so write_lsn and flush_lsn, advance as before - and an orphan is
 *   freed when nothing of it is in flight.  Nothing turns the loop, so no callback runs inside
 *   spool_set_timeline.
 *   A switch is refused (-EAGAIN) while the spool is stalled for space: the owner gives it
 *   again once the WAL before it is written.
 *   Recovery handles a crash between the steps: segment files of a timeline newer than
 *   spool.meta's are removed (step 3 did not happen: the old timeline's files are intact); of
 *   two files of one segment the newer timeline's is used and the other removed (step 4 did
 *   not happen); and if the partial segment holding the durable end is of an older timeline
 *   and reaches past that timeline's switch point (its history says so, or is unknown), it is
 *   started again in the current timeline's file as in step 2, so that appends never go to an
 *   old timeline's file past its switch point.  A missing history file of the current timeline
 *   is only a warning (the history is then unknown); a damaged one fails spool_open.
 *
 * Threading and lifetime
 *   One loop thread.  spool_close() waits for the spool's SQEs still in flight by turning the
 *   loop (other completions are dispatched meanwhile); it must therefore not be called from
 *   another module's completion callback.  Called from the spool's own callbacks
 *   (on_written/on_flushed/on_failed), it defers the free to the last completion.
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "util.h"
#include "walfmt.h"

#define SPOOL_COMPONENT "spool"
#define META_NAME "spool.meta"
#define META_TMP_NAME "spool.meta.tmp"
#define META_MAX 4096
#define CHUNK_SIZE (1u << 20)    /* write buffer; an append piece never exceeds it */
#define CHUNK_CACHE 4            /* idle chunks kept for reuse */
#define ZERO_BUF_SIZE (1u << 20) /* one zero-fill write */
#define ZERO_PARALLEL 8          /* zero-fill writes in flight per segment */
#define CLOSE_WAIT_MS 30000      /* spool_close: how long to wait for SQEs in flight */
#define NOSPACE_RETRY_MS 1000    /* a segment that did not fit is tried again this often */
#define FILE_NAME_MAX (WALFMT_NAME_LEN + sizeof(WALFMT_PARTIAL_SUFFIX))
#define HISTORY_SUFFIX ".history"
#define HISTORY_TMP_SUFFIX ".history.tmp"
#define HISTORY_NAME_MAX 24       /* with ".tmp" and the NUL */
#define HISTORY_MAX (1u << 20)    /* a history file is a few lines; refuse absurd ones */
#define HISTORY_MAX_ENTRIES 65536 /* lines of history accepted */


enum seg_state {
    SEG_PREPARING,
    SEG_PREP_FAILED,
    SEG_NOSPACE,
    SEG_OPEN,
    SEG_RENAMING,
    SEG_COMPLETE,
};

struct wreq;

struct seg {
    uint64_t segno;
    uint32_t tli;
    enum seg_state state;
    int fd;             /* -1 once complete */
    bool dirty;         /* a WAL write completed since the last flush batch began */
    unsigned inflight;  /* SQEs of this segment in flight */
    int prep_err;       /* first error of the preparation */
    uint64_t zero_next; /* next offset to zero-fill */
    unsigned zero_inflight;
    unsigned sync_left;                 /* preparation fsyncs (file, directory) outstanding */
    struct wreq *wait_head, *wait_tail; /* writes waiting for the preparation */
    int nospace_err;         /* -ENOSPC/-EDQUOT while NOSPACE or being prepared again after it */
    struct seg *orphan_next; /* replaced by a timeline switch: see "Timeline switch" */
};

struct chunk {
    uint8_t *buf;
    size_t used;
    unsigned refs;      /* writes using it, +1 while it is the current chunk */
    struct chunk *next; /* free list */
};

struct wreq {
    struct wio_op op;
    struct spool *s;
    struct seg *seg;
    struct chunk *chunk;
    const uint8_t *data;
    uint64_t lsn;
    uint32_t len;
    uint32_t done;
    bool complete;
    struct wreq *next;      /* FIFO, LSN order */
    struct wreq *wait_next; /* the segment's waiting list */
};

enum sop_kind {
    SOP_ZERO,
    SOP_PREP_FSYNC,
    SOP_PREP_DIRSYNC,
    SOP_DATASYNC,
    SOP_RENAME,
    SOP_RENAME_DIRSYNC,
    SOP_DIRSYNC,
    SOP_NOTIFY,
    SOP_ADVANCE,
};

/* Every SQE that is not a WAL write. */
struct sop {
    struct wio_op op;
    struct spool *s;
    struct seg *seg;
    enum sop_kind kind;
    uint64_t off;
    uint32_t len;
    uint32_t done;
    char from[FILE_NAME_MAX]; /* SOP_RENAME: read by the kernel at submission */
    char to[FILE_NAME_MAX];
};

/* The no-space retry timer, apart from the spool so that it may outlive it (conn.c's way). */
struct spool_timer {
    struct wio_timer t; /* first */
    struct spool *s;    /* NULL once the spool is gone */
};

struct spool {
    struct wio_loop *loop;
    const struct spool_ops *ops;
    void *ctx;
    char *dir;
    int dirfd;
    uint64_t keep_bytes;
    uint64_t retain_lsn;
    struct spool_identity id;
    uint8_t *zeros; /* ZERO_BUF_SIZE zero bytes, read by the kernel */

    struct seg **segs; /* contiguous run: segs[i]->segno == segs[0]->segno + i */
    size_t nsegs, cap;
    struct seg *orphans; /* see "Timeline switch" */

    struct spool_timeline *tls; /* history, oldest first, current last (NULL: no identity) */
    size_t ntls;

    bool positioned;     /* start_lsn is meaningful (something was appended or recovered) */
    uint64_t start_lsn;  /* start of the oldest segment held */
    uint64_t append_end; /* end of the WAL accepted */
    uint64_t write_lsn;  /* contiguous written */
    uint64_t flush_lsn;  /* durable */
    uint64_t flush_req;  /* highest position spool_flush() asked for */

    struct wreq *fifo_head, *fifo_tail;
    struct chunk *cur_chunk;
    struct chunk *free_chunks;
    unsigned nfree_chunks;

    bool batch_active;
    unsigned batch_left;
    uint64_t batch_target;
    bool rename_active;

    int rd_fd; /* cached descriptor of a complete segment, for spool_read */
    uint64_t rd_segno;

    unsigned inflight; /* all SQEs of the spool in flight */
    unsigned in_cb;    /* nesting depth of the spool's completion handlers */
    bool closing;
    bool zombie; /* closed while busy: freed by the last completion */
    bool failed;
    int fail_err;
    char fail_msg[384];

    bool inline_writes;   /* WAL writes with pwrite(2) from the loop (see "Write and flush") */
    bool advance_pending; /* inline writes completed, not yet past fifo_advance */
    bool advance_queued;  /* an SOP_ADVANCE is in flight */

    struct spool_timer *retry; /* armed while a segment is NOSPACE; NULL: never needed */
    int stall_err;             /* WAL waits for space: -ENOSPC or -EDQUOT; 0: not stalled */
    uint64_t stall_since_ms;   /* monotonic */
    char stall_msg[384];
};

static void spool_destroy(struct spool *s);
static void sop_cb(struct wio_op *op, int res, unsigned flags);
static void wreq_cb(struct wio_op *op, int res, unsigned flags);
static void maybe_start_batch(struct spool *s);
static void start_renames(struct spool *s);
static void run_retention(struct spool *s);
static void orphans_settle(struct spool *s);
static int history_load(struct spool *s, char *err, size_t errlen);

/* ---- small helpers ---- */

static uint64_t
seg_start_lsn(const struct spool *s, const struct seg *g)
{
    return walfmt_seg_start(g->segno, s->id.seg_size);
}

static uint64_t
seg_end_lsn(const struct spool *s, const struct seg *g)
{
    return walfmt_seg_start(g->segno + 1, s->id.seg_size);
}

/* NAME or NAME.partial of g, per its state. */
static void
seg_file_name(const struct spool *s, const struct seg *g, bool partial, char out[FILE_NAME_MAX])
{
    walfmt_seg_name(out, g->tli, g->segno, s->id.seg_size);
    if (partial)
        strcat(out, WALFMT_PARTIAL_SUFFIX);
}

static bool
seg_is_partial(const struct seg *g)
{
    return g->state != SEG_COMPLETE;
}

static struct seg *
seg_lookup(const struct spool *s, uint64_t segno)
{
    if (s->nsegs == 0 || segno < s->segs[0]->segno || segno - s->segs[0]->segno >= s->nsegs)
        return NULL;
    return s->segs[segno - s->segs[0]->segno];
}

/* segno of the newest segment held (the caller checks nsegs > 0). */
static uint64_t
seg_last(const struct spool *s)
{
    return s->segs[s->nsegs - 1]->segno;
}

/* Index of the first segment that is not complete (nsegs if all are). */
static size_t
first_live(const struct spool *s)
{
    size_t i = s->nsegs;

    while (i > 0 && s->segs[i - 1]->state != SEG_COMPLETE)
        i--;
    return i;
}

static int
segs_push(struct spool *s, struct seg *g)
{
    if (s->nsegs == s->cap) {
        size_t cap = s->cap == 0 ? 16 : s->cap * 2;
        struct seg **p = realloc(s->segs, cap * sizeof(*p));

        if (p == NULL)
            return -ENOMEM;
        s->segs = p;
        s->cap = cap;
    }
    s->segs[s->nsegs++] = g;
    return 0;
}

static void
close_fd(int fd, const char *what)
{
    if (fd >= 0 && close(fd) != 0)
        log_warning(SPOOL_COMPONENT, "close of %s failed: %s", what, strerror(errno));
}

static int
fsync_dir(struct spool *s)
{
    if (fsync(s->dirfd) != 0) {
        int err = -errno;

        log_error(SPOOL_COMPONENT, "fsync of directory %s failed: %s", s->dir, strerror(-err));
        return err;
    }
    return 0;
}

/* ---- failure ---- */

static void notify_owner_failed(struct spool *s);

static void spool_fail(struct spool *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fails the spool once: logs, refuses everything afterwards, and tells the owner. */
static void
spool_fail(struct spool *s, int err, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (s->failed)
        return;
    s->failed = true;
    s->fail_err = err < 0 ? err : -EIO;
    va_start(ap, fmt);
    n = vsnprintf(s->fail_msg, sizeof(s->fail_msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(s->fail_msg, sizeof(s->fail_msg), "spool failure: %s", strerror(-s->fail_err));
    log_error(SPOOL_COMPONENT,
              "%s; the spool in %s accepts nothing more (durable up to " LSN_FMT ")",
              s->fail_msg, s->dir, LSN_ARGS(s->flush_lsn));
    if (s->closing)
        return;
    if (s->in_cb > 0) {
        s->ops->on_failed(s->ctx, s->fail_err, s->fail_msg);
        return;
    }
    notify_owner_failed(s);
}

/* ---- SQE helpers ---- */

static struct sop *
sop_new(struct spool *s, struct seg *g, enum sop_kind kind)
{
    struct sop *o = calloc(1, sizeof(*o));

    if (o == NULL)
        return NULL;
    o->op.cb = sop_cb;
    o->s = s;
    o->seg = g;
    o->kind = kind;
    return o;
}

/* Takes an SQE for o (counted in flight); NULL (o freed) if the ring refuses. */
static struct io_uring_sqe *
sop_sqe(struct spool *s, struct sop *o)
{
    struct io_uring_sqe *sqe = wio_sqe(s->loop, &o->op);

    if (sqe == NULL) {
        free(o);
        return NULL;
    }
    s->inflight++;
    if (o->seg != NULL)
        o->seg->inflight++;
    return sqe;
}

/* Delivers on_failed from the loop rather than from the caller's stack. */
static void
notify_owner_failed(struct spool *s)
{
    struct sop *o = sop_new(s, NULL, SOP_NOTIFY);
    struct io_uring_sqe *sqe = o != NULL ? sop_sqe(s, o) : NULL;

    if (sqe == NULL) {
        s->ops->on_failed(s->ctx, s->fail_err, s->fail_msg);
        return;
    }
    io_uring_prep_nop(sqe);
}

/* Issues an fsync (datasync or full) of fd for o. */
static int
sop_fsync(struct spool *s, struct seg *g, int fd, enum sop_kind kind, bool datasync)
{
    struct sop *o = sop_new(s, g, kind);
    struct io_uring_sqe *sqe;

    if (o == NULL)
        return -ENOMEM;
    sqe = sop_sqe(s, o);
    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
    return 0;
}

/* ---- write buffers ---- */

static struct chunk *
chunk_get(struct spool *s)
{
    struct chunk *c = s->free_chunks;

    if (c != NULL) {
        s->free_chunks = c->next;
        s->nfree_chunks--;
    } else {
        c = calloc(1, sizeof(*c));
        if (c == NULL)
            return NULL;
        c->buf = malloc(CHUNK_SIZE);
        if (c->buf == NULL) {
            free(c);
            return NULL;
        }
    }
    c->used = 0;
    c->refs = 1; /* the spool's "current chunk" reference */
    c->next = NULL;
    return c;
}

static void
chunk_unref(struct spool *s, struct chunk *c)
{
    if (--c->refs > 0)
        return;
    if (s->nfree_chunks < CHUNK_CACHE && !s->closing) {
        c->next = s->free_chunks;
        s->free_chunks = c;
        s->nfree_chunks++;
        return;
    }
    free(c->buf);
    free(c);
}

/* ---- segment preparation ---- */

static void prep_continue(struct spool *s, struct seg *g);
static void nospace_enter(struct spool *s, struct seg *g);

static bool
is_nospace(int err)
{
    return err == -ENOSPC || err == -EDQUOT;
}

/* Ends a failed preparation once nothing of it is in flight. */
static void
prep_fail_settle(struct spool *s, struct seg *g)
{
    char name[FILE_NAME_MAX];

    if (g->zero_inflight > 0 || g->sync_left > 0 || g->state == SEG_PREP_FAILED ||
        g->state == SEG_NOSPACE)
        return;
    seg_file_name(s, g, true, name);
    if (is_nospace(g->prep_err) && !s->closing && !s->failed) {
        nospace_enter(s, g);
        return;
    }
    g->state = SEG_PREP_FAILED;
    if (s->closing && g->prep_err == 0) {
        /* Closed before it was ready; recovery removes the file (it holds no WAL). */
        close_fd(g->fd, name);
        g->fd = -1;
        return;
    }
    if (g->fd >= 0) {
        close_fd(g->fd, name);
        g->fd = -1;
        /* It holds no WAL: give the space back. */
        if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT)
            log_warning(SPOOL_COMPONENT, "cannot remove %s/%s: %s", s->dir, name, strerror(errno));
    }
    if (g->wait_head != NULL)
        spool_fail(s, g->prep_err, "preparing %s for WAL at " LSN_FMT " failed: %s", name,
             LSN_ARGS(seg_start_lsn(s, g)), strerror(-g->prep_err));
    else
        log_warning(SPOOL_COMPONENT, "preparing %s failed: %s (fatal once WAL is due in it)", name,
                    strerror(-g->prep_err));
}

static void
prep_error(struct spool *s, struct seg *g, int err)
{
    if (g->prep_err == 0)
        g->prep_err = err;
    prep_fail_settle(s, g);
}

/* ---- no space: stall, look again, resume ---- */

/*
 * Recomputes whether WAL waits for space (a segment NOSPACE, or being prepared again after it,
 * with writes waiting); logs the change, and reports the end of a stall to the owner.  A stall
 * begins inside spool_append (the owner asks spool_stalled) or in a completion; it ends only in
 * a completion (prep_done), so on_unstalled always comes from the loop.
 */
static void
stall_update(struct spool *s)
{
    const struct seg *w = NULL;
    char name[FILE_NAME_MAX];

    for (size_t i = first_live(s); i < s->nsegs && w == NULL; i++)
        if (s->segs[i]->wait_head != NULL && s->segs[i]->nospace_err != 0)
            w = s->segs[i];
    if (w != NULL && s->stall_err == 0) {
        seg_file_name(s, w, true, name);
        s->stall_err = w->nospace_err;
        s->stall_since_ms = clock_mono_ms();
        snprintf(s->stall_msg, sizeof(s->stall_msg),
                 "no space for the spool in %s: cannot prepare %s (%s); WAL from " LSN_FMT
                 " waits, unwritten and unacknowledged, until a segment's worth is free",
                 s->dir, name, strerror(-w->nospace_err), LSN_ARGS(w->wait_head->lsn));
        log_error(SPOOL_COMPONENT, "%s", s->stall_msg);
    } else if (w == NULL && s->stall_err != 0) {
        log_info(SPOOL_COMPONENT,
                 "the spool in %s has space again after %.1f s: writing the WAL that waited",
                 s->dir, (double)(clock_mono_ms() - s->stall_since_ms) / 1000.0);
        s->stall_err = 0;
        s->stall_msg[0] = '\0';
        if (s->ops->on_unstalled != NULL)
            s->ops->on_unstalled(s->ctx);
    }
}

static void retry_fire(struct wio_timer *t);

static void
retry_release(struct wio_timer *t)
{
    free((struct spool_timer *)t);
}

/* Arms the retry timer unless it is armed. */
static void
retry_arm(struct spool *s)
{
    if (s->retry == NULL) {
        s->retry = calloc(1, sizeof(*s->retry));
        if (s->retry == NULL) {
            spool_fail(s, -ENOMEM, "out of memory for the spool's retry timer");
            return;
        }
        s->retry->s = s;
    }
    if (s->retry->t.armed)
        return;
    if (wio_timer_arm(s->loop, &s->retry->t, NOSPACE_RETRY_MS, retry_fire) < 0)
        spool_fail(s, -EBUSY, "cannot arm the spool's retry timer");
}

/* The preparation of g found no space: the file is gone (prep_fail_settle); try again later. */
static void
nospace_enter(struct spool *s, struct seg *g)
{
    char name[FILE_NAME_MAX];

    seg_file_name(s, g, true, name);
    if (g->fd >= 0) {
        close_fd(g->fd, name);
        g->fd = -1;
        if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT)
            log_warning(SPOOL_COMPONENT, "cannot remove %s/%s: %s", s->dir, name, strerror(errno));
    }
    if (g->nospace_err == 0 && g->wait_head == NULL)
        log_warning(SPOOL_COMPONENT,
                    "the spool in %s is nearly full: cannot prepare %s ahead (%s); trying again "
                    "every %u ms",
                    s->dir, name, strerror(-g->prep_err), NOSPACE_RETRY_MS);
    else
        log_debug(SPOOL_COMPONENT, "%s/%s still does not fit: %s", s->dir, name,
                  strerror(-g->prep_err));
    g->state = SEG_NOSPACE;
    g->nospace_err = g->prep_err;
    g->prep_err = 0;
    g->zero_next = 0;
    stall_update(s);
    retry_arm(s);
}

/* Starts preparing g (PREPARING, its file created empty); errors settle as in any preparation. */
static void
prep_start(struct spool *s, struct seg *g)
{
    char name[FILE_NAME_MAX];

    seg_file_name(s, g, true, name);
    g->state = SEG_PREPARING;
    g->fd = openat(s->dirfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (g->fd < 0) {
        g->prep_err = -errno;
        log_debug(SPOOL_COMPONENT, "cannot create %s/%s: %s", s->dir, name, strerror(errno));
        prep_fail_settle(s, g);
        return;
    }
    log_debug(SPOOL_COMPONENT, "preparing %s for " LSN_FMT, name,
              LSN_ARGS(seg_start_lsn(s, g)));
    prep_continue(s, g);
}

/* Every NOSPACE_RETRY_MS while a segment is NOSPACE: prepare it again if it now fits. */
static void
retry_fire(struct wio_timer *t)
{
    struct spool *s = ((struct spool_timer *)t)->s;
    struct statvfs fs;
    bool waiting = false;

    if (s == NULL || s->closing || s->failed)
        return;
    if (fstatvfs(s->dirfd, &fs) == 0 &&
        (uint64_t)fs.f_bavail * fs.f_frsize < (uint64_t)s->id.seg_size) {
        retry_arm(s); /* a segment does not fit yet: do not fill the disk with zeros again */
        return;
    }
    s->in_cb++;
    for (size_t i = first_live(s); i < s->nsegs; i++) {
        struct seg *g = s->segs[i];

        if (g->state != SEG_NOSPACE)
            continue;
        if (waiting) {
            retry_arm(s); /* one segment at a time: the first may take all there is */
            break;
        }
        prep_start(s, g);
        waiting = true;
    }
    s->in_cb--;
    if (s->zombie && s->inflight == 0 && s->in_cb == 0)
        spool_destroy(s);
}

int
spool_stalled(const struct spool *s, const char **what)
{
    if (what != NULL)
        *what = s->stall_msg;
    return s->stall_err;
}

static int
wreq_submit(struct spool *s, struct wreq *w)
{
    struct io_uring_sqe *sqe = wio_sqe(s->loop, &w->op);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_write(sqe, w->seg->fd, w->data + w->done, w->len - w->done,
                        walfmt_seg_offset(w->lsn, s->id.seg_size) + (uint64_t)w->done);
    s->inflight++;
    w->seg->inflight++;
    log_debug(SPOOL_COMPONENT, "write " LSN_FMT " +%u to segment %" PRIu64,
              LSN_ARGS(w->lsn + w->done), (unsigned)(w->len - w->done), w->seg->segno);
    return 0;
}

/* The segment is ready: submit the writes that waited for it. */
static void
prep_done(struct spool *s, struct seg *g)
{
    char name[FILE_NAME_MAX];

    g->state = SEG_OPEN;
    seg_file_name(s, g, true, name);
    log_debug(SPOOL_COMPONENT, "%s zero-filled and durable", name);
    while (g->wait_head != NULL) {
        struct wreq *w = g->wait_head;

        g->wait_head = w->wait_next;
        w->wait_next = NULL;
        if (s->failed || s->closing)
            continue; /* left in the FIFO, never written */
        if (wreq_submit(s, w) < 0)
            spool_fail(s, -EBUSY, "cannot queue the write of " LSN_FMT " to %s",
                 LSN_ARGS(w->lsn), name);
    }
    g->wait_tail = NULL;
    if (g->nospace_err != 0) {
        g->nospace_err = 0;
        log_info(SPOOL_COMPONENT, "%s/%s prepared: there is space again", s->dir, name);
        stall_update(s);
    }
}

/* Issues zero-fill writes up to ZERO_PARALLEL in flight, then the fsyncs. */
static void
prep_continue(struct spool *s, struct seg *g)
{
    if (g->prep_err != 0 || s->closing) {
        prep_fail_settle(s, g);
        return;
    }
    while (g->zero_next < s->id.seg_size && g->zero_inflight < ZERO_PARALLEL) {
        struct sop *o = sop_new(s, g, SOP_ZERO);
        struct io_uring_sqe *sqe = o != NULL ? sop_sqe(s, o) : NULL;
        uint64_t left = s->id.seg_size - g->zero_next;

        if (sqe == NULL) {
            prep_error(s, g, o == NULL ? -ENOMEM : -EBUSY);
            return;
        }
        o->off = g->zero_next;
        o->len = left < ZERO_BUF_SIZE ? (uint32_t)left : ZERO_BUF_SIZE;
        io_uring_prep_write(sqe, g->fd, s->zeros, o->len, o->off);
        g->zero_next += o->len;
        g->zero_inflight++;
    }
    if (g->zero_next < s->id.seg_size || g->zero_inflight > 0 || g->sync_left > 0)
        return;
    /* All zeros written: make the file and its name durable before WAL goes in. */
    if (sop_fsync(s, g, g->fd, SOP_PREP_FSYNC, false) < 0) {
        prep_error(s, g, -EBUSY);
        return;
    }
    g->sync_left++;
    if (sop_fsync(s, g, s->dirfd, SOP_PREP_DIRSYNC, false) < 0) {
        prep_error(s, g, -EBUSY);
        return;
    }
    g->sync_left++;
}

/* Creates segment segno (the next after the last held, or the first) and starts preparing it. */
static int
seg_create(struct spool *s, uint64_t segno, struct seg **out)
{
    struct seg *g = calloc(1, sizeof(*g));
    int ret;

    if (g == NULL)
        return -ENOMEM;
    g->segno = segno;
    g->tli = s->id.timeline;
    g->state = SEG_PREPARING;
    ret = segs_push(s, g);
    if (ret < 0) {
        free(g);
        return ret;
    }
    prep_start(s, g);
    *out = g;
    return 0;
}

/* ---- WAL writes ---- */

/* Pops the written writes off the FIFO; reports a new write position. */
static void
fifo_advance(struct spool *s)
{
    uint64_t pos;

    while (s->fifo_head != NULL && s->fifo_head->complete) {
        struct wreq *w = s->fifo_head;

        s->fifo_head = w->next;
        if (s->fifo_head == NULL)
            s->fifo_tail = NULL;
        chunk_unref(s, w->chunk);
        free(w);
    }
    if (s->failed || s->closing)
        return;
    pos = s->fifo_head != NULL ? s->fifo_head->lsn : s->append_end;
    if (pos > s->write_lsn) {
        s->write_lsn = pos;
        s->ops->on_written(s->ctx, pos);
    }
}

static void
wreq_cb(struct wio_op *op, int res, unsigned flags)
{
    struct wreq *w = container_of(op, struct wreq, op);
    struct spool *s = w->s;
    struct seg *g = w->seg;

    (void)flags;
    s->inflight--;
    g->inflight--;
    s->in_cb++;
    if (res <= 0 || s->failed || s->closing) {
        if (res <= 0 && !s->failed) {
            char name[FILE_NAME_MAX];
            int err = res < 0 ? res : -EIO;

            seg_file_name(s, g, true, name);
            if (s->closing)
                log_error(SPOOL_COMPONENT,
                          "write of " LSN_FMT " (%u bytes) to %s failed while closing: %s",
                          LSN_ARGS(w->lsn + w->done), (unsigned)(w->len - w->done), name,
                          strerror(-err));
            else
                spool_fail(s, err, "write of " LSN_FMT " (%u bytes) to %s failed: %s",
                     LSN_ARGS(w->lsn + w->done), (unsigned)(w->len - w->done), name,
                     strerror(-err));
        }
        w->complete = true; /* released; never counted as written */
    } else if ((uint32_t)res < w->len - w->done) {
        w->done += (uint32_t)res;
        log_debug(SPOOL_COMPONENT, "short write at " LSN_FMT ": resubmitting %u bytes",
                  LSN_ARGS(w->lsn + w->done), (unsigned)(w->len - w->done));
        if (wreq_submit(s, w) < 0) {
            w->complete = true;
            spool_fail(s, -EBUSY, "cannot queue the rest of the write at " LSN_FMT,
                 LSN_ARGS(w->lsn + w->done));
        }
    } else {
        w->done = w->len;
        w->complete = true;
        g->dirty = true;
    }
    fifo_advance(s);
    if (!s->closing)
        maybe_start_batch(s);
    if (s->orphans != NULL && s->in_cb == 1)
        orphans_settle(s);
    s->in_cb--;
    if (s->zombie && s->inflight == 0 && s->in_cb == 0)
        spool_destroy(s);
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/*
 * Writes w at once with pwrite(2): into a segment that is OPEN (zero-filled, so the write
 * needs no block allocation and lands in the page cache).  Its completion is reported by
 * fifo_advance from spool_flush, or from an SOP_ADVANCE NOP completion when nobody asks for a
 * flush, never from the caller's stack.
 */
static int
write_inline(struct spool *s, struct wreq *w)
{
    int ret = pwrite_full(w->seg->fd, w->data, w->len,
                          walfmt_seg_offset(w->lsn, s->id.seg_size));

    w->complete = true;
    if (ret < 0) {
        char name[FILE_NAME_MAX];

        seg_file_name(s, w->seg, true, name);
        spool_fail(s, ret, "write of " LSN_FMT " (%u bytes) to %s failed: %s",
             LSN_ARGS(w->lsn), (unsigned)w->len, name, strerror(-ret));
        return s->fail_err;
    }
    w->done = w->len;
    w->seg->dirty = true;
    s->advance_pending = true;
    if (!s->advance_queued) {
        struct sop *o = sop_new(s, NULL, SOP_ADVANCE);
        struct io_uring_sqe *sqe = o != NULL ? sop_sqe(s, o) : NULL;

        if (sqe == NULL) {
            spool_fail(s, o == NULL ? -ENOMEM : -EBUSY, "cannot queue the report of the write of "
                 LSN_FMT, LSN_ARGS(w->lsn));
            return s->fail_err;
        }
        io_uring_prep_nop(sqe);
        s->advance_queued = true;
    }
    return 0;
}

/* Copies one piece (at most CHUNK_SIZE bytes, inside segment g) and queues its write. */
static int
queue_write(struct spool *s, struct seg *g, uint64_t lsn, const uint8_t *p, uint32_t n)
{
    struct chunk *c = s->cur_chunk;
    struct wreq *w;

    if (c == NULL || CHUNK_SIZE - c->used < n) {
        struct chunk *fresh = chunk_get(s);

        if (fresh == NULL)
            return -ENOMEM;
        if (c != NULL)
            chunk_unref(s, c);
        s->cur_chunk = c = fresh;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    memcpy(c->buf + c->used, p, n);
    w->op.cb = wreq_cb;
    w->s = s;
    w->seg = g;
    w->chunk = c;
    w->data = c->buf + c->used;
    w->lsn = lsn;
    w->len = n;
    c->used += n;
    c->refs++;
    if (s->fifo_tail != NULL)
        s->fifo_tail->next = w;
    else
        s->fifo_head = w;
    s->fifo_tail = w;
    if (g->state == SEG_PREPARING || g->state == SEG_NOSPACE) {
        if (g->wait_tail != NULL)
            g->wait_tail->wait_next = w;
        else
            g->wait_head = w;
        g->wait_tail = w;
        if (g->nospace_err != 0 && s->stall_err == 0)
            stall_update(s);
        return 0;
    }
    if (s->inline_writes)
        return write_inline(s, w);
    if (wreq_submit(s, w) < 0) {
        char name[FILE_NAME_MAX];

        seg_file_name(s, g, true, name);
        spool_fail(s, -EBUSY, "cannot queue the write of " LSN_FMT " to %s", LSN_ARGS(lsn),
             name);
        return s->fail_err;
    }
    return 0;
}

int
spool_append(struct spool *s, uint64_t lsn, const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t seg_size = s->id.seg_size;
    uint64_t end;

    if (s->failed)
        return s->fail_err;
    if (s->id.system_id == 0) {
        log_error(SPOOL_COMPONENT,
                  "WAL at " LSN_FMT " appended to %s before its identity is known",
                  LSN_ARGS(lsn), s->dir);
        return -EINVAL;
    }
    if (len == 0)
        return 0;
    if (UINT64_MAX - lsn < len)
        return -EINVAL;
    end = lsn + len;
    if (!s->positioned) {
        if (walfmt_seg_offset(lsn, seg_size) != 0) {
            log_error(SPOOL_COMPONENT,
                      "the empty spool in %s must start at a segment boundary, got WAL "
                      "at " LSN_FMT,
                      s->dir, LSN_ARGS(lsn));
            return -EINVAL;
        }
        s->positioned = true;
        s->start_lsn = s->append_end = s->write_lsn = s->flush_lsn = s->flush_req = lsn;
        log_info(SPOOL_COMPONENT, "spool in %s starts at " LSN_FMT, s->dir,
                 LSN_ARGS(lsn));
    }
    if (lsn > s->append_end) {
        log_error(SPOOL_COMPONENT,
                  "gap: WAL at " LSN_FMT " but the spool in %s ends at " LSN_FMT,
                  LSN_ARGS(lsn), s->dir, LSN_ARGS(s->append_end));
        return -EINVAL;
    }
    if (end <= s->append_end)
        return 0;
    p += s->append_end - lsn;
    lsn = s->append_end;

    while (lsn < end) {
        uint64_t segno = walfmt_segno(lsn, seg_size);
        uint64_t seg_end = walfmt_seg_start(segno + 1, seg_size);
        struct seg *g = seg_lookup(s, segno);
        uint64_t n64 = end - lsn;
        uint32_t n;
        int ret;

        if (g == NULL) {
            ret = seg_create(s, segno, &g);
            if (ret < 0)
                return ret;
        }
        if (g->state == SEG_PREP_FAILED) {
            char name[FILE_NAME_MAX];

            seg_file_name(s, g, true, name);
            spool_fail(s, g->prep_err, "preparing %s for WAL at " LSN_FMT " failed: %s", name,
                 LSN_ARGS(lsn), strerror(-g->prep_err));
            return s->fail_err;
        }
        if (g->state != SEG_PREPARING && g->state != SEG_NOSPACE && g->state != SEG_OPEN) {
            log_error(SPOOL_COMPONENT, "WAL at " LSN_FMT " for completed segment %" PRIu64,
                      LSN_ARGS(lsn), segno);
            return -EINVAL;
        }
        if (n64 > seg_end - lsn)
            n64 = seg_end - lsn;
        n = n64 > CHUNK_SIZE ? CHUNK_SIZE : (uint32_t)n64;
        ret = queue_write(s, g, lsn, p, n);
        if (ret < 0)
            return ret;
        lsn += n;
        p += n;
        s->append_end = lsn;
        if (s->failed)
            return s->fail_err;

        /* Prepare the next segment ahead once the WAL is in this one's second half. */
        if (walfmt_seg_offset(lsn, seg_size) >= seg_size / 2 && segno == seg_last(s)) {
            struct seg *next;

            ret = seg_create(s, segno + 1, &next);
            if (ret < 0)
                log_warning(SPOOL_COMPONENT, "cannot prepare segment %" PRIu64 " ahead: %s",
                            segno + 1, strerror(-ret));
        }
    }
    return 0;
}

/* ---- group flush ---- */

static void
batch_done(struct spool *s)
{
    s->batch_active = false;
    if (s->batch_target > s->flush_lsn) {
        s->flush_lsn = s->batch_target;
        log_debug(SPOOL_COMPONENT, "durable up to " LSN_FMT, LSN_ARGS(s->flush_lsn));
        s->ops->on_flushed(s->ctx, s->flush_lsn);
        if (s->closing || s->failed)
            return;
    }
    start_renames(s);
    run_retention(s);
    maybe_start_batch(s);
}

/*
 * Starts a flush batch when one is wanted, none is in flight and every write up to the wanted
 * position has completed: one fdatasync per file written since the previous batch began.
 */
static void
maybe_start_batch(struct spool *s)
{
    unsigned n = 0;

    if (s->failed || s->closing || s->batch_active || s->flush_req <= s->flush_lsn ||
        s->write_lsn < s->flush_req)
        return;
    s->batch_active = true;
    s->batch_target = s->write_lsn;
    s->batch_left = 0;
    for (size_t i = first_live(s); i < s->nsegs; i++) {
        struct seg *g = s->segs[i];

        if (!g->dirty || g->fd < 0)
            continue;
        g->dirty = false;
        if (sop_fsync(s, g, g->fd, SOP_DATASYNC, true) < 0) {
            char name[FILE_NAME_MAX];

            seg_file_name(s, g, true, name);
            spool_fail(s, -EBUSY, "cannot queue the fdatasync of %s (flush to " LSN_FMT ")", name,
                 LSN_ARGS(s->batch_target));
            return;
        }
        s->batch_left++;
        n++;
    }
    if (n == 0) {
        /* Nothing written since the last batch began (so it is all durable already): a NOP
         * completes the batch, so that on_flushed still comes from the loop. */
        struct sop *o = sop_new(s, NULL, SOP_DATASYNC);
        struct io_uring_sqe *sqe = o != NULL ? sop_sqe(s, o) : NULL;

        if (sqe == NULL) {
            spool_fail(s, o == NULL ? -ENOMEM : -EBUSY,
                 "cannot queue the completion of the flush to " LSN_FMT,
                 LSN_ARGS(s->batch_target));
            return;
        }
        io_uring_prep_nop(sqe);
        s->batch_left = 1;
    }
    log_debug(SPOOL_COMPONENT, "flush to " LSN_FMT ": %u fdatasync issued",
              LSN_ARGS(s->batch_target), n);
}

int
spool_flush(struct spool *s)
{
    if (s->failed)
        return s->fail_err;
    if (s->append_end > s->flush_req)
        s->flush_req = s->append_end;
    if (s->advance_pending) {
        /* Inline writes are done: the fdatasync can go out in this same turn. */
        s->advance_pending = false;
        fifo_advance(s);
    }
    maybe_start_batch(s);
    return s->failed ? s->fail_err : 0;
}

/* ---- rename of completed segments ---- */

static void
start_renames(struct spool *s)
{
    struct io_uring_sqe *sqe;
    struct sop *o;
    struct seg *g = NULL;
    size_t i = first_live(s);

    if (s->rename_active || s->failed || s->closing || i >= s->nsegs)
        return;
    g = s->segs[i];
    if (g->state != SEG_OPEN || seg_end_lsn(s, g) > s->flush_lsn || g->inflight > 0)
        return;
    o = sop_new(s, g, SOP_RENAME);
    sqe = o != NULL ? sop_sqe(s, o) : NULL;
    if (sqe == NULL) {
        char name[FILE_NAME_MAX];

        seg_file_name(s, g, true, name);
        spool_fail(s, o == NULL ? -ENOMEM : -EBUSY, "cannot queue the rename of %s", name);
        return;
    }
    seg_file_name(s, g, true, o->from);
    seg_file_name(s, g, false, o->to);
    io_uring_prep_renameat(sqe, s->dirfd, o->from, s->dirfd, o->to, 0);
    g->state = SEG_RENAMING;
    s->rename_active = true;
}

static void
rename_done(struct spool *s, struct seg *g, const char *name)
{
    close_fd(g->fd, name);
    g->fd = -1;
    g->state = SEG_COMPLETE;
    s->rename_active = false;
    log_info(SPOOL_COMPONENT, "%s complete and durable (" LSN_FMT " .. " LSN_FMT ")",
             name, LSN_ARGS(seg_start_lsn(s, g)), LSN_ARGS(seg_end_lsn(s, g)));
    start_renames(s);
    run_retention(s);
}

/* ---- completions of everything but WAL writes ---- */

static void
sop_cb(struct wio_op *op, int res, unsigned flags)
{
    struct sop *o = container_of(op, struct sop, op);
    struct spool *s = o->s;
    struct seg *g = o->seg;
    char name[FILE_NAME_MAX] = "";

    (void)flags;
    s->inflight--;
    if (g != NULL) {
        g->inflight--;
        seg_file_name(s, g, true, name);
    }
    s->in_cb++;
    switch (o->kind) {
    case SOP_ZERO:
        g->zero_inflight--;
        if (res <= 0) {
            prep_error(s, g, res < 0 ? res : -EIO);
        } else if ((uint32_t)res < o->len - o->done) {
            /* Short: the rest of this piece goes out with the next zero writes. */
            o->done += (uint32_t)res;
            if (!s->closing && g->prep_err == 0) {
                struct sop *rest = sop_new(s, g, SOP_ZERO);
                struct io_uring_sqe *sqe = rest != NULL ? sop_sqe(s, rest) : NULL;

                if (sqe == NULL) {
                    prep_error(s, g, -EBUSY);
                } else {
                    rest->off = o->off + o->done;
                    rest->len = o->len - o->done;
                    io_uring_prep_write(sqe, g->fd, s->zeros, rest->len, rest->off);
                    g->zero_inflight++;
                }
            } else {
                prep_fail_settle(s, g);
            }
        } else {
            prep_continue(s, g);
        }
        break;
    case SOP_PREP_FSYNC:
    case SOP_PREP_DIRSYNC:
        g->sync_left--;
        if (res < 0) {
            prep_error(s, g, res);
        } else if (g->prep_err != 0 || s->closing) {
            prep_fail_settle(s, g);
        } else if (g->sync_left == 0) {
            prep_done(s, g);
        }
        break;
    case SOP_DATASYNC:
        if (res < 0) {
            if (s->closing)
                log_error(SPOOL_COMPONENT, "fdatasync of %s failed while closing: %s", name,
                          strerror(-res));
            else
                spool_fail(s, res, "fdatasync of %s (flush to " LSN_FMT ") failed: %s", name,
                     LSN_ARGS(s->batch_target), strerror(-res));
        } else {
            if (g != NULL)
                log_debug(SPOOL_COMPONENT, "fdatasync of %s done", name);
            if (--s->batch_left == 0 && !s->failed && !s->closing)
                batch_done(s);
        }
        break;
    case SOP_RENAME:
        if (res < 0) {
            if (s->closing)
                log_error(SPOOL_COMPONENT, "renaming %s to %s failed while closing: %s", o->from,
                          o->to, strerror(-res));
            else
                spool_fail(s, res, "renaming %s to %s failed: %s", o->from, o->to, strerror(-res));
        } else if (s->closing || s->failed) {
            /* Renamed; its directory fsync will not happen, which recovery copes with. */
            g->state = SEG_COMPLETE;
            close_fd(g->fd, o->to);
            g->fd = -1;
        } else if (sop_fsync(s, g, s->dirfd, SOP_RENAME_DIRSYNC, false) < 0) {
            spool_fail(s, -EBUSY, "cannot queue the fsync of %s after renaming %s", s->dir, o->to);
        }
        break;
    case SOP_RENAME_DIRSYNC: {
        char done[FILE_NAME_MAX];

        seg_file_name(s, g, false, done);
        if (res < 0 && !s->closing) {
            spool_fail(s, res, "fsync of directory %s after renaming %s failed: %s", s->dir, done,
                 strerror(-res));
        } else if (s->closing || s->failed) {
            g->state = SEG_COMPLETE;
            close_fd(g->fd, done);
            g->fd = -1;
        } else {
            rename_done(s, g, done);
        }
        break;
    }
    case SOP_DIRSYNC:
        if (res < 0)
            log_error(SPOOL_COMPONENT, "fsync of directory %s after removing segments failed: %s",
                      s->dir, strerror(-res));
        break;
    case SOP_NOTIFY:
        if (!s->closing)
            s->ops->on_failed(s->ctx, s->fail_err, s->fail_msg);
        break;
    case SOP_ADVANCE:
        s->advance_queued = false;
        if (s->advance_pending && !s->closing) {
            s->advance_pending = false;
            fifo_advance(s);
            maybe_start_batch(s);
        }
        break;
    }
    if (s->orphans != NULL && s->in_cb == 1)
        orphans_settle(s);
    free(o);
    s->in_cb--;
    if (s->zombie && s->inflight == 0 && s->in_cb == 0)
        spool_destroy(s);
}

/* ---- retention ---- */

static void
rd_cache_drop(struct spool *s)
{
    if (s->rd_fd >= 0)
        close_fd(s->rd_fd, "a spool segment");
    s->rd_fd = -1;
}

static void
run_retention(struct spool *s)
{
    unsigned removed = 0;

    if (s->failed || s->closing)
        return;
    while (s->nsegs > 1) {
        struct seg *g = s->segs[0];
        uint64_t end = seg_end_lsn(s, g);
        char name[FILE_NAME_MAX];

        /* Never the segment holding the last durable byte, nor one within keep_bytes of the
         * flush position, nor one the standby may still need. */
        if (g->state != SEG_COMPLETE || end >= s->flush_lsn || s->flush_lsn - end < s->keep_bytes ||
            (s->retain_lsn != 0 && end > s->retain_lsn))
            break;
        seg_file_name(s, g, false, name);
        if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT) {
            log_warning(SPOOL_COMPONENT, "cannot remove %s/%s: %s", s->dir, name, strerror(errno));
            break;
        }
        log_info(SPOOL_COMPONENT,
                 "removed %s (" LSN_FMT " .. " LSN_FMT
                 "): durable up to " LSN_FMT ", keeping %" PRIu64
                 " bytes, standby needs %s" LSN_FMT,
                 name, LSN_ARGS(seg_start_lsn(s, g)), LSN_ARGS(end),
                 LSN_ARGS(s->flush_lsn), s->keep_bytes,
                 s->retain_lsn != 0 ? "" : "(not set) ", LSN_ARGS(s->retain_lsn));
        if (s->rd_fd >= 0 && s->rd_segno == g->segno)
            rd_cache_drop(s);
        free(g);
        memmove(s->segs, s->segs + 1, (s->nsegs - 1) * sizeof(*s->segs));
        s->nsegs--;
        s->start_lsn = end;
        removed++;
    }
    /* Not needed for correctness (recovery copes with a file that comes back), so a failure
     * is only logged. */
    if (removed > 0 && sop_fsync(s, NULL, s->dirfd, SOP_DIRSYNC, false) < 0)
        log_warning(SPOOL_COMPONENT, "cannot queue the fsync of %s after removing segments",
                    s->dir);
}

void
spool_set_retain_lsn(struct spool *s, uint64_t lsn)
{
    s->retain_lsn = lsn;
    run_retention(s);
}

/* ---- reading ---- */

/* A descriptor for reading segment g: its own while partial, else a cached one by name. */
static int
read_fd(struct spool *s, struct seg *g)
{
    char name[FILE_NAME_MAX];

    if (g->fd >= 0)
        return g->fd;
    if (s->rd_fd >= 0 && s->rd_segno == g->segno)
        return s->rd_fd;
    rd_cache_drop(s);
    seg_file_name(s, g, seg_is_partial(g), name);
    s->rd_fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (s->rd_fd < 0) {
        int err = -errno;

        log_error(SPOOL_COMPONENT, "cannot open %s/%s: %s", s->dir, name, strerror(-err));
        return err;
    }
    s->rd_segno = g->segno;
    return s->rd_fd;
}

ssize_t
spool_read(struct spool *s, uint64_t lsn, void *buf, size_t len)
{
    uint8_t *out = buf;
    uint64_t n;
    size_t done = 0;

    if (!s->positioned)
        return 0; /* nothing held yet: every position is at or after the start */
    if (lsn < s->start_lsn)
        return -ENOENT;
    if (lsn >= s->flush_lsn || len == 0)
        return 0;
    n = s->flush_lsn - lsn;
    if (n > len)
        n = len;
    if (n > SSIZE_MAX)
        n = SSIZE_MAX;
    while (done < n) {
        uint64_t pos = lsn + done;
        struct seg *g = seg_lookup(s, walfmt_segno(pos, s->id.seg_size));
        uint64_t m;
        ssize_t r;
        int fd;

        if (g == NULL)
            return -ENOENT; /* cannot happen: [start, flush) is held */
        fd = read_fd(s, g);
        if (fd < 0)
            return fd;
        m = seg_end_lsn(s, g) - pos;
        if (m > n - done)
            m = n - done;
        r = pread(fd, out + done, (size_t)m, (off_t)walfmt_seg_offset(pos, s->id.seg_size));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            char name[FILE_NAME_MAX];
            int err = r < 0 ? -errno : -EIO;

            seg_file_name(s, g, seg_is_partial(g), name);
            log_error(SPOOL_COMPONENT, "read of " LSN_FMT " from %s failed: %s",
                      LSN_ARGS(pos), name, r < 0 ? strerror(-err) : "file too short");
            return err;
        }
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* ---- identity ---- */

/* Writes spool.meta atomically: temporary file, fsync, rename, directory fsync. */
static int
meta_write(struct spool *s, const struct spool_identity *id)
{
    char text[256];
    int fd, ret, n;

    n = snprintf(text, sizeof(text),
                 "# walmirror spool identity (written atomically; do not edit)\n"
                 "system_identifier = %" PRIu64 "\n"
                 "segment_size = %u\n"
                 "timeline = %u\n",
                 id->system_id, (unsigned)id->seg_size, (unsigned)id->timeline);
    if (n < 0 || (size_t)n >= sizeof(text))
        return -EOVERFLOW;
    fd = openat(s->dirfd, META_TMP_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = -errno;
        log_error(SPOOL_COMPONENT, "cannot create %s/%s: %s", s->dir, META_TMP_NAME,
                  strerror(-ret));
        return ret;
    }
    ret = wm_write_all(fd, text, (size_t)n);
    if (ret == 0 && fsync(fd) != 0)
        ret = -errno;
    if (close(fd) != 0 && ret == 0)
        ret = -errno;
    if (ret == 0 && renameat(s->dirfd, META_TMP_NAME, s->dirfd, META_NAME) != 0)
        ret = -errno;
    if (ret < 0) {
        log_error(SPOOL_COMPONENT, "cannot write %s/%s: %s", s->dir, META_NAME, strerror(-ret));
        return ret;
    }
    return fsync_dir(s);
}

/* Reads spool.meta; 0 with s->id filled (or left empty if there is none), or an error. */
static int
meta_load(struct spool *s, char *err, size_t errlen)
{
    char text[META_MAX + 1];
    struct spool_identity id = {0, 0, 0};
    size_t len = 0;
    int fd = openat(s->dirfd, META_NAME, O_RDONLY | O_CLOEXEC);
    char *line, *save = NULL;
    unsigned lineno = 0;

    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot open %s/%s: %s", s->dir, META_NAME, strerror(errno));
        return -errno;
    }
    for (;;) {
        ssize_t n = read(fd, text + len, META_MAX - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;

            snprintf(err, errlen, "cannot read %s/%s: %s", s->dir, META_NAME, strerror(-e));
            close_fd(fd, META_NAME);
            return e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == META_MAX) {
            snprintf(err, errlen, "%s/%s is larger than %d bytes", s->dir, META_NAME, META_MAX);
            close_fd(fd, META_NAME);
            return -EINVAL;
        }
    }
    close_fd(fd, META_NAME);
    text[len] = '\0';
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char key[64];
        unsigned long long v;
        char extra;

        lineno++;
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == '\0' || *line == '#')
            continue;
        if (sscanf(line, "%63[a-z_] = %llu %c", key, &v, &extra) != 2) {
            snprintf(err, errlen, "%s/%s line %u is damaged: \"%.60s\"", s->dir, META_NAME, lineno,
                     line);
            return -EINVAL;
        }
        if (strcmp(key, "system_identifier") == 0)
            id.system_id = v;
        else if (strcmp(key, "segment_size") == 0 && v <= UINT32_MAX)
            id.seg_size = (uint32_t)v;
        else if (strcmp(key, "timeline") == 0 && v <= UINT32_MAX)
            id.timeline = (uint32_t)v;
        else
            log_warning(SPOOL_COMPONENT, "%s/%s line %u: ignoring \"%s\"", s->dir, META_NAME,
                        lineno, key);
    }
    if (id.system_id == 0 || !walfmt_seg_size_valid(id.seg_size) || id.timeline == 0) {
        snprintf(err, errlen,
                 "%s/%s is damaged: system_identifier %" PRIu64 ", segment_size %u, timeline %u",
                 s->dir, META_NAME, id.system_id, (unsigned)id.seg_size, (unsigned)id.timeline);
        return -EINVAL;
    }
    s->id = id;
    return 0;
}

const struct spool_identity *
spool_identity(const struct spool *s)
{
    return &s->id;
}

int
spool_set_identity(struct spool *s, const struct spool_identity *id)
{
    int ret;

    if (id == NULL || id->system_id == 0 || !walfmt_seg_size_valid(id->seg_size) ||
        id->timeline == 0)
        return -EINVAL;
    if (s->failed)
        return s->fail_err;
    if (s->id.system_id == 0) {
        char err[256];

        ret = meta_write(s, id);
        if (ret < 0)
            return ret;
        s->id = *id;
        log_info(SPOOL_COMPONENT,
                 "spool in %s belongs to system %" PRIu64 " (segment size %u, timeline %u)", s->dir,
                 id->system_id, (unsigned)id->seg_size, (unsigned)id->timeline);
        if (history_load(s, err, sizeof(err)) < 0)
            log_warning(SPOOL_COMPONENT, "%s; the history of timeline %u is unknown", err,
                        (unsigned)id->timeline);
        return 0;
    }
    if (id->system_id != s->id.system_id || id->seg_size != s->id.seg_size) {
        log_error(SPOOL_COMPONENT,
                  "spool in %s holds WAL of system %" PRIu64 " (segment size %u); refusing "
                  "system %" PRIu64 " (segment size %u)",
                  s->dir, s->id.system_id, (unsigned)s->id.seg_size, id->system_id,
                  (unsigned)id->seg_size);
        return -EEXIST;
    }
    if (id->timeline != s->id.timeline && s->positioned) {
        log_info(SPOOL_COMPONENT,
                 "spool in %s holds WAL of timeline %u (offered %u): its timeline changes only "
                 "with a timeline switch",
                 s->dir, (unsigned)s->id.timeline, (unsigned)id->timeline);
    } else if (id->timeline > s->id.timeline) {
        struct spool_identity next = s->id;
        char err[256];

        next.timeline = id->timeline;
        ret = meta_write(s, &next);
        if (ret < 0)
            return ret;
        log_info(SPOOL_COMPONENT, "empty spool in %s: timeline %u -> %u", s->dir,
                 (unsigned)s->id.timeline, (unsigned)next.timeline);
        s->id = next;
        if (history_load(s, err, sizeof(err)) < 0)
            log_warning(SPOOL_COMPONENT, "%s; the history of timeline %u is unknown", err,
                        (unsigned)next.timeline);
    } else if (id->timeline < s->id.timeline) {
        log_warning(SPOOL_COMPONENT, "spool in %s is on timeline %u; keeping it (offered %u)",
                    s->dir, (unsigned)s->id.timeline, (unsigned)id->timeline);
    }
    return 0;
}

/* ---- timelines ---- */

static void
history_file_name(char out[HISTORY_NAME_MAX], uint32_t tli, bool tmp)
{
    snprintf(out, HISTORY_NAME_MAX, "%08X%s", (unsigned)tli,
             tmp ? HISTORY_TMP_SUFFIX : HISTORY_SUFFIX);
}

static int
pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO; /* the file is shorter than a segment */
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

static int
pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

/* Parses an unsigned number in base 10 or 16 at *p; false if there is none or it overflows. */
static bool
parse_num(const char **p, const char *end, unsigned base, uint64_t max, uint64_t *out)
{
    const char *q = *p;
    uint64_t v = 0;

    while (q < end) {
        unsigned d;

        if (*q >= '0' && *q <= '9')
            d = (unsigned)(*q - '0');
        else if (base == 16 && *q >= 'A' && *q <= 'F')
            d = (unsigned)(*q - 'A' + 10);
        else if (base == 16 && *q >= 'a' && *q <= 'f')
            d = (unsigned)(*q - 'a' + 10);
        else
            break;
        if (v > (max - d) / base)
            return false;
        v = v * base + d;
        q++;
    }
    if (q == *p)
        return false;
    *p = q;
    *out = v;
    return true;
}

/*
 * Parses the history file of timeline tli as readTimeLineHistory does: per line, leading
 * whitespace skipped, blank and '#' lines ignored, then "parentTLI<whitespace>X/X" and a
 * free-form reason.  Parent timelines must increase and stay below tli; switch points must not
 * go backwards.  *out (malloc'd) gets the entries, oldest first, then tli itself with end
 * UINT64_MAX.  Returns 0, -EINVAL (with the reason in why) or -ENOMEM.
 */
static int
history_parse(const char *text, size_t len, uint32_t tli, struct spool_timeline **out, size_t *n,
              char *why, size_t whylen)
{
    struct spool_timeline *v = NULL;
    size_t cnt = 0, cap = 0;
    const char *p = text, *end = text + len;
    unsigned lineno = 0;

    *out = NULL;
    *n = 0;
    if (len > 0 && memchr(text, '\0', len) != NULL) {
        snprintf(why, whylen, "it contains a NUL byte");
        return -EINVAL;
    }
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *q = p;
        uint64_t t, hi, lo;

        if (eol == NULL)
            eol = end;
        lineno++;
        while (q < eol && wm_is_space(*q))
            q++;
        if (q == eol || *q == '#') {
            p = eol < end ? eol + 1 : end;
            continue;
        }
        if (!parse_num(&q, eol, 10, UINT32_MAX, &t) || q == eol || !wm_is_space(*q)) {
            snprintf(why, whylen, "line %u is not \"parentTLI<TAB>X/X<TAB>reason\": \"%.*s\"",
                     lineno, (int)(eol - p > 80 ? 80 : eol - p), p);
            free(v);
            return -EINVAL;
        }
        while (q < eol && wm_is_space(*q))
            q++;
        if (!parse_num(&q, eol, 16, UINT32_MAX, &hi) || q == eol || *q != '/' ||
            (q++, !parse_num(&q, eol, 16, UINT32_MAX, &lo)) || (q < eol && !wm_is_space(*q))) {
            snprintf(why, whylen, "line %u has no switch point X/X: \"%.*s\"", lineno,
                     (int)(eol - p > 80 ? 80 : eol - p), p);
            free(v);
            return -EINVAL;
        }
        if (t == 0 || t >= tli || (cnt > 0 && t <= v[cnt - 1].tli)) {
            snprintf(why, whylen,
                     "line %u names timeline %" PRIu64 ": timelines must increase and stay "
                     "below %u",
                     lineno, t, (unsigned)tli);
            free(v);
            return -EINVAL;
        }
        if (cnt > 0 && (hi << 32 | lo) < v[cnt - 1].end) {
            snprintf(why, whylen, "line %u: switch point %X/%X is before the previous one", lineno,
                     (unsigned)hi, (unsigned)lo);
            free(v);
            return -EINVAL;
        }
        if (cnt + 1 >= cap) {
            struct spool_timeline *nv;

            if (cnt >= HISTORY_MAX_ENTRIES) {
                snprintf(why, whylen, "more than %u lines of history", HISTORY_MAX_ENTRIES);
                free(v);
                return -EINVAL;
            }
            cap = cap == 0 ? 8 : cap * 2;
            nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL) {
                free(v);
                return -ENOMEM;
            }
            v = nv;
        }
        v[cnt].tli = (uint32_t)t;
        v[cnt].end = hi << 32 | lo;
        cnt++;
        p = eol < end ? eol + 1 : end;
    }
    if (cnt + 1 > cap) {
        struct spool_timeline *nv = realloc(v, (cnt + 1) * sizeof(*v));

        if (nv == NULL) {
            free(v);
            return -ENOMEM;
        }
        v = nv;
    }
    v[cnt].tli = tli;
    v[cnt].end = UINT64_MAX;
    *out = v;
    *n = cnt + 1;
    return 0;
}

/* Reads history file name of dirfd into a malloc'd NUL-terminated buffer. */
static int
history_read_at(int dirfd, uint32_t tli, char **out, size_t *len)
{
    char name[HISTORY_NAME_MAX];
    struct stat st;
    char *buf;
    int fd, ret;

    *out = NULL;
    *len = 0;
    history_file_name(name, tli, false);
    fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        ret = -errno;
        close_fd(fd, name);
        return ret;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)HISTORY_MAX) {
        close_fd(fd, name);
        return -EINVAL;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        close_fd(fd, name);
        return -ENOMEM;
    }
    ret = st.st_size > 0 ? pread_full(fd, buf, (size_t)st.st_size, 0) : 0;
    close_fd(fd, name);
    if (ret < 0) {
        free(buf);
        return ret;
    }
    buf[st.st_size] = '\0';
    *out = buf;
    *len = (size_t)st.st_size;
    return 0;
}

/* A history of the current timeline alone (its history file is unknown). */
static int
history_set_bare(struct spool *s)
{
    struct spool_timeline *v = malloc(sizeof(*v));

    if (v == NULL)
        return -ENOMEM;
    v->tli = s->id.timeline;
    v->end = UINT64_MAX;
    free(s->tls);
    s->tls = v;
    s->ntls = 1;
    return 0;
}

/*
 * Loads the history of the current timeline from its history file.  Missing: a warning, and the
 * history holds the current timeline alone.  Damaged: -EINVAL with err filled (the history is
 * then the current timeline alone too).
 */
static int
history_load(struct spool *s, char *err, size_t errlen)
{
    struct spool_timeline *v;
    char name[HISTORY_NAME_MAX], why[192];
    size_t n, len;
    char *text;
    int ret;

    if (s->id.system_id == 0)
        return 0;
    ret = history_set_bare(s);
    if (ret < 0 || s->id.timeline <= 1)
        return ret;
    history_file_name(name, s->id.timeline, false);
    ret = history_read_at(s->dirfd, s->id.timeline, &text, &len);
    if (ret == -ENOENT) {
        log_warning(SPOOL_COMPONENT,
                    "%s: no %s: the history of timeline %u is unknown (older timelines are not "
                    "served)",
                    s->dir, name, (unsigned)s->id.timeline);
        return 0;
    }
    if (ret < 0) {
        snprintf(err, errlen, "cannot read %s/%s: %s", s->dir, name, strerror(-ret));
        return ret;
    }
    ret = history_parse(text, len, s->id.timeline, &v, &n, why, sizeof(why));
    free(text);
    if (ret < 0) {
        if (ret == -EINVAL)
            snprintf(err, errlen, "%s/%s is damaged: %s", s->dir, name, why);
        else
            snprintf(err, errlen, "cannot parse %s/%s: %s", s->dir, name, strerror(-ret));
        return ret;
    }
    free(s->tls);
    s->tls = v;
    s->ntls = n;
    return 0;
}

/* Writes tli's history file durably: temporary file, fsync, rename, directory fsync. */
static int
history_store(struct spool *s, uint32_t tli, const char *text, size_t len)
{
    char name[HISTORY_NAME_MAX], tmp[HISTORY_NAME_MAX];
    int fd, ret;

    history_file_name(name, tli, false);
    history_file_name(tmp, tli, true);
    fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = -errno;
        spool_fail(s, ret, "cannot create %s/%s: %s", s->dir, tmp, strerror(-ret));
        return ret;
    }
    ret = wm_write_all(fd, text, len);
    if (ret == 0 && fsync(fd) != 0)
        ret = -errno;
    if (close(fd) != 0 && ret == 0)
        ret = -errno;
    if (ret == 0 && renameat(s->dirfd, tmp, s->dirfd, name) != 0)
        ret = -errno;
    if (ret == 0 && fsync(s->dirfd) != 0)
        ret = -errno;
    if (ret < 0) {
        spool_fail(s, ret, "cannot write %s/%s durably: %s", s->dir, name, strerror(-ret));
        return ret;
    }
    log_info(SPOOL_COMPONENT, "%s/%s written (%zu bytes)", s->dir, name, len);
    return 0;
}

/*
 * Fills buf with the WAL [lsn, lsn + n) of one segment: the bytes below file_upto from src_fd
 * (the segment's old file, at the segment offset), the others from the queued writes.
 */
static int
prefix_fill(struct spool *s, int src_fd, uint64_t lsn, uint8_t *buf, size_t n, uint64_t file_upto)
{
    uint64_t end = lsn + n, from = lsn;
    size_t copied = 0;

    if (file_upto > lsn) {
        size_t m = file_upto >= end ? n : (size_t)(file_upto - lsn);
        int ret;

        if (src_fd < 0)
            return -EIO;
        ret = pread_full(src_fd, buf, m, walfmt_seg_offset(lsn, s->id.seg_size));
        if (ret < 0)
            return ret;
        from = lsn + m;
    }
    if (from >= end)
        return 0;
    for (const struct wreq *w = s->fifo_head; w != NULL; w = w->next) {
        uint64_t a = w->lsn > from ? w->lsn : from;
        uint64_t b = w->lsn + w->len < end ? w->lsn + w->len : end;

        if (a >= b)
            continue;
        memcpy(buf + (a - lsn), w->data + (a - w->lsn), (size_t)(b - a));
        copied += (size_t)(b - a);
    }
    /* The FIFO covers [write_lsn, append_end) exactly, each byte once. */
    return copied == end - from ? 0 : -EIO;
}

/*
 * Creates NAME.partial of segment segno on timeline tli holding the segment's first len bytes
 * (from src_fd below file_upto, from the queued writes above) and zeros after, then fsyncs it
 * and the directory.  Returns the open descriptor, or a negative errno (the file removed and
 * the reason in the log).
 */
static int
seg_copy_start(struct spool *s, uint32_t tli, uint64_t segno, int src_fd, uint32_t len,
               uint64_t file_upto)
{
    uint32_t seg_size = s->id.seg_size;
    uint64_t base = walfmt_seg_start(segno, seg_size);
    char name[FILE_NAME_MAX];
    uint8_t *buf = NULL;
    const char *what = "write";
    int fd, ret = 0;

    walfmt_seg_name(name, tli, segno, seg_size);
    strcat(name, WALFMT_PARTIAL_SUFFIX);
    if (len > 0 && (buf = malloc(ZERO_BUF_SIZE)) == NULL)
        return -ENOMEM;
    fd = openat(s->dirfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = -errno;
        log_error(SPOOL_COMPONENT, "cannot create %s/%s: %s", s->dir, name, strerror(-ret));
        free(buf);
        return ret;
    }
    for (uint32_t off = 0; off < seg_size && ret == 0;) {
        uint32_t blk = seg_size - off < ZERO_BUF_SIZE ? seg_size - off : ZERO_BUF_SIZE;
        const uint8_t *src = s->zeros;

        if (off < len) {
            uint32_t m = len - off < blk ? len - off : blk;

            ret = prefix_fill(s, src_fd, base + off, buf, m, file_upto);
            if (ret < 0) {
                what = "copy of the WAL below the switch point into";
                break;
            }
            memset(buf + m, 0, blk - m);
            src = buf;
        }
        ret = pwrite_full(fd, src, blk, off);
        off += blk;
    }
    if (ret == 0 && fsync(fd) != 0) {
        ret = -errno;
        what = "fsync of";
    }
    if (ret == 0 && fsync(s->dirfd) != 0) {
        ret = -errno;
        what = "fsync of the directory after creating";
    }
    free(buf);
    if (ret < 0) {
        log_error(SPOOL_COMPONENT, "%s %s/%s failed: %s", what, s->dir, name, strerror(-ret));
        close_fd(fd, name);
        if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT)
            log_warning(SPOOL_COMPONENT, "cannot remove %s/%s: %s", s->dir, name, strerror(errno));
        return ret;
    }
    log_info(SPOOL_COMPONENT, "%s/%s started with %u bytes of WAL (up to " LSN_FMT ")",
             s->dir, name, (unsigned)len, LSN_ARGS(base + len));
    return fd;
}

/*
 * Frees the orphans of which nothing is in flight or waiting.  Called where no handler of the
 * spool is running (or at the end of the outermost one), so that no caller still holds one.
 */
static void
orphans_settle(struct spool *s)
{
    struct seg **pp = &s->orphans;

    while (*pp != NULL) {
        struct seg *g = *pp;

        if (g->inflight > 0 || g->wait_head != NULL || g->state == SEG_PREPARING) {
            pp = &g->orphan_next;
            continue;
        }
        *pp = g->orphan_next;
        if (g->fd >= 0)
            close_fd(g->fd, "a replaced spool segment");
        free(g);
    }
}

/* The switch itself: see "Timeline switch" in the header.  The arguments are validated. */
static int
timeline_switch(struct spool *s, uint32_t tli, uint64_t switch_lsn, const char *history, size_t len,
                struct spool_timeline *tls, size_t ntls)
{
    uint32_t seg_size = s->id.seg_size, old_tli = s->id.timeline;
    uint64_t segno = walfmt_segno(switch_lsn, seg_size);
    uint32_t off = walfmt_seg_offset(switch_lsn, seg_size);
    struct seg *old = seg_lookup(s, segno), *g;
    struct spool_identity next = s->id;
    char name[FILE_NAME_MAX];
    size_t first;
    int fd, ret;

    if (off > 0 && (old == NULL || old->fd < 0)) {
        spool_fail(s, -EIO, "timeline switch at " LSN_FMT ": the segment holding it is not open",
             LSN_ARGS(switch_lsn));
        return s->fail_err;
    }
    /* Memory first, so that nothing fails for want of it once the files changed. */
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return -ENOMEM;
    if (s->nsegs == s->cap) {
        ret = segs_push(s, g); /* grows the array; undone below */
        if (ret < 0) {
            free(g);
            return ret;
        }
        s->nsegs--;
    }

    ret = history_store(s, tli, history, len);
    if (ret < 0) {
        free(g);
        return ret;
    }
    fd = seg_copy_start(s, tli, segno, old != NULL ? old->fd : -1, off, s->write_lsn);
    if (fd < 0) {
        free(g);
        walfmt_seg_name(name, tli, segno, seg_size);
        spool_fail(s, fd, "starting %s for the timeline switch at " LSN_FMT " failed: %s", name,
             LSN_ARGS(switch_lsn), strerror(-fd));
        return s->fail_err;
    }
    next.timeline = tli;
    ret = meta_write(s, &next);
    if (ret < 0) {
        close_fd(fd, "the new timeline's segment");
        free(g);
        spool_fail(s, ret, "recording timeline %u in %s/%s failed: %s", (unsigned)tli, s->dir, META_NAME,
             strerror(-ret));
        return s->fail_err;
    }

    /* The files of segment S and after on the old timeline are replaced. */
    for (first = 0; first < s->nsegs && s->segs[first]->segno < segno; first++)
        ;
    for (size_t i = first; i < s->nsegs; i++) {
        struct seg *o = s->segs[i];

        seg_file_name(s, o, seg_is_partial(o), name);
        if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT)
            log_warning(SPOOL_COMPONENT, "cannot remove %s/%s: %s", s->dir, name, strerror(errno));
        else
            log_info(SPOOL_COMPONENT, "removed %s: replaced by timeline %u's file", name,
                     (unsigned)tli);
        o->orphan_next = s->orphans;
        s->orphans = o;
    }
    s->nsegs = first;
    if (fsync(s->dirfd) != 0)
        log_warning(SPOOL_COMPONENT,
                    "fsync of %s after removing the old timeline's files failed: %s (recovery "
                    "removes them if they come back)",
                    s->dir, strerror(errno));
    g->segno = segno;
    g->tli = tli;
    g->state = SEG_OPEN;
    g->fd = fd;
    s->segs[s->nsegs++] = g;
    if (s->in_cb == 0)
        orphans_settle(s); /* else at the end of the running handler */
    rd_cache_drop(s);
    s->id = next;
    free(s->tls);
    s->tls = tls;
    s->ntls = ntls;
    log_info(SPOOL_COMPONENT,
             "spool in %s: timeline %u -> %u at " LSN_FMT " (written " LSN_FMT
             ", durable " LSN_FMT ")",
             s->dir, (unsigned)old_tli, (unsigned)tli, LSN_ARGS(switch_lsn),
             LSN_ARGS(s->write_lsn), LSN_ARGS(s->flush_lsn));
    return 0;
}

int
spool_set_timeline(struct spool *s, uint32_t tli, uint64_t switch_lsn, const char *history,
                   size_t len)
{
    struct spool_timeline *tls = NULL;
    size_t ntls = 0;
    char why[192];
    int ret;

    if (s->failed)
        return s->fail_err;
    if (s->stall_err != 0) {
        log_warning(SPOOL_COMPONENT, "timeline %u not taken while the spool waits for space",
                    (unsigned)tli);
        return -EAGAIN;
    }
    if (s->id.system_id == 0) {
        log_error(SPOOL_COMPONENT, "timeline %u given to the spool in %s before its identity",
                  (unsigned)tli, s->dir);
        return -EINVAL;
    }
    if (tli == 0 || (history == NULL && len != 0) || (tli == 1) != (len == 0) ||
        len > HISTORY_MAX) {
        log_error(SPOOL_COMPONENT,
                  "spool in %s: timeline %u with a history of %zu bytes refused (only timeline "
                  "1 has none; at most %u bytes)",
                  s->dir, (unsigned)tli, len, HISTORY_MAX);
        return -EINVAL;
    }
    ret = history_parse(history, len, tli, &tls, &ntls, why, sizeof(why));
    if (ret < 0) {
        if (ret == -EINVAL)
            log_error(SPOOL_COMPONENT, "spool in %s: the history of timeline %u is invalid: %s",
                      s->dir, (unsigned)tli, why);
        return ret;
    }

    if (!s->positioned) {
        /* Empty: record the timeline and its history, nothing to switch. */
        struct spool_identity next = s->id;

        next.timeline = tli;
        if (tli > 1)
            ret = history_store(s, tli, history, len);
        if (ret == 0 && tli != s->id.timeline) {
            ret = meta_write(s, &next);
            if (ret < 0)
                spool_fail(s, ret, "recording timeline %u in %s/%s failed: %s", (unsigned)tli, s->dir,
                     META_NAME, strerror(-ret));
        }
        if (ret < 0) {
            free(tls);
            return s->failed ? s->fail_err : ret;
        }
        if (tli != s->id.timeline)
            log_info(SPOOL_COMPONENT, "empty spool in %s: timeline %u -> %u", s->dir,
                     (unsigned)s->id.timeline, (unsigned)tli);
        s->id = next;
        free(s->tls);
        s->tls = tls;
        s->ntls = ntls;
        return 0;
    }
    if (tli == s->id.timeline) {
        /* Nothing changes; but a history the spool lacks (its timeline came from
         * spool_set_identity) is worth keeping. */
        if (tli > 1 && s->ntls == 1) {
            ret = history_store(s, tli, history, len);
            if (ret < 0) {
                free(tls);
                return ret;
            }
            free(s->tls);
            s->tls = tls;
            s->ntls = ntls;
            return 0;
        }
        free(tls);
        return 0;
    }
    if (tli < s->id.timeline) {
        log_error(SPOOL_COMPONENT, "spool in %s is on timeline %u: timeline %u is older", s->dir,
                  (unsigned)s->id.timeline, (unsigned)tli);
        free(tls);
        return -EINVAL;
    }
    if (switch_lsn != s->append_end) {
        log_error(SPOOL_COMPONENT,
                  "timeline %u starts at " LSN_FMT " but the spool in %s holds timeline %u "
                  "up to " LSN_FMT ": a switch must be at the end of the WAL held",
                  (unsigned)tli, LSN_ARGS(switch_lsn), s->dir, (unsigned)s->id.timeline,
                  LSN_ARGS(s->append_end));
        free(tls);
        return -EINVAL;
    }
    /* tls[ntls - 2] is the history's last line: the parent and the switch point. */
    if (ntls < 2 || tls[ntls - 2].tli != s->id.timeline || tls[ntls - 2].end != switch_lsn) {
        log_error(SPOOL_COMPONENT,
                  "the history of timeline %u ends with %s%u at " LSN_FMT
                  ", not with the switch from the spool's timeline %u at " LSN_FMT
                  " (spool in %s)",
                  (unsigned)tli, ntls < 2 ? "no parent: " : "timeline ",
                  ntls < 2 ? 0u : (unsigned)tls[ntls - 2].tli,
                  LSN_ARGS(ntls < 2 ? 0 : tls[ntls - 2].end), (unsigned)s->id.timeline,
                  LSN_ARGS(switch_lsn), s->dir);
        free(tls);
        return -EINVAL;
    }
    /* What the spool knows of its own history must be the new history's beginning. */
    if (s->ntls > 1) {
        bool same = s->ntls == ntls - 1;

        for (size_t i = 0; same && i + 1 < s->ntls; i++)
            same = s->tls[i].tli == tls[i].tli && s->tls[i].end == tls[i].end;
        if (!same) {
            log_error(SPOOL_COMPONENT,
                      "the history of timeline %u does not continue the history of the spool's "
                      "timeline %u (spool in %s)",
                      (unsigned)tli, (unsigned)s->id.timeline, s->dir);
            free(tls);
            return -EINVAL;
        }
    }
    ret = timeline_switch(s, tli, switch_lsn, history, len, tls, ntls);
    if (ret < 0)
        free(tls);
    return ret;
}

const struct spool_timeline *
spool_timelines(const struct spool *s, size_t *n)
{
    *n = s->id.system_id != 0 ? s->ntls : 0;
    return s->tls;
}

uint64_t
spool_timeline_end(const struct spool *s, uint32_t tli)
{
    if (s->id.system_id == 0 || tli == 0)
        return 0;
    for (size_t i = 0; i < s->ntls; i++)
        if (s->tls[i].tli == tli)
            return s->tls[i].end;
    return 0;
}

int
spool_read_history(const struct spool *s, uint32_t tli, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (s->id.system_id == 0 || tli < 2 || tli > s->id.timeline)
        return -ENOENT;
    return history_read_at(s->dirfd, tli, out, len);
}

static bool
looks_like_history(const char *name, bool *tmp)
{
    size_t len = strlen(name);

    if (len < 8 + strlen(HISTORY_SUFFIX))
        return false;
    for (size_t i = 0; i < 8; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'A' && name[i] <= 'F')))
            return false;
    *tmp = strcmp(name + 8, HISTORY_TMP_SUFFIX) == 0;
    return *tmp || strcmp(name + 8, HISTORY_SUFFIX) == 0;
}

static bool looks_like_segment(const char *name);

int
spool_remove_all(const char *dir, char *err, size_t errlen)
{
    static const char *const last[] = {META_TMP_NAME, META_NAME};
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    DIR *d = NULL;
    int dfd, fd2 = -1, ret = 0;

    if (errlen > 0)
        err[0] = '\0';
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT)
            return 0;
        ret = -errno;
        snprintf(err, errlen, "cannot open spool directory %s: %s", dir, strerror(-ret));
        return ret;
    }
    if (flock(dfd, LOCK_EX | LOCK_NB) != 0) {
        ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
        snprintf(err, errlen, "spool directory %s is in use by another process%s%s", dir,
                 ret == -EBUSY ? "" : ": ", ret == -EBUSY ? "" : strerror(-ret));
        close_fd(dfd, dir);
        return ret;
    }
    fd2 = dup(dfd);
    if (fd2 < 0 || (d = fdopendir(fd2)) == NULL) {
        ret = -errno;
        snprintf(err, errlen, "cannot list %s: %s", dir, strerror(-ret));
        if (fd2 >= 0)
            close_fd(fd2, dir);
        goto out;
    }
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        bool tmp;

        if (!looks_like_segment(e->d_name) && !looks_like_history(e->d_name, &tmp))
            continue;
        if (n == cap) {
            char **p = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*names));

            if (p == NULL) {
                ret = -ENOMEM;
                break;
            }
            names = p;
        }
        names[n] = strdup(e->d_name);
        if (names[n] == NULL) {
            ret = -ENOMEM;
            break;
        }
        n++;
        errno = 0;
    }
    if (ret == 0 && errno != 0)
        ret = -errno;
    closedir(d);
    if (ret < 0) {
        snprintf(err, errlen, "cannot list %s: %s", dir, strerror(-ret));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (unlinkat(dfd, names[i], 0) != 0 && errno != ENOENT) {
            ret = -errno;
            snprintf(err, errlen, "cannot remove %s/%s: %s", dir, names[i], strerror(-ret));
            goto out;
        }
    }
    /* The WAL goes first and durably, the identity last: an interrupted removal leaves a spool
     * that still knows its cluster. */
    if (fsync(dfd) != 0) {
        ret = -errno;
        snprintf(err, errlen, "cannot fsync %s: %s", dir, strerror(-ret));
        goto out;
    }
    for (size_t i = 0; i < sizeof(last) / sizeof(last[0]); i++) {
        if (unlinkat(dfd, last[i], 0) != 0 && errno != ENOENT) {
            ret = -errno;
            snprintf(err, errlen, "cannot remove %s/%s: %s", dir, last[i], strerror(-ret));
            goto out;
        }
    }
    if (fsync(dfd) != 0) {
        ret = -errno;
        snprintf(err, errlen, "cannot fsync %s: %s", dir, strerror(-ret));
        goto out;
    }
    log_info(SPOOL_COMPONENT, "spool in %s removed: %zu segment and history files and %s", dir, n,
             META_NAME);
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    close_fd(dfd, dir); /* also releases the flock */
    return ret;
}

/* ---- accessors ---- */

uint64_t
spool_start_lsn(const struct spool *s)
{
    return s->positioned ? s->start_lsn : 0;
}

uint64_t
spool_write_lsn(const struct spool *s)
{
    return s->write_lsn;
}

uint64_t
spool_flush_lsn(const struct spool *s)
{
    return s->flush_lsn;
}

bool
spool_failed(const struct spool *s)
{
    return s->failed;
}

/* ---- recovery ---- */

struct found {
    char name[FILE_NAME_MAX];
    uint64_t segno;
    uint32_t tli;
    bool partial;
    off_t size;
};

static int
found_cmp(const void *a, const void *b)
{
    const struct found *x = a, *y = b;

    if (x->segno != y->segno)
        return x->segno < y->segno ? -1 : 1;
    if (x->tli != y->tli)
        return x->tli < y->tli ? -1 : 1;
    return (int)x->partial - (int)y->partial; /* complete first */
}

static bool
looks_like_segment(const char *name)
{
    size_t len = strlen(name);

    if (len != WALFMT_NAME_LEN && (len != WALFMT_NAME_LEN + strlen(WALFMT_PARTIAL_SUFFIX) ||
                                   strcmp(name + WALFMT_NAME_LEN, WALFMT_PARTIAL_SUFFIX) != 0))
        return false;
    for (size_t i = 0; i < WALFMT_NAME_LEN; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'A' && name[i] <= 'F')))
            return false;
    return true;
}

/* Lists the directory's segment file names (unsorted). */
static int
list_names(struct spool *s, struct found **out, size_t *count, char *err, size_t errlen)
{
    int fd = dup(s->dirfd);
    struct found *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    DIR *d;

    if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0 || (d = fdopendir(fd)) == NULL) {
        int ret = -errno;

        if (fd >= 0)
            close_fd(fd, s->dir);
        snprintf(err, errlen, "cannot list %s: %s", s->dir, strerror(-ret));
        return ret;
    }
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (!looks_like_segment(e->d_name))
            continue;
        if (n == cap) {
            struct found *p = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof(*v));

            if (p == NULL) {
                free(v);
                closedir(d);
                snprintf(err, errlen, "out of memory listing %s", s->dir);
                return -ENOMEM;
            }
            v = p;
        }
        memset(&v[n], 0, sizeof(v[n]));
        memcpy(v[n].name, e->d_name, strlen(e->d_name) + 1); /* fits: looks_like_segment */
        n++;
        errno = 0;
    }
    if (errno != 0) {
        int ret = -errno;

        free(v);
        closedir(d);
        snprintf(err, errlen, "cannot list %s: %s", s->dir, strerror(-ret));
        return ret;
    }
    if (closedir(d) != 0)
        log_warning(SPOOL_COMPONENT, "closedir of %s failed: %s", s->dir, strerror(errno));
    *out = v;
    *count = n;
    return 0;
}

/* Without spool.meta: the identity from the long page header of the oldest segment file. */
static int
derive_identity(struct spool *s, struct found *v, size_t n, char *err, size_t errlen)
{
    const struct found *oldest = &v[0];
    struct walfmt_page_header ph;
    struct spool_identity id;
    uint8_t buf[WALFMT_LONG_PHD_SIZE];
    uint64_t segno;
    bool partial;
    ssize_t r;
    int fd, ret;

    for (size_t i = 1; i < n; i++)
        if (strcmp(v[i].name, oldest->name) < 0)
            oldest = &v[i];
    fd = openat(s->dirfd, oldest->name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ret = -errno;
        snprintf(err, errlen, "cannot open %s/%s: %s", s->dir, oldest->name, strerror(-ret));
        return ret;
    }
    r = pread(fd, buf, sizeof(buf), 0);
    ret = r < 0 ? -errno : 0;
    close_fd(fd, oldest->name);
    if (ret < 0) {
        snprintf(err, errlen, "cannot read %s/%s: %s", s->dir, oldest->name, strerror(-ret));
        return ret;
    }
    if (walfmt_page_header_parse(buf, (size_t)r, &ph) != (int)WALFMT_LONG_PHD_SIZE ||
        ph.magic != WALFMT_PAGE_MAGIC || ph.sysid == 0 || !walfmt_seg_size_valid(ph.seg_size) ||
        ph.xlog_blcksz != WALFMT_BLCKSZ ||
        walfmt_parse_seg_name(oldest->name, ph.seg_size, &id.timeline, &segno, &partial) != 0) {
        snprintf(err, errlen,
                 "%s has segment files but no %s, and %s does not start with a valid long page "
                 "header to take the identity from",
                 s->dir, META_NAME, oldest->name);
        return -EINVAL;
    }
    id.system_id = ph.sysid;
    id.seg_size = ph.seg_size;
    /* The newest timeline of any segment file: a switch writes its new file before the meta. */
    for (size_t i = 0; i < n; i++) {
        uint32_t tli;

        if (walfmt_parse_seg_name(v[i].name, ph.seg_size, &tli, &segno, &partial) == 0 &&
            tli > id.timeline)
            id.timeline = tli;
    }
    log_warning(SPOOL_COMPONENT,
                "%s/%s is missing: identity taken from %s (system %" PRIu64 ", segment size %u, "
                "timeline %u)",
                s->dir, META_NAME, oldest->name, id.system_id, (unsigned)id.seg_size,
                (unsigned)id.timeline);
    ret = meta_write(s, &id);
    if (ret < 0) {
        snprintf(err, errlen, "cannot write %s/%s: %s", s->dir, META_NAME, strerror(-ret));
        return ret;
    }
    s->id = id;
    return 0;
}

static ssize_t
recovery_read(void *ctx, uint64_t lsn, void *buf, size_t len)
{
    struct spool *s = ctx;
    struct seg *g = seg_lookup(s, walfmt_segno(lsn, s->id.seg_size));
    uint64_t m;
    ssize_t r;
    int fd;

    if (g == NULL)
        return 0;
    fd = read_fd(s, g);
    if (fd < 0)
        return fd;
    m = seg_end_lsn(s, g) - lsn;
    if (m > len)
        m = len;
    do {
        r = pread(fd, buf, (size_t)m, (off_t)walfmt_seg_offset(lsn, s->id.seg_size));
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

/* Zeroes [from_lsn, end of segment) of g's file, extending it if short; fsyncs it.  *torn is
 * the length from from_lsn to the last non-zero byte found there. */
static int
zero_tail(struct spool *s, struct seg *g, uint64_t from_lsn, uint64_t *torn)
{
    uint64_t off = from_lsn - seg_start_lsn(s, g);
    uint64_t torn_end = off;
    uint8_t *buf = malloc(ZERO_BUF_SIZE);
    int ret = 0;

    if (buf == NULL)
        return -ENOMEM;
    while (off < s->id.seg_size && ret == 0) {
        size_t blk =
            s->id.seg_size - off < ZERO_BUF_SIZE ? (size_t)(s->id.seg_size - off) : ZERO_BUF_SIZE;
        size_t got = 0;
        bool dirty = false;

        while (got < blk) {
            ssize_t r = pread(g->fd, buf + got, blk - got, (off_t)(off + got));

            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                ret = -errno;
                break;
            }
            if (r == 0)
                break;
            got += (size_t)r;
        }
        if (ret < 0)
            break;
        for (size_t i = got; i > 0; i--)
            if (buf[i - 1] != 0) {
                dirty = true;
                if (off + i > torn_end)
                    torn_end = off + i;
                break;
            }
        if (dirty || got < blk) {
            size_t put = 0;

            while (put < blk) {
                ssize_t w = pwrite(g->fd, s->zeros, blk - put, (off_t)(off + put));

                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0) {
                    ret = w < 0 ? -errno : -EIO;
                    break;
                }
                put += (size_t)w;
            }
        }
        off += blk;
    }
    free(buf);
    if (ret == 0 && fsync(g->fd) != 0)
        ret = -errno;
    *torn = torn_end - (from_lsn - seg_start_lsn(s, g));
    return ret;
}

static int
recover(struct spool *s, char *err, size_t errlen)
{
    struct found *v = NULL;
    size_t n = 0, first = 0, fp;
    uint64_t end, last_complete_end = 0;
    struct walfmt_scan sc;
    int ret;

    ret = list_names(s, &v, &n, err, errlen);
    if (ret < 0)
        return ret;
    if (n == 0)
        goto out;
    if (s->id.system_id == 0) {
        ret = derive_identity(s, v, n, err, errlen);
        if (ret < 0)
            goto out;
    }
    ret = history_load(s, err, errlen);
    if (ret < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        struct stat st;

        if (walfmt_parse_seg_name(v[i].name, s->id.seg_size, &v[i].tli, &v[i].segno,
                                  &v[i].partial) != 0) {
            snprintf(err, errlen, "%s/%s is not a segment name for segment size %u", s->dir,
                     v[i].name, (unsigned)s->id.seg_size);
            ret = -EINVAL;
            goto out;
        }
        if (fstatat(s->dirfd, v[i].name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            ret = -errno;
            snprintf(err, errlen, "cannot stat %s/%s: %s", s->dir, v[i].name, strerror(-ret));
            goto out;
        }
        v[i].size = st.st_size;
        if (!S_ISREG(st.st_mode) || (!v[i].partial && st.st_size != (off_t)s->id.seg_size) ||
            st.st_size > (off_t)s->id.seg_size) {
            snprintf(err, errlen, "%s/%s is %s of %lld bytes; segments are %u bytes", s->dir,
                     v[i].name, S_ISREG(st.st_mode) ? "a file" : "not a regular file",
                     (long long)st.st_size, (unsigned)s->id.seg_size);
            ret = -EINVAL;
            goto out;
        }
    }
    /* Files of a timeline newer than spool.meta's: a timeline switch that did not complete
     * (its spool.meta was not written), whose old-timeline files are still in place. */
    {
        size_t k = 0;

        for (size_t i = 0; i < n; i++) {
            if (v[i].tli <= s->id.timeline) {
                v[k++] = v[i];
                continue;
            }
            if (unlinkat(s->dirfd, v[i].name, 0) != 0) {
                ret = -errno;
                snprintf(err, errlen, "cannot remove %s/%s: %s", s->dir, v[i].name, strerror(-ret));
                goto out;
            }
            log_warning(SPOOL_COMPONENT,
                        "removed %s/%s: its timeline %u is newer than the spool's (%u), a "
                        "timeline switch did not complete",
                        s->dir, v[i].name, (unsigned)v[i].tli, (unsigned)s->id.timeline);
        }
        n = k;
        if (n == 0)
            goto out;
    }
    qsort(v, n, sizeof(*v), found_cmp);

    /* One file per segment: a complete one wins over a stale partial of the same timeline
     * (left in place), a higher timeline over a lower one, whose file is removed: after a
     * timeline switch the old timeline's file of the switch segment is stale. */
    {
        size_t k = 0;

        for (size_t i = 0; i < n; i++) {
            if (k > 0 && v[k - 1].segno == v[i].segno) {
                struct found *keep = &v[k - 1];
                const struct found *drop =
                    v[i].tli > keep->tli || (v[i].tli == keep->tli && keep->partial) ? keep : &v[i];

                log_warning(SPOOL_COMPONENT, "%s/%s and %s hold the same segment: using %s", s->dir,
                            keep->name, v[i].name, drop == keep ? v[i].name : keep->name);
                if (v[i].tli != keep->tli) {
                    if (unlinkat(s->dirfd, drop->name, 0) != 0) {
                        ret = -errno;
                        snprintf(err, errlen, "cannot remove %s/%s: %s", s->dir, drop->name,
                                 strerror(-ret));
                        goto out;
                    }
                    log_info(SPOOL_COMPONENT, "removed %s/%s: replaced by a newer timeline's file",
                             s->dir, drop->name);
                }
                if (drop == keep)
                    *keep = v[i];
                continue;
            }
            v[k++] = v[i];
        }
        n = k;
    }
    /* The newest contiguous run is the spool. */
    first = n - 1;
    while (first > 0 && v[first - 1].segno + 1 == v[first].segno)
        first--;
    if (first > 0)
        log_warning(SPOOL_COMPONENT,
                    "%s: %zu segment files before the gap at %s are not part of the spool "
                    "(left in place)",
                    s->dir, first, v[first].name);

    for (size_t i = first; i < n; i++) {
        struct seg *g = calloc(1, sizeof(*g));

        if (g == NULL || segs_push(s, g) < 0) {
            free(g);
            snprintf(err, errlen, "out of memory");
            ret = -ENOMEM;
            goto out;
        }
        g->segno = v[i].segno;
        g->tli = v[i].tli;
        g->fd = -1;
        g->state = v[i].partial ? SEG_OPEN : SEG_COMPLETE;
        if (v[i].partial) {
            g->fd = openat(s->dirfd, v[i].name, O_RDWR | O_CLOEXEC);
            if (g->fd < 0) {
                ret = -errno;
                snprintf(err, errlen, "cannot open %s/%s: %s", s->dir, v[i].name, strerror(-ret));
                goto out;
            }
        } else {
            last_complete_end = seg_end_lsn(s, g);
        }
    }

    /* The durable end. */
    for (fp = 0; fp < s->nsegs && s->segs[fp]->state == SEG_COMPLETE; fp++)
        ;
    if (fp == s->nsegs) {
        end = seg_end_lsn(s, s->segs[s->nsegs - 1]);
    } else {
        struct walfmt_scan_params sp = {
            .seg_size = s->id.seg_size,
            .sysid = s->id.system_id,
            .start = seg_start_lsn(s, s->segs[fp > 0 ? fp - 1 : fp]),
            .limit = seg_end_lsn(s, s->segs[s->nsegs - 1]),
            .read = recovery_read,
            .ctx = s,
        };

        ret = walfmt_scan(&sp, &sc);
        if (ret < 0) {
            snprintf(err, errlen, "reading the WAL in %s failed: %s", s->dir, strerror(-ret));
            goto out;
        }
        end = sc.end_lsn;
        if (end < seg_start_lsn(s, s->segs[fp]))
            end = seg_start_lsn(s, s->segs[fp]);
        if (end < last_complete_end)
            end = last_complete_end;
        log_info(SPOOL_COMPONENT,
                 "%s: %" PRIu64 " valid records from " LSN_FMT
                 ", valid WAL ends at " LSN_FMT " (%s: %s)",
                 s->dir, sc.records, LSN_ARGS(sp.start), LSN_ARGS(sc.end_lsn),
                 walfmt_stop_name(sc.stop), sc.why);
    }
    rd_cache_drop(s);

    /* Partial files: complete ones renamed, the one holding the end zeroed after it, later
     * ones removed. */
    for (size_t i = fp; i < s->nsegs;) {
        struct seg *g = s->segs[i];
        char pname[FILE_NAME_MAX], cname[FILE_NAME_MAX];

        seg_file_name(s, g, true, pname);
        seg_file_name(s, g, false, cname);
        if (g->state == SEG_COMPLETE) {
            i++;
            continue;
        }
        if (seg_end_lsn(s, g) <= end) {
            if (fsync(g->fd) != 0 || renameat(s->dirfd, pname, s->dirfd, cname) != 0) {
                ret = -errno;
                snprintf(err, errlen, "cannot complete %s/%s: %s", s->dir, pname, strerror(-ret));
                goto out;
            }
            close_fd(g->fd, cname);
            g->fd = -1;
            g->state = SEG_COMPLETE;
            log_info(SPOOL_COMPONENT, "recovered %s: complete, renamed to %s", pname, cname);
            i++;
        } else if (seg_start_lsn(s, g) <= end) {
            uint64_t torn = 0;

            ret = zero_tail(s, g, end, &torn);
            if (ret < 0) {
                snprintf(err, errlen, "cannot zero the tail of %s/%s after " LSN_FMT ": %s",
                         s->dir, pname, LSN_ARGS(end), strerror(-ret));
                goto out;
            }
            log_info(SPOOL_COMPONENT,
                     "recovered %s up to " LSN_FMT ", %" PRIu64
                     " bytes of torn tail discarded",
                     pname, LSN_ARGS(end), torn);
            i++;
        } else {
            close_fd(g->fd, pname);
            g->fd = -1;
            if (unlinkat(s->dirfd, pname, 0) != 0) {
                ret = -errno;
                snprintf(err, errlen, "cannot remove %s/%s: %s", s->dir, pname, strerror(-ret));
                goto out;
            }
            log_info(SPOOL_COMPONENT,
                     "removed %s: nothing in it precedes the durable end " LSN_FMT, pname,
                     LSN_ARGS(end));
            free(g);
            memmove(s->segs + i, s->segs + i + 1, (s->nsegs - i - 1) * sizeof(*s->segs));
            s->nsegs--;
        }
    }

    /* The partial segment holding the end, of an older timeline and reaching past that
     * timeline's switch point: WAL appended to it would be the current timeline's. */
    if (s->nsegs > 0) {
        struct seg *g = s->segs[s->nsegs - 1];

        if (g->state != SEG_COMPLETE && g->tli < s->id.timeline &&
            spool_timeline_end(s, g->tli) < seg_end_lsn(s, g)) {
            char oname[FILE_NAME_MAX];
            uint32_t old_tli = g->tli;
            int fd;

            seg_file_name(s, g, true, oname);
            fd = seg_copy_start(s, s->id.timeline, g->segno, g->fd,
                                (uint32_t)(end - seg_start_lsn(s, g)), end);
            if (fd < 0) {
                ret = fd;
                snprintf(err, errlen, "cannot start segment %" PRIu64 " of %s in timeline %u: %s",
                         g->segno, s->dir, (unsigned)s->id.timeline, strerror(-ret));
                goto out;
            }
            close_fd(g->fd, oname);
            g->fd = fd;
            g->tli = s->id.timeline;
            if (unlinkat(s->dirfd, oname, 0) != 0 && errno != ENOENT) {
                ret = -errno;
                snprintf(err, errlen, "cannot remove %s/%s: %s", s->dir, oname, strerror(-ret));
                goto out;
            }
            log_info(SPOOL_COMPONENT,
                     "recovered %s: timeline %u ends at " LSN_FMT
                     " in it, so the spool's timeline %u goes on in a file of its own",
                     oname, (unsigned)old_tli, LSN_ARGS(spool_timeline_end(s, old_tli)),
                     (unsigned)s->id.timeline);
        }
    }

    /* What recovery found is durable before it is reported. */
    for (size_t i = 0; i < s->nsegs; i++) {
        struct seg *g = s->segs[i];
        char name[FILE_NAME_MAX];
        int fd = g->fd;

        seg_file_name(s, g, seg_is_partial(g), name);
        if (fd < 0)
            fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0) {
            ret = -errno;
            snprintf(err, errlen, "cannot fsync %s/%s: %s", s->dir, name, strerror(-ret));
            if (fd >= 0 && fd != g->fd)
                close_fd(fd, name);
            goto out;
        }
        if (fd != g->fd)
            close_fd(fd, name);
    }
    ret = fsync_dir(s);
    if (ret < 0) {
        snprintf(err, errlen, "cannot fsync %s: %s", s->dir, strerror(-ret));
        goto out;
    }
    if (s->nsegs > 0) {
        s->positioned = true;
        s->start_lsn = seg_start_lsn(s, s->segs[0]);
        s->append_end = s->write_lsn = s->flush_lsn = s->flush_req = end;
    }
out:
    free(v);
    return ret;
}

/* ---- open and close ---- */

int
spool_open(struct spool **out, struct wio_loop *loop, const char *dir, uint64_t keep_bytes,
           const struct spool_ops *ops, void *ctx, char *err, size_t errlen)
{
    struct spool *s;
    bool created = false;
    int ret;

    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';
    if (loop == NULL || dir == NULL || dir[0] == '\0' || ops == NULL || ops->on_written == NULL ||
        ops->on_flushed == NULL || ops->on_failed == NULL) {
        snprintf(err, errlen, "spool_open: invalid arguments");
        return -EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->loop = loop;
    s->ops = ops;
    s->ctx = ctx;
    s->keep_bytes = keep_bytes;
    s->dirfd = -1;
    s->rd_fd = -1;
    {
        const char *w = getenv("WALMIRROR_SPOOL_WRITES");

        s->inline_writes = w == NULL || strcmp(w, "uring") != 0;
    }
    s->dir = strdup(dir);
    s->zeros = calloc(1, ZERO_BUF_SIZE);
    if (s->dir == NULL || s->zeros == NULL) {
        snprintf(err, errlen, "out of memory");
        ret = -ENOMEM;
        goto fail;
    }
    if (mkdir(dir, 0700) == 0) {
        created = true;
    } else if (errno != EEXIST) {
        ret = -errno;
        snprintf(err, errlen, "cannot create spool directory %s: %s", dir, strerror(-ret));
        goto fail;
    }
    s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dirfd < 0) {
        ret = -errno;
        snprintf(err, errlen, "cannot open spool directory %s: %s", dir, strerror(-ret));
        goto fail;
    }
    if (flock(s->dirfd, LOCK_EX | LOCK_NB) != 0) {
        ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
        snprintf(err, errlen, "spool directory %s is in use by another process%s%s", dir,
                 ret == -EBUSY ? "" : ": ", ret == -EBUSY ? "" : strerror(-ret));
        goto fail;
    }
    if (created) {
        int pfd = openat(s->dirfd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (pfd < 0 || fsync(pfd) != 0) {
            ret = -errno;
            snprintf(err, errlen, "cannot fsync the parent of %s: %s", dir, strerror(-ret));
            if (pfd >= 0)
                close_fd(pfd, "..");
            goto fail;
        }
        close_fd(pfd, "..");
    }
    if (unlinkat(s->dirfd, META_TMP_NAME, 0) != 0 && errno != ENOENT)
        log_warning(SPOOL_COMPONENT, "cannot remove %s/%s: %s", dir, META_TMP_NAME,
                    strerror(errno));
    ret = meta_load(s, err, errlen);
    if (ret < 0)
        goto fail;
    ret = recover(s, err, errlen);
    if (ret < 0)
        goto fail;
    if (s->id.system_id != 0 && s->tls == NULL) {
        ret = history_load(s, err, errlen);
        if (ret < 0)
            goto fail;
    }
    if (s->positioned)
        log_info(SPOOL_COMPONENT,
                 "spool in %s: system %" PRIu64 ", timeline %u, %zu segments, holds " LSN_FMT
                 " .. " LSN_FMT " (durable)",
                 dir, s->id.system_id, (unsigned)s->id.timeline, s->nsegs,
                 LSN_ARGS(s->start_lsn), LSN_ARGS(s->flush_lsn));
    else
        log_info(SPOOL_COMPONENT, "spool in %s is empty%s", dir,
                 s->id.system_id != 0 ? "" : " and has no identity yet");
    *out = s;
    return 0;
fail:
    spool_destroy(s);
    return ret;
}

static void
spool_destroy(struct spool *s)
{
    s->closing = true; /* chunks are freed, not cached */
    while (s->fifo_head != NULL) {
        struct wreq *w = s->fifo_head;

        s->fifo_head = w->next;
        chunk_unref(s, w->chunk);
        free(w);
    }
    if (s->cur_chunk != NULL)
        chunk_unref(s, s->cur_chunk);
    while (s->free_chunks != NULL) {
        struct chunk *c = s->free_chunks;

        s->free_chunks = c->next;
        free(c->buf);
        free(c);
    }
    for (size_t i = 0; i < s->nsegs; i++) {
        if (s->segs[i]->fd >= 0)
            close_fd(s->segs[i]->fd, "a spool segment");
        free(s->segs[i]);
    }
    free(s->segs);
    while (s->orphans != NULL) {
        struct seg *g = s->orphans;

        s->orphans = g->orphan_next;
        if (g->fd >= 0)
            close_fd(g->fd, "a replaced spool segment");
        free(g);
    }
    if (s->retry != NULL) {
        s->retry->s = NULL;
        wio_timer_cancel(&s->retry->t);
        if (wio_timer_busy(&s->retry->t))
            s->retry->t.release = retry_release; /* frees it once the loop is done with it */
        else
            free(s->retry);
    }
    free(s->tls);
    rd_cache_drop(s);
    if (s->dirfd >= 0)
        close_fd(s->dirfd, s->dir); /* also releases the flock */
    free(s->zeros);
    free(s->dir);
    free(s);
}

void
spool_close(struct spool *s)
{
    struct timespec t0, now;

    if (s == NULL || s->closing)
        return;
    s->closing = true;
    log_info(SPOOL_COMPONENT,
             "closing the spool in %s: written " LSN_FMT ", durable " LSN_FMT, s->dir,
             LSN_ARGS(s->write_lsn), LSN_ARGS(s->flush_lsn));
    if (s->in_cb > 0) {
        s->zombie = true; /* freed when the handler unwinds */
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (s->inflight > 0) {
        long ms;

        if (wio_run_once(s->loop, 100) < 0)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms > CLOSE_WAIT_MS)
            break;
    }
    if (s->inflight > 0) {
        log_warning(SPOOL_COMPONENT,
                    "%u operations of the spool in %s still in flight; it is "
                    "freed when they complete",
                    s->inflight, s->dir);
        s->zombie = true;
        return;
    }
    spool_destroy(s);
}
