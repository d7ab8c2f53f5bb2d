"""Shared fixtures: a real keeptimed on a temporary socket, a compiled clock
probe, a keeptimed open to nobody's group and a client that is nobody to it,
and the `root` marker for tests that need privileges and time namespaces
(skipped elsewhere with the reason)."""
import contextlib
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from helpers import hookbin
from helpers.daemon import RunningDaemon
from helpers.impersonate import ConnectAs, as_user
from keeptime import Client

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
def nobody_sleeper():
    """pid of a process running as nobody (uid and gid 65534), as most
    processes on a host belong to someone other than root."""
    proc = subprocess.Popen(as_user(65534, 65534, ["sleep", "300"]))
    yield proc.pid
    proc.kill()
    proc.wait()


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
        child = _wait_for_child(parent.pid)
        yield child, parent.pid
    finally:
        # The child first: once unshare is dead it is reparented and pkill -P no longer finds it.
        subprocess.run(["pkill", "-KILL", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()


@pytest.fixture
def root_sleeper():
    """pid of a root process in the host's time namespace: ten days behind a far_process record."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def criu_forward_program() -> str:
    """keeptime-criu-forward, the native forwarder alone (what install.sh names as CRIU's action script)."""
    try:
        return hookbin.forwarder()
    except hookbin.NotBuilt as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def criu_hook_program(tmp_path_factory, criu_forward_program) -> str:
    """keeptime-criu-hook, CRIU's action script, in a bin/ laid out as an
    installation of both distributions lays it out (helpers/hookbin.py)."""
    return hookbin.install_hook(str(tmp_path_factory.mktemp("bin")))


# -- a non-root caller: keeptimed's socket opened to nobody's group, and a
# client that is nobody to it (real SO_PEERCRED, see helpers/impersonate.py)

NOBODY = 65534
NOGROUP = 65534


@contextlib.contextmanager
def scratch_dir(prefix: str, mode: int):
    """A new temporary directory of mode (pytest's tmp_path is root-only), removed after."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, mode)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", path], check=False)


@pytest.fixture
def open_dir():
    """A directory every user may traverse."""
    with scratch_dir("keeptime-access-", 0o755) as path:
        yield path


@pytest.fixture
def group_daemon(open_dir):
    """keeptimed with its socket opened to the nobody user's group."""
    running = RunningDaemon(open_dir).start("--socket-group", str(NOGROUP))
    yield running
    running.stop()


@pytest.fixture
def as_nobody(group_daemon, open_dir):
    """A keeptime.Client that keeptimed sees as uid and gid 65534."""
    proxy = ConnectAs(open_dir, group_daemon.socket, NOBODY, NOGROUP)
    with Client(socket=proxy.path, timeout=20) as client:
        yield client
    proxy.close()


@pytest.fixture
def world_writable_dir():
    """A directory every user may write (programs write there as nobody)."""
    with scratch_dir("keeptime-shared-", 0o777) as path:
        yield path


# -- real CRIU, runc and podman (helpers/containers.py), skipped with the
# reason where they are absent or `criu check` fails

def _skip_unless_usable(reason: str) -> None:
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def criu_ready():
    from helpers import containers

    _skip_unless_usable(containers.criu_skip_reason())


@pytest.fixture(scope="session")
def runc_ready(criu_ready):
    from helpers import containers

    _skip_unless_usable(containers.runc_skip_reason())


@pytest.fixture(scope="session")
def podman_ready(runc_ready):
    from helpers import containers

    _skip_unless_usable(containers.podman_skip_reason())


@pytest.fixture(scope="session")
def ticker():
    """A static program appending "MONOTONIC BOOTTIME" every 10 ms to the file it is given."""
    from helpers import containers

    directory = containers.public_dir("keeptime-ticker-")
    try:
        yield containers.build_ticker(directory)
    except containers.Unavailable as exc:
        pytest.skip(str(exc))
    finally:
        shutil.rmtree(directory)
