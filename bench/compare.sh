#!/bin/sh
# compare.sh - walmirror against PostgreSQL's native synchronous standby, side by side, in one
# run on this machine, with both links through the same wm-linkem settings.
#
#   sh bench/compare.sh BUILD_DIR [--quick] [--scenario loopback|wan20|wan60|bulk|all]
#                       [--seconds N] [--scale N] [--clients N] [--bulk-mb N]
#                       [--bulk-timeout S] [--agent-env VAR=VALUE] [--report-only] [--out DIR]
#
# For each scenario it sets up, as the postgres user under a temporary directory:
#   native:    a PostgreSQL 15 primary and a standby from pg_basebackup -R (application_name
#              "native", named in synchronous_standby_names) whose primary_conninfo points at
#              a wm-linkem in front of the primary;
#   walmirror: the pair of bench/lib.sh pair_up, where site A's agent reaches site B's agent
#              through a wm-linkem (the agent config's peer names linkem's port).
# and runs pgbench (TPC-B-like, -c CLIENTS -j 2 -T SECONDS) at synchronous_commit =
# remote_write, on and remote_apply on each pair in turn.  Per run it measures:
#   TPS; commit latency p50/p99 from pgbench -l (the whole transaction as the client sees it,
#     whose commit waits for the standby); replay lag p50/p99/max, sampled every 100 ms from
#     pg_stat_replication.replay_lag on the primary (samples where it is NULL, meaning the
#     standby has caught up and nothing is in flight, count as 0);
#   WAL bytes (pg_current_wal_lsn difference) and wire bytes (what wm-linkem carried in the
#     primary-to-standby direction: TLS records for walmirror, the replication protocol for
#     native; walmirror's own /status wal_wire_bytes also goes into the CSV);
#   CPU seconds per GB of WAL of the replication processes (walmirror: both agents; native:
#     the walsender and the walreceiver, for reference) from /proc/PID/stat utime+stime;
#   agent peak RSS (VmHWM of each agent; not measured for native, whose processes' RSS is
#     mostly shared buffers).
# Scenarios: loopback (linkem without delay or cap), wan20 (10 ms each way, 50 Mbit/s each
# way: 20 ms RTT), wan60 (30 ms, 10 Mbit/s), bulk (a COPY of --bulk-mb x 3495 rows and a
# CREATE INDEX, about 1 GB of WAL at the default 1600, at 50 Mbit/s and 20 ms RTT, timed
# until the standby has replayed it; a system that has not finished after --bulk-timeout
# seconds, default 1200, is recorded as failed).
# --agent-env VAR=VALUE (repeatable) starts the agents with that environment variable, e.g.
# WALMIRROR_URING_SEND_ZC=0.
# --report-only: no runs; the table and plots again from the CSV and raw samples in --out.
# --quick: loopback only, scale 1, 3 s per run (the smoke test; under 2 minutes).
#
# Output: a table on stdout, results.csv (and bulk.csv) and PNG plots (gnuplot, when installed)
# in --out (default BUILD_DIR/bench-results); raw samples stay in --out/raw.  Everything the
# script starts is stopped on exit, failure or ^C.  Exit 77 when PostgreSQL 15 or the binaries
# are missing, or when it is run by neither root nor postgres.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
usage() {
    echo "usage: sh bench/compare.sh BUILD_DIR [--quick] [--scenario loopback|wan20|wan60|bulk|all] [--seconds N] [--scale N] [--clients N] [--bulk-mb N] [--bulk-timeout S] [--agent-env VAR=VALUE] [--report-only] [--out DIR]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
build=$(cd "$1" && pwd) || usage
shift
report_only=0 agent_env="" quick=0 scenarios="" secs="" scale="" clients=8 bulk_mb=1600 bulk_timeout=1200 out=""
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1 ;;
    --scenario) [ $# -ge 2 ] || usage; scenarios="$scenarios $2"; shift ;;
    --seconds) [ $# -ge 2 ] || usage; secs=$2; shift ;;
    --scale) [ $# -ge 2 ] || usage; scale=$2; shift ;;
    --clients) [ $# -ge 2 ] || usage; clients=$2; shift ;;
    --bulk-mb) [ $# -ge 2 ] || usage; bulk_mb=$2; shift ;;
    --bulk-timeout) [ $# -ge 2 ] || usage; bulk_timeout=$2; shift ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift ;;
    --report-only) report_only=1 ;;
    --agent-env) [ $# -ge 2 ] || usage; agent_env="$agent_env $2"; shift ;;
    *) usage ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    scenarios=${scenarios:-loopback} secs=${secs:-3} scale=${scale:-1} clients=4
