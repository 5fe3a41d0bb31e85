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
 * Faults: kill -9 of the source's agent, of the sink's agent, of the primary PostgreSQL (a
 * fail-over follows, and the old primary rejoins by itself), of the standby PostgreSQL; a cut of site A's link to B shorter than the
 * fail-over timeout; a slow link (30 ms each way) for a few seconds.
 * The first six cycles apply each kind of fault once, in a random order; then at random.
 *   WALMIRROR_FAULT_CYCLES=N   cycles (default 10; the long run in docs uses 50)
 *   WALMIRROR_FAULT_SEED=S     replay a run: the seed is printed at the start and the end
 * The summary names the cycles, the faults by kind, the commits acknowledged and lost (0).
 */
#include <check.h>
#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hatest.h"
#include "pairtest.h"
#include "pgtest.h"
#include "testutil.h"

enum fault {
    F_KILL_SOURCE_AGENT,
    F_KILL_SINK_AGENT,
    F_KILL_PRIMARY_PG,
    F_KILL_STANDBY_PG,
    F_CUT_LINK,
    F_SLOW_LINK,
    F_N,
};

static const char *const fault_names[F_N] = {
    "kill -9 source agent", "kill -9 sink agent", "kill -9 primary PostgreSQL",
    "kill -9 standby PostgreSQL", "cut A-B link 2 s", "slow A-B link (30 ms) 5 s",
};

static unsigned seed, first_seed;
static int cycles = 10;
static int done_by_kind[F_N];

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
        fprintf(stderr, "faults: %s's PostgreSQL did not start (its agent may be rewinding "
                        "it)\n", s->name);
}

/* Waits until one primary and one standby, synchronous; returns the primary. */
static struct pt_site *
settle(double seconds)
{
    double end = pt_now_s() + seconds;

    while (pt_now_s() < end) {
        struct pt_site *p = primary_now();
        struct pt_site *other = p == &A ? &B : &A;

        if (p != NULL && pt_sql_true(other, "SELECT pg_is_in_recovery()") &&
            pt_wait_sync(p, 1))
            return p;
        usleep(200000);
    }
    return NULL;
}

START_TEST(fault_cycles)
{
    long long gap;
    int acked = 0;

    enum fault order[F_N];

    /* Every kind once, in a random order, then at random. */
    for (int k = 0; k < F_N; k++)
        order[k] = (enum fault)k;
    for (int k = F_N - 1; k > 0; k--) {
        int j = (int)(rand_r(&seed) % (unsigned)(k + 1));
        enum fault t = order[k];
        order[k] = order[j];
        order[j] = t;
    }
    ck_assert_msg(settle(60) != NULL, "the pair is not synchronous at the start");
    for (int c = 0; c < cycles; c++) {
        enum fault f = c < F_N ? order[c] : (enum fault)(rand_r(&seed) % F_N);
        struct pt_site *p = settle(120), *s;
        int before;

        ck_assert_msg(p != NULL, "cycle %d: no synchronous pair before the fault", c);
        s = p == &A ? &B : &A;
        before = ha_ledger_count();
        fprintf(stderr, "faults: cycle %d: %s (primary %s)\n", c + 1, fault_names[f], p->name);
        switch (f) {
        case F_KILL_SOURCE_AGENT:
            pt_stop_agent(p, SIGKILL);
            usleep(500000);
            pt_start_agent(p);
            break;
        case F_KILL_SINK_AGENT:
            pt_stop_agent(s, SIGKILL);
            usleep(500000);
            pt_start_agent(s);
            break;
        case F_KILL_PRIMARY_PG:
            kill_postmaster(p);
            /* The standby site takes over (failover_timeout, then the witness's vote). */
            ck_assert_msg(pt_wait_true(s, "SELECT NOT pg_is_in_recovery()", 60),
                          "cycle %d: %s was not promoted", c, s->name);
            /* p's agent learns the new epoch from the witness and, its PostgreSQL being
             * down, rewinds it (pg_rewind recovers the crashed server first) and rejoins. */
            break;
        case F_KILL_STANDBY_PG:
            kill_postmaster(s);
            usleep(500000);
            restart_postmaster(s);
            break;
        case F_CUT_LINK:
            ha_linkem_send(&L_ab, "cut");
            sleep(2);
            ha_linkem_send(&L_ab, "restore");
            break;
        case F_SLOW_LINK:
            ha_linkem_send(&L_ab, "set delay=30ms");
            sleep(5);
            ha_linkem_send(&L_ab, "set delay=0");
            break;
        default:
            break;
        }
        done_by_kind[f]++;
        p = settle(180);
        ck_assert_msg(p != NULL, "cycle %d (%s): the pair did not become synchronous again",
                      c, fault_names[f]);
        acked = ha_check_ledger(p, &gap);
        for (int i = 0; i < 300 && ha_ledger_count() < before + 20; i++)
            usleep(100000);
        ck_assert_msg(ha_ledger_count() >= before + 20,
                      "cycle %d (%s): the ledger makes no progress", c, fault_names[f]);
        fprintf(stderr, "faults: cycle %d done: primary %s, %d ids acknowledged, all there\n",
                c + 1, p->name, acked);
    }
    fprintf(stderr, "faults: summary: seed %u, %d cycles:", first_seed, cycles);
    for (int k = 0; k < F_N; k++)
        fprintf(stderr, " %s x%d;", fault_names[k], done_by_kind[k]);
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
    v = getenv("WALMIRROR_FAULT_SEED");
    seed = first_seed = v != NULL ? (unsigned)strtoul(v, NULL, 10) : (unsigned)time(NULL);
    fprintf(stderr, "faults: seed %u (WALMIRROR_FAULT_SEED=%u replays it), %d cycles\n", seed,
            seed, cycles);
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
