/*
 * test_op.c - Check suite for agent/op.c, the operations' state machines, driven through
 * their interface (op.h) by a fake world: a fake PostgreSQL control (jobs that end when the
 * test says, with the exit code it says; the standby's positions it answers), a fake arbiter
 * (reachable or not; its verdicts are the test's), a fake peer link (the control messages
 * sent are recorded) and a clock the test moves.  Each step's success, failure and timeout,
 * and the rules that keep two primaries from existing:
 *   - a sink never promotes while its source's agent is connected, nor without the arbiter's
 *     grant (or --force), nor when stale without --accept-data-loss;
 *   - a source never runs exposed without the arbiter's grant when one is configured;
 *   - a newer epoch held elsewhere ends any operation and stops the stale primary;
 *   - a switchover's old primary promotes nothing the sink did not confirm flushed;
 *   - "synchronous again" is asked of the arbiter only once the requirement is in force.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "op.h"

#define MAX_CALLS 64

/* The fake world. */
static struct world {
    struct op_facts f;
    struct wm_state epoch;
    uint64_t now;
    bool reachable;
    /* what the operation did, in order: "pg stop", "send BEGIN", "ask exposure", ... */
    char calls[MAX_CALLS][96];
    int ncalls;
    struct msg_control sent[16];
    int nsent;
    struct arbiter_request asked;
    int fail_next_job; /* a job that cannot start: its errno */
    /* the last end */
    int finished;
    enum op_kind fin_kind;
    bool fin_ok, fin_refused;
    char fin_result[256];
    int64_t fin_unavail;
} W;

static struct op op;

static void __attribute__((format(printf, 1, 2)))
call(const char *fmt, ...)
{
    va_list ap;

    ck_assert_int_lt(W.ncalls, MAX_CALLS);
    va_start(ap, fmt);
    vsnprintf(W.calls[W.ncalls++], sizeof(W.calls[0]), fmt, ap);
    va_end(ap);
}

static bool
called(const char *what)
{
    for (int i = 0; i < W.ncalls; i++)
        if (strcmp(W.calls[i], what) == 0)
            return true;
    return false;
}

static const char *
last_call(void)
{
    return W.ncalls > 0 ? W.calls[W.ncalls - 1] : "";
}

static void
f_facts(void *ctx, struct op_facts *f)
{
    (void)ctx;
    *f = W.f;
    f->epoch = &W.epoch;
    f->node = "site-b";
    f->peer = "site-a";
    f->state_dir = "/state";
    f->failover_timeout_ms = 3000;
    f->arbiter = "witness";
}

static uint64_t
f_now(void *ctx)
{
    (void)ctx;
    return W.now;
}

static int
job(const char *what)
{
    if (W.fail_next_job != 0) {
        int rc = -W.fail_next_job;
        W.fail_next_job = 0;
        return rc;
    }
    call("%s", what);
    return 0;
}

static int
f_pg(void *ctx, enum pgctl_action action)
{
    (void)ctx;
    return job(action == PGCTL_STOP ? "pg stop" : action == PGCTL_START ? "pg start" : "pg promote");
}

static int
f_checkpoint(void *ctx)
{
    (void)ctx;
    return job("checkpoint");
}

static int
f_rewind(void *ctx)
{
    (void)ctx;
    return job("rewind");
}

static int
f_empty(void *ctx)
{
    (void)ctx;
    return job("empty");
}

static int
f_basebackup(void *ctx)
{
    (void)ctx;
    return job("basebackup");
}

static int
f_controldata(void *ctx)
{
    (void)ctx;
    return job("controldata");
}

static int
f_save(void *ctx, char *err, size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    call("save configs");
    return 0;
}

static int
f_restore(void *ctx, char *err, size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    call("restore configs");
    return 0;
}

static int
f_standby_config(void *ctx, char *err, size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    call("standby config");
    return 0;
}

static int
f_query_standby(void *ctx)
{
    (void)ctx;
    call("query standby");
    return 0;
}

static int
f_send(void *ctx, const struct msg_control *ctl)
{
    (void)ctx;
    if (!W.f.link_up)
        return -ENOTCONN;
    ck_assert_int_lt(W.nsent, 16);
    W.sent[W.nsent++] = *ctl;
    call("send %s", msg_ctl_name(ctl->kind));
    return 0;
}

static int
f_ask(void *ctx, const struct arbiter_request *req)
{
    (void)ctx;
    if (!W.reachable)
        return -ENOTCONN;
    W.asked = *req;
    call("ask %s", arbiter_ask_name(req->ask));
    return 0;
}

