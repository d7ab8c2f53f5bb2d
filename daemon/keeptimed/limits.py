"""The limits keeptimed puts on callers other than root.

keeptimed runs as root and serves socket_group members on the same worker
threads, store, disk and descriptors as root. Each member is confined to its
own uid (see access), and each uid is bounded here, so that one member, or
a few, can neither starve root nor each other:

  calls       user_calls in progress per uid, user_waits of them blocked in
              Wait; all non-root calls together hold at most
              workers - root_workers of the workers for waits and streams,
              and three quarters of the quick_workers for the other calls;
              CRIU hook steps likewise in the hook's own workers (admission)
  processes   user_processes running per uid (children); non-root restores
              stop while the top quarter of keeptimed's descriptors is all
              that is left (fdlimit)
  store       user_records records and user_store_bytes bytes per uid,
              user_restores verdicts kept per uid (the oldest dropped), and no
              non-root write into the last root_store_reserve bytes of the
              store's file system (store)
  time        exec_timeout: a started program that has not exec'd by then is
              killed (native)

Root, and TLS clients, who act for the administrators, are not counted. A
refusal is RESOURCE_EXHAUSTED whose message names the limit.
"""
from dataclasses import dataclass, fields

from .errors import ResourceExhausted
from .pools import default_quick_workers


class LimitExceeded(ResourceExhausted):
    """A call refused by one of the limits; ``limit`` names it: a
    configuration key, or one of the fixed ones (root_descriptors,
    user_hook_steps, root_hook_workers)."""

    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class Limits:
    """The limits in force, from the configuration (defaults: config.SETTINGS)."""

    workers: int          # threads for calls that may block: Wait, streams (pools)
    quick_workers: int    # threads for the other calls; resolved: never 0 (auto) here
    root_workers: int
    user_calls: int
    user_waits: int
    user_processes: int
    user_records: int
    user_store_bytes: int
    user_restores: int
    root_store_reserve: int
    exec_timeout: float

    def __post_init__(self):
        if not self.quick_workers:   # 0: sized from the CPUs
            object.__setattr__(self, "quick_workers", default_quick_workers())

    @classmethod
    def from_config(cls, values) -> "Limits":
        """The limits of a Config (or anything with these attributes)."""
        return cls(**{f.name: getattr(values, f.name) for f in fields(cls)})

    @classmethod
    def defaults(cls, **overrides) -> "Limits":
        """The embedded defaults, with overrides."""
        from . import config   # here: config's validators import what imports this module
        values = {f.name: config.BY_KEY[f.name].default for f in fields(cls)}
        return cls(**{**values, **overrides})

    @property
    def user_workers(self) -> int:
        """Workers for waits and streams all callers other than root may hold together."""
        return max(1, self.workers - self.root_workers)

    @property
    def user_quick_workers(self) -> int:
        """Quick workers all callers other than root may hold together:
        three quarters (root keeps at least one, and they at least one)."""
        return max(1, self.quick_workers - max(1, self.quick_workers // 4))

    @property
    def root_waits(self) -> int:
        """Wait calls root may have blocked at once: half the workers, so its
        own waits never take every worker."""
        return max(1, self.workers // 2)
