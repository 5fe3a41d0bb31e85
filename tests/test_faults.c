/*
 * test_faults.c - fault injection with a commit ledger: a real pair, a witness and link
 * emulators (hatest.h), and N cycles of one random fault each.
 *
 * The ledger client commits ids at synchronous_commit = on all along, following the writable
 * primary.  Each cycle applies one fault, does what recovery it calls for (restarting what it
 * killed; fail-over and rejoin happen by themselves: auto_rejoin is on), and then checks:
 *   - exactly one site is the primary and the other its standby, and the pair is synchronous
 *     again (the primary lists walmirror as its sync standby);
 *   - every id the ledger saw acknowledged is on the current primary - so no acknowledged
 *     commit was lost, and no stale primary got a commit acknowledged (such a commit would be
 *     missing from the primary that won);
 *   - the ledger makes progress again.
 * Faults (the table fault_kinds[]: a name and a function each; adding a kind is one function
 * and one line there): kill -9 of the source's agent, of the sink's agent, of the primary
 * PostgreSQL (a fail-over follows, and the old primary rejoins by itself), of the standby
 * PostgreSQL; a cut of site A's link to B shorter than the fail-over timeout; a slow link
 * (30 ms each way) for a few seconds; corrupted bytes on the A-B link under pgbench load (one
 * flipped bit in a few chunks each way: TLS must refuse each record - bad record MAC - and the
 * link reconnects; nothing corrupt reaches the spool, which the standby proves by replaying
 * everything the primary wrote, every record's CRC checked); a full spool disk at the sink
 * (each site's spool is a 256 MB tmpfs of its own; filled, commits stand still until the
 * space returns); the standby site lost (its agent and PostgreSQL killed) for longer than
 * standby_loss_timeout, then restarted.
 * The first cycles apply each kind of fault once, in a random order; then at random.
 *   WALMIRROR_FAULT_CYCLES=N   cycles (default 10; the long run in docs uses 50)
 *   WALMIRROR_FAULT_SEED=S     replay a run: the seed is printed at the start and the end
 *   WALMIRROR_AVAILABILITY_MODE=M  both sites' availability_mode (default maximum_protection)
 *   WALMIRROR_FAULT_KIND=NAME  every cycle applies that kind
 * The summary names the cycles, the faults by kind, the commits acknowledged and lost (0).
 */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "hatest.h"
#include "pairtest.h"
#include "pgtest.h"
#include "testutil.h"

static unsigned seed, first_seed;
static int cycles = 10;
static const char *only_kind; /* WALMIRROR_FAULT_KIND: every cycle this kind */

/* The site whose PostgreSQL takes writes now, or NULL. */
static struct pt_site *
primary_now(void)
{
    if (pt_sql_true(&A, "SELECT NOT pg_is_in_recovery()"))
        return &A;
    if (pt_sql_true(&B, "SELECT NOT pg_is_in_recovery()"))
        return &B;
    return NULL;
}

static void
kill_postmaster(struct pt_site *s)
{
    pid_t pid = ha_postmaster_pid(s);

    if (pid > 0)
        kill(pid, SIGKILL);
    for (int i = 0; i < 100 && pid > 0 && kill(pid, 0) == 0; i++)
        usleep(50000);
}

/* Starts a site's PostgreSQL as it is (a stale primary stays one: its agent fences it). */
static void
restart_postmaster(struct pt_site *s)
{
    /* The children of a killed postmaster may linger a moment. */
    for (int i = 0; i < 50; i++) {
        if (tu_run("pgrep -u postgres -f -- '-D %s' >/dev/null", s->pg.pgdata) != 0)
            break;
        usleep(100000);
    }
    tu_run("rm -f '%s/postmaster.pid'", s->pg.pgdata);
    if (pgt_start(&s->pg) != 0)
        fprintf(stderr,
                "faults: %s's PostgreSQL did not start (its agent may be rewinding "
                "it)\n",
                s->name);
}

/* Waits until one primary and one standby, synchronous; returns the primary. */
static struct pt_site *
settle(double seconds)
{
    double end = pt_now_s() + seconds;

    while (pt_now_s() < end) {
        struct pt_site *p = primary_now();
        struct pt_site *other = p == &A ? &B : &A;

        if (p != NULL && pt_sql_true(other, "SELECT pg_is_in_recovery()") && pt_wait_sync(p, 1))
            return p;
        usleep(200000);
    }
    return NULL;
}

