/*
 * walsrv.c - the WAL server: PostgreSQL 15's walsender protocol served from the spool; see
 * walsrv.h for the contract.
 *
 * Connections
 *   Each accepted TCP connection is a struct walsrv_conn with an explicit state:
 *
 *     STARTUP --StartupMessage (replication=true)--> IDLE --START_REPLICATION--> STREAMING
 *        |  SSLRequest / GSSENCRequest: 'N', stay       ^  ^                       |     |
 *        |                                              |  +-- client CopyDone ----+     |
 *        |                                              |        end of the streamed     |
 *        |                                              |        timeline: CopyDone      |
 *        |                                              +-- client CopyDone -- ENDING <--+
 *        +--- CancelRequest, FATAL error, Terminate, EOF, timeout (any state) ---> CLOSED
 *
 *   Every transition is logged at debug level with the connection's prefix
 *   "walsrv[ADDR:PORT app=NAME]".  Authentication is trust: AuthenticationOk for any user.
 *   The WAL server is meant to listen on the standby host's loopback interface only (it serves
 *   the local standby); walsrv_new warns when it is bound elsewhere.
 *
 *   Input is buffered per connection and parsed only through pgproto.h.  Errors that
 *   PostgreSQL reports without ending the session (a bad or unsupported replication command)
 *   get ErrorResponse + ReadyForQuery; framing errors, start-up errors and messages out of
 *   place get a FATAL ErrorResponse and the connection is closed once it is sent.
 *
 * Streaming
 *   After START_REPLICATION the client gets CopyBothResponse once, then XLogData messages that
 *   are contiguous from the requested start, each at most WALSRV_MAX_CHUNK bytes of WAL and,
 *   unless it ends at the spool's flush position, ending on an XLOG_BLCKSZ page boundary (as
 *   XLogSendPhysical does).  Only durable WAL is sent: everything below spool_flush_lsn().
 *   WAL is read with spool_read (a pread of page-cached data) straight into the stream's send
 *   queue.  Back-pressure: no more WAL is queued while a stream holds WALSRV_HIGH_WATER bytes
 *   not yet taken by the kernel; its on_drained callback resumes the pump.  New WAL is pushed
 *   when the owner calls walsrv_wal_durable().
 *
 *   One server-wide tick (WALSRV_TICK_MS) drives the timers of every connection: a keepalive
 *   after WALSRV_KEEPALIVE_MS without anything sent, a keepalive asking for a reply after
 *   WALSRV_PING_MS without anything received, termination after WALSRV_TIMEOUT_MS of silence
 *   (wal_sender_timeout), and the start-up timeout (authentication_timeout).
 *
 *   The standby's 'r' messages go to ops->on_reply unchanged (write, flush, apply as reported)
 *   and its 'h' messages to ops->on_feedback.  The spool is told the oldest position a
 *   streaming client still needs (its reported flush, else its start) with
 *   spool_set_retain_lsn.
 *
 * Timelines (walsender.c's StartReplication and XLogSendPhysical, as a cascading walsender)
 *   Every stream has a timeline: the one START_REPLICATION named, else the spool's.  What may be
 *   sent is bounded by the spool's flush position and by where that timeline ends in the
 *   spool's history (spool_timeline_end); the bound is computed at every pump, so a timeline
 *   that becomes historic while a client streams it (the spool switched: the owner calls
 *   walsrv_timeline_switched, and the next walsrv_wal_durable or tick would notice too) ends at
 *   its switch point for that client.  Once everything up to the switch point is queued the
 *   server sends CopyDone and goes to ENDING: no more XLogData nor keepalives (libpq would not
 *   expect CopyData after CopyDone), 'r' and 'h' still processed, the replication timeout still
 *   applies.  The client's CopyDone then gets the next timeline's result set (next_tli,
 *   next_tli_startpos = the switch point), CommandComplete START_STREAMING and
 *   START_REPLICATION, ReadyForQuery, and the session is IDLE again for the walreceiver's next
 *   IDENTIFY_SYSTEM / TIMELINE_HISTORY / START_REPLICATION.  A client CopyDone while STREAMING
 *   is answered with CopyDone and, if the stream's timeline is historic by then, the same result
 *   set.  START_REPLICATION on a historic timeline exactly at its switch point enters no COPY:
 *   the result set, both CommandCompletes, ReadyForQuery.  TIMELINE_HISTORY serves the spool's
 *   history files (spool_read_history).
 *
 * Bounds
 *   A connection buffers at most WALSRV_IN_LIMIT received bytes (pgproto bounds each message
 *   below that).  While its send queue holds more than WALSRV_OUT_LIMIT bytes, a connection
 *   that is not streaming stops parsing input (a client that sends commands without reading
 *   the answers); when the input buffer then overflows, the connection is dropped.  At most
 *   WALSRV_MAX_CLIENTS connections are served at a time.
 *
 * Lifetime
 *   walsrv_free aborts every connection.  It must not be called from inside an ops callback.
 *   The acceptor and the tick timer live in a separate allocation (struct walsrv_anchor): their
 *   cancellations may still be in flight after walsrv_free, and it frees itself once the loop
 *   has seen them complete (or when the loop is freed).
 */
#include "walsrv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "pgproto.h"
#include "util.h"

#define WALSRV_COMPONENT "walsrv"

#define WALSRV_PAGE_SIZE 8192u                    /* XLOG_BLCKSZ */
#define WALSRV_MAX_CHUNK (16u * WALSRV_PAGE_SIZE) /* MAX_SEND_SIZE: 128 KiB */
#define WALSRV_HIGH_WATER (2u * 1024 * 1024)      /* stop queueing WAL above this */
#define WALSRV_OUT_LIMIT (4u * 1024 * 1024)       /* stop parsing commands above this */
#define WALSRV_IN_LIMIT ((size_t)PGP_MAX_QUERY_LEN + 256u * 1024)
#define WALSRV_MAX_CLIENTS 32u
#define WALSRV_TICK_MS 1000u
#define WALSRV_KEEPALIVE_MS 10000u       /* idle keepalive */
#define WALSRV_PING_MS 30000u            /* wal_sender_timeout / 2: keepalive asking a reply */
#define WALSRV_TIMEOUT_MS 60000u         /* wal_sender_timeout */
#define WALSRV_STARTUP_TIMEOUT_MS 60000u /* authentication_timeout */
#define WALSRV_REAP_MS 20u               /* walsrv_free: re-check of the acceptor */
#define WALSRV_NAME_LEN 64               /* NAMEDATALEN */

#define WALSRV_SERVER_VERSION "15.18 (walmirror " WALMIRROR_VERSION ")"

/* SQLSTATEs used here beyond those of pgproto.h. */
#define SQLSTATE_UNDEFINED_FILE "58P01"
#define SQLSTATE_IO_ERROR "58030"
#define SQLSTATE_NOT_IN_PREREQUISITE_STATE "55000"
#define SQLSTATE_TOO_MANY_CONNECTIONS "53300"

/* An LSN as PostgreSQL prints it: log_debug(..., "at " LSN_FMT, LSN_ARGS(lsn)). */
#define LSN_FMT "%X/%X"


enum walsrv_state {
    WALSRV_STARTUP = 0, /* waiting for SSLRequest / GSSENCRequest / StartupMessage */
    WALSRV_IDLE,        /* ReadyForQuery sent: replication commands */
    WALSRV_STREAMING,   /* COPY BOTH: XLogData out, 'r' / 'h' in */
    WALSRV_ENDING,      /* COPY BOTH, timeline ended: CopyDone sent, 'r' / 'h' in */
    WALSRV_CLOSED,      /* stream closed (or closing); freed when no handler runs */
};

