/*
 * fuzz_frame.c - libFuzzer target for the frame decoder and the per-direction codec.
 *
 * The input is used twice: as one frame (frame_decode_exact) and as a byte stream fed to a
 * codec decoder in pieces whose sizes come from the input itself, so partial frames, LZ4
 * history across frames and the sticky-error path are all exercised.  Any crash, sanitizer
 * report, or a frame accepted with lengths beyond the limits is a bug.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "frame.h"
#include "msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct codec_dec *dec;
    struct frame_hdr h;
    const uint8_t *payload;
    struct codec_frame f;
    size_t off = 0;
    int rc;

    if (frame_decode_exact(data, size, &h, &payload) == 0) {
        if (h.raw_len > FRAME_MAX_RAW || h.wire_len > FRAME_MAX_WIRE ||
            FRAME_OVERHEAD + (size_t)h.wire_len != size)
            abort();
        /* The message decoders must hold on any body. */
        struct msg_hello hello;
        struct msg_ack ack;
        struct msg_heartbeat hb;
        struct msg_error err;
        (void)msg_decode_hello(payload, h.wire_len, &hello);
        (void)msg_decode_ack(payload, h.wire_len, &ack);
        (void)msg_decode_heartbeat(payload, h.wire_len, &hb);
        (void)msg_decode_error(payload, h.wire_len, &err);
    }
    if (dec == NULL && codec_dec_new(&dec) < 0)
        abort();
    codec_dec_reset(dec);
    while (off < size) {
        size_t piece = 1 + data[off] % 97;
        if (piece > size - off)
            piece = size - off;
        if (codec_dec_feed(dec, data + off, piece) < 0)
            break;
        off += piece;
        while ((rc = codec_dec_next(dec, &f)) == 1)
            if (f.hdr.raw_len > FRAME_MAX_RAW)
                abort();
        if (rc < 0)
            break;
    }
    return 0;
}
