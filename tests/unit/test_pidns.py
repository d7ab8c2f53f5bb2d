"""pidns: reading NSpid, and the identity view a caller in keeptimed's own
pid namespace gets (no /proc reads). Translation across namespaces is played
with real namespaces in tests/integration/test_pid_namespaces.py."""
import os

import pytest

from keeptimed import pidns

STATUS = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t5343\nNgid:\t0\nPid:\t5343\nPPid:\t5300\n"


def test_nspids_lists_the_pid_in_each_namespace_from_keeptimeds_down():
    assert pidns.nspids(STATUS + "NSpid:\t5343\t12\t2\nNSpgid:\t5343\t12\t2\n") == [5343, 12, 2]
    assert pidns.nspids(STATUS + "NSpid:\t5343\n") == [5343]


def test_a_status_without_nspid_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="no NSpid"):
        pidns.nspids(STATUS)


def test_own_is_this_process_namespace_at_level_0():
    st = os.stat("/proc/self/ns/pid")
    assert pidns.own() == pidns.PidNamespace(st.st_dev, st.st_ino, 0)


def test_a_caller_in_keeptimeds_namespace_gets_pids_unchanged_without_looking_at_proc(monkeypatch):
    monkeypatch.setattr(pidns, "PROC", "/nonexistent")
    own = pidns.PidNamespace(1, 2, 0)
    view = pidns.View(own, own)
    assert view.same
    assert view.resolve(5343) == pidns.Target(5343, 5343)
    assert view.to_caller(5343) == 5343


def test_a_socket_peer_in_this_namespace_is_seen_in_it():
    import socket

    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        own = pidns.own()
        assert pidns.of_peer(a, os.getpid(), own) is own
        assert pidns.of_peer(a, 0, own) is None   # SO_PEERCRED pid 0: invisible to keeptimed
