"""CRIU image files, and the one keeptime reads and rewrites: the time
namespace image (timens-0.img, or timens-<id>.img for a tree that has a time
namespace of its own).

A CRIU image file is two little-endian u32 magics (the common image magic,
then the image type's own; inventory.img has only its own) followed by
entries, each a little-endian u32 length and that many bytes of protobuf.
A time namespace image holds exactly one ``timens_entry``: the dumped tree's
CLOCK_MONOTONIC and CLOCK_BOOTTIME as seen inside its time namespace.

Pure functions, no I/O: shared by keeptimed and the CRIU hook (which must be
able to record from an image when keeptimed is unreachable). Every problem
with the bytes raises ImageError with a one-line message; callers turn it
into their own error (DATA_LOSS in keeptimed).
"""
import struct
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from ..timefmt import NSEC_PER_SEC
from . import dump_pb2, timens_pb2

COMMON_MAGIC = 0x54564319
TIMENS_MAGIC = 0x43114433
INVENTORY_MAGIC = 0x58313116
PSTREE_MAGIC = 0x50273030
IDS_MAGIC = 0x54432030
TIMENS_IMAGE = "timens-0.img"
INVENTORY_IMAGE = "inventory.img"
PSTREE_IMAGE = "pstree.img"
_U32 = struct.Struct("<I")
# The kernel keeps time namespace clocks as signed 64-bit nanoseconds.
MAX_CLOCK_NS = 2**63 - 1


class ImageError(ValueError):
    """Bytes that are not a well-formed CRIU image of the expected kind."""


@dataclass(frozen=True)
class TimensClocks:
    """The clocks a timens image holds, in nanoseconds."""

    monotonic_ns: int
    boottime_ns: int


def read_entries(data: bytes, magic: int, name: str, common: bool = True) -> list[bytes]:
    """The protobuf entries of a CRIU image file whose type magic is magic
    (preceded by the common magic unless common is False)."""
    header = (2 if common else 1) * _U32.size
    if len(data) < header:
        raise ImageError(f"{name} is truncated: {len(data)} bytes, too short for its header")
    if common and _U32.unpack_from(data, 0)[0] != COMMON_MAGIC:
        found = _U32.unpack_from(data, 0)[0]
        raise ImageError(f"{name} is not a CRIU image (magic {found:#010x}, expected {COMMON_MAGIC:#010x})")
    kind = _U32.unpack_from(data, header - _U32.size)[0]
    if kind != magic:
        raise ImageError(f"{name} is another kind of CRIU image (magic {kind:#010x}, expected {magic:#010x})")
    entries = []
    offset = header
    while offset < len(data):
        if len(data) - offset < _U32.size:
            raise ImageError(f"{name} is truncated: {len(data) - offset} stray bytes after entry {len(entries)}")
        (size,) = _U32.unpack_from(data, offset)
        offset += _U32.size
        if size > len(data) - offset:
            raise ImageError(
                f"{name} is truncated: entry {len(entries)} says {size} bytes, {len(data) - offset} remain"
            )
        entries.append(bytes(data[offset:offset + size]))
        offset += size
    return entries


def write_entries(magic: int, entries: list[bytes], common: bool = True) -> bytes:
    """A CRIU image file of type magic holding entries (preceded by the
    common magic unless common is False)."""
    parts = ([_U32.pack(COMMON_MAGIC)] if common else []) + [_U32.pack(magic)]
    for entry in entries:
        parts += [_U32.pack(len(entry)), entry]
    return b"".join(parts)


def _ns(name: str, what: str, ts: "timens_pb2.timespec") -> int:
    if ts.tv_nsec >= NSEC_PER_SEC:
        raise ImageError(f"{name}: {what} tv_nsec {ts.tv_nsec} is not below 1e9")
    value = ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec
    if value > MAX_CLOCK_NS:
        raise ImageError(f"{name}: {what} {ts.tv_sec} s does not fit a 64-bit nanosecond clock")
    return value


def decode_timens(data: bytes, name: str = TIMENS_IMAGE) -> TimensClocks:
    """The clocks in time namespace image bytes; ImageError when they are damaged."""
    entries = read_entries(data, TIMENS_MAGIC, name)
    if len(entries) != 1:
        raise ImageError(f"{name} holds {len(entries)} entries, expected exactly one timens entry")
    entry = timens_pb2.timens_entry()
    try:
        entry.ParseFromString(entries[0])
    except DecodeError:
        raise ImageError(f"{name}: the timens entry does not parse") from None
    # upb does not enforce proto2's `required` while parsing: check it here.
    if not entry.IsInitialized():
        missing = ", ".join(entry.FindInitializationErrors())
        raise ImageError(f"{name}: the timens entry lacks required fields ({missing})")
    return TimensClocks(_ns(name, "monotonic", entry.monotonic), _ns(name, "boottime", entry.boottime))


def encode_timens(clocks: TimensClocks, name: str = TIMENS_IMAGE) -> bytes:
    """Time namespace image bytes holding clocks, exactly as CRIU writes them."""
    for what, value in (("monotonic", clocks.monotonic_ns), ("boottime", clocks.boottime_ns)):
        if not 0 <= value <= MAX_CLOCK_NS:
            raise ImageError(f"{what} clock {value} ns cannot be stored in {name}")
    entry = timens_pb2.timens_entry()
    entry.monotonic.tv_sec, entry.monotonic.tv_nsec = divmod(clocks.monotonic_ns, NSEC_PER_SEC)
    entry.boottime.tv_sec, entry.boottime.tv_nsec = divmod(clocks.boottime_ns, NSEC_PER_SEC)
    return write_entries(TIMENS_MAGIC, [entry.SerializeToString(deterministic=True)])


def _first_entry(data: bytes, magic: int, name: str, message, common: bool = True):
    entries = read_entries(data, magic, name, common)
    if not entries:
        raise ImageError(f"{name} holds no entry")
    try:
        message.ParseFromString(entries[0])
    except DecodeError:
        raise ImageError(f"{name}: the first entry does not parse") from None
    if not message.IsInitialized():
        raise ImageError(f"{name}: the first entry lacks required fields")
    return message


def root_pid(pstree: bytes) -> int:
    """The dumped tree's root pid (as CRIU saw it) from pstree.img bytes."""
    return _first_entry(pstree, PSTREE_MAGIC, PSTREE_IMAGE, dump_pb2.pstree_entry()).pid


def ids_image(pid: int) -> str:
    """The name of the image holding pid's namespace ids."""
    return f"ids-{pid}.img"


def time_ns_id(ids: bytes, name: str) -> int:
    """The time namespace id in an ids-<pid>.img (0 when CRIU recorded none)."""
    return _first_entry(ids, IDS_MAGIC, name, dump_pb2.task_kobj_ids_entry()).time_ns_id


def criu_time_ns_id(inventory: bytes) -> int:
    """CRIU's own time namespace id at the dump, from inventory.img (0 when none)."""
    entry = _first_entry(inventory, INVENTORY_MAGIC, INVENTORY_IMAGE, dump_pb2.inventory_entry(), common=False)
    return entry.root_ids.time_ns_id


def timens_image_name(tree_time_ns_id: int, criu_time_ns_id_at_dump: int) -> str:
    """The time namespace image CRIU wrote and reads back at restore: the
    root's own namespace's when it differs from CRIU's, else timens-0.img."""
    if tree_time_ns_id and criu_time_ns_id_at_dump and tree_time_ns_id != criu_time_ns_id_at_dump:
        return f"timens-{tree_time_ns_id}.img"
    return TIMENS_IMAGE
