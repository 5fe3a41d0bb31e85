/*
 * clock.h - the clocks walmirror reads: monotonic for timeouts and intervals, real time for
 * timestamps that cross the wire (heartbeats, ACKs, PostgreSQL's sendTime).
 */
#ifndef WALMIRROR_WIRE_CLOCK_H
#define WALMIRROR_WIRE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t
clock_read_us(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Microseconds and milliseconds of CLOCK_MONOTONIC. */
static inline uint64_t
clock_mono_us(void)
{
    return clock_read_us(CLOCK_MONOTONIC);
}

static inline uint64_t
clock_mono_ms(void)
{
    return clock_mono_us() / 1000u;
}

/* Microseconds since the Unix epoch (CLOCK_REALTIME). */
static inline uint64_t
clock_unix_us(void)
{
    return clock_read_us(CLOCK_REALTIME);
}

#endif
