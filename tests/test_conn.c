/*
 * test_conn.c - the agent-to-agent connection over real loopback TCP, io_uring and TLS:
 * HELLO exchange and its refusals, data and acknowledgements, heartbeats and RTT, and the
 * failures a DBA will meet (plaintext peer, wrong CA, silent peer, truncated stream).
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "frame.h"
#include "testutil.h"

struct side {
    const char *name;
    struct conn *c;
    bool established;
    bool closed;
    int reason;
    char message[512];
    uint64_t wal_bytes;
    uint64_t next_lsn;
    bool wal_gap;
    int acks;
    struct msg_ack last_ack;
    uint64_t refuse_sysid; /* refuse a peer HELLO with another system identifier */
    int controls;
    struct msg_control last_ctl;
    int timelines;
    uint32_t last_tli;
    char last_history[128];
    uint64_t fenced_by; /* epoch reported through on_epoch */
};

static void
side_control(void *ctx, const struct msg_control *ctl)
{
    struct side *s = ctx;

    s->controls++;
    s->last_ctl = *ctl;
}

static void
side_timeline(void *ctx, const struct msg_timeline *tl)
{
    struct side *s = ctx;

    s->timelines++;
    s->last_tli = tl->tli;
    snprintf(s->last_history, sizeof(s->last_history), "%.*s", (int)tl->history_len,
             tl->history);
}

static void
side_epoch(void *ctx, uint64_t epoch)
{
    ((struct side *)ctx)->fenced_by = epoch;
}

static int
side_hello(void *ctx, const struct msg_hello *peer, char *why, size_t whylen)
{
    struct side *s = ctx;

    if (s->refuse_sysid != 0 && peer->system_id != s->refuse_sysid) {
        snprintf(why, whylen, "system identifier mismatch: peer %llu, ours %llu",
                 (unsigned long long)peer->system_id, (unsigned long long)s->refuse_sysid);
        return WIRE_EPROTO;
    }
    return 0;
}

static void
side_established(void *ctx)
{
    ((struct side *)ctx)->established = true;
}

static void
side_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    struct side *s = ctx;

    if (lsn != s->next_lsn)
        s->wal_gap = true;
    for (size_t i = 0; i < len; i++)
        if (data[i] != (uint8_t)((lsn + i) * 7))
            s->wal_gap = true;
    s->next_lsn = lsn + len;
    s->wal_bytes += len;
}

static void
side_ack(void *ctx, const struct msg_ack *ack)
{
    struct side *s = ctx;

    s->acks++;
    s->last_ack = *ack;
}

static void
side_closed(void *ctx, int reason, const char *message)
{
    struct side *s = ctx;

    s->closed = true;
    s->reason = reason;
    snprintf(s->message, sizeof(s->message), "%s", message);
}

static const struct conn_ops side_ops = {
    .on_hello = side_hello,
    .on_established = side_established,
    .on_wal = side_wal,
    .on_ack = side_ack,
    .on_closed = side_closed,
    .on_control = side_control,
    .on_timeline = side_timeline,
    .on_epoch = side_epoch,
};

struct fixture {
    struct wio_loop *loop;
    struct wio_acceptor acc;
    struct wio_connector con;
    int listen_fd;
    int port;
    int afd, cfd;
};

static struct fixture fx;

static void
got_accept(struct wio_acceptor *a, int fd)
{
    (void)a;
    fx.afd = fd;
}

