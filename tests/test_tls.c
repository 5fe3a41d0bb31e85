/*
 * test_tls.c - the TLS module: real OpenSSL handshakes between two in-memory sessions.
 *
 * A "client" (connector) and a "server" (acceptor) session are pumped against each other:
 * each step advances the handshake or reads, then all pending ciphertext is moved across,
 * until nothing moves any more.  As conn.c does, the acceptor speaks first: once it is
 * established it writes ACCEPTOR_HELLO.  So in every failure case, "the client read no
 * application data" proves the acceptor never considered an unverified peer established.
 *
 * Certificates come from tests/gen-test-certs.sh (tu_certs(), generated once by the unchecked
 * fixture, in the parent process).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "testutil.h"
#include "tls.h"

#define ACCEPTOR_HELLO "acceptor speaks first"
#define BULK_SIZE (4u << 20)

struct side {
    struct tls_session *s;
    bool acceptor;
    bool said_hello;
    int err;       /* first negative result of tls_handshake / tls_read, else 0 */
    size_t app_in; /* application bytes tls_read returned */
    char got[256];
};

static struct tls_config *
make_config(const char *name, bool server)
{
    char ca[4096], crt[4096], key[4096], err[512];
    struct tls_config *cfg = NULL;
    int rc;

    snprintf(ca, sizeof(ca), "%s", tu_cert("ca.crt"));
    snprintf(crt, sizeof(crt), "%s.crt", tu_cert(name));
    snprintf(key, sizeof(key), "%s.key", tu_cert(name));
    rc = tls_config_new(&cfg, ca, crt, key, server, err, sizeof(err));
    ck_assert_msg(rc == 0, "tls_config_new(%s): %d %s", name, rc, err);
    ck_assert_ptr_nonnull(cfg);
    return cfg;
}

static struct side
make_side(struct tls_config *cfg, const char *peer, bool acceptor)
{
    struct side d = {.acceptor = acceptor};

    ck_assert_int_eq(tls_session_new(&d.s, cfg, peer), 0);
    ck_assert_ptr_nonnull(d.s);
    ck_assert_ptr_null(tls_peer_name(d.s));
    ck_assert_str_eq(tls_session_error(d.s), "");
    return d;
}

/* Moves all pending ciphertext from one session to the other; true if anything moved. */
static bool
move(struct tls_session *from, struct tls_session *to)
{
    static unsigned char buf[1 << 16];
    bool moved = false;
    size_t n;

    while ((n = tls_take_out(from, buf, sizeof(buf))) > 0) {
        ck_assert_int_eq(tls_feed(to, buf, n), 0);
        moved = true;
    }
    ck_assert_uint_eq(tls_out_pending(from), 0);
    return moved;
}

static void
step(struct side *d)
{
    char buf[256];
    ssize_t n;

    if (d->err != 0)
        return;
    if (!tls_established(d->s)) {
        int rc = tls_handshake(d->s);

        ck_assert_int_le(rc, 1);
        if (rc < 0)
            d->err = rc;
        if (rc <= 0)
            return;
    }
    if (d->acceptor && !d->said_hello) {
        ck_assert_int_eq(tls_write(d->s, ACCEPTOR_HELLO, strlen(ACCEPTOR_HELLO)), 0);
        d->said_hello = true;
    }
    while ((n = tls_read(d->s, buf, sizeof(buf))) > 0) {
        size_t room = sizeof(d->got) - 1 - strlen(d->got);
        strncat(d->got, buf, (size_t)n < room ? (size_t)n : room);
        d->app_in += (size_t)n;
    }
    if (n < 0)
        d->err = (int)n;
}

static void
pump(struct side *cli, struct side *srv)
{
    for (int round = 0; round < 100; round++) {
        bool moved;

        step(srv);
        step(cli);
        moved = move(cli->s, srv->s);
        moved = move(srv->s, cli->s) || moved;
        if (!moved)
            return;
    }
    ck_abort_msg("handshake did not settle in 100 rounds");
}

static void
expect_error(const struct side *d, int code, const char *needle)
{
    const char *msg = tls_session_error(d->s);

    ck_assert_msg(d->err == code, "%s: expected %s, got %d (%s): %s",
                  d->acceptor ? "server" : "client", wire_strerror(code), d->err,
                  wire_strerror(d->err), msg);
    ck_assert_msg(strstr(msg, needle) != NULL, "%s error \"%s\" lacks \"%s\"",
                  d->acceptor ? "server" : "client", msg, needle);
}