else
    scenarios=${scenarios:-all} secs=${secs:-30} scale=${scale:-10}
fi
[ "$(echo $scenarios)" = all ] && scenarios="loopback wan20 wan60 bulk"
for s in $scenarios; do
    case $s in loopback | wan20 | wan60 | bulk) ;; *) echo "compare: unknown scenario $s" >&2; usage ;; esac
done
out=${out:-$build/bench-results}

agent_bin=$build/agent/walmirror-agent
linkem_bin=$build/bench/wm-linkem
skip() { echo "compare: skipped: $*" >&2; exit 77; }
[ -x /usr/lib/postgresql/15/bin/initdb ] || skip "PostgreSQL 15 is not installed"
[ -x "$agent_bin" ] || skip "no $agent_bin (build it first)"
[ -x "$linkem_bin" ] || skip "no $linkem_bin (build it first)"
if [ "$(id -u)" -ne 0 ] && [ "$(id -un)" != postgres ]; then skip "run as root or as postgres"; fi
command -v curl >/dev/null || skip "curl is not installed"

WM_TMP=$(mktemp -d /tmp/walmirror-bench-XXXXXX)
chmod 755 "$WM_TMP"
agents="" linkems="" bgpids=""
. "$src/bench/lib.sh"
cleanup() {
    trap - EXIT INT TERM
    for p in $bgpids; do kill "$p" 2>/dev/null || true; done
    for p in $linkems; do kill "$p" 2>/dev/null || true; done
    pairs_down
    if [ -n "${WM_KEEP:-}" ]; then echo "compare: kept $WM_TMP" >&2; else rm -rf "$WM_TMP"; fi
}
trap cleanup EXIT
trap 'echo; echo "compare: interrupted" >&2; exit 130' INT TERM

if [ -n "$agent_env" ]; then
    mkdir -p "$WM_TMP/bin"
    printf '#!/bin/sh\nexec env %s %s "$@"\n' "$agent_env" "$agent_bin" >"$WM_TMP/bin/walmirror-agent"
    chmod 755 "$WM_TMP/bin" "$WM_TMP/bin/walmirror-agent"
    agent_bin=$WM_TMP/bin/walmirror-agent
fi
mkdir -p "$out/raw"
runs=$WM_TMP/runs
mkdir -p "$runs"
[ "$(id -u)" -eq 0 ] && chown postgres: "$runs"
csv=$out/results.csv
[ "$report_only" = 1 ] || echo "scenario,level,system,tps,lat_p50_ms,lat_p99_ms,lag_p50_ms,lag_p99_ms,lag_max_ms,lag_samples,wal_bytes,wire_bytes,status_wire_bytes,cpu_s,cpu_s_per_gb,rss_a_kb,rss_b_kb,transactions,seconds" >"$csv"
bulkcsv=$out/bulk.csv
t_start=$(date +%s)
clk=$(getconf CLK_TCK)
levels="remote_write on remote_apply"

progress() { printf '\r\033[K[%4ds] %s' "$(($(date +%s) - t_start))" "$*" >&2; }

linkem_args() {
    case $1 in
    loopback) echo "" ;;
    wan20 | bulk) echo "--delay 10ms --rate 50mbit" ;;
    wan60) echo "--delay 30ms --rate 10mbit" ;;
    esac
}

# linkem_start NAME LISTEN_PORT CONNECT_PORT ARGS...: one wm-linkem, control socket
# $WM_TMP/NAME.sock; its pid goes to $linkems.
linkem_start() {
    name=$1 lport=$2 cport=$3
    shift 3
    "$linkem_bin" --listen "127.0.0.1:$lport" --connect "127.0.0.1:$cport" \
        --control "$WM_TMP/$name.sock" "$@" >"$WM_TMP/$name.log" 2>&1 &
    linkems="$linkems $!"
    for _ in $(seq 50); do
        [ -S "$WM_TMP/$name.sock" ] && return 0
        sleep 0.1
    done
    echo "compare: wm-linkem $name did not start:" >&2
    cat "$WM_TMP/$name.log" >&2
    return 1
}

