"""Fixtures of the tests that play a non-root caller: keeptimed with its
socket opened to the nobody user's group, and a client that is nobody to it
(real SO_PEERCRED, see helpers/impersonate.py)."""
import os
import subprocess
import tempfile

import pytest

from helpers.daemon import RunningDaemon
from helpers.impersonate import ConnectAs
from keeptime import Client

NOBODY = 65534
NOGROUP = 65534


@pytest.fixture
def open_dir():
    """A directory every user may traverse (pytest's tmp_path is root-only)."""
    path = tempfile.mkdtemp(prefix="keeptime-access-")
    os.chmod(path, 0o755)
    yield path
    subprocess.run(["rm", "-rf", path], check=False)


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
