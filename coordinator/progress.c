/* coordinator/progress.c - progress tracking for the coordinator: each chunk's
 * attempt state in a small hash table, committed counters, a ring of
 * throughput samples for the rate and ETA. O(1) per event (amortized: the
 * table doubles). Single-threaded, like the coordinator's loop; the lines
 * it is shown as are coordinator/report.c's. */
#include "progress.h"

#include "log.h"

#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A chunk's state; S_FREE marks an empty table slot (calloc'd). */
typedef enum { S_FREE = 0, S_WAITING, S_RUNNING, S_DONE, S_FAILED } s_state_t;

typedef struct {
    int64_t id;      /* chunk id */
    int64_t rows;    /* running attempt: rows copied so far */
    int64_t bytes;   /* running attempt: bytes copied so far */
    int32_t attempt; /* attempt running, or the last one that ran */
    s_state_t state; /* where the chunk stands */
} s_chunk_t;

/* The work counters at one instant, for the rate over a window. */
typedef struct {
    double t;      /* clock reading */
    int64_t rows;  /* work_rows then */
    int64_t bytes; /* work_bytes then */
    double busy_s; /* busy worker-seconds then */
} s_sample_t;

/* Throughput over the window ending now. */
typedef struct {
    double rows;       /* rows per second, all workers */
    double bytes;      /* bytes per second, all workers */
    double per_worker; /* rows per busy worker-second */
    double span;       /* seconds the rate was measured over */
} s_rate_t;

typedef enum {
    S_EV_STARTED,
    S_EV_ROWS,
    S_EV_COMMITTED,
    S_EV_ATTEMPT_FAILED,
    S_EV_FAILED
} s_kind_t;

/* One chunk event, as the public functions receive it. */
typedef struct {
    s_kind_t kind;    /* which event */
    int64_t chunk_id; /* the chunk */
    int32_t attempt;  /* the attempt (not for S_EV_FAILED) */
    int64_t rows;     /* rows copied, committed or failed (-1: unknown) */
    int64_t bytes;    /* bytes copied or committed */
    bool will_retry;  /* S_EV_ATTEMPT_FAILED: a retry follows */
} s_event_t;

struct progress_t {
    progress_callback_fn callback; /* NULL: none; fixed after _new */
    void *user;                    /* callback's argument; fixed */
    double interval;               /* seconds between callback calls */
    progress_clock_fn clock;       /* time source */
    void *clock_user;              /* its argument */
    double t_start;                /* clock when the tracker started */
    double t_finish;               /* clock at progress_finish */
    double t_fired;                /* clock at the last callback */
    bool finished;                 /* progress_finish was called */
    bool ok;                       /* no event lost to allocation failure */
    bool sampling;                 /* an attempt started: samples count */
    int64_t total_chunks;          /* planned chunks (0 = unknown) */
    int64_t rows_estimate;         /* planned rows (0 = unknown) */
    int workers;                   /* workers configured (0 = unknown) */
    int indexes_total;             /* deferred indexes to rebuild */
    int indexes_built;             /* of them, rebuilt */
    mapper_write_mode mode;        /* the job's --mode */
    int64_t run;                   /* the job's run (0: no ledger) */
    mapper_phase phase;            /* what the job is doing */
    bool phase_changed;            /* the next tick calls back */
    double swap_s;                 /* replace: the swap's seconds */
    s_chunk_t *table;              /* chunks by id, open addressing */
    size_t capacity;               /* slots in table (power of two or 0) */
    unsigned bits;                 /* log2(capacity) */
    size_t used;                   /* occupied slots */
    int64_t completed;             /* chunks committed */
    int64_t failed;                /* chunks failed for good */
    int64_t running;               /* attempts copying now */
    int64_t rows_ok;               /* rows of committed chunks */
    int64_t rows_failed;           /* rows of chunks failed for good */
    int64_t bytes_ok;              /* bytes of committed chunks */
    int64_t retries;               /* attempts failed with a retry to come */
    int64_t inflight_rows;         /* rows of running attempts */
    int64_t inflight_bytes;        /* bytes of running attempts */
    int64_t work_rows;             /* rows moved by any attempt (monotone) */
    int64_t work_bytes;            /* bytes moved by any attempt (monotone) */
    double busy_s;                 /* busy worker-seconds up to t_busy */
    double t_busy;                 /* when busy_s was last brought forward */
    s_sample_t ring[PROGRESS_RATE_SAMPLES]; /* throughput samples */
    size_t ring_next;                       /* slot the next sample goes to */
    size_t ring_len;                        /* samples held */
};