/*
 * The kinds of fault.  Each applies its fault to the pair whose primary is p and standby s
 * (settled, synchronous), in cycle c, and does what recovery it calls for; the cycle then
 * waits for the pair to be synchronous again and checks the ledger.
 */

static void
fault_kill_source_agent(int c, struct pt_site *p, struct pt_site *s)
{
    (void)c, (void)s;
    pt_stop_agent(p, SIGKILL);
    usleep(500000);
    pt_start_agent(p);
}

static void
fault_kill_sink_agent(int c, struct pt_site *p, struct pt_site *s)
{
    (void)c, (void)p;
    pt_stop_agent(s, SIGKILL);
    usleep(500000);
    pt_start_agent(s);
}

static void
fault_kill_primary_pg(int c, struct pt_site *p, struct pt_site *s)
{
    kill_postmaster(p);
    /* The standby site takes over (failover_timeout, then the witness's vote). */
    ck_assert_msg(pt_wait_true(s, "SELECT NOT pg_is_in_recovery()", 60),
                  "cycle %d: %s was not promoted", c, s->name);
    /* p's agent learns the new epoch from the witness and, its PostgreSQL being down, rewinds
     * it (pg_rewind recovers the crashed server first) and rejoins. */
}

static void
fault_kill_standby_pg(int c, struct pt_site *p, struct pt_site *s)
{
    (void)c, (void)p;
    kill_postmaster(s);
    usleep(500000);
    restart_postmaster(s);
}

static void
fault_cut_link(int c, struct pt_site *p, struct pt_site *s)
{
    (void)c, (void)p, (void)s;
    ha_linkem_send(&L_ab, "cut");
    sleep(2);
    ha_linkem_send(&L_ab, "restore");
}

/* Site B (the standby's) lost for longer than standby_loss_timeout: its agent and PostgreSQL
 * killed, restarted later.  In maximum_availability the primary runs exposed meanwhile and is
 * synchronous again by itself; in maximum_protection its commits wait. */
static void
fault_lose_standby_site(int c, struct pt_site *p, struct pt_site *s)
{
    (void)c, (void)p;
    pt_stop_agent(s, SIGKILL);
    kill_postmaster(s);
    sleep((unsigned)ha_standby_loss_timeout_s + 4);
    restart_postmaster(s);
    pt_start_agent(s);
}

static void
fault_slow_link(int c, struct pt_site *p, struct pt_site *s)
{
    (void)c, (void)p, (void)s;
    ha_linkem_send(&L_ab, "set delay=30ms");
    sleep(5);
    ha_linkem_send(&L_ab, "set delay=0");
}

/* The value of key=NUMBER in L_ab's stats, or -1. */
static long long
linkem_stat(const char *key)
{
    char path[4200], pat[64];
    const char *at;
    long long v = -1;
    size_t len;
    char *text;

    snprintf(path, sizeof(path), "%s/linkem-stats.out", A.pg.dir);
    if (tu_run("'%s' --control '%s' --send stats > '%s'", LINKEM, L_ab.control, path) != 0)
        return -1;
    text = tu_read_file(path, &len);
    snprintf(pat, sizeof(pat), " %s=", key);
    if (text != NULL && (at = strstr(text, pat)) != NULL)
        v = strtoll(at + strlen(pat), NULL, 10);
    free(text);
    return v;
}

/* Lines of the log at path, after byte from, that contain needle. */
static int
log_count_after(const char *path, size_t from, const char *needle)
{
    size_t len;
    char *text = tu_read_file(path, &len);
    int n = 0;

    for (const char *at = text != NULL && from < len ? text + from : NULL;
         at != NULL && (at = strstr(at, needle)) != NULL; at += strlen(needle))
        n++;
    free(text);
    return n;
}

static size_t
log_size(const char *path)
{
    size_t len = 0;
    char *text = tu_read_file(path, &len);

    free(text);
    return text != NULL ? len : 0;
}

/*
 * Corrupted bytes in transit: one flipped bit in each of a few chunks each way on the A-B
 * link, under pgbench load.  The agents' link crosses L_ab only when A's agent dials B, that is
 * when A is the primary (a source dials its sink), so a switchover makes A the primary first.
 * TLS must refuse each corrupted record, the link reconnects, and nothing corrupt reaches the
 * spool: the standby, whose PostgreSQL checks every record's CRC, replays all the primary
 * wrote.
 */
