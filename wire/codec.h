/*
 * codec.h - one direction of a walmirror connection, as frames: sequence numbers, LZ4
 * streaming for WAL payloads, checksums.
 *
 * The encoder turns (type, LSN, epoch, payload) into a sealed frame.  WAL payloads go through
 * the direction's LZ4 stream (when compression is on) and are sent raw when that does not
 * pay; every other type is sent raw and stays out of the LZ4 history.
 *
 * The decoder is fed the byte stream (copy in with codec_dec_feed, or write straight into
 * codec_dec_space / codec_dec_commit) and yields whole, verified, decompressed frames.  The
 * first error is final: the decoder refuses everything until codec_dec_reset(), because the
 * stream's framing and compression history can no longer be trusted - the connection must be
 * dropped and made anew.
 *
 * Both codecs of a connection are reset when it is (re)established.
 */
#ifndef WALMIRROR_WIRE_CODEC_H
#define WALMIRROR_WIRE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "frame.h"

struct codec_enc;
struct codec_dec;

struct codec_stats {
    uint64_t frames;
    uint64_t raw_bytes;  /* payload bytes before compression */
    uint64_t wire_bytes; /* frame bytes on the wire, headers and checksums included */
    uint64_t wal_raw_bytes;
    uint64_t wal_wire_bytes; /* WAL payload bytes after compression */
    uint64_t wal_hc_frames;  /* WAL frames compressed at an LZ4HC level (encoder only) */
};

/* compress: use LZ4 for WAL payloads; acceleration as LZ4's (1 = default). */
WM_MUSTCHECK int codec_enc_new(struct codec_enc **out, bool compress, int acceleration);
void codec_enc_free(struct codec_enc *e);
void codec_enc_reset(struct codec_enc *e);

/* The LZ4 level of the next WAL frames (lz_enc_set_level, lz.h): LZ_LEVEL_FAST or an LZ4HC
 * level; the block format is the same, the decoder does not know.  No effect when compression
 * is off.  0 or -ENOMEM. */
WM_MUSTCHECK int codec_enc_set_level(struct codec_enc *e, int level);

/* Room a frame of payload_len bytes may need. */
size_t codec_frame_bound(size_t payload_len);

/*
 * Encodes one frame into out[cap] (cap >= codec_frame_bound(len)).  len <= FRAME_MAX_RAW.
 * Returns the frame's length, or -EINVAL / WIRE_ETOOBIG.
 */
WM_MUSTCHECK ssize_t codec_enc_frame(struct codec_enc *e, uint8_t type, uint64_t lsn,
                                     uint64_t epoch, const void *payload, size_t len, uint8_t *out,
                                     size_t cap);
const struct codec_stats *codec_enc_stats(const struct codec_enc *e);

/* A decoded frame; payload points into the decoder and is valid until the next call. */
struct codec_frame {
    struct frame_hdr hdr;
    const uint8_t *payload; /* raw (decompressed) payload, hdr.raw_len bytes */
};

WM_MUSTCHECK int codec_dec_new(struct codec_dec **out);
void codec_dec_free(struct codec_dec *d);
void codec_dec_reset(struct codec_dec *d);

/* Copies all len received bytes in, or none: returns 0, or -ENOBUFS when they do not fit
 * beside what is buffered (the caller drains frames first, or feeds smaller pieces). */
WM_MUSTCHECK int codec_dec_feed(struct codec_dec *d, const void *buf, size_t len);

/* Zero-copy feeding: a pointer to at least *avail free bytes, then commit what was written. */
uint8_t *codec_dec_space(struct codec_dec *d, size_t *avail);
void codec_dec_commit(struct codec_dec *d, size_t len);

/*
 * Yields the next frame: 1 with *f filled, 0 if more bytes are needed, or a negative
 * WIRE_E* code (bad frame, WIRE_ESEQUENCE, WIRE_EDECOMPRESS) after which the decoder is dead.
 */
WM_MUSTCHECK int codec_dec_next(struct codec_dec *d, struct codec_frame *f);

/* Bytes buffered but not yet consumed as frames (a partial frame at close means truncation). */
size_t codec_dec_buffered(const struct codec_dec *d);
const struct codec_stats *codec_dec_stats(const struct codec_dec *d);

#endif
