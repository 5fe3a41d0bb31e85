#!/bin/sh
# check-rules.sh SRC - the Prometheus alert rules (conf/prometheus/walmirror-rules.yml):
#   1. promtool check rules: valid rules and templates;
#   2. promtool test rules conf/prometheus/walmirror-rules.test.yml: each rule fires, with its
#      labels and rendered annotations, where it must, and stays silent where it must not;
#   3. every alert has a test case in which it fires;
#   4. every walmirror_ metric the rules read is one the agent exports: a name written in
#      agent/metrics.c, or one of PENDING below.
# promtool comes from Debian's prometheus package (tools/install-deps.sh); without it this
# test fails rather than skips.
set -eu
src=$1
rules=$src/conf/prometheus/walmirror-rules.yml
# Metrics the rules use that other work in progress adds to GET /metrics: the certificate and
# spool gauges.  A name here that agent/metrics.c already
# writes is simply found there; remove it from this list once it is.
PENDING="walmirror_cert_expiry_timestamp_seconds walmirror_spool_free_bytes"

if ! command -v promtool >/dev/null; then
    echo "check-rules: promtool is missing (Debian's prometheus package; tools/install-deps.sh)" >&2
    exit 1
fi
promtool check rules "$rules"
(cd "$src/conf/prometheus" && promtool test rules walmirror-rules.test.yml)

status=0
# Every alert has a case in which it fires (an exp_alerts list that is not "[]").
firing=$(awk '/alertname:/ { a = $2 } /exp_alerts:[[:space:]]*$/ { print a }' \
    "$src/conf/prometheus/walmirror-rules.test.yml" | sort -u)
for a in $(grep -oE '^[[:space:]]*- alert: [A-Za-z0-9_]+' "$rules" | awk '{ print $3 }'); do
    echo "$firing" | grep -qx "$a" || {
        echo "check-rules: alert $a has no test case in which it fires" >&2
        status=1
    }
done
used=$(grep -v '^[[:space:]]*#' "$rules" | grep -oE 'walmirror_[a-z0-9_]+' | sort -u)
for m in $used; do
    if grep -q "\"$m\"" "$src/agent/metrics.c"; then
        continue
    fi
    if echo "$PENDING" | tr ' ' '\n' | grep -qx "$m"; then
        echo "check-rules: $m is not in agent/metrics.c yet (listed as pending)"
    else
        echo "check-rules: the rules read $m, which agent/metrics.c does not export" >&2
        status=1
    fi
done
[ "$status" = 0 ] && echo "check-rules: $(echo "$used" | wc -l) metric names, all exported or pending"
exit "$status"
