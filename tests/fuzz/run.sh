#!/bin/sh
# Builds one libFuzzer target with clang (-fsanitize=fuzzer,address,undefined) and fuzzes it
# for a bounded time.
#   tests/fuzz/run.sh SOURCE_DIR WORK_DIR [SECONDS [TARGET]]
# TARGET (default frame):
#   frame    the frame decoder and the per-direction codec (wire/frame.c, codec.c, msg.c)
#   pgproto  the WAL server's parsing of a client's byte stream: start-up packets, messages,
#            replication commands, standby messages (agent/pgproto.c)
#   config   the configuration parser, config_parse_buffer (agent/config.c)
#   rrule    the maintenance windows' RRULE parser and occurrence engine, and its reader of
#            zone files (agent/rrule.c)
# Seeds: generated ones (gen_seeds.c, gen_pgproto_seeds.c), conf/*.conf for config, and the
# files in tests/fuzz/corpus/TARGET/ (hand-written seeds and inputs of earlier crashes, kept as
# regressions).  The corpus grows in WORK_DIR/corpus and is reused by the next run there.
# A crash leaves its input in WORK_DIR/artifacts/ and the script exits non-zero; replay it
# with WORK_DIR/fuzz_TARGET FILE.  Without clang it exits 77 (skipped).
# Long run (an hour per target, niced; -jobs/-workers may be added by hand):
#   nice -n 10 sh tests/fuzz/run.sh . /tmp/fuzz-frame 3600 frame
#   nice -n 10 sh tests/fuzz/run.sh . /tmp/fuzz-pgproto 3600 pgproto
#   nice -n 10 sh tests/fuzz/run.sh . /tmp/fuzz-config 3600 config
#   nice -n 10 sh tests/fuzz/run.sh . /tmp/fuzz-rrule 3600 rrule
set -eu
src=$1
work=$2
secs=${3:-30}
target=${4:-frame}
cc=${CLANG:-clang}
command -v "$cc" >/dev/null 2>&1 || { echo "clang not found: skipping"; exit 77; }
mkdir -p "$work/corpus" "$work/artifacts"
flags="-g -O1 -std=c11 -D_GNU_SOURCE -I$src/wire -I$src/agent"
fuzz="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
case $target in
frame)
    libs="$(pkg-config --libs liblz4 libxxhash)"
    wire="$src/wire/frame.c $src/wire/codec.c $src/wire/lz.c $src/wire/msg.c $src/wire/err.c"
    "$cc" $flags $fuzz -o "$work/fuzz_frame" "$src/tests/fuzz/fuzz_frame.c" $wire $libs
    "$cc" $flags -o "$work/gen_seeds" "$src/tests/fuzz/gen_seeds.c" $wire $libs
    "$work/gen_seeds" "$work/corpus"
    maxlen=300000
    ;;
pgproto)
    "$cc" $flags $fuzz -o "$work/fuzz_pgproto" "$src/tests/fuzz/fuzz_pgproto.c" \
        "$src/agent/pgproto.c" "$src/wire/err.c"
    "$cc" $flags -o "$work/gen_pgproto_seeds" "$src/tests/fuzz/gen_pgproto_seeds.c"
    "$work/gen_pgproto_seeds" "$work/corpus"
    maxlen=16384
    ;;
config)
    # The parser checks etcd_endpoints and names the default etcd_prefix (etcdrec.c, which
    # reads and writes the pair's etcd records: state.c, pgproto.c's LSNs, msg.c's role names).
    "$cc" $flags $fuzz -o "$work/fuzz_config" "$src/tests/fuzz/fuzz_config.c" \
        "$src/agent/config.c" "$src/agent/etcdrec.c" "$src/agent/state.c" \
        "$src/agent/pgproto.c" "$src/wire/msg.c" "$src/wire/log.c" "$src/wire/err.c" \
        $(pkg-config --libs jansson libxxhash)
    for f in "$src"/conf/*.conf; do
        cp "$f" "$work/corpus/conf-$(basename "$f")"
    done
    maxlen=16384
    ;;
rrule)
    "$cc" $flags $fuzz -o "$work/fuzz_rrule" "$src/tests/fuzz/fuzz_rrule.c" "$src/agent/rrule.c"
    maxlen=4096 # zone files (inputs starting with TZif) too
    ;;
*)
    echo "unknown target $target (frame, pgproto, config, rrule)" >&2
    exit 2
    ;;
esac
cp "$src/tests/fuzz/corpus/$target"/* "$work/corpus/" 2>/dev/null || true
dict=
[ -f "$src/tests/fuzz/$target.dict" ] && dict="-dict=$src/tests/fuzz/$target.dict"
"$work/fuzz_$target" -max_total_time="$secs" -max_len=$maxlen -rss_limit_mb=2048 $dict \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 "$work/corpus"
