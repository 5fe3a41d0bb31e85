/*
 * rrule.h - recurrence rules for maintenance windows: a subset of RFC 5545 RRULE, and the
 * windows it yields in local time of an IANA zone.
 *
 * Accepted: FREQ=DAILY|WEEKLY|MONTHLY (required), INTERVAL=1..1000, BYDAY=list of MO..SU
 * (with an ordinal 1..5 or -1..-5, e.g. -1SA or 2MO, only when FREQ=MONTHLY), BYMONTHDAY=list
 * of 1..31 or -31..-1 (not with WEEKLY), COUNT=1..100000, UNTIL=YYYYMMDD (a local date,
 * inclusive) or YYYYMMDDTHHMMSSZ (a UTC instant, inclusive); not both COUNT and UNTIL.  An
 * "RRULE:" prefix is allowed.  Anything else - other FREQs, BYSETPOS, BYHOUR, WKST, unknown
 * keys, a key given twice, a bad value - is rejected with a message naming the part.
 *
 * Occurrences are local dates from DTSTART's date on that the rule selects (a DTSTART the rule
 * does not select is not itself an occurrence, unlike RFC 5545); COUNT counts them.  Weeks
 * start on Monday.  A monthly rule without BYDAY / BYMONTHDAY repeats on DTSTART's day of the
 * month and skips months without that day.  Each occurrence starts at the local start time in
 * the zone, so a 22:00 window stays at 22:00 local across DST changes.  A start time in a
 * repeated hour (DST ends) is its first pass; one in a skipped hour (DST starts) is read with
 * the offset before the change (02:30 becomes 03:30).
 *
 * Time zones: each call reads the zone's file of the system tz database (TZDIR, else
 * /usr/share/zoneinfo) itself - TZif data and its POSIX TZ footer for later years - rather than
 * going through glibc's TZ / tzset / mktime, which are process-global (setting TZ from one
 * thread races with getenv and fork in others).  Nothing here keeps state between calls or
 * touches the environment, so every function is thread-safe.
 */
#ifndef WALMIRROR_AGENT_RRULE_H
#define WALMIRROR_AGENT_RRULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rrule;

/* One window: [start, end) in Unix seconds. */
struct rrule_span {
    int64_t start, end;
};

/*
 * Parses text into a new rule (*out, freed with rrule_free).  Returns 0, or -EINVAL with a
 * message naming the offending part in err (NUL-terminated; errlen > 0), or -ENOMEM.
 */
__attribute__((warn_unused_result)) int rrule_parse(const char *text, struct rrule **out,
                                                    char *err, size_t errlen);
void rrule_free(struct rrule *r);

/* Writes the rule back in canonical form (keys in a fixed order); returns the length that
 * snprintf would (>= len: truncated). */
int rrule_format(const struct rrule *r, char *buf, size_t len);

/* True if tz names a readable zone of the system tz database ("America/Denver", "UTC"). */
bool rrule_tz_valid(const char *tz);

/*
 * Local date and time in tz to Unix seconds (a repeated or skipped time as above).  Returns 0
 * or -EINVAL (bad zone, date or time).
 */
__attribute__((warn_unused_result)) int rrule_local_to_unix(const char *tz, int year, int month,
                                                            int day, int minute_of_day,
                                                            int64_t *out);
/* Unix seconds to the local date in tz.  Returns 0 or -EINVAL. */
__attribute__((warn_unused_result)) int rrule_unix_to_local_date(const char *tz, int64_t t,
                                                                 int *year, int *month,
                                                                 int *day);
/* Unix seconds to the local date and time (minutes after midnight) in tz.  Returns 0 or
 * -EINVAL. */
__attribute__((warn_unused_result)) int
rrule_unix_to_local(const char *tz, int64_t t, int *year, int *month, int *day, int *minute_of_day);

/*
 * The windows of a series: occurrences of r (NULL: a one-off, the single occurrence on the
 * start date) starting at the local time start_minute (minutes after midnight) in zone tz,
 * first date year-month-day, each lasting duration_s (> 0).  *active gets the window open
 * at now (the latest started, if windows overlap) and *next the first one starting after now;
 * a field with no such window gets start = end = -1.  Returns 0 or -EINVAL (bad zone, date,
 * time or duration).
 */
__attribute__((warn_unused_result)) int rrule_windows(const struct rrule *r, const char *tz,
                                                      int year, int month, int day,
                                                      int start_minute, int64_t duration_s,
                                                      int64_t now, struct rrule_span *active,
                                                      struct rrule_span *next);

#endif
