/*
 * arbiter_etcd.c - the etcd arbiter (arbiter.h): the witness's decisions, made by each site's
 * agent against a record kept in an etcd cluster, one transaction per grant.
 *
 * What lives in etcd, under the pair's prefix P (etcd_prefix): P "epoch", the epoch record
 * (holder and mark); P "members/" NODE, each site's liveness key, bound to its lease; P
 * "paused", automatic fail-over paused (etcdrec.h has the JSON).  The client (etcd.h) speaks
 * etcd 3.4's JSON gateway under /v3/ with libcurl's multi interface driven from the agent's
 * own loop - no thread, no blocking call, every answer handled where the state lives, and a
 * cancelled call final at once; endpoints fail over there.
 *
 * The session: from the first arbiter_report() on, a lease of etcd_lease_ttl is granted
 * (IDLE -> GRANTING -> REGISTERING -> LIVE) and the liveness key put with it; the lease is
 * renewed every min(etcd_lease_ttl / 3, heartbeat_interval).  The key is rewritten at once
 * when the role, epoch, timeline, sync state or mark reported changes, and at most every
 * heartbeat_interval when only positions or lags do.  A renewal that finds the lease gone (a
 * keepalive answered without a TTL, a put refused "requested lease not found"), or a view
 * without our key, starts the session again.  The lease is never revoked: an agent that stops
 * leaves its key to expire, so a key that disappears always means etcd has not heard that site
 * for etcd_lease_ttl (or an operator deleted it).
 *
 * The view: a range of the whole prefix, then a watch of it from the next revision, so that
 * nothing between the two is missed; after every end of the watch (the member went, lost its
 * leader, the client moved to another endpoint, a compaction), a fresh range and watch.
 * Every key's knowledge carries the revision it is from; a read or an event older than what
 * is known is ignored.  Reads made for a request update the view too.
 *
 * The peer's silence, as this node observes its liveness key (every read and event is an
 * observation at its revision; the first is made when this arbiter starts):
 *   - present, role source: alive - a promotion is denied;
 *   - absent after this node has seen it present: etcd deleted it (its lease expired, etcd has
 *     not heard that site for the TTL) - a promotion may be granted at once;
 *   - absent and never seen present, or present with another role (its PostgreSQL is down):
 *     a promotion may be granted once this node has observed it so, without seeing it the
 *     source, for the witness's threshold max(2 x heartbeat_interval, min(failover_timeout,
 *     3 x heartbeat_interval)); the clock starts at the first such observation, and starts
 *     again when a key not seen continuously (a watch that was down meanwhile) has changed.
 *
 * A request (PROMOTE, EXPOSE, RESYNC for epoch + 1): read the prefix; decide by arbiter.h's
 * rules on what was read (with the witness's denial texts); a grant is one transaction
 *     compare: P epoch's mod_revision as read (create_revision 0 when there was no record);
 *              for a promotion also the primary's liveness key's (create_revision 0 when it
 *              was absent) and P paused still absent
 *     success: put P epoch = the next record (holder this node, and its mark)
 *     failure: range of the prefix
 * so that of two racing agents exactly one transaction succeeds; the other decides again on
 * the failure's range (up to EA_ROUNDS times) and is denied ("already taken").  A request
 * etcd does not answer is tried again every EA_RETRY_MS until ARBITER_VOTE_TIMEOUT_MS; a
 * transaction whose answer was lost may have been applied: the next read then shows this node
 * holding the epoch asked for, which is the holder's re-ask ("the same grant"), and if the
 * deadline came first, the watch brings the record as news (holder: this node).
 * With no epoch record (a fresh prefix) the record is epoch 1 without a holder; the first site
 * that reports itself the source at an epoch not below etcd's records itself its holder
 * (compare create_revision 0), and a site reporting an epoch newer than etcd's (a switchover)
 * has it adopted, held by it if it reports itself the source - as the witness does.
 *
 * News (on_epoch_news): the record, when newer than our epoch or ours with another holder and
 * mark than we reported, once per record; never the epoch a request in flight asks for.
 *
 * State: UP while etcd answers (the last call succeeded), the lease is live and the pair's
 * records have been read (so that UP also says that no newer epoch is on record);
 * DOWN when a call found no endpoint answering (describe() names each endpoint and why);
 * FENCED when etcd's record is newer than our epoch and we do not report ourselves a sink.
 * Requests need UP: -ENOTCONN otherwise.  Losing etcd changes nothing else: a primary keeps
 * serving (its standby cannot be promoted without etcd either).
 *
 * The tick (EA_TICK_MS) drives the session, the view's restarts, request retries and
 * deadlines, adoption retries and news.  Callbacks to the agent come from the tick and from
 * etcd's answers, never from inside an arbiter_* call.
 */
#include "arbiter_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "etcd.h"
#include "etcdrec.h"
#include "log.h"
#include "msg.h"
#include "util.h"

#define EA_TICK_MS 100
#define EA_RETRY_MS 200 /* a request or an adoption etcd did not answer */
#define EA_SESSION_RETRY_MS 500
#define EA_WATCH_RETRY_MS 200
#define EA_ROUNDS 4 /* decisions per request while the record changes under it */
#define EA_KEY_MAX (ETCDREC_PREFIX_MAX + 16 + STATE_NAME_MAX)

enum ea_session {
    EA_IDLE,        /* no lease; the next grant at session_retry_ms */
    EA_GRANTING,    /* lease/grant in flight */
    EA_REGISTERING, /* the liveness key's first put in flight */
    EA_LIVE,        /* lease renewed, key written */
};

static const char *const session_names[] = {"idle", "granting", "registering", "live"};

enum ea_watch {
    EW_IDLE,     /* next start at watch_retry_ms */
    EW_READING,  /* the range before the watch */
    EW_WATCHING, /* the watch stream */
};

/* The request's step: what its call in flight is. */
enum ea_step {
    EQ_READ, /* the range of the prefix it decides on */
    EQ_TXN,  /* the grant's transaction */
};

/* What is known of one key, and from which revision. */
struct ea_key {
    int64_t rev; /* 0: nothing known yet */
    bool present;
    int64_t mod_rev;
};

/* The pair's keys, as read at one revision or as kept up to date by the watch. */
struct ea_view {
    int64_t revision;
    struct ea_key epoch, paused, self, peer;
    struct wm_state rec; /* epoch.present: as recorded; else epoch 1, no holder */
    struct etcdrec_member self_m, peer_m;
    char foreign[STATE_NAME_MAX + 1]; /* a member that is neither of the pair's nodes */
    char bad[EA_KEY_MAX + 256];       /* the epoch record cannot be read: why */
};

/* The peer's silence as this node has observed its liveness key. */
struct ea_obs {
    bool seen;            /* observed at least once */
    bool present;         /* at the last observation */
    int64_t mod_rev, rev; /* of the last observation */
    bool expired;         /* seen present, then absent: etcd deleted it */
    uint64_t quiet_ms;    /* since when observed absent or not the source; 0: the source */
};

struct earb;

struct ea_timer {
    struct wio_timer t;
    struct earb *a; /* NULL once the arbiter is gone */
};

