/*
 * test_lzctl.c - the fast/HC compression controller's decisions, on made-up times and queue
 * depths: HC only once the send queue has stayed deep, back to fast when it stays shallow,
 * back to fast at once (and held there) when HC keeps the encoder busy without filling the
 * queue, and the hysteresis between the thresholds.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include "lz.h"
#include "lzctl.h"

#define MS 1000u
#define MIB (1024u * 1024u)

static struct lzctl_params params;

static struct lzctl *
make(uint64_t now)
{
    struct lzctl *c;

    lzctl_defaults(&params);
    ck_assert_int_eq(lzctl_new(&c, &params, now), 0);
    return c;
}

/*
 * Frames every step_us from *now for dur_us, each with the queue at backlog and each taking
 * busy_us to encode; returns the level of the last one.
 */
static int
frames(struct lzctl *c, uint64_t *now, uint64_t dur_us, uint64_t step_us, size_t backlog,
       uint64_t busy_us)
{
    uint64_t end = *now + dur_us;
    int level = -1;

    while (*now < end) {
        level = lzctl_level(c, *now, backlog);
        *now += busy_us;
        lzctl_busy(c, *now, busy_us);
        *now += step_us - busy_us;
    }
    return level;
}

START_TEST(test_defaults)
{
    struct lzctl *c = make(5);

    ck_assert_uint_eq(params.high, MIB);
    ck_assert_uint_eq(params.low, 64 * 1024);
    ck_assert_int_eq(params.hc_level, LZCTL_HC_LEVEL);
    ck_assert_int_ge(params.hc_level, LZ_LEVEL_HC_MIN);
    ck_assert_int_eq(lzctl_mode(c), LZCTL_FAST);
    ck_assert_int_eq(lzctl_why(c), LZCTL_WHY_START);
    ck_assert_str_eq(lzctl_mode_name(lzctl_mode(c)), "fast");
    lzctl_free(c);

    params.low = 2 * MIB;
    ck_assert_int_eq(lzctl_new(&c, &params, 0), -EINVAL);
    lzctl_defaults(&params);
    params.hc_level = 0;
    ck_assert_int_eq(lzctl_new(&c, &params, 0), -EINVAL);
}
END_TEST

START_TEST(test_deep_queue_turns_hc_after_rise_time)
{
    uint64_t now = 1000 * MS;
    struct lzctl *c = make(now);

    /* An empty queue, however long: fast. */
    ck_assert_int_eq(frames(c, &now, 3000 * MS, 10 * MS, 0, 100), LZ_LEVEL_FAST);
    /* Deep, but not yet for the rise time. */
    ck_assert_int_eq(frames(c, &now, params.rise_us - 20 * MS, 10 * MS, 4 * MIB, 100),
                     LZ_LEVEL_FAST);
    /* One frame in the middle band ends the run: the rise time starts again. */
    ck_assert_int_eq(lzctl_level(c, now, params.low + 1), LZ_LEVEL_FAST);
    now += 10 * MS;
    ck_assert_int_eq(frames(c, &now, params.rise_us - 20 * MS, 10 * MS, 4 * MIB, 100),
                     LZ_LEVEL_FAST);
    ck_assert_int_eq(lzctl_switches(c), 0);
    /* Deep for the whole rise time: HC, at the configured level. */
    ck_assert_int_eq(frames(c, &now, 40 * MS, 10 * MS, 4 * MIB, 100), params.hc_level);
    ck_assert_int_eq(lzctl_mode(c), LZCTL_HC);
    ck_assert_int_eq(lzctl_why(c), LZCTL_WHY_LINK_BOUND);
    ck_assert_str_eq(lzctl_why_name(lzctl_why(c)), "link-bound");
    ck_assert_int_eq(lzctl_switches(c), 1);
    lzctl_free(c);
}
END_TEST

START_TEST(test_hysteresis_between_thresholds)
{
    uint64_t now = 0;
    struct lzctl *c = make(now);
    size_t mid = (params.low + params.high) / 2;

    ck_assert_int_eq(frames(c, &now, 300 * MS, 10 * MS, 2 * MIB, 100), params.hc_level);
    /* A queue between the thresholds keeps HC, however long, with an idle encoder... */
    ck_assert_int_eq(frames(c, &now, 5000 * MS, 10 * MS, mid, 100), params.hc_level);
    /* ...and a busy one: the queue is not empty, HC still keeps up with the link. */
    ck_assert_int_eq(frames(c, &now, 5000 * MS, 10 * MS, mid, 9 * MS), params.hc_level);
    /* The same band keeps fast once fast. */
    ck_assert_int_eq(frames(c, &now, 1000 * MS, 10 * MS, 0, 100), LZ_LEVEL_FAST);
    ck_assert_int_eq(frames(c, &now, 5000 * MS, 10 * MS, mid, 100), LZ_LEVEL_FAST);
    ck_assert_int_eq(lzctl_switches(c), 2);
    lzctl_free(c);
}
END_TEST

