/* Test helper: append "MONOTONIC BOOTTIME\n" (ns) to the file argv[1] every
 * 10 ms, forever, so a test can measure the clock step across a checkpoint
 * (last line before the dump, first line after the restore). An optional
 * argv[2] of N keeps N MiB of written memory, so a benchmark can dump a
 * process of a service's size rather than a bare loop. Built static so
 * it also runs alone in a container rootfs. One write() per line keeps lines
 * whole however the process is frozen. Its stdio is redirected to /dev/null as
 * seen by the program itself, so a container's checkpoint never meets an fd
 * inherited from the host, and it leads its own session, as CRIU wants of the
 * root of a dumped tree (it fails harmlessly where it already does). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s FILE [MiB]\n", argv[0]);
        return 2;
    }
    if (argc == 3) {
        size_t bytes = (size_t)strtoul(argv[2], NULL, 10) << 20;
        unsigned char *memory = malloc(bytes);
        if (bytes && !memory) {
            perror("malloc");
            return 1;
        }
        for (size_t i = 0; i < bytes; i++)   /* no zero pages: CRIU must dump each one */
            memory[i] = (unsigned char)(i * 7 + 1);
    }
    int out = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out < 0) {
        perror(argv[1]);
        return 1;
    }
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        for (int fd = 0; fd < 3; fd++)
            dup2(null, fd);
        if (null > 2)
            close(null);
    }
    setsid();
    const struct timespec period = {0, 10 * 1000 * 1000};
    char line[64];
    for (;;) {
        long long mono = ns(CLOCK_MONOTONIC);
        long long boot = ns(CLOCK_BOOTTIME);
        int len = snprintf(line, sizeof line, "%lld %lld\n", mono, boot);
        if (write(out, line, (size_t)len) != len)
            return 1;
        nanosleep(&period, NULL);
    }
}