static const char *const state_names[] = {"STARTUP", "IDLE", "STREAMING", "ENDING", "CLOSED"};

struct walsrv_conn {
    struct walsrv *w;
    struct walsrv_conn *prev, *next;
    struct wio_stream *stream;
    enum walsrv_state state;
    unsigned busy; /* nesting depth of handlers running for this connection */

    char peer[64];                          /* "ADDR:PORT" */
    char prefix[64 + WALSRV_NAME_LEN + 16]; /* "walsrv[ADDR:PORT app=NAME]" */
    char user[WALSRV_NAME_LEN];             /* sanitised */
    char app[WALSRV_NAME_LEN];              /* sanitised application_name */
    char client_encoding[WALSRV_NAME_LEN];  /* echoed */
    char temp_slot[PGP_NAME_MAX + 1];       /* this session's temporary slot, "" if none */
    bool ssl_done, gss_done;

    struct pgp_buf in;  /* received, not yet parsed */
    struct pgp_buf out; /* scratch for building messages */

    int64_t accepted_us; /* monotonic */
    int64_t last_rx_us;  /* monotonic: last bytes received */
    int64_t last_tx_us;  /* monotonic: last message queued */
    bool ping_sent;      /* a keepalive with replyRequested went out since last_rx_us */
    bool keepalive_owed; /* the client asked for a reply; sent when the queue allows */

    /* STREAMING and ENDING */
    uint32_t tli;                             /* timeline streamed */
    uint64_t start_lsn;                       /* requested start */
    uint64_t sent_lsn;                        /* end of the WAL queued so far */
    uint64_t write_lsn, flush_lsn, apply_lsn; /* last reported by the client */
};

/* Lives apart from struct walsrv: see "Lifetime" above. */
struct walsrv_anchor {
    struct wio_acceptor acc;
    struct wio_timer tick;
    struct walsrv *w; /* NULL once walsrv_free ran */
};

struct walsrv {
    struct wio_loop *loop;
    struct spool *spool;
    struct walsrv_ops ops;
    void *ctx;
    int listen_fd;
    int port;
    bool accepting;
    struct walsrv_anchor *anchor;
    struct walsrv_conn *conns;
    unsigned nconns;
    unsigned nstreaming;
    uint32_t next_pid;
    uint64_t retain_lsn; /* last value given to spool_set_retain_lsn (0: never) */
};

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                             */

/* Copies src into dst (size WALSRV_NAME_LEN), truncated, with anything but printable ASCII
 * replaced by '?' (as PostgreSQL does for application_name). */
static void
copy_name(char dst[WALSRV_NAME_LEN], const char *src)
{
    size_t i = 0;

    if (src != NULL)
        for (; src[i] != '\0' && i < WALSRV_NAME_LEN - 1; i++)
            dst[i] = (src[i] >= 32 && src[i] < 127) ? src[i] : '?';
    dst[i] = '\0';
}

/* PostgreSQL's display of a GUC_UNIT_BYTE value: the largest unit that divides it. */
static void
format_bytes(uint64_t v, char *buf, size_t len)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    unsigned u = 0;

    while (u < 4 && v != 0 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, "%" PRIu64 "%s", v, units[u]);
}

/* The timeline of lsn in the spool's history (tliOfPointInHistory): the oldest whose switch
 * point is after lsn; the current one if none is. */
static uint32_t
timeline_of(struct spool *spool, uint64_t lsn)
{
    size_t n;
    const struct spool_timeline *t = spool_timelines(spool, &n);

    for (size_t i = 0; i < n; i++)
        if (lsn < t[i].end)
            return t[i].tli;
    return spool_identity(spool)->timeline;
}

/* The timeline that follows tli in the spool's history (tliSwitchPoint's nextTLI); 0 if none. */
static uint32_t
timeline_next(struct spool *spool, uint32_t tli)
{
    size_t n;
    const struct spool_timeline *t = spool_timelines(spool, &n);

    for (size_t i = 0; i + 1 < n; i++)
        if (t[i].tli == tli)
            return t[i + 1].tli;
    return 0;
}

/* The pg_wal file name of the segment holding lsn, on lsn's timeline. */
static void
segment_name(struct spool *spool, uint64_t lsn, char buf[32])
{
    const struct spool_identity *id = spool_identity(spool);
    uint64_t seg_size = id != NULL && id->seg_size != 0 ? id->seg_size : 16u * 1024 * 1024;
    uint64_t segno = lsn / seg_size;
    uint64_t per_id = UINT64_C(0x100000000) / seg_size;

    snprintf(buf, 32, "%08X%08X%08X", (unsigned)timeline_of(spool, lsn), (unsigned)(segno / per_id),
             (unsigned)(segno % per_id));
}

/* COPY BOTH: streaming, or ending a timeline. */
static bool
in_copy(enum walsrv_state st)
{
    return st == WALSRV_STREAMING || st == WALSRV_ENDING;
}

/* ---------------------------------------------------------------------------------------- */
/* Connection lifecycle                                                                      */

static void conn_pump(struct walsrv_conn *c);
static void conn_process(struct walsrv_conn *c);
static void walsrv_update_retain(struct walsrv *w);

static void
conn_set_prefix(struct walsrv_conn *c)
{
    if (c->app[0] != '\0')
        snprintf(c->prefix, sizeof(c->prefix), "walsrv[%s app=%s]", c->peer, c->app);
    else
        snprintf(c->prefix, sizeof(c->prefix), "walsrv[%s]", c->peer);
}

static void
conn_set_state(struct walsrv_conn *c, enum walsrv_state to)
{
    if (c->state == to)
        return;
    log_debug(c->prefix, "%s -> %s", state_names[c->state], state_names[to]);
    if (in_copy(c->state) && !in_copy(to))
        c->w->nstreaming--;
    if (!in_copy(c->state) && in_copy(to))
        c->w->nstreaming++;
    c->state = to;
}

static void
walsrv_conn_free(struct walsrv_conn *c)
{
    pgp_buf_free(&c->in);
    pgp_buf_free(&c->out);
    free(c);
}

/*
 * Ends the connection: graceful sends what is queued first (a FATAL ErrorResponse), otherwise
 * the socket is reset at once.  No stream callback follows.  The struct is freed now, or by
 * conn_leave when a handler of this connection is still running.
 */
static void
walsrv_conn_close(struct walsrv_conn *c, bool graceful)
{
    struct walsrv *w = c->w;
    bool was_streaming = in_copy(c->state);

    if (c->state == WALSRV_CLOSED)
        return;
    conn_set_state(c, WALSRV_CLOSED);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    w->nconns--;
    if (c->stream != NULL) {
        wio_stream_close(c->stream, !graceful);
        c->stream = NULL;
    }
    if (was_streaming)
        walsrv_update_retain(w);
    if (c->busy == 0)
        walsrv_conn_free(c);
}

static void
conn_enter(struct walsrv_conn *c)
{
    c->busy++;
}

static void
conn_leave(struct walsrv_conn *c)
{
    if (--c->busy == 0 && c->state == WALSRV_CLOSED)
        walsrv_conn_free(c);
}

