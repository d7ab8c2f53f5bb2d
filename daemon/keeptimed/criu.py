"""CRIU's time namespace image (timens-0.img, or timens-<id>.img for a tree
with a time namespace of its own): records made from it, and its rewrite to
a policy.

CRIU reads the dumped tree's clocks inside its time namespace late in the
dump and writes them to that image; at restore it creates a time namespace
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


def timens_clocks(data: bytes, name: str = image.TIMENS_IMAGE) -> Clocks:
    """The clocks in time namespace image bytes; damage is DataLoss.

    Any pair is accepted: inside a time namespace BOOTTIME may well be below
    MONOTONIC (the kernel allows any offsets)."""
    if not data:
        raise InvalidArgument(f"no {name} given")
    try:
        clocks = image.decode_timens(data, name)
    except image.ImageError as exc:
        raise DataLoss(str(exc)) from None
    return Clocks(clocks.monotonic_ns, clocks.boottime_ns)


def record_from_image(data: bytes, root_pid: int, host: HostClock,
                      labels: Optional[dict[str, str]] = None) -> pb.Record:
    """A record whose clocks are the image's; realtime, host clocks and boot_id are now's."""
    if root_pid < 0:
        raise InvalidArgument(f"root pid must not be negative, got {root_pid}")
    clocks = timens_clocks(data)
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


def plan_image(ckpt: Checkpointed, data: bytes, policy: str, now: HostNow,
               name: str = image.TIMENS_IMAGE) -> tuple[bytes, RestorePlan]:
    """(the time namespace image CRIU should read, the plan) for restoring ckpt's dump.

    ckpt comes from the record; data is CRIU's original image. The record
    was taken at or after the image was written (post-dump), so its clocks
    cannot be below the image's: if they are, the record belongs to another
    dump and its downtime would be wrong.
    """
    dumped = timens_clocks(data, name)
    if ckpt.clocks.monotonic_ns < dumped.monotonic_ns or ckpt.clocks.boottime_ns < dumped.boottime_ns:
        raise FailedPrecondition(
            f"the record's clocks are below {name}'s: the record was taken before this "
            f"dump (a stale keeptime record file?)"
        )
    plan = plan_restore(policy, replace(ckpt, clocks=dumped), now)
    plan = replace(plan, explanation=f"{plan.explanation}; recorded clocks from CRIU's {name}")
    if plan.targets.monotonic_ns < dumped.monotonic_ns or plan.targets.boottime_ns < dumped.boottime_ns:
        raise Internal(f"planned targets below the dumped clocks under {policy}")  # policies forbid it
    if policy == FREEZE:
        return data, plan  # CRIU's own behaviour: the image as CRIU wrote it
    return image.encode_timens(image.TimensClocks(plan.targets.monotonic_ns, plan.targets.boottime_ns), name), plan
