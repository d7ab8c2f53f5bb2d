"""A real keeptimed subprocess on a private socket and store, for tests and benchmarks."""
import os
import signal
import subprocess
import sys
import time

import grpc


class RunningDaemon:
    """A keeptimed subprocess serving on a private socket and database."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.socket = os.path.join(workdir, "keeptime.sock")
        self.db = os.path.join(workdir, "keeptime.db")
        self.log_path = os.path.join(workdir, "keeptimed.log")
        self.proc = None

    def start(self, *extra: str) -> "RunningDaemon":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keeptimed", "--socket", self.socket, "--db", self.db, *extra],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
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
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == self.proc.pid:
                found.append(int(entry))
        return found
