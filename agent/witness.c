/*
 * witness.c - the witness daemon; contract and vote rules in witness.h.
 *
 * One io_uring loop (wio.h).  Accepted connections are links (struct wlink), each a conn.h
 * connection whose callbacks record what the site said; a link that died is freed in
 * witness_tick(), never from inside its own callbacks.  A site (struct wsite) points at its
 * one established link; a site that reconnects supersedes its old link.
 *
 * Time: "heard" instants are CLOCK_MONOTONIC microseconds; the state file's changed_unix_us
 * is wall-clock time for operators.
 */
#include "witness.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "httpapi.h"
#include "log.h"
#include "state.h"
#include "status.h"
#include "tls.h"
#include "util.h"
#include "wio.h"

#define WITNESS_MAX_LINKS 8
#define WITNESS_STATUS_EVERY_MS 100

struct witness;

/* One accepted connection; the conn callbacks' context. */
struct wlink {
    struct witness *w;
    struct conn *c;
    int site; /* index into witness.sites once the HELLO named it, else -1 */
    bool established;
    bool dead;
};

/* What the witness knows of one site. */
struct wsite {
    const char *name;
    const char *addr;
    struct wlink *link;     /* the established link, or NULL */
    uint8_t role;           /* last reported, enum msg_role */
    uint64_t epoch;         /* last reported */
    uint64_t durable_lsn;   /* last reported */
    uint64_t mark_lsn, mark_unix_us; /* its epoch's mark, as last reported */
    struct wm_state told;   /* the record last sent to it as news on its current link */
    uint64_t heard_us;      /* last frame counted as hearing it; 0: never */
    uint64_t source_us;     /* last time heard while reporting role source; 0: never */
    uint64_t state_us;      /* last STATE on the current link; 0: none yet */
    uint64_t state_gap_us;  /* interval between its last two STATEs on one link */
};

struct witness {
    const struct wm_config *cfg;
    struct wio_loop *loop;
    struct tls_config *tls;
    char comp[80];
    char peer_names[2 * (CONFIG_NAME_MAX + 1)]; /* "site-a,site-b" */
    int listen_fd;
    struct wio_acceptor acc;
    struct wlink *links[WITNESS_MAX_LINKS];
    struct wsite sites[2];
    struct wm_state st;
    uint64_t started_us; /* monotonic */
    bool failed;
    int exit_status;

    struct status_board board;
    struct httpapi *http;
    uint64_t started_unix_us;
    int64_t cert_not_after; /* this witness's certificate, Unix seconds; -1: unknown */
    uint64_t status_at_ms;
    bool paused;
    char last_error[256];
    uint64_t accept_retry_at_ms; /* accepting stopped after an error: start again then */
};

static void __attribute__((format(printf, 2, 3)))
set_last_error(struct witness *w, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(w->last_error, sizeof(w->last_error), fmt, ap);
    va_end(ap);
}

static double
secs(uint64_t us)
{
    return (double)us / 1e6;
}

static int
site_index(const struct witness *w, const char *name)
{
    for (int i = 0; i < 2; i++)
        if (strcmp(w->sites[i].name, name) == 0)
            return i;
    return -1;
}

/* The site that a link belongs to, when known. */
static struct wsite *
link_site(struct wlink *l)
{
    return l->site >= 0 ? &l->w->sites[l->site] : NULL;
}

static void
heard(struct wsite *s)
{
    s->heard_us = clock_mono_us();
    if (s->role == MSG_ROLE_SOURCE)
        s->source_us = s->heard_us;
}

/* A failure to record the state: no vote may follow; the process ends. */
static void
state_failed(struct witness *w, const char *err)
{
    log_error(w->comp, "cannot record the witness state, stopping: %s", err);
    set_last_error(w, "state: %.240s", err);
    w->failed = true;
    w->exit_status = 1;
}

/* Saves next durably and makes it ours.  Returns 0 or a negative errno (then fatal). */
static int
save_state(struct witness *w, const struct wm_state *next)
{
    char err[512];
    int rc = state_save(w->cfg->state_dir, next, err, sizeof(err));

    if (rc < 0) {
        state_failed(w, err);
        return rc;
    }
    w->st = *next;
    return 0;
}

/* Raises every live link but skip, and but those of standbys, to our epoch (skip may be NULL):
 * an old primary that still talks is refused from its next frame on. */
