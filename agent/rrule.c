/*
 * rrule.c - the RRULE subset of rrule.h: parsing, and the windows a rule yields.
 *
 * Dates are handled as civil day numbers (days since 1970-01-01, proleptic Gregorian), so the
 * rule itself needs no time zone; only turning an occurrence's local date and start time into
 * Unix seconds does, through glibc under tz_lock (see rrule.h).
 */
#include "rrule.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum rrule_freq { FREQ_DAILY, FREQ_WEEKLY, FREQ_MONTHLY };

#define RRULE_MAX_BYDAY 35      /* 7 weekdays x (none, 1..5, -1..-5) would be 77; plenty */
#define RRULE_MAX_BYMONTHDAY 62 /* 1..31 and -31..-1 */
#define RRULE_MAX_INTERVAL 1000
#define RRULE_MAX_COUNT 100000
#define RRULE_HORIZON_DAYS (366 * 40) /* look this far past now for the next window */

struct rrule_byday {
    int ord; /* 0: every such weekday; else 1..5 or -1..-5 within the month */
    int wd;  /* 0 = Monday .. 6 = Sunday */
};

struct rrule {
    enum rrule_freq freq;
    int interval;
    int count; /* 0: unbounded */
    int until_kind; /* 0: none, 1: a local date, 2: a UTC instant */
    int64_t until_day; /* until_kind 1: civil day number */
    int64_t until_utc; /* until_kind 2: Unix seconds */
    int n_byday;
    struct rrule_byday byday[RRULE_MAX_BYDAY];
    int n_bymonthday;
    int bymonthday[RRULE_MAX_BYMONTHDAY];
};

static const char *const wd_names[7] = {"MO", "TU", "WE", "TH", "FR", "SA", "SU"};
static const char *const freq_names[3] = {"DAILY", "WEEKLY", "MONTHLY"};

/* ---- civil dates ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t
civil_to_days(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void
days_to_civil(int64_t z, int *year, int *month, int *day)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = (int)(yoe + era * 400 + (m <= 2));
    *month = m;
    *day = d;
}

static bool
is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
month_days(int64_t y, int m)
{
    static const int n[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : n[m - 1];
}

/* 0 = Monday .. 6 = Sunday (1970-01-01 was a Thursday). */
static int
weekday(int64_t days)
{
    int64_t w = (days + 3) % 7;
    return (int)(w < 0 ? w + 7 : w);
}

static bool
date_valid(int y, int m, int d)
{
    return y >= 1900 && y <= 9999 && m >= 1 && m <= 12 && d >= 1 && d <= month_days(y, m);
}

