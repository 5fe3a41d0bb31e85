/*
 * arbtest.c - a site's arbiter driven by a test; see arbtest.h.
 */
#include "arbtest.h"

#include <check.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "msg.h"
#include "pairtest.h"
#include "testutil.h"

/* The failover_timeout a request carries (the witness's and etcd's silence threshold use it). */
#define AT_FAILOVER_MS 2000

static struct wio_loop *at_loop;

struct wio_loop *
at_init(void)
{
    tu_require(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
    signal(SIGPIPE, SIG_IGN);
    tu_require(wio_loop_new(&at_loop, 256) == 0);
    return at_loop;
}

void
at_close(struct at_site *const *sites, int n)
{
    for (int i = 0; i < n; i++)
        at_stop(sites[i]);
    /* cancelled timers and polls come back before the loop goes */
    for (int i = 0; i < 30; i++)
        if (wio_run_once(at_loop, 10) < 0)
            break;
    wio_loop_free(at_loop);
    at_loop = NULL;
    for (int i = 0; i < n; i++)
        config_free(&sites[i]->cfg);
    curl_global_cleanup();
}

static void
on_verdict(void *ctx, const struct arbiter_request *req, bool granted, const struct wm_state *e,
           const char *why)
{
    struct at_site *s = ctx;

    (void)req;
    s->verdicts++;
    s->granted = granted;
    s->verdict = *e;
    snprintf(s->why, sizeof(s->why), "%s", why);
}

static void
on_epoch_news(void *ctx, const struct wm_state *e)
{
    struct at_site *s = ctx;

    s->told++;
    s->news = *e;
}

static const struct arbiter_cb at_cb = {.on_verdict = on_verdict, .on_epoch_news = on_epoch_news};

void
at_start(struct at_site *s)
{
    s->verdicts = s->told = 0;
    s->why[0] = '\0';
    memset(&s->news, 0, sizeof(s->news));
    ck_assert_int_eq(arbiter_new(&s->arb, at_loop, &s->cfg, &at_cb, s), 0);
}

void
at_stop(struct at_site *s)
{
    arbiter_free(s->arb);
    s->arb = NULL;
}

void
at_report(struct at_site *s, uint8_t role, uint64_t epoch, uint64_t durable,
          const struct wm_state *mark)
{
    bool source = role == MSG_ROLE_SOURCE;
    struct arbiter_report r = {.role = role,
                               .epoch = epoch,
                               .durable_lsn = durable,
                               .mark = mark,
                               .timeline = 1,
                               .flush_lag_bytes = source ? 4096 : 0,
                               .flush_lag_s = source ? 0.004 : -1,
                               .apply_lag_s = -1};

    snprintf(r.sync_state, sizeof(r.sync_state), "%s",
             !source                               ? ""
             : mark != NULL && state_exposed(mark) ? "exposed"
                                                   : "sync");
    arbiter_report(s->arb, &r);
}

int
at_request(struct at_site *s, enum arbiter_ask ask, uint64_t epoch, uint64_t durable,
           uint64_t standby)
{
    struct arbiter_request req = {.ask = ask,
                                  .epoch = epoch,
                                  .durable_lsn = durable,
                                  .standby_lsn = standby,
                                  .failover_timeout_ms = AT_FAILOVER_MS};

    return arbiter_request(s->arb, &req);
}

bool
at_has_verdict(const struct at_site *s)
{
    return s->verdicts > 0;
}

void
at_ask(struct at_site *s, enum arbiter_ask ask, uint64_t epoch, uint64_t durable, uint64_t standby)
{
    int rc;

    s->verdicts = 0;
    rc = at_request(s, ask, epoch, durable, standby);
    ck_assert_msg(rc == 0, "%s: request failed: %s (%s)", s->name, strerror(-rc),
                  arbiter_describe(s->arb));
    ck_assert_msg(at_run_until(at_has_verdict, s, ARBITER_VOTE_TIMEOUT_MS / 1000.0 + 2),
                  "%s: no verdict", s->name);
    ck_assert_int_eq(s->verdicts, 1);
}

void
at_expect(const struct at_site *s, bool granted, const char *what)
{
    ck_assert_msg(s->granted == granted, "%s %s: %s", s->name, s->granted ? "granted" : "denied",
                  s->why);
    ck_assert_msg(strstr(s->why, what) != NULL, "%s: \"%s\" lacks \"%s\"", s->name, s->why, what);
}

void
at_run_for(double seconds)
{
    double end = pt_now_s() + seconds;

    while (pt_now_s() < end)
        ck_assert_int_ge(wio_run_once(at_loop, 20), 0);
}

bool
at_run_until(bool (*cond)(const struct at_site *), const struct at_site *s, double seconds)
{
    double end = pt_now_s() + seconds;

    while (!cond(s) && pt_now_s() < end)
        ck_assert_int_ge(wio_run_once(at_loop, 20), 0);
    return cond(s);
}

bool
at_reachable(const struct at_site *s)
{
    return arbiter_reachable(s->arb);
}