# linkem_bytes NAME DIR: bytes delivered in direction DIR (a2b or b2a).
linkem_bytes() {
    "$linkem_bin" --control "$WM_TMP/$1.sock" --send stats | tr ' ' '\n' | sed -n "s/^$2_bytes=//p"
}

hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

wal_lsn() { pg_psql 127.0.0.1 "$1" "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"; }
status_wire() { curl -s "http://127.0.0.1:$1/status" | sed -n 's/.*"wal_wire_bytes": *\([0-9]*\).*/\1/p'; }

# pair_setup SCENARIO: both pairs with their links; sets the ports and pids used below.
pair_setup() {
    largs=$(linkem_args "$1")
    native_pa=$(free_port) native_link=$(free_port)
    pair_lb=$(free_port) pair_peer_a=$(free_port)
    # shellcheck disable=SC2086
    linkem_start native "$native_link" "$native_pa" $largs
    # shellcheck disable=SC2086
    linkem_start mirror "$pair_peer_a" "$pair_lb" $largs
    progress "$1: setting up the walmirror pair (scale $scale)"
    pair_up "$agent_bin" "$scale"
    # $agents holds the pids of the shells that started them; the agents' own pids:
    agent_pids="$(pgrep -f "walmirror-agent -c $WM_TMP/site-b.conf\$") $(pgrep -f "walmirror-agent -c $WM_TMP/site-a.conf\$")"
    progress "$1: setting up the native pair (scale $scale)"
    native_pair_up "$scale"
    nws=$(pg_psql 127.0.0.1 "$pgna" "SELECT pid FROM pg_stat_replication WHERE application_name = 'native'")
    nwr=$(pg_psql 127.0.0.1 "$pgnb" "SELECT pid FROM pg_stat_wal_receiver")
}

