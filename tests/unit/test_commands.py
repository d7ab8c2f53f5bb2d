import errno
import os
import re

import pytest

from keeptime.v1 import keeptime_pb2 as pb
from keeptimed import commands
from keeptimed.errors import (
    FailedPrecondition, Internal, InvalidArgument, NotFound, OutOfRange, PermissionDenied,
    ResourceExhausted,
)
from keeptimed.native import NativeError


def test_defaults_are_safe():
    spec = commands.exec_spec(pb.Command(argv=["true"]))
    assert spec.env == [] and spec.cwd == "/"
    assert spec.stdin_path == spec.stdout_path == spec.stderr_path == "/dev/null"
    assert spec.uid is None and spec.umask == 0o022
    assert spec.exec_paths[0] == "/usr/local/sbin/true" and "/bin/true" in spec.exec_paths


def test_path_comes_from_the_commands_own_env():
    spec = commands.exec_spec(pb.Command(argv=["tool"], env=["PATH=/opt/a::/opt/b"]))
    assert spec.exec_paths == ["/opt/a/tool", "./tool", "/opt/b/tool"]
    assert commands.exec_spec(pb.Command(argv=["./rel/tool"])).exec_paths == ["./rel/tool"]


@pytest.mark.parametrize("command, message", [
    (pb.Command(), "argv is empty"),
    (pb.Command(argv=[""]), "argv[0], the program to run, is an empty string"),
    (pb.Command(argv=["a\x00b"]), "NUL"),
    (pb.Command(argv=["true"], env=["NOEQUALS"]), "not KEY=VALUE"),
    (pb.Command(argv=["true"], env=["=v"]), "not KEY=VALUE"),
    (pb.Command(argv=["true"], cwd="relative"), "absolute"),
    (pb.Command(argv=["true"], stdout_path="out.txt"), "absolute"),
    (pb.Command(argv=["true"], uid=4_000_000_000), "does not exist"),
    (pb.Command(argv=["true"], gid=4_000_000_000), "does not exist"),
])
def test_bad_commands_are_invalid(command, message):
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        commands.exec_spec(command)


def test_uid_brings_its_primary_group_and_supplementary_groups():
    spec = commands.exec_spec(pb.Command(argv=["true"], uid=0))
    assert (spec.uid, spec.gid) == (0, 0) and 0 in spec.groups
    only_gid = commands.exec_spec(pb.Command(argv=["true"], gid=0))
    assert only_gid.uid == os.geteuid() and only_gid.groups == [0]


@pytest.mark.parametrize("step, err, expected", [
    ("execve", errno.ENOENT, NotFound),
    ("execve", errno.EACCES, PermissionDenied),
    ("execve", errno.ENOEXEC, FailedPrecondition),
    ("execve", errno.E2BIG, InvalidArgument),
    ("chdir", errno.ENOENT, NotFound),
    ("open stdout", errno.EACCES, PermissionDenied),
    ("open stdin", errno.ENXIO, FailedPrecondition),
    ("write /proc/self/timens_offsets", errno.ERANGE, OutOfRange),
    ("write /proc/self/timens_offsets", errno.EPERM, PermissionDenied),
    ("unshare(CLONE_NEWTIME)", errno.EINVAL, FailedPrecondition),
    ("unshare(CLONE_NEWTIME)", errno.ENOSPC, ResourceExhausted),
    ("setns(CLONE_NEWTIME)", errno.ESRCH, NotFound),
    ("setresuid", errno.EPERM, PermissionDenied),
    ("verify clocks", errno.ERANGE, Internal),
])
def test_native_failures_map_to_statuses(step, err, expected):
    spec = commands.exec_spec(pb.Command(argv=["prog"], stdout_path="/x/out"))
    error = commands.spawn_error(NativeError(err, step), spec)
    assert isinstance(error, expected)
    assert "\n" not in error.message and os.strerror(err) in error.message
