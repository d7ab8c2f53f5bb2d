"""The record store: SQLite in WAL mode, every commit fsync'd.

Records are kept as record-file bytes (see recordfile), so what is stored is
exactly what is exported, and a damaged row is detected by its checksum.
A record is stored under its owner's uid and its id: each owner has ids of
its own, so one user's record can neither take nor reveal another's id.
Restore events (verdicts of VerifyRestore) are kept in plain columns, so an
operator can query them with sqlite3. Given limits, what each uid other than
root may keep is bounded (see quota), and a page of records is bounded in
bytes as well as in count, so no call loads more than a page's worth.
"""
import os
import re
import sqlite3
import threading
from typing import Optional

from keeptime.v1 import keeptime_pb2 as pb

from keeptime.limits import RECORD_FILE_BYTES

from . import door, recordfile
from .limits import Limits
from .quota import StoreQuota
from .errors import AlreadyExists, DataLoss, InvalidArgument, NotFound, ResourceExhausted

# 2: owner_uid, the uid whose record it is (0: the administrators'); 3: restores;
# 4: restores.verdict (continuous, regressed, unverified; "" in older rows: see ok);
# 5: records keyed by (owner_uid, id): every owner has its own ids; restores_by_owner
#    (a uid's oldest verdicts are dropped past its limit)
SCHEMA_VERSION = 5
ID_OR_PREFIX = re.compile(r"[0-9a-f]{4,32}")
ROOT_UID = 0
# (owner_uid, record id): what names a stored record.
RecordKey = tuple[int, str]


