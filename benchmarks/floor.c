/*
 * The kernel-level floor for a restore on this machine: a small,
 * single-threaded C loop doing only what any restore must do, with no daemon,
 * RPC or helper:
 *     unshare(CLONE_NEWTIME) -> read host clock -> write offsets ->
 *     clone3 -> exec PROGRAM -> wait
 * Usage: floor N PROGRAM
 * Prints one line per iteration: "<total ns> <jump ns>", where jump is the
 * program's first CLOCK_MONOTONIC reading (the first number it prints on
 * stdout, as clockprobe does) minus the target it was given; 0 when the
 * program prints nothing (e.g. /bin/true).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DAY_NS 86400000000000LL

static long long now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: floor N PROGRAM\n");
        return 2;
    }
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++) {
        int out[2];
        if (pipe(out) != 0)
            return 1;
        long long started = now_ns(CLOCK_MONOTONIC);
        if (unshare(CLONE_NEWTIME) != 0) {
            perror("unshare");
            return 1;
        }
        int fd = open("/proc/self/timens_offsets", O_WRONLY);
        long long host = now_ns(CLOCK_MONOTONIC);
        long long target = host + DAY_NS + 123456789;  /* a day ahead, with nanoseconds */
        long long offset = target - host;
        char line[128];
        int len = snprintf(line, sizeof(line), "monotonic %lld %lld\nboottime %lld %lld\n",
                           offset / 1000000000LL, offset % 1000000000LL,
                           offset / 1000000000LL, offset % 1000000000LL);
        if (fd < 0 || write(fd, line, (size_t)len) != len) {
            perror("timens_offsets");
            return 1;
        }
        close(fd);
        uint64_t args[11] = { 0 };
        args[4] = SIGCHLD;
        long pid = syscall(SYS_clone3, args, sizeof(args));
        if (pid == 0) {
            dup2(out[1], 1);
            execl(argv[2], argv[2], (char *)NULL);
            _exit(127);
        }
        close(out[1]);
        int status;
        waitpid((pid_t)pid, &status, 0);
        long long total = now_ns(CLOCK_MONOTONIC) - started;
        char text[64] = { 0 };
        ssize_t got = read(out[0], text, sizeof(text) - 1);
        close(out[0]);
        long long jump = got > 0 ? atoll(text) - target : 0;
        printf("%lld %lld\n", total, jump);
    }
    return 0;
}