static void
got_connect(struct wio_connector *c, int fd)
{
    (void)c;
    fx.cfd = fd;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the loop until *flag becomes true or seconds pass; returns *flag. */
static bool
run_until(const bool *flag, double seconds)
{
    double end = now_s() + seconds;

    while (!*flag && now_s() < end)
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
    return *flag;
}

static void
tcp_pair(void)
{
    bool done = false;
    char addr[64];

    fx.afd = fx.cfd = -1;
    fx.listen_fd = wio_listen_tcp("127.0.0.1:0", 4, &fx.port);
    ck_assert_int_ge(fx.listen_fd, 0);
    ck_assert_int_eq(wio_accept_start(fx.loop, &fx.acc, fx.listen_fd, got_accept), 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", fx.port);
    ck_assert_int_eq(wio_connect_start(fx.loop, &fx.con, addr, got_connect), 0);
    for (int i = 0; i < 200 && !done; i++) {
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
        done = fx.afd >= 0 && fx.cfd >= 0;
    }
    ck_assert_msg(done, "no TCP connection");
    wio_accept_stop(&fx.acc);
}

static void
setup(void)
{
    memset(&fx, 0, sizeof(fx));
    ck_assert_int_eq(wio_loop_new(&fx.loop, 64), 0);
    tcp_pair();
}

static void
teardown(void)
{
    for (int i = 0; i < 10; i++)
        if (wio_run_once(fx.loop, 10) < 0)
            break;
    close(fx.listen_fd);
    wio_loop_free(fx.loop);
}

static struct tls_config *
tls_for(const char *name, bool server, const char *cert_prefix)
{
    struct tls_config *cfg;
    char ca[4096], crt[4096], key[4096], err[512];

    snprintf(ca, sizeof(ca), "%s", tu_cert("ca.crt"));
    snprintf(crt, sizeof(crt), "%s/%s%s.crt", tu_certs(), cert_prefix, name);
    snprintf(key, sizeof(key), "%s/%s%s.key", tu_certs(), cert_prefix, name);
    ck_assert_msg(tls_config_new(&cfg, ca, crt, key, server, err, sizeof(err)) == 0, "%s", err);
    return cfg;
}

/* Starts both ends: a = acceptor (site-b), c = connector (site-a). */
static void
start(struct side *a, struct side *c, struct tls_config *atls, struct tls_config *ctls,
      const char *a_hello_name, uint64_t a_sysid, uint64_t c_sysid, unsigned hb, unsigned to)
{
    struct msg_hello ha = {.role = MSG_ROLE_SINK, .system_id = a_sysid, .timeline = 1};
    struct msg_hello hc = {.role = MSG_ROLE_SOURCE, .system_id = c_sysid, .timeline = 1};
    struct conn_config ca = {.tls = atls,
                             .peer_name = "site-a",
                             .hello = &ha,
                             .epoch = 1,
                             .compress = true,
                             .lz4_acceleration = 1,
                             .heartbeat_ms = hb,
                             .timeout_ms = to};
    struct conn_config cc = ca;

    snprintf(ha.node_name, sizeof(ha.node_name), "%s", a_hello_name);
    snprintf(hc.node_name, sizeof(hc.node_name), "site-a");
    cc.tls = ctls;
    cc.peer_name = "site-b";
    cc.hello = &hc;
    a->name = "acceptor";
    c->name = "connector";
    ck_assert_int_eq(conn_new(&a->c, fx.loop, fx.afd, true, &ca, &side_ops, a), 0);
    ck_assert_int_eq(conn_new(&c->c, fx.loop, fx.cfd, false, &cc, &side_ops, c), 0);
}

static void
finish(struct side *a, struct side *c)
{
    conn_free(a->c);
    conn_free(c->c);
}

START_TEST(test_tls_session_wal_and_acks)
{
    struct side a = {0}, c = {0};
    struct tls_config *atls = tls_for("site-b", true, ""), *ctls = tls_for("site-a", false, "");
    static uint8_t buf[200000];
    uint64_t lsn = 0;
    bool both;

    start(&a, &c, atls, ctls, "site-b", 42, 42, 20, 5000);
    for (int i = 0; i < 200 && !(a.established && c.established); i++)
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
    ck_assert(a.established && c.established);
    ck_assert_str_eq(conn_peer_hello(a.c)->node_name, "site-a");
    ck_assert_uint_eq(conn_peer_hello(c.c)->role, MSG_ROLE_SINK);
    /* 32 MB of WAL from connector to acceptor, in frames of varying size. */
    while (lsn < 32u * 1024 * 1024) {
        size_t len = 1 + (lsn * 13) % sizeof(buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)((lsn + i) * 7);
        if (len > FRAME_MAX_RAW)
            len = FRAME_MAX_RAW;
        ck_assert_int_eq(conn_send_wal(c.c, lsn, buf, len), 0);
        lsn += len;
        while (conn_backlog(c.c) > 4u * 1024 * 1024)
            ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
    }
    for (int i = 0; i < 500 && a.wal_bytes < lsn; i++)
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
    ck_assert_uint_eq(a.wal_bytes, lsn);
    ck_assert(!a.wal_gap);
    {
        struct msg_ack ack = {.write_lsn = lsn,
                              .flush_lsn = lsn,
                              .apply_lsn = lsn - 1,
                              .send_time_us = clock_unix_us()};
        ck_assert_int_eq(conn_send_ack(a.c, &ack), 0);
    }
    both = false;
    for (int i = 0; i < 100 && !both; i++) {
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
        both = c.acks == 1;
    }
    ck_assert_int_eq(c.acks, 1);
    ck_assert_uint_eq(c.last_ack.flush_lsn, lsn);
    ck_assert_uint_eq(c.last_ack.apply_lsn, lsn - 1);
    /* Heartbeats every 20 ms: the round trip gets measured. */
    for (int i = 0; i < 50 && conn_rtt_us(c.c) == 0; i++)
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
    ck_assert_uint_gt(conn_rtt_us(c.c), 0);
    ck_assert_uint_lt(conn_rtt_us(c.c), 1000000);
    ck_assert_uint_gt(conn_tx_stats(c.c)->wal_raw_bytes, conn_tx_stats(c.c)->wal_wire_bytes);
    /* Orderly close: the peer hears BYE. */
    conn_close(c.c, 0, "test done");
    ck_assert(run_until(&a.closed, 2));
    ck_assert_int_eq(a.reason, WIRE_ECLOSED);
    ck_assert_str_eq(a.message, "test done");
    finish(&a, &c);
    tls_config_free(atls);
    tls_config_free(ctls);
}
END_TEST

/*
 * WAL compression follows the send queue: frames queued faster than the socket takes them
 * (the loop does not run, so nothing leaves) turn it to LZ4HC once the queue has stayed deep
 * for the rise time; the peer decodes every frame alike; a queue that stays empty turns it
 * back to fast LZ4.
 */
START_TEST(test_deep_send_queue_turns_hc)
{
    struct side a = {0}, c = {0};
    static uint8_t buf[FRAME_MAX_RAW];
    uint64_t lsn = 0, hc_frames, t_end;
    size_t len = FRAME_MAX_RAW;

    start(&a, &c, NULL, NULL, "site-b", 42, 42, 0, 0);
    for (int i = 0; i < 200 && !(a.established && c.established); i++)
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
    ck_assert(a.established && c.established);
    ck_assert_str_eq(conn_compression(c.c), "lz4");
    t_end = clock_mono_us() + 10u * 1000 * 1000;
    while (strcmp(conn_compression(c.c), "lz4hc") != 0) {
        ck_assert_msg(clock_mono_us() < t_end, "still %s with %zu bytes queued",
                      conn_compression(c.c), conn_backlog(c.c));
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)((lsn + i) * 7);
        ck_assert_int_eq(conn_send_wal(c.c, lsn, buf, len), 0);
        lsn += len;
        if (conn_backlog(c.c) >= 1024 * 1024)
            usleep(5000);
    }
    /* The frame that saw the switch went through HC. */
    ck_assert_uint_eq(conn_tx_stats(c.c)->wal_hc_frames, 1);
    for (int k = 0; k < 4; k++) {
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)((lsn + i) * 7);
        ck_assert_int_eq(conn_send_wal(c.c, lsn, buf, len), 0);
        lsn += len;
    }
    hc_frames = conn_tx_stats(c.c)->wal_hc_frames;
    ck_assert_uint_eq(hc_frames, 5);
    /* The peer gets all of it, in order and intact, HC frames and fast ones. */
    for (int i = 0; i < 2000 && a.wal_bytes < lsn; i++)
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
    ck_assert_uint_eq(a.wal_bytes, lsn);
    ck_assert(!a.wal_gap);
    ck_assert_uint_eq(conn_backlog(c.c), 0);
    /* Small frames that leave at once: fast again after the fall time. */
    t_end = clock_mono_us() + 10u * 1000 * 1000;
    while (strcmp(conn_compression(c.c), "lz4") != 0) {
        ck_assert_msg(clock_mono_us() < t_end, "still lz4hc with %zu bytes queued",
                      conn_backlog(c.c));
        for (size_t i = 0; i < 8192; i++)
            buf[i] = (uint8_t)((lsn + i) * 7);
        ck_assert_int_eq(conn_send_wal(c.c, lsn, buf, 8192), 0);
        lsn += 8192;
        for (int i = 0; i < 5; i++)
            ck_assert_int_ge(wio_run_once(fx.loop, 10), 0);
    }
    for (int i = 0; i < 500 && a.wal_bytes < lsn; i++)
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
    ck_assert_uint_eq(a.wal_bytes, lsn);
    ck_assert(!a.wal_gap);
    finish(&a, &c);
}
END_TEST

