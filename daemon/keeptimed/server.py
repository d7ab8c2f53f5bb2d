"""Assemble and run keeptimed: store, host clock, reaper, gRPC server on a
unix socket, health and reflection; stop gracefully on SIGTERM/SIGINT."""
import errno
import grp
import ipaddress
import logging
import os
import signal
import socket
import stat
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc

from . import native, procfs
from .access import Access
from .children import Children
from .hostclock import HostClock
from .relay import CallerRelay
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
    socket_group: Optional[str] = None      # opens the socket to a group (members confined, see access.py)
    tcp_address: Optional[str] = None       # HOST:PORT, mutual TLS unless insecure_loopback
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_client_ca: Optional[str] = None
    tls_allow_names: list[str] = field(default_factory=list)
    insecure_loopback: bool = False


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


def _group_id(name: Optional[str]) -> Optional[int]:
    if name is None:
        return None
    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise StartupError(f"--socket-group {name}: no such group") from None


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise StartupError(f"cannot read {what} {path}: {exc.strerror}") from None


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tcp_credentials(s: Settings) -> Optional[grpc.ServerCredentials]:
    """Mutual-TLS credentials for the TCP listener; None for --insecure-loopback.

    Refuses every other combination: TCP without TLS would hand root to
    anyone who can reach the port.
    """
    tls = (s.tls_cert, s.tls_key, s.tls_client_ca)
    if all(tls):
        return grpc.ssl_server_credentials(
            [(_read(s.tls_key, "TLS key"), _read(s.tls_cert, "TLS certificate"))],
            root_certificates=_read(s.tls_client_ca, "client CA"),
            require_client_auth=True,
        )
    if any(tls):
        raise StartupError("TCP needs all of --tls-cert, --tls-key and --tls-client-ca")
    if not s.insecure_loopback:
        raise StartupError(f"refusing TCP on {s.tcp_address} without mutual TLS "
                           "(give --tls-cert/--tls-key/--tls-client-ca, or --insecure-loopback on a loopback address)")
    if not _is_loopback(s.tcp_address):
        raise StartupError(f"--insecure-loopback needs a loopback address, not {s.tcp_address}")
    return None


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
        credentials = tcp_credentials(s) if s.tcp_address else None
        socket_gid = _group_id(s.socket_group)
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
        _prepare_socket_path(s.socket_path)
        self.relay = CallerRelay(s.socket_path, socket_gid)
        access = Access(self.relay, s.tls_allow_names)
        pb_grpc.add_KeeptimeServicer_to_server(
            KeeptimeService(self.store, self.host, self.children, access, s.default_policy,
                            max_waits=max(1, s.workers // 2)), self.server
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        # The gRPC server listens only on the private socket (in a 0700
        # directory); callers reach it through the relay, which knows who they are.
        if self.server.add_insecure_port(f"unix:{self.relay.private_socket}") == 0:
            raise StartupError(f"cannot listen on {self.relay.private_socket}")
        if s.tcp_address:
            bound = (self.server.add_secure_port(s.tcp_address, credentials) if credentials
                     else self.server.add_insecure_port(s.tcp_address))
            if bound == 0:
                raise StartupError(f"cannot listen on {s.tcp_address}")
            self.tcp_port = bound
            log.info("keeptimed serving %s on %s", "mutual TLS" if credentials else "INSECURE loopback TCP",
                     s.tcp_address)
        self.server.start()
        self.relay.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("keeptimed serving on %s, records in %s", s.socket_path, s.db_path)

    def stop(self) -> None:
        """Refuse new work, let in-flight calls finish (up to the grace period), release everything."""
        self.health.enter_graceful_shutdown()
        self.relay.stop_accepting()
        self.server.stop(self.settings.grace_seconds).wait()
        self.relay.stop()
        self.children.close()
        native.shutdown()
        self.store.close()
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
