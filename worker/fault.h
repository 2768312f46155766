/* worker/fault.h - test-only fault injection: $MAPPER_FAULT names a point
 * where the worker dies or holds, so that tests need not race it. */
#ifndef MAPPER_FAULT_H
#define MAPPER_FAULT_H

#include <stdbool.h>
#include <stdint.h>

/* Test-only fault injection: when $MAPPER_FAULT is POINT:CHUNK and this is
 * CHUNK's first attempt reaching POINT (mid-copy, before-commit,
 * after-commit; a stream reader's first attempt: after-send, once it sent
 * CHUNK), the process SIGKILLs itself. With pause-POINT:CHUNK it holds
 * there instead: when $MAPPER_FAULT_RELEASE names a file, any attempt
 * holds until that file exists (so a test decides when the job goes on; a
 * signal, or two minutes, end a hold too); without it, the first attempt
 * holds for a few seconds. CHUNK "*" is any chunk. Inert otherwise. */
void fault_at(const char *point, int64_t chunk_id, int32_t attempt);

/* Test-only: whether $MAPPER_FAULT is POINT:CHUNK (or POINT:*) and this
 * is a first attempt; the caller then misbehaves on purpose (a stream
 * reader at ignore-credit sends CHUNK without waiting for credit). */
bool fault_hit(const char *point, int64_t chunk_id, int32_t attempt);

#endif
