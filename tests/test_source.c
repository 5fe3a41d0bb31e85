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
 *  - timeline: a chain P -> S -> S2 (S2 cascading from S), P stopped and S promoted (timeline
 *    2), then S2 promoted (timeline 3).  A source started on timeline 1 follows every switch:
 *    on_timeline with the switch point and the history file, WAL byte-identical to the
 *    servers' pg_wal on every timeline; the primary's own history in the identity; a start
 *    past the switch point, and an owner without on_timeline, end the session;
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
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
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
#define MAX_SWITCHES 4

/* One on_timeline call. */
struct tl_switch {
    uint32_t tli;
    uint64_t switch_lsn;
    char *history;
    size_t history_len;
    uint64_t end_before;  /* where the WAL delivered before it ended (0: none was) */
    uint64_t received;    /* source_received_lsn() during the call */
    uint64_t first_after; /* the first on_wal LSN after it (0: none yet) */
};

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
    uint32_t tli;         /* timeline of the WAL being delivered (segment file names) */

    unsigned switches;
    struct tl_switch sw[MAX_SWITCHES];
    bool after_switch; /* on_timeline came, no on_wal yet */

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
    h->tli = id->timeline;
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

        seg_name(name, h->tli, segno);
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
    if (h->after_switch) {
        /* The one place where the LSN may go backwards. */
        h->after_switch = false;
        h->sw[h->switches - 1].first_after = lsn;
    } else if (h->wal_calls > 0 && lsn != h->next_lsn) {
        h->gap = true;
    }
    if (h->wal_calls == 0)
        h->first_lsn = lsn;
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

static void
cb_timeline(void *ctx, uint32_t tli, uint64_t switch_lsn, const char *history, size_t len)
{
    struct h *h = ctx;
    struct tl_switch *sw;

    if (h->freed) {
        h->after_free++;
        return;
    }
    ck_assert_uint_lt(h->switches, MAX_SWITCHES);
    ck_assert_uint_gt(tli, h->tli);
    sw = &h->sw[h->switches++];
    sw->tli = tli;
    sw->switch_lsn = switch_lsn;
    sw->history = malloc(len + 1);
    ck_assert_ptr_nonnull(sw->history);
    memcpy(sw->history, history, len);
    sw->history[len] = '\0';
    sw->history_len = len;
    sw->end_before = h->wal_calls > 0 ? h->next_lsn : 0;
    sw->received = source_received_lsn(h->src);
    h->tli = tli;
    h->after_switch = true;
    fprintf(stderr, "on_timeline(%u, %X/%X, %zu bytes of history)\n", tli,
            (unsigned)(switch_lsn >> 32), (unsigned)switch_lsn, len);
}

static const struct source_ops ops = {
    .on_identified = cb_identified,
    .on_wal = cb_wal,
    .on_drained = cb_drained,
    .on_closed = cb_closed,
    .on_timeline = cb_timeline,
};

