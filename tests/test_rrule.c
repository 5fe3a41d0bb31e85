/*
 * test_rrule.c - Check suite for agent/rrule.c: the RRULE subset of maintenance windows.
 * Exact UTC instants of the last Saturday of each month at 22:00 America/Denver across both
 * DST changes, INTERVAL with WEEKLY, negative BYMONTHDAY, ordinals, COUNT and UNTIL ending the
 * series, one-off windows, every rejection, the canonical form, TZ left as it was, and the
 * module's own reading of zone files checked against glibc's in twelve zones over 50 years.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rrule.h"

/* Unix seconds of a UTC civil time. */
static int64_t
utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {0};

    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t)timegm(&tm);
}

static struct rrule *
parse_ok(const char *text)
{
    struct rrule *r = NULL;
    char err[256];
    int rc = rrule_parse(text, &r, err, sizeof(err));

    ck_assert_msg(rc == 0, "'%s' refused: %s", text, err);
    return r;
}

struct win {
    struct rrule_span active, next;
};

static struct win
windows(const struct rrule *r, const char *tz, int y, int m, int d, int start_min, int64_t dur,
        int64_t now)
{
    struct win w;

    ck_assert_int_eq(rrule_windows(r, tz, y, m, d, start_min, dur, now, &w.active, &w.next), 0);
    return w;
}

/* The next window after each previous one's start, n times, into starts[]. */
static void
series(const struct rrule *r, const char *tz, int y, int m, int d, int start_min, int64_t dur,
       int64_t from, int64_t *starts, int n)
{
    int64_t now = from;

    for (int i = 0; i < n; i++) {
        struct win w = windows(r, tz, y, m, d, start_min, dur, now);
        starts[i] = w.next.start;
        if (w.next.start < 0)
            return;
        ck_assert_int_eq(w.next.end - w.next.start, dur);
        now = w.next.start;
    }
}

START_TEST(last_saturday_denver_across_dst)
{
    struct rrule *r = parse_ok("FREQ=MONTHLY;BYDAY=-1SA");
    int64_t s[12];
    struct win w;

    series(r, "America/Denver", 2026, 1, 1, 22 * 60, 4 * 3600, utc(2026, 1, 1, 0, 0), s, 12);
    ck_assert_int_eq(s[0], utc(2026, 2, 1, 5, 0));   /* Jan 31 22:00 MST */
    ck_assert_int_eq(s[1], utc(2026, 3, 1, 5, 0));   /* Feb 28 22:00 MST */
    ck_assert_int_eq(s[2], utc(2026, 3, 29, 4, 0));  /* Mar 28 22:00 MDT (DST from Mar 8) */
    ck_assert_int_eq(s[3], utc(2026, 4, 26, 4, 0));  /* Apr 25 22:00 MDT */
    ck_assert_int_eq(s[9], utc(2026, 11, 1, 4, 0));  /* Oct 31 22:00 MDT; DST ends at 02:00 */
    ck_assert_int_eq(s[10], utc(2026, 11, 29, 5, 0)); /* Nov 28 22:00 MST */
    ck_assert_int_eq(s[11], utc(2026, 12, 27, 5, 0)); /* Dec 26 22:00 MST */

    /* inside the March window: active, and the next is April's */
    w = windows(r, "America/Denver", 2026, 1, 1, 22 * 60, 4 * 3600, utc(2026, 3, 29, 6, 30));
    ck_assert_int_eq(w.active.start, utc(2026, 3, 29, 4, 0));
    ck_assert_int_eq(w.active.end, utc(2026, 3, 29, 8, 0));
    ck_assert_int_eq(w.next.start, utc(2026, 4, 26, 4, 0));
    /* the start instant itself is inside; the end is not */
    w = windows(r, "America/Denver", 2026, 1, 1, 22 * 60, 4 * 3600, utc(2026, 3, 29, 4, 0));
    ck_assert_int_eq(w.active.start, utc(2026, 3, 29, 4, 0));
    w = windows(r, "America/Denver", 2026, 1, 1, 22 * 60, 4 * 3600, utc(2026, 3, 29, 8, 0));
    ck_assert_int_eq(w.active.start, -1);
    ck_assert_int_eq(w.next.start, utc(2026, 4, 26, 4, 0));
    /* the window spanning the November change lasts 4 real hours */
    w = windows(r, "America/Denver", 2026, 1, 1, 22 * 60, 4 * 3600, utc(2026, 11, 1, 7, 59));
    ck_assert_int_eq(w.active.start, utc(2026, 11, 1, 4, 0));
    ck_assert_int_eq(w.active.end, utc(2026, 11, 1, 8, 0));
    /* years after the start date */
    w = windows(r, "America/Denver", 2026, 1, 1, 22 * 60, 4 * 3600, utc(2030, 6, 1, 0, 0));
    ck_assert_int_eq(w.next.start, utc(2030, 6, 30, 4, 0)); /* Sat Jun 29 2030, MDT */
    rrule_free(r);
}
END_TEST

