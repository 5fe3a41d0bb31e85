/*
 * test_tlsmisuse.c - TLS misuse at the level that carries WAL: no WAL byte reaches a refused
 * peer, and the refusal is one clear log line.
 *
 * The acceptor is a real conn (wire/conn.h) on the io_uring loop, as the sending side of a
 * pair would run it: site-a's certificate, expecting site-b, compression on, WAL queued for
 * the peer the moment it is established (on_established sends 64 KiB of a marker string), and
 * a send attempted before that on every turn of the loop (each must be refused with
 * -ENOTCONN).  Facing it, a misbehaving client made with OpenSSL directly, over memory BIOs so
 * that it records every byte that reaches its socket:
 *   - a plaintext agent (sends a walmirror HELLO frame without TLS);
 *   - a certificate from another CA; an expired certificate; a certificate of the right CA
 *     for another name (site-z), and a valid certificate of this very cluster for the wrong
 *     node (the witness's);
 *   - a TLS 1.2-only client with site-b's valid certificate.
 * Each such client verifies nothing itself and reads whatever the acceptor will send it.  The
 * test asserts that the acceptor refused it for the expected reason and never became
 * established; that the bytes the client received hold neither the marker nor a frame magic;
 * that what the client could decrypt with its own SSL object (a TLS 1.3 client completes its
 * handshake before the acceptor has checked its certificate) is empty, and, fed to a frame
 * decoder with LZ4, yields no frame - so neither the WAL nor its decompressed content is
 * reachable; and that the acceptor logged exactly one line at warning level or above, naming
 * the cause and the client's address, and saying that it is not (yet) site-b: anyone may
 * connect to the port.  A control case - a good site-b client that speaks the session protocol -
 * shows that the same checks do see the WAL when it is sent.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "codec.h"
#include "conn.h"
#include "frame.h"
#include "msg.h"
#include "testutil.h"

#define MARKER "WALMIRROR-MISUSE-MARKER:this WAL must never reach a refused peer|"
#define WAL_LEN (64 * 1024)
#define WAL_LSN 0x3000000u

enum peer_kind { PEER_PLAIN, PEER_TLS };

struct misuse_case {
    const char *what;
    enum peer_kind kind;
    const char *cert;   /* client certificate in tu_certs(), without .crt/.key */
    int max_version;    /* 0: any; TLS1_2_VERSION: a 1.2-only client */
    bool refused;       /* false: the control case, which must get the WAL */
    int reason;         /* the acceptor's on_closed reason */
    const char *cause;  /* in the acceptor's one log line */
    const char *cause2; /* and this too (or NULL) */
};

static const struct misuse_case cases[] = {
    {"plaintext agent", PEER_PLAIN, NULL, 0, true, WIRE_ETLS_PLAINTEXT, "does not speak TLS",
     "WMIR"},
    {"certificate of another CA", PEER_TLS, "rogue-site-b", 0, true, WIRE_ETLS_VERIFY,
     "unable to get local issuer certificate", "walmirror rogue CA"},
    {"expired certificate", PEER_TLS, "expired-site-b", 0, true, WIRE_ETLS_VERIFY,
     "certificate has expired", "2020"},
    {"certificate for another name", PEER_TLS, "wrongname", 0, true, WIRE_ETLS_VERIFY,
     "name mismatch", "expected site-b, certificate is for site-z"},
    {"valid certificate of the wrong node", PEER_TLS, "witness", 0, true, WIRE_ETLS_VERIFY,
     "name mismatch", "expected site-b, certificate is for witness"},
    {"TLS 1.2-only client", PEER_TLS, "site-b", TLS1_2_VERSION, true, WIRE_ETLS, "TLS 1.3", NULL},
    {"control: a good peer", PEER_TLS, "site-b", 0, false, 0, NULL, NULL},
};

/* ---- the acceptor: a conn with WAL to send ---- */

struct acceptor {
    struct conn *c;
    bool established;
    bool closed;
    int reason;
    char message[512];
    int early_sends; /* conn_send_wal calls refused before ESTABLISHED */
    int wal_sent;
};

