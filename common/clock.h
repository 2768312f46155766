/* common/clock.h - the one clock both processes read: monotonic seconds.
 * Modules that decide by time take a clock_fn so tests can inject one. */
#ifndef MAPPER_CLOCK_H
#define MAPPER_CLOCK_H

/* A clock: seconds on a monotonic scale (only differences mean anything). */
typedef double (*clock_fn)(void);

/* CLOCK_MONOTONIC in seconds, as a double. */
double clock_now(void);

#endif