static int
f_raise(void *ctx, const struct wm_state *rec, bool tell_links)
{
    (void)ctx;
    ck_assert_uint_ge(rec->epoch, W.epoch.epoch);
    W.epoch = *rec;
    call("epoch %llu %s%s%s", (unsigned long long)rec->epoch, rec->primary,
         state_exposed(rec) ? " exposed" : "", tell_links ? " links" : "");
    return 0;
}

static int
f_become_source(void *ctx)
{
    (void)ctx;
    W.f.source = true;
    W.f.sink = false;
    call("become source");
    return 0;
}

static int
f_become_sink(void *ctx)
{
    (void)ctx;
    W.f.sink = true;
    W.f.source = W.f.fenced = false;
    call("become sink");
    return 0;
}

static void
f_close_links(void *ctx, const char *why)
{
    (void)ctx;
    (void)why;
    W.f.link_up = false;
    call("close links");
}

static int
f_relax(void *ctx)
{
    (void)ctx;
    call("relax");
    return 0;
}

static int
f_restore_sync(void *ctx)
{
    (void)ctx;
    call("restore sync");
    return 0;
}

static void
f_finished(void *ctx, enum op_kind kind, uint64_t id, bool ok, bool refused, const char *result,
           int64_t unavail)
{
    (void)ctx;
    (void)id;
    W.finished++;
    W.fin_kind = kind;
    W.fin_ok = ok;
    W.fin_refused = refused;
    W.fin_unavail = unavail;
    snprintf(W.fin_result, sizeof(W.fin_result), "%s", result);
}

static const struct op_env env = {
    .facts = f_facts,
    .now_ms = f_now,
    .pg = f_pg,
    .checkpoint_peer = f_checkpoint,
    .rewind = f_rewind,
    .empty_pgdata = f_empty,
    .basebackup = f_basebackup,
    .controldata = f_controldata,
    .save_configs = f_save,
    .restore_configs = f_restore,
    .standby_config = f_standby_config,
    .query_standby = f_query_standby,
    .send = f_send,
    .ask = f_ask,
    .raise_epoch = f_raise,
    .become_source = f_become_source,
    .become_sink = f_become_sink,
    .close_links = f_close_links,
    .sync_relax = f_relax,
    .sync_restore = f_restore_sync,
    .finished = f_finished,
};

static void
setup(void)
{
    memset(&W, 0, sizeof(W));
    W.now = 1000000;
    W.epoch.epoch = 5;
    snprintf(W.epoch.primary, sizeof(W.epoch.primary), "site-a");
    op_init(&op, &env, NULL, "site-b");
}

/* ---- driving ---- */

static void
ev(enum op_event_kind kind)
{
    struct op_event e = {.kind = kind};
    op_handle(&op, &e);
}

static void
job_done(int code)
{
    struct op_event e = {.kind = OPE_JOB_DONE, .code = code};
    op_handle(&op, &e);
}

static void
peer(uint8_t kind, uint64_t lsn, uint64_t value, uint64_t value2)
{
    struct msg_control ctl = {.kind = kind, .lsn = lsn, .value = value, .value2 = value2};
    struct op_event e = {.kind = OPE_PEER_CONTROL, .ctl = &ctl};
    op_handle(&op, &e);
}

static void
verdict(bool granted, uint64_t epoch, bool exposed, const char *why)
{
    struct wm_state rec = {.epoch = epoch};
    struct op_event e = {.kind = OPE_VERDICT, .ok = granted, .epoch = &rec, .text = why};

    snprintf(rec.primary, sizeof(rec.primary), "%s", granted ? "site-b" : "site-a");
    if (exposed) {
        rec.exposed_lsn = 0x3000000;
        rec.exposed_unix_us = 1;
    }
    op_handle(&op, &e);
}

static void
replay(uint64_t received, uint64_t replayed)
{
    struct op_event e = {.kind = OPE_REPLAY, .lsn = received, .lsn2 = replayed};
    op_handle(&op, &e);
}

static void
sql_done(bool ok)
{
    struct op_event e = {.kind = OPE_SQL_DONE, .ok = ok, .text = ok ? "ok" : "refused"};
    op_handle(&op, &e);
}

/* Moves the clock to the operation's next wake and delivers it. */
static void
wake(void)
{
    uint64_t at = op_next_wake(&op);

    ck_assert_uint_ne(at, 0);
    if (at > W.now)
        W.now = at;
    ev(OPE_WAKE);
}

static void
expect_step(enum op_step step)
{
    ck_assert_msg(op.step == step, "step %s, want %s", op_step_name(op.step), op_step_name(step));
}

