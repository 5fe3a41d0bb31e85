/*
 * status.c - the agent's status board; contract in status.h.
 */
#include "status.h"

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
