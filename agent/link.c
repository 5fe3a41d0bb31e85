/*
 * link.c - the agent's peer links; contract in link.h.
 *
 * struct link is each connection's callback context, so a callback knows which link fired.
 * Messages of a link that is not the active one are ignored (a superseded or refused link's
 * last frames); its end is still reported, so the owner can tell a failed connect from a
 * lost stream.
 */
#include "link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "tls.h"
#include "util.h"

struct link {
    struct link_set *ls;
    struct conn *c;
    bool inbound;
    bool established;
    bool dead;
};

/* A connect in flight: allocated apart, since it may complete after the set is gone. */
struct link_connector {
    struct wio_connector con;
    struct link_set *ls; /* NULL once the set is gone */
};

struct link_set {
    struct wio_loop *loop;
    const struct wm_config *cfg;
    const struct link_events *ev;
    void *ctx;
    char comp[80];
    struct tls_config *tls_server; /* accepting links */
    struct tls_config *tls_client; /* making them */
    int64_t cert_not_after;
    int listen_fd;
    struct wio_acceptor acc;
    struct link_connector *connecting; /* NULL: none in flight */
    bool refuse;
    bool freeing; /* link_set_free: no more events */
    struct link *links[LINK_SLOTS]; /* live or dead, freed in link_reap when dead */
    struct link *active;
};

static void
link_dead(struct link *l)
{
    l->dead = true;
    if (l->ls->active == l)
        l->ls->active = NULL;
}

static int
on_hello(void *ctx, const struct msg_hello *peer, char *why, size_t whylen)
{
    struct link *l = ctx;

    return l->ls->ev->check(l->ls->ctx, peer, l->inbound, why, whylen);
}

static void
on_established(void *ctx)
{
    struct link *l = ctx;
    struct link_set *ls = l->ls;

    l->established = true;
    if (ls->active != NULL && ls->active != l) {
        /* An authenticated peer that reconnected supersedes the link we still had. */
        struct link *old = ls->active;
        log_info(ls->comp, "new link from %s replaces the old one", ls->cfg->peer.name);
        conn_close(old->c, WIRE_EPROTO, "superseded by a new connection from the same peer");
        link_dead(old);
    }
    ls->active = l;
    ls->ev->up(ls->ctx, conn_peer_hello(l->c));
}

static void
on_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct link *l = ctx;

    if (l == l->ls->active)
        l->ls->ev->wal(l->ls->ctx, lsn, data, len);
}

static void
on_ack(void *ctx, const struct msg_ack *ack)
{
    struct link *l = ctx;

    if (l == l->ls->active)
        l->ls->ev->ack(l->ls->ctx, ack);
}

static void
on_control(void *ctx, const struct msg_control *ctl)
{
    struct link *l = ctx;

    if (l == l->ls->active)
        l->ls->ev->control(l->ls->ctx, ctl);
}

static void
on_timeline(void *ctx, const struct msg_timeline *tl)
{
    struct link *l = ctx;

    if (l == l->ls->active)
        l->ls->ev->timeline(l->ls->ctx, tl);
}

static void
on_drained(void *ctx)
{
    struct link *l = ctx;

    if (l == l->ls->active)
        l->ls->ev->drained(l->ls->ctx);
}

static void
on_epoch(void *ctx, uint64_t epoch)
{
    struct link *l = ctx;
    const struct msg_hello *peer = conn_peer_hello(l->c);

    /* The peer's HELLO may not be decoded yet; the peer is the configured one either way. */
    l->ls->ev->epoch(l->ls->ctx, epoch,
                     peer != NULL && peer->node_name[0] != '\0' ? peer->node_name
                                                                : l->ls->cfg->peer.name);
}

static void
on_closed(void *ctx, int reason, const char *message)
{
    struct link *l = ctx;
    struct link_set *ls = l->ls;
    bool was_active = ls->active == l;

    (void)reason;
    link_dead(l);
    if (ls->freeing)
        return;
    if (l->established)
        log_warning(ls->comp, "link to %s down: %s", ls->cfg->peer.name, message);
    ls->ev->down(ls->ctx, was_active, l->inbound, l->established, message);
}