/* ---- parsing ---- */

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* A decimal integer filling [s, s+n) exactly, optionally signed, within [lo, hi]. */
static bool
parse_int(const char *s, size_t n, bool sign_ok, long lo, long hi, long *out)
{
    size_t i = 0;
    bool neg = false;
    long v = 0;

    if (sign_ok && n > 0 && (s[0] == '+' || s[0] == '-')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == n || n - i > 6)
        return false;
    for (; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    v = neg ? -v : v;
    if (v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int
parse_byday(struct rrule *r, const char *v, size_t n, char *err, size_t errlen)
{
    size_t i = 0;

    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        size_t len = j - i;
        const char *item = v + i;
        int wd = -1;
        long ord = 0;

        if (len >= 2) {
            for (int k = 0; k < 7; k++)
                if (memcmp(item + len - 2, wd_names[k], 2) == 0)
                    wd = k;
        }
        if (wd < 0 || (len > 2 && (!parse_int(item, len - 2, true, -5, 5, &ord) || ord == 0)))
            return fail(err, errlen,
                        "BYDAY: bad value '%.*s' (expected MO..SU with an optional ordinal "
                        "1..5 or -1..-5, e.g. -1SA)",
                        (int)(len > 40 ? 40 : len), item);
        for (int k = 0; k < r->n_byday; k++)
            if (r->byday[k].wd == wd && r->byday[k].ord == ord)
                return fail(err, errlen, "BYDAY: '%.*s' is given twice", (int)len, item);
        if (r->n_byday == RRULE_MAX_BYDAY)
            return fail(err, errlen, "BYDAY: too many values (at most %d)", RRULE_MAX_BYDAY);
        r->byday[r->n_byday].wd = wd;
        r->byday[r->n_byday].ord = (int)ord;
        r->n_byday++;
        i = j + 1;
    }
    return 0;
}

static int
parse_bymonthday(struct rrule *r, const char *v, size_t n, char *err, size_t errlen)
{
    size_t i = 0;

    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        long d;
        if (!parse_int(v + i, j - i, true, -31, 31, &d) || d == 0)
            return fail(err, errlen, "BYMONTHDAY: bad value '%.*s' (expected 1..31 or -31..-1)",
                        (int)(j - i > 40 ? 40 : j - i), v + i);
        for (int k = 0; k < r->n_bymonthday; k++)
            if (r->bymonthday[k] == d)
                return fail(err, errlen, "BYMONTHDAY: %ld is given twice", d);
        if (r->n_bymonthday == RRULE_MAX_BYMONTHDAY)
            return fail(err, errlen, "BYMONTHDAY: too many values");
        r->bymonthday[r->n_bymonthday++] = (int)d;
        i = j + 1;
    }
    return 0;
}

static int
parse_until(struct rrule *r, const char *v, size_t n, char *err, size_t errlen)
{
    long y, mo, d, h = 0, mi = 0, s = 0;

    if ((n != 8 && n != 16) || !parse_int(v, 4, false, 1900, 9999, &y) ||
        !parse_int(v + 4, 2, false, 1, 12, &mo) || !parse_int(v + 6, 2, false, 1, 31, &d) ||
        !date_valid((int)y, (int)mo, (int)d) ||
        (n == 16 && (v[8] != 'T' || v[15] != 'Z' || !parse_int(v + 9, 2, false, 0, 23, &h) ||
                     !parse_int(v + 11, 2, false, 0, 59, &mi) ||
                     !parse_int(v + 13, 2, false, 0, 59, &s))))
        return fail(err, errlen,
                    "UNTIL: bad value '%.*s' (expected a date YYYYMMDD or a UTC time "
                    "YYYYMMDDTHHMMSSZ)",
                    (int)(n > 40 ? 40 : n), v);
    if (n == 8) {
        r->until_kind = 1;
        r->until_day = civil_to_days(y, (int)mo, (int)d);
    } else {
        r->until_kind = 2;
        r->until_utc = civil_to_days(y, (int)mo, (int)d) * 86400 + h * 3600 + mi * 60 + s;
    }
    return 0;
}

static int
parse_part(struct rrule *r, const char *key, size_t klen, const char *v, size_t vlen,
           unsigned *seen, char *err, size_t errlen)
{
    static const char *const keys[] = {"FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "COUNT",
                                       "UNTIL"};
    static const char *const unsupported[] = {"BYSETPOS", "BYHOUR",   "BYMINUTE", "BYSECOND",
                                              "BYWEEKNO", "BYYEARDAY", "BYMONTH", "WKST",
                                              "RSCALE",   "SKIP"};
    int k = -1;
    long num;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strlen(keys[i]) == klen && memcmp(keys[i], key, klen) == 0)
            k = (int)i;
    if (k < 0) {
        for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++)
            if (strlen(unsupported[i]) == klen && memcmp(unsupported[i], key, klen) == 0)
                return fail(err, errlen,
                            "%s is not supported (supported: FREQ, INTERVAL, BYDAY, "
                            "BYMONTHDAY, COUNT, UNTIL)",
                            unsupported[i]);
        return fail(err, errlen, "unknown part '%.*s'", (int)(klen > 40 ? 40 : klen), key);
    }
    if (*seen & (1u << k))
        return fail(err, errlen, "%s is given twice", keys[k]);
    *seen |= 1u << k;
    if (vlen == 0)
        return fail(err, errlen, "%s has no value", keys[k]);
    switch (k) {
    case 0:
        for (int f = 0; f < 3; f++)
            if (strlen(freq_names[f]) == vlen && memcmp(freq_names[f], v, vlen) == 0) {
                r->freq = (enum rrule_freq)f;
                return 0;
            }
        return fail(err, errlen, "FREQ=%.*s is not supported (DAILY, WEEKLY or MONTHLY)",
                    (int)(vlen > 40 ? 40 : vlen), v);
    case 1:
        if (!parse_int(v, vlen, false, 1, RRULE_MAX_INTERVAL, &num))
            return fail(err, errlen, "INTERVAL: bad value '%.*s' (expected 1..%d)",
                        (int)(vlen > 40 ? 40 : vlen), v, RRULE_MAX_INTERVAL);
        r->interval = (int)num;
        return 0;
    case 2:
        return parse_byday(r, v, vlen, err, errlen);
    case 3:
        return parse_bymonthday(r, v, vlen, err, errlen);
    case 4:
        if (!parse_int(v, vlen, false, 1, RRULE_MAX_COUNT, &num))
            return fail(err, errlen, "COUNT: bad value '%.*s' (expected 1..%d)",
                        (int)(vlen > 40 ? 40 : vlen), v, RRULE_MAX_COUNT);
        r->count = (int)num;
        return 0;
    default:
        return parse_until(r, v, vlen, err, errlen);
    }
}

