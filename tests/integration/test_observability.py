"""What operators see of a real keeptimed: Prometheus metrics scraped over
HTTP, one structured log line per request, and systemd notifications sent to
a datagram socket the test listens on."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from helpers.daemon import RunningDaemon
from helpers.probes import read_probe
from keeptime import errors

pytestmark = pytest.mark.root

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(address: str) -> tuple[dict, dict, str]:
    """GET /metrics: ({(name, frozenset(labels)): value}, {name: type}, content type)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        content_type = reply.headers["Content-Type"]
        text = reply.read().decode()
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, f"not a Prometheus sample line: {line!r}"
            name, labels, value = match.groups()
            samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples, types, content_type


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def test_metrics_endpoint_counts_requests_restores_jumps_and_records(fresh_daemon, far_process, clockprobe,
                                                                     tmp_path):
    fresh_daemon.stop()
    fresh_daemon.start("--metrics-address", "127.0.0.1:0")
    inside, _ = far_process
    with fresh_daemon.client() as c:
        address = c.info().metrics_address
        assert re.fullmatch(r"127\.0\.0\.1:\d+", address) and not address.endswith(":0")
        samples, types, content_type = scrape(address)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert value(samples, "keeptime_records_stored") == 0
        assert all(value(samples, "keeptime_clock_regressions_total", clock=k) == 0
                   for k in ("monotonic", "boottime", "unknown"))

        record = c.checkpoint_record(inside)
        restored = c.restore(record.id, [clockprobe, "0"], policy="freeze", stdout=str(tmp_path / "p"))
        assert c.wait(restored.pid) == 0
        with pytest.raises(errors.NotFound):
            c.get("0000aaaa")

    samples, types, _ = scrape(address)
    assert value(samples, "keeptime_requests_total", rpc="Checkpoint", status="OK") == 1
    assert value(samples, "keeptime_requests_total", rpc="GetRecord", status="NOT_FOUND") == 1
    assert value(samples, "keeptime_restores_total", policy="freeze", mechanism="unshare_proc_offsets") == 1
    assert value(samples, "keeptime_records_stored") == 1
    assert value(samples, "keeptime_children_running") == 0
    assert types["keeptime_request_duration_seconds"] == "histogram"
    assert types["keeptime_requests_total"] == "counter" and types["keeptime_records_stored"] == "gauge"

    # The restore's histogram series: cumulative buckets ending in +Inf == count.
    buckets = sorted(
        (float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
        if name == "keeptime_request_duration_seconds_bucket" and ("rpc", "Restore") in labels
    )
    assert buckets[-1] == (float("inf"), 1)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert 0 < value(samples, "keeptime_request_duration_seconds_sum", rpc="Restore", status="OK") < 5

    # The forward step the restored clocks had taken when keeptimed saw the
    # exec: one observation per clock, not negative, small, no regression.
    mono, _ = read_probe(str(tmp_path / "p"))
    assert mono >= record.clocks.monotonic_ns
    for clock in ("monotonic", "boottime"):
        assert value(samples, "keeptime_restore_clock_jump_seconds_count", clock=clock) == 1
        assert 0 <= value(samples, "keeptime_restore_clock_jump_seconds_sum", clock=clock) < 0.05
        assert value(samples, "keeptime_clock_regressions_total", clock=clock) == 0

    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://{address}/other", timeout=10)
    assert missing.value.code == 404


def test_metrics_are_off_by_default_and_a_taken_port_stops_startup(fresh_daemon, tmp_path):
    with fresh_daemon.client() as c:
        assert c.info().metrics_address == ""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        (tmp_path / "other").mkdir()
        other = RunningDaemon(tmp_path / "other")
        other.start("--metrics-address", f"127.0.0.1:{taken.getsockname()[1]}", wait=False)
        assert other.proc.wait(30) == 1
        lines = [line for line in other.log().splitlines() if line.strip()]
        assert lines[-1].startswith("keeptimed: cannot serve metrics on 127.0.0.1:")
        assert "Traceback" not in other.log()
    finally:
        taken.close()


def rpc_lines(log_text: str) -> list[dict]:
    lines = [json.loads(line) for line in log_text.splitlines() if line.strip()]
    return [line for line in lines if line["logger"] == "keeptimed.rpc" and "rpc" in line]


def test_one_json_log_line_per_request_without_arguments_or_environment(fresh_daemon):
    with fresh_daemon.client() as c:
        record_id = c.checkpoint(os.getpid())
        restored = c.restore(record_id[:8], ["/bin/sh", "-c", "exit 0", "topsecretarg"],
                             env={"API_TOKEN": "hunter2"}, policy="elapsed")
        c.wait(restored.pid)
        with pytest.raises(errors.NotFound):
            c.plan("abcdef12")
    cli_call = fresh_daemon.cli("show", record_id)
    fresh_daemon.stop()
    text = fresh_daemon.log()
    lines = rpc_lines(text)  # also proves every line of the log is JSON
    assert [line["rpc"] for line in lines] == ["Checkpoint", "Restore", "Wait", "Plan", "GetRecord"]
    checkpoint_line, restore, wait, plan, show = lines
    assert checkpoint_line["record"] == record_id and checkpoint_line["pid"] == os.getpid()
    assert restore["status"] == "OK" and restore["record"] == record_id and restore["policy"] == "elapsed"
    assert restore["child_pid"] == restored.pid and restore["mechanism"] == "unshare_proc_offsets"
    assert restore["argv0"] == "/bin/sh"
    # Who called, as the kernel reported the connection (SO_PEERCRED).
    with open(f"/proc/{os.getpid()}/comm") as f:
        assert (restore["caller"], restore["caller_pid"], restore["caller_uid"]) == (f.read().strip(), os.getpid(), 0)
    assert cli_call.returncode == 0 and show["caller_pid"] not in (os.getpid(), fresh_daemon.proc.pid)
    assert restore["level"] == "info" and isinstance(restore["duration_ms"], float)
    assert restore["monotonic_jump_us"] >= 0 and restore["boottime_jump_us"] >= 0
    assert wait["pid"] == restored.pid and wait["status"] == "OK"
    assert plan["status"] == "NOT_FOUND" and plan["error"] == "no record abcdef12"
    assert "hunter2" not in text and "API_TOKEN" not in text and "topsecretarg" not in text


def test_text_log_format_is_key_value(fresh_daemon):
    fresh_daemon.stop()
    fresh_daemon.start("--log-format", "text")
    with fresh_daemon.client() as c:
        c.list()
    fresh_daemon.stop()
    line = next(line for line in fresh_daemon.log().splitlines() if "ListRecords OK" in line)
    with open(f"/proc/{os.getpid()}/comm") as f:
        comm = f.read().strip()
    assert (f" INFO keeptimed.rpc: ListRecords OK rpc=ListRecords caller={comm} "
            f"caller_pid={os.getpid()} caller_uid=0 caller_gid=0 status=OK duration_ms=") in line


class NotifyListener:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.address = path if not path.startswith("\0") else "@" + path[1:]

    def next(self, timeout: float = 20.0) -> dict:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def close(self):
        self.sock.close()


def test_systemd_notify_ready_only_once_serving_watchdog_and_stopping(fresh_daemon, tmp_path):
    fresh_daemon.stop()
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    try:
        fresh_daemon.start(env={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "300000"}, wait=False)
        ready = listener.next()
        # The first message is READY=1, and the socket serves the moment it arrives.
        assert ready["READY"] == "1" and ready["MAINPID"] == str(fresh_daemon.proc.pid)
        assert ready["STATUS"] == f"serving on {fresh_daemon.socket}"
        assert fresh_daemon.health() == "SERVING"
        started = time.monotonic()
        pings = [listener.next(2.0) for _ in range(3)]
        assert pings == [{"WATCHDOG": "1"}] * 3
        assert time.monotonic() - started < 1.5  # every 150 ms: half of WATCHDOG_USEC
        fresh_daemon.proc.send_signal(signal.SIGTERM)
        while (message := listener.next()).get("WATCHDOG") == "1":
            pass
        assert message["STOPPING"] == "1"
        assert fresh_daemon.proc.wait(30) == 0
    finally:
        listener.close()


def test_systemd_notify_to_an_abstract_socket_and_no_watchdog_for_another_pid(fresh_daemon):
    fresh_daemon.stop()
    name = f"\0keeptime-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifyListener(name)
    try:
        fresh_daemon.start(env={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "100000",
                                "WATCHDOG_PID": "1"}, wait=False)
        assert listener.next()["READY"] == "1"
        with pytest.raises(socket.timeout):
            listener.next(0.5)  # the watchdog is someone else's: no pings
        assert fresh_daemon.stop() == 0
        assert listener.next()["STOPPING"] == "1"
    finally:
        listener.close()


def test_health_and_watchdog_follow_the_daemons_own_checks(tmp_path):
    """A wedged record store (a call holding it) turns grpc health to
    NOT_SERVING, which the Kubernetes probes see, and stops the watchdog
    pings systemd expects; both come back when it answers again. The daemon
    runs in this process so the test can wedge its store."""
    from keeptimed import config
    from keeptimed.sdnotify import Notifier
    from keeptimed.server import Daemon

    listener = NotifyListener(str(tmp_path / "notify.sock"))
    flags = {"socket": str(tmp_path / "k.sock"), "db": str(tmp_path / "k.db")}
    daemon = Daemon(config.load(flags, {}, str(tmp_path / "none.toml"), explicit=False),
                    Notifier(listener.address, watchdog_usec=200_000))
    daemon.start()
    try:
        assert listener.next()["READY"] == "1" and listener.next(2.0) == {"WATCHDOG": "1"}
        probe = [sys.executable, "-m", "keeptime.cli", "--socket", flags["socket"], "--timeout", "5", "health"]
        with daemon.store._lock:  # what a call stuck inside the store looks like
            deadline = time.monotonic() + 15
            while subprocess.run(probe, capture_output=True).returncode == 0:
                assert time.monotonic() < deadline, "still SERVING with a wedged store"
            unhealthy = subprocess.run(probe, capture_output=True, text=True)
            assert (unhealthy.returncode, unhealthy.stdout) == (1, "NOT_SERVING\n")
            while True:  # drain pings sent before the store was found wedged
                try:
                    listener.next(1.0)
                except socket.timeout:
                    break
        deadline = time.monotonic() + 15
        while subprocess.run(probe, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "did not recover"
        assert listener.next(2.0) == {"WATCHDOG": "1"}
    finally:
        daemon.stop()
        listener.close()


def test_a_regression_verify_restore_finds_is_counted(fresh_daemon, far_process, root_sleeper):
    """CRIU's post-restore check (VerifyRestore) is the other place a clock
    regression can be seen: it counts in the same metric, per clock."""
    fresh_daemon.stop()
    fresh_daemon.start("--metrics-address", "127.0.0.1:0")
    inside, _ = far_process
    with fresh_daemon.client() as c:
        address = c.info().metrics_address
        record = c.checkpoint_record(inside)          # ten days ahead of the host
        event = c.verify_restore(root_sleeper, record_id=record.id, stage="post-restore")
        c.verify_restore(root_sleeper, record_id=record.id, stage="post-resume")   # the same restore again
    assert not event.ok
    samples, _, _ = scrape(address)
    assert value(samples, "keeptime_restores_total", policy="suspend", mechanism="criu") == 1
    assert value(samples, "keeptime_clock_regressions_total", clock="monotonic") == 1
    assert value(samples, "keeptime_clock_regressions_total", clock="boottime") == 1
    assert value(samples, "keeptime_requests_total", rpc="VerifyRestore", status="OK") == 2
    errors_logged = [json.loads(line) for line in fresh_daemon.log().splitlines() if '"level": "error"' in line]
    assert [line["clock"] for line in errors_logged] == ["monotonic", "boottime"] * 2   # logged at both looks