/*
 * A witness accepts either site (a list of names), knows which one it got, and carries
 * CONTROL and TIMELINE frames; once its epoch rises, the site's older frames are refused and
 * the site learns the newer epoch from the refusal.
 */
START_TEST(test_name_list_control_and_epoch_fencing)
{
    struct side a = {0}, c = {0};
    struct tls_config *atls = tls_for("witness", true, ""), *ctls = tls_for("site-a", false, "");
    struct msg_hello ha = {.role = MSG_ROLE_WITNESS}, hc = {.role = MSG_ROLE_SINK, .timeline = 1};
    struct conn_config ca = {.tls = atls, .peer_name = "site-a,site-b", .hello = &ha,
                             .epoch = 1, .heartbeat_ms = 20, .timeout_ms = 5000};
    struct conn_config cc = {.tls = ctls, .peer_name = "witness", .hello = &hc, .epoch = 1,
                             .heartbeat_ms = 20, .timeout_ms = 5000};
    struct msg_control ctl = {.kind = MSG_CTL_VOTE_REQUEST, .lsn = 0x5000000, .value = 2};
    static const char hist[] = "1\t0/5000000\tno recovery target specified\n";
    struct msg_timeline tl = {.tli = 2, .switch_lsn = 0x5000000, .history = hist,
                              .history_len = sizeof(hist) - 1};
    bool got;

    strcpy(ha.node_name, "witness");
    strcpy(hc.node_name, "site-a");
    ck_assert_int_eq(conn_new(&a.c, fx.loop, fx.afd, true, &ca, &side_ops, &a), 0);
    ck_assert_int_eq(conn_new(&c.c, fx.loop, fx.cfd, false, &cc, &side_ops, &c), 0);
    for (int i = 0; i < 200 && !(a.established && c.established); i++)
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
    ck_assert(a.established && c.established);
    ck_assert_str_eq(conn_peer_hello(a.c)->node_name, "site-a");
    ck_assert_uint_eq(conn_peer_hello(a.c)->epoch, 1);

    ck_assert_int_eq(conn_send_control(c.c, &ctl), 0);
    ck_assert_int_eq(conn_send_timeline(c.c, &tl), 0);
    got = false;
    for (int i = 0; i < 100 && !got; i++) {
        ck_assert_int_ge(wio_run_once(fx.loop, 20), 0);
        got = a.controls == 1 && a.timelines == 1;
    }
    ck_assert(got);
    ck_assert_uint_eq(a.last_ctl.kind, MSG_CTL_VOTE_REQUEST);
    ck_assert_uint_eq(a.last_ctl.lsn, 0x5000000);
    ck_assert_uint_eq(a.last_ctl.value, 2);
    ck_assert_uint_eq(a.last_tli, 2);
    ck_assert_str_eq(a.last_history, hist);

    /* The witness moves to epoch 2: the site's next frame (a heartbeat at epoch 1) is refused,
     * and the refusal tells the site of epoch 2. */
    conn_set_epoch(a.c, 2);
    conn_set_epoch(a.c, 1); /* never lowered */
    ck_assert(run_until(&a.closed, 3));
    ck_assert_msg(strstr(a.message, "site-a is fenced: its epoch 1 is older than 2") != NULL, "%s",
                  a.message);
    ck_assert(run_until(&c.closed, 3));
    ck_assert_uint_eq(c.fenced_by, 2);
    ck_assert_uint_eq(conn_peer_epoch(c.c), 2);
    finish(&a, &c);
    tls_config_free(atls);
    tls_config_free(ctls);
}
END_TEST