static void
expect_end(bool ok, const char *text)
{
    ck_assert_msg(W.finished > 0, "the operation did not end");
    ck_assert_msg(W.fin_ok == ok, "ended %s: %s", W.fin_ok ? "ok" : "failed", W.fin_result);
    ck_assert_msg(strstr(W.fin_result, text) != NULL, "result \"%s\" lacks \"%s\"", W.fin_result,
                  text);
    ck_assert(!op_running(&op));
}

static void
expect_refused(enum op_kind kind, const char *text)
{
    ck_assert_int_eq(W.finished, 1);
    ck_assert(W.fin_refused);
    ck_assert_int_eq(W.fin_kind, kind);
    ck_assert_msg(strstr(W.fin_result, text) != NULL, "refusal \"%s\" lacks \"%s\"", W.fin_result,
                  text);
    W.finished = 0;
}

/* A source streaming to a caught-up sink. */
static void
as_source(void)
{
    W.f.source = true;
    W.f.link_up = W.f.streaming = true;
    W.f.primary_lsn = 0x5000000;
    W.f.ack_flush = 0x5000000;
    W.f.ack_apply = 0x5000000;
    W.f.pg_running = true;
    snprintf(W.epoch.primary, sizeof(W.epoch.primary), "site-b");
}

/* A sink whose source is lost. */
static void
as_sink(void)
{
    W.f.sink = true;
    W.f.sink_flushed = 0x4000000;
    W.f.arbiter_configured = true;
    W.reachable = true;
    W.f.lost_for_ms = 3500;
}

/* ---- switchover ---- */

START_TEST(switchover_at_the_source)
{
    as_source();
    op_switchover(&op, 42, "site-a", 0);
    ck_assert_str_eq(W.calls[0], "send SWITCHOVER_BEGIN");
    ck_assert_uint_eq(W.sent[0].value, 42);
    ck_assert_str_eq(last_call(), "pg stop");
    expect_step(OPS_SO_STOPPING);
    /* the job ends first, the stream second: nothing moves until both */
    job_done(0);
    expect_step(OPS_SO_STOPPING);
    W.f.primary_lsn = W.f.ack_flush = 0x5000200;
    {
        struct op_event e = {.kind = OPE_PRIMARY_ENDED, .ok = true};
        op_handle(&op, &e);
    }
    expect_step(OPS_SO_WAIT_DONE);
    ck_assert_str_eq(last_call(), "send SWITCHOVER_PROMOTE");
    ck_assert_uint_eq(W.sent[1].lsn, 0x5000200);
    peer(MSG_CTL_SWITCHOVER_DONE, 0, 0, 6);
    ck_assert(called("epoch 6 site-a links"));
    ck_assert(called("save configs"));
    ck_assert(called("standby config"));
    ck_assert_str_eq(last_call(), "controldata");
    expect_step(OPS_R_CONTROLDATA);
    /* SYNCED may arrive before pg_ctl start ends */
    job_done(0);
    ck_assert(called("become sink"));
    ck_assert_str_eq(last_call(), "pg start");
    peer(MSG_CTL_SWITCHOVER_SYNCED, 0, 612000, 0);
    expect_step(OPS_R_STARTING);
    job_done(0);
    expect_end(true, "site-a is the primary, site-b its synchronous standby");
    ck_assert_int_eq(W.fin_unavail, 612000);
}
END_TEST

/* The agent's env checkpoints the primary before stopping it: the stop (and the sink's
 * SWITCHOVER_BEGIN) waits for the CHECKPOINT; a failed one only costs a longer shutdown
 * checkpoint, a link lost meanwhile ends the switchover with nothing stopped. */
START_TEST(switchover_checkpoints_first)
{
    struct op_env e = env;

    e.checkpoint_local = f_checkpoint;
    op_init(&op, &e, NULL, "site-b");
    as_source();
    op_switchover(&op, 7, "site-a", 0);
    expect_step(OPS_SO_CHECKPOINT);
    ck_assert_str_eq(last_call(), "checkpoint");
    ck_assert(!called("send SWITCHOVER_BEGIN"));
    ck_assert_uint_eq(op.stop_unix_us, 0);
    job_done(1);
    expect_step(OPS_SO_STOPPING);
    ck_assert(called("send SWITCHOVER_BEGIN"));
    ck_assert_uint_eq(W.sent[0].value, 7);
    ck_assert_uint_ne(op.stop_unix_us, 0);
    ck_assert_str_eq(last_call(), "pg stop");

    setup();
    op_init(&op, &e, NULL, "site-b");
    as_source();
    op_switchover(&op, 8, "site-a", 0);
    expect_step(OPS_SO_CHECKPOINT);
    W.f.streaming = false;
    job_done(0);
    expect_end(false, "went down before the primary was stopped");
    ck_assert(!called("send SWITCHOVER_BEGIN"));
    ck_assert(!called("pg stop"));
}
END_TEST