/* Why an event was not applied (NULL when it was). */
static const char s_no_memory[] = "out of memory";

static double s_default_clock(void *user)
{
    (void)user;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / PROGRESS_NS_PER_S;
}

static double s_now(const progress_t *self)
{
    return self->clock(self->clock_user);
}

static int64_t s_max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* *acc += v for counters >= 0, saturating instead of overflowing (the
 * figures come from workers: absurd ones must not be undefined behaviour). */
static void s_add(int64_t *acc, int64_t v)
{
    *acc = v > INT64_MAX - *acc ? INT64_MAX : *acc + v;
}

/* ---------------------------------------------------------------------
 * Chunk table */

static size_t s_slot(const progress_t *self, int64_t id)
{
    uint64_t h = (uint64_t)id * PROGRESS_HASH_MULTIPLIER;
    return (size_t)(h >> (sizeof h * CHAR_BIT - self->bits));
}

static s_chunk_t *s_find(const progress_t *self, int64_t id)
{
    if (self->capacity == 0) return NULL;
    size_t mask = self->capacity - 1;
    for (size_t i = s_slot(self, id);; i = (i + 1) & mask) {
        s_chunk_t *c = &self->table[i];
        if (c->state == S_FREE) return NULL;
        if (c->id == id) return c;
    }
}

/* Double the table (or create it); false when out of memory. */
static bool s_grow(progress_t *self)
{
    size_t capacity =
        self->capacity ? self->capacity * 2 : PROGRESS_TABLE_MIN_CAPACITY;
    if (capacity < self->capacity) return false;
    s_chunk_t *table = calloc(capacity, sizeof *table);
    if (!table) return false;
    s_chunk_t *old = self->table;
    size_t old_capacity = self->capacity;
    self->table = table;
    self->capacity = capacity;
    self->bits = (unsigned)__builtin_ctzll((unsigned long long)capacity);
    for (size_t i = 0; i < old_capacity; i++) {
        if (old[i].state == S_FREE) continue;
        size_t j = s_slot(self, old[i].id);
        while (table[j].state != S_FREE)
            j = (j + 1) & (capacity - 1);
        table[j] = old[i];
    }
    free(old);
    return true;
}

/* The chunk's entry, created (waiting) if new; NULL when out of memory. */
static s_chunk_t *s_find_or_add(progress_t *self, int64_t id)
{
    s_chunk_t *c = s_find(self, id);
    if (c) return c;
    if ((double)(self->used + 1) >
            (double)self->capacity * PROGRESS_TABLE_MAX_LOAD &&
        !s_grow(self))
        return NULL;
    size_t j = s_slot(self, id);
    while (self->table[j].state != S_FREE)
        j = (j + 1) & (self->capacity - 1);
    c = &self->table[j];
    *c = (s_chunk_t){.id = id, .state = S_WAITING};
    self->used++;
    return c;
}

/* ---------------------------------------------------------------------
 * Counting */

/* Busy worker-seconds up to now (attempts running x time). */
static double s_busy_at(const progress_t *self, double now)
{
    double dt = now > self->t_busy ? now - self->t_busy : 0.0;
    return self->busy_s + (double)self->running * dt;
}

/* Bring the busy worker-seconds forward before `running` changes. */
static void s_advance_busy(progress_t *self, double now)
{
    self->busy_s = s_busy_at(self, now);
    self->t_busy = now;
}

/* The i-th oldest sample held (i < ring_len). */
static const s_sample_t *s_ring(const progress_t *self, size_t i)
{
    size_t first = self->ring_next + PROGRESS_RATE_SAMPLES - self->ring_len;
    return &self->ring[(first + i) % PROGRESS_RATE_SAMPLES];
}

/* Record the work counters, at most once per PROGRESS_RATE_SAMPLE_GAP_S,
 * from the first attempt on (planning time is not copying time). */
