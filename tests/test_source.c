/*
 * test_source.c - the source (agent/source.c) against a real PostgreSQL 15 primary.
 *
 * Each test starts its own primary (pgtest.h) and drives a struct source from a wio loop in
 * the test process; load runs in forked children (pgbench, psql) while the loop turns.
 *  - identify: system identifier, timeline, segment size, the slot created (and found again);
 *  - stream: WAL contiguous from a segment boundary under pgbench; every completed segment
 *    byte-identical to the primary's pg_wal file;
 *  - sync: a synchronous_commit=on commit waits until source_report() passes its LSN;
 *    pg_stat_replication shows the application_name as 'sync' with the reported flush_lsn;
 *  - keepalive: with wal_sender_timeout = 2s the session survives 6.5 s of idleness;
 *  - pause: no WAL while paused, all of it after resuming;
 *  - errors: refused connection, unknown role, start ahead of the flush position, a dropped
 *    slot, bad arguments;
 *  - shutdown: pg_ctl stop -m fast while streaming and reporting everything ends the session
 *    with err 0 at the end of the shutdown checkpoint record; a terminated walsender and an
 *    immediate shutdown end it with err < 0;
 *  - free: source_free() at several points (also inside callbacks): no callback afterwards,
 *    the walsender goes away, nothing leaks (ASan build).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pgproto.h"
#include "pgtest.h"
#include "source.h"
#include "testutil.h"
#include "wio.h"

#define APP_NAME "walmirror-test"
#define SEG (16u * 1024 * 1024)
#define PAGE 8192u

struct h {
    struct wio_loop *loop;
    struct source *src;
    struct pgt_cluster pg;

    bool identified;
    unsigned identified_calls;
    struct source_identity id;
    bool start_on_identified; /* call source_start(0, 0) from on_identified */
    bool free_on_identified;  /* call source_free from on_identified */

    unsigned wal_calls;
    uint64_t first_lsn;
    uint64_t next_lsn;
    uint64_t wal_bytes;
    bool gap;             /* an on_wal not contiguous with the previous one */
    char *segdir;         /* when set, WAL is written there as segment files */
    uint64_t pause_after; /* pause from on_wal once this many bytes arrived (0: never) */
    uint64_t free_after;  /* source_free from on_wal once this many bytes arrived */
    bool auto_report;     /* report everything received as durable on each on_drained */

    unsigned drained;

    bool closed;
    unsigned closed_calls;
    int close_err;
    char close_msg[1024];
    uint64_t closed_received; /* source_received_lsn() in on_closed */

    bool freed;
    unsigned after_free; /* callbacks seen after source_free */
};

static void
h_free_source(struct h *h)
{
    source_free(h->src);
    h->src = NULL;
    h->freed = true;
}

static void
cb_identified(void *ctx, const struct source_identity *id)
{
    struct h *h = ctx;

    if (h->freed) {
        h->after_free++;
        return;
    }
    h->identified = true;
    h->identified_calls++;
    h->id = *id;
    if (h->free_on_identified) {
        h_free_source(h);
        return;
    }
    if (h->start_on_identified)
        ck_assert_int_eq(source_start(h->src, 0, 0), 0);
}

static void
seg_name(char name[32], uint32_t tli, uint64_t segno)
{
    snprintf(name, 32, "%08X%08X%08X", tli, (unsigned)(segno / (0x100000000ull / SEG)),
             (unsigned)(segno % (0x100000000ull / SEG)));
}

static void
write_wal(struct h *h, uint64_t lsn, const uint8_t *data, size_t len)
{
    while (len > 0) {
        uint64_t segno = lsn / SEG;
        size_t off = (size_t)(lsn % SEG);
        size_t n = SEG - off < len ? SEG - off : len;
        char path[4096], name[32];
        int fd;

        seg_name(name, h->id.timeline, segno);
        snprintf(path, sizeof(path), "%s/%s", h->segdir, name);
        fd = open(path, O_WRONLY | O_CREAT, 0644);
        ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
        ck_assert_int_eq(pwrite(fd, data, n, (off_t)off), (ssize_t)n);
        ck_assert_int_eq(close(fd), 0);
        lsn += n;
        data += n;
        len -= n;
    }
}

static void
cb_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct h *h = ctx;

    if (h->freed) {
        h->after_free++;
        return;
    }
    ck_assert_uint_gt(len, 0);
    if (h->wal_calls == 0)
        h->first_lsn = lsn;
    else if (lsn != h->next_lsn)
        h->gap = true;
    h->wal_calls++;
    h->next_lsn = lsn + len;
    h->wal_bytes += len;
    if (h->segdir != NULL)
        write_wal(h, lsn, data, len);
    if (h->pause_after != 0 && h->wal_bytes >= h->pause_after) {
        h->pause_after = 0;
        source_pause(h->src, true);
    }
    if (h->free_after != 0 && h->wal_bytes >= h->free_after)
        h_free_source(h);
}

static void
cb_drained(void *ctx)
{
    struct h *h = ctx;

    if (h->freed) {
        h->after_free++;
        return;
    }
    h->drained++;
    if (h->auto_report)
        ck_assert_int_eq(source_report(h->src, h->next_lsn, h->next_lsn, h->next_lsn), 0);
}

