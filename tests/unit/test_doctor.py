"""keeptime doctor's own kernel probe: asks clone3() about the offset ABI
without creating a process, and agrees with what the kernel really does."""
import os

import pytest

from keeptime import doctor
from keeptime.v1 import keeptime_pb2 as pb


def children_of_this_process() -> list[str]:
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
        return f.read().split()


def test_the_probe_creates_nothing_and_finds_no_released_kernel_with_the_abi():
    if not os.path.exists("/proc/self/ns/time"):
        pytest.skip("no time namespaces here")
    before = children_of_this_process()
    supported, answer = doctor.probe_clone3_offset_abi()
    assert children_of_this_process() == before
    # DESIGN: the proposal was never merged; clone3 refuses the larger struct.
    assert (supported, answer) == (False, "E2BIG")


def test_the_daemons_experience_wins_over_the_probe():
    tried = pb.GetInfoResponse(offset_abi=pb.OFFSET_ABI_SUPPORTED)
    assert doctor.check_offset_abi(tried).summary.startswith("keeptimed's restores found clone3() takes")
    untried = doctor.check_offset_abi(pb.GetInfoResponse(offset_abi=pb.OFFSET_ABI_UNTRIED))
    assert untried.summary.startswith("clone3() answered E2BIG: this kernel lacks the clone3 offset ABI")
    assert doctor.check_offset_abi(None).summary == untried.summary


def test_a_keeptimed_this_user_cannot_run_is_a_skipped_check_not_a_traceback(tmp_path, monkeypatch):
    config = tmp_path / "keeptimed.toml"
    config.write_text("workers = 4\n")
    not_runnable = tmp_path / "keeptimed"
    not_runnable.write_text("#!/nonexistent/interpreter\n")
    not_runnable.chmod(0o755)
    monkeypatch.setattr(doctor, "find_keeptimed", lambda: str(not_runnable))
    check = doctor.check_config(str(config), explicit=True)
    assert check.status == doctor.SKIP and "cannot run" in check.summary


# -- does CRIU run keeptime's hook? -------------------------------------------------

HOOK_SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "client", "scripts", "keeptime-criu-hook")
DEPLOY_HOOK = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "criu", "criu-hook")


def executable(path, text: str = "#!/bin/sh\nexit 0\n"):
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def criu_on_path(tmp_path, monkeypatch):
    """A PATH whose only criu is a stand-in (the check asks only whether one is there)."""
    bin_dir = tmp_path / "path"
    bin_dir.mkdir()
    executable(bin_dir / "criu")
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def criu_configs(tmp_path, **files: str):
    config_dir = tmp_path / "etc-criu"
    config_dir.mkdir(exist_ok=True)
    for name, text in files.items():
        (config_dir / f"{name}.conf").write_text(text)
    return str(config_dir)


def test_a_configuration_naming_keeptimes_hook_through_any_link_is_ok(tmp_path, criu_on_path):
    installed = tmp_path / "venv-bin"
    installed.mkdir()
    forwarder = executable(installed / "keeptime-criu-forward", "\x7fELF stand-in")
    os.symlink(forwarder, tmp_path / "criu-hook")   # as install.sh links /usr/libexec/keeptime/criu-hook
    copied = executable(tmp_path / "site-hook", open(DEPLOY_HOOK).read())   # deploy/criu/criu-hook, renamed
    config_dir = criu_configs(tmp_path,
                              default=f"# keeptime\ntcp-established\naction-script {tmp_path / 'criu-hook'}\n",
                              runc=f'--action-script "{copied}"   # comment\n')
    check = doctor.check_criu_hook(config_dir, environ={})
    assert (check.status, check.summary) == (
        "ok", f"keeptime's hook runs for default.conf (criu, CRaC), runc.conf (runc, podman on runc) in {config_dir}")


def test_a_configuration_naming_a_missing_or_unrunnable_hook_fails(tmp_path, criu_on_path):
    not_executable = tmp_path / "keeptime-criu-hook"
    not_executable.write_text(open(HOOK_SCRIPT).read())
    config_dir = criu_configs(tmp_path, runc=f"action-script {not_executable}\n",
                              crun="action-script /opt/gone/bin/keeptime-criu-forward\n")
    check = doctor.check_criu_hook(config_dir, environ={})
    assert check.status == "fail"
    assert check.summary == (f"{config_dir}/runc.conf names {not_executable}, which is not executable; "
                             f"{config_dir}/crun.conf names /opt/gone/bin/keeptime-criu-forward, which does not "
                             f"exist: every CRIU dump and restore that reads it fails")


def test_no_configuration_naming_the_hook_is_a_warning_with_the_line_to_add(tmp_path, criu_on_path, monkeypatch):
    other = executable(tmp_path / "somebody-elses-script")
    config_dir = criu_configs(tmp_path, default=f"action-script {other}\n")
    check = doctor.check_criu_hook(config_dir, environ={})
    assert check.status == "warn"
    assert f"no CRIU configuration in {config_dir} names keeptime's hook" in check.summary
    assert "add `action-script /usr/libexec/keeptime/criu-hook` to the ones your tools read (default.conf: criu, CRaC; runc.conf" in check.summary
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))   # no CRIU here: nothing to configure
    assert doctor.check_criu_hook(config_dir, environ={}).status == "skip"


def test_a_hook_configuration_that_would_fail_every_step_is_a_blocking_problem(tmp_path, criu_on_path):
    bad = tmp_path / "criu-hook.toml"
    bad.write_text('policy = "sometimes"\n')
    config_dir = criu_configs(tmp_path)
    check = doctor.check_criu_hook(config_dir, environ={"KEEPTIME_CRIU_HOOK_CONFIG": str(bad)})
    assert check.status == "fail"
    assert check.summary.startswith(f"every CRIU step through keeptime's hook would fail: {bad}: policy must be one of")
    gone = doctor.check_criu_hook(config_dir, environ={"KEEPTIME_CRIU_HOOK_CONFIG": str(tmp_path / "gone.toml")})
    assert gone.status == "fail" and "gone.toml (from KEEPTIME_CRIU_HOOK_CONFIG) does not exist" in gone.summary
