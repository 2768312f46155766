/* common/proto_prescan.c - the walk over a msgpack frame's bytes that
 * proto_decode runs before msgpack sees it (proto.h): msgpack-c reserves
 * memory for whatever count a header announces. */
#include "proto.h"

#include <stdint.h>
#include <stdio.h>

#include "log.h"

/* Read an n-byte big-endian unsigned integer. */
static uint64_t s_be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* The layout of the msgpack formats 0xc0..0xdf (the fix* formats and fixint
 * are decoded from the byte itself). */
typedef struct {
    bool valid;        /* false: 0xc1, never used */
    uint8_t hdr;       /* bytes of the length or count after the format byte */
    uint8_t skip;      /* fixed bytes after that */
    bool payload;      /* the length counts more bytes to skip */
    uint8_t container; /* count is of 1 (array) or 2 (map) objects each */
} s_format_t;

#define S_FORMAT_BASE 0xc0
static const s_format_t s_formats[] = {
    [0xc0 - S_FORMAT_BASE] = {true, 0, 0, false, 0},  /* nil */
    [0xc1 - S_FORMAT_BASE] = {false, 0, 0, false, 0}, /* never used */
    [0xc2 - S_FORMAT_BASE] = {true, 0, 0, false, 0},  /* false */
    [0xc3 - S_FORMAT_BASE] = {true, 0, 0, false, 0},  /* true */
    [0xc4 - S_FORMAT_BASE] = {true, 1, 0, true, 0},   /* bin 8 */
    [0xc5 - S_FORMAT_BASE] = {true, 2, 0, true, 0},   /* bin 16 */
    [0xc6 - S_FORMAT_BASE] = {true, 4, 0, true, 0},   /* bin 32 */
    [0xc7 - S_FORMAT_BASE] = {true, 1, 1, true, 0},   /* ext 8 (+ type) */
    [0xc8 - S_FORMAT_BASE] = {true, 2, 1, true, 0},   /* ext 16 */
    [0xc9 - S_FORMAT_BASE] = {true, 4, 1, true, 0},   /* ext 32 */
    [0xca - S_FORMAT_BASE] = {true, 0, 4, false, 0},  /* float 32 */
    [0xcb - S_FORMAT_BASE] = {true, 0, 8, false, 0},  /* float 64 */
    [0xcc - S_FORMAT_BASE] = {true, 0, 1, false, 0},  /* uint 8 */
    [0xcd - S_FORMAT_BASE] = {true, 0, 2, false, 0},  /* uint 16 */
    [0xce - S_FORMAT_BASE] = {true, 0, 4, false, 0},  /* uint 32 */
    [0xcf - S_FORMAT_BASE] = {true, 0, 8, false, 0},  /* uint 64 */
    [0xd0 - S_FORMAT_BASE] = {true, 0, 1, false, 0},  /* int 8 */
    [0xd1 - S_FORMAT_BASE] = {true, 0, 2, false, 0},  /* int 16 */
    [0xd2 - S_FORMAT_BASE] = {true, 0, 4, false, 0},  /* int 32 */
    [0xd3 - S_FORMAT_BASE] = {true, 0, 8, false, 0},  /* int 64 */
    [0xd4 - S_FORMAT_BASE] = {true, 0, 2, false, 0},  /* fixext 1 (+ type) */
    [0xd5 - S_FORMAT_BASE] = {true, 0, 3, false, 0},  /* fixext 2 */
    [0xd6 - S_FORMAT_BASE] = {true, 0, 5, false, 0},  /* fixext 4 */
    [0xd7 - S_FORMAT_BASE] = {true, 0, 9, false, 0},  /* fixext 8 */
    [0xd8 - S_FORMAT_BASE] = {true, 0, 17, false, 0}, /* fixext 16 */
    [0xd9 - S_FORMAT_BASE] = {true, 1, 0, true, 0},   /* str 8 */
    [0xda - S_FORMAT_BASE] = {true, 2, 0, true, 0},   /* str 16 */
    [0xdb - S_FORMAT_BASE] = {true, 4, 0, true, 0},   /* str 32 */
    [0xdc - S_FORMAT_BASE] = {true, 2, 0, false, 1},  /* array 16 */
    [0xdd - S_FORMAT_BASE] = {true, 4, 0, false, 1},  /* array 32 */
    [0xde - S_FORMAT_BASE] = {true, 2, 0, false, 2},  /* map 16 */
    [0xdf - S_FORMAT_BASE] = {true, 4, 0, false, 2},  /* map 32 */
};