static void
cb_closed(void *ctx, int err, const char *message)
{
    struct h *h = ctx;

    if (h->freed) {
        h->after_free++;
        return;
    }
    h->closed = true;
    h->closed_calls++;
    h->close_err = err;
    h->closed_received = source_received_lsn(h->src);
    snprintf(h->close_msg, sizeof(h->close_msg), "%s", message);
    fprintf(stderr, "on_closed(%s): %s\n", err == 0 ? "clean" : wire_strerror(err), message);
}

static const struct source_ops ops = {
    .on_identified = cb_identified,
    .on_wal = cb_wal,
    .on_drained = cb_drained,
    .on_closed = cb_closed,
};

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Turns the loop for the given time. */
static void
run_for(struct h *h, double seconds)
{
    double end = now_s() + seconds;

    while (now_s() < end)
        ck_assert_int_ge(wio_run_once(h->loop, 50), 0);
}

/* Turns the loop until *flag or the timeout; returns *flag. */
static bool
run_until_flag(struct h *h, const bool *flag, double seconds)
{
    double end = now_s() + seconds;

    while (!*flag && now_s() < end)
        ck_assert_int_ge(wio_run_once(h->loop, 50), 0);
    return *flag;
}

/* Turns the loop until WAL up to lsn (exclusive) arrived, or the session closed. */
static bool
run_until_lsn(struct h *h, uint64_t lsn, double seconds)
{
    double end = now_s() + seconds;

    while (h->next_lsn < lsn && !h->closed && now_s() < end)
        ck_assert_int_ge(wio_run_once(h->loop, 50), 0);
    return h->next_lsn >= lsn;
}

/*
 * Every cluster a test starts is listed here, so that main() can stop what a failed test left
 * running: Check ends a failed test's process with _exit(), which skips pgtest's atexit stop.
 */
static char *registry;

static void
register_cluster(const struct pgt_cluster *pg)
{
    FILE *f = fopen(registry, "a");

    ck_assert_ptr_nonnull(f);
    fprintf(f, "%d %s\n", pg->port, pg->dir);
    ck_assert_int_eq(fclose(f), 0);
}

/* Stops (immediate) and removes every cluster the tests left behind. */
static void
stop_leftovers(void)
{
    char line[4200], dir[4096];
    FILE *f = fopen(registry, "r");
    int port;

    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        struct pgt_cluster c;
        char pgdata[4200];

        if (sscanf(line, "%d %4095s", &port, dir) != 2 || access(dir, F_OK) != 0)
            continue;
        snprintf(pgdata, sizeof(pgdata), "%s/data", dir);
        memset(&c, 0, sizeof(c));
        c.dir = dir;
        c.pgdata = pgdata;
        c.port = port;
        c.running = true;
        if (access(pgdata, F_OK) == 0 && pgt_stop(&c, "immediate") == 0)
            fprintf(stderr, "stopped the cluster a failed test left in %s\n", dir);
        if (getenv("WALMIRROR_KEEP_TMP") == NULL)
            tu_rmtree(dir);
    }
    if (f != NULL)
        fclose(f);
}

static void
h_init(struct h *h, const char *tag, const char *extra_conf)
{
    memset(h, 0, sizeof(*h));
    ck_assert_int_eq(wio_loop_new(&h->loop, 0), 0);
    ck_assert_msg(pgt_init(&h->pg, tag, extra_conf) == 0, "initdb failed");
    register_cluster(&h->pg);
    ck_assert_msg(pgt_start(&h->pg) == 0, "cannot start the primary (see %s)", h->pg.dir);
}

static void
h_connect(struct h *h, const char *slot, const char *extra_conninfo)
{
    char conninfo[512];

    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres %s", h->pg.port,
             extra_conninfo != NULL ? extra_conninfo : "");
    ck_assert_int_eq(source_new(&h->src, h->loop, conninfo, slot, APP_NAME, &ops, h), 0);
    ck_assert_ptr_nonnull(h->src);
}

static void run_for(struct h *h, double seconds);

/* Frees the source (if any) and forgets everything about its session. */
static void
h_new_session(struct h *h)
{
    if (h->src != NULL)
        h_free_source(h);
    run_for(h, 0.2);
    h->freed = false;
    h->identified = false;
    h->identified_calls = 0;
    h->start_on_identified = false;
    h->wal_calls = 0;
    h->first_lsn = h->next_lsn = h->wal_bytes = 0;
    h->gap = false;
    h->drained = 0;
    h->closed = false;
    h->closed_calls = 0;
    h->close_err = 0;
    h->close_msg[0] = '\0';
    h->closed_received = 0;
}

static void
h_done(struct h *h)
{
    if (h->src != NULL)
        h_free_source(h);
    /* Let the removed polls and the cancelled timer complete before the loop goes. */
    run_for(h, 0.2);
    wio_loop_free(h->loop);
    pgt_destroy(&h->pg);
    if (h->segdir != NULL) {
        tu_rmtree(h->segdir);
        free(h->segdir);
    }
}

