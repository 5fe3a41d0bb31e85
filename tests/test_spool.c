/*
 * test_spool.c - the sink's durable WAL spool (agent/spool.c) and the WAL format helpers
 * (agent/walfmt.c).
 *
 * main() makes real WAL once when PostgreSQL 15 is available: initdb, pgbench -i, a little
 * pgbench, pg_switch_wal, as the postgres user; the segments up to the switched one are
 * complete, real WAL.  Tests that need it are registered only then; the others (identity,
 * gaps, reads, retention, a full disk, CRC-32C, names) run on synthetic bytes - the spool does
 * not look into WAL it appends, only recovery reads records.
 *
 * Every case drives the spool through a real wio loop (io_uring) in a temporary directory.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pgtest.h"
#include "spool.h"
#include "testutil.h"
#include "walfmt.h"
#include "wio.h"

#define MIB (1024u * 1024u)
#define SEG16 (16u * MIB)
#define MIN_WAL_BYTES (56u * MIB)
#define WALDUMP "/usr/lib/postgresql/15/bin/pg_waldump"
#define LSN(l) LSN_ARGS(l)

/* ---- the real WAL made in main() ---- */

static char *wal_dir;      /* the original segments */
static uint8_t *wal;       /* all of them, back to back */
static uint64_t wal_start; /* LSN of wal[0]: a segment start */
static uint64_t wal_end;
static uint64_t wal_sysid;
static size_t wal_nsegs;

/* ---- fdatasync, observed ---- */

/*
 * The spool's inline fdatasync (spool.c, "Write and flush") calls this definition: the test
 * program's own symbol wins over libc's for the statically linked spool.  It makes the real
 * system call and, while a test watches, records how far the test had appended when the last
 * successful fdatasync began: nothing past that can be durable.  WALMIRROR_SPOOL_SYNC=uring
 * bypasses it (IORING_OP_FSYNC).
 */
static struct {
    bool watch;
    unsigned calls;
    uint64_t appended;    /* the test's append position, kept up to date by the test */
    uint64_t synced_upto; /* appended when the last successful fdatasync began */
} fds;

int fdatasync(int fd);

int
fdatasync(int fd)
{
    uint64_t upto = fds.appended;
    int r = (int)syscall(SYS_fdatasync, fd);

    if (r == 0 && fds.watch) {
        fds.calls++;
        if (upto > fds.synced_upto)
            fds.synced_upto = upto;
    }
    return r;
}

/* ---- callbacks ---- */

struct cbs {
    uint64_t written, flushed;
    unsigned n_written, n_flushed, n_failed;
    int fail_err;
    char fail_msg[512];
    unsigned n_unstalled;
    bool mark;       /* write markers into the (captured) log */
    bool check_sync; /* on_flushed never past what an fdatasync covered (fds) */
};

static void
cb_written(void *ctx, uint64_t lsn)
{
    struct cbs *c = ctx;

    ck_assert_msg(lsn > c->written, "on_written went from %X/%X to %X/%X", LSN(c->written),
                  LSN(lsn));
    ck_assert_msg(c->n_failed == 0, "on_written after on_failed");
    c->written = lsn;
    c->n_written++;
}

static void
cb_flushed(void *ctx, uint64_t lsn)
{
    struct cbs *c = ctx;

    ck_assert_msg(lsn > c->flushed, "on_flushed went from %X/%X to %X/%X", LSN(c->flushed),
                  LSN(lsn));
    ck_assert_msg(lsn <= c->written, "on_flushed %X/%X beyond on_written %X/%X", LSN(lsn),
                  LSN(c->written));
    ck_assert_msg(c->n_failed == 0, "on_flushed after on_failed");
    if (c->check_sync)
        ck_assert_msg(lsn <= fds.synced_upto,
                      "on_flushed %X/%X but the fdatasyncs so far cover at most %X/%X", LSN(lsn),
                      LSN(fds.synced_upto));
    c->flushed = lsn;
    c->n_flushed++;
    if (c->mark)
        dprintf(2, "TEST on_flushed %X/%X\n", LSN(lsn));
}

static void
cb_failed(void *ctx, int err, const char *what)
{
    struct cbs *c = ctx;

    c->n_failed++;
    c->fail_err = err;
    snprintf(c->fail_msg, sizeof(c->fail_msg), "%s", what);
}

static void
cb_unstalled(void *ctx)
{
    struct cbs *c = ctx;

    c->n_unstalled++;
}

static const struct spool_ops cb_ops = {cb_written, cb_flushed, cb_failed, cb_unstalled};

/* ---- helpers ---- */

/* The spool writes WAL through io_uring (else with pwrite from the loop): the environment
 * variable the spool reads, which CTest sets for test_spool_uring. */
static bool
uring_writes(void)
{
    const char *w = getenv("WALMIRROR_SPOOL_WRITES");

    return w != NULL && strcmp(w, "uring") == 0;
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct spool *
open_spool(struct wio_loop *loop, const char *dir, uint64_t keep, struct cbs *cb)
{
    struct spool *s = NULL;
    char err[512];
    int ret = spool_open(&s, loop, dir, keep, &cb_ops, cb, err, sizeof(err));

    ck_assert_msg(ret == 0, "spool_open(%s): %d %s", dir, ret, err);
    ck_assert(s != NULL);
    return s;
}

static void
set_identity(struct spool *s, uint64_t sysid, uint32_t seg_size)
{
    struct spool_identity id = {sysid, seg_size, 1};

    ck_assert_int_eq(spool_set_identity(s, &id), 0);
}

/* Turns the loop until *pos >= target (or a failure), at most secs seconds. */
static void
run_until(struct wio_loop *loop, struct cbs *cb, const uint64_t *pos, uint64_t target, int secs)
{
    double deadline = now_s() + secs;

    while (*pos < target && cb->n_failed == 0) {
        ck_assert_int_ge(wio_run_once(loop, 100), 0);
        ck_assert_msg(now_s() < deadline, "stuck at %X/%X, waiting for %X/%X", LSN(*pos),
                      LSN(target));
    }
    ck_assert_msg(cb->n_failed == 0, "spool failed: %s", cb->fail_msg);
}

static void
run_for(struct wio_loop *loop, int ms)
{
    double deadline = now_s() + ms / 1000.0;

    while (now_s() < deadline)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
}

static bool
exists(const char *dir, const char *name)
{
    char path[4096];

    tu_require(snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path));
    return access(path, F_OK) == 0;
}

/* Turns the loop until dir/name exists. */
static void
run_until_file(struct wio_loop *loop, const char *dir, const char *name, int secs)
{
    double deadline = now_s() + secs;

    while (!exists(dir, name)) {
        ck_assert_int_ge(wio_run_once(loop, 50), 0);
        ck_assert_msg(now_s() < deadline, "%s/%s never appeared", dir, name);
    }
}

static void
seg_name(char out[40], uint64_t segno, uint32_t seg_size, bool partial)
{
    walfmt_seg_name(out, 1, segno, seg_size);
    if (partial)
        strcat(out, ".partial");
}

static uint32_t
rng_next(uint64_t *st)
{
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*st >> 33);
}

/* Chunk sizes from 1 byte to 1 MiB, biased towards small and aligned to nothing. */
static size_t
rng_size(uint64_t *st)
{
    switch (rng_next(st) % 4) {
    case 0:
        return 1 + rng_next(st) % 100;
    case 1:
        return 1 + rng_next(st) % 8191;
    case 2:
        return 1 + rng_next(st) % 70000;
    default:
        return 1 + rng_next(st) % MIB;
    }
}

/*
 * Appends data[from - base, to - base) in chunks of varying sizes, with spool_flush after
 * every few appends and occasional non-blocking loop turns.
 */
static void
append_range(struct spool *s, struct wio_loop *loop, const uint8_t *data, uint64_t base,
             uint64_t from, uint64_t to, uint64_t seed)
{
    uint64_t st = seed, pos = from;
    unsigned since_flush = 0;

    while (pos < to) {
        size_t n = rng_size(&st);

        if (n > to - pos)
            n = (size_t)(to - pos);
        ck_assert_int_eq(spool_append(s, pos, data + (pos - base), n), 0);
        pos += n;
        if (++since_flush >= 1 + rng_next(&st) % 5) {
            ck_assert_int_eq(spool_flush(s), 0);
            since_flush = 0;
        }
        if (rng_next(&st) % 3 == 0)
            ck_assert_int_ge(wio_run_once(loop, 0), 0);
    }
    ck_assert_int_eq(spool_flush(s), 0);
}

static uint8_t *
synthetic(size_t len, uint64_t seed)
{
    uint8_t *p = malloc(len);
    uint64_t st = seed;

    ck_assert(p != NULL);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)rng_next(&st);
    return p;
}

static void
make_spool_dir(char **tmp, char **dir, const char *tag)
{
    *tmp = tu_tmpdir(tag);
    ck_assert(asprintf(dir, "%s/spool", *tmp) > 0);
}

/* Reads a whole file into a malloc'd buffer (length in *len). */
static uint8_t *
slurp_file(const char *dir, const char *name, size_t *len)
{
    char path[4096];

    tu_require(snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path));
    return tu_read_file(path, len);
}

/* Where a record following one that ends at end would start (after a page header). */
static uint64_t
next_record_pos(uint64_t end)
{
    uint64_t p = WALFMT_MAXALIGN(end);

    if (p % WALFMT_BLCKSZ == 0)
        p += p % SEG16 == 0 ? WALFMT_LONG_PHD_SIZE : WALFMT_SHORT_PHD_SIZE;
    return p;
}

/* One past the last byte of the record starting at rec (in wal[]), crossing page headers. */
static uint64_t
record_end(uint64_t rec)
{
    struct walfmt_record_header rh;
    uint8_t hb[WALFMT_RECORD_HDR_SIZE];
    uint64_t end = rec, left;

    /* The header itself may be split by a page boundary. */
    for (size_t b = 0, pos = rec; b < sizeof(hb); b++, pos++) {
        if (pos % WALFMT_BLCKSZ == 0)
            pos += pos % SEG16 == 0 ? WALFMT_LONG_PHD_SIZE : WALFMT_SHORT_PHD_SIZE;
        hb[b] = wal[pos - wal_start];
    }
    ck_assert_int_eq(walfmt_record_header_parse(hb, sizeof(hb), &rh), 0);
    for (left = rh.tot_len; left > 0;) {
        uint64_t room;

        if (end % WALFMT_BLCKSZ == 0)
            end += end % SEG16 == 0 ? WALFMT_LONG_PHD_SIZE : WALFMT_SHORT_PHD_SIZE;
        room = WALFMT_BLCKSZ - end % WALFMT_BLCKSZ;
        if (room > left)
            room = left;
        end += room;
        left -= room;
    }
    return end;
}

/* ---- pg_waldump ---- */

struct dump {
    uint64_t *lsns; /* record starts, in order */
    size_t n;
    char last_line[1024]; /* the last line that is not a record */
    int status;
};

static void
waldump(struct dump *d, const char *args)
{
    char cmd[8192], line[4096];
    size_t cap = 0;
    FILE *p;

    memset(d, 0, sizeof(*d));
    snprintf(cmd, sizeof(cmd), "%s %s 2>&1", WALDUMP, args);
    p = popen(cmd, "r");
    ck_assert_msg(p != NULL, "cannot run %s", cmd);
    while (fgets(line, sizeof(line), p) != NULL) {
        const char *at = strstr(line, ", lsn: ");
        unsigned hi, lo;

        if (strncmp(line, "rmgr: ", 6) == 0 && at != NULL &&
            sscanf(at, ", lsn: %X/%X", &hi, &lo) == 2) {
            if (d->n == cap) {
                cap = cap ? cap * 2 : 4096;
                d->lsns = realloc(d->lsns, cap * sizeof(*d->lsns));
                ck_assert(d->lsns != NULL);
            }
            d->lsns[d->n++] = (uint64_t)hi << 32 | lo;
            continue;
        }
        line[strcspn(line, "\n")] = '\0';
        line[sizeof(d->last_line) - 1] = '\0';
        memcpy(d->last_line, line, strlen(line) + 1);
    }
    d->status = pclose(p);
}