/* An owner that does not follow timelines. */
static const struct source_ops ops_nofollow = {
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

/* A source of the server on port with the given callbacks. */
static void
h_connect_port(struct h *h, int port, const char *slot, const struct source_ops *cbs)
{
    char conninfo[512];

    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres", port);
    ck_assert_int_eq(source_new(&h->src, h->loop, conninfo, slot, APP_NAME, cbs, h), 0);
    ck_assert_ptr_nonnull(h->src);
}

/* A source of pg (another cluster than h->pg, possibly) with the given callbacks. */
static void
h_connect_to(struct h *h, const struct pgt_cluster *pg, const char *slot,
             const struct source_ops *cbs)
{
    h_connect_port(h, pg->port, slot, cbs);
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

static void
h_forget_switches(struct h *h)
{
    for (unsigned i = 0; i < h->switches; i++)
        free(h->sw[i].history);
    memset(h->sw, 0, sizeof(h->sw));
    h->switches = 0;
    h->after_switch = false;
}

/* Frees the source (if any) and forgets everything about its session. */
static void
h_new_session(struct h *h)
{
    if (h->src != NULL)
        h_free_source(h);
    run_for(h, 0.2);
    h_forget_switches(h);
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
    h_forget_switches(h);
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

/* Polls sql on pg (turning the loop in between) until it returns expect. */
static bool
wait_query_on(struct h *h, struct pgt_cluster *pg, const char *sql, const char *expect,
              double seconds)
{
    double end = now_s() + seconds;

    for (;;) {
        char *out = pgt_query(pg, sql);
        bool ok = out != NULL && strcmp(out, expect) == 0;

        free(out);
        if (ok)
            return true;
        if (now_s() >= end)
            return false;
        run_for(h, 0.2);
    }
}

/* Turns the loop until n timeline switches came and WAL after the last, or the session
 * closed. */
static bool
run_until_switches(struct h *h, unsigned n, double seconds)
{
    double end = now_s() + seconds;

    while ((h->switches < n || h->after_switch) && !h->closed && now_s() < end)
        ck_assert_int_ge(wio_run_once(h->loop, 50), 0);
    return h->switches >= n && !h->after_switch;
}

/* A file of pg's data directory (malloc'd), *len its length. */
static char *
read_pg_file(const struct pgt_cluster *pg, const char *rel, size_t *len)
{
    char path[4096];
    char *data;

    snprintf(path, sizeof(path), "%s/%s", pg->pgdata, rel);
    data = tu_read_file(path, len);
    ck_assert_msg(data != NULL, "cannot read %s", path);
    return data;
}

/* The last entry of a history file: the parent timeline and where the child forked off. */
static uint64_t
history_switch(const char *history, uint32_t *parent)
{
    const char *line = history, *p;
    unsigned hi, lo;

    for (p = history; *p != '\0'; p++)
        if (p[0] == '\n' && p[1] != '\0' && p[1] != '\n')
            line = p + 1;
    ck_assert_msg(sscanf(line, "%u\t%X/%X", parent, &hi, &lo) == 3, "history line '%s'", line);
    return (uint64_t)hi << 32 | lo;
}

/* The start of the oldest segment of timeline tli in pg's pg_wal (a .partial one included). */
static uint64_t
oldest_segment(const struct pgt_cluster *pg, uint32_t tli)
{
    char dir[4096], prefix[16];
    uint64_t oldest = UINT64_MAX;
    struct dirent *e;
    DIR *d;

    snprintf(dir, sizeof(dir), "%s/pg_wal", pg->pgdata);
    snprintf(prefix, sizeof(prefix), "%08X", tli);
    d = opendir(dir);
    ck_assert_msg(d != NULL, "opendir %s", dir);
    while ((e = readdir(d)) != NULL) {
        unsigned hi, lo;
        size_t n = strlen(e->d_name);

        if ((n != 24 && !(n == 32 && strcmp(e->d_name + 24, ".partial") == 0)) ||
            strncmp(e->d_name, prefix, 8) != 0 || strspn(e->d_name, "0123456789ABCDEF") != 24 ||
            sscanf(e->d_name + 8, "%8X%8X", &hi, &lo) != 2)
            continue;
        if ((uint64_t)hi * (0x100000000ull / SEG) + lo < oldest)
            oldest = (uint64_t)hi * (0x100000000ull / SEG) + lo;
    }
    closedir(d);
    ck_assert_msg(oldest != UINT64_MAX, "no segment of timeline %u in %s", tli, dir);
    return oldest * SEG;
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
 * Compares timeline tli's WAL in [from, to) as the source delivered it (h->segdir) with the
 * server's pg_wal: the segment file, or its .partial after a promotion.  Returns the number of
 * segments compared.
 */
static unsigned
cmp_wal(struct h *h, const struct pgt_cluster *pg, uint32_t tli, uint64_t from, uint64_t to)
{
    uint8_t *a = malloc(SEG), *b = malloc(SEG);
    unsigned segs = 0;

    ck_assert(a != NULL && b != NULL);
    for (uint64_t lsn = from; lsn < to;) {
        size_t off = (size_t)(lsn % SEG);
        size_t len = (size_t)(to - lsn < SEG - off ? to - lsn : SEG - off);
        char name[32], mine[4096], theirs[4200];

        seg_name(name, tli, lsn / SEG);
        snprintf(mine, sizeof(mine), "%s/%s", h->segdir, name);
        snprintf(theirs, sizeof(theirs), "%s/pg_wal/%s", pg->pgdata, name);
        if (access(theirs, F_OK) != 0)
            strcat(theirs, ".partial");
        read_range(mine, off, len, a);
        read_range(theirs, off, len, b);
        if (memcmp(a, b, len) != 0) {
            size_t i = 0;

            while (a[i] == b[i])
                i++;
            ck_abort_msg("timeline %u: %s differs from %s at offset %zu", tli, mine, theirs,
                         off + i);
        }
        segs++;
        lsn += len;
    }
    free(a);
    free(b);
    return segs;
}

/* Compares [from, to) of two timelines' segment files as the source delivered them. */
static void
cmp_timelines(struct h *h, uint32_t tli_a, uint32_t tli_b, uint64_t from, uint64_t to)
{
    char name_a[32], name_b[32], pa[4096], pb[4096];
    uint8_t *a, *b;

    ck_assert_uint_eq(from / SEG, (to - 1) / SEG);
    a = malloc(SEG);
    b = malloc(SEG);
    ck_assert(a != NULL && b != NULL);
    seg_name(name_a, tli_a, from / SEG);
    seg_name(name_b, tli_b, from / SEG);
    snprintf(pa, sizeof(pa), "%s/%s", h->segdir, name_a);
    snprintf(pb, sizeof(pb), "%s/%s", h->segdir, name_b);
    read_range(pa, (size_t)(from % SEG), (size_t)(to - from), a);
    read_range(pb, (size_t)(from % SEG), (size_t)(to - from), b);
    ck_assert_msg(memcmp(a, b, (size_t)(to - from)) == 0, "%s and %s differ before the switch",
                  name_a, name_b);
    free(a);
    free(b);
}

/* A streaming standby of up by pg_basebackup -R, on its own port and socket.  It follows
 * timeline switches upstream (recovery_target_timeline = latest by default). */
static void
make_standby(struct pgt_cluster *up, struct pgt_cluster *sb, const char *tag)
{
    pgt_prepare(sb, tag);
    register_cluster(sb);
    ck_assert_msg(pgt_sh(up, "pg_basebackup -D '%s' -R -X stream -c fast", sb->pgdata) == 0,
                  "pg_basebackup failed (see %s/cmd.log)", up->dir);
    ck_assert_int_eq(pgt_sh(sb,
                            "printf \"port = %d\\nunix_socket_directories = '%s'\\n\" >> "
                            "\"$PGDATA/postgresql.auto.conf\"",
                            sb->port, sb->dir),
                     0);
    ck_assert_msg(pgt_start(sb) == 0, "cannot start the standby (see %s)", sb->dir);
}

static void
promote(struct pgt_cluster *pg)
{
    ck_assert_msg(pgt_sh(pg, "pg_ctl -D \"$PGDATA\" -w -t 60 promote") == 0,
                  "promotion failed (see %s)", pg->dir);
}

/* Some WAL on pg, then pg_switch_wal(): returns the end of the segment it completed. */
static uint64_t
load_and_switch(struct pgt_cluster *pg, const char *load)
{
    if (load != NULL)
        ck_assert_msg(pgt_sh(pg, "%s", load) == 0, "load failed (see %s/cmd.log)", pg->dir);
    return query_u64(pg, "SELECT pg_switch_wal() - '0/0'::pg_lsn");
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
    ck_assert_ptr_null(h.id.history); /* no history on timeline 1 */
    ck_assert_uint_eq(h.id.history_len, 0);
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

/* ---------------------------------------------------------------------------------------- */
/* A scripted walsender, for what a real server does not do on demand                      */

#define FAKE_SYSID 7000000000000000001ull
#define FAKE_START 0x2000000ull  /* the segment the source asks for on timeline 1 */
#define FAKE_SWITCH 0x2000100ull /* timeline 2 forks off timeline 1 here */
#define FAKE_PAST 100u           /* bytes of timeline 1 sent past FAKE_SWITCH */
#define FAKE_TL2_BYTES 0x2000u
#define FAKE_HISTORY "1\t0/2000100\tno recovery target specified\n"

enum fake_case {
    FAKE_OK,        /* timeline 1 streamed FAKE_PAST bytes past the switch, then timeline 2 */
    FAKE_BAD_NEXT,  /* the next timeline is not above the one that ended */
    FAKE_BAD_START, /* the next timeline starts beyond what was streamed */
    FAKE_BAD_NAME,  /* TIMELINE_HISTORY answers with another timeline's file name */
    FAKE_BAD_ENTRY, /* the history's last entry is not the switch just made */
};

struct fake {
    int fd;
    uint8_t in[1 << 17];
    size_t in_len;
    size_t consumed; /* bytes of in[] the last message took */
    struct pgp_buf out;
};

static void
fake_send(struct fake *f)
{
    size_t off = 0;

    while (off < f->out.len) {
        ssize_t n = write(f->fd, f->out.data + off, f->out.len - off);

        if (n <= 0)
            _exit(10);
        off += (size_t)n;
    }
    pgp_buf_reset(&f->out);
}

/* The next frontend message (initial: the start-up packet); exits at EOF.  The message's
 * pointers stay valid until the next call. */
static void
fake_read(struct fake *f, bool initial, struct pgp_initial *ini, struct pgp_fe_msg *m)
{
    struct pgp_err e;

    memmove(f->in, f->in + f->consumed, f->in_len - f->consumed);
    f->in_len -= f->consumed;
    f->consumed = 0;
    for (;;) {
        int rc = initial ? pgp_parse_initial(f->in, f->in_len, ini, &e)
                         : pgp_parse_fe(f->in, f->in_len, m, &e);
        ssize_t n;

        if (rc < 0)
            _exit(11);
        if (rc > 0) {
            f->consumed = (size_t)rc;
            return;
        }
        n = read(f->fd, f->in + f->in_len, sizeof(f->in) - f->in_len);
        if (n <= 0)
            _exit(0); /* the source went away: the script is over */
        f->in_len += (size_t)n;
    }
}

/* Runs one session on fd as the script says; exits 0 if the source did as expected. */
static void
fake_session(int fd, enum fake_case c)
{
    struct fake *f = calloc(1, sizeof(*f));
    unsigned histories = 0;
    uint8_t wal[FAKE_TL2_BYTES];

    if (f == NULL)
        _exit(12);
    f->fd = fd;
    for (;;) {
        struct pgp_initial ini;

        fake_read(f, true, &ini, NULL);
        if (ini.kind == PGP_INITIAL_SSL) {
            if (pgp_put_ssl_response(&f->out, false) < 0)
                _exit(13);
        } else if (ini.kind == PGP_INITIAL_GSSENC) {
            if (pgp_put_gssenc_response(&f->out) < 0)
                _exit(13);
        } else {
            break;
        }
        fake_send(f);
    }
    if (pgp_put_auth_ok(&f->out) < 0 ||
        pgp_put_parameter_status(&f->out, "server_version", "15.4") < 0 ||
        pgp_put_parameter_status(&f->out, "integer_datetimes", "on") < 0 ||
        pgp_put_backend_key(&f->out, 1, 2) < 0 || pgp_put_ready(&f->out, 'I') < 0)
        _exit(13);
    fake_send(f);
    for (;;) {
        struct pgp_fe_msg m;
        struct pgp_cmd cmd;
        struct pgp_err e;
        int rc = 0;

        fake_read(f, false, NULL, &m);
        if (m.type == 'X')
            _exit(0);
        if (m.type != 'Q' || pgp_parse_command(m.query, m.query_len, &cmd, &e) < 0)
            _exit(14);
        switch (cmd.kind) {
        case PGP_CMD_IDENTIFY_SYSTEM:
            rc = pgp_put_identify_system(&f->out, FAKE_SYSID, 2, 0x3000000, NULL);
            break;
        case PGP_CMD_SHOW:
            rc = pgp_put_show(&f->out, "wal_segment_size", "16MB");
            break;
        case PGP_CMD_READ_REPLICATION_SLOT: {
            struct pgp_slot_info slot = {.restart_lsn = FAKE_START, .restart_tli = 1};

            rc = pgp_put_read_replication_slot(&f->out, &slot);
            break;
        }
        case PGP_CMD_TIMELINE_HISTORY:
            /* The first request is the identification's: always right. */
            if (cmd.timeline != 2)
                _exit(15);
            if (histories++ > 0 && c == FAKE_BAD_NAME)
                rc = pgp_put_timeline_history(&f->out, 3, FAKE_HISTORY, strlen(FAKE_HISTORY));
            else if (histories > 1 && c == FAKE_BAD_ENTRY)
                rc = pgp_put_timeline_history(&f->out, 2, "1\t0/2000000\tx\n", 14);
            else
                rc = pgp_put_timeline_history(&f->out, 2, FAKE_HISTORY, strlen(FAKE_HISTORY));
            break;
        case PGP_CMD_START_REPLICATION:
            if (cmd.timeline == 1 && cmd.lsn == FAKE_START) {
                size_t n = FAKE_SWITCH - FAKE_START + FAKE_PAST;

                memset(wal, 'A', sizeof(wal));
                if (pgp_put_copy_both(&f->out) < 0 ||
                    pgp_put_xlogdata(&f->out, FAKE_START, FAKE_START + n, pgp_now(), wal, n) < 0 ||
                    pgp_put_copy_done(&f->out) < 0)
                    _exit(16);
                fake_send(f);
                do /* status updates until the source's CopyDone */
                    fake_read(f, false, NULL, &m);
                while (m.type == 'd');
                if (m.type != 'c')
                    _exit(17);
                rc = pgp_put_end_of_timeline(&f->out, c == FAKE_BAD_NEXT ? 1 : 2,
                                             c == FAKE_BAD_START ? FAKE_SWITCH + 2 * FAKE_PAST
                                                                 : FAKE_SWITCH);
            } else if (cmd.timeline == 2 && cmd.lsn == FAKE_START && c == FAKE_OK) {
                memset(wal, 'B', sizeof(wal));
                if (pgp_put_copy_both(&f->out) < 0 ||
                    pgp_put_xlogdata(&f->out, FAKE_START, FAKE_START + sizeof(wal), pgp_now(), wal,
                                     sizeof(wal)) < 0 ||
                    pgp_put_keepalive(&f->out, FAKE_START + sizeof(wal), pgp_now(), false) < 0)
                    _exit(16);
                fake_send(f);
                for (;;) /* until the source goes away */
                    fake_read(f, false, NULL, &m);
            } else {
                _exit(18); /* not what the source should have asked for */
            }
            break;
        default:
            _exit(19);
        }
        if (rc < 0 || pgp_put_ready(&f->out, 'I') < 0)
            _exit(20);
        fake_send(f);
    }
}

/* Starts the scripted walsender for one connection; returns its pid, *port its port. */
static pid_t
fake_start(enum fake_case c, int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    pid_t pid;

    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(lfd, 1), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd;

        alarm(30);
        fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            _exit(21);
        close(lfd);
        fake_session(fd, c);
        _exit(22);
    }
    close(lfd);
    return pid;
}

/* One session against the scripted walsender, from timeline 1; returns the fake's status. */
static int
fake_run(struct h *h, enum fake_case c)
{
    int port, st;
    pid_t pid;

    h_new_session(h);
    pid = fake_start(c, &port);
    h_connect_port(h, port, "wm_fake", &ops);
    ck_assert_msg(run_until_flag(h, &h->identified, 10), "not identified: %s", h->close_msg);
    ck_assert_uint_eq(h->id.system_id, FAKE_SYSID);
    ck_assert_uint_eq(h->id.timeline, 2);
    ck_assert_str_eq(h->id.history, FAKE_HISTORY);
    h->tli = 1;
    ck_assert_int_eq(source_start(h->src, FAKE_START + 0x1234, 1), 0);
    if (c == FAKE_OK) {
        ck_assert_msg(run_until_switches(h, 1, 10), "no switch: %s", h->close_msg);
        ck_assert_msg(run_until_lsn(h, FAKE_START + FAKE_TL2_BYTES, 10), "%s", h->close_msg);
    } else {
        ck_assert(run_until_flag(h, &h->closed, 10));
    }
    h_free_source(h);
    st = run_until_exit(h, pid, 10);
    return st;
}

/*
 * Timeline switches the way only a scripted server makes them on demand: WAL sent past the
 * switch point (walsender.c allows it after a cascading standby's promotion), and switch data
 * that does not add up.
 */
START_TEST(test_timeline_fake)
{
    struct h h;

    memset(&h, 0, sizeof(h));
    ck_assert_int_eq(wio_loop_new(&h.loop, 0), 0);

    ck_assert_int_eq(fake_run(&h, FAKE_OK), 0);
    ck_assert(!h.closed);
    ck_assert(!h.gap);
    ck_assert_uint_eq(h.first_lsn, FAKE_START);
    ck_assert_uint_eq(h.switches, 1);
    ck_assert_uint_eq(h.sw[0].tli, 2);
    ck_assert_uint_eq(h.sw[0].switch_lsn, FAKE_SWITCH);
    ck_assert_str_eq(h.sw[0].history, FAKE_HISTORY);
    /* Timeline 1 was delivered past the switch point; it is reported as such... */
    ck_assert_uint_eq(h.sw[0].end_before, FAKE_SWITCH + FAKE_PAST);
    /* ...but what counts as received on timeline 2 starts at the switch point. */
    ck_assert_uint_eq(h.sw[0].received, FAKE_SWITCH);
    ck_assert_uint_eq(h.sw[0].first_after, FAKE_START);
    ck_assert_uint_eq(h.next_lsn, FAKE_START + FAKE_TL2_BYTES);
    ck_assert_uint_eq(h.wal_bytes, FAKE_SWITCH - FAKE_START + FAKE_PAST + FAKE_TL2_BYTES);

    ck_assert_int_eq(fake_run(&h, FAKE_BAD_NEXT), 0);
    ck_assert_int_eq(h.close_err, WIRE_EPROTO);
    ck_assert_msg(strstr(h.close_msg, "says timeline 1 follows timeline 1") != NULL, "%s",
                  h.close_msg);
    ck_assert_uint_eq(h.switches, 0);

    ck_assert_int_eq(fake_run(&h, FAKE_BAD_START), 0);
    ck_assert_int_eq(h.close_err, WIRE_EPROTO);
    ck_assert_msg(strstr(h.close_msg, "to 0/2000164 but says timeline 2 begins at 0/20001C8") !=
                      NULL,
                  "%s", h.close_msg);
    ck_assert_uint_eq(h.switches, 0);

    ck_assert_int_eq(fake_run(&h, FAKE_BAD_NAME), 0);
    ck_assert_int_eq(h.close_err, WIRE_EPROTO);
    ck_assert_msg(
        strstr(h.close_msg, "file name '00000003.history', expected '00000002.history'") != NULL,
        "%s", h.close_msg);
    ck_assert_uint_eq(h.switches, 0);

    ck_assert_int_eq(fake_run(&h, FAKE_BAD_ENTRY), 0);
    ck_assert_int_eq(h.close_err, WIRE_EPROTO);
    ck_assert_msg(strstr(h.close_msg, "forking off at 0/2000000, but the primary ended timeline "
                                      "1 at 0/2000100") != NULL,
                  "%s", h.close_msg);
    ck_assert_uint_eq(h.switches, 0);

    h_new_session(&h);
    wio_loop_free(h.loop);
}
END_TEST

#define TL_CONF "max_wal_size = 1GB\ncheckpoint_timeout = 1h\nwal_keep_size = 1GB\nautovacuum = off"
/* About 7 MB of WAL in one transaction (pgbench's many commits are slow on a busy disk). */
#define TL_LOAD(table)                                                                             \
    "psql -X -v ON_ERROR_STOP=1 -c \"CREATE TABLE " table                                          \
    " AS SELECT g, md5(g::text) AS m FROM generate_series(1, 80000) g\""

/*
 * Timeline following against real promotions.  P (timeline 1) -> S -> S2, S2 cascading from S.
 * P stops cleanly, S is promoted: timeline 2 forks off at s1 (mid-segment: after P's shutdown
 * checkpoint).  Later S switches WAL, S2 replays it, S stops at once and S2 is promoted:
 * timeline 3 forks off at s2 (most often at a segment boundary: see below).
 */
START_TEST(test_timeline)
{
    struct h h;
    struct pgt_cluster S, S2;
    uint64_t s1, s2, start, l2, l3, end;
    uint32_t parent;
    char *hist2, *hist3, *hist2_s2, sql[256], lsn[PGP_LSN_BUFSZ];
    size_t hist2_len, hist3_len, hist2_s2_len;
    unsigned n1, n2, n3;
    double t0 = now_s();

    h_init(&h, "src-tl-p", TL_CONF);
    h.segdir = tu_tmpdir("src-tl-segs");
    make_standby(&h.pg, &S, "src-tl-s");
    make_standby(&S, &S2, "src-tl-s2");
    /* Timeline 1 WAL after both base backups: a few segments. */
    ck_assert_int_eq(pgt_sh(&h.pg, "pgbench -i -q -s 2 postgres"), 0);
    ck_assert_int_eq(pgt_stop(&h.pg, "fast"), 0); /* waits until S has all of it */
    promote(&S);
    hist2 = read_pg_file(&S, "pg_wal/00000002.history", &hist2_len);
    s1 = history_switch(hist2, &parent);
    ck_assert_uint_eq(parent, 1);
    ck_assert_uint_ne(s1 % SEG, 0);
    fprintf(stderr, "timeline: set up in %.1f s, timeline 2 from %" PRIX64 "\n", now_s() - t0, s1);

    /* Against S (timeline 2), from a segment of timeline 1 before the switch. */
    start = oldest_segment(&S, 1);
    ck_assert_uint_lt(start, s1 - s1 % SEG);
    h_connect_to(&h, &S, "wm_tl_a", &ops);
    ck_assert_msg(run_until_flag(&h, &h.identified, 60), "not identified: %s", h.close_msg);
    ck_assert_uint_eq(h.id.timeline, 2);
    ck_assert_uint_eq(h.id.history_len, hist2_len);
    ck_assert_str_eq(h.id.history, hist2);
    h.tli = 1;
    h.auto_report = true;
    ck_assert_int_eq(source_start(h.src, start, 1), 0);
    ck_assert_msg(run_until_switches(&h, 1, 60), "no switch to timeline 2: %s", h.close_msg);
    ck_assert(!h.closed);
    ck_assert(!h.gap);
    ck_assert_uint_eq(h.first_lsn, start);
    ck_assert_uint_eq(h.sw[0].tli, 2);
    ck_assert_uint_eq(h.sw[0].switch_lsn, s1);
    ck_assert_uint_eq(h.sw[0].end_before, s1); /* S streams timeline 1 exactly to s1 */
    ck_assert_uint_eq(h.sw[0].received, s1);
    ck_assert_uint_eq(h.sw[0].history_len, hist2_len);
    ck_assert_str_eq(h.sw[0].history, hist2);
    ck_assert_uint_eq(h.sw[0].first_after, s1 - s1 % SEG); /* backwards, once */
    /* Timeline 2 WAL on S: a completed segment. */
    l2 = load_and_switch(&S, TL_LOAD("load_s"));
    ck_assert_msg(run_until_lsn(&h, l2, 60), "timeline 2 WAL missing: %s", h.close_msg);
    ck_assert(!h.gap);
    ck_assert(!h.closed);
    ck_assert_uint_eq(source_received_lsn(h.src), h.next_lsn);
    n1 = cmp_wal(&h, &S, 1, start, s1);
    n2 = cmp_wal(&h, &S, 2, s1 - s1 % SEG, l2);
    cmp_timelines(&h, 1, 2, s1 - s1 % SEG, s1); /* the same WAL before the switch */
    ck_assert_uint_ge(n1, 2);
    ck_assert_uint_ge(n2, 1);
    fprintf(stderr, "timeline: against S, %u + %u segments byte-identical (%.1f s)\n", n1, n2,
            now_s() - t0);

    /* A start past timeline 1's switch point: PostgreSQL's error. */
    h_new_session(&h);
    h_connect_to(&h, &S, "wm_tl_err", &ops);
    ck_assert(run_until_flag(&h, &h.identified, 60));
    ck_assert_int_eq(source_start(h.src, s1 - s1 % SEG + SEG, 1), 0);
    ck_assert(run_until_flag(&h, &h.closed, 30));
    ck_assert_int_eq(h.close_err, WIRE_EPEER);
    ck_assert_msg(strstr(h.close_msg, "is not in this server's history") != NULL, "%s",
                  h.close_msg);
    ck_assert_uint_eq(h.wal_calls, 0);
    ck_assert_uint_eq(h.switches, 0);

    /* An owner without on_timeline: timeline 1 up to s1, then the end of the session. */
    h_new_session(&h);
    h_connect_to(&h, &S, "wm_tl_nf", &ops_nofollow);
    ck_assert(run_until_flag(&h, &h.identified, 60));
    h.tli = 1;
    ck_assert_int_eq(source_start(h.src, s1 - s1 % SEG, 1), 0);
    ck_assert(run_until_flag(&h, &h.closed, 30));
    ck_assert_int_eq(h.close_err, WIRE_ECLOSED);
    ck_assert_msg(strstr(h.close_msg, "does not follow timeline switches") != NULL, "%s",
                  h.close_msg);
    ck_assert_uint_eq(h.next_lsn, s1);
    ck_assert(!h.gap);
    h_new_session(&h);

    /*
     * Timeline 3.  S2 has followed S onto timeline 2.  S switches WAL, S2 replays the switch,
     * S stops at once (no shutdown checkpoint) and S2 is promoted: its timeline 3 then forks off
     * at the segment boundary l3, unless S logged something after the switch (its bgwriter
     * does every 15 s at most) and S2 got it first.
     */
    l3 = load_and_switch(&S, "psql -X -c 'CREATE TABLE tl3 AS SELECT 1 AS x'");
    lsn_str(l3, lsn);
    snprintf(sql, sizeof(sql), "SELECT pg_last_wal_replay_lsn() >= '%s'", lsn);
    ck_assert_msg(wait_query_on(&h, &S2, sql, "t", 60), "S2 did not replay up to %s", lsn);
    ck_assert_int_eq(pgt_stop(&S, "immediate"), 0);
    promote(&S2);
    hist3 = read_pg_file(&S2, "pg_wal/00000003.history", &hist3_len);
    hist2_s2 = read_pg_file(&S2, "pg_wal/00000002.history", &hist2_s2_len);
    ck_assert_str_eq(hist2_s2, hist2);
    s2 = history_switch(hist3, &parent);
    ck_assert_uint_eq(parent, 2);
    ck_assert_uint_ge(s2, l3);
    fprintf(stderr, "timeline: timeline 3 from %" PRIX64 " (%s a segment boundary) at %.1f s\n", s2,
            s2 % SEG == 0 ? "at" : "not at", now_s() - t0);

    /* Against S2 (timeline 3), from timeline 1: two switches in a row. */
    tu_rmtree(h.segdir);
    free(h.segdir);
    h.segdir = tu_tmpdir("src-tl-segs2");
    start = oldest_segment(&S2, 1);
    ck_assert_uint_lt(start, s1 - s1 % SEG);
    h_connect_to(&h, &S2, "wm_tl_b", &ops);
    ck_assert_msg(run_until_flag(&h, &h.identified, 60), "not identified: %s", h.close_msg);
    ck_assert_uint_eq(h.id.timeline, 3);
    ck_assert_uint_eq(h.id.history_len, hist3_len);
    ck_assert_str_eq(h.id.history, hist3);
    h.tli = 1;
    h.auto_report = true;
    ck_assert_int_eq(source_start(h.src, start, 1), 0);
    ck_assert_msg(run_until_switches(&h, 2, 60), "%u switches: %s", h.switches, h.close_msg);
    ck_assert(!h.gap);
    ck_assert_uint_eq(h.first_lsn, start);
    ck_assert_uint_eq(h.sw[0].tli, 2);
    ck_assert_uint_eq(h.sw[0].switch_lsn, s1);
    ck_assert_uint_eq(h.sw[0].end_before, s1);
    ck_assert_str_eq(h.sw[0].history, hist2);
    ck_assert_uint_eq(h.sw[0].first_after, s1 - s1 % SEG);
    ck_assert_uint_eq(h.sw[1].tli, 3);
    ck_assert_uint_eq(h.sw[1].switch_lsn, s2);
    ck_assert_uint_eq(h.sw[1].end_before, s2);
    ck_assert_uint_eq(h.sw[1].received, s2);
    ck_assert_uint_eq(h.sw[1].history_len, hist3_len);
    ck_assert_str_eq(h.sw[1].history, hist3);
    ck_assert_uint_eq(h.sw[1].first_after, s2 - s2 % SEG);
    l2 = load_and_switch(&S2, TL_LOAD("load_s2"));
    ck_assert_msg(run_until_lsn(&h, l2, 60), "timeline 3 WAL missing: %s", h.close_msg);
    ck_assert(!h.gap);
    n1 = cmp_wal(&h, &S2, 1, start, s1);
    n2 = cmp_wal(&h, &S2, 2, s1 - s1 % SEG, s2);
    n3 = cmp_wal(&h, &S2, 3, s2 - s2 % SEG, l2);
    fprintf(stderr, "timeline: against S2, %u + %u + %u segments byte-identical (%.1f s)\n", n1, n2,
            n3, now_s() - t0);

    /*
     * From timeline 2 at s2's segment: when s2 is a segment boundary the start is the switch
     * point itself, and the walsender answers with the next timeline at once, without COPY.
     */
    h_new_session(&h);
    h_connect_to(&h, &S2, "wm_tl_c", &ops);
    ck_assert(run_until_flag(&h, &h.identified, 60));
    h.tli = 2;
    h.auto_report = true;
    ck_assert_int_eq(source_start(h.src, s2, 2), 0);
    ck_assert_msg(run_until_switches(&h, 1, 60), "no switch to timeline 3: %s", h.close_msg);
    ck_assert_uint_eq(h.sw[0].tli, 3);
    ck_assert_uint_eq(h.sw[0].switch_lsn, s2);
    ck_assert_uint_eq(h.sw[0].end_before, s2 % SEG == 0 ? 0 : s2);
    ck_assert_uint_eq(h.sw[0].first_after, s2 - s2 % SEG);

    /* And a clean shutdown of S2 after following: err 0 at the end of its WAL. */
    ck_assert(
        run_until_lsn(&h, query_u64(&S2, "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn"), 30));
    stop_fast_while_streaming(&h, &S2);
    end = checkpoint_end(&S2);
    ck_assert_msg(h.close_err == 0, "err %d: %s", h.close_err, h.close_msg);
    ck_assert_uint_eq(h.closed_received, end);
    ck_assert(!h.gap);
    fprintf(stderr, "timeline: done in %.1f s\n", now_s() - t0);

    free(hist2);
    free(hist2_s2);
    free(hist3);
    h_done(&h);
    pgt_destroy(&S2);
    pgt_destroy(&S);
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
    tcase_add_test(tc_end, test_timeline);
    tcase_add_test(tc_end, test_timeline_fake);
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
