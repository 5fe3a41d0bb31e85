#!/bin/sh
# switchover.sh - write-unavailability of planned switchovers under load, as a client sees it
# (issue 15, item 4).
#
#   sh bench/switchover.sh BUILD_DIR [--count N] [--clients N] [--scale N] [--settle S]
#                          [--agent-env VAR=VALUE] [--keep]
#
# On loopback, as the postgres user under a temporary directory, it stands up a walmirror pair
# (bench/lib.sh pair_up, scale --scale) and runs, throughout:
#   pgbench -c CLIENTS (default 4) at synchronous_commit = on through the multi-host string
#     "host=127.0.0.1,127.0.0.1 port=A,B target_session_attrs=read-write", started again
#     whenever a switchover has ended its sessions (the load);
#   wm-ledger (bench/ledger.c) through the same string: it commits ids one by one at
#     synchronous_commit = on, reconnecting after any error, and records the time and server
#     of each acknowledged commit.
# Then it runs --count (default 10) switchovers, to site B and back in turn, with walmirrorctl
# (waiting --settle seconds, default 3, between them; a preflight refusal - the old primary's
# new standby not yet caught up - is retried for 60 s).  At the end it stops the ledger and
# checks that every id it saw acknowledged is in the new primary's table.
#
# It prints, per switchover: the ledger's gap (the last acknowledged commit on the old primary
# to the first on the new one), walmirrorctl's own figure (the old primary asked to stop to
# the new primary's first synchronous acknowledgement) and the steps of both agents with the
# time each took (from their logs' millisecond timestamps); then min / median / p90 / max of
# both figures and the median time of each step.
# Exit 0 when every switchover succeeded and no acknowledged id was lost, 1 otherwise, 77 when
# PostgreSQL 15 or the binaries are missing.  Everything it starts is stopped on exit; --keep
# keeps the temporary directory (agent logs, ledger file).
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
usage() {
    echo "usage: sh bench/switchover.sh BUILD_DIR [--count N] [--clients N] [--scale N] [--settle S] [--agent-env VAR=VALUE] [--keep]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
build=$(cd "$1" && pwd) || usage
shift
count=10 clients=4 scale=10 settle=3 agent_env="" keep=0
while [ $# -gt 0 ]; do
    case $1 in
    --count) [ $# -ge 2 ] || usage; count=$2; shift ;;
    --clients) [ $# -ge 2 ] || usage; clients=$2; shift ;;
    --scale) [ $# -ge 2 ] || usage; scale=$2; shift ;;
    --settle) [ $# -ge 2 ] || usage; settle=$2; shift ;;
    --agent-env) [ $# -ge 2 ] || usage; agent_env="$agent_env $2"; shift ;;
    --keep) keep=1 ;;
    *) usage ;;
    esac
    shift
done
for v in "$count" "$clients" "$scale"; do
    case $v in '' | *[!0-9]* | 0) echo "switchover: $v is not a positive number" >&2; usage ;; esac
done
agent_bin=$build/agent/walmirror-agent
ctl_bin=$build/tools/walmirrorctl
ledger_bin=$build/bench/wm-ledger
skip() { echo "switchover: skipped: $*" >&2; exit 77; }
[ -x /usr/lib/postgresql/15/bin/initdb ] || skip "PostgreSQL 15 is not installed"
for b in "$agent_bin" "$ctl_bin" "$ledger_bin"; do [ -x "$b" ] || skip "no $b (build it first)"; done
if [ "$(id -u)" -ne 0 ] && [ "$(id -un)" != postgres ]; then skip "run as root or as postgres"; fi

WM_TMP=$(mktemp -d "${TMPDIR:-/tmp}/wm-switchover-XXXXXX")
chmod 755 "$WM_TMP"
agents="" loadpid="" ledgerpid=""
. "$src/bench/lib.sh"
cleanup() {
    trap - EXIT INT TERM
    [ -n "$loadpid" ] && kill "$loadpid" 2>/dev/null || true
    [ -n "$ledgerpid" ] && kill "$ledgerpid" 2>/dev/null || true
    pkill -f "wm-ledger .*--out $WM_TMP/ledger.acked" 2>/dev/null || true
    pkill -f "pgbench.*$WM_TMP" 2>/dev/null || true
    pairs_down >/dev/null 2>&1
    if [ "$keep" = 1 ]; then echo "switchover: kept $WM_TMP" >&2; else rm -rf "$WM_TMP"; fi
}
trap cleanup EXIT
trap 'echo "switchover: interrupted" >&2; exit 130' INT TERM

if [ -n "$agent_env" ]; then
    mkdir -p "$WM_TMP/bin"
    printf '#!/bin/sh\nexec env %s %s "$@"\n' "$agent_env" "$agent_bin" >"$WM_TMP/bin/walmirror-agent"
    chmod 755 "$WM_TMP/bin" "$WM_TMP/bin/walmirror-agent"
    agent_bin=$WM_TMP/bin/walmirror-agent
fi