static void
raise_links(struct witness *w, const struct wlink *skip)
{
    for (int i = 0; i < WITNESS_MAX_LINKS; i++) {
        struct wlink *l = w->links[i];
        const struct wsite *s;

        if (l == NULL || l->dead || l == skip)
            continue;
        /* A standby's frames stay welcome: it only adopts the epoch (told by FENCE), and its
         * link should not drop over a STATE that crossed the news. */
        s = link_site(l);
        if (s != NULL && l->established && s->role == MSG_ROLE_SINK)
            continue;
        conn_set_epoch(l->c, w->st.epoch);
    }
}

/*
 * A site speaks with an epoch newer than ours: a switchover (or a fail-over arbitrated
 * elsewhere) the witness did not see.  Adopt it durably, held by the node the site's own record
 * of it names (a STATE's text), else by the site if it says it is the source.  And when our
 * epoch has no known holder (a fresh witness) and a site reports itself the source at that
 * epoch, record it as the holder.  Returns 0, or a negative errno when the state could not be
 * recorded (fatal).
 */
static int
adopt_epoch(struct witness *w, struct wsite *s, uint64_t epoch, uint8_t role,
            const struct msg_control *mark, const struct wlink *from)
{
    struct wm_state next;
    int rc;

    if (epoch == w->st.epoch && w->st.primary[0] == '\0' && role == MSG_ROLE_SOURCE) {
        next = w->st;
        next.changed_unix_us = clock_unix_us();
        snprintf(next.primary, sizeof(next.primary), "%s", s->name);
        rc = save_state(w, &next);
        if (rc == 0)
            log_info(w->comp, "%s reports it is the source at epoch %" PRIu64 ": recorded as its "
                     "holder", s->name, epoch);
        return rc;
    }
    if (epoch <= w->st.epoch)
        return 0;
    state_init(&next);
    next.epoch = epoch;
    next.changed_unix_us = clock_unix_us();
    /* The holder the reporter's own record of that epoch names comes first: after a
     * switchover the old primary learns the new epoch, held by its peer, while it still reports
     * itself the source (its primary stopping).  Taking the reporter for the holder then gave
     * the epoch to the wrong site, and the new primary's standby was denied every promotion
     * ("it holds epoch N already").  As the etcd arbiter does (ea_adopt). */
    if (mark != NULL && site_index(w, mark->text) >= 0)
        snprintf(next.primary, sizeof(next.primary), "%.*s", STATE_NAME_MAX, mark->text);
    else if (role == MSG_ROLE_SOURCE)
        snprintf(next.primary, sizeof(next.primary), "%s", s->name);
    if (mark != NULL) {
        next.exposed_lsn = mark->mark_lsn;
        next.exposed_unix_us = mark->mark_unix_us;
    }
    rc = save_state(w, &next);
    if (rc < 0)
        return rc;
    log_info(w->comp, "%s reports epoch %" PRIu64 ", newer than the witness's: adopted, held by %s%s",
             s->name, epoch, next.primary[0] != '\0' ? next.primary : "an unknown node",
             state_exposed(&next) ? ", running exposed" : "");
    raise_links(w, from); /* not the reporter's link: see vote() */
    return 0;
}

/* ---- links ---- */

static void
link_dead(struct wlink *l)
{
    struct wsite *s = link_site(l);

    l->dead = true;
    if (s != NULL && s->link == l)
        s->link = NULL;
}

static int
on_site_hello(void *ctx, const struct msg_hello *peer, char *why, size_t whylen)
{
    struct wlink *l = ctx;
    struct witness *w = l->w;
    struct wsite *s;
    char when[64];
    int i = site_index(w, peer->node_name);

    if (i < 0) { /* conn has checked the name against the list: cannot happen */
        snprintf(why, whylen, "%s is not one of this witness's sites", peer->node_name);
        return WIRE_EPROTO;
    }
    s = &w->sites[i];
    if (peer->epoch < w->st.epoch) {
        snprintf(why, whylen, WITNESS_FENCED_PREFIX "%" PRIu64 " is held by %s since %s",
                 w->st.epoch, w->st.primary[0] != '\0' ? w->st.primary : "an unknown node",
                 wm_format_utc(when, sizeof(when), w->st.changed_unix_us));
        return WIRE_EPROTO; /* conn logs the refusal */
    }
    if (adopt_epoch(w, s, peer->epoch, peer->role, NULL, NULL) < 0) {
        snprintf(why, whylen, "the witness cannot record its state");
        return -EIO;
    }
    l->site = i;
    conn_set_epoch(l->c, peer->epoch);
    s->role = peer->role;
    s->epoch = peer->epoch;
    s->durable_lsn = peer->durable_lsn;
    heard(s);
    return 0;
}

