"""Shared fixtures: a real keeptimed on a temporary socket, a compiled clock
probe, and the `root` marker for tests that need privileges and time
namespaces (skipped elsewhere with the reason)."""
import os
import shutil
import signal
import subprocess
import sys
import time

import grpc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _root_skip_reason() -> str:
    if os.geteuid() != 0:
        return "needs root (CAP_SYS_ADMIN and CAP_SYS_TIME) for time namespaces"
    if not os.path.exists("/proc/self/ns/time"):
        return "this kernel has no time namespaces (CONFIG_TIME_NS)"
    return ""


def pytest_collection_modifyitems(config, items):
    reason = _root_skip_reason()
    if not reason:
        return
    for item in items:
        if "root" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def clockprobe(tmp_path_factory) -> str:
    """Path of a tiny C program that prints its CLOCK_MONOTONIC and
    CLOCK_BOOTTIME in ns as its very first action, then optionally sleeps."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the clock probe")
    out = tmp_path_factory.mktemp("probe") / "clockprobe"
    subprocess.run(
        ["gcc", "-O2", "-o", str(out), os.path.join(HERE, "helpers", "clockprobe.c")], check=True
    )
    return str(out)


class RunningDaemon:
    """A keeptimed subprocess serving on a private socket and database."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.socket = str(workdir / "keeptime.sock")
        self.db = str(workdir / "keeptime.db")
        self.log_path = str(workdir / "keeptimed.log")
        # An empty configuration file of its own: whatever /etc/keeptime holds
        # on this machine does not leak into the tests.
        self.config = str(workdir / "keeptimed.toml")
        open(self.config, "a").close()
        self.proc = None

    def start(self, *extra: str, env: dict = None, wait: bool = True) -> "RunningDaemon":
        """Start keeptimed with extra flags (and extra environment); wait until it serves."""
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keeptimed", "--config", self.config, "--socket", self.socket, "--db", self.db,
             *extra],
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


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One real keeptimed per test module (root tests only)."""
    if _root_skip_reason():
        pytest.skip(_root_skip_reason())
    running = RunningDaemon(tmp_path_factory.mktemp("keeptimed")).start()
    yield running
    status = running.stop()
    assert status == 0, running.log()


@pytest.fixture
def fresh_daemon(tmp_path):
    """A keeptimed of the test's own, for tests that stop or restart it."""
    if _root_skip_reason():
        pytest.skip(_root_skip_reason())
    running = RunningDaemon(tmp_path).start()
    yield running
    running.stop()


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c


TEN_DAYS_S = 10 * 86_400


def _wait_for_child(parent: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                kids = f.read().split()
        except OSError:
            kids = []
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    raise RuntimeError(f"pid {parent} started no child")


@pytest.fixture
def far_process():
    """A long-running process inside a time namespace whose clocks are 10 days
    ahead of the host's: a stand-in for a process on a host that booted long ago.
    Yields (pid of the process inside, pid of the util-linux unshare parent)."""
    if _root_skip_reason():
        pytest.skip(_root_skip_reason())
    parent = subprocess.Popen([
        "unshare", "--time", "--fork", "--monotonic", str(TEN_DAYS_S), "--boottime", str(TEN_DAYS_S),
        "sleep", "600",
    ])
    try:
        yield _wait_for_child(parent.pid), parent.pid
    finally:
        parent.kill()
        parent.wait()
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)

