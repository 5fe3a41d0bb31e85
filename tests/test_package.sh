#!/bin/sh
# test_package.sh SRC WORKDIR - the Debian package as a DBA meets it, on this machine:
#   1. builds it from SRC with tools/build-deb.sh (dpkg-buildpackage) into WORKDIR;
#   2. checks the package: its dependencies (the shared libraries' packages, postgresql-common;
#      PostgreSQL 15 only recommended), its files (no live configuration in /etc), and lintian;
#   3. installs it with dpkg -i and checks the result: programs, man pages, examples,
#      /var/lib/walmirror owned by postgres, the systemd units (`systemd-analyze verify`, and
#      `systemd-analyze security` within a bound);
#   4. as the DBA would: certificates made with the packaged gen-certs.sh in /etc/walmirror,
#      the packaged example configurations validated there unchanged, a witness run from
#      /etc/walmirror (state_dir /var/lib/walmirror) and queried with walmirrorctl, a spool
#      directory made by postgres in /var/lib/walmirror, an agent instance enabled;
#   5. runs the installed programs against a real pair: tools/demo.sh with
#      WALMIRROR_BINDIR=/usr/bin (PostgreSQL 15 primary and standby, pgbench at
#      synchronous_commit = on, two switchovers, a maintenance window);
#   6. removes, then purges the package, and checks that nothing it brought is left: the only
#      new paths named *walmirror* on the machine are the DBA's own files of step 4.
# Needs root (dpkg -i; exit 77 otherwise) and a machine without a walmirror package installed.
# Whatever happens, the package is purged and the files of step 4 removed at the end.
set -eu
src=$1
work=$2
if [ "$(id -u)" -ne 0 ]; then
    echo "test_package: needs root (dpkg -i, the postgres user); skipped"
    exit 77
fi
state=$(dpkg-query -W -f='${db:Status-Status}' walmirror 2>/dev/null || true)
if [ -n "$state" ] && [ "$state" != not-installed ]; then
    echo "test_package: a walmirror package is on this machine already ($state): this test installs and purges its own; remove it first (dpkg --purge walmirror)" >&2
    exit 1
fi

