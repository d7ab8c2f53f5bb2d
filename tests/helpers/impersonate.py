"""Call keeptimed as another user without running the test suite as that user.

SO_PEERCRED is fixed when connect() is called, so a small process running
as the other uid/gid (a tiny C program, connect_as.c, so it needs nothing a
root-only home directory might hide) connects to keeptimed's socket and hands the connected socket back over SCM_RIGHTS. ConnectAs serves
a socket path of its own and pumps each connection to such a handed-back
socket: a keeptime.Client pointed at ConnectAs.path is, to keeptimed, a
client running as uid/gid.
"""
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from typing import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
_built: dict[str, str] = {}


def compiled(name: str) -> str:
    """The helper program helpers/NAME.c, compiled into a directory every user can read."""
    if name not in _built:
        out_dir = tempfile.mkdtemp(prefix=f"keeptime-{name}-")
        atexit.register(shutil.rmtree, out_dir, True)
        os.chmod(out_dir, 0o755)
        out = os.path.join(out_dir, name)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", out, os.path.join(HERE, f"{name}.c")], check=True)
        _built[name] = out
    return _built[name]


def connector() -> str:
    """The compiled connect_as helper."""
    return compiled("connect_as")


def as_user(uid: int, gid: int, argv: list[str]) -> list[str]:
    """argv to run argv as uid/gid with no supplementary groups.

    Not subprocess's user=/group=: with those it calls fork() instead of
    vfork(), holding the GIL, and fork() runs gRPC's atfork handler, which
    waits for gRPC threads that may be waiting for the GIL: a hang.
    """
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


def connect_as(uid: int, gid: int, target: str) -> subprocess.CompletedProcess:
    """Try one connect() to target as uid/gid; returncode 0 on success, else stdout names the error."""
    return subprocess.run(as_user(uid, gid, [connector(), "once", target]),
                          capture_output=True, text=True, timeout=30)


class ConnectAs:
    """A unix socket at `path` whose connections reach `target` as uid/gid.

    prefix runs the connecting process through a command such as
    ``unshare --pid --fork`` (as root, before the switch to uid/gid), so its
    connections come from another namespace; ``process`` is that command.
    inner runs it through a command as uid/gid, after the switch."""

    def __init__(self, workdir: str, target: str, uid: int, gid: int, prefix: Sequence[str] = (),
                 inner: Sequence[str] = ()):
        self.path = os.path.join(workdir, f"as-{uid}.sock")
        ours, theirs = socket.socketpair()
        self._control = ours
        self._connector = self.process = subprocess.Popen(
            [*prefix, *as_user(uid, gid, [*inner, connector(), "serve", str(theirs.fileno()), target])],
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        self._control.close()
        self._connector.wait(timeout=10)

    def connection(self) -> socket.socket:
        """A new connection to target, made by the other user (SO_PEERCRED is theirs)."""
        with self._lock:
            self._control.send(b"c")
            message, fds, _, _ = socket.recv_fds(self._control, 64, 1)
        if not fds:
            raise ConnectionError(f"connect as the other user failed: {message.decode()}")
        return socket.socket(fileno=fds[0])

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = self.connection()
            except (OSError, ConnectionError):
                client.close()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
