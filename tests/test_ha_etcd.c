/*
 * test_ha_etcd.c - a real pair arbitrated by a real etcd cluster (arbiter = etcd): fail-over,
 * the etcd leader lost in the middle of one, quorum lost, two pairs on one etcd, running
 * exposed, switchover.
 *
 * Three etcd members (etcdtest.h) on loopback ports serving https with client certificates
 * demanded (--client-cert-auth): every site talks to etcd over TLS with its own certificate.
 * Two PostgreSQL 15 servers and two site agents as the postgres user (hatest.h), arbiter =
 * etcd, failover_timeout HA_FAILOVER_TIMEOUT_S, etcd_lease_ttl LEASE_TTL_S, availability_mode
 * maximum_availability, standby_loss_timeout HA_STANDBY_LOSS_TIMEOUT_S; site A reaches B and
 * each etcd member through wm-linkem, which the tests cut.  The ledger client commits ids one
 * by one at synchronous_commit = on through a connection that follows the writable primary.
 * In order, on one pair (issue 14, item 6):
 *   f. switchover A -> B -> A: each advances the epoch in etcd by one, held by the new primary,
 *      and both agents report it;
 *   a. kill -9 of A's agent and PostgreSQL under the ledger: B is promoted within
 *      failover_timeout + etcd_lease_ttl + 2 s (printed), by one epoch, and every acknowledged
 *      id is on it; A's agent restarted alone is fenced and rejoins;
 *   d. meanwhile a second pair (two arbiters driven by the test, arbtest.h) under its own
 *      prefix: untouched by a's fail-over (same record, no news, its standby still refused);
 *      then a fail-over in the second pair leaves the real pair's record alone;
 *   b. B (the primary) killed and the etcd leader, which A's requests go through, stopped and
 *      then killed while A asks to be promoted: exactly one grant - one epoch advance, held by
 *      A, one "promotion granted" in A's log, none in B's -, and B rejoins;
 *   e. running exposed through etcd (issue 12's a, c): B's site killed: A's commits resume
 *      within standby_loss_timeout + 2 s, A shows exposed with its WAL at risk growing, the
 *      etcd record is exposed; B restarted: A synchronous again by itself, the record clean;
 *      then the A-B link cut (A exposed again) and A killed: B is not promoted for 5 x
 *      failover_timeout, its status says it is stale and why; failover --force is refused,
 *      --force --accept-data-loss promotes it; the ids B lacks are all among those
 *      acknowledged after the exposure began; A rejoins;
 *   c. two of the three members stopped: the primary (B) keeps taking synchronous commits,
 *      not exposed; B killed: A is not promoted for 5 x failover_timeout; the members back: A
 *      is promoted by itself (an automatic fail-over that etcd refused while B's key still
 *      lived is asked again), nothing acknowledged is lost, B rejoins;
 *   g. (issue 12's e) A, the primary, cut from B and from every etcd member: A never runs
 *      exposed, B is promoted, no id acknowledged by A after it; the links back, A rejoins.
 * The etcd members, agents and servers are stopped at exit, also on failure.  A missing etcd
 * binary fails the suite (et_start).
 */
#include <check.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arbtest.h"
#include "clock.h"
#include "config.h"
#include "etcdrec.h"
#include "etcdtest.h"
#include "hatest.h"
#include "msg.h"
#include "pairtest.h"
#include "pgtest.h"
#include "state.h"
#include "testutil.h"

#define LEASE_TTL_S 2
#define PREFIX2 "/walmirror/pair2/"
#define NO_PROMOTION_S (5 * HA_FAILOVER_TIMEOUT_S)

static struct et_cluster cluster;
static char prefix[ETCDREC_PREFIX_MAX + 1]; /* the real pair's */
static struct at_site P2A = {.name = "p2-a"}, P2B = {.name = "p2-b"};
static bool pair2_running; /* its arbiters' loop wants running */
static double failover_s = -1, loss_to_commit_s = -1;

/* ---- helpers ---- */

/* Lets seconds pass, running the second pair's arbiters (their leases renewed) if they run. */
static void
pass(double seconds)
{
    if (pair2_running)
        at_run_for(seconds);
    else
        usleep((useconds_t)(seconds * 1e6));
}

