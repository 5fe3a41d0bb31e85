/*
 * fuzz_rrule.c - libFuzzer target for the maintenance windows' recurrence rules (rrule.h).
 *
 * The input is an RRULE text (cut at the first NUL).  Besides crashes, sanitizer reports and
 * leaks, these break rrule.h's contract and abort:
 *   - a refusal other than -EINVAL / -ENOMEM, or one with an empty message or *out set;
 *   - an accepted rule whose canonical form (rrule_format) does not parse back to the same
 *     canonical form;
 *   - windows that contradict their definition: an active window not containing now, a next
 *     window not after now, or a length other than the duration asked.
 * The windows are computed in UTC and in America/Denver (two DST changes a year) for a start
 * date and a "now" taken from the input's length, so the corpus explores both.
 *
 * An input starting with "TZif" is a zone file instead: written to a private TZDIR and read
 * through rrule_local_to_unix / rrule_unix_to_local_date (the TZif reader and the POSIX TZ
 * footer parser), which must either refuse it (-EINVAL) or give a local date back that is
 * within two days of the instant.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rrule.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_windows(const struct rrule *r, const char *tz, size_t size)
{
    struct rrule_span act, next;
    int64_t dur = 3600 * (int64_t)(1 + size % 30);
    int64_t now = 1767225600 + (int64_t)(size % 97) * 86400 * 11; /* from 2026-01-01 UTC */

    if (rrule_windows(r, tz, 2026, 1 + (int)(size % 12), 1 + (int)(size % 28),
                      (int)(size * 37 % 1440), dur, now, &act, &next) != 0)
        abort();
    if (act.start != -1 && (act.start > now || act.end <= now || act.end - act.start != dur))
        abort();
    if (next.start != -1 && (next.start <= now || next.end - next.start != dur))
        abort();
}

static char tzdir[64];
static char zone_path[128];

static void
remove_tzdir(void)
{
    char sub[128];

    unlink(zone_path);
    snprintf(sub, sizeof(sub), "%s/Fuzz", tzdir);
    rmdir(sub);
    rmdir(tzdir);
}

/* A zone file: written as TZDIR/Fuzz/Zone, then converted both ways. */
static void
check_zone(const uint8_t *data, size_t size)
{
    char sub[128];
    FILE *f;
    int64_t t;
    int y, m, d;

    if (tzdir[0] == '\0') {
        snprintf(tzdir, sizeof(tzdir), "/tmp/fuzz-rrule-tz.XXXXXX");
        if (mkdtemp(tzdir) == NULL)
            abort();
        snprintf(sub, sizeof(sub), "%s/Fuzz", tzdir);
        if (mkdir(sub, 0700) != 0)
            abort();
        snprintf(zone_path, sizeof(zone_path), "%s/Zone", sub);
        atexit(remove_tzdir);
    }
    f = fopen(zone_path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    setenv("TZDIR", tzdir, 1); /* only for this input: the rules use the system's zones */
    if (rrule_local_to_unix("Fuzz/Zone", 2026, 3, 8, 150, &t) == 0) {
        int64_t local = 1772928000 + 150 * 60; /* 2026-03-08 02:30 as if in UTC */
        if (t < local - 3 * 86400 || t > local + 3 * 86400)
            abort();
    }
    /* 1788000000 is 2026-08-29 10:40 UTC */
    if (rrule_unix_to_local_date("Fuzz/Zone", 1788000000, &y, &m, &d) == 0 &&
        !(y == 2026 && ((m == 8 && d >= 27) || (m == 9 && d <= 2))))
        abort();
    unsetenv("TZDIR");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[512], err[256], canon[1024], again[1024];
    struct rrule *r = (struct rrule *)1, *r2 = NULL;
    size_t n = size < sizeof(text) - 1 ? size : sizeof(text) - 1;
    int rc;

    if (size >= 4 && memcmp(data, "TZif", 4) == 0) {
        check_zone(data, size);
        return 0;
    }
    memcpy(text, data, n);
    text[n] = '\0';
    rc = rrule_parse(text, &r, err, sizeof(err));
    if (rc != 0) {
        if ((rc != -EINVAL && rc != -ENOMEM) || r != NULL || err[0] == '\0' ||
            strnlen(err, sizeof(err)) == sizeof(err))
            abort();
        return 0;
    }
    if (rrule_format(r, canon, sizeof(canon)) >= (int)sizeof(canon))
        abort();
    if (rrule_parse(canon, &r2, err, sizeof(err)) != 0)
        abort();
    if (rrule_format(r2, again, sizeof(again)) >= (int)sizeof(again) || strcmp(canon, again) != 0)
        abort();
    rrule_free(r2);
    check_windows(r, "UTC", size);
    check_windows(r, "America/Denver", size);
    rrule_free(r);
    return 0;
}
