/* coordinator/main.c - mapper-coord: the command line around
 * mapper_job_run(). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "curve.h"
#include "defaults.h"
#include "log.h"
#include "mapper.h"
#include "summary_file.h"

static void s_help(FILE *out)
{
    fprintf(
        out,
        "usage: mapper-coord --table [SCHEMA.]TABLE [options]\n"
        "       mapper-coord --query SQL --target-table TABLE [options]\n"
        "\n"
        "Copy a PostgreSQL table (or a query's result) from a source database\n"
        "into a target table, in parallel chunks, each in its own target\n"
        "transaction, all read from one consistent snapshot of the source.\n"
        "\n"
        "  --source CONNINFO      source connection string or URI\n"
        "                         (default: $" MAPPER_ENV_SOURCE
        ", then libpq's PG* defaults)\n"
        "  --target CONNINFO      target connection string or URI\n"
        "                         (default: $" MAPPER_ENV_TARGET
        ", then libpq's PG* defaults)\n"
        "  --table NAME           source table, SQL syntax: sales.orders or\n"
        "                         '\"Sales\".\"Order Items\"' (or --query)\n"
        "  --query SQL            copy the result of one SELECT instead of a\n"
        "                         table (anything else is refused); with\n"
        "                         --split-by it runs once per chunk, so it\n"
        "                         must be deterministic; without, once\n"
        "  --query-file FILE      the same, the SELECT read from FILE\n"
        "  --target-table NAME    target table (default: same as --table;\n"
        "                         required with --query); columns are\n"
        "                         matched by name\n"
        "  --if-target-missing create|fail\n"
        "                         a missing target table is created with the\n"
        "                         source's column names and types, without\n"
        "                         constraints or defaults (user-defined types\n"
        "                         must exist on the target), or refused\n"
        "                         (default: create; never with --resume)\n"
        "  --columns A,B,C        copy only these source columns (names as\n"
        "                         stored, case-sensitive; default: all)\n"
        "  --workers N            local worker processes, 1..%d\n"
        "                         (default: number of CPUs; stream mode\n"
        "                         starts one more, the reader)\n"
        "  --chunk-size ROWS      rows per chunk, a target (default: %d)\n"
        "  --split-by COLUMN      integer column to range-split on (default:\n"
        "                         the single-column integer primary key, else\n"
        "                         ctid page ranges; a query without it is\n"
        "                         read once and cut as it streams)\n"
        "  --max-inflight-chunks N  stream mode (a query without --split-by):\n"
        "                         chunks held in memory at most (default: 2\n"
        "                         per worker); the reader waits for room\n"
        "  --summary-json FILE    also write the result as JSON to FILE\n"
        "\n"
        "Retries (a failed chunk runs again when its error is transient:\n"
        "connection lost, deadlock, serialization, shutdown, a crashed\n"
        "worker; never for syntax, data, integrity or privilege errors):\n"
        "  --max-retries N        retries after the first attempt (default 3;\n"
        "                         env MAPPER_PARALLEL_MAX_RETRIES)\n"
        "  --initial-delay S      delay before the first retry (default 1.0)\n"
        "  --max-delay S          cap on any delay (default 60.0)\n"
        "  --backoff-base X       delay growth per retry (default 2.0)\n"
        "  --no-jitter            exact delays instead of uniform in [0, d]\n"
        "  --retry-deadline S     no retry starts later than S seconds after\n"
        "                         the chunk's first attempt (default: off)\n"
        "  --no-retry             never retry (env\n"
        "                         MAPPER_PARALLEL_RETRY_ENABLED=false)\n"
        "  --outage-timeout S     a database unreachable from several chunks\n"
        "                         in a row pauses dispatch while it is "
        "probed;\n"
        "                         give up after S seconds (default 300)\n"
        "\n"
        "Exactly once and resuming (a ledger in the target records each\n"
        "chunk in the same transaction as its rows):\n"
        "  --job-id NAME          the job's id (default: derived from the\n"
        "                         tables or query, columns, split and chunk\n"
        "                         size)\n"
        "  --state-schema NAME    the ledger's schema in the target (default\n"
        "                         mapper; created on first use)\n"
        "  --resume               continue job NAME: skip its done chunks\n"
        "                         (not a stream job nor a table cut into\n"
        "                         ctid page ranges: those start over with\n"
        "                         --restart --truncate)\n"
        "  --resume=auto          for supervisors: start job NAME if it is\n"
        "                         new, continue it if unfinished, exit 0 at\n"
        "                         once if done (env " MAPPER_ENV_RESUME
        "=auto)\n"
        "  --restart              discard job NAME's ledger and start afresh\n"
        "                         (target data is not touched)\n"
        "  --truncate             empty the target table first (a fresh job,\n"
        "                         or a stream or ctid job restarted; never\n"
        "                         with --resume)\n"
        "  --no-ledger            no ledger (no schema is created); a\n"
        "                         retried chunk may then be duplicated\n"
        "  --grace S              after SIGINT/SIGTERM running chunks may\n"
        "                         finish for S seconds (default 30)\n"
        "  --defer-indexes MODE   auto: drop the indexes and constraints of\n"
        "                         an empty target that are safe to drop,\n"
        "                         rebuild them after the load (default);\n"
        "                         on: every one that can be dropped; off:\n"
        "                         keep them all\n"
        "  --mode MODE            append: add the rows (default; a finished\n"
        "                         job is not run again); replace: load a new\n"
        "                         table beside the target, swap it in at the\n"
        "                         end; upsert: merge each\n"
        "                         chunk on --key, inserting new keys and\n"
        "                         updating changed rows (target rows absent\n"
        "                         from the source are kept)\n"
        "  --key A,B              upsert: the key columns; the target needs a\n"
        "                         unique index or constraint on exactly them\n"
        "\n"
        "Bad rows (a row the target refuses for its data, SQLSTATE class 22\n"
        "or 23, e.g. a CHECK violation or a value of the wrong type):\n"
        "  --on-bad-rows MODE     fail: the row's chunk fails (default);\n"
        "                         reject: the row is set aside and the rest\n"
        "                         of its chunk loads\n"
        "  --reject-file FILE     reject: append the rows (COPY text) to FILE\n"
        "                         and one line per row to FILE.log:\n"
        "                         chunk C row R SQLSTATE message (required)\n"
        "  --max-rejects N        reject: fail the job once more than N rows\n"
        "                         are rejected (default: no limit)\n"
        "\n"
        "Remote workers (mapper-worker --connect tcp://HOST:PORT on other\n"
        "hosts; they bring their own connection strings):\n"
        "  --listen tcp://ADDR:PORT  accept remote workers there too\n"
        "  --workers 0            remote workers only (needs --listen)\n"
        "  --worker-timeout S     a remote worker silent for S seconds loses\n"
        "                         its chunk (default 30)\n"
        "  --curve-secret-key FILE  CURVE: the coordinator's secret key\n"
        "  --curve-allow FILE|DIR   CURVE: allowed workers' public keys (a "
        "file\n"
        "                         of keys, or a directory of *.pub files)\n"
        "  --insecure             allow --listen on plain TCP (no CURVE),\n"
        "                         loopback included: any process that\n"
        "                         reaches the port may take chunks\n"
        "  mapper-coord keygen NAME  write NAME.key (secret) and NAME.pub\n"
        "\n"
        "Progress (rows, rate, ETA from rows; on by default):\n"
        "  --progress MODE        auto (bar on a terminal, else log), bar,\n"
        "                         log (key=value lines), json (JSON lines),\n"
        "                         none (default: auto)\n"
        "  --progress-interval S  seconds between log/json lines (default 2)\n"
        "  --progress-file FILE   append progress lines to FILE, not stderr\n"
        "  --no-progress          no progress output (env\n"
        "                         MAPPER_PARALLEL_PROGRESS_ENABLED=false)\n"
        "  -v, --verbose          more log lines (debug)\n"
        "  -q, --quiet            errors only, no summary table\n"
        "  -h, --help             this help\n"
        "  -V, --version          print the version\n"
        "\n"
        "Environment: " MAPPER_ENV_WORKER_BIN
        " (path of mapper-worker). Passwords given\n"
        "in --source/--target are hidden from ps and never logged; workers\n"
        "get connection strings through their environment.\n"
        "\n"
        "While it runs a coordinator holds a lock on its job in the target:\n"
        "a second coordinator of the same job is refused (exit 3).\n"
        "\n"
        "Exit status: 0 every chunk done; 1 finished with failed chunks or\n"
        "rejected rows; 2 usage or configuration error; 3 could not run\n"
        "(database unreachable, a table, column or type missing, the job\n"
        "running elsewhere); 75\n"
        "interrupted by SIGINT/SIGTERM (resumable: the command to resume is\n"
        "printed).\n",
        MAPPER_MAX_WORKERS, MAPPER_DEFAULT_CHUNK_SIZE);
}

/* Parse a whole decimal integer in [min, max]. */
static bool s_parse_int(const char *opt, const char *s, int64_t min,
                        int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        log_error("%s: expected a whole number from %" PRId64 " to %" PRId64
                  ", got '%s'",
                  opt, min, max, s);
        return false;
    }
    *out = v;
    return true;
}

