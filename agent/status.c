/*
 * status.c - the agent's status board; contract in status.h.
 */
#include "status.h"

#include <string.h>

void
status_board_init(struct status_board *b)
{
    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->lock, NULL);
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
