"""Restore policies: from a checkpoint's clocks and the host's clocks now to
the clock values a restored tree starts at. Pure functions, no I/O.

Targets are clock values, not offsets: the native helper turns them into
offsets against the host clock at the last moment before writing them, so the
only forward jump the restored tree sees is the exec latency. The offsets
returned here are what would be written at the planning instant, for display.

Invariant, for every policy and every input the functions accept: each target
is >= the recorded value, so the restored tree never reads a clock below what
it could have read before the checkpoint.
"""
from dataclasses import dataclass

from keeptime.timefmt import NSEC_PER_SEC, format_duration, format_ns

from .errors import InvalidArgument, OutOfRange

# The kernel refuses an offset (ERANGE) when host_now + offset, in whole
# seconds, is negative or above KTIME_SEC_MAX / 2 (kernel/time/namespace.c).
KTIME_SEC_MAX = (2**63 - 1) // NSEC_PER_SEC
# Highest target accepted: it leaves at least one second between planning and
# the kernel's own check, far more than a spawn takes.
MAX_TARGET_NS = (KTIME_SEC_MAX // 2) * NSEC_PER_SEC

FREEZE = "freeze"
SUSPEND = "suspend"
ELAPSED = "elapsed"
POLICIES = (FREEZE, SUSPEND, ELAPSED)

SAME_BOOT = "same_boot"
REALTIME = "realtime"
REALTIME_CLAMPED = "realtime_clamped"


@dataclass(frozen=True)
class Clocks:
    """A CLOCK_MONOTONIC / CLOCK_BOOTTIME pair in nanoseconds (values or offsets)."""

    monotonic_ns: int
    boottime_ns: int

    def __add__(self, other: "Clocks") -> "Clocks":
        return Clocks(self.monotonic_ns + other.monotonic_ns, self.boottime_ns + other.boottime_ns)

    def __sub__(self, other: "Clocks") -> "Clocks":
        return Clocks(self.monotonic_ns - other.monotonic_ns, self.boottime_ns - other.boottime_ns)


@dataclass(frozen=True)
class Checkpointed:
    """What a record says about the moment of the checkpoint."""

    clocks: Clocks            # the root's in-namespace clocks
    realtime_ns: int          # host CLOCK_REALTIME
    host_boottime_ns: int     # host CLOCK_BOOTTIME
    boot_id: str
    hostname: str


@dataclass(frozen=True)
class HostNow:
    """The restoring host's clocks at the planning instant."""

    clocks: Clocks            # host (root namespace) clocks
    realtime_ns: int
    boot_id: str
    hostname: str


@dataclass(frozen=True)
class RestorePlan:
    policy: str
    recorded: Clocks
    targets: Clocks
    offsets: Clocks           # targets - host clocks at the planning instant
    host: HostNow
    downtime_ns: int
    downtime_source: str
    same_boot: bool
    same_host: bool
    explanation: str


def measure_downtime(ckpt: Checkpointed, now: HostNow) -> tuple[int, str]:
    """Time elapsed since the checkpoint, never negative, and how it was measured.

    On the same boot the host's CLOCK_BOOTTIME delta is exact and immune to
    wall-clock steps; across boots or hosts only CLOCK_REALTIME is shared.
    """
    if ckpt.boot_id and ckpt.boot_id == now.boot_id:
        return max(0, now.clocks.boottime_ns - ckpt.host_boottime_ns), SAME_BOOT
    delta = now.realtime_ns - ckpt.realtime_ns
    if delta < 0:
        return 0, REALTIME_CLAMPED
    return delta, REALTIME


def restore_targets(policy: str, recorded: Clocks, downtime_ns: int) -> Clocks:
    """The in-namespace clock values a restored tree starts at under policy."""
    if downtime_ns < 0:
        raise InvalidArgument(f"downtime must not be negative, got {downtime_ns} ns")
    if policy == FREEZE:
        return recorded
    if policy == SUSPEND:
        return Clocks(recorded.monotonic_ns, recorded.boottime_ns + downtime_ns)
    if policy == ELAPSED:
        return Clocks(recorded.monotonic_ns + downtime_ns, recorded.boottime_ns + downtime_ns)
    raise InvalidArgument(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")


def check_target_range(targets: Clocks) -> None:
    """Refuse targets the kernel would refuse (ERANGE) before anything is spawned."""
    for name, value in (("CLOCK_MONOTONIC", targets.monotonic_ns), ("CLOCK_BOOTTIME", targets.boottime_ns)):
        if value < 0:
            raise OutOfRange(f"{name} target {format_ns(value)} is negative")
        if value > MAX_TARGET_NS:
            raise OutOfRange(
                f"{name} target {format_ns(value)} exceeds the kernel's limit of "
                f"{MAX_TARGET_NS // NSEC_PER_SEC} s for a time namespace clock"
            )


def plan_restore(policy: str, ckpt: Checkpointed, now: HostNow) -> RestorePlan:
    """Plan a restore of ckpt on the host described by now."""
    for name, value in (("monotonic", ckpt.clocks.monotonic_ns), ("boottime", ckpt.clocks.boottime_ns),
                        ("host boottime", ckpt.host_boottime_ns), ("realtime", ckpt.realtime_ns)):
        if value < 0:
            raise InvalidArgument(f"recorded {name} clock {value} ns is negative")
    downtime_ns, source = measure_downtime(ckpt, now)
    targets = restore_targets(policy, ckpt.clocks, downtime_ns)
    check_target_range(targets)
    same_boot = source == SAME_BOOT
    same_host = bool(ckpt.hostname) and ckpt.hostname == now.hostname
    return RestorePlan(
        policy=policy,
        recorded=ckpt.clocks,
        targets=targets,
        offsets=targets - now.clocks,
        host=now,
        downtime_ns=downtime_ns,
        downtime_source=source,
        same_boot=same_boot,
        same_host=same_host,
        explanation=explain(policy, downtime_ns, source, ckpt, now),
    )


def explain(policy: str, downtime_ns: int, source: str, ckpt: Checkpointed, now: HostNow) -> str:
    """One sentence saying what the targets are and how the downtime was measured."""
    downtime = format_duration(downtime_ns)
    if policy == FREEZE:
        what = f"both clocks resume at the recorded values; the {downtime} of downtime is not visible"
    elif policy == SUSPEND:
        what = f"MONOTONIC resumes at the recorded value, BOOTTIME advances by the {downtime} of downtime"
    else:
        what = f"both clocks advance by the {downtime} of downtime"
    if source == SAME_BOOT:
        how = "same boot of this host: downtime measured with the host's CLOCK_BOOTTIME"
    else:
        where = "this host" if ckpt.hostname == now.hostname else f"host {ckpt.hostname or '(unknown)'}"
        how = f"checkpointed on another boot of {where}: downtime measured with CLOCK_REALTIME"
        if source == REALTIME_CLAMPED:
            how += f", which is {format_duration(ckpt.realtime_ns - now.realtime_ns)} behind the checkpoint, so taken as 0"
    return f"{policy}: {what} ({how})"
