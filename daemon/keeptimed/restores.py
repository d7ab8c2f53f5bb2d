"""Verdicts on CRIU restores: verify a restored tree, store the event, count
it and log a regression loudly. Shared by the VerifyRestore RPC and the CRIU
hook keeptimed serves; a restore that could not be checked is stored as
unverified, never as verified."""
import logging
from typing import Optional

from keeptime.v1 import keeptime_pb2 as pb

from . import verify
from .hostclock import HostClock
from .metrics import KeeptimeMetrics
from .policies import Clocks
from .store import ROOT_UID, RecordStore
from .wire import POLICY_ENUMS

log = logging.getLogger("keeptimed.rpc")
# post-resume looks again at the restore post-restore saw: it is stored and
# logged, but not counted a second time.
SECOND_LOOK = "post-resume"


class Restores:
    """Verifies restored trees and keeps the verdicts."""

    def __init__(self, store: RecordStore, host: HostClock, metrics: KeeptimeMetrics):
        self.store = store
        self.host = host
        self.metrics = metrics

    def verified(self, tree: pb.Record, record_id: str, dumped: Clocks, dumped_record: Optional[pb.Record],
                 policy: str, stage: str, owner_uid: int) -> pb.RestoreEvent:
        """The verdict on tree (read by verify.restored_tree), stored for owner_uid."""
        event = verify.verify(tree, record_id, dumped, dumped_record)
        event.verdict = pb.VERDICT_CONTINUOUS if event.ok else pb.VERDICT_REGRESSED
        event.policy = POLICY_ENUMS[policy]
        event.stage = stage
        event.owner_uid = owner_uid
        event.id = self.store.add_restore(event, owner_uid)
        first_look = stage != SECOND_LOOK
        if first_look:
            self.metrics.observe_restore(policy, "criu")
        if not event.ok:
            for clock in ("monotonic", "boottime"):
                if getattr(event.clocks, f"{clock}_ns") < getattr(event.dumped, f"{clock}_ns"):
                    detail = f"record {record_id or '(none)'}, pid {tree.root_pid}, {stage}: {event.message}"
                    if owner_uid == ROOT_UID:
                        self.regression(clock, detail, count=first_look)
                    else:
                        self._unprivileged_regression(clock, detail, owner_uid, count=first_look)
        return event

    def _unprivileged_regression(self, clock: str, detail: str, owner_uid: int, count: bool) -> None:
        """A regression a non-root caller reported on its own record: the
        dumped values are the caller's to choose, so it is counted apart from
        keeptime_clock_regressions_total, which must stay 0."""
        if count:
            self.metrics.unprivileged_regression(clock)
        log.warning("clock regression reported by uid %d on its own restore: %s", owner_uid, detail,
                    extra={"fields": {"clock": clock, "owner_uid": owner_uid}})

    def unverified(self, record_id: str, pid: int, policy: Optional[str], stage: str, why: str,
                   owner_uid: int) -> pb.RestoreEvent:
        """Store and count a restore keeptime could not check; why says what stopped it."""
        event = pb.RestoreEvent(
            record_id=record_id, pid=pid, policy=POLICY_ENUMS[policy] if policy else pb.POLICY_UNSPECIFIED,
            stage=stage, ok=False, verdict=pb.VERDICT_UNVERIFIED, realtime_ns=self.host.now().realtime_ns,
            message=f"unverified: {why}", owner_uid=owner_uid,
        )
        event.id = self.store.add_restore(event, owner_uid)
        self.metrics.unverified_restore(stage)
        log.warning("unverified restore: %s", why,
                    extra={"fields": {"record": record_id, "pid": pid, "stage": stage}})
        return event

    def regression(self, clock: str, detail: str, count: bool = True) -> None:
        """Count (unless count is False) and log a clock regression."""
        if count:
            self.metrics.regression(clock)
        log.error("clock regression on restore: %s", detail, extra={"fields": {"clock": clock}})
