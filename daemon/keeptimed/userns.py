"""Which uid a caller's use of keeptimed is charged to.

A uid other than root may create user namespaces and, with a range of
subordinate uids (/etc/subuid, which useradd sets up), call keeptimed from
as many host uids as the range holds: every per-uid limit would then be
that many times larger. So a caller in a user namespace that a uid other
than root created is charged to that creator (the outermost one, when such
namespaces are nested); anyone else to its own uid. Namespaces root made
(a container runtime's) keep their callers' own uids: they are apart by
design, and charging them all to root would exempt them from every limit.
"""
import fcntl
import functools
import os
import struct

PROC = "/proc"
# ioctl(2) requests on a namespace descriptor (linux/nsfs.h)
NS_GET_PARENT = 0xB702       # the parent user namespace, as a new descriptor
NS_GET_OWNER_UID = 0xB704    # the uid (in the caller's namespace) that created it
MAX_DEPTH = 32               # the kernel nests user namespaces at most this deep


@functools.cache   # keeptimed's user namespace is fixed for its life: read it once, not per connection
def _own() -> tuple[int, int]:
    st = os.stat(f"{PROC}/self/ns/user")
    return st.st_dev, st.st_ino


def charged_uid(pid: int, uid: int) -> int:
    """The uid to charge for process pid, whose own uid is uid (see above).
    Its own uid when its user namespace cannot be read (it has exited, or
    keeptimed lacks CAP_SYS_PTRACE); the caller re-checks that pid was the
    caller's by its pidfd."""
    try:
        fd = os.open(f"{PROC}/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return uid
    own, charged = _own(), uid
    try:
        for _ in range(MAX_DEPTH):
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == own:
                break
            owner = bytearray(4)
            fcntl.ioctl(fd, NS_GET_OWNER_UID, owner, True)
            creator = struct.unpack("I", owner)[0]
            if creator != 0:
                charged = creator   # the walk goes outwards: the outermost one stays
            try:
                parent = fcntl.ioctl(fd, NS_GET_PARENT)
            except PermissionError:   # above keeptimed's own: it was not in keeptimed's tree
                break
            os.close(fd)
            fd = parent
    except OSError:
        return uid
    finally:
        os.close(fd)
    return charged
