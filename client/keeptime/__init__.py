"""keeptime: keep CLOCK_MONOTONIC and CLOCK_BOOTTIME continuous across
checkpoint/restore and migration. This package holds the Python client
(``keeptime.Client``), the ``keeptime`` CLI and the generated API (``keeptime.v1``)."""
from importlib.metadata import PackageNotFoundError, version

from .client import Client, ExecResult, ExitStatus, RestoreResult
from .errors import KeeptimeError

try:
    __version__ = version("keeptime")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"
__all__ = ["Client", "ExecResult", "ExitStatus", "KeeptimeError", "RestoreResult"]