static void
fault_corrupt(int c, struct pt_site *p, struct pt_site *s)
{
    size_t from_a, from_b;
    int tls_a, tls_b, mac;
    char out[4096];
    pid_t bench;
    int status;

    if (p != &A) {
        /* Right after a fault the agents may not yet know that the standby replays (the
         * switchover refuses a standby "not replaying"): retry for a while. */
        bool switched = false;

        pt_wait_replayed(p, s, 60);
        for (int i = 0; i < 20 && !switched; i++) {
            switched = ha_ctl(out, sizeof(out), "switchover") == 0;
            if (!switched)
                sleep(3);
        }
        ck_assert_msg(switched, "cycle %d: switchover to A failed", c + 1);
        ck_assert_msg(pt_wait_true(&A, "SELECT NOT pg_is_in_recovery()", 60),
                      "cycle %d: A is not the primary after the switchover", c + 1);
        ck_assert_msg(settle(120) == &A, "cycle %d: no synchronous pair after the switchover",
                      c + 1);
        p = &A;
        s = &B;
    }
    from_a = log_size(A.log);
    from_b = log_size(B.log);
    bench = ha_pgbench_in_background(p, 8);
    sleep(1);
    ha_linkem_send(&L_ab, "corrupt a2b 3");
    ha_linkem_send(&L_ab, "corrupt b2a 2");
    /* Traffic (WAL, ACKs, heartbeats) takes every pending corruption within seconds. */
    for (int i = 0; i < 300 && (linkem_stat("a2b_corrupt_pending") != 0 ||
                                linkem_stat("b2a_corrupt_pending") != 0);
         i++)
        usleep(100000);
    ck_assert_msg(linkem_stat("a2b_corrupt_pending") == 0 &&
                      linkem_stat("b2a_corrupt_pending") == 0,
                  "cycle %d: the corruption was not applied (no traffic on the A-B link?)", c + 1);
    ck_assert_int_eq(waitpid(bench, &status, 0), bench);
    /* TLS caught it: the receiving agents dropped the link on a TLS failure. */
    tls_a = log_count_after(A.log, from_a, "TLS failure");
    tls_b = log_count_after(B.log, from_b, "TLS failure");
    mac = log_count_after(A.log, from_a, "bad record mac") +
          log_count_after(B.log, from_b, "bad record mac");
    fprintf(stderr,
            "faults: cycle %d: chunks corrupted (all cycles) a2b %lld, b2a %lld; TLS failures "
            "logged now by A %d, B %d (\"bad record mac\" %d times)\n",
            c + 1, linkem_stat("a2b_corrupted"), linkem_stat("b2a_corrupted"), tls_a, tls_b, mac);
    /* A corrupted handshake record is logged as the handshake's failure, with the reason. */
    ck_assert_msg(tls_a + tls_b + mac >= 1, "cycle %d: no TLS failure logged after corruption",
                  c + 1);
    /* Nothing corrupt in the spool: the standby replays everything from it. */
    ck_assert_msg(settle(180) == &A, "cycle %d: not synchronous again after corruption", c + 1);
    ck_assert_msg(pt_wait_replayed(&A, s, 120),
                  "cycle %d: the standby does not replay all the primary wrote", c + 1);
}

/* Since when (Unix microseconds) s's agent says its primary runs exposed; 0: it does not. */
static long long
exposed_since_us(const struct pt_site *s)
{
    json_t *o = ha_status_of(s);
    long long since = 0;

    if (o != NULL && json_is_true(json_object_get(o, "exposed")))
        since = (long long)json_integer_value(json_object_get(o, "exposed_since_unix_us"));
    json_decref(o);
    return since;
}

/* Since when (Unix microseconds) s's spool has been stalled for want of space; 0: it is not. */
static long long
stalled_since_us(const struct pt_site *s)
{
    return (long long)ha_status_u64(s, "spool_stalled_since_unix_us");
}