/* Index of the first record starting at or after lsn. */
static size_t
dump_find(const struct dump *d, uint64_t lsn)
{
    size_t i = 0;

    while (i < d->n && d->lsns[i] < lsn)
        i++;
    ck_assert_msg(i < d->n, "no record at or after %X/%X", LSN(lsn));
    return i;
}

/* ---- the real WAL ---- */

static int
make_wal(void)
{
    wal_dir = pgt_make_wal("spoolwal", 4, MIN_WAL_BYTES);
    if (wal_dir == NULL)
        return -1;
    {
        struct dirent **ents;
        int n = scandir(wal_dir, &ents, NULL, alphasort);
        uint64_t expect = 0;

        tu_require(n > 0);
        for (int i = 0; i < n; i++) {
            uint32_t tli;
            uint64_t segno;
            bool partial;
            size_t len;
            uint8_t *p;

            if (ents[i]->d_name[0] == '.') {
                free(ents[i]);
                continue;
            }
            tu_require(walfmt_parse_seg_name(ents[i]->d_name, SEG16, &tli, &segno, &partial) == 0);
            tu_require(wal_nsegs == 0 || segno == expect, "segments are not contiguous");
            p = slurp_file(wal_dir, ents[i]->d_name, &len);
            tu_require(p != NULL && len == SEG16);
            if (wal_nsegs == 0)
                wal_start = walfmt_seg_start(segno, SEG16);
            wal = realloc(wal, (wal_nsegs + 1) * (size_t)SEG16);
            tu_require(wal != NULL);
            memcpy(wal + wal_nsegs * (size_t)SEG16, p, SEG16);
            free(p);
            wal_nsegs++;
            expect = segno + 1;
            free(ents[i]);
        }
        free(ents);
    }
    wal_end = wal_start + wal_nsegs * (uint64_t)SEG16;
    {
        struct walfmt_page_header ph;

        tu_require(walfmt_page_header_parse(wal, WALFMT_BLCKSZ, &ph) == (int)WALFMT_LONG_PHD_SIZE);
        wal_sysid = ph.sysid;
    }
    fprintf(stderr, "generated %zu WAL segments from %X/%X to %X/%X (system %" PRIu64 ") in %s\n",
            wal_nsegs, LSN(wal_start), LSN(wal_end), wal_sysid, wal_dir);
    return wal_nsegs >= 4 ? 0 : -1;
}

/* The first page of WAL segment i (0-based in wal[]) carries XLP_FIRST_IS_CONTRECORD. */
static bool
seg_starts_with_continuation(size_t i, uint32_t *rem_len)
{
    struct walfmt_page_header ph;

    ck_assert_int_eq(walfmt_page_header_parse(wal + i * (size_t)SEG16, WALFMT_BLCKSZ, &ph),
                     (int)WALFMT_LONG_PHD_SIZE);
    *rem_len = ph.rem_len;
    return (ph.info & WALFMT_XLP_FIRST_IS_CONTRECORD) != 0;
}

/* ==== 1. everything, in uneven chunks: byte-identical segments, pg_waldump reads it ==== */

START_TEST(test_append_all_byte_identical)
{
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s;
    char *tmp, *dir, name[40];
    struct dump orig, copy;
    char args[8192];
    uint64_t st = 99;

    make_spool_dir(&tmp, &dir, "spool1");
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    set_identity(s, wal_sysid, SEG16);
    append_range(s, loop, wal, wal_start, wal_start, wal_end, 12345);
    run_until(loop, &cb, &cb.flushed, wal_end, 120);
    ck_assert_uint_eq(spool_write_lsn(s), wal_end);
    ck_assert_uint_eq(spool_flush_lsn(s), wal_end);
    ck_assert_uint_eq(spool_start_lsn(s), wal_start);
    ck_assert_uint_gt(cb.n_written, wal_nsegs);

    /* Every segment complete (renamed) and byte-identical to the primary's. */
    for (size_t i = 0; i < wal_nsegs; i++) {
        seg_name(name, wal_start / SEG16 + i, SEG16, false);
        run_until_file(loop, dir, name, 30);
        ck_assert_msg(tu_run("cmp -s '%s/%s' '%s/%s'", wal_dir, name, dir, name) == 0,
                      "%s differs from the original", name);
        seg_name(name, wal_start / SEG16 + i, SEG16, true);
        ck_assert_msg(!exists(dir, name), "%s left behind", name);
    }

    /* spool_read across segment boundaries returns the original bytes. */
    for (int i = 0; i < 200; i++) {
        static uint8_t buf[3 * MIB];
        uint64_t at = wal_start + (uint64_t)rng_next(&st) % (wal_end - wal_start);
        size_t len = 1 + rng_next(&st) % sizeof(buf);
        ssize_t n;

        if (i % 4 == 0) /* straddle a boundary */
            at = wal_start + SEG16 * (1 + rng_next(&st) % (wal_nsegs - 1)) - 1 -
                 rng_next(&st) % 9000;
        n = spool_read(s, at, buf, len);
        ck_assert_int_eq(n, (ssize_t)(len < wal_end - at ? len : wal_end - at));
        ck_assert_msg(memcmp(buf, wal + (at - wal_start), (size_t)n) == 0,
                      "spool_read(%X/%X, %zu) differs", LSN(at), len);
    }
    spool_close(s);

    /* pg_waldump reads the spool as it reads the original, and ends the same way. */
    snprintf(args, sizeof(args), "-p '%s' -t 1 -s %X/%X -e %X/%X", wal_dir, LSN(wal_start),
             LSN(wal_end));
    waldump(&orig, args);
    snprintf(args, sizeof(args), "-p '%s' -t 1 -s %X/%X -e %X/%X", dir, LSN(wal_start),
             LSN(wal_end));
    waldump(&copy, args);
    ck_assert_msg(orig.status == 0 && orig.n > 1000, "pg_waldump on the original: %d, %zu, %s",
                  orig.status, orig.n, orig.last_line);
    ck_assert_msg(copy.status == 0, "pg_waldump on the spool failed: %s", copy.last_line);
    ck_assert_uint_eq(copy.n, orig.n);
    ck_assert(memcmp(copy.lsns, orig.lsns, orig.n * sizeof(*orig.lsns)) == 0);
    ck_assert_msg(strstr(copy.last_line, "error") == NULL, "pg_waldump: %s", copy.last_line);
    free(orig.lsns);
    free(copy.lsns);

    /* Reopened: everything is still there and durable. */
    cb = (struct cbs){0};
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    ck_assert_uint_eq(spool_start_lsn(s), wal_start);
    ck_assert_uint_eq(spool_flush_lsn(s), wal_end);
    ck_assert_uint_eq(spool_write_lsn(s), wal_end);
    spool_close(s);
    wio_loop_free(loop);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}
END_TEST

/* ==== 2. positions: monotonic, flush <= write, one fdatasync per file per group flush ==== */

struct batch_check {
    unsigned batches;    /* "flush to" lines */
    unsigned fdatasyncs; /* issued */
    unsigned flushed;    /* on_flushed markers */
    unsigned max_per_batch;
};

/* Checks the captured log: each on_flushed follows its batch's fdatasync completions. */
static void
check_batches(const char *path, struct batch_check *bc)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    bool pending = false;
    uint64_t target = 0;
    unsigned want = 0, done = 0;

    ck_assert(f != NULL);
    memset(bc, 0, sizeof(*bc));
    while (fgets(line, sizeof(line), f) != NULL) {
        const char *p;
        unsigned hi, lo, n;

        if ((p = strstr(line, "spool: flush to ")) != NULL &&
            sscanf(p, "spool: flush to %X/%X: %u fdatasync issued", &hi, &lo, &n) == 3) {
            ck_assert_msg(!pending, "a second batch began before the first completed");
            pending = true;
            target = (uint64_t)hi << 32 | lo;
            want = n;
            done = 0;
            bc->batches++;
            bc->fdatasyncs += n;
            if (n > bc->max_per_batch)
                bc->max_per_batch = n;
        } else if (strstr(line, "spool: fdatasync of ") != NULL && strstr(line, " done") != NULL) {
            ck_assert_msg(pending, "fdatasync completed outside a batch: %s", line);
            done++;
        } else if (sscanf(line, "TEST on_flushed %X/%X", &hi, &lo) == 2) {
            ck_assert_msg(pending, "on_flushed(%X/%X) without a flush batch", hi, lo);
            ck_assert_msg(((uint64_t)hi << 32 | lo) == target,
                          "on_flushed(%X/%X) but the batch flushed to %X/%X", hi, lo, LSN(target));
            ck_assert_msg(done == want, "on_flushed after %u of %u fdatasync completions", done,
                          want);
            pending = false;
            bc->flushed++;
        }
    }
    fclose(f);
}

START_TEST(test_group_flush)
{
    const uint32_t seg = MIB;
    const uint64_t base = 16 * (uint64_t)MIB;
    uint8_t *data = synthetic(4 * MIB, 2);
    struct wio_loop *loop;
    struct cbs cb = {.mark = true};
    struct batch_check bc;
    struct spool *s;
    char *tmp, *dir, logpath[4096];
    uint64_t pos = base;
    int saved, fd, old_level = log_level;

    make_spool_dir(&tmp, &dir, "spool2");
    snprintf(logpath, sizeof(logpath), "%s/log", tmp);
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    set_identity(s, 42, seg);

    fflush(stderr);
    saved = dup(2);
    fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(saved >= 0 && fd >= 0);
    ck_assert_int_ge(dup2(fd, 2), 0);
    close(fd);
    log_level = LOG_LEVEL_DEBUG;

    /* a) 40 appends in one segment, one flush: one fdatasync, one on_flushed. */
    for (int i = 0; i < 40; i++, pos += 1000)
        ck_assert_int_eq(spool_append(s, pos, data + (pos - base), 1000), 0);
    ck_assert_int_eq(spool_flush(s), 0);
    run_until(loop, &cb, &cb.flushed, pos, 30);
    ck_assert_uint_eq(cb.written, pos);
    ck_assert_uint_eq(cb.n_flushed, 1);

    /* b) appends crossing into the next segment, flushes requested twice before the writes
     * complete: one batch, one fdatasync per file touched (two).  With inline writes
     * (spool.c, "Write and flush") the first request finds its writes done and starts a
     * batch at once; the second waits for it: two batches. */
    for (int i = 0; i < 50; i++) {
        size_t n = (base + seg + 5000 - pos) / (size_t)(50 - i);

        ck_assert_int_eq(spool_append(s, pos, data + (pos - base), n), 0);
        pos += n;
        if (i == 20 || i == 49)
            ck_assert_int_eq(spool_flush(s), 0);
    }
    run_until(loop, &cb, &cb.flushed, pos, 30);
    ck_assert_uint_eq(cb.n_flushed, uring_writes() ? 2 : 3);

    /* c) many flush requests interleaved with loop turns: never more batches than flushes,
     * never more than one fdatasync per file in a batch. */
    for (int i = 0; i < 30; i++) {
        size_t n = 777 + 100 * (size_t)i;

        ck_assert_int_eq(spool_append(s, pos, data + (pos - base), n), 0);
        pos += n;
        ck_assert_int_eq(spool_flush(s), 0);
        ck_assert_int_ge(wio_run_once(loop, 0), 0);
    }
    run_until(loop, &cb, &cb.flushed, pos, 30);
    ck_assert_uint_eq(spool_flush_lsn(s), pos);
    ck_assert_uint_le(spool_flush_lsn(s), spool_write_lsn(s));

    log_level = old_level;
    fflush(stderr);
    ck_assert_int_ge(dup2(saved, 2), 0);
    close(saved);

    check_batches(logpath, &bc);
    fprintf(stderr, "group flush: %u batches, %u fdatasyncs, %u on_flushed, at most %u per batch\n",
            bc.batches, bc.fdatasyncs, bc.flushed, bc.max_per_batch);
    ck_assert_uint_eq(bc.flushed, cb.n_flushed);
    ck_assert_uint_eq(bc.batches, cb.n_flushed);
    ck_assert_uint_le(bc.max_per_batch, 2);
    ck_assert_uint_ge(bc.max_per_batch, 2); /* batch b touched two files */
    ck_assert_uint_le(bc.batches, 1 + 2 + 30); /* never more batches than spool_flush calls */
    ck_assert_uint_le(cb.n_written, 40 + 50 + 30 + 2);

    spool_close(s);
    wio_loop_free(loop);
    free(data);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}
