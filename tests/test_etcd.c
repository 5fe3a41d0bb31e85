/*
 * test_etcd.c - the etcd arbiter end to end: a real three-member etcd cluster (etcdtest.h)
 * with client TLS (certificates from gen-test-certs.sh, client certificates demanded), driven
 * by the real arbiters (arbiter_etcd.c) of two sites in this process, on one wio loop.  No
 * PostgreSQL is involved: the sites' reports and requests are the agent's calls.
 *
 * In order, on one cluster and one prefix:
 *   a. a fresh prefix: site-a reports itself the source and is recorded the holder of epoch 1;
 *      both liveness keys say role and epoch; site-b's promotion is denied (site-a's key says
 *      source), site-a's too (it is the primary); one request at a time;
 *   b. site-a's agent gone: denied while its key lives; once its lease has expired (not before
 *      etcd_lease_ttl) site-b is granted epoch 2, recorded held by site-b, exposed since what it
 *      held; its re-ask gets the same grant;
 *   c. site-a back at epoch 1 as the source: told epoch 2 (holder, mark) at once, fenced,
 *      -ENOTCONN; adopting epoch 2 as a sink makes it reachable; epoch 2 is taken, and a stale
 *      standby's promotion is denied naming the exposure and the WAL that may be missing;
 *   h. exposure and resync by the holder only; the mark set and cleared; the holder's re-ask;
 *   r. races: the holder's exposure against the standby's promotion for one epoch - exactly
 *      one grant, the loser "already taken"; two agents of one node promoting at once - one
 *      record, both told the same grant;
 *   d. the etcd leader, the member both clients talk to, stops answering (SIGSTOP) with both
 *      racing requests on it, then is killed: the requests move to the other members, which
 *      elect a new leader meanwhile - exactly one grant;
 *   w. news through the watch after its member is stopped (SIGSTOP) and after it is killed and
 *      restarted: the client moves to another member, reads again and is told;
 *   g. a primary whose PostgreSQL died (its key says unknown) is taken over after the silence
 *      threshold, and is told (fenced);
 *   e. quorum lost (two members stopped): both arbiters DOWN, requests -ENOTCONN, describe names
 *      the endpoints; quorum back: UP, and a request is granted;
 *   f. walmirrorctl fleet over TLS lists the pair from the liveness keys.
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arbiter.h"
#include "config.h"
#include "etcdrec.h"
#include "etcdtest.h"
#include "msg.h"
#include "state.h"
#include "testutil.h"
#include "wio.h"

#define CTL WM_BINARY_DIR "/tools/walmirrorctl"
#define HB_MS 200
#define FAILOVER_MS 2000
#define TTL_MS 2000
/* The silence threshold: max(2 x heartbeat, min(failover_timeout, 3 x heartbeat)). */
#define SILENCE_MS (3 * HB_MS)
#define PREFIX "/walmirror/test/"

struct client {
    const char *name, *peer;
    struct wm_config cfg;
    struct arbiter *arb;
    int verdicts;
    bool granted;
    struct wm_state verdict;
    char why[1100];
    int told; /* on_epoch_news calls */
    struct wm_state news;
};

static struct et_cluster cluster;
static struct wio_loop *loop;
static char *dir;
static struct client A = {.name = "site-a", .peer = "site-b"};
static struct client B = {.name = "site-b", .peer = "site-a"};
/* After the races, the primary and its standby (A or B). */
static struct client *P, *S;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- site clients: the real arbiter ---- */

static void
on_verdict(void *ctx, const struct arbiter_request *req, bool granted, const struct wm_state *e,
           const char *why)
{
    struct client *c = ctx;

    (void)req;
    c->verdicts++;
    c->granted = granted;
    c->verdict = *e;
    snprintf(c->why, sizeof(c->why), "%s", why);
}

static void
on_epoch_news(void *ctx, const struct wm_state *e)
{
    struct client *c = ctx;

    c->told++;
    c->news = *e;
}

static const struct arbiter_cb client_cb = {.on_verdict = on_verdict,
                                            .on_epoch_news = on_epoch_news};