static void s_sample(progress_t *self, double now)
{
    if (!self->sampling) return;
    if (self->ring_len > 0 &&
        now - s_ring(self, self->ring_len - 1)->t < PROGRESS_RATE_SAMPLE_GAP_S)
        return;
    self->ring[self->ring_next] = (s_sample_t){
        .t = now,
        .rows = self->work_rows,
        .bytes = self->work_bytes,
        .busy_s = s_busy_at(self, now),
    };
    self->ring_next = (self->ring_next + 1) % PROGRESS_RATE_SAMPLES;
    if (self->ring_len < PROGRESS_RATE_SAMPLES) self->ring_len++;
}

/* End the chunk's running attempt: its in-flight rows leave the counters. */
static void s_end_attempt(progress_t *self, s_chunk_t *c)
{
    self->inflight_rows -= c->rows;
    self->inflight_bytes -= c->bytes;
    self->running--;
    c->rows = 0;
    c->bytes = 0;
    c->state = S_WAITING;
}

/* Credit the running attempt with rows/bytes copied so far (never less). */
static void s_advance_attempt(progress_t *self, s_chunk_t *c, int64_t rows,
                              int64_t bytes)
{
    if (rows > c->rows) {
        s_add(&self->work_rows, rows - c->rows);
        s_add(&self->inflight_rows, rows - c->rows);
        c->rows = rows;
    }
    if (bytes > c->bytes) {
        s_add(&self->work_bytes, bytes - c->bytes);
        s_add(&self->inflight_bytes, bytes - c->bytes);
        c->bytes = bytes;
    }
}

/* Apply one event; NULL when applied, else why not. */
static const char *s_apply(progress_t *self, const s_event_t *ev)
{
    bool may_add = ev->kind == S_EV_STARTED || ev->kind == S_EV_COMMITTED ||
                   ev->kind == S_EV_FAILED;
    s_chunk_t *c = may_add ? s_find_or_add(self, ev->chunk_id)
                           : s_find(self, ev->chunk_id);
    if (!c) return may_add ? s_no_memory : "unknown chunk";
    if (c->state == S_DONE || c->state == S_FAILED)
        return "chunk already finished";
    bool other_attempt = c->state == S_RUNNING && c->attempt != ev->attempt;
    int64_t rows = ev->rows > 0 ? ev->rows : 0;
    int64_t bytes = ev->bytes > 0 ? ev->bytes : 0;

    switch (ev->kind) {
    case S_EV_STARTED:
        if (c->state == S_RUNNING && !other_attempt)
            return "attempt already running";
        if (c->state == S_RUNNING) s_end_attempt(self, c);
        c->state = S_RUNNING;
        c->attempt = ev->attempt;
        self->running++;
        self->sampling = true;
        return NULL;
    case S_EV_ROWS:
        if (c->state != S_RUNNING || other_attempt) return "stale attempt";
        s_advance_attempt(self, c, rows, bytes);
        return NULL;
    case S_EV_COMMITTED:
        if (other_attempt) return "stale attempt";
        if (c->state == S_RUNNING) {
            s_advance_attempt(self, c, rows, bytes);
            s_end_attempt(self, c);
        }
        c->state = S_DONE;
        self->completed++;
        s_add(&self->rows_ok, rows);
        s_add(&self->bytes_ok, bytes);
        return NULL;
    case S_EV_ATTEMPT_FAILED:
        if (c->state != S_RUNNING || other_attempt) return "stale attempt";
        s_end_attempt(self, c);
        if (ev->will_retry) self->retries++;
        return NULL;
    case S_EV_FAILED:
        if (c->state == S_RUNNING) s_end_attempt(self, c);
        c->state = S_FAILED;
        self->failed++;
        s_add(&self->rows_failed, rows);
        return NULL;
    }
    return "unknown event";
}

static const char *const s_kind_names[] = {
    [S_EV_STARTED] = "started",     [S_EV_ROWS] = "rows",
    [S_EV_COMMITTED] = "committed", [S_EV_ATTEMPT_FAILED] = "attempt failed",
    [S_EV_FAILED] = "failed",
};

