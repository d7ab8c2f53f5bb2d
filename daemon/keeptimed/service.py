"""The keeptime.v1.Keeptime gRPC service: requests in, domain calls, responses out.

Handlers stay thin: validation and work live in the domain modules, which
raise KeeptimeError subclasses; calls.rpc turns those into gRPC statuses
and logs one line per call.
"""
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Iterator, Optional

from keeptime.v1 import keeptime_pb2 as pb
from keeptime.v1 import keeptime_pb2_grpc as pb_grpc

from . import (__version__, caps, checkpoint, commands, criu, door, fdlimit, native, paging, pidns, procfs, recordfile,
               timens, verify)
from .access import Access, Caller, current_caller
from .admission import Admission
from .calls import note, rpc
from .children import Children
from .errors import Cancelled, DeadlineExceeded, InvalidArgument, KeeptimeError, NotFound
from .hostclock import HostClock
from .limits import Limits
from .metrics import KeeptimeMetrics
from .policies import Clocks, RestorePlan, plan_restore
from .restores import Restores
from .store import RecordStore
from .wire import (DOWNTIME_SOURCES, MECHANISM_ENUMS, OFFSET_ABI_ENUMS, POLICY_ENUMS, POLICY_NAMES, checkpointed,
                   clock_values, offsets)

log = logging.getLogger("keeptimed.rpc")


def _positive_pid(pid: int) -> int:
    if pid <= 0:
        raise InvalidArgument(f"pid must be a positive integer, got {pid}")
    return pid


@dataclass(frozen=True)
class About:
    """What GetInfo reports about the daemon itself, fixed at startup."""

    config_path: str = ""
    config_file_loaded: bool = False
    socket_path: str = ""
    db_path: str = ""
    metrics_address: str = ""       # as bound; empty when off
    started_realtime_ns: int = 0


