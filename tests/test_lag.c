/*
 * test_lag.c - Check suite for agent/lag.c: the lag per confirmation stage, and above all how
 * long unconfirmed WAL has waited, which the source's availability decisions read (a standby
 * counts as lost, or caught up, on it).  Times are given, not read from a clock.
 */
#include <check.h>
#include <stdlib.h>

#include "lag.h"

#define MS 1000ULL /* microseconds */

static struct lag_tracker t;

static void
setup(void)
{
    lag_reset(&t);
}

START_TEST(fresh_tracker_knows_nothing)
{
    for (int i = 0; i < LAG_STAGES; i++) {
        ck_assert(lag_now(&t, i, 5 * MS) == -1);
        ck_assert_uint_eq(lag_waiting_us(&t, i, 5 * MS), 0);
    }
}
END_TEST

START_TEST(confirmation_measures_lag)
{
    lag_sent(&t, 100, 10 * MS);
    lag_sent(&t, 200, 20 * MS);
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_FLUSH, 50 * MS), 40 * MS);
    /* 150 confirms only the first sample: the second still waits, since 20 ms. */
    ck_assert_uint_eq(lag_confirmed(&t, LAG_FLUSH, 150, 30 * MS), 1);
    ck_assert(lag_now(&t, LAG_FLUSH, 30 * MS) == 0.020);
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_FLUSH, 50 * MS), 30 * MS);
    ck_assert_uint_eq(lag_confirmed(&t, LAG_FLUSH, 200, 60 * MS), 1);
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_FLUSH, 70 * MS), 0);
    ck_assert(lag_now(&t, LAG_FLUSH, 70 * MS) == 0.040);
    /* The other stages were not confirmed: they still wait on the first sample. */
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_APPLY, 70 * MS), 60 * MS);
    ck_assert_uint_eq(lag_confirmed(&t, LAG_FLUSH, 200, 80 * MS), 0);
}
END_TEST

/* A stalled stage shows a growing lag, not its last good value. */
START_TEST(stalled_stage_grows)
{
    lag_sent(&t, 100, 0);
    lag_confirmed(&t, LAG_FLUSH, 100, 1 * MS);
    lag_sent(&t, 200, 10 * MS);
    ck_assert(lag_now(&t, LAG_FLUSH, 5010 * MS) == 5.0);
}
END_TEST

/* WAL sent within the millisecond of a sample that a stage has already confirmed is not
 * confirmed with it: the stage waits on it (the exposure once took a standby that had gone
 * silent for one still confirming). */
START_TEST(confirmed_sample_not_extended)
{
    lag_sent(&t, 100, 1000);
    lag_confirmed(&t, LAG_WRITE, 100, 1200);
    lag_confirmed(&t, LAG_FLUSH, 100, 1300);
    lag_sent(&t, 300, 1500); /* the same millisecond as the sample at 1000 */
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_FLUSH, 4001500), 4000 * MS);
    ck_assert_uint_eq(lag_confirmed(&t, LAG_FLUSH, 300, 4001500), 1);
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_FLUSH, 4001600), 0);
}
END_TEST

/* Unconfirmed, a sample in the same millisecond takes more WAL. */
START_TEST(same_millisecond_extends)
{
    lag_sent(&t, 100, 1000);
    lag_sent(&t, 300, 1500);
    ck_assert_uint_eq(lag_confirmed(&t, LAG_FLUSH, 100, 2000), 0); /* 300 is the sample's end */
    ck_assert_uint_eq(lag_confirmed(&t, LAG_FLUSH, 300, 2000), 1);
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_FLUSH, 3000), 0);
}
END_TEST

/* A full ring of unconfirmed samples keeps its oldest: a standby stalled for seconds while
 * WAL keeps flowing shows seconds of waiting, not the span of the ring. */
START_TEST(full_ring_keeps_oldest)
{
    uint64_t now = 0;

    for (int i = 1; i <= 10 * LAG_SAMPLES; i++) {
        now = (uint64_t)i * 2 * MS;
        lag_sent(&t, (uint64_t)i * 100, now);
    }
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_FLUSH, now), now - 2 * MS);
    /* Confirming everything ends the wait; the lag is the oldest remaining sample's age. */
    ck_assert_uint_gt(lag_confirmed(&t, LAG_FLUSH, 10 * LAG_SAMPLES * 100, now), 0);
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_FLUSH, now + MS), 0);
}
END_TEST

/* Bounded: with the newest sample confirmed by a stage and the ring full, the new sample is
 * refused rather than the oldest dropped. */
START_TEST(bounded_refuses_when_full)
{
    for (int i = 1; i <= LAG_SAMPLES; i++)
        ck_assert(lag_sent_bounded(&t, (uint64_t)i * 100, (uint64_t)i * 2 * MS));
    lag_confirmed(&t, LAG_WRITE, LAG_SAMPLES * 100, 600 * MS);
    ck_assert(!lag_sent_bounded(&t, LAG_SAMPLES * 100 + 100, 601 * MS));
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_FLUSH, 1000 * MS), 998 * MS);
    /* Unbounded, the oldest goes: flush then waits on the second sample. */
    lag_sent(&t, LAG_SAMPLES * 100 + 100, 602 * MS);
    ck_assert_uint_eq(lag_waiting_us(&t, LAG_FLUSH, 1000 * MS), 996 * MS);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("lag");
    TCase *tc = tcase_create("core");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, fresh_tracker_knows_nothing);
    tcase_add_test(tc, confirmation_measures_lag);
    tcase_add_test(tc, stalled_stage_grows);
    tcase_add_test(tc, confirmed_sample_not_extended);
    tcase_add_test(tc, same_millisecond_extends);
    tcase_add_test(tc, full_ring_keeps_oldest);
    tcase_add_test(tc, bounded_refuses_when_full);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
