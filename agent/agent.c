/*
 * agent.c - the agent daemon: role, peer link, source and sink wiring; contract in agent.h.
 *
 * Everything runs on one io_uring loop (wio.h).  Callbacks only record what happened; the
 * decisions that change state - starting a session, flushing the spool, sending an ACK,
 * freeing a dead connection - are taken in agent_tick(), once per turn of the loop, after all
 * the completions of that turn were dispatched.  That is where the durability loop of
 * STYLE.md lives: drain what the link delivered, write it, one fdatasync, one ACK for the
 * highest contiguous durable position.
 *
 * Positions: the sink's ACK carries write = bytes written to the spool, flush = bytes made
 * durable by fdatasync, apply = the local standby's replay position (never above flush).  Each
 * only moves forward, and flush <= write; nothing is acknowledged before it is true.
 */
#include "agent.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "frame.h"
#include "httpapi.h"
#include "log.h"
#include "setup.h"
#include "source.h"
#include "spool.h"
#include "status.h"
#include "tls.h"
#include "walsrv.h"
#include "wio.h"

#define AGENT_RETRY_MS 1000
#define AGENT_BACKLOG_PAUSE (32u * 1024 * 1024)
#define LSN_ARGS(lsn) (unsigned)((lsn) >> 32), (unsigned)(lsn)

enum agent_role {
    AGENT_SOURCE,
    AGENT_SINK,
};

#define AGENT_MAX_LINKS 4
#define AGENT_STATUS_EVERY_MS 100
#define LAG_SAMPLES 256

/*
 * Lag in seconds per stage, measured as PostgreSQL's LagTracker does: when WAL up to an LSN is
 * sent, remember (LSN, time); when the sink confirms a stage past that LSN, the stage's lag is
 * the time since.  Samples are taken at most once per millisecond; the oldest are dropped
 * when the ring is full, which only makes the figure coarser.
 */
struct lag_tracker {
    struct {
        uint64_t lsn;
        uint64_t at_us;
    } s[LAG_SAMPLES];
    unsigned head, n;
    unsigned next[3]; /* per stage: index (offset from the oldest) of the next sample to match */
    double lag_s[3];  /* per stage: last measured, or -1 */
};

enum lag_stage {
    LAG_WRITE,
    LAG_FLUSH,
    LAG_APPLY,
};

/* One connection with the peer; the callbacks' context, so they know which one fired. */
struct link {
    struct agent *a;
    struct conn *c;
    bool established;
    bool dead;
};

struct agent {
    const struct wm_config *cfg;
    struct wio_loop *loop;
    enum agent_role role;
    struct tls_config *tls;
    char comp[80];
    int exit_status;
    bool failed;

    /* the local PostgreSQL */
    uint64_t local_sysid;
    uint32_t local_segsize;

    /* the peer link */
    int listen_fd;
    struct wio_acceptor acc;
    struct wio_connector con;
    bool connecting;
    struct link *links[AGENT_MAX_LINKS]; /* live or dead, freed in agent_tick when dead */
    struct link *active;                 /* the established link that carries the stream */
    struct msg_hello peer;               /* the active link's peer */

    /* SOURCE */
    struct source *src;
    bool src_identified;
    bool src_dead;
    bool streaming;
    struct source_identity src_id;
    uint8_t *batch;
    size_t batch_len;
    uint64_t batch_lsn;
    uint64_t ack_write, ack_flush, ack_apply;
    uint64_t retry_at_ms;
    uint64_t link_retry_at_ms; /* next attempt to reach the sink */

    struct lag_tracker lag;
    uint64_t primary_lsn; /* end of the WAL the primary gave us */
    uint64_t sent_lsn;    /* end of the WAL sent to the sink */

    /* status and the HTTP API */
    struct status_board board;
    struct httpapi *http;
    uint64_t started_us;
    uint64_t status_at_ms;
    bool failover_paused;
    char last_error[256];

    /* SINK */
    struct spool *spool;
    struct walsrv *walsrv;
    uint64_t appended;        /* end of what was handed to the spool */
    uint64_t written;         /* spool write position */
    uint64_t flushed;         /* spool flush position */
    uint64_t applied;         /* the standby's replay position, <= flushed */
    uint64_t flush_requested; /* appended position covered by the last spool_flush */
    bool ack_dirty;
    struct msg_ack last_ack;
};

static uint64_t
max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* The last error worth an operator's eye, shown in the status; cut to fit. */
static void __attribute__((format(printf, 2, 3)))
set_last_error(struct agent *a, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(a->last_error, sizeof(a->last_error), fmt, ap);
    va_end(ap);
}

