"""Admission and the two worker pools: which calls run where, and what
callers other than root may hold of each pool."""
from types import SimpleNamespace

import grpc
import pytest

from keeptimed import pools
from keeptimed.access import Caller
from keeptimed.admission import Admission, AdmissionInterceptor
from keeptimed.limits import LimitExceeded, Limits

ROOT = Caller("unix", pid=1, uid=0, gid=0)
TLS = Caller("tls", name="migrator")


def member(uid: int) -> Caller:
    return Caller("unix", pid=uid, uid=uid, gid=uid)


def test_quick_workers_are_two_per_cpu_within_bounds_and_0_means_auto():
    assert [pools.default_quick_workers(cpus) for cpus in (1, 2, 3, 8, 16, 64)] == [4, 4, 6, 16, 32, 32]
    assert Limits.defaults().quick_workers == pools.default_quick_workers()
    assert Limits.defaults(quick_workers=6).quick_workers == 6


def test_wait_and_streams_block_every_other_call_is_quick():
    def handler(request_streaming=False, response_streaming=False):
        return SimpleNamespace(request_streaming=request_streaming, response_streaming=response_streaming)

    assert pools.blocks("/keeptime.v1.Keeptime/Wait", handler())
    assert pools.blocks("/grpc.health.v1.Health/Watch", handler(response_streaming=True))
    assert pools.blocks("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", handler(True, True))
    for method in ("/keeptime.v1.Keeptime/Restore", "/keeptime.v1.Keeptime/Checkpoint",
                   "/keeptime.v1.Keeptime/ListRecords", "/grpc.health.v1.Health/Check"):
        assert not pools.blocks(method, handler())


@pytest.mark.parametrize("quick_workers, members_hold", [(2, 1), (4, 3), (8, 6), (32, 24)])
def test_members_hold_three_quarters_of_the_quick_workers_root_the_rest(quick_workers, members_hold):
    admission = Admission(Limits.defaults(quick_workers=quick_workers, user_calls=100))
    tickets = [admission.enter(member(1000 + n), admission.quick) for n in range(members_hold)]
    with pytest.raises(LimitExceeded) as refused:
        admission.enter(member(2000), admission.quick)
    assert refused.value.limit == "quick_workers"
    assert (f"the {members_hold} quick-call workers callers other than root may hold are all busy (the rest are "
            "root's: a quarter of quick_workers)") in refused.value.message
    assert admission.enter(ROOT, admission.quick) is None and admission.enter(TLS, admission.quick) is None
    admission.enter(member(2000), admission.blocking)   # the other pool is counted apart
    admission.leave(tickets[0])
    admission.leave(admission.enter(member(2000), admission.quick))


def test_a_uids_calls_count_together_in_both_pools_against_user_calls():
    admission = Admission(Limits.defaults(quick_workers=32, user_calls=3))
    admission.enter(member(1000), admission.quick)
    admission.enter(member(1000), admission.blocking)
    last = admission.enter(member(1000), admission.blocking)
    for pool in (admission.quick, admission.blocking):
        with pytest.raises(LimitExceeded, match="uid 1000 already has 3 calls in progress, the most user_calls allows"):
            admission.enter(member(1000), pool)
    admission.enter(member(1001), admission.quick)   # another uid has calls of its own
    admission.leave(last)
    admission.enter(member(1000), admission.quick)


@pytest.mark.parametrize("quick_workers, one_uid", [(2, 1), (4, 2), (8, 3), (32, 12)])
def test_one_uid_holds_at_most_half_of_what_members_may_hold_so_other_users_are_served(quick_workers, one_uid):
    admission = Admission(Limits.defaults(quick_workers=quick_workers, user_calls=100))
    tickets = [admission.enter(member(1000), admission.quick) for _ in range(one_uid)]
    with pytest.raises(LimitExceeded) as refused:
        admission.enter(member(1000), admission.quick)
    assert refused.value.limit == "quick_workers"
    assert (f"uid 1000 already holds {one_uid} of the {admission.quick.share} quick-call workers callers other "
            "than root may hold, as many as one uid may (half, so that other users are served)") \
        in refused.value.message
    if admission.quick.share > 1:
        admission.enter(member(1001), admission.quick)   # another user is served
    admission.leave(tickets[0])
    admission.enter(member(1000), admission.quick)


def test_members_hold_workers_minus_root_workers_of_the_workers_for_waits_and_streams():
    admission = Admission(Limits.defaults(workers=6, root_workers=2, user_calls=100))
    for n in range(4):
        admission.enter(member(1000 + n), admission.blocking)
    with pytest.raises(LimitExceeded, match=r"the 4 wait-and-stream workers .* root's: root_workers\)") as refused:
        admission.enter(member(2000), admission.blocking)
    assert refused.value.limit == "root_workers"


class FakePools:
    def __init__(self):
        self.quick, self.blocking = object(), object()

    def for_call(self, blocking: bool):
        return self.blocking if blocking else self.quick


def test_the_interceptor_serves_each_method_on_its_pool_and_builds_its_handler_once():
    workers = FakePools()
    interceptor = AdmissionInterceptor(Admission(Limits.defaults()), access=None, workers=workers)
    unary = grpc.unary_unary_rpc_method_handler(lambda request, context: None)
    streaming = grpc.unary_stream_rpc_method_handler(lambda request, context: iter(()))

    def served(method, handler):
        return interceptor.intercept_service(lambda details: handler, SimpleNamespace(method=method))

    restore = served("/keeptime.v1.Keeptime/Restore", unary)
    assert restore.request_streaming and not restore.response_streaming   # the request is read once admitted
    assert restore.stream_unary.experimental_thread_pool is workers.quick
    assert served("/keeptime.v1.Keeptime/Restore", unary) is restore
    assert served("/keeptime.v1.Keeptime/Wait", unary).stream_unary.experimental_thread_pool is workers.blocking
    watch = served("/grpc.health.v1.Health/Watch", streaming)
    assert watch.stream_stream.experimental_thread_pool is workers.blocking
    assert served("/keeptime.v1.Keeptime/Nothing", None) is None
