"""What keeptime keeps in a CRIU image directory, beside CRIU's own images.

    keeptime-record.bin          the dumped tree's record (written at post-dump)
    <timens image>               CRIU's time namespace image: timens-0.img, or
                                 timens-<id>.img for a tree with a time
                                 namespace of its own; keeptime rewrites it at
                                 pre-restore to impose a policy
    <timens image>.orig          CRIU's original, kept by the first rewrite;
                                 every later restore plans from it
    <timens image>.keeptime-sha256
                                 the sha256 of the image keeptime last wrote:
                                 any other content there was written by CRIU
                                 (a new dump), so an original kept beside it
                                 is stale

Used by keeptimed (serving the CRIU hook) and by the hook itself when
keeptimed is unreachable. Every file goes through ImageDir, which never
trusts what the directory holds.
"""
import hashlib
from dataclasses import dataclass
from typing import Callable, Optional

from . import image
from .imagedir import ImageDir, ImageFileError

RECORD_FILE = "keeptime-record.bin"
ORIGINAL_SUFFIX = ".orig"
DIGEST_SUFFIX = ".keeptime-sha256"
# The record's label naming the time namespace image it was taken with
# (sha256, hex), so a restore never plans from an image of another dump.
IMAGE_DIGEST_LABEL = "criu-timens-sha256"
MAX_TIMENS_BYTES = 4096          # one entry of two timespecs: a few dozen bytes
MAX_TREE_IMAGE_BYTES = 64 << 20  # pstree.img of a very large tree
MAX_RECORD_BYTES = 8 << 20       # keeptimed accepts no larger message


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
    def digest_name(self) -> str:
        return self.timens_name() + DIGEST_SUFFIX

    # -- reading -----------------------------------------------------------------

    def read_timens(self) -> Optional[bytes]:
        return self.images.read(self.timens_name(), MAX_TIMENS_BYTES)

    def read_record(self) -> Optional[bytes]:
        return self.images.read(RECORD_FILE, MAX_RECORD_BYTES)

    def dumped(self) -> Dumped:
        """The dump's time namespace image, original and current. When CRIU
        wrote the image after keeptime last rewrote it (a new dump without
        the hook), the kept original belongs to the old dump: it is deleted."""
        name = self.timens_name()
        original = self.images.read(self.original_name, MAX_TIMENS_BYTES)
        current = self.read_timens()
        if original is None or current == original:
            return Dumped(name, original, current)
        written = (self.images.read(self.digest_name, 256) or b"").decode("ascii", "replace").strip()
        if current is not None and digest(current) == written:
            return Dumped(name, original, current)
        self.forget_original()
        self.say(f"removed a stale {self.original_name}: CRIU wrote {name} again since keeptime rewrote it")
        return Dumped(name, None, current)

    # -- writing -----------------------------------------------------------------

    def write_record(self, data: bytes) -> None:
        self.images.write_atomic(RECORD_FILE, data)

    def forget_original(self) -> None:
        """Drop what an earlier restore kept: it belongs to an older dump."""
        self.images.remove(self.original_name)
        self.images.remove(self.digest_name)

    def rewrite(self, dumped: Dumped, planned: bytes) -> None:
        """Make CRIU read planned, keeping CRIU's original first."""
        if dumped.original is None:
            self.images.write_atomic(self.original_name, dumped.current)
        if planned != dumped.current:
            # The digest goes first: a crash in between can only make a later
            # restore take this image for CRIU's and plan from values that are
            # too high, never too low.
            self.images.write_atomic(self.digest_name, digest(planned).encode() + b"\n")
            self.images.write_atomic(dumped.name, planned)

    def put_back_original(self, dumped: Dumped) -> bool:
        """Leave CRIU its own image: the original, if an earlier restore rewrote it."""
        if not dumped.rewritten:
            return False
        self.images.write_atomic(dumped.name, dumped.original)
        self.say(f"put CRIU's original {dumped.name} back: the dumped clocks resume as they were")
        return True