/* ---- lag ---- */

static void
lag_reset(struct lag_tracker *t)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < 3; i++)
        t->lag_s[i] = -1;
}

static void
lag_sent(struct lag_tracker *t, uint64_t lsn, uint64_t now_us)
{
    unsigned last = (t->head + t->n - 1) % LAG_SAMPLES;

    if (t->n > 0 && now_us - t->s[last].at_us < 1000) {
        t->s[last].lsn = lsn; /* same millisecond: extend the sample */
        return;
    }
    if (t->n == LAG_SAMPLES) {
        t->head = (t->head + 1) % LAG_SAMPLES;
        t->n--;
        for (int i = 0; i < 3; i++)
            if (t->next[i] > 0)
                t->next[i]--;
    }
    t->s[(t->head + t->n) % LAG_SAMPLES].lsn = lsn;
    t->s[(t->head + t->n) % LAG_SAMPLES].at_us = now_us;
    t->n++;
}

static void
lag_confirmed(struct lag_tracker *t, enum lag_stage stage, uint64_t lsn, uint64_t now_us)
{
    unsigned min_next;

    while (t->next[stage] < t->n && t->s[(t->head + t->next[stage]) % LAG_SAMPLES].lsn <= lsn) {
        t->lag_s[stage] =
            (double)(now_us - t->s[(t->head + t->next[stage]) % LAG_SAMPLES].at_us) / 1e6;
        t->next[stage]++;
    }
    /* Drop the samples every stage has passed. */
    min_next = t->next[0];
    for (int i = 1; i < 3; i++)
        if (t->next[i] < min_next)
            min_next = t->next[i];
    t->head = (t->head + min_next) % LAG_SAMPLES;
    t->n -= min_next;
    for (int i = 0; i < 3; i++)
        t->next[i] -= min_next;
}

/* ---- the local PostgreSQL ---- */

/*
 * Reads the cluster's system identifier and WAL segment size with pg_controldata, which works
 * whether the server runs or not.
 */
static int
read_control_data(struct agent *a)
{
    char cmd[4200], line[512];
    FILE *p;
    int rc;

    snprintf(cmd, sizeof(cmd), "LC_ALL=C '%s/pg_controldata' -D '%s' 2>&1", setup_pg_bindir(),
             a->cfg->pgdata);
    p = popen(cmd, "r");
    if (p == NULL)
        return -errno;
    while (fgets(line, sizeof(line), p) != NULL) {
        unsigned long long v;
        if (sscanf(line, "Database system identifier: %llu", &v) == 1)
            a->local_sysid = v;
        else if (sscanf(line, "Bytes per WAL segment: %llu", &v) == 1)
            a->local_segsize = (uint32_t)v;
    }
    rc = pclose(p);
    if (rc != 0 || a->local_sysid == 0 || a->local_segsize == 0) {
        log_error(a->comp,
                  "cannot read the control data of %s with pg_controldata (is pgdata "
                  "right, and readable by this user?)",
                  a->cfg->pgdata);
        return -EINVAL;
    }
    return 0;
}

/*
 * Decides the role: a primary makes this agent the source, a standby the sink.  When the
 * local server cannot be reached, standby.signal in pgdata decides for a standby (the sink
 * can spool WAL while its standby is down); a primary must be up for the source to work.
 */
static int
decide_role(struct agent *a)
{
    char path[4200], msg[512];
    PGconn *pg;
    PGresult *res;
    struct stat st;

    pg = PQconnectdb(a->cfg->pg_conninfo);
    if (PQstatus(pg) == CONNECTION_OK) {
        res = PQexec(pg, "SELECT pg_is_in_recovery()");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            a->role = strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? AGENT_SINK : AGENT_SOURCE;
            PQclear(res);
            PQfinish(pg);
            return 0;
        }
        log_error(a->comp, "pg_is_in_recovery() failed: %s",
                  log_one_line(msg, sizeof(msg), PQerrorMessage(pg)));
        PQclear(res);
        PQfinish(pg);
        return -EIO;
    }
    snprintf(path, sizeof(path), "%s/standby.signal", a->cfg->pgdata);
    if (stat(path, &st) == 0) {
        log_warning(a->comp, "local PostgreSQL not reachable (%s); %s exists: acting as sink",
                    log_one_line(msg, sizeof(msg), PQerrorMessage(pg)), path);
        PQfinish(pg);
        a->role = AGENT_SINK;
        return 0;
    }
    log_error(a->comp, "cannot reach the local PostgreSQL to learn the role: %s",
              log_one_line(msg, sizeof(msg), PQerrorMessage(pg)));
    PQfinish(pg);
    return -ECONNREFUSED;
}

