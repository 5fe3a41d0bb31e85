/*
 * source.c - the source: a physical replication client of the local primary, through libpq;
 * the contract is in source.h.
 *
 * Lifecycle (enum source_state; every transition is logged)
 *   CONNECTING      PQconnectStartParams, then PQconnectPoll each time the socket becomes
 *                   readable or writable as libpq asked (PQsocket is re-read every time: libpq
 *                   may switch sockets between addresses or after an SSL fallback).
 *   IDENTIFYING     IDENTIFY_SYSTEM           -> system id, timeline, xlogpos
 *   HISTORY         TIMELINE_HISTORY tli      -> the primary's history file (only if tli > 1)
 *   SHOWING         SHOW wal_segment_size     -> "16MB" etc., a power of two in 1 MB..1 GB
 *   READING_SLOT    READ_REPLICATION_SLOT     -> restart_lsn; all NULL: the slot is missing
 *   CREATING_SLOT   CREATE_REPLICATION_SLOT "s" PHYSICAL RESERVE_WAL, then READING_SLOT again
 *   IDENTIFIED      on_identified() called; waits for source_start()
 *   STARTING        START_REPLICATION SLOT "s" PHYSICAL X/X TIMELINE n; expects COPY_BOTH, or
 *                   (start == the switch point of a historic timeline) the next-timeline
 *                   result set without COPY, which goes on as ENDING does
 *   STREAMING       PQgetCopyData: 'w' -> on_wal (contiguity checked), 'k' -> reply if asked
 *   ENDING          the server ended the COPY.  CopyDone from it: the end of a historic
 *                   timeline, answered with CopyDone, then next_tli/next_tli_startpos, then
 *                   CommandComplete twice (START_STREAMING, START_REPLICATION).
 *                   CommandComplete alone: WalSndDone, a clean shutdown (on_closed, err 0).
 *   NEXT_HISTORY    TIMELINE_HISTORY next_tli -> on_timeline(), then STARTING on next_tli at
 *                   the segment start of its switch point (walreceiver, pg_receivewal)
 *   CLOSED          on_closed() is due or done; nothing else happens until source_free()
 * Commands are sent with PQsendQuery on a non-blocking connection; their results are read with
 * PQconsumeInput / PQisBusy / PQgetResult as the socket becomes readable.
 *
 * I/O integration
 *   libpq owns the socket; this module only waits for it, through a fdwatch (fdwatch.h):
 *   single-shot polls, one for POLLIN, one for POLLOUT when libpq has output it could not
 *   send, and one timer.  source_free() releases the watch, which removes the polls, cancels
 *   the timer and frees itself once the ring is done with it.
 *
 *   The timer serves several wake-up reasons, each with a deadline (as walreceiver.c does):
 *   STATUS (an 'r' at least every SOURCE_STATUS_INTERVAL_MS), DRAIN (read what libpq has
 *   already buffered: after a resume or when one turn's read budget ran out) and CLOSE (deliver
 *   on_closed).  It is armed for the earliest deadline.
 *
 * Standby status updates
 *   The last triple sent is kept; source_report() sends an 'r' when the effective triple
 *   changes, a keepalive with replyRequested forces one, and the STATUS deadline sends one if
 *   nothing went out for SOURCE_STATUS_INTERVAL_MS.  A position the owner reports as 0 is sent
 *   as the start position (syncrep.c reads a 0 position as "not set").  One 'r' goes out as soon
 *   as the stream starts, as the walreceiver does.
 *
 * Timeline switches (checked as receivelog.c does)
 *   next_tli must be above the timeline streamed, and next_tli_startpos (the switch point)
 *   between the start position and the end of what was received: the walsender may have sent
 *   a little past the switch point (XLogSendPhysical: half a record, when a cascading standby
 *   was promoted), never less.  next_tli's history file must be named "%08X.history" and end
 *   with the entry (old timeline, switch point).
 *
 * Failure semantics
 *   Every failure ends the session: the state becomes CLOSED at once (no more on_wal or
 *   on_drained) and on_closed(err, message) is delivered from the loop on its next turn, never
 *   from inside a call the owner made (source_new, source_start, source_report, source_pause),
 *   so that the owner may source_free() from on_closed without re-entrancy surprises.  err is:
 *     0             not a failure: the primary shut down cleanly (CommandComplete after all it
 *                   sent was reported flushed); source_received_lsn() is the end of its WAL;
 *     -ENOTCONN     the connection could not be established (refused, authentication...);
 *     -ENOTSUP      the server is older than PostgreSQL 15, or lacks integer_datetimes;
 *     WIRE_EPEER    the server answered a command or ended the stream with an error (a
 *                   terminated walsender, a start past a historic timeline's switch point);
 *     WIRE_ECLOSED  the connection was lost (immediate shutdown, crash, network), or a
 *                   timeline ended and the owner has no on_timeline;
 *     WIRE_EPROTO   a reply of the wrong shape, a gap/overlap in the WAL, a timeline switch
 *                   that does not add up;
 *     -ENOMEM / -EBUSY  local resources (memory, SQEs).
 *   The message names the command and quotes the server's own text.
 *   Callbacks may call any function of this module on the same source, source_free included:
 *   a depth counter defers the actual free to the moment the callback has returned.
 */
#include "source.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "cursor.h"
#include "fdwatch.h"
#include "log.h"
#include "pgproto.h"
#include "util.h"

#define SOURCE_STATUS_INTERVAL_MS 10000u /* wal_receiver_status_interval */
#define SOURCE_READ_BUDGET (8u << 20)    /* WAL bytes delivered per loop turn at most */
#define SOURCE_MSG_MAX 512
#define SOURCE_MIN_SERVER_VERSION 150000
#define SOURCE_SEG_MIN (1u << 20)
#define SOURCE_SEG_MAX (1u << 30)


enum source_state {
    SOURCE_CONNECTING,
    SOURCE_IDENTIFYING,
    SOURCE_HISTORY,
    SOURCE_SHOWING,
    SOURCE_READING_SLOT,
    SOURCE_CREATING_SLOT,
    SOURCE_IDENTIFIED,
    SOURCE_STARTING,
    SOURCE_STREAMING,
    SOURCE_ENDING,
    SOURCE_NEXT_HISTORY,
    SOURCE_CLOSED,
};

/* One state a line, as the enum. */
/* clang-format off */
static const char *const state_names[] = {
    [SOURCE_CONNECTING] = "connecting",
    [SOURCE_IDENTIFYING] = "identifying",
    [SOURCE_HISTORY] = "history",
    [SOURCE_SHOWING] = "showing",
    [SOURCE_READING_SLOT] = "reading-slot",
    [SOURCE_CREATING_SLOT] = "creating-slot",
    [SOURCE_IDENTIFIED] = "identified",
    [SOURCE_STARTING] = "starting",
    [SOURCE_STREAMING] = "streaming",
    [SOURCE_ENDING] = "ending",
    [SOURCE_NEXT_HISTORY] = "next-history",
    [SOURCE_CLOSED] = "closed",
};
/* clang-format on */

enum source_wakeup {
    SOURCE_WAKE_STATUS, /* periodic standby status update */
    SOURCE_WAKE_DRAIN,  /* read what libpq buffered without the socket telling */
    SOURCE_WAKE_CLOSE,  /* deliver on_closed */
    SOURCE_WAKE_COUNT,
};

struct source;

