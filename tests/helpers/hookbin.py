"""CRIU's action script as an installation of both distributions lays it out.

keeptime-criu-hook (a shell script of the keeptime distribution) execs
keeptime-criu-forward (the native forwarder of the keeptimed distribution)
found beside it, and the forwarder runs the keeptime beside it when keeptimed
is unreachable. An editable install puts neither the forwarder (a data file)
in bin/, so tests and benchmarks assemble that bin/ from this checkout.
"""
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOK_SCRIPT = os.path.join(ROOT, "client", "scripts", "keeptime-criu-hook")
KEEPTIME_CLI = os.path.join(os.path.dirname(sys.executable), "keeptime")


class NotBuilt(Exception):
    """The native forwarder has not been built."""


def forwarder() -> str:
    """keeptime-criu-forward: installed beside this interpreter, else where an
    editable build linked it."""
    for path in (os.path.join(os.path.dirname(sys.executable), "keeptime-criu-forward"),
                 os.path.join(ROOT, "build", "native", "keeptime-criu-forward")):
        if os.access(path, os.X_OK):
            return path
    raise NotBuilt("keeptime-criu-forward is not built (pip install the project first)")


def install_hook(bin_dir: str) -> str:
    """Lay out keeptime-criu-hook, keeptime-criu-forward (a copy: it finds
    keeptime beside its own /proc/self/exe) and a link to this environment's
    keeptime in bin_dir; returns the hook's path."""
    hook = shutil.copy(HOOK_SCRIPT, bin_dir)
    shutil.copy(forwarder(), bin_dir)
    os.symlink(KEEPTIME_CLI, os.path.join(bin_dir, "keeptime"))
    return hook