/* pt_wait_true, the second pair's arbiters running meanwhile. */
static bool
wait_sql(struct pt_site *s, const char *sql, double seconds)
{
    double end = pt_now_s() + seconds;

    do {
        if (pt_sql_true(s, sql))
            return true;
        pass(0.1);
    } while (pt_now_s() < end);
    return false;
}

/* ha_wait_ack_after from now, the second pair's arbiters running meanwhile; whether one came. */
static bool
wait_ack(double seconds)
{
    long long t = (long long)clock_unix_us();
    double end = pt_now_s() + seconds;

    do {
        if (ha_first_ack_after(t) != 0)
            return true;
        pass(0.05);
    } while (pt_now_s() < end);
    return false;
}

/* Waits until etcd's record of the pair is at epoch, held by holder; the last record read. */
static struct wm_state
wait_record(uint64_t epoch, const char *holder, double seconds)
{
    double end = pt_now_s() + seconds;
    struct wm_state r;

    for (;;) {
        r = et_epoch_record(&cluster, prefix);
        if ((r.epoch == epoch && strcmp(r.primary, holder) == 0) || pt_now_s() >= end)
            return r;
        pass(0.1);
    }
}

/* The lines of path after offset from that contain both a and b. */
static int
count_lines_after(const char *path, size_t from, const char *a, const char *b)
{
    size_t len;
    char *text = tu_read_file(path, &len);
    int n = 0;

    if (text == NULL || len <= from) {
        free(text);
        return 0;
    }
    for (char *line = strtok(text + from, "\n"); line != NULL; line = strtok(NULL, "\n"))
        n += strstr(line, a) != NULL && strstr(line, b) != NULL;
    free(text);
    return n;
}

/* The old primary's agent alone restarted, its PostgreSQL left down as the kill left it:
 * fenced by the newer epoch in etcd, rewound, the standby of primary, synchronous again. */
static void
rejoin(struct pt_site *old, struct pt_site *primary)
{
    size_t from = ha_log_size(old->log);

    pt_start_agent(old);
    ck_assert_msg(ha_log_has_after(old->log, from, "fenced", 30), "%s was not fenced; see %s",
                  old->name, old->log);
    ck_assert_msg(wait_sql(old, "SELECT pg_is_in_recovery()", 120),
                  "%s did not rejoin as a standby; see %s", old->name, old->log);
    ck_assert_msg(pt_wait_sync(primary, 90), "mirroring towards %s is not synchronous", old->name);
    ck_assert_msg(
        !ha_log_has_after(old->log, from, "starting the local PostgreSQL as the primary", 0),
        "%s's agent started its stale primary", old->name);
}

/* The second pair's site: its arbiter under PREFIX2, over TLS with the harness's client
 * certificate; it reports role at epoch 1. */
static void
pair2_start(struct at_site *c, const char *peer, uint8_t role)
{
    config_free(&c->cfg);
    memset(&c->cfg, 0, sizeof(c->cfg));
    snprintf(c->cfg.node_name, sizeof(c->cfg.node_name), "%s", c->name);
    snprintf(c->cfg.peer.name, sizeof(c->cfg.peer.name), "%s", peer);
    c->cfg.arbiter = CONFIG_ARBITER_ETCD;
    c->cfg.etcd_endpoints = strdup(cluster.endpoints);
    c->cfg.etcd_prefix = strdup(PREFIX2);
    c->cfg.etcd_ca = strdup(et_ca(&cluster));
    c->cfg.etcd_cert = strdup(et_client_cert(&cluster));
    c->cfg.etcd_key = strdup(et_client_key(&cluster));
    c->cfg.heartbeat_interval_ms = 200;
    c->cfg.peer_timeout_ms = 2000;
    c->cfg.failover_timeout_ms = HA_FAILOVER_TIMEOUT_S * 1000;
    c->cfg.etcd_lease_ttl_ms = LEASE_TTL_S * 1000;
    tu_require(c->cfg.etcd_endpoints != NULL && c->cfg.etcd_prefix != NULL &&
               c->cfg.etcd_ca != NULL && c->cfg.etcd_cert != NULL && c->cfg.etcd_key != NULL);
    at_start(c);
    at_report(c, role, 1, 0x3000000, NULL);
}