class RecordStore:
    """Thread-safe access to the records of one SQLite file."""

    def __init__(self, path: str, limits: Optional[Limits] = None):
        """The store in path; with limits, what uids other than root keep is
        bounded by them (without, nothing is: tools and tests)."""
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        old_umask = os.umask(0o077)  # the database and its WAL files: owner only
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
        finally:
            os.umask(old_umask)
        self._lock = threading.Lock()
        self._migrate()
        self.quota = None
        if limits is not None:
            self.quota = StoreQuota(limits, path)
            self.quota.load(self._db)

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema {version}, newer than this keeptimed ({SCHEMA_VERSION})")
        if version == SCHEMA_VERSION and self._db.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index'"
            " AND name IN ('records_by_owner_time', 'restores_by_owner')"
        ).fetchone()[0] == 2:
            return   # nothing to write: a store on a full disk still opens, to be read
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._migrate_records()
                # No foreign key: a restore may be verified against a record given as
                # bytes, and its history outlives the record's deletion.
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS restores ("
                    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                    " record_id TEXT NOT NULL,"
                    " pid INTEGER NOT NULL,"
                    " policy TEXT NOT NULL,"
                    " stage TEXT NOT NULL,"
                    " ok INTEGER NOT NULL,"
                    " dumped_monotonic_ns INTEGER NOT NULL,"
                    " dumped_boottime_ns INTEGER NOT NULL,"
                    " monotonic_ns INTEGER NOT NULL,"
                    " boottime_ns INTEGER NOT NULL,"
                    " monotonic_offset_ns INTEGER NOT NULL,"
                    " boottime_offset_ns INTEGER NOT NULL,"
                    " timens_inode INTEGER NOT NULL,"
                    " realtime_ns INTEGER NOT NULL,"
                    " message TEXT NOT NULL,"
                    " owner_uid INTEGER NOT NULL DEFAULT 0)"
                )
                restore_columns = {row[1] for row in self._db.execute("PRAGMA table_info(restores)")}
                if "verdict" not in restore_columns:
                    self._db.execute("ALTER TABLE restores ADD COLUMN verdict TEXT NOT NULL DEFAULT ''")
                self._db.execute("CREATE INDEX IF NOT EXISTS restores_by_record ON restores (record_id)")
                # list() pages in this order; without the index every page sorts the table.
                self._db.execute("CREATE INDEX IF NOT EXISTS restores_by_owner ON restores (owner_uid, id)")
                self._db.execute("DROP INDEX IF EXISTS records_by_time")
                self._db.execute("CREATE INDEX IF NOT EXISTS records_by_owner_time"
                                 " ON records (created_realtime_ns, id, owner_uid)")
                # Root names records by id (or prefix) whoever owns them.
                self._db.execute("CREATE INDEX IF NOT EXISTS records_by_id ON records (id)")
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:   # SQLite ends it itself on some errors (a full disk)
                    self._db.execute("ROLLBACK")
                raise

    def _migrate_records(self) -> None:
        """The records table keyed by (owner_uid, id), from any older one."""
        create = ("CREATE TABLE {} ("
                  " owner_uid INTEGER NOT NULL DEFAULT 0,"
                  " id TEXT NOT NULL,"
                  " created_realtime_ns INTEGER NOT NULL,"
                  " data BLOB NOT NULL,"
                  " PRIMARY KEY (owner_uid, id))")
        exists = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'").fetchone()
        if exists is None:
            self._db.execute(create.format("records"))
            return
        if "PRIMARY KEY (owner_uid, id)" in exists[0]:
            return
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
        owner = "owner_uid" if "owner_uid" in columns else "0"   # a version 1 store: root's
        self._db.execute(create.format("records_by_owner"))
        self._db.execute(f"INSERT INTO records_by_owner (owner_uid, id, created_realtime_ns, data)"
                         f" SELECT {owner}, id, created_realtime_ns, data FROM records")
        self._db.execute("DROP TABLE records")
        self._db.execute("ALTER TABLE records_by_owner RENAME TO records")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple) -> sqlite3.Cursor:
        """Execute a write; the caller holds the lock."""
        try:
            return self._db.execute(sql, args)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise ResourceExhausted(f"record store {self.path} is full: {exc}") from None
            raise

    def add(self, record: pb.Record, owner_uid: int = ROOT_UID) -> None:
        """Store a new record of owner_uid; AlreadyExists when that owner has
        another record of that id. InvalidArgument when the record breaks a
        size limit, ResourceExhausted when it is too large to store,
        LimitExceeded past owner_uid's limits."""
        door.check(record, "record.")
        data = recordfile.encode(record)
        if len(data) > RECORD_FILE_BYTES:
            raise ResourceExhausted(f"the record of {len(record.processes)} processes is {len(data)} bytes, more "
                                    f"than the {RECORD_FILE_BYTES} keeptimed stores")
        with self._lock:
            row = self._db.execute("SELECT data = ? FROM records WHERE owner_uid = ? AND id = ?",
                                   (data, owner_uid, record.id)).fetchone()
            if row is not None:
                if row[0]:
                    return  # the same record again (e.g. a retried import): nothing to do
                raise AlreadyExists(f"you already have a different record with id {record.id}")
            if self.quota:
                self.quota.check_record(owner_uid, len(data))
            self._write("INSERT INTO records (owner_uid, id, created_realtime_ns, data) VALUES (?, ?, ?, ?)",
                        (owner_uid, record.id, record.realtime_ns, data))
            if self.quota:
                self.quota.record_added(owner_uid, len(data))

    def resolve(self, id_or_prefix: str, owner_uid: Optional[int] = None) -> RecordKey:
        """The (owner, id) of the one record whose id is or starts with id_or_prefix.

        With owner_uid, only that uid's records count: others' are not found.
        Without, root's own records count first, then anyone's.
        """
        _check_id_or_prefix(id_or_prefix)
        for owner in ((owner_uid,) if owner_uid is not None else (ROOT_UID, None)):
            with self._lock:
                rows = self._db.execute(
                    "SELECT owner_uid, id FROM records WHERE id >= ? AND id < ? AND (? IS NULL OR owner_uid = ?)"
                    " ORDER BY id, owner_uid LIMIT 2",
                    (id_or_prefix, id_or_prefix + "g", owner, owner),
                ).fetchall()
            if len(rows) == 1 or (rows and rows[0][1] == id_or_prefix != rows[1][1]):
                return rows[0]
            if rows:
                if rows[0][1] == rows[1][1]:
                    raise InvalidArgument(f"record id {rows[0][1]} is held by several users (uids "
                                          f"{rows[0][0]} and {rows[1][0]}, at least)")
                raise InvalidArgument(f"record id prefix {id_or_prefix} is ambiguous")
        raise NotFound(f"no record {id_or_prefix}")

    def _raw(self, key: RecordKey) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT data FROM records WHERE owner_uid = ? AND id = ?", key).fetchone()
        if row is None:
            raise NotFound(f"no record {key[1]}")
        return bytes(row[0])

    def get(self, id_or_prefix: str, owner_uid: Optional[int] = None) -> pb.Record:
        key = self.resolve(id_or_prefix, owner_uid)
        return self._decode(key[1], self._raw(key))

    def export(self, id_or_prefix: str, owner_uid: Optional[int] = None) -> tuple[str, bytes]:
        """(id, record-file bytes), verified before they leave."""
        key = self.resolve(id_or_prefix, owner_uid)
        data = self._raw(key)
        self._decode(key[1], data)
        return key[1], data

    def list(
        self, owner_uid: Optional[int] = None, after: Optional[tuple[int, str, int]] = None, limit: int = -1,
        max_bytes: Optional[int] = None,
    ) -> tuple[list[tuple[tuple[int, str, int], "pb.Record | DataLoss"]], bool]:
        """One page of records (of owner_uid, if given), oldest first, each
        with its sort key (realtime_ns, id, owner_uid): those past the key
        after, at most limit of them (-1: all) and max_bytes of record files
        (at least one record, whatever its size). Returns the page and whether
        more follow. A damaged record comes as its DataLoss error.

        Record sizes are read first (SQLite reads a blob's length without its
        content), so only the page's own records are ever loaded."""
        # A plain row-value bound (no "? IS NULL OR") lets SQLite seek the
        # index to the page's start instead of scanning from the oldest record.
        start = "(created_realtime_ns, id, owner_uid) > (?, ?, ?)" if after is not None else "1"
        where = f"WHERE {start} AND (? IS NULL OR owner_uid = ?)"
        bounds = (*(after or ()), owner_uid, owner_uid)
        order = "ORDER BY created_realtime_ns, id, owner_uid"
        with self._lock:
            sizes = self._db.execute(
                f"SELECT created_realtime_ns, id, owner_uid, LENGTH(data) FROM records {where} {order} LIMIT ?",
                (*bounds, -1 if limit < 0 else limit + 1),
            ).fetchall()
            taken, total = 0, 0
            for *_, size in sizes[:limit if limit >= 0 else None]:
                if taken and max_bytes is not None and total + size > max_bytes:
                    break
                taken, total = taken + 1, total + size
            more = taken < len(sizes)
            rows = [] if not taken else self._db.execute(
                f"SELECT id, created_realtime_ns, owner_uid, data FROM records {where}"
                f" AND (created_realtime_ns, id, owner_uid) <= (?, ?, ?) {order}", (*bounds, *sizes[taken - 1][:3]),
            ).fetchall()
        out = []
        for record_id, realtime_ns, owner, data in rows:
            try:
                out.append(((realtime_ns, record_id, owner), self._decode(record_id, bytes(data))))
            except DataLoss as exc:
                out.append(((realtime_ns, record_id, owner), exc))
        return out, more

    def responsive(self, timeout: float) -> bool:
        """Whether the store answers a trivial query: False when a call has
        held it for timeout seconds, or SQLite fails (or stays locked by
        another process beyond busy_timeout)."""
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            self._db.execute("SELECT COUNT(*) FROM records").fetchone()
            return True
        except sqlite3.Error:
            return False
        finally:
            self._lock.release()

    def count(self) -> int:
        """How many records are stored (damaged ones included)."""
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM records").fetchone()
        return n

    def delete(self, id_or_prefix: str, owner_uid: Optional[int] = None) -> str:
        key = self.resolve(id_or_prefix, owner_uid)
        with self._lock:
            row = self._db.execute("SELECT LENGTH(data) FROM records WHERE owner_uid = ? AND id = ?", key).fetchone()
            if row is None:
                raise NotFound(f"no record {id_or_prefix}")
            self._write("DELETE FROM records WHERE owner_uid = ? AND id = ?", key)
            if self.quota:
                self.quota.record_removed(key[0], row[0])
        return key[1]

    # -- restore events -------------------------------------------------------

    def add_restore(self, event: pb.RestoreEvent, owner_uid: int = 0) -> int:
        """Store a restore event verified for owner_uid; returns its id.
        Past owner_uid's limit its oldest events are dropped to make room."""
        columns = _RESTORE_COLUMNS + ("owner_uid",)
        values = (
            event.record_id, event.pid, _policy_name(event.policy), event.stage, int(event.ok),
            event.dumped.monotonic_ns, event.dumped.boottime_ns,
            event.clocks.monotonic_ns, event.clocks.boottime_ns,
            event.offsets.monotonic_ns, event.offsets.boottime_ns,
            # SQLite integers are signed 64-bit; namespace inodes fit in 32 bits.
            event.timens_inode, event.realtime_ns, event.message, _verdict_name(event.verdict), owner_uid,
        )
        insert = f"INSERT INTO restores ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        with self._lock:
            drop = self.quota.restores_to_drop(owner_uid, len(event.message.encode())) if self.quota else 0
            if not drop:
                cursor = self._write(insert, values)
            else:   # dropped and added in one transaction, so the count stays exact
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._write("DELETE FROM restores WHERE id IN"
                                " (SELECT id FROM restores WHERE owner_uid = ? ORDER BY id LIMIT ?)", (owner_uid, drop))
                    cursor = self._write(insert, values)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:   # SQLite ends it itself on some errors (a full disk)
                        self._db.execute("ROLLBACK")
                    raise
            if self.quota:
                self.quota.restores_changed(owner_uid, 1 - drop)
        return cursor.lastrowid

    def list_restores(
        self, record_id_prefix: str = "", owner_uid: Optional[int] = None, after: int = 0, limit: int = -1,
    ) -> "list[pb.RestoreEvent]":
        """Restore events, oldest first, at most limit of them (-1: all) with
        an event id above after; only one record's when a prefix is given,
        only those verified for owner_uid when it is given."""
        if record_id_prefix:
            _check_id_or_prefix(record_id_prefix)
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, {', '.join(_RESTORE_COLUMNS)}, owner_uid FROM restores"
                " WHERE record_id >= ? AND record_id < ? AND (? IS NULL OR owner_uid = ?) AND id > ?"
                " ORDER BY id LIMIT ?",
                (record_id_prefix, record_id_prefix + "g", owner_uid, owner_uid, after, limit),
            ).fetchall()
        return [_restore_event(row) for row in rows]

    @staticmethod
    def _decode(record_id: str, data: bytes) -> pb.Record:
        try:
            record = recordfile.decode(data)
        except DataLoss as exc:
            raise DataLoss(f"record {record_id}: {exc.message}") from None
        if record.id != record_id:
            raise DataLoss(f"record {record_id}: stored under the wrong id ({record.id})")
        return record