START_TEST(weekly_interval_2)
{
    struct rrule *r = parse_ok("FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH");
    int64_t s[5];

    /* 2026-01-05 is a Monday */
    series(r, "UTC", 2026, 1, 5, 9 * 60, 3600, utc(2026, 1, 1, 0, 0), s, 5);
    ck_assert_int_eq(s[0], utc(2026, 1, 6, 9, 0));
    ck_assert_int_eq(s[1], utc(2026, 1, 8, 9, 0));
    ck_assert_int_eq(s[2], utc(2026, 1, 20, 9, 0));
    ck_assert_int_eq(s[3], utc(2026, 1, 22, 9, 0));
    ck_assert_int_eq(s[4], utc(2026, 2, 3, 9, 0));
    rrule_free(r);

    /* without BYDAY: DTSTART's weekday; a start date on Thursday skips that week's Tuesday */
    r = parse_ok("FREQ=WEEKLY;INTERVAL=2");
    series(r, "UTC", 2026, 1, 8, 0, 60, utc(2026, 1, 1, 0, 0), s, 3);
    ck_assert_int_eq(s[0], utc(2026, 1, 8, 0, 0));
    ck_assert_int_eq(s[1], utc(2026, 1, 22, 0, 0));
    ck_assert_int_eq(s[2], utc(2026, 2, 5, 0, 0));
    rrule_free(r);
    r = parse_ok("FREQ=WEEKLY;INTERVAL=2;BYDAY=TU");
    series(r, "UTC", 2026, 1, 8, 0, 60, utc(2026, 1, 1, 0, 0), s, 2);
    ck_assert_int_eq(s[0], utc(2026, 1, 20, 0, 0));
    ck_assert_int_eq(s[1], utc(2026, 2, 3, 0, 0));
    rrule_free(r);
}
END_TEST

START_TEST(bymonthday_negative_and_ordinals)
{
    struct rrule *r = parse_ok("FREQ=MONTHLY;BYMONTHDAY=-1");
    int64_t s[4];

    series(r, "Europe/Berlin", 2028, 1, 15, 23 * 60 + 30, 1800, utc(2028, 1, 1, 0, 0), s, 4);
    ck_assert_int_eq(s[0], utc(2028, 1, 31, 22, 30)); /* CET */
    ck_assert_int_eq(s[1], utc(2028, 2, 29, 22, 30)); /* a leap year */
    ck_assert_int_eq(s[2], utc(2028, 3, 31, 21, 30)); /* CEST */
    ck_assert_int_eq(s[3], utc(2028, 4, 30, 21, 30));
    rrule_free(r);

    r = parse_ok("FREQ=MONTHLY;BYDAY=2MO,-2FR");
    series(r, "UTC", 2026, 1, 1, 12 * 60, 60, utc(2026, 1, 1, 0, 0), s, 4);
    ck_assert_int_eq(s[0], utc(2026, 1, 12, 12, 0)); /* second Monday */
    ck_assert_int_eq(s[1], utc(2026, 1, 23, 12, 0)); /* second-to-last Friday (last: 30th) */
    ck_assert_int_eq(s[2], utc(2026, 2, 9, 12, 0));
    ck_assert_int_eq(s[3], utc(2026, 2, 20, 12, 0));
    rrule_free(r);

    /* Friday the 13th: BYDAY and BYMONTHDAY both limit */
    r = parse_ok("FREQ=MONTHLY;BYDAY=FR;BYMONTHDAY=13");
    series(r, "UTC", 2026, 1, 1, 0, 60, utc(2026, 1, 1, 0, 0), s, 2);
    ck_assert_int_eq(s[0], utc(2026, 2, 13, 0, 0));
    ck_assert_int_eq(s[1], utc(2026, 3, 13, 0, 0));
    rrule_free(r);

    /* the start date's day of the month; months without it are skipped */
    r = parse_ok("FREQ=MONTHLY");
    series(r, "UTC", 2026, 1, 31, 0, 60, utc(2026, 1, 1, 0, 0), s, 3);
    ck_assert_int_eq(s[0], utc(2026, 1, 31, 0, 0));
    ck_assert_int_eq(s[1], utc(2026, 3, 31, 0, 0));
    ck_assert_int_eq(s[2], utc(2026, 5, 31, 0, 0));
    rrule_free(r);

    /* DAILY filtered by weekday */
    r = parse_ok("FREQ=DAILY;BYDAY=SA,SU");
    series(r, "UTC", 2026, 1, 5, 0, 60, utc(2026, 1, 1, 0, 0), s, 3);
    ck_assert_int_eq(s[0], utc(2026, 1, 10, 0, 0));
    ck_assert_int_eq(s[1], utc(2026, 1, 11, 0, 0));
    ck_assert_int_eq(s[2], utc(2026, 1, 17, 0, 0));
    rrule_free(r);
}
END_TEST