/*
 * A full spool disk at the sink: its spool's file system (a tmpfs of its own) is filled until
 * less than half a segment is free, and the primary's WAL moved on (pg_switch_wal) until a
 * segment cannot be prepared.  The sink must say so (walmirror_spool_stalled) and acknowledge
 * nothing more - the ledger stands still - until the space returns; the cycle then checks, as
 * after every fault, that mirroring is synchronous again and no acknowledged id is missing.
 *
 * The stall can end by itself: retention removes the oldest segment as the one before the
 * stall completes, and the spool, which looks for space every second, takes it.  So the filler
 * is topped up once the stall is seen, and only a window in which one stall held from start
 * to end (the same spool_stalled_since_unix_us at both) is judged.
 */
static void
fault_spool_full(int c, struct pt_site *p, struct pt_site *s)
{
    char filler[4200];
    bool judged = false;
    int before = 0, after = 0;
    long long t_before = 0, exposed_since = 0, stall_start, stall_end = 0;

    for (int round = 0; round < 4 && !judged; round++) {
        bool stalled = false;

        for (int i = 0; i < 6 && !stalled; i++) {
            pt_fill_spool_fs(s, filler, sizeof(filler));
            free(pt_sql1(p, "SELECT pg_switch_wal()"));
            for (int k = 0; k < 30 && !stalled; k++) {
                stalled = pt_metric(s, "walmirror_spool_stalled") == 1;
                if (!stalled)
                    usleep(100000);
            }
        }
        if (!stalled)
            unlink(filler);
        ck_assert_msg(stalled, "cycle %d: %s's spool did not stall on a full disk", c + 1,
                      s->name);
        /* Take what retention freed as the stall began; what was written before the stall
         * may still be acknowledged meanwhile. */
        pt_fill_spool_fs(s, filler, sizeof(filler));
        sleep(1);
        stall_start = stalled_since_us(s);
        before = ha_ledger_count();
        t_before = (long long)clock_unix_us();
        sleep(3);
        after = ha_ledger_count();
        stall_end = stalled_since_us(s);
        /* An exposure granted in the window's last moments may not be in the primary's
         * /status yet (its snapshot is refreshed periodically); it lasts until the standby is
         * synchronous again, so it is still there a moment later. */
        exposed_since = exposed_since_us(p);
        for (int i = 0; i < 30 && after != before && exposed_since == 0; i++) {
            usleep(100000);
            exposed_since = exposed_since_us(p);
        }
        judged = stall_start != 0 && stall_start == stall_end;
        if (!judged)
            fprintf(stderr, "faults: cycle %d: %s's stall did not hold through the window "
                            "(since %lld, then %lld): again\n",
                    c + 1, s->name, stall_start, stall_end);
    }
    fprintf(stderr, "faults: cycle %d: %s's spool full since %lld: ledger at %d, %d after 3 s%s\n",
            c + 1, s->name, stall_end, before, after,
            exposed_since != 0 ? " (the primary runs exposed)" : "");
    ck_assert_int_eq(unlink(filler), 0);
    ck_assert_msg(judged, "cycle %d: %s's spool never stayed stalled for 4 s", c + 1, s->name);
    /* With the space back, the spool writes what waited: the stall ends by itself (the
     * pair's settling cannot tell, since an exposed primary commits without the sink). */
    for (int i = 0; i < 300 && stalled_since_us(s) != 0; i++)
        usleep(100000);
    ck_assert_msg(stalled_since_us(s) == 0, "cycle %d: %s's spool still stalled 30 s after its "
                  "space returned", c + 1, s->name);
    if (after != before) {
        long long first = ha_first_ack_after(t_before);

        ck_assert_msg(exposed_since != 0 && first >= exposed_since,
                      "cycle %d: %d commits acknowledged while %s's spool had no space, the "
                      "first at %lld, and %s not exposed before it (since %lld)",
                      c + 1, after - before, s->name, first, p->name, exposed_since);
    }
}

struct fault_kind {
    const char *name;
    void (*apply)(int c, struct pt_site *p, struct pt_site *s);
};

static const struct fault_kind fault_kinds[] = {
    {"kill -9 source agent", fault_kill_source_agent},
    {"kill -9 sink agent", fault_kill_sink_agent},
    {"kill -9 primary PostgreSQL", fault_kill_primary_pg},
    {"kill -9 standby PostgreSQL", fault_kill_standby_pg},
    {"cut A-B link 2 s", fault_cut_link},
    {"slow A-B link (30 ms) 5 s", fault_slow_link},
    {"corrupt A-B link (5 chunks)", fault_corrupt},
    {"full spool disk at the sink", fault_spool_full},
    {"lose the standby site", fault_lose_standby_site},
};