struct earb {
    struct arbiter base;
    const struct wm_config *cfg;
    struct wio_loop *loop;
    struct etcd_client *etcd;
    struct ea_timer *timer;
    char comp[96];
    const char *prefix;
    char k_epoch[EA_KEY_MAX], k_paused[EA_KEY_MAX], k_self[EA_KEY_MAX], k_peer[EA_KEY_MAX];
    uint64_t ttl_s, keepalive_ms;

    /* the session */
    enum ea_session session;
    int64_t lease;
    struct etcd_req *sess_req, *ka_req, *put_req;
    uint64_t session_retry_ms, ka_due_ms, put_at_ms;
    bool put_dirty, put_urgent;
    bool up;
    char down_why[ETCD_WHY_MAX];

    /* what the agent reported */
    bool reported;
    uint64_t epoch; /* ours: reported or granted, never lower */
    uint64_t mark_lsn, mark_unix_us;
    char holder[STATE_NAME_MAX + 1]; /* who holds our epoch, by our record ("": not known) */
    struct etcdrec_member me;

    /* the view */
    enum ea_watch watch_state;
    struct etcd_req *watch_req;
    int watch_ep;
    uint64_t watch_retry_ms;
    bool have_view;
    struct ea_view view;
    struct ea_obs obs;

    /* adoption of a reported epoch */
    struct etcd_req *adopt_req;
    uint64_t adopt_retry_ms;

    /* the request in flight */
    bool pending;
    struct arbiter_request req;
    uint64_t req_epoch, req_deadline_ms, req_retry_ms;
    struct etcd_req *req_call;
    enum ea_step req_step;
    int req_rounds;
    struct wm_state req_next;
    char req_text[512];
    char req_why[ETCD_WHY_MAX];

    struct wm_state told; /* what on_epoch_news was last given */
    char desc[ETCD_WHY_MAX + EA_KEY_MAX + 256];
};

static void ea_tick(struct wio_timer *t);
static void ea_decide(struct earb *a, const struct ea_view *v);
static void ea_after_view(struct earb *a);

static double
secs_ms(uint64_t ms)
{
    return (double)ms / 1000.0;
}

static const char *
holder_name(const struct wm_state *st)
{
    return st->primary[0] != '\0' ? st->primary : "an unknown node";
}

static bool
ea_fenced(const struct earb *a)
{
    return a->have_view && a->view.rec.epoch > a->epoch && a->me.role != MSG_ROLE_SINK;
}

static void
ea_update_desc(struct earb *a)
{
    const char *url = etcd_client_url(a->etcd, etcd_client_current(a->etcd));
    uint64_t e = a->have_view && a->view.rec.epoch > a->epoch ? a->view.rec.epoch : a->epoch;
    char extra[EA_KEY_MAX + 96] = "";

    if (a->have_view && a->view.paused.present)
        snprintf(extra, sizeof(extra), "; automatic fail-over paused (%s)", a->k_paused);
    else if (a->have_view && a->view.foreign[0] != '\0')
        snprintf(extra, sizeof(extra), "; %s also holds a member %.64s of another pair", a->prefix,
                 a->view.foreign);
    if (ea_fenced(a))
        snprintf(a->desc, sizeof(a->desc), "etcd@%s fenced: epoch %" PRIu64 " is held by %s", url,
                 a->view.rec.epoch, holder_name(&a->view.rec));
    else if (!a->reported)
        snprintf(a->desc, sizeof(a->desc), "etcd@%s not connected yet", url);
    else if (a->up && a->session == EA_LIVE && a->have_view)
        snprintf(a->desc, sizeof(a->desc), "etcd@%s up, epoch %" PRIu64 "%s", url, e, extra);
    else
        snprintf(a->desc, sizeof(a->desc), "etcd down (%s), epoch %" PRIu64,
                 a->down_why[0] != '\0' ? a->down_why : session_names[a->session], e);
}

static void
ea_up(struct earb *a)
{
    if (!a->up)
        log_info(a->comp, "etcd up at %s", etcd_client_url(a->etcd, etcd_client_current(a->etcd)));
    a->up = true;
    a->down_why[0] = '\0';
    ea_update_desc(a);
}

/* A call found no endpoint answering (why: each endpoint and its reason). */
static void
ea_down(struct earb *a, const char *why)
{
    if (a->up || a->down_why[0] == '\0')
        log_warning(a->comp, "etcd down: %s", why);
    a->up = false;
    snprintf(a->down_why, sizeof(a->down_why), "%s", why);
    ea_update_desc(a);
}

/* ---- JSON for etcd ---- */

static json_t *
b64s(const char *s)
{
    return etcd_b64(s, strlen(s));
}

static json_t *
range_prefix_body(struct earb *a)
{
    return json_pack("{s:o, s:o}", "key", b64s(a->prefix), "range_end", etcd_prefix_end(a->prefix));
}

/* A transaction's compare: key unchanged since read at mod_rev, or still absent (0). */
static json_t *
compare_rev(const char *key, int64_t mod_rev)
{
    if (mod_rev == 0)
        return json_pack("{s:o, s:s, s:s, s:I}", "key", b64s(key), "target", "CREATE", "result",
                         "EQUAL", "create_revision", (json_int_t)0);
    return json_pack("{s:o, s:s, s:s, s:I}", "key", b64s(key), "target", "MOD", "result", "EQUAL",
                     "mod_revision", (json_int_t)mod_rev);
}

/* A transaction: if compares hold, put key = value (with lease when not 0); else range the
 * prefix.  compares is taken. */
static json_t *
txn_body(struct earb *a, json_t *compares, const char *key, const char *value, int64_t lease)
{
    json_t *put = json_pack("{s:o, s:o}", "key", b64s(key), "value", b64s(value));

    if (put != NULL && lease != 0)
        json_object_set_new(put, "lease", json_integer((json_int_t)lease));
    return json_pack("{s:o, s:[{s:o}], s:[{s:o}]}", "compare", compares, "success", "request_put",
                     put, "failure", "request_range", range_prefix_body(a));
}

/* ---- the view ---- */

static void
view_init(struct ea_view *v)
{
    memset(v, 0, sizeof(*v));
    state_init(&v->rec);
}