/* Both agents report epoch (their /status). */
static void
assert_agents_at(uint64_t epoch)
{
    double end = pt_now_s() + 10;

    while ((ha_status_u64(&A, "epoch") != epoch || ha_status_u64(&B, "epoch") != epoch) &&
           pt_now_s() < end)
        usleep(100000);
    ck_assert_uint_eq(ha_status_u64(&A, "epoch"), epoch);
    ck_assert_uint_eq(ha_status_u64(&B, "epoch"), epoch);
}

/* ---- the tests ---- */

/* Each test starts with whole links, whatever the one before it left cut. */
static void
links_whole(void)
{
    ha_linkem_send(&L_ab, "restore");
    ha_arbiter_links("restore");
}

START_TEST(f_switchover_advances_the_epoch)
{
    struct pt_site *from = &A, *to = &B;
    struct wm_state r = et_epoch_record(&cluster, prefix);
    char out[8192];

    ck_assert(pt_wait_sync(&A, 60));
    ck_assert_str_eq(r.primary, "site-a");
    ck_assert(!state_exposed(&r));
    assert_agents_at(r.epoch);
    for (int round = 0; round < 2; round++) {
        uint64_t before = r.epoch;
        struct pt_site *t;
        double end = pt_now_s() + 30;

        /* The preflight wants the standby replaying what its agent serves. */
        ck_assert(pt_wait_true(to,
                               "SELECT count(*) = 1 FROM pg_stat_wal_receiver "
                               "WHERE status = 'streaming'",
                               30));
        while (ha_status_u64(from, "apply_lsn") == 0 && pt_now_s() < end)
            usleep(100000);
        ck_assert_int_eq(ha_ctl(out, sizeof(out), "switchover"), 0);
        ck_assert_msg(pt_wait_true(to, "SELECT NOT pg_is_in_recovery()", 10), "%s", out);
        ck_assert(pt_wait_true(from, "SELECT pg_is_in_recovery()", 30));
        ck_assert_msg(pt_wait_sync(to, 60), "%s is not synchronous again", to->name);
        r = wait_record(before + 1, to->name, 10);
        ck_assert_msg(r.epoch == before + 1 && strcmp(r.primary, to->name) == 0,
                      "switchover to %s: etcd holds epoch %" PRIu64 " by %s, was %" PRIu64,
                      to->name, r.epoch, r.primary, before);
        ck_assert(!state_exposed(&r));
        assert_agents_at(r.epoch);
        fprintf(stderr, "switchover %s -> %s: etcd's epoch %" PRIu64 " -> %" PRIu64 "\n",
                from->name, to->name, before, r.epoch);
        t = from;
        from = to;
        to = t;
    }
}
END_TEST

START_TEST(a_failover_through_etcd)
{
    struct wm_state r0, r, p2;
    long long gap;
    size_t from;
    double t0;
    int acked;

    ck_assert(pt_wait_sync(&A, 60));
    /* The second pair (d) comes up first, under its own prefix on the same members. */
    pair2_start(&P2A, "p2-b", MSG_ROLE_SOURCE);
    pair2_start(&P2B, "p2-a", MSG_ROLE_SINK);
    pair2_running = true;
    ck_assert(at_run_until(at_reachable, &P2A, 10));
    ck_assert(at_run_until(at_reachable, &P2B, 10));
    at_run_for(0.5);
    p2 = et_epoch_record(&cluster, PREFIX2);
    ck_assert_uint_eq(p2.epoch, 1);
    ck_assert_str_eq(p2.primary, "p2-a");
    ck_assert(wait_ack(10));
    r0 = et_epoch_record(&cluster, prefix);
    ck_assert_str_eq(r0.primary, "site-a");
    from = ha_log_size(B.log);
    t0 = pt_now_s();
    ha_kill_site(&A);
    ck_assert_msg(
        wait_sql(&B, "SELECT NOT pg_is_in_recovery()", HA_FAILOVER_TIMEOUT_S + LEASE_TTL_S + 20),
        "B was not promoted; see %s", B.log);
    failover_s = pt_now_s() - t0;
    fprintf(stderr,
            "fail-over through etcd: B writable %.2f s after A's kill (failover_timeout "
            "%d s, etcd_lease_ttl %d s)\n",
            failover_s, HA_FAILOVER_TIMEOUT_S, LEASE_TTL_S);
    ck_assert_msg(failover_s <= HA_FAILOVER_TIMEOUT_S + LEASE_TTL_S + 2.0,
                  "B promoted %.2f s after A's kill", failover_s);
    r = et_epoch_record(&cluster, prefix);
    ck_assert_msg(r.epoch == r0.epoch + 1 && strcmp(r.primary, "site-b") == 0,
                  "etcd holds epoch %" PRIu64 " by %s after the fail-over from %" PRIu64, r.epoch,
                  r.primary, r0.epoch);
    ck_assert_int_eq(count_lines_after(B.log, from, "promotion (epoch", "granted"), 1);
    ck_assert(wait_ack(15));
    acked = ha_check_ledger(&B, &gap);
    fprintf(stderr, "%d acknowledged ids, all on B; longest gap %.2f s\n", acked,
            (double)gap / 1e6);

    /* d: the second pair saw nothing of it: the same record, no news, its standby refused. */
    at_run_for(0.5);
    r = et_epoch_record(&cluster, PREFIX2);
    ck_assert(r.epoch == p2.epoch && strcmp(r.primary, "p2-a") == 0 &&
              r.changed_unix_us == p2.changed_unix_us);
    ck_assert_int_eq(P2A.told, 0);
    ck_assert_int_eq(P2B.told, 0);
    at_ask(&P2B, ARBITER_PROMOTE, 1, 0x3000000, 0);
    at_expect(&P2B, false, "p2-a was heard");
}
END_TEST

