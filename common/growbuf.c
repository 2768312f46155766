/* common/growbuf.c - growing a byte buffer or an array by doubling
 * (growbuf.h). */
#include "growbuf.h"

#include <stdlib.h>

#include "log.h"

bool growbuf_reserve(char **data, size_t *cap, size_t need, size_t first)
{
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : first;
    while (n < need)
        n *= 2;
    char *d = realloc(*data, n);
    if (!d) return false;
    *data = d;
    *cap = n;
    return true;
}

bool growbuf_room(void **v, size_t *cap, size_t used, size_t size, size_t first,
                  const char *what)
{
    if (used < *cap) return true;
    size_t ncap = *cap ? *cap * 2 : first;
    void *nv = realloc(*v, ncap * size);
    if (!nv) {
        log_error("out of memory for %zu %s", ncap, what);
        return false;
    }
    *v = nv;
    *cap = ncap;
    return true;
}
