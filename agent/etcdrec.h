/*
 * etcdrec.h - what a walmirror pair keeps in etcd, and the JSON of it: shared by the etcd
 * arbiter (arbiter_etcd.c), which writes and reads it, and `walmirrorctl fleet`, which reads
 * every pair's.
 *
 * Under the pair's prefix P (etcd_prefix; by default "/walmirror/" followed by the two node
 * names in byte order joined by '+', and '/': "/walmirror/site-a+site-b/"):
 *
 *   P "epoch"          the epoch record: the fencing token, the node that holds it, and its
 *                      mark (state.h's struct wm_state), written by one transaction per grant.
 *                      No lease: it lasts.
 *       {"version":1,"epoch":4,"holder":"site-b","changed_unix_us":1700000000000000,
 *        "exposed_lsn":"0/4100000","exposed_unix_us":1700000000000000}
 *   P "members/" NODE  a site's liveness key, bound to that site's lease: it disappears when the
 *                      site's agent has not renewed the lease for etcd_lease_ttl.
 *       {"version":1,"node":"site-a","role":"sink","epoch":4,"durable_lsn":"0/4100000",
 *        "timeline":1,"sync_state":"sync","flush_lag_bytes":0,"apply_lag_bytes":0,
 *        "flush_lag_s":0.001,"apply_lag_s":null,"wal_at_risk_bytes":0,
 *        "updated_unix_us":1700000000000000}
 *   P "paused"         any value: automatic fail-over is paused at the arbiter (every promotion
 *                      is denied) until the key is deleted.  Written by operators (etcdctl).
 *
 * LSNs are PostgreSQL's "X/X" text; times are microseconds since the Unix epoch; a lag in
 * seconds is null while unknown.  Readers ignore fields they do not know (a newer writer may
 * add some) and refuse a record without the fields they need, naming it.
 *
 * Nothing here does I/O or keeps state.  Functions return >= 0 or a negative errno.
 */
#ifndef WALMIRROR_AGENT_ETCDREC_H
#define WALMIRROR_AGENT_ETCDREC_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "state.h"

#define ETCD_ENDPOINTS_MAX 8
#define ETCD_URL_MAX 256 /* one endpoint URL, without a trailing '/' */

/*
 * Splits a comma-separated list of endpoint URLs ("http://host:port" or "https://host:port",
 * blanks around commas allowed, a trailing '/' dropped; an IPv6 host in brackets; no path,
 * query or user) into urls[0..max).  Returns the number of endpoints (1..max), or -EINVAL with
 * one line in err naming the bad entry.  config.c validates etcd_endpoints with it.
 */
WM_MUSTCHECK int etcd_endpoints_parse(const char *list, char urls[][ETCD_URL_MAX], int max,
                                      char *err, size_t errlen);

#define ETCDREC_PREFIX_MAX 200 /* bytes of a prefix */
#define ETCDREC_ROOT "/walmirror/"
#define ETCDREC_EPOCH "epoch"
#define ETCDREC_MEMBERS "members/"
#define ETCDREC_PAUSED "paused"

/* A site's liveness record: struct arbiter_report, with its name and when it was written. */
struct etcdrec_member {
    char node[STATE_NAME_MAX + 1];
    uint8_t role; /* enum msg_role */
    uint64_t epoch;
    uint64_t durable_lsn;
    uint32_t timeline;
    char sync_state[16];
    uint64_t flush_lag_bytes, apply_lag_bytes;
    double flush_lag_s, apply_lag_s; /* negative: unknown */
    uint64_t wal_at_risk_bytes;
    uint64_t updated_unix_us;
};

/* The JSON of m and of an epoch record, malloc'd (NULL: out of memory). */
char *etcdrec_member_json(const struct etcdrec_member *m);
char *etcdrec_epoch_json(const struct wm_state *st);

/* Parses a value written by the functions above.  Returns 0, or -EINVAL with one line in err
 * ("not JSON", "no epoch"...). */
WM_MUSTCHECK int etcdrec_member_parse(const char *text, size_t len, struct etcdrec_member *m,
                                      char *err, size_t errlen);
WM_MUSTCHECK int etcdrec_epoch_parse(const char *text, size_t len, struct wm_state *st, char *err,
                                     size_t errlen);

enum etcdrec_key {
    ETCDREC_KEY_OTHER,  /* not one of ours */
    ETCDREC_KEY_EPOCH,  /* P "epoch" */
    ETCDREC_KEY_MEMBER, /* P "members/" NODE: *name points at NODE (name_len bytes) */
    ETCDREC_KEY_PAUSED, /* P "paused" */
};

/* What key[0..len) is under prefix. */
enum etcdrec_key etcdrec_classify(const char *prefix, const char *key, size_t len,
                                  const char **name, size_t *name_len);

/*
 * Splits a key found under a root ("/walmirror/") into its pair's prefix and the rest: the
 * pair's prefix ends just before the last "epoch", "paused" or "members/NODE" of key.
 * Returns the kind, with *pair_len the length of the pair's prefix within key (root
 * included); ETCDREC_KEY_OTHER for a key that is none of those.
 */
enum etcdrec_key etcdrec_split(const char *key, size_t len, size_t *pair_len);

/* The default prefix of the pair of nodes a and b (config.h's etcd_prefix). */
void etcdrec_default_prefix(char *out, size_t cap, const char *a, const char *b);

/* "source", "sink", "unknown"... and back (-1: not a role name). */
int etcdrec_role_parse(const char *name);

#endif
