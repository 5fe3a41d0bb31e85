/*
 * gen_seeds.c - writes valid frames (and a short stream of them) as the fuzzer's seed corpus.
 * Run by tests/fuzz/run.sh before fuzzing; the seeds are regenerated, not committed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "msg.h"

static void
put(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

int
main(int argc, char **argv)
{
    struct codec_enc *enc;
    static uint8_t frame[1 << 16], stream[1 << 18], wal[8192];
    struct msg_hello hello = {.role = MSG_ROLE_SOURCE, .system_id = 1, .timeline = 1};
    struct msg_ack ack = {.write_lsn = 3, .flush_lsn = 2, .apply_lsn = 1};
    uint8_t body[MSG_MAX_BODY];
    size_t slen = 0;
    ssize_t n, b;

    if (argc != 2 || codec_enc_new(&enc, true, 1) < 0)
        return 2;
    for (size_t i = 0; i < sizeof(wal); i++)
        wal[i] = (uint8_t)(i % 64 < 40 ? 0 : i * 7);
    strcpy(hello.node_name, "site-a");
    b = msg_encode_hello(&hello, body, sizeof(body));
    n = codec_enc_frame(enc, FRAME_HELLO, 0, 1, body, (size_t)b, frame, sizeof(frame));
    put(argv[1], "hello", frame, (size_t)n);
    memcpy(stream + slen, frame, (size_t)n);
    slen += (size_t)n;
    for (int i = 0; i < 3; i++) {
        n = codec_enc_frame(enc, FRAME_WAL, 0x1000000 + (uint64_t)i * 8192, 1, wal, sizeof(wal),
                            frame, sizeof(frame));
        memcpy(stream + slen, frame, (size_t)n);
        slen += (size_t)n;
    }
    put(argv[1], "wal-lz4", frame, (size_t)n);
    b = msg_encode_ack(&ack, body, sizeof(body));
    n = codec_enc_frame(enc, FRAME_ACK, 0, 1, body, (size_t)b, frame, sizeof(frame));
    put(argv[1], "ack", frame, (size_t)n);
    memcpy(stream + slen, frame, (size_t)n);
    slen += (size_t)n;
    put(argv[1], "stream", stream, slen);
    codec_enc_free(enc);
    return 0;
}
