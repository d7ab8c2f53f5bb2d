"""What each uid other than root keeps in the record store, and whether more fits.

keeptimed writes its store as root, so the file system's quotas and its
blocks reserved for root do not hold members back: these limits do.
  * records: at most user_records records and user_store_bytes bytes of
    record files per uid; past either, a new record is refused;
  * restore verdicts: user_restores per uid, the oldest dropped to make
    room (they are a log; the uid cannot delete them itself);
  * disk: no write of theirs into the last root_store_reserve bytes free on
    the store's file system, so root's own checkpoints still fit.
Root's records and verdicts (owner uid 0, which TLS clients write too) are
not counted. The store calls these under its lock, so each check and the
write it allows are one step.
"""
import collections
import os

from .limits import LimitExceeded, Limits

RESTORE_ROW_BYTES = 256   # a verdict's columns besides its message, roughly


class StoreQuota:
    """Usage per uid, loaded from the store at open and kept current by it."""

    def __init__(self, limits: Limits, path: str):
        self.limits = limits
        self.directory = os.path.dirname(os.path.abspath(path))
        self._records: collections.Counter = collections.Counter()   # uid -> records
        self._bytes: collections.Counter = collections.Counter()     # uid -> bytes of record files
        self._restores: collections.Counter = collections.Counter()  # uid -> verdicts

    def load(self, db) -> None:
        """Count what each uid already keeps in db (an sqlite3 connection)."""
        for uid, records, size in db.execute(
                "SELECT owner_uid, COUNT(*), SUM(LENGTH(data)) FROM records GROUP BY owner_uid"):
            self._records[uid], self._bytes[uid] = records, size or 0
        for uid, restores in db.execute("SELECT owner_uid, COUNT(*) FROM restores GROUP BY owner_uid"):
            self._restores[uid] = restores

    # -- records -----------------------------------------------------------------

    def check_record(self, uid: int, size: int) -> None:
        """LimitExceeded unless a record of size bytes fits uid's limits and the disk."""
        if not uid:
            return
        limits = self.limits
        if self._records[uid] >= limits.user_records:
            raise LimitExceeded("user_records", f"uid {uid} keeps {self._records[uid]} records, the most "
                                                "user_records allows; delete some (keeptime rm)")
        if self._bytes[uid] + size > limits.user_store_bytes:
            raise LimitExceeded("user_store_bytes", f"uid {uid} keeps {self._bytes[uid]} bytes of records and this "
                                                    f"one has {size}: more than user_store_bytes "
                                                    f"({limits.user_store_bytes}); delete some (keeptime rm)")
        self.check_disk(size)

    def record_added(self, uid: int, size: int) -> None:
        self._records[uid] += 1
        self._bytes[uid] += size

    def record_removed(self, uid: int, size: int) -> None:
        self._records[uid] -= 1
        self._bytes[uid] -= size

    def usage(self, uid: int) -> tuple[int, int]:
        """(records, bytes) uid keeps."""
        return self._records[uid], self._bytes[uid]

    # -- restore verdicts ---------------------------------------------------------

    def restores_to_drop(self, uid: int, message_bytes: int) -> int:
        """How many of uid's oldest verdicts to drop before storing one more
        (LimitExceeded when the disk has no room for it)."""
        if not uid:
            return 0
        self.check_disk(RESTORE_ROW_BYTES + message_bytes)
        return max(0, self._restores[uid] + 1 - self.limits.user_restores)

    def restores_changed(self, uid: int, delta: int) -> None:
        self._restores[uid] += delta

    # -- the disk ----------------------------------------------------------------

    def check_disk(self, size: int) -> None:
        """LimitExceeded when writing size bytes would leave less than
        root_store_reserve free on the store's file system (as root sees it:
        blocks reserved for root count, keeptimed writes as root)."""
        reserve = self.limits.root_store_reserve
        if not reserve:
            return
        st = os.statvfs(self.directory)
        free = st.f_bfree * st.f_frsize
        if free - size < reserve:
            raise LimitExceeded("root_store_reserve", f"the record store's file system has {free} bytes free, and "
                                                      f"keeptimed keeps the last {reserve} (root_store_reserve) for "
                                                      "root's writes")