START_TEST(test_shallow_queue_turns_fast_after_fall_time)
{
    uint64_t now = 0;
    struct lzctl *c = make(now);

    ck_assert_int_eq(frames(c, &now, 300 * MS, 10 * MS, 8 * MIB, 1 * MS), params.hc_level);
    /* The link caught up, the encoder mostly idle: HC until the fall time has passed... */
    ck_assert_int_eq(frames(c, &now, params.fall_us - 20 * MS, 10 * MS, 1000, 1 * MS),
                     params.hc_level);
    ck_assert_int_eq(frames(c, &now, 40 * MS, 10 * MS, 1000, 1 * MS), LZ_LEVEL_FAST);
    ck_assert_int_eq(lzctl_why(c), LZCTL_WHY_LINK_KEEPS_UP);
    /* ...and nothing holds HC back when the queue deepens again. */
    ck_assert_int_eq(frames(c, &now, params.rise_us + 20 * MS, 10 * MS, 8 * MIB, 1 * MS),
                     params.hc_level);
    ck_assert_int_eq(lzctl_switches(c), 3);
    lzctl_free(c);
}
END_TEST

START_TEST(test_back_pressure_pause_keeps_hc)
{
    uint64_t now = 0;
    struct lzctl *c = make(now);

    /* The sender fills the queue flat out (the encoder always busy), then stops reading the
     * primary for 5 s while the link drains it, and resumes on an empty queue. */
    for (int cycle = 0; cycle < 5; cycle++) {
        ck_assert_int_eq(frames(c, &now, 2000 * MS, 10 * MS, 16 * MIB, 10 * MS), params.hc_level);
        now += 5000 * MS;
        ck_assert_int_eq(frames(c, &now, 30 * MS, 10 * MS, 0, 10 * MS), params.hc_level);
    }
    ck_assert_int_eq(lzctl_switches(c), 1);
    lzctl_free(c);
}
END_TEST

START_TEST(test_busy_encoder_on_empty_queue_is_cpu_bound)
{
    uint64_t now = 0, switched;
    struct lzctl *c = make(now);
    int n = 0;

    ck_assert_int_eq(frames(c, &now, 300 * MS, 10 * MS, 8 * MIB, 1 * MS), params.hc_level);
    /* HC encodes 8 ms of every 10 and the queue is empty: the CPU, not the link, is the limit.
     * Decided once a window of HC has been measured, well before the fall time. */
    while (lzctl_mode(c) == LZCTL_HC) {
        ck_assert_int_lt(n++, (int)(params.fall_us / (10 * MS)));
        frames(c, &now, 10 * MS, 10 * MS, 0, 8 * MS);
    }
    switched = now - 10 * MS;
    ck_assert_int_eq(lzctl_why(c), LZCTL_WHY_CPU_BOUND);
    ck_assert_str_eq(lzctl_why_name(lzctl_why(c)), "cpu-bound");
    ck_assert_uint_ge(lzctl_busy_pct(c), 50);
    /* Held: a deep queue does not bring HC back before the hold time... */
    ck_assert_int_eq(
        frames(c, &now, switched + params.hold_us - 50 * MS - now, 10 * MS, 8 * MIB, 1 * MS),
        LZ_LEVEL_FAST);
    /* ...and does after it. */
    ck_assert_int_eq(frames(c, &now, 100 * MS, 10 * MS, 8 * MIB, 1 * MS), params.hc_level);
    ck_assert_int_eq(lzctl_why(c), LZCTL_WHY_LINK_BOUND);
    ck_assert_int_eq(lzctl_switches(c), 3);
    lzctl_free(c);
}
END_TEST

START_TEST(test_busy_encoder_on_deep_queue_keeps_hc)
{
    uint64_t now = 0;
    struct lzctl *c = make(now);

    ck_assert_int_eq(frames(c, &now, 300 * MS, 10 * MS, 8 * MIB, 1 * MS), params.hc_level);
    /* Busy all the time, but the queue stays deep: the link is still the limit. */
    ck_assert_int_eq(frames(c, &now, 10000 * MS, 10 * MS, 8 * MIB, 10 * MS), params.hc_level);
    ck_assert_uint_eq(lzctl_busy_pct(c), 100);
    ck_assert_int_eq(lzctl_switches(c), 1);
    lzctl_free(c);
}
END_TEST

START_TEST(test_fast_encoder_busy_is_not_cpu_bound_fallback)
{
    uint64_t now = 0;
    struct lzctl *c = make(now);

    /* A busy fast encoder on an empty queue (loopback, CPU-bound from the start): fast, and
     * no hold recorded - nothing was switched. */
    ck_assert_int_eq(frames(c, &now, 3000 * MS, 10 * MS, 0, 9 * MS), LZ_LEVEL_FAST);
    ck_assert_int_eq(lzctl_why(c), LZCTL_WHY_START);
    ck_assert_int_eq(lzctl_switches(c), 0);
    lzctl_free(c);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("lzctl");
    TCase *tc = tcase_create("lzctl");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_deep_queue_turns_hc_after_rise_time);
    tcase_add_test(tc, test_hysteresis_between_thresholds);
    tcase_add_test(tc, test_shallow_queue_turns_fast_after_fall_time);
    tcase_add_test(tc, test_back_pressure_pause_keeps_hc);
    tcase_add_test(tc, test_busy_encoder_on_empty_queue_is_cpu_bound);
    tcase_add_test(tc, test_busy_encoder_on_deep_queue_keeps_hc);
    tcase_add_test(tc, test_fast_encoder_busy_is_not_cpu_bound_fallback);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
