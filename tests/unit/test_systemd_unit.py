"""deploy/systemd/keeptimed.service: systemd accepts it, and it keeps the
contract keeptimed and restored process trees rely on."""
import configparser
import os
import re
import shutil
import subprocess
import sys

import pytest

from keeptimed import caps
from keeptimed import main as keeptimed_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, "deploy", "systemd", "keeptimed.service")
HARDENING = os.path.join(ROOT, "deploy", "systemd", "keeptimed.service.d", "hardening.conf.example")


def unit(path: str = UNIT) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path)
    return parser


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (tests/run.sh installs it: deploy/system-deps.sh --test)")
    return found


def unit_copy(directory, hardened: bool = False) -> str:
    """The unit (and the hardening drop-in beside it, as systemd would find it
    in /etc/systemd/system) in directory, with ExecStart pointing at this
    checkout's keeptimed when deploy/install.sh has not put one in place:
    verify checks that the program exists."""
    with open(UNIT, encoding="utf-8") as f:
        text = f.read()
    installed = "/usr/local/bin/keeptimed"
    if not os.access(installed, os.X_OK):
        here = shutil.which("keeptimed", path=os.path.dirname(sys.executable))
        assert here, "keeptimed entry point not found next to the test interpreter"
        text = text.replace(f"ExecStart={installed}", f"ExecStart={here}")
    copy = directory / "keeptimed.service"
    copy.write_text(text)
    if hardened:
        (directory / "keeptimed.service.d").mkdir()
        shutil.copy(HARDENING, directory / "keeptimed.service.d" / "hardening.conf")
    return str(copy)


@pytest.mark.parametrize("hardened", [False, True], ids=["unit", "unit+hardening"])
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path, hardened):
    result = subprocess.run([systemd_analyze(), "verify", unit_copy(tmp_path, hardened)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys or bad values ("ignoring"): any output is a defect.
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr + result.stdout


def exposure(path: str) -> float:
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", path], capture_output=True, text=True,
                            timeout=120)
    return float(re.search(r"Overall exposure level for keeptimed\.service: ([\d.]+)", result.stdout).group(1))


def test_the_hardening_drop_in_lowers_the_exposure_systemd_reports(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "hardened").mkdir()
    plain, hardened = exposure(unit_copy(tmp_path / "plain")), exposure(unit_copy(tmp_path / "hardened", True))
    assert hardened <= plain - 4, (plain, hardened)


def test_the_hardening_drop_in_keeps_what_keeptimed_needs():
    service = unit(HARDENING)["Service"]
    bounding = service["CapabilityBoundingSet"].split()
    assert sorted(bounding) == sorted(need.name for need in caps.NEEDS)
    assert service["RestrictNamespaces"] == "time"  # unshare and setns of time namespaces
    assert "AF_UNIX" in service["RestrictAddressFamilies"].split()
    # Each would take away /proc of other processes, CAP_SYS_TIME, or the
    # restored programs' own view of the host.
    assert not [key for key in ("ProtectProc", "ProcSubset", "ProtectClock", "PrivateNetwork", "PrivateTmp",
                                "PrivatePIDs", "PrivateUsers") if key in service]


def test_the_unit_notifies_keeps_restored_trees_and_does_not_sandbox_them():
    service = unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "30s" and service["Restart"] == "on-failure"
    # Restored trees are keeptimed's children in this cgroup and outlive it.
    assert service["KillMode"] == "process" and service["OOMPolicy"] == "continue"
    assert service["TasksMax"] == "infinity"
    assert service["RuntimeDirectory"] == service["StateDirectory"] == "keeptime"
    assert service["RuntimeDirectoryPreserve"] == "yes"
    # Sandboxing would be inherited by the restored programs: none of it.
    inherited = ("ProtectSystem", "PrivateTmp", "ProtectProc", "ProcSubset", "CapabilityBoundingSet",
                 "SystemCallFilter", "RestrictNamespaces", "NoNewPrivileges", "PrivateNetwork",
                 "MemoryDenyWriteExecute", "PrivateDevices", "ProtectClock", "ProtectHostname")
    assert not [key for key in inherited if key in service]


def test_execstart_is_the_installed_entry_point_with_valid_flags(tmp_path):
    argv = unit()["Service"]["ExecStart"].split()
    with open(os.path.join(ROOT, "deploy", "install.sh"), encoding="utf-8") as f:
        assert f"ln -sf \"$prefix/bin/keeptimed\" {argv[0]}" in f.read()
    # No flags, so the configuration file is not overridden; whatever flags
    # there are must parse.
    assert argv[1:] == []
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    _, cfg = keeptimed_main.load_config(argv[1:] + ["--config", str(empty)], {})
    paths = unit()["Service"]
    assert os.path.dirname(cfg.socket) == "/run/" + paths["RuntimeDirectory"]
    assert os.path.dirname(cfg.db) == "/var/lib/" + paths["StateDirectory"]
