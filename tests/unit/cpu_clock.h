/* tests/unit/cpu_clock.h - what the unit tests' million-chunk runs may
 * cost, and the clock they are timed on. */
#ifndef MAPPER_TEST_CPU_CLOCK_H
#define MAPPER_TEST_CPU_CLOCK_H

#include <time.h>

/* A million chunks through a state machine: far under this much CPU
 * (generous: a busy 2-core CI machine; sanitizers slow it down more). */
#if defined(__SANITIZE_ADDRESS__)
#define CPU_CLOCK_MILLION_MAX_S 8.0
#else
#define CPU_CLOCK_MILLION_MAX_S 2.0
#endif

/* This process's CPU time so far, in seconds. */
static inline double cpu_clock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
