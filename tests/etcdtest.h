/*
 * etcdtest.h - a real etcd cluster for the test suites: members of Debian's etcd 3.4
 * (etcd-server, which tools/install-deps.sh installs) on free loopback ports, each with its
 * own client and peer URL, data in a temporary directory (under /dev/shm when there is one:
 * etcd fsyncs every write, and the machine's disk is shared), a log file per member.
 *
 * With tls, the members serve https:// with the test CA's etcd certificate (gen-test-certs.sh:
 * etcd.crt, for 127.0.0.1) and demand client certificates from that CA (--client-cert-auth);
 * the harness's own requests present witness.crt.  Peers talk plain http on loopback.
 * Elections are quick (heartbeat 50 ms, election timeout 500 ms) so that a killed leader is
 * replaced within about a second.
 *
 * Lifecycle: et_start (fails the test - exit 3 - when there is no etcd binary or the cluster
 * does not come up: a missing dependency is a failure, not a skip) -> kill, pause, restart
 * members as the test wants -> et_stop.  An atexit handler kills whatever is still running and
 * removes the directory (the log files are kept, and named, when the process exits non-zero:
 * call et_keep_logs first).  All functions run in the process that called et_start.
 */
#ifndef WALMIRROR_TESTS_ETCDTEST_H
#define WALMIRROR_TESTS_ETCDTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "state.h"

#define ET_MEMBERS_MAX 3

struct et_member {
    char name[16];
    int client_port, peer_port;
    pid_t pid;   /* 0: not running */
    bool paused; /* SIGSTOPped */
    char url[64];
    char data[4300];
    char log[4300];
};

struct et_cluster {
    int n;
    bool tls;
    char dir[4200];
    char endpoints[ET_MEMBERS_MAX * 64]; /* "https://127.0.0.1:P1,https://127.0.0.1:P2,..." */
    struct et_member m[ET_MEMBERS_MAX];
};

/* Starts n members (1..ET_MEMBERS_MAX) and waits until they have a leader (20 s at most). */
void et_start(struct et_cluster *c, int n, bool tls);
/* Kills every member (SIGKILL) and removes the directory. */
void et_stop(struct et_cluster *c);
/* Keeps the directory (the members' logs) at exit, and says where it is. */
void et_keep_logs(struct et_cluster *c);

/* SIGKILL member i and reap it. */
void et_kill(struct et_cluster *c, int i);
/* Starts member i again on its data directory (after et_kill). */
void et_restart(struct et_cluster *c, int i);
/* SIGSTOP / SIGCONT member i. */
void et_pause(struct et_cluster *c, int i);
void et_resume(struct et_cluster *c, int i);

/* The member that leads now (-1 when no running member names a leader it knows). */
int et_leader(struct et_cluster *c);
/* Makes member i the leader (etcd's MoveLeader, asked of the current leader); true on
 * success. */
bool et_move_leader(struct et_cluster *c, int i);
/* Waits up to seconds until the running members agree on a leader. */
bool et_wait_leader(struct et_cluster *c, double seconds);

/*
 * Key-value operations for assertions, through any running member (linearizable).
 * et_get returns the value (malloc'd, NUL-terminated) or NULL when the key does not exist;
 * the test fails when no member answers.
 */
char *et_get(struct et_cluster *c, const char *key);
/* The pair's epoch record under prefix, parsed (the test fails if it is missing or bad). */
struct wm_state et_epoch_record(struct et_cluster *c, const char *prefix);
void et_put(struct et_cluster *c, const char *key, const char *value);
void et_del(struct et_cluster *c, const char *key);

/* A client's TLS files for the harness's members (tls clusters): the test CA and a client
 * certificate it signed (NULL, NULL, NULL for a plain cluster). */
const char *et_ca(const struct et_cluster *c);
const char *et_client_cert(const struct et_cluster *c);
const char *et_client_key(const struct et_cluster *c);

#endif
