"""Record files: a record as self-contained, checksummed bytes.

The same bytes are what ExportRecord returns, ImportRecord accepts and the
store keeps, so a record moves between hosts and disks unchanged:

    b"keeptime-record\\n" + RecordEnvelope{format_version, record, sha256}

The format is shared with the CRIU hook and lives in keeptime.recordfile;
the daemon's errors and the validation of the content live here.
"""
from keeptime.recordfile import (  # noqa: F401 (MAGIC, encode: re-exported)
    FORMAT_VERSION, MAGIC, RECORD_ID, RecordFileError, encode, parse,
)
from keeptime.v1 import keeptime_pb2 as pb

from .errors import DataLoss, FailedPrecondition


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
    return ""
