"""A kubelet for tests: the generated pod-resources v1 servicer on a unix socket, answering
with the pods a test sets (a real gRPC server, so the exporter's client is exercised as in
production). A slow kubelet is a servicer blocked on an event, never a sleep."""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import IN_CI

STUB_THREADS = "kubelet-stub"  # the servicer's threads: the test's, not the exporter's


@dataclass
class Kubelet:
    """Pods as (namespace, pod, {container: [(resource, [device ids])]})."""

    socket: str
    pods: list[tuple[str, str, dict[str, list[tuple[str, list[str]]]]]] = field(
        default_factory=list)
    allocatable: list[tuple[str, list[str]]] | None = None  # None: UNIMPLEMENTED (old kubelet)
    hold: threading.Event | None = None  # List waits for it: a slow kubelet
    entered: threading.Event = field(default_factory=threading.Event)
    fail_with: object = None  # a grpc.StatusCode List answers with
    fail_message: str = "kubelet says no"
    calls: int = 0


def _servicer(state: Kubelet):
    import grpc

    from exporter.kubelet.proto import api_pb2 as pb
    from exporter.kubelet.proto import api_pb2_grpc

    def devices(spec):
        return [pb.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in spec]

    class Servicer(api_pb2_grpc.PodResourcesListerServicer):
        def List(self, request, context):
            state.calls += 1
            state.entered.set()
            if state.hold is not None:
                state.hold.wait(10)  # released by the test; bounded so a bug cannot hang
            if state.fail_with is not None:
                context.abort(state.fail_with, state.fail_message)
            return pb.ListPodResourcesResponse(pod_resources=[
                pb.PodResources(name=name, namespace=ns, containers=[
                    pb.ContainerResources(name=c, devices=devices(spec))
                    for c, spec in containers.items()])
                for ns, name, containers in state.pods])

        def GetAllocatableResources(self, request, context):
            if state.allocatable is None:  # a kubelet from before the call existed
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown method")
            return pb.AllocatableResourcesResponse(devices=devices(state.allocatable))

    return grpc, api_pb2_grpc, Servicer()


@contextlib.contextmanager
def serve_kubelet(directory: Path) -> Iterator[Kubelet]:
    """A kubelet listening on `kubelet.sock` in `directory` until the block ends."""
    try:
        import grpc
    except ImportError:
        message = "grpcio is not installed: pip install -e '.[kubernetes]'"
        if IN_CI:
            pytest.fail(message + "; under CI=true a missing integration tool is a failure")
        pytest.skip(message)
    # A unix socket path has room for 107 bytes; pytest's tmp_path can be longer.
    where = directory if len(str(directory)) < 80 else Path(tempfile.mkdtemp(prefix="kubelet-"))
    state = Kubelet(str(where / "kubelet.sock"))
    grpc, api_pb2_grpc, servicer = _servicer(state)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix=STUB_THREADS))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(servicer, server)
    server.add_insecure_port("unix://" + state.socket)
    server.start()
    try:
        yield state
    finally:
        if state.hold is not None:
            state.hold.set()
        server.stop(None)