static void
on_site_established(void *ctx)
{
    struct wlink *l = ctx;
    struct witness *w = l->w;
    struct wsite *s = link_site(l);

    if (s == NULL)
        return;
    l->established = true;
    if (s->link != NULL && s->link != l) {
        struct wlink *old = s->link;
        log_info(w->comp, "%s reconnected: the new link replaces the old one", s->name);
        conn_close(old->c, WIRE_EPROTO, "superseded by a new connection from the same site");
        link_dead(old);
    }
    s->link = l;
    s->state_us = 0;
    memset(&s->told, 0, sizeof(s->told)); /* a new link has been told nothing */
    log_info(w->comp, "%s up (%s, epoch %" PRIu64 ", durable %X/%X)", s->name,
             msg_role_name(s->role), s->epoch, LSN_ARGS(s->durable_lsn));
}

/* Sends our record of the current epoch (holder, mark) to l's site as a FENCE: news. */
static void
send_record(struct witness *w, struct wlink *l)
{
    struct wsite *s = link_site(l);
    struct msg_control news = {.kind = MSG_CTL_FENCE,
                               .value = w->st.epoch,
                               .mark_lsn = w->st.exposed_lsn,
                               .mark_unix_us = w->st.exposed_unix_us};

    snprintf(news.text, sizeof(news.text), "%s", w->st.primary);
    if (conn_send_control(l->c, &news) < 0) {
        log_warning(w->comp, "cannot send FENCE to %s", s->name);
        return;
    }
    s->told = w->st;
}

/*
 * A site that reports our epoch with another mark than our record's (it learnt the epoch from
 * its peer, or from a refusal, before it learnt the mark) is sent the record, once per link
 * and record.
 */
static void
tell_record(struct witness *w, struct wlink *l)
{
    struct wsite *s = link_site(l);

    if (s == NULL || !l->established || s->epoch != w->st.epoch ||
        (s->mark_lsn == w->st.exposed_lsn && s->mark_unix_us == w->st.exposed_unix_us) ||
        memcmp(&s->told, &w->st, sizeof(w->st)) == 0)
        return;
    log_info(w->comp, "%s reports epoch %" PRIu64 " with another mark than the witness's: telling it "
             "the record (held by %s%s)", s->name, w->st.epoch,
             w->st.primary[0] != '\0' ? w->st.primary : "an unknown node",
             state_exposed(&w->st) ? ", running exposed" : "");
    send_record(w, l);
}

static void
send_verdict(struct witness *w, struct wlink *l, uint8_t kind, const char *text)
{
    struct msg_control ctl = {.kind = kind,
                              .value = w->st.epoch,
                              .mark_lsn = w->st.exposed_lsn,
                              .mark_unix_us = w->st.exposed_unix_us};
    int rc;

    snprintf(ctl.text, sizeof(ctl.text), "%s", text);
    rc = conn_send_control(l->c, &ctl);
    if (rc < 0)
        log_warning(w->comp, "cannot send %s to %s: %s", msg_ctl_name(kind),
                    w->sites[l->site].name, wire_strerror(rc));
}

static const char *
ask_name(uint8_t kind)
{
    return kind == MSG_CTL_EXPOSE_REQUEST   ? "exposure"
           : kind == MSG_CTL_RESYNC_REQUEST ? "resync"
                                            : "promotion";
}