/* The stream's clean end (the shutdown checkpoint sent) lets PROMOTE go before pg_ctl stop has
 * noticed the postmaster gone; the control data and the start wait for pg_ctl, and a pg_ctl
 * that fails then ends the switchover. */
START_TEST(switchover_promotes_on_the_clean_end)
{
    as_source();
    op_switchover(&op, 9, "site-a", 0);
    expect_step(OPS_SO_STOPPING);
    W.f.primary_lsn = W.f.ack_flush = 0x5000200;
    {
        struct op_event e = {.kind = OPE_PRIMARY_ENDED, .ok = true};
        op_handle(&op, &e);
    }
    expect_step(OPS_SO_WAIT_DONE);
    ck_assert_str_eq(last_call(), "send SWITCHOVER_PROMOTE");
    peer(MSG_CTL_SWITCHOVER_DONE, 0, 0, 6);
    ck_assert(called("epoch 6 site-a links"));
    expect_step(OPS_SO_WAIT_DONE);
    ck_assert(!called("controldata"));
    job_done(0);
    ck_assert_str_eq(last_call(), "controldata");
    expect_step(OPS_R_CONTROLDATA);

    /* pg_ctl stop fails after the clean end */
    setup();
    as_source();
    op_switchover(&op, 10, "site-a", 0);
    W.f.primary_lsn = W.f.ack_flush = 0x5000200;
    {
        struct op_event e = {.kind = OPE_PRIMARY_ENDED, .ok = true};
        op_handle(&op, &e);
    }
    expect_step(OPS_SO_WAIT_DONE);
    job_done(1);
    expect_end(false, "pg_ctl stop failed (exit 1)");
    ck_assert(!called("controldata"));

    /* a clean end the sink has not confirmed waits for pg_ctl, then fails */
    setup();
    as_source();
    op_switchover(&op, 12, "site-a", 0);
    W.f.primary_lsn = 0x5000300;
    {
        struct op_event e = {.kind = OPE_PRIMARY_ENDED, .ok = true};
        op_handle(&op, &e);
    }
    expect_step(OPS_SO_STOPPING);
    job_done(0);
    expect_end(false, "site-a confirmed 0/5000000 of 0/5000300: not promoting it");
    ck_assert(!called("send SWITCHOVER_PROMOTE"));

    /* a broken stream still waits for pg_ctl, then fails */
    setup();
    as_source();
    op_switchover(&op, 11, "site-a", 0);
    {
        struct op_event e = {.kind = OPE_PRIMARY_ENDED, .ok = false};
        op_handle(&op, &e);
    }
    expect_step(OPS_SO_STOPPING);
    job_done(0);
    expect_end(false, "its stream broke");
    ck_assert(!called("send SWITCHOVER_PROMOTE"));
}
END_TEST

START_TEST(switchover_preflight_refusals)
{
    op_switchover(&op, 1, "", 0);
    expect_refused(OP_SWITCHOVER, "site-b is the fenced node");
    as_source();
    op_switchover(&op, 2, "nowhere", 0);
    expect_refused(OP_SWITCHOVER, "unknown node nowhere (the peer is site-a)");
    W.f.streaming = false;
    op_switchover(&op, 3, "", 0);
    expect_refused(OP_SWITCHOVER, "the link to site-a is down");
    W.f.streaming = true;
    W.f.ack_flush = 0x4000000; /* exactly the bound: allowed */
    W.f.ack_apply = 0;
    op_switchover(&op, 4, "", 0);
    expect_refused(OP_SWITCHOVER, "the standby at site-a is not replaying");
    W.f.ack_flush = 0x3FFFFFF;
    op_switchover(&op, 4, "", 0);
    expect_refused(OP_SWITCHOVER, "site-a is 16777217 bytes behind (more than 16777216)");
    W.f.ack_flush = 0x5000000;
    W.f.ack_apply = 0;
    op_switchover(&op, 5, "", 0);
    expect_refused(OP_SWITCHOVER, "the standby at site-a is not replaying");
    ck_assert_int_eq(W.ncalls, 0); /* nothing was touched */
    ck_assert(!op_running(&op));
}
END_TEST

