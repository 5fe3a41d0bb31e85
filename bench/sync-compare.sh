#!/bin/sh
# Commit throughput through walmirror against PostgreSQL's native synchronous standby, on the
# same machine in the same run: two pairs on loopback (walmirror: docs/setup.md; native:
# pg_basebackup -R), pgbench -c 8 at synchronous_commit = remote_write, on and remote_apply,
# each pair in turn.  The full benchmark with WAN emulation and latency distributions is
# bench/ of a later issue; this is the quick side-by-side.
#   sh bench/sync-compare.sh [BUILD_DIR] [SECONDS]     (as root; default build/, 30 s)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
secs=${2:-30}
WM_TMP=$(mktemp -d /tmp/walmirror-compare-XXXXXX)
chmod 755 "$WM_TMP"
agents=""
. "$src/bench/lib.sh"
trap 'pairs_down; rm -rf "$WM_TMP"' EXIT INT TERM

echo "sync-compare: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), pgbench -c 8 -j 2 -T $secs, scale 10"
pair_up "$build/agent/walmirror-agent" 10
native_pair_up 10

run() { # run PORT LEVEL -> "tps latency_ms"
    as_postgres env PGOPTIONS="-c synchronous_commit=$2" pgbench -h 127.0.0.1 -p "$1" \
        -U postgres -n -c 8 -j 2 -T "$secs" postgres 2>/dev/null |
        awk '/^latency average/ {lat=$4} /^tps/ {tps=$3} END {printf "%.0f %.2f", tps, lat}'
}
printf '%-13s %18s %18s %8s\n' level "native TPS (ms)" "walmirror TPS (ms)" ratio
for level in remote_write on remote_apply; do
    n=$(run "$pgna" "$level")
    w=$(run "$pga" "$level")
    set -- $n $w
    printf '%-13s %10s (%5s) %10s (%5s) %8.2f\n' "$level" "$1" "$2" "$3" "$4" "$(echo "$3 $1" | awk '{print $1 / $2}')"
done
