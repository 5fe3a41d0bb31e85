/*
 * spool.c - the sink's durable WAL spool: append, write, group flush, read and retention;
 * see spool.h for the contract.
 *
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
 *   completed, ONE fdatasync per file written since the previous flush batch began is done;
 *   when all of them completed, flush_lsn becomes the write position the batch started from.
 *   The fdatasyncs are issued after the writes' completions rather than linked behind them
 *   (IOSQE_IO_LINK): writes from earlier appends may already be queued or in flight, and
 *   io_uring orders nothing across separate chains; the rule stays simple - an fdatasync
 *   issued after a write completed covers that write.  A second spool_flush() while a batch is
 *   in flight is served by the next batch.
 *   Inline fdatasync (the default): the batch calls fdatasync(2) on the loop, as PostgreSQL's
 *   walreceiver does (XLogWalRcvFlush), and on_flushed comes before spool_flush returns, so
 *   the owner acknowledges in the same loop turn.  ext4 takes no fsync inline from io_uring:
 *   IORING_OP_FSYNC is handed to an io-wq worker, whose wake-up and completion cost the sink
 *   context switches on every commit.  When the batch starts from a completion (writes that
 *   waited for a segment's preparation), on_flushed comes from that completion.  The loop
 *   waits for the disk meanwhile; nothing else it carries is worth more than the ack that
 *   waits for this fdatasync.  WALMIRROR_SPOOL_SYNC=uring issues the fdatasyncs through
 *   io_uring instead (IORING_OP_FSYNC + IORING_FSYNC_DATASYNC, all in one submit), and
 *   on_flushed then always comes from the loop.
 *
 * Failure
 *   A failed write, fdatasync, zero-fill of a needed segment, rename or directory fsync is
 *   never retried: the spool is failed (spool_failed()), on_failed is called once with a
 *   message naming the file, the LSN and the error, and everything but spool_read and
 *   spool_close is refused.  When the failure is found inside spool_append or spool_flush,
 *   on_failed is delivered from the loop (a NOP completion) so that the caller's stack is
 *   not re-entered.  spool_read keeps serving what was durable before the failure.
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
 * Recovery (spool_recover.c) and identity, history and timeline switches (spool_timeline.c)
 *   live in files of their own; spool_int.h holds what the three share.
 *
 * Threading and lifetime
 *   One loop thread.  spool_close() waits for the spool's SQEs still in flight by turning the
 *   loop (other completions are dispatched meanwhile); it must therefore not be called from
 *   another module's completion callback.  Called from the spool's own callbacks
 *   (on_written/on_flushed/on_failed), it defers the free to the last completion.
 */
#include "spool_int.h"

static void spool_destroy(struct spool *s);
static void sop_cb(struct wio_op *op, int res, unsigned flags);
static void wreq_cb(struct wio_op *op, int res, unsigned flags);
static void maybe_start_batch(struct spool *s);
static void start_renames(struct spool *s);
static void run_retention(struct spool *s);

/* ---- small helpers ---- */

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

int
spool_segs_push(struct spool *s, struct seg *g)
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

void
spool_close_fd(int fd, const char *what)
{
    if (fd >= 0 && close(fd) != 0)
        log_warning(SPOOL_COMPONENT, "close of %s failed: %s", what, strerror(errno));
}

int
spool_fsync_dir(struct spool *s)
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

/* Fails the spool once: logs, refuses everything afterwards, and tells the owner. */
void
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
              "%s; the spool in %s accepts nothing more (durable up to " LSN_FMT ")", s->fail_msg,
              s->dir, LSN_ARGS(s->flush_lsn));
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
        spool_close_fd(g->fd, name);
        g->fd = -1;
        return;
    }
    if (g->fd >= 0) {
        spool_close_fd(g->fd, name);
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
        spool_close_fd(g->fd, name);
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
    log_debug(SPOOL_COMPONENT, "preparing %s for " LSN_FMT, name, LSN_ARGS(seg_start_lsn(s, g)));
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
            spool_fail(s, -EBUSY, "cannot queue the write of " LSN_FMT " to %s", LSN_ARGS(w->lsn),
                       name);
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
    ret = spool_segs_push(s, g);
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
        spool_orphans_settle(s);
    s->in_cb--;
    if (s->zombie && s->inflight == 0 && s->in_cb == 0)
        spool_destroy(s);
}

