/*
 * frame.c - encoding and validation of walmirror frames; layout in frame.h.
 *
 * Decoding reads the header only through a bounds-checked cursor, and checks every field
 * before the payload length is trusted: magic, version, type, flags, then the lengths against
 * FRAME_MAX_RAW / FRAME_MAX_WIRE and against each other.  Only then is the payload awaited and
 * the XXH3-64 checksum compared.
 */
#include "frame.h"

#include <string.h>
#include <xxhash.h>

#include "cursor.h"

static_assert(FRAME_HDR_SIZE == 4 + 1 + 1 + 2 + 8 + 4 + 4 + 8 + 8, "frame header layout");
static_assert(FRAME_MAX_SIZE < INT32_MAX, "frame sizes fit an int");

const char *
frame_type_name(uint8_t type)
{
    switch (type) {
    case FRAME_HELLO:
        return "HELLO";
    case FRAME_WAL:
        return "WAL";
    case FRAME_ACK:
        return "ACK";
    case FRAME_HEARTBEAT:
        return "HEARTBEAT";
    case FRAME_ERROR:
        return "ERROR";
    case FRAME_BYE:
        return "BYE";
    case FRAME_READY:
        return "READY";
    case FRAME_TIMELINE:
        return "TIMELINE";
    case FRAME_CONTROL:
        return "CONTROL";
    default:
        return "unknown";
    }
}

static int
type_known(uint8_t type)
{
    return (type >= FRAME_HELLO && type <= FRAME_TIMELINE) || type == FRAME_CONTROL;
}

int
frame_parse_header(const void *buf, size_t len, struct frame_hdr *h)
{
    struct cursor c = cur_init(buf, len);
    uint32_t magic;

    if (!cur_get_u32le(&c, &magic) || !cur_get_u8(&c, &h->version) || !cur_get_u8(&c, &h->type) ||
        !cur_get_u16le(&c, &h->flags) || !cur_get_u64le(&c, &h->seq) ||
        !cur_get_u32le(&c, &h->raw_len) || !cur_get_u32le(&c, &h->wire_len) ||
        !cur_get_u64le(&c, &h->lsn) || !cur_get_u64le(&c, &h->epoch))
        return WIRE_ETRUNC;
    if (magic != FRAME_MAGIC)
        return WIRE_EMAGIC;
    if (h->version != FRAME_VERSION)
        return WIRE_EVERSION;
    if (!type_known(h->type))
        return WIRE_ETYPE;
    if (h->flags & ~FRAME_F_KNOWN)
        return WIRE_EFLAGS;
    if ((h->flags & FRAME_F_LZ4) && h->type != FRAME_WAL)
        return WIRE_EFLAGS;
    if (h->raw_len > FRAME_MAX_RAW || h->wire_len > FRAME_MAX_WIRE)
        return WIRE_ETOOBIG;
    if (h->flags & FRAME_F_LZ4) {
        /* An LZ4 block of n raw bytes is 1..LZ4_COMPRESSBOUND(n) bytes long. */
        if (h->raw_len == 0 || h->wire_len == 0 || h->wire_len > h->raw_len + h->raw_len / 255 + 16)
            return WIRE_ELENGTH;
    } else if (h->wire_len != h->raw_len) {
        return WIRE_ELENGTH;
    }
    return 0;
}

ssize_t
frame_decode(const void *buf, size_t len, struct frame_hdr *h, const uint8_t **payload)
{
    const uint8_t *p = buf;
    struct cursor c;
    uint64_t sum;
    size_t total;
    int rc;

    if (len < FRAME_HDR_SIZE) {
        /* Reject a wrong magic early: a plaintext or foreign peer is named at once. */
        if (len >= 4) {
            struct cursor m = cur_init(buf, len);
            uint32_t magic;
            if (cur_get_u32le(&m, &magic) && magic != FRAME_MAGIC)
                return WIRE_EMAGIC;
        }
        return 0;
    }
    rc = frame_parse_header(buf, len, h);
    if (rc < 0)
        return rc;
    total = FRAME_OVERHEAD + (size_t)h->wire_len;
    if (len < total)
        return 0;
    c = cur_init(p + FRAME_HDR_SIZE + h->wire_len, FRAME_TRAILER_SIZE);
    if (!cur_get_u64le(&c, &sum))
        return WIRE_ETRUNC;
    if (sum != XXH3_64bits(p, FRAME_HDR_SIZE + (size_t)h->wire_len))
        return WIRE_ECHECKSUM;
    *payload = p + FRAME_HDR_SIZE;
    return (ssize_t)total;
}

int
frame_decode_exact(const void *buf, size_t len, struct frame_hdr *h, const uint8_t **payload)
{
    ssize_t n = frame_decode(buf, len, h, payload);

    if (n < 0)
        return (int)n;
    if (n == 0)
        return WIRE_ETRUNC;
    if ((size_t)n != len)
        return WIRE_ELENGTH;
    return 0;
}

size_t
frame_seal(uint8_t *out, const struct frame_hdr *h)
{
    struct wbuf w = wbuf_init(out, FRAME_HDR_SIZE);
    size_t body = FRAME_HDR_SIZE + (size_t)h->wire_len;
    struct wbuf t;
    int ok;

    assert(h->raw_len <= FRAME_MAX_RAW && h->wire_len <= FRAME_MAX_WIRE);
    ok = wbuf_put_u32le(&w, FRAME_MAGIC) && wbuf_put_u8(&w, h->version) &&
         wbuf_put_u8(&w, h->type) && wbuf_put_u16le(&w, h->flags) && wbuf_put_u64le(&w, h->seq) &&
         wbuf_put_u32le(&w, h->raw_len) && wbuf_put_u32le(&w, h->wire_len) &&
         wbuf_put_u64le(&w, h->lsn) && wbuf_put_u64le(&w, h->epoch);
    assert(ok && w.len == FRAME_HDR_SIZE);
    t = wbuf_init(out + body, FRAME_TRAILER_SIZE);
    ok = wbuf_put_u64le(&t, XXH3_64bits(out, body));
    assert(ok);
    (void)ok;
    return body + FRAME_TRAILER_SIZE;
}

ssize_t
frame_encode(uint8_t *out, size_t cap, uint8_t type, uint64_t seq, uint64_t lsn, uint64_t epoch,
             const void *payload, size_t len)
{
    struct frame_hdr h = {
        .version = FRAME_VERSION,
        .type = type,
        .flags = 0,
        .seq = seq,
        .raw_len = (uint32_t)len,
        .wire_len = (uint32_t)len,
        .lsn = lsn,
        .epoch = epoch,
    };

    if (len > FRAME_MAX_RAW || cap < FRAME_OVERHEAD + len)
        return WIRE_ETOOBIG;
    if (len > 0)
        memmove(out + FRAME_HDR_SIZE, payload, len);
    return (ssize_t)frame_seal(out, &h);
}