/* Apply an event and take a sample; log what was not applied. */
static void s_handle(progress_t *self, const s_event_t *ev)
{
    assert(self);
    double now = s_now(self);
    s_advance_busy(self, now);
    const char *why = s_apply(self, ev);
    s_sample(self, now);
    bool first_loss = why == s_no_memory && self->ok;
    if (why == s_no_memory) self->ok = false;

    if (first_loss)
        log_error("progress: chunk %" PRId64 " attempt %" PRId32
                  ": %s event lost (%s); progress counts are no longer exact",
                  ev->chunk_id, ev->attempt, s_kind_names[ev->kind], why);
    else if (why && why != s_no_memory)
        log_debug("progress: chunk %" PRId64 " attempt %" PRId32
                  ": %s event ignored (%s)",
                  ev->chunk_id, ev->attempt, s_kind_names[ev->kind], why);
}

/* ---------------------------------------------------------------------
 * Snapshot: rate, percentage, ETA */

/* Throughput between the oldest sample inside the window (or, after a
 * silence longer than the window, the newest sample) and now. */
static bool s_rate(const progress_t *self, double now, s_rate_t *rate_out)
{
    if (self->ring_len == 0) return false;
    const s_sample_t *base = s_ring(self, self->ring_len - 1);
    for (size_t i = 0; i < self->ring_len; i++) {
        if (now - s_ring(self, i)->t <= PROGRESS_RATE_WINDOW_S) {
            base = s_ring(self, i);
            break;
        }
    }
    double span = now - base->t;
    if (span < PROGRESS_RATE_MIN_SPAN_S) return false;
    double rows = (double)(self->work_rows - base->rows);
    double busy = s_busy_at(self, now) - base->busy_s;
    *rate_out = (s_rate_t){
        .rows = rows / span,
        .bytes = (double)(self->work_bytes - base->bytes) / span,
        .per_worker = busy > 0.0 ? rows / busy : 0.0,
        .span = span,
    };
    return true;
}

/* Rows against the estimate; without one, finished chunks against the
 * total. Below 100 until complete. */
static double s_percentage(const mapper_progress_snapshot *s, bool complete)
{
    if (complete) return PROGRESS_PCT_MAX;
    double pct = 0.0;
    int64_t finished = s->completed_chunks + s->failed_chunks;
    if (s->rows_total_estimate > 0)
        pct = PROGRESS_PCT_MAX *
              ((double)s->total_rows_processed + (double)s->rows_in_flight) /
              (double)s->rows_total_estimate;
    else if (s->total_chunks > 0)
        pct = PROGRESS_PCT_MAX * (double)finished / (double)s->total_chunks;
    if (!(pct > 0.0)) return 0.0;
    return pct < PROGRESS_PCT_UNFINISHED_MAX ? pct
                                             : PROGRESS_PCT_UNFINISHED_MAX;
}

/* Rows still to copy: the estimate minus what is done; once the estimate
 * is used up (or without one), the average committed chunk times the
 * chunks left. Negative when unknown. */
static double s_rows_remaining(const mapper_progress_snapshot *s,
                               int64_t chunks_left)
{
    double done = (double)s->total_rows_processed + (double)s->rows_in_flight;
    if (s->rows_total_estimate > 0 && done < (double)s->rows_total_estimate)
        return (double)s->rows_total_estimate - done;
    if (s->completed_chunks > 0 && s->total_chunks > 0) {
        double per_chunk =
            (double)s->total_rows_successful / (double)s->completed_chunks;
        double left =
            per_chunk * (double)chunks_left - (double)s->rows_in_flight;
        return left > 0.0 ? left : 0.0;
    }
    return -1.0;
}

/* Rows in an average chunk: planned, or as committed so far. */
static double s_average_chunk_rows(const mapper_progress_snapshot *s)
{
    if (s->rows_total_estimate > 0 && s->total_chunks > 0)
        return (double)s->rows_total_estimate / (double)s->total_chunks;
    if (s->completed_chunks > 0)
        return (double)s->total_rows_successful / (double)s->completed_chunks;
    return 0.0;
}

/* ETA from the rows left, the rate per busy worker and how many workers
 * can still be busy. While chunks wait for a worker, all workers drain the
 * rows, and the last chunk handed out still needs about half a chunk more
 * than that (workers free up at staggered times). Once every chunk left is
 * running (the tail, fewer chunks than workers), the job ends with the
 * longest of them: for n staggered chunks about 2/(n+1) of the rows left. */