_RESTORE_COLUMNS = (
    "record_id", "pid", "policy", "stage", "ok", "dumped_monotonic_ns", "dumped_boottime_ns",
    "monotonic_ns", "boottime_ns", "monotonic_offset_ns", "boottime_offset_ns", "timens_inode",
    "realtime_ns", "message", "verdict",
)


def _check_id_or_prefix(id_or_prefix: str) -> None:
    if not ID_OR_PREFIX.fullmatch(id_or_prefix or ""):
        raise InvalidArgument(f"{id_or_prefix!r} is not a record id (4 to 32 lowercase hex digits)")


def _policy_name(value: int) -> str:
    return pb.Policy.Name(value).removeprefix("POLICY_").lower()


def _verdict_name(value: int) -> str:
    return pb.Verdict.Name(value).removeprefix("VERDICT_").lower() if value else ""


def _verdict(name: str, ok: bool) -> int:
    if not name:   # stored before verdicts existed: only ok or regressed were possible
        return pb.VERDICT_CONTINUOUS if ok else pb.VERDICT_REGRESSED
    return pb.Verdict.Value("VERDICT_" + name.upper())


def _restore_event(row: tuple) -> pb.RestoreEvent:
    (event_id, record_id, pid, policy, stage, ok, dumped_mono, dumped_boot, mono, boot,
     mono_offset, boot_offset, inode, realtime, message, verdict, owner_uid) = row
    return pb.RestoreEvent(
        id=event_id, record_id=record_id, pid=pid, policy=pb.Policy.Value("POLICY_" + policy.upper()),
        stage=stage, ok=bool(ok),
        dumped=pb.ClockValues(monotonic_ns=dumped_mono, boottime_ns=dumped_boot),
        clocks=pb.ClockValues(monotonic_ns=mono, boottime_ns=boot),
        offsets=pb.Offsets(monotonic_ns=mono_offset, boottime_ns=boot_offset),
        timens_inode=inode, realtime_ns=realtime, message=message, verdict=_verdict(verdict, bool(ok)),
        owner_uid=owner_uid,
    )