END_TEST

/*
 * Never acknowledge WAL that is not durable: every on_flushed position was appended before an
 * fdatasync of the spool began that returned before the on_flushed (the fdatasync observer
 * above).  An on_flushed that preceded its fdatasync, or came from a write's completion alone,
 * would report a position no finished fdatasync covered.  Appends cross segments (so batches
 * wait for a segment's preparation too) and flushes come with and without loop turns between.
 */
START_TEST(test_flush_follows_fdatasync)
{
    const uint32_t seg = MIB;
    const uint64_t base = 16 * (uint64_t)MIB;
    uint8_t *data = synthetic(6 * MIB, 5);
    struct wio_loop *loop;
    struct cbs cb = {.check_sync = true};
    struct spool *s;
    char *tmp, *dir;
    uint64_t pos = base, st = 11;
    const char *sync = getenv("WALMIRROR_SPOOL_SYNC");

    if (sync != NULL && strcmp(sync, "uring") == 0)
        return; /* the fdatasyncs go through io_uring, where the observer does not see them */
    make_spool_dir(&tmp, &dir, "spool-sync");
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    set_identity(s, 42, seg);
    memset(&fds, 0, sizeof(fds));
    fds.appended = fds.synced_upto = pos; /* the empty spool starts durable at base */
    fds.watch = true;
    while (pos < base + 6 * MIB) {
        size_t n = 1 + rng_next(&st) % 90000;

        if (n > base + 6 * MIB - pos)
            n = (size_t)(base + 6 * MIB - pos);
        ck_assert_int_eq(spool_append(s, pos, data + (pos - base), n), 0);
        pos += n;
        fds.appended = pos;
        if (rng_next(&st) % 2 == 0)
            ck_assert_int_eq(spool_flush(s), 0);
        if (rng_next(&st) % 3 == 0)
            ck_assert_int_ge(wio_run_once(loop, 0), 0);
        if (rng_next(&st) % 8 == 0) {
            ck_assert_int_eq(spool_flush(s), 0);
            run_until(loop, &cb, &cb.flushed, pos, 30);
        }
    }
    ck_assert_int_eq(spool_flush(s), 0);
    run_until(loop, &cb, &cb.flushed, pos, 30);
    fds.watch = false;
    fprintf(stderr, "flush follows fdatasync: %u on_flushed, %u fdatasyncs\n", cb.n_flushed,
            fds.calls);
    ck_assert_uint_gt(cb.n_flushed, 5);
    ck_assert_uint_ge(fds.calls, cb.n_flushed); /* each batch here wrote something */
    ck_assert_uint_eq(spool_flush_lsn(s), pos);

    spool_close(s);
    wio_loop_free(loop);
    free(data);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}
END_TEST

/* ==== 3. recovery of a torn tail ==== */

/* Flips the bytes of file dir/name at [off, off + len) (xor: each differs for sure). */
static void
damage(const char *dir, const char *name, uint64_t off, size_t len)
{
    char path[4096];
    uint8_t *buf = malloc(len);
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_RDWR);
    ck_assert_msg(fd >= 0, "open %s", path);
    ck_assert(buf != NULL);
    ck_assert_int_eq(pread(fd, buf, len, (off_t)off), (ssize_t)len);
    for (size_t i = 0; i < len; i++)
        buf[i] ^= (uint8_t)(0x5A + (i % 7) * 0x11) | 1;
    ck_assert_int_eq(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
    ck_assert_int_eq(close(fd), 0);
    free(buf);
}

/* The records of WAL segment i of wal[] as pg_waldump sees them. */
static void
dump_segment(struct dump *d, size_t i)
{
    char args[8192];
    uint64_t from = wal_start + i * (uint64_t)SEG16;

    snprintf(args, sizeof(args), "-p '%s' -t 1 -s %X/%X -e %X/%X", wal_dir, LSN(from),
             LSN(from + SEG16));
    waldump(d, args);
    ck_assert_msg(d->n > 10, "pg_waldump found %zu records: %s", d->n, d->last_line);
}

/*
 * Spool from segment first to the middle of segment part, flushed only partly, closed; the
 * bytes from damage_at on (and 64 KiB beyond what was written) are garbled; the reopened spool
 * must end at expect_end with the rest of the partial segment zeroed.  Then the WAL is sent
 * again from the segment boundary and the segment must come out byte-identical.
 */
static void
recovery_case(const char *tag, size_t first, size_t part, uint64_t written_to, uint64_t damage_at,
              uint64_t expect_end)
{
    uint64_t seg_lsn = wal_start + part * (uint64_t)SEG16;
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s;
    char *tmp, *dir, pname[40], cname[40], logpath[4096];
    uint8_t *file, buf[256];
    size_t len;
    int saved, fd;
    char *log;

    make_spool_dir(&tmp, &dir, tag);
    snprintf(logpath, sizeof(logpath), "%s/log", tmp);
    seg_name(pname, seg_lsn / SEG16, SEG16, true);
    seg_name(cname, seg_lsn / SEG16, SEG16, false);
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    set_identity(s, wal_sysid, SEG16);
    /* Durable up to 1 MiB before the written end; the rest only written. */
    append_range(s, loop, wal, wal_start, wal_start + first * (uint64_t)SEG16, written_to - MIB, 7);
    run_until(loop, &cb, &cb.flushed, written_to - MIB, 60);
    ck_assert_int_eq(spool_append(s, written_to - MIB, wal + (written_to - MIB - wal_start), MIB),
                     0);
    run_until(loop, &cb, &cb.written, written_to, 30);
    ck_assert_uint_eq(cb.flushed, written_to - MIB);
    spool_close(s);

    damage(dir, pname, damage_at - seg_lsn, (size_t)(written_to + 64 * 1024 - damage_at));

    /* Reopen, with the log captured to see what recovery says. */
    fflush(stderr);
    saved = dup(2);
    fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(saved >= 0 && fd >= 0);
    ck_assert_int_ge(dup2(fd, 2), 0);
    close(fd);
    cb = (struct cbs){0};
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    fflush(stderr);
    ck_assert_int_ge(dup2(saved, 2), 0);
    close(saved);
    log = (char *)slurp_file(tmp, "log", &len);
    ck_assert(log != NULL);
    fprintf(stderr, "%s", log);
    ck_assert_msg(strstr(log, pname) != NULL && strstr(log, "bytes of torn tail discarded"),
                  "recovery did not report the torn tail of %s", pname);
    free(log);

    ck_assert_msg(spool_flush_lsn(s) == expect_end, "recovered to %X/%X, expected %X/%X",
                  LSN(spool_flush_lsn(s)), LSN(expect_end));
    ck_assert_uint_eq(spool_write_lsn(s), expect_end);
    ck_assert_uint_eq(spool_start_lsn(s), wal_start + first * (uint64_t)SEG16);
    /* The tail is zeroed, what precedes it is the original. */
    file = slurp_file(dir, pname, &len);
    ck_assert(file != NULL);
    ck_assert_uint_eq(len, SEG16);
    ck_assert(memcmp(file, wal + (seg_lsn - wal_start), expect_end - seg_lsn) == 0);
    {
        size_t i = (size_t)(expect_end - seg_lsn);

        while (i < len && file[i] == 0) /* no ck_assert per byte: each one logs a mark */
            i++;
        ck_assert_msg(i == len, "byte %zu of %s is not zero after recovery", i, pname);
    }
    free(file);
    /* Reads stop at the durable end. */
    ck_assert_int_eq(spool_read(s, expect_end, buf, sizeof(buf)), 0);
    ck_assert_int_eq(spool_read(s, expect_end - 100, buf, sizeof(buf)), 100);
    ck_assert(memcmp(buf, wal + (expect_end - 100 - wal_start), 100) == 0);

    /* The source restarts at the segment boundary: the overlap is skipped, the rest written. */
    append_range(s, loop, wal, wal_start, seg_lsn, seg_lsn + 2 * (uint64_t)SEG16, 8);
    run_until(loop, &cb, &cb.flushed, seg_lsn + 2 * (uint64_t)SEG16, 60);
    run_until_file(loop, dir, cname, 30);
    ck_assert_msg(tu_run("cmp -s '%s/%s' '%s/%s'", wal_dir, cname, dir, cname) == 0,
                  "%s differs from the original after recovery and re-sending", cname);
    spool_close(s);
    wio_loop_free(loop);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}

START_TEST(test_recovery_torn_tail)
{
    struct dump d;
    uint64_t seg2 = wal_start + 2 * (uint64_t)SEG16;
    uint64_t written_to = seg2 + 5 * (uint64_t)MIB + 12345;
    uint64_t end;
    size_t k;

    /* Segments 0 and 1 complete, 2 partial, durable to 4 MiB + 12345 and written 1 MiB further;
     * a record after the durable part torn (its length word and everything after it). */
    dump_segment(&d, 2);
    k = dump_find(&d, seg2 + 4 * (uint64_t)MIB + MIB / 2);
    ck_assert_uint_gt(k, 0);
    /* The valid WAL ends where record k - 1 ends; the next record would start at lsns[k]. */
    end = record_end(d.lsns[k - 1]);
    ck_assert_uint_eq(next_record_pos(end), d.lsns[k]);
    recovery_case("spool3a", 0, 2, written_to, d.lsns[k] + 3, end);
    free(d.lsns);
}
END_TEST

/* Finds a segment (not the first nor the last) whose first page continues a record. */
static size_t
continued_segment(void)
{
    for (size_t i = 1; i + 1 < wal_nsegs; i++) {
        uint32_t rem;

        if (seg_starts_with_continuation(i, &rem) && rem > 64)
            return i;
    }
    return 0;
}

START_TEST(test_recovery_continuation_skipped)
{
    size_t i = continued_segment();
    uint64_t seg_lsn, end;
    struct dump d;
    size_t k;

    if (i == 0) {
        fprintf(stderr, "no segment starts with a continuation record: case skipped\n");
        return;
    }
    /* The spool starts at segment i: the continuation at its start is skipped by xlp_rem_len,
     * the records after it are checked, the torn one ends the valid WAL. */
    seg_lsn = wal_start + i * (uint64_t)SEG16;
    dump_segment(&d, i);
    k = dump_find(&d, seg_lsn + 2 * (uint64_t)MIB + MIB / 2);
    ck_assert_uint_gt(k, 1);
    end = record_end(d.lsns[k - 1]);
    ck_assert_uint_eq(next_record_pos(end), d.lsns[k]);
    recovery_case("spool3b", i, i, seg_lsn + 3 * (uint64_t)MIB + 999, d.lsns[k], end);
    free(d.lsns);
}
END_TEST

START_TEST(test_recovery_crossing_record_checked)
{
    size_t i = continued_segment();
    uint32_t rem;

    if (i == 0) {
        fprintf(stderr, "no segment starts with a continuation record: case skipped\n");
        return;
    }
    /* Segment i - 1 complete, i partial: the record crossing into i is CRC-checked, so bytes
     * torn inside its continuation make the valid WAL end at the start of segment i. */
    ck_assert(seg_starts_with_continuation(i, &rem));
    recovery_case("spool3c", i - 1, i, wal_start + i * (uint64_t)SEG16 + 2 * (uint64_t)MIB,
                  wal_start + i * (uint64_t)SEG16 + WALFMT_LONG_PHD_SIZE + 8,
                  wal_start + i * (uint64_t)SEG16);
}
END_TEST

/* ==== 4. identity ==== */

