"""keeptime: keep CLOCK_MONOTONIC and CLOCK_BOOTTIME continuous across
checkpoint/restore and migration. This package holds the Python client
(``keeptime.Client``), the ``keeptime`` CLI and the generated API (``keeptime.v1``).

``from keeptime import Client`` works as ever; the client (and gRPC with it)
is imported on first use of those names, so the CLI's `--help` and
`--version` do not pay for gRPC's import."""
from ._version import __version__

__all__ = ["Client", "ExecResult", "ExitStatus", "KeeptimeError", "RestoreResult"]
_FROM = {"Client": "client", "ExecResult": "client", "ExitStatus": "client", "RestoreResult": "client",
         "KeeptimeError": "errors"}


def __getattr__(name: str):
    if name not in _FROM:
        raise AttributeError(f"module 'keeptime' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_FROM[name]}", __name__), name)
    globals()[name] = value   # once: later lookups do not come here
    return value
