/*
 * arbtest.h - a site's arbiter (agent/arbiter.h) driven by a test as the site agent drives it:
 * its reports and requests on the test's wio loop, and what the arbiter told it (verdicts,
 * epoch news).  Used by the etcd suites; an arbiter of any kind fits.
 *
 * Lifecycle: at_init once; per site fill at_site's name and cfg, at_start, report and
 * ask, at_stop; at_close at the end.  Assertions are Check's, so these run inside a test.
 */
#ifndef WALMIRROR_TESTS_ARBTEST_H
#define WALMIRROR_TESTS_ARBTEST_H

#include <stdbool.h>
#include <stdint.h>

#include "arbiter.h"
#include "config.h"
#include "state.h"
#include "wio.h"

struct at_site {
    const char *name;
    struct wm_config cfg; /* filled by the test before at_start */
    struct arbiter *arb;
    int verdicts; /* on_verdict calls since the last request */
    bool granted;
    struct wm_state verdict; /* the record the last verdict carried */
    char why[1100];
    int told;             /* on_epoch_news calls */
    struct wm_state news; /* the record the last news carried */
};

/* libcurl's global state, SIGPIPE ignored, and the loop the sites run on (returned). */
struct wio_loop *at_init(void);
/* Stops the sites' arbiters, lets their cancelled timers and polls complete, frees the loop,
 * the sites' configurations and libcurl's global state. */
void at_close(struct at_site *const *sites, int n);

/* arbiter_new for s (counters reset); at_stop frees the arbiter. */
void at_start(struct at_site *s);
void at_stop(struct at_site *s);

/*
 * What the agent would report: role, epoch, durable LSN and its record of its epoch (mark, may
 * be NULL); a source reports timeline 1, sync state "sync" ("exposed" when its mark says so),
 * a flush lag of 4 kB and 4 ms; a sink no lag.
 */
void at_report(struct at_site *s, uint8_t role, uint64_t epoch, uint64_t durable,
               const struct wm_state *mark);

/* arbiter_request for epoch + 1, as arbiter.h's struct arbiter_request says; its result. */
int at_request(struct at_site *s, enum arbiter_ask ask, uint64_t epoch, uint64_t durable,
               uint64_t standby);
/* at_request, then runs the loop until the verdict (which must come, once). */
void at_ask(struct at_site *s, enum arbiter_ask ask, uint64_t epoch, uint64_t durable,
            uint64_t standby);
/* The last verdict: granted or not, its text containing what. */
void at_expect(const struct at_site *s, bool granted, const char *what);

void at_run_for(double seconds);
/* Runs the loop until cond(s) or seconds have passed; whether cond held. */
bool at_run_until(bool (*cond)(const struct at_site *), const struct at_site *s, double seconds);
bool at_reachable(const struct at_site *s);
bool at_has_verdict(const struct at_site *s); /* verdicts > 0 */

#endif
