"""keeptimed's end of the CRIU hook's wire (keeptime.criu.hookwire).

The caller relay hands over every connection that starts with the hook's
magic, with the descriptors sent along and the sender's SO_PEERCRED. A small
pool of threads of its own serves them, so hook steps never wait behind gRPC
calls and cannot take gRPC's workers; beyond a bounded backlog a step is
refused at once rather than queued without end. A caller other than root is
admitted like a gRPC call (see admission: a few steps per uid, and all but
root's workers for all such callers), so root's CRIU steps always find a
worker.
One log line per step, as for RPCs.
"""
import errno
import fcntl
import logging
import os
import socket
import stat
import threading
import time
from concurrent import futures
from typing import Optional

from keeptime.criu import hookconfig, hookwire
from keeptime.criu.imagedir import ImageDir

from .access import Access, Caller
from .admission import Admission
from .criuactions import EXIT_FAILED, EXIT_USAGE, CriuActions, Step
from .limits import LimitExceeded, Limits
from .metrics import KeeptimeMetrics
from .relay import HookConnection

log = logging.getLogger("keeptimed.criu-hook")

READ_TIMEOUT = 5.0        # seconds a hook has to send the rest of its request
WORKERS = 8
MAX_PENDING = 64          # steps waiting for a worker; more are refused at once
RESULTS = {0: "OK", EXIT_FAILED: "FAILED", EXIT_USAGE: "USAGE"}
LOGGED_MESSAGE_CHARS = 2000


class RequestError(Exception):
    """A request that cannot be served; the message says why."""


class HookServer:
    """Serves CRIU hook connections the relay hands over."""

    def __init__(self, actions: CriuActions, access: Access, metrics: KeeptimeMetrics,
                 admission: Optional[Admission] = None, workers: int = WORKERS, max_pending: int = MAX_PENDING):
        self.actions = actions
        self.access = access
        self.metrics = metrics
        self.admission = admission or Admission(Limits.defaults(), hook_workers=workers)
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keeptimed-criu-hook")
        self._pending = threading.BoundedSemaphore(max_pending)
        self._reading: set[HookConnection] = set()   # steps still waiting for their request
        self._lock = threading.Lock()
        self._stopping = False

    def submit(self, connection: HookConnection) -> None:
        """Take a connection from the relay (its thread: never blocks)."""
        # Counted from here to the end of _serve: a step that waits for a
        # worker, or for its caller's request, holds a place all the same.
        try:
            ticket = self.admission.enter(self.access.caller_of(connection.credentials), self.admission.hook)
        except LimitExceeded as exc:
            self.metrics.refused(exc.limit)
            self._refuse(connection, f"keeptime criu-hook: keeptimed refused the step: {exc.message}\n")
            return
        if not self._pending.acquire(blocking=False):
            self.admission.leave(ticket)
            self._refuse(connection, "keeptime criu-hook: keeptimed is busy with other CRIU steps; try again\n")
            return
        try:
            self._pool.submit(self._serve, connection, ticket)
        except RuntimeError:   # shutting down
            self._pending.release()
            self.admission.leave(ticket)
            connection.close()

    @staticmethod
    def _refuse(connection: HookConnection, message: str) -> None:
        log.warning("CRIU hook step from uid %d (pid %d) refused: %s", connection.credentials.uid,
                    connection.credentials.pid, message.strip())
        _reply_nowait(connection, EXIT_FAILED, message)
        connection.close()

    def shutdown(self) -> None:
        """Finish the steps under way; refuse the rest. A step still waiting
        for its request ends at once: a hook that sends slowly cannot hold
        keeptimed's shutdown."""
        with self._lock:
            self._stopping = True
            for connection in self._reading:
                _shut(connection)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _serve(self, connection: HookConnection, ticket=None) -> None:
        try:
            self._serve_step(connection)
        finally:
            self.admission.leave(ticket)

    def _serve_step(self, connection: HookConnection) -> None:
        started = time.monotonic()
        action, code, step, answered = "?", EXIT_FAILED, None, False
        try:
            fields, fds = self._read(connection)
            action = fields.get("action", "")
            if fields.get("answer") == "early" and action == hookwire.ANSWERED_EARLY:
                _answer(connection, action, 0, f"keeptime criu-hook: {action}: keeptimed verifies pid "
                                               f"{fields.get('init_pid', '?')}; `keeptime restores` shows the verdict\n")
                answered = True
            step = self._step(connection, fields, fds)
            code = self.actions.run(step) if step.action else EXIT_USAGE
            message = "".join(f"keeptime criu-hook: {action}: {line}\n" for line in step.lines)
        except (RequestError, hookconfig.ConfigError) as exc:
            code, message = EXIT_USAGE, f"keeptime criu-hook: {action}: {exc}\n"
        except Exception:
            log.exception("CRIU hook step %s failed", action)
            message = f"keeptime criu-hook: {action}: internal error in keeptimed; see its log\n"
        finally:
            self._pending.release()
        try:
            if not answered:
                _answer(connection, action, code, message)
        finally:
            if step is not None and step.images is not None:
                step.images.close()
            connection.close()
        self._log(connection, action, code, time.monotonic() - started, step, message)

    def _read(self, connection: HookConnection) -> tuple[dict, dict]:
        with self._lock:
            if self._stopping:
                raise RequestError("keeptimed is stopping")
            self._reading.add(connection)
        try:
            return _read_request(connection)
        finally:
            with self._lock:
                self._reading.discard(connection)

    def _step(self, connection: HookConnection, fields: dict, fds: dict) -> Step:
        caller = self.access.caller_of(connection.credentials)
        step = Step(action=fields.get("action", ""), caller=caller, config=_config(fields, fds.get("config")),
                    init_pid=fields.get("init_pid", ""), pidfd=fds.get("pidfd"),
                    image_dir=fields.get("image_dir", ""))
        if step.pidfd is None and fields.get("pidfd_errno", "").isdigit():
            step.pidfd_error = int(fields["pidfd_errno"])
        if "image_dir" in fds:
            step.images = _image_dir(fds["image_dir"], caller)
        elif "image_dir_errno" in fields:
            step.image_dir_error = _strerror(fields["image_dir_errno"])
        return step

    def _log(self, connection: HookConnection, action: str, code: int, seconds: float,
             step: Optional[Step], message: str) -> None:
        result = RESULTS.get(code, str(code))
        credentials = connection.credentials
        line = {"rpc": "CriuHook", "action": action, "caller": credentials.program or "?",
                "caller_pid": credentials.pid, "caller_uid": credentials.uid, "caller_gid": credentials.gid,
                "init_pid": step.init_pid if step else "", "status": result,
                "duration_ms": round(seconds * 1e3, 3), "said": message.strip()[:LOGGED_MESSAGE_CHARS]}
        self.metrics.observe_hook(action if action in hookwire.ACTIONS else "other", result, seconds)
        log.log(logging.INFO if code == 0 else logging.WARNING, "CriuHook %s %s", action, result,
                extra={"fields": line})


