/*
 * report.h - walmirrorctl report: push the pair's state to a Statuspage-compatible service.
 *
 *   walmirrorctl [--url URL]... [-c FILE] report --statuspage URL --page-id ID
 *       --component-id ID [--metric-id ID] --api-key-file FILE [--interval 60s]
 *       [--component overall|database|mirror|link] [--once]
 *
 * Every interval it polls each agent named (GET /api/v2/summary.json, and GET /status for the
 * lag when a metric is wanted) and pushes to the service's REST API:
 *
 *   PATCH {URL}/v1/pages/{page}/components/{component}  {"component":{"status":"..."}}
 *         once at start, then only when the status changes;
 *   POST  {URL}/v1/pages/{page}/metrics/{metric}/data    {"data":{"timestamp":T,"value":S}}
 *         with --metric-id, once per interval: the worst flush or apply lag in seconds.
 *
 * Both carry "Authorization: OAuth KEY", the key read from --api-key-file.  The component's
 * status is the worst that any agent answering reports for it (the agents already speak
 * Statuspage's states: operational < degraded_performance < partial_outage < major_outage),
 * except that under_maintenance from any agent wins, as it does on an agent's own page (the
 * witness keeps no maintenance windows); "overall" is the worst of the three components.
 * When no agent answers REPORT_UNREACHABLE_POLLS polls in a row, the status is major_outage.
 *
 * Failure semantics, per request to the service: 429 waits Retry-After (seconds or an HTTP
 * date, at least 1 s; without one, as a 5xx) before any further request to the service; a
 * 5xx or a network error waits 1 s, doubling up to REPORT_BACKOFF_MAX_S, then sends what is
 * due then (a status not yet accepted is never dropped; once accepted it is not sent again);
 * 401, 403 and 404 are configuration errors that no retry mends: an error line naming the
 * key, page, component or metric, and exit 1; another 4xx (422: a status the service does not
 * know) drops that push with an error line.  With --once: one poll, one attempt at each push,
 * no waiting; exit 1 if any push failed or no agent answered.
 *
 * Lifecycle: main() fills a struct report_args with report_args_init() and report_option(),
 * checks it with report_args_check(), then calls report_run(), which returns the exit status
 * when stopped (*stop set by SIGINT / SIGTERM: 0) or on a fatal error (1).
 */
#ifndef WALMIRROR_TOOLS_REPORT_H
#define WALMIRROR_TOOLS_REPORT_H

#include <signal.h>
#include <stdbool.h>

#include "err.h"

#define REPORT_UNREACHABLE_POLLS 3 /* polls without any agent before major_outage */
#define REPORT_BACKOFF_MAX_S 60.0  /* the longest wait after a 5xx or a network error */

enum report_component {
    REPORT_OVERALL,
    REPORT_DATABASE,
    REPORT_MIRROR,
    REPORT_LINK,
};

/* The command line of report; strings point into argv. */
struct report_args {
    const char *statuspage; /* the API's base URL; "https://" added when it has no scheme */
    const char *page_id;    /* [A-Za-z0-9_-]+, as are the two ids below */
    const char *component_id;
    const char *metric_id; /* NULL: no lag metric */
    const char *api_key_file;
    double interval_s; /* [1, 86400], default 60 */
    enum report_component component;
    bool once;
    bool given; /* some report option was given */
};

void report_args_init(struct report_args *a);

/*
 * If argv[*i] is one of report's options, takes it (and its value, moving *i past it; either
 * "--name VALUE" or "--name=VALUE").  Returns 1 when taken, 0 when argv[*i] is not a report
 * option, -EINVAL with a message on stderr for a bad or repeated value.
 */
WM_MUSTCHECK int report_option(struct report_args *a, int argc, char **argv, int *i);

/* 0 when every required option is there, else -EINVAL with a message on stderr. */
WM_MUSTCHECK int report_args_check(const struct report_args *a);

/*
 * Runs the reporter against the n_agents base URLs in agents (without a trailing '/'), sending
 * agent_token (NULL: none) as their bearer token, until *stop is set or, with --once, after one
 * round.  libcurl must be initialised.  Returns the exit status: 0 or 1.
 */
int report_run(const struct report_args *a, const char *const *agents, int n_agents,
               const char *agent_token, const volatile sig_atomic_t *stop);

#endif
