"""Who is calling, and what they may do.

keeptimed runs as root and starts processes, so Restore is root-equivalent.
The policy:
  * root on the unix socket, and TLS clients whose certificate the daemon
    accepted (migration tooling), may do everything; with an allow-list, a
    certificate is accepted for a DNS subject alternative name in it, never
    for its common name or a SAN of another type (an email address or URI
    equal to an allowed name proves nothing);
  * any other uid that could connect (the socket is opened to a group with
    --socket-group) may only checkpoint, inspect and enter processes it owns,
    see and use records it created, wait for processes it started, and
    restore or exec only as itself: the program runs with the caller's
    uid, gid and groups and with no_new_privs, and with what else the
    calling process has (its namespaces, cgroup, rlimits, loginuid:
    confine.py), so keeptime grants it nothing but the new time namespace.
Every pid a call takes or returns is one of the caller's pid namespace
(keeptimed's own for TLS clients): see pids().
"""
import contextlib
import contextvars
import os
import pwd
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Mapping, Optional

from . import pidns
from .confine import Inheritance, Settings, calling_process
from .errors import FailedPrecondition, NotFound, PermissionDenied
from .native import ExecSpec, Inherited
from .pidns import PidNamespace
from .relay import CallerRelay

# The RPCs an unprivileged caller may make (each then checks ownership).
UNPRIVILEGED_RPCS = frozenset({
    "Checkpoint", "Plan", "Restore", "Wait", "GetRecord", "ListRecords", "DeleteRecord",
    "Clocks", "Exec", "ExportRecord", "ImportRecord",
    # The CRIU hook runs as the user under rootless CRIU.
    "CheckpointCriuImage", "PlanCriuRestore", "VerifyRestore", "ListRestores",
})


@dataclass(frozen=True)
class Caller:
    """The identity behind one call."""

    transport: str                  # "unix", "tls" or "tcp-insecure"
    pid: Optional[int] = None       # unix only: SO_PEERCRED at connect time
    uid: Optional[int] = None
    gid: Optional[int] = None
    name: str = ""                  # unix: the program's name; tls: the client certificate's name
    pidns: Optional[PidNamespace] = None   # whose pids it names; None: unknown
    peer: str = ""                  # unix: the relayed connection, as gRPC names it
    # unix: the uid per-uid limits charge, when not uid (a user namespace's creator, userns.py)
    charged_uid: Optional[int] = None

    @property
    def account(self) -> Optional[int]:
        """The uid per-uid limits count this caller's use against."""
        return self.uid if self.charged_uid is None else self.charged_uid

    @property
    def privileged(self) -> bool:
        return self.transport != "unix" or self.uid == 0

    @property
    def owner_uid(self) -> int:
        """The uid records made by this caller belong to (0: the administrators')."""
        return self.uid if self.transport == "unix" and self.uid is not None else 0


_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("keeptime_caller")


def current_caller() -> Caller:
    """The caller of the RPC this thread is serving."""
    return _current.get()


def set_current_caller(caller: Caller) -> contextvars.Token:
    return _current.set(caller)


def reset_current_caller(token: contextvars.Token) -> None:
    _current.reset(token)


