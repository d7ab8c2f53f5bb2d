"""userns.charged_uid: a caller in keeptimed's own user namespace, or one
that is gone, is charged to its own uid. (A member's own user namespace is
played for real in tests/integration/test_limits.py.)"""
import os
import subprocess

import pytest

from keeptimed import userns


def test_a_process_in_keeptimeds_user_namespace_is_charged_to_its_own_uid():
    assert userns.charged_uid(os.getpid(), 4242) == 4242


def test_a_process_that_is_gone_is_charged_to_its_own_uid():
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert userns.charged_uid(gone.pid, 4242) == 4242


@pytest.mark.root
def test_a_user_namespace_root_made_keeps_its_callers_uids():
    """Root's own namespaces (a container runtime's) are apart by design:
    its callers are not charged to root (which no limit counts)."""
    child = subprocess.Popen(["unshare", "--user", "--map-root-user", "sleep", "30"])
    try:
        for _ in range(100):   # until unshare has made the namespace
            if os.stat(f"/proc/{child.pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino:
                break
            subprocess.run(["sleep", "0.05"])
        assert userns.charged_uid(child.pid, 100007) == 100007
    finally:
        child.kill()
        child.wait()
