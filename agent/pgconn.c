/*
 * pgconn.c - SQL on the local PostgreSQL without blocking the loop; contract in pgconn.h.
 *
 * States (every change is logged at debug level):
 *   IDLE        no connection; the queue is empty (a query queued here starts CONNECTING)
 *   CONNECTING  PQconnectPoll as the socket becomes readable or writable, as libpq asks
 *   READY       connected, nothing in flight: the head of the queue is sent at once
 *   BUSY        the head's query is in flight: results are read as the socket becomes
 *               readable, output flushed as it becomes writable
 * A failed connection (refused, lost, a protocol error) fails every queued query and goes
 * back to IDLE; a server error fails only its query.  One timer (on the connection's watch)
 * serves the queries' deadlines.
 */
#include "pgconn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "fdwatch.h"

#define PGCONN_MSG_MAX 512

struct pgq {
    struct pgq *next;
    char *sql;
    int nparams;
    char **params;
    uint64_t deadline_ms;
    unsigned timeout_ms;
    pgconn_done done; /* NULL once forgotten */
    void *ctx;
};

enum pgc_state {
    PGC_IDLE,
    PGC_CONNECTING,
    PGC_READY,
    PGC_BUSY,
};

static const char *const state_names[] = {"idle", "connecting", "ready", "busy"};

struct pgconn {
    struct wio_loop *loop;
    char *conninfo;
    char comp[96];
    enum pgc_state state;
    PGconn *pg;
    struct fdwatch *w;
    struct pgq *head, *tail;
    unsigned n;
    /* the head's answer so far */
    PGresult *last;
    bool failed;
    char err[PGCONN_MSG_MAX];
    char notice[PGCONN_MSG_MAX];
    char why[PGCONN_MSG_MAX + 64]; /* what broke the connection */
    char last_failure[PGCONN_MSG_MAX + 64]; /* logged once until a connection works */
    /* re-entrancy: callbacks may free us */
    unsigned depth;
    bool freed;
};

static void pgc_step(struct pgconn *c);
static int start_connect(struct pgconn *c);

static void
set_state(struct pgconn *c, enum pgc_state next)
{
    if (c->state != next)
        log_debug(c->comp, "%s -> %s", state_names[c->state], state_names[next]);
    c->state = next;
}

static void
q_free(struct pgq *q)
{
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->sql);
    free(q);
}

static void
answer(struct pgconn *c, struct pgq *q, const PGresult *res, const char *err,
       const char *notice)
{
    if (q->done != NULL && !c->freed)
        q->done(q->ctx, res, err, notice);
    q_free(q);
}

/* The server's error of res (or libpq's): "text (SQLSTATE xxxxx)". */
static void
result_error(char *dst, size_t cap, const PGresult *res, PGconn *pg)
{
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *sqlstate = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char line[PGCONN_MSG_MAX];

    if (primary != NULL) {
        log_one_line(line, sizeof(line), primary);
        if (snprintf(dst, cap, "%s (SQLSTATE %s)", line, sqlstate != NULL ? sqlstate : "?") >=
            (int)cap)
            dst[cap - 1] = '\0';
        return;
    }
    log_one_line(dst, cap, pg != NULL ? PQerrorMessage(pg) : "no connection");
    if (dst[0] == '\0')
        snprintf(dst, cap, "unknown error");
}

static void
on_notice(void *arg, const PGresult *res)
{
    struct pgconn *c = arg;
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    log_one_line(c->notice, sizeof(c->notice),
                 primary != NULL ? primary : PQresultErrorMessage(res));
    log_debug(c->comp, "server says: %s", c->notice);
}

/* Closes the connection (the watch first: a poll in flight holds the socket open). */
static void
close_conn(struct pgconn *c)
{
    fdwatch_release(c->w);
    c->w = NULL;
    if (c->pg != NULL)
        PQfinish(c->pg);
    c->pg = NULL;
    PQclear(c->last);
    c->last = NULL;
    set_state(c, PGC_IDLE);
}