static uint8_t wal[WAL_LEN];

static void
fill_wal(void)
{
    size_t m = strlen(MARKER);

    for (size_t i = 0; i < sizeof(wal); i++)
        wal[i] = (uint8_t)MARKER[i % m];
}

static void
acc_established(void *ctx)
{
    struct acceptor *a = ctx;

    a->established = true;
    /* As the source's owner does: WAL goes out as soon as the peer is established. */
    ck_assert_int_eq(conn_send_wal(a->c, WAL_LSN, wal, sizeof(wal)), 0);
    a->wal_sent++;
}

static void
acc_wal(void *ctx, uint64_t lsn, const uint8_t *data, size_t len)
{
    (void)ctx, (void)lsn, (void)data, (void)len;
}

static void
acc_ack(void *ctx, const struct msg_ack *ack)
{
    (void)ctx, (void)ack;
}

static void
acc_closed(void *ctx, int reason, const char *message)
{
    struct acceptor *a = ctx;

    a->closed = true;
    a->reason = reason;
    snprintf(a->message, sizeof(a->message), "%s", message);
}

static const struct conn_ops acc_ops = {
    .on_established = acc_established,
    .on_wal = acc_wal,
    .on_ack = acc_ack,
    .on_closed = acc_closed,
};

/* Before ESTABLISHED, a send must be refused and queue nothing. */
static void
try_early_send(struct acceptor *a)
{
    size_t backlog;

    if (a->established || a->closed)
        return;
    backlog = conn_backlog(a->c);
    ck_assert_int_eq(conn_send_wal(a->c, WAL_LSN, wal, sizeof(wal)), -ENOTCONN);
    ck_assert_uint_eq(conn_backlog(a->c), backlog);
    a->early_sends++;
}

/* ---- the misbehaving client ---- */

struct bytes {
    uint8_t *p;
    size_t len, cap;
};

static void
bytes_add(struct bytes *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

struct peer {
    const struct misuse_case *mc;
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    bool handshake_done, tls_failed, eof;
    struct bytes raw;   /* every byte that reached the socket */
    struct bytes plain; /* what SSL_read decrypted */
    struct codec_dec *dec;
    struct codec_enc *enc;
    int dec_err;
    int frames, wal_frames;
    bool marker_decoded; /* the marker in a decompressed WAL payload */
    bool said_hello;
};

static void
peer_send(struct peer *p, const void *data, size_t len)
{
    const uint8_t *b = data;

    while (len > 0) {
        ssize_t n = send(p->fd, b, len, MSG_NOSIGNAL);

        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0) /* the acceptor has gone: what it did not read does not matter */
            return;
        b += n;
        len -= (size_t)n;
    }
}

static void
peer_flush(struct peer *p)
{
    uint8_t buf[16384];
    int n;

    while (p->ssl != NULL && (n = BIO_read(p->wbio, buf, sizeof(buf))) > 0)
        peer_send(p, buf, (size_t)n);
}

/* One frame of ours, through the peer's own encoder, in the clear or over TLS. */
static void
peer_frame(struct peer *p, uint8_t type, const void *body, size_t len)
{
    uint8_t out[1024];
    ssize_t n = codec_enc_frame(p->enc, type, 0, 1, body, len, out, sizeof(out));

    ck_assert_int_gt(n, 0);
    if (p->ssl == NULL) {
        peer_send(p, out, (size_t)n);
        return;
    }
    ERR_clear_error();
    ck_assert_int_eq(SSL_write(p->ssl, out, (int)n), (int)n);
    peer_flush(p);
}

static void
peer_hello(struct peer *p)
{
    struct msg_hello h = {.role = MSG_ROLE_SINK, .system_id = 42, .timeline = 1};
    uint8_t body[MSG_MAX_BODY];
    ssize_t n;

    snprintf(h.node_name, sizeof(h.node_name), "site-b");
    n = msg_encode_hello(&h, body, sizeof(body));
    ck_assert_int_gt(n, 0);
    peer_frame(p, FRAME_HELLO, body, (size_t)n);
    p->said_hello = true;
}

