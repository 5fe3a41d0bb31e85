/*
 * lzctl.h - when to compress a link's WAL with LZ4's high-compression (HC) search instead of its
 * fast one.
 *
 * The fast compressor keeps up with any link this side of a few Gbit/s; HC is several times
 * slower and makes fewer bytes (on bulk-load WAL, 0.40 of the WAL against fast's 0.50).  Fewer
 * bytes pay only when the link, not the CPU, limits how fast WAL reaches the peer.  The sign of
 * that is the connection's send queue: bytes encoded but not yet taken by the kernel.  It grows
 * only while the link is slower than the encoder.
 *
 * The controller is a pure state machine, fed with times and sizes (no clock, no I/O of its
 * own), so that its decisions can be tested exactly.  Before each WAL frame the owner asks
 * lzctl_level() with the send queue's depth, compresses the frame at that level, and reports
 * the time the encoding took with lzctl_busy().
 *
 *  FAST -> HC (link-bound): the queue held at least `high` bytes at every frame for `rise_us`.
 *  HC -> FAST (CPU-bound): the queue is below `low` while the encoder was busy at least
 *      `busy_max_pct` of the last complete window of `window_us`: HC cannot fill the link.
 *      HC is then not tried again for `hold_us`, so that a link about as fast as the HC
 *      compressor does not flip the mode back and forth.
 *  HC -> FAST (link keeps up): the queue stayed below `low` at every frame for `fall_us`:
 *      the link carries all there is, and commits on a quiet link are not to wait for the
 *      slower search.
 * Backlogs between `low` and `high` keep the mode (hysteresis).
 */
#ifndef WALMIRROR_WIRE_LZCTL_H
#define WALMIRROR_WIRE_LZCTL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* The HC level used by default: on PostgreSQL 15 WAL, levels above 4 gain under 1% in size
 * for half the speed or less. */
#define LZCTL_HC_LEVEL 4

struct lzctl;

enum lzctl_mode {
    LZCTL_FAST,
    LZCTL_HC,
};

/* Why the mode is what it is (the last switch). */
enum lzctl_why {
    LZCTL_WHY_START,
    LZCTL_WHY_LINK_BOUND,
    LZCTL_WHY_LINK_KEEPS_UP,
    LZCTL_WHY_CPU_BOUND,
};

struct lzctl_params {
    size_t high;           /* send queue at or above this: the link is behind */
    size_t low;            /* below this: the link keeps up */
    uint64_t rise_us;      /* the queue high this long: HC */
    uint64_t fall_us;      /* the queue low this long: fast */
    uint64_t window_us;    /* the encoder's busy share is measured over windows this long */
    unsigned busy_max_pct; /* HC busy more than this share with the queue low: CPU-bound */
    uint64_t hold_us;      /* after a CPU-bound fallback, no HC for this long */
    int hc_level;          /* LZ4HC level of the HC mode (1..12) */
};

/* The defaults: high 1 MiB, low 64 KiB, rise 200 ms, fall 500 ms, windows of 500 ms, busy
 * share 50%, hold 10 s, level LZCTL_HC_LEVEL. */
void lzctl_defaults(struct lzctl_params *p);

/* params NULL: the defaults.  now_us: any monotonic clock in µs.  Starts in FAST. */
WM_MUSTCHECK int lzctl_new(struct lzctl **out, const struct lzctl_params *params, uint64_t now_us);
void lzctl_free(struct lzctl *c);

/*
 * Before a WAL frame: the send queue's depth now.  Returns the level to compress the frame at:
 * 0 (LZ_LEVEL_FAST, lz.h) or params.hc_level.
 */
int lzctl_level(struct lzctl *c, uint64_t now_us, size_t backlog);

/* After the frame: now, and how long encoding it took (µs). */
void lzctl_busy(struct lzctl *c, uint64_t now_us, uint64_t busy_us);

enum lzctl_mode lzctl_mode(const struct lzctl *c);
enum lzctl_why lzctl_why(const struct lzctl *c);
/* The encoder's busy share (%) in the last complete window (the one a switch to fast for
 * want of CPU was decided on). */
unsigned lzctl_busy_pct(const struct lzctl *c);
/* Mode switches so far. */
uint64_t lzctl_switches(const struct lzctl *c);

const char *lzctl_mode_name(enum lzctl_mode m); /* "fast", "hc" */
const char *lzctl_why_name(enum lzctl_why w);   /* "start", "link-bound", ... */

#endif