/* No application data crossed, and the acceptor never took the peer as verified. */
static void
expect_no_app_data(const struct side *cli, const struct side *srv)
{
    ck_assert_uint_eq(cli->app_in, 0);
    ck_assert_uint_eq(srv->app_in, 0);
    ck_assert(!srv->said_hello);
    ck_assert(!tls_established(srv->s));
    ck_assert_ptr_null(tls_peer_name(srv->s));
    ck_assert_int_lt(tls_write(srv->s, "x", 1), 0);
    ck_assert_uint_eq(tls_out_pending(srv->s), 0);
}

/* One handshake: client with cert cli_name expecting cli_expects, server likewise. */
struct pair {
    struct tls_config *ccfg, *scfg;
    struct side cli, srv;
};

static void
pair_run(struct pair *p, const char *cli_name, const char *cli_expects, const char *srv_name,
         const char *srv_expects)
{
    p->ccfg = make_config(cli_name, false);
    p->scfg = make_config(srv_name, true);
    p->cli = make_side(p->ccfg, cli_expects, false);
    p->srv = make_side(p->scfg, srv_expects, true);
    pump(&p->cli, &p->srv);
}

static void
pair_free(struct pair *p)
{
    tls_session_free(p->cli.s);
    tls_session_free(p->srv.s);
    tls_config_free(p->ccfg);
    tls_config_free(p->scfg);
}

static unsigned char *
pattern(size_t len, unsigned seed)
{
    unsigned char *b = malloc(len);
    unsigned x = seed * 2654435761u + 1;

    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (unsigned char)(x >> 16);
    }
    return b;
}

/* Sends len bytes from one established session to the other and checks they arrive intact. */
static void
transfer(struct tls_session *from, struct tls_session *to, size_t len, unsigned seed)
{
    unsigned char *data = pattern(len, seed);
    unsigned char *got = malloc(len + 1);
    size_t have = 0, wire;
    unsigned char *ct;

    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(tls_write(from, data, len), 0);
    wire = tls_out_pending(from);
    ck_assert_uint_gt(wire, len); /* ciphertext: payload plus record overhead */
    ct = malloc(wire);
    ck_assert_ptr_nonnull(ct);
    ck_assert_uint_eq(tls_take_out(from, ct, wire), wire);
    ck_assert_uint_eq(tls_out_pending(from), 0);
    ck_assert(len < 64 || memmem(ct, wire, data, 64) == NULL); /* not sent in the clear */
    ck_assert_int_eq(tls_feed(to, ct, wire), 0);
    for (;;) {
        ssize_t n = tls_read(to, got + have, len + 1 - have);

        ck_assert_int_ge(n, 0);
        if (n == 0)
            break;
        have += (size_t)n;
    }
    ck_assert_uint_eq(have, len);
    ck_assert(memcmp(got, data, len) == 0);
    free(ct);
    free(got);
    free(data);
}

/* 1. Mutual authentication, data both ways, close_notify. */
START_TEST(test_success)
{
    struct pair p;
    unsigned char buf[64];

    pair_run(&p, "site-a", "site-b", "site-b", "site-a");
    ck_assert_msg(p.cli.err == 0, "client: %s", tls_session_error(p.cli.s));
    ck_assert_msg(p.srv.err == 0, "server: %s", tls_session_error(p.srv.s));
    ck_assert(tls_established(p.cli.s));
    ck_assert(tls_established(p.srv.s));
    ck_assert_int_eq(tls_handshake(p.cli.s), 1); /* idempotent */
    ck_assert_int_eq(tls_handshake(p.srv.s), 1);
    ck_assert_str_eq(tls_peer_name(p.cli.s), "site-b");
    ck_assert_str_eq(tls_peer_name(p.srv.s), "site-a");
    ck_assert_str_eq(p.cli.got, ACCEPTOR_HELLO);

    transfer(p.cli.s, p.srv.s, 1, 1);
    transfer(p.srv.s, p.cli.s, 1000, 2);
    transfer(p.cli.s, p.srv.s, BULK_SIZE, 3);
    transfer(p.srv.s, p.cli.s, BULK_SIZE, 4);
    transfer(p.cli.s, p.srv.s, BULK_SIZE + 12345, 5);

    ck_assert_int_eq(tls_write(p.cli.s, "", 0), 0);
    ck_assert_uint_eq(tls_out_pending(p.cli.s), 0);
    ck_assert_int_eq(tls_read(p.srv.s, buf, sizeof(buf)), 0);

    tls_shutdown(p.cli.s);
    ck_assert_uint_gt(tls_out_pending(p.cli.s), 0);
    ck_assert(move(p.cli.s, p.srv.s));
    ck_assert_int_eq(tls_read(p.srv.s, buf, sizeof(buf)), WIRE_ECLOSED);
    ck_assert_int_eq(tls_read(p.srv.s, buf, sizeof(buf)), WIRE_ECLOSED);
    ck_assert_ptr_nonnull(strstr(tls_session_error(p.srv.s), "close_notify"));
    pair_free(&p);
}
END_TEST