START_TEST(count_and_until_end_the_series)
{
    struct rrule *r = parse_ok("FREQ=DAILY;INTERVAL=3;COUNT=3");
    int64_t s[4];
    struct win w;

    series(r, "America/Denver", 2026, 3, 1, 22 * 60, 3600, utc(2026, 1, 1, 0, 0), s, 4);
    ck_assert_int_eq(s[0], utc(2026, 3, 2, 5, 0)); /* Mar 1 MST */
    ck_assert_int_eq(s[1], utc(2026, 3, 5, 5, 0));
    ck_assert_int_eq(s[2], utc(2026, 3, 8, 5, 0)); /* Mar 7 22:00 MST, DST from Mar 8 */
    ck_assert_int_eq(s[3], -1);
    /* COUNT is counted from the start even when now is long after */
    w = windows(r, "America/Denver", 2026, 3, 1, 22 * 60, 3600, utc(2026, 3, 8, 5, 30));
    ck_assert_int_eq(w.active.start, utc(2026, 3, 8, 5, 0));
    ck_assert_int_eq(w.next.start, -1);
    rrule_free(r);

    /* UNTIL as a date: inclusive of that local date */
    r = parse_ok("FREQ=WEEKLY;BYDAY=SA;UNTIL=20260321");
    series(r, "America/Denver", 2026, 3, 1, 22 * 60, 3600, utc(2026, 3, 1, 0, 0), s, 4);
    ck_assert_int_eq(s[0], utc(2026, 3, 8, 5, 0));  /* Sat Mar 7 22:00 MST */
    ck_assert_int_eq(s[1], utc(2026, 3, 15, 4, 0)); /* Sat Mar 14 22:00 MDT */
    ck_assert_int_eq(s[2], utc(2026, 3, 22, 4, 0)); /* Sat Mar 21 */
    ck_assert_int_eq(s[3], -1);
    rrule_free(r);

    /* UNTIL as a UTC instant: an occurrence starting after it is not one */
    r = parse_ok("FREQ=WEEKLY;BYDAY=SA;UNTIL=20260322T035959Z");
    series(r, "America/Denver", 2026, 3, 1, 22 * 60, 3600, utc(2026, 3, 1, 0, 0), s, 4);
    ck_assert_int_eq(s[1], utc(2026, 3, 15, 4, 0));
    ck_assert_int_eq(s[2], -1);
    rrule_free(r);
    r = parse_ok("FREQ=WEEKLY;BYDAY=SA;UNTIL=20260322T040000Z");
    series(r, "America/Denver", 2026, 3, 1, 22 * 60, 3600, utc(2026, 3, 1, 0, 0), s, 4);
    ck_assert_int_eq(s[2], utc(2026, 3, 22, 4, 0));
    ck_assert_int_eq(s[3], -1);
    rrule_free(r);
}
END_TEST