struct source {
    struct wio_loop *loop;
    struct fdwatch *io; /* the socket's polls and the timer; NULL once released */
    const struct source_ops *ops;
    void *ctx;
    char comp[80]; /* log component: "source[slot]" */
    char slot[PGP_NAME_MAX + 1];
    char *app_name;

    PGconn *conn;
    enum source_state state;
    PostgresPollingStatusType connect_wait; /* CONNECTING: what PQconnectPoll asked for */

    /* Results of the command in progress: the first result, or the first error. */
    PGresult *res;
    bool slot_created; /* CREATE_REPLICATION_SLOT done in this session */
    struct source_identity id;
    char *history; /* id.history's storage */

    /* streaming: start_* are those of the timeline being streamed */
    uint64_t start_lsn;
    uint32_t start_tli;
    uint64_t next_lsn;       /* where the next 'w' must start */
    uint64_t received_floor; /* after a switch: its point, until next_lsn passes it */
    uint64_t wal_end;        /* the server's last reported end of WAL */
    bool paused;
    bool wal_since_drained;
    bool end_of_timeline; /* ENDING: the server sent CopyDone */
    bool have_next_tli;   /* the next-timeline result set was read */
    uint32_t next_tli;
    uint64_t next_tli_start;

    /* standby status: reported by the owner, last sent */
    uint64_t rep_write, rep_flush, rep_apply;
    uint64_t sent_write, sent_flush, sent_apply;
    bool status_sent;    /* at least one 'r' sent */
    bool status_pending; /* an 'r' could not be queued: retry when writable */
    uint64_t last_status_ms;

    /* timer */
    uint64_t wake[SOURCE_WAKE_COUNT]; /* monotonic ms deadlines, 0 = none */
    uint64_t timer_at;                /* deadline the timer is armed for, 0 = not armed */

    /* closing */
    int close_err;
    char close_msg[SOURCE_MSG_MAX];
    bool close_delivered;

    /* re-entrancy */
    unsigned depth;
    bool freed;
};

static void source_step(struct source *s);

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                             */

/* The server's message of an error result: "primary text (SQLSTATE xxxxx)", else libpq's. */
static void
result_error(char *dst, size_t cap, const PGresult *res, PGconn *conn)
{
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *sqlstate = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *detail = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    char line[SOURCE_MSG_MAX];

    if (primary != NULL) {
        log_one_line(line, sizeof(line), primary);
        if (detail != NULL) {
            char d[SOURCE_MSG_MAX / 2];

            log_one_line(d, sizeof(d), detail);
            /* A message longer than dst is cut: it is for the log. */
            if (snprintf(dst, cap, "%s (SQLSTATE %s): %s", line, sqlstate != NULL ? sqlstate : "?",
                         d) >= (int)cap)
                dst[cap - 1] = '\0';
        } else if (snprintf(dst, cap, "%s (SQLSTATE %s)", line,
                            sqlstate != NULL ? sqlstate : "?") >= (int)cap) {
            dst[cap - 1] = '\0';
        }
        return;
    }
    if (res != NULL && PQresultErrorMessage(res)[0] != '\0')
        log_one_line(dst, cap, PQresultErrorMessage(res));
    else
        log_one_line(dst, cap, PQerrorMessage(conn));
    if (dst[0] == '\0')
        snprintf(dst, cap, "unknown error (result status %s)",
                 res != NULL ? PQresStatus(PQresultStatus(res)) : "none");
}

/* Strict decimal uint64 (IDENTIFY_SYSTEM's systemid, timelines). */
static int
parse_u64(const char *str, uint64_t *out)
{
    uint64_t v = 0;

    if (str == NULL || *str == '\0')
        return -EINVAL;
    for (; *str != '\0'; str++) {
        if (*str < '0' || *str > '9')
            return -EINVAL;
        if (v > (UINT64_MAX - (uint64_t)(*str - '0')) / 10)
            return -ERANGE;
        v = v * 10 + (uint64_t)(*str - '0');
    }
    *out = v;
    return 0;
}

static int
parse_tli(const char *str, uint32_t *out)
{
    uint64_t v;

    if (parse_u64(str, &v) < 0 || v == 0 || v > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

/* SHOW wal_segment_size: "<n><unit>" with the units of GUC_UNIT_BYTE ("16MB"). */
static int
parse_seg_size(const char *str, uint32_t *out)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {
        {"B", 1}, {"kB", 1u << 10}, {"MB", 1u << 20}, {"GB", 1u << 30}, {"TB", 1ull << 40}};
    char num[24];
    size_t n = 0;
    uint64_t v;

    if (str == NULL)
        return -EINVAL;
    while (str[n] >= '0' && str[n] <= '9' && n < sizeof(num) - 1) {
        num[n] = str[n];
        n++;
    }
    num[n] = '\0';
    if (parse_u64(num, &v) < 0)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(str + n, units[i].unit) != 0)
            continue;
        if (v > UINT64_MAX / units[i].mult)
            return -ERANGE;
        v *= units[i].mult;
        if (v < SOURCE_SEG_MIN || v > SOURCE_SEG_MAX || (v & (v - 1)) != 0)
            return -ERANGE;
        *out = (uint32_t)v;
        return 0;
    }
    return -EINVAL;
}

static int
parse_lsn(const char *str, uint64_t *out)
{
    return str != NULL ? pgp_lsn_parse(str, strlen(str), out) : -EINVAL;
}

/*
 * The last entry of a timeline history file: lines "parentTLI<TAB>X/X<TAB>reason", blank lines
 * and '#' comments skipped, leading white space allowed, as readTimeLineHistory() reads them.
 * Returns 0 with the entry, or -EINVAL when an entry does not parse or there is none.
 */
static int
history_last_entry(const char *buf, size_t len, uint32_t *tli, uint64_t *lsn)
{
    const char *end = buf + len;
    bool found = false;

    while (buf < end) {
        const char *eol = memchr(buf, '\n', (size_t)(end - buf));
        const char *line_end = eol != NULL ? eol : end;
        const char *p = buf, *tok;
        char num[16];

        buf = eol != NULL ? eol + 1 : end;
        while (p < line_end && (*p == ' ' || *p == '\t' || *p == '\r'))
            p++;
        if (p == line_end || *p == '#')
            continue;
        for (tok = p; p < line_end && *p >= '0' && *p <= '9'; p++)
            ;
        if (p == tok || (size_t)(p - tok) >= sizeof(num) || p == line_end ||
            (*p != ' ' && *p != '\t'))
            return -EINVAL;
        memcpy(num, tok, (size_t)(p - tok));
        num[p - tok] = '\0';
        if (parse_tli(num, tli) < 0)
            return -EINVAL;
        while (p < line_end && (*p == ' ' || *p == '\t'))
            p++;
        for (tok = p; p < line_end && *p != ' ' && *p != '\t' && *p != '\r'; p++)
            ;
        if (pgp_lsn_parse(tok, (size_t)(p - tok), lsn) < 0)
            return -EINVAL;
        found = true;
    }
    return found ? 0 : -EINVAL;
}

static void
notice_processor(void *arg, const char *message)
{
    struct source *s = arg;
    char line[SOURCE_MSG_MAX];

    log_one_line(line, sizeof(line), message);
    log_warning(s->comp, "primary says: %s", line);
}

/* ---------------------------------------------------------------------------------------- */
/* State, timer and failure                                                                  */