/* ---- the peer link ---- */

static void
link_dead(struct link *l)
{
    l->dead = true;
    if (l->a->active == l)
        l->a->active = NULL;
}

/* The established link, if any, on which WAL and ACKs travel. */
static struct conn *
active_conn(const struct agent *a)
{
    return a->active != NULL ? a->active->c : NULL;
}

static int
on_peer_hello(void *ctx, const struct msg_hello *peer, char *why, size_t whylen)
{
    struct agent *a = ((struct link *)ctx)->a;

    if (a->role == AGENT_SOURCE) {
        if (peer->role != MSG_ROLE_SINK) {
            snprintf(why, whylen, "%s is a %s, not a sink: two primaries?", peer->node_name,
                     msg_role_name(peer->role));
            return WIRE_EPROTO;
        }
        if (peer->system_id != 0 && peer->system_id != a->src_id.system_id) {
            snprintf(why, whylen,
                     "system identifier mismatch: sink %s mirrors cluster %" PRIu64
                     ", this primary is cluster %" PRIu64,
                     peer->node_name, peer->system_id, a->src_id.system_id);
            return WIRE_EPROTO;
        }
    } else {
        struct spool_identity id = {
            .system_id = peer->system_id, .seg_size = a->local_segsize, .timeline = peer->timeline};
        if (peer->role != MSG_ROLE_SOURCE) {
            snprintf(why, whylen, "%s is a %s, not a source", peer->node_name,
                     msg_role_name(peer->role));
            return WIRE_EPROTO;
        }
        if (peer->system_id != a->local_sysid) {
            snprintf(why, whylen,
                     "system identifier mismatch: source %s streams cluster %" PRIu64
                     ", the standby here is cluster %" PRIu64,
                     peer->node_name, peer->system_id, a->local_sysid);
            return WIRE_EPROTO;
        }
        if (spool_set_identity(a->spool, &id) < 0) {
            snprintf(why, whylen, "the spool in %s holds WAL of another cluster",
                     a->cfg->spool_dir);
            return WIRE_EPROTO;
        }
    }
    return 0;
}

static void
on_peer_established(void *ctx)
{
    struct link *l = ctx;
    struct agent *a = l->a;

    l->established = true;
    if (a->active != NULL && a->active != l) {
        /* An authenticated source that reconnected supersedes the link we still had. */
        struct link *old = a->active;
        log_info(a->comp, "new link from %s replaces the old one", a->cfg->peer.name);
        conn_close(old->c, WIRE_EPROTO, "superseded by a new connection from the same peer");
        link_dead(old);
    }
    a->active = l;
    a->peer = *conn_peer_hello(l->c);
    if (a->role == AGENT_SINK)
        a->ack_dirty = true; /* tell the new source where we are */
}

/*
 * Sends the gathered WAL as one frame.  A send that fails ends the session: the stream starts
 * again from what the sink holds durably, so nothing is skipped.
 */
static void
flush_batch(struct agent *a)
{
    int rc;

    if (a->batch_len == 0 || active_conn(a) == NULL)
        return;
    rc = conn_send_wal(active_conn(a), a->batch_lsn, a->batch, a->batch_len);
    if (rc < 0) {
        log_error(a->comp, "cannot send WAL at %X/%X: %s", LSN_ARGS(a->batch_lsn),
                  wire_strerror(rc));
        a->batch_len = 0;
        a->src_dead = true;
        return;
    }
    a->batch_lsn += a->batch_len;
    a->batch_len = 0;
    a->sent_lsn = a->batch_lsn;
    lag_sent(&a->lag, a->sent_lsn, clock_mono_us());
    if (a->src != NULL && conn_backlog(active_conn(a)) > AGENT_BACKLOG_PAUSE)
        source_pause(a->src, true);
}

static void
on_peer_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct link *l = ctx;
    struct agent *a = l->a;
    int rc;

    if (a->role != AGENT_SINK || a->failed || l != a->active)
        return;
    rc = spool_append(a->spool, lsn, data, len);
    if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "WAL at %X/%X does not continue the spool (at %X/%X)",
                 LSN_ARGS(lsn), LSN_ARGS(spool_write_lsn(a->spool)));
        conn_close(l->c, WIRE_EPROTO, msg);
        return;
    }
    a->appended = max_u64(a->appended, lsn + len);
}

