/* coordinator/summary_file.c - --summary-json: the result written to a
 * file whole or not at all, and the check before the job that it can be. */
#include "summary_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* A new file beside path (path.XXXXXX, made by mkstemp, mode 0600) and its
 * name in tmp: its descriptor, or -1 with errno set. */
static int s_tmp(const char *path, char *tmp, size_t size)
{
    if (snprintf(tmp, size, "%s.XXXXXX", path) >= (int)size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return mkostemp(tmp, O_CLOEXEC);
}

bool summary_file_check(const char *path)
{
    char tmp[4096];
    int fd = s_tmp(path, tmp, sizeof tmp);
    if (fd < 0) {
        log_error("--summary-json %s: %s", path, strerror(errno));
        return false;
    }
    close(fd);
    unlink(tmp);
    return true;
}

bool summary_file_write(const char *path, const mapper_result *r)
{
    char tmp[4096];
    int fd = s_tmp(path, tmp, sizeof tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    bool ok = f && mapper_result_write_json(r, f) && fsync(fd) == 0;
    if (f && fclose(f)) ok = false;
    if (!f && fd >= 0) close(fd);
    if (ok && rename(tmp, path)) ok = false;
    if (!ok) {
        log_error("--summary-json %s: %s", path, strerror(errno));
        if (fd >= 0) unlink(tmp);
    }
    return ok;
}
