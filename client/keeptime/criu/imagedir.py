"""Files in CRIU's image directory, reached only through a directory fd.

CRIU hands action scripts CRTOOLS_IMAGE_DIR as /proc/<criu>/fd/N: the
directory may have no path the hook could name (a detached mount, another
mount namespace), so it is opened once and every file operation is relative
to that fd. Writes are atomic: a temporary file is written and fsync'd,
renamed over the target and the directory fsync'd, so a crash leaves either
the old file or the new one, never a half-written image.
"""
import errno
import os
import secrets
from typing import Optional

MAX_FILE_SIZE = 64 * 1024 * 1024  # far above any record or timens image


class ImageDir:
    """An open image directory; use as a context manager."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "ImageDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def read(self, name: str) -> Optional[bytes]:
        """The contents of name, or None when it does not exist."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        try:
            chunks, size = [], 0
            while chunk := os.read(fd, 1 << 20):
                size += len(chunk)
                if size > MAX_FILE_SIZE:
                    raise OSError(errno.EFBIG, f"{name} is larger than {MAX_FILE_SIZE} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write_atomic(self, name: str, data: bytes, mode: int = 0o600) -> None:
        """Replace (or create) name with data, atomically and durably."""
        tmp = f".{name}.keeptime-{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode, dir_fd=self.fd)
        try:
            try:
                os.fchmod(fd, mode)  # exactly mode, whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
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
        os.fsync(self.fd)

    def remove(self, name: str) -> bool:
        """Delete name durably; False when it did not exist."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        os.fsync(self.fd)
        return True

    def mode_of(self, name: str, default: int = 0o600) -> int:
        """Permission bits of name, so a rewrite keeps them."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode & 0o7777
        except FileNotFoundError:
            return default
