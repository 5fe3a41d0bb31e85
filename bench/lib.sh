# bench/lib.sh - shell helpers shared by the demo, the benchmarks and their scripts.
# Source it; it needs WM_TMP (a scratch directory) set by the caller.

PGBIN=/usr/lib/postgresql/15/bin

# as_postgres CMD...: runs a command as the postgres user (PostgreSQL refuses root).  setpriv
# execs the command itself, so `as_postgres ... &` leaves the command's own pid in $! and a
# signal sent to it reaches the program (runuser would keep a parent that does not pass it on).
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- \
            env PATH="$PGBIN:$PATH" "$@"
    else
        env PATH="$PGBIN:$PATH" "$@"
    fi
}

# free_port: a TCP port on 127.0.0.1 free right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        shuf -i 20000-60000 -n 1
}

# cpu_ticks PID...: utime + stime of the processes (every thread, the ones that have ended
# included), in clock ticks; a process that has gone counts 0.
cpu_ticks() {
    t=0
    for p in "$@"; do
        v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# pctl FILE P: the P-th percentile (nearest rank) of a sorted one-column file; "" when empty.
pctl() { awk -v p="$2" '{v[NR] = $1} END {if (NR == 0) exit; i = int(NR * p / 100 + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print v[i]}' "$1"; }

# ctxsw_sample PID...: one line per thread of the processes: "PID TID SWITCHES", voluntary
# plus involuntary context switches of that thread (/proc/PID/task/TID/status).
ctxsw_sample() {
    for p in "$@"; do
        grep -H ctxt_switches /proc/"$p"/task/*/status 2>/dev/null || true
    done | awk -F'[/:]' '{ s[$3 " " $5] += $NF } END { for (k in s) print k, s[k] }'
}

# ctxsw_sampler FILE INTERVAL PID...: appends "SAMPLE PID TID SWITCHES" lines to FILE every
# INTERVAL seconds until killed (run it in the background).  A thread's switches die with it
# (only getrusage in the process itself keeps them), so short-lived threads such as io_uring's
# workers are caught by sampling often; ctxsw_delta sums what each thread did.
ctxsw_sampler() {
    f=$1 iv=$2 n=0
    shift 2
    while :; do
        ctxsw_sample "$@" | sed "s/^/$n /" >>"$f"
        n=$((n + 1))
        sleep "$iv"
    done
}

# ctxsw_delta FILE PID: the context switches PID's threads made between the first and the
# last sample of FILE: per thread, its last count less its first (0 for a thread born after
# the first sample).
ctxsw_delta() {
    awk -v p="$2" '$2 == p { if (!($3 in first)) first[$3] = ($1 == 0 ? $4 : 0); last[$3] = $4 }
        END { for (t in last) s += last[t] - first[t]; print s + 0 }' "$1"
}

# pg_make DIR PORT: initdb a cluster in DIR/data listening on 127.0.0.1:PORT, socket in DIR.
pg_make() {
    dir=$1 port=$2
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_postgres initdb -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1
    cat >>"$dir/data/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = replica
wal_log_hints = on
max_wal_size = 4GB
min_wal_size = 1GB
wal_keep_size = 4GB
checkpoint_timeout = 1h
CONF
}

pg_start() { as_postgres pg_ctl -D "$1/data" -l "$1/server.log" -w -t 60 start >/dev/null; }
pg_stop() { as_postgres pg_ctl -D "$1/data" -m "${2:-fast}" -w -t 60 stop >/dev/null 2>&1 || true; }

# pg_psql DIR PORT SQL: one statement, unaligned output.
pg_psql() { as_postgres psql -h "$1" -p "$2" -U postgres -AtX -c "$3" postgres; }

# make_wal OUTDIR MB: generates at least MB megabytes of real WAL with pgbench (initial load
# and a TPC-B-like run) on a scratch cluster and copies the complete segments to OUTDIR.
make_wal() {
    out=$1 mb=$2
    dir="$WM_TMP/walgen" port=$(free_port)
    pg_make "$dir" "$port"
    pg_start "$dir"
    # Throughput of WAL generation, not durability, matters here.
    pg_psql "$dir" "$port" "ALTER SYSTEM SET synchronous_commit = off" >/dev/null
    pg_psql "$dir" "$port" "SELECT pg_reload_conf()" >/dev/null
    as_postgres pgbench -h "$dir" -p "$port" -U postgres -i -q -s 5 postgres >"$dir/pgbench.log" 2>&1
    while :; do
        used=$(pg_psql "$dir" "$port" "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint / 1048576")
        [ "$used" -ge "$((mb + 16))" ] && break
        as_postgres pgbench -h "$dir" -p "$port" -U postgres -n -c 4 -j 2 -t 5000 postgres >>"$dir/pgbench.log" 2>&1
    done
    last=$(pg_psql "$dir" "$port" "SELECT pg_walfile_name(pg_switch_wal())")
    pg_stop "$dir"
    mkdir -p "$out"
    for f in $(ls "$dir/data/pg_wal" | grep -E '^[0-9A-F]{24}$'); do
        if [ ! "$f" \> "$last" ]; then cp "$dir/data/pg_wal/$f" "$out/"; fi
    done
    rm -rf "$dir"
}

# pair_up AGENT SCALE: a walmirror pair on loopback under $WM_TMP, as docs/setup.md describes:
# site A's primary (pgbench -i -s SCALE), site B's standby from `walmirror-agent init-standby`,
# both agents, and A's synchronous_standby_names naming the source.  Sets pga, pgb (ports),
# ha, hb (the agents' HTTP ports) and appends the agents' pids to $agents.
# To put a link emulator between the agents, set pair_lb (B's agent port) and pair_peer_a (the
# port A's agent dials instead of B's) before calling; by default A dials B directly.
pair_up() {
    agent_bin=$1 scale=$2
    pga=$(free_port) pgb=$(free_port) la=$(free_port) lb=${pair_lb:-$(free_port)}
    wa=$(free_port) wb=$(free_port) ha=$(free_port) hb=$(free_port)
    sh "$src/conf/gen-certs.sh" "$WM_TMP/certs" site-a site-b >/dev/null
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$WM_TMP/certs"
    _pair_conf site-a site-b "$la" "${pair_peer_a:-$lb}" "$pga" "$wa" "$ha"
    _pair_conf site-b site-a "$lb" "$la" "$pgb" "$wb" "$hb"
    pg_make "$WM_TMP/site-a" "$pga"
    pg_start "$WM_TMP/site-a"
    as_postgres pgbench -h 127.0.0.1 -p "$pga" -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
    mkdir -p "$WM_TMP/site-b"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$WM_TMP/site-b"
    as_postgres "$agent_bin" -c "$WM_TMP/site-b.conf" init-standby \
        --primary "host=127.0.0.1 port=$pga user=postgres dbname=postgres" >"$WM_TMP/init-standby.log" 2>&1 ||
        { cat "$WM_TMP/init-standby.log"; return 1; }
    echo "unix_socket_directories = '$WM_TMP/site-b'" >>"$WM_TMP/site-b/data/postgresql.auto.conf"
    # B, once promoted by a switchover, waits for its own mirror as A does.
    echo "synchronous_standby_names = 'walmirror'" >>"$WM_TMP/site-b/data/postgresql.auto.conf"
    as_postgres "$agent_bin" -c "$WM_TMP/site-b.conf" >"$WM_TMP/agent-b.log" 2>&1 &
    agents="$agents $!"
    pg_start "$WM_TMP/site-b"
    as_postgres "$agent_bin" -c "$WM_TMP/site-a.conf" >"$WM_TMP/agent-a.log" 2>&1 &
    agents="$agents $!"
    wait_sync "$pga" walmirror
}

# native_pair_up SCALE: the same with PostgreSQL's own streaming replication (a synchronous
# standby named "native" made with pg_basebackup -R).  Sets pgna, pgnb.
# To put a link emulator in front of the primary, set native_pa (the primary's port) and
# native_link (the port the standby's primary_conninfo names instead) before calling.
native_pair_up() {
    scale=$1
    pgna=${native_pa:-$(free_port)} pgnb=$(free_port)
    pg_make "$WM_TMP/native-a" "$pgna"
    pg_start "$WM_TMP/native-a"
    as_postgres pgbench -h 127.0.0.1 -p "$pgna" -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
    mkdir -p "$WM_TMP/native-b"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$WM_TMP/native-b"
    as_postgres pg_basebackup -h 127.0.0.1 -p "$pgna" -U postgres -D "$WM_TMP/native-b/data" \
        -X stream -c fast -R -d "application_name=native" >/dev/null 2>&1
    cat >>"$WM_TMP/native-b/data/postgresql.auto.conf" <<CONF
port = $pgnb
unix_socket_directories = '$WM_TMP/native-b'
CONF
    [ -n "${native_link:-}" ] && echo "primary_conninfo = 'host=127.0.0.1 port=$native_link user=postgres application_name=native'" \
        >>"$WM_TMP/native-b/data/postgresql.auto.conf"
    pg_start "$WM_TMP/native-b"
    wait_sync "$pgna" native
}

# wait_sync PORT NAME: waits until A's pg_stat_replication shows NAME streaming, then makes it
# the synchronous standby and waits until it is.
wait_sync() {
    for _ in $(seq 150); do
        [ "$(pg_psql 127.0.0.1 "$1" "SELECT count(*) FROM pg_stat_replication WHERE application_name = '$2' AND state = 'streaming'")" = 1 ] && break
        sleep 0.2
    done
    pg_psql 127.0.0.1 "$1" "ALTER SYSTEM SET synchronous_standby_names = '\"$2\"'" >/dev/null
    pg_psql 127.0.0.1 "$1" "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 150); do
        [ "$(pg_psql 127.0.0.1 "$1" "SELECT sync_state FROM pg_stat_replication WHERE application_name = '$2'")" = sync ] && return 0
        sleep 0.2
    done
    echo "wait_sync: $2 did not become synchronous on port $1" >&2
    return 1
}

# pairs_down: stops the agents and every cluster under $WM_TMP.
pairs_down() {
    for p in $agents; do kill "$p" 2>/dev/null || true; done
    # Any agent of this run that a wrapper kept from the signal.
    pkill -f "walmirror-agent -c $WM_TMP/" 2>/dev/null || true
    sleep 0.5
    for d in "$WM_TMP"/*/; do
        [ -f "$d/data/postmaster.pid" ] && pg_stop "${d%/}" immediate
    done
    agents=""
}

_pair_conf() {
    cat >"$WM_TMP/$1.conf" <<EOF2
node_name = $1
listen = 127.0.0.1:$3
peer = $2@127.0.0.1:$4
tls_ca = '$WM_TMP/certs/ca.crt'
tls_cert = '$WM_TMP/certs/$1.crt'
tls_key = '$WM_TMP/certs/$1.key'
pg_conninfo = 'host=127.0.0.1 port=$5 user=postgres dbname=postgres'
pgdata = '$WM_TMP/$1/data'
spool_dir = '$WM_TMP/$1/spool'
wal_listen = 127.0.0.1:$6
http_listen = 127.0.0.1:$7
# Native synchronous replication waits for its standby for ever: so do the commits measured
# here (a primary running exposed would stop measuring the mirror).
availability_mode = maximum_protection
EOF2
}