/* 2a. An acceptor fed plaintext: an HTTP request, a walmirror frame header without TLS. */
START_TEST(test_plaintext_to_server)
{
    static const char *const inputs[] = {
        "GET / HTTP/1.1\r\nHost: site-b\r\n\r\n",
        "WMIR\x01\x01\x00\x00",     /* a plaintext walmirror frame header */
        "\x16\x01\x00\x00\x00\x00", /* handshake type, but no TLS version */
    };
    struct tls_config *scfg = make_config("site-b", true);

    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        struct side srv = make_side(scfg, "site-a", true);
        unsigned char buf[16];

        ck_assert_int_eq(tls_handshake(srv.s), 0);
        /* one byte at a time: the verdict must not need a whole record */
        for (const char *c = inputs[i]; *c != '\0' || c == inputs[i]; c++)
            ck_assert_int_eq(tls_feed(srv.s, c, 1), 0);
        srv.err = tls_handshake(srv.s);
        expect_error(&srv, WIRE_ETLS_PLAINTEXT, "does not speak TLS");
        ck_assert_int_eq(tls_read(srv.s, buf, sizeof(buf)), WIRE_ETLS_PLAINTEXT);
        ck_assert_int_eq(tls_write(srv.s, "x", 1), WIRE_ETLS_PLAINTEXT);
        ck_assert_uint_eq(tls_out_pending(srv.s), 0); /* nothing sent to a plaintext peer */
        ck_assert(!tls_established(srv.s));
        tls_session_free(srv.s);
    }
    tls_config_free(scfg);
}
END_TEST

