"""Exceptions raised by keeptime.Client, one per gRPC status that matters."""
import grpc


class KeeptimeError(Exception):
    """A failed call: ``code`` is the grpc.StatusCode, ``message`` the daemon's one line."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: "grpc.StatusCode | None" = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(KeeptimeError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(KeeptimeError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(KeeptimeError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(KeeptimeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(KeeptimeError):
    code = grpc.StatusCode.OUT_OF_RANGE


class PermissionDenied(KeeptimeError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(KeeptimeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Aborted(KeeptimeError):
    """Nothing was done (e.g. a restored process killed before its exec): safe to retry."""

    code = grpc.StatusCode.ABORTED


class DataLoss(KeeptimeError):
    code = grpc.StatusCode.DATA_LOSS


class DeadlineExceeded(KeeptimeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(KeeptimeError):
    """The daemon cannot be reached (not running, wrong socket, no permission)."""

    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(KeeptimeError):
    """The daemon does not know the call: it is older than this client."""

    code = grpc.StatusCode.UNIMPLEMENTED


_BY_CODE = {cls.code: cls for cls in (
    InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, OutOfRange,
    PermissionDenied, ResourceExhausted, Aborted, DataLoss, DeadlineExceeded, Unavailable, Unimplemented,
)}


def from_rpc_error(exc: grpc.RpcError, socket_path: str) -> KeeptimeError:
    """The KeeptimeError for a failed call, with a clear message when the
    daemon could not be reached at all."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        details = (f"keeptimed at {socket_path} does not know this call: it is older than this keeptime "
                   f"(restart it after upgrading): {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"cannot reach keeptimed at {socket_path} (is it running, and may you use its socket?): {details}"
    return _BY_CODE.get(code, KeeptimeError)(details, code)
