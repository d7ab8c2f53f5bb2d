/*
 * A test process tree for checkpoint benchmarks: N processes in all (this
 * one included), each parent with up to 8 children, every process asleep.
 * Prints "ready" once all exist; the tree dies with its root (SIGTERM/SIGKILL
 * to the root: children get SIGKILL through PR_SET_PDEATHSIG).
 * Usage: tree N
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int total = argc > 1 ? atoi(argv[1]) : 1;
    int ready[2];
    if (pipe(ready) != 0)
        return 1;
    /* Process k (0-based, breadth first) has children 8k+1 .. 8k+8. */
    int me = 0;
    for (int child = 1; child <= 8; child++) {
        int k = me * 8 + child;
        if (k >= total)
            break;
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            me = k;
            child = 0;   /* start over: now creating this process's own children */
            if (write(ready[1], "x", 1) != 1)
                _exit(1);
            continue;
        }
    }
    if (me != 0) {
        for (;;)
            pause();
    }
    char c;
    for (int k = 1; k < total; k++) {
        if (read(ready[0], &c, 1) != 1)
            return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;)
        pause();
}