/* 2b. A connector whose "server" answers the ClientHello in plaintext: WIRE_ETLS_PLAINTEXT. */
START_TEST(test_plaintext_to_client)
{
    static const char reply[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
    struct tls_config *ccfg = make_config("site-a", false);
    struct side cli = make_side(ccfg, "site-b", false);
    unsigned char hello[4096];

    ck_assert_int_eq(tls_handshake(cli.s), 0);
    ck_assert_uint_gt(tls_take_out(cli.s, hello, sizeof(hello)), 5);
    ck_assert_int_eq(hello[0], 0x16); /* our ClientHello is a handshake record */
    ck_assert_int_eq(tls_feed(cli.s, reply, sizeof(reply) - 1), 0);
    cli.err = tls_handshake(cli.s);
    expect_error(&cli, WIRE_ETLS_PLAINTEXT, "does not speak TLS");
    ck_assert_ptr_nonnull(strstr(tls_session_error(cli.s), "HTTP/1.1"));
    ck_assert_int_eq(tls_handshake(cli.s), WIRE_ETLS_PLAINTEXT); /* sticky */
    tls_session_free(cli.s);
    tls_config_free(ccfg);
}
END_TEST

/* 3a. Server certificate from another CA. */
START_TEST(test_wrong_ca_server)
{
    struct pair p;

    pair_run(&p, "site-a", "site-b", "rogue-site-b", "site-a");
    expect_error(&p.cli, WIRE_ETLS_VERIFY, "unable to get local issuer certificate");
    expect_error(&p.cli, WIRE_ETLS_VERIFY, "issuer /CN=walmirror rogue CA");
    /* the client's alert reaches the server, which learns it was rejected */
    expect_error(&p.srv, WIRE_ETLS_REJECTED, "peer rejected the handshake: tlsv1 alert unknown ca");
    expect_no_app_data(&p.cli, &p.srv);
    pair_free(&p);
}
END_TEST

/* 3b. Client certificate from another CA: the server refuses, the client is told. */
START_TEST(test_wrong_ca_client)
{
    struct pair p;

    pair_run(&p, "rogue-site-b", "site-a", "site-a", "site-b");
    expect_error(&p.srv, WIRE_ETLS_VERIFY, "unable to get local issuer certificate");
    expect_error(&p.cli, WIRE_ETLS_REJECTED, "peer rejected the handshake: tlsv1 alert unknown ca");
    expect_no_app_data(&p.cli, &p.srv);
    pair_free(&p);
}
END_TEST

/* 4. Expired certificates, both directions. */
START_TEST(test_expired)
{
    struct pair p;

    pair_run(&p, "site-a", "site-b", "expired-site-b", "site-a");
    expect_error(&p.cli, WIRE_ETLS_VERIFY, "certificate has expired");
    expect_error(&p.cli, WIRE_ETLS_VERIFY, "site-b expired 2020-01-02 00:00:00 UTC");
    expect_error(&p.srv, WIRE_ETLS_REJECTED, "expired");
    expect_no_app_data(&p.cli, &p.srv);
    pair_free(&p);

    pair_run(&p, "expired-site-b", "site-a", "site-a", "site-b");
    expect_error(&p.srv, WIRE_ETLS_VERIFY, "certificate has expired");
    expect_error(&p.cli, WIRE_ETLS_REJECTED,
                 "peer rejected the handshake: sslv3 alert certificate expired");
    expect_no_app_data(&p.cli, &p.srv);
    pair_free(&p);
}
END_TEST

/* 5. Name mismatch, both directions (SSL_set1_host must work for the acceptor too). */
START_TEST(test_name_mismatch)
{
    struct pair p;

    pair_run(&p, "site-a", "site-b", "wrongname", "site-a");
    expect_error(&p.cli, WIRE_ETLS_VERIFY,
                 "peer certificate name mismatch: expected site-b, certificate is for site-z");
    expect_error(&p.srv, WIRE_ETLS_REJECTED, "peer rejected the handshake");
    expect_no_app_data(&p.cli, &p.srv);
    pair_free(&p);

    pair_run(&p, "site-b", "site-b", "site-b", "site-a");
    expect_error(&p.srv, WIRE_ETLS_VERIFY,
                 "peer certificate name mismatch: expected site-a, certificate is for site-b");
    expect_error(&p.cli, WIRE_ETLS_REJECTED, "peer rejected the handshake");
    expect_no_app_data(&p.cli, &p.srv);
    pair_free(&p);
}
END_TEST

/* A plain OpenSSL endpoint over memory BIOs, limited to TLS 1.2 at most. */
struct raw {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio;
};

static void
raw_new(struct raw *r, bool server, int max_version, const char *name)
{
    char crt[4096], key[4096];

    snprintf(crt, sizeof(crt), "%s.crt", tu_cert(name));
    snprintf(key, sizeof(key), "%s.key", tu_cert(name));
    r->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    ck_assert_ptr_nonnull(r->ctx);
    ck_assert_int_eq(SSL_CTX_set_max_proto_version(r->ctx, max_version), 1);
    ck_assert_int_eq(SSL_CTX_load_verify_file(r->ctx, tu_cert("ca.crt")), 1);
    ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(r->ctx, crt), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(r->ctx, key, SSL_FILETYPE_PEM), 1);
    SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    r->ssl = SSL_new(r->ctx);
    r->rbio = BIO_new(BIO_s_mem());
    r->wbio = BIO_new(BIO_s_mem());
    ck_assert(r->ssl != NULL && r->rbio != NULL && r->wbio != NULL);
    SSL_set_bio(r->ssl, r->rbio, r->wbio);
    if (server)
        SSL_set_accept_state(r->ssl);
    else
        SSL_set_connect_state(r->ssl);
}

/* Pumps a raw endpoint against one of ours; returns the raw side's last SSL_do_handshake. */
static int
raw_pump(struct raw *r, struct side *d)
{
    unsigned char buf[1 << 14];
    int rc = 0;

    for (int round = 0; round < 100; round++) {
        bool moved = false;
        size_t n;
        int k;

        ERR_clear_error();
        rc = SSL_do_handshake(r->ssl);
        step(d);
        while ((k = BIO_read(r->wbio, buf, sizeof(buf))) > 0) {
            ck_assert_int_eq(tls_feed(d->s, buf, (size_t)k), 0);
            moved = true;
        }
        while ((n = tls_take_out(d->s, buf, sizeof(buf))) > 0) {
            ck_assert_int_eq(BIO_write(r->rbio, buf, (int)n), (int)n);
            moved = true;
        }
        if (!moved)
            return rc;
    }
    ck_abort_msg("raw handshake did not settle");
    return rc;
}

