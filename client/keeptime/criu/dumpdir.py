"""What keeptime keeps in a CRIU image directory, beside CRIU's own images.

    keeptime-record.bin          the dumped tree's record (written at post-dump)
    <timens image>               CRIU's time namespace image: timens-0.img, or
                                 timens-<id>.img for a tree with a time
                                 namespace of its own; keeptime rewrites it at
                                 pre-restore to impose a policy
    <timens image>.orig          CRIU's original, kept by the first rewrite;
                                 every later restore of the dump plans from it
    <timens image>.orig.dump     which dump that original belongs to: the
                                 sha256 of the dump's inventory.img (CRIU
                                 writes a new one at every dump). An original
                                 of another dump (CRIU dumped into the
                                 directory again) is stale and dropped.

The original and its dump are keeptime's own files: they are trusted only
when they are exactly what keeptime writes (owned by the uid it writes as,
mode 0600, one link), never because someone who can create files in the
directory put them there. The original and its dump are made durable before
the image is first rewritten. The rewritten image itself is not fsync'd: the restore that
follows reads it from the page cache, and every later restore plans from
the original again, so a crash that loses it loses nothing.

Used by keeptimed (serving the CRIU hook) and by the hook itself when
keeptimed is unreachable. Every file goes through ImageDir, which never
trusts what the directory holds.
"""
import hashlib
from dataclasses import dataclass
from typing import Callable, Optional

from ..limits import RECORD_FILE_BYTES
from ..defaults import CRIU_RECORD_FILE
from . import image
from .imagedir import ImageDir, ImageFileError

RECORD_FILE = CRIU_RECORD_FILE
ORIGINAL_SUFFIX = ".orig"
DUMP_SUFFIX = ".orig.dump"
# What keeptime 0.1 kept instead of DUMP_SUFFIX: the sha256 of the image it wrote.
LEGACY_DIGEST_SUFFIX = ".keeptime-sha256"
# The record's label naming the time namespace image it was taken with
# (sha256, hex), so a restore never plans from an image of another dump.
IMAGE_DIGEST_LABEL = "criu-timens-sha256"
MAX_TIMENS_BYTES = 4096          # one entry of two timespecs: a few dozen bytes
MAX_TREE_IMAGE_BYTES = 64 << 20  # pstree.img of a very large tree
MAX_RECORD_BYTES = RECORD_FILE_BYTES  # keeptimed takes no larger record


def digest(data: bytes) -> str:
    """sha256 of data, hex."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Dumped:
    """The time namespace image of a dump as the directory holds it now."""

    name: str                  # e.g. timens-0.img
    original: Optional[bytes]  # <name>.orig, kept by an earlier rewrite
    current: Optional[bytes]   # <name> as it is now

    @property
    def as_dumped(self) -> Optional[bytes]:
        """CRIU's image as the dump wrote it."""
        return self.original if self.original is not None else self.current

    @property
    def rewritten(self) -> bool:
        """Whether an earlier restore left a rewritten image in place."""
        return self.original is not None and self.original != self.current


