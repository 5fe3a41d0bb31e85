#!/bin/sh
# percommit.sh - what one commit costs on the commit path, walmirror against PostgreSQL's
# native synchronous standby, side by side in one run on this machine (issue 15, item 1).
#
#   sh bench/percommit.sh BUILD_DIR [--seconds N] [--scale N] [--clients "1 8"]
#                         [--levels "on remote_apply"] [--agent-env VAR=VALUE] [--out DIR]
#
# It stands up both pairs on loopback, as the postgres user under a temporary directory, with
# no link emulator between the sites: walmirror (bench/lib.sh pair_up: site A's primary, its
# agent, site B's agent and standby) and native (pg_basebackup -R, application_name "native",
# named in synchronous_standby_names).  For each client count and synchronous_commit level it
# runs the same pgbench (TPC-B-like, scale --scale, -c CLIENTS -j min(CLIENTS, 2) -T SECONDS)
# on each pair in turn, and measures, per commit (a pgbench transaction is one commit):
#   context switches, voluntary and involuntary, of every thread of every process on the
#     commit path, sampled every 0.2 s from /proc/PID/task/*/status (a thread's count dies
#     with it; the sampling catches io_uring's short-lived workers);
#   CPU microseconds (utime + stime, /proc/PID/stat: every thread, ended ones included);
#   for the processes on the path - walmirror: site A's walsender, agent A, agent B, site B's
#     walreceiver; native: the walsender and the walreceiver;
# and commit latency p50/p99 (pgbench -l: the transaction as the client sees it, its commit
# waiting for the standby) and replay lag p50 (pg_stat_replication.replay_lag every 100 ms on
# the primary; NULL, nothing in flight, counts as 0).  Context switches and CPU per commit
# hardly move with the machine's other load, unlike TPS: these are the headline figures.
#
# Output: a table on stdout (per run, then per process), percommit.csv in --out (default
# BUILD_DIR/bench-results).  --agent-env VAR=VALUE (repeatable) starts the agents with it, e.g.
# WALMIRROR_SPOOL_WRITES=uring.  Run it as root or postgres.  Everything it starts is stopped
# on exit.  Exit 77 when PostgreSQL 15 or the binaries are missing.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
usage() {
    echo "usage: sh bench/percommit.sh BUILD_DIR [--seconds N] [--scale N] [--clients \"1 8\"] [--levels \"on remote_apply\"] [--agent-env VAR=VALUE] [--out DIR]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
build=$(cd "$1" && pwd) || usage
shift
secs=15 scale=10 clients_list="1 8" levels="on remote_apply" agent_env="" out=""
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) [ $# -ge 2 ] || usage; secs=$2; shift ;;
    --scale) [ $# -ge 2 ] || usage; scale=$2; shift ;;
    --clients) [ $# -ge 2 ] || usage; clients_list=$2; shift ;;
    --levels) [ $# -ge 2 ] || usage; levels=$2; shift ;;
    --agent-env) [ $# -ge 2 ] || usage; agent_env="$agent_env $2"; shift ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift ;;
    *) usage ;;
    esac
    shift
done
for l in $levels; do
    case $l in remote_write | on | remote_apply) ;; *) echo "percommit: --levels: $l is not remote_write, on or remote_apply" >&2; exit 2 ;; esac
done
for c in $clients_list; do
    case $c in '' | *[!0-9]* | 0) echo "percommit: --clients: $c is not a positive number" >&2; exit 2 ;; esac
done
out=${out:-$build/bench-results}
agent_bin=$build/agent/walmirror-agent
skip() { echo "percommit: skipped: $*" >&2; exit 77; }
[ -x /usr/lib/postgresql/15/bin/initdb ] || skip "PostgreSQL 15 is not installed"
[ -x "$agent_bin" ] || skip "no $agent_bin (build it first)"
if [ "$(id -u)" -ne 0 ] && [ "$(id -un)" != postgres ]; then skip "run as root or as postgres"; fi

WM_TMP=$(mktemp -d "${TMPDIR:-/tmp}/wm-percommit-XXXXXX")
chmod 755 "$WM_TMP"
agents="" bgpids=""
. "$src/bench/lib.sh"
cleanup() {
    trap - EXIT INT TERM
    for p in $bgpids; do kill "$p" 2>/dev/null || true; done
    pairs_down >/dev/null 2>&1
    if [ -n "${WM_KEEP:-}" ]; then echo "percommit: kept $WM_TMP" >&2; else rm -rf "$WM_TMP"; fi
}
trap cleanup EXIT
trap 'echo "percommit: interrupted" >&2; exit 130' INT TERM

if [ -n "$agent_env" ]; then
    mkdir -p "$WM_TMP/bin"
    printf '#!/bin/sh\nexec env %s %s "$@"\n' "$agent_env" "$agent_bin" >"$WM_TMP/bin/walmirror-agent"
    chmod 755 "$WM_TMP/bin" "$WM_TMP/bin/walmirror-agent"
    agent_bin=$WM_TMP/bin/walmirror-agent
