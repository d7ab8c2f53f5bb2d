"""Between the API's protobuf values and keeptimed's own: policy, mechanism
and downtime-source enums, clock values and offsets."""
from keeptime.v1 import keeptime_pb2 as pb

from .policies import Checkpointed, Clocks

POLICY_NAMES = {pb.POLICY_FREEZE: "freeze", pb.POLICY_SUSPEND: "suspend", pb.POLICY_ELAPSED: "elapsed"}
POLICY_ENUMS = {name: value for value, name in POLICY_NAMES.items()}
MECHANISM_ENUMS = {
    "clone3_timens_offset": pb.MECHANISM_CLONE3_TIMENS_OFFSET,
    "unshare_proc_offsets": pb.MECHANISM_UNSHARE_PROC_OFFSETS,
    "setns": pb.MECHANISM_SETNS,
}
OFFSET_ABI_ENUMS = {None: pb.OFFSET_ABI_UNTRIED, True: pb.OFFSET_ABI_SUPPORTED, False: pb.OFFSET_ABI_UNSUPPORTED}
DOWNTIME_SOURCES = {
    "same_boot": pb.DOWNTIME_SOURCE_SAME_BOOT,
    "realtime": pb.DOWNTIME_SOURCE_REALTIME,
    "realtime_clamped": pb.DOWNTIME_SOURCE_REALTIME_CLAMPED,
}


def clock_values(clocks: Clocks) -> pb.ClockValues:
    """MONOTONIC and BOOTTIME values as the API carries them."""
    return pb.ClockValues(monotonic_ns=clocks.monotonic_ns, boottime_ns=clocks.boottime_ns)


def offsets(clocks: Clocks) -> pb.Offsets:
    """Time-namespace offsets as the API carries them."""
    return pb.Offsets(monotonic_ns=clocks.monotonic_ns, boottime_ns=clocks.boottime_ns)


def checkpointed(record: pb.Record) -> Checkpointed:
    """What a record says about the moment of its checkpoint, for the policies."""
    return Checkpointed(
        clocks=Clocks(record.clocks.monotonic_ns, record.clocks.boottime_ns),
        realtime_ns=record.realtime_ns,
        host_boottime_ns=record.host_clocks.boottime_ns,
        boot_id=record.boot_id,
        hostname=record.hostname,
    )