echo "switchover: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "switchover: $count switchovers; load pgbench -c $clients at synchronous_commit = on, scale $scale, plus the ledger; agent environment:${agent_env:- none}"
pair_up "$agent_bin" "$scale" >"$WM_TMP/pair_up.log" 2>&1 || { cat "$WM_TMP/pair_up.log" >&2; exit 1; }
ctl() { "$ctl_bin" --url "http://127.0.0.1:$ha" --url "http://127.0.0.1:$hb" "$@"; }
pg_psql 127.0.0.1 "$pga" "CREATE TABLE ledger (id int PRIMARY KEY, at timestamptz)" >/dev/null
multi="host=127.0.0.1,127.0.0.1 port=$pga,$pgb user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=2"
touch "$WM_TMP/ledger.acked" "$WM_TMP/load.log"
chown postgres: "$WM_TMP/ledger.acked" "$WM_TMP/load.log" 2>/dev/null || true

# The load: pgbench ends when a switchover has ended all its sessions; start it again.
(
    while :; do
        as_postgres env PGOPTIONS='-c synchronous_commit=on' pgbench -n -c "$clients" -j 2 -T 3600 \
            "$multi application_name=load-$WM_TMP" >>"$WM_TMP/load.log" 2>&1 || true
        sleep 0.05
    done
) &
loadpid=$!
as_postgres "$ledger_bin" --conninfo "$multi options='-c synchronous_commit=on'" \
    --out "$WM_TMP/ledger.acked" 2>"$WM_TMP/ledger.log" &
ledgerpid=$!
sleep "$settle"

results=$WM_TMP/results
: >"$results"
failed=0
to=site-b
i=1
while [ "$i" -le "$count" ]; do
    t0=$(date +%s)
    while :; do
        rc=0
        ctl switchover --to "$to" >"$WM_TMP/so-$i.out" 2>&1 || rc=$?
        [ "$rc" -eq 0 ] && break
        # Refused by the preflight (the new standby not caught up yet, or not replaying):
        # nothing was touched; ask again.
        if grep -qE "is not replaying|bytes behind|link to .* is down|busy with" "$WM_TMP/so-$i.out" &&
            [ $(($(date +%s) - t0)) -lt 60 ]; then
            sleep 0.5
            continue
        fi
        break
    done
    ctl_s=$(sed -n 's/^write-unavailability: \([0-9.]*\) s$/\1/p' "$WM_TMP/so-$i.out")
    if [ "$rc" -ne 0 ] || [ -z "$ctl_s" ]; then
        echo "switchover: switchover $i to $to failed:" >&2
        sed 's/^/  /' "$WM_TMP/so-$i.out" >&2
        failed=1
        break
    fi
    echo "$i $to $ctl_s" >>"$results"
    echo "switchover $i to $to: walmirrorctl $ctl_s s" >&2
    [ "$to" = site-b ] && to=site-a || to=site-b
    i=$((i + 1))
    sleep "$settle"
done
# $! was the shell that runs as_postgres; the ledger itself is found by its output file.
pkill -f "wm-ledger .*--out $WM_TMP/ledger.acked" 2>/dev/null || true
wait "$ledgerpid" 2>/dev/null || true
ledgerpid=""
kill "$loadpid" 2>/dev/null || true
pkill -f "pgbench.*$WM_TMP" 2>/dev/null || true
loadpid=""

# Which site is the primary now: the one whose PostgreSQL is out of recovery.
if [ "$(pg_psql 127.0.0.1 "$pga" "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ]; then pport=$pga; else pport=$pgb; fi

# The ledger's gaps: where the acknowledging server changes.
awk '{ if (NR > 1 && $3 != host) printf "%.3f %.0f %.0f\n", ($2 - prev) / 1e6, prev, $2; prev = $2; host = $3 }' \
    "$WM_TMP/ledger.acked" >"$WM_TMP/gaps"
nacked=$(wc -l <"$WM_TMP/ledger.acked")
ids=$(awk '{printf "%s%s", (NR > 1 ? "," : ""), $1}' "$WM_TMP/ledger.acked")
missing=$(echo "SELECT count(*) FROM unnest('{$ids}'::int[]) i WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.id = i)" |
    as_postgres psql -h 127.0.0.1 -p "$pport" -U postgres -AtX postgres)