fi
mkdir -p "$out"
runs=$WM_TMP/runs
mkdir -p "$runs"
[ "$(id -u)" -eq 0 ] && chown postgres: "$runs"
csv=$out/percommit.csv
echo "clients,level,system,process,commits,tps,lat_p50_ms,lat_p99_ms,lag_p50_ms,ctxsw_per_commit,cpu_us_per_commit" >"$csv"
clk=$(getconf CLK_TCK)

echo "percommit: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "percommit: pgbench -T $secs, scale $scale, clients: $clients_list; levels: $levels; agent environment:${agent_env:- none}"
echo "percommit: setting up both pairs" >&2
pair_up "$agent_bin" "$scale" >"$WM_TMP/pair_up.log" 2>&1 || { cat "$WM_TMP/pair_up.log" >&2; exit 1; }
agent_a=$(pgrep -f "walmirror-agent -c $WM_TMP/site-a.conf\$" | head -1)
agent_b=$(pgrep -f "walmirror-agent -c $WM_TMP/site-b.conf\$" | head -1)
native_pair_up "$scale" >"$WM_TMP/native_up.log" 2>&1 || { cat "$WM_TMP/native_up.log" >&2; exit 1; }

# path_pids SYSTEM: "NAME=PID ..." for the processes on SYSTEM's commit path, read now (a
# walsender or walreceiver that restarted has a new pid).
path_pids() {
    if [ "$1" = native ]; then
        echo "walsender=$(pg_psql 127.0.0.1 "$pgna" "SELECT pid FROM pg_stat_replication WHERE application_name = 'native'")" \
            "walreceiver=$(pg_psql 127.0.0.1 "$pgnb" "SELECT pid FROM pg_stat_wal_receiver")"
    else
        echo "walsender=$(pg_psql 127.0.0.1 "$pga" "SELECT pid FROM pg_stat_replication WHERE application_name = 'walmirror'")" \
            "agent_a=$agent_a agent_b=$agent_b" \
            "walreceiver=$(pg_psql 127.0.0.1 "$pgb" "SELECT pid FROM pg_stat_wal_receiver")"
    fi
}

