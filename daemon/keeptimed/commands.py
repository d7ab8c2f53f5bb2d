"""From a requested Command to an ExecSpec the native code can run, and from
native failures to errors a caller understands. All validation happens here,
before anything is spawned."""
import errno
import grp
import os
import pwd
from typing import Optional

from keeptime.v1 import keeptime_pb2 as pb

from .errors import (
    Aborted, FailedPrecondition, Internal, InvalidArgument, KeeptimeError, NotFound, OutOfRange,
    PermissionDenied, ResourceExhausted,
)
from .native import EXEC_WAIT, ExecSpec, NativeError, exec_timeout

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CWD = "/"
DEV_NULL = "/dev/null"
DEFAULT_UMASK = 0o022
MAX_ARGS = 65_536
MAX_PATH_DIRECTORIES = 4096   # keeptime-helper tries at most this many places for a program


def _text(value: str, what: str) -> str:
    if "\x00" in value:
        raise InvalidArgument(f"{what} contains a NUL byte")
    return value


def _absolute(path: str, what: str, default: str) -> str:
    if not path:
        return default
    _text(path, what)
    if not path.startswith("/"):
        raise InvalidArgument(f"{what} must be an absolute path, got {path!r}")
    return path


def _exec_candidates(program: str, env: list[str]) -> list[str]:
    """Where execve should look for program: itself when it names a path,
    otherwise each PATH entry (from the command's own env, else a default)."""
    if "/" in program:
        return [program]
    path = DEFAULT_PATH
    for entry in env:
        if entry.startswith("PATH="):
            path = entry[len("PATH="):]
    directories = path.split(":")
    if len(directories) > MAX_PATH_DIRECTORIES:
        raise InvalidArgument(f"PATH has {len(directories)} directories, more than the {MAX_PATH_DIRECTORIES} "
                              f"keeptime looks for {program[:64]!r} in; give the program's path instead")
    return [os.path.join(directory or ".", program) for directory in directories]


def _ids(uid: Optional[int], gid: Optional[int]) -> tuple[Optional[int], Optional[int], list[int]]:
    """(uid, gid, supplementary groups) to run as; (None, None, []) keeps the daemon's."""
    if uid is None and gid is None:
        return None, None, []
    if gid is not None:
        try:
            grp.getgrgid(gid)
        except KeyError:
            raise InvalidArgument(f"gid {gid} does not exist") from None
    if uid is None:
        return os.geteuid(), gid, [gid]
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        raise InvalidArgument(f"uid {uid} does not exist") from None
    gid = user.pw_gid if gid is None else gid
    return uid, gid, sorted(set(os.getgrouplist(user.pw_name, gid)))


def exec_spec(command: pb.Command) -> ExecSpec:
    """Validate a Command and resolve it into an ExecSpec."""
    argv = [_text(arg, f"argv[{i}]") for i, arg in enumerate(command.argv)]
    if not argv:
        raise InvalidArgument("argv is empty: give the command to run")
    if not argv[0]:
        raise InvalidArgument("argv[0], the program to run, is an empty string")
    if len(argv) + len(command.env) > MAX_ARGS:
        raise InvalidArgument(f"more than {MAX_ARGS} arguments and environment entries")
    env = []
    for i, entry in enumerate(command.env):
        _text(entry, f"env[{i}]")
        key, sep, _ = entry.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"env[{i}] {entry!r} is not KEY=VALUE")
        env.append(entry)
    uid, gid, groups = _ids(
        command.uid if command.HasField("uid") else None,
        command.gid if command.HasField("gid") else None,
    )
    return ExecSpec(
        exec_paths=_exec_candidates(argv[0], env),
        argv=argv,
        env=env,
        cwd=_absolute(command.cwd, "cwd", DEFAULT_CWD),
        uid=uid,
        gid=gid,
        groups=groups,
        umask=DEFAULT_UMASK,
        stdin_path=_absolute(command.stdin_path, "stdin", DEV_NULL),
        stdout_path=_absolute(command.stdout_path, "stdout", DEV_NULL),
        stderr_path=_absolute(command.stderr_path, "stderr", DEV_NULL),
    )


