/*
 * rrule.c - the RRULE subset of rrule.h: parsing, and the windows a rule yields.
 *
 * Dates are handled as civil day numbers (days since 1970-01-01, proleptic Gregorian), so the
 * rule itself needs no time zone; only turning an occurrence's local date and start time into
 * Unix seconds does, with the zone's TZif file read here (see "time zones" below).
 */
#include "rrule.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
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
            return wm_einval(err, errlen,
                        "BYDAY: bad value '%.*s' (expected MO..SU with an optional ordinal "
                        "1..5 or -1..-5, e.g. -1SA)",
                        (int)(len > 40 ? 40 : len), item);
        for (int k = 0; k < r->n_byday; k++)
            if (r->byday[k].wd == wd && r->byday[k].ord == ord)
                return wm_einval(err, errlen, "BYDAY: '%.*s' is given twice", (int)len, item);
        if (r->n_byday == RRULE_MAX_BYDAY)
            return wm_einval(err, errlen, "BYDAY: too many values (at most %d)", RRULE_MAX_BYDAY);
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
            return wm_einval(err, errlen, "BYMONTHDAY: bad value '%.*s' (expected 1..31 or -31..-1)",
                        (int)(j - i > 40 ? 40 : j - i), v + i);
        for (int k = 0; k < r->n_bymonthday; k++)
            if (r->bymonthday[k] == d)
                return wm_einval(err, errlen, "BYMONTHDAY: %ld is given twice", d);
        if (r->n_bymonthday == RRULE_MAX_BYMONTHDAY)
            return wm_einval(err, errlen, "BYMONTHDAY: too many values");
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
        return wm_einval(err, errlen,
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
                return wm_einval(err, errlen,
                            "%s is not supported (supported: FREQ, INTERVAL, BYDAY, "
                            "BYMONTHDAY, COUNT, UNTIL)",
                            unsupported[i]);
        return wm_einval(err, errlen, "unknown part '%.*s'", (int)(klen > 40 ? 40 : klen), key);
    }
    if (*seen & (1u << k))
        return wm_einval(err, errlen, "%s is given twice", keys[k]);
    *seen |= 1u << k;
    if (vlen == 0)
        return wm_einval(err, errlen, "%s has no value", keys[k]);
    switch (k) {
    case 0:
        for (int f = 0; f < 3; f++)
            if (strlen(freq_names[f]) == vlen && memcmp(freq_names[f], v, vlen) == 0) {
                r->freq = (enum rrule_freq)f;
                return 0;
            }
        return wm_einval(err, errlen, "FREQ=%.*s is not supported (DAILY, WEEKLY or MONTHLY)",
                    (int)(vlen > 40 ? 40 : vlen), v);
    case 1:
        if (!parse_int(v, vlen, false, 1, RRULE_MAX_INTERVAL, &num))
            return wm_einval(err, errlen, "INTERVAL: bad value '%.*s' (expected 1..%d)",
                        (int)(vlen > 40 ? 40 : vlen), v, RRULE_MAX_INTERVAL);
        r->interval = (int)num;
        return 0;
    case 2:
        return parse_byday(r, v, vlen, err, errlen);
    case 3:
        return parse_bymonthday(r, v, vlen, err, errlen);
    case 4:
        if (!parse_int(v, vlen, false, 1, RRULE_MAX_COUNT, &num))
            return wm_einval(err, errlen, "COUNT: bad value '%.*s' (expected 1..%d)",
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
        return wm_einval(err, errlen, "empty rule (expected e.g. FREQ=MONTHLY;BYDAY=-1SA)");
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->interval = 1;
    while (rc == 0) {
        const char *end = strchr(p, ';');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);

        if (len == 0)
            rc = wm_einval(err, errlen, "empty part (two ';' in a row, or a trailing ';')");
        else if (eq == NULL)
            rc = wm_einval(err, errlen, "part '%.*s' has no '='", (int)(len > 40 ? 40 : len), p);
        else
            rc = parse_part(r, p, (size_t)(eq - p), eq + 1, len - (size_t)(eq - p) - 1, &seen,
                            err, errlen);
        if (end == NULL)
            break;
        p = end + 1;
    }
    if (rc == 0 && !(seen & 1u))
        rc = wm_einval(err, errlen, "FREQ is missing");
    if (rc == 0 && r->count != 0 && r->until_kind != 0)
        rc = wm_einval(err, errlen, "COUNT and UNTIL cannot both be given");
    if (rc == 0 && r->freq != FREQ_MONTHLY)
        for (int i = 0; i < r->n_byday; i++)
            if (r->byday[i].ord != 0) {
                rc = wm_einval(err, errlen, "BYDAY: an ordinal (%d%s) needs FREQ=MONTHLY",
                          r->byday[i].ord, wd_names[r->byday[i].wd]);
                break;
            }
    if (rc == 0 && r->freq == FREQ_WEEKLY && r->n_bymonthday > 0)
        rc = wm_einval(err, errlen, "BYMONTHDAY cannot be used with FREQ=WEEKLY");
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

/*
 * The zone's rules, read from its TZif file (RFC 8536; version 1 data, or the 64-bit data of
 * versions 2 and later) and, for instants after its last transition, from the POSIX TZ string
 * in its footer (e.g. "MST7MDT,M3.2.0,M11.1.0").  Leap second records are skipped.
 */
#define TZ_FILE_MAX (1 << 20)
#define TZ_MAX_TIMES 4096
#define TZ_MAX_TYPES 256

struct tz_rule_date {
    char kind; /* 'M': month.week.day, 'J': 1..365 without Feb 29, 'D': 0..365 */
    int m, w, d, n;
    int32_t secs; /* local time of the change, seconds after midnight (may be < 0 or > 24h) */
};

struct tz_posix {
    bool ok;      /* a footer rule was read */
    int32_t std;  /* UTC offset of standard time, seconds east */
    bool has_dst;
    int32_t dst;
    struct tz_rule_date start, end;
};

struct rrule_zone {
    int n_times, n_types;
    int64_t times[TZ_MAX_TIMES];
    uint8_t idx[TZ_MAX_TIMES];
    int32_t utoff[TZ_MAX_TYPES];
    struct tz_posix posix;
};

/* A bounds-checked reader over the file's bytes: every read fails on underrun. */
struct tz_cursor {
    const uint8_t *p;
    size_t left;
};

static bool
cur_skip(struct tz_cursor *c, size_t n)
{
    if (c->left < n)
        return false;
    c->p += n;
    c->left -= n;
    return true;
}

static bool
cur_be(struct tz_cursor *c, size_t n, uint64_t *v)
{
    uint64_t x = 0;

    if (c->left < n)
        return false;
    for (size_t i = 0; i < n; i++)
        x = x << 8 | c->p[i];
    *v = x;
    return cur_skip(c, n);
}

/* The six counts of a TZif header (isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt). */
static bool
tz_header(struct tz_cursor *c, char *version, uint32_t cnt[6])
{
    uint64_t v;

    if (c->left < 44 || memcmp(c->p, "TZif", 4) != 0)
        return false;
    *version = (char)c->p[4];
    if (!cur_skip(c, 20))
        return false;
    for (int i = 0; i < 6; i++) {
        if (!cur_be(c, 4, &v))
            return false;
        cnt[i] = (uint32_t)v;
    }
    return true;
}

/* [+-]hh[:mm[:ss]] (hh up to 167) at *s; advances *s.  Returns false if malformed. */
static bool
posix_time(const char **s, int32_t *out)
{
    const char *p = *s;
    int sign = 1;
    long part[3] = {0, 0, 0};

    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    for (int i = 0; i < 3; i++) {
        int digits = 0;
        if (i > 0) {
            if (*p != ':')
                break;
            p++;
        }
        while (isdigit((unsigned char)*p) && digits < 3) {
            part[i] = part[i] * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0 || (i > 0 && part[i] > 59) || part[0] > 167)
            return false;
    }
    *out = (int32_t)(sign * (part[0] * 3600 + part[1] * 60 + part[2]));
    *s = p;
    return true;
}

static bool
posix_name(const char **s)
{
    const char *p = *s;
    size_t n = 0;

    if (*p == '<') {
        for (p++; *p != '>'; p++, n++)
            if (*p == '\0' || (!isalnum((unsigned char)*p) && *p != '+' && *p != '-'))
                return false;
        p++;
    } else {
        for (; isalpha((unsigned char)*p); p++)
            n++;
    }
    *s = p;
    return n >= 3;
}

static bool
posix_date(const char **s, struct tz_rule_date *r)
{
    const char *p = *s;
    long v[3] = {0, 0, 0};

    r->secs = 2 * 3600;
    if (*p == 'M') {
        p++;
        for (int i = 0; i < 3; i++) {
            int digits = 0;
            if (i > 0 && *p++ != '.')
                return false;
            while (isdigit((unsigned char)*p) && digits < 2) {
                v[i] = v[i] * 10 + (*p++ - '0');
                digits++;
            }
            if (digits == 0)
                return false;
        }
        if (v[0] < 1 || v[0] > 12 || v[1] < 1 || v[1] > 5 || v[2] > 6)
            return false;
        r->kind = 'M';
        r->m = (int)v[0];
        r->w = (int)v[1];
        r->d = (int)v[2];
    } else {
        int digits = 0;
        r->kind = *p == 'J' ? 'J' : 'D';
        if (*p == 'J')
            p++;
        while (isdigit((unsigned char)*p) && digits < 3) {
            v[0] = v[0] * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0 || v[0] > 365 || (r->kind == 'J' && v[0] < 1))
            return false;
        r->n = (int)v[0];
    }
    if (*p == '/') {
        p++;
        if (!posix_time(&p, &r->secs))
            return false;
    }
    *s = p;
    return true;
}

/* Parses a POSIX TZ string such as "MST7MDT,M3.2.0,M11.1.0" or "<+0330>-3:30". */
static bool
posix_parse(const char *s, struct tz_posix *z)
{
    int32_t off;

    memset(z, 0, sizeof(*z));
    if (!posix_name(&s) || !posix_time(&s, &off) || off < -25 * 3600 || off > 25 * 3600)
        return false;
    z->std = -off;
    if (*s != '\0') {
        if (!posix_name(&s))
            return false;
        z->has_dst = true;
        z->dst = z->std + 3600;
        if (*s != ',' && *s != '\0') {
            if (!posix_time(&s, &off) || off < -25 * 3600 || off > 25 * 3600)
                return false;
            z->dst = -off;
        }
        if (*s != ',') /* no rule: the zone's own default rules are not known here */
            return false;
        s++;
        if (!posix_date(&s, &z->start) || *s++ != ',' || !posix_date(&s, &z->end))
            return false;
    }
    if (*s != '\0')
        return false;
    z->ok = true;
    return true;
}

/* The civil day of a rule's date in year y. */
static int64_t
rule_day(int64_t y, const struct tz_rule_date *r)
{
    if (r->kind == 'J')
        return civil_to_days(y, 1, 1) + r->n - 1 + (is_leap(y) && r->n >= 60 ? 1 : 0);
    if (r->kind == 'D')
        return civil_to_days(y, 1, 1) + r->n;
    int64_t first = civil_to_days(y, r->m, 1);
    int sun_first = (weekday(first) + 1) % 7; /* 0 = Sunday */
    int64_t d = first + (r->d - sun_first + 7) % 7 + 7 * (r->w - 1);
    while (d >= first + month_days(y, r->m))
        d -= 7;
    return d;
}

static int32_t
posix_offset(const struct tz_posix *z, int64_t t)
{
    int y, m, d;

    if (!z->has_dst)
        return z->std;
    days_to_civil(floor_div(t + z->std, 86400), &y, &m, &d);
    /* the changes happen at local time: DST starts on standard time, ends on DST */
    int64_t start = rule_day(y, &z->start) * 86400 + z->start.secs - z->std;
    int64_t end = rule_day(y, &z->end) * 86400 + z->end.secs - z->dst;
    bool dst = start < end ? t >= start && t < end : !(t >= end && t < start);
    return dst ? z->dst : z->std;
}

/* The UTC offset (seconds east) in force at t. */
static int32_t
zone_offset(const struct rrule_zone *z, int64_t t)
{
    int lo = 0, hi = z->n_times;

    if (z->n_times == 0 || t >= z->times[z->n_times - 1]) {
        if (z->posix.ok)
            return posix_offset(&z->posix, t);
        if (z->n_times == 0)
            return z->utoff[0];
    }
    if (t < z->times[0])
        return z->utoff[0];
    while (hi - lo > 1) { /* times[lo] <= t < times[hi] */
        int mid = lo + (hi - lo) / 2;
        if (z->times[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return z->utoff[z->idx[lo]];
}

/* A name that may be looked up: relative, no "..", [A-Za-z0-9/_+-]. */
static bool
tz_name_ok(const char *tz)
{
    size_t n = strlen(tz);

    if (n == 0 || n > 64 || tz[0] == '/' || tz[0] == '.' || strstr(tz, "..") != NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)tz[i]) && strchr("/_+-", tz[i]) == NULL)
            return false;
    return true;
}

/* Reads the zone tz from the tz database (TZDIR, else /usr/share/zoneinfo).  Returns a new
 * zone (free()) or NULL if the name is bad or the file missing or malformed. */
static struct rrule_zone *
zone_load(const char *tz)
{
    const char *dir = getenv("TZDIR");
    char path[512];
    uint8_t *buf = NULL;
    struct rrule_zone *z = NULL;
    struct tz_cursor c;
    uint32_t cnt[6];
    char version;
    size_t len = 0;
    FILE *f;
    struct stat st;
    bool ok = false;

    if (!tz_name_ok(tz))
        return NULL;
    snprintf(path, sizeof(path), "%s/%s", dir != NULL && dir[0] != '\0' ? dir
                                                                        : "/usr/share/zoneinfo",
             tz);
    f = fopen(path, "rbe");
    if (f == NULL)
        return NULL;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        st.st_size <= TZ_FILE_MAX)
        buf = malloc((size_t)st.st_size);
    if (buf != NULL)
        len = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    z = calloc(1, sizeof(*z));
    if (buf == NULL || z == NULL || len != (size_t)st.st_size)
        goto out;
    c = (struct tz_cursor){buf, len};
    if (!tz_header(&c, &version, cnt))
        goto out;
    size_t tsize = 4;
    if (version >= '2') {
        /* skip the version 1 data: the 64-bit data follows with its own header */
        if (!cur_skip(&c, (size_t)cnt[3] * 5 + (size_t)cnt[4] * 6 + cnt[5] +
                              (size_t)cnt[2] * 8 + cnt[1] + cnt[0]) ||
            !tz_header(&c, &version, cnt))
            goto out;
        tsize = 8;
    }
    if (cnt[3] > TZ_MAX_TIMES || cnt[4] == 0 || cnt[4] > TZ_MAX_TYPES)
        goto out;
    z->n_times = (int)cnt[3];
    z->n_types = (int)cnt[4];
    for (int i = 0; i < z->n_times; i++) {
        uint64_t v;
        if (!cur_be(&c, tsize, &v))
            goto out;
        z->times[i] = tsize == 8 ? (int64_t)v : (int64_t)(int32_t)(uint32_t)v;
        if (i > 0 && z->times[i] <= z->times[i - 1])
            goto out;
    }
    for (int i = 0; i < z->n_times; i++) {
        uint64_t v;
        if (!cur_be(&c, 1, &v) || v >= cnt[4])
            goto out;
        z->idx[i] = (uint8_t)v;
    }
    for (int i = 0; i < z->n_types; i++) {
        uint64_t off, isdst, abbr;
        if (!cur_be(&c, 4, &off) || !cur_be(&c, 1, &isdst) || !cur_be(&c, 1, &abbr))
            goto out;
        z->utoff[i] = (int32_t)(uint32_t)off;
        if (z->utoff[i] <= -25 * 3600 || z->utoff[i] >= 26 * 3600)
            goto out;
    }
    if (!cur_skip(&c, cnt[5] + (size_t)cnt[2] * (tsize + 4) + cnt[1] + cnt[0]))
        goto out;
    if (tsize == 8 && c.left >= 2 && c.p[0] == '\n') {
        /* the footer: "\n<POSIX TZ string>\n" (empty: no rule beyond the last transition) */
        char footer[128];
        size_t n = 0;
        while (n + 1 < c.left && c.p[1 + n] != '\n' && n < sizeof(footer) - 1) {
            footer[n] = (char)c.p[1 + n];
            n++;
        }
        footer[n] = '\0';
        if (n > 0 && !posix_parse(footer, &z->posix))
            goto out;
    }
    ok = true;
out:
    free(buf);
    if (!ok) {
        free(z);
        return NULL;
    }
    return z;
}

/*
 * Local time (seconds since 1970-01-01 in local civil time) to Unix seconds.  Of the offsets
 * in force a day either side, the ones that give back the same local time are taken, the
 * earlier instant if both do (a repeated hour: its first, daylight-saving pass); none do in a
 * skipped hour, which is then read with the offset before the change (02:30 becomes 03:30).
 */
static int64_t
zone_local_to_unix(const struct rrule_zone *z, int64_t local)
{
    int32_t before = zone_offset(z, local - 86400 - 26 * 3600);
    int32_t after = zone_offset(z, local + 86400 + 26 * 3600);
    int32_t cand[4] = {before, after, zone_offset(z, local - before),
                       zone_offset(z, local - after)};
    int64_t best = INT64_MAX;

    for (int i = 0; i < 4; i++) {
        int64_t t = local - cand[i];
        if (zone_offset(z, t) == cand[i] && t < best)
            best = t;
    }
    return best != INT64_MAX ? best : local - before;
}

bool
rrule_tz_valid(const char *tz)
{
    struct rrule_zone *z = zone_load(tz);

    free(z);
    return z != NULL;
}

int
rrule_local_to_unix(const char *tz, int year, int month, int day, int minute_of_day,
                    int64_t *out)
{
    struct rrule_zone *z;

    if (!date_valid(year, month, day) || minute_of_day < 0 || minute_of_day >= 24 * 60)
        return -EINVAL;
    z = zone_load(tz);
    if (z == NULL)
        return -EINVAL;
    *out = zone_local_to_unix(z, civil_to_days(year, month, day) * 86400 +
                                     (int64_t)minute_of_day * 60);
    free(z);
    return 0;
}

int
rrule_unix_to_local_date(const char *tz, int64_t t, int *year, int *month, int *day)
{
    int minute;

    return rrule_unix_to_local(tz, t, year, month, day, &minute);
}

int
rrule_unix_to_local(const char *tz, int64_t t, int *year, int *month, int *day, int *minute_of_day)
{
    struct rrule_zone *z = zone_load(tz);
    int64_t local;

    if (z == NULL)
        return -EINVAL;
    local = t + zone_offset(z, t);
    days_to_civil(floor_div(local, 86400), year, month, day);
    *minute_of_day = (int)((local - floor_div(local, 86400) * 86400) / 60);
    free(z);
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

/* rrule_windows in zone z from the civil day start_day. */
static int
windows_in(const struct rrule *r, const struct rrule_zone *z, int64_t start_day,
           int start_minute, int64_t duration_s, int64_t now, struct rrule_span *active,
           struct rrule_span *next)
{
    int64_t now_day, skip_before, horizon;
    int count = 0;

    if (r == NULL) {
        int64_t s = zone_local_to_unix(z, start_day * 86400 + (int64_t)start_minute * 60);
        if (s <= now && now < s + duration_s)
            *active = (struct rrule_span){s, s + duration_s};
        else if (s > now)
            *next = (struct rrule_span){s, s + duration_s};
        return 0;
    }
    now_day = floor_div(now + zone_offset(z, now), 86400);
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
            s = zone_local_to_unix(z, d * 86400 + (int64_t)start_minute * 60);
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

int
rrule_windows(const struct rrule *r, const char *tz, int year, int month, int day,
              int start_minute, int64_t duration_s, int64_t now, struct rrule_span *active,
              struct rrule_span *next)
{
    struct rrule_zone *z;
    int rc;

    active->start = active->end = -1;
    next->start = next->end = -1;
    if (!date_valid(year, month, day) || start_minute < 0 || start_minute >= 24 * 60 ||
        duration_s <= 0 || duration_s > 366LL * 86400)
        return -EINVAL;
    z = zone_load(tz);
    if (z == NULL)
        return -EINVAL;
    rc = windows_in(r, z, civil_to_days(year, month, day), start_minute, duration_s, now, active,
                    next);
    free(z);
    return rc;
}
