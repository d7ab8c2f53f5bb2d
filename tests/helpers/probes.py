"""Reading what the clock probe (clockprobe.c) printed."""
import time


def read_probe(path: str, timeout: float = 10.0) -> tuple[int, int]:
    """(MONOTONIC, BOOTTIME) printed by the clock probe into path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        if text.endswith("\n"):
            mono, boot = text.split()
            return int(mono), int(boot)
        time.sleep(0.005)
    raise AssertionError(f"the clock probe wrote nothing to {path}")


def restore_events(client, record_id: str, count: int, timeout: float = 10.0) -> list:
    """The record's restore events once there are at least count of them: the
    hook does not wait for keeptimed at post-resume, which stores that verdict
    a moment after the restore returned."""
    deadline = time.monotonic() + timeout
    while True:
        events = client.restores(record_id)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)