static void
set_state(struct source *s, enum source_state next)
{
    if (s->state == next)
        return;
    log_info(s->comp, "%s -> %s", state_names[s->state], state_names[next]);
    s->state = next;
}

/* Arms the timer for the earliest wake-up deadline, unless it already fires no later. */
static void
timer_update(struct source *s)
{
    uint64_t next = 0, now;
    int rc;

    if (s->io == NULL)
        return;
    for (int i = 0; i < SOURCE_WAKE_COUNT; i++)
        if (s->wake[i] != 0 && (next == 0 || s->wake[i] < next))
            next = s->wake[i];
    if (next == 0) {
        if (s->timer_at != 0)
            fdwatch_timer_stop(s->io);
        s->timer_at = 0;
        return;
    }
    if (s->timer_at != 0 && s->timer_at <= next)
        return;
    now = clock_mono_ms();
    rc = fdwatch_timer(s->io, next > now ? next - now : 0);
    if (rc < 0) {
        /* Without a timer nothing deferred can happen; the next poll completion retries. */
        log_error(s->comp, "cannot arm the timer: %s", wire_strerror(rc));
        s->timer_at = 0;
        return;
    }
    s->timer_at = next;
}

static void
wake_at(struct source *s, enum source_wakeup why, uint64_t at)
{
    s->wake[why] = at;
    timer_update(s);
}

/*
 * Ends the session: CLOSED now, on_closed(err, message) on the loop's next turn.  Only the
 * first end counts.  err == 0 only for a clean shutdown of the primary.
 */
