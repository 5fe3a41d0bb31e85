/*
 * windows.h - maintenance windows as the agent lives them (the windows themselves and their
 * store are maint.h's): evaluated once a second from a copy of the store; while one is open,
 * automatic fail-over pauses; at the start of a window marked switchover, the agent that
 * serves the primary - and did at its previous evaluation too - asks for a switchover.
 *
 * The agent that becomes the primary by that switchover must not start another one back: a
 * switchover can complete between two evaluations, so each agent notes every switchover
 * window's start as it sees it open, and only an agent that was the source at its previous
 * evaluation requests one.  A window opened more than WINDOWS_SWITCHOVER_GRACE_S ago (an agent
 * started late in it) requests nothing.
 */
#ifndef WALMIRROR_AGENT_WINDOWS_H
#define WALMIRROR_AGENT_WINDOWS_H

#include <stdbool.h>
#include <stdint.h>

#include "maint.h"
#include "status.h"

#define WINDOWS_EVERY_MS 1000
#define WINDOWS_SWITCHOVER_GRACE_S 60

struct windows {
    struct maint_store *store; /* NULL: none (every answer is "none") */
    struct maint_window w[MAINT_MAX]; /* the loop's copy */
    unsigned n;
    bool active;      /* a window is open: automatic fail-over is paused */
    char text[128];   /* for the snapshot's maintenance */
    uint64_t at_ms;   /* last evaluation, monotonic */
    bool was_source;  /* the source at the last evaluation */
    struct {
        uint64_t id;
        int64_t start;
    } seen[MAINT_MAX]; /* switchover windows: the last start seen open, per id */
};

void windows_init(struct windows *ws, struct maint_store *store);

/*
 * Evaluates the windows if WINDOWS_EVERY_MS passed since the last time (source: whether this
 * agent serves the primary now).  A switchover due is filed on board.  Returns true when the
 * open/closed state changed.
 */
bool windows_tick(struct windows *ws, bool source, const char *comp, struct status_board *board);

#endif
