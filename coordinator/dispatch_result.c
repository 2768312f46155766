/* coordinator/dispatch_result.c - what the dispatcher's chunk table says
 * at the end of a job: the counts of *out, each failed chunk's error (also
 * written to the ledger), all in one pass (dispatch_loop.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "dispatch_loop.h"
#include "ledger.h"
#include "log.h"

void dispatch_add(int64_t *sum, int64_t v)
{
    if (!__builtin_add_overflow(*sum, v, sum)) return;
    log_error("a count overflows: kept at its maximum");
    *sum = INT64_MAX;
}

void dispatch_fill_result(dispatch_loop_t *l)
{
    mapper_result *out = l->out;
    out->chunks_total = (int64_t)l->chunks.n;
    size_t nfail = 0;
    for (size_t i = 0; i < l->chunks.n; i++)
        if (l->chunks.v[i].state == CHUNKS_FAILED) nfail++;
    out->chunk_errors = nfail ? calloc(nfail, sizeof *out->chunk_errors) : NULL;
    if (nfail && !out->chunk_errors)
        log_error("out of memory for %zu chunk errors: the summary lists none "
                  "(the ledger still records them)",
                  nfail);
    for (size_t i = 0; i < l->chunks.n; i++) {
        chunks_chunk_t *c = &l->chunks.v[i];
        if (c->state == CHUNKS_DONE) {
            out->chunks_succeeded++;
            dispatch_add(&out->total_rows_successful, c->rows);
            dispatch_add(&out->rows_rejected, c->rejected);
            dispatch_add(&out->total_rows_failed, c->rejected);
            dispatch_add(&out->bytes, c->bytes);
        } else if (c->state == CHUNKS_FAILED) {
            static const pgutil_error_t none; /* its error was not kept */
            const pgutil_error_t *err = chunks_last_error(&l->chunks, i);
            const char *class_name = chunks_class(&l->chunks, i);
            if (!err) err = &none;
            out->chunks_failed++;
            dispatch_add(&out->total_rows_failed, c->est_rows);
            if (l->cfg->ledger) /* whether or not the summary has room */
                ledger_chunk_failed(l->cfg->ledger, (int64_t)i, c->attempts,
                                    err->message);
            if (!out->chunk_errors) continue; /* out of memory: counts only */
            mapper_chunk_error *e = &out->chunk_errors[out->n_chunk_errors++];
            e->chunk_id = (int64_t)i;
            e->attempts = c->attempts;
            snprintf(e->error, sizeof e->error, "%.*s",
                     (int)sizeof e->error - 1, err->message);
            snprintf(e->sqlstate, sizeof e->sqlstate, "%s", err->sqlstate);
            snprintf(e->side, sizeof e->side, "%s",
                     pgutil_side_name(err->side));
            snprintf(e->classification, sizeof e->classification, "%s",
                     class_name ? class_name : "other");
        }
    }
    out->total_rows_processed = out->total_rows_successful;
    dispatch_add(&out->total_rows_processed, out->total_rows_failed);
}
