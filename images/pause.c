/* The sandbox process of the test platform's pods under containerd (images/README.md): it holds
 * the pod's namespaces until the runtime stops it. PID 1 of the sandbox has no default signal
 * actions, so it must handle SIGTERM/SIGINT itself (else StopPodSandbox waits for its timeout and
 * kills), and it reaps the zombies a PID namespace hands to its init. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction term = {.sa_handler = stop};
    struct sigaction chld = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGTERM, &term, NULL);
    sigaction(SIGINT, &term, NULL);
    sigaction(SIGCHLD, &chld, NULL);
    for (;;)
        pause();
}
