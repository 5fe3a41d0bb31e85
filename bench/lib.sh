# bench/lib.sh - shell helpers shared by the demo, the benchmarks and their scripts.
# Source it; it needs WM_TMP (a scratch directory) set by the caller.

PGBIN=/usr/lib/postgresql/15/bin

# as_postgres CMD...: runs a command as the postgres user (PostgreSQL refuses root).
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"
    else
        env PATH="$PGBIN:$PATH" "$@"
    fi
}

# free_port: a TCP port on 127.0.0.1 free right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        shuf -i 20000-60000 -n 1
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