static void __attribute__((format(printf, 5, 6)))
deny(struct witness *w, struct wlink *l, uint8_t kind, uint64_t epoch, const char *fmt, ...)
{
    char why[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    log_info(w->comp, "%s (epoch %" PRIu64 ") denied to %s: %s", ask_name(kind), epoch,
             w->sites[l->site].name, why);
    set_last_error(w, "%s (epoch %" PRIu64 ") denied to %s: %.180s", ask_name(kind), epoch,
                   w->sites[l->site].name, why);
    send_verdict(w, l, MSG_CTL_VOTE_DENY, why);
}

/*
 * The current primary: the site that holds our epoch per the state, else the site that last
 * reported role source, else (nothing known) the site other than the requester.
 */
static int
primary_site(const struct witness *w, int requester)
{
    int i = w->st.primary[0] != '\0' ? site_index(w, w->st.primary) : -1;

    if (i >= 0)
        return i;
    if (w->sites[0].source_us != 0 || w->sites[1].source_us != 0)
        return w->sites[0].source_us >= w->sites[1].source_us ? 0 : 1;
    return 1 - requester;
}

/* How long the primary must have been silent: see witness.h. */
static uint64_t
silence_needed_us(const struct witness *w, const struct wsite *p, uint64_t failover_timeout_ms)
{
    uint64_t hb = w->cfg->heartbeat_interval_ms * 1000u;
    uint64_t need = 3 * hb;

    if (failover_timeout_ms != 0 && failover_timeout_ms * 1000u < need)
        need = failover_timeout_ms * 1000u;
    if (need < 2 * hb)
        need = 2 * hb;
    /* A site reporting less often than we expect (another heartbeat_interval): its own
     * cadence decides, or a live primary could look silent between two reports. */
    if (need < 2 * p->state_gap_us)
        need = 2 * p->state_gap_us;
    return need;
}

/*
 * PROMOTE: whether s may take epoch asked from the primary p (see witness.h).  Returns true,
 * or false after denying with why.
 */
static bool
promotion_allowed(struct witness *w, struct wlink *l, const struct msg_control *req,
                  struct wsite *p)
{
    struct wsite *s = link_site(l);
    uint64_t asked = req->value, now = clock_mono_us(), since, need;
    char since_when[64];

    if (w->paused) {
        deny(w, l, req->kind, asked,
             "automatic fail-over is paused at the witness (POST /resume)");
        return false;
    }
    if (p == s) {
        deny(w, l, req->kind, asked, "%s is the primary: it holds epoch %" PRIu64 " already",
             s->name, w->st.epoch);
        return false;
    }
    if (state_exposed(&w->st)) {
        /* A stale standby: the primary has acknowledged commits without it since the mark. */
        deny(w, l, req->kind, asked,
             "%s is stale: %s runs exposed since " LSN_FMT " (%s); %s holds WAL up to " LSN_FMT
             " and %s last reported " LSN_FMT ": up to %" PRIu64 " bytes acknowledged by %s "
             "may be missing (walmirrorctl failover --force --accept-data-loss overrides)",
             s->name, p->name, LSN_ARGS(w->st.exposed_lsn),
             wm_format_utc(since_when, sizeof(since_when), w->st.exposed_unix_us), s->name,
             LSN_ARGS(req->lsn), p->name, LSN_ARGS(p->durable_lsn),
             p->durable_lsn > req->lsn ? p->durable_lsn - req->lsn : 0, p->name);
        return false;
    }
    need = silence_needed_us(w, p, req->value2);
    since = p->source_us > w->started_us ? p->source_us : w->started_us;
    if (now - since >= need)
        return true;
    if (p->source_us > w->started_us && p->role == MSG_ROLE_SOURCE)
        deny(w, l, req->kind, asked,
             "the primary %s was heard %.1f s ago (link %s); a fail-over needs %.1f s of "
             "silence",
             p->name, secs(now - since), p->link != NULL ? "up" : "down", secs(need));
    else if (p->source_us > w->started_us)
        deny(w, l, req->kind, asked,
             "the primary %s reported itself the source %.1f s ago (now %s, link %s); a "
             "fail-over needs %.1f s since",
             p->name, secs(now - since), msg_role_name(p->role),
             p->link != NULL ? "up" : "down", secs(need));
    else
        deny(w, l, req->kind, asked,
             "the witness started %.1f s ago and has not heard the primary %s since; a "
             "fail-over needs %.1f s of silence",
             secs(now - since), p->name, secs(need));
    return false;
}

static void
vote(struct witness *w, struct wlink *l, const struct msg_control *req)
{
    struct wsite *s = link_site(l);
    uint64_t asked = req->value, now = clock_mono_us();
    struct wm_state next;
    struct wsite *p;
    char when[64], text[512];

    if (req->kind == MSG_CTL_VOTE_REQUEST)
        log_info(w->comp, "%s asks for epoch %" PRIu64 ": promotion (durable " LSN_FMT
                 ", failover_timeout %" PRIu64 " ms)", s->name, asked, LSN_ARGS(req->lsn),
                 req->value2);
    else
        log_info(w->comp, "%s asks for epoch %" PRIu64 ": %s (durable " LSN_FMT ", standby "
                 LSN_FMT ")", s->name, asked, ask_name(req->kind), LSN_ARGS(req->lsn),
                 LSN_ARGS(req->value2));
    if (asked == w->st.epoch && strcmp(w->st.primary, s->name) == 0) {
        /* Asked again by its holder (the grant lost with a link, or an agent that restarted
         * before it recorded it): the same grant, not a new one. */
        snprintf(text, sizeof(text), "epoch %" PRIu64 " is %s's already: granted at %s",
                 asked, s->name, wm_format_utc(when, sizeof(when), w->st.changed_unix_us));
        log_info(w->comp, "%s", text);
        send_verdict(w, l, MSG_CTL_VOTE_GRANT, text);
        return;
    }
    if (asked != w->st.epoch + 1) {
        if (asked <= w->st.epoch)
            deny(w, l, req->kind, asked,
                 "epoch %" PRIu64 " is already taken: the witness is at epoch %" PRIu64
                 ", held by %s since %s%s",
                 asked, w->st.epoch, w->st.primary[0] != '\0' ? w->st.primary : "an unknown node",
                 wm_format_utc(when, sizeof(when), w->st.changed_unix_us),
                 state_exposed(&w->st) ? ", running exposed" : "");
        else
            deny(w, l, req->kind, asked,
                 "epoch %" PRIu64 " skips ahead: the witness is at epoch %" PRIu64, asked,
                 w->st.epoch);
        return;
    }
    p = &w->sites[primary_site(w, l->site)];
    state_init(&next);
    next.epoch = asked;
    next.changed_unix_us = clock_unix_us();
    snprintf(next.primary, sizeof(next.primary), "%s", s->name);
    switch (req->kind) {
    case MSG_CTL_VOTE_REQUEST:
        if (!promotion_allowed(w, l, req, p))
            return;
        /* The new primary has no standby until the old site rejoins and catches up. */
        next.exposed_lsn = req->lsn;
        next.exposed_unix_us = next.changed_unix_us;
        if (p->source_us > w->started_us)
            snprintf(text, sizeof(text),
                     "epoch %" PRIu64 " granted to %s: the primary %s was last heard as the "
                     "source %.1f s ago",
                     asked, s->name, p->name,
                     secs(now - (p->source_us > w->started_us ? p->source_us : w->started_us)));
        else
            snprintf(text, sizeof(text),
                     "epoch %" PRIu64 " granted to %s: the primary %s has not been heard as the "
                     "source since the witness started %.1f s ago",
                     asked, s->name, p->name, secs(now - w->started_us));
        break;
    case MSG_CTL_EXPOSE_REQUEST:
    case MSG_CTL_RESYNC_REQUEST:
        /* Only the primary may change its own standby's standing: the holder of the current
         * epoch, or with none on record the site that reports itself the source. */
        if (p != s || (w->st.primary[0] == '\0' && s->role != MSG_ROLE_SOURCE)) {
            deny(w, l, req->kind, asked,
                 "%s is not the primary: epoch %" PRIu64 " is held by %s", s->name, w->st.epoch,
                 w->st.primary[0] != '\0' ? w->st.primary : p->name);
            return;
        }
        if (req->kind == MSG_CTL_EXPOSE_REQUEST && s->role != MSG_ROLE_SOURCE) {
            /* A primary that is down takes no commits: nothing to go on without B for, and
             * its standby must stay promotable. */
            deny(w, l, req->kind, asked, "%s does not report a running primary (%s)", s->name,
                 msg_role_name(s->role));
            return;
        }
        if (req->kind == MSG_CTL_EXPOSE_REQUEST) {
            next.exposed_lsn = req->value2;
            next.exposed_unix_us = next.changed_unix_us;
            snprintf(text, sizeof(text),
                     "epoch %" PRIu64 " granted to %s: it runs exposed; the standby %s is stale "
                     "below " LSN_FMT " and cannot be promoted until it is synchronous again",
                     asked, s->name, w->sites[1 - l->site].name, LSN_ARGS(req->value2));
        } else {
            snprintf(text, sizeof(text),
                     "epoch %" PRIu64 " granted to %s: its standby %s is synchronous again",
                     asked, s->name, w->sites[1 - l->site].name);
        }
        break;
    default:
        return;
    }

    /* Granted: on disk first, then told. */
    if (save_state(w, &next) < 0) {
        deny(w, l, req->kind, asked, "the witness cannot record the grant");
        return;
    }
    log_info(w->comp, "%s (durable " LSN_FMT "; %s last reported durable " LSN_FMT ")", text,
             LSN_ARGS(req->lsn), p->name, LSN_ARGS(p->durable_lsn));
    send_verdict(w, l, MSG_CTL_VOTE_GRANT, text);
    s->told = w->st;
    /* Tell everyone else now.  Not the requester's link: raising a live link's epoch at one
     * end makes it refuse the other end's frames already in flight (a STATE sent before the
     * grant arrived), so that link keeps its epoch in the frame headers - the requester's
     * next connection carries the new one, and its STATE reports say it meanwhile. */
    raise_links(w, l);
    for (int i = 0; i < WITNESS_MAX_LINKS; i++) {
        struct wlink *o = w->links[i];

        if (o == NULL || o->dead || o == l || !o->established || link_site(o) == NULL)
            continue;
        send_record(w, o);
    }
}

static void
on_site_control(void *ctx, const struct msg_control *ctl)
{
    struct wlink *l = ctx;
    struct witness *w = l->w;
    struct wsite *s = link_site(l);
    uint64_t now;

    if (s == NULL || l->dead)
        return;
    switch (ctl->kind) {
    case MSG_CTL_STATE:
        now = clock_mono_us();
        if (s->state_us != 0)
            s->state_gap_us = now - s->state_us;
        s->state_us = now;
        if (ctl->value2 != s->role || ctl->value != s->epoch)
            log_info(w->comp, "%s reports %s, epoch %" PRIu64 ", durable %X/%X", s->name,
                     msg_role_name((uint8_t)ctl->value2), ctl->value, LSN_ARGS(ctl->lsn));
        s->role = (uint8_t)ctl->value2;
        s->epoch = ctl->value;
        s->durable_lsn = ctl->lsn;
        s->mark_lsn = ctl->mark_lsn;
        s->mark_unix_us = ctl->mark_unix_us;
        heard(s);
        if (adopt_epoch(w, s, ctl->value, s->role, ctl, l) < 0) {
            conn_close(l->c, -EIO, "the witness cannot record its state");
            return;
        }
        tell_record(w, l);
        return;
    case MSG_CTL_VOTE_REQUEST:
    case MSG_CTL_EXPOSE_REQUEST:
    case MSG_CTL_RESYNC_REQUEST:
        heard(s);
        vote(w, l, ctl);
        return;
    default:
        heard(s);
        log_debug(w->comp, "ignoring %s from %s", msg_ctl_name(ctl->kind), s->name);
        return;
    }
}

static void
on_site_epoch(void *ctx, uint64_t epoch)
{
    struct wlink *l = ctx;
    struct witness *w = l->w;
    struct wsite *s = link_site(l);

    /* During the HELLO exchange on_site_hello decides.  Afterwards: a site whose frames now
     * carry an epoch we hold - raise its link to match (that refuses nothing in flight).  An
     * epoch newer than ours is adopted from the STATE that carries it (with its role). */
    if (s == NULL || epoch > w->st.epoch)
        return;
    conn_set_epoch(l->c, epoch);
}

static void
on_site_closed(void *ctx, int reason, const char *message)
{
    struct wlink *l = ctx;
    struct witness *w = l->w;
    struct wsite *s = link_site(l);

    (void)reason;
    if (s != NULL && s->link == l)
        log_warning(w->comp, "%s down: %s (last heard %.1f s ago)", s->name, message,
                    secs(clock_mono_us() - s->heard_us));
    link_dead(l);
}

static void
ignore_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct wlink *l = ctx;

    (void)lsn;
    (void)data;
    (void)len;
    conn_close(l->c, WIRE_EPROTO, "a witness takes no WAL");
}