int
rrule_parse(const char *text, struct rrule **out, char *err, size_t errlen)
{
    struct rrule *r;
    const char *p = text;
    unsigned seen = 0;
    int rc = 0;

    *out = NULL;
    err[0] = '\0';
    if (strncmp(p, "RRULE:", 6) == 0)
        p += 6;
    if (*p == '\0')
        return fail(err, errlen, "empty rule (expected e.g. FREQ=MONTHLY;BYDAY=-1SA)");
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->interval = 1;
    while (rc == 0) {
        const char *end = strchr(p, ';');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);

        if (len == 0)
            rc = fail(err, errlen, "empty part (two ';' in a row, or a trailing ';')");
        else if (eq == NULL)
            rc = fail(err, errlen, "part '%.*s' has no '='", (int)(len > 40 ? 40 : len), p);
        else
            rc = parse_part(r, p, (size_t)(eq - p), eq + 1, len - (size_t)(eq - p) - 1, &seen,
                            err, errlen);
        if (end == NULL)
            break;
        p = end + 1;
    }
    if (rc == 0 && !(seen & 1u))
        rc = fail(err, errlen, "FREQ is missing");
    if (rc == 0 && r->count != 0 && r->until_kind != 0)
        rc = fail(err, errlen, "COUNT and UNTIL cannot both be given");
    if (rc == 0 && r->freq != FREQ_MONTHLY)
        for (int i = 0; i < r->n_byday; i++)
            if (r->byday[i].ord != 0) {
                rc = fail(err, errlen, "BYDAY: an ordinal (%d%s) needs FREQ=MONTHLY",
                          r->byday[i].ord, wd_names[r->byday[i].wd]);
                break;
            }
    if (rc == 0 && r->freq == FREQ_WEEKLY && r->n_bymonthday > 0)
        rc = fail(err, errlen, "BYMONTHDAY cannot be used with FREQ=WEEKLY");
    if (rc != 0) {
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void
rrule_free(struct rrule *r)
{
    free(r);
}

int
rrule_format(const struct rrule *r, char *buf, size_t len)
{
    char tmp[1024];
    size_t n = 0;

#define PUT(...)                                                                               \
    do {                                                                                       \
        int m_ = snprintf(tmp + n, sizeof(tmp) - n, __VA_ARGS__);                              \
        if (m_ > 0)                                                                            \
            n = n + (size_t)m_ < sizeof(tmp) ? n + (size_t)m_ : sizeof(tmp) - 1;               \
    } while (0)
    PUT("FREQ=%s", freq_names[r->freq]);
    if (r->interval != 1)
        PUT(";INTERVAL=%d", r->interval);
    for (int i = 0; i < r->n_byday; i++) {
        PUT("%s", i == 0 ? ";BYDAY=" : ",");
        if (r->byday[i].ord != 0)
            PUT("%d", r->byday[i].ord);
        PUT("%s", wd_names[r->byday[i].wd]);
    }
    for (int i = 0; i < r->n_bymonthday; i++)
        PUT("%s%d", i == 0 ? ";BYMONTHDAY=" : ",", r->bymonthday[i]);
    if (r->count != 0)
        PUT(";COUNT=%d", r->count);
    if (r->until_kind != 0) {
        int y, m, d;
        int64_t day = r->until_kind == 1 ? r->until_day
                                         : (r->until_utc - (r->until_utc % 86400 + 86400) % 86400) /
                                               86400;
        days_to_civil(day, &y, &m, &d);
        PUT(";UNTIL=%04d%02d%02d", y, m, d);
        if (r->until_kind == 2) {
            int64_t s = ((r->until_utc % 86400) + 86400) % 86400;
            PUT("T%02d%02d%02dZ", (int)(s / 3600), (int)(s / 60 % 60), (int)(s % 60));
        }
    }
#undef PUT
    return snprintf(buf, len, "%s", tmp);
}

/* ---- time zones ---- */

static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;

bool
rrule_tz_valid(const char *tz)
{
    const char *dir = getenv("TZDIR");
    char path[512];
    struct stat st;
    size_t n = strlen(tz);

    if (n == 0 || n > 64 || tz[0] == '/' || tz[0] == '.' || strstr(tz, "..") != NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)tz[i]) && strchr("/_+-", tz[i]) == NULL)
            return false;
    snprintf(path, sizeof(path), "%s/%s", dir != NULL && dir[0] != '\0' ? dir
                                                                        : "/usr/share/zoneinfo",
             tz);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Under tz_lock: sets TZ to tz (saving the old value in saved / *had), and back. */
