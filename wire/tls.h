/*
 * tls.h - TLS 1.3 with mutual authentication, over OpenSSL memory BIOs.
 *
 * The session never touches a socket: the caller feeds it the ciphertext it received
 * (tls_feed), moves plaintext in and out (tls_write, tls_read), and sends whatever ciphertext
 * the session produced (tls_take_out) - after every call, because SSL_read can produce
 * ciphertext too.  This keeps the transport (io_uring) and the crypto apart.
 *
 * Policy, fixed here and not configurable: TLS 1.3 only; both sides present a certificate; the
 * peer's chain must verify against the configured CA and its certificate must carry the
 * expected peer name (subjectAltName DNS, or CN when there is no SAN); no session tickets, no
 * renegotiation.  Until tls_handshake() returns 1 no application data can be written.
 *
 * A TLS 1.3 client finishes its handshake before the server has checked the client's
 * certificate; the session protocol above (conn.c) therefore lets the acceptor speak first,
 * so a connector sends nothing until it has heard the acceptor, who has verified it.
 *
 * Lifecycle: tls_config_new (once per process and role) -> tls_session_new per connection ->
 * tls_feed / tls_handshake / tls_read / tls_write / tls_take_out -> tls_session_free.
 * Failures return negative codes from err.h (WIRE_ETLS_*) or -ENOMEM, and leave a message
 * saying what was wrong in tls_session_error() (e.g. "peer certificate verification failed:
 * certificate has expired", "peer certificate name mismatch: expected site-b").
 */
#ifndef WALMIRROR_WIRE_TLS_H
#define WALMIRROR_WIRE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "err.h"

struct tls_config;
struct tls_session;

/*
 * Loads the CA bundle, our certificate chain and private key (PEM files) for one role.
 * is_server selects the acceptor side of the handshake.  On failure returns a negative code
 * and writes a message naming the file and the problem into err[errlen].
 */
WM_MUSTCHECK int tls_config_new(struct tls_config **out, const char *ca_file, const char *cert_file,
                                const char *key_file, bool is_server, char *err, size_t errlen);
void tls_config_free(struct tls_config *cfg);

/* When the certificate in cert_file (PEM, the first one) expires: seconds since the Unix
 * epoch in *not_after.  Returns 0, or -ENOENT / -EINVAL (unreadable or not a certificate). */
WM_MUSTCHECK int tls_cert_not_after(const char *cert_file, int64_t *not_after);

/* A session for one connection; peer_name is the name the peer's certificate must carry, or a
 * comma-separated list of names it may carry (a witness accepts either site);
 * tls_peer_name() then says which one it was. */
WM_MUSTCHECK int tls_session_new(struct tls_session **out, struct tls_config *cfg,
                                 const char *peer_name);
void tls_session_free(struct tls_session *s);

/* Hands the session ciphertext received from the peer.  Returns 0 or -ENOMEM. */
WM_MUSTCHECK int tls_feed(struct tls_session *s, const void *buf, size_t len);

/*
 * Advances the handshake with what has been fed.  Returns 1 once established (peer verified),
 * 0 when more input is needed, or a negative WIRE_ETLS_* code.  Idempotent once established.
 */
WM_MUSTCHECK int tls_handshake(struct tls_session *s);

/* True once tls_handshake() has returned 1. */
bool tls_established(const struct tls_session *s);

/*
 * Decrypts up to len bytes of application data.  Returns the number of bytes (> 0), 0 when no
 * complete record is buffered, WIRE_ECLOSED after the peer's close_notify, or a negative
 * WIRE_ETLS_* code (a corrupted record gives WIRE_ETLS).
 */
WM_MUSTCHECK ssize_t tls_read(struct tls_session *s, void *buf, size_t len);

/*
 * Encrypts all len bytes (only once established).  Returns 0, -ENOTCONN before the handshake
 * completed, or a negative code.  The ciphertext is then available through tls_take_out().
 */
WM_MUSTCHECK int tls_write(struct tls_session *s, const void *buf, size_t len);

/* Number of ciphertext bytes waiting to be sent to the peer. */
size_t tls_out_pending(const struct tls_session *s);

/* Moves up to cap bytes of pending ciphertext into buf; returns the number moved. */
size_t tls_take_out(struct tls_session *s, void *buf, size_t cap);

/* Queues a close_notify alert (then tls_take_out it). */
void tls_shutdown(struct tls_session *s);

/* The last error, worded for an operator; "" if none. */
const char *tls_session_error(const struct tls_session *s);

/* Subject name (SAN DNS or CN) of the verified peer certificate, or NULL before that. */
const char *tls_peer_name(const struct tls_session *s);

#endif
