/*
 * metrics.h - the status snapshot (status.h) as Prometheus text, exposition format 0.0.4:
 * what GET /metrics serves.
 *
 * Names carry the walmirror_ prefix and base units (_bytes, _seconds, _total).  Every family
 * has # HELP and # TYPE lines; histograms have cumulative buckets ending with le="+Inf" equal
 * to _count.  Lags whose value in seconds is unknown are left out, not written as NaN.  The
 * list of families is in docs/operations.md ("Metrics").
 */
#ifndef WALMIRROR_AGENT_METRICS_H
#define WALMIRROR_AGENT_METRICS_H

#include <stddef.h>

#include "err.h"
#include "status.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Renders s into a NUL-terminated malloc'd buffer (*out, *len bytes without the NUL; the caller
 * frees it).  Returns 0, or -ENOMEM. */
WM_MUSTCHECK int metrics_render(const struct status_snapshot *s, char **out, size_t *len);

#endif