START_TEST(one_off)
{
    struct win w;

    w = windows(NULL, "America/Denver", 2026, 11, 1, 1 * 60 + 30, 7200, utc(2026, 10, 1, 0, 0));
    ck_assert_int_ge(w.next.start, utc(2026, 11, 1, 7, 30) - 3600); /* 01:30 is ambiguous */
    ck_assert_int_le(w.next.start, utc(2026, 11, 1, 8, 30));
    w = windows(NULL, "UTC", 2026, 5, 1, 0, 7200, utc(2026, 5, 1, 1, 0));
    ck_assert_int_eq(w.active.start, utc(2026, 5, 1, 0, 0));
    ck_assert_int_eq(w.next.start, -1);
    w = windows(NULL, "UTC", 2026, 5, 1, 0, 7200, utc(2026, 5, 1, 2, 0));
    ck_assert_int_eq(w.active.start, -1);
    ck_assert_int_eq(w.next.start, -1);
}
END_TEST

START_TEST(rejections)
{
    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"", "empty"},
        {"RRULE:", "empty"},
        {"FREQ=YEARLY", "FREQ=YEARLY is not supported"},
        {"FREQ=HOURLY", "FREQ=HOURLY"},
        {"FREQ=MONTHLY;BYSETPOS=-1", "BYSETPOS is not supported"},
        {"FREQ=DAILY;BYHOUR=22", "BYHOUR is not supported"},
        {"FREQ=WEEKLY;WKST=SU", "WKST is not supported"},
        {"FREQ=MONTHLY;BYMONTH=3", "BYMONTH is not supported"},
        {"FREQ=DAILY;COLOR=red", "unknown part 'COLOR'"},
        {"FREQ=DAILY;FREQ=DAILY", "FREQ is given twice"},
        {"FREQ=DAILY;COUNT=2;COUNT=3", "COUNT is given twice"},
        {"INTERVAL=2", "FREQ is missing"},
        {"FREQ=DAILY;INTERVAL=0", "INTERVAL: bad value '0'"},
        {"FREQ=DAILY;INTERVAL=x", "INTERVAL: bad value"},
        {"FREQ=DAILY;INTERVAL=-1", "INTERVAL: bad value"},
        {"FREQ=DAILY;INTERVAL=1001", "INTERVAL"},
        {"FREQ=DAILY;COUNT=0", "COUNT: bad value"},
        {"FREQ=DAILY;COUNT=", "COUNT has no value"},
        {"FREQ=DAILY;COUNT=3;UNTIL=20270101", "COUNT and UNTIL"},
        {"FREQ=DAILY;UNTIL=20270230", "UNTIL: bad value"},
        {"FREQ=DAILY;UNTIL=20270101T000000", "UNTIL: bad value"},
        {"FREQ=DAILY;UNTIL=2027-01-01", "UNTIL: bad value"},
        {"FREQ=DAILY;UNTIL=20270101T250000Z", "UNTIL: bad value"},
        {"FREQ=MONTHLY;BYDAY=XX", "BYDAY: bad value 'XX'"},
        {"FREQ=MONTHLY;BYDAY=6SA", "BYDAY: bad value '6SA'"},
        {"FREQ=MONTHLY;BYDAY=0SA", "BYDAY: bad value '0SA'"},
        {"FREQ=MONTHLY;BYDAY=-6SA", "BYDAY: bad value"},
        {"FREQ=MONTHLY;BYDAY=sa", "BYDAY: bad value"},
        {"FREQ=MONTHLY;BYDAY=SA,", "BYDAY: bad value ''"},
        {"FREQ=MONTHLY;BYDAY=SA,SA", "BYDAY: 'SA' is given twice"},
        {"FREQ=WEEKLY;BYDAY=-1SA", "BYDAY: an ordinal (-1SA) needs FREQ=MONTHLY"},
        {"FREQ=DAILY;BYDAY=2MO", "needs FREQ=MONTHLY"},
        {"FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY: bad value '0'"},
        {"FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY: bad value '32'"},
        {"FREQ=MONTHLY;BYMONTHDAY=-32", "BYMONTHDAY: bad value"},
        {"FREQ=MONTHLY;BYMONTHDAY=1,1", "BYMONTHDAY: 1 is given twice"},
        {"FREQ=WEEKLY;BYMONTHDAY=1", "BYMONTHDAY cannot be used with FREQ=WEEKLY"},
        {"FREQ=DAILY;;COUNT=2", "empty part"},
        {"FREQ=DAILY;", "empty part"},
        {"FREQ", "has no '='"},
        {"freq=daily", "unknown part 'freq'"},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct rrule *r = (struct rrule *)1;
        char err[256] = "x";
        int rc = rrule_parse(bad[i].text, &r, err, sizeof(err));

        ck_assert_msg(rc == -EINVAL, "'%s' accepted", bad[i].text);
        ck_assert_ptr_null(r);
        ck_assert_msg(strstr(err, bad[i].needle) != NULL, "'%s': '%s' lacks '%s'", bad[i].text,
                      err, bad[i].needle);
    }
    /* bad zones, dates, times and durations */
    struct rrule_span a, n;
    struct rrule *r = parse_ok("FREQ=DAILY");
    ck_assert_int_eq(rrule_windows(r, "Mars/Olympus", 2026, 1, 1, 0, 60, 0, &a, &n), -EINVAL);
    ck_assert_int_eq(rrule_windows(r, "../etc/passwd", 2026, 1, 1, 0, 60, 0, &a, &n), -EINVAL);
    ck_assert_int_eq(rrule_windows(r, "", 2026, 1, 1, 0, 60, 0, &a, &n), -EINVAL);
    ck_assert_int_eq(rrule_windows(r, "UTC", 2026, 2, 29, 0, 60, 0, &a, &n), -EINVAL);
    ck_assert_int_eq(rrule_windows(r, "UTC", 2026, 1, 1, 24 * 60, 60, 0, &a, &n), -EINVAL);
    ck_assert_int_eq(rrule_windows(r, "UTC", 2026, 1, 1, 0, 0, 0, &a, &n), -EINVAL);
    ck_assert(!rrule_tz_valid("America"));
    ck_assert(rrule_tz_valid("America/Denver"));
    rrule_free(r);
}
END_TEST