/* Arms the timer for the earliest deadline of the queue. */
static void
arm_deadline(struct pgconn *c)
{
    uint64_t next = 0, now = clock_mono_ms();

    if (c->w == NULL)
        return;
    for (struct pgq *q = c->head; q != NULL; q = q->next)
        if (q->done != NULL && (next == 0 || q->deadline_ms < next))
            next = q->deadline_ms;
    if (next == 0) {
        fdwatch_timer_stop(c->w);
        return;
    }
    if (fdwatch_timer(c->w, next > now ? next - now : 0) < 0)
        log_warning(c->comp, "cannot arm the query timer: the next completion retries");
}

/* The connection failed: every queued query fails with why; back to IDLE. */
static void
fail_all(struct pgconn *c, const char *why)
{
    struct pgq *q = c->head;

    /* Once per outage: a server that is down refuses every query until it is back. */
    if (strcmp(c->last_failure, why) != 0)
        log_warning(c->comp, "%s", why);
    else
        log_debug(c->comp, "%s", why);
    snprintf(c->last_failure, sizeof(c->last_failure), "%s", why);
    c->head = c->tail = NULL;
    c->n = 0;
    close_conn(c);
    while (q != NULL) {
        struct pgq *next = q->next;
        answer(c, q, NULL, why, NULL);
        q = next;
    }
}

/*
 * The helpers below return 0, or a negative errno with what failed in c->why: the connection
 * is then unusable, and the caller fails it (fail_all) or, inside pgconn_query, takes the
 * query back.
 */
static int
wait_io(struct pgconn *c, bool write)
{
    int rc = fdwatch_wait(c->w, PQsocket(c->pg), write);

    if (rc < 0)
        snprintf(c->why, sizeof(c->why), "cannot poll the connection to PostgreSQL: %s",
                 wire_strerror(rc));
    return rc;
}

static int
flush_out(struct pgconn *c)
{
    int rc = PQflush(c->pg);

    if (rc < 0) {
        snprintf(c->why, sizeof(c->why), "sending to PostgreSQL failed: %s",
                 PQerrorMessage(c->pg));
        return -EIO;
    }
    return rc == 1 ? wait_io(c, true) : 0;
}

/* Sends the head of the queue (READY -> BUSY). */
static int
send_head(struct pgconn *c)
{
    struct pgq *q = c->head;
    int ok, rc;

    c->failed = false;
    c->err[0] = c->notice[0] = '\0';
    if (q->nparams == 0)
        ok = PQsendQuery(c->pg, q->sql);
    else
        ok = PQsendQueryParams(c->pg, q->sql, q->nparams, NULL, (const char *const *)q->params,
                               NULL, NULL, 0);
    if (!ok) {
        snprintf(c->why, sizeof(c->why), "cannot send a query to PostgreSQL: %s",
                 PQerrorMessage(c->pg));
        return -EIO;
    }
    set_state(c, PGC_BUSY);
    rc = flush_out(c);
    return rc < 0 ? rc : wait_io(c, false);
}

/* The head's results are all in: answer it, and send the next one. */
static void
finish_head(struct pgconn *c)
{
    struct pgq *q = c->head;
    PGresult *res = c->last;

    c->head = q->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->n--;
    c->last = NULL;
    set_state(c, PGC_READY);
    c->depth++;
    answer(c, q, c->failed ? NULL : res, c->failed ? c->err : NULL,
           c->notice[0] != '\0' ? c->notice : NULL);
    c->depth--;
    PQclear(res);
    if (c->freed)
        return;
    arm_deadline(c);
    if (c->state == PGC_READY && c->head != NULL && send_head(c) < 0)
        fail_all(c, c->why);
}

static void
read_results(struct pgconn *c)
{
    if (!PQconsumeInput(c->pg)) {
        snprintf(c->why, sizeof(c->why), "the connection to PostgreSQL was lost: %s",
                 PQerrorMessage(c->pg));
        fail_all(c, c->why);
        return;
    }
    while (c->state == PGC_BUSY && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);

        if (r == NULL) {
            if (!c->failed && c->last == NULL) {
                c->failed = true;
                snprintf(c->err, sizeof(c->err), "the query returned nothing");
            }
            finish_head(c);
            return;
        }
        switch (PQresultStatus(r)) {
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
            PQclear(c->last);
            c->last = r;
            break;
        default:
            if (!c->failed) {
                c->failed = true;
                result_error(c->err, sizeof(c->err), r, c->pg);
            }
            PQclear(r);
            break;
        }
    }
    if (c->state == PGC_BUSY && wait_io(c, false) < 0)
        fail_all(c, c->why);
}