START_TEST(test_identity)
{
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s, *other;
    struct spool_identity id = {7000000000000000001ull, SEG16, 1};
    struct spool_identity bad;
    char *tmp, *dir, err[512], *meta, path[4096];
    uint8_t byte = 1;
    size_t len;
    FILE *f;

    make_spool_dir(&tmp, &dir, "spool4");
    ck_assert_int_eq(wio_loop_new(&loop, 64), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    ck_assert_uint_eq(spool_identity(s)->system_id, 0);
    ck_assert_uint_eq(spool_start_lsn(s), 0);
    ck_assert_int_eq(spool_append(s, SEG16, &byte, 1), -EINVAL); /* no identity yet */
    ck_assert_int_eq(spool_set_identity(s, &id), 0);
    ck_assert_int_eq(spool_set_identity(s, &id), 0); /* the same again */
    bad = id;
    bad.system_id++;
    ck_assert_int_eq(spool_set_identity(s, &bad), -EEXIST);
    bad = id;
    bad.seg_size = MIB;
    ck_assert_int_eq(spool_set_identity(s, &bad), -EEXIST);
    bad = id;
    bad.seg_size = 3 * MIB;
    ck_assert_int_eq(spool_set_identity(s, &bad), -EINVAL);
    bad = id;
    bad.timeline = 3;
    ck_assert_int_eq(spool_set_identity(s, &bad), 0);
    ck_assert_uint_eq(spool_identity(s)->timeline, 3);
    bad.timeline = 2; /* lower: kept at 3 */
    ck_assert_int_eq(spool_set_identity(s, &bad), 0);
    ck_assert_uint_eq(spool_identity(s)->timeline, 3);

    /* A second opener of the same directory is refused while the first holds it. */
    ck_assert_int_eq(spool_open(&other, loop, dir, 0, &cb_ops, &cb, err, sizeof(err)), -EBUSY);
    ck_assert_msg(strstr(err, "in use") != NULL, "%s", err);
    spool_close(s);

    meta = (char *)slurp_file(dir, "spool.meta", &len);
    ck_assert(meta != NULL);
    ck_assert_msg(strstr(meta, "system_identifier = 7000000000000000001") != NULL, "%s", meta);
    ck_assert_msg(strstr(meta, "timeline = 3") != NULL, "%s", meta);
    free(meta);
    ck_assert(!exists(dir, "spool.meta.tmp"));

    /* It survives reopening. */
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    ck_assert_uint_eq(spool_identity(s)->system_id, id.system_id);
    ck_assert_uint_eq(spool_identity(s)->seg_size, SEG16);
    ck_assert_uint_eq(spool_identity(s)->timeline, 3);
    bad = id;
    bad.system_id = 99;
    ck_assert_int_eq(spool_set_identity(s, &bad), -EEXIST);
    ck_assert_uint_eq(spool_identity(s)->system_id, id.system_id);
    spool_close(s);

    /* A damaged spool.meta is an error naming it. */
    snprintf(path, sizeof(path), "%s/spool.meta", dir);
    f = fopen(path, "w");
    ck_assert(f != NULL);
    fputs("system_identifier = banana\n", f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(spool_open(&other, loop, dir, 0, &cb_ops, &cb, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "spool.meta") != NULL, "%s", err);
    ck_assert(other == NULL);

    wio_loop_free(loop);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}
END_TEST

/* Without spool.meta, the identity comes from the oldest segment's long page header. */
START_TEST(test_identity_from_segment)
{
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s;
    char *tmp, *dir, path[4096];

    make_spool_dir(&tmp, &dir, "spool4b");
    ck_assert_int_eq(wio_loop_new(&loop, 64), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    set_identity(s, wal_sysid, SEG16);
    append_range(s, loop, wal, wal_start, wal_start, wal_start + SEG16 + 3 * MIB, 4);
    run_until(loop, &cb, &cb.flushed, wal_start + SEG16 + 3 * MIB, 60);
    spool_close(s);
    snprintf(path, sizeof(path), "%s/spool.meta", dir);
    ck_assert_int_eq(unlink(path), 0);
    cb = (struct cbs){0};
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    ck_assert_uint_eq(spool_identity(s)->system_id, wal_sysid);
    ck_assert_uint_eq(spool_identity(s)->seg_size, SEG16);
    ck_assert_uint_eq(spool_identity(s)->timeline, 1);
    ck_assert(exists(dir, "spool.meta"));
    /* Recovery found the end of the last whole record before the written end. */
    ck_assert_uint_le(spool_flush_lsn(s), wal_start + SEG16 + 3 * MIB);
    ck_assert_uint_gt(spool_flush_lsn(s), wal_start + SEG16 + 3 * MIB - 64 * 1024);
    spool_close(s);
    wio_loop_free(loop);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}
END_TEST

/* ==== 5. gaps and overlaps ==== */

START_TEST(test_gap_and_overlap)
{
    const uint32_t seg = MIB;
    const uint64_t base = 64 * (uint64_t)MIB;
    const size_t total = 4 * MIB;
    uint8_t *data = synthetic(total, 5);
    uint8_t *other = synthetic(total, 6);
    uint8_t *back = malloc(total);
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s;
    char *tmp, *dir, name[40];
    uint64_t end = base + 2 * (uint64_t)MIB + MIB / 2;
    size_t len;
    uint8_t *file;

    make_spool_dir(&tmp, &dir, "spool5");
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    set_identity(s, 42, seg);
    /* An empty spool starts at a segment boundary only. */
    ck_assert_int_eq(spool_append(s, base + 5, data, 100), -EINVAL);
    ck_assert_uint_eq(spool_start_lsn(s), 0);
    append_range(s, loop, data, base, base, end, 1);
    run_until(loop, &cb, &cb.flushed, end, 30);
    /* A gap is refused and changes nothing. */
    ck_assert_int_eq(spool_append(s, end + 1, data, 10), -EINVAL);
    ck_assert_int_eq(spool_append(s, base + 3 * (uint64_t)MIB, data, 10), -EINVAL);
    ck_assert_uint_eq(spool_write_lsn(s), end);
    ck_assert(!spool_failed(s));
    /* Wholly held: accepted, nothing written. */
    ck_assert_int_eq(spool_append(s, base, other, MIB), 0);
    ck_assert_int_eq(spool_append(s, base + MIB, other, 1), 0);
    /* Re-sent from a segment boundary, overlapping what is held (with other bytes, which must
     * not land) and going on: only the new part is written. */
    ck_assert_int_eq(spool_append(s, base + MIB, other, (size_t)(end - base - MIB)), 0);
    ck_assert_int_eq(spool_append(s, base + MIB, data + MIB, 2 * MIB), 0);
    ck_assert_int_eq(spool_flush(s), 0);
    run_until(loop, &cb, &cb.flushed, base + 3 * (uint64_t)MIB, 30);
    ck_assert_int_eq(spool_read(s, base, back, total), 3 * MIB);
    ck_assert(memcmp(back, data, 3 * MIB) == 0);
    seg_name(name, base / seg + 1, seg, false);
    run_until_file(loop, dir, name, 30);
    file = slurp_file(dir, name, &len);
    ck_assert(file != NULL && len == seg);
    ck_assert(memcmp(file, data + MIB, seg) == 0);
    free(file);
    spool_close(s);
    wio_loop_free(loop);
    free(data);
    free(other);
    free(back);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}
END_TEST

/* ==== 6. reading ==== */

START_TEST(test_read)
{
    const uint32_t seg = MIB;
    const uint64_t base = 32 * (uint64_t)MIB;
    uint8_t *data = synthetic(4 * MIB, 9);
    uint8_t buf[10000];
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s;
    char *tmp, *dir, name[40];
    uint64_t end = base + 3 * (uint64_t)MIB + 4321;

    make_spool_dir(&tmp, &dir, "spool6");
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    ck_assert_int_eq(spool_read(s, base, buf, sizeof(buf)), 0); /* empty */
    set_identity(s, 42, seg);
    append_range(s, loop, data, base, base, end, 3);
    run_until(loop, &cb, &cb.flushed, end, 30);
    seg_name(name, base / seg + 2, seg, false);
    run_until_file(loop, dir, name, 30);
    /* Across each boundary: complete -> complete, complete -> partial. */
    for (int b = 1; b <= 3; b++) {
        uint64_t at = base + (uint64_t)b * seg - 3333;

        ck_assert_int_eq(spool_read(s, at, buf, sizeof(buf)),
                         (ssize_t)(end - at < sizeof(buf) ? end - at : sizeof(buf)));
        ck_assert(
            memcmp(buf, data + (at - base), end - at < sizeof(buf) ? end - at : sizeof(buf)) == 0);
    }
    ck_assert_int_eq(spool_read(s, base - 1, buf, 10), -ENOENT);
    ck_assert_int_eq(spool_read(s, 0, buf, 10), -ENOENT);
    ck_assert_int_eq(spool_read(s, end - 10, buf, 100), 10);
    ck_assert_int_eq(spool_read(s, end, buf, 100), 0);
    ck_assert_int_eq(spool_read(s, end + MIB, buf, 100), 0);
    ck_assert_int_eq(spool_read(s, base, buf, 0), 0);
    /* Written but not flushed is not served. */
    ck_assert_int_eq(spool_append(s, end, data + (end - base), 1000), 0);
    run_until(loop, &cb, &cb.written, end + 1000, 30);
    ck_assert_int_eq(spool_read(s, end - 10, buf, 100), 10);
    spool_close(s);
    wio_loop_free(loop);
    free(data);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}
END_TEST

/* ==== 7. retention ==== */

static size_t
count_segments(const char *dir, uint64_t *oldest)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;

    ck_assert(d != NULL);
    *oldest = UINT64_MAX;
    while ((e = readdir(d)) != NULL) {
        uint32_t tli;
        uint64_t segno;
        bool partial;

        if (walfmt_parse_seg_name(e->d_name, MIB, &tli, &segno, &partial) != 0 || partial)
            continue;
        n++;
        if (segno < *oldest)
            *oldest = segno;
    }
    closedir(d);
    return n;
}

START_TEST(test_retention)
{
    const uint32_t seg = MIB;
    const uint64_t base = 16 * (uint64_t)MIB;
    const uint64_t end = base + 8 * (uint64_t)MIB;
    uint8_t *data = synthetic(8 * MIB, 11);
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s;
    char *tmp, *dir, name[40];
    uint64_t oldest;
    uint8_t byte;

    make_spool_dir(&tmp, &dir, "spool7");
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    s = open_spool(loop, dir, 5 * (uint64_t)MIB / 2, &cb); /* keep 2.5 MiB */
    set_identity(s, 42, seg);
    spool_set_retain_lsn(s, base + 3 * (uint64_t)MIB + 100); /* the standby needs segment 3 */
    append_range(s, loop, data, base, base, end, 5);
    run_until(loop, &cb, &cb.flushed, end, 30);
    seg_name(name, end / seg - 1, seg, false);
    run_until_file(loop, dir, name, 30);
    run_for(loop, 100);
    /* keep_bytes would remove segments 0..4 (ends <= 5.5 MiB behind), the retain LSN only 0..2. */
    ck_assert_uint_eq(spool_start_lsn(s), base + 3 * (uint64_t)MIB);
    ck_assert_uint_eq(count_segments(dir, &oldest), 5);
    ck_assert_uint_eq(oldest, base / seg + 3);
    ck_assert_int_eq(spool_read(s, base + 3 * (uint64_t)MIB - 1, &byte, 1), -ENOENT);
    ck_assert_int_eq(spool_read(s, base + 3 * (uint64_t)MIB, &byte, 1), 1);
    /* The standby moves on: keep_bytes alone decides. */
    spool_set_retain_lsn(s, end);
    ck_assert_uint_eq(spool_start_lsn(s), base + 5 * (uint64_t)MIB);
    ck_assert_uint_eq(count_segments(dir, &oldest), 3);
    ck_assert_uint_eq(oldest, base / seg + 5);
    spool_close(s);

    /* keep 0 and no retain LSN: everything but the segment holding the last durable byte. */
    cb = (struct cbs){0};
    s = open_spool(loop, dir, 0, &cb);
    ck_assert_uint_eq(spool_flush_lsn(s), end);
    spool_set_retain_lsn(s, 0);
    ck_assert_uint_eq(spool_start_lsn(s), end - seg);
    ck_assert_uint_eq(count_segments(dir, &oldest), 1);
    ck_assert_uint_eq(oldest, end / seg - 1);
    ck_assert_int_eq(spool_read(s, end - 1, &byte, 1), 1);
    ck_assert_uint_eq(byte, data[end - 1 - base]);
    spool_close(s);
    /* And a restart still finds its position. */
    cb = (struct cbs){0};
    s = open_spool(loop, dir, 0, &cb);
    ck_assert_uint_eq(spool_flush_lsn(s), end);
    ck_assert_uint_eq(spool_start_lsn(s), end - seg);
    spool_close(s);
    wio_loop_free(loop);
    free(data);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}
END_TEST

/* ==== 8. a full disk ==== */

static char *mnt_dir; /* made in main(), mounted by the test */

static void
unmount_tmpfs(void)
{
    if (mnt_dir != NULL)
        (void)tu_run("umount '%s' 2>/dev/null", mnt_dir);
}

START_TEST(test_disk_full)
{
    const uint64_t base = SEG16, seg2 = 2 * (uint64_t)SEG16;
    const size_t total = 20 * MIB; /* the first segment, and 4 MB into the second */
    uint8_t *data;
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s;
    char dir[4096], name[40];
    const char *what = NULL;
    uint64_t pos = base;
    uint8_t *file;
    size_t len;

    if (geteuid() != 0 || mnt_dir == NULL) {
        fprintf(stderr, "not root: full-disk case skipped\n");
        return;
    }
    if (tu_run("mount -t tmpfs -o size=20m tmpfs '%s'", mnt_dir) != 0) {
        fprintf(stderr, "cannot mount a tmpfs: full-disk case skipped\n");
        return;
    }
    atexit(unmount_tmpfs); /* also after a failed assertion (Check exits the test process) */
    data = synthetic(total, 13);
    snprintf(dir, sizeof(dir), "%s/spool", mnt_dir);
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    set_identity(s, 42, SEG16);

    /* The first segment fits (20 MB) and becomes durable; the second cannot be prepared. */
    while (pos < seg2) {
        ck_assert_int_eq(spool_append(s, pos, data + (pos - base), 256 * 1024), 0);
        pos += 256 * 1024;
        ck_assert_int_eq(spool_flush(s), 0);
        run_until(loop, &cb, &cb.flushed, pos, 30);
    }
    ck_assert_int_eq(spool_stalled(s, NULL), 0); /* nothing waits yet */
    /* WAL due in the second segment: it waits, the spool is stalled, not failed. */
    while (pos < base + total) {
        ck_assert_int_eq(spool_append(s, pos, data + (pos - base), 256 * 1024), 0);
        pos += 256 * 1024;
        ck_assert_int_eq(spool_flush(s), 0);
    }
    run_for(loop, 2500); /* two looks at the free space */
    ck_assert_msg(cb.n_failed == 0, "a full disk failed the spool: %s", cb.fail_msg);
    ck_assert_int_eq(spool_stalled(s, &what), -ENOSPC);
    fprintf(stderr, "full disk: %s\n", what);
    seg_name(name, seg2 / SEG16, SEG16, true);
    ck_assert_msg(strstr(what, name) != NULL, "message does not name %s: %s", name, what);
    ck_assert_msg(strstr(what, "No space left on device") != NULL, "%s", what);
    ck_assert_msg(strstr(what, dir) != NULL, "message does not name %s: %s", dir, what);
    ck_assert_msg(strstr(what, "0/2000000") != NULL, "message lacks the LSN: %s", what);
    ck_assert(!spool_failed(s));
    ck_assert(!exists(dir, name)); /* the attempt's file is gone */
    /* Nothing past the first segment is reported written or durable. */
    ck_assert_uint_eq(cb.flushed, seg2);
    ck_assert_uint_eq(cb.written, seg2);
    ck_assert_uint_eq(spool_flush_lsn(s), seg2);
    ck_assert_uint_eq(cb.n_unstalled, 0);
    ck_assert_int_eq(spool_set_timeline(s, 2, base + total, "1\t0/2400000\tno recovery target\n",
                                        sizeof("1\t0/2400000\tno recovery target\n") - 1),
                     -EAGAIN);

    /* Space returns: the segment is prepared, the waiting WAL written and made durable. */
    ck_assert_int_eq(tu_run("mount -o remount,size=40m '%s'", mnt_dir), 0);
    ck_assert_int_eq(spool_flush(s), 0);
    run_until(loop, &cb, &cb.flushed, pos, 30);
    ck_assert_uint_eq(cb.n_unstalled, 1);
    ck_assert_int_eq(spool_stalled(s, &what), 0);
    ck_assert_str_eq(what, "");
    ck_assert_uint_eq(cb.n_failed, 0);
    spool_close(s);

    /* No corruption: every byte is in its file, and recovery finds the same end. */
    seg_name(name, base / SEG16, SEG16, false);
    file = slurp_file(dir, name, &len);
    ck_assert_msg(file != NULL && len == SEG16, "%s/%s missing or short", dir, name);
    ck_assert(memcmp(file, data, SEG16) == 0);
    free(file);
    seg_name(name, seg2 / SEG16, SEG16, true);
    file = slurp_file(dir, name, &len);
    ck_assert_msg(file != NULL && len == SEG16, "%s/%s missing or short", dir, name);
    ck_assert(memcmp(file, data + SEG16, total - SEG16) == 0);
    free(file);
    memset(&cb, 0, sizeof(cb));
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    ck_assert_uint_ge(spool_flush_lsn(s), seg2); /* synthetic bytes: the scan stops early */
    ck_assert_int_eq(spool_stalled(s, NULL), 0);
    spool_close(s);
    wio_loop_free(loop);
    free(data);
    unmount_tmpfs();
}
END_TEST

/* ==== 9. walfmt ==== */

START_TEST(test_crc32c)
{
    static const uint8_t zeros[32];
    uint8_t ones[32], inc[32], *buf = synthetic(70000, 17);
    uint64_t st = 3;

    memset(ones, 0xFF, sizeof(ones));
    for (int i = 0; i < 32; i++)
        inc[i] = (uint8_t)i;
    fprintf(stderr, "CRC-32C implementation: %s\n", walfmt_crc32c_impl());
    ck_assert_uint_eq(walfmt_crc32c("123456789", 9), 0xE3069283u);
    ck_assert_uint_eq(walfmt_crc32c("", 0), 0);
    ck_assert_uint_eq(walfmt_crc32c(zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
    ck_assert_uint_eq(walfmt_crc32c(ones, 32), 0x62A8AB43u);
    ck_assert_uint_eq(walfmt_crc32c(inc, 32), 0x46DD794Eu);
    ck_assert_uint_eq(
        walfmt_crc32c_final(walfmt_crc32c_update_sw(walfmt_crc32c_init(), "123456789", 9)),
        0xE3069283u);
    /* Any split, any alignment: the same as one pass, and the table agrees with the CPU. */
    for (int i = 0; i < 300; i++) {
        size_t off = rng_next(&st) % 64, len = rng_next(&st) % (70000 - 64);
        size_t cut = len > 0 ? rng_next(&st) % len : 0;
        uint32_t whole = walfmt_crc32c(buf + off, len);
        uint32_t parts = walfmt_crc32c_update(walfmt_crc32c_init(), buf + off, cut);

        parts = walfmt_crc32c_final(walfmt_crc32c_update(parts, buf + off + cut, len - cut));
        ck_assert_uint_eq(parts, whole);
        ck_assert_uint_eq(
            walfmt_crc32c_final(walfmt_crc32c_update_sw(walfmt_crc32c_init(), buf + off, len)),
            whole);
    }
    free(buf);
}
END_TEST

START_TEST(test_segment_names)
{
    char name[WALFMT_NAME_LEN + 1];
    uint32_t tli;
    uint64_t segno;
    bool partial;

    walfmt_seg_name(name, 1, 0x123, SEG16);
    ck_assert_str_eq(name, "000000010000000100000023");
    walfmt_seg_name(name, 0xA, 5, WALFMT_MAX_SEG_SIZE);
    ck_assert_str_eq(name, "0000000A0000000100000001");
    for (uint64_t size = WALFMT_MIN_SEG_SIZE; size <= WALFMT_MAX_SEG_SIZE; size *= 2) {
        uint64_t per = 0x100000000ull / size;
        uint64_t samples[] = {
            0, 1, per - 1, per, per + 1, 7 * per + 3, (0xFFFFFFFFull + 1) * per - 1};

        ck_assert(walfmt_seg_size_valid(size));
        for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
            char full[40];

            walfmt_seg_name(name, 3, samples[i], (uint32_t)size);
            ck_assert_int_eq(walfmt_parse_seg_name(name, (uint32_t)size, &tli, &segno, &partial),
                             0);
            ck_assert_uint_eq(tli, 3);
            ck_assert_uint_eq(segno, samples[i]);
            ck_assert(!partial);
            ck_assert_uint_eq(walfmt_segno(walfmt_seg_start(samples[i], (uint32_t)size) + size - 1,
                                           (uint32_t)size),
                              samples[i]);
            snprintf(full, sizeof(full), "%s.partial", name);
            ck_assert_int_eq(walfmt_parse_seg_name(full, (uint32_t)size, &tli, &segno, &partial),
                             0);
            ck_assert(partial);
            ck_assert_uint_eq(segno, samples[i]);
            ck_assert_int_eq(walfmt_parse_seg_name(full, (uint32_t)size, &tli, &segno, NULL),
                             -EINVAL);
        }
    }
    ck_assert(!walfmt_seg_size_valid(3 * MIB));
    ck_assert(!walfmt_seg_size_valid(MIB / 2));
    ck_assert(!walfmt_seg_size_valid(2ull * WALFMT_MAX_SEG_SIZE));
    ck_assert_int_eq(
        walfmt_parse_seg_name("00000001000000000000000a", SEG16, &tli, &segno, &partial), -EINVAL);
    ck_assert_int_eq(
        walfmt_parse_seg_name("00000001000000000000000", SEG16, &tli, &segno, &partial), -EINVAL);
    ck_assert_int_eq(walfmt_parse_seg_name("00000001.history", SEG16, &tli, &segno, &partial),
                     -EINVAL);
    ck_assert_int_eq(
        walfmt_parse_seg_name("000000010000000000000001.backup", SEG16, &tli, &segno, &partial),
        -EINVAL);
    ck_assert_int_eq(
        walfmt_parse_seg_name("000000000000000000000001", SEG16, &tli, &segno, &partial),
        -EINVAL); /* timeline 0 */
    ck_assert_int_eq(
        walfmt_parse_seg_name("000000010000000000000100", SEG16, &tli, &segno, &partial),
        -EINVAL); /* 256 segments of 16 MiB per xlogid */
    ck_assert_int_eq(walfmt_parse_seg_name("000000010000000000000004", WALFMT_MAX_SEG_SIZE, &tli,
                                           &segno, &partial),
                     -EINVAL);
    ck_assert_uint_eq(walfmt_seg_offset(0x12345678ull, SEG16), 0x345678u);
}
END_TEST

static ssize_t
read_from_wal(void *ctx, uint64_t lsn, void *buf, size_t len)
{
    (void)ctx;
    if (lsn >= wal_end)
        return 0;
    if (len > wal_end - lsn)
        len = (size_t)(wal_end - lsn);
    memcpy(buf, wal + (lsn - wal_start), len);
    return (ssize_t)len;
}

START_TEST(test_scanner_matches_waldump)
{
    struct walfmt_scan_params sp = {.seg_size = SEG16,
                                    .sysid = wal_sysid,
                                    .start = wal_start,
                                    .limit = wal_end,
                                    .read = read_from_wal};
    struct walfmt_scan sc;
    struct dump d;
    char args[8192];
    struct walfmt_page_header ph;
    char why[256];

    /* Page headers of the real WAL. */
    ck_assert_int_eq(walfmt_page_header_parse(wal, 40, &ph), (int)WALFMT_LONG_PHD_SIZE);
    ck_assert(walfmt_page_header_check(&ph, wal_start, SEG16, wal_sysid, why, sizeof(why)));
    ck_assert(!walfmt_page_header_check(&ph, wal_start, SEG16, wal_sysid + 1, why, sizeof(why)));
    ck_assert_msg(strstr(why, "different database system") != NULL, "%s", why);
    ck_assert(
        !walfmt_page_header_check(&ph, wal_start + SEG16, SEG16, wal_sysid, why, sizeof(why)));
    ck_assert_int_eq(walfmt_page_header_parse(wal + WALFMT_BLCKSZ, 24, &ph),
                     (int)WALFMT_SHORT_PHD_SIZE);
    ck_assert(walfmt_page_header_check(&ph, wal_start + WALFMT_BLCKSZ, SEG16, wal_sysid, why,
                                       sizeof(why)));
    ck_assert_int_eq(walfmt_page_header_parse(wal, 20, &ph), -EINVAL);

    /* All of it: the same records as pg_waldump, ending with the XLOG_SWITCH. */
    ck_assert_int_eq(walfmt_scan(&sp, &sc), 0);
    snprintf(args, sizeof(args), "-p '%s' -t 1 -s %X/%X -e %X/%X", wal_dir, LSN(wal_start),
             LSN(wal_end));
    waldump(&d, args);
    fprintf(stderr,
            "scanner: %" PRIu64 " records, last at %X/%X, ends %X/%X (%s: %s); "
            "pg_waldump: %zu records, last at %X/%X\n",
            sc.records, LSN(sc.last_lsn), LSN(sc.end_lsn), walfmt_stop_name(sc.stop), sc.why, d.n,
            LSN(d.n > 0 ? d.lsns[d.n - 1] : 0));
    ck_assert_uint_eq(sc.records, d.n);
    ck_assert_uint_eq(sc.first_lsn, d.lsns[0]);
    ck_assert_uint_eq(sc.last_lsn, d.lsns[d.n - 1]);
    ck_assert(sc.switched);
    ck_assert_uint_eq(sc.next_lsn, wal_end);
    ck_assert_int_eq(sc.stop, WALFMT_STOP_END_OF_DATA);
    free(d.lsns);

    /* Zeroed from a record in the middle of the third segment: the scanner stops where
     * pg_waldump stops, at the same record, with the same "invalid record length" position. */
    {
        char *tmp = tu_tmpdir("spool9");
        uint64_t cut;
        struct dump seg2;
        uint64_t last_lsn, at_lsn;
        unsigned a, b, c, e;
        uint8_t *copy;
        struct walfmt_scan sc2;

        dump_segment(&seg2, 2);
        cut = seg2.lsns[dump_find(&seg2, wal_start + 2 * (uint64_t)SEG16 + 7 * (uint64_t)MIB + 3)];
        free(seg2.lsns);
        for (size_t i = 0; i < 3; i++) {
            char name[40];
            char path[4096];
            FILE *f;

            seg_name(name, wal_start / SEG16 + i, SEG16, false);
            snprintf(path, sizeof(path), "%s/%s", tmp, name);
            copy = malloc(SEG16);
            ck_assert(copy != NULL);
            memcpy(copy, wal + i * (size_t)SEG16, SEG16);
            if (i == 2)
                memset(copy + (cut - wal_start - 2 * (uint64_t)SEG16), 0,
                       (size_t)(wal_start + 3 * (uint64_t)SEG16 - cut));
            f = fopen(path, "w");
            ck_assert(f != NULL);
            ck_assert_uint_eq(fwrite(copy, 1, SEG16, f), SEG16);
            ck_assert_int_eq(fclose(f), 0);
            free(copy);
        }
        snprintf(args, sizeof(args), "-p '%s' -t 1 -s %X/%X", tmp, LSN(wal_start));
        waldump(&d, args);
        ck_assert_msg(sscanf(strstr(d.last_line, "error in WAL record at ") != NULL
                                 ? strstr(d.last_line, "error in WAL record at ")
                                 : "",
                             "error in WAL record at %X/%X: invalid record length at %X/%X", &a, &b,
                             &c, &e) == 4,
                      "unexpected pg_waldump end: %s", d.last_line);
        last_lsn = (uint64_t)a << 32 | b;
        at_lsn = (uint64_t)c << 32 | e;
        ck_assert_uint_eq(at_lsn, cut);
        sp.limit = wal_start + 3 * (uint64_t)SEG16;
        sp.read = read_from_wal;
        /* Same bytes, read through a reader that sees zeros from cut on. */
        {
            uint8_t *saved = malloc((size_t)(sp.limit - cut));

            ck_assert(saved != NULL);
            memcpy(saved, wal + (cut - wal_start), (size_t)(sp.limit - cut));
            memset(wal + (cut - wal_start), 0, (size_t)(sp.limit - cut));
            ck_assert_int_eq(walfmt_scan(&sp, &sc2), 0);
            memcpy(wal + (cut - wal_start), saved, (size_t)(sp.limit - cut));
            free(saved);
        }
        fprintf(stderr, "truncated: scanner last %X/%X next %X/%X (%s); pg_waldump: %s\n",
                LSN(sc2.last_lsn), LSN(sc2.next_lsn), sc2.why, d.last_line);
        ck_assert_int_eq(sc2.stop, WALFMT_STOP_ZERO);
        ck_assert_uint_eq(sc2.last_lsn, last_lsn);
        ck_assert_uint_eq(sc2.next_lsn, at_lsn);
        ck_assert_uint_eq(sc2.records, d.n);
        ck_assert_uint_le(sc2.end_lsn, cut);
        ck_assert_uint_eq(next_record_pos(sc2.end_lsn), cut);
        free(d.lsns);
        tu_rmtree(tmp);
        free(tmp);
    }
}
END_TEST

/* ==== 10. timelines ==== */

static void
tl_seg_name(char out[40], uint32_t tli, uint64_t segno, uint32_t seg_size, bool partial)
{
    walfmt_seg_name(out, tli, segno, seg_size);
    if (partial)
        strcat(out, ".partial");
}

static int cap_saved = -1;

/* Sends the log (stderr) to path until capture_end. */
static void
capture_start(const char *path)
{
    int fd;

    fflush(stderr);
    cap_saved = dup(2);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(cap_saved >= 0 && fd >= 0);
    ck_assert_int_ge(dup2(fd, 2), 0);
    close(fd);
}

/* Restores stderr; returns what was logged (malloc'd), also echoed to stderr. */
static char *
capture_end(const char *path)
{
    size_t len;
    char *log;

    fflush(stderr);
    ck_assert_int_ge(dup2(cap_saved, 2), 0);
    close(cap_saved);
    cap_saved = -1;
    log = (char *)tu_read_file(path, &len);
    ck_assert(log != NULL);
    fprintf(stderr, "%s", log);
    return log;
}

/* Runs call, which must return want, and checks that the log then names every needle. */
#define EXPECT_LOGGED(logpath, call, want, ...)                                                    \
    do {                                                                                           \
        const char *needles_[] = {__VA_ARGS__, NULL};                                              \
        char *log_;                                                                                \
        int rc_;                                                                                   \
                                                                                                   \
        capture_start(logpath);                                                                    \
        rc_ = (call);                                                                              \
        log_ = capture_end(logpath);                                                               \
        ck_assert_msg(rc_ == (want), "%s returned %d, not %d", #call, rc_, (int)(want));           \
        for (const char **n_ = needles_; *n_ != NULL; n_++)                                        \
            ck_assert_msg(strstr(log_, *n_) != NULL, "%s: the log lacks \"%s\": %s", #call, *n_,   \
                          log_);                                                                   \
        free(log_);                                                                                \
    } while (0)

static void
write_text(const char *dir, const char *name, const char *text)
{
    char path[4096];
    FILE *f;

    tu_require(snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path));
    f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static bool
all_zero(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != 0)
            return false;
    return true;
}

static size_t
count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0, sl = strlen(suffix);

    ck_assert(d != NULL);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);

        if (e->d_name[0] != '.' && l >= sl && strcmp(e->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/*
 * The API on synthetic WAL: timelines of an empty spool, every refusal with its message, a
 * switch while writes are still in flight (their bytes copied from the write buffers), the
 * new-timeline files, reading across the switch, reopening, retention keeping history files,
 * spool_remove_all.
 */
START_TEST(test_timeline_api)
{
    const uint32_t seg = MIB;
    const uint64_t base = 16 * (uint64_t)MIB;
    /* In the second half of segment 18, so that segment 19 is prepared ahead on timeline 3. */
    const uint64_t sw = base + 2 * (uint64_t)MIB + 700003;
    const uint64_t end = base + 5 * (uint64_t)MIB + 4321;
    const char *h3 = "1\t0/800000\tno recovery target specified\n"
                     "\n"
                     "# a comment line\n"
                     "2\t0/F000A8\tno recovery target specified\n";
    uint8_t *data = synthetic(6 * MIB, 21), *data4 = synthetic(6 * MIB, 22);
    uint8_t *other = synthetic(MIB, 23), *back = malloc(6 * MIB), *file;
    const struct spool_timeline *tls;
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s, *other_s;
    char *tmp, *dir, name[40], logpath[4096], h4[512], bad[512], err[512], *text;
    size_t len, n;
    uint64_t oldest;

    ck_assert(back != NULL);
    make_spool_dir(&tmp, &dir, "spool10");
    snprintf(logpath, sizeof(logpath), "%s/log", tmp);
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);

    /* No identity yet. */
    ck_assert_ptr_null(spool_timelines(s, &n) != NULL && n > 0 ? (void *)1 : NULL);
    ck_assert_uint_eq(spool_timeline_end(s, 1), 0);
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 2, 0, h3, strlen(h3)), -EINVAL,
                  "before its identity");
    set_identity(s, 42, seg);
    tls = spool_timelines(s, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(tls[0].tli, 1);
    ck_assert_uint_eq(tls[0].end, UINT64_MAX);
    ck_assert_uint_eq(spool_timeline_end(s, 1), UINT64_MAX);
    ck_assert_uint_eq(spool_timeline_end(s, 2), 0);
    ck_assert_int_eq(spool_read_history(s, 1, &text, &len), -ENOENT);
    ck_assert_int_eq(spool_set_timeline(s, 1, 0, NULL, 0), 0);

    /* Histories refused, whatever the spool holds. */
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 2, 0, NULL, 0), -EINVAL, "timeline 2",
                  "only timeline 1 has none");
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 1, 0, "x", 1), -EINVAL, "timeline 1");
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 2, 0, "garbage\n", 8), -EINVAL,
                  "history of timeline 2 is invalid", "line 1", "garbage");
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 2, 0, "1\tnope\n", 7), -EINVAL,
                  "line 1 has no switch point");
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 2, 0, "2\t0/100\tx\n", 10), -EINVAL,
                  "names timeline 2", "below 2");
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 3, 0, "2\t0/200\n1\t0/100\n", 16), -EINVAL,
                  "line 2 names timeline 1", "must increase");
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 3, 0, "1\t0/300\n2\t0/200\n", 16), -EINVAL,
                  "switch point 0/200 is before the previous one");
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 2, 0, "1\t0/100\0x\n", 10), -EINVAL, "NUL");
    ck_assert_uint_eq(spool_identity(s)->timeline, 1);
    ck_assert_uint_eq(count_files(dir, ".history"), 0);

    /* Empty spool: the timeline and its history are recorded as they are. */
    ck_assert_int_eq(spool_set_timeline(s, 3, 0, h3, strlen(h3)), 0);
    ck_assert_uint_eq(spool_identity(s)->timeline, 3);
    file = slurp_file(dir, "00000003.history", &len);
    ck_assert(file != NULL && len == strlen(h3) && memcmp(file, h3, len) == 0);
    free(file);
    ck_assert(!exists(dir, "00000003.history.tmp"));
    ck_assert_int_eq(spool_read_history(s, 3, &text, &len), 0);
    ck_assert_uint_eq(len, strlen(h3));
    ck_assert_str_eq(text, h3);
    free(text);
    ck_assert_int_eq(spool_read_history(s, 2, &text, &len), -ENOENT);
    ck_assert_int_eq(spool_read_history(s, 4, &text, &len), -ENOENT);
    tls = spool_timelines(s, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(spool_timeline_end(s, 1), 0x800000);
    ck_assert_uint_eq(spool_timeline_end(s, 2), 0xF000A8);
    ck_assert_uint_eq(spool_timeline_end(s, 3), UINT64_MAX);
    ck_assert_uint_eq(spool_timeline_end(s, 4), 0);
    ck_assert_uint_eq(spool_timeline_end(s, 0), 0);
    text = (char *)slurp_file(dir, "spool.meta", &len);
    ck_assert_msg(strstr(text, "timeline = 3") != NULL, "%s", text);
    free(text);

    /* WAL of timeline 3: the switch segment 18 (1 MiB segments) is written partly. */
    append_range(s, loop, data, base, base, sw - 300000, 31);
    run_until(loop, &cb, &cb.flushed, sw - 300000, 30);
    /* The last 300000 bytes appended and not yet written when the switch comes. */
    ck_assert_int_eq(spool_append(s, sw - 300000, data + (sw - 300000 - base), 300000), 0);
    ck_assert_uint_lt(spool_write_lsn(s), sw);
    tl_seg_name(name, 3, sw / seg + 1, seg, true);
    ck_assert_msg(exists(dir, name), "%s was not prepared ahead", name);

    snprintf(h4, sizeof(h4), "%s3\t%X/%X\tno recovery target specified\n", h3, LSN(sw));
    /* Refusals on a spool holding WAL. */
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 2, sw, "1\t0/1000000\tx\n", 13), -EINVAL,
                  "is on timeline 3: timeline 2 is older");
    snprintf(bad, sizeof(bad), "%s3\t%X/%X\tx\n", h3, LSN(sw - 1));
    {
        char a[32], b[32];

        snprintf(a, sizeof(a), "%X/%X", LSN(sw - 1));
        snprintf(b, sizeof(b), "%X/%X", LSN(sw));
        EXPECT_LOGGED(logpath, spool_set_timeline(s, 4, sw - 1, bad, strlen(bad)), -EINVAL,
                      "timeline 4 starts at", a, b, "at the end of the WAL held");
        EXPECT_LOGGED(logpath, spool_set_timeline(s, 4, sw, bad, strlen(bad)), -EINVAL,
                      "ends with timeline 3 at", a, "not with the switch from the spool's");
    }
    snprintf(bad, sizeof(bad), "%s2\t%X/%X\tx\n", "1\t0/1000000\tx\n", LSN(sw));
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 4, sw, bad, strlen(bad)), -EINVAL,
                  "ends with timeline 2");
    snprintf(bad, sizeof(bad), "1\t0/800008\tx\n2\t0/F000A8\tx\n3\t%X/%X\tx\n", LSN(sw));
    EXPECT_LOGGED(logpath, spool_set_timeline(s, 4, sw, bad, strlen(bad)), -EINVAL,
                  "does not continue the history");
    ck_assert_int_eq(spool_set_timeline(s, 3, sw, h3, strlen(h3)), 0); /* the same: nothing */
    /* Holding WAL, the spool changes timeline only through spool_set_timeline. */
    {
        struct spool_identity id5 = {42, seg, 5};

        EXPECT_LOGGED(logpath, spool_set_identity(s, &id5), 0, "holds WAL of timeline 3",
                      "changes only with a timeline switch");
        ck_assert_uint_eq(spool_identity(s)->timeline, 3);
    }
    ck_assert_uint_eq(spool_identity(s)->timeline, 3);
    ck_assert(!exists(dir, "00000004.history"));
    ck_assert(!spool_failed(s));

    /* The switch, with writes still in flight. */
    ck_assert_int_eq(spool_set_timeline(s, 4, sw, h4, strlen(h4)), 0);
    ck_assert_uint_eq(spool_identity(s)->timeline, 4);
    ck_assert_uint_eq(spool_timeline_end(s, 3), sw);
    ck_assert_uint_eq(spool_timeline_end(s, 4), UINT64_MAX);
    ck_assert_uint_eq(spool_timeline_end(s, 2), 0xF000A8);
    tls = spool_timelines(s, &n);
    ck_assert_uint_eq(n, 4);
    ck_assert_uint_eq(tls[3].tli, 4);
    ck_assert_uint_eq(tls[2].end, sw);
    file = slurp_file(dir, "00000004.history", &len);
    ck_assert(file != NULL && len == strlen(h4) && memcmp(file, h4, len) == 0);
    free(file);
    text = (char *)slurp_file(dir, "spool.meta", &len);
    ck_assert_msg(strstr(text, "timeline = 4") != NULL, "%s", text);
    free(text);
    /* Segment 18 starts in timeline 4's file, the bytes below the switch copied (those still in
     * flight included); timeline 3's files of 18 and 19 are gone. */
    tl_seg_name(name, 4, sw / seg, seg, true);
    file = slurp_file(dir, name, &len);
    ck_assert_msg(file != NULL && len == seg, "%s", name);
    ck_assert(memcmp(file, data + (sw - sw % seg - base), sw % seg) == 0);
    ck_assert(all_zero(file + sw % seg, seg - sw % seg));
    free(file);
    tl_seg_name(name, 3, sw / seg, seg, true);
    ck_assert(!exists(dir, name));
    tl_seg_name(name, 3, sw / seg + 1, seg, true);
    ck_assert(!exists(dir, name));
    /* The old timeline's writes complete: written and durable reach the switch point. */
    ck_assert_int_eq(spool_flush(s), 0);
    run_until(loop, &cb, &cb.flushed, sw, 30);
    ck_assert_uint_eq(spool_read(s, base, back, 6 * MIB), (ssize_t)(sw - base));
    ck_assert(memcmp(back, data, sw - base) == 0);

    /* Timeline 4 re-sent from the segment start: what is below the switch point is skipped
     * (other bytes here, to prove it), the rest lands in timeline 4's files. */
    memcpy(data4, data, sw - base);
    ck_assert_int_eq(spool_append(s, sw - sw % seg, other, sw % seg), 0);
    append_range(s, loop, data4, base, sw, end, 32);
    run_until(loop, &cb, &cb.flushed, end, 30);
    ck_assert_int_eq(spool_read(s, base, back, 6 * MIB), (ssize_t)(end - base));
    ck_assert(memcmp(back, data4, end - base) == 0);
    /* Across the switch point. */
    ck_assert_int_eq(spool_read(s, sw - 1000, back, 2000), 2000);
    ck_assert(memcmp(back, data4 + (sw - 1000 - base), 2000) == 0);
    tl_seg_name(name, 4, end / seg - 1, seg, false);
    run_until_file(loop, dir, name, 30);
    for (uint64_t sn = base / seg; sn < end / seg; sn++) {
        tl_seg_name(name, sn < sw / seg ? 3 : 4, sn, seg, false);
        file = slurp_file(dir, name, &len);
        ck_assert_msg(file != NULL && len == seg, "%s missing", name);
        ck_assert_msg(memcmp(file, data4 + (sn * seg - base), seg) == 0, "%s differs", name);
        free(file);
    }
    tl_seg_name(name, 4, end / seg, seg, true);
    ck_assert(exists(dir, name));
    ck_assert_uint_eq(count_files(dir, ".partial"), 1); /* the last one only */
    spool_close(s);

    /* Reopened: timeline 4 and its history; appends go on in timeline 4's files. */
    cb = (struct cbs){0};
    s = open_spool(loop, dir, 0, &cb);
    ck_assert_uint_eq(spool_identity(s)->timeline, 4);
    ck_assert_uint_eq(spool_timeline_end(s, 3), sw);
    ck_assert_uint_eq(spool_timeline_end(s, 1), 0x800000);
    ck_assert_uint_eq(spool_timelines(s, &n)[0].tli, 1);
    ck_assert_uint_eq(n, 4);
    /* (synthetic WAL: recovery keeps what the complete segments hold) */
    ck_assert_uint_eq(spool_flush_lsn(s), end - end % seg);
    ck_assert_int_eq(spool_read(s, sw - 1000, back, 2000), 2000);
    ck_assert(memcmp(back, data4 + (sw - 1000 - base), 2000) == 0);

    /* Retention (keep 0, no retain LSN) removes old-timeline segments, never history files. */
    spool_set_retain_lsn(s, 0);
    ck_assert_uint_eq(count_segments(dir, &oldest), 1);
    ck_assert_uint_eq(spool_start_lsn(s), end - end % seg - seg);
    ck_assert(exists(dir, "00000003.history"));
    ck_assert(exists(dir, "00000004.history"));
    ck_assert_int_eq(spool_read_history(s, 4, &text, &len), 0);
    ck_assert_str_eq(text, h4);
    free(text);

    /* spool_remove_all: refused while open, then everything walmirror keeps goes. */
    write_text(dir, "keepme", "not walmirror's\n");
    ck_assert_int_eq(spool_remove_all(dir, err, sizeof(err)), -EBUSY);
    ck_assert_msg(strstr(err, "in use") != NULL, "%s", err);
    spool_close(s);
    ck_assert_int_eq(spool_remove_all(dir, err, sizeof(err)), 0);
    ck_assert(!exists(dir, "spool.meta"));
    ck_assert_uint_eq(count_files(dir, ".history"), 0);
    ck_assert_uint_eq(count_files(dir, ".partial"), 0);
    ck_assert_uint_eq(count_segments(dir, &oldest), 0);
    ck_assert(exists(dir, "keepme"));
    cb = (struct cbs){0};
    s = open_spool(loop, dir, 0, &cb);
    ck_assert_uint_eq(spool_identity(s)->system_id, 0);
    ck_assert_uint_eq(spool_start_lsn(s), 0);
    ck_assert_uint_eq(spool_flush_lsn(s), 0);
    spool_close(s);
    {
        char missing[4096];

        snprintf(missing, sizeof(missing), "%s/nothing-here", tmp);
        ck_assert_int_eq(spool_remove_all(missing, err, sizeof(err)), 0);
    }
    ck_assert_int_eq(spool_open(&other_s, loop, dir, 0, &cb_ops, &cb, err, sizeof(err)), 0);
    spool_close(other_s);

    wio_loop_free(loop);
    free(data);
    free(data4);
    free(other);
    free(back);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}
