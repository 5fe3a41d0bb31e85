/*
 * walsrv.h - the WAL server: the walsender side of PostgreSQL 15's streaming replication
 * protocol, served from the spool to the local standby's walreceiver (and to pg_receivewal).
 *
 * Listens on wal_listen (TCP through the io_uring loop).  Per client: start-up packet (SSL and
 * GSSENC requests answered 'N'), authentication (trust: AuthenticationOk), the GUC_REPORT
 * ParameterStatus set, BackendKeyData, ReadyForQuery; then replication commands (pgproto.h):
 * IDENTIFY_SYSTEM (the primary's system identifier, the spool's current timeline and flush
 * position), TIMELINE_HISTORY n (the spool's history file of n, or an ErrorResponse naming
 * pg_wal/%08X.history), SHOW (wal_segment_size, data_directory_mode, ...), READ_REPLICATION_SLOT
 * (restart_tli: the timeline of the spool's start in its history), CREATE_REPLICATION_SLOT
 * (TEMPORARY only, for the session; a persistent slot is refused with 0A000: walmirror keeps
 * none), DROP_REPLICATION_SLOT (the session's temporary slot; else 42704), START_REPLICATION
 * [SLOT s] [PHYSICAL] X/X [TIMELINE n] (beyond the spool's flush position: CopyBothResponse,
 * then ERROR XX000, as PostgreSQL 15's walsender answers).  In COPY
 * BOTH it sends contiguous XLogData of at most 128 KiB, cut at 8 KiB page boundaries, of
 * spool-durable WAL only, starting exactly at the requested position; keepalives every 10 s and
 * at once on request; reads the standby's 'r' and 'h'.  Anything unsupported: ErrorResponse,
 * and the session goes on where PostgreSQL would.
 *
 * Timelines, as PostgreSQL 15's walsender: START_REPLICATION on an older timeline t of the
 * spool's history streams up to t's switch point (spool_timeline_end) and never past it, then
 * sends CopyDone, waits for the client's CopyDone (processing its 'r'/'h' meanwhile) and answers
 * with the next timeline (next_tli, next_tli_startpos = the switch point), CommandComplete
 * START_STREAMING and START_REPLICATION, ReadyForQuery; the session then takes the next command.
 * A start exactly at the switch point gets that answer without COPY; a start after it is an
 * ERROR "requested starting point X/X on timeline t is not in this server's history"; a
 * timeline newer than the spool's or not in its history is an ERROR "requested timeline t is
 * not in this server's history".  The session stays usable after each of these.
 *
 * The owner tells it when more WAL became durable (walsrv_wal_durable) and hears the standby's
 * positions (on_reply).  A client that asks for WAL the spool no longer holds gets an
 * ErrorResponse naming the LSN and is disconnected (the walreceiver retries).
 */
#ifndef WALMIRROR_AGENT_WALSRV_H
#define WALMIRROR_AGENT_WALSRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "spool.h"
#include "wio.h"

struct walsrv;

struct walsrv_ops {
    /* A standby status update ('r') from a streaming client: its write, flush and replay
     * (apply) positions, as the walreceiver reports them.  application_name identifies it. */
    void (*on_reply)(void *ctx, const char *application_name, uint64_t write_lsn,
                     uint64_t flush_lsn, uint64_t apply_lsn);
    /* Optional: hot standby feedback ('h'). */
    void (*on_feedback)(void *ctx, uint32_t xmin, uint32_t xmin_epoch, uint32_t catalog_xmin,
                        uint32_t catalog_epoch);
};

/* Starts listening on listen_hostport.  Until the spool has an identity, IDENTIFY_SYSTEM
 * answers with an error ("no WAL received from the primary yet"). */
WM_MUSTCHECK int walsrv_new(struct walsrv **out, struct wio_loop *loop,
                            const char *listen_hostport, struct spool *spool,
                            const struct walsrv_ops *ops, void *ctx, char *err, size_t errlen);
void walsrv_free(struct walsrv *w);

/* The spool's flush position moved to flush_lsn: streaming clients get the new WAL. */
void walsrv_wal_durable(struct walsrv *w, uint64_t flush_lsn);

/*
 * The spool switched timeline (call right after a successful spool_set_timeline): clients
 * streaming the old timeline end it at its switch point, at once if they are there already.
 * The limit is read from the spool at every send, so no WAL of the new timeline reaches them
 * even before this call; without it, a client already at the switch point would only be told
 * at the next walsrv_wal_durable or within a second (the server's tick).
 */
void walsrv_timeline_switched(struct walsrv *w);

/* The port actually bound (for wal_listen with port 0 in tests). */
int walsrv_port(const struct walsrv *w);

/* Number of clients in COPY BOTH mode. */
unsigned walsrv_streaming_clients(const struct walsrv *w);

#endif