pair_teardown() {
    for p in $linkems; do kill "$p" 2>/dev/null || true; done
    linkems=""
    pairs_down
    for d in site-a site-b native-a native-b certs; do rm -rf "${WM_TMP:?}/$d"; done
    rm -f "$WM_TMP"/*.sock
}

# bench_run SCENARIO SYSTEM LEVEL: one pgbench run; appends a line to the CSV.
bench_run() {
    sc=$1 sys=$2 level=$3 tag=$1-$2-$3
    if [ "$(eval echo "\${stuck_$sys:-0}")" = 1 ]; then
        echo "$sc,$level,$sys,skipped,,,,,,,,,,,,,,," >>"$csv"
        return 0
    fi
    if [ "$sys" = native ]; then
        port=$pgna app=native link=native dir=b2a pids="$nws $nwr"
    else
        port=$pga app=walmirror link=mirror dir=a2b pids=$agent_pids
    fi
    # shellcheck disable=SC2086
    lsn0=$(wal_lsn "$port") cpu0=$(cpu_ticks $pids) wire0=$(linkem_bytes "$link" "$dir")
    sw0=0
    [ "$sys" = walmirror ] && sw0=$(status_wire "$ha")
    cat >"$runs/$tag.sql" <<SQL
SELECT round(extract(epoch FROM clock_timestamp())::numeric, 3),
       coalesce(extract(epoch FROM replay_lag) * 1000, 0)
  FROM pg_stat_replication WHERE application_name = '$app'
\\watch 0.1
SQL
    as_postgres psql -h 127.0.0.1 -p "$port" -U postgres -AtX -F ' ' -f "$runs/$tag.sql" postgres \
        >"$runs/$tag.lag" 2>/dev/null &
    sampler=$!
    bgpids="$bgpids $sampler"
    as_postgres env PGOPTIONS="-c synchronous_commit=$level" pgbench -h 127.0.0.1 -p "$port" \
        -U postgres -n -c "$clients" -j 2 -T "$secs" -P 1 -l --log-prefix="$runs/$tag" postgres \
        >"$runs/$tag.out" 2>&1 &
    pgb_pid=$!
    bgpids="$bgpids $pgb_pid"
    t_run=$(date +%s)
    while kill -0 "$pgb_pid" 2>/dev/null; do
        # Commits that wait for a standby that never acknowledges keep pgbench -T running.
        if [ $(($(date +%s) - t_run)) -gt $((secs + 60)) ]; then
            kill "$pgb_pid" "$sampler" 2>/dev/null || true
            wait "$pgb_pid" 2>/dev/null || true
            bgpids=""
            echo >&2
            echo "compare: $tag: commits stopped (pgbench still running $((secs + 60)) s after a $secs s run); recorded as stuck" >&2
            echo "$sc,$level,$sys,stuck,,,,,,,,,,,,,,," >>"$csv"
            eval "stuck_$sys=1"
            return 0
        fi
        last=$(grep '^progress' "$runs/$tag.out" | tail -1 | sed 's/^progress: \([0-9.]*\) s, \([0-9.]*\) tps.*/\1 s, \2 tps/')
        progress "$sc: $sys $level ($step/$nsteps): ${last:-starting} of $secs s"
        sleep 1
    done
    rc=0
    wait "$pgb_pid" || rc=$?
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    bgpids=""
    if [ "$rc" -ne 0 ]; then
        echo >&2
        echo "compare: pgbench failed on $tag:" >&2
        tail -5 "$runs/$tag.out" >&2
        return 1
    fi
    # shellcheck disable=SC2086
    lsn1=$(wal_lsn "$port") cpu1=$(cpu_ticks $pids) wire1=$(linkem_bytes "$link" "$dir")
    sw1=0 rssa=0 rssb=0
    if [ "$sys" = walmirror ]; then
        sw1=$(status_wire "$ha")
        set -- $agent_pids
        rssb=$(hwm_kb "$1") rssa=$(hwm_kb "$2")
    fi
    tps=$(awk '/^tps/ {print $3; exit}' "$runs/$tag.out")
    cat "$runs/$tag".[0-9]* 2>/dev/null | awk '{printf "%.3f\n", $3 / 1000}' | sort -n >"$out/raw/$tag.lat"
    awk 'NF == 2 {print $2}' "$runs/$tag.lag" | sort -n >"$out/raw/$tag.lagms"
    rm -f "$runs/$tag".[0-9]*
    ntx=$(wc -l <"$out/raw/$tag.lat")
    nlag=$(wc -l <"$out/raw/$tag.lagms")
    wal=$((lsn1 - lsn0)) wire=$((wire1 - wire0)) sw=$((${sw1:-0} - ${sw0:-0}))
    cpu=$(awk -v t=$((cpu1 - cpu0)) -v c="$clk" 'BEGIN {printf "%.2f", t / c}')
    cpugb=$(awk -v s="$cpu" -v w="$wal" 'BEGIN {if (w > 0) printf "%.1f", s / (w / 1e9)}')
    echo "$sc,$level,$sys,$tps,$(pctl "$out/raw/$tag.lat" 50),$(pctl "$out/raw/$tag.lat" 99),$(pctl "$out/raw/$tag.lagms" 50),$(pctl "$out/raw/$tag.lagms" 99),$(pctl "$out/raw/$tag.lagms" 100),$nlag,$wal,$wire,$sw,$cpu,$cpugb,$rssa,$rssb,$ntx,$secs" >>"$csv"
}

# bulk_run SYSTEM: COPY of a prepared file plus CREATE INDEX, timed until the standby has
# replayed the primary's last LSN.
bulk_run() {
    sys=$1
    if [ "$sys" = native ]; then port=$pgna sport=$pgnb link=native dir=b2a pids="$nws $nwr"
    else port=$pga sport=$pgb link=mirror dir=a2b pids=$agent_pids; fi
    pg_psql 127.0.0.1 "$port" "CREATE TABLE bulk (id bigint, n int, h text, pad text)" >/dev/null
    # shellcheck disable=SC2086
    lsn0=$(wal_lsn "$port") cpu0=$(cpu_ticks $pids) wire0=$(linkem_bytes "$link" "$dir")
    t0=$(date +%s.%N)
    as_postgres psql -h 127.0.0.1 -p "$port" -U postgres -AtX -q postgres \
        -c "COPY bulk FROM '$runs/bulk.data'" -c "CREATE INDEX ON bulk (h)" >"$runs/bulk-$sys.out" 2>&1 &
    pid=$!
    bgpids="$bgpids $pid"
    deadline=$(($(date +%s) + bulk_timeout))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            kill "$pid" 2>/dev/null || true
            echo >&2
            echo "compare: bulk: $sys did not finish in $bulk_timeout s; recorded as failed" >&2
            echo "$sys,$(($(wal_lsn "$port") - lsn0)),,failed,failed," >>"$bulkcsv"
            return 0
        fi
        progress "bulk: $sys loading ($(( ($(wal_lsn "$port") - lsn0) / 1048576 )) MB of WAL so far)"
        sleep 1
    done
    wait "$pid" || { echo; cat "$runs/bulk-$sys.out"; return 1; } >&2
    t1=$(date +%s.%N)
    end=$(pg_psql 127.0.0.1 "$port" "SELECT pg_current_wal_lsn()")
    while :; do
        behind=$(pg_psql 127.0.0.1 "$sport" "SELECT pg_wal_lsn_diff('$end', pg_last_wal_replay_lsn())")
        [ "${behind%.*}" -le 0 ] && break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "$sys,$(($(wal_lsn "$port") - lsn0)),,$(echo "$t0 $t1" | awk '{printf "%.1f", $2 - $1}'),failed," >>"$bulkcsv"
            return 0
        fi
        progress "bulk: $sys: standby replaying, $((${behind%.*} / 1048576)) MB behind"
        sleep 0.1
    done
    t2=$(date +%s.%N)
    bgpids=""
    # shellcheck disable=SC2086
    lsn1=$(wal_lsn "$port") cpu1=$(cpu_ticks $pids) wire1=$(linkem_bytes "$link" "$dir")
    cpu=$(awk -v t=$((cpu1 - cpu0)) -v c="$clk" 'BEGIN {printf "%.2f", t / c}')
    echo "$sys,$((lsn1 - lsn0)),$((wire1 - wire0)),$(echo "$t0 $t1 $t2" | awk '{printf "%.1f,%.1f", $2 - $1, $3 - $1}'),$cpu" >>"$bulkcsv"
}

