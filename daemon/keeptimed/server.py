"""Assemble and run keeptimed: store, host clock, reaper, gRPC server on a
unix socket, health and reflection, metrics endpoint, systemd notifications;
stop gracefully on SIGTERM/SIGINT."""
import errno
import grp
import ipaddress
import logging
import os
import signal
import socket
import sqlite3
import stat
import threading
import time
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keeptime.limits import CHANNEL_OPTIONS
from keeptime.v1 import keeptime_pb2 as pb

from . import __version__, caps, confine, door, fdlimit, native, procfs
from .access import Access
from .admission import Admission, AdmissionInterceptor
from .children import Children
from .config import Config
from .criuactions import CriuActions
from .criuhook import HookServer
from .hostclock import HostClock
from .limits import Limits
from .metrics import KeeptimeMetrics
from .metrics_http import MetricsServer
from .pools import Pools
from .relay import CallerRelay
from .sdnotify import Notifier
from .service import About, KeeptimeService
from .store import RecordStore

log = logging.getLogger("keeptimed")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Keeptime"].full_name
# A client that has not sent the HTTP/2 preface and its SETTINGS by then is
# cut off (real clients send both at once), so stalled connections cannot
# pile up; gRPC's default is two minutes.
HANDSHAKE_TIMEOUT_MS = 10_000
HEALTH_INTERVAL = 5.0        # seconds between self-checks (shorter when systemd's watchdog asks)
STORE_CHECK_TIMEOUT = 2.0    # seconds the record store gets to answer a self-check
WORKER_CHECK_TIMEOUT = 2.0   # seconds a no-op gets to find a free RPC worker in a self-check
HOOK_WORKERS = 8             # threads serving CRIU hook steps
POOL_NAMES = {"quick": "quick workers (quick_workers)", "blocking": "workers for waits and streams (workers)"}


class StartupError(Exception):
    """keeptimed cannot start; the message says why and what to do."""


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


