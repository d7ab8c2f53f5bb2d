"""The installed keeptime (deploy/install.sh): its daemon serves on the
embedded default socket, the installed CLI drives it end to end, and users
other than root (socket-group members, rootless CRIU) can run it."""
import os
import shutil
import stat
import subprocess

import pytest

from helpers.impersonate import as_user
from keeptime.defaults import DEFAULT_SOCKET

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not (os.path.exists(DEFAULT_SOCKET) and shutil.which("keeptime", path="/usr/local/bin")),
        reason="keeptime is not installed here (run deploy/install.sh)",
    ),
]
KEEPTIME = "/usr/local/bin/keeptime"
NOBODY = 65534


def run(*args):
    result = subprocess.run([KEEPTIME, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def as_nobody(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(as_user(NOBODY, NOBODY, list(argv)), env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)


def test_default_socket_is_private():
    mode = os.stat(DEFAULT_SOCKET).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_installed_cli_drives_the_installed_daemon():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record_id = run("checkpoint", str(sleeper.pid))
        pid = run("restore", record_id, "--policy", "freeze", "--", "/bin/true")
        assert run("wait", pid) == "0"
        assert record_id in run("list")
        assert run("rm", record_id) == record_id
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_user_other_than_root_can_run_the_installation():
    """The virtualenv is made of an interpreter every user may run (not a
    per-user one under root's 0700 home), so nobody runs keeptime: it gets
    as far as the root-only socket (exit 3), and the CRIU hook answers."""
    interpreter = os.path.realpath(os.path.join(os.path.dirname(os.path.realpath(KEEPTIME)), "python3"))
    directory = os.path.dirname(interpreter)
    while directory != "/":
        assert os.stat(directory).st_mode & stat.S_IXOTH, f"{directory} is closed to other users"
        directory = os.path.dirname(directory)
    version = as_nobody(KEEPTIME, "--version")
    assert version.returncode == 0 and version.stdout.startswith("keeptime "), version.stderr
    refused = as_nobody(KEEPTIME, "--timeout", "5", "health")
    assert refused.returncode == 3 and "Permission denied" in refused.stderr, refused.stderr
    for hook in ("/usr/local/bin/keeptime-criu-hook", "/usr/libexec/keeptime/criu-hook"):
        by_hand = as_nobody(hook)
        assert by_hand.returncode == 2 and "this is a CRIU action script" in by_hand.stderr, (hook, by_hand.stderr)