static void
tz_enter(const char *tz, char *saved, size_t len, bool *had)
{
    const char *old;

    pthread_mutex_lock(&tz_lock);
    old = getenv("TZ");
    *had = old != NULL;
    snprintf(saved, len, "%s", old != NULL ? old : "");
    setenv("TZ", tz, 1);
    tzset();
}

static void
tz_leave(const char *saved, bool had)
{
    if (had)
        setenv("TZ", saved, 1);
    else
        unsetenv("TZ");
    tzset();
    pthread_mutex_unlock(&tz_lock);
}

int
rrule_local_to_unix(const char *tz, int year, int month, int day, int minute_of_day,
                    int64_t *out)
{
    char saved[256];
    bool had;
    struct tm tm = {0};
    time_t t;

    if (!date_valid(year, month, day) || minute_of_day < 0 || minute_of_day >= 24 * 60 ||
        !rrule_tz_valid(tz))
        return -EINVAL;
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = minute_of_day / 60;
    tm.tm_min = minute_of_day % 60;
    tm.tm_isdst = -1;
    tz_enter(tz, saved, sizeof(saved), &had);
    t = mktime(&tm);
    tz_leave(saved, had);
    if (t == (time_t)-1)
        return -EINVAL;
    *out = (int64_t)t;
    return 0;
}

int
rrule_unix_to_local_date(const char *tz, int64_t t, int *year, int *month, int *day)
{
    char saved[256];
    bool had;
    struct tm tm;
    time_t tt = (time_t)t;
    bool ok;

    if (!rrule_tz_valid(tz))
        return -EINVAL;
    tz_enter(tz, saved, sizeof(saved), &had);
    ok = localtime_r(&tt, &tm) != NULL;
    tz_leave(saved, had);
    if (!ok)
        return -EINVAL;
    *year = tm.tm_year + 1900;
    *month = tm.tm_mon + 1;
    *day = tm.tm_mday;
    return 0;
}

/* ---- occurrences ---- */

/* Does the rule's BYMONTHDAY / BYDAY (without ordinals) filter pass the day? */
static bool
day_matches(const struct rrule *r, int64_t days)
{
    int y, m, d;

    days_to_civil(days, &y, &m, &d);
    if (r->n_bymonthday > 0) {
        int n = month_days(y, m);
        bool hit = false;
        for (int i = 0; i < r->n_bymonthday && !hit; i++) {
            int md = r->bymonthday[i];
            hit = (md > 0 ? md : n + 1 + md) == d;
        }
        if (!hit)
            return false;
    }
    if (r->n_byday > 0) {
        int wd = weekday(days);
        int n = month_days(y, m);
        bool hit = false;
        for (int i = 0; i < r->n_byday && !hit; i++) {
            const struct rrule_byday *b = &r->byday[i];
            if (b->wd != wd)
                continue;
            if (b->ord == 0)
                hit = true;
            else if (b->ord > 0)
                hit = (d - 1) / 7 + 1 == b->ord;
            else
                hit = (n - d) / 7 + 1 == -b->ord;
        }
        if (!hit)
            return false;
    }
    return true;
}

/* The first day of period k (its candidates are on or after it). */
static int64_t
period_first(const struct rrule *r, int64_t start_day, int64_t k)
{
    int y, m, d;

    if (r->freq == FREQ_DAILY)
        return start_day + k * r->interval;
    if (r->freq == FREQ_WEEKLY)
        return start_day - weekday(start_day) + 7 * k * r->interval;
    days_to_civil(start_day, &y, &m, &d);
    int64_t mi = (int64_t)y * 12 + (m - 1) + k * r->interval;
    return civil_to_days(mi / 12, (int)(mi % 12) + 1, 1);
}

