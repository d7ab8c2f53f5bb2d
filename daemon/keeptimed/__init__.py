"""keeptimed: the privileged daemon that records and restores clocks."""
from keeptime import __version__

__all__ = ["__version__"]
