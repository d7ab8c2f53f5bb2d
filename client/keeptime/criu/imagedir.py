"""Files in CRIU's image directory, reached only through a directory fd.

CRIU hands action scripts CRTOOLS_IMAGE_DIR as /proc/<criu>/fd/N: the
directory may have no path the hook could name (a detached mount, another
mount namespace), so it is opened once and every file operation is relative
to that fd.

The directory is often writable by the user whose tree was dumped while the
code reading and writing it runs as root, so nothing in it is trusted:
  * only regular files are read, never through a symbolic link, without
    blocking (a FIFO is an error, not a hang) and up to a size limit;
  * files are written with a fixed mode (0600) and, when told, a fixed owner;
    never a mode or owner copied from what the directory holds;
  * writes go to a fresh temporary file (O_EXCL) renamed over the target, so
    an existing file, or a hard link to another, is replaced, never written
    through; the file and the directory are fsync'd, so a crash leaves the
    old file or the new one, never a half-written image.
"""
import errno
import os
import secrets
import stat
from typing import Optional

FILE_MODE = 0o600
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class ImageFileError(Exception):
    """A file in the image directory that cannot be used; the message names it."""


class ImageDir:
    """An open image directory; use as a context manager.

    Opened from a path, or adopting an already open directory fd (which it
    then owns and closes). owner=(uid, gid) makes every file it writes
    belong to that user; require_owner makes every file it reads have to
    belong to that uid (for a caller other than root)."""

    def __init__(self, path: Optional[str] = None, fd: Optional[int] = None,
                 owner: Optional[tuple[int, int]] = None, require_owner: Optional[int] = None):
        self.path = path if path is not None else f"(directory fd {fd})"
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fd = fd
        self.owner = owner
        self.require_owner = require_owner

    @property
    def writer_uid(self) -> int:
        """The uid the files this writes belong to."""
        return self.owner[0] if self.owner is not None else os.geteuid()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "ImageDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def names(self) -> list[str]:
        """The names in the directory."""
        return os.listdir(self.fd)

    def read_own(self, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Optional[bytes]:
        """The contents of name, a file this directory's writer wrote (owned
        by writer_uid, mode 0600, one link), or None when it does not exist;
        ImageFileError when it is there but another made it."""
        return self.read(name, max_bytes, own=True)

    def read(self, name: str, max_bytes: int = DEFAULT_MAX_BYTES, own: bool = False) -> Optional[bytes]:
        """The contents of the regular file name, or None when it does not exist."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY,
                         dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ImageFileError(f"{name} is a symbolic link; keeptime reads only regular files") from None
            raise ImageFileError(f"cannot open {name}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImageFileError(f"{name} is {_kind(st.st_mode)}, not a regular file")
            if self.require_owner is not None and st.st_uid != self.require_owner:
                raise ImageFileError(f"{name} belongs to uid {st.st_uid}, not to uid {self.require_owner}")
            if own and (st.st_uid, stat.S_IMODE(st.st_mode), st.st_nlink) != (self.writer_uid, FILE_MODE, 1):
                raise ImageFileError(f"{name} was not written by keeptime here (uid {st.st_uid}, mode "
                                     f"{stat.S_IMODE(st.st_mode):o}, {st.st_nlink} link(s))")
            if st.st_size > max_bytes:
                raise ImageFileError(f"{name} is {st.st_size} bytes, more than the {max_bytes} allowed")
            chunks, size = [], 0
            while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size)):
                size += len(chunk)
                if size > max_bytes:   # it grew while being read
                    raise ImageFileError(f"{name} is more than the {max_bytes} bytes allowed")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write_atomic(self, name: str, data: bytes, durable: bool = True, sync_directory: bool = True) -> None:
        """Replace (or create) name with data: mode 0600, atomically and
        durably (data fsync'd, then the rename once the directory is: at once,
        or with sync_directory False at the next sync()). durable=False skips
        both, for data that can be made again."""
        tmp = f".{name}.keeptime-{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE,
                     dir_fd=self.fd)
        try:
            try:
                os.fchmod(fd, FILE_MODE)   # exactly this mode, whatever the umask
                if self.owner is not None:
                    os.fchown(fd, *self.owner)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except FileNotFoundError:
                pass
            raise
        if durable and sync_directory:
            self.sync()

    def sync(self) -> None:
        """Make the directory's entries (renames, removals) durable."""
        os.fsync(self.fd)

    def remove(self, name: str) -> bool:
        """Delete name durably (an empty directory someone made in its place
        too); False when it did not exist."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            try:
                os.rmdir(name, dir_fd=self.fd)
            except OSError as exc:
                raise ImageFileError(f"{name} is a directory keeptime cannot remove ({exc.strerror}); "
                                     f"it stands where keeptime keeps a file of its own") from None
        os.fsync(self.fd)
        return True


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"
