/*
 * cursor.h - bounds-checked reading and writing of wire buffers.
 *
 * Every byte walmirror takes off a network buffer is read through a struct cursor: each
 * reader checks the remaining length first and returns false, consuming nothing, on underrun.
 * Nothing casts a packed struct onto a network buffer.  Both byte orders are here: the
 * agent-to-agent protocol is little-endian, PostgreSQL's protocol is big-endian.
 *
 * struct wbuf is the writing twin over a fixed-capacity buffer: writers return false and
 * write nothing when the value does not fit.
 */
#ifndef WALMIRROR_WIRE_CURSOR_H
#define WALMIRROR_WIRE_CURSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CUR_MUSTCHECK __attribute__((warn_unused_result))

struct cursor {
    const uint8_t *p;
    size_t len;
    size_t off;
};

static inline struct cursor
cur_init(const void *p, size_t len)
{
    struct cursor c = {.p = p, .len = len, .off = 0};
    return c;
}

static inline size_t
cur_left(const struct cursor *c)
{
    return c->len - c->off;
}

static inline const uint8_t *
cur_pos(const struct cursor *c)
{
    return c->p + c->off;
}

static inline CUR_MUSTCHECK bool
cur_skip(struct cursor *c, size_t n)
{
    if (cur_left(c) < n)
        return false;
    c->off += n;
    return true;
}

/* Points *out at the next n bytes (no copy) and consumes them. */
static inline CUR_MUSTCHECK bool
cur_get_bytes(struct cursor *c, size_t n, const uint8_t **out)
{
    if (cur_left(c) < n)
        return false;
    *out = c->p + c->off;
    c->off += n;
    return true;
}

static inline CUR_MUSTCHECK bool
cur_get_u8(struct cursor *c, uint8_t *v)
{
    if (cur_left(c) < 1)
        return false;
    *v = c->p[c->off++];
    return true;
}

#define CUR_DEFINE_GET(bits, order, expr)                                                          \
    static inline CUR_MUSTCHECK bool cur_get_u##bits##order(struct cursor *c, uint##bits##_t *v)   \
    {                                                                                              \
        const uint8_t *b;                                                                          \
        uint##bits##_t x = 0;                                                                      \
        if (cur_left(c) < (bits) / 8)                                                              \
            return false;                                                                          \
        b = c->p + c->off;                                                                         \
        for (unsigned i = 0; i < (bits) / 8; i++)                                                  \
            x |= (uint##bits##_t)b[i] << (expr);                                                   \
        *v = x;                                                                                    \
        c->off += (bits) / 8;                                                                      \
        return true;                                                                               \
    }

CUR_DEFINE_GET(16, le, 8 * i)
CUR_DEFINE_GET(32, le, 8 * i)
CUR_DEFINE_GET(64, le, 8 * i)
CUR_DEFINE_GET(16, be, 8 * ((16 / 8) - 1 - i))
CUR_DEFINE_GET(32, be, 8 * ((32 / 8) - 1 - i))
CUR_DEFINE_GET(64, be, 8 * ((64 / 8) - 1 - i))
#undef CUR_DEFINE_GET

/*
 * Reads a NUL-terminated string lying wholly inside the buffer; *out points into the buffer.
 * Fails if no NUL is found before the end.
 */
static inline CUR_MUSTCHECK bool
cur_get_cstr(struct cursor *c, const char **out)
{
    const uint8_t *start = c->p + c->off;
    const uint8_t *nul = memchr(start, '\0', cur_left(c));
    if (nul == NULL)
        return false;
    *out = (const char *)start;
    c->off += (size_t)(nul - start) + 1;
    return true;
}

struct wbuf {
    uint8_t *p;
    size_t cap;
    size_t len;
};

static inline struct wbuf
wbuf_init(void *p, size_t cap)
{
    struct wbuf w = {.p = p, .cap = cap, .len = 0};
    return w;
}

static inline CUR_MUSTCHECK bool
wbuf_put_bytes(struct wbuf *w, const void *src, size_t n)
{
    if (w->cap - w->len < n)
        return false;
    if (n > 0)
        memcpy(w->p + w->len, src, n);
    w->len += n;
    return true;
}

static inline CUR_MUSTCHECK bool
wbuf_put_u8(struct wbuf *w, uint8_t v)
{
    return wbuf_put_bytes(w, &v, 1);
}

#define WBUF_DEFINE_PUT(bits, order, expr)                                                         \
    static inline CUR_MUSTCHECK bool wbuf_put_u##bits##order(struct wbuf *w, uint##bits##_t v)     \
    {                                                                                              \
        uint8_t b[(bits) / 8];                                                                     \
        for (unsigned i = 0; i < (bits) / 8; i++)                                                  \
            b[i] = (uint8_t)(v >> (expr));                                                         \
        return wbuf_put_bytes(w, b, sizeof(b));                                                    \
    }

WBUF_DEFINE_PUT(16, le, 8 * i)
WBUF_DEFINE_PUT(32, le, 8 * i)
WBUF_DEFINE_PUT(64, le, 8 * i)
WBUF_DEFINE_PUT(16, be, 8 * ((16 / 8) - 1 - i))
WBUF_DEFINE_PUT(32, be, 8 * ((32 / 8) - 1 - i))
WBUF_DEFINE_PUT(64, be, 8 * ((64 / 8) - 1 - i))
#undef WBUF_DEFINE_PUT

/* Writes s including its terminating NUL. */
static inline CUR_MUSTCHECK bool
wbuf_put_cstr(struct wbuf *w, const char *s)
{
    return wbuf_put_bytes(w, s, strlen(s) + 1);
}

#endif