/* One key-value (or its deletion, kv->value NULL) at revision rev into v. */
static void
view_put(struct earb *a, struct ea_view *v, const struct etcd_kv *kv, bool deleted, int64_t rev)
{
    const char *name = NULL;
    size_t name_len = 0;
    struct ea_key *k = NULL;
    char err[200];

    switch (etcdrec_classify(a->prefix, kv->key, kv->key_len, &name, &name_len)) {
    case ETCDREC_KEY_EPOCH:
        k = &v->epoch;
        break;
    case ETCDREC_KEY_PAUSED:
        k = &v->paused;
        break;
    case ETCDREC_KEY_MEMBER:
        if (name_len == strlen(a->cfg->node_name) && memcmp(name, a->cfg->node_name, name_len) == 0)
            k = &v->self;
        else if (name_len == strlen(a->cfg->peer.name) &&
                 memcmp(name, a->cfg->peer.name, name_len) == 0)
            k = &v->peer;
        else if (deleted && strlen(v->foreign) == name_len &&
                 memcmp(v->foreign, name, name_len) == 0)
            v->foreign[0] = '\0';
        else if (!deleted)
            snprintf(v->foreign, sizeof(v->foreign), "%.*s",
                     (int)(name_len < STATE_NAME_MAX ? name_len : STATE_NAME_MAX), name);
        break;
    case ETCDREC_KEY_OTHER:
        break;
    }
    if (k == NULL || rev <= k->rev)
        return;
    k->rev = rev;
    k->present = !deleted;
    k->mod_rev = deleted ? 0 : kv->mod_revision;
    if (k == &v->epoch) {
        v->bad[0] = '\0';
        if (deleted)
            state_init(&v->rec);
        else if (etcdrec_epoch_parse(kv->value, kv->value_len, &v->rec, err, sizeof(err)) < 0)
            snprintf(v->bad, sizeof(v->bad), "%s: %s", a->k_epoch, err);
    } else if (k == &v->self || k == &v->peer) {
        struct etcdrec_member *m = k == &v->self ? &v->self_m : &v->peer_m;
        struct etcdrec_member parsed;

        if (deleted)
            return; /* keep the last record: the denials quote its positions */
        if (etcdrec_member_parse(kv->value, kv->value_len, &parsed, err, sizeof(err)) < 0) {
            log_warning(a->comp, "%.*s: %s", (int)kv->key_len, kv->key, err);
            parsed = *m;
            parsed.role = MSG_ROLE_UNKNOWN; /* unreadable: not the source */
        }
        *m = parsed;
    }
}

/* A range answer (its "kvs" at its header's revision) into v, a fresh view.  Returns 0 or
 * -EPROTO (why in err). */
static int
view_from_range(struct earb *a, json_t *range, struct ea_view *v, char *err, size_t errlen)
{
    json_t *kvs = json_object_get(range, "kvs"), *kv;
    int64_t rev = etcd_int(json_object_get(range, "header"), "revision");
    size_t i;

    view_init(v);
    if (rev <= 0 || (kvs != NULL && !json_is_array(kvs))) {
        snprintf(err, errlen, "a range answer without a revision or key list");
        return -EPROTO;
    }
    v->revision = rev;
    json_array_foreach(kvs, i, kv)
    {
        struct etcd_kv d;

        if (etcd_kv_decode(kv, &d) < 0) {
            snprintf(err, errlen, "a range answer with a malformed key");
            return -EPROTO;
        }
        view_put(a, v, &d, false, rev);
        etcd_kv_clear(&d);
    }
    /* What the range did not return is absent at its revision. */
    if (v->epoch.rev == 0)
        v->epoch = (struct ea_key){.rev = rev};
    if (v->paused.rev == 0)
        v->paused = (struct ea_key){.rev = rev};
    if (v->self.rev == 0)
        v->self = (struct ea_key){.rev = rev};
    if (v->peer.rev == 0)
        v->peer = (struct ea_key){.rev = rev};
    return 0;
}

/*
 * An observation of the peer's liveness key (see the header): present or not, at revision rev;
 * continuous when it comes from the watch, which has delivered every change since the last.
 */
static void
ea_observe(struct earb *a, const struct ea_key *k, const struct etcdrec_member *m, bool continuous)
{
    struct ea_obs *o = &a->obs;
    uint64_t now = clock_mono_ms();
    bool source = k->present && m->role == MSG_ROLE_SOURCE;
    bool was_source = o->seen && o->present && o->quiet_ms == 0;

    if (o->seen && k->rev <= o->rev)
        return;
    if (o->seen && k->present == o->present && (!k->present || k->mod_rev == o->mod_rev)) {
        o->rev = k->rev;
        return;
    }
    if (source) {
        o->quiet_ms = 0;
        o->expired = false;
    } else if (!k->present) {
        if (o->seen && o->present)
            o->expired = true;
        if (o->quiet_ms == 0)
            o->quiet_ms = now;
    } else {
        o->expired = false;
        if (o->quiet_ms == 0 || !continuous)
            o->quiet_ms = now;
    }
    if (o->seen && source != was_source)
        log_info(a->comp, "%s's liveness key: %s", a->cfg->peer.name,
                 source       ? "the source"
                 : k->present ? msg_role_name(m->role)
                              : "gone");
    o->seen = true;
    o->present = k->present;
    o->mod_rev = k->mod_rev;
    o->rev = k->rev;
}

/* Merges a fresh view (a read) into the one kept: each key newer than known. */
static void
ea_merge(struct earb *a, const struct ea_view *v)
{
    struct ea_view *w = &a->view;

    if (!a->have_view) {
        *w = *v;
        a->have_view = true;
    } else {
        if (v->epoch.rev > w->epoch.rev) {
            w->epoch = v->epoch;
            w->rec = v->rec;
            memcpy(w->bad, v->bad, sizeof(w->bad));
        }
        if (v->paused.rev > w->paused.rev)
            w->paused = v->paused;
        if (v->self.rev > w->self.rev) {
            w->self = v->self;
            if (v->self.present)
                w->self_m = v->self_m;
        }
        if (v->peer.rev > w->peer.rev) {
            w->peer = v->peer;
            if (v->peer.present)
                w->peer_m = v->peer_m;
        }
        if (v->revision > w->revision) {
            memcpy(w->foreign, v->foreign, sizeof(w->foreign));
            w->revision = v->revision;
        }
    }
    ea_observe(a, &v->peer, &v->peer_m, false);
}

/* A range answer read into a fresh view v and merged into the one kept.  Returns 0, or -EPROTO
 * with why in err. */
static int
ea_read_view(struct earb *a, json_t *range, struct ea_view *v, char *err, size_t errlen)
{
    int rc = view_from_range(a, range, v, err, errlen);

    if (rc == 0) {
        ea_merge(a, v);
        ea_after_view(a);
    }
    return rc;
}

/* The range a transaction answers with when its compares failed (txn_body's failure). */
static json_t *
txn_failure_range(json_t *answer)
{
    return json_object_get(json_array_get(json_object_get(answer, "responses"), 0),
                           "response_range");
}

/* ---- news and adoption ---- */

static bool
mark_equal(const struct wm_state *r, uint64_t lsn, uint64_t unix_us)
{
    return r->exposed_lsn == lsn && r->exposed_unix_us == unix_us;
}

/* Tells the agent of the record if it is news (see the header), once per record. */
static void
ea_news(struct earb *a)
{
    const struct wm_state *r = &a->view.rec;

    if (!a->have_view || !a->reported || !a->view.epoch.present || r->epoch < a->epoch)
        return;
    if (r->epoch == a->epoch &&
        (r->primary[0] == '\0' || strcmp(r->primary, a->cfg->node_name) == 0 ||
         mark_equal(r, a->mark_lsn, a->mark_unix_us)))
        return;
    if (a->pending && r->epoch == a->req_epoch)
        return; /* may be the grant awaited */
    if (r->epoch == a->told.epoch && strcmp(r->primary, a->told.primary) == 0 &&
        mark_equal(r, a->told.exposed_lsn, a->told.exposed_unix_us))
        return;
    a->told = *r;
    log_warning(a->comp, "epoch %" PRIu64 " is held by %s%s; ours is %" PRIu64, r->epoch,
                holder_name(r), state_exposed(r) ? ", running exposed" : "", a->epoch);
    arbiter_tell_epoch_news(&a->base, r);
}

