"""keeptime-criu-hook, the shell script CRIU runs at every step: steps keeptime
does not use end in the shell; the others go to the native forwarder beside
it, else to `keeptime criu-hook`. Played with stand-in programs that say they
ran."""
import os
import subprocess

import pytest

from helpers.hookbin import HOOK_SCRIPT

USED = ("post-dump", "pre-restore", "post-restore", "post-resume")


def stand_in(path, name: str, status: int = 0) -> str:
    """A program that says it ran (with its arguments) and exits with status."""
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\necho "{name} $*"\nexit {status}\n')
    os.chmod(path, 0o755)
    return str(path)


@pytest.fixture
def installed(tmp_path):
    """A bin/ of the hook with a stand-in forwarder and keeptime, and a PATH
    directory with a keeptime stand-in too."""
    bin_dir, path_dir = tmp_path / "bin", tmp_path / "path"
    bin_dir.mkdir()
    path_dir.mkdir()
    hook = bin_dir / "keeptime-criu-hook"
    hook.write_bytes(open(HOOK_SCRIPT, "rb").read())
    hook.chmod(0o755)
    stand_in(bin_dir / "keeptime-criu-forward", "forwarder", 7)
    stand_in(bin_dir / "keeptime", "keeptime beside")
    stand_in(path_dir / "keeptime", "keeptime on PATH")
    return bin_dir, path_dir


def run(program, path_dir, action=None, **env):
    environ = {"PATH": f"{path_dir}:/usr/bin:/bin", **env}
    if action is not None:
        environ["CRTOOLS_SCRIPT_ACTION"] = action
    return subprocess.run([str(program)], env=environ, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("action", ["pre-dump", "network-lock", "setup-namespaces", "post-setup-namespaces",
                                    "network-unlock", "pre-resume", "an-action-of-a-future-criu"])
def test_a_step_keeptime_does_not_use_ends_in_the_shell(installed, action):
    bin_dir, path_dir = installed
    result = run(bin_dir / "keeptime-criu-hook", path_dir, action)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("action", [*USED, None])
def test_the_steps_keeptime_uses_and_a_run_by_hand_go_to_the_forwarder_beside_it(installed, action):
    bin_dir, path_dir = installed
    result = run(bin_dir / "keeptime-criu-hook", path_dir, action)
    assert (result.returncode, result.stdout) == (7, "forwarder \n")   # its exit status is CRIU's


def test_reached_through_a_link_it_finds_the_forwarder_beside_the_target(installed, tmp_path):
    bin_dir, path_dir = installed
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "criu-hook"
    os.symlink(bin_dir / "keeptime-criu-hook", link)
    assert run(link, path_dir, "post-restore").stdout == "forwarder \n"


def test_without_the_forwarder_it_runs_the_python_hook(installed):
    """Only the keeptime distribution installed: KEEPTIME_CLI, else the
    keeptime beside it, else the one on PATH; none: a clear failure."""
    bin_dir, path_dir = installed
    hook = bin_dir / "keeptime-criu-hook"
    os.unlink(bin_dir / "keeptime-criu-forward")
    named = stand_in(path_dir / "named-cli", "named")
    assert run(hook, path_dir, "post-dump", KEEPTIME_CLI=named).stdout == "named criu-hook\n"
    assert run(hook, path_dir, "post-dump").stdout == "keeptime beside criu-hook\n"
    os.unlink(bin_dir / "keeptime")
    assert run(hook, path_dir, "post-dump").stdout == "keeptime on PATH criu-hook\n"
    os.unlink(path_dir / "keeptime")
    result = subprocess.run([str(hook)], env={"PATH": str(path_dir), "CRTOOLS_SCRIPT_ACTION": "post-dump"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == (f"keeptime criu-hook: post-dump: neither keeptime-criu-forward nor keeptime is "
                             f"beside {hook} or on PATH\n")


DEPLOY_HOOK = os.path.normpath(os.path.join(os.path.dirname(HOOK_SCRIPT), "..", "..", "deploy", "criu", "criu-hook"))


def test_the_fixed_path_script_runs_keeptime_criu_hook_from_path(installed):
    """deploy/criu/criu-hook, copied to /usr/libexec/keeptime/criu-hook by a
    host that installs keeptime itself: the steps keeptime uses go to the
    keeptime-criu-hook on PATH (and on to its forwarder); the others end at once."""
    bin_dir, path_dir = installed
    path = f"{bin_dir}:{path_dir}"
    for action in USED:
        result = run(DEPLOY_HOOK, path, action)
        assert (result.returncode, result.stdout) == (7, "forwarder \n")
    result = run(DEPLOY_HOOK, path, "pre-resume")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    named = stand_in(path_dir / "my-hook", "named hook")
    assert run(DEPLOY_HOOK, path_dir, "post-restore", KEEPTIME_CRIU_HOOK=named).stdout == "named hook \n"


def test_the_fixed_path_script_says_when_the_hook_is_nowhere(installed, tmp_path):
    """(This host may have keeptime-criu-hook in /usr/local/bin, which the
    script always searches: a hook named in KEEPTIME_CRIU_HOOK that is missing.)"""
    _, path_dir = installed
    missing = tmp_path / "gone" / "keeptime-criu-hook"
    result = run(DEPLOY_HOOK, path_dir, "post-restore", KEEPTIME_CRIU_HOOK=str(missing))
    assert result.returncode == 1
    assert result.stderr.startswith(f"keeptime criu-hook: post-restore: cannot find {missing} (PATH={path_dir}:")
    assert result.stderr.endswith("install keeptime or name its keeptime-criu-hook in KEEPTIME_CRIU_HOOK\n")