static void
raw_free(struct raw *r)
{
    SSL_free(r->ssl);
    SSL_CTX_free(r->ctx);
}

/* 6. TLS 1.2: our acceptor refuses a 1.2-only client; our connector is refused by a 1.2
 * server. */
START_TEST(test_tls12_refused)
{
    struct tls_config *scfg = make_config("site-b", true);
    struct tls_config *ccfg = make_config("site-a", false);
    struct side srv = make_side(scfg, "site-a", true);
    struct side cli = make_side(ccfg, "site-b", false);
    struct raw r;
    int rc;

    raw_new(&r, false, TLS1_2_VERSION, "site-a");
    rc = raw_pump(&r, &srv);
    ck_assert_int_ne(rc, 1);
    ck_assert_int_ne(SSL_is_init_finished(r.ssl), 1);
    ck_assert_int_eq(SSL_get_error(r.ssl, rc), SSL_ERROR_SSL); /* it got our alert */
    expect_error(&srv, WIRE_ETLS, "TLS 1.3");
    ck_assert_uint_eq(srv.app_in, 0);
    ck_assert(!srv.said_hello);
    raw_free(&r);

    raw_new(&r, true, TLS1_2_VERSION, "site-b");
    rc = raw_pump(&r, &cli);
    ck_assert_int_ne(rc, 1);
    expect_error(&cli, WIRE_ETLS_REJECTED,
                 "peer rejected the handshake: tlsv1 alert protocol version");
    ck_assert_uint_eq(cli.app_in, 0);
    raw_free(&r);

    tls_session_free(srv.s);
    tls_session_free(cli.s);
    tls_config_free(scfg);
    tls_config_free(ccfg);
}
END_TEST

/* 7. One flipped bit in an application-data record. */
START_TEST(test_corrupted_record)
{
    static const char msg[] = "WAL bytes that must not be altered in flight";
    unsigned char ct[1024], buf[256];
    size_t n;
    struct pair p;

    pair_run(&p, "site-a", "site-b", "site-b", "site-a");
    ck_assert(tls_established(p.cli.s) && tls_established(p.srv.s));
    ck_assert_int_eq(tls_write(p.cli.s, msg, sizeof(msg)), 0);
    n = tls_take_out(p.cli.s, ct, sizeof(ct));
    ck_assert_uint_gt(n, sizeof(msg) + 5);
    ck_assert_int_eq(ct[0], 0x17); /* an application_data record */
    ct[5 + sizeof(msg) / 2] ^= 0x04;
    ck_assert_int_eq(tls_feed(p.srv.s, ct, n), 0);
    ck_assert_int_eq(tls_read(p.srv.s, buf, sizeof(buf)), WIRE_ETLS);
    ck_assert_ptr_nonnull(strstr(tls_session_error(p.srv.s), "bad record mac"));
    ck_assert_int_eq(tls_read(p.srv.s, buf, sizeof(buf)), WIRE_ETLS); /* sticky */
    ck_assert(!tls_established(p.srv.s));
    /* the server's alert tells the client */
    ck_assert(move(p.srv.s, p.cli.s));
    ck_assert_int_eq(tls_read(p.cli.s, buf, sizeof(buf)), WIRE_ETLS);
    ck_assert_ptr_nonnull(strstr(tls_session_error(p.cli.s), "peer aborted the TLS session"));
    pair_free(&p);
}
END_TEST