static void
ea_on_adopt(void *ctx, int rc, json_t *answer, const char *why)
{
    struct earb *a = ctx;
    struct ea_view v;
    char err[200];

    a->adopt_req = NULL;
    if (rc < 0) {
        if (rc == -ENOTCONN)
            ea_down(a, why);
        log_warning(a->comp, "cannot record epoch %" PRIu64 " in etcd: %s", a->epoch, why);
        a->adopt_retry_ms = clock_mono_ms() + EA_RETRY_MS;
        return;
    }
    ea_up(a);
    if (json_is_true(json_object_get(answer, "succeeded"))) {
        log_info(a->comp, "epoch %" PRIu64 " recorded in etcd (held by %s)", a->epoch,
                 a->holder[0] != '\0'            ? a->holder
                 : a->me.role == MSG_ROLE_SOURCE ? a->cfg->node_name
                                                 : "an unknown node");
        return; /* the watch brings the record */
    }
    (void)ea_read_view(a, txn_failure_range(answer), &v, err, sizeof(err));
}

/*
 * A site reporting an epoch newer than etcd's record has it recorded, held by the holder its
 * own record of that epoch names (after a switchover the old primary learns the new epoch,
 * held by its peer, while it still reports itself the source), else by it if it reports
 * itself the source; the source at etcd's epoch without a holder records itself.
 */
static void
ea_adopt(struct earb *a)
{
    const struct wm_state *r = &a->view.rec;
    struct wm_state next;
    bool source = a->me.role == MSG_ROLE_SOURCE;
    char *value;
    json_t *cmp;
    int rc;

    if (!a->have_view || !a->reported || a->adopt_req != NULL || a->pending ||
        clock_mono_ms() < a->adopt_retry_ms || a->view.bad[0] != '\0' || !a->up)
        return;
    if (a->epoch > r->epoch) {
        state_init(&next);
        next.epoch = a->epoch;
        if (a->holder[0] != '\0')
            snprintf(next.primary, sizeof(next.primary), "%s", a->holder);
        else if (source)
            snprintf(next.primary, sizeof(next.primary), "%s", a->cfg->node_name);
        next.exposed_lsn = a->mark_lsn;
        next.exposed_unix_us = a->mark_unix_us;
    } else if (a->epoch == r->epoch && r->primary[0] == '\0' && source) {
        next = *r;
        snprintf(next.primary, sizeof(next.primary), "%s", a->cfg->node_name);
    } else {
        return;
    }
    next.changed_unix_us = clock_unix_us();
    value = etcdrec_epoch_json(&next);
    cmp = json_pack("[o]", compare_rev(a->k_epoch, a->view.epoch.mod_rev));
    if (value == NULL || cmp == NULL) {
        free(value);
        json_decref(cmp);
        return;
    }
    log_info(a->comp, "recording epoch %" PRIu64 " in etcd (held by %s; etcd had %" PRIu64 ")",
             next.epoch, holder_name(&next), r->epoch);
    rc = etcd_call(a->etcd, "kv/txn", txn_body(a, cmp, a->k_epoch, value, 0), ea_on_adopt, a,
                   &a->adopt_req);
    free(value);
    if (rc < 0)
        a->adopt_retry_ms = clock_mono_ms() + EA_RETRY_MS;
}

/* The view changed: news, adoption, our own key. */
static void
ea_after_view(struct earb *a)
{
    if (a->session == EA_LIVE && a->view.self.rev != 0 && !a->view.self.present &&
        a->put_req == NULL) {
        a->put_dirty = a->put_urgent = true; /* our key went: write it again */
    }
    ea_news(a);
    ea_adopt(a);
    ea_update_desc(a);
}

/* ---- the watch ---- */

static void
ea_watch_msg(void *ctx, json_t *result)
{
    struct earb *a = ctx;
    json_t *events = json_object_get(result, "events"), *ev;
    size_t i;

    if (json_is_true(json_object_get(result, "canceled")) ||
        etcd_int(result, "compact_revision") > 0) {
        log_info(a->comp, "the watch was %s; reading again",
                 etcd_int(result, "compact_revision") > 0 ? "compacted away" : "cancelled");
        etcd_cancel(a->watch_req);
        a->watch_req = NULL;
        a->watch_state = EW_IDLE;
        a->watch_retry_ms = clock_mono_ms();
        return;
    }
    if (json_is_true(json_object_get(result, "created")))
        log_debug(a->comp, "watching %s from revision %" PRId64 " at %s", a->prefix,
                  a->view.revision + 1, etcd_client_url(a->etcd, a->watch_ep));
    json_array_foreach(events, i, ev)
    {
        struct etcd_kv kv;
        bool deleted = strcmp(json_string_value(json_object_get(ev, "type")) != NULL
                                  ? json_string_value(json_object_get(ev, "type"))
                                  : "PUT",
                              "DELETE") == 0;

        if (etcd_kv_decode(json_object_get(ev, "kv"), &kv) < 0) {
            log_warning(a->comp, "ignoring a malformed watch event");
            continue;
        }
        view_put(a, &a->view, &kv, deleted, kv.mod_revision);
        if (kv.mod_revision > a->view.revision)
            a->view.revision = kv.mod_revision;
        etcd_kv_clear(&kv);
    }
    if (json_array_size(events) > 0) {
        ea_observe(a, &a->view.peer, &a->view.peer_m, true);
        ea_after_view(a);
    }
}

static void
ea_watch_end(void *ctx, int rc, json_t *answer, const char *why)
{
    struct earb *a = ctx;

    (void)answer;
    a->watch_req = NULL;
    a->watch_state = EW_IDLE;
    a->watch_retry_ms = clock_mono_ms() + EA_WATCH_RETRY_MS;
    log_info(a->comp, "the watch of %s ended (%s); reading again", a->prefix,
             rc == 0 && why[0] == '\0' ? "closed" : why);
}

static void
ea_watch_read(void *ctx, int rc, json_t *answer, const char *why)
{
    struct earb *a = ctx;
    struct ea_view v;
    json_t *create;
    char err[200];

    a->watch_req = NULL;
    a->watch_state = EW_IDLE;
    a->watch_retry_ms = clock_mono_ms() + EA_WATCH_RETRY_MS;
    if (rc < 0 || ea_read_view(a, answer, &v, err, sizeof(err)) < 0) {
        if (rc == -ENOTCONN)
            ea_down(a, why);
        log_debug(a->comp, "cannot read %s: %s", a->prefix, rc < 0 ? why : err);
        return;
    }
    create =
        json_pack("{s:o, s:o, s:I}", "key", b64s(a->prefix), "range_end",
                  etcd_prefix_end(a->prefix), "start_revision", (json_int_t)(a->view.revision + 1));
    a->watch_ep = etcd_client_current(a->etcd);
    if (create != NULL &&
        etcd_watch(a->etcd, create, ea_watch_msg, ea_watch_end, a, &a->watch_req) == 0)
        a->watch_state = EW_WATCHING;
}