static void
on_peer_ack(void *ctx, const struct msg_ack *ack)
{
    struct link *l = ctx;
    struct agent *a = l->a;
    int rc;

    if (a->role != AGENT_SOURCE || a->src == NULL || !a->streaming || l != a->active)
        return;
    /* Monotonic: a late or reordered ACK never moves a position back. */
    a->ack_write = max_u64(a->ack_write, ack->write_lsn);
    a->ack_flush = max_u64(a->ack_flush, ack->flush_lsn);
    a->ack_apply = max_u64(a->ack_apply, ack->apply_lsn);
    {
        uint64_t now = clock_mono_us();
        lag_confirmed(&a->lag, LAG_WRITE, a->ack_write, now);
        lag_confirmed(&a->lag, LAG_FLUSH, a->ack_flush, now);
        lag_confirmed(&a->lag, LAG_APPLY, a->ack_apply, now);
    }
    rc = source_report(a->src, a->ack_write, a->ack_flush, a->ack_apply);
    if (rc < 0)
        log_warning(a->comp, "cannot report positions to the primary: %s", wire_strerror(rc));
}

static void
on_peer_drained(void *ctx)
{
    struct agent *a = ((struct link *)ctx)->a;

    if (a->src != NULL)
        source_pause(a->src, false);
}

static void
on_peer_closed(void *ctx, int reason, const char *message)
{
    struct link *l = ctx;
    struct agent *a = l->a;

    if (l->established)
        log_warning(a->comp, "link to %s down: %s", a->cfg->peer.name, message);
    set_last_error(a, "link to %s: %.200s", a->cfg->peer.name, message);
    link_dead(l);
    if (a->role == AGENT_SOURCE) {
        if (a->streaming)
            a->src_dead = true; /* start over from what the sink holds */
        else
            a->link_retry_at_ms = clock_mono_ms() + AGENT_RETRY_MS; /* keep the primary */
    }
    (void)reason;
}

static const struct conn_ops peer_ops = {
    .on_hello = on_peer_hello,
    .on_established = on_peer_established,
    .on_wal = on_peer_wal,
    .on_ack = on_peer_ack,
    .on_drained = on_peer_drained,
    .on_closed = on_peer_closed,
};

static int
start_link(struct agent *a, int fd, bool acceptor)
{
    struct msg_hello hello = {.role = a->role == AGENT_SOURCE ? MSG_ROLE_SOURCE : MSG_ROLE_SINK,
                              .capabilities = MSG_CAP_LZ4};
    struct conn_config cc = {
        .tls = a->tls,
        .peer_name = a->cfg->peer.name,
        .hello = &hello,
        .epoch = 1,
        .compress = a->cfg->compression == CONFIG_COMPRESSION_LZ4,
        .lz4_acceleration = 1,
        .heartbeat_ms = (unsigned)a->cfg->heartbeat_interval_ms,
        .timeout_ms = (unsigned)a->cfg->peer_timeout_ms,
    };
    struct link *l;
    int rc, slot;

    snprintf(hello.node_name, sizeof(hello.node_name), "%s", a->cfg->node_name);
    if (a->role == AGENT_SOURCE) {
        hello.system_id = a->src_id.system_id;
        hello.timeline = a->src_id.timeline;
        hello.durable_lsn = a->src_id.xlogpos;
    } else {
        const struct spool_identity *id = spool_identity(a->spool);
        hello.system_id = id->system_id;
        hello.timeline = id->timeline;
        hello.durable_lsn = a->flushed;
        hello.applied_lsn = a->applied;
    }
    for (slot = 0; slot < AGENT_MAX_LINKS && a->links[slot] != NULL; slot++)
        ;
    if (slot == AGENT_MAX_LINKS) {
        log_warning(a->comp, "too many connections from peers at once; dropping one");
        close(fd);
        return -EBUSY;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        close(fd);
        return -ENOMEM;
    }
    l->a = a;
    rc = conn_new(&l->c, a->loop, fd, acceptor, &cc, &peer_ops, l);
    if (rc < 0) {
        free(l);
        log_error(a->comp, "cannot set up the link: %s", wire_strerror(rc));
        return rc;
    }
    a->links[slot] = l;
    return 0;
}

static void
on_accept(struct wio_acceptor *acc, int fd)
{
    struct agent *a = (struct agent *)((char *)acc - offsetof(struct agent, acc));

    if (fd < 0) {
        log_error(a->comp, "accept on %s failed: %s", a->cfg->listen.text, wire_strerror(fd));
        return;
    }
    if (a->role != AGENT_SINK) {
        close(fd); /* the source connects; it does not accept */
        return;
    }
    if (start_link(a, fd, true) < 0)
        log_warning(a->comp, "dropped an incoming link");
}

