/*
 * err.h - error codes shared by every walmirror module.
 *
 * Every function that can fail returns int (or ssize_t): >= 0 on success, a negative errno on a
 * system failure (the convention of an io_uring CQE's res), or one of the negative WIRE_E*
 * codes below on a protocol failure.  The WIRE_E* codes sit far below any errno value, so the
 * two never collide, and wire_strerror() names either kind.
 */
#ifndef WALMIRROR_WIRE_ERR_H
#define WALMIRROR_WIRE_ERR_H

#define WM_MUSTCHECK __attribute__((warn_unused_result))

enum wire_error {
    WIRE_EMAGIC = -10001,         /* frame does not start with the walmirror magic */
    WIRE_EVERSION = -10002,       /* frame version this build does not speak */
    WIRE_ETYPE = -10003,          /* frame type unknown to this version */
    WIRE_ETOOBIG = -10004,        /* declared length exceeds the maximum frame size */
    WIRE_ETRUNC = -10005,         /* frame shorter than its header declares */
    WIRE_ECHECKSUM = -10006,      /* XXH3-64 over header and payload does not match */
    WIRE_ELENGTH = -10007,        /* raw and wire lengths or flags are inconsistent */
    WIRE_EDECOMPRESS = -10008,    /* LZ4 block does not decode to its declared raw length */
    WIRE_ESEQUENCE = -10009,      /* frame sequence number out of order */
    WIRE_EMESSAGE = -10010,       /* message body malformed for its type */
    WIRE_EFLAGS = -10011,         /* flag bits this version does not define */
    WIRE_ETLS_PLAINTEXT = -10020, /* peer does not speak TLS */
    WIRE_ETLS_VERIFY = -10021,    /* peer certificate failed verification (CA, expiry, name) */
    WIRE_ETLS_REJECTED = -10022,  /* peer refused our certificate or our protocol version */
    WIRE_ETLS = -10023,           /* any other TLS failure */
    WIRE_ECLOSED = -10030,        /* peer closed the connection */
    WIRE_EPEER = -10031,          /* peer reported an error (ERROR message) */
    WIRE_EPROTO = -10032,         /* peer broke the session protocol (message out of place) */
    WIRE_ETIMEDOUT = -10033,      /* peer silent for longer than the configured timeout */
};

/* Names an error code: a WIRE_E* code, or a negative errno.  Never returns NULL. */
const char *wire_strerror(int err);

#endif