static void
ea_watch_step(struct earb *a, uint64_t now)
{
    if (a->watch_state == EW_WATCHING && a->watch_ep != etcd_client_current(a->etcd)) {
        /* The client moved on from the watch's member (it stopped answering). */
        log_info(a->comp, "moving the watch from %s to %s", etcd_client_url(a->etcd, a->watch_ep),
                 etcd_client_url(a->etcd, etcd_client_current(a->etcd)));
        etcd_cancel(a->watch_req);
        a->watch_req = NULL;
        a->watch_state = EW_IDLE;
        a->watch_retry_ms = now;
    }
    if (a->watch_state != EW_IDLE || now < a->watch_retry_ms)
        return;
    if (etcd_call(a->etcd, "kv/range", range_prefix_body(a), ea_watch_read, a, &a->watch_req) == 0)
        a->watch_state = EW_READING;
    else
        a->watch_retry_ms = now + EA_WATCH_RETRY_MS;
}

/* ---- the session: lease and liveness key ---- */

static void
ea_session_restart(struct earb *a, const char *why)
{
    log_info(a->comp, "lease %" PRId64 " lost (%s): granting a new one", a->lease, why);
    etcd_cancel(a->ka_req);
    etcd_cancel(a->put_req);
    a->ka_req = a->put_req = NULL;
    a->session = EA_IDLE;
    a->lease = 0;
    a->session_retry_ms = clock_mono_ms();
    ea_update_desc(a);
}

static bool
lease_gone(int rc, const char *why)
{
    return rc == -EREMOTEIO && strstr(why, "lease not found") != NULL;
}

static void ea_on_put(void *ctx, int rc, json_t *answer, const char *why);

static int
ea_put_member(struct earb *a, struct etcd_req **req)
{
    char *value;
    json_t *body;

    a->me.updated_unix_us = clock_unix_us();
    a->me.epoch = a->epoch;
    value = etcdrec_member_json(&a->me);
    if (value == NULL)
        return -ENOMEM;
    body = json_pack("{s:o, s:o, s:I}", "key", b64s(a->k_self), "value", b64s(value), "lease",
                     (json_int_t)a->lease);
    free(value);
    a->put_dirty = a->put_urgent = false;
    a->put_at_ms = clock_mono_ms();
    return etcd_call(a->etcd, "kv/put", body, ea_on_put, a, req);
}

static void
ea_on_put(void *ctx, int rc, json_t *answer, const char *why)
{
    struct earb *a = ctx;

    (void)answer;
    if (a->session == EA_REGISTERING)
        a->sess_req = NULL;
    else
        a->put_req = NULL;
    if (lease_gone(rc, why)) {
        ea_session_restart(a, why);
        return;
    }
    if (rc < 0) {
        a->put_dirty = true;
        if (rc == -ENOTCONN)
            ea_down(a, why);
        else
            log_warning(a->comp, "cannot write %s: %s", a->k_self, why);
        if (a->session == EA_REGISTERING) {
            a->session = EA_IDLE;
            a->session_retry_ms = clock_mono_ms() + EA_SESSION_RETRY_MS;
        }
        return;
    }
    if (a->session == EA_REGISTERING) {
        a->session = EA_LIVE;
        a->ka_due_ms = clock_mono_ms() + a->keepalive_ms;
        log_info(a->comp, "%s written, bound to lease %" PRId64 " (%" PRIu64 " s)", a->k_self,
                 a->lease, a->ttl_s);
    }
    ea_up(a);
}

static void
ea_on_lease(void *ctx, int rc, json_t *answer, const char *why)
{
    struct earb *a = ctx;
    int64_t id = rc == 0 ? etcd_int(answer, "ID") : 0;

    a->sess_req = NULL;
    if (rc < 0 || id <= 0) {
        if (rc == -ENOTCONN)
            ea_down(a, why);
        else
            log_warning(a->comp, "cannot get a lease: %s", rc < 0 ? why : "no ID in the answer");
        a->session = EA_IDLE;
        a->session_retry_ms = clock_mono_ms() + EA_SESSION_RETRY_MS;
        return;
    }
    a->lease = id;
    a->session = EA_REGISTERING;
    if (ea_put_member(a, &a->sess_req) < 0) {
        a->session = EA_IDLE;
        a->session_retry_ms = clock_mono_ms() + EA_SESSION_RETRY_MS;
    }
}

static void
ea_on_keepalive(void *ctx, int rc, json_t *answer, const char *why)
{
    struct earb *a = ctx;

    a->ka_req = NULL;
    if (rc < 0) {
        if (rc == -ENOTCONN)
            ea_down(a, why);
        else if (lease_gone(rc, why))
            ea_session_restart(a, why);
        else
            log_warning(a->comp, "lease keepalive: %s", why);
        return;
    }
    if (etcd_int(answer, "TTL") <= 0) {
        ea_session_restart(a, "it expired");
        return;
    }
    ea_up(a);
}

static void
ea_session_step(struct earb *a, uint64_t now)
{
    json_t *body;

    switch (a->session) {
    case EA_IDLE:
        if (now < a->session_retry_ms)
            return;
        body = json_pack("{s:I}", "TTL", (json_int_t)a->ttl_s);
        if (etcd_call(a->etcd, "lease/grant", body, ea_on_lease, a, &a->sess_req) == 0)
            a->session = EA_GRANTING;
        else
            a->session_retry_ms = now + EA_SESSION_RETRY_MS;
        return;
    case EA_GRANTING:
    case EA_REGISTERING:
        return;
    case EA_LIVE:
        break;
    }
    if (a->ka_req == NULL && now >= a->ka_due_ms) {
        a->ka_due_ms = now + a->keepalive_ms;
        body = json_pack("{s:I}", "ID", (json_int_t)a->lease);
        if (etcd_call(a->etcd, "lease/keepalive", body, ea_on_keepalive, a, &a->ka_req) < 0)
            log_warning(a->comp, "cannot renew lease %" PRId64, a->lease);
    }
    if (a->put_req == NULL && a->put_dirty &&
        (a->put_urgent || now - a->put_at_ms >= a->cfg->heartbeat_interval_ms)) {
        if (ea_put_member(a, &a->put_req) < 0)
            a->put_dirty = true;
    }
}

/* ---- requests ---- */

static void
ea_verdict(struct earb *a, bool granted, const struct wm_state *epoch, const char *why)
{
    struct arbiter_request req = a->req;

    a->pending = false;
    etcd_cancel(a->req_call);
    a->req_call = NULL;
    log_info(a->comp, "%s (epoch %" PRIu64 ") %s: %s", arbiter_ask_name(req.ask), a->req_epoch,
             granted ? "granted" : "denied", why);
    arbiter_tell_verdict(&a->base, &req, granted, epoch, why);
    ea_news(a); /* an epoch rise held back for the request is news now */
    ea_adopt(a);
}