/* Parse a finite decimal number >= 0. */
static bool s_parse_seconds(const char *opt, const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > 1e9) {
        log_error("%s: expected a number of seconds >= 0, got '%s'", opt, s);
        return false;
    }
    *out = v;
    return true;
}

/* --resume (plain) or --resume=auto; value NULL is the plain form. */
static bool s_parse_resume(const char *value, mapper_job_spec *spec)
{
    if (value && strcmp(value, MAPPER_RESUME_AUTO)) return false;
    spec->resume = !value;
    spec->resume_auto = value != NULL;
    return true;
}

/* MAPPER_RESUME=auto: --resume=auto unless the command line says otherwise
 * (the only value it takes). */
static bool s_resume_env(mapper_job_spec *spec, char *err, size_t errlen)
{
    const char *v = getenv(MAPPER_ENV_RESUME);
    if (!v || !*v) return true;
    if (s_parse_resume(v, spec)) return true;
    snprintf(err, errlen, "%s: expected auto, got '%.64s'", MAPPER_ENV_RESUME,
             v);
    return false;
}

static bool s_parse_progress(const char *s, mapper_progress_mode *out)
{
    static const char *const names[] = {"auto", "bar", "log", "json", "none"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i])) {
            *out = (mapper_progress_mode)i;
            return true;
        }
    log_error("--progress: expected auto, bar, log, json or none, got '%s'", s);
    return false;
}