/* A name list does not let a certificate for one name introduce itself as another. */
START_TEST(test_name_list_hello_must_match_certificate)
{
    struct side a = {0}, c = {0};
    struct tls_config *atls = tls_for("witness", true, ""), *ctls = tls_for("site-a", false, "");
    struct msg_hello ha = {.role = MSG_ROLE_WITNESS}, hc = {.role = MSG_ROLE_SINK, .timeline = 1};
    struct conn_config ca = {.tls = atls, .peer_name = "site-a,site-b", .hello = &ha, .epoch = 1};
    struct conn_config cc = {.tls = ctls, .peer_name = "witness", .hello = &hc, .epoch = 1};

    strcpy(ha.node_name, "witness");
    strcpy(hc.node_name, "site-b"); /* the certificate says site-a */
    ck_assert_int_eq(conn_new(&a.c, fx.loop, fx.afd, true, &ca, &side_ops, &a), 0);
    ck_assert_int_eq(conn_new(&c.c, fx.loop, fx.cfd, false, &cc, &side_ops, &c), 0);
    ck_assert(run_until(&a.closed, 3));
    ck_assert_msg(strstr(a.message, "introduced itself as \"site-b\"") != NULL, "%s", a.message);
    ck_assert(!a.established);
    finish(&a, &c);
    tls_config_free(atls);
    tls_config_free(ctls);
}
END_TEST

