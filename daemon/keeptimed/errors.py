"""Errors of the daemon's domain, each naming the gRPC status it becomes.

Domain modules raise these; only the service layer knows about gRPC.
"""


class KeeptimeError(Exception):
    """Base class: ``status`` is a grpc.StatusCode name, the message is one line."""

    status = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(KeeptimeError):
    status = "INVALID_ARGUMENT"


class NotFound(KeeptimeError):
    status = "NOT_FOUND"


class AlreadyExists(KeeptimeError):
    status = "ALREADY_EXISTS"


class FailedPrecondition(KeeptimeError):
    status = "FAILED_PRECONDITION"


class OutOfRange(KeeptimeError):
    status = "OUT_OF_RANGE"


class PermissionDenied(KeeptimeError):
    status = "PERMISSION_DENIED"


class ResourceExhausted(KeeptimeError):
    status = "RESOURCE_EXHAUSTED"


class Aborted(KeeptimeError):
    status = "ABORTED"


class DataLoss(KeeptimeError):
    status = "DATA_LOSS"


class Internal(KeeptimeError):
    status = "INTERNAL"


class DeadlineExceeded(KeeptimeError):
    status = "DEADLINE_EXCEEDED"


class Cancelled(KeeptimeError):
    status = "CANCELLED"
