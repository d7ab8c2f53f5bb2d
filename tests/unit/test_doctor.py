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
