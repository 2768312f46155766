/* coordinator/reject_buf.c - an attempt's rejected rows, held until it
 * commits (reject.h). Apart from reject.c so that the ledger, which loads
 * them, and the reject file, which reads the ledger, do not call each
 * other. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "reject.h"

bool reject_buf_take(reject_buf_t *buf, proto_msg_t *msg)
{
    if (buf->n == buf->cap) {
        size_t cap = buf->cap ? buf->cap * 2 : 16;
        reject_row_t *v = realloc(buf->v, cap * sizeof *v);
        if (!v) {
            log_error("out of memory holding rejected rows");
            return false;
        }
        buf->v = v;
        buf->cap = cap;
    }
    reject_row_t *r = &buf->v[buf->n++];
    r->row_index = msg->row_index;
    memcpy(r->sqlstate, msg->sqlstate, sizeof r->sqlstate);
    r->message = msg->message;
    r->row = msg->row;
    msg->message = msg->row = NULL;
    return true;
}

void reject_buf_clear(reject_buf_t *buf)
{
    for (size_t i = 0; i < buf->n; i++) {
        free(buf->v[i].message);
        free(buf->v[i].row);
    }
    free(buf->v);
    memset(buf, 0, sizeof *buf);
}
