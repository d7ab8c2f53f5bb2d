/* Test helper, run as another user: connect to a unix socket as that user.
 *   connect_as once PATH          connect once; exit 0, or print the errno name and exit 1
 *   connect_as serve FD PATH      for each byte read on FD, connect to PATH and send the
 *                                 connected socket back over FD (SCM_RIGHTS), or "E<errno>"
 * SO_PEERCRED is fixed at connect(), so whoever uses the socket is seen as this user. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int connect_to(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

static int send_fd(int control, int fd)
{
    char byte = 'K';
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    char space[CMSG_SPACE(sizeof(int))];
    memset(space, 0, sizeof(space));
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = space, .msg_controllen = sizeof(space) };
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    return sendmsg(control, &msg, 0) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "once") == 0) {
        if (connect_to(argv[2]) < 0) {
            printf("%s\n", strerror(errno));
            return 1;
        }
        return 0;
    }
    if (argc != 4 || strcmp(argv[1], "serve") != 0) {
        fprintf(stderr, "usage: connect_as once PATH | connect_as serve FD PATH\n");
        return 2;
    }
    int control = atoi(argv[2]);
    char request;
    while (read(control, &request, 1) == 1) {
        int fd = connect_to(argv[3]);
        if (fd < 0) {
            char text[32];
            int n = snprintf(text, sizeof(text), "E%d", errno);
            if (write(control, text, (size_t)n) != n)
                return 1;
            continue;
        }
        if (send_fd(control, fd) != 0)
            return 1;
        close(fd);
    }
    return 0;
}
