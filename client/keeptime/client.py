"""keeptime.Client: a typed Python client for keeptimed.

    from keeptime import Client
    with Client() as kt:
        record_id = kt.checkpoint(1234)
        restored = kt.restore(record_id, ["my-server", "--resume"], policy="suspend")
        status = kt.wait(restored.pid)

What calls return, by one rule: a call that creates or deletes a record
returns its id (checkpoint, checkpoint_criu_image, import_record, delete);
get() returns the whole record (checkpoint_record() is checkpoint() returning
it in the same call); restore() and exec() return a RestoreResult or
ExecResult; every other call returns the API's message for what it asked
(keeptime.v1.keeptime_pb2: Plan, RecordSummary, ClocksResponse, ...), a
dataclass of this module, or a plain value.

Every failed call raises a keeptime.errors.KeeptimeError subclass.
"""
import os
import random
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Optional, Sequence

import grpc

from . import errors
from .limits import BUSY_TRAILER, CHANNEL_OPTIONS
from .defaults import DEFAULT_SOCKET, POLICIES, SOCKET_ENV
from .v1 import keeptime_pb2 as pb
from .v1 import keeptime_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT = 30.0
WAIT_SLICE = 60.0
# A call keeptimed refused before it began, its caller's places all taken, is
# sent again after growing pauses (10 ms, at most 200 ms, each shortened by a
# random part) for up to 2 s in all, while at least 0.25 s of its deadline is left.
BUSY_PATIENCE = 2.0
BUSY_FIRST_PAUSE, BUSY_MAX_PAUSE = 0.01, 0.2
BUSY_MIN_LEFT = 0.25
POLICY_ENUMS = {"freeze": pb.POLICY_FREEZE, "suspend": pb.POLICY_SUSPEND, "elapsed": pb.POLICY_ELAPSED}
MECHANISM_NAMES = {
    pb.MECHANISM_CLONE3_TIMENS_OFFSET: "clone3-timens-offset",
    pb.MECHANISM_UNSHARE_PROC_OFFSETS: "unshare-proc-offsets",
    pb.MECHANISM_SETNS: "setns",
}


@dataclass(frozen=True)
class RestoreResult:
    """A restored process. The offsets are those written into its time
    namespace, computed from the host clock at the last moment; plan is the
    plan the restore followed: its targets are what the clocks started at, and
    its offsets are only what they would have been at plan.host_clocks."""

    pid: int
    monotonic_offset_ns: int
    boottime_offset_ns: int
    mechanism: str          # "unshare-proc-offsets" or "clone3-timens-offset"
    timens_inode: int
    plan: pb.Plan


@dataclass(frozen=True)
class ExecResult:
    """A process started in a live process's time namespace, and that namespace's offsets."""

    pid: int
    monotonic_offset_ns: int
    boottime_offset_ns: int
    mechanism: str          # "setns"
    timens_inode: int


@dataclass(frozen=True)
class CriuRestorePlan:
    """The time namespace image CRIU should read, and the plan it follows."""

    timens_image: bytes     # the timens-0.img CRIU should read
    plan: pb.Plan


@dataclass(frozen=True)
class ExitStatus:
    """How a process started by restore or exec ended."""

    pid: int
    exit_code: int          # meaningful when signal == 0
    signal: int
    status: int             # shell convention: exit_code or 128 + signal