START_TEST(switchover_old_primary_failures)
{
    as_source();
    /* pg_ctl stop fails */
    op_switchover(&op, 1, "", 0);
    job_done(1);
    {
        struct op_event e = {.kind = OPE_PRIMARY_ENDED, .ok = true};
        op_handle(&op, &e);
    }
    expect_end(false, "the primary did not stop cleanly (pg_ctl exit 1)");
    ck_assert(!called("send SWITCHOVER_PROMOTE"));
    /* the stream broke instead of ending cleanly */
    W.finished = 0;
    op_switchover(&op, 2, "", 0);
    job_done(0);
    {
        struct op_event e = {.kind = OPE_PRIMARY_ENDED, .ok = false};
        op_handle(&op, &e);
    }
    expect_end(false, "its stream broke");
    /* the sink did not confirm the end of WAL: never promoted */
    W.finished = 0;
    op_switchover(&op, 3, "", 0);
    job_done(0);
    W.f.primary_lsn = 0x5000300;
    {
        struct op_event e = {.kind = OPE_PRIMARY_ENDED, .ok = true};
        op_handle(&op, &e);
    }
    expect_end(false, "site-a confirmed 0/5000000 of 0/5000300: not promoting it");
    ck_assert(!called("send SWITCHOVER_PROMOTE"));
    /* the peer aborts */
    W.finished = 0;
    W.f.primary_lsn = 0x5000000;
    op_switchover(&op, 4, "", 0);
    peer(MSG_CTL_SWITCHOVER_ABORT, 0, 0, 0);
    expect_end(false, "site-a aborted it");
}
END_TEST

START_TEST(switchover_at_the_sink)
{
    W.f.sink = true;
    W.f.link_up = true;
    peer(MSG_CTL_SWITCHOVER_BEGIN, 0, 42, 0);
    expect_step(OPS_K_WAIT_PROMOTE);
    ck_assert_uint_eq(op.id, 42);
    peer(MSG_CTL_SWITCHOVER_PROMOTE, 0x5000200, 1700000000000000ull, 0);
    expect_step(OPS_K_WAIT_REPLAY);
    wake();
    ck_assert_str_eq(last_call(), "query standby");
    replay(0x5000200, 0x5000100); /* received, not replayed yet */
    expect_step(OPS_K_WAIT_REPLAY);
    wake();
    replay(0x5000200, 0x5000200);
    expect_step(OPS_K_PROMOTING);
    ck_assert_str_eq(last_call(), "pg promote");
    job_done(0);
    /* the epoch first, durably, then DONE, then the role */
    ck_assert_str_eq(W.calls[W.ncalls - 3], "epoch 6 site-b links");
    ck_assert_str_eq(W.calls[W.ncalls - 2], "send SWITCHOVER_DONE");
    ck_assert_uint_eq(W.sent[0].value2, 6);
    ck_assert_str_eq(last_call(), "become source");
    expect_step(OPS_K_WAIT_SYNC);
    {
        struct op_event e = {.kind = OPE_IDENTIFIED, .lsn = 0x6000000};
        op_handle(&op, &e);
        e.kind = OPE_ACKED;
        e.lsn = 0x5FFFFFF; /* not yet */
        op_handle(&op, &e);
        expect_step(OPS_K_WAIT_SYNC);
        e.lsn = 0x6000000;
        op_handle(&op, &e);
    }
    ck_assert_str_eq(last_call(), "send SWITCHOVER_SYNCED");
    expect_end(true, "site-b is the primary (epoch 6), synchronous with site-a again");
}
END_TEST

START_TEST(sink_refuses_begin_when_busy)
{
    W.f.sink = true;
    W.f.link_up = true;
    as_sink();
    W.f.link_up = false;
    op_failover(&op, 0, false, false); /* busy voting */
    W.f.link_up = true;
    peer(MSG_CTL_SWITCHOVER_BEGIN, 0, 7, 0);
    ck_assert_str_eq(last_call(), "send SWITCHOVER_ABORT");
    ck_assert_int_eq(op.kind, OP_FAILOVER);
}
END_TEST

/* ---- fail-over ---- */

START_TEST(failover_with_the_arbiter)
{
    as_sink();
    op_failover(&op, 0, false, false);
    expect_step(OPS_K_WAIT_VOTE);
    ck_assert_str_eq(last_call(), "ask promotion");
    ck_assert_uint_eq(W.asked.epoch, 5);
    ck_assert_uint_eq(W.asked.durable_lsn, 0x4000000);
    verdict(true, 6, true, "granted");
    ck_assert(called("epoch 6 site-b exposed links"));
    expect_step(OPS_K_WAIT_REPLAY);
    wake();
    replay(0x3FFFFFF, 0); /* not all the spool yet */
    wake();
    replay(0x4000000, 0);
    job_done(0);
    ck_assert_str_eq(last_call(), "become source");
    expect_end(true, "site-b promoted (epoch 6); writable 3.5 s after the source was lost");
    ck_assert_int_eq(W.fin_unavail, 3500000);
}
END_TEST

