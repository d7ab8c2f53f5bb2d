"""The keeptime CLI against a real keeptimed: outputs, exit codes, one-line errors."""
import json
import os

import pytest

from helpers.probes import read_probe
from keeptimed import procfs

pytestmark = pytest.mark.root


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result, code: int, words: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert words in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_checkpoint_restore_wait_round_trip(daemon, far_process, clockprobe, tmp_path):
    inside, _ = far_process
    record_id = ok(daemon.cli("checkpoint", str(inside))).strip()
    assert len(record_id) == 32 and all(c in "0123456789abcdef" for c in record_id)

    restored = daemon.cli("restore", record_id[:8], "--policy", "freeze", "--stdout", str(tmp_path / "p"),
                          "--", clockprobe, "0")
    pid = int(ok(restored).strip())  # the pid alone on stdout
    assert "under freeze via unshare-proc-offsets" in restored.stderr

    waited = daemon.cli("wait", str(pid))
    assert waited.returncode == 0 and waited.stdout.strip() == "0"
    mono, _ = read_probe(str(tmp_path / "p"))
    shown = json.loads(ok(daemon.cli("--json", "show", record_id)))
    assert 0 <= mono - shown["clocks"]["monotonic_ns"] < 50 * 10**6


def test_wait_exits_with_the_processes_status(daemon):
    record_id = ok(daemon.cli("checkpoint", str(os.getpid()))).strip()
    pid = ok(daemon.cli("restore", record_id, "--", "/bin/sh", "-c", "exit 5")).strip()
    waited = daemon.cli("wait", pid)
    assert (waited.returncode, waited.stdout.strip()) == (5, "5")


def test_every_command_speaks_json(daemon, tmp_path):
    record_id = json.loads(ok(daemon.cli("checkpoint", "--json", str(os.getpid()))))["id"]
    plan = json.loads(ok(daemon.cli("plan", record_id, "--policy", "elapsed", "--json")))
    assert plan["policy"] == "POLICY_ELAPSED" and isinstance(plan["targets"]["monotonic_ns"], int)
    restored = json.loads(ok(daemon.cli("--json", "restore", record_id, "--", "/bin/sleep", "5")))
    assert restored["mechanism"] == "unshare-proc-offsets" and restored["pid"] > 0
    # One set of offsets, those written; the plan's own are labelled as planned.
    planned = restored["plan"]
    assert "offsets" not in planned and planned["targets"] and planned["planned_offsets"]
    assert planned["planned_host_clocks"] and planned["planned_realtime_ns"] > 0
    with open(f"/proc/{restored['pid']}/timens_offsets") as f:
        written = {line.split()[0]: int(line.split()[1]) * 10**9 + int(line.split()[2]) for line in f}
    assert written == {"monotonic": restored["monotonic_offset_ns"], "boottime": restored["boottime_offset_ns"]}
    clocks = json.loads(ok(daemon.cli("--json", "clocks", str(restored["pid"]))))
    assert clocks["timens_inode"] == procfs.timens_inode(restored["pid"]) and clocks["host_namespace"] is False
    joined = json.loads(ok(daemon.cli("--json", "exec", str(restored["pid"]), "--", "/bin/true")))
    assert joined["mechanism"] == "setns" and joined["timens_inode"] == clocks["timens_inode"]
    assert json.loads(ok(daemon.cli("--json", "wait", str(joined["pid"]))))["status"] == 0
    os.kill(restored["pid"], 9)
    killed = daemon.cli("--json", "wait", str(restored["pid"]))
    assert killed.returncode == 128 + 9 and json.loads(killed.stdout)["signal"] == 9
    listed = json.loads(ok(daemon.cli("--json", "list")))
    assert record_id in [r["id"] for r in listed]
    assert json.loads(ok(daemon.cli("--json", "rm", record_id))) == {"deleted": record_id}


def test_human_output_of_show_list_plan_clocks(daemon, far_process):
    inside, _ = far_process
    record_id = ok(daemon.cli("checkpoint", "--label", "app=db", str(inside))).strip()
    shown = ok(daemon.cli("show", record_id))
    assert f"record      {record_id}" in shown and "label       app=db" in shown
    assert "offsets monotonic 864000.000000000 s" in shown
    assert record_id in ok(daemon.cli("list"))
    plan = ok(daemon.cli("plan", record_id, "--policy", "suspend"))
    assert "policy    suspend" in plan and "same boot" in plan
    clocks = ok(daemon.cli("clocks", str(inside)))
    assert "864000.000000000 s" in clocks and "its own" in clocks


@pytest.mark.parametrize("args, code, words", [
    (["checkpoint", "4000000"], 1, "NOT_FOUND: no process with pid 4000000"),
    (["show", "0123456789abcdef0123456789abcdef"], 1, "NOT_FOUND: no record"),
    (["show", "nope"], 2, "INVALID_ARGUMENT"),
    (["restore", "0123456789abcdef0123456789abcdef", "--", "/bin/true"], 1, "NOT_FOUND: no record"),
    (["plan", "0123456789abcdef", "--policy", "bogus"], 2, "invalid choice: 'bogus'"),
    (["wait", "4000000"], 1, "NOT_FOUND"),
])
def test_errors_are_one_line_with_exit_codes(daemon, args, code, words):
    one_line_error(daemon.cli(*args), code, words)
    assert daemon.health() == "SERVING"


def test_with_json_a_refused_request_is_a_json_error(daemon):
    result = daemon.cli("--json", "show", "0123456789abcdef0123456789abcdef")
    assert result.returncode == 1 and result.stdout == ""
    assert json.loads(result.stderr) == {
        "error": {"code": "NOT_FOUND", "message": "no record 0123456789abcdef0123456789abcdef"}, "exit_status": 1,
    }


def test_restore_errors_name_the_cause(daemon):
    record_id = ok(daemon.cli("checkpoint", str(os.getpid()))).strip()
    one_line_error(daemon.cli("restore", record_id), 2, "give the command to run after --")
    one_line_error(daemon.cli("restore", record_id, "--", "/nonexistent"), 1,
                   "NOT_FOUND: cannot execute '/nonexistent': No such file or directory (ENOENT)")
    one_line_error(daemon.cli("restore", record_id, "--", "/etc/passwd"), 1, "PERMISSION_DENIED")
    one_line_error(daemon.cli("restore", record_id, "--uid", "nosuchuserhere", "--", "/bin/true"), 2,
                   "no such user")


def test_env_from_caller_and_explicit_env(daemon, tmp_path):
    record_id = ok(daemon.cli("checkpoint", str(os.getpid()))).strip()
    out = tmp_path / "env"
    pid = ok(daemon.cli("restore", record_id, "--env-from-caller", "--env", "EXTRA=1",
                        "--stdout", str(out), "--", "/usr/bin/env")).strip()
    assert ok(daemon.cli("wait", pid)).strip() == "0"
    env = out.read_text().splitlines()
    assert "EXTRA=1" in env and f"PATH={os.environ['PATH']}" in env
