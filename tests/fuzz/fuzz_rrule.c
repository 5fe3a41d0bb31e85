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
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[512], err[256], canon[1024], again[1024];
    struct rrule *r = (struct rrule *)1, *r2 = NULL;
    size_t n = size < sizeof(text) - 1 ? size : sizeof(text) - 1;
    int rc;

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
