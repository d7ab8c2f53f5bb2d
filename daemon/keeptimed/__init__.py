"""keeptimed: the privileged daemon that records and restores clocks."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("keeptimed")   # always keeptime's too: keeptimed requires that exact version
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"
__all__ = ["__version__"]
