"""Which Linux capabilities keeptimed has, and which of those it needs for what."""
from dataclasses import dataclass

# include/uapi/linux/capability.h
NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


@dataclass(frozen=True)
class Need:
    name: str
    needed_for: str
    blocking: bool      # without it restore/exec cannot work at all


NEEDS = (
    Need("CAP_SYS_ADMIN", "unshare(CLONE_NEWTIME) and setns() into a time namespace (restore, exec)", True),
    Need("CAP_SYS_TIME", "writing /proc/self/timens_offsets (restore)", True),
    Need("CAP_SYS_PTRACE", "reading /proc/PID/ns/time and timens_offsets of other users' or more "
                           "privileged processes (checkpoint, clocks)", False),
    Need("CAP_SETUID", "running restored commands as another user (--uid)", False),
    Need("CAP_SETGID", "running restored commands with another group (--uid, --gid)", False),
)


def effective(status_path: str = "/proc/self/status") -> list[str]:
    """Names of this process's effective capabilities."""
    with open(status_path, encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
                break
        else:
            return []
    return [name for bit, name in enumerate(NAMES) if mask & (1 << bit)]


def missing() -> list[Need]:
    """The needed capabilities this process lacks."""
    have = set(effective())
    return [need for need in NEEDS if need.name not in have]
