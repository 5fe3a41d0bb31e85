#!/bin/sh
# Builds the libFuzzer target for the frame decoder with clang (-fsanitize=fuzzer,address,
# undefined) and fuzzes it for a bounded time.
#   tests/fuzz/run.sh SOURCE_DIR WORK_DIR [SECONDS]
# A crash leaves its input in WORK_DIR/artifacts/ and the script exits non-zero.
# Long run: tests/fuzz/run.sh . /tmp/fuzz 3600
set -eu
src=$1
work=$2
secs=${3:-30}
cc=${CLANG:-clang}
command -v "$cc" >/dev/null 2>&1 || { echo "clang not found: skipping"; exit 77; }
mkdir -p "$work/corpus" "$work/artifacts"
flags="-g -O1 -std=c11 -D_GNU_SOURCE -I$src/wire"
libs="$(pkg-config --libs liblz4 libxxhash)"
wire="$src/wire/frame.c $src/wire/codec.c $src/wire/lz.c $src/wire/msg.c $src/wire/err.c"
"$cc" $flags -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -o "$work/fuzz_frame" "$src/tests/fuzz/fuzz_frame.c" $wire $libs
"$cc" $flags -o "$work/gen_seeds" "$src/tests/fuzz/gen_seeds.c" $wire $libs
"$work/gen_seeds" "$work/corpus"
# Inputs of earlier crashes, kept in the repository as regressions.
cp "$src"/tests/fuzz/corpus/frame/* "$work/corpus/" 2>/dev/null || true
"$work/fuzz_frame" -max_total_time="$secs" -max_len=300000 -rss_limit_mb=2048 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 "$work/corpus"
