/* coordinator/hold.h - test-only: hold the coordinator at a named point, so
 * that a test can act (kill -9, look) there without racing it. */
#ifndef MAPPER_HOLD_H
#define MAPPER_HOLD_H

/* When $MAPPER_FAULT is "pause-POINT:k" and $MAPPER_FAULT_RELEASE names a
 * file that does not exist yet: log that it holds, and hold until the
 * file exists (or a few minutes passed). Inert otherwise. */
void hold_at(const char *point, int k);

/* The same hold in two halves, for a point where nothing but
 * async-signal-safe calls may run (a child between fork and exec):
 * hold_armed, called before, gives the release file when the hold at
 * (point, k) is armed, else NULL; hold_until(release) then holds without
 * a word (at once when release is NULL). */
const char *hold_armed(const char *point, int k);
void hold_until(const char *release);

#endif
