/* common/log.c - the logging module: one line per event on stderr. */
#include "log.h"

#include <ctype.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The longest reason log_reason formats before cleaning it. */
#define LOG_REASON_MAX 4096

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

/* The passwords this process knows, in every form they may be written
 * in: as parsed, percent-encoded, backslash-escaped, as typed in a URI. */
static char **s_secrets;
static size_t s_n_secrets;
static bool s_lost; /* a secret could not be kept (out of memory) */

/* Length of the secret that starts at p, 0 when none does. */
static size_t s_secret_at(const char *p)
{
    for (size_t i = 0; i < s_n_secrets; i++) {
        size_t n = strlen(s_secrets[i]);
        if (!strncmp(p, s_secrets[i], n)) return n;
    }
    return 0;
}

char *log_one_line(char *dst, size_t n, const char *src)
{
    if (n == 0) return dst;
    size_t j = 0;
    for (size_t i = 0; src && src[i] && j + 1 < n;) {
        unsigned char c = (unsigned char)src[i];
        size_t secret = s_secret_at(src + i);
        if (secret) {
            for (const char *r = LOG_REDACTED; *r && j + 1 < n; r++)
                dst[j++] = *r;
            i += secret;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            if (j > 0 && dst[j - 1] != ' ') dst[j++] = ' ';
            i++;
        } else if (c < 0x20 || c == 0x7f ||
                   (c == 0xc2 && (unsigned char)src[i + 1] >= 0x80 &&
                    (unsigned char)src[i + 1] <= 0x9f)) {
            /* C0, DEL and (UTF-8) C1 controls: shown, never obeyed. */
            unsigned code = c == 0xc2 ? (unsigned char)src[i + 1] : c;
            if (j + 4 >= n) break;
            j += (size_t)snprintf(dst + j, n - j, "\\x%02x", code);
            i += c == 0xc2 ? 2 : 1;
        } else {
            dst[j++] = (char)c;
            i++;
        }
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

static void s_add_secret(const char *secret)
{
    if (!secret || !*secret) return;
    for (size_t i = 0; i < s_n_secrets; i++)
        if (!strcmp(s_secrets[i], secret)) return;
    char *copy = strdup(secret);
    char **v = copy ? realloc(s_secrets, (s_n_secrets + 1) * sizeof *v) : NULL;
    if (!v) {
        free(copy);
        s_lost = true;
        return;
    }
    s_secrets = v;
    /* Longest first, so that a secret containing another is removed whole. */
    size_t at = 0;
    while (at < s_n_secrets && strlen(s_secrets[at]) >= strlen(copy))
        at++;
    memmove(s_secrets + at + 1, s_secrets + at,
            (s_n_secrets - at) * sizeof *s_secrets);
    s_secrets[at] = copy;
    s_n_secrets++;
}

/* Add value, and the ways a connection string or URI may spell it. */
static void s_add_password(const char *value)
{
    size_t n = strlen(value);
    char *enc = malloc(3 * n + 1), *esc = malloc(2 * n + 1);
    if (enc && esc) {
        size_t e = 0, b = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)value[i];
            if (isalnum(c) || strchr("-._~", c))
                enc[e++] = (char)c;
            else
                e += (size_t)sprintf(enc + e, "%%%02X", c);
            if (c == '\'' || c == '\\') esc[b++] = '\\';
            esc[b++] = (char)c;
        }
        enc[e] = esc[b] = '\0';
        s_add_secret(enc);
        s_add_secret(esc);
    } else {
        s_lost = true;
    }
    free(enc);
    free(esc);
    s_add_secret(value);
}

/* In a URI, the text between "scheme://user:" and "@host" (and after
 * "password=" in its query), as typed. */