static void
on_connect(struct wio_connector *con, int fd)
{
    struct agent *a = (struct agent *)((char *)con - offsetof(struct agent, con));

    a->connecting = false;
    if (fd < 0) {
        log_warning(a->comp, "cannot connect to %s at %s: %s", a->cfg->peer.name,
                    a->cfg->peer.addr.text, wire_strerror(fd));
        set_last_error(a, "cannot connect to %s at %s: %s", a->cfg->peer.name,
                       a->cfg->peer.addr.text, wire_strerror(fd));
        /* The primary's session stays; only the link is tried again. */
        a->link_retry_at_ms = clock_mono_ms() + AGENT_RETRY_MS;
        return;
    }
    if (a->src == NULL || a->src_dead) {
        close(fd);
        return;
    }
    if (start_link(a, fd, false) < 0)
        a->src_dead = true;
}

/* ---- SOURCE ---- */

static void
on_src_identified(void *ctx, const struct source_identity *id)
{
    struct agent *a = ctx;

    a->src_id = *id;
    a->src_identified = true;
    log_info(a->comp, "primary: cluster %" PRIu64 ", timeline %u, at %X/%X; slot %s restart %X/%X",
             id->system_id, id->timeline, LSN_ARGS(id->xlogpos), a->cfg->slot_name,
             LSN_ARGS(id->slot_restart_lsn));
}

static void
on_src_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct agent *a = ctx;

    a->primary_lsn = lsn + len;
    while (len > 0) {
        size_t n;

        if (a->batch_len > 0 &&
            (lsn != a->batch_lsn + a->batch_len || a->batch_len == FRAME_MAX_RAW))
            flush_batch(a);
        /* A session that is ending (link lost, send failed) restarts from the sink's
         * durable position: WAL still arriving for it is dropped, not batched. */
        if (a->src_dead || active_conn(a) == NULL) {
            a->batch_len = 0;
            return;
        }
        if (a->batch_len == 0)
            a->batch_lsn = lsn;
        n = FRAME_MAX_RAW - a->batch_len;
        if (n > len)
            n = len;
        memcpy(a->batch + a->batch_len, data, n);
        a->batch_len += n;
        lsn += n;
        data += n;
        len -= n;
    }
}

static void
on_src_drained(void *ctx)
{
    /* The primary has nothing more right now: send what was gathered. */
    flush_batch(ctx);
}

static void
on_src_closed(void *ctx, int err, const char *message)
{
    struct agent *a = ctx;

    log_warning(a->comp, "replication from the primary ended: %s", message);
    set_last_error(a, "primary: %.230s", message);
    a->src_dead = true;
    (void)err;
}

static const struct source_ops src_ops = {
    .on_identified = on_src_identified,
    .on_wal = on_src_wal,
    .on_drained = on_src_drained,
    .on_closed = on_src_closed,
};

static void
close_links(struct agent *a, const char *why)
{
    for (int i = 0; i < AGENT_MAX_LINKS; i++) {
        struct link *l = a->links[i];
        if (l != NULL && !l->dead) {
            conn_close(l->c, 0, why);
            link_dead(l);
        }
    }
}

static bool
have_link(const struct agent *a)
{
    for (int i = 0; i < AGENT_MAX_LINKS; i++)
        if (a->links[i] != NULL && !a->links[i]->dead)
            return true;
    return false;
}

static void
source_teardown(struct agent *a)
{
    close_links(a, "source restarting");
    if (a->src != NULL) {
        source_free(a->src);
        a->src = NULL;
    }
    a->src_identified = false;
    a->src_dead = false;
    a->streaming = false;
    a->batch_len = 0;
    a->ack_write = a->ack_flush = a->ack_apply = 0;
    lag_reset(&a->lag);
    a->retry_at_ms = clock_mono_ms() + AGENT_RETRY_MS;
}

