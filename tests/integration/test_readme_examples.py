"""The README's code blocks, run as a reader would run them on a Debian host
(which block runs where: tests/helpers/readme.py's CHECKS).

The CLI examples run against a keeptimed of the test's own, with the
README's made-up pids, record ids and programs replaced by real ones; the
install paths run in a copy of this checkout: the client into a fresh
virtualenv without a compiler on PATH, then the README's Python example with
it, and both wheels built and installed together."""
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from helpers import readme

pytestmark = pytest.mark.root

VENV_BIN = os.path.dirname(sys.executable)
COMPILER = re.compile(r"(^|-)(gcc|g\+\+|cc|c\+\+|c89|c99|cpp|clang|clang\+\+|tcc)(-[\d.]+)?$")
PIP_CACHE = os.path.expanduser("~/.cache/pip")   # the real one: a fresh HOME need not download again
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def bash(script: str, cwd, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def substitute(command: str, names: dict) -> str:
    """command with the README's made-up values replaced by real ones (whole words only)."""
    for made_up in sorted(names, key=len, reverse=True):
        command = re.sub(rf"(?<![\w.]){re.escape(made_up)}(?![\w.])", names[made_up], command)
    return command


def test_the_cli_examples_run(daemon, tmp_path):
    """Every CLI example in the README's order, each command exiting 0. A
    made-up id or pid the README shows as a command's output is learnt from
    the real output, for the commands after it."""
    tree = subprocess.Popen(["sleep", "600"])
    names = {"4242": str(tree.pid), "/usr/bin/app --resume": "/bin/sleep 5",
             "/var/log/app.out": str(tmp_path / "app.out"), "/tmp/uptime": str(tmp_path / "uptime")}
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "KEEPTIME_SOCKET": daemon.socket,
           "KEEPTIME_CONFIG": daemon.config}
    ran = []
    try:
        for block in readme.to_run("test_the_cli_examples_run"):
            steps = block.transcript() or [(line, []) for line in block.text.splitlines() if line.strip()]
            for command, shown in steps:
                if command.startswith("systemctl "):
                    continue   # the host's service, not the test's keeptimed
                real = substitute(command, names)
                result = bash(real, tmp_path, env, timeout=120)
                assert result.returncode == 0, (block.line, real, result.stdout, result.stderr)
                ran.append(real)
                made_up, output = (shown or [""])[0].strip(), (result.stdout.splitlines() or [""])[0].strip()
                if (HEX_ID.match(made_up) or made_up.isdigit()) and made_up not in names and made_up != output:
                    names[made_up] = output
                    if HEX_ID.match(made_up):
                        names[made_up[:4]] = output[:4]   # the README abbreviates ids to 4 characters
    finally:
        tree.kill()
        tree.wait()
    assert {"5150", "5161", "3f9a"} <= set(names)   # the restored and exec'd pids, the record id were real
    assert float((tmp_path / "uptime").read_text().split()[0]) > 0
    assert any(command.startswith("keeptime restores ") for command in ran)


def checkout_copy(tmp_path) -> str:
    """This checkout's sources, without builds and environments, as a fresh clone has them."""
    copy = tmp_path / "checkout"
    shutil.copytree(readme.ROOT, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache", "*.so",
        "keeptime-helper", "_keeptime_native.c"))
    return str(copy)


def path_without_compilers(tmp_path) -> str:
    """A PATH directory with /usr/bin's programs but no C compiler."""
    farm = tmp_path / "path"
    farm.mkdir()
    for name in os.listdir("/usr/bin"):
        if not COMPILER.search(name):
            os.symlink(os.path.join("/usr/bin", name), farm / name)
    assert shutil.which("gcc", path=str(farm)) is None and shutil.which("cc", path=str(farm)) is None
    return str(farm)


