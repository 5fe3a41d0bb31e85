#!/bin/sh
# walmirror demo (the README's main job): installs the dependencies, builds, and stands up a
# two-site pair on loopback the way docs/setup.md describes - site A's PostgreSQL 15 primary
# and agent, site B's standby (made with `walmirror-agent init-standby`) and agent, TLS 1.3
# between the agents - then runs pgbench at synchronous_commit = on and shows the mirror's
# state and lag from A's pg_stat_replication while it runs.  Everything runs as the postgres
# user in a temporary directory and is stopped at the end.
#   sh tools/demo.sh                  (as root on a fresh Debian 12 machine)
# Then it runs a planned switchover to site B and back with walmirrorctl, printing the
# measured write-unavailability of each, schedules a monthly maintenance window on both sites
# and shows it with the status page's summary.
#   WALMIRROR_DEMO_SECONDS=60         a longer pgbench run (default 20)
#   WALMIRROR_BINDIR=/usr/bin         the installed programs (the Debian package's) instead of
#                                     a build of this tree
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${WALMIRROR_BUILD_DIR:-$src/build}
secs=${WALMIRROR_DEMO_SECONDS:-20}

if [ "${WALMIRROR_SKIP_DEPS:-0}" != 1 ]; then sh "$src/tools/install-deps.sh"; fi
if [ -n "${WALMIRROR_BINDIR:-}" ]; then
    agent="$WALMIRROR_BINDIR/walmirror-agent"
    ctl_bin="$WALMIRROR_BINDIR/walmirrorctl"
    echo "demo: walmirror installed in $WALMIRROR_BINDIR ($("$agent" --version))"
else
    cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$build" -j"$(nproc)" >/dev/null
    chmod o+rx "$build" 2>/dev/null || true
    agent="$build/agent/walmirror-agent"
    ctl_bin="$build/tools/walmirrorctl"
    echo "demo: built walmirror in $build"
fi

WM_TMP=$(mktemp -d /tmp/walmirror-demo-XXXXXX)
chmod 755 "$WM_TMP"
. "$src/bench/lib.sh"
agents=""
cleanup() {
    pairs_down
    if [ "${WALMIRROR_DEMO_KEEP:-0}" = 1 ]; then echo "demo: kept $WM_TMP"; else rm -rf "$WM_TMP"; fi
}
trap cleanup EXIT INT TERM

echo "demo: site A: PostgreSQL 15 primary; site B: standby from a base backup of A"
echo "      (walmirror-agent init-standby); agents between them over TLS 1.3 on loopback"
pair_up "$agent" 10
echo "demo: pair up: A on 127.0.0.1:$pga, B on 127.0.0.1:$pgb; synchronous_standby_names = 'walmirror'"

status() {
    pg_psql 127.0.0.1 "$pga" "SELECT format('%-9s %-9s %-5s sent %-11s write %-11s flush %-11s replay %-11s lag write %s flush %s replay %s',
        application_name, state, sync_state, sent_lsn, write_lsn, flush_lsn, replay_lsn,
        coalesce(write_lag::text, '-'), coalesce(flush_lag::text, '-'), coalesce(replay_lag::text, '-'))
        FROM pg_stat_replication WHERE application_name = 'walmirror'"
}
echo "demo: mirror state (from A's pg_stat_replication):"
echo "  $(status)"

echo "demo: pgbench -c 4 -T $secs at synchronous_commit = on (every commit durable at B first)"
as_postgres env PGOPTIONS='-c synchronous_commit=on' pgbench -h 127.0.0.1 -p "$pga" -U postgres \
    -n -c 4 -j 2 -T "$secs" postgres >"$WM_TMP/pgbench.log" 2>&1 &
bench=$!
while kill -0 "$bench" 2>/dev/null; do
    sleep 2
    echo "  $(status)"
done
wait "$bench" || { cat "$WM_TMP/pgbench.log"; exit 1; }
grep -E "^(number of transactions actually processed|latency average|tps)" "$WM_TMP/pgbench.log" | sed 's/^/  pgbench: /'

target=$(pg_psql 127.0.0.1 "$pga" "SELECT pg_current_wal_lsn()")
for _ in $(seq 100); do
    [ "$(pg_psql "$WM_TMP/site-b" "$pgb" "SELECT pg_last_wal_replay_lsn() >= '$target'")" = t ] && break
    sleep 0.1
done
ca=$(pg_psql 127.0.0.1 "$pga" "SELECT count(*) || ' rows, sum ' || sum(abalance) FROM pgbench_accounts")
cb=$(pg_psql "$WM_TMP/site-b" "$pgb" "SELECT count(*) || ' rows, sum ' || sum(abalance) FROM pgbench_accounts")
echo "demo: pgbench_accounts on A: $ca"
echo "demo: pgbench_accounts on B: $cb"
[ "$ca" = "$cb" ] || { echo "demo: A and B differ!" >&2; exit 1; }
echo "demo: final state, from A's pg_stat_replication:"
echo "  $(status)"
echo "demo: walmirrorctl status (both agents' HTTP APIs):"
"$ctl_bin" --url "http://127.0.0.1:$ha" --url "http://127.0.0.1:$hb" status | sed 's/^/  /'
echo "demo: B's spool: $(ls "$WM_TMP/site-b/spool" | grep -cE '^[0-9A-F]{24}') complete segments"

# A planned switchover and back, as docs/operations.md describes.
ctl() { "$ctl_bin" --url "http://127.0.0.1:$ha" --url "http://127.0.0.1:$hb" "$@"; }
echo "demo: planned switchover to site B (walmirrorctl switchover), then back to A"
ctl switchover --to site-b | sed 's/^/  /'
ctl status | sed 's/^/  /'
ctl switchover --to site-a | sed 's/^/  /'
ctl status | sed 's/^/  /'
echo "demo: a monthly maintenance window (last Saturday, 22:00-02:00 America/Denver) on both sites"
ctl maintenance add --rrule 'FREQ=MONTHLY;BYDAY=-1SA' --start 22:00 --duration 4h \
    --tz America/Denver --class window | sed 's/^/  /'
ctl maintenance list | sed 's/^/  /'
sleep 1.5
echo "demo: the status page is http://127.0.0.1:$ha/ while the pair runs; its summary:"
curl -s "http://127.0.0.1:$ha/api/v2/status.json" | sed 's/^/  /' || echo "  (could not read it)"
ctl status | sed 's/^/  /' # the MAINT column names the next window
echo "demo: agent logs in $WM_TMP (WALMIRROR_DEMO_KEEP=1 keeps them)"