for dir in /etc/walmirror /var/lib/walmirror; do
    if [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
        echo "test_package: $dir holds files already: this test writes a DBA's files there and removes them at the end; move them away first" >&2
        exit 1
    fi
done
rm -rf "$work"
mkdir -p "$work"
WM_TMP=$(mktemp -d /tmp/wm-package-XXXXXX)
chmod 755 "$WM_TMP"
. "$src/bench/lib.sh"
witness=""
enabled=0
fail() {
    echo "test_package: FAILED: $*" >&2
    exit 1
}
step() { echo "test_package: $*"; }
# The paths this test may add: the two directories (when new) and the DBA's files in them.
etc_new=1 var_new=1
[ -e /etc/walmirror ] && etc_new=0
[ -e /var/lib/walmirror ] && var_new=0
cat_new=1
ls /var/cache/man/cat?/walmirror* >/dev/null 2>&1 && cat_new=0
dba_files="$WM_TMP/dba-files"
: >"$dba_files"
cleanup() {
    rc=$?
    [ -n "$witness" ] && kill "$witness" 2>/dev/null && wait "$witness" 2>/dev/null
    if [ "$(dpkg-query -W -f='${db:Status-Status}' walmirror 2>/dev/null || true)" != not-installed ]; then
        dpkg --purge walmirror >/dev/null 2>&1 || true
    fi
    while read -r f; do rm -rf "$f"; done <"$dba_files"
    # The instance this test enabled, should the purge have left its link.
    if [ "$enabled" = 1 ]; then
        rm -f /etc/systemd/system/multi-user.target.wants/walmirror-agent@site-a.service
    fi
    [ "$etc_new" = 1 ] && rm -rf /etc/walmirror
    # The formatted pages man-db cached when systemd-analyze verify read the man pages.
    [ "$cat_new" = 1 ] && rm -f /var/cache/man/cat1/walmirrorctl.1.gz \
        /var/cache/man/cat5/walmirror.conf.5.gz /var/cache/man/cat8/walmirror-agent.8.gz
    [ "$var_new" = 1 ] && rm -rf /var/lib/walmirror
    if [ "${WALMIRROR_KEEP_TMP:-0}" = 1 ]; then echo "test_package: kept $WM_TMP"; else rm -rf "$WM_TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Every path named *walmirror* outside the working directories, and everything in the two
# directories the package makes.  /var/cache/man is left out: man-db caches formatted pages
# there when a page is read (systemd-analyze verify reads them) and expires them itself.
snapshot() {
    find /etc /usr /lib /var /run /opt /srv -xdev \( -path /var/cache/man -o -path /var/tmp -o \
        -path /var/lib/postgresql \) -prune -o -name '*walmirror*' -print 2>/dev/null
    find /etc/walmirror /var/lib/walmirror 2>/dev/null
}
snapshot | sort -u >"$WM_TMP/before"

# --- 1. build -----------------------------------------------------------------------------
t0=$(date +%s)
sh "$src/tools/build-deb.sh" "$work" >"$work/build-deb.log" 2>&1 || {
    cat "$work/build-deb.log"
    fail "tools/build-deb.sh"
}
deb=$(ls "$work"/walmirror_*.deb)
step "built $(basename "$deb") in $(($(date +%s) - t0)) s"

# --- 2. the package -------------------------------------------------------------------------
depends=$(dpkg-deb -f "$deb" Depends)
recommends=$(dpkg-deb -f "$deb" Recommends)
step "Depends: $depends"
step "Recommends: $recommends"
# dh_shlibdeps found the package of each library the programs link.
for lib in libc6 libpq5 liburing2 liblz4-1 libxxhash0 libssl3 libmicrohttpd12 libjansson4 libcurl4 \
    postgresql-common; do
    echo "$depends" | grep -qE "(^|, )$lib( |,|$)" || fail "Depends lacks $lib: $depends"
done
echo "$depends" | grep -q 'postgresql-15' && fail "postgresql-15 must be recommended, not required: $depends"
echo "$recommends" | grep -qE '(^|, )postgresql-15( |,|$)' || fail "Recommends lacks postgresql-15: $recommends"
dpkg-deb -c "$deb" | awk '{ print $NF }' | sed 's|^\./|/|; s|/$||' | grep -v '^$' | sort >"$WM_TMP/contents"
for f in /usr/bin/walmirror-agent /usr/bin/walmirrorctl \
    /lib/systemd/system/walmirror-agent@.service /lib/systemd/system/walmirror-witness@.service \
    /usr/share/man/man1/walmirrorctl.1.gz /usr/share/man/man5/walmirror.conf.5.gz \
    /usr/share/man/man8/walmirror-agent.8.gz /usr/share/doc/walmirror/copyright \
    /usr/share/doc/walmirror/examples/site-a.conf /usr/share/doc/walmirror/examples/site-b.conf \
    /usr/share/doc/walmirror/examples/witness.conf /usr/share/doc/walmirror/examples/gen-certs.sh \
    /usr/share/doc/walmirror/examples/walmirror-rules.yml /etc/walmirror /var/lib/walmirror; do
    grep -qx "$f" "$WM_TMP/contents" || fail "the package lacks $f"
done
# /etc/walmirror is an empty directory for the DBA's files: no configuration is installed live.
grep '^/etc/.' "$WM_TMP/contents" | grep -vx /etc/walmirror >"$WM_TMP/etc" || true
[ -s "$WM_TMP/etc" ] && fail "the package installs into /etc: $(cat "$WM_TMP/etc")"
grep -vE '^/(usr/bin|usr/share/doc/walmirror|usr/share/man|lib/systemd/system|etc/walmirror|var/lib/walmirror)(/|$)' \
    "$WM_TMP/contents" | grep -vxE '/(usr|usr/share|usr/share/doc|lib|lib/systemd|etc|var|var/lib)?' >"$WM_TMP/stray" || true
[ -s "$WM_TMP/stray" ] && fail "unexpected paths in the package: $(cat "$WM_TMP/stray")"

# Debian's own checks of a package against its policy: no error, no warning.
lintian --fail-on error,warning "$deb" >"$WM_TMP/lintian.log" 2>&1 || {
    cat "$WM_TMP/lintian.log"
    fail "lintian"
}
step "lintian: no error, no warning"

# --- 3. install -----------------------------------------------------------------------------
dpkg -i "$deb" >"$WM_TMP/dpkg-i.log" 2>&1 || {
    cat "$WM_TMP/dpkg-i.log"
    fail "dpkg -i"
}
step "installed: $(/usr/bin/walmirror-agent --version), $(/usr/bin/walmirrorctl --version)"
[ "$(/usr/bin/walmirror-agent --version)" = "walmirror-agent $(dpkg-deb -f "$deb" Version)" ] ||
    fail "walmirror-agent --version does not name the package's version"
ldd /usr/bin/walmirror-agent /usr/bin/walmirrorctl | grep -q 'not found' && fail "a library is missing: $(ldd /usr/bin/walmirror-agent /usr/bin/walmirrorctl)"
[ "$(stat -c '%U:%G %a' /var/lib/walmirror)" = "postgres:postgres 750" ] ||
    fail "/var/lib/walmirror is $(stat -c '%U:%G %a' /var/lib/walmirror), not postgres:postgres 750"
for page in 1:walmirrorctl 5:walmirror.conf 8:walmirror-agent; do
    man -w "${page%%:*}" "${page#*:}" >/dev/null || fail "man ${page%%:*} ${page#*:} is not installed"
done
# The units as systemd reads them: directives, the programs they run, their man pages.  This
# machine's systemd is not PID 1: verify and security work on the unit files offline.
systemd-analyze verify walmirror-agent@site-a.service walmirror-witness@witness.service \
    >"$WM_TMP/verify.log" 2>&1 || true
[ -s "$WM_TMP/verify.log" ] && fail "systemd-analyze verify: $(cat "$WM_TMP/verify.log")"
for unit in walmirror-agent@.service walmirror-witness@.service; do
    exposure=$(systemd-analyze security --offline=yes "/lib/systemd/system/$unit" 2>&1 |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    [ -n "$exposure" ] || fail "systemd-analyze security gave no exposure level for $unit"
    step "$unit: systemd-analyze verify clean, exposure $exposure"
    # 3.2 and 3.0 when written; the bound catches a hardening line lost.
    awk -v e="$exposure" 'BEGIN { exit !(e <= 3.5) }' || fail "$unit: exposure $exposure is above 3.5"
done
grep -q '^ExecStart=/usr/bin/walmirror-agent -c /etc/walmirror/%i.conf$' \
    /lib/systemd/system/walmirror-agent@.service || fail "the agent's unit does not run /usr/bin/walmirror-agent"

# --- 4. the DBA's files -----------------------------------------------------------------------
examples=/usr/share/doc/walmirror/examples
sh "$examples/gen-certs.sh" /etc/walmirror site-a site-b witness >"$WM_TMP/gen-certs.log" 2>&1 ||
    fail "gen-certs.sh: $(cat "$WM_TMP/gen-certs.log")"
chown postgres: /etc/walmirror/*.key
cp "$examples/site-a.conf" "$examples/site-b.conf" /etc/walmirror/
port=$(free_port)
http=$(free_port)
sed -e "s/^listen = .*/listen = 127.0.0.1:$port/" \
    -e "s/^sites = .*/sites = 'site-a@127.0.0.1:$(free_port), site-b@127.0.0.1:$(free_port)'/" \
    -e "s/^#http_listen = .*/http_listen = 127.0.0.1:$http/" "$examples/witness.conf" >/etc/walmirror/witness.conf
find /etc/walmirror -mindepth 1 >>"$dba_files"
for conf in site-a site-b witness; do
    as_postgres /usr/bin/walmirror-agent -c "/etc/walmirror/$conf.conf" --check-config >"$WM_TMP/check.log" 2>&1 ||
        fail "walmirror-agent --check-config /etc/walmirror/$conf.conf: $(cat "$WM_TMP/check.log")"
done
# setpriv execs the agent, so that $! is the agent's pid (a shell function run with & would
# leave the pid of a subshell there, which a signal ends without reaching the agent).
setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- \
    /usr/bin/walmirror-agent -c /etc/walmirror/witness.conf >"$WM_TMP/witness.log" 2>&1 &
witness=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$http/metrics" >"$WM_TMP/metrics" 2>/dev/null && break
    sleep 0.1
done
grep -qx 'walmirror_role{role="witness"} 1' "$WM_TMP/metrics" ||
    fail "the witness from /etc/walmirror/witness.conf does not serve its metrics: $(cat "$WM_TMP/witness.log")"
/usr/bin/walmirrorctl -c /etc/walmirror/witness.conf status >"$WM_TMP/ctl.log" 2>&1 ||
    fail "walmirrorctl -c /etc/walmirror/witness.conf status: $(cat "$WM_TMP/ctl.log")"
grep -q '^witness ' "$WM_TMP/ctl.log" || fail "walmirrorctl status shows no witness row: $(cat "$WM_TMP/ctl.log")"
kill "$witness"
wait "$witness" || fail "the witness did not stop cleanly on SIGTERM: $(cat "$WM_TMP/witness.log")"
witness=""
# A site's spool, made by the agents' user in the state directory the package owns for it.
as_postgres mkdir /var/lib/walmirror/spool || fail "postgres cannot write in /var/lib/walmirror"
find /var/lib/walmirror -mindepth 1 >>"$dba_files"
[ -e /etc/systemd/system/multi-user.target.wants/walmirror-agent@site-a.service ] ||
    enabled=1
systemctl enable walmirror-agent@site-a.service >"$WM_TMP/enable.log" 2>&1 ||
    fail "systemctl enable walmirror-agent@site-a: $(cat "$WM_TMP/enable.log")"
step "the DBA's files: $(wc -l <"$dba_files") in /etc/walmirror and /var/lib/walmirror; a witness ran from them; walmirror-agent@site-a enabled"

# --- 5. a real pair with the installed programs -----------------------------------------------
t0=$(date +%s)
WALMIRROR_SKIP_DEPS=1 WALMIRROR_BINDIR=/usr/bin WALMIRROR_DEMO_SECONDS=3 sh "$src/tools/demo.sh" \
    >"$work/demo.log" 2>&1 || {
    cat "$work/demo.log"
    fail "tools/demo.sh with the installed programs"
}
for line in 'demo: walmirror installed in /usr/bin (walmirror-agent ' 'demo: pgbench_accounts on B: ' \
    'switchover done: site-b is the primary' 'switchover done: site-a is the primary' \
    'site-a: window 1 added' 'site-b: window 1 added'; do
    grep -qF "$line" "$work/demo.log" || {
        cat "$work/demo.log"
        fail "the demo's output lacks \"$line\""
    }
done
step "the demo ran on the installed programs in $(($(date +%s) - t0)) s: $(grep -F 'pgbench_accounts on B' "$work/demo.log" | sed 's/^demo: //')"

# --- 6. remove, purge -------------------------------------------------------------------------
dpkg --remove walmirror >"$WM_TMP/remove.log" 2>&1 || fail "dpkg --remove: $(cat "$WM_TMP/remove.log")"
for f in /usr/bin/walmirror-agent /usr/bin/walmirrorctl /lib/systemd/system/walmirror-agent@.service; do
    [ -e "$f" ] && fail "$f is still there after dpkg --remove"
done
while read -r f; do
    [ -e "$f" ] || fail "dpkg --remove deleted the DBA's $f"
done <"$dba_files"
dpkg --purge walmirror >"$WM_TMP/purge.log" 2>&1 || fail "dpkg --purge: $(cat "$WM_TMP/purge.log")"
grep -q '/etc/walmirror is kept' "$WM_TMP/purge.log" || fail "the purge did not say it kept /etc/walmirror: $(cat "$WM_TMP/purge.log")"
[ "$(dpkg-query -W -f='${db:Status-Status}' walmirror 2>/dev/null || echo not-installed)" = not-installed ] ||
    fail "walmirror is still known to dpkg after the purge"
snapshot | sort -u >"$WM_TMP/after"
{
    cat "$dba_files"
    [ "$etc_new" = 1 ] && echo /etc/walmirror
    [ "$var_new" = 1 ] && echo /var/lib/walmirror
} | sort -u >"$WM_TMP/expected"
comm -13 "$WM_TMP/before" "$WM_TMP/after" >"$WM_TMP/left"
if ! cmp -s "$WM_TMP/left" "$WM_TMP/expected"; then
    echo "left after the purge, not the DBA's:" >&2
    comm -23 "$WM_TMP/left" "$WM_TMP/expected" >&2
    echo "the DBA's, gone:" >&2
    comm -13 "$WM_TMP/left" "$WM_TMP/expected" >&2
    fail "the purge left other paths than the DBA's own files"
fi
step "removed and purged: left only the DBA's $(wc -l <"$WM_TMP/expected") paths in /etc/walmirror and /var/lib/walmirror"
echo "test_package: passed"
