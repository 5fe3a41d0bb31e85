/*
 * msg.c - message bodies; layouts in msg.h and docs/wire.md.
 */
#include "msg.h"

#include <errno.h>
#include <string.h>

#include "cursor.h"

static bool
put_str(struct wbuf *w, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    return wbuf_put_u16le(w, (uint16_t)n) && wbuf_put_bytes(w, s, n);
}

/* Reads a length-prefixed string into dst[max + 1]; longer strings are malformed. */
static bool
get_str(struct cursor *c, char *dst, size_t max)
{
    uint16_t n;
    const uint8_t *p;

    if (!cur_get_u16le(c, &n) || n > max || !cur_get_bytes(c, n, &p))
        return false;
    if (memchr(p, '\0', n) != NULL)
        return false;
    memcpy(dst, p, n);
    dst[n] = '\0';
    return true;
}

ssize_t
msg_encode_hello(const struct msg_hello *m, uint8_t *out, size_t cap)
{
    struct wbuf w = wbuf_init(out, cap);

    if (!put_str(&w, m->node_name, MSG_NAME_MAX) || !wbuf_put_u8(&w, m->role) ||
        !wbuf_put_u64le(&w, m->system_id) || !wbuf_put_u32le(&w, m->timeline) ||
        !wbuf_put_u64le(&w, m->durable_lsn) || !wbuf_put_u64le(&w, m->applied_lsn) ||
        !wbuf_put_u64le(&w, m->capabilities))
        return -EMSGSIZE;
    return (ssize_t)w.len;
}

int
msg_decode_hello(const void *body, size_t len, struct msg_hello *m)
{
    struct cursor c = cur_init(body, len);

    if (!get_str(&c, m->node_name, MSG_NAME_MAX) || !cur_get_u8(&c, &m->role) ||
        !cur_get_u64le(&c, &m->system_id) || !cur_get_u32le(&c, &m->timeline) ||
        !cur_get_u64le(&c, &m->durable_lsn) || !cur_get_u64le(&c, &m->applied_lsn) ||
        !cur_get_u64le(&c, &m->capabilities))
        return WIRE_EMESSAGE;
    if (m->node_name[0] == '\0' || m->role > MSG_ROLE_WITNESS)
        return WIRE_EMESSAGE;
    return 0;
}

ssize_t
msg_encode_ack(const struct msg_ack *m, uint8_t *out, size_t cap)
{
    struct wbuf w = wbuf_init(out, cap);

    if (!wbuf_put_u64le(&w, m->write_lsn) || !wbuf_put_u64le(&w, m->flush_lsn) ||
        !wbuf_put_u64le(&w, m->apply_lsn) || !wbuf_put_u64le(&w, m->send_time_us))
        return -EMSGSIZE;
    return (ssize_t)w.len;
}

int
msg_decode_ack(const void *body, size_t len, struct msg_ack *m)
{
    struct cursor c = cur_init(body, len);

    if (!cur_get_u64le(&c, &m->write_lsn) || !cur_get_u64le(&c, &m->flush_lsn) ||
        !cur_get_u64le(&c, &m->apply_lsn) || !cur_get_u64le(&c, &m->send_time_us))
        return WIRE_EMESSAGE;
    /* Positions are ordered: nothing is flushed before it is written. */
    if (m->flush_lsn > m->write_lsn)
        return WIRE_EMESSAGE;
    return 0;
}

ssize_t
msg_encode_heartbeat(const struct msg_heartbeat *m, uint8_t *out, size_t cap)
{
    struct wbuf w = wbuf_init(out, cap);

    if (!wbuf_put_u64le(&w, m->send_time_us) || !wbuf_put_u64le(&w, m->echo_time_us) ||
        !wbuf_put_u64le(&w, m->echo_hold_us) || !wbuf_put_u8(&w, m->reply_requested))
        return -EMSGSIZE;
    return (ssize_t)w.len;
}

int
msg_decode_heartbeat(const void *body, size_t len, struct msg_heartbeat *m)
{
    struct cursor c = cur_init(body, len);

    if (!cur_get_u64le(&c, &m->send_time_us) || !cur_get_u64le(&c, &m->echo_time_us) ||
        !cur_get_u64le(&c, &m->echo_hold_us) || !cur_get_u8(&c, &m->reply_requested))
        return WIRE_EMESSAGE;
    return 0;
}

ssize_t
msg_encode_error(const struct msg_error *m, uint8_t *out, size_t cap)
{
    struct wbuf w = wbuf_init(out, cap);

    if (!wbuf_put_u32le(&w, m->code) || !put_str(&w, m->text, MSG_TEXT_MAX))
        return -EMSGSIZE;
    return (ssize_t)w.len;
}