END_TEST

/* A record end (where a timeline can switch) near target in the real WAL. */
static uint64_t
record_end_near(uint64_t target)
{
    struct walfmt_scan_params sp = {.seg_size = SEG16,
                                    .sysid = wal_sysid,
                                    .start = target - target % SEG16,
                                    .limit = target,
                                    .read = read_from_wal};
    struct walfmt_scan sc;

    ck_assert_int_eq(walfmt_scan(&sp, &sc), 0);
    ck_assert_uint_gt(sc.records, 0);
    return sc.end_lsn;
}

static char *
history_of_2(uint64_t sw)
{
    char *h;

    ck_assert(asprintf(&h, "1\t%X/%X\tno recovery target specified\n", LSN(sw)) > 0);
    return h;
}

/* A spool holding the real WAL of timeline 1 from wal_start to sw, durable, closed. */
static void
make_tl1_spool(struct wio_loop *loop, const char *dir, uint64_t sw)
{
    struct cbs cb = {0};
    struct spool *s = open_spool(loop, dir, UINT64_MAX, &cb);

    set_identity(s, wal_sysid, SEG16);
    append_range(s, loop, wal, wal_start, wal_start, sw, 41);
    run_until(loop, &cb, &cb.flushed, sw, 60);
    spool_close(s);
}