static void
source_tick(struct agent *a)
{
    int rc;

    if (a->src_dead)
        source_teardown(a);
    if (a->src == NULL) {
        if (clock_mono_ms() < a->retry_at_ms)
            return;
        rc = source_new(&a->src, a->loop, a->cfg->pg_conninfo, a->cfg->slot_name,
                        a->cfg->application_name, &src_ops, a);
        if (rc < 0) {
            a->src = NULL;
            log_error(a->comp, "cannot start replication from the primary: %s", wire_strerror(rc));
            a->retry_at_ms = clock_mono_ms() + AGENT_RETRY_MS;
        }
        return;
    }
    if (!a->src_identified)
        return;
    if (!have_link(a) && !a->connecting && clock_mono_ms() >= a->link_retry_at_ms) {
        rc = wio_connect_start(a->loop, &a->con, a->cfg->peer.addr.text, on_connect);
        if (rc < 0) {
            log_error(a->comp, "cannot connect to %s: %s", a->cfg->peer.addr.text,
                      wire_strerror(rc));
            a->src_dead = true;
            return;
        }
        a->connecting = true;
        return;
    }
    if (a->active != NULL && !a->streaming) {
        /* Resume at the segment boundary of what the sink holds durably (source.h rounds). */
        uint64_t start = a->peer.durable_lsn;
        log_info(a->comp, "sink %s holds WAL up to %X/%X: streaming from its segment",
                 a->peer.node_name, LSN_ARGS(start));
        rc = source_start(a->src, start, 0);
        if (rc < 0) {
            log_error(a->comp, "cannot start streaming: %s", wire_strerror(rc));
            a->src_dead = true;
            return;
        }
        a->streaming = true;
    }
}

/* ---- SINK ---- */

static void
on_spool_written(void *ctx, uint64_t write_lsn)
{
    struct agent *a = ctx;

    a->written = max_u64(a->written, write_lsn);
    a->ack_dirty = true;
}

static void
on_spool_flushed(void *ctx, uint64_t flush_lsn)
{
    struct agent *a = ctx;

    a->flushed = max_u64(a->flushed, flush_lsn);
    a->ack_dirty = true;
    if (a->walsrv != NULL)
        walsrv_wal_durable(a->walsrv, a->flushed);
}

static void
on_spool_failed(void *ctx, int err, const char *what)
{
    struct agent *a = ctx;

    /* Never retried, never acknowledged: the process ends (STYLE.md, walreceiver's PANIC). */
    log_error(a->comp, "spool failure, stopping: %s: %s", what, wire_strerror(err));
    set_last_error(a, "spool: %.200s: %s", what, wire_strerror(err));
    a->failed = true;
    a->exit_status = 1;
}

static const struct spool_ops spool_cb = {
    .on_written = on_spool_written,
    .on_flushed = on_spool_flushed,
    .on_failed = on_spool_failed,
};

static void
on_standby_reply(void *ctx, const char *application_name, uint64_t write_lsn, uint64_t flush_lsn,
                 uint64_t apply_lsn)
{
    struct agent *a = ctx;
    uint64_t apply = apply_lsn < a->flushed ? apply_lsn : a->flushed;

    (void)application_name;
    (void)write_lsn;
    (void)flush_lsn;
    if (apply > a->applied) {
        a->applied = apply;
        a->ack_dirty = true;
    }
}

static const struct walsrv_ops walsrv_cb = {
    .on_reply = on_standby_reply,
};

static void
sink_tick(struct agent *a)
{
    int rc;

    if (a->failed)
        return;
    /* Group flush: one fdatasync for everything appended since the last one completed. */
    if (a->appended > a->flush_requested && a->flushed >= a->flush_requested) {
        rc = spool_flush(a->spool);
        if (rc < 0) {
            on_spool_failed(a, rc, "cannot request a spool flush");
            return;
        }
        a->flush_requested = a->appended;
    }
    if (a->ack_dirty && active_conn(a) != NULL) {
        struct msg_ack ack = {.write_lsn = a->written,
                              .flush_lsn = a->flushed,
                              .apply_lsn = a->applied,
                              .send_time_us = clock_unix_us()};
        /* The spool reports write and flush separately; flush never passes write. */
        if (ack.write_lsn < ack.flush_lsn)
            ack.write_lsn = ack.flush_lsn;
        if (memcmp(&ack, &a->last_ack, offsetof(struct msg_ack, send_time_us)) != 0) {
            rc = conn_send_ack(active_conn(a), &ack);
            if (rc < 0)
                log_warning(a->comp, "cannot send ACK: %s", wire_strerror(rc));
            else
                a->last_ack = ack;
        }
        a->ack_dirty = false;
    }
}

/* ---- lifecycle ---- */

/* ---- status ---- */

static void
format_lag(struct status_snapshot *st, uint64_t head, const double *lag_s)
{
    st->write_lag_bytes = head > st->write_lsn ? head - st->write_lsn : 0;
    st->flush_lag_bytes = head > st->flush_lsn ? head - st->flush_lsn : 0;
    st->apply_lag_bytes = head > st->apply_lsn ? head - st->apply_lsn : 0;
    st->write_lag_s = lag_s != NULL ? lag_s[LAG_WRITE] : -1;
    st->flush_lag_s = lag_s != NULL ? lag_s[LAG_FLUSH] : -1;
    st->apply_lag_s = lag_s != NULL ? lag_s[LAG_APPLY] : -1;
}