static void s_estimate(const progress_t *self, const s_rate_t *rate,
                       mapper_progress_snapshot *s)
{
    int64_t chunks_left =
        s->total_chunks - s->completed_chunks - s->failed_chunks;
    double remaining = s_rows_remaining(s, chunks_left);
    double pw = rate->per_worker;
    if (remaining < 0.0 || !(pw > 0.0)) return;
    if (s->progress_percentage / PROGRESS_PCT_MAX < PROGRESS_ETA_MIN_FRACTION &&
        rate->span < PROGRESS_ETA_MIN_SPAN_S)
        return;
    double eta;
    int64_t workers = self->workers > 0 ? self->workers : self->running;
    if (s->total_chunks > 0 && chunks_left < workers) workers = chunks_left;
    if (workers < 1) workers = 1;
    if (s->total_chunks == 0) {
        eta = remaining / (pw * (double)workers);
    } else if (chunks_left > self->running) {
        eta = remaining / (pw * (double)workers) +
              s_average_chunk_rows(s) / (2.0 * pw);
    } else {
        eta = 2.0 * remaining / ((double)(chunks_left + 1) * pw);
    }
    s->estimated_remaining_time = eta;
    s->eta_known = true;
}

static mapper_progress_snapshot s_compute(const progress_t *self, double now)
{
    int64_t finished = self->completed + self->failed;
    int64_t processed = self->rows_ok;
    s_add(&processed, self->rows_failed);
    mapper_progress_snapshot s = {
        .total_chunks =
            self->total_chunks > 0
                ? s_max64(self->total_chunks, finished + self->running)
                : 0,
        .completed_chunks = self->completed,
        .failed_chunks = self->failed,
        .chunks_in_progress = self->running,
        .total_rows_processed = processed,
        .total_rows_successful = self->rows_ok,
        .total_rows_failed = self->rows_failed,
        .elapsed_time = now > self->t_start ? now - self->t_start : 0.0,
        .estimated_remaining_time = PROGRESS_ETA_UNKNOWN,
        .eta_known = false,
        .rows_total_estimate = self->rows_estimate,
        .rows_in_flight = self->inflight_rows,
        .bytes_processed = self->bytes_ok,
        .retries = self->retries,
        .workers = self->workers,
        .workers_busy = self->running < INT_MAX ? (int)self->running : INT_MAX,
        .indexes_total = self->indexes_total,
        .indexes_built = self->indexes_built,
        .mode = self->mode,
        .run = self->run,
        .phase = self->phase,
        .swap_s = self->swap_s,
    };
    s_rate_t rate = {0};
    bool have_rate = s_rate(self, now, &rate);
    if (have_rate) {
        s.rows_per_second = rate.rows;
        s.bytes_per_second = rate.bytes;
    }
    bool complete =
        s.total_chunks > 0 && finished >= s.total_chunks && self->running == 0;
    s.progress_percentage = s_percentage(&s, complete);
    if (complete) {
        s.estimated_remaining_time = 0.0;
        s.eta_known = true;
    } else if (have_rate && !self->finished) {
        s_estimate(self, &rate, &s);
    }
    return s;
}

/* ---------------------------------------------------------------------
 * Public API */

progress_t *progress_new(int64_t total_chunks, progress_callback_fn callback,
                         void *user, double update_interval)
{
    if (total_chunks < 0) {
        log_error("progress: total chunks %" PRId64 " is negative",
                  total_chunks);
        return NULL;
    }
    progress_t *self = calloc(1, sizeof *self);
    if (!self) {
        log_error("progress: out of memory creating the tracker");
        return NULL;
    }
    self->callback = callback;
    self->user = user;
    self->interval = update_interval > 0.0 ? update_interval
                                           : PROGRESS_DEFAULT_UPDATE_INTERVAL_S;
    self->clock = s_default_clock;
    self->ok = true;
    self->total_chunks = total_chunks;
    self->t_start = self->t_fired = self->t_busy = s_now(self);
    return self;
}

