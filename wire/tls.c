/*
 * tls.c - TLS 1.3 with mutual authentication over OpenSSL memory BIOs; contract in tls.h.
 *
 * A session is an SSL object between two memory BIOs: rbio holds ciphertext the caller fed us,
 * wbio holds ciphertext for the caller to send.  No socket is ever touched, so the session
 * never blocks and every SSL_* call either makes progress or reports SSL_ERROR_WANT_READ.
 *
 * Lifecycle: tls_config_new loads the CA, our chain and key once per process and role into an
 * SSL_CTX; tls_session_new makes one SSL per connection (it holds its own reference to the
 * SSL_CTX, so the config may be freed first); tls_session_free releases it.
 *
 * Failure semantics: the first fatal failure is sticky - the session records its code and an
 * operator-worded message (tls_session_error) and every later tls_handshake / tls_read /
 * tls_write returns the same code.  Whatever alert OpenSSL queued for the peer stays in wbio
 * and should still be sent with tls_take_out, so that the peer learns why.  Failures are
 * classified, in this order:
 *   - the first bytes from the peer are not a TLS record header   -> WIRE_ETLS_PLAINTEXT
 *   - the peer's certificate failed our checks (chain, dates, name) -> WIRE_ETLS_VERIFY
 *   - the peer sent a fatal alert about the handshake or our certificate -> WIRE_ETLS_REJECTED
 *   - anything else (corrupted record, unsupported version, ...)   -> WIRE_ETLS
 * A close_notify from the peer is not a failure: tls_read returns WIRE_ECLOSED from then on.
 *
 * OpenSSL keeps its error queue per thread; each SSL_* call is preceded by ERR_clear_error()
 * so that a stale entry from another session is never blamed on this one, and the queue is
 * emptied again once a failure has been classified.
 */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "log.h"

/* Name matching: exact DNS names (or a whole-label wildcard), never "foo*.example". */
#define TLS_HOSTFLAGS X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS

/* TLS record content types that may open a peer's first flight. */
#define TLS_RECORD_ALERT 0x15
#define TLS_RECORD_HANDSHAKE 0x16

struct tls_config {
    SSL_CTX *ctx;
    bool is_server;
};

struct tls_session {
    SSL *ssl;
    BIO *rbio; /* ciphertext from the peer; owned by ssl */
    BIO *wbio; /* ciphertext for the peer; owned by ssl */
    bool is_server;
    bool established;
    bool peer_closed;
    int failed;      /* the sticky negative code once a fatal failure happened, else 0 */
    uint8_t head[8]; /* the first bytes received, to tell plaintext from TLS */
    size_t head_len;
    int verify_err; /* first X509_V_ERR_* reported to verify_cb, else 0 */
    char verify_msg[384];
    char expected[256]; /* the name the peer's certificate must carry */
    char peer_name[256];
    char err[512];
};

static void
copy_str(char *dst, size_t cap, const char *src)
{
    if (cap == 0)
        return;
    snprintf(dst, cap, "%s", src);
}