START_TEST(test_hello_name_mismatch)
{
    struct side a = {0}, c = {0};

    /* Plaintext, to isolate the HELLO check: the acceptor claims to be "site-x". */
    start(&a, &c, NULL, NULL, "site-x", 42, 42, 0, 0);
    ck_assert(run_until(&c.closed, 2));
    ck_assert_int_eq(c.reason, WIRE_EPROTO);
    ck_assert_msg(strstr(c.message, "introduced itself as \"site-x\", expected \"site-b\"") != NULL,
                  "%s", c.message);
    ck_assert(run_until(&a.closed, 2));
    ck_assert(!c.established && !a.established);
    finish(&a, &c);
}
END_TEST

START_TEST(test_hello_refused_by_owner)
{
    struct side a = {.refuse_sysid = 1111}, c = {0};
    struct tls_config *atls = tls_for("site-b", true, ""), *ctls = tls_for("site-a", false, "");

    start(&a, &c, atls, ctls, "site-b", 1111, 2222, 0, 0);
    ck_assert(run_until(&c.closed, 3));
    ck_assert_int_eq(c.reason, WIRE_EPEER);
    ck_assert_msg(strstr(c.message, "system identifier mismatch") != NULL, "%s", c.message);
    ck_assert(a.closed && a.reason == WIRE_EPROTO);
    ck_assert(!a.established && !c.established);
    finish(&a, &c);
    tls_config_free(atls);
    tls_config_free(ctls);
}
END_TEST