def _policy(policy: Optional[str]) -> int:
    if policy is None:
        return pb.POLICY_UNSPECIFIED
    if policy not in POLICY_ENUMS:
        raise errors.InvalidArgument(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    return POLICY_ENUMS[policy]


def _record_ref(record_id: Optional[str], record_file: Optional[bytes]) -> pb.RecordRef:
    if (record_id is None) == (record_file is None):
        raise errors.InvalidArgument("give exactly one of record_id and record_file")
    return pb.RecordRef(record_id=record_id) if record_id is not None else pb.RecordRef(record_file=record_file)


def _command(argv: Sequence[str], env: Optional[Mapping[str, str] | Iterable[str]], cwd: Optional[str],
             uid: Optional[int], gid: Optional[int], stdin: Optional[str], stdout: Optional[str],
             stderr: Optional[str]) -> pb.Command:
    if isinstance(argv, (str, bytes)):
        raise errors.InvalidArgument("argv must be a list of strings, not a single string")
    if isinstance(env, Mapping):
        env_list = [f"{key}={value}" for key, value in env.items()]
    else:
        env_list = list(env or [])
    command = pb.Command(
        argv=list(argv), env=env_list, cwd=cwd or "",
        stdin_path=stdin or "", stdout_path=stdout or "", stderr_path=stderr or "",
    )
    if uid is not None:
        command.uid = uid
    if gid is not None:
        command.gid = gid
    return command


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class Client:
    """A connection to keeptimed: its unix socket, or TCP with mutual TLS.

    Client(socket=None) uses the unix socket (KEEPTIME_SOCKET, else
    /run/keeptime/keeptime.sock). Client(address="host:port", tls_ca=...,
    tls_cert=..., tls_key=...) talks to a keeptimed started with --tcp;
    the paths are PEM files: the CA that signed the daemon's certificate and
    this client's certificate and key. Every call has a deadline (timeout).
    """

    def __init__(self, socket: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                 address: Optional[str] = None, tls_ca: Optional[str] = None,
                 tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 tls_server_name: Optional[str] = None):
        self.timeout = timeout
        if address:
            self.socket = address
            options = [*CHANNEL_OPTIONS, *([("grpc.ssl_target_name_override", tls_server_name)]
                                           if tls_server_name else [])]
            if not (tls_ca and tls_cert and tls_key):
                raise errors.InvalidArgument("TCP needs tls_ca, tls_cert and tls_key (keeptimed requires mutual TLS)")
            credentials = grpc.ssl_channel_credentials(_read(tls_ca), _read(tls_key), _read(tls_cert))
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.socket = socket or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
            self._channel = grpc.insecure_channel(f"unix:{os.path.abspath(self.socket)}", options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.KeeptimeStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, request, timeout: Optional[float] = -1.0, stub=None):
        """One call; one refused before it began for want of a free place
        (keeptimed's BUSY_TRAILER) is sent again for up to BUSY_PATIENCE
        seconds within its deadline, then reported as refused."""
        timeout = self.timeout if timeout == -1.0 else timeout
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        give_up = now + BUSY_PATIENCE
        pause = BUSY_FIRST_PAUSE
        while True:
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                return getattr(stub or self._stub, method)(request, timeout=left)
            except grpc.RpcError as exc:
                pause = random.uniform(pause / 2, pause)   # clients refused together do not return together
                resend_at = time.monotonic() + pause
                # Sent again only with time to run: a call that began but missed its
                # deadline would be a worse answer than the refusal.
                if not (_refused_busy(exc) and resend_at < give_up
                        and (deadline is None or deadline - resend_at >= BUSY_MIN_LEFT)):
                    raise errors.from_rpc_error(exc, self.socket) from None
            time.sleep(pause)
            pause = min(4 * pause, BUSY_MAX_PAUSE)

    # -- records ------------------------------------------------------------

    def checkpoint(self, pid: int, labels: Optional[Mapping[str, str]] = None) -> str:
        """Record the clocks of the process tree rooted at pid; returns the record id."""
        return self.checkpoint_record(pid, labels).id

    def checkpoint_record(self, pid: int, labels: Optional[Mapping[str, str]] = None) -> pb.Record:
        """Like checkpoint(), returning the whole record."""
        return self._call("Checkpoint", pb.CheckpointRequest(pid=pid, labels=dict(labels or {}))).record

    def get(self, record_id: str) -> pb.Record:
        """The whole record (an id or a unique prefix of 4 or more characters)."""
        return self._call("GetRecord", pb.GetRecordRequest(record_id=record_id))

    def list(self) -> list[pb.RecordSummary]:
        """Summaries of every record, oldest first (fetched page by page)."""
        return list(self.iter_records())

    def iter_records(self, page_size: int = 0) -> Iterator[pb.RecordSummary]:
        """Summaries of every record, oldest first, one page per call as needed."""
        for page in self._pages("ListRecords", pb.ListRecordsRequest(page_size=page_size)):
            yield from page.records

    def _pages(self, method: str, request) -> Iterator:
        """Every page of a paged List RPC, following next_page_token."""
        while True:
            page = self._call(method, request)
            yield page
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def delete(self, record_id: str) -> str:
        """Delete a record; returns its full id."""
        return self._call("DeleteRecord", pb.DeleteRecordRequest(record_id=record_id)).record_id

    def export_record(self, record_id: str) -> bytes:
        """The record as record-file bytes, for ImportRecord on another host."""
        return self._call("ExportRecord", pb.ExportRecordRequest(record_id=record_id)).data

    def import_record(self, data: bytes) -> str:
        """Store a record file (export_record's bytes, from any host); returns its id,
        the one it had where it was made. Importing it again changes nothing."""
        return self._call("ImportRecord", pb.ImportRecordRequest(data=data)).record.id

    # -- restore ------------------------------------------------------------

    def plan(self, record_id: str, policy: Optional[str] = None) -> pb.Plan:
        """What a restore would do now, without spawning anything."""
        return self._call("Plan", pb.PlanRequest(record_id=record_id, policy=_policy(policy))).plan

    def restore(self, record_id: str, argv: Sequence[str], policy: Optional[str] = None,
                env=None, cwd: Optional[str] = None, uid: Optional[int] = None,
                gid: Optional[int] = None, stdin: Optional[str] = None,
                stdout: Optional[str] = None, stderr: Optional[str] = None) -> RestoreResult:
        """Start argv in a new time namespace continuing the record's clocks.

        env is a mapping or "K=V" strings (nothing is inherited); stdin/stdout/
        stderr are paths (default /dev/null); cwd defaults to "/".
        """
        response = self._call("Restore", pb.RestoreRequest(
            record_id=record_id, policy=_policy(policy),
            command=_command(argv, env, cwd, uid, gid, stdin, stdout, stderr),
        ))
        return RestoreResult(
            pid=response.pid,
            monotonic_offset_ns=response.offsets.monotonic_ns,
            boottime_offset_ns=response.offsets.boottime_ns,
            mechanism=MECHANISM_NAMES.get(response.mechanism, "unknown"),
            timens_inode=response.timens_inode,
            plan=response.plan,
        )

    def exec(self, pid: int, argv: Sequence[str], env=None, cwd: Optional[str] = None,
             uid: Optional[int] = None, gid: Optional[int] = None, stdin: Optional[str] = None,
             stdout: Optional[str] = None, stderr: Optional[str] = None) -> ExecResult:
        """Start argv inside the time namespace of the live process pid."""
        response = self._call("Exec", pb.ExecRequest(
            pid=pid, command=_command(argv, env, cwd, uid, gid, stdin, stdout, stderr),
        ))
        return ExecResult(
            pid=response.pid,
            monotonic_offset_ns=response.offsets.monotonic_ns,
            boottime_offset_ns=response.offsets.boottime_ns,
            mechanism=MECHANISM_NAMES.get(response.mechanism, "unknown"),
            timens_inode=response.timens_inode,
        )

    def wait_status(self, pid: int, timeout: Optional[float] = None) -> ExitStatus:
        """Block until pid (started by restore or exec) exits; timeout None waits forever.

        Even an endless wait is made of calls with deadlines (WAIT_SLICE
        seconds each), so a daemon that vanishes is noticed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
            try:
                response = self._call("Wait", pb.WaitRequest(pid=pid), timeout=max(remaining, 0.001))
            except (errors.DeadlineExceeded, errors.ResourceExhausted) as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                if isinstance(exc, errors.ResourceExhausted):   # the daemon caps blocked Waits
                    time.sleep(0.2)
                continue
            return ExitStatus(response.pid, response.exit_code, response.signal, response.status)

    def wait(self, pid: int, timeout: Optional[float] = None) -> int:
        """The exit status of pid in shell convention (exit code, or 128 + signal)."""
        return self.wait_status(pid, timeout).status

    # -- live processes -----------------------------------------------------

    def clocks(self, pid: int) -> pb.ClocksResponse:
        """The clocks pid sees now, its time namespace and offsets."""
        return self._call("Clocks", pb.ClocksRequest(pid=pid))

    # -- the daemon itself ----------------------------------------------------

    def info(self) -> pb.GetInfoResponse:
        """Version, kernel support, privileges and configuration of keeptimed."""
        return self._call("GetInfo", pb.GetInfoRequest())

    def health(self, service: str = "") -> str:
        """grpc.health.v1 status of keeptimed ("" is the whole server): "SERVING",
        "NOT_SERVING" (e.g. shutting down), ..."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc   # here: most commands never need it

        reply = self._call("Check", health_pb2.HealthCheckRequest(service=service),
                           stub=health_pb2_grpc.HealthStub(self._channel))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    # -- CRIU ---------------------------------------------------------------

    def checkpoint_criu_image(self, timens_image: bytes, root_pid: int = 0,
                              labels: Optional[Mapping[str, str]] = None) -> str:
        """Record the clocks a CRIU dump saw, from its timens-0.img bytes; returns the record id."""
        return self._call("CheckpointCriuImage", pb.CheckpointCriuImageRequest(
            timens_image=timens_image, root_pid=root_pid, labels=dict(labels or {}),
        )).record.id

    def plan_criu_restore(self, timens_image: bytes, record_id: Optional[str] = None,
                          record_file: Optional[bytes] = None, policy: Optional[str] = None) -> CriuRestorePlan:
        """The timens-0.img that makes CRIU resume the dump under policy.

        timens_image is CRIU's original image; the record is named by id or
        given as record-file bytes (exactly one of them).
        """
        response = self._call("PlanCriuRestore", pb.PlanCriuRestoreRequest(
            record=_record_ref(record_id, record_file), timens_image=timens_image, policy=_policy(policy),
        ))
        return CriuRestorePlan(response.timens_image, response.plan)

    def verify_restore(self, pid: int, record_id: Optional[str] = None, record_file: Optional[bytes] = None,
                       policy: Optional[str] = None, timens_image: Optional[bytes] = None,
                       stage: str = "") -> pb.RestoreEvent:
        """Check that restored pid's clocks are not below the dumped ones; the
        daemon stores and returns the verdict (``.ok``, ``.message``)."""
        return self._call("VerifyRestore", pb.VerifyRestoreRequest(
            record=_record_ref(record_id, record_file), pid=pid, policy=_policy(policy),
            timens_image=timens_image or b"", stage=stage,
        )).event

    def restores(self, record_id: str = "") -> "list[pb.RestoreEvent]":
        """Stored restore events, oldest first; only one record's when given."""
        pages = self._pages("ListRestores", pb.ListRestoresRequest(record_id=record_id))
        return [event for page in pages for event in page.events]


def _refused_busy(exc: grpc.RpcError) -> bool:
    """Whether keeptimed refused the call before it began (its caller's places all taken)."""
    if not isinstance(exc, grpc.Call) or exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    return any(key == BUSY_TRAILER for key, _ in exc.trailing_metadata() or ())