START_TEST(canonical_form)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"RRULE:BYDAY=-1SA;FREQ=MONTHLY", "FREQ=MONTHLY;BYDAY=-1SA"},
        {"FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH;COUNT=10", "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH;COUNT=10"},
        {"FREQ=MONTHLY;BYMONTHDAY=1,-1;UNTIL=20271231", "FREQ=MONTHLY;BYMONTHDAY=1,-1;UNTIL=20271231"},
        {"FREQ=DAILY;INTERVAL=1;UNTIL=20270101T235959Z", "FREQ=DAILY;UNTIL=20270101T235959Z"},
        {"FREQ=MONTHLY;BYDAY=+2MO", "FREQ=MONTHLY;BYDAY=2MO"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rrule *r = parse_ok(cases[i].in);
        char buf[256];
        ck_assert_int_lt(rrule_format(r, buf, sizeof(buf)), (int)sizeof(buf));
        ck_assert_str_eq(buf, cases[i].out);
        rrule_free(r);
    }
}
END_TEST

START_TEST(tz_left_alone)
{
    struct rrule *r = parse_ok("FREQ=DAILY");
    struct rrule_span a, n;
    int64_t t;

    setenv("TZ", "Asia/Tokyo", 1);
    tzset();
    ck_assert_int_eq(rrule_windows(r, "America/Denver", 2026, 1, 1, 0, 60, 0, &a, &n), 0);
    ck_assert_int_eq(rrule_local_to_unix("America/Denver", 2026, 7, 1, 0, &t), 0);
    ck_assert_int_eq(t, utc(2026, 7, 1, 6, 0));
    ck_assert_str_eq(getenv("TZ"), "Asia/Tokyo");
    unsetenv("TZ");
    tzset();
    ck_assert_int_eq(rrule_windows(r, "America/Denver", 2026, 1, 1, 0, 60, 0, &a, &n), 0);
    ck_assert_ptr_null(getenv("TZ"));
    rrule_free(r);
}
END_TEST

