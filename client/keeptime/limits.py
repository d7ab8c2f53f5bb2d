"""keeptime's size limits, read from keeptime.proto, their only definition.

The service's (max_message_bytes) bounds every request and response, in both
directions, for keeptimed and its clients alike; the (limit) option of a
field bounds what the field may carry (keeptimed refuses more at its door).
"""
from typing import Optional

from google.protobuf.descriptor import FieldDescriptor

from .v1 import keeptime_pb2 as pb

MAX_MESSAGE_BYTES: int = (
    pb.DESCRIPTOR.services_by_name["Keeptime"].GetOptions().Extensions[pb.max_message_bytes])
# For grpc.server() and grpc.*_channel(): the same limit on both ends, so a
# response keeptimed may send is one every client accepts.
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)

# Trailing metadata keeptimed sets on a call it refused (RESOURCE_EXHAUSTED)
# before the call began because the caller's uid had as many calls in
# progress as its limits allow; the value names the limit. Such a call did
# nothing, so a client may send it again (keeptime.Client does, for a moment).
BUSY_TRAILER = "keeptime-busy"


def of(field: FieldDescriptor) -> Optional[pb.Limit]:
    """The (limit) option of a field; None when it has none."""
    options = field.GetOptions()
    return options.Extensions[pb.limit] if options.HasExtension(pb.limit) else None


def _max_bytes(message: type, field: str) -> int:
    return of(message.DESCRIPTOR.fields_by_name[field]).max_bytes


RECORD_FILE_BYTES = _max_bytes(pb.RecordRef, "record_file")   # the largest record keeptimed takes or stores
TIMENS_IMAGE_BYTES = _max_bytes(pb.PlanCriuRestoreRequest, "timens_image")
