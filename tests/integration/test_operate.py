"""The operator's commands against a real keeptimed: info, health, doctor,
how a timed-out wait is reported, and the configuration a started daemon
really uses."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import keeptime
import keeptime.cli
from helpers.daemon import RunningDaemon
from helpers.impersonate import as_user
from keeptime.v1 import keeptime_pb2 as pb
from keeptimed import config

pytestmark = pytest.mark.root


INSTALLED_PYTHON = "/opt/keeptime/bin/python"


def python_for(user) -> str:
    """An interpreter that runs this tree's keeptime as `user`.

    The test's own virtualenv, when that user can read it; otherwise (a
    checkout in a root-only directory, as CI's clone may be) the installed
    /opt/keeptime, if it holds this very CLI; otherwise the test is skipped.
    """
    if user is None:
        return sys.executable
    probe = "import keeptime.cli, sys; sys.stdout.write(open(keeptime.cli.__file__, 'rb').read().hex())"
    ours = open(keeptime.cli.__file__, "rb").read().hex()
    for python in (sys.executable, INSTALLED_PYTHON):
        result = subprocess.run(as_user(user, user, [python, "-c", probe]), capture_output=True, text=True)
        if result.returncode == 0 and result.stdout == ours:
            return python
    pytest.skip(f"uid {user} can read neither this checkout's virtualenv nor an up-to-date {INSTALLED_PYTHON}")


def cli(*args, socket=None, user=None, timeout=120):
    """The keeptime CLI, optionally as another user (setpriv, util-linux)."""
    argv = [python_for(user), "-m", "keeptime.cli", *(["--socket", socket] if socket else []), *args]
    if user is not None:
        argv = as_user(user, user, argv)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def checks_of(result) -> dict:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_info_reports_the_daemon_its_kernel_and_configuration(daemon):
    with daemon.client() as c:
        record_id = c.checkpoint(os.getpid())
        c.wait(c.restore(record_id, ["/bin/true"]).pid)
        info = c.info()
        assert info.version == keeptime.__version__ and info.pid == daemon.proc.pid
        assert info.socket_path == daemon.socket and info.db_path == daemon.db
        assert info.config_path == daemon.config and info.config_file_loaded
        assert info.record_count == len(c.list()) >= 1
        assert info.time_namespaces and info.kernel_release == os.uname().release
        assert info.offset_abi != pb.OFFSET_ABI_UNTRIED  # the restore tried it
        assert "CAP_SYS_ADMIN" in info.capabilities and not info.missing_capabilities
        assert info.default_policy == pb.POLICY_SUSPEND and info.metrics_address == ""
    shown = daemon.cli("info")
    assert shown.returncode == 0, shown.stderr
    assert f"socket          {daemon.socket}" in shown.stdout and "metrics         off" in shown.stdout
    as_json = json.loads(daemon.cli("--json", "info").stdout)
    assert as_json["record_count"] == info.record_count and as_json["offset_abi"].startswith("OFFSET_ABI_")


def test_health_exit_status_is_what_a_probe_needs(daemon, tmp_path):
    serving = daemon.cli("--timeout", "5", "health")
    assert (serving.returncode, serving.stdout) == (0, "SERVING\n")
    gone = cli("--timeout", "5", "health", socket=str(tmp_path / "none.sock"))
    assert gone.returncode == 3 and gone.stderr.count("\n") == 1 and "cannot reach keeptimed" in gone.stderr


def test_doctor_passes_against_a_healthy_daemon(daemon):
    result = daemon.cli("--json", "doctor", "--no-criu")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = checks_of(result)
    assert [name for name in checks] == ["kernel", "namespace limit", "socket", "daemon", "privileges",
                                         "clone3 offsets", "configuration", "criu", "criu hook"]
    assert checks["daemon"]["status"] == checks["socket"]["status"] == checks["privileges"]["status"] == "ok"
    assert checks["configuration"]["summary"] == f"{daemon.config} is valid"
    assert json.loads(result.stdout)["daemon"]["socket_path"] == daemon.socket
    human = daemon.cli("doctor", "--no-criu")
    assert human.returncode == 0 and "ok    daemon           keeptimed" in human.stdout
    assert human.stdout.splitlines()[-1].startswith("no blocking problem")


def test_doctor_runs_criu_check_when_criu_is_installed(daemon):
    if shutil.which("criu") is None:
        pytest.skip("criu is not installed here")
    criu = checks_of(daemon.cli("--json", "doctor"))["criu"]
    passes = subprocess.run(["criu", "check"], capture_output=True, timeout=120).returncode == 0
    assert criu["status"] == ("ok" if passes else "warn"), criu
    assert ("`criu check` passes" if passes else "`criu check` fails") in criu["summary"]


def test_doctor_exits_1_on_a_bad_configuration_file(daemon, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('workers = "many"\n')
    result = daemon.cli("--json", "doctor", "--no-criu", "--config", str(bad))
    assert result.returncode == 1
    config = checks_of(result)["configuration"]
    assert config["status"] == "fail" and 'workers must be an integer, got "many"' in config["summary"]


def test_doctor_exits_1_without_a_daemon(tmp_path):
    result = cli("--json", "doctor", "--no-criu", socket=str(tmp_path / "none.sock"))
    assert result.returncode == 1
    checks = checks_of(result)
    assert checks["socket"]["status"] == checks["daemon"]["status"] == "fail"
    assert "is keeptimed running" in checks["socket"]["summary"]
    assert "privileges" not in checks  # nothing to ask
    assert checks["clone3 offsets"]["summary"].startswith("clone3() answered E2BIG")  # asked the kernel itself


def test_doctor_tells_a_user_who_may_not_use_the_socket(daemon):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    result = cli("--json", "doctor", "--no-criu", socket=daemon.socket, user=65534)
    assert result.returncode == 1, result.stderr
    socket_check = checks_of(result)["socket"]
    assert socket_check["status"] == "fail" and "uid 65534" in socket_check["summary"]


def test_doctor_passes_for_a_member_of_the_socket_group(tmp_path):
    """The details of GetInfo are root's; a group member is told it may call keeptimed."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    open_dir = tempfile.mkdtemp(prefix="keeptime-doctor-")
    os.chmod(open_dir, 0o755)
    daemon = RunningDaemon(open_dir).start("--socket-group", "65534")
    try:
        result = cli("--json", "doctor", "--no-criu", socket=daemon.socket, user=65534)
        assert result.returncode == 0, result.stdout + result.stderr
        checks = checks_of(result)
        assert checks["socket"]["status"] == checks["daemon"]["status"] == "ok"
        assert "uid 65534 may call it for its own processes" in checks["daemon"]["summary"]
    finally:
        daemon.stop()
        shutil.rmtree(open_dir)