def spawn_error(exc: NativeError, spec: ExecSpec) -> KeeptimeError:
    """The caller-facing error for a failed spawn, naming what failed and why."""
    code = exc.errno
    reason = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    step = exc.step
    as_user = f" as uid {spec.uid}" if spec.uid is not None else ""
    if step == EXEC_WAIT:
        # Killed before its exec: nothing of the program ran, so a retry runs it once.
        why = (f"did not reach its exec within {exec_timeout():g} s (exec_timeout): it was stopped or blocked "
               "before exec" if code == errno.ETIMEDOUT else "had not reached its exec when keeptimed stopped")
        return Aborted(f"the process for {spec.argv[0]!r}{as_user} {why}; keeptimed killed it, so the program "
                       "never ran")
    if step == "execve":
        what = f"cannot execute {spec.argv[0]!r}{as_user}: {reason}"
        if code in (errno.ENOENT, errno.ENOTDIR):
            return NotFound(f"{what}" + ("" if "/" in spec.argv[0] else " (searched PATH)"))
        if code in (errno.EACCES, errno.EPERM):
            return PermissionDenied(what)
        if code in (errno.E2BIG, errno.ENAMETOOLONG, errno.ELOOP):
            return InvalidArgument(what)
        return FailedPrecondition(what)
    if step == "chdir" or step.startswith("open std"):
        target = spec.cwd if step == "chdir" else getattr(spec, step.split()[1] + "_path")
        what = f"{step.replace('open ', '')} {target!r}{as_user}: {reason}"
        if code in (errno.ENOENT, errno.ENOTDIR):
            return NotFound(what)
        if code in (errno.EACCES, errno.EPERM, errno.EROFS):
            return PermissionDenied(what)
        if code == errno.ENXIO:
            return FailedPrecondition(what + " (a FIFO with no reader)")
        return InvalidArgument(what)
    what = f"{step}: {reason}"
    inherited = _inherited_error(step, code, what)
    if inherited is not None:
        return inherited
    if step == "setns(CLONE_NEWTIME)" and code == errno.ESRCH:
        return NotFound(f"the target process exited ({what})")
    if step == "setns(CLONE_NEWPID)" and code == errno.EINVAL:
        return FailedPrecondition(f"cannot start the process in the caller's pid namespace ({what})")
    if step == "unshare(CLONE_NEWTIME)" and code == errno.EINVAL:
        return FailedPrecondition(f"this kernel has no time namespaces, needs Linux >= 5.6 with CONFIG_TIME_NS ({what})")
    if step.startswith("write /proc") and code == errno.ERANGE:
        return OutOfRange(f"the kernel refused the time namespace offsets: {what}")
    if step in ("setgroups", "setresgid", "setresuid"):
        return PermissionDenied(what) if code == errno.EPERM else InvalidArgument(what)
    if code == errno.EPERM or (code == errno.EACCES and step.startswith("open")):
        return PermissionDenied(f"keeptimed lacks the privilege for {what} (needs CAP_SYS_ADMIN and CAP_SYS_TIME)")
    if code in (errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.EUSERS):
        return ResourceExhausted(what)
    return Internal(what)


def _inherited_error(step: str, code: int, what: str) -> Optional[KeeptimeError]:
    """The error for a failed step of taking on what the program inherits
    from its caller (confine.py); None for any other step."""
    denied = code in (errno.EPERM, errno.EACCES)
    if step.startswith("setns(CLONE_NEW") and step != "setns(CLONE_NEWTIME)" and step != "setns(CLONE_NEWPID)":
        needs = "CAP_SYS_ADMIN and CAP_SYS_CHROOT" if step == "setns(CLONE_NEWNS)" else "CAP_SYS_ADMIN"
        message = f"cannot start the program in the caller's namespaces ({what})"
        if denied:
            return PermissionDenied(f"{message}: keeptimed needs {needs}, and no seccomp filter (such as systemd's "
                                    "RestrictNamespaces=) that forbids it")
        return FailedPrecondition(message)
    if step == "chroot":
        message = f"cannot give the program the caller's root directory ({what})"
        return PermissionDenied(f"{message}: keeptimed needs CAP_SYS_CHROOT") if denied else FailedPrecondition(message)
    if step in ("write cgroup.procs", "clone3(CLONE_INTO_CGROUP)"):
        message = f"cannot start the program in its cgroup ({what})"
        return PermissionDenied(message) if denied else FailedPrecondition(message)
    if step == "write /proc/self/loginuid":
        message = f"cannot give the program the caller's loginuid ({what})"
        if denied:
            return PermissionDenied(f"{message}: keeptimed's own loginuid is set and the kernel keeps it "
                                    "(audit loginuid_immutable); run keeptimed with an unset loginuid, as a service")
        return FailedPrecondition(message)
    if step.startswith("setrlimit("):
        message = f"cannot give the program the caller's limits ({what})"
        return PermissionDenied(f"{message}: raising a hard limit needs CAP_SYS_RESOURCE") if denied \
            else FailedPrecondition(message)
    return None
