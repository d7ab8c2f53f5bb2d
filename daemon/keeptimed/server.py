"""Assemble and run keeptimed: store, host clock, reaper, gRPC server on a
unix socket, health and reflection; stop gracefully on SIGTERM/SIGINT."""
import errno
import logging
import os
import signal
import socket
import stat
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc

from . import native, procfs
from .children import Children
from .hostclock import HostClock
from .service import KeeptimeService
from .store import RecordStore

log = logging.getLogger("keeptimed")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Keeptime"].full_name
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CAP_SYS_ADMIN = 21
CAP_SYS_TIME = 25


@dataclass
class Settings:
    socket_path: str
    db_path: str
    workers: int = 32
    grace_seconds: float = 10.0
    default_policy: str = "suspend"


class StartupError(Exception):
    """keeptimed cannot start; the message says why and what to do."""


def _missing_capabilities() -> list[str]:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
                break
        else:
            return []
    return [name for bit, name in ((CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_SYS_TIME, "CAP_SYS_TIME"))
            if not effective & (1 << bit)]


def _prepare_socket_path(path: str) -> None:
    """Make the socket's directory, and clear a stale socket left by a crash,
    but never take over a socket another keeptimed still serves."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"{path} exists and is not a socket; remove it or choose --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        os.unlink(path)
    else:
        raise StartupError(f"another process is serving {path}; stop it or choose --socket")
    finally:
        probe.close()


class Daemon:
    """A running keeptimed. start(), then stop() (or run() until a signal)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._stopping = threading.Event()

    def start(self) -> None:
        s = self.settings
        if not procfs.has_time_namespaces():
            raise StartupError("this kernel has no time namespaces (needs Linux >= 5.6 with CONFIG_TIME_NS)")
        missing = _missing_capabilities()
        if missing:
            log.warning("running without %s: restore and exec will fail with PERMISSION_DENIED", ", ".join(missing))
        self.store = RecordStore(s.db_path)
        self.host = HostClock()
        self.children = Children()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="keeptimed-rpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        pb_grpc.add_KeeptimeServicer_to_server(
            KeeptimeService(self.store, self.host, self.children, s.default_policy), self.server
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        _prepare_socket_path(s.socket_path)
        # The socket must never exist with a wider mode, not even briefly.
        old_umask = os.umask(0o177)
        try:
            if self.server.add_insecure_port(f"unix:{s.socket_path}") == 0:
                raise StartupError(f"cannot listen on {s.socket_path}")
            self.server.start()
        finally:
            os.umask(old_umask)
        os.chmod(s.socket_path, 0o600)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("keeptimed serving on %s, records in %s", s.socket_path, s.db_path)

    def stop(self) -> None:
        """Refuse new work, let in-flight calls finish (up to the grace period), release everything."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.settings.grace_seconds).wait()
        self.children.close()
        native.shutdown()
        self.store.close()
        try:
            os.unlink(self.settings.socket_path)
        except FileNotFoundError:
            pass
        log.info("keeptimed stopped")

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the process exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self._stopping.set())
        self.start()
        self._stopping.wait()
        log.info("shutting down: draining in-flight calls for up to %.0f s", self.settings.grace_seconds)
        self.stop()
        return 0