/* The candidate days of period k (in order), into days[]; returns how many. */
static int
period_days(const struct rrule *r, int64_t start_day, int64_t k, int64_t days[31])
{
    int n = 0;

    if (r->freq == FREQ_DAILY) {
        int64_t d = start_day + k * r->interval;
        if (day_matches(r, d))
            days[n++] = d;
    } else if (r->freq == FREQ_WEEKLY) {
        int64_t monday = start_day - weekday(start_day) + 7 * k * r->interval;
        for (int i = 0; i < 7; i++) {
            int64_t d = monday + i;
            bool hit = r->n_byday == 0 ? weekday(d) == weekday(start_day) : day_matches(r, d);
            if (hit)
                days[n++] = d;
        }
    } else {
        int y, m, sd;
        days_to_civil(start_day, &y, &m, &sd);
        int64_t mi = (int64_t)y * 12 + (m - 1) + k * r->interval;
        int yy = (int)(mi / 12), mm = (int)(mi % 12) + 1;
        int nd = month_days(yy, mm);
        int64_t first = civil_to_days(yy, mm, 1);
        if (r->n_byday == 0 && r->n_bymonthday == 0) {
            if (sd <= nd)
                days[n++] = first + sd - 1;
        } else {
            for (int i = 0; i < nd; i++)
                if (day_matches(r, first + i))
                    days[n++] = first + i;
        }
    }
    return n;
}

int
rrule_windows(const struct rrule *r, const char *tz, int year, int month, int day,
              int start_minute, int64_t duration_s, int64_t now, struct rrule_span *active,
              struct rrule_span *next)
{
    int64_t start_day, now_day, skip_before, horizon;
    int ny, nm, nd;
    int count = 0;

    active->start = active->end = -1;
    next->start = next->end = -1;
    if (!date_valid(year, month, day) || start_minute < 0 || start_minute >= 24 * 60 ||
        duration_s <= 0 || duration_s > 366LL * 86400 || !rrule_tz_valid(tz))
        return -EINVAL;
    start_day = civil_to_days(year, month, day);
    if (r == NULL) {
        int64_t s;
        if (rrule_local_to_unix(tz, year, month, day, start_minute, &s) < 0)
            return -EINVAL;
        if (s <= now && now < s + duration_s)
            *active = (struct rrule_span){s, s + duration_s};
        else if (s > now)
            *next = (struct rrule_span){s, s + duration_s};
        return 0;
    }
    if (rrule_unix_to_local_date(tz, now, &ny, &nm, &nd) < 0)
        return -EINVAL;
    now_day = civil_to_days(ny, nm, nd);
    /* Occurrences on days before this cannot be open now (zone offsets stay within 2 days):
     * they are counted for COUNT but not converted. */
    skip_before = now_day - 3 - duration_s / 86400;
    horizon = now_day + RRULE_HORIZON_DAYS;
    for (int64_t k = 0;; k++) {
        int64_t days[31];
        int n = period_days(r, start_day, k, days);

        for (int i = 0; i < n; i++) {
            int64_t d = days[i];
            int y, m, dd;
            int64_t s;

            if (d < start_day)
                continue;
            if (d > horizon || (r->until_kind == 1 && d > r->until_day))
                return 0;
            if (r->until_kind == 2 && (d - 2) * 86400 > r->until_utc)
                return 0;
            count++;
            if (r->count != 0 && count > r->count)
                return 0;
            if (d < skip_before && !(r->until_kind == 2 && (d + 2) * 86400 >= r->until_utc))
                continue;
            days_to_civil(d, &y, &m, &dd);
            if (y > 9999)
                return 0;
            if (rrule_local_to_unix(tz, y, m, dd, start_minute, &s) < 0)
                return -EINVAL;
            if (r->until_kind == 2 && s > r->until_utc)
                return 0;
            if (s <= now && now < s + duration_s)
                *active = (struct rrule_span){s, s + duration_s};
            else if (s > now) {
                *next = (struct rrule_span){s, s + duration_s};
                return 0;
            }
        }
        /* the next period begins past every limit: nothing more can come */
        int64_t p1 = period_first(r, start_day, k + 1);
        if (p1 > horizon || (r->until_kind == 1 && p1 > r->until_day) ||
            (r->until_kind == 2 && (p1 - 2) * 86400 > r->until_utc))
            return 0;
    }
}