/* Appends the real WAL [from, to) as timeline 2 from from's segment start; checks it reads back. */
static void
append_tl2_and_check(struct spool *s, struct wio_loop *loop, struct cbs *cb, uint64_t from,
                     uint64_t to)
{
    uint8_t *back = malloc(to - wal_start);

    ck_assert(back != NULL);
    append_range(s, loop, wal, wal_start, from - from % SEG16, to, 43);
    run_until(loop, cb, &cb->flushed, to, 60);
    ck_assert_int_eq(spool_read(s, wal_start, back, to - wal_start), (ssize_t)(to - wal_start));
    ck_assert(memcmp(back, wal, to - wal_start) == 0);
    free(back);
}

/*
 * A switch on real WAL (the "new timeline" re-sends the same bytes, as PostgreSQL's does below
 * the switch point): files per timeline byte-identical to the originals, the switch while the
 * last writes are in flight, reading across the switch point, a clean reopen finding the end.
 */
START_TEST(test_timeline_switch_real_wal)
{
    uint64_t sw = record_end_near(wal_start + 2 * (uint64_t)SEG16 + SEG16 * 5 / 8);
    uint64_t s_seg = sw / SEG16, last;
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s;
    char *tmp, *dir, name[40], oname[40], *h2 = history_of_2(sw);
    uint8_t *file, buf[8192];
    size_t len, n;

    make_spool_dir(&tmp, &dir, "spool11");
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    set_identity(s, wal_sysid, SEG16);
    append_range(s, loop, wal, wal_start, wal_start, sw - 200000, 44);
    ck_assert_int_eq(spool_append(s, sw - 200000, wal + (sw - 200000 - wal_start), 200000), 0);
    ck_assert_int_eq(spool_set_timeline(s, 2, sw, h2, strlen(h2)), 0);
    tl_seg_name(name, 2, s_seg, SEG16, true);
    file = slurp_file(dir, name, &len);
    ck_assert(file != NULL && len == SEG16);
    ck_assert(memcmp(file, wal + (s_seg * SEG16 - wal_start), sw % SEG16) == 0);
    ck_assert(all_zero(file + sw % SEG16, SEG16 - sw % SEG16));
    free(file);
    append_tl2_and_check(s, loop, &cb, sw, wal_end);
    tl_seg_name(name, 2, wal_end / SEG16 - 1, SEG16, false);
    run_until_file(loop, dir, name, 60);
    ck_assert_int_eq(spool_read(s, sw - 4096, buf, sizeof(buf)), (ssize_t)sizeof(buf));
    ck_assert(memcmp(buf, wal + (sw - 4096 - wal_start), sizeof(buf)) == 0);
    spool_close(s);

    /* Every file holds the original segment, named with its timeline. */
    last = wal_end / SEG16;
    for (uint64_t sn = wal_start / SEG16; sn < last; sn++) {
        tl_seg_name(name, sn < s_seg ? 1 : 2, sn, SEG16, false);
        tl_seg_name(oname, 1, sn, SEG16, false);
        ck_assert_msg(tu_run("cmp -s '%s/%s' '%s/%s'", wal_dir, oname, dir, name) == 0,
                      "%s differs from the original %s", name, oname);
        tl_seg_name(name, sn < s_seg ? 2 : 1, sn, SEG16, false);
        ck_assert_msg(!exists(dir, name), "%s exists", name);
    }

    /* Reopened: everything durable found again, timeline 2 and its history. */
    cb = (struct cbs){0};
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    ck_assert_uint_eq(spool_identity(s)->timeline, 2);
    ck_assert_uint_eq(spool_flush_lsn(s), wal_end);
    ck_assert_uint_eq(spool_timeline_end(s, 1), sw);
    ck_assert_uint_eq(spool_timelines(s, &n)[1].tli, 2);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(spool_read(s, sw - 4096, buf, sizeof(buf)), (ssize_t)sizeof(buf));
    ck_assert(memcmp(buf, wal + (sw - 4096 - wal_start), sizeof(buf)) == 0);
    spool_close(s);
    wio_loop_free(loop);
    free(h2);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}
