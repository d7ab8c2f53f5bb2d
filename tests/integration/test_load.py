"""keeptimed under load and with clients that stall.

The load test runs benchmarks/load.py at the issue's size: 1000 restores and
10,000 checkpoints from 16 client processes, then checks zero errors, zero
zombies, no growth of the daemon's fds or threads, and RSS within 10%.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from helpers.daemon import RunningDaemon
from helpers.procstat import cpu_seconds, open_fds
from keeptime import Client, errors
from keeptimed import relay
from keeptimed.server import HANDSHAKE_TIMEOUT_MS

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_1000_restores_and_10000_checkpoints_from_16_clients_leak_nothing(tmp_path):
    out = tmp_path / "load.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "load.py"),
         "--restores", "1000", "--checkpoints", "10000", "--clients", "16", "--json-out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["passed"] and all(check["ok"] for check in report["checks"])
    assert (report["restore"]["n"], report["checkpoint"]["n"]) == (1000, 10_000)
    checks = {check["check"]: check for check in report["checks"]}
    assert checks["errors"]["after"] == 0 and checks["zombie children"]["after"] == 0
    # The run's, the warm-up's and the one restores start from.
    assert checks["acknowledged records stored"]["after"] == 10_000 + 16 * 10 + 1
    assert report["daemon_exit_status"] == 0
    assert "| open fds |" in result.stdout and "PASSED" in result.stdout


def stalled_connections(path: str, count: int) -> list[socket.socket]:
    """Connections to the public socket that stop at different points of the
    HTTP/2 start: nothing sent, half the preface, the preface and half a frame.

    A connection the relay refuses (it is over its descriptor budget) may be
    closed before its bytes are sent; that is the refusal, not a failure, and
    the closed socket is kept like the others."""
    partial = (b"", HTTP2_PREFACE[:10], HTTP2_PREFACE + b"\x00\x00")
    connections = []
    for i in range(count):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        try:
            conn.sendall(partial[i % len(partial)])
        except (BrokenPipeError, ConnectionResetError):
            pass
        connections.append(conn)
    return connections


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_stalled_connections_block_no_one_and_leak_no_fds(fresh_daemon, root_sleeper):
    pid = fresh_daemon.proc.pid
    with fresh_daemon.client() as client:   # start what a first call starts, then measure
        record_id = client.checkpoint(root_sleeper)
        assert client.wait(client.restore(record_id, ["/bin/true"]).pid, timeout=30) == 0
    time.sleep(0.5)
    idle_fds = open_fds(pid)

    stalled = stalled_connections(fresh_daemon.socket, 60)
    try:
        # The relay holds each one open (its end and the upstream end).
        assert wait_for(lambda: open_fds(pid) >= idle_fds + 2 * len(stalled), 10), open_fds(pid)
        rounds = []

        def busy_client():
            with Client(socket=fresh_daemon.socket, timeout=10) as c:
                for _ in range(20):
                    c.checkpoint(root_sleeper)
                    c.list()
                    c.clocks(root_sleeper)
                    rounds.append(1)

        threads = [threading.Thread(target=busy_client) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        # Every round of three calls finished, each within its 10 s deadline.
        assert len(rounds) == 4 * 20, "calls failed or hung behind the stalled connections"
    finally:
        for conn in stalled:
            conn.close()
    assert wait_for(lambda: open_fds(pid) <= idle_fds, 10), f"{open_fds(pid)} fds open, {idle_fds} before"
    assert fresh_daemon.health() == "SERVING"


def test_stalled_handshakes_are_cut_off_and_release_their_descriptors(fresh_daemon):
    pid = fresh_daemon.proc.pid
    idle_fds = open_fds(pid)
    stalled = stalled_connections(fresh_daemon.socket, 30)
    try:
        assert wait_for(lambda: open_fds(pid) >= idle_fds + 2 * len(stalled), 10)
        # gRPC ends each one at its handshake deadline; the relay then closes
        # the client's end too, though the client never closes its own.
        for conn in stalled:
            conn.settimeout(HANDSHAKE_TIMEOUT_MS / 1000 + 30)
            while conn.recv(4096):   # the server's SETTINGS, perhaps a GOAWAY, then the end
                pass
        assert wait_for(lambda: open_fds(pid) <= idle_fds, 10), f"{open_fds(pid)} fds open, {idle_fds} before"
    finally:
        for conn in stalled:
            conn.close()
    with fresh_daemon.client() as client:
        client.list()


def test_more_stalled_connections_than_descriptors_allow_exhaust_nothing(tmp_path):
    """With 512 descriptors, 220 stalled connections would take 660: the relay
    holds only what its budget allows, refuses the rest without spinning, and
    once the stalled ones are cut off everyone else is served again."""
    daemon = RunningDaemon(tmp_path, command_prefix=["prlimit", "--nofile=512:512", "--"]).start()
    pid = daemon.proc.pid
    stalled = []
    try:
        with daemon.client() as client:
            target = client.checkpoint(os.getpid())
        stalled = stalled_connections(daemon.socket, 200)
        time.sleep(1)   # connections that were closing (that client's) free their slots...
        stalled += stalled_connections(daemon.socket, 20)   # ...and these take them
        busy_from = cpu_seconds(pid)
        time.sleep(2)
        assert cpu_seconds(pid) - busy_from < 1.0, "keeptimed spins while its connections are full"
        assert open_fds(pid) < 512 - relay.FD_RESERVE // 2
        assert "refusing a connection" in daemon.log()

        refused = 0
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT_MS / 1000 + 30
        while True:   # refused while the stalled ones hold every slot, then served
            try:
                with Client(socket=daemon.socket, timeout=10) as client:
                    restored = client.restore(target, ["/bin/true"])
                    assert client.wait(restored.pid, timeout=30) == 0
                break
            except errors.Unavailable:
                refused += 1
                assert time.monotonic() < deadline, "still refused after the stalled connections were cut off"
                time.sleep(0.5)
        assert refused, "the stalled connections never filled the relay"
        assert "Too many open files" not in daemon.log()
    finally:
        for conn in stalled:
            conn.close()
        assert daemon.stop() == 0