static void
ignore_ack(void *ctx, const struct msg_ack *ack)
{
    (void)ctx;
    (void)ack;
}

static const struct conn_ops site_ops = {
    .on_hello = on_site_hello,
    .on_established = on_site_established,
    .on_wal = ignore_wal,
    .on_ack = ignore_ack,
    .on_control = on_site_control,
    .on_epoch = on_site_epoch,
    .on_closed = on_site_closed,
};

static void
on_accept(struct wio_acceptor *acc, int fd)
{
    struct witness *w = (struct witness *)((char *)acc - offsetof(struct witness, acc));
    struct msg_hello hello = {.role = MSG_ROLE_WITNESS};
    struct conn_config cc = {
        .tls = w->tls,
        .peer_name = w->peer_names,
        .hello = &hello,
        .epoch = w->st.epoch,
        .heartbeat_ms = (unsigned)w->cfg->heartbeat_interval_ms,
        .timeout_ms = (unsigned)w->cfg->peer_timeout_ms,
    };
    struct wlink *l;
    int slot, rc;

    if (fd < 0) {
        /* Accepting has stopped (wio.h); witness_tick starts it again a second later. */
        log_error(w->comp, "accept on %s failed: %s", w->cfg->listen.text, wire_strerror(fd));
        w->accept_retry_at_ms = clock_mono_ms() + 1000;
        return;
    }
    snprintf(hello.node_name, sizeof(hello.node_name), "%s", w->cfg->node_name);
    for (slot = 0; slot < WITNESS_MAX_LINKS && w->links[slot] != NULL; slot++)
        ;
    if (slot == WITNESS_MAX_LINKS) {
        log_warning(w->comp, "too many connections at once; dropping one");
        close(fd);
        return;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        close(fd);
        return;
    }
    l->w = w;
    l->site = -1;
    rc = conn_new(&l->c, w->loop, fd, true, &cc, &site_ops, l);
    if (rc < 0) {
        free(l);
        log_error(w->comp, "cannot set up a link: %s", wire_strerror(rc));
        return;
    }
    w->links[slot] = l;
}

