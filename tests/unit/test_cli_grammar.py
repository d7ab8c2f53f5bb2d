"""The CLI's grammar and output, without a daemon."""
import json
import subprocess
import sys

import pytest

from keeptime import cli, commands, output
from keeptime.v1 import keeptime_pb2 as pb


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_everything_after_double_dash_is_the_command(capsys, monkeypatch):
    seen = {}

    def fake_run(args, client):
        seen.update(vars(args))
        return 0

    monkeypatch.setattr(commands, "run", fake_run)
    assert cli.main(["--socket", "/nonexistent", "restore", "abcd", "--policy", "freeze",
                     "--env", "A=1", "--", "prog", "--policy", "x", "--"]) == 0
    assert seen["argv"] == ["prog", "--policy", "x", "--"]
    assert seen["policy"] == "freeze" and seen["env"] == ["A=1"]


@pytest.mark.parametrize("argv, message", [
    (["plan", "abcd", "--policy", "thaw"], "invalid choice: 'thaw'"),
    (["checkpoint", "notapid"], "not a pid"),
    (["checkpoint", "99999999999"], "pid out of range"),
    (["restore", "abcd", "--env", "NOEQUALS", "--", "true"], "expected KEY=VALUE"),
    (["restore", "abcd"], "give the command to run"),
    (["list", "--", "x"], "keeptime list: -- starts a command to run, which only restore and exec take"),
    (["checkpoint", "--", "2"], "keeptime checkpoint: -- starts a command to run, which only restore and exec "
                                "take (usage: keeptime checkpoint [-h] [--json] [--socket SOCKET] [--label K=V] pid)"),
    (["--", "true"], "-- comes after a command (restore or exec), before the command to run"),
    (["restore", "abcd", "--", ""], "keeptime restore: the command to run is an empty string"),
    (["exec", "5150", "--", "", "x"], "keeptime exec: the command to run is an empty string"),
    (["--timeout", "0", "list"], "argument --timeout: must be a number of seconds above 0, got '0'"),
    (["--timeout", "-1", "list"], "argument --timeout: must be a number of seconds above 0, got '-1'"),
    (["--timeout", "nan", "health"], "must be a number of seconds above 0"),
    (["--timeout", "soon", "health"], "not a number of seconds: 'soon'"),
    (["wait", "--timeout", "0", "5150"], "keeptime wait: argument --timeout: must be a number of seconds above 0"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, message):
    assert cli.main(["--socket", "/nonexistent", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unreachable_daemon_exits_3_with_one_line(capsys, tmp_path):
    assert cli.main(["--socket", str(tmp_path / "none.sock"), "list"]) == cli.EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "cannot reach keeptimed" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, status, code", [
    (["list"], cli.EXIT_UNAVAILABLE, "UNAVAILABLE"),
    (["checkpoint", "notapid"], cli.EXIT_USAGE, "USAGE"),
])
def test_with_json_errors_are_one_json_object_on_stderr(capsys, tmp_path, argv, status, code):
    assert cli.main(["--socket", str(tmp_path / "none.sock"), "--json", *argv]) == status
    out, err = capsys.readouterr()
    error = json.loads(err)
    assert out == "" and err.count("\n") == 1
    assert error["error"]["code"] == code and error["exit_status"] == status and error["error"]["message"]


def test_json_keeps_int64_as_numbers_and_enums_as_names():
    plan = pb.Plan(record_id="ab", policy=pb.POLICY_SUSPEND, downtime_ns=2**40)
    plan.offsets.monotonic_ns = -(2**62)
    out = json.loads(json.dumps(output.message_to_dict(plan)))
    assert out["downtime_ns"] == 2**40 and out["offsets"]["monotonic_ns"] == -(2**62)
    assert out["policy"] == "POLICY_SUSPEND" and out["recorded"] is None


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "keeptime restore 3f9a --policy freeze --" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["restore", "--", "true"], "give a record ID or --criu-images DIR"),
    (["restore", "abcd", "--criu-images", "/", "--", "true"], "not both"),
    (["restore", "--criu-images", "/nonexistent-dir", "--", "true"], "cannot read /nonexistent-dir: No such file or directory"),
    (["criu-hook", "--", "x"], "takes no arguments"),
])
def test_criu_usage_errors_are_one_line_and_exit_2(capsys, argv, message):
    assert cli.main(["--socket", "/nonexistent", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["restore", "--help"], ["checkpoint", "notapid"]])
def test_what_needs_no_daemon_imports_no_grpc(argv):
    """The CLI starts often (operators, scripts, the CRIU hook's fallback):
    what needs no daemon must not pay for gRPC's and protobuf's import."""
    probe = ("import sys, runpy\n"
             f"sys.argv = ['keeptime', *{argv!r}]\n"
             "try:\n    runpy.run_module('keeptime.cli', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "loaded = sorted(m for m in ('grpc', 'google.protobuf') if m in sys.modules)\n"
             "sys.stderr.write(f'LOADED={loaded}')\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stderr.endswith("LOADED=[]"), done.stderr