END_TEST

enum crash_point {
    CRASH_AFTER_HISTORY,  /* history file written, nothing else */
    CRASH_AFTER_SEGMENT,  /* and the new timeline's segment file, spool.meta not yet */
    CRASH_AFTER_META,     /* and spool.meta, the old timeline's file not yet removed */
    CRASH_META_NO_SEG,    /* spool.meta and history, the new segment file lost */
    CRASH_META_NO_HISTORY /* spool.meta alone: history and new segment file lost */
};

/*
 * A crash between the steps of spool_set_timeline, made by putting back files from before the
 * switch: the spool reopens on the right timeline at the switch point, says what it did, and
 * goes on appending into the right files.
 */
static void
crash_case(enum crash_point cp, uint64_t sw, const char *before, const char *after,
           const char *needle)
{
    uint64_t s_seg = sw / SEG16;
    uint32_t want_tli = cp <= CRASH_AFTER_SEGMENT ? 1 : 2;
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s;
    char *tmp, *dir, logpath[4096], old[40], new[40], *log, *h2 = history_of_2(sw);
    size_t n;

    tmp = tu_tmpdir("spool12c");
    ck_assert(asprintf(&dir, "%s/spool", tmp) > 0);
    snprintf(logpath, sizeof(logpath), "%s/log", tmp);
    tl_seg_name(old, 1, s_seg, SEG16, true);
    tl_seg_name(new, 2, s_seg, SEG16, true);
    switch (cp) {
    case CRASH_AFTER_HISTORY:
        ck_assert_int_eq(
            tu_run("cp -a '%s' '%s' && cp '%s/00000002.history' '%s/'", before, dir, after, dir),
            0);
        break;
    case CRASH_AFTER_SEGMENT:
        ck_assert_int_eq(tu_run("cp -a '%s' '%s' && cp '%s/spool.meta' '%s/%s' '%s/'", after, dir,
                                before, before, old, dir),
                         0);
        break;
    case CRASH_AFTER_META:
        ck_assert_int_eq(
            tu_run("cp -a '%s' '%s' && cp '%s/%s' '%s/'", after, dir, before, old, dir), 0);
        break;
    case CRASH_META_NO_SEG:
        ck_assert_int_eq(tu_run("cp -a '%s' '%s' && cp '%s/%s' '%s/' && rm '%s/%s'", after, dir,
                                before, old, dir, dir, new),
                         0);
        break;
    case CRASH_META_NO_HISTORY:
        ck_assert_int_eq(tu_run("cp -a '%s' '%s' && cp '%s/%s' '%s/' && rm '%s/%s' "
                                "'%s/00000002.history'",
                                after, dir, before, old, dir, dir, new, dir),
                         0);
        break;
    }
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    capture_start(logpath);
    cb = (struct cbs){0};
    s = open_spool(loop, dir, UINT64_MAX, &cb);
    log = capture_end(logpath);
    if (needle != NULL)
        ck_assert_msg(strstr(log, needle) != NULL, "case %d: recovery did not say \"%s\"", (int)cp,
                      needle);
    free(log);
    ck_assert_uint_eq(spool_identity(s)->timeline, want_tli);
    ck_assert_msg(spool_flush_lsn(s) == sw, "case %d: recovered to %X/%X, not %X/%X", (int)cp,
                  LSN(spool_flush_lsn(s)), LSN(sw));
    ck_assert_uint_eq(spool_timelines(s, &n)[n - 1].tli, want_tli);
    ck_assert_uint_eq(n, cp == CRASH_META_NO_HISTORY || want_tli == 1 ? 1 : 2);
    if (want_tli == 1) {
        /* The switch did not happen: it is made again. */
        ck_assert(!exists(dir, new));
        ck_assert(exists(dir, old));
        ck_assert_int_eq(spool_set_timeline(s, 2, sw, h2, strlen(h2)), 0);
    }
    ck_assert_msg(!exists(dir, old), "case %d: %s is still there", (int)cp, old);
    ck_assert_msg(exists(dir, new), "case %d: %s is missing", (int)cp, new);
    append_tl2_and_check(s, loop, &cb, sw, s_seg * SEG16 + SEG16 + MIB);
    tl_seg_name(new, 2, s_seg, SEG16, false);
    run_until_file(loop, dir, new, 60);
    {
        char orig[40];

        tl_seg_name(orig, 1, s_seg, SEG16, false);
        ck_assert_msg(tu_run("cmp -s '%s/%s' '%s/%s'", wal_dir, orig, dir, new) == 0,
                      "case %d: %s differs from the original %s", (int)cp, new, orig);
    }
    spool_close(s);
    wio_loop_free(loop);
    free(h2);
    tu_rmtree(tmp);
    free(tmp);
    free(dir);
}