/* Decodes what the peer could read as walmirror frames (LZ4 included). */
static void
peer_decode(struct peer *p, const uint8_t *data, size_t len)
{
    struct codec_frame f;
    int rc;

    if (p->dec_err != 0)
        return;
    rc = codec_dec_feed(p->dec, data, len);
    if (rc < 0) {
        p->dec_err = rc;
        return;
    }
    while ((rc = codec_dec_next(p->dec, &f)) == 1) {
        p->frames++;
        if (f.hdr.type == FRAME_WAL) {
            p->wal_frames++;
            if (memmem(f.payload, f.hdr.raw_len, MARKER, strlen(MARKER)) != NULL)
                p->marker_decoded = true;
        }
        /* Only the control peer speaks the session protocol: HELLO, then READY. */
        if (f.hdr.type == FRAME_HELLO && !p->mc->refused && !p->said_hello) {
            peer_hello(p);
            peer_frame(p, FRAME_READY, NULL, 0);
        }
    }
    if (rc < 0)
        p->dec_err = rc;
}

static void
peer_new(struct peer *p, const struct misuse_case *mc, int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

    memset(p, 0, sizeof(*p));
    p->mc = mc;
    ck_assert_int_eq(codec_dec_new(&p->dec), 0);
    ck_assert_int_eq(codec_enc_new(&p->enc, false, 1), 0);
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(p->fd, 0);
    ck_assert_int_eq(connect(p->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(fcntl(p->fd, F_SETFL, O_NONBLOCK), 0);
    if (mc->kind == PEER_PLAIN) {
        peer_hello(p); /* a plaintext agent speaks at once */
        return;
    }
    p->ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(p->ctx);
    if (mc->max_version != 0)
        ck_assert_int_eq(SSL_CTX_set_max_proto_version(p->ctx, mc->max_version), 1);
    if (mc->cert != NULL) {
        char crt[4200], key[4200];

        snprintf(crt, sizeof(crt), "%s/%s.crt", tu_certs(), mc->cert);
        snprintf(key, sizeof(key), "%s/%s.key", tu_certs(), mc->cert);
        ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(p->ctx, crt), 1);
        ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(p->ctx, key, SSL_FILETYPE_PEM), 1);
    }
    /* A misbehaving client takes whatever the acceptor gives: it verifies nothing. */
    SSL_CTX_set_verify(p->ctx, SSL_VERIFY_NONE, NULL);
    p->ssl = SSL_new(p->ctx);
    p->rbio = BIO_new(BIO_s_mem());
    p->wbio = BIO_new(BIO_s_mem());
    ck_assert(p->ssl != NULL && p->rbio != NULL && p->wbio != NULL);
    SSL_set_bio(p->ssl, p->rbio, p->wbio);
    SSL_set_connect_state(p->ssl);
}

static void
peer_free(struct peer *p)
{
    SSL_free(p->ssl);
    SSL_CTX_free(p->ctx);
    codec_dec_free(p->dec);
    codec_enc_free(p->enc);
    if (p->fd >= 0)
        close(p->fd);
    free(p->raw.p);
    free(p->plain.p);
}

/* Reads the socket, advances the handshake, decrypts and decodes what can be. */
static void
peer_pump(struct peer *p)
{
    uint8_t buf[16384];
    ssize_t n;

    while (!p->eof) {
        n = recv(p->fd, buf, sizeof(buf), 0);
        if (n > 0) {
            bytes_add(&p->raw, buf, (size_t)n);
            if (p->ssl != NULL)
                ck_assert_int_eq(BIO_write(p->rbio, buf, (int)n), (int)n);
            else
                peer_decode(p, buf, (size_t)n);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            p->eof = true;
        break;
    }
    if (p->ssl == NULL || p->tls_failed)
        return;
    if (!p->handshake_done) {
        int rc;

        ERR_clear_error();
        rc = SSL_do_handshake(p->ssl);
        if (rc == 1) {
            p->handshake_done = true;
        } else {
            int e = SSL_get_error(p->ssl, rc);

            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                p->tls_failed = true;
        }
    }
    while (p->handshake_done && !p->tls_failed) {
        int k, e;

        ERR_clear_error();
        k = SSL_read(p->ssl, buf, sizeof(buf));
        if (k > 0) {
            bytes_add(&p->plain, buf, (size_t)k);
            peer_decode(p, buf, (size_t)k);
            continue;
        }
        e = SSL_get_error(p->ssl, k);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            p->tls_failed = true;
        break;
    }
    peer_flush(p);
}

/* ---- the log ---- */

/* The lines at warning level or above: how many, and the first one in first[cap]. */
static int
log_serious_lines(const char *text, char *first, size_t cap)
{
    int n = 0;

    first[0] = '\0';
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);

        if ((memmem(line, len, " ERROR ", 7) != NULL ||
             memmem(line, len, " WARNING ", 9) != NULL)) {
            if (n++ == 0)
                snprintf(first, cap, "%.*s", (int)len, line);
        }
        line += len + (end != NULL);
    }
    return n;
}

