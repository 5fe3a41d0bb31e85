/*
 * test_walsrv.c - the WAL server against real PostgreSQL 15 clients, served from a real spool.
 *
 * main() makes the WAL once: a primary gets a physical slot 'walmirror' (reserving WAL at
 * once), a base backup is taken (pg_basebackup -X none), then a table is filled and pgbench
 * runs, and pg_switch_wal closes the last segment.  The segments from the slot's restart
 * segment to the switched one are copied and the primary is destroyed.
 *
 * Every test fills a fresh spool (spool_open, spool_set_identity from the WAL's long page
 * header, spool_append, spool_flush) and runs the WAL server on a free loopback port inside
 * the test process.  External programs run in a helper thread (run_bg) while the test's main
 * thread turns the io_uring loop, so the loop, the spool and the WAL server are only ever
 * touched by one thread.
 *
 *  - pg_receivewal --slot streams everything (READ_REPLICATION_SLOT gives the spool's start),
 *    stops at --endpos, and its segments are byte-identical to the originals;
 *  - a real standby made from the base backup streams, replays to the end of the spool, sees
 *    the primary's table, and its replay positions reach on_reply, growing, never beyond the
 *    spool's flush position;
 *  - raw protocol clients: encryption requests, start-up checks, errors that keep or end the
 *    session, START_REPLICATION beyond the flush position and below the spool's start,
 *    replyRequested, CopyDone, hot standby feedback;
 *  - walsrv_wal_durable: clients at the flush position receive WAL appended in stages, and a
 *    client that reads late still gets a complete contiguous stream (back-pressure);
 *  - timelines, on a real switch made once in main() (make_tl_wal: a primary, a standby
 *    promoted to timeline 2, a base backup from before the switch): the spool filled as the
 *    agent does (timeline 1 to the switch point, spool_set_timeline, timeline 2 from the switch
 *    segment's start); that base backup started as a standby of the WAL server reaches
 *    timeline 2 and shows the rows written after the promotion; a standby streaming timeline 1
 *    while the spool switches follows; pg_receivewal from timeline 1 crosses to timeline 2 with
 *    the history file and segments identical to the spool's; TIMELINE_HISTORY, START_REPLICATION
 *    at, below and beyond the switch point and on unknown timelines answered as PostgreSQL does,
 *    the session usable after each.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "cursor.h"
#include "log.h"
#include "pgproto.h"
#include "pgtest.h"
#include "spool.h"
#include "testutil.h"
#include "walsrv.h"

#define MIN_SEGMENTS 5
#define KEEP_ALL ((uint64_t)1 << 50)

/* ---------------------------------------------------------------------------------------- */
/* The WAL made in main()                                                                    */

static char *wal_dir;       /* the original segments */
static uint8_t *wal;        /* all of them, concatenated, from first_lsn */
static size_t nsegs;        /* number of segments */
static uint64_t first_lsn;  /* start of the first segment (the slot's restart segment) */
static uint64_t end_lsn;    /* end of the last one */
static uint64_t switch_lsn; /* pg_switch_wal(): end of the last record */
static uint64_t system_id;  /* from the long page header */
static uint32_t seg_size;   /* idem */
static uint32_t timeline;   /* idem */
static char *standby_dir;   /* holds data/: the base backup */
static char expected[128];  /* "count sum" of walsrv_t on the primary */

static uint64_t
le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t
le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void
seg_file_name(uint64_t lsn, char buf[32])
{
    uint64_t segno = lsn / seg_size, per_id = UINT64_C(0x100000000) / seg_size;

    snprintf(buf, 32, "%08X%08X%08X", timeline, (unsigned)(segno / per_id),
             (unsigned)(segno % per_id));
}