def _answer(connection: HookConnection, action: str, code: int, message: str) -> None:
    """Send the hook its exit status and lines, if it is still there to take them."""
    try:
        connection.sock.settimeout(READ_TIMEOUT)
        connection.sock.sendall(hookwire.encode_reply(code, message))
    except OSError as exc:
        log.warning("CRIU hook step %s: cannot answer: %s", action, exc)


def _read_request(connection: HookConnection) -> tuple[dict, dict]:
    """(fields, {descriptor name: fd}) of the request; the fds stay the
    connection's, closed with it. The whole request must come within
    READ_TIMEOUT, however it is cut into pieces."""
    sock = connection.sock
    deadline = time.monotonic() + READ_TIMEOUT
    data = connection.received
    header = len(hookwire.MAGIC) + 4
    try:
        while len(data) < header:
            data += _recv(sock, header - len(data), deadline)
        length = hookwire.body_length(data[:header])
        while len(data) < header + length:
            data += _recv(sock, header + length - len(data), deadline)
        fields = hookwire.parse_body(data[header:header + length])
    except TimeoutError:
        raise RequestError(f"bad request from the hook: timed out: the whole request must come within "
                           f"{READ_TIMEOUT:g} s") from None
    except (hookwire.WireError, OSError) as exc:
        raise RequestError(f"bad request from the hook: {exc}") from None
    names = [name for name in fields.get("fds", "").split(",") if name]
    if len(names) != len(connection.fds) or any(name not in hookwire.FD_NAMES for name in names) \
            or len(set(names)) != len(names):
        raise RequestError(f"the hook sent {len(connection.fds)} descriptors named {names}")
    return fields, dict(zip(names, connection.fds))


def _recv(sock: socket.socket, size: int, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)
    chunk = sock.recv(size)
    if not chunk:
        raise hookwire.WireError("the hook closed the connection mid-request")
    return chunk


def _config(fields: dict, fd: Optional[int]) -> hookconfig.HookConfig:
    """The configuration the hook opened (with its own privileges)."""
    path = fields.get("config", hookconfig.DEFAULT_CONFIG)
    if fd is None:
        err = int(fields.get("config_errno", errno.ENOENT) or errno.ENOENT)
        if err == errno.ENOENT and fields.get("config_named") != "1":
            return hookconfig.HookConfig()
        if err == errno.ENOENT:
            raise hookconfig.missing_named_config(path)
        raise hookconfig.ConfigError(f"cannot read {path}: {os.strerror(err)}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise hookconfig.ConfigError(f"{path} is not a regular file")
        raw = os.pread(fd, hookconfig.MAX_CONFIG_BYTES + 1, 0)
    except OSError as exc:
        raise hookconfig.ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return hookconfig.from_bytes(raw, path)


def _image_dir(fd: int, caller: Caller) -> ImageDir:
    """The image directory the hook opened. For a caller other than root the
    directory and every file read in it must be the caller's, and files are
    written as the caller: keeptimed never lends it root's rights there."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_PATH:
            raise RequestError("the descriptor sent as the image directory is not an open directory")
        if not caller.privileged and st.st_uid != caller.uid:
            raise RequestError(f"the image directory belongs to uid {st.st_uid}: keeptimed works for uid "
                               f"{caller.uid} only in a directory of its own")
    except OSError as exc:
        raise RequestError(f"the image directory: {exc.strerror}") from None
    confined = {} if caller.privileged else {"owner": (caller.uid, caller.gid), "require_owner": caller.uid}
    return ImageDir(fd=os.dup(fd), **confined)


def _strerror(text: str) -> str:
    try:
        return os.strerror(int(text))
    except ValueError:
        return text


def _shut(connection: HookConnection) -> None:
    """End a connection's reads (and writes) at once, from another thread."""
    try:
        connection.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _reply_nowait(connection: HookConnection, code: int, message: str) -> None:
    try:
        connection.sock.send(hookwire.encode_reply(code, message), socket.MSG_DONTWAIT)
    except OSError:
        pass
