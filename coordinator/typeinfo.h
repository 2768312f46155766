/* coordinator/typeinfo.h - what a column's type allows COPY to do: binary
 * send/receive, whether its text depends on lc_monetary, whether COPY FROM
 * can load it at all; looked at through arrays, domains, composites and
 * ranges. */
#ifndef MAPPER_TYPEINFO_H
#define MAPPER_TYPEINFO_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "proto.h"

/* One type, with every type inside it. */
typedef struct {
    char *name;       /* format_type of the type, for messages */
    bool binary;      /* all have binary send and receive functions */
    bool money;       /* money is among them: its text follows lc_monetary */
    char *unloadable; /* one that COPY FROM cannot load (a pseudo-type, or an
                         input function that refuses every value), or NULL */
} typeinfo_t;

/* Look up n types (OIDs as text) on conn; *out_p (malloc'd, n entries,
 * free with typeinfo_free) in the same order. Logs and returns false on
 * failure. */
bool typeinfo_load(PGconn *conn, proto_side_t side, const char *const *types,
                   int n, typeinfo_t **out_p)
    __attribute__((warn_unused_result));

void typeinfo_free(typeinfo_t **self_p, int n);

#endif
