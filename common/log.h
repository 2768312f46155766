/* common/log.h - one logging module: level-checked macros, one line per
 * event on stderr, prefixed with the process role and pid. */
#ifndef MAPPER_LOG_H
#define MAPPER_LOG_H

#include <stdarg.h>
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

/* Copy src into dst (size n) as one line: newlines and tabs become spaces,
 * trailing blanks are trimmed. Returns dst. */
char *log_one_line(char *dst, size_t n, const char *src);

/* Write a description of a libpq connection string safe to log (host, port,
 * dbname, user; never the password) into dst. */
void log_describe_conninfo(char *dst, size_t n, const char *conninfo);

/* Overwrite, in place, the password in a connection string or URI held in
 * argv, so that ps and /proc/PID/cmdline never show it. */
void log_scrub_conninfo(char *arg);

#endif
