"""What /proc says about a process: its fds, threads, memory, CPU time and zombie children."""
import os


def _status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    """Resident set size of pid in KiB."""
    return _status_field(pid, "VmRSS")


def thread_count(pid: int) -> int:
    """Number of threads of pid."""
    return _status_field(pid, "Threads")


def open_fds(pid: int) -> int:
    """Number of file descriptors pid holds open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """CPU time pid has used so far (user + system), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        utime, stime = f.read().rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def zombie_children(pid: int) -> list[int]:
    """Children of pid that exited and were not reaped."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found
