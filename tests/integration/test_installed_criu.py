"""The CRIU hook as deploy/install.sh installs it: /usr/libexec/keeptime/criu-hook."""
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


def installed_cli_knows_the_hook() -> bool:
    result = subprocess.run(["/usr/local/bin/keeptime", "criu-hook"], env={"PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    return "CRTOOLS_SCRIPT_ACTION is not set" in result.stderr


def test_the_installed_hook_answers_as_criu_expects(tmp_path):
    if not installed_cli_knows_the_hook():
        pytest.skip("the installed keeptime predates the CRIU hook (re-run deploy/install.sh)")
    assert os.access(HOOK, os.X_OK), f"{HOOK} is missing: deploy/install.sh must install it"
    assert os.path.exists("/etc/keeptime/criu-hook.toml")
    env = {"PATH": "/usr/bin:/bin", "CRTOOLS_SCRIPT_ACTION": "network-lock", "CRTOOLS_IMAGE_DIR": str(tmp_path)}
    assert subprocess.run([HOOK], env=env, timeout=60).returncode == 0
    env["CRTOOLS_SCRIPT_ACTION"] = "no-such-action"
    assert subprocess.run([HOOK], env=env, capture_output=True, timeout=60).returncode == 2