START_TEST(failover_never_without_the_arbiter)
{
    as_sink();
    /* the source's agent is connected: not a fail-over */
    W.f.link_up = true;
    op_failover(&op, 1, false, false);
    expect_refused(OP_FAILOVER, "the primary's agent site-a is connected");
    W.f.link_up = false;
    /* no arbiter to ask: never promotes */
    W.reachable = false;
    op_failover(&op, 2, false, false);
    expect_end(false, "no arbiter reachable: not promoting");
    ck_assert(!called("pg promote"));
    /* denied */
    W.reachable = true;
    W.finished = 0;
    op_failover(&op, 3, false, false);
    verdict(false, 5, false, "the primary site-a was heard 0.4 s ago");
    expect_end(false, "the witness says no: the primary site-a was heard 0.4 s ago");
    /* granted, but the source came back meanwhile */
    W.finished = 0;
    op_failover(&op, 4, false, false);
    W.f.link_up = true;
    verdict(true, 6, true, "granted");
    expect_end(false, "the source came back while the witness voted: not promoting");
    ck_assert(!called("pg promote"));
    ck_assert(!called("epoch 6 site-b exposed links"));
    /* not a sink */
    W.finished = 0;
    W.f.sink = false;
    op_failover(&op, 5, true, true);
    expect_refused(OP_FAILOVER, "site-b is not a standby");
}
END_TEST

START_TEST(forced_failover_of_a_stale_standby)
{
    as_sink();
    /* site-a runs exposed: site-b is stale */
    W.epoch.exposed_lsn = 0x3800000;
    W.epoch.exposed_unix_us = 1765000000000000ull;
    op_failover(&op, 1, true, false);
    expect_refused(OP_FAILOVER, "site-b is stale: site-a runs exposed since 0/3800000");
    ck_assert_msg(strstr(W.fin_result, "--accept-data-loss") == NULL ||
                      strstr(W.fin_result, "add --accept-data-loss") != NULL,
                  "%s", W.fin_result);
    ck_assert_int_eq(W.ncalls, 0);
    op_failover(&op, 2, true, true);
    ck_assert_str_eq(W.calls[0], "close links");
    ck_assert_str_eq(W.calls[1], "epoch 6 site-b exposed links");
    ck_assert(!called("ask promotion")); /* forced: the operator vouches */
    expect_step(OPS_K_WAIT_REPLAY);
    ck_assert_msg(strstr(op.step_text, "with --accept-data-loss") != NULL, "%s", op.step_text);
}
END_TEST

/* ---- fencing and rejoin ---- */

START_TEST(fencing_ends_what_runs_and_stops_the_primary)
{
    as_source();
    W.f.auto_rejoin = true;
    W.f.can_rejoin = true;
    op_switchover(&op, 9, "", 0);
    W.f.source = false;
    W.f.fenced = true;
    op_fence(&op);
    /* the switchover ended first */
    ck_assert(W.finished >= 1);
    ck_assert_int_eq(op.kind, OP_FENCING);
    ck_assert_str_eq(last_call(), "pg stop");
    W.f.pg_running = false;
    job_done(0);
    /* auto_rejoin: the rejoin follows at once */
    ck_assert_int_eq(op.kind, OP_REJOIN);
    ck_assert_str_eq(last_call(), "checkpoint");
}
END_TEST

START_TEST(fencing_a_stopped_primary)
{
    W.f.fenced = true;
    op_fence(&op);
    expect_step(OPS_F_STOPPING);
    wake();
    expect_end(true, "the stale primary is stopped");
    ck_assert(!called("pg stop"));
}
END_TEST

START_TEST(rejoin_rewind_fails_then_base_backup)
{
    W.f.fenced = true;
    W.f.can_rejoin = true;
    op_rejoin(&op, 11);
    ck_assert_str_eq(last_call(), "checkpoint");
    /* the new primary is still promoting: tried again a second later, same step */
    job_done(3);
    expect_step(OPS_R_CHECKPOINT);
    wake();
    ck_assert_int_eq(W.ncalls, 2);
    ck_assert_str_eq(last_call(), "checkpoint");
    job_done(0);
    ck_assert(called("save configs"));
    ck_assert_str_eq(last_call(), "rewind");
    job_done(1);
    ck_assert_str_eq(last_call(), "empty");
    job_done(0);
    ck_assert_str_eq(last_call(), "basebackup");
    job_done(0);
    ck_assert(called("restore configs"));
    ck_assert(called("standby config"));
    ck_assert_str_eq(last_call(), "controldata");
    job_done(0);
    ck_assert(called("become sink"));
    ck_assert_str_eq(last_call(), "pg start");
    job_done(0);
    expect_end(true, "site-b runs as a standby of site-a");
}
END_TEST

