/* common/log.c - the logging module: one line per event on stderr. */
#include "log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *s_role = "mapper";
static log_level_t s_level = LOG_INFO;
static log_hook_fn s_hook;
static void *s_hook_arg;

static const char *const s_level_names[] = {"error", "warning", "info",
                                            "debug"};

void log_init(const char *role, log_level_t level)
{
    s_role = role;
    s_level = level;
}

void log_set_level(log_level_t level)
{
    s_level = level;
}

log_level_t log_get_level(void)
{
    return s_level;
}

void log_set_hook(log_hook_fn hook, void *arg)
{
    s_hook = hook;
    s_hook_arg = arg;
}

void log_write(log_level_t level, const char *fmt, ...)
{
    if (level > s_level) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char line[2048];
    log_one_line(line, sizeof line, msg);

    char stamp[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);

    if (s_hook) s_hook(s_hook_arg, 0);
    /* On a terminal, start from column 0 of a clean line: the coordinator's
     * progress bar may be on it (workers share the terminal). */
    if (isatty(STDERR_FILENO)) fputs("\r\033[K", stderr);
    fprintf(stderr, "%s.%03ld %s[%d] %s: %s\n", stamp, ts.tv_nsec / 1000000L,
            s_role, (int)getpid(), s_level_names[level], line);
    fflush(stderr);
    if (s_hook) s_hook(s_hook_arg, 1);
}

char *log_one_line(char *dst, size_t n, const char *src)
{
    if (n == 0) return dst;
    size_t j = 0;
    for (size_t i = 0; src && src[i] && j + 1 < n; i++) {
        char c = src[i];
        if (c == '\n' || c == '\r' || c == '\t') {
            if (j > 0 && dst[j - 1] != ' ') dst[j++] = ' ';
            continue;
        }
        dst[j++] = c;
    }
    while (j > 0 && dst[j - 1] == ' ')
        j--;
    dst[j] = '\0';
    return dst;
}

void log_describe_conninfo(char *dst, size_t n, const char *conninfo)
{
    const char *host = NULL, *port = NULL, *db = NULL, *user = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", NULL);
    if (opts) {
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (!o->val) continue;
            if (!strcmp(o->keyword, "host"))
                host = o->val;
            else if (!strcmp(o->keyword, "port"))
                port = o->val;
            else if (!strcmp(o->keyword, "dbname"))
                db = o->val;
            else if (!strcmp(o->keyword, "user"))
                user = o->val;
        }
    }
    snprintf(dst, n, "host=%s port=%s dbname=%s user=%s",
             host ? host : "(default)", port ? port : "(default)",
             db ? db : "(default)", user ? user : "(default)");
    PQconninfoFree(opts);
}

void log_scrub_conninfo(char *arg)
{
    char *p = strstr(arg, "password=");
    if (p)
        for (p += strlen("password="); *p && *p != ' '; p++)
            *p = 'x';
    char *scheme = strstr(arg, "://");
    if (!scheme) return;
    char *at = strchr(scheme + 3, '@');
    char *colon = strchr(scheme + 3, ':');
    if (at && colon && colon < at)
        for (p = colon + 1; p < at; p++)
            *p = 'x';
}