void progress_destroy(progress_t **self_p)
{
    if (!self_p || !*self_p) return;
    progress_t *self = *self_p;
    free(self->table);
    free(self);
    *self_p = NULL;
}

void progress_set_clock(progress_t *self, progress_clock_fn clock, void *user)
{
    assert(self);
    self->clock = clock ? clock : s_default_clock;
    self->clock_user = clock ? user : NULL;
    self->t_start = self->t_fired = self->t_busy = s_now(self);
}

void progress_set_total_chunks(progress_t *self, int64_t total_chunks)
{
    assert(self);
    self->total_chunks = total_chunks > 0 ? total_chunks : 0;
}

void progress_set_rows_total_estimate(progress_t *self, int64_t rows)
{
    assert(self);
    self->rows_estimate = rows > 0 ? rows : 0;
}

void progress_set_workers(progress_t *self, int workers)
{
    assert(self);
    self->workers = workers > 0 ? workers : 0;
}

void progress_set_indexes(progress_t *self, int built, int total)
{
    assert(self);
    self->indexes_built = built > 0 ? built : 0;
    self->indexes_total = total > 0 ? total : 0;
    if (total > 0 && self->phase != MAPPER_PHASE_INDEXES)
        progress_set_phase(self, MAPPER_PHASE_INDEXES);
}

void progress_set_mode(progress_t *self, mapper_write_mode mode, int64_t run)
{
    assert(self);
    self->mode = mode;
    self->run = run > 0 ? run : 0;
}

void progress_set_phase(progress_t *self, mapper_phase phase)
{
    assert(self);
    self->phase = phase;
    self->phase_changed = true;
}

void progress_set_swap(progress_t *self, double seconds)
{
    assert(self);
    self->swap_s = seconds > 0 ? seconds : 0;
}

void progress_chunk_started(progress_t *self, int64_t chunk_id, int32_t attempt)
{
    s_handle(self, &(s_event_t){S_EV_STARTED, chunk_id, attempt, 0, 0, false});
}

void progress_chunk_rows(progress_t *self, int64_t chunk_id, int32_t attempt,
                         int64_t rows, int64_t bytes)
{
    s_handle(self,
             &(s_event_t){S_EV_ROWS, chunk_id, attempt, rows, bytes, false});
}

void progress_chunk_committed(progress_t *self, int64_t chunk_id,
                              int32_t attempt, int64_t rows, int64_t bytes)
{
    s_handle(self, &(s_event_t){S_EV_COMMITTED, chunk_id, attempt, rows, bytes,
                                false});
}

void progress_chunk_attempt_failed(progress_t *self, int64_t chunk_id,
                                   int32_t attempt, bool will_retry)
{
    s_handle(self, &(s_event_t){S_EV_ATTEMPT_FAILED, chunk_id, attempt, 0, 0,
                                will_retry});
}

void progress_chunk_failed(progress_t *self, int64_t chunk_id,
                           int64_t rows_failed)
{
    s_handle(self,
             &(s_event_t){S_EV_FAILED, chunk_id, 0, rows_failed, 0, false});
}

/* Take a sample; call back when the interval has passed or, once, when
 * finishing. */
static void s_tick(progress_t *self, bool finish)
{
    assert(self);
    mapper_progress_snapshot snap = {0};
    bool fire = false;
    if (!self->finished) {
        double now = s_now(self);
        s_advance_busy(self, now);
        s_sample(self, now);
        self->finished = finish;
        self->t_finish = now;
        fire = self->callback && (finish || self->phase_changed ||
                                  now - self->t_fired >= self->interval);
        self->phase_changed = false;
        if (fire) {
            self->t_fired = now;
            snap = s_compute(self, now);
        }
    }
    if (fire) self->callback(&snap, self->user);
}

void progress_tick(progress_t *self)
{
    s_tick(self, false);
}

void progress_finish(progress_t *self)
{
    s_tick(self, true);
}

mapper_progress_snapshot progress_snapshot(progress_t *self)
{
    assert(self);
    double now = self->finished ? self->t_finish : s_now(self);
    mapper_progress_snapshot snap = s_compute(self, now);
    return snap;
}

bool progress_ok(progress_t *self)
{
    assert(self);
    bool ok = self->ok;
    return ok;
}
