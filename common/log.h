/* common/log.h - one logging module: level-checked macros, one line per
 * event on stderr, prefixed with the process role and pid.
 *
 * How failure travels, everywhere in mapper:
 * - A fallible function returns bool (true = ok) or a pointer (NULL =
 *   failed), marked warn_unused_result when its caller must act on a
 *   failure. It logs the failure once, where it happens, with the context
 *   it has (chunk, attempt, peer, side, SQLSTATE); callers add nothing or
 *   one line of their own context.
 * - Unless its header says it writes the reason into the caller's buffer
 *   (char *err, size_t errlen) instead, with log_reason: only for input
 *   whose context the caller has (a frame from a peer, a key file, an
 *   option or a variable) and for the steps that set a job up, whose reason
 *   becomes the job's result. Such a function does not log; its caller
 *   logs the reason once or passes it on.
 * - A database error that decides a chunk's fate is a pgutil_error_t:
 *   captured (pgutil_capture) before anything else touches the session,
 *   sent by the worker in a FAILED message, judged only in the coordinator
 *   (chunks.c with retry.c). Nowhere else.
 * - mapper_job_run, the library's boundary, returns an exit code with the
 *   reason in mapper_result.error (job.c's s_fail); mapper-coord logs it.
 * - A send whose loss the protocol recovers from (a heartbeat, progress, a
 *   stop: the next one, the lease or SIGCHLD tells) is logged by the send;
 *   its caller calls it as a statement. */
#ifndef MAPPER_LOG_H
#define MAPPER_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG } log_level_t;

/* Set the role ("coord", "worker") shown on every line, and the level. */
void log_init(const char *role, log_level_t level);
void log_set_level(log_level_t level);
log_level_t log_get_level(void);

/* Optional hook called before and after each line is written (the progress
 * bar uses it to clear and redraw itself). NULL to remove. */
typedef void (*log_hook_fn)(void *arg, int after);
void log_set_hook(log_hook_fn hook, void *arg);

void log_write(log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)                                                          \
    do {                                                                       \
        if (log_get_level() >= LOG_WARN) log_write(LOG_WARN, __VA_ARGS__);     \
    } while (0)
#define log_info(...)                                                          \
    do {                                                                       \
        if (log_get_level() >= LOG_INFO) log_write(LOG_INFO, __VA_ARGS__);     \
    } while (0)
#define log_debug(...)                                                         \
    do {                                                                       \
        if (log_get_level() >= LOG_DEBUG) log_write(LOG_DEBUG, __VA_ARGS__);   \
    } while (0)

/* Copy src into dst (size n) as one line, safe to show: newlines and tabs
 * become spaces, other control characters (C0, DEL, UTF-8 C1) are written
 * as \xNN, every known password (log_hide_conninfo) becomes LOG_REDACTED,
 * trailing blanks are trimmed. Every line this process writes passes
 * here. Returns dst. */
char *log_one_line(char *dst, size_t n, const char *src);

/* Write the reason for a failure (printf-style) into err (size errlen; no
 * effect when NULL or 0) as one line safe to show (log_one_line), without
 * logging it. Returns false, for `return log_reason(...)`. */
bool log_reason(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool log_vreason(char *err, size_t errlen, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Log what getopt_long found wrong with argv: for ':' an option with no
 * value, for anything else an unknown option (see --help). */
void log_bad_option(int opt, char **argv);

/* What a password is replaced with. */
#define LOG_REDACTED "[password]"

/* Write a description of a libpq connection string safe to log (host, port,
 * dbname, user; never the password) into dst. */
void log_describe_conninfo(char *dst, size_t n, const char *conninfo);

/* Learn the password of conninfo (a connection string or URI; NULL: none)
 * so that log_one_line removes it, in every spelling, from whatever this
 * process writes; and overwrite it, by value, in arg (the argv string
 * conninfo was copied from, or NULL) so that ps never shows it. False,
 * with a reason in err that does not quote conninfo, when libpq cannot
 * parse it or a URI has an unencoded '@' in its password: arg is then
 * overwritten whole. */
bool log_hide_conninfo(const char *conninfo, char *arg, char *err,
                       size_t errlen) __attribute__((warn_unused_result));

#endif
