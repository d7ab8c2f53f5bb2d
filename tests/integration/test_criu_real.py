"""A real CRIU dump and restore with keeptime's hook as its action script.

Runs only where `criu check` passes; elsewhere it is skipped with CRIU's own
reason (Debian bookworm's CRIU 3.17 fails on 6.x kernels)."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from keeptimed import recordfile

pytestmark = pytest.mark.root

KEEPTIME_CLI = os.path.join(os.path.dirname(sys.executable), "keeptime")
S = 10**9

# Prints "MONOTONIC BOOTTIME" in ns every 50 ms, forever.
TICKER = """
import sys, time
out = open(sys.argv[1], "a", buffering=1)
while True:
    out.write(f"{time.clock_gettime_ns(time.CLOCK_MONOTONIC)} {time.clock_gettime_ns(time.CLOCK_BOOTTIME)}\\n")
    time.sleep(0.05)
"""


@pytest.fixture(scope="module")
def criu() -> str:
    path = shutil.which("criu")
    if path is None:
        pytest.skip("criu is not installed")
    check = subprocess.run([path, "check"], capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        lines = [line for line in (check.stderr + check.stdout).splitlines() if line.strip()]
        pytest.skip(f"`criu check` fails on this machine: {lines[-1] if lines else check.returncode}")
    return path


def ticks(path) -> list[tuple[int, int]]:
    with open(path) as f:
        return [tuple(map(int, line.split())) for line in f if line.endswith("\n")]


def wait_for_ticks(path, more_than: int, timeout: float = 20.0) -> list[tuple[int, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = ticks(path) if os.path.exists(path) else []
        if len(seen) > more_than:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"no new clock lines in {path}")


def test_dump_wait_restore_under_suspend(criu, daemon, tmp_path, criu_hook_program):
    images, out = tmp_path / "images", tmp_path / "ticks"
    images.mkdir()
    config = tmp_path / "hook.toml"
    config.write_text('policy = "suspend"\n')
    env = dict(os.environ, KEEPTIME_SOCKET=daemon.socket, KEEPTIME_CRIU_HOOK_CONFIG=str(config),
               KEEPTIME_CLI=KEEPTIME_CLI)
    hook_options = ["--no-default-config", "--action-script", criu_hook_program]

    with open(os.devnull, "rb") as null, open(tmp_path / "ticker.log", "ab") as log:
        ticker = subprocess.Popen([sys.executable, "-c", TICKER, str(out)], stdin=null, stdout=log,
                                  stderr=log, start_new_session=True)
    restored_pid = None
    try:
        wait_for_ticks(out, 3)
        dumped = subprocess.run([criu, "dump", "-t", str(ticker.pid), "-D", str(images), "-o", "dump.log",
                                 *hook_options], env=env, capture_output=True, text=True, timeout=120)
        assert dumped.returncode == 0, dumped.stderr + (images / "dump.log").read_text()
        ticker.wait(timeout=10)  # CRIU killed it after the dump
        record = recordfile.decode((images / "keeptime-record.bin").read_bytes())
        before = ticks(out)
        last_mono, last_boot = before[-1]

        time.sleep(3)
        pidfile = tmp_path / "restored.pid"
        restored = subprocess.run([criu, "restore", "-D", str(images), "-d", "-o", "restore.log",
                                   "--pidfile", str(pidfile), *hook_options],
                                  env=env, capture_output=True, text=True, timeout=120)
        assert restored.returncode == 0, restored.stderr + (images / "restore.log").read_text()
        restored_pid = int(pidfile.read_text())
        assert (images / "timens-0.img.orig").exists()

        after = wait_for_ticks(out, len(before) + 3)[len(before):]
        first_mono, first_boot = after[0]
        # MONOTONIC continues: the downtime is invisible (a tick and CRIU's own restore at most).
        assert 0 <= first_mono - last_mono < 2 * S
        # BOOTTIME counts the 3 s the tree spent dumped, as after a suspend.
        assert first_boot - last_boot >= 3 * S
        assert all(b[0] >= a[0] and b[1] >= a[1] for a, b in zip(after, after[1:]))
        with daemon.client() as kt:
            events = [e for e in kt.restores(record.id) if e.stage == "post-restore"]
        assert events and events[-1].ok, events
    finally:
        if ticker.poll() is None:
            ticker.kill()
        if restored_pid:
            try:
                os.kill(restored_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