static const struct conn_ops peer_ops = {
    .on_hello = on_hello,
    .on_established = on_established,
    .on_wal = on_wal,
    .on_ack = on_ack,
    .on_drained = on_drained,
    .on_closed = on_closed,
    .on_timeline = on_timeline,
    .on_control = on_control,
    .on_epoch = on_epoch,
};

static int
start_link(struct link_set *ls, int fd, bool inbound)
{
    struct msg_hello hello = {.capabilities = MSG_CAP_LZ4};
    struct conn_config cc = {
        .tls = inbound ? ls->tls_server : ls->tls_client,
        .peer_name = ls->cfg->peer.name,
        .hello = &hello,
        .compress = ls->cfg->compression == CONFIG_COMPRESSION_LZ4,
        .lz4_acceleration = 1,
        .heartbeat_ms = (unsigned)ls->cfg->heartbeat_interval_ms,
        .timeout_ms = (unsigned)ls->cfg->peer_timeout_ms,
    };
    struct link *l;
    int rc, slot;

    ls->ev->hello(ls->ctx, &hello, &cc.epoch);
    snprintf(hello.node_name, sizeof(hello.node_name), "%s", ls->cfg->node_name);
    for (slot = 0; slot < LINK_SLOTS && ls->links[slot] != NULL; slot++)
        ;
    if (slot == LINK_SLOTS) {
        log_warning(ls->comp, "too many connections from peers at once; dropping one");
        close(fd);
        return -EBUSY;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        close(fd);
        return -ENOMEM;
    }
    l->ls = ls;
    l->inbound = inbound;
    rc = conn_new(&l->c, ls->loop, fd, inbound, &cc, &peer_ops, l);
    if (rc < 0) {
        free(l);
        log_error(ls->comp, "cannot set up the link: %s", wire_strerror(rc));
        return rc;
    }
    ls->links[slot] = l;
    return 0;
}

static void
on_accept(struct wio_acceptor *acc, int fd)
{
    struct link_set *ls = container_of(acc, struct link_set, acc);

    if (fd < 0) {
        log_error(ls->comp, "accept on %s failed: %s", ls->cfg->listen.text, wire_strerror(fd));
        return;
    }
    if (ls->refuse) {
        close(fd);
        return;
    }
    if (start_link(ls, fd, true) < 0)
        log_warning(ls->comp, "dropped an incoming link");
}

static void
on_connect(struct wio_connector *con, int fd)
{
    struct link_connector *lc = container_of(con, struct link_connector, con);
    struct link_set *ls = lc->ls;
    char why[600];

    free(lc);
    if (ls == NULL || ls->freeing) {
        if (fd >= 0)
            close(fd);
        return;
    }
    ls->connecting = NULL;
    if (fd < 0) {
        snprintf(why, sizeof(why), "cannot connect to %s at %s: %s", ls->cfg->peer.name,
                 ls->cfg->peer.addr.text, wire_strerror(fd));
        ls->ev->down(ls->ctx, false, false, false, why);
        return;
    }
    if (start_link(ls, fd, false) < 0) {
        snprintf(why, sizeof(why), "cannot set up the link to %s", ls->cfg->peer.name);
        ls->ev->down(ls->ctx, false, false, false, why);
    }
}