static void __attribute__((format(printf, 3, 4)))
fmt_into(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (dst == NULL || cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

/* Records a fatal failure: code and message become sticky.  Returns code. */
static int __attribute__((format(printf, 3, 4)))
tls_fail(struct tls_session *s, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
    s->failed = code;
    s->established = false;
    ERR_clear_error();
    return code;
}

/* Peer-supplied text goes into logs: keep printable ASCII only. */
static void
sanitize(char *p)
{
    for (; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
}

/* The most specific OpenSSL explanation of the first queued error, or a fallback. */
static void
ssl_reason(unsigned long e, char *buf, size_t cap)
{
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

    if (r != NULL)
        copy_str(buf, cap, r);
    else if (e != 0)
        ERR_error_string_n(e, buf, cap);
    else
        copy_str(buf, cap, "no further detail from OpenSSL");
}

/*
 * Names a certificate for a message: its DNS subjectAltNames (comma-separated), else its CN,
 * else its whole subject.  The peer controls these strings, so they are sanitized.
 */
static void
cert_label(X509 *cert, char *buf, size_t cap)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    X509_NAME *subj = X509_get_subject_name(cert);
    size_t len = 0;
    int idx;

    buf[0] = '\0';
    for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        int n;

        if (gn->type != GEN_DNS)
            continue;
        n = snprintf(buf + len, cap - len, "%s%.*s", len > 0 ? "," : "",
                     ASN1_STRING_length(gn->d.dNSName),
                     (const char *)ASN1_STRING_get0_data(gn->d.dNSName));
        if (n < 0 || (size_t)n >= cap - len)
            break;
        len += (size_t)n;
    }
    GENERAL_NAMES_free(sans);
    if (buf[0] == '\0' && subj != NULL &&
        (idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1)) >= 0) {
        unsigned char *utf8 = NULL;
        int n =
            ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx)));

        if (n >= 0)
            fmt_into(buf, cap, "%.*s", n, (const char *)utf8);
        OPENSSL_free(utf8);
    }
    if (buf[0] == '\0' && subj != NULL)
        X509_NAME_oneline(subj, buf, (int)(cap > INT_MAX ? INT_MAX : cap));
    if (buf[0] == '\0')
        copy_str(buf, cap, "(no name)");
    sanitize(buf);
}

static void
time_label(const ASN1_TIME *t, char *buf, size_t cap)
{
    struct tm tm;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 ||
        strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        copy_str(buf, cap, "(unreadable date)");
}

/*
 * Certificate verification callback: OpenSSL decides (preverify_ok) and this only remembers
 * the first complaint in words an operator can act on.  Returning preverify_ok unchanged keeps
 * OpenSSL's verdict, including the name check that SSL_set1_host arranged.
 */
static int
verify_cb(int preverify_ok, X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_session *s = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(xs);
    int err = X509_STORE_CTX_get_error(xs);
    int depth = X509_STORE_CTX_get_error_depth(xs);
    char name[256], extra[320], when[64];

    if (preverify_ok || s == NULL || s->verify_err != 0)
        return preverify_ok;
    s->verify_err = err != X509_V_OK ? err : X509_V_ERR_UNSPECIFIED;
    if (cert != NULL)
        cert_label(cert, name, sizeof(name));
    else
        copy_str(name, sizeof(name), "(unknown)");

    if (err == X509_V_ERR_HOSTNAME_MISMATCH) {
        fmt_into(s->verify_msg, sizeof(s->verify_msg),
                 "peer certificate name mismatch: expected %s, certificate is for %s", s->expected,
                 name);
        return preverify_ok;
    }
    switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        time_label(cert != NULL ? X509_get0_notAfter(cert) : NULL, when, sizeof(when));
        fmt_into(extra, sizeof(extra), "%s certificate for %s expired %s",
                 depth == 0 ? "the" : "CA", name, when);
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        time_label(cert != NULL ? X509_get0_notBefore(cert) : NULL, when, sizeof(when));
        fmt_into(extra, sizeof(extra), "%s certificate for %s is valid only from %s",
                 depth == 0 ? "the" : "CA", name, when);
        break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: {
        char issuer[256] = "(unknown)";

        if (cert != NULL)
            X509_NAME_oneline(X509_get_issuer_name(cert), issuer, sizeof(issuer));
        sanitize(issuer);
        fmt_into(extra, sizeof(extra),
                 "certificate for %s has issuer %s, which is not the configured CA", name, issuer);
        break;
    }
    default:
        fmt_into(extra, sizeof(extra), "certificate for %s, chain depth %d", name, depth);
        break;
    }
    fmt_into(s->verify_msg, sizeof(s->verify_msg), "peer certificate verification failed: %s (%s)",
             X509_verify_cert_error_string(err), extra);
    return preverify_ok;
}