/* 8. No application data before the handshake, at any stage of it. */
START_TEST(test_no_data_before_handshake)
{
    struct tls_config *scfg = make_config("site-b", true);
    struct tls_config *ccfg = make_config("site-a", false);
    struct side srv = make_side(scfg, "site-a", true);
    struct side cli = make_side(ccfg, "site-b", false);

    ck_assert_int_eq(tls_write(cli.s, "x", 1), -ENOTCONN);
    ck_assert_int_eq(tls_write(srv.s, "x", 1), -ENOTCONN);
    ck_assert_ptr_nonnull(strstr(tls_session_error(srv.s), "before the TLS handshake"));
    ck_assert_uint_eq(tls_out_pending(cli.s), 0);
    ck_assert_uint_eq(tls_out_pending(srv.s), 0);

    ck_assert_int_eq(tls_handshake(cli.s), 0); /* ClientHello out */
    ck_assert_int_eq(tls_write(cli.s, "x", 1), -ENOTCONN);
    ck_assert(move(cli.s, srv.s));
    ck_assert_int_eq(tls_handshake(srv.s), 0); /* ServerHello..Finished out, client unverified */
    ck_assert_int_eq(tls_write(srv.s, "x", 1), -ENOTCONN);
    ck_assert(move(srv.s, cli.s));
    ck_assert_int_eq(tls_handshake(cli.s), 1); /* TLS 1.3: the client finishes first */
    ck_assert_int_eq(tls_write(srv.s, "x", 1), -ENOTCONN);
    ck_assert(!tls_established(srv.s));
    ck_assert(move(cli.s, srv.s));
    ck_assert_int_eq(tls_handshake(srv.s), 1);
    ck_assert_int_eq(tls_write(srv.s, "x", 1), 0);
    ck_assert_uint_gt(tls_out_pending(srv.s), 0);

    tls_session_free(srv.s);
    tls_session_free(cli.s);
    tls_config_free(scfg);
    tls_config_free(ccfg);
}
END_TEST

static int
config_error(const char *ca, const char *crt, const char *key, char *err, size_t errlen)
{
    struct tls_config *cfg = (struct tls_config *)&cfg; /* must be reset to NULL */
    int rc = tls_config_new(&cfg, ca, crt, key, true, err, errlen);

    ck_assert_ptr_null(cfg);
    return rc;
}

START_TEST(test_config_errors)
{
    char ca[4096], a_crt[4096], a_key[4096], b_key[4096], missing[4096], err[512];

    snprintf(ca, sizeof(ca), "%s", tu_cert("ca.crt"));
    snprintf(a_crt, sizeof(a_crt), "%s", tu_cert("site-a.crt"));
    snprintf(a_key, sizeof(a_key), "%s", tu_cert("site-a.key"));
    snprintf(b_key, sizeof(b_key), "%s", tu_cert("site-b.key"));
    snprintf(missing, sizeof(missing), "%s", tu_cert("no-such.crt"));

    ck_assert_int_eq(config_error(missing, a_crt, a_key, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, missing));
    ck_assert_ptr_nonnull(strstr(err, "CA file"));
    ck_assert_ptr_nonnull(strstr(err, "No such file"));

    ck_assert_int_eq(config_error(ca, missing, a_key, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, "certificate file"));
    ck_assert_ptr_nonnull(strstr(err, missing));

    ck_assert_int_eq(config_error(ca, a_crt, missing, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, "key file"));
    ck_assert_ptr_nonnull(strstr(err, missing));

    ck_assert_int_eq(config_error(ca, a_crt, b_key, err, sizeof(err)), WIRE_ETLS);
    ck_assert_ptr_nonnull(strstr(err, b_key));
    ck_assert_ptr_nonnull(strstr(err, "does not match"));

    /* a certificate where the key should be, a key where the certificate should be */
    ck_assert_int_eq(config_error(ca, a_crt, a_crt, err, sizeof(err)), WIRE_ETLS);
    ck_assert_ptr_nonnull(strstr(err, "key file"));
    ck_assert_ptr_nonnull(strstr(err, a_crt));
    ck_assert_int_eq(config_error(ca, a_key, a_key, err, sizeof(err)), WIRE_ETLS);
    ck_assert_ptr_nonnull(strstr(err, "certificate file"));
    ck_assert_ptr_nonnull(strstr(err, a_key));
    ck_assert_int_eq(config_error(a_key, a_crt, a_key, err, sizeof(err)), WIRE_ETLS);
    ck_assert_ptr_nonnull(strstr(err, "CA file"));
}
END_TEST

static Suite *
tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_success);
    tcase_add_test(tc, test_plaintext_to_server);
    tcase_add_test(tc, test_plaintext_to_client);
    tcase_add_test(tc, test_wrong_ca_server);
    tcase_add_test(tc, test_wrong_ca_client);
    tcase_add_test(tc, test_expired);
    tcase_add_test(tc, test_name_mismatch);
    tcase_add_test(tc, test_tls12_refused);
    tcase_add_test(tc, test_corrupted_record);
    tcase_add_test(tc, test_no_data_before_handshake);
    tcase_add_test(tc, test_config_errors);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    /* Once, in the parent, before Check forks the tests; removed at exit. */
    tu_certs();
    sr = srunner_create(tls_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