# run CLIENTS LEVEL SYSTEM: one pgbench run; appends its lines to the CSV.
run() {
    nc=$1 level=$2 sys=$3 tag=$1-$2-$3
    [ "$sys" = native ] && port=$pgna app=native || port=$pga app=walmirror
    procs=$(path_pids "$sys")
    pids=$(for kv in $procs; do echo "${kv#*=}"; done)
    for p in $pids; do
        [ -n "$p" ] && [ -d "/proc/$p" ] || { echo "percommit: $tag: a process on the path is missing ($procs)" >&2; return 1; }
    done
    cat >"$runs/$tag.sql" <<SQL
SELECT coalesce(extract(epoch FROM replay_lag) * 1000, 0)
  FROM pg_stat_replication WHERE application_name = '$app'
\\watch 0.1
SQL
    as_postgres psql -h 127.0.0.1 -p "$port" -U postgres -AtX -f "$runs/$tag.sql" postgres \
        >"$runs/$tag.lag" 2>/dev/null &
    lagpid=$!
    bgpids="$lagpid"
    for kv in $procs; do eval "u0_${kv%%=*}=$(cpu_ticks "${kv#*=}")"; done
    # shellcheck disable=SC2086
    ctxsw_sampler "$runs/$tag.ctx" 0.2 $pids &
    smp=$!
    bgpids="$bgpids $smp"
    jobs=$((nc < 2 ? nc : 2))
    rc=0
    as_postgres env PGOPTIONS="-c synchronous_commit=$level" pgbench -h 127.0.0.1 -p "$port" \
        -U postgres -n -c "$nc" -j "$jobs" -T "$secs" -l --log-prefix="$runs/$tag" postgres \
        >"$runs/$tag.out" 2>&1 || rc=$?
    kill "$smp" 2>/dev/null || true
    wait "$smp" 2>/dev/null || true
    # shellcheck disable=SC2086
    ctxsw_sample $pids | sed 's/^/999999 /' >>"$runs/$tag.ctx"
    for kv in $procs; do eval "u1_${kv%%=*}=$(cpu_ticks "${kv#*=}")"; done
    kill "$lagpid" 2>/dev/null || true
    wait "$lagpid" 2>/dev/null || true
    bgpids=""
    if [ "$rc" -ne 0 ]; then
        echo "percommit: pgbench failed on $tag:" >&2
        tail -5 "$runs/$tag.out" >&2
        return 1
    fi
    tps=$(awk '/^tps/ {printf "%.0f", $3; exit}' "$runs/$tag.out")
    cat "$runs/$tag".[0-9]* | awk '{printf "%.3f\n", $3 / 1000}' | sort -n >"$runs/$tag.lat"
    rm -f "$runs/$tag".[0-9]*
    awk 'NF == 1 {printf "%.3f\n", $1}' "$runs/$tag.lag" | sort -n >"$runs/$tag.lagms"
    ntx=$(wc -l <"$runs/$tag.lat")
    p50=$(pctl "$runs/$tag.lat" 50) p99=$(pctl "$runs/$tag.lat" 99) lag50=$(pctl "$runs/$tag.lagms" 50)
    tot_c=0 tot_u=0
    for kv in $procs; do
        name=${kv%%=*} pid=${kv#*=}
        c=$(ctxsw_delta "$runs/$tag.ctx" "$pid")
        u=$(($(eval echo "\$u1_$name") - $(eval echo "\$u0_$name")))
        tot_c=$((tot_c + c)) tot_u=$((tot_u + u))
        awk -v nc="$nc" -v l="$level" -v s="$sys" -v n="$name" -v tx="$ntx" -v tps="$tps" -v c="$c" -v u="$u" -v hz="$clk" \
            'BEGIN { printf "%s,%s,%s,%s,%d,%s,,,,%.2f,%.1f\n", nc, l, s, n, tx, tps, c / tx, u * 1e6 / hz / tx }' >>"$csv"
    done
    awk -v nc="$nc" -v l="$level" -v s="$sys" -v tx="$ntx" -v tps="$tps" -v c="$tot_c" -v u="$tot_u" -v hz="$clk" \
        -v p50="$p50" -v p99="$p99" -v lag="$lag50" \
        'BEGIN { printf "%s,%s,%s,path,%d,%s,%s,%s,%s,%.2f,%.1f\n", nc, l, s, tx, tps, p50, p99, lag, c / tx, u * 1e6 / hz / tx }' >>"$csv"
}

for nc in $clients_list; do
    for level in $levels; do
        for sys in native walmirror; do
            echo "percommit: -c $nc $level $sys ($secs s)" >&2
            run "$nc" "$level" "$sys"
        done
    done
done

# The table: per client count and level, native and walmirror side by side.
awk -F, 'NR == 1 { next }
function r(a, b) { return (a + 0 > 0 && b != "") ? sprintf("%.2f", b / a) : "-" }
function d(a, b) { return (a != "" && b != "") ? sprintf("%+.2f", b - a) : "-" }
{ k = $1 "," $2; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
  v[k, $3, $4, "ctx"] = $10; v[k, $3, $4, "cpu"] = $11
  if ($4 == "path") { v[k, $3, "tps"] = $6; v[k, $3, "p50"] = $7; v[k, $3, "p99"] = $8; v[k, $3, "lag"] = $9; v[k, $3, "n"] = $5 } }
END {
    for (j = 1; j <= n; j++) {
        k = order[j]; split(k, p, ",")
        printf "\n-c %s, synchronous_commit = %-14s %12s %12s %8s\n", p[1], p[2], "native", "walmirror", "w/n"
        printf "  %-38s %12s %12s %8s\n", "commits", v[k, "native", "n"], v[k, "walmirror", "n"], r(v[k, "native", "n"], v[k, "walmirror", "n"])
        printf "  %-38s %12s %12s %8s\n", "TPS", v[k, "native", "tps"], v[k, "walmirror", "tps"], r(v[k, "native", "tps"], v[k, "walmirror", "tps"])
        printf "  %-38s %12s %12s %8s\n", "commit latency p50 ms", v[k, "native", "p50"], v[k, "walmirror", "p50"], r(v[k, "native", "p50"], v[k, "walmirror", "p50"])
        printf "  %-38s %12s %12s %8s\n", "commit latency p99 ms", v[k, "native", "p99"], v[k, "walmirror", "p99"], r(v[k, "native", "p99"], v[k, "walmirror", "p99"])
        printf "  %-38s %12s %12s %8s\n", "replay lag p50 ms", v[k, "native", "lag"], v[k, "walmirror", "lag"], r(v[k, "native", "lag"], v[k, "walmirror", "lag"])
        printf "  %-38s %12s %12s %8s\n", "context switches per commit, path", v[k, "native", "path", "ctx"], v[k, "walmirror", "path", "ctx"], d(v[k, "native", "path", "ctx"], v[k, "walmirror", "path", "ctx"])
        printf "  %-38s %12s %12s %8s\n", "CPU us per commit, path", v[k, "native", "path", "cpu"], v[k, "walmirror", "path", "cpu"], r(v[k, "native", "path", "cpu"], v[k, "walmirror", "path", "cpu"])
        split("walsender agent_a agent_b walreceiver", names, " ")
        for (i = 1; i <= 4; i++) {
            nm = names[i]
            printf "    %-36s %12s %12s\n", nm " ctxsw / CPU us", \
                ((k, "native", nm, "ctx") in v) ? v[k, "native", nm, "ctx"] " / " v[k, "native", nm, "cpu"] : "-", \
                ((k, "walmirror", nm, "ctx") in v) ? v[k, "walmirror", nm, "ctx"] " / " v[k, "walmirror", nm, "cpu"] : "-"
        }
    }
}' "$csv"
echo
echo "Per commit: one pgbench transaction.  Path: walmirror = A's walsender, agent A, agent B, B's"
echo "walreceiver; native = walsender, walreceiver.  Context switches: voluntary + involuntary, all"
echo "threads.  w/n: walmirror / native (context switches: walmirror - native)."
echo "CSV: $csv"