START_TEST(test_timeline_crash_between_steps)
{
    uint64_t sw = record_end_near(wal_start + SEG16 + SEG16 / 3);
    struct wio_loop *loop;
    struct cbs cb = {0};
    struct spool *s;
    char *tmp, *before, *after, *h2 = history_of_2(sw);

    /* before: timeline 1 up to sw; after: the same after spool_set_timeline. */
    tmp = tu_tmpdir("spool12");
    ck_assert(asprintf(&before, "%s/before", tmp) > 0);
    ck_assert(asprintf(&after, "%s/after", tmp) > 0);
    ck_assert_int_eq(wio_loop_new(&loop, 256), 0);
    make_tl1_spool(loop, before, sw);
    ck_assert_int_eq(tu_run("cp -a '%s' '%s'", before, after), 0);
    s = open_spool(loop, after, UINT64_MAX, &cb);
    ck_assert_uint_eq(spool_flush_lsn(s), sw);
    ck_assert_int_eq(spool_set_timeline(s, 2, sw, h2, strlen(h2)), 0);
    spool_close(s);
    wio_loop_free(loop);

    crash_case(CRASH_AFTER_HISTORY, sw, before, after, NULL);
    crash_case(CRASH_AFTER_SEGMENT, sw, before, after, "a timeline switch did not complete");
    crash_case(CRASH_AFTER_META, sw, before, after, "replaced by a newer timeline's file");
    crash_case(CRASH_META_NO_SEG, sw, before, after, "goes on in a file of its own");
    crash_case(CRASH_META_NO_HISTORY, sw, before, after, "the history of timeline 2 is unknown");
    free(h2);
    free(before);
    free(after);
    tu_rmtree(tmp);
    free(tmp);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("spool");
    TCase *tc = tcase_create("spool");
    SRunner *sr;
    int failed;
    bool have_wal = false;
    char *mnt_parent = NULL;

    if (pgt_available()) {
        if (make_wal() != 0) {
            fprintf(stderr, "could not generate WAL\n");
            return 1;
        }
        have_wal = true;
    } else {
        fprintf(stderr, "PostgreSQL 15 not available: the cases on real WAL are skipped\n");
    }
    if (geteuid() == 0) {
        mnt_parent = tu_tmpdir("spoolmnt");
        tu_require(asprintf(&mnt_dir, "%s/mnt", mnt_parent) > 0);
        tu_require(mkdir(mnt_dir, 0755) == 0);
    }
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_crc32c);
    tcase_add_test(tc, test_segment_names);
    tcase_add_test(tc, test_identity);
    tcase_add_test(tc, test_gap_and_overlap);
    tcase_add_test(tc, test_read);
    tcase_add_test(tc, test_retention);
    tcase_add_test(tc, test_group_flush);
    tcase_add_test(tc, test_flush_follows_fdatasync);
    tcase_add_test(tc, test_disk_full);
    tcase_add_test(tc, test_timeline_api);
    if (have_wal) {
        tcase_add_test(tc, test_scanner_matches_waldump);
        tcase_add_test(tc, test_append_all_byte_identical);
        tcase_add_test(tc, test_recovery_torn_tail);
        tcase_add_test(tc, test_recovery_continuation_skipped);
        tcase_add_test(tc, test_recovery_crossing_record_checked);
        tcase_add_test(tc, test_identity_from_segment);
        tcase_add_test(tc, test_timeline_switch_real_wal);
        tcase_add_test(tc, test_timeline_crash_between_steps);
    }
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    unmount_tmpfs();
    if (mnt_parent != NULL) {
        tu_rmtree(mnt_parent);
        free(mnt_parent);
    }
    free(mnt_dir);
    mnt_dir = NULL; /* unmount_tmpfs runs again at exit (atexit) */
    if (wal_dir != NULL)
        tu_rmtree(wal_dir);
    free(wal_dir);
    free(wal);
    return failed == 0 ? 0 : 1;
}
