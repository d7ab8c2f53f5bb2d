"""A small disk for tests that fill it: a tmpfs in a private mount namespace."""
import errno
import os
import subprocess
import time

import pytest


class SmallDisk:
    """A tmpfs of `size` bytes mounted at `path` inside a private mount
    namespace that only `holder` (and processes run through `prefix`) see, so
    nothing leaks into the host's mounts. `view` reaches it from outside."""

    def __init__(self, path: str, size: int):
        self.path = path
        self.size = size
        os.mkdir(path, 0o700)
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "infinity"],
                                       stderr=subprocess.PIPE)
        self.prefix = ["nsenter", "-t", str(self.holder.pid), "-m", "--"]
        self.view = f"/proc/{self.holder.pid}/root{path}"
        mount = self._mount()
        if mount.returncode != 0:
            self.close()
            pytest.skip(f"cannot mount a tmpfs in a private mount namespace: {mount.stderr.strip()}")

    def _mount(self) -> subprocess.CompletedProcess:
        deadline = time.monotonic() + 10
        while True:  # until unshare has made the namespace (its ns/mnt differs from ours)
            if self.holder.poll() is not None:
                return subprocess.CompletedProcess([], 1, "", self.holder.stderr.read().decode())
            if os.readlink(f"/proc/{self.holder.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt"):
                break
            if time.monotonic() > deadline:
                return subprocess.CompletedProcess([], 1, "", "unshare --mount made no namespace")
            time.sleep(0.01)
        return subprocess.run(
            [*self.prefix, "mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", self.path],
            capture_output=True, text=True, timeout=30,
        )

    def free_bytes(self) -> int:
        st = os.statvfs(self.view)
        return st.f_bavail * st.f_frsize

    def fill(self, name: str) -> str:
        """Write a file until the disk is full; returns its path (seen from outside)."""
        path = os.path.join(self.view, name)
        with open(path, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        return path

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()