static void
connect_poll(struct pgconn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        if (wait_io(c, false) < 0)
            fail_all(c, c->why);
        return;
    case PGRES_POLLING_WRITING:
        if (wait_io(c, true) < 0)
            fail_all(c, c->why);
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->pg, 1) != 0) {
            fail_all(c, "cannot make the connection to PostgreSQL non-blocking");
            return;
        }
        PQsetNoticeReceiver(c->pg, on_notice, c);
        log_debug(c->comp, "connected to PostgreSQL (server %d)", PQserverVersion(c->pg));
        c->last_failure[0] = '\0';
        set_state(c, PGC_READY);
        if (c->head != NULL && send_head(c) < 0)
            fail_all(c, c->why);
        return;
    default: {
        char why[PGCONN_MSG_MAX + 64], line[PGCONN_MSG_MAX];
        snprintf(why, sizeof(why), "cannot connect to PostgreSQL: %s",
                 log_one_line(line, sizeof(line), PQerrorMessage(c->pg)));
        fail_all(c, why);
        return;
    }
    }
}

static void
pgc_step(struct pgconn *c)
{
    if (c->state == PGC_CONNECTING)
        connect_poll(c);
    else if (c->state == PGC_BUSY)
        read_results(c);
}

static void pgc_destroy(struct pgconn *c);

static void
on_io(void *ctx, bool write, int res)
{
    struct pgconn *c = ctx;

    c->depth++;
    if (res < 0) {
        char why[128];
        snprintf(why, sizeof(why), "polling the connection to PostgreSQL failed: %s",
                 wire_strerror(res));
        fail_all(c, why);
    } else if (write && c->state == PGC_BUSY) {
        if (flush_out(c) < 0)
            fail_all(c, c->why);
        else
            pgc_step(c);
    } else {
        pgc_step(c);
    }
    if (--c->depth == 0 && c->freed)
        pgc_destroy(c);
}

/* Takes *pp out of the queue. */
static struct pgq *
q_unlink(struct pgconn *c, struct pgq **pp)
{
    struct pgq *q = *pp;

    *pp = q->next;
    if (c->tail == q) {
        c->tail = NULL;
        for (struct pgq *t = c->head; t != NULL; t = t->next)
            c->tail = t;
    }
    c->n--;
    q->next = NULL;
    return q;
}

static void
on_timer(void *ctx)
{
    struct pgconn *c = ctx;
    uint64_t now = clock_mono_ms();
    struct pgq **pp = &c->head;

    c->depth++;
    while (!c->freed && *pp != NULL) {
        struct pgq *q = *pp;
        bool in_flight = q == c->head && c->state != PGC_READY;
        char why[96];

        if (q->done == NULL || now < q->deadline_ms) {
            pp = &q->next;
            continue;
        }
        snprintf(why, sizeof(why), "no answer from PostgreSQL within %.1f s",
                 q->timeout_ms / 1000.0);
        q = q_unlink(c, pp);
        if (in_flight) {
            /* The connection goes with it: libpq 15 cannot cancel without blocking. */
            log_warning(c->comp, "%s (%s): closing the connection", why, state_names[c->state]);
            close_conn(c);
        }
        answer(c, q, NULL, why, NULL);
    }
    if (!c->freed) {
        if (c->state == PGC_IDLE && c->head != NULL) {
            int rc = start_connect(c);
            if (rc < 0) {
                snprintf(c->why, sizeof(c->why), "cannot start a connection to PostgreSQL: %s",
                         wire_strerror(rc));
                fail_all(c, c->why);
            }
        } else {
            arm_deadline(c);
        }
    }
    if (--c->depth == 0 && c->freed)
        pgc_destroy(c);
}

static const struct fdwatch_ops watch_ops = {.on_io = on_io, .on_timer = on_timer};

