#!/bin/sh
# Wire throughput benchmark on real WAL (issue: encode >= 80% of raw LZ4 speed).
#   sh bench/wire-bench.sh [BUILD_DIR] [WAL_MB]
# Makes WAL_MB (default 256) MB of PostgreSQL 15 WAL with pgbench on a scratch cluster (as the
# postgres user), certificates with conf/gen-certs.sh, and runs wm-wire-bench on them.
# Set WALMIRROR_WAL_DIR to benchmark existing segments instead.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
mb=${2:-256}
WM_TMP=$(mktemp -d /tmp/walmirror-bench-XXXXXX)
chmod 755 "$WM_TMP"
trap '[ -d "$WM_TMP/walgen" ] && pg_stop "$WM_TMP/walgen" immediate; rm -rf "$WM_TMP"' EXIT INT TERM
. "$src/bench/lib.sh"
wal=${WALMIRROR_WAL_DIR:-}
if [ -z "$wal" ]; then
    wal="$WM_TMP/wal"
    echo "wire-bench: generating $mb MB of WAL with pgbench" >&2
    make_wal "$wal" "$mb"
fi
sh "$src/conf/gen-certs.sh" "$WM_TMP/certs" site-a site-b >/dev/null
echo "wire-bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
"$build/bench/wm-wire-bench" --wal-dir "$wal" --certs "$WM_TMP/certs"
