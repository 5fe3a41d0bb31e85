/*
 * lag.c - lag per confirmation stage; contract in lag.h.
 */
#include "lag.h"

#include <string.h>

void
lag_reset(struct lag_tracker *t)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < LAG_STAGES; i++)
        t->lag_s[i] = -1;
}

static unsigned
at(const struct lag_tracker *t, unsigned i)
{
    return (t->head + i) % LAG_SAMPLES;
}

/* The newest sample may take more WAL only while no stage has confirmed it: WAL added to a
 * confirmed sample would count as confirmed, and a stage stalled on it as not waiting. */
static bool
extendable(const struct lag_tracker *t)
{
    if (t->n == 0)
        return false;
    for (int i = 0; i < LAG_STAGES; i++)
        if (t->next[i] >= t->n)
            return false;
    return true;
}

static bool
sent(struct lag_tracker *t, uint64_t lsn, uint64_t now_us, bool bounded)
{
    /* In the same millisecond, or with the ring full, the newest sample takes the WAL: the
     * oldest, the one a stalled stage waits on, stays. */
    if (extendable(t) && (now_us - t->s[at(t, t->n - 1)].at_us < 1000 || t->n == LAG_SAMPLES)) {
        t->s[at(t, t->n - 1)].lsn = lsn;
        return true;
    }
    if (t->n == LAG_SAMPLES) {
        if (bounded)
            return false;
        t->head = (t->head + 1) % LAG_SAMPLES;
        t->n--;
        for (int i = 0; i < LAG_STAGES; i++)
            if (t->next[i] > 0)
                t->next[i]--;
    }
    t->s[at(t, t->n)].lsn = lsn;
    t->s[at(t, t->n)].at_us = now_us;
    t->n++;
    return true;
}

void
lag_sent(struct lag_tracker *t, uint64_t lsn, uint64_t now_us)
{
    (void)sent(t, lsn, now_us, false);
}

bool
lag_sent_bounded(struct lag_tracker *t, uint64_t lsn, uint64_t now_us)
{
    return sent(t, lsn, now_us, true);
}

unsigned
lag_confirmed(struct lag_tracker *t, enum lag_stage stage, uint64_t lsn, uint64_t now_us)
{
    unsigned min_next, matched = 0;

    while (t->next[stage] < t->n && t->s[at(t, t->next[stage])].lsn <= lsn) {
        t->lag_s[stage] = (double)(now_us - t->s[at(t, t->next[stage])].at_us) / 1e6;
        t->next[stage]++;
        matched++;
    }
    /* Drop the samples every stage has passed. */
    min_next = t->next[0];
    for (int i = 1; i < LAG_STAGES; i++)
        if (t->next[i] < min_next)
            min_next = t->next[i];
    t->head = (t->head + min_next) % LAG_SAMPLES;
    t->n -= min_next;
    for (int i = 0; i < LAG_STAGES; i++)
        t->next[i] -= min_next;
    return matched;
}

uint64_t
lag_waiting_us(const struct lag_tracker *t, enum lag_stage stage, uint64_t now_us)
{
    uint64_t since;

    if (t->next[stage] >= t->n)
        return 0;
    since = t->s[at(t, t->next[stage])].at_us;
    return now_us > since ? now_us - since : 0;
}

double
lag_now(const struct lag_tracker *t, enum lag_stage stage, uint64_t now_us)
{
    double v = t->lag_s[stage];
    double waited = (double)lag_waiting_us(t, stage, now_us) / 1e6;

    if (t->next[stage] < t->n && waited > v)
        v = waited;
    return v;
}
