"""What keeptimed accepts of a request before any handler sees it.

A request must decode (an undecodable one is INVALID_ARGUMENT, not gRPC's
INTERNAL with a traceback in the log), and every string, byte string, list
and map it carries must be within the (limit) keeptime.proto gives its
field. Records that come in as bytes are held to the same limits (see
recordfile.accept and RecordStore.add). Refusals name the field and the
sizes, never the value, so a huge value cannot make a huge message.
"""
import functools

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from keeptime import limits
from keeptime.v1 import keeptime_pb2 as pb

from .errors import InvalidArgument

SERVICE = pb.DESCRIPTOR.services_by_name["Keeptime"]


class Undecodable:
    """What a handler receives instead of a request that did not decode."""

    def __init__(self, type_name: str, reason: str):
        self.message = f"the request is not a valid {type_name}: {reason}"


def _decoder(message_class: type):
    def decode(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            # upb's reasons are short and fixed ("Wire format was corrupt", "String field had bad UTF-8").
            reason = str(exc).rsplit(": ", 1)[-1][:80]
            return Undecodable(message_class.DESCRIPTOR.full_name, reason)
    return decode


def add_to_server(servicer, server: grpc.Server) -> None:
    """Serve keeptime.v1.Keeptime with servicer, as the generated
    add_KeeptimeServicer_to_server does, but with requests that do not
    decode handed to the handler as Undecodable."""
    handlers = {}
    for method in SERVICE.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_decoder(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


def check(message, prefix: str = "") -> None:
    """InvalidArgument when a field of message (at any depth) breaks its limit."""
    for field, limit, is_map in _limited_fields(message.DESCRIPTOR):
        value = getattr(message, field.name)
        name = prefix + field.name
        if is_map:
            _check_map(field, name, value, limit)
        elif field.is_repeated:
            if limit is not None and limit.max_items and len(value) > limit.max_items:
                raise InvalidArgument(f"{name} has {len(value)} entries, more than the {limit.max_items} allowed")
            for i, item in enumerate(value):
                _check_value(field, f"{name}[{i}]", item, limit)
        elif field.message_type is None or message.HasField(field.name):
            _check_value(field, name, value, limit)


@functools.cache
def _limited_fields(descriptor) -> tuple:
    """(field, its limit, whether it is a map) for each field of a message
    type that has a limit or leads to one; the rest need no look."""
    out = []
    for field in descriptor.fields:
        limit = limits.of(field)
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        leads_to_limits = field.message_type is not None and not is_map and _limited_fields(field.message_type)
        if limit is not None or leads_to_limits:
            out.append((field, limit, is_map))
    return tuple(out)


def problem(message, prefix: str = "") -> str:
    """Why message breaks a limit, or "" when it does not."""
    try:
        check(message, prefix)
    except InvalidArgument as exc:
        return exc.message
    return ""


def _check_map(field: FieldDescriptor, name: str, value, limit) -> None:
    if limit is not None and limit.max_items and len(value) > limit.max_items:
        raise InvalidArgument(f"{name} has {len(value)} entries, more than the {limit.max_items} allowed")
    value_field = field.message_type.fields_by_name["value"]
    for i, key in enumerate(sorted(value)):
        if limit is not None and limit.max_key_bytes and _size(key) > limit.max_key_bytes:
            raise InvalidArgument(f"a key of {name} is {_size(key)} bytes, more than the "
                                  f"{limit.max_key_bytes} allowed")
        _check_value(value_field, f"{name}[{_shown(key)}]", value[key], limit)


def _check_value(field: FieldDescriptor, name: str, value, limit) -> None:
    if field.message_type is not None:
        check(value, name + ".")
    elif limit is not None and limit.max_bytes and isinstance(value, (str, bytes)):
        size = _size(value)
        if size > limit.max_bytes:
            raise InvalidArgument(f"{name} is {size} bytes, more than the {limit.max_bytes} allowed")


def _size(value) -> int:
    if isinstance(value, bytes) or value.isascii():
        return len(value)
    return len(value.encode())


def _shown(key: str) -> str:
    """A map key as a message may show it: short and printable."""
    return repr(key) if len(key) <= 32 and key.isprintable() else "..."