START_TEST(test_plaintext_peer_refused)
{
    struct side a = {0}, c = {0};
    struct tls_config *atls = tls_for("site-b", true, "");

    start(&a, &c, atls, NULL, "site-b", 42, 42, 0, 0);
    ck_assert(run_until(&a.closed, 3));
    ck_assert_int_eq(a.reason, WIRE_ETLS_PLAINTEXT);
    ck_assert(run_until(&c.closed, 3));
    ck_assert(!c.established && !a.established);
    ck_assert_uint_eq(conn_rx_stats(c.c)->frames, 0);
    finish(&a, &c);
    tls_config_free(atls);
}
END_TEST

START_TEST(test_wrong_ca_refused_both_ways)
{
    struct side a = {0}, c = {0};
    struct tls_config *atls = tls_for("site-b", true, "");
    struct tls_config *ctls = tls_for("site-b", false, "rogue-"); /* not our CA's */

    /* The connector presents a certificate of another CA. */
    start(&a, &c, atls, ctls, "site-b", 42, 42, 0, 0);
    ck_assert(run_until(&a.closed, 3));
    ck_assert(run_until(&c.closed, 3));
    ck_assert_int_eq(a.reason, WIRE_ETLS_VERIFY);
    ck_assert(c.reason == WIRE_ETLS_REJECTED || c.reason == WIRE_ETLS_VERIFY);
    ck_assert(!a.established && !c.established);
    ck_assert_uint_eq(conn_rx_stats(c.c)->frames, 0);
    ck_assert_uint_eq(conn_rx_stats(a.c)->frames, 0);
    finish(&a, &c);
    tls_config_free(atls);
    tls_config_free(ctls);
}
END_TEST

/* "ADDR:PORT" of the local end of fd. */
static void
local_name(int fd, char *buf, size_t cap)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    snprintf(buf, cap, "127.0.0.1:%u", ntohs(sin.sin_port));
}

/*
 * Anyone may connect to the peer port: what the acceptor logs about a connection that has not
 * shown its certificate names where it came from and says that it is not (yet) the peer,
 * never "TLS handshake with site-a"; the connector's lines name the peer and its address.
 */