/* After an interruption, print the command that resumes the job: this
 * one's arguments (passwords already scrubbed) with --resume and the id;
 * a stream job or one cut into ctid page ranges cannot resume, it starts
 * over with --restart --truncate. */
static void s_print_resume(int argc, char **argv, const char *job_id,
                           bool stream, bool restart_only)
{
    fprintf(stderr, "interrupted: %s:\n ",
            stream         ? "a stream job starts over (its committed rows "
                             "are emptied first); run"
            : restart_only ? "a job cut into ctid page ranges starts over "
                             "(its committed rows are emptied first); run"
                           : "resume with");
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--restart") || !strcmp(argv[i], "--truncate"))
            continue;
        bool plain = strspn(argv[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM"
                                     "NOPQRSTUVWXYZ0123456789-_./=:@,") ==
                     strlen(argv[i]);
        if (plain) {
            fprintf(stderr, " %s", argv[i]);
            continue;
        }
        fputs(" '", stderr);
        for (const char *c = argv[i]; *c; c++) /* ' becomes '\'' */
            if (*c == '\'')
                fputs("'\\''", stderr);
            else
                fputc(*c, stderr);
        fputc('\'', stderr);
    }
    fprintf(stderr, " %s --job-id %s\n",
            restart_only ? "--restart --truncate" : "--resume", job_id);
}

/* The whole of path (malloc'd, NUL-terminated), or NULL with one line
 * logged. */
