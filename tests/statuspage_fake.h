/*
 * statuspage_fake.h - a local stand-in for the Statuspage SaaS (the one fake test_report.c
 * allows): libmicrohttpd on 127.0.0.1, serving exactly this subset of its REST API v1:
 *
 *   PATCH /v1/pages/{page}/components/{component}   body {"component":{"status":S}}
 *         200 with the component (id, page_id, status S, updated_at); 401 without or with a
 *         wrong "Authorization: OAuth KEY"; 404 for another page or component; 422 when S is
 *         not one of operational, degraded_performance, partial_outage, major_outage,
 *         under_maintenance; 400 when the body is not such JSON
 *   POST  /v1/pages/{page}/metrics/{metric}/data    body {"data":{"timestamp":T,"value":V}}
 *         201 with the data point; 401 / 404 as above; 400 for a bad body
 *   anything else: 404 (405 for a known path with another method)
 *
 * It records every request (method, path, Authorization, Content-Type, body, arrival time on
 * CLOCK_MONOTONIC and CLOCK_REALTIME, the status it answered) for the test to inspect, and can
 * be scripted to answer the next N requests with a fixed status (429 with a Retry-After value,
 * or 500) before any other check.  Thread-safe: the server runs its own thread.
 */
#ifndef WALMIRROR_TESTS_STATUSPAGE_FAKE_H
#define WALMIRROR_TESTS_STATUSPAGE_FAKE_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct spfake;

struct spfake_request {
    char method[16];
    char path[256];
    char auth[256];  /* the Authorization header, "" if none */
    char ctype[128]; /* the Content-Type header, "" if none */
    char body[2048]; /* NUL-terminated; cut at 2047 bytes */
    double mono_s;   /* arrival (headers received), CLOCK_MONOTONIC seconds */
    double real_s;   /* the same on CLOCK_REALTIME */
    int answered;    /* the status sent back */
};

/*
 * Starts the fake on 127.0.0.1:port (0 picks a free one) accepting the API key key for page
 * page_id with one component and one metric.  Returns 0 or a negative errno.
 */
WM_MUSTCHECK int spfake_start(struct spfake **out, int port, const char *key, const char *page_id,
                              const char *component_id, const char *metric_id);
int spfake_port(const struct spfake *f);
/* Answers the next n requests with status (e.g. 429 or 500), with the header Retry-After:
 * retry_after when it is not NULL. */
void spfake_script(struct spfake *f, int n, int status, const char *retry_after);
/* How many requests arrived so far. */
size_t spfake_count(struct spfake *f);
/* Copies request i (0 = the first); false if there is no such request. */
bool spfake_get(struct spfake *f, size_t i, struct spfake_request *out);
/* The component's status as the last accepted PATCH set it ("" before any). */
void spfake_component_status(struct spfake *f, char *buf, size_t cap);
void spfake_stop(struct spfake *f);

#endif