/* Queues the bytes built in c->out.  On failure the connection is closed; returns < 0. */
static int
conn_send_out(struct walsrv_conn *c)
{
    int rc;

    if (c->state == WALSRV_CLOSED) {
        pgp_buf_reset(&c->out);
        return -EPIPE;
    }
    rc = wio_stream_write(c->stream, c->out.data, c->out.len);
    pgp_buf_reset(&c->out);
    if (rc < 0) {
        log_info(c->prefix, "cannot queue output: %s", wire_strerror(rc));
        walsrv_conn_close(c, false);
        return rc;
    }
    c->last_tx_us = (int64_t)clock_mono_us();
    return 0;
}

/* A builder failed (out of memory, or a message over the limits): drop the connection. */
static int
conn_build_failed(struct walsrv_conn *c, int rc, const char *what)
{
    log_warning(c->prefix, "cannot build %s: %s; closing the connection", what, wire_strerror(rc));
    pgp_buf_reset(&c->out);
    walsrv_conn_close(c, false);
    return rc;
}

/* Sends a FATAL ErrorResponse and closes the connection once it is sent.  Returns -1. */
static int
conn_fatal_detail(struct walsrv_conn *c, const char *sqlstate, const char *msg, const char *detail)
{
    int rc;

    log_warning(c->prefix, "FATAL %s: %s", sqlstate, msg);
    pgp_buf_reset(&c->out);
    rc = pgp_put_error(&c->out, "FATAL", sqlstate, msg, detail, NULL);
    if (rc >= 0 && conn_send_out(c) < 0)
        return -1;
    walsrv_conn_close(c, rc >= 0);
    return -1;
}

static int
conn_fatal(struct walsrv_conn *c, const struct pgp_err *e)
{
    return conn_fatal_detail(c, e->sqlstate, e->msg, NULL);
}

static int __attribute__((format(printf, 3, 4)))
conn_fatalf(struct walsrv_conn *c, const char *sqlstate, const char *fmt, ...)
{
    struct pgp_err e;
    va_list ap;

    va_start(ap, fmt);
    pgp_err_set(&e, true, sqlstate, "%s", "");
    vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
    va_end(ap);
    return conn_fatal(c, &e);
}

/* A command failed without ending the session: ErrorResponse (ERROR) + ReadyForQuery. */
static int
conn_error(struct walsrv_conn *c, const char *sqlstate, const char *msg, const char *detail,
           const char *hint)
{
    int rc;

    log_info(c->prefix, "ERROR %s: %s", sqlstate, msg);
    pgp_buf_reset(&c->out);
    rc = pgp_put_error(&c->out, "ERROR", sqlstate, msg, detail, hint);
    if (rc >= 0)
        rc = pgp_put_ready(&c->out, 'I');
    if (rc < 0)
        return conn_build_failed(c, rc, "an ErrorResponse");
    return conn_send_out(c);
}