class Access:
    """Identifies callers from a gRPC context and applies the policy above."""

    def __init__(self, relay: Optional[CallerRelay], allowed_names: Iterable[str] = (),
                 confinement: Settings = Settings()):
        self.relay = relay
        self.allowed_names = frozenset(allowed_names)
        self.own_pidns = pidns.own()
        self.inheritance = Inheritance(confinement)

    def identify(self, context) -> Caller:
        """The caller of this call; PermissionDenied for a connection of unknown origin."""
        peer = context.peer()
        if peer.startswith("unix:"):
            credentials = self.relay.caller(peer) if self.relay else None
            if credentials is None:
                raise PermissionDenied("this connection did not come through keeptimed's socket")
            return self.caller_of(credentials, peer)
        auth = context.auth_context()
        if auth.get("transport_security_type") == [b"ssl"]:
            return Caller("tls", name=self._certificate_name(auth), pidns=self.own_pidns)
        return Caller("tcp-insecure", name=peer, pidns=self.own_pidns)

    def _certificate_name(self, auth: Mapping[str, list[bytes]]) -> str:
        """The name a TLS client is known by: its DNS subject alternative name
        that the allow-list holds (PermissionDenied when none does), or
        without an allow-list its first DNS name, else its common name."""
        # gRPC lists the SANs of type DNS alone as peer_dns, those of every
        # type together as x509_subject_alternative_name.
        dns_names = [name.decode(errors="replace") for name in auth.get("peer_dns", [])]
        if self.allowed_names:
            allowed = [name for name in dns_names if name in self.allowed_names]
            if not allowed:
                raise PermissionDenied(f"client certificate with DNS names {dns_names or '(none)'} is not in the "
                                       f"allow-list (names are matched against DNS subject alternative names only)")
            return allowed[0]
        common_names = [name.decode(errors="replace") for name in auth.get("x509_common_name", [])]
        return (dns_names or common_names or [""])[0]

    def pids(self, caller: Caller) -> pidns.View:
        """How the caller's pids map to keeptimed's; FailedPrecondition when
        keeptimed cannot tell which pid namespace the caller is in."""
        if caller.pidns is None:
            raise FailedPrecondition(
                f"keeptimed cannot tell the pid namespace of the calling process (SO_PEERCRED pid "
                f"{caller.pid or 0}: it is not visible in keeptimed's pid namespace, it exited, or reading its "
                "/proc/PID/ns/pid needs CAP_SYS_PTRACE), so the pids of this call have no meaning; call from "
                "keeptimed's pid namespace or one below it"
            )
        return pidns.View(caller.pidns, self.own_pidns)

    @contextlib.contextmanager
    def started_for(self, caller: Caller, view: pidns.View) -> Iterator[tuple[Optional[int], Inherited, dict]]:
        """Where a program started for caller goes: an open descriptor of the
        caller's pid namespace (None: keeptimed's), what the program takes
        from the calling process (confine.py), and remarks for the log. The
        process is needed for a non-root caller and for one in another pid
        namespace; FailedPrecondition when it is gone."""
        pidfd = self.relay.caller_pidfd(caller.peer) if self.relay is not None and caller.peer else None
        required = not caller.privileged or not view.same
        with calling_process(caller.pid, pidfd, required) as proc:
            pidns_fd = None if view.same else _pid_namespace(proc, view, caller)
            try:
                with self.inheritance.for_program(caller.privileged, proc, caller.pid) as (inherited, remarks):
                    yield pidns_fd, inherited, remarks
            finally:
                if pidns_fd is not None:
                    os.close(pidns_fd)

    @staticmethod
    def caller_of(credentials, peer: str = "") -> Caller:
        """The caller behind a unix connection with these peer credentials
        (and the name gRPC gives it)."""
        return Caller("unix", credentials.pid, credentials.uid, credentials.gid, credentials.program,
                      credentials.pidns, peer, credentials.charged_uid)

    @staticmethod
    def check_rpc(caller: Caller, rpc_name: str) -> None:
        if not caller.privileged and rpc_name not in UNPRIVILEGED_RPCS:
            raise PermissionDenied(f"{rpc_name} needs root")

    @staticmethod
    def check_owns(caller: Caller, pids: Mapping[int, int]) -> None:
        """Every process must run entirely as the caller (real, effective,
        saved and fs uid). pids maps keeptimed's pid of each process to the
        pid the caller knows it by (for the message)."""
        if caller.privileged:
            return
        for host_pid, pid in pids.items():
            uids = _uids_of(host_pid, pid)
            if any(uid != caller.uid for uid in uids):
                raise PermissionDenied(f"pid {pid} does not belong to uid {caller.uid}")

    @staticmethod
    def record_owner(caller: Caller) -> Optional[int]:
        """Whose records the caller may see: None means every record."""
        return None if caller.privileged else caller.uid

    @staticmethod
    def confine(caller: Caller, spec: ExecSpec, requested_uid: Optional[int],
                requested_gid: Optional[int]) -> ExecSpec:
        """The program a non-root caller asked for, run as that caller and nothing more."""
        if caller.privileged:
            return spec
        if requested_uid not in (None, caller.uid) or requested_gid not in (None, caller.gid):
            raise PermissionDenied(f"uid {caller.uid} may only run programs as itself")
        return replace(spec, uid=caller.uid, gid=caller.gid, groups=_groups_of(caller),
                       no_new_privs=True)


def _pid_namespace(proc: int, view: pidns.View, caller: Caller) -> int:
    """An open descriptor of the pid namespace of the calling process (its
    open /proc directory), which must still be the one it connected from."""
    try:
        fd = os.open("ns/pid", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    except OSError:
        fd = None
    if fd is not None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (view.namespace.dev, view.namespace.inode):
            return fd
        os.close(fd)
    raise FailedPrecondition(
        f"the calling process (pid {caller.pid} to keeptimed) exited or left its pid namespace, "
        "so keeptimed cannot start a process there"
    )


def _uids_of(host_pid: int, pid: int) -> list[int]:
    try:
        with open(f"/proc/{host_pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return [int(value) for value in line.split()[1:5]]
    except FileNotFoundError:
        raise NotFound(f"no process with pid {pid}") from None
    raise NotFound(f"no process with pid {pid}")


def _groups_of(caller: Caller) -> list[int]:
    """The caller's groups as a login would give them; its primary gid alone if unknown."""
    try:
        name = pwd.getpwuid(caller.uid).pw_name
    except KeyError:
        return [caller.gid]
    return sorted(set(os.getgrouplist(name, caller.gid)))