/* Alerts that mean "the peer refuses us" (our certificate, our version, our handshake). */
static bool
alert_is_rejection(int alert)
{
    switch (alert) {
    case SSL3_AD_HANDSHAKE_FAILURE:
    case SSL3_AD_BAD_CERTIFICATE:
    case SSL3_AD_UNSUPPORTED_CERTIFICATE:
    case SSL3_AD_CERTIFICATE_REVOKED:
    case SSL3_AD_CERTIFICATE_EXPIRED:
    case SSL3_AD_CERTIFICATE_UNKNOWN:
    case TLS1_AD_UNKNOWN_CA:
    case TLS1_AD_ACCESS_DENIED:
    case TLS1_AD_PROTOCOL_VERSION:
    case TLS1_AD_INSUFFICIENT_SECURITY:
    case TLS13_AD_CERTIFICATE_REQUIRED:
    case TLS13_AD_MISSING_EXTENSION:
    case TLS1_AD_UNSUPPORTED_EXTENSION:
    case TLS1_AD_UNRECOGNIZED_NAME:
        return true;
    default:
        return false;
    }
}

/*
 * Turns a failed SSL_* call into a return code.  Returns 0 when OpenSSL merely wants more
 * input, WIRE_ECLOSED on close_notify, else records and returns a sticky failure.
 */
static int
ssl_failure(struct tls_session *s, int ret)
{
    int kind = SSL_get_error(s->ssl, ret);
    unsigned long e, first = 0, ssl_e = 0;
    int reason;
    char why[256];

    switch (kind) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        ERR_clear_error();
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        s->peer_closed = true;
        copy_str(s->err, sizeof(s->err), "peer closed the TLS session (close_notify)");
        return WIRE_ECLOSED;
    default:
        break;
    }

    /* The first error from the SSL library names the cause; other libraries' entries are
     * context (or all there is). */
    while ((e = ERR_get_error()) != 0) {
        if (first == 0)
            first = e;
        if (ssl_e == 0 && ERR_GET_LIB(e) == ERR_LIB_SSL)
            ssl_e = e;
    }
    e = ssl_e != 0 ? ssl_e : first;
    reason = ssl_e != 0 ? ERR_GET_REASON(ssl_e) : 0;
    ssl_reason(e, why, sizeof(why));

    if (s->verify_err != 0)
        return tls_fail(s, WIRE_ETLS_VERIFY, "%s", s->verify_msg);
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED)
        return tls_fail(s, WIRE_ETLS_VERIFY, "peer certificate verification failed: %s",
                    X509_verify_cert_error_string(SSL_get_verify_result(s->ssl)));
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return tls_fail(s, WIRE_ETLS_VERIFY,
                    "peer certificate verification failed: the peer presented no certificate");
    if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
        /* OpenSSL reports a received fatal alert as SSL_AD_REASON_OFFSET + alert number. */
        if (!s->established || alert_is_rejection(reason - SSL_AD_REASON_OFFSET))
            return tls_fail(s, WIRE_ETLS_REJECTED, "peer rejected the handshake: %s", why);
        return tls_fail(s, WIRE_ETLS, "peer aborted the TLS session: %s", why);
    }
    if (reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_NO_PROTOCOLS_AVAILABLE)
        return tls_fail(s, WIRE_ETLS,
                    "TLS handshake failed: peer does not offer TLS 1.3, the only version "
                    "walmirror accepts (%s)",
                    why);
    if (kind == SSL_ERROR_SYSCALL && e == 0)
        return tls_fail(s, WIRE_ETLS, "TLS failure: unexpected end of the TLS stream");
    return tls_fail(s, WIRE_ETLS, "%s: %s",
                s->established ? "TLS record error" : "TLS handshake failed", why);
}

/*
 * Password callback for PEM_read_PrivateKey: a daemon must never prompt on a terminal, so an
 * encrypted key simply fails to load.
 */