class KeeptimeService(pb_grpc.KeeptimeServicer):
    """The daemon's API; one instance serves every connection."""

    def __init__(self, store: RecordStore, host: HostClock, children: Children, access: Access,
                 metrics: KeeptimeMetrics, default_policy: str = "suspend", about: About = About(),
                 admission: Optional[Admission] = None):
        self.store = store
        self.admission = admission or Admission(Limits.defaults())
        self.host = host
        self.children = children
        self.access = access
        self.metrics = metrics
        self.default_policy = default_policy
        self.about = about
        self.restores = Restores(store, host, metrics)

    # -- helpers -----------------------------------------------------------

    def _policy(self, value: int) -> str:
        if value == pb.POLICY_UNSPECIFIED:
            return self.default_policy
        if value not in POLICY_NAMES:
            raise InvalidArgument(f"unknown policy {value}; expected one of freeze, suspend, elapsed")
        return POLICY_NAMES[value]

    def _plan(self, record: pb.Record, policy_value: int) -> RestorePlan:
        return plan_restore(self._policy(policy_value), checkpointed(record), self.host.now())

    def _record(self, ref: pb.RecordRef) -> pb.Record:
        """The record a RecordRef names: from the store, or decoded from its bytes."""
        which = ref.WhichOneof("ref")
        if which == "record_id":
            return self.store.get(ref.record_id, self._owner())
        if which == "record_file":
            return recordfile.accept(ref.record_file)
        raise InvalidArgument("no record given: set record_id or record_file")

    @staticmethod
    def _plan_message(record_id: str, plan: RestorePlan) -> pb.Plan:
        return pb.Plan(
            record_id=record_id,
            policy=POLICY_ENUMS[plan.policy],
            recorded=clock_values(plan.recorded),
            targets=clock_values(plan.targets),
            offsets=offsets(plan.offsets),
            host_clocks=clock_values(plan.host.clocks),
            realtime_ns=plan.host.realtime_ns,
            downtime_ns=plan.downtime_ns,
            downtime_source=DOWNTIME_SOURCES[plan.downtime_source],
            same_boot=plan.same_boot,
            same_host=plan.same_host,
            explanation=plan.explanation,
        )

    # -- RPCs ----------------------------------------------------------------

    def _owner(self):
        """Whose records this call may see (None: all of them)."""
        return self.access.record_owner(current_caller())

    def _command_spec(self, command: pb.Command) -> "native.ExecSpec":
        """The validated program, confined to the caller's own identity where the policy says so."""
        return self.access.confine(
            current_caller(), commands.exec_spec(command),
            command.uid if command.HasField("uid") else None,
            command.gid if command.HasField("gid") else None,
        )

    def _target(self, pid: int) -> tuple[pidns.View, pidns.Target]:
        """The caller's pid view and the process it calls pid (NotFound when none)."""
        view = self.access.pids(current_caller())
        return view, view.resolve(_positive_pid(pid))

    def _check_owns_tree(self, caller: Caller, tree: checkpoint.Tree) -> None:
        self.access.check_owns(caller, dict(zip(tree.host_pids, (p.pid for p in tree.record.processes))))

    @contextlib.contextmanager
    def _started_for_caller(self, view: pidns.View) -> Iterator[tuple[Optional[int], native.Inherited]]:
        """The caller's pid namespace (an open descriptor; None for
        keeptimed's) and what its program takes from the calling process."""
        with self.access.started_for(current_caller(), view) as (pidns_fd, inherited, remarks):
            note(**remarks)
            yield pidns_fd, inherited

    @rpc
    def Checkpoint(self, request, context):
        caller = current_caller()
        view, target = self._target(request.pid)
        self.access.check_owns(caller, {target.host_pid: target.pid})
        tree = checkpoint.checkpoint(target, self.host, dict(request.labels), view)
        self._check_owns_tree(caller, tree)
        record = tree.record
        self.store.add(record, caller.owner_uid)
        note(record=record.id, processes=len(record.processes))
        return pb.CheckpointResponse(record=record)

    @rpc
    def Plan(self, request, context):
        record = self.store.get(request.record_id, self._owner())
        note(record=record.id)
        return pb.PlanResponse(plan=self._plan_message(record.id, self._plan(record, request.policy)))

    @rpc
    def Restore(self, request, context):
        record = self.store.get(request.record_id, self._owner())
        plan = self._plan(record, request.policy)
        note(record=record.id, policy=plan.policy)
        spec = self._command_spec(request.command)
        view = self.access.pids(current_caller())
        with self._starting(current_caller()), self._started_for_caller(view) as (pidns_fd, inherited):
            try:
                spawned = native.spawn_in_new_timens(spec, plan.targets, self.host.own_offsets, pidns_fd, inherited)
            except native.NativeError as exc:
                if exc.step == "verify clocks":
                    self._regression("unknown", "the restored program read a clock below its target before exec")
                raise commands.spawn_error(exc, spec) from None
            # The program runs: from here on nothing fails, the caller gets its pid.
            host_after_exec = self.host.now().clocks  # first thing: the measured step grows with every delay
            pid = self._adopt(view, spawned.pid)
        self._check_restored_clocks(plan, spawned, host_after_exec)
        note(child_pid=spawned.pid, mechanism=spawned.mechanism)
        return pb.RestoreResponse(
            pid=pid,
            offsets=offsets(spawned.offsets),
            mechanism=MECHANISM_ENUMS[spawned.mechanism],
            timens_inode=spawned.timens_inode,
            plan=self._plan_message(record.id, plan),
        )

    def _starting(self, caller: Caller):
        """A place for one more process started for caller (a context to
        start and adopt it in); LimitExceeded past the caller's limits."""
        if caller.privileged:
            return self.children.starting(caller.owner_uid, None)
        fdlimit.check_user_headroom()
        return self.children.starting(caller.uid, self.admission.limits.user_processes)

    def _adopt(self, view: pidns.View, host_pid: int) -> int:
        """Track a process started for the caller; its pid in the caller's namespace."""
        # Read before the reaper may reap it: until then even an exited child keeps its pids.
        pid = view.to_caller(host_pid)
        self.children.adopt(host_pid, current_caller().owner_uid, None if view.same else (view.namespace, pid))
        view.remember(pid, host_pid)
        return pid

    def _check_restored_clocks(self, plan: RestorePlan, spawned: native.Spawned, host_after_exec: Clocks) -> None:
        """Measure how far above its targets the restored namespace's clocks
        were when keeptimed saw the exec succeed (host clock then + offsets
        written), and count a regression if a target is below the record or a
        clock below its target -- neither can happen while the policies hold."""
        self.metrics.observe_restore(plan.policy, spawned.mechanism)
        seen = host_after_exec + spawned.offsets
        jumps = {}
        for clock, recorded, target, value in (
            ("monotonic", plan.recorded.monotonic_ns, plan.targets.monotonic_ns, seen.monotonic_ns),
            ("boottime", plan.recorded.boottime_ns, plan.targets.boottime_ns, seen.boottime_ns),
        ):
            if target < recorded or value < target:
                self._regression(clock, f"recorded {recorded} ns, target {target} ns, restored clock read {value} ns")
                continue
            self.metrics.observe_clock_jump(clock, (value - target) / 1e9)
            jumps[f"{clock}_jump_us"] = round((value - target) / 1e3, 1)
        note(**jumps)

    def _regression(self, clock: str, detail: str) -> None:
        self.restores.regression(clock, detail)

    def _started(self, view: pidns.View, pid: int) -> int:
        """keeptimed's pid of the process the caller calls pid, if keeptimed started it."""
        if view.same:
            return pid
        host_pid = self.children.started_as((view.namespace, pid))
        if host_pid is None:   # started for someone else: found while it runs
            try:
                host_pid = view.resolve(pid).host_pid
            except NotFound:
                host_pid = None
        if host_pid is None or self.children.owner_of(host_pid) is None:
            raise NotFound(f"pid {pid} was not started by this keeptimed, or it exited too long ago")
        return host_pid

    @rpc
    def Wait(self, request, context):
        pid = _positive_pid(request.pid)
        caller = current_caller()
        host_pid = self._started(self.access.pids(caller), pid)
        if not caller.privileged and self.children.owner_of(host_pid) != caller.uid:
            raise NotFound(f"pid {pid} was not started by keeptimed for uid {caller.uid}")
        status = self.children.wait(host_pid, timeout=0)
        if status is None:
            # A blocked Wait holds a worker thread: capped, so waiting
            # callers can never starve everyone else of workers.
            with self.admission.waiting(caller):
                status = self.children.wait(host_pid, timeout=context.time_remaining(), still_wanted=context.is_active)
        if status is None:
            if not context.is_active():
                raise Cancelled("the call was cancelled")
            raise DeadlineExceeded(f"pid {pid} is still running")
        return pb.WaitResponse(
            pid=pid, exit_code=status.exit_code, signal=status.signal, status=status.shell_status
        )

    @rpc
    def GetRecord(self, request, context):
        record = self.store.get(request.record_id, self._owner())
        note(record=record.id)
        return record

    @rpc
    def ListRecords(self, request, context):
        size = paging.page_size(request.page_size)
        after = paging.parse_record_token(request.page_token)
        response = pb.ListRecordsResponse()
        rows, more = self.store.list(self._owner(), after=after, limit=size, max_bytes=paging.MAX_PAGE_BYTES)
        if more:
            response.next_page_token = paging.record_token(*rows[-1][0])
        for (_, record_id, owner_uid), record in rows:
            if isinstance(record, KeeptimeError):
                response.records.add(id=record_id, owner_uid=owner_uid, error=record.message)
                continue
            # Stored before keeptimed limited sizes: summarized without what
            # could make a page too large for one message.
            too_large = door.problem(record, "record.")
            if too_large:
                response.records.add(id=record_id, owner_uid=owner_uid, root_pid=record.root_pid,
                                     realtime_ns=record.realtime_ns, process_count=len(record.processes),
                                     error=f"not summarized, it breaks a size limit ({too_large}): GetRecord shows it")
                continue
            response.records.add(
                owner_uid=owner_uid,
                id=record.id,
                root_pid=record.root_pid,
                clocks=record.clocks,
                realtime_ns=record.realtime_ns,
                boot_id=record.boot_id,
                hostname=record.hostname,
                process_count=len(record.processes),
                namespace_count=len(record.namespaces),
                labels=record.labels,
                source=record.source,
            )
        return response

    @rpc
    def DeleteRecord(self, request, context):
        record_id = self.store.delete(request.record_id, self._owner())
        note(record=record_id)
        return pb.DeleteRecordResponse(record_id=record_id)

    @rpc
    def Clocks(self, request, context):
        _, target = self._target(request.pid)
        self.access.check_owns(current_caller(), {target.host_pid: target.pid})
        return checkpoint.clocks_of(target, self.host)

    @rpc
    def Exec(self, request, context):
        view, target = self._target(request.pid)
        pid = target.pid
        self.access.check_owns(current_caller(), {target.host_pid: pid})
        spec = self._command_spec(request.command)
        with self._starting(current_caller()):
            try:
                pidfd = os.pidfd_open(target.host_pid)
            except ProcessLookupError:
                raise NotFound(f"no process with pid {pid}") from None
            try:
                # The pidfd holds the process: is it still the one the caller named?
                if view.to_caller(target.host_pid) != pid:
                    raise ProcessLookupError(pid)
                if procfs.read_stat(target.host_pid).is_kernel_thread:
                    raise InvalidArgument(f"pid {pid} is a kernel thread")
                namespace = timens.namespace_of(target.host_pid)
                with self._started_for_caller(view) as (pidns_fd, inherited):
                    spawned = native.spawn_in_timens_of(spec, pidfd, pidns_fd, inherited)
            except ProcessLookupError:
                raise NotFound(f"no process with pid {pid}") from None
            except native.NativeError as exc:
                raise commands.spawn_error(exc, spec) from None
            finally:
                os.close(pidfd)
            child_pid = self._adopt(view, spawned.pid)
        note(child_pid=spawned.pid, timens=namespace.inode)
        return pb.ExecResponse(
            pid=child_pid,
            timens_inode=namespace.inode,
            offsets=offsets(namespace.offsets),
            mechanism=MECHANISM_ENUMS[spawned.mechanism],
        )

    @rpc
    def ExportRecord(self, request, context):
        record_id, data = self.store.export(request.record_id, self._owner())
        note(record=record_id)
        return pb.ExportRecordResponse(record_id=record_id, data=data)

    @rpc
    def ImportRecord(self, request, context):
        if not request.data:
            raise InvalidArgument("no record data given")
        record = recordfile.accept(request.data)
        self.store.add(record, current_caller().owner_uid)
        note(record=record.id)
        return pb.ImportRecordResponse(record=record)

    @rpc
    def GetInfo(self, request, context):
        a = self.about
        # keeptimed is never inside a caller's other pid namespace: its pid there is 0.
        own_pid = os.getpid() if current_caller().pidns == self.access.own_pidns else 0
        return pb.GetInfoResponse(
            version=__version__,
            pid=own_pid,
            started_realtime_ns=a.started_realtime_ns,
            kernel_release=os.uname().release,
            time_namespaces=procfs.has_time_namespaces(),
            max_time_namespaces=procfs.max_time_namespaces(),
            offset_abi=OFFSET_ABI_ENUMS[native.offset_abi_supported()],
            capabilities=caps.effective(),
            missing_capabilities=[
                pb.MissingCapability(name=n.name, needed_for=n.needed_for, blocking=n.blocking)
                for n in caps.missing()
            ],
            record_count=self.store.count(),
            children_running=len(self.children.running()),
            config_path=a.config_path,
            config_file_loaded=a.config_file_loaded,
            socket_path=a.socket_path,
            db_path=a.db_path,
            metrics_address=a.metrics_address,
            default_policy=POLICY_ENUMS[self.default_policy],
            timens_inode=self.host.own_timens_inode,
            host_time_namespace=self.host.own_timens_inode == procfs.INITIAL_TIMENS_INODE,
            hostname=socket.gethostname(),
            boot_id=self.host.boot_id,
        )

    @rpc
    def CheckpointCriuImage(self, request, context):
        record = criu.record_from_image(request.timens_image, request.root_pid, self.host, dict(request.labels))
        self.store.add(record, current_caller().owner_uid)
        note(record=record.id, root_pid=request.root_pid)
        return pb.CheckpointResponse(record=record)

    @rpc
    def PlanCriuRestore(self, request, context):
        record = self._record(request.record)
        data, plan = criu.plan_image(
            checkpointed(record), request.timens_image, self._policy(request.policy), self.host.now()
        )
        note(record=record.id, policy=plan.policy)
        return pb.PlanCriuRestoreResponse(timens_image=data, plan=self._plan_message(record.id, plan))

    @rpc
    def VerifyRestore(self, request, context):
        record = self._record(request.record)
        caller = current_caller()
        if not caller.privileged and request.record.WhichOneof("ref") == "record_file":
            # A verdict is kept under its record's id: it must be one of the caller's own records.
            record = self.store.get(record.id, caller.uid)
        view, target = self._target(request.pid)
        pid = target.pid
        self.access.check_owns(caller, {target.host_pid: pid})
        policy = self._policy(request.policy)
        if request.timens_image:
            dumped = criu.timens_clocks(request.timens_image)
        else:
            dumped = Clocks(record.clocks.monotonic_ns, record.clocks.boottime_ns)
        tree = verify.restored_tree(target, self.host, view)
        self._check_owns_tree(caller, tree)
        event = self.restores.verified(tree.record, record.id, dumped, record, policy, request.stage,
                                       caller.owner_uid)
        note(record=record.id, stage=request.stage, ok=event.ok)
        return pb.VerifyRestoreResponse(event=event)

    @rpc
    def ListRestores(self, request, context):
        size = paging.page_size(request.page_size)
        after = paging.parse_restore_token(request.page_token)
        events, more = paging.one_page(
            self.store.list_restores(request.record_id, self._owner(), after=after, limit=size + 1), size,
            weight=lambda event: paging.RESTORE_EVENT_BYTES + len(event.message))
        response = pb.ListRestoresResponse(events=events)
        if more:
            response.next_page_token = str(events[-1].id)
        return response