static int __attribute__((format(printf, 3, 4)))
conn_errorf(struct walsrv_conn *c, const char *sqlstate, const char *fmt, ...)
{
    char msg[PGP_ERRMSG_LEN];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return conn_error(c, sqlstate, msg, NULL, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* Start-up                                                                                  */

static int
conn_startup(struct walsrv_conn *c, const struct pgp_initial *ini)
{
    struct walsrv *w = c->w;
    const char *enc = pgp_initial_param(ini, "client_encoding");
    uint32_t key;
    int rc;

    copy_name(c->user, ini->user);
    copy_name(c->app, ini->application_name);
    conn_set_prefix(c);
    if (ini->replication == PGP_REPL_DATABASE)
        return conn_fatalf(c, PGP_SQLSTATE_FEATURE_NOT_SUPPORTED,
                           "logical replication connections (replication=database) are not "
                           "supported: walmirror's WAL server serves physical replication only");
    if (ini->replication != PGP_REPL_PHYSICAL)
        return conn_fatalf(c, PGP_SQLSTATE_INVALID_AUTHORIZATION,
                           "walmirror's WAL server accepts only physical replication connections "
                           "(replication=true), not SQL sessions (user \"%s\")",
                           c->user);
    if (enc != NULL && strlen(enc) >= WALSRV_NAME_LEN)
        return conn_fatalf(c, PGP_SQLSTATE_INVALID_PARAMETER_VALUE,
                           "invalid value for parameter \"client_encoding\"");
    copy_name(c->client_encoding, enc != NULL && enc[0] != '\0' ? enc : "UTF8");

    /* Trust authentication: see the file header. */
    key = (uint32_t)(int64_t)clock_mono_us() ^ ((uint32_t)(uintptr_t)c * 2654435761u);
    pgp_buf_reset(&c->out);
    rc = pgp_put_auth_ok(&c->out);
    {
        const char *const params[][2] = {
            {"application_name", c->app},
            {"client_encoding", c->client_encoding},
            {"DateStyle", "ISO, MDY"},
            {"default_transaction_read_only", "off"},
            {"in_hot_standby", "off"},
            {"integer_datetimes", "on"},
            {"IntervalStyle", "postgres"},
            {"is_superuser", "on"},
            {"server_encoding", "UTF8"},
            {"server_version", WALSRV_SERVER_VERSION},
            {"session_authorization", c->user},
            {"standard_conforming_strings", "on"},
            {"TimeZone", "UTC"},
        };

        for (size_t i = 0; rc >= 0 && i < sizeof(params) / sizeof(params[0]); i++)
            rc = pgp_put_parameter_status(&c->out, params[i][0], params[i][1]);
    }
    if (rc >= 0)
        rc = pgp_put_backend_key(&c->out, ++w->next_pid, key);
    if (rc >= 0)
        rc = pgp_put_ready(&c->out, 'I');
    if (rc < 0)
        return conn_build_failed(c, rc, "the start-up answer");
    if (conn_send_out(c) < 0)
        return -1;
    log_info(c->prefix, "replication connection: user=%s", c->user);
    conn_set_state(c, WALSRV_IDLE);
    return 0;
}

/* STARTUP state: one initial packet.  Returns bytes consumed, 0 (need more), < 0 closed. */
static int
conn_initial(struct walsrv_conn *c, const uint8_t *buf, size_t len)
{
    struct pgp_initial ini;
    struct pgp_err e;
    int n, rc;

    n = pgp_parse_initial(buf, len, &ini, &e);
    if (n <= 0)
        return n == 0 ? 0 : conn_fatal(c, &e);
    switch (ini.kind) {
    case PGP_INITIAL_SSL:
    case PGP_INITIAL_GSSENC: {
        bool ssl = ini.kind == PGP_INITIAL_SSL;
        bool *done = ssl ? &c->ssl_done : &c->gss_done;

        if (*done)
            return conn_fatalf(c, PGP_SQLSTATE_PROTOCOL_VIOLATION, "duplicate %s",
                               ssl ? "SSLRequest" : "GSSENCRequest");
        *done = true;
        pgp_buf_reset(&c->out);
        rc = ssl ? pgp_put_ssl_response(&c->out, false) : pgp_put_gssenc_response(&c->out);
        if (rc < 0)
            return conn_build_failed(c, rc, "an encryption answer");
        log_debug(c->prefix, "%s answered 'N'", ssl ? "SSLRequest" : "GSSENCRequest");
        return conn_send_out(c) < 0 ? -1 : n;
    }
    case PGP_INITIAL_CANCEL:
        log_debug(c->prefix, "CancelRequest ignored (nothing to cancel)");
        walsrv_conn_close(c, true);
        return -1;
    case PGP_INITIAL_STARTUP:
        return conn_startup(c, &ini) < 0 ? -1 : n;
    }
    return conn_fatalf(c, PGP_SQLSTATE_PROTOCOL_VIOLATION, "unexpected initial packet");
}

/* ---------------------------------------------------------------------------------------- */
/* Replication commands                                                                      */

/* The spool's identity, or NULL (after an ERROR to the client) when it has none yet. */
static const struct spool_identity *
conn_identity(struct walsrv_conn *c)
{
    const struct spool_identity *id = spool_identity(c->w->spool);

    if (id == NULL || id->system_id == 0) {
        conn_error(c, SQLSTATE_NOT_IN_PREREQUISITE_STATE, "no WAL received from the primary yet",
                   "walmirror's spool is empty; the standby will retry", NULL);
        return NULL;
    }
    return id;
}

static int
cmd_identify_system(struct walsrv_conn *c)
{
    const struct spool_identity *id = conn_identity(c);
    int rc;

    if (id == NULL)
        return 0;
    pgp_buf_reset(&c->out);
    rc = pgp_put_identify_system(&c->out, id->system_id, id->timeline, spool_flush_lsn(c->w->spool),
                                 NULL);
    if (rc >= 0)
        rc = pgp_put_ready(&c->out, 'I');
    if (rc < 0)
        return conn_build_failed(c, rc, "IDENTIFY_SYSTEM");
    return conn_send_out(c);
}

static int
cmd_show(struct walsrv_conn *c, const struct pgp_cmd *cmd)
{
    char value[32];
    int rc;

    if (strcasecmp(cmd->name, "wal_segment_size") == 0) {
        const struct spool_identity *id = conn_identity(c);

        if (id == NULL)
            return 0;
        format_bytes(id->seg_size, value, sizeof(value));
    } else if (strcasecmp(cmd->name, "data_directory_mode") == 0) {
        snprintf(value, sizeof(value), "0700");
    } else {
        return conn_errorf(c, PGP_SQLSTATE_UNDEFINED_OBJECT,
                           "unrecognized configuration parameter \"%s\"", cmd->name);
    }
    pgp_buf_reset(&c->out);
    rc = pgp_put_show(&c->out, cmd->name, value);
    if (rc >= 0)
        rc = pgp_put_ready(&c->out, 'I');
    if (rc < 0)
        return conn_build_failed(c, rc, "SHOW");
    return conn_send_out(c);
}

/*
 * Slots: walmirror keeps none; the spool's own retention (spool_keep, and the position of
 * every streaming client) stands in for them.
 *   CREATE_REPLICATION_SLOT ... TEMPORARY PHYSICAL: accepted and remembered for the session
 *     (what a temporary slot does - keep WAL for this session's stream - the spool does for
 *     every streaming client); a walreceiver with wal_receiver_create_temp_slot = on sends it.
 *   CREATE_REPLICATION_SLOT (persistent): refused with 0A000 (feature_not_supported), as
 *     PostgreSQL refuses what it does not implement: a slot that outlived the session would
 *     have to hold WAL in the spool, which walmirror does not do.
 *   DROP_REPLICATION_SLOT: the session's temporary slot; any other name gets 42704
 *     (undefined_object) "replication slot ... does not exist", as from PostgreSQL.
 *   READ_REPLICATION_SLOT: any name reports a physical slot whose WAL is reserved from the
 *     oldest position the spool holds, which lets pg_receivewal --slot start from there.
 */
static int
cmd_slot(struct walsrv_conn *c, const struct pgp_cmd *cmd)
{
    struct pgp_err e;
    int rc;

    pgp_buf_reset(&c->out);
    switch (cmd->kind) {
    case PGP_CMD_READ_REPLICATION_SLOT: {
        const struct spool_identity *id = spool_identity(c->w->spool);
        struct pgp_slot_info info = {0, 0};

        if (id != NULL && id->system_id != 0 && spool_start_lsn(c->w->spool) != 0) {
            info.restart_lsn = spool_start_lsn(c->w->spool);
            info.restart_tli = timeline_of(c->w->spool, info.restart_lsn);
        }
        rc = pgp_put_read_replication_slot(&c->out, &info);
        break;
    }
    case PGP_CMD_CREATE_REPLICATION_SLOT:
        if (pgp_slot_name_check(cmd->slot, &e) < 0)
            return conn_error(c, e.sqlstate, e.msg, NULL, NULL);
        if (!cmd->temporary) {
            char msg[PGP_ERRMSG_LEN];

            snprintf(msg, sizeof(msg),
                     "cannot create replication slot \"%s\": walmirror's WAL server keeps no "
                     "replication slots",
                     cmd->slot);
            return conn_error(c, PGP_SQLSTATE_FEATURE_NOT_SUPPORTED, msg,
                              "The spool keeps WAL for spool_keep bytes behind what the standby "
                              "has replayed, and for every client while it streams.",
                              "Stream without a slot, or with a TEMPORARY one.");
        }
        if (c->temp_slot[0] != '\0' && strcmp(c->temp_slot, cmd->slot) != 0)
            return conn_errorf(c, PGP_SQLSTATE_PROGRAM_LIMIT_EXCEEDED,
                               "this session already has the temporary replication slot "
                               "\"%s\"",
                               c->temp_slot);
        if (strcmp(c->temp_slot, cmd->slot) == 0)
            return conn_errorf(c, PGP_SQLSTATE_DUPLICATE_OBJECT,
                               "replication slot \"%s\" already exists", cmd->slot);
        snprintf(c->temp_slot, sizeof(c->temp_slot), "%s", cmd->slot);
        log_info(c->prefix,
                 "temporary replication slot \"%s\" accepted for this session (the spool keeps "
                 "its WAL while it streams)",
                 cmd->slot);
        rc = pgp_put_create_slot(&c->out, cmd->slot, 0);
        break;
    default: /* PGP_CMD_DROP_REPLICATION_SLOT */
        if (pgp_slot_name_check(cmd->slot, &e) < 0)
            return conn_error(c, e.sqlstate, e.msg, NULL, NULL);
        if (c->temp_slot[0] == '\0' || strcmp(c->temp_slot, cmd->slot) != 0)
            return conn_errorf(c, PGP_SQLSTATE_UNDEFINED_OBJECT,
                               "replication slot \"%s\" does not exist", cmd->slot);
        c->temp_slot[0] = '\0';
        rc = pgp_put_command_complete(&c->out, cmd->tag);
        break;
    }
    if (rc >= 0)
        rc = pgp_put_ready(&c->out, 'I');
    if (rc < 0)
        return conn_build_failed(c, rc, cmd->tag);
    return conn_send_out(c);
}

/* TIMELINE_HISTORY: the history file from the spool, as SendTimeLineHistory sends it. */
static int
cmd_timeline_history(struct walsrv_conn *c, const struct pgp_cmd *cmd)
{
    char name[PGP_HISTFILE_BUFSZ], *text = NULL;
    size_t len = 0;
    int rc;

    pgp_histfile_name(cmd->timeline, name);
    rc = spool_read_history(c->w->spool, cmd->timeline, &text, &len);
    if (rc < 0)
        return conn_errorf(c, rc == -ENOENT ? SQLSTATE_UNDEFINED_FILE : SQLSTATE_IO_ERROR,
                           "could not open file \"pg_wal/%s\": %s", name, strerror(-rc));
    pgp_buf_reset(&c->out);
    rc = pgp_put_timeline_history(&c->out, cmd->timeline, text, len);
    free(text);
    if (rc >= 0)
        rc = pgp_put_ready(&c->out, 'I');
    if (rc < 0)
        return conn_build_failed(c, rc, "TIMELINE_HISTORY");
    log_info(c->prefix, "sent %s (%zu bytes)", name, len);
    return conn_send_out(c);
}

/* START_REPLICATION on a historic timeline exactly at its switch point: no COPY, only the next
 * timeline (StartReplication). */
static int
conn_timeline_at_end(struct walsrv_conn *c, uint32_t tli, uint64_t tl_end)
{
    uint32_t next = timeline_next(c->w->spool, tli);
    int rc;

    pgp_buf_reset(&c->out);
    rc = pgp_put_end_of_timeline(&c->out, next, tl_end);
    if (rc >= 0)
        rc = pgp_put_ready(&c->out, 'I');
    if (rc < 0)
        return conn_build_failed(c, rc, "the next timeline");
    log_info(c->prefix, "timeline %u ends at the requested start " LSN_FMT ": next timeline %u",
             tli, LSN_ARGS(tl_end), next);
    return conn_send_out(c);
}

static int
cmd_start_replication(struct walsrv_conn *c, const struct pgp_cmd *cmd)
{
    struct walsrv *w = c->w;
    const struct spool_identity *id = conn_identity(c);
    uint64_t start, flush, tl_end = UINT64_MAX;
    char s_lsn[PGP_LSN_BUFSZ], f_lsn[PGP_LSN_BUFSZ], b_lsn[PGP_LSN_BUFSZ];
    struct pgp_err e;
    uint32_t tli;
    int rc;

    if (id == NULL)
        return 0;
    if (cmd->has_slot && pgp_slot_name_check(cmd->slot, &e) < 0)
        return conn_error(c, e.sqlstate, e.msg, NULL, NULL);
    tli = cmd->timeline != 0 ? cmd->timeline : id->timeline;
    pgp_lsn_format(cmd->lsn, s_lsn);
    if (tli != id->timeline) {
        /* A historic timeline: it must be in the spool's history, the start on it. */
        tl_end = spool_timeline_end(w->spool, tli);
        if (tl_end == 0)
            return conn_errorf(c, PGP_SQLSTATE_INTERNAL_ERROR,
                               "requested timeline %u is not in this server's history", tli);
        if (cmd->lsn > tl_end) {
            char msg[PGP_ERRMSG_LEN], detail[128];

            pgp_lsn_format(tl_end, b_lsn);
            snprintf(msg, sizeof(msg),
                     "requested starting point %s on timeline %u is not in this server's history",
                     s_lsn, tli);
            snprintf(detail, sizeof(detail), "This server's history forked from timeline %u at %s.",
                     tli, b_lsn);
            return conn_error(c, PGP_SQLSTATE_INTERNAL_ERROR, msg, detail, NULL);
        }
        if (cmd->lsn == tl_end)
            return conn_timeline_at_end(c, tli, tl_end);
    }
    start = spool_start_lsn(w->spool);
    flush = spool_flush_lsn(w->spool);
    pgp_lsn_format(flush, f_lsn);
    if (start == 0)
        return conn_error(c, SQLSTATE_NOT_IN_PREREQUISITE_STATE,
                          "no WAL received from the primary yet",
                          "walmirror's spool is empty; the standby will retry", NULL);
    if (cmd->lsn < start) {
        char seg[32], detail[128], msg[PGP_ERRMSG_LEN];

        segment_name(w->spool, cmd->lsn, seg);
        pgp_lsn_format(start, b_lsn);
        snprintf(detail, sizeof(detail), "walmirror's spool holds WAL from %s to %s", b_lsn, f_lsn);
        snprintf(msg, sizeof(msg),
                 "requested WAL segment %s has already been removed (requested start %s)", seg,
                 s_lsn);
        return conn_fatal_detail(c, SQLSTATE_UNDEFINED_FILE, msg, detail);
    }
    pgp_buf_reset(&c->out);
    rc = pgp_put_copy_both(&c->out);
    if (rc < 0)
        return conn_build_failed(c, rc, "CopyBothResponse");
    if (cmd->lsn > flush) {
        /* As PostgreSQL 15's walsender (StartReplication): CopyBothResponse first, then the
         * error - an ereport(ERROR) without errcode, so XX000 - and the session goes on. */
        if (conn_send_out(c) < 0)
            return -1;
        return conn_errorf(c, PGP_SQLSTATE_INTERNAL_ERROR,
                           "requested starting point %s is ahead of the WAL flush position of "
                           "this server %s",
                           s_lsn, f_lsn);
    }
    if (conn_send_out(c) < 0)
        return -1;
    c->tli = tli;
    c->start_lsn = c->sent_lsn = cmd->lsn;
    c->write_lsn = c->flush_lsn = c->apply_lsn = 0;
    c->ping_sent = false;
    c->keepalive_owed = false;
    if (tl_end != UINT64_MAX)
        pgp_lsn_format(tl_end, b_lsn);
    log_info(c->prefix, "streaming timeline %u from %s (spool flushed to %s%s%s)%s%s", tli, s_lsn,
             f_lsn, tl_end != UINT64_MAX ? ", timeline ends at " : "",
             tl_end != UINT64_MAX ? b_lsn : "", cmd->has_slot ? ", slot " : "",
             cmd->has_slot ? cmd->slot : "");
    conn_set_state(c, WALSRV_STREAMING);
    walsrv_update_retain(w);
    conn_pump(c);
    return 0;
}

static int
conn_command(struct walsrv_conn *c, const char *q, size_t len)
{
    struct pgp_cmd cmd;
    struct pgp_err e;

    if (pgp_parse_command(q, len, &cmd, &e) < 0)
        return conn_error(c, e.sqlstate, e.msg, NULL, NULL);
    log_debug(c->prefix, "command %s", cmd.tag);
    switch (cmd.kind) {
    case PGP_CMD_IDENTIFY_SYSTEM:
        return cmd_identify_system(c);
    case PGP_CMD_TIMELINE_HISTORY:
        return cmd_timeline_history(c, &cmd);
    case PGP_CMD_SHOW:
        return cmd_show(c, &cmd);
    case PGP_CMD_READ_REPLICATION_SLOT:
    case PGP_CMD_CREATE_REPLICATION_SLOT:
    case PGP_CMD_DROP_REPLICATION_SLOT:
        return cmd_slot(c, &cmd);
    case PGP_CMD_START_REPLICATION:
        return cmd_start_replication(c, &cmd);
    }
    return conn_errorf(c, PGP_SQLSTATE_INTERNAL_ERROR, "unhandled replication command");
}

/* ---------------------------------------------------------------------------------------- */
/* Streaming                                                                                 */

static int
conn_keepalive(struct walsrv_conn *c, bool reply_requested)
{
    int rc;

    pgp_buf_reset(&c->out);
    rc = pgp_put_keepalive(&c->out, c->sent_lsn, pgp_now(), reply_requested);
    if (rc < 0)
        return conn_build_failed(c, rc, "a keepalive");
    log_debug(c->prefix, "keepalive at " LSN_FMT "%s", LSN_ARGS(c->sent_lsn),
              reply_requested ? ", reply requested" : "");
    return conn_send_out(c);
}

/* Sends the keepalive the client asked for, unless the queue is over its limit. */
static void
conn_pay_keepalive(struct walsrv_conn *c)
{
    if (c->state != WALSRV_STREAMING || !c->keepalive_owed ||
        wio_stream_pending(c->stream) > WALSRV_OUT_LIMIT)
        return;
    c->keepalive_owed = false;
    (void)conn_keepalive(c, false);
}

/* Everything of the stream's timeline is queued: CopyDone, and wait for the client's. */
static void
conn_end_timeline(struct walsrv_conn *c, uint64_t tl_end)
{
    int rc;

    pgp_buf_reset(&c->out);
    rc = pgp_put_copy_done(&c->out);
    if (rc < 0) {
        conn_build_failed(c, rc, "CopyDone");
        return;
    }
    if (conn_send_out(c) < 0)
        return;
    log_info(c->prefix,
             "end of timeline %u at " LSN_FMT " (sent up to " LSN_FMT
             "): CopyDone sent, waiting for the client's",
             c->tli, LSN_ARGS(tl_end), LSN_ARGS(c->sent_lsn));
    c->keepalive_owed = false;
    conn_set_state(c, WALSRV_ENDING);
}

/* Queues durable WAL from sent_lsn on, in XLogData messages, until the high-water mark, and
 * never past the end of the stream's timeline (see "Timelines"). */
static void
conn_pump(struct walsrv_conn *c)
{
    struct walsrv *w = c->w;

    while (c->state == WALSRV_STREAMING && wio_stream_pending(c->stream) < WALSRV_HIGH_WATER) {
        uint64_t flush = spool_flush_lsn(w->spool);
        uint64_t tl_end = spool_timeline_end(w->spool, c->tli);
        uint64_t limit = flush < tl_end ? flush : tl_end;
        uint64_t end;
        uint8_t *p;
        ssize_t n;
        int rc;

        if (tl_end == 0) {
            conn_fatalf(c, PGP_SQLSTATE_INTERNAL_ERROR,
                        "timeline %u is no longer in this server's history", c->tli);
            return;
        }
        if (c->sent_lsn >= tl_end) {
            conn_end_timeline(c, tl_end);
            return;
        }
        if (c->sent_lsn >= limit)
            return;
        end = c->sent_lsn + WALSRV_MAX_CHUNK;
        if (end >= limit)
            end = limit;
        else
            end -= end % WALSRV_PAGE_SIZE;
        p = wio_stream_reserve(c->stream, PGP_XLOGDATA_HDR_LEN + (size_t)(end - c->sent_lsn));
        if (p == NULL) {
            log_info(c->prefix, "cannot queue WAL: %s", strerror(errno));
            walsrv_conn_close(c, false);
            return;
        }
        n = spool_read(w->spool, c->sent_lsn, p + PGP_XLOGDATA_HDR_LEN,
                       (size_t)(end - c->sent_lsn));
        if (n <= 0) {
            char lsn[PGP_LSN_BUFSZ];

            wio_stream_commit(c->stream, 0);
            pgp_lsn_format(c->sent_lsn, lsn);
            if (n == -ENOENT) {
                char seg[32];

                segment_name(w->spool, c->sent_lsn, seg);
                conn_fatalf(c, SQLSTATE_UNDEFINED_FILE,
                            "requested WAL segment %s has already been removed (at %s)", seg, lsn);
            } else if (n == 0) {
                log_warning(c->prefix, "spool returned no WAL at %s below its flush position", lsn);
            } else {
                conn_fatalf(c, PGP_SQLSTATE_INTERNAL_ERROR, "could not read WAL at %s: %s", lsn,
                            wire_strerror((int)n));
            }
            return;
        }
        rc = pgp_xlogdata_header(p, c->sent_lsn, limit, pgp_now(), (size_t)n);
        if (rc != PGP_XLOGDATA_HDR_LEN) {
            wio_stream_commit(c->stream, 0);
            conn_build_failed(c, rc < 0 ? rc : -EFAULT, "an XLogData header");
            return;
        }
        wio_stream_commit(c->stream, PGP_XLOGDATA_HDR_LEN + (size_t)n);
        log_debug(c->prefix, "XLogData " LSN_FMT " +%zd", LSN_ARGS(c->sent_lsn), n);
        c->sent_lsn += (uint64_t)n;
        c->last_tx_us = (int64_t)clock_mono_us();
    }
}

/*
 * The client's CopyDone: CopyDone back unless already sent, the next timeline's result set if
 * the stream's timeline is historic, both CommandCompletes, ReadyForQuery (walsender.c).
 */
static int
conn_end_copy(struct walsrv_conn *c)
{
    uint64_t tl_end = spool_timeline_end(c->w->spool, c->tli);
    bool historic = tl_end != UINT64_MAX && tl_end != 0;
    uint32_t next = historic ? timeline_next(c->w->spool, c->tli) : 0;
    int rc = 0;

    pgp_buf_reset(&c->out);
    if (c->state == WALSRV_STREAMING)
        rc = pgp_put_copy_done(&c->out);
    if (rc >= 0 && historic) {
        rc = pgp_put_end_of_timeline(&c->out, next, tl_end);
    } else if (rc >= 0) {
        rc = pgp_put_command_complete(&c->out, "START_STREAMING");
        if (rc >= 0)
            rc = pgp_put_command_complete(&c->out, "START_REPLICATION");
    }
    if (rc >= 0)
        rc = pgp_put_ready(&c->out, 'I');
    if (rc < 0)
        return conn_build_failed(c, rc, "the end of COPY");
    if (conn_send_out(c) < 0)
        return -1;
    if (historic)
        log_info(c->prefix,
                 "client ended streaming at " LSN_FMT ": timeline %u ends at " LSN_FMT
                 ", next timeline %u",
                 LSN_ARGS(c->sent_lsn), c->tli, LSN_ARGS(tl_end), next);
    else
        log_info(c->prefix, "client ended streaming at " LSN_FMT, LSN_ARGS(c->sent_lsn));
    conn_set_state(c, WALSRV_IDLE);
    c->keepalive_owed = false;
    walsrv_update_retain(c->w);
    return 0;
}

static void
conn_standby_msg(struct walsrv_conn *c, const struct pgp_standby_msg *m)
{
    struct walsrv *w = c->w;

    if (m->kind == 'r') {
        const struct pgp_standby_status *st = &m->status;

        log_debug(c->prefix, "reply write " LSN_FMT " flush " LSN_FMT " apply " LSN_FMT "%s",
                  LSN_ARGS(st->write), LSN_ARGS(st->flush), LSN_ARGS(st->apply),
                  st->reply_requested ? " (reply requested)" : "");
        c->write_lsn = st->write;
        c->apply_lsn = st->apply;
        if (st->flush != c->flush_lsn) {
            c->flush_lsn = st->flush;
            walsrv_update_retain(w);
        }
        if (st->reply_requested)
            c->keepalive_owed = true;
        if (w->ops.on_reply != NULL)
            w->ops.on_reply(w->ctx, c->app, st->write, st->flush, st->apply);
    } else {
        const struct pgp_hs_feedback *hs = &m->hs;

        log_debug(c->prefix, "hot standby feedback xmin %u:%u catalog_xmin %u:%u", hs->xmin_epoch,
                  hs->xmin, hs->catalog_epoch, hs->catalog_xmin);
        if (w->ops.on_feedback != NULL)
            w->ops.on_feedback(w->ctx, hs->xmin, hs->xmin_epoch, hs->catalog_xmin,
                               hs->catalog_epoch);
    }
}

/* IDLE and STREAMING: one regular message.  Returns bytes consumed, 0 (need more), < 0. */
static int
conn_message(struct walsrv_conn *c, const uint8_t *buf, size_t len)
{
    struct pgp_fe_msg m;
    struct pgp_err e;
    int n;

    n = pgp_parse_fe(buf, len, &m, &e);
    if (n <= 0)
        return n == 0 ? 0 : conn_fatal(c, &e);
    if (m.type == 'X') {
        if (in_copy(c->state))
            log_info(c->prefix, "standby ended the session at " LSN_FMT, LSN_ARGS(c->sent_lsn));
        else
            log_debug(c->prefix, "Terminate");
        walsrv_conn_close(c, true);
        return -1;
    }
    if (c->state == WALSRV_IDLE) {
        switch (m.type) {
        case 'Q':
            conn_command(c, m.query, m.query_len);
            break;
        case 'd':
        case 'c':
            /* Outside COPY: ignored, as PostgresMain does after a failed COPY. */
            log_debug(c->prefix, "ignoring '%c' outside COPY", m.type);
            break;
        default:
            return conn_fatalf(c, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                               "unexpected message type \"%c\" in a replication session", m.type);
        }
    } else {
        switch (m.type) {
        case 'd':
            conn_standby_msg(c, &m.copy);
            break;
        case 'c':
            conn_end_copy(c);
            break;
        default:
            return conn_fatalf(c, PGP_SQLSTATE_PROTOCOL_VIOLATION,
                               "unexpected message type \"%c\" during COPY BOTH", m.type);
        }
    }
    return c->state == WALSRV_CLOSED ? -1 : n;
}

/* Parses what is buffered, as far as the state and the send queue allow. */
static void
conn_process(struct walsrv_conn *c)
{
    size_t off = 0;

    while (c->state != WALSRV_CLOSED && off < c->in.len) {
        int n;

        /* A client that does not read its answers: stop answering (see "Bounds"). */
        if (!in_copy(c->state) && wio_stream_pending(c->stream) > WALSRV_OUT_LIMIT)
            break;
        if (c->state == WALSRV_STARTUP)
            n = conn_initial(c, c->in.data + off, c->in.len - off);
        else
            n = conn_message(c, c->in.data + off, c->in.len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (c->state == WALSRV_CLOSED)
        return;
    pgp_buf_consume(&c->in, off);
    if (c->state == WALSRV_STREAMING) {
        conn_pay_keepalive(c);
        conn_pump(c);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Stream callbacks                                                                          */

static void
conn_on_data(void *ctx, const void *data, size_t len)
{
    struct walsrv_conn *c = ctx;
    int rc;

    conn_enter(c);
    if (c->state == WALSRV_CLOSED)
        goto out;
    c->last_rx_us = (int64_t)clock_mono_us();
    c->ping_sent = false;
    if (len > WALSRV_IN_LIMIT - c->in.len) {
        log_warning(c->prefix, "more than %zu bytes of unprocessed input; closing the connection",
                    WALSRV_IN_LIMIT);
        walsrv_conn_close(c, false);
        goto out;
    }
    rc = pgp_buf_append(&c->in, data, len);
    if (rc < 0) {
        log_warning(c->prefix, "cannot buffer input: %s", wire_strerror(rc));
        walsrv_conn_close(c, false);
        goto out;
    }
    conn_process(c);
out:
    conn_leave(c);
}

static void
conn_on_close(void *ctx, int res)
{
    struct walsrv_conn *c = ctx;

    conn_enter(c);
    if (in_copy(c->state))
        log_info(c->prefix, "standby disconnected at " LSN_FMT ": %s", LSN_ARGS(c->sent_lsn),
                 wire_strerror(res));
    else
        log_debug(c->prefix, "connection ended: %s", wire_strerror(res));
    walsrv_conn_close(c, false);
    conn_leave(c);
}

static void
conn_on_drained(void *ctx)
{
    struct walsrv_conn *c = ctx;

    conn_enter(c);
    if (c->state == WALSRV_STREAMING || (c->state != WALSRV_CLOSED && c->in.len > 0))
        conn_process(c);
    conn_leave(c);
}

static const struct wio_stream_ops conn_stream_ops = {
    .on_data = conn_on_data,
    .on_close = conn_on_close,
    .on_drained = conn_on_drained,
};

/* ---------------------------------------------------------------------------------------- */
/* Server                                                                                    */

/* Tells the spool the oldest position a streaming client still needs. */
static void
walsrv_update_retain(struct walsrv *w)
{
    uint64_t oldest = UINT64_MAX;

    for (struct walsrv_conn *c = w->conns; c != NULL; c = c->next) {
        uint64_t need;

        if (!in_copy(c->state))
            continue;
        need = c->flush_lsn != 0 ? c->flush_lsn : c->start_lsn;
        if (need < oldest)
            oldest = need;
    }
    if (oldest == UINT64_MAX || oldest == w->retain_lsn)
        return; /* no streaming client: keep what the last one needed */
    w->retain_lsn = oldest;
    log_debug(WALSRV_COMPONENT, "retaining WAL from " LSN_FMT, LSN_ARGS(oldest));
    spool_set_retain_lsn(w->spool, oldest);
}

static void
walsrv_new_conn(struct walsrv *w, int fd)
{
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    struct walsrv_conn *c;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0, rc;

    if (getpeername(fd, (struct sockaddr *)&ss, &sslen) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
            port = ntohs(sin->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
            port = ntohs(sin6->sin6_port);
        }
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        log_warning(WALSRV_COMPONENT, "out of memory for a connection from %s:%d", host, port);
        close(fd);
        return;
    }
    c->w = w;
    snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
    conn_set_prefix(c);
    c->accepted_us = c->last_rx_us = c->last_tx_us = (int64_t)clock_mono_us();
    pgp_buf_init(&c->in);
    pgp_buf_init(&c->out);
    rc = wio_stream_new(&c->stream, w->loop, fd, &conn_stream_ops, c);
    if (rc < 0) {
        log_warning(c->prefix, "cannot set up the connection: %s", wire_strerror(rc));
        close(fd);
        walsrv_conn_free(c);
        return;
    }
    c->next = w->conns;
    if (c->next != NULL)
        c->next->prev = c;
    w->conns = c;
    w->nconns++;
    log_debug(c->prefix, "accepted");
    if (w->nconns > WALSRV_MAX_CLIENTS) {
        conn_enter(c);
        conn_fatalf(c, SQLSTATE_TOO_MANY_CONNECTIONS,
                    "sorry, too many clients already (walmirror serves at most %u)",
                    WALSRV_MAX_CLIENTS);
        conn_leave(c);
    }
}

static void
walsrv_on_accept(struct wio_acceptor *a, int fd)
{
    struct walsrv_anchor *an = container_of(a, struct walsrv_anchor, acc);
    struct walsrv *w = an->w;

    if (w == NULL) {
        if (fd >= 0)
            close(fd);
        return;
    }
    if (fd < 0) {
        /* Accepting stopped (e.g. EMFILE); the tick starts it again. */
        log_warning(WALSRV_COMPONENT, "accept failed: %s; retrying in %u ms", wire_strerror(fd),
                    WALSRV_TICK_MS);
        w->accepting = false;
        return;
    }
    walsrv_new_conn(w, fd);
}

static void
walsrv_tick_conn(struct walsrv_conn *c, int64_t now)
{
    int64_t quiet_ms = (now - c->last_rx_us) / 1000;

    if (c->state == WALSRV_STARTUP) {
        if ((now - c->accepted_us) / 1000 >= WALSRV_STARTUP_TIMEOUT_MS) {
            log_info(c->prefix, "no start-up packet within %u ms; closing",
                     WALSRV_STARTUP_TIMEOUT_MS);
            walsrv_conn_close(c, false);
        }
        return;
    }
    if (!in_copy(c->state))
        return;
    if (quiet_ms >= WALSRV_TIMEOUT_MS) {
        log_warning(c->prefix,
                    "terminating: nothing received from the standby for %" PRId64
                    " ms (replication timeout)",
                    quiet_ms);
        walsrv_conn_close(c, false);
        return;
    }
    conn_pay_keepalive(c);
    if (c->state != WALSRV_STREAMING)
        return;
    if (quiet_ms >= WALSRV_PING_MS && !c->ping_sent) {
        c->ping_sent = true;
        (void)conn_keepalive(c, true);
    } else if ((now - c->last_tx_us) / 1000 >= WALSRV_KEEPALIVE_MS) {
        (void)conn_keepalive(c, false);
    }
    conn_pump(c);
}

static void
walsrv_tick(struct wio_timer *t)
{
    struct walsrv_anchor *an = container_of(t, struct walsrv_anchor, tick);
    struct walsrv *w = an->w;
    struct walsrv_conn *c, *next;
    int64_t now = (int64_t)clock_mono_us();

    if (w == NULL)
        return;
    /* Ticking a connection may close (unlink) it, and only it: take its successor first. */
    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        conn_enter(c);
        walsrv_tick_conn(c, now);
        conn_leave(c);
    }
    if (!w->accepting) {
        if (wio_accept_start(w->loop, &an->acc, w->listen_fd, walsrv_on_accept) == 0)
            w->accepting = true;
    }
    if (wio_timer_arm(w->loop, &an->tick, WALSRV_TICK_MS, walsrv_tick) < 0)
        log_error(WALSRV_COMPONENT, "cannot re-arm the tick timer: keepalives stop");
}

int
walsrv_new(struct walsrv **out, struct wio_loop *loop, const char *listen_hostport,
           struct spool *spool, const struct walsrv_ops *ops, void *ctx, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct walsrv *w;
    int rc;

    *out = NULL;
    if (loop == NULL || listen_hostport == NULL || spool == NULL || ops == NULL) {
        snprintf(err, errlen, "walsrv_new: missing argument");
        return -EINVAL;
    }
    rc = wio_parse_hostport(listen_hostport, &ss, &sslen);
    if (rc < 0) {
        snprintf(err, errlen, "invalid wal_listen address \"%s\": %s", listen_hostport,
                 wire_strerror(rc));
        return rc;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    w->anchor = calloc(1, sizeof(*w->anchor));
    if (w->anchor == NULL) {
        free(w);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    w->anchor->w = w;
    w->listen_fd = -1;
    w->loop = loop;
    w->spool = spool;
    w->ops = *ops;
    w->ctx = ctx;
    w->listen_fd = wio_listen_tcp(listen_hostport, 16, &w->port);
    if (w->listen_fd < 0) {
        rc = w->listen_fd;
        snprintf(err, errlen, "cannot listen on %s: %s", listen_hostport, wire_strerror(rc));
        goto fail;
    }
    rc = wio_accept_start(loop, &w->anchor->acc, w->listen_fd, walsrv_on_accept);
    if (rc < 0) {
        snprintf(err, errlen, "cannot accept on %s: %s", listen_hostport, wire_strerror(rc));
        goto fail;
    }
    w->accepting = true;
    rc = wio_timer_arm(loop, &w->anchor->tick, WALSRV_TICK_MS, walsrv_tick);
    if (rc < 0) {
        snprintf(err, errlen, "cannot arm the WAL server's timer: %s", wire_strerror(rc));
        goto fail;
    }
    {
        bool loopback = (ss.ss_family == AF_INET &&
                         (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127) ||
                        (ss.ss_family == AF_INET6 &&
                         IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr));
        if (!loopback)
            log_warning(WALSRV_COMPONENT,
                        "listening on %s, which is not a loopback address: the WAL server "
                        "trusts every client (no authentication)",
                        listen_hostport);
    }
    log_info(WALSRV_COMPONENT, "WAL server listening on %s (port %d)", listen_hostport, w->port);
    *out = w;
    return 0;
fail:
    walsrv_free(w);
    return rc;
}

/* Frees the anchor once neither the acceptor nor the timer has anything in flight. */
static void
anchor_reap(struct wio_timer *t)
{
    struct walsrv_anchor *an = container_of(t, struct walsrv_anchor, tick);

    if (wio_accept_busy(&an->acc) || wio_timer_busy(t)) {
        if (wio_timer_arm(t->loop, t, WALSRV_REAP_MS, anchor_reap) == 0)
            return;
        log_warning(WALSRV_COMPONENT, "cannot wait for the acceptor's cancellation: leaking it");
        return;
    }
    free(an);
}

/* The loop is being freed (or the reap timer ended without firing): nothing more arrives. */
static void
anchor_release(struct wio_timer *t)
{
    free(container_of(t, struct walsrv_anchor, tick));
}

void
walsrv_free(struct walsrv *w)
{
    struct walsrv_anchor *an;

    if (w == NULL)
        return;
    while (w->conns != NULL) {
        struct walsrv_conn *c = w->conns;

        walsrv_conn_close(c, false);
    }
    an = w->anchor;
    an->w = NULL;
    wio_accept_stop(&an->acc);
    wio_timer_cancel(&an->tick);
    if (!wio_accept_busy(&an->acc) && !wio_timer_busy(&an->tick)) {
        free(an);
    } else {
        /* Wait (on the loop) for the cancellations to complete, then free. */
        an->tick.release = anchor_release;
        if (wio_timer_arm(w->loop, &an->tick, WALSRV_REAP_MS, anchor_reap) < 0)
            log_warning(WALSRV_COMPONENT, "cannot arm the reap timer: leaking the acceptor");
    }
    if (w->listen_fd >= 0 && close(w->listen_fd) != 0)
        log_debug(WALSRV_COMPONENT, "close of the listening socket failed: %s", strerror(errno));
    free(w);
}

void
walsrv_timeline_switched(struct walsrv *w)
{
    const struct spool_identity *id = spool_identity(w->spool);
    struct walsrv_conn *c, *next;

    log_info(WALSRV_COMPONENT, "the spool is on timeline %u now", id->timeline);
    /* Streams of the old timeline end at its switch point; pumping may close (unlink) a
     * connection, and only that one: take its successor first. */
    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        conn_enter(c);
        if (c->state == WALSRV_STREAMING)
            conn_pump(c);
        conn_leave(c);
    }
}

void
walsrv_wal_durable(struct walsrv *w, uint64_t flush_lsn)
{
    struct walsrv_conn *c, *next;

    log_debug(WALSRV_COMPONENT, "WAL durable to " LSN_FMT, LSN_ARGS(flush_lsn));
    /* Pumping may close (unlink) a connection, and only that one: take its successor first. */
    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        conn_enter(c);
        if (c->state == WALSRV_STREAMING)
            conn_pump(c);
        conn_leave(c);
    }
}

int
walsrv_port(const struct walsrv *w)
{
    return w->port;
}

unsigned
walsrv_streaming_clients(const struct walsrv *w)
{
    return w->nstreaming;
}
