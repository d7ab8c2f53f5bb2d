"""`keeptime completion bash` run by a real bash, and the CLI's help."""
import shutil
import subprocess
import sys

import pytest

from keeptime import cli


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    out = subprocess.run([sys.executable, "-m", "keeptime.cli", "completion", "bash"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    path = tmp_path_factory.mktemp("completion") / "keeptime.bash"
    path.write_text(out.stdout)
    return str(path)


def complete(script: str, line: str) -> list[str]:
    """What bash offers for the last word of line (an empty last word when line ends in a space)."""
    words = line.split() + ([""] if line.endswith(" ") else [])
    array = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    program = f"source {script}; COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; _keeptime; " \
              'printf "%s\\n" "${COMPREPLY[@]}"'
    result = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return sorted(filter(None, result.stdout.split("\n")))


@pytest.mark.parametrize("line, expected", [
    ("keeptime res", ["restore", "restores"]),
    ("keeptime --socket /tmp/k.sock d", ["doctor"]),
    ("keeptime plan 3f9a --policy ", ["elapsed", "freeze", "suspend"]),
    ("keeptime doctor --no", ["--no-criu"]),
    ("keeptime completion ", ["--help", "--json", "--socket", "-h", "bash"]),
    ("keeptime restore 3f9a --env-f", ["--env-from-caller"]),
    ("keeptime restore 3f9a --env A=1 --uid ", []),
])
def test_bash_completes_commands_options_and_choices(script, line, expected):
    assert complete(script, line) == expected


def test_every_command_is_offered(script):
    offered = complete(script, "keeptime ")
    for name in ("checkpoint", "plan", "restore", "exec", "wait", "show", "list", "rm", "clocks",
                 "info", "health", "doctor", "completion", "--json", "--version"):
        assert name in offered


def test_after_double_dash_it_completes_the_program_to_run(script):
    assert "bash" in complete(script, "keeptime restore 3f9a -- bas")
    assert "--policy" not in complete(script, "keeptime restore 3f9a -- sh --pol")


def test_every_command_has_help_with_examples(capsys):
    parser = cli.build_parser()
    names = next(a for a in parser._actions if a.dest == "command").choices
    for name in names:
        with pytest.raises(SystemExit):
            cli.main([name, "--help"])
        out = capsys.readouterr().out
        assert f"usage: keeptime {name}" in out
        examples = out.split("examples:\n", 1)[1]
        assert examples.startswith("  keeptime ") and name in examples.splitlines()[0]
