"""The CRIU hook as deploy/install.sh installs it: /usr/libexec/keeptime/criu-hook,
a link to keeptime-criu-hook beside the installed keeptime, talking to the
installed keeptimed on its default socket."""
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


def run(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([HOOK], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          timeout=60)


def test_the_installed_hook_is_the_program_beside_keeptime():
    if not os.path.islink(HOOK):
        pytest.skip("the installed keeptime predates keeptime-criu-hook (re-run deploy/install.sh)")
    program = os.path.realpath(HOOK)
    assert os.path.basename(program) == "keeptime-criu-hook" and os.access(program, os.X_OK)
    assert os.path.dirname(program) == os.path.dirname(os.path.realpath("/usr/local/bin/keeptime"))
    with open(program, "rb") as f:
        assert f.read(4) == b"\x7fELF"   # the native forwarder: no interpreter starts per CRIU step
    assert os.path.exists("/etc/keeptime/criu-hook.toml")


def test_the_installed_hook_answers_as_criu_expects(tmp_path):
    if not os.path.islink(HOOK):
        pytest.skip("the installed keeptime predates keeptime-criu-hook (re-run deploy/install.sh)")
    for action in ("network-lock", "pre-resume", "an-action-of-a-future-criu"):
        assert run({"CRTOOLS_SCRIPT_ACTION": action, "CRTOOLS_IMAGE_DIR": str(tmp_path)}).returncode == 0
    by_hand = run({})
    assert by_hand.returncode == 2 and "this is a CRIU action script" in by_hand.stderr
    # Through the installed keeptimed: a gone tree and no image is a clear failure.
    gone = subprocess.Popen(["true"])
    gone.wait()
    result = run({"CRTOOLS_SCRIPT_ACTION": "post-dump", "CRTOOLS_IMAGE_DIR": str(tmp_path),
                  "CRTOOLS_INIT_PID": str(gone.pid), "KEEPTIME_CRIU_HOOK_CONFIG": "/etc/keeptime/criu-hook.toml"})
    assert result.returncode == 1 and "the image directory has no timens-0.img" in result.stderr, result.stderr
