/*
 * lag.h - lag in seconds per confirmation stage, measured as PostgreSQL's LagTracker does:
 * when WAL up to an LSN is sent (or seen), remember (LSN, time); when a stage (write, flush,
 * apply) is confirmed past that LSN, the stage's lag is the time since.
 *
 * A tracker is a fixed ring of LAG_SAMPLES samples, taken at most once per millisecond: WAL
 * sent in the same millisecond, or while the ring is full, extends the newest sample, as long
 * as no stage has confirmed that one (WAL added to a confirmed sample would pass for
 * confirmed).  Only when it has, and the ring is full, does the oldest sample go, which makes
 * the slowest stage's figure coarser; lag_sent_bounded() instead refuses the sample then, for
 * a caller that must not hide how long a stalled stage has waited.  No allocation, no
 * failure: plain functions on a struct the owner embeds.
 */
#ifndef WALMIRROR_AGENT_LAG_H
#define WALMIRROR_AGENT_LAG_H

#include <stdbool.h>
#include <stdint.h>

#define LAG_SAMPLES 256

enum lag_stage {
    LAG_WRITE,
    LAG_FLUSH,
    LAG_APPLY,
    LAG_STAGES,
};

struct lag_tracker {
    struct {
        uint64_t lsn;
        uint64_t at_us;
    } s[LAG_SAMPLES];
    unsigned head, n;
    unsigned next[LAG_STAGES]; /* per stage: index (from the oldest) of the next to match */
    double lag_s[LAG_STAGES];  /* per stage: last measured, or -1 */
};

/* Empties the tracker; every stage's lag is unknown (-1). */
void lag_reset(struct lag_tracker *t);

/* WAL up to lsn left (or arrived) at now_us (monotonic microseconds). */
void lag_sent(struct lag_tracker *t, uint64_t lsn, uint64_t now_us);

/* The same, but a full ring takes no more samples (returns false): the oldest, the one a
 * stalled stage waits on, is kept. */
bool lag_sent_bounded(struct lag_tracker *t, uint64_t lsn, uint64_t now_us);

/* Stage confirmed up to lsn at now_us.  Returns how many samples this matched (0: nothing
 * new was confirmed); the stage's lag is then the age of the newest sample matched. */
unsigned lag_confirmed(struct lag_tracker *t, enum lag_stage stage, uint64_t lsn,
                       uint64_t now_us);

/* A stage's lag in seconds now: the last measured, or, when WAL waits for that stage's
 * confirmation, how long the oldest of it has waited if that is longer (a stalled stage
 * shows a growing lag, not its last good value).  -1 while unknown. */
double lag_now(const struct lag_tracker *t, enum lag_stage stage, uint64_t now_us);

/* How long the oldest WAL not yet confirmed at stage has waited, in microseconds; 0 when
 * nothing waits for that stage. */
uint64_t lag_waiting_us(const struct lag_tracker *t, enum lag_stage stage, uint64_t now_us);

#endif
