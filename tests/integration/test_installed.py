"""The installed keeptime (deploy/install.sh): its daemon serves on the
embedded default socket and the installed CLI drives it end to end."""
import os
import shutil
import stat
import subprocess

import pytest

from keeptime.defaults import DEFAULT_SOCKET

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not (os.path.exists(DEFAULT_SOCKET) and shutil.which("keeptime", path="/usr/local/bin")),
        reason="keeptime is not installed here (run deploy/install.sh)",
    ),
]
KEEPTIME = "/usr/local/bin/keeptime"


def run(*args):
    result = subprocess.run([KEEPTIME, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


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