def test_the_client_installs_and_works_without_a_compiler(daemon, tmp_path):
    """The README's client install into a fresh virtualenv with no compiler on
    PATH, then its Python example with that virtualenv against a keeptimed."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": path_without_compilers(tmp_path), "HOME": str(home), "PIP_CACHE_DIR": PIP_CACHE,
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    blocks = readme.to_run("test_the_client_installs_and_works_without_a_compiler")
    (install,), (example,) = [b for b in blocks if b.lang == "sh"], [b for b in blocks if b.lang == "python"]
    result = bash(install.text, checkout_copy(tmp_path), env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0.1.0"
    venv = home / "venvs" / "migrate"
    installed = subprocess.run([venv / "bin" / "pip", "list", "--format", "freeze"], capture_output=True, text=True,
                               env=env, check=True).stdout
    names = {line.split("==")[0].lower() for line in installed.split()}
    assert "keeptime" in names and not names & {"keeptimed", "cffi", "psutil"}, names
    assert os.access(venv / "bin" / "keeptime", os.X_OK) and os.access(venv / "bin" / "keeptime-criu-hook", os.X_OK)
    assert not (venv / "bin" / "keeptime-criu-forward").exists()

    ran = subprocess.run([venv / "bin" / "python", "-c", example.text], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**env, "KEEPTIME_SOCKET": daemon.socket})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1] == "0 0"

    # Its CRIU hook: a step keeptime does not use ends in the shell; the others run the Python hook.
    hook = str(venv / "bin" / "keeptime-criu-hook")
    skipped = subprocess.run([hook], env={"PATH": "/usr/bin:/bin", "CRTOOLS_SCRIPT_ACTION": "pre-resume"},
                             capture_output=True, text=True, timeout=60)
    assert (skipped.returncode, skipped.stderr) == (0, "")
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "hook.toml").write_text('policy = "suspend"\n')
    used = subprocess.run([hook], env={"PATH": "/usr/bin:/bin", "CRTOOLS_SCRIPT_ACTION": "post-dump",
                                       "CRTOOLS_IMAGE_DIR": str(tmp_path), "CRTOOLS_INIT_PID": str(gone.pid),
                                       "KEEPTIME_SOCKET": daemon.socket,
                                       "KEEPTIME_CRIU_HOOK_CONFIG": str(tmp_path / "hook.toml")},
                          capture_output=True, text=True, timeout=60)
    assert used.returncode == 1 and "the image directory has no timens-0.img" in used.stderr, used.stderr


def test_both_wheels_build_and_install_together(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    checkout = checkout_copy(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PIP_CACHE_DIR": PIP_CACHE,
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    (build,) = readme.to_run("test_both_wheels_build_and_install_together")
    result = bash(build.text, checkout, env)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = re.search(r"^ls dist\s+# (.*)$", build.text, re.M).group(1).split()
    wheels = sorted(os.listdir(os.path.join(checkout, "dist")))
    assert wheels[0] == shown[0] == "keeptime-0.1.0-py3-none-any.whl"
    assert wheels[1].startswith("keeptimed-0.1.0-cp311-cp311-linux_") and len(wheels) == 2
    with zipfile.ZipFile(os.path.join(checkout, "dist", wheels[0])) as client:
        names = client.namelist()
        assert "keeptime-0.1.0.data/scripts/keeptime-criu-hook" in names
        assert not [n for n in names if n.endswith(".so") or n.startswith("keeptimed/")]
    with zipfile.ZipFile(os.path.join(checkout, "dist", wheels[1])) as daemon:
        names = daemon.namelist()
        assert "keeptimed-0.1.0.data/data/bin/keeptime-criu-forward" in names and "keeptimed/keeptime-helper" in names
        assert not [n for n in names if n.startswith("keeptime/")]
    bin_dir = home / "venvs" / "build" / "bin"
    for program in ("keeptime", "keeptimed", "keeptime-criu-hook", "keeptime-criu-forward"):
        assert os.access(bin_dir / program, os.X_OK), program
    by_hand = subprocess.run([bin_dir / "keeptime-criu-hook"], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                             text=True, timeout=60)
    assert by_hand.returncode == 2 and "this is a CRIU action script" in by_hand.stderr
    version = subprocess.run([bin_dir / "keeptimed", "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == "keeptimed 0.1.0", version.stderr