/* d, the other way: a fail-over in the second pair leaves the real pair alone. */
START_TEST(d_failover_in_the_other_pair)
{
    struct wm_state mine = et_epoch_record(&cluster, prefix), r;
    char key[256], *v;
    double end;
    uint64_t epoch_a = ha_status_u64(&B, "epoch");

    at_stop(&P2A);
    snprintf(key, sizeof(key), "%smembers/p2-a", PREFIX2);
    end = pt_now_s() + LEASE_TTL_S + 5;
    while ((v = et_get(&cluster, key)) != NULL && pt_now_s() < end) {
        free(v);
        at_run_for(0.2);
    }
    ck_assert_msg(v == NULL, "p2-a's liveness key outlived its lease");
    at_ask(&P2B, ARBITER_PROMOTE, 1, 0x3000000, 0);
    at_expect(&P2B, true, "granted to p2-b");
    r = et_epoch_record(&cluster, PREFIX2);
    ck_assert(r.epoch == 2 && strcmp(r.primary, "p2-b") == 0);
    at_stop(&P2B);
    pair2_running = false;
    /* The real pair: the same record, the same epoch on B, B still the primary. */
    sleep(1);
    r = et_epoch_record(&cluster, prefix);
    ck_assert(r.epoch == mine.epoch && strcmp(r.primary, mine.primary) == 0 &&
              r.changed_unix_us == mine.changed_unix_us);
    ck_assert_uint_eq(ha_status_u64(&B, "epoch"), epoch_a);
    ck_assert(pt_sql_true(&B, "SELECT NOT pg_is_in_recovery()"));
    fprintf(stderr, "pair 2 failed over (epoch 2, p2-b); this pair's record unchanged\n");

    /* A back as B's standby, for the tests after. */
    rejoin(&A, &B);
}
END_TEST

