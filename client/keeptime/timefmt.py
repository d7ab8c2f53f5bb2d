"""Exact, human-readable forms of nanosecond clock values and durations."""

NSEC_PER_SEC = 1_000_000_000


def to_timespec(ns: int) -> tuple[int, int]:
    """Split nanoseconds into (seconds, nanoseconds) with 0 <= nanoseconds < 1e9,
    the form /proc/PID/timens_offsets uses, also for negative values."""
    return divmod(ns, NSEC_PER_SEC)


def format_ns(ns: int) -> str:
    """Nanoseconds as exact seconds, e.g. -1.500000000 s."""
    sign = "-" if ns < 0 else ""
    sec, nsec = divmod(abs(ns), NSEC_PER_SEC)
    return f"{sign}{sec}.{nsec:09d} s"


def format_duration(ns: int) -> str:
    """A short human duration: 850 ns, 12.3 ms, 4.20 s, 3 d 02:03:04."""
    ns = abs(ns)
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f} µs"
    if ns < NSEC_PER_SEC:
        return f"{ns / 1_000_000:.1f} ms"
    seconds = ns / NSEC_PER_SEC
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    return (f"{days} d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"