START_TEST(rejoin_refusals_and_failures)
{
    op_rejoin(&op, 1);
    expect_refused(OP_REJOIN, "site-b is not fenced");
    W.f.fenced = true;
    op_rejoin(&op, 2);
    expect_refused(OP_REJOIN, "peer_pg_conninfo is not set");
    W.f.can_rejoin = true;
    W.f.pg_running = true;
    op_rejoin(&op, 3);
    expect_refused(OP_REJOIN, "the local PostgreSQL still runs");
    W.f.pg_running = false;
    op_rejoin(&op, 4);
    job_done(0);
    job_done(2);  /* rewind */
    job_done(0);  /* empty */
    job_done(1);  /* base backup */
    expect_end(false, "pg_basebackup failed (exit 1)");
    /* a job that cannot even start */
    W.finished = 0;
    W.fail_next_job = ENOENT;
    op_rejoin(&op, 5);
    expect_end(false, "cannot run psql");
}
END_TEST

START_TEST(every_step_times_out)
{
    as_sink();
    op_failover(&op, 0, false, false);
    expect_step(OPS_K_WAIT_VOTE);
    W.now += OP_STEP_TIMEOUT_MS - 1;
    ev(OPE_WAKE);
    ck_assert(op_running(&op));
    W.now += 1;
    ev(OPE_WAKE);
    expect_end(false, "timed out while asking the witness for epoch 6");
    /* the retried CHECKPOINT keeps its step's deadline */
    W.finished = 0;
    W.f.sink = false;
    W.f.fenced = true;
    W.f.can_rejoin = true;
    op_rejoin(&op, 0);
    for (int i = 0; i < 200 && op_running(&op); i++) {
        W.ncalls = 0;
        job_done(2);
        wake();
    }
    expect_end(false, "timed out while CHECKPOINT on site-a's PostgreSQL");
}
END_TEST

/* ---- exposure ---- */

START_TEST(exposure_arbitrated)
{
    as_source();
    W.f.arbiter_configured = true;
    W.f.ack_flush = 0x4F00000;
    W.f.streaming = false;
    W.f.lost_for_ms = 10200;
    /* the arbiter cannot be reached: never exposed, nothing started */
    ck_assert_int_eq(op_expose(&op), -ENOTCONN);
    ck_assert(!op_running(&op));
    ck_assert(!called("relax"));
    W.reachable = true;
    ck_assert_int_eq(op_expose(&op), 0);
    expect_step(OPS_X_ASKING);
    ck_assert_str_eq(last_call(), "ask exposure");
    ck_assert_uint_eq(W.asked.standby_lsn, 0x4F00000);
    ck_assert_uint_eq(W.asked.durable_lsn, 0x5000000);
    /* no switchover while exposed */
    op_switchover(&op, 3, "", 0);
    expect_refused(OP_SWITCHOVER, "busy");
    {
        struct wm_state rec = {.epoch = 6, .exposed_lsn = 0x4F00000, .exposed_unix_us = 7};
        struct op_event e = {.kind = OPE_VERDICT, .ok = true, .epoch = &rec, .text = "granted"};

        snprintf(rec.primary, sizeof(rec.primary), "site-b");
        op_handle(&op, &e);
    }
    /* recorded before anything relaxes; the live link is told, not raised */
    ck_assert_str_eq(W.calls[W.ncalls - 2], "epoch 6 site-b exposed");
    ck_assert_str_eq(last_call(), "relax");
    expect_step(OPS_X_RELAXING);
    sql_done(true);
    expect_step(OPS_X_EXPOSED);
    ck_assert_uint_eq(op_next_wake(&op), 0); /* no timeout while exposed */
    op_switchover(&op, 4, "", 0);
    expect_refused(OP_SWITCHOVER, "site-b runs exposed");
    ev(OPE_CAUGHT_UP);
    ck_assert_str_eq(last_call(), "restore sync");
    expect_step(OPS_X_RESTORING);
    /* resync is asked only once the requirement is proven in force */
    ck_assert(!called("ask resync"));
    sql_done(true);
    ck_assert_str_eq(last_call(), "ask resync");
    expect_step(OPS_X_RESYNCING);
    /* denied (or unreachable): asked again, never given up */
    verdict(false, 6, true, "no");
    ck_assert(op_running(&op));
    W.reachable = false;
    wake();
    ck_assert(op_running(&op));
    W.reachable = true;
    wake();
    ck_assert_str_eq(last_call(), "ask resync");
    verdict(true, 7, false, "granted");
    ck_assert(called("epoch 7 site-b"));
    expect_end(true, "site-a is synchronous again (epoch 7)");
}
END_TEST