if [ "$report_only" = 0 ]; then
nsteps=0
for s in $scenarios; do [ "$s" = bulk ] && nsteps=$((nsteps + 2)) || nsteps=$((nsteps + 6)); done
step=0
echo "compare: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "compare: scenarios:$scenarios; pgbench -c $clients -j 2 -T $secs, scale $scale; agent environment:${agent_env:- none}; results in $out"
for s in $scenarios; do
    pair_setup "$s"
    if [ "$s" = bulk ]; then
        rows=$((bulk_mb * 1048576 / 300))
        progress "bulk: writing $rows rows of COPY data"
        pg_psql 127.0.0.1 "$pgna" "COPY (SELECT i, (random() * 1e9)::int, md5(i::text), 'row ' || i || ' of the bulk load, ' || repeat(chr(97 + i % 26), 40) FROM generate_series(1, $rows) i) TO '$runs/bulk.data'" >/dev/null
        echo "system,wal_bytes,wire_bytes,primary_s,replayed_s,cpu_s" >"$bulkcsv"
        for sys in native walmirror; do
            step=$((step + 1))
            bulk_run "$sys"
        done
        rm -f "$runs/bulk.data"
    else
        for level in $levels; do
            for sys in native walmirror; do
                step=$((step + 1))
                bench_run "$s" "$sys" "$level"
            done
        done
    fi
    pair_teardown
    stuck_native=0 stuck_walmirror=0
done
printf '\r\033[K' >&2
echo "compare: done in $(($(date +%s) - t_start)) s"
fi

