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
