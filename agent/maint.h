/*
 * maint.h - maintenance windows: what they are, how an operator's request becomes one, when
 * they are open, and their durable store (the file maintenance.json in state_dir).
 *
 * A window is either recurring (an RRULE of rrule.h from a first local date, at a local start
 * time in an IANA zone) or one-off (a local date and time in a zone), lasts duration_s, and
 * has a class: routine (no downtime expected), window (announced downtime possible), hotfix
 * (urgent).  A window marked switchover asks the primary's agent for a switchover at its start.
 *
 * The file, written by this module only (jansson; tmp + fsync + rename + directory fsync, as
 * state.h's), e.g.:
 *
 *     {"version": 1, "next_id": 3, "windows": [
 *       {"id": 1, "class": "window", "rrule": "FREQ=MONTHLY;BYDAY=-1SA",
 *        "date": "2026-01-01", "start": "22:00", "duration_s": 14400,
 *        "tz": "America/Denver", "switchover": true},
 *       {"id": 2, "class": "hotfix", "date": "2026-05-01", "start": "02:00",
 *        "duration_s": 7200, "tz": "UTC", "switchover": false}]}
 *
 * (no "rrule": a one-off on that date.)  A missing file is an empty list; a damaged one is
 * refused at start with a message naming the file.
 *
 * The store is shared by the HTTP API's thread (add, remove) and the agent's loop (reads a
 * copy each status tick, without waiting while a save is in progress); one mutex guards it,
 * held across the save so that the file and memory never disagree.
 */
#ifndef WALMIRROR_AGENT_MAINT_H
#define WALMIRROR_AGENT_MAINT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "rrule.h"

#define MAINT_FILE "maintenance.json"
#define MAINT_MAX 64
#define MAINT_MAX_DURATION_S (31 * 86400)

enum maint_class { MAINT_ROUTINE, MAINT_WINDOW, MAINT_HOTFIX };

struct maint_window {
    uint64_t id; /* >= 1 once stored */
    enum maint_class cls;
    char rrule[256]; /* canonical (rrule_format); "" for a one-off */
    int year, month, day; /* the first local date (a one-off's date) */
    int start_minute;     /* local start time, minutes after midnight */
    int64_t duration_s;
    char tz[65];
    bool switchover;
};

/* A request to add a window, as strings (NULL: not given), e.g. from HTTP query parameters:
 * rrule + start ("HH:MM") [+ from ("YYYY-MM-DD"; default: today in tz)], or at
 * ("YYYY-MM-DD HH:MM"); duration ("4h", "90m", "1h30m", "3600s", "2d": each number with its
 * unit, a bare number is refused); tz (required);
 * class (routine | window | hotfix; default window); switchover ("1", "true", "0", "false"). */
struct maint_params {
    const char *rrule, *start, *from, *at, *duration, *tz, *cls, *switchover;
};

const char *maint_class_name(enum maint_class c);

/*
 * Builds *w (id 0) from p.  Refuses (-EINVAL, a message naming the parameter in err) bad or
 * missing values, rules rrule_parse refuses, and a window that has no occurrence open at now
 * or after it.
 */
WM_MUSTCHECK int maint_window_parse(struct maint_window *w, const struct maint_params *p,
                                    int64_t now, char *err, size_t errlen);

/* The window open at now and the next one (rrule_windows' contract).  Returns 0 or -EINVAL. */
WM_MUSTCHECK int maint_window_eval(const struct maint_window *w, int64_t now,
                                   struct rrule_span *active, struct rrule_span *next);

#define MAINT_NEXT 3 /* occurrences listed ahead (the open one counts) */

/* The window's occurrences from now: the one open at now (if any), then the next ones, soonest
 * first, at most max into out.  Returns how many (0: none left, or a zone that cannot be
 * read). */
int maint_window_next(const struct maint_window *w, int64_t now, struct rrule_span *out, int max);

/* One occurrence for people, in the window's own zone ("Sat 2026-11-28 22:00 -
 * Sun 2026-11-29 02:00 America/Denver") or with utc in UTC ("Sun 2026-11-29 05:00 - 09:00
 * UTC"): the end's date only when it differs from the start's. */
void maint_span_text(const struct maint_window *w, const struct rrule_span *sp, bool utc, char *buf,
                     size_t cap);

/* The window as JSON (the file's fields); with now >= 0 also "active", "active_start",
 * "active_end", "next_start", "next_end" (Unix seconds, or null) and their UTC text
 * ("..._utc"), and "occurrences": the next MAINT_NEXT (maint_window_next), each {"start",
 * "end", "active", "local", "utc"} with maint_span_text's two texts.  NULL on allocation
 * failure. */
json_t *maint_window_json(const struct maint_window *w, int64_t now);

/*
 * The maintenance state for /status: "active <class> until <time>" while a window is open
 * (the one ending last), else "next <class> at <time>", else "none"; times in the window's
 * own zone and in UTC, "Sat 2026-02-28 22:00 America/Denver (2026-03-01 05:00 UTC)" (only
 * "Tue 2026-03-10 12:00 UTC" for a zone at UTC then).  Returns true if a window is open.
 */
bool maint_describe(const struct maint_window *w, unsigned n, int64_t now, char *buf,
                    size_t len);

struct maint_store;

/* Opens the store of dir, reading dir/maintenance.json if it exists.  Returns 0, or a
 * negative errno with a message in err (a damaged file: -EINVAL). */
WM_MUSTCHECK int maint_store_open(struct maint_store **out, const char *dir, char *err,
                                  size_t errlen);
void maint_store_close(struct maint_store *s);
/* Adds *w and saves durably: with w->id 0 the next free id is given (and set in *w), else
 * that id is used (so that both sites' agents can be given the same one; -EEXIST if taken).
 * On failure nothing changes (-ENOSPC when MAINT_MAX windows are stored; the save's errno). */
WM_MUSTCHECK int maint_store_add(struct maint_store *s, struct maint_window *w, char *err,
                                 size_t errlen);
/* Removes window id and saves; -ENOENT if there is none. */
WM_MUSTCHECK int maint_store_remove(struct maint_store *s, uint64_t id, char *err,
                                    size_t errlen);
/* Copies up to max windows into out, returning how many; with wait false returns -EBUSY
 * instead of waiting for a save in progress. */
WM_MUSTCHECK int maint_store_list(struct maint_store *s, struct maint_window *out, unsigned max,
                                  bool wait);

#endif