/* The zone reader against glibc's (TZ + mktime / localtime_r, fine in this single-threaded
 * test): zones north and south, without DST, with half and quarter hours, with negative DST
 * (Europe/Dublin), over 1995-2045 (the footer rule after the files' last transitions). */
START_TEST(zones_agree_with_glibc)
{
    static const char *const zones[] = {
        "America/Denver", "Europe/Berlin",    "Australia/Sydney", "Asia/Kolkata",
        "America/St_Johns", "Pacific/Chatham", "Europe/Dublin",    "America/Santiago",
        "Asia/Tehran",      "UTC",             "Australia/Lord_Howe", "America/Sao_Paulo",
    };
    static const int minutes[] = {2 * 60 + 30, 22 * 60};
    int checked = 0, differ = 0, skipped = 0;

    for (size_t zi = 0; zi < sizeof(zones) / sizeof(zones[0]); zi++) {
        setenv("TZ", zones[zi], 1);
        tzset();
        for (int64_t t0 = utc(1995, 1, 1, 0, 0); t0 < utc(2045, 12, 31, 0, 0); t0 += 5 * 86400) {
            struct tm day;
            time_t tt = (time_t)t0;
            gmtime_r(&tt, &day);
            for (size_t mi = 0; mi < 2; mi++) {
                struct tm want = {0}, got;
                int64_t mine;
                time_t theirs, back;

                want.tm_year = day.tm_year;
                want.tm_mon = day.tm_mon;
                want.tm_mday = day.tm_mday;
                want.tm_hour = minutes[mi] / 60;
                want.tm_min = minutes[mi] % 60;
                want.tm_isdst = -1;
                theirs = mktime(&want);
                ck_assert_int_eq(rrule_local_to_unix(zones[zi], day.tm_year + 1900,
                                                     day.tm_mon + 1, day.tm_mday, minutes[mi],
                                                     &mine), 0);
                back = (time_t)mine;
                localtime_r(&back, &got);
                if (got.tm_hour * 60 + got.tm_min != minutes[mi] || got.tm_mday != day.tm_mday) {
                    /* only in a skipped hour, and then an hour (or half) later */
                    ck_assert_msg(theirs != (time_t)-1, "%s", zones[zi]);
                    skipped++;
                    continue;
                }
                /* a repeated hour may differ from glibc's pick, never by more than 1 h */
                ck_assert_msg(mine == (int64_t)theirs || llabs(mine - (int64_t)theirs) <= 3600,
                              "%s %04d-%02d-%02d %d: %lld vs %lld", zones[zi],
                              day.tm_year + 1900, day.tm_mon + 1, day.tm_mday, minutes[mi],
                              (long long)mine, (long long)theirs);
                if (mine == (int64_t)theirs)
                    checked++;
                else
                    differ++;
                /* and back: the local date of an instant */
                int y, m, d;
                ck_assert_int_eq(rrule_unix_to_local_date(zones[zi], t0 + 3 * 3600 + 7, &y, &m,
                                                          &d), 0);
                tt = (time_t)(t0 + 3 * 3600 + 7);
                localtime_r(&tt, &got);
                ck_assert_msg(y == got.tm_year + 1900 && m == got.tm_mon + 1 && d == got.tm_mday,
                              "%s: local date of %lld", zones[zi], (long long)tt);
            }
        }
    }
    unsetenv("TZ");
    tzset();
    /* 12 zones x 3700 days x 2 times; skipped and repeated hours are a few a year */
    ck_assert_msg(checked > 85000 && differ + skipped < 1000, "%d same, %d differ, %d skipped",
                  checked, differ, skipped);
}
END_TEST

static Suite *
rrule_suite(void)
{
    Suite *s = suite_create("rrule");
    TCase *tc = tcase_create("rrule");

    tcase_add_test(tc, last_saturday_denver_across_dst);
    tcase_add_test(tc, weekly_interval_2);
    tcase_add_test(tc, bymonthday_negative_and_ordinals);
    tcase_add_test(tc, count_and_until_end_the_series);
    tcase_add_test(tc, one_off);
    tcase_add_test(tc, rejections);
    tcase_add_test(tc, canonical_form);
    tcase_add_test(tc, tz_left_alone);
    tcase_add_test(tc, zones_agree_with_glibc);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(rrule_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
