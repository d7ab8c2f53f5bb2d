"""keeptime.Client sends a call again only when keeptimed refused it before
it began (RESOURCE_EXHAUSTED with the keeptime-busy trailer), for up to
BUSY_PATIENCE seconds and only with time left to run it. Played against a
stub that answers like grpcio does."""
import time

import grpc
import pytest

from keeptime import Client, client as client_module, errors
from keeptime.limits import BUSY_TRAILER


class Refusal(grpc.RpcError, grpc.Call):
    """A failed call as grpcio raises it: an RpcError that is also a Call."""

    def __init__(self, code, trailer=True):
        self._code = code
        self._trailer = ((BUSY_TRAILER, "user_calls"),) if trailer else ()

    def code(self):
        return self._code

    def details(self):
        return "uid 1000 already has 8 calls in progress, the most user_calls allows"

    def trailing_metadata(self):
        return self._trailer

    def initial_metadata(self):
        return ()

    def is_active(self):
        return False

    def time_remaining(self):
        return None

    def cancel(self):
        return False

    def add_callback(self, callback):
        return False


class Stub:
    """Refuses the first `refusals` calls, then answers; keeps each call's timeout."""

    def __init__(self, refusals, error=None):
        self.refusals, self.error, self.timeouts = refusals, error, []

    def ListRecords(self, request, timeout=None):
        self.timeouts.append(timeout)
        if len(self.timeouts) <= self.refusals:
            raise self.error or Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED)
        return "answer"


def call(stub, timeout):
    kt = Client(socket="/nonexistent.sock", timeout=timeout)
    try:
        started = time.monotonic()
        try:
            return kt._call("ListRecords", None, stub=stub), time.monotonic() - started
        except errors.KeeptimeError as exc:
            return exc, time.monotonic() - started
    finally:
        kt.close()


def test_a_busy_refusal_is_sent_again_until_a_place_frees():
    stub = Stub(refusals=3)
    answer, _ = call(stub, timeout=10)
    assert answer == "answer" and len(stub.timeouts) == 4
    assert all(a > b for a, b in zip(stub.timeouts, stub.timeouts[1:]))   # one deadline for all of them


@pytest.mark.parametrize("timeout", [None, 30])
def test_a_refusal_that_lasts_is_reported_after_the_patience(timeout):
    stub = Stub(refusals=10_000)
    answer, took = call(stub, timeout)
    assert isinstance(answer, errors.ResourceExhausted) and "user_calls" in answer.message
    assert took <= client_module.BUSY_PATIENCE and len(stub.timeouts) > 3


def test_no_retry_that_would_leave_the_call_too_little_time():
    stub = Stub(refusals=10_000)
    answer, took = call(stub, timeout=0.4)
    assert isinstance(answer, errors.ResourceExhausted) and took < 0.4
    for left in stub.timeouts:
        assert left >= client_module.BUSY_MIN_LEFT
    stub = Stub(refusals=10_000)
    answer, _ = call(stub, timeout=0.1)   # less than BUSY_MIN_LEFT from the start: one try
    assert isinstance(answer, errors.ResourceExhausted) and len(stub.timeouts) == 1


@pytest.mark.parametrize("error", [Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, trailer=False),   # work that began
                                   Refusal(grpc.StatusCode.UNAVAILABLE)])
def test_other_failures_are_reported_at_once(error):
    stub = Stub(refusals=1, error=error)
    answer, _ = call(stub, timeout=10)
    assert isinstance(answer, errors.KeeptimeError) and len(stub.timeouts) == 1