START_TEST(b_leader_killed_mid_failover)
{
    struct wm_state r0, r;
    size_t from_a, from_b;
    double t0, asked_s = -1;
    long long gap;
    int leader;

    ck_assert(pt_wait_sync(&B, 60));
    ck_assert(ha_wait_ack_after((long long)clock_unix_us(), 10) != 0);
    /* The leader is the member A's requests go to first (its first endpoint). */
    ck_assert(et_move_leader(&cluster, 0));
    ck_assert(et_wait_leader(&cluster, 10));
    leader = et_leader(&cluster);
    ck_assert_int_eq(leader, 0);
    r0 = et_epoch_record(&cluster, prefix);
    ck_assert_str_eq(r0.primary, "site-b");
    from_a = ha_log_size(A.log);
    t0 = pt_now_s();
    ha_kill_site(&B);
    /* Stopped just before A asks (its request then waits on it), killed once A has asked. */
    usleep((useconds_t)((HA_FAILOVER_TIMEOUT_S - 0.5) * 1e6));
    et_pause(&cluster, leader);
    if (ha_log_has_after(A.log, from_a, "asking etcd for epoch", 15))
        asked_s = pt_now_s() - t0;
    et_kill(&cluster, leader);
    fprintf(stderr, "etcd leader (member %d) stopped %.1f s after B's kill, killed after A %s\n",
            leader, (double)HA_FAILOVER_TIMEOUT_S - 0.5,
            asked_s >= 0 ? "asked for its promotion" : "(A had not asked within 15 s)");
    ck_assert_msg(wait_sql(&A, "SELECT NOT pg_is_in_recovery()", 60), "A was not promoted; see %s",
                  A.log);
    fprintf(stderr, "A writable %.2f s after B's kill, the leader lost meanwhile\n",
            pt_now_s() - t0);
    r = et_epoch_record(&cluster, prefix);
    ck_assert_msg(r.epoch == r0.epoch + 1 && strcmp(r.primary, "site-a") == 0,
                  "etcd holds epoch %" PRIu64 " by %s after a fail-over from %" PRIu64, r.epoch,
                  r.primary, r0.epoch);
    ck_assert_int_eq(count_lines_after(A.log, from_a, "promotion (epoch", "granted"), 1);
    ck_assert(ha_wait_ack_after((long long)clock_unix_us(), 15) != 0);
    ha_check_ledger(&A, &gap);

    et_restart(&cluster, leader);
    ck_assert(et_wait_leader(&cluster, 20));
    from_b = ha_log_size(B.log);
    rejoin(&B, &A);
    /* One primary: B got no grant, and every epoch since is A's. */
    ck_assert_int_eq(count_lines_after(B.log, from_b, "promotion (epoch", "granted"), 0);
    r = et_epoch_record(&cluster, prefix);
    ck_assert_msg(strcmp(r.primary, "site-a") == 0, "epoch %" PRIu64 " held by %s", r.epoch,
                  r.primary);
    ck_assert(pt_sql_true(&B, "SELECT pg_is_in_recovery()"));
    ha_check_ledger(&A, &gap);
}
END_TEST

START_TEST(e_running_exposed_through_etcd)
{
    long long t0, exposed_at, gap;
    uint64_t risk1, risk2;
    struct wm_state r;
    double t1;

    /* Issue 12's a: the standby site lost, A goes on exposed, granted by etcd. */
    loss_to_commit_s = ha_lose_standby_site(&t0, &risk1, &risk2);
    exposed_at = (long long)ha_status_u64(&A, "exposed_since_unix_us");
    r = et_epoch_record(&cluster, prefix);
    ck_assert_msg(state_exposed(&r) && strcmp(r.primary, "site-a") == 0,
                  "etcd's record: epoch %" PRIu64 " held by %s, %s", r.epoch, r.primary,
                  state_exposed(&r) ? "exposed" : "not exposed");

    /* B back: A synchronous again without a command, etcd's record no longer exposed. */
    ha_restart_standby_site(&B);
    ck_assert_msg(ha_wait_status_true(&A, "exposed", false, 90), "A still exposed; see %s", A.log);
    ck_assert(pt_wait_sync(&A, 30));
    r = wait_record(r.epoch + 1, "site-a", 10);
    ck_assert_msg(!state_exposed(&r) && strcmp(r.primary, "site-a") == 0,
                  "etcd's record: epoch %" PRIu64 " held by %s, %s", r.epoch, r.primary,
                  state_exposed(&r) ? "exposed" : "not exposed");
    /* B learns the resync's epoch a moment after A (from A's next frame or the arbiter's
     * news): stale until then. */
    ck_assert_msg(ha_wait_status_true(&B, "stale", false, 10), "B still stale; see %s", B.log);
    ha_check_ledger_on_standby(&A, &B, &gap);

    /* Issue 12's c: the A-B link cut, A exposed again, then A killed: B is not promoted. */
    ha_linkem_send(&L_ab, "cut");
    ck_assert(ha_wait_status_true(&A, "exposed", true, HA_STANDBY_LOSS_TIMEOUT_S + 10));
    exposed_at = (long long)ha_status_u64(&A, "exposed_since_unix_us");
    ck_assert(ha_wait_ack_after(exposed_at + 1000000, 10) != 0); /* commits made while exposed */
    ha_kill_site(&A);
    ha_stop_ledger();
    ha_linkem_send(&L_ab, "restore");
    t1 = pt_now_s();
    while (pt_now_s() < t1 + NO_PROMOTION_S) {
        ck_assert_msg(pt_sql_true(&B, "SELECT pg_is_in_recovery()"), "a stale B was promoted");
        usleep(500000);
    }
    ck_assert(ha_status_true(&B, "stale"));
    ck_assert_msg(pt_log_contains(B.log, "site-b is stale: site-a runs exposed since", 1), "see %s",
                  B.log);
    fprintf(stderr, "exposed A killed: stale B not promoted in %d s\n", NO_PROMOTION_S);
    ha_force_failover_of_stale(&B, exposed_at);
    r = wait_record(r.epoch + 1, "site-b", 10);
    ck_assert_msg(strcmp(r.primary, "site-b") == 0, "etcd's record held by %s", r.primary);
    ha_start_ledger();
    rejoin(&A, &B);
    ha_check_ledger(&B, &gap);
}
END_TEST

