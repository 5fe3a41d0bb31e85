/*
 * statuspage.h - the status page for people (GET /) and its machine twin in the shape of
 * Statuspage's public summary (GET /api/v2/summary.json), both made from one status snapshot.
 *
 * Three components, each in one of Statuspage's states, by the rule below (the first that
 * applies wins; "lag" is the worse of the flush and apply stages, bytes or seconds):
 *
 *   all three     under_maintenance   a maintenance window is open (maintenance "active...")
 *                 partial_outage      the snapshot is older than STATUSPAGE_STALE_US: the
 *                                     agent's loop is not running, nothing is known
 *   database      major_outage        a switchover or fail-over runs (writes are paused), or
 *   (the primary)                     on the source: the primary does not stream to its agent
 *                 partial_outage      on the sink: the link is down (the primary is not seen
 *                                     from here); on a fenced agent: not observed from here
 *                 operational         otherwise
 *   mirror        major_outage        fenced, rejoining, the link is down, or on the sink: the
 *   (the standby)                     spool has no space (spool_stall; nothing is mirrored and
 *                                     synchronous commits wait)
 *                 partial_outage      lag >= partial_bytes or partial_s
 *                 degraded_performance lag >= degraded_bytes or degraded_s, or on the sink:
 *                                     its standby does not stream from the WAL server
 *                 operational         otherwise
 *   replication   major_outage        the link is down
 *   link          partial_outage      the link is up but WAL does not flow (sync state down)
 *                 degraded_performance catching up (more than 16 MB behind)
 *                 operational         otherwise
 *
 * On a witness (which knows only whom it hears): database operational while the witness hears
 * the primary site, else partial_outage; mirror and link operational while it hears both
 * sites, else partial_outage.
 *
 * The lag thresholds are a struct statuspage_thresholds: the configuration keys
 * status_degraded_lag_size / _time and status_partial_lag_size / _time (config.h), by default
 * STATUSPAGE_DEGRADED_BYTES / _SECONDS (16 MiB, 5 s) and STATUSPAGE_PARTIAL_BYTES / _SECONDS
 * (1 GiB, 60 s).  Every function below that evaluates the rule takes them; NULL stands for
 * the defaults.
 *
 * The page's overall indicator is the worst component: critical (a major outage), major (a
 * partial outage), minor (degraded), maintenance, none.
 */
#ifndef WALMIRROR_AGENT_STATUSPAGE_H
#define WALMIRROR_AGENT_STATUSPAGE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "status.h"

struct wm_config;
struct maint_window;

#define STATUSPAGE_DEGRADED_BYTES (16ULL << 20)
#define STATUSPAGE_DEGRADED_SECONDS 5.0
#define STATUSPAGE_PARTIAL_BYTES (1ULL << 30)
#define STATUSPAGE_PARTIAL_SECONDS 60.0
#define STATUSPAGE_STALE_US 5000000ULL /* a snapshot older than this: the loop is stuck */
#define STATUSPAGE_REFRESH_S 10        /* the page reloads itself this often */

/* The mirror's lag thresholds; degraded_* <= partial_* (config.c checks the keys). */
struct statuspage_thresholds {
    uint64_t degraded_bytes;
    double degraded_s;
    uint64_t partial_bytes;
    double partial_s;
};

/* The defaults (the constants above). */
void statuspage_thresholds_default(struct statuspage_thresholds *t);
/* The thresholds of a loaded configuration; the defaults for a configuration without them
 * (a witness's: the keys are a site's). */
void statuspage_thresholds_from_config(struct statuspage_thresholds *t,
                                       const struct wm_config *cfg);

/* Worse states have higher values, maintenance aside (it overrides). */
enum statuspage_state {
    STATUSPAGE_OPERATIONAL,
    STATUSPAGE_DEGRADED,
    STATUSPAGE_PARTIAL,
    STATUSPAGE_MAJOR,
    STATUSPAGE_MAINTENANCE,
};

enum { STATUSPAGE_DATABASE, STATUSPAGE_MIRROR, STATUSPAGE_LINK, STATUSPAGE_COMPONENTS };

struct statuspage_component {
    const char *id; /* "database", "mirror", "link": stable */
    char name[96];  /* "site-a database", "site-b mirror", "replication link" */
    enum statuspage_state state;
    char why[192]; /* the rule that applied, for people */
};

/* Statuspage's name of a state: "operational", "degraded_performance", ... */
const char *statuspage_state_name(enum statuspage_state st);
/* True if the snapshot is missing (never published) or older than STATUSPAGE_STALE_US. */
bool statuspage_stale(const struct status_snapshot *s, uint64_t now_unix_us);
/* Evaluates the rule above with thresholds th (NULL: the defaults) into
 * out[STATUSPAGE_COMPONENTS]; returns the overall state. */
enum statuspage_state statuspage_components(const struct status_snapshot *s,
                                            const struct statuspage_thresholds *th,
                                            uint64_t now_unix_us, struct statuspage_component *out);
/*
 * The HTML page (inline CSS and SVG, no scripts, no external assets) in a malloc'd buffer.
 * windows[n] are the agent's maintenance windows (maint.h; NULL and 0 where none are kept):
 * the page lists each with its next MAINT_NEXT occurrences in its own zone and in UTC.
 * Returns 0 or -ENOMEM.
 */
WM_MUSTCHECK int statuspage_html(const struct status_snapshot *s,
                                 const struct statuspage_thresholds *th,
                                 const struct maint_window *windows, unsigned n,
                                 uint64_t now_unix_us, char **out, size_t *len);
/* Statuspage API v2 documents (th as for statuspage_components); NULL when out of memory.
 *   summary:   page, components, incidents (one under way), scheduled_maintenances (each
 *              window's next MAINT_NEXT occurrences from windows[n], soonest first, the open
 *              one "in_progress" and the others "scheduled", with scheduled_for and
 *              scheduled_until; with windows NULL, only a window that the snapshot's
 *              maintenance text says is open), status {indicator, description}
 *   status:    page, status
 *   incidents: page, incidents: one under way, then the incident log (resolved, newest first,
 *              with "write_unavailability_s") */
json_t *statuspage_summary(const struct status_snapshot *s, const struct statuspage_thresholds *th,
                           const struct maint_window *windows, unsigned n, uint64_t now_unix_us);
json_t *statuspage_status(const struct status_snapshot *s, const struct statuspage_thresholds *th,
                          uint64_t now_unix_us);
json_t *statuspage_incidents(const struct status_snapshot *s,
                             const struct statuspage_thresholds *th, uint64_t now_unix_us);

#endif
