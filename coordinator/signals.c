/* coordinator/signals.c - the job's signal handlers and their self-pipe
 * (signals.h). */
#include "signals.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "defaults.h"

static int s_sigpipe_w = -1;
static volatile sig_atomic_t s_stop_signals;

static void s_on_signal(int sig)
{
    int saved = errno;
    char c = sig == SIGCHLD ? 'C' : 'T';
    if (sig != SIGCHLD && ++s_stop_signals >= 2)
        _exit(MAPPER_EXIT_INTERRUPTED);  /* second ^C: workers die with us */
    if (write(s_sigpipe_w, &c, 1) < 0) { /* pipe full: a byte is pending */
    }
    errno = saved;
}

bool signals_install(signals_t *s)
{
    if (pipe2(s->fds, O_NONBLOCK | O_CLOEXEC)) return false;
    s_sigpipe_w = s->fds[1];
    s_stop_signals = 0;
    struct sigaction sa = {.sa_handler = s_on_signal,
                           .sa_flags = SA_RESTART | SA_NOCLDSTOP};
    sigemptyset(&sa.sa_mask);
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    sigaction(SIGCHLD, &sa, &s->chld);
    sigaction(SIGINT, &sa, &s->intr);
    sigaction(SIGTERM, &sa, &s->term);
    sigaction(SIGPIPE, &ign, &s->pipe);
    return true;
}

void signals_restore(signals_t *s)
{
    sigaction(SIGCHLD, &s->chld, NULL);
    sigaction(SIGINT, &s->intr, NULL);
    sigaction(SIGTERM, &s->term, NULL);
    sigaction(SIGPIPE, &s->pipe, NULL);
    close(s->fds[0]);
    close(s->fds[1]);
    s_sigpipe_w = -1;
}
