/* common/log.h - one logging module: level-checked macros, one line per
 * event on stderr, prefixed with the process role and pid. */
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
