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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arbiter.h"
#include "arbtest.h"
#include "config.h"
#include "etcdrec.h"
#include "etcdtest.h"
#include "msg.h"
#include "pairtest.h"
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

static struct et_cluster cluster;
static struct wio_loop *loop;
static char *dir;
static struct at_site SA = {.name = "site-a"}, SB = {.name = "site-b"};
/* After the races, the primary and its standby (A or B). */
static struct at_site *P, *S;

/* A site of the pair (its peer the other), with its own client certificate for etcd. */
static void
site_config(struct at_site *c, const char *peer)
{
    char file[64];

    config_free(&c->cfg);
    memset(&c->cfg, 0, sizeof(c->cfg));
    snprintf(c->cfg.node_name, sizeof(c->cfg.node_name), "%s", c->name);
    snprintf(c->cfg.peer.name, sizeof(c->cfg.peer.name), "%s", peer);
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

static const char *
peer_of(const struct at_site *c)
{
    return strcmp(c->name, "site-a") == 0 ? "site-b" : "site-a";
}

static void
client_start(struct at_site *c, uint8_t role, uint64_t epoch)
{
    site_config(c, peer_of(c));
    at_start(c);
    ck_assert_str_eq(arbiter_kind(c->arb), "etcd");
    at_report(c, role, epoch, 0x3000000, NULL);
}

static bool
is_down(const struct at_site *c)
{
    return arbiter_state(c->arb) == ARBITER_STATE_DOWN;
}

/* A promotion: epoch + 1, and waits for the verdict. */
static void
ask(struct at_site *c, uint64_t epoch)
{
    at_ask(c, ARBITER_PROMOTE, epoch, 0x3000000, 0);
}

/* Granted epoch, held by c, the text containing what. */
static void
expect_granted(struct at_site *c, uint64_t epoch, const char *what)
{
    at_expect(c, true, what);
    ck_assert_uint_eq(c->verdict.epoch, epoch);
    ck_assert_str_eq(c->verdict.primary, c->name);
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
expect_news(struct at_site *c, uint64_t epoch, const char *holder, uint64_t exposed_lsn,
            double seconds)
{
    double end = pt_now_s() + seconds;

    while (
        !(c->told > 0 && c->news.epoch == epoch && state_exposed(&c->news) == (exposed_lsn != 0)) &&
        pt_now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    ck_assert_msg(c->told > 0 && c->news.epoch == epoch,
                  "%s was not told of epoch %" PRIu64 " (last: %" PRIu64 "; %s)", c->name, epoch,
                  c->news.epoch, arbiter_describe(c->arb));
    ck_assert_str_eq(c->news.primary, holder);
    ck_assert_uint_eq(c->news.exposed_lsn, exposed_lsn);
    ck_assert(state_exposed(&c->news) == (exposed_lsn != 0));
}

/* The member a client talks to now, from its description "etcd@URL up, ...": waited for up to
 * 10 s, since right after a member's return or an election the client may be between two. */
static int
member_used(const struct at_site *c)
{
    const char *d = NULL;

    for (int tries = 0; tries < 50; tries++) {
        d = arbiter_describe(c->arb);
        for (int i = 0; i < cluster.n; i++) {
            char want[96];

            snprintf(want, sizeof(want), "etcd@%s ", cluster.m[i].url);
            if (strncmp(d, want, strlen(want)) == 0)
                return i;
        }
        at_run_for(0.2);
    }
    ck_abort_msg("%s talks to no member for 10 s: %s", c->name, d);
    return -1;
}

/* Both sides settle on epoch: the primary p a source with its grant's mark, s a sink. */
static void
settle(struct at_site *p, struct at_site *s, uint64_t epoch, const struct wm_state *mark)
{
    at_report(p, MSG_ROLE_SOURCE, epoch, 0x5000000, mark);
    at_report(s, MSG_ROLE_SINK, epoch, 0x5000000, mark);
    P = p;
    S = s;
    at_run_for(0.3);
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
    at_ask(P, ARBITER_RESYNC, e, 0x5000000, 0);
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
    at_report(P, MSG_ROLE_UNKNOWN, epoch, 0x5000000, &P->verdict);
    at_run_for(SILENCE_MS / 1000.0 + 0.3);
}

/* Starts both requests of the race; returns with them in flight. */
static void
race_requests(uint64_t epoch)
{
    P->verdicts = S->verdicts = 0;
    ck_assert_int_eq(at_request(S, ARBITER_PROMOTE, epoch, 0x5000000, 0), 0);
    ck_assert_int_eq(at_request(P, ARBITER_EXPOSE, epoch, 0x5000000, 0x4F00000), 0);
}

/* Both verdicts in: exactly one granted; the winner becomes the primary. */
static void
finish_race(uint64_t epoch)
{
    struct at_site *w, *l;
    double end = pt_now_s() + ARBITER_VOTE_TIMEOUT_MS / 1000.0 + 3;

    while ((P->verdicts == 0 || S->verdicts == 0) && pt_now_s() < end)
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    ck_assert_msg(P->verdicts == 1 && S->verdicts == 1, "verdicts: %s %d, %s %d", P->name,
                  P->verdicts, S->name, S->verdicts);
    ck_assert_msg(P->granted != S->granted, "%s: %s; %s: %s", P->name, P->why, S->name, S->why);
    w = P->granted ? P : S;
    l = P->granted ? S : P;
    ck_assert_uint_eq(w->verdict.epoch, epoch + 1);
    at_expect(l, false, "already taken");
    expect_record(epoch + 1, w->name, w == P ? 0x4F00000 : 0x5000000);
    expect_news(l, epoch + 1, w->name, w == P ? 0x4F00000 : 0x5000000, 5);
    settle(w, l, epoch + 1, &w->verdict);
}

/* ---- the tests, in order ---- */

START_TEST(a_fresh_prefix_primary_alive)
{
    struct etcdrec_member m;
    char want[160];

    client_start(&SA, MSG_ROLE_SOURCE, 1);
    client_start(&SB, MSG_ROLE_SINK, 1);
    ck_assert_msg(at_run_until(at_reachable, &SA, 10), "site-a: %s", arbiter_describe(SA.arb));
    ck_assert_msg(at_run_until(at_reachable, &SB, 10), "site-b: %s", arbiter_describe(SB.arb));
    at_run_for(0.5);

    /* the source of a fresh prefix records itself as the holder of its epoch */
    expect_record(1, "site-a", 0);
    ck_assert(member("site-a", &m));
    ck_assert_int_eq(m.role, MSG_ROLE_SOURCE);
    ck_assert_uint_eq(m.epoch, 1);
    ck_assert_uint_eq(m.durable_lsn, 0x3000000);
    ck_assert_str_eq(m.sync_state, "sync");
    ck_assert(member("site-b", &m));
    ck_assert_int_eq(m.role, MSG_ROLE_SINK);

    ask(&SB, 1);
    at_expect(&SB, false,
              "the primary site-a was heard: its liveness key in etcd says it is the source");
    ck_assert_uint_eq(SB.verdict.epoch, 1); /* a denial carries etcd's epoch */
    ck_assert_str_eq(SB.verdict.primary, "site-a");
    ask(&SA, 1);
    at_expect(&SA, false, "site-a is the primary");

    /* one request at a time */
    SB.verdicts = 0;
    ck_assert_int_eq(at_request(&SB, ARBITER_PROMOTE, 1, 0, 0), 0);
    ck_assert_int_eq(at_request(&SB, ARBITER_PROMOTE, 1, 0, 0), -EBUSY);
    ck_assert(at_run_until(at_has_verdict, &SB, 5));
    at_run_for(0.2);
    ck_assert_int_eq(SB.verdicts, 1);

    snprintf(want, sizeof(want), "etcd@%s up, epoch 1", cluster.m[0].url);
    ck_assert_str_eq(arbiter_describe(SA.arb), want);
    ck_assert_int_eq(arbiter_state(SA.arb), ARBITER_STATE_UP);
    ck_assert_int_eq(SA.told + SB.told, 0);
}
END_TEST

START_TEST(b_lease_expiry_grants)
{
    struct etcdrec_member m;
    double gone, end;

    at_stop(&SA); /* its lease is not revoked: the key lives on until the TTL */
    gone = pt_now_s();
    ask(&SB, 1);
    at_expect(&SB, false, "the primary site-a was heard");

    end = pt_now_s() + TTL_MS / 1000.0 + 3;
    while (member("site-a", &m) && pt_now_s() < end)
        at_run_for(0.1);
    ck_assert_msg(!member("site-a", &m), "site-a's liveness key outlived its lease");
    ck_assert_msg(pt_now_s() - gone >= TTL_MS / 1000.0 - HB_MS / 1000.0 - 0.05,
                  "site-a's key went after %.2f s, before its lease's TTL", pt_now_s() - gone);
    at_run_for(0.2);
    ask(&SB, 1);
    expect_granted(&SB, 2, "epoch 2 granted to site-b: the primary site-a's liveness key expired");
    /* the new primary has no standby yet: exposed since what it held */
    ck_assert(state_exposed(&SB.verdict));
    ck_assert_uint_eq(SB.verdict.exposed_lsn, 0x3000000);
    expect_record(2, "site-b", 0x3000000);
    /* asked again by its holder: the same grant, not a new epoch */
    ask(&SB, 1);
    expect_granted(&SB, 2, "epoch 2 is site-b's already");
    expect_record(2, "site-b", 0x3000000);

    at_report(&SB, MSG_ROLE_SOURCE, 2, 0x4000000, &SB.verdict);
    at_run_for(0.5);
    ck_assert(arbiter_reachable(SB.arb));
    ck_assert_int_eq(SB.told, 0);
    ck_assert(member("site-b", &m));
    ck_assert_int_eq(m.role, MSG_ROLE_SOURCE);
    ck_assert_uint_eq(m.epoch, 2);
}
END_TEST

START_TEST(c_old_primary_fenced)
{
    char want[160];

    client_start(&SA, MSG_ROLE_SOURCE, 1);
    expect_news(&SA, 2, "site-b", 0x3000000, 10);
    ck_assert_int_eq(SA.told, 1);
    at_run_until(at_reachable, &SA, 1);
    ck_assert(!arbiter_reachable(SA.arb));
    ck_assert_int_eq(at_request(&SA, ARBITER_PROMOTE, 1, 0, 0), -ENOTCONN);
    ck_assert_int_eq(arbiter_state(SA.arb), ARBITER_STATE_FENCED);
    snprintf(want, sizeof(want), "etcd@%s fenced: epoch 2 is held by site-b", cluster.m[0].url);
    ck_assert_str_eq(arbiter_describe(SA.arb), want);
    expect_record(2, "site-b", 0x3000000); /* a stale source adopts nothing */

    /* rejoined as a sink at epoch 2, with the record's mark */
    at_report(&SA, MSG_ROLE_SINK, 2, 0x3000000, &SA.news);
    ck_assert_msg(at_run_until(at_reachable, &SA, 5), "%s", arbiter_describe(SA.arb));
    ck_assert_int_eq(arbiter_state(SA.arb), ARBITER_STATE_UP);
    ask(&SA, 1);
    at_expect(&SA, false, "epoch 2 is already taken: etcd is at epoch 2, held by site-b");
    at_expect(&SA, false, "running exposed");
    ask(&SA, 2);
    at_expect(&SA, false, "site-a is stale: site-b runs exposed since 0/3000000");
    at_expect(&SA, false,
              "site-b last reported 0/4000000: up to 16777216 bytes acknowledged by "
              "site-b may be missing");
    at_run_for(0.3);
    ck_assert_int_eq(SA.told, 1); /* told once */
}
END_TEST

START_TEST(h_exposure_and_resync)
{
    /* only the primary may ask */
    at_ask(&SA, ARBITER_EXPOSE, 2, 0x3000000, 0x3000000);
    at_expect(&SA, false, "site-a is not the primary: epoch 2 is held by site-b");
    at_ask(&SA, ARBITER_RESYNC, 2, 0x3000000, 0);
    at_expect(&SA, false, "site-a is not the primary");
    expect_record(2, "site-b", 0x3000000);

    /* site-a caught up: site-b is synchronous again, site-a promotable */
    at_ask(&SB, ARBITER_RESYNC, 2, 0x4000000, 0);
    expect_granted(&SB, 3, "epoch 3 granted to site-b: its standby site-a is synchronous again");
    ck_assert(!state_exposed(&SB.verdict));
    expect_record(3, "site-b", 0);
    expect_news(&SA, 3, "site-b", 0, 5);
    at_report(&SA, MSG_ROLE_SINK, 3, 0x4000000, &SA.news);
    at_report(&SB, MSG_ROLE_SOURCE, 3, 0x4200000, &SB.verdict);
    at_run_for(0.3);
    ask(&SA, 3);
    at_expect(&SA, false, "the primary site-b was heard"); /* not stale: only alive */

    /* site-a lost for standby_loss_timeout: site-b runs exposed since site-a's 0/4100000 */
    at_ask(&SB, ARBITER_EXPOSE, 3, 0x4200000, 0x4100000);
    expect_granted(&SB, 4, "the standby site-a is stale below 0/4100000");
    ck_assert(state_exposed(&SB.verdict));
    ck_assert_uint_eq(SB.verdict.exposed_lsn, 0x4100000);
    expect_record(4, "site-b", 0x4100000);
    expect_news(&SA, 4, "site-b", 0x4100000, 5);
    at_report(&SA, MSG_ROLE_SINK, 4, 0x4100000, &SA.news);
    at_report(&SB, MSG_ROLE_SOURCE, 4, 0x4800000, &SB.verdict);
    at_run_for((HB_MS + 300) / 1000.0); /* a position-only change is written within a heartbeat */
    /* a stale standby is never promoted: the denial says what may be lost */
    ask(&SA, 4);
    at_expect(&SA, false, "site-a is stale: site-b runs exposed since 0/4100000");
    at_expect(&SA, false, "site-b last reported 0/4800000");
    ck_assert(arbiter_reachable(SA.arb));
    /* the holder asking again gets the same grant */
    at_ask(&SB, ARBITER_EXPOSE, 3, 0x4800000, 0x4100000);
    expect_granted(&SB, 4, "epoch 4 is site-b's already");
    expect_record(4, "site-b", 0x4100000);

    /* back to synchronous */
    at_ask(&SB, ARBITER_RESYNC, 4, 0x4900000, 0);
    expect_granted(&SB, 5, "synchronous again");
    expect_record(5, "site-b", 0);
    expect_news(&SA, 5, "site-b", 0, 5);
    settle(&SB, &SA, 5, &SB.verdict);
}
END_TEST

/* A second agent of one node (static: the arbiter points at it). */
static struct at_site S2;

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
    S2 = (struct at_site){.name = S->name};
    client_start(&S2, MSG_ROLE_SINK, e);
    at_report(&S2, MSG_ROLE_SINK, e, 0x5000000, &S->news);
    ck_assert_msg(at_run_until(at_reachable, &S2, 10), "%s", arbiter_describe(S2.arb));
    at_report(P, MSG_ROLE_UNKNOWN, e, 0x5000000, &P->verdict);
    at_run_for(SILENCE_MS / 1000.0 + 0.3);
    S->verdicts = S2.verdicts = 0;
    ck_assert_int_eq(at_request(S, ARBITER_PROMOTE, e, 0x5000000, 0), 0);
    ck_assert_int_eq(at_request(&S2, ARBITER_PROMOTE, e, 0x5000000, 0), 0);
    while ((S->verdicts == 0 || S2.verdicts == 0))
        ck_assert_int_ge(wio_run_once(loop, 20), 0);
    ck_assert_msg(S->granted && S2.granted, "%s; %s", S->why, S2.why);
    ck_assert_uint_eq(S->verdict.epoch, e + 1);
    ck_assert_uint_eq(S2.verdict.epoch, e + 1);
    ck_assert_msg(S->verdict.changed_unix_us == S2.verdict.changed_unix_us,
                  "two records written: %s / %s", S->why, S2.why);
    ck_assert_msg(strstr(S->why, "already") != NULL || strstr(S2.why, "already") != NULL, "%s / %s",
                  S->why, S2.why);
    expect_record(e + 1, S->name, 0x5000000);
    at_stop(&S2);
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
    at_run_for(0.2);
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
    at_ask(P, ARBITER_RESYNC, e, 0x5100000, 0);
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
    at_ask(P, ARBITER_EXPOSE, e + 1, 0x5200000, 0x5100000);
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
    struct at_site *p = P, *s = S;

    /* resynchronised first: a stale standby would be refused */
    at_ask(p, ARBITER_RESYNC, e, 0x5300000, 0);
    expect_granted(p, e + 1, "synchronous again");
    expect_news(s, e + 1, p->name, 0, 5);
    settle(p, s, e + 1, &p->verdict);

    p->told = 0;
    at_report(p, MSG_ROLE_UNKNOWN, e + 1, 0x5300000, &p->verdict);
    lost = pt_now_s();
    at_run_for(0.3);
    ask(s, e + 1);
    at_expect(s, false, "reported itself unknown, not the source");
    while (pt_now_s() < lost + SILENCE_MS / 1000.0 + 0.1)
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
    ck_assert_msg(at_run_until(is_down, P, 10), "%s", arbiter_describe(P->arb));
    ck_assert_msg(at_run_until(is_down, S, 10), "%s", arbiter_describe(S->arb));
    ck_assert(!arbiter_reachable(P->arb));
    ck_assert_int_eq(at_request(P, ARBITER_EXPOSE, e, 0x5400000, 0x5300000), -ENOTCONN);
    ck_assert_int_eq(at_request(S, ARBITER_PROMOTE, e, 0x5300000, 0), -ENOTCONN);
    ck_assert_msg(strstr(arbiter_describe(P->arb), "etcd down (") != NULL, "%s",
                  arbiter_describe(P->arb));
    ck_assert_msg(strstr(arbiter_describe(P->arb), cluster.m[keep].url) != NULL, "%s",
                  arbiter_describe(P->arb));

    et_resume(&cluster, stopped[0]);
    et_resume(&cluster, stopped[1]);
    ck_assert(et_wait_leader(&cluster, 15));
    ck_assert_msg(at_run_until(at_reachable, P, 10), "%s", arbiter_describe(P->arb));
    ck_assert_msg(at_run_until(at_reachable, S, 10), "%s", arbiter_describe(S->arb));
    ck_assert_int_eq(arbiter_state(P->arb), ARBITER_STATE_UP);
    at_ask(P, ARBITER_EXPOSE, e, 0x5400000, 0x5300000);
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
    rc = tu_capture(dir, &out, &err, CTL,
                    "--etcd '%s' --etcd-ca '%s' --etcd-cert '%s' --etcd-key '%s' fleet --json",
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
    rc =
        tu_capture(dir, &out, &err, CTL, "--etcd '%s' --etcd-ca '%s' fleet", cluster.endpoints, ca);
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
    int failed;

    (void)tu_certs();
    et_start(&cluster, 3, true);
    loop = at_init();
    dir = tu_tmpdir("etcd-test");

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
    /* One cluster and one pair of arbiters for all the tests, in order. */
    failed = pt_run_in_order(s);
    at_close((struct at_site *const[]){&SA, &SB}, 2);
    if (failed != 0)
        et_keep_logs(&cluster);
    et_stop(&cluster);
    tu_rmtree(dir);
    free(dir);
    return failed == 0 ? 0 : 1;
}
