/* common/growbuf.h - growing a byte buffer or an array by doubling, the
 * one way the coordinator and the workers do it. */
#ifndef MAPPER_GROWBUF_H
#define MAPPER_GROWBUF_H

#include <stdbool.h>
#include <stddef.h>

/* Make room for need bytes at *data (capacity *cap): doubled from *cap, or
 * from first when empty. On failure *data and *cap are unchanged. */
bool growbuf_reserve(char **data, size_t *cap, size_t need, size_t first)
    __attribute__((warn_unused_result));

/* Make room in an array *v of *cap entries of size bytes, used of them
 * taken, for one more: doubled from *cap, or first entries when empty.
 * False (logged, naming what) when out of memory; *v is then unchanged. */
bool growbuf_room(void **v, size_t *cap, size_t used, size_t size, size_t first,
                  const char *what) __attribute__((warn_unused_result));

#endif
