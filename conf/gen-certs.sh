#!/bin/sh
# gen-certs.sh - make the certificates walmirror agents authenticate each other with.
#
# Usage: conf/gen-certs.sh OUTDIR NAME...
#
# Creates in OUTDIR, if absent, a private certificate authority (ca.crt, ca.key), then for each
# NAME a key and a certificate signed by that CA (NAME.key, NAME.crt) carrying CN=NAME and
# subjectAltName DNS:NAME, usable as TLS server and client (extendedKeyUsage serverAuth,
# clientAuth).  NAME is what the other agents configure as this agent's peer name.  Keys are
# EC P-256, written mode 0600.
#
# Idempotent: existing files are kept; a NAME.crt that no longer verifies against ca.crt is
# reported and the script fails rather than overwrite it.  Only the openssl CLI is used.
#
# Environment: WALMIRROR_CA_DAYS (default 3650), WALMIRROR_CERT_DAYS (default 825),
#              WALMIRROR_CA_NAME (default "walmirror CA").
#
# Copy ca.crt to every site; NAME.crt and NAME.key only to the agent called NAME.  Keep ca.key
# offline: it is needed only to issue more certificates.
set -eu

usage() {
    cat >&2 <<'EOF'
usage: gen-certs.sh OUTDIR NAME...

  Creates OUTDIR/ca.crt and OUTDIR/ca.key (a private CA) if they do not exist, then for each
  NAME: OUTDIR/NAME.crt and OUTDIR/NAME.key, signed by that CA, with CN=NAME and
  subjectAltName DNS:NAME, for TLS server and client use.  Existing files are kept.

  example: gen-certs.sh /etc/walmirror/tls site-a site-b witness
EOF
    exit 2
}

if [ $# -lt 2 ]; then
    usage
fi
case "$1" in
-h | --help) usage ;;
esac

outdir=$1
shift
ca_days=${WALMIRROR_CA_DAYS:-3650}
cert_days=${WALMIRROR_CERT_DAYS:-825}
ca_name=${WALMIRROR_CA_NAME:-walmirror CA}

command -v openssl >/dev/null 2>&1 || {
    echo "gen-certs.sh: the openssl command is not installed" >&2
    exit 1
}

# Names become file names and DNS names: letters, digits, dots and dashes only.
for name in "$@"; do
    case "$name" in
    '' | -* | .* | *[!A-Za-z0-9.-]*)
        echo "gen-certs.sh: invalid name '$name' (use letters, digits, '.', '-')" >&2
        exit 2
        ;;
    ca)
        echo "gen-certs.sh: 'ca' is reserved for the certificate authority" >&2
        exit 2
        ;;
    esac
done

mkdir -p "$outdir"
umask 077
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gen-certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# New key into $1 (mode 0600 thanks to the umask, and chmod'ed to be explicit).
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>"$tmp/err" || {
        cat "$tmp/err" >&2
        exit 1
    }
    chmod 600 "$1"
}

if [ -f "$outdir/ca.crt" ] && [ -f "$outdir/ca.key" ]; then
    echo "keeping existing CA $outdir/ca.crt"
elif [ -f "$outdir/ca.crt" ] || [ -f "$outdir/ca.key" ]; then
    echo "gen-certs.sh: $outdir has only one of ca.crt and ca.key; restore the other or remove" \
        "both to make a new CA (then every certificate must be reissued)" >&2
    exit 1
else
    new_key "$tmp/ca.key"
    openssl req -new -x509 -key "$tmp/ca.key" -sha256 -days "$ca_days" -subj "/CN=$ca_name" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" -out "$tmp/ca.crt"
    chmod 644 "$tmp/ca.crt"
    mv "$tmp/ca.key" "$outdir/ca.key"
    mv "$tmp/ca.crt" "$outdir/ca.crt"
    echo "created CA $outdir/ca.crt (key $outdir/ca.key)"
fi

for name in "$@"; do
    crt=$outdir/$name.crt
    key=$outdir/$name.key
    if [ -f "$crt" ] && [ -f "$key" ]; then
        if openssl verify -CAfile "$outdir/ca.crt" "$crt" >/dev/null 2>&1; then
            echo "keeping existing $crt"
            continue
        fi
        echo "gen-certs.sh: $crt exists but does not verify against $outdir/ca.crt (expired," \
            "or issued by another CA); remove $crt and $key to reissue it" >&2
        exit 1
    fi
    if [ -f "$crt" ] || [ -f "$key" ]; then
        echo "gen-certs.sh: only one of $crt and $key exists; remove it to reissue both" >&2
        exit 1
    fi
    new_key "$tmp/$name.key"
    openssl req -new -key "$tmp/$name.key" -subj "/CN=$name" -out "$tmp/$name.csr"
    cat >"$tmp/$name.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:$name
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl x509 -req -in "$tmp/$name.csr" -CA "$outdir/ca.crt" -CAkey "$outdir/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$cert_days" \
        -extfile "$tmp/$name.ext" -out "$tmp/$name.crt" 2>"$tmp/err" || {
        cat "$tmp/err" >&2
        exit 1
    }
    chmod 644 "$tmp/$name.crt"
    mv "$tmp/$name.key" "$key"
    mv "$tmp/$name.crt" "$crt"
    echo "created $crt (key $key)"
done
