#!/bin/sh
# gen-test-certs.sh - the certificates the test suites use (tests/testutil.c, tu_certs()).
#
# Usage: sh tests/gen-test-certs.sh DIR
#
# Good ones, from conf/gen-certs.sh: ca.crt/.key, site-a, site-b, witness (.crt/.key).
# Bad ones, each wrong in exactly one way:
#   rogue-ca.crt/.key        a second, unrelated CA
#   rogue-site-b.crt/.key    name site-b, signed by the rogue CA
#   expired-site-b.crt/.key  name site-b, signed by the good CA, valid only in 2020
#   wrongname.crt/.key       name site-z, signed by the good CA
# For etcd (tests/etcdtest.c): etcd.crt/.key, the members' certificate from the good CA for
# DNS:localhost and IP:127.0.0.1 (clients reach the members by address), serverAuth and
# clientAuth (etcd's JSON gateway presents it when it dials the member's own gRPC port).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: sh tests/gen-test-certs.sh DIR" >&2
    exit 2
fi
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
gen=$here/../conf/gen-certs.sh

sh "$gen" "$dir" site-a site-b witness

umask 077
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gen-test-certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Rogue CA and its site-b: the same script, into a scratch directory.
if [ ! -f "$dir/rogue-site-b.crt" ]; then
    WALMIRROR_CA_NAME="walmirror rogue CA" sh "$gen" "$tmp/rogue" site-b
    cp "$tmp/rogue/ca.crt" "$dir/rogue-ca.crt"
    cp "$tmp/rogue/ca.key" "$dir/rogue-ca.key"
    cp "$tmp/rogue/site-b.crt" "$dir/rogue-site-b.crt"
    cp "$tmp/rogue/site-b.key" "$dir/rogue-site-b.key"
    chmod 644 "$dir/rogue-ca.crt" "$dir/rogue-site-b.crt"
fi

# Wrong name: site-z from the good CA.
if [ ! -f "$dir/wrongname.crt" ]; then
    mkdir "$tmp/wrong"
    cp "$dir/ca.crt" "$dir/ca.key" "$tmp/wrong/"
    sh "$gen" "$tmp/wrong" site-z
    cp "$tmp/wrong/site-z.crt" "$dir/wrongname.crt"
    cp "$tmp/wrong/site-z.key" "$dir/wrongname.key"
    chmod 644 "$dir/wrongname.crt"
fi

# Expired site-b from the good CA.  openssl 3.0's x509 cannot set a start date, so sign with
# `openssl ca`, which takes -startdate/-enddate, under a throwaway config.
if [ ! -f "$dir/expired-site-b.crt" ]; then
    mkdir "$tmp/ca"
    : >"$tmp/ca/index.txt"
    echo 01 >"$tmp/ca/serial"
    cat >"$tmp/ca.cnf" <<EOF
[ca]
default_ca = test_ca
[test_ca]
dir = $tmp/ca
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
commonName = supplied
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:site-b
EOF
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/expired.key"
    openssl req -new -key "$tmp/expired.key" -subj "/CN=site-b" -out "$tmp/expired.csr"
    openssl ca -batch -config "$tmp/ca.cnf" -cert "$dir/ca.crt" -keyfile "$dir/ca.key" \
        -extensions ext -startdate 20200101000000Z -enddate 20200102000000Z -notext \
        -in "$tmp/expired.csr" -out "$tmp/expired.crt"
    chmod 600 "$tmp/expired.key"
    chmod 644 "$tmp/expired.crt"
    mv "$tmp/expired.key" "$dir/expired-site-b.key"
    mv "$tmp/expired.crt" "$dir/expired-site-b.crt"
fi

# etcd's members: one certificate for the loopback address, from the good CA.
if [ ! -f "$dir/etcd.crt" ]; then
    cat >"$tmp/etcd.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
EOF
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/etcd.key"
    openssl req -new -key "$tmp/etcd.key" -subj "/CN=etcd" -out "$tmp/etcd.csr"
    openssl x509 -req -in "$tmp/etcd.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -sha256 -days 30 -extfile "$tmp/etcd.ext" \
        -out "$tmp/etcd.crt"
    chmod 600 "$tmp/etcd.key"
    chmod 644 "$tmp/etcd.crt"
    mv "$tmp/etcd.key" "$dir/etcd.key"
    mv "$tmp/etcd.crt" "$dir/etcd.crt"
fi

echo "test certificates ready in $dir"
