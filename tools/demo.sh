#!/bin/sh
# walmirror demo (the README's main job): installs the dependencies, builds, makes real
# PostgreSQL 15 WAL with pgbench, and streams it from one process to another over the
# walmirror wire (io_uring, TLS 1.3 with mutual authentication, LZ4 streaming frames, XXH3
# checksums), printing throughput and compression ratio.
#   sh tools/demo.sh            (as root on a fresh Debian 12 machine)
#   WALMIRROR_DEMO_WAL_MB=512   more WAL
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${WALMIRROR_BUILD_DIR:-$src/build}
mb=${WALMIRROR_DEMO_WAL_MB:-256}

if [ "${WALMIRROR_SKIP_DEPS:-0}" != 1 ]; then sh "$src/tools/install-deps.sh"; fi
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
echo "demo: built walmirror in $build"

WM_TMP=$(mktemp -d /tmp/walmirror-demo-XXXXXX)
chmod 755 "$WM_TMP"
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    [ -d "$WM_TMP/walgen" ] && pg_stop "$WM_TMP/walgen" immediate
    rm -rf "$WM_TMP"
}
trap cleanup EXIT INT TERM
. "$src/bench/lib.sh"

echo "demo: generating ${mb} MB of PostgreSQL 15 WAL with pgbench (as the postgres user)"
make_wal "$WM_TMP/wal" "$mb"
echo "demo: $(ls "$WM_TMP/wal" | wc -l) segments, $(du -sm "$WM_TMP/wal" | cut -f1) MB"

sh "$src/conf/gen-certs.sh" "$WM_TMP/certs" site-a site-b >/dev/null
mkdir -p "$WM_TMP/site-b"
port=$(free_port)
"$build/bench/wm-walpipe" recv --listen "127.0.0.1:$port" --out "$WM_TMP/site-b" \
    --name site-b --peer site-a --ca "$WM_TMP/certs/ca.crt" \
    --cert "$WM_TMP/certs/site-b.crt" --key "$WM_TMP/certs/site-b.key" >"$WM_TMP/recv.log" 2>&1 &
rpid=$!
pids="$rpid"
for _ in $(seq 100); do
    grep -q "$(printf ':%04X 00000000:0000 0A' "$port")" /proc/net/tcp && break
    sleep 0.05
done
echo "demo: site-a -> site-b over TLS 1.3 on 127.0.0.1:$port"
"$build/bench/wm-walpipe" send --connect "127.0.0.1:$port" --in "$WM_TMP/wal" \
    --name site-a --peer site-b --ca "$WM_TMP/certs/ca.crt" \
    --cert "$WM_TMP/certs/site-a.crt" --key "$WM_TMP/certs/site-a.key" 2>"$WM_TMP/send.log"
wait "$rpid"
pids=""
grep -h "walpipe: received" "$WM_TMP/recv.log"
if diff -rq "$WM_TMP/wal" "$WM_TMP/site-b" >/dev/null; then
    echo "demo: every segment arrived byte-identical"
else
    echo "demo: segments differ!" >&2
    exit 1
fi
echo "demo: wire benchmark on the same WAL:"
"$build/bench/wm-wire-bench" --wal-dir "$WM_TMP/wal" --certs "$WM_TMP/certs"