static int
no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* fopen()s path to name the problem (missing, unreadable) before OpenSSL gets to it. */
static int
open_file(const char *what, const char *path, FILE **out, char *err, size_t errlen)
{
    FILE *f;

    if (path == NULL || path[0] == '\0') {
        fmt_into(err, errlen, "no %s file configured", what);
        return -EINVAL;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        int e = errno;
        fmt_into(err, errlen, "%s file %s: %s", what, path, strerror(e));
        return -e;
    }
    *out = f;
    return 0;
}

static int
check_readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = NULL; /* set when open_file returns 0 (gcc -O3 cannot see that errno is not 0) */
    int rc = open_file(what, path, &f, err, errlen);

    if (rc == 0)
        fclose(f);
    return rc;
}

static int
tls_load_files(struct tls_config *cfg, const char *ca_file, const char *cert_file,
            const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = cfg->ctx;
    EVP_PKEY *pkey;
    FILE *f = NULL;
    struct stat st;
    X509 *own;
    char why[256];
    int rc;

    if ((rc = check_readable("CA", ca_file, err, errlen)) < 0 ||
        (rc = check_readable("certificate", cert_file, err, errlen)) < 0)
        return rc;
    if ((rc = open_file("key", key_file, &f, err, errlen)) < 0)
        return rc;

    ERR_clear_error();
    if (SSL_CTX_load_verify_file(ctx, ca_file) != 1) {
        ssl_reason(ERR_peek_error(), why, sizeof(why));
        fmt_into(err, errlen, "CA file %s: no usable PEM certificate (%s)", ca_file, why);
        goto bad;
    }
    if (cfg->is_server) {
        /* Tells the client which CA we accept; informational only, verification is above. */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);

        if (names != NULL)
            SSL_CTX_set_client_CA_list(ctx, names);
    }
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        ssl_reason(ERR_peek_error(), why, sizeof(why));
        fmt_into(err, errlen, "certificate file %s: no usable PEM certificate (%s)", cert_file,
                 why);
        goto bad;
    }
    ERR_clear_error();
    pkey = PEM_read_PrivateKey(f, NULL, no_password, NULL);
    if (pkey == NULL) {
        ssl_reason(ERR_peek_error(), why, sizeof(why));
        fmt_into(err, errlen,
                 "key file %s: no usable PEM private key (%s; encrypted keys are not supported)",
                 key_file, why);
        goto bad;
    }
    ERR_clear_error();
    rc = SSL_CTX_use_PrivateKey(ctx, pkey);
    EVP_PKEY_free(pkey);
    if (rc != 1 || (ERR_clear_error(), SSL_CTX_check_private_key(ctx)) != 1) {
        ssl_reason(ERR_peek_error(), why, sizeof(why));
        fmt_into(err, errlen, "key file %s does not match certificate file %s (%s)", key_file,
                 cert_file, why);
        goto bad;
    }

    /* Not fatal, but an operator wants to hear about these before a peer complains. */
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0)
        log_warning("tls", "key file %s is readable by group or others (mode %03o); chmod 600 it",
                    key_file, (unsigned)(st.st_mode & 0777));
    own = SSL_CTX_get0_certificate(ctx);
    if (own != NULL && X509_cmp_current_time(X509_get0_notAfter(own)) < 0)
        log_warning("tls", "certificate file %s has expired; peers will reject it", cert_file);
    else if (own != NULL && X509_cmp_current_time(X509_get0_notBefore(own)) > 0)
        log_warning("tls", "certificate file %s is not valid yet; peers will reject it", cert_file);
    fclose(f);
    ERR_clear_error();
    return 0;

bad:
    fclose(f);
    ERR_clear_error();
    return WIRE_ETLS;
}