static void
report(struct client *c, uint8_t role, uint64_t epoch, uint64_t durable,
       const struct wm_state *mark)
{
    struct arbiter_report r = {.role = role,
                               .epoch = epoch,
                               .durable_lsn = durable,
                               .mark = mark,
                               .timeline = 1,
                               .flush_lag_s = 0.002,
                               .apply_lag_s = -1};

    snprintf(r.sync_state, sizeof(r.sync_state), "%s", role == MSG_ROLE_SOURCE ? "sync" : "");
    arbiter_report(c->arb, &r);
}

static int
request(struct client *c, enum arbiter_ask ask, uint64_t epoch, uint64_t durable,
        uint64_t standby)
{
    struct arbiter_request req = {.ask = ask,
                                  .epoch = epoch,
                                  .durable_lsn = durable,
                                  .standby_lsn = standby,
                                  .failover_timeout_ms = FAILOVER_MS};

    return arbiter_request(c->arb, &req);
}

static void
client_config(struct client *c)
{
    char file[64];

    config_free(&c->cfg);
    memset(&c->cfg, 0, sizeof(c->cfg));
    snprintf(c->cfg.node_name, sizeof(c->cfg.node_name), "%s", c->name);
    snprintf(c->cfg.peer.name, sizeof(c->cfg.peer.name), "%s", c->peer);
    c->cfg.arbiter = CONFIG_ARBITER_ETCD;
    c->cfg.etcd_endpoints = strdup(cluster.endpoints);
    c->cfg.etcd_prefix = strdup(PREFIX);
    c->cfg.etcd_ca = strdup(tu_cert("ca.crt"));
    snprintf(file, sizeof(file), "%s.crt", c->name);
    c->cfg.etcd_cert = strdup(tu_cert(file));
    snprintf(file, sizeof(file), "%s.key", c->name);
    c->cfg.etcd_key = strdup(tu_cert(file));
    c->cfg.heartbeat_interval_ms = HB_MS;
    c->cfg.peer_timeout_ms = 2000;
    c->cfg.failover_timeout_ms = FAILOVER_MS;
    c->cfg.etcd_lease_ttl_ms = TTL_MS;
    tu_require(c->cfg.etcd_endpoints != NULL && c->cfg.etcd_prefix != NULL &&
               c->cfg.etcd_ca != NULL && c->cfg.etcd_cert != NULL && c->cfg.etcd_key != NULL);
}

static void
client_start(struct client *c, uint8_t role, uint64_t epoch)
{
    c->verdicts = c->told = 0;
    c->why[0] = '\0';
    memset(&c->news, 0, sizeof(c->news));
    client_config(c);
    ck_assert_int_eq(arbiter_new(&c->arb, loop, &c->cfg, &client_cb, c), 0);
    ck_assert_str_eq(arbiter_kind(c->arb), "etcd");
    report(c, role, epoch, 0x3000000, NULL);
}

static void
client_stop(struct client *c)
{
    arbiter_free(c->arb);
    c->arb = NULL;
}