int
msg_decode_error(const void *body, size_t len, struct msg_error *m)
{
    struct cursor c = cur_init(body, len);

    if (!cur_get_u32le(&c, &m->code) || !get_str(&c, m->text, MSG_TEXT_MAX))
        return WIRE_EMESSAGE;
    return 0;
}

ssize_t
msg_encode_timeline(const struct msg_timeline *m, uint8_t *out, size_t cap)
{
    struct wbuf w = wbuf_init(out, cap);

    if (m->history_len > MSG_HISTORY_MAX || !wbuf_put_u32le(&w, m->tli) ||
        !wbuf_put_u64le(&w, m->switch_lsn) || !wbuf_put_u32le(&w, (uint32_t)m->history_len) ||
        !wbuf_put_bytes(&w, m->history, m->history_len))
        return -EMSGSIZE;
    return (ssize_t)w.len;
}

int
msg_decode_timeline(const void *body, size_t len, struct msg_timeline *m)
{
    struct cursor c = cur_init(body, len);
    const uint8_t *p;
    uint32_t n;

    if (!cur_get_u32le(&c, &m->tli) || !cur_get_u64le(&c, &m->switch_lsn) ||
        !cur_get_u32le(&c, &n) || n > MSG_HISTORY_MAX || !cur_get_bytes(&c, n, &p))
        return WIRE_EMESSAGE;
    if (m->tli == 0 || (m->tli > 1 && (n == 0 || m->switch_lsn == 0)))
        return WIRE_EMESSAGE;
    m->history = (const char *)p;
    m->history_len = n;
    return 0;
}

ssize_t
msg_encode_control(const struct msg_control *m, uint8_t *out, size_t cap)
{
    struct wbuf w = wbuf_init(out, cap);

    if (!wbuf_put_u8(&w, m->kind) || !wbuf_put_u64le(&w, m->lsn) ||
        !wbuf_put_u64le(&w, m->value) || !wbuf_put_u64le(&w, m->value2) ||
        !put_str(&w, m->text, MSG_TEXT_MAX) || !wbuf_put_u64le(&w, m->mark_lsn) ||
        !wbuf_put_u64le(&w, m->mark_unix_us))
        return -EMSGSIZE;
    return (ssize_t)w.len;
}

int
msg_decode_control(const void *body, size_t len, struct msg_control *m)
{
    struct cursor c = cur_init(body, len);

    if (!cur_get_u8(&c, &m->kind) || !cur_get_u64le(&c, &m->lsn) ||
        !cur_get_u64le(&c, &m->value) || !cur_get_u64le(&c, &m->value2) ||
        !get_str(&c, m->text, MSG_TEXT_MAX))
        return WIRE_EMESSAGE;
    /* The mark came later: a body that ends before it has none; one cut inside it is bad. */
    m->mark_lsn = m->mark_unix_us = 0;
    if (cur_left(&c) > 0 &&
        (!cur_get_u64le(&c, &m->mark_lsn) || !cur_get_u64le(&c, &m->mark_unix_us)))
        return WIRE_EMESSAGE;
    if (m->kind == 0 || m->kind > MSG_CTL_LAST)
        return WIRE_EMESSAGE;
    return 0;
}

const char *
msg_ctl_name(uint8_t kind)
{
    static const char *const names[] = {
        [MSG_CTL_SWITCHOVER_BEGIN] = "SWITCHOVER_BEGIN",
        [MSG_CTL_SWITCHOVER_PROMOTE] = "SWITCHOVER_PROMOTE",
        [MSG_CTL_SWITCHOVER_DONE] = "SWITCHOVER_DONE",
        [MSG_CTL_SWITCHOVER_ABORT] = "SWITCHOVER_ABORT",
        [MSG_CTL_FENCE] = "FENCE",
        [MSG_CTL_STATE] = "STATE",
        [MSG_CTL_VOTE_REQUEST] = "VOTE_REQUEST",
        [MSG_CTL_VOTE_GRANT] = "VOTE_GRANT",
        [MSG_CTL_VOTE_DENY] = "VOTE_DENY",
        [MSG_CTL_SWITCHOVER_SYNCED] = "SWITCHOVER_SYNCED",
        [MSG_CTL_EXPOSE_REQUEST] = "EXPOSE_REQUEST",
        [MSG_CTL_RESYNC_REQUEST] = "RESYNC_REQUEST",
    };

    return kind > 0 && kind <= MSG_CTL_LAST ? names[kind] : "unknown";
}

const char *
msg_role_name(uint8_t role)
{
    switch (role) {
    case MSG_ROLE_SOURCE:
        return "source";
    case MSG_ROLE_SINK:
        return "sink";
    case MSG_ROLE_WITNESS:
        return "witness";
    default:
        return "unknown";
    }
}