static char *s_read_file(const char *opt, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        log_error("%s %s: %s", opt, path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    bool ok = true;
    int c;
    while (ok && (c = getc(f)) != EOF) {
        if (len + 1 >= cap) {
            char *b = realloc(buf, cap = cap ? cap * 2 : 4096);
            ok = b != NULL;
            buf = ok ? b : buf;
        }
        if (ok && c == '\0') {
            log_error("%s %s: the file holds a NUL byte", opt, path);
            ok = false;
        } else if (ok) {
            buf[len++] = (char)c;
        }
    }
    if (ok && ferror(f)) {
        log_error("%s %s: %s", opt, path, strerror(errno));
        ok = false;
    }
    fclose(f);
    if (ok && !buf) ok = (buf = malloc(1)) != NULL;
    if (!ok) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* mapper-coord keygen NAME: NAME.key (secret, 0600) and NAME.pub. */
static int s_keygen(int argc, char **argv)
{
    char err[512];
    if (argc != 3) {
        log_error("usage: mapper-coord keygen NAME");
        return MAPPER_EXIT_USAGE;
    }
    if (!curve_keygen(argv[2], err, sizeof err)) {
        log_error("%s", err);
        return MAPPER_EXIT_CANNOT_RUN;
    }
    printf("wrote %s.key (secret, mode 0600) and %s.pub (public)\n", argv[2],
           argv[2]);
    return MAPPER_EXIT_OK;
}

enum {
    OPT_SOURCE = 256,
    OPT_TARGET,
    OPT_TABLE,
    OPT_TARGET_TABLE,
    OPT_WORKERS,
    OPT_CHUNK,
    OPT_SPLIT,
    OPT_JSON,
    OPT_MAX_RETRIES,
    OPT_INITIAL_DELAY,
    OPT_MAX_DELAY,
    OPT_BASE,
    OPT_NO_JITTER,
    OPT_NO_RETRY,
    OPT_DEADLINE,
    OPT_OUTAGE,
    OPT_PROGRESS,
    OPT_PROGRESS_INTERVAL,
    OPT_NO_PROGRESS,
    OPT_PROGRESS_FILE,
    OPT_JOB_ID,
    OPT_STATE_SCHEMA,
    OPT_RESUME,
    OPT_RESTART,
    OPT_TRUNCATE,
    OPT_NO_LEDGER,
    OPT_GRACE,
    OPT_LISTEN,
    OPT_INSECURE,
    OPT_WORKER_TIMEOUT,
    OPT_CURVE_SECRET,
    OPT_CURVE_ALLOW,
    OPT_MAX_INFLIGHT,
    OPT_QUERY,
    OPT_QUERY_FILE,
    OPT_COLUMNS,
    OPT_IF_TARGET_MISSING,
    OPT_ON_BAD_ROWS,
    OPT_REJECT_FILE,
    OPT_MAX_REJECTS,
    OPT_DEFER_INDEXES,
    OPT_MODE,
    OPT_KEY,
};

/* --defer-indexes auto|on|off. */
static bool s_parse_defer(const char *arg, mapper_defer_indexes *out)
{
    static const char *const names[] = {[MAPPER_DEFER_AUTO] = "auto",
                                        [MAPPER_DEFER_ON] = "on",
                                        [MAPPER_DEFER_OFF] = "off"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(arg, names[i])) {
            *out = (mapper_defer_indexes)i;
            return true;
        }
    log_error("--defer-indexes: expected auto, on or off, got '%s'", arg);
    return false;
}

/* What the command line gives besides the job spec. */
typedef struct {
    mapper_job_spec spec; /* the job */
    const char *json;     /* --summary-json FILE, or NULL */
    bool quiet;           /* -q: no summary table */
    char *source;         /* --source, password hidden in argv (heap) */
    char *target;         /* --target, likewise (heap) */
    char *query_file;     /* --query-file's text (heap), or NULL */
    int query_options;    /* --query and --query-file given */
} s_cli_t;

/* The option functions' answers besides an exit code. */
#define S_OPTION_NEXT  (-1) /* taken: go on */
#define S_OPTION_OTHER (-2) /* not one of this function's options */

/* The long options (getopt_long). */
static const struct option s_opts[] = {
    {"source", required_argument, 0, OPT_SOURCE},
    {"target", required_argument, 0, OPT_TARGET},
    {"table", required_argument, 0, OPT_TABLE},
    {"target-table", required_argument, 0, OPT_TARGET_TABLE},
    {"workers", required_argument, 0, OPT_WORKERS},
    {"chunk-size", required_argument, 0, OPT_CHUNK},
    {"split-by", required_argument, 0, OPT_SPLIT},
    {"summary-json", required_argument, 0, OPT_JSON},
    {"max-retries", required_argument, 0, OPT_MAX_RETRIES},
    {"initial-delay", required_argument, 0, OPT_INITIAL_DELAY},
    {"max-delay", required_argument, 0, OPT_MAX_DELAY},
    {"backoff-base", required_argument, 0, OPT_BASE},
    {"no-jitter", no_argument, 0, OPT_NO_JITTER},
    {"no-retry", no_argument, 0, OPT_NO_RETRY},
    {"retry-deadline", required_argument, 0, OPT_DEADLINE},
    {"outage-timeout", required_argument, 0, OPT_OUTAGE},
    {"progress", required_argument, 0, OPT_PROGRESS},
    {"progress-interval", required_argument, 0, OPT_PROGRESS_INTERVAL},
    {"no-progress", no_argument, 0, OPT_NO_PROGRESS},
    {"progress-file", required_argument, 0, OPT_PROGRESS_FILE},
    {"job-id", required_argument, 0, OPT_JOB_ID},
    {"state-schema", required_argument, 0, OPT_STATE_SCHEMA},
    {"resume", optional_argument, 0, OPT_RESUME},
    {"restart", no_argument, 0, OPT_RESTART},
    {"truncate", no_argument, 0, OPT_TRUNCATE},
    {"defer-indexes", required_argument, 0, OPT_DEFER_INDEXES},
    {"mode", required_argument, 0, OPT_MODE},
    {"key", required_argument, 0, OPT_KEY},
    {"no-ledger", no_argument, 0, OPT_NO_LEDGER},
    {"grace", required_argument, 0, OPT_GRACE},
    {"listen", required_argument, 0, OPT_LISTEN},
    {"insecure", no_argument, 0, OPT_INSECURE},
    {"worker-timeout", required_argument, 0, OPT_WORKER_TIMEOUT},
    {"curve-secret-key", required_argument, 0, OPT_CURVE_SECRET},
    {"curve-allow", required_argument, 0, OPT_CURVE_ALLOW},
    {"max-inflight-chunks", required_argument, 0, OPT_MAX_INFLIGHT},
    {"query", required_argument, 0, OPT_QUERY},
    {"query-file", required_argument, 0, OPT_QUERY_FILE},
    {"columns", required_argument, 0, OPT_COLUMNS},
    {"if-target-missing", required_argument, 0, OPT_IF_TARGET_MISSING},
    {"on-bad-rows", required_argument, 0, OPT_ON_BAD_ROWS},
    {"reject-file", required_argument, 0, OPT_REJECT_FILE},
    {"max-rejects", required_argument, 0, OPT_MAX_REJECTS},
    {"verbose", no_argument, 0, 'v'},
    {"quiet", no_argument, 0, 'q'},
    {"help", no_argument, 0, 'h'},
    {"version", no_argument, 0, 'V'},
    {0, 0, 0, 0}};

/* The options that only set one field: a string (optarg), a flag, a
 * whole number in a range, or seconds (s_parse_seconds). */
#define S_AT(field) offsetof(s_cli_t, field)
static const struct {
    int opt;
    size_t at;
} s_strings[] = {
    {OPT_TABLE, S_AT(spec.table)},
    {OPT_TARGET_TABLE, S_AT(spec.target_table)},
    {OPT_SPLIT, S_AT(spec.split_by)},
    {OPT_JSON, S_AT(json)},
    {OPT_PROGRESS_FILE, S_AT(spec.progress_file)},
    {OPT_JOB_ID, S_AT(spec.job_id)},
    {OPT_STATE_SCHEMA, S_AT(spec.state_schema)},
    {OPT_LISTEN, S_AT(spec.listen)},
    {OPT_CURVE_SECRET, S_AT(spec.curve_secret_key)},
    {OPT_CURVE_ALLOW, S_AT(spec.curve_allow)},
    {OPT_COLUMNS, S_AT(spec.columns)},
    {OPT_REJECT_FILE, S_AT(spec.reject_file)},
};
static const struct {
    int opt;
    size_t at;
    bool value;
} s_flags[] = {
    {OPT_NO_JITTER, S_AT(spec.retry.jitter), false},
    {OPT_NO_RETRY, S_AT(spec.retry.enabled), false},
    {OPT_RESTART, S_AT(spec.restart), true},
    {OPT_TRUNCATE, S_AT(spec.truncate), true},
    {OPT_NO_LEDGER, S_AT(spec.no_ledger), true},
    {OPT_INSECURE, S_AT(spec.insecure), true},
};
static const struct {
    int opt;
    const char *name;
    int64_t min, max;
    size_t at;
    bool is_int; /* the field is an int, else an int64_t */
} s_ints[] = {
    {OPT_WORKERS, "--workers", 0, MAPPER_MAX_WORKERS, S_AT(spec.workers), true},
    {OPT_CHUNK, "--chunk-size", 1, INT64_MAX / 2, S_AT(spec.chunk_size), false},
    {OPT_MAX_INFLIGHT, "--max-inflight-chunks", 1, MAPPER_MAX_INFLIGHT,
     S_AT(spec.max_inflight_chunks), false},
    {OPT_MAX_RETRIES, "--max-retries", 0, 1000, S_AT(spec.retry.max_retries),
     true},
    {OPT_MAX_REJECTS, "--max-rejects", 0, INT64_MAX, S_AT(spec.max_rejects),
     false},
};
static const struct {
    int opt;
    const char *name;
    size_t at;
} s_seconds[] = {
    {OPT_INITIAL_DELAY, "--initial-delay", S_AT(spec.retry.initial_delay)},
    {OPT_MAX_DELAY, "--max-delay", S_AT(spec.retry.max_delay)},
    {OPT_BASE, "--backoff-base", S_AT(spec.retry.exponential_base)},
    {OPT_DEADLINE, "--retry-deadline", S_AT(spec.retry.deadline)},
    {OPT_OUTAGE, "--outage-timeout", S_AT(spec.outage_timeout)},
    {OPT_GRACE, "--grace", S_AT(spec.grace)},
    {OPT_WORKER_TIMEOUT, "--worker-timeout", S_AT(spec.worker_timeout)},
};
#define S_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Take option o when it only sets one field (the tables above). */
static int s_option_field(int o, s_cli_t *c)
{
    char *base = (char *)c;
    for (size_t i = 0; i < S_COUNT(s_strings); i++)
        if (s_strings[i].opt == o) {
            *(const char **)(base + s_strings[i].at) = optarg;
            return S_OPTION_NEXT;
        }
    for (size_t i = 0; i < S_COUNT(s_flags); i++)
        if (s_flags[i].opt == o) {
            *(bool *)(base + s_flags[i].at) = s_flags[i].value;
            return S_OPTION_NEXT;
        }
    for (size_t i = 0; i < S_COUNT(s_ints); i++) {
        int64_t v;
        if (s_ints[i].opt != o) continue;
        if (!s_parse_int(s_ints[i].name, optarg, s_ints[i].min, s_ints[i].max,
                         &v))
            return MAPPER_EXIT_USAGE;
        if (s_ints[i].is_int)
            *(int *)(base + s_ints[i].at) = (int)v;
        else
            *(int64_t *)(base + s_ints[i].at) = v;
        return S_OPTION_NEXT;
    }
    for (size_t i = 0; i < S_COUNT(s_seconds); i++)
        if (s_seconds[i].opt == o)
            return s_parse_seconds(s_seconds[i].name, optarg,
                                   (double *)(base + s_seconds[i].at))
                       ? S_OPTION_NEXT
                       : MAPPER_EXIT_USAGE;
    return S_OPTION_OTHER;
}

/* --source or --target: kept as given, its password hidden in argv. */
static int s_option_conninfo(int o, s_cli_t *c)
{
    char *copy = strdup(optarg), why[512];
    if (!copy) return MAPPER_EXIT_CANNOT_RUN;
    if (!log_hide_conninfo(copy, optarg, why, sizeof why)) {
        log_error("--%s: %s", o == OPT_SOURCE ? "source" : "target", why);
        free(copy);
        return MAPPER_EXIT_USAGE;
    }
    char **slot = o == OPT_SOURCE ? &c->source : &c->target;
    free(*slot);
    *slot = copy;
    return S_OPTION_NEXT;
}

/* The options that take more than setting one field. */
static int s_option(int o, s_cli_t *c, char **argv)
{
    int rc = s_option_field(o, c);
    if (rc != S_OPTION_OTHER) return rc;
    switch (o) {
    case OPT_SOURCE:
    case OPT_TARGET:
        return s_option_conninfo(o, c);
    case OPT_PROGRESS:
        if (!s_parse_progress(optarg, &c->spec.progress))
            return MAPPER_EXIT_USAGE;
        break;
    case OPT_PROGRESS_INTERVAL:
        if (!s_parse_seconds("--progress-interval", optarg,
                             &c->spec.progress_interval) ||
            c->spec.progress_interval <= 0) {
            if (c->spec.progress_interval <= 0)
                log_error("--progress-interval must be > 0");
            return MAPPER_EXIT_USAGE;
        }
        break;
    case OPT_NO_PROGRESS:
        c->spec.progress = MAPPER_PROGRESS_NONE;
        break;
    case OPT_RESUME:
        if (!s_parse_resume(optarg, &c->spec)) {
            log_error("--resume: expected --resume or --resume=auto, "
                      "got '%s'",
                      optarg);
            return MAPPER_EXIT_USAGE;
        }
        break;
    case OPT_QUERY:
        c->spec.query = optarg;
        c->query_options++;
        break;
    case OPT_QUERY_FILE:
        free(c->query_file);
        if (!(c->query_file = s_read_file("--query-file", optarg)))
            return MAPPER_EXIT_USAGE;
        c->spec.query = c->query_file;
        c->query_options++;
        break;
    case OPT_IF_TARGET_MISSING:
        if (!strcmp(optarg, "create"))
            c->spec.if_target_missing = MAPPER_TARGET_CREATE;
        else if (!strcmp(optarg, "fail"))
            c->spec.if_target_missing = MAPPER_TARGET_FAIL;
        else {
            log_error("--if-target-missing: expected create or fail, "
                      "got '%s'",
                      optarg);
            return MAPPER_EXIT_USAGE;
        }
        break;
    case OPT_ON_BAD_ROWS:
        if (!strcmp(optarg, "fail")) {
            c->spec.on_bad_rows = MAPPER_BAD_ROWS_FAIL;
        } else if (!strcmp(optarg, "reject")) {
            c->spec.on_bad_rows = MAPPER_BAD_ROWS_REJECT;
        } else {
            log_error("--on-bad-rows: expected fail or reject, got '%s'",
                      optarg);
            return MAPPER_EXIT_USAGE;
        }
        break;
    case OPT_DEFER_INDEXES:
        if (!s_parse_defer(optarg, &c->spec.defer_indexes))
            return MAPPER_EXIT_USAGE;
        break;
    case OPT_MODE:
        if (!strcmp(optarg, "append") || !strcmp(optarg, "upsert") ||
            !strcmp(optarg, "replace")) {
            c->spec.mode = optarg[0] == 'a'   ? MAPPER_MODE_APPEND
                           : optarg[0] == 'u' ? MAPPER_MODE_UPSERT
                                              : MAPPER_MODE_REPLACE;
        } else {
            log_error("--mode: expected append, replace or upsert, got '%s'",
                      optarg);
            return MAPPER_EXIT_USAGE;
        }
        break;
    case OPT_KEY:
        c->spec.key = optarg;
        break;
    case 'v':
        log_set_level(LOG_DEBUG);
        break;
    case 'q':
        c->quiet = true;
        log_set_level(LOG_ERROR);
        break;
    case 'h':
        s_help(stdout);
        return MAPPER_EXIT_OK;
    case 'V':
        printf("mapper-coord %s\n", MAPPER_VERSION);
        return MAPPER_EXIT_OK;
    case ':':
    default:
        log_bad_option(o, argv);
        return MAPPER_EXIT_USAGE;
    }
    return S_OPTION_NEXT;
}

/* Read the command line into *c: S_OPTION_NEXT to run the job, or the
 * exit code to end with (--help, --version, a usage error). */
static int s_parse_args(int argc, char **argv, s_cli_t *c)
{
    char err[MAPPER_ENV_ERR_MAX];
    if (!mapper_job_spec_env(&c->spec, err, sizeof err) ||
        !s_resume_env(&c->spec, err, sizeof err)) {
        log_error("%s", err);
        return MAPPER_EXIT_USAGE;
    }
    opterr = 0;
    int o, idx;
    while ((o = getopt_long(argc, argv, ":vqhV", s_opts, &idx)) != -1) {
        int rc = s_option(o, c, argv);
        if (rc != S_OPTION_NEXT) return rc;
    }
    if (optind < argc) {
        log_error("unexpected argument '%s' (see --help)", argv[optind]);
        return MAPPER_EXIT_USAGE;
    }
    if (c->query_options > 1) {
        log_error("give one --query or --query-file, not several");
        return MAPPER_EXIT_USAGE;
    }
    if (!c->spec.table && !c->spec.query) {
        log_error("--table or --query is required (see --help)");
        return MAPPER_EXIT_USAGE;
    }
    if (c->json && !summary_file_check(c->json)) return MAPPER_EXIT_USAGE;
    c->spec.source = c->source;
    c->spec.target = c->target;
    return S_OPTION_NEXT;
}

int main(int argc, char **argv)
{
    log_init("coord", LOG_INFO);
    /* Stream mode moves rows in 256 KiB to 1 MiB buffers; from the heap
     * they are reused, from mmap each one is faulted in anew. */
    mallopt(M_MMAP_THRESHOLD, MAPPER_MMAP_THRESHOLD);
    mallopt(M_TRIM_THRESHOLD, MAPPER_MMAP_THRESHOLD);
    if (argc >= 2 && !strcmp(argv[1], "keygen")) return s_keygen(argc, argv);
    s_cli_t cli = {0};
    mapper_job_spec_init(&cli.spec);
    int rc = s_parse_args(argc, argv, &cli);
    if (rc != S_OPTION_NEXT) {
        free(cli.source);
        free(cli.target);
        free(cli.query_file);
        return rc;
    }
    mapper_job_spec spec = cli.spec;
    const char *json = cli.json;

    mapper_result r;
    rc = mapper_job_run(&spec, &r);
    if (rc == MAPPER_EXIT_USAGE ||
        (rc == MAPPER_EXIT_CANNOT_RUN && r.chunks_total == 0)) {
        log_error("%s", r.error);
    } else {
        if (!cli.quiet && !r.already_done) mapper_result_print(&r, stdout);
        if (r.error[0]) log_error("%s", r.error);
    }
    if (r.already_done)
        printf("job %s already done\n", r.job_id);
    else if (rc == MAPPER_EXIT_INTERRUPTED && r.job_id[0] && !spec.resume &&
             !spec.resume_auto)
        s_print_resume(argc, argv, r.job_id, r.stream, r.restart_only);
    else if (rc == MAPPER_EXIT_INTERRUPTED && r.job_id[0])
        fprintf(stderr, "interrupted: run the same command again to resume\n");
    if (json && !summary_file_write(json, &r) && rc == MAPPER_EXIT_OK)
        rc = MAPPER_EXIT_FAILED;
    mapper_result_free(&r);
    free(cli.source);
    free(cli.target);
    free(cli.query_file);
    return rc;
}
