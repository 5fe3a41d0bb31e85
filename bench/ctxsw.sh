#!/bin/sh
# ctxsw.sh - what one commit costs the sink's agent: context switches (every thread of the
# process, io_uring workers included) and CPU time, per pgbench transaction, for each spool
# write mode given (WALMIRROR_SPOOL_WRITES: inline, the default, or uring).
#
#   sh bench/ctxsw.sh BUILD_DIR [--seconds N] [--clients N] MODE...
#   e.g. sh bench/ctxsw.sh build uring inline uring inline
#
# Per mode: a pair from bench/lib.sh pair_up (scale 10), pgbench -c CLIENTS -j 2 -T SECONDS at
# synchronous_commit = on against site A, and the sink's /proc/PID/task/*/status context switch
# counters and /proc/PID/stat utime+stime before and after.  Context switches per commit hardly
# depend on what else the machine runs; TPS does.  Run it as root.  Everything it starts is
# stopped on exit.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 2 ] || { echo "usage: sh bench/ctxsw.sh BUILD_DIR [--seconds N] [--clients N] MODE..." >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
secs=15 clients=8
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) secs=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    *) break ;;
    esac
done
WM_TMP=""
agents=""
cleanup() { [ -n "$WM_TMP" ] && { pairs_down >/dev/null 2>&1 || true; rm -rf "$WM_TMP"; }; }
trap cleanup EXIT INT TERM
. "$src/bench/lib.sh"
for mode in "$@"; do
    case $mode in inline | uring) ;; *) echo "ctxsw.sh: mode $mode: inline or uring" >&2; exit 2 ;; esac
    WM_TMP=$(mktemp -d /tmp/walmirror-ctxsw-XXXXXX)
    chmod 755 "$WM_TMP"
    printf '#!/bin/sh\nexec env WALMIRROR_SPOOL_WRITES=%s %s/agent/walmirror-agent "$@"\n' \
        "$mode" "$build" >"$WM_TMP/agent.sh"
    chmod 755 "$WM_TMP/agent.sh"
    pair_up "$WM_TMP/agent.sh" 10 >/dev/null 2>&1 || { echo "ctxsw.sh: the pair did not come up" >&2; exit 1; }
    pid=$(pgrep -f "walmirror-agent -c $WM_TMP/site-b.conf" | head -1)
    ctx() { cat /proc/"$pid"/task/*/status | awk '/ctxt_switches/ { s += $2 } END { print s }'; }
    cpu() { awk '{ print $14 + $15 }' /proc/"$pid"/stat; }
    c0=$(ctx) u0=$(cpu)
    out=$(as_postgres env PGOPTIONS='-c synchronous_commit=on' pgbench -h 127.0.0.1 -p "$pga" \
        -U postgres -n -c "$clients" -j 2 -T "$secs" postgres 2>&1)
    c1=$(ctx) u1=$(cpu)
    tx=$(echo "$out" | awk '/number of transactions actually processed/ { print $NF }' | cut -d/ -f1)
    tps=$(echo "$out" | awk '/^tps/ { printf "%.0f", $3; exit }')
    hz=$(getconf CLK_TCK)
    awk -v m="$mode" -v tx="$tx" -v tps="$tps" -v c="$((c1 - c0))" -v u="$((u1 - u0))" -v hz="$hz" \
        'BEGIN { printf "%-6s  %6d commits  %5d tps  %.2f context switches and %.1f us of CPU per commit (sink)\n", m, tx, tps, c / tx, u * 1e6 / hz / tx }'
    pairs_down >/dev/null 2>&1
    rm -rf "$WM_TMP"
    WM_TMP=""
done
