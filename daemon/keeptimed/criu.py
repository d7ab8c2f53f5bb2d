"""CRIU's timens-0.img: records made from it, and its rewrite to a policy.

CRIU reads the dumped tree's clocks inside its time namespace late in the
dump and writes them to timens-0.img; at restore it creates a time namespace
whose clocks resume at the image's values (freeze). keeptime imposes another
policy by rewriting the image before CRIU reads it: the recorded clocks are
the image's (the frozen tree could not read later values), the downtime is
measured from the record by the policy functions.
"""
from dataclasses import replace
from typing import Optional

from keeptime.criu import image
from keeptime.recordfile import new_record_id
from keeptime.v1 import keeptime_pb2 as pb

from .errors import DataLoss, FailedPrecondition, Internal, InvalidArgument
from .hostclock import HostClock
from .policies import FREEZE, Checkpointed, Clocks, HostNow, RestorePlan, plan_restore

SOURCE = "criu-image"


def timens_clocks(data: bytes) -> Clocks:
    """The clocks in timens-0.img bytes; damage is DataLoss."""
    if not data:
        raise InvalidArgument(f"no {image.TIMENS_IMAGE} given")
    try:
        clocks = image.decode_timens(data)
    except image.ImageError as exc:
        raise DataLoss(str(exc)) from None
    return Clocks(clocks.monotonic_ns, clocks.boottime_ns)


def record_from_image(data: bytes, root_pid: int, host: HostClock,
                      labels: Optional[dict[str, str]] = None) -> pb.Record:
    """A record whose clocks are the image's; realtime, host clocks and boot_id are now's."""
    if root_pid < 0:
        raise InvalidArgument(f"root pid must not be negative, got {root_pid}")
    clocks = timens_clocks(data)
    if clocks.boottime_ns < clocks.monotonic_ns:
        raise DataLoss(f"{image.TIMENS_IMAGE}: BOOTTIME is below MONOTONIC")
    now = host.now()
    record = pb.Record(
        id=new_record_id(),
        root_pid=root_pid,
        realtime_ns=now.realtime_ns,
        boot_id=now.boot_id,
        hostname=now.hostname,
        labels=labels or {},
        source=SOURCE,
    )
    record.clocks.monotonic_ns, record.clocks.boottime_ns = clocks.monotonic_ns, clocks.boottime_ns
    record.host_clocks.monotonic_ns = now.clocks.monotonic_ns
    record.host_clocks.boottime_ns = now.clocks.boottime_ns
    return record


def plan_image(ckpt: Checkpointed, data: bytes, policy: str, now: HostNow) -> tuple[bytes, RestorePlan]:
    """(the timens-0.img CRIU should read, the plan) for restoring ckpt's dump.

    ckpt comes from the record; data is CRIU's original image. The record
    was taken at or after the image was written (post-dump), so its clocks
    cannot be below the image's: if they are, the record belongs to another
    dump and its downtime would be wrong.
    """
    dumped = timens_clocks(data)
    if ckpt.clocks.monotonic_ns < dumped.monotonic_ns or ckpt.clocks.boottime_ns < dumped.boottime_ns:
        raise FailedPrecondition(
            f"the record's clocks are below {image.TIMENS_IMAGE}'s: the record was taken before this "
            f"dump (a stale keeptime record file?)"
        )
    plan = plan_restore(policy, replace(ckpt, clocks=dumped), now)
    plan = replace(plan, explanation=f"{plan.explanation}; recorded clocks from CRIU's {image.TIMENS_IMAGE}")
    if plan.targets.monotonic_ns < dumped.monotonic_ns or plan.targets.boottime_ns < dumped.boottime_ns:
        raise Internal(f"planned targets below the dumped clocks under {policy}")  # policies forbid it
    if policy == FREEZE:
        return data, plan  # CRIU's own behaviour: the image as CRIU wrote it
    return image.encode_timens(image.TimensClocks(plan.targets.monotonic_ns, plan.targets.boottime_ns)), plan