/*
 * Writes w at once with pwrite(2): into a segment that is OPEN (zero-filled, so the write
 * needs no block allocation and lands in the page cache).  Its completion is reported by
 * fifo_advance from spool_flush, or from an SOP_ADVANCE NOP completion when nobody asks for a
 * flush, never from the caller's stack.
 */
static int
write_inline(struct spool *s, struct wreq *w)
{
    int ret =
        spool_pwrite_full(w->seg->fd, w->data, w->len, walfmt_seg_offset(w->lsn, s->id.seg_size));

    w->complete = true;
    if (ret < 0) {
        char name[FILE_NAME_MAX];

        seg_file_name(s, w->seg, true, name);
        spool_fail(s, ret, "write of " LSN_FMT " (%u bytes) to %s failed: %s", LSN_ARGS(w->lsn),
                   (unsigned)w->len, name, strerror(-ret));
        return s->fail_err;
    }
    w->done = w->len;
    w->seg->dirty = true;
    s->advance_pending = true;
    if (!s->advance_queued) {
        struct sop *o = sop_new(s, NULL, SOP_ADVANCE);
        struct io_uring_sqe *sqe = o != NULL ? sop_sqe(s, o) : NULL;

        if (sqe == NULL) {
            spool_fail(s, o == NULL ? -ENOMEM : -EBUSY,
                       "cannot queue the report of the write of " LSN_FMT, LSN_ARGS(w->lsn));
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
        spool_fail(s, -EBUSY, "cannot queue the write of " LSN_FMT " to %s", LSN_ARGS(lsn), name);
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
        log_error(SPOOL_COMPONENT, "WAL at " LSN_FMT " appended to %s before its identity is known",
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
        log_info(SPOOL_COMPONENT, "spool in %s starts at " LSN_FMT, s->dir, LSN_ARGS(lsn));
    }
    if (lsn > s->append_end) {
        log_error(SPOOL_COMPONENT, "gap: WAL at " LSN_FMT " but the spool in %s ends at " LSN_FMT,
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
 * The batch's fdatasyncs with fdatasync(2) on the loop, one after the other (see "Write and
 * flush"); then the batch is done at once.  A failure fails the spool (never retried).
 */
static void
batch_sync_inline(struct spool *s)
{
    unsigned n = 0;

    for (size_t i = first_live(s); i < s->nsegs; i++)
        n += s->segs[i]->dirty && s->segs[i]->fd >= 0;
    log_debug(SPOOL_COMPONENT, "flush to " LSN_FMT ": %u fdatasync issued",
              LSN_ARGS(s->batch_target), n);
    for (size_t i = first_live(s); i < s->nsegs; i++) {
        struct seg *g = s->segs[i];
        char name[FILE_NAME_MAX];

        if (!g->dirty || g->fd < 0)
            continue;
        g->dirty = false;
        seg_file_name(s, g, true, name);
        if (fdatasync(g->fd) != 0) {
            int err = -errno;

            spool_fail(s, err, "fdatasync of %s (flush to " LSN_FMT ") failed: %s", name,
                       LSN_ARGS(s->batch_target), strerror(-err));
            return;
        }
        log_debug(SPOOL_COMPONENT, "fdatasync of %s done", name);
    }
    batch_done(s);
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
    if (s->inline_sync) {
        batch_sync_inline(s);
        return;
    }
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
    /* With inline fdatasync, on_flushed (and the owner's spool_close in it) may come from
     * here: the spool is then freed below, not under the owner's feet. */
    s->in_flush = true;
    if (s->advance_pending) {
        /* Inline writes are done: the fdatasync can go out in this same turn. */
        s->advance_pending = false;
        fifo_advance(s);
    }
    maybe_start_batch(s);
    s->in_flush = false;
    if (s->zombie) {
        if (s->inflight == 0 && s->in_cb == 0)
            spool_destroy(s);
        return 0;
    }
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
    spool_close_fd(g->fd, name);
    g->fd = -1;
    g->state = SEG_COMPLETE;
    s->rename_active = false;
    log_info(SPOOL_COMPONENT, "%s complete and durable (" LSN_FMT " .. " LSN_FMT ")", name,
             LSN_ARGS(seg_start_lsn(s, g)), LSN_ARGS(seg_end_lsn(s, g)));
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
            spool_close_fd(g->fd, o->to);
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
            spool_close_fd(g->fd, done);
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
        spool_orphans_settle(s);
    free(o);
    s->in_cb--;
    if (s->zombie && s->inflight == 0 && s->in_cb == 0)
        spool_destroy(s);
}

/* ---- retention ---- */

void
spool_rd_cache_drop(struct spool *s)
{
    if (s->rd_fd >= 0)
        spool_close_fd(s->rd_fd, "a spool segment");
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
                 "removed %s (" LSN_FMT " .. " LSN_FMT "): durable up to " LSN_FMT
                 ", keeping %" PRIu64 " bytes, standby needs %s" LSN_FMT,
                 name, LSN_ARGS(seg_start_lsn(s, g)), LSN_ARGS(end), LSN_ARGS(s->flush_lsn),
                 s->keep_bytes, s->retain_lsn != 0 ? "" : "(not set) ", LSN_ARGS(s->retain_lsn));
        if (s->rd_fd >= 0 && s->rd_segno == g->segno)
            spool_rd_cache_drop(s);
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
int
spool_read_fd(struct spool *s, struct seg *g)
{
    char name[FILE_NAME_MAX];

    if (g->fd >= 0)
        return g->fd;
    if (s->rd_fd >= 0 && s->rd_segno == g->segno)
        return s->rd_fd;
    spool_rd_cache_drop(s);
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
        fd = spool_read_fd(s, g);
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
            log_error(SPOOL_COMPONENT, "read of " LSN_FMT " from %s failed: %s", LSN_ARGS(pos),
                      name, r < 0 ? strerror(-err) : "file too short");
            return err;
        }
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* ---- file helpers ---- */

int
spool_pread_full(int fd, void *buf, size_t len, uint64_t off)
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

int
spool_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
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

/* ---- removal ---- */

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
        spool_close_fd(dfd, dir);
        return ret;
    }
    fd2 = dup(dfd);
    if (fd2 < 0 || (d = fdopendir(fd2)) == NULL) {
        ret = -errno;
        snprintf(err, errlen, "cannot list %s: %s", dir, strerror(-ret));
        if (fd2 >= 0)
            spool_close_fd(fd2, dir);
        goto out;
    }
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        bool tmp;

        if (!spool_name_is_segment(e->d_name) && !spool_name_is_history(e->d_name, &tmp))
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
    spool_close_fd(dfd, dir); /* also releases the flock */
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

uint64_t
spool_backlog(const struct spool *s)
{
    return s->append_end > s->write_lsn ? s->append_end - s->write_lsn : 0;
}

bool
spool_failed(const struct spool *s)
{
    return s->failed;
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
        w = getenv("WALMIRROR_SPOOL_SYNC");
        s->inline_sync = w == NULL || strcmp(w, "uring") != 0;
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
                spool_close_fd(pfd, "..");
            goto fail;
        }
        spool_close_fd(pfd, "..");
    }
    if (unlinkat(s->dirfd, META_TMP_NAME, 0) != 0 && errno != ENOENT)
        log_warning(SPOOL_COMPONENT, "cannot remove %s/%s: %s", dir, META_TMP_NAME,
                    strerror(errno));
    ret = spool_meta_load(s, err, errlen);
    if (ret < 0)
        goto fail;
    ret = spool_recover(s, err, errlen);
    if (ret < 0)
        goto fail;
    if (s->id.system_id != 0 && s->tls == NULL) {
        ret = spool_history_load(s, err, errlen);
        if (ret < 0)
            goto fail;
    }
    if (s->positioned)
        log_info(SPOOL_COMPONENT,
                 "spool in %s: system %" PRIu64 ", timeline %u, %zu segments, holds " LSN_FMT
                 " .. " LSN_FMT " (durable)",
                 dir, s->id.system_id, (unsigned)s->id.timeline, s->nsegs, LSN_ARGS(s->start_lsn),
                 LSN_ARGS(s->flush_lsn));
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
            spool_close_fd(s->segs[i]->fd, "a spool segment");
        free(s->segs[i]);
    }
    free(s->segs);
    while (s->orphans != NULL) {
        struct seg *g = s->orphans;

        s->orphans = g->orphan_next;
        if (g->fd >= 0)
            spool_close_fd(g->fd, "a replaced spool segment");
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
    spool_rd_cache_drop(s);
    if (s->dirfd >= 0)
        spool_close_fd(s->dirfd, s->dir); /* also releases the flock */
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
    log_info(SPOOL_COMPONENT, "closing the spool in %s: written " LSN_FMT ", durable " LSN_FMT,
             s->dir, LSN_ARGS(s->write_lsn), LSN_ARGS(s->flush_lsn));
    if (s->in_cb > 0 || s->in_flush) {
        s->zombie = true; /* freed when the handler or spool_flush unwinds */
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
