"""Record files: a record as self-contained, checksummed bytes.

The same bytes are what ExportRecord returns, ImportRecord accepts and the
store keeps, so a record moves between hosts and disks unchanged:

    b"keeptime-record\\n" + RecordEnvelope{format_version, record, sha256}

Writing (encode) is shared with the CRIU hook and lives in keeptime.recordfile;
reading and validating, with the daemon's errors, live here.
"""
import hashlib

from google.protobuf.message import DecodeError

from keeptime.recordfile import FORMAT_VERSION, MAGIC, RECORD_ID, encode  # noqa: F401 (re-exported)
from keeptime.v1 import keeptime_pb2 as pb

from .errors import DataLoss, FailedPrecondition


def decode(data: bytes) -> pb.Record:
    """Parse and verify record-file bytes; any damage is DataLoss."""
    if not data.startswith(MAGIC):
        raise DataLoss("not a keeptime record (bad magic)")
    envelope = pb.RecordEnvelope()
    try:
        envelope.ParseFromString(data[len(MAGIC):])
    except DecodeError:
        raise DataLoss("corrupt keeptime record: the envelope does not parse") from None
    if envelope.format_version > FORMAT_VERSION:
        raise FailedPrecondition(
            f"record format version {envelope.format_version} is newer than this keeptimed "
            f"understands ({FORMAT_VERSION}); upgrade keeptimed"
        )
    if envelope.format_version < 1:
        raise DataLoss("corrupt keeptime record: no format version")
    if hashlib.sha256(envelope.record).digest() != envelope.sha256:
        raise DataLoss("corrupt keeptime record: checksum mismatch")
    record = pb.Record()
    try:
        record.ParseFromString(envelope.record)
    except DecodeError:
        raise DataLoss("corrupt keeptime record: the record does not parse") from None
    problem = validation_error(record)
    if problem:
        raise DataLoss(f"invalid keeptime record: {problem}")
    return record


def validation_error(record: pb.Record) -> str:
    """Why a record cannot be used, or "" when it is sound."""
    if not RECORD_ID.fullmatch(record.id):
        return f"id {record.id!r} is not 32 lowercase hex digits"
    if record.clocks.monotonic_ns < 0 or record.clocks.boottime_ns < 0:
        return "negative clock values"
    if record.clocks.boottime_ns < record.clocks.monotonic_ns:
        return "BOOTTIME below MONOTONIC"
    if record.realtime_ns < 0:
        return "negative CLOCK_REALTIME"
    return ""
