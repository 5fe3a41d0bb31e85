#!/bin/sh
# wm-linkem benchmark: the latency it adds, how exactly it delays and caps, its top throughput.
#   sh bench/linkem-bench.sh [BUILD_DIR] [ROUNDS]
# Runs wm-linkem-bench against its own server, directly and through wm-linkem instances, on
# 127.0.0.1; ROUNDS (default 3) repeats of the no-delay latency and throughput comparison.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
rounds=${2:-3}
b="$build/bench"
WM_TMP=$(mktemp -d /tmp/walmirror-linkem-bench-XXXXXX)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WM_TMP"
}
trap cleanup EXIT INT TERM
. "$src/bench/lib.sh"

sp=$(free_port)
"$b/wm-linkem-bench" server --listen "127.0.0.1:$sp" 2>/dev/null &
pids="$pids $!"
for _ in $(seq 100); do
    "$b/wm-linkem-bench" ping --connect "127.0.0.1:$sp" --count 1 --warmup 0 >/dev/null 2>&1 && break
    sleep 0.05
done

# start_linkem ARGS...: a wm-linkem in front of the server; sets lp to its port.
start_linkem() {
    lp=$(free_port)
    "$b/wm-linkem" --listen "127.0.0.1:$lp" --connect "127.0.0.1:$sp" \
        --control "$WM_TMP/ctl.$lp" --log-level warning "$@" &
    pids="$pids $!"
    for _ in $(seq 100); do
        "$b/wm-linkem" --control "$WM_TMP/ctl.$lp" --send stats >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "linkem-bench: wm-linkem $* did not start" >&2
    return 1
}

run() { # run LABEL PORT wm-linkem-bench-ARGS...
    label=$1 port=$2
    shift 2
    printf '%-26s ' "$label"
    "$b/wm-linkem-bench" "$@" --connect "127.0.0.1:$port"
}

echo "linkem-bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

start_linkem
plain=$lp
for r in $(seq "$rounds"); do
    run "direct (round $r)" "$sp" ping --count 20000
    run "linkem (round $r)" "$plain" ping --count 20000
done
for r in $(seq "$rounds"); do
    run "direct (round $r)" "$sp" send --bytes 4000000000
    run "linkem (round $r)" "$plain" send --bytes 4000000000
    run "linkem (round $r)" "$plain" recv --seconds 3
done

start_linkem --delay 10ms
run "delay 10ms" "$lp" ping --count 500 --warmup 10
start_linkem --delay 30ms
run "delay 30ms" "$lp" ping --count 200 --warmup 5
start_linkem --delay 10ms --jitter 2ms
run "delay 10ms jitter 2ms" "$lp" ping --count 500 --warmup 10

start_linkem --rate 50mbit
run "rate 50mbit" "$lp" send --bytes 12500000
run "rate 50mbit" "$lp" recv --seconds 2
start_linkem --rate 10mbit
run "rate 10mbit" "$lp" send --bytes 2500000
run "rate 10mbit" "$lp" recv --seconds 2

# The two WAN profiles of the benchmarks.
start_linkem --delay 10ms --rate 50mbit
run "10ms+50mbit (20ms RTT)" "$lp" ping --count 200 --warmup 5
run "10ms+50mbit (20ms RTT)" "$lp" send --bytes 12500000
start_linkem --delay 30ms --rate 10mbit
run "30ms+10mbit (60ms RTT)" "$lp" ping --count 100 --warmup 5
run "30ms+10mbit (60ms RTT)" "$lp" send --bytes 2500000

# A saturated link: one connection sends as fast as it can while another pings; the round
# trips grow by the link's buffer (--buffer, 100 ms by default), not by megabytes of queue.
start_linkem --delay 10ms --rate 10mbit
"$b/wm-linkem-bench" send --connect "127.0.0.1:$lp" --bytes 5000000 >"$WM_TMP/bulk" &
bulk=$!
sleep 1
run "10ms+10mbit, saturated" "$lp" ping --count 20 --warmup 0
wait "$bulk"
printf '%-26s ' "10ms+10mbit, saturated"
cat "$WM_TMP/bulk"
