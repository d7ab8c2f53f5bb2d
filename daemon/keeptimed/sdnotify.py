"""The systemd notification protocol (sd_notify(3)), without libsystemd.

A service of Type=notify tells systemd it is ready (READY=1), stopping
(STOPPING=1), alive (WATCHDOG=1, when WatchdogSec= is set) or what it is doing
(STATUS=...) by sending datagrams to the AF_UNIX socket named in
$NOTIFY_SOCKET; a leading '@' names an abstract socket. Outside systemd the
variable is unset and every call here does nothing.
"""
import logging
import os
import socket
from typing import Mapping, Optional

log = logging.getLogger("keeptimed")


class Notifier:
    """Sends notifications to systemd, or nowhere when not run by systemd."""

    def __init__(self, address: Optional[str], watchdog_usec: int = 0):
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) if address else None

    @classmethod
    def from_environment(cls, environ: Optional[Mapping[str, str]] = None) -> "Notifier":
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, then forget them
        (os.environ only), so no child process mistakes itself for the service."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog_usec = 0
        watchdog_pid = env.get("WATCHDOG_PID")
        if not watchdog_pid or watchdog_pid == str(os.getpid()):
            try:
                watchdog_usec = max(0, int(env.get("WATCHDOG_USEC", "0")))
            except ValueError:
                watchdog_usec = 0
        if environ is None:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)
        return cls(address, watchdog_usec)

    @property
    def watchdog_interval(self) -> Optional[float]:
        """Seconds between WATCHDOG=1 pings (half the timeout), or None when off."""
        if not self._sock or not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2e6

    def send(self, *assignments: str) -> bool:
        """Send "KEY=VALUE" lines in one datagram; False when it could not be sent."""
        if self._sock is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock.sendto("\n".join(assignments).encode(), target)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address, exc.strerror)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