int
link_set_new(struct link_set **out, struct wio_loop *loop, const struct wm_config *cfg,
             const struct link_events *ev, void *ctx, char *err, size_t errlen)
{
    struct link_set *ls = calloc(1, sizeof(*ls));
    int rc, port;

    if (ls == NULL)
        return -ENOMEM;
    ls->loop = loop;
    ls->cfg = cfg;
    ls->ev = ev;
    ls->ctx = ctx;
    ls->listen_fd = -1;
    snprintf(ls->comp, sizeof(ls->comp), "link[%s]", cfg->node_name);
    if (tls_cert_not_after(cfg->tls_cert, &ls->cert_not_after) < 0)
        ls->cert_not_after = -1;
    rc = tls_config_new(&ls->tls_server, cfg->tls_ca, cfg->tls_cert, cfg->tls_key, true, err,
                        errlen);
    if (rc == 0)
        rc = tls_config_new(&ls->tls_client, cfg->tls_ca, cfg->tls_cert, cfg->tls_key, false,
                            err, errlen);
    if (rc < 0)
        goto fail;
    ls->listen_fd = wio_listen_tcp(cfg->listen.text, 16, &port);
    if (ls->listen_fd < 0) {
        rc = ls->listen_fd;
        snprintf(err, errlen, "cannot listen on %s: %s", cfg->listen.text, wire_strerror(rc));
        goto fail;
    }
    rc = wio_accept_start(loop, &ls->acc, ls->listen_fd, on_accept);
    if (rc < 0) {
        snprintf(err, errlen, "cannot accept on %s: %s", cfg->listen.text, wire_strerror(rc));
        goto fail;
    }
    *out = ls;
    return 0;

fail:
    if (ls->listen_fd >= 0)
        close(ls->listen_fd);
    tls_config_free(ls->tls_server);
    tls_config_free(ls->tls_client);
    free(ls);
    return rc;
}

void
link_close_all(struct link_set *ls, const char *why)
{
    for (int i = 0; i < LINK_SLOTS; i++) {
        struct link *l = ls->links[i];
        if (l != NULL && !l->dead)
            conn_close(l->c, 0, why);
    }
}

void
link_drop_active(struct link_set *ls, const char *why)
{
    if (ls->active != NULL)
        conn_close(ls->active->c, WIRE_EPROTO, why);
}

void
link_reap(struct link_set *ls)
{
    for (int i = 0; i < LINK_SLOTS; i++) {
        struct link *l = ls->links[i];
        if (l != NULL && l->dead) {
            conn_free(l->c);
            free(l);
            ls->links[i] = NULL;
        }
    }
}

void
link_set_free(struct link_set *ls)
{
    if (ls == NULL)
        return;
    /* No more events: the owner is going away. */
    ls->freeing = true;
    link_close_all(ls, "agent shutting down");
    if (ls->connecting != NULL)
        ls->connecting->ls = NULL; /* it frees itself when the connect completes */
    /* A few turns, so that BYE frames leave and cancelled operations complete. */
    for (int i = 0; i < 20; i++)
        if (wio_run_once(ls->loop, 10) <= 0)
            break;
    link_reap(ls);
    if (ls->listen_fd >= 0) {
        wio_accept_stop(&ls->acc);
        for (int i = 0; i < 20 && wio_accept_busy(&ls->acc); i++)
            if (wio_run_once(ls->loop, 10) < 0)
                break;
        close(ls->listen_fd);
    }
    tls_config_free(ls->tls_server);
    tls_config_free(ls->tls_client);
    free(ls);
}

int
link_connect(struct link_set *ls)
{
    struct link_connector *lc;
    int rc;

    if (link_busy(ls))
        return -EALREADY;
    lc = calloc(1, sizeof(*lc));
    if (lc == NULL)
        return -ENOMEM;
    lc->ls = ls;
    rc = wio_connect_start(ls->loop, &lc->con, ls->cfg->peer.addr.text, on_connect);
    if (rc < 0) {
        free(lc);
        return rc;
    }
    ls->connecting = lc;
    return 0;
}

void
link_refuse(struct link_set *ls, bool refuse)
{
    ls->refuse = refuse;
}

void
link_set_epoch(struct link_set *ls, uint64_t epoch)
{
    for (int i = 0; i < LINK_SLOTS; i++)
        if (ls->links[i] != NULL && !ls->links[i]->dead)
            conn_set_epoch(ls->links[i]->c, epoch);
}

struct conn *
link_active(const struct link_set *ls)
{
    return ls != NULL && ls->active != NULL ? ls->active->c : NULL;
}

bool
link_busy(const struct link_set *ls)
{
    if (ls->connecting != NULL)
        return true;
    for (int i = 0; i < LINK_SLOTS; i++)
        if (ls->links[i] != NULL && !ls->links[i]->dead)
            return true;
    return false;
}

int64_t
link_cert_not_after(const struct link_set *ls)
{
    return ls->cert_not_after;
}