/* The layout of the object starting with byte b. */
static s_format_t s_format(unsigned char b)
{
    if (b <= 0x7f || b >= 0xe0) return (s_format_t){.valid = true}; /* fixint */
    if (b <= 0x8f)
        return (s_format_t){.valid = true, .container = 2}; /* fixmap */
    if (b <= 0x9f)
        return (s_format_t){.valid = true, .container = 1}; /* fixarray */
    if (b <= 0xbf)
        return (s_format_t){.valid = true, .skip = b & 0x1f}; /* fixstr */
    return s_formats[b - S_FORMAT_BASE];
}

/* Walk one msgpack object at *pos without building it, so that msgpack
 * never sees a container bigger than the frame could hold, more than
 * PROTO_MAX_FIELDS entries, or nesting deeper than PROTO_MAX_DEPTH. */
static bool s_walk(const unsigned char *p, size_t len, size_t *pos, int depth,
                   char *err, size_t errlen)
{
    if (*pos >= len)
        return log_reason(err, errlen, "frame truncated at byte %zu", *pos);
    size_t at = (*pos)++;
    s_format_t fmt = s_format(p[at]);
    if (!fmt.valid)
        return log_reason(err, errlen, "invalid msgpack byte 0x%02x at %zu",
                          p[at], at);
    if (len - *pos < fmt.hdr)
        return log_reason(err, errlen, "frame truncated at byte %zu", *pos);
    uint64_t n = s_be(p + *pos, fmt.hdr); /* count or length */
    *pos += fmt.hdr;
    if (!fmt.container) {
        uint64_t skip = fmt.skip + (fmt.payload ? n : 0);
        if (skip > len - *pos)
            return log_reason(
                err, errlen,
                "object at byte %zu announces %llu bytes, only %zu "
                "left",
                at, (unsigned long long)skip, len - *pos);
        *pos += skip;
        return true;
    }
    if (!fmt.hdr) n = p[at] & 0x0f; /* fixmap, fixarray */
    if (n * fmt.container > len - *pos)
        return log_reason(
            err, errlen,
            "container at byte %zu announces %llu items, only %zu "
            "bytes left",
            at, (unsigned long long)n, len - *pos);
    if (depth >= PROTO_MAX_DEPTH)
        return log_reason(err, errlen,
                          "nested container at byte %zu (at most %d level)", at,
                          PROTO_MAX_DEPTH);
    if (n > PROTO_MAX_FIELDS)
        return log_reason(err, errlen,
                          "container at byte %zu has %llu entries, at most %d",
                          at, (unsigned long long)n, PROTO_MAX_FIELDS);
    for (uint64_t i = 0; i < n * fmt.container; i++)
        if (!s_walk(p, len, pos, depth + 1, err, errlen)) return false;
    return true;
}

bool proto_prescan(const void *buf, size_t len, char *err, size_t errlen)
{
    if (!buf || len == 0) return log_reason(err, errlen, "empty frame");
    if (len > PROTO_MAX_FRAME)
        return log_reason(err, errlen, "frame of %zu bytes, more than %d", len,
                          PROTO_MAX_FRAME);
    size_t pos = 0;
    if (!s_walk(buf, len, &pos, 0, err, errlen)) return false;
    if (pos != len)
        return log_reason(err, errlen, "%zu trailing bytes after the message",
                          len - pos);
    return true;
}
