"""deploy/systemd/keeptimed.service: systemd accepts it, and it keeps the
contract keeptimed and restored process trees rely on."""
import configparser
import os
import shutil
import subprocess
import sys

import pytest

from keeptimed import main as keeptimed_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, "deploy", "systemd", "keeptimed.service")


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(UNIT)
    return parser


def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (tests/run.sh installs it: deploy/system-deps.sh --test)")
    with open(UNIT, encoding="utf-8") as f:
        text = f.read()
    # Verify checks that ExecStart's program exists: point it at this
    # checkout's keeptimed when deploy/install.sh has not put one in place.
    installed = "/usr/local/bin/keeptimed"
    if not os.access(installed, os.X_OK):
        here = shutil.which("keeptimed", path=os.path.dirname(sys.executable))
        assert here, "keeptimed entry point not found next to the test interpreter"
        text = text.replace(f"ExecStart={installed}", f"ExecStart={here}")
    copy = tmp_path / "keeptimed.service"
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys or bad values ("ignoring"): any output is a defect.
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr + result.stdout


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