static uint64_t
query_u64(struct pgt_cluster *pg, const char *sql)
{
    char *out = pgt_query(pg, sql);
    uint64_t v;
    char *end;

    ck_assert_msg(out != NULL, "query failed: %s", sql);
    errno = 0;
    v = strtoull(out, &end, 10);
    ck_assert_msg(errno == 0 && end != out && *end == '\0', "not a number: '%s' from %s", out, sql);
    free(out);
    return v;
}

static void
query_eq(struct pgt_cluster *pg, const char *sql, const char *expect)
{
    char *out = pgt_query(pg, sql);

    ck_assert_msg(out != NULL, "query failed: %s", sql);
    ck_assert_msg(strcmp(out, expect) == 0, "%s: got '%s', expected '%s'", sql, out, expect);
    free(out);
}

static void
query_ok(struct pgt_cluster *pg, const char *sql)
{
    char *out = pgt_query(pg, sql);

    ck_assert_msg(out != NULL, "query failed: %s", sql);
    free(out);
}

/* Polls sql (turning the loop in between) until it returns expect. */
static bool
wait_query(struct h *h, const char *sql, const char *expect, double seconds)
{
    double end = now_s() + seconds;

    for (;;) {
        char *out = pgt_query(&h->pg, sql);
        bool ok = out != NULL && strcmp(out, expect) == 0;

        free(out);
        if (ok)
            return true;
        if (now_s() >= end)
            return false;
        run_for(h, 0.2);
    }
}

/* Runs a shell command as postgres in a forked child; returns its pid. */
static pid_t
spawn_sh(struct h *h, const char *cmd)
{
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(pgt_sh(&h->pg, "%s", cmd) == 0 ? 0 : 1);
    return pid;
}

