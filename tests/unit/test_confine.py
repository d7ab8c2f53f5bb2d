"""What a program takes from its caller: parsing /proc and the settings
(the real thing is tests/integration/test_confinement.py)."""
import pytest

from keeptimed import cgroups, confine
from keeptimed.native import RLIM_INFINITY, RLIMITS

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd,release_agent=/x
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
77 60 0:38 /kubepods/pod1 /var/lib/pod\\040one/cgroup rw,relatime - cgroup2 cgroup2 rw
"""
CGROUP = """\
9:name=systemd:/user.slice/user-1000.slice/session-3.scope
8:pids:/user.slice/user-1000.slice/session-3.scope
4:memory:/
1:cpu,cpuacct:/../../outside
0::/user.slice/user-1000.slice/session-3.scope
"""


def test_the_mounted_hierarchies_of_a_hybrid_host():
    found = {h.key: h for h in cgroups.hierarchies(HYBRID_MOUNTINFO)}
    assert set(found) == {"", "cpu,cpuacct", "memory", "pids", "name=systemd"}
    assert found[""].mountpoint == "/sys/fs/cgroup/unified"   # the first mount of a hierarchy
    assert found["name=systemd"].name == "cgroup v1 name=systemd" and found[""].name == "cgroup v2"


def test_a_process_cgroup_paths_by_hierarchy():
    paths = cgroups.memberships(CGROUP)
    assert paths[""] == paths["pids"] == "/user.slice/user-1000.slice/session-3.scope"
    assert paths["cpu,cpuacct"] == "/../../outside" and paths["memory"] == "/"


def test_where_a_cgroup_is_in_a_mount_and_where_it_is_not():
    v2 = cgroups.Hierarchy("", "/sys/fs/cgroup/unified")
    assert v2.directory("/a/b") == "/sys/fs/cgroup/unified/a/b"
    assert v2.directory("/") == "/sys/fs/cgroup/unified"
    assert v2.directory("/../../outside") is None    # above keeptimed's cgroup namespace
    sub = cgroups.hierarchies(HYBRID_MOUNTINFO.splitlines()[-1])[0]   # a mount of a subtree
    assert (sub.mountpoint, sub.root) == ("/var/lib/pod one/cgroup", "/kubepods/pod1")
    assert sub.directory("/kubepods/pod1/c") == "/var/lib/pod one/cgroup/c"
    assert sub.directory("/kubepods/pod1") == "/var/lib/pod one/cgroup"
    assert sub.directory("/kubepods/pod10") is None and sub.directory("/system.slice") is None
    # Mounted outside keeptimed's cgroup namespace: the whole tree, its root "/.." from inside.
    outside = cgroups.Hierarchy("", "/sys/fs/cgroup", "/..")
    assert outside.directory("/../user.slice") == "/sys/fs/cgroup/user.slice"
    assert outside.directory("/") is None and outside.directory("/../../x") is None


LIMITS = """\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max core file size        0                    unlimited            bytes     
Max open files            64                   64                   files     
Max nice priority         0                    0                    
Max realtime timeout      unlimited            unlimited            us        
"""


def test_proc_limits_by_resource():
    limits = confine.parse_limits(LIMITS)
    assert limits[RLIMITS["RLIMIT_NOFILE"]] == (64, 64)
    assert limits[RLIMITS["RLIMIT_CORE"]] == (0, RLIM_INFINITY)
    assert limits[RLIMITS["RLIMIT_CPU"]] == (RLIM_INFINITY, RLIM_INFINITY)
    assert limits[RLIMITS["RLIMIT_NICE"]] == (0, 0)
    assert len(limits) == 5


def test_the_resource_rows_of_this_kernel_are_all_known():
    with open("/proc/self/limits") as f:
        assert len(confine.parse_limits(f.read())) == 16


def test_a_status_field():
    status = "Name:\tsh\nSeccomp:\t2\nSeccomp_filters:\t1\n"
    assert confine.status_field(status, "Seccomp") == "2"
    assert confine.status_field(status, "NoNewPrivs") is None


@pytest.mark.parametrize("value, ok", [
    ("caller", True), ("keeptimed", True), ("/keeptime.slice", True), ("/a/b", True),
    ("keeptime.slice", False), ("/a/../b", False), ("", False),
])
def test_root_programs_cgroup_values(value, ok):
    assert (confine.check_root_cgroup(value) is None) == ok


def test_allow_lost_confinement_values():
    assert confine.check_allow_lost(list(confine.LOSABLE)) is None
    assert "unknown 'apparmor'" in confine.check_allow_lost(["seccomp", "apparmor"])