def write_pid_file(path: str) -> None:
    """Put this process's pid in path (0644), atomically: a reader never sees a partial file."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(f"{os.getpid()}\n")
        os.replace(temporary, path)
    except OSError as exc:
        raise StartupError(f"cannot write the pid file {path}: {exc.strerror}") from None


def remove_pid_file(path: str) -> None:
    """Remove path if it still names this process (a successor may own it by now)."""
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() == str(os.getpid()):
                os.unlink(path)
    except (OSError, ValueError):
        pass


def _group_id(name: str) -> Optional[int]:
    if not name:
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


def tcp_credentials(c: Config) -> Optional[grpc.ServerCredentials]:
    """Mutual-TLS credentials for the TCP listener; None for --insecure-loopback.

    Refuses every other combination: TCP without TLS would hand root to
    anyone who can reach the port.
    """
    tls = (c.tls_cert, c.tls_key, c.tls_client_ca)
    if all(tls):
        return grpc.ssl_server_credentials(
            [(_read(c.tls_key, "TLS key"), _read(c.tls_cert, "TLS certificate"))],
            root_certificates=_read(c.tls_client_ca, "client CA"),
            require_client_auth=True,
        )
    if any(tls):
        raise StartupError("TCP needs all of --tls-cert, --tls-key and --tls-client-ca")
    if not c.insecure_loopback:
        raise StartupError(f"refusing TCP on {c.tcp} without mutual TLS "
                           "(give --tls-cert/--tls-key/--tls-client-ca, or --insecure-loopback on a loopback address)")
    if not _is_loopback(c.tcp):
        raise StartupError(f"--insecure-loopback needs a loopback address, not {c.tcp}")
    return None


class Daemon:
    """A running keeptimed. start(), then stop() (or run() until a signal)."""

    def __init__(self, config: Config, notifier: Notifier = None):
        self.config = config
        self.notifier = notifier or Notifier(None)
        self.metrics_server = None
        self._stopping = threading.Event()

    def start(self) -> None:
        c = self.config
        limits = Limits.from_config(c)
        native.set_exec_timeout(limits.exec_timeout)
        if not procfs.has_time_namespaces():
            raise StartupError("this kernel has no time namespaces (needs Linux >= 5.6 with CONFIG_TIME_NS)")
        for need in caps.missing():
            log.warning("running without %s, needed for %s", need.name, need.needed_for)
        fdlimit.raise_own_limit()
        credentials = tcp_credentials(c) if c.tcp else None
        socket_gid = _group_id(c.socket_group)
        try:
            self.store = RecordStore(c.db, limits)
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(f"cannot open the record store {c.db}: {exc} "
                               "(is its disk full or read-only? free space or choose --db)") from None
        except RuntimeError as exc:
            raise StartupError(f"cannot open the record store {c.db}: {exc}") from None
        self.host = HostClock()
        self.children = Children()
        self.metrics = KeeptimeMetrics(__version__)
        self.metrics.add_gauge("keeptime_records_stored", "Records in the store.", self.store.count)
        self.metrics.add_gauge("keeptime_children_running",
                               "Processes this keeptimed started (restore, exec) that still run.",
                               lambda: len(self.children.running()))
        if c.metrics_address:
            try:
                self.metrics_server = MetricsServer(c.metrics_address, self.metrics.render)
            except OSError as exc:
                raise StartupError(f"cannot serve metrics on {c.metrics_address}: {exc.strerror}") from None
        about = About(
            config_path=c.path, config_file_loaded=c.file_loaded, socket_path=c.socket, db_path=c.db,
            metrics_address=self.metrics_server.address if self.metrics_server else "",
            started_realtime_ns=time.time_ns(),
        )
        _prepare_socket_path(c.socket)
        self.relay = CallerRelay(c.socket, socket_gid)
        access = Access(self.relay, c.tls_allow_name,
                        confine.Settings(frozenset(c.allow_lost_confinement), c.root_programs_cgroup))
        admission = Admission(limits, hook_workers=HOOK_WORKERS)
        self.pools = Pools(limits.quick_workers, limits.workers)
        self.server = grpc.server(
            self.pools.blocking,   # every method names its pool; this serves none
            interceptors=[AdmissionInterceptor(admission, access, self.pools, self.metrics.refused)],
            options=[*CHANNEL_OPTIONS, ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS)],
        )
        service = KeeptimeService(self.store, self.host, self.children, access, self.metrics, c.default_policy,
                                  about, admission)
        door.add_to_server(service, self.server)
        # The CRIU hook's steps arrive on the same socket, with descriptors gRPC cannot carry.
        self.hooks = HookServer(CriuActions(self.store, self.host, access, service.restores), access, self.metrics,
                                admission, workers=HOOK_WORKERS)
        self.relay.on_hook = self.hooks.submit
        # Blocking Watch streams: each holds a worker (admitted like any
        # call), and a watcher that does not read never blocks set().
        self.health = health.HealthServicer(experimental_non_blocking=False)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        # The gRPC server listens only on the private socket (in a 0700
        # directory); callers reach it through the relay, which knows who they are.
        if self.server.add_insecure_port(f"unix:{self.relay.private_socket}") == 0:
            raise StartupError(f"cannot listen on {self.relay.private_socket}")
        if c.tcp:
            bound = (self.server.add_secure_port(c.tcp, credentials) if credentials
                     else self.server.add_insecure_port(c.tcp))
            if bound == 0:
                raise StartupError(f"cannot listen on {c.tcp}")
            log.info("keeptimed serving %s on %s", "mutual TLS" if credentials else "INSECURE loopback TCP", c.tcp)
        self.server.start()
        try:
            self.relay.start()
        except PermissionError as exc:
            hint = " (giving it to socket_group needs CAP_CHOWN)" if c.socket_group else ""
            raise StartupError(f"cannot set up {c.socket}: {exc.strerror}{hint}") from None
        self._set_health(SERVING)
        if self.metrics_server:
            self.metrics_server.start()
        fields = {"socket": c.socket, "db": c.db, "config": c.path if c.file_loaded else None,
                  "metrics": about.metrics_address or None, "tcp": c.tcp or None, "version": __version__,
                  "quick_workers": limits.quick_workers, "workers": limits.workers}
        log.info("keeptimed serving on %s, records in %s", c.socket, c.db,
                 extra={"fields": {k: v for k, v in fields.items() if v is not None}})
        if c.pid_file:
            write_pid_file(c.pid_file)
        # Only now: the socket accepts calls and health says SERVING.
        self.notifier.ready(f"serving on {c.socket}")
        threading.Thread(target=self._monitor, name="keeptimed-health", daemon=True).start()

    def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def problems(self) -> list[str]:
        """What keeps keeptimed from serving calls, if anything: the reaper
        stopped, the record store does not answer (a wedged store lock would
        hang every call), or a pool has no worker thread free to take a call
        (all are held by calls that last)."""
        found = []
        if not self.children.alive():
            found.append("the reaper of started processes stopped")
        if not self.store.responsive(STORE_CHECK_TIMEOUT):
            found.append(f"the record store did not answer within {STORE_CHECK_TIMEOUT:g} s")
        for pool in self.pools.starved(WORKER_CHECK_TIMEOUT):
            found.append(f"no worker thread took a call within {WORKER_CHECK_TIMEOUT:g} s: all "
                         f"{self.pools.sizes[pool]} {POOL_NAMES[pool]} are held")
        return found

    def healthy(self) -> bool:
        """Whether the parts a request needs still work (see problems())."""
        return not self.problems()

    def _monitor(self) -> None:
        """Check healthy() periodically: grpc.health.v1 (what Kubernetes
        probes ask) says NOT_SERVING while it fails, and the systemd watchdog
        ping is withheld, so either supervisor restarts keeptimed."""
        interval = min(self.notifier.watchdog_interval or HEALTH_INTERVAL, HEALTH_INTERVAL)
        serving = True
        while not self._stopping.wait(interval):
            problems = self.problems()
            healthy = not problems
            if healthy:
                self.notifier.watchdog()
            if healthy == serving or self._stopping.is_set():
                continue
            serving = healthy
            self._set_health(SERVING if healthy else NOT_SERVING)
            if healthy:
                log.warning("healthy again: reporting SERVING")
            else:
                log.error("unhealthy (%s): reporting NOT_SERVING and withholding the systemd watchdog ping, so a "
                          "supervisor restarts keeptimed", "; ".join(problems))

    def stop(self) -> None:
        """Refuse new work, let in-flight calls finish (up to the grace period), release everything."""
        self._stopping.set()
        self.notifier.stopping(f"draining in-flight calls for up to {self.config.grace:g} s")
        self.health.enter_graceful_shutdown()
        self.relay.stop_accepting()
        self.server.stop(self.config.grace).wait()
        # A call still waiting for a process to exec (one its owner stopped)
        # would hold the exit up until exec_timeout: end those waits now.
        native.cancel_exec_waits()
        self.relay.stop()
        self.hooks.shutdown()
        if self.metrics_server:
            self.metrics_server.stop()
        self.children.close()
        native.shutdown()
        self.store.close()
        if self.config.pid_file:
            remove_pid_file(self.config.pid_file)
        log.info("keeptimed stopped")
        self.notifier.close()

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the process exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self._stopping.set())
        self.start()
        self._stopping.wait()
        log.info("shutting down: draining in-flight calls for up to %.0f s", self.config.grace)
        self.stop()
        return 0