/* ---- status ---- */

static void
status_tick(struct witness *w)
{
    struct status_snapshot st = {0};
    const struct wsite *p;
    unsigned req;

    if (clock_mono_ms() - w->status_at_ms < WITNESS_STATUS_EVERY_MS)
        return;
    w->status_at_ms = clock_mono_ms();
    req = status_take(&w->board);
    if (req & (1u << STATUS_REQ_PAUSE) && !w->paused) {
        w->paused = true;
        log_info(w->comp, "automatic fail-over paused by an operator: every vote is denied");
    }
    if (req & (1u << STATUS_REQ_RESUME) && w->paused) {
        w->paused = false;
        log_info(w->comp, "automatic fail-over resumed by an operator");
    }
    snprintf(st.node_name, sizeof(st.node_name), "%s", w->cfg->node_name);
    snprintf(st.role, sizeof(st.role), "witness");
    snprintf(st.pg_state, sizeof(st.pg_state), "unknown");
    snprintf(st.maintenance, sizeof(st.maintenance), "none");
    snprintf(st.last_error, sizeof(st.last_error), "%s", w->last_error);
    st.epoch = w->st.epoch;
    st.started_unix_us = w->started_unix_us;
    st.now_unix_us = clock_unix_us();
    st.failover_paused = w->paused;
    st.spool_free_bytes = -1; /* a witness has no spool */
    st.cert_not_after_unix = w->cert_not_after;
    /* The "peer" of a witness: the primary, as far as it knows. */
    p = &w->sites[primary_site(w, 1)];
    if (w->st.primary[0] != '\0' || p->source_us != 0) {
        snprintf(st.peer_name, sizeof(st.peer_name), "%s", p->name);
        snprintf(st.peer_addr, sizeof(st.peer_addr), "%s", p->addr);
        st.link_up = p->link != NULL;
        st.rtt_us = p->link != NULL ? conn_rtt_us(p->link->c) : 0;
        st.flush_lsn = p->durable_lsn;
    }
    snprintf(st.sync_state, sizeof(st.sync_state), "%s",
             w->sites[0].link != NULL && w->sites[1].link != NULL ? "sync" : "down");
    status_publish(&w->board, &st);
}

