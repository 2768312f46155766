/* common/growbuf.h - growing a byte buffer by doubling, the one way the
 * coordinator and the workers do it for rows held in memory. */
#ifndef MAPPER_GROWBUF_H
#define MAPPER_GROWBUF_H

#include <stdbool.h>
#include <stddef.h>

/* Make room for need bytes at *data (capacity *cap): doubled from *cap, or
 * from first when empty. On failure *data and *cap are unchanged. */
bool growbuf_reserve(char **data, size_t *cap, size_t need, size_t first)
    __attribute__((warn_unused_result));

#endif
