"""Cgroups as keeptimed sees them: the hierarchies mounted in its mount
namespace, and where a process's cgroup is in each.

A host has a cgroup v2 hierarchy (at /sys/fs/cgroup, or at
/sys/fs/cgroup/unified on a "hybrid" host), cgroup v1 hierarchies (one per
controller set, e.g. /sys/fs/cgroup/pids, and named ones such as systemd's
name=systemd), or both. /proc/PID/cgroup names the process's cgroup in each
hierarchy ("0::/path" for v2, "N:controllers:/path" for v1), relative to the
cgroup namespace of whoever reads it: keeptimed's, here. A path above that
namespace's root ("/..") is one keeptimed cannot reach.

Pure parsing; the caller opens the directories.
"""
from dataclasses import dataclass
from typing import Optional

V2 = ""     # the key of the cgroup v2 hierarchy
# Mount options of a cgroup v1 mount that are not controllers.
_NOT_CONTROLLERS = frozenset({"rw", "ro", "none", "xattr", "noprefix", "clone_children", "cpuset_v2_mode",
                              "favordynmods", "nofavordynmods"})


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: its key ("" for v2, else its sorted
    controllers and name=, comma-joined, as /proc/PID/cgroup names them),
    where it is mounted and which cgroup the mount shows at its top."""

    key: str
    mountpoint: str
    root: str = "/"

    @property
    def name(self) -> str:
        """For messages: "cgroup v2" or "cgroup v1 pids"."""
        return "cgroup v2" if self.key == V2 else f"cgroup v1 {self.key}"

    def directory(self, path: str) -> Optional[str]:
        """The directory of cgroup path in this mount; None when the mount
        does not show it (above keeptimed's cgroup namespace, or outside the
        subtree a mount shows). Both are relative to keeptimed's cgroup
        namespace: a mount made outside it shows its root as "/..", and
        then "/../c" is its "c"."""
        if not path.startswith("/"):
            return None
        if self.root == "/":
            rest = path
        elif path == self.root or path.startswith(self.root + "/"):
            rest = path[len(self.root):]
        else:
            return None
        if ".." in rest.split("/"):
            return None
        return self.mountpoint.rstrip("/") + rest if rest not in ("", "/") else self.mountpoint


def _unescape(field: str) -> str:
    """A mountinfo field with its octal escapes (\\040 for a space) decoded."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _key(items) -> str:
    return ",".join(sorted(items))


def hierarchies(mountinfo: str) -> list[Hierarchy]:
    """The cgroup hierarchies mounted, from a /proc/PID/mountinfo text: the
    first mount of each."""
    found: dict[str, Hierarchy] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 4 or dash < 5:
            continue
        fstype, options = fields[dash + 1], fields[dash + 3].split(",")
        if fstype == "cgroup2":
            key = V2
        elif fstype == "cgroup":
            key = _key(o for o in options if o not in _NOT_CONTROLLERS and not o.startswith("release_agent="))
        else:
            continue
        if key not in found:
            found[key] = Hierarchy(key, _unescape(fields[4]), _unescape(fields[3]))
    return list(found.values())


def memberships(cgroup: str) -> dict[str, str]:
    """A /proc/PID/cgroup text as {hierarchy key: cgroup path}."""
    paths = {}
    for line in cgroup.splitlines():
        number, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not sep or not sep2 or not number.isdigit():
            continue
        paths[V2 if number == "0" and not controllers else _key(controllers.split(","))] = path
    return paths
