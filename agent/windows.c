/*
 * windows.c - maintenance windows as the agent lives them; contract in windows.h.
 */
#include "windows.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "log.h"

void
windows_init(struct windows *ws, struct maint_store *store)
{
    memset(ws, 0, sizeof(*ws));
    ws->store = store;
    snprintf(ws->text, sizeof(ws->text), "none");
}

bool
windows_tick(struct windows *ws, bool source, const char *comp, struct status_board *board)
{
    int64_t now = (int64_t)(clock_unix_us() / 1000000);
    bool was = ws->active, was_source = ws->was_source || ws->at_ms == 0;
    int n;

    if (ws->store == NULL)
        return false;
    if (ws->at_ms != 0 && clock_mono_ms() - ws->at_ms < WINDOWS_EVERY_MS)
        return false;
    ws->at_ms = clock_mono_ms();
    n = maint_store_list(ws->store, ws->w, MAINT_MAX, false);
    if (n >= 0)
        ws->n = (unsigned)n;
    ws->active = maint_describe(ws->w, ws->n, now, ws->text, sizeof(ws->text));
    if (ws->active != was)
        log_info(comp, "%s", ws->active ? "maintenance window open: automatic fail-over paused"
                                        : "maintenance window closed: automatic fail-over resumes");
    for (unsigned i = 0; i < ws->n; i++) {
        const struct maint_window *w = &ws->w[i];
        struct rrule_span act, next;
        unsigned slot = MAINT_MAX;

        if (!w->switchover || maint_window_eval(w, now, &act, &next) < 0 || act.start < 0)
            continue;
        for (unsigned j = 0; j < MAINT_MAX && slot == MAINT_MAX; j++)
            if (ws->seen[j].id == w->id)
                slot = j;
        for (unsigned j = 0; j < MAINT_MAX && slot == MAINT_MAX; j++)
            if (ws->seen[j].id == 0)
                slot = j;
        if (slot == MAINT_MAX)
            slot = i; /* full of removed windows' entries: reuse one */
        if (ws->seen[slot].id == w->id && ws->seen[slot].start == act.start)
            continue;
        ws->seen[slot].id = w->id;
        ws->seen[slot].start = act.start;
        /* Not by an agent that became the source since its last evaluation: the other one's
         * switchover for this window can run whole between two (it takes under a second). */
        if (!source || !was_source || now - act.start >= WINDOWS_SWITCHOVER_GRACE_S)
            continue;
        struct status_op_request req = {.kind = STATUS_REQ_SWITCHOVER,
                                        .at_unix_us = (uint64_t)act.start * 1000000};
        log_info(comp, "maintenance window %" PRIu64 " opens: switchover requested (id %" PRIu64
                       ")", w->id, status_request_op(board, &req));
    }
    ws->was_source = source;
    return ws->active != was;
}
