/*
 * fleet.h - walmirrorctl fleet: every walmirror pair that keeps its arbiter's records in one
 * etcd cluster, read from those records (agent/etcdrec.h).
 *
 *   walmirrorctl fleet --etcd ENDPOINTS [--etcd-ca FILE --etcd-cert FILE --etcd-key FILE]
 *                [--prefix ROOT] [--json]
 *
 * (the options before or after the word fleet, as `walmirrorctl --etcd ENDPOINTS fleet`).
 * ENDPOINTS is a comma-separated list of the members' client URLs, as etcd_endpoints; the TLS
 * files are those of etcd_ca / etcd_cert / etcd_key (all three, or --etcd-ca alone for a
 * cluster that wants no client certificate).  ROOT (default "/walmirror/") is the prefix under
 * which the pairs' prefixes lie: every key under it ending in "epoch", "paused" or
 * "members/NODE" belongs to the pair whose prefix is what precedes that ending.
 *
 * One range request of ROOT (the endpoints tried in turn, as the agent's client does), then one
 * table row per pair, in key order, with the columns PAIR (the pair's prefix below ROOT), EPOCH,
 * HOLDER, EXPOSED ("no", or "since LSN TIME"), NODES ("site-a sink@4, site-b source@4": each
 * liveness key present, with its role and epoch; a node whose agent has been silent for its
 * lease TTL has none), SYNC, FLUSH LAG and APPLY LAG (bytes, and seconds when known): those the
 * source reported (the holder, else any node reporting itself the source), "-" without one.
 * Lines under a row say the WAL at risk of a pair running exposed, a paused pair, a record that
 * cannot be read.  --json prints an array with one object per pair: "pair", "prefix", "epoch",
 * "holder", "exposed", "exposed_lsn", "exposed_since_unix_us", "paused", and "members", the
 * liveness records as etcd holds them.
 *
 * Exit status: 0 when etcd answered (even with no pair found), 1 when no endpoint answered or
 * the answer could not be read (one line naming each endpoint and why), 2 bad usage.
 */
#ifndef WALMIRROR_TOOLS_FLEET_H
#define WALMIRROR_TOOLS_FLEET_H

#include <stdbool.h>

/* Whether the command line asks for fleet (it names the command or an --etcd option). */
bool fleet_wanted(int argc, char **argv);

/* Runs `walmirrorctl ... fleet ...` from argv; returns the exit status. */
int fleet_main(int argc, char **argv);

#endif