int
tls_config_new(struct tls_config **out, const char *ca_file, const char *cert_file,
               const char *key_file, bool is_server, char *err, size_t errlen)
{
    struct tls_config *cfg;
    SSL_CTX *ctx;
    int rc;

    *out = NULL;
    fmt_into(err, errlen, "%s", "");
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        fmt_into(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ERR_clear_error();
    ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL) {
        free(cfg);
        ERR_clear_error();
        fmt_into(err, errlen, "cannot create a TLS context (out of memory?)");
        return -ENOMEM;
    }
    cfg->ctx = ctx;
    cfg->is_server = is_server;

    /* The fixed policy of tls.h. */
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_num_tickets(ctx, 0) != 1) {
        fmt_into(err, errlen, "this OpenSSL cannot be limited to TLS 1.3");
        tls_config_free(cfg);
        ERR_clear_error();
        return WIRE_ETLS;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);

    rc = tls_load_files(cfg, ca_file, cert_file, key_file, err, errlen);
    if (rc < 0) {
        tls_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

void
tls_config_free(struct tls_config *cfg)
{
    if (cfg == NULL)
        return;
    SSL_CTX_free(cfg->ctx);
    free(cfg);
}

int
tls_session_new(struct tls_session **out, struct tls_config *cfg, const char *peer_name)
{
    struct tls_session *s;
    size_t name_len = peer_name != NULL ? strlen(peer_name) : 0;

    *out = NULL;
    if (name_len == 0 || name_len >= sizeof(s->expected))
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    memcpy(s->expected, peer_name, name_len + 1);
    s->is_server = cfg->is_server;

    ERR_clear_error();
    s->ssl = SSL_new(cfg->ctx);
    s->rbio = BIO_new(BIO_s_mem());
    s->wbio = BIO_new(BIO_s_mem());
    if (s->ssl == NULL || s->rbio == NULL || s->wbio == NULL)
        goto nomem;
    /* An empty rbio means "more to come", never end of stream. */
    BIO_set_mem_eof_return(s->rbio, -1);
    BIO_set_mem_eof_return(s->wbio, -1);
    SSL_set_bio(s->ssl, s->rbio, s->wbio); /* ssl owns both from here */
    SSL_set_app_data(s->ssl, s);

    /* The expected name (any of a comma-separated list) is checked by OpenSSL during chain
     * verification, on both sides. */
    SSL_set_hostflags(s->ssl, TLS_HOSTFLAGS);
    {
        char names[sizeof(s->expected)], *save = NULL;
        bool first = true;

        memcpy(names, s->expected, name_len + 1);
        for (char *n = strtok_r(names, ",", &save); n != NULL; n = strtok_r(NULL, ",", &save)) {
            if ((first ? SSL_set1_host(s->ssl, n) : SSL_add1_host(s->ssl, n)) != 1)
                goto nomem_ssl;
            /* SNI (the first name): lets a TLS-terminating middlebox route by name. */
            if (first && !cfg->is_server && SSL_set_tlsext_host_name(s->ssl, n) != 1)
                goto nomem_ssl;
            first = false;
        }
        if (first) { /* nothing but commas */
            SSL_free(s->ssl);
            free(s);
            return -EINVAL;
        }
    }
    if (cfg->is_server)
        SSL_set_accept_state(s->ssl);
    else
        SSL_set_connect_state(s->ssl);
    ERR_clear_error();
    *out = s;
    return 0;

nomem:
    BIO_free(s->rbio);
    BIO_free(s->wbio);
nomem_ssl:
    SSL_free(s->ssl);
    ERR_clear_error();
    free(s);
    return -ENOMEM;
}

void
tls_session_free(struct tls_session *s)
{
    if (s == NULL)
        return;
    SSL_free(s->ssl);
    free(s);
}

/*
 * The peer's first record header: content type, then major version 3 and minor version 1-4.
 * A connector may first see an alert (the acceptor refusing its ClientHello); an acceptor must
 * first see a handshake record.  Plaintext (an HTTP request, a walmirror frame header "WMIR")
 * fails on the first byte.
 */
static bool
head_is_plaintext(const struct tls_session *s)
{
    if (s->head_len >= 1 && s->head[0] != TLS_RECORD_HANDSHAKE &&
        (s->is_server || s->head[0] != TLS_RECORD_ALERT))
        return true;
    if (s->head_len >= 2 && s->head[1] != 0x03)
        return true;
    return s->head_len >= 3 && (s->head[2] < 0x01 || s->head[2] > 0x04);
}

static int
fail_plaintext(struct tls_session *s)
{
    char shown[sizeof(s->head) + 1];

    for (size_t i = 0; i < s->head_len; i++)
        shown[i] = s->head[i] >= 0x20 && s->head[i] < 0x7f ? (char)s->head[i] : '.';
    shown[s->head_len] = '\0';
    return tls_fail(s, WIRE_ETLS_PLAINTEXT,
                "peer does not speak TLS (first bytes look like plaintext: \"%s\"); is the peer "
                "a walmirror agent with TLS enabled?",
                shown);
}

int
tls_feed(struct tls_session *s, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    if (s->head_len < sizeof(s->head)) {
        size_t n = sizeof(s->head) - s->head_len;
        bool judged = s->head_len >= 3;

        if (n > len)
            n = len;
        memcpy(s->head + s->head_len, p, n);
        s->head_len += n;
        if (!judged && s->failed == 0 && head_is_plaintext(s)) {
            /* Nothing for OpenSSL here; the failure surfaces at the next handshake/read. */
            (void)fail_plaintext(s);
            return 0;
        }
    }
    if (s->failed == WIRE_ETLS_PLAINTEXT)
        return 0;
    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        int n = BIO_write(s->rbio, p, chunk);

        if (n <= 0) {
            ERR_clear_error();
            return -ENOMEM;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The peer's certificate, version and name, as established; records the peer's name. */
static int
check_peer(struct tls_session *s)
{
    X509 *peer = SSL_get0_peer_certificate(s->ssl);
    long vr = SSL_get_verify_result(s->ssl);
    char *matched = NULL;
    char name[256];

    if (peer == NULL)
        return tls_fail(s, WIRE_ETLS_VERIFY,
                    "peer certificate verification failed: the peer presented no certificate");
    if (vr != X509_V_OK)
        return tls_fail(s, WIRE_ETLS_VERIFY, "peer certificate verification failed: %s",
                    X509_verify_cert_error_string(vr));
    if (SSL_version(s->ssl) != TLS1_3_VERSION)
        return tls_fail(s, WIRE_ETLS, "TLS handshake failed: negotiated %s instead of TLS 1.3",
                    SSL_get_version(s->ssl));
    /* Belt and braces: SSL_set1_host made OpenSSL check the name; check it again here. */
    {
        char names[sizeof(s->expected)], *save = NULL, *n;
        int ok = 0;

        copy_str(names, sizeof(names), s->expected);
        for (n = strtok_r(names, ",", &save); n != NULL && ok != 1;
             n = strtok_r(NULL, ",", &save)) {
            OPENSSL_free(matched);
            matched = NULL;
            ok = X509_check_host(peer, n, 0, TLS_HOSTFLAGS, &matched);
        }
        if (ok != 1) {
            cert_label(peer, name, sizeof(name));
            OPENSSL_free(matched);
            return tls_fail(s, WIRE_ETLS_VERIFY,
                        "peer certificate name mismatch: expected %s, certificate is for %s",
                        s->expected, name);
        }
    }
    copy_str(s->peer_name, sizeof(s->peer_name), matched != NULL ? matched : s->expected);
    sanitize(s->peer_name);
    OPENSSL_free(matched);
    return 0;
}

/*
 * Checks OpenSSL's verdict once more and records the verified peer's name.  These checks only
 * fail if OpenSSL's own verification was bypassed; OpenSSL considers the handshake complete
 * then and sent no alert, so a close_notify tells the peer not to wait for us.
 */
static int
finish_handshake(struct tls_session *s)
{
    int rc = check_peer(s);

    if (rc < 0) {
        ERR_clear_error();
        (void)SSL_shutdown(s->ssl);
        ERR_clear_error();
        return rc;
    }
    s->established = true;
    log_debug("tls", "TLS 1.3 %s session with %s established (%s)",
              s->is_server ? "server" : "client", s->peer_name, SSL_get_cipher_name(s->ssl));
    return 1;
}

int
tls_handshake(struct tls_session *s)
{
    int rc;

    if (s->failed != 0)
        return s->failed;
    if (s->established)
        return 1;
    ERR_clear_error();
    rc = SSL_do_handshake(s->ssl);
    if (rc != 1)
        return ssl_failure(s, rc);
    return finish_handshake(s);
}

bool
tls_established(const struct tls_session *s)
{
    return s->established && s->failed == 0;
}

/*
 * Before the handshake completed, drives it (returning 0 while it is in progress), so that a
 * caller may simply read.  A failed session keeps returning its failure.
 */
ssize_t
tls_read(struct tls_session *s, void *buf, size_t len)
{
    size_t n = 0;
    int rc;

    if (s->failed != 0)
        return s->failed;
    if (s->peer_closed)
        return WIRE_ECLOSED;
    if (!s->established) {
        rc = tls_handshake(s);
        if (rc <= 0)
            return rc;
    }
    if (len == 0)
        return 0;
    if (len > SSIZE_MAX)
        len = SSIZE_MAX;
    ERR_clear_error();
    rc = SSL_read_ex(s->ssl, buf, len, &n);
    if (rc == 1)
        return (ssize_t)n;
    return ssl_failure(s, rc);
}

int
tls_write(struct tls_session *s, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    if (s->failed != 0)
        return s->failed;
    if (!s->established) {
        /* Not sticky: the handshake may still complete. */
        copy_str(s->err, sizeof(s->err),
                 "no application data may be sent before the TLS handshake completed");
        return -ENOTCONN;
    }
    while (len > 0) {
        size_t n = 0;
        int rc;

        ERR_clear_error();
        rc = SSL_write_ex(s->ssl, p, len, &n);
        if (rc != 1) {
            /* A memory BIO never fills up, so "want" here is unexpected: treat it as fatal. */
            rc = ssl_failure(s, rc);
            return rc < 0 ? rc : tls_fail(s, WIRE_ETLS, "TLS write stalled unexpectedly");
        }
        p += n;
        len -= n;
    }
    return 0;
}

size_t
tls_out_pending(const struct tls_session *s)
{
    return BIO_ctrl_pending(s->wbio);
}

size_t
tls_take_out(struct tls_session *s, void *buf, size_t cap)
{
    uint8_t *p = buf;
    size_t total = 0;

    while (cap > 0) {
        int chunk = cap > INT_MAX ? INT_MAX : (int)cap;
        int n = BIO_read(s->wbio, p, chunk);

        if (n <= 0)
            break;
        p += n;
        cap -= (size_t)n;
        total += (size_t)n;
    }
    return total;
}

void
tls_shutdown(struct tls_session *s)
{
    /* After a fatal error OpenSSL forbids close_notify; the alert already queued says enough. */
    if (s->failed != 0 || !s->established)
        return;
    ERR_clear_error();
    (void)SSL_shutdown(s->ssl);
    ERR_clear_error();
}

const char *
tls_session_error(const struct tls_session *s)
{
    return s->err;
}

const char *
tls_peer_name(const struct tls_session *s)
{
    return s->established && s->failed == 0 ? s->peer_name : NULL;
}

int
tls_cert_not_after(const char *cert_file, int64_t *not_after)
{
    FILE *f = fopen(cert_file, "r");
    X509 *cert;
    struct tm tm;
    int rc = -EINVAL;

    if (f == NULL)
        return -ENOENT;
    ERR_clear_error();
    cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (cert != NULL && ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1) {
        *not_after = (int64_t)timegm(&tm);
        rc = 0;
    }
    X509_free(cert);
    ERR_clear_error();
    return rc;
}