START_TEST(exposure_denied_and_restore_failing)
{
    as_source();
    W.f.arbiter_configured = true;
    W.reachable = true;
    ck_assert_int_eq(op_expose(&op), 0);
    verdict(false, 6, false, "epoch 6 is already taken");
    expect_end(false, "the witness says no: epoch 6 is already taken");
    ck_assert(!called("relax"));
    /* granted; the requirement cannot be put back yet: exposed again, not resynced */
    W.finished = 0;
    ck_assert_int_eq(op_expose(&op), 0);
    verdict(true, 6, true, "granted");
    sql_done(true);
    ev(OPE_CAUGHT_UP);
    sql_done(false);
    expect_step(OPS_X_RELAXING);
    ck_assert(!called("ask resync"));
    /* a relax that fails is tried again a second later */
    sql_done(false);
    expect_step(OPS_X_RELAXING);
    wake();
    ck_assert_str_eq(last_call(), "relax");
}
END_TEST

START_TEST(exposure_without_an_arbiter)
{
    as_source();
    W.f.ack_flush = 0x4E00000;
    ck_assert_int_eq(op_expose(&op), 0);
    ck_assert_str_eq(W.calls[0], "epoch 6 site-b exposed");
    ck_assert_uint_eq(W.epoch.exposed_lsn, 0x4E00000);
    expect_step(OPS_X_RELAXING);
    sql_done(true);
    ev(OPE_CAUGHT_UP);
    sql_done(true);
    ck_assert(called("epoch 7 site-b"));
    ck_assert(!state_exposed(&W.epoch));
    expect_end(true, "synchronous again (epoch 7)");
}
END_TEST

START_TEST(fencing_ends_an_exposure)
{
    as_source();
    W.f.arbiter_configured = true;
    W.reachable = true;
    ck_assert_int_eq(op_expose(&op), 0);
    verdict(true, 6, true, "granted");
    sql_done(true);
    W.f.source = false;
    W.f.fenced = true;
    op_fence(&op);
    ck_assert_int_eq(op.kind, OP_FENCING);
    ck_assert_int_eq(W.fin_kind, OP_EXPOSURE);
    ck_assert(!W.fin_ok);
    ck_assert_str_eq(last_call(), "pg stop");
}
END_TEST

START_TEST(resumed_exposure)
{
    as_source();
    op_resume_exposure(&op);
    ck_assert_str_eq(last_call(), "relax");
    ck_assert(!called("ask exposure")); /* granted before: the record says so */
    sql_done(true);
    expect_step(OPS_X_EXPOSED);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("op");
    TCase *tc = tcase_create("op");
    SRunner *sr;
    int failed;

    log_level = LOG_LEVEL_ERROR - 1; /* silent: the steps' own lines would drown the results */
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, switchover_at_the_source);
    tcase_add_test(tc, switchover_checkpoints_first);
    tcase_add_test(tc, switchover_promotes_on_the_clean_end);
    tcase_add_test(tc, switchover_preflight_refusals);
    tcase_add_test(tc, switchover_old_primary_failures);
    tcase_add_test(tc, switchover_at_the_sink);
    tcase_add_test(tc, sink_refuses_begin_when_busy);
    tcase_add_test(tc, failover_with_the_arbiter);
    tcase_add_test(tc, failover_never_without_the_arbiter);
    tcase_add_test(tc, forced_failover_of_a_stale_standby);
    tcase_add_test(tc, fencing_ends_what_runs_and_stops_the_primary);
    tcase_add_test(tc, fencing_a_stopped_primary);
    tcase_add_test(tc, rejoin_rewind_fails_then_base_backup);
    tcase_add_test(tc, rejoin_refusals_and_failures);
    tcase_add_test(tc, every_step_times_out);
    tcase_add_test(tc, exposure_arbitrated);
    tcase_add_test(tc, exposure_denied_and_restore_failing);
    tcase_add_test(tc, exposure_without_an_arbiter);
    tcase_add_test(tc, fencing_ends_an_exposure);
    tcase_add_test(tc, resumed_exposure);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