# The table: one block per scenario and level, native and walmirror side by side.
awk -F, 'NR == 1 {next}
function r(a, b) { return (a + 0 > 0 && b ~ /^[0-9.]/) ? sprintf("%.2f", b / a) : "-" }
function f(x, fmt) { return x == "" ? "-" : (x ~ /^[a-z]/ ? x : sprintf(fmt, x)) }
function row(name, a, b, fmt) { printf "  %-26s %12s %12s %8s\n", name, f(a, fmt), f(b, fmt), r(a, b) }
{ k = $1 "," $2; if (!(k in seen)) { seen[k] = 1; order[++n] = k } for (i = 4; i <= NF; i++) v[k, $3, i] = $i }
END {
    for (j = 1; j <= n; j++) {
        k = order[j]; split(k, p, ",")
        printf "\n%-28s %12s %12s %8s\n", p[1] " / " p[2], "native", "walmirror", "w/n"
        row("TPS", v[k, "native", 4], v[k, "walmirror", 4], "%.0f")
        row("commit latency p50 ms", v[k, "native", 5], v[k, "walmirror", 5], "%.2f")
        row("commit latency p99 ms", v[k, "native", 6], v[k, "walmirror", 6], "%.2f")
        row("replay lag p50 ms", v[k, "native", 7], v[k, "walmirror", 7], "%.2f")
        row("replay lag p99 ms", v[k, "native", 8], v[k, "walmirror", 8], "%.2f")
        row("replay lag max ms", v[k, "native", 9], v[k, "walmirror", 9], "%.2f")
        row("WAL MB", v[k, "native", 11] / 1e6, v[k, "walmirror", 11] / 1e6, "%.1f")
        row("wire MB", v[k, "native", 12] / 1e6, v[k, "walmirror", 12] / 1e6, "%.1f")
        row("wire / WAL", v[k, "native", 12] / (v[k, "native", 11] + 1), v[k, "walmirror", 12] / (v[k, "walmirror", 11] + 1), "%.3f")
        row("CPU s per GB of WAL (*)", v[k, "native", 15], v[k, "walmirror", 15], "%.1f")
        printf "  %-26s %12s %12s\n", "agent peak RSS MB (A / B)", "-", sprintf("%.1f / %.1f", v[k, "walmirror", 16] / 1024, v[k, "walmirror", 17] / 1024)
    }
}' "$csv"
if [ -f "$bulkcsv" ] && [ "$(wc -l <"$bulkcsv")" -gt 1 ]; then
    awk -F, 'function q(a, b) { return (a + 0 > 0 && b + 0 > 0) ? sprintf("%.2f", b / a) : "-" }
    NR > 1 {w[$1] = $2; x[$1] = $3; p[$1] = $4; t[$1] = $5; c[$1] = $6}
    END {
        printf "\n%-28s %12s %12s %8s\n", "bulk (50 Mbit/s, 20 ms RTT)", "native", "walmirror", "w/n"
        printf "  %-26s %12.1f %12.1f %8.2f\n", "WAL MB", w["native"] / 1e6, w["walmirror"] / 1e6, w["walmirror"] / w["native"]
        printf "  %-26s %12.1f %12.1f %8.2f\n", "wire MB", x["native"] / 1e6, x["walmirror"] / 1e6, (x["native"] > 0 ? x["walmirror"] / x["native"] : 0)
        printf "  %-26s %12s %12s %8s\n", "primary done s", p["native"], p["walmirror"], q(p["native"], p["walmirror"])
        printf "  %-26s %12s %12s %8s\n", "standby replayed s", t["native"], t["walmirror"], q(t["native"], t["walmirror"])
        printf "  %-26s %12.1f %12.1f %8.2f\n", "CPU s (*)", c["native"], c["walmirror"], (c["native"] > 0 ? c["walmirror"] / c["native"] : 0)
    }' "$bulkcsv"
fi
echo
echo "(*) CPU: walmirror = both agents; native = walsender + walreceiver, for reference."
echo "    Replay lag: pg_stat_replication.replay_lag on the primary every 100 ms; NULL counts as 0."
echo "    Wire: bytes wm-linkem carried from the primary's side to the standby's."
echo "CSV: $csv"

# Plots: the distributions (percentile against value) of commit latency and replay lag, one
# PNG per scenario and figure, the three levels and both systems on each.
if command -v gnuplot >/dev/null; then
    for s in $scenarios; do
        [ "$s" = bulk ] && continue
        for fig in lat lagms; do
            [ "$fig" = lat ] && title="commit latency" || title="replay lag"
            plot="" sep=""
            lc=0
            for level in $levels; do
                lc=$((lc + 1))
                for sys in native walmirror; do
                    f=$out/raw/$s-$sys-$level.$fig
                    [ -s "$f" ] || continue
                    n=$(wc -l <"$f")
                    [ "$sys" = native ] && dt=2 || dt=1
                    plot="$plot$sep'$f' using 1:(\$0 * 100.0 / $n) with lines lc $lc dt $dt lw 2 title '$sys $level'"
                    sep=", "
                done
            done
            [ -n "$plot" ] || continue
            gnuplot <<GP 2>/dev/null || echo "compare: gnuplot failed on $s $fig" >&2
set terminal pngcairo size 900,600 noenhanced
set output '$out/$s-$fig.png'
set title '$s: $title distribution (CDF)'
set xlabel '$title, ms (log scale)'
set ylabel 'percent of samples at or below'
set logscale x
set grid
set key bottom right
plot $plot
GP
        done
    done
    ls "$out"/*.png 2>/dev/null | sed 's/^/plot: /'
else
    echo "compare: gnuplot not installed (tools/install-deps.sh installs gnuplot-nox): no plots"
fi
