/*
 * link.h - the agent's connections with its peer agent (conn.h): listening on `listen`,
 * accepting, connecting to `peer`, and which established link carries the stream.
 *
 * Both roles listen: a sink for its source, a source only to refuse - a stale primary that
 * connects learns from the refusal that it is fenced, and two primaries at one epoch are named
 * on both sides.  The source connects (link_connect()); the sink accepts.  At most
 * LINK_SLOTS links exist at once; a new established link supersedes the active one (a source
 * that reconnected).
 *
 * Everything the links say reaches the owner through struct link_events, from the loop:
 * hello() fills the HELLO this agent sends on each new link, check() accepts or refuses the
 * peer's, up() reports the link that became the active one, down() every link that ended (a
 * connect that failed too), and the messages of the ACTIVE link only: WAL, ACK, CONTROL,
 * TIMELINE, drained, and a frame's newer epoch.  A dead link is freed by link_reap(), which
 * the owner calls after each turn of the loop (never from inside a callback).
 */
#ifndef WALMIRROR_AGENT_LINK_H
#define WALMIRROR_AGENT_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "conn.h"
#include "err.h"
#include "wio.h"

#define LINK_SLOTS 4

struct link_set;

struct link_events {
    /* Our HELLO for a new link, and the epoch its frames carry. */
    void (*hello)(void *ctx, struct msg_hello *hello, uint64_t *epoch);
    /* The peer's HELLO (peer->epoch from its frame): 0 to accept, or WIRE_EPROTO with why. */
    int (*check)(void *ctx, const struct msg_hello *peer, bool inbound, char *why, size_t whylen);
    /* A link was established and now carries the stream. */
    void (*up)(void *ctx, const struct msg_hello *peer);
    /* A link ended: the active one, one being set up, or a connect that failed (established
     * false, inbound false).  why is for the log. */
    void (*down)(void *ctx, bool was_active, bool inbound, bool established, const char *why);
    void (*wal)(void *ctx, uint64_t lsn, const uint8_t *data, size_t len);
    void (*ack)(void *ctx, const struct msg_ack *ack);
    void (*control)(void *ctx, const struct msg_control *ctl);
    void (*timeline)(void *ctx, const struct msg_timeline *tl);
    /* The active link's send queue emptied. */
    void (*drained)(void *ctx);
    /* A frame of the active link carried a newer epoch than ours; holder: the peer. */
    void (*epoch)(void *ctx, uint64_t epoch, const char *holder);
};

/*
 * Loads the TLS files (errors name the file), listens on cfg->listen and accepts.  Returns 0,
 * or a negative errno with the reason in err.
 */
WM_MUSTCHECK int link_set_new(struct link_set **out, struct wio_loop *loop,
                              const struct wm_config *cfg, const struct link_events *ev,
                              void *ctx, char *err, size_t errlen);
/* Closes every link (BYE) and the listening socket; runs the loop a few turns so that the
 * BYEs leave.  NULL is fine. */
void link_set_free(struct link_set *ls);

/* Starts a TCP connect to the peer; its end comes as up() or down().  -EALREADY while one is
 * in flight or a link exists. */
WM_MUSTCHECK int link_connect(struct link_set *ls);
/* refuse: close every accepted connection at once (a fenced agent talks to no one). */
void link_refuse(struct link_set *ls, bool refuse);
/* Closes every link (BYE with why); down() follows for each. */
void link_close_all(struct link_set *ls, const char *why);
/* Closes the active link with an ERROR carrying why; down() follows. */
void link_drop_active(struct link_set *ls, const char *why);
/* Raises the epoch the frames of every live link carry. */
void link_set_epoch(struct link_set *ls, uint64_t epoch);
/* Frees the links that died during the last turn. */
void link_reap(struct link_set *ls);

/* The established link that carries the stream, or NULL. */
struct conn *link_active(const struct link_set *ls);
/* Whether any link lives (established or not), or a connect is in flight. */
bool link_busy(const struct link_set *ls);
/* This agent's certificate's expiry (unix seconds), or -1 when it cannot be read. */
int64_t link_cert_not_after(const struct link_set *ls);

#endif