static void source_end(struct source *s, int err, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void
source_end(struct source *s, int err, const char *fmt, va_list ap)
{
    if (s->state == SOURCE_CLOSED)
        return;
    vsnprintf(s->close_msg, sizeof(s->close_msg), fmt, ap);
    s->close_err = err;
    if (err == 0)
        log_info(s->comp, "session ends in state %s: %s", state_names[s->state], s->close_msg);
    else
        log_warning(s->comp, "session ends in state %s: %s", state_names[s->state], s->close_msg);
    set_state(s, SOURCE_CLOSED);
    s->wake[SOURCE_WAKE_STATUS] = 0;
    s->wake[SOURCE_WAKE_DRAIN] = 0;
    wake_at(s, SOURCE_WAKE_CLOSE, clock_mono_ms());
}

/* A failure: err < 0 (anything else becomes WIRE_EPROTO). */
static void source_fail(struct source *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
source_fail(struct source *s, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    source_end(s, err < 0 ? err : WIRE_EPROTO, fmt, ap);
    va_end(ap);
}

/* The clean end: the primary shut down and everything it wrote was received. */
static void source_finish(struct source *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
source_finish(struct source *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    source_end(s, 0, fmt, ap);
    va_end(ap);
}

/* What a call on a closed session returns: its error, WIRE_ECLOSED after a clean end. */
static int
closed_err(const struct source *s)
{
    return s->close_err < 0 ? s->close_err : WIRE_ECLOSED;
}

/* ---------------------------------------------------------------------------------------- */
/* Polls                                                                                     */

/* Entering from the loop: callbacks below may call source_free(). */
static void
source_enter(struct source *s)
{
    s->depth++;
}

static void source_destroy(struct source *s);

static void
source_leave(struct source *s)
{
    if (--s->depth == 0 && s->freed)
        source_destroy(s);
}

/* True when no more work may be done on s (freed by a callback, or closed). */
static bool
source_done(const struct source *s)
{
    return s->freed || s->state == SOURCE_CLOSED;
}

static int
arm_poll(struct source *s, bool write)
{
    int fd;

    if (s->io == NULL || s->freed)
        return 0;
    fd = PQsocket(s->conn);
    if (fd < 0) {
        source_fail(s, WIRE_ECLOSED, "the connection to the primary has no socket: %s",
                    PQerrorMessage(s->conn));
        return -EBADF;
    }
    if (fdwatch_wait(s->io, fd, write) < 0) {
        source_fail(s, -EBUSY, "no io_uring SQE to poll the primary's socket");
        return -EBUSY;
    }
    return 0;
}

static void
poll_done(void *ctx, bool write, int res)
{
    struct source *s = ctx;

    source_enter(s);
    if (res < 0) {
        source_fail(s, res, "polling the primary's socket failed: %s", wire_strerror(res));
    } else if (s->state == SOURCE_CONNECTING) {
        source_step(s);
    } else if (!source_done(s)) {
        if (write) {
            /* libpq had output it could not send; it may have read input meanwhile. */
            int rc = PQflush(s->conn);

            if (rc < 0)
                source_fail(s, WIRE_ECLOSED, "sending to the primary failed: %s",
                            PQerrorMessage(s->conn));
            else if (rc == 1)
                (void)arm_poll(s, true);
        }
        if (!source_done(s))
            source_step(s);
    }
    source_leave(s);
}

/* Sends what libpq holds; polls for POLLOUT when the socket is full. */
static int
flush_out(struct source *s)
{
    int rc = PQflush(s->conn);

    if (rc < 0) {
        source_fail(s, WIRE_ECLOSED, "sending to the primary failed: %s", PQerrorMessage(s->conn));
        return WIRE_ECLOSED;
    }
    if (rc == 1)
        return arm_poll(s, true);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Commands                                                                                  */

static int send_command(struct source *s, enum source_state next, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
send_command(struct source *s, enum source_state next, const char *fmt, ...)
{
    char query[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(query, sizeof(query), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(query)) {
        source_fail(s, -EINVAL, "replication command too long");
        return -EINVAL;
    }
    PQclear(s->res);
    s->res = NULL;
    log_debug(s->comp, "sending %s", query);
    if (PQsendQuery(s->conn, query) != 1) {
        char msg[SOURCE_MSG_MAX];

        log_one_line(msg, sizeof(msg), PQerrorMessage(s->conn));
        source_fail(s, WIRE_ECLOSED, "cannot send %s: %s", query, msg);
        return WIRE_ECLOSED;
    }
    set_state(s, next);
    if (flush_out(s) < 0)
        return WIRE_ECLOSED;
    return arm_poll(s, false);
}

/* Checks that s->res is a one-row result set of at least ncols columns. */
static bool
expect_row(struct source *s, const char *what, int ncols)
{
    char msg[SOURCE_MSG_MAX];

    if (s->res == NULL) {
        source_fail(s, WIRE_EPROTO, "%s returned no result", what);
        return false;
    }
    if (PQresultStatus(s->res) != PGRES_TUPLES_OK) {
        result_error(msg, sizeof(msg), s->res, s->conn);
        source_fail(s, PQresultStatus(s->res) == PGRES_FATAL_ERROR ? WIRE_EPEER : WIRE_EPROTO,
                    "%s failed: %s", what, msg);
        return false;
    }
    if (PQntuples(s->res) != 1 || PQnfields(s->res) < ncols) {
        source_fail(s, WIRE_EPROTO, "%s returned %d rows and %d fields, expected 1 and %d", what,
                    PQntuples(s->res), PQnfields(s->res), ncols);
        return false;
    }
    return true;
}

static const char *
value(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? NULL : PQgetvalue(res, 0, col);
}

static void
identify_done(struct source *s)
{
    const char *sysid, *tli, *pos;

    if (!expect_row(s, "IDENTIFY_SYSTEM", 3))
        return;
    sysid = value(s->res, 0);
    tli = value(s->res, 1);
    pos = value(s->res, 2);
    if (parse_u64(sysid, &s->id.system_id) < 0 || parse_tli(tli, &s->id.timeline) < 0 ||
        parse_lsn(pos, &s->id.xlogpos) < 0) {
        source_fail(s, WIRE_EPROTO,
                    "IDENTIFY_SYSTEM returned an unreadable row: systemid '%s', timeline '%s', "
                    "xlogpos '%s'",
                    sysid ? sysid : "NULL", tli ? tli : "NULL", pos ? pos : "NULL");
        return;
    }
    if (s->id.timeline > 1) {
        (void)send_command(s, SOURCE_HISTORY, "TIMELINE_HISTORY %u", s->id.timeline);
        return;
    }
    (void)send_command(s, SOURCE_SHOWING, "SHOW wal_segment_size");
}

/*
 * Checks s->res as the answer to TIMELINE_HISTORY tli: one row, the file name "%08X.history"
 * and its content, whose last entry is returned.  Returns the content (owned by s->res) and
 * sets *len, or NULL after source_fail().
 */
static const char *
history_result(struct source *s, uint32_t tli, size_t *len, uint32_t *last_tli, uint64_t *last_lsn)
{
    char what[32], want[PGP_HISTFILE_BUFSZ];
    const char *name, *content;

    snprintf(what, sizeof(what), "TIMELINE_HISTORY %u", tli);
    if (!expect_row(s, what, 2))
        return NULL;
    name = value(s->res, 0);
    content = value(s->res, 1);
    (void)pgp_histfile_name(tli, want);
    if (name == NULL || strcmp(name, want) != 0) {
        source_fail(s, WIRE_EPROTO, "%s returned the file name '%s', expected '%s'", what,
                    name != NULL ? name : "NULL", want);
        return NULL;
    }
    if (content == NULL) {
        source_fail(s, WIRE_EPROTO, "%s returned no content", what);
        return NULL;
    }
    *len = (size_t)PQgetlength(s->res, 0, 1);
    if (history_last_entry(content, *len, last_tli, last_lsn) < 0 || *last_tli >= tli) {
        source_fail(s, WIRE_EPROTO, "%s returned %zu bytes that are not a history file", what,
                    *len);
        return NULL;
    }
    return content;
}

/* The primary's own history, for the owner to give an empty sink before any WAL. */
static void
history_done(struct source *s)
{
    const char *content;
    uint32_t parent;
    uint64_t sw;
    size_t len;

    content = history_result(s, s->id.timeline, &len, &parent, &sw);
    if (content == NULL)
        return;
    s->history = malloc(len + 1);
    if (s->history == NULL) {
        source_fail(s, -ENOMEM, "no memory for timeline %u's history (%zu bytes)", s->id.timeline,
                    len);
        return;
    }
    memcpy(s->history, content, len);
    s->history[len] = '\0';
    s->id.history = s->history;
    s->id.history_len = len;
    log_info(s->comp, "the primary's timeline %u forked off timeline %u at %X/%X", s->id.timeline,
             parent, LSN_ARGS(sw));
    (void)send_command(s, SOURCE_SHOWING, "SHOW wal_segment_size");
}

static void
show_done(struct source *s)
{
    const char *v;

    if (!expect_row(s, "SHOW wal_segment_size", 1))
        return;
    v = value(s->res, 0);
    if (parse_seg_size(v, &s->id.seg_size) < 0) {
        source_fail(s, WIRE_EPROTO,
                    "SHOW wal_segment_size returned '%s', not a power of two from 1MB to 1GB",
                    v ? v : "NULL");
        return;
    }
    (void)send_command(s, SOURCE_READING_SLOT, "READ_REPLICATION_SLOT \"%s\"", s->slot);
}

static void
read_slot_done(struct source *s)
{
    const char *type, *restart;

    if (!expect_row(s, "READ_REPLICATION_SLOT", 3))
        return;
    type = value(s->res, 0);
    restart = value(s->res, 1);
    if (type == NULL) {
        if (s->slot_created) {
            source_fail(s, WIRE_EPROTO,
                        "replication slot \"%s\" does not exist right after it was created",
                        s->slot);
            return;
        }
        log_info(s->comp, "replication slot \"%s\" does not exist: creating it", s->slot);
        (void)send_command(s, SOURCE_CREATING_SLOT,
                           "CREATE_REPLICATION_SLOT \"%s\" PHYSICAL RESERVE_WAL", s->slot);
        return;
    }
    if (strcmp(type, "physical") != 0) {
        source_fail(s, WIRE_EPEER, "replication slot \"%s\" is a %s slot, not a physical one",
                    s->slot, type);
        return;
    }
    s->id.slot_restart_lsn = 0;
    if (restart != NULL && parse_lsn(restart, &s->id.slot_restart_lsn) < 0) {
        source_fail(s, WIRE_EPROTO, "READ_REPLICATION_SLOT returned restart_lsn '%s'", restart);
        return;
    }
    PQclear(s->res);
    s->res = NULL;
    set_state(s, SOURCE_IDENTIFIED);
    log_info(s->comp,
             "primary system %" PRIu64 ", timeline %u, flushed to %X/%X, %u MB segments; "
             "slot \"%s\" restart_lsn %X/%X",
             s->id.system_id, s->id.timeline, LSN_ARGS(s->id.xlogpos), s->id.seg_size >> 20,
             s->slot, LSN_ARGS(s->id.slot_restart_lsn));
    /* Keep a read poll armed while idle, so that a lost connection is noticed. */
    if (arm_poll(s, false) < 0)
        return;
    s->ops->on_identified(s->ctx, &s->id);
}

static void
create_slot_done(struct source *s)
{
    char msg[SOURCE_MSG_MAX];
    const char *sqlstate;

    if (s->res == NULL) {
        source_fail(s, WIRE_EPROTO, "CREATE_REPLICATION_SLOT returned no result");
        return;
    }
    sqlstate = PQresultErrorField(s->res, PG_DIAG_SQLSTATE);
    if (PQresultStatus(s->res) != PGRES_TUPLES_OK &&
        !(sqlstate != NULL && strcmp(sqlstate, PGP_SQLSTATE_DUPLICATE_OBJECT) == 0)) {
        result_error(msg, sizeof(msg), s->res, s->conn);
        source_fail(s, WIRE_EPEER, "CREATE_REPLICATION_SLOT \"%s\" PHYSICAL failed: %s", s->slot,
                    msg);
        return;
    }
    if (PQresultStatus(s->res) == PGRES_TUPLES_OK)
        log_info(s->comp, "created physical replication slot \"%s\" with WAL reserved", s->slot);
    else
        log_info(s->comp, "replication slot \"%s\" was created concurrently", s->slot);
    s->slot_created = true;
    (void)send_command(s, SOURCE_READING_SLOT, "READ_REPLICATION_SLOT \"%s\"", s->slot);
}

/* The result set that ends a historic timeline: next_tli int8, next_tli_startpos text. */
static bool
read_next_tli(struct source *s, const PGresult *res)
{
    if (s->have_next_tli || PQntuples(res) != 1 || PQnfields(res) < 2 ||
        parse_tli(value(res, 0), &s->next_tli) < 0 ||
        parse_lsn(value(res, 1), &s->next_tli_start) < 0) {
        source_fail(s, WIRE_EPROTO,
                    "unreadable next-timeline result at the end of timeline %u (%d rows, %d "
                    "fields%s)",
                    s->start_tli, PQntuples(res), PQnfields(res),
                    s->have_next_tli ? ", a second one" : "");
        return false;
    }
    s->have_next_tli = true;
    return true;
}

/*
 * The timeline streamed so far ended (after COPY, or at once when the start was its switch
 * point) and the next one is known: check both as receivelog.c does, then fetch its history.
 */
static void
timeline_ended(struct source *s)
{
    uint64_t received = s->next_lsn;

    if (s->next_tli <= s->start_tli) {
        source_fail(s, WIRE_EPROTO, "the primary says timeline %u follows timeline %u", s->next_tli,
                    s->start_tli);
        return;
    }
    if (s->next_tli_start < s->start_lsn || s->next_tli_start > received) {
        source_fail(s, WIRE_EPROTO,
                    "the primary streamed timeline %u from %X/%X to %X/%X but says timeline %u "
                    "begins at %X/%X",
                    s->start_tli, LSN_ARGS(s->start_lsn), LSN_ARGS(received), s->next_tli,
                    LSN_ARGS(s->next_tli_start));
        return;
    }
    log_info(s->comp, "timeline %u ended at %X/%X; timeline %u begins there", s->start_tli,
             LSN_ARGS(s->next_tli_start), s->next_tli);
    if (received > s->next_tli_start)
        log_info(s->comp,
                 "the %" PRIu64 " bytes of timeline %u received past %X/%X are not part of "
                 "timeline %u's history",
                 received - s->next_tli_start, s->start_tli, LSN_ARGS(s->next_tli_start),
                 s->next_tli);
    if (s->ops->on_timeline == NULL) {
        source_fail(s, WIRE_ECLOSED,
                    "the primary ended timeline %u at %X/%X; timeline %u follows (this session "
                    "does not follow timeline switches)",
                    s->start_tli, LSN_ARGS(s->next_tli_start), s->next_tli);
        return;
    }
    (void)send_command(s, SOURCE_NEXT_HISTORY, "TIMELINE_HISTORY %u", s->next_tli);
}

/* next_tli's history is in: on_timeline(), then streaming on next_tli. */
static void
next_history_done(struct source *s)
{
    uint32_t old_tli = s->start_tli, parent;
    uint64_t sw = s->next_tli_start, last_sw;
    const char *content;
    size_t len;

    content = history_result(s, s->next_tli, &len, &parent, &last_sw);
    if (content == NULL)
        return;
    if (parent != old_tli || last_sw != sw) {
        source_fail(s, WIRE_EPROTO,
                    "timeline %u's history ends with timeline %u forking off at %X/%X, but the "
                    "primary ended timeline %u at %X/%X",
                    s->next_tli, parent, LSN_ARGS(last_sw), old_tli, LSN_ARGS(sw));
        return;
    }
    /* The new timeline's stream before the callback: source_received_lsn() and reports made
     * inside it are about the new timeline. */
    s->start_tli = s->next_tli;
    s->start_lsn = sw - sw % s->id.seg_size;
    s->next_lsn = s->start_lsn;
    s->received_floor = sw;
    s->end_of_timeline = false;
    s->have_next_tli = false;
    s->ops->on_timeline(s->ctx, s->start_tli, sw, content, len);
    if (source_done(s))
        return;
    log_info(s->comp, "following timeline %u from %X/%X (the segment of its switch point %X/%X)",
             s->start_tli, LSN_ARGS(s->start_lsn), LSN_ARGS(sw));
    (void)send_command(s, SOURCE_STARTING,
                       "START_REPLICATION SLOT \"%s\" PHYSICAL %X/%X TIMELINE %u", s->slot,
                       LSN_ARGS(s->start_lsn), s->start_tli);
}

/* START_REPLICATION answered something other than COPY_BOTH, and every result is in. */
static void
start_done(struct source *s)
{
    char msg[SOURCE_MSG_MAX];

    if (s->res == NULL) {
        source_fail(s, WIRE_EPROTO, "START_REPLICATION returned no result");
        return;
    }
    switch (PQresultStatus(s->res)) {
    case PGRES_TUPLES_OK:
        /* The start is the switch point of a historic timeline: nothing to stream on it. */
        log_info(s->comp, "timeline %u ends at the start position %X/%X", s->start_tli,
                 LSN_ARGS(s->start_lsn));
        if (read_next_tli(s, s->res))
            timeline_ended(s);
        break;
    case PGRES_COMMAND_OK:
        source_fail(s, WIRE_ECLOSED,
                    "START_REPLICATION %X/%X TIMELINE %u: the primary has no WAL to stream (%s)",
                    LSN_ARGS(s->start_lsn), s->start_tli, PQcmdStatus(s->res));
        break;
    default:
        result_error(msg, sizeof(msg), s->res, s->conn);
        source_fail(s, WIRE_EPEER,
                    "START_REPLICATION SLOT \"%s\" PHYSICAL %X/%X TIMELINE %u failed: %s", s->slot,
                    LSN_ARGS(s->start_lsn), s->start_tli, msg);
        break;
    }
}

/* The server ended the COPY and every result is in. */
static void
ending_done(struct source *s)
{
    if (s->end_of_timeline && s->have_next_tli)
        timeline_ended(s);
    else if (s->end_of_timeline)
        source_fail(s, WIRE_EPROTO,
                    "the primary ended timeline %u at %X/%X without naming the next timeline",
                    s->start_tli, LSN_ARGS(s->next_lsn));
    else
        source_fail(s, WIRE_ECLOSED, "the primary ended the replication stream at %X/%X",
                    LSN_ARGS(s->next_lsn));
}

static void stream_begin(struct source *s);

/*
 * Handles one result of the command in progress.  Returns false when no more results are to be
 * read now (streaming started, or the session ended).
 */
static bool
take_result(struct source *s, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    char msg[SOURCE_MSG_MAX];

    if (s->state == SOURCE_STARTING && st == PGRES_COPY_BOTH) {
        PQclear(res);
        stream_begin(s);
        return false;
    }
    if (s->state == SOURCE_STARTING && st == PGRES_FATAL_ERROR) {
        result_error(msg, sizeof(msg), res, s->conn);
        PQclear(res);
        source_fail(s, WIRE_EPEER,
                    "START_REPLICATION SLOT \"%s\" PHYSICAL %X/%X TIMELINE %u failed: %s", s->slot,
                    LSN_ARGS(s->start_lsn), s->start_tli, msg);
        return false;
    }
    if (s->state == SOURCE_ENDING) {
        switch (st) {
        case PGRES_COPY_IN:
            /* CopyDone from the server: the end of a historic timeline.  Answer CopyDone. */
            PQclear(res);
            s->end_of_timeline = true;
            log_info(s->comp, "the primary ended timeline %u at %X/%X", s->start_tli,
                     LSN_ARGS(s->next_lsn));
            if (PQputCopyEnd(s->conn, NULL) != 1) {
                log_one_line(msg, sizeof(msg), PQerrorMessage(s->conn));
                source_fail(s, WIRE_ECLOSED, "cannot send CopyDone: %s", msg);
                return false;
            }
            return flush_out(s) == 0;
        case PGRES_TUPLES_OK:
            if (!s->end_of_timeline) {
                PQclear(res);
                source_fail(s, WIRE_EPROTO, "a result set after the stream, without CopyDone");
                return false;
            }
            if (!read_next_tli(s, res)) {
                PQclear(res);
                return false;
            }
            PQclear(res);
            return true;
        case PGRES_COMMAND_OK:
            if (!s->end_of_timeline) {
                /* CommandComplete without CopyDone: WalSndDone.  The primary is shutting
                 * down (its postmaster told the walsender after the shutdown checkpoint), and
                 * the walsender waited until our reported flush reached all it had sent. */
                source_finish(s,
                              "the primary shut down cleanly at %X/%X (the end of its WAL, all "
                              "received; the stream ended with \"%s\")",
                              LSN_ARGS(s->next_lsn), PQcmdStatus(res));
                PQclear(res);
                return false;
            }
            PQclear(res);
            return true;
        default:
            result_error(msg, sizeof(msg), res, s->conn);
            PQclear(res);
            if (s->next_lsn == s->start_lsn)
                /* An error before any WAL: START_REPLICATION's own (e.g. start ahead of the
                 * flush position, which PostgreSQL reports after CopyBothResponse). */
                source_fail(s, WIRE_EPEER,
                            "START_REPLICATION SLOT \"%s\" PHYSICAL %X/%X TIMELINE %u failed: %s",
                            s->slot, LSN_ARGS(s->start_lsn), s->start_tli, msg);
            else
                source_fail(s, WIRE_EPEER, "the primary ended the replication stream at %X/%X: %s",
                            LSN_ARGS(s->next_lsn), msg);
            return false;
        }
    }
    /* Keep the first result, or the first error. */
    if (s->res == NULL ||
        (PQresultStatus(s->res) != PGRES_FATAL_ERROR && st == PGRES_FATAL_ERROR)) {
        PQclear(s->res);
        s->res = res;
    } else {
        PQclear(res);
    }
    return true;
}

/* Every result of the command in progress is in: the next step. */
static void
command_done(struct source *s)
{
    switch (s->state) {
    case SOURCE_IDENTIFYING:
        identify_done(s);
        break;
    case SOURCE_HISTORY:
        history_done(s);
        break;
    case SOURCE_SHOWING:
        show_done(s);
        break;
    case SOURCE_READING_SLOT:
        read_slot_done(s);
        break;
    case SOURCE_CREATING_SLOT:
        create_slot_done(s);
        break;
    case SOURCE_STARTING:
        start_done(s);
        break;
    case SOURCE_ENDING:
        ending_done(s);
        break;
    case SOURCE_NEXT_HISTORY:
        next_history_done(s);
        break;
    default:
        break;
    }
}

/*
 * Reads results as far as they are available without blocking.  When the connection is gone,
 * what the server sent before closing is still taken (a clean shutdown's CommandComplete, a
 * FATAL error): only then is the session lost.
 */
static void
command_step(struct source *s)
{
    char msg[SOURCE_MSG_MAX];
    bool lost = PQconsumeInput(s->conn) != 1;

    if (lost)
        log_one_line(msg, sizeof(msg), PQerrorMessage(s->conn));
    while (!source_done(s) && s->state != SOURCE_IDENTIFIED && s->state != SOURCE_STREAMING &&
           !PQisBusy(s->conn)) {
        PGresult *res = PQgetResult(s->conn);

        if (res == NULL) {
            command_done(s); /* may send the next command, call on_identified... */
            continue;
        }
        /* libpq's own error for the lost connection: no SQLSTATE, nothing from the server. */
        if (lost && PQresultStatus(res) == PGRES_FATAL_ERROR &&
            PQresultErrorField(res, PG_DIAG_SQLSTATE) == NULL) {
            PQclear(res);
            break;
        }
        if (!take_result(s, res))
            return;
    }
    if (lost) {
        source_fail(s, WIRE_ECLOSED, "connection to the primary lost while %s: %s",
                    state_names[s->state], msg);
        return;
    }
    if (!source_done(s) && s->state != SOURCE_STREAMING)
        (void)arm_poll(s, false);
}

/* ---------------------------------------------------------------------------------------- */
/* Connecting                                                                                */

static void
connected(struct source *s)
{
    const char *idt = PQparameterStatus(s->conn, "integer_datetimes");
    int version = PQserverVersion(s->conn);

    if (version < SOURCE_MIN_SERVER_VERSION) {
        source_fail(s, -ENOTSUP,
                    "the primary runs PostgreSQL server version %d; walmirror needs 15 or later",
                    version);
        return;
    }
    if (idt == NULL || strcmp(idt, "on") != 0) {
        source_fail(s, -ENOTSUP, "the primary does not use integer datetimes");
        return;
    }
    if (PQsetnonblocking(s->conn, 1) != 0) {
        char msg[SOURCE_MSG_MAX];

        log_one_line(msg, sizeof(msg), PQerrorMessage(s->conn));
        source_fail(s, WIRE_ECLOSED, "cannot make the connection non-blocking: %s", msg);
        return;
    }
    log_info(s->comp, "connected to PostgreSQL %d.%d as application_name \"%s\"", version / 10000,
             version % 10000, s->app_name);
    (void)send_command(s, SOURCE_IDENTIFYING, "IDENTIFY_SYSTEM");
}

static void
connect_step(struct source *s)
{
    char msg[SOURCE_MSG_MAX];

    s->connect_wait = PQconnectPoll(s->conn);
    switch (s->connect_wait) {
    case PGRES_POLLING_READING:
        (void)arm_poll(s, false);
        break;
    case PGRES_POLLING_WRITING:
        (void)arm_poll(s, true);
        break;
    case PGRES_POLLING_OK:
        connected(s);
        break;
    default:
        log_one_line(msg, sizeof(msg), PQerrorMessage(s->conn));
        source_fail(s, -ENOTCONN, "cannot connect to the primary: %s", msg);
        break;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Streaming                                                                                 */

/* Sends an 'r' if the effective triple changed (or force).  Returns 0 or a negative errno. */
static int
send_status(struct source *s, bool force)
{
    uint8_t msg[PGP_STANDBY_STATUS_LEN];
    struct wbuf w = wbuf_init(msg, sizeof(msg));
    uint64_t wr, fl, ap;
    int rc;

    if (s->state != SOURCE_STREAMING)
        return 0;
    wr = s->rep_write != 0 ? s->rep_write : s->start_lsn;
    fl = s->rep_flush != 0 ? s->rep_flush : s->start_lsn;
    ap = s->rep_apply != 0 ? s->rep_apply : s->start_lsn;
    if (!force && !s->status_pending && s->status_sent && wr == s->sent_write &&
        fl == s->sent_flush && ap == s->sent_apply)
        return 0;
    if (!wbuf_put_u8(&w, 'r') || !wbuf_put_u64be(&w, wr) || !wbuf_put_u64be(&w, fl) ||
        !wbuf_put_u64be(&w, ap) || !wbuf_put_u64be(&w, (uint64_t)pgp_now()) ||
        !wbuf_put_u8(&w, 0) || w.len != sizeof(msg)) {
        source_fail(s, -EFAULT, "internal error building a standby status update");
        return -EFAULT;
    }
    rc = PQputCopyData(s->conn, (const char *)msg, (int)sizeof(msg));
    if (rc < 0) {
        char err[SOURCE_MSG_MAX];

        log_one_line(err, sizeof(err), PQerrorMessage(s->conn));
        source_fail(s, WIRE_ECLOSED, "cannot send a standby status update: %s", err);
        return WIRE_ECLOSED;
    }
    if (rc == 0) {
        /* libpq's buffer is full (non-blocking): retry once the socket drains. */
        s->status_pending = true;
        return arm_poll(s, true);
    }
    s->status_pending = false;
    s->status_sent = true;
    s->sent_write = wr;
    s->sent_flush = fl;
    s->sent_apply = ap;
    s->last_status_ms = clock_mono_ms();
    log_debug(s->comp, "sent status write %X/%X flush %X/%X apply %X/%X", LSN_ARGS(wr),
              LSN_ARGS(fl), LSN_ARGS(ap));
    return flush_out(s);
}

static void
handle_copydata(struct source *s, const uint8_t *p, size_t len)
{
    struct pgp_primary_msg m;
    struct pgp_err e;

    if (pgp_parse_primary_copydata(p, len, &m, &e) < 0) {
        source_fail(s, WIRE_EPROTO, "bad message from the walsender: %s", e.msg);
        return;
    }
    s->wal_end = m.wal_end;
    if (m.kind == 'k') {
        if (m.reply_requested)
            (void)send_status(s, true);
        return;
    }
    if (m.data_start != s->next_lsn) {
        source_fail(s, WIRE_EPROTO,
                    "XLogData starts at %X/%X but %X/%X was expected: %s in the WAL stream",
                    LSN_ARGS(m.data_start), LSN_ARGS(s->next_lsn),
                    m.data_start > s->next_lsn ? "a gap" : "an overlap");
        return;
    }
    if (m.data_len == 0)
        return;
    if (m.data_len > UINT64_MAX - s->next_lsn) {
        source_fail(s, WIRE_EPROTO, "XLogData at %X/%X runs past the end of the LSN space",
                    LSN_ARGS(m.data_start));
        return;
    }
    s->next_lsn += m.data_len;
    s->wal_since_drained = true;
    s->ops->on_wal(s->ctx, m.data_start, m.data, m.data_len);
}

/* The server ended the COPY (-1 from PQgetCopyData): read its final results. */
static void
stream_end(struct source *s)
{
    log_info(s->comp, "the primary ended the COPY at %X/%X", LSN_ARGS(s->next_lsn));
    set_state(s, SOURCE_ENDING);
    s->wake[SOURCE_WAKE_STATUS] = 0;
    s->wake[SOURCE_WAKE_DRAIN] = 0;
    timer_update(s);
    command_step(s);
}

/*
 * Delivers what libpq has and what the socket holds, up to SOURCE_READ_BUDGET bytes; then
 * on_drained (if WAL came since the last one) and the read poll re-armed.
 */
static void
stream_read(struct source *s)
{
    size_t budget = SOURCE_READ_BUDGET;
    bool consumed = false;
    char msg[SOURCE_MSG_MAX];

    s->wake[SOURCE_WAKE_DRAIN] = 0;
    while (!s->paused) {
        char *buf = NULL;
        int n = PQgetCopyData(s->conn, &buf, 1);

        if (n > 0) {
            handle_copydata(s, (const uint8_t *)buf, (size_t)n);
            PQfreemem(buf);
            consumed = false;
            if (source_done(s) || s->state != SOURCE_STREAMING)
                return;
            if ((size_t)n >= budget) {
                /* Let the rest of the loop run; libpq may hold more than the socket shows. */
                wake_at(s, SOURCE_WAKE_DRAIN, clock_mono_ms());
                return;
            }
            budget -= (size_t)n;
            continue;
        }
        if (n == 0) {
            if (consumed)
                break; /* the socket had nothing more */
            consumed = true;
            if (PQconsumeInput(s->conn) != 1) {
                /* Deliver what was buffered before the failure, then report it. */
                while ((n = PQgetCopyData(s->conn, &buf, 1)) > 0) {
                    handle_copydata(s, (const uint8_t *)buf, (size_t)n);
                    PQfreemem(buf);
                    if (source_done(s))
                        return;
                }
                if (n == -1) {
                    stream_end(s);
                    return;
                }
                log_one_line(msg, sizeof(msg), PQerrorMessage(s->conn));
                source_fail(s, WIRE_ECLOSED, "connection to the primary lost at %X/%X: %s",
                            LSN_ARGS(s->next_lsn), msg);
                return;
            }
            continue;
        }
        if (n == -1) {
            stream_end(s);
            return;
        }
        log_one_line(msg, sizeof(msg), PQerrorMessage(s->conn));
        source_fail(s, WIRE_ECLOSED, "reading the replication stream failed at %X/%X: %s",
                    LSN_ARGS(s->next_lsn), msg);
        return;
    }
    if (s->wal_since_drained) {
        s->wal_since_drained = false;
        s->ops->on_drained(s->ctx);
        if (source_done(s))
            return;
    }
    if (!s->paused)
        (void)arm_poll(s, false);
}

static void
stream_begin(struct source *s)
{
    set_state(s, SOURCE_STREAMING);
    log_info(s->comp, "streaming from %X/%X on timeline %u", LSN_ARGS(s->start_lsn), s->start_tli);
    /* First 'r' at once, as the walreceiver does: the start position unless told better. */
    if (send_status(s, true) < 0)
        return;
    wake_at(s, SOURCE_WAKE_STATUS, s->last_status_ms + SOURCE_STATUS_INTERVAL_MS);
    /* libpq may already hold CopyData that arrived with CopyBothResponse. */
    stream_read(s);
}

/* ---------------------------------------------------------------------------------------- */
/* Dispatch                                                                                  */

/* Does whatever the state calls for when the socket (or libpq's buffer) may have news. */
static void
source_step(struct source *s)
{
    char msg[SOURCE_MSG_MAX];

    switch (s->state) {
    case SOURCE_CONNECTING:
        connect_step(s);
        break;
    case SOURCE_IDENTIFIED:
        /* Nothing is expected; only notice a lost connection (or stray notices). */
        if (PQconsumeInput(s->conn) != 1) {
            log_one_line(msg, sizeof(msg), PQerrorMessage(s->conn));
            source_fail(s, WIRE_ECLOSED, "connection to the primary lost while idle: %s", msg);
            return;
        }
        (void)arm_poll(s, false);
        break;
    case SOURCE_STREAMING:
        if (s->status_pending && send_status(s, true) < 0)
            return;
        if (!s->paused)
            stream_read(s);
        break;
    case SOURCE_CLOSED:
        break;
    default:
        command_step(s);
        break;
    }
}

static void
timer_fire(void *ctx)
{
    struct source *s = ctx;
    uint64_t now = clock_mono_ms();

    s->timer_at = 0;
    source_enter(s);
    if (s->wake[SOURCE_WAKE_DRAIN] != 0 && s->wake[SOURCE_WAKE_DRAIN] <= now) {
        s->wake[SOURCE_WAKE_DRAIN] = 0;
        if (s->state == SOURCE_STREAMING && !s->paused)
            stream_read(s);
    }
    if (!s->freed && s->wake[SOURCE_WAKE_STATUS] != 0 && s->wake[SOURCE_WAKE_STATUS] <= now &&
        s->state == SOURCE_STREAMING) {
        if (now - s->last_status_ms >= SOURCE_STATUS_INTERVAL_MS)
            (void)send_status(s, true);
        if (s->state == SOURCE_STREAMING) {
            uint64_t next = s->last_status_ms + SOURCE_STATUS_INTERVAL_MS;

            /* Not sent (libpq's buffer full): retry in a second, not in a tight loop. */
            s->wake[SOURCE_WAKE_STATUS] = next > now ? next : now + 1000;
        }
    }
    if (!s->freed && s->wake[SOURCE_WAKE_CLOSE] != 0 && s->wake[SOURCE_WAKE_CLOSE] <= now) {
        s->wake[SOURCE_WAKE_CLOSE] = 0;
        if (!s->close_delivered) {
            s->close_delivered = true;
            s->ops->on_closed(s->ctx, s->close_err, s->close_msg);
        }
    }
    if (!s->freed)
        timer_update(s);
    source_leave(s);
}

static const struct fdwatch_ops io_ops = {
    .on_io = poll_done,
    .on_timer = timer_fire,
};

/* ---------------------------------------------------------------------------------------- */
/* API                                                                                       */

/* Builds the replication connection from conninfo and starts connecting. */
static int
start_connect(struct source *s, const char *conninfo)
{
    PQconninfoOption *opts, *o;
    const char **keys, **vals;
    char *errmsg = NULL;
    size_t n = 0;

    opts = PQconninfoParse(conninfo, &errmsg);
    if (opts == NULL) {
        char msg[SOURCE_MSG_MAX];

        log_one_line(msg, sizeof(msg), errmsg != NULL ? errmsg : "out of memory");
        log_error(s->comp, "invalid pg_conninfo: %s", msg);
        PQfreemem(errmsg);
        return errmsg != NULL ? -EINVAL : -ENOMEM;
    }
    for (o = opts; o->keyword != NULL; o++)
        n++;
    keys = calloc(n + 4, sizeof(*keys));
    vals = calloc(n + 4, sizeof(*vals));
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        PQconninfoFree(opts);
        return -ENOMEM;
    }
    n = 0;
    for (o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || strcmp(o->keyword, "replication") == 0 ||
            strcmp(o->keyword, "dbname") == 0 || strcmp(o->keyword, "application_name") == 0)
            continue;
        keys[n] = o->keyword;
        vals[n++] = o->val;
    }
    /* As libpqrcv_connect: physical replication ignores the database, but pg_hba.conf
     * matches "replication" there. */
    keys[n] = "replication";
    vals[n++] = "true";
    keys[n] = "dbname";
    vals[n++] = "replication";
    keys[n] = "application_name";
    vals[n++] = s->app_name;
    keys[n] = NULL;
    vals[n] = NULL;
    s->conn = PQconnectStartParams(keys, vals, 0);
    free(keys);
    free(vals);
    PQconninfoFree(opts);
    if (s->conn == NULL)
        return -ENOMEM;
    PQsetNoticeProcessor(s->conn, notice_processor, s);
    set_state(s, SOURCE_CONNECTING);
    if (PQstatus(s->conn) == CONNECTION_BAD) {
        char msg[SOURCE_MSG_MAX];

        log_one_line(msg, sizeof(msg), PQerrorMessage(s->conn));
        source_fail(s, -ENOTCONN, "cannot connect to the primary: %s", msg);
        return 0;
    }
    /* Before the first PQconnectPoll, behave as if it asked for writability. */
    s->connect_wait = PGRES_POLLING_WRITING;
    (void)arm_poll(s, true);
    return 0;
}

int
source_new(struct source **out, struct wio_loop *loop, const char *conninfo, const char *slot_name,
           const char *application_name, const struct source_ops *ops, void *ctx)
{
    struct pgp_err e;
    struct source *s;
    int rc;

    *out = NULL;
    if (loop == NULL || conninfo == NULL || slot_name == NULL || application_name == NULL ||
        application_name[0] == '\0' || ops == NULL || ops->on_identified == NULL ||
        ops->on_wal == NULL || ops->on_drained == NULL || ops->on_closed == NULL)
        return -EINVAL;
    if (pgp_slot_name_check(slot_name, &e) < 0) {
        log_error("source", "invalid slot name \"%s\": %s", slot_name, e.msg);
        return -EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->app_name = strdup(application_name);
    if (s->app_name == NULL || fdwatch_new(&s->io, loop, &io_ops, s) < 0) {
        free(s->app_name);
        free(s);
        return -ENOMEM;
    }
    s->loop = loop;
    s->ops = ops;
    s->ctx = ctx;
    snprintf(s->slot, sizeof(s->slot), "%s", slot_name);
    snprintf(s->comp, sizeof(s->comp), "source[%s]", slot_name);
    s->state = SOURCE_CONNECTING;
    rc = start_connect(s, conninfo);
    if (rc < 0) {
        source_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int
source_start(struct source *s, uint64_t start_lsn, uint32_t tli)
{
    uint64_t lsn;

    if (s == NULL || s->freed)
        return -EINVAL;
    if (s->state == SOURCE_CLOSED)
        return closed_err(s);
    if (s->state != SOURCE_IDENTIFIED)
        return -EINVAL;
    lsn = start_lsn != 0                ? start_lsn
          : s->id.slot_restart_lsn != 0 ? s->id.slot_restart_lsn
                                        : s->id.xlogpos;
    lsn -= lsn % s->id.seg_size;
    s->start_lsn = lsn;
    s->next_lsn = lsn;
    s->received_floor = 0;
    s->start_tli = tli != 0 ? tli : s->id.timeline;
    log_info(s->comp, "requesting WAL from %X/%X on timeline %u (asked for %X/%X)", LSN_ARGS(lsn),
             s->start_tli, LSN_ARGS(start_lsn));
    return send_command(s, SOURCE_STARTING,
                        "START_REPLICATION SLOT \"%s\" PHYSICAL %X/%X TIMELINE %u", s->slot,
                        LSN_ARGS(lsn), s->start_tli);
}

int
source_report(struct source *s, uint64_t write_lsn, uint64_t flush_lsn, uint64_t apply_lsn)
{
    if (s == NULL || s->freed)
        return -EINVAL;
    if (s->state == SOURCE_CLOSED)
        return closed_err(s);
    s->rep_write = write_lsn;
    s->rep_flush = flush_lsn;
    s->rep_apply = apply_lsn;
    return send_status(s, false);
}

void
source_pause(struct source *s, bool paused)
{
    if (s == NULL || s->freed || s->paused == paused)
        return;
    s->paused = paused;
    log_debug(s->comp, "%s reading at %X/%X", paused ? "pausing" : "resuming",
              LSN_ARGS(s->next_lsn));
    /* Resume: libpq may hold data the socket will not signal again; read it from the loop. */
    if (!paused && s->state == SOURCE_STREAMING)
        wake_at(s, SOURCE_WAKE_DRAIN, clock_mono_ms());
}

uint64_t
source_received_lsn(const struct source *s)
{
    if (s == NULL)
        return 0;
    return s->next_lsn > s->received_floor ? s->next_lsn : s->received_floor;
}

/* Detaches the ring's references: the watch frees itself once the ring is done with it. */
static void
source_release_io(struct source *s)
{
    fdwatch_release(s->io);
    s->io = NULL;
}

static void
source_destroy(struct source *s)
{
    PQclear(s->res);
    if (s->conn != NULL)
        PQfinish(s->conn);
    free(s->history);
    free(s->app_name);
    free(s);
}

void
source_free(struct source *s)
{
    if (s == NULL || s->freed)
        return;
    log_debug(s->comp, "freed in state %s", state_names[s->state]);
    s->freed = true;
    source_release_io(s);
    if (s->depth == 0)
        source_destroy(s);
}
