/*
 * lzctl.c - the fast/HC compression controller; rules in lzctl.h.
 *
 * A "run" is a sequence of frames whose send queue was all on one side of a threshold; it
 * starts at its first frame and ends at the first frame that is not.  A frame after an idle
 * gap only starts a low run: back-pressure (the sender stops reading the primary while the
 * queue drains) makes gaps on a link that never idled, and the queue is empty when it ends.
 *
 * The busy share is counted in windows of window_us: the encoding time of the frames that
 * ended inside the window over the window's length.  A switch starts a new window, so that a
 * decision about HC is made on HC's own figures.
 */
#include "lzctl.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

struct lzctl {
    struct lzctl_params p;
    enum lzctl_mode mode;
    enum lzctl_why why;
    uint64_t switches;
    bool high_run; /* every frame since high_since had the queue >= high */
    uint64_t high_since;
    bool low_run; /* every frame since low_since had the queue < low */
    uint64_t low_since;
    uint64_t win_start;
    uint64_t win_busy;
    unsigned busy_pct; /* of the last complete window */
    bool measured;     /* a window has completed since the last switch */
    bool held;         /* no HC before hold_until */
    uint64_t hold_until;
};

void
lzctl_defaults(struct lzctl_params *p)
{
    *p = (struct lzctl_params){
        .high = 1024 * 1024,
        .low = 64 * 1024,
        .rise_us = 200 * 1000,
        .fall_us = 500 * 1000,
        .window_us = 500 * 1000,
        .busy_max_pct = 50,
        .hold_us = 10 * 1000 * 1000,
        .hc_level = LZCTL_HC_LEVEL,
    };
}

int
lzctl_new(struct lzctl **out, const struct lzctl_params *params, uint64_t now_us)
{
    struct lzctl *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -ENOMEM;
    if (params != NULL)
        c->p = *params;
    else
        lzctl_defaults(&c->p);
    if (c->p.low > c->p.high || c->p.window_us == 0 || c->p.hc_level < 1) {
        free(c);
        return -EINVAL;
    }
    c->mode = LZCTL_FAST;
    c->why = LZCTL_WHY_START;
    c->win_start = now_us;
    *out = c;
    return 0;
}

void
lzctl_free(struct lzctl *c)
{
    free(c);
}

static void
roll_window(struct lzctl *c, uint64_t now)
{
    uint64_t len = now - c->win_start;

    if (now < c->win_start || len < c->p.window_us)
        return;
    c->busy_pct = c->win_busy >= len ? 100 : (unsigned)(c->win_busy * 100 / len);
    c->measured = true;
    c->win_start = now;
    c->win_busy = 0;
}

static void
set_mode(struct lzctl *c, uint64_t now, enum lzctl_mode mode, enum lzctl_why why)
{
    c->mode = mode;
    c->why = why;
    c->switches++;
    c->win_start = now;
    c->win_busy = 0;
    c->measured = false;
    if (why == LZCTL_WHY_CPU_BOUND) {
        c->held = true;
        c->hold_until = now + c->p.hold_us;
    }
}

int
lzctl_level(struct lzctl *c, uint64_t now, size_t backlog)
{
    roll_window(c, now);
    if (backlog >= c->p.high) {
        if (!c->high_run)
            c->high_since = now;
        c->high_run = true;
        c->low_run = false;
    } else if (backlog < c->p.low) {
        if (!c->low_run)
            c->low_since = now;
        c->low_run = true;
        c->high_run = false;
    } else {
        c->high_run = c->low_run = false;
    }
    if (c->held && now >= c->hold_until)
        c->held = false;

    if (c->mode == LZCTL_FAST) {
        if (c->high_run && now - c->high_since >= c->p.rise_us && !c->held)
            set_mode(c, now, LZCTL_HC, LZCTL_WHY_LINK_BOUND);
    } else if (c->low_run && c->measured && c->busy_pct >= c->p.busy_max_pct) {
        set_mode(c, now, LZCTL_FAST, LZCTL_WHY_CPU_BOUND);
    } else if (c->low_run && now - c->low_since >= c->p.fall_us) {
        set_mode(c, now, LZCTL_FAST, LZCTL_WHY_LINK_KEEPS_UP);
    }
    return c->mode == LZCTL_HC ? c->p.hc_level : 0;
}

void
lzctl_busy(struct lzctl *c, uint64_t now, uint64_t busy_us)
{
    c->win_busy += busy_us;
    roll_window(c, now);
}

enum lzctl_mode
lzctl_mode(const struct lzctl *c)
{
    return c->mode;
}

enum lzctl_why
lzctl_why(const struct lzctl *c)
{
    return c->why;
}

unsigned
lzctl_busy_pct(const struct lzctl *c)
{
    return c->busy_pct;
}

uint64_t
lzctl_switches(const struct lzctl *c)
{
    return c->switches;
}

const char *
lzctl_mode_name(enum lzctl_mode m)
{
    return m == LZCTL_HC ? "hc" : "fast";
}

const char *
lzctl_why_name(enum lzctl_why w)
{
    switch (w) {
    case LZCTL_WHY_START:
        return "start";
    case LZCTL_WHY_LINK_BOUND:
        return "link-bound";
    case LZCTL_WHY_LINK_KEEPS_UP:
        return "link keeps up";
    case LZCTL_WHY_CPU_BOUND:
        return "cpu-bound";
    }
    return "?";
}
