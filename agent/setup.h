/*
 * setup.h - standing up site B: a standby of site A's primary, fed by walmirror.
 *
 * setup_init_standby() runs as the OS user that will own B's PGDATA:
 *   1. checks A's primary (PostgreSQL 15, wal_level replica or logical; warns when neither
 *      wal_log_hints nor data checksums is on, since a later rejoin of A needs pg_rewind);
 *   2. creates A's physical slot (slot_name, WAL reserved at once) if it is missing, *before*
 *      the backup, so that all WAL from the backup on stays available to the source;
 *   3. takes a base backup into B's pgdata with pg_basebackup (fast checkpoint, WAL streamed);
 *   4. makes it a standby of B's own WAL server: standby.signal, and in postgresql.auto.conf
 *      primary_conninfo pointing at wal_listen (application_name = node_name), hot_standby,
 *      wal_log_hints = on, and the port of B's pg_conninfo.
 * B's PostgreSQL is then started by the operator (or the test); it streams from B's agent.
 * Returns 0, or 1 with a message on stderr naming the step that failed.
 */
#ifndef WALMIRROR_AGENT_SETUP_H
#define WALMIRROR_AGENT_SETUP_H

#include "config.h"

int setup_init_standby(const struct wm_config *cfg, const char *primary_conninfo);

#endif
