/*
 * httpapi.h - the agent's HTTP API on http_listen (libmicrohttpd, its own polling thread;
 * JSON by jansson).
 *
 *   GET  /status         the status snapshot as JSON (status.h; LSNs also as "X/X" strings)
 *   GET  /metrics        Prometheus text (metrics.h)
 *   GET  /health         200 while the agent's loop publishes its status, else 503
 *   GET  /primary        200 only on the writable primary's site, else 503
 *   GET  /standby[?lag=SIZE|DURATION]
 *                        200 on a mirror site whose standby streams, within the lag; 400 on a
 *                        bad lag; 503 otherwise (health checks answer JSON {"ok","reason",...})
 *   GET  /               the status page (statuspage.h), HTML
 *   GET  /api/v2/summary.json   the same in the shape of Statuspage's public summary;
 *        /api/v2/status.json, /api/v2/incidents.json as Statuspage's (the incident log)
 *   POST /pause          pause automatic fail-over   -> 202 {"requested":"pause"}
 *   POST /resume         resume it                   -> 202 {"requested":"resume"}
 *   GET  /maintenance    the maintenance windows (maint.h) with their next / active instants
 *   POST /maintenance?rrule=R&start=HH:MM[&from=DATE] | ?at=DATE+HH:MM, &duration=D&tz=Z
 *                        [&class=C][&switchover=1]  -> 201 {"added":{...}}; 400 {"error"}
 *   DELETE /maintenance/ID                           -> 200 {"removed":ID}; 404 if none
 *   anything else        404 / 405 with a JSON {"error": "..."} body
 *
 * Access: when bound to a loopback address, a token is optional.  When http_listen is not a
 * loopback address, http_token_file is required (httpapi_start refuses otherwise).  With a
 * token, every request on any address must carry "Authorization: Bearer <token>" (compared in
 * constant time), else 401.  Requests that change something (every method but GET and HEAD)
 * are refused when they carry a foreign Origin (403) or a Content-Type other than
 * application/json (415): what a web page can make a browser send cross-site.
 *
 * Connections: at most 64 at a time, at most 8 from one client address, and the last 16 only
 * for addresses that hold fewer than 2 (so that one client cannot hold every slot and health
 * checks from elsewhere keep getting in); one idle for 3 s is closed.  Refusals are logged once
 * per burst, naming the address.
 */
#ifndef WALMIRROR_AGENT_HTTPAPI_H
#define WALMIRROR_AGENT_HTTPAPI_H

#include "err.h"
#include "status.h"
#include "statuspage.h"

struct httpapi;

/* Starts serving on hostport ("127.0.0.1:8008"; port 0 picks one).  token_file may be NULL.
 * On failure returns a negative errno with a message in err. */
WM_MUSTCHECK int httpapi_start(struct httpapi **out, const char *hostport, const char *token_file,
                               struct status_board *board, char *err, size_t errlen);
/*
 * The checks httpapi_start makes before it starts anything, for walmirror-agent to make at
 * start-up and with --check-config: hostport parses and resolves, a non-loopback address has
 * a token file, the token file is a regular file that other users cannot read or write and
 * holds 1 to 4096 printable ASCII bytes without spaces (trailing whitespace aside).  Returns 0
 * or a negative errno with one line in err.
 */
WM_MUSTCHECK int httpapi_check(const char *hostport, const char *token_file, char *err,
                               size_t errlen);
struct maint_store;
/* Serves the maintenance windows of m (owned by the caller; must outlive the API, or be
 * unset with NULL first).  Without one, /maintenance answers 503. */
void httpapi_set_maint(struct httpapi *h, struct maint_store *m);
/* The lag thresholds of the status page (/, /api/v2/...): a copy of *th; NULL, or never
 * called: statuspage.h's defaults. */
void httpapi_set_thresholds(struct httpapi *h, const struct statuspage_thresholds *th);
/* The port actually bound. */
int httpapi_port(const struct httpapi *h);
void httpapi_stop(struct httpapi *h);

#endif
