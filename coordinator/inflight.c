/* coordinator/inflight.c - stream mode's chunks in memory (inflight.h). */
#include "inflight.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "growbuf.h"
#include "log.h"

/* Odd 64-bit constants for mixing (golden ratio; a murmur finaliser's). */
#define INFLIGHT_MIX_K1 0x9e3779b97f4a7c15ull
#define INFLIGHT_MIX_K2 0xff51afd7ed558ccdull
/* A chunk's buffer starts this big, and doubles. */
#define INFLIGHT_FIRST_BYTES (256 * 1024)

static uint64_t s_mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * INFLIGHT_MIX_K1;
    return h << 31 | h >> 33;
}

void inflight_digest_init(inflight_digest_t *d)
{
    memset(d, 0, sizeof *d);
    d->h = INFLIGHT_MIX_K2;
}

void inflight_digest_add(inflight_digest_t *d, const void *p, size_t n)
{
    const unsigned char *b = p;
    d->length += n;
    while (n > 0 && d->ntail > 0) { /* finish the word begun before */
        d->tail |= (uint64_t)*b++ << (8 * d->ntail);
        n--;
        if (++d->ntail == 8) {
            d->h = s_mix(d->h, d->tail);
            d->tail = 0;
            d->ntail = 0;
        }
    }
    for (; n >= 8; n -= 8, b += 8) {
        uint64_t w = 0;
        for (int i = 7; i >= 0; i--)
            w = w << 8 | b[i];
        d->h = s_mix(d->h, w);
    }
    for (; n > 0; n--)
        d->tail |= (uint64_t)*b++ << (8 * d->ntail++);
}

uint64_t inflight_digest_end(const inflight_digest_t *d)
{
    uint64_t h = s_mix(s_mix(d->h, d->tail), d->length);
    h ^= h >> 33;
    h *= INFLIGHT_MIX_K2;
    return h ^ h >> 29;
}

void inflight_init(inflight_t *s, int64_t max_held)
{
    memset(s, 0, sizeof *s);
    s->max_held = max_held;
    inflight_digest_init(&s->at_digest);
}

void inflight_free(inflight_t *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->chunks[i].data);
    free(s->chunks);
    memset(s, 0, sizeof *s);
}

void inflight_restart(inflight_t *s)
{
    if (s->at == s->known && s->chunks) { /* a new chunk was arriving */
        inflight_chunk_t *c = &s->chunks[s->known];
        s->bytes_held -= (int64_t)c->len;
        free(c->data);
        memset(c, 0, sizeof *c);
    }
    s->at = 0;
    s->at_rows = 0;
    s->at_len = 0;
    inflight_digest_init(&s->at_digest);
}

void inflight_release(inflight_t *s, int64_t chunk)
{
    if (chunk < 0 || chunk >= s->known || !s->chunks[chunk].data) return;
    inflight_chunk_t *c = &s->chunks[chunk];
    s->bytes_held -= (int64_t)c->len;
    free(c->data);
    c->data = NULL;
    c->cap = 0;
    s->held--;
}

int64_t inflight_limit(const inflight_t *s)
{
    int64_t room = s->max_held - s->held;
    return s->known + (room > 0 ? room : 0);
}

/* Room for chunk `known` (the one arriving) and n more of its bytes. */
static bool s_reserve(inflight_t *s, size_t n)
{
    if ((size_t)s->known >= s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        inflight_chunk_t *c = realloc(s->chunks, cap * sizeof *c);
        if (!c) return false;
        memset(c + s->cap, 0, (cap - s->cap) * sizeof *c);
        s->chunks = c;
        s->cap = cap;
    }
    inflight_chunk_t *c = &s->chunks[s->known];
    return growbuf_reserve(&c->data, &c->cap, c->len + n, INFLIGHT_FIRST_BYTES);
}

inflight_event_t inflight_on_data(inflight_t *s, const proto_msg_t *m,
                                  int64_t *chunk_out)
{
    *chunk_out = m->chunk_id;
    if (m->chunk_id != s->at || s->at > s->known) {
        log_error("stream: data for chunk %" PRId64 ", expected chunk %" PRId64,
                  m->chunk_id, s->at);
        return INFLIGHT_BAD;
    }
    if (m->chunk_id >= inflight_limit(s)) {
        log_error("stream: data for chunk %" PRId64 " is beyond the reader's "
                  "credit (chunks below %" PRId64 ")",
                  m->chunk_id, inflight_limit(s));
        return INFLIGHT_OVER_CREDIT;
    }
    if ((s->chunk_rows > 0 && m->rows > s->chunk_rows - s->at_rows) ||
        (int64_t)m->data_len > INFLIGHT_MAX_CHUNK_BYTES - (int64_t)s->at_len) {
        log_error("stream: chunk %" PRId64 " grows past %" PRId64
                  " rows or %" PRId64 " bytes",
                  m->chunk_id, s->chunk_rows, INFLIGHT_MAX_CHUNK_BYTES);
        return INFLIGHT_OVER_SIZE;
    }
    inflight_digest_add(&s->at_digest, m->data, m->data_len);
    s->at_rows += m->rows;
    s->at_len += m->data_len;
    if (s->at == s->known) { /* a chunk never seen: keep its rows */
        if (!s_reserve(s, m->data_len)) {
            log_error("stream: out of memory for chunk %" PRId64, s->at);
            return INFLIGHT_BAD;
        }
        inflight_chunk_t *c = &s->chunks[s->known];
        if (m->data_len) memcpy(c->data + c->len, m->data, m->data_len);
        c->len += m->data_len;
        s->bytes_held += (int64_t)m->data_len;
    }
    if (!m->last) return INFLIGHT_MORE;
    inflight_event_t ev = INFLIGHT_COMPLETE;
    if (s->at < s->known) {
        const inflight_chunk_t *c = &s->chunks[s->at];
        ev = c->digest == inflight_digest_end(&s->at_digest) &&
                     c->rows == s->at_rows
                 ? INFLIGHT_SAME
                 : INFLIGHT_DIFFERS;
    } else {
        inflight_chunk_t *c = &s->chunks[s->known];
        c->rows = s->at_rows;
        c->digest = inflight_digest_end(&s->at_digest);
        s->known++;
        s->held++;
    }
    s->at++;
    s->at_rows = 0;
    s->at_len = 0;
    inflight_digest_init(&s->at_digest);
    return ev;
}