static void s_add_uri_parts(const char *uri, char *err, size_t errlen,
                            bool *bad)
{
    const char *auth = strstr(uri, "://");
    if (!auth) return;
    auth += 3;
    size_t end = strcspn(auth, "/?");
    const char *at = memchr(auth, '@', end);
    if (at && memchr(at + 1, '@', end - (size_t)(at + 1 - auth))) {
        snprintf(err, errlen,
                 "the URI has more than one '@' before its host: write an "
                 "'@' in the user name or password as %%40");
        *bad = true;
    }
    const char *last = auth + end;
    while (last > auth && last[-1] != '@')
        last--;
    const char *colon = memchr(auth, ':', end);
    if (last > auth && colon && colon < last - 1) {
        char *raw = strndup(colon + 1, (size_t)(last - 1 - (colon + 1)));
        s_lost |= !raw;
        s_add_secret(raw);
        free(raw);
    }
    for (const char *p = strstr(uri, "password="); p;
         p = strstr(p + 1, "password=")) {
        const char *v = p + strlen("password=");
        char *raw = strndup(v, strcspn(v, "&"));
        s_lost |= !raw;
        s_add_secret(raw);
        free(raw);
    }
}

/* libpq's parse error without what it quotes: "missing "=" after
 * "horse"" becomes "missing "=" after "..."". */
static void s_unquoted(char *dst, size_t n, const char *msg)
{
    size_t j = 0;
    for (const char *p = msg; *p && j + 6 < n; p++) {
        const char *close = *p == '"' ? strchr(p + 1, '"') : NULL;
        if (close == p + 2 && p[1] == '=') { /* "=" quotes nothing secret */
            j += (size_t)snprintf(dst + j, n - j, "\"=\"");
            p = close;
        } else if (close) {
            j += (size_t)snprintf(dst + j, n - j, "\"...\"");
            p = close;
        } else if (*p != '\n') {
            dst[j++] = *p;
        }
    }
    dst[j] = '\0';
}

/* True when s parses to a password that is not all 'x' (blanked). */
static bool s_password_left(const char *s)
{
    PQconninfoOption *opts = PQconninfoParse(s, NULL);
    bool left = false;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (!strcmp(o->keyword, "password") && o->val)
            left = strspn(o->val, "x") != strlen(o->val);
    PQconninfoFree(opts);
    return left;
}

static bool s_is_uri(const char *s)
{
    return !strncmp(s, "postgresql://", 13) || !strncmp(s, "postgres://", 11);
}

bool log_hide_conninfo(const char *conninfo, char *arg, char *err,
                       size_t errlen)
{
    if (!conninfo) return true;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    bool bad = !opts;
    if (!opts) {
        char why[256];
        s_unquoted(why, sizeof why, perr ? perr : "out of memory");
        snprintf(err, errlen,
                 "not a valid connection string or URI (libpq: %s); it is "
                 "not shown, as it may hold a password",
                 why);
    }
    PQfreemem(perr);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (!strcmp(o->keyword, "password") && o->val) s_add_password(o->val);
    PQconninfoFree(opts);
    if (s_is_uri(conninfo)) s_add_uri_parts(conninfo, err, errlen, &bad);
    if (s_lost) {
        snprintf(err, errlen, "out of memory hiding the password");
        bad = true;
    }
    if (!arg) return !bad;
    if (bad) { /* what the password is cannot be known: hide it all */
        memset(arg, 'x', strlen(arg));
        return false;
    }
    for (size_t i = 0; i < s_n_secrets; i++) {
        size_t n = strlen(s_secrets[i]);
        for (char *p = strstr(arg, s_secrets[i]); p;
             p = strstr(p + n, s_secrets[i]))
            memset(p, 'x', n);
    }
    /* A spelling not foreseen (an escape libpq drops) leaves a password
     * that still parses: then hide it all. */
    if (s_password_left(arg)) memset(arg, 'x', strlen(arg));
    return true;
}

bool log_vreason(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (!err || errlen == 0) return false;
    char raw[LOG_REASON_MAX];
    vsnprintf(raw, sizeof raw, fmt, ap);
    log_one_line(err, errlen, raw);
    return false;
}

bool log_reason(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vreason(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

void log_bad_option(int opt, char **argv)
{
    if (opt == ':')
        log_error("option %s needs a value (see --help)", argv[optind - 1]);
    else
        log_error("unknown option '%s' (see --help)", argv[optind - 1]);
}