static uint64_t
query_u64(struct pgt_cluster *pg, const char *sql)
{
    char *s = pgt_query(pg, sql);
    uint64_t v;

    tu_require(s != NULL, "query failed: %s (see %s/cmd.log)", sql, pg->dir);
    v = strtoull(s, NULL, 10);
    free(s);
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* What a libpq replication client sees                                                      */

/* One replication command through libpq, as a client program would send it: the statuses of
 * the results in order, the error's SQLSTATE and message, and whether the session still
 * answers IDENTIFY_SYSTEM afterwards. */
struct repl_probe {
    int port;
    const char *command;
    ExecStatusType status[4];
    int n;
    char sqlstate[8];
    char message[256];
    bool usable_after;
};

static int
probe_run(void *arg)
{
    struct repl_probe *q = arg;
    char ci[256];
    PGconn *conn;
    PGresult *res;

    q->n = 0;
    q->sqlstate[0] = q->message[0] = '\0';
    snprintf(ci, sizeof(ci),
             "host=127.0.0.1 port=%d user=postgres dbname=replication replication=true "
             "application_name=probe connect_timeout=10",
             q->port);
    conn = PQconnectdb(ci);
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(q->message, sizeof(q->message), "%s", PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    for (res = PQexec(conn, q->command); res != NULL; res = PQgetResult(conn)) {
        ExecStatusType st = PQresultStatus(res);

        if (q->n < 4)
            q->status[q->n++] = st;
        if (st == PGRES_FATAL_ERROR) {
            const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            snprintf(q->sqlstate, sizeof(q->sqlstate), "%s", code != NULL ? code : "");
            snprintf(q->message, sizeof(q->message), "%s", msg != NULL ? msg : "");
        }
        PQclear(res);
        if (st == PGRES_COPY_BOTH) {
            char *buf;
            int r;

            while ((r = PQgetCopyData(conn, &buf, 0)) > 0)
                PQfreemem(buf);
        }
    }
    res = PQexec(conn, "IDENTIFY_SYSTEM");
    q->usable_after = PQresultStatus(res) == PGRES_TUPLES_OK;
    PQclear(res);
    PQfinish(conn);
    return 0;
}

/* Answers of the real PostgreSQL 15 walsender, recorded in make_wal(). */
static struct repl_probe pg_ahead = {.command = "START_REPLICATION PHYSICAL FF/0"};
static struct repl_probe pg_drop = {.command = "DROP_REPLICATION_SLOT probe_nosuch"};
static struct repl_probe pg_temp = {.command = "CREATE_REPLICATION_SLOT probe_tmp TEMPORARY "
                                               "PHYSICAL RESERVE_WAL"};

static void
make_wal(void)
{
    struct pgt_cluster pg;
    uint64_t restart, seg16 = 16u * 1024 * 1024;
    char *s, name[32];

    tu_require(pgt_init(&pg, "walsrv-primary",
                        "max_wal_size = 1GB\ncheckpoint_timeout = 1h\nsynchronous_commit = off") ==
               0);
    tu_require(pgt_start(&pg) == 0, "cannot start the primary (see %s)", pg.dir);
    s = pgt_query(&pg, "SELECT pg_create_physical_replication_slot('walmirror', true)");
    tu_require(s != NULL);
    free(s);
    restart = query_u64(&pg, "SELECT restart_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
                             "WHERE slot_name = 'walmirror'");
    tu_require(restart != 0);

    /* The standby's base backup, before most of the WAL. */
    standby_dir = tu_tmpdir("walsrv-standby");
    pgt_give_to_postgres(standby_dir);
    tu_require(pgt_sh(&pg, "pg_basebackup -D '%s/data' -X none --checkpoint=fast", standby_dir) ==
                   0,
               "pg_basebackup failed (see %s/cmd.log)", pg.dir);

    s = pgt_query(&pg, "CREATE TABLE walsrv_t (id int PRIMARY KEY, v bigint);"
                       "INSERT INTO walsrv_t SELECT g, g * 7 FROM generate_series(1, 40000) g");
    tu_require(s != NULL);
    free(s);
    tu_require(pgt_sh(&pg, "pgbench -i -q -s 2 postgres && pgbench -n -c 2 -j 2 -t 500 postgres") ==
               0);
    for (int round = 0; round < 20; round++) {
        uint64_t cur = query_u64(&pg, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn");
        if (cur >= restart - restart % seg16 + (MIN_SEGMENTS - 1) * seg16 + seg16 / 2)
            break;
        tu_require(pgt_sh(&pg, "pgbench -n -c 2 -j 2 -t 1000 postgres") == 0);
    }
    s = pgt_query(&pg, "INSERT INTO walsrv_t SELECT g, g * 3 FROM generate_series(40001, 50000) g;"
                       "UPDATE walsrv_t SET v = v + 1 WHERE id % 10 = 0;"
                       "DELETE FROM walsrv_t WHERE id % 97 = 0");
    tu_require(s != NULL);
    free(s);
    s = pgt_query(&pg, "SELECT count(*) || ' ' || sum(v) FROM walsrv_t");
    tu_require(s != NULL);
    snprintf(expected, sizeof(expected), "%s", s);
    free(s);
    /* What the real walsender answers, for the WAL server to be compared with. */
    pg_ahead.port = pg_drop.port = pg_temp.port = pg.port;
    tu_require(probe_run(&pg_ahead) == 0, "%s", pg_ahead.message);
    tu_require(probe_run(&pg_drop) == 0, "%s", pg_drop.message);
    tu_require(probe_run(&pg_temp) == 0, "%s", pg_temp.message);
    s = pgt_query(&pg, "SELECT pg_switch_wal()");
    tu_require(s != NULL && pgp_lsn_parse(s, strlen(s), &switch_lsn) == 0);
    free(s);
    tu_require(pgt_stop(&pg, "fast") == 0);

    /* The segments [restart's, switch's]: real, complete WAL. */
    {
        size_t len;
        uint8_t *first;
        char path[4096];

        wal_dir = tu_tmpdir("walsrv-wal");
        first_lsn = restart - restart % seg16;
        seg_size = (uint32_t)seg16;
        timeline = 1;
        seg_file_name(first_lsn, name);
        snprintf(path, sizeof(path), "%s/pg_wal/%s", pg.pgdata, name);
        first = tu_read_file(path, &len);
        tu_require(first != NULL && len >= 40, "cannot read %s", path);
        /* XLogLongPageHeaderData: tli @4, sysid @24, seg_size @32. */
        timeline = le32(first + 4);
        system_id = le64(first + 24);
        seg_size = le32(first + 32);
        free(first);
        tu_require(seg_size == seg16, "unexpected segment size %u", seg_size);
        end_lsn = (switch_lsn - 1) / seg_size * seg_size + seg_size;
        nsegs = (size_t)((end_lsn - first_lsn) / seg_size);
        wal = malloc(nsegs * seg_size);
        tu_require(wal != NULL);
        for (size_t i = 0; i < nsegs; i++) {
            uint8_t *data;

            seg_file_name(first_lsn + i * seg_size, name);
            snprintf(path, sizeof(path), "%s/pg_wal/%s", pg.pgdata, name);
            data = tu_read_file(path, &len);
            tu_require(data != NULL && len == seg_size, "cannot read %s", path);
            memcpy(wal + i * seg_size, data, seg_size);
            free(data);
            tu_require(tu_run("cp '%s' '%s/'", path, wal_dir) == 0);
        }
    }
    fprintf(stderr,
            "WAL: %zu segments from %" PRIX64 " to %" PRIX64 ", switch at %" PRIX64
            ", system %" PRIu64 ", walsrv_t: %s\n",
            nsegs, first_lsn, end_lsn, switch_lsn, system_id, expected);
    tu_require(nsegs >= MIN_SEGMENTS - 1, "only %zu segments", nsegs);
    pgt_destroy(&pg);
}

/* ---------------------------------------------------------------------------------------- */
/* Fixture: loop, spool, WAL server                                                          */

struct fixture {
    struct wio_loop *loop;
    struct spool *spool;
    struct walsrv *srv;
    char *spool_dir;
    uint64_t flushed; /* on_flushed */
    bool spool_failed;

    /* on_reply */
    unsigned replies;
    char last_app[64];
    uint64_t last_write, last_flush, last_apply, max_apply;
    unsigned apply_changes;
    unsigned apply_backwards;
    unsigned beyond_flush;
    /* on_feedback */
    unsigned feedbacks;
    uint32_t fb_xmin, fb_epoch, fb_cxmin, fb_cepoch;
};

static struct fixture fx;

static void
fx_on_written(void *ctx, uint64_t lsn)
{
    (void)ctx;
    (void)lsn;
}

static void
fx_on_flushed(void *ctx, uint64_t lsn)
{
    (void)ctx;
    fx.flushed = lsn;
    if (fx.srv != NULL)
        walsrv_wal_durable(fx.srv, lsn);
}

static void
fx_on_failed(void *ctx, int err, const char *what)
{
    (void)ctx;
    fprintf(stderr, "spool failed: %s: %s\n", what, wire_strerror(err));
    fx.spool_failed = true;
}

static const struct spool_ops fx_spool_ops = {
    .on_written = fx_on_written,
    .on_flushed = fx_on_flushed,
    .on_failed = fx_on_failed,
};

static void
fx_on_reply(void *ctx, const char *app, uint64_t write, uint64_t flush, uint64_t apply)
{
    uint64_t spool_flush = spool_flush_lsn(fx.spool);

    (void)ctx;
    fx.replies++;
    snprintf(fx.last_app, sizeof(fx.last_app), "%s", app);
    if (write > spool_flush || flush > spool_flush || apply > spool_flush)
        fx.beyond_flush++;
    if (apply < fx.last_apply)
        fx.apply_backwards++;
    if (apply != fx.last_apply)
        fx.apply_changes++;
    fx.last_write = write;
    fx.last_flush = flush;
    fx.last_apply = apply;
    if (apply > fx.max_apply)
        fx.max_apply = apply;
}

static void
fx_on_feedback(void *ctx, uint32_t xmin, uint32_t epoch, uint32_t cxmin, uint32_t cepoch)
{
    (void)ctx;
    fx.feedbacks++;
    fx.fb_xmin = xmin;
    fx.fb_epoch = epoch;
    fx.fb_cxmin = cxmin;
    fx.fb_cepoch = cepoch;
}

static const struct walsrv_ops fx_srv_ops = {
    .on_reply = fx_on_reply,
    .on_feedback = fx_on_feedback,
};

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
fx_turn(int timeout_ms)
{
    ck_assert_int_ge(wio_run_once(fx.loop, timeout_ms), 0);
}

/* Appends src[lsn - src_lsn, + len) to the spool and waits until it is durable. */
static void
fx_append_src(const uint8_t *src, uint64_t src_lsn, uint64_t lsn, size_t len)
{
    int64_t deadline = now_ms() + 120000, next_flush;

    ck_assert_int_eq(spool_append(fx.spool, lsn, src + (lsn - src_lsn), len), 0);
    ck_assert_int_eq(spool_flush(fx.spool), 0);
    next_flush = now_ms() + 1000;
    while (fx.flushed < lsn + len) {
        ck_assert_msg(!fx.spool_failed, "the spool failed");
        ck_assert_msg(now_ms() < deadline, "spool not flushed to %" PRIX64 " (at %" PRIX64 ")",
                      lsn + len, fx.flushed);
        fx_turn(50);
        if (now_ms() > next_flush && fx.flushed < lsn + len) {
            /* A flush requested while writes were in flight may cover only part of them. */
            ck_assert_int_eq(spool_flush(fx.spool), 0);
            next_flush = now_ms() + 1000;
        }
    }
    ck_assert_uint_eq(spool_flush_lsn(fx.spool), lsn + len);
}

/* Appends wal[lsn - first_lsn, + len) to the spool and waits until it is durable. */
static void
fx_append(uint64_t lsn, size_t len)
{
    fx_append_src(wal, first_lsn, lsn, len);
}

/* A fresh spool (keeping keep_bytes behind its flush position) holding the first `segments`
 * segments, and the WAL server on a free port. */
static void
fx_setup_keep(size_t segments, uint64_t keep_bytes)
{
    struct spool_identity id = {.system_id = system_id, .seg_size = seg_size, .timeline = timeline};
    char err[256];

    memset(&fx, 0, sizeof(fx));
    ck_assert_int_eq(wio_loop_new(&fx.loop, 256), 0);
    fx.spool_dir = tu_tmpdir("walsrv-spool");
    ck_assert_msg(spool_open(&fx.spool, fx.loop, fx.spool_dir, keep_bytes, &fx_spool_ops, NULL, err,
                             sizeof(err)) == 0,
                  "spool_open: %s", err);
    ck_assert_int_eq(spool_set_identity(fx.spool, &id), 0);
    for (size_t i = 0; i < segments; i++)
        fx_append(first_lsn + i * seg_size, seg_size);
    ck_assert_uint_eq(spool_start_lsn(fx.spool), first_lsn);
    ck_assert_msg(walsrv_new(&fx.srv, fx.loop, "127.0.0.1:0", fx.spool, &fx_srv_ops, NULL, err,
                             sizeof(err)) == 0,
                  "walsrv_new: %s", err);
    ck_assert_int_gt(walsrv_port(fx.srv), 0);
}

static void
fx_setup(size_t segments)
{
    fx_setup_keep(segments, KEEP_ALL);
}

static void
fx_teardown(void)
{
    walsrv_free(fx.srv);
    fx.srv = NULL;
    /* Let the server's cancellations complete before the loop goes. */
    for (int i = 0; i < 5; i++)
        if (wio_run_once(fx.loop, 10) < 0)
            break;
    spool_close(fx.spool);
    wio_loop_free(fx.loop);
    tu_rmtree(fx.spool_dir);
    free(fx.spool_dir);
    memset(&fx, 0, sizeof(fx));
}

/* ---------------------------------------------------------------------------------------- */
/* Blocking work in a helper thread while this thread turns the loop                         */

struct bg {
    int (*fn)(void *arg);
    void *arg;
    int rc;
    atomic_bool done;
};

static void *
bg_main(void *p)
{
    struct bg *b = p;

    b->rc = b->fn(b->arg);
    atomic_store(&b->done, true);
    return NULL;
}

/* Runs fn(arg) in a thread, turning the loop until it returns; returns its result. */
static int
run_bg(int (*fn)(void *arg), void *arg)
{
    struct bg b = {.fn = fn, .arg = arg, .rc = -1};
    pthread_t th;

    atomic_init(&b.done, false);
    ck_assert_int_eq(pthread_create(&th, NULL, bg_main, &b), 0);
    while (!atomic_load(&b.done))
        fx_turn(20);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    return b.rc;
}

struct sh_call {
    struct pgt_cluster *pg;
    const char *cmd;
};

static int
bg_sh(void *p)
{
    struct sh_call *c = p;
    return pgt_sh(c->pg, "%s", c->cmd);
}

struct query_call {
    struct pgt_cluster *pg;
    const char *sql;
    char *result;
};

static int
bg_query(void *p)
{
    struct query_call *q = p;

    q->result = pgt_query(q->pg, q->sql);
    return q->result != NULL ? 0 : -1;
}

static char *
query_bg(struct pgt_cluster *pg, const char *sql)
{
    struct query_call q = {.pg = pg, .sql = sql};

    (void)run_bg(bg_query, &q);
    return q.result;
}

static int
bg_start(void *p)
{
    return pgt_start(p);
}

static int
bg_stop(void *p)
{
    return pgt_stop(p, "fast");
}

/* The contents of dir/file (malloc'd), or a placeholder: for failure messages. */
static char *
slurp(const char *dir, const char *file)
{
    char path[4096];
    size_t len;
    char *s;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    s = tu_read_file(path, &len);
    return s != NULL ? s : strdup("(unreadable)");
}

/* ---------------------------------------------------------------------------------------- */
/* 1. pg_receivewal                                                                          */

START_TEST(test_pg_receivewal)
{
    struct pgt_cluster tools = {0};
    char *out, *cmd, end[PGP_LSN_BUFSZ], name[32];
    struct sh_call call;
    DIR *d;
    struct dirent *e;
    size_t files = 0;
    int rc;

    fx_setup(nsegs);
    tools.dir = tu_tmpdir("walsrv-tools");
    pgt_give_to_postgres(tools.dir);
    tools.pgdata = tools.dir;
    tools.port = walsrv_port(fx.srv);
    out = tu_tmpdir("walsrv-recv");
    pgt_give_to_postgres(out);
    /* pg_receivewal stops once it holds WAL *beyond* --endpos (stop_streaming: endpos <
     * xlogpos), so the flush position itself would wait for more: ask for its last byte. */
    pgp_lsn_format(end_lsn - 1, end);
    ck_assert(asprintf(&cmd,
                       "timeout 240 pg_receivewal -h 127.0.0.1 -p %d -D '%s' --slot=walmirror "
                       "--no-loop --endpos=%s --verbose",
                       walsrv_port(fx.srv), out, end) > 0);
    call.pg = &tools;
    call.cmd = cmd;
    rc = run_bg(bg_sh, &call);
    ck_assert_msg(rc == 0, "pg_receivewal exited %d: %s", rc, slurp(tools.dir, "cmd.log"));
    {
        char *text = slurp(tools.dir, "cmd.log"), stopped[64];

        pgp_lsn_format(end_lsn, end);
        snprintf(stopped, sizeof(stopped), "stopped log streaming at %s", end);
        ck_assert_msg(strstr(text, stopped) != NULL, "pg_receivewal did not stop at %s: %s", end,
                      text);
        free(text);
    }

    /* Every segment, complete and byte-identical; nothing else (no .partial). */
    d = opendir(out);
    ck_assert(d != NULL);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        ck_assert_msg(strlen(e->d_name) == 24, "unexpected file %s", e->d_name);
        ck_assert_int_eq(tu_run("cmp -s '%s/%s' '%s/%s'", wal_dir, e->d_name, out, e->d_name), 0);
        files++;
    }
    closedir(d);
    ck_assert_uint_eq(files, nsegs);
    seg_file_name(first_lsn, name);
    ck_assert_int_eq(tu_run("cmp -s '%s/%s' '%s/%s'", wal_dir, name, out, name), 0);
    /* pg_receivewal with a slot reports its positions. */
    ck_assert_uint_gt(fx.replies, 0);
    ck_assert_str_eq(fx.last_app, "pg_receivewal");
    ck_assert_uint_eq(fx.beyond_flush, 0);
    /* It ended with CopyDone: the server is back to no streaming client. */
    for (int i = 0; i < 100 && walsrv_streaming_clients(fx.srv) != 0; i++)
        fx_turn(20);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 0);
    free(cmd);
    tu_rmtree(out);
    free(out);
    tu_rmtree(tools.dir);
    free(tools.dir);
    fx_teardown();
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* 2. A real standby                                                                         */

START_TEST(test_standby_replays)
{
    struct pgt_cluster sb = {0};
    struct sh_call call;
    char *cmd, *res;
    uint64_t replay = 0;
    int64_t deadline;
    int rc;

    fx_setup(nsegs);
    sb.dir = strdup(standby_dir);
    ck_assert(asprintf(&sb.pgdata, "%s/data", sb.dir) > 0);
    sb.port = tu_free_port();
    ck_assert(
        asprintf(&cmd,
                 "touch \"$PGDATA/standby.signal\" && cat >> \"$PGDATA/postgresql.auto.conf\" "
                 "<<'EOF'\n"
                 "port = %d\n"
                 "unix_socket_directories = '%s'\n"
                 "primary_conninfo = 'host=127.0.0.1 port=%d user=postgres "
                 "application_name=walmirror-test gssencmode=disable'\n"
                 "primary_slot_name = 'walmirror'\n"
                 "hot_standby = on\n"
                 "hot_standby_feedback = on\n"
                 "wal_receiver_status_interval = 1s\n"
                 "wal_retrieve_retry_interval = 1s\n"
                 "EOF",
                 sb.port, sb.dir, walsrv_port(fx.srv)) > 0);
    call.pg = &sb;
    call.cmd = cmd;
    ck_assert_int_eq(run_bg(bg_sh, &call), 0);
    free(cmd);

    /* pg_ctl -w returns once the standby is consistent: it needs our WAL for that. */
    rc = run_bg(bg_start, &sb);
    ck_assert_msg(rc == 0, "standby did not start: %s", slurp(sb.dir, "server.log"));
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 1);

    deadline = now_ms() + 180000;
    while (replay < switch_lsn && now_ms() < deadline) {
        res = query_bg(&sb, "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn");
        ck_assert(res != NULL);
        replay = strtoull(res, NULL, 10);
        free(res);
        if (replay < switch_lsn)
            for (int i = 0; i < 25; i++)
                fx_turn(20);
    }
    ck_assert_msg(replay >= switch_lsn, "standby replayed to %" PRIX64 " only (need %" PRIX64 ")",
                  replay, switch_lsn);
    ck_assert_uint_le(replay, end_lsn);

    res = query_bg(&sb, "SELECT count(*) || ' ' || sum(v) FROM walsrv_t");
    ck_assert(res != NULL);
    ck_assert_str_eq(res, expected);
    free(res);
    res = query_bg(&sb, "SELECT pg_is_in_recovery()");
    ck_assert(res != NULL);
    ck_assert_str_eq(res, "t");
    free(res);

    /* Its replay position reaches on_reply (wal_receiver_status_interval = 1s), and hot
     * standby feedback arrives once hot standby is active. */
    deadline = now_ms() + 60000;
    while ((fx.max_apply < switch_lsn || fx.feedbacks == 0) && now_ms() < deadline)
        fx_turn(50);
    ck_assert_msg(fx.max_apply >= switch_lsn, "on_reply apply %" PRIX64 " < %" PRIX64, fx.max_apply,
                  switch_lsn);
    ck_assert_str_eq(fx.last_app, "walmirror-test");
    ck_assert_uint_ge(fx.apply_changes, 2);
    ck_assert_uint_eq(fx.apply_backwards, 0);
    ck_assert_uint_eq(fx.beyond_flush, 0);
    ck_assert_uint_le(fx.last_flush, end_lsn);
    ck_assert_uint_ge(fx.last_flush, switch_lsn);
    ck_assert_uint_gt(fx.feedbacks, 0); /* hot_standby_feedback = on */

    ck_assert_int_eq(run_bg(bg_stop, &sb), 0);
    for (int i = 0; i < 100 && walsrv_streaming_clients(fx.srv) != 0; i++)
        fx_turn(20);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 0);
    pgt_destroy(&sb);
    fx_teardown();
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* Raw protocol client                                                                       */

struct raw {
    int fd;
    uint8_t *buf; /* received, not yet taken */
    size_t len, cap;
    bool eof;
    /* the last message taken */
    char type;
    uint8_t *body;
    size_t body_len;
};

static void
raw_connect(struct raw *r)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)walsrv_port(fx.srv)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;

    memset(r, 0, sizeof(*r));
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(r->fd, 0);
    ck_assert_int_eq(connect(r->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
    r->cap = 1 << 20;
    r->buf = malloc(r->cap);
    ck_assert(r->buf != NULL);
}

static void
raw_close(struct raw *r)
{
    if (r->fd >= 0)
        close(r->fd);
    free(r->buf);
    free(r->body);
    memset(r, 0, sizeof(*r));
    r->fd = -1;
}

static void
raw_send(struct raw *r, const void *p, size_t n)
{
    const uint8_t *b = p;

    while (n > 0) {
        ssize_t w = send(r->fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            fx_turn(10);
            continue;
        }
        ck_assert_msg(w > 0, "send: %s", strerror(errno));
        b += w;
        n -= (size_t)w;
    }
}

/* Receives more bytes, turning the loop meanwhile.  Returns false on timeout or EOF. */
static bool
raw_fill(struct raw *r, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;

    for (;;) {
        ssize_t n;

        if (r->cap - r->len < 65536) {
            r->cap *= 2;
            r->buf = realloc(r->buf, r->cap);
            ck_assert(r->buf != NULL);
        }
        n = recv(r->fd, r->buf + r->len, r->cap - r->len, MSG_DONTWAIT);
        if (n > 0) {
            r->len += (size_t)n;
            return true;
        }
        if (n == 0) {
            r->eof = true;
            return false;
        }
        if (errno == ECONNRESET) {
            r->eof = true;
            return false;
        }
        ck_assert_msg(errno == EAGAIN || errno == EINTR, "recv: %s", strerror(errno));
        if (now_ms() >= deadline)
            return false;
        fx_turn(10);
    }
}

/* Takes one byte (the answer to SSLRequest / GSSENCRequest). */
static int
raw_byte(struct raw *r, int timeout_ms)
{
    int b;

    while (r->len < 1)
        if (!raw_fill(r, timeout_ms))
            return -1;
    b = r->buf[0];
    memmove(r->buf, r->buf + 1, --r->len);
    return b;
}

/* Takes one backend message into r->type / r->body.  Returns false on timeout or EOF. */
static bool
raw_msg(struct raw *r, int timeout_ms)
{
    for (;;) {
        if (r->len >= 5) {
            struct cursor c = cur_init(r->buf + 1, 4);
            uint32_t mlen;

            ck_assert(cur_get_u32be(&c, &mlen));
            ck_assert_uint_ge(mlen, 4);
            if (r->len >= 1 + (size_t)mlen) {
                r->type = (char)r->buf[0];
                free(r->body);
                r->body_len = mlen - 4;
                r->body = malloc(r->body_len + 1);
                ck_assert(r->body != NULL);
                memcpy(r->body, r->buf + 5, r->body_len);
                r->body[r->body_len] = '\0';
                memmove(r->buf, r->buf + 1 + mlen, r->len - 1 - mlen);
                r->len -= 1 + mlen;
                return true;
            }
        }
        if (!raw_fill(r, timeout_ms))
            return false;
    }
}

static void
raw_expect(struct raw *r, char type)
{
    ck_assert_msg(raw_msg(r, 10000), "no message '%c' (eof %d)", type, r->eof);
    ck_assert_msg(r->type == type, "got '%c' instead of '%c': %s", r->type, type,
                  r->type == 'E' ? (char *)r->body + 1 : "");
}

/* The value of field code in the ErrorResponse just taken. */
static const char *
raw_err_field(struct raw *r, char code)
{
    size_t i = 0;

    while (i < r->body_len && r->body[i] != 0) {
        const char *v = (const char *)r->body + i + 1;
        if (r->body[i] == (uint8_t)code)
            return v;
        i += 2 + strlen(v);
    }
    return "";
}

/* Expects an ErrorResponse with this severity whose message contains needle. */
static void
raw_expect_error(struct raw *r, const char *severity, const char *sqlstate, const char *needle)
{
    raw_expect(r, 'E');
    ck_assert_str_eq(raw_err_field(r, 'V'), severity);
    if (sqlstate != NULL)
        ck_assert_str_eq(raw_err_field(r, 'C'), sqlstate);
    ck_assert_msg(strstr(raw_err_field(r, 'M'), needle) != NULL, "message \"%s\" lacks \"%s\"",
                  raw_err_field(r, 'M'), needle);
}

/* Expects the server to close the connection with nothing more sent. */
static void
raw_expect_eof(struct raw *r)
{
    int64_t deadline = now_ms() + 10000;

    while (!r->eof && now_ms() < deadline)
        (void)raw_fill(r, 100);
    ck_assert_msg(r->eof, "the server did not close the connection");
    ck_assert_uint_eq(r->len, 0);
}

static void
raw_initial(struct raw *r, uint32_t code)
{
    uint8_t p[8] = {0,
                    0,
                    0,
                    8,
                    (uint8_t)(code >> 24),
                    (uint8_t)(code >> 16),
                    (uint8_t)(code >> 8),
                    (uint8_t)code};
    raw_send(r, p, sizeof(p));
}

/* StartupMessage 3.0 with the given key\0value\0 pairs (NULL-terminated list). */
static void
raw_startup(struct raw *r, const char *const *kv)
{
    uint8_t p[1024];
    size_t n = 8;

    for (; *kv != NULL; kv++) {
        size_t l = strlen(*kv) + 1;
        ck_assert_uint_lt(n + l, sizeof(p) - 1);
        memcpy(p + n, *kv, l);
        n += l;
    }
    p[n++] = 0;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    p[4] = 0;
    p[5] = 3;
    p[6] = 0;
    p[7] = 0;
    raw_send(r, p, n);
}

/* Start-up as a physical replication client; consumes everything up to ReadyForQuery and
 * checks the essential ParameterStatus values. */
static void
raw_login(struct raw *r, const char *app)
{
    const char *kv[] = {"user", "postgres",         "database", "replication",     "replication",
                        "true", "application_name", app,        "client_encoding", "UTF8",
                        NULL};
    bool version = false, datetimes = false, app_seen = false, key = false;

    raw_startup(r, kv);
    raw_expect(r, 'R');
    ck_assert_uint_eq(r->body_len, 4);
    ck_assert_mem_eq(r->body, "\0\0\0\0", 4);
    for (;;) {
        ck_assert(raw_msg(r, 10000));
        if (r->type == 'Z')
            break;
        if (r->type == 'K') {
            ck_assert_uint_eq(r->body_len, 8);
            key = true;
            continue;
        }
        ck_assert_msg(r->type == 'S', "unexpected '%c' during start-up", r->type);
        {
            const char *name = (const char *)r->body;
            const char *value = name + strlen(name) + 1;

            if (strcmp(name, "server_version") == 0) {
                ck_assert_msg(strncmp(value, "15.", 3) == 0, "server_version %s", value);
                version = true;
            } else if (strcmp(name, "integer_datetimes") == 0) {
                ck_assert_str_eq(value, "on");
                datetimes = true;
            } else if (strcmp(name, "application_name") == 0) {
                ck_assert_str_eq(value, app);
                app_seen = true;
            } else if (strcmp(name, "server_encoding") == 0) {
                ck_assert_str_eq(value, "UTF8");
            } else if (strcmp(name, "session_authorization") == 0) {
                ck_assert_str_eq(value, "postgres");
            }
        }
    }
    ck_assert_uint_eq(r->body_len, 1);
    ck_assert_int_eq(r->body[0], 'I');
    ck_assert(version && datetimes && app_seen && key);
}

static void
raw_query(struct raw *r, const char *q)
{
    size_t l = strlen(q) + 1;
    uint8_t *p = malloc(5 + l);

    ck_assert(p != NULL);
    p[0] = 'Q';
    p[1] = (uint8_t)((l + 4) >> 24);
    p[2] = (uint8_t)((l + 4) >> 16);
    p[3] = (uint8_t)((l + 4) >> 8);
    p[4] = (uint8_t)(l + 4);
    memcpy(p + 5, q, l);
    raw_send(r, p, 5 + l);
    free(p);
}

/* Column i of the DataRow just taken, as a string ("(null)" for NULL). */
static const char *
raw_col(struct raw *r, unsigned col, char *buf, size_t buflen)
{
    struct cursor c = cur_init(r->body, r->body_len);
    uint16_t n;

    ck_assert(cur_get_u16be(&c, &n));
    ck_assert_uint_lt(col, n);
    for (unsigned i = 0;; i++) {
        uint32_t len;
        const uint8_t *p;

        ck_assert(cur_get_u32be(&c, &len));
        if (len == UINT32_MAX) {
            if (i == col) {
                snprintf(buf, buflen, "(null)");
                return buf;
            }
            continue;
        }
        ck_assert(cur_get_bytes(&c, len, &p));
        if (i == col) {
            snprintf(buf, buflen, "%.*s", (int)len, (const char *)p);
            return buf;
        }
    }
}

/* Runs a command whose answer is one row; returns column col of it. */
static const char *
raw_one_row(struct raw *r, const char *q, unsigned col, char *buf, size_t buflen)
{
    raw_query(r, q);
    raw_expect(r, 'T');
    raw_expect(r, 'D');
    raw_col(r, col, buf, buflen);
    raw_expect(r, 'C');
    raw_expect(r, 'Z');
    return buf;
}

static void
raw_standby_status(struct raw *r, uint64_t write, uint64_t flush, uint64_t apply, bool reply)
{
    struct pgp_buf b = {0};
    struct pgp_standby_status st = {
        .write = write, .flush = flush, .apply = apply, .send_time = 0, .reply_requested = reply};

    ck_assert_int_gt(pgp_put_standby_status(&b, &st), 0);
    raw_send(r, b.data, b.len);
    pgp_buf_free(&b);
}

/* Takes CopyData messages until one is a keepalive; returns its replyRequested flag. */
static bool
raw_expect_keepalive(struct raw *r, int timeout_ms, uint64_t *wal_end)
{
    struct pgp_primary_msg m;
    struct pgp_err e;

    for (;;) {
        ck_assert_msg(raw_msg(r, timeout_ms), "no keepalive within %d ms", timeout_ms);
        ck_assert_int_eq(r->type, 'd');
        ck_assert_int_eq(pgp_parse_primary_copydata(r->body, r->body_len, &m, &e), 0);
        if (m.kind == 'k') {
            *wal_end = m.wal_end;
            return m.reply_requested;
        }
    }
}

/* Streams XLogData from *pos up to target, checking contiguity, chunking and content. */
static void
raw_stream_to(struct raw *r, uint64_t *pos, uint64_t target, int timeout_ms)
{
    while (*pos < target) {
        struct pgp_primary_msg m;
        struct pgp_err e;
        uint64_t end;

        ck_assert_msg(raw_msg(r, timeout_ms), "stream stalled at %" PRIX64 " (want %" PRIX64 ")",
                      *pos, target);
        ck_assert_int_eq(r->type, 'd');
        ck_assert_int_eq(pgp_parse_primary_copydata(r->body, r->body_len, &m, &e), 0);
        if (m.kind == 'k')
            continue;
        ck_assert_int_eq(m.kind, 'w');
        ck_assert_uint_eq(m.data_start, *pos);
        ck_assert_uint_gt(m.data_len, 0);
        ck_assert_uint_le(m.data_len, 128 * 1024);
        end = m.data_start + m.data_len;
        ck_assert_uint_le(end, m.wal_end);
        /* Cut at a page boundary unless it ends at the flush position it announces. */
        ck_assert_msg(end == m.wal_end || end % 8192 == 0,
                      "chunk ends at %" PRIX64 ", neither a page boundary nor walEnd %" PRIX64, end,
                      m.wal_end);
        ck_assert_uint_le(end, end_lsn);
        ck_assert_msg(memcmp(m.data, wal + (m.data_start - first_lsn), m.data_len) == 0,
                      "WAL at %" PRIX64 " differs", m.data_start);
        *pos = end;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* 3. Protocol robustness                                                                    */

static void
setup_two_segments(void)
{
    fx_setup(2);
}

START_TEST(test_protocol_session)
{
    struct raw r;
    char buf[128], want[64];
    uint64_t flush = first_lsn + 2ull * seg_size;

    raw_connect(&r);
    raw_initial(&r, PGP_GSSENC_REQUEST);
    ck_assert_int_eq(raw_byte(&r, 5000), 'N');
    raw_initial(&r, PGP_SSL_REQUEST);
    ck_assert_int_eq(raw_byte(&r, 5000), 'N');
    raw_login(&r, "rawtest");

    /* Garbage: ERROR, and the session goes on. */
    raw_query(&r, "GARBAGE IN");
    raw_expect_error(&r, "ERROR", "0A000", "GARBAGE");
    raw_expect(&r, 'Z');
    raw_query(&r, "START_REPLICATION 12345");
    raw_expect_error(&r, "ERROR", "42601", "START_REPLICATION");
    raw_expect(&r, 'Z');

    snprintf(want, sizeof(want), "%" PRIu64, system_id);
    ck_assert_str_eq(raw_one_row(&r, "IDENTIFY_SYSTEM", 0, buf, sizeof(buf)), want);
    ck_assert_str_eq(raw_one_row(&r, "IDENTIFY_SYSTEM", 1, buf, sizeof(buf)), "1");
    pgp_lsn_format(flush, want);
    ck_assert_str_eq(raw_one_row(&r, "IDENTIFY_SYSTEM", 2, buf, sizeof(buf)), want);
    ck_assert_str_eq(raw_one_row(&r, "IDENTIFY_SYSTEM", 3, buf, sizeof(buf)), "(null)");
    ck_assert_str_eq(raw_one_row(&r, "SHOW wal_segment_size", 0, buf, sizeof(buf)), "16MB");
    ck_assert_str_eq(raw_one_row(&r, "SHOW data_directory_mode", 0, buf, sizeof(buf)), "0700");
    raw_query(&r, "BASE_BACKUP");
    raw_expect_error(&r, "ERROR", "0A000", "BASE_BACKUP");
    raw_expect(&r, 'Z');
    raw_query(&r, "SELECT 1");
    raw_expect_error(&r, "ERROR", "0A000", "SELECT");
    raw_expect(&r, 'Z');
    raw_query(&r, "");
    raw_expect_error(&r, "ERROR", "0A000", "empty");
    raw_expect(&r, 'Z');
    raw_query(&r, "SHOW shared_buffers");
    raw_expect_error(&r, "ERROR", "42704", "unrecognized configuration parameter");
    raw_expect(&r, 'Z');
    raw_query(&r, "TIMELINE_HISTORY 2");
    raw_expect_error(&r, "ERROR", NULL, "00000002.history");
    raw_expect(&r, 'Z');
    /* slots: none kept; a temporary one lives with the session */
    raw_query(&r, "CREATE_REPLICATION_SLOT \"s1\" PHYSICAL RESERVE_WAL");
    raw_expect_error(&r, "ERROR", "0A000", "keeps no replication slots");
    raw_expect(&r, 'Z');
    ck_assert_str_eq(raw_one_row(&r,
                                 "CREATE_REPLICATION_SLOT \"s1\" TEMPORARY PHYSICAL RESERVE_WAL", 1,
                                 buf, sizeof(buf)),
                     "0/0");
    raw_query(&r, "CREATE_REPLICATION_SLOT \"s1\" TEMPORARY PHYSICAL");
    raw_expect_error(&r, "ERROR", "42710", "replication slot \"s1\" already exists");
    raw_expect(&r, 'Z');
    pgp_lsn_format(first_lsn, want);
    ck_assert_str_eq(raw_one_row(&r, "READ_REPLICATION_SLOT s1", 1, buf, sizeof(buf)), want);
    raw_query(&r, "DROP_REPLICATION_SLOT s1");
    raw_expect(&r, 'C');
    raw_expect(&r, 'Z');
    raw_query(&r, "DROP_REPLICATION_SLOT s1");
    raw_expect_error(&r, "ERROR", "42704", "replication slot \"s1\" does not exist");
    raw_expect(&r, 'Z');
    raw_query(&r, "CREATE_REPLICATION_SLOT \"Bad-Name\" PHYSICAL");
    raw_expect_error(&r, "ERROR", "42602", "");
    raw_expect(&r, 'Z');
    raw_query(&r, "START_REPLICATION SLOT walmirror 0/0 TIMELINE 7");
    raw_expect_error(&r, "ERROR", NULL, "timeline 7");
    raw_expect(&r, 'Z');

    /* Beyond the flush position: CopyBothResponse, then the error, and the session goes on. */
    pgp_lsn_format(flush + 8192, want);
    snprintf(buf, sizeof(buf), "START_REPLICATION %s TIMELINE 1", want);
    raw_query(&r, buf);
    raw_expect(&r, 'W');
    raw_expect_error(&r, "ERROR", "XX000", "is ahead of the WAL flush position of this server");
    raw_expect(&r, 'Z');
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 0);
    snprintf(want, sizeof(want), "%" PRIu64, system_id);
    ck_assert_str_eq(raw_one_row(&r, "IDENTIFY_SYSTEM", 0, buf, sizeof(buf)), want);

    /* CopyData / CopyDone outside COPY are ignored, as PostgreSQL does. */
    raw_send(&r, "c\0\0\0\4", 5);
    ck_assert_str_eq(raw_one_row(&r, "IDENTIFY_SYSTEM;", 0, buf, sizeof(buf)), want);

    /* The extended query protocol: FATAL, and the connection ends. */
    raw_send(&r, "P\0\0\0\x08\0\0\0\0", 9);
    raw_expect_error(&r, "FATAL", "08P01", "extended query protocol");
    raw_expect_eof(&r);
    raw_close(&r);
}
END_TEST

/*
 * Through libpq, the WAL server answers as the real walsender did in make_wal(): a start
 * beyond the flush position is a COPY BOTH result then the error (as StartReplication sends
 * CopyBothResponse before it checks), with the same SQLSTATE and message, and the session
 * goes on; dropping a slot that does not exist and creating a temporary one alike.  A
 * persistent slot is refused (feature_not_supported): walmirror keeps none.
 */
START_TEST(test_protocol_as_postgresql)
{
    struct repl_probe ahead = {.port = walsrv_port(fx.srv)}, drop = ahead, temp = ahead,
                      persistent = ahead;
    char lsn[PGP_LSN_BUFSZ], q[128];
    const char *tail = " is ahead of the WAL flush position of this server ";

    pgp_lsn_format(first_lsn + 2ull * seg_size + 8192, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION PHYSICAL %s", lsn);
    ahead.command = q;
    ck_assert_int_eq(run_bg(probe_run, &ahead), 0);
    fprintf(stderr, "PostgreSQL: %d results, %s %s; walsrv: %d results, %s %s\n", pg_ahead.n,
            pg_ahead.sqlstate, pg_ahead.message, ahead.n, ahead.sqlstate, ahead.message);
    ck_assert_int_eq(pg_ahead.n, 2);
    ck_assert_int_eq(pg_ahead.status[0], PGRES_COPY_BOTH);
    ck_assert_int_eq(pg_ahead.status[1], PGRES_FATAL_ERROR);
    ck_assert_int_eq(ahead.n, pg_ahead.n);
    ck_assert_int_eq(ahead.status[0], pg_ahead.status[0]);
    ck_assert_int_eq(ahead.status[1], pg_ahead.status[1]);
    ck_assert_str_eq(ahead.sqlstate, pg_ahead.sqlstate);
    ck_assert_ptr_nonnull(strstr(pg_ahead.message, tail));
    ck_assert_ptr_nonnull(strstr(ahead.message, tail));
    ck_assert_msg(strncmp(ahead.message, "requested starting point ", 25) == 0 &&
                      strncmp(ahead.message + 25, lsn, strlen(lsn)) == 0,
                  "%s", ahead.message);
    ck_assert(pg_ahead.usable_after && ahead.usable_after);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 0);

    drop.command = pg_drop.command;
    ck_assert_int_eq(run_bg(probe_run, &drop), 0);
    ck_assert_int_eq(pg_drop.n, 1);
    ck_assert_int_eq(drop.n, 1);
    ck_assert_int_eq(drop.status[0], pg_drop.status[0]);
    ck_assert_str_eq(drop.sqlstate, pg_drop.sqlstate);
    ck_assert_str_eq(drop.message, pg_drop.message);

    temp.command = pg_temp.command;
    ck_assert_int_eq(run_bg(probe_run, &temp), 0);
    ck_assert_int_eq(pg_temp.status[0], PGRES_TUPLES_OK);
    ck_assert_int_eq(temp.n, pg_temp.n);
    ck_assert_int_eq(temp.status[0], PGRES_TUPLES_OK);

    persistent.command = "CREATE_REPLICATION_SLOT x PHYSICAL";
    ck_assert_int_eq(run_bg(probe_run, &persistent), 0);
    ck_assert_int_eq(persistent.n, 1);
    ck_assert_int_eq(persistent.status[0], PGRES_FATAL_ERROR);
    ck_assert_str_eq(persistent.sqlstate, "0A000");
    ck_assert_str_eq(persistent.message, "cannot create replication slot \"x\": walmirror's WAL "
                                         "server keeps no replication slots");
    ck_assert(persistent.usable_after);
}
END_TEST

START_TEST(test_protocol_start_below_spool)
{
    struct raw r;
    char lsn[PGP_LSN_BUFSZ], q[128], seg[32];

    raw_connect(&r);
    raw_login(&r, "below");
    pgp_lsn_format(first_lsn - 8192, lsn);
    seg_file_name(first_lsn - 8192, seg);
    snprintf(q, sizeof(q), "START_REPLICATION SLOT \"walmirror\" %s TIMELINE 1", lsn);
    raw_query(&r, q);
    raw_expect_error(&r, "FATAL", "58P01", "has already been removed");
    ck_assert(strstr(raw_err_field(&r, 'M'), seg) != NULL);
    raw_expect_eof(&r);
    raw_close(&r);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 0);
}
END_TEST

START_TEST(test_protocol_startup_refusals)
{
    struct raw r;

    /* Not a replication connection. */
    {
        const char *kv[] = {"user", "postgres", "database", "postgres", NULL};

        raw_connect(&r);
        raw_startup(&r, kv);
        raw_expect_error(&r, "FATAL", "28000", "physical replication");
        raw_expect_eof(&r);
        raw_close(&r);
    }
    /* Logical replication. */
    {
        const char *kv[] = {"user", "postgres", "replication", "database", NULL};

        raw_connect(&r);
        raw_startup(&r, kv);
        raw_expect_error(&r, "FATAL", "0A000", "logical");
        raw_expect_eof(&r);
        raw_close(&r);
    }
    /* No user. */
    {
        const char *kv[] = {"replication", "true", NULL};

        raw_connect(&r);
        raw_startup(&r, kv);
        raw_expect_error(&r, "FATAL", "28000", "user");
        raw_expect_eof(&r);
        raw_close(&r);
    }
    /* CancelRequest: no answer, closed. */
    {
        uint8_t p[16] = {0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2};

        raw_connect(&r);
        raw_send(&r, p, sizeof(p));
        raw_expect_eof(&r);
        raw_close(&r);
    }
    /* A start-up packet claiming 2 GB. */
    {
        raw_connect(&r);
        raw_send(&r, "\x7f\xff\xff\xff\0\3\0\0", 8);
        raw_expect_error(&r, "FATAL", "08P01", "length");
        raw_expect_eof(&r);
        raw_close(&r);
    }
    /* Garbage after start-up: an unknown message type. */
    {
        raw_connect(&r);
        raw_login(&r, "garbage");
        raw_send(&r, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
        raw_expect_error(&r, "FATAL", "08P01", "invalid frontend message type");
        raw_expect_eof(&r);
        raw_close(&r);
    }
    /* A Query declaring more than the limit. */
    {
        raw_connect(&r);
        raw_login(&r, "huge");
        raw_send(&r, "Q\x7f\0\0\0", 5);
        raw_expect_error(&r, "FATAL", "08P01", "over the limit");
        raw_expect_eof(&r);
        raw_close(&r);
    }
    /* A second SSLRequest. */
    {
        raw_connect(&r);
        raw_initial(&r, PGP_SSL_REQUEST);
        ck_assert_int_eq(raw_byte(&r, 5000), 'N');
        raw_initial(&r, PGP_SSL_REQUEST);
        raw_expect_error(&r, "FATAL", "08P01", "SSLRequest");
        raw_expect_eof(&r);
        raw_close(&r);
    }
    /* The server still serves. */
    raw_connect(&r);
    raw_login(&r, "after");
    raw_close(&r);
}
END_TEST

START_TEST(test_protocol_streaming_replies)
{
    struct raw r;
    char lsn[PGP_LSN_BUFSZ], q[128], buf[64];
    uint64_t flush = spool_flush_lsn(fx.spool), wal_end = 0;
    int64_t t0;

    raw_connect(&r);
    raw_login(&r, "replier");
    pgp_lsn_format(flush, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION SLOT walmirror PHYSICAL %s", lsn);
    raw_query(&r, q);
    raw_expect(&r, 'W');
    ck_assert_uint_eq(r.body_len, 3);
    for (int i = 0; i < 50 && walsrv_streaming_clients(fx.srv) != 1; i++)
        fx_turn(10);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 1);

    /* replyRequested: a keepalive at once (the idle one would take 10 s). */
    t0 = now_ms();
    raw_standby_status(&r, flush - 100, flush - 200, flush - 300, true);
    ck_assert(!raw_expect_keepalive(&r, 3000, &wal_end));
    ck_assert_int_lt(now_ms() - t0, 3000);
    ck_assert_uint_eq(wal_end, flush);
    ck_assert_uint_eq(fx.replies, 1);
    ck_assert_str_eq(fx.last_app, "replier");
    ck_assert_uint_eq(fx.last_write, flush - 100);
    ck_assert_uint_eq(fx.last_flush, flush - 200);
    ck_assert_uint_eq(fx.last_apply, flush - 300);

    /* Hot standby feedback. */
    {
        struct pgp_buf b = {0};
        struct pgp_hs_feedback hs = {
            .send_time = 1, .xmin = 1234, .xmin_epoch = 1, .catalog_xmin = 999, .catalog_epoch = 2};

        ck_assert_int_gt(pgp_put_hs_feedback(&b, &hs), 0);
        raw_send(&r, b.data, b.len);
        pgp_buf_free(&b);
    }
    for (int i = 0; i < 100 && fx.feedbacks == 0; i++)
        fx_turn(10);
    ck_assert_uint_eq(fx.feedbacks, 1);
    ck_assert_uint_eq(fx.fb_xmin, 1234);
    ck_assert_uint_eq(fx.fb_epoch, 1);
    ck_assert_uint_eq(fx.fb_cxmin, 999);
    ck_assert_uint_eq(fx.fb_cepoch, 2);

    /* The client ends COPY: CopyDone, START_STREAMING, START_REPLICATION, ReadyForQuery. */
    raw_send(&r, "c\0\0\0\4", 5);
    raw_expect(&r, 'c');
    raw_expect(&r, 'C');
    ck_assert_str_eq((char *)r.body, "START_STREAMING");
    raw_expect(&r, 'C');
    ck_assert_str_eq((char *)r.body, "START_REPLICATION");
    raw_expect(&r, 'Z');
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 0);
    raw_one_row(&r, "IDENTIFY_SYSTEM", 1, buf, sizeof(buf));
    ck_assert_str_eq(buf, "1");

    /* A Query during COPY is a protocol violation. */
    raw_query(&r, q);
    raw_expect(&r, 'W');
    raw_query(&r, "IDENTIFY_SYSTEM");
    raw_expect_error(&r, "FATAL", "08P01", "COPY");
    raw_expect_eof(&r);
    raw_close(&r);

    /* Terminate ends a session quietly. */
    raw_connect(&r);
    raw_login(&r, "terminator");
    raw_send(&r, "X\0\0\0\4", 5);
    raw_expect_eof(&r);
    raw_close(&r);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* 4. walsrv_wal_durable                                                                     */

static void
setup_all_but_two(void)
{
    fx_setup(nsegs - 2);
}

START_TEST(test_durable_pushes_new_wal)
{
    struct raw at_end, late;
    char lsn[PGP_LSN_BUFSZ], q[128];
    uint64_t flush = spool_flush_lsn(fx.spool), pos_end, pos_late = first_lsn, wal_end = 0;
    uint64_t seg = first_lsn + (uint64_t)(nsegs - 2) * seg_size;
    const size_t stage1 = 3 * 1024 * 1024 + 123; /* not at a page boundary */
    bool asked;

    ck_assert_uint_eq(flush, seg);
    /* One client at the flush position, one from the start that reads only at the end. */
    raw_connect(&at_end);
    raw_login(&at_end, "at-end");
    pgp_lsn_format(flush, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION %s TIMELINE 1", lsn);
    raw_query(&at_end, q);
    raw_expect(&at_end, 'W');
    pos_end = flush;

    raw_connect(&late);
    raw_login(&late, "late");
    pgp_lsn_format(first_lsn, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION SLOT walmirror %s TIMELINE 1", lsn);
    raw_query(&late, q);
    raw_expect(&late, 'W');
    for (int i = 0; i < 100 && walsrv_streaming_clients(fx.srv) != 2; i++)
        fx_turn(10);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 2);

    /* Stage 1: part of a segment, ending mid-page. */
    fx_append(seg, stage1);
    raw_stream_to(&at_end, &pos_end, seg + stage1, 10000);
    ck_assert_uint_eq(pos_end, seg + stage1);
    /* Stage 2: the rest of that segment. */
    fx_append(seg + stage1, seg_size - stage1);
    raw_stream_to(&at_end, &pos_end, seg + seg_size, 10000);
    /* Stage 3: the last segment, in one go. */
    fx_append(seg + seg_size, seg_size);
    raw_stream_to(&at_end, &pos_end, end_lsn, 10000);
    ck_assert_uint_eq(pos_end, end_lsn);

    /* The late reader gets everything, contiguous, although its queue filled up meanwhile. */
    raw_stream_to(&late, &pos_late, end_lsn, 10000);
    ck_assert_uint_eq(pos_late, end_lsn);

    /* Nothing more to send: an idle keepalive within ~10 s, without a reply request. */
    asked = raw_expect_keepalive(&at_end, 15000, &wal_end);
    ck_assert(!asked);
    ck_assert_uint_eq(wal_end, end_lsn);

    raw_close(&at_end);
    raw_close(&late);
    for (int i = 0; i < 100 && walsrv_streaming_clients(fx.srv) != 0; i++)
        fx_turn(10);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 0);
}
END_TEST

/* Retention follows what the streaming standby still needs (spool_set_retain_lsn). */
START_TEST(test_retention_follows_standby)
{
    struct raw r, r2;
    char lsn[PGP_LSN_BUFSZ], q[128];
    uint64_t pos = first_lsn, need = first_lsn + 2ull * seg_size + seg_size / 2;

    /* keep_bytes 0: only what the standby needs (and the last segment) stays. */
    fx_setup_keep(1, 0);
    raw_connect(&r);
    raw_login(&r, "retained");
    pgp_lsn_format(first_lsn, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION SLOT walmirror %s TIMELINE 1", lsn);
    raw_query(&r, q);
    raw_expect(&r, 'W');
    for (int i = 0; i < 100 && walsrv_streaming_clients(fx.srv) != 1; i++)
        fx_turn(10);
    for (size_t i = 1; i < 4; i++)
        fx_append(first_lsn + i * seg_size, seg_size);
    /* Nothing confirmed yet: the spool still holds the client's start. */
    ck_assert_uint_eq(spool_start_lsn(fx.spool), first_lsn);
    raw_stream_to(&r, &pos, first_lsn + 4ull * seg_size, 10000);

    /* The standby confirms up to the middle of the third segment: the two before it go. */
    raw_standby_status(&r, need, need, need, false);
    for (int i = 0; i < 200 && spool_start_lsn(fx.spool) == first_lsn; i++)
        fx_turn(10);
    ck_assert_uint_eq(spool_start_lsn(fx.spool), first_lsn + 2ull * seg_size);

    /* A second client asking for what went is refused, naming the segment. */
    raw_connect(&r2);
    raw_login(&r2, "too-late");
    raw_query(&r2, q);
    raw_expect_error(&r2, "FATAL", "58P01", "has already been removed");
    raw_expect_eof(&r2);
    raw_close(&r2);
    raw_close(&r);
    fx_teardown();
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* A real timeline switch, made in main()                                                    */

/*
 * Primary P on timeline 1; R, a base backup of P (-X none) before anything else; S, a streaming
 * standby of P.  Rows are written on P, across a segment switch; P stops (fast: S receives
 * everything, the shutdown checkpoint included) and S is promoted to timeline 2.  Rows are
 * written on S across a segment switch, a checkpoint taken, pg_switch_wal closes the segment,
 * S stops.  Kept: P's
 * timeline 1 segments from R's backup start to the switch segment, S's timeline 2 segments from
 * the switch segment on, S's 00000002.history and the switch point it names.
 */
static uint8_t *tl1; /* P's timeline 1 segments, from tl1_first to tl1_end */
static uint64_t tl1_first, tl1_end;
static uint8_t *tl2; /* S's timeline 2 segments, from tl2_first to tl2_end */
static uint64_t tl2_first, tl2_end;
static uint64_t tl_switch; /* from 00000002.history */
static char *tl_history;   /* its content */
static size_t tl_history_len;
static uint64_t tl_sysid;
static char *tl_backup_dir;   /* holds data/: R's base backup */
/* P (timeline 1, stopped cleanly at the switch) and S (promoted to timeline 2), kept stopped
 * for test_rejoin_role_grants; destroyed at exit */
static struct pgt_cluster tl_p, tl_s;
static char tl_expected[128]; /* on S after the promotion: see TL_EXPECTED_SQL */

#define TL_EXPECTED_SQL                                                                            \
    "SELECT (SELECT count(*) || ' ' || sum(v) FROM tl_after) || ' ' || "                           \
    "(SELECT count(*) FROM tl_before WHERE id < 0)"

static char *
query_must(struct pgt_cluster *pg, const char *sql)
{
    char *s = pgt_query(pg, sql);

    tu_require(s != NULL, "query failed: %s (see %s/cmd.log)", sql, pg->dir);
    return s;
}

/* Reads the segments [from, to) of timeline tli from pgdata/pg_wal into one buffer. */
static uint8_t *
read_segments(const char *pgdata, uint32_t tli, uint64_t from, uint64_t to)
{
    uint8_t *buf = malloc(to - from);

    tu_require(buf != NULL);
    for (uint64_t lsn = from; lsn < to; lsn += seg_size) {
        uint64_t segno = lsn / seg_size, per_id = UINT64_C(0x100000000) / seg_size;
        char path[4096];
        uint8_t *data;
        size_t len;

        snprintf(path, sizeof(path), "%s/pg_wal/%08X%08X%08X", pgdata, tli,
                 (unsigned)(segno / per_id), (unsigned)(segno % per_id));
        data = tu_read_file(path, &len);
        tu_require(data != NULL && len == seg_size, "cannot read %s", path);
        memcpy(buf + (lsn - from), data, seg_size);
        free(data);
    }
    return buf;
}

static void
make_tl_wal(void)
{
    unsigned hi, lo;
    char path[4096], *txt, *res;
    size_t len;
    uint64_t lsn;
    int64_t deadline;

    tu_require(pgt_init(&tl_p, "walsrv-tl-p",
                        "max_wal_size = 1GB\ncheckpoint_timeout = 1h\nwal_keep_size = 1GB") == 0);
    tu_require(pgt_start(&tl_p) == 0, "cannot start P (see %s)", tl_p.dir);
    tl_backup_dir = tu_tmpdir("walsrv-tl-r");
    pgt_give_to_postgres(tl_backup_dir);
    tu_require(pgt_sh(&tl_p, "pg_basebackup -D '%s/data' -X none --checkpoint=fast", tl_backup_dir) ==
                   0,
               "pg_basebackup for R failed (see %s/cmd.log)", tl_p.dir);
    snprintf(path, sizeof(path), "%s/data/backup_label", tl_backup_dir);
    txt = tu_read_file(path, &len);
    tu_require(
        txt != NULL && strstr(txt, "START WAL LOCATION: ") != NULL &&
            sscanf(strstr(txt, "START WAL LOCATION: "), "START WAL LOCATION: %X/%X", &hi, &lo) == 2,
        "no start in %s", path);
    free(txt);
    seg_size = 16u * 1024 * 1024;
    tl1_first = ((uint64_t)hi << 32 | lo) / seg_size * seg_size;

    pgt_prepare(&tl_s, "walsrv-tl-s");
    tu_require(pgt_sh(&tl_p, "pg_basebackup -D '%s' -X stream -R --checkpoint=fast", tl_s.pgdata) == 0,
               "pg_basebackup for S failed (see %s/cmd.log)", tl_p.dir);
    tu_require(pgt_sh(&tl_s,
                      "cat >> \"$PGDATA/postgresql.auto.conf\" <<'EOF'\n"
                      "port = %d\nunix_socket_directories = '%s'\nhot_standby = on\n"
                      "EOF",
                      tl_s.port, tl_s.dir) == 0);
    tu_require(pgt_start(&tl_s) == 0, "cannot start S (see %s)", tl_s.dir);

    free(query_must(&tl_p, "CREATE TABLE tl_before (id int PRIMARY KEY);"
                        "INSERT INTO tl_before SELECT generate_series(1, 20000)"));
    free(query_must(&tl_p, "SELECT pg_switch_wal()"));
    free(query_must(&tl_p, "INSERT INTO tl_before SELECT generate_series(20001, 30000)"));
    res = query_must(&tl_p, "SELECT pg_current_wal_lsn()");
    tu_require(pgp_lsn_parse(res, strlen(res), &lsn) == 0);
    free(res);
    /* S has everything P wrote (the shutdown checkpoint follows through the fast stop). */
    deadline = now_ms() + 60000;
    for (;;) {
        char sql[128];

        snprintf(sql, sizeof(sql), "SELECT pg_last_wal_replay_lsn() >= '%X/%X'::pg_lsn",
                 (unsigned)(lsn >> 32), (unsigned)lsn);
        res = pgt_query(&tl_s, sql);
        if (res != NULL && strcmp(res, "t") == 0)
            break;
        free(res);
        tu_require(now_ms() < deadline, "S does not replay P's WAL (see %s)", tl_s.dir);
        usleep(100000);
    }
    free(res);
    tu_require(pgt_stop(&tl_p, "fast") == 0);
    tu_require(pgt_sh(&tl_s, "pg_ctl -D \"$PGDATA\" -w -t 60 promote") == 0, "promotion failed");

    snprintf(path, sizeof(path), "%s/pg_wal/00000002.history", tl_s.pgdata);
    tl_history = tu_read_file(path, &tl_history_len);
    tu_require(tl_history != NULL, "no %s", path);
    tu_require(sscanf(tl_history, "1\t%X/%X", &hi, &lo) == 2, "history: %s", tl_history);
    tl_switch = (uint64_t)hi << 32 | lo;

    free(query_must(&tl_s, "CREATE TABLE tl_after (id int PRIMARY KEY, v bigint);"
                        "INSERT INTO tl_after SELECT g, g * 5 FROM generate_series(1, 30000) g;"
                        "UPDATE tl_before SET id = -id WHERE id % 100 = 0"));
    /* Timeline 2 over two segments at least. */
    free(query_must(&tl_s, "SELECT pg_switch_wal()"));
    free(query_must(&tl_s,
                    "INSERT INTO tl_after SELECT g, g * 5 FROM generate_series(30001, 40000) g"));
    res = query_must(&tl_s, TL_EXPECTED_SQL);
    snprintf(tl_expected, sizeof(tl_expected), "%s", res);
    free(res);
    free(query_must(&tl_s, "CHECKPOINT"));
    res = query_must(&tl_s, "SELECT pg_switch_wal()");
    tu_require(pgp_lsn_parse(res, strlen(res), &lsn) == 0);
    free(res);
    tu_require(pgt_stop(&tl_s, "fast") == 0);

    tl1_end = tl_switch / seg_size * seg_size + seg_size;
    tl2_first = tl_switch / seg_size * seg_size;
    tl2_end = (lsn - 1) / seg_size * seg_size + seg_size;
    tl1 = read_segments(tl_p.pgdata, 1, tl1_first, tl1_end);
    tl2 = read_segments(tl_s.pgdata, 2, tl2_first, tl2_end);
    tl_sysid = le64(tl1 + 24);
    /* What the promotion copied into timeline 2's first segment is timeline 1's WAL. */
    tu_require(memcmp(tl1 + (tl2_first - tl1_first), tl2, tl_switch - tl2_first) == 0,
               "timeline 2's switch segment does not start with timeline 1's WAL");
    fprintf(stderr,
            "timelines: 1 from %" PRIX64 ", switch at %" PRIX64 ", 2 up to %" PRIX64 " (%" PRIu64
            " segments), after the switch: %s\n",
            tl1_first, tl_switch, tl2_end, (tl2_end - tl2_first) / seg_size, tl_expected);
}

/* ---------------------------------------------------------------------------------------- */
/* 5. Timelines                                                                              */

/* Appends src's WAL [from, to) (src holds WAL from src_lsn), a segment at a time, durably. */
static void
fx_append_range(const uint8_t *src, uint64_t src_lsn, uint64_t from, uint64_t to)
{
    while (from < to) {
        uint64_t n = (from / seg_size + 1) * seg_size - from;

        if (n > to - from)
            n = to - from;
        fx_append_src(src, src_lsn, from, (size_t)n);
        from += n;
    }
}

/* A spool filled as the agent fills it: timeline 1 from tl1_first up to tl1_to; when tl2_to is
 * not 0, the timeline switch and timeline 2 from the switch segment's start up to tl2_to. */
static void
fx_setup_tl(uint64_t tl1_to, uint64_t tl2_to)
{
    struct spool_identity id = {.system_id = tl_sysid, .seg_size = seg_size, .timeline = 1};
    char err[256];

    memset(&fx, 0, sizeof(fx));
    ck_assert_int_eq(wio_loop_new(&fx.loop, 256), 0);
    fx.spool_dir = tu_tmpdir("walsrv-tl-spool");
    ck_assert_msg(spool_open(&fx.spool, fx.loop, fx.spool_dir, KEEP_ALL, &fx_spool_ops, NULL, err,
                             sizeof(err)) == 0,
                  "spool_open: %s", err);
    ck_assert_int_eq(spool_set_identity(fx.spool, &id), 0);
    fx_append_range(tl1, tl1_first, tl1_first, tl1_to);
    if (tl2_to != 0) {
        ck_assert_int_eq(spool_set_timeline(fx.spool, 2, tl_switch, tl_history, tl_history_len), 0);
        fx_append_range(tl2, tl2_first, tl2_first, tl2_to);
    }
    ck_assert_msg(walsrv_new(&fx.srv, fx.loop, "127.0.0.1:0", fx.spool, &fx_srv_ops, NULL, err,
                             sizeof(err)) == 0,
                  "walsrv_new: %s", err);
}

/* The rest of timeline 1, the switch (as the agent does it), and timeline 2 up to tl2_to. */
static void
fx_switch_tl(uint64_t tl2_to)
{
    fx_append_range(tl1, tl1_first, spool_flush_lsn(fx.spool), tl_switch);
    ck_assert_int_eq(spool_set_timeline(fx.spool, 2, tl_switch, tl_history, tl_history_len), 0);
    walsrv_timeline_switched(fx.srv);
    fx_append_range(tl2, tl2_first, tl2_first, tl2_to);
}

/* The WAL at lsn as the timeline switch has it: timeline 2's from its first segment on. */
static const uint8_t *
tl_wal_at(uint64_t lsn)
{
    return lsn >= tl2_first ? tl2 + (lsn - tl2_first) : tl1 + (lsn - tl1_first);
}

/* Streams XLogData from *pos up to target (at most limit, the walEnd announced), checking
 * contiguity, chunking and content against the switched WAL. */
static void
raw_stream_tl(struct raw *r, uint64_t *pos, uint64_t target, uint64_t limit, int timeout_ms)
{
    while (*pos < target) {
        struct pgp_primary_msg m;
        struct pgp_err e;
        uint64_t end;

        ck_assert_msg(raw_msg(r, timeout_ms), "stream stalled at %" PRIX64 " (want %" PRIX64 ")",
                      *pos, target);
        ck_assert_msg(r->type == 'd', "got '%c' at %" PRIX64, r->type, *pos);
        ck_assert_int_eq(pgp_parse_primary_copydata(r->body, r->body_len, &m, &e), 0);
        if (m.kind == 'k')
            continue;
        ck_assert_uint_eq(m.data_start, *pos);
        end = m.data_start + m.data_len;
        ck_assert_uint_le(m.data_len, 128 * 1024);
        ck_assert_uint_le(end, m.wal_end);
        ck_assert_uint_le(m.wal_end, limit);
        ck_assert_msg(end == m.wal_end || end % 8192 == 0, "chunk ends at %" PRIX64, end);
        /* A chunk never crosses from one source buffer to the other: tl2_first is a segment
         * start, a page boundary. */
        ck_assert(m.data_start >= tl2_first || end <= tl2_first);
        ck_assert_msg(memcmp(m.data, tl_wal_at(m.data_start), m.data_len) == 0,
                      "WAL at %" PRIX64 " differs", m.data_start);
        *pos = end;
    }
}

/* Takes messages until one of type t, skipping CopyData (WAL, keepalives); returns how many
 * were skipped. */
static unsigned
raw_expect_after_copydata(struct raw *r, char t)
{
    unsigned skipped = 0;

    for (;;) {
        ck_assert_msg(raw_msg(r, 10000), "no '%c'", t);
        if (r->type != 'd' || t == 'd')
            break;
        skipped++;
    }
    ck_assert_msg(r->type == t, "got '%c' instead of '%c': %s", r->type, t,
                  r->type == 'E' ? (char *)r->body + 1 : "");
    return skipped;
}

/* The end of a historic timeline as libpqrcv_endstreaming reads it: next_tli and its start,
 * START_STREAMING, START_REPLICATION, ReadyForQuery. */
static void
raw_expect_next_timeline(struct raw *r, const char *next_tli, uint64_t startpos)
{
    char buf[64], want[PGP_LSN_BUFSZ];

    raw_expect(r, 'T');
    ck_assert(memmem(r->body, r->body_len, "next_tli", 9) != NULL);
    ck_assert(memmem(r->body, r->body_len, "next_tli_startpos", 18) != NULL);
    raw_expect(r, 'D');
    ck_assert_str_eq(raw_col(r, 0, buf, sizeof(buf)), next_tli);
    pgp_lsn_format(startpos, want);
    ck_assert_str_eq(raw_col(r, 1, buf, sizeof(buf)), want);
    raw_expect(r, 'C');
    ck_assert_str_eq((char *)r->body, "START_STREAMING");
    raw_expect(r, 'C');
    ck_assert_str_eq((char *)r->body, "START_REPLICATION");
    raw_expect(r, 'Z');
}

static void
raw_expect_identify_tli(struct raw *r, const char *tli)
{
    char buf[64];

    ck_assert_str_eq(raw_one_row(r, "IDENTIFY_SYSTEM", 1, buf, sizeof(buf)), tli);
}

/* A standby of the WAL server made from a copy of R's base backup (timeline 1, before the
 * switch), following the latest timeline. */
static void
tl_standby_prepare(struct pgt_cluster *sb, const char *tag)
{
    struct sh_call call;
    char *cmd;

    pgt_prepare(sb, tag);
    ck_assert(asprintf(&cmd,
                       "cp -a '%s/data' \"$PGDATA\" && touch \"$PGDATA/standby.signal\" && "
                       "cat >> \"$PGDATA/postgresql.auto.conf\" <<'EOF'\n"
                       "port = %d\n"
                       "unix_socket_directories = '%s'\n"
                       "primary_conninfo = 'host=127.0.0.1 port=%d user=postgres "
                       "application_name=%s gssencmode=disable'\n"
                       "recovery_target_timeline = 'latest'\n"
                       "hot_standby = on\n"
                       "wal_receiver_status_interval = 1s\n"
                       "wal_retrieve_retry_interval = 1s\n"
                       "EOF",
                       tl_backup_dir, sb->port, sb->dir, walsrv_port(fx.srv), tag) > 0);
    call.pg = sb;
    call.cmd = cmd;
    ck_assert_int_eq(run_bg(bg_sh, &call), 0);
    free(cmd);
}

/* Polls sql on pg (turning the loop) until it returns want; returns the last answer. */
static char *
poll_query(struct pgt_cluster *pg, const char *sql, const char *want, int64_t deadline)
{
    char *res = NULL;

    for (;;) {
        free(res);
        res = query_bg(pg, sql);
        if ((res != NULL && strcmp(res, want) == 0) || now_ms() >= deadline)
            return res;
        for (int i = 0; i < 25; i++)
            fx_turn(20);
    }
}

/* The standby reaches timeline 2 and shows what S wrote after its promotion. */
static void
tl_standby_check_followed(struct pgt_cluster *sb)
{
    int64_t deadline = now_ms() + 120000;
    char *res;

    res = poll_query(sb, TL_EXPECTED_SQL, tl_expected, deadline);
    ck_assert_msg(res != NULL && strcmp(res, tl_expected) == 0,
                  "the standby shows \"%s\", not \"%s\" (see %s/server.log)",
                  res != NULL ? res : "(query failed)", tl_expected, sb->dir);
    free(res);
    res = poll_query(sb, "SELECT received_tli FROM pg_stat_wal_receiver", "2", deadline);
    ck_assert_msg(res != NULL && strcmp(res, "2") == 0, "received_tli %s", res);
    free(res);
    /* A restartpoint at S's checkpoint of timeline 2 puts timeline 2 into pg_control. */
    for (res = NULL;;) {
        free(res);
        free(query_bg(sb, "CHECKPOINT"));
        res = query_bg(sb, "SELECT timeline_id FROM pg_control_checkpoint()");
        if ((res != NULL && strcmp(res, "2") == 0) || now_ms() >= deadline)
            break;
        for (int i = 0; i < 25; i++)
            fx_turn(20);
    }
    ck_assert_msg(res != NULL && strcmp(res, "2") == 0, "checkpoint timeline %s", res);
    free(res);
    {
        char path[4096];

        snprintf(path, sizeof(path), "%s/pg_wal/00000002.history", sb->pgdata);
        ck_assert_msg(access(path, F_OK) == 0, "the standby has no 00000002.history");
    }
    res = query_bg(sb, "SELECT pg_is_in_recovery()");
    ck_assert(res != NULL);
    ck_assert_str_eq(res, "t");
    free(res);
    ck_assert_uint_eq(fx.beyond_flush, 0);
    ck_assert_uint_eq(fx.apply_backwards, 0);
}

/* R, from a base backup of P before the switch, follows the WAL server to timeline 2. */
START_TEST(test_tl_standby_follows)
{
    struct pgt_cluster sb;
    int rc;

    fx_setup_tl(tl_switch, tl2_end);
    tl_standby_prepare(&sb, "walsrv-tl-follow");
    rc = run_bg(bg_start, &sb);
    ck_assert_msg(rc == 0, "R did not start: %s", slurp(sb.dir, "server.log"));
    tl_standby_check_followed(&sb);
    {
        char *log = slurp(sb.dir, "server.log");

        ck_assert_msg(strstr(log, "new target timeline is 2") != NULL, "%s", log);
        free(log);
    }
    ck_assert_int_eq(run_bg(bg_stop, &sb), 0);
    pgt_destroy(&sb);
    fx_teardown();
}
END_TEST

/* A standby streaming timeline 1 while the spool switches follows to timeline 2. */
START_TEST(test_tl_live_switch_standby)
{
    struct pgt_cluster sb;
    uint64_t part = tl2_first; /* timeline 1 up to the switch segment, the rest later */
    int64_t deadline;
    int rc;

    fx_setup_tl(part, 0);
    tl_standby_prepare(&sb, "walsrv-tl-live");
    rc = run_bg(bg_start, &sb);
    ck_assert_msg(rc == 0, "L did not start: %s", slurp(sb.dir, "server.log"));
    /* It streams timeline 1 and has everything the spool holds. */
    deadline = now_ms() + 60000;
    while (fx.last_flush < part && now_ms() < deadline)
        fx_turn(50);
    ck_assert_msg(fx.last_flush >= part, "L flushed only %" PRIX64, fx.last_flush);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 1);
    fx_switch_tl(tl2_end);
    tl_standby_check_followed(&sb);
    ck_assert_int_eq(run_bg(bg_stop, &sb), 0);
    pgt_destroy(&sb);
    fx_teardown();
}
END_TEST

/* pg_receivewal from timeline 1 crosses to timeline 2: the history file, and segments
 * byte-identical to the spool's. */
START_TEST(test_tl_pg_receivewal)
{
    struct pgt_cluster tools = {0};
    char *out, *cmd, end[PGP_LSN_BUFSZ], *text, *file;
    struct sh_call call;
    size_t files = 0, len;
    struct dirent *e;
    char partial[64];
    DIR *d;
    int rc;

    fx_setup_tl(tl_switch, tl2_end);
    tools.dir = tu_tmpdir("walsrv-tl-tools");
    pgt_give_to_postgres(tools.dir);
    tools.pgdata = tools.dir;
    tools.port = walsrv_port(fx.srv);
    out = tu_tmpdir("walsrv-tl-recv");
    pgt_give_to_postgres(out);
    pgp_lsn_format(tl2_end - 1, end);
    ck_assert(asprintf(&cmd,
                       "timeout 240 pg_receivewal -h 127.0.0.1 -p %d -D '%s' --slot=walmirror "
                       "--no-loop --endpos=%s --verbose",
                       walsrv_port(fx.srv), out, end) > 0);
    call.pg = &tools;
    call.cmd = cmd;
    rc = run_bg(bg_sh, &call);
    text = slurp(tools.dir, "cmd.log");
    ck_assert_msg(rc == 0, "pg_receivewal exited %d: %s", rc, text);
    {
        char want[96], sw[PGP_LSN_BUFSZ];

        pgp_lsn_format(tl_switch, sw);
        snprintf(want, sizeof(want), "switched to timeline 2 at %s", sw);
        ck_assert_msg(strstr(text, want) != NULL, "no \"%s\": %s", want, text);
        ck_assert_msg(strstr(text, "(timeline 1)") != NULL, "did not start on timeline 1: %s",
                      text);
    }
    free(text);

    /* The history file, as S wrote it. */
    {
        char path[4096];

        snprintf(path, sizeof(path), "%s/00000002.history", out);
        file = tu_read_file(path, &len);
        ck_assert_msg(file != NULL, "no 00000002.history");
        ck_assert_uint_eq(len, tl_history_len);
        ck_assert(memcmp(file, tl_history, len) == 0);
        free(file);
    }
    /* Complete segments: byte-identical to the spool's files of the same name.  The switch
     * segment of timeline 1 is kept as .partial: timeline 1's WAL up to the switch point and
     * zeros, as the spool's timeline 2 file begins. */
    {
        uint64_t segno = tl_switch / seg_size, per_id = UINT64_C(0x100000000) / seg_size;

        snprintf(partial, sizeof(partial), "%08X%08X%08X.partial", 1u, (unsigned)(segno / per_id),
                 (unsigned)(segno % per_id));
    }
    d = opendir(out);
    ck_assert(d != NULL);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "00000002.history") == 0)
            continue;
        if (strcmp(e->d_name, partial) == 0) {
            char path[4096];
            uint8_t *p;

            snprintf(path, sizeof(path), "%s/%s", out, partial);
            p = tu_read_file(path, &len);
            ck_assert(p != NULL && len == seg_size);
            ck_assert(memcmp(p, tl2, tl_switch - tl2_first) == 0);
            for (size_t i = tl_switch - tl2_first; i < len; i++)
                if (p[i] != 0)
                    ck_abort_msg("%s: byte %zu after the switch point is not zero", partial, i);
            free(p);
            continue;
        }
        ck_assert_msg(strlen(e->d_name) == 24, "unexpected file %s", e->d_name);
        ck_assert_msg(tu_run("cmp -s '%s/%s' '%s/%s'", fx.spool_dir, e->d_name, out, e->d_name) ==
                          0,
                      "%s differs from the spool's", e->d_name);
        files++;
    }
    closedir(d);
    ck_assert_uint_eq(files, (tl2_end - tl1_first) / seg_size);
    ck_assert_uint_eq(fx.beyond_flush, 0);
    free(cmd);
    tu_rmtree(out);
    free(out);
    tu_rmtree(tools.dir);
    free(tools.dir);
    fx_teardown();
}
END_TEST