# The agents' steps: every "switchover:" line of both logs from shortly before each gap to
# shortly after, in time order.  A step of one agent lasts until that agent's next line; the
# old primary's agent's steps are named "old", the new one's "new".
steps_of() { # FROM_US TO_US: lines "MICROSECONDS SITE TEXT"
    map=""
    for d in $(cut -c1-10 "$WM_TMP/agent-a.log" "$WM_TMP/agent-b.log" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' | sort -u); do
        map="$map $d=$(date -u -d "$d" +%s)"
    done
    for s in a b; do
        sed -n "s/^\([0-9-]*\) \([0-9]*\):\([0-9]*\):\([0-9.]*\) UTC \[[0-9]*\] [A-Z]* [^:]*: switchover\(: \| done: \)\(.*\)$/\1 \2 \3 \4 $s \6/p" "$WM_TMP/agent-$s.log"
    done | awk -v map="$map" -v from="$1" -v to="$2" '
        BEGIN { n = split(map, kv, " "); for (i = 1; i <= n; i++) { split(kv[i], p, "="); mid[p[1]] = p[2] } }
        { us = (mid[$1] + $2 * 3600 + $3 * 60 + $4) * 1e6
          if (us < from - 2500000 || us > to + 2000000) next
          $1 = $2 = $3 = $4 = ""; sub(/^ +/, ""); printf "%.0f %s\n", us, $0 }' | sort -n
}
step_name() {
    case $1 in
    "WAL switch and CHECKPOINT"*) echo "old 1: WAL switch, CHECKPOINT (takes commits)" ;;
    "stopping the primary"*) echo "old 2: stop (shutdown checkpoint, final WAL)" ;;
    "the primary stopped at"*) echo "old 3: wait for the promotion" ;;
    "reading the control data"*) echo "old 4: pg_controldata" ;;
    "starting PostgreSQL as a standby"*) echo "old 5: pg_ctl start (as a standby)" ;;
    "standby running; waiting"*) echo "old 6: wait for SYNCED" ;;
    *"stops its primary; waiting"*) echo "new 1: wait for the final WAL" ;;
    "waiting for the standby to replay"*) echo "new 2: the standby replays to the end" ;;
    "the standby has replayed"*) echo "new 3: pg_ctl promote" ;;
    "promoted (epoch"*) echo "new 4: first synchronous ack" ;;
    *) echo "${1%%;*}" | cut -c1-40 ;;
    esac
}
: >"$WM_TMP/steps"
echo
echo "per switchover, seconds; then each agent's steps (old / new primary's agent), each until"
echo "that agent's next step, and when it began relative to the stop:"
n=0
while read -r i to ctl_s; do
    n=$((n + 1))
    line=$(sed -n "${n}p" "$WM_TMP/gaps")
    gap=${line%% *}
    rest=${line#* }
    from_us=${rest%% *} to_us=${rest#* }
    printf '  %2d to %s: ledger gap %s, walmirrorctl %s\n' "$i" "$to" "${gap:--}" "$ctl_s"
    [ -n "$line" ] || continue
    steps_of "$from_us" "$to_us" >"$WM_TMP/steps-$i"
    stop_us=$(awk '/ stopping the primary/ { print $1; exit }' "$WM_TMP/steps-$i")
    awk -v stop="${stop_us:-0}" '{ us[NR] = $1; site[NR] = $2; $1 = $2 = ""; text[NR] = substr($0, 3) }
        END { for (j = 1; j <= NR; j++) {
            if (text[j] ~ /write-unavailability/) continue
            end = 0
            for (k = j + 1; k <= NR; k++) if (site[k] == site[j]) { end = us[k]; break }
            if (end == 0) continue
            printf "%.3f|%+.3f|%s\n", (end - us[j]) / 1e6, (us[j] - stop) / 1e6, text[j] } }' \
        "$WM_TMP/steps-$i" | while IFS='|' read -r d at text; do
        name=$(step_name "$text")
        printf '       %-46s %s  (at %s)\n' "$name" "$d" "$at"
        echo "$d|$name" >>"$WM_TMP/steps"
    done
done <"$results"

stats() { # FILE: min / median / p90 / max of a one-column file
    sort -n "$1" >"$1.sorted"
    echo "$(pctl "$1.sorted" 0) / $(pctl "$1.sorted" 50) / $(pctl "$1.sorted" 90) / $(pctl "$1.sorted" 100)"
}
awk '{print $1}' "$WM_TMP/gaps" >"$WM_TMP/gap.col"
awk '{print $3}' "$results" >"$WM_TMP/ctl.col"
echo
echo "write-unavailability over $(wc -l <"$results") switchovers, min / median / p90 / max, seconds:"
echo "  ledger (last ack on the old primary to the first on the new): $(stats "$WM_TMP/gap.col")"
echo "  walmirrorctl (stop asked to the first synchronous ack):        $(stats "$WM_TMP/ctl.col")"
echo "median time of each step, seconds:"
awk -F'|' '{ print $2 }' "$WM_TMP/steps" | sort -u | while IFS= read -r name; do
    awk -F'|' -v n="$name" '$2 == n { print $1 }' "$WM_TMP/steps" | sort -n >"$WM_TMP/step.col"
    printf '  %-46s %s (max %s)\n' "$name" "$(pctl "$WM_TMP/step.col" 50)" "$(pctl "$WM_TMP/step.col" 100)"
done
echo "ledger: $nacked acknowledged commits, $missing of them missing on the primary (port $pport)"
[ "$(wc -l <"$WM_TMP/gaps")" -eq "$(wc -l <"$results")" ] ||
    echo "switchover: the ledger saw $(wc -l <"$WM_TMP/gaps") changes of primary for $(wc -l <"$results") switchovers" >&2
[ "$missing" = 0 ] || failed=1
exit "$failed"
