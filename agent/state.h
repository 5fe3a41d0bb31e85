/*
 * state.h - the agent's small durable state: the file `agent.state` in a directory
 * (state_dir; a site's spool_dir by default).
 *
 * What it holds:
 *   epoch            the fencing token (>= 1; 1 while the file does not exist yet)
 *   primary          the node that holds that epoch ("" when not known)
 *   changed_unix_us  when epoch / primary last changed (microseconds since the Unix epoch)
 *   exposed_lsn      the epoch's mark: when exposed_unix_us is not 0, its holder runs EXPOSED -
 *   exposed_unix_us  commits are acknowledged without the other site since then, and the other
 *                    site holds durably only what it held at exposed_lsn (or a little more):
 *                    it is stale and must not be promoted by itself.  0 and 0: the holder's
 *                    standby is synchronous (or the holder is a switchover's new primary).
 *
 * The file is text, one `key = value` a line, written by this module only:
 *
 *     # walmirror agent state: written by walmirror-agent, do not edit
 *     version = 2
 *     epoch = 2
 *     primary = site-b
 *     changed_unix_us = 1700000000000000
 *     exposed_lsn = 0/3000000
 *     exposed_unix_us = 1700000000000000
 *     checksum = 0123456789abcdef
 *
 * Version 1 files (written before exposure existed: no exposed_* keys) are read as not exposed.
 *
 * The last line is the XXH3-64 of every byte before it, so a file cut short or damaged is
 * refused rather than read as an older epoch.  Unknown keys, keys set twice, malformed values,
 * a missing checksum and a version this build does not know are refused too, each with one
 * line naming the file (and the line, where there is one).
 *
 * state_save() never leaves a torn file: it writes agent.state.tmp, fsyncs it, renames it over
 * agent.state and fsyncs the directory.  Any failure is returned (the old file is then intact,
 * unless only the directory fsync failed: see state_save); nothing is retried, in particular
 * not fsync.
 *
 * State only stores what it is given: keeping the epoch monotonic is the caller's business.
 * Neither function logs or keeps anything between calls.
 */
#ifndef WALMIRROR_AGENT_STATE_H
#define WALMIRROR_AGENT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define STATE_FILE "agent.state"
#define STATE_NAME_MAX 63 /* node names, as config.h's CONFIG_NAME_MAX */

struct wm_state {
    uint64_t epoch;                    /* >= 1 */
    char primary[STATE_NAME_MAX + 1];  /* [A-Za-z0-9_.-]*, may be empty */
    uint64_t changed_unix_us;          /* 0: never changed */
    uint64_t exposed_lsn;              /* the mark (see above): where the WAL at risk begins */
    uint64_t exposed_unix_us;          /* 0: not exposed */
};

/* Whether st's holder runs exposed (the other site is stale). */
static inline bool
state_exposed(const struct wm_state *st)
{
    return st->exposed_unix_us != 0;
}

/* The state of a node that has never saved one: epoch 1, no primary. */
void state_init(struct wm_state *st);

/*
 * Reads dir/agent.state into *st.  A missing file in an existing directory gives the defaults
 * of state_init() and returns 0 (1 is returned instead when the file existed and was read, so
 * that a caller may log the difference).  A missing directory, or a path that is not one, is
 * an error (-ENOENT, -ENOTDIR).  Returns a negative errno with one line in err[errlen] otherwise:
 * -EINVAL for a damaged or unknown file ("DIR/agent.state:3: epoch \"x\" is not a number"),
 * -EFBIG for a file too large to be ours, or the -errno of open/read.  *st is left at the
 * defaults on failure.
 */
WM_MUSTCHECK int state_load(const char *dir, struct wm_state *st, char *err, size_t errlen);

/*
 * Writes *st durably as dir/agent.state (tmp file, fsync, rename, fsync of dir).  Returns 0,
 * -EINVAL for a state that cannot be written (epoch 0, a primary name with characters a node
 * name may not have), or the -errno of the step that failed, with one line in err[errlen]
 * naming the step and the file.  A failure before the rename leaves the old file as it was;
 * a failure of the final directory fsync leaves the new file in place but not known to be
 * durable: treat it as a failure (do not act on the new state).
 */
WM_MUSTCHECK int state_save(const char *dir, const struct wm_state *st, char *err, size_t errlen);

#endif
