"""A real keeptimed subprocess on a private socket and store, for tests and benchmarks."""
import os
import signal
import subprocess
import sys
import time

import grpc

from .procstat import zombie_children


class RunningDaemon:
    """A keeptimed subprocess serving on a private socket and database."""

    def __init__(self, workdir, db=None, command_prefix=()):
        """workdir holds the socket, log and (unless db is given) the store;
        command_prefix runs the daemon through a wrapper that execs it, such
        as ``nsenter -t PID -m --``, so ``proc`` is still keeptimed itself."""
        self.workdir = workdir
        self.socket = os.path.join(workdir, "keeptime.sock")
        self.db = db or os.path.join(workdir, "keeptime.db")
        self.log_path = os.path.join(workdir, "keeptimed.log")
        self.command_prefix = list(command_prefix)
        # An empty configuration file of its own: whatever /etc/keeptime holds
        # on this machine does not leak into the tests.
        self.config = os.path.join(workdir, "keeptimed.toml")
        open(self.config, "a").close()
        self.proc = None

    def start(self, *extra: str, env: dict = None, wait: bool = True, wrapper: tuple = None) -> "RunningDaemon":
        """Start keeptimed with extra flags (and extra environment), run
        through wrapper (a command prefix such as setpriv; default the
        command_prefix given at construction); wait until it serves."""
        self._log = open(self.log_path, "ab")
        prefix = self.command_prefix if wrapper is None else list(wrapper)
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "keeptimed", "--config", self.config, "--socket", self.socket,
             "--db", self.db, *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self, timeout: float = 20.0) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keeptimed exited with {self.proc.returncode}:\n{self.log()}")
            if os.path.exists(self.socket):
                with grpc.insecure_channel(f"unix:{self.socket}") as channel:
                    try:
                        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            return
                    except grpc.RpcError:
                        pass
            time.sleep(0.05)
        raise RuntimeError(f"keeptimed did not start serving:\n{self.log()}")

    def health(self) -> str:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def client(self):
        from keeptime import Client

        return Client(socket=self.socket)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run the keeptime CLI against this daemon."""
        return subprocess.run(
            [sys.executable, "-m", "keeptime.cli", "--socket", self.socket, *args],
            capture_output=True, text=True, timeout=timeout,
        )

    def zombies(self) -> list[int]:
        """Children of the daemon that exited and were not reaped."""
        return zombie_children(self.proc.pid)