/* The protocol around a timeline switch, as PostgreSQL's walsender answers. */
START_TEST(test_tl_protocol)
{
    struct raw r;
    char q[160], buf[256], sw[PGP_LSN_BUFSZ], lsn[PGP_LSN_BUFSZ];
    uint64_t pos, start;

    fx_setup_tl(tl_switch, tl2_end);
    pgp_lsn_format(tl_switch, sw);
    raw_connect(&r);
    raw_login(&r, "tlproto");
    raw_expect_identify_tli(&r, "2");

    /* TIMELINE_HISTORY: the file held, or an error naming the one that is not. */
    raw_query(&r, "TIMELINE_HISTORY 2");
    raw_expect(&r, 'T');
    raw_expect(&r, 'D');
    ck_assert_str_eq(raw_col(&r, 0, buf, sizeof(buf)), "00000002.history");
    {
        struct cursor c = cur_init(r.body, r.body_len);
        uint16_t n;
        uint32_t l1, l2;
        const uint8_t *p;

        ck_assert(cur_get_u16be(&c, &n) && n == 2);
        ck_assert(cur_get_u32be(&c, &l1) && cur_get_bytes(&c, l1, &p));
        ck_assert(cur_get_u32be(&c, &l2) && cur_get_bytes(&c, l2, &p));
        ck_assert_uint_eq(l2, tl_history_len);
        ck_assert(memcmp(p, tl_history, l2) == 0);
    }
    raw_expect(&r, 'C');
    raw_expect(&r, 'Z');
    raw_query(&r, "TIMELINE_HISTORY 3");
    raw_expect_error(&r, "ERROR", "58P01", "could not open file \"pg_wal/00000003.history\"");
    raw_expect(&r, 'Z');
    raw_query(&r, "TIMELINE_HISTORY 1");
    raw_expect_error(&r, "ERROR", "58P01", "00000001.history");
    raw_expect(&r, 'Z');
    raw_expect_identify_tli(&r, "2");

    /* READ_REPLICATION_SLOT: the spool's start is on timeline 1. */
    ck_assert_str_eq(raw_one_row(&r, "READ_REPLICATION_SLOT walmirror", 2, buf, sizeof(buf)), "1");

    /* Exactly at the switch point: no COPY, the next timeline at once. */
    snprintf(q, sizeof(q), "START_REPLICATION SLOT walmirror %s TIMELINE 1", sw);
    raw_query(&r, q);
    raw_expect_next_timeline(&r, "2", tl_switch);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 0);
    raw_expect_identify_tli(&r, "2");

    /* Beyond it on timeline 1: not in this server's history. */
    pgp_lsn_format(tl_switch + 8, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION %s TIMELINE 1", lsn);
    raw_query(&r, q);
    snprintf(buf, sizeof(buf),
             "requested starting point %s on timeline 1 is not in this server's history", lsn);
    raw_expect_error(&r, "ERROR", NULL, buf);
    snprintf(buf, sizeof(buf), "This server's history forked from timeline 1 at %s.", sw);
    ck_assert_str_eq(raw_err_field(&r, 'D'), buf);
    raw_expect(&r, 'Z');
    raw_expect_identify_tli(&r, "2");

    /* An unknown timeline: newer than the spool's. */
    raw_query(&r, "START_REPLICATION 0/1000000 TIMELINE 3");
    raw_expect_error(&r, "ERROR", NULL, "requested timeline 3 is not in this server's history");
    raw_expect(&r, 'Z');
    raw_expect_identify_tli(&r, "2");

    /* Below it on timeline 1: WAL up to the switch point and not a byte more, CopyDone; 'r'
     * still processed until the client's CopyDone; then the next timeline. */
    start = tl_switch - tl_switch % 8192 - 3 * 8192;
    pgp_lsn_format(start, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION SLOT walmirror %s TIMELINE 1", lsn);
    raw_query(&r, q);
    raw_expect(&r, 'W');
    pos = start;
    raw_stream_tl(&r, &pos, tl_switch, tl_switch, 10000);
    ck_assert_uint_eq(pos, tl_switch);
    raw_expect_after_copydata(&r, 'c');
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 1);
    raw_standby_status(&r, tl_switch, tl_switch, tl_switch - 100, false);
    for (int i = 0; i < 100 && fx.last_apply != tl_switch - 100; i++)
        fx_turn(10);
    ck_assert_uint_eq(fx.last_apply, tl_switch - 100);
    raw_send(&r, "c\0\0\0\4", 5);
    raw_expect_next_timeline(&r, "2", tl_switch);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 0);
    raw_expect_identify_tli(&r, "2");

    /* Then timeline 2 from the switch segment's start, as the walreceiver asks: timeline 2's
     * file (bytes below the switch point are the same). */
    pgp_lsn_format(tl2_first, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION SLOT walmirror %s TIMELINE 2", lsn);
    raw_query(&r, q);
    raw_expect(&r, 'W');
    pos = tl2_first;
    raw_stream_tl(&r, &pos, tl_switch + 2 * 8192, tl2_end, 10000);
    raw_send(&r, "c\0\0\0\4", 5);
    raw_expect_after_copydata(&r, 'c');
    raw_expect(&r, 'C');
    ck_assert_str_eq((char *)r.body, "START_STREAMING");
    raw_expect(&r, 'C');
    ck_assert_str_eq((char *)r.body, "START_REPLICATION");
    raw_expect(&r, 'Z');

    /* A client ending the COPY of a historic timeline early: CopyDone back, then the next
     * timeline. */
    pgp_lsn_format(tl1_first, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION %s TIMELINE 1", lsn);
    raw_query(&r, q);
    raw_expect(&r, 'W');
    pos = tl1_first;
    raw_stream_tl(&r, &pos, tl1_first + 8192, tl_switch, 10000);
    raw_send(&r, "c\0\0\0\4", 5);
    raw_expect_after_copydata(&r, 'c');
    raw_expect_next_timeline(&r, "2", tl_switch);
    raw_expect_identify_tli(&r, "2");
    raw_close(&r);
    fx_teardown();
}
END_TEST

/* A client streaming the current timeline when the spool switches: it gets the WAL up to the
 * switch point and not a byte of the new timeline, CopyDone, and the next timeline. */
START_TEST(test_tl_live_switch_protocol)
{
    struct raw at_end, behind;
    char q[128], lsn[PGP_LSN_BUFSZ];
    uint64_t pos_end, pos_behind = tl1_first;
    uint64_t part = tl_switch - tl_switch % 8192; /* a page short of the switch point */

    fx_setup_tl(part, 0);
    /* One at the spool's end, timeline omitted (the current one, 1); one from the start. */
    raw_connect(&at_end);
    raw_login(&at_end, "live-end");
    raw_expect_identify_tli(&at_end, "1");
    pgp_lsn_format(part, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION %s", lsn);
    raw_query(&at_end, q);
    raw_expect(&at_end, 'W');
    pos_end = part;
    raw_connect(&behind);
    raw_login(&behind, "live-behind");
    pgp_lsn_format(tl1_first, lsn);
    snprintf(q, sizeof(q), "START_REPLICATION %s TIMELINE 1", lsn);
    raw_query(&behind, q);
    raw_expect(&behind, 'W');
    for (int i = 0; i < 100 && walsrv_streaming_clients(fx.srv) != 2; i++)
        fx_turn(10);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 2);

    /* The rest of timeline 1, the switch, and timeline 2. */
    fx_switch_tl(tl2_end);
    raw_stream_tl(&at_end, &pos_end, tl_switch, tl_switch, 10000);
    ck_assert_uint_eq(pos_end, tl_switch);
    raw_expect_after_copydata(&at_end, 'c');
    raw_send(&at_end, "c\0\0\0\4", 5);
    raw_expect_next_timeline(&at_end, "2", tl_switch);
    raw_expect_identify_tli(&at_end, "2");

    raw_stream_tl(&behind, &pos_behind, tl_switch, tl_switch, 10000);
    raw_expect_after_copydata(&behind, 'c');
    raw_send(&behind, "c\0\0\0\4", 5);
    raw_expect_next_timeline(&behind, "2", tl_switch);
    for (int i = 0; i < 100 && walsrv_streaming_clients(fx.srv) != 0; i++)
        fx_turn(10);
    ck_assert_uint_eq(walsrv_streaming_clients(fx.srv), 0);
    raw_close(&at_end);
    raw_close(&behind);

    /* A client at the switch point when the switch happens is told at once. */
    fx_teardown();
    fx_setup_tl(tl_switch, 0);
    raw_connect(&at_end);
    raw_login(&at_end, "live-at-switch");
    snprintf(q, sizeof(q), "START_REPLICATION %s", (pgp_lsn_format(tl_switch, lsn), lsn));
    raw_query(&at_end, q);
    raw_expect(&at_end, 'W');
    for (int i = 0; i < 100 && walsrv_streaming_clients(fx.srv) != 1; i++)
        fx_turn(10);
    ck_assert_int_eq(spool_set_timeline(fx.spool, 2, tl_switch, tl_history, tl_history_len), 0);
    walsrv_timeline_switched(fx.srv);
    {
        int64_t t0 = now_ms();

        raw_expect_after_copydata(&at_end, 'c');
        ck_assert_int_lt(now_ms() - t0, 900); /* not the one-second tick */
    }
    raw_send(&at_end, "c\0\0\0\4", 5);
    raw_expect_next_timeline(&at_end, "2", tl_switch);
    raw_close(&at_end);
    fx_teardown();
}
END_TEST

/* Exit status of psql running sql on c's server as role (trust authentication). */
static int
psql_as(struct pgt_cluster *c, const char *role, const char *sql)
{
    return pgt_sh(c,
                  "psql -X -v ON_ERROR_STOP=1 -d 'host=127.0.0.1 port=%d user=%s "
                  "dbname=postgres' -c \"%s\"",
                  c->port, role, sql);
}

/* pg_rewind of P from S, as the agent's rejoin runs it, with role; its output in
 * P's directory, rewind.out.  Returns its exit status. */
static int
rewind_as(const char *role)
{
    return pgt_sh(&tl_p,
                  "pg_rewind --target-pgdata=\"$PGDATA\" --source-server='host=127.0.0.1 "
                  "port=%d user=%s dbname=postgres' >'%s/rewind.out' 2>&1",
                  tl_s.port, role, tl_p.dir);
}

/*
 * The role docs/setup.md gives the agents instead of a superuser is enough for what they run
 * on the other site's PostgreSQL (peer_pg_conninfo) in a rejoin - the DO block and CHECKPOINT
 * on the new primary, pg_rewind --source-server - and on their own after a fail-over (ALTER
 * SYSTEM SET synchronous_standby_names, pg_reload_conf()); a role without those grants is
 * refused each of them.  On P and S of the timeline switch: P, the old primary, takes one more
 * commit after S's promotion, and is rewound from S.
 */
START_TEST(test_rejoin_role_grants)
{
    static const char *const grants =
        "CREATE ROLE wm_granted LOGIN REPLICATION;"
        "CREATE ROLE wm_plain LOGIN REPLICATION;"
        "GRANT pg_checkpoint TO wm_granted;"
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO wm_granted;"
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO wm_granted;"
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO wm_granted;"
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, "
        "boolean) TO wm_granted;"
        "GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names TO wm_granted;"
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO wm_granted";
    const char *in_recovery = "DO \\$\\$BEGIN IF pg_is_in_recovery() THEN RAISE EXCEPTION "
                              "'still in recovery'; END IF; END\\$\\$";
    char *v;

    ck_assert_int_eq(pgt_start(&tl_s), 0);
    free(query_must(&tl_s, grants));
    /* P, never told of the promotion, commits once more: the sites have diverged */
    ck_assert_int_eq(pgt_start(&tl_p), 0);
    free(query_must(&tl_p, "INSERT INTO tl_before VALUES (-1)"));
    ck_assert_int_eq(pgt_stop(&tl_p, "fast"), 0);

    /* what the rejoin runs first on the new primary */
    ck_assert_int_ne(psql_as(&tl_s, "wm_plain", "CHECKPOINT"), 0);
    ck_assert_int_eq(psql_as(&tl_s, "wm_granted", in_recovery), 0);
    ck_assert_int_eq(psql_as(&tl_s, "wm_granted", "CHECKPOINT"), 0);
    /* what a new primary's agent runs after a fail-over */
    ck_assert_int_ne(psql_as(&tl_s, "wm_plain", "ALTER SYSTEM SET synchronous_standby_names = ''"),
                     0);
    ck_assert_int_eq(
        psql_as(&tl_s, "wm_granted", "ALTER SYSTEM SET synchronous_standby_names = ''"), 0);
    ck_assert_int_ne(psql_as(&tl_s, "wm_plain", "SELECT pg_reload_conf()"), 0);
    ck_assert_int_eq(psql_as(&tl_s, "wm_granted", "SELECT pg_reload_conf()"), 0);

    /* pg_rewind from S as each role: refused without the grants, done with them */
    ck_assert_int_ne(rewind_as("wm_plain"), 0);
    ck_assert_msg(rewind_as("wm_granted") == 0, "pg_rewind as wm_granted failed (see %s)",
                  tl_p.dir);
    v = slurp(tl_p.dir, "rewind.out");
    ck_assert_msg(strstr(v, "servers diverged at WAL location") != NULL &&
                      strstr(v, "Done!") != NULL,
                  "pg_rewind did not rewind: %s", v);
    free(v);
    ck_assert_int_eq(pgt_stop(&tl_s, "fast"), 0);
}
END_TEST

static void
teardown_fx(void)
{
    fx_teardown();
}

int
main(void)
{
    Suite *s = suite_create("walsrv");
    TCase *tc_clients = tcase_create("clients");
    TCase *tc_proto = tcase_create("protocol");
    TCase *tc_durable = tcase_create("durable");
    TCase *tc_retention = tcase_create("retention");
    TCase *tc_timelines = tcase_create("timelines");
    SRunner *sr;
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    if (getenv("WALMIRROR_LOG_DEBUG") != NULL)
        log_level = LOG_LEVEL_DEBUG;
    make_wal();
    make_tl_wal();

    tcase_set_timeout(tc_clients, 300);
    tcase_add_test(tc_clients, test_pg_receivewal);
    tcase_add_test(tc_clients, test_standby_replays);
    suite_add_tcase(s, tc_clients);

    tcase_set_timeout(tc_proto, 120);
    tcase_add_checked_fixture(tc_proto, setup_two_segments, teardown_fx);
    tcase_add_test(tc_proto, test_protocol_session);
    tcase_add_test(tc_proto, test_protocol_as_postgresql);
    tcase_add_test(tc_proto, test_protocol_start_below_spool);
    tcase_add_test(tc_proto, test_protocol_startup_refusals);
    tcase_add_test(tc_proto, test_protocol_streaming_replies);
    suite_add_tcase(s, tc_proto);

    tcase_set_timeout(tc_durable, 180);
    tcase_add_checked_fixture(tc_durable, setup_all_but_two, teardown_fx);
    tcase_add_test(tc_durable, test_durable_pushes_new_wal);
    suite_add_tcase(s, tc_durable);

    tcase_set_timeout(tc_retention, 120);
    tcase_add_test(tc_retention, test_retention_follows_standby);
    suite_add_tcase(s, tc_retention);

    tcase_set_timeout(tc_timelines, 300);
    tcase_add_test(tc_timelines, test_tl_protocol);
    tcase_add_test(tc_timelines, test_tl_live_switch_protocol);
    tcase_add_test(tc_timelines, test_tl_pg_receivewal);
    tcase_add_test(tc_timelines, test_tl_standby_follows);
    tcase_add_test(tc_timelines, test_tl_live_switch_standby);
    tcase_add_test(tc_timelines, test_rejoin_role_grants);
    suite_add_tcase(s, tc_timelines);

    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    tu_rmtree(wal_dir);
    if (getenv("WALMIRROR_KEEP_TMP") == NULL) {
        tu_rmtree(standby_dir);
        tu_rmtree(tl_backup_dir);
    }
    pgt_destroy(&tl_p);
    pgt_destroy(&tl_s);
    free(wal);
    free(tl1);
    free(tl2);
    free(tl_history);
    return failed == 0 ? 0 : 1;
}
