/*
 * frame.h - the walmirror frame: the unit that crosses the agent-to-agent link.
 *
 *   offset size  field
 *        0    4  magic "WMIR" (0x52494D57 little-endian)
 *        4    1  version (FRAME_VERSION)
 *        5    1  type (enum frame_type)
 *        6    2  flags (FRAME_F_*)
 *        8    8  sequence number: 1, 2, 3... per direction and connection
 *       16    4  raw length: payload length before compression
 *       20    4  wire length: payload length as sent
 *       24    8  start LSN (WAL frames; 0 otherwise)
 *       32    8  epoch (fencing token of the sender)
 *       40    n  payload (wire length bytes)
 *     40+n    8  XXH3-64 over bytes [0, 40+n)
 *
 * All integers little-endian.  This module encodes and validates frames; it knows nothing of
 * compression or of message bodies (codec.c and msg.c).  Every length is bounded before it is
 * used: a frame is never larger than FRAME_MAX_SIZE, and each kind of bad frame has its own
 * error code (err.h) so that the log says what was wrong.
 */
#ifndef WALMIRROR_WIRE_FRAME_H
#define WALMIRROR_WIRE_FRAME_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

#define FRAME_MAGIC 0x52494D57u /* "WMIR" */
#define FRAME_VERSION 1
#define FRAME_HDR_SIZE 40
#define FRAME_TRAILER_SIZE 8
#define FRAME_OVERHEAD (FRAME_HDR_SIZE + FRAME_TRAILER_SIZE)

/* Largest payload before compression: 1 MiB, eight walsender chunks. */
#define FRAME_MAX_RAW (1u << 20)
/* Largest payload on the wire: LZ4_COMPRESSBOUND(FRAME_MAX_RAW). */
#define FRAME_MAX_WIRE (FRAME_MAX_RAW + FRAME_MAX_RAW / 255 + 16)
#define FRAME_MAX_SIZE (FRAME_MAX_WIRE + FRAME_OVERHEAD)

/* Payload is an LZ4 block of the connection's compression stream (WAL frames only). */
#define FRAME_F_LZ4 0x0001u
#define FRAME_F_KNOWN FRAME_F_LZ4

/*
 * Frame types.  0x01-0x0f: session and data; 0x10-0x1f: reserved for switchover and fencing
 * control; 0x20-0x2f: reserved for status.  A receiver rejects any type it does not know.
 */
enum frame_type {
    FRAME_HELLO = 0x01,
    FRAME_WAL = 0x02,
    FRAME_ACK = 0x03,
    FRAME_HEARTBEAT = 0x04,
    FRAME_ERROR = 0x05,
    FRAME_BYE = 0x06,
    FRAME_READY = 0x07,
    FRAME_TIMELINE = 0x08,
    FRAME_CONTROL = 0x10,
};

struct frame_hdr {
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint64_t seq;
    uint32_t raw_len;
    uint32_t wire_len;
    uint64_t lsn;
    uint64_t epoch;
};

/* Name of a frame type for logs ("WAL", "ACK", ...; "unknown" otherwise). */
const char *frame_type_name(uint8_t type);

/*
 * Validates and decodes the header at the start of buf.  Returns 0, WIRE_ETRUNC if len is
 * shorter than a header, or WIRE_EMAGIC / WIRE_EVERSION / WIRE_ETYPE / WIRE_EFLAGS /
 * WIRE_ETOOBIG / WIRE_ELENGTH.  The checksum is not checked here (it needs the payload).
 */
WM_MUSTCHECK int frame_parse_header(const void *buf, size_t len, struct frame_hdr *h);

/*
 * Decodes the frame at the start of a stream buffer.  Returns the frame's total length
 * (> 0) when a whole, valid frame is there (*payload points at its wire payload inside buf),
 * 0 when more bytes are needed, or a negative error as frame_parse_header, plus
 * WIRE_ECHECKSUM.  A bad header is reported as soon as the header is complete, before any
 * payload is awaited.
 */
WM_MUSTCHECK ssize_t frame_decode(const void *buf, size_t len, struct frame_hdr *h,
                                  const uint8_t **payload);

/* As frame_decode, for a buffer that must hold exactly one frame: short is WIRE_ETRUNC,
 * trailing bytes are WIRE_ELENGTH. */
WM_MUSTCHECK int frame_decode_exact(const void *buf, size_t len, struct frame_hdr *h,
                                    const uint8_t **payload);

/*
 * Writes the header h into out[0..FRAME_HDR_SIZE) and the checksum after the payload that
 * the caller has already placed at out + FRAME_HDR_SIZE (h->wire_len bytes).  Returns the
 * frame's total length.  h must satisfy the limits above (asserted).
 */
size_t frame_seal(uint8_t *out, const struct frame_hdr *h);

/* Encodes a whole frame with an uncompressed payload; out must hold FRAME_OVERHEAD + len.
 * Returns the total length or WIRE_ETOOBIG. */
WM_MUSTCHECK ssize_t frame_encode(uint8_t *out, size_t cap, uint8_t type, uint64_t seq,
                                  uint64_t lsn, uint64_t epoch, const void *payload, size_t len);

#endif