/* ---- the test ---- */

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool
has_magic(const struct bytes *b)
{
    static const uint8_t magic[4] = {'W', 'M', 'I', 'R'};

    return b->len >= 4 && memmem(b->p, b->len, magic, sizeof(magic)) != NULL;
}

START_TEST(test_misuse)
{
    const struct misuse_case *mc = &cases[_i];
    struct wio_loop *loop;
    struct tls_config *tls;
    struct acceptor a = {0};
    struct peer p;
    struct msg_hello hello = {.role = MSG_ROLE_SOURCE, .system_id = 42, .timeline = 1};
    struct conn_config cfg = {.peer_name = "site-b",
                              .hello = &hello,
                              .epoch = 1,
                              .compress = true,
                              .lz4_acceleration = 1,
                              .heartbeat_ms = 50,
                              .timeout_ms = 5000};
    char err[512], crt[4200], key[4200], serious[2048];
    char *dir = tu_tmpdir("tlsmisuse"), *log;
    int listen_fd, port, afd, lines;
    double end;

    fprintf(stderr, "== %s\n", mc->what);
    snprintf(hello.node_name, sizeof(hello.node_name), "site-a");
    snprintf(crt, sizeof(crt), "%s/site-a.crt", tu_certs());
    snprintf(key, sizeof(key), "%s/site-a.key", tu_certs());
    ck_assert_msg(tls_config_new(&tls, tu_cert("ca.crt"), crt, key, true, err, sizeof(err)) == 0,
                  "%s", err);
    cfg.tls = tls;
    ck_assert_int_eq(wio_loop_new(&loop, 64), 0);
    listen_fd = wio_listen_tcp("127.0.0.1:0", 4, &port);
    ck_assert_int_ge(listen_fd, 0);
    peer_new(&p, mc, port);
    afd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(afd, 0);

    tu_log_capture_start(dir);
    ck_assert_int_eq(conn_new(&a.c, loop, afd, true, &cfg, &acc_ops, &a), 0);
    /* The owner has WAL ready before the peer is even known: it cannot be sent. */
    try_early_send(&a);
    end = now_s() + 10;
    while (now_s() < end) {
        ck_assert_int_ge(wio_run_once(loop, 5), 0);
        try_early_send(&a);
        peer_pump(&p);
        if (!mc->refused && p.marker_decoded)
            break;
        if (mc->refused && a.closed && p.eof)
            break;
    }
    /* Whatever the acceptor still had queued has had its chance to arrive. */
    for (int i = 0; i < 10; i++) {
        ck_assert_int_ge(wio_run_once(loop, 10), 0);
        peer_pump(&p);
    }
    if (!mc->refused)
        conn_close(a.c, 0, "test done");
    for (int i = 0; i < 5; i++)
        ck_assert_int_ge(wio_run_once(loop, 10), 0);
    log = tu_log_capture_end();

    fprintf(stderr,
            "%s: acceptor %s (%s); early sends refused %d; client: %zu bytes received, TLS "
            "handshake %s, %zu bytes decrypted, %d frames, %d WAL\n",
            mc->what, a.established ? "established" : "refused", a.message, a.early_sends,
            p.raw.len,
            p.ssl == NULL      ? "none"
            : p.handshake_done ? "completed"
                               : "not completed",
            p.plain.len, p.frames, p.wal_frames);
    ck_assert_int_ge(a.early_sends, 1);
    if (mc->refused) {
        ck_assert_msg(a.closed, "%s: the acceptor did not refuse the peer", mc->what);
        ck_assert_msg(!a.established && a.wal_sent == 0, "%s: established", mc->what);
        ck_assert_msg(a.reason == mc->reason, "%s: reason %d (%s), expected %s", mc->what, a.reason,
                      wire_strerror(a.reason), wire_strerror(mc->reason));
        /* (1) No WAL byte: not in the clear, no frame at all, nothing decrypted. */
        ck_assert_msg(
            memmem(p.raw.p ? p.raw.p : (uint8_t *)"", p.raw.len, MARKER, strlen(MARKER)) == NULL,
            "%s: the marker reached the peer in the clear", mc->what);
        ck_assert_msg(!has_magic(&p.raw), "%s: a frame reached the peer in the clear", mc->what);
        ck_assert_msg(p.plain.len == 0, "%s: the peer decrypted %zu bytes", mc->what, p.plain.len);
        ck_assert_msg(p.frames == 0 && p.wal_frames == 0 && !p.marker_decoded,
                      "%s: the peer decoded %d frames, %d WAL", mc->what, p.frames, p.wal_frames);
        ck_assert_int_eq(p.dec_err, 0);
        /* (2) One clear log line naming the cause. */
        lines = log_serious_lines(log, serious, sizeof(serious));
        ck_assert_msg(lines == 1, "%s: %d log lines at warning level or above, expected 1",
                      mc->what, lines);
        /* naming where it came from, and that it is not (yet) site-b */
        {
            struct sockaddr_in me;
            socklen_t melen = sizeof(me);
            char want[128];

            ck_assert_int_eq(getsockname(p.fd, (struct sockaddr *)&me, &melen), 0);
            snprintf(want, sizeof(want), "ERROR peer[127.0.0.1:%u]: ", ntohs(me.sin_port));
            ck_assert_msg(strstr(serious, want) != NULL, "%s: \"%s\" lacks \"%s\"", mc->what,
                          serious, want);
            snprintf(want, sizeof(want),
                     "TLS handshake with 127.0.0.1:%u failed (an incoming connection, not "
                     "verified as site-b): ",
                     ntohs(me.sin_port));
            ck_assert_msg(strstr(serious, want) != NULL, "%s: \"%s\" lacks \"%s\"", mc->what,
                          serious, want);
        }
        ck_assert_msg(strstr(serious, mc->cause) != NULL, "%s: \"%s\" lacks \"%s\"", mc->what,
                      serious, mc->cause);
        ck_assert_msg(mc->cause2 == NULL || strstr(serious, mc->cause2) != NULL,
                      "%s: \"%s\" lacks \"%s\"", mc->what, serious, mc->cause2);
    } else {
        /* The same checks see the WAL when it is sent: they are not blind. */
        ck_assert_msg(a.established && a.wal_sent == 1, "control: not established: %s", a.message);
        ck_assert(p.handshake_done);
        ck_assert_int_ge(p.wal_frames, 1);
        ck_assert(p.marker_decoded);
        ck_assert(memmem(p.plain.p, p.plain.len, MARKER, strlen(MARKER)) != NULL);
        /* encrypted on the wire */
        ck_assert(memmem(p.raw.p, p.raw.len, MARKER, strlen(MARKER)) == NULL);
        ck_assert_int_eq(log_serious_lines(log, serious, sizeof(serious)), 0);
    }
    free(log);
    conn_free(a.c);
    peer_free(&p);
    close(listen_fd);
    wio_loop_free(loop);
    tls_config_free(tls);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("tlsmisuse");
    TCase *tc = tcase_create("tlsmisuse");
    SRunner *sr;
    int failed;

    tu_certs(); /* once, in the parent, before Check forks the tests */
    fill_wal();
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_misuse, 0, (int)(sizeof(cases) / sizeof(cases[0])));
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
