/* Test helper: install a seccomp filter that allows every system call, then
 * run the command given.
 *   seccomp_allow COMMAND [ARG]...
 * The command then runs under seccomp (Seccomp: 2 in /proc/PID/status)
 * without being restricted by it. Without no_new_privs this needs
 * CAP_SYS_ADMIN: run it as root, before dropping to another user. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sock_filter allow[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
    struct sock_fprog program = { .len = 1, .filter = allow };
    if (argc < 2) {
        fprintf(stderr, "usage: seccomp_allow COMMAND [ARG]...\n");
        return 2;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
        perror("seccomp_allow: prctl(PR_SET_SECCOMP)");
        return 1;
    }
    execvp(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