START_TEST(c_quorum_lost)
{
    char buf[64];
    int before, stopped[2], n = 0, leader;
    double t0;
    long long gap;
    size_t from_a, from_b;

    ck_assert(pt_wait_sync(&B, 60));
    ck_assert(ha_wait_ack_after((long long)clock_unix_us(), 10) != 0);
    from_b = ha_log_size(B.log);
    /* Two members stopped, the leader among them. */
    leader = et_leader(&cluster);
    ck_assert_int_ge(leader, 0);
    stopped[n++] = leader;
    stopped[n++] = (leader + 1) % cluster.n;
    for (int i = 0; i < n; i++)
        et_kill(&cluster, stopped[i]);
    /* Both arbiters lose etcd; the primary keeps serving synchronously, not exposed. */
    ck_assert_msg(ha_log_has_after(B.log, from_b, "etcd down", 20), "see %s", B.log);
    before = ha_ledger_count();
    sleep(HA_STANDBY_LOSS_TIMEOUT_S + 2);
    ck_assert_msg(ha_ledger_count() > before + 20, "B acknowledged %d commits without quorum",
                  ha_ledger_count() - before);
    ck_assert(pt_wait_sync(&B, 1));
    ck_assert(!ha_status_true(&B, "exposed"));
    ck_assert_str_eq(ha_status_str(&B, "sync_state", buf, sizeof(buf)), "sync");
    ck_assert_str_eq(ha_status_str(&B, "arbiter_state", buf, sizeof(buf)), "down");
    fprintf(stderr, "quorum lost: B took %d synchronous commits in %d s\n",
            ha_ledger_count() - before, HA_STANDBY_LOSS_TIMEOUT_S + 2);

    /* B lost too: A is not promoted without etcd. */
    from_a = ha_log_size(A.log);
    ha_kill_site(&B);
    t0 = pt_now_s();
    while (pt_now_s() < t0 + NO_PROMOTION_S) {
        ck_assert_msg(pt_sql_true(&A, "SELECT pg_is_in_recovery()"), "A promoted without etcd");
        usleep(500000);
    }
    ck_assert_int_eq(count_lines_after(A.log, from_a, "promotion (epoch", "granted"), 0);
    fprintf(stderr, "quorum lost, B killed: A not promoted in %d s\n", NO_PROMOTION_S);

    /* The members back: the fail-over goes through etcd again, by itself.  The new leader
     * renews every lease for a TTL, so A's first request, made as soon as etcd answers, may be
     * refused while B's key lives: a refused automatic fail-over is asked again after another
     * failover_timeout while the link stays down. */
    for (int i = 0; i < n; i++)
        et_restart(&cluster, stopped[i]);
    ck_assert(et_wait_leader(&cluster, 20));
    ck_assert(pt_wait_true(&A, "SELECT NOT pg_is_in_recovery()", 60));
    ck_assert_msg(pt_sql_true(&A, "SELECT NOT pg_is_in_recovery()"),
                  "A was not promoted once etcd was back; see %s", A.log);
    ck_assert_int_eq(count_lines_after(A.log, from_a, "promotion (epoch", "granted"), 1);
    fprintf(stderr, "quorum back: A promoted %.1f s after the members restarted\n",
            pt_now_s() - t0 - NO_PROMOTION_S);
    ck_assert(ha_wait_ack_after((long long)clock_unix_us(), 15) != 0);
    ha_check_ledger(&A, &gap);
    rejoin(&B, &A);
}
END_TEST