static void __attribute__((format(printf, 3, 4)))
ea_deny(struct earb *a, const struct ea_view *v, const char *fmt, ...)
{
    char why[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (v != NULL) {
        ea_verdict(a, false, &v->rec, why);
    } else {
        struct wm_state unknown = {0};

        ea_verdict(a, false, &unknown, why);
    }
}

/* etcd did not answer a step of the request: again a little later, or denied at the end. */
static void
ea_req_failed(struct earb *a, int rc, const char *why)
{
    uint64_t now = clock_mono_ms();

    if (rc == -ENOTCONN)
        ea_down(a, why);
    snprintf(a->req_why, sizeof(a->req_why), "%s", why);
    if (rc == -ENOTCONN && now + EA_RETRY_MS < a->req_deadline_ms) {
        a->req_retry_ms = now + EA_RETRY_MS;
        return;
    }
    ea_deny(a, NULL, "etcd did not answer: %s", why);
}

/* A transaction's success: the grant, as recorded. */
static void
ea_req_granted(struct earb *a, json_t *answer)
{
    int64_t rev = etcd_int(json_object_get(answer, "header"), "revision");

    if (a->req_next.epoch > a->epoch)
        a->epoch = a->req_next.epoch;
    snprintf(a->holder, sizeof(a->holder), "%s", a->req_next.primary);
    a->mark_lsn = a->req_next.exposed_lsn;
    a->mark_unix_us = a->req_next.exposed_unix_us;
    if (rev > a->view.epoch.rev) {
        a->view.epoch = (struct ea_key){.rev = rev, .present = true, .mod_rev = rev};
        a->view.rec = a->req_next;
        a->view.bad[0] = '\0';
    }
    a->put_dirty = a->put_urgent = true;
    ea_verdict(a, true, &a->req_next, a->req_text);
    ea_update_desc(a);
}

/* etcd's answer to the request's read (EQ_READ) or transaction (EQ_TXN). */
static void
ea_req_on_answer(void *ctx, int rc, json_t *answer, const char *why)
{
    struct earb *a = ctx;
    struct ea_view v;
    char err[200];

    a->req_call = NULL;
    if (rc < 0) {
        /* A transaction may have been applied all the same: the next read tells. */
        ea_req_failed(a, rc, why);
        return;
    }
    ea_up(a);
    if (a->req_step == EQ_TXN && json_is_true(json_object_get(answer, "succeeded"))) {
        ea_req_granted(a, answer);
        return;
    }
    /* What was read, or what the failed transaction found instead of what it compared. */
    if (ea_read_view(a, a->req_step == EQ_TXN ? txn_failure_range(answer) : answer, &v, err,
                     sizeof(err)) < 0) {
        ea_deny(a, NULL, "etcd's answer cannot be read: %s", err);
        return;
    }
    if (a->req_step == EQ_TXN && ++a->req_rounds >= EA_ROUNDS) {
        ea_deny(a, &v, "etcd's record changed %d times while this node decided; ask again",
                a->req_rounds);
        return;
    }
    ea_decide(a, &v);
}

static void
ea_req_read(struct earb *a)
{
    a->req_retry_ms = 0;
    a->req_step = EQ_READ;
    if (etcd_call(a->etcd, "kv/range", range_prefix_body(a), ea_req_on_answer, a, &a->req_call) < 0)
        ea_deny(a, NULL, "cannot ask etcd: out of memory");
}

/* The silence the peer's key must have been observed in: the witness's threshold. */
static uint64_t
silence_needed_ms(const struct earb *a, uint64_t failover_timeout_ms)
{
    uint64_t hb = a->cfg->heartbeat_interval_ms, need = 3 * hb;

    if (failover_timeout_ms != 0 && failover_timeout_ms < need)
        need = failover_timeout_ms;
    if (need < 2 * hb)
        need = 2 * hb;
    return need;
}

/*
 * PROMOTE: whether this node may take over from the primary p (the peer).  Returns true with
 * the grant's text, or false after denying.
 */
static bool
ea_promotion_allowed(struct earb *a, const struct ea_view *v, const char *p)
{
    const char *me = a->cfg->node_name;
    const struct ea_obs *o = &a->obs;
    uint64_t asked = a->req_epoch, now = clock_mono_ms(), need, quiet;
    char since[64];

    if (v->paused.present) {
        ea_deny(a, v, "automatic fail-over is paused in etcd (%s exists; delete it to resume)",
                a->k_paused);
        return false;
    }
    if (strcmp(p, me) == 0) {
        ea_deny(a, v, "%s is the primary: it holds epoch %" PRIu64 " already", me, v->rec.epoch);
        return false;
    }
    if (state_exposed(&v->rec)) {
        /* A stale standby: the primary has acknowledged commits without it since the mark. */
        uint64_t theirs = v->peer_m.durable_lsn, ours = a->req.durable_lsn;

        ea_deny(a, v,
                "%s is stale: %s runs exposed since " LSN_FMT " (%s); %s holds WAL up to " LSN_FMT
                " and %s last reported " LSN_FMT ": up to %" PRIu64 " bytes acknowledged by %s "
                "may be missing (walmirrorctl failover --force --accept-data-loss overrides)",
                me, p, LSN_ARGS(v->rec.exposed_lsn),
                wm_format_utc(since, sizeof(since), v->rec.exposed_unix_us), me, LSN_ARGS(ours), p,
                LSN_ARGS(theirs), theirs > ours ? theirs - ours : 0, p);
        return false;
    }
    if (v->peer.present && v->peer_m.role == MSG_ROLE_SOURCE) {
        ea_deny(a, v,
                "the primary %s was heard: its liveness key in etcd says it is the source (its "
                "lease is alive); a fail-over needs that key gone or not the source",
                p);
        return false;
    }
    if (!v->peer.present && o->expired) {
        snprintf(a->req_text, sizeof(a->req_text),
                 "epoch %" PRIu64 " granted to %s: the primary %s's liveness key expired in "
                 "etcd (its lease ran out)",
                 asked, me, p);
        return true;
    }
    need = silence_needed_ms(a, a->req.failover_timeout_ms);
    quiet = o->quiet_ms != 0 ? now - o->quiet_ms : 0;
    if (quiet >= need) {
        snprintf(a->req_text, sizeof(a->req_text),
                 "epoch %" PRIu64 " granted to %s: the primary %s has not been the source in "
                 "etcd for %.1f s",
                 asked, me, p, secs_ms(quiet));
        return true;
    }
    if (v->peer.present)
        ea_deny(a, v,
                "the primary %s reported itself %s, not the source, %.1f s ago (its liveness key "
                "in etcd); a fail-over needs %.1f s since",
                p, msg_role_name(v->peer_m.role), secs_ms(quiet), secs_ms(need));
    else
        ea_deny(a, v,
                "the primary %s has no liveness key in etcd, and this node has seen none for "
                "%.1f s; a fail-over needs %.1f s",
                p, secs_ms(quiet), secs_ms(need));
    return false;
}

/* Decides the request in flight on v, a view read for it: denies, or sends the grant's
 * transaction. */
static void
ea_decide(struct earb *a, const struct ea_view *v)
{
    const char *me = a->cfg->node_name, *peer = a->cfg->peer.name, *p;
    const struct wm_state *r = &v->rec;
    uint64_t asked = a->req_epoch;
    struct wm_state next;
    char when[64], *value;
    json_t *cmp;
    int rc;

    if (!a->pending)
        return;
    if (v->bad[0] != '\0') {
        ea_deny(a, v, "the epoch record in etcd cannot be read: %s", v->bad);
        return;
    }
    if (asked == r->epoch && strcmp(r->primary, me) == 0) {
        /* Asked again by its holder (the grant lost with an answer, or an agent that restarted
         * before it recorded it): the same grant, not a new one. */
        snprintf(a->req_text, sizeof(a->req_text),
                 "epoch %" PRIu64 " is %s's already: granted at %s", asked, me,
                 wm_format_utc(when, sizeof(when), r->changed_unix_us));
        if (r->epoch > a->epoch)
            a->epoch = r->epoch;
        snprintf(a->holder, sizeof(a->holder), "%s", me);
        a->mark_lsn = r->exposed_lsn;
        a->mark_unix_us = r->exposed_unix_us;
        a->put_dirty = a->put_urgent = true;
        ea_verdict(a, true, r, a->req_text);
        return;
    }
    if (asked != r->epoch + 1) {
        if (asked <= r->epoch)
            ea_deny(a, v,
                    "epoch %" PRIu64 " is already taken: etcd is at epoch %" PRIu64
                    ", held by %s since %s%s",
                    asked, r->epoch, holder_name(r),
                    wm_format_utc(when, sizeof(when), r->changed_unix_us),
                    state_exposed(r) ? ", running exposed" : "");
        else
            ea_deny(a, v, "epoch %" PRIu64 " skips ahead: etcd is at epoch %" PRIu64, asked,
                    r->epoch);
        return;
    }
    /* The current primary: the holder on record, else the site whose key says source, else
     * the other site. */
    if (r->primary[0] != '\0')
        p = r->primary;
    else if (v->self.present && v->self_m.role == MSG_ROLE_SOURCE && a->req.ask != ARBITER_PROMOTE)
        p = me;
    else if (v->peer.present && v->peer_m.role == MSG_ROLE_SOURCE)
        p = peer;
    else
        p = a->req.ask == ARBITER_PROMOTE ? peer : "";
    if (p[0] != '\0' && strcmp(p, me) != 0 && strcmp(p, peer) != 0) {
        ea_deny(a, v,
                "epoch %" PRIu64 " is held by %s, which is neither %s nor %s: is %s shared with "
                "another pair?",
                r->epoch, p, me, peer, a->prefix);
        return;
    }
    if (v->foreign[0] != '\0') {
        ea_deny(a, v,
                "%s also holds a liveness key of %s, which is neither %s nor %s: is it "
                "shared with another pair?",
                a->prefix, v->foreign, me, peer);
        return;
    }
    state_init(&next);
    next.epoch = asked;
    next.changed_unix_us = clock_unix_us();
    snprintf(next.primary, sizeof(next.primary), "%s", me);
    cmp = json_pack("[o]", compare_rev(a->k_epoch, v->epoch.mod_rev));
    if (cmp == NULL) {
        ea_deny(a, v, "out of memory");
        return;
    }
    switch (a->req.ask) {
    case ARBITER_PROMOTE:
        if (!ea_promotion_allowed(a, v, p)) {
            json_decref(cmp);
            return;
        }
        /* The new primary has no standby until the old site rejoins and catches up. */
        next.exposed_lsn = a->req.durable_lsn;
        next.exposed_unix_us = next.changed_unix_us;
        json_array_append_new(cmp, compare_rev(a->k_peer, v->peer.present ? v->peer.mod_rev : 0));
        json_array_append_new(cmp, compare_rev(a->k_paused, 0));
        break;
    case ARBITER_EXPOSE:
    case ARBITER_RESYNC:
        /* Only the primary may change its own standby's standing: the holder of the current
         * epoch, or with none on record the site whose key says it is the source. */
        if (strcmp(p, me) != 0) {
            ea_deny(a, v, "%s is not the primary: epoch %" PRIu64 " is held by %s", me, r->epoch,
                    p[0] != '\0' ? p : holder_name(r));
            json_decref(cmp);
            return;
        }
        if (a->req.ask == ARBITER_EXPOSE) {
            next.exposed_lsn = a->req.standby_lsn;
            next.exposed_unix_us = next.changed_unix_us;
            snprintf(a->req_text, sizeof(a->req_text),
                     "epoch %" PRIu64 " granted to %s: it runs exposed; the standby %s is stale "
                     "below " LSN_FMT " and cannot be promoted until it is synchronous again",
                     asked, me, peer, LSN_ARGS(a->req.standby_lsn));
        } else {
            snprintf(a->req_text, sizeof(a->req_text),
                     "epoch %" PRIu64 " granted to %s: its standby %s is synchronous again", asked,
                     me, peer);
        }
        break;
    }
    a->req_next = next;
    value = etcdrec_epoch_json(&next);
    if (value == NULL) {
        json_decref(cmp);
        ea_deny(a, v, "out of memory");
        return;
    }
    a->req_step = EQ_TXN;
    rc = etcd_call(a->etcd, "kv/txn", txn_body(a, cmp, a->k_epoch, value, 0), ea_req_on_answer, a,
                   &a->req_call);
    free(value);
    if (rc < 0)
        ea_deny(a, v, "cannot ask etcd: %s", strerror(-rc));
}

/* ---- the tick ---- */

static void
ea_tick(struct wio_timer *t)
{
    struct ea_timer *et = (struct ea_timer *)t;
    struct earb *a = et->a;
    uint64_t now = clock_mono_ms();

    if (a == NULL)
        return;
    if (a->reported) {
        ea_session_step(a, now);
        ea_watch_step(a, now);
    }
    if (a->pending && now >= a->req_deadline_ms) {
        char why[ETCD_WHY_MAX + 64];

        snprintf(why, sizeof(why), "no answer from etcd within %.1f s%s%s",
                 ARBITER_VOTE_TIMEOUT_MS / 1000.0, a->req_why[0] != '\0' ? ": " : "", a->req_why);
        ea_deny(a, NULL, "%s", why);
    } else if (a->pending && a->req_call == NULL && a->req_retry_ms != 0 &&
               now >= a->req_retry_ms) {
        ea_req_read(a);
    }
    if (a->reported) {
        ea_news(a);
        ea_adopt(a);
    }
    ea_update_desc(a);
    if (wio_timer_arm(a->loop, t, EA_TICK_MS, ea_tick) < 0)
        log_error(a->comp, "cannot re-arm the arbiter's timer");
}

static void
ea_timer_release(struct wio_timer *t)
{
    free((struct ea_timer *)t);
}

/* ---- the ops ---- */

static bool
ea_reachable(const struct arbiter *base)
{
    const struct earb *a = (const struct earb *)base;

    /* The view too: UP tells the agent that nobody holds a newer epoch (a primary whose agent
     * restarted waits for that before it starts PostgreSQL), which only a read can say. */
    return a->up && a->session == EA_LIVE && a->have_view && !ea_fenced(a);
}

static void
ea_report(struct arbiter *base, const struct arbiter_report *r)
{
    struct earb *a = (struct earb *)base;
    struct etcdrec_member *m = &a->me;

    if (!a->reported) {
        a->reported = true;
        a->session_retry_ms = a->watch_retry_ms = clock_mono_ms();
        a->put_dirty = a->put_urgent = true;
    }
    if (r->role != m->role || r->timeline != m->timeline ||
        strncmp(r->sync_state, m->sync_state, sizeof(m->sync_state)) != 0)
        a->put_urgent = true;
    if (r->epoch > a->epoch) {
        a->epoch = r->epoch;
        a->mark_lsn = a->mark_unix_us = 0;
        a->holder[0] = '\0';
        a->put_urgent = true;
    }
    if (r->epoch == a->epoch && r->mark != NULL && r->mark->epoch == a->epoch)
        snprintf(a->holder, sizeof(a->holder), "%s", r->mark->primary);
    if (r->epoch == a->epoch && r->mark != NULL && r->mark->epoch == a->epoch &&
        !mark_equal(r->mark, a->mark_lsn, a->mark_unix_us)) {
        a->mark_lsn = r->mark->exposed_lsn;
        a->mark_unix_us = r->mark->exposed_unix_us;
        a->put_urgent = true;
    }
    if (r->durable_lsn != m->durable_lsn || r->flush_lag_bytes != m->flush_lag_bytes ||
        r->apply_lag_bytes != m->apply_lag_bytes || r->flush_lag_s != m->flush_lag_s ||
        r->apply_lag_s != m->apply_lag_s || r->wal_at_risk_bytes != m->wal_at_risk_bytes)
        a->put_dirty = true; /* written within a heartbeat interval */
    if (a->put_urgent)
        a->put_dirty = true;
    m->role = r->role;
    m->timeline = r->timeline;
    snprintf(m->sync_state, sizeof(m->sync_state), "%.*s", (int)sizeof(m->sync_state) - 1,
             r->sync_state);
    m->durable_lsn = r->durable_lsn;
    m->flush_lag_bytes = r->flush_lag_bytes;
    m->apply_lag_bytes = r->apply_lag_bytes;
    m->flush_lag_s = r->flush_lag_s;
    m->apply_lag_s = r->apply_lag_s;
    m->wal_at_risk_bytes = r->wal_at_risk_bytes;
    /* A change the standby's promotion depends on (the role) goes out now, not at the tick. */
    if (a->put_urgent && a->session == EA_LIVE && a->put_req == NULL &&
        ea_put_member(a, &a->put_req) < 0)
        a->put_dirty = true;
    ea_update_desc(a);
}

static int
ea_request(struct arbiter *base, const struct arbiter_request *req)
{
    struct earb *a = (struct earb *)base;

    if (!ea_reachable(base))
        return -ENOTCONN;
    if (a->pending)
        return -EBUSY;
    a->pending = true;
    a->req = *req;
    a->req_epoch = req->epoch + 1;
    a->req_deadline_ms = clock_mono_ms() + ARBITER_VOTE_TIMEOUT_MS;
    a->req_rounds = 0;
    a->req_why[0] = '\0';
    log_info(a->comp, "asking etcd for epoch %" PRIu64 ": %s (durable " LSN_FMT ")", a->req_epoch,
             arbiter_ask_name(req->ask), LSN_ARGS(req->durable_lsn));
    ea_req_read(a);
    return 0;
}

static enum arbiter_state
ea_state(const struct arbiter *base)
{
    const struct earb *a = (const struct earb *)base;

    if (ea_fenced(a))
        return ARBITER_STATE_FENCED;
    return ea_reachable(base) ? ARBITER_STATE_UP : ARBITER_STATE_DOWN;
}

static const char *
ea_describe(const struct arbiter *base)
{
    return ((const struct earb *)base)->desc;
}

static void
ea_destroy(struct arbiter *base)
{
    struct earb *a = (struct earb *)base;

    /* The lease is left to expire (see the header): the key goes TTL after the last renewal. */
    etcd_client_free(a->etcd); /* drops every request, no callback */
    if (a->timer != NULL) {
        a->timer->a = NULL;
        wio_timer_cancel(&a->timer->t);
        if (wio_timer_busy(&a->timer->t))
            a->timer->t.release = ea_timer_release;
        else
            free(a->timer);
    }
    free(a);
}

static const struct arbiter_ops etcd_ops = {
    .kind = "etcd",
    .reachable = ea_reachable,
    .report = ea_report,
    .request = ea_request,
    .state = ea_state,
    .describe = ea_describe,
    .destroy = ea_destroy,
};

int
arbiter_etcd_new(struct arbiter **out, struct wio_loop *loop, const struct wm_config *cfg)
{
    struct earb *a = calloc(1, sizeof(*a));
    struct etcd_client_config ec;
    char err[512];
    int rc;

    if (a == NULL)
        return -ENOMEM;
    a->base.ops = &etcd_ops;
    a->cfg = cfg;
    a->loop = loop;
    a->epoch = 1;
    a->prefix = cfg->etcd_prefix;
    a->ttl_s = cfg->etcd_lease_ttl_ms / 1000 > 0 ? cfg->etcd_lease_ttl_ms / 1000 : 1;
    a->keepalive_ms = a->ttl_s * 1000 / 3;
    if (cfg->heartbeat_interval_ms != 0 && cfg->heartbeat_interval_ms < a->keepalive_ms)
        a->keepalive_ms = cfg->heartbeat_interval_ms;
    if (a->keepalive_ms < EA_TICK_MS)
        a->keepalive_ms = EA_TICK_MS;
    snprintf(a->comp, sizeof(a->comp), "arbiter[etcd]");
    snprintf(a->k_epoch, sizeof(a->k_epoch), "%s" ETCDREC_EPOCH, a->prefix);
    snprintf(a->k_paused, sizeof(a->k_paused), "%s" ETCDREC_PAUSED, a->prefix);
    snprintf(a->k_self, sizeof(a->k_self), "%s" ETCDREC_MEMBERS "%s", a->prefix, cfg->node_name);
    snprintf(a->k_peer, sizeof(a->k_peer), "%s" ETCDREC_MEMBERS "%s", a->prefix, cfg->peer.name);
    snprintf(a->me.node, sizeof(a->me.node), "%s", cfg->node_name);
    a->me.flush_lag_s = a->me.apply_lag_s = -1;
    view_init(&a->view);
    ec = (struct etcd_client_config){.endpoints = cfg->etcd_endpoints,
                                     .ca = cfg->etcd_ca,
                                     .cert = cfg->etcd_cert,
                                     .key = cfg->etcd_key,
                                     .log_comp = "etcd"};
    rc = etcd_client_new(&a->etcd, loop, &ec, err, sizeof(err));
    if (rc < 0) {
        log_error(a->comp, "etcd_endpoints: %s", err);
        free(a);
        return rc;
    }
    a->timer = calloc(1, sizeof(*a->timer));
    if (a->timer == NULL) {
        etcd_client_free(a->etcd);
        free(a);
        return -ENOMEM;
    }
    a->timer->a = a;
    rc = wio_timer_arm(loop, &a->timer->t, EA_TICK_MS, ea_tick);
    if (rc < 0) {
        free(a->timer);
        etcd_client_free(a->etcd);
        free(a);
        return rc;
    }
    ea_update_desc(a);
    *out = &a->base;
    return 0;
}