#define F_N ((int)(sizeof(fault_kinds) / sizeof(fault_kinds[0])))

static int done_by_kind[F_N];

START_TEST(fault_cycles)
{
    long long gap;
    int acked = 0;

    int order[F_N];

    /* Every kind once, in a random order, then at random. */
    for (int k = 0; k < F_N; k++)
        order[k] = k;
    for (int k = F_N - 1; k > 0; k--) {
        int j = (int)(rand_r(&seed) % (unsigned)(k + 1));
        int t = order[k];
        order[k] = order[j];
        order[j] = t;
    }
    ck_assert_msg(settle(60) != NULL, "the pair is not synchronous at the start");
    for (int c = 0; c < cycles; c++) {
        int f = c < F_N ? order[c] : (int)(rand_r(&seed) % (unsigned)F_N);
        struct pt_site *p = settle(120), *s;
        int before;

        if (only_kind != NULL) {
            for (f = 0; f < F_N && strcmp(fault_kinds[f].name, only_kind) != 0; f++)
                ;
            ck_assert_msg(f < F_N, "WALMIRROR_FAULT_KIND: no fault kind \"%s\"", only_kind);
        }
        ck_assert_msg(p != NULL, "cycle %d: no synchronous pair before the fault", c);
        s = p == &A ? &B : &A;
        before = ha_ledger_count();
        fprintf(stderr, "faults: cycle %d: %s (primary %s)\n", c + 1, fault_kinds[f].name, p->name);
        fault_kinds[f].apply(c, p, s);
        done_by_kind[f]++;
        p = settle(180);
        ck_assert_msg(p != NULL, "cycle %d (%s): the pair did not become synchronous again", c,
                      fault_kinds[f].name);
        acked = ha_check_ledger(p, &gap);
        for (int i = 0; i < 300 && ha_ledger_count() < before + 20; i++)
            usleep(100000);
        ck_assert_msg(ha_ledger_count() >= before + 20,
                      "cycle %d (%s): the ledger makes no progress", c, fault_kinds[f].name);
        fprintf(stderr, "faults: cycle %d done: primary %s, %d ids acknowledged, all there\n",
                c + 1, p->name, acked);
    }
    fprintf(stderr, "faults: summary: seed %u, %d cycles:", first_seed, cycles);
    for (int k = 0; k < F_N; k++)
        fprintf(stderr, " %s x%d;", fault_kinds[k].name, done_by_kind[k]);
    fprintf(stderr, " commits acknowledged %d, commits lost 0\n", ha_ledger_count());
}
END_TEST

int
main(void)
{
    Suite *su = suite_create("faults");
    TCase *tc = tcase_create("faults");
    const char *v;
    int failed;

    if (!pgt_available()) {
        fprintf(stderr, "PostgreSQL 15 not available: skipping\n");
        return 77;
    }
    v = getenv("WALMIRROR_FAULT_CYCLES");
    if (v != NULL && atoi(v) > 0)
        cycles = atoi(v);
    only_kind = getenv("WALMIRROR_FAULT_KIND");
    v = getenv("WALMIRROR_AVAILABILITY_MODE");
    if (v != NULL && v[0] != '\0')
        ha_availability_mode = v;
    v = getenv("WALMIRROR_FAULT_SEED");
    seed = first_seed = v != NULL ? (unsigned)strtoul(v, NULL, 10) : (unsigned)time(NULL);
    fprintf(stderr, "faults: seed %u (WALMIRROR_FAULT_SEED=%u replays it), %d cycles, %s%s%s\n",
            seed, seed, cycles, ha_availability_mode, only_kind != NULL ? ", only " : "",
            only_kind != NULL ? only_kind : "");
    if (geteuid() != 0) {
        fprintf(stderr, "not root (each spool is a tmpfs mounted here): skipping\n");
        return 77;
    }
    pt_spool_fs_size = "256m";
    if (ha_stand_up() != 0)
        return 1;
    tcase_add_test(tc, fault_cycles);
    tcase_set_timeout(tc, 0);
    suite_add_tcase(su, tc);
    failed = pt_run_in_order(su);
    ha_tear_down();
    if (failed != 0)
        fprintf(stderr, "faults: FAILED with seed %u\n", first_seed);
    return failed == 0 ? 0 : 1;
}