START_TEST(g_isolated_primary_never_exposed)
{
    long long promoted_at = 0, gap;
    double end;
    struct wm_state r;
    size_t from;

    /* A is the primary (after c), B its standby. */
    ck_assert(pt_wait_sync(&A, 60));
    ck_assert(ha_wait_status_true(&A, "exposed", false, 60));
    ck_assert(ha_wait_ack_after((long long)clock_unix_us(), 15) != 0);
    from = ha_log_size(A.log);
    ha_linkem_send(&L_ab, "cut");
    ha_arbiter_links("cut");
    end = pt_now_s() + 40;
    while (pt_now_s() < end) {
        ck_assert_msg(!ha_status_true(&A, "exposed"), "an isolated A ran exposed");
        if (promoted_at == 0 && pt_sql_true(&B, "SELECT NOT pg_is_in_recovery()"))
            promoted_at = (long long)clock_unix_us();
        /* past standby_loss_timeout since the promotion: A had its time to try */
        if (promoted_at != 0 &&
            clock_unix_us() > (uint64_t)promoted_at + (HA_STANDBY_LOSS_TIMEOUT_S + 4) * 1000000ull)
            break;
        usleep(200000);
    }
    ck_assert_msg(promoted_at != 0, "B was not promoted; see %s", B.log);
    ck_assert_msg(ha_log_has_after(A.log, from,
                                   "the arbiter cannot be reached: not running "
                                   "exposed",
                                   0) ||
                      ha_log_has_after(A.log, from, "exposure (epoch", 0),
                  "A did not say why it did not run exposed; see %s", A.log);
    ck_assert_int_eq(count_lines_after(A.log, from, "exposure (epoch", "granted"), 0);
    r = et_epoch_record(&cluster, prefix);
    ck_assert_msg(strcmp(r.primary, "site-b") == 0, "etcd's epoch %" PRIu64 " is held by %s",
                  r.epoch, r.primary);
    /* Nothing acknowledged by A after B's promotion: every acknowledged id is on B. */
    ha_linkem_send(&L_ab, "restore");
    ha_arbiter_links("restore");
    ck_assert_msg(ha_log_has_after(A.log, from, "fenced: site-b holds epoch", 60), "see %s", A.log);
    ck_assert(pt_wait_true(&A, "SELECT pg_is_in_recovery()", 120));
    ck_assert(pt_wait_sync(&B, 90));
    fprintf(stderr, "A isolated: never exposed, B promoted, %d acknowledged ids all on B\n",
            ha_check_ledger(&B, &gap));
    /* A, rewound, holds what B acknowledged too. */
    ha_check_ledger_on_standby(&B, &A, &gap);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("ha_etcd");
    TCase *tc = tcase_create("ha_etcd");
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    at_init();
    et_start(&cluster, 3, true);
    ha_etcd.members = cluster.n;
    for (int i = 0; i < cluster.n; i++)
        ha_etcd.client_port[i] = cluster.m[i].client_port;
    ha_etcd.tls = true;
    ha_etcd.lease_ttl_s = LEASE_TTL_S;
    ha_availability_mode = "maximum_availability";
    etcdrec_default_prefix(prefix, sizeof(prefix), "site-a", "site-b");
    if (ha_stand_up() != 0) {
        et_keep_logs(&cluster);
        return 1;
    }
    tcase_add_checked_fixture(tc, links_whole, NULL);
    tcase_add_test(tc, f_switchover_advances_the_epoch);
    tcase_add_test(tc, a_failover_through_etcd);
    tcase_add_test(tc, d_failover_in_the_other_pair);
    tcase_add_test(tc, b_leader_killed_mid_failover);
    tcase_add_test(tc, e_running_exposed_through_etcd);
    tcase_add_test(tc, c_quorum_lost);
    tcase_add_test(tc, g_isolated_primary_never_exposed);
    suite_add_tcase(s, tc);
    failed = pt_run_in_order(s);
    fprintf(stderr,
            "measured: fail-over through etcd %.2f s (failover_timeout %d s, "
            "etcd_lease_ttl %d s); B's loss to A's first commit %.2f s\n",
            failover_s, HA_FAILOVER_TIMEOUT_S, LEASE_TTL_S, loss_to_commit_s);
    ha_tear_down();
    at_close((struct at_site *const[]){&P2A, &P2B}, 2);
    if (failed != 0)
        et_keep_logs(&cluster);
    et_stop(&cluster);
    return failed == 0 ? 0 : 1;
}