class DumpDir:
    """An image directory seen as keeptime sees it; say() reports what it did."""

    def __init__(self, images: ImageDir, say: Callable[[str], None] = lambda message: None):
        self.images = images
        self.say = say
        self._timens_name: Optional[str] = None

    def __enter__(self) -> "DumpDir":
        return self

    def __exit__(self, *exc) -> None:
        self.images.close()

    # -- which time namespace image --------------------------------------------

    def timens_name(self) -> str:
        """The time namespace image CRIU wrote for this dump and reads back at
        restore, as pstree.img, the root's ids and inventory.img say."""
        if self._timens_name is None:
            self._timens_name = self._locate_timens()
        return self._timens_name

    def _locate_timens(self) -> str:
        read = self.images.read
        pstree, inventory = read(image.PSTREE_IMAGE, MAX_TREE_IMAGE_BYTES), read(image.INVENTORY_IMAGE)
        if pstree is None or inventory is None:
            return self._only_timens_image()
        try:
            root = image.root_pid(pstree)
            ids_name = image.ids_image(root)
            ids = read(ids_name)
            if ids is None:
                raise image.ImageError(f"{ids_name} (the root task's namespaces) is missing")
            return image.timens_image_name(image.time_ns_id(ids, ids_name), image.criu_time_ns_id(inventory))
        except image.ImageError as exc:
            raise ImageFileError(f"cannot tell which time namespace image this dump has: {exc}") from None

    def _only_timens_image(self) -> str:
        """Without CRIU's tree images (not a complete dump): the one
        timens-*.img there is, else timens-0.img."""
        found = sorted(n for n in self.images.names() if n.startswith("timens-") and n.endswith(".img"))
        return found[0] if len(found) == 1 else image.TIMENS_IMAGE

    @property
    def original_name(self) -> str:
        return self.timens_name() + ORIGINAL_SUFFIX

    @property
    def dump_name(self) -> str:
        return self.timens_name() + DUMP_SUFFIX

    def dump_id(self) -> str:
        """This dump's identity: the sha256 of its inventory.img ("" without one)."""
        inventory = self.images.read(image.INVENTORY_IMAGE)
        return digest(inventory) if inventory is not None else ""

    # -- reading -----------------------------------------------------------------

    def read_timens(self) -> Optional[bytes]:
        return self.images.read(self.timens_name(), MAX_TIMENS_BYTES)

    def read_record(self) -> Optional[bytes]:
        return self.images.read(RECORD_FILE, MAX_RECORD_BYTES)

    def dumped(self) -> Dumped:
        """The dump's time namespace image, original and current. An original
        kept for another dump (CRIU dumped into the directory again since),
        or one keeptime did not write, is not used: it is deleted."""
        name = self.timens_name()
        current = self.read_timens()
        try:
            original = self.images.read_own(self.original_name, MAX_TIMENS_BYTES)
            if original is None:
                return Dumped(name, None, current)
            kept_for = self._kept_for(original, current)
        except ImageFileError as exc:
            why = str(exc)
        else:
            if kept_for is not None and kept_for == self.dump_id():
                return Dumped(name, original, current)
            why = "it belongs to an earlier dump into this directory"
        self.forget_original()
        self.say(f"removed a stale {self.original_name}: {why}")
        return Dumped(name, None, current)

    def _kept_for(self, original: bytes, current: Optional[bytes]) -> Optional[str]:
        """Which dump the original was kept for (None: unknown)."""
        kept_for = self.images.read_own(self.dump_name, 256)
        if kept_for is not None:
            return kept_for.decode("ascii", "replace").strip()
        legacy = self.images.read_own(self.timens_name() + LEGACY_DIGEST_SUFFIX, 256)
        if legacy is None or current is None:
            return None
        if current != original and digest(current) != legacy.decode("ascii", "replace").strip():
            return None   # CRIU wrote the image since keeptime 0.1 rewrote it
        dump_id = self.dump_id()   # the original is this dump's: say so the current way
        self.images.write_atomic(self.dump_name, dump_id.encode() + b"\n")
        self.images.remove(self.timens_name() + LEGACY_DIGEST_SUFFIX)
        return dump_id

    # -- writing -----------------------------------------------------------------

    def write_record(self, data: bytes) -> None:
        self.images.write_atomic(RECORD_FILE, data)

    def forget_original(self) -> None:
        """Drop what an earlier restore kept: it belongs to an older dump."""
        for name in (self.original_name, self.dump_name, self.timens_name() + LEGACY_DIGEST_SUFFIX):
            self.images.remove(name)

    def rewrite(self, dumped: Dumped, planned: bytes) -> None:
        """Make CRIU read planned, keeping CRIU's original (durably) first."""
        if dumped.original is None:
            self.images.write_atomic(self.original_name, dumped.current, sync_directory=False)
            self.images.write_atomic(self.dump_name, self.dump_id().encode() + b"\n", sync_directory=False)
            self.images.sync()
        if planned != dumped.current:
            self.images.write_atomic(dumped.name, planned, durable=False)

    def put_back_original(self, dumped: Dumped) -> bool:
        """Leave CRIU its own image: the original, if an earlier restore rewrote it."""
        if not dumped.rewritten:
            return False
        self.images.write_atomic(dumped.name, dumped.original, durable=False)
        self.say(f"put CRIU's original {dumped.name} back: the dumped clocks resume as they were")
        return True
