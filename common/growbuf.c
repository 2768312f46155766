/* common/growbuf.c - growing a byte buffer by doubling (growbuf.h). */
#include "growbuf.h"

#include <stdlib.h>

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
