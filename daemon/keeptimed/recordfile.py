"""Record files: a record as self-contained, checksummed bytes.

The same bytes are what ExportRecord returns, ImportRecord accepts and the
store keeps, so a record moves between hosts and disks unchanged:

    b"keeptime-record\\n" + RecordEnvelope{format_version, record, sha256}

The format is shared with the CRIU hook and lives in keeptime.recordfile;
the daemon's errors and the validation of the content live here. Bytes from
outside go through accept(), which also holds them to the size limits;
decode() alone reads what the store kept (records stored before the limits
existed stay readable).
"""
from keeptime.recordfile import (  # noqa: F401 (MAGIC, encode: re-exported)
    FORMAT_VERSION, MAGIC, RECORD_ID, RecordFileError, encode, parse,
)
from keeptime.limits import RECORD_FILE_BYTES
from keeptime.v1 import keeptime_pb2 as pb

from . import door
from .errors import DataLoss, FailedPrecondition, InvalidArgument


def decode(data: bytes) -> pb.Record:
    """Parse and verify record-file bytes; any damage is DataLoss."""
    try:
        record = parse(data)
    except RecordFileError as exc:
        if exc.newer_version is not None:
            raise FailedPrecondition(
                f"record format version {exc.newer_version} is newer than this keeptimed "
                f"understands ({FORMAT_VERSION}); upgrade keeptimed"
            ) from None
        raise DataLoss(str(exc)) from None
    problem = validation_error(record)
    if problem:
        raise DataLoss(f"invalid keeptime record: {problem}")
    return record


def accept(data: bytes) -> pb.Record:
    """Record-file bytes from a caller or an image directory: decoded,
    verified and within the size limits (InvalidArgument beyond them)."""
    if len(data) > RECORD_FILE_BYTES:
        raise InvalidArgument(f"the record file is {len(data)} bytes, more than the {RECORD_FILE_BYTES} allowed")
    record = decode(data)
    door.check(record, "record.")
    return record


def validation_error(record: pb.Record) -> str:
    """Why a record cannot be used, or "" when it is sound."""
    if not RECORD_ID.fullmatch(record.id):
        return f"id {record.id!r} is not 32 lowercase hex digits"
    # Any other pair is sound: inside a time namespace BOOTTIME may well be
    # below MONOTONIC, since the kernel accepts any offsets.
    if record.clocks.monotonic_ns < 0 or record.clocks.boottime_ns < 0:
        return "negative clock values"
    if record.realtime_ns < 0:
        return "negative CLOCK_REALTIME"
    # The host's own clocks count from its boot: never negative (a downtime
    # measured from a negative one would not fit in 64 bits).
    if record.host_clocks.monotonic_ns < 0 or record.host_clocks.boottime_ns < 0:
        return "negative host clock values"
    return ""
