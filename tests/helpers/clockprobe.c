/* Test helper: print this process's CLOCK_MONOTONIC and CLOCK_BOOTTIME in
 * nanoseconds as its very first action ("MONO BOOT\n"), so the reading is as
 * close to exec as a program can get; then sleep argv[1] seconds if given. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long long mono = ns(CLOCK_MONOTONIC);
    long long boot = ns(CLOCK_BOOTTIME);
    printf("%lld %lld\n", mono, boot);
    fflush(stdout);
    if (argc > 1)
        sleep((unsigned)atoi(argv[1]));
    return 0;
}