/* ---- lifecycle ---- */

static void
reap_links(struct witness *w)
{
    for (int i = 0; i < WITNESS_MAX_LINKS; i++) {
        struct wlink *l = w->links[i];
        if (l != NULL && l->dead) {
            conn_free(l->c);
            free(l);
            w->links[i] = NULL;
        }
    }
}

static void
witness_tick(struct witness *w)
{
    reap_links(w);
    if (w->accept_retry_at_ms != 0 && clock_mono_ms() >= w->accept_retry_at_ms) {
        w->accept_retry_at_ms = 0;
        if (wio_accept_start(w->loop, &w->acc, w->listen_fd, on_accept) < 0)
            w->accept_retry_at_ms = clock_mono_ms() + 1000;
    }
    status_tick(w);
}

static int
witness_setup(struct witness *w)
{
    char err[512], when[64];
    int rc, port;

    rc = state_load(w->cfg->state_dir, &w->st, err, sizeof(err));
    if (rc < 0) {
        log_error(w->comp, "%s", err);
        return rc;
    }
    if (rc == 0)
        log_info(w->comp, "no state in %s yet: starting at epoch 1", w->cfg->state_dir);
    else
        log_info(w->comp, "epoch %" PRIu64 " held by %s since %s (state in %s)", w->st.epoch,
                 w->st.primary[0] != '\0' ? w->st.primary : "an unknown node",
                 wm_format_utc(when, sizeof(when), w->st.changed_unix_us), w->cfg->state_dir);
    rc = tls_config_new(&w->tls, w->cfg->tls_ca, w->cfg->tls_cert, w->cfg->tls_key, true, err,
                        sizeof(err));
    if (rc < 0) {
        log_error(w->comp, "%s", err);
        return rc;
    }
    rc = wio_loop_new(&w->loop, 256);
    if (rc < 0) {
        log_error(w->comp, "cannot set up io_uring: %s", wire_strerror(rc));
        return rc;
    }
    status_tick(w); /* the API's first answer is already the witness's */
    rc = httpapi_start(&w->http, w->cfg->http_listen.text, w->cfg->http_token_file, &w->board,
                       err, sizeof(err));
    if (rc < 0) {
        log_error(w->comp, "HTTP API on %s: %s", w->cfg->http_listen.text, err);
        return rc;
    }
    w->listen_fd = wio_listen_tcp(w->cfg->listen.text, 16, &port);
    if (w->listen_fd < 0) {
        log_error(w->comp, "cannot listen on %s: %s", w->cfg->listen.text,
                  wire_strerror(w->listen_fd));
        return w->listen_fd;
    }
    rc = wio_accept_start(w->loop, &w->acc, w->listen_fd, on_accept);
    if (rc < 0) {
        log_error(w->comp, "cannot accept on %s: %s", w->cfg->listen.text, wire_strerror(rc));
        return rc;
    }
    log_info(w->comp, "witness ready on %s for %s and %s, epoch %" PRIu64, w->cfg->listen.text,
             w->sites[0].name, w->sites[1].name, w->st.epoch);
    return 0;
}