/* Publishes a snapshot for the HTTP API and takes its requests; every AGENT_STATUS_EVERY_MS. */
static void
status_tick(struct agent *a)
{
    struct status_snapshot st = {0};
    struct conn *c = active_conn(a);
    unsigned req;

    if (clock_mono_ms() - a->status_at_ms < AGENT_STATUS_EVERY_MS)
        return;
    a->status_at_ms = clock_mono_ms();
    req = status_take(&a->board);
    if (req & (1u << STATUS_REQ_PAUSE) && !a->failover_paused) {
        a->failover_paused = true;
        log_info(a->comp, "automatic fail-over paused by an operator");
    }
    if (req & (1u << STATUS_REQ_RESUME) && a->failover_paused) {
        a->failover_paused = false;
        log_info(a->comp, "automatic fail-over resumed by an operator");
    }
    snprintf(st.node_name, sizeof(st.node_name), "%s", a->cfg->node_name);
    snprintf(st.peer_name, sizeof(st.peer_name), "%s", a->cfg->peer.name);
    snprintf(st.peer_addr, sizeof(st.peer_addr), "%s", a->cfg->peer.addr.text);
    snprintf(st.maintenance, sizeof(st.maintenance), "none");
    snprintf(st.last_error, sizeof(st.last_error), "%s", a->last_error);
    st.epoch = 1;
    st.started_unix_us = a->started_us;
    st.now_unix_us = clock_unix_us();
    st.failover_paused = a->failover_paused;
    st.link_up = c != NULL;
    st.rtt_us = c != NULL ? conn_rtt_us(c) : 0;
    if (c != NULL) {
        st.wal_raw_bytes = a->role == AGENT_SOURCE ? conn_tx_stats(c)->wal_raw_bytes
                                                   : conn_rx_stats(c)->wal_raw_bytes;
        st.wal_wire_bytes = a->role == AGENT_SOURCE ? conn_tx_stats(c)->wal_wire_bytes
                                                    : conn_rx_stats(c)->wal_wire_bytes;
    }
    if (a->role == AGENT_SOURCE) {
        snprintf(st.role, sizeof(st.role), "source");
        snprintf(st.pg_state, sizeof(st.pg_state), "%s", a->src_identified ? "primary" : "unknown");
        st.system_id = a->src_id.system_id;
        st.timeline = a->src_id.timeline;
        st.primary_lsn = a->primary_lsn;
        st.sent_lsn = a->sent_lsn;
        st.write_lsn = a->ack_write;
        st.flush_lsn = a->ack_flush;
        st.apply_lsn = a->ack_apply;
        format_lag(&st, a->primary_lsn, a->lag.lag_s);
        snprintf(st.sync_state, sizeof(st.sync_state), "%s",
                 !a->streaming || c == NULL                       ? "down"
                 : a->ack_flush + 16u * 1024 * 1024 < a->sent_lsn ? "catchup"
                                                                  : "sync");
    } else {
        const struct spool_identity *id = spool_identity(a->spool);
        snprintf(st.role, sizeof(st.role), "sink");
        snprintf(st.pg_state, sizeof(st.pg_state), "%s",
                 walsrv_streaming_clients(a->walsrv) > 0 ? "standby" : "unknown");
        st.system_id = id->system_id;
        st.timeline = id->timeline;
        st.primary_lsn = a->appended;
        st.sent_lsn = a->appended;
        st.write_lsn = a->written;
        st.flush_lsn = a->flushed;
        st.apply_lsn = a->applied;
        format_lag(&st, a->appended, NULL);
        snprintf(st.sync_state, sizeof(st.sync_state), "%s", c != NULL ? "sync" : "down");
    }
    status_publish(&a->board, &st);
}

/* Frees the links that died during the last turn (never from inside their callbacks). */
static void
reap_links(struct agent *a)
{
    for (int i = 0; i < AGENT_MAX_LINKS; i++) {
        struct link *l = a->links[i];
        if (l != NULL && l->dead) {
            conn_free(l->c);
            free(l);
            a->links[i] = NULL;
        }
    }
}

static void
agent_tick(struct agent *a)
{
    reap_links(a);
    if (a->role == AGENT_SOURCE)
        source_tick(a);
    else
        sink_tick(a);
    status_tick(a);
}

