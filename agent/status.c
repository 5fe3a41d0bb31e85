/*
 * status.c - the agent's status board; contract in status.h.
 */
#include "status.h"

#include <math.h>
#include <string.h>
#include <time.h>

void
status_board_init(struct status_board *b)
{
    struct timespec ts;

    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->lock, NULL);
    /* Request ids unique across agents and restarts: an operation that crosses the link
     * (a switchover) keeps the id it was asked with, on both sides. */
    clock_gettime(CLOCK_REALTIME, &ts);
    b->next_op_id = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void
status_board_destroy(struct status_board *b)
{
    pthread_mutex_destroy(&b->lock);
}

void
status_publish(struct status_board *b, const struct status_snapshot *s)
{
    pthread_mutex_lock(&b->lock);
    b->snap = *s;
    pthread_mutex_unlock(&b->lock);
}

void
status_read(struct status_board *b, struct status_snapshot *out)
{
    pthread_mutex_lock(&b->lock);
    *out = b->snap;
    pthread_mutex_unlock(&b->lock);
}

void
status_request(struct status_board *b, enum status_request r)
{
    pthread_mutex_lock(&b->lock);
    b->requests |= 1u << r;
    pthread_mutex_unlock(&b->lock);
}

unsigned
status_take(struct status_board *b)
{
    unsigned r;

    pthread_mutex_lock(&b->lock);
    r = b->requests;
    b->requests = 0;
    pthread_mutex_unlock(&b->lock);
    return r;
}

uint64_t
status_request_op(struct status_board *b, struct status_op_request *r)
{
    pthread_mutex_lock(&b->lock);
    r->id = ++b->next_op_id;
    b->op = *r;
    pthread_mutex_unlock(&b->lock);
    return r->id;
}

bool
status_take_op(struct status_board *b, struct status_op_request *out)
{
    bool any;

    pthread_mutex_lock(&b->lock);
    any = b->op.id != 0;
    *out = b->op;
    b->op.id = 0;
    pthread_mutex_unlock(&b->lock);
    return any;
}

/* ---- metrics ---- */

static const double hist_bounds[STATUS_HIST_COUNT][STATUS_HIST_BUCKETS] = {
    [STATUS_HIST_FSYNC] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
    [STATUS_HIST_ACK_RTT] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                             2.5},
    [STATUS_HIST_UNAVAIL] = {0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300},
};

const double *
status_hist_bounds(enum status_hist_kind k)
{
    return hist_bounds[k];
}

void
status_hist_observe(struct status_hist *h, enum status_hist_kind k, double v)
{
    if (!isfinite(v) || v < 0)
        return;
    for (int i = 0; i < STATUS_HIST_BUCKETS; i++)
        if (v <= hist_bounds[k][i])
            h->le[i]++;
    h->count++;
    h->sum += v;
}

static double
worse_s(double a, double b)
{
    return a > b ? a : b; /* unknown (negative) loses to any known value */
}

void
status_lag_note(struct status_lag_history *h, uint64_t now_us, const struct status_lag_sample *v)
{
    struct status_lag_sample *c = &h->cur;

    if (!h->cur_any) {
        *c = *v;
        c->unix_us = now_us;
        h->cur_any = true;
    } else {
        if (v->flush_bytes > c->flush_bytes)
            c->flush_bytes = v->flush_bytes;
        if (v->apply_bytes > c->apply_bytes)
            c->apply_bytes = v->apply_bytes;
        c->flush_s = worse_s(c->flush_s, v->flush_s);
        c->apply_s = worse_s(c->apply_s, v->apply_s);
    }
    if (now_us < c->unix_us + STATUS_LAG_EVERY_US && now_us >= c->unix_us)
        return;
    /* The interval is over (or the clock went back): it becomes a sample. */
    if (h->n == STATUS_LAG_SAMPLES) {
        h->head = (h->head + 1) % STATUS_LAG_SAMPLES;
        h->n--;
    }
    h->s[(h->head + h->n) % STATUS_LAG_SAMPLES] = *c;
    h->s[(h->head + h->n) % STATUS_LAG_SAMPLES].unix_us = now_us;
    h->n++;
    h->cur_any = false;
}

const struct status_lag_sample *
status_lag_at(const struct status_lag_history *h, unsigned i)
{
    return &h->s[(h->head + i) % STATUS_LAG_SAMPLES];
}

void
status_incident_add(struct status_incidents *l, const struct status_incident *e)
{
    if (l->n == STATUS_INCIDENTS_MAX) {
        l->head = (l->head + 1) % STATUS_INCIDENTS_MAX;
        l->n--;
    }
    l->e[(l->head + l->n) % STATUS_INCIDENTS_MAX] = *e;
    l->n++;
}

const struct status_incident *
status_incident_at(const struct status_incidents *l, unsigned i)
{
    return &l->e[(l->head + i) % STATUS_INCIDENTS_MAX];
}
