"""Assemble and run keeptimed: store, host clock, reaper, gRPC server on a
unix socket, health and reflection, metrics endpoint, systemd notifications;
stop gracefully on SIGTERM/SIGINT."""
import errno
import logging
import os
import signal
import socket
import sqlite3
import stat
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc

from . import __version__, caps, native, procfs
from .children import Children
from .config import Config
from .hostclock import HostClock
from .metrics import KeeptimeMetrics
from .metrics_http import MetricsServer
from .sdnotify import Notifier
from .service import About, KeeptimeService
from .store import RecordStore

log = logging.getLogger("keeptimed")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Keeptime"].full_name
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
HEALTH_INTERVAL = 5.0        # seconds between self-checks (shorter when systemd's watchdog asks)
STORE_CHECK_TIMEOUT = 2.0    # seconds the record store gets to answer a self-check


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


class Daemon:
    """A running keeptimed. start(), then stop() (or run() until a signal)."""

    def __init__(self, config: Config, notifier: Notifier = None):
        self.config = config
        self.notifier = notifier or Notifier(None)
        self.metrics_server = None
        self._stopping = threading.Event()

    def start(self) -> None:
        c = self.config
        if not procfs.has_time_namespaces():
            raise StartupError("this kernel has no time namespaces (needs Linux >= 5.6 with CONFIG_TIME_NS)")
        for need in caps.missing():
            log.warning("running without %s, needed for %s", need.name, need.needed_for)
        try:
            self.store = RecordStore(c.db)
        except (OSError, sqlite3.Error, RuntimeError) as exc:
            raise StartupError(f"cannot open the record store {c.db}: {exc}") from None
        _prepare_socket_path(c.socket)
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
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=c.workers, thread_name_prefix="keeptimed-rpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        pb_grpc.add_KeeptimeServicer_to_server(
            KeeptimeService(self.store, self.host, self.children, self.metrics, c.default_policy, about),
            self.server,
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        # The socket must never exist with a wider mode, not even briefly.
        old_umask = os.umask(0o177)
        try:
            if self.server.add_insecure_port(f"unix:{c.socket}") == 0:
                raise StartupError(f"cannot listen on {c.socket}")
            self.server.start()
        finally:
            os.umask(old_umask)
        os.chmod(c.socket, 0o600)
        self._set_health(SERVING)
        if self.metrics_server:
            self.metrics_server.start()
        fields = {"socket": c.socket, "db": c.db, "config": c.path if c.file_loaded else None,
                  "metrics": about.metrics_address or None, "version": __version__}
        log.info("keeptimed serving on %s, records in %s", c.socket, c.db,
                 extra={"fields": {k: v for k, v in fields.items() if v is not None}})
        # Only now: the socket accepts calls and health says SERVING.
        self.notifier.ready(f"serving on {c.socket}")
        threading.Thread(target=self._monitor, name="keeptimed-health", daemon=True).start()

    def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def healthy(self) -> bool:
        """Whether the parts a request needs still work: the reaper runs and
        the record store answers (a wedged store lock would hang every call)."""
        return self.children.alive() and self.store.responsive(STORE_CHECK_TIMEOUT)

    def _monitor(self) -> None:
        """Check healthy() periodically: grpc.health.v1 (what Kubernetes
        probes ask) says NOT_SERVING while it fails, and the systemd watchdog
        ping is withheld, so either supervisor restarts keeptimed."""
        interval = min(self.notifier.watchdog_interval or HEALTH_INTERVAL, HEALTH_INTERVAL)
        serving = True
        while not self._stopping.wait(interval):
            healthy = self.healthy()
            if healthy:
                self.notifier.watchdog()
            if healthy == serving or self._stopping.is_set():
                continue
            serving = healthy
            self._set_health(SERVING if healthy else NOT_SERVING)
            if healthy:
                log.warning("healthy again: reporting SERVING")
            else:
                log.error("unhealthy (reaper stopped or record store not answering): reporting NOT_SERVING and "
                          "withholding the systemd watchdog ping, so a supervisor restarts keeptimed")

    def stop(self) -> None:
        """Refuse new work, let in-flight calls finish (up to the grace period), release everything."""
        self._stopping.set()
        self.notifier.stopping(f"draining in-flight calls for up to {self.config.grace:g} s")
        self.health.enter_graceful_shutdown()
        self.server.stop(self.config.grace).wait()
        if self.metrics_server:
            self.metrics_server.stop()
        self.children.close()
        native.shutdown()
        self.store.close()
        try:
            os.unlink(self.config.socket)
        except FileNotFoundError:
            pass
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