static void
witness_teardown(struct witness *w)
{
    if (w->http != NULL)
        httpapi_stop(w->http); /* first: its thread reads the board */
    for (int i = 0; i < WITNESS_MAX_LINKS; i++) {
        struct wlink *l = w->links[i];
        if (l != NULL && !l->dead) {
            conn_close(l->c, 0, "witness shutting down");
            link_dead(l);
        }
    }
    /* A few turns, so that BYE frames leave and cancelled operations complete. */
    for (int i = 0; i < 20 && w->loop != NULL; i++)
        if (wio_run_once(w->loop, 10) <= 0)
            break;
    reap_links(w);
    if (w->listen_fd >= 0) {
        wio_accept_stop(&w->acc);
        for (int i = 0; i < 20 && wio_accept_busy(&w->acc); i++)
            if (wio_run_once(w->loop, 10) < 0)
                break;
        close(w->listen_fd);
    }
    if (w->loop != NULL)
        wio_loop_free(w->loop);
    tls_config_free(w->tls);
}

int
witness_run(const struct wm_config *cfg, volatile sig_atomic_t *stop)
{
    struct witness w = {.cfg = cfg, .listen_fd = -1};
    int rc;

    snprintf(w.comp, sizeof(w.comp), "witness[%s]", cfg->node_name);
    snprintf(w.peer_names, sizeof(w.peer_names), "%s,%s", cfg->sites[0].name, cfg->sites[1].name);
    for (int i = 0; i < 2; i++) {
        w.sites[i].name = cfg->sites[i].name;
        w.sites[i].addr = cfg->sites[i].addr.text;
    }
    status_board_init(&w.board);
    w.started_us = clock_mono_us();
    w.started_unix_us = clock_unix_us();
    if (tls_cert_not_after(cfg->tls_cert, &w.cert_not_after) < 0)
        w.cert_not_after = -1;
    rc = witness_setup(&w);
    if (rc < 0) {
        witness_teardown(&w);
        status_board_destroy(&w.board);
        return 1;
    }
    while (!*stop && !w.failed) {
        rc = wio_run_once(w.loop, 200);
        if (rc < 0) {
            log_error(w.comp, "event loop failed: %s", wire_strerror(rc));
            w.exit_status = 1;
            break;
        }
        witness_tick(&w);
    }
    log_info(w.comp, "stopping%s", w.failed ? " after a failure" : "");
    witness_teardown(&w);
    status_board_destroy(&w.board);
    return w.exit_status;
}
