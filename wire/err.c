/*
 * err.c - names for the error codes of err.h.
 */
#include "err.h"

#include <string.h>

const char *
wire_strerror(int err)
{
    switch (err) {
    case WIRE_EMAGIC:
        return "bad frame magic (peer is not a walmirror agent, or the stream lost framing)";
    case WIRE_EVERSION:
        return "unsupported frame version";
    case WIRE_ETYPE:
        return "unknown frame type";
    case WIRE_ETOOBIG:
        return "frame larger than the maximum frame size";
    case WIRE_ETRUNC:
        return "truncated frame";
    case WIRE_ECHECKSUM:
        return "frame checksum mismatch (XXH3-64)";
    case WIRE_ELENGTH:
        return "inconsistent frame lengths";
    case WIRE_EDECOMPRESS:
        return "LZ4 payload does not decompress to its declared length";
    case WIRE_ESEQUENCE:
        return "frame sequence number out of order";
    case WIRE_EMESSAGE:
        return "malformed message body";
    case WIRE_EFLAGS:
        return "undefined frame flags";
    case WIRE_ETLS_PLAINTEXT:
        return "peer does not speak TLS";
    case WIRE_ETLS_VERIFY:
        return "peer certificate verification failed";
    case WIRE_ETLS_REJECTED:
        return "peer rejected the TLS handshake";
    case WIRE_ETLS:
        return "TLS failure";
    case WIRE_ECLOSED:
        return "connection closed by peer";
    case WIRE_EPEER:
        return "peer reported an error";
    case WIRE_EPROTO:
        return "peer broke the session protocol";
    case WIRE_ETIMEDOUT:
        return "peer timed out";
    default:
        break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}