/* Exit status of pid if it ended (-1 while it runs). */
static int
child_status(pid_t pid)
{
    int status;
    pid_t r = waitpid(pid, &status, WNOHANG);

    ck_assert_int_ge(r, 0);
    if (r == 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Turns the loop until pid exits (or the timeout: then kills it); returns its status. */
static int
run_until_exit(struct h *h, pid_t pid, double seconds)
{
    double end = now_s() + seconds;
    int st;

    while ((st = child_status(pid)) < 0 && now_s() < end)
        ck_assert_int_ge(wio_run_once(h->loop, 50), 0);
    if (st < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return st;
}

static void
lsn_str(uint64_t lsn, char buf[PGP_LSN_BUFSZ])
{
    pgp_lsn_format(lsn, buf);
}

static void
read_range(const char *path, size_t off, size_t len, uint8_t *buf)
{
    int fd = open(path, O_RDONLY);

    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    ck_assert_msg(pread(fd, buf, len, (off_t)off) == (ssize_t)len, "short read of %s", path);
    close(fd);
}

/*
 * After a clean shutdown: the end of pg's last record, its shutdown checkpoint - pg_controldata's
 * "Latest checkpoint location" plus the record's MAXALIGN'd xl_tot_len (read from the segment),
 * page headers skipped, as XLogBytePosToEndRecPtr() counts.
 */
static uint64_t
checkpoint_end(struct pgt_cluster *pg)
{
    char path[4096], name[32], *out, *p, *eol;
    unsigned hi, lo, tli;
    uint8_t len_le[4];
    uint64_t loc, left;
    size_t n;

    ck_assert_int_eq(pgt_sh(pg, "pg_controldata \"$PGDATA\" > '%s/controldata.out'", pg->dir), 0);
    snprintf(path, sizeof(path), "%s/controldata.out", pg->dir);
    out = tu_read_file(path, &n);
    ck_assert_ptr_nonnull(out);
    p = strstr(out, "Database cluster state:");
    ck_assert_ptr_nonnull(p);
    eol = strchr(p, '\n');
    ck_assert_ptr_nonnull(eol);
    ck_assert_msg(eol - p > 9 && memcmp(eol - 9, "shut down", 9) == 0, "not shut down:\n%s", out);
    p = strstr(out, "Latest checkpoint location:");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(sscanf(p, "Latest checkpoint location: %X/%X", &hi, &lo), 2);
    p = strstr(out, "Latest checkpoint's TimeLineID:");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(sscanf(p, "Latest checkpoint's TimeLineID: %u", &tli), 1);
    free(out);
    loc = (uint64_t)hi << 32 | lo;
    seg_name(name, tli, loc / SEG);
    snprintf(path, sizeof(path), "%s/pg_wal/%s", pg->pgdata, name);
    read_range(path, (size_t)(loc % SEG), sizeof(len_le), len_le);
    left = (uint64_t)len_le[0] | (uint64_t)len_le[1] << 8 | (uint64_t)len_le[2] << 16 |
           (uint64_t)len_le[3] << 24;
    ck_assert_uint_gt(left, 0);
    left = (left + 7) & ~(uint64_t)7;
    while (left > 0) {
        uint64_t room, take;

        if (loc % PAGE == 0)
            loc += loc % SEG == 0 ? 40 : 24;
        room = PAGE - loc % PAGE;
        take = left < room ? left : room;
        loc += take;
        left -= take;
    }
    return loc;
}

/* ---------------------------------------------------------------------------------------- */

START_TEST(test_identify)
{
    struct h h;
    uint64_t sysid, restart;
    char lsn[PGP_LSN_BUFSZ], sql[256];

    h_init(&h, "src-identify", NULL);
    h_connect(&h, "wm_identify", NULL);
    ck_assert_msg(run_until_flag(&h, &h.identified, 60), "not identified: %s", h.close_msg);
    ck_assert(!h.closed);

    sysid = query_u64(&h.pg, "SELECT system_identifier FROM pg_control_system()");
    ck_assert_uint_eq(h.id.system_id, sysid);
    ck_assert_uint_ne(h.id.system_id, 0);
    ck_assert_uint_eq(h.id.timeline, 1);
    ck_assert_uint_eq(h.id.seg_size, SEG);
    ck_assert_uint_ne(h.id.xlogpos, 0);
    ck_assert_uint_le(h.id.xlogpos,
                      query_u64(&h.pg, "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn"));
    query_eq(&h.pg,
             "SELECT slot_type || '|' || (restart_lsn IS NOT NULL) FROM pg_replication_slots "
             "WHERE slot_name = 'wm_identify'",
             "physical|true");
    restart = query_u64(&h.pg, "SELECT restart_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
                               "WHERE slot_name = 'wm_identify'");
    ck_assert_uint_ne(h.id.slot_restart_lsn, 0);
    ck_assert_uint_eq(h.id.slot_restart_lsn, restart);
    ck_assert_uint_eq(h.identified_calls, 1);
    ck_assert_uint_eq(h.wal_calls, 0);

    /* Idle after identification: nothing happens, the session stays up. */
    run_for(&h, 1.0);
    ck_assert(!h.closed);
    ck_assert_uint_eq(h.identified_calls, 1);

    /* A second session finds the slot (READ_REPLICATION_SLOT) instead of creating it. */
    h_free_source(&h);
    run_for(&h, 0.2);
    h.freed = false;
    h.identified = false;
    ck_assert_int_eq(pgt_sh(&h.pg, "psql -X -c 'CREATE TABLE t AS SELECT 1 AS x' && "
                                   "psql -X -c 'CHECKPOINT'"),
                     0);
    h_connect(&h, "wm_identify", NULL);
    ck_assert_msg(run_until_flag(&h, &h.identified, 60), "not identified: %s", h.close_msg);
    ck_assert_uint_eq(h.id.slot_restart_lsn, restart); /* the same slot, not a new one */
    ck_assert_uint_gt(h.id.xlogpos, restart);
    query_eq(&h.pg, "SELECT count(*) FROM pg_replication_slots", "1");
    lsn_str(h.id.xlogpos, lsn);
    snprintf(sql, sizeof(sql), "SELECT '%s'::pg_lsn <= pg_current_wal_flush_lsn()", lsn);
    query_eq(&h.pg, sql, "t");
    h_done(&h);
}
END_TEST

/* Streams under pgbench; every completed segment must equal the primary's file. */
START_TEST(test_stream)
{
    struct h h;
    uint64_t switch_lsn, last_seg, expect_start;
    unsigned compared = 0;
    pid_t pid;
    char name[32], *out;

    h_init(&h, "src-stream", "max_wal_size = 1GB\ncheckpoint_timeout = 1h");
    h.segdir = tu_tmpdir("src-segs");
    h.start_on_identified = true;
    h_connect(&h, "wm_stream", NULL);
    ck_assert_msg(run_until_flag(&h, &h.identified, 60), "not identified: %s", h.close_msg);
    expect_start = h.id.slot_restart_lsn - h.id.slot_restart_lsn % SEG;

    pid = spawn_sh(&h, "pgbench -i -q -s 3 postgres && pgbench -n -c 2 -j 2 -T 4 postgres");
    ck_assert_int_eq(run_until_exit(&h, pid, 240), 0);
    ck_assert_msg(!h.closed, "closed during pgbench: %s", h.close_msg);

    /* The switch completes the segment holding its record: pg_walfile_name() names it. */
    out = pgt_query(&h.pg, "SELECT pg_walfile_name(l) || ' ' || (l - '0/0'::pg_lsn) "
                           "FROM pg_switch_wal() l");
    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(sscanf(out, "%24s %" SCNu64, name, &switch_lsn), 2);
    free(out);
    last_seg = (switch_lsn - 1) / SEG;
    ck_assert_msg(run_until_lsn(&h, (last_seg + 1) * SEG, 60),
                  "WAL up to the end of segment %s did not arrive (at %" PRIx64 ")", name,
                  h.next_lsn);
    ck_assert(!h.closed);
    ck_assert(!h.gap);
    ck_assert_uint_eq(h.first_lsn, expect_start);
    ck_assert_uint_eq(h.first_lsn % SEG, 0);
    ck_assert_uint_gt(h.drained, 0);
    ck_assert_uint_eq(h.next_lsn - h.first_lsn, h.wal_bytes);

    for (uint64_t seg = h.first_lsn / SEG; seg <= last_seg; seg++) {
        char f[32];

        snprintf(f, sizeof(f), "%08X%08X%08X", 1u, (unsigned)(seg / (0x100000000ull / SEG)),
                 (unsigned)(seg % (0x100000000ull / SEG)));
        if (seg == last_seg)
            ck_assert_str_eq(f, name);
        ck_assert_msg(tu_run("cmp '%s/%s' '%s/pg_wal/%s'", h.segdir, f, h.pg.pgdata, f) == 0,
                      "segment %s differs from the primary's", f);
        compared++;
    }
    fprintf(stderr, "stream: %u segments byte-identical, %" PRIu64 " bytes in %u calls\n", compared,
            h.wal_bytes, h.wal_calls);
    ck_assert_uint_ge(compared, 2);
    h_done(&h);
}
END_TEST

/* A synchronous commit waits for source_report() to pass its LSN. */
START_TEST(test_sync_commit)
{
    struct h h;
    uint64_t before, done, reply1, reply2;
    char lsn[PGP_LSN_BUFSZ], expect[128];
    pid_t pid;

    h_init(&h, "src-sync", NULL);
    h.start_on_identified = true;
    /* application_name and dbname in pg_conninfo are overridden. */
    h_connect(&h, "wm_sync", "dbname=postgres application_name=not-this-one");
    ck_assert_msg(run_until_flag(&h, &h.identified, 60), "not identified: %s", h.close_msg);
    ck_assert_msg(run_until_lsn(&h, h.id.xlogpos, 30), "catch-up WAL missing: %s", h.close_msg);

    /* A name with '-' must be double-quoted in synchronous_standby_names. */
    query_ok(&h.pg, "ALTER SYSTEM SET synchronous_standby_names = '\"" APP_NAME "\"'");
    query_eq(&h.pg, "SELECT pg_reload_conf()", "t");
    ck_assert_msg(wait_query(&h,
                             "SELECT application_name || '|' || sync_state || '|' || state "
                             "FROM pg_stat_replication",
                             APP_NAME "|sync|streaming", 30),
                  "the source never became the synchronous standby");

    before = h.next_lsn;
    pid = spawn_sh(&h, "psql -X -v ON_ERROR_STOP=1 -c 'CREATE TABLE sync_t AS SELECT 1 AS x'");
    ck_assert_msg(wait_query(&h,
                             "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                             "1", 30),
                  "the commit never waited for the synchronous standby");
    run_for(&h, 2.0);
    ck_assert_int_eq(child_status(pid), -1); /* still blocked: nothing reported */
    ck_assert_uint_gt(h.next_lsn, before);   /* its commit record did arrive */

    /* A report below the commit LSN releases nothing. */
    ck_assert_int_eq(source_report(h.src, before, before, before), 0);
    run_for(&h, 2.0);
    ck_assert_int_eq(child_status(pid), -1);
    lsn_str(before, lsn);
    snprintf(expect, sizeof(expect), APP_NAME "|sync|%s|%s|%s", lsn, lsn, lsn);
    query_eq(&h.pg,
             "SELECT application_name || '|' || sync_state || '|' || write_lsn || '|' || "
             "flush_lsn || '|' || replay_lsn FROM pg_stat_replication",
             expect);

    /* Everything received: the commit returns. */
    done = h.next_lsn;
    ck_assert_int_eq(source_report(h.src, done, done, done), 0);
    ck_assert_int_eq(run_until_exit(&h, pid, 30), 0);
    ck_assert(!h.closed);
    lsn_str(done, lsn);
    snprintf(expect, sizeof(expect), APP_NAME "|sync|%s|%s|%s", lsn, lsn, lsn);
    query_eq(&h.pg,
             "SELECT application_name || '|' || sync_state || '|' || write_lsn || '|' || "
             "flush_lsn || '|' || replay_lsn FROM pg_stat_replication",
             expect);
    /* The reported flush is the slot's restart_lsn. */
    snprintf(expect, sizeof(expect), "%s", lsn);
    query_eq(&h.pg, "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'wm_sync'",
             expect);
    /* Unchanged positions: accepted, nothing new. */
    ck_assert_int_eq(source_report(h.src, done, done, done), 0);

    /* Idle, nothing changes and the walsender asks for nothing (wal_sender_timeout 60 s): the
     * status interval alone must send an 'r' within 10 s. */
    query_eq(&h.pg, "SHOW wal_sender_timeout", "1min");
    reply1 = query_u64(&h.pg, "SELECT (extract(epoch FROM reply_time) * 1000000)::bigint "
                              "FROM pg_stat_replication");
    run_for(&h, 11.0);
    reply2 = query_u64(&h.pg, "SELECT (extract(epoch FROM reply_time) * 1000000)::bigint "
                              "FROM pg_stat_replication");
    ck_assert_msg(reply2 > reply1 + 5000000, "no periodic status update: %" PRIu64 " -> %" PRIu64,
                  reply1, reply2);
    ck_assert(!h.closed);
    query_eq(&h.pg, "SELECT x FROM sync_t", "1");
    h_done(&h);
}
END_TEST

/* With wal_sender_timeout = 2s, 6.5 s of idleness must not end the session. */
START_TEST(test_keepalive)
{
    struct h h;
    char *pid1, *pid2;
    uint64_t at, lsn;

    h_init(&h, "src-keepalive", NULL);
    query_ok(&h.pg, "ALTER SYSTEM SET wal_sender_timeout = '2s'");
    query_eq(&h.pg, "SELECT pg_reload_conf()", "t");
    ck_assert_msg(wait_query(&h, "SHOW wal_sender_timeout", "2s", 10), "reload did not apply");
    h.start_on_identified = true;
    h_connect(&h, "wm_keepalive", NULL);
    ck_assert_msg(run_until_flag(&h, &h.identified, 60), "not identified: %s", h.close_msg);
    ck_assert_msg(wait_query(&h, "SELECT state FROM pg_stat_replication", "streaming", 30),
                  "not streaming");
    pid1 = pgt_query(&h.pg, "SELECT pid FROM pg_stat_replication");
    ck_assert_ptr_nonnull(pid1);

    run_for(&h, 6.5);
    ck_assert_msg(!h.closed, "closed while idle: %s", h.close_msg);
    pid2 = pgt_query(&h.pg, "SELECT pid FROM pg_stat_replication");
    ck_assert_ptr_nonnull(pid2);
    ck_assert_str_eq(pid1, pid2); /* the same walsender */
    query_eq(&h.pg, "SELECT reply_time > now() - interval '3 seconds' FROM pg_stat_replication",
             "t");

    /* And the stream still works. */
    at = h.next_lsn;
    ck_assert_int_eq(pgt_sh(&h.pg, "psql -X -c 'CREATE TABLE k AS SELECT 1 AS x'"), 0);
    lsn = query_u64(&h.pg, "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn");
    ck_assert_uint_gt(lsn, at);
    ck_assert_msg(run_until_lsn(&h, lsn, 20), "new WAL did not arrive: %s", h.close_msg);
    ck_assert(!h.gap);
    free(pid1);
    free(pid2);
    h_done(&h);
}
END_TEST

/* Pausing stops delivery; resuming delivers the rest. */
START_TEST(test_pause)
{
    struct h h;
    unsigned calls, drained;
    uint64_t target;

    h_init(&h, "src-pause", "max_wal_size = 1GB\ncheckpoint_timeout = 1h");
    h_connect(&h, "wm_pause", NULL);
    ck_assert_msg(run_until_flag(&h, &h.identified, 60), "not identified: %s", h.close_msg);
    /* WAL to catch up on: the slot holds it from before pgbench -i. */
    ck_assert_int_eq(pgt_sh(&h.pg, "pgbench -i -q -s 2 postgres"), 0);
    target = query_u64(&h.pg, "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn");
    ck_assert_uint_gt(target, h.id.slot_restart_lsn + 8 * 1024 * 1024);
    h.pause_after = 1;
    ck_assert_int_eq(source_start(h.src, 0, 0), 0);
    for (double end = now_s() + 30; h.wal_calls == 0 && now_s() < end;)
        ck_assert_int_ge(wio_run_once(h.loop, 50), 0);
    ck_assert_uint_eq(h.wal_calls, 1);
    run_for(&h, 1.5);
    calls = h.wal_calls;
    drained = h.drained;
    ck_assert_uint_eq(calls, 1);   /* nothing while paused */
    ck_assert_uint_eq(drained, 1); /* what came before the pause was flushed to the owner */
    ck_assert(!h.closed);
    ck_assert_uint_lt(h.next_lsn, target);

    source_pause(h.src, false);
    ck_assert_msg(run_until_lsn(&h, target, 60), "WAL stalled after resume at %" PRIx64,
                  h.next_lsn);
    ck_assert_uint_gt(h.wal_calls, calls);
    ck_assert(!h.gap);
    ck_assert(!h.closed);
    h_done(&h);
}
END_TEST

START_TEST(test_errors)
{
    struct h h;
    struct source *s = NULL;
    char conninfo[256];
    int port;

    h_init(&h, "src-errors", NULL);

    /* Bad arguments are refused at once. */
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres", h.pg.port);
    ck_assert_int_eq(source_new(&s, h.loop, conninfo, "Bad-Slot", APP_NAME, &ops, &h), -EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(source_new(&s, h.loop, "nonsense_option=1", "wm_err", APP_NAME, &ops, &h),
                     -EINVAL);
    ck_assert_int_eq(source_new(&s, h.loop, conninfo, "wm_err", "", &ops, &h), -EINVAL);
    ck_assert_ptr_null(s);

    /* Nothing listens on the port: the connection is refused. */
    port = tu_free_port();
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres", port);
    ck_assert_int_eq(source_new(&h.src, h.loop, conninfo, "wm_err", APP_NAME, &ops, &h), 0);
    port = source_start(h.src, 0, 0); /* not identified yet (or already known to fail) */
    ck_assert_msg(port == -EINVAL || port == -ENOTCONN, "source_start: %d", port);
    ck_assert(run_until_flag(&h, &h.closed, 30));
    ck_assert_int_eq(h.close_err, -ENOTCONN);
    ck_assert_msg(strstr(h.close_msg, "cannot connect to the primary") != NULL &&
                      strstr(h.close_msg, "Connection refused") != NULL,
                  "%s", h.close_msg);
    ck_assert(!h.identified);
    ck_assert_int_eq(source_report(h.src, 1, 1, 1), -ENOTCONN);
    run_for(&h, 0.3);
    ck_assert_uint_eq(h.closed_calls, 1);
    h_free_source(&h);
    run_for(&h, 0.2);
    h.freed = false;
    h.closed = false;
    h.closed_calls = 0;

    /* Unknown role: the server's authentication error. */
    h_connect(&h, "wm_err", "user=nosuchrole");
    ck_assert(run_until_flag(&h, &h.closed, 30));
    ck_assert_int_eq(h.close_err, -ENOTCONN);
    ck_assert_msg(strstr(h.close_msg, "role \"nosuchrole\" does not exist") != NULL, "%s",
                  h.close_msg);
    ck_assert(!h.identified);
    h_free_source(&h);
    run_for(&h, 0.2);
    h.freed = false;
    h.closed = false;

    /* A start ahead of the flush position: the server's error. */
    h_connect(&h, "wm_err", NULL);
    ck_assert(run_until_flag(&h, &h.identified, 60));
    ck_assert_int_eq(source_start(h.src, h.id.xlogpos + 4ull * SEG, 0), 0);
    ck_assert_int_eq(source_start(h.src, 0, 0), -EINVAL); /* already starting */
    ck_assert(run_until_flag(&h, &h.closed, 30));
    ck_assert_int_eq(h.close_err, WIRE_EPEER);
    ck_assert_msg(strstr(h.close_msg, "ahead of the WAL flush position") != NULL &&
                      strstr(h.close_msg, "START_REPLICATION") != NULL,
                  "%s", h.close_msg);
    ck_assert_uint_eq(h.wal_calls, 0);
    h_free_source(&h);
    run_for(&h, 0.2);
    h.freed = false;
    h.closed = false;
    h.identified = false;

    /* The slot disappears between identification and START_REPLICATION. */
    h_connect(&h, "wm_err", NULL);
    ck_assert(run_until_flag(&h, &h.identified, 60));
    ck_assert(wait_query(&h,
                         "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'wm_err' "
                         "AND NOT active",
                         "1", 10));
    query_ok(&h.pg, "SELECT pg_drop_replication_slot('wm_err')");
    ck_assert_int_eq(source_start(h.src, 0, 0), 0);
    ck_assert(run_until_flag(&h, &h.closed, 30));
    ck_assert_int_eq(h.close_err, WIRE_EPEER);
    ck_assert_msg(strstr(h.close_msg, "replication slot \"wm_err\" does not exist") != NULL, "%s",
                  h.close_msg);
    h_done(&h);
}
END_TEST

/* pg_ctl stop -m fast on the primary while streaming and reporting everything received. */
static void
stop_fast_while_streaming(struct h *h, struct pgt_cluster *pg)
{
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(pgt_sh(pg, "pg_ctl -D \"$PGDATA\" -m fast -w -t 60 stop") == 0 ? 0 : 1);
    ck_assert_msg(run_until_flag(h, &h->closed, 60), "the session did not end");
    ck_assert_int_eq(run_until_exit(h, pid, 60), 0);
    pg->running = false;
}

/*
 * A clean shutdown of the primary (the walsender waits for the reported flush to reach all it
 * sent, then ends the stream with CommandComplete) is err 0 at the end of its WAL; a
 * terminated walsender and an immediate shutdown are losses, err < 0.
 */
START_TEST(test_shutdown)
{
    struct h h;
    uint64_t end;
    char lsn[PGP_LSN_BUFSZ];

    h_init(&h, "src-shutdown", NULL);
    h.start_on_identified = true;
    h.auto_report = true;
    h_connect(&h, "wm_down", NULL);
    ck_assert(run_until_flag(&h, &h.identified, 60));
    ck_assert(run_until_lsn(&h, h.id.xlogpos, 30));
    ck_assert_int_eq(pgt_sh(&h.pg, "psql -X -c 'CREATE TABLE d AS SELECT 1 AS x'"), 0);
    stop_fast_while_streaming(&h, &h.pg);
    end = checkpoint_end(&h.pg);
    lsn_str(end, lsn);
    ck_assert_msg(h.close_err == 0, "err %d: %s", h.close_err, h.close_msg);
    ck_assert_msg(strstr(h.close_msg, "the primary shut down cleanly at ") != NULL &&
                      strstr(h.close_msg, lsn) != NULL,
                  "%s (expected %s)", h.close_msg, lsn);
    ck_assert_msg(h.closed_received == end, "received %" PRIx64 ", the WAL ends at %" PRIx64,
                  h.closed_received, end);
    ck_assert_uint_eq(h.next_lsn, end);
    ck_assert(!h.gap);
    ck_assert_int_eq(source_report(h.src, end, end, end), WIRE_ECLOSED);
    ck_assert_int_eq(source_start(h.src, 0, 0), WIRE_ECLOSED);
    run_for(&h, 0.3);
    ck_assert_uint_eq(h.closed_calls, 1);

    /* A terminated walsender: the server's FATAL error. */
    ck_assert_msg(pgt_start(&h.pg) == 0, "cannot restart the primary");
    h_new_session(&h);
    h.start_on_identified = true;
    h_connect(&h, "wm_down", NULL);
    ck_assert(run_until_flag(&h, &h.identified, 60));
    ck_assert(wait_query(&h, "SELECT state FROM pg_stat_replication", "streaming", 30));
    query_eq(&h.pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication", "t");
    ck_assert(run_until_flag(&h, &h.closed, 30));
    ck_assert_msg(h.close_err < 0, "err %d: %s", h.close_err, h.close_msg);
    ck_assert_msg(strstr(h.close_msg, "terminating connection due to administrator command") !=
                      NULL,
                  "%s", h.close_msg);

    /* An immediate shutdown: the connection is lost. */
    h_new_session(&h);
    h.start_on_identified = true;
    h_connect(&h, "wm_down", NULL);
    ck_assert(run_until_flag(&h, &h.identified, 60));
    ck_assert(wait_query(&h, "SELECT state FROM pg_stat_replication", "streaming", 30));
    ck_assert_int_eq(pgt_stop(&h.pg, "immediate"), 0);
    ck_assert(run_until_flag(&h, &h.closed, 30));
    ck_assert_msg(h.close_err < 0, "err %d: %s", h.close_err, h.close_msg);
    h_done(&h);
}
END_TEST

/* source_free at various moments: no callback afterwards, the walsender goes away. */
START_TEST(test_free)
{
    struct h h;
    pid_t pid;

    h_init(&h, "src-free", "max_wal_size = 1GB\ncheckpoint_timeout = 1h");

    /* While connecting. */
    h_connect(&h, "wm_free", NULL);
    h_free_source(&h);
    run_for(&h, 0.5);
    ck_assert_uint_eq(h.after_free, 0);
    h.freed = false;

    /* Inside on_identified. */
    h.free_on_identified = true;
    h_connect(&h, "wm_free", NULL);
    ck_assert(run_until_flag(&h, &h.identified, 60));
    ck_assert(h.freed);
    run_for(&h, 0.5);
    ck_assert_uint_eq(h.after_free, 0);
    h.free_on_identified = false;
    h.freed = false;
    h.identified = false;

    /* Inside on_wal, while pgbench writes. */
    h.start_on_identified = true;
    h.free_after = 4 * 1024 * 1024;
    h_connect(&h, "wm_free", NULL);
    pid = spawn_sh(&h, "pgbench -i -q -s 3 postgres && pgbench -n -c 2 -T 4 postgres");
    for (double end = now_s() + 120; !h.freed && !h.closed && now_s() < end;)
        ck_assert_int_ge(wio_run_once(h.loop, 50), 0);
    ck_assert_msg(h.freed, "not freed: %s", h.close_msg);
    ck_assert_ptr_null(h.src);
    run_for(&h, 1.0);
    ck_assert_uint_eq(h.after_free, 0);
    ck_assert(wait_query(&h, "SELECT count(*) FROM pg_stat_replication", "0", 20));
    h.freed = false;
    h.free_after = 0;
    h.identified = false;
    h.wal_calls = 0;
    h.wal_bytes = 0;

    /* From the loop's level, mid-stream, with reports flowing. */
    h_connect(&h, "wm_free", NULL);
    ck_assert(run_until_flag(&h, &h.identified, 60));
    for (double end = now_s() + 60; h.wal_bytes < 1024 * 1024 && !h.closed && now_s() < end;)
        ck_assert_int_ge(wio_run_once(h.loop, 50), 0);
    ck_assert_uint_ge(h.wal_bytes, 1024 * 1024);
    ck_assert_int_eq(source_report(h.src, h.next_lsn, h.next_lsn, h.next_lsn), 0);
    source_pause(h.src, true);
    source_pause(h.src, false);
    h_free_source(&h);
    run_for(&h, 1.0);
    ck_assert_uint_eq(h.after_free, 0);
    ck_assert(wait_query(&h, "SELECT count(*) FROM pg_stat_replication", "0", 20));
    ck_assert_int_eq(run_until_exit(&h, pid, 120), 0);
    h_done(&h);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("source");
    TCase *tc = tcase_create("source");
    TCase *tc_end = tcase_create("end");
    SRunner *sr;
    char *regdir;
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    regdir = tu_tmpdir("src-registry");
    tu_require(asprintf(&registry, "%s/clusters", regdir) > 0);
    if (getenv("WALMIRROR_LOG_DEBUG") != NULL)
        log_level = LOG_LEVEL_DEBUG;
    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, test_identify);
    tcase_add_test(tc, test_stream);
    tcase_add_test(tc, test_sync_commit);
    tcase_add_test(tc, test_keepalive);
    tcase_add_test(tc, test_pause);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_free);
    suite_add_tcase(s, tc);
    /* A case of its own, so that CK_RUN_CASE=end runs only these. */
    tcase_set_timeout(tc_end, 400);
    tcase_add_test(tc_end, test_shutdown);
    suite_add_tcase(s, tc_end);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    stop_leftovers();
    tu_rmtree(regdir);
    free(regdir);
    free(registry);
    return failed == 0 ? 0 : 1;
}