static int
agent_setup(struct agent *a)
{
    char err[512];
    int rc, port;

    rc = decide_role(a);
    if (rc < 0)
        return rc;
    log_info(a->comp, "local PostgreSQL is a %s: acting as %s",
             a->role == AGENT_SOURCE ? "primary" : "standby",
             a->role == AGENT_SOURCE ? "source" : "sink");
    rc = tls_config_new(&a->tls, a->cfg->tls_ca, a->cfg->tls_cert, a->cfg->tls_key,
                        a->role == AGENT_SINK, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "%s", err);
        return rc;
    }
    rc = wio_loop_new(&a->loop, 512);
    if (rc < 0) {
        log_error(a->comp, "cannot set up io_uring: %s", wire_strerror(rc));
        return rc;
    }
    rc = httpapi_start(&a->http, a->cfg->http_listen.text, a->cfg->http_token_file, &a->board, err,
                       sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "HTTP API on %s: %s", a->cfg->http_listen.text, err);
        return rc;
    }
    if (a->role == AGENT_SOURCE) {
        a->batch = malloc(FRAME_MAX_RAW);
        return a->batch == NULL ? -ENOMEM : 0;
    }
    rc = read_control_data(a);
    if (rc < 0)
        return rc;
    rc = spool_open(&a->spool, a->loop, a->cfg->spool_dir,
                    a->cfg->spool_keep_segments ? a->cfg->spool_keep * a->local_segsize
                                                : a->cfg->spool_keep,
                    &spool_cb, a, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "spool %s: %s", a->cfg->spool_dir, err);
        return rc;
    }
    a->written = a->flushed = a->appended = a->flush_requested = spool_flush_lsn(a->spool);
    rc = walsrv_new(&a->walsrv, a->loop, a->cfg->wal_listen.text, a->spool, &walsrv_cb, a, err,
                    sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "WAL server on %s: %s", a->cfg->wal_listen.text, err);
        return rc;
    }
    a->listen_fd = wio_listen_tcp(a->cfg->listen.text, 16, &port);
    if (a->listen_fd < 0) {
        log_error(a->comp, "cannot listen on %s: %s", a->cfg->listen.text,
                  wire_strerror(a->listen_fd));
        return a->listen_fd;
    }
    rc = wio_accept_start(a->loop, &a->acc, a->listen_fd, on_accept);
    if (rc < 0)
        return rc;
    log_info(a->comp, "sink ready: peer link on %s, WAL server on %s, spool %s at %X/%X",
             a->cfg->listen.text, a->cfg->wal_listen.text, a->cfg->spool_dir, LSN_ARGS(a->flushed));
    return 0;
}

static void
agent_teardown(struct agent *a)
{
    if (a->http != NULL)
        httpapi_stop(a->http); /* first: its thread reads the board */
    close_links(a, "agent shutting down");
    if (a->src != NULL) {
        source_free(a->src);
        a->src = NULL;
    }
    /* A few turns, so that BYE frames leave and cancelled operations complete. */
    for (int i = 0; i < 20 && a->loop != NULL; i++)
        if (wio_run_once(a->loop, 10) <= 0)
            break;
    reap_links(a);
    if (a->listen_fd > 0) {
        wio_accept_stop(&a->acc);
        for (int i = 0; i < 20 && wio_accept_busy(&a->acc); i++)
            if (wio_run_once(a->loop, 10) < 0)
                break;
        close(a->listen_fd);
    }
    if (a->walsrv != NULL)
        walsrv_free(a->walsrv);
    if (a->spool != NULL)
        spool_close(a->spool);
    if (a->loop != NULL)
        wio_loop_free(a->loop);
    tls_config_free(a->tls);
    free(a->batch);
}

int
agent_run(const struct wm_config *cfg, volatile sig_atomic_t *stop)
{
    struct agent a = {.cfg = cfg, .listen_fd = -1};
    int rc;

    snprintf(a.comp, sizeof(a.comp), "agent[%s]", cfg->node_name);
    status_board_init(&a.board);
    lag_reset(&a.lag);
    a.started_us = clock_unix_us();
    rc = agent_setup(&a);
    if (rc < 0) {
        agent_teardown(&a);
        status_board_destroy(&a.board);
        return 1;
    }
    while (!*stop && !a.failed) {
        rc = wio_run_once(a.loop, 200);
        if (rc < 0) {
            log_error(a.comp, "event loop failed: %s", wire_strerror(rc));
            a.exit_status = 1;
            break;
        }
        agent_tick(&a);
    }
    log_info(a.comp, "stopping%s", a.failed ? " after a failure" : "");
    agent_teardown(&a);
    status_board_destroy(&a.board);
    return a.exit_status;
}
