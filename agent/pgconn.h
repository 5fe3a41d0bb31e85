/*
 * pgconn.h - SQL on the site's own PostgreSQL without blocking the agent's loop: one regular
 * (non-replication) libpq connection, driven with PQconnectStartParams/PQconnectPoll and
 * PQsendQuery(Params)/PQconsumeInput through the io_uring loop (pqwatch.h), and a FIFO of
 * queries, each answered by one callback.
 *
 * The connection is made when a query needs it and kept for the next ones; a failed or lost
 * connection fails the queries that waited on it and is made again for the next query.
 * Every query has a deadline (connecting included): past it the query fails and the
 * connection is closed (libpq 15 has no non-blocking cancel; the server ends the session when
 * it sees the socket go).  A query text may hold several statements when it has no
 * parameters; the answer is then its last result, and any failed statement fails it.
 *
 * Callbacks come from the loop, never from inside pgconn_query() or pgconn_free(); a callback
 * may queue more queries, or free the pgconn.  Warnings and notices the server sends while a
 * query runs are kept: the callback gets the last one (the synchronous-replication probe
 * looks for "canceling wait for synchronous replication").
 */
#ifndef WALMIRROR_AGENT_PGCONN_H
#define WALMIRROR_AGENT_PGCONN_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "err.h"
#include "wio.h"

struct pgconn;

/*
 * The answer: res is the last result (PGRES_TUPLES_OK or PGRES_COMMAND_OK) and err NULL, or
 * res NULL and err one line saying what failed ("connection refused", the server's error
 * with its SQLSTATE, "no answer within 5.0 s").  notice: the last warning or notice the
 * server sent during the query, or NULL.  All are valid during the call only.
 */
typedef void (*pgconn_done)(void *ctx, const PGresult *res, const char *err, const char *notice);

/* conninfo: the site's pg_conninfo (copied); comp names the log component. */
WM_MUSTCHECK int pgconn_new(struct pgconn **out, struct wio_loop *loop, const char *conninfo,
                            const char *comp);
/* Closes the connection; queued queries are dropped without their callbacks.  NULL is fine. */
void pgconn_free(struct pgconn *c);

/*
 * Queues sql with nparams text parameters (copied; with none, sql may hold several
 * statements) to be answered within timeout_ms.  Returns 0 (done is then called exactly
 * once, unless forgotten), or a negative errno and done is not called: -ENOMEM, the errno of
 * a connection that could not even be started (-ECONNREFUSED for a conninfo libpq refuses),
 * or -EIO for a query that could not be sent on an idle connection.
 */
WM_MUSTCHECK int pgconn_query(struct pgconn *c, const char *sql, int nparams,
                              const char *const *params, unsigned timeout_ms, pgconn_done done,
                              void *ctx);

/* Drops the callbacks of every queued query whose ctx is ctx (their owner is going away). */
void pgconn_forget(struct pgconn *c, void *ctx);

/* Queries queued or running. */
unsigned pgconn_pending(const struct pgconn *c);

#endif
