"""The CRIU hook as deploy/install.sh installs it: /usr/libexec/keeptime/criu-hook,
a link to the native forwarder beside the installed keeptime (CRIU starts no
shell per step), and keeptime-criu-hook, the shell script, on PATH; both talk
to the installed keeptimed on its default socket. deploy/criu/criu-hook, the
script a host that installs keeptime itself copies there, reaches it too."""
import os
import shutil
import subprocess

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not shutil.which("keeptime", path="/usr/local/bin"),
                       reason="keeptime is not installed here (run deploy/install.sh)"),
]
HOOK = "/usr/libexec/keeptime/criu-hook"
SCRIPT = "/usr/local/bin/keeptime-criu-hook"
# What a host that installs keeptime itself copies to HOOK: runs the keeptime-criu-hook on PATH.
COPIED = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "criu", "criu-hook")


def run(program: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([program], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          timeout=60)


def installed_forwarder() -> str:
    program = os.path.realpath(HOOK)
    if os.path.basename(program) != "keeptime-criu-forward":
        pytest.skip("the installed keeptime predates keeptime-criu-forward (re-run deploy/install.sh)")
    return program


def test_the_installed_hook_is_the_native_forwarder_beside_keeptime():
    program = installed_forwarder()
    bin_dir = os.path.dirname(os.path.realpath("/usr/local/bin/keeptime"))
    assert os.path.dirname(program) == bin_dir and os.access(program, os.X_OK)
    with open(program, "rb") as f:
        assert f.read(4) == b"\x7fELF"   # no interpreter starts per CRIU step
    assert os.path.realpath(SCRIPT) == os.path.join(bin_dir, "keeptime-criu-hook")
    with open(SCRIPT, "rb") as f:
        assert f.readline() == b"#!/bin/sh\n"
    assert os.path.exists("/etc/keeptime/criu-hook.toml")


@pytest.mark.parametrize("program", [HOOK, SCRIPT, COPIED])
def test_the_installed_hook_answers_as_criu_expects(tmp_path, program):
    installed_forwarder()
    for action in ("network-lock", "pre-resume", "an-action-of-a-future-criu"):
        assert run(program, {"CRTOOLS_SCRIPT_ACTION": action, "CRTOOLS_IMAGE_DIR": str(tmp_path)}).returncode == 0
    by_hand = run(program, {})
    assert by_hand.returncode == 2 and "this is a CRIU action script" in by_hand.stderr
    # Through the installed keeptimed: a gone tree and no image is a clear failure.
    gone = subprocess.Popen(["true"])
    gone.wait()
    result = run(program, {"CRTOOLS_SCRIPT_ACTION": "post-dump", "CRTOOLS_IMAGE_DIR": str(tmp_path),
                           "CRTOOLS_INIT_PID": str(gone.pid),
                           "KEEPTIME_CRIU_HOOK_CONFIG": "/etc/keeptime/criu-hook.toml"})
    assert result.returncode == 1 and "the image directory has no timens-0.img" in result.stderr, result.stderr