START_TEST(test_stray_connection_named_by_address)
{
    struct side a = {0}, c = {0};
    struct tls_config *atls = tls_for("site-b", true, "");
    struct tls_config *ctls = tls_for("site-b", false, "rogue-"); /* not our CA's */
    struct msg_hello ha = {.role = MSG_ROLE_SINK, .system_id = 1, .timeline = 1};
    struct conn_config ca = {.tls = atls, .peer_name = "site-a", .hello = &ha, .epoch = 1};
    char *dir = tu_tmpdir("conn-log"), *log, from[64], line[1024], want[256];

    strcpy(ha.node_name, "site-b");
    local_name(fx.cfd, from, sizeof(from));
    /* 1: a port scanner - connects, closes */
    tu_log_capture_start(dir);
    ck_assert_int_eq(conn_new(&a.c, fx.loop, fx.afd, true, &ca, &side_ops, &a), 0);
    close(fx.cfd);
    ck_assert(run_until(&a.closed, 3));
    log = tu_log_capture_end();
    ck_assert_int_eq(tu_log_lines(log, NULL, 0, "site-a", "WARNING", NULL) +
                         tu_log_lines(log, NULL, 0, "site-a", "ERROR", NULL),
                     1);
    ck_assert_int_eq(tu_log_lines(log, line, sizeof(line), "site-a", NULL), 1);
    snprintf(want, sizeof(want),
             "WARNING peer[%s]: connection from %s lost before its TLS handshake (an incoming "
             "connection, not verified as site-a)",
             from, from);
    ck_assert_msg(strstr(line, want) != NULL, "\"%s\" lacks \"%s\"", line, want);
    ck_assert_ptr_null(strstr(log, "peer[site-a]"));
    free(log);
    conn_free(a.c);
    memset(&a, 0, sizeof(a));

    /* 2: a client with a certificate of another CA, both ways */
    close(fx.listen_fd);
    tcp_pair();
    local_name(fx.cfd, from, sizeof(from));
    tu_log_capture_start(dir);
    start(&a, &c, atls, ctls, "site-b", 42, 42, 0, 0);
    ck_assert(run_until(&a.closed, 3));
    ck_assert(run_until(&c.closed, 3));
    log = tu_log_capture_end();
    snprintf(want, sizeof(want),
             "ERROR peer[%s]: TLS handshake with %s failed (an incoming connection, not "
             "verified as site-a): ",
             from, from);
    ck_assert_msg(strstr(log, want) != NULL, "no \"%s\" in:\n%s", want, log);
    /* the connector verified site-b (TLS 1.3 clients finish first), at that address */
    snprintf(want, sizeof(want),
             "INFO peer[site-b]: TLS 1.3 established with 127.0.0.1:%d, peer "
             "certificate \"site-b\" verified",
             fx.port);
    ck_assert_msg(strstr(log, want) != NULL, "no \"%s\" in:\n%s", want, log);
    free(log);
    finish(&a, &c);
    tls_config_free(atls);
    tls_config_free(ctls);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_silent_peer_times_out)
{
    struct side a = {0};
    struct msg_hello ha = {.role = MSG_ROLE_SINK, .system_id = 1, .timeline = 1};
    struct conn_config ca = {
        .peer_name = "site-a", .hello = &ha, .epoch = 1, .heartbeat_ms = 50, .timeout_ms = 300};
    double t0;

    strcpy(ha.node_name, "site-b");
    ck_assert_int_eq(conn_new(&a.c, fx.loop, fx.afd, true, &ca, &side_ops, &a), 0);
    t0 = now_s();
    /* fx.cfd is a raw socket that never answers. */
    ck_assert(run_until(&a.closed, 3));
    ck_assert_int_eq(a.reason, WIRE_ETIMEDOUT);
    ck_assert(now_s() - t0 >= 0.29);
    conn_free(a.c);
    close(fx.cfd);
}
END_TEST

START_TEST(test_truncated_stream)
{
    struct side a = {0};
    struct msg_hello ha = {.role = MSG_ROLE_SINK, .system_id = 1, .timeline = 1};
    struct conn_config ca = {.peer_name = "site-a", .hello = &ha, .epoch = 1};
    uint8_t frame[256];
    ssize_t n = frame_encode(frame, sizeof(frame), FRAME_HELLO, 1, 0, 1, "abcdefgh", 8);

    strcpy(ha.node_name, "site-b");
    ck_assert_int_eq(conn_new(&a.c, fx.loop, fx.afd, true, &ca, &side_ops, &a), 0);
    /* Half a frame, then the peer goes away. */
    ck_assert_int_eq(write(fx.cfd, frame, (size_t)n / 2), n / 2);
    close(fx.cfd);
    ck_assert(run_until(&a.closed, 3));
    ck_assert_int_eq(a.reason, WIRE_ETRUNC);
    conn_free(a.c);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("conn");
    TCase *tc = tcase_create("conn");
    SRunner *sr;
    int failed;

    tu_certs();
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_tls_session_wal_and_acks);
    tcase_add_test(tc, test_deep_send_queue_turns_hc);
    tcase_add_test(tc, test_name_list_control_and_epoch_fencing);
    tcase_add_test(tc, test_name_list_hello_must_match_certificate);
    tcase_add_test(tc, test_hello_name_mismatch);
    tcase_add_test(tc, test_hello_refused_by_owner);
    tcase_add_test(tc, test_plaintext_peer_refused);
    tcase_add_test(tc, test_wrong_ca_refused_both_ways);
    tcase_add_test(tc, test_stray_connection_named_by_address);
    tcase_add_test(tc, test_silent_peer_times_out);
    tcase_add_test(tc, test_truncated_stream);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
