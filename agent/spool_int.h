/*
 * spool_int.h - what the spool's three files (spool.c, spool_recover.c, spool_timeline.c)
 * share: the spool's structures, the small segment helpers, and the functions one file calls in
 * another.  Internal to the spool: other modules use spool.h.
 */
#ifndef WALMIRROR_AGENT_SPOOL_INT_H
#define WALMIRROR_AGENT_SPOOL_INT_H

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
#define CHUNK_CACHE 2            /* idle chunks kept for reuse (each resident: CHUNK_SIZE) */
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
    bool inline_sync;     /* fdatasync(2) from the loop (see "Write and flush" in spool.c) */
    bool in_flush;        /* inside spool_flush: spool_close defers the free */

    struct spool_timer *retry; /* armed while a segment is NOSPACE; NULL: never needed */
    int stall_err;             /* WAL waits for space: -ENOSPC or -EDQUOT; 0: not stalled */
    uint64_t stall_since_ms;   /* monotonic */
    char stall_msg[384];
};

/* ---- segment helpers ---- */

static inline uint64_t
seg_start_lsn(const struct spool *s, const struct seg *g)
{
    return walfmt_seg_start(g->segno, s->id.seg_size);
}

static inline uint64_t
seg_end_lsn(const struct spool *s, const struct seg *g)
{
    return walfmt_seg_start(g->segno + 1, s->id.seg_size);
}

/* NAME or NAME.partial of g, per its state. */
static inline void
seg_file_name(const struct spool *s, const struct seg *g, bool partial, char out[FILE_NAME_MAX])
{
    walfmt_seg_name(out, g->tli, g->segno, s->id.seg_size);
    if (partial)
        strcat(out, WALFMT_PARTIAL_SUFFIX);
}

static inline bool
seg_is_partial(const struct seg *g)
{
    return g->state != SEG_COMPLETE;
}

static inline struct seg *
seg_lookup(const struct spool *s, uint64_t segno)
{
    if (s->nsegs == 0 || segno < s->segs[0]->segno || segno - s->segs[0]->segno >= s->nsegs)
        return NULL;
    return s->segs[segno - s->segs[0]->segno];
}

/* ---- spool.c ---- */

int spool_segs_push(struct spool *s, struct seg *g);
void spool_close_fd(int fd, const char *what);
/* fsync of the spool directory; the error is logged. */
int spool_fsync_dir(struct spool *s);
/* Fails the spool once: logs, refuses everything afterwards, and tells the owner. */
void spool_fail(struct spool *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void spool_rd_cache_drop(struct spool *s);
/* A descriptor for reading segment g: its own while partial, else a cached one by name. */
int spool_read_fd(struct spool *s, struct seg *g);
/* pread/pwrite of exactly len bytes; -EIO when the file ends first or a write takes 0 bytes. */
int spool_pread_full(int fd, void *buf, size_t len, uint64_t off);
int spool_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/* ---- spool_timeline.c ---- */

/* Writes spool.meta atomically: temporary file, fsync, rename, directory fsync. */
int spool_meta_write(struct spool *s, const struct spool_identity *id);
/* Reads spool.meta; 0 with s->id filled (or left empty if there is none), or an error. */
int spool_meta_load(struct spool *s, char *err, size_t errlen);
/* Loads the history of the current timeline; missing: a warning; damaged: -EINVAL with err. */
int spool_history_load(struct spool *s, char *err, size_t errlen);
/* NAME.partial of segment segno on timeline tli holding its first len bytes, zeros after,
 * fsynced with the directory: the open descriptor, or a negative errno. */
int spool_seg_copy_start(struct spool *s, uint32_t tli, uint64_t segno, int src_fd, uint32_t len,
                         uint64_t file_upto);
/* Frees the orphans of which nothing is in flight or waiting. */
void spool_orphans_settle(struct spool *s);
/* A history file name, %08X.history or %08X.history.tmp (*tmp tells which). */
bool spool_name_is_history(const char *name, bool *tmp);

/* ---- spool_recover.c ---- */

/* A segment file name, NAME or NAME.partial. */
bool spool_name_is_segment(const char *name);
/* Recovers the spool from its directory (see spool_recover.c): 0, or a negative errno with err. */
int spool_recover(struct spool *s, char *err, size_t errlen);

#endif