static void
run_for(double seconds)
{
    double end = now_s() + seconds;

    while (now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
}

static bool
run_until(bool (*cond)(const struct client *), const struct client *c, double seconds)
{
    double end = now_s() + seconds;

    while (!cond(c) && now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    return cond(c);
}

static bool
reachable(const struct client *c)
{
    return arbiter_reachable(c->arb);
}

static bool
is_down(const struct client *c)
{
    return arbiter_state(c->arb) == ARBITER_STATE_DOWN;
}

static bool
has_verdict(const struct client *c)
{
    return c->verdicts > 0;
}

static void
ask_for(struct client *c, enum arbiter_ask what, uint64_t epoch, uint64_t durable,
        uint64_t standby)
{
    int rc;

    c->verdicts = 0;
    rc = request(c, what, epoch, durable, standby);
    ck_assert_msg(rc == 0, "%s: request failed: %s (%s)", c->name, strerror(-rc),
                  arbiter_describe(c->arb));
    ck_assert_msg(run_until(has_verdict, c, ARBITER_VOTE_TIMEOUT_MS / 1000.0 + 2), "%s: no verdict",
                  c->name);
    ck_assert_int_eq(c->verdicts, 1);
}

static void
ask(struct client *c, uint64_t epoch)
{
    ask_for(c, ARBITER_PROMOTE, epoch, 0x3000000, 0);
}

static void
expect_denied(struct client *c, const char *what)
{
    ck_assert_msg(!c->granted, "%s was granted: %s", c->name, c->why);
    ck_assert_msg(strstr(c->why, what) != NULL, "%s: denial \"%s\" lacks \"%s\"", c->name,
                  c->why, what);
}

static void
expect_granted(struct client *c, uint64_t epoch, const char *what)
{
    ck_assert_msg(c->granted, "%s denied: %s", c->name, c->why);
    ck_assert_uint_eq(c->verdict.epoch, epoch);
    ck_assert_str_eq(c->verdict.primary, c->name);
    ck_assert_msg(strstr(c->why, what) != NULL, "%s: grant \"%s\" lacks \"%s\"", c->name, c->why,
                  what);
}

/* etcd's epoch record: epoch, holder, exposed since exposed_lsn (0: not exposed). */
static struct wm_state
expect_record(uint64_t epoch, const char *holder, uint64_t exposed_lsn)
{
    char *text = et_get(&cluster, PREFIX "epoch"), err[256];
    struct wm_state st;

    ck_assert_msg(text != NULL, "no epoch record in etcd");
    ck_assert_msg(etcdrec_epoch_parse(text, strlen(text), &st, err, sizeof(err)) == 0, "%s: %s",
                  text, err);
    free(text);
    ck_assert_uint_eq(st.epoch, epoch);
    ck_assert_str_eq(st.primary, holder);
    ck_assert_msg(state_exposed(&st) == (exposed_lsn != 0), "epoch %" PRIu64 " is%s exposed",
                  st.epoch, state_exposed(&st) ? "" : " not");
    ck_assert_uint_eq(st.exposed_lsn, exposed_lsn);
    return st;
}

/* A site's liveness key as etcd holds it; false when absent. */
static bool
member(const char *node, struct etcdrec_member *m)
{
    char key[128], err[256], *text;
    int rc;

    snprintf(key, sizeof(key), PREFIX "members/%s", node);
    text = et_get(&cluster, key);
    if (text == NULL)
        return false;
    rc = etcdrec_member_parse(text, strlen(text), m, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s: %s", text, err);
    free(text);
    return true;
}

static void
expect_news(struct client *c, uint64_t epoch, const char *holder, uint64_t exposed_lsn,
            double seconds)
{
    double end = now_s() + seconds;

    while (!(c->told > 0 && c->news.epoch == epoch && state_exposed(&c->news) == (exposed_lsn != 0)) &&
           now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    ck_assert_msg(c->told > 0 && c->news.epoch == epoch,
                  "%s was not told of epoch %" PRIu64 " (last: %" PRIu64 "; %s)", c->name, epoch,
                  c->news.epoch, arbiter_describe(c->arb));
    ck_assert_str_eq(c->news.primary, holder);
    ck_assert_uint_eq(c->news.exposed_lsn, exposed_lsn);
    ck_assert(state_exposed(&c->news) == (exposed_lsn != 0));
}

/* The member a client talks to now, from its description "etcd@URL up, ...". */
static int
member_used(const struct client *c)
{
    const char *d = arbiter_describe(c->arb);

    for (int i = 0; i < cluster.n; i++) {
        char want[96];

        snprintf(want, sizeof(want), "etcd@%s ", cluster.m[i].url);
        if (strncmp(d, want, strlen(want)) == 0)
            return i;
    }
    ck_abort_msg("%s talks to no member: %s", c->name, d);
    return -1;
}

/* Both sides settle on epoch: the primary p a source with its grant's mark, s a sink. */
static void
settle(struct client *p, struct client *s, uint64_t epoch, const struct wm_state *mark)
{
    report(p, MSG_ROLE_SOURCE, epoch, 0x5000000, mark);
    report(s, MSG_ROLE_SINK, epoch, 0x5000000, mark);
    P = p;
    S = s;
    run_for(0.3);
    ck_assert_msg(arbiter_reachable(p->arb) && arbiter_reachable(s->arb), "%s; %s",
                  arbiter_describe(p->arb), arbiter_describe(s->arb));
}

/* The primary tells etcd its standby is synchronous again (a stale standby is never
 * promoted); returns the new epoch. */
static uint64_t
resync(void)
{
    uint64_t e = P->verdict.epoch;

    if (!state_exposed(&P->verdict))
        return e;
    ask_for(P, ARBITER_RESYNC, e, 0x5000000, 0);
    expect_granted(P, e + 1, "synchronous again");
    expect_news(S, e + 1, P->name, 0, 5);
    settle(P, S, e + 1, &P->verdict);
    return e + 1;
}

/* The primary's PostgreSQL has died (its key says unknown) long enough for the standby's
 * promotion, so that it and the primary's exposure can race for epoch + 1. */
static void
race_ready(uint64_t epoch)
{
    report(P, MSG_ROLE_UNKNOWN, epoch, 0x5000000, &P->verdict);
    run_for(SILENCE_MS / 1000.0 + 0.3);
}

/* Starts both requests of the race; returns with them in flight. */
static void
race_requests(uint64_t epoch)
{
    P->verdicts = S->verdicts = 0;
    ck_assert_int_eq(request(S, ARBITER_PROMOTE, epoch, 0x5000000, 0), 0);
    ck_assert_int_eq(request(P, ARBITER_EXPOSE, epoch, 0x5000000, 0x4F00000), 0);
}

/* Both verdicts in: exactly one granted; the winner becomes the primary. */
static void
finish_race(uint64_t epoch)
{
    struct client *w, *l;
    double end = now_s() + ARBITER_VOTE_TIMEOUT_MS / 1000.0 + 3;

    while ((P->verdicts == 0 || S->verdicts == 0) && now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    ck_assert_msg(P->verdicts == 1 && S->verdicts == 1, "verdicts: %s %d, %s %d", P->name,
                  P->verdicts, S->name, S->verdicts);
    ck_assert_msg(P->granted != S->granted, "%s: %s; %s: %s", P->name, P->why, S->name, S->why);
    w = P->granted ? P : S;
    l = P->granted ? S : P;
    ck_assert_uint_eq(w->verdict.epoch, epoch + 1);
    expect_denied(l, "already taken");
    expect_record(epoch + 1, w->name, w == P ? 0x4F00000 : 0x5000000);
    expect_news(l, epoch + 1, w->name, w == P ? 0x4F00000 : 0x5000000, 5);
    settle(w, l, epoch + 1, &w->verdict);
}

/* Runs walmirrorctl with the arguments built from fmt; its exit status, output in out, err. */
static int __attribute__((format(printf, 3, 4)))
ctl(char **out, char **err, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = tu_vcapture(dir, out, err, CTL, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- the tests, in order ---- */

START_TEST(a_fresh_prefix_primary_alive)
{
    struct etcdrec_member m;
    char want[160];

    client_start(&A, MSG_ROLE_SOURCE, 1);
    client_start(&B, MSG_ROLE_SINK, 1);
    ck_assert_msg(run_until(reachable, &A, 10), "site-a: %s", arbiter_describe(A.arb));
    ck_assert_msg(run_until(reachable, &B, 10), "site-b: %s", arbiter_describe(B.arb));
    run_for(0.5);

    /* the source of a fresh prefix records itself as the holder of its epoch */
    expect_record(1, "site-a", 0);
    ck_assert(member("site-a", &m));
    ck_assert_int_eq(m.role, MSG_ROLE_SOURCE);
    ck_assert_uint_eq(m.epoch, 1);
    ck_assert_uint_eq(m.durable_lsn, 0x3000000);
    ck_assert_str_eq(m.sync_state, "sync");
    ck_assert(member("site-b", &m));
    ck_assert_int_eq(m.role, MSG_ROLE_SINK);

    ask(&B, 1);
    expect_denied(&B, "the primary site-a was heard: its liveness key in etcd says it is the source");
    ck_assert_uint_eq(B.verdict.epoch, 1); /* a denial carries etcd's epoch */
    ck_assert_str_eq(B.verdict.primary, "site-a");
    ask(&A, 1);
    expect_denied(&A, "site-a is the primary");

    /* one request at a time */
    B.verdicts = 0;
    ck_assert_int_eq(request(&B, ARBITER_PROMOTE, 1, 0, 0), 0);
    ck_assert_int_eq(request(&B, ARBITER_PROMOTE, 1, 0, 0), -EBUSY);
    ck_assert(run_until(has_verdict, &B, 5));

    snprintf(want, sizeof(want), "etcd@%s up, epoch 1", cluster.m[0].url);
    ck_assert_str_eq(arbiter_describe(A.arb), want);
    ck_assert_int_eq(arbiter_state(A.arb), ARBITER_STATE_UP);
    ck_assert_int_eq(A.told + B.told, 0);
}
END_TEST

START_TEST(b_lease_expiry_grants)
{
    struct etcdrec_member m;
    double gone, end;

    client_stop(&A); /* its lease is not revoked: the key lives on until the TTL */
    gone = now_s();
    ask(&B, 1);
    expect_denied(&B, "the primary site-a was heard");

    end = now_s() + TTL_MS / 1000.0 + 3;
    while (member("site-a", &m) && now_s() < end)
        run_for(0.1);
    ck_assert_msg(!member("site-a", &m), "site-a's liveness key outlived its lease");
    ck_assert_msg(now_s() - gone >= TTL_MS / 1000.0 - HB_MS / 1000.0 - 0.05,
                  "site-a's key went after %.2f s, before its lease's TTL", now_s() - gone);
    run_for(0.2);
    ask(&B, 1);
    expect_granted(&B, 2, "epoch 2 granted to site-b: the primary site-a's liveness key expired");
    /* the new primary has no standby yet: exposed since what it held */
    ck_assert(state_exposed(&B.verdict));
    ck_assert_uint_eq(B.verdict.exposed_lsn, 0x3000000);
    expect_record(2, "site-b", 0x3000000);
    /* asked again by its holder: the same grant, not a new epoch */
    ask(&B, 1);
    expect_granted(&B, 2, "epoch 2 is site-b's already");
    expect_record(2, "site-b", 0x3000000);

    report(&B, MSG_ROLE_SOURCE, 2, 0x4000000, &B.verdict);
    run_for(0.5);
    ck_assert(arbiter_reachable(B.arb));
    ck_assert_int_eq(B.told, 0);
    ck_assert(member("site-b", &m));
    ck_assert_int_eq(m.role, MSG_ROLE_SOURCE);
    ck_assert_uint_eq(m.epoch, 2);
}
END_TEST

START_TEST(c_old_primary_fenced)
{
    char want[160];

    client_start(&A, MSG_ROLE_SOURCE, 1);
    expect_news(&A, 2, "site-b", 0x3000000, 10);
    ck_assert_int_eq(A.told, 1);
    run_until(reachable, &A, 1);
    ck_assert(!arbiter_reachable(A.arb));
    ck_assert_int_eq(request(&A, ARBITER_PROMOTE, 1, 0, 0), -ENOTCONN);
    ck_assert_int_eq(arbiter_state(A.arb), ARBITER_STATE_FENCED);
    snprintf(want, sizeof(want), "etcd@%s fenced: epoch 2 is held by site-b", cluster.m[0].url);
    ck_assert_str_eq(arbiter_describe(A.arb), want);
    expect_record(2, "site-b", 0x3000000); /* a stale source adopts nothing */

    /* rejoined as a sink at epoch 2, with the record's mark */
    report(&A, MSG_ROLE_SINK, 2, 0x3000000, &A.news);
    ck_assert_msg(run_until(reachable, &A, 5), "%s", arbiter_describe(A.arb));
    ck_assert_int_eq(arbiter_state(A.arb), ARBITER_STATE_UP);
    ask(&A, 1);
    expect_denied(&A, "epoch 2 is already taken: etcd is at epoch 2, held by site-b");
    expect_denied(&A, "running exposed");
    ask(&A, 2);
    expect_denied(&A, "site-a is stale: site-b runs exposed since 0/3000000");
    expect_denied(&A, "site-b last reported 0/4000000: up to 16777216 bytes acknowledged by "
                      "site-b may be missing");
    run_for(0.3);
    ck_assert_int_eq(A.told, 1); /* told once */
}
END_TEST

START_TEST(h_exposure_and_resync)
{
    /* only the primary may ask */
    ask_for(&A, ARBITER_EXPOSE, 2, 0x3000000, 0x3000000);
    expect_denied(&A, "site-a is not the primary: epoch 2 is held by site-b");
    ask_for(&A, ARBITER_RESYNC, 2, 0x3000000, 0);
    expect_denied(&A, "site-a is not the primary");
    expect_record(2, "site-b", 0x3000000);

    /* site-a caught up: site-b is synchronous again, site-a promotable */
    ask_for(&B, ARBITER_RESYNC, 2, 0x4000000, 0);
    expect_granted(&B, 3, "epoch 3 granted to site-b: its standby site-a is synchronous again");
    ck_assert(!state_exposed(&B.verdict));
    expect_record(3, "site-b", 0);
    expect_news(&A, 3, "site-b", 0, 5);
    report(&A, MSG_ROLE_SINK, 3, 0x4000000, &A.news);
    report(&B, MSG_ROLE_SOURCE, 3, 0x4200000, &B.verdict);
    run_for(0.3);
    ask(&A, 3);
    expect_denied(&A, "the primary site-b was heard"); /* not stale: only alive */

    /* site-a lost for standby_loss_timeout: site-b runs exposed since site-a's 0/4100000 */
    ask_for(&B, ARBITER_EXPOSE, 3, 0x4200000, 0x4100000);
    expect_granted(&B, 4, "the standby site-a is stale below 0/4100000");
    ck_assert(state_exposed(&B.verdict));
    ck_assert_uint_eq(B.verdict.exposed_lsn, 0x4100000);
    expect_record(4, "site-b", 0x4100000);
    expect_news(&A, 4, "site-b", 0x4100000, 5);
    report(&A, MSG_ROLE_SINK, 4, 0x4100000, &A.news);
    report(&B, MSG_ROLE_SOURCE, 4, 0x4800000, &B.verdict);
    run_for((HB_MS + 300) / 1000.0); /* a position-only change is written within a heartbeat */
    /* a stale standby is never promoted: the denial says what may be lost */
    ask(&A, 4);
    expect_denied(&A, "site-a is stale: site-b runs exposed since 0/4100000");
    expect_denied(&A, "site-b last reported 0/4800000");
    ck_assert(arbiter_reachable(A.arb));
    /* the holder asking again gets the same grant */
    ask_for(&B, ARBITER_EXPOSE, 3, 0x4800000, 0x4100000);
    expect_granted(&B, 4, "epoch 4 is site-b's already");
    expect_record(4, "site-b", 0x4100000);

    /* back to synchronous */
    ask_for(&B, ARBITER_RESYNC, 4, 0x4900000, 0);
    expect_granted(&B, 5, "synchronous again");
    expect_record(5, "site-b", 0);
    expect_news(&A, 5, "site-b", 0, 5);
    settle(&B, &A, 5, &B.verdict);
}
END_TEST

/* A second agent of one node (static: the arbiter points at it). */
static struct client S2;

START_TEST(r_races)
{
    uint64_t e;

    /* the primary's exposure against its standby's promotion, for epoch 6 */
    race_ready(5);
    race_requests(5);
    finish_race(5);

    /* two agents of one node promote at once (an agent restarted while the old one still
     * runs): one record, one epoch, both told the same grant */
    e = resync();
    S2 = (struct client){.name = S->name, .peer = S->peer};
    client_start(&S2, MSG_ROLE_SINK, e);
    report(&S2, MSG_ROLE_SINK, e, 0x5000000, &S->news);
    ck_assert_msg(run_until(reachable, &S2, 10), "%s", arbiter_describe(S2.arb));
    report(P, MSG_ROLE_UNKNOWN, e, 0x5000000, &P->verdict);
    run_for(SILENCE_MS / 1000.0 + 0.3);
    S->verdicts = S2.verdicts = 0;
    ck_assert_int_eq(request(S, ARBITER_PROMOTE, e, 0x5000000, 0), 0);
    ck_assert_int_eq(request(&S2, ARBITER_PROMOTE, e, 0x5000000, 0), 0);
    while ((S->verdicts == 0 || S2.verdicts == 0))
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    ck_assert_msg(S->granted && S2.granted, "%s; %s", S->why, S2.why);
    ck_assert_uint_eq(S->verdict.epoch, e + 1);
    ck_assert_uint_eq(S2.verdict.epoch, e + 1);
    ck_assert_msg(S->verdict.changed_unix_us == S2.verdict.changed_unix_us,
                  "two records written: %s / %s", S->why, S2.why);
    ck_assert_msg(strstr(S->why, "already") != NULL || strstr(S2.why, "already") != NULL,
                  "%s / %s", S->why, S2.why);
    expect_record(e + 1, S->name, 0x5000000);
    client_stop(&S2);
    config_free(&S2.cfg);
    expect_news(P, e + 1, S->name, 0x5000000, 5);
    settle(S, P, e + 1, &S->verdict);
}
END_TEST

START_TEST(d_leader_killed_mid_request)
{
    uint64_t e = resync();
    int used = member_used(P);

    ck_assert_int_eq(member_used(S), used);
    ck_assert_msg(et_move_leader(&cluster, used), "cannot make member %d the leader", used);
    /* The leader stops answering while both requests are on it, then dies: they must move to
     * the other members, which elect a new leader meanwhile. */
    race_ready(e);
    et_pause(&cluster, used);
    race_requests(e);
    run_for(0.2);
    ck_assert_int_eq(P->verdicts + S->verdicts, 0);
    et_kill(&cluster, used);
    finish_race(e);
    ck_assert_int_ne(member_used(P), used); /* failed over to another member */
    ck_assert_int_ne(member_used(S), used);
    et_restart(&cluster, used);
    ck_assert(et_wait_leader(&cluster, 15));
}
END_TEST

START_TEST(w_news_after_watch_cut)
{
    uint64_t e = S->news.epoch;
    int used = member_used(S);

    /* the standby's member stops answering: its client moves on, reads again, is told */
    S->told = 0;
    et_pause(&cluster, used);
    ask_for(P, ARBITER_RESYNC, e, 0x5100000, 0);
    expect_granted(P, e + 1, "synchronous again");
    expect_news(S, e + 1, P->name, 0, 8);
    ck_assert_int_ne(member_used(S), used);
    et_resume(&cluster, used);
    settle(P, S, e + 1, &P->verdict);
    ck_assert(et_wait_leader(&cluster, 10));

    /* the member it uses now is killed and restarted */
    used = member_used(S);
    S->told = 0;
    et_kill(&cluster, used);
    ask_for(P, ARBITER_EXPOSE, e + 1, 0x5200000, 0x5100000);
    expect_granted(P, e + 2, "runs exposed");
    expect_news(S, e + 2, P->name, 0x5100000, 8);
    et_restart(&cluster, used);
    ck_assert(et_wait_leader(&cluster, 15));
    settle(P, S, e + 2, &P->verdict);
}
END_TEST

START_TEST(g_unknown_primary_taken_over)
{
    uint64_t e = P->verdict.epoch;
    double lost;
    struct client *p = P, *s = S;

    /* resynchronised first: a stale standby would be refused */
    ask_for(p, ARBITER_RESYNC, e, 0x5300000, 0);
    expect_granted(p, e + 1, "synchronous again");
    expect_news(s, e + 1, p->name, 0, 5);
    settle(p, s, e + 1, &p->verdict);

    p->told = 0;
    report(p, MSG_ROLE_UNKNOWN, e + 1, 0x5300000, &p->verdict);
    lost = now_s();
    run_for(0.3);
    ask(s, e + 1);
    expect_denied(s, "reported itself unknown, not the source");
    while (now_s() < lost + SILENCE_MS / 1000.0 + 0.1)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    ask(s, e + 1);
    expect_granted(s, e + 2, "has not been the source in etcd for");
    expect_record(e + 2, s->name, 0x3000000);
    expect_news(p, e + 2, s->name, 0x3000000, 5);
    ck_assert_int_eq(arbiter_state(p->arb), ARBITER_STATE_FENCED);
    settle(s, p, e + 2, &s->verdict);
}
END_TEST

START_TEST(e_quorum_lost)
{
    int keep = member_used(P), stopped[2], n = 0;
    uint64_t e = P->verdict.epoch;

    for (int i = 0; i < cluster.n; i++)
        if (i != keep)
            stopped[n++] = i;
    et_pause(&cluster, stopped[0]);
    et_pause(&cluster, stopped[1]);
    ck_assert_msg(run_until(is_down, P, 10), "%s", arbiter_describe(P->arb));
    ck_assert_msg(run_until(is_down, S, 10), "%s", arbiter_describe(S->arb));
    ck_assert(!arbiter_reachable(P->arb));
    ck_assert_int_eq(request(P, ARBITER_EXPOSE, e, 0x5400000, 0x5300000), -ENOTCONN);
    ck_assert_int_eq(request(S, ARBITER_PROMOTE, e, 0x5300000, 0), -ENOTCONN);
    ck_assert_msg(strstr(arbiter_describe(P->arb), "etcd down (") != NULL, "%s",
                  arbiter_describe(P->arb));
    ck_assert_msg(strstr(arbiter_describe(P->arb), cluster.m[keep].url) != NULL, "%s",
                  arbiter_describe(P->arb));

    et_resume(&cluster, stopped[0]);
    et_resume(&cluster, stopped[1]);
    ck_assert(et_wait_leader(&cluster, 15));
    ck_assert_msg(run_until(reachable, P, 10), "%s", arbiter_describe(P->arb));
    ck_assert_msg(run_until(reachable, S, 10), "%s", arbiter_describe(S->arb));
    ck_assert_int_eq(arbiter_state(P->arb), ARBITER_STATE_UP);
    ask_for(P, ARBITER_EXPOSE, e, 0x5400000, 0x5300000);
    expect_granted(P, e + 1, "runs exposed");
    expect_news(S, e + 1, P->name, 0x5300000, 5);
    settle(P, S, e + 1, &P->verdict);
}
END_TEST

START_TEST(f_fleet_over_tls)
{
    char *out = NULL, *err = NULL;
    char ca[4200], cert[4200];
    int rc;

    snprintf(ca, sizeof(ca), "%s", tu_cert("ca.crt"));
    snprintf(cert, sizeof(cert), "%s", tu_cert("witness.crt"));
    rc = ctl(&out, &err, "--etcd '%s' --etcd-ca '%s' --etcd-cert '%s' --etcd-key '%s' fleet --json",
             cluster.endpoints, ca, cert, tu_cert("witness.key"));
    json_t *fleet, *pair;

    ck_assert_msg(rc == 0, "walmirrorctl fleet: exit %d: %s", rc, err);
    fleet = json_loads(out, 0, NULL);
    ck_assert_msg(json_is_array(fleet) && json_array_size(fleet) == 1, "%s", out);
    pair = json_array_get(fleet, 0);
    ck_assert_str_eq(json_string_value(json_object_get(pair, "prefix")), PREFIX);
    ck_assert_int_eq(json_integer_value(json_object_get(pair, "epoch")),
                     (json_int_t)P->verdict.epoch);
    ck_assert_str_eq(json_string_value(json_object_get(pair, "holder")), P->name);
    ck_assert(json_is_true(json_object_get(pair, "exposed")));
    ck_assert_int_eq(json_array_size(json_object_get(pair, "members")), 2);
    json_decref(fleet);

    /* without the client certificate etcd refuses the CLI */
    rc = ctl(&out, &err, "--etcd '%s' --etcd-ca '%s' fleet", cluster.endpoints, ca);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err, cluster.m[0].url) != NULL, "%s", err);
    free(out);
    free(err);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("etcd");
    TCase *tc = tcase_create("etcd");
    SRunner *sr;
    int failed;

    tu_require(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
    signal(SIGPIPE, SIG_IGN);
    dir = tu_tmpdir("etcd-test");
    (void)tu_certs();
    et_start(&cluster, 3, true);
    tu_require(wio_loop_new(&loop, 256) == 0);

    tcase_add_test(tc, a_fresh_prefix_primary_alive);
    tcase_add_test(tc, b_lease_expiry_grants);
    tcase_add_test(tc, c_old_primary_fenced);
    tcase_add_test(tc, h_exposure_and_resync);
    tcase_add_test(tc, r_races);
    tcase_add_test(tc, d_leader_killed_mid_request);
    tcase_add_test(tc, w_news_after_watch_cut);
    tcase_add_test(tc, g_unknown_primary_taken_over);
    tcase_add_test(tc, e_quorum_lost);
    tcase_add_test(tc, f_fleet_over_tls);
    tcase_set_timeout(tc, 90);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    /* One cluster and one pair of arbiters for all the tests, in order. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);

    client_stop(&A);
    client_stop(&B);
    /* Let cancelled timers and polls complete before the loop goes. */
    for (int i = 0; i < 30; i++)
        if (wio_run_once(loop, 10) < 0)
            break;
    wio_loop_free(loop);
    config_free(&A.cfg);
    config_free(&B.cfg);
    if (failed != 0)
        et_keep_logs(&cluster);
    et_stop(&cluster);
    tu_rmtree(dir);
    free(dir);
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