def test_a_timed_out_wait_is_deadline_exceeded_not_an_internal_error(fresh_daemon):
    with fresh_daemon.client() as c:
        pid = c.restore(c.checkpoint(os.getpid()), ["/bin/sleep", "30"]).pid
    timed_out = fresh_daemon.cli("wait", "--timeout", "0.5", str(pid))
    assert timed_out.returncode == 1 and "DEADLINE_EXCEEDED" in timed_out.stderr
    os.kill(pid, 9)
    assert fresh_daemon.cli("wait", str(pid)).returncode == 128 + 9
    fresh_daemon.stop()
    waits = [json.loads(line) for line in fresh_daemon.log().splitlines() if '"rpc": "Wait"' in line]
    assert [w["status"] for w in waits][-2:] in (["DEADLINE_EXCEEDED", "OK"], ["CANCELLED", "OK"])
    assert "Traceback" not in fresh_daemon.log() and "INTERNAL" not in fresh_daemon.log()


def test_the_running_daemon_follows_flags_then_environment_then_file(tmp_path):
    daemon = RunningDaemon(tmp_path)
    with open(daemon.config, "w") as f:
        f.write('default_policy = "elapsed"\nmetrics_address = "127.0.0.1:0"\nlog_format = "text"\n'
                'workers = 4\n')
    daemon.start("--log-format", "json", env={"KEEPTIME_DEFAULT_POLICY": "freeze"})
    try:
        with daemon.client() as c:
            info = c.info()
            assert info.config_path == daemon.config and info.config_file_loaded
            assert info.default_policy == pb.POLICY_FREEZE                    # environment over file
            assert info.metrics_address.startswith("127.0.0.1:")              # file over default
            plan = c.plan(c.checkpoint(os.getpid()))
            assert plan.policy == pb.POLICY_FREEZE
    finally:
        assert daemon.stop() == 0
    assert all(json.loads(line) for line in daemon.log().splitlines())       # flag over file


def test_an_unknown_key_stops_the_daemon_with_a_one_line_error(tmp_path):
    daemon = RunningDaemon(tmp_path)
    with open(daemon.config, "w") as f:
        f.write('socket_path = "/run/elsewhere.sock"\n')
    daemon.start(wait=False)
    assert daemon.proc.wait(30) == 2
    assert daemon.log() == (f"keeptimed: {daemon.config}: unknown key 'socket_path' (known: "
                            f"{', '.join(s.key for s in config.SETTINGS)})\n")
    assert not os.path.exists(daemon.socket)