/* Starts connecting (IDLE -> CONNECTING).  Returns 0 or a negative errno (nothing started). */
static int
start_connect(struct pgconn *c)
{
    static const char *const keys[] = {"dbname", "application_name", "fallback_application_name",
                                       NULL};
    const char *vals[] = {c->conninfo, NULL, "walmirror-agent", NULL};
    int rc;

    c->pg = PQconnectStartParams(keys, vals, 1);
    if (c->pg == NULL)
        return -ENOMEM;
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        char line[PGCONN_MSG_MAX], why[PGCONN_MSG_MAX + 64];

        snprintf(why, sizeof(why), "cannot connect to PostgreSQL: %s",
                 log_one_line(line, sizeof(line), PQerrorMessage(c->pg)));
        if (strcmp(c->last_failure, why) != 0)
            log_warning(c->comp, "%s", why);
        snprintf(c->last_failure, sizeof(c->last_failure), "%s", why);
        PQfinish(c->pg);
        c->pg = NULL;
        return -ECONNREFUSED;
    }
    rc = fdwatch_new(&c->w, c->loop, &watch_ops, c);
    if (rc < 0) {
        PQfinish(c->pg);
        c->pg = NULL;
        return rc;
    }
    set_state(c, PGC_CONNECTING);
    arm_deadline(c);
    /* PQconnectStartParams leaves the first move to PQconnectPoll: writing (the connect). */
    rc = fdwatch_wait(c->w, PQsocket(c->pg), true);
    if (rc < 0) {
        close_conn(c);
        return rc;
    }
    return 0;
}

int
pgconn_new(struct pgconn **out, struct wio_loop *loop, const char *conninfo, const char *comp)
{
    struct pgconn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -ENOMEM;
    c->conninfo = strdup(conninfo);
    if (c->conninfo == NULL) {
        free(c);
        return -ENOMEM;
    }
    c->loop = loop;
    snprintf(c->comp, sizeof(c->comp), "%s", comp);
    *out = c;
    return 0;
}

static void
pgc_destroy(struct pgconn *c)
{
    struct pgq *q = c->head;

    while (q != NULL) {
        struct pgq *next = q->next;
        q_free(q);
        q = next;
    }
    c->head = NULL;
    close_conn(c);
    free(c->conninfo);
    free(c);
}

void
pgconn_free(struct pgconn *c)
{
    if (c == NULL || c->freed)
        return;
    c->freed = true;
    if (c->depth == 0)
        pgc_destroy(c);
}

int
pgconn_query(struct pgconn *c, const char *sql, int nparams, const char *const *params,
             unsigned timeout_ms, pgconn_done done, void *ctx)
{
    struct pgq *q = calloc(1, sizeof(*q));
    int rc;

    if (q == NULL)
        return -ENOMEM;
    q->sql = strdup(sql);
    q->params = nparams > 0 ? calloc((size_t)nparams, sizeof(char *)) : NULL;
    if (q->sql == NULL || (nparams > 0 && q->params == NULL)) {
        q_free(q);
        return -ENOMEM;
    }
    for (int i = 0; i < nparams; i++) {
        q->params[i] = strdup(params[i] != NULL ? params[i] : "");
        q->nparams = i + 1;
        if (q->params[i] == NULL) {
            q_free(q);
            return -ENOMEM;
        }
    }
    q->timeout_ms = timeout_ms;
    q->deadline_ms = clock_mono_ms() + timeout_ms;
    q->done = done;
    q->ctx = ctx;
    if (c->tail != NULL)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
    c->n++;
    switch (c->state) {
    case PGC_IDLE:
        /* The queue was empty: only q waits, and a failure here is q's alone. */
        rc = start_connect(c);
        break;
    case PGC_READY:
        /* Connected and idle: the queue was empty, q goes out now. */
        rc = send_head(c);
        if (rc < 0) {
            log_warning(c->comp, "%s", c->why);
            close_conn(c);
        }
        break;
    default:
        arm_deadline(c);
        return 0;
    }
    if (rc < 0) {
        c->head = c->tail = NULL;
        c->n = 0;
        q_free(q);
        return rc;
    }
    arm_deadline(c);
    return 0;
}

void
pgconn_forget(struct pgconn *c, void *ctx)
{
    if (c == NULL)
        return;
    for (struct pgq *q = c->head; q != NULL; q = q->next)
        if (q->ctx == ctx)
            q->done = NULL;
}

unsigned
pgconn_pending(const struct pgconn *c)
{
    return c != NULL ? c->n : 0;
}
