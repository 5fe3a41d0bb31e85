#!/bin/sh
# Installs walmirror's build and test dependencies from Debian 12's packages.
# Run as root (or with sudo); apt-get update first, as on a fresh machine.
set -eu
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root (or: sudo $0)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    build-essential cmake pkg-config clang llvm \
    libpq-dev liburing-dev liblz4-dev libxxhash-dev libssl-dev check \
    libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev libsqlite3-dev \
    postgresql-15 postgresql-client-15 openssl ca-certificates util-linux procps \
    chromium fonts-dejavu-core \
    gnuplot-nox curl \
    valgrind \
    etcd-server etcd-client \
    debhelper dpkg-dev lintian man-db groff-base prometheus systemd \
    >/dev/null
# debhelper and dpkg-dev build the Debian package (tools/build-deb.sh), lintian checks it against
# Debian's policy; man-db and groff-base check the man pages; systemd-analyze (systemd) checks
# the units; prometheus brings promtool, which checks and unit-tests the alert rules (the
# package also holds the Prometheus server, which this project does not use).
# Debian's postgresql-common creates and starts a default cluster; walmirror's tests and demo
# run their own clusters in temporary directories, so the default one is left as it is.
# The same for etcd-server's etcd.service: the tests start their own etcd members.
echo "install-deps: dependencies installed"
